/*
 * blockgen.h -- kwal's blocks: the unit a receiver appends to the WAL.
 *
 * Three parts, used in this order by a receiver:
 *
 * 1. The generator (kw_blockgen_t). A receiver thread adds every record it
 *    consumes; the generator copies it into the current block, in the block's
 *    binary encoding, and cuts the block every block.interval.ms (told by
 *    kw_blockgen_tick() with the caller's clock), at block.max.bytes, or when
 *    asked (kw_blockgen_cut(), on revocation and shutdown). An empty interval
 *    makes no block. It also meters intake: receiver.max.rate records/s, as a
 *    token bucket that says how long to wait before the next record. It never
 *    drops a record.
 *
 * 2. The block (kw_block_t): immutable once made, holding its encoding
 *    (blockgen/FORMAT.md, what the WAL stores), its header fields, and its
 *    per-partition offset ranges [from, until). kw_block_encode() and
 *    kw_block_decode() are the paired codec; an iterator yields the records.
 *
 * 3. The hand-off queue (kw_blockq_t): bounded in blocks and in bytes,
 *    between the receivers that make blocks and the thread that appends them to
 *    the WAL. When it is full a put is refused (or waits), the queue latches
 *    FULL and the receiver pauses its partitions; once the queue has drained
 *    to half of both limits it signals ROOM and the receiver resumes. Memory
 *    stays bounded and nothing is dropped (invariant 5).
 *
 * This module knows nothing of the WAL's internals, ZooKeeper or librdkafka:
 * kw_record_t is its own record type (the receiver fills it from an
 * rd_kafka_message_t without copying).
 *
 * Threads. A kw_blockgen_t belongs to one thread (its receiver); none of its
 * functions is thread-safe. A kw_block_t is immutable: any number of threads
 * may call its accessors and run their own iterators on it at once; it is
 * destroyed once, by whoever owns it then (ownership moves with
 * kw_blockgen_take(), kw_blockq_put() and kw_blockq_get()). Every kw_blockq_*
 * function is thread-safe except kw_blockq_destroy().
 *
 * Library rules: nothing here prints or exits; errors come back as kw_err_t
 * with an errstr where a message helps.
 */
#ifndef KW_BLOCKGEN_H
#define KW_BLOCKGEN_H

#include <stddef.h>
#include <stdint.h>

#include "kw_err.h"

/* ---- Records ---- */

/* Timestamp types; the values are librdkafka's rd_kafka_timestamp_type_t. */
typedef enum {
    KW_TS_NOT_AVAILABLE = 0,
    KW_TS_CREATE_TIME   = 1,
    KW_TS_LOG_APPEND    = 2
} kw_tstype_t;

#define KW_BLOCK_MAX_TOPIC_LEN 255u          /* FORMAT.md, topic table */
#define KW_BLOCK_MAX_FIELD     0xFFFFFFFEu   /* longest key, value, header name or value */

/* One record header. value == NULL means a null value (value_len ignored);
 * a non-NULL value with value_len 0 is an empty value. name is never NULL
 * and need not be NUL-terminated (in decoded records it is not). */
typedef struct kw_record_header {
    const char *name;
    size_t      name_len;
    const void *value;
    size_t      value_len;
} kw_record_header_t;

/*
 * One Kafka record, as the generator takes it and the iterator gives it back.
 * Nothing in it is owned by the struct: when added to a generator every byte
 * is copied; when returned by an iterator every pointer points into the block
 * (valid until the block is destroyed), except headers, which points into the
 * iterator (valid until its next call).
 *
 * key == NULL is a null key (key_len ignored); key != NULL with key_len 0 is
 * an empty key. The same for value. topic is NUL-terminated, 1..255 bytes.
 */
typedef struct kw_record {
    const char               *topic;
    int32_t                   partition;     /* >= 0 */
    int64_t                   offset;        /* 0..INT64_MAX - 1 (offset + 1 must fit) */
    kw_tstype_t               tstype;
    int64_t                   timestamp;     /* ms since the epoch; -1 when not available */
    const void               *key;
    size_t                    key_len;
    const void               *value;
    size_t                    value_len;
    const kw_record_header_t *headers;       /* header_count entries; NULL if none */
    size_t                    header_count;
} kw_record_t;

/* ---- Blocks ---- */

typedef struct kw_block kw_block_t;
typedef struct kw_block_iter kw_block_iter_t;

/* The records of one partition in a block: [from_offset, until_offset) holds
 * them all; from_offset is the first one's offset and until_offset the last
 * one's + 1 (offsets between need not all be present). */
typedef struct kw_block_range {
    const char *topic;          /* NUL-terminated, owned by the block */
    int32_t     partition;
    int64_t     from_offset;
    int64_t     until_offset;
    uint32_t    records;        /* records of this partition in the block */
} kw_block_range_t;

/* The header fields a caller chooses (FORMAT.md, header). */
typedef struct kw_block_meta {
    uint32_t receiver_id;
    uint64_t seq;
    int64_t  created_ms;
} kw_block_meta_t;

/*
 * Encode n records (n >= 1) as one block. Ranges are derived from the records;
 * topics and ranges are ordered by first appearance (FORMAT.md), so the same
 * input always gives the same bytes. Within a partition offsets must strictly
 * increase. KW_EINVAL (errstr says which record and field) for a record that
 * breaks a FORMAT.md rule, KW_ENOMEM. On success *block is owned by the
 * caller (kw_block_destroy). Any thread; recs is only read.
 */
kw_err_t kw_block_encode(const kw_block_meta_t *meta, const kw_record_t *recs,
                         size_t n, kw_block_t **block, char *errstr, size_t errlen);

#define KW_BLOCK_BORROW 0x1u  /* the block points into data instead of copying it;
                               * the caller keeps data alive and unchanged until
                               * kw_block_destroy */
#define KW_BLOCK_TAKE   0x2u  /* on success the block owns data, a malloc'd buffer,
                               * and free()s it; on failure the caller still owns it */

/*
 * Decode and check the block in data[0..len) by every rule of FORMAT.md
 * ("Decoding rules"). flags: 0 (copy data), KW_BLOCK_BORROW or KW_BLOCK_TAKE.
 * KW_ECORRUPT with errstr naming the field and byte offset for any invalid
 * input -- never a read outside data[0..len); KW_EINVAL for bad arguments;
 * KW_ENOMEM. On success *block is owned by the caller. Any thread.
 */
kw_err_t kw_block_decode(const void *data, size_t len, unsigned flags,
                         kw_block_t **block, char *errstr, size_t errlen);

/* Frees the block (and its data unless borrowed). NULL is a no-op. No
 * iterator over it may be used afterwards. */
void kw_block_destroy(kw_block_t *block);

/* The encoding (FORMAT.md), what goes into the WAL; owned by the block. */
const uint8_t *kw_block_data(const kw_block_t *block, size_t *len);
/* Encoded bytes; what the queue counts. */
size_t kw_block_size(const kw_block_t *block);

uint32_t kw_block_receiver_id(const kw_block_t *block);
uint64_t kw_block_seq(const kw_block_t *block);
int64_t  kw_block_created_ms(const kw_block_t *block);
uint32_t kw_block_record_count(const kw_block_t *block);

/* Ranges in FORMAT.md order (first record of each partition). i < count;
 * the pointer is owned by the block. */
size_t kw_block_range_count(const kw_block_t *block);
const kw_block_range_t *kw_block_range(const kw_block_t *block, size_t i);
/* The range of (topic, partition), or NULL if the block has none. */
const kw_block_range_t *kw_block_range_find(const kw_block_t *block,
                                            const char *topic, int32_t partition);

/*
 * Records of a block, in order. next() gives KW_OK and fills *rec (pointers
 * as kw_record_t says), KW_EOF after the last, KW_ENOMEM if the header array
 * cannot grow. An iterator belongs to one thread; several may run on one
 * block. Free with kw_block_iter_destroy (NULL is a no-op) before the block.
 */
kw_err_t kw_block_iter_new(const kw_block_t *block, kw_block_iter_t **it);
kw_err_t kw_block_iter_next(kw_block_iter_t *it, kw_record_t *rec);
void kw_block_iter_destroy(kw_block_iter_t *it);

/*
 * Blocks -> one flat array of records: what a batch hands to the sink.
 * Zero-initialise, add blocks in order, use recs[0..n-1], then free. The
 * records point into the blocks, which must outlive the batch; header
 * arrays are copied (an iterator's are only valid until its next call).
 * One thread.
 */
typedef struct kw_flat_batch {
    kw_record_t          *recs;
    size_t                n, cap;
    kw_record_header_t  **hdrs;     /* the copied header arrays */
    size_t                nhdrs;
} kw_flat_batch_t;

/* Append every record of block. KW_ENOMEM leaves fb valid (with a prefix of
 * the block's records; the caller frees it). */
kw_err_t kw_flat_batch_add(kw_flat_batch_t *fb, const kw_block_t *block);

/* Free what the batch allocated (not the blocks). fb is zeroed. */
void kw_flat_batch_free(kw_flat_batch_t *fb);

/* ---- Generator ---- */

typedef struct kw_blockgen kw_blockgen_t;

#define KW_BLOCKGEN_MAX_BYTES (256ull * 1024 * 1024)  /* largest block.max.bytes:
                                                       * a block fits one WAL record */

typedef struct kw_blockgen_config {
    uint32_t receiver_id;   /* written into every block */
    uint64_t first_seq;     /* seq of the first block; default 1 */
    int64_t  interval_ms;   /* block.interval.ms; default 200; >= 1 */
    uint64_t max_bytes;     /* block.max.bytes; default 4 MiB; 64..KW_BLOCKGEN_MAX_BYTES */
    uint64_t max_rate;      /* receiver.max.rate, records/s; 0 (default): unlimited.
                             * The bucket holds max(1, ceil(max_rate / 10)) records,
                             * i.e. bursts of 100 ms worth. */
} kw_blockgen_config_t;

/* Fills the defaults above. */
void kw_blockgen_config_init(kw_blockgen_config_t *cfg);

/* KW_ECONFIG with errstr naming the field for a value out of range. On success
 * *gen is owned by the caller (kw_blockgen_destroy). The config is copied. */
kw_err_t kw_blockgen_new(const kw_blockgen_config_t *cfg, kw_blockgen_t **gen,
                         char *errstr, size_t errlen);

/* Frees the generator, its current block and every block not yet taken.
 * NULL is a no-op. A receiver that must not lose them calls kw_blockgen_cut()
 * and takes every block first. */
void kw_blockgen_destroy(kw_blockgen_t *gen);

/*
 * Copy rec into the current block. Before adding, the current block is cut
 * when rec would take it past max_bytes, or when rec's partition already has a
 * record in it at an offset >= rec->offset (a seek back or an offset reset:
 * ranges stay exact). After adding, a block at or above max_bytes is cut (a
 * record larger than max_bytes alone makes a block of its own). Charges one
 * record to the rate limiter. KW_EINVAL (errstr) for a record FORMAT.md cannot
 * hold (negative partition or offset, bad topic name, field too long), KW_ENOMEM;
 * on error the record was not added, and any block cut before it stays ready.
 */
kw_err_t kw_blockgen_add(kw_blockgen_t *gen, const kw_record_t *rec,
                         char *errstr, size_t errlen);

/*
 * Tell the generator the time (any monotonic ms clock, the same every call).
 * The first tick starts the first interval; whenever now reaches the end of
 * the current interval, a non-empty current block is cut and the next interval
 * begins (fixed cadence: [start + k * interval_ms, ...); after a stall longer
 * than one interval the cadence restarts at now). KW_ENOMEM leaves the
 * records in the current block, to be cut by a later call.
 */
kw_err_t kw_blockgen_tick(kw_blockgen_t *gen, int64_t now_ms);

/* The end of the current interval (when the next tick should come), or
 * INT64_MAX before the first tick. */
int64_t kw_blockgen_deadline(const kw_blockgen_t *gen);

/* Cut the current block now, if it has records (revocation, shutdown).
 * KW_ENOMEM leaves the records in place. */
kw_err_t kw_blockgen_cut(kw_blockgen_t *gen);

/* The oldest cut block not yet taken, or NULL; ownership passes to the caller.
 * Blocks come out in cut order (seq order). */
kw_block_t *kw_blockgen_take(kw_blockgen_t *gen);

/* Cut blocks not yet taken, and their bytes. */
size_t kw_blockgen_ready(const kw_blockgen_t *gen, uint64_t *bytes);

/* Records in the current (uncut) block, and its encoded size so far. */
uint32_t kw_blockgen_pending(const kw_blockgen_t *gen, uint64_t *bytes);

/*
 * Rate limit (receiver.max.rate): how many ms the caller should wait, at
 * now_ms, before taking the next record from Kafka; 0 means take it now. The
 * first call anchors the bucket (full) at now_ms; every kw_blockgen_add()
 * charges one record, possibly into debt (so a batch taken at once is paid for
 * by a longer wait). Over any long run intake is at most max_rate records/s
 * plus one bucket. Always 0 when max_rate is 0. The caller waits (keeps polling
 * for rebalance events without taking records); the generator drops nothing.
 */
int64_t kw_blockgen_rate_wait(kw_blockgen_t *gen, int64_t now_ms);

typedef struct kw_blockgen_stats {
    uint64_t records;          /* records added */
    uint64_t bytes;            /* encoded bytes of blocks cut */
    uint64_t blocks;           /* blocks cut, by every cause below */
    uint64_t cut_interval;
    uint64_t cut_size;
    uint64_t cut_seek;         /* partition went back */
    uint64_t cut_explicit;     /* kw_blockgen_cut() */
    uint64_t rate_waits;       /* rate_wait() calls that returned > 0 */
} kw_blockgen_stats_t;

void kw_blockgen_stats(const kw_blockgen_t *gen, kw_blockgen_stats_t *stats);

/* ---- Hand-off queue ---- */

typedef struct kw_blockq kw_blockq_t;

typedef enum {
    KW_BLOCKQ_ROOM = 0,   /* puts are accepted while they fit */
    KW_BLOCKQ_FULL = 1    /* a put did not fit: every put waits or is refused
                           * until the queue drains to the resume marks */
} kw_blockq_state_t;

/* Called on every ROOM -> FULL and FULL -> ROOM change, by the thread whose
 * put or get caused it, with the queue's lock held: keep it short (set a flag,
 * signal a thread) and never call back into the queue. */
typedef void (*kw_blockq_state_cb)(kw_blockq_state_t state, void *opaque);

#define KW_BLOCKQ_HALF ((size_t)-1)

typedef struct kw_blockq_options {
    size_t             max_blocks;    /* default 16; >= 1 */
    uint64_t           max_bytes;     /* default 64 MiB; >= 1. A block larger
                                       * than this is accepted into an empty queue */
    size_t             resume_blocks; /* FULL ends at <= this many blocks ... */
    uint64_t           resume_bytes;  /* ... and <= this many bytes. Must be below
                                       * the maxima; KW_BLOCKQ_HALF (the default):
                                       * half the maximum, rounded down */
    kw_blockq_state_cb on_state;      /* may be NULL */
    void              *opaque;
} kw_blockq_options_t;

void kw_blockq_options_init(kw_blockq_options_t *opts);

/* KW_ECONFIG for bad limits (resume marks must be below the maxima). On
 * success *q is owned by the caller. */
kw_err_t kw_blockq_new(const kw_blockq_options_t *opts, kw_blockq_t **q,
                       char *errstr, size_t errlen);

/* Frees the queue and every block still in it. NULL is a no-op. Only once no
 * other thread uses the queue (close, join, then destroy). */
void kw_blockq_destroy(kw_blockq_t *q);

/*
 * Append a block. timeout_ms: 0 tries once, < 0 waits without limit, > 0 waits
 * up to that long. KW_OK: the queue owns the block. KW_EFULL: it did not fit
 * (or the queue is FULL) within the timeout; KW_ECLOSED: the queue is closed.
 * On any error the caller still owns the block. Any thread.
 */
kw_err_t kw_blockq_put(kw_blockq_t *q, kw_block_t *block, int timeout_ms);

/*
 * Remove the oldest block. KW_OK: *block is the caller's. KW_ETIMEDOUT: none
 * came within timeout_ms (same convention as put). KW_ECLOSED: closed and
 * empty -- blocks queued before close are still handed out, so nothing is lost
 * at shutdown. Any thread.
 */
kw_err_t kw_blockq_get(kw_blockq_t *q, kw_block_t **block, int timeout_ms);

/* Refuse further puts and wake every waiting put and get. Idempotent; any
 * thread. */
void kw_blockq_close(kw_blockq_t *q);

/* Wait until the queue is ROOM (or closed); KW_OK, KW_ETIMEDOUT or
 * KW_ECLOSED. For a paused receiver that wants to sleep until it may resume. */
kw_err_t kw_blockq_wait_room(kw_blockq_t *q, int timeout_ms);

typedef struct kw_blockq_stats {
    size_t            blocks;      /* in the queue now */
    uint64_t          bytes;
    kw_blockq_state_t state;
    int               closed;
    uint64_t          puts;        /* accepted */
    uint64_t          gets;
    uint64_t          refused;     /* puts that returned KW_EFULL */
    uint64_t          full_events; /* ROOM -> FULL changes */
} kw_blockq_stats_t;

/* A consistent snapshot. Any thread. */
void kw_blockq_stats(kw_blockq_t *q, kw_blockq_stats_t *stats);

/* The current state (the cheap query for "may I resume?"). Any thread. */
kw_blockq_state_t kw_blockq_state(kw_blockq_t *q);

#endif /* KW_BLOCKGEN_H */
