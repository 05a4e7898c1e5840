/*
 * recovery.h -- start-up reconciliation of the WAL, the tracker and
 * ZooKeeper, and replay of every durable block the sink has not
 * acknowledged (DESIGN.md: invariants 1-3, "Beyond the original").
 *
 * `kwal receive` runs it before any receiver consumes; `kwal recover` runs it
 * alone. In order:
 *
 *   1. Open the WAL (kw_wal_open: torn tails cut, replicas reconciled,
 *      corruption that no replica can serve refused, the report kept). The
 *      tracker is opened first: its highest LSN was acknowledged, so damage
 *      at or below it is never cut as a torn tail (wal_opts.acked_lsn) --
 *      recovery refuses instead, naming the block -- unless it lies wholly
 *      below the lowest LSN still needed (wal_opts.needed_lsn, from
 *      kw_tracker_cleanable_below: delivered, e.g. a lagging replica's copy of
 *      a segment the others had cleaned).
 *   2. Reconcile the tracker with the WAL. Every block in the WAL above the
 *      tracker's highest LSN (a crash between the WAL ack and the tracker
 *      insert) is decoded and registered as DURABLE. Blocks below it that
 *      the tracker does not have were processed and pruned: they stay out.
 *      A tracker database that is missing is created; one that cannot be
 *      opened (not a database, corrupt, a newer schema) is moved aside to
 *      <path>.unreadable-<ms> and a new one created; either way every block
 *      in the WAL is registered, and batch ids start above any a sink can
 *      hold (kw_tracker_batch_ids_from: the current time in ms) so a replay
 *      is never mistaken for an old batch. Blocks the sink already had are
 *      then delivered again: the sqlite sink stores them once and counts the
 *      duplicate deliveries (invariant 3).
 *   3. Replay: delivery rounds (delivery.h) until no batch is open and no
 *      block is unallocated -- every durable, unacknowledged block reaches
 *      the sink, in LSN order, before anything new is consumed (invariant
 *      2). A crash during replay (crash point recovery.replay) leaves open
 *      batches and unallocated blocks that the next recovery replays again,
 *      under the same batch ids.
 *   4. ZooKeeper repair (not with classic): for every partition the tracker
 *      has seen, if the offset stored in ZooKeeper is below the highest
 *      until-offset of the blocks in the WAL, take the partition (owner node,
 *      bounded wait), move the offset forward, give it back -- so the window
 *      "WAL written, ZooKeeper not yet updated" causes no re-consumption.
 *      Never backwards; guarded by ownership like every offset update
 *      (invariant 4). A partition another live instance holds is left alone
 *      (logged): that instance reads from where ZooKeeper says.
 *   5. Report (kw_recovery_report_t) and log one summary line.
 *
 * classic (`--classic`) keeps Spark 1.2's behaviour for comparison: steps
 * 1-3, no ZooKeeper repair -- records in the window above are consumed again
 * and reach the sink twice.
 *
 * A block that must be replayed but cannot be read (bad on every replica)
 * stops recovery with KW_ECORRUPT: errstr names its LSN and the Kafka offset
 * ranges it holds. Only with skip_corrupt (`--skip-corrupt`, the user's
 * explicit choice) is it given up instead: the WAL replaces it with a LOST
 * placeholder (wal_opts.skip_lost), and replay logs at ERROR the Kafka
 * ranges each lost block held and counts them (blocks_lost, records_lost).
 * A lost block the tracker never registered cannot be named: it is logged
 * and counted as blocks_lost_untracked. ZooKeeper moves past lost ranges
 * like past delivered ones: they are not consumed again.
 *
 * Threads: one call at a time, from the program's main thread. Nothing else
 * may have the WAL, tracker or sink open (the WAL's lock refuses a second
 * opener). The ZooKeeper session is the caller's (options.zk) or opened and
 * closed inside the call.
 */
#ifndef KW_RECOVERY_H
#define KW_RECOVERY_H

#include <stddef.h>
#include <stdint.h>

#include "kw_conf.h"
#include "kw_err.h"
#include "kw_hist.h"
#include "wal.h"
#include "zk.h"

typedef struct kw_recovery_progress {
    uint64_t blocks_done;           /* blocks replayed so far */
    uint64_t blocks_total;          /* blocks to replay (known after step 2) */
    uint64_t records_done;
} kw_recovery_progress_t;

typedef void (*kw_recovery_progress_cb)(const kw_recovery_progress_t *p, void *opaque);

/*
 * What recovery leaves open when asked to (options.keep): the WAL, tracker
 * and sink it reconciled and replayed into, for the service that follows
 * (kw_receiver_options_t takes them), so that `kwal receive` does not close
 * and open them again between recovery and its receivers -- the WAL's scan,
 * the databases' first reads, a Kafka sink's init_transactions: 0.5-2 s of a
 * restart. The types are the WAL's, tracker.h's and sink.h's.
 */
typedef struct kw_recovery_kept {
    kw_wal_t          *wal;
    struct kw_tracker *tracker;
    struct kw_sink    *sink;
} kw_recovery_kept_t;

/* Close what k still holds (what the caller did not hand on) and clear it. */
void kw_recovery_kept_close(kw_recovery_kept_t *k);

typedef struct kw_recovery_options {
    const kw_conf_t        *conf;        /* receiver, zookeeper.* and sink keys */
    const kw_wal_options_t *wal_opts;
    int                     classic;     /* no ZooKeeper repair (Spark 1.2) */
    int                     skip_corrupt; /* give up blocks bad on every replica */
    kw_recovery_progress_cb progress;    /* may be NULL; called after each batch */
    void                   *opaque;
    kw_zk_t                *zk;          /* NULL: step 4 opens and closes a session of
                                          * its own. Else the caller's, registered,
                                          * left open: a session resumed from a crashed
                                          * predecessor already owns its partitions, so
                                          * step 4 waits for no expiry (zk.h,
                                          * "Resuming"). */
    kw_hist_t              *latency;     /* NULL, or where step 3 adds the end-to-end
                                          * latency (sink.h, kw_sink_latency_add) of
                                          * every record it replays: for a record
                                          * replayed after a crash, the time since it
                                          * was produced, downtime included. */
    kw_recovery_kept_t     *keep;        /* NULL: the WAL, tracker and sink are
                                          * closed at the end. Else, on KW_OK, they
                                          * are left open in *keep, the caller's
                                          * (kw_recovery_kept_close, or handed on);
                                          * on an error nothing is kept and *keep is
                                          * cleared. */
} kw_recovery_options_t;

typedef struct kw_recovery_report {
    kw_wal_open_report_t wal;
    int      tracker_created;       /* the tracker database did not exist */
    int      tracker_rebuilt;       /* it could not be opened and was moved aside */
    char     tracker_moved_to[4200];
    uint64_t blocks_registered;     /* found in the WAL, missing from the tracker */
    uint64_t batches_replayed;
    uint64_t blocks_replayed;
    uint64_t records_replayed;      /* delivered to the sink */
    uint64_t records_stored;
    uint64_t duplicates_delivered;
    uint64_t segments_cleaned;
    uint64_t blocks_lost;           /* given up (skip_corrupt) and met in replay */
    uint64_t records_lost;          /* the records the tracker says they held */
    uint64_t blocks_lost_untracked; /* given up before the tracker knew them */
    uint64_t partitions_checked;    /* partitions the tracker knows */
    uint64_t partitions_moved;      /* ZooKeeper offsets moved forward */
    uint64_t partitions_held;       /* left alone: another instance owns them */
    int64_t  wal_open_ms;           /* step 1 (with the tracker's first look) */
    int64_t  tracker_ms;            /* step 2 */
    int64_t  replay_ms;             /* step 3, the sink's opening included */
    int64_t  zk_ms;                 /* step 4 (0 with classic) */
    int64_t  elapsed_ms;
} kw_recovery_report_t;

void kw_recovery_options_init(kw_recovery_options_t *opts);

/*
 * Run steps 1-5. KW_OK with *report filled (report may be NULL) when every
 * unacknowledged block is in the sink and ZooKeeper is repaired; otherwise
 * the error of the step that failed, errstr saying which and why (the WAL,
 * tracker and sink keep what was done so far; running recovery again is
 * safe).
 */
kw_err_t kw_recovery_run(const kw_recovery_options_t *opts, kw_recovery_report_t *report,
                         char *errstr, size_t errlen);

#endif /* KW_RECOVERY_H */
