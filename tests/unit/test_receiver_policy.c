/*
 * test_receiver_policy.c -- the receiver's pieces that need no Kafka: the
 * settings kw_receiver_new() refuses before it opens anything, the restart
 * backoff, and the batch ids of --no-wal (no tracker to allocate them).
 * The offset policy both modes share is in test_source.c.
 * The end-to-end proof is tests/integration/0020-receive.sh.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "kw_conf.h"
#include "receiver.h"
#include "wal.h"

/* new() with conf overrides; returns its error and errstr. */
static kw_err_t try_new(const char *const *over, size_t n, char *errstr, size_t len)
{
    kw_wal_options_t wo;
    kw_receiver_t *r = (kw_receiver_t *)1;
    kw_conf_t *conf = NULL;
    kw_err_t err;

    assert_int_equal(kw_conf_load(NULL, over, n, &conf, errstr, len), KW_OK);
    kw_wal_options_init(&wo);
    wo.dirs[0] = "/nonexistent/kwal-test-wal";
    wo.ndirs = 1;
    err = kw_receiver_new(conf, &wo, &r, errstr, len);
    assert_null(r);
    kw_conf_destroy(conf);
    return err;
}

static void test_new_refuses_config(void **state)
{
    const char *no_group[] = { "topics=t" };
    const char *no_topics[] = { "group.id=g" };
    const char *auto_commit[] = { "group.id=g", "topics=t", "kafka.enable.auto.commit=true" };
    const char *reset[] = { "group.id=g", "topics=t", "kafka.auto.offset.reset=earliest" };
    const char *bad_kafka[] = { "group.id=g", "topics=t", "kafka.fetch.wait.max.ms=soon" };
    const char *unknown_kafka[] = { "group.id=g", "topics=t", "kafka.no.such.property=1" };
    char errstr[512];

    (void)state;
    assert_int_equal(try_new(no_group, 1, errstr, sizeof(errstr)), KW_ECONFIG);
    assert_non_null(strstr(errstr, "group.id"));
    assert_int_equal(try_new(no_topics, 1, errstr, sizeof(errstr)), KW_ECONFIG);
    assert_non_null(strstr(errstr, "topics"));
    assert_int_equal(try_new(auto_commit, 3, errstr, sizeof(errstr)), KW_ECONFIG);
    assert_non_null(strstr(errstr, "kafka.enable.auto.commit"));
    assert_int_equal(try_new(reset, 3, errstr, sizeof(errstr)), KW_ECONFIG);
    assert_non_null(strstr(errstr, "auto.offset.reset"));
    /* kafka.* keys are checked at start, not by each receiver thread */
    assert_int_equal(try_new(bad_kafka, 3, errstr, sizeof(errstr)), KW_ECONFIG);
    assert_non_null(strstr(errstr, "kafka.fetch.wait.max.ms"));
    assert_int_equal(try_new(unknown_kafka, 3, errstr, sizeof(errstr)), KW_ECONFIG);
    assert_non_null(strstr(errstr, "kafka.no.such.property"));
}

static void test_restart_delay(void **state)
{
    (void)state;
    assert_int_equal(kw_receiver_restart_delay_ms(1), 500);
    assert_int_equal(kw_receiver_restart_delay_ms(2), 1000);
    assert_int_equal(kw_receiver_restart_delay_ms(3), 2000);
    assert_int_equal(kw_receiver_restart_delay_ms(6), 16000);
    assert_int_equal(kw_receiver_restart_delay_ms(7), 30000);
    assert_int_equal(kw_receiver_restart_delay_ms(100), 30000);
    assert_int_equal(kw_receiver_restart_delay_ms(UINT32_MAX), 30000);
    /* never below the first delay, even for a streak of 0 */
    assert_int_equal(kw_receiver_restart_delay_ms(0), 500);
}

static void test_conf_defaults(void **state)
{
    char errstr[256];
    kw_conf_t *c = NULL;

    (void)state;
    assert_int_equal(kw_conf_new(&c, errstr, sizeof(errstr)), KW_OK);
    assert_string_equal(c->receiver.group_id, "");
    assert_int_equal(c->receiver.topics.count, 0);
    assert_int_equal(c->receiver.receivers, 1);
    assert_int_equal(c->receiver.max_rate, 0);
    assert_int_equal(c->receiver.auto_offset_reset, KW_OFFSET_RESET_LATEST);
    assert_int_equal(c->receiver.block_interval_ms, 200);
    assert_int_equal(c->receiver.block_max_bytes, 4ull << 20);
    assert_int_equal(c->receiver.batch_interval_ms, 2000);
    assert_string_equal(c->receiver.sink, "sqlite:./kwal-out.db");
    assert_string_equal(c->receiver.tracker_path, "");
    assert_string_equal(c->zk.connect, "127.0.0.1:2181");
    assert_int_equal(c->zk.session_timeout_ms, 10000);
    assert_int_equal(kw_conf_set(c, "auto.offset.reset", "sometimes", "-X", errstr,
                                 sizeof(errstr)), KW_ECONFIG);
    assert_non_null(strstr(errstr, "auto.offset.reset"));
    assert_int_equal(kw_conf_set(c, "topics", "a, b", "-X", errstr, sizeof(errstr)), KW_OK);
    assert_int_equal(c->receiver.topics.count, 2);
    assert_string_equal(c->receiver.topics.items[1], "b");
    kw_conf_destroy(c);
}

static void test_next_batch_id(void **state)
{
    const int64_t t = 1700000000000;    /* a wall clock in ms */
    uint64_t id;

    (void)state;
    /* the first batch of a run: the clock */
    assert_int_equal(kw_receiver_next_batch_id(0, t), (uint64_t)t);
    /* later batches: the clock when it moved on ... */
    assert_int_equal(kw_receiver_next_batch_id((uint64_t)t, t + 2000), (uint64_t)t + 2000);
    /* ... one more when it did not (same ms, or it went back) */
    assert_int_equal(kw_receiver_next_batch_id((uint64_t)t, t), (uint64_t)t + 1);
    assert_int_equal(kw_receiver_next_batch_id((uint64_t)t + 5, t - 60000), (uint64_t)t + 6);
    /* never 0, even with a clock before the epoch */
    assert_int_equal(kw_receiver_next_batch_id(0, 0), 1);
    assert_int_equal(kw_receiver_next_batch_id(0, -5), 1);
    /* a restart continues above the last run's ids: they never run ahead
     * of the clock by more than the batches made in the same ms */
    id = 0;
    for (int i = 0; i < 10; i++)
        id = kw_receiver_next_batch_id(id, t);
    assert_int_equal(id, (uint64_t)t + 9);
    assert_true(kw_receiver_next_batch_id(0, t + 10) > id);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_refuses_config),
        cmocka_unit_test(test_conf_defaults),
        cmocka_unit_test(test_restart_delay),
        cmocka_unit_test(test_next_batch_id),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
