/*
 * batcher.c -- the batch scheduler, thread "batcher".
 *
 * Every batch.interval.ms (and once more at shutdown, after the pipeline has
 * drained) one delivery round (delivery.h): open batches again, then the
 * durable blocks not yet in a batch as one new batch, then WAL cleanup
 * below what the sink acknowledged (invariant 1). A new batch takes at most
 * batch.max.bytes of the oldest blocks (each weighed as its encoded bytes
 * plus KW_CONF_RECORD_OVERHEAD per record); the blocks left out go in more
 * rounds right after it, so a backlog is stored in bounded batches. A block may be allocated
 * before ZooKeeper has its offsets: the sink's order does not depend on it.
 *
 * With batch.first.early, one more round, off the schedule, as soon as the
 * first block since the start is durable and its offsets are in ZooKeeper
 * (a pipeline sets deliver_now once): a restart stores records again at
 * once, not a whole interval after it started; the schedule does not move.
 *
 * A sink failure leaves the batch OPEN and is retried at the next interval.
 * WAL read or decode failures are fatal (the data is needed and unreadable).
 * Logs one line per batch at debug and a summary at info every ~10 s.
 *
 * --no-wal (receiver.h): every batch.interval.ms, when a pipeline at the
 * pending bound asks (deliver_now), and once more at shutdown after the
 * pipelines drained, the blocks pending then are decoded (their own
 * iterators; they are in memory, nothing is read back) and go to the sink
 * as ONE batch, id kw_receiver_next_batch_id(). Only once the sink has it
 * are they removed from the list and freed. A sink failure keeps them
 * pending (logged at ERROR, retried at the next interval under a new id:
 * the batch will have grown; no early batch before that); at shutdown the last batch is tried
 * NOWAL_FINAL_TRIES times, and what is still pending is reported lost by
 * the service. In this mode the batcher keeps running after a fatal error,
 * until the service stops it: pending blocks have their offsets in
 * ZooKeeper, and delivering them is the only way not to lose them.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tracker.h"
#include "kw_fault.h"
#include "kw_log.h"
#include "receiver_int.h"

#define BATCH_MOD "batcher"

/* Invariant 1: the WAL is not cleaned above a block a pipeline has appended
 * but not tracked yet (delivery.c asks after the tracker). */
static uint64_t inflight_limit(void *opaque)
{
    kw_receiver_t *svc = opaque;
    uint64_t limit = UINT64_MAX;

    for (uint32_t i = 0; i < svc->nconsumers; i++) {
        uint64_t f = atomic_load(&svc->consumers[i].inflight_floor);

        if (f != 0 && f < limit)
            limit = f;
    }
    return limit;
}

/* One delivery round (delivery.h) whose new batch holds at most
 * batch.max.bytes of the oldest blocks; *more: blocks were left for another
 * batch. 0, or -1 fatal (recorded). A sink failure is logged and retried at
 * the next interval (*more 0). */
static int run_round_once(kw_receiver_t *svc, int *more)
{
    kw_delivery_stats_t st;
    char errstr[1024];
    size_t max_blocks = 0;
    int64_t started = kw_mono_ms();
    kw_err_t err = KW_OK;

    *more = 0;
    memset(&st, 0, sizeof(st));
    pthread_rwlock_rdlock(&svc->wal_rw);
    if (svc->wal == NULL) {
        /* released below the write quorum: nothing can be read back now */
        pthread_rwlock_unlock(&svc->wal_rw);
        return 0;
    }
    if (svc->rc->batch_max_bytes > 0)
        err = kw_tracker_unallocated_within(svc->tracker, svc->rc->batch_max_bytes,
                                            KW_CONF_RECORD_OVERHEAD, &max_blocks, more,
                                            errstr, sizeof(errstr));
    if (err == KW_OK)
        err = kw_delivery_round(svc->wal, svc->tracker, svc->sink, kw_mono_ms(), max_blocks,
                                inflight_limit, svc, &st, errstr, sizeof(errstr));
    pthread_rwlock_unlock(&svc->wal_rw);
    atomic_fetch_add(&svc->n.batches, st.batches);
    atomic_fetch_add(&svc->n.records_delivered, st.records_delivered);
    atomic_fetch_add(&svc->n.records_stored, st.records_stored);
    if (st.records_stored > 0)
        kw_rcv_note_first(&svc->n.first_stored_mono_ms);
    atomic_fetch_add(&svc->n.duplicates_delivered, st.duplicates_delivered);
    atomic_fetch_add(&svc->n.segments_cleaned, st.segments_cleaned);
    kw_hist_merge(svc->latency, &st.latency);
    if (st.batches > 0)     /* a round that gave the sink a batch: its duration */
        kw_hist_add(&svc->batch_ms, kw_mono_ms() - started, 1);
    if (err == KW_EAGAIN) {
        *more = 0;
        KW_LOG_E(BATCH_MOD, "%s; delivering it again at the next interval", errstr);
        return 0;
    }
    if (err != KW_OK) {
        kw_rcv_fatal(svc, "%s", errstr);
        return -1;
    }
    return 0;
}

/* One scheduling round: batches of at most batch.max.bytes, one after the
 * other, until no durable block is left out (a backlog never sits in
 * memory whole). 0, or -1 fatal (recorded). */
static int run_round(kw_receiver_t *svc)
{
    int more;

    do {
        if (run_round_once(svc, &more) != 0)
            return -1;
    } while (more && !kw_rcv_is_fatal(svc));
    return 0;
}

/* ---- --no-wal ---- */

#define NOWAL_FINAL_TRIES 3

/* One --no-wal round: the blocks pending now, as one batch. 0 delivered (or
 * nothing pending), 1 the sink failed (the blocks stay pending; logged), -1
 * out of memory (logged; the blocks stay pending). */
static int run_round_no_wal(kw_receiver_t *svc)
{
    kw_block_t **blocks = NULL;
    kw_flat_batch_t nb;
    kw_sink_stats_t ss;
    kw_hist_local_t latency;
    uint64_t id, bytes = 0;
    int64_t started = kw_mono_ms();
    char errstr[512];
    size_t n;
    kw_err_t err;

    /* a snapshot of the list's head: pipelines only append, and only this
     * thread removes, so these n blocks stay first and alive */
    pthread_mutex_lock(&svc->pending_mu);
    n = svc->npending;
    if (n > 0) {
        blocks = malloc(n * sizeof(*blocks));
        if (blocks != NULL)
            memcpy(blocks, svc->pending, n * sizeof(*blocks));
    }
    pthread_mutex_unlock(&svc->pending_mu);
    if (n == 0)
        return 0;
    memset(&nb, 0, sizeof(nb));
    if (blocks == NULL)
        goto oom;
    for (size_t i = 0; i < n; i++) {
        /* the records point into the blocks, still on the pending list:
         * only this thread removes them */
        bytes += kw_block_size(blocks[i]);
        if (kw_flat_batch_add(&nb, blocks[i]) != KW_OK)
            goto oom;
    }

    id = kw_receiver_next_batch_id(svc->last_batch_id, kw_wall_ms());
    svc->last_batch_id = id;
    err = kw_sink_write_batch(svc->sink, id, nb.recs, nb.n, &ss, errstr,
                              sizeof(errstr));
    if (err == KW_OK) {     /* acknowledged now: each record's end-to-end latency */
        kw_hist_local_init(&latency);
        kw_sink_latency_add(&latency, nb.recs, nb.n, kw_wall_ms());
    }
    kw_flat_batch_free(&nb);
    if (err != KW_OK) {
        KW_LOG_E(BATCH_MOD, "batch %" PRIu64 ": sink: %s; its %zu blocks stay pending "
                 "(--no-wal: their offsets are in ZooKeeper, a crash now loses them)",
                 id, errstr, n);
        free(blocks);
        return 1;
    }
    kw_crash(KW_CRASH_SINK_COMMITTED);
    atomic_fetch_add(&svc->n.batches, 1);
    atomic_fetch_add(&svc->n.records_delivered, ss.delivered);
    atomic_fetch_add(&svc->n.records_stored, ss.stored);
    if (ss.stored > 0)
        kw_rcv_note_first(&svc->n.first_stored_mono_ms);
    atomic_fetch_add(&svc->n.duplicates_delivered, ss.duplicates_delivered);
    kw_hist_merge(svc->latency, &latency);
    kw_hist_add(&svc->batch_ms, kw_mono_ms() - started, 1);
    if (ss.duplicates_delivered > 0)
        KW_LOG_W(BATCH_MOD, "batch %" PRIu64 ": %" PRIu64 " duplicate deliveries "
                 "(already stored; invariant 3)", id, ss.duplicates_delivered);
    KW_LOG_D(BATCH_MOD, "batch %" PRIu64 ": %zu blocks, %" PRIu64 " records, %" PRIu64
             " stored", id, n, ss.delivered, ss.stored);

    /* delivered: off the list, and room for the pipelines */
    pthread_mutex_lock(&svc->pending_mu);
    memmove(svc->pending, svc->pending + n, (svc->npending - n) * sizeof(*svc->pending));
    svc->npending -= n;
    svc->pending_bytes -= bytes;
    pthread_cond_broadcast(&svc->pending_cv);
    pthread_mutex_unlock(&svc->pending_mu);
    for (size_t i = 0; i < n; i++)
        kw_block_destroy(blocks[i]);
    free(blocks);
    return 0;

oom:
    kw_flat_batch_free(&nb);
    free(blocks);
    KW_LOG_E(BATCH_MOD, "--no-wal: out of memory building a batch of %zu blocks; they "
             "stay pending", n);
    return -1;
}

/* The last --no-wal round, at shutdown: a few tries, then the service
 * reports what is left as lost. */
static void final_round_no_wal(kw_receiver_t *svc)
{
    for (int i = 1; i <= NOWAL_FINAL_TRIES; i++) {
        if (run_round_no_wal(svc) == 0)
            return;
        if (i < NOWAL_FINAL_TRIES) {
            KW_LOG_W(BATCH_MOD, "--no-wal: the last batch failed (try %d of %d); "
                     "trying again in 1 s", i, NOWAL_FINAL_TRIES);
            kw_sleep_ms(1000);
        }
    }
}

static void log_summary(kw_receiver_t *svc)
{
    kw_receiver_stats_t s;

    kw_receiver_stats(svc, &s);
    KW_LOG_I(BATCH_MOD, "received %" PRIu64 " records, %" PRIu64 " blocks durable, %"
             PRIu64 " committed, %" PRIu64 " batches, %" PRIu64 " stored, %" PRIu64
             " duplicate deliveries, %" PRIu64 " pauses, %" PRIu64
             " source-loss events, latency p50 %" PRId64 " p99 %" PRId64 " max %" PRId64
             " ms", s.records_received, s.blocks_durable,
             s.blocks_offsets_stored, s.batches, s.records_stored, s.duplicates_delivered,
             s.pauses, s.source_loss_events, s.latency.p50, s.latency.p99, s.latency.max);
}

void *kw_rcv_batcher_main(void *arg)
{
    kw_receiver_t *svc = arg;
    int64_t interval = svc->rc->batch_interval_ms;
    int64_t next = kw_mono_ms() + interval, last_summary = kw_mono_ms();
    int failed = 0;     /* --no-wal: the last round failed; no early rounds */

    pthread_setname_np(pthread_self(), "batcher");
    for (;;) {
        int stop, early = 0;

        pthread_mutex_lock(&svc->batch_mu);
        while (!svc->stop_batcher && (!svc->deliver_now || failed) &&
               (svc->no_wal || !kw_rcv_is_fatal(svc)) && kw_mono_ms() < next) {
            struct timespec ts;
            int64_t wait = next - kw_mono_ms();

            if (wait > 100)
                wait = 100;
            ts = kw_deadline_ts(CLOCK_REALTIME, wait);
            pthread_cond_timedwait(&svc->batch_cv, &svc->batch_mu, &ts);
        }
        stop = svc->stop_batcher;
        if (svc->deliver_now && !failed && kw_mono_ms() < next)
            early = 1;
        svc->deliver_now = 0;
        pthread_mutex_unlock(&svc->batch_mu);
        if (svc->no_wal) {
            /* on until the service stops us, fatal or not (top of file) */
            if (stop) {
                final_round_no_wal(svc);
                break;
            }
            failed = run_round_no_wal(svc) != 0;
        } else {
            if (kw_rcv_is_fatal(svc))
                break;
            /* at stop: the last batch (the pipeline has drained by then) */
            if (run_round(svc) != 0 || stop)
                break;
        }
        if (!early) {
            next += interval;
            if (next < kw_mono_ms())
                next = kw_mono_ms() + interval;
        }
        if (kw_mono_ms() - last_summary >= 10000) {
            last_summary = kw_mono_ms();
            log_summary(svc);
        }
    }
    log_summary(svc);
    KW_LOG_D(BATCH_MOD, "stopped");
    return NULL;
}
