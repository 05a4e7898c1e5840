/*
 * test_io.h -- a kw_wal_io_t backend for tests: POSIX underneath, plus fault
 * injection per replica and simulated power loss.
 *
 * Faults. For each replica index (0..KW_WAL_MAX_REPLICAS-1, or
 * TEST_IO_ALL_REPLICAS when setting) and each operation of the table, a test
 * can make the Nth next call fail with an errno (EIO, ENOSPC, ...), make every
 * call from now on fail, make the Nth next pwritev write only part of its
 * bytes and return the short count, and sleep before every call. Settings can
 * change while the WAL runs. Every call is counted per replica and
 * operation, injected failures too, so a test can prove that a failed
 * replica's fdatasync was not called again.
 *
 * Power loss, in the manner of SQLite's crash tests. Writes go through to the
 * real files, but for every file the backend remembers what the file held at
 * its last fdatasync/fsync (an undo log of the bytes that later writes and
 * truncations replaced, plus the durable size), and for every name what file
 * it named at the last fsync of its directory. test_io_crash() (or an armed
 * test_io_crash_after()) then:
 *
 *   1. makes every later call through the table fail with EIO (close still
 *      closes, so descriptors are not leaked);
 *   2. for every name whose directory was not fsynced since it was created,
 *      renamed or unlinked, picks at random the old or the new binding (a
 *      file created without a directory fsync may vanish, an unsynced rename
 *      or unlink may be undone);
 *   3. rewrites every file on disk as its durable content followed by a
 *      random prefix of what was written after it, whose last bytes may be
 *      replaced by garbage or zeros (a torn write). Bytes that were durable
 *      are never changed.
 *
 * The next WAL opened on the same directories (with any backend) sees the
 * disk as a machine would after losing power. Directories are not tracked:
 * create replica directories before the WAL opens them.
 *
 * Thread-safety: every function may be called from any thread at any time;
 * the table itself is called by the WAL's threads.
 */
#ifndef KW_TEST_IO_H
#define KW_TEST_IO_H

#include <stdint.h>

#include "wal.h"

typedef struct test_io test_io_t;

typedef enum {
    TEST_IO_OPEN = 0,
    TEST_IO_CLOSE,
    TEST_IO_PREAD,
    TEST_IO_PWRITEV,
    TEST_IO_FDATASYNC,
    TEST_IO_FSYNC,
    TEST_IO_FTRUNCATE,
    TEST_IO_UNLINK,
    TEST_IO_RENAME,
    TEST_IO_MKDIR,
    TEST_IO_WRITEBACK,     /* a hint: counted and fault-injectable, changes
                            * nothing that a crash keeps or drops */
    TEST_IO_NOPS
} test_io_op_t;

#define TEST_IO_ALL_REPLICAS (-1)

/* NULL on allocation failure. */
test_io_t *test_io_new(void);
/* The WAL using the table must be closed first. NULL is a no-op. */
void test_io_destroy(test_io_t *t);
/* The table to put in kw_wal_options_t.io; valid until test_io_destroy. */
const kw_wal_io_t *test_io_table(test_io_t *t);

/* The nth next call (1: the very next) of op on replica fails with err. */
void test_io_fail_nth(test_io_t *t, int replica, test_io_op_t op,
                      unsigned nth, int err);
/* Every call of op on replica fails with err from now on. */
void test_io_fail_always(test_io_t *t, int replica, test_io_op_t op, int err);
/* The nth next pwritev on replica writes only `keep` bytes (if keep is not
 * below the total, half of it, at least 1) and returns that count. */
void test_io_short_write(test_io_t *t, int replica, unsigned nth, size_t keep);
/* Sleep usec before every call of op on replica (0: no delay). */
void test_io_delay(test_io_t *t, int replica, test_io_op_t op, unsigned usec);
/* Remove every fault, short write and delay of replica. */
void test_io_clear(test_io_t *t, int replica);

/* Calls of op on replica (failed ones included), and injected failures. */
unsigned long test_io_calls(test_io_t *t, int replica, test_io_op_t op);
unsigned long test_io_failures(test_io_t *t, int replica, test_io_op_t op);
/* Calls of op summed over all replicas. */
unsigned long test_io_calls_all(test_io_t *t, test_io_op_t op);

/* Power loss. Mutating calls are pwritev, fdatasync, fsync, ftruncate,
 * unlink, rename, mkdir, and open with O_CREAT or O_TRUNC. */
unsigned long test_io_mutations(test_io_t *t);
/* Arm: the nth next mutating call is not carried out; instead the machine
 * "loses power" (test_io_crash(seed)) and the call fails with EIO. */
void test_io_crash_after(test_io_t *t, unsigned long nth, uint64_t seed);
/* Lose power now. Later calls through the table fail with EIO. Idempotent. */
void test_io_crash(test_io_t *t, uint64_t seed);
int test_io_crashed(test_io_t *t);

/* What the last crash did, for messages. */
typedef struct test_io_crash_report {
    unsigned files_rewritten;   /* files whose unsynced tail was cut or torn */
    unsigned names_reverted;    /* names given back their pre-fsync binding */
    uint64_t bytes_dropped;     /* unsynced bytes not kept */
} test_io_crash_report_t;
void test_io_last_crash(test_io_t *t, test_io_crash_report_t *out);

#endif /* KW_TEST_IO_H */
