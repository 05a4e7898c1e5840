/*
 * wal_admin.c -- checking and mending a WAL offline: kw_wal_verify() reads
 * every record of every replica and reports each problem with its place;
 * kw_wal_repair() rebuilds one replica from a healthy one and marks it
 * healthy again. Both reuse the open algorithm (wal_open.c) for the WAL's
 * identity and its segment table.
 */
#include "wal_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "kw_log.h"
#include "wal_scan.h"

#define MOD "wal"

static void problem(kw_wal_problem_cb cb, void *opaque, long *count, int r,
                    uint64_t segment, uint64_t offset, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));

static void problem(kw_wal_problem_cb cb, void *opaque, long *count, int r,
                    uint64_t segment, uint64_t offset, const char *fmt, ...)
{
    kw_wal_problem_t p;
    va_list ap;

    memset(&p, 0, sizeof(p));
    p.replica = r;
    if (segment != 0)
        kw__seg_name(segment, p.segment, sizeof(p.segment));
    p.offset = offset;
    va_start(ap, fmt);
    vsnprintf(p.what, sizeof(p.what), fmt, ap);
    va_end(ap);
    (*count)++;
    if (cb != NULL)
        cb(&p, opaque);
}

/*
 * Take a shared lock on every replica's LOCK file; returns 1 when some replica
 * is locked by a writer (the WAL is live). fds[] gets what was locked.
 */
static int lock_shared(const kw_wal_options_t *opts, int *fds)
{
    int live = 0;

    for (int i = 0; i < opts->ndirs; i++) {
        char path[4096];

        snprintf(path, sizeof(path), "%s/LOCK", opts->dirs[i]);
        fds[i] = open(path, O_RDONLY | O_CLOEXEC);
        if (fds[i] >= 0 && flock(fds[i], LOCK_SH | LOCK_NB) < 0) {
            live |= errno == EWOULDBLOCK;
            close(fds[i]);
            fds[i] = -1;
        }
    }
    return live;
}

long kw_wal_verify(const kw_wal_options_t *opts, kw_wal_problem_cb cb, void *opaque,
                   int *live_out, char *errstr, size_t errlen)
{
    kw_wal_options_t ro;
    kw_wal_t *w;
    long count = 0;
    int fds[KW_WAL_MAX_REPLICAS], live;
    uint64_t newest = 0;
    kw_err_t err;

    if (opts == NULL || opts->ndirs < 1 || opts->ndirs > KW_WAL_MAX_REPLICAS)
        return -(long)kw_seterr(errstr, errlen, KW_EINVAL, "wal.dirs: need 1 to %d "
                                "replica directories", KW_WAL_MAX_REPLICAS);
    ro = *opts;
    ro.read_only = 1;
    live = lock_shared(opts, fds);
    if (live_out != NULL)
        *live_out = live;
    err = kw_wal_open(&ro, &w, NULL, errstr, errlen);
    if (err != KW_OK) {
        count = -(long)err;
        goto unlock;
    }
    if (w->nsegs > 0)
        newest = w->segs[w->nsegs - 1].first_lsn;
    for (int r = 0; r < w->nrep; r++) {
        kw__repscan_t s;
        char why[300];

        if (w->rep[r].failed)
            problem(cb, opaque, &count, r, 0, 0, "replica is failed: %s", w->rep[r].reason);
        if (kw__scan_replica(w->io, r, w->rep[r].dir, w->wal_id, 1, &s, why,
                             sizeof(why)) != KW_OK) {
            problem(cb, opaque, &count, r, 0, 0, "cannot scan: %s", why);
            continue;
        }
        for (size_t k = 0; k < s.nspots; k++) {
            const kw__spot_t *sp = &s.spots[k];

            if (live && sp->seg + 1 >= s.nsegs)
                continue;       /* the segment being written */
            problem(cb, opaque, &count, r, s.segs[sp->seg].first_lsn, sp->offset, "%s%s",
                    sp->what, sp->torn ? " (torn tail of an unclean shutdown: "
                                         "never acknowledged, cut at the next open)" : "");
        }
        if (!w->rep[r].failed) {
            /* Healthy replicas must hold exactly the segments of the log. */
            uint64_t oldest = UINT64_MAX;

            for (size_t i = 0; i < s.nsegs; i++)
                if (s.segs[i].file_bytes > 0 && s.segs[i].first_lsn < oldest)
                    oldest = s.segs[i].first_lsn;
            for (size_t j = 0; j < w->nsegs; j++) {
                const kw__seg_t *g = &w->segs[j];
                const kw__segscan_t *m = NULL;

                if (live && (g->first_lsn == newest || g->first_lsn < oldest))
                    continue;   /* being written, or cleaned since the snapshot */
                for (size_t i = 0; i < s.nsegs; i++)
                    if (s.segs[i].first_lsn == g->first_lsn && s.segs[i].file_bytes > 0)
                        m = &s.segs[i];
                if (m == NULL)
                    problem(cb, opaque, &count, r, g->first_lsn, 0,
                            "segment missing on this replica");
                else if (m->valid_bytes < g->bytes)
                    problem(cb, opaque, &count, r, g->first_lsn, m->valid_bytes,
                            "segment ends at %" PRIu64 " bytes, other replicas have %" PRIu64,
                            m->valid_bytes, g->bytes);
            }
            for (size_t i = 0; i < s.nsegs; i++) {
                int known = 0;

                if (live && s.segs[i].first_lsn > newest)
                    continue;   /* created after the snapshot */
                for (size_t j = 0; j < w->nsegs; j++)
                    known |= w->segs[j].first_lsn == s.segs[i].first_lsn;
                if (!known && s.segs[i].last_lsn >= s.segs[i].first_lsn)
                    problem(cb, opaque, &count, r, s.segs[i].first_lsn, 0,
                            "segment is not on the other replicas");
            }
        }
        kw__repscan_free(&s);
    }
    kw_wal_close(w);
unlock:
    for (int i = 0; i < opts->ndirs; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    return count;
}

/* Delete every segment file (and leftover *.tmp) in replica r's directory. */
static int clear_segments(kw_wal_t *w, int r)
{
    uint64_t *firsts;
    size_t n;

    if (kw__list_segments(w->rep[r].dir, &firsts, &n) < 0)
        return -1;
    for (size_t j = 0; j < n; j++) {
        char name[KW__SEG_NAME_LEN + 1], path[4096];

        kw__seg_name(firsts[j], name, sizeof(name));
        snprintf(path, sizeof(path), "%s/%s", w->rep[r].dir, name);
        if (w->io->unlink(w->io->ctx, r, path) < 0 && errno != ENOENT) {
            free(firsts);
            return -1;
        }
    }
    free(firsts);
    return kw__fsync_dir(w->io, r, w->rep[r].dir);
}

kw_err_t kw_wal_repair(const kw_wal_options_t *opts, int replica,
                       uint64_t *copied_bytes, char *errstr, size_t errlen)
{
    kw_wal_t *w;
    kw_err_t err;
    uint64_t copied = 0;
    int src = -1;

    if (copied_bytes != NULL)
        *copied_bytes = 0;
    if (opts == NULL || replica < 0 || replica >= opts->ndirs)
        return kw_seterr(errstr, errlen, KW_EINVAL, "replica %d is not one of the %d in wal.dirs",
                         replica, opts ? opts->ndirs : 0);
    if (opts->read_only)
        return kw_seterr(errstr, errlen, KW_EINVAL, "repair needs a writable WAL");
    /* No I/O threads: repair is the only writer, and STATE is written once,
     * at the end, by this thread alone. */
    err = kw__open(opts, 0, &w, NULL, errstr, errlen);
    if (err != KW_OK)
        return err;
    pthread_mutex_lock(&w->mu);
    for (int i = 0; i < w->nrep && src < 0; i++)
        if (i != replica && !w->rep[i].failed)
            src = i;
    pthread_mutex_unlock(&w->mu);
    if (src < 0) {
        err = kw_seterr(errstr, errlen, KW_EQUORUM,
                        "no healthy replica other than %d to copy from", replica);
        goto out;
    }
    if (w->rep[replica].lock_fd < 0) {
        err = kw_seterr(errstr, errlen, KW_EIO, "replica %d (%s) cannot be opened: %s",
                        replica, w->rep[replica].dir, w->rep[replica].reason);
        goto out;
    }
    KW_LOG_I(MOD, "repairing replica %d (%s) from replica %d (%s)", replica,
             w->rep[replica].dir, src, w->rep[src].dir);
    pthread_mutex_lock(&w->mu);
    if (!w->rep[replica].failed)
        kw__replica_fail(w, replica, "being repaired");
    pthread_mutex_unlock(&w->mu);
    if (clear_segments(w, replica) < 0) {
        err = kw_seterr(errstr, errlen, KW_EIO, "clearing %s: %s", w->rep[replica].dir,
                        strerror(errno));
        goto out;
    }
    for (size_t j = 0; j < w->nsegs; j++) {
        char name[KW__SEG_NAME_LEN + 1], tmp[KW__SEG_NAME_LEN + 8], from[4096], to[4096];

        kw__seg_name(w->segs[j].first_lsn, name, sizeof(name));
        snprintf(tmp, sizeof(tmp), "%s.tmp", name);
        snprintf(from, sizeof(from), "%s/%s", w->rep[replica].dir, tmp);
        snprintf(to, sizeof(to), "%s/%s", w->rep[replica].dir, name);
        if (kw__copy_range(w, src, replica, name, tmp, 0, w->segs[j].bytes, 1) < 0 ||
            w->io->rename(w->io->ctx, replica, from, to) < 0) {
            err = kw_seterr(errstr, errlen, KW_EIO, "copying %s to %s: %s", name,
                            w->rep[replica].dir, strerror(errno));
            goto out;
        }
        copied += w->segs[j].bytes;
    }
    if (kw__fsync_dir(w->io, replica, w->rep[replica].dir) < 0) {
        err = kw_seterr(errstr, errlen, KW_EIO, "fsync of %s: %s", w->rep[replica].dir,
                        strerror(errno));
        goto out;
    }
    pthread_mutex_lock(&w->mu);
    w->rep[replica].failed = 0;
    w->rep[replica].reason[0] = '\0';
    w->rep[replica].done_lsn = w->durable_lsn;
    pthread_mutex_unlock(&w->mu);
    err = kw__persist_states(w, errstr, errlen);
    if (err == KW_OK && w->rep[replica].failed)
        err = kw_seterr(errstr, errlen, KW_EIO, "replica %d: %s", replica,
                        w->rep[replica].reason);
    if (err == KW_OK)
        KW_LOG_I(MOD, "replica %d repaired: %" PRIu64 " bytes in %zu segments copied",
                 replica, copied, w->nsegs);
out:
    /* The repaired replica has no I/O thread in this handle: mark it so close
     * does not wait for one. */
    kw_wal_close(w);
    if (copied_bytes != NULL)
        *copied_bytes = copied;
    return err;
}
