/*
 * tracker.h -- the block tracker: what kwal knows about every block it has
 * made durable, kept in a SQLite database next to the WAL.
 *
 * A block is tracked once the WAL has acknowledged it (it is then durable,
 * invariant 1) and moves through four states, each change one transaction:
 *
 *     DURABLE ------> OFFSETS_STORED ---> ALLOCATED -----> PROCESSED
 *        | mark_offsets_stored ^ allocate_batch  mark_batch_processed
 *        +-------------------(allocate_batch)--+
 *
 *   DURABLE    in the WAL on the write quorum (kw_tracker_insert_block)
 *   OFFSETS_STORED  its offsets are in ZooKeeper (kw_tracker_mark_offsets_stored)
 *   ALLOCATED  part of a batch (kw_tracker_allocate_batch); a durable block
 *              may be allocated before ZooKeeper has its offsets: the sink's
 *              order does not depend on ZooKeeper
 *   PROCESSED  the sink acknowledged its batch (kw_tracker_mark_batch_processed)
 *
 * The WAL may be cleaned below kw_tracker_cleanable_below() (invariant 1: never
 * of a block the sink has not acknowledged). After a crash, recovery replays
 * the open batches (kw_tracker_open_batches, same batch ids, so an idempotent
 * sink recognises them) and then the blocks never allocated; it repairs
 * ZooKeeper from kw_tracker_partition_max() (DESIGN.md "Beyond the original").
 *
 * Schema (user_version 2; SQLite, journal_mode=WAL, synchronous=FULL; a
 * version 1 database -- the same with delivery_batches named "batches" -- is
 * upgraded in place when opened):
 *
 *   blocks(lsn INTEGER PRIMARY KEY, segment, offset, size,  -- kw_wal_pos_t
 *          receiver, records, bytes, state, batch, created_ms)
 *       state: 1 durable, 2 offsets stored, 3 allocated, 4 processed
 *       batch: NULL until allocated
 *   block_ranges(lsn, topic, partition, from_offset, until_offset)
 *       one row per partition of the block, [from, until)
 *   delivery_batches(id INTEGER PRIMARY KEY AUTOINCREMENT, created_ms, state, blocks,
 *           records)
 *       state: 1 open (allocated), 2 processed. AUTOINCREMENT: an id is never
 *       reused, even after kw_tracker_prune(), because sinks recognise
 *       replayed batches by id.
 *   partitions(topic, partition, until_offset)
 *       the highest until_offset ever tracked per partition; kept on insert so
 *       that it survives pruning.
 *
 * Threads. Every function may be called from any thread: the handle owns one
 * SQLite connection and serialises calls on it with a mutex (expected
 * callers: the WAL appender inserts, the ZooKeeper updater marks committed,
 * the batcher allocates and marks processed, metrics read counts).
 * kw_tracker_close() must come after every other call has returned.
 *
 * Errors. KW_EIO (or KW_ECORRUPT for a database that is not a tracker or is
 * from a newer version) with errstr naming the database path and SQLite's
 * message. A failed state change leaves the database as it was (the
 * transaction is rolled back).
 */
#ifndef KW_TRACKER_H
#define KW_TRACKER_H

#include <stddef.h>
#include <stdint.h>

#include "blockgen.h"
#include "kw_err.h"
#include "kw_hist.h"
#include "sink.h"
#include "wal.h"

#define KW_TRACKER_SCHEMA_VERSION 2

typedef struct kw_tracker kw_tracker_t;

typedef enum {
    KW_BLOCK_DURABLE   = 1,
    KW_BLOCK_OFFSETS_STORED = 2,
    KW_BLOCK_ALLOCATED = 3,
    KW_BLOCK_PROCESSED = 4
} kw_block_state_t;

typedef enum {
    KW_BATCH_OPEN      = 1,
    KW_BATCH_PROCESSED = 2
} kw_batch_state_t;

/* The records of one partition in a block: offsets [from, until). */
typedef struct kw_tracker_range {
    const char *topic;          /* NUL-terminated; owned by whoever filled it */
    int32_t     partition;
    int64_t     from_offset;
    int64_t     until_offset;
} kw_tracker_range_t;

/* What the tracker knows about one block. */
typedef struct kw_tracker_block {
    kw_wal_pos_t     pos;           /* pos.lsn is the block's key */
    uint32_t         receiver;
    uint32_t         records;
    uint64_t         bytes;         /* encoded block bytes (before WAL compression) */
    int64_t          created_ms;
    kw_block_state_t state;         /* ignored by insert (always DURABLE) */
    uint64_t         batch;         /* 0: not allocated; ignored by insert */
} kw_tracker_block_t;

/* A list of blocks, LSN order. Free with kw_tracker_blocks_free(). */
typedef struct kw_tracker_blocks {
    kw_tracker_block_t *v;
    size_t              n;
} kw_tracker_blocks_t;

void kw_tracker_blocks_free(kw_tracker_blocks_t *list);

/*
 * Open (or create) the tracker database at path. Creates the schema in a
 * new database; refuses (KW_ECORRUPT) a database with a user_version other
 * than 0 (new) or KW_TRACKER_SCHEMA_VERSION. On success *t is the caller's.
 */
kw_err_t kw_tracker_open(const char *path, kw_tracker_t **t,
                         char *errstr, size_t errlen);

/* Close the database. NULL is a no-op. */
void kw_tracker_close(kw_tracker_t *t);

/* The database path given to open; owned by the handle. */
const char *kw_tracker_path(const kw_tracker_t *t);

/*
 * Track a block the WAL has just made durable, with its ranges (nranges may
 * be 0; ranges may then be NULL), in state DURABLE. Idempotent by LSN: a block
 * already tracked at the same WAL position is left as it is (*inserted = 0);
 * the same LSN at another position is KW_ECORRUPT (two blocks, one LSN).
 * *inserted may be NULL. One transaction.
 */
kw_err_t kw_tracker_insert_block(kw_tracker_t *t, const kw_tracker_block_t *blk,
                                 const kw_tracker_range_t *ranges, size_t nranges,
                                 int *inserted, char *errstr, size_t errlen);

/*
 * kw_tracker_insert_block for block b (blockgen.h), which the WAL holds at
 * pos: receiver, record count, creation time and ranges are b's; bytes is
 * its encoded size. The pipeline and recovery's tracker rebuild use it.
 */
kw_err_t kw_tracker_insert_from_block(kw_tracker_t *t, const kw_block_t *b,
                                      const kw_wal_pos_t *pos, size_t bytes,
                                      char *errstr, size_t errlen);

/*
 * The block's offsets are now in ZooKeeper: DURABLE -> OFFSETS_STORED. A block
 * already past DURABLE is left as it is (allocation may come first).
 * KW_ENOTFOUND for an LSN not tracked.
 */
kw_err_t kw_tracker_mark_offsets_stored(kw_tracker_t *t, uint64_t lsn,
                                   char *errstr, size_t errlen);

/*
 * Make one batch of every DURABLE or OFFSETS_STORED block not yet in a batch, in
 * LSN order: insert the batch (state OPEN), mark the blocks ALLOCATED, all in
 * one transaction. *batch_id gets the new id and *blocks (may be NULL) its
 * blocks; with nothing to allocate no batch is made, *batch_id is 0 and the
 * list empty. now_ms is stored as the batch's created_ms.
 */
kw_err_t kw_tracker_allocate_batch(kw_tracker_t *t, int64_t now_ms,
                                   uint64_t *batch_id, kw_tracker_blocks_t *blocks,
                                   char *errstr, size_t errlen);

/* The same with at most max_blocks blocks, the oldest (0: no limit);
 * recovery replays a long backlog as several bounded batches. */
kw_err_t kw_tracker_allocate_batch_max(kw_tracker_t *t, int64_t now_ms, size_t max_blocks,
                                       uint64_t *batch_id, kw_tracker_blocks_t *blocks,
                                       char *errstr, size_t errlen);

/*
 * How many of the oldest blocks not in a batch yet (those
 * kw_tracker_allocate_batch_max would take first) fit within max_bytes, each
 * weighed as its encoded bytes plus per_record x its records: *nblocks, at
 * least 1 when there is any block, 0 when there is none; *more is 1 when
 * blocks beyond those are waiting. A block appended meanwhile comes after
 * them (a higher LSN), so passing *nblocks to kw_tracker_allocate_batch_max
 * takes exactly these.
 */
kw_err_t kw_tracker_unallocated_within(kw_tracker_t *t, uint64_t max_bytes, uint64_t per_record,
                                       size_t *nblocks, int *more,
                                       char *errstr, size_t errlen);

/* The blocks of a batch in LSN order (empty for an unknown id). */
kw_err_t kw_tracker_batch_blocks(kw_tracker_t *t, uint64_t batch_id,
                                 kw_tracker_blocks_t *blocks,
                                 char *errstr, size_t errlen);

/*
 * The sink has acknowledged the batch: the batch and all its blocks become
 * PROCESSED, in one transaction. Marking a processed batch again is a no-op;
 * KW_ENOTFOUND for an unknown id.
 */
kw_err_t kw_tracker_mark_batch_processed(kw_tracker_t *t, uint64_t batch_id,
                                         char *errstr, size_t errlen);

/*
 * Ids of the OPEN batches (allocated, not acknowledged), ascending, for
 * recovery to deliver again under the same ids. *ids is malloc'd (NULL when
 * *n is 0); the caller frees it.
 */
kw_err_t kw_tracker_open_batches(kw_tracker_t *t, uint64_t **ids, size_t *n,
                                 char *errstr, size_t errlen);

/*
 * Every block not PROCESSED, LSN order (recovery): the blocks of open batches
 * and those not yet allocated.
 */
kw_err_t kw_tracker_unprocessed_blocks(kw_tracker_t *t, kw_tracker_blocks_t *blocks,
                                       char *errstr, size_t errlen);

/*
 * The LSN below which no tracked block needs the WAL: the lowest LSN not
 * PROCESSED; when every tracked block is processed, the highest tracked LSN
 * + 1; 0 with no block tracked. Keeps invariant 1 only if the caller also
 * holds cleanup below any WAL append it has not inserted here yet (the
 * pipeline inserts each block right after its append returns, so it cleans
 * below min(this, the LSN of an append in flight)).
 */
kw_err_t kw_tracker_cleanable_below(kw_tracker_t *t, uint64_t *lsn,
                                char *errstr, size_t errlen);

/* The highest until_offset of one partition (the next offset to consume
 * after everything tracked). */
typedef struct kw_tracker_partition {
    char    *topic;             /* malloc'd, freed by kw_tracker_partitions_free */
    int32_t  partition;
    int64_t  until_offset;
} kw_tracker_partition_t;

/*
 * The highest until_offset per (topic, partition) over every block ever
 * tracked, ordered by topic then partition (recovery moves ZooKeeper's
 * offsets forward to these; never backwards). Free with
 * kw_tracker_partitions_free().
 */
kw_err_t kw_tracker_partition_max(kw_tracker_t *t, kw_tracker_partition_t **parts,
                                  size_t *n, char *errstr, size_t errlen);
void kw_tracker_partitions_free(kw_tracker_partition_t *parts, size_t n);

/* The ranges of one block, in insertion order (empty for an unknown LSN).
 * *ranges and each topic are malloc'd: free with kw_tracker_ranges_free(). */
kw_err_t kw_tracker_block_ranges(kw_tracker_t *t, uint64_t lsn,
                                 kw_tracker_range_t **ranges, size_t *n,
                                 char *errstr, size_t errlen);
void kw_tracker_ranges_free(kw_tracker_range_t *ranges, size_t n);

/*
 * Forget PROCESSED blocks (and their ranges) with an LSN below below_lsn, and
 * processed batches left without blocks: call after the WAL has been cleaned
 * below the same LSN. partitions keeps the per-partition maxima, and the highest tracked block is
 * always kept (kw_tracker_cleanable_below() needs it). *removed
 * (may be NULL) gets the number of blocks removed. One transaction.
 */
kw_err_t kw_tracker_prune(kw_tracker_t *t, uint64_t below_lsn, uint64_t *removed,
                          char *errstr, size_t errlen);

/* For metrics: blocks, records and bytes per state (index kw_block_state_t;
 * index 0 unused), batches per state. */
typedef struct kw_tracker_counts {
    uint64_t blocks[5];
    uint64_t records[5];
    uint64_t bytes[5];
    uint64_t batches_open;
    uint64_t batches_processed;
    uint64_t max_lsn;           /* highest tracked LSN, 0 if none */
} kw_tracker_counts_t;

kw_err_t kw_tracker_counts(kw_tracker_t *t, kw_tracker_counts_t *counts,
                           char *errstr, size_t errlen);

/*
 * Make the next batch id at least first_id (ids only grow; a smaller
 * first_id changes nothing). For a tracker rebuilt from the WAL: its ids
 * would otherwise start at 1 again and collide with batches the sink
 * already holds under those ids. One transaction.
 */
kw_err_t kw_tracker_batch_ids_from(kw_tracker_t *t, uint64_t first_id,
                                   char *errstr, size_t errlen);

/* ---- Delivery: tracked blocks to the sink, in batches (delivery.c) ----
 *
 * What the batcher thread does every batch.interval.ms and what recovery
 * does at start-up before anything is consumed (invariant 2).
 *
 * One round:
 *
 *   1. every batch still OPEN in the tracker (allocated, never acknowledged:
 *      a sink failure, or a run that died) is delivered again under its own
 *      id, so an idempotent sink recognises it (invariant 3);
 *   2. kw_tracker_allocate_batch: the durable blocks not yet in a batch, in
 *      LSN order, become one new batch;
 *   3. each block is read back from the WAL, decoded, and all records go to
 *      the sink as ONE batch (kw_sink_write_batch: one transaction);
 *   4. once the sink has committed: kw_tracker_mark_batch_processed (then
 *      the batch counts in stats, each record's end-to-end latency at the
 *      commit in stats->latency), then
 *      kw_wal_cleanup below kw_tracker_cleanable_below() and kw_tracker_prune --
 *      the WAL is never cleaned of a block the sink has not acknowledged
 *      (invariant 1).
 *
 * Crash points: batch.allocated (after step 2), sink.committed (between 3
 * and 4); the sinks have sink.mid-txn, the WAL wal.cleanup.
 *
 * Threads: one caller at a time per sink (see sink.h); the WAL and tracker
 * handles may be shared with other threads.
 */

/* Added to by every round (plain counters: the caller's own; all zero bytes
 * is a fresh one). */
typedef struct kw_delivery_stats {
    uint64_t batches;               /* batches the sink acknowledged */
    uint64_t blocks;                /* blocks in those batches */
    uint64_t records_delivered;
    uint64_t records_stored;
    uint64_t duplicates_delivered;  /* invariant 3: counted, never hidden */
    uint64_t segments_cleaned;
    uint64_t blocks_lost;           /* LOST placeholders met (kw_wal_options_t.skip_lost) */
    uint64_t records_lost;          /* the records the tracker says they held */
    kw_hist_local_t latency;        /* every record of those batches with a
                                     * timestamp: its end-to-end latency at the
                                     * sink's acknowledgement (sink.h,
                                     * kw_sink_latency_add); the caller merges
                                     * it into its kw_hist_t */
} kw_delivery_stats_t;

/*
 * One round (above). KW_OK when every open batch and the new one (if there
 * was anything to allocate) were acknowledged; KW_EAGAIN when the sink
 * failed: that batch stays OPEN, nothing after it was tried, errstr says
 * why -- call again later. Anything else is fatal: a block the tracker
 * needs cannot be read or decoded from the WAL (errstr names its LSN and the
 * Kafka offset ranges it holds), the tracker failed, or memory ran out.
 * max_blocks bounds the new batch (0: every unallocated block). The WAL is
 * cleaned below min(kw_tracker_cleanable_below(), clean_limit(opaque)), the
 * limit asked for after the tracker (clean_limit may be NULL): a caller with
 * appends in flight that the tracker does not know yet returns the lowest
 * LSN they can get, UINT64_MAX for none. Asking in that order is what makes
 * it safe: an append that starts later gets an LSN above every one the
 * tracker had.
 */
typedef uint64_t (*kw_delivery_limit_fn)(void *opaque);

kw_err_t kw_delivery_round(kw_wal_t *wal, kw_tracker_t *tracker, kw_sink_t *sink,
                           int64_t now_ms, size_t max_blocks,
                           kw_delivery_limit_fn clean_limit, void *opaque,
                           kw_delivery_stats_t *stats, char *errstr, size_t errlen);

/* "t/0 offsets 10..19, t/3 offsets 5..8": the Kafka records the tracker
 * says the block at lsn holds (what is lost if it cannot be read), into buf. */
void kw_delivery_describe_block(kw_tracker_t *t, uint64_t lsn, char *buf, size_t cap);

/* The tracker database of a configuration: tracker.path when set, else
 * tracker.db in the first WAL directory (first_wal_dir). */
void kw_tracker_default_path(const char *tracker_path, const char *first_wal_dir,
                             char *buf, size_t cap);

#endif /* KW_TRACKER_H */
