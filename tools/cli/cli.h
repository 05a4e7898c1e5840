/*
 * cli.h -- the command-line helpers every program in tools/ shares (kwal and
 * the test kit): option values, -c/-X, error lines and numbers, so each
 * program states only what is its own. Programs print and exit; this is the
 * one place their argument handling lives.
 */
#ifndef KW_TOOLS_CLI_H
#define KW_TOOLS_CLI_H

#include <stddef.h>
#include <stdint.h>

#define KW_CLI_EXIT_USAGE 2

/* Print "<prog>: <message>" and "Try '<prog> --help'." to stderr; returns
 * KW_CLI_EXIT_USAGE, for `return kw_cli_usage_error(...)`. */
int kw_cli_usage_error(const char *prog, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* A decimal number (digits only) in [lo, hi]: 1 and *out, or 0. */
int kw_cli_parse_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out);

/* kw_cli_usage_error() for a subcommand: "<prog>: <message>" and
 * "Try '<prog> <topic> --help'." (topic NULL: "Try '<prog> --help'."). */
int kw_cli_usage_error_topic(const char *prog, const char *topic, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Print "<prog>: <message>" to stderr (after flushing stdout). */
void kw_cli_error(const char *prog, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/*
 * If argv[*i] is option `name`, store its value (from "--name=V", "--name V",
 * "-cV" or "-c V") in *val, advance *i past it and return 1. Return 0 if it is
 * another option, -1 if the value is missing.
 */
int kw_cli_opt_value(int argc, char **argv, int *i, const char *name, const char **val);

/* The options every configured command takes: `-c FILE` sets *path, `-X
 * key=value` is appended to overrides (room for argc entries). Returns as
 * kw_cli_opt_value: 1 consumed, 0 another option, -1 value missing. */
int kw_cli_conf_opt(int argc, char **argv, int *i, const char **path,
                    const char **overrides, size_t *noverrides);

/* A librdkafka property `-X NAME=VALUE` of a test-kit tool, appended to
 * props (room for max; *n entries now). 0, or kw_cli_usage_error's status
 * for a malformed one or one too many. */
int kw_cli_xprop(const char *prog, const char *arg, const char **props, int *n, int max);

/* SIGINT and SIGTERM call handler (which must be async-signal-safe: it
 * asks the service to stop), SIGPIPE is ignored (a closed stdout is an
 * error return, not a death). */
void kw_cli_on_stop_signals(void (*handler)(int));

/* A fatal signal (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT) writes
 * "PROG: fatal signal NAME in pid N; stack:" and the thread's stack (one
 * frame a line, as glibc's backtrace_symbols_fd writes it: resolve an
 * address with addr2line -e PROG) to stderr, then dies of the signal as
 * it would have (a core where core dumps are on; the same exit status).
 * prog must stay valid. Returns 1, or 0 when nothing was installed: a
 * sanitizer build, whose runtime reports these signals itself. */
int kw_cli_on_crash_signals(const char *prog);

#endif /* KW_TOOLS_CLI_H */
