/* kw_hist.c -- see kw_hist.h. */
#include "kw_hist.h"

#include <string.h>

_Static_assert(KW_HIST_BUCKETS == 1888, "64 exact buckets + 57 powers x 32");

/* The largest value of bucket i (kw_hist_index's inverse, upper end). */
static int64_t bucket_upper(size_t i)
{
    unsigned shift;
    uint64_t mant;

    if (i < 2 * KW_HIST_SUB)
        return (int64_t)i;
    shift = (unsigned)(i / KW_HIST_SUB) - 1;
    mant = (uint64_t)i - (uint64_t)shift * KW_HIST_SUB;       /* 32..63 */
    return (int64_t)(((mant + 1) << shift) - 1);              /* the last: INT64_MAX */
}

int64_t kw_hist_upper(int64_t v)
{
    return bucket_upper(kw_hist_index(v));
}

/* The nearest rank of q among count values: ceil(q x count) in 1..count. A
 * product that rounding put a hair above an integer (0.07 x 100 is
 * 7.000000000000001) counts as that integer. */
static uint64_t rank_of(double q, uint64_t count)
{
    double r;
    uint64_t rank;

    if (!(q > 0))                   /* also NaN */
        return 1;
    if (q >= 1)
        return count;
    r = q * (double)count;
    rank = (uint64_t)r;
    if (r - (double)rank > r * 1e-12)
        rank++;
    if (rank < 1)
        rank = 1;
    return rank < count ? rank : count;
}

/* One bucket's count from either form. Acquire on the shared form: a count
 * seen means the maximum raised before it is seen too (kw_hist.h). */
static inline uint64_t bucket_at(const uint64_t *plain, const _Atomic uint64_t *shared,
                                 size_t i)
{
    return plain != NULL ? plain[i] : atomic_load_explicit(&shared[i], memory_order_acquire);
}

#define MAX_QUANTILES 3

/* out[j] = the quantile qs[j] (j < nq <= MAX_QUANTILES) of count values whose maximum is
 * max, walking the buckets once. With the shared form the buckets may have
 * grown since count was taken: the ranks are then reached earlier, never
 * missed. */
static void quantiles(const uint64_t *plain, const _Atomic uint64_t *shared, uint64_t count,
                      int64_t max, const double *qs, int64_t *out, size_t nq)
{
    uint64_t rank[MAX_QUANTILES], cum = 0;
    size_t left = nq;

    for (size_t j = 0; j < nq; j++) {
        out[j] = -1;
        rank[j] = count > 0 ? rank_of(qs[j], count) : 0;
        if (count == 0)
            left--;
    }
    for (size_t i = 0; i < KW_HIST_BUCKETS && left > 0; i++) {
        uint64_t c = bucket_at(plain, shared, i);

        if (c == 0)
            continue;
        cum += c;
        for (size_t j = 0; j < nq; j++)
            if (out[j] < 0 && rank[j] <= cum) {
                int64_t up = bucket_upper(i);

                out[j] = up < max ? up : max;
                left--;
            }
    }
    for (size_t j = 0; j < nq; j++)     /* not reached: counts only grow */
        if (count > 0 && out[j] < 0)
            out[j] = max;
}

/* ---- Plain ---- */

void kw_hist_local_init(kw_hist_local_t *h)
{
    memset(h, 0, sizeof(*h));
}

void kw_hist_local_merge(kw_hist_local_t *dst, const kw_hist_local_t *src)
{
    if (src->count == 0)
        return;
    for (size_t i = 0; i < KW_HIST_BUCKETS; i++)
        dst->bucket[i] += src->bucket[i];
    dst->count += src->count;
    if (src->max > dst->max)
        dst->max = src->max;
}

int64_t kw_hist_local_quantile(const kw_hist_local_t *h, double q)
{
    int64_t v;

    quantiles(h->bucket, NULL, h->count, h->max, &q, &v, 1);
    return v;
}

void kw_hist_local_summarize(const kw_hist_local_t *h, kw_hist_summary_t *s)
{
    static const double qs[3] = { 0.50, 0.90, 0.99 };
    int64_t v[3];

    quantiles(h->bucket, NULL, h->count, h->max, qs, v, 3);
    s->count = h->count;
    s->p50 = v[0];
    s->p90 = v[1];
    s->p99 = v[2];
    s->max = h->count > 0 ? h->max : -1;
}

/* ---- Shared ---- */

void kw_hist_init(kw_hist_t *h)
{
    for (size_t i = 0; i < KW_HIST_BUCKETS; i++)
        atomic_init(&h->bucket[i], 0);
    atomic_init(&h->max, 0);
}

/* Raise the maximum to at least v (before the bucket: see kw_hist.h). */
static void raise_max(kw_hist_t *h, int64_t v)
{
    int64_t cur = atomic_load_explicit(&h->max, memory_order_relaxed);

    while (v > cur && !atomic_compare_exchange_weak_explicit(&h->max, &cur, v,
                                                             memory_order_relaxed,
                                                             memory_order_relaxed))
        ;
}

void kw_hist_add(kw_hist_t *h, int64_t v, uint64_t n)
{
    if (n == 0)
        return;
    if (v < 0)
        v = 0;
    raise_max(h, v);
    atomic_fetch_add_explicit(&h->bucket[kw_hist_index(v)], n, memory_order_release);
}

void kw_hist_merge(kw_hist_t *dst, const kw_hist_local_t *src)
{
    if (src->count == 0)
        return;
    raise_max(dst, src->max);
    for (size_t i = 0; i < KW_HIST_BUCKETS; i++)
        if (src->bucket[i] != 0)
            atomic_fetch_add_explicit(&dst->bucket[i], src->bucket[i],
                                      memory_order_release);
}

uint64_t kw_hist_count(const kw_hist_t *h)
{
    uint64_t n = 0;

    for (size_t i = 0; i < KW_HIST_BUCKETS; i++)
        n += atomic_load_explicit(&h->bucket[i], memory_order_relaxed);
    return n;
}

/* The count, then the maximum (acquire loads of the buckets first: the
 * maximum read covers every count read). */
static uint64_t count_and_max(const kw_hist_t *h, int64_t *max)
{
    uint64_t n = 0;

    for (size_t i = 0; i < KW_HIST_BUCKETS; i++)
        n += atomic_load_explicit(&h->bucket[i], memory_order_acquire);
    *max = atomic_load_explicit(&h->max, memory_order_relaxed);
    return n;
}

int64_t kw_hist_max(const kw_hist_t *h)
{
    int64_t max;

    return count_and_max(h, &max) > 0 ? max : -1;
}

int64_t kw_hist_quantile(const kw_hist_t *h, double q)
{
    int64_t max, v;
    uint64_t n = count_and_max(h, &max);

    quantiles(NULL, h->bucket, n, max, &q, &v, 1);
    return v;
}

void kw_hist_summarize(const kw_hist_t *h, kw_hist_summary_t *s)
{
    static const double qs[3] = { 0.50, 0.90, 0.99 };
    int64_t max, v[3];
    uint64_t n = count_and_max(h, &max);

    quantiles(NULL, h->bucket, n, max, qs, v, 3);
    s->count = n;
    s->p50 = v[0];
    s->p90 = v[1];
    s->p99 = v[2];
    s->max = n > 0 ? max : -1;
}

void kw_hist_snapshot(const kw_hist_t *h, kw_hist_local_t *out)
{
    out->count = 0;
    for (size_t i = 0; i < KW_HIST_BUCKETS; i++) {
        out->bucket[i] = atomic_load_explicit(&h->bucket[i], memory_order_acquire);
        out->count += out->bucket[i];
    }
    out->max = atomic_load_explicit(&h->max, memory_order_relaxed);
}
