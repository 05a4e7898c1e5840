/*
 * receiver_int.h -- private to receiver/ (consumer.c, pipeline.c, batcher.c,
 * service.c): the service handle and the per-receiver state they share.
 *
 * Who owns what:
 *   kw_receiver_t        created by service.c; its wal, tracker, zk, sink and
 *                        queue are opened in new() and closed in destroy(),
 *                        after every thread has been joined.
 *   kw_rcv_consumer_t    one per receiver thread; rk, gen and assignment are
 *                        touched only by that thread (librdkafka calls the
 *                        rebalance callback on it, from consumer_poll/close).
 *                        Each receiver has its own bounded queue q and its
 *                        own pipeline thread ("pipeline-N"), so its blocks
 *                        reach ZooKeeper in order while the pipelines of all
 *                        receivers append to the WAL at once (group commit).
 *                        put_seq/done_seq are shared with its pipeline
 *                        thread under mu (cv signals done_seq changes).
 *   counters             atomics, any thread (the latency and batch histograms
 *                        too); the per-partition view under parts_mu.
 *   fatal                first fatal error wins (fatal_mu); everyone polls
 *                        the atomic flag.
 */
#ifndef KW_RECEIVER_INT_H
#define KW_RECEIVER_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include <librdkafka/rdkafka.h>

#include "blockgen.h"
#include "kw_hist.h"
#include "kw_time.h"
#include "kw_conf.h"
#include "receiver.h"
#include "sink.h"
#include "tracker.h"
#include "wal.h"
#include "zk.h"

#define KW_RCV_MOD "receiver"

/*
 * Where a receiver is in one partition it owns, for the end-of-partition
 * advance (consumer.c, "gaps at the end"): next is one past the last record
 * taken (-1: none since the assignment, the stored or reset position
 * applies), eof the offset of the last end-of-partition event (-1: none).
 */
typedef struct kw_rcv_pos {
    const char *topic;        /* librdkafka's name of the topic: stable while
                               * the consumer lives */
    int32_t     partition;
    int64_t     next;
    int64_t     eof;
} kw_rcv_pos_t;

typedef struct kw_rcv_consumer {
    struct kw_receiver *svc;
    uint32_t            id;            /* 0..receivers-1; thread "receiver-<id>" */
    pthread_t           thread;
    int                 started;

    /* receiver thread only */
    rd_kafka_t                      *rk;
    kw_blockgen_t                   *gen;
    rd_kafka_topic_partition_list_t *assignment;  /* what we own now */
    kw_record_header_t              *hdrs;        /* conversion scratch */
    size_t                           hdrs_cap;
    kw_rcv_pos_t                    *pos;         /* per owned partition */
    size_t                           npos, pos_cap, pos_last;
    int64_t                          pos_check_ms; /* last end-advance check */
    int64_t                          wm_check_ms;  /* last watermark reading */

    /* receiver thread -> service thread: the thread failed and is exiting;
     * fail_msg is written before failed is set (and read after the join) */
    atomic_int failed;
    atomic_int assigned_once;   /* its consumer had a first assignment (service reads) */
    char       fail_msg[512];

    /* service thread only: restarts with backoff */
    int64_t  started_ms;               /* when the thread was last started */
    int64_t  restart_at_ms;            /* 0: not waiting for a restart */
    uint32_t fail_streak;              /* failures in a row (see restart_delay) */

    /* the receiver's queue and pipeline thread (they outlive restarts) */
    kw_blockq_t *q;
    pthread_t    pipe_thread;
    int          pipe_started;
    /* pipeline -> batcher: from just before a block's WAL append until it
     * is marked committed in the tracker, the lowest LSN it can get (0:
     * none); the batcher cleans the WAL and prunes the tracker below nothing
     * above it (invariant 1; see pipeline.c) */
    _Atomic uint64_t inflight_floor;

    /* shared with the pipeline, under mu */
    pthread_mutex_t mu;
    pthread_cond_t  cv;
    uint64_t        put_seq;           /* seq of the last block put on the queue */
    uint64_t        done_seq;     /* seq of the last block the pipeline
                                        * finished (offsets in ZooKeeper, or fenced) */
} kw_rcv_consumer_t;

typedef struct kw_rcv_counters {
    _Atomic uint64_t records_received, blocks_made, blocks_durable, blocks_offsets_stored,
                     blocks_fenced, zk_retries, pauses, batches, records_delivered,
                     records_stored, duplicates_delivered, segments_cleaned,
                     source_loss_events, source_loss_records, receiver_restarts,
                     quorum_pauses, assigned_stored, assigned_reset, revoked,
                     end_advances;
    _Atomic int64_t  first_assignment_mono_ms, first_stored_mono_ms;  /* 0: not yet */
} kw_rcv_counters_t;

/* release_inherited's bound: see service.c */
#define KW_RECEIVER_INHERIT_MS 10000

struct kw_receiver {
    const kw_conf_t          *conf;
    const kw_conf_receiver_t *rc;
    kw_wal_options_t          wal_opts;
    char                      tracker_path[4096];

    /* NULL while the pipeline has released it (below the write quorum, so
     * that `kwal wal repair` can take it); the pipeline swaps it under the
     * write side of wal_rw, the batcher uses it under the read side */
    kw_wal_t        *wal;
    pthread_rwlock_t wal_rw;
    pthread_mutex_t  quorum_mu;     /* one pipeline at a time waits for the quorum */
    kw_tracker_t *tracker;
    kw_zk_t      *zk;
    int           zk_borrowed;     /* the caller's (options.zk): not destroyed here */
    int           inherited_done;  /* kw_zk_release_inherited called (service thread) */
    kw_sink_t    *sink;

    kw_rcv_consumer_t *consumers;
    uint32_t           nconsumers;

    pthread_t batcher_thread;
    int       batcher_started;

    atomic_int stop_requested;     /* kw_receiver_stop(): async-signal-safe store */
    atomic_int receivers_stop;     /* service -> receiver threads: stop consuming */
    atomic_int fatal;
    pthread_mutex_t fatal_mu;
    char            fatal_msg[1024];

    /* batcher wake-up: stop_batcher set by the service after the pipeline
     * drained; deliver_now set by a --no-wal pipeline at the pending bound,
     * and by the pipeline of the first durable block since the start
     * (first_batch_asked: once) */
    pthread_mutex_t batch_mu;
    pthread_cond_t  batch_cv;
    int             stop_batcher;
    int             deliver_now;
    atomic_int      first_batch_asked;

    /* --no-wal (kw_receiver_options_t.no_wal): wal and tracker stay NULL.
     * The pipelines append each block, once its offsets are in ZooKeeper
     * (or fenced), to pending (oldest first; the list owns the blocks); the
     * batcher delivers a prefix of it and only then removes that prefix.
     * Everything under pending_mu; pending_cv: room made (batcher ->
     * pipelines waiting at KW_RCV_PENDING_MAX_BYTES). Lock order:
     * pending_mu before batch_mu. */
    int              no_wal;
    pthread_mutex_t  pending_mu;
    pthread_cond_t   pending_cv;
    kw_block_t     **pending;
    size_t           npending, pending_cap;
    size_t           pending_reserved; /* entries promised to pipelines that are
                                        * committing a block (wait_pending_room) */
    uint64_t         pending_bytes;
    uint64_t         last_batch_id;    /* batcher thread only */

    kw_rcv_counters_t n;
    /* end-to-end latency of the records in acknowledged batches: the
     * batcher merges each round's into *latency (own_latency, or the
     * caller's: kw_receiver_options_t.latency); any thread reads it */
    kw_hist_t        *latency;
    kw_hist_t         own_latency;
    kw_hist_t         batch_ms;         /* the batcher's rounds (batch_ms) */

    /* kw_receiver_partitions (partitions.c): one entry per partition ever
     * assigned here, sorted by topic and partition; under parts_mu, which
     * nests inside nothing else */
    pthread_mutex_t       parts_mu;
    kw_stats_partition_t *parts;
    size_t                nparts, capparts;
};

/*
 * --no-wal: the pending list's bound (encoded block bytes). The queues bound
 * what waits before the pipeline, but not what waits after it for its batch:
 * a pipeline commits a block in milliseconds, so without a bound the list
 * would hold batch.interval.ms worth of traffic. At the bound a pipeline
 * asks the batcher for a batch now and waits (before committing: the block
 * it holds is not acknowledged); its queue fills and its receiver pauses
 * (invariant 5). One block larger than the bound is taken into an empty
 * list. Lifted once receivers stop (what is left is bounded by the queues),
 * so a stop with the sink down cannot hang. Fixed, not a configuration key:
 * the baseline needs it only for memory, not for tuning.
 */
#define KW_RCV_PENDING_MAX_BYTES ((uint64_t)256 << 20)

/* ---- state.c (fatal errors, first times; any thread) ---- */

/* Record the first fatal error (printf-style) and ask everything to stop. */
void kw_rcv_fatal(struct kw_receiver *svc, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
int kw_rcv_is_fatal(struct kw_receiver *svc);
/* Set *when to kw_mono_ms() if it is still 0 (first assignment, first
 * record stored: the statistics). Any thread. */
void kw_rcv_note_first(_Atomic int64_t *when);

/* ---- partitions.c (what kw_receiver_partitions shows; any thread) ---- */

/* A receiver took topic/partition; stored: its offset in ZooKeeper (-1:
 * none, auto.offset.reset applies). Out of memory only loses the entry. */
void kw_rcv_part_assigned(struct kw_receiver *svc, const char *topic, int32_t partition,
                          int64_t stored);
/* ... gave it up. */
void kw_rcv_part_revoked(struct kw_receiver *svc, const char *topic, int32_t partition);
/* Offset next is stored in ZooKeeper (a block's range, an end advance);
 * the position only moves forward. */
void kw_rcv_part_stored(struct kw_receiver *svc, const char *topic, int32_t partition,
                        int64_t next);
/* The high watermark the partition's consumer last saw. */
void kw_rcv_part_high(struct kw_receiver *svc, const char *topic, int32_t partition,
                      int64_t high);

/* ---- consumer.c (receiver threads) ---- */

void *kw_rcv_consumer_main(void *arg);


/* The pipeline finished block seq of receiver c: its offsets are in
 * ZooKeeper (or were fenced). Called by the pipeline thread; takes c->mu and
 * wakes the receiver if it waits (on revoke or stop) for its last block. */
void kw_rcv_mark_done(kw_rcv_consumer_t *c, uint64_t seq);

/* ---- pipeline.c ---- */

void *kw_rcv_pipeline_main(void *arg);

/* ---- batcher.c ---- */

void *kw_rcv_batcher_main(void *arg);

#endif /* KW_RECEIVER_INT_H */
