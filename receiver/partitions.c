/*
 * partitions.c -- the per-partition view of receiver mode that
 * kw_receiver_partitions() hands to the metrics endpoint: for every
 * partition assigned here since the start, whether a receiver owns it now,
 * the next offset stored in ZooKeeper and the high watermark its consumer
 * last saw.
 *
 * The threads that know each part write it: a receiver thread at the
 * assignment and the revoke and when it reads its consumer's watermarks
 * (consumer.c), a pipeline thread after each block's offsets are stored,
 * and a receiver thread after an end advance. One array sorted by topic and
 * partition, under parts_mu; one binary search and a few stores per call,
 * so the pipelines pay one short lock per block.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "receiver_int.h"

static int part_cmp(const kw_stats_partition_t *p, const char *topic, int32_t partition)
{
    int c = strcmp(p->topic, topic);

    if (c != 0)
        return c;
    return p->partition < partition ? -1 : p->partition > partition;
}

/* The entry of topic/partition, or NULL; *at: where it is or would go.
 * Under parts_mu. */
static kw_stats_partition_t *part_find(kw_receiver_t *svc, const char *topic,
                                       int32_t partition, size_t *at)
{
    size_t lo = 0, hi = svc->nparts;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = part_cmp(&svc->parts[mid], topic, partition);

        if (c == 0) {
            *at = mid;
            return &svc->parts[mid];
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *at = lo;
    return NULL;
}

/* The entry of topic/partition, made (not owned, nothing known) when it is
 * new; NULL when memory ran out. Under parts_mu. */
static kw_stats_partition_t *part_get(kw_receiver_t *svc, const char *topic,
                                      int32_t partition)
{
    kw_stats_partition_t *p;
    size_t at;

    if ((p = part_find(svc, topic, partition, &at)) != NULL)
        return p;
    if (svc->nparts == svc->capparts) {
        size_t ncap = svc->capparts ? svc->capparts * 2 : 16;
        kw_stats_partition_t *n = realloc(svc->parts, ncap * sizeof(*n));

        if (n == NULL)
            return NULL;
        svc->parts = n;
        svc->capparts = ncap;
    }
    memmove(&svc->parts[at + 1], &svc->parts[at], (svc->nparts - at) * sizeof(*p));
    svc->nparts++;
    p = &svc->parts[at];
    memset(p, 0, sizeof(*p));
    snprintf(p->topic, sizeof(p->topic), "%s", topic);
    p->partition = partition;
    p->position = -1;
    p->high = -1;
    return p;
}

void kw_rcv_part_assigned(kw_receiver_t *svc, const char *topic, int32_t partition,
                          int64_t stored)
{
    kw_stats_partition_t *p;

    pthread_mutex_lock(&svc->parts_mu);
    if ((p = part_get(svc, topic, partition)) != NULL) {
        p->owned = 1;
        p->position = stored >= 0 ? stored : -1;
        p->high = -1;
    }
    pthread_mutex_unlock(&svc->parts_mu);
}

void kw_rcv_part_revoked(kw_receiver_t *svc, const char *topic, int32_t partition)
{
    kw_stats_partition_t *p;
    size_t at;

    pthread_mutex_lock(&svc->parts_mu);
    if ((p = part_find(svc, topic, partition, &at)) != NULL) {
        p->owned = 0;
        p->position = -1;       /* the next owner's to tell */
        p->high = -1;
    }
    pthread_mutex_unlock(&svc->parts_mu);
}

void kw_rcv_part_stored(kw_receiver_t *svc, const char *topic, int32_t partition,
                        int64_t next)
{
    kw_stats_partition_t *p;
    size_t at;

    pthread_mutex_lock(&svc->parts_mu);
    if ((p = part_find(svc, topic, partition, &at)) != NULL && p->owned &&
        next > p->position)
        p->position = next;
    pthread_mutex_unlock(&svc->parts_mu);
}

void kw_rcv_part_high(kw_receiver_t *svc, const char *topic, int32_t partition,
                      int64_t high)
{
    kw_stats_partition_t *p;
    size_t at;

    pthread_mutex_lock(&svc->parts_mu);
    if ((p = part_find(svc, topic, partition, &at)) != NULL && p->owned)
        p->high = high;
    pthread_mutex_unlock(&svc->parts_mu);
}

size_t kw_receiver_partitions(kw_receiver_t *svc, kw_stats_partition_t *out, size_t nmax)
{
    size_t n;

    pthread_mutex_lock(&svc->parts_mu);
    n = svc->nparts;
    if (n > 0 && nmax > 0)
        memcpy(out, svc->parts, (n < nmax ? n : nmax) * sizeof(*out));
    pthread_mutex_unlock(&svc->parts_mu);
    return n;
}
