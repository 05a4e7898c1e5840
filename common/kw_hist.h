/*
 * kw_hist.h -- a histogram of non-negative int64 values (kwal's end-to-end
 * latency in milliseconds, kw_stats.h), small enough to keep one per
 * service and cheap enough to add every stored record to.
 *
 * Buckets are log-linear, HdrHistogram's layout with 32 sub-buckets:
 *
 *   values 0..63              one bucket each (exact)
 *   [2^k, 2^(k+1)), k = 6..62 32 buckets of width 2^(k-5) each
 *
 * so every non-negative int64 has a bucket (KW_HIST_BUCKETS of them, 15 KB
 * of counters) and a bucket's width is at most 1/32 of its lower bound. A
 * negative value counts as 0. A quantile is the nearest rank's bucket: rank
 * ceil(q x count) (at least 1), the bucket where the counts reach it, and
 * the answer that bucket's upper bound clamped to the largest value added
 * -- less than 1/32 (3.1 %) above the exact nearest-rank value, never below
 * it, never above the maximum, and exact below 64.
 *
 * Two forms:
 *
 *   kw_hist_t        shared: C11 atomics; any thread adds, merges and reads
 *                    at once, without a lock (TSan-clean).
 *   kw_hist_local_t  plain: one thread's (a batch's). Filled record by record
 *                    with kw_hist_local_add (inline: an index and an
 *                    increment), then added to a shared one with
 *                    kw_hist_merge -- one atomic add per bucket it touched.
 *
 * All zero bytes (calloc, memset, = {0}) is an empty histogram of either
 * form; kw_hist_init and kw_hist_local_init only say so.
 *
 * Readers of a kw_hist_t see every bucket's count as of some moment during
 * the call; a value whose bucket count is seen has its maximum seen too (the
 * maximum is raised before the bucket, with release/acquire), so a quantile
 * never exceeds kw_hist_max and p50 <= p90 <= p99 <= max within one
 * kw_hist_summarize. Counts only grow: nothing is ever subtracted.
 *
 * Library rules: no allocation, no logging, no failure.
 */
#ifndef KW_HIST_H
#define KW_HIST_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define KW_HIST_SUB_BITS 5
#define KW_HIST_SUB      (1 << KW_HIST_SUB_BITS)          /* 32 */
/* 64 exact buckets, then 32 for each of the powers 2^6 .. 2^62 */
#define KW_HIST_BUCKETS  (2 * KW_HIST_SUB + (63 - KW_HIST_SUB_BITS - 1) * KW_HIST_SUB)

typedef struct kw_hist {
    _Atomic uint64_t bucket[KW_HIST_BUCKETS];
    _Atomic int64_t  max;            /* largest value added; 0 while empty */
} kw_hist_t;

typedef struct kw_hist_local {
    uint64_t bucket[KW_HIST_BUCKETS];
    uint64_t count;                  /* sum of bucket[] */
    int64_t  max;                    /* largest value added; 0 while empty */
} kw_hist_local_t;

/* count, then quantiles and maximum: -1 when count is 0. */
typedef struct kw_hist_summary {
    uint64_t count;
    int64_t  p50, p90, p99, max;
} kw_hist_summary_t;

/* ---- Buckets ---- */

/* The bucket of value v (< 0: that of 0). */
static inline size_t kw_hist_index(int64_t v)
{
    uint64_t u = v > 0 ? (uint64_t)v : 0;
    unsigned msb, shift;

    if (u < 2 * KW_HIST_SUB)
        return (size_t)u;
#if defined(__GNUC__)
    msb = 63u - (unsigned)__builtin_clzll(u);
#else
    for (msb = 0; (u >> msb) > 1; msb++)
        ;
#endif
    shift = msb - KW_HIST_SUB_BITS;
    return (size_t)shift * KW_HIST_SUB + (size_t)(u >> shift);
}

/* The largest value in v's bucket (v itself below 64): what a quantile
 * that falls in that bucket reports, before the clamp to the maximum. */
int64_t kw_hist_upper(int64_t v);

/* ---- Plain (one thread) ---- */

/* Empty h. */
void kw_hist_local_init(kw_hist_local_t *h);

/* Add n values v (< 0 counts as 0). */
static inline void kw_hist_local_add(kw_hist_local_t *h, int64_t v, uint64_t n)
{
    if (v < 0)
        v = 0;
    h->bucket[kw_hist_index(v)] += n;
    h->count += n;
    if (v > h->max && n > 0)
        h->max = v;
}

/* dst += src. */
void kw_hist_local_merge(kw_hist_local_t *dst, const kw_hist_local_t *src);

/* Nearest-rank quantile q (0..1; outside: clamped) as above; -1 when h is
 * empty. */
int64_t kw_hist_local_quantile(const kw_hist_local_t *h, double q);

void kw_hist_local_summarize(const kw_hist_local_t *h, kw_hist_summary_t *s);

/* ---- Shared (any thread, lock-free) ---- */

/* Empty h. Not concurrently with anything else on h. */
void kw_hist_init(kw_hist_t *h);

/* Add n values v (< 0 counts as 0): two atomic operations. */
void kw_hist_add(kw_hist_t *h, int64_t v, uint64_t n);

/* dst += src: one atomic add per bucket src has counts in, nothing when
 * src is empty. src is only read (its owner's thread). */
void kw_hist_merge(kw_hist_t *dst, const kw_hist_local_t *src);

/* Values added so far (a sum over the buckets). */
uint64_t kw_hist_count(const kw_hist_t *h);

/* The largest value added; -1 when empty. */
int64_t kw_hist_max(const kw_hist_t *h);

/* Nearest-rank quantile q as kw_hist_local_quantile. */
int64_t kw_hist_quantile(const kw_hist_t *h, double q);

/* count, p50, p90, p99 and max from one reading of the buckets. */
void kw_hist_summarize(const kw_hist_t *h, kw_hist_summary_t *s);

/* A plain copy of h (for tests and for quantiles beyond the summary's). */
void kw_hist_snapshot(const kw_hist_t *h, kw_hist_local_t *out);

#endif /* KW_HIST_H */
