/*
 * test_direct.c -- the pure parts of direct mode (direct/direct.h): range
 * planning, the per-batch bound, direct.start.offsets; the ranges as direct
 * mode stores and reads them through the sink's transactions (sink.h: where
 * a restart goes on, batch ids, one range per partition per batch); and
 * kw_direct_new refusing, before any network, a sink that cannot store
 * ranges in exactly-once mode. The service itself runs against the local
 * cluster in tests/integration/0040-direct.sh.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "direct.h"
#include "kw_conf.h"
#include "sink.h"
#include "test_util.h"

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

/* ---- Ranges through the sink ---- */

typedef struct rng {
    const char *topic;
    int32_t     partition;
    int64_t     from, until;
} rng_t;

/* One batch as direct mode writes it: a record per range (its last
 * offset), then the ranges, in one transaction. */
static kw_err_t store_batch(kw_sink_t *k, uint64_t batch, const rng_t *r, size_t n,
                            char *err, size_t errlen)
{
    kw_record_t recs[8];
    kw_err_t e;

    assert_true(n <= 8);
    memset(recs, 0, sizeof(recs));
    for (size_t i = 0; i < n; i++) {
        recs[i].topic = r[i].topic;
        recs[i].partition = r[i].partition;
        recs[i].offset = r[i].until - 1;
        recs[i].tstype = KW_TS_NOT_AVAILABLE;
    }
    if ((e = kw_sink_txn_begin(k, batch, err, errlen)) != KW_OK ||
        (e = kw_sink_txn_write(k, recs, n, err, errlen)) != KW_OK)
        return e;
    for (size_t i = 0; i < n; i++)
        if ((e = kw_sink_txn_put_range(k, r[i].topic, r[i].partition, KW_SINK_RANGE_UNCHECKED,
                                       r[i].from,
                                       r[i].until, err, errlen)) != KW_OK)
            return e;
    return kw_sink_txn_commit(k, NULL, err, errlen);
}

static int64_t next_of(kw_sink_t *k, const char *topic, int32_t partition)
{
    int64_t next = -2;
    char err[512];

    if (kw_sink_range_next(k, topic, partition, &next, err, sizeof(err)) != KW_OK)
        fail_msg("range_next %s/%d: %s", topic, (int)partition, err);
    return next;
}

static uint64_t last_batch_of(kw_sink_t *k)
{
    uint64_t batch = 999;
    char err[512];

    if (kw_sink_ranges_last_batch(k, &batch, err, sizeof(err)) != KW_OK)
        fail_msg("ranges_last_batch: %s", err);
    return batch;
}

static kw_sink_t *open_sink(const char *spec)
{
    kw_sink_t *k = NULL;
    char err[512];

    if (kw_sink_open(spec, &k, err, sizeof(err)) != KW_OK)
        fail_msg("open %s: %s", spec, err);
    return k;
}

static void test_ranges_through_sink(void **state)
{
    static const rng_t b1[] = { { "t", 0, 0, 10 }, { "t", 1, 5, 9 } };
    static const rng_t b2[] = { { "t", 0, 10, 25 } };
    static const rng_t b3[] = { { "u", 0, 0, 4 } };
    static const rng_t twice[] = { { "t", 0, 25, 30 }, { "t", 0, 30, 31 } };
    char *dir = test_tmpdir_new("direct");
    char spec[700], err[512];
    kw_sink_t *k;

    (void)state;
    assert_non_null(dir);
    test_path(spec, sizeof(spec), "sqlite:%s/out.db", dir);
    k = open_sink(spec);
    assert_int_equal(kw_sink_ranges_supported(k), 1);
    assert_int_equal(next_of(k, "t", 0), -1);           /* never read */
    assert_int_equal(last_batch_of(k), 0);

    assert_int_equal(store_batch(k, 1, b1, 2, err, sizeof(err)), KW_OK);
    assert_int_equal(store_batch(k, 2, b2, 1, err, sizeof(err)), KW_OK);
    assert_int_equal(store_batch(k, 3, b3, 1, err, sizeof(err)), KW_OK);
    assert_int_equal(next_of(k, "t", 0), 25);            /* the highest until */
    assert_int_equal(next_of(k, "t", 1), 9);
    assert_int_equal(next_of(k, "u", 0), 4);
    assert_int_equal(next_of(k, "u", 1), -1);
    assert_int_equal(last_batch_of(k), 3);

    /* One batch stores a partition once: the second range fails the key and
     * the whole batch is rolled back, its record too (the retry takes a new
     * id). */
    assert_int_equal(store_batch(k, 4, twice, 2, err, sizeof(err)), KW_EIO);
    assert_int_equal(next_of(k, "t", 0), 25);
    assert_int_equal(last_batch_of(k), 3);
    assert_int_equal(store_batch(k, 5, twice, 1, err, sizeof(err)), KW_OK);
    assert_int_equal(next_of(k, "t", 0), 30);
    {
        kw_sink_totals_t tot;

        kw_sink_get_totals(k, &tot);
        assert_int_equal(tot.stored, 5);                 /* batch 4's record gone */
        assert_int_equal(tot.failures, 1);
    }

    /* A restart goes on from what was committed. */
    kw_sink_close(k);
    k = open_sink(spec);
    assert_int_equal(next_of(k, "t", 0), 30);
    assert_int_equal(next_of(k, "t", 1), 9);
    assert_int_equal(last_batch_of(k), 5);
    kw_sink_close(k);
    test_rmtree(dir);
    free(dir);
}

/* kw_direct_new with these settings; returns its error and errstr. */
static kw_err_t try_new(const char *sink, int at_least_once, char *err, size_t errlen)
{
    char arg[800];
    const char *over[] = { "group.id=g", "topics=t", arg };
    kw_direct_options_t o;
    kw_direct_t *d = (kw_direct_t *)1;
    kw_conf_t *conf = NULL;
    kw_err_t e;

    snprintf(arg, sizeof(arg), "sink=%s", sink);
    assert_int_equal(kw_conf_load(NULL, over, 3, &conf, err, errlen), KW_OK);
    memset(&o, 0, sizeof(o));
    o.conf = conf;
    o.at_least_once = at_least_once;
    e = kw_direct_new(&o, &d, err, errlen);
    assert_null(d);
    kw_conf_destroy(conf);
    return e;
}

/* Every instance computes the same assignment: over any member order each
 * partition goes to exactly one member, and the counts are as the
 * strategy says. */
static void check_assignment(int strategy, size_t nmembers, const kw_direct_tp_t *parts,
                             size_t nparts, size_t *counts)
{
    static const char *const names[] = { "inst-c", "inst-a", "inst-d", "inst-b", "inst-e" };
    unsigned char mine[64];
    int owners[64] = { 0 };

    assert_true(nparts <= 64 && nmembers <= 5);
    for (size_t m = 0; m < nmembers; m++) {
        int got = kw_direct_assign(strategy, names, nmembers, names[m], parts, nparts,
                                   mine);

        assert_true(got >= 0);
        counts[m] = (size_t)got;
        for (size_t i = 0; i < nparts; i++)
            owners[i] += mine[i];
    }
    for (size_t i = 0; i < nparts; i++)
        assert_int_equal(owners[i], 1);
}

static void test_assign(void **state)
{
    kw_direct_tp_t parts[64];
    unsigned char mine[64], mine2[64];
    const char *const two[] = { "b", "a" }, *const two_sorted[] = { "a", "b" };
    size_t counts[5];
    (void)state;

    /* 10 partitions of t1 and 3 of t0, given out of order */
    for (int i = 0; i < 13; i++) {
        parts[i].topic = "t1";
        parts[i].partition = 9 - i;
    }
    for (int i = 10; i < 13; i++) {
        parts[i].topic = "t0";
        parts[i].partition = 12 - i;
    }
    /* roundrobin: 13 over 3 -> 5, 4, 4, whatever the member order */
    check_assignment(KW_ASSIGN_ROUNDROBIN, 3, parts, 13, counts);
    assert_int_equal(counts[0] + counts[1] + counts[2], 13);
    for (int m = 0; m < 3; m++)
        assert_true(counts[m] == 4 || counts[m] == 5);
    /* range: per topic, t0 3 -> 1,1,1 and t1 10 -> 4,3,3: the sorted first
     * member (inst-a, index 1 in names) has 5 */
    check_assignment(KW_ASSIGN_RANGE, 3, parts, 13, counts);
    assert_int_equal(counts[1], 5);
    assert_int_equal(counts[0] + counts[2], 8);
    /* range is contiguous per topic: "a" of two gets t1 0..4 and t0 0..1 */
    assert_int_equal(kw_direct_assign(KW_ASSIGN_RANGE, two, 2, "a", parts, 13, mine), 7);
    for (int i = 0; i < 13; i++)
        assert_int_equal(mine[i], parts[i].topic[1] == '1' ? parts[i].partition < 5
                                                            : parts[i].partition < 2);
    /* the member order given does not matter */
    assert_int_equal(kw_direct_assign(KW_ASSIGN_ROUNDROBIN, two_sorted, 2, "b", parts, 13,
                                      mine2), 6);
    assert_int_equal(kw_direct_assign(KW_ASSIGN_ROUNDROBIN, two, 2, "b", parts, 13, mine), 6);
    assert_memory_equal(mine, mine2, 13);
    /* 64 over 5 and 4 members: balanced within one */
    for (int i = 0; i < 64; i++) {
        parts[i].topic = "t";
        parts[i].partition = i;
    }
    for (size_t n = 1; n <= 5; n++) {
        check_assignment(KW_ASSIGN_ROUNDROBIN, n, parts, 64, counts);
        for (size_t m = 0; m < n; m++)
            assert_true(counts[m] == 64 / n || counts[m] == 64 / n + 1);
    }
    /* not a member: nothing, -1; no partitions: 0 */
    memset(mine, 7, sizeof(mine));
    assert_int_equal(kw_direct_assign(KW_ASSIGN_ROUNDROBIN, two, 2, "z", parts, 13, mine), -1);
    for (int i = 0; i < 13; i++)
        assert_int_equal(mine[i], 0);
    assert_int_equal(kw_direct_assign(KW_ASSIGN_RANGE, two, 2, "a", parts, 0, mine), 0);
}

static void test_new_refuses_sink(void **state)
{
    static const char *const norange[] = { "null", "jsonl", NULL };
    char *dir = test_tmpdir_new("direct");
    char spec[700], path[700], err[1024];

    (void)state;
    assert_non_null(dir);
    test_path(spec, sizeof(spec), "file:%s/out", dir);
    for (int i = 0; i < 3; i++) {
        const char *sink = norange[i] != NULL ? norange[i] : spec;

        assert_int_equal(try_new(sink, 0, err, sizeof(err)), KW_ECONFIG);
        assert_non_null(strstr(err, sink));
        assert_non_null(strstr(err, "needs sink=sqlite:PATH"));
        assert_non_null(strstr(err, "--at-least-once takes any sink"));
    }

    /* A sink database of a schema version this kwal does not know (written
     * into the SQLite header's user_version field, bytes 60..63, big-endian,
     * of a database the sink created): the sink's error, before any
     * connection is tried. */
    test_path(path, sizeof(path), "%s/future.db", dir);
    test_path(spec, sizeof(spec), "sqlite:%s", path);
    kw_sink_close(open_sink(spec));
    {
        uint8_t *data;
        size_t len;

        assert_int_equal(test_read_file(path, &data, &len), 0);
        assert_true(len >= 100);
        assert_int_equal(data[63], KW_SINK_SQLITE_SCHEMA_VERSION);
        data[63] = 9;
        assert_int_equal(test_write_file(path, data, len), 0);
        free(data);
    }
    assert_int_equal(try_new(spec, 0, err, sizeof(err)), KW_ECORRUPT);
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "schema version 9"));
    test_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plan_start),
        cmocka_unit_test(test_plan_bound),
        cmocka_unit_test(test_plan_source_loss),
        cmocka_unit_test(test_pid),
        cmocka_unit_test(test_start_offsets),
        cmocka_unit_test(test_ranges_through_sink),
        cmocka_unit_test(test_new_refuses_sink),
        cmocka_unit_test(test_assign),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
