/*
 * state.c -- the part of the service handle every receiver-mode thread
 * touches: the first fatal error (any thread records it, everyone polls the
 * flag), the counters and their snapshot (kw_receiver_stats), the "first
 * time" marks of the statistics, and --no-wal's batch ids (the batcher's). Kept apart from
 * service.c, which starts the threads, so that the threads' files depend on
 * this one and not on the file that starts them.
 */
#include <stdarg.h>
#include <stdio.h>

#include "kw_log.h"
#include "receiver_int.h"

void kw_rcv_fatal(kw_receiver_t *svc, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&svc->fatal_mu);
    if (!atomic_load(&svc->fatal)) {
        snprintf(svc->fatal_msg, sizeof(svc->fatal_msg), "%s", msg);
        atomic_store(&svc->fatal, 1);
        KW_LOG_E(KW_RCV_MOD, "%s", msg);
    } else {
        KW_LOG_D(KW_RCV_MOD, "after the first fatal error: %s", msg);
    }
    pthread_mutex_unlock(&svc->fatal_mu);
}

int kw_rcv_is_fatal(kw_receiver_t *svc)
{
    return atomic_load(&svc->fatal);
}

void kw_rcv_note_first(_Atomic int64_t *when)
{
    int64_t none = 0;

    if (atomic_load(when) == 0)
        atomic_compare_exchange_strong(when, &none, kw_mono_ms());
}

uint64_t kw_receiver_next_batch_id(uint64_t prev, int64_t now_ms)
{
    uint64_t now = now_ms > 0 ? (uint64_t)now_ms : 1;

    return prev + 1 > now ? prev + 1 : now;
}

void kw_receiver_stats(kw_receiver_t *svc, kw_receiver_stats_t *s)
{
    const kw_rcv_counters_t *n = &svc->n;

    s->records_received = atomic_load(&n->records_received);
    s->blocks_made = atomic_load(&n->blocks_made);
    s->blocks_durable = atomic_load(&n->blocks_durable);
    s->blocks_offsets_stored = atomic_load(&n->blocks_offsets_stored);
    s->blocks_fenced = atomic_load(&n->blocks_fenced);
    s->zk_retries = atomic_load(&n->zk_retries);
    s->pauses = atomic_load(&n->pauses);
    s->batches = atomic_load(&n->batches);
    s->records_delivered = atomic_load(&n->records_delivered);
    s->records_stored = atomic_load(&n->records_stored);
    s->duplicates_delivered = atomic_load(&n->duplicates_delivered);
    s->segments_cleaned = atomic_load(&n->segments_cleaned);
    s->source_loss_events = atomic_load(&n->source_loss_events);
    s->source_loss_records = atomic_load(&n->source_loss_records);
    s->receiver_restarts = atomic_load(&n->receiver_restarts);
    s->quorum_pauses = atomic_load(&n->quorum_pauses);
    s->first_assignment_mono_ms = atomic_load(&n->first_assignment_mono_ms);
    s->first_stored_mono_ms = atomic_load(&n->first_stored_mono_ms);
    s->assigned_stored = atomic_load(&n->assigned_stored);
    s->assigned_reset = atomic_load(&n->assigned_reset);
    s->revoked = atomic_load(&n->revoked);
    s->end_advances = atomic_load(&n->end_advances);
    kw_hist_summarize(svc->latency, &s->latency);
    kw_hist_summarize(&svc->batch_ms, &s->batch_ms);
    s->wal_fsync_us.count = 0;          /* no WAL: nothing measured */
    s->wal_fsync_us.p50 = s->wal_fsync_us.p90 = s->wal_fsync_us.p99 = -1;
    s->wal_fsync_us.max = -1;
    s->wal_replicas_healthy = -1;
    if (!svc->no_wal) {
        pthread_rwlock_rdlock(&svc->wal_rw);
        if (svc->wal != NULL) {
            kw_wal_stats_t ws;

            kw_wal_stats(svc->wal, &ws);
            s->wal_bytes = ws.stored_bytes;
            s->wal_fsyncs = ws.fsyncs;
            s->wal_replicas_healthy = ws.replicas_healthy;
            s->wal_fsync_us = ws.fsync_us;
        }
        pthread_rwlock_unlock(&svc->wal_rw);
    }
    if (svc->zk != NULL) {
        kw_zk_status_t zs;

        kw_zk_status(svc->zk, &zs);
        s->zk_writes = zs.commits;
        s->partitions_owned = kw_zk_owned(svc->zk, NULL, 0);
    }
}
