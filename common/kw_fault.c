/*
 * kw_fault.c -- crash points (KWAL_CRASH_AT) and libfiu failure points; see
 * kw_fault.h.
 */
#include "kw_fault.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FIU_ENABLE 1
#include <fiu.h>
#include <fiu-control.h>

static const struct {
    const char *name, *desc;
} crash_points[] = {
#define KW__CRASH_ROW(e, name, desc) { name, desc },
    KW_CRASH_POINTS(KW__CRASH_ROW)
    KW_DIRECT_CRASH_POINTS(KW__CRASH_ROW)
#undef KW__CRASH_ROW
};

int kw__crash_armed = KW__CRASH_COUNT;
static long crash_nth;
static atomic_long crash_passes;
static int fiu_ready;

const char *kw_crash_point_name(kw_crash_point_t p)
{
    return (unsigned)p < KW__CRASH_COUNT ? crash_points[p].name : NULL;
}

const char *kw_crash_point_desc(kw_crash_point_t p)
{
    return (unsigned)p < KW__CRASH_COUNT ? crash_points[p].desc : NULL;
}

void kw__crash_pass(kw_crash_point_t p)
{
    char msg[256];
    long n = atomic_fetch_add(&crash_passes, 1) + 1;
    int len;

    if (n != crash_nth)
        return;
    /* no stdio, no locks: other threads may hold them */
    len = snprintf(msg, sizeof(msg), "kwal: crash point %s reached (pass %ld): "
                   "exiting now with status %d\n", crash_points[p].name, n,
                   KW_CRASH_EXIT);
    if (len > 0)
        (void)!write(STDERR_FILENO, msg, (size_t)len < sizeof(msg) ? (size_t)len
                                                                   : sizeof(msg) - 1);
    _exit(KW_CRASH_EXIT);
}

kw_err_t kw_crash_arm(const char *spec, char *errstr, size_t errlen)
{
    const char *colon;
    size_t len;
    long nth = 1;

    if (spec == NULL || spec[0] == '\0') {
        kw__crash_armed = KW__CRASH_COUNT;
        return KW_OK;
    }
    colon = strchr(spec, ':');
    len = colon != NULL ? (size_t)(colon - spec) : strlen(spec);
    if (colon != NULL) {
        char *end;

        errno = 0;
        nth = strtol(colon + 1, &end, 10);
        if (errno != 0 || end == colon + 1 || *end != '\0' || nth < 1)
            return kw_seterr(errstr, errlen, KW_EINVAL, "crash point '%s': the pass "
                             "after ':' must be a whole number >= 1", spec);
    }
    for (int i = 0; i < KW__CRASH_COUNT; i++) {
        if (strlen(crash_points[i].name) == len &&
            strncmp(crash_points[i].name, spec, len) == 0) {
            crash_nth = nth;
            atomic_store(&crash_passes, 0);
            kw__crash_armed = i;
            return KW_OK;
        }
    }
    return kw_seterr(errstr, errlen, KW_EINVAL, "unknown crash point '%.*s' (kwal "
                     "--list-crash-points lists them)", (int)len, spec);
}

kw_err_t kw_fault_init(char *errstr, size_t errlen)
{
    const char *crash = getenv("KWAL_CRASH_AT");
    const char *cmds = getenv("KWAL_FIU");
    const char *ctrl = getenv("KWAL_FIU_CTRL");
    char why[256];

    if (kw_crash_arm(crash, why, sizeof(why)) != KW_OK)
        return kw_seterr(errstr, errlen, KW_ECONFIG, "KWAL_CRASH_AT: %s", why);
    if ((cmds == NULL || cmds[0] == '\0') && (ctrl == NULL || ctrl[0] == '\0'))
        return KW_OK;
    if (fiu_init(0) != 0)
        return kw_seterr(errstr, errlen, KW_ECONFIG, "KWAL_FIU: libfiu failed to start");
    fiu_ready = 1;
    if (cmds != NULL && cmds[0] != '\0') {
        char *copy = strdup(cmds), *save = NULL;

        if (copy == NULL)
            return kw_seterr(errstr, errlen, KW_ENOMEM, "out of memory");
        for (char *c = strtok_r(copy, ";", &save); c != NULL;
             c = strtok_r(NULL, ";", &save)) {
            char *err = NULL;

            while (*c == ' ')
                c++;
            if (*c == '\0')
                continue;
            if (fiu_rc_string(c, &err) != 0) {
                kw_seterr(errstr, errlen, KW_ECONFIG, "KWAL_FIU: '%s': %s", c,
                          err != NULL ? err : "rejected by libfiu");
                free(copy);
                return KW_ECONFIG;
            }
        }
        free(copy);
    }
    if (ctrl != NULL && ctrl[0] != '\0' && fiu_rc_fifo(ctrl) != 0)
        return kw_seterr(errstr, errlen, KW_ECONFIG, "KWAL_FIU_CTRL: cannot create "
                         "the control pipes %s-%ld.in/.out", ctrl, (long)getpid());
    return KW_OK;
}

int kw_fault(const char *name)
{
    return fiu_ready ? fiu_fail(name) : 0;
}

int kw_fault_active(void)
{
    return fiu_ready;
}

long kw_fault_info(void)
{
    return fiu_ready ? (long)(intptr_t)fiu_failinfo() : 0;
}
