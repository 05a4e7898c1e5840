/*
 * test_wal.c -- unit tests of the WAL's normal operation (wal/wal.h,
 * wal/FORMAT.md): round trips, rolling, restarts, torn tails, cleanup,
 * locking, and rejected inputs.
 *
 * How: every test makes its own temporary tree (test_walfx_t), appends
 * payloads it generates from a seeded PRNG and remembers (test_reclist_t),
 * and reads them back three ways -- by position, by LSN, with an iterator --
 * comparing every byte. Torn tails are made by cutting or overwriting a copy
 * of a closed WAL at every byte offset of its last record. File surgery uses
 * the helpers in support/test_util.h; nothing here looks inside wal/.
 * Failure injection and power loss are in test_wal_faults.c, concurrency in
 * test_wal_threads.c, format stability in test_wal_golden.c.
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
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test_io.h"
#include "test_util.h"
#include "test_walcheck.h"
#include "wal.h"

#define REC_HDR 32u       /* FORMAT.md: record header bytes */
#define SEG_HDR 64u       /* FORMAT.md: segment header bytes */

/* What a test owns, so teardown can release it when an assertion fails. */
typedef struct tstate {
    test_walfx_t *fx;
    kw_wal_t     *w;
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
    test_reclist_free(&s->log);
    test_walfx_free(s->fx);
    free(s);
    return 0;
}

static void close_wal(tstate_t *s)
{
    kw_wal_close(s->w);
    s->w = NULL;
}

static size_t list_segments(kw_wal_t *w, kw_wal_segment_info_t **out)
{
    size_t n = kw_wal_segments(w, NULL, 0);
    kw_wal_segment_info_t *v = calloc(n + 1, sizeof(*v));

    assert_non_null(v);
    assert_int_equal(kw_wal_segments(w, v, n), n);
    *out = v;
    return n;
}

/* ---- Creation ---- */

static void test_create_empty(void **state)
{
    tstate_t *s = *state;
    kw_wal_options_t o;
    kw_wal_open_report_t rep;
    kw_wal_record_t rec;
    kw_wal_iter_t *it = NULL;
    kw_wal_stats_t st;
    char path[600], err[256];
    uint8_t *data;
    size_t len;

    s->fx = test_walfx_new("create", 2, 0);
    test_wal_opts(&o, s->fx, 2, 0, NULL);
    memset(&rec, 0, sizeof(rec));

    /* Missing directories are created (0700); a new WAL starts empty. */
    s->w = test_wal_open_ok(&o, &rep);
    assert_int_equal(rep.created, 1);
    assert_int_equal(rep.replicas_healthy, 2);
    assert_int_equal(rep.replicas_failed, 0);
    assert_int_equal(rep.first_lsn, 0);
    assert_int_equal(rep.last_lsn, 0);
    for (int i = 0; i < 2; i++) {
        struct stat sb;

        assert_int_equal(stat(s->fx->dir[i], &sb), 0);
        assert_int_equal(sb.st_mode & 0777, 0700);
        test_path(path, sizeof(path), "%s/STATE", s->fx->dir[i]);
        assert_int_equal(test_read_file(path, &data, &len), 0);
        assert_true(len > 16 && memcmp(data, "kwal-wal-state 1\n", 17) == 0);
        free(data);
    }
    kw_wal_stats(s->w, &st);
    assert_int_equal(st.appends, 0);
    assert_int_equal(st.durable_lsn, 0);
    assert_int_equal(st.first_lsn, 0);
    assert_int_equal(st.replicas_healthy, 2);
    assert_int_equal(kw_wal_iter_new(s->w, 0, &it, err, sizeof(err)), KW_OK);
    assert_int_equal(test_iter_next(it, &rec, err, sizeof(err)), KW_EOF);
    kw_wal_iter_destroy(it);
    assert_int_equal(test_read_lsn(s->w, 1, &rec, err, sizeof(err)), KW_ENOTFOUND);
    close_wal(s);

    s->w = test_wal_open_ok(&o, &rep);
    assert_int_equal(rep.created, 0);
    assert_int_equal(rep.last_lsn, 0);
    /* FORMAT.md: the first record of a WAL is LSN 1. */
    assert_int_equal(test_append_ok(s->w, &s->log, "x", 1, 0).lsn, 1);
    close_wal(s);
    assert_int_equal(test_verify(&o, NULL), 0);
    kw_wal_record_clear(&rec);
}

/* ---- Round trip ---- */

static void round_trip(tstate_t *s, int ndirs)
{
    static const size_t fixed[] = {
        0, 1, 31, 32, 33, 255, 4096, 65537, (1u << 20) + 1, 1536u * 1024u, 3u << 20
    };
    uint64_t rng = 0x5eed0001u + (uint64_t)ndirs, sum = 0;
    size_t nfixed = sizeof(fixed) / sizeof(fixed[0]), total = nfixed * 2 + 200;
    kw_wal_options_t o;
    kw_wal_open_report_t rep;
    kw_wal_record_t rec;
    kw_wal_stats_t st;
    char err[256];
    size_t ncompressed = 0;

    memset(&rec, 0, sizeof(rec));
    s->fx = test_walfx_new("roundtrip", ndirs, 0);
    test_wal_opts(&o, s->fx, ndirs, 0, NULL);
    s->w = test_wal_open_ok(&o, &rep);

    /* Every fixed size twice (raw and compressed), then random sizes with
     * random flags; a third of the payloads compress well. */
    for (size_t i = 0; i < total; i++) {
        size_t len = i < 2 * nfixed ? fixed[i / 2] : (size_t)test_rand_below(&rng, 5000);
        unsigned flags = i < 2 * nfixed ? (i % 2 ? KW_WAL_COMPRESS : 0)
                                        : (test_rand_below(&rng, 2) ? KW_WAL_COMPRESS : 0);
        int compressible = i < 2 * nfixed ? (i / 2) % 2 == 0 : test_rand_below(&rng, 3) == 0;
        uint8_t *p = test_payload_new(&rng, len, compressible);
        kw_wal_pos_t pos = test_append_ok(s->w, &s->log, p, len, flags);

        assert_int_equal(pos.lsn, i + 1);
        if (!(flags & KW_WAL_COMPRESS) || !compressible)
            assert_int_equal(pos.size, REC_HDR + len);   /* stored raw */
        if ((flags & KW_WAL_COMPRESS) && compressible && len >= 4096) {
            assert_true(pos.size < REC_HDR + len / 2);   /* stored compressed */
            ncompressed++;
        }
        sum += len;
        free(p);
    }
    assert_true(ncompressed >= 3);
    kw_wal_stats(s->w, &st);
    assert_int_equal(st.appends, total);
    assert_int_equal(st.append_bytes, sum);
    assert_int_equal(st.durable_lsn, total);
    assert_int_equal(st.first_lsn, 1);
    test_check_all(s->w, &s->log);

    /* Compressed records come back flagged as such. */
    for (size_t i = 0; i < s->log.n; i++) {
        const test_rec_t *e = &s->log.v[i];

        assert_int_equal(test_read(s->w, &e->pos, &rec, err, sizeof(err)), KW_OK);
        if (e->pos.size != REC_HDR + e->len)
            assert_true(rec.flags & KW_WAL_COMPRESS);
    }

    /* The same after a restart, and the log verifies clean. */
    close_wal(s);
    s->w = test_wal_open_ok(&o, &rep);
    assert_int_equal(rep.created, 0);
    assert_int_equal(rep.records, total);
    assert_int_equal(rep.first_lsn, 1);
    assert_int_equal(rep.last_lsn, total);
    assert_int_equal(rep.torn_tails, 0);
    assert_int_equal(rep.corrupt_records, 0);
    test_check_all(s->w, &s->log);
    close_wal(s);
    assert_int_equal(test_verify(&o, NULL), 0);
    kw_wal_record_clear(&rec);
}

static void test_round_trip(void **state)
{
    round_trip(*state, 1);
}

static void test_round_trip_3_replicas(void **state)
{
    round_trip(*state, 3);
}

/* A position that does not match the record there is refused. */
static void test_read_wrong_position(void **state)
{
    tstate_t *s = *state;
    kw_wal_options_t o;
    kw_wal_record_t rec;
    kw_wal_pos_t pos;
    uint64_t rng = 77;
    char err[256];

    memset(&rec, 0, sizeof(rec));
    s->fx = test_walfx_new("wrongpos", 1, 0);
    test_wal_opts(&o, s->fx, 1, 0, NULL);
    s->w = test_wal_open_ok(&o, NULL);
    for (int i = 0; i < 5; i++) {
        uint8_t *p = test_payload_new(&rng, 100, 0);

        test_append_ok(s->w, &s->log, p, 100, 0);
        free(p);
    }
    pos = s->log.v[2].pos;
    pos.lsn = 4;                                  /* LSN must match when given */
    assert_int_not_equal(test_read(s->w, &pos, &rec, err, sizeof(err)), KW_OK);
    pos = s->log.v[2].pos;
    pos.lsn = 0;                                  /* LSN 0: not checked */
    assert_int_equal(test_read(s->w, &pos, &rec, err, sizeof(err)), KW_OK);
    test_check_rec(&rec, &s->log.v[2]);
    pos.offset += 7;                              /* not a record start */
    assert_int_not_equal(test_read(s->w, &pos, &rec, err, sizeof(err)), KW_OK);
    assert_int_not_equal(test_read_lsn(s->w, 0, &rec, err, sizeof(err)), KW_OK);
    assert_int_equal(test_read_lsn(s->w, 6, &rec, err, sizeof(err)), KW_ENOTFOUND);
    assert_int_equal(test_read_lsn(s->w, 1000000, &rec, err, sizeof(err)), KW_ENOTFOUND);
    kw_wal_record_clear(&rec);
}

/* ---- Rolling and restarts ---- */

static void test_roll_by_size(void **state)
{
    tstate_t *s = *state;
    const uint64_t segbytes = 4096;
    kw_wal_options_t o;
    kw_wal_segment_info_t *seg;
    kw_wal_open_report_t rep;
    uint64_t rng = 4242, big_lsn;
    size_t n, first_session;
    char **names;
    size_t nnames;
    uint8_t *p;

    s->fx = test_walfx_new("rollsize", 1, 0);
    test_wal_opts(&o, s->fx, 1, 0, NULL);
    o.segment_bytes = segbytes;
    s->w = test_wal_open_ok(&o, NULL);

    for (int i = 0; i < 60; i++) {
        p = test_payload_new(&rng, 300, 0);
        test_append_ok(s->w, &s->log, p, 300, 0);
        free(p);
    }
    /* A record larger than a segment gets a segment of its own. */
    p = test_payload_new(&rng, 10000, 0);
    big_lsn = test_append_ok(s->w, &s->log, p, 10000, 0).lsn;
    free(p);
    for (int i = 0; i < 5; i++) {
        p = test_payload_new(&rng, 300, 0);
        test_append_ok(s->w, &s->log, p, 300, 0);
        free(p);
    }

    n = list_segments(s->w, &seg);
    /* At most (4096 - 64) / 332 = 12 records of 300 bytes fit a segment. */
    assert_true(n >= 60 / 12 + 2);
    assert_int_equal(seg[0].first_lsn, 1);
    assert_int_equal(seg[n - 1].last_lsn, s->log.n);
    for (size_t i = 0; i < n; i++) {
        char path[600];
        uint64_t size;

        test_seg_path(path, sizeof(path), s->fx->dir[0], seg[i].first_lsn);
        assert_int_equal(test_file_size(path, &size), 0);
        assert_int_equal(size, seg[i].bytes);
        assert_true(seg[i].last_lsn >= seg[i].first_lsn);
        if (i > 0)
            assert_int_equal(seg[i].first_lsn, seg[i - 1].last_lsn + 1);
        if (seg[i].last_lsn > seg[i].first_lsn)
            assert_true(seg[i].bytes <= segbytes);
        /* Rolled only when the next record would not have fitted. */
        if (i + 1 < n)
            assert_true(seg[i].bytes + s->log.v[seg[i + 1].first_lsn - 1].pos.size > segbytes);
        if (seg[i].first_lsn <= big_lsn && big_lsn <= seg[i].last_lsn) {
            assert_int_equal(seg[i].first_lsn, big_lsn);
            assert_int_equal(seg[i].last_lsn, big_lsn);
        }
    }
    for (size_t i = 0; i < s->log.n; i++) {
        const kw_wal_pos_t *pos = &s->log.v[i].pos;
        size_t k = 0;

        while (k < n && seg[k].last_lsn < pos->lsn)
            k++;
        assert_true(k < n);
        assert_int_equal(pos->segment, seg[k].first_lsn);
        assert_true(pos->offset >= SEG_HDR);
        assert_true(pos->offset + pos->size <= seg[k].bytes);
    }
    /* The files on disk are exactly the segments listed. */
    assert_int_equal(test_list_dir(s->fx->dir[0], ".seg", &names, &nnames), 0);
    assert_int_equal(nnames, n);
    for (size_t i = 0; i < n; i++) {
        char name[64];

        test_seg_name(name, sizeof(name), seg[i].first_lsn);
        assert_string_equal(names[i], name);
    }
    test_free_names(names, nnames);
    first_session = n;
    free(seg);

    /* Restarts: LSNs go on at last + 1, in a new segment (FORMAT.md step 7). */
    for (int round = 0; round < 3; round++) {
        uint64_t last = s->log.n;

        close_wal(s);
        s->w = test_wal_open_ok(&o, &rep);
        assert_int_equal(rep.last_lsn, last);
        for (int i = 0; i < 5; i++) {
            kw_wal_pos_t pos;

            p = test_payload_new(&rng, 300, 0);
            pos = test_append_ok(s->w, &s->log, p, 300, 0);
            free(p);
            assert_int_equal(pos.lsn, last + 1 + (uint64_t)i);
            if (i == 0)
                assert_int_equal(pos.segment, pos.lsn);
        }
    }
    n = list_segments(s->w, &seg);
    assert_true(n >= first_session + 3);
    free(seg);
    test_check_all(s->w, &s->log);
    close_wal(s);
    assert_int_equal(test_verify(&o, NULL), 0);
}

static void test_roll_by_age(void **state)
{
    tstate_t *s = *state;
    kw_wal_options_t o;
    kw_wal_segment_info_t *seg;
    kw_wal_pos_t a, b, c;
    struct timespec now;
    uint64_t now_ms;
    size_t n;

    s->fx = test_walfx_new("rollage", 1, 0);
    test_wal_opts(&o, s->fx, 1, 0, NULL);
    o.segment_ms = 400;
    s->w = test_wal_open_ok(&o, NULL);

    a = test_append_ok(s->w, &s->log, "first", 5, 0);
    b = test_append_ok(s->w, &s->log, "second", 6, 0);
    assert_int_equal(b.segment, a.segment);       /* young segment: no roll */
    usleep(600 * 1000);
    c = test_append_ok(s->w, &s->log, "third", 5, 0);
    assert_int_equal(c.lsn, b.lsn + 1);
    assert_int_equal(c.segment, c.lsn);           /* old segment: rolled */

    n = list_segments(s->w, &seg);
    assert_int_equal(n, 2);
    clock_gettime(CLOCK_REALTIME, &now);
    now_ms = (uint64_t)now.tv_sec * 1000u + (uint64_t)now.tv_nsec / 1000000u;
    assert_true(seg[1].created_ms >= seg[0].created_ms + 400);
    assert_true(seg[1].created_ms <= now_ms && seg[1].created_ms + 60000 > now_ms);
    free(seg);
    test_check_all(s->w, &s->log);
}

/* ---- Torn tails ---- */

/* Write a closed single-replica WAL with `nrec` records; the last has a
 * 200-byte payload. The records are left in s->log. */
static void write_small_wal(tstate_t *s, const kw_wal_options_t *o, int nrec, uint64_t seed)
{
    uint64_t rng = seed;

    s->w = test_wal_open_ok(o, NULL);
    for (int i = 0; i < nrec; i++) {
        size_t len = i == nrec - 1 ? 200 : (size_t)test_rand_below(&rng, 400);
        uint8_t *p = test_payload_new(&rng, len, 0);

        test_append_ok(s->w, &s->log, p, len, 0);
        free(p);
    }
    close_wal(s);
}

/* Open the damaged copy in `dir`, which must come back with records
 * 1..expect_last intact and report the given torn tail. */
static void open_damaged_copy(tstate_t *s, const char *dir, uint64_t expect_last,
                              uint64_t expect_torn, uint64_t expect_torn_bytes)
{
    kw_wal_options_t o;
    kw_wal_open_report_t rep;
    kw_wal_record_t rec;
    test_reclist_t head = s->log;
    char err[256];
    kw_wal_t *w;

    memset(&rec, 0, sizeof(rec));
    kw_wal_options_init(&o);
    o.dirs[0] = dir;
    o.ndirs = 1;
    w = test_wal_open_ok(&o, &rep);
    s->w = w;
    if (rep.last_lsn != expect_last || rep.torn_tails != expect_torn ||
        rep.torn_bytes != expect_torn_bytes)
        fail_msg("%s: last_lsn %" PRIu64 " torn_tails %" PRIu64 " torn_bytes %" PRIu64
                 ", expected %" PRIu64 " %" PRIu64 " %" PRIu64, dir, rep.last_lsn,
                 rep.torn_tails, rep.torn_bytes, expect_last, expect_torn, expect_torn_bytes);
    head.n = (size_t)expect_last;
    test_check_all(w, &head);
    assert_int_equal(test_read_lsn(w, expect_last + 1, &rec, err, sizeof(err)), KW_ENOTFOUND);
    /* Appending goes on right after the last intact record. */
    assert_int_equal(test_append_ok(w, NULL, "after", 5, 0).lsn, expect_last + 1);
    close_wal(s);
    kw_wal_record_clear(&rec);
}

static void test_torn_tail_every_offset(void **state)
{
    tstate_t *s = *state;
    kw_wal_options_t o;
    const test_rec_t *last;
    char seg[600], copy[600], cseg[600];
    uint64_t n;

    s->fx = test_walfx_new("torn", 1, 0);
    test_wal_opts(&o, s->fx, 1, 0, NULL);
    write_small_wal(s, &o, 12, 1234);
    n = s->log.n;
    last = &s->log.v[n - 1];
    assert_int_equal(last->pos.size, REC_HDR + 200);
    test_seg_path(seg, sizeof(seg), s->fx->dir[0], last->pos.segment);
    test_path(copy, sizeof(copy), "%s/copy", s->fx->root);
    test_seg_path(cseg, sizeof(cseg), copy, last->pos.segment);

    /* Cut at every byte of the last record: cutting at its start leaves a
     * clean log of n - 1 records; anywhere inside is a torn tail. */
    for (uint64_t cut = last->pos.offset; cut < last->pos.offset + last->pos.size; cut++) {
        assert_int_equal(test_copy_tree(s->fx->dir[0], copy), 0);
        assert_int_equal(test_truncate_file(cseg, cut), 0);
        open_damaged_copy(s, copy, n - 1, cut > last->pos.offset ? 1 : 0,
                          cut - last->pos.offset);
        assert_int_equal(test_rmtree(copy), 0);
    }
}

static void test_torn_tail_garbage(void **state)
{
    tstate_t *s = *state;
    kw_wal_options_t o;
    const test_rec_t *last;
    char seg[600], copy[600], cseg[600];
    uint64_t n, rng = 99, end;
    uint8_t junk[4096];

    s->fx = test_walfx_new("garbage", 1, 0);
    test_wal_opts(&o, s->fx, 1, 0, NULL);
    write_small_wal(s, &o, 12, 5678);
    n = s->log.n;
    last = &s->log.v[n - 1];
    end = last->pos.offset + last->pos.size;
    test_seg_path(seg, sizeof(seg), s->fx->dir[0], last->pos.segment);
    test_path(copy, sizeof(copy), "%s/copy", s->fx->root);
    test_seg_path(cseg, sizeof(cseg), copy, last->pos.segment);

    /* Garbage over the end of the last record (file size unchanged): every
     * byte from `from` on differs from what was written. The whole record
     * is cut. */
    for (uint64_t from = last->pos.offset; from < end; from++) {
        uint8_t *data;
        size_t len;

        assert_int_equal(test_copy_tree(s->fx->dir[0], copy), 0);
        assert_int_equal(test_read_file(cseg, &data, &len), 0);
        assert_int_equal(len, end);
        for (uint64_t i = from; i < end; i++)
            data[i] ^= (uint8_t)(1 + test_rand_below(&rng, 255));
        assert_int_equal(test_overwrite(cseg, from, data + from, (size_t)(end - from)), 0);
        free(data);
        open_damaged_copy(s, copy, n - 1, 1, last->pos.size);
        assert_int_equal(test_rmtree(copy), 0);
    }

    /* Garbage or zeros after the last complete record (a write that never
     * completed, or space preallocated by the file system): cut, nothing lost. */
    for (int k = 0; k < 40; k++) {
        size_t glen = k < 20 ? (size_t)(1 + test_rand_below(&rng, 300))
                             : (size_t)(1 + test_rand_below(&rng, sizeof(junk)));

        if (k % 2 == 0)
            test_fill_random(junk, glen, &rng);
        else
            memset(junk, 0, glen);
        assert_int_equal(test_copy_tree(s->fx->dir[0], copy), 0);
        assert_int_equal(test_overwrite(cseg, end, junk, glen), 0);
        open_damaged_copy(s, copy, n, 1, glen);
        assert_int_equal(test_rmtree(copy), 0);
    }
}

/* The last record alone in its segment (every open starts a new segment),
 * cut at every byte from the segment's start to the record's end: the
 * segment header cut short or a header with nothing valid after it is a
 * crash during a roll (FORMAT.md step 5); all earlier records stay. */
static void test_torn_tail_fresh_segment(void **state)
{
    tstate_t *s = *state;
    kw_wal_options_t o;
    const test_rec_t *last;
    char copy[600], cseg[600];
    uint64_t n;

    s->fx = test_walfx_new("tornfresh", 1, 0);
    test_wal_opts(&o, s->fx, 1, 0, NULL);
    write_small_wal(s, &o, 6, 4321);
    s->w = test_wal_open_ok(&o, NULL);
    test_append_ok(s->w, &s->log, "alone in its segment", 20, 0);
    close_wal(s);
    n = s->log.n;
    last = &s->log.v[n - 1];
    assert_int_equal(last->pos.segment, last->pos.lsn);
    assert_int_equal(last->pos.offset, SEG_HDR);
    test_path(copy, sizeof(copy), "%s/copy", s->fx->root);
    test_seg_path(cseg, sizeof(cseg), copy, last->pos.segment);

    for (uint64_t cut = 0; cut < last->pos.offset + last->pos.size; cut++) {
        kw_wal_options_t co;
        kw_wal_open_report_t rep;
        test_reclist_t head = s->log;

        assert_int_equal(test_copy_tree(s->fx->dir[0], copy), 0);
        assert_int_equal(test_truncate_file(cseg, cut), 0);
        kw_wal_options_init(&co);
        co.dirs[0] = copy;
        co.ndirs = 1;
        s->w = test_wal_open_ok(&co, &rep);
        if (rep.last_lsn != n - 1)
            fail_msg("cut at %" PRIu64 ": last_lsn %" PRIu64 ", expected %" PRIu64, cut,
                     rep.last_lsn, n - 1);
        if (cut > SEG_HDR)
            assert_int_equal(rep.torn_tails, 1);
        head.n = (size_t)(n - 1);
        test_check_all(s->w, &head);
        assert_int_equal(test_append_ok(s->w, NULL, "after", 5, 0).lsn, n);
        close_wal(s);
        assert_int_equal(test_rmtree(copy), 0);
    }
}

/* Three replicas; the newest record is the first of a fresh segment, and
 * power went while replica 0 was writing it: replica 0's segment holds the
 * header and a cut record. Open must cut the tail, refill the record from
 * the other replicas and keep all three replicas healthy: a torn tail is
 * not a replica failure. */
static void test_torn_tail_fresh_segment_3_replicas(void **state)
{
    tstate_t *s = *state;
    kw_wal_options_t o;
    kw_wal_open_report_t rep;
    kw_wal_replica_info_t info[3];
    const test_rec_t *last;
    uint64_t rng = 2718;
    char seg[600];

    s->fx = test_walfx_new("tornfresh3", 3, 0);
    test_wal_opts(&o, s->fx, 3, 2, NULL);
    s->w = test_wal_open_ok(&o, NULL);
    for (int i = 0; i < 3; i++) {
        uint8_t *p = test_payload_new(&rng, 300, 0);

        test_append_ok(s->w, &s->log, p, 300, 0);
        free(p);
    }
    close_wal(s);
    s->w = test_wal_open_ok(&o, NULL);
    test_append_ok(s->w, &s->log, "first of a fresh segment", 24, 0);
    close_wal(s);
    last = &s->log.v[s->log.n - 1];
    assert_int_equal(last->pos.offset, SEG_HDR);

    for (int variant = 0; variant < 2; variant++) {
        /* 0: record header cut short; 1: payload cut short. */
        uint64_t cut = SEG_HDR + (variant == 0 ? 18 : REC_HDR + 5);

        test_seg_path(seg, sizeof(seg), s->fx->dir[0], last->pos.segment);
        assert_int_equal(test_truncate_file(seg, cut), 0);
        s->w = test_wal_open_ok(&o, &rep);
        memset(info, 0, sizeof(info));
        kw_wal_health(s->w, info, 3);
        if (rep.replicas_healthy != 3)
            fail_msg("variant %d: %d of 3 replicas healthy after a torn tail; replica 0: %s",
                     variant, rep.replicas_healthy, info[0].reason);
        assert_int_equal(rep.last_lsn, last->pos.lsn);
        assert_int_equal(rep.torn_tails, 1);
        assert_true(rep.reconciled_bytes >= last->pos.size);
        test_check_all(s->w, &s->log);
        close_wal(s);
        assert_int_equal(test_verify(&o, NULL), 0);
    }
}

/* A tail torn on one replica of three is cut there and filled in again
 * from the others (FORMAT.md steps 5 and 6). */
static void test_torn_tail_one_replica(void **state)
{
    tstate_t *s = *state;
    kw_wal_options_t o;
    kw_wal_open_report_t rep;
    const test_rec_t *last;
    uint64_t rng = 31337;
    char seg[600];
    char **names;
    size_t nnames;

    s->fx = test_walfx_new("torn3", 3, 0);
    test_wal_opts(&o, s->fx, 3, 0, NULL);
    s->w = test_wal_open_ok(&o, NULL);
    for (int i = 0; i < 10; i++) {
        uint8_t *p = test_payload_new(&rng, 500, 0);

        test_append_ok(s->w, &s->log, p, 500, 0);
        free(p);
    }
    close_wal(s);
    last = &s->log.v[s->log.n - 1];
    test_seg_path(seg, sizeof(seg), s->fx->dir[1], last->pos.segment);
    assert_int_equal(test_truncate_file(seg, last->pos.offset + 100), 0);

    s->w = test_wal_open_ok(&o, &rep);
    assert_int_equal(rep.replicas_healthy, 3);
    assert_int_equal(rep.torn_tails, 1);
    assert_int_equal(rep.torn_bytes, 100);
    assert_int_equal(rep.last_lsn, s->log.n);
    assert_true(rep.reconciled_bytes >= last->pos.size);
    test_check_all(s->w, &s->log);
    test_append_ok(s->w, &s->log, "more", 4, 0);
    close_wal(s);

    /* The replicas hold the same segments, byte for byte. */
    assert_int_equal(test_list_dir(s->fx->dir[0], ".seg", &names, &nnames), 0);
    for (int r = 1; r < 3; r++) {
        assert_int_equal(test_count_files(s->fx->dir[r], ".seg"), (long)nnames);
        for (size_t i = 0; i < nnames; i++) {
            char a[600], b[600];

            test_path(a, sizeof(a), "%s/%s", s->fx->dir[0], names[i]);
            test_path(b, sizeof(b), "%s/%s", s->fx->dir[r], names[i]);
            assert_true(test_files_equal(a, b));
        }
    }
    test_free_names(names, nnames);
    assert_int_equal(test_verify(&o, NULL), 0);
}

/* Damage in a segment that is not the last is corruption, never a torn tail
 * to cut silently. */
static void test_cut_middle_segment_is_corruption(void **state)
{
    tstate_t *s = *state;
    kw_wal_options_t o;
    kw_wal_t *w = NULL;
    uint64_t rng = 8080;
    char seg[600], err[512] = "";
    const test_rec_t *victim = NULL;

    s->fx = test_walfx_new("cutmid", 1, 0);
    test_wal_opts(&o, s->fx, 1, 0, NULL);
    o.segment_bytes = 2048;
    s->w = test_wal_open_ok(&o, NULL);
    for (int i = 0; i < 30; i++) {
        uint8_t *p = test_payload_new(&rng, 300, 0);

        test_append_ok(s->w, &s->log, p, 300, 0);
        free(p);
    }
    close_wal(s);
    /* The last record of the first segment. */
    for (size_t i = 0; i + 1 < s->log.n; i++)
        if (s->log.v[i + 1].pos.segment != s->log.v[0].pos.segment) {
            victim = &s->log.v[i];
            break;
        }
    assert_non_null(victim);
    test_seg_path(seg, sizeof(seg), s->fx->dir[0], victim->pos.segment);
    assert_int_equal(test_truncate_file(seg, victim->pos.offset + 40), 0);

    assert_int_equal(kw_wal_open(&o, &w, NULL, err, sizeof(err)), KW_ECORRUPT);
    assert_null(w);
    assert_non_null(strstr(err, "00000000000000000001"));
    assert_true(test_verify(&o, NULL) > 0);
}

/* ---- Iteration ---- */

static void test_iterator(void **state)
{
    tstate_t *s = *state;
    kw_wal_options_t o;
    kw_wal_record_t rec;
    kw_wal_iter_t *it = NULL;
    char err[256];
    uint64_t rng = 5;

    memset(&rec, 0, sizeof(rec));
    s->fx = test_walfx_new("iter", 1, 0);
    test_wal_opts(&o, s->fx, 1, 0, NULL);
    o.segment_bytes = 1024;
    s->w = test_wal_open_ok(&o, NULL);
    for (int i = 0; i < 20; i++) {
        uint8_t *p = test_payload_new(&rng, 150, i % 2);

        test_append_ok(s->w, &s->log, p, 150, i % 3 == 0 ? KW_WAL_COMPRESS : 0);
        free(p);
    }

    /* From the middle, across segments. */
    assert_int_equal(kw_wal_iter_new(s->w, 7, &it, err, sizeof(err)), KW_OK);
    for (uint64_t lsn = 7; lsn <= 20; lsn++) {
        assert_int_equal(test_iter_next(it, &rec, err, sizeof(err)), KW_OK);
        test_check_rec(&rec, &s->log.v[lsn - 1]);
    }
    assert_int_equal(test_iter_next(it, &rec, err, sizeof(err)), KW_EOF);

    /* Records appended later are seen by the next call. */
    for (int i = 0; i < 3; i++) {
        uint8_t *p = test_payload_new(&rng, 90, 0);

        test_append_ok(s->w, &s->log, p, 90, 0);
        free(p);
    }
    for (uint64_t lsn = 21; lsn <= 23; lsn++) {
        assert_int_equal(test_iter_next(it, &rec, err, sizeof(err)), KW_OK);
        test_check_rec(&rec, &s->log.v[lsn - 1]);
    }
    assert_int_equal(test_iter_next(it, &rec, err, sizeof(err)), KW_EOF);
    kw_wal_iter_destroy(it);
    kw_wal_iter_destroy(NULL);
    test_check_all(s->w, &s->log);
    kw_wal_record_clear(&rec);
}

/* ---- Cleanup ---- */

static void expect_seg_files(tstate_t *s, int ndirs, const kw_wal_segment_info_t *seg, size_t n)
{
    for (int r = 0; r < ndirs; r++) {
        char **names;
        size_t nnames;

        assert_int_equal(test_list_dir(s->fx->dir[r], ".seg", &names, &nnames), 0);
        if (nnames != n)
            fail_msg("replica %d holds %zu segment files, expected %zu", r, nnames, n);
        for (size_t i = 0; i < n; i++) {
            char name[64];

            test_seg_name(name, sizeof(name), seg[i].first_lsn);
            assert_string_equal(names[i], name);
        }
        test_free_names(names, nnames);
    }
}

static void test_cleanup(void **state)
{
    tstate_t *s = *state;
    kw_wal_options_t o;
    kw_wal_open_report_t rep;
    kw_wal_segment_info_t *seg, *now;
    kw_wal_record_t rec;
    kw_wal_iter_t *it = NULL;
    kw_wal_stats_t st;
    uint64_t rng = 11, keep_from;
    char err[256];
    int deleted = -1;
    size_t n, m;

    memset(&rec, 0, sizeof(rec));
    s->fx = test_walfx_new("cleanup", 3, 0);
    test_wal_opts(&o, s->fx, 3, 0, NULL);
    o.segment_bytes = 1024;
    s->w = test_wal_open_ok(&o, NULL);
    for (int i = 0; i < 40; i++) {
        uint8_t *p = test_payload_new(&rng, 200, 0);

        test_append_ok(s->w, &s->log, p, 200, 0);
        free(p);
    }
    n = list_segments(s->w, &seg);
    assert_true(n >= 8);
    expect_seg_files(s, 3, seg, n);

    /* below_lsn inside segment 3: segments 0..2 go, 3 stays. */
    assert_int_equal(kw_wal_cleanup(s->w, seg[3].first_lsn + 1, &deleted, err, sizeof(err)),
                     KW_OK);
    assert_int_equal(deleted, 3);
    m = list_segments(s->w, &now);
    assert_int_equal(m, n - 3);
    assert_int_equal(now[0].first_lsn, seg[3].first_lsn);
    expect_seg_files(s, 3, now, m);
    free(now);
    kw_wal_stats(s->w, &st);
    assert_int_equal(st.first_lsn, seg[3].first_lsn);
    assert_int_equal(test_read_lsn(s->w, seg[3].first_lsn - 1, &rec, err, sizeof(err)),
                     KW_ENOTFOUND);
    assert_int_equal(test_read_lsn(s->w, 1, &rec, err, sizeof(err)), KW_ENOTFOUND);
    assert_int_equal(kw_wal_iter_new(s->w, 0, &it, err, sizeof(err)), KW_OK);
    assert_int_equal(test_iter_next(it, &rec, err, sizeof(err)), KW_OK);
    assert_int_equal(rec.pos.lsn, seg[3].first_lsn);
    kw_wal_iter_destroy(it);

    /* below_lsn at a segment's first LSN: everything before it goes. */
    assert_int_equal(kw_wal_cleanup(s->w, seg[5].first_lsn, &deleted, err, sizeof(err)), KW_OK);
    assert_int_equal(deleted, 2);
    assert_int_equal(kw_wal_cleanup(s->w, seg[5].first_lsn, &deleted, err, sizeof(err)), KW_OK);
    assert_int_equal(deleted, 0);
    m = list_segments(s->w, &now);
    assert_int_equal(m, n - 5);
    expect_seg_files(s, 3, now, m);
    free(now);

    /* Everything: the segment being written stays. */
    assert_int_equal(kw_wal_cleanup(s->w, UINT64_MAX, &deleted, err, sizeof(err)), KW_OK);
    assert_int_equal(deleted, (int)(n - 5 - 1));
    m = list_segments(s->w, &now);
    assert_int_equal(m, 1);
    assert_int_equal(now[0].first_lsn, seg[n - 1].first_lsn);
    expect_seg_files(s, 3, now, m);
    free(now);
    keep_from = seg[n - 1].first_lsn;
    assert_int_equal(test_append_ok(s->w, NULL, "on", 2, 0).lsn, 41);

    /* What is left survives a restart; appends go on. */
    close_wal(s);
    s->w = test_wal_open_ok(&o, &rep);
    assert_int_equal(rep.first_lsn, keep_from);
    assert_int_equal(rep.last_lsn, 41);
    assert_int_equal(test_append_ok(s->w, NULL, "on", 2, 0).lsn, 42);
    for (uint64_t lsn = keep_from; lsn <= 40; lsn++) {
        assert_int_equal(test_read_lsn(s->w, lsn, &rec, err, sizeof(err)), KW_OK);
        test_check_rec(&rec, &s->log.v[lsn - 1]);
    }
    close_wal(s);
    assert_int_equal(test_verify(&o, NULL), 0);
    free(seg);
    kw_wal_record_clear(&rec);
}

/* ---- Locking ---- */

static void test_lock_second_process(void **state)
{
    tstate_t *s = *state;
    kw_wal_options_t o, ro;
    kw_wal_record_t rec;
    kw_wal_t *w2 = NULL;
    char err[512] = "";
    pid_t pid;
    int status;
    kw_err_t rc;

    memset(&rec, 0, sizeof(rec));
    s->fx = test_walfx_new("lock", 3, 0);
    test_wal_opts(&o, s->fx, 3, 0, NULL);
    s->w = test_wal_open_ok(&o, NULL);
    test_append_ok(s->w, &s->log, "held", 4, 0);

    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char perr[512] = "", ppid[32];
        int named = 0;

        rc = kw_wal_open(&o, &w2, NULL, perr, sizeof(perr));
        if (rc == KW_OK) {
            kw_wal_close(w2);
            _exit(100);
        }
        for (int i = 0; i < 3; i++)
            named |= strstr(perr, s->fx->dir[i]) != NULL;
        snprintf(ppid, sizeof(ppid), "%d", (int)getppid());
        if (rc == KW_ELOCKED && !named)
            _exit(101);
        if (rc == KW_ELOCKED && strstr(perr, ppid) == NULL)
            _exit(102);
        _exit((int)rc);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    if (WEXITSTATUS(status) != KW_ELOCKED)
        fail_msg("second process: exit %d (%s), expected KW_ELOCKED (%d); 100: opened, "
                 "101: errstr without the directory, 102: without the holder's pid",
                 WEXITSTATUS(status),
                 WEXITSTATUS(status) < KW__ERR_COUNT ? kw_err_name(WEXITSTATUS(status)) : "?",
                 KW_ELOCKED);

    /* flock(2) locks the open file, so a second open in this process is
     * refused as well. */
    rc = kw_wal_open(&o, &w2, NULL, err, sizeof(err));
    assert_int_equal(rc, KW_ELOCKED);
    assert_null(w2);

    /* Read-only opens take no lock. */
    ro = o;
    ro.read_only = 1;
    rc = kw_wal_open(&ro, &w2, NULL, err, sizeof(err));
    if (rc != KW_OK)
        fail_msg("read-only open beside a writer: %s: %s", kw_err_name(rc), err);
    assert_int_equal(test_read_lsn(w2, 1, &rec, err, sizeof(err)), KW_OK);
    test_check_rec(&rec, &s->log.v[0]);
    assert_int_not_equal(kw_wal_append(w2, "no", 2, 0, NULL, err, sizeof(err)), KW_OK);
    kw_wal_close(w2);
    kw_wal_record_clear(&rec);

    /* After close the lock is free again. */
    close_wal(s);
    s->w = test_wal_open_ok(&o, NULL);
}

/* ---- Bad inputs ---- */

static void test_bad_inputs(void **state)
{
    tstate_t *s = *state;
    kw_wal_options_t o;
    kw_wal_stats_t st;
    kw_wal_t *w = NULL;
    char err[256], path[600];
    uint8_t *huge;
    uint64_t copied;
    kw_err_t rc;

    s->fx = test_walfx_new("badinput", 3, 0);

    test_wal_opts(&o, s->fx, 3, 0, NULL);
    o.ndirs = 0;
    assert_int_equal(kw_wal_open(&o, &w, NULL, err, sizeof(err)), KW_EINVAL);
    assert_null(w);
    o.ndirs = KW_WAL_MAX_REPLICAS + 1;
    assert_int_equal(kw_wal_open(&o, &w, NULL, err, sizeof(err)), KW_EINVAL);
    o.ndirs = -1;
    assert_int_equal(kw_wal_open(&o, &w, NULL, err, sizeof(err)), KW_EINVAL);
    test_wal_opts(&o, s->fx, 3, 4, NULL);
    assert_int_equal(kw_wal_open(&o, &w, NULL, err, sizeof(err)), KW_EINVAL);
    test_wal_opts(&o, s->fx, 3, -1, NULL);
    assert_int_equal(kw_wal_open(&o, &w, NULL, err, sizeof(err)), KW_EINVAL);
    test_wal_opts(&o, s->fx, 3, 0, NULL);
    o.dirs[1] = NULL;
    assert_int_equal(kw_wal_open(&o, &w, NULL, err, sizeof(err)), KW_EINVAL);
    assert_null(w);
    /* Nothing was created by refused opens. */
    assert_int_equal(test_count_files(s->fx->root, NULL), 0);

    /* Read-only never creates a WAL. */
    test_wal_opts(&o, s->fx, 1, 0, NULL);
    o.read_only = 1;
    rc = kw_wal_open(&o, &w, NULL, err, sizeof(err));
    kw_wal_close(w);
    w = NULL;
    test_path(path, sizeof(path), "%s/STATE", s->fx->dir[0]);
    assert_int_not_equal(access(path, F_OK), 0);
    (void)rc;

    /* Too large a payload: refused, nothing acknowledged, no LSN used.
     * calloc'd so that no page is touched unless the WAL reads it. */
    test_wal_opts(&o, s->fx, 3, 0, NULL);
    s->w = test_wal_open_ok(&o, NULL);
    huge = calloc(1, (size_t)KW_WAL_MAX_RECORD + 1);
    assert_non_null(huge);
    assert_int_equal(kw_wal_append(s->w, huge, (size_t)KW_WAL_MAX_RECORD + 1, 0, NULL,
                                   err, sizeof(err)), KW_EINVAL);
    assert_int_equal(kw_wal_append(s->w, huge, (size_t)KW_WAL_MAX_RECORD + 1,
                                   KW_WAL_COMPRESS, NULL, err, sizeof(err)), KW_EINVAL);
    free(huge);
    kw_wal_stats(s->w, &st);
    assert_int_equal(st.appends, 0);
    assert_int_equal(st.durable_lsn, 0);
    assert_int_equal(test_append_ok(s->w, &s->log, "ok", 2, 0).lsn, 1);
    close_wal(s);

    /* Repair of a replica that does not exist. */
    assert_int_equal(kw_wal_repair(&o, 3, &copied, err, sizeof(err)), KW_EINVAL);
    assert_int_equal(kw_wal_repair(&o, -1, &copied, err, sizeof(err)), KW_EINVAL);
    kw_wal_close(NULL);
}

/* A replica directory whose STATE comes from another WAL is refused. */
static void test_foreign_state(void **state)
{
    tstate_t *s = *state;
    kw_wal_options_t a, b;
    kw_wal_t *w = NULL;
    char from[600], to[600], err[512] = "";
    int named = 0;

    /* WAL A in r3; WAL B in r0..r2. */
    s->fx = test_walfx_new("foreign", 4, 0);
    kw_wal_options_init(&a);
    a.dirs[0] = s->fx->dir[3];
    a.ndirs = 1;
    s->w = test_wal_open_ok(&a, NULL);
    test_append_ok(s->w, NULL, "A", 1, 0);
    close_wal(s);
    test_wal_opts(&b, s->fx, 3, 0, NULL);
    s->w = test_wal_open_ok(&b, NULL);
    test_append_ok(s->w, NULL, "B", 1, 0);
    close_wal(s);

    test_path(from, sizeof(from), "%s/STATE", s->fx->dir[3]);
    test_path(to, sizeof(to), "%s/STATE", s->fx->dir[1]);
    assert_int_equal(test_copy_file(from, to), 0);
    assert_int_equal(kw_wal_open(&b, &w, NULL, err, sizeof(err)), KW_EFOREIGN);
    assert_null(w);
    for (int i = 0; i < 4; i++)
        named |= strstr(err, s->fx->dir[i]) != NULL;
    if (!named)
        fail_msg("KW_EFOREIGN without a directory in errstr: %s", err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_create_empty, setup, teardown),
        cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_round_trip_3_replicas, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_wrong_position, setup, teardown),
        cmocka_unit_test_setup_teardown(test_roll_by_size, setup, teardown),
        cmocka_unit_test_setup_teardown(test_roll_by_age, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_tail_every_offset, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_tail_garbage, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_tail_fresh_segment, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_tail_one_replica, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_tail_fresh_segment_3_replicas, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cut_middle_segment_is_corruption, setup, teardown),
        cmocka_unit_test_setup_teardown(test_iterator, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cleanup, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lock_second_process, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_inputs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_foreign_state, setup, teardown),
    };

    /* KWAL_TEST_FILTER=test_name (wildcards * and ?) runs a subset. */
    if (getenv("KWAL_TEST_FILTER") != NULL)
        cmocka_set_test_filter(getenv("KWAL_TEST_FILTER"));
    return cmocka_run_group_tests_name("wal", tests, NULL, NULL);
}
