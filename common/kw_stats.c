/* kw_stats.c -- see kw_stats.h. */
#include "kw_stats.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "kw_file.h"

void kw_stats_init(kw_stats_t *s, const char *mode)
{
    memset(s, 0, sizeof(*s));
    s->mode = mode;
    s->recovery_ms = -1;
    s->wal_replicas_healthy = -1;
    s->first_assignment_ms = -1;
    s->first_stored_ms = -1;
    s->zk_session_ms = -1;
    s->recovery_wal_open_ms = -1;
    s->recovery_tracker_ms = -1;
    s->recovery_replay_ms = -1;
    s->recovery_zk_ms = -1;
    s->latency_ms_p50 = -1;
    s->latency_ms_p90 = -1;
    s->latency_ms_p99 = -1;
    s->latency_ms_max = -1;
    s->batch_ms.p50 = s->batch_ms.p90 = s->batch_ms.p99 = s->batch_ms.max = -1;
    s->wal_fsync_us.p50 = s->wal_fsync_us.p90 = s->wal_fsync_us.p99 = -1;
    s->wal_fsync_us.max = -1;
    s->instances = -1;
}

void kw_stats_set_latency(kw_stats_t *s, const kw_hist_summary_t *l)
{
    s->latency_records = l->count;
    s->latency_ms_p50 = l->p50;
    s->latency_ms_p90 = l->p90;
    s->latency_ms_p99 = l->p99;
    s->latency_ms_max = l->max;
}

size_t kw_stats_format_json(const kw_stats_t *s, char *buf, size_t cap)
{
    int n = snprintf(buf, cap,
        "{\"version\":%d,\"mode\":\"%s\",\"final\":%s,\"pid\":%ld,"
        "\"started_ms\":%" PRId64 ",\"uptime_ms\":%" PRId64 ","
        "\"records_received\":%" PRIu64 ",\"records_delivered\":%" PRIu64 ","
        "\"records_stored\":%" PRIu64 ",\"duplicate_deliveries\":%" PRIu64 ","
        "\"batches\":%" PRIu64 ",\"source_loss_events\":%" PRIu64 ","
        "\"source_loss_records\":%" PRIu64 ",\"blocks_durable\":%" PRIu64 ","
        "\"blocks_replayed\":%" PRIu64 ",\"records_replayed\":%" PRIu64 ","
        "\"blocks_lost\":%" PRIu64 ",\"records_lost\":%" PRIu64 ","
        "\"recovery_ms\":%" PRId64 ",\"recovery_classic\":%d,"
        "\"wal_bytes\":%" PRIu64 ",\"wal_fsyncs\":%" PRIu64 ","
        "\"wal_replicas_healthy\":%" PRId64 ",\"zk_writes\":%" PRIu64 ","
        "\"receiver_restarts\":%" PRIu64 ",\"partitions_owned\":%" PRIu64 ","
        "\"first_assignment_ms\":%" PRId64 ",\"first_stored_ms\":%" PRId64 ","
        "\"wal_segments_cleaned\":%" PRIu64 ",\"partitions_assigned_stored\":%" PRIu64 ","
        "\"partitions_assigned_reset\":%" PRIu64 ",\"partitions_revoked\":%" PRIu64 ","
        "\"blocks_offsets_stored\":%" PRIu64 ",\"blocks_fenced\":%" PRIu64 ","
        "\"pauses\":%" PRIu64 ",\"quorum_pauses\":%" PRIu64 ",\"end_advances\":%" PRIu64
        ",\"zk_retries\":%" PRIu64 ","
        "\"recovery_blocks_registered\":%" PRIu64 ","
        "\"recovery_tracker_rebuilt\":%" PRIu64 ","
        "\"recovery_partitions_moved\":%" PRIu64 ","
        "\"wal_torn_tails\":%" PRIu64 ","
        "\"wal_corrupt_records\":%" PRIu64 ","
        "\"partitions_busy\":%" PRIu64 ","
        "\"short_reads\":%" PRIu64 ","
        "\"zk_failures\":%" PRIu64 ",",
        KW_STATS_JSON_VERSION, s->mode != NULL ? s->mode : "", s->final ? "true" : "false",
        (long)getpid(), s->started_ms, s->uptime_ms, s->records_received,
        s->records_delivered, s->records_stored, s->duplicate_deliveries, s->batches,
        s->source_loss_events, s->source_loss_records, s->blocks_durable,
        s->blocks_replayed, s->records_replayed, s->blocks_lost, s->records_lost,
        s->recovery_ms, s->recovery_classic ? 1 : 0, s->wal_bytes, s->wal_fsyncs,
        s->wal_replicas_healthy, s->zk_writes, s->receiver_restarts, s->partitions_owned,
        s->first_assignment_ms, s->first_stored_ms, s->wal_segments_cleaned,
        s->partitions_assigned_stored, s->partitions_assigned_reset, s->partitions_revoked,
        s->blocks_offsets_stored, s->blocks_fenced, s->pauses, s->quorum_pauses, s->end_advances, s->zk_retries,
        s->recovery_blocks_registered, s->recovery_tracker_rebuilt, s->recovery_partitions_moved, s->wal_torn_tails, s->wal_corrupt_records, s->partitions_busy, s->short_reads, s->zk_failures);

    if (n < 0)
        return 0;
    size_t used = (size_t)n;
    /* the start-up phases (DESIGN.md, "Resuming after a crash") */
    n = snprintf(used < cap ? buf + used : NULL, used < cap ? cap - used : 0,
        "\"zk_session_resumed\":%d,\"zk_session_ms\":%" PRId64 ","
        "\"zk_owner_nodes_inherited\":%" PRIu64 ",\"zk_owner_nodes_released\":%" PRIu64 ","
        "\"recovery_wal_open_ms\":%" PRId64 ",\"recovery_tracker_ms\":%" PRId64 ","
        "\"recovery_replay_ms\":%" PRId64 ",\"recovery_zk_ms\":%" PRId64 ",",
        s->zk_session_resumed ? 1 : 0, s->zk_session_ms, s->zk_owner_nodes_inherited,
        s->zk_owner_nodes_released, s->recovery_wal_open_ms, s->recovery_tracker_ms,
        s->recovery_replay_ms, s->recovery_zk_ms);
    if (n < 0)
        return 0;
    used += (size_t)n;
    /* end-to-end latency (kw_stats.h) */
    n = snprintf(used < cap ? buf + used : NULL, used < cap ? cap - used : 0,
        "\"latency_records\":%" PRIu64 ",\"latency_ms_p50\":%" PRId64 ","
        "\"latency_ms_p90\":%" PRId64 ",\"latency_ms_p99\":%" PRId64 ","
        "\"latency_ms_max\":%" PRId64 ",",
        s->latency_records, s->latency_ms_p50, s->latency_ms_p90, s->latency_ms_p99,
        s->latency_ms_max);
    if (n < 0)
        return 0;
    used += (size_t)n;
    /* for the metrics endpoint (kw_stats.h) */
    n = snprintf(used < cap ? buf + used : NULL, used < cap ? cap - used : 0,
        "\"batch_ms_count\":%" PRIu64 ",\"batch_ms_p50\":%" PRId64 ","
        "\"batch_ms_p90\":%" PRId64 ",\"batch_ms_p99\":%" PRId64 ","
        "\"batch_ms_max\":%" PRId64 ",\"wal_fsync_us_count\":%" PRIu64 ","
        "\"wal_fsync_us_p50\":%" PRId64 ",\"wal_fsync_us_p90\":%" PRId64 ","
        "\"wal_fsync_us_p99\":%" PRId64 ",\"wal_fsync_us_max\":%" PRId64 ","
        "\"owner_changes\":%" PRIu64 ",\"instances\":%" PRId64 ","
        "\"metrics_port\":%d,\"batches_fenced\":%" PRIu64 "}\n",
        s->batch_ms.count, s->batch_ms.p50, s->batch_ms.p90, s->batch_ms.p99,
        s->batch_ms.max, s->wal_fsync_us.count, s->wal_fsync_us.p50, s->wal_fsync_us.p90,
        s->wal_fsync_us.p99, s->wal_fsync_us.max, s->owner_changes, s->instances,
        s->metrics_port, s->batches_fenced);
    return n < 0 ? 0 : used + (size_t)n;
}

/* ---- Prometheus text (kw_stats.h) ---- */

/* Where the text goes; len counts what did not fit too (as snprintf). */
typedef struct prom_out {
    char  *buf;
    size_t cap, len;
} prom_out_t;

static void put(prom_out_t *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(prom_out_t *o, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(o->len < o->cap ? o->buf + o->len : NULL,
                  o->len < o->cap ? o->cap - o->len : 0, fmt, ap);
    va_end(ap);
    if (n > 0)
        o->len += (size_t)n;
}

/* v (>= 0) divided by 10^digits, exactly: 1234 ms with 3 digits is 1.234. */
static void put_scaled(prom_out_t *o, int64_t v, int digits)
{
    int64_t div = 1;

    for (int i = 0; i < digits; i++)
        div *= 10;
    put(o, "%" PRId64 ".%0*" PRId64, v / div, digits, v % div);
}

/* A label value, escaped as the format says (backslash, quote, line feed). */
static void put_label_value(prom_out_t *o, const char *v)
{
    if (strpbrk(v, "\\\"\n") == NULL) {
        put(o, "%s", v);
        return;
    }
    for (; *v != '\0'; v++) {
        if (*v == '\\')
            put(o, "\\\\");
        else if (*v == '"')
            put(o, "\\\"");
        else if (*v == '\n')
            put(o, "\\n");
        else
            put(o, "%c", *v);
    }
}

static void put_family(prom_out_t *o, const char *name, const char *type, const char *help)
{
    put(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* How a field of kw_stats_t becomes a sample. */
enum {
    PROM_U64,       /* uint64_t, as it is */
    PROM_I64,       /* int64_t, -1: not known (left out) */
    PROM_FLAG,      /* int, 0 or 1 */
    PROM_MS         /* int64_t ms, as seconds; -1: not known (left out) */
};

typedef struct prom_metric {
    const char *name;
    const char *type;
    int         kind;
    size_t      off;
    const char *help;
} prom_metric_t;

#define PROM_COUNTER(name, field, help) \
    { "kwal_" name "_total", "counter", PROM_U64, offsetof(kw_stats_t, field), help }
#define PROM_GAUGE(name, kind, field, help) \
    { "kwal_" name, "gauge", kind, offsetof(kw_stats_t, field), help }

/* The fields of kw_stats_t, in the JSON's order, but for mode (kwal_info),
 * final, pid (the process is the target), and the histograms (summaries,
 * below). */
static const prom_metric_t prom_metrics[] = {
    PROM_GAUGE("start_time_seconds", PROM_MS, started_ms,
               "Wall clock when this process started, in seconds since the Unix epoch."),
    PROM_GAUGE("uptime_seconds", PROM_MS, uptime_ms, "Seconds since this process started."),
    PROM_COUNTER("records_received", records_received,
                 "Records taken from Kafka (direct mode: records read)."),
    PROM_COUNTER("records_delivered", records_delivered,
                 "Records handed to the sink, recovery's replay included."),
    PROM_COUNTER("records_stored", records_stored, "Records the sink stored."),
    PROM_COUNTER("duplicate_deliveries", duplicate_deliveries,
                 "Records delivered that the sink already had (invariant 3: counted, "
                 "never hidden)."),
    PROM_COUNTER("batches", batches, "Batches the sink acknowledged."),
    PROM_COUNTER("source_loss_events", source_loss_events,
                 "Times Kafka no longer had the offsets needed (invariant 6)."),
    PROM_COUNTER("source_loss_records", source_loss_records,
                 "Offsets lost at the source (no longer in Kafka when needed)."),
    PROM_COUNTER("blocks_durable", blocks_durable,
                 "Blocks appended to the WAL on its write quorum."),
    PROM_COUNTER("blocks_replayed", blocks_replayed,
                 "Blocks recovery replayed into the sink at the start."),
    PROM_COUNTER("records_replayed", records_replayed,
                 "Records recovery replayed into the sink at the start."),
    PROM_COUNTER("blocks_lost", blocks_lost,
                 "Blocks corrupt on every WAL replica that recovery gave up (--skip-corrupt)."),
    PROM_COUNTER("records_lost", records_lost, "Records of the blocks recovery gave up."),
    PROM_GAUGE("recovery_seconds", PROM_MS, recovery_ms,
               "How long recovery took at the start (absent: no recovery ran)."),
    PROM_GAUGE("recovery_classic", PROM_FLAG, recovery_classic,
               "1: recovery ran without repairing ZooKeeper (--classic)."),
    PROM_COUNTER("wal_written_bytes", wal_bytes,
                 "Bytes written to each WAL replica, record headers included, since the "
                 "WAL was last opened."),
    PROM_COUNTER("wal_fsyncs", wal_fsyncs,
                 "fdatasync calls of the WAL, all replicas, since it was last opened."),
    PROM_GAUGE("wal_replicas_healthy", PROM_I64, wal_replicas_healthy,
               "Healthy WAL replicas (absent: no WAL open)."),
    PROM_COUNTER("zk_writes", zk_writes, "Offset updates stored in ZooKeeper."),
    PROM_COUNTER("receiver_restarts", receiver_restarts,
                 "Receiver threads restarted after a failure."),
    PROM_GAUGE("partitions_owned", PROM_U64, partitions_owned,
               "Partitions this instance owns now (direct mode: read in the last batch)."),
    PROM_GAUGE("first_assignment_seconds", PROM_MS, first_assignment_ms,
               "Seconds from the start to the first partition owned (absent: none yet)."),
    PROM_GAUGE("first_stored_seconds", PROM_MS, first_stored_ms,
               "Seconds from the start to the first record stored (absent: none yet)."),
    PROM_COUNTER("wal_segments_cleaned", wal_segments_cleaned,
                 "WAL segments removed after the sink acknowledged their blocks."),
    PROM_COUNTER("partitions_assigned_stored", partitions_assigned_stored,
                 "Partitions assigned that went on from their stored offset."),
    PROM_COUNTER("partitions_assigned_reset", partitions_assigned_reset,
                 "Partitions assigned without a stored offset (auto.offset.reset)."),
    PROM_COUNTER("partitions_revoked", partitions_revoked,
                 "Partitions given up after their last block was made durable."),
    PROM_COUNTER("blocks_offsets_stored", blocks_offsets_stored,
                 "Blocks whose offsets reached ZooKeeper."),
    PROM_COUNTER("blocks_fenced", blocks_fenced,
                 "Blocks whose offsets were refused: the partition was no longer owned "
                 "(invariant 4)."),
    PROM_COUNTER("pauses", pauses, "Times consumption paused for back-pressure (invariant 5)."),
    PROM_COUNTER("quorum_pauses", quorum_pauses,
                 "Times the WAL fell below its write quorum and consumption paused."),
    PROM_COUNTER("end_advances", end_advances,
                 "Offsets moved past a gap at a partition's end that holds no record."),
    PROM_COUNTER("zk_retries", zk_retries, "ZooKeeper offset updates retried."),
    PROM_GAUGE("recovery_blocks_registered", PROM_U64, recovery_blocks_registered,
               "Blocks the tracker lacked that recovery found in the WAL."),
    PROM_GAUGE("recovery_tracker_rebuilt", PROM_U64, recovery_tracker_rebuilt,
               "1: recovery rebuilt a missing or unreadable tracker from the WAL."),
    PROM_GAUGE("recovery_partitions_moved", PROM_U64, recovery_partitions_moved,
               "ZooKeeper offsets recovery moved forward over the WAL."),
    PROM_GAUGE("wal_torn_tails", PROM_U64, wal_torn_tails,
               "Replicas whose torn tail the last WAL open cut."),
    PROM_GAUGE("wal_corrupt_records", PROM_U64, wal_corrupt_records,
               "Records bad on one replica and served by another at the last WAL open."),
    PROM_COUNTER("partitions_busy", partitions_busy,
                 "Partitions skipped because another instance owned them (direct mode)."),
    PROM_COUNTER("short_reads", short_reads,
                 "Ranges cut short at the read deadline (direct mode)."),
    PROM_COUNTER("zk_failures", zk_failures,
                 "ZooKeeper offset updates that failed and were redone later (direct mode)."),
    PROM_GAUGE("zk_session_resumed", PROM_FLAG, zk_session_resumed,
               "1: the ZooKeeper session of a crashed predecessor was resumed."),
    PROM_GAUGE("zk_session_seconds", PROM_MS, zk_session_ms,
               "Seconds from the start to the ZooKeeper session ready (absent: not yet)."),
    PROM_GAUGE("zk_owner_nodes_inherited", PROM_U64, zk_owner_nodes_inherited,
               "Owner nodes the resumed ZooKeeper session held."),
    PROM_GAUGE("zk_owner_nodes_released", PROM_U64, zk_owner_nodes_released,
               "Inherited owner nodes given up because they were not taken back."),
    PROM_GAUGE("recovery_wal_open_seconds", PROM_MS, recovery_wal_open_ms,
               "Recovery's WAL open (absent: no recovery ran)."),
    PROM_GAUGE("recovery_tracker_seconds", PROM_MS, recovery_tracker_ms,
               "Recovery's tracker reconciliation (absent: no recovery ran)."),
    PROM_GAUGE("recovery_replay_seconds", PROM_MS, recovery_replay_ms,
               "Recovery's replay (absent: no recovery ran)."),
    PROM_GAUGE("recovery_zk_seconds", PROM_MS, recovery_zk_ms,
               "Recovery's ZooKeeper repair (absent: no recovery ran)."),
    PROM_COUNTER("owner_changes", owner_changes, "Partitions this process took or gave up."),
    PROM_COUNTER("batches_fenced", batches_fenced,
                 "Direct mode: batches the sink's range fence refused (another instance "
                 "had stored a range of one of their partitions)."),
    PROM_GAUGE("instances", PROM_I64, instances,
               "Registered instances of the group (direct mode; absent where not known)."),
};

static void put_metric(prom_out_t *o, const kw_stats_t *s, const prom_metric_t *m)
{
    const char *field = (const char *)s + m->off;
    uint64_t u;
    int64_t v;
    int flag;

    put_family(o, m->name, m->type, m->help);
    switch (m->kind) {
    case PROM_U64:
        memcpy(&u, field, sizeof(u));
        put(o, "%s %" PRIu64 "\n", m->name, u);
        break;
    case PROM_FLAG:
        memcpy(&flag, field, sizeof(flag));
        put(o, "%s %d\n", m->name, flag ? 1 : 0);
        break;
    default:
        memcpy(&v, field, sizeof(v));
        if (v < 0)
            break;                          /* not known: no sample */
        put(o, "%s ", m->name);
        if (m->kind == PROM_MS)
            put_scaled(o, v, 3);
        else
            put(o, "%" PRId64, v);
        put(o, "\n");
        break;
    }
}

/* A histogram's summary (values in units of 10^-digits s) as a Prometheus
 * summary: quantiles 0.5, 0.9, 0.99 and 1 (the maximum) while it has
 * values, and _count. */
static void put_summary(prom_out_t *o, const char *name, const char *help,
                        const kw_hist_summary_t *h, int digits)
{
    static const char *const q[] = { "0.5", "0.9", "0.99", "1" };
    const int64_t v[] = { h->p50, h->p90, h->p99, h->max };

    put_family(o, name, "summary", help);
    for (size_t i = 0; i < sizeof(q) / sizeof(q[0]); i++) {
        if (h->count == 0 || v[i] < 0)
            continue;
        put(o, "%s{quantile=\"%s\"} ", name, q[i]);
        put_scaled(o, v[i], digits);
        put(o, "\n");
    }
    put(o, "%s_count %" PRIu64 "\n", name, h->count);
}

/* One per-partition family: a sample per partition whose value is known. */
enum { PART_OWNED, PART_POSITION, PART_HIGH, PART_LAG };

static void put_partitions(prom_out_t *o, const kw_stats_partition_t *parts, size_t n,
                           int what, const char *name, const char *help)
{
    put_family(o, name, "gauge", help);
    for (size_t i = 0; i < n; i++) {
        const kw_stats_partition_t *p = &parts[i];
        int64_t v = what == PART_OWNED ? (p->owned ? 1 : 0) :
                    what == PART_POSITION ? p->position :
                    what == PART_HIGH ? p->high :
                    p->position >= 0 && p->high >= 0 ?
                        (p->high > p->position ? p->high - p->position : 0) : -1;

        if (v < 0)
            continue;
        put(o, "%s{topic=\"", name);
        put_label_value(o, p->topic);
        put(o, "\",partition=\"%" PRId32 "\"} %" PRId64 "\n", p->partition, v);
    }
}

size_t kw_stats_format_prometheus(const kw_stats_t *s, const kw_stats_partition_t *parts,
                                  size_t nparts, char *buf, size_t cap)
{
    prom_out_t o = { buf, cap, 0 };

    if (cap > 0)
        buf[0] = '\0';
    put_family(&o, "kwal_info", "gauge", "The mode this process runs in (always 1).");
    put(&o, "kwal_info{mode=\"");
    put_label_value(&o, s->mode != NULL ? s->mode : "");
    put(&o, "\"} 1\n");
    for (size_t i = 0; i < sizeof(prom_metrics) / sizeof(prom_metrics[0]); i++)
        put_metric(&o, s, &prom_metrics[i]);
    {
        /* the end-to-end latency's fields are flat (they came first) */
        kw_hist_summary_t lat = { s->latency_records, s->latency_ms_p50, s->latency_ms_p90,
                                  s->latency_ms_p99, s->latency_ms_max };

        put_summary(&o, "kwal_latency_seconds",
                    "End-to-end latency of stored records: the sink's acknowledgement "
                    "minus the record's Kafka timestamp, since the start.", &lat, 3);
    }
    put_summary(&o, "kwal_batch_duration_seconds",
                "How long each batch that stored something took, since the start.",
                &s->batch_ms, 3);
    put_summary(&o, "kwal_wal_fsync_duration_seconds",
                "How long each fdatasync of the WAL took, since it was last opened.",
                &s->wal_fsync_us, 6);
    put_partitions(&o, parts, nparts, PART_OWNED, "kwal_partition_owned",
                   "1 while this instance owns the partition.");
    put_partitions(&o, parts, nparts, PART_POSITION, "kwal_partition_position",
                   "The partition's next offset stored (absent: none stored yet).");
    put_partitions(&o, parts, nparts, PART_HIGH, "kwal_partition_high_watermark",
                   "The partition's high watermark as last seen from Kafka (absent: not "
                   "known).");
    put_partitions(&o, parts, nparts, PART_LAG, "kwal_partition_lag",
                   "High watermark minus position, in offsets (absent: either not known).");
    return o.len;
}

int kw_stats_write_json(const kw_stats_t *s, const char *path, char *errstr, size_t errlen)
{
    char buf[8192];
    size_t n = kw_stats_format_json(s, buf, sizeof(buf));

    if (n >= sizeof(buf)) {
        snprintf(errstr, errlen, "%s: statistics do not fit the buffer", path);
        return -1;
    }
    return kw_file_replace(path, buf, n, errstr, errlen);
}
