/*
 * direct.h -- direct mode (`kwal direct`): no receivers, no WAL.
 *
 * Every batch.interval.ms one batch, on one thread:
 *
 *   1. Partitions: every partition of the configured topics (names, not
 *      patterns), from Kafka's metadata, asked again every few seconds so
 *      new partitions are picked up. Several instances of one group share
 *      them (DESIGN.md, "Several instances"): each batch starts by reading
 *      the group's instances (/consumers/<group>/ids, kw_zk_members) and
 *      computing the assignment every instance computes alike
 *      (kw_direct_assign, direct.assignment). A partition this instance owns
 *      that is no longer its own is released now -- its last batch here is
 *      committed -- by deleting its owner node; a partition that is its own
 *      is owned in ZooKeeper (/consumers/<group>/owners/<topic>/<partition>,
 *      the receivers' layout) before it is read, and while its previous
 *      holder has not released it yet it is skipped (partitions_busy) and
 *      tried again at the next batch. So a partition is read by one
 *      instance at a time, and its new owner goes on from the ranges stored
 *      (the instances share the sink). An instance that dies keeps its
 *      partitions until its ZooKeeper session expires
 *      (zookeeper.session.timeout.ms); a clean stop releases them at once.
 *   2. Ranges: for each partition [from, until). from is the next offset
 *      stored with the output (below; kw_sink_range_next), or, for a
 *      partition never read, direct.start.offsets, else auto.offset.reset;
 *      until is min(high watermark, from + max.rate.per.partition x
 *      interval).
 *      A from that Kafka no longer has is loud source loss (invariant 6):
 *      the lost offsets are logged at ERROR and counted, and the range
 *      starts where auto.offset.reset says.
 *   3. Read exactly those ranges: one librdkafka consumer, assigned at
 *      each from, records at or past until dropped. A partition that cannot
 *      be read to its until within the read deadline (a broker down) ends
 *      its range at what was read: the range stored is always the range
 *      delivered. Crash point direct.read after it.
 *   4. Deliver the records and store the ranges in one sink transaction
 *      (sink.h: kw_sink_txn_begin, _write, _put_range per partition read,
 *      _commit; the rows are in sink/FORMAT.md). Each range is fenced: it
 *      is stored only if the partition's stored ranges still end where this
 *      instance last saw them, so an instance that lost a partition without
 *      knowing yet (its session expired mid-batch) stores nothing of that
 *      batch (batches_fenced) and reads its positions again. Exactly once: a crash
 *      before the commit leaves neither the records nor the ranges, a
 *      crash after leaves both. Crash points sink.mid-txn inside,
 *      direct.stored after. Only a sink that stores ranges
 *      (kw_sink_ranges_supported: sqlite) can do this. When the commit
 *      returns, each record's end-to-end latency is taken
 *      (kw_direct_stats_t.latency).
 *   5. Move the ZooKeeper offsets to each until (ownership-guarded), so
 *      ZooKeeper-based monitoring sees progress. In exactly-once mode
 *      ZooKeeper is only a mirror: a failed update is logged and redone with
 *      the next batch, never a reason to stop.
 *
 * On restart each partition goes on from its highest stored until, and
 * batch ids go on after the highest stored (kw_sink_ranges_last_batch).
 *
 * at_least_once (`--at-least-once`) is the comparison baseline: the sink
 * may be any kind and is written without the ranges; the offsets live in
 * ZooKeeper only, updated after the sink write. A crash between the two
 * delivers that batch again (duplicates), nothing is lost.
 *
 * Threads. new, run and destroy from one thread; kw_direct_stop() from any
 * thread or a signal handler; kw_direct_stats() from any thread.
 */
#ifndef KW_DIRECT_H
#define KW_DIRECT_H

#include <stddef.h>
#include <stdint.h>

#include "kw_conf.h"
#include "kw_err.h"
#include "kw_hist.h"
#include "kw_stats.h"
#include "zk.h"

typedef struct kw_direct kw_direct_t;

typedef struct kw_direct_options {
    const kw_conf_t *conf;          /* must outlive the handle */
    int              at_least_once; /* offsets in ZooKeeper after the sink write */
    kw_zk_t         *zk;            /* the instance's session, registered, borrowed
                                     * (must outlive the handle); NULL: open one.
                                     * Owner nodes a resumed session inherited and
                                     * the first batch does not take back are
                                     * released after it (zk.h, "Resuming"). */
} kw_direct_options_t;

typedef struct kw_direct_stats {
    uint64_t batches;               /* batches the sink acknowledged */
    uint64_t records_delivered;
    uint64_t records_stored;
    uint64_t duplicates_delivered;  /* invariant 3: counted, never hidden */
    uint64_t partitions;            /* partitions read in the last batch */
    uint64_t partitions_busy;       /* skipped: another instance owns them */
    uint64_t short_reads;           /* ranges cut short at the read deadline */
    uint64_t zk_failures;           /* ZooKeeper offset updates that failed */
    uint64_t source_loss_events;    /* invariant 6 */
    uint64_t source_loss_records;
    uint64_t zk_writes;             /* ZooKeeper offset updates that succeeded */
    int64_t  first_stored_mono_ms;  /* kw_mono_ms() of the first batch that
                                     * stored a record; 0: none yet */
    int64_t  first_owned_mono_ms;   /* of the first partition owned (direct
                                     * mode's assignment); 0: none yet */
    uint64_t owner_changes;         /* partitions taken or given up here */
    uint64_t members;               /* instances of the group at the last batch */
    uint64_t batches_fenced;        /* not stored: another instance had stored a
                                     * range of one of its partitions meanwhile
                                     * (kw_sink_txn_put_range's fence) */
    kw_hist_summary_t batch_ms;     /* duration of each batch that stored
                                     * something: plan, read, sink commit,
                                     * ZooKeeper mirror, in ms */
    kw_hist_summary_t latency;      /* end-to-end latency (sink.h,
                                     * kw_sink_latency_add) of every record with
                                     * a timestamp in the batches whose
                                     * transaction committed, in ms */
} kw_direct_stats_t;

/* The settings kwal direct needs, checked before anything is opened:
 * group.id and topics given, topics names (no patterns), every
 * direct.start.offsets item well formed. KW_ECONFIG naming the key. */
kw_err_t kw_direct_check_conf(const kw_conf_t *conf, char *errstr, size_t errlen);

/*
 * Check the settings (kw_direct_check_conf; the sink must store offset
 * ranges -- sqlite -- unless at_least_once), open the sink (and read its last batch id), the ZooKeeper session
 * (registered) and the Kafka client. KW_ECONFIG for bad settings, else the
 * error of the part that failed (e.g. KW_ECORRUPT for a sink database of
 * an unknown schema version).
 */
kw_err_t kw_direct_new(const kw_direct_options_t *opts, kw_direct_t **d,
                       char *errstr, size_t errlen);

/* Run batches until kw_direct_stop() (the batch under way finishes first:
 * KW_OK) or a fatal error (its one-line reason in errstr). Call once. */
kw_err_t kw_direct_run(kw_direct_t *d, char *errstr, size_t errlen);

/* Async-signal-safe; any thread; idempotent. */
void kw_direct_stop(kw_direct_t *d);

void kw_direct_stats(kw_direct_t *d, kw_direct_stats_t *stats);

/* The partitions this instance knows (owned or not), as of the last batch:
 * fills up to nmax, returns how many there are. Any thread. */
size_t kw_direct_partitions(kw_direct_t *d, kw_stats_partition_t *out, size_t nmax);

/* NULL is a no-op. */
void kw_direct_destroy(kw_direct_t *d);

/* ---- Pure parts (unit-tested) ---- */

/* A partition, for kw_direct_assign. */
typedef struct kw_direct_tp {
    const char *topic;
    int32_t     partition;
} kw_direct_tp_t;

/*
 * The assignment every instance of a group computes alike (DESIGN.md,
 * "Several instances"): members are the registered instance names (any
 * order: they are sorted by strcmp here), parts the partitions (any order:
 * sorted by topic, then partition). strategy is a kw_assignment_t:
 *   KW_ASSIGN_ROUNDROBIN  the k-th sorted partition goes to the (k mod n)-th
 *                         sorted member: counts differ by at most one;
 *   KW_ASSIGN_RANGE       per topic, as Kafka's range assignor: member i
 *                         gets a contiguous run of P/n partitions, the first
 *                         P mod n members one more.
 * mine[i] is set to 1 when parts[i] goes to self, else 0. Returns how many
 * are self's, or -1 when self is not a member (every mine[i] 0) or memory
 * ran out.
 */
int kw_direct_assign(int strategy, const char *const *members, size_t nmembers,
                     const char *self, const kw_direct_tp_t *parts, size_t nparts,
                     unsigned char *mine);


/*
 * Back-pressure (backpressure.enabled): a PID controller, as Spark's rate
 * estimator, on the rate the batches keep up with. After each batch of n
 * records that took processing_ms (read + sink) and started
 * scheduling_delay_ms late: processing rate = n / processing time; error =
 * the last estimate - that rate; the backlog term = scheduling delay x
 * processing rate / interval; the new estimate = the last - P x error - I x
 * backlog - D x (change of error per second), never below min_rate. The
 * first batch with records sets the estimate to its processing rate.
 */
typedef struct kw_direct_pid {
    double  p, i, d;                /* gains: 1.0, 0.2, 0.0 */
    double  min_rate;
    double  rate;                   /* records/s; 0 until the first update */
    double  last_error;
    int64_t last_ms;
} kw_direct_pid_t;

void kw_direct_pid_init(kw_direct_pid_t *e, double min_rate);

/* Feed one batch; returns the estimate (0: none yet). Batches without
 * records or time change nothing. */
double kw_direct_pid_update(kw_direct_pid_t *e, int64_t now_ms, uint64_t n,
                            int64_t processing_ms, int64_t scheduling_delay_ms,
                            int64_t interval_ms);

/* Where a partition starts and how far one batch reads it. */
typedef struct kw_direct_plan {
    int64_t from, until;            /* the range to read: [from, until) */
    int64_t lost_from, lost_until;  /* lost at the source (empty: equal) */
} kw_direct_plan_t;

/*
 * Plan one partition's range. next: the next offset stored (-1: none);
 * start: direct.start.offsets' offset for it (-1: none); low..high-1: what
 * Kafka has; policy: auto.offset.reset (a kw_offset_reset_t); max_records:
 * the most one batch may take (0: no bound). A next (or start) outside
 * [low, high] is out of range: below low the offsets up to low are lost at
 * the source; either way the partition goes on where policy says. Returns
 * 0, or -1 when policy is error and the partition has nowhere to start.
 */
int kw_direct_plan_range(int64_t next, int64_t start, int64_t low, int64_t high,
                         int policy, int64_t max_records, kw_direct_plan_t *plan);

/* The most records one batch takes from a partition: max.rate.per.partition
 * x interval_ms / 1000, at least 1; 0 (no bound) when rate is 0. */
int64_t kw_direct_max_records(int64_t rate, int64_t interval_ms);

/*
 * Find topic/partition in direct.start.offsets items ("topic:partition:
 * offset"; the topic may itself contain ':' -- the last two fields are
 * split off). *offset = -1 when it is not listed. KW_ECONFIG naming the
 * item for a malformed one.
 */
kw_err_t kw_direct_start_offset(const kw_conf_list_t *items, const char *topic,
                                int32_t partition, int64_t *offset,
                                char *errstr, size_t errlen);

#endif /* KW_DIRECT_H */
