/*
 * kwal_receive_cmd.c -- `kwal receive -c FILE [-X key=value]... [--classic]
 *                       [--skip-corrupt] [--no-wal]`:
 * receiver mode as a long-running service (receiver/receiver.h), and
 * `kwal recover` (recovery/recovery.h alone).
 *
 * Loads the configuration (the one table of common/kw_conf.c), builds the
 * WAL's options from its wal.* keys (kwal_wal_options_from_conf), runs
 * recovery (replay of unacknowledged blocks, ZooKeeper repair unless
 * --classic), then -- for receive -- creates the service and runs it until
 * SIGTERM or SIGINT, whose handler only calls kw_receiver_stop()
 * (async-signal-safe). `receive --no-wal` (the unreliable baseline, see
 * receiver.h) runs no recovery and opens no WAL: it says so at WARN, and
 * refuses --classic and --skip-corrupt, which only mean something for
 * recovery. Logs go to stderr at log.level; a long replay shows
 * a progress bar on a terminal, a line every 2 s otherwise. Exit 0 after a
 * requested stop with everything delivered (recover: after recovery); 1
 * with a one-line reason on a fatal error; 2 for bad arguments or
 * configuration.
 */
#include "kwal.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <time.h>
#include <unistd.h>

#include "kw_log.h"
#include "kw_time.h"
#include "receiver.h"
#include "recovery.h"

/* What --stats-json and the metrics endpoint report: the recovery report,
 * then the service's live counters (mu guards rcv, which the main thread
 * clears before destroying the service; last keeps its final numbers).
 * latency is the one histogram recovery's replay and then the service's
 * batcher add to (atomic: read without mu). fill_stats runs on the
 * --stats-json writer's thread and on the endpoint's, at once: it touches
 * last and the rest only under mu. */
typedef struct rcv_stats_ctx {
    pthread_mutex_t      mu;
    kw_receiver_t       *rcv;
    kw_receiver_stats_t  last;
    int                  have_last;
    kw_recovery_report_t rep;
    int                  have_rep;
    int                  classic;
    kwal_instance_t     *inst;      /* while open */
    int                  metrics_port;
    kw_hist_t            latency;
} rcv_stats_ctx_t;

static int64_t since(int64_t mono, int64_t start_mono)
{
    return mono > 0 ? mono - start_mono : -1;
}

static void fill_stats(kw_stats_t *s, int64_t start_mono, void *opaque)
{
    rcv_stats_ctx_t *x = opaque;
    kw_hist_summary_t latency;

    kw_hist_summarize(&x->latency, &latency);
    kw_stats_set_latency(s, &latency);
    pthread_mutex_lock(&x->mu);
    if (x->rcv != NULL) {
        kw_receiver_stats(x->rcv, &x->last);
        x->have_last = 1;
    }
    if (x->inst != NULL)
        kwal_instance_stats(x->inst, start_mono, s);
    if (x->have_rep) {
        s->recovery_wal_open_ms = x->rep.wal_open_ms;
        s->recovery_tracker_ms = x->rep.tracker_ms;
        s->recovery_replay_ms = x->rep.replay_ms;
        s->recovery_zk_ms = x->rep.zk_ms;
        s->blocks_replayed = x->rep.blocks_replayed;
        s->records_replayed = x->rep.records_replayed;
        s->blocks_lost = x->rep.blocks_lost;
        s->records_lost = x->rep.records_lost;
        s->recovery_ms = x->rep.elapsed_ms;
        s->recovery_classic = x->classic;
        s->records_delivered = x->rep.records_replayed;
        s->records_stored = x->rep.records_stored;
        s->duplicate_deliveries = x->rep.duplicates_delivered;
        s->batches = x->rep.batches_replayed;
        s->wal_segments_cleaned = x->rep.segments_cleaned;
        s->recovery_blocks_registered = x->rep.blocks_registered;
        s->recovery_tracker_rebuilt = x->rep.tracker_rebuilt || x->rep.tracker_created;
        s->recovery_partitions_moved = x->rep.partitions_moved;
        s->wal_torn_tails = x->rep.wal.torn_tails;
        s->wal_corrupt_records = x->rep.wal.corrupt_records;
    }
    if (x->have_last) {
        const kw_receiver_stats_t *r = &x->last;

        s->records_received = r->records_received;
        s->records_delivered += r->records_delivered;
        s->records_stored += r->records_stored;
        s->duplicate_deliveries += r->duplicates_delivered;
        s->batches += r->batches;
        s->source_loss_events = r->source_loss_events;
        s->source_loss_records = r->source_loss_records;
        s->blocks_durable = r->blocks_durable;
        s->wal_bytes = r->wal_bytes;
        s->wal_fsyncs = r->wal_fsyncs;
        s->wal_replicas_healthy = r->wal_replicas_healthy;
        s->zk_writes = r->zk_writes;
        s->receiver_restarts = r->receiver_restarts;
        s->partitions_owned = r->partitions_owned;
        s->first_assignment_ms = since(r->first_assignment_mono_ms, start_mono);
        s->first_stored_ms = since(r->first_stored_mono_ms, start_mono);
        s->wal_segments_cleaned += r->segments_cleaned;
        s->partitions_assigned_stored = r->assigned_stored;
        s->partitions_assigned_reset = r->assigned_reset;
        s->partitions_revoked = r->revoked;
        s->blocks_offsets_stored = r->blocks_offsets_stored;
        s->blocks_fenced = r->blocks_fenced;
        s->pauses = r->pauses;
        s->quorum_pauses = r->quorum_pauses;
        s->end_advances = r->end_advances;
        s->zk_retries = r->zk_retries;
        s->batch_ms = r->batch_ms;
        s->wal_fsync_us = r->wal_fsync_us;
        /* a partition is taken at its assignment and given up at its revoke */
        s->owner_changes = r->assigned_stored + r->assigned_reset + r->revoked;
    }
    s->metrics_port = x->metrics_port;
    pthread_mutex_unlock(&x->mu);
}

/* The endpoint's partitions: the service's, once it exists. */
static size_t fill_partitions(kw_stats_partition_t *out, size_t nmax, void *opaque)
{
    rcv_stats_ctx_t *x = opaque;
    size_t n = 0;

    pthread_mutex_lock(&x->mu);
    if (x->rcv != NULL)
        n = kw_receiver_partitions(x->rcv, out, nmax);
    pthread_mutex_unlock(&x->mu);
    return n;
}

static kw_receiver_t *volatile running;
static volatile sig_atomic_t stop_early;   /* a signal before the service ran */

static void on_signal(int sig)
{
    kw_receiver_t *r = running;

    (void)sig;
    stop_early = 1;
    if (r != NULL)
        kw_receiver_stop(r);
}

static void print_receive_usage(FILE *out, int recover_only)
{
    if (recover_only)
        fputs("Usage: kwal recover -c FILE [-X key=value]... [--classic]\n"
              "       [--skip-corrupt] [--stats-json FILE]\n"
              "\n"
              "Recovery alone: open the WAL (torn tails cut, replicas reconciled),\n"
              "register in the tracker the blocks it lacks (rebuild it if it is\n"
              "missing or unreadable), replay every durable block the sink has not\n"
              "acknowledged, and move each partition's ZooKeeper offset forward to\n"
              "cover the blocks in the WAL (not with --classic). Consumes nothing.\n"
              "A block that is corrupt on every WAL replica stops recovery with an\n"
              "error naming its LSN and Kafka offset ranges; --skip-corrupt gives it\n"
              "up instead: its records are lost, and each lost range is logged.\n"
              "group.id is required. Keys:\n"
              "\n", out);
    else
        fputs("Usage: kwal receive -c FILE [-X key=value]... [--classic]\n"
              "       [--skip-corrupt] [--no-wal] [--stats-json FILE]\n"
              "\n"
              "Receiver mode: first recovery (as kwal recover), then receiver threads\n"
              "consume topics in consumer group group.id, cut blocks, append them to\n"
              "the WAL, store the offsets in ZooKeeper, and deliver batches to the\n"
              "sink. Runs until SIGTERM or SIGINT, then flushes every receiver, drains\n"
              "the pipeline, delivers the last batch and exits 0.\n"
              "--classic: recovery replays but does not repair ZooKeeper (Spark 1.2's\n"
              "reliable receiver, for comparison: records consumed again after a crash).\n"
              "--skip-corrupt: recovery gives up blocks corrupt on every WAL replica\n"
              "(see kwal recover --help) instead of stopping.\n"
              "--stats-json FILE: write the statistics as one JSON object to FILE\n"
              "every second and at exit (replaced atomically; format in\n"
              "common/kw_stats.h).\n"
              "--no-wal: the unreliable receiver, a baseline for comparison (Spark's\n"
              "receiver before its WAL): no recovery, no WAL, no tracker; offsets go\n"
              "to ZooKeeper as soon as a block is received, and blocks wait in memory\n"
              "for the next batch. A crash loses what was received but not yet\n"
              "delivered; a stop (SIGTERM) delivers it. Not with --classic or\n"
              "--skip-corrupt.\n"
              "group.id and topics are required. Keys:\n"
              "\n", out);
    kw_conf_print_help(out);
}

/* Progress of a replay: a bar on a terminal, a line every 2 s otherwise. */
static void show_progress(const kw_recovery_progress_t *p, void *opaque)
{
    static int64_t last;
    int tty = *(const int *)opaque;
    int64_t now = kw_mono_ms();
    if (tty) {
        int width = 40, fill = p->blocks_total > 0 ?
            (int)(p->blocks_done * (uint64_t)width / p->blocks_total) : width;

        fprintf(stderr, "\rrecovery: [%.*s%*s] %llu/%llu blocks, %llu records",
                fill, "########################################", width - fill, "",
                (unsigned long long)p->blocks_done, (unsigned long long)p->blocks_total,
                (unsigned long long)p->records_done);
        if (p->blocks_done >= p->blocks_total)
            fputc('\n', stderr);
    } else if (now - last >= 2000 || p->blocks_done >= p->blocks_total) {
        last = now;
        KW_LOG_I("recovery", "replayed %llu of %llu blocks (%llu records)",
                 (unsigned long long)p->blocks_done, (unsigned long long)p->blocks_total,
                 (unsigned long long)p->records_done);
    }
}

static int receive_or_recover(int argc, char **argv, int recover_only)
{
    const char *topic = recover_only ? "recover" : "receive";
    kw_recovery_options_t ropts;
    kw_recovery_kept_t kept = { 0 };
    kw_receiver_options_t rcvopts;
    int classic = 0, skip_corrupt = 0, no_wal = 0, tty = isatty(STDERR_FILENO);
    const char **overrides = NULL;
    const char *path = NULL, *stats_path = NULL, *v;
    kwal_stats_writer_t *stats = NULL;
    kwal_metrics_t *metrics = NULL;
    rcv_stats_ctx_t sx;
    kw_receiver_t *rcv = NULL;
    kwal_instance_t inst;
    kw_wal_options_t wopts;
    char errstr[1024];
    kw_conf_t *conf = NULL;
    size_t noverrides = 0;
    int rc = KWAL_EXIT_USAGE;
    kw_err_t err;

    memset(&sx, 0, sizeof(sx));
    memset(&inst, 0, sizeof(inst));
    pthread_mutex_init(&sx.mu, NULL);
    kw_hist_init(&sx.latency);
    overrides = calloc((size_t)argc, sizeof(*overrides));
    if (overrides == NULL) {
        kw_cli_error("kwal", "out of memory");
        return KWAL_EXIT_FAIL;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int r;

        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            print_receive_usage(stdout, recover_only);
            rc = KWAL_EXIT_OK;
            goto cleanup;
        } else if (strcmp(a, "--classic") == 0) {
            classic = 1;
        } else if (strcmp(a, "--skip-corrupt") == 0) {
            skip_corrupt = 1;
        } else if (!recover_only && strcmp(a, "--no-wal") == 0) {
            no_wal = 1;
        } else if ((r = kw_cli_opt_value(argc, argv, &i, "--stats-json", &v)) != 0) {
            if (r < 0) {
                rc = kw_cli_usage_error_topic("kwal", topic, "%s: %s needs a file", topic, a);
                goto cleanup;
            }
            stats_path = v;
        } else if ((r = kw_cli_conf_opt(argc, argv, &i, &path, overrides,
                                      &noverrides)) != 0) {
            if (r < 0) {
                rc = kw_cli_usage_error_topic("kwal", topic, "%s: %s needs an argument", topic, a);
                goto cleanup;
            }
        } else {
            rc = kw_cli_usage_error_topic("kwal", topic, "%s: unexpected argument '%s'", topic, a);
            goto cleanup;
        }
    }
    if (no_wal && (classic || skip_corrupt)) {
        /* one line: a contradiction, not a typo to point at --help for */
        kw_cli_error("kwal", "receive: --no-wal cannot be combined with %s (there is no WAL and "
                   "no recovery)", classic ? "--classic" : "--skip-corrupt");
        goto cleanup;
    }
    err = kw_conf_load(path, overrides, noverrides, &conf, errstr, sizeof(errstr));
    if (err != KW_OK) {
        kw_cli_error("kwal", "%s: %s", topic, errstr);
        rc = err == KW_ENOMEM ? KWAL_EXIT_FAIL : KWAL_EXIT_USAGE;
        goto cleanup;
    }
    if (kw_conf_is_set(conf, "log.level"))
        kw_log_set_level((kw_log_level_t)conf->log.level);
    if (!no_wal) {
        err = kwal_wal_options_from_conf(conf, NULL, 0, &wopts, errstr, sizeof(errstr));
        if (err != KW_OK) {
            kw_cli_error("kwal", "%s: %s", topic, errstr);
            goto cleanup;
        }
    }
    /* the service checks these too; say so before recovery does any work */
    if (conf->receiver.group_id == NULL || conf->receiver.group_id[0] == '\0') {
        kw_cli_error("kwal", "%s: group.id: required by kwal %s", topic, topic);
        goto cleanup;
    }
    if (!recover_only && conf->receiver.topics.count == 0) {
        kw_cli_error("kwal", "receive: topics: required by kwal receive");
        goto cleanup;
    }

    /* SIGTERM/SIGINT from here on: recovery finishes (it is bounded and
     * leaves nothing half done), then the service is not started, or is
     * stopped in order */
    kw_cli_on_stop_signals(on_signal);

    sx.classic = classic;
    /* the endpoint first, so that a port in use stops the start before
     * anything is opened, and recovery can be watched from it */
    if (!recover_only) {
        int mrc = kwal_metrics_start(conf->metrics.listen, no_wal ? "receive-no-wal" :
                                     "receive", fill_stats, fill_partitions, &sx, &metrics,
                                     errstr, sizeof(errstr));

        if (mrc != KWAL_EXIT_OK) {
            kw_cli_error("kwal", "%s: %s", topic, errstr);
            rc = mrc;
            goto cleanup;
        }
        pthread_mutex_lock(&sx.mu);
        sx.metrics_port = kwal_metrics_port(metrics);
        pthread_mutex_unlock(&sx.mu);
    }
    if (kwal_stats_start(stats_path, recover_only ? "recover" : no_wal ? "receive-no-wal" :
                         "receive", fill_stats, &sx, &stats) != 0) {
        kw_cli_error("kwal", "%s: --stats-json: cannot start its thread", topic);
        rc = KWAL_EXIT_FAIL;
        goto cleanup;
    }
    /* one process per WAL; the ZooKeeper session of a crashed predecessor
     * resumed, so that nothing below waits for it to expire */
    err = kwal_instance_open(conf, no_wal ? NULL : wopts.dirs[0], 1, "wal.dirs", &inst,
                             errstr, sizeof(errstr));
    if (err != KW_OK) {
        kw_cli_error("kwal", "%s: %s", topic, errstr);
        rc = err == KW_ECONFIG ? KWAL_EXIT_USAGE : KWAL_EXIT_FAIL;
        goto cleanup;
    }
    pthread_mutex_lock(&sx.mu);
    sx.inst = &inst;
    pthread_mutex_unlock(&sx.mu);
    if (no_wal) {
        KW_LOG_W("receive", "--no-wal: no WAL, no recovery; records received but not "
                 "yet delivered are lost on a crash");
    } else {
        kw_recovery_options_init(&ropts);
        ropts.conf = conf;
        ropts.wal_opts = &wopts;
        ropts.classic = classic;
        ropts.skip_corrupt = skip_corrupt;
        ropts.progress = show_progress;
        ropts.opaque = &tty;
        ropts.zk = inst.zk;
        ropts.latency = &sx.latency;
        if (!recover_only)
            ropts.keep = &kept;     /* the receivers go on with them */
        err = kw_recovery_run(&ropts, &sx.rep, errstr, sizeof(errstr));
        pthread_mutex_lock(&sx.mu);
        sx.have_rep = err == KW_OK;
        pthread_mutex_unlock(&sx.mu);
        kwal_stats_kick(stats);     /* recovery_ms for whoever waits on it */
        if (err != KW_OK) {
            kw_cli_error("kwal", "%s: recovery: %s", topic, errstr);
            rc = err == KW_ECONFIG ? KWAL_EXIT_USAGE : KWAL_EXIT_FAIL;
            goto cleanup;
        }
    }
    if (recover_only) {
        rc = KWAL_EXIT_OK;
        goto cleanup;
    }

    kw_receiver_options_init(&rcvopts);
    rcvopts.no_wal = no_wal;
    rcvopts.zk = inst.zk;
    rcvopts.latency = &sx.latency;      /* on from recovery's */
    rcvopts.wal = kept.wal;             /* recovery's handles, now the service's */
    rcvopts.tracker = kept.tracker;
    rcvopts.sink = kept.sink;
    memset(&kept, 0, sizeof(kept));
    err = kw_receiver_new_opts(conf, no_wal ? NULL : &wopts, &rcvopts, &rcv, errstr,
                               sizeof(errstr));
    if (err != KW_OK) {
        kw_cli_error("kwal", "receive: %s", errstr);
        rc = err == KW_ECONFIG ? KWAL_EXIT_USAGE : KWAL_EXIT_FAIL;
        goto cleanup;
    }

    pthread_mutex_lock(&sx.mu);
    sx.rcv = rcv;
    pthread_mutex_unlock(&sx.mu);
    running = rcv;
    if (stop_early) {
        /* SIGTERM during recovery: everything durable is delivered; stop */
        KW_LOG_I("receive", "stop requested during recovery: not consuming");
        rc = KWAL_EXIT_OK;
        goto cleanup;
    }

    err = kw_receiver_run(rcv, errstr, sizeof(errstr));
    running = NULL;
    if (err != KW_OK) {
        kw_cli_error("kwal", "receive: %s", errstr);
        rc = KWAL_EXIT_FAIL;
    } else {
        rc = KWAL_EXIT_OK;
    }

cleanup:
    kwal_metrics_stop(metrics);        /* before the service and sx go */
    pthread_mutex_lock(&sx.mu);
    if (sx.rcv != NULL) {
        kw_receiver_stats(sx.rcv, &sx.last);   /* the final numbers */
        sx.have_last = 1;
        sx.rcv = NULL;
    }
    pthread_mutex_unlock(&sx.mu);
    kwal_stats_finish(stats);
    pthread_mutex_destroy(&sx.mu);
    kw_receiver_destroy(rcv);
    kw_recovery_kept_close(&kept);
    kwal_instance_close(&inst);
    kw_conf_destroy(conf);
    free(overrides);
    return rc;
}

int kwal_receive_main(int argc, char **argv)
{
    return receive_or_recover(argc, argv, 0);
}

int kwal_recover_main(int argc, char **argv)
{
    return receive_or_recover(argc, argv, 1);
}
