/*
 * delivery.c -- one delivery round: open batches again, a new batch, WAL
 * cleanup below what the sink acknowledged. See delivery.h.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "tracker.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kw_fault.h"
#include "kw_log.h"
#include "kw_time.h"

#define MOD "delivery"

/* The blocks of one batch being delivered, and their records. */
typedef struct batch_buf {
    kw_block_t    **blocks;
    size_t          nblocks;
    kw_flat_batch_t fb;
} batch_buf_t;

static void batch_buf_free(batch_buf_t *bb)
{
    kw_flat_batch_free(&bb->fb);
    for (size_t i = 0; i < bb->nblocks; i++)
        kw_block_destroy(bb->blocks[i]);
    free(bb->blocks);
    memset(bb, 0, sizeof(*bb));
}

void kw_delivery_describe_block(kw_tracker_t *t, uint64_t lsn, char *buf, size_t cap)
{
    kw_tracker_range_t *r = NULL;
    char errstr[256];
    size_t n = 0, used = 0;

    buf[0] = '\0';
    if (kw_tracker_block_ranges(t, lsn, &r, &n, errstr, sizeof(errstr)) != KW_OK) {
        snprintf(buf, cap, "(ranges unknown: %s)", errstr);
        return;
    }
    for (size_t i = 0; i < n && used < cap; i++) {
        int w = snprintf(buf + used, cap - used, "%s%s/%d offsets %" PRId64 "..%" PRId64,
                         i > 0 ? ", " : "", r[i].topic, (int)r[i].partition,
                         r[i].from_offset, r[i].until_offset - 1);
        if (w < 0)
            break;
        used += (size_t)w;
    }
    if (n == 0)
        snprintf(buf, cap, "(no ranges tracked)");
    kw_tracker_ranges_free(r, n);
}

/* Read, decode and collect the records of every block. */
static kw_err_t load_blocks(kw_wal_t *wal, kw_tracker_t *t, const kw_tracker_blocks_t *list,
                            batch_buf_t *bb, kw_delivery_stats_t *st,
                            char *errstr, size_t errlen)
{
    char why[512], ranges[1024];

    bb->blocks = calloc(list->n > 0 ? list->n : 1, sizeof(*bb->blocks));
    if (bb->blocks == NULL)
        goto oom;
    for (size_t i = 0; i < list->n; i++) {
        uint64_t lsn = list->v[i].pos.lsn;
        kw_wal_record_t rec;
        kw_block_t *b = NULL;
        kw_err_t err;

        memset(&rec, 0, sizeof(rec));
        err = kw_wal_read(wal, &list->v[i].pos, &rec, why, sizeof(why));
        if (err == KW_ECORRUPT) {
            /* a block given up inside a longer damaged span has a LOST
             * placeholder, but no longer at its old position: look it up */
            char why2[512];

            if (kw_wal_read_lsn(wal, lsn, &rec, why2, sizeof(why2)) == KW_OK &&
                (rec.flags & KW_WAL_LOST))
                err = KW_OK;
            else
                kw_wal_record_clear(&rec);
        }
        if (err == KW_OK && (rec.flags & KW_WAL_LOST)) {
            /* given up at WAL open on the user's explicit request: it goes
             * through the batch empty and ends PROCESSED, and it is said once */
            kw_delivery_describe_block(t, lsn, ranges, sizeof(ranges));
            KW_LOG_E(MOD, "block lsn %" PRIu64 " was given up (corrupt on every WAL "
                     "replica): %s lost (%" PRIu32 " records)", lsn, ranges,
                     list->v[i].records);
            st->blocks_lost++;
            st->records_lost += list->v[i].records;
            kw_wal_record_clear(&rec);
            continue;
        }
        if (err == KW_OK) {
            err = kw_block_decode(rec.payload, rec.len, 0, &b, why, sizeof(why));
            kw_wal_record_clear(&rec);
        }
        if (err != KW_OK) {
            kw_delivery_describe_block(t, lsn, ranges, sizeof(ranges));
            return kw_seterr(errstr, errlen, err == KW_ENOMEM ? KW_ENOMEM : KW_ECORRUPT,
                             "block lsn %" PRIu64 " cannot be read from the WAL (%s); "
                             "it holds %s", lsn, why, ranges);
        }
        bb->blocks[bb->nblocks++] = b;
        if (kw_flat_batch_add(&bb->fb, b) != KW_OK)
            goto oom;
    }
    return KW_OK;

oom:
    return kw_seterr(errstr, errlen, KW_ENOMEM, "delivery: out of memory");
}

/* Steps 3-4 for one batch. */
static kw_err_t deliver(kw_wal_t *wal, kw_tracker_t *t, kw_sink_t *sink, uint64_t batch_id,
                        const kw_tracker_blocks_t *list, kw_delivery_limit_fn clean_limit,
                        void *opaque, kw_delivery_stats_t *st, char *errstr, size_t errlen)
{
    batch_buf_t bb;
    kw_sink_stats_t ss;
    char why[512];
    uint64_t below = 0, limit;
    int64_t acked_ms;
    int deleted = 0;
    kw_err_t err;

    memset(&bb, 0, sizeof(bb));
    err = load_blocks(wal, t, list, &bb, st, errstr, errlen);
    if (err != KW_OK) {
        batch_buf_free(&bb);
        return err;
    }
    err = kw_sink_write_batch(sink, batch_id, bb.fb.recs, bb.fb.n, &ss, why, sizeof(why));
    acked_ms = kw_wall_ms();
    if (err != KW_OK) {
        batch_buf_free(&bb);
        return kw_seterr(errstr, errlen, KW_EAGAIN, "batch %" PRIu64 ": sink: %s",
                         batch_id, why);
    }
    kw_crash(KW_CRASH_SINK_COMMITTED);
    err = kw_tracker_mark_batch_processed(t, batch_id, why, sizeof(why));
    if (err != KW_OK) {
        batch_buf_free(&bb);
        return kw_seterr(errstr, errlen, err, "tracker: %s", why);
    }
    /* counted with the batch below: each record's end-to-end latency at
     * the sink's acknowledgement */
    kw_sink_latency_add(&st->latency, bb.fb.recs, bb.fb.n, acked_ms);
    batch_buf_free(&bb);
    st->batches++;
    st->blocks += list->n;
    st->records_delivered += ss.delivered;
    st->records_stored += ss.stored;
    st->duplicates_delivered += ss.duplicates_delivered;
    if (ss.duplicates_delivered > 0)
        KW_LOG_W(MOD, "batch %" PRIu64 ": %" PRIu64 " duplicate deliveries "
                 "(already stored; invariant 3)", batch_id, ss.duplicates_delivered);
    KW_LOG_D(MOD, "batch %" PRIu64 ": %zu blocks, %" PRIu64 " records, %" PRIu64
             " stored", batch_id, list->n, ss.delivered, ss.stored);

    /* invariant 1: clean only below what the sink has acknowledged */
    if (kw_tracker_cleanable_below(t, &below, why, sizeof(why)) != KW_OK) {
        KW_LOG_W(MOD, "tracker: %s", why);
        below = 0;
    }
    if (below > 0 && clean_limit != NULL) {
        /* asked only now, after the tracker: see delivery.h */
        limit = clean_limit(opaque);
        if (limit < below)
            below = limit;
    }
    if (below > 0) {
        if (kw_wal_cleanup(wal, below, &deleted, why, sizeof(why)) != KW_OK)
            KW_LOG_W(MOD, "WAL cleanup below %" PRIu64 ": %s", below, why);
        else if (deleted > 0) {
            st->segments_cleaned += (uint64_t)deleted;
            KW_LOG_D(MOD, "WAL: %d segments cleaned below lsn %" PRIu64, deleted, below);
        }
        if (kw_tracker_prune(t, below, NULL, why, sizeof(why)) != KW_OK)
            KW_LOG_W(MOD, "tracker prune: %s", why);
    }
    return KW_OK;
}

kw_err_t kw_delivery_round(kw_wal_t *wal, kw_tracker_t *t, kw_sink_t *sink,
                           int64_t now_ms, size_t max_blocks,
                           kw_delivery_limit_fn clean_limit, void *opaque,
                           kw_delivery_stats_t *st, char *errstr, size_t errlen)
{
    kw_tracker_blocks_t list = { NULL, 0 };
    uint64_t *ids = NULL, batch_id = 0;
    char why[512];
    size_t nids = 0;
    kw_err_t err;

    err = kw_tracker_open_batches(t, &ids, &nids, why, sizeof(why));
    if (err != KW_OK)
        return kw_seterr(errstr, errlen, err, "tracker: %s", why);
    for (size_t i = 0; i < nids; i++) {
        err = kw_tracker_batch_blocks(t, ids[i], &list, why, sizeof(why));
        if (err != KW_OK) {
            free(ids);
            return kw_seterr(errstr, errlen, err, "tracker: %s", why);
        }
        KW_LOG_I(MOD, "delivering open batch %" PRIu64 " again (%zu blocks)", ids[i],
                 list.n);
        err = deliver(wal, t, sink, ids[i], &list, clean_limit, opaque, st, errstr,
                      errlen);
        kw_tracker_blocks_free(&list);
        if (err != KW_OK) {
            free(ids);
            return err;     /* sink down: the new batch waits too */
        }
    }
    free(ids);

    err = kw_tracker_allocate_batch_max(t, now_ms, max_blocks, &batch_id, &list, why,
                                        sizeof(why));
    if (err != KW_OK)
        return kw_seterr(errstr, errlen, err, "tracker: %s", why);
    if (batch_id != 0) {
        kw_crash(KW_CRASH_BATCH_ALLOCATED);
        err = deliver(wal, t, sink, batch_id, &list, clean_limit, opaque, st, errstr,
                      errlen);
    }
    kw_tracker_blocks_free(&list);
    return err;
}
