/*
 * sink_int.h -- private to sink/sink*.c: the table of functions each sink
 * kind implements, and helpers the kinds share. Not included outside them.
 */
#ifndef KW_SINK_INT_H
#define KW_SINK_INT_H

#include "sink.h"

typedef struct kw__sink_ops {
    kw_sink_kind_t kind;
    const char    *name;
    /* arg: what follows "kind:" in the spec (NULL when there is no ':'). */
    kw_err_t (*open)(kw_sink_t *s, const char *arg, char *errstr, size_t errlen);
    void     (*close)(kw_sink_t *s);
    /* Fills st (zeroed by the caller) and *replayed (0 by the caller). */
    kw_err_t (*write)(kw_sink_t *s, uint64_t batch_id, const kw_record_t *recs,
                      size_t n, kw_sink_txn_hook_t hook, void *opaque,
                      kw_sink_stats_t *st, int *replayed, char *errstr, size_t errlen);
} kw__sink_ops_t;

struct kw_sink {
    const kw__sink_ops_t *ops;
    void                 *impl;     /* the kind's state */
    kw_sink_totals_t      totals;
};

extern const kw__sink_ops_t kw__sink_sqlite_ops;
extern const kw__sink_ops_t kw__sink_file_ops;
extern const kw__sink_ops_t kw__sink_jsonl_ops;
extern const kw__sink_ops_t kw__sink_null_ops;

/* The sqlite kind's connection. */
struct sqlite3 *kw__sink_sqlite_conn(kw_sink_t *s);

/* Make room for `more` bytes after len. KW_ENOMEM leaves b as it was. */
kw_err_t kw__sink_buf_reserve(kw_sink_buf_t *b, size_t more);

/* write(2) all of buf, retrying EINTR and short writes: 0, or -1 with errno. */
int kw__sink_write_all(int fd, const void *buf, size_t len);

#endif /* KW_SINK_INT_H */
