/*
 * receiver.h -- receiver mode (`kwal receive`) as one service handle.
 *
 * The service wires DESIGN.md's receiver data flow together:
 *
 *   receiver-N threads (consumer.c)   one librdkafka KafkaConsumer each, in
 *                                     group.id, manual offsets; records ->
 *                                     block generator -> bounded block queue
 *   pipeline thread (pipeline.c)      queue -> WAL append -> tracker ->
 *                                     ZooKeeper offsets (invariants 1, 4)
 *   batcher thread (batcher.c)        every batch.interval.ms: durable blocks
 *                                     -> one batch -> sink -> processed ->
 *                                     WAL cleanup (invariant 1)
 *
 * and service.c starts and stops them in the order that keeps the
 * invariants: receivers stop first (flushing their last block), the pipeline
 * drains the queue, the batcher delivers the last batch.
 *
 * --no-wal (kw_receiver_options_t.no_wal) is the unreliable receiver, the
 * baseline of DESIGN.md "Semantics to compare" (Spark's receiver before it
 * had a WAL). No WAL and no tracker are opened; the pipeline stores each
 * block's offsets in ZooKeeper as soon as it takes the block (still guarded
 * by the owner nodes, invariant 4) and hands the block to an in-memory
 * pending list; the batcher delivers every pending block as one batch each
 * batch.interval.ms. Invariant 1 is broken on purpose: a crash loses every
 * block whose offsets are in ZooKeeper but that the sink does not have yet.
 * A requested stop delivers them all; blocks that could not be delivered
 * when run() returns (sink failure at stop, fatal error) are logged at ERROR
 * one by one with their Kafka ranges, never dropped silently.
 *
 * Ownership. kw_receiver_new() copies nothing it does not need: conf and
 * wal_opts (and every string they point to) must outlive the handle.
 *
 * Threads. new, run and destroy are called by one thread (the program's main
 * thread): new, then run (blocks until stopped or a fatal error), then
 * destroy. kw_receiver_stop() may be called from any thread and from a
 * signal handler (it only stores to an atomic flag). kw_receiver_stats() and
 * kw_receiver_partitions() may be called from any thread while run() runs.
 */
#ifndef KW_RECEIVER_H
#define KW_RECEIVER_H

#include <stddef.h>
#include <stdint.h>

#include "kw_conf.h"
#include "kw_err.h"
#include "kw_hist.h"
#include "kw_stats.h"
#include "wal.h"
#include "zk.h"

typedef struct kw_receiver kw_receiver_t;

typedef struct kw_receiver_stats {
    uint64_t records_received;     /* records taken from Kafka */
    uint64_t blocks_made;          /* blocks put on the queue */
    uint64_t blocks_durable;       /* WAL appends acknowledged */
    uint64_t blocks_offsets_stored;     /* blocks whose offsets are in ZooKeeper */
    uint64_t blocks_fenced;        /* blocks whose offsets could not be stored:
                                    * the partition was no longer ours (invariant 4) */
    uint64_t zk_retries;           /* ZooKeeper commits retried */
    uint64_t pauses;               /* times a receiver paused its partitions (invariant 5) */
    uint64_t batches;              /* batches the sink acknowledged */
    uint64_t records_delivered;    /* records handed to the sink */
    uint64_t records_stored;
    uint64_t duplicates_delivered; /* invariant 3: counted, never hidden */
    uint64_t segments_cleaned;     /* WAL segments removed */
    uint64_t source_loss_events;   /* offset-out-of-range events (invariant 6) */
    uint64_t source_loss_records;  /* offsets lost at the source */
    uint64_t receiver_restarts;    /* receiver threads restarted after a failure */
    uint64_t quorum_pauses;        /* times the WAL fell below its write quorum and
                                    * consumption paused until it was repaired */
    uint64_t wal_bytes;            /* bytes the open WAL wrote per replica (since
                                    * it was last opened) */
    uint64_t wal_fsyncs;           /* its fdatasync calls, all replicas */
    int      wal_replicas_healthy; /* -1: no WAL (--no-wal, or released) */
    uint64_t zk_writes;            /* offset updates that succeeded */
    uint64_t partitions_owned;     /* owner nodes held in ZooKeeper now */
    int64_t  first_assignment_mono_ms; /* kw_mono_ms() of the first partition
                                    * assignment; 0: none yet */
    int64_t  first_stored_mono_ms; /* of the first batch that stored a record */
    uint64_t assigned_stored;      /* partitions assigned that went on from the
                                    * offset stored in ZooKeeper */
    uint64_t assigned_reset;       /* ... that had none: auto.offset.reset */
    uint64_t revoked;              /* partitions given up (flushed, disowned) */
    uint64_t end_advances;         /* offsets moved past a gap at a partition's
                                    * end that holds no record (transaction
                                    * markers, aborted or compacted records) */
    kw_hist_summary_t latency;     /* end-to-end latency (sink.h,
                                    * kw_sink_latency_add) of every record with a
                                    * timestamp in the batches the sink
                                    * acknowledged, in ms; of the caller's
                                    * histogram when options.latency was given
                                    * (then with what it held before) */
    kw_hist_summary_t batch_ms;    /* duration of each delivery round that gave
                                    * the sink a batch (--no-wal: each batch
                                    * delivered), in ms */
    kw_hist_summary_t wal_fsync_us; /* the open WAL's fdatasync durations in
                                    * microseconds (kw_wal_stats_t.fsync_us);
                                    * count 0 without a WAL */
} kw_receiver_stats_t;

/* How the service runs; kw_receiver_options_init() sets the defaults. */
typedef struct kw_receiver_options {
    int no_wal;     /* 0 (default): the data flow above, WAL and tracker.
                     * 1: `kwal receive --no-wal` (see the top of this file):
                     * no WAL, no tracker, offsets committed on receipt,
                     * blocks pending in memory until their batch; loses
                     * them on a crash. The caller does not run recovery. */
    kw_zk_t *zk;    /* NULL (default): the service opens its own ZooKeeper
                     * session and registers. Else the caller's session,
                     * registered (kw_zk_register), possibly resumed from a
                     * crashed predecessor (zk.h, "Resuming"); the service
                     * uses it and leaves it open, and once every receiver
                     * has had its first assignment (or after 10 s) releases
                     * the owner nodes it inherited and did not take back
                     * (kw_zk_release_inherited). The caller destroys it
                     * after kw_receiver_destroy(). */
    kw_hist_t *latency; /* NULL (default): the service keeps its own
                     * latency histogram. Else the caller's, which the
                     * batcher adds to (e.g. after recovery's replay added its
                     * records, so that one histogram covers the process);
                     * it must outlive the handle. */
    kw_wal_t *wal;  /* NULL (default): the service opens the WAL (wal_opts),
                     * the tracker and the sink itself. Else handles already
                     * open on the same WAL, tracker and sink -- recovery's
                     * (recovery.h, kw_recovery_kept_t) -- which the service
                     * takes instead of opening them again: they are its own
                     * from the call on, closed by kw_receiver_destroy() or,
                     * when the call fails, before it returns. wal_opts is
                     * still required (a WAL repaired later is reopened with
                     * it). */
    struct kw_tracker *tracker; /* with wal: the tracker, taken likewise */
    struct kw_sink *sink;       /* NULL: opened from the conf's sink. Else
                     * taken likewise (also with no_wal). */
} kw_receiver_options_t;

void kw_receiver_options_init(kw_receiver_options_t *opts);

/*
 * Check the receiver settings of conf (group.id and topics are required),
 * open the WAL (wal_opts, built from conf by the program), the tracker, the
 * sink and the ZooKeeper session, and register this instance. Nothing is
 * consumed yet. KW_ECONFIG for missing or contradictory settings, else the
 * error of the part that failed; errstr says which. On success *rcv is the
 * caller's (kw_receiver_destroy). kw_receiver_new() is
 * kw_receiver_new_opts() with the default options.
 */
kw_err_t kw_receiver_new(const kw_conf_t *conf, const kw_wal_options_t *wal_opts,
                         kw_receiver_t **rcv, char *errstr, size_t errlen);

/*
 * As kw_receiver_new(), with opts (NULL: the defaults; only read during the
 * call). With opts->no_wal neither the WAL nor the tracker is opened and
 * wal_opts may be NULL.
 */
kw_err_t kw_receiver_new_opts(const kw_conf_t *conf, const kw_wal_options_t *wal_opts,
                              const kw_receiver_options_t *opts, kw_receiver_t **rcv,
                              char *errstr, size_t errlen);

/*
 * Start the threads and block until kw_receiver_stop() is called or a fatal
 * error happens; then stop in order (receivers flush and give their
 * partitions up, the pipeline drains, the batcher delivers the last batch).
 * KW_OK after a requested stop with everything delivered; otherwise the
 * first fatal error with its one-line reason in errstr. Call once.
 */
kw_err_t kw_receiver_run(kw_receiver_t *rcv, char *errstr, size_t errlen);

/* Ask run() to stop. Async-signal-safe; any thread; idempotent. */
void kw_receiver_stop(kw_receiver_t *rcv);

/* A snapshot of the counters. Any thread. */
void kw_receiver_stats(kw_receiver_t *rcv, kw_receiver_stats_t *stats);

/*
 * The partitions this instance's receivers were assigned since the start,
 * as the metrics endpoint shows them (kw_stats.h): fills up to nmax, sorted
 * by topic and partition, and returns how many there are. owned: assigned to
 * a receiver now (owned in ZooKeeper from the assignment to the revoke);
 * position: the next offset stored in ZooKeeper -- the stored one, not the
 * one durable in the WAL, because that is where a restart or the next owner
 * goes on, so lag means what Kafka monitoring means by it -- as this
 * instance last stored or read it (-1: none stored yet); high: the high
 * watermark the partition's consumer last saw in a fetch response, read by
 * the receiver thread every KW_RECEIVER_WATERMARK_MS (-1: none seen yet).
 * Both are -1 while the partition is not owned. Any thread while the
 * handle lives; takes a lock the receivers take once per block and per
 * watermark reading.
 */
#define KW_RECEIVER_WATERMARK_MS 500
size_t kw_receiver_partitions(kw_receiver_t *rcv, kw_stats_partition_t *out, size_t nmax);

/* Close everything. NULL is a no-op. After run() returned (or instead of it). */
void kw_receiver_destroy(kw_receiver_t *rcv);

/* ---- Policies (pure functions; any thread; unit-tested) ---- */

/*
 * A receiver thread that fails (its Kafka consumer hit a fatal error, a
 * partition could not be taken in ZooKeeper, an injected receiver/fail) is
 * restarted after this many milliseconds: streak is the number of failures
 * in a row (1 for the first), counted afresh once a receiver ran for
 * KW_RECEIVER_HEALTHY_MS. 500 ms doubling per failure, at most 30 s.
 */
#define KW_RECEIVER_HEALTHY_MS 60000
int64_t kw_receiver_restart_delay_ms(uint32_t streak);

/*
 * --no-wal has no tracker to allocate batch ids, and they must grow across
 * restarts (the sqlite and file sinks recognise a replay by its id): the id
 * after prev (0: the first of this run) is max(prev + 1, now_ms), now_ms the
 * wall clock in ms since the epoch (values below 1 count as 1). So a restart
 * continues above the last run's ids unless the clock went back, or that run
 * made more than one batch per millisecond, by more than the time between.
 */
uint64_t kw_receiver_next_batch_id(uint64_t prev, int64_t now_ms);

#endif /* KW_RECEIVER_H */
