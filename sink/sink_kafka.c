/*
 * sink_kafka.c -- the `kafka:TOPIC` sink (rules in sink.h, the records and
 * the offsets it writes in sink/FORMAT.md): Kafka transactions of
 * librdkafka's transactional producer, holding a batch's records and, in the
 * same transaction, the source offsets they came from, committed to a
 * consumer group (send_offsets_to_transaction). Receive mode: one
 * transaction per batch. Direct mode: one per source partition of a batch,
 * each through that partition's own producer. A read_committed reader sees
 * each transaction whole or not at all.
 *
 *   open        receive: the producer (transactional.id
 *               kwal-<group>-<instance>): init_transactions aborts what a
 *               crashed predecessor with the same id left open. Both: the
 *               output topic's partition count; a consumer handle in no
 *               group membership that reads the offsets group's committed
 *               offsets
 *   range_next  direct: the partition is being taken: its producer
 *               (transactional.id kwal-<group>:<topic>:<partition>) made
 *               anew -- init_transactions aborts what the partition's last
 *               writer left open and fences that writer on the coordinator
 *               -- then the group's committed offset read
 *   begin       receive: begin_transaction; direct: each partition's as the
 *               batch first writes or ranges it (a producer a fatal error
 *               broke is made again first)
 *   write       produce each record: partition = source partition modulo
 *               the output's partitions, key, value and timestamp as in the
 *               source, the source headers then kwal.topic, kwal.partition
 *               and kwal.offset. Receive mode first drops each record below
 *               the offset its writer group holds for the partition: a
 *               duplicate delivery (a block replayed after a crash that came
 *               after its commit), counted, not written. All dropped: a
 *               replay (T3), the transaction aborted
 *   put_range   direct mode: noted; checked and sent in commit
 *   commit      direct: the read fence -- each partition's committed offset
 *               in the group read again, which must still be the caller's
 *               expect_next -- then each partition's until offset, in its
 *               own transaction; receive: one past the last offset written
 *               per partition, to the writer group. Crash point
 *               sink.mid-txn (libfiu's sink/kafka-stop stops the process
 *               there), then commit_transaction, partition by partition
 *   abort       abort_transaction (each open one)
 *
 * The offsets groups. Direct mode: group.id itself, on the sink's cluster --
 * the batch's ranges are the group's committed offsets, and range_next
 * reads them back (Kafka's own exactly-once, as MirrorMaker 2 does).
 * Receive mode: `<group.id>.kwal-sink.<instance>`, one group per writer:
 * blocks are replayed by the instance that wrote them to its WAL, whose
 * deliveries of a partition go up in offset order, so "below what this
 * writer committed" is exactly "already written by it". Another instance
 * that read the same offsets again (a partition handed over between a
 * block's WAL append and its ZooKeeper update) writes them again: Kafka
 * has no key to refuse them by. sink/FORMAT.md says this in its table.
 *
 * Direct mode's fence. Kafka has no lock to hold from reading the group's
 * offsets to committing, so the read fence alone would leave a window (an
 * instance that lost its partitions without knowing passes it while the
 * new owner commits). The transactional.id per source partition closes it,
 * as Kafka Streams' first exactly-once did with one per task: the new owner
 * makes the partition's producer before it reads the partition's offset;
 * its init_transactions ends (commits or aborts) whatever the last writer
 * had in flight and bumps the id's epoch, so from then on only the new
 * owner can commit the partition -- a late commit of the old one fails
 * with PRODUCER_FENCED (KW_EFENCED). The read fence stays, a cheap early
 * check. The cost: a producer per partition owned and a commit per
 * partition per batch; a batch is atomic per partition, not as a whole
 * (a failure leaves the partitions committed before it committed, each
 * with its range).
 *
 * Unknown outcomes. A commit that fails after it may have reached the
 * coordinator (a timeout) is reported as KW_EIO and every cached offset is
 * read again before the next batch: a retried batch is then found written
 * (receive: duplicates; direct: KW_EFENCED, and direct mode reads its
 * positions again).
 */
#include <inttypes.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>

#include "kw_fault.h"
#include "kw_log.h"
#include "sink_int.h"

#define MOD "sink"
/* Bound of each transactional call and offsets read. */
#define KS_TIMEOUT_MS 30000
/* How often a commit_transaction that may still succeed is tried. */
#define KS_COMMIT_TRIES 3

/* A transactional producer and its transaction. Receive mode has one, the
 * sink's (transactional.id kwal-<group>-<instance>); direct mode one per
 * source partition it owns (kwal-<group>:<topic>:<partition>), made again
 * each time the partition is taken: its init_transactions fences whoever
 * wrote the partition before -- atomically, on the coordinator. */
typedef struct ks__prod {
    rd_kafka_t  *rk;
    int          txn_open;
    int          broken;        /* fatal error: made again before the next use */
    int          fenced;        /* another producer took the transactional.id */
} ks__prod_t;

/* One source partition this sink has written or ranged. */
typedef struct ks__part {
    char    *topic;
    int32_t  partition;
    int      known;         /* committed was read from the group */
    int64_t  committed;     /* the group's committed offset; -1: none */
    int64_t  next;          /* this transaction: receive, one past the last
                             * offset written; direct, the range's until;
                             * -1: not in this transaction */
    int64_t  expect;        /* direct: put_range's expect_next */
    ks__prod_t prod;        /* direct: this partition's producer */
} ks__part_t;

typedef struct ks__sink {
    ks__prod_t   prod;          /* receive mode's producer */
    rd_kafka_t  *cons;          /* reads committed offsets and metadata;
                                 * never subscribes */
    rd_kafka_conf_t *conf;      /* the producers', kept to make them again */
    char        *txid;          /* transactional.id (direct: its prefix) */
    rd_kafka_consumer_group_metadata_t *cgmd;
    char        *topic;         /* the output topic */
    char        *group;         /* the offsets group */
    char        *name;          /* "kafka:TOPIC" */
    int          direct;
    int32_t      out_parts;
    uint64_t     last_id;
    ks__part_t  *parts;
    size_t       nparts, cap, hint;
    atomic_int   dr_failed;     /* deliveries that failed in this transaction */
    char         dr_err[256];
} ks__sink_t;

/* ---- helpers -------------------------------------------------------------- */

static void ks__dr(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    ks__sink_t *k = opaque;

    (void)rk;
    if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR &&
        atomic_fetch_add(&k->dr_failed, 1) == 0)
        snprintf(k->dr_err, sizeof(k->dr_err), "%s", rd_kafka_err2str(m->err));
}

static ks__part_t *ks__part(ks__sink_t *k, const char *topic, int32_t partition)
{
    /* a batch's records come partition by partition: the last one first */
    if (k->hint < k->nparts && k->parts[k->hint].partition == partition &&
        strcmp(k->parts[k->hint].topic, topic) == 0)
        return &k->parts[k->hint];
    for (size_t i = 0; i < k->nparts; i++)
        if (k->parts[i].partition == partition && strcmp(k->parts[i].topic, topic) == 0) {
            k->hint = i;
            return &k->parts[i];
        }
    if (k->nparts == k->cap) {
        size_t cap = k->cap ? k->cap * 2 : 16;
        ks__part_t *p = realloc(k->parts, cap * sizeof(*p));

        if (p == NULL)
            return NULL;
        k->parts = p;
        k->cap = cap;
    }
    if ((k->parts[k->nparts].topic = strdup(topic)) == NULL)
        return NULL;
    k->parts[k->nparts].partition = partition;
    k->parts[k->nparts].known = 0;
    k->parts[k->nparts].committed = -1;
    k->parts[k->nparts].next = -1;
    k->parts[k->nparts].expect = KW_SINK_RANGE_UNCHECKED;
    memset(&k->parts[k->nparts].prod, 0, sizeof(k->parts[k->nparts].prod));
    return &k->parts[k->nparts++];
}

/* Forget this transaction's offsets; with reread, every cached committed
 * offset too (an outcome not known). */
static void ks__reset(ks__sink_t *k, int reread)
{
    for (size_t i = 0; i < k->nparts; i++) {
        k->parts[i].next = -1;
        k->parts[i].expect = KW_SINK_RANGE_UNCHECKED;
        if (reread)
            k->parts[i].known = 0;
    }
}

/* An rd_kafka_error_t of a transactional call of pp: errstr, the error
 * destroyed. Fatal: the producer is made again before its next use --
 * unless another producer took its transactional.id: receive mode, another
 * kwal with this instance's name runs, which stops the sink (KW_EBUSY);
 * direct mode, another instance took the partition (KW_EFENCED). */
static kw_err_t ks__txn_err(ks__sink_t *k, ks__prod_t *pp, rd_kafka_error_t *e,
                            const char *what, char *errstr, size_t errlen)
{
    rd_kafka_resp_err_t code = rd_kafka_error_code(e);
    kw_err_t err = KW_EIO;

    if (rd_kafka_error_is_fatal(e)) {
        pp->broken = 1;
        if (code == RD_KAFKA_RESP_ERR__FENCED || code == RD_KAFKA_RESP_ERR_PRODUCER_FENCED ||
            code == RD_KAFKA_RESP_ERR_INVALID_PRODUCER_EPOCH) {
            pp->fenced = 1;
            err = k->direct ? KW_EFENCED : KW_EBUSY;
        }
    }
    kw_seterr(errstr, errlen, err, "sink %s: %s: %s%s", k->name, what,
              rd_kafka_error_string(e),
              err == KW_EBUSY ? " (another kwal with this transactional.id runs)"
              : err == KW_EFENCED ? " (another instance took the partition)" : "");
    rd_kafka_error_destroy(e);
    return err;
}

static void ks__abort_txn(ks__sink_t *k, ks__prod_t *pp)
{
    rd_kafka_error_t *e;

    if (!pp->txn_open)
        return;
    pp->txn_open = 0;
    if (pp->broken)
        return;
    e = rd_kafka_abort_transaction(pp->rk, KS_TIMEOUT_MS);
    if (e != NULL) {
        KW_LOG_W(MOD, "sink %s: abort_transaction: %s", k->name, rd_kafka_error_string(e));
        if (rd_kafka_error_is_fatal(e))
            pp->broken = 1;
        rd_kafka_error_destroy(e);
    }
}

/* Every open transaction aborted: receive mode's, or each partition's. */
static void ks__abort_all(ks__sink_t *k)
{
    ks__abort_txn(k, &k->prod);
    for (size_t i = 0; i < k->nparts; i++)
        ks__abort_txn(k, &k->parts[i].prod);
}

static void ks__prod_destroy(ks__sink_t *k, ks__prod_t *pp)
{
    ks__abort_txn(k, pp);
    if (pp->rk != NULL) {
        rd_kafka_flush(pp->rk, 5000);
        rd_kafka_destroy(pp->rk);
    }
    memset(pp, 0, sizeof(*pp));
}

/* Read the committed offsets of the group into committed: for the parts
 * not known, or (in_txn) for every part in this transaction. */
static kw_err_t ks__read_committed(ks__sink_t *k, int in_txn, char *errstr, size_t errlen)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(4);
    rd_kafka_resp_err_t e;
    kw_err_t err = KW_OK;

    if (l == NULL)
        return kw_seterr(errstr, errlen, KW_ENOMEM, "sink %s: out of memory", k->name);
    for (size_t i = 0; i < k->nparts; i++)
        if (in_txn ? k->parts[i].next >= 0 : !k->parts[i].known)
            rd_kafka_topic_partition_list_add(l, k->parts[i].topic, k->parts[i].partition);
    if (l->cnt == 0) {
        rd_kafka_topic_partition_list_destroy(l);
        return KW_OK;
    }
    e = rd_kafka_committed(k->cons, l, KS_TIMEOUT_MS);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
        err = kw_seterr(errstr, errlen, KW_EIO, "sink %s: committed offsets of group '%s': %s",
                        k->name, k->group, rd_kafka_err2str(e));
    } else {
        for (int j = 0; j < l->cnt && err == KW_OK; j++) {
            const rd_kafka_topic_partition_t *tp = &l->elems[j];
            ks__part_t *p = ks__part(k, tp->topic, tp->partition);

            if (tp->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
                err = kw_seterr(errstr, errlen, KW_EIO, "sink %s: committed offset of %s/%d "
                                "in group '%s': %s", k->name, tp->topic, (int)tp->partition,
                                k->group, rd_kafka_err2str(tp->err));
            } else if (p != NULL) {
                p->committed = tp->offset >= 0 ? tp->offset : -1;
                p->known = 1;
            }
        }
    }
    rd_kafka_topic_partition_list_destroy(l);
    return err;
}

/* ---- open / close -------------------------------------------------------- */

static kw_err_t ks__set(rd_kafka_conf_t *c, const char *key, const char *value,
                        const char *name, char *errstr, size_t errlen)
{
    char why[512];

    if (rd_kafka_conf_set(c, key, value, why, sizeof(why)) != RD_KAFKA_CONF_OK)
        return kw_seterr(errstr, errlen, KW_ECONFIG, "sink %s: sink.kafka.%s: %s", name, key,
                         why);
    return KW_OK;
}

/* Consumer properties among the source's kafka.* keys: not given to the
 * producer (librdkafka would warn of each at every start). */
static int ks__consumer_only(const char *key)
{
    static const char *const prefixes[] = {
        "group.", "session.timeout.ms", "heartbeat.interval.ms", "auto.offset.reset",
        "enable.auto.", "auto.commit.", "fetch.", "max.poll.interval.ms", "isolation.level",
        "partition.assignment.strategy", "queued.", "check.crcs", "enable.partition.eof",
        "consume.", "coordinator.query.interval.ms", "max.partition.fetch.bytes",
    };

    for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++)
        if (strncmp(key, prefixes[i], strlen(prefixes[i])) == 0)
            return 1;
    return 0;
}

/* The cluster's settings: the source's kafka.* keys, unless
 * sink.kafka.bootstrap.servers names another cluster; then sink.kafka.* on
 * top. Into a producer's and a consumer's configuration. */
static kw_err_t ks__conf_cluster(const kw_sink_options_t *o, rd_kafka_conf_t *c,
                                 int consumer, const char *name, char *errstr, size_t errlen)
{
    int own = 0;
    kw_err_t err = KW_OK;

    for (size_t i = 0; i < o->nsink_kafka; i++)
        if (strcmp(o->sink_kafka[i].key, "bootstrap.servers") == 0 ||
            strcmp(o->sink_kafka[i].key, "metadata.broker.list") == 0)
            own = 1;
    for (size_t i = 0; !own && i < o->nkafka && err == KW_OK; i++) {
        char why[256];

        if (!consumer && ks__consumer_only(o->kafka[i].key))
            continue;
        if (rd_kafka_conf_set(c, o->kafka[i].key, o->kafka[i].value, why, sizeof(why)) !=
            RD_KAFKA_CONF_OK)
            KW_LOG_D(MOD, "sink %s: kafka.%s not taken: %s", name, o->kafka[i].key, why);
    }
    for (size_t i = 0; i < o->nsink_kafka && err == KW_OK; i++) {
        const char *key = o->sink_kafka[i].key;

        if (consumer && (strcmp(key, "transactional.id") == 0 ||
                         strncmp(key, "transaction.", 12) == 0 ||
                         strcmp(key, "enable.idempotence") == 0 ||
                         strcmp(key, "acks") == 0 || strcmp(key, "linger.ms") == 0 ||
                         strncmp(key, "batch.", 6) == 0 || strncmp(key, "queue.", 6) == 0 ||
                         strcmp(key, "compression.codec") == 0 ||
                         strcmp(key, "compression.type") == 0))
            continue;
        err = ks__set(c, key, o->sink_kafka[i].value, name, errstr, errlen);
    }
    return err;
}

static void ks__close(kw_sink_t *s)
{
    ks__sink_t *k = s->impl;

    if (k == NULL)
        return;
    ks__prod_destroy(k, &k->prod);
    for (size_t i = 0; i < k->nparts; i++)
        ks__prod_destroy(k, &k->parts[i].prod);
    if (k->cons != NULL)
        rd_kafka_destroy(k->cons);
    if (k->conf != NULL)
        rd_kafka_conf_destroy(k->conf);
    if (k->cgmd != NULL)
        rd_kafka_consumer_group_metadata_destroy(k->cgmd);
    for (size_t i = 0; i < k->nparts; i++)
        free(k->parts[i].topic);
    free(k->parts);
    free(k->txid);
    free(k->topic);
    free(k->group);
    free(k->name);
    free(k);
    s->impl = NULL;
}

/* pp made (again) from k->conf (a copy: k->conf stays for the next), with
 * transactional.id txid, its transactions initialised: whatever a producer
 * with that id left open is aborted, and that producer fenced. */
static kw_err_t ks__make_producer(ks__sink_t *k, ks__prod_t *pp, const char *txid,
                                  char *errstr, size_t errlen)
{
    rd_kafka_conf_t *c = rd_kafka_conf_dup(k->conf);
    rd_kafka_error_t *e;
    char why[512];

    ks__prod_destroy(k, pp);
    if (c == NULL)
        return kw_seterr(errstr, errlen, KW_ENOMEM, "sink %s: out of memory", k->name);
    if (rd_kafka_conf_set(c, "transactional.id", txid, why, sizeof(why)) != RD_KAFKA_CONF_OK) {
        rd_kafka_conf_destroy(c);
        return kw_seterr(errstr, errlen, KW_ECONFIG, "sink %s: transactional.id: %s",
                         k->name, why);
    }
    rd_kafka_conf_set_opaque(c, k);
    pp->rk = rd_kafka_new(RD_KAFKA_PRODUCER, c, why, sizeof(why));
    if (pp->rk == NULL) {
        rd_kafka_conf_destroy(c);
        return kw_seterr(errstr, errlen, KW_ECONFIG, "sink %s: producer: %s", k->name, why);
    }
    e = rd_kafka_init_transactions(pp->rk, KS_TIMEOUT_MS);
    if (e != NULL) {
        kw_err_t err = ks__txn_err(k, pp, e, "init_transactions (is the cluster reachable, "
                                   "and does it have transactions: transaction.state.log.* "
                                   "settings?)", errstr, errlen);

        pp->broken = 1;     /* made again before its next use */
        return err;
    }
    return KW_OK;
}

/* Direct mode: partition p's producer, made again (and so fencing whoever
 * wrote p before). */
static kw_err_t ks__part_producer(ks__sink_t *k, ks__part_t *p, char *errstr, size_t errlen)
{
    size_t n = strlen(k->txid) + strlen(p->topic) + 16;
    char *txid = malloc(n);
    kw_err_t err;

    if (txid == NULL)
        return kw_seterr(errstr, errlen, KW_ENOMEM, "sink %s: out of memory", k->name);
    snprintf(txid, n, "%s:%s:%d", k->txid, p->topic, (int)p->partition);
    err = ks__make_producer(k, &p->prod, txid, errstr, errlen);
    free(txid);
    return err;
}

/* pp's transaction begun, unless it is open already (the producer made
 * again first after a fatal error; direct mode: p's, NULL in receive). */
static kw_err_t ks__txn_begin(ks__sink_t *k, ks__prod_t *pp, ks__part_t *p, char *errstr,
                              size_t errlen)
{
    rd_kafka_error_t *e;
    kw_err_t err;

    if (pp->txn_open)
        return KW_OK;
    if (pp->fenced)
        return p != NULL
               ? kw_seterr(errstr, errlen, KW_EFENCED, "sink %s: %s/%d: fenced: another "
                           "instance took the partition", k->name, p->topic, (int)p->partition)
               : kw_seterr(errstr, errlen, KW_EBUSY, "sink %s: fenced: another kwal with "
                           "this transactional.id took over", k->name);
    if (pp->broken || pp->rk == NULL) {
        if (pp->rk != NULL)
            KW_LOG_W(MOD, "sink %s: the producer had a fatal error: making it again", k->name);
        if (p == NULL)
            ks__reset(k, 1);
        else
            p->known = 0;
        err = p != NULL ? ks__part_producer(k, p, errstr, errlen)
                        : ks__make_producer(k, pp, k->txid, errstr, errlen);
        if (err != KW_OK)
            return err;
    }
    e = rd_kafka_begin_transaction(pp->rk);
    if (e != NULL)
        return ks__txn_err(k, pp, e, "begin_transaction", errstr, errlen);
    pp->txn_open = 1;
    return KW_OK;
}

/* The output topic's partition count, from the cluster's metadata. */
static kw_err_t ks__out_partitions(ks__sink_t *k, char *errstr, size_t errlen)
{
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(k->cons, k->topic, NULL);
    rd_kafka_resp_err_t e;
    kw_err_t err = KW_OK;

    if (rkt == NULL)
        return kw_seterr(errstr, errlen, KW_ENOMEM, "sink %s: out of memory", k->name);
    e = rd_kafka_metadata(k->cons, 0, rkt, &md, KS_TIMEOUT_MS);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
        err = kw_seterr(errstr, errlen, KW_EIO, "sink %s: metadata: %s", k->name,
                        rd_kafka_err2str(e));
    else if (md->topic_cnt != 1 || md->topics[0].err != RD_KAFKA_RESP_ERR_NO_ERROR ||
             md->topics[0].partition_cnt < 1)
        err = kw_seterr(errstr, errlen, KW_EIO, "sink %s: output topic '%s': %s (create it "
                        "first)", k->name, k->topic,
                        md->topic_cnt == 1 && md->topics[0].err != RD_KAFKA_RESP_ERR_NO_ERROR
                        ? rd_kafka_err2str(md->topics[0].err) : "no partitions");
    else
        k->out_parts = md->topics[0].partition_cnt;
    if (md != NULL)
        rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    return err;
}

static kw_err_t ks__open(kw_sink_t *s, const char *arg, char *errstr, size_t errlen)
{
    const kw_sink_options_t *o = s->opts;
    ks__sink_t *k = calloc(1, sizeof(*k));
    rd_kafka_conf_t *cc = NULL;
    char txid[512], why[512];
    size_t n;
    kw_err_t err;

    if (k == NULL)
        return kw_seterr(errstr, errlen, KW_ENOMEM, "sink kafka: out of memory");
    s->impl = k;
    n = strlen(arg) + 7;
    if ((k->name = malloc(n)) == NULL) {
        ks__close(s);
        return kw_seterr(errstr, errlen, KW_ENOMEM, "sink kafka: out of memory");
    }
    snprintf(k->name, n, "kafka:%s", arg);
    if (o == NULL || o->group == NULL || o->group[0] == '\0' || o->instance == NULL ||
        o->instance[0] == '\0') {
        err = kw_seterr(errstr, errlen, KW_ECONFIG, "sink %s: needs group.id and an "
                        "instance name (kwal receive and kwal direct give them)", k->name);
        ks__close(s);
        return err;
    }
    k->direct = o->direct;
    k->topic = strdup(arg);
    n = strlen(o->group) + strlen(o->instance) + 16;
    if ((k->group = malloc(n)) != NULL) {
        if (k->direct)
            snprintf(k->group, n, "%s", o->group);
        else
            snprintf(k->group, n, "%s.kwal-sink.%s", o->group, o->instance);
    }
    k->conf = rd_kafka_conf_new();
    cc = rd_kafka_conf_new();
    if (k->topic == NULL || k->group == NULL || k->conf == NULL || cc == NULL) {
        if (cc != NULL)
            rd_kafka_conf_destroy(cc);
        ks__close(s);
        return kw_seterr(errstr, errlen, KW_ENOMEM, "sink kafka: out of memory");
    }
    if (k->direct)      /* a prefix: kwal-<group>:<topic>:<partition> */
        snprintf(txid, sizeof(txid), "kwal-%s", o->group);
    else
        snprintf(txid, sizeof(txid), "kwal-%s-%s", o->group, o->instance);
    /* ours first, so that sink.kafka.* may change them */
    if ((err = ks__set(k->conf, "transactional.id", txid, k->name, errstr, errlen)) != KW_OK ||
        (err = ks__set(k->conf, "transaction.timeout.ms", "10000", k->name, errstr,
                       errlen)) != KW_OK ||
        (err = ks__set(k->conf, "client.id", "kwal-sink", k->name, errstr, errlen)) != KW_OK ||
        (err = ks__set(k->conf, "allow.auto.create.topics", "false", k->name, errstr,
                       errlen)) != KW_OK ||
        (err = ks__conf_cluster(o, k->conf, 0, k->name, errstr, errlen)) != KW_OK ||
        /* the reader's own settings last: nothing may change its group */
        (err = ks__conf_cluster(o, cc, 1, k->name, errstr, errlen)) != KW_OK ||
        (err = ks__set(cc, "group.id", k->group, k->name, errstr, errlen)) != KW_OK ||
        (err = ks__set(cc, "enable.auto.commit", "false", k->name, errstr, errlen)) != KW_OK ||
        (err = ks__set(cc, "isolation.level", "read_committed", k->name, errstr,
                       errlen)) != KW_OK) {
        rd_kafka_conf_destroy(cc);
        ks__close(s);
        return err;
    }
    rd_kafka_conf_set_dr_msg_cb(k->conf, ks__dr);
    {   /* sink.kafka.transactional.id may have replaced ours */
        size_t tn = sizeof(txid);

        if (rd_kafka_conf_get(k->conf, "transactional.id", txid, &tn) != RD_KAFKA_CONF_OK ||
            (k->txid = strdup(txid)) == NULL) {
            rd_kafka_conf_destroy(cc);
            ks__close(s);
            return kw_seterr(errstr, errlen, KW_ENOMEM, "sink kafka: out of memory");
        }
    }
    k->cons = rd_kafka_new(RD_KAFKA_CONSUMER, cc, why, sizeof(why));
    if (k->cons == NULL) {
        rd_kafka_conf_destroy(cc);
        err = kw_seterr(errstr, errlen, KW_ECONFIG, "sink %s: consumer: %s", k->name, why);
        ks__close(s);
        return err;
    }
    k->cgmd = rd_kafka_consumer_group_metadata_new(k->group);
    if (k->cgmd == NULL) {
        ks__close(s);
        return kw_seterr(errstr, errlen, KW_ENOMEM, "sink kafka: out of memory");
    }
    if ((!k->direct && (err = ks__make_producer(k, &k->prod, k->txid, errstr, errlen)) !=
         KW_OK) || (err = ks__out_partitions(k, errstr, errlen)) != KW_OK) {
        ks__close(s);
        return err;
    }
    KW_LOG_I(MOD, "sink %s: %d partitions, transactional.id %s%s, offsets in group '%s'",
             k->name, (int)k->out_parts, k->txid, k->direct ? ":<topic>:<partition>" : "",
             k->group);
    return KW_OK;
}

/* ---- the transaction ----------------------------------------------------- */

/* Receive mode begins its transaction; direct mode each partition's as the
 * batch first writes or ranges it. */
static kw_err_t ks__begin(kw_sink_t *s, uint64_t batch_id, char *errstr, size_t errlen)
{
    ks__sink_t *k = s->impl;
    kw_err_t err;

    ks__reset(k, 0);
    atomic_store(&k->dr_failed, 0);
    if (!k->direct && (err = ks__txn_begin(k, &k->prod, NULL, errstr, errlen)) != KW_OK)
        return err;
    if (batch_id > k->last_id)
        k->last_id = batch_id;
    return KW_OK;
}

/* The producer a record or range of topic/partition goes through, its
 * transaction begun. */
static kw_err_t ks__txn_of(ks__sink_t *k, const char *topic, int32_t partition,
                           ks__part_t **pp, rd_kafka_t **rk, char *errstr, size_t errlen)
{
    ks__part_t *p = ks__part(k, topic, partition);
    kw_err_t err;

    if (p == NULL)
        return kw_seterr(errstr, errlen, KW_ENOMEM, "sink %s: out of memory", k->name);
    if (k->direct) {
        if ((err = ks__txn_begin(k, &p->prod, p, errstr, errlen)) != KW_OK)
            return err;
        *rk = p->prod.rk;
    } else {
        *rk = k->prod.rk;
    }
    *pp = p;
    return KW_OK;
}

/* Ids only name batches in the offsets' metadata: the next after ours. */
static kw_err_t ks__begin_next(kw_sink_t *s, uint64_t min_id, uint64_t *batch_id,
                               char *errstr, size_t errlen)
{
    ks__sink_t *k = s->impl;
    uint64_t id = k->last_id + 1 > min_id ? k->last_id + 1 : min_id;
    kw_err_t err = ks__begin(s, id, errstr, errlen);

    if (err == KW_OK)
        *batch_id = id;
    return err;
}

static kw_err_t ks__produce(ks__sink_t *k, rd_kafka_t *rk, const kw_record_t *r,
                            char *errstr, size_t errlen)
{
    rd_kafka_headers_t *h = rd_kafka_headers_new(r->header_count + 3);
    /* librdkafka's macros cast without parentheses: plain values only */
    size_t klen = r->key != NULL ? r->key_len : 0, vlen = r->value != NULL ? r->value_len : 0;
    int64_t ts = r->timestamp >= 0 ? r->timestamp : 0;     /* 0: now */
    int32_t out = r->partition % k->out_parts;
    void *value = (void *)r->value;
    char part[16], off[24];
    rd_kafka_resp_err_t e;

    if (h == NULL)
        return kw_seterr(errstr, errlen, KW_ENOMEM, "sink %s: out of memory", k->name);
    for (size_t i = 0; i < r->header_count; i++)
        rd_kafka_header_add(h, r->headers[i].name, (ssize_t)r->headers[i].name_len,
                            r->headers[i].value, r->headers[i].value != NULL
                            ? (ssize_t)r->headers[i].value_len : 0);
    snprintf(part, sizeof(part), "%" PRId32, r->partition);
    snprintf(off, sizeof(off), "%" PRId64, r->offset);
    rd_kafka_header_add(h, "kwal.topic", -1, r->topic, -1);
    rd_kafka_header_add(h, "kwal.partition", -1, part, -1);
    rd_kafka_header_add(h, "kwal.offset", -1, off, -1);
    for (;;) {
        e = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(k->topic),
                              RD_KAFKA_V_PARTITION(out), RD_KAFKA_V_KEY(r->key, klen),
                              RD_KAFKA_V_VALUE(value, vlen), RD_KAFKA_V_TIMESTAMP(ts),
                              RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                              RD_KAFKA_V_END);
        if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL)
            break;
        rd_kafka_poll(rk, 50);          /* room in the queue as deliveries end */
    }
    if (e == RD_KAFKA_RESP_ERR_NO_ERROR)
        return KW_OK;
    rd_kafka_headers_destroy(h);        /* still ours when producev failed */
    return kw_seterr(errstr, errlen, KW_EIO, "sink %s: produce %s/%d@%" PRId64 ": %s",
                     k->name, r->topic, (int)r->partition, r->offset, rd_kafka_err2str(e));
}

static kw_err_t ks__write(kw_sink_t *s, uint64_t batch_id, const kw_record_t *recs, size_t n,
                          kw_sink_stats_t *st, int *replayed, char *errstr, size_t errlen)
{
    ks__sink_t *k = s->impl;
    kw_err_t err;

    (void)batch_id;
    if (!k->direct) {   /* what the writer group holds, for every partition here */
        for (size_t i = 0; i < n; i++)
            if (ks__part(k, recs[i].topic, recs[i].partition) == NULL)
                return kw_seterr(errstr, errlen, KW_ENOMEM, "sink %s: out of memory",
                                 k->name);
        if ((err = ks__read_committed(k, 0, errstr, errlen)) != KW_OK)
            return err;
    }
    for (size_t i = 0; i < n; i++) {
        ks__part_t *p;
        rd_kafka_t *rk;

        if ((err = ks__txn_of(k, recs[i].topic, recs[i].partition, &p, &rk, errstr,
                              errlen)) != KW_OK)
            return err;
        if (!k->direct && (recs[i].offset < p->committed || recs[i].offset < p->next)) {
            st->duplicates_delivered++;
            continue;
        }
        if ((err = ks__produce(k, rk, &recs[i], errstr, errlen)) != KW_OK)
            return err;
        if (!k->direct)
            p->next = recs[i].offset + 1;
        st->stored++;
    }
    if (n > 0 && st->stored == 0 && !k->direct) {
        *replayed = 1;      /* written whole before: nothing to commit */
        ks__abort_txn(k, &k->prod);
    }
    return KW_OK;
}

static kw_err_t ks__put_range(kw_sink_t *s, uint64_t batch_id, const char *topic,
                              int32_t partition, int64_t expect_next, int64_t from_offset,
                              int64_t until_offset, char *errstr, size_t errlen)
{
    ks__sink_t *k = s->impl;
    ks__part_t *p;
    rd_kafka_t *rk;
    kw_err_t err;

    (void)batch_id;
    (void)from_offset;
    if (!k->direct)
        return kw_seterr(errstr, errlen, KW_EINVAL, "sink %s: ranges are direct mode's",
                         k->name);
    /* a range may hold no record (offsets of transaction markers) */
    if ((err = ks__txn_of(k, topic, partition, &p, &rk, errstr, errlen)) != KW_OK)
        return err;
    (void)rk;
    if (p->next >= 0)
        return kw_seterr(errstr, errlen, KW_EIO, "sink %s: batch %" PRIu64 " has a range of "
                         "%s/%d already", k->name, batch_id, topic, (int)partition);
    p->next = until_offset;
    p->expect = expect_next;
    return KW_OK;
}

/* Direct mode's fence: the group's offsets read again, each still where
 * the caller saw it. */
static kw_err_t ks__fence(ks__sink_t *k, char *errstr, size_t errlen)
{
    kw_err_t err = ks__read_committed(k, 1, errstr, errlen);

    for (size_t i = 0; i < k->nparts && err == KW_OK; i++) {
        const ks__part_t *p = &k->parts[i];

        if (p->next >= 0 && p->expect != KW_SINK_RANGE_UNCHECKED && p->committed != p->expect)
            err = kw_seterr(errstr, errlen, KW_EFENCED, "sink %s: %s/%d: group '%s' is at "
                            "%" PRId64 ", this instance expected %" PRId64, k->name,
                            p->topic, (int)p->partition, k->group, p->committed, p->expect);
    }
    return err;
}

/* The offsets of pp's transaction sent: each part in it (direct mode: the
 * one part p) at its next. */
static kw_err_t ks__send_offsets(ks__sink_t *k, ks__prod_t *pp, const ks__part_t *only,
                                 uint64_t batch_id, char *errstr, size_t errlen)
{
    rd_kafka_topic_partition_list_t *l;
    rd_kafka_error_t *e;
    char meta[64];
    kw_err_t err = KW_OK;

    if ((l = rd_kafka_topic_partition_list_new(only != NULL ? 1 : (int)k->nparts + 1)) == NULL)
        return kw_seterr(errstr, errlen, KW_ENOMEM, "sink %s: out of memory", k->name);
    snprintf(meta, sizeof(meta), "kwal batch %" PRIu64, batch_id);
    for (size_t i = 0; i < k->nparts; i++) {
        const ks__part_t *p = &k->parts[i];
        rd_kafka_topic_partition_t *tp;

        if ((only != NULL && p != only) || p->next < 0 ||
            (!k->direct && p->next <= p->committed))
            continue;
        tp = rd_kafka_topic_partition_list_add(l, p->topic, p->partition);
        tp->offset = p->next;
        tp->metadata = strdup(meta);
        tp->metadata_size = tp->metadata != NULL ? strlen(meta) : 0;
    }
    if (l->cnt > 0) {
        e = rd_kafka_send_offsets_to_transaction(pp->rk, l, k->cgmd, KS_TIMEOUT_MS);
        if (e != NULL)
            err = ks__txn_err(k, pp, e, "send_offsets_to_transaction", errstr, errlen);
    }
    rd_kafka_topic_partition_list_destroy(l);
    return err;
}

/* pp's transaction committed, a commit that may still succeed tried again.
 * On a failure every cached offset is read again before the next batch:
 * committed or not is not known. */
static kw_err_t ks__commit_txn(ks__sink_t *k, ks__prod_t *pp, char *errstr, size_t errlen)
{
    rd_kafka_error_t *e;

    for (int tries = 1;; tries++) {
        e = rd_kafka_commit_transaction(pp->rk, KS_TIMEOUT_MS);
        if (e == NULL)
            break;
        if (rd_kafka_error_is_retriable(e) && tries < KS_COMMIT_TRIES) {
            KW_LOG_W(MOD, "sink %s: commit_transaction: %s; trying again", k->name,
                     rd_kafka_error_string(e));
            rd_kafka_error_destroy(e);
            continue;
        }
        pp->txn_open = 0;
        ks__reset(k, 1);
        return ks__txn_err(k, pp, e, atomic_load(&k->dr_failed) > 0 ? k->dr_err :
                           "commit_transaction", errstr, errlen);
    }
    pp->txn_open = 0;
    return KW_OK;
}

/* Receive mode: one transaction. Direct mode: the read fence, then one
 * transaction per partition, each fenced on the coordinator by its
 * transactional.id; a failure leaves the partitions committed before it
 * committed (each whole, with its range) and aborts the rest. */
static kw_err_t ks__commit(kw_sink_t *s, uint64_t batch_id, char *errstr, size_t errlen)
{
    ks__sink_t *k = s->impl;
    kw_err_t err = KW_OK;

    if (k->direct && (err = ks__fence(k, errstr, errlen)) != KW_OK)
        return err;
    if (!k->direct)
        err = ks__send_offsets(k, &k->prod, NULL, batch_id, errstr, errlen);
    for (size_t i = 0; k->direct && i < k->nparts && err == KW_OK; i++)
        if (k->parts[i].prod.txn_open)
            err = ks__send_offsets(k, &k->parts[i].prod, &k->parts[i], batch_id, errstr,
                                   errlen);
    if (err != KW_OK)
        return err;
    kw_crash(KW_CRASH_SINK_MID_TXN);
    if (kw_fault("sink/kafka-stop"))
        raise(SIGSTOP);     /* frozen before the commit (tests of the direct fence) */
    if (!k->direct)
        err = ks__commit_txn(k, &k->prod, errstr, errlen);
    for (size_t i = 0; k->direct && i < k->nparts && err == KW_OK; i++)
        if (k->parts[i].prod.txn_open)
            err = ks__commit_txn(k, &k->parts[i].prod, errstr, errlen);
    if (err != KW_OK) {     /* every offset is read again (ks__commit_txn) */
        ks__abort_all(k);
        return err;
    }
    for (size_t i = 0; i < k->nparts; i++)
        if (k->parts[i].next >= 0) {
            k->parts[i].committed = k->parts[i].next;
            k->parts[i].known = 1;
        }
    ks__reset(k, 0);
    return KW_OK;
}

/* After an error or a replay: the transactions aborted, and an offset we
 * may have moved read again. */
static void ks__abort(kw_sink_t *s, uint64_t batch_id)
{
    ks__sink_t *k = s->impl;

    (void)batch_id;
    ks__abort_all(k);
    ks__reset(k, 0);
}

/* ---- offsets read back (direct mode) ---------------------------------- */

static kw_err_t ks__range_next(kw_sink_t *s, const char *topic, int32_t partition,
                               int64_t *next, char *errstr, size_t errlen)
{
    ks__sink_t *k = s->impl;
    ks__part_t *p;
    kw_err_t err;

    if ((p = ks__part(k, topic, partition)) == NULL)
        return kw_seterr(errstr, errlen, KW_ENOMEM, "sink %s: out of memory", k->name);
    p->known = 0;
    /* taken: its producer made again first, which fences the one that wrote
     * the partition before (another instance, or this one before it lost
     * it) and ends what it left open -- so the offset read next is final
     * until this instance commits */
    if (k->direct && (err = ks__part_producer(k, p, errstr, errlen)) != KW_OK)
        return err;
    if ((err = ks__read_committed(k, 0, errstr, errlen)) != KW_OK)
        return err;
    *next = p->committed;
    return KW_OK;
}

/* Batch ids are not stored apart from the offsets' metadata: the ids of
 * instances sharing a group need not differ. 0. */
static kw_err_t ks__ranges_last_batch(kw_sink_t *s, uint64_t *batch, char *errstr,
                                      size_t errlen)
{
    (void)s;
    (void)errstr;
    (void)errlen;
    *batch = 0;
    return KW_OK;
}

const kw__sink_ops_t kw__sink_kafka_ops = {
    .kind = KW_SINK_KAFKA,
    .name = "kafka",
    .arg_what = "topic",
    .arg_meta = "TOPIC",
    .open = ks__open,
    .close = ks__close,
    .begin = ks__begin,
    .begin_next = ks__begin_next,
    .write = ks__write,
    .commit = ks__commit,
    .abort = ks__abort,
    .put_range = ks__put_range,
    .range_next = ks__range_next,
    .ranges_last_batch = ks__ranges_last_batch,
};
