/*
 * test_sink_kafka.c -- the kafka sink (sink/sink.h, sink/FORMAT.md) against
 * librdkafka's mock cluster: the spec and options it refuses (no group or
 * instance, a property librdkafka does not know, an output topic that does
 * not exist); records written in a committed transaction and read back by a
 * read_committed consumer -- key, value, timestamp, the source headers then
 * kwal.topic/partition/offset, the output partition the source partition
 * modulo the output's -- and an aborted transaction's never seen.
 *
 * The mock cluster accepts send_offsets_to_transaction but keeps no
 * transactional offsets, so the offsets half (receive mode's duplicates,
 * direct mode's ranges and fence) is tested on a real cluster by
 * tests/integration/test_0091_sink_kafka.py.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "sink.h"
#include "test_sink_util.h"

#define OUT_PARTS 3

static rd_kafka_t *mock_rk;
static rd_kafka_mock_cluster_t *mcluster;
static kw_conf_pair_t cluster[1];

static int group_setup(void **state)
{
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    char err[256];

    (void)state;
    if (rd_kafka_conf_set(c, "bootstrap.servers", "", err, sizeof(err)) != RD_KAFKA_CONF_OK)
        return -1;
    mock_rk = rd_kafka_new(RD_KAFKA_PRODUCER, c, err, sizeof(err));
    if (mock_rk == NULL || (mcluster = rd_kafka_mock_cluster_new(mock_rk, 3)) == NULL)
        return -1;
    if (rd_kafka_mock_topic_create(mcluster, "out", OUT_PARTS, 3) != 0 ||
        rd_kafka_mock_topic_create(mcluster, "out2", OUT_PARTS, 3) != 0 ||
        rd_kafka_mock_topic_create(mcluster, "src", 4, 3) != 0)
        return -1;
    cluster[0].key = "bootstrap.servers";
    cluster[0].value = (char *)rd_kafka_mock_cluster_bootstraps(mcluster);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    rd_kafka_mock_cluster_destroy(mcluster);
    rd_kafka_destroy(mock_rk);
    return 0;
}

static kw_sink_options_t opts(int direct, const kw_conf_pair_t *sk, size_t nsk)
{
    kw_sink_options_t o;

    memset(&o, 0, sizeof(o));
    o.group = "g";
    o.instance = direct ? "d1" : "r1";
    o.direct = direct;
    o.kafka = cluster;
    o.nkafka = 1;
    o.sink_kafka = sk;
    o.nsink_kafka = nsk;
    return o;
}

static kw_err_t open_err(const char *spec, const kw_sink_options_t *o, char *err, size_t len)
{
    kw_sink_t *k = NULL;
    kw_err_t e = kw_sink_open_opts(spec, o, &k, err, len);

    assert_null(k);
    return e;
}

static void test_open_refusals(void **state)
{
    kw_sink_options_t o = opts(0, NULL, 0);
    kw_conf_pair_t bad[] = { { "no.such.property", "1" } };
    kw_sink_t *k = NULL;
    char err[512];

    (void)state;
    assert_int_equal(kw_sink_open("kafka:out", &k, err, sizeof(err)), KW_ECONFIG);
    assert_null(k);
    assert_non_null(strstr(err, "needs group.id"));
    assert_int_equal(open_err("kafka:", &o, err, sizeof(err)), KW_ECONFIG);
    assert_non_null(strstr(err, "kafka needs a topic (kafka:TOPIC)"));
    o = opts(0, bad, 1);
    assert_int_equal(open_err("kafka:out", &o, err, sizeof(err)), KW_ECONFIG);
    assert_non_null(strstr(err, "sink.kafka.no.such.property"));
}

/* Every record of topic, read_committed, by partition, each in offset order. */
typedef struct got {
    int32_t partition;
    int64_t ts;
    char    key[32], value[64], hdrs[160];
} got_t;

static size_t read_all(const char *topic, got_t *out, size_t max)
{
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(OUT_PARTS);
    char err[256];
    int eofs = 0;
    size_t n = 0;
    rd_kafka_t *rk;

    rd_kafka_conf_set(c, "bootstrap.servers", cluster[0].value, err, sizeof(err));
    rd_kafka_conf_set(c, "group.id", "reader", err, sizeof(err));
    rd_kafka_conf_set(c, "isolation.level", "read_committed", err, sizeof(err));
    rd_kafka_conf_set(c, "enable.partition.eof", "true", err, sizeof(err));
    rk = rd_kafka_new(RD_KAFKA_CONSUMER, c, err, sizeof(err));
    assert_non_null(rk);
    for (int p = 0; p < OUT_PARTS; p++)
        rd_kafka_topic_partition_list_add(l, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    assert_int_equal(rd_kafka_assign(rk, l), 0);
    rd_kafka_topic_partition_list_destroy(l);
    for (int polls = 0; eofs < OUT_PARTS && polls < 200; polls++) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        rd_kafka_headers_t *h = NULL;

        if (m == NULL)
            continue;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            eofs++;
        } else if (m->err == 0 && n < max) {
            got_t *g = &out[n++];
            const char *name;
            const void *v;
            size_t vlen;

            memset(g, 0, sizeof(*g));
            g->partition = m->partition;
            g->ts = rd_kafka_message_timestamp(m, NULL);
            snprintf(g->key, sizeof(g->key), "%.*s", m->key != NULL ? (int)m->key_len : 4,
                     m->key != NULL ? (const char *)m->key : "NULL");
            snprintf(g->value, sizeof(g->value), "%.*s", (int)m->len,
                     (const char *)m->payload);
            if (rd_kafka_message_headers(m, &h) == 0)
                for (size_t i = 0; rd_kafka_header_get_all(h, i, &name, &v, &vlen) == 0; i++)
                    snprintf(g->hdrs + strlen(g->hdrs), sizeof(g->hdrs) - strlen(g->hdrs),
                             "%s%s=%.*s", i ? " " : "", name, (int)vlen,
                             v != NULL ? (const char *)v : "");
        }
        rd_kafka_message_destroy(m);
    }
    assert_int_equal(eofs, OUT_PARTS);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    /* partitions arrive interleaved: by partition, each one's order kept */
    for (size_t i = 1; i < n; i++)
        for (size_t j = i; j > 0 && out[j - 1].partition > out[j].partition; j--) {
            got_t t = out[j];

            out[j] = out[j - 1];
            out[j - 1] = t;
        }
    return n;
}

static void test_records_committed_and_aborted(void **state)
{
    kw_sink_options_t o = opts(0, NULL, 0);
    kw_record_header_t h = { "h1", 2, "v1", 2 };
    kw_record_t r[4];
    kw_sink_stats_t st;
    got_t got[16];
    kw_sink_t *k = NULL;
    char err[512];
    size_t n;

    (void)state;
    r[0] = sink_rec("src", 0, 10, "a");
    r[1] = sink_rec("src", 3, 7, "b");          /* output partition 0 as well */
    r[2] = sink_rec("src", 3, 8, "c");
    r[3] = sink_rec("src", 1, 5, NULL);
    r[0].headers = &h;
    r[0].header_count = 1;
    r[1].key = NULL;
    if (kw_sink_open_opts("kafka:out", &o, &k, err, sizeof(err)) != KW_OK)
        fail_msg("open: %s", err);
    assert_int_equal(kw_sink_kind(k), KW_SINK_KAFKA);
    assert_string_equal(kw_sink_kind_name(k), "kafka");
    /* an aborted transaction first: never visible */
    assert_int_equal(kw_sink_txn_begin(k, 1, err, sizeof(err)), KW_OK);
    if (kw_sink_txn_write(k, r, 4, err, sizeof(err)) != KW_OK)
        fail_msg("write: %s", err);
    kw_sink_txn_abort(k);
    st = sink_write_ok(k, 2, r, 4);
    assert_int_equal(st.stored, 4);
    assert_int_equal(st.duplicates_delivered, 0);
    kw_sink_close(k);

    n = read_all("out", got, 16);
    assert_int_equal(n, 4);
    /* partition 0: src/0@10 then src/3@7, src/3@8 in that order */
    assert_int_equal(got[0].partition, 0);
    assert_string_equal(got[0].value, "a");
    assert_string_equal(got[0].key, "k");
    assert_int_equal(got[0].ts, 1700000000010);
    assert_string_equal(got[0].hdrs,
                        "h1=v1 kwal.topic=src kwal.partition=0 kwal.offset=10");
    assert_string_equal(got[1].value, "b");
    assert_string_equal(got[1].key, "NULL");
    assert_string_equal(got[1].hdrs, "kwal.topic=src kwal.partition=3 kwal.offset=7");
    assert_string_equal(got[2].value, "c");
    assert_int_equal(got[3].partition, 1);
    assert_string_equal(got[3].value, "");
    assert_string_equal(got[3].hdrs, "kwal.topic=src kwal.partition=1 kwal.offset=5");
}

/* Direct mode: ranges noted, a second range of one partition in a batch
 * refused, and the ids begin_next hands out go up. */
static void test_direct_ranges_and_ids(void **state)
{
    kw_sink_options_t o = opts(1, NULL, 0);
    kw_record_t r = sink_rec("src", 0, 0, "x");
    kw_sink_t *k = NULL;
    uint64_t id = 0, id2 = 0;
    char err[512];

    (void)state;
    if (kw_sink_open_opts("kafka:out2", &o, &k, err, sizeof(err)) != KW_OK)
        fail_msg("open: %s", err);
    assert_true(kw_sink_ranges_supported(k));
    assert_int_equal(kw_sink_txn_begin_next(k, 5, &id, err, sizeof(err)), KW_OK);
    assert_int_equal(id, 5);
    assert_int_equal(kw_sink_txn_write(k, &r, 1, err, sizeof(err)), KW_OK);
    assert_int_equal(kw_sink_txn_put_range(k, "src", 0, KW_SINK_RANGE_UNCHECKED, 0, 1, err,
                                           sizeof(err)), KW_OK);
    assert_int_equal(kw_sink_txn_put_range(k, "src", 0, KW_SINK_RANGE_UNCHECKED, 1, 2, err,
                                           sizeof(err)), KW_EIO);
    assert_non_null(strstr(err, "has a range of src/0 already"));
    /* the error ended the transaction (T2): the next id is still above */
    assert_int_equal(kw_sink_txn_begin_next(k, 1, &id2, err, sizeof(err)), KW_OK);
    assert_true(id2 > id);
    kw_sink_txn_abort(k);
    kw_sink_close(k);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_refusals),
        cmocka_unit_test(test_records_committed_and_aborted),
        cmocka_unit_test(test_direct_ranges_and_ids),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
