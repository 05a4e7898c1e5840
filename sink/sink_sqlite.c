/*
 * sink_sqlite.c -- the `sqlite:PATH` sink (rules in sink.h, every table and
 * column in sink/FORMAT.md).
 *
 * One batch, one transaction (sink.h T1-T4):
 *
 *   begin      BEGIN IMMEDIATE
 *   write      SELECT the batch's row in `batches`
 *                same fingerprint  -> ROLLBACK; replay: every record a
 *                                     duplicate delivery, nothing more
 *                                     happens for the batch (T3)
 *                other fingerprint -> warn (batch id reused) and go on
 *              for each record: INSERT OR IGNORE INTO records;
 *                sqlite3_changes() == 0 means (topic, partition, offset)
 *                was already stored: a duplicate delivery, counted
 *                (invariant 3)
 *              INSERT OR REPLACE INTO batches   -- fingerprint and counts
 *   put_range  INSERT INTO direct_ranges        -- direct mode's offset ranges
 *   commit     crash point sink.mid-txn, then COMMIT (synchronous=FULL:
 *              durable on return)
 *   abort      ROLLBACK
 *
 * A crash anywhere before COMMIT leaves nothing of the batch; after it, the
 * whole batch, its `batches` row and its ranges. So whether the tracker (or
 * direct mode) learned of the commit or not, delivering the batch again
 * stores nothing twice.
 *
 * The fingerprint (record count, first and last record's topic, partition
 * and offset) tells a replay of the same batch from a different batch that
 * got the same id; the second is stored record by record, so at worst its
 * duplicates are counted, never its records skipped.
 *
 * Schema version (PRAGMA user_version, FORMAT.md): checked at open in one
 * IMMEDIATE transaction with the CREATE TABLE IF NOT EXISTS of every table,
 * so two processes opening one new database at once do not race.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sqlite3.h>

#include "kw_fault.h"
#include "kw_file.h"
#include "kw_log.h"
#include "kw_time.h"
#include "sink_int.h"

typedef struct sqlite__sink {
    sqlite3      *db;
    char         *path;
    sqlite3_stmt *ins_record;
    sqlite3_stmt *get_batch;
    sqlite3_stmt *put_batch;
    sqlite3_stmt *put_range;
    sqlite3_stmt *range_next;
    sqlite3_stmt *last_batch;
    sqlite3_stmt *max_id;       /* the highest batch id anywhere: begin_next */
} sqlite__sink_t;

/* Every table of FORMAT.md; the records table exactly as DESIGN.md
 * "Outputs (sinks)" gives it. direct_ranges and its index are spelled as
 * direct mode spelled them before they moved here, so sqlite_master of an
 * upgraded database and of a new one read the same. */
static const char *const sqlite__schema =
    "CREATE TABLE IF NOT EXISTS records(topic TEXT, partition INTEGER, "
    "offset INTEGER, ts INTEGER, key BLOB, payload BLOB, batch INTEGER, "
    "PRIMARY KEY(topic, partition, offset));"
    "CREATE TABLE IF NOT EXISTS batches(id INTEGER PRIMARY KEY, "
    "records INTEGER NOT NULL, stored INTEGER NOT NULL, "
    "duplicates INTEGER NOT NULL, first_topic TEXT, first_partition INTEGER, "
    "first_offset INTEGER, last_topic TEXT, last_partition INTEGER, "
    "last_offset INTEGER, committed_ms INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS direct_ranges("
    "batch INTEGER NOT NULL, topic TEXT NOT NULL, "
    "partition INTEGER NOT NULL, from_offset INTEGER NOT NULL, "
    "until_offset INTEGER NOT NULL, "
    "PRIMARY KEY(batch, topic, partition));"
    "CREATE INDEX IF NOT EXISTS direct_ranges_tp "
    "ON direct_ranges(topic, partition, until_offset);";

static kw_err_t sqlite__err(sqlite__sink_t *q, kw_err_t err, char *errstr,
                            size_t errlen, const char *what)
{
    return kw_seterr(errstr, errlen, err, "sink sqlite:%s: %s: %s", q->path, what,
                     sqlite3_errmsg(q->db));
}

static kw_err_t sqlite__exec(sqlite__sink_t *q, const char *sql, const char *what,
                             char *errstr, size_t errlen)
{
    if (sqlite3_exec(q->db, sql, NULL, NULL, NULL) != SQLITE_OK)
        return sqlite__err(q, KW_EIO, errstr, errlen, what);
    return KW_OK;
}

/* One integer from sql (one row, one column). */
static kw_err_t sqlite__int(sqlite__sink_t *q, const char *sql, int64_t *v,
                            char *errstr, size_t errlen)
{
    sqlite3_stmt *st = NULL;
    int rc;

    if (sqlite3_prepare_v2(q->db, sql, -1, &st, NULL) != SQLITE_OK)
        return sqlite__err(q, KW_EIO, errstr, errlen, sql);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW)
        return sqlite__err(q, KW_EIO, errstr, errlen, sql);
    return KW_OK;
}

/*
 * The schema version rule of FORMAT.md: user_version 0 -- a new database,
 * or one written before versions existed, whose tables are today's -- gets
 * every table (IF NOT EXISTS) and user_version 1; 1 gets any table it lacks;
 * any other version is refused (KW_ECORRUPT), the database left as it is.
 */
static kw_err_t sqlite__schema_init(sqlite__sink_t *q, char *errstr, size_t errlen)
{
    char sql[64];
    int64_t version = 0, had = 0;
    kw_err_t err;

    err = sqlite__exec(q, "BEGIN IMMEDIATE", "begin", errstr, errlen);
    if (err != KW_OK)
        return err;
    err = sqlite__int(q, "PRAGMA user_version", &version, errstr, errlen);
    if (err != KW_OK)
        goto fail;
    if (version != 0 && version != KW_SINK_SQLITE_SCHEMA_VERSION) {
        err = kw_seterr(errstr, errlen, KW_ECORRUPT, "sink sqlite:%s: schema version "
                        "%" PRId64 " (PRAGMA user_version), this kwal knows %d: "
                        "written by a newer kwal, or not a kwal sink database "
                        "(sink/FORMAT.md)", q->path, version,
                        KW_SINK_SQLITE_SCHEMA_VERSION);
        goto fail;
    }
    err = sqlite__int(q, "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND "
                      "name IN ('records', 'batches', 'direct_ranges')", &had,
                      errstr, errlen);
    if (err == KW_OK)
        err = sqlite__exec(q, sqlite__schema, "create schema", errstr, errlen);
    if (err == KW_OK && version == 0) {
        snprintf(sql, sizeof(sql), "PRAGMA user_version = %d",
                 KW_SINK_SQLITE_SCHEMA_VERSION);
        err = sqlite__exec(q, sql, "set schema version", errstr, errlen);
    }
    if (err == KW_OK)
        err = sqlite__exec(q, "COMMIT", "commit schema", errstr, errlen);
    if (err != KW_OK)
        goto fail;
    if (version == 0 && had > 0)
        KW_LOG_I("sink", "sink sqlite:%s: no schema version (written before kwal "
                 "numbered them): set to %d, tables kept as they are", q->path,
                 KW_SINK_SQLITE_SCHEMA_VERSION);
    else if (version == 0)
        KW_LOG_I("sink", "created sink database %s (schema version %d)", q->path,
                 KW_SINK_SQLITE_SCHEMA_VERSION);
    return KW_OK;

fail:
    if (sqlite3_get_autocommit(q->db) == 0)
        (void)sqlite3_exec(q->db, "ROLLBACK", NULL, NULL, NULL);
    return err;
}

static void sqlite__close(kw_sink_t *s)
{
    sqlite__sink_t *q = s->impl;

    if (q == NULL)
        return;
    sqlite3_finalize(q->ins_record);
    sqlite3_finalize(q->get_batch);
    sqlite3_finalize(q->put_batch);
    sqlite3_finalize(q->put_range);
    sqlite3_finalize(q->range_next);
    sqlite3_finalize(q->last_batch);
    sqlite3_finalize(q->max_id);
    if (q->db != NULL && sqlite3_close(q->db) != SQLITE_OK)
        KW_LOG_E("sink", "sink sqlite:%s: close: %s", q->path, sqlite3_errmsg(q->db));
    free(q->path);
    free(q);
    s->impl = NULL;
}

static kw_err_t sqlite__open(kw_sink_t *s, const char *path, char *errstr, size_t errlen)
{
    sqlite__sink_t *q = calloc(1, sizeof(*q));
    kw_err_t err;

    if (q == NULL || (q->path = strdup(path)) == NULL) {
        free(q);
        return kw_seterr(errstr, errlen, KW_ENOMEM, "sink sqlite:%s: out of memory", path);
    }
    s->impl = q;
    {
        /* the database's directory, as the file sink makes its own */
        char dir[4096];
        const char *slash = strrchr(path, '/');

        if (slash != NULL && slash != path && (size_t)(slash - path) < sizeof(dir)) {
            int made = 0;

            snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
            if (kw_file_mkdirs(dir, 0755, &made) != 0) {
                err = kw_seterr(errstr, errlen, KW_EIO, "sink sqlite:%s: creating its "
                                "directory %s: %s", path, dir, strerror(errno));
                goto fail;
            }
            if (made)
                KW_LOG_I("sink", "created sink directory %s", dir);
        }
    }
    if (sqlite3_open_v2(path, &q->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                        SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
        err = q->db != NULL ? sqlite__err(q, KW_EIO, errstr, errlen, "open")
                            : kw_seterr(errstr, errlen, KW_ENOMEM,
                                        "sink sqlite:%s: open: out of memory", path);
        goto fail;
    }
    sqlite3_busy_timeout(q->db, 10000);
    /* journal_mode=WAL answers with a row; exec ignores it. A database that
     * cannot use WAL (e.g. on some network file systems) stays in its mode. */
    err = sqlite__exec(q, "PRAGMA journal_mode=WAL", "journal_mode=WAL", errstr, errlen);
    if (err == KW_OK)
        err = sqlite__exec(q, "PRAGMA synchronous=FULL", "synchronous=FULL",
                           errstr, errlen);
    if (err == KW_OK)
        err = sqlite__schema_init(q, errstr, errlen);
    if (err != KW_OK)
        goto fail;
    if (sqlite3_prepare_v2(q->db, "INSERT OR IGNORE INTO records(topic, partition, "
                           "offset, ts, key, payload, batch) "
                           "VALUES(?, ?, ?, ?, ?, ?, ?)", -1, &q->ins_record,
                           NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(q->db, "SELECT records, first_topic, first_partition, "
                           "first_offset, last_topic, last_partition, last_offset "
                           "FROM batches WHERE id = ?", -1, &q->get_batch,
                           NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(q->db, "INSERT OR REPLACE INTO batches(id, records, "
                           "stored, duplicates, first_topic, first_partition, "
                           "first_offset, last_topic, last_partition, last_offset, "
                           "committed_ms) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           -1, &q->put_batch, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(q->db, "INSERT INTO direct_ranges(batch, topic, partition, "
                           "from_offset, until_offset) VALUES(?, ?, ?, ?, ?)", -1,
                           &q->put_range, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(q->db, "SELECT COALESCE(MAX(until_offset), -1) FROM "
                           "direct_ranges WHERE topic = ? AND partition = ?", -1,
                           &q->range_next, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(q->db, "SELECT COALESCE(MAX(batch), 0) FROM direct_ranges",
                           -1, &q->last_batch, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(q->db, "SELECT MAX((SELECT COALESCE(MAX(id), 0) FROM batches), "
                           "(SELECT COALESCE(MAX(batch), 0) FROM direct_ranges))", -1,
                           &q->max_id, NULL) != SQLITE_OK) {
        err = sqlite__err(q, KW_EIO, errstr, errlen, "prepare (are the tables the "
                          "ones of sink/FORMAT.md?)");
        goto fail;
    }
    return KW_OK;

fail:
    sqlite__close(s);
    return err;
}

/* Bind a key or payload: NULL -> SQL NULL, empty -> zero-length BLOB. */
static int sqlite__bind_bytes(sqlite3_stmt *st, int i, const void *p, size_t len)
{
    if (p == NULL)
        return sqlite3_bind_null(st, i);
    if (len == 0)
        return sqlite3_bind_zeroblob(st, i, 0);
    return sqlite3_bind_blob64(st, i, p, (sqlite3_uint64)len, SQLITE_STATIC);
}

static int sqlite__text_eq(sqlite3_stmt *st, int col, const char *s)
{
    const unsigned char *t = sqlite3_column_text(st, col);

    return t != NULL && s != NULL && strcmp((const char *)t, s) == 0;
}

/* 1 if the row in get_batch (stepped) has this batch's fingerprint. */
static int sqlite__same_batch(sqlite3_stmt *st, const kw_record_t *recs, size_t n)
{
    if ((uint64_t)sqlite3_column_int64(st, 0) != n)
        return 0;
    if (n == 0)
        return 1;
    return sqlite__text_eq(st, 1, recs[0].topic) &&
           sqlite3_column_int64(st, 2) == recs[0].partition &&
           sqlite3_column_int64(st, 3) == recs[0].offset &&
           sqlite__text_eq(st, 4, recs[n - 1].topic) &&
           sqlite3_column_int64(st, 5) == recs[n - 1].partition &&
           sqlite3_column_int64(st, 6) == recs[n - 1].offset;
}

static kw_err_t sqlite__begin(kw_sink_t *s, uint64_t batch_id, char *errstr,
                              size_t errlen)
{
    (void)batch_id;
    return sqlite__exec(s->impl, "BEGIN IMMEDIATE", "begin", errstr, errlen);
}

static kw_err_t sqlite__read_int(sqlite__sink_t *q, sqlite3_stmt *st, int64_t *v,
                                 char *errstr, size_t errlen);

static kw_err_t sqlite__begin_next(kw_sink_t *s, uint64_t min_id, uint64_t *batch_id,
                                   char *errstr, size_t errlen)
{
    sqlite__sink_t *q = s->impl;
    int64_t max = 0;
    kw_err_t err = sqlite__exec(q, "BEGIN IMMEDIATE", "begin", errstr, errlen);

    if (err == KW_OK) {
        sqlite3_reset(q->max_id);
        err = sqlite__read_int(q, q->max_id, &max, errstr, errlen);
    }
    if (err == KW_OK)
        *batch_id = (uint64_t)max + 1 > min_id ? (uint64_t)max + 1 : min_id;
    return err;
}

static void sqlite__abort(kw_sink_t *s, uint64_t batch_id)
{
    sqlite__sink_t *q = s->impl;

    (void)batch_id;
    sqlite3_reset(q->get_batch);
    sqlite3_reset(q->ins_record);
    sqlite3_clear_bindings(q->ins_record);
    sqlite3_reset(q->put_batch);
    sqlite3_clear_bindings(q->put_batch);
    sqlite3_reset(q->put_range);
    sqlite3_clear_bindings(q->put_range);
    if (sqlite3_get_autocommit(q->db) == 0)
        (void)sqlite3_exec(q->db, "ROLLBACK", NULL, NULL, NULL);
}

/* The records and the `batches` row, inside the open transaction. On error
 * sink.c calls sqlite__abort (T2). */
static kw_err_t sqlite__write(kw_sink_t *s, uint64_t batch_id, const kw_record_t *recs,
                              size_t n, kw_sink_stats_t *st, int *replayed,
                              char *errstr, size_t errlen)
{
    sqlite__sink_t *q = s->impl;
    sqlite3_stmt *ins = q->ins_record, *pb = q->put_batch, *gb = q->get_batch;
    uint64_t stored = 0, dups = 0;
    int rc;

    sqlite3_reset(gb);
    sqlite3_bind_int64(gb, 1, (int64_t)batch_id);
    rc = sqlite3_step(gb);
    if (rc == SQLITE_ROW && sqlite__same_batch(gb, recs, n)) {
        sqlite3_reset(gb);
        (void)sqlite3_exec(q->db, "ROLLBACK", NULL, NULL, NULL);
        st->duplicates_delivered = n;
        *replayed = 1;
        return KW_OK;
    }
    if (rc == SQLITE_ROW) {
        KW_LOG_W("sink", "sink sqlite:%s: batch %" PRIu64 " is already stored with "
                 "other records (batch id reused?); storing this one record by record",
                 q->path, batch_id);
    } else if (rc != SQLITE_DONE) {
        return sqlite__err(q, KW_EIO, errstr, errlen, "read batches");
    }
    sqlite3_reset(gb);

    for (size_t i = 0; i < n; i++) {
        const kw_record_t *r = &recs[i];

        sqlite3_reset(ins);
        sqlite3_bind_text(ins, 1, r->topic, -1, SQLITE_STATIC);
        sqlite3_bind_int64(ins, 2, r->partition);
        sqlite3_bind_int64(ins, 3, r->offset);
        if (r->tstype == KW_TS_NOT_AVAILABLE)
            sqlite3_bind_null(ins, 4);
        else
            sqlite3_bind_int64(ins, 4, r->timestamp);
        sqlite__bind_bytes(ins, 5, r->key, r->key_len);
        sqlite__bind_bytes(ins, 6, r->value, r->value_len);
        sqlite3_bind_int64(ins, 7, (int64_t)batch_id);
        if (sqlite3_step(ins) != SQLITE_DONE)
            return sqlite__err(q, KW_EIO, errstr, errlen, "insert record");
        if (sqlite3_changes(q->db) > 0)
            stored++;
        else
            dups++;
    }
    sqlite3_reset(ins);
    sqlite3_clear_bindings(ins);

    sqlite3_reset(pb);
    sqlite3_bind_int64(pb, 1, (int64_t)batch_id);
    sqlite3_bind_int64(pb, 2, (int64_t)n);
    sqlite3_bind_int64(pb, 3, (int64_t)stored);
    sqlite3_bind_int64(pb, 4, (int64_t)dups);
    if (n > 0) {
        sqlite3_bind_text(pb, 5, recs[0].topic, -1, SQLITE_STATIC);
        sqlite3_bind_int64(pb, 6, recs[0].partition);
        sqlite3_bind_int64(pb, 7, recs[0].offset);
        sqlite3_bind_text(pb, 8, recs[n - 1].topic, -1, SQLITE_STATIC);
        sqlite3_bind_int64(pb, 9, recs[n - 1].partition);
        sqlite3_bind_int64(pb, 10, recs[n - 1].offset);
    } else {
        for (int c = 5; c <= 10; c++)
            sqlite3_bind_null(pb, c);
    }
    sqlite3_bind_int64(pb, 11, kw_wall_ms());
    rc = sqlite3_step(pb);
    sqlite3_reset(pb);
    sqlite3_clear_bindings(pb);
    if (rc != SQLITE_DONE)
        return sqlite__err(q, KW_EIO, errstr, errlen, "record batch");
    st->stored = stored;
    st->duplicates_delivered = dups;
    return KW_OK;
}

static kw_err_t sqlite__put_range(kw_sink_t *s, uint64_t batch_id, const char *topic,
                                  int32_t partition, int64_t expect_next, int64_t from_offset,
                                  int64_t until_offset, char *errstr, size_t errlen)
{
    sqlite__sink_t *q = s->impl;
    sqlite3_stmt *pr = q->put_range;
    int rc;

    if (expect_next != KW_SINK_RANGE_UNCHECKED) {
        int64_t end;
        kw_err_t err;

        sqlite3_reset(q->range_next);
        sqlite3_bind_text(q->range_next, 1, topic, -1, SQLITE_STATIC);
        sqlite3_bind_int64(q->range_next, 2, partition);
        if ((err = sqlite__read_int(q, q->range_next, &end, errstr, errlen)) != KW_OK)
            return err;
        if (end != expect_next)
            return kw_seterr(errstr, errlen, KW_EFENCED, "sink sqlite:%s: batch %" PRIu64
                             ": %s/%d: its stored ranges end at %" PRId64 ", not %" PRId64
                             ": another instance stored a range of it meanwhile", q->path,
                             batch_id, topic, (int)partition, end, expect_next);
    }

    sqlite3_reset(pr);
    sqlite3_bind_int64(pr, 1, (int64_t)batch_id);
    sqlite3_bind_text(pr, 2, topic, -1, SQLITE_STATIC);
    sqlite3_bind_int64(pr, 3, partition);
    sqlite3_bind_int64(pr, 4, from_offset);
    sqlite3_bind_int64(pr, 5, until_offset);
    rc = sqlite3_step(pr);
    if (rc != SQLITE_DONE)
        kw_seterr(errstr, errlen, KW_EIO, "sink sqlite:%s: batch %" PRIu64 ": store "
                  "range %s/%d [%" PRId64 ", %" PRId64 "): %s", q->path, batch_id,
                  topic, (int)partition, from_offset, until_offset,
                  sqlite3_errmsg(q->db));
    sqlite3_reset(pr);
    sqlite3_clear_bindings(pr);
    return rc == SQLITE_DONE ? KW_OK : KW_EIO;
}

/* T4: sink.mid-txn after everything of the batch is written, before COMMIT. */
static kw_err_t sqlite__commit(kw_sink_t *s, uint64_t batch_id, char *errstr,
                               size_t errlen)
{
    (void)batch_id;
    kw_crash(KW_CRASH_SINK_MID_TXN);
    return sqlite__exec(s->impl, "COMMIT", "commit", errstr, errlen);
}

/* Step st (bound, no transaction open) for one integer; reset after. */
static kw_err_t sqlite__read_int(sqlite__sink_t *q, sqlite3_stmt *st, int64_t *v,
                                 char *errstr, size_t errlen)
{
    int rc = sqlite3_step(st);

    if (rc == SQLITE_ROW)
        *v = sqlite3_column_int64(st, 0);
    else
        sqlite__err(q, KW_EIO, errstr, errlen, "read direct_ranges");
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc == SQLITE_ROW ? KW_OK : KW_EIO;
}

static kw_err_t sqlite__range_next(kw_sink_t *s, const char *topic, int32_t partition,
                                   int64_t *next, char *errstr, size_t errlen)
{
    sqlite__sink_t *q = s->impl;

    sqlite3_reset(q->range_next);
    sqlite3_bind_text(q->range_next, 1, topic, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q->range_next, 2, partition);
    return sqlite__read_int(q, q->range_next, next, errstr, errlen);
}

static kw_err_t sqlite__ranges_last_batch(kw_sink_t *s, uint64_t *batch,
                                          char *errstr, size_t errlen)
{
    sqlite__sink_t *q = s->impl;
    int64_t v = 0;
    kw_err_t err;

    sqlite3_reset(q->last_batch);
    err = sqlite__read_int(q, q->last_batch, &v, errstr, errlen);
    *batch = v > 0 ? (uint64_t)v : 0;
    return err;
}

const kw__sink_ops_t kw__sink_sqlite_ops = {
    .kind = KW_SINK_SQLITE,
    .name = "sqlite",
    .arg_what = "path",
    .arg_meta = "PATH",
    .open = sqlite__open,
    .close = sqlite__close,
    .begin = sqlite__begin,
    .begin_next = sqlite__begin_next,
    .write = sqlite__write,
    .commit = sqlite__commit,
    .abort = sqlite__abort,
    .put_range = sqlite__put_range,
    .range_next = sqlite__range_next,
    .ranges_last_batch = sqlite__ranges_last_batch,
};
