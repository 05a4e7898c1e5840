/* kw_stats.c -- see kw_stats.h. */
#include "kw_stats.h"

#include <inttypes.h>
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
        "\"latency_ms_max\":%" PRId64 "}\n",
        s->latency_records, s->latency_ms_p50, s->latency_ms_p90, s->latency_ms_p99,
        s->latency_ms_max);
    return n < 0 ? 0 : used + (size_t)n;
}

int kw_stats_write_json(const kw_stats_t *s, const char *path, char *errstr, size_t errlen)
{
    char buf[4096];
    size_t n = kw_stats_format_json(s, buf, sizeof(buf));

    if (n >= sizeof(buf)) {
        snprintf(errstr, errlen, "%s: statistics do not fit the buffer", path);
        return -1;
    }
    return kw_file_replace(path, buf, n, errstr, errlen);
}
