/*
 * test_sink_util.h -- what test_sink.c and test_sink_pg.c share: records,
 * opening a sink, writing a batch that must succeed, and the crash point
 * sink.mid-txn in a child process. Header-only (static inline): the support
 * library does not link the sink; only the sink's tests include this.
 * Include after <cmocka.h>.
 */
#ifndef KW_TEST_SINK_UTIL_H
#define KW_TEST_SINK_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kw_fault.h"
#include "sink.h"

static inline kw_sink_t *sink_open_ok(const char *spec)
{
    kw_sink_t *k = NULL;
    char err[512];

    if (kw_sink_open(spec, &k, err, sizeof(err)) != KW_OK)
        fail_msg("open %s: %s", spec, err);
    return k;
}

/* A record with key "k", a create time of 1700000000000 + off, and value
 * (NULL: a null value). */
static inline kw_record_t sink_rec(const char *topic, int32_t part, int64_t off,
                                   const char *value)
{
    kw_record_t r;

    memset(&r, 0, sizeof(r));
    r.topic = topic;
    r.partition = part;
    r.offset = off;
    r.tstype = KW_TS_CREATE_TIME;
    r.timestamp = 1700000000000 + off;
    r.key = "k";
    r.key_len = 1;
    r.value = value;
    r.value_len = value != NULL ? strlen(value) : 0;
    return r;
}

static inline kw_sink_stats_t sink_write_ok(kw_sink_t *k, uint64_t batch,
                                            const kw_record_t *r, size_t n)
{
    kw_sink_stats_t st;
    char err[512];

    if (kw_sink_write_batch(k, batch, r, n, &st, err, sizeof(err)) != KW_OK)
        fail_msg("write batch %llu: %s", (unsigned long long)batch, err);
    assert_int_equal(st.delivered, n);
    return st;
}

/* The child: open spec, arm sink.mid-txn, write batch 7 with the range
 * t/0 [0, 2), say 'C' on fd before commit. Exits 99 (KW_CRASH_EXIT) at the
 * crash point, 0 when commit found a replay, 10..15 on errors. */
static inline void sink_crash_child(const char *spec, int fd, const kw_record_t *r, size_t n)
{
    kw_sink_t *k = NULL;
    kw_sink_stats_t st;
    char err[512];

    if (kw_sink_open(spec, &k, err, sizeof(err)) != KW_OK)
        _exit(10);
    if (kw_crash_arm("sink.mid-txn", err, sizeof(err)) != KW_OK)
        _exit(11);
    if (kw_sink_txn_begin(k, 7, err, sizeof(err)) != KW_OK ||
        kw_sink_txn_write(k, r, n, err, sizeof(err)) != KW_OK ||
        kw_sink_txn_put_range(k, "t", 0, KW_SINK_RANGE_UNCHECKED, 0, 2, err,
                              sizeof(err)) != KW_OK)
        _exit(12);
    if (write(fd, "C", 1) != 1)
        _exit(13);
    if (kw_sink_txn_commit(k, &st, err, sizeof(err)) != KW_OK)
        _exit(14);
    _exit(st.duplicates_delivered == n ? 0 : 15);
}

/* Run sink_crash_child; its exit status, and whether it reached commit. */
static inline int sink_run_crash_child(const char *spec, const kw_record_t *r, size_t n,
                                       int *reached_commit)
{
    int fds[2], status = 0;
    char c = 0;
    pid_t pid;

    assert_int_equal(pipe(fds), 0);
    fflush(NULL);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        sink_crash_child(spec, fds[1], r, n);
    }
    close(fds[1]);
    *reached_commit = read(fds[0], &c, 1) == 1 && c == 'C';
    close(fds[0]);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

#endif /* KW_TEST_SINK_UTIL_H */
