/* kw_file.c -- see kw_file.h. */
#include "kw_file.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char *kw_file_parent(const char *path, char *dir, size_t len)
{
    const char *slash = strrchr(path, '/');

    if (slash == NULL)
        snprintf(dir, len, ".");
    else if (slash == path)
        snprintf(dir, len, "/");
    else if ((size_t)(slash - path) >= len) {
        errno = ENAMETOOLONG;
        return NULL;
    } else
        snprintf(dir, len, "%.*s", (int)(slash - path), path);
    return slash != NULL ? slash + 1 : path;
}

int kw_file_fsync_parent(const char *path)
{
    char dir[PATH_MAX];
    int fd, rc, saved;

    if (kw_file_parent(path, dir, sizeof(dir)) == NULL)
        return -1;
    fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    rc = fsync(fd);
    saved = errno;
    close(fd);
    errno = saved;
    return rc;
}

int kw_file_mkdirs(const char *dir, unsigned mode, int *created)
{
    char buf[PATH_MAX];
    size_t len = strlen(dir);
    struct stat st;

    if (created != NULL)
        *created = 0;
    if (len == 0 || len >= sizeof(buf)) {
        errno = len == 0 ? ENOENT : ENAMETOOLONG;
        return -1;
    }
    memcpy(buf, dir, len + 1);
    while (len > 1 && buf[len - 1] == '/')
        buf[--len] = '\0';
    for (char *p = buf + 1; ; p++) {
        int last = *p == '\0';

        if (*p != '/' && !last)
            continue;
        *p = '\0';
        if (mkdir(buf, (mode_t)mode) == 0) {
            if (created != NULL)
                *created = 1;
            if (kw_file_fsync_parent(buf) != 0)
                return -1;
        } else if (errno != EEXIST) {
            return -1;
        } else if (stat(buf, &st) != 0) {
            return -1;
        } else if (!S_ISDIR(st.st_mode)) {
            errno = ENOTDIR;
            return -1;
        }
        if (last)
            return 0;
        *p = '/';
    }
}

static int fail(char *errstr, size_t errlen, const char *what, const char *path)
{
    int saved = errno;

    if (errstr != NULL && errlen > 0)
        snprintf(errstr, errlen, "%s %s: %s", what, path, strerror(saved));
    errno = saved;
    return -1;
}

int kw_file_replace(const char *path, const void *data, size_t len, char *errstr,
                    size_t errlen)
{
    char tmp[PATH_MAX];
    const char *p = data;
    size_t off = 0;
    int fd, saved;

    if (snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof(tmp)) {
        errno = ENAMETOOLONG;
        return fail(errstr, errlen, "cannot write", path);
    }
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return fail(errstr, errlen, "cannot create", tmp);
    while (off < len) {
        ssize_t n = write(fd, p + off, len - off);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (n == 0)
                errno = EIO;
            fail(errstr, errlen, "cannot write", tmp);
            goto cleanup;
        }
        off += (size_t)n;
    }
    if (fsync(fd) != 0) {
        fail(errstr, errlen, "cannot fsync", tmp);
        goto cleanup;
    }
    if (close(fd) != 0) {
        fd = -1;
        fail(errstr, errlen, "cannot close", tmp);
        goto cleanup;
    }
    fd = -1;
    if (rename(tmp, path) != 0) {
        fail(errstr, errlen, "cannot rename onto", path);
        goto cleanup;
    }
    if (kw_file_fsync_parent(path) != 0)
        return fail(errstr, errlen, "cannot fsync the directory of", path);
    return 0;

cleanup:
    saved = errno;
    if (fd >= 0)
        close(fd);
    unlink(tmp);
    errno = saved;
    return -1;
}
