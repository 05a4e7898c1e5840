/*
 * test_blockq_threads.c -- unit tests of the bounded hand-off queue
 * (kw_blockq_t in blockgen/blockgen.h): limits in blocks and bytes, the
 * FULL/ROOM hysteresis and its callback, timeouts, close waking every waiter,
 * and producer/consumer threads moving every record exactly once and in order.
 * This file carries the "threads" label and also runs under ThreadSanitizer,
 * so it is kept to a few seconds.
 *
 * How: producer threads play receivers -- each has its own generator, makes
 * blocks of numbered records and puts them without waiting; on KW_EFULL it
 * "pauses" (counts it, waits for ROOM) and retries the same block, as a
 * receiver pauses its partitions. Consumers decode every block. Worker threads
 * never call cmocka; they count errors and keep the first message, which the
 * main thread asserts on after joining.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "blockgen.h"

/* A block of n records of value_len bytes, one partition, from offset off. */
static kw_block_t *mk_block(uint64_t seq, int64_t off, int n, size_t value_len)
{
    static const uint8_t zeros[8192];
    kw_record_t *r = calloc((size_t)n, sizeof *r);
    kw_block_meta_t meta = { 1, seq, 0 };
    kw_block_t *b = NULL;

    for (int i = 0; i < n; i++) {
        r[i].topic = "q";
        r[i].offset = off + i;
        r[i].value = zeros;
        r[i].value_len = value_len;
    }
    if (kw_block_encode(&meta, r, (size_t)n, &b, NULL, 0) != KW_OK)
        b = NULL;
    free(r);
    return b;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* State changes seen by the callback; checks they alternate. */
typedef struct watch {
    atomic_int fulls, rooms, bad;
    atomic_int last;            /* last state reported; starts ROOM */
} watch_t;

static void on_state(kw_blockq_state_t st, void *opaque)
{
    watch_t *w = opaque;
    if ((int)st == atomic_load(&w->last))
        atomic_fetch_add(&w->bad, 1);
    atomic_store(&w->last, (int)st);
    if (st == KW_BLOCKQ_FULL)
        atomic_fetch_add(&w->fulls, 1);
    else
        atomic_fetch_add(&w->rooms, 1);
}

static kw_blockq_t *q_new(size_t max_blocks, uint64_t max_bytes, watch_t *w)
{
    kw_blockq_options_t o;
    kw_blockq_t *q = NULL;
    char err[256];

    kw_blockq_options_init(&o);
    assert_int_equal(o.max_blocks, 16);
    o.max_blocks = max_blocks;
    o.max_bytes = max_bytes;
    if (w != NULL) {
        memset(w, 0, sizeof *w);
        atomic_store(&w->last, KW_BLOCKQ_ROOM);
        o.on_state = on_state;
        o.opaque = w;
    }
    if (kw_blockq_new(&o, &q, err, sizeof err) != KW_OK)
        fail_msg("kw_blockq_new: %s", err);
    return q;
}

/* Limits, hysteresis and the callback, on one thread. */
static void test_full_and_room(void **state)
{
    watch_t w;
    kw_blockq_t *q = q_new(4, 1u << 20, &w);
    kw_blockq_stats_t s;
    kw_block_t *b[8], *got;

    (void)state;
    for (int i = 0; i < 8; i++)
        assert_non_null(b[i] = mk_block((uint64_t)i, i, 1, 10));
    for (int i = 0; i < 4; i++)
        assert_int_equal(kw_blockq_put(q, b[i], 0), KW_OK);
    assert_int_equal(kw_blockq_state(q), KW_BLOCKQ_ROOM);
    assert_int_equal(kw_blockq_put(q, b[4], 0), KW_EFULL);       /* caller keeps b[4] */
    assert_int_equal(kw_blockq_state(q), KW_BLOCKQ_FULL);
    assert_int_equal(atomic_load(&w.fulls), 1);
    assert_int_equal(kw_blockq_wait_room(q, 0), KW_ETIMEDOUT);

    /* one get frees a slot, but FULL lasts until the resume mark (2) */
    assert_int_equal(kw_blockq_get(q, &got, 0), KW_OK);
    assert_ptr_equal(got, b[0]);
    kw_block_destroy(got);
    assert_int_equal(kw_blockq_put(q, b[4], 0), KW_EFULL);
    assert_int_equal(atomic_load(&w.fulls), 1);                  /* no new change */
    assert_int_equal(kw_blockq_get(q, &got, 0), KW_OK);
    assert_ptr_equal(got, b[1]);
    kw_block_destroy(got);
    assert_int_equal(kw_blockq_state(q), KW_BLOCKQ_ROOM);
    assert_int_equal(atomic_load(&w.rooms), 1);
    assert_int_equal(kw_blockq_wait_room(q, 0), KW_OK);
    assert_int_equal(kw_blockq_put(q, b[4], 0), KW_OK);
    assert_int_equal(kw_blockq_put(q, b[5], 0), KW_OK);

    kw_blockq_stats(q, &s);
    assert_int_equal(s.blocks, 4);
    assert_int_equal(s.puts, 6);
    assert_int_equal(s.gets, 2);
    assert_int_equal(s.refused, 2);
    assert_int_equal(s.full_events, 1);
    assert_int_equal(s.bytes, 4 * kw_block_size(b[2]));
    assert_int_equal(atomic_load(&w.bad), 0);

    /* FIFO */
    for (int i = 2; i < 6; i++) {
        assert_int_equal(kw_blockq_get(q, &got, 0), KW_OK);
        assert_ptr_equal(got, b[i]);
        kw_block_destroy(got);
    }
    assert_int_equal(kw_blockq_get(q, &got, 0), KW_ETIMEDOUT);
    /* destroy frees what is still queued */
    assert_int_equal(kw_blockq_put(q, b[6], 0), KW_OK);
    assert_int_equal(kw_blockq_put(q, b[7], 0), KW_OK);
    kw_blockq_destroy(q);
    kw_blockq_destroy(NULL);
}

static void test_byte_limit(void **state)
{
    kw_block_t *small1 = mk_block(1, 0, 1, 300), *small2 = mk_block(2, 1, 1, 300);
    kw_block_t *small3 = mk_block(3, 2, 1, 300), *huge = mk_block(4, 3, 1, 5000);
    size_t sz = kw_block_size(small1);
    kw_blockq_t *q = q_new(100, 2 * sz + sz / 2, NULL);   /* two small blocks fit */
    kw_blockq_options_t o;
    kw_block_t *got;
    char err[256];

    (void)state;
    assert_int_equal(kw_blockq_put(q, small1, 0), KW_OK);
    assert_int_equal(kw_blockq_put(q, small2, 0), KW_OK);
    assert_int_equal(kw_blockq_put(q, small3, 0), KW_EFULL);
    /* drain to one block (<= half the bytes): ROOM */
    assert_int_equal(kw_blockq_get(q, &got, 0), KW_OK);
    kw_block_destroy(got);
    assert_int_equal(kw_blockq_state(q), KW_BLOCKQ_ROOM);
    /* a block over max_bytes waits for an empty queue, then passes alone */
    assert_int_equal(kw_blockq_put(q, huge, 0), KW_EFULL);
    assert_int_equal(kw_blockq_get(q, &got, 0), KW_OK);
    kw_block_destroy(got);
    assert_int_equal(kw_blockq_put(q, huge, 0), KW_OK);
    assert_int_equal(kw_blockq_put(q, small3, 0), KW_EFULL);
    assert_int_equal(kw_blockq_get(q, &got, 0), KW_OK);
    assert_ptr_equal(got, huge);
    kw_block_destroy(got);
    assert_int_equal(kw_blockq_put(q, small3, 0), KW_OK);
    kw_blockq_destroy(q);

    /* bad limits */
    kw_blockq_options_init(&o);
    o.max_blocks = 0;
    assert_int_equal(kw_blockq_new(&o, &q, err, sizeof err), KW_ECONFIG);
    kw_blockq_options_init(&o);
    o.resume_blocks = o.max_blocks;
    assert_int_equal(kw_blockq_new(&o, &q, err, sizeof err), KW_ECONFIG);
}

static void test_timeouts(void **state)
{
    kw_blockq_t *q = q_new(1, 1u << 20, NULL);
    kw_block_t *b1 = mk_block(1, 0, 1, 1), *b2 = mk_block(2, 1, 1, 1), *got = NULL;
    int64_t t0;

    (void)state;
    t0 = mono_ms();
    assert_int_equal(kw_blockq_get(q, &got, 60), KW_ETIMEDOUT);
    assert_true(mono_ms() - t0 >= 55);
    assert_int_equal(kw_blockq_put(q, b1, 0), KW_OK);
    t0 = mono_ms();
    assert_int_equal(kw_blockq_put(q, b2, 60), KW_EFULL);
    assert_true(mono_ms() - t0 >= 55);
    t0 = mono_ms();
    assert_int_equal(kw_blockq_wait_room(q, 30), KW_ETIMEDOUT);
    assert_true(mono_ms() - t0 >= 25);
    kw_block_destroy(b2);
    kw_blockq_destroy(q);
}

/* ---- Close wakes every waiter ---- */

typedef struct waiter {
    pthread_t    thread;
    kw_blockq_t *q;
    int          kind;          /* 0 get, 1 put, 2 wait_room */
    kw_block_t  *block;         /* for put; kept on failure */
    atomic_int   started;
    kw_err_t     rc;
} waiter_t;

static void *waiter_main(void *arg)
{
    waiter_t *w = arg;
    kw_block_t *got = NULL;

    atomic_store(&w->started, 1);
    switch (w->kind) {
    case 0:
        w->rc = kw_blockq_get(w->q, &got, -1);
        kw_block_destroy(got);
        break;
    case 1:
        w->rc = kw_blockq_put(w->q, w->block, -1);
        break;
    default:
        w->rc = kw_blockq_wait_room(w->q, -1);
        break;
    }
    return NULL;
}

static void test_close_wakes(void **state)
{
    kw_blockq_t *qe = q_new(1, 1u << 20, NULL);   /* empty: getters wait */
    kw_blockq_t *qf = q_new(1, 1u << 20, NULL);   /* full: putters wait */
    kw_block_t *got;
    waiter_t w[6];

    (void)state;
    assert_int_equal(kw_blockq_put(qf, mk_block(1, 0, 1, 1), 0), KW_OK);
    got = mk_block(2, 1, 1, 1);
    assert_int_equal(kw_blockq_put(qf, got, 0), KW_EFULL);     /* latches FULL */
    kw_block_destroy(got);
    memset(w, 0, sizeof w);
    for (int i = 0; i < 6; i++) {
        w[i].kind = i % 3;
        w[i].q = w[i].kind == 0 ? qe : qf;
        if (w[i].kind == 1)
            assert_non_null(w[i].block = mk_block(10 + (uint64_t)i, 0, 1, 1));
        assert_int_equal(pthread_create(&w[i].thread, NULL, waiter_main, &w[i]), 0);
    }
    for (int i = 0; i < 6; i++)
        while (!atomic_load(&w[i].started))
            ;
    {
        struct timespec ts = { 0, 50 * 1000000L };     /* let them block */
        nanosleep(&ts, NULL);
    }
    kw_blockq_close(qe);
    kw_blockq_close(qf);
    kw_blockq_close(qf);                               /* idempotent */
    for (int i = 0; i < 6; i++) {
        pthread_join(w[i].thread, NULL);
        assert_int_equal(w[i].rc, KW_ECLOSED);
        kw_block_destroy(w[i].block);                  /* refused: still ours */
    }
    /* after close: puts refused, queued blocks still handed out, then closed */
    got = mk_block(3, 0, 1, 1);
    assert_int_equal(kw_blockq_put(qe, got, 0), KW_ECLOSED);
    kw_block_destroy(got);
    assert_int_equal(kw_blockq_get(qf, &got, 0), KW_OK);
    kw_block_destroy(got);
    assert_int_equal(kw_blockq_get(qf, &got, -1), KW_ECLOSED);
    kw_blockq_destroy(qe);
    kw_blockq_destroy(qf);
}

/* ---- Producers and consumers ---- */

#define MAX_PROD 4
#define MAX_CONS 3

typedef struct pc {
    kw_blockq_t *q;
    int          nprod, ncons;
    int          records;           /* per producer */
    size_t       max_blocks;
    uint64_t     max_bytes;
    atomic_int   errors;
    atomic_int   pauses;
    atomic_int   running;           /* producers still going */
    char         msg[300];
    pthread_mutex_t msg_lock;
    /* seen[p][i]: times record i of producer p arrived */
    uint8_t     *seen[MAX_PROD];
    uint64_t     max_blocks_seen, max_bytes_seen;
    int64_t      last_seq[MAX_PROD];   /* single consumer: seqs per producer increase */
    atomic_long  blocks;
} pc_t;

typedef struct prod {
    pthread_t thread;
    pc_t     *pc;
    int       id;
} prod_t;

static void pc_error(pc_t *pc, const char *fmt, ...)
{
    va_list ap;
    if (atomic_fetch_add(&pc->errors, 1) != 0)
        return;
    pthread_mutex_lock(&pc->msg_lock);
    va_start(ap, fmt);
    vsnprintf(pc->msg, sizeof pc->msg, fmt, ap);
    va_end(ap);
    pthread_mutex_unlock(&pc->msg_lock);
}

/* Put with pause-and-retry, the way a receiver does: never drop a block. */
static void hand_off(pc_t *pc, kw_block_t *b)
{
    for (;;) {
        kw_err_t rc = kw_blockq_put(pc->q, b, 0);
        if (rc == KW_OK)
            return;
        if (rc != KW_EFULL) {
            pc_error(pc, "put: %s", kw_err_name(rc));
            kw_block_destroy(b);
            return;
        }
        atomic_fetch_add(&pc->pauses, 1);
        rc = kw_blockq_wait_room(pc->q, 1000);
        if (rc == KW_ECLOSED) {
            pc_error(pc, "queue closed under a producer");
            kw_block_destroy(b);
            return;
        }
    }
}

static void *producer_main(void *arg)
{
    prod_t *p = arg;
    pc_t *pc = p->pc;
    kw_blockgen_config_t cfg;
    kw_blockgen_t *g = NULL;
    kw_block_t *b;
    char err[256];
    uint8_t value[64];

    kw_blockgen_config_init(&cfg);
    cfg.receiver_id = (uint32_t)p->id;
    cfg.max_bytes = 2000 + 500 * (uint64_t)p->id;
    cfg.interval_ms = 5;
    if (kw_blockgen_new(&cfg, &g, err, sizeof err) != KW_OK) {
        pc_error(pc, "blockgen_new: %s", err);
        goto done;
    }
    for (int i = 0; i < pc->records; i++) {
        kw_record_t r;
        memset(&r, 0, sizeof r);
        r.topic = (i % 2) ? "odd" : "even";
        r.partition = p->id;
        r.offset = i;
        snprintf((char *)value, sizeof value, "p%d-r%d", p->id, i);
        r.value = value;
        r.value_len = strlen((char *)value);
        if (kw_blockgen_add(g, &r, err, sizeof err) != KW_OK) {
            pc_error(pc, "add: %s", err);
            goto done;
        }
        if (i % 97 == 0)
            kw_blockgen_tick(g, mono_ms());
        while ((b = kw_blockgen_take(g)) != NULL)
            hand_off(pc, b);
    }
    kw_blockgen_cut(g);
    while ((b = kw_blockgen_take(g)) != NULL)
        hand_off(pc, b);
done:
    kw_blockgen_destroy(g);
    atomic_fetch_sub(&pc->running, 1);
    return NULL;
}

static void *consumer_main(void *arg)
{
    pc_t *pc = arg;
    kw_block_t *b;
    kw_err_t rc;

    while ((rc = kw_blockq_get(pc->q, &b, -1)) == KW_OK) {
        kw_blockq_stats_t s;
        kw_block_t *dec;
        kw_block_iter_t *it;
        kw_record_t rec;
        uint32_t p = kw_block_receiver_id(b);
        char err[256];

        kw_blockq_stats(pc->q, &s);
        if (s.blocks > pc->max_blocks)
            pc_error(pc, "queue held %zu blocks, limit %zu", s.blocks, pc->max_blocks);
        if (s.bytes > pc->max_bytes && s.blocks > 1)
            pc_error(pc, "queue held %" PRIu64 " bytes, limit %" PRIu64,
                     s.bytes, pc->max_bytes);
        if (p >= (uint32_t)pc->nprod) {
            pc_error(pc, "block from unknown producer %" PRIu32, p);
            kw_block_destroy(b);
            continue;
        }
        if (pc->ncons == 1) {
            if ((int64_t)kw_block_seq(b) != pc->last_seq[p] + 1)
                pc_error(pc, "producer %" PRIu32 ": block %" PRIu64 " after %" PRId64,
                         p, kw_block_seq(b), pc->last_seq[p]);
            pc->last_seq[p] = (int64_t)kw_block_seq(b);
        }
        if (kw_block_decode(kw_block_data(b, NULL), kw_block_size(b), KW_BLOCK_BORROW,
                            &dec, err, sizeof err) != KW_OK) {
            pc_error(pc, "decode: %s", err);
            kw_block_destroy(b);
            continue;
        }
        if (kw_block_iter_new(dec, &it) == KW_OK) {
            while (kw_block_iter_next(it, &rec) == KW_OK) {
                char want[64];
                snprintf(want, sizeof want, "p%" PRIu32 "-r%" PRId64, p, rec.offset);
                if (rec.partition != (int32_t)p || rec.offset < 0 || rec.offset >= pc->records ||
                    rec.value_len != strlen(want) || memcmp(rec.value, want, rec.value_len) != 0)
                    pc_error(pc, "bad record %" PRId64 " from producer %" PRIu32, rec.offset, p);
                else
                    pc->seen[p][rec.offset]++;      /* one producer's blocks may go to
                                                     * several consumers, but each record
                                                     * is in one block: no two threads
                                                     * write the same byte */
            }
            kw_block_iter_destroy(it);
        }
        atomic_fetch_add(&pc->blocks, 1);
        kw_block_destroy(dec);
        kw_block_destroy(b);
    }
    if (rc != KW_ECLOSED)
        pc_error(pc, "get: %s", kw_err_name(rc));
    return NULL;
}

static void run_pc(int nprod, int ncons, int records, size_t max_blocks, uint64_t max_bytes)
{
    pc_t pc;
    prod_t prods[MAX_PROD];
    pthread_t cons[MAX_CONS];
    watch_t w;
    kw_blockq_stats_t s;

    memset(&pc, 0, sizeof pc);
    pthread_mutex_init(&pc.msg_lock, NULL);
    pc.nprod = nprod;
    pc.ncons = ncons;
    pc.records = records;
    pc.max_blocks = max_blocks;
    pc.max_bytes = max_bytes;
    pc.q = q_new(max_blocks, max_bytes, &w);
    atomic_store(&pc.running, nprod);
    for (int p = 0; p < nprod; p++) {
        pc.seen[p] = calloc((size_t)records, 1);
        pc.last_seq[p] = 0;
        prods[p].pc = &pc;
        prods[p].id = p;
    }
    for (int c = 0; c < ncons; c++)
        assert_int_equal(pthread_create(&cons[c], NULL, consumer_main, &pc), 0);
    for (int p = 0; p < nprod; p++)
        assert_int_equal(pthread_create(&prods[p].thread, NULL, producer_main, &prods[p]), 0);
    for (int p = 0; p < nprod; p++)
        pthread_join(prods[p].thread, NULL);
    kw_blockq_close(pc.q);
    for (int c = 0; c < ncons; c++)
        pthread_join(cons[c], NULL);

    if (atomic_load(&pc.errors) != 0)
        fail_msg("%d errors; first: %s", atomic_load(&pc.errors), pc.msg);
    for (int p = 0; p < nprod; p++) {
        for (int i = 0; i < records; i++)
            if (pc.seen[p][i] != 1)
                fail_msg("producer %d record %d arrived %d times", p, i, pc.seen[p][i]);
        free(pc.seen[p]);
    }
    kw_blockq_stats(pc.q, &s);
    assert_int_equal(s.blocks, 0);
    assert_int_equal(s.puts, s.gets);
    assert_int_equal(s.puts, (uint64_t)atomic_load(&pc.blocks));
    assert_int_equal(s.refused, (uint64_t)atomic_load(&pc.pauses));
    assert_int_equal(atomic_load(&w.bad), 0);
    assert_int_equal(s.full_events, (uint64_t)atomic_load(&w.fulls));
    print_message("  %d producers, %d consumers: %" PRIu64 " blocks, %d pauses, %" PRIu64
                  " FULL events\n", nprod, ncons, s.puts, atomic_load(&pc.pauses), s.full_events);
    kw_blockq_destroy(pc.q);
    pthread_mutex_destroy(&pc.msg_lock);
}

/* One consumer: nothing lost, nothing duplicated, each producer's blocks in
 * order; a small queue so producers pause often. */
static void test_pc_ordered(void **state)
{
    (void)state;
    run_pc(MAX_PROD, 1, 20000, 4, 16 * 1024);
}

/* Several consumers: nothing lost or duplicated. */
static void test_pc_many(void **state)
{
    (void)state;
    run_pc(MAX_PROD, MAX_CONS, 20000, 8, 1u << 20);
    run_pc(2, 2, 5000, 1, 4096);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_and_room),
        cmocka_unit_test(test_byte_limit),
        cmocka_unit_test(test_timeouts),
        cmocka_unit_test(test_close_wakes),
        cmocka_unit_test(test_pc_ordered),
        cmocka_unit_test(test_pc_many),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
