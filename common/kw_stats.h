/*
 * kw_stats.h -- kwal's statistics as data: the one struct that the log's
 * summary line, the --stats-json file and the metrics endpoint
 * (metrics.listen) are made from, so that runners and tests read numbers,
 * never log text.
 *
 * The program (tools/kwal) fills a kw_stats_t from the running service's
 * own counters (kw_receiver_stats, kw_direct_stats, the recovery report)
 * and writes it with kw_stats_write_json() every few seconds and at exit.
 *
 * JSON format (one object, keys in this order; every counter is a JSON
 * integer, a time that is unknown is -1):
 *
 *   {"version":1,"mode":"receive","final":false,"pid":1234,
 *    "started_ms":<wall clock at start>,"uptime_ms":...,
 *    "records_received":...,"records_delivered":...,"records_stored":...,
 *    "duplicate_deliveries":...,"batches":...,
 *    "source_loss_events":...,"source_loss_records":...,
 *    "blocks_durable":...,"blocks_replayed":...,"records_replayed":...,
 *    "blocks_lost":...,"records_lost":...,"recovery_ms":...,
 *    "recovery_classic":0|1,"wal_bytes":...,"wal_fsyncs":...,
 *    "wal_replicas_healthy":...,"zk_writes":...,"receiver_restarts":...,
 *    "partitions_owned":...,"first_assignment_ms":...,
 *    "first_stored_ms":...,"wal_segments_cleaned":...,
 *    "partitions_assigned_stored":...,"partitions_assigned_reset":...,
 *    "partitions_revoked":...,"blocks_offsets_stored":...,
 *    "blocks_fenced":...,"pauses":...,"quorum_pauses":...,"end_advances":...,
 *    "zk_retries":...,"recovery_blocks_registered":...,
 *    "recovery_tracker_rebuilt":0|1,"recovery_partitions_moved":...,
 *    "wal_torn_tails":...,"wal_corrupt_records":...,"partitions_busy":...,
 *    "short_reads":...,"zk_failures":...,"zk_session_resumed":0|1,
 *    "zk_session_ms":...,"zk_owner_nodes_inherited":...,
 *    "zk_owner_nodes_released":...,"recovery_wal_open_ms":...,
 *    "recovery_tracker_ms":...,"recovery_replay_ms":...,"recovery_zk_ms":...,
 *    "latency_records":...,"latency_ms_p50":...,"latency_ms_p90":...,
 *    "latency_ms_p99":...,"latency_ms_max":...,
 *    "batch_ms_count":...,"batch_ms_p50":...,"batch_ms_p90":...,
 *    "batch_ms_p99":...,"batch_ms_max":...,
 *    "wal_fsync_us_count":...,"wal_fsync_us_p50":...,"wal_fsync_us_p90":...,
 *    "wal_fsync_us_p99":...,"wal_fsync_us_max":...,
 *    "owner_changes":...,"instances":...,"metrics_port":...,"batches_fenced":...}
 *
 * mode is "receive", "receive-no-wal", "direct", "direct-at-least-once" or
 * "recover". final is true only in the file written at exit.
 * first_assignment_ms, first_stored_ms and zk_session_ms are milliseconds
 * since the process started; the other *_ms after "uptime_ms" are
 * durations.
 *
 * latency_*: the end-to-end latency of stored records. A record's latency
 * is the wall clock when the sink acknowledged the batch that holds it --
 * receive mode: the batch's kw_sink_write_batch returned (the WAL's blocks
 * read back, or --no-wal's pending blocks); direct mode: the batch's
 * transaction committed -- minus its Kafka timestamp (create or log-append
 * time, whichever the topic keeps), in ms (sink.h, kw_sink_latency_add).
 * It spans producer to output: time in Kafka before kwal read the record
 * (a backlog at start included), the WAL, and the wait for the batch.
 * latency_records counts the records measured: every record of every
 * acknowledged batch this process delivered (records_delivered, duplicate
 * deliveries included), less those without a timestamp; recovery's replay
 * counts too (its records' latency includes the downtime before the
 * restart). A timestamp ahead of kwal's clock counts as 0. The quantiles
 * are nearest-rank over all records measured since the start, read from a
 * histogram (common/kw_hist.h): less than 1/32 above the exact value,
 * exact below 64 ms, never above latency_ms_max, which is exact. Each is
 * -1 while latency_records is 0.
 *
 * batch_ms_*: how long each batch that stored something took, in ms --
 * receive mode: one delivery round of the batcher that gave the sink a
 * batch (read back from the WAL, written, marked); direct mode: plan, read,
 * sink commit and ZooKeeper mirror. wal_fsync_us_*: each fdatasync of the
 * open WAL (every replica; those wal_fsyncs counts), in microseconds, since
 * the WAL was last opened. Both as latency_*: a count, then nearest-rank
 * quantiles and the maximum from a histogram, -1 while the count is 0.
 * owner_changes: partitions this process took or gave up (receive:
 * assignments and revokes; direct: direct.h). instances: the group's
 * registered instances as direct mode last saw them, -1 where not known
 * (receive mode). metrics_port: the port of the metrics endpoint
 * (metrics.listen; the one picked when it asks for port 0), 0 when there is
 * none. batches_fenced: direct mode's batches that the sink's range fence
 * refused (direct.h; another instance had stored a range of one of their
 * partitions), 0 in receive mode.
 * The file is replaced atomically (kw_file.h): a reader sees a whole object.
 *
 * Prometheus text format (kw_stats_format_prometheus; exposition format
 * 0.0.4, what GET /metrics serves). Every family has a HELP and a TYPE line,
 * then its samples, one family after the other; no timestamps. Names:
 *
 *   kwal_<what>_total        counter, from a counter of kw_stats_t
 *                            (kwal_records_stored_total, ...; bytes as
 *                            kwal_wal_written_bytes_total)
 *   kwal_<what>              gauge (kwal_partitions_owned, kwal_instances,
 *                            kwal_wal_replicas_healthy, 0/1 flags)
 *   kwal_<what>_seconds      gauge, a time: every time is in seconds (the
 *                            *_ms of the JSON divided by 1000, printed with
 *                            three decimals -- exact); kwal_start_time_seconds
 *                            is the wall clock at the start (Unix time)
 *   kwal_info{mode="..."} 1  the JSON's mode
 *
 * The three histograms are Prometheus summaries in seconds, over everything
 * measured since the start (not a sliding window): kwal_latency_seconds,
 * kwal_batch_duration_seconds, kwal_wal_fsync_duration_seconds, each with
 * samples {quantile="0.5"}, {quantile="0.9"}, {quantile="0.99"} (kw_hist.h's
 * nearest-rank values), {quantile="1"} (the maximum, exact) and _count.
 * There is no _sum: kw_hist keeps none, and a sum made up from bucket bounds
 * would be a guess.
 *
 * Per partition (kw_stats_partition_t), labels topic and partition, in the
 * order given: kwal_partition_owned (0/1), kwal_partition_position (the
 * next offset stored), kwal_partition_high_watermark and kwal_partition_lag
 * (high watermark - position when both are known; 0 when the high
 * watermark seen is behind the position, as it can be for a moment since
 * the two are read at different times).
 *
 * Unknown values (-1 in the JSON: a time not reached yet, a quantile of an
 * empty histogram, a partition's position or high watermark not known) are
 * left out -- the family's HELP and TYPE lines stay, without that sample --
 * never written as NaN or -1, so that a query never averages in a value
 * that was not measured. Label values are escaped as the format says:
 * backslash as \\, double quote as \", line feed as \n.
 */
#ifndef KW_STATS_H
#define KW_STATS_H

#include <stddef.h>
#include <stdint.h>

#include "kw_hist.h"

#define KW_STATS_JSON_VERSION 1

typedef struct kw_stats {
    const char *mode;              /* static string, see above */
    int      final;
    int64_t  started_ms;           /* wall clock */
    int64_t  uptime_ms;
    uint64_t records_received;
    uint64_t records_delivered;
    uint64_t records_stored;
    uint64_t duplicate_deliveries; /* invariant 3: counted, never hidden */
    uint64_t batches;
    uint64_t source_loss_events;   /* invariant 6 */
    uint64_t source_loss_records;
    uint64_t blocks_durable;
    uint64_t blocks_replayed;      /* by recovery, before anything new */
    uint64_t records_replayed;
    uint64_t blocks_lost;          /* given up with --skip-corrupt */
    uint64_t records_lost;
    int64_t  recovery_ms;          /* -1: no recovery ran */
    int      recovery_classic;
    uint64_t wal_bytes;            /* bytes written per replica, headers included */
    uint64_t wal_fsyncs;           /* all replicas */
    int64_t  wal_replicas_healthy; /* -1: no WAL */
    uint64_t zk_writes;            /* offset updates (multi-ops) that succeeded */
    uint64_t receiver_restarts;
    uint64_t partitions_owned;
    int64_t  first_assignment_ms;  /* -1: none yet */
    int64_t  first_stored_ms;      /* -1: nothing stored yet */
    uint64_t wal_segments_cleaned;
    uint64_t partitions_assigned_stored; /* went on from a stored offset */
    uint64_t partitions_assigned_reset;  /* had none: auto.offset.reset */
    uint64_t partitions_revoked;
    uint64_t blocks_offsets_stored;      /* blocks whose offsets reached ZooKeeper */
    uint64_t blocks_fenced;              /* ... refused: no longer the owner (inv. 4) */
    uint64_t pauses;                     /* consumption paused (invariant 5) */
    uint64_t quorum_pauses;              /* the WAL fell below its write quorum */
    uint64_t end_advances;               /* offsets moved past a gap at a
                                          * partition's end (no record there) */
    uint64_t zk_retries;                 /* offset updates retried (ZooKeeper away) */
    uint64_t recovery_blocks_registered;  /* blocks the tracker lacked and recovery found in the WAL */
    uint64_t recovery_tracker_rebuilt;    /* 1: the tracker was missing or unreadable and was rebuilt from the WAL */
    uint64_t recovery_partitions_moved;   /* ZooKeeper offsets recovery moved forward over the WAL */
    uint64_t wal_torn_tails;              /* replicas whose torn tail the last WAL open cut */
    uint64_t wal_corrupt_records;         /* mid-log records bad on one replica, served by another (last open) */
    uint64_t partitions_busy;             /* direct: partitions skipped because another instance owns them */
    uint64_t short_reads;                 /* direct: ranges cut short at the read deadline */
    uint64_t zk_failures;                 /* direct: ZooKeeper offset updates that failed (redone later) */
    int      zk_session_resumed;          /* 1: the crashed predecessor's ZooKeeper session was resumed */
    int64_t  zk_session_ms;               /* start to ZooKeeper session ready (instance registered) */
    uint64_t zk_owner_nodes_inherited;    /* owner nodes the resumed session held */
    uint64_t zk_owner_nodes_released;     /* ... given up because they were not taken back */
    int64_t  recovery_wal_open_ms;        /* recovery's phases (recovery.h steps 1-4), -1: none */
    int64_t  recovery_tracker_ms;
    int64_t  recovery_replay_ms;
    int64_t  recovery_zk_ms;
    uint64_t latency_records;             /* records whose end-to-end latency was measured */
    int64_t  latency_ms_p50;              /* its quantiles and maximum, -1: none measured */
    int64_t  latency_ms_p90;
    int64_t  latency_ms_p99;
    int64_t  latency_ms_max;
    kw_hist_summary_t batch_ms;           /* batch durations, ms (above) */
    kw_hist_summary_t wal_fsync_us;       /* WAL fdatasync durations, us (above) */
    uint64_t owner_changes;               /* partitions taken or given up */
    int64_t  instances;                   /* registered instances, -1: not known */
    int      metrics_port;                /* 0: no metrics endpoint */
    uint64_t batches_fenced;              /* direct: batches the sink's range fence refused */
} kw_stats_t;

/* One partition as the metrics endpoint and `kwal status` show it: where
 * this instance has stored it up to and what Kafka has. */
#define KW_STATS_TOPIC_MAX 256
typedef struct kw_stats_partition {
    char     topic[KW_STATS_TOPIC_MAX];
    int32_t  partition;
    int      owned;          /* 1: this instance reads it now */
    int64_t  position;       /* next offset stored (sink or ZooKeeper); -1: none yet */
    int64_t  high;           /* high watermark last seen; -1: not known */
} kw_stats_partition_t;

/* Zero every counter, -1 every unknown time; mode as given. */
void kw_stats_init(kw_stats_t *s, const char *mode);

/* The latency_* fields from a histogram's summary. */
void kw_stats_set_latency(kw_stats_t *s, const kw_hist_summary_t *latency);

/* The JSON object above (with a trailing newline) into buf; returns the
 * length it needs (as snprintf: a result >= cap means it was cut). */
size_t kw_stats_format_json(const kw_stats_t *s, char *buf, size_t cap);

/* The Prometheus text above (HELP/TYPE lines and samples, ending in a
 * newline) from s and parts[0..nparts-1] into buf; returns the length it
 * needs (as snprintf: a result >= cap means it was cut; buf may be NULL
 * when cap is 0). */
size_t kw_stats_format_prometheus(const kw_stats_t *s, const kw_stats_partition_t *parts,
                                  size_t nparts, char *buf, size_t cap);

/* Format and replace path atomically. 0, or -1 with errstr filled. */
int kw_stats_write_json(const kw_stats_t *s, const char *path, char *errstr, size_t errlen);

#endif /* KW_STATS_H */
