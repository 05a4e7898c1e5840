/*
 * recovery.c -- start-up reconciliation and replay; see recovery.h for the
 * steps and the guarantees.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "recovery.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "blockgen.h"
#include "tracker.h"
#include "kw_fault.h"
#include "kw_instance.h"
#include "kw_log.h"
#include "kw_time.h"
#include "sink.h"
#include "tracker.h"
#include "zk.h"

#define MOD "recovery"

/* How long a sink that fails during replay is retried before recovery gives
 * up (the service would only fail the same way). */
#define SINK_RETRY_MS 60000

/* Blocks per replayed batch: bounds memory (a block is up to
 * block.max.bytes) on a long backlog. */
#define REPLAY_BATCH_BLOCKS 8

void kw_recovery_options_init(kw_recovery_options_t *o)
{
    memset(o, 0, sizeof(*o));
}

/* ---- step 2: the tracker ---- */

/* 1 when the file at path starts like an SQLite database (or is empty). */
static int looks_like_sqlite(const char *path)
{
    static const char magic[16] = "SQLite format 3";
    char head[16];
    FILE *f = fopen(path, "rb");
    size_t n;

    if (f == NULL)
        return 1;           /* let SQLite say what is wrong */
    n = fread(head, 1, sizeof(head), f);
    fclose(f);
    return n == 0 || (n == sizeof(head) && memcmp(head, magic, sizeof(magic)) == 0);
}

/* Open the tracker at path; one that exists but cannot be opened is moved
 * aside (with its -wal and -shm files) and a new one created. A file that is
 * not an SQLite database at all is moved aside before SQLite touches it
 * (SQLite would fold a leftover -wal file into it, or even open it). */
static kw_err_t open_tracker(const char *path, kw_tracker_t **t, kw_recovery_report_t *r,
                             char *errstr, size_t errlen)
{
    char why[1024];
    kw_err_t err;

    r->tracker_created = access(path, F_OK) != 0;
    if (!r->tracker_created && !looks_like_sqlite(path)) {
        err = KW_ECORRUPT;
        snprintf(why, sizeof(why), "tracker %.900s: not an SQLite database", path);
    } else {
        err = kw_tracker_open(path, t, why, sizeof(why));
        if (err == KW_OK)
            return KW_OK;
    }
    if (r->tracker_created || (err != KW_ECORRUPT && err != KW_EIO))
        return kw_seterr(errstr, errlen, err, "%s", why);
    snprintf(r->tracker_moved_to, sizeof(r->tracker_moved_to), "%s.unreadable-%" PRId64,
             path, kw_wall_ms());
    KW_LOG_W(MOD, "the tracker database cannot be opened (%s); moving it to %s and "
             "rebuilding it from the WAL", why, r->tracker_moved_to);
    if (rename(path, r->tracker_moved_to) != 0)
        return kw_seterr(errstr, errlen, KW_EIO, "moving the unreadable tracker %s "
                         "aside: %s", path, strerror(errno));
    for (int i = 0; i < 2; i++) {
        char from[4200], to[4300];
        const char *sfx = i == 0 ? "-wal" : "-shm";

        snprintf(from, sizeof(from), "%s%s", path, sfx);
        snprintf(to, sizeof(to), "%s%s", r->tracker_moved_to, sfx);
        if (rename(from, to) != 0 && errno != ENOENT)
            return kw_seterr(errstr, errlen, KW_EIO, "moving %s aside: %s", from,
                             strerror(errno));
    }
    r->tracker_rebuilt = 1;
    err = kw_tracker_open(path, t, why, sizeof(why));
    if (err != KW_OK)
        return kw_seterr(errstr, errlen, err, "%s", why);
    return KW_OK;
}

/* Register one WAL record (a block) in the tracker as DURABLE. */
static kw_err_t register_block(kw_tracker_t *t, const kw_wal_record_t *rec,
                               char *errstr, size_t errlen)
{
    kw_block_t *b = NULL;
    char why[512];
    kw_err_t err;

    err = kw_block_decode(rec->payload, rec->len, 0, &b, why, sizeof(why));
    if (err != KW_OK)
        return kw_seterr(errstr, errlen, err, "WAL record lsn %" PRIu64 " is not a "
                         "block kwal can read: %s", rec->pos.lsn, why);
    err = kw_tracker_insert_from_block(t, b, &rec->pos, rec->len, why, sizeof(why));
    kw_block_destroy(b);
    if (err != KW_OK)
        return kw_seterr(errstr, errlen, err, "tracker: %s", why);
    return KW_OK;
}

/* Every WAL block above the tracker's highest LSN goes into the tracker. */
static kw_err_t reconcile_tracker(kw_wal_t *wal, kw_tracker_t *t, int fresh,
                                  kw_recovery_report_t *r, char *errstr, size_t errlen)
{
    kw_tracker_counts_t c;
    kw_wal_iter_t *it = NULL;
    kw_wal_record_t rec;
    char why[512];
    kw_err_t err;

    err = kw_tracker_counts(t, &c, why, sizeof(why));
    if (err != KW_OK)
        return kw_seterr(errstr, errlen, err, "tracker: %s", why);
    if (fresh && r->wal.records > 0) {
        /* batch ids above any the sink may hold from the lost tracker */
        err = kw_tracker_batch_ids_from(t, (uint64_t)kw_wall_ms(), why, sizeof(why));
        if (err != KW_OK)
            return kw_seterr(errstr, errlen, err, "tracker: %s", why);
    }
    err = kw_wal_iter_new(wal, c.max_lsn + 1, &it, why, sizeof(why));
    if (err != KW_OK)
        return kw_seterr(errstr, errlen, err, "WAL: %s", why);
    memset(&rec, 0, sizeof(rec));
    while ((err = kw_wal_iter_next(it, &rec, why, sizeof(why))) == KW_OK) {
        if (rec.pos.lsn > c.max_lsn && (rec.flags & KW_WAL_LOST)) {
            KW_LOG_E(MOD, "WAL block lsn %" PRIu64 " was given up before the tracker "
                     "registered it: the Kafka records it held are lost and cannot "
                     "be named", rec.pos.lsn);
            r->blocks_lost_untracked++;
        } else if (rec.pos.lsn > c.max_lsn) {
            err = register_block(t, &rec, errstr, errlen);
            if (err != KW_OK)
                break;
            r->blocks_registered++;
        }
        kw_wal_record_clear(&rec);
    }
    kw_wal_record_clear(&rec);
    kw_wal_iter_destroy(it);
    if (err == KW_EOF)
        return KW_OK;
    if (err != KW_OK && errstr != NULL && errstr[0] == '\0')
        kw_seterr(errstr, errlen, err, "WAL: %s", why);
    return err;
}

/* ---- step 3: replay ---- */

static kw_err_t replay(kw_wal_t *wal, kw_tracker_t *t, kw_sink_t *sink,
                       const kw_recovery_options_t *o, kw_recovery_report_t *r,
                       char *errstr, size_t errlen)
{
    kw_recovery_progress_t p;
    kw_tracker_counts_t c;
    int64_t first_failure = 0, backoff = 250;
    char why[512];
    kw_err_t err;

    err = kw_tracker_counts(t, &c, why, sizeof(why));
    if (err != KW_OK)
        return kw_seterr(errstr, errlen, err, "tracker: %s", why);
    memset(&p, 0, sizeof(p));
    p.blocks_total = c.blocks[KW_BLOCK_DURABLE] + c.blocks[KW_BLOCK_OFFSETS_STORED] +
                     c.blocks[KW_BLOCK_ALLOCATED];
    if (p.blocks_total > 0)
        KW_LOG_I(MOD, "replaying %" PRIu64 " unacknowledged blocks (%" PRIu64
                 " records) to the sink", p.blocks_total,
                 c.records[KW_BLOCK_DURABLE] + c.records[KW_BLOCK_OFFSETS_STORED] +
                 c.records[KW_BLOCK_ALLOCATED]);
    while (p.blocks_done < p.blocks_total) {
        kw_delivery_stats_t st;

        memset(&st, 0, sizeof(st));
        err = kw_delivery_round(wal, t, sink, kw_wall_ms(), REPLAY_BATCH_BLOCKS, NULL, NULL,
                                &st, errstr, errlen);
        r->batches_replayed += st.batches;
        r->blocks_replayed += st.blocks;
        r->records_replayed += st.records_delivered;
        r->records_stored += st.records_stored;
        r->duplicates_delivered += st.duplicates_delivered;
        r->segments_cleaned += st.segments_cleaned;
        r->blocks_lost += st.blocks_lost;
        r->records_lost += st.records_lost;
        if (o->latency != NULL)
            kw_hist_merge(o->latency, &st.latency);
        p.blocks_done += st.blocks;
        p.records_done += st.records_delivered;
        if (st.blocks > 0) {
            kw_crash(KW_CRASH_RECOVERY_REPLAY);
            if (o->progress != NULL)
                o->progress(&p, o->opaque);
        }
        if (err == KW_EAGAIN) {
            if (first_failure == 0)
                first_failure = kw_mono_ms();
            if (kw_mono_ms() - first_failure >= SINK_RETRY_MS)
                return KW_EIO;      /* errstr: the sink's reason */
            KW_LOG_W(MOD, "%s; retrying in %" PRId64 " ms", errstr, backoff);
            kw_sleep_ms(backoff);
            backoff = backoff < 4000 ? backoff * 2 : 4000;
            continue;
        }
        if (err != KW_OK)
            return err;
        first_failure = 0;
        if (st.blocks == 0)
            break;          /* nothing left the tracker would allocate */
    }
    return KW_OK;
}

/* ---- step 4: ZooKeeper ---- */

static kw_err_t repair_zookeeper(kw_tracker_t *t, const kw_conf_t *conf, kw_zk_t *shared,
                                 kw_recovery_report_t *r, char *errstr, size_t errlen)
{
    kw_tracker_partition_t *parts = NULL;
    kw_zk_options_t zo;
    kw_zk_t *zk = NULL;
    size_t n = 0;
    char why[512];
    /* an owner node of a crashed process lives until its session expires */
    int own_wait = (int)conf->zk.session_timeout_ms + 5000;
    kw_err_t err;

    err = kw_tracker_partition_max(t, &parts, &n, why, sizeof(why));
    if (err != KW_OK)
        return kw_seterr(errstr, errlen, err, "tracker: %s", why);
    r->partitions_checked = n;
    if (n == 0)
        return KW_OK;
    if (shared != NULL) {
        zk = shared;
        err = KW_OK;
    } else {
        kw_zk_options_from_conf(&zo, conf);
        err = kw_zk_new(&zo, &zk, why, sizeof(why));
        if (err == KW_OK)
            err = kw_zk_register(zk, why, sizeof(why));
    }
    if (err != KW_OK) {
        kw_seterr(errstr, errlen, err, "ZooKeeper: %s", why);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        const kw_tracker_partition_t *p = &parts[i];
        kw_zk_offset_t off = { p->topic, p->partition, p->until_offset };
        int64_t stored = -1;

        err = kw_zk_get_offset(zk, p->topic, p->partition, &stored, why, sizeof(why));
        if (err != KW_OK && err != KW_ENOTFOUND) {
            kw_seterr(errstr, errlen, err, "ZooKeeper: offset of %s/%d: %s", p->topic,
                      (int)p->partition, why);
            goto out;
        }
        if (err == KW_OK && stored >= p->until_offset)
            continue;
        err = kw_zk_own(zk, p->topic, p->partition, own_wait, why, sizeof(why));
        if (err == KW_EBUSY) {
            r->partitions_held++;
            KW_LOG_W(MOD, "%s/%d: ZooKeeper has offset %" PRId64 ", the WAL holds up to "
                     "%" PRId64 ", but another instance owns it (%s): left alone; it "
                     "will consume that range again", p->topic, (int)p->partition,
                     stored, p->until_offset, why);
            continue;
        }
        if (err != KW_OK) {
            kw_seterr(errstr, errlen, err, "ZooKeeper: taking %s/%d: %s", p->topic,
                      (int)p->partition, why);
            goto out;
        }
        err = kw_zk_commit(zk, &off, 1, 0, why, sizeof(why));
        {
            char dwhy[512];

            if (kw_zk_disown(zk, p->topic, p->partition, dwhy, sizeof(dwhy)) != KW_OK)
                KW_LOG_W(MOD, "%s/%d: %s", p->topic, (int)p->partition, dwhy);
        }
        if (err != KW_OK) {
            kw_seterr(errstr, errlen, err, "ZooKeeper: moving %s/%d to %" PRId64 ": %s",
                      p->topic, (int)p->partition, p->until_offset, why);
            goto out;
        }
        r->partitions_moved++;
        KW_LOG_I(MOD, "%s/%d: ZooKeeper offset moved from %" PRId64 " to %" PRId64
                 " (the WAL holds those records)", p->topic, (int)p->partition, stored,
                 p->until_offset);
    }
    err = KW_OK;
out:
    if (zk != shared)
        kw_zk_destroy(zk);
    kw_tracker_partitions_free(parts, n);
    return err;
}

/* ---- the whole ---- */

kw_err_t kw_recovery_run(const kw_recovery_options_t *o, kw_recovery_report_t *report,
                         char *errstr, size_t errlen)
{
    kw_recovery_report_t local, *r = report != NULL ? report : &local;
    const kw_conf_t *conf = o->conf;
    int64_t start = kw_mono_ms(), phase = start;
    kw_tracker_t *t = NULL;
    kw_sink_t *sink = NULL;
    kw_wal_t *wal = NULL;
    char path[4096], why[1024];
    kw_err_t err;

    memset(r, 0, sizeof(*r));
    if (errstr != NULL && errlen > 0)
        errstr[0] = '\0';
    if (conf->receiver.group_id == NULL || conf->receiver.group_id[0] == '\0')
        return kw_seterr(errstr, errlen, KW_ECONFIG, "group.id: required by recovery");

    /* an existing tracker first: it says which LSNs were acknowledged, so
     * that the WAL never cuts one of them as a torn tail (a new one is made
     * after the WAL, which creates the directories) */
    kw_tracker_default_path(conf->receiver.tracker_path, o->wal_opts->dirs[0], path, sizeof(path));
    if (access(path, F_OK) == 0) {
        err = open_tracker(path, &t, r, errstr, errlen);
        if (err != KW_OK)
            goto out;
    }
    /* 1 */
    {
        kw_wal_options_t wo = *o->wal_opts;
        kw_tracker_counts_t c;

        memset(&c, 0, sizeof(c));
        if (t != NULL && (err = kw_tracker_counts(t, &c, why, sizeof(why))) != KW_OK) {
            kw_seterr(errstr, errlen, err, "tracker: %s", why);
            goto out;
        }
        wo.acked_lsn = c.max_lsn;
        wo.skip_lost = o->skip_corrupt;
        if (t != NULL && (err = kw_tracker_cleanable_below(t, &wo.needed_lsn, why,
                                                       sizeof(why))) != KW_OK) {
            kw_seterr(errstr, errlen, err, "tracker: %s", why);
            goto out;
        }
        err = kw_wal_open(&wo, &wal, &r->wal, why, sizeof(why));
    }
    r->wal_open_ms = kw_mono_ms() - start;
    phase = kw_mono_ms();
    if (err == KW_ECORRUPT && r->wal.corrupt_lsn != 0) {
        /* say which Kafka records that block held, if the tracker knows */
        char ranges[1024] = "records the tracker does not know";

        if (t != NULL)
            kw_delivery_describe_block(t, r->wal.corrupt_lsn, ranges, sizeof(ranges));
        kw_seterr(errstr, errlen, err, "WAL block lsn %" PRIu64 " is corrupt on every "
                  "replica; it holds %s. %s. %s", r->wal.corrupt_lsn, ranges,
                  o->skip_corrupt ? "It cannot be given up"
                  : "Nothing was changed; --skip-corrupt gives such blocks up (their "
                    "records are then lost, and logged)", why);
        goto out;
    }
    if (err != KW_OK) {
        kw_seterr(errstr, errlen, err, "WAL: %s", why);
        goto out;
    }
    for (int i = 0; i < r->wal.nlost; i++)
        KW_LOG_W(MOD, "WAL LSN %" PRIu64 "..%" PRIu64 " given up (--skip-corrupt); replay "
                 "names the Kafka ranges of each block still to deliver",
                 r->wal.lost[i].from, r->wal.lost[i].to);
    /* 2 */
    if (t == NULL && (err = open_tracker(path, &t, r, errstr, errlen)) != KW_OK)
        goto out;
    if ((r->tracker_created || r->tracker_rebuilt) && r->wal.records > 0)
        KW_LOG_W(MOD, "tracker %s %s: rebuilding it from the WAL (%" PRIu64 " records); "
                 "blocks the sink already has will be delivered again and counted "
                 "as duplicates", path, r->tracker_rebuilt ? "was unreadable" : "is missing",
                 r->wal.records);
    err = reconcile_tracker(wal, t, r->tracker_created || r->tracker_rebuilt, r, errstr,
                            errlen);
    if (err != KW_OK)
        goto out;
    r->tracker_ms = kw_mono_ms() - phase;
    phase = kw_mono_ms();
    /* 3 */
    {   /* the kafka sink's writer: this instance, as the receivers name it */
        kw_sink_options_t so;
        char name[256];

        kw_sink_options_from_conf(&so, conf, o->zk != NULL ? kw_zk_instance(o->zk) :
                                  kw_instance_name(conf->receiver.instance_id,
                                                   o->wal_opts->dirs[0], "kwal", name,
                                                   sizeof(name)), 0);
        err = kw_sink_open_opts(conf->receiver.sink, &so, &sink, why, sizeof(why));
    }
    if (err != KW_OK) {
        kw_seterr(errstr, errlen, err, "sink: %s", why);
        goto out;
    }
    err = replay(wal, t, sink, o, r, errstr, errlen);
    if (err != KW_OK)
        goto out;
    r->replay_ms = kw_mono_ms() - phase;
    phase = kw_mono_ms();
    /* 4 */
    if (!o->classic) {
        err = repair_zookeeper(t, conf, o->zk, r, errstr, errlen);
        if (err != KW_OK)
            goto out;
    }
    r->zk_ms = kw_mono_ms() - phase;
    r->elapsed_ms = kw_mono_ms() - start;
    KW_LOG_I(MOD, "done in %" PRId64 " ms%s: WAL %" PRIu64 " records (%" PRIu64
             " torn tails cut); %" PRIu64 " blocks registered in the tracker; %" PRIu64
             " blocks (%" PRIu64 " records) replayed in %" PRIu64 " batches, %" PRIu64
             " stored, %" PRIu64 " duplicate deliveries; %" PRIu64 " of %" PRIu64
             " ZooKeeper offsets moved forward%s; %" PRIu64 " blocks (%" PRIu64
             " records) lost, %" PRIu64 " more not tracked", r->elapsed_ms,
             o->classic ? " (classic: no ZooKeeper repair)" : "", r->wal.records,
             r->wal.torn_tails, r->blocks_registered, r->blocks_replayed,
             r->records_replayed, r->batches_replayed, r->records_stored,
             r->duplicates_delivered, r->partitions_moved, r->partitions_checked,
             r->partitions_held > 0 ? " (some held by other instances)" : "",
             r->blocks_lost, r->records_lost, r->blocks_lost_untracked);

out:
    if (o->keep != NULL) {
        memset(o->keep, 0, sizeof(*o->keep));
        if (err == KW_OK) {
            o->keep->wal = wal;
            o->keep->tracker = t;
            o->keep->sink = sink;
            return err;
        }
    }
    kw_sink_close(sink);
    kw_tracker_close(t);
    kw_wal_close(wal);
    if (err != KW_OK)
        r->elapsed_ms = kw_mono_ms() - start;
    return err;
}

void kw_recovery_kept_close(kw_recovery_kept_t *k)
{
    if (k == NULL)
        return;
    kw_sink_close(k->sink);
    kw_tracker_close(k->tracker);
    kw_wal_close(k->wal);
    memset(k, 0, sizeof(*k));
}
