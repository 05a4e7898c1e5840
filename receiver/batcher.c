/*
 * batcher.c -- the batch scheduler, thread "batcher".
 *
 * Every batch.interval.ms (and once more at shutdown, after the pipeline has
 * drained):
 *
 *   1. first deliver again any batch still OPEN in the tracker (allocated,
 *      never acknowledged: a sink failure, or a previous run that died), under
 *      its own id so an idempotent sink recognises it (invariant 3);
 *   2. kw_tracker_allocate_batch: the durable blocks not yet in a batch, in
 *      LSN order (a block may be allocated before ZooKeeper has its offsets);
 *   3. read each block back from the WAL, decode it, collect its records and
 *      hand them to the sink as ONE batch (kw_sink_write_batch);
 *   4. once the sink has committed: kw_tracker_mark_batch_processed, then
 *      kw_wal_cleanup below kw_tracker_clean_below() and kw_tracker_prune --
 *      the WAL is never cleaned of a block the sink has not acknowledged
 *      (invariant 1).
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

#include "kw_log.h"
#include "receiver_int.h"

#define BATCH_MOD "batcher"

/* The blocks and records of one batch being delivered. */
typedef struct batch_buf {
    kw_block_t  **blocks;
    size_t        nblocks;
    kw_record_t  *recs;
    size_t        nrecs, cap;
    kw_record_header_t **hdrs;   /* copies of iterator-owned header arrays */
    size_t        nhdrs;
} batch_buf_t;

static void batch_buf_free(batch_buf_t *bb)
{
    for (size_t i = 0; i < bb->nblocks; i++)
        kw_block_destroy(bb->blocks[i]);
    for (size_t i = 0; i < bb->nhdrs; i++)
        free(bb->hdrs[i]);
    free(bb->blocks);
    free(bb->recs);
    free(bb->hdrs);
    memset(bb, 0, sizeof(*bb));
}

static int push_rec(batch_buf_t *bb, const kw_record_t *rec)
{
    kw_record_t *r;

    if (bb->nrecs == bb->cap) {
        size_t ncap = bb->cap ? bb->cap * 2 : 1024;
        kw_record_t *nr = realloc(bb->recs, ncap * sizeof(*nr));

        if (nr == NULL)
            return -1;
        bb->recs = nr;
        bb->cap = ncap;
    }
    r = &bb->recs[bb->nrecs];
    *r = *rec;
    if (rec->header_count > 0) {
        /* headers point into the iterator until its next call: copy the array
         * (names and values point into the block, which we keep) */
        kw_record_header_t *h = malloc(rec->header_count * sizeof(*h));
        kw_record_header_t **nh = realloc(bb->hdrs, (bb->nhdrs + 1) * sizeof(*nh));

        if (h == NULL || nh == NULL) {
            free(h);
            if (nh != NULL)
                bb->hdrs = nh;
            return -1;
        }
        bb->hdrs = nh;
        memcpy(h, rec->headers, rec->header_count * sizeof(*h));
        bb->hdrs[bb->nhdrs++] = h;
        r->headers = h;
    }
    bb->nrecs++;
    return 0;
}

/* Read, decode and collect the records of every block. 0 or -1 (fatal). */
static int load_blocks(kw_receiver_t *svc, const kw_tracker_blocks_t *list,
                       batch_buf_t *bb)
{
    char errstr[512];

    bb->blocks = calloc(list->n > 0 ? list->n : 1, sizeof(*bb->blocks));
    if (bb->blocks == NULL)
        goto oom;
    for (size_t i = 0; i < list->n; i++) {
        kw_wal_record_t rec;
        kw_block_iter_t *it = NULL;
        kw_record_t r;
        kw_block_t *b = NULL;
        kw_err_t err;

        memset(&rec, 0, sizeof(rec));
        err = kw_wal_read(svc->wal, &list->v[i].pos, &rec, errstr, sizeof(errstr));
        if (err != KW_OK) {
            kw_rcv_fatal(svc, "reading block lsn %" PRIu64 " from the WAL: %s",
                         list->v[i].pos.lsn, errstr);
            return -1;
        }
        err = kw_block_decode(rec.payload, rec.len, 0, &b, errstr, sizeof(errstr));
        kw_wal_record_clear(&rec);
        if (err != KW_OK) {
            kw_rcv_fatal(svc, "decoding block lsn %" PRIu64 ": %s",
                         list->v[i].pos.lsn, errstr);
            return -1;
        }
        bb->blocks[bb->nblocks++] = b;
        if (kw_block_iter_new(b, &it) != KW_OK)
            goto oom;
        while ((err = kw_block_iter_next(it, &r)) == KW_OK) {
            if (push_rec(bb, &r) != 0) {
                kw_block_iter_destroy(it);
                goto oom;
            }
        }
        kw_block_iter_destroy(it);
        if (err != KW_EOF)
            goto oom;
    }
    return 0;

oom:
    kw_rcv_fatal(svc, "batcher: out of memory");
    return -1;
}

/* Steps 3-4 for one batch. 0 delivered, 1 sink failed (retry later),
 * -1 fatal. */
static int deliver(kw_receiver_t *svc, uint64_t batch_id, const kw_tracker_blocks_t *list)
{
    batch_buf_t bb;
    kw_sink_stats_t st;
    char errstr[512];
    uint64_t below = 0;
    int deleted = 0, rc;
    kw_err_t err;

    memset(&bb, 0, sizeof(bb));
    if (load_blocks(svc, list, &bb) != 0) {
        batch_buf_free(&bb);
        return -1;
    }
    err = kw_sink_write_batch(svc->sink, batch_id, bb.recs, bb.nrecs, &st, errstr,
                              sizeof(errstr));
    batch_buf_free(&bb);
    if (err != KW_OK) {
        KW_LOG_E(BATCH_MOD, "batch %" PRIu64 ": sink: %s; delivering it again later",
                 batch_id, errstr);
        return 1;
    }
    err = kw_tracker_mark_batch_processed(svc->tracker, batch_id, errstr, sizeof(errstr));
    if (err != KW_OK) {
        kw_rcv_fatal(svc, "tracker: %s", errstr);
        return -1;
    }
    atomic_fetch_add(&svc->n.batches, 1);
    atomic_fetch_add(&svc->n.records_delivered, st.delivered);
    atomic_fetch_add(&svc->n.records_stored, st.stored);
    atomic_fetch_add(&svc->n.duplicates_delivered, st.duplicates_delivered);
    if (st.duplicates_delivered > 0)
        KW_LOG_W(BATCH_MOD, "batch %" PRIu64 ": %" PRIu64 " duplicate deliveries "
                 "(already stored; invariant 3)", batch_id, st.duplicates_delivered);
    KW_LOG_D(BATCH_MOD, "batch %" PRIu64 ": %zu blocks, %" PRIu64 " records, %" PRIu64
             " stored", batch_id, list->n, st.delivered, st.stored);

    /* invariant 1: clean only below what the sink has acknowledged */
    rc = 0;
    if (kw_tracker_clean_below(svc->tracker, &below, errstr, sizeof(errstr)) != KW_OK) {
        KW_LOG_W(BATCH_MOD, "tracker: %s", errstr);
    } else if (below > 0) {
        if (kw_wal_cleanup(svc->wal, below, &deleted, errstr, sizeof(errstr)) != KW_OK)
            KW_LOG_W(BATCH_MOD, "WAL cleanup below %" PRIu64 ": %s", below, errstr);
        else if (deleted > 0) {
            atomic_fetch_add(&svc->n.segments_cleaned, (uint64_t)deleted);
            KW_LOG_D(BATCH_MOD, "WAL: %d segments cleaned below lsn %" PRIu64,
                     deleted, below);
        }
        if (kw_tracker_prune(svc->tracker, below, NULL, errstr, sizeof(errstr)) != KW_OK)
            KW_LOG_W(BATCH_MOD, "tracker prune: %s", errstr);
    }
    return rc;
}

/* One scheduling round: open batches again, then a new one. 0, or -1 fatal. */
static int run_round(kw_receiver_t *svc)
{
    kw_tracker_blocks_t list = { NULL, 0 };
    uint64_t *ids = NULL, batch_id = 0;
    char errstr[512];
    size_t nids = 0;
    int rc;

    if (kw_tracker_open_batches(svc->tracker, &ids, &nids, errstr, sizeof(errstr)) != KW_OK) {
        kw_rcv_fatal(svc, "tracker: %s", errstr);
        return -1;
    }
    for (size_t i = 0; i < nids; i++) {
        if (kw_tracker_batch_blocks(svc->tracker, ids[i], &list, errstr,
                                    sizeof(errstr)) != KW_OK) {
            free(ids);
            kw_rcv_fatal(svc, "tracker: %s", errstr);
            return -1;
        }
        KW_LOG_I(BATCH_MOD, "delivering open batch %" PRIu64 " again (%zu blocks)",
                 ids[i], list.n);
        rc = deliver(svc, ids[i], &list);
        kw_tracker_blocks_free(&list);
        if (rc != 0) {
            free(ids);
            return rc < 0 ? -1 : 0;   /* sink down: the new batch waits too */
        }
    }
    free(ids);

    if (kw_tracker_allocate_batch(svc->tracker, kw_rcv_now_ms(), &batch_id, &list,
                                  errstr, sizeof(errstr)) != KW_OK) {
        kw_rcv_fatal(svc, "tracker: %s", errstr);
        return -1;
    }
    if (batch_id == 0) {
        kw_tracker_blocks_free(&list);
        return 0;
    }
    rc = deliver(svc, batch_id, &list);
    kw_tracker_blocks_free(&list);
    return rc < 0 ? -1 : 0;
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
