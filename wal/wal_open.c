/*
 * wal_open.c -- opening a WAL: the open and recovery algorithm of
 * wal/FORMAT.md, steps 1 to 8.
 *
 *   lock_replicas()      step 1: LOCK every replica directory, drop *.tmp
 *   load_states()        step 2: STATE files, WAL identity, failed replicas
 *   kw__scan_replica()   step 3: every segment, record by record
 *   classify()           steps 4-5: torn tails vs corruption in the middle
 *   reconcile()          step 6: align every healthy replica on the source
 *   kw__open_replicas()  steps 7-8: the segment table, STATE, the report
 *
 * A scan reads a whole segment file into memory and checks it there; bad spots
 * are resynchronised by searching for the next record magic, so one damaged
 * record never hides the rest of a segment. Only records valid by the rule of
 * FORMAT.md count; everything else is reported.
 */
#include "wal_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kw_log.h"
#include "wal_scan.h"

#define MOD "wal"

/* ---- Record checks ---- */

/* FORMAT.md "Valid record" rules 1-4 for a record whose header is hdr and
 * whose stored payload would be payload[0..avail). */


/* ---- Scanning one replica (step 3) ---- */

static int spot_push(kw__repscan_t *s, const kw__spot_t *sp)
{
    kw__spot_t *n = realloc(s->spots, (s->nspots + 1) * sizeof(*n));

    if (n == NULL)
        return -1;
    s->spots = n;
    s->spots[s->nspots++] = *sp;
    return 0;
}

void kw__repscan_free(kw__repscan_t *s)
{
    free(s->segs);
    free(s->spots);
    memset(s, 0, sizeof(*s));
}

/* Read a whole file through the table. *buf malloc'd. */
static int read_whole(const kw_wal_io_t *io, int r, const char *path,
                      uint8_t **buf, uint64_t *len)
{
    struct stat st;
    int fd = io->open(io->ctx, r, path, O_RDONLY, 0), saved;
    ssize_t n;

    *buf = NULL;
    if (fd < 0)
        return -1;
    if (fstat(fd, &st) < 0)
        goto fail;
    *buf = malloc((size_t)st.st_size + 1);
    if (*buf == NULL) {
        errno = ENOMEM;
        goto fail;
    }
    n = kw__pread_full(io, r, fd, *buf, (size_t)st.st_size, 0);
    if (n < 0)
        goto fail;
    *len = (uint64_t)n;
    io->close(io->ctx, r, fd);
    return 0;

fail:
    saved = errno;
    free(*buf);
    *buf = NULL;
    io->close(io->ctx, r, fd);
    errno = saved;
    return -1;
}

/*
 * From offset `from`, find the next valid record with an LSN above `after`.
 * Returns its offset or UINT64_MAX.
 */
static uint64_t resync(const uint8_t *buf, uint64_t len, uint64_t from, uint64_t after,
                       kw__rec_hdr_t *h)
{
    static const uint8_t magic[4] = { 0x4B, 0x57, 0x52, 0x31 };
    char what[8];

    for (uint64_t off = from; off + KW__REC_HDR_SIZE <= len; off++) {
        const uint8_t *p = memmem(buf + off, len - off, magic, sizeof(magic));

        if (p == NULL)
            break;
        off = (uint64_t)(p - buf);
        if (off + KW__REC_HDR_SIZE > len)
            break;
        if (kw__rec_check(buf + off, buf + off + KW__REC_HDR_SIZE,
                      len - off - KW__REC_HDR_SIZE, 0, h, what, sizeof(what)) == 0 &&
            h->lsn > after)
            return off;
    }
    return UINT64_MAX;
}

/*
 * The torn-tail rule of FORMAT.md: the damage at `bad` lies within the last
 * write batch when, among the valid records after it, at most one carries
 * BATCH_END and, if one does, it is the last of them.
 */
static int is_torn_tail(const uint8_t *buf, uint64_t len, uint64_t bad, uint64_t expect)
{
    uint64_t off = bad + 1, after = expect - 1;
    int ends = 0, last_is_end = 0;
    kw__rec_hdr_t h;

    for (;;) {
        uint64_t at = resync(buf, len, off, after, &h);

        if (at == UINT64_MAX)
            break;
        last_is_end = (h.flags & KW__REC_FLAG_BATCH_END) != 0;
        ends += last_is_end;
        after = h.lsn;
        off = at + KW__REC_HDR_SIZE + h.length;
    }
    return ends == 0 || (ends == 1 && last_is_end);
}

/* Scan one segment file that is in memory. */
static int scan_segment(kw__repscan_t *s, size_t j, const uint8_t *buf, uint64_t len,
                        const uint8_t *wal_id, int last, int check_lz4, uint64_t *expect)
{
    kw__segscan_t *sg = &s->segs[j];
    kw__seg_hdr_t sh;
    uint64_t off = KW__SEG_HDR_SIZE;
    char what[160];

    sg->file_bytes = len;
    sg->last_lsn = sg->first_lsn - 1;
    sg->valid_bytes = 0;
    if (len < KW__SEG_HDR_SIZE || kw__seg_hdr_decode(buf, &sh) < 0 ||
        memcmp(sh.wal_id, wal_id, KW__WAL_ID_LEN) != 0 || sh.first_lsn != sg->first_lsn) {
        kw__spot_t sp = { j, 0, sg->first_lsn, UINT64_MAX, 0, 0, KW__SPOT_HEADER, "" };

        snprintf(sp.what, sizeof(sp.what), "%s",
                 len < KW__SEG_HDR_SIZE ? "segment header cut short"
                 : kw__seg_hdr_decode(buf, &sh) < 0 ? "bad segment header"
                 : memcmp(sh.wal_id, wal_id, KW__WAL_ID_LEN) != 0
                     ? "segment belongs to another WAL"
                     : "segment header names another first LSN");
        sg->header_ok = 0;
        if (last) {
            kw__rec_hdr_t h;
            /* A crash during a roll leaves a last segment with no records. */
            sp.torn = resync(buf, len, 0, 0, &h) == UINT64_MAX;
        }
        return spot_push(s, &sp);
    }
    sg->header_ok = 1;
    sg->created_ms = sh.created_ms;
    if (*expect != 0 && sg->first_lsn != *expect) {
        kw__spot_t sp = { j, 0, *expect, UINT64_MAX, 0, 0, KW__SPOT_GAP, "" };

        snprintf(sp.what, sizeof(sp.what), "LSNs %" PRIu64 "..%" PRIu64
                 " are missing before this segment", *expect, sg->first_lsn - 1);
        if (spot_push(s, &sp) < 0)
            return -1;
    }
    *expect = sg->first_lsn;
    sg->valid_bytes = KW__SEG_HDR_SIZE;
    while (off < len) {
        kw__rec_hdr_t h;
        int ok = off + KW__REC_HDR_SIZE <= len &&
                 kw__rec_check(buf + off, buf + off + KW__REC_HDR_SIZE,
                           len - off - KW__REC_HDR_SIZE, *expect, &h, what, sizeof(what)) == 0;

        if (!ok && off + KW__REC_HDR_SIZE > len)
            snprintf(what, sizeof(what), "record header cut short");
        if (ok && check_lz4 && (h.flags & KW__REC_FLAG_LZ4)) {
            ok = kw__lz4_check(buf + off + KW__REC_HDR_SIZE, h.length, h.raw_length);
            if (!ok)
                snprintf(what, sizeof(what), "LZ4 payload of LSN %" PRIu64
                         " does not decompress to %u bytes", h.lsn, h.raw_length);
        }
        if (ok) {
            s->records++;
            sg->last_lsn = h.lsn;
            off += KW__REC_HDR_SIZE + h.length;
            sg->valid_bytes = off;
            (*expect)++;
            continue;
        }
        {
            kw__spot_t sp = { j, off, *expect, UINT64_MAX, 0, 0, KW__SPOT_RECORD, "" };
            uint64_t at;

            snprintf(sp.what, sizeof(sp.what), "%s", what);
            sp.torn = last && is_torn_tail(buf, len, off, *expect);
            if (sp.torn) {
                sp.resume_lsn = 0;
                return spot_push(s, &sp);
            }
            at = resync(buf, len, off + 1, *expect - 1, &h);
            sp.resume_off = at;
            sp.resume_lsn = at == UINT64_MAX ? 0 : h.lsn;
            if (spot_push(s, &sp) < 0)
                return -1;
            if (at == UINT64_MAX) {
                *expect = 0;   /* the rest of the segment is unreadable here; the
                                * spot stands for it, the next segment goes on */
                return 0;
            }
            off = at;
            *expect = h.lsn;
        }
    }
    return 0;
}

kw_err_t kw__scan_replica(const kw_wal_io_t *io, int r, const char *dir,
                          const uint8_t *wal_id, int check_lz4, kw__repscan_t *s,
                          char *errstr, size_t errlen)
{
    uint64_t *firsts = NULL, expect = 0;
    size_t n = 0;

    memset(s, 0, sizeof(*s));
    if (kw__list_segments(dir, &firsts, &n) < 0)
        return kw_seterr(errstr, errlen, KW_EIO, "cannot list %s: %s", dir, strerror(errno));
    s->segs = calloc(n ? n : 1, sizeof(*s->segs));
    if (s->segs == NULL) {
        free(firsts);
        return kw_seterr(errstr, errlen, KW_ENOMEM, "out of memory");
    }
    s->nsegs = n;
    for (size_t j = 0; j < n; j++) {
        char path[4096], name[KW__SEG_NAME_LEN + 1];
        uint8_t *buf;
        uint64_t len;
        int rc;

        s->segs[j].first_lsn = firsts[j];
        kw__seg_name(firsts[j], name, sizeof(name));
        snprintf(path, sizeof(path), "%s/%s", dir, name);
        if (read_whole(io, r, path, &buf, &len) < 0) {
            kw_err_t e;

            if (errno == ENOENT) {       /* cleaned since the listing */
                s->segs[j].file_bytes = 0;
                s->segs[j].last_lsn = firsts[j] - 1;
                continue;
            }
            e = kw_seterr(errstr, errlen, KW_EIO, "cannot read %s: %s", path,
                                   strerror(errno));
            free(firsts);
            kw__repscan_free(s);
            return e;
        }
        rc = scan_segment(s, j, buf, len, wal_id, j + 1 == n, check_lz4, &expect);
        free(buf);
        if (rc < 0) {
            free(firsts);
            kw__repscan_free(s);
            return kw_seterr(errstr, errlen, KW_ENOMEM, "out of memory");
        }
    }
    free(firsts);
    s->last_lsn = 0;
    for (size_t j = n; j-- > 0;)
        if (s->segs[j].last_lsn >= s->segs[j].first_lsn) {
            s->last_lsn = s->segs[j].last_lsn;
            break;
        }
    return KW_OK;
}

/* ---- Step 1: locks ---- */

/* mkdir -p with mode 0700, fsyncing each parent that got a new entry. */
static int mkdir_p(kw_wal_t *w, int r, const char *dir)
{
    char path[4096];
    size_t len = strlen(dir);

    if (len == 0 || len >= sizeof(path)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(path, dir, len + 1);
    for (size_t k = 1; k <= len; k++) {
        if (path[k] != '/' && path[k] != '\0')
            continue;
        path[k] = '\0';
        if (w->io->mkdir(w->io->ctx, r, path, 0700) == 0) {
            char *slash = strrchr(path, '/');
            char parent[4096];

            if (slash == NULL || slash == path)
                snprintf(parent, sizeof(parent), "%s", slash == path ? "/" : ".");
            else
                snprintf(parent, sizeof(parent), "%.*s", (int)(slash - path), path);
            if (kw__fsync_dir(w->io, r, parent) < 0)
                return -1;
        } else if (errno != EEXIST) {
            return -1;
        }
        if (k < len)
            path[k] = '/';
    }
    return 0;
}

static kw_err_t lock_replica(kw_wal_t *w, int i, char *errstr, size_t errlen)
{
    kw__replica_t *r = &w->rep[i];
    char path[4096], pid[32];
    struct stat st;
    DIR *d;
    struct dirent *de;
    int n;

    if (stat(r->dir, &st) < 0) {
        if (errno != ENOENT || mkdir_p(w, i, r->dir) < 0) {
            kw__replica_fail(w, i, "cannot create directory %s: %s", r->dir, strerror(errno));
            return KW_OK;
        }
    } else if (!S_ISDIR(st.st_mode)) {
        return kw_seterr(errstr, errlen, KW_EINVAL, "%s is not a directory", r->dir);
    }
    snprintf(path, sizeof(path), "%s/LOCK", r->dir);
    r->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (r->lock_fd < 0) {
        kw__replica_fail(w, i, "cannot open %s: %s", path, strerror(errno));
        return KW_OK;
    }
    if (flock(r->lock_fd, LOCK_EX | LOCK_NB) < 0) {
        char holder[32] = "";
        int saved = errno;
        ssize_t k = pread(r->lock_fd, holder, sizeof(holder) - 1, 0);

        holder[k > 0 ? k : 0] = '\0';
        holder[strcspn(holder, "\n")] = '\0';
        close(r->lock_fd);
        r->lock_fd = -1;
        if (saved != EWOULDBLOCK) {
            kw__replica_fail(w, i, "cannot lock %s: %s", path, strerror(saved));
            return KW_OK;
        }
        return kw_seterr(errstr, errlen, KW_ELOCKED,
                         "WAL directory %s is in use by another process%s%s%s",
                         r->dir, holder[0] ? " (pid " : "", holder, holder[0] ? ")" : "");
    }
    n = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
    if (ftruncate(r->lock_fd, 0) < 0 || pwrite(r->lock_fd, pid, (size_t)n, 0) != n)
        KW_LOG_W(MOD, "cannot write pid to %s: %s", path, strerror(errno));
    d = opendir(r->dir);
    while (d != NULL && (de = readdir(d)) != NULL) {
        size_t len = strlen(de->d_name);

        if (len > 4 && strcmp(de->d_name + len - 4, ".tmp") == 0) {
            snprintf(path, sizeof(path), "%s/%s", r->dir, de->d_name);
            if (w->io->unlink(w->io->ctx, i, path) == 0)
                KW_LOG_I(MOD, "removed leftover %s", path);
        }
    }
    if (d != NULL)
        closedir(d);
    return KW_OK;
}


/* ---- Step 2: STATE ---- */


static uint64_t random_u64(void)
{
    uint64_t v = 0;

    while (getrandom(&v, sizeof(v), 0) != sizeof(v))
        ;
    return v ? v : 1;
}

/* 1 if dir holds at least one segment file. */
static int has_segments(const char *dir)
{
    uint64_t *v;
    size_t n = 0;

    if (kw__list_segments(dir, &v, &n) < 0)
        return 0;
    free(v);
    return n > 0;
}

static kw_err_t load_states(kw_wal_t *w, kw_wal_open_report_t *rep, char *errstr,
                            size_t errlen)
{
    kw__state_t st[KW_WAL_MAX_REPLICAS];
    int have[KW_WAL_MAX_REPLICAS] = { 0 }, best = -1;

    for (int i = 0; i < w->nrep; i++) {
        char path[4096], buf[4096], why[160];
        ssize_t n;

        if (w->rep[i].failed)
            continue;
        snprintf(path, sizeof(path), "%s/STATE", w->rep[i].dir);
        n = kw__read_small_file(w->io, i, path, buf, sizeof(buf));
        if (n < 0) {
            if (errno != ENOENT)
                kw__replica_fail(w, i, "cannot read %s: %s", path, strerror(errno));
            continue;
        }
        if (kw__state_parse(buf, (size_t)n, &st[i], why, sizeof(why)) != KW_OK)
            return kw_seterr(errstr, errlen, KW_ECORRUPT, "%s: %s", path, why);
        have[i] = 1;
        if (best >= 0 && memcmp(st[i].wal_id, st[best].wal_id, KW__WAL_ID_LEN) != 0)
            return kw_seterr(errstr, errlen, KW_EFOREIGN,
                             "%s and %s belong to different WALs (wal_id differs): "
                             "a replica directory of another WAL is listed in wal.dirs",
                             w->rep[best].dir, w->rep[i].dir);
        if (best < 0 || st[i].generation > st[best].generation)
            best = i;
    }
    if (best < 0) {
        for (int i = 0; i < w->nrep; i++)
            if (!w->rep[i].failed && has_segments(w->rep[i].dir))
                return kw_seterr(errstr, errlen, KW_ECORRUPT,
                                 "%s holds segments but no replica has a STATE file",
                                 w->rep[i].dir);
        if (w->opts.read_only)
            return kw_seterr(errstr, errlen, KW_ENOTFOUND, "no WAL in %s", w->rep[0].dir);
        /* A new WAL. */
        for (int k = 0; k < KW__WAL_ID_LEN; k += 8) {
            uint64_t v = random_u64();
            memcpy(w->wal_id + k, &v, 8);
        }
        for (int i = 0; i < w->nrep; i++)
            w->rep[i].id = random_u64();
        w->generation = 0;
        rep->created = 1;
        return KW_OK;
    }
    memcpy(w->wal_id, st[best].wal_id, KW__WAL_ID_LEN);
    w->generation = st[best].generation;
    for (int i = 0; i < w->nrep; i++) {
        if (have[i]) {
            w->rep[i].id = st[i].replica_id;
            if (!w->rep[i].failed &&
                kw__state_is_failed(&st[best], st[i].replica_id, w->rep[i].dir))
                kw__replica_fail(w, i, "marked failed in STATE (generation %" PRIu64
                                 "); run `kwal wal repair`", st[best].generation);
        } else {
            w->rep[i].id = random_u64();
            if (!w->rep[i].failed && kw__state_is_failed(&st[best], 0, w->rep[i].dir))
                kw__replica_fail(w, i, "marked failed in STATE (generation %" PRIu64
                                 "); run `kwal wal repair`", st[best].generation);
            else if (!w->rep[i].failed)
                kw__replica_fail(w, i, "%s", has_segments(w->rep[i].dir)
                                 ? "holds segments but no STATE file; run `kwal wal repair`"
                                 : "new replica with no data yet; run `kwal wal repair`");
        }
    }
    return KW_OK;
}

/* ---- Steps 4-5: classify bad spots ---- */

/* 1 when replica q holds valid records for LSNs [sp->expect, sp->resume_lsn)
 * starting at the spot's offset -- or, when the scan found nothing valid after
 * the spot, valid records from there to the end of q's copy of the segment. */
static int peer_covers(kw_wal_t *w, int q, uint64_t segment, const kw__spot_t *sp)
{
    char path[4096], name[KW__SEG_NAME_LEN + 1], what[160];
    uint64_t off = sp->offset, lsn = sp->expect, end;
    struct stat st;
    int fd, ok = 1;

    kw__seg_name(segment, name, sizeof(name));
    snprintf(path, sizeof(path), "%s/%s", w->rep[q].dir, name);
    fd = w->io->open(w->io->ctx, q, path, O_RDONLY, 0);
    if (fd < 0)
        return 0;
    if (fstat(fd, &st) < 0) {
        w->io->close(w->io->ctx, q, fd);
        return 0;
    }
    end = sp->resume_lsn != 0 ? sp->resume_off : (uint64_t)st.st_size;
    while (ok && off < end) {
        kw__rec_hdr_t h;

        ok = kw__read_record(w->io, q, fd, off, (uint64_t)st.st_size, lsn, &h, NULL,
                             what, sizeof(what)) == 0;
        if (ok) {
            off += KW__REC_HDR_SIZE + h.length;
            lsn++;
        }
    }
    w->io->close(w->io->ctx, q, fd);
    if (sp->resume_lsn != 0)
        return ok && off == sp->resume_off && lsn == sp->resume_lsn;
    return ok && off == end && lsn > sp->expect;
}

static int truncate_segment(kw_wal_t *w, int r, uint64_t segment, uint64_t len)
{
    char path[4096], name[KW__SEG_NAME_LEN + 1];
    int fd, rc, saved;

    kw__seg_name(segment, name, sizeof(name));
    snprintf(path, sizeof(path), "%s/%s", w->rep[r].dir, name);
    if (len <= KW__SEG_HDR_SIZE) {          /* nothing valid left: drop it */
        if (w->io->unlink(w->io->ctx, r, path) < 0 && errno != ENOENT)
            return -1;
        return kw__fsync_dir(w->io, r, w->rep[r].dir);
    }
    fd = w->io->open(w->io->ctx, r, path, O_WRONLY, 0);
    if (fd < 0)
        return -1;
    rc = w->io->ftruncate(w->io->ctx, r, fd, (off_t)len);
    if (rc == 0)
        rc = w->io->fdatasync(w->io->ctx, r, fd);
    saved = errno;
    w->io->close(w->io->ctx, r, fd);
    errno = saved;
    return rc;
}

/* ---- skip_lost: LOST placeholders ---- */

/* Write LOST placeholders for LSNs [from, to] at offset off of replica r's
 * segment. span > 0: they fill exactly span bytes (the last one takes the
 * slack), so every later record stays where it is; span 0: the segment is
 * cut at off and the placeholders (header only) end it. The bytes depend
 * only on the arguments, so replicas damaged alike get identical copies.
 * Returns the bytes written, or -1 with errno set. */
static int64_t write_lost(kw_wal_t *w, int r, uint64_t segment, uint64_t off,
                          uint64_t span, uint64_t from, uint64_t to)
{
    char path[4096], name[KW__SEG_NAME_LEN + 1];
    uint64_t n = to - from + 1, total = span ? span : n * KW__REC_HDR_SIZE, p = 0;
    uint8_t *buf;
    int fd, rc = -1, saved;

    if (to < from || total < n * KW__REC_HDR_SIZE ||
        total - n * KW__REC_HDR_SIZE > KW_WAL_MAX_RECORD) {
        errno = EINVAL;
        return -1;
    }
    if ((buf = calloc(1, total)) == NULL)
        return -1;
    for (uint64_t lsn = from; lsn <= to; lsn++) {
        kw__rec_hdr_t h;

        memset(&h, 0, sizeof(h));
        h.type = KW__REC_TYPE_LOST;
        h.lsn = lsn;
        h.length = h.raw_length = (uint32_t)(lsn == to ? total - p - KW__REC_HDR_SIZE : 0);
        h.flags = span == 0 && lsn == to ? KW__REC_FLAG_BATCH_END : 0;
        kw__rec_hdr_encode(&h, kw__payload_hash(buf + p + KW__REC_HDR_SIZE, h.length),
                           buf + p);
        p += KW__REC_HDR_SIZE + h.length;
    }
    kw__seg_name(segment, name, sizeof(name));
    snprintf(path, sizeof(path), "%s/%s", w->rep[r].dir, name);
    fd = w->io->open(w->io->ctx, r, path, O_WRONLY, 0);
    if (fd >= 0) {
        rc = span == 0 ? w->io->ftruncate(w->io->ctx, r, fd, (off_t)off) : 0;
        if (rc == 0)
            rc = kw__pwrite_full(w->io, r, fd, buf, total, (off_t)off);
        if (rc == 0)
            rc = w->io->fdatasync(w->io->ctx, r, fd);
        saved = errno;
        w->io->close(w->io->ctx, r, fd);
        errno = saved;
    }
    saved = errno;
    free(buf);
    errno = saved;
    return rc == 0 ? (int64_t)total : -1;
}

/* Note LSNs [from, to] as given up in the report (replicas damaged alike
 * give up the same LSNs: counted once). */
static void report_lost(kw_wal_open_report_t *rep, uint64_t from, uint64_t to)
{
    for (int i = 0; i < rep->nlost; i++)
        if (from <= rep->lost[i].to + 1 && to + 1 >= rep->lost[i].from) {
            uint64_t nf = from < rep->lost[i].from ? from : rep->lost[i].from;
            uint64_t nt = to > rep->lost[i].to ? to : rep->lost[i].to;

            rep->lost_records += (nt - nf) - (rep->lost[i].to - rep->lost[i].from);
            rep->lost[i].from = nf;
            rep->lost[i].to = nt;
            return;
        }
    if (rep->nlost < (int)(sizeof(rep->lost) / sizeof(rep->lost[0]))) {
        rep->lost[rep->nlost].from = from;
        rep->lost[rep->nlost].to = to;
        rep->nlost++;
    }
    rep->lost_records += to - from + 1;
}

/*
 * Give up LSNs [sp->expect, to] that no replica can serve on replica r
 * (skip_lost): placeholders over the spot -- exactly its span when a valid
 * record follows it, else in place of the rest of the segment. 0 when done
 * (the scan is updated to match), -1 when the spot cannot be given up that
 * way (errstr says why).
 */
static int give_up(kw_wal_t *w, kw__repscan_t *s, int r, const kw__spot_t *sp, uint64_t to,
                   kw_wal_open_report_t *rep, char *errstr, size_t errlen)
{
    kw__segscan_t *sg = &s->segs[sp->seg];
    uint64_t span = sp->resume_lsn != 0 ? sp->resume_off - sp->offset : 0;
    char name[KW__SEG_NAME_LEN + 1];
    int64_t wrote;

    kw__seg_name(sg->first_lsn, name, sizeof(name));
    if (sp->kind != KW__SPOT_RECORD || to < sp->expect) {
        kw_seterr(errstr, errlen, KW_ECORRUPT, "replica %d (%s) segment %s offset %"
                  PRIu64 ": %s; cannot be given up (only damaged records can, not a "
                  "lost segment header or missing LSNs)", r, w->rep[r].dir, name,
                  sp->offset, sp->what);
        return -1;
    }
    wrote = write_lost(w, r, sg->first_lsn, sp->offset, span, sp->expect, to);
    if (wrote < 0) {
        kw_seterr(errstr, errlen, KW_EIO, "replica %d (%s) segment %s offset %" PRIu64
                  ": writing LOST placeholders for LSN %" PRIu64 "..%" PRIu64 ": %s",
                  r, w->rep[r].dir, name, sp->offset, sp->expect, to, strerror(errno));
        return -1;
    }
    KW_LOG_E(MOD, "replica %d (%s) segment %s offset %" PRIu64 ": %s; LSN %" PRIu64
             "..%" PRIu64 " given up as asked (skip): replaced by LOST placeholders",
             r, w->rep[r].dir, name, sp->offset, sp->what, sp->expect, to);
    report_lost(rep, sp->expect, to);
    s->records += to - sp->expect + 1;
    if (span == 0) {
        sg->file_bytes = sg->valid_bytes = sp->offset + (uint64_t)wrote;
        sg->last_lsn = to;
        for (size_t j = s->nsegs; j-- > 0;)
            if (s->segs[j].file_bytes > KW__SEG_HDR_SIZE &&
                s->segs[j].last_lsn >= s->segs[j].first_lsn) {
                s->last_lsn = s->segs[j].last_lsn;
                break;
            }
    }
    return 0;
}

/* 1 when cutting torn spot sp of replica r would cut an LSN that was
 * acknowledged and is still needed: [needed_lsn, acked_lsn] meets the LSNs
 * the cut covers. Segment boundaries are the same on every replica, so the
 * next segment any replica holds bounds this one (a header spot's segment
 * holds nothing readable to say where it ends). */
static uint64_t seg_end(kw_wal_t *w, const kw__repscan_t *scans, int r, uint64_t first)
{
    uint64_t to = UINT64_MAX;

    for (int q = 0; q < w->nrep; q++) {
        if (q != r && w->rep[q].failed)
            continue;
        for (size_t j = 0; j < scans[q].nsegs; j++)
            if (scans[q].segs[j].first_lsn > first && scans[q].segs[j].first_lsn - 1 < to)
                to = scans[q].segs[j].first_lsn - 1;
    }
    return to;
}

/* The last acknowledged LSN of segment `first`: what a torn spot of replica
 * r there must find elsewhere before it may be cut. */
static uint64_t acked_end(kw_wal_t *w, const kw__repscan_t *scans, int r, uint64_t first)
{
    uint64_t to = seg_end(w, scans, r, first);

    return to < w->opts.acked_lsn ? to : w->opts.acked_lsn;
}

/* 1 when replica q's scan has segment `first` with a good header and valid
 * records one after another from its start through LSN `to` (its own torn
 * tail, after that, does not matter: it was never acknowledged). */
static int peer_holds(kw_wal_t *w, const kw__repscan_t *scans, int q, uint64_t first,
                      uint64_t to)
{
    const kw__repscan_t *s = &scans[q];
    uint64_t valid_to;
    size_t j = 0;

    if (w->rep[q].failed)
        return 0;
    while (j < s->nsegs && s->segs[j].first_lsn != first)
        j++;
    if (j == s->nsegs || !s->segs[j].header_ok)
        return 0;
    valid_to = s->segs[j].last_lsn;
    for (size_t k = 0; k < s->nspots; k++)
        if (s->spots[k].seg == j && s->spots[k].expect - 1 < valid_to)
            valid_to = s->spots[k].expect - 1;
    return valid_to >= to;
}

static int cuts_acked(kw_wal_t *w, const kw__repscan_t *scans, int r, const kw__spot_t *sp)
{
    const kw__segscan_t *sg = &scans[r].segs[sp->seg];
    uint64_t from = sp->kind == KW__SPOT_HEADER ? sg->first_lsn : sp->expect;
    uint64_t to = seg_end(w, scans, r, sg->first_lsn);

    if (from < w->opts.needed_lsn)
        from = w->opts.needed_lsn;
    if (to > w->opts.acked_lsn)
        to = w->opts.acked_lsn;
    return from <= to;
}

static kw_err_t classify(kw_wal_t *w, kw__repscan_t *scans, kw_wal_open_report_t *rep,
                         char *errstr, size_t errlen)
{
    for (int r = 0; r < w->nrep; r++) {
        kw__repscan_t *s = &scans[r];

        if (w->rep[r].failed)
            continue;
        for (size_t k = 0; k < s->nspots; k++) {
            kw__spot_t *sp = &s->spots[k];
            kw__segscan_t *sg = &s->segs[sp->seg];
            char name[KW__SEG_NAME_LEN + 1];
            int covered = 0;

            kw__seg_name(sg->first_lsn, name, sizeof(name));
            if (sp->torn && !w->opts.read_only && cuts_acked(w, scans, r, sp)) {
                /* acknowledged: on the quorum once, so not a torn write --
                 * unless this replica lagged and a peer has the records */
                kw__spot_t probe = *sp;
                int good = 0;

                if (sp->kind == KW__SPOT_HEADER) {
                    /* a segment this replica began but never wrote a header
                     * to: a peer must hold the segment's records */
                    probe.kind = KW__SPOT_RECORD;
                    probe.offset = KW__SEG_HDR_SIZE;
                    probe.expect = sg->first_lsn;
                    probe.resume_off = UINT64_MAX;
                    probe.resume_lsn = 0;
                }
                for (int q = 0; q < w->nrep && !good; q++)
                    good = q != r && !w->rep[q].failed &&
                           (peer_holds(w, scans, q, sg->first_lsn,
                                       acked_end(w, scans, r, sg->first_lsn)) ||
                            (probe.kind == KW__SPOT_RECORD &&
                             peer_covers(w, q, sg->first_lsn, &probe)));
                if (!good && w->opts.skip_lost) {
                    uint64_t to = seg_end(w, scans, r, sg->first_lsn);

                    if (give_up(w, s, r, sp, to < w->opts.acked_lsn ? to : w->opts.acked_lsn,
                                rep, errstr, errlen) < 0) {
                        rep->corrupt_lsn = sp->expect;
                        return KW_ECORRUPT;
                    }
                    break;      /* the placeholders end the replica's log */
                }
                if (!good) {
                    rep->corrupt_lsn = sp->expect;
                    return kw_seterr(errstr, errlen, KW_ECORRUPT,
                                     "replica %d (%s) segment %s offset %" PRIu64 ": %s "
                                     "at LSN %" PRIu64 ", which was acknowledged (up to %"
                                     PRIu64 "), and no other replica has a good copy; "
                                     "refusing to cut it as a torn tail", r,
                                     w->rep[r].dir, name, sp->offset, sp->what,
                                     sp->expect, w->opts.acked_lsn);
                }
            }
            if (sp->torn) {
                uint64_t cut = sp->kind == KW__SPOT_HEADER ? 0 : sp->offset;

                KW_LOG_W(MOD, "replica %d (%s) segment %s: torn tail at offset %" PRIu64
                         " (%s), %" PRIu64 " unacknowledged bytes %s",
                         r, w->rep[r].dir, name, sp->offset, sp->what, sg->file_bytes - cut,
                         w->opts.read_only ? "ignored" : "truncated");
                rep->torn_tails++;
                rep->torn_bytes += sg->file_bytes - cut;
                if (!w->opts.read_only && truncate_segment(w, r, sg->first_lsn, cut) < 0)
                    kw__replica_fail(w, r, "truncating torn tail of %s: %s", name,
                                     strerror(errno));
                /* truncate_segment deletes what holds no record: gone. */
                sg->file_bytes = cut > KW__SEG_HDR_SIZE ? cut : 0;
                continue;
            }
            for (int q = 0; q < w->nrep && !covered; q++)
                if (q != r && !w->rep[q].failed && sp->kind == KW__SPOT_RECORD)
                    covered = peer_covers(w, q, sg->first_lsn, sp) ? q + 1 : 0;
            if (covered && sp->seg + 1 == s->nsegs) {
                /* In the last segment: a lagging replica's torn write, or damage
                 * the source will replace. Cut here; reconcile copies the rest. */
                KW_LOG_W(MOD, "replica %d (%s) segment %s offset %" PRIu64 ": %s; cut "
                         "there, the rest is copied from replica %d", r, w->rep[r].dir,
                         name, sp->offset, sp->what, covered - 1);
                rep->torn_tails++;
                rep->torn_bytes += sg->file_bytes - sp->offset;
                if (!w->opts.read_only &&
                    truncate_segment(w, r, sg->first_lsn, sp->offset) < 0)
                    kw__replica_fail(w, r, "truncating %s: %s", name, strerror(errno));
                sg->valid_bytes = sp->offset;
                sg->file_bytes = sp->offset > KW__SEG_HDR_SIZE ? sp->offset : 0;
                sg->last_lsn = sp->expect - 1;
                s->last_lsn = 0;
                for (size_t j = s->nsegs; j-- > 0;)
                    if (s->segs[j].file_bytes > KW__SEG_HDR_SIZE &&
                        s->segs[j].last_lsn >= s->segs[j].first_lsn) {
                        s->last_lsn = s->segs[j].last_lsn;
                        break;
                    }
                break;          /* later spots lie beyond the cut */
            }
            if (covered) {
                KW_LOG_W(MOD, "replica %d (%s) segment %s offset %" PRIu64 ": %s; a good "
                         "copy is on replica %d, reads use it (`kwal wal repair` rebuilds "
                         "this replica)", r, w->rep[r].dir, name, sp->offset, sp->what,
                         covered - 1);
                rep->corrupt_records += sp->resume_lsn ? sp->resume_lsn - sp->expect : 1;
                continue;
            }
            if (sp->kind == KW__SPOT_HEADER) {
                /* Another replica may still have the segment: fail this one. */
                int others = 0;
                for (int q = 0; q < w->nrep; q++)
                    others += q != r && !w->rep[q].failed;
                if (others > 0) {
                    kw__replica_fail(w, r, "segment %s: %s", name, sp->what);
                    break;
                }
            }
            if (w->opts.read_only) {
                KW_LOG_E(MOD, "replica %d (%s) segment %s offset %" PRIu64 ": %s",
                         r, w->rep[r].dir, name, sp->offset, sp->what);
                continue;
            }
            if (w->opts.skip_lost) {
                /* up to the next valid record, or the end of the segment */
                uint64_t to = sp->resume_lsn != 0 ? sp->resume_lsn - 1
                              : sp->seg + 1 < s->nsegs ? s->segs[sp->seg + 1].first_lsn - 1
                              : 0;

                if (give_up(w, s, r, sp, to, rep, errstr, errlen) < 0) {
                    rep->corrupt_lsn = sp->expect;
                    return KW_ECORRUPT;
                }
                continue;
            }
            rep->corrupt_lsn = sp->expect;
            return kw_seterr(errstr, errlen, KW_ECORRUPT,
                             "replica %d (%s) segment %s offset %" PRIu64 ": %s, and no "
                             "other replica has a good copy (LSN %" PRIu64 "); refusing "
                             "to skip it (see `kwal wal verify`)", r, w->rep[r].dir, name,
                             sp->offset, sp->what, sp->expect);
        }
    }
    return KW_OK;
}

/* ---- Step 6: reconcile ---- */

int kw__copy_range(kw_wal_t *w, int src, int dst, const char *name,
                   const char *dst_name, uint64_t from, uint64_t to, int create)
{
    const kw_wal_io_t *io = w->io;
    char spath[4096], dpath[4096];
    size_t chunk = 1u << 20;
    uint8_t *buf = malloc(chunk);
    int sfd = -1, dfd = -1, rc = -1, saved;

    if (buf == NULL) {
        errno = ENOMEM;
        return -1;
    }
    snprintf(spath, sizeof(spath), "%s/%s", w->rep[src].dir, name);
    snprintf(dpath, sizeof(dpath), "%s/%s", w->rep[dst].dir, dst_name ? dst_name : name);
    sfd = io->open(io->ctx, src, spath, O_RDONLY, 0);
    if (sfd < 0)
        goto out;
    dfd = io->open(io->ctx, dst, dpath, O_WRONLY | (create ? O_CREAT | O_TRUNC : 0), 0600);
    if (dfd < 0)
        goto out;
    if (!create && io->ftruncate(io->ctx, dst, dfd, (off_t)from) < 0)
        goto out;
    for (uint64_t off = from; off < to;) {
        size_t n = to - off < chunk ? (size_t)(to - off) : chunk;
        ssize_t k = kw__pread_full(io, src, sfd, buf, n, (off_t)off);

        if (k < 0)
            goto out;
        if ((size_t)k < n) {
            errno = EIO;
            goto out;
        }
        if (kw__pwrite_full(io, dst, dfd, buf, n, (off_t)off) < 0)
            goto out;
        off += n;
    }
    if (io->fdatasync(io->ctx, dst, dfd) < 0)
        goto out;
    rc = 0;
out:
    saved = errno;
    if (sfd >= 0)
        io->close(io->ctx, src, sfd);
    if (dfd >= 0)
        io->close(io->ctx, dst, dfd);
    free(buf);
    if (rc == 0 && create)
        rc = kw__fsync_dir(io, dst, w->rep[dst].dir);
    else
        errno = saved;
    return rc;
}

static const kw__segscan_t *find_seg(const kw__repscan_t *s, uint64_t first)
{
    for (size_t j = 0; j < s->nsegs; j++)
        if (s->segs[j].first_lsn == first && s->segs[j].file_bytes > 0)
            return &s->segs[j];
    return NULL;
}

/* Valid length of a segment after classify (a torn tail already cut). */
static uint64_t seg_len(const kw__segscan_t *sg)
{
    if (!sg->header_ok)
        return 0;
    return sg->file_bytes < sg->valid_bytes ? sg->file_bytes : sg->valid_bytes;
}

static void reconcile(kw_wal_t *w, kw__repscan_t *scans, int src,
                      kw_wal_open_report_t *rep)
{
    const kw__repscan_t *S = &scans[src];

    for (int q = 0; q < w->nrep; q++) {
        kw__repscan_t *Q = &scans[q];

        if (q == src || w->rep[q].failed)
            continue;
        /* Segments the source does not have: an interrupted cleanup (older) or
         * a tail the source never got (impossible once it is the longest). */
        for (size_t j = 0; j < Q->nsegs; j++) {
            char name[KW__SEG_NAME_LEN + 1], path[4096];

            if (find_seg(S, Q->segs[j].first_lsn) != NULL || Q->segs[j].file_bytes == 0)
                continue;
            kw__seg_name(Q->segs[j].first_lsn, name, sizeof(name));
            snprintf(path, sizeof(path), "%s/%s", w->rep[q].dir, name);
            KW_LOG_I(MOD, "replica %d: removing segment %s, which replica %d no longer has",
                     q, name, src);
            if (w->io->unlink(w->io->ctx, q, path) < 0 && errno != ENOENT) {
                kw__replica_fail(w, q, "reconcile: unlink %s: %s", path, strerror(errno));
                break;
            }
        }
        for (size_t j = 0; j < S->nsegs && !w->rep[q].failed; j++) {
            const kw__segscan_t *ss = &S->segs[j], *qs = find_seg(Q, ss->first_lsn);
            uint64_t want = seg_len(ss), have = qs ? seg_len(qs) : 0;
            char name[KW__SEG_NAME_LEN + 1];

            /* Only ever extend: a replica is never cut to match the source (the
             * source may itself miss a record another replica serves). */
            if (want == 0 || (qs != NULL && have >= want))
                continue;
            kw__seg_name(ss->first_lsn, name, sizeof(name));
            KW_LOG_I(MOD, "replica %d: copying %s bytes %" PRIu64 "..%" PRIu64
                     " from replica %d", q, name, have, want, src);
            if (kw__copy_range(w, src, q, name, NULL, have, want, qs == NULL || have == 0) < 0) {
                kw__replica_fail(w, q, "reconcile: copying %s from replica %d: %s",
                                 name, src, strerror(errno));
                break;
            }
            rep->reconciled_bytes += want - have;
        }
        if (!w->rep[q].failed && kw__fsync_dir(w->io, q, w->rep[q].dir) < 0)
            kw__replica_fail(w, q, "fsync of directory: %s", strerror(errno));
    }
}

/* ---- Steps 7-8 ---- */

kw_err_t kw__persist_states(kw_wal_t *w, char *errstr, size_t errlen)
{
    /* Write the new generation everywhere healthy; a write that fails fails
     * its replica, which changes the failed set: go round again. */
    for (int round = 0; round <= w->nrep; round++) {
        kw__failed_set_t fs;
        uint64_t gen;
        int again = 0;

        pthread_mutex_lock(&w->mu);
        gen = ++w->generation;
        kw__failed_set(w, &fs);
        pthread_mutex_unlock(&w->mu);
        for (int i = 0; i < w->nrep; i++) {
            if (w->rep[i].failed)
                continue;
            if (kw__write_state(w, i, gen, &fs) < 0) {
                pthread_mutex_lock(&w->mu);
                kw__replica_fail(w, i, "writing STATE: %s", strerror(errno));
                pthread_mutex_unlock(&w->mu);
                again = 1;
            }
        }
        if (!again) {
            pthread_mutex_lock(&w->mu);
            for (int i = 0; i < w->nrep; i++)
                if (w->rep[i].state_gen < gen)
                    w->rep[i].state_gen = gen;
            pthread_mutex_unlock(&w->mu);
            return KW_OK;
        }
    }
    return kw_seterr(errstr, errlen, KW_EIO, "cannot write STATE to any replica");
}

kw_err_t kw__open_replicas(kw_wal_t *w, kw_wal_open_report_t *rep,
                           char *errstr, size_t errlen)
{
    kw__repscan_t scans[KW_WAL_MAX_REPLICAS];
    int src = -1;
    kw_err_t err = KW_OK;

    memset(scans, 0, sizeof(scans));
    for (int i = 0; i < w->nrep && !w->opts.read_only; i++) {
        err = lock_replica(w, i, errstr, errlen);
        if (err != KW_OK)
            return err;
    }
    err = load_states(w, rep, errstr, errlen);
    if (err != KW_OK)
        return err;
    for (int i = 0; i < w->nrep; i++) {
        char why[300];

        if (w->rep[i].failed)
            continue;
        if (kw__scan_replica(w->io, i, w->rep[i].dir, w->wal_id, 0, &scans[i], why,
                             sizeof(why)) != KW_OK) {
            kw__replica_fail(w, i, "scan: %s", why);
            continue;
        }
    }
    err = classify(w, scans, rep, errstr, errlen);
    if (err != KW_OK)
        goto out;
    /* The source: the highest last LSN, then the most valid records. */
    for (int i = 0; i < w->nrep; i++)
        if (!w->rep[i].failed &&
            (src < 0 || scans[i].last_lsn > scans[src].last_lsn ||
             (scans[i].last_lsn == scans[src].last_lsn &&
              scans[i].records > scans[src].records)))
            src = i;
    if (src < 0) {
        char why[600] = "";
        size_t n = 0;

        for (int i = 0; i < w->nrep && n < sizeof(why); i++)
            n += (size_t)snprintf(why + n, sizeof(why) - n, "%sreplica %d (%s): %s",
                                  i ? "; " : "", i, w->rep[i].dir, w->rep[i].reason);
        err = kw_seterr(errstr, errlen, KW_EQUORUM, "no usable WAL replica: %s", why);
        goto out;
    } else {
        if (!w->opts.read_only)
            reconcile(w, scans, src, rep);
        for (size_t j = 0; j < scans[src].nsegs; j++) {
            const kw__segscan_t *sg = &scans[src].segs[j];
            kw__seg_t s = { sg->first_lsn, sg->last_lsn, seg_len(sg), sg->created_ms };

            /* The log is the union of what the healthy replicas hold: a record
             * one replica lost is read from another (FORMAT.md step 4). */
            for (int q = 0; q < w->nrep; q++) {
                const kw__segscan_t *qs;

                if (q == src || w->rep[q].failed ||
                    (qs = find_seg(&scans[q], sg->first_lsn)) == NULL)
                    continue;
                if (seg_len(qs) > s.bytes) {
                    s.bytes = seg_len(qs);
                    s.last_lsn = qs->last_lsn;
                }
                if (!sg->header_ok && qs->header_ok)
                    s.created_ms = qs->created_ms;
            }
            if (s.bytes == 0 || s.last_lsn < s.first_lsn)
                continue;           /* deleted as an empty tail */
            if (kw__segs_push(w, &s) < 0) {
                err = kw_seterr(errstr, errlen, KW_ENOMEM, "out of memory");
                goto out;
            }
            rep->segments++;
        }
        rep->records = scans[src].records;
        w->durable_lsn = scans[src].last_lsn;
        w->next_lsn = scans[src].last_lsn + 1;
        for (int i = 0; i < w->nrep; i++)
            if (!w->rep[i].failed)
                w->rep[i].done_lsn = w->durable_lsn;
    }
    if (!w->opts.read_only) {
        err = kw__persist_states(w, errstr, errlen);
        if (err != KW_OK)
            goto out;
    }
    rep->first_lsn = w->nsegs ? w->segs[0].first_lsn : 0;
    rep->last_lsn = w->next_lsn - 1;
    for (int i = 0; i < w->nrep; i++) {
        if (w->rep[i].failed)
            rep->replicas_failed++;
        else
            rep->replicas_healthy++;
    }
    KW_LOG_I(MOD, "opened WAL%s: %d/%d replicas healthy (quorum %d), %" PRIu64
             " segments, LSN %" PRIu64 "..%" PRIu64 ", %" PRIu64 " torn tails (%" PRIu64
             " bytes), %" PRIu64 " corrupt records with good copies, %" PRIu64
             " bytes reconciled", rep->created ? " (new)" : "", rep->replicas_healthy,
             w->nrep, w->quorum, rep->segments, rep->first_lsn, rep->last_lsn,
             rep->torn_tails, rep->torn_bytes, rep->corrupt_records, rep->reconciled_bytes);
out:
    for (int i = 0; i < w->nrep; i++)
        kw__repscan_free(&scans[i]);
    return err;
}

/* ---- kw_wal_open ---- */

kw_err_t kw_wal_open(const kw_wal_options_t *opts, kw_wal_t **wal,
                     kw_wal_open_report_t *report, char *errstr, size_t errlen)
{
    return kw__open(opts, 1, wal, report, errstr, errlen);
}

kw_err_t kw__open(const kw_wal_options_t *opts, int start_threads, kw_wal_t **wal,
                  kw_wal_open_report_t *report, char *errstr, size_t errlen)
{
    kw_wal_open_report_t dummy;
    kw_wal_t *w;
    kw_err_t err;

    *wal = NULL;
    if (report == NULL)
        report = &dummy;
    memset(report, 0, sizeof(*report));
    err = kw__alloc_handle(opts, &w, errstr, errlen);
    if (err != KW_OK)
        return err;
    err = kw__open_replicas(w, report, errstr, errlen);
    if (err != KW_OK)
        goto fail;
    err = kw__start_io(w, start_threads, errstr, errlen);
    if (err != KW_OK)
        goto fail;
    *wal = w;
    return KW_OK;

fail:
    kw_wal_close(w);
    return err;
}
