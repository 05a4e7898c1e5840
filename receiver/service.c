/*
 * service.c -- receiver mode's service handle: opens the parts, starts the
 * threads, stops them in order.
 *
 * new():  check the settings; open the WAL, the tracker (tracker.path, or
 *         tracker.db in the first WAL directory), the sink, the ZooKeeper
 *         session (and register this instance), and the bounded block queue.
 * run():  start the batcher, the pipeline and receivers receiver-0..N-1;
 *         wait for kw_receiver_stop() or a fatal error, restarting
 *         receivers that fail (with backoff, kw_receiver_restart_delay_ms);
 *         then stop in the order that keeps the invariants:
 *           1. receivers stop consuming, cut and put their last blocks, wait
 *              until ZooKeeper has them, close their consumers (whose revoke
 *              path disowns the partitions) -- joined;
 *           2. the queue is closed; the pipeline drains what is left (WAL,
 *              tracker, ZooKeeper) and exits -- joined;
 *           3. the batcher runs one last round (every durable block to the
 *              sink) and exits -- joined.
 *         On a fatal error the same order runs, but nobody waits for what
 *         can no longer happen; what is durable stays in the WAL and the
 *         tracker for the next start (the batcher delivers open and
 *         unallocated blocks first).
 * stop(): one atomic store, so a signal handler may call it.
 *
 * --no-wal: new() opens neither the WAL nor the tracker; run() stops in the
 * same order, and the batcher's last round delivers every pending block.
 * Whatever is still pending after the batcher was joined (the sink failed
 * at stop, or a fatal error) is lost: run() logs each such block at ERROR
 * with its Kafka ranges and returns an error (see receiver.h).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kw_instance.h"
#include "kw_log.h"
#include "receiver_int.h"
#include "source.h"

/* ---- shared helpers ---- */



/* ---- handle ---- */

void kw_receiver_options_init(kw_receiver_options_t *opts)
{
    memset(opts, 0, sizeof(*opts));
}

kw_err_t kw_receiver_new(const kw_conf_t *conf, const kw_wal_options_t *wal_opts,
                         kw_receiver_t **out, char *errstr, size_t errlen)
{
    return kw_receiver_new_opts(conf, wal_opts, NULL, out, errstr, errlen);
}

/* The handles the caller hands over (options wal, tracker, sink): each is
 * cleared here once the service holds it, so that what is left is closed by
 * kw_receiver_new_opts whatever the outcome. */
typedef struct adopted {
    kw_wal_t     *wal;
    kw_tracker_t *tracker;
    kw_sink_t    *sink;
} adopted_t;

static kw_err_t receiver_new(const kw_conf_t *conf, const kw_wal_options_t *wal_opts,
                             const kw_receiver_options_t *opts, adopted_t *adopt,
                             kw_receiver_t **out, char *errstr, size_t errlen);

kw_err_t kw_receiver_new_opts(const kw_conf_t *conf, const kw_wal_options_t *wal_opts,
                              const kw_receiver_options_t *opts, kw_receiver_t **out,
                              char *errstr, size_t errlen)
{
    kw_receiver_options_t defaults;
    adopted_t adopt;
    kw_err_t err;

    if (opts == NULL) {
        kw_receiver_options_init(&defaults);
        opts = &defaults;
    }
    adopt.wal = opts->wal;
    adopt.tracker = opts->tracker;
    adopt.sink = opts->sink;
    err = receiver_new(conf, wal_opts, opts, &adopt, out, errstr, errlen);
    kw_sink_close(adopt.sink);
    kw_tracker_close(adopt.tracker);
    kw_wal_close(adopt.wal);
    return err;
}

static kw_err_t receiver_new(const kw_conf_t *conf, const kw_wal_options_t *wal_opts,
                             const kw_receiver_options_t *opts, adopted_t *adopt,
                             kw_receiver_t **out, char *errstr, size_t errlen)
{
    const kw_conf_receiver_t *rc = &conf->receiver;
    kw_blockq_options_t qopts;
    kw_zk_options_t zopts;
    kw_receiver_t *svc;
    kw_err_t err;

    *out = NULL;
    if (!opts->no_wal && wal_opts == NULL)
        return kw_seterr(errstr, errlen, KW_EINVAL, "kwal receive: no WAL options");
    if ((adopt->wal == NULL) != (adopt->tracker == NULL) || (opts->no_wal && adopt->wal != NULL))
        return kw_seterr(errstr, errlen, KW_EINVAL, "kwal receive: a WAL handle without its "
                         "tracker, or either with --no-wal");
    if (rc->group_id == NULL || rc->group_id[0] == '\0')
        return kw_seterr(errstr, errlen, KW_ECONFIG, "group.id: required by kwal receive");
    if (rc->topics.count == 0)
        return kw_seterr(errstr, errlen, KW_ECONFIG, "topics: required by kwal receive");
    for (size_t i = 0; i < conf->nkafka; i++) {
        const char *k = conf->kafka[i].key;

        if (strcmp(k, "group.instance.id") == 0)
            return kw_seterr(errstr, errlen, KW_ECONFIG,
                             "kafka.group.instance.id: set by kwal receive itself, one per "
                             "receiver (use instance.id; see receiver.static.membership)");
        if (strcmp(k, "group.id") == 0 || strcmp(k, "enable.auto.commit") == 0 ||
            strcmp(k, "enable.auto.offset.store") == 0 ||
            strcmp(k, "auto.offset.reset") == 0)
            return kw_seterr(errstr, errlen, KW_ECONFIG,
                             "kafka.%s: set by kwal receive itself (use the kwal "
                             "key%s)", k,
                             strcmp(k, "group.id") == 0 ? " group.id" :
                             strcmp(k, "auto.offset.reset") == 0 ?
                             " auto.offset.reset" : "s; offsets live in ZooKeeper");
    }

    err = kw_source_check_conf(conf, errstr, errlen);
    if (err != KW_OK)
        return err;
    /* a cluster that refuses us (TLS, SASL) stops the start; one that is
     * down is waited for, as when it goes away later */
    err = kw_source_probe(conf, KW_SOURCE_PROBE_MS, errstr, errlen);
    if (err == KW_EAUTH)
        return err;
    if (err != KW_OK)
        KW_LOG_W(KW_RCV_MOD, "%s; starting anyway, the receivers wait for it", errstr);

    svc = calloc(1, sizeof(*svc));
    if (svc == NULL)
        return kw_seterr(errstr, errlen, KW_ENOMEM, "out of memory");
    svc->conf = conf;
    svc->rc = rc;
    svc->no_wal = opts->no_wal != 0;
    kw_hist_init(&svc->own_latency);
    kw_hist_init(&svc->batch_ms);
    pthread_mutex_init(&svc->parts_mu, NULL);
    svc->latency = opts->latency != NULL ? opts->latency : &svc->own_latency;
    if (wal_opts != NULL)
        svc->wal_opts = *wal_opts;
    pthread_mutex_init(&svc->fatal_mu, NULL);
    pthread_mutex_init(&svc->batch_mu, NULL);
    pthread_rwlock_init(&svc->wal_rw, NULL);
    pthread_mutex_init(&svc->quorum_mu, NULL);
    pthread_cond_init(&svc->batch_cv, NULL);
    pthread_mutex_init(&svc->pending_mu, NULL);
    pthread_cond_init(&svc->pending_cv, NULL);

    if (!svc->no_wal) {
        kw_tracker_default_path(conf->receiver.tracker_path, wal_opts->dirs[0], svc->tracker_path,
                                 sizeof(svc->tracker_path));
        if (adopt->wal != NULL) {       /* recovery's, reconciled */
            svc->wal = adopt->wal;
            svc->tracker = adopt->tracker;
            adopt->wal = NULL;
            adopt->tracker = NULL;
        } else {
            err = kw_wal_open(&svc->wal_opts, &svc->wal, NULL, errstr, errlen);
            if (err != KW_OK)
                goto fail;
            err = kw_tracker_open(svc->tracker_path, &svc->tracker, errstr, errlen);
            if (err != KW_OK)
                goto fail;
        }
    }
    if (adopt->sink != NULL) {
        svc->sink = adopt->sink;
        adopt->sink = NULL;
    } else {
        /* the kafka sink's writer: this instance, as recovery names it */
        kw_sink_options_t so;
        char name[256];

        kw_sink_options_from_conf(&so, conf, opts->zk != NULL ? kw_zk_instance(opts->zk) :
                                  kw_instance_name(rc->instance_id, svc->no_wal ? NULL :
                                                   svc->wal_opts.dirs[0], "kwal", name,
                                                   sizeof(name)), 0);
        err = kw_sink_open_opts(rc->sink, &so, &svc->sink, errstr, errlen);
        if (err != KW_OK)
            goto fail;
    }

    if (opts->zk != NULL) {
        svc->zk = opts->zk;
        svc->zk_borrowed = 1;
    } else {
        kw_zk_options_from_conf(&zopts, conf);
        err = kw_zk_new(&zopts, &svc->zk, errstr, errlen);
        if (err != KW_OK)
            goto fail;
        err = kw_zk_register(svc->zk, errstr, errlen);
        if (err != KW_OK)
            goto fail;
    }

    svc->nconsumers = (uint32_t)rc->receivers;
    svc->consumers = calloc(svc->nconsumers, sizeof(*svc->consumers));
    if (svc->consumers == NULL) {
        err = kw_seterr(errstr, errlen, KW_ENOMEM, "out of memory");
        goto fail;
    }
    for (uint32_t i = 0; i < svc->nconsumers; i++) {
        kw_rcv_consumer_t *c = &svc->consumers[i];

        c->svc = svc;
        c->id = i;
        pthread_mutex_init(&c->mu, NULL);
        pthread_cond_init(&c->cv, NULL);
    }
    /* bounded (invariant 5): a few blocks per receiver */
    kw_blockq_options_init(&qopts);
    qopts.max_blocks = 8;
    for (uint32_t i = 0; i < svc->nconsumers; i++) {
        err = kw_blockq_new(&qopts, &svc->consumers[i].q, errstr, errlen);
        if (err != KW_OK)
            goto fail;
    }
    *out = svc;
    return KW_OK;

fail:
    kw_receiver_destroy(svc);
    return err;
}

void kw_receiver_stop(kw_receiver_t *svc)
{
    atomic_store(&svc->stop_requested, 1);
}



int64_t kw_receiver_restart_delay_ms(uint32_t streak)
{
    int64_t d = 500;

    for (uint32_t i = 1; i < streak && d < 30000; i++)
        d *= 2;
    return d < 30000 ? d : 30000;
}

/* Start receiver thread c (again). 0, or -1 with the fatal error recorded. */
static int start_receiver(kw_receiver_t *svc, kw_rcv_consumer_t *c)
{
    int err;

    atomic_store(&c->failed, 0);
    c->fail_msg[0] = '\0';
    c->restart_at_ms = 0;
    c->started_ms = kw_mono_ms();
    err = pthread_create(&c->thread, NULL, kw_rcv_consumer_main, c);
    if (err != 0) {
        kw_rcv_fatal(svc, "starting receiver-%u: %s", c->id, strerror(err));
        return -1;
    }
    c->started = 1;
    return 0;
}

/* Service thread, every turn of run()'s loop: join receivers that failed and
 * restart them once their backoff has passed (the service never silently
 * stops receiving: every failure is logged with its reason and counted). */
static void supervise_receivers(kw_receiver_t *svc)
{
    int64_t now = kw_mono_ms();

    for (uint32_t i = 0; i < svc->nconsumers; i++) {
        kw_rcv_consumer_t *c = &svc->consumers[i];

        if (c->started && atomic_load(&c->failed)) {
            int64_t delay;

            pthread_join(c->thread, NULL);
            c->started = 0;
            if (now - c->started_ms >= KW_RECEIVER_HEALTHY_MS)
                c->fail_streak = 0;
            c->fail_streak++;
            delay = kw_receiver_restart_delay_ms(c->fail_streak);
            c->restart_at_ms = now + delay;
            KW_LOG_E(KW_RCV_MOD, "receiver-%u failed: %s; restarting it in %" PRId64
                     " ms (failure %u in a row)", c->id, c->fail_msg, delay,
                     c->fail_streak);
        }
        if (!c->started && c->restart_at_ms != 0 && now >= c->restart_at_ms) {
            if (start_receiver(svc, c) != 0)
                return;
            atomic_fetch_add(&svc->n.receiver_restarts, 1);
            KW_LOG_I(KW_RCV_MOD, "receiver-%u restarted", c->id);
        }
    }
}

/* Service thread, every turn: once every receiver has had its first
 * assignment (or KW_RECEIVER_INHERIT_MS after the start), give up the owner
 * nodes a resumed ZooKeeper session held that no receiver took back, so
 * that the instances Kafka gave them to can have them (zk.h, "Resuming"). */
static void release_inherited(kw_receiver_t *svc, int64_t run_start)
{
    uint32_t assigned = 0;
    size_t n;

    if (svc->inherited_done)
        return;
    for (uint32_t i = 0; i < svc->nconsumers; i++)
        assigned += atomic_load(&svc->consumers[i].assigned_once) != 0;
    if (assigned < svc->nconsumers && kw_mono_ms() - run_start < KW_RECEIVER_INHERIT_MS)
        return;
    svc->inherited_done = 1;
    n = kw_zk_release_inherited(svc->zk);
    if (n > 0)
        KW_LOG_I(KW_RCV_MOD, "released %zu partition%s this instance owned before its "
                 "restart and was not assigned again", n, n == 1 ? "" : "s");
}

/* --no-wal, after the batcher was joined: every block still pending has its
 * offsets in ZooKeeper (or was fenced) and is not in the sink -- lost. Say
 * so, block by block, and fail the run (a requested stop must lose nothing). */
static void report_lost(kw_receiver_t *svc)
{
    uint64_t records = 0;
    char ranges[1024];

    /* every other thread is joined; the lock only keeps the rule */
    pthread_mutex_lock(&svc->pending_mu);
    for (size_t i = 0; i < svc->npending; i++) {
        const kw_block_t *b = svc->pending[i];
        size_t used = 0;

        ranges[0] = '\0';
        for (size_t j = 0; j < kw_block_range_count(b) && used < sizeof(ranges); j++) {
            const kw_block_range_t *r = kw_block_range(b, j);
            int w = snprintf(ranges + used, sizeof(ranges) - used,
                             "%s%s/%d offsets %" PRId64 "..%" PRId64, j > 0 ? ", " : "",
                             r->topic, (int)r->partition, r->from_offset,
                             r->until_offset - 1);

            if (w < 0)
                break;
            used += (size_t)w;
        }
        records += kw_block_record_count(b);
        KW_LOG_E(KW_RCV_MOD, "--no-wal: block %u/%" PRIu64 " lost: %s (%u records; "
                 "offsets committed to ZooKeeper, never delivered)",
                 kw_block_receiver_id(b), kw_block_seq(b), ranges,
                 kw_block_record_count(b));
    }
    if (svc->npending > 0) {
        char msg[256];

        snprintf(msg, sizeof(msg), "--no-wal: %zu blocks (%" PRIu64 " records) were "
                 "received and committed to ZooKeeper but never delivered: lost (each "
                 "logged above)", svc->npending, records);
        /* said at ERROR even after another fatal error (which run() returns) */
        if (kw_rcv_is_fatal(svc))
            KW_LOG_E(KW_RCV_MOD, "%s", msg);
        else
            kw_rcv_fatal(svc, "%s", msg);
    }
    pthread_mutex_unlock(&svc->pending_mu);
}

kw_err_t kw_receiver_run(kw_receiver_t *svc, char *errstr, size_t errlen)
{
    kw_receiver_stats_t s;
    int err;

    err = pthread_create(&svc->batcher_thread, NULL, kw_rcv_batcher_main, svc);
    if (err != 0) {
        kw_rcv_fatal(svc, "starting the batcher thread: %s", strerror(err));
        goto stop;
    }
    svc->batcher_started = 1;
    for (uint32_t i = 0; i < svc->nconsumers; i++) {
        kw_rcv_consumer_t *c = &svc->consumers[i];

        err = pthread_create(&c->pipe_thread, NULL, kw_rcv_pipeline_main, c);
        if (err != 0) {
            kw_rcv_fatal(svc, "starting pipeline-%u: %s", i, strerror(err));
            goto stop;
        }
        c->pipe_started = 1;
    }
    for (uint32_t i = 0; i < svc->nconsumers; i++)
        if (start_receiver(svc, &svc->consumers[i]) != 0)
            goto stop;
    KW_LOG_I(KW_RCV_MOD, "receiving: group %s, %u receiver%s, sink %s, %s%s",
             svc->rc->group_id, svc->nconsumers, svc->nconsumers == 1 ? "" : "s",
             svc->rc->sink, svc->no_wal ? "no WAL (--no-wal)" : "tracker ",
             svc->no_wal ? "" : svc->tracker_path);

    int64_t run_start = kw_mono_ms();
    while (!atomic_load(&svc->stop_requested) && !kw_rcv_is_fatal(svc)) {
        supervise_receivers(svc);
        release_inherited(svc, run_start);
        kw_sleep_ms(50);
    }
    if (!kw_rcv_is_fatal(svc))
        KW_LOG_I(KW_RCV_MOD, "stopping: flushing receivers, draining the pipeline, "
                 "delivering the last batch");

stop:
    /* 1. receivers: last blocks put and committed, partitions given up */
    atomic_store(&svc->receivers_stop, 1);
    for (uint32_t i = 0; i < svc->nconsumers; i++) {
        if (svc->consumers[i].started) {
            pthread_join(svc->consumers[i].thread, NULL);
            svc->consumers[i].started = 0;
        }
    }
    /* 2. the pipelines drain their queues */
    for (uint32_t i = 0; i < svc->nconsumers; i++)
        kw_blockq_close(svc->consumers[i].q);
    for (uint32_t i = 0; i < svc->nconsumers; i++) {
        if (svc->consumers[i].pipe_started) {
            pthread_join(svc->consumers[i].pipe_thread, NULL);
            svc->consumers[i].pipe_started = 0;
        }
    }
    /* 3. the last batch */
    pthread_mutex_lock(&svc->batch_mu);
    svc->stop_batcher = 1;
    pthread_cond_broadcast(&svc->batch_cv);
    pthread_mutex_unlock(&svc->batch_mu);
    if (svc->batcher_started) {
        pthread_join(svc->batcher_thread, NULL);
        svc->batcher_started = 0;
    }
    if (svc->no_wal)
        report_lost(svc);

    kw_receiver_stats(svc, &s);
    if (kw_rcv_is_fatal(svc)) {
        pthread_mutex_lock(&svc->fatal_mu);
        kw_seterr(errstr, errlen, KW_EIO, "%s", svc->fatal_msg);
        pthread_mutex_unlock(&svc->fatal_mu);
        return KW_EIO;
    }
    KW_LOG_I(KW_RCV_MOD, "stopped: %" PRIu64 " records received, %" PRIu64
             " stored, %" PRIu64 " duplicate deliveries, %" PRIu64 " source-loss events, %"
             PRIu64 " WAL segments cleaned, %" PRIu64 " receiver restarts",
             s.records_received, s.records_stored, s.duplicates_delivered,
             s.source_loss_events, s.segments_cleaned, s.receiver_restarts);
    return KW_OK;
}

void kw_receiver_destroy(kw_receiver_t *svc)
{
    if (svc == NULL)
        return;
    /* the ZooKeeper session first: our ephemeral nodes go at once (a
     * borrowed session: its owner closes it after this) */
    if (!svc->zk_borrowed)
        kw_zk_destroy(svc->zk);
    kw_sink_close(svc->sink);
    kw_tracker_close(svc->tracker);
    kw_wal_close(svc->wal);
    for (uint32_t i = 0; svc->consumers != NULL && i < svc->nconsumers; i++) {
        kw_blockq_destroy(svc->consumers[i].q);
        pthread_mutex_destroy(&svc->consumers[i].mu);
        pthread_cond_destroy(&svc->consumers[i].cv);
    }
    free(svc->consumers);
    for (size_t i = 0; i < svc->npending; i++)
        kw_block_destroy(svc->pending[i]);
    free(svc->pending);
    pthread_mutex_destroy(&svc->pending_mu);
    pthread_cond_destroy(&svc->pending_cv);
    pthread_rwlock_destroy(&svc->wal_rw);
    pthread_mutex_destroy(&svc->quorum_mu);
    pthread_mutex_destroy(&svc->fatal_mu);
    pthread_mutex_destroy(&svc->batch_mu);
    pthread_cond_destroy(&svc->batch_cv);
    free(svc->parts);
    pthread_mutex_destroy(&svc->parts_mu);
    free(svc);
}
