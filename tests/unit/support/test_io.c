/*
 * test_io.c -- the fault-injecting, power-loss-simulating kw_wal_io_t of
 * test_io.h.
 *
 * How it works. Every call goes through tio_enter(), which counts it, decides
 * from the replica's settings whether to fail it, sleeps if asked, and fires
 * an armed crash. The real call then runs under a read lock of `rw`; a crash
 * takes `rw` for writing, so it waits for calls in flight and no call runs
 * while it rewrites the disk. The bookkeeping below is guarded by `mu`
 * (lock order: rw, then mu).
 *
 * Files are tracked per inode (tfile_t) and names per path (tname_t); paths
 * are canonical (realpath of the directory + "/" + name).
 *
 *   - tfile_t.durable_size is the file's size at its last fdatasync/fsync.
 *     Before a write or truncation touches bytes below it, the bytes are
 *     saved in the file's undo log. The durable content is therefore the
 *     current content with the undo log applied newest to oldest, cut to
 *     durable_size. A sync snapshots the size and the undo count first and,
 *     once it returned, drops exactly the entries taken before it.
 *   - tname_t.durable is the file a name referred to at the last fsync of
 *     its directory (NULL: none). A name is registered before the first call
 *     that creates, renames or removes it, with what it named then (files
 *     that existed before the backend saw them are taken as durable).
 *   - A file that loses its last name while some name's durable binding
 *     still refers to it has its content saved in memory (the crash may
 *     bring it back).
 *
 * The WAL only appends to segments, truncates them, creates files, renames
 * STATE.tmp over STATE and unlinks; this model covers exactly that. It does
 * not track directories themselves (mkdir is passed through).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "test_io.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "test_util.h"

#define NREP (KW_WAL_MAX_REPLICAS + 1)   /* last slot: out-of-range replica */

typedef struct fault {
    unsigned nth;          /* countdown to the failing call; 0: none */
    int      nth_err;
    int      always_err;   /* 0: none */
    unsigned delay_us;
} fault_t;

typedef struct undo {
    off_t    off;
    size_t   len;
    uint8_t *old;
} undo_t;

typedef struct tfile {
    struct tfile *next;
    dev_t         dev;
    ino_t         ino;
    char         *path;            /* current name; NULL once it has none */
    off_t         durable_size;
    undo_t       *undo;
    size_t        nundo, capundo;
    uint8_t      *saved;           /* content when it lost its last name */
    size_t        saved_len;
    int           has_saved;
    /* Scratch of one crash. */
    uint8_t      *final;
    size_t        final_len;
    int           final_done;
} tfile_t;

typedef struct tname {
    struct tname *next;
    char         *path;
    tfile_t      *durable;
} tname_t;

typedef struct fdent {
    int      used;
    int      is_dir;
    tfile_t *file;
    char    *dir;                  /* canonical path when is_dir */
} fdent_t;

struct test_io {
    kw_wal_io_t      table;
    pthread_mutex_t  mu;
    pthread_rwlock_t rw;
    atomic_int       crashed;

    /* Under mu. */
    fault_t          fault[NREP][TEST_IO_NOPS];
    unsigned         short_nth[NREP];
    size_t           short_keep[NREP];
    unsigned long    calls[NREP][TEST_IO_NOPS];
    unsigned long    failures[NREP][TEST_IO_NOPS];
    unsigned long    mutations;
    unsigned long    crash_at;     /* 0: not armed */
    uint64_t         crash_seed;
    tfile_t         *files;
    tname_t         *names;
    fdent_t         *fds;
    size_t           nfds;
    test_io_crash_report_t last;
};

/* ---- Paths ---- */

/* Canonical form of a path: realpath of its directory + "/" + last part.
 * malloc'd; the path itself when the directory cannot be resolved. */
static char *canon_path(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir, *rdir, *res = NULL;

    if (slash == NULL)
        dir = strdup(".");
    else if (slash == path)
        dir = strdup("/");
    else
        dir = strndup(path, (size_t)(slash - path));
    if (dir == NULL)
        return NULL;
    rdir = realpath(dir, NULL);
    free(dir);
    if (rdir == NULL)
        return strdup(path);
    if (asprintf(&res, "%s/%s", strcmp(rdir, "/") == 0 ? "" : rdir,
                 slash ? slash + 1 : path) < 0)
        res = NULL;
    free(rdir);
    return res;
}

/* 1 when path is directly inside dir. */
static int in_dir(const char *path, const char *dir)
{
    size_t dlen = strlen(dir);

    return strncmp(path, dir, dlen) == 0 && path[dlen] == '/' &&
           strchr(path + dlen + 1, '/') == NULL;
}

/* ---- Files and names (all under mu) ---- */

static tfile_t *live_at(test_io_t *t, const char *cpath)
{
    for (tfile_t *f = t->files; f != NULL; f = f->next)
        if (f->path != NULL && strcmp(f->path, cpath) == 0)
            return f;
    return NULL;
}

static tfile_t *live_by_inode(test_io_t *t, dev_t dev, ino_t ino)
{
    for (tfile_t *f = t->files; f != NULL; f = f->next)
        if (f->path != NULL && f->dev == dev && f->ino == ino)
            return f;
    return NULL;
}

/* The tracked file for an existing regular file at cpath with stat st; a
 * file seen for the first time is taken as durable as it is. */
static tfile_t *file_adopt(test_io_t *t, const char *cpath, const struct stat *st)
{
    tfile_t *f = live_by_inode(t, st->st_dev, st->st_ino);

    if (f != NULL)
        return f;
    f = calloc(1, sizeof(*f));
    if (f == NULL)
        return NULL;
    f->path = strdup(cpath);
    if (f->path == NULL) {
        free(f);
        return NULL;
    }
    f->dev = st->st_dev;
    f->ino = st->st_ino;
    f->durable_size = st->st_size;
    f->next = t->files;
    t->files = f;
    return f;
}

static tfile_t *file_at(test_io_t *t, const char *cpath)
{
    struct stat st;

    if (lstat(cpath, &st) < 0 || !S_ISREG(st.st_mode))
        return NULL;
    return file_adopt(t, cpath, &st);
}

/* Register the name before its first change, with what it names now. */
static void name_touch(test_io_t *t, const char *cpath)
{
    tname_t *n;

    for (n = t->names; n != NULL; n = n->next)
        if (strcmp(n->path, cpath) == 0)
            return;
    n = calloc(1, sizeof(*n));
    if (n == NULL)
        return;
    n->path = strdup(cpath);
    if (n->path == NULL) {
        free(n);
        return;
    }
    n->durable = file_at(t, cpath);
    n->next = t->names;
    t->names = n;
}

static int durably_named(test_io_t *t, const tfile_t *f)
{
    for (tname_t *n = t->names; n != NULL; n = n->next)
        if (n->durable == f)
            return 1;
    return 0;
}

static void undo_free(tfile_t *f)
{
    for (size_t i = 0; i < f->nundo; i++)
        free(f->undo[i].old);
    free(f->undo);
    f->undo = NULL;
    f->nundo = f->capundo = 0;
}

/* Save the bytes of f in [off, off + len) that are below its durable size,
 * before something overwrites or cuts them. */
static void undo_capture(tfile_t *f, off_t off, size_t len)
{
    undo_t *u;
    uint8_t *old;
    ssize_t got;
    int fd;

    if (f->path == NULL || off >= f->durable_size || len == 0)
        return;
    if ((off_t)len > f->durable_size - off)
        len = (size_t)(f->durable_size - off);
    old = malloc(len);
    if (old == NULL)
        return;
    fd = open(f->path, O_RDONLY | O_CLOEXEC);
    got = fd >= 0 ? pread(fd, old, len, off) : -1;
    if (fd >= 0)
        close(fd);
    if (got <= 0) {
        free(old);
        return;
    }
    if (f->nundo == f->capundo) {
        size_t cap = f->capundo ? f->capundo * 2 : 8;
        undo_t *nu = realloc(f->undo, cap * sizeof(*nu));

        if (nu == NULL) {
            free(old);
            return;
        }
        f->undo = nu;
        f->capundo = cap;
    }
    u = &f->undo[f->nundo++];
    u->off = off;
    u->len = (size_t)got;
    u->old = old;
}

static void track_truncate(tfile_t *f, off_t len)
{
    struct stat st;

    if (f->path == NULL || stat(f->path, &st) < 0)
        return;
    if (len < f->durable_size && len < st.st_size)
        undo_capture(f, len, (size_t)(st.st_size - len));
}

/* f is about to lose its last name: keep its content if a crash may need it. */
static void save_before_unname(test_io_t *t, tfile_t *f)
{
    if (f->has_saved || f->path == NULL || !durably_named(t, f))
        return;
    if (test_read_file(f->path, &f->saved, &f->saved_len) == 0)
        f->has_saved = 1;
}

static void unname(tfile_t *f)
{
    free(f->path);
    f->path = NULL;
}

static void dir_synced(test_io_t *t, const char *cdir)
{
    for (tname_t *n = t->names; n != NULL; n = n->next)
        if (in_dir(n->path, cdir))
            n->durable = live_at(t, n->path);
    for (tfile_t *f = t->files; f != NULL; f = f->next) {
        if (f->path == NULL && f->has_saved && !durably_named(t, f)) {
            free(f->saved);
            f->saved = NULL;
            f->saved_len = 0;
            f->has_saved = 0;
            undo_free(f);
        }
    }
}

/* ---- Descriptors (under mu) ---- */

static fdent_t *fd_slot(test_io_t *t, int fd, int grow)
{
    if (fd < 0)
        return NULL;
    if ((size_t)fd >= t->nfds) {
        size_t n = t->nfds ? t->nfds : 64;
        fdent_t *nf;

        if (!grow)
            return NULL;
        while (n <= (size_t)fd)
            n *= 2;
        nf = realloc(t->fds, n * sizeof(*nf));
        if (nf == NULL)
            return NULL;
        memset(nf + t->nfds, 0, (n - t->nfds) * sizeof(*nf));
        t->fds = nf;
        t->nfds = n;
    }
    return &t->fds[fd];
}

/* What fd refers to. Descriptors the table did not open are looked up
 * through /proc (directories) or adopted as durable (files). */
static void fd_lookup(test_io_t *t, int fd, tfile_t **file, char **dir)
{
    fdent_t *e = fd_slot(t, fd, 0);
    struct stat st;
    char link[64], target[PATH_MAX];
    ssize_t n;

    *file = NULL;
    *dir = NULL;
    if (e != NULL && e->used) {
        *file = e->file;
        *dir = e->is_dir ? strdup(e->dir) : NULL;
        return;
    }
    if (fstat(fd, &st) < 0)
        return;
    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    n = readlink(link, target, sizeof(target) - 1);
    if (n <= 0)
        return;
    target[n] = '\0';
    if (S_ISDIR(st.st_mode))
        *dir = strdup(target);
    else if (S_ISREG(st.st_mode))
        *file = file_adopt(t, target, &st);
}

/* ---- Call entry ---- */

static int slot_of(int replica)
{
    return replica >= 0 && replica < KW_WAL_MAX_REPLICAS ? replica : KW_WAL_MAX_REPLICAS;
}

/*
 * Count the call, sleep, fire an armed crash, apply the fault settings.
 * Returns 0 with rw read-locked (the caller does the call, then
 * tio_leave), or -1 with errno set and nothing locked.
 */
static int tio_enter(test_io_t *t, int replica, test_io_op_t op, int mutation)
{
    int s = slot_of(replica), err = 0, crash_now = 0;
    unsigned delay;
    uint64_t seed = 0;
    fault_t *fl;

    pthread_mutex_lock(&t->mu);
    t->calls[s][op]++;
    fl = &t->fault[s][op];
    delay = fl->delay_us;
    if (mutation && !atomic_load(&t->crashed)) {
        t->mutations++;
        if (t->crash_at != 0 && t->mutations >= t->crash_at) {
            crash_now = 1;
            seed = t->crash_seed;
            t->crash_at = 0;
        }
    }
    if (fl->always_err != 0) {
        err = fl->always_err;
    } else if (fl->nth != 0 && --fl->nth == 0) {
        err = fl->nth_err;
    }
    pthread_mutex_unlock(&t->mu);

    if (delay != 0)
        usleep(delay);
    if (crash_now)
        test_io_crash(t, seed);
    pthread_rwlock_rdlock(&t->rw);
    if (atomic_load(&t->crashed)) {
        pthread_rwlock_unlock(&t->rw);
        errno = EIO;
        return -1;
    }
    if (err != 0) {
        pthread_rwlock_unlock(&t->rw);
        pthread_mutex_lock(&t->mu);
        t->failures[s][op]++;
        pthread_mutex_unlock(&t->mu);
        errno = err;
        return -1;
    }
    return 0;
}

static void tio_leave(test_io_t *t)
{
    int saved = errno;

    pthread_rwlock_unlock(&t->rw);
    errno = saved;
}

/* ---- The table ---- */

static int tio_open(void *ctx, int replica, const char *path, int flags, mode_t mode)
{
    test_io_t *t = ctx;
    int mutation = (flags & (O_CREAT | O_TRUNC)) != 0;
    char *cpath;
    int fd, saved;
    struct stat st;

    if (tio_enter(t, replica, TEST_IO_OPEN, mutation) < 0)
        return -1;
    cpath = canon_path(path);
    if (cpath == NULL) {
        tio_leave(t);
        errno = ENOMEM;
        return -1;
    }
    pthread_mutex_lock(&t->mu);
    if (!(flags & O_DIRECTORY))
        name_touch(t, cpath);
    fd = open(path, (flags & ~O_TRUNC) | O_CLOEXEC, mode);
    saved = errno;
    if (fd >= 0 && fstat(fd, &st) == 0) {
        fdent_t *e = fd_slot(t, fd, 1);

        if (e != NULL) {
            memset(e, 0, sizeof(*e));
            if (S_ISDIR(st.st_mode)) {
                e->is_dir = 1;
                e->dir = realpath(path, NULL);
                e->used = e->dir != NULL;
            } else if (S_ISREG(st.st_mode)) {
                e->file = file_adopt(t, cpath, &st);
                e->used = 1;
                if (e->file != NULL && (flags & O_TRUNC) && st.st_size > 0)
                    track_truncate(e->file, 0);
            }
        }
        if ((flags & O_TRUNC) && S_ISREG(st.st_mode) && ftruncate(fd, 0) < 0) {
            saved = errno;
            if (e != NULL) {
                free(e->dir);
                memset(e, 0, sizeof(*e));
            }
            close(fd);
            fd = -1;
        }
    }
    pthread_mutex_unlock(&t->mu);
    free(cpath);
    tio_leave(t);
    errno = saved;
    return fd;
}

static int tio_close(void *ctx, int replica, int fd)
{
    test_io_t *t = ctx;
    fdent_t *e;

    /* Closing never fails on purpose and works after a crash, so no
     * descriptor leaks. The slot is freed before the real close, so a
     * concurrent open cannot be handed this number while it is still ours. */
    pthread_mutex_lock(&t->mu);
    t->calls[slot_of(replica)][TEST_IO_CLOSE]++;
    e = fd_slot(t, fd, 0);
    if (e != NULL) {
        free(e->dir);
        memset(e, 0, sizeof(*e));
    }
    pthread_mutex_unlock(&t->mu);
    return close(fd);
}

static ssize_t tio_pread(void *ctx, int replica, int fd, void *buf, size_t len, off_t off)
{
    test_io_t *t = ctx;
    ssize_t n;

    if (tio_enter(t, replica, TEST_IO_PREAD, 0) < 0)
        return -1;
    n = pread(fd, buf, len, off);
    tio_leave(t);
    return n;
}

static ssize_t tio_pwritev(void *ctx, int replica, int fd, const struct iovec *iov,
                           int iovcnt, off_t off)
{
    test_io_t *t = ctx;
    int s = slot_of(replica), shortw = 0;
    size_t total = 0, keep = 0;
    tfile_t *f;
    char *dir;
    ssize_t n;

    if (tio_enter(t, replica, TEST_IO_PWRITEV, 1) < 0)
        return -1;
    for (int i = 0; i < iovcnt; i++)
        total += iov[i].iov_len;
    pthread_mutex_lock(&t->mu);
    if (t->short_nth[s] != 0 && --t->short_nth[s] == 0) {
        shortw = 1;
        keep = t->short_keep[s];
        if (keep == 0 || keep >= total)
            keep = total / 2 ? total / 2 : 1;
        if (keep > total)
            keep = total;
    }
    fd_lookup(t, fd, &f, &dir);
    free(dir);
    if (f != NULL)
        undo_capture(f, off, total);
    pthread_mutex_unlock(&t->mu);

    if (!shortw) {
        n = pwritev(fd, iov, iovcnt, off);
    } else {
        struct iovec part[64];
        int np = 0;
        size_t left = keep;

        for (int i = 0; i < iovcnt && left > 0 && np < 64; i++) {
            part[np].iov_base = iov[i].iov_base;
            part[np].iov_len = iov[i].iov_len < left ? iov[i].iov_len : left;
            left -= part[np].iov_len;
            np++;
        }
        n = pwritev(fd, part, np, off);
    }
    tio_leave(t);
    return n;
}

static int tio_sync(test_io_t *t, int replica, int fd, test_io_op_t op)
{
    tfile_t *f;
    char *dir;
    struct stat st;
    off_t snap = -1;
    size_t nundo = 0;
    int rc;

    if (tio_enter(t, replica, op, 1) < 0)
        return -1;
    pthread_mutex_lock(&t->mu);
    fd_lookup(t, fd, &f, &dir);
    if (f != NULL && f->path != NULL && fstat(fd, &st) == 0) {
        snap = st.st_size;
        nundo = f->nundo;
    }
    pthread_mutex_unlock(&t->mu);

    rc = op == TEST_IO_FDATASYNC ? fdatasync(fd) : fsync(fd);

    if (rc == 0) {
        pthread_mutex_lock(&t->mu);
        if (dir != NULL) {
            dir_synced(t, dir);
        } else if (f != NULL && f->path != NULL && snap >= 0) {
            /* Everything written before the sync began is durable: drop
             * the undo entries taken before it (later ones stay valid). */
            f->durable_size = snap;
            for (size_t i = 0; i < nundo && i < f->nundo; i++)
                free(f->undo[i].old);
            if (nundo > f->nundo)
                nundo = f->nundo;
            if (nundo > 0) {
                memmove(f->undo, f->undo + nundo, (f->nundo - nundo) * sizeof(*f->undo));
                f->nundo -= nundo;
            }
        }
        pthread_mutex_unlock(&t->mu);
    }
    free(dir);
    tio_leave(t);
    return rc;
}

static int tio_fdatasync(void *ctx, int replica, int fd)
{
    return tio_sync(ctx, replica, fd, TEST_IO_FDATASYNC);
}

static int tio_fsync(void *ctx, int replica, int fd)
{
    return tio_sync(ctx, replica, fd, TEST_IO_FSYNC);
}

static int tio_ftruncate(void *ctx, int replica, int fd, off_t len)
{
    test_io_t *t = ctx;
    tfile_t *f;
    char *dir;
    int rc;

    if (tio_enter(t, replica, TEST_IO_FTRUNCATE, 1) < 0)
        return -1;
    pthread_mutex_lock(&t->mu);
    fd_lookup(t, fd, &f, &dir);
    free(dir);
    if (f != NULL)
        track_truncate(f, len);
    pthread_mutex_unlock(&t->mu);
    rc = ftruncate(fd, len);
    tio_leave(t);
    return rc;
}

static int tio_unlink(void *ctx, int replica, const char *path)
{
    test_io_t *t = ctx;
    char *cpath;
    tfile_t *f;
    int rc;

    if (tio_enter(t, replica, TEST_IO_UNLINK, 1) < 0)
        return -1;
    cpath = canon_path(path);
    pthread_mutex_lock(&t->mu);
    if (cpath != NULL) {
        name_touch(t, cpath);
        f = live_at(t, cpath);
        if (f != NULL)
            save_before_unname(t, f);
    } else {
        f = NULL;
    }
    rc = unlink(path);
    if (rc == 0 && f != NULL)
        unname(f);
    pthread_mutex_unlock(&t->mu);
    free(cpath);
    tio_leave(t);
    return rc;
}

static int tio_rename(void *ctx, int replica, const char *from, const char *to)
{
    test_io_t *t = ctx;
    char *cfrom, *cto;
    tfile_t *src = NULL, *dst = NULL;
    int rc;

    if (tio_enter(t, replica, TEST_IO_RENAME, 1) < 0)
        return -1;
    cfrom = canon_path(from);
    cto = canon_path(to);
    pthread_mutex_lock(&t->mu);
    if (cfrom != NULL && cto != NULL) {
        name_touch(t, cfrom);
        name_touch(t, cto);
        src = live_at(t, cfrom);
        if (src == NULL)
            src = file_at(t, cfrom);
        dst = live_at(t, cto);
        if (dst != NULL && dst != src)
            save_before_unname(t, dst);
    }
    rc = rename(from, to);
    if (rc == 0 && src != NULL && cto != NULL && dst != src) {
        if (dst != NULL)
            unname(dst);
        free(src->path);
        src->path = cto;
        cto = NULL;
    }
    pthread_mutex_unlock(&t->mu);
    free(cfrom);
    free(cto);
    tio_leave(t);
    return rc;
}

static int tio_mkdir(void *ctx, int replica, const char *path, mode_t mode)
{
    test_io_t *t = ctx;
    int rc;

    if (tio_enter(t, replica, TEST_IO_MKDIR, 1) < 0)
        return -1;
    rc = mkdir(path, mode);
    tio_leave(t);
    return rc;
}

/* Writeback only starts writing what was written: it makes nothing durable,
 * so the power-loss model ignores it (the real call still runs). */
static int tio_writeback(void *ctx, int replica, int fd, off_t off, off_t len)
{
    test_io_t *t = ctx;
    int rc;

    if (tio_enter(t, replica, TEST_IO_WRITEBACK, 0) < 0)
        return -1;
    rc = kw_wal_io_posix()->writeback(NULL, replica, fd, off, len);
    tio_leave(t);
    return rc;
}

/* ---- Crash ---- */

/* Content f would hold after losing power (computed once per crash). */
static void file_final(tfile_t *f, uint64_t *rng, test_io_crash_report_t *rep)
{
    uint8_t *cur = NULL, *res = NULL;
    size_t clen = 0, dlen = (size_t)f->durable_size, cap, k;

    if (f->final_done)
        return;
    f->final_done = 1;
    if (f->path != NULL) {
        if (test_read_file(f->path, &cur, &clen) < 0)
            clen = 0;
    } else if (f->has_saved) {
        cur = f->saved;           /* borrowed */
        clen = f->saved_len;
    }
    cap = clen > dlen ? clen : dlen;
    for (size_t i = 0; i < f->nundo; i++)
        if ((size_t)f->undo[i].off + f->undo[i].len > cap)
            cap = (size_t)f->undo[i].off + f->undo[i].len;
    res = calloc(1, cap ? cap : 1);
    if (res == NULL)
        goto done;
    if (clen > 0)
        memcpy(res, cur, clen);
    /* Oldest entry last: it holds what the bytes were at the last sync. */
    for (size_t i = f->nundo; i-- > 0;)
        memcpy(res + f->undo[i].off, f->undo[i].old, f->undo[i].len);
    k = dlen;
    if (clen > dlen) {
        uint64_t r = test_rand_below(rng, 4);
        size_t extra = clen - dlen;

        if (r == 0)
            k = dlen;                                        /* nothing reached the disk */
        else if (r == 1)
            k = clen;                                        /* everything did */
        else
            k = dlen + (size_t)test_rand_below(rng, extra + 1);
        memcpy(res + dlen, cur + dlen, k - dlen);
        if (k > dlen && test_rand_below(rng, 2) == 0) {
            /* A torn write: the last bytes are garbage or zeros. */
            size_t g = 1 + (size_t)test_rand_below(rng, k - dlen < 512 ? k - dlen : 512);

            if (test_rand_below(rng, 2) == 0)
                memset(res + k - g, 0, g);
            else
                test_fill_random(res + k - g, g, rng);
        }
        rep->bytes_dropped += clen - k;
        rep->files_rewritten++;
    }
    f->final = res;
    f->final_len = k;

done:
    if (cur != f->saved)
        free(cur);
}

static void write_final(const char *path, const tfile_t *f)
{
    if (f == NULL || f->final == NULL) {
        if (unlink(path) < 0 && errno != ENOENT)
            fprintf(stderr, "test_io: crash: unlink %s: %s\n", path, strerror(errno));
        return;
    }
    if (test_write_file(path, f->final, f->final_len) < 0)
        fprintf(stderr, "test_io: crash: write %s: %s\n", path, strerror(errno));
}

/* Under rw (write) and mu. */
static void do_crash(test_io_t *t, uint64_t seed)
{
    uint64_t rng = seed ^ 0x6b77616c63726173ull;
    test_io_crash_report_t rep = { 0, 0, 0 };
    tname_t *n;
    size_t nn = 0, i;
    tfile_t **chosen;

    for (n = t->names; n != NULL; n = n->next)
        nn++;
    chosen = calloc(nn ? nn : 1, sizeof(*chosen));
    if (chosen == NULL)
        return;
    /* 1. Pick each name's binding and compute contents, before writing
     *    anything (one file's new content must not feed another's). */
    for (n = t->names, i = 0; n != NULL; n = n->next, i++) {
        tfile_t *cur = live_at(t, n->path);

        chosen[i] = cur;
        if (cur != n->durable && test_rand_below(&rng, 2) == 0) {
            chosen[i] = n->durable;
            rep.names_reverted++;
        }
        if (chosen[i] != NULL)
            file_final(chosen[i], &rng, &rep);
    }
    /* 2. Write the disk as it would be found after the power came back. */
    for (n = t->names, i = 0; n != NULL; n = n->next, i++)
        write_final(n->path, chosen[i]);
    for (tfile_t *f = t->files; f != NULL; f = f->next) {
        free(f->final);
        f->final = NULL;
        f->final_done = 0;
    }
    free(chosen);
    t->last = rep;
}

/* ---- Public ---- */

test_io_t *test_io_new(void)
{
    test_io_t *t = calloc(1, sizeof(*t));
    pthread_rwlockattr_t attr;

    if (t == NULL)
        return NULL;
    pthread_mutex_init(&t->mu, NULL);
    pthread_rwlockattr_init(&attr);
    /* A crash must not starve behind a stream of calls. */
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&t->rw, &attr);
    pthread_rwlockattr_destroy(&attr);
    atomic_init(&t->crashed, 0);
    t->table.open = tio_open;
    t->table.close = tio_close;
    t->table.pread = tio_pread;
    t->table.pwritev = tio_pwritev;
    t->table.writeback = tio_writeback;
    t->table.fdatasync = tio_fdatasync;
    t->table.fsync = tio_fsync;
    t->table.ftruncate = tio_ftruncate;
    t->table.unlink = tio_unlink;
    t->table.rename = tio_rename;
    t->table.mkdir = tio_mkdir;
    t->table.ctx = t;
    return t;
}

void test_io_destroy(test_io_t *t)
{
    if (t == NULL)
        return;
    while (t->files != NULL) {
        tfile_t *f = t->files;

        t->files = f->next;
        undo_free(f);
        free(f->saved);
        free(f->final);
        free(f->path);
        free(f);
    }
    while (t->names != NULL) {
        tname_t *n = t->names;

        t->names = n->next;
        free(n->path);
        free(n);
    }
    for (size_t i = 0; i < t->nfds; i++)
        free(t->fds[i].dir);
    free(t->fds);
    pthread_rwlock_destroy(&t->rw);
    pthread_mutex_destroy(&t->mu);
    free(t);
}

const kw_wal_io_t *test_io_table(test_io_t *t)
{
    return &t->table;
}

/* Apply fn to one replica's slot, or to every slot. */
#define FOR_SLOTS(t, replica, s)                                              \
    for (int s = (replica) == TEST_IO_ALL_REPLICAS ? 0 : slot_of(replica);    \
         s < ((replica) == TEST_IO_ALL_REPLICAS ? NREP : slot_of(replica) + 1); s++)

void test_io_fail_nth(test_io_t *t, int replica, test_io_op_t op, unsigned nth, int err)
{
    pthread_mutex_lock(&t->mu);
    FOR_SLOTS(t, replica, s) {
        t->fault[s][op].nth = nth;
        t->fault[s][op].nth_err = err;
    }
    pthread_mutex_unlock(&t->mu);
}

void test_io_fail_always(test_io_t *t, int replica, test_io_op_t op, int err)
{
    pthread_mutex_lock(&t->mu);
    FOR_SLOTS(t, replica, s)
        t->fault[s][op].always_err = err;
    pthread_mutex_unlock(&t->mu);
}

void test_io_short_write(test_io_t *t, int replica, unsigned nth, size_t keep)
{
    pthread_mutex_lock(&t->mu);
    FOR_SLOTS(t, replica, s) {
        t->short_nth[s] = nth;
        t->short_keep[s] = keep;
    }
    pthread_mutex_unlock(&t->mu);
}

void test_io_delay(test_io_t *t, int replica, test_io_op_t op, unsigned usec)
{
    pthread_mutex_lock(&t->mu);
    FOR_SLOTS(t, replica, s)
        t->fault[s][op].delay_us = usec;
    pthread_mutex_unlock(&t->mu);
}

void test_io_clear(test_io_t *t, int replica)
{
    pthread_mutex_lock(&t->mu);
    FOR_SLOTS(t, replica, s) {
        memset(t->fault[s], 0, sizeof(t->fault[s]));
        t->short_nth[s] = 0;
        t->short_keep[s] = 0;
    }
    pthread_mutex_unlock(&t->mu);
}

unsigned long test_io_calls(test_io_t *t, int replica, test_io_op_t op)
{
    unsigned long v;

    pthread_mutex_lock(&t->mu);
    v = t->calls[slot_of(replica)][op];
    pthread_mutex_unlock(&t->mu);
    return v;
}

unsigned long test_io_failures(test_io_t *t, int replica, test_io_op_t op)
{
    unsigned long v;

    pthread_mutex_lock(&t->mu);
    v = t->failures[slot_of(replica)][op];
    pthread_mutex_unlock(&t->mu);
    return v;
}

unsigned long test_io_calls_all(test_io_t *t, test_io_op_t op)
{
    unsigned long v = 0;

    pthread_mutex_lock(&t->mu);
    for (int s = 0; s < NREP; s++)
        v += t->calls[s][op];
    pthread_mutex_unlock(&t->mu);
    return v;
}

unsigned long test_io_mutations(test_io_t *t)
{
    unsigned long v;

    pthread_mutex_lock(&t->mu);
    v = t->mutations;
    pthread_mutex_unlock(&t->mu);
    return v;
}

void test_io_crash_after(test_io_t *t, unsigned long nth, uint64_t seed)
{
    pthread_mutex_lock(&t->mu);
    t->crash_at = nth == 0 ? 0 : t->mutations + nth;
    t->crash_seed = seed;
    pthread_mutex_unlock(&t->mu);
}

void test_io_crash(test_io_t *t, uint64_t seed)
{
    pthread_rwlock_wrlock(&t->rw);
    pthread_mutex_lock(&t->mu);
    if (!atomic_load(&t->crashed)) {
        do_crash(t, seed);
        atomic_store(&t->crashed, 1);
    }
    pthread_mutex_unlock(&t->mu);
    pthread_rwlock_unlock(&t->rw);
}

int test_io_crashed(test_io_t *t)
{
    return atomic_load(&t->crashed);
}

void test_io_last_crash(test_io_t *t, test_io_crash_report_t *out)
{
    pthread_mutex_lock(&t->mu);
    *out = t->last;
    pthread_mutex_unlock(&t->mu);
}
