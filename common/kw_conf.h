/*
 * kw_conf.h -- kwal's configuration: one table of settings, loaded from a
 * `key=value` file and `-X key=value` overrides.
 *
 * Every setting is one row of a table (kw_conf_props()): name, type, default,
 * range, description, and the offset of its field in kw_conf_t. Parsing, range
 * checks, error messages, `--help` text and CONFIGURATION.md all come from that
 * table, so they cannot drift apart. A new setting is a new field in one of the
 * sub-structs below plus one row in kw_conf.c; nothing else changes.
 *
 * File syntax. One `key=value` per line. Leading and trailing whitespace of the
 * line, the key and the value is trimmed; blank lines and lines whose first
 * non-blank character is `#` are ignored. The value is everything after the
 * first `=` (no quoting, no trailing comments, so `#` may appear in values).
 * A key given twice keeps the last value; `-X` overrides are applied after the
 * file, in order.
 *
 * Keys starting with `kafka.` are not in the table: they are kept, prefix
 * removed and value verbatim, in kw_conf_t.kafka, to be handed to librdkafka
 * unchanged; `sink.kafka.` keys likewise in kw_conf_t.sink_kafka (the kafka
 * sink's producer). `zookeeper.` keys are ordinary table rows. Any other key that is
 * not in the table, and any value that does not parse or is out of range, is
 * an error naming where it came from, the key and what was expected:
 *
 *     kwal.conf:3: wal.write.quorum: expected an integer between 0 and 16, got 'x'
 *
 * Values are immutable after load: build a kw_conf_t with kw_conf_load() (or
 * kw_conf_new() + kw_conf_set*()), then hand each module a const pointer to
 * its own sub-struct (`&conf->wal`). Not thread-safe while being built; any
 * number of threads may read a loaded kw_conf_t.
 */
#ifndef KW_CONF_H
#define KW_CONF_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "kw_err.h"

/* The type of a setting, and the C type of its field in kw_conf_t. */
typedef enum {
    KW_CONF_STRING = 0, /* char *, owned by the kw_conf_t; any text */
    KW_CONF_INT,        /* int64_t; decimal, min..max */
    KW_CONF_BOOL,       /* int, 0 or 1; true|false|yes|no|on|off|1|0 */
    KW_CONF_SIZE,       /* uint64_t bytes; a number with an optional K, M, G or T
                         * suffix (powers of 1024, `KiB` etc. also accepted); min..max */
    KW_CONF_ENUM,       /* int, index into the row's choices */
    KW_CONF_LIST        /* kw_conf_list_t; comma-separated, items trimmed and
                         * non-empty; min..max items */
} kw_conf_type_t;

/* A list value. items[0..count-1] are owned by the kw_conf_t. */
typedef struct kw_conf_list {
    char **items;
    int    count;
} kw_conf_list_t;

/* A pass-through setting (`kafka.KEY=VALUE` is kept as {KEY, VALUE}). */
typedef struct kw_conf_pair {
    char *key;
    char *value;
} kw_conf_pair_t;

/* wal.* -- see wal/wal.h for what each one does. */
typedef struct kw_conf_wal {
    kw_conf_list_t dirs;              /* wal.dirs */
    int64_t        write_quorum;      /* wal.write.quorum; 0: majority */
    uint64_t       segment_bytes;     /* wal.segment.bytes */
    int64_t        segment_ms;        /* wal.segment.ms */
    uint64_t       max_pending_bytes; /* wal.max.pending.bytes */
    int            compress;          /* wal.compress */
} kw_conf_wal_t;

/* log.* */
typedef struct kw_conf_log {
    int level;                        /* log.level; a kw_log_level_t */
} kw_conf_log_t;

/* Receiver mode (kwal receive) -- see receiver/receiver.h. */
typedef enum {
    KW_OFFSET_RESET_EARLIEST = 0,
    KW_OFFSET_RESET_LATEST   = 1,
    KW_OFFSET_RESET_ERROR    = 2
} kw_offset_reset_t;

/* batch.max.bytes weighs each record as its key and payload plus this many
 * bytes: about what a record costs in memory besides them (librdkafka's
 * message, kw_record_t, the sink's binding). Its help text says 256. */
#define KW_CONF_RECORD_OVERHEAD 256

typedef struct kw_conf_receiver {
    char          *group_id;          /* group.id; "" when not set */
    kw_conf_list_t topics;            /* topics */
    int64_t        receivers;         /* receivers */
    int64_t        max_rate;          /* receiver.max.rate; records/s, 0: unlimited */
    int            auto_offset_reset; /* auto.offset.reset; a kw_offset_reset_t */
    int64_t        block_interval_ms; /* block.interval.ms */
    uint64_t       block_max_bytes;   /* block.max.bytes */
    int64_t        batch_interval_ms; /* batch.interval.ms */
    uint64_t       batch_max_bytes;   /* batch.max.bytes; 0: no bound */
    int            batch_first_early; /* batch.first.early */
    char          *sink;              /* sink */
    char          *tracker_path;      /* tracker.path; "": <first wal dir>/tracker.db */
    char          *instance_id;       /* instance.id; "": from host and state dir */
    int            static_membership; /* receiver.static.membership */
    int64_t        max_rate_per_partition; /* max.rate.per.partition (direct); 0: none */
    kw_conf_list_t direct_start;      /* direct.start.offsets: topic:partition:offset */
    int            backpressure;      /* backpressure.enabled (direct) */
    int64_t        backpressure_min_rate; /* backpressure.min.rate, records/s */
    int            direct_assignment; /* direct.assignment; a kw_assignment_t */
} kw_conf_receiver_t;

/* direct.assignment: how instances of one group divide the partitions. */
typedef enum {
    KW_ASSIGN_ROUNDROBIN = 0,
    KW_ASSIGN_RANGE      = 1
} kw_assignment_t;

/* metrics.* */
typedef struct kw_conf_metrics {
    char *listen;                     /* metrics.listen; "": no endpoint */
} kw_conf_metrics_t;

/* zookeeper.* */
typedef struct kw_conf_zk {
    char   *connect;                  /* zookeeper.connect */
    int64_t session_timeout_ms;       /* zookeeper.session.timeout.ms */
    int64_t op_timeout_ms;            /* zookeeper.op.timeout.ms */
} kw_conf_zk_t;

typedef struct kw_conf_priv kw_conf_priv_t;

/* A loaded configuration. Every pointer inside is owned by it. */
typedef struct kw_conf {
    kw_conf_wal_t   wal;
    kw_conf_log_t   log;
    kw_conf_receiver_t receiver;
    kw_conf_zk_t    zk;
    kw_conf_metrics_t metrics;
    kw_conf_pair_t *kafka;            /* `kafka.` keys, prefix removed, in the
                                       * order first seen; a later value of
                                       * the same key replaces the earlier */
    size_t          nkafka;
    kw_conf_pair_t *sink_kafka;       /* `sink.kafka.` keys, the same way */
    size_t          nsink_kafka;
    kw_conf_priv_t *priv;             /* where each key was last set */
} kw_conf_t;

/* One row of the table. */
typedef struct kw_conf_prop {
    const char        *name;
    kw_conf_type_t     type;
    const char        *def;      /* default, written as in a config file */
    int64_t            min;      /* INT and SIZE: value range; LIST: item count */
    int64_t            max;
    const char *const *choices;  /* ENUM: the accepted words, NULL-terminated */
    size_t             offset;   /* offsetof(kw_conf_t, field) */
    const char        *desc;
} kw_conf_prop_t;

/* The table, in the order of the docs; static storage. */
const kw_conf_prop_t *kw_conf_props(size_t *count);

/* The row named `name`, or NULL. */
const kw_conf_prop_t *kw_conf_prop_find(const char *name);

/* A configuration holding every default. On success *conf is owned by the
 * caller (kw_conf_destroy). */
kw_err_t kw_conf_new(kw_conf_t **conf, char *errstr, size_t errlen);

/* Frees everything. NULL is a no-op. */
void kw_conf_destroy(kw_conf_t *conf);

/*
 * Set one key. `where` ("kwal.conf:3", "-X"; may be NULL) prefixes error
 * messages and is remembered for kw_conf_print(). On error the configuration
 * is unchanged and errstr says where, which key and what was expected
 * (KW_ECONFIG), or KW_ENOMEM.
 */
kw_err_t kw_conf_set(kw_conf_t *conf, const char *key, const char *value,
                     const char *where, char *errstr, size_t errlen);

/* Set from one `key=value` argument, as given to -X (where: "-X"). */
kw_err_t kw_conf_set_arg(kw_conf_t *conf, const char *arg,
                         char *errstr, size_t errlen);

/* Apply every line of the file at path (errors name "path:line"). KW_EIO
 * when it cannot be read. */
kw_err_t kw_conf_load_file(kw_conf_t *conf, const char *path,
                           char *errstr, size_t errlen);

/*
 * Defaults, then the file at path (NULL: none), then each of overrides[0..n-1]
 * ("key=value", as given to -X). On success *conf is owned by the caller.
 */
kw_err_t kw_conf_load(const char *path, const char *const *overrides, size_t n,
                      kw_conf_t **conf, char *errstr, size_t errlen);

/* 1 if key was set by the file or an override (not left at its default). */
int kw_conf_is_set(const kw_conf_t *conf, const char *key);

/* The value of prop in conf, written as in a config file. Returns the length
 * it needed (like snprintf). */
size_t kw_conf_format(const kw_conf_t *conf, const kw_conf_prop_t *prop,
                      char *buf, size_t len);

/* Parse a size ("64M", "4096", "1GiB") as a KW_CONF_SIZE value; KW_EINVAL if
 * it does not parse or overflows. For programs with size options. */
kw_err_t kw_conf_parse_size(const char *s, uint64_t *bytes);

/* Write a size with the largest suffix that divides it exactly ("64M"). */
size_t kw_conf_format_size(uint64_t bytes, char *buf, size_t len);

/* The effective configuration as a valid config file: each `key=value` line
 * after a comment line saying where the value came from ("# default",
 * "# kwal.conf:3", "# -X"), then the `kafka.` keys. */
void kw_conf_print(const kw_conf_t *conf, FILE *out);

/* The table as plain text for --help: key, type, default, range, description. */
void kw_conf_print_help(FILE *out);

/* The table as Markdown: the contents of CONFIGURATION.md. */
void kw_conf_print_markdown(FILE *out);

#endif /* KW_CONF_H */
