/*
 * test_wal_parallel_threads.c -- replicas are written in parallel, one I/O
 * path per replica, never one after another (issue: "Replicas are written in
 * parallel").
 *
 * How, without timing: an I/O table that wraps the POSIX one and, once armed,
 * makes every fdatasync wait (at most a few seconds) until every replica is
 * inside fdatasync at the same moment, recording the most seen at once. With
 * replicas written one after another that maximum would stay at 1 (each call
 * would give up waiting); written in parallel, it reaches the replica count.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "test_util.h"
#include "wal.h"

#define NREP 3

typedef struct barrier_io {
    kw_wal_io_t     table;
    pthread_mutex_t mu;
    pthread_cond_t  cv;
    int             armed;
    int             inside;      /* replicas inside fdatasync now */
    int             max_inside;
    unsigned long   gen;         /* bumps when a full rendezvous happened */
} barrier_io_t;

static barrier_io_t bio;

static int b_open(void *c, int r, const char *p, int f, mode_t m)
{ (void)c; return kw_wal_io_posix()->open(NULL, r, p, f, m); }
static int b_close(void *c, int r, int fd)
{ (void)c; return kw_wal_io_posix()->close(NULL, r, fd); }
static ssize_t b_pread(void *c, int r, int fd, void *b, size_t n, off_t o)
{ (void)c; return kw_wal_io_posix()->pread(NULL, r, fd, b, n, o); }
static ssize_t b_pwritev(void *c, int r, int fd, const struct iovec *v, int n, off_t o)
{ (void)c; return kw_wal_io_posix()->pwritev(NULL, r, fd, v, n, o); }
static int b_fsync(void *c, int r, int fd)
{ (void)c; return kw_wal_io_posix()->fsync(NULL, r, fd); }
static int b_ftruncate(void *c, int r, int fd, off_t l)
{ (void)c; return kw_wal_io_posix()->ftruncate(NULL, r, fd, l); }
static int b_unlink(void *c, int r, const char *p)
{ (void)c; return kw_wal_io_posix()->unlink(NULL, r, p); }
static int b_rename(void *c, int r, const char *a, const char *b)
{ (void)c; return kw_wal_io_posix()->rename(NULL, r, a, b); }
static int b_mkdir(void *c, int r, const char *p, mode_t m)
{ (void)c; return kw_wal_io_posix()->mkdir(NULL, r, p, m); }

static int b_fdatasync(void *c, int r, int fd)
{
    barrier_io_t *b = c;
    struct timespec until;

    pthread_mutex_lock(&b->mu);
    if (b->armed) {
        unsigned long gen = b->gen;

        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 3;
        b->inside++;
        if (b->inside > b->max_inside)
            b->max_inside = b->inside;
        if (b->inside == NREP) {
            b->gen++;
            pthread_cond_broadcast(&b->cv);
        }
        while (b->gen == gen &&
               pthread_cond_timedwait(&b->cv, &b->mu, &until) == 0)
            ;
        b->inside--;
    }
    pthread_mutex_unlock(&b->mu);
    return kw_wal_io_posix()->fdatasync(NULL, r, fd);
}

static void test_replicas_synced_in_parallel(void **state)
{
    char *root = test_tmpdir_new("parallel");
    char dirs[NREP][512];
    kw_wal_options_t o;
    kw_wal_t *w;
    kw_wal_stats_t st;
    char err[512];
    kw_wal_pos_t pos;
    unsigned long gen;

    (void)state;
    memset(&bio, 0, sizeof(bio));
    pthread_mutex_init(&bio.mu, NULL);
    pthread_cond_init(&bio.cv, NULL);
    bio.table = (kw_wal_io_t){ b_open, b_close, b_pread, b_pwritev, NULL, b_fdatasync,
                               b_fsync, b_ftruncate, b_unlink, b_rename, b_mkdir, &bio };
    kw_wal_options_init(&o);
    o.ndirs = NREP;
    o.write_quorum = NREP;          /* the append needs every replica */
    o.io = &bio.table;
    for (int i = 0; i < NREP; i++) {
        snprintf(dirs[i], sizeof(dirs[i]), "%s/r%d", root, i);
        o.dirs[i] = dirs[i];
    }
    assert_int_equal(kw_wal_open(&o, &w, NULL, err, sizeof(err)), KW_OK);

    pthread_mutex_lock(&bio.mu);
    bio.armed = 1;
    pthread_mutex_unlock(&bio.mu);
    for (int i = 0; i < 3; i++)
        assert_int_equal(kw_wal_append(w, "parallel", 8, 0, &pos, err, sizeof(err)), KW_OK);
    pthread_mutex_lock(&bio.mu);
    bio.armed = 0;
    gen = bio.gen;
    pthread_mutex_unlock(&bio.mu);

    kw_wal_stats(w, &st);
    assert_int_equal(st.replicas_healthy, NREP);
    /* Every replica was inside fdatasync at the same time, more than once
     * (segment header at the roll, then the records). */
    assert_int_equal(bio.max_inside, NREP);
    assert_true(gen >= 2);
    kw_wal_close(w);
    test_rmtree(root);
    free(root);
    pthread_cond_destroy(&bio.cv);
    pthread_mutex_destroy(&bio.mu);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_replicas_synced_in_parallel),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
