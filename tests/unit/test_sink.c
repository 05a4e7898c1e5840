/*
 * test_sink.c -- the sinks (sink/sink.h): spec parsing; the sqlite sink's
 * schema (exactly DESIGN.md's), its records read back with the sqlite3 API,
 * duplicate deliveries counted (invariant 3), replayed batches recognised,
 * reused batch ids stored record by record; the transactions of sink.h
 * (T1-T4: begin / write / put_range / commit or abort, the order, errors
 * ending the transaction, replays storing no range twice, the crash point
 * sink.mid-txn before COMMIT) and the ranges read back; the schema version
 * (set on a new database, an old one upgraded, a newer one refused); the
 * file sink's atomic naming and replay; the JSON lines envelope and its
 * escaping; the jsonl sink on stdout; the null sink; the end-to-end
 * latency of an acknowledged batch (kw_sink_latency_add).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sqlite3.h>

#include "kw_fault.h"
#include "sink.h"
#include "test_sink_util.h"
#include "test_util.h"

typedef struct tstate {
    char      *dir;
    kw_sink_t *sink;
} tstate_t;

static int setup(void **state)
{
    tstate_t *s = calloc(1, sizeof(*s));

    if (s == NULL || (s->dir = test_tmpdir_new("sink")) == NULL)
        return -1;
    *state = s;
    return 0;
}

static int teardown(void **state)
{
    tstate_t *s = *state;

    kw_sink_close(s->sink);
    test_rmtree(s->dir);
    free(s->dir);
    free(s);
    return 0;
}

static int64_t db_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st;
    int64_t v = -1;

    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    if (sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* NUL-terminate a JSON buffer (not counted in len) so it compares as a
 * string. */
static int buf_nul(kw_sink_buf_t *b)
{
    char *d = realloc(b->data, b->len + 1);

    if (d == NULL)
        return -1;
    d[b->len] = '\0';
    b->data = d;
    b->cap = b->len + 1;
    return 0;
}

static char *read_text(const char *path)
{
    uint8_t *data;
    size_t len;
    char *t;

    assert_int_equal(test_read_file(path, &data, &len), 0);
    t = malloc(len + 1);
    assert_non_null(t);
    if (len > 0)
        memcpy(t, data, len);
    t[len] = '\0';
    free(data);
    return t;
}

/* ---- Specs ---- */

static void test_specs(void **state)
{
    tstate_t *s = *state;
    static const char *const bad[] = {
        "", "sqlite", "sqlite:", "file", "file:", "jsonl:x", "null:", "kafka:x", "SQLITE:x"
    };
    kw_sink_t *k = NULL;
    char spec[700], err[512];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(kw_sink_open(bad[i], &k, err, sizeof(err)), KW_ECONFIG);
        assert_null(k);
        assert_non_null(strstr(err, "sink"));
    }
    assert_int_equal(kw_sink_open(NULL, &k, err, sizeof(err)), KW_ECONFIG);

    test_path(spec, sizeof(spec), "sqlite:%s/out.db", s->dir);
    k = sink_open_ok(spec);
    assert_int_equal(kw_sink_kind(k), KW_SINK_SQLITE);
    assert_string_equal(kw_sink_kind_name(k), "sqlite");
    assert_int_equal(kw_sink_ranges_supported(k), 1);
    kw_sink_close(k);
    test_path(spec, sizeof(spec), "file:%s/out", s->dir);
    k = sink_open_ok(spec);
    assert_int_equal(kw_sink_kind(k), KW_SINK_FILE);
    assert_int_equal(kw_sink_ranges_supported(k), 0);
    kw_sink_close(k);
    k = sink_open_ok("jsonl");
    assert_string_equal(kw_sink_kind_name(k), "jsonl");
    assert_int_equal(kw_sink_ranges_supported(k), 0);
    kw_sink_close(k);
    k = sink_open_ok("null");
    assert_int_equal(kw_sink_kind(k), KW_SINK_NULL);
    assert_int_equal(kw_sink_ranges_supported(k), 0);
    kw_sink_close(k);
    kw_sink_close(NULL);

    /* A database in a directory that does not exist: the directory is made. */
    test_path(spec, sizeof(spec), "sqlite:%s/no/such/out.db", s->dir);
    k = sink_open_ok(spec);
    kw_sink_close(k);
    /* One that cannot be made (a file on the way): KW_EIO with the path. */
    test_path(spec, sizeof(spec), "sqlite:%s/no/such/out.db/x/out.db", s->dir);
    assert_int_equal(kw_sink_open(spec, &k, err, sizeof(err)), KW_EIO);
    assert_non_null(strstr(err, spec + 7));
}

/* ---- sqlite ---- */

static void test_sqlite_schema_exact(void **state)
{
    tstate_t *s = *state;
    static const struct { const char *name, *type; int pk; } want[] = {
        { "topic", "TEXT", 1 }, { "partition", "INTEGER", 2 }, { "offset", "INTEGER", 3 },
        { "ts", "INTEGER", 0 }, { "key", "BLOB", 0 }, { "payload", "BLOB", 0 },
        { "batch", "INTEGER", 0 }
    };
    char path[700], spec[710];
    sqlite3 *db;
    sqlite3_stmt *st;
    int i = 0;

    test_path(path, sizeof(path), "%s/out.db", s->dir);
    test_path(spec, sizeof(spec), "sqlite:%s", path);
    s->sink = sink_open_ok(spec);
    kw_sink_close(s->sink);
    s->sink = NULL;

    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT name, type, pk FROM "
                                        "pragma_table_info('records') ORDER BY cid",
                                        -1, &st, NULL), SQLITE_OK);
    while (sqlite3_step(st) == SQLITE_ROW) {
        assert_true(i < 7);
        assert_string_equal((const char *)sqlite3_column_text(st, 0), want[i].name);
        assert_string_equal((const char *)sqlite3_column_text(st, 1), want[i].type);
        assert_int_equal(sqlite3_column_int(st, 2), want[i].pk);
        i++;
    }
    sqlite3_finalize(st);
    assert_int_equal(i, 7);
    /* The table is a rowid table with its primary key, as DESIGN.md writes it. */
    assert_int_equal(db_int(db, "SELECT COUNT(*) FROM sqlite_master WHERE name = "
                            "'records' AND sql LIKE '%PRIMARY KEY(topic, partition, "
                            "offset))' AND sql NOT LIKE '%WITHOUT ROWID%'"), 1);
    assert_int_equal(db_int(db, "SELECT COUNT(*) FROM pragma_table_info('batches') "
                            "WHERE name = 'id' AND pk = 1"), 1);
    /* direct_ranges as FORMAT.md gives it, created with the other tables. */
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT name, type, \"notnull\", pk FROM "
                                        "pragma_table_info('direct_ranges') ORDER BY cid",
                                        -1, &st, NULL), SQLITE_OK);
    {
        static const struct { const char *name; int pk; } dr[] = {
            { "batch", 1 }, { "topic", 2 }, { "partition", 3 }, { "from_offset", 0 },
            { "until_offset", 0 }
        };

        i = 0;
        while (sqlite3_step(st) == SQLITE_ROW) {
            assert_true(i < 5);
            assert_string_equal((const char *)sqlite3_column_text(st, 0), dr[i].name);
            assert_string_equal((const char *)sqlite3_column_text(st, 1),
                                i == 1 ? "TEXT" : "INTEGER");
            assert_int_equal(sqlite3_column_int(st, 2), 1);
            assert_int_equal(sqlite3_column_int(st, 3), dr[i].pk);
            i++;
        }
        sqlite3_finalize(st);
        assert_int_equal(i, 5);
    }
    assert_int_equal(db_int(db, "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' "
                            "AND name = 'direct_ranges_tp' AND tbl_name = "
                            "'direct_ranges'"), 1);
    assert_int_equal(db_int(db, "PRAGMA user_version"), KW_SINK_SQLITE_SCHEMA_VERSION);
    assert_int_equal(KW_SINK_SQLITE_SCHEMA_VERSION, 1);
    sqlite3_close(db);

    /* Reopening an existing output keeps it. */
    s->sink = sink_open_ok(spec);
}

static void test_sqlite_store_and_read_back(void **state)
{
    tstate_t *s = *state;
    static const unsigned char bin[5] = { 0x00, 0xFF, 0x0A, 0x22, 0x00 };
    kw_record_t r[3];
    kw_sink_stats_t st;
    char path[700], spec[710];
    sqlite3 *db;
    sqlite3_stmt *q;

    test_path(path, sizeof(path), "%s/out.db", s->dir);
    test_path(spec, sizeof(spec), "sqlite:%s", path);
    s->sink = sink_open_ok(spec);

    r[0] = sink_rec("t", 0, 10, "hello");
    r[1] = sink_rec("t", 0, 11, NULL);          /* null payload */
    r[1].key = NULL;                       /* null key */
    r[1].tstype = KW_TS_NOT_AVAILABLE;
    r[1].timestamp = -1;
    r[2] = sink_rec("u", 3, 7, NULL);
    r[2].key = "";                         /* empty key */
    r[2].key_len = 0;
    r[2].value = bin;                      /* binary payload, NULs inside */
    r[2].value_len = sizeof(bin);
    st = sink_write_ok(s->sink, 1, r, 3);
    assert_int_equal(st.stored, 3);
    assert_int_equal(st.duplicates_delivered, 0);

    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT topic, partition, offset, ts, key, "
                                        "payload, batch, typeof(ts), typeof(key), "
                                        "typeof(payload) FROM records ORDER BY topic, "
                                        "partition, offset", -1, &q, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(q, 0), "t");
    assert_int_equal(sqlite3_column_int64(q, 2), 10);
    assert_int_equal(sqlite3_column_int64(q, 3), 1700000000010);
    assert_int_equal(sqlite3_column_bytes(q, 4), 1);
    assert_memory_equal(sqlite3_column_blob(q, 5), "hello", 5);
    assert_string_equal((const char *)sqlite3_column_text(q, 9), "blob");
    assert_int_equal(sqlite3_column_int64(q, 6), 1);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int64(q, 2), 11);
    assert_string_equal((const char *)sqlite3_column_text(q, 7), "null");
    assert_string_equal((const char *)sqlite3_column_text(q, 8), "null");
    assert_string_equal((const char *)sqlite3_column_text(q, 9), "null");
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(q, 0), "u");
    assert_int_equal(sqlite3_column_int(q, 1), 3);
    assert_string_equal((const char *)sqlite3_column_text(q, 8), "blob");
    assert_int_equal(sqlite3_column_bytes(q, 4), 0);
    assert_int_equal(sqlite3_column_bytes(q, 5), (int)sizeof(bin));
    assert_memory_equal(sqlite3_column_blob(q, 5), bin, sizeof(bin));
    assert_int_equal(sqlite3_step(q), SQLITE_DONE);
    sqlite3_finalize(q);
    assert_int_equal(db_int(db, "SELECT records * 100 + stored * 10 + duplicates "
                            "FROM batches WHERE id = 1"), 330);
    sqlite3_close(db);
}

static void test_sqlite_duplicates(void **state)
{
    tstate_t *s = *state;
    kw_record_t a[3], b[4], c[2];
    kw_sink_stats_t st;
    kw_sink_totals_t tot;
    char path[700], spec[710];
    sqlite3 *db;

    test_path(path, sizeof(path), "%s/out.db", s->dir);
    test_path(spec, sizeof(spec), "sqlite:%s", path);
    s->sink = sink_open_ok(spec);
    for (int i = 0; i < 3; i++)
        a[i] = sink_rec("t", 0, i, "v");
    st = sink_write_ok(s->sink, 1, a, 3);
    assert_int_equal(st.stored, 3);

    /* The same batch again (the tracker never heard of the commit): a replay,
     * recognised whole; nothing written. */
    st = sink_write_ok(s->sink, 1, a, 3);
    assert_int_equal(st.stored, 0);
    assert_int_equal(st.duplicates_delivered, 3);

    /* A new batch overlapping the old one (e.g. --classic mode re-consumes):
     * the overlap is counted, not stored twice. A record twice in one batch
     * too. */
    b[0] = sink_rec("t", 0, 2, "v");
    b[1] = sink_rec("t", 0, 3, "v");
    b[2] = sink_rec("t", 0, 3, "v");
    b[3] = sink_rec("t", 1, 0, "v");
    st = sink_write_ok(s->sink, 2, b, 4);
    assert_int_equal(st.stored, 2);
    assert_int_equal(st.duplicates_delivered, 2);

    /* Across a restart of the sink: batch 2 is still recognised. */
    kw_sink_close(s->sink);
    s->sink = sink_open_ok(spec);
    st = sink_write_ok(s->sink, 2, b, 4);
    assert_int_equal(st.stored, 0);
    assert_int_equal(st.duplicates_delivered, 4);

    /* A reused id with other records: stored record by record, never skipped. */
    test_log_capture_begin();
    c[0] = sink_rec("t", 5, 0, "new");
    c[1] = sink_rec("t", 0, 0, "old");
    st = sink_write_ok(s->sink, 1, c, 2);
    assert_int_equal(st.stored, 1);
    assert_int_equal(st.duplicates_delivered, 1);
    assert_int_equal(test_log_count(KW_LOG_WARN, "batch id reused"), 1);
    test_log_capture_end();

    kw_sink_get_totals(s->sink, &tot);
    assert_int_equal(tot.batches, 2);
    assert_int_equal(tot.batches_replayed, 1);
    assert_int_equal(tot.delivered, 6);
    assert_int_equal(tot.stored, 1);
    assert_int_equal(tot.duplicates_delivered, 5);
    assert_int_equal(tot.failures, 0);

    /* Invariant 3: every (topic, partition, offset) once. */
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(db_int(db, "SELECT COUNT(*) FROM records"), 6);
    assert_int_equal(db_int(db, "SELECT COUNT(*) FROM (SELECT DISTINCT topic, "
                            "partition, offset FROM records)"), 6);
    assert_int_equal(db_int(db, "SELECT batch FROM records WHERE partition = 5"), 1);
    sqlite3_close(db);
}

/* ---- Transactions (sink.h T1-T4) and ranges ---- */

static sqlite3 *db_open(const char *path)
{
    sqlite3 *db = NULL;

    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    return db;
}

/* The one text value of sql ("" for none; a static buffer). */
static const char *db_text(sqlite3 *db, const char *sql)
{
    static char out[512];
    sqlite3_stmt *st;

    out[0] = '\0';
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0) != NULL)
        snprintf(out, sizeof(out), "%s", (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    return out;
}

/* Every stored range as "batch:topic/partition[from,until)" in key order. */
#define RANGES_SQL "SELECT group_concat(r, ' ') FROM (SELECT batch || ':' || topic || " \
                   "'/' || partition || '[' || from_offset || ',' || until_offset || " \
                   "')' AS r FROM direct_ranges ORDER BY batch, topic, partition)"

static void txn_open_ok(kw_sink_t *k, uint64_t batch, const kw_record_t *r, size_t n)
{
    char err[512];

    if (kw_sink_txn_begin(k, batch, err, sizeof(err)) != KW_OK)
        fail_msg("begin %llu: %s", (unsigned long long)batch, err);
    if (kw_sink_txn_write(k, r, n, err, sizeof(err)) != KW_OK)
        fail_msg("write %llu: %s", (unsigned long long)batch, err);
}

static void put_ok(kw_sink_t *k, const char *topic, int32_t part, int64_t from,
                   int64_t until)
{
    char err[512];

    if (kw_sink_txn_put_range(k, topic, part, KW_SINK_RANGE_UNCHECKED,
                              from, until, err, sizeof(err)) != KW_OK)
        fail_msg("put_range %s/%d: %s", topic, (int)part, err);
}

static kw_sink_stats_t commit_ok(kw_sink_t *k)
{
    kw_sink_stats_t st;
    char err[512];

    if (kw_sink_txn_commit(k, &st, err, sizeof(err)) != KW_OK)
        fail_msg("commit: %s", err);
    return st;
}

static int64_t next_of(kw_sink_t *k, const char *topic, int32_t part)
{
    int64_t next = -2;
    char err[512];

    if (kw_sink_range_next(k, topic, part, &next, err, sizeof(err)) != KW_OK)
        fail_msg("range_next %s/%d: %s", topic, (int)part, err);
    return next;
}

static uint64_t last_batch_of(kw_sink_t *k)
{
    uint64_t b = 12345;
    char err[512];

    if (kw_sink_ranges_last_batch(k, &b, err, sizeof(err)) != KW_OK)
        fail_msg("ranges_last_batch: %s", err);
    return b;
}

static void test_txn_commit(void **state)
{
    tstate_t *s = *state;
    kw_record_t r[3] = { sink_rec("t", 0, 10, "a"), sink_rec("t", 0, 11, "b"), sink_rec("t", 1, 5, "c") };
    kw_record_t r2[1] = { sink_rec("t", 0, 12, "d") };
    kw_sink_stats_t st;
    kw_sink_totals_t tot;
    char path[700], spec[710];
    sqlite3 *db;

    test_path(path, sizeof(path), "%s/out.db", s->dir);
    test_path(spec, sizeof(spec), "sqlite:%s", path);
    s->sink = sink_open_ok(spec);
    assert_int_equal(next_of(s->sink, "t", 0), -1);
    assert_int_equal(last_batch_of(s->sink), 0);

    txn_open_ok(s->sink, 4, r, 3);
    put_ok(s->sink, "t", 0, 10, 12);
    put_ok(s->sink, "t", 1, 5, 6);
    /* T1: another connection sees nothing before commit. */
    db = db_open(path);
    assert_int_equal(db_int(db, "SELECT COUNT(*) FROM records"), 0);
    assert_int_equal(db_int(db, "SELECT COUNT(*) FROM direct_ranges"), 0);
    assert_int_equal(db_int(db, "SELECT COUNT(*) FROM batches"), 0);
    st = commit_ok(s->sink);
    assert_int_equal(st.delivered, 3);
    assert_int_equal(st.stored, 3);
    assert_int_equal(st.duplicates_delivered, 0);

    /* Records, the batches row and the ranges, all of batch 4. */
    assert_int_equal(db_int(db, "SELECT COUNT(*) FROM records WHERE batch = 4"), 3);
    assert_int_equal(db_int(db, "SELECT records * 100 + stored * 10 + duplicates "
                            "FROM batches WHERE id = 4"), 330);
    assert_string_equal(db_text(db, "SELECT first_topic || first_partition || '/' || "
                                "first_offset || ' ' || last_topic || last_partition || "
                                "'/' || last_offset FROM batches WHERE id = 4"),
                        "t0/10 t1/5");
    assert_string_equal(db_text(db, RANGES_SQL), "4:t/0[10,12) 4:t/1[5,6)");

    /* Read back: the highest until per partition, the highest batch. */
    assert_int_equal(next_of(s->sink, "t", 0), 12);
    assert_int_equal(next_of(s->sink, "t", 1), 6);
    assert_int_equal(next_of(s->sink, "t", 2), -1);
    assert_int_equal(next_of(s->sink, "u", 0), -1);
    assert_int_equal(last_batch_of(s->sink), 4);

    txn_open_ok(s->sink, 5, r2, 1);
    put_ok(s->sink, "t", 0, 12, 13);
    st = commit_ok(s->sink);
    assert_int_equal(st.stored, 1);
    assert_string_equal(db_text(db, RANGES_SQL), "4:t/0[10,12) 4:t/1[5,6) 5:t/0[12,13)");
    assert_int_equal(next_of(s->sink, "t", 0), 13);
    assert_int_equal(next_of(s->sink, "t", 1), 6);
    assert_int_equal(last_batch_of(s->sink), 5);
    kw_sink_get_totals(s->sink, &tot);
    assert_int_equal(tot.batches, 2);
    assert_int_equal(tot.stored, 4);
    assert_int_equal(tot.failures, 0);

    /* After a restart the same. */
    kw_sink_close(s->sink);
    s->sink = sink_open_ok(spec);
    assert_int_equal(next_of(s->sink, "t", 0), 13);
    assert_int_equal(last_batch_of(s->sink), 5);
    sqlite3_close(db);
}

/* The range fence: two handles on one database (two instances sharing it).
 * Both took partition t/0 when its ranges ended at 12; the first stores
 * [12, 14); the second's range after 12 is refused whole (KW_EFENCED, T2),
 * its other partition's range and records with it, and it goes on once it
 * expects the new end. */
static void test_txn_range_fence(void **state)
{
    tstate_t *s = *state;
    kw_record_t r[2] = { sink_rec("t", 0, 10, "a"), sink_rec("t", 0, 11, "b") };
    kw_record_t a[1] = { sink_rec("t", 0, 12, "c") }, b[2] = { sink_rec("t", 0, 12, "c"),
                                                          sink_rec("t", 1, 0, "x") };
    kw_sink_t *other;
    kw_sink_totals_t tot;
    char path[700], spec[710], err[512];
    sqlite3 *db;

    test_path(path, sizeof(path), "%s/out.db", s->dir);
    test_path(spec, sizeof(spec), "sqlite:%s", path);
    s->sink = sink_open_ok(spec);
    other = sink_open_ok(spec);
    txn_open_ok(s->sink, 1, r, 2);
    assert_int_equal(kw_sink_txn_put_range(s->sink, "t", 0, -1, 10, 12, err, sizeof(err)),
                     KW_OK);
    commit_ok(s->sink);

    txn_open_ok(s->sink, 2, a, 1);
    assert_int_equal(kw_sink_txn_put_range(s->sink, "t", 0, 12, 12, 14, err, sizeof(err)),
                     KW_OK);
    commit_ok(s->sink);

    txn_open_ok(other, 3, b, 2);
    assert_int_equal(kw_sink_txn_put_range(other, "t", 1, -1, 0, 1, err, sizeof(err)),
                     KW_OK);
    assert_int_equal(kw_sink_txn_put_range(other, "t", 0, 12, 12, 13, err, sizeof(err)),
                     KW_EFENCED);
    assert_non_null(strstr(err, "t/0"));
    assert_non_null(strstr(err, "end at 14, not 12"));
    /* T2: rolled back whole, counted as a failure; commit is out of order */
    assert_int_equal(kw_sink_txn_commit(other, NULL, err, sizeof(err)), KW_EINVAL);
    kw_sink_get_totals(other, &tot);
    assert_int_equal(tot.failures, 1);
    db = db_open(path);
    assert_int_equal(db_int(db, "SELECT COUNT(*) FROM batches WHERE id = 3"), 0);
    assert_int_equal(db_int(db, "SELECT COUNT(*) FROM records WHERE partition = 1"), 0);
    assert_string_equal(db_text(db, RANGES_SQL), "1:t/0[10,12) 2:t/0[12,14)");

    /* a partition with no range is fenced on -1 too */
    txn_open_ok(other, 3, b, 2);
    assert_int_equal(kw_sink_txn_put_range(other, "t", 0, -1, 14, 15, err, sizeof(err)),
                     KW_EFENCED);
    /* expecting the real end: stored */
    txn_open_ok(other, 3, b, 2);
    assert_int_equal(kw_sink_txn_put_range(other, "t", 0, 14, 14, 15, err, sizeof(err)),
                     KW_OK);
    assert_int_equal(kw_sink_txn_put_range(other, "t", 1, -1, 0, 1, err, sizeof(err)),
                     KW_OK);
    commit_ok(other);
    assert_string_equal(db_text(db, RANGES_SQL),
                        "1:t/0[10,12) 2:t/0[12,14) 3:t/0[14,15) 3:t/1[0,1)");
    /* a bad expectation is a bad argument */
    txn_open_ok(other, 4, a, 1);
    assert_int_equal(kw_sink_txn_put_range(other, "t", 0, -3, 15, 16, err, sizeof(err)),
                     KW_EINVAL);
    sqlite3_close(db);
    kw_sink_close(other);
}

/* kw_sink_txn_begin_next: the id is taken under the write lock, after every
 * id stored by any handle (batches rows and ranges), at least min_id. */
static void test_txn_begin_next(void **state)
{
    tstate_t *s = *state;
    kw_record_t r[1] = { sink_rec("t", 0, 0, "a") }, r2[1] = { sink_rec("t", 1, 0, "b") };
    kw_sink_t *other, *jsonl;
    uint64_t id = 0;
    char path[700], spec[710], err[512];

    test_path(path, sizeof(path), "%s/out.db", s->dir);
    test_path(spec, sizeof(spec), "sqlite:%s", path);
    s->sink = sink_open_ok(spec);
    other = sink_open_ok(spec);
    assert_int_equal(kw_sink_txn_begin_next(s->sink, 1, &id, err, sizeof(err)), KW_OK);
    assert_int_equal(id, 1);
    assert_int_equal(kw_sink_txn_write(s->sink, r, 1, err, sizeof(err)), KW_OK);
    assert_int_equal(kw_sink_txn_put_range(s->sink, "t", 0, -1, 0, 1, err, sizeof(err)),
                     KW_OK);
    commit_ok(s->sink);
    /* the other handle, whose own idea of the last id is older */
    assert_int_equal(kw_sink_txn_begin_next(other, 1, &id, err, sizeof(err)), KW_OK);
    assert_int_equal(id, 2);
    kw_sink_txn_abort(other);
    /* a batches row without ranges counts too; min_id above wins */
    assert_int_equal(kw_sink_write_batch(s->sink, 7, r2, 1, NULL, err, sizeof(err)), KW_OK);
    assert_int_equal(kw_sink_txn_begin_next(other, 1, &id, err, sizeof(err)), KW_OK);
    assert_int_equal(id, 8);
    kw_sink_txn_abort(other);
    assert_int_equal(kw_sink_txn_begin_next(other, 20, &id, err, sizeof(err)), KW_OK);
    assert_int_equal(id, 20);
    /* one open at a time; bad min_id; kinds without ranges refuse */
    assert_int_equal(kw_sink_txn_begin_next(other, 1, &id, err, sizeof(err)), KW_EINVAL);
    assert_int_equal(kw_sink_txn_begin_next(s->sink, 0, &id, err, sizeof(err)), KW_EINVAL);
    jsonl = sink_open_ok("null");
    assert_int_equal(kw_sink_txn_begin_next(jsonl, 1, &id, err, sizeof(err)), KW_EINVAL);
    assert_non_null(strstr(err, "only sqlite"));
    kw_sink_close(jsonl);
    kw_sink_close(other);
}

static void test_txn_abort(void **state)
{
    tstate_t *s = *state;
    kw_record_t r[2] = { sink_rec("t", 0, 0, "a"), sink_rec("t", 0, 1, "b") };
    kw_sink_stats_t st;
    kw_sink_totals_t tot;
    char path[700], spec[710];
    sqlite3 *db;

    test_path(path, sizeof(path), "%s/out.db", s->dir);
    test_path(spec, sizeof(spec), "sqlite:%s", path);
    s->sink = sink_open_ok(spec);
    kw_sink_txn_abort(s->sink);                 /* none open: a no-op */

    txn_open_ok(s->sink, 1, r, 2);
    put_ok(s->sink, "t", 0, 0, 2);
    kw_sink_txn_abort(s->sink);
    kw_sink_txn_abort(s->sink);                 /* again: a no-op */
    db = db_open(path);
    assert_int_equal(db_int(db, "SELECT COUNT(*) FROM records"), 0);
    assert_int_equal(db_int(db, "SELECT COUNT(*) FROM batches"), 0);
    assert_int_equal(db_int(db, "SELECT COUNT(*) FROM direct_ranges"), 0);
    assert_int_equal(next_of(s->sink, "t", 0), -1);
    assert_int_equal(last_batch_of(s->sink), 0);
    kw_sink_get_totals(s->sink, &tot);
    assert_int_equal(tot.batches, 0);
    assert_int_equal(tot.failures, 0);          /* an abort is not a failure */

    /* The same batch afterwards is new, not a replay. */
    txn_open_ok(s->sink, 1, r, 2);
    put_ok(s->sink, "t", 0, 0, 2);
    st = commit_ok(s->sink);
    assert_int_equal(st.stored, 2);
    assert_int_equal(st.duplicates_delivered, 0);
    assert_string_equal(db_text(db, RANGES_SQL), "1:t/0[0,2)");

    /* Closing with a transaction open aborts it. */
    r[0] = sink_rec("t", 0, 2, "c");
    txn_open_ok(s->sink, 2, r, 1);
    put_ok(s->sink, "t", 0, 2, 3);
    kw_sink_close(s->sink);
    s->sink = NULL;
    assert_int_equal(db_int(db, "SELECT COUNT(*) FROM records"), 2);
    assert_int_equal(db_int(db, "SELECT COUNT(*) FROM batches WHERE id = 2"), 0);
    assert_string_equal(db_text(db, RANGES_SQL), "1:t/0[0,2)");
    sqlite3_close(db);
}

static void test_txn_replay(void **state)
{
    tstate_t *s = *state;
    kw_record_t r[2] = { sink_rec("t", 0, 10, "a"), sink_rec("t", 0, 11, "b") };
    kw_record_t other[2] = { sink_rec("t", 0, 11, "b"), sink_rec("t", 0, 12, "c") };
    kw_sink_stats_t st;
    kw_sink_totals_t tot;
    char path[700], spec[710], err[512];
    sqlite3 *db;
    int64_t committed_ms;

    test_path(path, sizeof(path), "%s/out.db", s->dir);
    test_path(spec, sizeof(spec), "sqlite:%s", path);
    s->sink = sink_open_ok(spec);
    txn_open_ok(s->sink, 4, r, 2);
    put_ok(s->sink, "t", 0, 10, 12);
    commit_ok(s->sink);
    db = db_open(path);
    committed_ms = db_int(db, "SELECT committed_ms FROM batches WHERE id = 4");

    /* The same batch again, ranges and all (the caller never learned of the
     * commit): recognised whole; put_range stores nothing (T3) -- were it
     * stored, the ranges' key would refuse it. */
    txn_open_ok(s->sink, 4, r, 2);
    put_ok(s->sink, "t", 0, 10, 12);
    st = commit_ok(s->sink);
    assert_int_equal(st.delivered, 2);
    assert_int_equal(st.stored, 0);
    assert_int_equal(st.duplicates_delivered, 2);
    assert_string_equal(db_text(db, RANGES_SQL), "4:t/0[10,12)");
    assert_int_equal(db_int(db, "SELECT stored FROM batches WHERE id = 4"), 2);
    assert_int_equal(db_int(db, "SELECT committed_ms FROM batches WHERE id = 4"),
                     committed_ms);

    /* Across a restart too, and through write_batch. */
    kw_sink_close(s->sink);
    s->sink = sink_open_ok(spec);
    txn_open_ok(s->sink, 4, r, 2);
    put_ok(s->sink, "t", 0, 10, 12);
    put_ok(s->sink, "t", 1, 0, 5);              /* not stored either */
    st = commit_ok(s->sink);
    assert_int_equal(st.duplicates_delivered, 2);
    st = sink_write_ok(s->sink, 4, r, 2);
    assert_int_equal(st.duplicates_delivered, 2);
    assert_string_equal(db_text(db, RANGES_SQL), "4:t/0[10,12)");
    kw_sink_get_totals(s->sink, &tot);
    assert_int_equal(tot.batches, 2);
    assert_int_equal(tot.batches_replayed, 2);

    /* The id with other records is not a replay: stored record by record,
     * and its range for a partition batch 4 has already fails the key --
     * the whole transaction is rolled back (T2), batch 4 stays as it was. */
    test_log_capture_begin();
    txn_open_ok(s->sink, 4, other, 2);
    test_log_capture_end();
    assert_int_equal(kw_sink_txn_put_range(s->sink, "t", 0, KW_SINK_RANGE_UNCHECKED,
                                           11, 13, err, sizeof(err)),
                     KW_EIO);
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "t/0"));
    assert_int_equal(kw_sink_txn_commit(s->sink, &st, err, sizeof(err)), KW_EINVAL);
    assert_int_equal(db_int(db, "SELECT COUNT(*) FROM records"), 2);
    assert_int_equal(db_int(db, "SELECT COUNT(*) FROM records WHERE offset = 12"), 0);
    assert_int_equal(db_int(db, "SELECT records * 100 + stored * 10 + duplicates "
                            "FROM batches WHERE id = 4"), 220);
    kw_sink_get_totals(s->sink, &tot);
    assert_int_equal(tot.failures, 1);
    sqlite3_close(db);
}

static void test_txn_errors(void **state)
{
    tstate_t *s = *state;
    kw_record_t r[1] = { sink_rec("t", 0, 0, "a") };
    static const struct { const char *topic; int32_t part; int64_t from, until; } bad[] = {
        { NULL, 0, 0, 1 }, { "t", -1, 0, 1 }, { "t", 0, -1, 1 }, { "t", 0, 5, 5 },
        { "t", 0, 6, 5 }
    };
    kw_sink_stats_t st;
    kw_sink_totals_t tot;
    char path[700], spec[710], err[512];
    uint64_t failures = 0, b;
    int64_t next;
    sqlite3 *db;

    test_path(path, sizeof(path), "%s/out.db", s->dir);
    test_path(spec, sizeof(spec), "sqlite:%s", path);
    s->sink = sink_open_ok(spec);

    /* Out of order with none open: KW_EINVAL, nothing to end. */
    assert_int_equal(kw_sink_txn_write(s->sink, r, 1, err, sizeof(err)), KW_EINVAL);
    assert_non_null(strstr(err, "no transaction"));
    assert_int_equal(kw_sink_txn_put_range(s->sink, "t", 0, KW_SINK_RANGE_UNCHECKED,
                                           0, 1, err, sizeof(err)),
                     KW_EINVAL);
    assert_int_equal(kw_sink_txn_commit(s->sink, &st, err, sizeof(err)), KW_EINVAL);
    assert_int_equal(kw_sink_txn_begin(s->sink, 0, err, sizeof(err)), KW_EINVAL);
    assert_int_equal(kw_sink_txn_begin(s->sink, (uint64_t)INT64_MAX + 1, err,
                                       sizeof(err)), KW_EINVAL);
    assert_int_equal(kw_sink_write_batch(s->sink, 0, r, 1, &st, err, sizeof(err)),
                     KW_EINVAL);
    assert_int_equal(kw_sink_write_batch(s->sink, 1, NULL, 1, &st, err, sizeof(err)),
                     KW_EINVAL);

    /* Out of order with one open: KW_EINVAL and the transaction is over. */
    assert_int_equal(kw_sink_txn_begin(s->sink, 1, err, sizeof(err)), KW_OK);
    assert_int_equal(kw_sink_txn_put_range(s->sink, "t", 0, KW_SINK_RANGE_UNCHECKED,
                                           0, 1, err, sizeof(err)),
                     KW_EINVAL);
    assert_non_null(strstr(err, "not written"));
    failures++;
    assert_int_equal(kw_sink_txn_write(s->sink, r, 1, err, sizeof(err)), KW_EINVAL);
    assert_non_null(strstr(err, "no transaction"));

    txn_open_ok(s->sink, 1, r, 1);
    assert_int_equal(kw_sink_txn_write(s->sink, r, 1, err, sizeof(err)), KW_EINVAL);
    assert_non_null(strstr(err, "written already"));
    failures++;
    assert_int_equal(kw_sink_txn_commit(s->sink, &st, err, sizeof(err)), KW_EINVAL);

    assert_int_equal(kw_sink_txn_begin(s->sink, 1, err, sizeof(err)), KW_OK);
    assert_int_equal(kw_sink_txn_begin(s->sink, 2, err, sizeof(err)), KW_EINVAL);
    failures++;
    assert_int_equal(kw_sink_txn_write(s->sink, r, 1, err, sizeof(err)), KW_EINVAL);

    assert_int_equal(kw_sink_txn_begin(s->sink, 1, err, sizeof(err)), KW_OK);
    assert_int_equal(kw_sink_txn_write(s->sink, NULL, 1, err, sizeof(err)), KW_EINVAL);
    failures++;

    /* Bad ranges. */
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        txn_open_ok(s->sink, 1, r, 1);
        if (kw_sink_txn_put_range(s->sink, bad[i].topic, bad[i].part, KW_SINK_RANGE_UNCHECKED,
                                  bad[i].from,
                                  bad[i].until, err, sizeof(err)) != KW_EINVAL)
            fail_msg("bad range %zu accepted", i);
        assert_non_null(strstr(err, "bad range"));
        failures++;
        assert_int_equal(kw_sink_txn_commit(s->sink, &st, err, sizeof(err)), KW_EINVAL);
    }

    /* One range per partition per batch: the second fails the key (KW_EIO)
     * and takes the whole batch with it. */
    txn_open_ok(s->sink, 1, r, 1);
    put_ok(s->sink, "t", 0, 0, 1);
    assert_int_equal(kw_sink_txn_put_range(s->sink, "t", 0, KW_SINK_RANGE_UNCHECKED,
                                           1, 2, err, sizeof(err)),
                     KW_EIO);
    failures++;

    /* Nothing of all that reached the database. */
    db = db_open(path);
    assert_int_equal(db_int(db, "SELECT COUNT(*) FROM records"), 0);
    assert_int_equal(db_int(db, "SELECT COUNT(*) FROM batches"), 0);
    assert_int_equal(db_int(db, "SELECT COUNT(*) FROM direct_ranges"), 0);

    /* With a transaction open: no reading ranges (they would include
     * uncommitted rows), no write_batch; the transaction goes on. */
    txn_open_ok(s->sink, 1, r, 1);
    put_ok(s->sink, "t", 0, 0, 1);
    assert_int_equal(kw_sink_range_next(s->sink, "t", 0, &next, err, sizeof(err)),
                     KW_EINVAL);
    assert_int_equal(kw_sink_ranges_last_batch(s->sink, &b, err, sizeof(err)), KW_EINVAL);
    assert_int_equal(kw_sink_write_batch(s->sink, 2, r, 1, &st, err, sizeof(err)),
                     KW_EINVAL);
    assert_int_equal(kw_sink_range_next(s->sink, NULL, 0, &next, err, sizeof(err)),
                     KW_EINVAL);
    st = commit_ok(s->sink);
    assert_int_equal(st.stored, 1);
    assert_string_equal(db_text(db, RANGES_SQL), "1:t/0[0,1)");
    sqlite3_close(db);

    kw_sink_get_totals(s->sink, &tot);
    assert_int_equal(tot.failures, failures);
    assert_int_equal(tot.batches, 1);
}

/* Other kinds: begin / write / commit / abort work; ranges do not. */
static void test_txn_other_kinds(void **state)
{
    tstate_t *s = *state;
    kw_record_t r[2] = { sink_rec("t", 0, 0, "a"), sink_rec("t", 0, 1, "b") };
    kw_sink_stats_t st;
    kw_sink_totals_t tot;
    char dir[700], spec[710], path[800], err[512];
    static const char *const kinds[] = { "file", "jsonl", "null" };
    int64_t next;
    uint64_t b;
    int fd, saved;

    test_path(dir, sizeof(dir), "%s/out", s->dir);
    test_path(spec, sizeof(spec), "file:%s", dir);
    test_path(path, sizeof(path), "%s/stdout", s->dir);
    for (size_t i = 0; i < 3; i++) {
        s->sink = sink_open_ok(i == 0 ? spec : kinds[i]);
        assert_string_equal(kw_sink_kind_name(s->sink), kinds[i]);
        assert_int_equal(kw_sink_ranges_supported(s->sink), 0);
        assert_int_equal(kw_sink_range_next(s->sink, "t", 0, &next, err, sizeof(err)),
                         KW_EINVAL);
        assert_non_null(strstr(err, "does not store offset ranges"));
        assert_int_equal(next, -1);
        assert_int_equal(kw_sink_ranges_last_batch(s->sink, &b, err, sizeof(err)),
                         KW_EINVAL);
        assert_int_equal(b, 0);

        /* stdout to a file, for jsonl */
        fflush(stdout);
        saved = dup(STDOUT_FILENO);
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        assert_true(saved >= 0 && fd >= 0);
        assert_int_equal(dup2(fd, STDOUT_FILENO), STDOUT_FILENO);
        close(fd);

        /* put_range refused; the transaction rolled back (T2). */
        txn_open_ok(s->sink, 3, r, 2);
        assert_int_equal(kw_sink_txn_put_range(s->sink, "t", 0, KW_SINK_RANGE_UNCHECKED,
                                               0, 2, err, sizeof(err)),
                         KW_EINVAL);
        assert_non_null(strstr(err, kinds[i]));
        assert_non_null(strstr(err, "only sqlite"));
        assert_int_equal(kw_sink_txn_commit(s->sink, &st, err, sizeof(err)), KW_EINVAL);
        /* abort after write: nothing out */
        txn_open_ok(s->sink, 3, r, 2);
        kw_sink_txn_abort(s->sink);
        /* commit: the batch */
        txn_open_ok(s->sink, 4, r, 2);
        st = commit_ok(s->sink);
        assert_int_equal(dup2(saved, STDOUT_FILENO), STDOUT_FILENO);
        close(saved);
        assert_int_equal(st.delivered, 2);
        assert_int_equal(st.stored, i == 2 ? 0 : 2);

        if (i == 0) {           /* only batch 4's file, no .tmp */
            char **names;
            size_t n;

            assert_int_equal(test_list_dir(dir, NULL, &names, &n), 0);
            assert_int_equal(n, 1);
            assert_string_equal(names[0], "batch-0000000004.jsonl");
            test_free_names(names, n);
        } else if (i == 1) {    /* stdout: batch 4's two lines only */
            char *text = read_text(path);
            size_t lines = 0;

            for (const char *c = text; *c != '\0'; c++)
                lines += *c == '\n';
            assert_int_equal(lines, 2);
            free(text);
        }
        kw_sink_get_totals(s->sink, &tot);
        assert_int_equal(tot.batches, 1);
        assert_int_equal(tot.failures, 1);
        kw_sink_close(s->sink);
        s->sink = NULL;
    }
}

/* ---- Schema version ---- */

static void db_exec(const char *path, const char *sql)
{
    sqlite3 *db = db_open(path);
    char *msg = NULL;

    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("%s: %s", sql, msg);
    sqlite3_close(db);
}

/* The tables as kwal wrote them before the schema had a version: the
 * sqlite sink's two, and direct mode's when with_ranges. */
static void make_old_db(const char *path, int with_ranges)
{
    db_exec(path,
            "CREATE TABLE records(topic TEXT, partition INTEGER, offset INTEGER, "
            "ts INTEGER, key BLOB, payload BLOB, batch INTEGER, "
            "PRIMARY KEY(topic, partition, offset));"
            "CREATE TABLE batches(id INTEGER PRIMARY KEY, records INTEGER NOT NULL, "
            "stored INTEGER NOT NULL, duplicates INTEGER NOT NULL, first_topic TEXT, "
            "first_partition INTEGER, first_offset INTEGER, last_topic TEXT, "
            "last_partition INTEGER, last_offset INTEGER, committed_ms INTEGER NOT NULL);"
            "INSERT INTO records VALUES('t', 0, 7, 1, x'6b', x'76', 3);"
            "INSERT INTO batches VALUES(3, 1, 1, 0, 't', 0, 7, 't', 0, 7, 1700000000000);");
    if (with_ranges)
        db_exec(path,
                "CREATE TABLE direct_ranges(batch INTEGER NOT NULL, topic TEXT NOT NULL, "
                "partition INTEGER NOT NULL, from_offset INTEGER NOT NULL, "
                "until_offset INTEGER NOT NULL, PRIMARY KEY(batch, topic, partition));"
                "CREATE INDEX direct_ranges_tp ON direct_ranges(topic, partition, "
                "until_offset);"
                "INSERT INTO direct_ranges VALUES(3, 't', 0, 7, 8);");
}

static void test_schema_version(void **state)
{
    tstate_t *s = *state;
    kw_record_t r[1] = { sink_rec("t", 0, 7, "v") };
    kw_record_t r2[1] = { sink_rec("t", 0, 8, "w") };
    kw_sink_stats_t st;
    kw_sink_t *k = (kw_sink_t *)1;
    char path[700], spec[710], err[1024];
    sqlite3 *db;

    /* Direct mode's database from before versions: upgraded in place by
     * setting the version; rows kept, read back, a replay still known. */
    test_path(path, sizeof(path), "%s/direct.db", s->dir);
    test_path(spec, sizeof(spec), "sqlite:%s", path);
    make_old_db(path, 1);
    test_log_capture_begin();
    s->sink = sink_open_ok(spec);
    assert_int_equal(test_log_count(KW_LOG_INFO, "no schema version"), 1);
    test_log_capture_end();
    db = db_open(path);
    assert_int_equal(db_int(db, "PRAGMA user_version"), 1);
    assert_int_equal(db_int(db, "SELECT COUNT(*) FROM records"), 1);
    assert_int_equal(next_of(s->sink, "t", 0), 8);
    assert_int_equal(last_batch_of(s->sink), 3);
    st = sink_write_ok(s->sink, 3, r, 1);
    assert_int_equal(st.duplicates_delivered, 1);
    txn_open_ok(s->sink, 4, r2, 1);
    put_ok(s->sink, "t", 0, 8, 9);
    commit_ok(s->sink);
    assert_string_equal(db_text(db, RANGES_SQL), "3:t/0[7,8) 4:t/0[8,9)");
    sqlite3_close(db);
    kw_sink_close(s->sink);
    s->sink = NULL;

    /* A receiver-mode database from before versions: also gets direct_ranges. */
    test_path(path, sizeof(path), "%s/receiver.db", s->dir);
    test_path(spec, sizeof(spec), "sqlite:%s", path);
    make_old_db(path, 0);
    s->sink = sink_open_ok(spec);
    db = db_open(path);
    assert_int_equal(db_int(db, "PRAGMA user_version"), 1);
    assert_int_equal(db_int(db, "SELECT COUNT(*) FROM sqlite_master WHERE name IN "
                            "('direct_ranges', 'direct_ranges_tp')"), 2);
    assert_int_equal(db_int(db, "SELECT COUNT(*) FROM records"), 1);
    assert_int_equal(last_batch_of(s->sink), 0);
    sqlite3_close(db);
    kw_sink_close(s->sink);
    s->sink = NULL;

    /* A version this kwal does not know: refused, the file left alone. */
    test_path(path, sizeof(path), "%s/future.db", s->dir);
    test_path(spec, sizeof(spec), "sqlite:%s", path);
    db_exec(path, "PRAGMA user_version = 2");
    assert_int_equal(kw_sink_open(spec, &k, err, sizeof(err)), KW_ECORRUPT);
    assert_null(k);
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "schema version 2"));
    assert_non_null(strstr(err, "knows 1"));
    db = db_open(path);
    assert_int_equal(db_int(db, "PRAGMA user_version"), 2);
    assert_int_equal(db_int(db, "SELECT COUNT(*) FROM sqlite_master"), 0);
    sqlite3_close(db);

    /* Nor one that is not a kwal sink's at all. */
    test_path(path, sizeof(path), "%s/other.db", s->dir);
    test_path(spec, sizeof(spec), "sqlite:%s", path);
    db_exec(path, "PRAGMA user_version = -3");
    assert_int_equal(kw_sink_open(spec, &k, err, sizeof(err)), KW_ECORRUPT);
    assert_non_null(strstr(err, "schema version -3"));
}

/* ---- The crash point (T4) ---- */

/* In a child: batch 7 with a range, sink.mid-txn armed. Writes 'C' to fd
 * just before commit; exits 0 if commit returned KW_OK, KW_CRASH_EXIT if the
 * crash point fired, another status on any other failure. */
static void test_txn_crash_mid_txn(void **state)
{
    tstate_t *s = *state;
    kw_record_t r[2] = { sink_rec("t", 0, 0, "a"), sink_rec("t", 0, 1, "b") };
    kw_sink_stats_t st;
    char path[700], spec[710];
    int reached;
    sqlite3 *db;

    test_path(path, sizeof(path), "%s/out.db", s->dir);
    test_path(spec, sizeof(spec), "sqlite:%s", path);

    /* Dies in commit, after records and ranges: nothing of the batch stays. */
    assert_int_equal(sink_run_crash_child(spec, r, 2, &reached), KW_CRASH_EXIT);
    assert_true(reached);
    db = db_open(path);
    assert_int_equal(db_int(db, "SELECT COUNT(*) FROM records"), 0);
    assert_int_equal(db_int(db, "SELECT COUNT(*) FROM batches"), 0);
    assert_int_equal(db_int(db, "SELECT COUNT(*) FROM direct_ranges"), 0);

    /* Delivered again, it is new: all of it stored. */
    s->sink = sink_open_ok(spec);
    txn_open_ok(s->sink, 7, r, 2);
    put_ok(s->sink, "t", 0, 0, 2);
    st = commit_ok(s->sink);
    assert_int_equal(st.stored, 2);
    kw_sink_close(s->sink);
    s->sink = NULL;

    /* A replay writes nothing and does not pass the crash point. */
    assert_int_equal(sink_run_crash_child(spec, r, 2, &reached), 0);
    assert_true(reached);
    assert_string_equal(db_text(db, RANGES_SQL), "7:t/0[0,2)");
    assert_int_equal(db_int(db, "SELECT COUNT(*) FROM records"), 2);
    sqlite3_close(db);
}

/* ---- JSON ---- */

static char *json_of(const kw_record_t *r)
{
    kw_sink_buf_t b = { NULL, 0, 0 };

    assert_int_equal(kw_sink_json_append(&b, r), KW_OK);
    assert_int_equal(buf_nul(&b), 0);
    return b.data;
}

static void test_json_envelope(void **state)
{
    kw_record_header_t hdr[2] = { { "h1", 2, "v1", 2 }, { "h\"2", 3, NULL, 0 } };
    kw_record_t r = sink_rec("orders", 3, 42, "pay");
    char *j;

    (void)state;
    j = json_of(&r);
    assert_string_equal(j, "{\"topic\":\"orders\",\"partition\":3,\"offset\":42,"
                        "\"tstype\":\"create\",\"ts\":1700000000042,\"broker\":-1,"
                        "\"key\":\"k\",\"payload\":\"pay\"}\n");
    free(j);

    r.tstype = KW_TS_LOG_APPEND;
    r.key = NULL;
    r.value = NULL;
    r.headers = hdr;
    r.header_count = 2;
    j = json_of(&r);
    assert_string_equal(j, "{\"topic\":\"orders\",\"partition\":3,\"offset\":42,"
                        "\"tstype\":\"logappend\",\"ts\":1700000000042,\"broker\":-1,"
                        "\"headers\":[\"h1\",\"v1\",\"h\\\"2\",null],"
                        "\"key\":null,\"payload\":null}\n");
    free(j);

    /* No timestamp: like kcat, no tstype and no ts. Empty key: "". */
    r = sink_rec("t", 0, 0, "");
    r.tstype = KW_TS_NOT_AVAILABLE;
    r.timestamp = -1;
    r.key = "";
    r.key_len = 0;
    j = json_of(&r);
    assert_string_equal(j, "{\"topic\":\"t\",\"partition\":0,\"offset\":0,"
                        "\"broker\":-1,\"key\":\"\",\"payload\":\"\"}\n");
    free(j);
}

/* The payload field of one encoded record whose payload is data[0..len). */
static char *payload_json(const void *data, size_t len)
{
    kw_record_t r = sink_rec("t", 0, 0, NULL);
    const char *prefix = ",\"payload\":";
    char *j, *p, *out;

    r.value = data;
    r.value_len = len;
    j = json_of(&r);
    p = strstr(j, prefix);
    assert_non_null(p);
    p += strlen(prefix);
    out = strdup(p);
    assert_non_null(out);
    out[strlen(out) - 2] = '\0';          /* drop "}\n" */
    free(j);
    return out;
}

static void check_payload(const char *data, size_t len, const char *want)
{
    char *got = payload_json(data, len);

    if (strcmp(got, want) != 0)
        fail_msg("payload encoded as %s, want %s", got, want);
    free(got);
}

static void test_json_escaping(void **state)
{
    (void)state;
    check_payload("say \"hi\"", 8, "\"say \\\"hi\\\"\"");
    check_payload("a\\b", 3, "\"a\\\\b\"");
    check_payload("/", 1, "\"/\"");                      /* yajl: solidus as is */
    check_payload("\b\f\n\r\t", 5, "\"\\b\\f\\n\\r\\t\"");
    check_payload("\x01\x1f\x00z", 4, "\"\\u0001\\u001f\\u0000z\"");
    check_payload("\x7f", 1, "\"\x7f\"");
    /* Valid UTF-8 is kept: 2, 3 and 4 bytes (é, €, U+1F600). */
    check_payload("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 9,
                  "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"");
    /* Not UTF-8: each such byte as \u00xx. */
    check_payload("\xff\xfe", 2, "\"\\u00ff\\u00fe\"");
    check_payload("a\xc3", 2, "\"a\\u00c3\"");            /* truncated at the end */
    check_payload("\xc3(", 2, "\"\\u00c3(\"");            /* bad continuation */
    check_payload("\xc0\xaf", 2, "\"\\u00c0\\u00af\"");   /* overlong '/' */
    check_payload("\xe0\x80\xaf", 3, "\"\\u00e0\\u0080\\u00af\"");  /* overlong */
    check_payload("\xed\xa0\x80", 3, "\"\\u00ed\\u00a0\\u0080\"");  /* surrogate */
    check_payload("\xf4\x90\x80\x80", 4,
                  "\"\\u00f4\\u0090\\u0080\\u0080\"");    /* above U+10FFFF */
    check_payload("\x80", 1, "\"\\u0080\"");              /* lone continuation */
    check_payload("\xe2\x82", 2, "\"\\u00e2\\u0082\"");   /* truncated 3-byte */
    /* Keys and topics go through the same escaping. */
    {
        kw_record_t r = sink_rec("to\"pic", 0, 0, "v");
        char *j;

        r.key = "\n\xff";
        r.key_len = 2;
        j = json_of(&r);
        assert_non_null(strstr(j, "\"topic\":\"to\\\"pic\""));
        assert_non_null(strstr(j, "\"key\":\"\\n\\u00ff\""));
        free(j);
    }
}

/* ---- file ---- */

static void test_file_sink(void **state)
{
    tstate_t *s = *state;
    kw_record_t r[3] = { sink_rec("t", 0, 0, "a\nb"), sink_rec("t", 0, 1, "c"),
                         sink_rec("t", 1, 9, "d") };
    kw_sink_stats_t st;
    char dir[700], spec[710], path[800], err[512], *text, *want;
    kw_sink_buf_t b = { NULL, 0, 0 };
    char **names;
    size_t n;

    test_path(dir, sizeof(dir), "%s/out", s->dir);     /* created by open */
    test_path(spec, sizeof(spec), "file:%s", dir);
    s->sink = sink_open_ok(spec);

    /* A leftover temporary file of a crashed attempt is overwritten. */
    test_path(path, sizeof(path), "%s/batch-0000000007.jsonl.tmp", dir);
    assert_int_equal(test_write_file(path, "garbage\n", 8), 0);

    st = sink_write_ok(s->sink, 7, r, 3);
    assert_int_equal(st.stored, 3);
    assert_int_equal(st.duplicates_delivered, 0);
    assert_int_equal(test_list_dir(dir, NULL, &names, &n), 0);
    assert_int_equal(n, 1);                              /* no .tmp left */
    assert_string_equal(names[0], "batch-0000000007.jsonl");
    test_free_names(names, n);

    test_path(path, sizeof(path), "%s/batch-0000000007.jsonl", dir);
    text = read_text(path);
    for (int i = 0; i < 3; i++)
        assert_int_equal(kw_sink_json_append(&b, &r[i]), KW_OK);
    assert_int_equal(buf_nul(&b), 0);
    want = b.data;
    assert_string_equal(text, want);
    free(text);
    free(want);

    /* Replay of batch 7: skipped, counted. */
    st = sink_write_ok(s->sink, 7, r, 3);
    assert_int_equal(st.stored, 0);
    assert_int_equal(st.duplicates_delivered, 3);

    /* Batch 7 with another record count: refused, file untouched. */
    assert_int_equal(kw_sink_write_batch(s->sink, 7, r, 2, &st, err, sizeof(err)),
                     KW_ECORRUPT);
    assert_non_null(strstr(err, "batch-0000000007.jsonl"));

    /* An empty batch is an empty file; ids sort by name. */
    st = sink_write_ok(s->sink, 12, NULL, 0);
    assert_int_equal(st.stored, 0);
    assert_int_equal(test_list_dir(dir, ".jsonl", &names, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(names[0], "batch-0000000007.jsonl");
    assert_string_equal(names[1], "batch-0000000012.jsonl");
    test_free_names(names, n);

    /* The temporary file cannot be created (a directory holds its name; this
     * works as root too): the batch fails, naming the path, and nothing
     * appears under the final name. */
    kw_sink_close(s->sink);
    s->sink = sink_open_ok(spec);
    test_path(path, sizeof(path), "%s/batch-0000000013.jsonl.tmp", dir);
    assert_int_equal(mkdir(path, 0755), 0);
    assert_int_equal(kw_sink_write_batch(s->sink, 13, r, 3, &st, err, sizeof(err)),
                     KW_EIO);
    assert_non_null(strstr(err, "batch-0000000013.jsonl.tmp"));
    assert_int_equal(test_count_files(dir, ".jsonl"), 2);
    assert_int_equal(rmdir(path), 0);
    {
        kw_sink_totals_t tot;

        kw_sink_get_totals(s->sink, &tot);
        assert_int_equal(tot.failures, 1);
    }
    st = sink_write_ok(s->sink, 13, r, 3);
    assert_int_equal(st.stored, 3);
}

/* ---- jsonl and null ---- */

static void test_jsonl_and_null(void **state)
{
    tstate_t *s = *state;
    kw_record_t r[2] = { sink_rec("t", 0, 5, "x\ty"), sink_rec("t", 2, 6, "\x01") };
    kw_sink_buf_t b = { NULL, 0, 0 };
    kw_sink_totals_t tot;
    kw_sink_stats_t st;
    char path[700], *text;
    int fd, saved;

    test_path(path, sizeof(path), "%s/stdout", s->dir);
    s->sink = sink_open_ok("jsonl");
    fflush(stdout);
    saved = dup(STDOUT_FILENO);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(saved >= 0 && fd >= 0);
    assert_int_equal(dup2(fd, STDOUT_FILENO), STDOUT_FILENO);
    close(fd);
    st = sink_write_ok(s->sink, 1, r, 2);
    assert_int_equal(dup2(saved, STDOUT_FILENO), STDOUT_FILENO);
    close(saved);
    assert_int_equal(st.stored, 2);
    assert_int_equal(st.duplicates_delivered, 0);

    text = read_text(path);
    for (int i = 0; i < 2; i++)
        assert_int_equal(kw_sink_json_append(&b, &r[i]), KW_OK);
    assert_int_equal(buf_nul(&b), 0);
    assert_string_equal(text, b.data);
    assert_non_null(strstr(text, "\"payload\":\"x\\ty\""));
    assert_non_null(strstr(text, "\"payload\":\"\\u0001\""));
    free(text);
    free(b.data);
    kw_sink_close(s->sink);

    s->sink = sink_open_ok("null");
    st = sink_write_ok(s->sink, 1, r, 2);
    assert_int_equal(st.stored, 0);
    st = sink_write_ok(s->sink, 1, r, 2);
    assert_int_equal(st.duplicates_delivered, 0);
    kw_sink_get_totals(s->sink, &tot);
    assert_int_equal(tot.batches, 2);
    assert_int_equal(tot.delivered, 4);
}

/* now - timestamp per record; none without a timestamp; 0 for a timestamp
 * in the future. */
static void test_latency(void **state)
{
    kw_record_t r[5];
    kw_hist_local_t *h = calloc(1, sizeof(*h));
    kw_hist_summary_t sum;

    (void)state;
    assert_non_null(h);
    memset(r, 0, sizeof(r));
    r[0].tstype = KW_TS_CREATE_TIME;
    r[0].timestamp = 1000000;           /* 250 ms before now */
    r[1].tstype = KW_TS_LOG_APPEND;
    r[1].timestamp = 1000240;           /* 10 ms */
    r[2].tstype = KW_TS_NOT_AVAILABLE;
    r[2].timestamp = -1;                /* none: left out */
    r[3].tstype = KW_TS_CREATE_TIME;
    r[3].timestamp = 1000900;           /* ahead of kwal's clock: 0 */
    r[4].tstype = KW_TS_CREATE_TIME;
    r[4].timestamp = 0;                 /* the epoch: old, not missing */
    assert_int_equal(kw_sink_latency_add(h, r, 5, 1000250), 4);
    assert_int_equal(kw_sink_latency_add(h, r, 0, 1000250), 0);
    kw_hist_local_summarize(h, &sum);
    assert_int_equal(sum.count, 4);
    assert_int_equal(kw_hist_local_quantile(h, 0.25), 0);
    assert_int_equal(kw_hist_local_quantile(h, 0.5), 10);
    assert_true(kw_hist_local_quantile(h, 0.75) >= 250 &&
                kw_hist_local_quantile(h, 0.75) <= 250 + 250 / 32);
    assert_int_equal(sum.max, 1000250);
    free(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_specs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sqlite_schema_exact, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sqlite_store_and_read_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sqlite_duplicates, setup, teardown),
        cmocka_unit_test_setup_teardown(test_txn_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_txn_range_fence, setup, teardown),
        cmocka_unit_test_setup_teardown(test_txn_begin_next, setup, teardown),
        cmocka_unit_test_setup_teardown(test_txn_abort, setup, teardown),
        cmocka_unit_test_setup_teardown(test_txn_replay, setup, teardown),
        cmocka_unit_test_setup_teardown(test_txn_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_txn_other_kinds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_schema_version, setup, teardown),
        cmocka_unit_test_setup_teardown(test_txn_crash_mid_txn, setup, teardown),
        cmocka_unit_test_setup_teardown(test_json_envelope, setup, teardown),
        cmocka_unit_test_setup_teardown(test_json_escaping, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_sink, setup, teardown),
        cmocka_unit_test_setup_teardown(test_jsonl_and_null, setup, teardown),
        cmocka_unit_test(test_latency),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
