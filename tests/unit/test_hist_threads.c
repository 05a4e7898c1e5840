/*
 * test_hist_threads.c -- the shared histogram (common/kw_hist.h) under
 * concurrent use: writer threads add to one kw_hist_t, half of them value by
 * value (kw_hist_add), half a batch at a time into a plain local that they
 * merge (kw_hist_merge, as the batcher and direct mode do), while reader
 * threads summarise it over and over. At the end the shared histogram holds
 * exactly what a serial one holds; during the run every summary a reader
 * saw was ordered (0 <= p50 <= p90 <= p99 <= max) and counts never went
 * back. This file carries the "threads" label and runs under
 * ThreadSanitizer (tools/test.sh), so it is kept to a second or two.
 * Worker threads never call cmocka; they count errors, which the main
 * thread asserts on after joining.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "kw_hist.h"

#define WRITERS   6
#define READERS   2
#define BATCHES   100
#define PER_BATCH 2000

typedef struct shared {
    kw_hist_t   *h;
    atomic_int   writers_left;
    atomic_long  errors;
} shared_t;

typedef struct writer {
    shared_t *sh;
    int       id;
} writer_t;

/* The value number i of writer id: spread over 0 .. ~2^33, some negative. */
static int64_t value_of(int id, int i)
{
    uint64_t z = (uint64_t)id * 0x9e3779b97f4a7c15ull + (uint64_t)i * 0xbf58476d1ce4e5b9ull;

    z ^= z >> 29;
    z *= 0x94d049bb133111ebull;
    z ^= z >> 32;
    return (int64_t)(z >> (31 + z % 32)) - 2;
}

static void *writer_main(void *arg)
{
    writer_t *w = arg;
    kw_hist_local_t *l = malloc(sizeof(*l));

    if (l == NULL) {
        atomic_fetch_add(&w->sh->errors, 1);
        atomic_fetch_sub(&w->sh->writers_left, 1);
        return NULL;
    }
    for (int b = 0; b < BATCHES; b++) {
        kw_hist_local_init(l);
        for (int i = 0; i < PER_BATCH; i++) {
            int64_t v = value_of(w->id, b * PER_BATCH + i);

            if (w->id % 2 == 0)
                kw_hist_add(w->sh->h, v, 1);
            else
                kw_hist_local_add(l, v, 1);
        }
        kw_hist_merge(w->sh->h, l);     /* empty for the even writers: a no-op */
    }
    free(l);
    atomic_fetch_sub(&w->sh->writers_left, 1);
    return NULL;
}

static void *reader_main(void *arg)
{
    shared_t *sh = arg;
    uint64_t last = 0;

    do {
        kw_hist_summary_t s;

        kw_hist_summarize(sh->h, &s);
        if (s.count < last)
            atomic_fetch_add(&sh->errors, 1);
        last = s.count;
        if (s.count > 0 && !(0 <= s.p50 && s.p50 <= s.p90 && s.p90 <= s.p99 &&
                             s.p99 <= s.max))
            atomic_fetch_add(&sh->errors, 1);
        if (s.count > 0 && kw_hist_quantile(sh->h, 1.0) > kw_hist_max(sh->h))
            atomic_fetch_add(&sh->errors, 1);
    } while (atomic_load(&sh->writers_left) > 0);
    return NULL;
}

static void test_concurrent_adds(void **state)
{
    kw_hist_t *h = malloc(sizeof(*h));
    kw_hist_local_t *want = calloc(1, sizeof(*want)), *got = calloc(1, sizeof(*got));
    pthread_t wt[WRITERS], rt[READERS];
    writer_t w[WRITERS];
    shared_t sh;

    (void)state;
    assert_true(h && want && got);
    kw_hist_init(h);
    sh.h = h;
    atomic_init(&sh.writers_left, WRITERS);
    atomic_init(&sh.errors, 0);
    for (int i = 0; i < READERS; i++)
        assert_int_equal(pthread_create(&rt[i], NULL, reader_main, &sh), 0);
    for (int i = 0; i < WRITERS; i++) {
        w[i].sh = &sh;
        w[i].id = i;
        assert_int_equal(pthread_create(&wt[i], NULL, writer_main, &w[i]), 0);
    }
    for (int i = 0; i < WRITERS; i++)
        pthread_join(wt[i], NULL);
    for (int i = 0; i < READERS; i++)
        pthread_join(rt[i], NULL);
    assert_int_equal(atomic_load(&sh.errors), 0);

    for (int id = 0; id < WRITERS; id++)
        for (int i = 0; i < BATCHES * PER_BATCH; i++)
            kw_hist_local_add(want, value_of(id, i), 1);
    kw_hist_snapshot(h, got);
    assert_int_equal(got->count, (uint64_t)WRITERS * BATCHES * PER_BATCH);
    assert_memory_equal(got, want, sizeof(*got));
    free(got);
    free(want);
    free(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_concurrent_adds),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
