/*
 * test_tracker.c -- the block tracker (tracker/tracker.h): schema and
 * versioning, the state machine DURABLE -> OFFSETS_STORED -> ALLOCATED ->
 * PROCESSED, allocation in LSN order, idempotent inserts, what survives a
 * close without marking and a real crash (a child process that _exit()s with
 * the database open), the WAL cleanup LSN, the per-partition maxima recovery
 * uses to repair ZooKeeper, pruning, counts, and concurrent callers.
 *
 * Every test gets its own temporary directory; the database is also read
 * with the sqlite3 API directly where the on-disk state is the point.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sqlite3.h>

#include "test_util.h"
#include "tracker.h"

typedef struct tstate {
    char         *dir;
    char          path[600];
    kw_tracker_t *t;
} tstate_t;

static int setup(void **state)
{
    tstate_t *s = calloc(1, sizeof(*s));

    if (s == NULL || (s->dir = test_tmpdir_new("tracker")) == NULL)
        return -1;
    test_path(s->path, sizeof(s->path), "%s/tracker.db", s->dir);
    *state = s;
    return 0;
}

static int teardown(void **state)
{
    tstate_t *s = *state;

    kw_tracker_close(s->t);
    test_rmtree(s->dir);
    free(s->dir);
    free(s);
    return 0;
}

static kw_tracker_t *open_ok(const char *path)
{
    kw_tracker_t *t = NULL;
    char err[512];

    if (kw_tracker_open(path, &t, err, sizeof(err)) != KW_OK)
        fail_msg("open %s: %s", path, err);
    return t;
}

static void reopen(tstate_t *s)
{
    kw_tracker_close(s->t);
    s->t = open_ok(s->path);
}

/* A block at lsn whose WAL position is derived from it. */
static kw_tracker_block_t blk(uint64_t lsn, uint32_t records)
{
    kw_tracker_block_t b;

    memset(&b, 0, sizeof(b));
    b.pos.lsn = lsn;
    b.pos.segment = 1 + (lsn / 10) * 10;
    b.pos.offset = 64 + lsn * 100;
    b.pos.size = 90 + (uint32_t)lsn;
    b.receiver = (uint32_t)(lsn % 3);
    b.records = records;
    b.bytes = records * 100u;
    b.created_ms = 1000 + (int64_t)lsn;
    return b;
}

static void insert_ok(kw_tracker_t *t, uint64_t lsn, uint32_t records,
                      const kw_tracker_range_t *r, size_t nr, int expect_inserted)
{
    kw_tracker_block_t b = blk(lsn, records);
    char err[512];
    int ins = -1;

    if (kw_tracker_insert_block(t, &b, r, nr, &ins, err, sizeof(err)) != KW_OK)
        fail_msg("insert %llu: %s", (unsigned long long)lsn, err);
    assert_int_equal(ins, expect_inserted);
}

static uint64_t allocate_ok(kw_tracker_t *t, kw_tracker_blocks_t *l)
{
    uint64_t id = 99;
    char err[512];

    if (kw_tracker_allocate_batch(t, 5000, &id, l, err, sizeof(err)) != KW_OK)
        fail_msg("allocate: %s", err);
    return id;
}

static uint64_t clean_below(kw_tracker_t *t)
{
    uint64_t lsn = 99;
    char err[512];

    assert_int_equal(kw_tracker_cleanable_below(t, &lsn, err, sizeof(err)), KW_OK);
    return lsn;
}

static void counts(kw_tracker_t *t, kw_tracker_counts_t *c)
{
    char err[512];

    assert_int_equal(kw_tracker_counts(t, c, err, sizeof(err)), KW_OK);
}

static void mark_processed_ok(kw_tracker_t *t, uint64_t id)
{
    char err[512];

    if (kw_tracker_mark_batch_processed(t, id, err, sizeof(err)) != KW_OK)
        fail_msg("mark processed %llu: %s", (unsigned long long)id, err);
}

static int64_t db_int(const char *path, const char *sql)
{
    sqlite3 *db;
    sqlite3_stmt *st;
    int64_t v = -1;

    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    if (sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

static void db_exec(const char *path, const char *sql)
{
    sqlite3 *db;

    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
}

/* ---- Schema ---- */

static void test_schema(void **state)
{
    tstate_t *s = *state;
    kw_tracker_t *t = NULL;
    char other[700], err[512];
    sqlite3 *db;
    sqlite3_stmt *st;

    s->t = open_ok(s->path);
    assert_string_equal(kw_tracker_path(s->t), s->path);
    kw_tracker_close(s->t);
    s->t = NULL;

    assert_int_equal(db_int(s->path, "PRAGMA user_version"), KW_TRACKER_SCHEMA_VERSION);
    assert_int_equal(sqlite3_open(s->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
    sqlite3_finalize(st);
    sqlite3_close(db);
    /* The columns of the brief, by name. */
    assert_int_equal(db_int(s->path, "SELECT COUNT(*) FROM pragma_table_info('blocks') "
                            "WHERE name IN ('lsn','segment','offset','size','receiver',"
                            "'records','bytes','state','batch','created_ms')"), 10);
    assert_int_equal(db_int(s->path, "SELECT COUNT(*) FROM pragma_table_info("
                            "'block_ranges') WHERE name IN ('lsn','topic','partition',"
                            "'from_offset','until_offset')"), 5);
    assert_int_equal(db_int(s->path, "SELECT COUNT(*) FROM pragma_table_info('delivery_batches') "
                            "WHERE name IN ('id','created_ms','state','blocks',"
                            "'records')"), 5);

    /* Reopening keeps the database. */
    s->t = open_ok(s->path);
    kw_tracker_close(s->t);
    s->t = NULL;

    /* A newer schema version is refused, naming the path. */
    db_exec(s->path, "PRAGMA user_version = 7");
    assert_int_equal(kw_tracker_open(s->path, &t, err, sizeof(err)), KW_ECORRUPT);
    assert_null(t);
    assert_non_null(strstr(err, s->path));
    assert_non_null(strstr(err, "7"));

    /* Some other database is not taken for an empty tracker. */
    test_path(other, sizeof(other), "%s/other.db", s->dir);
    db_exec(other, "CREATE TABLE x(a)");
    assert_int_equal(kw_tracker_open(other, &t, err, sizeof(err)), KW_ECORRUPT);
    assert_non_null(strstr(err, "not a kwal tracker"));

    /* Not a database at all: an error with the path and SQLite's message. */
    test_path(other, sizeof(other), "%s/garbage.db", s->dir);
    assert_int_equal(test_write_file(other, "this is not a sqlite database, not at all"
                                     " -- just some text long enough for a header",
                                     84), 0);
    assert_int_not_equal(kw_tracker_open(other, &t, err, sizeof(err)), KW_OK);
    assert_non_null(strstr(err, other));
    assert_non_null(strstr(err, "not a database"));

    /* A directory that does not exist. */
    test_path(other, sizeof(other), "%s/no/such/dir/t.db", s->dir);
    assert_int_equal(kw_tracker_open(other, &t, err, sizeof(err)), KW_EIO);
    assert_non_null(strstr(err, other));
}

/* ---- State machine ---- */

static void test_state_machine(void **state)
{
    tstate_t *s = *state;
    kw_tracker_blocks_t l = { NULL, 0 };
    kw_tracker_counts_t c;
    uint64_t id, *ids;
    size_t nids;
    char err[512];

    s->t = open_ok(s->path);
    assert_int_equal(clean_below(s->t), 0);

    /* Nothing to allocate: no batch. */
    assert_int_equal(allocate_ok(s->t, &l), 0);
    assert_int_equal(l.n, 0);
    assert_null(l.v);
    assert_int_equal(db_int(s->path, "SELECT COUNT(*) FROM delivery_batches"), 0);

    /* Inserted out of order (receivers race to the tracker). */
    insert_ok(s->t, 3, 30, NULL, 0, 1);
    insert_ok(s->t, 1, 10, NULL, 0, 1);
    insert_ok(s->t, 2, 20, NULL, 0, 1);
    counts(s->t, &c);
    assert_int_equal(c.blocks[KW_BLOCK_DURABLE], 3);
    assert_int_equal(c.records[KW_BLOCK_DURABLE], 60);
    assert_int_equal(c.max_lsn, 3);
    assert_int_equal(clean_below(s->t), 1);

    assert_int_equal(kw_tracker_mark_offsets_stored(s->t, 2, err, sizeof(err)), KW_OK);
    assert_int_equal(kw_tracker_mark_offsets_stored(s->t, 2, err, sizeof(err)), KW_OK);
    assert_int_equal(kw_tracker_mark_offsets_stored(s->t, 77, err, sizeof(err)), KW_ENOTFOUND);
    assert_non_null(strstr(err, s->path));
    counts(s->t, &c);
    assert_int_equal(c.blocks[KW_BLOCK_DURABLE], 2);
    assert_int_equal(c.blocks[KW_BLOCK_OFFSETS_STORED], 1);

    /* Committed and durable blocks alike go into the batch, in LSN order. */
    id = allocate_ok(s->t, &l);
    assert_int_equal(id, 1);
    assert_int_equal(l.n, 3);
    for (size_t i = 0; i < 3; i++) {
        kw_tracker_block_t want = blk(i + 1, (uint32_t)(10 * (i + 1)));

        assert_int_equal(l.v[i].pos.lsn, i + 1);
        assert_int_equal(l.v[i].pos.segment, want.pos.segment);
        assert_int_equal(l.v[i].pos.offset, want.pos.offset);
        assert_int_equal(l.v[i].pos.size, want.pos.size);
        assert_int_equal(l.v[i].receiver, want.receiver);
        assert_int_equal(l.v[i].records, want.records);
        assert_int_equal(l.v[i].bytes, want.bytes);
        assert_int_equal(l.v[i].created_ms, want.created_ms);
        assert_int_equal(l.v[i].state, KW_BLOCK_ALLOCATED);
        assert_int_equal(l.v[i].batch, 1);
    }
    kw_tracker_blocks_free(&l);
    assert_int_equal(db_int(s->path, "SELECT blocks * 1000 + records FROM delivery_batches "
                            "WHERE id = 1"), 3060);
    assert_int_equal(db_int(s->path, "SELECT state FROM delivery_batches WHERE id = 1"),
                     KW_BATCH_OPEN);

    /* An allocated block stays allocated when its offsets reach ZooKeeper. */
    assert_int_equal(kw_tracker_mark_offsets_stored(s->t, 1, err, sizeof(err)), KW_OK);
    assert_int_equal(db_int(s->path, "SELECT state FROM blocks WHERE lsn = 1"),
                     KW_BLOCK_ALLOCATED);

    /* Nothing new: no batch; a new block: a batch of only it. */
    assert_int_equal(allocate_ok(s->t, NULL), 0);
    insert_ok(s->t, 4, 40, NULL, 0, 1);
    id = allocate_ok(s->t, &l);
    assert_int_equal(id, 2);
    assert_int_equal(l.n, 1);
    assert_int_equal(l.v[0].pos.lsn, 4);
    kw_tracker_blocks_free(&l);

    assert_int_equal(kw_tracker_batch_blocks(s->t, 1, &l, err, sizeof(err)), KW_OK);
    assert_int_equal(l.n, 3);
    assert_int_equal(l.v[0].pos.lsn, 1);
    assert_int_equal(l.v[2].pos.lsn, 3);
    kw_tracker_blocks_free(&l);
    assert_int_equal(kw_tracker_batch_blocks(s->t, 42, &l, err, sizeof(err)), KW_OK);
    assert_int_equal(l.n, 0);

    assert_int_equal(kw_tracker_open_batches(s->t, &ids, &nids, err, sizeof(err)), KW_OK);
    assert_int_equal(nids, 2);
    assert_int_equal(ids[0], 1);
    assert_int_equal(ids[1], 2);
    free(ids);

    /* Batch 1 acknowledged: its blocks are processed, the WAL may go up to 4. */
    mark_processed_ok(s->t, 1);
    assert_int_equal(clean_below(s->t), 4);
    assert_int_equal(kw_tracker_unprocessed_blocks(s->t, &l, err, sizeof(err)), KW_OK);
    assert_int_equal(l.n, 1);
    assert_int_equal(l.v[0].pos.lsn, 4);
    assert_int_equal(l.v[0].batch, 2);
    kw_tracker_blocks_free(&l);
    assert_int_equal(kw_tracker_open_batches(s->t, &ids, &nids, err, sizeof(err)), KW_OK);
    assert_int_equal(nids, 1);
    assert_int_equal(ids[0], 2);
    free(ids);

    /* Again: a no-op. Unknown: not found. */
    mark_processed_ok(s->t, 1);
    assert_int_equal(kw_tracker_mark_batch_processed(s->t, 9, err, sizeof(err)),
                     KW_ENOTFOUND);

    mark_processed_ok(s->t, 2);
    assert_int_equal(clean_below(s->t), 5);
    assert_int_equal(kw_tracker_open_batches(s->t, &ids, &nids, err, sizeof(err)), KW_OK);
    assert_int_equal(nids, 0);
    assert_null(ids);
    counts(s->t, &c);
    assert_int_equal(c.blocks[KW_BLOCK_PROCESSED], 4);
    assert_int_equal(c.records[KW_BLOCK_PROCESSED], 100);
    assert_int_equal(c.bytes[KW_BLOCK_PROCESSED], 10000);
    assert_int_equal(c.blocks[KW_BLOCK_DURABLE] + c.blocks[KW_BLOCK_OFFSETS_STORED] +
                     c.blocks[KW_BLOCK_ALLOCATED], 0);
    assert_int_equal(c.batches_processed, 2);
    assert_int_equal(c.batches_open, 0);
}

/* ---- Idempotent insert ---- */

static void test_idempotent_insert(void **state)
{
    tstate_t *s = *state;
    kw_tracker_range_t r[2] = {
        { "orders", 0, 100, 150 },
        { "orders", 1, 7, 9 }
    };
    kw_tracker_range_t *got;
    kw_tracker_block_t b;
    kw_tracker_counts_t c;
    size_t n;
    char err[512];
    int ins;

    s->t = open_ok(s->path);
    insert_ok(s->t, 5, 52, r, 2, 1);
    insert_ok(s->t, 5, 52, r, 2, 0);   /* the same block again */
    counts(s->t, &c);
    assert_int_equal(c.blocks[KW_BLOCK_DURABLE], 1);
    assert_int_equal(db_int(s->path, "SELECT COUNT(*) FROM block_ranges"), 2);

    /* Again after a state change: left as it is. */
    assert_int_equal(kw_tracker_mark_offsets_stored(s->t, 5, err, sizeof(err)), KW_OK);
    insert_ok(s->t, 5, 52, r, 2, 0);
    assert_int_equal(db_int(s->path, "SELECT state FROM blocks WHERE lsn = 5"),
                     KW_BLOCK_OFFSETS_STORED);

    assert_int_equal(kw_tracker_block_ranges(s->t, 5, &got, &n, err, sizeof(err)), KW_OK);
    assert_int_equal(n, 2);
    assert_string_equal(got[0].topic, "orders");
    assert_int_equal(got[0].partition, 0);
    assert_int_equal(got[0].from_offset, 100);
    assert_int_equal(got[0].until_offset, 150);
    assert_int_equal(got[1].partition, 1);
    assert_int_equal(got[1].until_offset, 9);
    kw_tracker_ranges_free(got, n);

    /* One LSN at two WAL positions is corruption, and changes nothing. */
    b = blk(5, 52);
    b.pos.offset += 1;
    assert_int_equal(kw_tracker_insert_block(s->t, &b, r, 2, &ins, err, sizeof(err)),
                     KW_ECORRUPT);
    assert_int_equal(ins, 0);
    assert_non_null(strstr(err, s->path));
    assert_non_null(strstr(err, "LSN 5"));

    /* Bad input. */
    b = blk(0, 1);
    assert_int_equal(kw_tracker_insert_block(s->t, &b, NULL, 0, NULL, err, sizeof(err)),
                     KW_EINVAL);
    b = blk(6, 1);
    r[1].until_offset = 3;             /* until < from */
    assert_int_equal(kw_tracker_insert_block(s->t, &b, r, 2, NULL, err, sizeof(err)),
                     KW_EINVAL);
    assert_int_equal(db_int(s->path, "SELECT COUNT(*) FROM blocks"), 1);
}

/* ---- Crash safety ---- */

static void test_close_without_marking(void **state)
{
    tstate_t *s = *state;
    kw_tracker_blocks_t l;
    uint64_t *ids;
    size_t nids;
    char err[512];

    s->t = open_ok(s->path);
    for (uint64_t lsn = 1; lsn <= 3; lsn++)
        insert_ok(s->t, lsn, 1, NULL, 0, 1);
    assert_int_equal(allocate_ok(s->t, NULL), 1);
    insert_ok(s->t, 4, 1, NULL, 0, 1);
    assert_int_equal(kw_tracker_mark_offsets_stored(s->t, 4, err, sizeof(err)), KW_OK);
    reopen(s);                           /* the sink never acknowledged batch 1 */

    assert_int_equal(kw_tracker_open_batches(s->t, &ids, &nids, err, sizeof(err)), KW_OK);
    assert_int_equal(nids, 1);
    assert_int_equal(ids[0], 1);
    free(ids);
    assert_int_equal(kw_tracker_unprocessed_blocks(s->t, &l, err, sizeof(err)), KW_OK);
    assert_int_equal(l.n, 4);
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(l.v[i].state, KW_BLOCK_ALLOCATED);
        assert_int_equal(l.v[i].batch, 1);
    }
    assert_int_equal(l.v[3].state, KW_BLOCK_OFFSETS_STORED);
    assert_int_equal(l.v[3].batch, 0);
    kw_tracker_blocks_free(&l);
    assert_int_equal(clean_below(s->t), 1);

    /* The allocated blocks are not allocated twice; the next batch id is new. */
    assert_int_equal(allocate_ok(s->t, &l), 2);
    assert_int_equal(l.n, 1);
    assert_int_equal(l.v[0].pos.lsn, 4);
    kw_tracker_blocks_free(&l);
}

/* A child does work and dies with _exit() at step `die_after`, the database
 * still open (no close, no cleanup): what it committed must be there. */
static void crash_child(const char *path, int die_after)
{
    kw_tracker_t *t = NULL;
    kw_tracker_block_t b;
    uint64_t id;
    char err[256];
    int step = 0;

    if (kw_tracker_open(path, &t, err, sizeof(err)) != KW_OK)
        _exit(10);
    for (uint64_t lsn = 1; lsn <= 6; lsn++) {
        b = blk(lsn, 1);
        if (kw_tracker_insert_block(t, &b, NULL, 0, NULL, err, sizeof(err)) != KW_OK)
            _exit(11);
        if (++step == die_after)
            _exit(0);
        if (lsn == 3) {
            if (kw_tracker_allocate_batch(t, 1, &id, NULL, err, sizeof(err)) != KW_OK)
                _exit(12);
            if (++step == die_after)
                _exit(0);
            if (kw_tracker_mark_batch_processed(t, id, err, sizeof(err)) != KW_OK)
                _exit(13);
            if (++step == die_after)
                _exit(0);
        }
    }
    _exit(0);
}

static void test_crash_every_step(void **state)
{
    tstate_t *s = *state;

    /* Steps: insert 1,2,3 (1-3), allocate (4), processed (5), insert 4,5,6 (6-8). */
    for (int die = 1; die <= 8; die++) {
        kw_tracker_counts_t c;
        pid_t pid;
        int status;

        unlink(s->path);
        {
            char side[700];

            test_path(side, sizeof(side), "%s-wal", s->path);
            unlink(side);
            test_path(side, sizeof(side), "%s-shm", s->path);
            unlink(side);
        }
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0)
            crash_child(s->path, die);
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);

        s->t = open_ok(s->path);
        counts(s->t, &c);
        assert_int_equal(c.max_lsn, die <= 3 ? (uint64_t)die : die <= 5 ? 3u
                                                                  : (uint64_t)die - 2);
        if (die == 4) {
            assert_int_equal(c.blocks[KW_BLOCK_ALLOCATED], 3);
            assert_int_equal(c.batches_open, 1);
            assert_int_equal(clean_below(s->t), 1);
        } else if (die >= 5) {
            assert_int_equal(c.blocks[KW_BLOCK_PROCESSED], 3);
            assert_int_equal(c.blocks[KW_BLOCK_DURABLE], (uint64_t)die - 5);
            assert_int_equal(c.batches_processed, 1);
            assert_int_equal(clean_below(s->t), 4);
        } else {
            assert_int_equal(c.blocks[KW_BLOCK_DURABLE], (uint64_t)die);
            assert_int_equal(clean_below(s->t), 1);
        }
        kw_tracker_close(s->t);
        s->t = NULL;
    }
}

/* ---- Partition maxima, pruning ---- */

static void test_partition_max_and_prune(void **state)
{
    tstate_t *s = *state;
    kw_tracker_range_t b1[2] = { { "a", 0, 0, 10 }, { "b", 3, 5, 6 } };
    kw_tracker_range_t b2[2] = { { "a", 0, 10, 25 }, { "a", 1, 0, 4 } };
    kw_tracker_range_t b3[1] = { { "a", 0, 2, 8 } };   /* a seek back */
    kw_tracker_partition_t *p;
    kw_tracker_counts_t c;
    uint64_t removed;
    size_t n;
    char err[512];

    s->t = open_ok(s->path);
    insert_ok(s->t, 1, 2, b1, 2, 1);
    insert_ok(s->t, 2, 2, b2, 2, 1);
    insert_ok(s->t, 3, 1, b3, 1, 1);
    assert_int_equal(kw_tracker_partition_max(s->t, &p, &n, err, sizeof(err)), KW_OK);
    assert_int_equal(n, 3);
    assert_string_equal(p[0].topic, "a");
    assert_int_equal(p[0].partition, 0);
    assert_int_equal(p[0].until_offset, 25);
    assert_string_equal(p[1].topic, "a");
    assert_int_equal(p[1].partition, 1);
    assert_int_equal(p[1].until_offset, 4);
    assert_string_equal(p[2].topic, "b");
    assert_int_equal(p[2].partition, 3);
    assert_int_equal(p[2].until_offset, 6);
    kw_tracker_partitions_free(p, n);
    /* The same from the ranges themselves. */
    assert_int_equal(db_int(s->path, "SELECT MAX(until_offset) FROM block_ranges "
                            "WHERE topic = 'a' AND partition = 0"), 25);

    /* Prune: only processed blocks below the LSN, never the highest one. */
    assert_int_equal(allocate_ok(s->t, NULL), 1);
    assert_int_equal(kw_tracker_prune(s->t, 100, &removed, err, sizeof(err)), KW_OK);
    assert_int_equal(removed, 0);                 /* none processed yet */
    mark_processed_ok(s->t, 1);
    assert_int_equal(kw_tracker_prune(s->t, 2, &removed, err, sizeof(err)), KW_OK);
    assert_int_equal(removed, 1);                 /* LSN 1 */
    assert_int_equal(db_int(s->path, "SELECT COUNT(*) FROM block_ranges WHERE lsn = 1"), 0);
    assert_int_equal(db_int(s->path, "SELECT COUNT(*) FROM delivery_batches"), 1);
    assert_int_equal(kw_tracker_prune(s->t, 100, &removed, err, sizeof(err)), KW_OK);
    assert_int_equal(removed, 1);                 /* LSN 2; LSN 3 is the highest */
    counts(s->t, &c);
    assert_int_equal(c.blocks[KW_BLOCK_PROCESSED], 1);
    assert_int_equal(c.max_lsn, 3);
    assert_int_equal(clean_below(s->t), 4);

    /* Maxima survive pruning. */
    assert_int_equal(kw_tracker_partition_max(s->t, &p, &n, err, sizeof(err)), KW_OK);
    assert_int_equal(n, 3);
    assert_int_equal(p[0].until_offset, 25);
    assert_int_equal(p[2].until_offset, 6);
    kw_tracker_partitions_free(p, n);

    /* Batch ids are never reused, even once every batch row is pruned. */
    insert_ok(s->t, 4, 1, NULL, 0, 1);
    assert_int_equal(allocate_ok(s->t, NULL), 2);
    mark_processed_ok(s->t, 2);
    assert_int_equal(kw_tracker_prune(s->t, 100, &removed, err, sizeof(err)), KW_OK);
    assert_int_equal(db_int(s->path, "SELECT COUNT(*) FROM delivery_batches"), 1);
    insert_ok(s->t, 5, 1, NULL, 0, 1);
    assert_int_equal(allocate_ok(s->t, NULL), 3);
    reopen(s);
    insert_ok(s->t, 6, 1, NULL, 0, 1);
    assert_int_equal(allocate_ok(s->t, NULL), 4);
}

/* ---- Concurrent callers ---- */

typedef struct worker {
    kw_tracker_t *t;
    uint64_t      first;
    int           failures;
} worker_t;

static void *insert_worker(void *arg)
{
    worker_t *w = arg;
    char err[256];

    for (uint64_t i = 0; i < 50; i++) {
        kw_tracker_block_t b = blk(w->first + i, 1);
        kw_tracker_range_t r = { "t", (int32_t)(w->first / 1000), (int64_t)i,
                                 (int64_t)i + 1 };

        if (kw_tracker_insert_block(w->t, &b, &r, 1, NULL, err, sizeof(err)) != KW_OK ||
            kw_tracker_mark_offsets_stored(w->t, b.pos.lsn, err, sizeof(err)) != KW_OK)
            w->failures++;
    }
    return NULL;
}

static void test_concurrent_callers(void **state)
{
    tstate_t *s = *state;
    worker_t w[3];
    pthread_t th[3];
    uint64_t total = 0, id;
    kw_tracker_blocks_t l;
    char err[256];

    s->t = open_ok(s->path);
    for (int i = 0; i < 3; i++) {
        w[i].t = s->t;
        w[i].first = 1000 * (uint64_t)(i + 1);
        w[i].failures = 0;
        assert_int_equal(pthread_create(&th[i], NULL, insert_worker, &w[i]), 0);
    }
    /* The batcher allocates while receivers insert. */
    for (int k = 0; k < 20; k++) {
        assert_int_equal(kw_tracker_allocate_batch(s->t, k, &id, &l, err, sizeof(err)),
                         KW_OK);
        for (size_t i = 1; i < l.n; i++)
            assert_true(l.v[i - 1].pos.lsn < l.v[i].pos.lsn);
        total += l.n;
        kw_tracker_blocks_free(&l);
        if (id != 0)
            mark_processed_ok(s->t, id);
    }
    for (int i = 0; i < 3; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(w[i].failures, 0);
    }
    assert_int_equal(allocate_ok(s->t, &l) != 0 || l.n == 0, 1);
    total += l.n;
    kw_tracker_blocks_free(&l);
    assert_int_equal(total, 150);
}

/* allocate_batch_max takes the oldest blocks only; batch_ids_from moves the
 * next id up (never down), also before any batch existed. */
static void test_bounded_batches_and_id_floor(void **state)
{
    tstate_t *s = *state;
    kw_tracker_range_t r = { "t", 0, 0, 1 };
    kw_tracker_blocks_t l = { NULL, 0 };
    uint64_t id = 0;
    char err[512];

    s->t = open_ok(s->path);
    assert_int_equal(kw_tracker_batch_ids_from(s->t, 1000, err, sizeof(err)), KW_OK);
    for (uint64_t lsn = 1; lsn <= 5; lsn++) {
        r.from_offset = (int64_t)lsn - 1;
        r.until_offset = (int64_t)lsn;
        insert_ok(s->t, lsn, 1, &r, 1, 1);
    }
    assert_int_equal(kw_tracker_allocate_batch_max(s->t, 1, 2, &id, &l, err, sizeof(err)),
                     KW_OK);
    assert_int_equal(id, 1000);
    assert_int_equal(l.n, 2);
    assert_int_equal(l.v[0].pos.lsn, 1);
    assert_int_equal(l.v[1].pos.lsn, 2);
    kw_tracker_blocks_free(&l);
    /* a lower floor changes nothing; a higher one skips ahead */
    assert_int_equal(kw_tracker_batch_ids_from(s->t, 10, err, sizeof(err)), KW_OK);
    assert_int_equal(kw_tracker_allocate_batch_max(s->t, 2, 2, &id, &l, err, sizeof(err)),
                     KW_OK);
    assert_int_equal(id, 1001);
    assert_int_equal(l.n, 2);
    assert_int_equal(l.v[0].pos.lsn, 3);
    kw_tracker_blocks_free(&l);
    assert_int_equal(kw_tracker_batch_ids_from(s->t, 5000, err, sizeof(err)), KW_OK);
    id = allocate_ok(s->t, &l);            /* no limit: the rest */
    assert_int_equal(id, 5000);
    assert_int_equal(l.n, 1);
    assert_int_equal(l.v[0].pos.lsn, 5);
    kw_tracker_blocks_free(&l);
    assert_int_equal(db_int(s->path, "SELECT COUNT(*) FROM sqlite_sequence "
                                     "WHERE name = 'delivery_batches'"), 1);
    assert_int_equal(kw_tracker_batch_ids_from(s->t, 0, err, sizeof(err)), KW_EINVAL);
}

/* unallocated_within weighs the oldest unallocated blocks (bytes plus
 * per_record x records) against the bound: at least one, *more when some are
 * left; allocated blocks are not counted; passing its count to
 * allocate_batch_max takes exactly those blocks. */
static void test_unallocated_within(void **state)
{
    tstate_t *s = *state;
    kw_tracker_range_t r = { "t", 0, 0, 1 };
    kw_tracker_blocks_t l = { NULL, 0 };
    uint64_t id = 0;
    size_t n = 99;
    int more = -1;
    char err[512];

    s->t = open_ok(s->path);
    assert_int_equal(kw_tracker_unallocated_within(s->t, 1000, 10, &n, &more, err,
                                                   sizeof(err)), KW_OK);
    assert_int_equal(n, 0);                        /* nothing yet */
    assert_int_equal(more, 0);
    /* blocks of 2, 3, 4, 5, 6 records: weights 220, 330, 440, 550, 660 at 10 per record */
    for (uint64_t lsn = 1; lsn <= 5; lsn++) {
        r.from_offset = (int64_t)lsn * 10;
        r.until_offset = r.from_offset + (int64_t)lsn + 1;
        insert_ok(s->t, lsn, (uint32_t)lsn + 1, &r, 1, 1);
    }
    assert_int_equal(kw_tracker_unallocated_within(s->t, 1000, 10, &n, &more, err,
                                                   sizeof(err)), KW_OK);
    assert_int_equal(n, 3);                        /* 220 + 330 + 440 = 990 */
    assert_int_equal(more, 1);
    assert_int_equal(kw_tracker_unallocated_within(s->t, 990, 10, &n, &more, err,
                                                   sizeof(err)), KW_OK);
    assert_int_equal(n, 3);                        /* the bound itself fits */
    assert_int_equal(kw_tracker_unallocated_within(s->t, 989, 10, &n, &more, err,
                                                   sizeof(err)), KW_OK);
    assert_int_equal(n, 2);
    assert_int_equal(kw_tracker_unallocated_within(s->t, 1, 10, &n, &more, err,
                                                   sizeof(err)), KW_OK);
    assert_int_equal(n, 1);                        /* one block even above the bound */
    assert_int_equal(more, 1);
    assert_int_equal(kw_tracker_unallocated_within(s->t, 1000000, 0, &n, &more, err,
                                                   sizeof(err)), KW_OK);
    assert_int_equal(n, 5);
    assert_int_equal(more, 0);

    assert_int_equal(kw_tracker_unallocated_within(s->t, 1000, 10, &n, &more, err,
                                                   sizeof(err)), KW_OK);
    assert_int_equal(kw_tracker_allocate_batch_max(s->t, 1, n, &id, &l, err, sizeof(err)),
                     KW_OK);
    assert_int_equal(l.n, 3);
    assert_int_equal(l.v[2].pos.lsn, 3);
    kw_tracker_blocks_free(&l);
    /* what is left: 550 + 660 */
    assert_int_equal(kw_tracker_unallocated_within(s->t, 1000, 10, &n, &more, err,
                                                   sizeof(err)), KW_OK);
    assert_int_equal(n, 1);
    assert_int_equal(more, 1);
    assert_int_equal(kw_tracker_unallocated_within(s->t, 1210, 10, &n, &more, err,
                                                   sizeof(err)), KW_OK);
    assert_int_equal(n, 2);
    assert_int_equal(more, 0);
}

/* A version 1 database (delivery_batches was called "batches") is upgraded
 * in place: its rows and its AUTOINCREMENT counter survive, so the next
 * batch id is above every id ever given. */
static void test_upgrade_from_1(void **state)
{
    tstate_t *s = *state;
    kw_tracker_range_t r8 = { "t", 0, 13, 15 };
    sqlite3 *db;
    kw_tracker_blocks_t l;
    uint64_t id;
    char err[512];

    assert_int_equal(sqlite3_open(s->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db,
        "CREATE TABLE blocks(lsn INTEGER PRIMARY KEY, segment INTEGER NOT NULL,"
        " \"offset\" INTEGER NOT NULL, size INTEGER NOT NULL, receiver INTEGER NOT NULL,"
        " records INTEGER NOT NULL, bytes INTEGER NOT NULL,"
        " state INTEGER NOT NULL CHECK(state BETWEEN 1 AND 4),"
        " batch INTEGER REFERENCES batches(id), created_ms INTEGER NOT NULL);"
        "CREATE INDEX blocks_state ON blocks(state);"
        "CREATE INDEX blocks_batch ON blocks(batch);"
        "CREATE TABLE block_ranges(lsn INTEGER NOT NULL REFERENCES blocks(lsn),"
        " topic TEXT NOT NULL, \"partition\" INTEGER NOT NULL,"
        " from_offset INTEGER NOT NULL, until_offset INTEGER NOT NULL,"
        " UNIQUE(lsn, topic, \"partition\"));"
        "CREATE TABLE batches(id INTEGER PRIMARY KEY AUTOINCREMENT,"
        " created_ms INTEGER NOT NULL, state INTEGER NOT NULL CHECK(state BETWEEN 1 AND 2),"
        " blocks INTEGER NOT NULL, records INTEGER NOT NULL);"
        "CREATE TABLE partitions(topic TEXT NOT NULL, \"partition\" INTEGER NOT NULL,"
        " until_offset INTEGER NOT NULL, PRIMARY KEY(topic, \"partition\"));"
        "INSERT INTO batches(id, created_ms, state, blocks, records) VALUES(41, 1, 1, 1, 3);"
        "INSERT INTO blocks VALUES(7, 1, 0, 100, 0, 3, 100, 3, 41, 1);"
        "INSERT INTO block_ranges VALUES(7, 't', 0, 10, 13);"
        "INSERT INTO partitions VALUES('t', 0, 13);"
        "PRAGMA user_version = 1;", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);

    s->t = open_ok(s->path);
    assert_int_equal(db_int(s->path, "PRAGMA user_version"), 2);
    assert_int_equal(db_int(s->path, "SELECT COUNT(*) FROM sqlite_master "
                                     "WHERE name = 'batches'"), 0);
    assert_int_equal(db_int(s->path, "SELECT records FROM delivery_batches WHERE id = 41"), 3);
    /* the open batch is still open, with its block */
    {
        uint64_t *ids = NULL;
        size_t n = 0;

        assert_int_equal(kw_tracker_open_batches(s->t, &ids, &n, err, sizeof(err)), KW_OK);
        assert_int_equal(n, 1);
        assert_int_equal(ids[0], 41);
        free(ids);
    }
    assert_int_equal(kw_tracker_mark_batch_processed(s->t, 41, err, sizeof(err)), KW_OK);
    insert_ok(s->t, 8, 2, &r8, 1, 1);
    id = allocate_ok(s->t, &l);
    assert_true(id > 41);
    kw_tracker_blocks_free(&l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_schema, setup, teardown),
        cmocka_unit_test_setup_teardown(test_state_machine, setup, teardown),
        cmocka_unit_test_setup_teardown(test_idempotent_insert, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_without_marking, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crash_every_step, setup, teardown),
        cmocka_unit_test_setup_teardown(test_partition_max_and_prune, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_callers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bounded_batches_and_id_floor, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unallocated_within, setup, teardown),
        cmocka_unit_test_setup_teardown(test_upgrade_from_1, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
