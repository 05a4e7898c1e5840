/*
 * batcher.c -- the batch scheduler, thread "batcher".
 *
 * Every batch.interval.ms (and once more at shutdown, after the pipeline has
 * drained) one delivery round (delivery.h): open batches again, then the
 * durable blocks not yet in a batch as one new batch, then WAL cleanup
 * below what the sink acknowledged (invariant 1). A block may be allocated
 * before ZooKeeper has its offsets: the sink's order does not depend on it.
 *
 * A sink failure leaves the batch OPEN and is retried at the next interval.
 * WAL read or decode failures are fatal (the data is needed and unreadable).
 * Logs one line per batch at debug and a summary at info every ~10 s.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "delivery.h"
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

/* One scheduling round (delivery.h). 0, or -1 fatal (recorded). A sink
 * failure is logged and retried at the next interval. */
static int run_round(kw_receiver_t *svc)
{
    kw_delivery_stats_t st;
    char errstr[1024];
    kw_err_t err;

    memset(&st, 0, sizeof(st));
    pthread_rwlock_rdlock(&svc->wal_rw);
    if (svc->wal == NULL) {
        /* released below the write quorum: nothing can be read back now */
        pthread_rwlock_unlock(&svc->wal_rw);
        return 0;
    }
    err = kw_delivery_round(svc->wal, svc->tracker, svc->sink, kw_rcv_now_ms(), 0,
                            inflight_limit, svc, &st, errstr, sizeof(errstr));
    pthread_rwlock_unlock(&svc->wal_rw);
    atomic_fetch_add(&svc->n.batches, st.batches);
    atomic_fetch_add(&svc->n.records_delivered, st.records_delivered);
    atomic_fetch_add(&svc->n.records_stored, st.records_stored);
    atomic_fetch_add(&svc->n.duplicates_delivered, st.duplicates_delivered);
    atomic_fetch_add(&svc->n.segments_cleaned, st.segments_cleaned);
    if (err == KW_EAGAIN) {
        KW_LOG_E(BATCH_MOD, "%s; delivering it again at the next interval", errstr);
        return 0;
    }
    if (err != KW_OK) {
        kw_rcv_fatal(svc, "%s", errstr);
        return -1;
    }
    return 0;
}

static void log_summary(kw_receiver_t *svc)
{
    kw_receiver_stats_t s;

    kw_receiver_stats(svc, &s);
    KW_LOG_I(BATCH_MOD, "received %" PRIu64 " records, %" PRIu64 " blocks durable, %"
             PRIu64 " committed, %" PRIu64 " batches, %" PRIu64 " stored, %" PRIu64
             " duplicate deliveries, %" PRIu64 " pauses, %" PRIu64
             " source-loss events", s.records_received, s.blocks_durable,
             s.blocks_committed, s.batches, s.records_stored, s.duplicates_delivered,
             s.pauses, s.source_loss_events);
}

void *kw_rcv_batcher_main(void *arg)
{
    kw_receiver_t *svc = arg;
    int64_t interval = svc->rc->batch_interval_ms;
    int64_t next = kw_rcv_now_ms() + interval, last_summary = kw_rcv_now_ms();

    pthread_setname_np(pthread_self(), "batcher");
    for (;;) {
        int stop;

        pthread_mutex_lock(&svc->batch_mu);
        while (!svc->stop_batcher && !kw_rcv_is_fatal(svc) && kw_rcv_now_ms() < next) {
            struct timespec ts;
            int64_t wait = next - kw_rcv_now_ms();

            if (wait > 100)
                wait = 100;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += wait / 1000;
            ts.tv_nsec += (wait % 1000) * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&svc->batch_cv, &svc->batch_mu, &ts);
        }
        stop = svc->stop_batcher;
        pthread_mutex_unlock(&svc->batch_mu);
        if (kw_rcv_is_fatal(svc))
            break;
        /* at stop: the last batch (the pipeline has drained by then) */
        if (run_round(svc) != 0 || stop)
            break;
        next += interval;
        if (next < kw_rcv_now_ms())
            next = kw_rcv_now_ms() + interval;
        if (kw_rcv_now_ms() - last_summary >= 10000) {
            last_summary = kw_rcv_now_ms();
            log_summary(svc);
        }
    }
    log_summary(svc);
    KW_LOG_D(BATCH_MOD, "stopped");
    return NULL;
}
