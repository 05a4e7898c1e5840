/*
 * sink_int.h -- private to sink/sink*.c: the table of functions each sink
 * kind implements, and helpers the kinds share. Not included outside them.
 */
#ifndef KW_SINK_INT_H
#define KW_SINK_INT_H

#include "sink.h"

/*
 * One kind. sink.c checks every argument and the order of the transaction's
 * calls (sink.h), keeps the totals, and calls abort after any error of
 * begin, write, put_range or commit (T2), so a kind's functions only do
 * their part and report errors.
 */
typedef struct kw__sink_ops {
    kw_sink_kind_t kind;
    const char    *name;
    /* What follows "kind:" -- "path" and "PATH", say, for the messages --
     * or NULL and NULL for a kind that takes no argument. */
    const char    *arg_what, *arg_meta;
    /* arg: what follows "kind:" in the spec (NULL when there is no ':'). */
    kw_err_t (*open)(kw_sink_t *s, const char *arg, char *errstr, size_t errlen);
    void     (*close)(kw_sink_t *s);

    /* The transaction (sink.h T1-T4). */
    kw_err_t (*begin)(kw_sink_t *s, uint64_t batch_id, char *errstr, size_t errlen);
    /* begin, then the next free id (>= min_id) read under the transaction's
     * lock into *batch_id; NULL in kinds that do not store ranges. */
    kw_err_t (*begin_next)(kw_sink_t *s, uint64_t min_id, uint64_t *batch_id,
                           char *errstr, size_t errlen);
    /* Fills st->stored and st->duplicates_delivered (zeroed by the caller)
     * and sets *replayed (0 from the caller) on a replay (T3): the kind
     * then holds nothing open, and sink.c calls neither put_range nor
     * commit for the batch. */
    kw_err_t (*write)(kw_sink_t *s, uint64_t batch_id, const kw_record_t *recs,
                      size_t n, kw_sink_stats_t *st, int *replayed,
                      char *errstr, size_t errlen);
    kw_err_t (*commit)(kw_sink_t *s, uint64_t batch_id, char *errstr, size_t errlen);
    /* Undoes whatever begin and write left; idempotent (also called after
     * a failed commit and after a replay). */
    void     (*abort)(kw_sink_t *s, uint64_t batch_id);

    /* Offset ranges: NULL in kinds that do not store them. put_range is
     * only called between a write that was not a replay and commit;
     * range_next and ranges_last_batch only outside a transaction. */
    kw_err_t (*put_range)(kw_sink_t *s, uint64_t batch_id, const char *topic,
                          int32_t partition, int64_t expect_next, int64_t from_offset,
                          int64_t until_offset, char *errstr, size_t errlen);
    kw_err_t (*range_next)(kw_sink_t *s, const char *topic, int32_t partition,
                           int64_t *next, char *errstr, size_t errlen);
    kw_err_t (*ranges_last_batch)(kw_sink_t *s, uint64_t *batch,
                                  char *errstr, size_t errlen);
} kw__sink_ops_t;

/* Where a handle's transaction is (sink.c). */
typedef enum {
    KW__TXN_NONE = 0,       /* no transaction open */
    KW__TXN_BEGUN,          /* begin done, write not yet */
    KW__TXN_WRITTEN         /* write done: put_range, commit or abort next */
} kw__txn_state_t;

struct kw_sink {
    const kw__sink_ops_t *ops;
    void                 *impl;     /* the kind's state */
    const kw_sink_options_t *opts;  /* kw_sink_open_opts's, during open only */
    kw_sink_totals_t      totals;
    struct {
        kw__txn_state_t   state;
        uint64_t          batch_id;
        int               replayed; /* write found a replay (T3) */
        kw_sink_stats_t   st;       /* what write did, reported by commit */
    } txn;
};

extern const kw__sink_ops_t kw__sink_sqlite_ops;
extern const kw__sink_ops_t kw__sink_file_ops;
extern const kw__sink_ops_t kw__sink_jsonl_ops;
extern const kw__sink_ops_t kw__sink_null_ops;
extern const kw__sink_ops_t kw__sink_pg_ops;
extern const kw__sink_ops_t kw__sink_kafka_ops;

/* Make room for `more` bytes after len. KW_ENOMEM leaves b as it was. */
kw_err_t kw__sink_buf_reserve(kw_sink_buf_t *b, size_t more);

/* write(2) all of buf, retrying EINTR and short writes: 0, or -1 with errno. */
int kw__sink_write_all(int fd, const void *buf, size_t len);

#endif /* KW_SINK_INT_H */
