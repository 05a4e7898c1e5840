/*
 * cli.h -- small helpers shared by the helper programs in tools/ (argument
 * errors and numbers), so each program states only what is its own.
 */
#ifndef KW_TOOLS_CLI_H
#define KW_TOOLS_CLI_H

#include <stdint.h>

#define KW_CLI_EXIT_USAGE 2

/* Print "<prog>: <message>" and "Try '<prog> --help'." to stderr; returns
 * KW_CLI_EXIT_USAGE, for `return kw_cli_usage_error(...)`. */
int kw_cli_usage_error(const char *prog, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* A decimal number (digits only) in [lo, hi]: 1 and *out, or 0. */
int kw_cli_parse_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out);

#endif /* KW_TOOLS_CLI_H */
