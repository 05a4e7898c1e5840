/*
 * wal.c -- the append pipeline, reads and cleanup of kwal's WAL.
 *
 * How an append becomes durable
 * -----------------------------
 * An appender compresses and hashes its payload without the lock, then under
 * wal->mu takes the next LSN and the next offset in the current segment (rolling
 * to a new one by size or age), encodes the record header and queues the record
 * on a singly linked list. Every healthy replica has an I/O thread ("wal-io-R")
 * with a cursor into that list. When an I/O thread finds records past its cursor
 * it *seals* a write batch if none is sealed yet: the batch runs to the newest
 * queued record (or to the record before the next segment roll), and its last
 * record gets BATCH_END. The thread then writes the batch with pwritev (a batch
 * over 2 MiB in pieces of about 1 MiB, each handed to the disk before the next
 * is copied, see write_batch) and one fdatasync, and publishes done_lsn.
 * Batches are sealed once, centrally, so
 * every replica receives the same bytes and a location is valid on all of them.
 *
 * The durable LSN is the W-th highest done_lsn among healthy replicas (W = the
 * write quorum); an appender returns when durable_lsn reaches its LSN. All the
 * records queued while a batch was being synced go out in the next batch: that
 * is the group commit, and one fdatasync serves many appenders. A record is
 * freed once every healthy replica has written it.
 *
 * Failures
 * --------
 * Any failed open, write or fsync on a replica marks it failed
 * (kw__replica_fail): its thread stops, its file descriptor is closed, the
 * fdatasync is never retried, and the generation of the STATE file goes up so
 * that every healthy replica's I/O thread rewrites its STATE before it writes
 * its next batch (so health survives restarts before any later append is
 * acknowledged). When fewer than W replicas stay healthy the WAL is *broken*:
 * every waiting and later append fails with KW_EQUORUM (a sticky state, as
 * SQLite's pager ERROR state); the WAL must be reopened after repair.
 *
 * Lock order: only wal->mu. I/O, compression and hashing happen without it.
 */
#include "wal_int.h"
#include "kw_time.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <lz4.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kw_fault.h"
#include "kw_log.h"

#define MOD "wal"
#define MAX_BATCH_IOV 512

void kw_wal_options_init(kw_wal_options_t *opts)
{
    memset(opts, 0, sizeof(*opts));
    opts->segment_bytes = 64ull << 20;
    opts->segment_ms = 60000;
    opts->max_pending_bytes = 256ull << 20;
}

/* ---- Handle allocation ---- */

kw_err_t kw__alloc_handle(const kw_wal_options_t *opts, kw_wal_t **out,
                          char *errstr, size_t errlen)
{
    kw_wal_t *w;

    *out = NULL;
    if (opts == NULL || opts->ndirs < 1 || opts->ndirs > KW_WAL_MAX_REPLICAS)
        return kw_seterr(errstr, errlen, KW_EINVAL,
                         "wal.dirs: need 1 to %d replica directories", KW_WAL_MAX_REPLICAS);
    if (opts->write_quorum < 0 || opts->write_quorum > opts->ndirs)
        return kw_seterr(errstr, errlen, KW_EINVAL,
                         "wal.write.quorum: %d is not between 1 and the %d replicas",
                         opts->write_quorum, opts->ndirs);
    for (int i = 0; i < opts->ndirs; i++) {
        if (opts->dirs[i] == NULL || opts->dirs[i][0] == '\0')
            return kw_seterr(errstr, errlen, KW_EINVAL, "wal.dirs: replica %d has no directory", i);
        for (int j = 0; j < i; j++)
            if (strcmp(opts->dirs[i], opts->dirs[j]) == 0)
                return kw_seterr(errstr, errlen, KW_EINVAL,
                                 "wal.dirs: directory %s is listed twice", opts->dirs[i]);
    }
    w = calloc(1, sizeof(*w));
    if (w == NULL)
        return kw_seterr(errstr, errlen, KW_ENOMEM, "out of memory");
    w->opts = *opts;
    kw_wal_options_t defaults;
    kw_wal_options_init(&defaults);
    if (w->opts.segment_bytes == 0)
        w->opts.segment_bytes = defaults.segment_bytes;
    if (w->opts.segment_ms == 0)
        w->opts.segment_ms = defaults.segment_ms;
    if (w->opts.max_pending_bytes == 0)
        w->opts.max_pending_bytes = defaults.max_pending_bytes;
    w->io = opts->io ? opts->io : kw_wal_io_posix();
    w->nrep = opts->ndirs;
    w->quorum = opts->write_quorum ? opts->write_quorum : opts->ndirs / 2 + 1;
    w->next_lsn = 1;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv_io, NULL);
    pthread_cond_init(&w->cv_ack, NULL);
    for (int i = 0; i < w->nrep; i++) {
        kw__replica_t *r = &w->rep[i];

        pthread_cond_init(&r->cv, NULL);
        r->wal = w;
        r->index = i;
        r->lock_fd = -1;
        r->seg_fd = -1;
        r->dir = strdup(opts->dirs[i]);
        if (r->dir == NULL) {
            kw__free_handle(w);
            return kw_seterr(errstr, errlen, KW_ENOMEM, "out of memory");
        }
        w->opts.dirs[i] = r->dir;
    }
    *out = w;
    return KW_OK;
}

void kw__free_handle(kw_wal_t *w)
{
    kw__entry_t *e, *next;

    if (w == NULL)
        return;
    for (e = w->head; e != NULL; e = next) {
        next = e->next;
        free(e->owned);
        free(e);
    }
    for (int i = 0; i < w->nrep; i++) {
        if (w->rep[i].seg_fd >= 0)
            w->io->close(w->io->ctx, i, w->rep[i].seg_fd);
        free(w->rep[i].dir);
        pthread_cond_destroy(&w->rep[i].cv);
    }
    free(w->segs);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv_io);
    pthread_cond_destroy(&w->cv_ack);
    free(w);
}

int kw__segs_push(kw_wal_t *w, const kw__seg_t *s)
{
    if (w->nsegs == w->capsegs) {
        size_t cap = w->capsegs ? w->capsegs * 2 : 16;
        kw__seg_t *n = realloc(w->segs, cap * sizeof(*n));

        if (n == NULL)
            return -1;
        w->segs = n;
        w->capsegs = cap;
    }
    w->segs[w->nsegs++] = *s;
    return 0;
}

/* Index of the segment holding lsn, or -1. Holds mu. */
static long seg_find(const kw_wal_t *w, uint64_t lsn)
{
    size_t lo = 0, hi = w->nsegs;

    while (lo < hi) {             /* first segment with first_lsn > lsn */
        size_t mid = (lo + hi) / 2;

        if (w->segs[mid].first_lsn <= lsn)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == 0 || lsn > w->segs[lo - 1].last_lsn)
        return -1;
    return (long)lo - 1;
}

static long seg_find_by_first(const kw_wal_t *w, uint64_t first)
{
    for (size_t i = 0; i < w->nsegs; i++)
        if (w->segs[i].first_lsn == first)
            return (long)i;
    return -1;
}

/* ---- Durability bookkeeping (all under mu) ---- */

/* Wake every thread that waits on the WAL: health, generation or closing
 * changed. Holds mu. */
static void wake_all(kw_wal_t *w)
{
    for (int i = 0; i < w->nrep; i++)
        pthread_cond_broadcast(&w->rep[i].cv);
    pthread_cond_broadcast(&w->cv_io);
    pthread_cond_broadcast(&w->cv_ack);
}

static int healthy_count(const kw_wal_t *w)
{
    int n = 0;

    for (int i = 0; i < w->nrep; i++)
        n += !w->rep[i].failed;
    return n;
}

/* Recompute durable_lsn; free records every healthy replica has written. */
static void advance(kw_wal_t *w)
{
    uint64_t done[KW_WAL_MAX_REPLICAS] = { 0 }, min_done = UINT64_MAX;
    int n = 0;

    for (int i = 0; i < w->nrep; i++) {
        if (w->rep[i].busy && w->rep[i].busy_lsn - 1 < min_done)
            min_done = w->rep[i].busy_lsn - 1;
        if (w->rep[i].failed)
            continue;
        done[n++] = w->rep[i].done_lsn;
        if (w->rep[i].done_lsn < min_done)
            min_done = w->rep[i].done_lsn;
    }
    if (n < w->quorum) {
        if (!w->broken && !w->opts.read_only)
            KW_LOG_E(MOD, "only %d of %d WAL replicas are healthy, below the write "
                     "quorum %d: appends now fail until the WAL is repaired and reopened",
                     n, w->nrep, w->quorum);
        w->broken = 1;
    } else {
        /* The quorum-th highest done_lsn: sort descending (n <= 16). */
        for (int i = 1; i < n; i++)
            for (int j = i; j > 0 && done[j] > done[j - 1]; j--) {
                uint64_t t = done[j];
                done[j] = done[j - 1];
                done[j - 1] = t;
            }
        if (done[w->quorum - 1] > w->durable_lsn) {
            kw_crash(KW_CRASH_WAL_BEFORE_ACK);
            w->durable_lsn = done[w->quorum - 1];
        }
    }
    /* Healthy replicas point past their done_lsn; a busy one (even if failed
     * meanwhile) is still reading from busy_lsn on. */
    while (w->head != NULL && w->head->lsn <= min_done) {
        kw__entry_t *e = w->head;

        w->head = e->next;
        if (w->head == NULL)
            w->tail = NULL;
        w->pending_bytes -= e->len;
        free(e->owned);
        free(e);
    }
    for (int i = 0; i < w->nrep; i++)
        if (w->rep[i].failed)
            w->rep[i].next = NULL;
}

void kw__replica_fail(kw_wal_t *w, int r, const char *fmt, ...)
{
    kw__replica_t *rep = &w->rep[r];
    va_list ap;

    if (rep->failed)
        return;
    va_start(ap, fmt);
    vsnprintf(rep->reason, sizeof(rep->reason), fmt, ap);
    va_end(ap);
    rep->failed = 1;
    rep->next = NULL;
    w->generation++;
    if (w->opts.read_only)
        KW_LOG_W(MOD, "replica %d (%s) is not used: %s", r, rep->dir, rep->reason);
    else
        KW_LOG_E(MOD, "replica %d (%s) failed: %s; it takes no more writes until "
                 "`kwal wal repair`", r, rep->dir, rep->reason);
    advance(w);
    wake_all(w);
}

void kw__failed_set(kw_wal_t *w, kw__failed_set_t *fs)
{
    fs->n = 0;
    for (int i = 0; i < w->nrep; i++)
        if (w->rep[i].failed) {
            fs->ids[fs->n] = w->rep[i].id;
            fs->dirs[fs->n] = kw__dir_hash(w->rep[i].dir);
            fs->n++;
        }
}

/*
 * Memory is full of records that are durable on the quorum but that a slow
 * replica has not written yet: that replica would stall every appender, so
 * it is failed (it can be repaired later). Holds mu.
 */
static void fail_laggard(kw_wal_t *w)
{
    int slow = -1;

    for (int i = 0; i < w->nrep; i++)
        if (!w->rep[i].failed && w->rep[i].done_lsn < w->durable_lsn &&
            (slow < 0 || w->rep[i].done_lsn < w->rep[slow].done_lsn))
            slow = i;
    if (slow >= 0 && w->head != NULL && w->head->lsn <= w->durable_lsn)
        kw__replica_fail(w, slow, "more than %" PRIu64 " bytes behind the write quorum "
                         "(wal.max.pending.bytes)", w->opts.max_pending_bytes);
}

/* ---- I/O threads ---- */

/*
 * Group commit linger. When more appenders are active than records are queued
 * from `first` on, the ones just acknowledged are about to append again: wait
 * for them, at most a quarter of the last sync time (and never more than 1 ms),
 * so that one fdatasync serves all of them. A single appender never waits.
 * Holds mu (released while waiting).
 */
static void linger(kw_wal_t *w, kw__replica_t *r, kw__entry_t *first)
{
    int target = w->inside > w->inside_peak ? w->inside : w->inside_peak;
    uint64_t budget = w->last_sync_ns / 4, deadline;
    struct timespec ts;

    if (budget > 1000000)
        budget = 1000000;
    if (target <= 1 || budget == 0)
        return;
    clock_gettime(CLOCK_REALTIME, &ts);
    deadline = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec + budget;
    ts.tv_sec = (time_t)(deadline / 1000000000u);
    ts.tv_nsec = (long)(deadline % 1000000000u);
    while (!r->failed && !w->closing && first->lsn > w->sealed_lsn &&
           w->tail->lsn - first->lsn + 1 < (uint64_t)target)
        if (pthread_cond_timedwait(&w->cv_io, &w->mu, &ts) != 0)
            break;
}

/* Seal a batch starting at `first` if it is not sealed yet. Holds mu. */
static void seal(kw_wal_t *w, kw__entry_t *first)
{
    kw__entry_t *e = first, *last = first;
    uint8_t hdr[KW__REC_HDR_SIZE];
    kw__rec_hdr_t h;

    if (first->lsn <= w->sealed_lsn)
        return;
    while (e->next != NULL && !e->next->starts_segment) {
        e = e->next;
        last = e;
    }
    /* Set BATCH_END in the encoded header; the checksum covers 32 bytes. */
    memcpy(hdr, last->hdr, sizeof(hdr));
    if (kw__rec_hdr_decode(hdr, &h) == 0) {
        h.flags |= KW__REC_FLAG_BATCH_END;
        kw__rec_hdr_encode(&h, last->payload_hash, last->hdr);
    }
    last->batch_end = 1;
    w->sealed_lsn = last->lsn;
    w->inside_peak = w->inside;
}

/* fdatasync replica r's segment; counted in st_fsyncs and timed into
 * st_fsync_us when it succeeds (kw_wal_stats_t: fsyncs, fsync_us). 0 or -1
 * with errno. Without mu. */
static int segment_fdatasync(kw_wal_t *w, kw__replica_t *r)
{
    const kw_wal_io_t *io = w->io;
    uint64_t t0 = kw_mono_ns();

    if (io->fdatasync(io->ctx, r->index, r->seg_fd) < 0)
        return -1;
    kw_hist_add(&w->st_fsync_us, (int64_t)((kw_mono_ns() - t0) / 1000), 1);
    atomic_fetch_add(&w->st_fsyncs, 1);
    return 0;
}

/* Create the segment file a new batch starts. Without mu. */
static int roll_segment(kw_wal_t *w, kw__replica_t *r, const kw__entry_t *first)
{
    const kw_wal_io_t *io = w->io;
    char path[4096], name[KW__SEG_NAME_LEN + 1];
    uint8_t hdr[KW__SEG_HDR_SIZE];
    kw__seg_hdr_t sh;

    if (r->seg_fd >= 0) {
        io->close(io->ctx, r->index, r->seg_fd);   /* already fdatasync'ed */
        r->seg_fd = -1;
    }
    kw__seg_name(first->segment, name, sizeof(name));
    snprintf(path, sizeof(path), "%s/%s", r->dir, name);
    r->seg_fd = io->open(io->ctx, r->index, path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (r->seg_fd < 0)
        return -1;
    kw_crash(KW_CRASH_WAL_SEGMENT_ROLL);
    r->seg_first = first->segment;
    memcpy(sh.wal_id, w->wal_id, KW__WAL_ID_LEN);
    sh.first_lsn = first->segment;
    sh.created_ms = first->seg_created_ms;
    kw__seg_hdr_encode(&sh, hdr);
    if (kw__pwrite_full(io, r->index, r->seg_fd, hdr, sizeof(hdr), 0) < 0 ||
        segment_fdatasync(w, r) < 0 || kw__fsync_dir(io, r->index, r->dir) < 0)
        return -1;
    return 0;
}

/*
 * A batch over two pieces long is written a piece at a time, and each piece
 * but the last is handed to the disk (io->writeback) before the next one is
 * copied into the page cache: the disk then writes while the CPU copies,
 * instead of only after the whole batch was copied. Pieces end on page
 * boundaries so that no page is written back twice. Only the fdatasync at the
 * end makes anything durable, as before.
 */
#define WRITEBACK_PIECE (1u << 20)
#define PAGE_BYTES 4096u

/* The bytes of records from (*e, *rec_off) on -- *rec_off bytes into record
 * *e, header first, then payload -- up to `limit` bytes or the end of record
 * `last`, as iovecs. Advances the cursor (*e becomes NULL after `last`). */
static int batch_iov(kw__entry_t **e, size_t *rec_off, const kw__entry_t *last,
                     size_t limit, struct iovec *iov, size_t *len)
{
    int n = 0;

    *len = 0;
    while (*e != NULL && n < MAX_BATCH_IOV && *len < limit) {
        kw__entry_t *x = *e;
        int in_hdr = *rec_off < KW__REC_HDR_SIZE;
        size_t take = (in_hdr ? KW__REC_HDR_SIZE : x->len) - *rec_off;

        if (take > limit - *len)
            take = limit - *len;
        iov[n].iov_base = in_hdr ? (void *)(x->hdr + *rec_off)
                                 : (void *)(x->payload + (*rec_off - KW__REC_HDR_SIZE));
        iov[n].iov_len = take;
        n++;
        *len += take;
        *rec_off += take;
        if (*rec_off == x->len) {
            *rec_off = 0;
            *e = x == last ? NULL : x->next;
        }
    }
    return n;
}

/* Write entries [first, last] (one batch, one segment). Without mu. */
static int write_batch(kw_wal_t *w, kw__replica_t *r, kw__entry_t *first,
                       kw__entry_t *last, const char **op)
{
    const kw_wal_io_t *io = w->io;
    struct iovec iov[MAX_BATCH_IOV];
    kw__entry_t *e = first;
    size_t rec_off = 0;
    uint64_t off = first->offset;
    int pieces = io->writeback != NULL &&
                 last->offset + last->len - first->offset > 2 * WRITEBACK_PIECE;

    *op = "segment create";
    if (first->starts_segment || r->seg_fd < 0 || r->seg_first != first->segment) {
        if (!first->starts_segment) {
            errno = EIO;            /* reopened mid-segment: cannot happen */
            return -1;
        }
        if (roll_segment(w, r, first) < 0)
            return -1;
    }
    while (e != NULL) {
        uint64_t piece_off = off;
        size_t limit = SIZE_MAX, len, piece_len;
        int n;

        if (pieces)   /* up to a page boundary about one piece on */
            limit = (size_t)((off + WRITEBACK_PIECE) / PAGE_BYTES * PAGE_BYTES - off);
        n = batch_iov(&e, &rec_off, last, limit, iov, &len);
        piece_len = len;
        *op = "write";
        if (kw_crash_is_armed(KW_CRASH_WAL_MID_WRITE) && iov[0].iov_len > 1) {
            /* half a record header on disk, then maybe die; the full write
             * below writes the same bytes again */
            struct iovec half = { iov[0].iov_base, iov[0].iov_len / 2 };

            if (io->pwritev(io->ctx, r->index, r->seg_fd, &half, 1, (off_t)off) > 0)
                kw_crash(KW_CRASH_WAL_MID_WRITE);
        }
        while (len > 0) {
            ssize_t k = io->pwritev(io->ctx, r->index, r->seg_fd, iov, n, (off_t)off);

            if (k < 0 && errno == EINTR)
                continue;
            if (k <= 0) {
                if (k == 0)
                    errno = EIO;
                return -1;
            }
            atomic_fetch_add(&w->st_writes, 1);
            /* A short write: go on with the rest (a real failure shows next). */
            len -= (size_t)k;
            off += (uint64_t)k;
            while (n > 0 && (size_t)k >= iov[0].iov_len) {
                k -= (ssize_t)iov[0].iov_len;
                memmove(iov, iov + 1, (size_t)(n - 1) * sizeof(iov[0]));
                n--;
            }
            if (n > 0) {
                iov[0].iov_base = (char *)iov[0].iov_base + k;
                iov[0].iov_len -= (size_t)k;
            }
        }
        *op = "writeback";
        if (pieces && e != NULL &&
            io->writeback(io->ctx, r->index, r->seg_fd, (off_t)piece_off,
                          (off_t)piece_len) < 0)
            return -1;
    }
    kw_crash(KW_CRASH_WAL_BEFORE_FSYNC);
    *op = "fdatasync";
    return segment_fdatasync(w, r);
}

/*
 * Write every sealed batch replica r has not written yet (sealing one first if
 * needed). The caller holds mu and has checked that r is healthy, has work
 * (r->next != NULL), holds the current STATE and is not busy; this takes the
 * write token (r->busy) before anything else, so no two threads ever write one
 * replica. Called by r's I/O thread, or by an appender that found r idle: the
 * appender then writes for r itself and saves two thread wake-ups. Returns
 * with mu held.
 */
static void replica_write(kw_wal_t *w, kw__replica_t *r)
{
    kw__entry_t *first = r->next, *last;
    const char *op = "";
    uint64_t t0;
    int rc;

    r->busy = 1;
    r->busy_lsn = r->busy_end = first->lsn;
    if (first->lsn > w->sealed_lsn)
        linger(w, r, first);
    if (r->failed)
        goto release;
    seal(w, first);
    /* Every batch sealed so far in this segment goes out in one write: a
     * replica that fell behind catches up with one fdatasync. */
    for (last = first; last->next != NULL && last->lsn < w->sealed_lsn &&
                       !last->next->starts_segment; last = last->next)
        ;
    while (!last->batch_end)          /* cannot happen: batches end sealed */
        last = last->next;
    r->busy_end = last->lsn;
    pthread_mutex_unlock(&w->mu);
    t0 = kw_mono_ns();
    rc = write_batch(w, r, first, last, &op);
    t0 = kw_mono_ns() - t0;
    pthread_mutex_lock(&w->mu);
    w->last_sync_ns = t0;
    if (rc < 0) {
        char seg[KW__SEG_NAME_LEN + 1];

        kw__seg_name(first->segment, seg, sizeof(seg));
        kw__replica_fail(w, r->index, "%s of %s at offset %" PRIu64 ": %s",
                         op, seg, first->offset, strerror(errno));
    } else if (!r->failed) {
        r->done_lsn = last->lsn;
        r->next = last->next;
    }
release:
    r->busy = 0;
    advance(w);                        /* also releases what the write kept alive */
    pthread_cond_broadcast(&w->cv_ack);
    /* Wake r's I/O thread only if it has something to do now (its wait in
     * io_thread ends): more records, health or closing. Waking it after every
     * write of a leading appender costs a context switch and a fight for mu
     * per batch, for nothing. */
    if (r->failed || r->next != NULL || r->state_gen != w->generation || w->closing)
        pthread_cond_broadcast(&r->cv);
}

static void *io_thread(void *arg)
{
    kw__replica_t *r = arg;
    kw_wal_t *w = r->wal;
    char tname[16];

    snprintf(tname, sizeof(tname), "wal-io-%d", r->index);
    pthread_setname_np(pthread_self(), tname);
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!r->failed && (r->next == NULL || r->busy) &&
               r->state_gen == w->generation && !(w->closing && !r->busy))
            pthread_cond_wait(&r->cv, &w->mu);
        if (r->failed)
            break;
        if (r->state_gen != w->generation) {
            /* Health changed: persist it before writing anything else. */
            uint64_t gen = w->generation;
            kw__failed_set_t fs;
            int rc;

            kw__failed_set(w, &fs);
            pthread_mutex_unlock(&w->mu);
            rc = kw__write_state(w, r->index, gen, &fs);
            pthread_mutex_lock(&w->mu);
            if (rc < 0)
                kw__replica_fail(w, r->index, "writing STATE: %s", strerror(errno));
            else if (r->state_gen < gen)
                r->state_gen = gen;
            pthread_cond_broadcast(&w->cv_ack);   /* leaders wait for this */
            continue;
        }
        if (r->busy)
            continue;                   /* closing: wait for the token holder */
        if (r->next == NULL)
            break;                      /* closing, nothing left to write */
        replica_write(w, r);
    }
    while (r->busy)                     /* never close the fd under a writer */
        pthread_cond_wait(&r->cv, &w->mu);
    if (r->seg_fd >= 0) {
        w->io->close(w->io->ctx, r->index, r->seg_fd);
        r->seg_fd = -1;
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* ---- Start and close ---- */

kw_err_t kw__start_io(kw_wal_t *w, int start_threads, char *errstr, size_t errlen)
{
    pthread_mutex_lock(&w->mu);
    advance(w);
    pthread_mutex_unlock(&w->mu);
    if (w->opts.read_only || !start_threads)
        return KW_OK;
    for (int i = 0; i < w->nrep; i++) {
        if (w->rep[i].failed)
            continue;
        if (pthread_create(&w->rep[i].thread, NULL, io_thread, &w->rep[i]) != 0)
            return kw_seterr(errstr, errlen, KW_ENOMEM, "cannot start WAL I/O thread");
        w->rep[i].thread_started = 1;
    }
    return KW_OK;
}


void kw_wal_close(kw_wal_t *w)
{
    if (w == NULL)
        return;
    pthread_mutex_lock(&w->mu);
    w->closing = 1;
    wake_all(w);
    pthread_mutex_unlock(&w->mu);
    for (int i = 0; i < w->nrep; i++)
        if (w->rep[i].thread_started)
            pthread_join(w->rep[i].thread, NULL);
    kw__unlock_replicas(w);
    kw__free_handle(w);
}

/* ---- Append ---- */

/* The replica an appender writes itself when it is idle: the first healthy
 * one. Holds mu. -1 if none. */
static int lead_replica(const kw_wal_t *w)
{
    for (int i = 0; i < w->nrep; i++)
        if (!w->rep[i].failed)
            return i;
    return -1;
}

/*
 * Before kw_wal_append returns, the caller's buffer must no longer be needed.
 * If record lsn is still queued (a replica outside the quorum has not written
 * it), wait while some replica is writing it, then give the record its own
 * copy. Holds mu. -1 only when out of memory and nobody can write it.
 */
static int keep_payload(kw_wal_t *w, uint64_t lsn)
{
    for (;;) {
        kw__entry_t *e;
        int busy = 0;

        for (e = w->head; e != NULL && e->lsn < lsn; e = e->next)
            ;
        if (e == NULL || e->lsn != lsn || e->owned != NULL)
            return 0;             /* written everywhere and freed, or owned */
        for (int i = 0; i < w->nrep; i++)
            if (w->rep[i].busy && w->rep[i].busy_lsn <= lsn && lsn <= w->rep[i].busy_end)
                busy = 1;
        if (!busy) {
            uint8_t *copy = malloc(e->len - KW__REC_HDR_SIZE + 1);

            if (copy != NULL) {
                memcpy(copy, e->payload, e->len - KW__REC_HDR_SIZE);
                e->owned = copy;
                e->payload = copy;
                return 0;
            }
            if (healthy_count(w) == 0)
                return -1;
        }
        pthread_cond_wait(&w->cv_ack, &w->mu);
    }
}

kw_err_t kw_wal_append(kw_wal_t *w, const void *payload, size_t len,
                       unsigned flags, kw_wal_pos_t *pos,
                       char *errstr, size_t errlen)
{
    kw__entry_t *e;
    kw__rec_hdr_t h = { 0 };
    uint64_t now;
    size_t stored = len;
    kw_err_t err = KW_OK;
    int lead;

    if (len > KW_WAL_MAX_RECORD)
        return kw_seterr(errstr, errlen, KW_EINVAL,
                         "payload of %zu bytes is over the %u-byte record limit",
                         len, KW_WAL_MAX_RECORD);
    if (w->opts.read_only)
        return kw_seterr(errstr, errlen, KW_EINVAL, "WAL opened read-only");
    e = calloc(1, sizeof(*e));
    if (e == NULL)
        return kw_seterr(errstr, errlen, KW_ENOMEM, "out of memory");
    h.raw_length = (uint32_t)len;
    e->payload = payload;
    if ((flags & KW_WAL_COMPRESS) && len > 0 && len <= (size_t)LZ4_MAX_INPUT_SIZE) {
        int bound = LZ4_compressBound((int)len);

        e->owned = malloc((size_t)bound);
        if (e->owned != NULL) {
            int n = LZ4_compress_default(payload, (char *)e->owned, (int)len, bound);

            if (n > 0 && (size_t)n < len) {
                stored = (size_t)n;
                h.flags |= KW__REC_FLAG_LZ4;
                e->payload = e->owned;
            } else {
                free(e->owned);
                e->owned = NULL;
            }
        }
    }
    h.length = (uint32_t)stored;
    e->len = KW__REC_HDR_SIZE + stored;
    e->payload_hash = kw__payload_hash(e->payload, stored);
    now = kw__now_ms();

    pthread_mutex_lock(&w->mu);
    w->inside++;
    if (w->inside > w->inside_peak)
        w->inside_peak = w->inside;
    while (!w->broken && !w->closing && w->pending_bytes > 0 &&
           w->pending_bytes + e->len > w->opts.max_pending_bytes) {
        fail_laggard(w);
        pthread_cond_wait(&w->cv_ack, &w->mu);
    }
    if (w->broken || w->closing) {
        err = w->closing ? KW_ECLOSED : KW_EQUORUM;
        w->inside--;
        pthread_mutex_unlock(&w->mu);
        free(e->owned);
        free(e);
        if (err == KW_ECLOSED)
            return kw_seterr(errstr, errlen, err, "WAL is closing");
        return kw_seterr(errstr, errlen, err,
                         "WAL has fewer healthy replicas than the write quorum %d; "
                         "nothing was acknowledged (see `kwal wal ls`)", w->quorum);
    }
    e->lsn = w->next_lsn++;
    {
        kw__seg_t *cur = w->seg_open ? &w->segs[w->nsegs - 1] : NULL;

        if (cur == NULL ||
            (cur->last_lsn >= cur->first_lsn &&
             (cur->bytes + e->len > w->opts.segment_bytes ||
              now - cur->created_ms >= w->opts.segment_ms || now < cur->created_ms))) {
            kw__seg_t s = { e->lsn, e->lsn - 1, KW__SEG_HDR_SIZE, now };

            if (kw__segs_push(w, &s) < 0) {
                w->next_lsn--;
                w->inside--;
                pthread_mutex_unlock(&w->mu);
                free(e->owned);
                free(e);
                return kw_seterr(errstr, errlen, KW_ENOMEM, "out of memory");
            }
            w->seg_open = 1;
            e->starts_segment = 1;
            atomic_fetch_add(&w->st_rolls, 1);
            cur = &w->segs[w->nsegs - 1];
        }
        e->segment = cur->first_lsn;
        e->seg_created_ms = cur->created_ms;
        e->offset = cur->bytes;
        cur->bytes += e->len;
        cur->last_lsn = e->lsn;
    }
    h.lsn = e->lsn;
    kw__rec_hdr_encode(&h, e->payload_hash, e->hdr);
    if (w->tail != NULL)
        w->tail->next = e;
    else
        w->head = e;
    w->tail = e;
    w->pending_bytes += e->len;
    lead = lead_replica(w);
    for (int i = 0; i < w->nrep; i++) {
        kw__replica_t *r = &w->rep[i];

        if (r->failed || r->next != NULL)
            continue;                   /* a busy replica comes back for it */
        r->next = e;
        if (i != lead || r->busy || r->state_gen != w->generation)
            pthread_cond_signal(&r->cv);
    }
    pthread_cond_broadcast(&w->cv_io);
    if (pos != NULL) {
        pos->lsn = e->lsn;
        pos->segment = e->segment;
        pos->offset = e->offset;
        pos->size = (uint32_t)e->len;
    }
    {
        uint64_t lsn = e->lsn;   /* e may be freed once durable everywhere */

        while (w->durable_lsn < lsn && !w->broken) {
            kw__replica_t *r;

            lead = lead_replica(w);
            r = lead >= 0 ? &w->rep[lead] : NULL;
            if (r != NULL && !r->busy && r->next != NULL && r->next->lsn <= lsn &&
                r->state_gen == w->generation) {
                replica_write(w, r);    /* lead: write it ourselves */
                continue;
            }
            pthread_cond_wait(&w->cv_ack, &w->mu);
        }
        if (w->durable_lsn < lsn)
            err = KW_EQUORUM;
        if (keep_payload(w, lsn) < 0 && err == KW_OK)
            err = KW_ENOMEM;
    }
    w->inside--;
    pthread_mutex_unlock(&w->mu);
    if (err == KW_ENOMEM)
        return kw_seterr(errstr, errlen, err, "out of memory");
    if (err != KW_OK)
        return kw_seterr(errstr, errlen, err,
                         "WAL lost its write quorum %d before the record was durable; "
                         "it was not acknowledged", w->quorum);
    atomic_fetch_add(&w->st_appends, 1);
    atomic_fetch_add(&w->st_append_bytes, len);
    atomic_fetch_add(&w->st_stored_bytes, KW__REC_HDR_SIZE + stored);
    return KW_OK;
}

/* ---- Reading ---- */

/* 1 when segment is no longer in the log (cleaned meanwhile): a read that
 * failed on every replica then means "not found", not corruption. */
static int seg_gone(kw_wal_t *w, uint64_t segment)
{
    int gone;

    pthread_mutex_lock(&w->mu);
    gone = seg_find_by_first(w, segment) < 0;
    pthread_mutex_unlock(&w->mu);
    return gone;
}

void kw_wal_record_clear(kw_wal_record_t *rec)
{
    if (rec == NULL)
        return;
    free(rec->payload);
    memset(rec, 0, sizeof(*rec));
}

/* Decode a stored payload into rec (decompressing). 0 or -1. */
static int fill_record(kw_wal_record_t *rec, const kw__rec_hdr_t *h, uint8_t *stored)
{
    if (h->type == KW__REC_TYPE_LOST) {
        free(stored);
        rec->payload = NULL;
        rec->flags = KW_WAL_LOST;
        rec->len = rec->cap = 0;
        return 0;
    }
    if (h->flags & KW__REC_FLAG_LZ4) {
        uint8_t *out = malloc(h->raw_length ? h->raw_length : 1);
        int n;

        if (out == NULL)
            return -1;
        n = LZ4_decompress_safe((const char *)stored, (char *)out, (int)h->length,
                                (int)h->raw_length);
        if (n < 0 || (uint32_t)n != h->raw_length) {
            free(out);
            return -1;
        }
        free(stored);
        rec->payload = out;
        rec->flags = KW_WAL_COMPRESS;
    } else {
        rec->payload = stored;
        rec->flags = 0;
    }
    rec->len = h->raw_length;
    rec->cap = h->raw_length;
    return 0;
}

/*
 * Read the record at (segment, offset) trying each usable replica, healthy ones
 * first. expect_lsn 0 accepts any LSN. Without mu.
 */
static kw_err_t read_at(kw_wal_t *w, uint64_t segment, uint64_t offset,
                        uint64_t expect_lsn, kw_wal_record_t *rec,
                        char *errstr, size_t errlen)
{
    char name[KW__SEG_NAME_LEN + 1], path[4096], what[200] = "";
    char first_problem[400] = "";
    int order[KW_WAL_MAX_REPLICAS], n = 0, bad = 0, lost_at = -1;
    kw__rec_hdr_t lost;

    kw__seg_name(segment, name, sizeof(name));
    memset(&lost, 0, sizeof(lost));
    pthread_mutex_lock(&w->mu);
    for (int i = 0; i < w->nrep; i++)     /* replicas known to hold it first */
        if (!w->rep[i].failed && (w->opts.read_only || expect_lsn == 0 ||
                                  w->rep[i].done_lsn >= expect_lsn))
            order[n++] = i;
    for (int i = 0; i < w->nrep; i++)
        if (!w->rep[i].failed && !(w->opts.read_only || expect_lsn == 0 ||
                                   w->rep[i].done_lsn >= expect_lsn))
            order[n++] = i;
    /* Last resort: a replica that failed in this session still holds what it
     * had fdatasync'ed before (a single replica whose fsync failed keeps the
     * WAL readable). Checksum and LSN are verified as everywhere. */
    for (int i = 0; i < w->nrep; i++)
        if (w->rep[i].failed && expect_lsn != 0 && w->rep[i].done_lsn >= expect_lsn)
            order[n++] = i;
    pthread_mutex_unlock(&w->mu);

    for (int k = 0; k < n; k++) {
        int r = order[k], fd, missing;
        kw__rec_hdr_t h;
        uint8_t *stored = NULL;

        snprintf(path, sizeof(path), "%s/%s", w->rep[r].dir, name);
        fd = w->io->open(w->io->ctx, r, path, O_RDONLY, 0);
        missing = fd < 0 && errno == ENOENT;
        if (fd < 0) {
            snprintf(what, sizeof(what), "open: %s", strerror(errno));
        } else {
            int rc = kw__read_record(w->io, r, fd, offset, UINT64_MAX, expect_lsn, &h,
                                     &stored, what, sizeof(what));
            w->io->close(w->io->ctx, r, fd);
            if (rc == 0 && h.type == KW__REC_TYPE_LOST) {
                /* given up here; another replica may still have the record */
                free(stored);
                if (lost_at < 0) {
                    lost_at = r;
                    lost = h;
                }
                continue;
            }
            if (rc == 0) {
                memset(rec, 0, sizeof(*rec));
                if (fill_record(rec, &h, stored) < 0) {
                    free(stored);
                    snprintf(what, sizeof(what), "LZ4 payload does not decompress to %u bytes",
                             h.raw_length);
                } else {
                    rec->pos.lsn = h.lsn;
                    rec->pos.segment = segment;
                    rec->pos.offset = offset;
                    rec->pos.size = KW__REC_HDR_SIZE + h.length;
                    if (bad > 0) {
                        atomic_fetch_add(&w->st_read_fallbacks, 1);
                        KW_LOG_W(MOD, "read of segment %s offset %" PRIu64
                                 " served by replica %d (%s) after: %s",
                                 name, offset, r, w->rep[r].dir, first_problem);
                    }
                    return KW_OK;
                }
            }
        }
        if (bad++ == 0)
            snprintf(first_problem, sizeof(first_problem), "replica %d (%s): %s",
                     r, w->rep[r].dir, what);
        kw_log(missing ? KW_LOG_DEBUG : KW_LOG_WARN, MOD,
               "replica %d (%s) segment %s offset %" PRIu64 ": %s",
               r, w->rep[r].dir, name, offset, what);
    }
    if (lost_at >= 0) {
        memset(rec, 0, sizeof(*rec));
        (void)fill_record(rec, &lost, NULL);
        rec->pos.lsn = lost.lsn;
        rec->pos.segment = segment;
        rec->pos.offset = offset;
        rec->pos.size = KW__REC_HDR_SIZE + lost.length;
        return KW_OK;
    }
    if (n == 0)
        return kw_seterr(errstr, errlen, KW_EQUORUM, "no healthy replica to read from");
    if (seg_gone(w, segment))
        return kw_seterr(errstr, errlen, KW_ENOTFOUND, "segment %s was cleaned", name);
    return kw_seterr(errstr, errlen, KW_ECORRUPT,
                     "record at segment %s offset %" PRIu64 " is unreadable on every "
                     "replica (first: %s)", name, offset, first_problem);
}

kw_err_t kw_wal_read(kw_wal_t *w, const kw_wal_pos_t *pos, kw_wal_record_t *rec,
                     char *errstr, size_t errlen)
{
    long idx;

    pthread_mutex_lock(&w->mu);
    idx = seg_find_by_first(w, pos->segment);
    if (idx >= 0 && pos->lsn != 0 &&
        (pos->lsn < w->segs[idx].first_lsn || pos->lsn > w->segs[idx].last_lsn))
        idx = -1;
    if (idx >= 0 && pos->lsn > w->durable_lsn && !w->opts.read_only)
        idx = -1;
    pthread_mutex_unlock(&w->mu);
    if (idx < 0)
        return kw_seterr(errstr, errlen, KW_ENOTFOUND,
                         "no durable record at LSN %" PRIu64 " in segment %" PRIu64,
                         pos->lsn, pos->segment);
    return read_at(w, pos->segment, pos->offset, pos->lsn, rec, errstr, errlen);
}

/* ---- Iterator ---- */

struct kw_wal_iter {
    kw_wal_t *wal;
    uint64_t  next_lsn;
    uint64_t  segment;     /* segment of next_lsn */
    uint64_t  offset;      /* its offset, valid when segment != 0 */
};

/*
 * Size of the record with LSN lsn at (segment, off), from its header alone, on
 * the first replica whose header there is well formed and names that LSN. So
 * a record whose payload is bad everywhere does not hide the ones after it.
 */
static kw_err_t hop(kw_wal_t *w, uint64_t segment, uint64_t off, uint64_t lsn,
                    uint64_t *size, char *errstr, size_t errlen)
{
    char name[KW__SEG_NAME_LEN + 1], path[4096];

    kw__seg_name(segment, name, sizeof(name));
    for (int r = 0; r < w->nrep; r++) {
        uint8_t hdr[KW__REC_HDR_SIZE];
        kw__rec_hdr_t h;
        ssize_t n;
        int fd;

        pthread_mutex_lock(&w->mu);
        fd = w->rep[r].failed && w->rep[r].done_lsn < lsn;
        pthread_mutex_unlock(&w->mu);
        if (fd)
            continue;
        snprintf(path, sizeof(path), "%s/%s", w->rep[r].dir, name);
        fd = w->io->open(w->io->ctx, r, path, O_RDONLY, 0);
        if (fd < 0)
            continue;
        n = kw__pread_full(w->io, r, fd, hdr, sizeof(hdr), (off_t)off);
        w->io->close(w->io->ctx, r, fd);
        if (n == (ssize_t)sizeof(hdr) && kw__rec_hdr_decode(hdr, &h) == 0 && h.lsn == lsn) {
            *size = KW__REC_HDR_SIZE + h.length;
            return KW_OK;
        }
    }
    if (seg_gone(w, segment))
        return kw_seterr(errstr, errlen, KW_ENOTFOUND, "LSN %" PRIu64 " was cleaned", lsn);
    return kw_seterr(errstr, errlen, KW_ECORRUPT,
                     "no replica has a readable header for LSN %" PRIu64 " at segment %s "
                     "offset %" PRIu64, lsn, name, off);
}

/* Offset of lsn in its segment, hopping headers from the segment start. */
static kw_err_t locate(kw_wal_t *w, uint64_t segment, uint64_t lsn, uint64_t *offset,
                       char *errstr, size_t errlen)
{
    uint64_t off = KW__SEG_HDR_SIZE, size;

    for (uint64_t l = segment; l < lsn; l++) {
        kw_err_t err = hop(w, segment, off, l, &size, errstr, errlen);

        if (err != KW_OK)
            return err;
        off += size;
    }
    *offset = off;
    return KW_OK;
}

kw_err_t kw_wal_iter_new(kw_wal_t *w, uint64_t from_lsn, kw_wal_iter_t **out,
                         char *errstr, size_t errlen)
{
    kw_wal_iter_t *it = calloc(1, sizeof(*it));

    *out = NULL;
    if (it == NULL)
        return kw_seterr(errstr, errlen, KW_ENOMEM, "out of memory");
    it->wal = w;
    pthread_mutex_lock(&w->mu);
    if (w->nsegs > 0 && (from_lsn == 0 || from_lsn < w->segs[0].first_lsn))
        from_lsn = w->segs[0].first_lsn;
    if (from_lsn == 0)
        from_lsn = w->next_lsn;
    pthread_mutex_unlock(&w->mu);
    it->next_lsn = from_lsn;
    *out = it;
    return KW_OK;
}

kw_err_t kw_wal_iter_next(kw_wal_iter_t *it, kw_wal_record_t *rec,
                          char *errstr, size_t errlen)
{
    kw_wal_t *w = it->wal;
    uint64_t limit, seg_first, seg_bytes;
    long idx;
    kw_err_t err;

    pthread_mutex_lock(&w->mu);
    limit = w->opts.read_only ? w->next_lsn - 1 : w->durable_lsn;
    if (it->next_lsn > limit) {
        pthread_mutex_unlock(&w->mu);
        return KW_EOF;
    }
    idx = seg_find(w, it->next_lsn);
    if (idx < 0) {
        pthread_mutex_unlock(&w->mu);
        return kw_seterr(errstr, errlen, KW_ENOTFOUND,
                         "LSN %" PRIu64 " is no longer in the WAL (cleaned)", it->next_lsn);
    }
    seg_first = w->segs[idx].first_lsn;
    seg_bytes = w->segs[idx].bytes;
    pthread_mutex_unlock(&w->mu);
    if (it->segment != seg_first || it->offset >= seg_bytes) {
        it->segment = seg_first;
        err = locate(w, seg_first, it->next_lsn, &it->offset, errstr, errlen);
        if (err != KW_OK)
            return err;
    }
    err = read_at(w, it->segment, it->offset, it->next_lsn, rec, errstr, errlen);
    if (err != KW_OK)
        return err;
    it->offset += rec->pos.size;
    it->next_lsn++;
    return KW_OK;
}

void kw_wal_iter_destroy(kw_wal_iter_t *it)
{
    free(it);
}

kw_err_t kw_wal_read_lsn(kw_wal_t *w, uint64_t lsn, kw_wal_record_t *rec,
                         char *errstr, size_t errlen)
{
    kw_wal_iter_t *it;
    kw_err_t err;

    pthread_mutex_lock(&w->mu);
    err = (lsn == 0 || seg_find(w, lsn) < 0 ||
           (!w->opts.read_only && lsn > w->durable_lsn)) ? KW_ENOTFOUND : KW_OK;
    pthread_mutex_unlock(&w->mu);
    if (err != KW_OK)
        return kw_seterr(errstr, errlen, err, "no durable record with LSN %" PRIu64, lsn);
    err = kw_wal_iter_new(w, lsn, &it, errstr, errlen);
    if (err != KW_OK)
        return err;
    err = kw_wal_iter_next(it, rec, errstr, errlen);
    kw_wal_iter_destroy(it);
    if (err == KW_EOF)
        err = kw_seterr(errstr, errlen, KW_ENOTFOUND, "no record with LSN %" PRIu64, lsn);
    return err;
}

/* ---- Cleanup ---- */

kw_err_t kw_wal_cleanup(kw_wal_t *w, uint64_t below_lsn, int *deleted,
                        char *errstr, size_t errlen)
{
    kw__seg_t *gone = NULL;
    size_t ngone = 0;
    int healthy[KW_WAL_MAX_REPLICAS], nh = 0;

    if (deleted != NULL)
        *deleted = 0;
    if (w->opts.read_only)
        return kw_seterr(errstr, errlen, KW_EINVAL, "WAL opened read-only");
    pthread_mutex_lock(&w->mu);
    if (below_lsn > w->durable_lsn + 1)
        below_lsn = w->durable_lsn + 1;
    /* Never the last segment: it is (or was) the one being written. */
    while (ngone + 1 < w->nsegs && w->segs[ngone].last_lsn < below_lsn)
        ngone++;
    if (ngone > 0) {
        gone = malloc(ngone * sizeof(*gone));
        if (gone == NULL) {
            pthread_mutex_unlock(&w->mu);
            return kw_seterr(errstr, errlen, KW_ENOMEM, "out of memory");
        }
        memcpy(gone, w->segs, ngone * sizeof(*gone));
        memmove(w->segs, w->segs + ngone, (w->nsegs - ngone) * sizeof(*gone));
        w->nsegs -= ngone;
    }
    for (int i = 0; i < w->nrep; i++)
        if (!w->rep[i].failed)
            healthy[nh++] = i;
    pthread_mutex_unlock(&w->mu);

    /* Oldest first on every replica, so a crash leaves no gap (FORMAT.md). */
    for (int k = 0; k < nh; k++) {
        int r = healthy[k];

        for (size_t s = 0; s < ngone; s++) {
            char name[KW__SEG_NAME_LEN + 1], path[4096];

            kw__seg_name(gone[s].first_lsn, name, sizeof(name));
            snprintf(path, sizeof(path), "%s/%s", w->rep[r].dir, name);
            if (w->io->unlink(w->io->ctx, r, path) < 0 && errno != ENOENT)
                KW_LOG_W(MOD, "cleanup: cannot delete %s: %s", path, strerror(errno));
            kw_crash(KW_CRASH_WAL_CLEANUP);
        }
        if (ngone > 0 && kw__fsync_dir(w->io, r, w->rep[r].dir) < 0)
            KW_LOG_W(MOD, "cleanup: fsync of directory %s: %s", w->rep[r].dir,
                     strerror(errno));
    }
    if (ngone > 0)
        KW_LOG_D(MOD, "cleanup below LSN %" PRIu64 ": %zu segments deleted", below_lsn, ngone);
    free(gone);
    if (deleted != NULL)
        *deleted = (int)ngone;
    return KW_OK;
}

/* ---- Introspection ---- */

int kw_wal_health(kw_wal_t *w, kw_wal_replica_info_t *info, int ninfo)
{
    int healthy;

    pthread_mutex_lock(&w->mu);
    for (int i = 0; i < w->nrep && i < ninfo; i++) {
        info[i].dir = w->rep[i].dir;
        info[i].state = w->rep[i].failed ? KW_REPLICA_FAILED : KW_REPLICA_HEALTHY;
        snprintf(info[i].reason, sizeof(info[i].reason), "%s", w->rep[i].reason);
        info[i].written_lsn = w->rep[i].done_lsn;
    }
    healthy = healthy_count(w);
    pthread_mutex_unlock(&w->mu);
    return healthy;
}

void kw_wal_stats(kw_wal_t *w, kw_wal_stats_t *s)
{
    memset(s, 0, sizeof(*s));
    s->appends = atomic_load(&w->st_appends);
    s->append_bytes = atomic_load(&w->st_append_bytes);
    s->stored_bytes = atomic_load(&w->st_stored_bytes);
    s->writes = atomic_load(&w->st_writes);
    s->fsyncs = atomic_load(&w->st_fsyncs);
    s->rolls = atomic_load(&w->st_rolls);
    s->read_fallbacks = atomic_load(&w->st_read_fallbacks);
    kw_hist_summarize(&w->st_fsync_us, &s->fsync_us);
    pthread_mutex_lock(&w->mu);
    s->first_lsn = (w->nsegs > 0 && w->segs[0].last_lsn >= w->segs[0].first_lsn)
                       ? w->segs[0].first_lsn : 0;
    s->durable_lsn = w->durable_lsn;
    s->next_lsn = w->next_lsn;
    s->replicas_healthy = healthy_count(w);
    pthread_mutex_unlock(&w->mu);
}

size_t kw_wal_segments(kw_wal_t *w, kw_wal_segment_info_t *out, size_t nmax)
{
    size_t n;

    pthread_mutex_lock(&w->mu);
    n = w->nsegs;
    for (size_t i = 0; i < n && i < nmax; i++) {
        out[i].first_lsn = w->segs[i].first_lsn;
        out[i].last_lsn = w->segs[i].last_lsn;
        out[i].bytes = w->segs[i].bytes;
        out[i].created_ms = w->segs[i].created_ms;
    }
    pthread_mutex_unlock(&w->mu);
    return n;
}
