/*
 * pipeline.c -- the durability pipeline, threads "pipeline-N".
 *
 * One thread per receiver takes that receiver's blocks off its queue in
 * order and, for each:
 *
 *   1. kw_wal_append (LZ4 when wal.compress): returns once the block is
 *      fsynced on the write quorum;
 *   2. kw_tracker_insert_block: its WAL position, receiver, counts, ranges
 *      (state DURABLE);
 *   3. kw_zk_commit: one multi setting every range's partition to its
 *      until offset, guarded by our owner nodes (invariant 4); retried with
 *      backoff while ZooKeeper is unreachable -- the pipeline then holds the
 *      block, the queue fills and the receivers pause (invariant 5): nothing
 *      acknowledged early, nothing lost;
 *   4. kw_tracker_mark_offsets_stored, then tell the block's receiver that its
 *      block seq is done (a receiver giving partitions up waits for it).
 *
 * ZooKeeper is never written before the WAL append returned (invariant 1):
 * steps run strictly in this order for each block, and one receiver's blocks
 * one by one (a receiver owns its partitions alone, and gives one up only
 * after its pipeline committed its last block, so each partition's offsets
 * move in order). The pipelines of different receivers append at the same
 * time and share the WAL's writes and fsyncs (group commit). A block between
 * its append and its tracker insert is not yet known to the tracker, and one
 * between its insert and kw_tracker_mark_offsets_stored must not be pruned from
 * it (it may be delivered before ZooKeeper has its offsets): for that whole
 * time its thread publishes inflight_floor (the WAL's next LSN, read before
 * the append) and the batcher cleans the WAL and prunes the tracker below
 * nothing above it.
 *
 * A fenced commit (the partition is no longer ours) writes nothing; the block
 * stays durable and is still delivered; the new owner reads from the offset
 * that is stored, so the sink may see those records again and counts them as
 * duplicates (invariant 3). Tracker failures are fatal, and so are WAL
 * failures, except one: the WAL below its write quorum (KW_EQUORUM, too many
 * replicas failed). Then the pipeline holds the block, nothing is
 * acknowledged and ZooKeeper does not advance; the queue fills and the
 * receivers pause (invariant 5). The pipeline releases the WAL (closes it,
 * so its locks go and `kwal wal repair` can rebuild the failed replicas)
 * and tries to open it again every few seconds; once it opens with the
 * quorum healthy, the held block is appended and everything resumes. A stop
 * requested meanwhile fails the service: the held blocks were never
 * acknowledged, Kafka still has them.
 *
 * --no-wal (receiver.h): no WAL and no tracker. Per block: wait while the
 * pending list is at its bound (KW_RCV_PENDING_MAX_BYTES, receiver_int.h;
 * the batcher is asked for a batch at once), then
 *
 *   1. kw_zk_commit at once, as step 3 above (owner-guarded, retried);
 *   2. the block goes to the service's pending list, where the batcher
 *      takes it at the next batch.interval.ms;
 *   3. tell the block's receiver that its block seq is done.
 *
 * Invariant 1 does not hold, on purpose: from step 1 until its batch is in
 * the sink a crash loses the block (the baseline DESIGN.md compares against).
 * Crash points block.cut and pipeline.committed are passed as above.
 *
 * The thread exits when the queue is closed and empty (the service closes it
 * after every receiver has put its last block) or on a fatal error.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kw_fault.h"
#include "kw_log.h"
#include "receiver_int.h"

#define PIPE_MOD "pipeline"

/* Step 3: retried until it succeeds, is fenced, or the service fails. what
 * names the block in log lines ("lsn 12"). 0 stored, 1 fenced, -1 fatal. */
static int commit_offsets(kw_receiver_t *svc, const kw_block_t *b, const char *what)
{
    size_t n = kw_block_range_count(b);
    kw_zk_offset_t offs[n > 0 ? n : 1];
    int64_t backoff = 50, first = kw_mono_ms(), last_log = first;
    char errstr[512];

    for (size_t i = 0; i < n; i++) {
        const kw_block_range_t *r = kw_block_range(b, i);

        offs[i].topic = r->topic;
        offs[i].partition = r->partition;
        offs[i].next = r->until_offset;
    }
    for (;;) {
        kw_err_t err = kw_zk_commit(svc->zk, offs, n, 0, errstr, sizeof(errstr));

        if (err == KW_OK)
            return 0;
        if (err == KW_EFENCED) {
            KW_LOG_W(PIPE_MOD, "block %s: offsets not stored, partition "
                     "no longer ours: %s (invariant 4)", what, errstr);
            return 1;
        }
        if (kw_rcv_is_fatal(svc))
            return -1;
        atomic_fetch_add(&svc->n.zk_retries, 1);
        if (kw_mono_ms() - last_log >= 5000 || last_log == first) {
            last_log = kw_mono_ms();
            KW_LOG_W(PIPE_MOD, "storing offsets of block %s in ZooKeeper: "
                     "%s; retrying (receivers pause while the queue is full)", what,
                     errstr);
            if (last_log == first)
                last_log++;
        }
        kw_sleep_ms(backoff);
        backoff = backoff * 2 > 2000 ? 2000 : backoff * 2;
    }
}

/* Block b's offsets are in ZooKeeper: what kw_receiver_partitions shows. */
static void note_stored(kw_receiver_t *svc, const kw_block_t *b)
{
    for (size_t i = 0; i < kw_block_range_count(b); i++) {
        const kw_block_range_t *r = kw_block_range(b, i);

        kw_rcv_part_stored(svc, r->topic, r->partition, r->until_offset);
    }
}

#define REOPEN_EVERY_MS 2000

static int reopen_wal(kw_receiver_t *svc, const char *why);

/* The WAL `broken` fell below its write quorum: release it and wait until
 * it opens again with the quorum healthy. One pipeline does that while the
 * others wait on quorum_mu and then find the WAL replaced (or the service
 * failed). 0 when a healthy WAL is in place, -1 when the service stops or
 * fails meanwhile (fatal recorded). */
static int wait_for_quorum(kw_receiver_t *svc, kw_wal_t *broken, const char *why)
{
    int rc;

    pthread_mutex_lock(&svc->quorum_mu);
    pthread_rwlock_rdlock(&svc->wal_rw);
    rc = svc->wal != broken ? (svc->wal != NULL ? 0 : -1) : 1;
    pthread_rwlock_unlock(&svc->wal_rw);
    if (rc == 1)
        rc = reopen_wal(svc, why);
    pthread_mutex_unlock(&svc->quorum_mu);
    return rc;
}

/* wait_for_quorum's releaser: holds quorum_mu. */
static int reopen_wal(kw_receiver_t *svc, const char *why)
{
    int64_t since = kw_mono_ms(), last_log = since;
    int quorum = svc->wal_opts.write_quorum > 0 ? svc->wal_opts.write_quorum
                                                : svc->wal_opts.ndirs / 2 + 1;
    char errstr[512];

    atomic_fetch_add(&svc->n.quorum_pauses, 1);
    KW_LOG_E(PIPE_MOD, "the WAL is below its write quorum (%s): consumption pauses, "
             "nothing is acknowledged and ZooKeeper does not advance. The WAL is "
             "released: repair the failed replicas with `kwal wal repair`; kwal tries "
             "to reopen it every %d s and resumes by itself", why, REOPEN_EVERY_MS / 1000);
    pthread_rwlock_wrlock(&svc->wal_rw);
    kw_wal_close(svc->wal);
    svc->wal = NULL;
    pthread_rwlock_unlock(&svc->wal_rw);
    for (;;) {
        kw_wal_open_report_t rep;
        kw_wal_t *w = NULL;

        for (int64_t t = 0; t < REOPEN_EVERY_MS; t += 100) {
            if (atomic_load(&svc->receivers_stop) || kw_rcv_is_fatal(svc)) {
                kw_rcv_fatal(svc, "stopping while the WAL is below its write quorum: "
                             "the blocks waiting for it were never acknowledged "
                             "(Kafka still has them; the next start consumes them)");
                return -1;
            }
            kw_sleep_ms(100);
        }
        if (kw_wal_open(&svc->wal_opts, &w, &rep, errstr, sizeof(errstr)) != KW_OK) {
            if (kw_mono_ms() - last_log >= 30000) {
                last_log = kw_mono_ms();
                KW_LOG_W(PIPE_MOD, "still paused: the WAL does not open: %s", errstr);
            }
            continue;
        }
        if (rep.replicas_healthy < quorum) {
            kw_wal_close(w);
            if (kw_mono_ms() - last_log >= 30000) {
                last_log = kw_mono_ms();
                KW_LOG_W(PIPE_MOD, "still paused: %d of %d WAL replicas healthy",
                         rep.replicas_healthy, rep.replicas_healthy + rep.replicas_failed);
            }
            continue;
        }
        pthread_rwlock_wrlock(&svc->wal_rw);
        svc->wal = w;
        pthread_rwlock_unlock(&svc->wal_rw);
        KW_LOG_I(PIPE_MOD, "the WAL has its write quorum again (%d healthy replicas) "
                 "after %" PRId64 " s: resuming", rep.replicas_healthy,
                 (kw_mono_ms() - since) / 1000);
        return 0;
    }
}

/* Steps 1-4 for one block of receiver c. 0, or -1 (fatal recorded). */
static int process_block(kw_receiver_t *svc, kw_rcv_consumer_t *c, kw_block_t *b)
{
    size_t len;
    const uint8_t *data = kw_block_data(b, &len);
    kw_wal_pos_t pos;
    char errstr[512], what[32];
    uint32_t rid = kw_block_receiver_id(b);
    kw_err_t err;
    int rc;

    kw_crash(KW_CRASH_BLOCK_CUT);
    /* 1. durable on the write quorum before anything else (invariant 1) */
    for (;;) {
        kw_wal_stats_t ws;
        kw_wal_t *w;

        pthread_rwlock_rdlock(&svc->wal_rw);
        w = svc->wal;
        if (w == NULL) {
            err = KW_EQUORUM;
            snprintf(errstr, sizeof(errstr), "the WAL is released");
        } else {
            kw_wal_stats(w, &ws);
            if (atomic_load(&c->inflight_floor) == 0)
                atomic_store(&c->inflight_floor, ws.next_lsn);
            err = kw_wal_append(w, data, len,
                                svc->conf->wal.compress ? KW_WAL_COMPRESS : 0u, &pos,
                                errstr, sizeof(errstr));
        }
        pthread_rwlock_unlock(&svc->wal_rw);
        if (err != KW_EQUORUM)
            break;
        if (wait_for_quorum(svc, w, errstr) != 0)
            return -1;
    }
    if (err != KW_OK) {
        kw_rcv_fatal(svc, "WAL append failed: %s", errstr);
        return -1;
    }
    atomic_fetch_add(&svc->n.blocks_durable, 1);
    kw_crash(KW_CRASH_PIPELINE_WAL_ACKED);

    /* 2. track it */
    err = kw_tracker_insert_from_block(svc->tracker, b, &pos, len, errstr, sizeof(errstr));
    if (err != KW_OK) {
        kw_rcv_fatal(svc, "tracker: %s", errstr);
        return -1;
    }

    kw_crash(KW_CRASH_PIPELINE_TRACKED);

    /* 3. offsets to ZooKeeper, only now (invariant 1) */
    snprintf(what, sizeof(what), "lsn %" PRIu64, pos.lsn);
    rc = commit_offsets(svc, b, what);
    if (rc < 0)
        return -1;
    if (rc == 0)
        kw_crash(KW_CRASH_PIPELINE_COMMITTED);
    if (rc == 0) {
        /* 4. */
        err = kw_tracker_mark_offsets_stored(svc->tracker, pos.lsn, errstr, sizeof(errstr));
        if (err != KW_OK) {
            kw_rcv_fatal(svc, "tracker: %s", errstr);
            return -1;
        }
        atomic_fetch_add(&svc->n.blocks_offsets_stored, 1);
        note_stored(svc, b);
    } else {
        atomic_fetch_add(&svc->n.blocks_fenced, 1);
    }
    KW_LOG_D(PIPE_MOD, "block %u/%" PRIu64 ": lsn %" PRIu64 ", %u records, %zu bytes%s",
             rid, kw_block_seq(b), pos.lsn, kw_block_record_count(b), len,
             rc ? " (fenced)" : "");
    /* only now: until the block is marked committed the batcher must not
     * prune it from the tracker (it may be delivered and processed before
     * its offsets are in ZooKeeper) */
    atomic_store(&c->inflight_floor, 0);
    kw_rcv_mark_done(c, kw_block_seq(b));
    /* the first block since the start: its batch goes now rather than a
     * whole batch.interval.ms after the start (batcher.c); later blocks only
     * read the flag (no write to a shared line per block) */
    if (svc->rc->batch_first_early && !atomic_load(&svc->first_batch_asked) &&
        !atomic_exchange(&svc->first_batch_asked, 1)) {
        pthread_mutex_lock(&svc->batch_mu);
        svc->deliver_now = 1;
        pthread_cond_broadcast(&svc->batch_cv);
        pthread_mutex_unlock(&svc->batch_mu);
    }
    return 0;
}

/* --no-wal: wait until the pending list has room for size bytes (asking the
 * batcher for a batch now), then reserve one entry in it (pending_reserved).
 * 0, or -1 when the service failed meanwhile or memory ran out (fatal
 * recorded; nothing reserved). */
static int wait_pending_room(kw_receiver_t *svc, uint64_t size)
{
    int logged = 0, rc = 0;

    pthread_mutex_lock(&svc->pending_mu);
    while (svc->pending_bytes > 0 &&
           svc->pending_bytes + size > KW_RCV_PENDING_MAX_BYTES &&
           !atomic_load(&svc->receivers_stop) && !kw_rcv_is_fatal(svc)) {
        struct timespec ts;

        if (!logged) {
            KW_LOG_D(PIPE_MOD, "--no-wal: %" PRIu64 " bytes pending: asking for a "
                     "batch now", svc->pending_bytes);
            logged = 1;
        }
        pthread_mutex_lock(&svc->batch_mu);
        svc->deliver_now = 1;
        pthread_cond_broadcast(&svc->batch_cv);
        pthread_mutex_unlock(&svc->batch_mu);
        ts = kw_deadline_ts(CLOCK_REALTIME, 200);
        pthread_cond_timedwait(&svc->pending_cv, &svc->pending_mu, &ts);
    }
    if (kw_rcv_is_fatal(svc)) {
        rc = -1;
    } else if (svc->npending + svc->pending_reserved == svc->pending_cap) {
        /* grown here, before the commit: once the offsets are in ZooKeeper
         * the block must not fail to get onto the list */
        size_t ncap = svc->pending_cap ? svc->pending_cap * 2 : 64;
        kw_block_t **np = realloc(svc->pending, ncap * sizeof(*np));

        if (np == NULL) {
            kw_rcv_fatal(svc, "--no-wal: pending list: out of memory");
            rc = -1;
        } else {
            svc->pending = np;
            svc->pending_cap = ncap;
        }
    }
    if (rc == 0)
        svc->pending_reserved++;
    pthread_mutex_unlock(&svc->pending_mu);
    return rc;
}

/* --no-wal: steps 1-3 (top of file) for one block of receiver c; takes b.
 * The pipelines of all receivers add to the one pending list, so the bound
 * is kept to within one block per receiver. 0, or -1 (fatal recorded; b,
 * not committed, destroyed: Kafka still has it). */
static int process_block_no_wal(kw_receiver_t *svc, kw_rcv_consumer_t *c, kw_block_t *b)
{
    char what[48];
    uint64_t seq;
    int rc;

    kw_crash(KW_CRASH_BLOCK_CUT);
    if (wait_pending_room(svc, kw_block_size(b)) != 0) {
        kw_block_destroy(b);
        return -1;
    }
    /* 1. offsets to ZooKeeper at once: acknowledged on receipt */
    snprintf(what, sizeof(what), "%u/%" PRIu64, kw_block_receiver_id(b), kw_block_seq(b));
    rc = commit_offsets(svc, b, what);
    if (rc < 0) {
        pthread_mutex_lock(&svc->pending_mu);
        svc->pending_reserved--;
        pthread_mutex_unlock(&svc->pending_mu);
        kw_block_destroy(b);
        return -1;
    }
    if (rc == 0) {
        kw_crash(KW_CRASH_PIPELINE_COMMITTED);
        atomic_fetch_add(&svc->n.blocks_offsets_stored, 1);
        note_stored(svc, b);
    } else {
        atomic_fetch_add(&svc->n.blocks_fenced, 1);
    }
    KW_LOG_D(PIPE_MOD, "block %s: %u records, %zu bytes, pending%s", what,
             kw_block_record_count(b), kw_block_size(b), rc ? " (fenced)" : "");
    /* 2. pending until its batch (a fenced block too, as on the WAL path: the
     * sink counts the new owner's copy as a duplicate delivery); from here
     * on the block is the batcher's, which may free it at once */
    seq = kw_block_seq(b);
    pthread_mutex_lock(&svc->pending_mu);
    svc->pending_reserved--;
    svc->pending[svc->npending++] = b;
    svc->pending_bytes += kw_block_size(b);
    pthread_mutex_unlock(&svc->pending_mu);
    /* 3. */
    kw_rcv_mark_done(c, seq);
    return 0;
}

void *kw_rcv_pipeline_main(void *arg)
{
    kw_rcv_consumer_t *c = arg;
    kw_receiver_t *svc = c->svc;
    char name[16];

    snprintf(name, sizeof(name), "pipeline-%u", c->id);
    pthread_setname_np(pthread_self(), name);
    for (;;) {
        kw_block_t *b = NULL;
        kw_err_t err = kw_blockq_get(c->q, &b, 200);

        if (err == KW_ECLOSED)
            break;
        if (err == KW_ETIMEDOUT) {
            if (kw_rcv_is_fatal(svc))
                break;
            continue;
        }
        if (err != KW_OK) {
            kw_rcv_fatal(svc, "block queue: %s", kw_err_str(err));
            break;
        }
        if (kw_rcv_is_fatal(svc)) {
            kw_block_destroy(b);
            break;
        }
        if (svc->no_wal) {
            err = process_block_no_wal(svc, c, b) == 0 ? KW_OK : KW_EIO;
        } else {
            err = process_block(svc, c, b) == 0 ? KW_OK : KW_EIO;
            kw_block_destroy(b);
        }
        if (err != KW_OK)
            break;
    }
    KW_LOG_D(PIPE_MOD, "stopped");
    return NULL;
}
