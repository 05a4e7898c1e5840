/*
 * consumer.c -- the receiver threads ("receiver-N").
 *
 * Each receiver is one librdkafka KafkaConsumer in group.id, subscribed to
 * `topics`, with enable.auto.commit=false, enable.auto.offset.store=false
 * and auto.offset.reset=error: offsets live in ZooKeeper, written by the
 * pipeline only after the WAL has the records (invariant 1), and kwal applies
 * its own reset policy. `kafka.*` settings are passed to librdkafka verbatim
 * (before ours, so ours win).
 *
 * Poll loop: every message becomes a kw_record_t (no copy) added to the
 * block generator; the generator is ticked on every turn; every cut block is
 * put on the shared bounded queue. A put that finds the queue FULL pauses
 * the whole assignment, waits for ROOM and resumes (invariant 5): nothing is
 * dropped, nothing buffers without bound. receiver.max.rate is kept by
 * waiting as kw_blockgen_rate_wait() says. Every KW_RECEIVER_WATERMARK_MS the
 * assignment's high watermarks go to kw_receiver_partitions (partitions.c).
 *
 * Rebalances (eager and cooperative assignors):
 *   ASSIGN  for each partition: own it in ZooKeeper (waiting, bounded, for a
 *           previous owner that may still be flushing), read its stored
 *           offset and start there; with none stored apply auto.offset.reset
 *           (earliest/latest; error fails the service). A stored offset is
 *           never overwritten because of the policy.
 *   REVOKE  cut the current block, put it, wait until the pipeline has
 *           committed it to ZooKeeper, then disown the partitions and let
 *           them go -- so the next owner starts exactly after what we made
 *           durable, without duplicates.
 * Offset out of range (the source no longer has what we need): log the lost
 * range at ERROR as data loss at the source, count it, then go on per
 * auto.offset.reset (invariant 6).
 *
 * Stop: the service sets receivers_stop; the thread cuts and puts its last
 * block, waits for it to be committed, closes the consumer (whose revoke
 * callback disowns the partitions) and exits.
 *
 * Failure: what breaks this receiver but not the service -- its consumer
 * cannot be created or hits a fatal librdkafka error, a partition cannot be
 * taken in ZooKeeper, the libfiu point receiver/fail -- ends the thread the
 * same way (last block flushed and committed, partitions disowned) with
 * `failed` set; the service restarts it with backoff. What would fail again
 * the same way (configuration, auto.offset.reset=error, the WAL, memory)
 * is fatal for the service instead.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <stdarg.h>

#include "kw_fault.h"
#include "kw_log.h"
#include "receiver_int.h"
#include "source.h"

/* How long a clean stop waits for the revoke before it closes anyway. */
#define KW_RCV_LEAVE_MS 10000

/* ---- failure (the service restarts the thread) ---- */

/* Record why this receiver fails; its loop ends at the next turn. The first
 * reason wins. */
static void receiver_fail(kw_rcv_consumer_t *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void receiver_fail(kw_rcv_consumer_t *c, const char *fmt, ...)
{
    va_list ap;

    if (atomic_load(&c->failed))
        return;
    va_start(ap, fmt);
    vsnprintf(c->fail_msg, sizeof(c->fail_msg), fmt, ap);
    va_end(ap);
    KW_LOG_W(KW_RCV_MOD, "receiver-%u: %s; giving its partitions up", c->id,
             c->fail_msg);
    atomic_store(&c->failed, 1);
}

static int stopping(kw_rcv_consumer_t *c)
{
    return atomic_load(&c->svc->receivers_stop) || kw_rcv_is_fatal(c->svc) ||
           atomic_load(&c->failed);
}

/* ---- committed-seq hand-shake with the pipeline ---- */

void kw_rcv_mark_done(kw_rcv_consumer_t *c, uint64_t seq)
{
    pthread_mutex_lock(&c->mu);
    if (seq > c->done_seq)
        c->done_seq = seq;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

/* Wait until every block this receiver put is committed (or a fatal error).
 * Returns 0 when done. */
static int wait_committed(kw_rcv_consumer_t *c)
{
    int64_t start = kw_mono_ms(), last_log = start;
    int rc = 0;

    pthread_mutex_lock(&c->mu);
    while (c->done_seq < c->put_seq) {
        struct timespec ts;

        if (kw_rcv_is_fatal(c->svc)) {
            rc = -1;
            break;
        }
        ts = kw_deadline_ts(CLOCK_REALTIME, 100);
        pthread_cond_timedwait(&c->cv, &c->mu, &ts);
        if (kw_mono_ms() - last_log >= 5000) {
            last_log = kw_mono_ms();
            KW_LOG_W(KW_RCV_MOD, "receiver-%u: still waiting for block %" PRIu64
                     " to be committed (at %" PRIu64 ")", c->id, c->put_seq,
                     c->done_seq);
        }
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}

/* ---- queue hand-off with back-pressure (invariant 5) ---- */

static void set_paused(kw_rcv_consumer_t *c, int pause)
{
    rd_kafka_resp_err_t err;

    if (c->assignment == NULL || c->assignment->cnt == 0)
        return;
    err = pause ? rd_kafka_pause_partitions(c->rk, c->assignment)
                : rd_kafka_resume_partitions(c->rk, c->assignment);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
        KW_LOG_W(KW_RCV_MOD, "receiver-%u: %s partitions: %s", c->id,
                 pause ? "pausing" : "resuming", rd_kafka_err2str(err));
}

/* Put one block on the queue; owns it in every case. 0 on success, -1 when
 * it could not be put (fatal error or closed queue). */
static int put_block(kw_rcv_consumer_t *c, kw_block_t *b)
{
    kw_receiver_t *svc = c->svc;
    uint64_t seq = kw_block_seq(b);
    int paused = 0;
    kw_err_t err;

    for (;;) {
        err = kw_blockq_put(c->q, b, paused ? 100 : 0);
        if (err == KW_OK)
            break;
        if (err != KW_EFULL || kw_rcv_is_fatal(svc)) {
            kw_block_destroy(b);
            if (paused)
                set_paused(c, 0);
            return -1;
        }
        if (!paused) {
            /* invariant 5: stop fetching until the queue has room */
            set_paused(c, 1);
            paused = 1;
            atomic_fetch_add(&svc->n.pauses, 1);
            KW_LOG_D(KW_RCV_MOD, "receiver-%u: queue full, partitions paused", c->id);
        }
        (void)kw_blockq_wait_room(c->q, 100);
    }
    if (paused) {
        set_paused(c, 0);
        KW_LOG_D(KW_RCV_MOD, "receiver-%u: queue has room, partitions resumed", c->id);
    }
    pthread_mutex_lock(&c->mu);
    c->put_seq = seq;
    pthread_mutex_unlock(&c->mu);
    atomic_fetch_add(&svc->n.blocks_made, 1);
    return 0;
}

static int put_ready(kw_rcv_consumer_t *c)
{
    kw_block_t *b;

    while ((b = kw_blockgen_take(c->gen)) != NULL)
        if (put_block(c, b) != 0)
            return -1;
    return 0;
}

/* Cut the current block, put everything, wait until ZooKeeper has it. */
static int flush_and_wait(kw_rcv_consumer_t *c)
{
    if (kw_blockgen_cut(c->gen) != KW_OK) {
        kw_rcv_fatal(c->svc, "receiver-%u: out of memory cutting a block", c->id);
        return -1;
    }
    if (put_ready(c) != 0)
        return -1;
    return wait_committed(c);
}

/* ---- rebalance ---- */

static void assignment_add(kw_rcv_consumer_t *c,
                           const rd_kafka_topic_partition_list_t *parts)
{
    for (int i = 0; i < parts->cnt; i++)
        if (rd_kafka_topic_partition_list_find(c->assignment, parts->elems[i].topic,
                                               parts->elems[i].partition) == NULL)
            rd_kafka_topic_partition_list_add(c->assignment, parts->elems[i].topic,
                                              parts->elems[i].partition);
}

static void assignment_remove(kw_rcv_consumer_t *c,
                              const rd_kafka_topic_partition_list_t *parts)
{
    for (int i = 0; i < parts->cnt; i++)
        rd_kafka_topic_partition_list_del(c->assignment, parts->elems[i].topic,
                                          parts->elems[i].partition);
}

/* Give up the first n partitions of parts in ZooKeeper (after a failed
 * assignment: they were owned but never consumed). */
static void disown_first(kw_rcv_consumer_t *c, const rd_kafka_topic_partition_list_t *parts,
                         int n)
{
    char errstr[512];

    for (int i = 0; i < n; i++)
        if (kw_zk_disown(c->svc->zk, parts->elems[i].topic, parts->elems[i].partition,
                         errstr, sizeof(errstr)) != KW_OK)
            KW_LOG_W(KW_RCV_MOD, "receiver-%u: disown %s/%d: %s", c->id,
                     parts->elems[i].topic, (int)parts->elems[i].partition, errstr);
}

/* ---- gaps at the end: the end-of-partition advance ----
 *
 * A partition's last offsets may hold no record a consumer is given: the
 * commit or abort marker of a transaction, the records of an aborted
 * transaction (isolation.level=read_committed, librdkafka's default), or
 * offsets compaction removed. Blocks end one past their last record, so
 * without more, ZooKeeper would stay below the partition's end offset for
 * good and monitoring would show a lag that is not there. So the receivers
 * ask librdkafka for end-of-partition events, remember per owned partition
 * one past the last record taken (next) and the last end offset seen (eof),
 * and when eof > next while nothing of this receiver is in flight -- no
 * record in the current block, no block cut or queued, every block put
 * finished by the pipeline -- they store eof in ZooKeeper (fenced, as every
 * offset update: invariant 4). Invariant 1 holds: every record below eof
 * that the consumer was given is in a block whose offsets are stored, i.e.
 * durable in the WAL, and the offsets between next and eof hold none. */

static kw_rcv_pos_t *pos_find(kw_rcv_consumer_t *c, const char *topic, int32_t partition,
                              int add)
{
    kw_rcv_pos_t *e;

    if (c->pos_last < c->npos) {
        e = &c->pos[c->pos_last];
        if (e->partition == partition && strcmp(e->topic, topic) == 0)
            return e;
    }
    for (size_t i = 0; i < c->npos; i++)
        if (c->pos[i].partition == partition && strcmp(c->pos[i].topic, topic) == 0) {
            c->pos_last = i;
            return &c->pos[i];
        }
    if (!add)
        return NULL;
    if (c->npos == c->pos_cap) {
        size_t ncap = c->pos_cap ? c->pos_cap * 2 : 16;
        kw_rcv_pos_t *n = realloc(c->pos, ncap * sizeof(*n));

        if (n == NULL)
            return NULL;      /* only the advance is lost, not data */
        c->pos = n;
        c->pos_cap = ncap;
    }
    e = &c->pos[c->npos];
    e->topic = strdup(topic);
    if (e->topic == NULL)
        return NULL;
    e->partition = partition;
    e->next = -1;
    e->eof = -1;
    c->pos_last = c->npos++;
    return e;
}

static void pos_drop(kw_rcv_consumer_t *c, const char *topic, int32_t partition)
{
    kw_rcv_pos_t *e = pos_find(c, topic, partition, 0);

    if (e == NULL)
        return;
    free((char *)e->topic);
    *e = c->pos[--c->npos];
    c->pos_last = 0;
}

static void pos_clear(kw_rcv_consumer_t *c)
{
    for (size_t i = 0; i < c->npos; i++)
        free((char *)c->pos[i].topic);
    free(c->pos);
    c->pos = NULL;
    c->npos = c->pos_cap = c->pos_last = 0;
}

/* Nothing of this receiver is on its way to ZooKeeper. Receiver thread. */
static int receiver_quiet(kw_rcv_consumer_t *c)
{
    int quiet;

    if (kw_blockgen_pending(c->gen, NULL) > 0 || kw_blockgen_ready(c->gen, NULL) > 0)
        return 0;
    pthread_mutex_lock(&c->mu);
    quiet = c->done_seq >= c->put_seq;
    pthread_mutex_unlock(&c->mu);
    return quiet;
}

/* At most every 100 ms: store the end offsets past gaps (above). */
static void end_advance(kw_rcv_consumer_t *c, int64_t now)
{
    int quiet = -1;

    if (now - c->pos_check_ms < 100)
        return;
    c->pos_check_ms = now;
    for (size_t i = 0; i < c->npos; i++) {
        kw_rcv_pos_t *e = &c->pos[i];
        kw_zk_offset_t o;
        char errstr[512];
        kw_err_t err;

        if (e->eof < 0 || e->eof <= e->next)
            continue;
        if (quiet < 0)
            quiet = receiver_quiet(c);
        if (!quiet)
            return;
        o.topic = e->topic;
        o.partition = e->partition;
        o.next = e->eof;
        err = kw_zk_commit(c->svc->zk, &o, 1, 0, errstr, sizeof(errstr));
        if (err == KW_OK) {
            KW_LOG_D(KW_RCV_MOD, "receiver-%u: %s/%d: offset %" PRId64 " past a gap at "
                     "its end (no record at %" PRId64 "..%" PRId64 ")", c->id, e->topic,
                     (int)e->partition, e->eof, e->next, e->eof - 1);
            atomic_fetch_add(&c->svc->n.end_advances, 1);
            kw_rcv_part_stored(c->svc, e->topic, e->partition, e->eof);
            e->next = e->eof;
        } else if (err == KW_EFENCED) {
            e->next = e->eof;   /* not ours any more: the revoke follows */
        }                       /* else (ZooKeeper away): again later */
    }
}

/* Every KW_RECEIVER_WATERMARK_MS: the high watermarks of the assignment as
 * librdkafka last saw them in a fetch response (a local read, no request),
 * for kw_receiver_partitions. */
static void note_watermarks(kw_rcv_consumer_t *c, int64_t now)
{
    if (now - c->wm_check_ms < KW_RECEIVER_WATERMARK_MS || c->assignment == NULL)
        return;
    c->wm_check_ms = now;
    for (int i = 0; i < c->assignment->cnt; i++) {
        const rd_kafka_topic_partition_t *p = &c->assignment->elems[i];
        int64_t low, high;

        if (rd_kafka_get_watermark_offsets(c->rk, p->topic, p->partition, &low, &high) ==
                RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0)
            kw_rcv_part_high(c->svc, p->topic, p->partition, high);
    }
}

/* Own every partition and set its start offset. 0, or -1 (the receiver
 * failed, or the service: recorded; nothing stays owned). */
static int on_assign(kw_rcv_consumer_t *c, rd_kafka_topic_partition_list_t *parts)
{
    kw_receiver_t *svc = c->svc;
    char errstr[512];

    for (int i = 0; i < parts->cnt; i++) {
        rd_kafka_topic_partition_t *p = &parts->elems[i];
        int64_t next;
        kw_err_t err;

        /* bounded wait: the previous owner may still be flushing (invariant 4) */
        err = kw_zk_own(svc->zk, p->topic, p->partition, 60000, errstr, sizeof(errstr));
        if (err != KW_OK) {
            disown_first(c, parts, i);
            receiver_fail(c, "cannot own %s/%d in ZooKeeper: %s", p->topic,
                          (int)p->partition, errstr);
            return -1;
        }
        err = kw_zk_get_offset(svc->zk, p->topic, p->partition, &next, errstr,
                               sizeof(errstr));
        if (err == KW_OK) {
            p->offset = next;
        } else if (err == KW_ENOTFOUND) {
            int64_t o = kw_source_reset_offset(svc->rc->auto_offset_reset);

            if (o == -3) {
                disown_first(c, parts, i + 1);
                kw_rcv_fatal(svc, "%s/%d has no offset stored in ZooKeeper and "
                             "auto.offset.reset=error", p->topic, (int)p->partition);
                return -1;
            }
            p->offset = o;
        } else {
            disown_first(c, parts, i + 1);
            receiver_fail(c, "reading the offset of %s/%d from ZooKeeper: %s",
                          p->topic, (int)p->partition, errstr);
            return -1;
        }
        atomic_fetch_add(err == KW_OK ? &svc->n.assigned_stored : &svc->n.assigned_reset, 1);
        KW_LOG_I(KW_RCV_MOD, "receiver-%u: assigned %s/%d at %s%" PRId64, c->id,
                 p->topic, (int)p->partition,
                 err == KW_OK ? "stored offset " :
                 p->offset == RD_KAFKA_OFFSET_BEGINNING ? "earliest (no stored offset) " :
                 "latest (no stored offset) ", err == KW_OK ? p->offset : (int64_t)0);
    }
    return 0;
}

/* Flush, wait for ZooKeeper, disown. */
static void on_revoke(kw_rcv_consumer_t *c, rd_kafka_topic_partition_list_t *parts)
{
    char errstr[512];

    if (flush_and_wait(c) != 0)
        KW_LOG_W(KW_RCV_MOD, "receiver-%u: revoking without a flush (stopping on "
                 "an error); what was not committed is in the WAL or not consumed",
                 c->id);
    for (int i = 0; i < parts->cnt; i++) {
        kw_crash(KW_CRASH_RECEIVER_REVOKE);
        kw_rcv_part_revoked(c->svc, parts->elems[i].topic, parts->elems[i].partition);
        if (kw_zk_disown(c->svc->zk, parts->elems[i].topic, parts->elems[i].partition,
                         errstr, sizeof(errstr)) != KW_OK)
            KW_LOG_W(KW_RCV_MOD, "receiver-%u: disown %s/%d: %s", c->id,
                     parts->elems[i].topic, (int)parts->elems[i].partition, errstr);
        else {
            atomic_fetch_add(&c->svc->n.revoked, 1);
            KW_LOG_I(KW_RCV_MOD, "receiver-%u: revoked %s/%d", c->id,
                     parts->elems[i].topic, (int)parts->elems[i].partition);
        }
    }
}

/* The group's rebalance protocol is cooperative. librdkafka answers NULL
 * when its group handle cannot (it is being closed: a revoke served by
 * rd_kafka_consumer_close): then the configured assignors say, as they
 * decide the protocol (cooperative-sticky is librdkafka's one cooperative
 * assignor, and assignors of both kinds may not be mixed). */
static int is_cooperative(rd_kafka_t *rk)
{
    const char *proto = rd_kafka_rebalance_protocol(rk);
    char v[256];
    size_t n = sizeof(v);

    if (proto != NULL)
        return strcmp(proto, "COOPERATIVE") == 0;
    return rd_kafka_conf_get(rd_kafka_conf(rk), "partition.assignment.strategy", v, &n) ==
               RD_KAFKA_CONF_OK && strstr(v, "cooperative") != NULL;
}

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    kw_rcv_consumer_t *c = opaque;
    int cooperative = is_cooperative(rk);
    rd_kafka_error_t *error = NULL;
    rd_kafka_resp_err_t aerr = RD_KAFKA_RESP_ERR_NO_ERROR;

    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        if (on_assign(c, parts) != 0)
            return;     /* fatal: the service stops */
        if (parts->cnt > 0)
            kw_rcv_note_first(&c->svc->n.first_assignment_mono_ms);
        atomic_store(&c->assigned_once, 1);
        assignment_add(c, parts);
        for (int i = 0; i < parts->cnt; i++) {  /* a fresh start in each */
            const rd_kafka_topic_partition_t *p = &parts->elems[i];

            pos_drop(c, p->topic, p->partition);
            /* on_assign set offset: the stored one, or a logical reset (< 0) */
            kw_rcv_part_assigned(c->svc, p->topic, p->partition, p->offset);
        }
        if (cooperative)
            error = rd_kafka_incremental_assign(rk, parts);
        else
            aerr = rd_kafka_assign(rk, parts);
    } else {
        on_revoke(c, parts);
        assignment_remove(c, parts);
        for (int i = 0; i < parts->cnt; i++)
            pos_drop(c, parts->elems[i].topic, parts->elems[i].partition);
        if (cooperative)
            error = rd_kafka_incremental_unassign(rk, parts);
        else
            aerr = rd_kafka_assign(rk, NULL);
    }
    if (error != NULL) {
        KW_LOG_E(KW_RCV_MOD, "receiver-%u: incremental (un)assign: %s", c->id,
                 rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
    } else if (aerr != RD_KAFKA_RESP_ERR_NO_ERROR) {
        KW_LOG_E(KW_RCV_MOD, "receiver-%u: assign: %s", c->id, rd_kafka_err2str(aerr));
    }
}

/* ---- out of range (invariant 6) ---- */

/* Start fetching topic/partition (ours) again at offset: incremental
 * unassign + assign with the cooperative protocol; with an eager one the
 * whole assignment again, every other partition at its position (or, where
 * nothing was consumed yet, its ZooKeeper offset or the reset policy). */
static void restart_partition(kw_rcv_consumer_t *c, const char *topic, int32_t partition,
                              int64_t offset)
{
    rd_kafka_topic_partition_list_t *l;
    rd_kafka_error_t *error = NULL;
    rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
    char errstr[512];

    if (is_cooperative(c->rk)) {
        l = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(l, topic, partition);
        error = rd_kafka_incremental_unassign(c->rk, l);
        if (error == NULL) {
            l->elems[0].offset = offset;
            error = rd_kafka_incremental_assign(c->rk, l);
        }
    } else {
        l = rd_kafka_topic_partition_list_copy(c->assignment);
        (void)rd_kafka_position(c->rk, l);
        for (int i = 0; i < l->cnt; i++) {
            rd_kafka_topic_partition_t *p = &l->elems[i];
            int64_t next;

            if (strcmp(p->topic, topic) == 0 && p->partition == partition)
                p->offset = offset;
            else if (p->offset < 0)
                p->offset = kw_zk_get_offset(c->svc->zk, p->topic, p->partition, &next,
                                             errstr, sizeof(errstr)) == KW_OK
                                ? next
                                : kw_source_reset_offset(c->svc->rc->auto_offset_reset);
        }
        err = rd_kafka_assign(c->rk, l);
    }
    if (error != NULL) {
        KW_LOG_E(KW_RCV_MOD, "receiver-%u: restarting %s/%d at %" PRId64 ": %s", c->id,
                 topic, (int)partition, offset, rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
    } else if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        KW_LOG_E(KW_RCV_MOD, "receiver-%u: restarting %s/%d at %" PRId64 ": %s", c->id,
                 topic, (int)partition, offset, rd_kafka_err2str(err));
    } else {
        KW_LOG_I(KW_RCV_MOD, "receiver-%u: %s/%d goes on at offset %" PRId64, c->id, topic,
                 (int)partition, offset);
    }
    rd_kafka_topic_partition_list_destroy(l);
}

static void on_out_of_range(kw_rcv_consumer_t *c, const rd_kafka_message_t *m)
{
    kw_receiver_t *svc = c->svc;
    const char *topic = m->rkt != NULL ? rd_kafka_topic_name(m->rkt) : "?";
    int64_t low = 0, high = 0, from, until, seek_to;
    rd_kafka_topic_partition_list_t *l;
    rd_kafka_error_t *error;
    rd_kafka_resp_err_t err;

    err = rd_kafka_query_watermark_offsets(c->rk, topic, m->partition, &low, &high, 10000);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        KW_LOG_W(KW_RCV_MOD, "receiver-%u: %s/%d out of range and its watermarks "
                 "cannot be read (%s); retrying", c->id, topic, (int)m->partition,
                 rd_kafka_err2str(err));
        kw_sleep_ms(500);
        return;
    }
    if (kw_source_out_of_range(m->offset, low, high, svc->rc->auto_offset_reset,
                            &from, &until, &seek_to) != 0) {
        kw_rcv_fatal(svc, "data loss at the source: %s/%d offset %" PRId64 " is no "
                     "longer in Kafka (it has %" PRId64 "..%" PRId64 ") and "
                     "auto.offset.reset=error", topic, (int)m->partition, m->offset,
                     low, high);
        return;
    }
    atomic_fetch_add(&svc->n.source_loss_events, 1);
    if (until > from) {
        atomic_fetch_add(&svc->n.source_loss_records, (uint64_t)(until - from));
        KW_LOG_E(KW_RCV_MOD, "data loss at the source: %s/%d offsets %" PRId64 "..%"
                 PRId64 " no longer in Kafka", topic, (int)m->partition, from, until - 1);
    } else {
        KW_LOG_E(KW_RCV_MOD, "%s/%d: offset %" PRId64 " out of range (Kafka has %"
                 PRId64 "..%" PRId64 ")", topic, (int)m->partition, m->offset, low, high);
    }
    l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, topic, m->partition)->offset = seek_to;
    error = rd_kafka_seek_partitions(c->rk, l, 10000);
    if (error != NULL) {
        KW_LOG_E(KW_RCV_MOD, "receiver-%u: seek %s/%d to %" PRId64 ": %s", c->id, topic,
                 (int)m->partition, seek_to, rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
    } else if (l->elems[0].err == RD_KAFKA_RESP_ERR__STATE) {
        /* librdkafka stopped the partition's fetcher (its own reset policy is
         * error) and refuses to seek it: assign it again at seek_to */
        restart_partition(c, topic, m->partition, seek_to);
    } else if (l->elems[0].err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        KW_LOG_E(KW_RCV_MOD, "receiver-%u: seek %s/%d to %" PRId64 ": %s", c->id, topic,
                 (int)m->partition, seek_to, rd_kafka_err2str(l->elems[0].err));
    }
    rd_kafka_topic_partition_list_destroy(l);
}

/* ---- messages ---- */

static int add_message(kw_rcv_consumer_t *c, const rd_kafka_message_t *m)
{
    size_t nh = kw_source_header_count(m);
    kw_record_t rec;
    char errstr[256];
    kw_err_t err;

    if (nh > c->hdrs_cap) {
        kw_record_header_t *h = realloc(c->hdrs, nh * sizeof(*h));

        if (h == NULL) {
            kw_rcv_fatal(c->svc, "receiver-%u: out of memory", c->id);
            return -1;
        }
        c->hdrs = h;
        c->hdrs_cap = nh;
    }
    kw_source_record(m, &rec, c->hdrs);
    err = kw_blockgen_add(c->gen, &rec, errstr, sizeof(errstr));
    if (err != KW_OK) {
        kw_rcv_fatal(c->svc, "receiver-%u: %s/%d@%" PRId64 ": %s", c->id, rec.topic,
                     (int)rec.partition, rec.offset, errstr);
        return -1;
    }
    {
        kw_rcv_pos_t *e = pos_find(c, rec.topic, rec.partition, 1);

        if (e != NULL)
            e->next = rec.offset + 1;
    }
    atomic_fetch_add(&c->svc->n.records_received, 1);
    return 0;
}

static void handle_error(kw_rcv_consumer_t *c, const rd_kafka_message_t *m)
{
    switch (m->err) {
    case RD_KAFKA_RESP_ERR__PARTITION_EOF: {
        kw_rcv_pos_t *e = m->rkt != NULL ?
            pos_find(c, rd_kafka_topic_name(m->rkt), m->partition, 1) : NULL;

        if (e != NULL && m->offset >= 0)
            e->eof = m->offset;
        return;
    }
    case RD_KAFKA_RESP_ERR__AUTO_OFFSET_RESET:
    case RD_KAFKA_RESP_ERR_OFFSET_OUT_OF_RANGE:
        on_out_of_range(c, m);
        return;
    default:
        break;
    }
    if (rd_kafka_fatal_error(c->rk, NULL, 0) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        receiver_fail(c, "fatal Kafka consumer error: %s", rd_kafka_message_errstr(m));
        return;
    }
    KW_LOG_W(KW_RCV_MOD, "receiver-%u: %s", c->id, rd_kafka_message_errstr(m));
}

/* ---- setup ---- */

static int consumer_open(kw_rcv_consumer_t *c)
{
    kw_receiver_t *svc = c->svc;
    const kw_conf_t *conf = svc->conf;
    rd_kafka_topic_partition_list_t *topics;
    kw_blockgen_config_t gcfg;
    rd_kafka_conf_t *kc = NULL;
    char errstr[512], cid[64];
    /* end-of-partition events: the end advance (gaps at the end, above) */
    const char *extra[7] = { "enable.partition.eof", "true", NULL, NULL, NULL, NULL, NULL };
    char gid[300];
    size_t nx = 2;
    rd_kafka_resp_err_t err;

    snprintf(cid, sizeof(cid), "kwal-receiver-%u", c->id);
    extra[nx++] = "client.id";
    extra[nx++] = cid;
    for (size_t i = 0; i < conf->nkafka; i++)
        if (strcmp(conf->kafka[i].key, "client.id") == 0)
            nx -= 2;    /* the user's client.id wins */
    if (svc->rc->static_membership) {
        /* static membership: a restart within kafka.session.timeout.ms gets
         * the same partitions back without a rebalance */
        snprintf(gid, sizeof(gid), "%s-r%u", kw_zk_instance(svc->zk), c->id);
        extra[nx++] = "group.instance.id";
        extra[nx++] = gid;
    }
    extra[nx] = NULL;
    if (kw_source_consumer_conf(conf, svc->rc->group_id, extra, &kc, errstr,
                                sizeof(errstr)) != KW_OK) {
        kw_rcv_fatal(svc, "%s", errstr);
        goto fail;
    }
    rd_kafka_conf_set_rebalance_cb(kc, rebalance_cb);
    rd_kafka_conf_set_opaque(kc, c);
    c->rk = rd_kafka_new(RD_KAFKA_CONSUMER, kc, errstr, sizeof(errstr));
    if (c->rk == NULL) {
        receiver_fail(c, "creating the Kafka consumer: %s", errstr);
        goto fail;
    }
    kc = NULL;
    rd_kafka_poll_set_consumer(c->rk);

    kw_blockgen_config_init(&gcfg);
    gcfg.receiver_id = c->id;
    /* seqs never repeat across restarts of this receiver within a run;
     * the WAL's LSN, not the seq, identifies a block durably */
    pthread_mutex_lock(&c->mu);
    gcfg.first_seq = c->put_seq + 1;
    pthread_mutex_unlock(&c->mu);
    gcfg.interval_ms = svc->rc->block_interval_ms;
    gcfg.max_bytes = svc->rc->block_max_bytes;
    gcfg.max_rate = (uint64_t)svc->rc->max_rate;
    if (kw_blockgen_new(&gcfg, &c->gen, errstr, sizeof(errstr)) != KW_OK) {
        kw_rcv_fatal(svc, "receiver-%u: %s", c->id, errstr);
        goto fail;
    }
    c->assignment = rd_kafka_topic_partition_list_new(16);

    topics = rd_kafka_topic_partition_list_new(svc->rc->topics.count);
    for (int i = 0; i < svc->rc->topics.count; i++)
        rd_kafka_topic_partition_list_add(topics, svc->rc->topics.items[i],
                                          RD_KAFKA_PARTITION_UA);
    err = rd_kafka_subscribe(c->rk, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        receiver_fail(c, "subscribe: %s", rd_kafka_err2str(err));
        goto fail;
    }
    return 0;

fail:
    if (kc != NULL)
        rd_kafka_conf_destroy(kc);
    return -1;
}

static void consumer_close(kw_rcv_consumer_t *c)
{
    /* A static member does not leave the group when it closes (KIP-345):
     * its partitions would wait kafka.session.timeout.ms for it. On a clean
     * stop leave explicitly: unsubscribe, serve the revoke (which flushes
     * and disowns), and librdkafka sends the LeaveGroup before the close. */
    if (c->rk != NULL && c->svc->rc->static_membership && !atomic_load(&c->failed) &&
        !kw_rcv_is_fatal(c->svc) &&
        rd_kafka_fatal_error(c->rk, NULL, 0) == RD_KAFKA_RESP_ERR_NO_ERROR &&
        rd_kafka_unsubscribe(c->rk) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        int64_t until = kw_mono_ms() + KW_RCV_LEAVE_MS;

        while (kw_mono_ms() < until && !kw_rcv_is_fatal(c->svc)) {
            rd_kafka_message_t *m = rd_kafka_consumer_poll(c->rk, 50);

            if (m != NULL)
                rd_kafka_message_destroy(m);    /* nothing is taken after the flush */
            if (c->assignment == NULL || c->assignment->cnt == 0)
                break;
        }
    }
    if (c->rk != NULL) {
        /* the revoke callback flushes and disowns */
        rd_kafka_resp_err_t err = rd_kafka_consumer_close(c->rk);

        if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
            KW_LOG_W(KW_RCV_MOD, "receiver-%u: close: %s", c->id, rd_kafka_err2str(err));
        /* a consumer in a fatal state closes without the revoke callback:
         * give up what is still ours here, the same way */
        if (c->assignment != NULL && c->assignment->cnt > 0) {
            on_revoke(c, c->assignment);
            rd_kafka_topic_partition_list_destroy(c->assignment);
            c->assignment = NULL;
        }
        rd_kafka_destroy(c->rk);
        c->rk = NULL;
    }
    if (c->assignment != NULL) {
        rd_kafka_topic_partition_list_destroy(c->assignment);
        c->assignment = NULL;
    }
    kw_blockgen_destroy(c->gen);
    c->gen = NULL;
    free(c->hdrs);
    c->hdrs = NULL;
    c->hdrs_cap = 0;
    pos_clear(c);
}

void *kw_rcv_consumer_main(void *arg)
{
    kw_rcv_consumer_t *c = arg;
    kw_receiver_t *svc = c->svc;
    char name[16];

    snprintf(name, sizeof(name), "receiver-%u", c->id);
    pthread_setname_np(pthread_self(), name);
    if (consumer_open(c) != 0)
        goto out;
    KW_LOG_I(KW_RCV_MOD, "%s: subscribed (group %s)", name, svc->rc->group_id);

    while (!stopping(c)) {
        int64_t now = kw_mono_ms(), wait, deadline;

        if (kw_fault("receiver/fail")) {
            receiver_fail(c, "injected failure (libfiu point receiver/fail)");
            break;
        }
        rd_kafka_message_t *m;
        int timeout = 100;

        wait = kw_blockgen_rate_wait(c->gen, now);
        if (wait > 0) {
            kw_sleep_ms(wait < 100 ? wait : 100);
        } else {
            deadline = kw_blockgen_deadline(c->gen);
            if (deadline != INT64_MAX && deadline - now < timeout)
                timeout = deadline > now ? (int)(deadline - now) : 0;
            m = rd_kafka_consumer_poll(c->rk, timeout);
            if (m != NULL) {
                int rc;

                if (!m->err)
                    kw_crash(KW_CRASH_RECEIVER_POLLED);
                rc = m->err ? (handle_error(c, m), 0) : add_message(c, m);

                rd_kafka_message_destroy(m);
                if (rc != 0)
                    break;
            }
        }
        if (kw_blockgen_tick(c->gen, kw_mono_ms()) == KW_ENOMEM) {
            kw_rcv_fatal(svc, "%s: out of memory", name);
            break;
        }
        if (put_ready(c) != 0)
            break;
        end_advance(c, kw_mono_ms());
        note_watermarks(c, kw_mono_ms());
    }
    /* stop: last block durable and committed before the partitions go */
    if (c->gen != NULL && !kw_rcv_is_fatal(svc))
        (void)flush_and_wait(c);
out:
    consumer_close(c);
    KW_LOG_I(KW_RCV_MOD, "%s: stopped", name);
    return NULL;
}
