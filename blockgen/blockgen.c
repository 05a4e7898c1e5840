/*
 * blockgen.c -- the per-receiver block generator and its rate limiter.
 *
 * The generator is a builder (block.c) plus the rules for when to cut it
 * (blockgen.h, kw_blockgen_add/tick/cut) and a FIFO of cut blocks waiting to be
 * taken. Every cut goes through gen_cut(), which reserves the FIFO slot before
 * finishing the builder: a cut either yields a block in the FIFO or, on
 * KW_ENOMEM, leaves every record in the builder. Nothing is ever dropped.
 *
 * Rate limiter: a token bucket counted in milli-records so the arithmetic is
 * exact in integers. At max_rate records/s the bucket gains max_rate
 * milli-records per ms, holds at most `burst` records, and every added record
 * costs 1000 (the balance may go negative: a burst taken at once is paid for by
 * waiting). The wait for the next record is the time the balance needs to
 * reach 1000 again, rounded up to whole ms.
 *
 * One thread (the receiver's) uses a generator; there is no locking.
 */
#include "blockgen_int.h"
#include "kw_time.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef enum { CUT_INTERVAL, CUT_SIZE, CUT_SEEK, CUT_EXPLICIT } cut_cause_t;

struct kw_blockgen {
    kw_blockgen_config_t cfg;
    kw__builder_t        b;
    uint64_t             next_seq;

    int                  anchored;         /* the first tick came */
    int64_t              interval_start;

    kw_block_t         **ready;            /* ring of cut blocks, oldest at head */
    size_t               ready_head, ready_count, ready_cap;
    uint64_t             ready_bytes;

    int                  rate_anchored;
    int64_t              rate_last;        /* ms of the last refill */
    int64_t              tokens;           /* milli-records */
    int64_t              capacity;         /* milli-records */

    kw_blockgen_stats_t  stats;
};

void kw_blockgen_config_init(kw_blockgen_config_t *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->first_seq = 1;
    cfg->interval_ms = 200;
    cfg->max_bytes = 4u << 20;
    cfg->max_rate = 0;
}

kw_err_t kw_blockgen_new(const kw_blockgen_config_t *cfg, kw_blockgen_t **gen,
                         char *errstr, size_t errlen)
{
    kw_blockgen_t *g;

    if (cfg == NULL || gen == NULL)
        return kw_seterr(errstr, errlen, KW_EINVAL, "kw_blockgen_new: NULL argument");
    if (cfg->interval_ms < 1)
        return kw_seterr(errstr, errlen, KW_ECONFIG,
                         "block.interval.ms: must be at least 1, got %" PRId64, cfg->interval_ms);
    if (cfg->max_bytes < 64 || cfg->max_bytes > KW_BLOCKGEN_MAX_BYTES)
        return kw_seterr(errstr, errlen, KW_ECONFIG,
                         "block.max.bytes: must be between 64 and %llu, got %" PRIu64,
                         (unsigned long long)KW_BLOCKGEN_MAX_BYTES, cfg->max_bytes);
    if (cfg->max_rate > (uint64_t)1 << 40)
        return kw_seterr(errstr, errlen, KW_ECONFIG,
                         "receiver.max.rate: too large (%" PRIu64 ")", cfg->max_rate);
    g = calloc(1, sizeof *g);
    if (g == NULL)
        return kw_seterr(errstr, errlen, KW_ENOMEM, "out of memory");
    g->cfg = *cfg;
    kw__builder_init(&g->b);
    g->next_seq = cfg->first_seq;
    if (cfg->max_rate > 0) {
        uint64_t burst = (cfg->max_rate + 9) / 10;
        g->capacity = (int64_t)(burst ? burst : 1) * 1000;
        g->tokens = g->capacity;
    }
    *gen = g;
    return KW_OK;
}

void kw_blockgen_destroy(kw_blockgen_t *gen)
{
    if (gen == NULL)
        return;
    for (size_t i = 0; i < gen->ready_count; i++)
        kw_block_destroy(gen->ready[(gen->ready_head + i) % gen->ready_cap]);
    free(gen->ready);
    kw__builder_free(&gen->b);
    free(gen);
}

/* Room for one more block in the FIFO. */
static kw_err_t ready_reserve(kw_blockgen_t *g)
{
    size_t nc;
    kw_block_t **n;

    if (g->ready_count < g->ready_cap)
        return KW_OK;
    nc = g->ready_cap ? g->ready_cap * 2 : 8;
    n = malloc(nc * sizeof *n);
    if (n == NULL)
        return KW_ENOMEM;
    for (size_t i = 0; i < g->ready_count; i++)
        n[i] = g->ready[(g->ready_head + i) % g->ready_cap];
    free(g->ready);
    g->ready = n;
    g->ready_cap = nc;
    g->ready_head = 0;
    return KW_OK;
}

/* Cut the current block if it has records. KW_ENOMEM leaves them in place. */
static kw_err_t gen_cut(kw_blockgen_t *g, cut_cause_t cause)
{
    kw_block_meta_t meta;
    kw_block_t *blk;
    kw_err_t err;

    if (g->b.nrecords == 0)
        return KW_OK;
    err = ready_reserve(g);
    if (err != KW_OK)
        return err;
    meta.receiver_id = g->cfg.receiver_id;
    meta.seq = g->next_seq;
    meta.created_ms = kw_wall_ms();
    err = kw__builder_finish(&g->b, &meta, &blk);
    if (err != KW_OK)
        return err;
    g->next_seq++;
    g->ready[(g->ready_head + g->ready_count) % g->ready_cap] = blk;
    g->ready_count++;
    g->ready_bytes += kw_block_size(blk);
    g->stats.blocks++;
    g->stats.bytes += kw_block_size(blk);
    switch (cause) {
    case CUT_INTERVAL: g->stats.cut_interval++; break;
    case CUT_SIZE:     g->stats.cut_size++; break;
    case CUT_SEEK:     g->stats.cut_seek++; break;
    case CUT_EXPLICIT: g->stats.cut_explicit++; break;
    }
    return KW_OK;
}

kw_err_t kw_blockgen_add(kw_blockgen_t *gen, const kw_record_t *rec,
                         char *errstr, size_t errlen)
{
    uint64_t size, extra;
    uint32_t r;
    int found;
    kw_err_t err;

    err = kw__record_check(rec, &size, errstr, errlen);
    if (err != KW_OK)
        return err;
    found = kw__builder_lookup(&gen->b, rec, &r, &extra);
    if (found && rec->offset <= kw__builder_range_last(&gen->b, r)) {
        /* The partition went back (seek, offset reset): keep ranges exact. */
        err = gen_cut(gen, CUT_SEEK);
        if (err != KW_OK)
            return kw_seterr(errstr, errlen, err, "out of memory cutting a block");
        found = kw__builder_lookup(&gen->b, rec, &r, &extra);
    }
    if (gen->b.nrecords > 0 &&
        (gen->b.nrecords == UINT32_MAX ||
         kw__builder_size(&gen->b) + size + (found ? 0 : extra) > gen->cfg.max_bytes)) {
        err = gen_cut(gen, CUT_SIZE);
        if (err != KW_OK)
            return kw_seterr(errstr, errlen, err, "out of memory cutting a block");
    }
    err = kw__builder_add(&gen->b, rec, size, errstr, errlen);
    if (err != KW_OK) {
        if (err == KW_ENOMEM)
            kw_seterr(errstr, errlen, err, "out of memory adding a record");
        return err;
    }
    gen->stats.records++;
    if (gen->cfg.max_rate > 0)
        gen->tokens -= 1000;
    /* A block at max_bytes is complete. Should this cut fail (KW_ENOMEM), the
     * record is in the block all the same and the next add or tick cuts. */
    if (kw__builder_size(&gen->b) >= gen->cfg.max_bytes)
        (void)gen_cut(gen, CUT_SIZE);
    return KW_OK;
}

kw_err_t kw_blockgen_tick(kw_blockgen_t *gen, int64_t now_ms)
{
    int64_t end;
    kw_err_t err;

    if (!gen->anchored) {
        gen->anchored = 1;
        gen->interval_start = now_ms;
        return KW_OK;
    }
    end = gen->interval_start + gen->cfg.interval_ms;
    if (now_ms < end)
        return KW_OK;
    err = gen_cut(gen, CUT_INTERVAL);
    if (err != KW_OK)
        return err;             /* the interval stays over; the next tick retries */
    if (now_ms < end + gen->cfg.interval_ms)
        gen->interval_start = end;
    else
        gen->interval_start = now_ms;   /* stalled: restart the cadence */
    return KW_OK;
}

int64_t kw_blockgen_deadline(const kw_blockgen_t *gen)
{
    return gen->anchored ? gen->interval_start + gen->cfg.interval_ms : INT64_MAX;
}

kw_err_t kw_blockgen_cut(kw_blockgen_t *gen)
{
    return gen_cut(gen, CUT_EXPLICIT);
}

kw_block_t *kw_blockgen_take(kw_blockgen_t *gen)
{
    kw_block_t *blk;

    if (gen->ready_count == 0)
        return NULL;
    blk = gen->ready[gen->ready_head];
    gen->ready_head = (gen->ready_head + 1) % gen->ready_cap;
    gen->ready_count--;
    gen->ready_bytes -= kw_block_size(blk);
    return blk;
}

size_t kw_blockgen_ready(const kw_blockgen_t *gen, uint64_t *bytes)
{
    if (bytes != NULL)
        *bytes = gen->ready_bytes;
    return gen->ready_count;
}

uint32_t kw_blockgen_pending(const kw_blockgen_t *gen, uint64_t *bytes)
{
    if (bytes != NULL)
        *bytes = gen->b.nrecords ? kw__builder_size(&gen->b) : 0;
    return gen->b.nrecords;
}

int64_t kw_blockgen_rate_wait(kw_blockgen_t *gen, int64_t now_ms)
{
    int64_t rate = (int64_t)gen->cfg.max_rate, wait;

    if (rate == 0)
        return 0;
    if (!gen->rate_anchored) {
        gen->rate_anchored = 1;
        gen->rate_last = now_ms;
    } else if (now_ms > gen->rate_last) {
        int64_t elapsed = now_ms - gen->rate_last;
        /* elapsed * rate could overflow after a long pause; a full bucket is
         * all it can buy anyway. */
        if (elapsed >= (gen->capacity - gen->tokens) / rate + 1)
            gen->tokens = gen->capacity;
        else
            gen->tokens += elapsed * rate;
        if (gen->tokens > gen->capacity)
            gen->tokens = gen->capacity;
        gen->rate_last = now_ms;
    }
    if (gen->tokens >= 1000)
        return 0;
    wait = (1000 - gen->tokens + rate - 1) / rate;
    gen->stats.rate_waits++;
    return wait;
}

void kw_blockgen_stats(const kw_blockgen_t *gen, kw_blockgen_stats_t *stats)
{
    *stats = gen->stats;
}
