/*
 * test_hist.c -- the latency histogram (common/kw_hist.h) on one thread:
 * the bucket layout (exact below 64, then 32 buckets per power of two up to
 * INT64_MAX), nearest-rank quantiles against a sorted array for random and
 * edge inputs, the plain and shared forms and merging one into the other.
 * Concurrent adds are test_hist_threads.c.
 *
 * The expected quantile of values v sorted ascending is exact: rank
 * r = ceil(p x n / 100) computed in integers, v[r-1] the nearest-rank value,
 * and the histogram must answer min(kw_hist_upper(v[r-1]), max) -- that is,
 * never below the exact value and less than 1/32 above it.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kw_hist.h"

static uint64_t rng_state;

static uint64_t rnd(void)       /* splitmix64 */
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

    return (x > y) - (x < y);
}

/* Every bucket: its upper bound maps back to it, the next value to the next
 * bucket, and its width is below 1/32 of its lower bound. */
static void test_buckets(void **state)
{
    int64_t lower = 0;

    (void)state;
    for (int64_t v = 0; v < 64; v++) {
        assert_int_equal(kw_hist_index(v), (size_t)v);
        assert_int_equal(kw_hist_upper(v), v);
    }
    assert_int_equal(kw_hist_index(-1), 0);
    assert_int_equal(kw_hist_index(INT64_MIN), 0);
    assert_int_equal(kw_hist_upper(64), 65);
    assert_int_equal(kw_hist_upper(127), 127);
    assert_int_equal(kw_hist_index(128), 96);
    assert_int_equal(kw_hist_upper(128), 131);
    for (size_t i = 0; i < KW_HIST_BUCKETS; i++) {
        int64_t up = kw_hist_upper(lower);

        assert_int_equal(kw_hist_index(lower), i);
        assert_int_equal(kw_hist_index(up), i);
        assert_int_equal(kw_hist_upper(up), up);
        if (lower >= 64)
            assert_true((up - lower) < lower / 32);
        if (i + 1 < KW_HIST_BUCKETS) {
            assert_int_equal(kw_hist_index(up + 1), i + 1);
            lower = up + 1;
        } else {
            assert_int_equal(up, INT64_MAX);
        }
    }
    assert_int_equal(kw_hist_index(INT64_MAX), KW_HIST_BUCKETS - 1);
    assert_int_equal(kw_hist_index((int64_t)1 << 36), 31 * 32 + 32);
}

/* The nearest-rank check of one data set, plain and shared. */
static void check_against_sorted(int64_t *v, size_t n)
{
    kw_hist_local_t *l = calloc(1, sizeof(*l));
    kw_hist_t *h = calloc(1, sizeof(*h));
    kw_hist_summary_t sl, sh;
    static const int extra[] = { 10, 5000, 9000, 9900, 9990, 9999 };   /* / 10000 */
    int64_t max;

    assert_non_null(l);
    assert_non_null(h);
    kw_hist_local_init(l);
    kw_hist_init(h);
    for (size_t i = 0; i < n; i++) {
        kw_hist_local_add(l, v[i], 1);
        kw_hist_add(h, v[i], 1);
    }
    qsort(v, n, sizeof(*v), cmp_i64);
    max = v[n - 1] > 0 ? v[n - 1] : 0;
    assert_int_equal(l->count, n);
    assert_int_equal(kw_hist_count(h), n);
    assert_int_equal(kw_hist_max(h), max);
    for (int p = 0; p <= 100; p++) {
        uint64_t rank = ((uint64_t)p * n + 99) / 100;
        int64_t exact, want, got;

        if (rank < 1)
            rank = 1;
        exact = v[rank - 1] > 0 ? v[rank - 1] : 0;
        want = kw_hist_upper(exact) < max ? kw_hist_upper(exact) : max;
        got = kw_hist_local_quantile(l, p / 100.0);
        if (got != want)
            fail_msg("n=%zu p%d: got %" PRId64 ", want %" PRId64 " (exact %" PRId64 ")",
                     n, p, got, want, exact);
        assert_int_equal(kw_hist_quantile(h, p / 100.0), want);
        assert_true(got >= exact);
        assert_true(got - exact <= (exact >= 64 ? exact / 32 : 0));
    }
    for (size_t k = 0; k < sizeof(extra) / sizeof(extra[0]); k++) {
        uint64_t rank = ((uint64_t)extra[k] * n + 9999) / 10000;
        int64_t exact, want;

        if (rank < 1)
            rank = 1;
        exact = v[rank - 1] > 0 ? v[rank - 1] : 0;
        want = kw_hist_upper(exact) < max ? kw_hist_upper(exact) : max;
        assert_int_equal(kw_hist_local_quantile(l, extra[k] / 10000.0), want);
    }
    kw_hist_local_summarize(l, &sl);
    kw_hist_summarize(h, &sh);
    assert_memory_equal(&sl, &sh, sizeof(sl));
    assert_int_equal(sl.count, n);
    assert_int_equal(sl.p50, kw_hist_local_quantile(l, 0.5));
    assert_int_equal(sl.p90, kw_hist_local_quantile(l, 0.9));
    assert_int_equal(sl.p99, kw_hist_local_quantile(l, 0.99));
    assert_int_equal(sl.max, max);
    assert_true(0 <= sl.p50 && sl.p50 <= sl.p90 && sl.p90 <= sl.p99 && sl.p99 <= sl.max);
    free(h);
    free(l);
}

static void test_quantiles_random(void **state)
{
    static const size_t sizes[] = { 1, 2, 3, 7, 10, 99, 100, 101, 1000, 12345, 200000 };
    uint64_t seed = 0x6b77616c;      /* fixed: failures re-run the same */

    (void)state;
    rng_state = seed;
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++)
        for (int dist = 0; dist < 5; dist++) {
            size_t n = sizes[s];
            int64_t *v = malloc(n * sizeof(*v));

            assert_non_null(v);
            for (size_t i = 0; i < n; i++) {
                uint64_t r = rnd();

                switch (dist) {
                case 0: v[i] = (int64_t)(r % 100); break;           /* exact range */
                case 1: v[i] = (int64_t)(r % 5000); break;          /* ms to seconds */
                case 2: v[i] = (int64_t)((r >> 24) >> (r % 40)); break;  /* log-spread */
                case 3: v[i] = (int64_t)(r >> 1); break;            /* anything */
                default: v[i] = (int64_t)(r % 7) - 3; break;        /* negatives: 0 */
                }
            }
            check_against_sorted(v, n);
            free(v);
        }
}

static void test_edges(void **state)
{
    kw_hist_local_t *l = calloc(1, sizeof(*l));
    kw_hist_t *h = calloc(1, sizeof(*h));     /* zero bytes: empty */
    kw_hist_summary_t s;
    int64_t one[] = { 1234567 }, big[] = { INT64_MAX, 0, INT64_MAX - 1, 5 };
    int64_t same[50];

    (void)state;
    assert_non_null(l);
    assert_non_null(h);
    /* empty */
    assert_int_equal(kw_hist_count(h), 0);
    assert_int_equal(kw_hist_max(h), -1);
    assert_int_equal(kw_hist_quantile(h, 0.5), -1);
    assert_int_equal(kw_hist_local_quantile(l, 0.99), -1);
    kw_hist_summarize(h, &s);
    assert_int_equal(s.count, 0);
    assert_true(s.p50 == -1 && s.p90 == -1 && s.p99 == -1 && s.max == -1);
    kw_hist_local_summarize(l, &s);
    assert_true(s.count == 0 && s.p50 == -1 && s.max == -1);
    /* zero-count adds and empty merges change nothing */
    kw_hist_add(h, 77, 0);
    kw_hist_local_add(l, 77, 0);
    kw_hist_merge(h, l);
    assert_int_equal(kw_hist_count(h), 0);
    assert_int_equal(kw_hist_max(h), -1);
    assert_int_equal(l->max, 0);

    /* q outside 0..1 is clamped; NaN is the minimum */
    kw_hist_local_add(l, 10, 1);
    kw_hist_local_add(l, 1000, 1);
    assert_int_equal(kw_hist_local_quantile(l, -1), 10);
    assert_int_equal(kw_hist_local_quantile(l, 0), 10);
    assert_int_equal(kw_hist_local_quantile(l, 0.5), 10);
    assert_int_equal(kw_hist_local_quantile(l, 0.5000001), 1000);
    assert_int_equal(kw_hist_local_quantile(l, 2), 1000);
    assert_int_equal(kw_hist_local_quantile(l, NAN), 10);

    /* weights: n values at once are n values */
    kw_hist_local_init(l);
    kw_hist_local_add(l, 3, 99);
    kw_hist_local_add(l, 4000, 1);
    assert_int_equal(l->count, 100);
    assert_int_equal(kw_hist_local_quantile(l, 0.99), 3);
    assert_int_equal(kw_hist_local_quantile(l, 0.995), 4000);
    kw_hist_add(h, -5, 3);          /* negative: 0 */
    kw_hist_add(h, 64, 2);
    assert_int_equal(kw_hist_count(h), 5);
    assert_int_equal(kw_hist_quantile(h, 0.6), 0);
    assert_int_equal(kw_hist_quantile(h, 0.61), 64);    /* clamped to the max */
    assert_int_equal(kw_hist_max(h), 64);

    check_against_sorted(one, 1);
    check_against_sorted(big, 4);
    for (size_t i = 0; i < 50; i++)
        same[i] = 1000;
    check_against_sorted(same, 50);
    free(h);
    free(l);
}

/* Per-batch locals merged into a shared one = the same values added to it
 * one by one; locals merged into a local too. */
static void test_merge(void **state)
{
    kw_hist_local_t *a = calloc(1, sizeof(*a)), *b = calloc(1, sizeof(*b));
    kw_hist_local_t *ab = calloc(1, sizeof(*ab)), *snap = calloc(1, sizeof(*snap));
    kw_hist_local_t *direct = calloc(1, sizeof(*direct));
    kw_hist_t *merged = calloc(1, sizeof(*merged)), *one = calloc(1, sizeof(*one));
    kw_hist_summary_t s1, s2;

    (void)state;
    assert_true(a && b && ab && snap && direct && merged && one);
    kw_hist_init(merged);
    kw_hist_init(one);
    rng_state = 42;
    for (int batch = 0; batch < 20; batch++) {
        kw_hist_local_t *l = batch % 2 ? a : b;

        kw_hist_local_init(l);
        for (int i = 0; i < 1000; i++) {
            int64_t v = (int64_t)(rnd() % 100000) - 10;

            kw_hist_local_add(l, v, 1);
            kw_hist_add(one, v, 1);
            kw_hist_local_add(direct, v, 1);
        }
        kw_hist_merge(merged, l);
        kw_hist_local_merge(ab, l);
    }
    kw_hist_snapshot(merged, snap);
    assert_memory_equal(snap, direct, sizeof(*snap));
    assert_memory_equal(ab, direct, sizeof(*ab));
    kw_hist_snapshot(one, snap);
    assert_memory_equal(snap, direct, sizeof(*snap));
    assert_int_equal(kw_hist_count(merged), 20000);
    kw_hist_summarize(merged, &s1);
    kw_hist_local_summarize(direct, &s2);
    assert_memory_equal(&s1, &s2, sizeof(s1));
    free(a);
    free(b);
    free(ab);
    free(snap);
    free(direct);
    free(merged);
    free(one);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buckets),
        cmocka_unit_test(test_quantiles_random),
        cmocka_unit_test(test_edges),
        cmocka_unit_test(test_merge),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
