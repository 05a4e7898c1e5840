/* kw_log.c -- see kw_log.h. */
#include "kw_log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static atomic_int log_level = -1;   /* -1: not yet read from the environment */
static _Atomic(kw_log_hook_t) log_hook;
static _Atomic(void *) log_hook_opaque;

static const char *const level_name[] = { "ERROR", "WARN", "INFO", "DEBUG" };

int kw_log_level_parse(const char *s)
{
    static const char *const names[] = { "error", "warn", "info", "debug" };

    for (int i = 0; i < 4; i++)
        if (s != NULL && strcasecmp(s, names[i]) == 0)
            return i;
    return -1;
}

kw_log_level_t kw_log_get_level(void)
{
    int level = atomic_load(&log_level);

    if (level < 0) {
        level = kw_log_level_parse(getenv("KWAL_LOG_LEVEL"));
        if (level < 0)
            level = KW_LOG_INFO;
        atomic_store(&log_level, level);
    }
    return (kw_log_level_t)level;
}

void kw_log_set_level(kw_log_level_t level)
{
    atomic_store(&log_level, (int)level);
}

void kw_log_set_hook(kw_log_hook_t hook, void *opaque)
{
    atomic_store(&log_hook_opaque, opaque);
    atomic_store(&log_hook, hook);
}

void kw_log(kw_log_level_t level, const char *module, const char *fmt, ...)
{
    char msg[1024], line[1200];
    struct timespec ts;
    struct tm tm;
    va_list ap;
    kw_log_hook_t hook = atomic_load(&log_hook);
    int n;

    if (level > kw_log_get_level() && hook == NULL)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (hook != NULL)
        hook(level, msg, atomic_load(&log_hook_opaque));
    if (level > kw_log_get_level())
        return;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n = snprintf(line, sizeof(line),
                 "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s %s: %s\n",
                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                 tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000L,
                 level_name[level], module, msg);
    if (n > (int)sizeof(line) - 1)
        n = (int)sizeof(line) - 1;
    if (write(STDERR_FILENO, line, (size_t)n) < 0) {
        /* Nowhere left to report it. */
    }
}
