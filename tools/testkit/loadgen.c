/*
 * loadgen.c -- kwal-loadgen: produce a sequence-numbered, checksummed
 * workload to a Kafka topic, or print it for kcat.
 *
 * A workload is the records first .. first+N-1 of one run (a random 64-bit
 * run id unless --run-id gives one). Every record has the key "<seq>" and a
 * payload of exactly --size bytes:
 *
 *   kwal1 <run id: 16 hex> <seq: 12 digits> <producer time, us: 16 digits><padding> <xxh3: 16 hex>
 *
 * byte by byte in workload.h, where kwal-verify reads it back. Its Kafka
 * timestamp is set to the producer time of the payload in milliseconds
 * (ts_us / 1000, CreateTime), so a reader can check a copied timestamp
 * against the payload; with --headers the record also carries one header,
 * "wl.seq", the sequence number in decimal (workload.h, "RECORD
 * TIMESTAMP", "RECORD HEADERS"). Keys make
 * the default partitioner spread records evenly, which matters on the local
 * mock cluster: a partition keeps only about 5 MiB, and keyless sticky
 * partitioning can pile a whole run into a few partitions that then drop
 * their oldest records silently (DESIGN.md, "Test infrastructure").
 *
 * How it produces:
 *   1. One librdkafka producer with acks=all and enable.idempotence=true
 *      (-X key=value passes any other librdkafka property, as in kcat),
 *      message.timeout.ms from --timeout, so every record gets a delivery
 *      report within a bounded time.
 *   2. The main thread encodes record i, and -- with --rate R -- sleeps
 *      until start + i/R first. rd_kafka_producev() copies the record; when
 *      the local queue is full it polls (serving delivery reports) and
 *      retries, so memory stays bounded at queue.buffering.max.*.
 *   3. The delivery-report callback counts delivered and failed records and
 *      keeps the first error. After the last record, rd_kafka_flush() waits
 *      for every report (bounded by message.timeout.ms).
 *   4. SIGINT/SIGTERM stop producing new records; the ones in flight are
 *      still waited for. A fatal producer error (idempotence) stops too.
 *   5. --manifest FILE is written (atomically) at the end, with the counts
 *      and timestamps=1 (and headers=1 with --headers).
 *
 * --print-kcat writes the records to stdout as `<key>:<payload>` lines
 * instead, which `kcat -P -b BROKERS -t TOPIC -K:` produces unchanged (the
 * payload alphabet is [a-z0-9 ]: no ':' and no newline). kcat sets the
 * timestamps then (the manifest says timestamps=0), and cannot add a header
 * per record: --headers is refused with --print-kcat.
 *
 * Exit status: 0 when every record was delivered (or printed), 1 when any
 * failed or the run was interrupted (the count goes to stderr), 2 for bad
 * arguments.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include "cli.h"
#include "workload.h"

#define PROG "kwal-loadgen"
#define EXIT_USAGE 2
#define MAX_XPROPS 64

typedef struct {
    const char *brokers;
    const char *topic;
    const char *manifest;
    uint64_t records;
    uint64_t size;
    uint64_t first;
    double rate;            /* records/s; 0 = flat out */
    uint64_t run;
    bool have_run;
    bool print_kcat;
    bool headers;           /* --headers: wl.seq on every record */
    long timeout_s;
    bool quiet;
    const char *xprops[MAX_XPROPS];
    int nxprops;
} opts_t;

/* Counters touched by the delivery-report callback, which runs inside
 * rd_kafka_poll()/rd_kafka_flush() on the main thread. */
typedef struct {
    uint64_t delivered;
    uint64_t failed;
    rd_kafka_resp_err_t first_err;
    char first_errstr[256];
} reports_t;

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static uint64_t now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static double mono_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* With --rate: sleep until record i is due (start + i/rate). */
static void pace(const opts_t *o, double start, uint64_t i)
{
    double due, wait;

    if (o->rate <= 0)
        return;
    due = start + (double)i / o->rate;
    while (!stop_requested && (wait = due - mono_s()) > 0) {
        struct timespec ts = { (time_t)wait, (long)((wait - (double)(time_t)wait) * 1e9) };

        nanosleep(&ts, NULL);
    }
}

/* ------------------------------------------------------ --print-kcat -- */

static int print_kcat(const opts_t *o, uint64_t *printed)
{
    char *buf = malloc(o->size + KW_WL_KEY_MAX + 2);
    double start = mono_s();
    uint64_t i;

    if (buf == NULL) {
        fprintf(stderr, PROG ": out of memory\n");
        return 1;
    }
    for (i = 0; i < o->records && !stop_requested; i++) {
        size_t klen;

        pace(o, start, i);
        klen = kw_wl_key(buf, o->first + i);
        buf[klen] = ':';
        kw_wl_encode(buf + klen + 1, o->size, o->run, o->first + i, now_us());
        buf[klen + 1 + o->size] = '\n';
        if (fwrite(buf, 1, klen + o->size + 2, stdout) != klen + o->size + 2)
            break;
    }
    free(buf);
    *printed = i;
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, PROG ": stdout: %s\n", strerror(errno));
        return 1;
    }
    if (i < o->records) {
        fprintf(stderr, PROG ": interrupted after %" PRIu64 " of %" PRIu64 " records\n",
                i, o->records);
        return 1;
    }
    return 0;
}

/* ---------------------------------------------------------- producer -- */

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    reports_t *r = opaque;

    (void)rk;
    if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        r->delivered++;
        return;
    }
    if (r->failed++ == 0) {
        r->first_err = m->err;
        snprintf(r->first_errstr, sizeof(r->first_errstr), "%s", rd_kafka_err2str(m->err));
    }
}

static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    (void)opaque;
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        char buf[512];

        rd_kafka_fatal_error(rk, buf, sizeof(buf));
        fprintf(stderr, PROG ": fatal producer error: %s\n", buf);
        stop_requested = 1;
        return;
    }
    fprintf(stderr, PROG ": kafka: %s: %s\n", rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
}

static bool conf_set(rd_kafka_conf_t *conf, const char *name, const char *value)
{
    char errstr[512];

    if (rd_kafka_conf_set(conf, name, value, errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK) {
        fprintf(stderr, PROG ": %s=%s: %s\n", name, value, errstr);
        return false;
    }
    return true;
}

static rd_kafka_t *producer_new(const opts_t *o, reports_t *r)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char errstr[512], tmo[32];
    rd_kafka_t *rk;

    snprintf(tmo, sizeof(tmo), "%ld", o->timeout_s * 1000);
    if (!conf_set(conf, "bootstrap.servers", o->brokers) ||
        !conf_set(conf, "acks", "all") ||
        !conf_set(conf, "enable.idempotence", "true") ||
        !conf_set(conf, "message.timeout.ms", tmo) ||
        !conf_set(conf, "client.id", PROG))
        goto fail;
    for (int i = 0; i < o->nxprops; i++) {
        char name[256];
        const char *eq = strchr(o->xprops[i], '=');
        size_t nlen = (size_t)(eq - o->xprops[i]);

        if (nlen >= sizeof(name)) {
            fprintf(stderr, PROG ": -X %s: property name too long\n", o->xprops[i]);
            goto fail;
        }
        memcpy(name, o->xprops[i], nlen);
        name[nlen] = '\0';
        if (!conf_set(conf, name, eq + 1))
            goto fail;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
    rd_kafka_conf_set_error_cb(conf, error_cb);
    rd_kafka_conf_set_opaque(conf, r);
    if ((rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr))) == NULL) {
        fprintf(stderr, PROG ": cannot create producer: %s\n", errstr);
        goto fail;
    }
    return rk;   /* conf is owned by rk now */
fail:
    rd_kafka_conf_destroy(conf);
    return NULL;
}

/* Hand one record to librdkafka: key, payload, its timestamp (the
 * payload's ts_us in ms) and with --headers the wl.seq header (the key's
 * text). On success the headers belong to the message; on failure they
 * are freed here. */
static rd_kafka_resp_err_t produce_one(const opts_t *o, rd_kafka_t *rk, rd_kafka_topic_t *rkt,
                                       const char *key, size_t klen, const char *payload,
                                       uint64_t ts_us)
{
    rd_kafka_headers_t *hdrs = NULL;
    rd_kafka_resp_err_t err;

    if (o->headers) {
        hdrs = rd_kafka_headers_new(1);
        rd_kafka_header_add(hdrs, KW_WL_SEQ_HEADER, -1, key, (ssize_t)klen);
    }
    err = rd_kafka_producev(rk, RD_KAFKA_V_RKT(rkt),
                            RD_KAFKA_V_KEY(key, klen),
                            RD_KAFKA_V_VALUE((void *)payload, o->size),
                            RD_KAFKA_V_TIMESTAMP((int64_t)(ts_us / 1000)),
                            RD_KAFKA_V_HEADERS(hdrs),
                            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                            RD_KAFKA_V_END);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR && hdrs != NULL)
        rd_kafka_headers_destroy(hdrs);
    return err;
}

/* Produce every record; returns how many were handed to librdkafka. */
static uint64_t produce_all(const opts_t *o, rd_kafka_t *rk, rd_kafka_topic_t *rkt)
{
    char *payload = malloc(o->size);
    char key[KW_WL_KEY_MAX];
    double start = mono_s();
    uint64_t i;

    if (payload == NULL) {
        fprintf(stderr, PROG ": out of memory\n");
        return 0;
    }
    for (i = 0; i < o->records && !stop_requested; i++) {
        uint64_t seq = o->first + i, ts_us;
        size_t klen = kw_wl_key(key, seq);
        rd_kafka_resp_err_t err;

        pace(o, start, i);
        ts_us = now_us();
        kw_wl_encode(payload, o->size, o->run, seq, ts_us);
        for (;;) {
            err = produce_one(o, rk, rkt, key, klen, payload, ts_us);
            if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL || stop_requested)
                break;
            rd_kafka_poll(rk, 50);   /* serve delivery reports, make room */
        }
        if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            fprintf(stderr, PROG ": produce of record %" PRIu64 " failed: %s\n",
                    seq, rd_kafka_err2str(err));
            break;
        }
        if ((i & 1023) == 0)
            rd_kafka_poll(rk, 0);
    }
    free(payload);
    return i;
}

static int produce(const opts_t *o, kw_wl_manifest_t *m)
{
    reports_t r = { 0 };
    rd_kafka_t *rk;
    rd_kafka_topic_t *rkt;
    uint64_t handed;
    double t0, secs;
    int rc = 0;

    if ((rk = producer_new(o, &r)) == NULL)
        return EXIT_USAGE;
    if ((rkt = rd_kafka_topic_new(rk, o->topic, NULL)) == NULL) {
        fprintf(stderr, PROG ": topic %s: %s\n", o->topic,
                rd_kafka_err2str(rd_kafka_last_error()));
        rd_kafka_destroy(rk);
        return 1;
    }
    t0 = mono_s();
    handed = produce_all(o, rk, rkt);
    /* Every record handed over gets a report within message.timeout.ms;
     * flush in slices so a signal is noticed, but never give up early:
     * a record whose fate is unknown must not be reported as either. */
    while (rd_kafka_outq_len(rk) > 0 && r.delivered + r.failed < handed)
        rd_kafka_flush(rk, 500);
    secs = mono_s() - t0;
    rd_kafka_topic_destroy(rkt);
    rd_kafka_destroy(rk);

    m->delivered = (int64_t)r.delivered;
    m->failed = (int64_t)(o->records - r.delivered);
    if (r.failed > 0) {
        fprintf(stderr, PROG ": %" PRIu64 " of %" PRIu64 " records failed to deliver "
                "(first error: %s)\n", r.failed, handed, r.first_errstr);
        rc = 1;
    }
    if (handed < o->records) {
        fprintf(stderr, PROG ": stopped after %" PRIu64 " of %" PRIu64 " records\n",
                handed, o->records);
        rc = 1;
    }
    if (r.delivered + r.failed != handed) {
        fprintf(stderr, PROG ": %" PRIu64 " records without a delivery report\n",
                handed - r.delivered - r.failed);
        rc = 1;
    }
    if (!o->quiet || rc != 0)
        fprintf(stderr, PROG ": %" PRIu64 " of %" PRIu64 " records (%" PRIu64 " bytes each) "
                "delivered to %s in %.2f s (%.0f records/s)\n",
                r.delivered, o->records, o->size, o->topic, secs,
                secs > 0 ? (double)r.delivered / secs : 0.0);
    return rc;
}

/* ----------------------------------------------------------- options -- */

static void print_usage(FILE *out)
{
    fprintf(out,
"Usage: " PROG " --brokers LIST --topic NAME --records N [options]\n"
"       " PROG " --print-kcat --records N [options] | kcat -P -b LIST -t NAME -K:\n"
"       " PROG " --help\n"
"\n"
"Produces a sequence-numbered, checksummed workload that kwal-verify checks.\n"
"Record seq (first .. first+N-1) has the key \"<seq>\" (decimal), the timestamp\n"
"TS / 1000 (ms, CreateTime; the payload's TS below) and a payload of exactly\n"
"--size printable ASCII bytes:\n"
"\n"
"  kwal1 RUNID SEQ TS<padding> CHECKSUM\n"
"    RUNID     16 lower-case hex digits: the run (random unless --run-id)\n"
"    SEQ       12 decimal digits, zero-padded: the sequence number\n"
"    TS        16 decimal digits: producer wall-clock time, us since the epoch\n"
"    padding   size-69 letters: byte i is 'a' + (seq + i) %% 26\n"
"    CHECKSUM  16 lower-case hex digits: XXH3-64 of every byte before the\n"
"              space that precedes it\n"
"(one space between fields, none before the padding; minimum size 69 bytes;\n"
"tools/workload.h has the byte-by-byte table).\n"
"\n"
"Options:\n"
"  -b, --brokers LIST     bootstrap servers (host:port,...)\n"
"  -t, --topic NAME       topic to produce to\n"
"  -n, --records N        number of records (required)\n"
"  -s, --size BYTES       payload size, %d..%d (default 100)\n"
"  -r, --rate R           records per second; 0 = flat out (default 0)\n"
"      --first SEQ        sequence number of the first record (default 0)\n"
"      --run-id HEX       run id, 16 lower-case hex digits (default random)\n"
"      --headers          give every record the header wl.seq=<seq> (decimal)\n"
"      --manifest FILE    write run_id, first, records, size, topic, delivered,\n"
"                         failed, timestamps (1: timestamps are TS / 1000),\n"
"                         headers (1: --headers) as key=value lines\n"
"                         (kwal-verify --manifest)\n"
"      --print-kcat       do not connect: print `KEY:PAYLOAD` lines on stdout\n"
"                         for `kcat -P -b LIST -t NAME -K:` (honours --rate;\n"
"                         kcat sets the timestamps; no --headers)\n"
"      --timeout SECONDS  per-record delivery timeout, message.timeout.ms\n"
"                         (default 120)\n"
"  -X NAME=VALUE          librdkafka producer property (repeatable); the\n"
"                         defaults are acks=all, enable.idempotence=true\n"
"  -q, --quiet            no summary line on success\n"
"  -h, --help             this text\n"
"\n"
"Waits for every delivery report. Exit status: 0 when all N records were\n"
"delivered (or printed); 1 when any failed or was not produced (interrupted,\n"
"fatal producer error), with the count on stderr; 2 for bad arguments.\n",
            KW_WL_MIN_SIZE, KW_WL_MAX_SIZE);
}

/* Returns 0, EXIT_USAGE after printing why, or -1 for --help (printed). */
static int opts_parse(int argc, char **argv, opts_t *o)
{
    static const struct option longopts[] = {
        { "brokers", required_argument, NULL, 'b' },
        { "topic", required_argument, NULL, 't' },
        { "records", required_argument, NULL, 'n' },
        { "size", required_argument, NULL, 's' },
        { "rate", required_argument, NULL, 'r' },
        { "first", required_argument, NULL, 'F' },
        { "run-id", required_argument, NULL, 'R' },
        { "manifest", required_argument, NULL, 'm' },
        { "print-kcat", no_argument, NULL, 'P' },
        { "headers", no_argument, NULL, 'H' },
        { "timeout", required_argument, NULL, 'T' },
        { "quiet", no_argument, NULL, 'q' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    bool have_records = false;
    uint64_t v;
    char *end;
    int ch, rc;

    o->size = 100;
    o->timeout_s = 120;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, ":b:t:n:s:r:X:qh", longopts, NULL)) != -1) {
        switch (ch) {
        case 'b': o->brokers = optarg; break;
        case 't': o->topic = optarg; break;
        case 'n':
            if (!kw_cli_parse_u64(optarg, 0, KW_WL_MAX_SEQ + 1, &o->records))
                return kw_cli_usage_error(PROG, "--records: '%s' is not a number in 0..%llu", optarg,
                                   KW_WL_MAX_SEQ + 1);
            have_records = true;
            break;
        case 's':
            if (!kw_cli_parse_u64(optarg, KW_WL_MIN_SIZE, KW_WL_MAX_SIZE, &o->size))
                return kw_cli_usage_error(PROG, "--size: '%s' is not a number in %d..%d", optarg,
                                   KW_WL_MIN_SIZE, KW_WL_MAX_SIZE);
            break;
        case 'r':
            errno = 0;
            o->rate = strtod(optarg, &end);
            if (errno != 0 || end == optarg || *end != '\0' || !(o->rate >= 0) ||
                o->rate > 1e9)
                return kw_cli_usage_error(PROG, "--rate: '%s' is not a rate in 0..1e9 records/s", optarg);
            break;
        case 'F':
            if (!kw_cli_parse_u64(optarg, 0, KW_WL_MAX_SEQ, &o->first))
                return kw_cli_usage_error(PROG, "--first: '%s' is not a number in 0..%llu", optarg,
                                   KW_WL_MAX_SEQ);
            break;
        case 'R':
            if (!kw_wl_run_parse(optarg, &o->run))
                return kw_cli_usage_error(PROG, "--run-id: '%s' is not 16 lower-case hex digits", optarg);
            o->have_run = true;
            break;
        case 'm': o->manifest = optarg; break;
        case 'P': o->print_kcat = true; break;
        case 'H': o->headers = true; break;
        case 'T':
            if (!kw_cli_parse_u64(optarg, 1, 86400, &v))
                return kw_cli_usage_error(PROG, "--timeout: '%s' is not a number of seconds in 1..86400",
                                   optarg);
            o->timeout_s = (long)v;
            break;
        case 'X':
            if ((rc = kw_cli_xprop(PROG, optarg, o->xprops, &o->nxprops, MAX_XPROPS)) != 0)
                return rc;
            break;
        case 'q': o->quiet = true; break;
        case 'h':
            print_usage(stdout);
            return -1;
        case ':':
            return kw_cli_usage_error(PROG, "%s needs an argument", argv[optind - 1]);
        default:
            return kw_cli_usage_error(PROG, "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return kw_cli_usage_error(PROG, "unexpected argument '%s'", argv[optind]);
    if (!have_records)
        return kw_cli_usage_error(PROG, "--records N is required");
    if (o->records > KW_WL_MAX_SEQ + 1 - o->first)
        return kw_cli_usage_error(PROG, "--first + --records goes beyond sequence number %llu",
                           KW_WL_MAX_SEQ);
    if (!o->print_kcat && (o->brokers == NULL || o->topic == NULL))
        return kw_cli_usage_error(PROG, "--brokers and --topic are required (or --print-kcat)");
    if (o->print_kcat && (o->brokers != NULL || o->nxprops > 0))
        return kw_cli_usage_error(PROG, "--print-kcat does not connect: no --brokers or -X");
    if (o->print_kcat && o->headers)
        return kw_cli_usage_error(PROG, "--headers needs a producer: kcat -K: lines carry no "
                                  "per-record headers (not with --print-kcat)");
    if (o->topic != NULL && (o->topic[0] == '\0' || strlen(o->topic) >= KW_WL_TOPIC_MAX ||
                             strchr(o->topic, '\n') != NULL))
        return kw_cli_usage_error(PROG, "--topic: '%s' is not a topic name", o->topic);
    return 0;
}

int main(int argc, char **argv)
{
    opts_t o = { 0 };
    kw_wl_manifest_t m = { 0 };
    struct sigaction sa = { 0 };
    int rc;

    if ((rc = opts_parse(argc, argv, &o)) != 0)
        return rc < 0 ? 0 : rc;
    if (!o.have_run) {
        if (getrandom(&o.run, sizeof(o.run), 0) != (ssize_t)sizeof(o.run)) {
            fprintf(stderr, PROG ": getrandom: %s\n", strerror(errno));
            return 1;
        }
    }
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    m.run = o.run;
    m.first = o.first;
    m.records = o.records;
    m.size = o.size;
    snprintf(m.topic, sizeof(m.topic), "%s", o.topic != NULL ? o.topic : "");
    if (o.print_kcat) {
        uint64_t printed = 0;

        rc = print_kcat(&o, &printed);
        m.delivered = m.failed = -1;
    } else {
        m.timestamps = true;
        m.headers = o.headers;
        rc = produce(&o, &m);
        if (rc == EXIT_USAGE)
            return rc;   /* a property librdkafka refused: already said */
    }
    if (o.manifest != NULL) {
        char errstr[512];

        if (kw_wl_manifest_write(o.manifest, &m, errstr, sizeof(errstr)) != 0) {
            fprintf(stderr, PROG ": manifest: %s\n", errstr);
            return 1;
        }
    }
    if (!o.quiet && o.print_kcat && rc == 0)
        fprintf(stderr, PROG ": run %016" PRIx64 ": printed %" PRIu64 " records\n",
                o.run, o.records);
    return rc;
}
