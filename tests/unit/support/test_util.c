/*
 * test_util.c -- see test_util.h. Plain POSIX helpers for the unit tests; no
 * cmocka here, every function reports failure to its caller.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "test_util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- Temporary trees and files ---- */

char *test_tmpdir_new(const char *tag)
{
    const char *base = getenv("TMPDIR");
    char tmpl[4096];
    char *res;

    if (base == NULL || base[0] == '\0')
        base = "/tmp";
    if (snprintf(tmpl, sizeof(tmpl), "%s/kwal-%s-XXXXXX", base, tag) >= (int)sizeof(tmpl))
        return NULL;
    if (mkdtemp(tmpl) == NULL)
        return NULL;
    res = realpath(tmpl, NULL);
    if (res == NULL)
        rmdir(tmpl);
    return res;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st; (void)ftw;
    if (flag == FTW_DP)
        return rmdir(path);
    return unlink(path);
}

int test_rmtree(const char *path)
{
    struct stat st;

    if (lstat(path, &st) < 0)
        return errno == ENOENT ? 0 : -1;
    return nftw(path, rm_entry, 32, FTW_DEPTH | FTW_PHYS);
}

void test_path(char *buf, size_t cap, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(buf, cap, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= cap) {
        fprintf(stderr, "test_path: path too long\n");
        abort();
    }
}

int test_file_size(const char *path, uint64_t *size)
{
    struct stat st;

    if (stat(path, &st) < 0)
        return -1;
    *size = (uint64_t)st.st_size;
    return 0;
}

int test_read_file(const char *path, uint8_t **data, size_t *len)
{
    struct stat st;
    uint8_t *buf = NULL;
    size_t done = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    *data = NULL;
    *len = 0;
    if (fd < 0)
        return -1;
    if (fstat(fd, &st) < 0)
        goto fail;
    if (st.st_size > 0) {
        buf = malloc((size_t)st.st_size);
        if (buf == NULL)
            goto fail;
    }
    while (done < (size_t)st.st_size) {
        ssize_t n = pread(fd, buf + done, (size_t)st.st_size - done, (off_t)done);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        done += (size_t)n;
    }
    close(fd);
    *data = buf;
    *len = done;
    return 0;

fail:
    free(buf);
    close(fd);
    return -1;
}

static int write_all(int fd, const void *data, size_t len, uint64_t off)
{
    size_t done = 0;

    while (done < len) {
        ssize_t n = pwrite(fd, (const char *)data + done, len - done, (off_t)(off + done));

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        done += (size_t)n;
    }
    return 0;
}

int test_write_file(const char *path, const void *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    int rc;

    if (fd < 0)
        return -1;
    rc = write_all(fd, data, len, 0);
    if (close(fd) < 0)
        rc = -1;
    return rc;
}

int test_overwrite(const char *path, uint64_t off, const void *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    int rc;

    if (fd < 0)
        return -1;
    rc = write_all(fd, data, len, off);
    if (close(fd) < 0)
        rc = -1;
    return rc;
}

int test_flip_bit(const char *path, uint64_t off, unsigned bit)
{
    uint8_t b;
    int fd = open(path, O_RDWR | O_CLOEXEC);
    int rc = -1;

    if (fd < 0)
        return -1;
    if (pread(fd, &b, 1, (off_t)off) != 1) {
        errno = errno ? errno : ERANGE;
        goto done;
    }
    b ^= (uint8_t)(1u << (bit & 7u));
    rc = write_all(fd, &b, 1, off);

done:
    close(fd);
    return rc;
}

int test_truncate_file(const char *path, uint64_t len)
{
    return truncate(path, (off_t)len);
}

int test_copy_file(const char *from, const char *to)
{
    uint8_t *data;
    size_t len;
    int rc;

    if (test_read_file(from, &data, &len) < 0)
        return -1;
    rc = test_write_file(to, data, len);
    free(data);
    return rc;
}

int test_copy_tree(const char *from, const char *to)
{
    char **names = NULL;
    size_t n = 0, i;
    int rc = -1;

    if (mkdir(to, 0700) < 0)
        return -1;
    if (test_list_dir(from, NULL, &names, &n) < 0)
        return -1;
    for (i = 0; i < n; i++) {
        char a[4096], b[4096];
        struct stat st;

        test_path(a, sizeof(a), "%s/%s", from, names[i]);
        test_path(b, sizeof(b), "%s/%s", to, names[i]);
        if (lstat(a, &st) < 0)
            goto done;
        if (S_ISDIR(st.st_mode)) {
            if (test_copy_tree(a, b) < 0)
                goto done;
        } else if (S_ISREG(st.st_mode)) {
            if (test_copy_file(a, b) < 0)
                goto done;
        }
    }
    rc = 0;

done:
    test_free_names(names, n);
    return rc;
}

int test_files_equal(const char *a, const char *b)
{
    uint8_t *da = NULL, *db = NULL;
    size_t la, lb;
    int eq = 0;

    if (test_read_file(a, &da, &la) < 0)
        return 0;
    if (test_read_file(b, &db, &lb) == 0)
        eq = la == lb && (la == 0 || memcmp(da, db, la) == 0);
    free(da);
    free(db);
    return eq;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int test_list_dir(const char *dir, const char *suffix, char ***names, size_t *n)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    char **v = NULL;
    size_t cnt = 0, cap = 0, slen = suffix ? strlen(suffix) : 0;

    *names = NULL;
    *n = 0;
    if (d == NULL)
        return -1;
    while ((de = readdir(d)) != NULL) {
        size_t len = strlen(de->d_name);

        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (suffix != NULL && (len < slen || strcmp(de->d_name + len - slen, suffix) != 0))
            continue;
        if (cnt == cap) {
            char **nv;

            cap = cap ? cap * 2 : 16;
            nv = realloc(v, cap * sizeof(*v));
            if (nv == NULL)
                goto fail;
            v = nv;
        }
        v[cnt] = strdup(de->d_name);
        if (v[cnt] == NULL)
            goto fail;
        cnt++;
    }
    closedir(d);
    if (cnt > 0)
        qsort(v, cnt, sizeof(*v), cmp_names);
    *names = v;
    *n = cnt;
    return 0;

fail:
    closedir(d);
    test_free_names(v, cnt);
    errno = ENOMEM;
    return -1;
}

void test_free_names(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

long test_count_files(const char *dir, const char *suffix)
{
    char **names;
    size_t n;

    if (test_list_dir(dir, suffix, &names, &n) < 0)
        return -1;
    test_free_names(names, n);
    return (long)n;
}

/* ---- Deterministic data ---- */

uint64_t test_rand(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

uint64_t test_rand_below(uint64_t *state, uint64_t n)
{
    return test_rand(state) % n;
}

void test_fill_random(void *buf, size_t len, uint64_t *state)
{
    uint8_t *p = buf;

    while (len >= 8) {
        uint64_t v = test_rand(state);

        memcpy(p, &v, 8);
        p += 8;
        len -= 8;
    }
    if (len > 0) {
        uint64_t v = test_rand(state);

        memcpy(p, &v, len);
    }
}

void test_fill_pattern(void *buf, size_t len, uint64_t seed)
{
    uint8_t *p = buf;

    /* Runs of 64 equal bytes whose value depends on seed and run number:
     * compresses well, and a shifted or mixed-up payload still differs. */
    for (size_t i = 0; i < len; i++)
        p[i] = (uint8_t)(seed * 31u + (i / 64u) * 7u + ((i % 64u) == 0 ? i / 64u : 0u));
}

/* ---- Log capture ---- */

#define LOG_KEEP 512

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
    kw_log_level_t level;
    char          *msg;
} log_msgs[LOG_KEEP];
static size_t log_total;

static void log_hook(kw_log_level_t level, const char *msg, void *opaque)
{
    char *copy = strdup(msg);
    size_t slot;

    (void)opaque;
    pthread_mutex_lock(&log_mu);
    slot = log_total % LOG_KEEP;
    free(log_msgs[slot].msg);
    log_msgs[slot].level = level;
    log_msgs[slot].msg = copy;
    log_total++;
    pthread_mutex_unlock(&log_mu);
}

void test_log_clear(void)
{
    pthread_mutex_lock(&log_mu);
    for (size_t i = 0; i < LOG_KEEP; i++) {
        free(log_msgs[i].msg);
        log_msgs[i].msg = NULL;
    }
    log_total = 0;
    pthread_mutex_unlock(&log_mu);
}

void test_log_capture_begin(void)
{
    test_log_clear();
    kw_log_set_hook(log_hook, NULL);
}

void test_log_capture_end(void)
{
    kw_log_set_hook(NULL, NULL);
    test_log_clear();
}

size_t test_log_count(kw_log_level_t max_level, const char *needle)
{
    size_t cnt = 0;

    pthread_mutex_lock(&log_mu);
    for (size_t i = 0; i < LOG_KEEP; i++) {
        if (log_msgs[i].msg == NULL || log_msgs[i].level > max_level)
            continue;
        if (needle == NULL || strstr(log_msgs[i].msg, needle) != NULL)
            cnt++;
    }
    pthread_mutex_unlock(&log_mu);
    return cnt;
}

int test_read_line(const char *path, char *buf, size_t cap)
{
    uint8_t *data = NULL;
    size_t len = 0;

    if (test_read_file(path, &data, &len) != 0 || len == 0 || len >= cap) {
        free(data);
        return -1;
    }
    memcpy(buf, data, len);
    buf[len] = '\0';
    buf[strcspn(buf, "\r\n")] = '\0';
    free(data);
    return 0;
}

int test_bin_tool(const char *tag, const char *name, const char *what, char *out, size_t cap)
{
    const char *bindir = getenv("KWAL_BIN_DIR");

    if (bindir == NULL || bindir[0] == '\0') {
        fprintf(stderr, "%s: KWAL_BIN_DIR is not set (run through ctest); skipping the "
                "tests that need %s\n", tag, what);
        return 0;
    }
    test_path(out, cap, "%s/%s", bindir, name);
    if (access(out, X_OK) != 0) {
        fprintf(stderr, "%s: %s is missing\n", tag, out);
        return -1;
    }
    return 1;
}
