/* kw_instance.c -- see kw_instance.h. */
#include "kw_instance.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "kw_file.h"

struct kw_instance {
    int  fd;
    char session_file[PATH_MAX];
};

kw_err_t kw_instance_lock(const char *dir, const char *stem, const char *what,
                          kw_instance_t **out, char *errstr, size_t errlen)
{
    char path[PATH_MAX], pid[32];
    kw_instance_t *inst;
    int n;

    *out = NULL;
    if (dir == NULL || dir[0] == '\0')
        return kw_seterr(errstr, errlen, KW_EINVAL, "%s: no directory", what);
    if (kw_file_mkdirs(dir, 0755, NULL) != 0)
        return kw_seterr(errstr, errlen, KW_EIO, "%s: cannot create %s: %s", what, dir,
                         strerror(errno));
    n = snprintf(path, sizeof(path), "%s/%s.lock", dir, stem);
    if (n < 0 || (size_t)n >= sizeof(path) - 16)
        return kw_seterr(errstr, errlen, KW_EINVAL, "%s: path too long: %s", what, dir);
    inst = calloc(1, sizeof(*inst));
    if (inst == NULL)
        return kw_seterr(errstr, errlen, KW_ENOMEM, "out of memory");
    snprintf(inst->session_file, sizeof(inst->session_file), "%s/%s.zk-session", dir, stem);
    inst->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (inst->fd < 0) {
        int e = errno;

        free(inst);
        return kw_seterr(errstr, errlen, KW_EIO, "%s: cannot open %s: %s", what, path,
                         strerror(e));
    }
    if (flock(inst->fd, LOCK_EX | LOCK_NB) < 0) {
        int e = errno;
        char holder[32] = "";
        ssize_t k = pread(inst->fd, holder, sizeof(holder) - 1, 0);

        holder[k > 0 ? k : 0] = '\0';
        holder[strcspn(holder, "\n")] = '\0';
        close(inst->fd);
        free(inst);
        if (e != EWOULDBLOCK)
            return kw_seterr(errstr, errlen, KW_EIO, "%s: cannot lock %s: %s", what, path,
                             strerror(e));
        return kw_seterr(errstr, errlen, KW_ELOCKED,
                         "%s: %s is in use by another kwal process%s%s%s: one process "
                         "per instance", what, path, holder[0] ? " (pid " : "", holder,
                         holder[0] ? ")" : "");
    }
    n = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
    if (ftruncate(inst->fd, 0) != 0 || pwrite(inst->fd, pid, (size_t)n, 0) != n) {
        /* only the message of a refused second process would lack the pid */
    }
    *out = inst;
    return KW_OK;
}

void kw_instance_unlock(kw_instance_t *inst)
{
    if (inst == NULL)
        return;
    close(inst->fd);
    free(inst);
}

const char *kw_instance_session_file(const kw_instance_t *inst)
{
    return inst->session_file;
}

/* The real path of path into out; one that does not exist yet (a database
 * not created yet) is its parent's real path and its last component. */
static void resolve(const char *path, char *out, size_t len)
{
    char copy[PATH_MAX], real[PATH_MAX];
    size_t n = strlen(path);
    char *slash;

    if (realpath(path, real) != NULL) {
        snprintf(out, len, "%s", real);
        return;
    }
    if (n == 0 || n >= sizeof(copy)) {
        snprintf(out, len, "%s", path);
        return;
    }
    memcpy(copy, path, n + 1);
    while (n > 1 && copy[n - 1] == '/')
        copy[--n] = '\0';
    slash = strrchr(copy, '/');
    if (slash == NULL) {
        if (realpath(".", real) != NULL)
            snprintf(out, len, "%s/%s", real, copy);
        else
            snprintf(out, len, "%s", copy);
        return;
    }
    *slash = '\0';
    if (realpath(slash == copy ? "/" : copy, real) != NULL)
        snprintf(out, len, "%s/%s", strcmp(real, "/") == 0 ? "" : real, slash + 1);
    else
        snprintf(out, len, "%s/%s", copy, slash + 1);
}

void kw_instance_default_name(const char *path, char *buf, size_t len)
{
    char real[2 * PATH_MAX + 2], host[200] = "localhost";
    const char *p = real;
    uint64_t h = UINT64_C(0xcbf29ce484222325);      /* FNV-1a 64 */

    resolve(path, real, sizeof(real));
    for (; *p != '\0'; p++) {
        h ^= (unsigned char)*p;
        h *= UINT64_C(0x100000001b3);
    }
    if (gethostname(host, sizeof(host) - 1) != 0)
        snprintf(host, sizeof(host), "localhost");
    host[strcspn(host, "/")] = '\0';                 /* a ZooKeeper path component */
    snprintf(buf, len, "%s-%016" PRIx64, host, h);
}

const char *kw_instance_name(const char *instance_id, const char *state, const char *fallback,
                             char *buf, size_t len)
{
    if (instance_id != NULL && instance_id[0] != '\0')
        snprintf(buf, len, "%s", instance_id);
    else if (state != NULL)
        kw_instance_default_name(state, buf, len);
    else
        snprintf(buf, len, "%s", fallback);
    return buf;
}
