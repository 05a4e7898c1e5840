/*
 * wal_io.c -- the production file I/O table (plain POSIX) and small helpers
 * that every WAL file operation is built from. Nothing here bypasses the
 * table except directory listing (readdir), which cannot lose data.
 *
 * Failure points (libfiu, kw_fault.h), per replica index R (0-based, the
 * order of wal.dirs), checked only once libfiu is on:
 *   wal/replicaR/write   pwritev fails (errno = failinfo, default EIO; give
 *                        failinfo=28 for ENOSPC)
 *   wal/replicaR/short   pwritev writes only half of what it was asked
 *   wal/replicaR/fsync   fdatasync and fsync fail (errno as above)
 *   wal/replicaR/delay   every write and sync first sleeps failinfo ms
 *                        (default 100)
 * The writeback hint (sync_file_range) has no failure point of its own: the
 * fdatasync after it is where a write is known to be durable or not.
 */
#include "wal_int.h"
#include "kw_time.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kw_fault.h"

/* Nonzero when failure point wal/replica<r>/<what> fails now; *info gets
 * its failinfo. */
static int px_fault(int r, const char *what, long *info)
{
    char name[64];

    if (!kw_fault_active())
        return 0;
    snprintf(name, sizeof(name), "wal/replica%d/%s", r, what);
    if (!kw_fault(name))
        return 0;
    *info = kw_fault_info();
    return 1;
}

/* Failure points common to writes and syncs: a delay, then maybe an errno. */
static int px_inject(int r, const char *fail_point)
{
    long info = 0;

    if (px_fault(r, "delay", &info)) {
        struct timespec ts = { 0, 0 };
        long ms = info > 0 ? info : 100;

        ts.tv_sec = ms / 1000;
        ts.tv_nsec = (ms % 1000) * 1000000L;
        nanosleep(&ts, NULL);
    }
    if (px_fault(r, fail_point, &info)) {
        errno = info > 0 ? (int)info : EIO;
        return -1;
    }
    return 0;
}

static int px_open(void *ctx, int r, const char *path, int flags, mode_t mode)
{
    (void)ctx; (void)r;
    return open(path, flags | O_CLOEXEC, mode);
}
static int px_close(void *ctx, int r, int fd) { (void)ctx; (void)r; return close(fd); }
static ssize_t px_pread(void *ctx, int r, int fd, void *buf, size_t len, off_t off)
{
    (void)ctx; (void)r;
    return pread(fd, buf, len, off);
}
static ssize_t px_pwritev(void *ctx, int r, int fd, const struct iovec *iov, int n, off_t off)
{
    long info = 0;

    (void)ctx;
    if (px_inject(r, "write") < 0)
        return -1;
    if (n > 0 && iov[0].iov_len > 1 && px_fault(r, "short", &info))
        return pwrite(fd, iov[0].iov_base, iov[0].iov_len / 2, off);
    return pwritev(fd, iov, n, off);
}
static int px_fdatasync(void *ctx, int r, int fd)
{
    (void)ctx;
    return px_inject(r, "fsync") < 0 ? -1 : fdatasync(fd);
}
static int px_fsync(void *ctx, int r, int fd)
{
    (void)ctx;
    return px_inject(r, "fsync") < 0 ? -1 : fsync(fd);
}
static int px_ftruncate(void *ctx, int r, int fd, off_t len)
{
    (void)ctx; (void)r;
    return ftruncate(fd, len);
}
static int px_unlink(void *ctx, int r, const char *path) { (void)ctx; (void)r; return unlink(path); }
static int px_rename(void *ctx, int r, const char *a, const char *b)
{
    (void)ctx; (void)r;
    return rename(a, b);
}
static int px_mkdir(void *ctx, int r, const char *path, mode_t mode)
{
    (void)ctx; (void)r;
    return mkdir(path, mode);
}

/* Start writeback of a range without waiting. A file system or kernel that
 * cannot (EINVAL, ESPIPE, ENOSYS) simply loses the hint; any other error
 * (EIO, ENOSPC...) is reported, and fails the replica as a failed write. */
static int px_writeback(void *ctx, int r, int fd, off_t off, off_t len)
{
    (void)ctx; (void)r;
    if (sync_file_range(fd, off, len, SYNC_FILE_RANGE_WRITE) == 0)
        return 0;
    if (errno == EINVAL || errno == ESPIPE || errno == ENOSYS)
        return 0;
    return -1;
}

static const kw_wal_io_t posix_io = {
    px_open, px_close, px_pread, px_pwritev, px_writeback, px_fdatasync, px_fsync,
    px_ftruncate, px_unlink, px_rename, px_mkdir, NULL
};

const kw_wal_io_t *kw_wal_io_posix(void)
{
    return &posix_io;
}

ssize_t kw__pread_full(const kw_wal_io_t *io, int r, int fd, void *buf,
                       size_t len, off_t off)
{
    size_t done = 0;

    while (done < len) {
        ssize_t n = io->pread(io->ctx, r, fd, (char *)buf + done, len - done,
                              off + (off_t)done);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (n == 0)
            break;
        done += (size_t)n;
    }
    return (ssize_t)done;
}

int kw__pwrite_full(const kw_wal_io_t *io, int r, int fd, const void *buf,
                    size_t len, off_t off)
{
    size_t done = 0;

    while (done < len) {
        struct iovec iov = { (char *)buf + done, len - done };
        ssize_t n = io->pwritev(io->ctx, r, fd, &iov, 1, off + (off_t)done);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (n == 0) {
            errno = EIO;
            return -1;
        }
        done += (size_t)n;
    }
    return 0;
}

int kw__fsync_dir(const kw_wal_io_t *io, int r, const char *dir)
{
    int fd = io->open(io->ctx, r, dir, O_RDONLY | O_DIRECTORY, 0);
    int rc, saved;

    if (fd < 0)
        return -1;
    rc = io->fsync(io->ctx, r, fd);
    saved = errno;
    io->close(io->ctx, r, fd);
    errno = saved;
    return rc;
}

int kw__write_file_atomic(const kw_wal_io_t *io, int r, const char *dir,
                          const char *name, const void *data, size_t len)
{
    char tmp[4096], dst[4096];
    int fd, saved;

    snprintf(tmp, sizeof(tmp), "%s/%s.tmp", dir, name);
    snprintf(dst, sizeof(dst), "%s/%s", dir, name);
    fd = io->open(io->ctx, r, tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        return -1;
    if (kw__pwrite_full(io, r, fd, data, len, 0) < 0 || io->fdatasync(io->ctx, r, fd) < 0)
        goto fail;
    if (io->close(io->ctx, r, fd) < 0) {
        fd = -1;
        goto fail;
    }
    fd = -1;
    if (io->rename(io->ctx, r, tmp, dst) < 0)
        goto fail;
    return kw__fsync_dir(io, r, dir);

fail:
    saved = errno;
    if (fd >= 0)
        io->close(io->ctx, r, fd);
    io->unlink(io->ctx, r, tmp);
    errno = saved;
    return -1;
}

ssize_t kw__read_small_file(const kw_wal_io_t *io, int r, const char *path,
                            char *buf, size_t cap)
{
    int fd = io->open(io->ctx, r, path, O_RDONLY, 0);
    ssize_t n;
    int saved;

    if (fd < 0)
        return -1;
    n = kw__pread_full(io, r, fd, buf, cap, 0);
    saved = errno;
    io->close(io->ctx, r, fd);
    if (n >= 0 && (size_t)n >= cap) {
        errno = EFBIG;
        return -1;
    }
    errno = saved;
    return n;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

int kw__list_segments(const char *dir, uint64_t **out, size_t *n)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    uint64_t *v = NULL, lsn;
    size_t cnt = 0, cap = 0;

    *out = NULL;
    *n = 0;
    if (d == NULL)
        return -1;
    while ((de = readdir(d)) != NULL) {
        if (!kw__seg_name_parse(de->d_name, &lsn))
            continue;
        if (cnt == cap) {
            uint64_t *nv;

            cap = cap ? cap * 2 : 16;
            nv = realloc(v, cap * sizeof(*v));
            if (nv == NULL) {
                free(v);
                closedir(d);
                errno = ENOMEM;
                return -1;
            }
            v = nv;
        }
        v[cnt++] = lsn;
    }
    closedir(d);
    if (cnt > 0)
        qsort(v, cnt, sizeof(*v), cmp_u64);
    *out = v;
    *n = cnt;
    return 0;
}

uint64_t kw__now_ms(void)
{
    return (uint64_t)kw_wall_ms();
}

int kw__read_record(const kw_wal_io_t *io, int r, int fd, uint64_t off,
                    uint64_t file_size, uint64_t expect_lsn, kw__rec_hdr_t *h,
                    uint8_t **payload, char *what, size_t whatlen)
{
    uint8_t hdr[KW__REC_HDR_SIZE], *buf;
    ssize_t n;

    n = kw__pread_full(io, r, fd, hdr, sizeof(hdr), (off_t)off);
    if (n < 0) {
        snprintf(what, whatlen, "read: %s", strerror(errno));
        return -1;
    }
    if ((size_t)n < sizeof(hdr) || off + KW__REC_HDR_SIZE > file_size) {
        snprintf(what, whatlen, "record header cut short");
        return -1;
    }
    if (kw__rec_hdr_decode(hdr, h) < 0) {
        snprintf(what, whatlen, "bad record header");
        return -1;
    }
    buf = malloc(h->length ? h->length : 1);
    if (buf == NULL) {
        snprintf(what, whatlen, "out of memory");
        return -1;
    }
    n = kw__pread_full(io, r, fd, buf, h->length, (off_t)(off + KW__REC_HDR_SIZE));
    if (n < 0) {
        snprintf(what, whatlen, "read: %s", strerror(errno));
        free(buf);
        return -1;
    }
    if (kw__rec_check(hdr, buf, (uint64_t)n, expect_lsn, h, what, whatlen) < 0) {
        free(buf);
        return -1;
    }
    if (payload != NULL)
        *payload = buf;
    else
        free(buf);
    return 0;
}

void kw__unlock_replicas(kw_wal_t *w)
{
    for (int i = 0; i < w->nrep; i++)
        if (w->rep[i].lock_fd >= 0) {
            close(w->rep[i].lock_fd);   /* releases the flock */
            w->rep[i].lock_fd = -1;
        }
}

int kw__write_state(kw_wal_t *w, int r, uint64_t generation, const kw__failed_set_t *fs)
{
    kw__state_t s;
    char buf[2048];
    int n;

    memset(&s, 0, sizeof(s));
    memcpy(s.wal_id, w->wal_id, KW__WAL_ID_LEN);
    s.replica_id = w->rep[r].id;
    s.generation = generation;
    s.replicas = w->nrep;
    s.nfailed = s.nfailed_dirs = fs->n;
    memcpy(s.failed, fs->ids, (size_t)fs->n * sizeof(fs->ids[0]));
    memcpy(s.failed_dirs, fs->dirs, (size_t)fs->n * sizeof(fs->dirs[0]));
    n = kw__state_format(&s, buf, sizeof(buf));
    if (n < 0) {
        errno = EOVERFLOW;
        return -1;
    }
    return kw__write_file_atomic(w->io, r, w->rep[r].dir, "STATE", buf, (size_t)n);
}
