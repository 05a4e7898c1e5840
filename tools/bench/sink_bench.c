/*
 * sink_bench.c -- kwal-bench-sink: what each sink costs per record, side by
 * side on the same batches.
 *
 *   kwal-bench-sink --sink SPEC [--sink SPEC]... [--records N] [--batch N]
 *                   [--size BYTES] [--partitions P] [--mode receive|direct]
 *                   [--repeat R] [--kafka BOOTSTRAP]
 *
 * Every run writes --records records of --size bytes (keys "k<offset>",
 * create timestamps) over --partitions partitions of a topic of its own
 * ("bench-<pid>-<run>": nothing collides with what the sink holds already),
 * in batches of --batch records, through the sink API exactly as kwal does:
 *
 *   receive  kw_sink_write_batch per batch (kwal receive's batcher)
 *   direct   kw_sink_txn_begin_next + write + one fenced put_range per
 *            partition + commit (kwal direct's exactly-once path)
 *
 * A kafka:TOPIC sink writes to the cluster --kafka names, into TOPIC (which
 * must exist); its run's topic is created there first (P partitions, the
 * broker's replication factor), because the sink commits the records'
 * source offsets to a consumer group and Kafka keeps offsets only of
 * topics it has. That creation is not in the run's time. The group is the
 * run's topic; the instance "bench".
 *
 * Each run is a child process (fork), so its CPU seconds (user + system,
 * getrusage of the child) and peak RSS are its own. The server side of a
 * client/server sink (PostgreSQL's backend) is NOT in those CPU seconds: the
 * wall time includes it, the CPU column does not. The sinks take turns
 * within each of --repeat rounds (sink 1, sink 2, ..., then again), so a
 * noisy machine affects them alike; the table gives medians and, per sink,
 * its records/s over the first sink's in the same round (median of the
 * rounds' ratios).
 *
 * Exit status: 0, 1 when a run failed (its error on stderr), 2 for bad
 * arguments.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include "cli.h"
#include "kw_log.h"
#include "kw_time.h"
#include "sink.h"

#define PROG "kwal-bench-sink"
#define MAX_SINKS 8
#define MAX_REPEAT 50

typedef struct run_result {
    int      ok;
    double   wall_s, cpu_s;
    long     maxrss_kib;
    uint64_t delivered, stored;
} run_result_t;

typedef struct opts {
    const char *sinks[MAX_SINKS];
    int         nsinks;
    uint64_t    records, batch, size, partitions, repeat;
    int         direct;
    const char *kafka;          /* --kafka BOOTSTRAP */
} opts_t;

static void usage(FILE *out)
{
    fputs("Usage: " PROG " --sink SPEC [--sink SPEC]... [--records N] [--batch N]\n"
          "       [--size BYTES] [--partitions P] [--mode receive|direct] [--repeat R]\n"
          "       [--kafka BOOTSTRAP]\n"
          "\n"
          "Writes the same records through each sink (kwal's sink API, one child\n"
          "process per run, sinks taking turns in each round) and prints records/s,\n"
          "MB/s, CPU seconds and peak RSS per sink, and records/s over the first\n"
          "sink's. Defaults: --records 200000 --batch 5000 --size 100 --partitions 8\n"
          "--mode receive --repeat 3. A server's own CPU (PostgreSQL) is in the wall\n"
          "time, not in the CPU seconds. A kafka:TOPIC sink writes to the cluster of\n"
          "--kafka (TOPIC must exist; each run creates its source topic there).\n", out);
}

/* The records of batch b: offsets per partition continue across batches. */
static void fill_batch(kw_record_t *recs, char *payloads, char (*keys)[24], const opts_t *o,
                       const char *topic, uint64_t first, uint64_t n, int64_t now)
{
    for (uint64_t i = 0; i < n; i++) {
        uint64_t seq = first + i;
        kw_record_t *r = &recs[i];
        char *p = payloads + i * o->size;

        memset(r, 0, sizeof(*r));
        r->topic = topic;
        r->partition = (int32_t)(seq % o->partitions);
        r->offset = (int64_t)(seq / o->partitions);
        r->tstype = KW_TS_CREATE_TIME;
        r->timestamp = now;
        snprintf(keys[i], sizeof(keys[i]), "k%" PRId64, r->offset);
        r->key = keys[i];
        r->key_len = strlen(keys[i]);
        for (uint64_t j = 0; j < o->size; j++)
            p[j] = (char)('a' + (seq * 31 + j) % 26);
        r->value = p;
        r->value_len = o->size;
    }
}

/* One run in this (child) process: 0, or 1 after printing why. */
static int run_one(const opts_t *o, const char *spec, const char *topic, uint64_t counts[2])
{
    kw_record_t *recs = calloc(o->batch, sizeof(*recs));
    char *payloads = malloc(o->batch * o->size);
    char (*keys)[24] = calloc(o->batch, sizeof(*keys));
    int64_t *next = calloc(o->partitions, sizeof(*next));
    int64_t *from = calloc(o->partitions, sizeof(*from));
    int64_t *until = calloc(o->partitions, sizeof(*until));
    /* receive mode's batch ids: past any earlier run's in the same database */
    uint64_t base = (uint64_t)kw_wall_ms() * 1000;
    kw_sink_t *sink = NULL;
    char err[1024];
    uint64_t id = 0;
    int rc = 1;

    if (recs == NULL || payloads == NULL || keys == NULL || next == NULL || from == NULL ||
        until == NULL) {
        fprintf(stderr, PROG ": out of memory\n");
        goto out;
    }
    kw_sink_options_t so;
    kw_conf_pair_t cluster = { "bootstrap.servers", (char *)o->kafka };

    memset(&so, 0, sizeof(so));
    so.group = topic;               /* the run's own */
    so.instance = "bench";
    so.direct = o->direct;
    so.kafka = &cluster;
    so.nkafka = o->kafka != NULL;
    if (kw_sink_open_opts(spec, &so, &sink, err, sizeof(err)) != KW_OK) {
        fprintf(stderr, PROG ": %s\n", err);
        goto out;
    }
    if (o->direct && !kw_sink_ranges_supported(sink)) {
        fprintf(stderr, PROG ": --mode direct needs a sink that stores ranges (%s)\n", spec);
        goto out;
    }
    for (uint64_t p = 0; p < o->partitions; p++)
        next[p] = -1;
    counts[0] = counts[1] = 0;
    for (uint64_t first = 0; first < o->records; first += o->batch) {
        uint64_t n = o->records - first < o->batch ? o->records - first : o->batch;
        kw_sink_stats_t st;
        kw_err_t e;

        fill_batch(recs, payloads, keys, o, topic, first, n, kw_wall_ms());
        if (!o->direct) {
            e = kw_sink_write_batch(sink, base + first / o->batch + 1, recs, n, &st, err,
                                    sizeof(err));
        } else {
            e = kw_sink_txn_begin_next(sink, id + 1, &id, err, sizeof(err));
            if (e == KW_OK)
                e = kw_sink_txn_write(sink, recs, n, err, sizeof(err));
            for (uint64_t i = 0; i < o->partitions; i++)
                from[i] = until[i] = -1;
            for (uint64_t i = 0; i < n; i++) {
                int32_t p = recs[i].partition;

                if (from[p] < 0)
                    from[p] = recs[i].offset;
                until[p] = recs[i].offset + 1;
            }
            for (uint64_t p = 0; e == KW_OK && p < o->partitions; p++) {
                if (from[p] < 0)
                    continue;
                e = kw_sink_txn_put_range(sink, topic, (int32_t)p, next[p], from[p], until[p],
                                          err, sizeof(err));
                if (e == KW_OK)
                    next[p] = until[p];
            }
            if (e == KW_OK)
                e = kw_sink_txn_commit(sink, &st, err, sizeof(err));
        }
        if (e != KW_OK) {
            fprintf(stderr, PROG ": %s: batch at record %" PRIu64 ": %s\n", spec, first, err);
            goto out;
        }
        counts[0] += st.delivered;
        counts[1] += st.stored;
    }
    rc = 0;
out:
    kw_sink_close(sink);
    free(recs);
    free(payloads);
    free(keys);
    free(next);
    free(from);
    free(until);
    return rc;
}

/* The run's source topic on the --kafka cluster (kafka sinks): 0, or -1
 * after printing why. */
static int create_topic(const opts_t *o, const char *topic)
{
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    rd_kafka_NewTopic_t *nt = NULL;
    rd_kafka_queue_t *q = NULL;
    rd_kafka_event_t *ev = NULL;
    rd_kafka_t *rk = NULL;
    char err[512] = "";
    int rc = -1;

    if (rd_kafka_conf_set(c, "bootstrap.servers", o->kafka, err, sizeof(err)) !=
            RD_KAFKA_CONF_OK ||
        (rk = rd_kafka_new(RD_KAFKA_PRODUCER, c, err, sizeof(err))) == NULL) {
        rd_kafka_conf_destroy(c);
        fprintf(stderr, PROG ": --kafka %s: %s\n", o->kafka, err);
        return -1;
    }
    nt = rd_kafka_NewTopic_new(topic, (int)o->partitions, -1, err, sizeof(err));
    q = rd_kafka_queue_new(rk);
    if (nt != NULL && q != NULL) {
        rd_kafka_CreateTopics(rk, &nt, 1, NULL, q);
        ev = rd_kafka_queue_poll(q, 60000);
    }
    if (ev == NULL) {
        fprintf(stderr, PROG ": create topic %s: %s\n", topic, err[0] ? err : "no answer");
    } else if (rd_kafka_event_error(ev) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        fprintf(stderr, PROG ": create topic %s: %s\n", topic, rd_kafka_event_error_string(ev));
    } else {
        const rd_kafka_CreateTopics_result_t *res = rd_kafka_event_CreateTopics_result(ev);
        size_t n = 0;
        const rd_kafka_topic_result_t **tr = rd_kafka_CreateTopics_result_topics(res, &n);

        if (n == 1 && rd_kafka_topic_result_error(tr[0]) != RD_KAFKA_RESP_ERR_NO_ERROR)
            fprintf(stderr, PROG ": create topic %s: %s\n", topic,
                    rd_kafka_topic_result_error_string(tr[0]));
        else
            rc = 0;
    }
    if (ev != NULL)
        rd_kafka_event_destroy(ev);
    if (q != NULL)
        rd_kafka_queue_destroy(q);
    if (nt != NULL)
        rd_kafka_NewTopic_destroy(nt);
    rd_kafka_destroy(rk);
    return rc;
}

/* Fork a run; its result from the child's rusage and a pipe. */
static run_result_t run_child(const opts_t *o, const char *spec, int round)
{
    run_result_t res = {0};
    int fds[2], status = 0;
    struct rusage ru;
    int64_t t0;
    char topic[64];
    pid_t pid;

    snprintf(topic, sizeof(topic), "bench-%ld-%d-%lld", (long)getpid(), round,
             (long long)kw_wall_ms());
    if (strncmp(spec, "kafka:", 6) == 0 && create_topic(o, topic) != 0)
        return res;
    t0 = kw_mono_ms();
    if (pipe(fds) != 0)
        return res;
    fflush(NULL);
    pid = fork();
    if (pid < 0)
        return res;
    if (pid == 0) {
        uint64_t counts[2] = {0, 0};
        int rc;

        close(fds[0]);
        rc = run_one(o, spec, topic, counts);
        if (write(fds[1], counts, sizeof(counts)) != (ssize_t)sizeof(counts))
            _exit(3);
        _exit(rc);
    }
    close(fds[1]);
    {
        uint64_t counts[2] = {0, 0};

        if (read(fds[0], counts, sizeof(counts)) == (ssize_t)sizeof(counts)) {
            res.delivered = counts[0];
            res.stored = counts[1];
        }
    }
    close(fds[0]);
    if (wait4(pid, &status, 0, &ru) != pid)
        return res;
    res.wall_s = (double)(kw_mono_ms() - t0) / 1000.0;
    res.cpu_s = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
                (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
    res.maxrss_kib = ru.ru_maxrss;
    res.ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    return res;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static int parse(int argc, char **argv, opts_t *o)
{
    memset(o, 0, sizeof(*o));
    o->records = 200000;
    o->batch = 5000;
    o->size = 100;
    o->partitions = 8;
    o->repeat = 3;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        uint64_t *num = NULL, lo = 1, hi = 0;

        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return -1;
        }
        if (strcmp(a, "--sink") != 0 && strcmp(a, "--mode") != 0 && strcmp(a, "--records") != 0 &&
            strcmp(a, "--batch") != 0 && strcmp(a, "--size") != 0 &&
            strcmp(a, "--partitions") != 0 && strcmp(a, "--repeat") != 0 &&
            strcmp(a, "--kafka") != 0)
            return kw_cli_usage_error(PROG, "unknown option '%s'", a);
        if (v == NULL)
            return kw_cli_usage_error(PROG, "%s needs a value", a);
        if (strcmp(a, "--sink") == 0) {
            if (o->nsinks == MAX_SINKS)
                return kw_cli_usage_error(PROG, "at most %d sinks", MAX_SINKS);
            o->sinks[o->nsinks++] = v;
        } else if (strcmp(a, "--kafka") == 0) {
            o->kafka = v;
        } else if (strcmp(a, "--mode") == 0) {
            if (strcmp(v, "receive") != 0 && strcmp(v, "direct") != 0)
                return kw_cli_usage_error(PROG, "--mode: '%s' is not receive or direct", v);
            o->direct = strcmp(v, "direct") == 0;
        } else if (strcmp(a, "--records") == 0) {
            num = &o->records, hi = UINT64_C(1) << 40;
        } else if (strcmp(a, "--batch") == 0) {
            num = &o->batch, hi = 1000000;
        } else if (strcmp(a, "--size") == 0) {
            num = &o->size, lo = 0, hi = 1 << 20;
        } else if (strcmp(a, "--partitions") == 0) {
            num = &o->partitions, hi = 100000;
        } else {
            num = &o->repeat, hi = MAX_REPEAT;
        }
        if (num != NULL && !kw_cli_parse_u64(v, lo, hi, num))
            return kw_cli_usage_error(PROG, "%s: '%s' is not a number in %" PRIu64 "..%" PRIu64,
                                      a, v, lo, hi);
        i++;
    }
    if (o->nsinks == 0)
        return kw_cli_usage_error(PROG, "give at least one --sink SPEC");
    for (int s = 0; s < o->nsinks; s++)
        if (strncmp(o->sinks[s], "kafka:", 6) == 0 && o->kafka == NULL)
            return kw_cli_usage_error(PROG, "--sink %s needs --kafka BOOTSTRAP", o->sinks[s]);
    return 0;
}

int main(int argc, char **argv)
{
    static run_result_t res[MAX_REPEAT][MAX_SINKS];
    opts_t o;
    int rc = parse(argc, argv, &o), failed = 0;

    if (rc != 0)
        return rc < 0 ? 0 : rc;
    kw_log_set_level(KW_LOG_WARN);
    printf("# " PROG ": %" PRIu64 " records of %" PRIu64 " B over %" PRIu64 " partitions, "
           "batches of %" PRIu64 ", mode %s, %" PRIu64 " rounds\n", o.records, o.size,
           o.partitions, o.batch, o.direct ? "direct" : "receive", o.repeat);
    for (uint64_t r = 0; r < o.repeat; r++)
        for (int s = 0; s < o.nsinks; s++) {
            res[r][s] = run_child(&o, o.sinks[s], (int)r);
            /* every record handed in, and stored by a sink that stores (a
             * fresh topic: nothing of it was there before) */
            int stores = strcmp(o.sinks[s], "null") != 0 && strcmp(o.sinks[s], "jsonl") != 0;

            if (!res[r][s].ok || res[r][s].delivered != o.records ||
                (stores && res[r][s].stored != o.records)) {
                fprintf(stderr, PROG ": %s, round %" PRIu64 ": %s (delivered %" PRIu64
                        ", stored %" PRIu64 " of %" PRIu64 ")\n", o.sinks[s], r + 1,
                        res[r][s].ok ? "incomplete" : "failed", res[r][s].delivered,
                        res[r][s].stored, o.records);
                failed = 1;
            }
        }
    if (failed)
        return 1;
    printf("| sink | records/s | MB/s | CPU s (client) | peak RSS MiB | vs %s |\n"
           "| --- | --- | --- | --- | --- | --- |\n", o.sinks[0]);
    for (int s = 0; s < o.nsinks; s++) {
        double rps[MAX_REPEAT], cpu[MAX_REPEAT], rss[MAX_REPEAT], ratio[MAX_REPEAT];
        int n = (int)o.repeat;

        for (int r = 0; r < n; r++) {
            rps[r] = (double)o.records / res[r][s].wall_s;
            cpu[r] = res[r][s].cpu_s;
            rss[r] = (double)res[r][s].maxrss_kib / 1024.0;
            ratio[r] = res[r][0].wall_s / res[r][s].wall_s;
        }
        double m = median(rps, n);

        printf("| %s | %.0f | %.1f | %.2f | %.1f | %.2fx |\n", o.sinks[s], m,
               m * (double)o.size / 1e6, median(cpu, n), median(rss, n), median(ratio, n));
    }
    return 0;
}
