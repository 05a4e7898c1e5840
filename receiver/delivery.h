/*
 * delivery.h -- delivering tracked blocks to the sink in batches: what the
 * batcher thread does every batch.interval.ms and what recovery does at
 * start-up before anything is consumed (invariant 2).
 *
 * One round:
 *
 *   1. every batch still OPEN in the tracker (allocated, never acknowledged:
 *      a sink failure, or a run that died) is delivered again under its own
 *      id, so an idempotent sink recognises it (invariant 3);
 *   2. kw_tracker_allocate_batch: the durable blocks not yet in a batch, in
 *      LSN order, become one new batch;
 *   3. each block is read back from the WAL, decoded, and all records go to
 *      the sink as ONE batch (kw_sink_write_batch: one transaction);
 *   4. once the sink has committed: kw_tracker_mark_batch_processed, then
 *      kw_wal_cleanup below kw_tracker_clean_below() and kw_tracker_prune --
 *      the WAL is never cleaned of a block the sink has not acknowledged
 *      (invariant 1).
 *
 * Crash points: batch.allocated (after step 2), sink.committed (between 3
 * and 4); the sinks have sink.mid-txn, the WAL wal.cleanup.
 *
 * Threads: one caller at a time per sink (see sink.h); the WAL and tracker
 * handles may be shared with other threads.
 */
#ifndef KW_DELIVERY_H
#define KW_DELIVERY_H

#include <stddef.h>
#include <stdint.h>

#include "kw_err.h"
#include "sink.h"
#include "tracker.h"
#include "wal.h"

/* Added to by every round (plain counters: the caller's own). */
typedef struct kw_delivery_stats {
    uint64_t batches;               /* batches the sink acknowledged */
    uint64_t blocks;                /* blocks in those batches */
    uint64_t records_delivered;
    uint64_t records_stored;
    uint64_t duplicates_delivered;  /* invariant 3: counted, never hidden */
    uint64_t segments_cleaned;
    uint64_t blocks_lost;           /* LOST placeholders met (kw_wal_options_t.skip_lost) */
    uint64_t records_lost;          /* the records the tracker says they held */
} kw_delivery_stats_t;

/*
 * One round (above). KW_OK when every open batch and the new one (if there
 * was anything to allocate) were acknowledged; KW_EAGAIN when the sink
 * failed: that batch stays OPEN, nothing after it was tried, errstr says
 * why -- call again later. Anything else is fatal: a block the tracker
 * needs cannot be read or decoded from the WAL (errstr names its LSN and the
 * Kafka offset ranges it holds), the tracker failed, or memory ran out.
 * max_blocks bounds the new batch (0: every unallocated block). The WAL is
 * cleaned below min(kw_tracker_clean_below(), clean_limit(opaque)), the
 * limit asked for after the tracker (clean_limit may be NULL): a caller with
 * appends in flight that the tracker does not know yet returns the lowest
 * LSN they can get, UINT64_MAX for none. Asking in that order is what makes
 * it safe: an append that starts later gets an LSN above every one the
 * tracker had.
 */
typedef uint64_t (*kw_delivery_limit_fn)(void *opaque);

kw_err_t kw_delivery_round(kw_wal_t *wal, kw_tracker_t *tracker, kw_sink_t *sink,
                           int64_t now_ms, size_t max_blocks,
                           kw_delivery_limit_fn clean_limit, void *opaque,
                           kw_delivery_stats_t *stats, char *errstr, size_t errlen);

/* "t/0 offsets 10..19, t/3 offsets 5..8": the Kafka records the tracker
 * says the block at lsn holds (what is lost if it cannot be read), into buf. */
void kw_delivery_describe_block(kw_tracker_t *t, uint64_t lsn, char *buf, size_t cap);

#endif /* KW_DELIVERY_H */
