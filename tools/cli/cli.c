/* cli.c -- see cli.h. */
#include "cli.h"

#include <errno.h>
#include <execinfo.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int kw_cli_usage_error(const char *prog, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    fflush(stdout);
    fprintf(stderr, "%s: %s\nTry '%s --help'.\n", prog, msg, prog);
    return KW_CLI_EXIT_USAGE;
}

int kw_cli_parse_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
    unsigned long long v;
    char *end;

    if (*s < '0' || *s > '9')
        return 0;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < lo || v > hi)
        return 0;
    *out = v;
    return 1;
}

int kw_cli_xprop(const char *prog, const char *arg, const char **props, int *n, int max)
{
    if (strchr(arg, '=') == NULL || arg[0] == '=')
        return kw_cli_usage_error(prog, "-X: '%s' is not NAME=VALUE", arg);
    if (*n >= max)
        return kw_cli_usage_error(prog, "-X: at most %d properties", max);
    props[(*n)++] = arg;
    return 0;
}

int kw_cli_opt_value(int argc, char **argv, int *i, const char *name, const char **val)
{
    const char *a = argv[*i];
    size_t len = strlen(name);

    if (strncmp(a, name, len) != 0)
        return 0;
    if (a[len] == '\0') {
        if (*i + 1 >= argc)
            return -1;
        *val = argv[++*i];
        return 1;
    }
    if (name[1] != '-') {          /* -cFILE, -Xkey=value */
        *val = a + len;
        return 1;
    }
    if (a[len] == '=') {           /* --name=value */
        *val = a + len + 1;
        return 1;
    }
    return 0;
}

int kw_cli_conf_opt(int argc, char **argv, int *i, const char **path,
                  const char **overrides, size_t *noverrides)
{
    const char *v;
    int r = kw_cli_opt_value(argc, argv, i, "-c", &v);

    if (r > 0)
        *path = v;
    if (r == 0 && (r = kw_cli_opt_value(argc, argv, i, "-X", &v)) > 0)
        overrides[(*noverrides)++] = v;
    return r;
}

void kw_cli_error(const char *prog, const char *fmt, ...)
{
    char msg[2048];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    fflush(stdout);
    fprintf(stderr, "%s: %s\n", prog, msg);
}

int kw_cli_usage_error_topic(const char *prog, const char *topic, const char *fmt, ...)
{
    char msg[2048];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    fflush(stdout);
    fprintf(stderr, "%s: %s\nTry '%s%s%s --help'.\n", prog, msg, prog,
            topic != NULL ? " " : "", topic != NULL ? topic : "");
    return KW_CLI_EXIT_USAGE;
}

void kw_cli_on_stop_signals(void (*handler)(int))
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = handler;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
}

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define KW_CLI_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define KW_CLI_SANITIZER 1
#endif
#endif

#ifndef KW_CLI_SANITIZER
static const char *crash_prog = "?";

static void put_str(const char *s)
{
    ssize_t n = write(STDERR_FILENO, s, strlen(s));

    (void)n;        /* nothing better to do with a failed write here */
}

/* Async-signal-safe: write(2), backtrace (preloaded below: its first call
 * may allocate), backtrace_symbols_fd, sigaction, raise. */
static void on_crash(int sig)
{
    void *frames[64];
    char num[24], *p = num + sizeof(num);
    long pid = (long)getpid();
    int n;
    struct sigaction sa;

    *--p = '\0';
    do {
        *--p = (char)('0' + pid % 10);
        pid /= 10;
    } while (pid > 0 && p > num);
    put_str(crash_prog);
    put_str(": fatal signal ");
    put_str(sig == SIGSEGV ? "SIGSEGV" : sig == SIGBUS ? "SIGBUS" : sig == SIGILL ? "SIGILL"
            : sig == SIGFPE ? "SIGFPE" : "SIGABRT");
    put_str(" in pid ");
    put_str(p);
    put_str("; stack:\n");
    n = backtrace(frames, (int)(sizeof(frames) / sizeof(frames[0])));
    backtrace_symbols_fd(frames, n, STDERR_FILENO);
    /* die of it as without this handler */
    memset(&sa, 0, sizeof(sa));
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = SIG_DFL;
    sigaction(sig, &sa, NULL);
    raise(sig);
}
#endif

int kw_cli_on_crash_signals(const char *prog)
{
#ifdef KW_CLI_SANITIZER
    (void)prog;
    return 0;
#else
    static const int sigs[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT};
    struct sigaction sa;
    void *warm[1];

    crash_prog = prog;
    (void)backtrace(warm, 1);   /* loads what backtrace needs, outside a handler */
    memset(&sa, 0, sizeof(sa));
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_crash;
    sa.sa_flags = SA_RESETHAND | SA_NODEFER;
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        sigaction(sigs[i], &sa, NULL);
    return 1;
#endif
}
