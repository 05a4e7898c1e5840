/*
 * test_testio.c -- tests of the test backend itself (support/test_io.h), so
 * that the WAL's power-loss and fault tests rest on a simulator that does
 * what it claims.
 *
 * How: the I/O table is driven directly, as the WAL would (open, pwritev,
 * fdatasync, fsync of the directory, rename, unlink, ftruncate), then power
 * is "lost" with many seeds and the files on disk are checked against the
 * model: durable bytes are always kept exactly; unsynced bytes are kept as a
 * prefix, possibly torn at its end; a name whose directory was not fsynced
 * may take its old binding back; nothing works after the crash. Every seed
 * must respect the model, and over all seeds every allowed outcome must
 * occur at least once (otherwise the simulator would be too kind). Faults
 * (fail Nth, fail always, short writes) and call counts are checked too.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "test_io.h"
#include "test_util.h"

#define SEEDS 200

typedef struct tstate {
    char      *root;
    test_io_t *io;
} tstate_t;

static int setup(void **state)
{
    tstate_t *s = calloc(1, sizeof(*s));

    if (s == NULL)
        return -1;
    s->root = test_tmpdir_new("testio");
    *state = s;
    return s->root != NULL ? 0 : -1;
}

static int teardown(void **state)
{
    tstate_t *s = *state;

    test_io_destroy(s->io);
    test_rmtree(s->root);
    free(s->root);
    free(s);
    return 0;
}

static void fresh(tstate_t *s, char *dir, size_t cap)
{
    test_io_destroy(s->io);
    s->io = test_io_new();
    assert_non_null(s->io);
    test_rmtree(s->root);
    assert_int_equal(mkdir(s->root, 0700), 0);
    test_path(dir, cap, "%s/d", s->root);
    assert_int_equal(mkdir(dir, 0700), 0);
}

static void io_write(const kw_wal_io_t *io, int fd, const void *p, size_t n, off_t off)
{
    struct iovec iov = { (void *)p, n };

    assert_int_equal(io->pwritev(io->ctx, 0, fd, &iov, 1, off), (ssize_t)n);
}

static void io_fsync_dir(const kw_wal_io_t *io, const char *dir)
{
    int fd = io->open(io->ctx, 0, dir, O_RDONLY | O_DIRECTORY, 0);

    assert_true(fd >= 0);
    assert_int_equal(io->fsync(io->ctx, 0, fd), 0);
    assert_int_equal(io->close(io->ctx, 0, fd), 0);
}

/* Appended data: the synced part stays exactly; of the rest a prefix, maybe
 * torn at its end. All outcomes occur over the seeds. */
static void test_crash_unsynced_tail(void **state)
{
    tstate_t *s = *state;
    uint8_t a[100], b[60];
    int none = 0, all = 0, partial = 0, torn = 0;
    uint64_t rng = 1;

    test_fill_random(a, sizeof(a), &rng);
    test_fill_random(b, sizeof(b), &rng);
    for (uint64_t seed = 1; seed <= SEEDS; seed++) {
        char dir[600], path[700];
        const kw_wal_io_t *io;
        uint8_t *data;
        size_t len;
        int fd, differs = 0;

        fresh(s, dir, sizeof(dir));
        io = test_io_table(s->io);
        test_path(path, sizeof(path), "%s/seg", dir);
        fd = io->open(io->ctx, 0, path, O_WRONLY | O_CREAT, 0600);
        assert_true(fd >= 0);
        io_fsync_dir(io, dir);
        io_write(io, fd, a, sizeof(a), 0);
        assert_int_equal(io->fdatasync(io->ctx, 0, fd), 0);
        io_write(io, fd, b, sizeof(b), sizeof(a));
        test_io_crash(s->io, seed);
        assert_true(test_io_crashed(s->io));

        /* After the crash nothing goes through, but close does. */
        assert_int_equal(io->fdatasync(io->ctx, 0, fd), -1);
        assert_int_equal(errno, EIO);
        assert_int_equal(io->open(io->ctx, 0, path, O_RDONLY, 0), -1);
        assert_int_equal(io->close(io->ctx, 0, fd), 0);

        assert_int_equal(test_read_file(path, &data, &len), 0);
        assert_true(len >= sizeof(a) && len <= sizeof(a) + sizeof(b));
        assert_memory_equal(data, a, sizeof(a));
        for (size_t i = sizeof(a); i < len; i++)
            differs |= data[i] != b[i - sizeof(a)];
        if (differs) {
            /* Only the end of the kept part may be garbage: once bytes
             * differ, the rest up to the end is the torn part. */
            size_t first = sizeof(a);

            while (data[first] == b[first - sizeof(a)])
                first++;
            assert_true(len - first <= 512);
            torn++;
        }
        none += len == sizeof(a);
        all += len == sizeof(a) + sizeof(b) && !differs;
        partial += len > sizeof(a) && len < sizeof(a) + sizeof(b);
        free(data);
    }
    assert_true(none > 0 && all > 0 && partial > 0 && torn > 0);
}

/* A created file whose directory was never fsynced may vanish; one whose
 * directory was fsynced never does. */
static void test_crash_unsynced_create(void **state)
{
    tstate_t *s = *state;
    int vanished = 0, stayed = 0;

    for (uint64_t seed = 1; seed <= SEEDS; seed++) {
        char dir[600], kept[700], maybe[700];
        const kw_wal_io_t *io;
        int fd;

        fresh(s, dir, sizeof(dir));
        io = test_io_table(s->io);
        test_path(kept, sizeof(kept), "%s/kept", dir);
        test_path(maybe, sizeof(maybe), "%s/maybe", dir);
        fd = io->open(io->ctx, 0, kept, O_WRONLY | O_CREAT, 0600);
        assert_true(fd >= 0);
        io_write(io, fd, "k", 1, 0);
        assert_int_equal(io->fdatasync(io->ctx, 0, fd), 0);
        io->close(io->ctx, 0, fd);
        io_fsync_dir(io, dir);
        fd = io->open(io->ctx, 0, maybe, O_WRONLY | O_CREAT, 0600);
        assert_true(fd >= 0);
        io_write(io, fd, "m", 1, 0);
        assert_int_equal(io->fdatasync(io->ctx, 0, fd), 0);
        io->close(io->ctx, 0, fd);
        test_io_crash(s->io, seed);
        {
            uint8_t *data;
            size_t len;

            assert_int_equal(test_read_file(kept, &data, &len), 0);
            assert_true(len == 1 && data[0] == 'k');
            free(data);
        }
        if (access(maybe, F_OK) == 0)
            stayed++;
        else
            vanished++;
    }
    assert_true(vanished > 0 && stayed > 0);
}

/* STATE.tmp renamed over STATE: without a directory fsync either content
 * may be found, never a mix; after it, only the new one. Unsynced unlinks
 * may be undone. */
static void test_crash_rename_unlink(void **state)
{
    tstate_t *s = *state;
    int old = 0, neu = 0, back = 0, gone = 0;

    for (uint64_t seed = 1; seed <= SEEDS; seed++) {
        char dir[600], st[700], tmp[700], del[700];
        const kw_wal_io_t *io;
        uint8_t *data;
        size_t len;
        int fd, sync_dir = seed % 4 == 0;

        fresh(s, dir, sizeof(dir));
        test_path(st, sizeof(st), "%s/STATE", dir);
        test_path(tmp, sizeof(tmp), "%s/STATE.tmp", dir);
        test_path(del, sizeof(del), "%s/old.seg", dir);
        assert_int_equal(test_write_file(st, "old state", 9), 0);   /* durable before */
        assert_int_equal(test_write_file(del, "old segment", 11), 0);
        io = test_io_table(s->io);
        fd = io->open(io->ctx, 0, tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        assert_true(fd >= 0);
        io_write(io, fd, "new state!", 10, 0);
        assert_int_equal(io->fdatasync(io->ctx, 0, fd), 0);
        io->close(io->ctx, 0, fd);
        assert_int_equal(io->rename(io->ctx, 0, tmp, st), 0);
        assert_int_equal(io->unlink(io->ctx, 0, del), 0);
        if (sync_dir)
            io_fsync_dir(io, dir);
        test_io_crash(s->io, seed);

        assert_int_equal(test_read_file(st, &data, &len), 0);
        if (len == 9 && memcmp(data, "old state", 9) == 0) {
            assert_false(sync_dir);
            old++;
        } else {
            assert_int_equal(len, 10);
            assert_memory_equal(data, "new state!", 10);
            neu++;
        }
        free(data);
        if (access(del, F_OK) == 0) {
            assert_false(sync_dir);
            assert_true(test_read_file(del, &data, &len) == 0 && len == 11 &&
                        memcmp(data, "old segment", 11) == 0);
            free(data);
            back++;
        } else {
            gone++;
        }
    }
    assert_true(old > 0 && neu > 0 && back > 0 && gone > 0);
}

/* Overwrites and truncations of synced bytes that were not synced again
 * are undone by the crash. */
static void test_crash_undo(void **state)
{
    tstate_t *s = *state;
    uint8_t orig[300], junk[300];
    uint64_t rng = 9;

    test_fill_random(orig, sizeof(orig), &rng);
    test_fill_random(junk, sizeof(junk), &rng);
    for (uint64_t seed = 1; seed <= 50; seed++) {
        char dir[600], path[700];
        const kw_wal_io_t *io;
        uint8_t *data;
        size_t len;
        int fd;

        fresh(s, dir, sizeof(dir));
        io = test_io_table(s->io);
        test_path(path, sizeof(path), "%s/f", dir);
        fd = io->open(io->ctx, 0, path, O_RDWR | O_CREAT, 0600);
        assert_true(fd >= 0);
        io_fsync_dir(io, dir);
        io_write(io, fd, orig, sizeof(orig), 0);
        assert_int_equal(io->fsync(io->ctx, 0, fd), 0);
        /* Cut, overwrite, grow, cut again: none of it synced. */
        assert_int_equal(io->ftruncate(io->ctx, 0, fd, 100), 0);
        io_write(io, fd, junk, 250, 50);
        assert_int_equal(io->ftruncate(io->ctx, 0, fd, 120), 0);
        io_write(io, fd, junk, 200, 120);
        test_io_crash(s->io, seed);
        io->close(io->ctx, 0, fd);
        assert_int_equal(test_read_file(path, &data, &len), 0);
        assert_true(len >= sizeof(orig));
        assert_memory_equal(data, orig, sizeof(orig));
        free(data);
    }
}

/* The WAL's own tests rely on this: an armed crash fires at the nth
 * mutating call, which is not carried out. */
static void test_crash_after(void **state)
{
    tstate_t *s = *state;
    char dir[600], path[700];
    const kw_wal_io_t *io;
    uint8_t *data;
    size_t len;
    int fd;

    fresh(s, dir, sizeof(dir));
    io = test_io_table(s->io);
    test_path(path, sizeof(path), "%s/f", dir);
    fd = io->open(io->ctx, 0, path, O_WRONLY | O_CREAT, 0600);     /* mutation 1 */
    assert_true(fd >= 0);
    io_fsync_dir(io, dir);                                           /* 2 */
    test_io_crash_after(s->io, 4, 7);                                /* at 2 + 4 */
    io_write(io, fd, "abc", 3, 0);                                   /* 3 */
    assert_int_equal(io->fdatasync(io->ctx, 0, fd), 0);              /* 4 */
    assert_false(test_io_crashed(s->io));
    io_write(io, fd, "def", 3, 3);                                   /* 5 */
    assert_int_equal(io->fdatasync(io->ctx, 0, fd), -1);             /* 6: fires */
    assert_int_equal(errno, EIO);
    assert_true(test_io_crashed(s->io));
    assert_int_equal(test_io_mutations(s->io), 6);
    io->close(io->ctx, 0, fd);
    assert_int_equal(test_read_file(path, &data, &len), 0);
    assert_true(len >= 3 && len <= 6);
    assert_memory_equal(data, "abc", 3);
    free(data);
}

static void test_faults_and_counts(void **state)
{
    tstate_t *s = *state;
    char dir[600], path[700];
    const kw_wal_io_t *io;
    struct iovec iov[2];
    uint8_t *data;
    size_t len;
    int fd;

    fresh(s, dir, sizeof(dir));
    io = test_io_table(s->io);
    test_path(path, sizeof(path), "%s/f", dir);

    test_io_fail_nth(s->io, 2, TEST_IO_OPEN, 1, ENOSPC);
    assert_int_equal(io->open(io->ctx, 2, path, O_WRONLY | O_CREAT, 0600), -1);
    assert_int_equal(errno, ENOSPC);
    fd = io->open(io->ctx, 2, path, O_WRONLY | O_CREAT, 0600);   /* only the 1st failed */
    assert_true(fd >= 0);
    assert_int_equal(test_io_calls(s->io, 2, TEST_IO_OPEN), 2);
    assert_int_equal(test_io_failures(s->io, 2, TEST_IO_OPEN), 1);
    assert_int_equal(test_io_calls(s->io, 0, TEST_IO_OPEN), 0);

    /* Short write: 5 of 8 bytes across two buffers, count returned. */
    test_io_short_write(s->io, 2, 1, 5);
    iov[0].iov_base = "abc";
    iov[0].iov_len = 3;
    iov[1].iov_base = "defgh";
    iov[1].iov_len = 5;
    assert_int_equal(io->pwritev(io->ctx, 2, fd, iov, 2, 0), 5);
    assert_int_equal(io->pwritev(io->ctx, 2, fd, iov, 2, 0), 8);
    assert_int_equal(test_read_file(path, &data, &len), 0);
    assert_int_equal(len, 8);
    free(data);

    /* Third fdatasync fails; "always" until cleared; other replicas unaffected. */
    test_io_fail_nth(s->io, 2, TEST_IO_FDATASYNC, 3, EIO);
    assert_int_equal(io->fdatasync(io->ctx, 2, fd), 0);
    assert_int_equal(io->fdatasync(io->ctx, 2, fd), 0);
    assert_int_equal(io->fdatasync(io->ctx, 2, fd), -1);
    assert_int_equal(errno, EIO);
    assert_int_equal(io->fdatasync(io->ctx, 2, fd), 0);
    test_io_fail_always(s->io, 2, TEST_IO_PWRITEV, EIO);
    for (int i = 0; i < 3; i++)
        assert_int_equal(io->pwritev(io->ctx, 2, fd, iov, 1, 0), -1);
    assert_int_equal(io->pwritev(io->ctx, 1, fd, iov, 1, 0), 3);
    test_io_clear(s->io, 2);
    assert_int_equal(io->pwritev(io->ctx, 2, fd, iov, 1, 0), 3);
    assert_int_equal(test_io_calls(s->io, 2, TEST_IO_FDATASYNC), 4);
    assert_int_equal(test_io_failures(s->io, 2, TEST_IO_FDATASYNC), 1);
    assert_int_equal(test_io_failures(s->io, 2, TEST_IO_PWRITEV), 3);
    assert_int_equal(test_io_calls_all(s->io, TEST_IO_PWRITEV), 7);

    /* All replicas at once. */
    test_io_fail_always(s->io, TEST_IO_ALL_REPLICAS, TEST_IO_FSYNC, EIO);
    assert_int_equal(io->fsync(io->ctx, 0, fd), -1);
    assert_int_equal(io->fsync(io->ctx, 15, fd), -1);
    test_io_clear(s->io, TEST_IO_ALL_REPLICAS);
    assert_int_equal(io->fsync(io->ctx, 0, fd), 0);
    io->close(io->ctx, 2, fd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_crash_unsynced_tail, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crash_unsynced_create, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crash_rename_unlink, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crash_undo, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crash_after, setup, teardown),
        cmocka_unit_test_setup_teardown(test_faults_and_counts, setup, teardown),
    };

    if (getenv("KWAL_TEST_FILTER") != NULL)
        cmocka_set_test_filter(getenv("KWAL_TEST_FILTER"));
    return cmocka_run_group_tests_name("testio", tests, NULL, NULL);
}
