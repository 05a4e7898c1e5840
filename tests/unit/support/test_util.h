/*
 * test_util.h -- small helpers shared by kwal's unit tests: temporary
 * directory trees, file surgery (flip a bit, cut a file, overwrite bytes,
 * copy a tree), directory listings, a seeded PRNG and deterministic payloads,
 * and a capture of kw_log messages.
 *
 * Every function is plain C over POSIX and reports failure with -1 (errno
 * set) or NULL, so a test can assert on it; none of them calls cmocka itself.
 * The log capture is thread-safe (messages arrive from WAL I/O threads); the
 * rest is meant for the test's own thread.
 */
#ifndef KW_TEST_UTIL_H
#define KW_TEST_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "kw_log.h"

/* ---- Temporary trees and files ---- */

/* mkdtemp("$TMPDIR/kwal-<tag>-XXXXXX") (TMPDIR unset: /tmp). Returns a
 * malloc'd absolute path the caller frees, NULL on failure. */
char *test_tmpdir_new(const char *tag);

/* rm -rf path (no error if it does not exist). 0 or -1. */
int test_rmtree(const char *path);

/* snprintf into a fixed buffer, aborting on truncation (paths in tests are
 * short; a truncated path would make a test act on the wrong file). */
void test_path(char *buf, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

int test_file_size(const char *path, uint64_t *size);
/* Whole file into a malloc'd buffer (*data may be NULL when empty). */
int test_read_file(const char *path, uint8_t **data, size_t *len);
/* The first line of a file (without its newline) into buf: 0, or -1 when
 * the file cannot be read, is empty, or its line does not fit in cap. */
int test_read_line(const char *path, char *buf, size_t cap);
/* $KWAL_BIN_DIR/name into out: 1 there, 0 KWAL_BIN_DIR is not set (a test
 * run by hand: "skipping the tests that need <what>" on stderr), -1 missing
 * (said on stderr). tag names the test in the messages. */
int test_bin_tool(const char *tag, const char *name, const char *what, char *out, size_t cap);
/* Create or replace path with exactly data[0..len). */
int test_write_file(const char *path, const void *data, size_t len);
/* pwrite data at off (the file grows if needed). */
int test_overwrite(const char *path, uint64_t off, const void *data, size_t len);
/* Invert bit `bit` (0..7) of the byte at off. */
int test_flip_bit(const char *path, uint64_t off, unsigned bit);
/* truncate(2). */
int test_truncate_file(const char *path, uint64_t len);
int test_copy_file(const char *from, const char *to);
/* Copy a directory tree (directories and regular files) to `to`, which must
 * not exist yet. */
int test_copy_tree(const char *from, const char *to);
/* 1 when both files exist and hold the same bytes, 0 otherwise. */
int test_files_equal(const char *a, const char *b);

/* Sorted names in dir (no "." or ".."); with suffix non-NULL only names
 * ending in it. *names is malloc'd, free with test_free_names. */
int test_list_dir(const char *dir, const char *suffix, char ***names, size_t *n);
void test_free_names(char **names, size_t n);
/* Number of entries test_list_dir would return, or -1. */
long test_count_files(const char *dir, const char *suffix);

/* ---- Deterministic data ---- */

/* splitmix64: next value of the sequence in *state. */
uint64_t test_rand(uint64_t *state);
/* Uniform in [0, n) (n > 0). */
uint64_t test_rand_below(uint64_t *state, uint64_t n);
void test_fill_random(void *buf, size_t len, uint64_t *state);
/* A compressible pattern that still differs per (seed, position). */
void test_fill_pattern(void *buf, size_t len, uint64_t seed);

/* ---- Log capture ---- */

/* Install a kw_log hook that keeps the messages (the last 512) until
 * test_log_capture_end(). */
void test_log_capture_begin(void);
void test_log_capture_end(void);
/* Captured messages at a level <= max_level (ERROR is 0) containing needle
 * (NULL: any). */
size_t test_log_count(kw_log_level_t max_level, const char *needle);
/* Forget what was captured so far (capture stays on). */
void test_log_clear(void);

#endif /* KW_TEST_UTIL_H */
