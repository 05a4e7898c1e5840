/*
 * direct.c -- direct mode (direct.h): one thread, one batch at a time.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "direct.h"

#include <errno.h>
#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "blockgen.h"
#include "kw_fault.h"
#include "kw_log.h"
#include "kw_time.h"
#include "sink.h"
#include "source.h"
#include "zk.h"

#define MOD "direct"

/* A batch stops reading at batch.max.bytes (invariant 5), each record
 * weighed as its key and payload plus KW_CONF_RECORD_OVERHEAD; the ranges
 * end at what was read, and the next batch starts at once. */
/* A batch reads for at least this long before it cuts ranges short. */
#define DIRECT_MIN_READ_MS 10000
/* Records a partition returned past its range are kept for the next batch
 * (so its position holds without a seek); above this many bytes the
 * partition is paused instead of buffering more (librdkafka then resumes it
 * right after the last record returned). */
#define DIRECT_MAX_CARRY_BYTES (8u << 20)
#define METADATA_TIMEOUT_MS 10000
#define METADATA_EVERY_MS 5000          /* new partitions are seen this late */
#define WATERMARK_TIMEOUT_MS 5000
/* Partitions in one ZooKeeper multi (commit_zk) */
#define DIRECT_ZK_MULTI_MAX 1000

/* ---- Pure parts ---- */

int64_t kw_direct_max_records(int64_t rate, int64_t interval_ms)
{
    int64_t n;

    if (rate <= 0)
        return 0;
    n = rate * interval_ms / 1000;
    return n > 0 ? n : 1;
}

int kw_direct_plan_range(int64_t next, int64_t start, int64_t low, int64_t high,
                         int policy, int64_t max_records, kw_direct_plan_t *plan)
{
    int64_t from = next >= 0 ? next : start;

    memset(plan, 0, sizeof(*plan));
    if (from < 0) {
        /* never read: auto.offset.reset */
        int64_t r = kw_source_reset_offset(policy);

        if (r == KW_SOURCE_OFFSET_BEGINNING)
            from = low;
        else if (r == KW_SOURCE_OFFSET_END)
            from = high;
        else
            return -1;
    } else if (from < low || from > high) {
        int64_t seek_to;

        if (kw_source_out_of_range(from, low, high, policy, &plan->lost_from,
                                     &plan->lost_until, &seek_to) != 0)
            return -1;
        from = seek_to;
    }
    plan->from = from;
    plan->until = high;
    if (max_records > 0 && high - from > max_records)
        plan->until = from + max_records;
    return 0;
}

kw_err_t kw_direct_start_offset(const kw_conf_list_t *items, const char *topic,
                                int32_t partition, int64_t *offset,
                                char *errstr, size_t errlen)
{
    *offset = -1;
    for (int i = 0; i < items->count; i++) {
        const char *it = items->items[i], *c2 = strrchr(it, ':'), *c1;
        char *end;
        long long p, o;

        for (c1 = c2 != NULL && c2 > it ? c2 - 1 : NULL; c1 != NULL && c1 > it && *c1 != ':';)
            c1--;
        if (c2 == NULL || c1 == NULL || c1 == it || *c1 != ':')
            return kw_seterr(errstr, errlen, KW_ECONFIG, "direct.start.offsets: '%s' is "
                             "not topic:partition:offset", it);
        errno = 0;
        p = strtoll(c1 + 1, &end, 10);
        if (errno != 0 || end != c2 || c1 + 1 == c2 || p < 0 || p > INT32_MAX)
            return kw_seterr(errstr, errlen, KW_ECONFIG, "direct.start.offsets: '%s': "
                             "bad partition", it);
        o = strtoll(c2 + 1, &end, 10);
        if (errno != 0 || *end != '\0' || c2[1] == '\0' || o < 0)
            return kw_seterr(errstr, errlen, KW_ECONFIG, "direct.start.offsets: '%s': "
                             "bad offset", it);
        if ((size_t)(c1 - it) == strlen(topic) && strncmp(it, topic, strlen(topic)) == 0 &&
            p == partition)
            *offset = o;
    }
    return KW_OK;
}

static int str_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* A partition and its index in the caller's array, sorted without a
 * global (qsort has no context argument). */
typedef struct tp_ref {
    const kw_direct_tp_t *tp;
    size_t                idx;
} tp_ref_t;

static int tp_cmp(const void *a, const void *b)
{
    const kw_direct_tp_t *x = ((const tp_ref_t *)a)->tp, *y = ((const tp_ref_t *)b)->tp;
    int c = strcmp(x->topic, y->topic);

    return c != 0 ? c : (x->partition > y->partition) - (x->partition < y->partition);
}

int kw_direct_assign(int strategy, const char *const *members, size_t nmembers,
                     const char *self, const kw_direct_tp_t *parts, size_t nparts,
                     unsigned char *mine)
{
    const char **m = malloc((nmembers ? nmembers : 1) * sizeof(*m));
    tp_ref_t *order = malloc((nparts ? nparts : 1) * sizeof(*order));
    size_t me = nmembers, count = 0;

    memset(mine, 0, nparts);
    if (m == NULL || order == NULL) {
        free(m);
        free(order);
        return -1;
    }
    memcpy(m, members, nmembers * sizeof(*m));
    qsort(m, nmembers, sizeof(*m), str_cmp);
    for (size_t i = 0; i < nmembers && me == nmembers; i++)
        if (strcmp(m[i], self) == 0)
            me = i;
    free(m);
    if (me == nmembers) {
        free(order);
        return -1;
    }
    for (size_t i = 0; i < nparts; i++) {
        order[i].tp = &parts[i];
        order[i].idx = i;
    }
    qsort(order, nparts, sizeof(*order), tp_cmp);
    if (strategy == KW_ASSIGN_RANGE) {
        for (size_t t = 0; t < nparts;) {       /* one run per topic */
            size_t end = t, per, extra, first, len;

            while (end < nparts && strcmp(order[end].tp->topic, order[t].tp->topic) == 0)
                end++;
            per = (end - t) / nmembers;
            extra = (end - t) % nmembers;
            first = t + me * per + (me < extra ? me : extra);
            len = per + (me < extra);
            for (size_t k = first; k < first + len; k++)
                mine[order[k].idx] = 1;
            count += len;
            t = end;
        }
    } else {
        for (size_t k = me; k < nparts; k += nmembers) {
            mine[order[k].idx] = 1;
            count++;
        }
    }
    free(order);
    return (int)count;
}

void kw_direct_pid_init(kw_direct_pid_t *e, double min_rate)
{
    memset(e, 0, sizeof(*e));
    e->p = 1.0;
    e->i = 0.2;
    e->d = 0.0;
    e->min_rate = min_rate;
}

double kw_direct_pid_update(kw_direct_pid_t *e, int64_t now_ms, uint64_t n,
                            int64_t processing_ms, int64_t scheduling_delay_ms,
                            int64_t interval_ms)
{
    double proc_rate, error, backlog, derror, dt, next;

    if (n == 0 || processing_ms <= 0 || interval_ms <= 0)
        return e->rate;
    proc_rate = (double)n * 1000.0 / (double)processing_ms;
    if (e->rate <= 0) {
        e->rate = proc_rate > e->min_rate ? proc_rate : e->min_rate;
        e->last_error = 0;
        e->last_ms = now_ms;
        return e->rate;
    }
    dt = now_ms > e->last_ms ? (double)(now_ms - e->last_ms) / 1000.0
                             : (double)interval_ms / 1000.0;
    error = e->rate - proc_rate;
    backlog = (double)(scheduling_delay_ms > 0 ? scheduling_delay_ms : 0) * proc_rate /
              (double)interval_ms;
    derror = (error - e->last_error) / dt;
    next = e->rate - e->p * error - e->i * backlog - e->d * derror;
    e->rate = next > e->min_rate ? next : e->min_rate;
    e->last_error = error;
    e->last_ms = now_ms;
    return e->rate;
}

/* ---- The service ---- */

typedef struct dpart {
    char    *topic;
    int32_t  partition;
    int      owned;
    int      mine;          /* this instance's in the group's assignment */
    int      assigned;      /* in the consumer's assignment */
    int      paused;        /* paused in the consumer (records kept in carry) */
    int      pos_ok;        /* the consumer goes on exactly at pos_next */
    int      need_query;    /* ask the broker for the watermarks */
    int64_t  pos_next;
    rd_kafka_message_t **carry;   /* returned past the range, for the next batch */
    size_t   ncarry, capcarry, carry_bytes;
    int      busy_logged;
    int64_t  next;          /* next offset to read; -1: not known yet */
    int64_t  stored;        /* where its ranges in the sink end, as this
                             * instance knows it (-1: none): the fence of
                             * kw_sink_txn_put_range */
    /* this batch */
    int      active;
    int      done;
    int64_t  from, until, read_until;
} dpart_t;

struct kw_direct {
    const kw_conf_t    *conf;
    int                 at_least_once;
    kw_sink_t          *sink;           /* the output (exactly-once: and the ranges) */
    kw_zk_t            *zk;
    int                 zk_borrowed;     /* kw_direct_options_t.zk: not ours to close */
    int                 inherited_done;  /* kw_zk_release_inherited ran */
    rd_kafka_t         *rk;
    dpart_t            *parts;
    size_t              nparts, capparts;
    size_t              last_part;      /* msg_part's guess (an index) */
    uint64_t            last_batch;
    int                 cut;           /* the last batch stopped at batch.max.bytes */
    atomic_int          stop;
    int64_t             zk_pending_since; /* ZooKeeper behind the sink since (ms) */
    kw_direct_pid_t     pid;            /* backpressure.enabled */
    int64_t             metadata_ms;    /* last partition refresh */
    size_t              nmine;          /* partitions the assignment gives us */
    size_t              nmembers;       /* instances it was computed over */
    /* this batch's records */
    rd_kafka_message_t **msgs;
    size_t              nmsgs, capmsgs;
    kw_record_t        *recs;
    kw_record_header_t *hdrs;
    size_t              caprecs, nhdrs, caphdrs;
    struct {
        atomic_uint_fast64_t batches, delivered, stored, dups, partitions, busy,
                             short_reads, zk_failures, loss_events, loss_records,
                             owner_changes, members, fenced;
        _Atomic int64_t      first_stored_mono_ms;   /* 0: nothing stored yet */
        _Atomic int64_t      first_owned_mono_ms;    /* 0: no partition owned yet */
    } n;
    kw_hist_t           latency;        /* of the records stored; any thread reads */
    kw_hist_t           batch_ms;       /* duration of the batches that stored */
    kw_hist_local_t     batch_latency;  /* this batch's, merged into latency */
    pthread_mutex_t     snap_mu;        /* guards snap: kw_direct_partitions */
    kw_stats_partition_t *snap;
    size_t              nsnap, capsnap;
};

static int carry_push(dpart_t *p, rd_kafka_message_t *m)
{
    if (p->ncarry == p->capcarry) {
        size_t cap = p->capcarry ? p->capcarry * 2 : 8;
        rd_kafka_message_t **n = realloc(p->carry, cap * sizeof(*n));

        if (n == NULL)
            return -1;
        p->carry = n;
        p->capcarry = cap;
    }
    p->carry[p->ncarry++] = m;
    p->carry_bytes += m->len + m->key_len;
    return 0;
}

static void carry_drop(dpart_t *p)
{
    for (size_t i = 0; i < p->ncarry; i++)
        rd_kafka_message_destroy(p->carry[i]);
    free(p->carry);
    p->carry = NULL;
    p->ncarry = p->capcarry = 0;
    p->carry_bytes = 0;
}

static dpart_t *part_find(kw_direct_t *d, const char *topic, int32_t partition)
{
    for (size_t i = 0; i < d->nparts; i++)
        if (d->parts[i].partition == partition && strcmp(d->parts[i].topic, topic) == 0)
            return &d->parts[i];
    return NULL;
}

/* The partition of a message: per record, so the last one found is tried
 * first (a fetch returns runs of one partition) before the search. */
static dpart_t *msg_part(kw_direct_t *d, const rd_kafka_message_t *m)
{
    const char *topic = rd_kafka_topic_name(m->rkt);
    dpart_t *p;

    if (d->last_part < d->nparts) {
        p = &d->parts[d->last_part];
        if (p->partition == m->partition && strcmp(p->topic, topic) == 0)
            return p;
    }
    p = part_find(d, topic, m->partition);
    if (p != NULL)
        d->last_part = (size_t)(p - d->parts);
    return p;
}

static dpart_t *part_add(kw_direct_t *d, const char *topic, int32_t partition)
{
    dpart_t *p;

    if (d->nparts == d->capparts) {
        size_t cap = d->capparts ? d->capparts * 2 : 16;
        dpart_t *np = realloc(d->parts, cap * sizeof(*np));

        if (np == NULL)
            return NULL;
        d->parts = np;
        d->capparts = cap;
    }
    p = &d->parts[d->nparts];
    memset(p, 0, sizeof(*p));
    if ((p->topic = strdup(topic)) == NULL)
        return NULL;
    p->partition = partition;
    p->next = -1;
    p->stored = -1;
    d->nparts++;
    KW_LOG_I(MOD, "partition %s/%d found", topic, (int)partition);
    return p;
}

kw_err_t kw_direct_check_conf(const kw_conf_t *conf, char *errstr, size_t errlen)
{
    const kw_conf_receiver_t *rc = &conf->receiver;
    int64_t off;

    if (rc->group_id == NULL || rc->group_id[0] == '\0')
        return kw_seterr(errstr, errlen, KW_ECONFIG, "group.id: required by kwal direct");
    if (rc->topics.count == 0)
        return kw_seterr(errstr, errlen, KW_ECONFIG, "topics: required by kwal direct");
    for (int i = 0; i < rc->topics.count; i++)
        if (rc->topics.items[i][0] == '^')
            return kw_seterr(errstr, errlen, KW_ECONFIG, "topics: '%s': kwal direct takes "
                             "topic names, not patterns", rc->topics.items[i]);
    /* checks every item */
    return kw_direct_start_offset(&rc->direct_start, "", 0, &off, errstr, errlen);
}

kw_err_t kw_direct_new(const kw_direct_options_t *o, kw_direct_t **out,
                       char *errstr, size_t errlen)
{
    const kw_conf_t *conf = o->conf;
    const kw_conf_receiver_t *rc = &conf->receiver;
    kw_zk_options_t zopts;
    rd_kafka_conf_t *kc = NULL;
    kw_direct_t *d;
    char why[512];
    static const char *const eof_on[] = { "enable.partition.eof", "true", NULL };
    kw_err_t err;

    *out = NULL;
    if ((err = kw_direct_check_conf(conf, errstr, errlen)) != KW_OK)
        return err;
    if ((d = calloc(1, sizeof(*d))) == NULL)
        return kw_seterr(errstr, errlen, KW_ENOMEM, "out of memory");
    d->conf = conf;
    d->at_least_once = o->at_least_once;
    kw_hist_init(&d->latency);
    kw_hist_init(&d->batch_ms);
    pthread_mutex_init(&d->snap_mu, NULL);
    kw_direct_pid_init(&d->pid, (double)rc->backpressure_min_rate);

    {   /* the instance name, for the sinks that use one (the kafka sink's
         * transactional ids in direct mode are the partitions', not ours) */
        kw_sink_options_t so;

        kw_sink_options_from_conf(&so, conf, rc->instance_id != NULL &&
                                  rc->instance_id[0] != '\0' ? rc->instance_id :
                                  o->zk != NULL ? kw_zk_instance(o->zk) : "direct", 1);
        err = kw_sink_open_opts(rc->sink, &so, &d->sink, errstr, errlen);
    }
    if (err != KW_OK)
        goto fail;
    if (!d->at_least_once) {
        if (!kw_sink_ranges_supported(d->sink)) {
            err = kw_seterr(errstr, errlen, KW_ECONFIG, "sink=%s: kwal direct stores its "
                            "offset ranges in the sink's transaction and needs "
                            "sink=sqlite:PATH, postgresql:CONNINFO or kafka:TOPIC "
                            "(--at-least-once takes any sink)", rc->sink);
            goto fail;
        }
        if ((err = kw_sink_ranges_last_batch(d->sink, &d->last_batch, errstr,
                                             errlen)) != KW_OK)
            goto fail;
    }

    if (o->zk != NULL) {
        d->zk = o->zk;
        d->zk_borrowed = 1;
    } else {
        kw_zk_options_from_conf(&zopts, conf);
        if ((err = kw_zk_new(&zopts, &d->zk, errstr, errlen)) != KW_OK ||
            (err = kw_zk_register(d->zk, errstr, errlen)) != KW_OK)
            goto fail;
    }

    /* a cluster that refuses us (TLS, SASL) stops the start; one that is
     * down is waited for, as when it goes away later */
    err = kw_source_probe(conf, KW_SOURCE_PROBE_MS, errstr, errlen);
    if (err == KW_EAUTH)
        goto fail;
    if (err != KW_OK)
        KW_LOG_W(MOD, "%s; starting anyway, batches wait for it", errstr);
    /* assigned, never subscribed: the group is not joined, nothing committed */
    if ((err = kw_source_consumer_conf(conf, rc->group_id, eof_on, &kc, errstr, errlen)) !=
        KW_OK)
        goto fail;
    d->rk = rd_kafka_new(RD_KAFKA_CONSUMER, kc, why, sizeof(why));
    if (d->rk == NULL) {
        err = kw_seterr(errstr, errlen, KW_EIO, "creating the Kafka client: %s", why);
        goto fail;
    }
    kc = NULL;
    rd_kafka_poll_set_consumer(d->rk);
    *out = d;
    return KW_OK;

fail:
    if (kc != NULL)
        rd_kafka_conf_destroy(kc);
    kw_direct_destroy(d);
    return err;
}

void kw_direct_stop(kw_direct_t *d)
{
    atomic_store(&d->stop, 1);
}

void kw_direct_stats(kw_direct_t *d, kw_direct_stats_t *s)
{
    s->batches = atomic_load(&d->n.batches);
    s->records_delivered = atomic_load(&d->n.delivered);
    s->records_stored = atomic_load(&d->n.stored);
    s->duplicates_delivered = atomic_load(&d->n.dups);
    s->partitions = atomic_load(&d->n.partitions);
    s->partitions_busy = atomic_load(&d->n.busy);
    s->short_reads = atomic_load(&d->n.short_reads);
    s->zk_failures = atomic_load(&d->n.zk_failures);
    s->source_loss_events = atomic_load(&d->n.loss_events);
    s->source_loss_records = atomic_load(&d->n.loss_records);
    s->first_stored_mono_ms = atomic_load(&d->n.first_stored_mono_ms);
    s->first_owned_mono_ms = atomic_load(&d->n.first_owned_mono_ms);
    s->owner_changes = atomic_load(&d->n.owner_changes);
    s->members = atomic_load(&d->n.members);
    s->batches_fenced = atomic_load(&d->n.fenced);
    kw_hist_summarize(&d->latency, &s->latency);
    kw_hist_summarize(&d->batch_ms, &s->batch_ms);
    s->zk_writes = 0;
    if (d->zk != NULL) {
        kw_zk_status_t zs;

        kw_zk_status(d->zk, &zs);
        s->zk_writes = zs.commits;
    }
}

size_t kw_direct_partitions(kw_direct_t *d, kw_stats_partition_t *out, size_t nmax)
{
    size_t n;

    pthread_mutex_lock(&d->snap_mu);
    n = d->nsnap;
    if (n > 0 && nmax > 0)      /* d->snap is NULL before the first batch */
        memcpy(out, d->snap, (n < nmax ? n : nmax) * sizeof(*out));
    pthread_mutex_unlock(&d->snap_mu);
    return n;
}

/* After each batch: what kw_direct_partitions shows. */
static void snapshot(kw_direct_t *d)
{
    pthread_mutex_lock(&d->snap_mu);
    if (d->capsnap < d->nparts) {
        kw_stats_partition_t *n = realloc(d->snap, d->nparts * sizeof(*n));

        if (n == NULL) {
            pthread_mutex_unlock(&d->snap_mu);
            return;         /* the last snapshot stays */
        }
        d->snap = n;
        d->capsnap = d->nparts;
    }
    for (size_t i = 0; i < d->nparts; i++) {
        const dpart_t *p = &d->parts[i];
        kw_stats_partition_t *o = &d->snap[i];
        int64_t low, high;

        snprintf(o->topic, sizeof(o->topic), "%s", p->topic);
        o->partition = p->partition;
        o->owned = p->owned;
        o->position = p->owned ? p->next : -1;
        o->high = -1;
        if (p->owned && rd_kafka_get_watermark_offsets(d->rk, p->topic, p->partition, &low,
                                                       &high) == RD_KAFKA_RESP_ERR_NO_ERROR &&
            high >= 0)
            o->high = high;
    }
    d->nsnap = d->nparts;
    pthread_mutex_unlock(&d->snap_mu);
}

static void free_msgs(kw_direct_t *d)
{
    for (size_t i = 0; i < d->nmsgs; i++)
        rd_kafka_message_destroy(d->msgs[i]);
    d->nmsgs = 0;
    d->nhdrs = 0;
}

void kw_direct_destroy(kw_direct_t *d)
{
    if (d == NULL)
        return;
    free_msgs(d);
    for (size_t i = 0; i < d->nparts; i++)
        carry_drop(&d->parts[i]);
    if (d->rk != NULL) {
        rd_kafka_consumer_close(d->rk);
        rd_kafka_destroy(d->rk);
    }
    for (size_t i = 0; i < d->nparts; i++) {
        if (d->parts[i].owned && d->zk != NULL)
            kw_zk_disown(d->zk, d->parts[i].topic, d->parts[i].partition, NULL, 0);
        free(d->parts[i].topic);
    }
    if (!d->zk_borrowed)
        kw_zk_destroy(d->zk);
    kw_sink_close(d->sink);
    free(d->parts);
    free(d->msgs);
    free(d->recs);
    free(d->hdrs);
    free(d->snap);
    pthread_mutex_destroy(&d->snap_mu);
    free(d);
}

/* Step 1: the partitions of every topic (new ones are added). 0, or -1 when
 * metadata cannot be read (the batch is skipped, not fatal). */
static int refresh_partitions(kw_direct_t *d)
{
    const kw_conf_list_t *topics = &d->conf->receiver.topics;

    for (int i = 0; i < topics->count; i++) {
        const struct rd_kafka_metadata *md = NULL;
        rd_kafka_topic_t *rkt = rd_kafka_topic_new(d->rk, topics->items[i], NULL);
        rd_kafka_resp_err_t err;

        if (rkt == NULL)
            return -1;
        err = rd_kafka_metadata(d->rk, 0, rkt, &md, METADATA_TIMEOUT_MS);
        rd_kafka_topic_destroy(rkt);
        if (err != RD_KAFKA_RESP_ERR_NO_ERROR || md->topic_cnt != 1 ||
            md->topics[0].err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            KW_LOG_W(MOD, "metadata of topic %s: %s; retrying at the next batch",
                     topics->items[i], err != RD_KAFKA_RESP_ERR_NO_ERROR
                     ? rd_kafka_err2str(err)
                     : md->topic_cnt == 1 ? rd_kafka_err2str(md->topics[0].err)
                     : "no such topic");
            if (md != NULL)
                rd_kafka_metadata_destroy(md);
            return -1;
        }
        for (int p = 0; p < md->topics[0].partition_cnt; p++) {
            int32_t id = md->topics[0].partitions[p].id;

            if (part_find(d, topics->items[i], id) == NULL &&
                part_add(d, topics->items[i], id) == NULL) {
                rd_kafka_metadata_destroy(md);
                return -2;
            }
        }
        rd_kafka_metadata_destroy(md);
    }
    return 0;
}

/* Own p in ZooKeeper (without waiting). 1 owned, 0 busy or unreachable. */
static int own(kw_direct_t *d, dpart_t *p)
{
    char why[512];
    kw_err_t err;

    if (p->owned)
        return 1;
    err = kw_zk_own(d->zk, p->topic, p->partition, 0, why, sizeof(why));
    if (err == KW_OK) {
        if (p->busy_logged)
            KW_LOG_I(MOD, "%s/%d: free again, read by this instance now", p->topic,
                     (int)p->partition);
        p->owned = 1;
        p->busy_logged = 0;
        atomic_fetch_add(&d->n.owner_changes, 1);
        if (atomic_load(&d->n.first_owned_mono_ms) == 0)
            atomic_store(&d->n.first_owned_mono_ms, kw_mono_ms());
        /* its ZooKeeper offset may lag the ranges stored (a crash after the
         * sink commit): bring it up with the next commit, moved or not */
        if (!d->at_least_once && d->zk_pending_since == 0)
            d->zk_pending_since = kw_mono_ms();
        return 1;
    }
    atomic_fetch_add(&d->n.busy, 1);
    if (!p->busy_logged) {
        KW_LOG_I(MOD, "%s/%d not read for now: %s", p->topic, (int)p->partition, why);
        p->busy_logged = 1;
    }
    return 0;
}

/* Where p goes on: the ranges stored with the output (exactly-once) or
 * ZooKeeper (at-least-once); -1 never read. */
static kw_err_t stored_next(kw_direct_t *d, dpart_t *p, char *errstr, size_t errlen)
{
    if (p->next >= 0)
        return KW_OK;
    if (!d->at_least_once) {
        kw_err_t err = kw_sink_range_next(d->sink, p->topic, p->partition, &p->next, errstr,
                                          errlen);

        p->stored = p->next;
        return err;
    }
    {
        char why[512];
        kw_err_t err = kw_zk_get_offset(d->zk, p->topic, p->partition, &p->next, why,
                                        sizeof(why));

        if (err == KW_ENOTFOUND) {
            p->next = -1;
            return KW_OK;
        }
        if (err != KW_OK)
            return kw_seterr(errstr, errlen, err, "ZooKeeper offset of %s/%d: %s",
                             p->topic, (int)p->partition, why);
    }
    return KW_OK;
}

/* The consumer's position in p when it is past high (the cached high
 * watermark lags when the fetches after it returned no record: a marker, an
 * aborted transaction); else high. */
static int64_t position_past(kw_direct_t *d, dpart_t *p, int64_t high)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    int64_t pos = -1;

    rd_kafka_topic_partition_list_add(l, p->topic, p->partition);
    if (rd_kafka_position(d->rk, l) == RD_KAFKA_RESP_ERR_NO_ERROR &&
        l->elems[0].err == RD_KAFKA_RESP_ERR_NO_ERROR)
        pos = l->elems[0].offset;
    rd_kafka_topic_partition_list_destroy(l);
    return pos > high ? pos : high;
}

/* Step 2 for every owned partition. KW_OK, KW_EOF when nothing is to be
 * read, else fatal (errstr). */
static kw_err_t plan_batch(kw_direct_t *d, char *errstr, size_t errlen)
{
    const kw_conf_receiver_t *rc = &d->conf->receiver;
    int64_t max = kw_direct_max_records(rc->max_rate_per_partition, rc->batch_interval_ms);
    int any = 0;
    uint64_t nread = 0, nowned = 0;

    for (size_t i = 0; i < d->nparts; i++)
        nowned += d->parts[i].owned;
    if (rc->backpressure && d->pid.rate > 0 && nowned > 0) {
        /* the estimate, spread evenly, within max.rate.per.partition */
        int64_t bp = kw_direct_max_records((int64_t)(d->pid.rate / (double)nowned) > 0
                                           ? (int64_t)(d->pid.rate / (double)nowned) : 1,
                                           rc->batch_interval_ms);

        if (max == 0 || bp < max)
            max = bp;
    }

    for (size_t i = 0; i < d->nparts; i++) {
        dpart_t *p = &d->parts[i];
        kw_direct_plan_t plan;
        int64_t low = 0, high = 0, start = -1;
        rd_kafka_resp_err_t kerr;
        kw_err_t err;

        p->active = p->done = 0;
        if (!p->mine || !own(d, p))
            continue;
        if ((err = stored_next(d, p, errstr, errlen)) != KW_OK)
            return err;
        /* the watermarks the consumer's own fetches keep up to date; asked
         * of the broker (a round trip) only for a partition not fetched yet,
         * one starting anew, or after a read error */
        kerr = RD_KAFKA_RESP_ERR_NO_ERROR;
        if (p->need_query || p->next < 0 ||
            rd_kafka_get_watermark_offsets(d->rk, p->topic, p->partition, &low, &high) !=
                RD_KAFKA_RESP_ERR_NO_ERROR || high < 0 || high < p->next) {
            kerr = rd_kafka_query_watermark_offsets(d->rk, p->topic, p->partition, &low,
                                                    &high, WATERMARK_TIMEOUT_MS);
            p->need_query = kerr != RD_KAFKA_RESP_ERR_NO_ERROR;
        } else if (low < 0) {
            low = 0;        /* not known here: a read past it reports the loss */
        }
        if (kerr != RD_KAFKA_RESP_ERR_NO_ERROR) {
            KW_LOG_W(MOD, "%s/%d: watermarks: %s; not read in this batch", p->topic,
                     (int)p->partition, rd_kafka_err2str(kerr));
            continue;
        }
        if (high <= p->next && p->pos_ok && p->assigned)
            high = position_past(d, p, high);
        if (p->next < 0 &&
            (err = kw_direct_start_offset(&rc->direct_start, p->topic, p->partition,
                                          &start, errstr, errlen)) != KW_OK)
            return err;
        if (kw_direct_plan_range(p->next, start, low, high, rc->auto_offset_reset, max,
                                 &plan) != 0)
            return kw_seterr(errstr, errlen, KW_ECONFIG, "%s/%d: %s (Kafka has %" PRId64
                             "..%" PRId64 ") and auto.offset.reset=error", p->topic,
                             (int)p->partition, p->next >= 0 || start >= 0
                             ? "the offset to go on from is no longer in Kafka"
                             : "no offset is stored", low, high);
        if (plan.lost_until > plan.lost_from) {
            atomic_fetch_add(&d->n.loss_events, 1);
            atomic_fetch_add(&d->n.loss_records, (uint64_t)(plan.lost_until - plan.lost_from));
            KW_LOG_E(MOD, "data loss at the source: %s/%d offsets %" PRId64 "..%" PRId64
                     " no longer in Kafka", p->topic, (int)p->partition, plan.lost_from,
                     plan.lost_until - 1);
        } else if (p->next >= 0 && plan.from != p->next) {
            atomic_fetch_add(&d->n.loss_events, 1);
            KW_LOG_E(MOD, "%s/%d: offset %" PRId64 " out of range (Kafka has %" PRId64
                     "..%" PRId64 "); going on at %" PRId64, p->topic, (int)p->partition,
                     p->next, low, high, plan.from);
        }
        if (p->next < 0 || plan.from != p->next)
            KW_LOG_I(MOD, "%s/%d starts at offset %" PRId64, p->topic, (int)p->partition,
                     plan.from);
        p->next = plan.from;
        p->from = plan.from;
        p->until = plan.until;
        p->read_until = plan.from;
        p->active = 1;
        p->done = plan.until <= plan.from;
        any |= !p->done;
        nread++;
    }
    atomic_store(&d->n.partitions, nread);
    if (!d->inherited_done) {
        /* every partition had its chance to take its node back: the rest of
         * what a resumed session inherited goes to whoever wants it */
        kw_zk_release_inherited(d->zk);
        d->inherited_done = 1;
    }
    return any ? KW_OK : KW_EOF;
}

static int keep_msg(kw_direct_t *d, rd_kafka_message_t *m)
{
    if (d->nmsgs == d->capmsgs) {
        size_t cap = d->capmsgs ? d->capmsgs * 2 : 1024;
        rd_kafka_message_t **nm = realloc(d->msgs, cap * sizeof(*nm));

        if (nm == NULL)
            return -1;
        d->msgs = nm;
        d->capmsgs = cap;
    }
    d->msgs[d->nmsgs++] = m;
    return 0;
}

/*
 * The consumer between batches. The assignment (every owned partition)
 * changes only when that set changes: re-assigning at every batch races
 * librdkafka's fetcher teardown (an assertion in its assignment code on
 * close). Within it a partition's position is kept when it can be: nothing
 * the consumer returned is ever dropped -- records at or past a range's
 * until are kept (carry; past DIRECT_MAX_CARRY_BYTES the partition is
 * paused, and librdkafka resumes it right after the last record returned)
 * -- so the next batch goes on from where this one ended without a seek,
 * whose fetch restart costs a round trip or more. A partition whose position is not known (a record
 * dropped, an error, a new range start) is sought to its from: the seek's
 * version barrier drops whatever was fetched before it.
 */
static kw_err_t position(kw_direct_t *d, size_t *pending, char *errstr, size_t errlen)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new((int)d->nparts);
    rd_kafka_topic_partition_list_t *res = rd_kafka_topic_partition_list_new((int)d->nparts);
    int reassign = 0;
    kw_err_t err = KW_OK;

    for (size_t i = 0; i < d->nparts; i++)
        reassign |= d->parts[i].owned != d->parts[i].assigned;
    *pending = 0;
    for (size_t i = 0; i < d->nparts; i++) {
        dpart_t *p = &d->parts[i];
        int reading = p->active && !p->done;

        *pending += reading;
        if (reassign) {
            carry_drop(p);
            p->paused = 0;
            p->pos_ok = p->owned && p->active;
            p->pos_next = p->from;
            if (p->owned)
                rd_kafka_topic_partition_list_add(l, p->topic, p->partition)->offset =
                    p->active ? p->from : p->next >= 0 ? p->next : RD_KAFKA_OFFSET_END;
            continue;
        }
        if (!reading)
            continue;
        if (p->paused) {
            rd_kafka_topic_partition_list_add(res, p->topic, p->partition);
            p->paused = 0;
        }
        if (!p->pos_ok || p->pos_next != p->from) {
            carry_drop(p);
            rd_kafka_topic_partition_list_add(l, p->topic, p->partition)->offset = p->from;
            p->pos_ok = 1;
            p->pos_next = p->from;
        }
    }
    if (res->cnt > 0)
        rd_kafka_resume_partitions(d->rk, res);
    rd_kafka_topic_partition_list_destroy(res);
    if (reassign) {
        rd_kafka_resp_err_t kerr = rd_kafka_assign(d->rk, l);

        if (kerr != RD_KAFKA_RESP_ERR_NO_ERROR)
            err = kw_seterr(errstr, errlen, KW_EIO, "assigning partitions: %s",
                            rd_kafka_err2str(kerr));
        for (size_t i = 0; i < d->nparts && err == KW_OK; i++)
            d->parts[i].assigned = d->parts[i].owned;
    } else if (l->cnt > 0) {
        rd_kafka_error_t *e = rd_kafka_seek_partitions(d->rk, l, 10000);

        if (e != NULL) {
            err = kw_seterr(errstr, errlen, KW_EIO, "positioning the consumer: %s",
                            rd_kafka_error_string(e));
            rd_kafka_error_destroy(e);
        }
        for (int i = 0; i < l->cnt && err == KW_OK; i++)
            if (l->elems[i].err != RD_KAFKA_RESP_ERR_NO_ERROR) {
                /* not fetching yet (just assigned): assign again */
                for (size_t j = 0; j < d->nparts; j++)
                    d->parts[j].assigned = 0;
                rd_kafka_topic_partition_list_destroy(l);
                return position(d, pending, errstr, errlen);
            }
    }
    rd_kafka_topic_partition_list_destroy(l);
    return err;
}

/* Pause p: the consumer keeps its position right after what it returned. */
static void pause_part(kw_direct_t *d, dpart_t *p)
{
    rd_kafka_topic_partition_list_t *l;

    if (p->paused)
        return;
    l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, p->topic, p->partition);
    rd_kafka_pause_partitions(d->rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    p->paused = 1;
}

/* One message (or event) of partition p in this batch. KW_OK or KW_ENOMEM;
 * *pending counts the partitions still reading, *bytes what is kept. */
static kw_err_t take(kw_direct_t *d, dpart_t *p, rd_kafka_message_t *m, size_t *pending,
                     size_t *bytes)
{
    if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
        /* every offset below the partition's end was seen */
        if (!p->done && m->offset >= p->until) {
            p->read_until = p->until;
            p->done = 1;
            (*pending)--;
        }
        rd_kafka_message_destroy(m);
        return KW_OK;
    }
    if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        KW_LOG_W(MOD, "%s/%d: %s; the range ends at what was read", p->topic,
                 (int)p->partition, rd_kafka_message_errstr(m));
        if (!p->done) {
            p->done = 1;
            (*pending)--;
        }
        p->pos_ok = 0;
        p->need_query = 1;
        rd_kafka_message_destroy(m);
        return KW_OK;
    }
    if (m->offset < p->read_until) {            /* fetched before a seek */
        rd_kafka_message_destroy(m);
        return KW_OK;
    }
    if (m->offset >= p->until) {
        /* past the range: every offset before it was seen; kept for the
         * next batch, and the partition rests until then */
        if (!p->done) {
            p->read_until = p->until;
            p->done = 1;
            (*pending)--;
        }
        if (carry_push(p, m) != 0) {
            rd_kafka_message_destroy(m);
            return KW_ENOMEM;
        }
        if (p->carry_bytes > DIRECT_MAX_CARRY_BYTES)
            pause_part(d, p);
        return KW_OK;
    }
    *bytes += m->len + m->key_len + KW_CONF_RECORD_OVERHEAD;
    p->read_until = m->offset + 1;
    if (keep_msg(d, m) != 0) {
        rd_kafka_message_destroy(m);
        return KW_ENOMEM;
    }
    if (!p->done && p->read_until >= p->until) {
        p->done = 1;
        (*pending)--;
    }
    return KW_OK;
}

/*
 * Offsets that hold no record the consumer returns -- transaction markers,
 * aborted records under read_committed, offsets compaction removed -- can
 * end a range: its last offsets never come as records (Spark's direct
 * stream waited for them, SPARK-17147). librdkafka moves the application's
 * position past them as it consumes, so once the queue is empty (a poll
 * returned nothing), a partition whose position reached its until has had
 * every record below it returned: the range is complete.
 */
static void ends_by_position(kw_direct_t *d, size_t *pending)
{
    rd_kafka_topic_partition_list_t *l = NULL;

    for (size_t i = 0; i < d->nparts; i++) {
        dpart_t *p = &d->parts[i];

        if (p->active && !p->done && p->pos_ok) {
            if (l == NULL)
                l = rd_kafka_topic_partition_list_new(8);
            rd_kafka_topic_partition_list_add(l, p->topic, p->partition)->opaque = p;
        }
    }
    if (l == NULL)
        return;
    if (rd_kafka_position(d->rk, l) == RD_KAFKA_RESP_ERR_NO_ERROR)
        for (int i = 0; i < l->cnt; i++) {
            dpart_t *p = l->elems[i].opaque;

            if (l->elems[i].err == RD_KAFKA_RESP_ERR_NO_ERROR &&
                l->elems[i].offset >= p->until && p->read_until >= p->from) {
                p->read_until = p->until;
                p->done = 1;
                (*pending)--;
            }
        }
    rd_kafka_topic_partition_list_destroy(l);
}

/* Step 3. KW_OK, or fatal (errstr). */
static kw_err_t read_batch(kw_direct_t *d, char *errstr, size_t errlen)
{
    int64_t deadline, read_ms = d->conf->receiver.batch_interval_ms * 5;
    size_t pending = 0, bytes = 0;
    kw_err_t err = position(d, &pending, errstr, errlen);

    if (err != KW_OK)
        return err;
    /* what the last batch kept comes first, in order */
    for (size_t i = 0; i < d->nparts && err == KW_OK; i++) {
        dpart_t *p = &d->parts[i];
        rd_kafka_message_t **c = p->carry;
        size_t n = p->ncarry;

        if (n == 0 || !p->active || p->done)
            continue;
        p->carry = NULL;
        p->ncarry = p->capcarry = p->carry_bytes = 0;
        for (size_t k = 0; k < n; k++) {
            if (err == KW_OK)
                err = take(d, p, c[k], &pending, &bytes);
            else
                rd_kafka_message_destroy(c[k]);
        }
        free(c);
    }
    if (err != KW_OK)
        return kw_seterr(errstr, errlen, err, "out of memory");
    deadline = kw_mono_ms() + (read_ms > DIRECT_MIN_READ_MS ? read_ms : DIRECT_MIN_READ_MS);
    d->cut = 0;
    while (pending > 0 && kw_mono_ms() < deadline && !atomic_load(&d->stop)) {
        rd_kafka_message_t *m;
        dpart_t *p;

        if (bytes >= d->conf->receiver.batch_max_bytes) {
            d->cut = 1;             /* the rest goes in the next batch, at once */
            break;
        }
        m = rd_kafka_consumer_poll(d->rk, 100);
        if (m == NULL) {
            ends_by_position(d, &pending);
            continue;
        }
        p = m->rkt != NULL ? msg_part(d, m) : NULL;
        if (p == NULL || !p->active) {
            if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR && m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                KW_LOG_W(MOD, "Kafka: %s", rd_kafka_message_errstr(m));
            else if (p != NULL && m->err == RD_KAFKA_RESP_ERR_NO_ERROR)
                p->pos_ok = 0;              /* a record dropped: seek next time */
            rd_kafka_message_destroy(m);
            continue;
        }
        if ((err = take(d, p, m, &pending, &bytes)) != KW_OK)
            return kw_seterr(errstr, errlen, err, "out of memory");
    }
    for (size_t i = 0; i < d->nparts; i++) {
        dpart_t *p = &d->parts[i];

        if (!p->active)
            continue;
        p->pos_next = p->read_until;
        if (p->read_until < p->until) {
            atomic_fetch_add(&d->n.short_reads, 1);
            KW_LOG_D(MOD, "%s/%d: read %" PRId64 "..%" PRId64 " of %" PRId64 "..%" PRId64
                     " in this batch", p->topic, (int)p->partition, p->from,
                     p->read_until - 1, p->from, p->until - 1);
        }
    }
    return KW_OK;
}

/* The records of this batch as kw_record_t (pointing into the messages). */
static int build_records(kw_direct_t *d)
{
    size_t nh = 0;

    if (d->nmsgs > d->caprecs) {
        kw_record_t *nr = realloc(d->recs, d->nmsgs * sizeof(*nr));

        if (nr == NULL)
            return -1;
        d->recs = nr;
        d->caprecs = d->nmsgs;
    }
    for (size_t i = 0; i < d->nmsgs; i++)
        nh += kw_source_header_count(d->msgs[i]);
    if (nh > d->caphdrs) {
        kw_record_header_t *nhd = realloc(d->hdrs, nh * sizeof(*nhd));

        if (nhd == NULL)
            return -1;
        d->hdrs = nhd;
        d->caphdrs = nh;
    }
    d->nhdrs = 0;
    for (size_t i = 0; i < d->nmsgs; i++) {
        kw_source_record(d->msgs[i], &d->recs[i], d->hdrs + d->nhdrs);
        d->nhdrs += d->recs[i].header_count;
    }
    return 0;
}

/* Step 4, exactly-once: the records and this batch's ranges in one sink
 * transaction (sink.h T1-T4). On error the sink has rolled it back (T2). */
static kw_err_t write_with_ranges(kw_direct_t *d, uint64_t *batch, kw_sink_stats_t *ss,
                                  char *errstr, size_t errlen)
{
    kw_err_t err;

    /* the id is taken under the database's lock: instances sharing it
     * number their batches from one sequence, never the same id twice */
    if ((err = kw_sink_txn_begin_next(d->sink, *batch, batch, errstr, errlen)) != KW_OK ||
        (err = kw_sink_txn_write(d->sink, d->recs, d->nmsgs, errstr, errlen)) != KW_OK)
        return err;
    for (size_t i = 0; i < d->nparts; i++) {
        const dpart_t *p = &d->parts[i];

        if (!p->active || p->read_until <= p->from)
            continue;
        err = kw_sink_txn_put_range(d->sink, p->topic, p->partition, p->stored, p->from,
                                    p->read_until, errstr, errlen);
        if (err != KW_OK)
            return err;
    }
    return kw_sink_txn_commit(d->sink, ss, errstr, errlen);
}

/* Step 5 (and at-least-once's offset store): every owned partition's next
 * offset. KW_OK or the commit's error. */
static kw_err_t commit_zk(kw_direct_t *d, char *why, size_t whylen)
{
    kw_zk_offset_t *offs = calloc(d->nparts ? d->nparts : 1, sizeof(*offs));
    size_t n = 0;
    kw_err_t err;

    if (offs == NULL)
        return kw_seterr(why, whylen, KW_ENOMEM, "out of memory");
    for (size_t i = 0; i < d->nparts; i++)
        if (d->parts[i].owned && d->parts[i].next >= 0) {
            offs[n].topic = d->parts[i].topic;
            offs[n].partition = d->parts[i].partition;
            offs[n].next = d->parts[i].next;
            n++;
        }
    /* one multi per DIRECT_ZK_MULTI_MAX partitions: a multi is one request,
     * and ZooKeeper refuses one past jute.maxbuffer (1 MiB by default; some
     * 220 bytes a partition, so ~4,700). Each partition's offset stands on
     * its own here, so the multis need not be one. */
    err = KW_OK;
    for (size_t i = 0; i < n && err == KW_OK; i += DIRECT_ZK_MULTI_MAX)
        err = kw_zk_commit(d->zk, offs + i, n - i < DIRECT_ZK_MULTI_MAX ? n - i
                           : DIRECT_ZK_MULTI_MAX, 0, why, whylen);
    free(offs);
    return err;
}

/* Partitions lost in ZooKeeper (session expired and taken elsewhere) are
 * not read until owned again, from what is stored. */
static void forget_lost(kw_direct_t *d)
{
    kw_zk_partition_t lost[64];
    size_t n;

    while ((n = kw_zk_lost(d->zk, lost, 64)) > 0)
        for (size_t i = 0; i < n; i++) {
            dpart_t *p = part_find(d, lost[i].topic, lost[i].partition);

            if (p != NULL) {
                KW_LOG_W(MOD, "%s/%d: ownership lost in ZooKeeper", p->topic,
                         (int)p->partition);
                p->owned = 0;
                p->next = -1;
            }
        }
}

/* Give p up: the batch that read it last is committed (this runs between
 * batches), so its next owner reads on from the ranges stored. */
static void release(kw_direct_t *d, dpart_t *p)
{
    char why[512];

    if (kw_zk_disown(d->zk, p->topic, p->partition, why, sizeof(why)) != KW_OK)
        KW_LOG_W(MOD, "%s/%d: releasing its owner node: %s (it goes with the session)",
                 p->topic, (int)p->partition, why);
    KW_LOG_I(MOD, "%s/%d given up: another instance's now", p->topic, (int)p->partition);
    p->owned = 0;
    p->next = -1;               /* read again from what is stored when it comes back */
    p->busy_logged = 0;
    atomic_fetch_add(&d->n.owner_changes, 1);
}

/*
 * The group's assignment (DESIGN.md, "Several instances"): from the
 * registered instances and the partitions known, which ones are this
 * instance's (kw_direct_assign). Partitions owned that are no longer ours
 * are released now, between batches, so a partition changes hands only
 * after its last batch here is committed; their new owner takes them at
 * its next batch (until then kw_zk_own finds them busy). At least once,
 * ZooKeeper holds the progress, so a partition is released only once its
 * offset is there. When the instances cannot be read (ZooKeeper away, our
 * session being re-established), the last assignment stays.
 */
static void rebalance(kw_direct_t *d)
{
    char why[512], **names = NULL;
    size_t nnames = 0, nmine = 0;
    kw_direct_tp_t *tps;
    unsigned char *mine;
    int got;

    if (kw_zk_members(d->zk, &names, &nnames, why, sizeof(why)) != KW_OK) {
        KW_LOG_D(MOD, "instances of the group not read (%s); the assignment stays", why);
        return;
    }
    tps = malloc((d->nparts ? d->nparts : 1) * sizeof(*tps));
    mine = malloc(d->nparts ? d->nparts : 1);
    for (size_t i = 0; tps != NULL && i < d->nparts; i++) {
        tps[i].topic = d->parts[i].topic;
        tps[i].partition = d->parts[i].partition;
    }
    got = tps != NULL && mine != NULL
          ? kw_direct_assign(d->conf->receiver.direct_assignment,
                             (const char *const *)names, nnames, kw_zk_instance(d->zk),
                             tps, d->nparts, mine)
          : -1;
    if (got < 0) {          /* not registered just now (re-establishing): wait */
        free(tps);
        free(mine);
        kw_zk_names_free(names, nnames);
        return;
    }
    if (d->at_least_once && d->zk_pending_since != 0 &&
        commit_zk(d, why, sizeof(why)) == KW_OK)
        d->zk_pending_since = 0;
    for (size_t i = 0; i < d->nparts; i++) {
        dpart_t *p = &d->parts[i];

        p->mine = mine[i];
        if (p->owned && !p->mine) {
            if (d->at_least_once && d->zk_pending_since != 0)
                p->mine = 1;    /* its offset is not in ZooKeeper yet: keep it */
            else
                release(d, p);
        }
        nmine += p->mine;
    }
    if (nmine != d->nmine || nnames != d->nmembers)
        KW_LOG_I(MOD, "assignment (%s): %zu of %zu partitions, %zu instance%s",
                 d->conf->receiver.direct_assignment == KW_ASSIGN_RANGE ? "range"
                 : "roundrobin", nmine, d->nparts, nnames, nnames == 1 ? "" : "s");
    d->nmine = nmine;
    d->nmembers = nnames;
    atomic_store(&d->n.members, nnames);
    free(tps);
    free(mine);
    kw_zk_names_free(names, nnames);
}

/* One batch, started sched_delay ms after its time. KW_OK, or fatal. */
static kw_err_t run_batch(kw_direct_t *d, int64_t sched_delay, char *errstr, size_t errlen)
{
    int64_t started = kw_mono_ms();
    kw_sink_stats_t ss;
    uint64_t batch;
    char why[1024];
    kw_err_t err;
    int rc = 0;

    forget_lost(d);
    if ((d->metadata_ms == 0 || kw_mono_ms() - d->metadata_ms >= METADATA_EVERY_MS) &&
        (rc = refresh_partitions(d)) != -1)
        d->metadata_ms = kw_mono_ms();
    if (rc == -2)
        return kw_seterr(errstr, errlen, KW_ENOMEM, "out of memory");
    rebalance(d);
    err = plan_batch(d, errstr, errlen);
    if (err != KW_OK && err != KW_EOF)
        return err;
    if (err == KW_OK && (err = read_batch(d, errstr, errlen)) != KW_OK) {
        free_msgs(d);
        return err;
    }
    {
        int moved = 0;

        for (size_t i = 0; i < d->nparts; i++)
            moved |= d->parts[i].active && d->parts[i].read_until > d->parts[i].from;
        if (!moved) {
            free_msgs(d);
            /* nothing new; ZooKeeper may still be behind the sink */
            if (d->zk_pending_since != 0 && commit_zk(d, why, sizeof(why)) == KW_OK)
                d->zk_pending_since = 0;
            return KW_OK;
        }
    }
    kw_crash(KW_CRASH_DIRECT_READ);
    if (kw_fault("direct/stop"))
        raise(SIGSTOP);     /* frozen mid-batch (tests of the range fence) */
    if (build_records(d) != 0) {
        free_msgs(d);
        return kw_seterr(errstr, errlen, KW_ENOMEM, "out of memory");
    }
    memset(&ss, 0, sizeof(ss));
    for (int64_t backoff = 250;; backoff = backoff < 4000 ? backoff * 2 : 4000) {
        /* at-least-once: ids from the clock, growing across restarts
         * without a store; exactly-once: the next id after every stored
         * one, taken by the sink inside the transaction (at least ours) */
        batch = d->last_batch + 1;
        if (d->at_least_once && (uint64_t)kw_wall_ms() > batch)
            batch = (uint64_t)kw_wall_ms();
        err = d->at_least_once
              ? kw_sink_write_batch(d->sink, batch, d->recs, d->nmsgs, &ss, why, sizeof(why))
              : write_with_ranges(d, &batch, &ss, why, sizeof(why));
        if (err == KW_OK || (err != KW_EIO && err != KW_EAGAIN) || atomic_load(&d->stop))
            break;
        KW_LOG_E(MOD, "batch %" PRIu64 ": sink: %s; retrying in %" PRId64 " ms", batch,
                 why, backoff);
        kw_sleep_ms(backoff);
    }
    if (err == KW_OK) {     /* committed now: each record's end-to-end latency */
        kw_hist_local_init(&d->batch_latency);
        kw_sink_latency_add(&d->batch_latency, d->recs, d->nmsgs, kw_wall_ms());
    }
    free_msgs(d);
    if (err == KW_EFENCED) {
        /* another instance stored a range of a partition we read: ours is
         * stale (we lost it without knowing yet). Nothing of that partition
         * was stored (the kafka sink commits partition by partition: those
         * before it may be, each with its range); every partition read goes
         * on from what the sink holds, if still ours */
        atomic_fetch_add(&d->n.fenced, 1);
        KW_LOG_W(MOD, "batch %" PRIu64 " not stored: %s; reading the positions again",
                 batch, why);
        for (size_t i = 0; i < d->nparts; i++)
            if (d->parts[i].active)
                d->parts[i].next = -1;
        return KW_OK;
    }
    if (err != KW_OK)
        return kw_seterr(errstr, errlen, err, "batch %" PRIu64 ": sink: %s", batch, why);
    kw_crash(KW_CRASH_DIRECT_STORED);
    d->last_batch = batch;
    if (d->conf->receiver.backpressure) {
        double before = d->pid.rate;
        double now = kw_direct_pid_update(&d->pid, kw_mono_ms(), ss.delivered,
                                          kw_mono_ms() - started, sched_delay,
                                          d->conf->receiver.batch_interval_ms);

        if (before <= 0 || now < before * 0.8 || now > before * 1.25)
            KW_LOG_I(MOD, "back-pressure: %.0f records/s (batch of %" PRIu64 " in %" PRId64
                     " ms, started %" PRId64 " ms late)", now, ss.delivered,
                     kw_mono_ms() - started, sched_delay);
    }
    for (size_t i = 0; i < d->nparts; i++)
        if (d->parts[i].active) {
            d->parts[i].next = d->parts[i].read_until;
            if (d->parts[i].read_until > d->parts[i].from)
                d->parts[i].stored = d->parts[i].read_until;
        }
    atomic_fetch_add(&d->n.batches, 1);
    atomic_fetch_add(&d->n.delivered, ss.delivered);
    atomic_fetch_add(&d->n.stored, ss.stored);
    if (ss.stored > 0 && atomic_load(&d->n.first_stored_mono_ms) == 0)
        atomic_store(&d->n.first_stored_mono_ms, kw_mono_ms());
    atomic_fetch_add(&d->n.dups, ss.duplicates_delivered);
    kw_hist_merge(&d->latency, &d->batch_latency);
    if (ss.duplicates_delivered > 0)
        KW_LOG_W(MOD, "batch %" PRIu64 ": %" PRIu64 " duplicate deliveries (stored once)",
                 batch, ss.duplicates_delivered);
    KW_LOG_D(MOD, "batch %" PRIu64 ": %" PRIu64 " records, %" PRIu64 " stored", batch,
             ss.delivered, ss.stored);
    err = commit_zk(d, why, sizeof(why));
    if (err != KW_OK) {
        atomic_fetch_add(&d->n.zk_failures, 1);
        if (d->zk_pending_since == 0)
            d->zk_pending_since = kw_mono_ms();
        KW_LOG_W(MOD, "batch %" PRIu64 ": ZooKeeper offsets not updated (%s); %s", batch,
                 why, d->at_least_once
                 ? "a restart now would read this batch again (--at-least-once)"
                 : "the sink has the ranges; ZooKeeper catches up with the next batch");
    } else {
        d->zk_pending_since = 0;
    }
    kw_hist_add(&d->batch_ms, kw_mono_ms() - started, 1);
    return KW_OK;
}

static void log_summary(kw_direct_t *d)
{
    kw_direct_stats_t s;

    kw_direct_stats(d, &s);
    KW_LOG_I(MOD, "%" PRIu64 " batches, %" PRIu64 " records delivered, %" PRIu64
             " stored, %" PRIu64 " duplicate deliveries, %" PRIu64 " partitions, %" PRIu64
             " source-loss events, latency p50 %" PRId64 " p99 %" PRId64 " max %" PRId64
             " ms", s.batches, s.records_delivered, s.records_stored,
             s.duplicates_delivered, s.partitions, s.source_loss_events, s.latency.p50,
             s.latency.p99, s.latency.max);
}

kw_err_t kw_direct_run(kw_direct_t *d, char *errstr, size_t errlen)
{
    int64_t interval = d->conf->receiver.batch_interval_ms;
    int64_t next = kw_mono_ms(), last_summary = kw_mono_ms();
    kw_err_t err;

    KW_LOG_I(MOD, "direct mode%s: batches every %" PRId64 " ms, %s", d->at_least_once
             ? " (at least once: offsets in ZooKeeper after the sink write)" : "", interval,
             d->conf->receiver.max_rate_per_partition > 0 ? "rate-limited per partition"
             : "up to the high watermark");
    while (!atomic_load(&d->stop)) {
        while (!atomic_load(&d->stop) && kw_mono_ms() < next)
            kw_sleep_ms(next - kw_mono_ms() < 100 ? next - kw_mono_ms() : 100);
        if (atomic_load(&d->stop))
            break;
        err = run_batch(d, kw_mono_ms() - next, errstr, errlen);
        snapshot(d);
        if (err != KW_OK) {
            log_summary(d);
            return err;
        }
        /* batches keep their times: one that is due starts at once, and
         * how late it starts is the scheduling delay back-pressure sees
         * (a backlog of at most 100 intervals is remembered); after a batch
         * cut short by batch.max.bytes the next one is due now */
        next += interval;
        if (d->cut && next > kw_mono_ms())
            next = kw_mono_ms();
        if (next < kw_mono_ms() - 100 * interval)
            next = kw_mono_ms() - 100 * interval;
        if (kw_mono_ms() - last_summary >= 10000) {
            last_summary = kw_mono_ms();
            log_summary(d);
        }
    }
    log_summary(d);
    return KW_OK;
}
