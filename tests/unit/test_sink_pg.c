/*
 * test_sink_pg.c -- the postgresql sink (sink/sink.h, sink/FORMAT.md)
 * against a real PostgreSQL server started for this file (kwal-pg-local):
 * specs and connection errors (the password never in a message); the tables
 * and the schema version (a newer one refused); records read back exactly
 * (NULL and empty keys, binary payloads, no timestamp); duplicate deliveries
 * counted, replays recognised, reused ids stored record by record; the
 * transactions with ranges, their fence across two handles and batch ids
 * taken under the lock; the server killed between batches and inside a
 * transaction (nothing acknowledged, the batch stored once after the
 * reconnect); the crash point sink.mid-txn in a child process.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "kw_fault.h"
#include "sink.h"
#include "test_pg_server.h"
#include "test_sink_util.h"
#include "test_util.h"

static test_pg_server_t server;
static int have_server;
static char spec[300];

static int group_setup(void **state)
{
    int rc = test_pg_server_start(&server, "sink_pg");

    (void)state;
    if (rc < 0)
        return -1;
    have_server = rc == 1;
    if (have_server)
        snprintf(spec, sizeof(spec), "postgresql:%s", server.conninfo);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    test_pg_server_stop(&server);
    return 0;
}

/* Run sql on a connection of our own; the first row's first value, or "". */
static char *pg(const char *sql)
{
    static char out[4096];
    PGconn *c = PQconnectdb(server.conninfo);
    PGresult *r;

    if (PQstatus(c) != CONNECTION_OK)
        fail_msg("connect: %s", PQerrorMessage(c));
    r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQresultErrorMessage(r));
    out[0] = '\0';
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0 && PQnfields(r) > 0)
        snprintf(out, sizeof(out), "%s", PQgetisnull(r, 0, 0) ? "NULL" : PQgetvalue(r, 0, 0));
    PQclear(r);
    PQfinish(c);
    return out;
}

static long pg_long(const char *sql)
{
    return strtol(pg(sql), NULL, 10);
}

/* Each test starts from an empty database. */
static int setup(void **state)
{
    (void)state;
    if (have_server)
        pg("DROP TABLE IF EXISTS records, batches, direct_ranges, kwal_meta");
    return 0;
}

#define NEED_SERVER()                \
    do {                             \
        if (!have_server)            \
            skip();                  \
    } while (0)

static kw_sink_t *open_ok(void)
{
    return sink_open_ok(spec);
}

/* ---- specs and connecting ---- */

static void test_specs(void **state)
{
    kw_sink_t *k = NULL;
    char err[512];

    (void)state;
    assert_int_equal(kw_sink_open("postgresql", &k, err, sizeof(err)), KW_ECONFIG);
    assert_non_null(strstr(err, "connection string"));
    assert_int_equal(kw_sink_open("postgresql:", &k, err, sizeof(err)), KW_ECONFIG);
    assert_int_equal(kw_sink_open("postgresql:nosuchkey=1", &k, err, sizeof(err)),
                     KW_ECONFIG);
    assert_non_null(strstr(err, "nosuchkey"));
    assert_null(k);
    /* nothing listens on port 1: a clear error naming the server, not the
     * password */
    assert_int_equal(kw_sink_open("postgresql:host=127.0.0.1 port=1 user=u password=s3cret "
                                  "dbname=d connect_timeout=2", &k, err, sizeof(err)),
                     KW_EIO);
    assert_null(k);
    assert_non_null(strstr(err, "host=127.0.0.1 port=1 dbname=d user=u"));
    assert_non_null(strstr(err, "cannot connect"));
    assert_null(strstr(err, "s3cret"));
    /* a URI as libpq takes it */
    assert_int_equal(kw_sink_open("postgresql://u:s3cret@127.0.0.1:1/d?connect_timeout=2",
                                  &k, err, sizeof(err)), KW_EIO);
    assert_non_null(strstr(err, "port=1"));
    assert_null(strstr(err, "s3cret"));
}

/* ---- schema ---- */

static void test_schema(void **state)
{
    kw_sink_t *k;
    char err[512];

    (void)state;
    NEED_SERVER();
    k = open_ok();
    assert_string_equal(kw_sink_kind_name(k), "postgresql");
    assert_int_equal(kw_sink_kind(k), KW_SINK_POSTGRESQL);
    assert_int_equal(kw_sink_ranges_supported(k), 1);
    kw_sink_close(k);
    assert_string_equal(pg("SELECT value FROM kwal_meta WHERE key = 'schema_version'"), "1");
    /* the columns and types of FORMAT.md */
    assert_string_equal(pg("SELECT string_agg(column_name || ':' || data_type, ',' ORDER BY "
                           "ordinal_position) FROM information_schema.columns WHERE "
                           "table_name = 'records'"),
                        "topic:text,partition:integer,offset:bigint,ts:bigint,key:bytea,"
                        "payload:bytea,batch:bigint");
    assert_string_equal(pg("SELECT string_agg(a.attname, ',' ORDER BY array_position("
                           "i.indkey, a.attnum)) FROM pg_index i JOIN pg_attribute a ON "
                           "a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) WHERE "
                           "i.indrelid = 'records'::regclass AND i.indisprimary"),
                        "topic,partition,offset");
    assert_int_equal(pg_long("SELECT COUNT(*) FROM information_schema.tables WHERE "
                             "table_name IN ('records', 'batches', 'direct_ranges', "
                             "'kwal_meta')"), 4);
    /* opened again: nothing changes */
    k = open_ok();
    kw_sink_close(k);
    /* a newer kwal's database is refused, and left as it is */
    pg("UPDATE kwal_meta SET value = '99' WHERE key = 'schema_version'");
    k = NULL;
    assert_int_equal(kw_sink_open(spec, &k, err, sizeof(err)), KW_ECORRUPT);
    assert_null(k);
    assert_non_null(strstr(err, "schema version 99"));
    assert_string_equal(pg("SELECT value FROM kwal_meta WHERE key = 'schema_version'"), "99");
}

/* ---- records ---- */

static void test_store_and_read_back(void **state)
{
    static const char bin[5] = {'a', '\0', '\377', '\n', 'z'};
    kw_record_t r[4] = { sink_rec("t", 0, 10, "v0"), sink_rec("t", 0, 11, NULL),
                         sink_rec("u", 3, 7, ""), sink_rec("u", 3, 8, "x") };
    kw_sink_stats_t st;
    kw_sink_t *k;

    (void)state;
    NEED_SERVER();
    r[1].key = NULL;                  /* NULL key and value */
    r[1].key_len = 0;
    r[2].key = "";                    /* empty key and value */
    r[2].key_len = 0;
    r[2].tstype = KW_TS_NOT_AVAILABLE;
    r[3].value = bin;                 /* bytes, NUL and 0xFF included */
    r[3].value_len = sizeof(bin);
    k = open_ok();
    st = sink_write_ok(k, 1, r, 4);
    assert_int_equal(st.stored, 4);
    assert_int_equal(st.duplicates_delivered, 0);
    kw_sink_close(k);
    assert_string_equal(pg("SELECT string_agg(format('%s/%s@%s ts=%s key=%s payload=%s b=%s', "
                           "topic, partition, \"offset\", COALESCE(ts::text, 'NULL'), "
                           "COALESCE(encode(key, 'hex'), 'NULL'), "
                           "COALESCE(encode(payload, 'hex'), 'NULL'), batch), ';' ORDER BY "
                           "topic, partition, \"offset\") FROM records"),
                        "t/0@10 ts=1700000000010 key=6b payload=7630 b=1;"
                        "t/0@11 ts=1700000000011 key=NULL payload=NULL b=1;"
                        "u/3@7 ts=NULL key= payload= b=1;"
                        "u/3@8 ts=1700000000008 key=6b payload=6100ff0a7a b=1");
    assert_string_equal(pg("SELECT format('%s %s %s %s/%s@%s %s/%s@%s', records, stored, "
                           "duplicates, first_topic, first_partition, first_offset, "
                           "last_topic, last_partition, last_offset) FROM batches "
                           "WHERE id = 1"), "4 4 0 t/0@10 u/3@8");
}

static void test_duplicates_and_replays(void **state)
{
    kw_record_t a[3] = { sink_rec("t", 0, 0, "a"), sink_rec("t", 0, 1, "b"), sink_rec("t", 0, 2, "c") };
    kw_record_t b[3] = { sink_rec("t", 0, 2, "c"), sink_rec("t", 0, 3, "d"), sink_rec("t", 0, 4, "e") };
    kw_record_t c[2] = { sink_rec("t", 0, 4, "e"), sink_rec("t", 0, 5, "f") };
    kw_sink_totals_t tot;
    kw_sink_stats_t st;
    kw_sink_t *k;

    (void)state;
    NEED_SERVER();
    k = open_ok();
    st = sink_write_ok(k, 1, a, 3);
    assert_int_equal(st.stored, 3);
    /* overlapping: the record already stored is a counted duplicate */
    st = sink_write_ok(k, 2, b, 3);
    assert_int_equal(st.stored, 2);
    assert_int_equal(st.duplicates_delivered, 1);
    /* batch 1 again (same fingerprint): a replay, nothing written */
    st = sink_write_ok(k, 1, a, 3);
    assert_int_equal(st.stored, 0);
    assert_int_equal(st.duplicates_delivered, 3);
    /* id 2 with other records (ids reused): stored record by record */
    st = sink_write_ok(k, 2, c, 2);
    assert_int_equal(st.stored, 1);
    assert_int_equal(st.duplicates_delivered, 1);
    /* an empty batch is recorded */
    st = sink_write_ok(k, 3, NULL, 0);
    assert_int_equal(st.stored, 0);
    kw_sink_get_totals(k, &tot);
    assert_int_equal(tot.batches, 5);
    assert_int_equal(tot.batches_replayed, 1);
    assert_int_equal(tot.stored, 6);
    assert_int_equal(tot.duplicates_delivered, 5);
    kw_sink_close(k);
    assert_int_equal(pg_long("SELECT COUNT(*) FROM records"), 6);
    assert_string_equal(pg("SELECT string_agg(\"offset\" || ':' || batch, ',' ORDER BY "
                           "\"offset\") FROM records"), "0:1,1:1,2:1,3:2,4:2,5:2");
    assert_string_equal(pg("SELECT string_agg(id || ':' || records, ',' ORDER BY id) "
                           "FROM batches"), "1:3,2:2,3:0");
}

/* ---- transactions and ranges ---- */

static void test_txn_ranges_and_fence(void **state)
{
    kw_record_t r[2] = { sink_rec("t", 0, 0, "a"), sink_rec("t", 0, 1, "b") };
    kw_record_t r2[1] = { sink_rec("t", 0, 2, "c") };
    kw_sink_t *a, *b;
    kw_sink_stats_t st;
    uint64_t id = 0, last = 9;
    int64_t next = -2;
    char err[512];

    (void)state;
    NEED_SERVER();
    a = open_ok();
    b = open_ok();
    assert_int_equal(kw_sink_range_next(a, "t", 0, &next, err, sizeof(err)), KW_OK);
    assert_int_equal(next, -1);
    assert_int_equal(kw_sink_ranges_last_batch(a, &last, err, sizeof(err)), KW_OK);
    assert_int_equal(last, 0);

    /* a takes batch 1 and stores [0, 2) */
    assert_int_equal(kw_sink_txn_begin_next(a, 1, &id, err, sizeof(err)), KW_OK);
    assert_int_equal(id, 1);
    assert_int_equal(kw_sink_txn_write(a, r, 2, err, sizeof(err)), KW_OK);
    assert_int_equal(kw_sink_txn_put_range(a, "t", 0, -1, 0, 2, err, sizeof(err)), KW_OK);
    assert_int_equal(kw_sink_txn_commit(a, &st, err, sizeof(err)), KW_OK);
    assert_int_equal(st.stored, 2);

    /* b still believes nothing is stored: fenced, nothing of its batch stays */
    assert_int_equal(kw_sink_txn_begin_next(b, 1, &id, err, sizeof(err)), KW_OK);
    assert_int_equal(id, 2);
    assert_int_equal(kw_sink_txn_write(b, r, 2, err, sizeof(err)), KW_OK);
    assert_int_equal(kw_sink_txn_put_range(b, "t", 0, -1, 0, 2, err, sizeof(err)),
                     KW_EFENCED);
    assert_non_null(strstr(err, "end at 2, not -1"));
    assert_int_equal(pg_long("SELECT COUNT(*) FROM batches"), 1);

    /* b reads the position again and goes on from it; min_id is honoured */
    assert_int_equal(kw_sink_range_next(b, "t", 0, &next, err, sizeof(err)), KW_OK);
    assert_int_equal(next, 2);
    assert_int_equal(kw_sink_txn_begin_next(b, 10, &id, err, sizeof(err)), KW_OK);
    assert_int_equal(id, 10);
    assert_int_equal(kw_sink_txn_write(b, r2, 1, err, sizeof(err)), KW_OK);
    assert_int_equal(kw_sink_txn_put_range(b, "t", 0, 2, 2, 3, err, sizeof(err)), KW_OK);
    assert_int_equal(kw_sink_txn_commit(b, &st, err, sizeof(err)), KW_OK);
    assert_int_equal(kw_sink_ranges_last_batch(a, &last, err, sizeof(err)), KW_OK);
    assert_int_equal(last, 10);
    /* the next id comes after every stored one, whoever stored it */
    assert_int_equal(kw_sink_txn_begin_next(a, 2, &id, err, sizeof(err)), KW_OK);
    assert_int_equal(id, 11);
    kw_sink_txn_abort(a);

    /* one range per partition per batch id */
    assert_int_equal(kw_sink_txn_begin(a, 10, err, sizeof(err)), KW_OK);
    assert_int_equal(kw_sink_txn_write(a, NULL, 0, err, sizeof(err)), KW_OK);
    assert_int_equal(kw_sink_txn_put_range(a, "t", 0, KW_SINK_RANGE_UNCHECKED, 3, 4, err,
                                           sizeof(err)), KW_EIO);
    assert_non_null(strstr(err, "batch 10"));
    kw_sink_close(a);
    kw_sink_close(b);
    assert_string_equal(pg("SELECT string_agg(format('%s:%s/%s[%s,%s)', batch, topic, "
                           "partition, from_offset, until_offset), ',' ORDER BY batch) "
                           "FROM direct_ranges"), "1:t/0[0,2),10:t/0[2,3)");
    assert_int_equal(pg_long("SELECT COUNT(*) FROM records"), 3);
}

static void test_txn_abort_stores_nothing(void **state)
{
    kw_record_t r[2] = { sink_rec("t", 1, 0, "a"), sink_rec("t", 1, 1, "b") };
    kw_sink_t *k;
    char err[512];

    (void)state;
    NEED_SERVER();
    k = open_ok();
    assert_int_equal(kw_sink_txn_begin(k, 5, err, sizeof(err)), KW_OK);
    assert_int_equal(kw_sink_txn_write(k, r, 2, err, sizeof(err)), KW_OK);
    assert_int_equal(kw_sink_txn_put_range(k, "t", 1, -1, 0, 2, err, sizeof(err)), KW_OK);
    /* T1: nothing visible to others before commit */
    assert_int_equal(pg_long("SELECT COUNT(*) FROM records"), 0);
    kw_sink_txn_abort(k);
    assert_int_equal(pg_long("SELECT COUNT(*) FROM records"), 0);
    assert_int_equal(pg_long("SELECT COUNT(*) FROM direct_ranges"), 0);
    /* the handle goes on: the same batch now commits */
    assert_int_equal(sink_write_ok(k, 5, r, 2).stored, 2);
    kw_sink_close(k);
}

/* ---- the server going away ---- */

static void test_server_restart(void **state)
{
    kw_record_t r1[2] = { sink_rec("t", 0, 0, "a"), sink_rec("t", 0, 1, "b") };
    kw_record_t r2[2] = { sink_rec("t", 0, 2, "c"), sink_rec("t", 0, 3, "d") };
    kw_sink_totals_t tot;
    kw_sink_stats_t st;
    kw_sink_t *k;
    char err[512];

    (void)state;
    NEED_SERVER();
    k = open_ok();
    sink_write_ok(k, 1, r1, 2);

    /* killed between batches: the next one fails (nothing acknowledged) ... */
    assert_int_equal(test_pg_server_cmd(&server, "kill"), 0);
    assert_int_equal(kw_sink_write_batch(k, 2, r2, 2, &st, err, sizeof(err)), KW_EIO);
    assert_non_null(strstr(err, "postgresql:host=127.0.0.1"));
    /* ... also while it stays away (reconnecting fails) ... */
    assert_int_equal(kw_sink_write_batch(k, 2, r2, 2, &st, err, sizeof(err)), KW_EIO);
    assert_non_null(strstr(err, "connection lost"));
    /* ... and once it is back, the same handle reconnects and stores it */
    assert_int_equal(test_pg_server_cmd(&server, "start --no-fsync"), 0);
    st = sink_write_ok(k, 2, r2, 2);
    assert_int_equal(st.stored, 2);

    /* killed inside a transaction, after the records went in: commit fails,
     * the server rolled it back; delivered again, stored once */
    kw_record_t r3[2] = { sink_rec("t", 0, 4, "e"), sink_rec("t", 0, 5, "f") };

    assert_int_equal(kw_sink_txn_begin(k, 3, err, sizeof(err)), KW_OK);
    assert_int_equal(kw_sink_txn_write(k, r3, 2, err, sizeof(err)), KW_OK);
    assert_int_equal(test_pg_server_cmd(&server, "kill"), 0);
    assert_int_equal(kw_sink_txn_commit(k, &st, err, sizeof(err)), KW_EIO);
    assert_int_equal(test_pg_server_cmd(&server, "start --no-fsync"), 0);
    assert_int_equal(pg_long("SELECT COUNT(*) FROM records WHERE \"offset\" >= 4"), 0);
    st = sink_write_ok(k, 3, r3, 2);
    assert_int_equal(st.stored, 2);
    assert_int_equal(st.duplicates_delivered, 0);
    kw_sink_get_totals(k, &tot);
    assert_int_equal(tot.failures, 3);
    assert_int_equal(tot.stored, 6);
    kw_sink_close(k);
    assert_string_equal(pg("SELECT string_agg(\"offset\" || ':' || batch, ',' ORDER BY "
                           "\"offset\") FROM records"), "0:1,1:1,2:2,3:2,4:3,5:3");
}

/* ---- crash point sink.mid-txn ---- */

static void test_crash_mid_txn(void **state)
{
    kw_record_t r[2] = { sink_rec("t", 0, 0, "a"), sink_rec("t", 0, 1, "b") };
    kw_sink_stats_t st;
    kw_sink_t *k;
    char err[512];
    int reached;

    (void)state;
    NEED_SERVER();
    kw_sink_close(open_ok());           /* the tables, before the child */
    assert_int_equal(sink_run_crash_child(spec, r, 2, &reached), KW_CRASH_EXIT);
    assert_true(reached);
    assert_int_equal(pg_long("SELECT COUNT(*) FROM records"), 0);
    assert_int_equal(pg_long("SELECT COUNT(*) FROM batches"), 0);
    assert_int_equal(pg_long("SELECT COUNT(*) FROM direct_ranges"), 0);

    /* delivered again, it is new: all of it stored, with its range */
    k = open_ok();
    assert_int_equal(kw_sink_txn_begin(k, 7, err, sizeof(err)), KW_OK);
    assert_int_equal(kw_sink_txn_write(k, r, 2, err, sizeof(err)), KW_OK);
    assert_int_equal(kw_sink_txn_put_range(k, "t", 0, -1, 0, 2, err, sizeof(err)), KW_OK);
    assert_int_equal(kw_sink_txn_commit(k, &st, err, sizeof(err)), KW_OK);
    assert_int_equal(st.stored, 2);
    kw_sink_close(k);

    /* a replay writes nothing and does not reach the crash point's COMMIT */
    assert_int_equal(sink_run_crash_child(spec, r, 2, &reached), 0);
    assert_true(reached);
    assert_int_equal(pg_long("SELECT COUNT(*) FROM records"), 2);
    assert_int_equal(pg_long("SELECT COUNT(*) FROM direct_ranges"), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_specs),
        cmocka_unit_test_setup(test_schema, setup),
        cmocka_unit_test_setup(test_store_and_read_back, setup),
        cmocka_unit_test_setup(test_duplicates_and_replays, setup),
        cmocka_unit_test_setup(test_txn_ranges_and_fence, setup),
        cmocka_unit_test_setup(test_txn_abort_stores_nothing, setup),
        cmocka_unit_test_setup(test_server_restart, setup),
        cmocka_unit_test_setup(test_crash_mid_txn, setup),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
