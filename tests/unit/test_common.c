/*
 * test_common.c -- common/'s small helpers: durable file replacement
 * (kw_file.h), statistics as JSON (kw_stats.h; the latency fields filled
 * from a histogram, which has test_hist.c) and the clock's deadlines
 * (kw_time.h). The configuration table has its own test_conf.c.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kw_file.h"
#include "kw_hist.h"
#include "kw_instance.h"
#include "kw_stats.h"
#include "kw_time.h"
#include "test_util.h"

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    static char buf[8192];
    size_t n;

    if (f == NULL)
        return NULL;
    n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* Only PATH is left in the directory: no temporary file. */
static int entries(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;

    assert_non_null(d);
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            n++;
    closedir(d);
    return n;
}

static void test_file_replace(void **state)
{
    char *dir = test_tmpdir_new("common");
    char path[512], bad[600], why[256];

    (void)state;
    snprintf(path, sizeof(path), "%s/f", dir);
    assert_int_equal(kw_file_replace(path, "one\n", 4, why, sizeof(why)), 0);
    assert_string_equal(slurp(path), "one\n");
    assert_int_equal(kw_file_replace(path, "second\n", 7, why, sizeof(why)), 0);
    assert_string_equal(slurp(path), "second\n");
    assert_int_equal(entries(dir), 1);
    assert_int_equal(kw_file_replace(path, "", 0, NULL, 0), 0);
    assert_string_equal(slurp(path), "");

    /* a directory that does not exist: -1, errno, errstr names the file,
     * nothing left behind */
    snprintf(bad, sizeof(bad), "%s/no/such/dir/f", dir);
    why[0] = '\0';
    assert_int_equal(kw_file_replace(bad, "x", 1, why, sizeof(why)), -1);
    assert_int_equal(errno, ENOENT);
    assert_non_null(strstr(why, "no/such/dir/f"));
    /* a target that is a directory: the rename fails, the old stays */
    snprintf(bad, sizeof(bad), "%s/d", dir);
    assert_int_equal(mkdir(bad, 0700), 0);
    assert_int_equal(kw_file_replace(bad, "x", 1, why, sizeof(why)), -1);
    assert_non_null(strstr(why, "rename"));
    assert_int_equal(entries(dir), 2);        /* f and d, no temporary */
    assert_int_equal(kw_file_fsync_parent(path), 0);
    assert_int_equal(kw_file_fsync_parent("relative-name"), 0);
    {
        char parent[8];

        assert_string_equal(kw_file_parent("a/b/out.db", parent, sizeof(parent)), "out.db");
        assert_string_equal(parent, "a/b");
        assert_string_equal(kw_file_parent("out.db", parent, sizeof(parent)), "out.db");
        assert_string_equal(parent, ".");
        assert_string_equal(kw_file_parent("/out.db", parent, sizeof(parent)), "out.db");
        assert_string_equal(parent, "/");
        assert_null(kw_file_parent("abcdefgh/x", parent, sizeof(parent)));
    }
    test_rmtree(dir);
    free(dir);
}

/* Every key of the documented format, once, in order, with its value. */
static void test_mkdirs(void **state)
{
    char *dir = test_tmpdir_new("mkdirs");
    char path[600], file[700];
    struct stat st;
    int made = -1;

    (void)state;
    snprintf(path, sizeof(path), "%s/a/b/c/", dir);
    assert_int_equal(kw_file_mkdirs(path, 0755, &made), 0);
    assert_int_equal(made, 1);
    snprintf(path, sizeof(path), "%s/a/b/c", dir);
    assert_int_equal(stat(path, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(kw_file_mkdirs(path, 0755, &made), 0);   /* exists */
    assert_int_equal(made, 0);
    snprintf(file, sizeof(file), "%s/f", path);
    assert_int_equal(kw_file_replace(file, "x", 1, NULL, 0), 0);
    snprintf(path, sizeof(path), "%s/a/b/c/f/d", dir);          /* under a file */
    assert_int_equal(kw_file_mkdirs(path, 0755, NULL), -1);
    assert_int_equal(errno, ENOTDIR);
    assert_int_equal(kw_file_mkdirs("", 0755, NULL), -1);
    test_rmtree(dir);
    free(dir);
}

static void test_stats_json(void **state)
{
    static const char *const keys[] = {
        "version", "mode", "final", "pid", "started_ms", "uptime_ms", "records_received",
        "records_delivered", "records_stored", "duplicate_deliveries", "batches",
        "source_loss_events", "source_loss_records", "blocks_durable", "blocks_replayed",
        "records_replayed", "blocks_lost", "records_lost", "recovery_ms", "recovery_classic",
        "wal_bytes", "wal_fsyncs", "wal_replicas_healthy", "zk_writes", "receiver_restarts",
        "partitions_owned", "first_assignment_ms", "first_stored_ms", "wal_segments_cleaned",
        "partitions_assigned_stored", "partitions_assigned_reset", "partitions_revoked",
        "blocks_offsets_stored", "blocks_fenced", "pauses", "quorum_pauses", "end_advances",
        "zk_retries", "recovery_blocks_registered", "recovery_tracker_rebuilt", "recovery_partitions_moved", "wal_torn_tails", "wal_corrupt_records", "partitions_busy", "short_reads", "zk_failures",
        "zk_session_resumed", "zk_session_ms", "zk_owner_nodes_inherited",
        "zk_owner_nodes_released", "recovery_wal_open_ms", "recovery_tracker_ms",
        "recovery_replay_ms", "recovery_zk_ms", "latency_records", "latency_ms_p50",
        "latency_ms_p90", "latency_ms_p99", "latency_ms_max", "batch_ms_count",
        "batch_ms_p50", "batch_ms_p90", "batch_ms_p99", "batch_ms_max", "wal_fsync_us_count",
        "wal_fsync_us_p50", "wal_fsync_us_p90", "wal_fsync_us_p99", "wal_fsync_us_max",
        "owner_changes", "instances", "metrics_port", "batches_fenced", NULL
    };
    char *dir = test_tmpdir_new("stats");
    char path[512], why[256], buf[8192], key[64];
    const char *p;
    kw_stats_t s;
    kw_hist_t *h = calloc(1, sizeof(*h));
    kw_hist_summary_t sum;
    size_t n;

    (void)state;
    assert_non_null(h);
    kw_stats_init(&s, "receive");
    assert_int_equal(s.recovery_ms, -1);
    assert_int_equal(s.first_stored_ms, -1);
    /* nothing measured: 0 records, -1 for every time */
    n = kw_stats_format_json(&s, buf, sizeof(buf));
    assert_true(n < sizeof(buf));
    assert_non_null(strstr(buf, "\"recovery_zk_ms\":-1,\"latency_records\":0,"
                                "\"latency_ms_p50\":-1,\"latency_ms_p90\":-1,"
                                "\"latency_ms_p99\":-1,\"latency_ms_max\":-1,"
                                "\"batch_ms_count\":0,\"batch_ms_p50\":-1,"
                                "\"batch_ms_p90\":-1,\"batch_ms_p99\":-1,"
                                "\"batch_ms_max\":-1,\"wal_fsync_us_count\":0,"
                                "\"wal_fsync_us_p50\":-1,\"wal_fsync_us_p90\":-1,"
                                "\"wal_fsync_us_p99\":-1,\"wal_fsync_us_max\":-1,"
                                "\"owner_changes\":0,\"instances\":-1,"
                                "\"metrics_port\":0,\"batches_fenced\":0}\n"));
    kw_hist_init(h);
    kw_hist_summarize(h, &sum);
    kw_stats_set_latency(&s, &sum);
    assert_int_equal(s.latency_records, 0);
    assert_int_equal(s.latency_ms_p50, -1);
    assert_int_equal(s.latency_ms_max, -1);
    /* 100 records: 1..98 ms, one of 700 ms and one of 123456 ms */
    for (int64_t v = 1; v <= 98; v++)
        kw_hist_add(h, v, 1);
    kw_hist_add(h, 700, 1);
    kw_hist_add(h, 123456, 1);
    kw_hist_summarize(h, &sum);
    kw_stats_set_latency(&s, &sum);
    s.records_stored = 18446744073709551615ull;    /* the largest counter */
    s.duplicate_deliveries = 7;
    s.final = 1;
    n = kw_stats_format_json(&s, buf, sizeof(buf));
    assert_true(n < sizeof(buf));
    assert_int_equal(buf[0], '{');
    assert_int_equal(buf[n - 1], '\n');
    assert_int_equal(buf[n - 2], '}');
    p = buf;
    for (int i = 0; keys[i] != NULL; i++) {
        snprintf(key, sizeof(key), "\"%s\":", keys[i]);
        p = strstr(p, key);
        if (p == NULL)
            fail_msg("key %s missing or out of order in %s", keys[i], buf);
    }
    assert_non_null(strstr(buf, "\"mode\":\"receive\""));
    assert_non_null(strstr(buf, "\"final\":true"));
    assert_non_null(strstr(buf, "\"records_stored\":18446744073709551615,"));
    assert_non_null(strstr(buf, "\"duplicate_deliveries\":7,"));
    assert_non_null(strstr(buf, "\"recovery_ms\":-1,"));
    assert_non_null(strstr(buf, "\"first_stored_ms\":-1,"));
    assert_non_null(strstr(buf, "\"zk_failures\":0,"));
    assert_non_null(strstr(buf, "\"zk_session_ms\":-1,"));
    assert_non_null(strstr(buf, "\"recovery_zk_ms\":-1,"));
    /* p50 exact (below 64 ms); p90 and p99 the upper ends of the buckets of
     * 90 (90..91) and 700 (688..703) */
    assert_non_null(strstr(buf, "\"latency_records\":100,\"latency_ms_p50\":50,"
                                "\"latency_ms_p90\":91,\"latency_ms_p99\":703,"
                                "\"latency_ms_max\":123456,"));
    assert_non_null(strstr(buf, "\"metrics_port\":0,\"batches_fenced\":0}\n"));
    /* a buffer too small says how much it needs, wherever it is cut */
    assert_int_equal(kw_stats_format_json(&s, buf, 10), n);
    assert_int_equal(kw_stats_format_json(&s, buf, n - 20), n);

    snprintf(path, sizeof(path), "%s/stats.json", dir);
    assert_int_equal(kw_stats_write_json(&s, path, why, sizeof(why)), 0);
    kw_stats_format_json(&s, buf, sizeof(buf));
    assert_string_equal(slurp(path), buf);
    test_rmtree(dir);
    free(dir);
    free(h);
}

/* kw_instance: one process (here: one open file) per state; the default
 * name is stable across spellings of the path and before/after creation. */
static void test_instance(void **state)
{
    char *dir = test_tmpdir_new("instance");
    char wal[256], other[256], db[256], why[1024], pid[64], a[256], b[256], c[256];
    kw_instance_t *one = NULL, *two = NULL;
    FILE *f;

    (void)state;
    snprintf(wal, sizeof(wal), "%s/wal", dir);
    snprintf(other, sizeof(other), "%s/wal2", dir);
    snprintf(db, sizeof(db), "%s/out.db", dir);

    /* the name first (the directory does not exist yet), then again */
    kw_instance_default_name(wal, a, sizeof(a));
    assert_int_equal(kw_instance_lock(wal, "instance", "wal.dirs", &one, why, sizeof(why)),
                     KW_OK);
    kw_instance_default_name(wal, b, sizeof(b));
    assert_string_equal(a, b);
    snprintf(why, sizeof(why), "%s/", wal);
    kw_instance_default_name(why, b, sizeof(b));
    assert_string_equal(a, b);
    kw_instance_default_name(other, c, sizeof(c));
    assert_string_not_equal(a, c);
    assert_non_null(strchr(a, '-'));
    assert_int_equal(strlen(strrchr(a, '-') + 1), 16);

    snprintf(why, sizeof(why), "%s/instance.zk-session", wal);
    assert_string_equal(kw_instance_session_file(one), why);

    /* a second holder is refused, naming the first one's pid */
    assert_int_equal(kw_instance_lock(wal, "instance", "wal.dirs", &two, why, sizeof(why)),
                     KW_ELOCKED);
    assert_null(two);
    snprintf(pid, sizeof(pid), "pid %ld", (long)getpid());
    assert_non_null(strstr(why, pid));
    assert_non_null(strstr(why, "wal.dirs"));
    /* another stem in the same directory is another instance */
    assert_int_equal(kw_instance_lock(wal, "other", "sink", &two, why, sizeof(why)), KW_OK);
    kw_instance_unlock(two);
    kw_instance_unlock(one);
    assert_int_equal(kw_instance_lock(wal, "instance", "wal.dirs", &two, why, sizeof(why)),
                     KW_OK);
    kw_instance_unlock(two);
    kw_instance_unlock(NULL);

    /* a database: the same name before and after it exists */
    kw_instance_default_name(db, a, sizeof(a));
    f = fopen(db, "w");
    assert_non_null(f);
    fclose(f);
    kw_instance_default_name(db, b, sizeof(b));
    assert_string_equal(a, b);

    /* a directory that cannot be made */
    snprintf(other, sizeof(other), "%s/out.db/sub", dir);
    assert_int_equal(kw_instance_lock(other, "instance", "wal.dirs", &one, why, sizeof(why)),
                     KW_EIO);
    assert_null(one);
    assert_non_null(strstr(why, "cannot create"));
    test_rmtree(dir);
    free(dir);
}

static void test_deadline(void **state)
{
    struct timespec now, d;

    (void)state;
    clock_gettime(CLOCK_MONOTONIC, &now);
    d = kw_deadline_ts(CLOCK_MONOTONIC, 1999);
    assert_true(d.tv_nsec >= 0 && d.tv_nsec < 1000000000L);
    {
        int64_t ms = (int64_t)(d.tv_sec - now.tv_sec) * 1000 + (d.tv_nsec - now.tv_nsec) / 1000000;

        assert_true(ms >= 1999 && ms <= 2100);
    }
    assert_true(kw_mono_ns() / 1000000 >= (uint64_t)kw_mono_ms() - 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_file_replace),
        cmocka_unit_test(test_mkdirs),
        cmocka_unit_test(test_stats_json),
        cmocka_unit_test(test_instance),
        cmocka_unit_test(test_deadline),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
