/*
 * test_walcheck.h -- helpers for the WAL tests: a per-test directory tree,
 * option set-up, appends that remember what was acknowledged, and checks that
 * read everything back three ways (by position, by LSN, with an iterator) and
 * compare it byte for byte.
 *
 * These helpers use cmocka assertions, so call them from a test's own thread
 * (cmocka's failure path longjmps). Appends from other threads should use
 * kw_wal_append directly and keep their own lists.
 */
#ifndef KW_TEST_WALCHECK_H
#define KW_TEST_WALCHECK_H

#include <stddef.h>
#include <stdint.h>

#include "wal.h"

/* A temporary root with replica directories root/r0 .. root/r{n-1}. */
typedef struct test_walfx {
    char *root;
    char  dir[KW_WAL_MAX_REPLICAS][512];
    int   ndirs;
} test_walfx_t;

/* New root; mkdirs: also create the replica directories (0700). Asserts. */
test_walfx_t *test_walfx_new(const char *tag, int ndirs, int mkdirs);
/* Removes the tree unless KWAL_KEEP_TMP is set. NULL is a no-op. */
void test_walfx_free(test_walfx_t *fx);

/* Options over fx->dir[0..ndirs-1]; quorum 0: majority; io NULL: POSIX. */
void test_wal_opts(kw_wal_options_t *o, const test_walfx_t *fx, int ndirs,
                   int quorum, const kw_wal_io_t *io);
/* kw_wal_open that must succeed; report may be NULL. */
kw_wal_t *test_wal_open_ok(const kw_wal_options_t *o, kw_wal_open_report_t *rep);

/* Path of a segment file: "<dir>/<20-digit segment>.seg". */
void test_seg_path(char *buf, size_t cap, const char *dir, uint64_t segment);
/* "<20-digit segment>.seg". */
void test_seg_name(char *buf, size_t cap, uint64_t segment);

/* ---- Expected records ---- */

typedef struct test_rec {
    kw_wal_pos_t pos;
    uint8_t     *data;
    size_t       len;
    unsigned     flags;      /* flags given to append */
} test_rec_t;

typedef struct test_reclist {
    test_rec_t *v;
    size_t      n, cap;
} test_reclist_t;

void test_reclist_push(test_reclist_t *l, const kw_wal_pos_t *pos,
                       const void *data, size_t len, unsigned flags);
void test_reclist_free(test_reclist_t *l);
/* Sort by LSN (for lists filled by several threads). */
void test_reclist_sort(test_reclist_t *l);
/* The record with this LSN, or NULL. l must be sorted. */
const test_rec_t *test_reclist_find(const test_reclist_t *l, uint64_t lsn);

/* malloc'd payload of len bytes (never NULL, even for 0): random bytes, or a
 * compressible pattern. */
uint8_t *test_payload_new(uint64_t *rng, size_t len, int compressible);

/* Append that must succeed; the record is remembered in l (may be NULL). */
kw_wal_pos_t test_append_ok(kw_wal_t *w, test_reclist_t *l, const void *data,
                            size_t len, unsigned flags);

/* kw_wal_read, kw_wal_read_lsn and kw_wal_iter_next into a record that may
 * still hold the payload of an earlier read: wal.h wants the record cleared
 * (kw_wal_record_clear) before the struct is reused, so these clear first. */
kw_err_t test_read(kw_wal_t *w, const kw_wal_pos_t *pos, kw_wal_record_t *rec,
                   char *errstr, size_t errlen);
kw_err_t test_read_lsn(kw_wal_t *w, uint64_t lsn, kw_wal_record_t *rec,
                       char *errstr, size_t errlen);
kw_err_t test_iter_next(kw_wal_iter_t *it, kw_wal_record_t *rec, char *errstr,
                        size_t errlen);

/* A record read back must be e: same LSN, same payload bytes. */
void test_check_rec(const kw_wal_record_t *rec, const test_rec_t *e);
/* Every record of l (sorted, contiguous LSNs) read by position, by LSN, and
 * with an iterator from its first LSN, which must return exactly l and
 * then KW_EOF. */
void test_check_all(kw_wal_t *w, const test_reclist_t *l);
/* Iterate from the oldest record: LSNs must be consecutive. Returns the count;
 * *first and *last get the LSN range (0 when empty). Records found in l are
 * compared. */
uint64_t test_iter_all(kw_wal_t *w, const test_reclist_t *l, uint64_t *first,
                       uint64_t *last);

/* ---- kw_wal_verify ---- */

typedef struct test_problems {
    kw_wal_problem_t *v;
    size_t            n, cap;
} test_problems_t;

/* Run kw_wal_verify on a WAL that no process has open (so the full check
 * runs, not the live one), collecting problems in out (may be NULL);
 * returns its result. */
long test_verify(const kw_wal_options_t *o, test_problems_t *out);
/* Number of problems on replica naming segment (its number) at offset
 * (UINT64_MAX: any offset). */
size_t test_problems_at(const test_problems_t *p, int replica, uint64_t segment,
                        uint64_t offset);
void test_problems_free(test_problems_t *p);

#endif /* KW_TEST_WALCHECK_H */
