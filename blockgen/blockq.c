/*
 * blockq.c -- the bounded hand-off queue between receivers and the WAL
 * appender (keeps invariant 5: bounded memory, nothing dropped).
 *
 * A ring of blocks under one mutex, with two condition variables: `nonempty`
 * for getters and `room` for putters and wait_room(). The queue has two
 * states:
 *
 *   ROOM --(a put does not fit)--------------------------------> FULL
 *   FULL --(a get leaves <= resume_blocks and <= resume_bytes)--> ROOM
 *
 * A put is accepted only in ROOM and only if it fits: fewer than max_blocks
 * blocks, and bytes + size <= max_bytes (or the queue is empty, so that a
 * block larger than max_bytes still passes). In FULL every put waits or is
 * refused, even one that would fit: that is the hysteresis that keeps a
 * paused receiver from resuming for every single free slot. `room` is
 * broadcast on FULL -> ROOM and on close; `nonempty` is signalled per put and
 * broadcast on close. Waits use CLOCK_MONOTONIC deadlines.
 */
#include "blockgen.h"
#include "kw_time.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct kw_blockq {
    pthread_mutex_t     lock;
    pthread_cond_t      nonempty;
    pthread_cond_t      room;
    kw_blockq_options_t opts;            /* resume marks resolved */
    kw_block_t        **ring;            /* max_blocks slots */
    size_t              head, count;
    uint64_t            bytes;
    kw_blockq_state_t   state;
    int                 closed;
    kw_blockq_stats_t   stats;           /* counters only; the rest is filled on read */
};

void kw_blockq_options_init(kw_blockq_options_t *opts)
{
    memset(opts, 0, sizeof *opts);
    opts->max_blocks = 16;
    opts->max_bytes = 64u << 20;
    opts->resume_blocks = KW_BLOCKQ_HALF;
    opts->resume_bytes = (uint64_t)KW_BLOCKQ_HALF;
}

kw_err_t kw_blockq_new(const kw_blockq_options_t *opts, kw_blockq_t **q,
                       char *errstr, size_t errlen)
{
    kw_blockq_t *bq;
    pthread_condattr_t ca;
    int have_lock = 0, have_ne = 0;

    if (opts == NULL || q == NULL)
        return kw_seterr(errstr, errlen, KW_EINVAL, "kw_blockq_new: NULL argument");
    if (opts->max_blocks < 1 || opts->max_blocks > (1u << 24) || opts->max_bytes < 1)
        return kw_seterr(errstr, errlen, KW_ECONFIG,
                         "block queue: max_blocks must be 1..%u and max_bytes at least 1",
                         1u << 24);
    bq = calloc(1, sizeof *bq);
    if (bq == NULL)
        return kw_seterr(errstr, errlen, KW_ENOMEM, "out of memory");
    bq->opts = *opts;
    if (bq->opts.resume_blocks == KW_BLOCKQ_HALF)
        bq->opts.resume_blocks = opts->max_blocks / 2;
    if (bq->opts.resume_bytes == (uint64_t)KW_BLOCKQ_HALF)
        bq->opts.resume_bytes = opts->max_bytes / 2;
    if (bq->opts.resume_blocks >= opts->max_blocks || bq->opts.resume_bytes >= opts->max_bytes) {
        free(bq);
        return kw_seterr(errstr, errlen, KW_ECONFIG,
                         "block queue: resume marks must be below max_blocks and max_bytes");
    }
    bq->ring = calloc(opts->max_blocks, sizeof *bq->ring);
    if (bq->ring == NULL)
        goto fail;
    if (pthread_mutex_init(&bq->lock, NULL) != 0)
        goto fail;
    have_lock = 1;
    if (pthread_condattr_init(&ca) != 0)
        goto fail;
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    if (pthread_cond_init(&bq->nonempty, &ca) != 0) {
        pthread_condattr_destroy(&ca);
        goto fail;
    }
    have_ne = 1;
    if (pthread_cond_init(&bq->room, &ca) != 0) {
        pthread_condattr_destroy(&ca);
        goto fail;
    }
    pthread_condattr_destroy(&ca);
    bq->state = KW_BLOCKQ_ROOM;
    *q = bq;
    return KW_OK;

fail:
    if (have_ne)
        pthread_cond_destroy(&bq->nonempty);
    if (have_lock)
        pthread_mutex_destroy(&bq->lock);
    free(bq->ring);
    free(bq);
    return kw_seterr(errstr, errlen, KW_ENOMEM, "block queue: out of memory or resources");
}

void kw_blockq_destroy(kw_blockq_t *q)
{
    if (q == NULL)
        return;
    for (size_t i = 0; i < q->count; i++)
        kw_block_destroy(q->ring[(q->head + i) % q->opts.max_blocks]);
    pthread_cond_destroy(&q->room);
    pthread_cond_destroy(&q->nonempty);
    pthread_mutex_destroy(&q->lock);
    free(q->ring);
    free(q);
}

/* Absolute CLOCK_MONOTONIC deadline timeout_ms from now (timeout_ms > 0). */
static struct timespec deadline_after(int timeout_ms)
{
    return kw_deadline_ts(CLOCK_MONOTONIC, timeout_ms);
}

/* Wait on cond under q->lock: forever (timeout < 0) or until *dl. 0 on a
 * wake-up, ETIMEDOUT when the deadline passed. */
static int wait_on(kw_blockq_t *q, pthread_cond_t *cond, int timeout_ms,
                   const struct timespec *dl)
{
    if (timeout_ms < 0) {
        pthread_cond_wait(cond, &q->lock);
        return 0;
    }
    return pthread_cond_timedwait(cond, &q->lock, dl) == ETIMEDOUT ? ETIMEDOUT : 0;
}

static void set_state(kw_blockq_t *q, kw_blockq_state_t st)
{
    q->state = st;
    if (st == KW_BLOCKQ_FULL)
        q->stats.full_events++;
    else
        pthread_cond_broadcast(&q->room);
    if (q->opts.on_state != NULL)
        q->opts.on_state(st, q->opts.opaque);
}

kw_err_t kw_blockq_put(kw_blockq_t *q, kw_block_t *block, int timeout_ms)
{
    size_t size;
    struct timespec dl = { 0, 0 };
    kw_err_t err;

    if (q == NULL || block == NULL)
        return KW_EINVAL;
    size = kw_block_size(block);
    if (timeout_ms > 0)
        dl = deadline_after(timeout_ms);
    pthread_mutex_lock(&q->lock);
    for (;;) {
        if (q->closed) {
            err = KW_ECLOSED;
            break;
        }
        if (q->state == KW_BLOCKQ_ROOM) {
            if (q->count < q->opts.max_blocks &&
                (q->count == 0 || q->bytes + size <= q->opts.max_bytes)) {
                q->ring[(q->head + q->count) % q->opts.max_blocks] = block;
                q->count++;
                q->bytes += size;
                q->stats.puts++;
                pthread_cond_signal(&q->nonempty);
                err = KW_OK;
                break;
            }
            set_state(q, KW_BLOCKQ_FULL);
        }
        if (timeout_ms == 0 || wait_on(q, &q->room, timeout_ms, &dl) == ETIMEDOUT) {
            /* One last look: the wake-up and the deadline may have crossed. */
            if (!q->closed && q->state == KW_BLOCKQ_ROOM && timeout_ms != 0)
                continue;
            q->stats.refused++;
            err = KW_EFULL;
            break;
        }
    }
    pthread_mutex_unlock(&q->lock);
    return err;
}

kw_err_t kw_blockq_get(kw_blockq_t *q, kw_block_t **block, int timeout_ms)
{
    struct timespec dl = { 0, 0 };
    kw_err_t err;

    if (q == NULL || block == NULL)
        return KW_EINVAL;
    if (timeout_ms > 0)
        dl = deadline_after(timeout_ms);
    pthread_mutex_lock(&q->lock);
    for (;;) {
        if (q->count > 0) {
            kw_block_t *b = q->ring[q->head];
            q->ring[q->head] = NULL;
            q->head = (q->head + 1) % q->opts.max_blocks;
            q->count--;
            q->bytes -= kw_block_size(b);
            q->stats.gets++;
            if (q->state == KW_BLOCKQ_FULL && q->count <= q->opts.resume_blocks &&
                q->bytes <= q->opts.resume_bytes)
                set_state(q, KW_BLOCKQ_ROOM);
            *block = b;
            err = KW_OK;
            break;
        }
        if (q->closed) {
            err = KW_ECLOSED;
            break;
        }
        if (timeout_ms == 0 || wait_on(q, &q->nonempty, timeout_ms, &dl) == ETIMEDOUT) {
            if (q->count > 0 && timeout_ms != 0)
                continue;
            err = KW_ETIMEDOUT;
            break;
        }
    }
    pthread_mutex_unlock(&q->lock);
    return err;
}

void kw_blockq_close(kw_blockq_t *q)
{
    if (q == NULL)
        return;
    pthread_mutex_lock(&q->lock);
    q->closed = 1;
    pthread_cond_broadcast(&q->nonempty);
    pthread_cond_broadcast(&q->room);
    pthread_mutex_unlock(&q->lock);
}

kw_err_t kw_blockq_wait_room(kw_blockq_t *q, int timeout_ms)
{
    struct timespec dl = { 0, 0 };
    kw_err_t err;

    if (q == NULL)
        return KW_EINVAL;
    if (timeout_ms > 0)
        dl = deadline_after(timeout_ms);
    pthread_mutex_lock(&q->lock);
    for (;;) {
        if (q->closed) {
            err = KW_ECLOSED;
            break;
        }
        if (q->state == KW_BLOCKQ_ROOM) {
            err = KW_OK;
            break;
        }
        if (timeout_ms == 0 || wait_on(q, &q->room, timeout_ms, &dl) == ETIMEDOUT) {
            if (timeout_ms != 0 && (q->closed || q->state == KW_BLOCKQ_ROOM))
                continue;
            err = KW_ETIMEDOUT;
            break;
        }
    }
    pthread_mutex_unlock(&q->lock);
    return err;
}

void kw_blockq_stats(kw_blockq_t *q, kw_blockq_stats_t *stats)
{
    pthread_mutex_lock(&q->lock);
    *stats = q->stats;
    stats->blocks = q->count;
    stats->bytes = q->bytes;
    stats->state = q->state;
    stats->closed = q->closed;
    pthread_mutex_unlock(&q->lock);
}

kw_blockq_state_t kw_blockq_state(kw_blockq_t *q)
{
    kw_blockq_state_t st;

    pthread_mutex_lock(&q->lock);
    st = q->state;
    pthread_mutex_unlock(&q->lock);
    return st;
}
