/*
 * txn_produce.c -- kwal-txn-produce: writes records in Kafka transactions,
 * committing some and aborting others, so that a partition's offsets hold
 * records a read_committed consumer sees, records it never sees (aborted)
 * and transaction markers that are no record at all. The tests use it to
 * show that kwal stores exactly the committed records, once, and that its
 * offsets reach the partition's end offset past the gaps.
 *
 *   kwal-txn-produce --brokers B --topic T --transactions N --records M
 *                    [--partitions P] [--abort-every K] [--id TXNID]
 *
 * Transaction t (0-based) writes M records, record i of it to partition
 * i % P with key "t<t>-r<i>" and value "committed" or "aborted" (what
 * happens to it); it is aborted when K > 0 and t % K == K - 1, else
 * committed.
 *
 * Copy mode, a stand-in for kwal's Kafka sink (sink=kafka:T) that the
 * tests of kwal-verify --kafka use:
 *
 *   kwal-txn-produce --brokers B --topic T --copy-from SRC --partitions P
 *                    [--abort-copies] [--fault F] [--id TXNID]
 *
 * reads every partition of SRC to its end (read_committed) and writes each
 * record to T the way the sink does (verify_kafka.h): partition = source
 * partition mod P (P must be T's partition count), the same key, value
 * and timestamp (CreateTime), the source's headers and then kwal.topic,
 * kwal.partition, kwal.offset -- all in ONE committed transaction, in the
 * order read. --abort-copies adds a transaction of copies of every record
 * before it and another after it, both aborted (records a read_committed
 * reader must never count). --fault F breaks the committed copy on
 * purpose, so that a test can show the checker catches it:
 *   duplicate   the first record is written twice in a row
 *   swap        the first record and the next one of the same source
 *               partition are written in swapped order
 *   timestamp   the first record's timestamp is 1 ms later than the source's
 *   no-header   the first record has no kwal.offset header
 *
 * On success the last line of stdout is
 *   committed_txns=C aborted_txns=A committed_records=X aborted_records=Y
 * and the exit status 0; 1 on a Kafka error (one line on stderr); 2 for
 * bad arguments. The transactional id defaults to kwal-txn-<pid>.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include "cli.h"
#include "verify_kafka.h"

#define PROG "kwal-txn-produce"
#define TXN_TIMEOUT_MS 60000

typedef enum { FAULT_NONE, FAULT_DUPLICATE, FAULT_SWAP, FAULT_TIMESTAMP, FAULT_NO_HEADER } fault_t;

typedef struct {
    const char *brokers, *topic, *txnid, *copy_from;
    uint64_t ntx, nrec, parts, abort_every;
    bool abort_copies;
    fault_t fault;
} opts_t;

typedef struct {
    uint64_t committed_tx, aborted_tx, committed_recs, aborted_recs;
} tally_t;

/* One source record, copied out of its message (copy mode). */
typedef struct {
    int32_t partition;
    int64_t offset;
    int64_t ts;                 /* -1: none */
    void *key, *val;            /* NULL: null */
    size_t klen, vlen;
    rd_kafka_headers_t *hdrs;   /* a copy of the source's, NULL: none */
} src_rec_t;

typedef struct {
    src_rec_t *recs;
    size_t n, cap;
    bool oom;
} src_t;

static int kafka_fail(const char *what, rd_kafka_error_t *e)
{
    fprintf(stderr, "%s: %s: %s\n", PROG, what, rd_kafka_error_string(e));
    rd_kafka_error_destroy(e);
    return 1;
}

static void usage(FILE *out)
{
    fputs("Usage: " PROG " --brokers B --topic T --transactions N --records M\n"
          "       [--partitions P] [--abort-every K] [--id TXNID]\n"
          "       " PROG " --brokers B --topic T --copy-from SRC --partitions P\n"
          "       [--abort-copies] [--fault duplicate|swap|timestamp|no-header] [--id TXNID]\n"
          "Writes N transactions of M records each (record i to partition i % P),\n"
          "aborting every K-th transaction (K=0: none), committing the others.\n"
          "--copy-from: copies every committed record of SRC to T as kwal's Kafka\n"
          "sink does (partition = source partition mod P, which must be T's partition\n"
          "count; key, value, timestamp, headers, then kwal.topic, kwal.partition,\n"
          "kwal.offset) in one committed transaction; --abort-copies adds an aborted\n"
          "transaction of copies before and after it; --fault breaks the committed\n"
          "copy on purpose (see the file's header comment).\n", out);
}

/* ------------------------------------------------------------ producer -- */

/* The transactional producer, or NULL with *rc set: 2 for a property
 * librdkafka refuses, 1 when it cannot create the producer. */
static rd_kafka_t *producer_new(const opts_t *o, int *rc)
{
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_t *rk;

    if (rd_kafka_conf_set(conf, "bootstrap.servers", o->brokers, errstr, sizeof(errstr)) ||
        rd_kafka_conf_set(conf, "transactional.id", o->txnid, errstr, sizeof(errstr)) ||
        rd_kafka_conf_set(conf, "linger.ms", "5", errstr, sizeof(errstr))) {
        fprintf(stderr, "%s: %s\n", PROG, errstr);
        rd_kafka_conf_destroy(conf);
        *rc = KW_CLI_EXIT_USAGE;
        return NULL;
    }
    if ((rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr))) == NULL) {
        fprintf(stderr, "%s: %s\n", PROG, errstr);
        rd_kafka_conf_destroy(conf);
        *rc = 1;
    }
    return rk;   /* conf is owned by rk now */
}

/* Produce one record, waiting while the queue is full. hdrs (may be NULL)
 * belongs to the message on success and is freed here otherwise; ts < 0:
 * none. Returns 0, or 1 after printing the error. */
static int produce_rec(rd_kafka_t *rk, const char *topic, int32_t partition, const void *key,
                       size_t klen, const void *val, size_t vlen, int64_t ts,
                       rd_kafka_headers_t *hdrs)
{
    rd_kafka_resp_err_t err;

    do {
        err = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic),
                                RD_KAFKA_V_PARTITION(partition),
                                RD_KAFKA_V_KEY((void *)key, klen),
                                RD_KAFKA_V_VALUE((void *)val, vlen),
                                RD_KAFKA_V_TIMESTAMP(ts < 0 ? 0 : ts),
                                RD_KAFKA_V_HEADERS(hdrs),
                                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                RD_KAFKA_V_END);
        if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL)
            rd_kafka_poll(rk, 100);
    } while (err == RD_KAFKA_RESP_ERR__QUEUE_FULL);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        if (hdrs != NULL)
            rd_kafka_headers_destroy(hdrs);
        fprintf(stderr, "%s: produce: %s\n", PROG, rd_kafka_err2str(err));
        return 1;
    }
    return 0;
}

/* Flush (every record written before the end, aborted ones included, so
 * that aborted records really take offsets in the log), then commit or
 * abort. Returns 0, or 1 after printing the error. */
static int txn_end(rd_kafka_t *rk, bool abort, uint64_t records, tally_t *t)
{
    rd_kafka_error_t *e;

    if (rd_kafka_flush(rk, TXN_TIMEOUT_MS) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        fprintf(stderr, "%s: flush: timed out\n", PROG);
        return 1;
    }
    e = abort ? rd_kafka_abort_transaction(rk, TXN_TIMEOUT_MS)
              : rd_kafka_commit_transaction(rk, TXN_TIMEOUT_MS);
    if (e != NULL)
        return kafka_fail(abort ? "abort_transaction" : "commit_transaction", e);
    if (abort) {
        t->aborted_tx++;
        t->aborted_recs += records;
    } else {
        t->committed_tx++;
        t->committed_recs += records;
    }
    return 0;
}

static int txn_begin(rd_kafka_t *rk)
{
    rd_kafka_error_t *e = rd_kafka_begin_transaction(rk);

    return e != NULL ? kafka_fail("begin_transaction", e) : 0;
}

/* ---------------------------------------------------- transactions mode -- */

static int run_transactions(rd_kafka_t *rk, const opts_t *o, tally_t *t)
{
    for (uint64_t tx = 0; tx < o->ntx; tx++) {
        bool abort = o->abort_every > 0 && tx % o->abort_every == o->abort_every - 1;
        const char *val = abort ? "aborted" : "committed";

        if (txn_begin(rk) != 0)
            return 1;
        for (uint64_t i = 0; i < o->nrec; i++) {
            char key[64];

            snprintf(key, sizeof(key), "t%" PRIu64 "-r%" PRIu64, tx, i);
            if (produce_rec(rk, o->topic, (int32_t)(i % o->parts), key, strlen(key), val,
                            strlen(val), -1, NULL) != 0)
                return 1;
        }
        if (txn_end(rk, abort, o->nrec, t) != 0)
            return 1;
    }
    return 0;
}

/* ------------------------------------------------------------ copy mode -- */

static void *dup_bytes(const void *p, size_t len, bool *oom)
{
    void *d;

    if (p == NULL)
        return NULL;
    if ((d = malloc(len ? len : 1)) == NULL) {
        *oom = true;
        return NULL;
    }
    memcpy(d, p, len);
    return d;
}

/* kw_vk_read's callback on the source: keep a copy of the record. */
static void keep_source(void *opaque, const kw_vk_rec_t *k)
{
    src_t *s = opaque;
    const rd_kafka_message_t *m = k->message;
    rd_kafka_headers_t *h = NULL;
    src_rec_t *r;

    if (s->oom)
        return;
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 1024;
        src_rec_t *n = realloc(s->recs, cap * sizeof(*n));

        if (n == NULL) {
            s->oom = true;
            return;
        }
        s->recs = n;
        s->cap = cap;
    }
    r = &s->recs[s->n++];
    memset(r, 0, sizeof(*r));
    r->partition = k->partition;
    r->offset = k->offset;
    r->ts = k->tstype == KW_VK_TS_NONE ? -1 : k->ts;
    r->klen = k->klen;
    r->vlen = k->plen;
    r->key = k->key_null ? NULL : dup_bytes(k->key, k->klen, &s->oom);
    r->val = k->payload_null ? NULL : dup_bytes(k->payload, k->plen, &s->oom);
    if (rd_kafka_message_headers(m, &h) == RD_KAFKA_RESP_ERR_NO_ERROR)
        r->hdrs = rd_kafka_headers_copy(h);
}

static void source_free(src_t *s)
{
    for (size_t i = 0; i < s->n; i++) {
        free(s->recs[i].key);
        free(s->recs[i].val);
        if (s->recs[i].hdrs != NULL)
            rd_kafka_headers_destroy(s->recs[i].hdrs);
    }
    free(s->recs);
}

/* Every committed record of o->copy_from, in the order read. */
static int read_source(const opts_t *o, src_t *s)
{
    kw_vk_opts_t ko = { .bootstrap = o->brokers, .topic = o->copy_from,
                        .timeout_ms = TXN_TIMEOUT_MS };
    kw_vk_result_t res;
    char errstr[2048];

    if (kw_vk_read(&ko, keep_source, s, &res, errstr, sizeof(errstr)) != KW_VK_OK) {
        fprintf(stderr, "%s: read %s: %s\n", PROG, o->copy_from, errstr);
        return 1;
    }
    if (s->oom) {
        fprintf(stderr, "%s: out of memory\n", PROG);
        return 1;
    }
    return 0;
}

/* --fault swap: the first record and the next of its source partition
 * trade places in the order written. Returns 0, or 1 when there is none. */
static int swap_first(src_t *s)
{
    for (size_t j = 1; j < s->n; j++) {
        if (s->recs[j].partition == s->recs[0].partition) {
            src_rec_t tmp = s->recs[0];

            s->recs[0] = s->recs[j];
            s->recs[j] = tmp;
            return 0;
        }
    }
    fprintf(stderr, "%s: --fault swap: no two records in one source partition\n", PROG);
    return 1;
}

/* Write copy r (index i in the order written) of a record of src. */
static int write_copy(rd_kafka_t *rk, const opts_t *o, const src_rec_t *r, bool committed,
                      size_t i)
{
    rd_kafka_headers_t *h = r->hdrs ? rd_kafka_headers_copy(r->hdrs) : rd_kafka_headers_new(3);
    char part[16], off[24];
    int64_t ts = r->ts;

    snprintf(part, sizeof(part), "%" PRId32, r->partition);
    snprintf(off, sizeof(off), "%" PRId64, r->offset);
    rd_kafka_header_add(h, KW_VK_TOPIC_HEADER, -1, o->copy_from, -1);
    rd_kafka_header_add(h, KW_VK_PARTITION_HEADER, -1, part, -1);
    if (!(committed && i == 0 && o->fault == FAULT_NO_HEADER))
        rd_kafka_header_add(h, KW_VK_OFFSET_HEADER, -1, off, -1);
    if (committed && i == 0 && o->fault == FAULT_TIMESTAMP && ts >= 0)
        ts++;
    return produce_rec(rk, o->topic, (int32_t)((uint64_t)r->partition % o->parts), r->key,
                       r->klen, r->val, r->vlen, ts, h);
}

/* One transaction holding a copy of every record of src. */
static int copy_txn(rd_kafka_t *rk, const opts_t *o, const src_t *s, bool committed,
                    tally_t *t)
{
    uint64_t written = 0;

    if (txn_begin(rk) != 0)
        return 1;
    for (size_t i = 0; i < s->n; i++) {
        int copies = committed && i == 0 && o->fault == FAULT_DUPLICATE ? 2 : 1;

        for (int c = 0; c < copies; c++, written++)
            if (write_copy(rk, o, &s->recs[i], committed, i) != 0)
                return 1;
    }
    return txn_end(rk, !committed, written, t);
}

static int run_copy(rd_kafka_t *rk, const opts_t *o, tally_t *t)
{
    src_t s = { 0 };
    int rc = read_source(o, &s);

    if (rc == 0 && s.n == 0) {
        fprintf(stderr, "%s: %s holds no committed record to copy\n", PROG, o->copy_from);
        rc = 1;
    }
    if (rc == 0 && o->fault == FAULT_SWAP)
        rc = swap_first(&s);
    if (rc == 0 && o->abort_copies)
        rc = copy_txn(rk, o, &s, false, t);
    if (rc == 0)
        rc = copy_txn(rk, o, &s, true, t);
    if (rc == 0 && o->abort_copies)
        rc = copy_txn(rk, o, &s, false, t);
    source_free(&s);
    return rc;
}

/* ------------------------------------------------------------- options -- */

static int parse_fault(const char *s, fault_t *out)
{
    static const char *const names[] = { "none", "duplicate", "swap", "timestamp", "no-header" };

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (strcmp(s, names[i]) == 0) {
            *out = (fault_t)i;
            return 0;
        }
    }
    return kw_cli_usage_error(PROG, "--fault: '%s' is not none, duplicate, swap, timestamp "
                              "or no-header", s);
}

/* Returns 0, 2 after printing why, or -1 for --help (printed). */
static int opts_parse(int argc, char **argv, opts_t *o)
{
    static const struct option opts[] = {
        { "brokers", required_argument, NULL, 'b' },
        { "topic", required_argument, NULL, 't' },
        { "transactions", required_argument, NULL, 'n' },
        { "records", required_argument, NULL, 'm' },
        { "partitions", required_argument, NULL, 'p' },
        { "abort-every", required_argument, NULL, 'k' },
        { "id", required_argument, NULL, 'i' },
        { "copy-from", required_argument, NULL, 'c' },
        { "abort-copies", no_argument, NULL, 'a' },
        { "fault", required_argument, NULL, 'f' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 }
    };
    int c;

    o->parts = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        uint64_t *dst = NULL, lo = 1, hi = 100000000;

        switch (c) {
        case 'b': o->brokers = optarg; break;
        case 't': o->topic = optarg; break;
        case 'i': o->txnid = optarg; break;
        case 'c': o->copy_from = optarg; break;
        case 'a': o->abort_copies = true; break;
        case 'f':
            if (parse_fault(optarg, &o->fault) != 0)
                return KW_CLI_EXIT_USAGE;
            break;
        case 'n': dst = &o->ntx; break;
        case 'm': dst = &o->nrec; break;
        case 'p': dst = &o->parts; hi = 100000; break;
        case 'k': dst = &o->abort_every; lo = 0; break;
        case 'h': usage(stdout); return -1;
        default: return kw_cli_usage_error(PROG, "bad option");
        }
        if (dst != NULL && !kw_cli_parse_u64(optarg, lo, hi, dst))
            return kw_cli_usage_error(PROG, "%s: expected a number from %" PRIu64 " to %"
                                      PRIu64 ", got '%s'", argv[optind - 1], lo, hi, optarg);
    }
    if (optind < argc)
        return kw_cli_usage_error(PROG, "unexpected argument '%s'", argv[optind]);
    if (o->brokers == NULL || o->topic == NULL)
        return kw_cli_usage_error(PROG, "--brokers and --topic are required");
    if (o->copy_from != NULL && (o->ntx != 0 || o->nrec != 0 || o->abort_every != 0))
        return kw_cli_usage_error(PROG, "--copy-from takes no --transactions, --records or "
                                  "--abort-every");
    if (o->copy_from == NULL && (o->ntx == 0 || o->nrec == 0))
        return kw_cli_usage_error(PROG, "--transactions and --records are required (or "
                                  "--copy-from)");
    if (o->copy_from == NULL && (o->abort_copies || o->fault != FAULT_NONE))
        return kw_cli_usage_error(PROG, "--abort-copies and --fault need --copy-from");
    return 0;
}

int main(int argc, char **argv)
{
    opts_t o = { 0 };
    tally_t t = { 0 };
    char idbuf[64];
    rd_kafka_error_t *e;
    rd_kafka_t *rk;
    int c;

    if ((c = opts_parse(argc, argv, &o)) != 0)
        return c < 0 ? 0 : c;
    if (o.txnid == NULL) {
        snprintf(idbuf, sizeof(idbuf), "kwal-txn-%ld", (long)getpid());
        o.txnid = idbuf;
    }
    if ((rk = producer_new(&o, &c)) == NULL)
        return c;
    if ((e = rd_kafka_init_transactions(rk, TXN_TIMEOUT_MS)) != NULL)
        c = kafka_fail("init_transactions", e);
    else
        c = o.copy_from != NULL ? run_copy(rk, &o, &t) : run_transactions(rk, &o, &t);
    if (c == 0)
        printf("committed_txns=%" PRIu64 " aborted_txns=%" PRIu64 " committed_records=%"
               PRIu64 " aborted_records=%" PRIu64 "\n", t.committed_tx, t.aborted_tx,
               t.committed_recs, t.aborted_recs);
    rd_kafka_destroy(rk);
    return c;
}
