/*
 * test_walcheck.c -- see test_walcheck.h. cmocka-based helpers for the WAL
 * tests: fixtures, remembered appends, and read-back checks.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "test_walcheck.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "test_util.h"

test_walfx_t *test_walfx_new(const char *tag, int ndirs, int mkdirs)
{
    test_walfx_t *fx = calloc(1, sizeof(*fx));

    assert_non_null(fx);
    fx->root = test_tmpdir_new(tag);
    assert_non_null(fx->root);
    assert_true(ndirs >= 1 && ndirs <= KW_WAL_MAX_REPLICAS);
    fx->ndirs = ndirs;
    for (int i = 0; i < ndirs; i++) {
        test_path(fx->dir[i], sizeof(fx->dir[i]), "%s/r%d", fx->root, i);
        if (mkdirs)
            assert_int_equal(mkdir(fx->dir[i], 0700), 0);
    }
    return fx;
}

void test_walfx_free(test_walfx_t *fx)
{
    if (fx == NULL)
        return;
    if (getenv("KWAL_KEEP_TMP") == NULL)
        test_rmtree(fx->root);
    else
        fprintf(stderr, "kept %s\n", fx->root);
    free(fx->root);
    free(fx);
}

void test_wal_opts(kw_wal_options_t *o, const test_walfx_t *fx, int ndirs,
                   int quorum, const kw_wal_io_t *io)
{
    kw_wal_options_init(o);
    for (int i = 0; i < ndirs; i++)
        o->dirs[i] = fx->dir[i];
    o->ndirs = ndirs;
    o->write_quorum = quorum;
    o->io = io;
}

kw_wal_t *test_wal_open_ok(const kw_wal_options_t *o, kw_wal_open_report_t *rep)
{
    kw_wal_open_report_t tmp;
    kw_wal_t *w = NULL;
    char err[512] = "";
    kw_err_t rc = kw_wal_open(o, &w, rep != NULL ? rep : &tmp, err, sizeof(err));

    if (rc != KW_OK)
        fail_msg("kw_wal_open(%s, %d dirs): %s: %s", o->dirs[0], o->ndirs,
                 kw_err_name(rc), err);
    assert_non_null(w);
    return w;
}

void test_seg_name(char *buf, size_t cap, uint64_t segment)
{
    test_path(buf, cap, "%020" PRIu64 ".seg", segment);
}

void test_seg_path(char *buf, size_t cap, const char *dir, uint64_t segment)
{
    test_path(buf, cap, "%s/%020" PRIu64 ".seg", dir, segment);
}

/* ---- Expected records ---- */

void test_reclist_push(test_reclist_t *l, const kw_wal_pos_t *pos,
                       const void *data, size_t len, unsigned flags)
{
    test_rec_t *e;

    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        test_rec_t *nv = realloc(l->v, cap * sizeof(*nv));

        assert_non_null(nv);
        l->v = nv;
        l->cap = cap;
    }
    e = &l->v[l->n++];
    e->pos = *pos;
    e->len = len;
    e->flags = flags;
    e->data = malloc(len ? len : 1);
    assert_non_null(e->data);
    if (len > 0)
        memcpy(e->data, data, len);
}

void test_reclist_free(test_reclist_t *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i].data);
    free(l->v);
    memset(l, 0, sizeof(*l));
}

static int cmp_rec_lsn(const void *a, const void *b)
{
    uint64_t x = ((const test_rec_t *)a)->pos.lsn, y = ((const test_rec_t *)b)->pos.lsn;

    return x < y ? -1 : x > y;
}

void test_reclist_sort(test_reclist_t *l)
{
    if (l->n > 1)
        qsort(l->v, l->n, sizeof(*l->v), cmp_rec_lsn);
}

const test_rec_t *test_reclist_find(const test_reclist_t *l, uint64_t lsn)
{
    size_t lo = 0, hi = l->n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (l->v[mid].pos.lsn < lsn)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < l->n && l->v[lo].pos.lsn == lsn ? &l->v[lo] : NULL;
}

uint8_t *test_payload_new(uint64_t *rng, size_t len, int compressible)
{
    uint8_t *p = malloc(len ? len : 1);

    assert_non_null(p);
    if (compressible)
        test_fill_pattern(p, len, test_rand(rng));
    else
        test_fill_random(p, len, rng);
    return p;
}

kw_wal_pos_t test_append_ok(kw_wal_t *w, test_reclist_t *l, const void *data,
                            size_t len, unsigned flags)
{
    kw_wal_pos_t pos;
    char err[512] = "";
    kw_err_t rc;

    memset(&pos, 0, sizeof(pos));
    rc = kw_wal_append(w, data, len, flags, &pos, err, sizeof(err));
    if (rc != KW_OK)
        fail_msg("kw_wal_append(%zu bytes): %s: %s", len, kw_err_name(rc), err);
    assert_true(pos.lsn > 0);
    assert_true(pos.size >= 32);
    if (l != NULL)
        test_reclist_push(l, &pos, data, len, flags);
    return pos;
}

kw_err_t test_read(kw_wal_t *w, const kw_wal_pos_t *pos, kw_wal_record_t *rec,
                   char *errstr, size_t errlen)
{
    kw_wal_record_clear(rec);
    return kw_wal_read(w, pos, rec, errstr, errlen);
}

kw_err_t test_read_lsn(kw_wal_t *w, uint64_t lsn, kw_wal_record_t *rec,
                       char *errstr, size_t errlen)
{
    kw_wal_record_clear(rec);
    return kw_wal_read_lsn(w, lsn, rec, errstr, errlen);
}

kw_err_t test_iter_next(kw_wal_iter_t *it, kw_wal_record_t *rec, char *errstr,
                        size_t errlen)
{
    kw_wal_record_clear(rec);
    return kw_wal_iter_next(it, rec, errstr, errlen);
}

void test_check_rec(const kw_wal_record_t *rec, const test_rec_t *e)
{
    if (rec->pos.lsn != e->pos.lsn)
        fail_msg("record LSN %" PRIu64 ", expected %" PRIu64, rec->pos.lsn, e->pos.lsn);
    if (rec->len != e->len)
        fail_msg("LSN %" PRIu64 ": %zu payload bytes, expected %zu", e->pos.lsn,
                 rec->len, e->len);
    if (e->len > 0 && memcmp(rec->payload, e->data, e->len) != 0)
        fail_msg("LSN %" PRIu64 ": payload bytes differ", e->pos.lsn);
    if (e->pos.segment != 0) {
        assert_int_equal(rec->pos.segment, e->pos.segment);
        assert_int_equal(rec->pos.offset, e->pos.offset);
        assert_int_equal(rec->pos.size, e->pos.size);
    }
    /* Stored compressed only when asked to. */
    if (rec->flags & KW_WAL_COMPRESS)
        assert_true(e->flags & KW_WAL_COMPRESS);
}

void test_check_all(kw_wal_t *w, const test_reclist_t *l)
{
    kw_wal_record_t rec;
    kw_wal_iter_t *it = NULL;
    char err[512] = "";
    kw_err_t rc;

    memset(&rec, 0, sizeof(rec));
    for (size_t i = 0; i < l->n; i++) {
        const test_rec_t *e = &l->v[i];

        if (i > 0)
            assert_int_equal(e->pos.lsn, l->v[i - 1].pos.lsn + 1);
        rc = test_read(w, &e->pos, &rec, err, sizeof(err));
        if (rc != KW_OK)
            fail_msg("kw_wal_read(LSN %" PRIu64 "): %s: %s", e->pos.lsn, kw_err_name(rc), err);
        test_check_rec(&rec, e);
        rc = test_read_lsn(w, e->pos.lsn, &rec, err, sizeof(err));
        if (rc != KW_OK)
            fail_msg("kw_wal_read_lsn(%" PRIu64 "): %s: %s", e->pos.lsn, kw_err_name(rc), err);
        test_check_rec(&rec, e);
    }
    if (l->n > 0) {
        rc = kw_wal_iter_new(w, l->v[0].pos.lsn, &it, err, sizeof(err));
        if (rc != KW_OK)
            fail_msg("kw_wal_iter_new: %s: %s", kw_err_name(rc), err);
        for (size_t i = 0; i < l->n; i++) {
            rc = test_iter_next(it, &rec, err, sizeof(err));
            if (rc != KW_OK)
                fail_msg("kw_wal_iter_next (expecting LSN %" PRIu64 "): %s: %s",
                         l->v[i].pos.lsn, kw_err_name(rc), err);
            test_check_rec(&rec, &l->v[i]);
        }
        rc = test_iter_next(it, &rec, err, sizeof(err));
        if (rc != KW_EOF)
            fail_msg("kw_wal_iter_next after LSN %" PRIu64 ": %s, expected KW_EOF (%s)",
                     l->v[l->n - 1].pos.lsn, kw_err_name(rc), err);
        kw_wal_iter_destroy(it);
    }
    kw_wal_record_clear(&rec);
}

uint64_t test_iter_all(kw_wal_t *w, const test_reclist_t *l, uint64_t *first,
                       uint64_t *last)
{
    kw_wal_record_t rec;
    kw_wal_iter_t *it = NULL;
    char err[512] = "";
    uint64_t count = 0, prev = 0;
    kw_err_t rc;

    memset(&rec, 0, sizeof(rec));
    *first = *last = 0;
    rc = kw_wal_iter_new(w, 0, &it, err, sizeof(err));
    if (rc != KW_OK)
        fail_msg("kw_wal_iter_new: %s: %s", kw_err_name(rc), err);
    while ((rc = test_iter_next(it, &rec, err, sizeof(err))) == KW_OK) {
        const test_rec_t *e = l != NULL ? test_reclist_find(l, rec.pos.lsn) : NULL;

        if (count == 0)
            *first = rec.pos.lsn;
        else if (rec.pos.lsn != prev + 1)
            fail_msg("iterator: LSN %" PRIu64 " after %" PRIu64, rec.pos.lsn, prev);
        prev = rec.pos.lsn;
        if (e != NULL)
            test_check_rec(&rec, e);
        count++;
    }
    if (rc != KW_EOF)
        fail_msg("kw_wal_iter_next after LSN %" PRIu64 ": %s: %s", prev, kw_err_name(rc), err);
    *last = prev;
    kw_wal_iter_destroy(it);
    kw_wal_record_clear(&rec);
    return count;
}

/* ---- kw_wal_verify ---- */

static void collect_problem(const kw_wal_problem_t *p, void *opaque)
{
    test_problems_t *out = opaque;

    fprintf(stderr, "  verify: replica %d segment %s offset %" PRIu64 ": %s\n",
            p->replica, p->segment, p->offset, p->what);
    if (out == NULL)
        return;
    if (out->n == out->cap) {
        size_t cap = out->cap ? out->cap * 2 : 16;
        kw_wal_problem_t *nv = realloc(out->v, cap * sizeof(*nv));

        if (nv == NULL)
            return;
        out->v = nv;
        out->cap = cap;
    }
    out->v[out->n++] = *p;
}

long test_verify(const kw_wal_options_t *o, test_problems_t *out)
{
    char err[512] = "";
    int live = -1;
    long n = kw_wal_verify(o, collect_problem, out, &live, err, sizeof(err));

    if (n < 0)
        fail_msg("kw_wal_verify: %s: %s", kw_err_name((kw_err_t)-n), err);
    /* The tests verify closed WALs: the full check must have run. */
    assert_int_equal(live, 0);
    if (out != NULL)
        assert_int_equal((size_t)n, out->n);
    return n;
}

size_t test_problems_at(const test_problems_t *p, int replica, uint64_t segment,
                        uint64_t offset)
{
    char digits[32];
    size_t cnt = 0;

    test_path(digits, sizeof(digits), "%020" PRIu64, segment);
    for (size_t i = 0; i < p->n; i++) {
        if (p->v[i].replica != replica || strstr(p->v[i].segment, digits) == NULL)
            continue;
        if (offset == UINT64_MAX || p->v[i].offset == offset)
            cnt++;
    }
    return cnt;
}

void test_problems_free(test_problems_t *p)
{
    free(p->v);
    memset(p, 0, sizeof(*p));
}
