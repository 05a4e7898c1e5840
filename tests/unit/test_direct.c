/*
 * test_direct.c -- the pure parts of direct mode (direct/direct.h): range
 * planning, the per-batch bound, direct.start.offsets, and the range table
 * in an SQLite database. The service itself runs against the local cluster
 * in tests/integration/0040-direct.sh.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include <sqlite3.h>

#include "direct.h"
#include "kw_conf.h"

static void plan_ok(int64_t next, int64_t start, int64_t low, int64_t high, int policy,
                    int64_t max, int64_t from, int64_t until, int64_t lost_from,
                    int64_t lost_until)
{
    kw_direct_plan_t p;

    assert_int_equal(kw_direct_plan_range(next, start, low, high, policy, max, &p), 0);
    assert_int_equal(p.from, from);
    assert_int_equal(p.until, until);
    if (lost_until > lost_from) {
        assert_int_equal(p.lost_from, lost_from);
        assert_int_equal(p.lost_until, lost_until);
    } else {
        assert_int_equal(p.lost_until, p.lost_from);       /* nothing lost */
    }
}

/* A partition never read starts where auto.offset.reset says, or at its
 * direct.start.offsets offset; one with a stored next goes on from it. */
static void test_plan_start(void **state)
{
    kw_direct_plan_t p;

    (void)state;
    plan_ok(-1, -1, 10, 50, KW_OFFSET_RESET_EARLIEST, 0, 10, 50, 0, 0);
    plan_ok(-1, -1, 10, 50, KW_OFFSET_RESET_LATEST, 0, 50, 50, 0, 0);
    assert_int_equal(kw_direct_plan_range(-1, -1, 10, 50, KW_OFFSET_RESET_ERROR, 0, &p), -1);
    plan_ok(-1, 30, 10, 50, KW_OFFSET_RESET_ERROR, 0, 30, 50, 0, 0);      /* explicit */
    plan_ok(42, 30, 10, 50, KW_OFFSET_RESET_LATEST, 0, 42, 50, 0, 0);     /* stored wins */
    plan_ok(50, -1, 10, 50, KW_OFFSET_RESET_ERROR, 0, 50, 50, 0, 0);      /* caught up */
}

/* max.rate.per.partition bounds a batch; the high watermark always does. */
static void test_plan_bound(void **state)
{
    (void)state;
    plan_ok(100, -1, 0, 1000, KW_OFFSET_RESET_EARLIEST, 100, 100, 200, 0, 0);
    plan_ok(950, -1, 0, 1000, KW_OFFSET_RESET_EARLIEST, 100, 950, 1000, 0, 0);
    assert_int_equal(kw_direct_max_records(100, 1000), 100);
    assert_int_equal(kw_direct_max_records(100, 200), 20);
    assert_int_equal(kw_direct_max_records(1, 10), 1);       /* never 0: no progress */
    assert_int_equal(kw_direct_max_records(0, 1000), 0);     /* unbounded */
}

/* Invariant 6: a stored next below what Kafka has is source loss, and the
 * partition goes on where auto.offset.reset says; error stops. */
static void test_plan_source_loss(void **state)
{
    kw_direct_plan_t p;

    (void)state;
    plan_ok(5, -1, 20, 50, KW_OFFSET_RESET_EARLIEST, 0, 20, 50, 5, 20);
    plan_ok(5, -1, 20, 50, KW_OFFSET_RESET_LATEST, 0, 50, 50, 5, 20);
    assert_int_equal(kw_direct_plan_range(5, -1, 20, 50, KW_OFFSET_RESET_ERROR, 0, &p), -1);
    /* beyond the end (the topic was re-created): nothing lost, reset */
    plan_ok(80, -1, 0, 50, KW_OFFSET_RESET_EARLIEST, 0, 0, 50, 0, 0);
}

/* Back-pressure: the first batch sets the estimate; batches that take
 * longer than the interval bring it down to what is processed, a backlog
 * (scheduling delay) brings it below that, fast batches let it rise, and it
 * never drops under the minimum. */
static void test_pid(void **state)
{
    kw_direct_pid_t e;
    double r;

    (void)state;
    kw_direct_pid_init(&e, 100);
    assert_true(kw_direct_pid_update(&e, 1000, 0, 50, 0, 1000) == 0);   /* nothing yet */
    r = kw_direct_pid_update(&e, 1000, 10000, 1000, 0, 1000);           /* 10000/s */
    assert_true(r > 9999 && r < 10001);
    /* the next batch of 10000 takes 4 s: 2500/s */
    r = kw_direct_pid_update(&e, 5000, 10000, 4000, 0, 1000);
    assert_true(r > 2499 && r < 2501);
    /* the same, 3 s late: below the processing rate */
    r = kw_direct_pid_update(&e, 9000, 10000, 4000, 3000, 1000);
    assert_true(r < 2500 && r >= 100);
    /* far too slow with a long backlog: the minimum */
    r = kw_direct_pid_update(&e, 20000, 10, 10000, 60000, 1000);
    assert_true(r > 99.9 && r < 100.1);
    /* fast again: it rises towards what is processed */
    r = kw_direct_pid_update(&e, 21000, 5000, 100, 0, 1000);
    assert_true(r > 1000);
    /* no records or no time: unchanged */
    assert_true(kw_direct_pid_update(&e, 22000, 0, 100, 0, 1000) == r);
    assert_true(kw_direct_pid_update(&e, 22000, 10, 0, 0, 1000) == r);
}

static void test_start_offsets(void **state)
{
    char *items[] = { "t:0:100", "a:b:3:7", "t:1:0" };
    kw_conf_list_t l = { items, 3 };
    char err[256];
    int64_t off;

    (void)state;
    assert_int_equal(kw_direct_start_offset(&l, "t", 0, &off, err, sizeof(err)), KW_OK);
    assert_int_equal(off, 100);
    assert_int_equal(kw_direct_start_offset(&l, "t", 1, &off, err, sizeof(err)), KW_OK);
    assert_int_equal(off, 0);
    assert_int_equal(kw_direct_start_offset(&l, "a:b", 3, &off, err, sizeof(err)), KW_OK);
    assert_int_equal(off, 7);
    assert_int_equal(kw_direct_start_offset(&l, "t", 2, &off, err, sizeof(err)), KW_OK);
    assert_int_equal(off, -1);
    assert_int_equal(kw_direct_start_offset(&l, "a", 3, &off, err, sizeof(err)), KW_OK);
    assert_int_equal(off, -1);

    const char *bad[] = { "t:0", "t:x:1", "t:0:", "t:0:-1", ":0:1", "t:-1:5" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *one[] = { (char *)bad[i] };
        kw_conf_list_t b = { one, 1 };

        if (kw_direct_start_offset(&b, "t", 0, &off, err, sizeof(err)) != KW_ECONFIG)
            fail_msg("'%s' accepted", bad[i]);
        assert_non_null(strstr(err, bad[i]));
    }
}

static void test_ranges_table(void **state)
{
    sqlite3 *db = NULL;
    char err[256];
    int64_t next;
    uint64_t batch;

    (void)state;
    assert_int_equal(sqlite3_open(":memory:", &db), SQLITE_OK);
    assert_int_equal(kw_direct_ranges_init(db, err, sizeof(err)), KW_OK);
    assert_int_equal(kw_direct_ranges_init(db, err, sizeof(err)), KW_OK);   /* again */
    assert_int_equal(kw_direct_ranges_next(db, "t", 0, &next, err, sizeof(err)), KW_OK);
    assert_int_equal(next, -1);
    assert_int_equal(kw_direct_ranges_last_batch(db, &batch, err, sizeof(err)), KW_OK);
    assert_int_equal(batch, 0);
    assert_int_equal(sqlite3_exec(db, "INSERT INTO direct_ranges VALUES "
                                      "(1, 't', 0, 0, 10), (1, 't', 1, 5, 9), "
                                      "(2, 't', 0, 10, 25), (3, 'u', 0, 0, 4)",
                                  NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(kw_direct_ranges_next(db, "t", 0, &next, err, sizeof(err)), KW_OK);
    assert_int_equal(next, 25);
    assert_int_equal(kw_direct_ranges_next(db, "t", 1, &next, err, sizeof(err)), KW_OK);
    assert_int_equal(next, 9);
    assert_int_equal(kw_direct_ranges_last_batch(db, &batch, err, sizeof(err)), KW_OK);
    assert_int_equal(batch, 3);
    /* one batch stores a partition once */
    assert_int_not_equal(sqlite3_exec(db, "INSERT INTO direct_ranges VALUES (2, 't', 0, 25, 30)",
                                      NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plan_start),
        cmocka_unit_test(test_plan_bound),
        cmocka_unit_test(test_plan_source_loss),
        cmocka_unit_test(test_pid),
        cmocka_unit_test(test_start_offsets),
        cmocka_unit_test(test_ranges_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
