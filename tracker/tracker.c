/*
 * tracker.c -- the block tracker in SQLite (tracker.h has the states and the
 * schema).
 *
 * How it works. One connection per handle, opened with SQLITE_OPEN_NOMUTEX
 * and guarded by the handle's own mutex, so calls from the appender, the
 * ZooKeeper updater and the batcher are serialised. The database runs in
 * journal_mode=WAL with synchronous=FULL: a COMMIT returns only once the
 * SQLite WAL is fsynced, so a state the caller was told about survives a
 * crash or power loss.
 *
 * Every state change is one transaction, opened with BEGIN IMMEDIATE (the
 * write lock up front, so the reads that decide a change and the change
 * cannot be split by another writer) and rolled back on any error: after a
 * crash at any point each block is in exactly one state, and a batch and its
 * blocks agree. That is what lets recovery trust the tracker: a block that
 * is not PROCESSED has not been acknowledged by the sink, so its WAL record
 * is still there (invariant 1) and it is delivered again (invariant 2).
 *
 * Batch ids come from AUTOINCREMENT and are never reused: sinks recognise a
 * replayed batch by its id (sink.h), and a reused id could make a sink skip
 * a new batch.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "kw_log.h"
#include "tracker.h"

struct kw_tracker {
    sqlite3        *db;
    char           *path;
    pthread_mutex_t mu;
};

static const char *const trk__schema =
    "CREATE TABLE blocks("
    " lsn INTEGER PRIMARY KEY,"
    " segment INTEGER NOT NULL,"
    " \"offset\" INTEGER NOT NULL,"
    " size INTEGER NOT NULL,"
    " receiver INTEGER NOT NULL,"
    " records INTEGER NOT NULL,"
    " bytes INTEGER NOT NULL,"
    " state INTEGER NOT NULL CHECK(state BETWEEN 1 AND 4),"
    " batch INTEGER REFERENCES delivery_batches(id),"
    " created_ms INTEGER NOT NULL);"
    "CREATE INDEX blocks_state ON blocks(state);"
    "CREATE INDEX blocks_batch ON blocks(batch);"
    "CREATE TABLE block_ranges("
    " lsn INTEGER NOT NULL REFERENCES blocks(lsn),"
    " topic TEXT NOT NULL,"
    " \"partition\" INTEGER NOT NULL,"
    " from_offset INTEGER NOT NULL,"
    " until_offset INTEGER NOT NULL,"
    " UNIQUE(lsn, topic, \"partition\"));"
    "CREATE TABLE delivery_batches("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " created_ms INTEGER NOT NULL,"
    " state INTEGER NOT NULL CHECK(state BETWEEN 1 AND 2),"
    " blocks INTEGER NOT NULL,"
    " records INTEGER NOT NULL);"
    "CREATE TABLE partitions("
    " topic TEXT NOT NULL,"
    " \"partition\" INTEGER NOT NULL,"
    " until_offset INTEGER NOT NULL,"
    " PRIMARY KEY(topic, \"partition\"));"
    "PRAGMA user_version = 2;";

static const char *const trk__upgrade_1_to_2 =
    "ALTER TABLE batches RENAME TO delivery_batches;"
    "UPDATE sqlite_sequence SET name = 'delivery_batches' WHERE name = 'batches';"
    "PRAGMA user_version = 2;";

#define TRK__BLOCK_COLS \
    "lsn, segment, \"offset\", size, receiver, records, bytes, state, batch, created_ms"

/* ---- Errors and statements ---- */

static kw_err_t trk__err(kw_tracker_t *t, char *errstr, size_t errlen,
                         const char *what)
{
    int code = sqlite3_errcode(t->db);
    kw_err_t err = (code == SQLITE_NOTADB || code == SQLITE_CORRUPT)
                       ? KW_ECORRUPT : KW_EIO;

    return kw_seterr(errstr, errlen, err, "tracker %s: %s: %s", t->path, what,
                     sqlite3_errmsg(t->db));
}

static kw_err_t trk__exec(kw_tracker_t *t, const char *sql, const char *what,
                          char *errstr, size_t errlen)
{
    if (sqlite3_exec(t->db, sql, NULL, NULL, NULL) != SQLITE_OK)
        return trk__err(t, errstr, errlen, what);
    return KW_OK;
}

static kw_err_t trk__prepare(kw_tracker_t *t, const char *sql, sqlite3_stmt **st,
                             char *errstr, size_t errlen)
{
    if (sqlite3_prepare_v2(t->db, sql, -1, st, NULL) != SQLITE_OK) {
        *st = NULL;
        return trk__err(t, errstr, errlen, "prepare");
    }
    return KW_OK;
}

static kw_err_t trk__begin(kw_tracker_t *t, char *errstr, size_t errlen)
{
    return trk__exec(t, "BEGIN IMMEDIATE", "begin", errstr, errlen);
}

static kw_err_t trk__commit(kw_tracker_t *t, char *errstr, size_t errlen)
{
    return trk__exec(t, "COMMIT", "commit", errstr, errlen);
}

static void trk__rollback(kw_tracker_t *t)
{
    if (sqlite3_get_autocommit(t->db) == 0)
        (void)sqlite3_exec(t->db, "ROLLBACK", NULL, NULL, NULL);
}

/* Run a statement that returns one row with one integer (NULL -> *null = 1). */
static kw_err_t trk__scalar(kw_tracker_t *t, const char *sql, int64_t arg,
                            int64_t *val, int *isnull, char *errstr, size_t errlen)
{
    sqlite3_stmt *st;
    kw_err_t err = trk__prepare(t, sql, &st, errstr, errlen);
    int rc;

    if (err != KW_OK)
        return err;
    if (sqlite3_bind_parameter_count(st) > 0)
        sqlite3_bind_int64(st, 1, arg);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *isnull = sqlite3_column_type(st, 0) == SQLITE_NULL;
        *val = sqlite3_column_int64(st, 0);
    } else if (rc == SQLITE_DONE) {
        *isnull = 1;
        *val = 0;
    } else {
        err = trk__err(t, errstr, errlen, "query");
    }
    sqlite3_finalize(st);
    return err;
}

/* ---- Block lists ---- */

void kw_tracker_blocks_free(kw_tracker_blocks_t *list)
{
    if (list == NULL)
        return;
    free(list->v);
    list->v = NULL;
    list->n = 0;
}

/* Step a statement selecting TRK__BLOCK_COLS into list (appends). */
static kw_err_t trk__read_blocks(kw_tracker_t *t, sqlite3_stmt *st,
                                 kw_tracker_blocks_t *list,
                                 char *errstr, size_t errlen)
{
    size_t cap = list->n;
    int rc;

    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        kw_tracker_block_t *b;

        if (list->n == cap) {
            size_t ncap = cap == 0 ? 16 : cap * 2;
            kw_tracker_block_t *nv = realloc(list->v, ncap * sizeof(*nv));

            if (nv == NULL)
                return kw_seterr(errstr, errlen, KW_ENOMEM,
                                 "tracker %s: out of memory listing blocks", t->path);
            list->v = nv;
            cap = ncap;
        }
        b = &list->v[list->n++];
        memset(b, 0, sizeof(*b));
        b->pos.lsn = (uint64_t)sqlite3_column_int64(st, 0);
        b->pos.segment = (uint64_t)sqlite3_column_int64(st, 1);
        b->pos.offset = (uint64_t)sqlite3_column_int64(st, 2);
        b->pos.size = (uint32_t)sqlite3_column_int64(st, 3);
        b->receiver = (uint32_t)sqlite3_column_int64(st, 4);
        b->records = (uint32_t)sqlite3_column_int64(st, 5);
        b->bytes = (uint64_t)sqlite3_column_int64(st, 6);
        b->state = (kw_block_state_t)sqlite3_column_int(st, 7);
        b->batch = (uint64_t)sqlite3_column_int64(st, 8);   /* NULL -> 0 */
        b->created_ms = sqlite3_column_int64(st, 9);
    }
    if (rc != SQLITE_DONE)
        return trk__err(t, errstr, errlen, "list blocks");
    return KW_OK;
}

static kw_err_t trk__list(kw_tracker_t *t, const char *sql, int bind, int64_t arg,
                          kw_tracker_blocks_t *list, char *errstr, size_t errlen)
{
    sqlite3_stmt *st;
    kw_err_t err = trk__prepare(t, sql, &st, errstr, errlen);

    if (err != KW_OK)
        return err;
    if (bind)
        sqlite3_bind_int64(st, 1, arg);
    err = trk__read_blocks(t, st, list, errstr, errlen);
    sqlite3_finalize(st);
    if (err != KW_OK)
        kw_tracker_blocks_free(list);
    return err;
}

/* ---- Open and close ---- */

static kw_err_t trk__init_schema(kw_tracker_t *t, char *errstr, size_t errlen)
{
    int64_t version, tables;
    int isnull;
    kw_err_t err;

    /* journal_mode returns a row: read it to check WAL mode took. */
    {
        sqlite3_stmt *st;
        int ok;

        err = trk__prepare(t, "PRAGMA journal_mode=WAL", &st, errstr, errlen);
        if (err != KW_OK)
            return err;
        ok = sqlite3_step(st) == SQLITE_ROW &&
             sqlite3_column_text(st, 0) != NULL &&
             strcmp((const char *)sqlite3_column_text(st, 0), "wal") == 0;
        if (!ok) {
            err = trk__err(t, errstr, errlen, "journal_mode=WAL");
            sqlite3_finalize(st);
            return err == KW_OK ? KW_EIO : err;
        }
        sqlite3_finalize(st);
    }
    err = trk__exec(t, "PRAGMA synchronous=FULL", "synchronous=FULL", errstr, errlen);
    if (err != KW_OK)
        return err;

    err = trk__begin(t, errstr, errlen);
    if (err != KW_OK)
        return err;
    err = trk__scalar(t, "PRAGMA user_version", 0, &version, &isnull, errstr, errlen);
    if (err != KW_OK)
        goto fail;
    if (version == 0) {
        err = trk__scalar(t, "SELECT COUNT(*) FROM sqlite_master", 0, &tables,
                          &isnull, errstr, errlen);
        if (err != KW_OK)
            goto fail;
        if (tables != 0) {
            err = kw_seterr(errstr, errlen, KW_ECORRUPT,
                            "tracker %s: not a kwal tracker database "
                            "(user_version 0, %" PRId64 " schema objects)",
                            t->path, tables);
            goto fail;
        }
        err = trk__exec(t, trk__schema, "create schema", errstr, errlen);
        if (err != KW_OK)
            goto fail;
        KW_LOG_I("tracker", "created tracker database %s", t->path);
    } else if (version == 1) {
        /* version 1 called delivery_batches "batches", the name of the sink's
         * own table: renamed (the blocks' references follow, and so does the
         * AUTOINCREMENT counter, so no batch id is ever reused) */
        err = trk__exec(t, trk__upgrade_1_to_2, "upgrade schema 1 -> 2", errstr, errlen);
        if (err != KW_OK)
            goto fail;
        KW_LOG_I("tracker", "upgraded tracker database %s to schema version 2", t->path);
    } else if (version != KW_TRACKER_SCHEMA_VERSION) {
        err = kw_seterr(errstr, errlen, KW_ECORRUPT,
                        "tracker %s: schema version %" PRId64 ", this kwal knows %d",
                        t->path, version, KW_TRACKER_SCHEMA_VERSION);
        goto fail;
    }
    return trk__commit(t, errstr, errlen);

fail:
    trk__rollback(t);
    return err;
}

kw_err_t kw_tracker_open(const char *path, kw_tracker_t **out,
                         char *errstr, size_t errlen)
{
    kw_tracker_t *t;
    kw_err_t err;
    int rc;

    *out = NULL;
    if (path == NULL || path[0] == '\0')
        return kw_seterr(errstr, errlen, KW_EINVAL, "tracker: empty database path");
    t = calloc(1, sizeof(*t));
    if (t == NULL || (t->path = strdup(path)) == NULL) {
        free(t);
        return kw_seterr(errstr, errlen, KW_ENOMEM, "tracker %s: out of memory", path);
    }
    pthread_mutex_init(&t->mu, NULL);
    rc = sqlite3_open_v2(path, &t->db,
                         SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                         NULL);
    if (rc != SQLITE_OK) {
        err = t->db != NULL ? trk__err(t, errstr, errlen, "open")
                            : kw_seterr(errstr, errlen, KW_ENOMEM,
                                        "tracker %s: open: out of memory", path);
        goto fail;
    }
    sqlite3_extended_result_codes(t->db, 0);
    sqlite3_busy_timeout(t->db, 10000);
    err = trk__init_schema(t, errstr, errlen);
    if (err != KW_OK) {
        /* leave a database we cannot use exactly as it was: no checkpoint
         * of its -wal file into it on close (recovery moves them aside) */
        (void)sqlite3_db_config(t->db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, NULL);
        goto fail;
    }
    *out = t;
    return KW_OK;

fail:
    kw_tracker_close(t);
    return err;
}

void kw_tracker_close(kw_tracker_t *t)
{
    if (t == NULL)
        return;
    if (t->db != NULL && sqlite3_close(t->db) != SQLITE_OK)
        KW_LOG_E("tracker", "tracker %s: close: %s", t->path, sqlite3_errmsg(t->db));
    pthread_mutex_destroy(&t->mu);
    free(t->path);
    free(t);
}

const char *kw_tracker_path(const kw_tracker_t *t)
{
    return t->path;
}

/* ---- State changes ---- */

static kw_err_t trk__insert_locked(kw_tracker_t *t, const kw_tracker_block_t *blk,
                                   const kw_tracker_range_t *ranges, size_t nranges,
                                   int *inserted, char *errstr, size_t errlen)
{
    sqlite3_stmt *st = NULL;
    kw_err_t err;
    int rc;

    err = trk__begin(t, errstr, errlen);
    if (err != KW_OK)
        return err;

    /* Idempotent by LSN: the same block again is a no-op. */
    err = trk__prepare(t, "SELECT segment, \"offset\", size FROM blocks WHERE lsn = ?",
                       &st, errstr, errlen);
    if (err != KW_OK)
        goto fail;
    sqlite3_bind_int64(st, 1, (int64_t)blk->pos.lsn);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        uint64_t seg = (uint64_t)sqlite3_column_int64(st, 0);
        uint64_t off = (uint64_t)sqlite3_column_int64(st, 1);
        uint32_t size = (uint32_t)sqlite3_column_int64(st, 2);

        if (seg != blk->pos.segment || off != blk->pos.offset || size != blk->pos.size) {
            err = kw_seterr(errstr, errlen, KW_ECORRUPT,
                            "tracker %s: LSN %" PRIu64 " already tracked at segment "
                            "%" PRIu64 " offset %" PRIu64 " size %" PRIu32
                            ", now given at segment %" PRIu64 " offset %" PRIu64
                            " size %" PRIu32, t->path, blk->pos.lsn, seg, off, size,
                            blk->pos.segment, blk->pos.offset, blk->pos.size);
            goto fail;
        }
        sqlite3_finalize(st);
        trk__rollback(t);
        return KW_OK;
    }
    if (rc != SQLITE_DONE) {
        err = trk__err(t, errstr, errlen, "insert block");
        goto fail;
    }
    sqlite3_finalize(st);
    st = NULL;

    err = trk__prepare(t, "INSERT INTO blocks(" TRK__BLOCK_COLS ") "
                       "VALUES(?, ?, ?, ?, ?, ?, ?, 1, NULL, ?)", &st, errstr, errlen);
    if (err != KW_OK)
        goto fail;
    sqlite3_bind_int64(st, 1, (int64_t)blk->pos.lsn);
    sqlite3_bind_int64(st, 2, (int64_t)blk->pos.segment);
    sqlite3_bind_int64(st, 3, (int64_t)blk->pos.offset);
    sqlite3_bind_int64(st, 4, blk->pos.size);
    sqlite3_bind_int64(st, 5, blk->receiver);
    sqlite3_bind_int64(st, 6, blk->records);
    sqlite3_bind_int64(st, 7, (int64_t)blk->bytes);
    sqlite3_bind_int64(st, 8, blk->created_ms);
    if (sqlite3_step(st) != SQLITE_DONE) {
        err = trk__err(t, errstr, errlen, "insert block");
        goto fail;
    }
    sqlite3_finalize(st);
    st = NULL;

    if (nranges > 0) {
        sqlite3_stmt *pm = NULL;

        err = trk__prepare(t, "INSERT INTO block_ranges(lsn, topic, \"partition\", "
                           "from_offset, until_offset) VALUES(?, ?, ?, ?, ?)",
                           &st, errstr, errlen);
        if (err != KW_OK)
            goto fail;
        err = trk__prepare(t, "INSERT INTO partitions(topic, \"partition\", until_offset) "
                           "VALUES(?, ?, ?) ON CONFLICT(topic, \"partition\") DO UPDATE "
                           "SET until_offset = MAX(until_offset, excluded.until_offset)",
                           &pm, errstr, errlen);
        if (err != KW_OK)
            goto fail;
        for (size_t i = 0; i < nranges; i++) {
            const kw_tracker_range_t *r = &ranges[i];

            sqlite3_reset(st);
            sqlite3_bind_int64(st, 1, (int64_t)blk->pos.lsn);
            sqlite3_bind_text(st, 2, r->topic, -1, SQLITE_STATIC);
            sqlite3_bind_int64(st, 3, r->partition);
            sqlite3_bind_int64(st, 4, r->from_offset);
            sqlite3_bind_int64(st, 5, r->until_offset);
            sqlite3_reset(pm);
            sqlite3_bind_text(pm, 1, r->topic, -1, SQLITE_STATIC);
            sqlite3_bind_int64(pm, 2, r->partition);
            sqlite3_bind_int64(pm, 3, r->until_offset);
            if (sqlite3_step(st) != SQLITE_DONE || sqlite3_step(pm) != SQLITE_DONE) {
                err = trk__err(t, errstr, errlen, "insert block range");
                sqlite3_finalize(pm);
                goto fail;
            }
        }
        sqlite3_finalize(pm);
        sqlite3_finalize(st);
        st = NULL;
    }

    err = trk__commit(t, errstr, errlen);
    if (err != KW_OK)
        goto fail;
    if (inserted != NULL)
        *inserted = 1;
    return KW_OK;

fail:
    sqlite3_finalize(st);
    trk__rollback(t);
    return err;
}

kw_err_t kw_tracker_insert_block(kw_tracker_t *t, const kw_tracker_block_t *blk,
                                 const kw_tracker_range_t *ranges, size_t nranges,
                                 int *inserted, char *errstr, size_t errlen)
{
    kw_err_t err;

    if (inserted != NULL)
        *inserted = 0;
    if (blk == NULL || blk->pos.lsn == 0 || blk->pos.lsn > (uint64_t)INT64_MAX ||
        (nranges > 0 && ranges == NULL))
        return kw_seterr(errstr, errlen, KW_EINVAL,
                         "tracker %s: insert: bad block (LSN must be 1..INT64_MAX)",
                         t->path);
    for (size_t i = 0; i < nranges; i++) {
        if (ranges[i].topic == NULL || ranges[i].partition < 0 ||
            ranges[i].from_offset < 0 || ranges[i].until_offset < ranges[i].from_offset)
            return kw_seterr(errstr, errlen, KW_EINVAL,
                             "tracker %s: insert: LSN %" PRIu64 ": bad range %zu",
                             t->path, blk->pos.lsn, i);
    }
    pthread_mutex_lock(&t->mu);
    err = trk__insert_locked(t, blk, ranges, nranges, inserted, errstr, errlen);
    pthread_mutex_unlock(&t->mu);
    return err;
}

kw_err_t kw_tracker_mark_offsets_stored(kw_tracker_t *t, uint64_t lsn,
                                   char *errstr, size_t errlen)
{
    sqlite3_stmt *st;
    kw_err_t err;
    int64_t exists;
    int isnull;

    pthread_mutex_lock(&t->mu);
    err = trk__prepare(t, "UPDATE blocks SET state = 2 WHERE lsn = ? AND state = 1",
                       &st, errstr, errlen);
    if (err != KW_OK)
        goto out;
    sqlite3_bind_int64(st, 1, (int64_t)lsn);
    if (sqlite3_step(st) != SQLITE_DONE)
        err = trk__err(t, errstr, errlen, "mark committed");
    sqlite3_finalize(st);
    if (err == KW_OK && sqlite3_changes(t->db) == 0) {
        err = trk__scalar(t, "SELECT COUNT(*) FROM blocks WHERE lsn = ?", (int64_t)lsn,
                          &exists, &isnull, errstr, errlen);
        if (err == KW_OK && exists == 0)
            err = kw_seterr(errstr, errlen, KW_ENOTFOUND,
                            "tracker %s: mark committed: LSN %" PRIu64 " not tracked",
                            t->path, lsn);
    }
out:
    pthread_mutex_unlock(&t->mu);
    return err;
}

/* The blocks a new batch takes: the oldest unallocated durable ones, at
 * most ?1 of them (negative: all). */
#define TRK__UNALLOCATED "lsn IN (SELECT lsn FROM blocks WHERE batch IS NULL AND " \
                         "state IN (1, 2) ORDER BY lsn LIMIT ?1)"

static kw_err_t trk__allocate_locked(kw_tracker_t *t, int64_t now_ms, size_t max_blocks,
                                     uint64_t *batch_id, kw_tracker_blocks_t *blocks,
                                     char *errstr, size_t errlen)
{
    int64_t limit = max_blocks > 0 && max_blocks < INT64_MAX ? (int64_t)max_blocks : -1;
    sqlite3_stmt *st = NULL;
    int64_t nblocks = 0, nrecords = 0, id;
    kw_err_t err;
    int rc;

    err = trk__begin(t, errstr, errlen);
    if (err != KW_OK)
        return err;
    err = trk__prepare(t, "SELECT COUNT(*), COALESCE(SUM(records), 0) FROM blocks "
                       "WHERE " TRK__UNALLOCATED, &st, errstr, errlen);
    if (err != KW_OK)
        goto fail;
    sqlite3_bind_int64(st, 1, limit);
    rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        err = trk__err(t, errstr, errlen, "allocate batch");
        goto fail;
    }
    nblocks = sqlite3_column_int64(st, 0);
    nrecords = sqlite3_column_int64(st, 1);
    sqlite3_finalize(st);
    st = NULL;
    if (nblocks == 0) {
        trk__rollback(t);       /* nothing written: nothing to commit */
        return KW_OK;
    }

    err = trk__prepare(t, "INSERT INTO delivery_batches(created_ms, state, blocks, records) "
                       "VALUES(?, 1, ?, ?)", &st, errstr, errlen);
    if (err != KW_OK)
        goto fail;
    sqlite3_bind_int64(st, 1, now_ms);
    sqlite3_bind_int64(st, 2, nblocks);
    sqlite3_bind_int64(st, 3, nrecords);
    if (sqlite3_step(st) != SQLITE_DONE) {
        err = trk__err(t, errstr, errlen, "allocate batch");
        goto fail;
    }
    sqlite3_finalize(st);
    st = NULL;
    id = sqlite3_last_insert_rowid(t->db);

    err = trk__prepare(t, "UPDATE blocks SET state = 3, batch = ?2 "
                       "WHERE " TRK__UNALLOCATED, &st, errstr, errlen);
    if (err != KW_OK)
        goto fail;
    sqlite3_bind_int64(st, 1, limit);
    sqlite3_bind_int64(st, 2, id);
    if (sqlite3_step(st) != SQLITE_DONE) {
        err = trk__err(t, errstr, errlen, "allocate batch");
        goto fail;
    }
    sqlite3_finalize(st);
    st = NULL;

    if (blocks != NULL) {
        err = trk__list(t, "SELECT " TRK__BLOCK_COLS " FROM blocks WHERE batch = ? "
                        "ORDER BY lsn", 1, id, blocks, errstr, errlen);
        if (err != KW_OK)
            goto fail;
    }
    err = trk__commit(t, errstr, errlen);
    if (err != KW_OK) {
        kw_tracker_blocks_free(blocks);
        goto fail;
    }
    *batch_id = (uint64_t)id;
    return KW_OK;

fail:
    sqlite3_finalize(st);
    trk__rollback(t);
    return err;
}

kw_err_t kw_tracker_unallocated_within(kw_tracker_t *t, uint64_t max_bytes, uint64_t per_record,
                                       size_t *nblocks, int *more,
                                       char *errstr, size_t errlen)
{
    sqlite3_stmt *st = NULL;
    uint64_t sum = 0;
    kw_err_t err;
    int rc = SQLITE_DONE;

    *nblocks = 0;
    *more = 0;
    pthread_mutex_lock(&t->mu);
    err = trk__prepare(t, "SELECT bytes, records FROM blocks WHERE batch IS NULL AND "
                       "state IN (1, 2) ORDER BY lsn", &st, errstr, errlen);
    while (err == KW_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        uint64_t w = (uint64_t)sqlite3_column_int64(st, 0) +
                     per_record * (uint64_t)sqlite3_column_int64(st, 1);

        if (*nblocks > 0 && sum + w > max_bytes) {
            *more = 1;
            break;
        }
        sum += w;
        (*nblocks)++;
    }
    if (err == KW_OK && rc != SQLITE_ROW && rc != SQLITE_DONE)
        err = trk__err(t, errstr, errlen, "unallocated blocks");
    sqlite3_finalize(st);
    pthread_mutex_unlock(&t->mu);
    return err;
}

kw_err_t kw_tracker_allocate_batch(kw_tracker_t *t, int64_t now_ms,
                                   uint64_t *batch_id, kw_tracker_blocks_t *blocks,
                                   char *errstr, size_t errlen)
{
    return kw_tracker_allocate_batch_max(t, now_ms, 0, batch_id, blocks, errstr, errlen);
}

kw_err_t kw_tracker_allocate_batch_max(kw_tracker_t *t, int64_t now_ms, size_t max_blocks,
                                       uint64_t *batch_id, kw_tracker_blocks_t *blocks,
                                       char *errstr, size_t errlen)
{
    kw_err_t err;

    *batch_id = 0;
    if (blocks != NULL) {
        blocks->v = NULL;
        blocks->n = 0;
    }
    pthread_mutex_lock(&t->mu);
    err = trk__allocate_locked(t, now_ms, max_blocks, batch_id, blocks, errstr, errlen);
    pthread_mutex_unlock(&t->mu);
    return err;
}

kw_err_t kw_tracker_batch_blocks(kw_tracker_t *t, uint64_t batch_id,
                                 kw_tracker_blocks_t *blocks,
                                 char *errstr, size_t errlen)
{
    kw_err_t err;

    blocks->v = NULL;
    blocks->n = 0;
    pthread_mutex_lock(&t->mu);
    err = trk__list(t, "SELECT " TRK__BLOCK_COLS " FROM blocks WHERE batch = ? "
                    "ORDER BY lsn", 1, (int64_t)batch_id, blocks, errstr, errlen);
    pthread_mutex_unlock(&t->mu);
    return err;
}

static kw_err_t trk__processed_locked(kw_tracker_t *t, uint64_t batch_id,
                                      char *errstr, size_t errlen)
{
    int64_t state;
    int isnull;
    kw_err_t err;

    err = trk__begin(t, errstr, errlen);
    if (err != KW_OK)
        return err;
    err = trk__scalar(t, "SELECT state FROM delivery_batches WHERE id = ?", (int64_t)batch_id,
                      &state, &isnull, errstr, errlen);
    if (err != KW_OK)
        goto fail;
    if (isnull) {
        err = kw_seterr(errstr, errlen, KW_ENOTFOUND,
                        "tracker %s: batch %" PRIu64 " not found", t->path, batch_id);
        goto fail;
    }
    if (state == KW_BATCH_PROCESSED) {
        trk__rollback(t);
        return KW_OK;
    }
    {
        sqlite3_stmt *st;
        static const char *const sqls[2] = {
            "UPDATE delivery_batches SET state = 2 WHERE id = ?",
            "UPDATE blocks SET state = 4 WHERE batch = ?"
        };

        for (int i = 0; i < 2; i++) {
            err = trk__prepare(t, sqls[i], &st, errstr, errlen);
            if (err != KW_OK)
                goto fail;
            sqlite3_bind_int64(st, 1, (int64_t)batch_id);
            if (sqlite3_step(st) != SQLITE_DONE)
                err = trk__err(t, errstr, errlen, "mark batch processed");
            sqlite3_finalize(st);
            if (err != KW_OK)
                goto fail;
        }
    }
    err = trk__commit(t, errstr, errlen);
    if (err != KW_OK)
        goto fail;
    return KW_OK;

fail:
    trk__rollback(t);
    return err;
}

kw_err_t kw_tracker_mark_batch_processed(kw_tracker_t *t, uint64_t batch_id,
                                         char *errstr, size_t errlen)
{
    kw_err_t err;

    pthread_mutex_lock(&t->mu);
    err = trk__processed_locked(t, batch_id, errstr, errlen);
    pthread_mutex_unlock(&t->mu);
    return err;
}

kw_err_t kw_tracker_prune(kw_tracker_t *t, uint64_t below_lsn, uint64_t *removed,
                          char *errstr, size_t errlen)
{
    static const char *const sqls[3] = {
        "DELETE FROM block_ranges WHERE lsn IN (SELECT lsn FROM blocks "
        " WHERE lsn < ?1 AND state = 4 AND lsn < (SELECT MAX(lsn) FROM blocks))",
        "DELETE FROM blocks "
        " WHERE lsn < ?1 AND state = 4 AND lsn < (SELECT MAX(lsn) FROM blocks)",
        "DELETE FROM delivery_batches WHERE state = 2 "
        " AND NOT EXISTS (SELECT 1 FROM blocks WHERE blocks.batch = delivery_batches.id)"
    };
    uint64_t n = 0;
    kw_err_t err;

    if (removed != NULL)
        *removed = 0;
    if (below_lsn > (uint64_t)INT64_MAX)
        below_lsn = (uint64_t)INT64_MAX;
    pthread_mutex_lock(&t->mu);
    err = trk__begin(t, errstr, errlen);
    if (err != KW_OK)
        goto out;
    for (int i = 0; i < 3; i++) {
        sqlite3_stmt *st;

        err = trk__prepare(t, sqls[i], &st, errstr, errlen);
        if (err != KW_OK)
            goto fail;
        if (sqlite3_bind_parameter_count(st) > 0)
            sqlite3_bind_int64(st, 1, (int64_t)below_lsn);
        if (sqlite3_step(st) != SQLITE_DONE)
            err = trk__err(t, errstr, errlen, "prune");
        sqlite3_finalize(st);
        if (err != KW_OK)
            goto fail;
        if (i == 1)
            n = (uint64_t)sqlite3_changes(t->db);
    }
    err = trk__commit(t, errstr, errlen);
    if (err != KW_OK)
        goto fail;
    if (removed != NULL)
        *removed = n;
    goto out;

fail:
    trk__rollback(t);
out:
    pthread_mutex_unlock(&t->mu);
    return err;
}

/* ---- Queries ---- */

kw_err_t kw_tracker_open_batches(kw_tracker_t *t, uint64_t **ids, size_t *n,
                                 char *errstr, size_t errlen)
{
    sqlite3_stmt *st;
    size_t cap = 0;
    kw_err_t err;
    int rc;

    *ids = NULL;
    *n = 0;
    pthread_mutex_lock(&t->mu);
    err = trk__prepare(t, "SELECT id FROM delivery_batches WHERE state = 1 ORDER BY id",
                       &st, errstr, errlen);
    if (err != KW_OK)
        goto out;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (*n == cap) {
            size_t ncap = cap == 0 ? 8 : cap * 2;
            uint64_t *nv = realloc(*ids, ncap * sizeof(*nv));

            if (nv == NULL) {
                err = kw_seterr(errstr, errlen, KW_ENOMEM,
                                "tracker %s: out of memory", t->path);
                break;
            }
            *ids = nv;
            cap = ncap;
        }
        (*ids)[(*n)++] = (uint64_t)sqlite3_column_int64(st, 0);
    }
    if (err == KW_OK && rc != SQLITE_DONE)
        err = trk__err(t, errstr, errlen, "open batches");
    sqlite3_finalize(st);
    if (err != KW_OK) {
        free(*ids);
        *ids = NULL;
        *n = 0;
    }
out:
    pthread_mutex_unlock(&t->mu);
    return err;
}

kw_err_t kw_tracker_unprocessed_blocks(kw_tracker_t *t, kw_tracker_blocks_t *blocks,
                                       char *errstr, size_t errlen)
{
    kw_err_t err;

    blocks->v = NULL;
    blocks->n = 0;
    pthread_mutex_lock(&t->mu);
    err = trk__list(t, "SELECT " TRK__BLOCK_COLS " FROM blocks WHERE state < 4 "
                    "ORDER BY lsn", 0, 0, blocks, errstr, errlen);
    pthread_mutex_unlock(&t->mu);
    return err;
}

kw_err_t kw_tracker_cleanable_below(kw_tracker_t *t, uint64_t *lsn,
                                char *errstr, size_t errlen)
{
    int64_t v;
    int isnull;
    kw_err_t err;

    *lsn = 0;
    pthread_mutex_lock(&t->mu);
    err = trk__scalar(t, "SELECT MIN(lsn) FROM blocks WHERE state < 4", 0, &v,
                      &isnull, errstr, errlen);
    if (err == KW_OK && !isnull) {
        *lsn = (uint64_t)v;
    } else if (err == KW_OK) {
        err = trk__scalar(t, "SELECT MAX(lsn) FROM blocks", 0, &v, &isnull,
                          errstr, errlen);
        if (err == KW_OK && !isnull)
            *lsn = (uint64_t)v + 1;
    }
    pthread_mutex_unlock(&t->mu);
    return err;
}

void kw_tracker_partitions_free(kw_tracker_partition_t *parts, size_t n)
{
    if (parts == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        free(parts[i].topic);
    free(parts);
}

void kw_tracker_ranges_free(kw_tracker_range_t *ranges, size_t n)
{
    if (ranges == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        free((char *)ranges[i].topic);
    free(ranges);
}

/* Rows of (topic, partition, a, b) into a malloc'd array of either type. */
static kw_err_t trk__read_ranges(kw_tracker_t *t, sqlite3_stmt *st, int with_from,
                                 void **out, size_t *n, char *errstr, size_t errlen)
{
    size_t cap = 0, elem = with_from ? sizeof(kw_tracker_range_t)
                                     : sizeof(kw_tracker_partition_t);
    char *v = NULL;
    kw_err_t err = KW_OK;
    int rc;

    *n = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const unsigned char *topic = sqlite3_column_text(st, 0);
        char *copy;

        if (*n == cap) {
            size_t ncap = cap == 0 ? 16 : cap * 2;
            char *nv = realloc(v, ncap * elem);

            if (nv == NULL)
                goto nomem;
            v = nv;
            cap = ncap;
        }
        copy = strdup(topic != NULL ? (const char *)topic : "");
        if (copy == NULL)
            goto nomem;
        if (with_from) {
            kw_tracker_range_t *r = (kw_tracker_range_t *)(void *)v + *n;

            r->topic = copy;
            r->partition = (int32_t)sqlite3_column_int64(st, 1);
            r->from_offset = sqlite3_column_int64(st, 2);
            r->until_offset = sqlite3_column_int64(st, 3);
        } else {
            kw_tracker_partition_t *p = (kw_tracker_partition_t *)(void *)v + *n;

            p->topic = copy;
            p->partition = (int32_t)sqlite3_column_int64(st, 1);
            p->until_offset = sqlite3_column_int64(st, 2);
        }
        (*n)++;
    }
    if (rc != SQLITE_DONE) {
        err = trk__err(t, errstr, errlen, "list ranges");
        goto fail;
    }
    *out = v;
    return KW_OK;

nomem:
    err = kw_seterr(errstr, errlen, KW_ENOMEM, "tracker %s: out of memory", t->path);
fail:
    if (with_from)
        kw_tracker_ranges_free((kw_tracker_range_t *)(void *)v, *n);
    else
        kw_tracker_partitions_free((kw_tracker_partition_t *)(void *)v, *n);
    *n = 0;
    *out = NULL;
    return err;
}

kw_err_t kw_tracker_partition_max(kw_tracker_t *t, kw_tracker_partition_t **parts,
                                  size_t *n, char *errstr, size_t errlen)
{
    sqlite3_stmt *st;
    void *v = NULL;
    kw_err_t err;

    *parts = NULL;
    *n = 0;
    pthread_mutex_lock(&t->mu);
    err = trk__prepare(t, "SELECT topic, \"partition\", until_offset FROM partitions "
                       "ORDER BY topic, \"partition\"", &st, errstr, errlen);
    if (err == KW_OK) {
        err = trk__read_ranges(t, st, 0, &v, n, errstr, errlen);
        sqlite3_finalize(st);
    }
    pthread_mutex_unlock(&t->mu);
    *parts = v;
    return err;
}

kw_err_t kw_tracker_block_ranges(kw_tracker_t *t, uint64_t lsn,
                                 kw_tracker_range_t **ranges, size_t *n,
                                 char *errstr, size_t errlen)
{
    sqlite3_stmt *st;
    void *v = NULL;
    kw_err_t err;

    *ranges = NULL;
    *n = 0;
    pthread_mutex_lock(&t->mu);
    err = trk__prepare(t, "SELECT topic, \"partition\", from_offset, until_offset "
                       "FROM block_ranges WHERE lsn = ? ORDER BY rowid", &st,
                       errstr, errlen);
    if (err == KW_OK) {
        sqlite3_bind_int64(st, 1, (int64_t)lsn);
        err = trk__read_ranges(t, st, 1, &v, n, errstr, errlen);
        sqlite3_finalize(st);
    }
    pthread_mutex_unlock(&t->mu);
    *ranges = v;
    return err;
}

kw_err_t kw_tracker_counts(kw_tracker_t *t, kw_tracker_counts_t *c,
                           char *errstr, size_t errlen)
{
    sqlite3_stmt *st = NULL;
    kw_err_t err;
    int64_t v;
    int isnull, rc;

    memset(c, 0, sizeof(*c));
    pthread_mutex_lock(&t->mu);
    err = trk__prepare(t, "SELECT state, COUNT(*), COALESCE(SUM(records), 0), "
                       "COALESCE(SUM(bytes), 0) FROM blocks GROUP BY state",
                       &st, errstr, errlen);
    if (err != KW_OK)
        goto out;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int s = sqlite3_column_int(st, 0);

        if (s >= 1 && s <= 4) {
            c->blocks[s] = (uint64_t)sqlite3_column_int64(st, 1);
            c->records[s] = (uint64_t)sqlite3_column_int64(st, 2);
            c->bytes[s] = (uint64_t)sqlite3_column_int64(st, 3);
        }
    }
    if (rc != SQLITE_DONE)
        err = trk__err(t, errstr, errlen, "counts");
    sqlite3_finalize(st);
    if (err != KW_OK)
        goto out;
    err = trk__prepare(t, "SELECT state, COUNT(*) FROM delivery_batches GROUP BY state",
                       &st, errstr, errlen);
    if (err != KW_OK)
        goto out;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (sqlite3_column_int(st, 0) == KW_BATCH_OPEN)
            c->batches_open = (uint64_t)sqlite3_column_int64(st, 1);
        else
            c->batches_processed = (uint64_t)sqlite3_column_int64(st, 1);
    }
    if (rc != SQLITE_DONE)
        err = trk__err(t, errstr, errlen, "counts");
    sqlite3_finalize(st);
    if (err != KW_OK)
        goto out;
    err = trk__scalar(t, "SELECT MAX(lsn) FROM blocks", 0, &v, &isnull, errstr, errlen);
    if (err == KW_OK && !isnull)
        c->max_lsn = (uint64_t)v;
out:
    pthread_mutex_unlock(&t->mu);
    return err;
}

kw_err_t kw_tracker_batch_ids_from(kw_tracker_t *t, uint64_t first_id,
                                   char *errstr, size_t errlen)
{
    sqlite3_stmt *st = NULL;
    kw_err_t err;
    int rc;

    if (first_id == 0 || first_id > INT64_MAX)
        return kw_seterr(errstr, errlen, KW_EINVAL, "tracker %s: batch id %" PRIu64
                         " out of range", t->path, first_id);
    pthread_mutex_lock(&t->mu);
    err = trk__begin(t, errstr, errlen);
    if (err != KW_OK)
        goto out;
    /* sqlite_sequence has the delivery_batches row once a batch was ever inserted */
    err = trk__prepare(t, "INSERT OR REPLACE INTO sqlite_sequence(name, seq) "
                       "SELECT 'delivery_batches', max(?1, COALESCE((SELECT seq FROM "
                       "sqlite_sequence WHERE name = 'delivery_batches'), 0))", &st,
                       errstr, errlen);
    if (err != KW_OK)
        goto fail;
    sqlite3_bind_int64(st, 1, (int64_t)(first_id - 1));
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        err = trk__err(t, errstr, errlen, "batch ids");
        goto fail;
    }
    /* one row per name: drop a duplicate left by REPLACE without a key */
    err = trk__exec(t, "DELETE FROM sqlite_sequence WHERE name = 'delivery_batches' AND rowid <> "
                    "(SELECT max(rowid) FROM sqlite_sequence WHERE name = 'delivery_batches')",
                    "batch ids", errstr, errlen);
    if (err != KW_OK)
        goto fail;
    err = trk__commit(t, errstr, errlen);
    if (err == KW_OK)
        goto out;
fail:
    trk__rollback(t);
out:
    pthread_mutex_unlock(&t->mu);
    return err;
}

kw_err_t kw_tracker_insert_from_block(kw_tracker_t *t, const kw_block_t *b,
                                      const kw_wal_pos_t *pos, size_t bytes,
                                      char *errstr, size_t errlen)
{
    size_t n = kw_block_range_count(b);
    kw_tracker_range_t *ranges = calloc(n > 0 ? n : 1, sizeof(*ranges));
    kw_tracker_block_t tb;
    kw_err_t err;

    if (ranges == NULL)
        return kw_seterr(errstr, errlen, KW_ENOMEM, "tracker %s: out of memory", t->path);
    for (size_t i = 0; i < n; i++) {
        const kw_block_range_t *r = kw_block_range(b, i);

        ranges[i].topic = r->topic;
        ranges[i].partition = r->partition;
        ranges[i].from_offset = r->from_offset;
        ranges[i].until_offset = r->until_offset;
    }
    memset(&tb, 0, sizeof(tb));
    tb.pos = *pos;
    tb.receiver = kw_block_receiver_id(b);
    tb.records = kw_block_record_count(b);
    tb.bytes = bytes;
    tb.created_ms = kw_block_created_ms(b);
    err = kw_tracker_insert_block(t, &tb, ranges, n, NULL, errstr, errlen);
    free(ranges);
    return err;
}

void kw_tracker_default_path(const char *tracker_path, const char *first_wal_dir,
                             char *buf, size_t cap)
{
    if (tracker_path != NULL && tracker_path[0] != '\0')
        snprintf(buf, cap, "%s", tracker_path);
    else
        snprintf(buf, cap, "%s/tracker.db", first_wal_dir);
}
