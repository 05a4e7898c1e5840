/*
 * test_common_prometheus.c -- kw_stats_format_prometheus (kw_stats.h): the
 * text the metrics endpoint serves, line by line.
 *
 *   - structure: every family is a HELP line, a TYPE line, then only its
 *     own samples; no family twice; counters end in _total; every sample's
 *     value is a number; the text ends in a newline;
 *   - values: counters as they are (the largest uint64 too), times in
 *     seconds with three exact decimals, unknown values (-1) left out with
 *     their family kept, summaries (quantiles 0.5/0.9/0.99/1 and _count,
 *     only _count while empty; the WAL's in microseconds -> seconds);
 *   - partitions: owned 0/1, position and high watermark when known, lag =
 *     high - position when both are known, 0 when the high watermark seen is
 *     behind; topic names escaped (backslash, double quote, line feed);
 *   - a buffer too small: the length it needs, whatever the cut, and a
 *     NUL-terminated prefix.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kw_hist.h"
#include "kw_stats.h"

#define MAX_LINES 1024

/* buf split at newlines (buf is changed); returns the count. */
static size_t split_lines(char *buf, char **lines, size_t max)
{
    size_t n = 0;

    for (char *p = buf; *p != '\0' && n < max;) {
        char *nl = strchr(p, '\n');

        assert_non_null(nl);            /* every line ends in a newline */
        *nl = '\0';
        lines[n++] = p;
        p = nl + 1;
    }
    return n;
}

static int has_line(char **lines, size_t n, const char *want)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(lines[i], want) == 0)
            return 1;
    return 0;
}

/* Some line starts with prefix. */
static int has_prefix(char **lines, size_t n, const char *prefix)
{
    for (size_t i = 0; i < n; i++)
        if (strncmp(lines[i], prefix, strlen(prefix)) == 0)
            return 1;
    return 0;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);

    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* The format's grammar as kwal uses it (see the top of the file). */
static void check_structure(char **lines, size_t n)
{
    char family[128] = "", type[32] = "";
    char seen[256][128];
    size_t nseen = 0;

    for (size_t i = 0; i < n; i++) {
        const char *l = lines[i];

        if (strncmp(l, "# HELP ", 7) == 0) {
            const char *name = l + 7, *sp = strchr(name, ' ');
            char want[160];

            assert_non_null(sp);
            assert_true(sp[1] != '\0');             /* a help text */
            assert_true((size_t)(sp - name) < sizeof(family));
            memcpy(family, name, (size_t)(sp - name));
            family[sp - name] = '\0';
            assert_int_equal(strncmp(family, "kwal_", 5), 0);
            for (size_t k = 0; k < nseen; k++)
                if (strcmp(seen[k], family) == 0)
                    fail_msg("family %s twice", family);
            assert_true(nseen < 256);
            snprintf(seen[nseen++], sizeof(seen[0]), "%s", family);
            /* TYPE right after HELP */
            assert_true(i + 1 < n);
            snprintf(want, sizeof(want), "# TYPE %s ", family);
            if (strncmp(lines[i + 1], want, strlen(want)) != 0)
                fail_msg("no TYPE after HELP of %s: %s", family, lines[i + 1]);
            snprintf(type, sizeof(type), "%s", lines[i + 1] + strlen(want));
            assert_true(strcmp(type, "counter") == 0 || strcmp(type, "gauge") == 0 ||
                        strcmp(type, "summary") == 0);
            if (strcmp(type, "counter") == 0 && !ends_with(family, "_total"))
                fail_msg("counter %s does not end in _total", family);
            if (strcmp(type, "counter") != 0 && ends_with(family, "_total"))
                fail_msg("%s %s ends in _total", type, family);
            i++;
            continue;
        }
        assert_true(l[0] != '#');
        assert_true(family[0] != '\0');
        {
            /* name{labels} value, or name value: the family's name (a
             * summary's also with _count) */
            size_t fl = strlen(family);
            const char *rest = l + fl, *value;
            char *end;

            if (strncmp(l, family, fl) != 0)
                fail_msg("sample of another family under %s: %s", family, l);
            if (strcmp(type, "summary") == 0 && strncmp(rest, "_count ", 7) == 0)
                rest += 6;
            if (*rest == '{') {
                rest = strstr(rest, "} ");
                assert_non_null(rest);
                rest++;
            }
            if (*rest != ' ')
                fail_msg("sample of another family under %s: %s", family, l);
            value = rest + 1;
            (void)strtod(value, &end);
            if (end == value || *end != '\0')
                fail_msg("not a number: %s", l);
        }
    }
}

static size_t format(const kw_stats_t *s, const kw_stats_partition_t *p, size_t np,
                     char **buf, char **lines)
{
    size_t need = kw_stats_format_prometheus(s, p, np, NULL, 0);

    *buf = malloc(need + 1);
    assert_non_null(*buf);
    assert_int_equal(kw_stats_format_prometheus(s, p, np, *buf, need + 1), need);
    assert_int_equal(strlen(*buf), need);
    assert_true(need > 0 && (*buf)[need - 1] == '\n');
    return split_lines(*buf, lines, MAX_LINES);
}

/* Nothing measured yet: every family there, no unknown value as a sample. */
static void test_fresh(void **state)
{
    static char *lines[MAX_LINES];
    kw_stats_t s;
    char *buf;
    size_t n;

    (void)state;
    kw_stats_init(&s, "direct");
    n = format(&s, NULL, 0, &buf, lines);
    check_structure(lines, n);
    assert_string_equal(lines[0], "# HELP kwal_info The mode this process runs in (always 1).");
    assert_string_equal(lines[1], "# TYPE kwal_info gauge");
    assert_string_equal(lines[2], "kwal_info{mode=\"direct\"} 1");
    assert_true(has_line(lines, n, "kwal_records_stored_total 0"));
    assert_true(has_line(lines, n, "kwal_uptime_seconds 0.000"));
    /* -1 is "not known": the family stays, the sample does not */
    assert_true(has_line(lines, n, "# TYPE kwal_recovery_seconds gauge"));
    assert_false(has_prefix(lines, n, "kwal_recovery_seconds "));
    assert_true(has_line(lines, n, "# TYPE kwal_wal_replicas_healthy gauge"));
    assert_false(has_prefix(lines, n, "kwal_wal_replicas_healthy "));
    assert_false(has_prefix(lines, n, "kwal_first_stored_seconds "));
    assert_false(has_prefix(lines, n, "kwal_instances "));
    /* empty summaries: _count 0 only */
    assert_true(has_line(lines, n, "# TYPE kwal_latency_seconds summary"));
    assert_true(has_line(lines, n, "kwal_latency_seconds_count 0"));
    assert_false(has_prefix(lines, n, "kwal_latency_seconds{"));
    assert_true(has_line(lines, n, "kwal_batch_duration_seconds_count 0"));
    assert_true(has_line(lines, n, "kwal_wal_fsync_duration_seconds_count 0"));
    assert_false(has_prefix(lines, n, "kwal_wal_fsync_duration_seconds{"));
    /* no partitions: the families, no samples */
    assert_true(has_line(lines, n, "# TYPE kwal_partition_lag gauge"));
    assert_false(has_prefix(lines, n, "kwal_partition_"));
    for (size_t i = 0; i < n; i++)
        if (strstr(lines[i], "NaN") != NULL || strstr(lines[i], " -1") != NULL)
            fail_msg("an unknown value as a sample: %s", lines[i]);
    free(buf);
}

static void test_values(void **state)
{
    static char *lines[MAX_LINES];
    kw_hist_t *h = calloc(1, sizeof(*h));
    kw_hist_summary_t sum;
    kw_stats_t s;
    char *buf;
    size_t n;

    (void)state;
    assert_non_null(h);
    kw_stats_init(&s, "receive");
    s.started_ms = 1765000000123;
    s.uptime_ms = 12345;
    s.records_stored = 18446744073709551615ull;     /* the largest counter */
    s.records_received = 42;
    s.duplicate_deliveries = 7;
    s.wal_bytes = 1048576;
    s.wal_fsyncs = 9;
    s.wal_replicas_healthy = 3;
    s.recovery_ms = 5;
    s.recovery_classic = 1;
    s.first_stored_ms = 1000;
    s.partitions_owned = 8;
    s.owner_changes = 16;
    s.batches_fenced = 2;
    s.instances = 2;
    /* latency: 100 values, 1..98 ms, 700 and 123456 (test_common's numbers) */
    kw_hist_init(h);
    for (int64_t v = 1; v <= 98; v++)
        kw_hist_add(h, v, 1);
    kw_hist_add(h, 700, 1);
    kw_hist_add(h, 123456, 1);
    kw_hist_summarize(h, &sum);
    kw_stats_set_latency(&s, &sum);
    /* batches: 3 of 20 ms */
    kw_hist_init(h);
    kw_hist_add(h, 20, 3);
    kw_hist_summarize(h, &s.batch_ms);
    /* fsyncs: 123 us and 2.5 ms */
    kw_hist_init(h);
    kw_hist_add(h, 123, 1);
    kw_hist_add(h, 2500, 1);
    kw_hist_summarize(h, &s.wal_fsync_us);

    n = format(&s, NULL, 0, &buf, lines);
    check_structure(lines, n);
    assert_true(has_line(lines, n, "kwal_info{mode=\"receive\"} 1"));
    assert_true(has_line(lines, n, "kwal_start_time_seconds 1765000000.123"));
    assert_true(has_line(lines, n, "kwal_uptime_seconds 12.345"));
    assert_true(has_line(lines, n, "kwal_records_stored_total 18446744073709551615"));
    assert_true(has_line(lines, n, "kwal_records_received_total 42"));
    assert_true(has_line(lines, n, "kwal_duplicate_deliveries_total 7"));
    assert_true(has_line(lines, n, "kwal_wal_written_bytes_total 1048576"));
    assert_true(has_line(lines, n, "kwal_wal_fsyncs_total 9"));
    assert_true(has_line(lines, n, "kwal_wal_replicas_healthy 3"));
    assert_true(has_line(lines, n, "kwal_recovery_seconds 0.005"));
    assert_true(has_line(lines, n, "kwal_recovery_classic 1"));
    assert_true(has_line(lines, n, "kwal_first_stored_seconds 1.000"));
    assert_true(has_line(lines, n, "kwal_partitions_owned 8"));
    assert_true(has_line(lines, n, "kwal_owner_changes_total 16"));
    assert_true(has_line(lines, n, "kwal_batches_fenced_total 2"));
    assert_true(has_line(lines, n, "kwal_instances 2"));
    /* kw_hist's nearest ranks (test_common): 50, 91, 703 ms; max exact */
    assert_true(has_line(lines, n, "kwal_latency_seconds{quantile=\"0.5\"} 0.050"));
    assert_true(has_line(lines, n, "kwal_latency_seconds{quantile=\"0.9\"} 0.091"));
    assert_true(has_line(lines, n, "kwal_latency_seconds{quantile=\"0.99\"} 0.703"));
    assert_true(has_line(lines, n, "kwal_latency_seconds{quantile=\"1\"} 123.456"));
    assert_true(has_line(lines, n, "kwal_latency_seconds_count 100"));
    assert_true(has_line(lines, n, "kwal_batch_duration_seconds{quantile=\"0.5\"} 0.020"));
    assert_true(has_line(lines, n, "kwal_batch_duration_seconds_count 3"));
    /* microseconds as seconds: p50 is 123 us (its bucket, 122..123, ends
     * there), the maximum 2.5 ms */
    assert_true(has_line(lines, n, "kwal_wal_fsync_duration_seconds{quantile=\"0.5\"} 0.000123"));
    assert_true(has_line(lines, n, "kwal_wal_fsync_duration_seconds{quantile=\"1\"} 0.002500"));
    assert_true(has_line(lines, n, "kwal_wal_fsync_duration_seconds_count 2"));
    free(buf);
    free(h);
}

static void test_partitions(void **state)
{
    static char *lines[MAX_LINES];
    kw_stats_partition_t p[4];
    kw_stats_t s;
    char *buf;
    size_t n;

    (void)state;
    memset(p, 0, sizeof(p));
    /* known both ways: lag 5 */
    snprintf(p[0].topic, sizeof(p[0].topic), "orders");
    p[0].partition = 0;
    p[0].owned = 1;
    p[0].position = 10;
    p[0].high = 15;
    /* a name to escape; nothing stored yet: no position, no lag */
    snprintf(p[1].topic, sizeof(p[1].topic), "a\"b\\c\nd");
    p[1].partition = 3;
    p[1].owned = 1;
    p[1].position = -1;
    p[1].high = 7;
    /* the high watermark seen is behind the position: lag 0 */
    snprintf(p[2].topic, sizeof(p[2].topic), "orders");
    p[2].partition = 1;
    p[2].owned = 1;
    p[2].position = 20;
    p[2].high = 19;
    /* not owned: nothing known */
    snprintf(p[3].topic, sizeof(p[3].topic), "orders");
    p[3].partition = 2;
    p[3].owned = 0;
    p[3].position = -1;
    p[3].high = -1;
    kw_stats_init(&s, "direct");
    n = format(&s, p, 4, &buf, lines);
    check_structure(lines, n);

    assert_true(has_line(lines, n, "kwal_partition_owned{topic=\"orders\",partition=\"0\"} 1"));
    assert_true(has_line(lines, n, "kwal_partition_owned{topic=\"orders\",partition=\"2\"} 0"));
    assert_true(has_line(lines, n, "kwal_partition_position{topic=\"orders\",partition=\"0\"} 10"));
    assert_true(has_line(lines, n,
                         "kwal_partition_high_watermark{topic=\"orders\",partition=\"0\"} 15"));
    assert_true(has_line(lines, n, "kwal_partition_lag{topic=\"orders\",partition=\"0\"} 5"));
    assert_true(has_line(lines, n, "kwal_partition_lag{topic=\"orders\",partition=\"1\"} 0"));
    /* escaped: a"b\c<LF>d is a\"b\\c\nd */
    assert_true(has_line(lines, n,
                         "kwal_partition_owned{topic=\"a\\\"b\\\\c\\nd\",partition=\"3\"} 1"));
    assert_true(has_line(lines, n,
                         "kwal_partition_high_watermark{topic=\"a\\\"b\\\\c\\nd\",partition=\"3\"} 7"));
    assert_false(has_prefix(lines, n, "kwal_partition_position{topic=\"a\\\""));
    assert_false(has_prefix(lines, n, "kwal_partition_lag{topic=\"a\\\""));
    assert_false(has_prefix(lines, n, "kwal_partition_position{topic=\"orders\",partition=\"2\"}"));
    assert_false(has_prefix(lines, n, "kwal_partition_lag{topic=\"orders\",partition=\"2\"}"));
    /* the samples of one family follow each other, in the order given */
    for (size_t i = 0; i + 3 < n; i++)
        if (strcmp(lines[i], "# TYPE kwal_partition_owned gauge") == 0) {
            assert_string_equal(lines[i + 1],
                                "kwal_partition_owned{topic=\"orders\",partition=\"0\"} 1");
            assert_int_equal(strncmp(lines[i + 2], "kwal_partition_owned{topic=\"a", 29), 0);
            assert_string_equal(lines[i + 3],
                                "kwal_partition_owned{topic=\"orders\",partition=\"1\"} 1");
        }
    free(buf);
}

/* As snprintf: the full length whatever the cap; what fits, NUL-terminated. */
static void test_cut(void **state)
{
    kw_stats_partition_t p;
    kw_stats_t s;
    size_t need;
    char *full, *cut;

    (void)state;
    memset(&p, 0, sizeof(p));
    snprintf(p.topic, sizeof(p.topic), "t\"x");
    p.owned = 1;
    p.position = 1;
    p.high = 2;
    kw_stats_init(&s, "receive");
    need = kw_stats_format_prometheus(&s, &p, 1, NULL, 0);
    full = malloc(need + 1);
    cut = malloc(need + 1);
    assert_non_null(full);
    assert_non_null(cut);
    assert_int_equal(kw_stats_format_prometheus(&s, &p, 1, full, need + 1), need);
    for (size_t cap = 1; cap <= need; cap += cap < 64 ? 1 : 97) {
        memset(cut, 'X', need + 1);
        assert_int_equal(kw_stats_format_prometheus(&s, &p, 1, cut, cap), need);
        assert_int_equal(strlen(cut), cap - 1);
        assert_memory_equal(cut, full, cap - 1);
    }
    free(full);
    free(cut);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fresh),
        cmocka_unit_test(test_values),
        cmocka_unit_test(test_partitions),
        cmocka_unit_test(test_cut),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
