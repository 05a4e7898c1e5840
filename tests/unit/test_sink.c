/*
 * test_sink.c -- the sinks (sink/sink.h): spec parsing; the sqlite sink's
 * schema (exactly DESIGN.md's), its records read back with the sqlite3 API,
 * duplicate deliveries counted (invariant 3), replayed batches recognised,
 * reused batch ids stored record by record, and the direct-mode hook inside
 * the transaction; the file sink's atomic naming and replay; the JSON lines
 * envelope and its escaping; the jsonl sink on stdout; the null sink.
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
#include <unistd.h>

#include <sqlite3.h>

#include "sink.h"
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

static kw_sink_t *open_ok(const char *spec)
{
    kw_sink_t *k = NULL;
    char err[512];

    if (kw_sink_open(spec, &k, err, sizeof(err)) != KW_OK)
        fail_msg("open %s: %s", spec, err);
    return k;
}

static kw_record_t rec(const char *topic, int32_t part, int64_t off, const char *value)
{
    kw_record_t r;

    memset(&r, 0, sizeof(r));
    r.topic = topic;
    r.partition = part;
    r.offset = off;
    r.tstype = KW_TS_CREATE_TIME;
    r.timestamp = 1700000000000 + off;
    r.key = "k";
    r.key_len = 1;
    r.value = value;
    r.value_len = value != NULL ? strlen(value) : 0;
    return r;
}

static kw_sink_stats_t write_ok(kw_sink_t *k, uint64_t batch, const kw_record_t *r,
                                size_t n)
{
    kw_sink_stats_t st;
    char err[512];

    if (kw_sink_write_batch(k, batch, r, n, &st, err, sizeof(err)) != KW_OK)
        fail_msg("write batch %llu: %s", (unsigned long long)batch, err);
    assert_int_equal(st.delivered, n);
    return st;
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
    k = open_ok(spec);
    assert_int_equal(kw_sink_kind(k), KW_SINK_SQLITE);
    assert_string_equal(kw_sink_kind_name(k), "sqlite");
    assert_non_null(kw_sink_sqlite_db(k));
    kw_sink_close(k);
    test_path(spec, sizeof(spec), "file:%s/out", s->dir);
    k = open_ok(spec);
    assert_int_equal(kw_sink_kind(k), KW_SINK_FILE);
    assert_null(kw_sink_sqlite_db(k));
    kw_sink_close(k);
    k = open_ok("jsonl");
    assert_string_equal(kw_sink_kind_name(k), "jsonl");
    kw_sink_close(k);
    k = open_ok("null");
    assert_int_equal(kw_sink_kind(k), KW_SINK_NULL);
    kw_sink_close(k);
    kw_sink_close(NULL);

    /* A database in a directory that does not exist: KW_EIO with the path. */
    test_path(spec, sizeof(spec), "sqlite:%s/no/such/out.db", s->dir);
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
    s->sink = open_ok(spec);
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
    sqlite3_close(db);

    /* Reopening an existing output keeps it. */
    s->sink = open_ok(spec);
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
    s->sink = open_ok(spec);

    r[0] = rec("t", 0, 10, "hello");
    r[1] = rec("t", 0, 11, NULL);          /* null payload */
    r[1].key = NULL;                       /* null key */
    r[1].tstype = KW_TS_NOT_AVAILABLE;
    r[1].timestamp = -1;
    r[2] = rec("u", 3, 7, NULL);
    r[2].key = "";                         /* empty key */
    r[2].key_len = 0;
    r[2].value = bin;                      /* binary payload, NULs inside */
    r[2].value_len = sizeof(bin);
    st = write_ok(s->sink, 1, r, 3);
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
    s->sink = open_ok(spec);
    for (int i = 0; i < 3; i++)
        a[i] = rec("t", 0, i, "v");
    st = write_ok(s->sink, 1, a, 3);
    assert_int_equal(st.stored, 3);

    /* The same batch again (the tracker never heard of the commit): a replay,
     * recognised whole; nothing written. */
    st = write_ok(s->sink, 1, a, 3);
    assert_int_equal(st.stored, 0);
    assert_int_equal(st.duplicates_delivered, 3);

    /* A new batch overlapping the old one (e.g. --classic mode re-consumes):
     * the overlap is counted, not stored twice. A record twice in one batch
     * too. */
    b[0] = rec("t", 0, 2, "v");
    b[1] = rec("t", 0, 3, "v");
    b[2] = rec("t", 0, 3, "v");
    b[3] = rec("t", 1, 0, "v");
    st = write_ok(s->sink, 2, b, 4);
    assert_int_equal(st.stored, 2);
    assert_int_equal(st.duplicates_delivered, 2);

    /* Across a restart of the sink: batch 2 is still recognised. */
    kw_sink_close(s->sink);
    s->sink = open_ok(spec);
    st = write_ok(s->sink, 2, b, 4);
    assert_int_equal(st.stored, 0);
    assert_int_equal(st.duplicates_delivered, 4);

    /* A reused id with other records: stored record by record, never skipped. */
    test_log_capture_begin();
    c[0] = rec("t", 5, 0, "new");
    c[1] = rec("t", 0, 0, "old");
    st = write_ok(s->sink, 1, c, 2);
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

typedef struct hook_ctx {
    int      fail;
    int      calls;
    uint64_t last_batch;
} hook_ctx_t;

static kw_err_t ranges_hook(struct sqlite3 *db, uint64_t batch, void *opaque,
                            char *errstr, size_t errlen)
{
    hook_ctx_t *h = opaque;
    char sql[200];

    h->calls++;
    h->last_batch = batch;
    snprintf(sql, sizeof(sql), "CREATE TABLE IF NOT EXISTS ranges(batch INTEGER); "
             "INSERT INTO ranges VALUES(%llu)", (unsigned long long)batch);
    if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK)
        return kw_seterr(errstr, errlen, KW_EIO, "hook: %s", sqlite3_errmsg(db));
    if (h->fail)
        return kw_seterr(errstr, errlen, KW_EIO, "hook failed on purpose");
    return KW_OK;
}

static void test_sqlite_hook(void **state)
{
    tstate_t *s = *state;
    hook_ctx_t h = { 1, 0, 0 };
    kw_record_t r[2] = { rec("t", 0, 0, "a"), rec("t", 0, 1, "b") };
    kw_sink_stats_t st;
    kw_sink_t *j;
    char path[700], spec[710], err[512];
    sqlite3 *db;

    test_path(path, sizeof(path), "%s/out.db", s->dir);
    test_path(spec, sizeof(spec), "sqlite:%s", path);
    s->sink = open_ok(spec);

    /* A failing hook rolls the whole batch back. */
    assert_int_equal(kw_sink_write_batch_tx(s->sink, 4, r, 2, ranges_hook, &h, &st,
                                            err, sizeof(err)), KW_EIO);
    assert_string_equal(err, "hook failed on purpose");
    assert_int_equal(h.calls, 1);
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(db_int(db, "SELECT COUNT(*) FROM records"), 0);
    assert_int_equal(db_int(db, "SELECT COUNT(*) FROM batches"), 0);
    assert_int_equal(db_int(db, "SELECT COUNT(*) FROM sqlite_master WHERE name = "
                            "'ranges'"), 0);

    /* Retried: records, batch row and the hook's rows commit together. */
    h.fail = 0;
    assert_int_equal(kw_sink_write_batch_tx(s->sink, 4, r, 2, ranges_hook, &h, &st,
                                            err, sizeof(err)), KW_OK);
    assert_int_equal(st.stored, 2);
    assert_int_equal(h.calls, 2);
    assert_int_equal(h.last_batch, 4);
    assert_int_equal(db_int(db, "SELECT COUNT(*) FROM records"), 2);
    assert_int_equal(db_int(db, "SELECT batch FROM ranges"), 4);

    /* A replay does not call the hook (its ranges committed with it). */
    assert_int_equal(kw_sink_write_batch_tx(s->sink, 4, r, 2, ranges_hook, &h, &st,
                                            err, sizeof(err)), KW_OK);
    assert_int_equal(h.calls, 2);
    assert_int_equal(st.duplicates_delivered, 2);
    sqlite3_close(db);

    /* Only the sqlite sink takes a hook. */
    j = open_ok("null");
    assert_int_equal(kw_sink_write_batch_tx(j, 1, r, 2, ranges_hook, &h, &st,
                                            err, sizeof(err)), KW_EINVAL);
    kw_sink_close(j);

    /* Bad batch ids. */
    assert_int_equal(kw_sink_write_batch(s->sink, 0, r, 2, &st, err, sizeof(err)),
                     KW_EINVAL);
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
    kw_record_t r = rec("orders", 3, 42, "pay");
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
    r = rec("t", 0, 0, "");
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
    kw_record_t r = rec("t", 0, 0, NULL);
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
        kw_record_t r = rec("to\"pic", 0, 0, "v");
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

static void test_file_sink(void **state)
{
    tstate_t *s = *state;
    kw_record_t r[3] = { rec("t", 0, 0, "a\nb"), rec("t", 0, 1, "c"),
                         rec("t", 1, 9, "d") };
    kw_sink_stats_t st;
    char dir[700], spec[710], path[800], err[512], *text, *want;
    kw_sink_buf_t b = { NULL, 0, 0 };
    char **names;
    size_t n;

    test_path(dir, sizeof(dir), "%s/out", s->dir);     /* created by open */
    test_path(spec, sizeof(spec), "file:%s", dir);
    s->sink = open_ok(spec);

    /* A leftover temporary file of a crashed attempt is overwritten. */
    test_path(path, sizeof(path), "%s/batch-0000000007.jsonl.tmp", dir);
    assert_int_equal(test_write_file(path, "garbage\n", 8), 0);

    st = write_ok(s->sink, 7, r, 3);
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
    st = write_ok(s->sink, 7, r, 3);
    assert_int_equal(st.stored, 0);
    assert_int_equal(st.duplicates_delivered, 3);

    /* Batch 7 with another record count: refused, file untouched. */
    assert_int_equal(kw_sink_write_batch(s->sink, 7, r, 2, &st, err, sizeof(err)),
                     KW_ECORRUPT);
    assert_non_null(strstr(err, "batch-0000000007.jsonl"));

    /* An empty batch is an empty file; ids sort by name. */
    st = write_ok(s->sink, 12, NULL, 0);
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
    s->sink = open_ok(spec);
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
    st = write_ok(s->sink, 13, r, 3);
    assert_int_equal(st.stored, 3);
}

/* ---- jsonl and null ---- */

static void test_jsonl_and_null(void **state)
{
    tstate_t *s = *state;
    kw_record_t r[2] = { rec("t", 0, 5, "x\ty"), rec("t", 2, 6, "\x01") };
    kw_sink_buf_t b = { NULL, 0, 0 };
    kw_sink_totals_t tot;
    kw_sink_stats_t st;
    char path[700], *text;
    int fd, saved;

    test_path(path, sizeof(path), "%s/stdout", s->dir);
    s->sink = open_ok("jsonl");
    fflush(stdout);
    saved = dup(STDOUT_FILENO);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(saved >= 0 && fd >= 0);
    assert_int_equal(dup2(fd, STDOUT_FILENO), STDOUT_FILENO);
    close(fd);
    st = write_ok(s->sink, 1, r, 2);
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

    s->sink = open_ok("null");
    st = write_ok(s->sink, 1, r, 2);
    assert_int_equal(st.stored, 0);
    st = write_ok(s->sink, 1, r, 2);
    assert_int_equal(st.duplicates_delivered, 0);
    kw_sink_get_totals(s->sink, &tot);
    assert_int_equal(tot.batches, 2);
    assert_int_equal(tot.delivered, 4);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_specs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sqlite_schema_exact, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sqlite_store_and_read_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sqlite_duplicates, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sqlite_hook, setup, teardown),
        cmocka_unit_test_setup_teardown(test_json_envelope, setup, teardown),
        cmocka_unit_test_setup_teardown(test_json_escaping, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_sink, setup, teardown),
        cmocka_unit_test_setup_teardown(test_jsonl_and_null, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
