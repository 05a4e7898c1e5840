/*
 * test_receiver_threads.c -- the receiver service's threads together, in one
 * process, so ThreadSanitizer sees all of them: receiver-N (librdkafka
 * consumers), the pipeline, the batcher, the WAL's I/O threads and the
 * ZooKeeper client's threads (label "threads": runs in the plain, ASan and
 * TSan builds).
 *
 * Parts: a REAL ZooKeeper server (kwal-zk-local, see test_zk_server.h) and
 * librdkafka's mock cluster created in this process (3 brokers, one topic of
 * 8 partitions). Under TSan librdkafka's C11 threads go through
 * common/kw_tsan_c11.c.
 *
 * Scenario: NREC keyed records are produced; service A (2 receivers) runs
 * in its own thread; service B (1 receiver, same group) joins while records
 * keep arriving, stores records, and is stopped while records still arrive
 * (its receivers revoke: flush, wait for ZooKeeper, disown); A takes its
 * partitions back and is stopped once both sinks hold every record. Checks: the two
 * sqlite sinks together hold every (partition, offset) exactly once, each
 * partition's ZooKeeper offset equals its end offset, no duplicate
 * deliveries, no fenced blocks on A, and both run() calls returned KW_OK;
 * every record delivered had its end-to-end latency measured (also with
 * --no-wal). While A runs, a watcher thread reads kw_receiver_stats and
 * kw_receiver_partitions every few ms, as the metrics endpoint does; at the
 * end A's partition view shows every partition owned, its position at the
 * end offset and the high watermark there too.
 * test_receiver_restart: one receiver of a running service fails once
 * (libfiu point receiver/fail, FIU_ONETIME) and is restarted; every record
 * is still stored exactly once.
 *
 * Every wait is bounded.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <sqlite3.h>
#include <zookeeper/zookeeper.h>

#include <fiu-control.h>

#include "kw_conf.h"
#include "kw_fault.h"
#include "receiver.h"
#include "test_util.h"
#include "test_zk_server.h"
#include "wal.h"

#define PARTITIONS  8
#define NREC        3000
#define WAIT_MS     120000

static struct {
    int                      skip;
    test_zk_server_t         zk;
    rd_kafka_t              *mock_rk;     /* owns the mock cluster */
    rd_kafka_mock_cluster_t *mcluster;
    char                     bootstrap[512];
    char                    *dir;
} g;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int group_setup(void **state)
{
    (void)state;
    char errstr[512];
    int rc = test_zk_server_start(&g.zk, "receiver-threads", NULL);
    if (rc <= 0) {
        g.skip = rc == 0;
        return rc;
    }
    char path[1200];
    test_zk_server_path(&g.zk, "client.log", path, sizeof(path));
    FILE *zlog = fopen(path, "a");
    if (zlog != NULL)
        zoo_set_log_stream(zlog);

    rd_kafka_conf_t *kc = rd_kafka_conf_new();
    /* the mock needs a handle of its own; it never connects anywhere */
    if (rd_kafka_conf_set(kc, "bootstrap.servers", "", errstr, sizeof(errstr)) !=
        RD_KAFKA_CONF_OK)
        return -1;
    g.mock_rk = rd_kafka_new(RD_KAFKA_PRODUCER, kc, errstr, sizeof(errstr));
    if (g.mock_rk == NULL) {
        fprintf(stderr, "mock handle: %s\n", errstr);
        return -1;
    }
    g.mcluster = rd_kafka_mock_cluster_new(g.mock_rk, 3);
    if (g.mcluster == NULL)
        return -1;
    if (rd_kafka_mock_topic_create(g.mcluster, "rt", PARTITIONS, 3) !=
            RD_KAFKA_RESP_ERR_NO_ERROR ||
        rd_kafka_mock_topic_create(g.mcluster, "rt-restart", PARTITIONS, 3) !=
            RD_KAFKA_RESP_ERR_NO_ERROR ||
        rd_kafka_mock_topic_create(g.mcluster, "rt-nowal", PARTITIONS, 3) !=
            RD_KAFKA_RESP_ERR_NO_ERROR)
        return -1;
    /* libfiu on, nothing enabled: the restart test enables receiver/fail */
    setenv("KWAL_FIU", "enable name=test/unused", 1);
    if (kw_fault_init(errstr, sizeof(errstr)) != KW_OK) {
        fprintf(stderr, "kw_fault_init: %s\n", errstr);
        return -1;
    }
    snprintf(g.bootstrap, sizeof(g.bootstrap), "%s",
             rd_kafka_mock_cluster_bootstraps(g.mcluster));
    g.dir = test_tmpdir_new("receiver-threads");
    return g.dir != NULL ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    if (g.mcluster != NULL)
        rd_kafka_mock_cluster_destroy(g.mcluster);
    if (g.mock_rk != NULL)
        rd_kafka_destroy(g.mock_rk);
    test_zk_server_stop(&g.zk);
    if (g.dir != NULL) {
        if (getenv("KWAL_KEEP_TMP") == NULL)
            test_rmtree(g.dir);
        free(g.dir);
    }
    return 0;
}

/* ---- producing ---- */

/* Produce records first..first+n-1 to topic with key "k<i>" (keys spread
 * them over the partitions) and value "v<i>"; every delivery must succeed. */
static void produce(const char *topic, int first, int n)
{
    char errstr[512], key[32], val[32];
    rd_kafka_conf_t *kc = rd_kafka_conf_new();
    assert_int_equal(rd_kafka_conf_set(kc, "bootstrap.servers", g.bootstrap, errstr,
                                       sizeof(errstr)), RD_KAFKA_CONF_OK);
    assert_int_equal(rd_kafka_conf_set(kc, "linger.ms", "5", errstr, sizeof(errstr)),
                     RD_KAFKA_CONF_OK);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, kc, errstr, sizeof(errstr));
    assert_non_null(rk);
    for (int i = first; i < first + n; i++) {
        int kl = snprintf(key, sizeof(key), "k%d", i);
        int vl = snprintf(val, sizeof(val), "v%d", i);
        rd_kafka_resp_err_t err;
        while ((err = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic),
                                        RD_KAFKA_V_KEY(key, (size_t)kl),
                                        RD_KAFKA_V_VALUE(val, (size_t)vl),
                                        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                        RD_KAFKA_V_END)) ==
               RD_KAFKA_RESP_ERR__QUEUE_FULL)
            rd_kafka_poll(rk, 10);
        assert_int_equal(err, RD_KAFKA_RESP_ERR_NO_ERROR);
        rd_kafka_poll(rk, 0);
    }
    assert_int_equal(rd_kafka_flush(rk, 60000), RD_KAFKA_RESP_ERR_NO_ERROR);
    assert_int_equal(rd_kafka_outq_len(rk), 0);
    rd_kafka_destroy(rk);
}

/* ---- one service instance ---- */

typedef struct instance {
    const char      *name;
    const char      *group;
    const char      *topic;
    char             dir[1100];
    char             db[1200];
    kw_conf_t       *conf;
    kw_wal_options_t wopts;
    kw_receiver_t   *rcv;
    pthread_t        thread;
    kw_err_t         run_err;
    char             errstr[1024];
} instance_t;

static void set(kw_conf_t *conf, const char *key, const char *value)
{
    char errstr[512];
    kw_err_t e = kw_conf_set(conf, key, value, "test", errstr, sizeof(errstr));
    if (e != KW_OK)
        fail_msg("%s=%s: %s", key, value, errstr);
}

static void instance_new_opts(instance_t *in, const char *name, const char *group,
                              const char *topic, const char *receivers, int no_wal)
{
    char errstr[1024], walp[1200], sink[1300];
    kw_receiver_options_t ro;

    memset(in, 0, sizeof(*in));
    in->name = name;
    in->group = group;
    in->topic = topic;
    test_path(in->dir, sizeof(in->dir), "%s/%s", g.dir, name);
    test_path(walp, sizeof(walp), "%s/wal", in->dir);
    test_path(in->db, sizeof(in->db), "%s/out.db", in->dir);
    test_path(sink, sizeof(sink), "sqlite:%s", in->db);
    assert_int_equal(kw_conf_new(&in->conf, errstr, sizeof(errstr)), KW_OK);
    set(in->conf, "group.id", group);
    set(in->conf, "instance.id", name);
    set(in->conf, "topics", topic);
    set(in->conf, "receivers", receivers);
    set(in->conf, "zookeeper.connect", g.zk.connect);
    set(in->conf, "kafka.bootstrap.servers", g.bootstrap);
    /* the mock's coordinator waits session.timeout.ms - 1 s for members at
     * each rebalance: keep it short */
    set(in->conf, "kafka.session.timeout.ms", "6000");
    set(in->conf, "kafka.heartbeat.interval.ms", "500");
    set(in->conf, "auto.offset.reset", "earliest");
    set(in->conf, "block.interval.ms", "50");
    set(in->conf, "batch.interval.ms", "200");
    set(in->conf, "sink", sink);
    set(in->conf, "wal.dirs", walp);
    kw_wal_options_init(&in->wopts);
    in->wopts.dirs[0] = in->conf->wal.dirs.items[0];
    in->wopts.ndirs = 1;
    kw_receiver_options_init(&ro);
    ro.no_wal = no_wal;
    if (no_wal)                 /* no WAL to create the directory */
        assert_int_equal(mkdir(in->dir, 0700), 0);
    kw_err_t e = kw_receiver_new_opts(in->conf, &in->wopts, &ro, &in->rcv, errstr,
                                      sizeof(errstr));
    if (e != KW_OK)
        fail_msg("%s: kw_receiver_new: %s", name, errstr);
}

static void instance_new(instance_t *in, const char *name, const char *group,
                         const char *topic, const char *receivers)
{
    instance_new_opts(in, name, group, topic, receivers, 0);
}

static void *instance_main(void *arg)
{
    instance_t *in = arg;
    in->run_err = kw_receiver_run(in->rcv, in->errstr, sizeof(in->errstr));
    return NULL;
}

static void instance_start(instance_t *in)
{
    assert_int_equal(pthread_create(&in->thread, NULL, instance_main, in), 0);
}

static void instance_stop(instance_t *in, kw_receiver_stats_t *st)
{
    kw_receiver_stop(in->rcv);
    assert_int_equal(pthread_join(in->thread, NULL), 0);
    if (in->run_err != KW_OK)
        fail_msg("%s: run: %s", in->name, in->errstr);
    kw_receiver_stats(in->rcv, st);
    kw_receiver_destroy(in->rcv);
    in->rcv = NULL;
    kw_conf_destroy(in->conf);
    in->conf = NULL;
}

/* ---- reading the results ---- */

/* One integer from a query on db (0 when the table does not exist yet). */
static int64_t query1(const char *db, const char *sql)
{
    sqlite3 *h = NULL;
    sqlite3_stmt *st = NULL;
    int64_t v = 0;

    if (access(db, F_OK) != 0)
        return 0;
    if (sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
        sqlite3_busy_timeout(h, 5000) == SQLITE_OK &&
        sqlite3_prepare_v2(h, sql, -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(h);
    return v;
}

static int64_t rows(const char *db)
{
    return query1(db, "SELECT count(*) FROM records");
}

static void wait_rows(const instance_t *a, const instance_t *b, int64_t want)
{
    int64_t deadline = now_ms() + WAIT_MS, n = 0;
    while (now_ms() < deadline) {
        n = rows(a->db) + (b != NULL ? rows(b->db) : 0);
        if (n >= want)
            return;
        usleep(100 * 1000);
    }
    fail_msg("only %" PRId64 " of %" PRId64 " records stored after %d ms", n, want,
             WAIT_MS);
}

/* Every (partition, offset) of a's topic in the sinks of a and b (b may be
 * a again), exactly once, 0..end-1 without holes; the ZooKeeper offset of
 * each partition = its end offset. */
static void check_exactly_once(const instance_t *a, const instance_t *b, int64_t total)
{
    char sql[2600], path[256], buf[64];
    sqlite3 *h = NULL;
    sqlite3_stmt *st = NULL;
    int64_t sum = 0;

    assert_int_equal(sqlite3_open(":memory:", &h), SQLITE_OK);
    if (a == b)
        test_path(sql, sizeof(sql), "ATTACH '%s' AS a; CREATE TEMP TABLE brecords AS "
                  "SELECT partition, offset FROM a.records WHERE 0;", a->db);
    else
        test_path(sql, sizeof(sql), "ATTACH '%s' AS a; ATTACH '%s' AS b; CREATE TEMP "
                  "VIEW brecords AS SELECT partition, offset FROM b.records;",
                  a->db, b->db);
    assert_int_equal(sqlite3_exec(h, sql, NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(h,
        "WITH u AS (SELECT partition, offset FROM a.records "
        "           UNION ALL SELECT partition, offset FROM brecords) "
        "SELECT partition, count(*), count(DISTINCT offset), min(offset), max(offset) "
        "FROM u GROUP BY partition ORDER BY partition", -1, &st, NULL), SQLITE_OK);

    zhandle_t *zh = zookeeper_init(g.zk.connect, NULL, 10000, NULL, NULL, 0);
    assert_non_null(zh);
    int64_t deadline = now_ms() + 10000;
    while (zoo_state(zh) != ZOO_CONNECTED_STATE && now_ms() < deadline)
        usleep(10000);
    assert_int_equal(zoo_state(zh), ZOO_CONNECTED_STATE);

    int parts = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        int p = sqlite3_column_int(st, 0);
        int64_t n = sqlite3_column_int64(st, 1), distinct = sqlite3_column_int64(st, 2);
        int64_t lo = sqlite3_column_int64(st, 3), hi = sqlite3_column_int64(st, 4);
        if (n != distinct)
            fail_msg("partition %d: %" PRId64 " rows, %" PRId64 " distinct offsets", p,
                     n, distinct);
        if (lo != 0 || hi + 1 != n)
            fail_msg("partition %d: offsets %" PRId64 "..%" PRId64 " in %" PRId64
                     " rows (holes)", p, lo, hi, n);
        test_path(path, sizeof(path), "/consumers/%s/offsets/%s/%d", a->group, a->topic,
                  p);
        int len = (int)sizeof(buf) - 1;
        struct Stat zst;
        int zrc = zoo_get(zh, path, 0, buf, &len, &zst);
        if (zrc != ZOK)
            fail_msg("%s: %s", path, zerror(zrc));
        buf[len > 0 ? len : 0] = '\0';
        if (strtoll(buf, NULL, 10) != hi + 1)
            fail_msg("%s holds %s, end offset is %" PRId64, path, buf, hi + 1);
        sum += n;
        parts++;
    }
    sqlite3_finalize(st);
    sqlite3_close(h);
    zookeeper_close(zh);
    assert_int_equal(parts, PARTITIONS);
    assert_int_equal(sum, total);
}

/* Every record delivered had its end-to-end latency measured (the mock
 * cluster's records carry their create time), and the summary is ordered. */
static void check_latency(const kw_receiver_stats_t *s)
{
    const kw_hist_summary_t *l = &s->latency;

    assert_int_equal(l->count, s->records_delivered);
    assert_true(l->count > 0);
    assert_true(0 <= l->p50 && l->p50 <= l->p90 && l->p90 <= l->p99 && l->p99 <= l->max);
    assert_true(l->max < 10 * 60 * 1000);
}

/* ---- the metrics endpoint's view (kw_receiver_partitions) ---- */

/* Reads the service's statistics and partitions every 2 ms from its own
 * thread while the service runs, as the endpoint's thread does. */
typedef struct watcher {
    kw_receiver_t *rcv;
    pthread_t      thread;
    atomic_int     stop;
    atomic_int     reads;
} watcher_t;

static void *watcher_main(void *arg)
{
    watcher_t *w = arg;
    kw_stats_partition_t parts[2 * PARTITIONS];
    kw_receiver_stats_t st;

    while (!atomic_load(&w->stop)) {
        kw_receiver_stats(w->rcv, &st);
        (void)kw_receiver_partitions(w->rcv, parts, 2 * PARTITIONS);
        atomic_fetch_add(&w->reads, 1);
        usleep(2000);
    }
    return NULL;
}

static void watcher_start(watcher_t *w, kw_receiver_t *rcv)
{
    memset(w, 0, sizeof(*w));
    w->rcv = rcv;
    assert_int_equal(pthread_create(&w->thread, NULL, watcher_main, w), 0);
}

static void watcher_stop(watcher_t *w)
{
    atomic_store(&w->stop, 1);
    assert_int_equal(pthread_join(w->thread, NULL), 0);
    assert_true(atomic_load(&w->reads) > 0);
}

/* Once every record is stored and nothing arrives: in's view has every
 * partition of its topic owned, sorted, and positions and high watermarks
 * that add up to total (each at its end offset: offsets start at 0 without
 * gaps in the mock cluster, and check_exactly_once compares ZooKeeper's
 * with the ends). Waits, bounded, for the last commit and watermark. */
static void check_partitions_at_end(const instance_t *in, int64_t total)
{
    kw_stats_partition_t parts[2 * PARTITIONS];
    int64_t deadline = now_ms() + WAIT_MS, pos = 0, high = 0;
    size_t n = 0;
    int owned = 0;

    while (now_ms() < deadline) {
        n = kw_receiver_partitions(in->rcv, parts, 2 * PARTITIONS);
        assert_true(n <= 2 * PARTITIONS);
        pos = high = 0;
        owned = 0;
        for (size_t i = 0; i < n; i++) {
            assert_string_equal(parts[i].topic, in->topic);
            assert_int_equal(parts[i].partition, (int32_t)i);     /* sorted, one each */
            owned += parts[i].owned;
            pos += parts[i].position;
            high += parts[i].high;
        }
        if (n == PARTITIONS && owned == PARTITIONS && pos == total && high == total)
            break;
        usleep(100 * 1000);
    }
    if (!(n == PARTITIONS && owned == PARTITIONS && pos == total && high == total))
        fail_msg("%s: %zu partitions, %d owned, positions add up to %" PRId64 ", high "
                 "watermarks to %" PRId64 ", not %" PRId64, in->name, n, owned, pos, high,
                 total);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(parts[i].position, parts[i].high);      /* lag 0 */
}

/* ---- the test ---- */

static void test_two_instances_rebalance(void **state)
{
    (void)state;
    if (g.skip) {
        skip();
        return;
    }
    instance_t a, b;
    kw_receiver_stats_t sa, sb;
    watcher_t wa;

    produce("rt", 0, NREC);
    instance_new(&a, "a", "g-threads", "rt", "2");
    instance_start(&a);
    watcher_start(&wa, a.rcv);
    wait_rows(&a, NULL, NREC / 2);

    instance_new(&b, "b", "g-threads", "rt", "1");
    instance_start(&b);
    /* B has joined when it stores records of its own: keep producing (in
     * small steps, so records arrive while the group rebalances) until then */
    int produced = NREC;
    int64_t deadline = now_ms() + WAIT_MS;
    while (rows(b.db) == 0 && now_ms() < deadline) {
        produce("rt", produced, 100);
        produced += 100;
        usleep(100 * 1000);
    }
    if (rows(b.db) == 0)
        fail_msg("instance b stored nothing in %d ms", WAIT_MS);
    /* B leaves while records still arrive; A takes its partitions back */
    produce("rt", produced, NREC / 2);
    produced += NREC / 2;
    instance_stop(&b, &sb);
    produce("rt", produced, NREC / 2);
    produced += NREC / 2;

    wait_rows(&a, &b, produced);
    check_partitions_at_end(&a, produced);
    watcher_stop(&wa);
    instance_stop(&a, &sa);

    check_exactly_once(&a, &b, produced);
    assert_int_equal(sa.duplicates_delivered, 0);
    assert_int_equal(sb.duplicates_delivered, 0);
    assert_int_equal(sa.records_stored + sb.records_stored, produced);
    assert_int_equal(sa.blocks_fenced, 0);
    assert_true(sb.records_stored > 0);
    check_latency(&sa);
    check_latency(&sb);
}

/* A receiver that fails (libfiu point receiver/fail, once) is restarted by
 * the service after its backoff; it gives its partitions up on the way out
 * (flushed, committed, disowned) and takes them back: nothing is lost,
 * nothing stored twice, the restart is counted. */
static void test_receiver_restart(void **state)
{
    (void)state;
    if (g.skip) {
        skip();
        return;
    }
    instance_t a;
    kw_receiver_stats_t sa;

    produce("rt-restart", 0, NREC);
    instance_new(&a, "restart", "g-restart", "rt-restart", "2");
    instance_start(&a);
    wait_rows(&a, NULL, NREC / 2);
    assert_int_equal(fiu_enable("receiver/fail", 1, NULL, FIU_ONETIME), 0);
    produce("rt-restart", NREC, NREC);
    int64_t deadline = now_ms() + WAIT_MS;
    kw_receiver_stats(a.rcv, &sa);
    while (sa.receiver_restarts == 0 && now_ms() < deadline) {
        usleep(100 * 1000);
        kw_receiver_stats(a.rcv, &sa);
    }
    assert_int_equal(sa.receiver_restarts, 1);
    produce("rt-restart", 2 * NREC, NREC);
    wait_rows(&a, NULL, 3 * NREC);
    instance_stop(&a, &sa);

    check_exactly_once(&a, &a, 3 * NREC);
    assert_int_equal(sa.receiver_restarts, 1);
    assert_int_equal(sa.duplicates_delivered, 0);
    assert_int_equal(sa.records_stored, 3 * NREC);
}

/* --no-wal: two receivers' pipelines hand blocks to the batcher through the
 * in-memory pending list while records keep arriving; a requested stop
 * delivers everything: each record once, ZooKeeper at the end offsets. */
static void test_no_wal(void **state)
{
    (void)state;
    if (g.skip) {
        skip();
        return;
    }
    instance_t a;
    kw_receiver_stats_t sa;

    produce("rt-nowal", 0, NREC);
    instance_new_opts(&a, "nowal", "g-nowal", "rt-nowal", "2", 1);
    instance_start(&a);
    wait_rows(&a, NULL, NREC / 2);
    produce("rt-nowal", NREC, NREC);
    wait_rows(&a, NULL, 2 * NREC);
    instance_stop(&a, &sa);

    check_exactly_once(&a, &a, 2 * NREC);
    assert_int_equal(sa.duplicates_delivered, 0);
    assert_int_equal(sa.records_stored, 2 * NREC);
    assert_int_equal(sa.blocks_durable, 0);             /* no WAL */
    check_latency(&sa);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_two_instances_rebalance),
        cmocka_unit_test(test_receiver_restart),
        cmocka_unit_test(test_no_wal),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
