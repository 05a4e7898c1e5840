/*
 * test_wal_threads.c -- unit tests of the WAL with concurrent callers: many
 * appenders at once (group commit), readers, iterators, stats, health and
 * cleanup beside them, a replica failing mid-run, and power lost mid-run.
 * This file carries the "threads" label and also runs under ThreadSanitizer,
 * so it is kept to a few seconds.
 *
 * How: worker threads append payloads generated from their own seeded PRNG
 * and keep what was acknowledged (LSN, position, bytes); they never call
 * cmocka (its failure path is not thread-safe) but count errors and keep the
 * first message, which the main thread then asserts on. After the threads
 * are joined, the main thread merges the lists by LSN and checks, before and
 * after a close + reopen, that the LSNs are exactly 1..N without gaps or
 * duplicates and that every record reads back byte for byte.
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
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test_io.h"
#include "test_util.h"
#include "test_walcheck.h"
#include "wal.h"

#define MAX_THREADS 8

/* One appender's acknowledged records and, if its last append failed, that
 * payload (it may have reached the disk without being acknowledged). */
typedef struct worker {
    pthread_t      thread;
    kw_wal_t      *w;
    int            id;
    int            count;          /* appends to make */
    int            stop_on_error;  /* a failed append ends the thread */
    test_reclist_t acked;
    uint8_t       *inflight;
    size_t         inflight_len;
    atomic_int    *errors;
    char           msg[400];
} worker_t;

typedef struct shared {
    kw_wal_t   *w;
    atomic_int  running;           /* appenders still going */
    atomic_int  errors;
    atomic_long reads, iterations, cleanups;
    atomic_int  cleaning;    /* a cleanup call has begun: cleaned LSNs may vanish */
    char        msg[256];
    pthread_mutex_t mu;            /* guards msg */
} shared_t;

typedef struct tstate {
    test_walfx_t *fx;
    test_io_t    *io;
    kw_wal_t     *w;
    worker_t      wk[MAX_THREADS];
    int           nwk;
    test_reclist_t all;
} tstate_t;

static int setup(void **state)
{
    *state = calloc(1, sizeof(tstate_t));
    return *state != NULL ? 0 : -1;
}

static void free_workers(tstate_t *s)
{
    for (int i = 0; i < s->nwk; i++) {
        test_reclist_free(&s->wk[i].acked);
        free(s->wk[i].inflight);
        s->wk[i].inflight = NULL;
    }
    s->nwk = 0;
}

static int teardown(void **state)
{
    tstate_t *s = *state;

    kw_wal_close(s->w);
    test_io_destroy(s->io);
    free_workers(s);
    test_reclist_free(&s->all);
    test_walfx_free(s->fx);
    free(s);
    return 0;
}

/* Thread-safe push (test_reclist_push asserts only on malloc failure). */
static void *appender(void *arg)
{
    worker_t *wk = arg;
    uint64_t rng = 0xa11ce000u + (uint64_t)wk->id * 7919u;
    char threadname[16];

    snprintf(threadname, sizeof(threadname), "appender-%d", wk->id);
    pthread_setname_np(pthread_self(), threadname);
    for (int i = 0; i < wk->count; i++) {
        size_t len = i % 11 == 0 ? 0 : (size_t)test_rand_below(&rng, 1500);
        unsigned flags = test_rand_below(&rng, 3) == 0 ? KW_WAL_COMPRESS : 0;
        uint8_t *p = malloc(len ? len : 1);
        kw_wal_pos_t pos;
        char err[256];
        kw_err_t rc;

        if (p == NULL)
            break;
        if (test_rand_below(&rng, 2))
            test_fill_pattern(p, len, test_rand(&rng));
        else
            test_fill_random(p, len, &rng);
        /* The thread id in the first bytes makes payloads distinct. */
        if (len >= 8)
            memcpy(p, &(uint64_t){ ((uint64_t)wk->id << 32) | (uint64_t)i }, 8);
        memset(&pos, 0, sizeof(pos));
        rc = kw_wal_append(wk->w, p, len, flags, &pos, err, sizeof(err));
        if (rc != KW_OK) {
            if (atomic_fetch_add(wk->errors, 1) == 0 || wk->msg[0] == '\0')
                snprintf(wk->msg, sizeof(wk->msg), "appender %d, append %d: %s: %s",
                         wk->id, i, kw_err_name(rc), err);
            if (wk->stop_on_error) {
                wk->inflight = p;
                wk->inflight_len = len;
                return NULL;
            }
            free(p);
            continue;
        }
        test_reclist_push(&wk->acked, &pos, p, len, flags);
        free(p);
    }
    return NULL;
}

static void start_workers(tstate_t *s, int n, int count, int stop_on_error, atomic_int *errors)
{
    s->nwk = n;
    for (int i = 0; i < n; i++) {
        worker_t *wk = &s->wk[i];

        memset(wk, 0, sizeof(*wk));
        wk->w = s->w;
        wk->id = i;
        wk->count = count;
        wk->stop_on_error = stop_on_error;
        wk->errors = errors;
        assert_int_equal(pthread_create(&wk->thread, NULL, appender, wk), 0);
    }
}

static void join_workers(tstate_t *s)
{
    for (int i = 0; i < s->nwk; i++)
        assert_int_equal(pthread_join(s->wk[i].thread, NULL), 0);
}

/* Merge every worker's acknowledged records into s->all, sorted by LSN. */
static void merge_acked(tstate_t *s)
{
    test_reclist_free(&s->all);
    for (int i = 0; i < s->nwk; i++)
        for (size_t k = 0; k < s->wk[i].acked.n; k++) {
            const test_rec_t *e = &s->wk[i].acked.v[k];

            test_reclist_push(&s->all, &e->pos, e->data, e->len, e->flags);
        }
    test_reclist_sort(&s->all);
}

/* Acknowledged LSNs are exactly first..first+n-1, strictly increasing. */
static void expect_contiguous(const test_reclist_t *l, uint64_t first)
{
    for (size_t i = 0; i < l->n; i++)
        if (l->v[i].pos.lsn != first + i)
            fail_msg("acknowledged LSNs: position %zu holds LSN %" PRIu64 ", expected %" PRIu64
                     " (a gap or a duplicate)", i, l->v[i].pos.lsn, first + i);
}

static void shared_error(shared_t *sh, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void shared_error(shared_t *sh, const char *fmt, ...)
{
    va_list ap;

    if (atomic_fetch_add(&sh->errors, 1) != 0)
        return;
    pthread_mutex_lock(&sh->mu);
    va_start(ap, fmt);
    vsnprintf(sh->msg, sizeof(sh->msg), fmt, ap);
    va_end(ap);
    pthread_mutex_unlock(&sh->mu);
}

/* Reads, iterates, polls stats and health while appenders run. Records it
 * reads must carry the LSN asked for; iterations must be gap-free. Records
 * below the oldest LSN may vanish at any time when a cleaner runs. */
static void *observer(void *arg)
{
    shared_t *sh = arg;
    kw_wal_record_t rec;
    uint64_t rng = 42;

    pthread_setname_np(pthread_self(), "observer");
    memset(&rec, 0, sizeof(rec));
    while (atomic_load(&sh->running) > 0) {
        kw_wal_stats_t st;
        kw_wal_replica_info_t info[KW_WAL_MAX_REPLICAS];
        kw_wal_iter_t *it = NULL;
        char err[256];
        kw_err_t rc;

        kw_wal_stats(sh->w, &st);
        kw_wal_health(sh->w, info, KW_WAL_MAX_REPLICAS);
        if (st.durable_lsn > 0) {
            uint64_t lsn = 1 + test_rand_below(&rng, st.durable_lsn);

            rc = test_read_lsn(sh->w, lsn, &rec, err, sizeof(err));
            if (rc == KW_OK && rec.pos.lsn != lsn)
                shared_error(sh, "read_lsn(%" PRIu64 ") returned LSN %" PRIu64, lsn, rec.pos.lsn);
            else if (rc != KW_OK && rc != KW_ENOTFOUND)
                shared_error(sh, "read_lsn(%" PRIu64 "): %s: %s", lsn, kw_err_name(rc), err);
            else if (rc == KW_ENOTFOUND && lsn >= st.first_lsn && atomic_load(&sh->cleaning) == 0)
                shared_error(sh, "read_lsn(%" PRIu64 ") not found, durable %" PRIu64, lsn,
                             st.durable_lsn);
            atomic_fetch_add(&sh->reads, 1);
        }
        rc = kw_wal_iter_new(sh->w, 0, &it, err, sizeof(err));
        if (rc != KW_OK) {
            shared_error(sh, "iter_new: %s: %s", kw_err_name(rc), err);
        } else {
            uint64_t prev = 0;
            int n = 0;

            while (n < 200 && (rc = test_iter_next(it, &rec, err, sizeof(err))) == KW_OK) {
                if (prev != 0 && rec.pos.lsn != prev + 1)
                    shared_error(sh, "iterator: LSN %" PRIu64 " after %" PRIu64, rec.pos.lsn, prev);
                prev = rec.pos.lsn;
                n++;
            }
            if (rc != KW_OK && rc != KW_EOF && !(rc == KW_ENOTFOUND && atomic_load(&sh->cleaning)))
                shared_error(sh, "iter_next after %" PRIu64 ": %s: %s", prev, kw_err_name(rc), err);
            kw_wal_iter_destroy(it);
            atomic_fetch_add(&sh->iterations, 1);
        }
        usleep(1000);
    }
    kw_wal_record_clear(&rec);
    return NULL;
}

/* Cleans below half the durable LSN while appenders run. */
static void *cleaner(void *arg)
{
    shared_t *sh = arg;

    pthread_setname_np(pthread_self(), "cleaner");
    while (atomic_load(&sh->running) > 0) {
        kw_wal_stats_t st;
        char err[256];
        int deleted = 0;
        kw_err_t rc;

        kw_wal_stats(sh->w, &st);
        /* The WAL drops cleaned segments from its table as the call begins:
         * say so before, so the observer may see them gone from then on. */
        atomic_store(&sh->cleaning, 1);
        rc = kw_wal_cleanup(sh->w, st.durable_lsn / 2, &deleted, err, sizeof(err));
        if (rc != KW_OK)
            shared_error(sh, "cleanup(%" PRIu64 "): %s: %s", st.durable_lsn / 2,
                         kw_err_name(rc), err);
        if (deleted > 0)
            atomic_fetch_add(&sh->cleanups, deleted);
        usleep(5000);
    }
    return NULL;
}

static void shared_init(shared_t *sh, kw_wal_t *w, int running)
{
    memset(sh, 0, sizeof(*sh));
    sh->w = w;
    atomic_init(&sh->running, running);
    atomic_init(&sh->errors, 0);
    atomic_init(&sh->reads, 0);
    atomic_init(&sh->iterations, 0);
    atomic_init(&sh->cleanups, 0);
    atomic_init(&sh->cleaning, 0);
    pthread_mutex_init(&sh->mu, NULL);
}

static void first_worker_error(tstate_t *s, atomic_int *errors)
{
    if (atomic_load(errors) == 0)
        return;
    for (int i = 0; i < s->nwk; i++)
        if (s->wk[i].msg[0] != '\0')
            fail_msg("%d failed appends; first: %s", atomic_load(errors), s->wk[i].msg);
    fail_msg("%d failed appends", atomic_load(errors));
}

/* ---- Tests ---- */

/* Six appenders over one replica whose fdatasync takes 2 ms, with an
 * observer beside them: every acknowledged append is there, in LSN order
 * without gaps, and one fdatasync served several appends. Every fdatasync
 * counted was timed (kw_wal_stats_t.fsync_us), none under the 2 ms. */
static void test_concurrent_appends(void **state)
{
    tstate_t *s = *state;
    const int nthreads = 6, per = 100;
    kw_wal_options_t o;
    kw_wal_stats_t st;
    pthread_t obs;
    shared_t sh;
    atomic_int errors;
    uint64_t first, last;

    s->fx = test_walfx_new("threads", 1, 0);
    s->io = test_io_new();
    assert_non_null(s->io);
    test_io_delay(s->io, 0, TEST_IO_FDATASYNC, 2000);
    test_wal_opts(&o, s->fx, 1, 0, test_io_table(s->io));
    o.segment_bytes = 256 * 1024;
    s->w = test_wal_open_ok(&o, NULL);

    atomic_init(&errors, 0);
    shared_init(&sh, s->w, 1);
    assert_int_equal(pthread_create(&obs, NULL, observer, &sh), 0);
    start_workers(s, nthreads, per, 0, &errors);
    join_workers(s);
    atomic_store(&sh.running, 0);
    assert_int_equal(pthread_join(obs, NULL), 0);
    pthread_mutex_destroy(&sh.mu);
    first_worker_error(s, &errors);
    if (atomic_load(&sh.errors) != 0)
        fail_msg("observer: %s", sh.msg);

    merge_acked(s);
    assert_int_equal(s->all.n, (size_t)(nthreads * per));
    expect_contiguous(&s->all, 1);
    kw_wal_stats(s->w, &st);
    assert_int_equal(st.appends, s->all.n);
    assert_int_equal(st.durable_lsn, s->all.n);
    if (!(st.fsyncs < st.appends))
        fail_msg("group commit: %" PRIu64 " fdatasyncs for %" PRIu64 " appends", st.fsyncs,
                 st.appends);
    assert_true(test_io_calls(s->io, 0, TEST_IO_FDATASYNC) < st.appends);
    assert_int_equal(st.fsync_us.count, st.fsyncs);
    assert_true(2000 <= st.fsync_us.p50 && st.fsync_us.p50 <= st.fsync_us.p90 &&
                st.fsync_us.p90 <= st.fsync_us.p99 && st.fsync_us.p99 <= st.fsync_us.max);
    if (getenv("KWAL_TEST_VERBOSE") != NULL)
        fprintf(stderr, "%" PRIu64 " appends, %" PRIu64 " writes, %" PRIu64 " fdatasyncs, "
                "observer: %ld reads, %ld iterations\n", st.appends, st.writes, st.fsyncs,
                atomic_load(&sh.reads), atomic_load(&sh.iterations));
    test_check_all(s->w, &s->all);
    kw_wal_close(s->w);
    s->w = NULL;

    test_wal_opts(&o, s->fx, 1, 0, NULL);
    o.segment_bytes = 256 * 1024;
    s->w = test_wal_open_ok(&o, NULL);
    assert_int_equal(test_iter_all(s->w, &s->all, &first, &last), s->all.n);
    assert_int_equal(first, 1);
    assert_int_equal(last, s->all.n);
    test_check_all(s->w, &s->all);
}

/* Four appenders on the real file system: group commit shows in the
 * counters without any injected delay. */
static void test_group_commit_posix(void **state)
{
    tstate_t *s = *state;
    kw_wal_options_t o;
    kw_wal_stats_t st;
    atomic_int errors;

    s->fx = test_walfx_new("groupcommit", 1, 0);
    test_wal_opts(&o, s->fx, 1, 0, NULL);
    s->w = test_wal_open_ok(&o, NULL);
    atomic_init(&errors, 0);
    start_workers(s, 4, 100, 0, &errors);
    join_workers(s);
    first_worker_error(s, &errors);
    kw_wal_stats(s->w, &st);
    if (getenv("KWAL_TEST_VERBOSE") != NULL)
        fprintf(stderr, "posix: %" PRIu64 " appends, %" PRIu64 " writes, %" PRIu64
                " fdatasyncs\n", st.appends, st.writes, st.fsyncs);
    assert_int_equal(st.appends, 400);
    if (!(st.fsyncs < st.appends))
        fail_msg("group commit: %" PRIu64 " fdatasyncs for %" PRIu64 " appends", st.fsyncs,
                 st.appends);
    merge_acked(s);
    expect_contiguous(&s->all, 1);
    test_check_all(s->w, &s->all);
}

/* Three replicas, W = 2: replica 1's 25th fdatasync fails while four
 * threads append. Every append is still acknowledged; replica 1 is failed
 * and never fdatasync'ed again; after repair all is well. */
static void test_concurrent_replica_failure(void **state)
{
    tstate_t *s = *state;
    kw_wal_options_t o;
    kw_wal_open_report_t rep;
    kw_wal_replica_info_t info[3];
    kw_wal_stats_t st;
    atomic_int errors;
    unsigned long syncs;

    s->fx = test_walfx_new("threadsfail", 3, 0);
    s->io = test_io_new();
    assert_non_null(s->io);
    test_io_fail_nth(s->io, 1, TEST_IO_FDATASYNC, 25, EIO);
    test_io_delay(s->io, TEST_IO_ALL_REPLICAS, TEST_IO_FDATASYNC, 500);
    test_wal_opts(&o, s->fx, 3, 2, test_io_table(s->io));
    o.segment_bytes = 128 * 1024;
    s->w = test_wal_open_ok(&o, NULL);

    atomic_init(&errors, 0);
    start_workers(s, 4, 80, 0, &errors);
    join_workers(s);
    first_worker_error(s, &errors);
    merge_acked(s);
    assert_int_equal(s->all.n, 320);
    expect_contiguous(&s->all, 1);

    assert_int_equal(test_io_failures(s->io, 1, TEST_IO_FDATASYNC), 1);
    syncs = test_io_calls(s->io, 1, TEST_IO_FDATASYNC);
    assert_int_equal(syncs, 25);
    memset(info, 0, sizeof(info));
    assert_int_equal(kw_wal_health(s->w, info, 3), 2);
    assert_int_equal(info[1].state, KW_REPLICA_FAILED);
    assert_int_equal(info[0].written_lsn, 320);
    assert_int_equal(info[2].written_lsn, 320);
    kw_wal_stats(s->w, &st);
    assert_int_equal(st.replicas_healthy, 2);
    test_check_all(s->w, &s->all);
    assert_int_equal(test_io_calls(s->io, 1, TEST_IO_FDATASYNC), syncs);
    kw_wal_close(s->w);
    s->w = NULL;

    test_wal_opts(&o, s->fx, 3, 2, NULL);
    s->w = test_wal_open_ok(&o, &rep);
    assert_int_equal(rep.replicas_failed, 1);
    test_check_all(s->w, &s->all);
    kw_wal_close(s->w);
    s->w = NULL;
    {
        char err[512] = "";
        kw_err_t rc = kw_wal_repair(&o, 1, NULL, err, sizeof(err));

        if (rc != KW_OK)
            fail_msg("kw_wal_repair: %s: %s", kw_err_name(rc), err);
    }
    s->w = test_wal_open_ok(&o, &rep);
    assert_int_equal(rep.replicas_healthy, 3);
    test_check_all(s->w, &s->all);
    kw_wal_close(s->w);
    s->w = NULL;
    assert_int_equal(test_verify(&o, NULL), 0);
}

/* Appenders, a reader and a cleaner at once. */
static void test_concurrent_cleanup(void **state)
{
    tstate_t *s = *state;
    kw_wal_options_t o;
    kw_wal_stats_t st;
    pthread_t obs, cln;
    shared_t sh;
    atomic_int errors;
    uint64_t first, last, count;

    s->fx = test_walfx_new("threadsclean", 2, 0);
    test_wal_opts(&o, s->fx, 2, 0, NULL);
    o.segment_bytes = 8192;
    s->w = test_wal_open_ok(&o, NULL);
    atomic_init(&errors, 0);
    shared_init(&sh, s->w, 1);
    assert_int_equal(pthread_create(&obs, NULL, observer, &sh), 0);
    assert_int_equal(pthread_create(&cln, NULL, cleaner, &sh), 0);
    start_workers(s, 4, 80, 0, &errors);
    join_workers(s);
    atomic_store(&sh.running, 0);
    assert_int_equal(pthread_join(obs, NULL), 0);
    assert_int_equal(pthread_join(cln, NULL), 0);
    pthread_mutex_destroy(&sh.mu);
    first_worker_error(s, &errors);
    if (atomic_load(&sh.errors) != 0)
        fail_msg("observer/cleaner: %s", sh.msg);
    assert_true(atomic_load(&sh.cleanups) > 0);

    merge_acked(s);
    assert_int_equal(s->all.n, 320);
    expect_contiguous(&s->all, 1);
    kw_wal_stats(s->w, &st);
    assert_true(st.first_lsn > 1);
    count = test_iter_all(s->w, &s->all, &first, &last);
    assert_int_equal(first, st.first_lsn);
    assert_int_equal(last, 320);
    assert_int_equal(count, 320 - first + 1);
    kw_wal_close(s->w);
    s->w = NULL;
    assert_int_equal(test_verify(&o, NULL), 0);
}

/* Power lost while four threads append to three replicas: after recovery
 * every acknowledged append is there; besides them, only appends that were
 * in flight (at most one per thread). */
static void test_concurrent_power_loss(void **state)
{
    tstate_t *s = *state;

    for (uint64_t seed = 1; seed <= 3; seed++) {
        kw_wal_options_t o;
        kw_wal_record_t rec;
        atomic_int errors;
        uint64_t rng = seed * 1000003u, first, last, extra = 0;
        char err[256];

        memset(&rec, 0, sizeof(rec));
        s->fx = test_walfx_new("threadscrash", 3, 1);
        s->io = test_io_new();
        assert_non_null(s->io);
        test_wal_opts(&o, s->fx, 3, 2, test_io_table(s->io));
        o.segment_bytes = 16 * 1024;
        s->w = test_wal_open_ok(&o, NULL);
        test_io_crash_after(s->io, 40 + test_rand_below(&rng, 200), seed);
        atomic_init(&errors, 0);
        start_workers(s, 4, 80, 1, &errors);
        join_workers(s);
        test_io_crash(s->io, seed);
        kw_wal_close(s->w);
        s->w = NULL;
        test_io_destroy(s->io);
        s->io = NULL;

        merge_acked(s);
        test_wal_opts(&o, s->fx, 3, 2, NULL);
        o.segment_bytes = 16 * 1024;
        s->w = test_wal_open_ok(&o, NULL);
        test_iter_all(s->w, &s->all, &first, &last);
        for (uint64_t lsn = 1; lsn <= last; lsn++) {
            if (test_reclist_find(&s->all, lsn) != NULL)
                continue;
            /* Not acknowledged: must be some thread's append in flight. */
            int found = 0;

            assert_int_equal(test_read_lsn(s->w, lsn, &rec, err, sizeof(err)), KW_OK);
            for (int i = 0; i < s->nwk; i++)
                if (s->wk[i].inflight != NULL && s->wk[i].inflight_len == rec.len &&
                    (rec.len == 0 || memcmp(s->wk[i].inflight, rec.payload, rec.len) == 0))
                    found = 1;
            if (!found)
                fail_msg("seed %" PRIu64 ": LSN %" PRIu64 " was neither acknowledged nor in flight",
                         seed, lsn);
            extra++;
        }
        assert_true(extra <= (uint64_t)s->nwk);
        if (getenv("KWAL_TEST_VERBOSE") != NULL)
            fprintf(stderr, "concurrent power loss, seed %" PRIu64 ": %zu acknowledged, "
                    "%" PRIu64 " records after recovery, %" PRIu64 " of them in flight\n",
                    seed, s->all.n, last, extra);
        if (s->all.n > 0)
            assert_true(last >= s->all.v[s->all.n - 1].pos.lsn);
        for (size_t i = 0; i < s->all.n; i++) {
            assert_int_equal(test_read(s->w, &s->all.v[i].pos, &rec, err, sizeof(err)), KW_OK);
            test_check_rec(&rec, &s->all.v[i]);
        }
        kw_wal_close(s->w);
        s->w = NULL;
        kw_wal_record_clear(&rec);
        free_workers(s);
        test_walfx_free(s->fx);
        s->fx = NULL;
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_concurrent_appends, setup, teardown),
        cmocka_unit_test_setup_teardown(test_group_commit_posix, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_replica_failure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_cleanup, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_power_loss, setup, teardown),
    };

    /* KWAL_TEST_FILTER=test_name (wildcards * and ?) runs a subset. */
    if (getenv("KWAL_TEST_FILTER") != NULL)
        cmocka_set_test_filter(getenv("KWAL_TEST_FILTER"));
    return cmocka_run_group_tests_name("wal_threads", tests, NULL, NULL);
}
