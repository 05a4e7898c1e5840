/*
 * test_conf.c -- the configuration table (common/kw_conf.h): defaults, every
 * value type, range checks, the error messages that name file:line and key,
 * -X overrides after the file, kafka.* pass-through, and that the printed
 * configuration loads back to the same values.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "kw_conf.h"

static char *write_tmp(const char *text)
{
    char *path = strdup("/tmp/kwal-conf-XXXXXX");
    int fd = mkstemp(path);

    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

static void test_defaults(void **state)
{
    kw_conf_t *c;
    char err[256];

    (void)state;
    assert_int_equal(kw_conf_new(&c, err, sizeof(err)), KW_OK);
    assert_int_equal(c->wal.dirs.count, 1);
    assert_int_equal(c->wal.write_quorum, 0);
    assert_int_equal(c->wal.segment_bytes, 64ull << 20);
    assert_int_equal(c->wal.segment_ms, 60000);
    assert_int_equal(c->wal.max_pending_bytes, 256ull << 20);
    assert_int_equal(c->wal.compress, 1);
    assert_int_equal(c->nkafka, 0);
    assert_false(kw_conf_is_set(c, "wal.dirs"));
    kw_conf_destroy(c);
    kw_conf_destroy(NULL);
}

static void test_types_and_overrides(void **state)
{
    const char *over[] = { "wal.write.quorum=2", "kafka.fetch.max.bytes=1048576" };
    char *path = write_tmp("# a comment\n"
                           "\n"
                           "  wal.dirs = /d1, /d2 ,/d3  \n"
                           "wal.write.quorum=1\n"
                           "wal.segment.bytes=8M\n"
                           "wal.compress=off\n"
                           "kafka.sasl.password=a#b=c\n"
                           "kafka.fetch.max.bytes=1\n"
                           "log.level=debug\n");
    kw_conf_t *c;
    char err[256];

    (void)state;
    assert_int_equal(kw_conf_load(path, over, 2, &c, err, sizeof(err)), KW_OK);
    assert_int_equal(c->wal.dirs.count, 3);
    assert_string_equal(c->wal.dirs.items[0], "/d1");
    assert_string_equal(c->wal.dirs.items[1], "/d2");
    assert_string_equal(c->wal.dirs.items[2], "/d3");
    assert_int_equal(c->wal.write_quorum, 2);          /* -X after the file */
    assert_int_equal(c->wal.segment_bytes, 8ull << 20);
    assert_int_equal(c->wal.compress, 0);
    assert_int_equal(c->log.level, 3);
    assert_true(kw_conf_is_set(c, "wal.dirs"));
    assert_false(kw_conf_is_set(c, "wal.segment.ms"));
    assert_int_equal(c->nkafka, 2);
    for (size_t i = 0; i < c->nkafka; i++) {
        if (strcmp(c->kafka[i].key, "sasl.password") == 0)
            assert_string_equal(c->kafka[i].value, "a#b=c");
        else if (strcmp(c->kafka[i].key, "fetch.max.bytes") == 0)
            assert_string_equal(c->kafka[i].value, "1048576");
        else
            fail_msg("unexpected kafka key %s", c->kafka[i].key);
    }
    kw_conf_destroy(c);
    unlink(path);
    free(path);
}

/* Each bad line is an error naming file:line and the key; nothing loads. */
static void test_errors_name_the_key(void **state)
{
    static const struct { const char *line; const char *key; } bad[] = {
        { "wal.write.quorum=x", "wal.write.quorum" },
        { "wal.write.quorum=17", "wal.write.quorum" },
        { "wal.write.quorum=-1", "wal.write.quorum" },
        { "wal.segment.bytes=12Q", "wal.segment.bytes" },
        { "wal.compress=maybe", "wal.compress" },
        { "log.level=loud", "log.level" },
        { "wal.dirs=", "wal.dirs" },
        { "wal.dirz=/x", "wal.dirz" },
        { "sink.kafka.=1", "sink.kafka." },
        { "no equals sign", "" },
    };

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char text[256], err[512], *path;
        kw_conf_t *c = NULL;

        snprintf(text, sizeof(text), "wal.segment.ms=1000\n%s\n", bad[i].line);
        path = write_tmp(text);
        assert_int_equal(kw_conf_load(path, NULL, 0, &c, err, sizeof(err)), KW_ECONFIG);
        assert_null(c);
        assert_non_null(strstr(err, path));
        assert_non_null(strstr(err, ":2:"));
        assert_non_null(strstr(err, bad[i].key));
        unlink(path);
        free(path);
    }
}

static void test_missing_file(void **state)
{
    kw_conf_t *c = NULL;
    char err[256];

    (void)state;
    assert_int_equal(kw_conf_load("/nonexistent/kwal.conf", NULL, 0, &c, err, sizeof(err)),
                     KW_EIO);
    assert_non_null(strstr(err, "/nonexistent/kwal.conf"));
}

/* What kw_conf_print writes is a config file that loads to the same values. */
static void test_print_round_trip(void **state)
{
    const char *over[] = { "wal.dirs=/a,/b", "wal.segment.bytes=3M", "wal.compress=false",
                           "kafka.client.id=x y", "sink.kafka.linger.ms=20",
                           "sink.kafka.linger.ms=30" };
    kw_conf_t *c, *d;
    char err[256], *path = strdup("/tmp/kwal-conf-XXXXXX");
    size_t n;
    const kw_conf_prop_t *props = kw_conf_props(&n);
    FILE *f;
    int fd;

    (void)state;
    assert_int_equal(kw_conf_load(NULL, over, 6, &c, err, sizeof(err)), KW_OK);
    /* sink.kafka.* apart from kafka.*, prefix removed, the last value kept */
    assert_int_equal(c->nkafka, 1);
    assert_int_equal(c->nsink_kafka, 1);
    assert_string_equal(c->sink_kafka[0].key, "linger.ms");
    assert_string_equal(c->sink_kafka[0].value, "30");
    fd = mkstemp(path);
    assert_true(fd >= 0);
    f = fdopen(fd, "w");
    kw_conf_print(c, f);
    fclose(f);
    assert_int_equal(kw_conf_load(path, NULL, 0, &d, err, sizeof(err)), KW_OK);
    for (size_t i = 0; i < n; i++) {
        char a[256], b[256];

        kw_conf_format(c, &props[i], a, sizeof(a));
        kw_conf_format(d, &props[i], b, sizeof(b));
        assert_string_equal(a, b);
    }
    assert_int_equal(d->nkafka, 1);
    assert_string_equal(d->kafka[0].value, "x y");
    assert_int_equal(d->nsink_kafka, 1);
    assert_string_equal(d->sink_kafka[0].value, "30");
    kw_conf_destroy(c);
    kw_conf_destroy(d);
    unlink(path);
    free(path);
}

static void test_sizes(void **state)
{
    uint64_t v;

    (void)state;
    assert_int_equal(kw_conf_parse_size("4096", &v), KW_OK);
    assert_int_equal(v, 4096);
    assert_int_equal(kw_conf_parse_size("64M", &v), KW_OK);
    assert_int_equal(v, 64ull << 20);
    assert_int_equal(kw_conf_parse_size("1GiB", &v), KW_OK);
    assert_int_equal(v, 1ull << 30);
    assert_int_equal(kw_conf_parse_size("99999999999T", &v), KW_EINVAL);
    assert_int_equal(kw_conf_parse_size("", &v), KW_EINVAL);
    assert_int_equal(kw_conf_parse_size("-1", &v), KW_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_types_and_overrides),
        cmocka_unit_test(test_errors_name_the_key),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_print_round_trip),
        cmocka_unit_test(test_sizes),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
