/*
 * kwal_direct_cmd.c -- `kwal direct -c FILE [-X key=value]... [--at-least-once]`:
 * direct mode (direct/direct.h) until SIGTERM or SIGINT, whose handler
 * only calls kw_direct_stop() (async-signal-safe). Exit 0 after a requested
 * stop (the batch under way is finished first), 1 with a one-line reason on
 * a fatal error, 2 for bad arguments or configuration.
 */
#include "kwal.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "direct.h"
#include "kw_log.h"

/* --stats-json and the metrics endpoint: the service's counters (mu guards
 * d, cleared before the service is destroyed; last keeps its final
 * numbers). fill_stats runs on the --stats-json writer's thread and on the
 * endpoint's, at once: everything under mu. */
typedef struct direct_stats_ctx {
    pthread_mutex_t    mu;
    kw_direct_t       *d;
    kw_direct_stats_t  last;
    int                have_last;
    kwal_instance_t   *inst;        /* while open */
    int                metrics_port;
} direct_stats_ctx_t;

static void fill_stats(kw_stats_t *s, int64_t start_mono, void *opaque)
{
    direct_stats_ctx_t *x = opaque;

    pthread_mutex_lock(&x->mu);
    if (x->inst != NULL)
        kwal_instance_stats(x->inst, start_mono, s);
    if (x->d != NULL) {
        kw_direct_stats(x->d, &x->last);
        x->have_last = 1;
    }
    if (x->have_last) {
        const kw_direct_stats_t *r = &x->last;

        s->records_received = r->records_delivered;   /* read = delivered */
        s->records_delivered = r->records_delivered;
        s->records_stored = r->records_stored;
        s->duplicate_deliveries = r->duplicates_delivered;
        s->batches = r->batches;
        s->source_loss_events = r->source_loss_events;
        s->source_loss_records = r->source_loss_records;
        s->zk_writes = r->zk_writes;
        s->partitions_busy = r->partitions_busy;
        s->short_reads = r->short_reads;
        s->zk_failures = r->zk_failures;
        s->partitions_owned = r->partitions;
        s->first_stored_ms = r->first_stored_mono_ms > 0 ?
            r->first_stored_mono_ms - start_mono : -1;
        s->first_assignment_ms = r->first_owned_mono_ms > 0 ?
            r->first_owned_mono_ms - start_mono : -1;
        kw_stats_set_latency(s, &r->latency);
        s->batch_ms = r->batch_ms;
        s->owner_changes = r->owner_changes;
        s->batches_fenced = r->batches_fenced;
        s->instances = r->members > 0 ? (int64_t)r->members : -1;  /* 0: no batch yet */
    }
    s->metrics_port = x->metrics_port;
    pthread_mutex_unlock(&x->mu);
}

/* The endpoint's partitions: the service's, once it exists. */
static size_t fill_partitions(kw_stats_partition_t *out, size_t nmax, void *opaque)
{
    direct_stats_ctx_t *x = opaque;
    size_t n = 0;

    pthread_mutex_lock(&x->mu);
    if (x->d != NULL)
        n = kw_direct_partitions(x->d, out, nmax);
    pthread_mutex_unlock(&x->mu);
    return n;
}

static kw_direct_t *volatile running;
static volatile sig_atomic_t stop_early;   /* a signal before the service ran */

static void on_signal(int sig)
{
    kw_direct_t *d = running;

    (void)sig;
    if (d != NULL)
        kw_direct_stop(d);
    else
        stop_early = 1;
}

static void print_usage(FILE *out)
{
    fputs("Usage: kwal direct -c FILE [-X key=value]... [--at-least-once]\n"
          "       [--stats-json FILE]\n"
          "\n"
          "Direct mode: no receivers, no WAL. Every batch.interval.ms, for every\n"
          "partition of `topics`, read the exact offset range [from, until) -- from\n"
          "where the last batch ended (stored in the sink), until the high watermark\n"
          "or max.rate.per.partition x interval -- and write the records and the\n"
          "ranges to the sink (sqlite or postgresql) in one transaction (exactly\n"
          "once). Then move the ZooKeeper offsets, for monitoring. Partitions with\n"
          "nothing stored start at direct.start.offsets, else auto.offset.reset.\n"
          "Each partition is owned in ZooKeeper by one instance at a time. Runs\n"
          "until SIGTERM/SIGINT.\n"
          "--at-least-once: any sink, written without the ranges; offsets live in\n"
          "ZooKeeper only, stored after the sink write (a crash between the two\n"
          "delivers the batch again), for comparison.\n"
          "--stats-json FILE: write the statistics as one JSON object to FILE every\n"
          "second and at exit (format in common/kw_stats.h).\n"
          "group.id and topics are required. Keys:\n"
          "\n", out);
    kw_conf_print_help(out);
}

int kwal_direct_main(int argc, char **argv)
{
    const char **overrides = calloc((size_t)argc, sizeof(*overrides));
    kw_direct_options_t opts;
    kwal_instance_t inst;
    const char *path = NULL, *stats_path = NULL, *v, *db = NULL;
    kwal_stats_writer_t *stats = NULL;
    kwal_metrics_t *metrics = NULL;
    direct_stats_ctx_t sx;
    kw_direct_t *d = NULL;
    kw_conf_t *conf = NULL;
    char errstr[1024];
    size_t noverrides = 0;
    int rc = KWAL_EXIT_USAGE, at_least_once = 0, mrc;
    kw_err_t err;

    memset(&sx, 0, sizeof(sx));
    memset(&inst, 0, sizeof(inst));
    pthread_mutex_init(&sx.mu, NULL);
    if (overrides == NULL) {
        kw_cli_error("kwal", "out of memory");
        pthread_mutex_destroy(&sx.mu);
        return KWAL_EXIT_FAIL;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int r;

        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            print_usage(stdout);
            rc = KWAL_EXIT_OK;
            goto cleanup;
        } else if (strcmp(a, "--at-least-once") == 0) {
            at_least_once = 1;
        } else if ((r = kw_cli_opt_value(argc, argv, &i, "--stats-json", &v)) != 0) {
            if (r < 0) {
                rc = kw_cli_usage_error_topic("kwal", "direct", "direct: %s needs a file", a);
                goto cleanup;
            }
            stats_path = v;
        } else if ((r = kw_cli_conf_opt(argc, argv, &i, &path, overrides, &noverrides)) != 0) {
            if (r < 0) {
                rc = kw_cli_usage_error_topic("kwal", "direct", "direct: %s needs an argument", a);
                goto cleanup;
            }
        } else {
            rc = kw_cli_usage_error_topic("kwal", "direct", "direct: unexpected argument '%s'", a);
            goto cleanup;
        }
    }
    err = kw_conf_load(path, overrides, noverrides, &conf, errstr, sizeof(errstr));
    if (err != KW_OK) {
        kw_cli_error("kwal", "direct: %s", errstr);
        rc = err == KW_ENOMEM ? KWAL_EXIT_FAIL : KWAL_EXIT_USAGE;
        goto cleanup;
    }
    if (kw_conf_is_set(conf, "log.level"))
        kw_log_set_level((kw_log_level_t)conf->log.level);
    kw_cli_on_stop_signals(on_signal);

    if ((err = kw_direct_check_conf(conf, errstr, sizeof(errstr))) != KW_OK) {
        kw_cli_error("kwal", "direct: %s", errstr);
        rc = KWAL_EXIT_USAGE;
        goto cleanup;
    }
    /* the endpoint first: a port in use stops the start before anything
     * is opened */
    mrc = kwal_metrics_start(conf->metrics.listen, at_least_once ? "direct-at-least-once" :
                             "direct", fill_stats, fill_partitions, &sx, &metrics, errstr,
                             sizeof(errstr));
    if (mrc != KWAL_EXIT_OK) {
        kw_cli_error("kwal", "direct: %s", errstr);
        rc = mrc;
        goto cleanup;
    }
    pthread_mutex_lock(&sx.mu);
    sx.metrics_port = kwal_metrics_port(metrics);
    pthread_mutex_unlock(&sx.mu);
    if (kwal_stats_start(stats_path, at_least_once ? "direct-at-least-once" : "direct",
                         fill_stats, &sx, &stats) != 0) {
        kw_cli_error("kwal", "direct: --stats-json: cannot start its thread");
        rc = KWAL_EXIT_FAIL;
        goto cleanup;
    }
    /* one process per instance of a sqlite database, whose lock and saved
     * ZooKeeper session live beside it; other sinks keep no state here */
    if (conf->receiver.sink != NULL && strncmp(conf->receiver.sink, "sqlite:", 7) == 0 &&
        conf->receiver.sink[7] != '\0')
        db = conf->receiver.sink + 7;
    err = kwal_instance_open(conf, db, 0, "sink", &inst, errstr, sizeof(errstr));
    if (err != KW_OK) {
        kw_cli_error("kwal", "direct: %s", errstr);
        rc = err == KW_ECONFIG ? KWAL_EXIT_USAGE : KWAL_EXIT_FAIL;
        goto cleanup;
    }
    pthread_mutex_lock(&sx.mu);
    sx.inst = &inst;
    pthread_mutex_unlock(&sx.mu);

    memset(&opts, 0, sizeof(opts));
    opts.conf = conf;
    opts.at_least_once = at_least_once;
    opts.zk = inst.zk;
    err = kw_direct_new(&opts, &d, errstr, sizeof(errstr));
    if (err != KW_OK) {
        kw_cli_error("kwal", "direct: %s", errstr);
        rc = err == KW_ECONFIG ? KWAL_EXIT_USAGE : KWAL_EXIT_FAIL;
        goto cleanup;
    }
    pthread_mutex_lock(&sx.mu);
    sx.d = d;
    pthread_mutex_unlock(&sx.mu);
    running = d;
    if (stop_early)
        kw_direct_stop(d);
    err = kw_direct_run(d, errstr, sizeof(errstr));
    running = NULL;
    if (err != KW_OK) {
        kw_cli_error("kwal", "direct: %s", errstr);
        rc = KWAL_EXIT_FAIL;
    } else {
        rc = KWAL_EXIT_OK;
    }

cleanup:
    kwal_metrics_stop(metrics);        /* before the service and sx go */
    pthread_mutex_lock(&sx.mu);
    if (sx.d != NULL) {
        kw_direct_stats(sx.d, &sx.last);   /* the final numbers */
        sx.have_last = 1;
        sx.d = NULL;
    }
    pthread_mutex_unlock(&sx.mu);
    kw_direct_destroy(d);
    kwal_stats_finish(stats);
    pthread_mutex_lock(&sx.mu);
    sx.inst = NULL;
    pthread_mutex_unlock(&sx.mu);
    kwal_instance_close(&inst);
    pthread_mutex_destroy(&sx.mu);
    kw_conf_destroy(conf);
    free(overrides);
    return rc;
}
