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
 * committed. On success the last line of stdout is
 *   committed_txns=C aborted_txns=A committed_records=X aborted_records=Y
 * and the exit status 0; 1 on a Kafka error (one line on stderr); 2 for
 * bad arguments. The transactional id defaults to kwal-txn-<pid>.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include "cli.h"

#define PROG "kwal-txn-produce"
#define TXN_TIMEOUT_MS 60000

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
          "Writes N transactions of M records each (record i to partition i % P),\n"
          "aborting every K-th transaction (K=0: none), committing the others.\n", out);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "brokers", required_argument, NULL, 'b' },
        { "topic", required_argument, NULL, 't' },
        { "transactions", required_argument, NULL, 'n' },
        { "records", required_argument, NULL, 'm' },
        { "partitions", required_argument, NULL, 'p' },
        { "abort-every", required_argument, NULL, 'k' },
        { "id", required_argument, NULL, 'i' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 }
    };
    const char *brokers = NULL, *topic = NULL, *txnid = NULL;
    uint64_t ntx = 0, nrec = 0, parts = 1, abort_every = 0;
    uint64_t committed_tx = 0, aborted_tx = 0;
    char errstr[512], idbuf[64];
    rd_kafka_conf_t *conf;
    rd_kafka_error_t *e;
    rd_kafka_t *rk;
    int c;

    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        uint64_t *dst = NULL, lo = 1, hi = 100000000;

        switch (c) {
        case 'b': brokers = optarg; break;
        case 't': topic = optarg; break;
        case 'i': txnid = optarg; break;
        case 'n': dst = &ntx; break;
        case 'm': dst = &nrec; break;
        case 'p': dst = &parts; hi = 100000; break;
        case 'k': dst = &abort_every; lo = 0; break;
        case 'h': usage(stdout); return 0;
        default: return kw_cli_usage_error(PROG, "bad option");
        }
        if (dst != NULL && !kw_cli_parse_u64(optarg, lo, hi, dst))
            return kw_cli_usage_error(PROG, "%s: expected a number from %" PRIu64 " to %"
                                      PRIu64 ", got '%s'", argv[optind - 1], lo, hi, optarg);
    }
    if (optind < argc)
        return kw_cli_usage_error(PROG, "unexpected argument '%s'", argv[optind]);
    if (brokers == NULL || topic == NULL || ntx == 0 || nrec == 0)
        return kw_cli_usage_error(PROG, "--brokers, --topic, --transactions and --records "
                                  "are required");
    if (txnid == NULL) {
        snprintf(idbuf, sizeof(idbuf), "kwal-txn-%ld", (long)getpid());
        txnid = idbuf;
    }

    conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "bootstrap.servers", brokers, errstr, sizeof(errstr)) ||
        rd_kafka_conf_set(conf, "transactional.id", txnid, errstr, sizeof(errstr)) ||
        rd_kafka_conf_set(conf, "linger.ms", "5", errstr, sizeof(errstr))) {
        fprintf(stderr, "%s: %s\n", PROG, errstr);
        rd_kafka_conf_destroy(conf);
        return 2;
    }
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (rk == NULL) {
        fprintf(stderr, "%s: %s\n", PROG, errstr);
        return 1;
    }
    if ((e = rd_kafka_init_transactions(rk, TXN_TIMEOUT_MS)) != NULL) {
        c = kafka_fail("init_transactions", e);
        goto out;
    }
    for (uint64_t t = 0; t < ntx; t++) {
        int abort = abort_every > 0 && t % abort_every == abort_every - 1;
        const char *val = abort ? "aborted" : "committed";

        if ((e = rd_kafka_begin_transaction(rk)) != NULL) {
            c = kafka_fail("begin_transaction", e);
            goto out;
        }
        for (uint64_t i = 0; i < nrec; i++) {
            char key[64];
            rd_kafka_resp_err_t err;

            snprintf(key, sizeof(key), "t%" PRIu64 "-r%" PRIu64, t, i);
            do {
                err = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic),
                                        RD_KAFKA_V_PARTITION((int32_t)(i % parts)),
                                        RD_KAFKA_V_KEY(key, strlen(key)),
                                        RD_KAFKA_V_VALUE((void *)val, strlen(val)),
                                        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                        RD_KAFKA_V_END);
                if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL)
                    rd_kafka_poll(rk, 100);
            } while (err == RD_KAFKA_RESP_ERR__QUEUE_FULL);
            if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
                fprintf(stderr, "%s: produce: %s\n", PROG, rd_kafka_err2str(err));
                c = 1;
                goto out;
            }
        }
        /* every record written before the end, aborted ones included, so
         * that aborted records really take offsets in the log */
        if (rd_kafka_flush(rk, TXN_TIMEOUT_MS) != RD_KAFKA_RESP_ERR_NO_ERROR) {
            fprintf(stderr, "%s: flush: timed out\n", PROG);
            c = 1;
            goto out;
        }
        e = abort ? rd_kafka_abort_transaction(rk, TXN_TIMEOUT_MS)
                  : rd_kafka_commit_transaction(rk, TXN_TIMEOUT_MS);
        if (e != NULL) {
            c = kafka_fail(abort ? "abort_transaction" : "commit_transaction", e);
            goto out;
        }
        if (abort)
            aborted_tx++;
        else
            committed_tx++;
    }
    printf("committed_txns=%" PRIu64 " aborted_txns=%" PRIu64 " committed_records=%" PRIu64
           " aborted_records=%" PRIu64 "\n", committed_tx, aborted_tx, committed_tx * nrec,
           aborted_tx * nrec);
    c = 0;
out:
    rd_kafka_destroy(rk);
    return c;
}
