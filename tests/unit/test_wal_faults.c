/*
 * test_wal_faults.c -- unit tests of the WAL under failure: simulated power
 * loss, bit flips, replica failures and the write quorum, fdatasync errors,
 * short writes, repair.
 *
 * How: the WAL runs over the test backend of support/test_io.h, which fails
 * chosen calls per replica and counts every call, or "loses power" at a
 * random mutating call and leaves the disk as a machine would find it after
 * the crash (only what was fsynced is sure to be there; the rest is cut or
 * torn at random). The tests then reopen the WAL with the POSIX backend and
 * check that every acknowledged append is there, byte for byte, that nothing
 * else but at most the one append in flight is there, and that
 * kw_wal_verify finds the replicas in agreement. Bit flips are made with
 * test_flip_bit on closed or open WALs; log messages are captured through
 * kw_log_set_hook. Invariant numbers refer to /work/shared/DESIGN.md
 * ("No loss" is invariant 1).
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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test_io.h"
#include "test_util.h"
#include "test_walcheck.h"
#include "wal.h"

#define REC_HDR 32u

typedef struct tstate {
    test_walfx_t  *fx;
    test_io_t     *io;
    kw_wal_t      *w;
    test_reclist_t log;
} tstate_t;

static int setup(void **state)
{
    *state = calloc(1, sizeof(tstate_t));
    return *state != NULL ? 0 : -1;
}

static int teardown(void **state)
{
    tstate_t *s = *state;

    kw_wal_close(s->w);
    test_io_destroy(s->io);
    test_reclist_free(&s->log);
    test_walfx_free(s->fx);
    test_log_capture_end();
    free(s);
    return 0;
}

static void close_wal(tstate_t *s)
{
    kw_wal_close(s->w);
    s->w = NULL;
}

static void new_io(tstate_t *s)
{
    test_io_destroy(s->io);
    s->io = test_io_new();
    assert_non_null(s->io);
}

/* An append returns once the write quorum has it; a replica outside the
 * quorum may still be writing. Before damaging files of an open WAL, wait
 * (bounded) until every healthy replica has written everything. */
static void wait_all_written(kw_wal_t *w)
{
    kw_wal_stats_t st;

    kw_wal_stats(w, &st);
    for (int tries = 0; tries < 10000; tries++) {
        kw_wal_replica_info_t info[KW_WAL_MAX_REPLICAS];
        int n, done = 0;

        memset(info, 0, sizeof(info));
        n = kw_wal_health(w, info, KW_WAL_MAX_REPLICAS);
        for (int i = 0; i < KW_WAL_MAX_REPLICAS; i++)
            if (info[i].dir != NULL && info[i].state == KW_REPLICA_HEALTHY &&
                info[i].written_lsn >= st.durable_lsn)
                done++;
        if (done >= n)
            return;
        usleep(1000);
    }
    fail_msg("replicas did not catch up with LSN %" PRIu64 " within 10 s", st.durable_lsn);
}

static void append_n(tstate_t *s, int n, size_t len, uint64_t *rng)
{
    for (int i = 0; i < n; i++) {
        uint8_t *p = test_payload_new(rng, len, 0);

        test_append_ok(s->w, &s->log, p, len, 0);
        free(p);
    }
}

static void health(kw_wal_t *w, kw_wal_replica_info_t *info, int n, int expect_healthy)
{
    int healthy;

    memset(info, 0, sizeof(*info) * (size_t)n);
    healthy = kw_wal_health(w, info, n);
    for (int i = 0; i < n; i++) {
        assert_non_null(info[i].dir);
        if (info[i].state == KW_REPLICA_FAILED)
            assert_true(info[i].reason[0] != '\0');
        else
            assert_int_equal(info[i].state, KW_REPLICA_HEALTHY);
    }
    if (healthy != expect_healthy)
        fail_msg("%d healthy replicas, expected %d", healthy, expect_healthy);
}

/* Poll until replica r shows as failed (its I/O thread may still be on it
 * when the append that did not need it returned). */
static void wait_failed(kw_wal_t *w, int r, int n)
{
    kw_wal_replica_info_t info[KW_WAL_MAX_REPLICAS];

    for (int i = 0; i < 500; i++) {
        memset(info, 0, sizeof(info));
        kw_wal_health(w, info, n);
        if (info[r].state == KW_REPLICA_FAILED)
            return;
        usleep(10 * 1000);
    }
    fail_msg("replica %d never shown as failed", r);
}

/* Poll until replica r has fdatasync'ed lsn: an append returns once the
 * quorum has it, and a replica beyond the quorum may still be writing. */
static uint64_t wait_written(kw_wal_t *w, int r, int n, uint64_t lsn)
{
    kw_wal_replica_info_t info[KW_WAL_MAX_REPLICAS];

    for (int i = 0; i < 500; i++) {
        memset(info, 0, sizeof(info));
        kw_wal_health(w, info, n);
        if (info[r].written_lsn >= lsn)
            break;
        usleep(10 * 1000);
    }
    return info[r].written_lsn;
}

static void repair_ok(const kw_wal_options_t *o, int r, uint64_t *copied)
{
    char err[512] = "";
    kw_err_t rc = kw_wal_repair(o, r, copied, err, sizeof(err));

    if (rc != KW_OK)
        fail_msg("kw_wal_repair(%d): %s: %s", r, kw_err_name(rc), err);
}

/* ---- Power loss ---- */

/*
 * What a WAL must hold after a crash: `must` are the acknowledged records
 * (LSN i + 1 at index i, invariant 1); `maybe`, if any, is the one append
 * that was in flight when the power went, which may or may not be there.
 */
typedef struct model {
    test_reclist_t must;
    uint8_t       *maybe;
    size_t         maybe_len;
    unsigned       maybe_flags;
} model_t;

static void model_free(model_t *m)
{
    test_reclist_free(&m->must);
    free(m->maybe);
    m->maybe = NULL;
}

/* The WAL holds exactly must, optionally followed by maybe. Returns the last
 * LSN. With promote, whatever was found becomes `must` (a record that a
 * recovery has found is kept from then on, FORMAT.md step 6). */
static uint64_t model_check(kw_wal_t *w, model_t *m, int promote, const char *when)
{
    kw_wal_record_t rec;
    uint64_t first, last, count;
    char err[256];

    memset(&rec, 0, sizeof(rec));
    count = test_iter_all(w, &m->must, &first, &last);
    if (!(last == m->must.n || (m->maybe != NULL && last == m->must.n + 1)))
        fail_msg("%s: the WAL ends at LSN %" PRIu64 ", %zu appends were acknowledged%s",
                 when, last, m->must.n, m->maybe ? " and one was in flight" : "");
    assert_int_equal(count, last);
    if (count > 0)
        assert_int_equal(first, 1);
    for (size_t i = 0; i < m->must.n; i++) {
        assert_int_equal(test_read(w, &m->must.v[i].pos, &rec, err, sizeof(err)), KW_OK);
        test_check_rec(&rec, &m->must.v[i]);
    }
    if (last == m->must.n + 1) {
        kw_err_t rc = test_read_lsn(w, last, &rec, err, sizeof(err));

        if (rc != KW_OK)
            fail_msg("%s: read of LSN %" PRIu64 ": %s: %s", when, last, kw_err_name(rc), err);
        if (rec.len != m->maybe_len || (rec.len > 0 && memcmp(rec.payload, m->maybe, rec.len)))
            fail_msg("%s: LSN %" PRIu64 " is not the append that was in flight", when, last);
        if (promote)
            test_reclist_push(&m->must, &rec.pos, m->maybe, m->maybe_len, m->maybe_flags);
    }
    if (promote) {
        free(m->maybe);
        m->maybe = NULL;
    }
    kw_wal_record_clear(&rec);
    return last;
}

/* Append up to n records; stop at the first failure, which becomes maybe. */
static void model_appends(kw_wal_t *w, model_t *m, uint64_t *rng, int n)
{
    for (int i = 0; i < n; i++) {
        size_t len = i % 7 == 3 ? 0 : (size_t)test_rand_below(rng, 700);
        unsigned flags = test_rand_below(rng, 3) == 0 ? KW_WAL_COMPRESS : 0;
        uint8_t *p = test_payload_new(rng, len, test_rand_below(rng, 2) == 0);
        kw_wal_pos_t pos;
        char err[256];

        memset(&pos, 0, sizeof(pos));
        if (kw_wal_append(w, p, len, flags, &pos, err, sizeof(err)) != KW_OK) {
            free(m->maybe);
            m->maybe = p;
            m->maybe_len = len;
            m->maybe_flags = flags;
            return;
        }
        if (pos.lsn != m->must.n + 1)
            fail_msg("append acknowledged as LSN %" PRIu64 ", expected %zu", pos.lsn,
                     m->must.n + 1);
        test_reclist_push(&m->must, &pos, p, len, flags);
        free(p);
    }
}

#define PL_APPENDS_1 24     /* appends before the first crash */
#define PL_APPENDS_2 8      /* after the first recovery */

static void pl_opts(kw_wal_options_t *o, const test_walfx_t *fx, int ndirs, test_io_t *io)
{
    test_wal_opts(o, fx, ndirs, 0, io != NULL ? test_io_table(io) : NULL);
    o->segment_bytes = 1024;   /* rolls every few records */
}

/* Mutating calls of phase 1 (create + appends + close) and of phase 2
 * (recovery + appends + close) without a crash, to pick crash points. */
static void pl_dry_run(int ndirs, unsigned long *m1, unsigned long *m2)
{
    test_walfx_t *fx = test_walfx_new("pldry", ndirs, 1);
    test_io_t *io = test_io_new();
    kw_wal_options_t o;
    model_t m;
    uint64_t rng = 1;
    kw_wal_t *w;

    memset(&m, 0, sizeof(m));
    assert_non_null(io);
    pl_opts(&o, fx, ndirs, io);
    w = test_wal_open_ok(&o, NULL);
    model_appends(w, &m, &rng, PL_APPENDS_1);
    assert_null(m.maybe);
    kw_wal_close(w);
    *m1 = test_io_mutations(io);
    test_io_destroy(io);

    io = test_io_new();
    assert_non_null(io);
    pl_opts(&o, fx, ndirs, io);
    w = test_wal_open_ok(&o, NULL);
    model_appends(w, &m, &rng, PL_APPENDS_2);
    kw_wal_close(w);
    *m2 = test_io_mutations(io);
    test_io_destroy(io);
    model_free(&m);
    test_walfx_free(fx);
    assert_true(*m1 > 10 && *m2 > 5);
}

/*
 * One trial: create and append until the power goes at mutating call k1;
 * recover and append until it goes again at call k2 (possibly during the
 * recovery itself); then recover with POSIX I/O and check the model.
 */
static void pl_trial(tstate_t *s, int ndirs, uint64_t seed, unsigned long m1, unsigned long m2)
{
    uint64_t rng = seed * 0x9e3779b97f4a7c15ull + 17;
    unsigned long k1 = 1 + (unsigned long)test_rand_below(&rng, m1);
    unsigned long k2 = 1 + (unsigned long)test_rand_below(&rng, m2);
    kw_wal_options_t o;
    kw_wal_open_report_t rep;
    char err[512], when[64];
    test_io_crash_report_t crash1;
    int no_state[KW_WAL_MAX_REPLICAS], to_repair[KW_WAL_MAX_REPLICAS], nrepair = 0;
    model_t m;
    kw_err_t rc;
    uint64_t last;

    memset(&m, 0, sizeof(m));
    s->fx = test_walfx_new("powerloss", ndirs, 1);

    /* Phase 1. */
    new_io(s);
    pl_opts(&o, s->fx, ndirs, s->io);
    test_io_crash_after(s->io, k1, seed);
    rc = kw_wal_open(&o, &s->w, &rep, err, sizeof(err));
    if (rc == KW_OK) {
        model_appends(s->w, &m, &rng, PL_APPENDS_1);
        test_io_crash(s->io, seed);
        close_wal(s);
    } else if (!test_io_crashed(s->io)) {
        fail_msg("seed %" PRIu64 ": open failed without a crash: %s: %s", seed,
                 kw_err_name(rc), err);
    }

    test_io_last_crash(s->io, &crash1);

    /* Phase 2: the recovery may itself lose power. */
    new_io(s);
    pl_opts(&o, s->fx, ndirs, s->io);
    test_io_crash_after(s->io, k2, seed + 1);
    rc = kw_wal_open(&o, &s->w, &rep, err, sizeof(err));
    if (rc == KW_OK) {
        unsigned long used = test_io_mutations(s->io);

        if (!test_io_crashed(s->io)) {
            /* Check what the recovery found without a crash in the middle. */
            test_io_crash_after(s->io, 0, 0);
            snprintf(when, sizeof(when), "seed %" PRIu64 " after crash 1", seed);
            model_check(s->w, &m, 1, when);
            if (k2 > used)
                test_io_crash_after(s->io, k2 - used, seed + 1);
            else
                test_io_crash(s->io, seed + 1);
            model_appends(s->w, &m, &rng, PL_APPENDS_2);
        }
        test_io_crash(s->io, seed + 1);
        close_wal(s);
    } else if (!test_io_crashed(s->io)) {
        fail_msg("seed %" PRIu64 ": recovery failed without a crash: %s: %s", seed,
                 kw_err_name(rc), err);
    }
    test_io_destroy(s->io);
    s->io = NULL;

    /* Phase 3: a clean recovery must find every acknowledged append. A
     * replica whose STATE never became durable (power lost while the WAL
     * was being created) is a new replica, failed until repaired (FORMAT.md
     * open step 2); every other replica must come back healthy. */
    for (int r = 0; r < ndirs; r++) {
        char path[600];

        test_path(path, sizeof(path), "%s/STATE", s->fx->dir[r]);
        no_state[r] = access(path, F_OK) != 0;
    }
    pl_opts(&o, s->fx, ndirs, NULL);
    rc = kw_wal_open(&o, &s->w, &rep, err, sizeof(err));
    if (rc != KW_OK)
        fail_msg("seed %" PRIu64 " (crash points %lu/%lu of %lu/%lu): open after the crashes: "
                 "%s: %s", seed, k1, k2, m1, m2, kw_err_name(rc), err);
    if (rep.replicas_healthy != ndirs) {
        kw_wal_replica_info_t info[KW_WAL_MAX_REPLICAS];

        kw_wal_health(s->w, info, ndirs);
        for (int r = 0; r < ndirs; r++) {
            if (info[r].state != KW_REPLICA_FAILED)
                continue;
            if (!no_state[r])
                fail_msg("seed %" PRIu64 " (crash points %lu/%lu of %lu/%lu): replica %d failed "
                         "after the crashes: %s", seed, k1, k2, m1, m2, r, info[r].reason);
            to_repair[nrepair++] = r;
        }
    }
    snprintf(when, sizeof(when), "seed %" PRIu64 " after crash 2", seed);
    last = model_check(s->w, &m, 1, when);
    assert_int_equal(rep.last_lsn, last);
    if (nrepair > 0) {
        close_wal(s);
        for (int i = 0; i < nrepair; i++)
            repair_ok(&o, to_repair[i], NULL);
        s->w = test_wal_open_ok(&o, &rep);
        assert_int_equal(rep.replicas_healthy, ndirs);
        assert_int_equal(model_check(s->w, &m, 0, when), last);
    }
    assert_int_equal(test_append_ok(s->w, &m.must, "after", 5, 0).lsn, last + 1);
    if (getenv("KWAL_TEST_VERBOSE") != NULL)
        fprintf(stderr, "power loss: %d replicas, seed %" PRIu64 ": crash at %lu/%lu, then "
                "%lu/%lu; %" PRIu64 " records after recovery (%u files cut, %u names reverted)\n",
                ndirs, seed, k1, m1, k2, m2, last, crash1.files_rewritten, crash1.names_reverted);
    close_wal(s);
    if (test_verify(&o, NULL) != 0)
        fail_msg("seed %" PRIu64 ": kw_wal_verify found problems after recovery", seed);
    model_free(&m);
    test_walfx_free(s->fx);
    s->fx = NULL;
}

static void power_loss(tstate_t *s, int ndirs, uint64_t first_seed)
{
    const char *env = getenv("KWAL_CRASH_TRIALS"), *seed_env = getenv("KWAL_CRASH_SEED");
    int trials = env != NULL ? atoi(env) : 12;
    unsigned long m1, m2;

    /* KWAL_CRASH_SEED=N KWAL_CRASH_TRIALS=1 replays one trial. */
    if (seed_env != NULL)
        first_seed = strtoull(seed_env, NULL, 10);
    pl_dry_run(ndirs, &m1, &m2);
    for (int i = 0; i < trials; i++)
        pl_trial(s, ndirs, first_seed + (uint64_t)i, m1, m2);
}

static void test_power_loss_1_replica(void **state)
{
    power_loss(*state, 1, 1000);
}

static void test_power_loss_3_replicas(void **state)
{
    power_loss(*state, 3, 3000);
}

/* Losing power right after acknowledged appends, at every possible point of
 * a short run, on one replica: exhaustive rather than random. */
static void test_power_loss_every_point(void **state)
{
    tstate_t *s = *state;
    unsigned long m1, m2;

    pl_dry_run(1, &m1, &m2);
    for (unsigned long k = 1; k <= m1; k += (m1 > 60 ? 2 : 1)) {
        kw_wal_options_t o;
        model_t m;
        uint64_t rng = k;
        char when[64];

        memset(&m, 0, sizeof(m));
        s->fx = test_walfx_new("plpoint", 1, 1);
        new_io(s);
        pl_opts(&o, s->fx, 1, s->io);
        test_io_crash_after(s->io, k, k);
        if (kw_wal_open(&o, &s->w, NULL, NULL, 0) == KW_OK) {
            model_appends(s->w, &m, &rng, PL_APPENDS_1);
            test_io_crash(s->io, k);
            close_wal(s);
        }
        pl_opts(&o, s->fx, 1, NULL);
        s->w = test_wal_open_ok(&o, NULL);
        snprintf(when, sizeof(when), "crash at mutating call %lu", k);
        model_check(s->w, &m, 0, when);
        close_wal(s);
        model_free(&m);
        test_walfx_free(s->fx);
        s->fx = NULL;
    }
}

/* ---- Bit flips ---- */

/* Flip one bit in each replica, each in a different record of a segment
 * that is not the last: a read of any record is still served, from another
 * replica where needed, and logged; open reports the corrupt records
 * (FORMAT.md step 4) and verify names them. */
static void test_bitflip_one_replica(void **state)
{
    tstate_t *s = *state;
    static const size_t victim[3] = { 2, 8, 14 };  /* record index per replica */
    kw_wal_options_t o;
    kw_wal_open_report_t rep;
    kw_wal_stats_t st0, st;
    test_problems_t probs;
    uint64_t rng = 606;
    size_t located = 0;

    memset(&probs, 0, sizeof(probs));
    s->fx = test_walfx_new("bitflip", 3, 0);
    test_wal_opts(&o, s->fx, 3, 2, NULL);
    o.segment_bytes = 2048;                       /* 6 records of 300 bytes each */
    s->w = test_wal_open_ok(&o, NULL);
    append_n(s, 30, 300, &rng);
    wait_all_written(s->w);
    assert_true(s->log.v[victim[2]].pos.segment < s->log.v[s->log.n - 1].pos.segment);

    /* Replicas 0 and 1: a payload bit; replica 2: a bit of the LSN field. */
    for (int r = 0; r < 3; r++) {
        const kw_wal_pos_t *pos = &s->log.v[victim[r]].pos;
        char seg[600];

        test_seg_path(seg, sizeof(seg), s->fx->dir[r], pos->segment);
        assert_int_equal(test_flip_bit(seg, r < 2 ? pos->offset + REC_HDR + 17 : pos->offset + 16,
                                       (unsigned)r + 1), 0);
    }

    /* While open: reads verify checksums and fall back. */
    kw_wal_stats(s->w, &st0);
    test_log_capture_begin();
    test_check_all(s->w, &s->log);
    kw_wal_stats(s->w, &st);
    if (st.read_fallbacks <= st0.read_fallbacks)
        fail_msg("bit flips in every replica's copy of one record each, but no read fell back");
    if (test_log_count(KW_LOG_WARN, NULL) == 0)
        fail_msg("a read fell back to another replica and nothing was logged");
    for (int r = 0; r < 3; r++) {
        char seg[64];

        test_seg_name(seg, sizeof(seg), s->log.v[victim[r]].pos.segment);
        seg[20] = '\0';
        located += test_log_count(KW_LOG_WARN, seg);
        located += test_log_count(KW_LOG_WARN, s->fx->dir[r]);
    }
    if (located == 0)
        fail_msg("the log of a bad checksum names neither the segment nor the directory");
    test_log_capture_end();
    close_wal(s);

    /* kw_wal_verify names replica, segment and offset of each. */
    assert_true(test_verify(&o, &probs) >= 3);
    for (int r = 0; r < 3; r++) {
        const kw_wal_pos_t *pos = &s->log.v[victim[r]].pos;

        if (test_problems_at(&probs, r, pos->segment, pos->offset) == 0)
            fail_msg("kw_wal_verify did not report replica %d segment %" PRIu64
                     " offset %" PRIu64, r, pos->segment, pos->offset);
    }
    test_problems_free(&probs);

    /* At open: reported, and every record still served. */
    s->w = test_wal_open_ok(&o, &rep);
    assert_int_equal(rep.corrupt_records, 3);
    assert_int_equal(rep.torn_tails, 0);
    assert_int_equal(rep.last_lsn, 30);
    test_check_all(s->w, &s->log);
    append_n(s, 2, 100, &rng);
    test_check_all(s->w, &s->log);
}

/* A flipped record in the last segment of one replica lies in what may be
 * that replica's unfinished tail: it is cut and refilled from the others
 * (FORMAT.md "Torn tail", second case), and nothing is lost. */
static void test_bitflip_last_segment_refilled(void **state)
{
    tstate_t *s = *state;
    kw_wal_options_t o;
    kw_wal_open_report_t rep;
    const kw_wal_pos_t *pos;
    uint64_t rng = 616;
    char seg[600];

    s->fx = test_walfx_new("bitfliplast", 3, 0);
    test_wal_opts(&o, s->fx, 3, 2, NULL);
    s->w = test_wal_open_ok(&o, NULL);
    append_n(s, 12, 300, &rng);
    close_wal(s);
    pos = &s->log.v[4].pos;
    test_seg_path(seg, sizeof(seg), s->fx->dir[1], pos->segment);
    assert_int_equal(test_flip_bit(seg, pos->offset + REC_HDR + 3, 6), 0);

    s->w = test_wal_open_ok(&o, &rep);
    assert_int_equal(rep.replicas_healthy, 3);
    assert_int_equal(rep.last_lsn, 12);
    assert_int_equal(rep.torn_tails + rep.corrupt_records, 1);
    if (rep.torn_tails == 1)
        assert_true(rep.reconciled_bytes >= 8 * (REC_HDR + 300));
    test_check_all(s->w, &s->log);
    append_n(s, 2, 100, &rng);
    test_check_all(s->w, &s->log);
    close_wal(s);
    if (rep.torn_tails == 1)
        assert_int_equal(test_verify(&o, NULL), 0);
}

/* The same record flipped in every replica: reads, iteration and open fail
 * with KW_ECORRUPT; corruption is never skipped silently. */
static void test_bitflip_every_replica(void **state)
{
    tstate_t *s = *state;
    kw_wal_options_t o;
    kw_wal_record_t rec;
    kw_wal_iter_t *it = NULL;
    test_problems_t probs;
    const kw_wal_pos_t *pos;
    kw_wal_t *w = NULL;
    char err[512] = "", segname[64], offs[32], next_err[512] = "";
    uint64_t rng = 707;
    kw_err_t rc, next_rc;

    memset(&rec, 0, sizeof(rec));
    memset(&probs, 0, sizeof(probs));
    s->fx = test_walfx_new("bitflipall", 3, 0);
    test_wal_opts(&o, s->fx, 3, 2, NULL);
    s->w = test_wal_open_ok(&o, NULL);
    append_n(s, 12, 300, &rng);
    wait_all_written(s->w);
    pos = &s->log.v[4].pos;
    for (int r = 0; r < 3; r++) {
        char seg[600];

        test_seg_path(seg, sizeof(seg), s->fx->dir[r], pos->segment);
        assert_int_equal(test_flip_bit(seg, pos->offset + REC_HDR + 100, 3), 0);
    }

    rc = test_read(s->w, pos, &rec, err, sizeof(err));
    assert_int_equal(rc, KW_ECORRUPT);
    assert_true(err[0] != '\0');
    assert_int_equal(test_read_lsn(s->w, pos->lsn, &rec, err, sizeof(err)), KW_ECORRUPT);
    /* Neighbours are fine when read by position. */
    assert_int_equal(test_read(s->w, &s->log.v[5].pos, &rec, err, sizeof(err)), KW_OK);
    test_check_rec(&rec, &s->log.v[5]);
    next_rc = test_read_lsn(s->w, pos->lsn + 1, &rec, err, sizeof(err));
    if (next_rc == KW_OK)
        test_check_rec(&rec, &s->log.v[5]);
    else
        snprintf(next_err, sizeof(next_err), "%s", err);
    /* The iterator stops at it with the error. */
    assert_int_equal(kw_wal_iter_new(s->w, 0, &it, err, sizeof(err)), KW_OK);
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(test_iter_next(it, &rec, err, sizeof(err)), KW_OK);
        test_check_rec(&rec, &s->log.v[i]);
    }
    assert_int_equal(test_iter_next(it, &rec, err, sizeof(err)), KW_ECORRUPT);
    kw_wal_iter_destroy(it);
    close_wal(s);

    err[0] = '\0';
    rc = kw_wal_open(&o, &w, NULL, err, sizeof(err));
    if (rc != KW_ECORRUPT)
        fail_msg("open of a WAL with a record bad on every replica: %s (%s), expected KW_ECORRUPT",
                 kw_err_name(rc), err);
    assert_null(w);
    test_seg_name(segname, sizeof(segname), pos->segment);
    segname[20] = '\0';
    snprintf(offs, sizeof(offs), "%" PRIu64, pos->offset);
    if (strstr(err, segname) == NULL || strstr(err, offs) == NULL)
        fail_msg("KW_ECORRUPT errstr should name segment %s and offset %s: %s", segname, offs, err);

    assert_true(test_verify(&o, &probs) >= 3);
    for (int r = 0; r < 3; r++)
        assert_true(test_problems_at(&probs, r, pos->segment, pos->offset) >= 1);
    test_problems_free(&probs);
    kw_wal_record_clear(&rec);

    /* Checked last so that the checks above run regardless: the record
     * after the corrupt one is intact and must be readable by LSN too. */
    if (next_rc != KW_OK)
        fail_msg("kw_wal_read_lsn(%" PRIu64 ") of an intact record after a corrupt one: %s: %s",
                 pos->lsn + 1, kw_err_name(next_rc), next_err);
}

/* A flipped record on one replica is found by verify and rebuilt by repair. */
static void test_bitflip_repair(void **state)
{
    tstate_t *s = *state;
    kw_wal_options_t o;
    kw_wal_open_report_t rep;
    test_problems_t probs;
    const kw_wal_pos_t *pos;
    uint64_t rng = 808, copied = 0;
    char seg[600];

    memset(&probs, 0, sizeof(probs));
    s->fx = test_walfx_new("bitfliprepair", 3, 0);
    test_wal_opts(&o, s->fx, 3, 2, NULL);
    s->w = test_wal_open_ok(&o, NULL);
    append_n(s, 10, 250, &rng);
    close_wal(s);
    pos = &s->log.v[3].pos;
    test_seg_path(seg, sizeof(seg), s->fx->dir[2], pos->segment);
    assert_int_equal(test_flip_bit(seg, pos->offset + REC_HDR + 5, 0), 0);

    assert_true(test_verify(&o, &probs) >= 1);
    assert_true(test_problems_at(&probs, 2, pos->segment, pos->offset) >= 1);
    for (size_t i = 0; i < probs.n; i++)
        assert_int_equal(probs.v[i].replica, 2);
    test_problems_free(&probs);

    repair_ok(&o, 2, &copied);
    assert_true(copied > 0);
    assert_int_equal(test_verify(&o, NULL), 0);
    s->w = test_wal_open_ok(&o, &rep);
    assert_int_equal(rep.corrupt_records, 0);
    assert_int_equal(rep.replicas_healthy, 3);
    test_check_all(s->w, &s->log);
}

/* ---- Replica failures and the quorum ---- */

/* One of three replicas fails its writes: appends go on (W = 2), the
 * failure is persisted, and repair brings the replica back. */
static void test_quorum_one_replica_fails(void **state)
{
    tstate_t *s = *state;
    kw_wal_options_t o;
    kw_wal_open_report_t rep;
    kw_wal_replica_info_t info[3];
    kw_wal_stats_t st;
    uint64_t rng = 1, copied = 0;
    kw_wal_pos_t pos;

    s->fx = test_walfx_new("quorum1", 3, 0);
    new_io(s);
    test_wal_opts(&o, s->fx, 3, 2, test_io_table(s->io));
    s->w = test_wal_open_ok(&o, NULL);
    append_n(s, 5, 200, &rng);
    health(s->w, info, 3, 3);

    test_io_fail_always(s->io, 2, TEST_IO_PWRITEV, EIO);
    append_n(s, 10, 200, &rng);
    wait_failed(s->w, 2, 3);
    health(s->w, info, 3, 2);
    assert_int_equal(info[2].state, KW_REPLICA_FAILED);
    assert_int_equal(info[0].written_lsn, 15);
    assert_int_equal(info[1].written_lsn, 15);
    assert_true(info[2].written_lsn <= 5);
    assert_true(test_io_failures(s->io, 2, TEST_IO_PWRITEV) >= 1);
    kw_wal_stats(s->w, &st);
    assert_int_equal(st.replicas_healthy, 2);
    assert_int_equal(st.durable_lsn, 15);
    test_check_all(s->w, &s->log);
    close_wal(s);

    /* Still failed after a restart; it takes no writes. */
    new_io(s);
    test_wal_opts(&o, s->fx, 3, 2, test_io_table(s->io));
    s->w = test_wal_open_ok(&o, &rep);
    assert_int_equal(rep.replicas_failed, 1);
    assert_int_equal(rep.replicas_healthy, 2);
    health(s->w, info, 3, 2);
    assert_int_equal(info[2].state, KW_REPLICA_FAILED);
    append_n(s, 3, 200, &rng);
    assert_int_equal(test_io_calls(s->io, 2, TEST_IO_PWRITEV), 0);
    assert_int_equal(test_io_calls(s->io, 2, TEST_IO_FDATASYNC), 0);
    test_check_all(s->w, &s->log);
    close_wal(s);

    /* Repaired: healthy again, and it takes writes. */
    repair_ok(&o, 2, &copied);
    assert_true(copied > 0);
    new_io(s);
    test_wal_opts(&o, s->fx, 3, 2, test_io_table(s->io));
    s->w = test_wal_open_ok(&o, &rep);
    assert_int_equal(rep.replicas_failed, 0);
    assert_int_equal(rep.replicas_healthy, 3);
    pos = test_append_ok(s->w, &s->log, "back", 4, 0);
    health(s->w, info, 3, 3);
    assert_int_equal(wait_written(s->w, 2, 3, pos.lsn), pos.lsn);
    assert_true(test_io_calls(s->io, 2, TEST_IO_FDATASYNC) > 0);
    test_check_all(s->w, &s->log);
    close_wal(s);
    assert_int_equal(test_verify(&o, NULL), 0);
}

/* Two of three fail: appends fail with KW_EQUORUM and nothing is
 * acknowledged; after repair of both the WAL takes appends again. */
static void test_quorum_lost(void **state)
{
    tstate_t *s = *state;
    kw_wal_options_t o;
    kw_wal_open_report_t rep;
    kw_wal_replica_info_t info[3];
    kw_wal_stats_t st;
    kw_wal_pos_t pos;
    model_t m;
    uint64_t rng = 2, last;
    char err[256];

    memset(&m, 0, sizeof(m));
    s->fx = test_walfx_new("quorum2", 3, 0);
    new_io(s);
    test_wal_opts(&o, s->fx, 3, 2, test_io_table(s->io));
    s->w = test_wal_open_ok(&o, NULL);
    append_n(s, 5, 200, &rng);

    test_io_fail_always(s->io, 1, TEST_IO_FDATASYNC, EIO);
    test_io_fail_always(s->io, 2, TEST_IO_PWRITEV, ENOSPC);
    memset(&pos, 0, sizeof(pos));
    assert_int_equal(kw_wal_append(s->w, "lost", 4, 0, &pos, err, sizeof(err)), KW_EQUORUM);
    assert_int_equal(kw_wal_append(s->w, "lost2", 5, 0, &pos, err, sizeof(err)), KW_EQUORUM);
    kw_wal_stats(s->w, &st);
    assert_int_equal(st.appends, 5);
    assert_int_equal(st.durable_lsn, 5);
    wait_failed(s->w, 1, 3);
    wait_failed(s->w, 2, 3);
    health(s->w, info, 3, 1);
    /* Reads still work below the quorum. */
    test_check_all(s->w, &s->log);
    close_wal(s);

    /* Health survives the restart: still below the quorum. */
    test_wal_opts(&o, s->fx, 3, 2, NULL);
    s->w = test_wal_open_ok(&o, &rep);
    assert_int_equal(rep.replicas_failed, 2);
    assert_int_equal(kw_wal_append(s->w, "lost3", 5, 0, &pos, err, sizeof(err)), KW_EQUORUM);
    close_wal(s);

    repair_ok(&o, 1, NULL);
    repair_ok(&o, 2, NULL);
    s->w = test_wal_open_ok(&o, &rep);
    assert_int_equal(rep.replicas_healthy, 3);
    /* The first refused append may have reached replica 0 and been kept
     * (valid, never acknowledged); nothing else may be there. */
    for (size_t i = 0; i < s->log.n; i++)
        test_reclist_push(&m.must, &s->log.v[i].pos, s->log.v[i].data, s->log.v[i].len, 0);
    m.maybe = (uint8_t *)strdup("lost");
    m.maybe_len = 4;
    last = model_check(s->w, &m, 0, "after repair");
    pos = test_append_ok(s->w, NULL, "again", 5, 0);
    assert_int_equal(pos.lsn, last + 1);
    health(s->w, info, 3, 3);
    close_wal(s);
    assert_int_equal(test_verify(&o, NULL), 0);
    model_free(&m);
}

/* An fdatasync error fails the replica for good: fdatasync is never called
 * on it again, in this run or the next, until repair. */
static void test_fdatasync_failure_not_retried(void **state)
{
    tstate_t *s = *state;
    kw_wal_options_t o;
    kw_wal_open_report_t rep;
    kw_wal_replica_info_t info[3];
    kw_wal_pos_t failed_at, pos;
    unsigned long syncs, writes;
    uint64_t rng = 3;

    s->fx = test_walfx_new("fdatasync", 3, 0);
    new_io(s);
    test_wal_opts(&o, s->fx, 3, 2, test_io_table(s->io));
    s->w = test_wal_open_ok(&o, NULL);
    append_n(s, 3, 100, &rng);

    test_io_fail_nth(s->io, 1, TEST_IO_FDATASYNC, 1, EIO);
    failed_at = test_append_ok(s->w, &s->log, "x", 1, 0);
    wait_failed(s->w, 1, 3);
    assert_int_equal(test_io_failures(s->io, 1, TEST_IO_FDATASYNC), 1);
    syncs = test_io_calls(s->io, 1, TEST_IO_FDATASYNC);
    writes = test_io_calls(s->io, 1, TEST_IO_PWRITEV);
    append_n(s, 10, 100, &rng);
    assert_int_equal(test_io_calls(s->io, 1, TEST_IO_FDATASYNC), syncs);
    assert_int_equal(test_io_calls(s->io, 1, TEST_IO_PWRITEV), writes);
    health(s->w, info, 3, 2);
    assert_int_equal(info[1].state, KW_REPLICA_FAILED);
    assert_true(info[1].written_lsn < failed_at.lsn);
    assert_int_equal(info[0].written_lsn, s->log.n);
    close_wal(s);

    new_io(s);
    test_wal_opts(&o, s->fx, 3, 2, test_io_table(s->io));
    s->w = test_wal_open_ok(&o, &rep);
    assert_int_equal(rep.replicas_failed, 1);
    append_n(s, 4, 100, &rng);
    assert_int_equal(test_io_calls(s->io, 1, TEST_IO_FDATASYNC), 0);
    assert_int_equal(test_io_calls(s->io, 1, TEST_IO_PWRITEV), 0);
    test_check_all(s->w, &s->log);
    close_wal(s);

    repair_ok(&o, 1, NULL);
    new_io(s);
    test_wal_opts(&o, s->fx, 3, 2, test_io_table(s->io));
    s->w = test_wal_open_ok(&o, &rep);
    assert_int_equal(rep.replicas_healthy, 3);
    pos = test_append_ok(s->w, &s->log, "y", 1, 0);
    health(s->w, info, 3, 3);
    assert_int_equal(wait_written(s->w, 1, 3, pos.lsn), pos.lsn);
    test_check_all(s->w, &s->log);
    close_wal(s);
    assert_int_equal(test_verify(&o, NULL), 0);
}

/* A single replica whose fdatasync fails: the append is not acknowledged,
 * the WAL refuses further appends and does not fdatasync again. */
static void test_fdatasync_failure_single_replica(void **state)
{
    tstate_t *s = *state;
    kw_wal_options_t o;
    kw_wal_stats_t st;
    kw_wal_record_t rec;
    unsigned long syncs;
    model_t m;
    uint64_t rng = 4;
    char err[256], read_err[256] = "";
    kw_err_t read_rc;

    memset(&m, 0, sizeof(m));
    memset(&rec, 0, sizeof(rec));
    s->fx = test_walfx_new("fdatasync1", 1, 0);
    new_io(s);
    test_wal_opts(&o, s->fx, 1, 0, test_io_table(s->io));
    s->w = test_wal_open_ok(&o, NULL);
    append_n(s, 3, 100, &rng);
    test_io_fail_nth(s->io, 0, TEST_IO_FDATASYNC, 1, EIO);
    assert_int_equal(kw_wal_append(s->w, "nope", 4, 0, NULL, err, sizeof(err)), KW_EQUORUM);
    syncs = test_io_calls(s->io, 0, TEST_IO_FDATASYNC);
    assert_int_equal(kw_wal_append(s->w, "nope2", 5, 0, NULL, err, sizeof(err)), KW_EQUORUM);
    assert_int_equal(test_io_calls(s->io, 0, TEST_IO_FDATASYNC), syncs);
    kw_wal_stats(s->w, &st);
    assert_int_equal(st.appends, 3);
    assert_int_equal(st.durable_lsn, 3);
    /* Below the quorum the WAL is read-only (wal.h): what was acknowledged
     * before the failure stays readable. Asserted at the end. */
    read_rc = test_read(s->w, &s->log.v[0].pos, &rec, err, sizeof(err));
    if (read_rc == KW_OK)
        test_check_rec(&rec, &s->log.v[0]);
    else
        snprintf(read_err, sizeof(read_err), "%s", err);
    kw_wal_record_clear(&rec);
    close_wal(s);

    /* After a restart the acknowledged records are there; the refused one
     * may be (it was written, its fdatasync failed). */
    test_wal_opts(&o, s->fx, 1, 0, NULL);
    s->w = test_wal_open_ok(&o, NULL);
    for (size_t i = 0; i < s->log.n; i++)
        test_reclist_push(&m.must, &s->log.v[i].pos, s->log.v[i].data, s->log.v[i].len, 0);
    m.maybe = (uint8_t *)strdup("nope");
    m.maybe_len = 4;
    model_check(s->w, &m, 0, "after fdatasync failure");
    model_free(&m);
    if (read_rc != KW_OK)
        fail_msg("read of an acknowledged record while the only replica is failed "
                 "(WAL read-only): %s: %s", kw_err_name(read_rc), read_err);
}

/* A replica that cannot be opened is failed at open; the failure is
 * persisted; repair restores it. */
static void test_open_failure(void **state)
{
    tstate_t *s = *state;
    kw_wal_options_t o;
    kw_wal_open_report_t rep;
    kw_wal_replica_info_t info[3];
    uint64_t rng = 5;

    s->fx = test_walfx_new("openfail", 3, 0);
    test_wal_opts(&o, s->fx, 3, 2, NULL);
    s->w = test_wal_open_ok(&o, NULL);
    append_n(s, 4, 100, &rng);
    close_wal(s);

    new_io(s);
    test_io_fail_always(s->io, 1, TEST_IO_OPEN, EIO);
    test_wal_opts(&o, s->fx, 3, 2, test_io_table(s->io));
    s->w = test_wal_open_ok(&o, &rep);
    assert_int_equal(rep.replicas_failed, 1);
    assert_int_equal(rep.replicas_healthy, 2);
    health(s->w, info, 3, 2);
    assert_int_equal(info[1].state, KW_REPLICA_FAILED);
    append_n(s, 4, 100, &rng);
    test_check_all(s->w, &s->log);
    close_wal(s);

    test_wal_opts(&o, s->fx, 3, 2, NULL);
    s->w = test_wal_open_ok(&o, &rep);
    assert_int_equal(rep.replicas_failed, 1);
    close_wal(s);
    repair_ok(&o, 1, NULL);
    s->w = test_wal_open_ok(&o, &rep);
    assert_int_equal(rep.replicas_healthy, 3);
    append_n(s, 1, 100, &rng);
    test_check_all(s->w, &s->log);
    close_wal(s);
    assert_int_equal(test_verify(&o, NULL), 0);
}

/* Short writes, alone and followed by ENOSPC: appends are acknowledged only
 * when durable, and the data is intact after a restart. */
static void test_short_writes(void **state)
{
    tstate_t *s = *state;
    kw_wal_options_t o;
    kw_wal_replica_info_t info[3];
    uint64_t rng = 6;

    s->fx = test_walfx_new("shortwrite", 3, 0);
    new_io(s);
    test_wal_opts(&o, s->fx, 3, 2, test_io_table(s->io));
    s->w = test_wal_open_ok(&o, NULL);
    append_n(s, 3, 500, &rng);
    test_io_short_write(s->io, 0, 1, 10);
    append_n(s, 3, 500, &rng);
    test_io_short_write(s->io, 2, 1, 7);
    test_io_fail_nth(s->io, 2, TEST_IO_PWRITEV, 2, ENOSPC);
    append_n(s, 5, 500, &rng);
    wait_failed(s->w, 2, 3);
    test_check_all(s->w, &s->log);
    close_wal(s);

    test_wal_opts(&o, s->fx, 3, 2, NULL);
    s->w = test_wal_open_ok(&o, NULL);
    test_check_all(s->w, &s->log);
    memset(info, 0, sizeof(info));
    kw_wal_health(s->w, info, 3);
    close_wal(s);
    for (int r = 0; r < 3; r++)
        if (info[r].state == KW_REPLICA_FAILED)
            repair_ok(&o, r, NULL);
    assert_int_equal(test_verify(&o, NULL), 0);
    s->w = test_wal_open_ok(&o, NULL);
    test_check_all(s->w, &s->log);
}

/* Repair of a healthy replica with a bad record while the file system of
 * the other replicas is slow (each rename takes 100 ms) must work as on a
 * fast one: slowness is not a failure, and repair must not leave healthy
 * replicas marked failed. */
static void test_repair_slow_io(void **state)
{
    tstate_t *s = *state;
    kw_wal_options_t o;
    kw_wal_open_report_t rep;
    uint64_t rng = 9;
    char err[512] = "";
    kw_err_t rc;

    s->fx = test_walfx_new("repairslow", 3, 0);
    test_wal_opts(&o, s->fx, 3, 2, NULL);
    s->w = test_wal_open_ok(&o, NULL);
    append_n(s, 6, 200, &rng);
    close_wal(s);
    /* Replica 2 is healthy but holds a bad record: repair rebuilds it. */
    {
        char seg[600];

        test_seg_path(seg, sizeof(seg), s->fx->dir[2], s->log.v[2].pos.segment);
        assert_int_equal(test_flip_bit(seg, s->log.v[2].pos.offset + REC_HDR + 9, 5), 0);
    }

    new_io(s);
    test_io_delay(s->io, 0, TEST_IO_RENAME, 100 * 1000);
    test_io_delay(s->io, 1, TEST_IO_RENAME, 100 * 1000);
    test_wal_opts(&o, s->fx, 3, 2, test_io_table(s->io));
    rc = kw_wal_repair(&o, 2, NULL, err, sizeof(err));
    if (rc != KW_OK)
        fail_msg("kw_wal_repair with slow renames: %s: %s", kw_err_name(rc), err);
    test_wal_opts(&o, s->fx, 3, 2, NULL);
    s->w = test_wal_open_ok(&o, &rep);
    if (rep.replicas_healthy != 3) {
        kw_wal_replica_info_t info[3];

        memset(info, 0, sizeof(info));
        kw_wal_health(s->w, info, 3);
        fail_msg("after repair with slow renames, %d of 3 replicas healthy (%s | %s | %s)",
                 rep.replicas_healthy, info[0].reason, info[1].reason, info[2].reason);
    }
    test_check_all(s->w, &s->log);
    close_wal(s);
    assert_int_equal(test_verify(&o, NULL), 0);
}

/* An empty directory added to an existing WAL is a new replica: failed
 * until repair fills it (FORMAT.md, open step 2). */
static void test_new_replica_dir(void **state)
{
    tstate_t *s = *state;
    kw_wal_options_t o2, o3;
    kw_wal_open_report_t rep;
    kw_wal_replica_info_t info[3];
    uint64_t rng = 7, copied = 0;

    s->fx = test_walfx_new("newreplica", 3, 0);
    test_wal_opts(&o2, s->fx, 2, 2, NULL);
    s->w = test_wal_open_ok(&o2, NULL);
    append_n(s, 6, 300, &rng);
    close_wal(s);

    test_wal_opts(&o3, s->fx, 3, 2, NULL);
    s->w = test_wal_open_ok(&o3, &rep);
    assert_int_equal(rep.replicas_failed, 1);
    health(s->w, info, 3, 2);
    assert_int_equal(info[2].state, KW_REPLICA_FAILED);
    append_n(s, 2, 300, &rng);
    close_wal(s);

    repair_ok(&o3, 2, &copied);
    assert_true(copied > 0);
    s->w = test_wal_open_ok(&o3, &rep);
    assert_int_equal(rep.replicas_healthy, 3);
    test_check_all(s->w, &s->log);
    append_n(s, 2, 300, &rng);
    close_wal(s);
    assert_int_equal(test_verify(&o3, NULL), 0);
}

/* ---- Large batches, written in pieces ---- */

/* 5 MiB + 123 bytes: with its header from offset 64, pieces end at 1, 2, 3, 4
 * and 5 MiB, and a sixth piece holds the rest: five writeback hints. */
#define BIG_LEN (5u * 1024 * 1024 + 123)

/* A batch over 2 MiB goes out in pieces of about 1 MiB with a writeback hint
 * between them (wal.c, write_batch); smaller batches get none. A hint that
 * fails fails its replica as a failed write does: no fdatasync follows on it,
 * the other replicas go on, and every acknowledged record is intact, before
 * and after a restart (invariant 1). */
static void test_writeback_pieces(void **state)
{
    tstate_t *s = *state;
    kw_wal_options_t o;
    kw_wal_replica_info_t info[3];
    unsigned long syncs;
    uint64_t rng = 11;

    s->fx = test_walfx_new("pieces", 3, 0);
    new_io(s);
    test_wal_opts(&o, s->fx, 3, 2, test_io_table(s->io));
    s->w = test_wal_open_ok(&o, NULL);
    append_n(s, 1, BIG_LEN, &rng);
    append_n(s, 2, 300, &rng);
    wait_all_written(s->w);
    for (int r = 0; r < 3; r++)
        assert_int_equal(test_io_calls(s->io, r, TEST_IO_WRITEBACK), 5);
    test_check_all(s->w, &s->log);

    test_io_fail_nth(s->io, 1, TEST_IO_WRITEBACK, 2, EIO);
    syncs = test_io_calls(s->io, 1, TEST_IO_FDATASYNC);
    append_n(s, 1, BIG_LEN, &rng);
    wait_failed(s->w, 1, 3);
    append_n(s, 3, BIG_LEN / 2, &rng);
    health(s->w, info, 3, 2);
    if (strstr(info[1].reason, "writeback") == NULL)
        fail_msg("replica 1 failed for another reason: %s", info[1].reason);
    assert_int_equal(test_io_calls(s->io, 1, TEST_IO_FDATASYNC), syncs);
    test_check_all(s->w, &s->log);
    close_wal(s);

    test_wal_opts(&o, s->fx, 3, 2, NULL);
    s->w = test_wal_open_ok(&o, NULL);
    test_check_all(s->w, &s->log);
    close_wal(s);
    repair_ok(&o, 1, NULL);
    assert_int_equal(test_verify(&o, NULL), 0);
}

/* Power lost at every mutating call while large records are written in
 * pieces, on one replica: what the disk keeps of an unfinished batch is any
 * prefix of its pieces, torn anywhere, and recovery cuts it as a torn tail
 * and keeps every acknowledged record (FORMAT.md, "Torn tail"). */
static void test_power_loss_pieces(void **state)
{
    tstate_t *s = *state;
    const size_t lens[] = { BIG_LEN, 3u * 1024 * 1024 - 7, 900, BIG_LEN / 2 };
    const int nlens = (int)(sizeof(lens) / sizeof(lens[0]));
    unsigned long total;
    kw_wal_options_t o;

    /* Dry run: the mutating calls of the whole run. */
    s->fx = test_walfx_new("plpieces", 1, 1);
    new_io(s);
    test_wal_opts(&o, s->fx, 1, 0, test_io_table(s->io));
    o.segment_bytes = 8u * 1024 * 1024;
    s->w = test_wal_open_ok(&o, NULL);
    for (int i = 0; i < nlens; i++) {
        uint64_t rng = (uint64_t)i + 1;
        uint8_t *p = test_payload_new(&rng, lens[i], 0);

        test_append_ok(s->w, NULL, p, lens[i], 0);
        free(p);
    }
    close_wal(s);
    total = test_io_mutations(s->io);
    assert_true(test_io_calls_all(s->io, TEST_IO_WRITEBACK) >= 8);
    test_walfx_free(s->fx);
    s->fx = NULL;

    for (unsigned long k = 1; k <= total; k++) {
        model_t m;
        char when[64];

        memset(&m, 0, sizeof(m));
        s->fx = test_walfx_new("plpieces", 1, 1);
        new_io(s);
        test_wal_opts(&o, s->fx, 1, 0, test_io_table(s->io));
        o.segment_bytes = 8u * 1024 * 1024;
        test_io_crash_after(s->io, k, k);
        if (kw_wal_open(&o, &s->w, NULL, NULL, 0) == KW_OK) {
            for (int i = 0; i < nlens; i++) {
                uint64_t rng = (uint64_t)i + 1;
                uint8_t *p = test_payload_new(&rng, lens[i], 0);
                kw_wal_pos_t pos;

                if (kw_wal_append(s->w, p, lens[i], 0, &pos, NULL, 0) != KW_OK) {
                    m.maybe = p;
                    m.maybe_len = lens[i];
                    break;
                }
                test_reclist_push(&m.must, &pos, p, lens[i], 0);
                free(p);
            }
            test_io_crash(s->io, k);
            close_wal(s);
        }
        test_wal_opts(&o, s->fx, 1, 0, NULL);
        o.segment_bytes = 8u * 1024 * 1024;
        s->w = test_wal_open_ok(&o, NULL);
        snprintf(when, sizeof(when), "crash at mutating call %lu of %lu", k, total);
        model_check(s->w, &m, 0, when);
        close_wal(s);
        assert_int_equal(test_verify(&o, NULL), 0);
        model_free(&m);
        test_walfx_free(s->fx);
        s->fx = NULL;
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_power_loss_1_replica, setup, teardown),
        cmocka_unit_test_setup_teardown(test_power_loss_3_replicas, setup, teardown),
        cmocka_unit_test_setup_teardown(test_power_loss_every_point, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bitflip_one_replica, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bitflip_last_segment_refilled, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bitflip_every_replica, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bitflip_repair, setup, teardown),
        cmocka_unit_test_setup_teardown(test_quorum_one_replica_fails, setup, teardown),
        cmocka_unit_test_setup_teardown(test_quorum_lost, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fdatasync_failure_not_retried, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fdatasync_failure_single_replica, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_failure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_short_writes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_repair_slow_io, setup, teardown),
        cmocka_unit_test_setup_teardown(test_new_replica_dir, setup, teardown),
        cmocka_unit_test_setup_teardown(test_writeback_pieces, setup, teardown),
        cmocka_unit_test_setup_teardown(test_power_loss_pieces, setup, teardown),
    };

    /* KWAL_TEST_FILTER=test_name (wildcards * and ?) runs a subset. */
    if (getenv("KWAL_TEST_FILTER") != NULL)
        cmocka_set_test_filter(getenv("KWAL_TEST_FILTER"));
    return cmocka_run_group_tests_name("wal_faults", tests, NULL, NULL);
}
