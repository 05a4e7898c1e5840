/*
 * sink_file.c -- the `file:DIR` sink: one JSON lines file per batch.
 *
 * A batch is written the way Redis replaces a file: to
 * DIR/batch-<id>.jsonl.tmp (O_TRUNC, so the leftover of a crashed attempt is
 * overwritten), fsync, close -- the transaction's write -- then rename to
 * DIR/batch-<id>.jsonl, fsync DIR -- its commit; an abort removes the .tmp.
 * Only then does commit (or write_batch) return KW_OK, so a batch the
 * tracker marks processed is on disk under its final name, and a final name
 * never holds a partial batch (a crash leaves at most a .tmp, never read).
 *
 * Replay: when the final file exists, the batch was written before the
 * crash that kept the tracker from marking it processed. Each record is one
 * line (JSON escapes newlines), so the file's line count tells whether it is
 * this batch: equal to n -> skipped, all n counted as duplicate deliveries;
 * different -> KW_ECORRUPT (a reused batch id; the file is left alone).
 *
 * If fsync fails the temporary file is removed and the batch fails; the
 * retry writes a new file (an fsync is never retried on the same file).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kw_fault.h"
#include "kw_file.h"
#include "kw_log.h"
#include "sink_int.h"

#define FILE__FLUSH_BYTES (1u << 20)

typedef struct file__sink {
    char         *dir;
    int           dirfd;
    kw_sink_buf_t buf;
    int           tmp_pending;  /* this transaction's .tmp exists (write..commit) */
} file__sink_t;

static kw_err_t file__open(kw_sink_t *s, const char *dir, char *errstr, size_t errlen)
{
    file__sink_t *f = calloc(1, sizeof(*f));
    kw_err_t err;

    if (f == NULL || (f->dir = strdup(dir)) == NULL) {
        free(f);
        return kw_seterr(errstr, errlen, KW_ENOMEM, "sink file:%s: out of memory", dir);
    }
    f->dirfd = -1;
    {
        int made = 0;

        if (kw_file_mkdirs(dir, 0755, &made) != 0) {
            err = kw_seterr(errstr, errlen, KW_EIO, "sink file:%s: mkdir: %s", dir,
                            strerror(errno));
            goto fail;
        }
        if (made)
            KW_LOG_I("sink", "created sink directory %s", dir);
    }
    f->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (f->dirfd < 0) {
        err = kw_seterr(errstr, errlen, KW_EIO, "sink file:%s: open directory: %s",
                        dir, strerror(errno));
        goto fail;
    }
    s->impl = f;
    return KW_OK;

fail:
    free(f->dir);
    free(f);
    return err;
}

static void file__close(kw_sink_t *s)
{
    file__sink_t *f = s->impl;

    if (f == NULL)
        return;
    if (f->dirfd >= 0)
        close(f->dirfd);
    free(f->buf.data);
    free(f->dir);
    free(f);
}

/* Lines ('\n') in dir/name, or -1 with errno. */
static long long file__count_lines(int dirfd, const char *name)
{
    char chunk[65536];
    long long lines = 0;
    ssize_t r;
    int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);

    if (fd < 0)
        return -1;
    while ((r = read(fd, chunk, sizeof(chunk))) != 0) {
        if (r < 0) {
            if (errno == EINTR)
                continue;
            close(fd);
            return -1;
        }
        for (ssize_t i = 0; i < r; i++)
            lines += chunk[i] == '\n';
    }
    close(fd);
    return lines;
}

static void file__names(uint64_t batch_id, char *name, size_t namelen, char *tmp,
                        size_t tmplen)
{
    snprintf(name, namelen, "batch-%010" PRIu64 ".jsonl", batch_id);
    snprintf(tmp, tmplen, "batch-%010" PRIu64 ".jsonl.tmp", batch_id);
}

static kw_err_t file__begin(kw_sink_t *s, uint64_t batch_id, char *errstr, size_t errlen)
{
    (void)s;
    (void)batch_id;
    (void)errstr;
    (void)errlen;
    return KW_OK;
}

/* Replay check, then the complete .tmp, fsynced (the final name comes at
 * commit). */
static kw_err_t file__write(kw_sink_t *s, uint64_t batch_id, const kw_record_t *recs,
                            size_t n, kw_sink_stats_t *st, int *replayed,
                            char *errstr, size_t errlen)
{
    file__sink_t *f = s->impl;
    char name[64], tmp[72];
    const char *step;
    struct stat sb;
    kw_err_t err = KW_EIO;
    int fd, saved;

    file__names(batch_id, name, sizeof(name), tmp, sizeof(tmp));
    if (fstatat(f->dirfd, name, &sb, 0) == 0) {
        long long lines = file__count_lines(f->dirfd, name);

        if (lines < 0)
            return kw_seterr(errstr, errlen, KW_EIO, "sink file %s/%s: read: %s",
                             f->dir, name, strerror(errno));
        if ((unsigned long long)lines != n)
            return kw_seterr(errstr, errlen, KW_ECORRUPT, "sink file %s/%s exists "
                             "with %lld lines but batch %" PRIu64 " has %zu records "
                             "(batch id reused?); refusing to overwrite or skip it",
                             f->dir, name, lines, batch_id, n);
        st->duplicates_delivered = n;
        *replayed = 1;
        return KW_OK;
    }
    if (errno != ENOENT)
        return kw_seterr(errstr, errlen, KW_EIO, "sink file %s/%s: stat: %s",
                         f->dir, name, strerror(errno));

    fd = openat(f->dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return kw_seterr(errstr, errlen, KW_EIO, "sink file %s/%s: open: %s",
                         f->dir, tmp, strerror(errno));
    f->tmp_pending = 1;
    f->buf.len = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && kw_sink_json_append(&f->buf, &recs[i]) != KW_OK) {
            close(fd);
            return kw_seterr(errstr, errlen, KW_ENOMEM, "sink file %s/%s: out of "
                             "memory encoding record %zu", f->dir, tmp, i);
        }
        if ((i == n || f->buf.len >= FILE__FLUSH_BYTES) && f->buf.len > 0) {
            if (kw__sink_write_all(fd, f->buf.data, f->buf.len) != 0) {
                step = "write";
                goto fail_fd;
            }
            f->buf.len = 0;
        }
    }
    kw_crash(KW_CRASH_SINK_MID_TXN);
    if (fsync(fd) != 0) {
        step = "fsync";
        goto fail_fd;
    }
    if (close(fd) != 0) {
        fd = -1;
        step = "close";
        goto fail_fd;
    }
    st->stored = n;
    return KW_OK;

fail_fd:                /* the .tmp goes in abort (sink.c calls it, T2) */
    saved = errno;
    if (fd >= 0)
        close(fd);
    return kw_seterr(errstr, errlen, err, "sink file %s/%s: %s: %s", f->dir, tmp,
                     step, strerror(saved));
}

static kw_err_t file__commit(kw_sink_t *s, uint64_t batch_id, char *errstr, size_t errlen)
{
    file__sink_t *f = s->impl;
    char name[64], tmp[72];

    file__names(batch_id, name, sizeof(name), tmp, sizeof(tmp));
    if (renameat(f->dirfd, tmp, f->dirfd, name) != 0)
        return kw_seterr(errstr, errlen, KW_EIO, "sink file %s/%s: rename: %s",
                         f->dir, tmp, strerror(errno));
    f->tmp_pending = 0;
    /* The file is complete (fsynced before the rename); if the directory
     * fsync fails the batch fails, and the retry finds the file and counts
     * a replay -- or, if the rename was lost in a crash, writes it again. */
    if (fsync(f->dirfd) != 0)
        return kw_seterr(errstr, errlen, KW_EIO, "sink file %s: fsync directory "
                         "after writing %s: %s", f->dir, name, strerror(errno));
    if (f->buf.cap > (64u << 20)) {
        free(f->buf.data);
        memset(&f->buf, 0, sizeof(f->buf));
    }
    return KW_OK;
}

/* Remove the .tmp of a batch not committed (an fsync is never retried on
 * the same file: the retry writes a new one). */
static void file__abort(kw_sink_t *s, uint64_t batch_id)
{
    file__sink_t *f = s->impl;
    char name[64], tmp[72];

    if (!f->tmp_pending)
        return;
    file__names(batch_id, name, sizeof(name), tmp, sizeof(tmp));
    if (unlinkat(f->dirfd, tmp, 0) != 0 && errno != ENOENT)
        KW_LOG_W("sink", "sink file %s/%s: remove: %s", f->dir, tmp, strerror(errno));
    f->tmp_pending = 0;
}

const kw__sink_ops_t kw__sink_file_ops = {
    .kind = KW_SINK_FILE,
    .name = "file",
    .arg_what = "directory",
    .arg_meta = "DIR",
    .open = file__open,
    .close = file__close,
    .begin = file__begin,
    .write = file__write,
    .commit = file__commit,
    .abort = file__abort,
};
