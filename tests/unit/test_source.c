/*
 * test_source.c -- the Kafka side both modes share (source.h):
 * auto.offset.reset for partitions without a stored offset, the lost range
 * and the next position after an offset out of range (invariant 6), the
 * consumer configuration kwal builds, and a librdkafka message as a record.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "kw_conf.h"
#include "source.h"

static void test_reset_offset(void **state)
{
    (void)state;
    assert_int_equal(kw_source_reset_offset(KW_OFFSET_RESET_EARLIEST),
                     KW_SOURCE_OFFSET_BEGINNING);
    assert_int_equal(kw_source_reset_offset(KW_OFFSET_RESET_LATEST),
                     KW_SOURCE_OFFSET_END);
    assert_true(kw_source_reset_offset(KW_OFFSET_RESET_ERROR) < KW_SOURCE_OFFSET_BEGINNING);
}

static void test_out_of_range_earliest(void **state)
{
    int64_t from, until, seek;

    (void)state;
    /* retention removed 100..149: lost, go on at 150 */
    assert_int_equal(kw_source_out_of_range(100, 150, 400, KW_OFFSET_RESET_EARLIEST,
                                              &from, &until, &seek), 0);
    assert_int_equal(from, 100);
    assert_int_equal(until, 150);
    assert_int_equal(seek, 150);
}

static void test_out_of_range_latest(void **state)
{
    int64_t from, until, seek;

    (void)state;
    assert_int_equal(kw_source_out_of_range(100, 150, 400, KW_OFFSET_RESET_LATEST,
                                              &from, &until, &seek), 0);
    assert_int_equal(from, 100);
    assert_int_equal(until, 150);
    assert_int_equal(seek, 400);
}

static void test_out_of_range_past_end(void **state)
{
    int64_t from, until, seek;

    (void)state;
    /* an offset beyond the end: nothing lost at the source */
    assert_int_equal(kw_source_out_of_range(500, 150, 400, KW_OFFSET_RESET_EARLIEST,
                                              &from, &until, &seek), 0);
    assert_int_equal(until - from, 0);
    assert_int_equal(seek, 150);
    /* a logical offset: nothing lost either */
    assert_int_equal(kw_source_out_of_range(-1, 150, 400, KW_OFFSET_RESET_LATEST,
                                              &from, &until, &seek), 0);
    assert_int_equal(until - from, 0);
    assert_int_equal(seek, 400);
}

static void test_out_of_range_error(void **state)
{
    int64_t from, until, seek;

    (void)state;
    assert_int_equal(kw_source_out_of_range(100, 150, 400, KW_OFFSET_RESET_ERROR,
                                              &from, &until, &seek), -1);
    assert_int_equal(from, 100);
    assert_int_equal(until, 150);
    assert_int_equal(seek, -1);
}

static void test_consumer_conf(void **state)
{
    const char *over[] = { "kafka.fetch.wait.max.ms=50", "kafka.client.id=mine" };
    const char *bad[] = { "kafka.fetch.wait.max.ms=soon" };
    const char *const extra[] = { "enable.partition.eof", "true", NULL };
    kw_conf_t *conf = NULL;
    rd_kafka_conf_t *kc = NULL;
    char errstr[512], v[64];
    size_t vlen;

    (void)state;
    assert_int_equal(kw_conf_load(NULL, over, 2, &conf, errstr, sizeof(errstr)), KW_OK);
    assert_int_equal(kw_source_consumer_conf(conf, "grp", extra, &kc, errstr, sizeof(errstr)),
                     KW_OK);
    assert_non_null(kc);
#define GET(k, want) do { vlen = sizeof(v); \
        assert_int_equal(rd_kafka_conf_get(kc, k, v, &vlen), RD_KAFKA_CONF_OK); \
        assert_string_equal(v, want); } while (0)
    GET("fetch.wait.max.ms", "50");
    GET("client.id", "mine");
    GET("group.id", "grp");
    GET("enable.auto.commit", "false");
    GET("enable.auto.offset.store", "false");
    GET("auto.offset.reset", "error");
    GET("enable.partition.eof", "true");
#undef GET
    rd_kafka_conf_destroy(kc);
    assert_int_equal(kw_source_check_conf(conf, errstr, sizeof(errstr)), KW_OK);
    kw_conf_destroy(conf);

    conf = NULL;
    assert_int_equal(kw_conf_load(NULL, bad, 1, &conf, errstr, sizeof(errstr)), KW_OK);
    assert_int_equal(kw_source_check_conf(conf, errstr, sizeof(errstr)), KW_ECONFIG);
    assert_non_null(strstr(errstr, "kafka.fetch.wait.max.ms"));
    kc = (rd_kafka_conf_t *)1;
    assert_int_equal(kw_source_consumer_conf(conf, "g", NULL, &kc, errstr, sizeof(errstr)),
                     KW_ECONFIG);
    assert_null(kc);
    kw_conf_destroy(conf);
}

/* Real librdkafka messages: a producer with no broker times its messages
 * out at once and hands each back in a delivery report, with topic,
 * partition, timestamp, key, value and headers as produced. */
static int dr_seen;

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    kw_record_header_t hdrs[2];
    kw_record_t rec;

    (void)rk;
    (void)opaque;
    dr_seen++;
    assert_int_not_equal(m->err, RD_KAFKA_RESP_ERR_NO_ERROR);   /* timed out */
    if (m->key_len == 2) {   /* the message with headers */
        assert_int_equal(kw_source_header_count(m), 2);
        kw_source_record(m, &rec, hdrs);
        assert_int_equal(rec.header_count, 2);
        assert_ptr_equal(rec.headers, hdrs);
        assert_int_equal(hdrs[0].name_len, 1);
        assert_memory_equal(hdrs[0].name, "a", 1);
        assert_int_equal(hdrs[0].value_len, 1);
        assert_memory_equal(hdrs[0].value, "1", 1);
        assert_memory_equal(hdrs[1].name, "b", 1);
        assert_null(hdrs[1].value);
        assert_memory_equal(rec.key, "k1", 2);
        /* a failed delivery may carry no timestamp type: then ts is -1 */
        if (rec.tstype == KW_TS_NOT_AVAILABLE)
            assert_int_equal(rec.timestamp, -1);
        else
            assert_int_equal(rec.timestamp, 1700000000000LL);
    } else {                 /* no headers, no key */
        assert_int_equal(kw_source_header_count(m), 0);
        kw_source_record(m, &rec, NULL);
        assert_int_equal(rec.header_count, 0);
        assert_null(rec.headers);
        assert_null(rec.key);
    }
    assert_string_equal(rec.topic, "events");
    assert_int_equal(rec.partition, 3);
    assert_int_equal(rec.offset, m->offset);
    assert_int_equal(rec.value_len, 5);
    assert_memory_equal(rec.value, "hello", 5);
}

static void test_record(void **state)
{
    rd_kafka_conf_t *kc = rd_kafka_conf_new();
    rd_kafka_headers_t *h = rd_kafka_headers_new(2);
    char errstr[256];
    rd_kafka_t *rk;

    (void)state;
    assert_int_equal(rd_kafka_conf_set(kc, "message.timeout.ms", "1", errstr,
                                       sizeof(errstr)), RD_KAFKA_CONF_OK);
    rd_kafka_conf_set_dr_msg_cb(kc, dr_cb);
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, kc, errstr, sizeof(errstr));
    assert_non_null(rk);
    assert_int_equal(rd_kafka_header_add(h, "a", -1, "1", 1), RD_KAFKA_RESP_ERR_NO_ERROR);
    assert_int_equal(rd_kafka_header_add(h, "b", -1, NULL, 0), RD_KAFKA_RESP_ERR_NO_ERROR);
    assert_int_equal(rd_kafka_producev(rk, RD_KAFKA_V_TOPIC("events"), RD_KAFKA_V_PARTITION(3),
                                       RD_KAFKA_V_KEY("k1", 2), RD_KAFKA_V_VALUE("hello", 5),
                                       RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                       RD_KAFKA_V_TIMESTAMP(1700000000000LL),
                                       RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_END),
                     RD_KAFKA_RESP_ERR_NO_ERROR);   /* h is the message's now */
    assert_int_equal(rd_kafka_producev(rk, RD_KAFKA_V_TOPIC("events"), RD_KAFKA_V_PARTITION(3),
                                       RD_KAFKA_V_VALUE("hello", 5),
                                       RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                       RD_KAFKA_V_END),
                     RD_KAFKA_RESP_ERR_NO_ERROR);
    for (int i = 0; i < 100 && dr_seen < 2; i++)
        rd_kafka_poll(rk, 50);
    assert_int_equal(dr_seen, 2);
    rd_kafka_destroy(rk);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reset_offset),
        cmocka_unit_test(test_out_of_range_earliest),
        cmocka_unit_test(test_out_of_range_latest),
        cmocka_unit_test(test_out_of_range_past_end),
        cmocka_unit_test(test_out_of_range_error),
        cmocka_unit_test(test_consumer_conf),
        cmocka_unit_test(test_record),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
