/*
 * test_recovery.c -- recovery/recovery.h without Kafka or ZooKeeper
 * (classic mode: steps 1-3; ZooKeeper repair is covered by the crash-point
 * matrix, tests/integration/0030-*).
 *
 * Each test writes blocks straight into a WAL (as the pipeline would, then
 * "crashes" before the tracker heard of them, or damages the tracker or the
 * WAL), runs kw_recovery_run, and reads the sqlite sink back.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "blockgen.h"
#include "sink.h"
#include "kw_conf.h"
#include "kw_hist.h"
#include "kw_time.h"
#include "recovery.h"
#include "test_util.h"
#include "tracker.h"
#include "wal.h"

#define RECS_PER_BLOCK 50

typedef struct rstate {
    char             *dir;
    char              wal[3][1100];
    char              db[1100];
    char              tracker[1100];
    kw_conf_t        *conf;
    kw_wal_options_t  wo;
    kw_hist_t        *latency;   /* kw_recovery_options_t.latency (NULL: none) */
    kw_recovery_kept_t *keep;    /* kw_recovery_options_t.keep (NULL: none) */
} rstate_t;

static void set(kw_conf_t *c, const char *k, const char *v)
{
    char err[512];
    if (kw_conf_set(c, k, v, "test", err, sizeof(err)) != KW_OK)
        fail_msg("%s=%s: %s", k, v, err);
}

static int setup(void **state)
{
    rstate_t *s = calloc(1, sizeof(*s));
    char sink[1200], err[256];

    if (s == NULL || (s->dir = test_tmpdir_new("recovery")) == NULL)
        return -1;
    for (int i = 0; i < 3; i++)
        test_path(s->wal[i], sizeof(s->wal[i]), "%s/w%d", s->dir, i);
    test_path(s->db, sizeof(s->db), "%s/out.db", s->dir);
    test_path(s->tracker, sizeof(s->tracker), "%s/tracker.db", s->wal[0]);
    test_path(sink, sizeof(sink), "sqlite:%s", s->db);
    if (kw_conf_new(&s->conf, err, sizeof(err)) != KW_OK)
        return -1;
    set(s->conf, "group.id", "g");
    set(s->conf, "sink", sink);
    kw_wal_options_init(&s->wo);
    for (int i = 0; i < 3; i++)
        s->wo.dirs[i] = s->wal[i];
    s->wo.ndirs = 3;
    *state = s;
    return 0;
}

static int teardown(void **state)
{
    rstate_t *s = *state;

    kw_conf_destroy(s->conf);
    if (getenv("KWAL_KEEP_TMP") == NULL)
        test_rmtree(s->dir);
    free(s->dir);
    free(s);
    return 0;
}

/* Append nblocks blocks of RECS_PER_BLOCK records of topic t, partition
 * (block % 2), offsets continuing per partition, to the WAL. Partition 0's
 * records were created 5 s ago, partition 1's have no timestamp. With track the
 * tracker registers each (as the pipeline does) and nothing else happens (a
 * crash before delivery); without, nothing else hears of them (a crash right
 * after the WAL ack). Returns the last LSN. */
static uint64_t append_blocks(rstate_t *s, int nblocks, int track)
{
    kw_tracker_t *t = NULL;
    kw_blockgen_config_t cfg;
    kw_blockgen_t *gen = NULL;
    kw_wal_t *w = NULL;
    int64_t next[2] = { 0, 0 };
    uint64_t last = 0;
    char err[512], val[32];

    assert_int_equal(kw_wal_open(&s->wo, &w, NULL, err, sizeof(err)), KW_OK);
    if (track)
        assert_int_equal(kw_tracker_open(s->tracker, &t, err, sizeof(err)), KW_OK);
    kw_blockgen_config_init(&cfg);
    cfg.interval_ms = 3600000;
    assert_int_equal(kw_blockgen_new(&cfg, &gen, err, sizeof(err)), KW_OK);
    for (int b = 0; b < nblocks; b++) {
        int p = b % 2;
        kw_block_t *blk;
        kw_wal_pos_t pos;
        size_t len;

        for (int i = 0; i < RECS_PER_BLOCK; i++) {
            kw_record_t r;
            memset(&r, 0, sizeof(r));
            r.topic = "t";
            r.partition = p;
            r.offset = next[p]++;
            r.tstype = p == 0 ? KW_TS_CREATE_TIME : KW_TS_NOT_AVAILABLE;
            r.timestamp = p == 0 ? kw_wall_ms() - 5000 : -1;
            r.value = val;
            r.value_len = (size_t)snprintf(val, sizeof(val), "v%d-%lld", p,
                                           (long long)r.offset);
            assert_int_equal(kw_blockgen_add(gen, &r, err, sizeof(err)), KW_OK);
        }
        assert_int_equal(kw_blockgen_cut(gen), KW_OK);
        blk = kw_blockgen_take(gen);
        assert_non_null(blk);
        const uint8_t *data = kw_block_data(blk, &len);
        assert_int_equal(kw_wal_append(w, data, len, KW_WAL_COMPRESS, &pos, err,
                                       sizeof(err)), KW_OK);
        last = pos.lsn;
        if (track) {
            const kw_block_range_t *br = kw_block_range(blk, 0);
            kw_tracker_range_t tr = { br->topic, br->partition, br->from_offset,
                                      br->until_offset };
            kw_tracker_block_t tb;
            memset(&tb, 0, sizeof(tb));
            tb.pos = pos;
            tb.records = RECS_PER_BLOCK;
            tb.bytes = len;
            assert_int_equal(kw_tracker_insert_block(t, &tb, &tr, 1, NULL, err,
                                                     sizeof(err)), KW_OK);
        }
        kw_block_destroy(blk);
    }
    kw_tracker_close(t);
    kw_blockgen_destroy(gen);
    kw_wal_close(w);
    return last;
}

static int64_t sink_rows(rstate_t *s)
{
    sqlite3 *h = NULL;
    sqlite3_stmt *st = NULL;
    int64_t n = -1;

    if (sqlite3_open_v2(s->db, &h, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(h, "SELECT count(DISTINCT partition || '/' || offset) = "
                              "count(*), count(*) FROM records", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int(st, 0) ? sqlite3_column_int64(st, 1) : -2;
    sqlite3_finalize(st);
    sqlite3_close(h);
    return n;
}

/* Rows of partition p with offsets from..to in the sink. */
static int64_t sink_range(rstate_t *s, int p, int64_t from, int64_t to)
{
    sqlite3 *h = NULL;
    sqlite3_stmt *st = NULL;
    int64_t n = -1;

    if (sqlite3_open_v2(s->db, &h, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(h, "SELECT count(*) FROM records WHERE partition = ?1 AND "
                              "offset BETWEEN ?2 AND ?3", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_bind_int(st, 1, p) == SQLITE_OK &&
        sqlite3_bind_int64(st, 2, from) == SQLITE_OK &&
        sqlite3_bind_int64(st, 3, to) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(h);
    return n;
}

static kw_err_t recover_with(rstate_t *s, int skip_corrupt, kw_recovery_report_t *r,
                             char *err, size_t len)
{
    kw_recovery_options_t o;

    kw_recovery_options_init(&o);
    o.conf = s->conf;
    o.wal_opts = &s->wo;
    o.classic = 1;
    o.skip_corrupt = skip_corrupt;
    o.latency = s->latency;
    o.keep = s->keep;
    return kw_recovery_run(&o, r, err, len);
}

static kw_err_t recover(rstate_t *s, kw_recovery_report_t *r, char *err, size_t len)
{
    return recover_with(s, 0, r, err, len);
}

/* One bit flipped in the middle of the last segment, on every replica: a
 * block no replica can serve. */
static void damage_last_segment_everywhere(rstate_t *s)
{
    char seg[1200];
    char **names = NULL;
    size_t n = 0;
    uint64_t size = 0;

    assert_int_equal(test_list_dir(s->wal[0], ".seg", &names, &n), 0);
    assert_true(n >= 1);
    for (int i = 0; i < 3; i++) {
        test_path(seg, sizeof(seg), "%s/%s", s->wal[i], names[n - 1]);
        assert_int_equal(test_file_size(seg, &size), 0);
        assert_int_equal(test_flip_bit(seg, size / 2, 5), 0);
    }
    test_free_names(names, n);
}

/* After block lsn was given up: recovery succeeded with exactly that block
 * lost (append_blocks: block b is partition b % 2, offsets (b / 2) * 50 on),
 * every other record stored once, and a second recovery without the flag
 * opens the WAL (the placeholder is a valid record) and has nothing to do. */
static void check_given_up(rstate_t *s, const kw_recovery_report_t *r, uint64_t lsn,
                           int nblocks)
{
    kw_recovery_report_t again;
    char err[1024];
    int b = (int)lsn - 1;

    assert_int_equal(r->wal.lost_records, 1);
    assert_int_equal(r->wal.nlost, 1);
    assert_int_equal(r->wal.lost[0].from, lsn);
    assert_int_equal(r->wal.lost[0].to, lsn);
    assert_int_equal(r->blocks_lost, 1);
    assert_int_equal(r->records_lost, RECS_PER_BLOCK);
    assert_int_equal(sink_rows(s), (nblocks - 1) * RECS_PER_BLOCK);
    assert_int_equal(sink_range(s, b % 2, (b / 2) * RECS_PER_BLOCK,
                                (b / 2) * RECS_PER_BLOCK + RECS_PER_BLOCK - 1), 0);
    if (recover(s, &again, err, sizeof(err)) != KW_OK)
        fail_msg("recovery after --skip-corrupt: %s", err);
    assert_int_equal(again.blocks_replayed, 0);
    assert_int_equal(again.wal.lost_records, 0);
    assert_int_equal(sink_rows(s), (nblocks - 1) * RECS_PER_BLOCK);
}

/* A crash after the WAL ack, before the tracker insert: recovery registers
 * the blocks and replays them (in batches of at most 8 blocks), each record
 * with a timestamp adding its end-to-end latency (5 s and the time since);
 * a second recovery finds nothing to do. */
static void test_registers_and_replays(void **state)
{
    rstate_t *s = *state;
    kw_recovery_report_t r;
    kw_hist_summary_t l;
    char err[1024];
    int64_t started = kw_wall_ms();

    s->latency = calloc(1, sizeof(*s->latency));
    assert_non_null(s->latency);
    append_blocks(s, 20, 0);
    assert_int_equal(recover(s, &r, err, sizeof(err)), KW_OK);
    kw_hist_summarize(s->latency, &l);
    assert_int_equal(l.count, 10 * RECS_PER_BLOCK);     /* partition 0's */
    assert_true(l.p50 >= 5000 && l.p50 <= l.p99 && l.p99 <= l.max);
    assert_true(l.max <= 5000 + (kw_wall_ms() - started));
    assert_int_equal(r.blocks_registered, 20);
    assert_int_equal(r.blocks_replayed, 20);
    assert_true(r.batches_replayed >= 3);           /* 20 blocks, <= 8 per batch */
    assert_int_equal(r.records_stored, 20 * RECS_PER_BLOCK);
    assert_int_equal(r.duplicates_delivered, 0);
    assert_int_equal(sink_rows(s), 20 * RECS_PER_BLOCK);

    assert_int_equal(recover(s, &r, err, sizeof(err)), KW_OK);
    assert_int_equal(r.blocks_registered, 0);
    assert_int_equal(r.blocks_replayed, 0);
    assert_int_equal(sink_rows(s), 20 * RECS_PER_BLOCK);
    assert_int_equal(kw_hist_count(s->latency), 10 * RECS_PER_BLOCK);
    free(s->latency);
    s->latency = NULL;
}

/* options.keep: on success the WAL, tracker and sink stay open for the
 * caller -- the WAL still locked, the tracker at the replayed LSNs, the WAL
 * appendable -- until kw_recovery_kept_close; a recovery that fails keeps
 * nothing (its WAL lock is free for the next one). */
static void test_keep_hands_on(void **state)
{
    rstate_t *s = *state;
    kw_recovery_kept_t k;
    kw_recovery_report_t r;
    kw_tracker_counts_t c;
    kw_wal_pos_t pos;
    kw_wal_t *w2 = NULL;
    char err[1024];
    uint64_t last;
    static const uint8_t junk[] = "not a block";

    last = append_blocks(s, 6, 0);
    memset(&k, 0xA5, sizeof(k));            /* cleared by the call, whatever it held */
    s->keep = &k;
    assert_int_equal(recover(s, &r, err, sizeof(err)), KW_OK);
    assert_int_equal(r.blocks_replayed, 6);
    assert_non_null(k.wal);
    assert_non_null(k.tracker);
    assert_non_null(k.sink);
    assert_int_equal(sink_rows(s), 6 * RECS_PER_BLOCK);
    assert_int_equal(kw_wal_open(&s->wo, &w2, NULL, err, sizeof(err)), KW_ELOCKED);
    assert_null(w2);
    assert_int_equal(kw_tracker_counts(k.tracker, &c, err, sizeof(err)), KW_OK);
    assert_int_equal(c.max_lsn, last);
    assert_int_equal(kw_wal_append(k.wal, junk, sizeof(junk), 0, &pos, err, sizeof(err)),
                     KW_OK);
    assert_int_equal(pos.lsn, last + 1);
    kw_recovery_kept_close(&k);
    assert_null(k.wal);
    assert_null(k.tracker);
    assert_null(k.sink);
    kw_recovery_kept_close(&k);             /* nothing left: a no-op */
    kw_recovery_kept_close(NULL);

    /* every replica's last segment damaged: refused, nothing kept */
    damage_last_segment_everywhere(s);
    memset(&k, 0xA5, sizeof(k));
    assert_int_equal(recover(s, &r, err, sizeof(err)), KW_ECORRUPT);
    assert_null(k.wal);
    assert_null(k.tracker);
    assert_null(k.sink);
    s->keep = NULL;
    assert_int_not_equal(kw_wal_open(&s->wo, &w2, NULL, err, sizeof(err)), KW_ELOCKED);
    kw_wal_close(w2);
}

/* The tracker deleted after everything was delivered: rebuilt from the WAL,
 * everything delivered again, stored once, counted as duplicate deliveries. */
static void test_tracker_deleted(void **state)
{
    rstate_t *s = *state;
    kw_recovery_report_t r;
    char err[1024], path[1200];

    append_blocks(s, 4, 0);
    assert_int_equal(recover(s, &r, err, sizeof(err)), KW_OK);
    assert_int_equal(unlink(s->tracker), 0);
    test_path(path, sizeof(path), "%s-wal", s->tracker);
    (void)unlink(path);
    test_path(path, sizeof(path), "%s-shm", s->tracker);
    (void)unlink(path);
    assert_int_equal(recover(s, &r, err, sizeof(err)), KW_OK);
    assert_int_equal(r.tracker_created, 1);
    assert_true(r.blocks_registered >= 1);
    assert_int_equal(r.records_stored, 0);
    assert_int_equal(r.duplicates_delivered, r.records_replayed);
    assert_int_equal(sink_rows(s), 4 * RECS_PER_BLOCK);
}

/* A tracker that is not a database: moved aside, rebuilt, nothing lost. */
static void test_tracker_garbage(void **state)
{
    rstate_t *s = *state;
    kw_recovery_report_t r;
    char err[1024];
    static const char junk[4096] = "this is not an SQLite database";

    append_blocks(s, 3, 0);
    assert_int_equal(mkdir(s->wal[0], 0755) == 0 || access(s->wal[0], F_OK) == 0, 1);
    assert_int_equal(test_write_file(s->tracker, junk, sizeof(junk)), 0);
    assert_int_equal(recover(s, &r, err, sizeof(err)), KW_OK);
    assert_int_equal(r.tracker_rebuilt, 1);
    assert_int_equal(access(r.tracker_moved_to, F_OK), 0);
    assert_int_equal(r.blocks_registered, 3);
    assert_int_equal(sink_rows(s), 3 * RECS_PER_BLOCK);
}

/* One replica damaged: recovery reads the others; nothing lost. */
static void test_one_replica_corrupt(void **state)
{
    rstate_t *s = *state;
    kw_recovery_report_t r;
    char err[1024], seg[1200];
    char **names = NULL;
    size_t n = 0;

    append_blocks(s, 6, 0);
    assert_int_equal(test_list_dir(s->wal[1], ".seg", &names, &n), 0);
    assert_true(n >= 1);
    test_path(seg, sizeof(seg), "%s/%s", s->wal[1], names[0]);
    test_free_names(names, n);
    uint64_t size = 0;
    assert_int_equal(test_file_size(seg, &size), 0);
    assert_int_equal(test_flip_bit(seg, size / 2, 3), 0);
    assert_int_equal(recover(s, &r, err, sizeof(err)), KW_OK);
    assert_int_equal(r.blocks_replayed, 6);
    assert_int_equal(sink_rows(s), 6 * RECS_PER_BLOCK);
}

/* The same bytes damaged on every replica in a block the tracker knows and
 * the sink has not acknowledged: recovery refuses, naming the LSN and the
 * Kafka ranges. */
static void test_corrupt_everywhere(void **state)
{
    rstate_t *s = *state;
    kw_recovery_report_t r;
    char err[1024];

    append_blocks(s, 6, 1);
    damage_last_segment_everywhere(s);
    assert_int_equal(recover(s, &r, err, sizeof(err)), KW_ECORRUPT);
    assert_true(r.wal.corrupt_lsn > 0);
    char want[64];
    snprintf(want, sizeof(want), "lsn %llu", (unsigned long long)r.wal.corrupt_lsn);
    if (strstr(err, want) == NULL || strstr(err, "t/") == NULL ||
        strstr(err, "offsets") == NULL || strstr(err, "--skip-corrupt") == NULL)
        fail_msg("error does not name the LSN and the ranges: %s", err);
    /* the user's explicit choice: give it up */
    uint64_t lsn = r.wal.corrupt_lsn;
    if (recover_with(s, 1, &r, err, sizeof(err)) != KW_OK)
        fail_msg("--skip-corrupt: %s", err);
    check_given_up(s, &r, lsn, 6);
}

/* Two neighbouring blocks damaged on every replica: one damaged span with
 * two LSNs. Given up, both are lost (their placeholders share the span, so
 * the second is found by LSN, not at its old position) and the blocks
 * after them keep their places. */
static void test_corrupt_span_everywhere(void **state)
{
    rstate_t *s = *state;
    kw_recovery_report_t r;
    kw_wal_record_t rec;
    kw_wal_t *w = NULL;
    kw_wal_pos_t pos[2];
    char err[1024], seg[1200];

    append_blocks(s, 8, 1);
    assert_int_equal(kw_wal_open(&s->wo, &w, NULL, err, sizeof(err)), KW_OK);
    for (int k = 0; k < 2; k++) {
        memset(&rec, 0, sizeof(rec));
        assert_int_equal(kw_wal_read_lsn(w, 4 + (uint64_t)k, &rec, err, sizeof(err)), KW_OK);
        pos[k] = rec.pos;
        kw_wal_record_clear(&rec);
    }
    kw_wal_close(w);
    assert_int_equal(pos[0].segment, pos[1].segment);
    for (int i = 0; i < 3; i++)
        for (int k = 0; k < 2; k++) {
            char name[64];

            snprintf(name, sizeof(name), "%020llu.seg", (unsigned long long)pos[k].segment);
            test_path(seg, sizeof(seg), "%s/%s", s->wal[i], name);
            assert_int_equal(test_flip_bit(seg, pos[k].offset + pos[k].size / 2, 1), 0);
        }
    assert_int_equal(recover(s, &r, err, sizeof(err)), KW_ECORRUPT);
    assert_int_equal(r.wal.corrupt_lsn, 4);
    if (recover_with(s, 1, &r, err, sizeof(err)) != KW_OK)
        fail_msg("--skip-corrupt: %s", err);
    assert_int_equal(r.wal.lost_records, 2);
    assert_int_equal(r.blocks_lost, 2);
    assert_int_equal(r.records_lost, 2 * RECS_PER_BLOCK);
    assert_int_equal(sink_rows(s), 6 * RECS_PER_BLOCK);
    /* blocks 4 and 5 (indexes 3, 4): partition 1 offsets 50..99, 0 100..149 */
    assert_int_equal(sink_range(s, 1, 50, 99), 0);
    assert_int_equal(sink_range(s, 0, 100, 149), 0);
    assert_int_equal(sink_range(s, 0, 150, 199), RECS_PER_BLOCK);
}

/* The last acknowledged block damaged on every replica looks like a torn
 * tail; the tracker knows it was acknowledged, so recovery refuses instead
 * of cutting it, and the segment files are left as they were. */
static void test_corrupt_last_everywhere(void **state)
{
    rstate_t *s = *state;
    kw_recovery_report_t r;
    char err[1024], seg[3][1200];
    char **names = NULL;
    size_t n = 0;
    uint64_t size[3], after = 0;

    uint64_t last = append_blocks(s, 6, 1);
    assert_int_equal(test_list_dir(s->wal[0], ".seg", &names, &n), 0);
    assert_true(n >= 1);
    for (int i = 0; i < 3; i++) {
        test_path(seg[i], sizeof(seg[i]), "%s/%s", s->wal[i], names[n - 1]);
        assert_int_equal(test_file_size(seg[i], &size[i]), 0);
        assert_int_equal(test_flip_bit(seg[i], size[i] - 10, 2), 0);
    }
    test_free_names(names, n);
    assert_int_equal(recover(s, &r, err, sizeof(err)), KW_ECORRUPT);
    assert_int_equal(r.wal.corrupt_lsn, last);
    if (strstr(err, "acknowledged") == NULL || strstr(err, "t/") == NULL)
        fail_msg("error does not say why or what: %s", err);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(test_file_size(seg[i], &after), 0);
        assert_int_equal(after, size[i]);
    }
    /* given up, the LSN is not used again: the next append gets last + 1 */
    if (recover_with(s, 1, &r, err, sizeof(err)) != KW_OK)
        fail_msg("--skip-corrupt: %s", err);
    check_given_up(s, &r, last, 6);
    assert_int_equal(append_blocks(s, 1, 1), last + 1);
}

static uint64_t limit_one(void *opaque)
{
    (void)opaque;
    return 1;           /* an append in flight got LSN 1: clean nothing */
}

static uint64_t limit_two(void *opaque)
{
    (void)opaque;
    return 2;           /* an append in flight got LSN 2 or more */
}

/* Delivery's WAL cleanup stays below the limit its caller gives (appends
 * the tracker does not know yet, invariant 1), asked after the tracker. */
static void test_cleanup_limit(void **state)
{
    rstate_t *s = *state;
    kw_delivery_stats_t st;
    kw_tracker_t *t = NULL;
    kw_sink_t *sink = NULL;
    kw_wal_t *w = NULL;
    char err[1024], spec[1200];

    s->wo.segment_bytes = 4096;         /* several segments */
    append_blocks(s, 40, 1);
    long before = test_count_files(s->wal[0], ".seg");
    assert_true(before >= 4);
    assert_int_equal(kw_wal_open(&s->wo, &w, NULL, err, sizeof(err)), KW_OK);
    assert_int_equal(kw_tracker_open(s->tracker, &t, err, sizeof(err)), KW_OK);
    test_path(spec, sizeof(spec), "sqlite:%s", s->db);
    assert_int_equal(kw_sink_open(spec, &sink, err, sizeof(err)), KW_OK);
    memset(&st, 0, sizeof(st));
    assert_int_equal(kw_delivery_round(w, t, sink, 1, 0, limit_two, NULL, &st, err,
                                       sizeof(err)), KW_OK);
    assert_int_equal(st.blocks, 40);
    /* only the segment(s) wholly below LSN 2 may go */
    assert_true(test_count_files(s->wal[0], ".seg") >= before - 1);
    kw_wal_record_t rec;
    memset(&rec, 0, sizeof(rec));
    assert_int_equal(kw_wal_read_lsn(w, 2, &rec, err, sizeof(err)), KW_OK);
    kw_wal_record_clear(&rec);
    /* without a limit the next round cleans everything processed */
    assert_int_equal(kw_delivery_round(w, t, sink, 2, 0, NULL, NULL, &st, err,
                                       sizeof(err)), KW_OK);
    kw_sink_close(sink);
    kw_tracker_close(t);
    kw_wal_close(w);
}

/* A replica that lagged when the process died may hold a torn last segment
 * (its header cut short) below the acknowledged LSN: the others have the
 * records, so it is a torn write, cut and copied back -- not corruption
 * (found by the chaos soak, trials 92, 111, 223 of seed 20261121). */
static void test_lagging_replica_torn_header(void **state)
{
    rstate_t *s = *state;
    kw_recovery_report_t r;
    char err[1024], seg[1200];
    char **names = NULL;
    size_t n = 0;

    append_blocks(s, 6, 1);
    assert_int_equal(test_list_dir(s->wal[1], ".seg", &names, &n), 0);
    assert_true(n >= 1);
    test_path(seg, sizeof(seg), "%s/%s", s->wal[1], names[n - 1]);
    test_free_names(names, n);
    assert_int_equal(test_truncate_file(seg, 10), 0);
    if (recover(s, &r, err, sizeof(err)) != KW_OK)
        fail_msg("recovery refused a lagging replica's torn header: %s", err);
    assert_int_equal(r.blocks_replayed, 6);
    assert_int_equal(sink_rows(s), 6 * RECS_PER_BLOCK);
}

/* The state a crash in WAL cleanup leaves when replica 2 lagged far behind:
 * replicas 0 and 1 deleted the first segment (names[0]); replica 2 never got
 * past that segment's header. */
static void crash_in_cleanup_lagging(rstate_t *s, char **names, size_t n)
{
    char seg[1200];

    for (int i = 0; i < 2; i++) {
        test_path(seg, sizeof(seg), "%s/%s", s->wal[i], names[0]);
        assert_int_equal(unlink(seg), 0);
    }
    for (size_t k = 1; k < n; k++) {
        test_path(seg, sizeof(seg), "%s/%s", s->wal[2], names[k]);
        assert_int_equal(unlink(seg), 0);
    }
    test_path(seg, sizeof(seg), "%s/%s", s->wal[2], names[0]);
    assert_int_equal(test_truncate_file(seg, 10), 0);
}

/* The lagging replica's header is cut short and the others end in a torn
 * write of their own (a crash in the middle of a WAL write): every
 * acknowledged record is still on both others, so the lagging copy is cut
 * and refilled (found by the chaos soak, trial 110 of seed 20261121: crash
 * at wal.mid-write with replica 0 slowed). */
static void test_lagging_header_peers_torn(void **state)
{
    rstate_t *s = *state;
    kw_recovery_report_t r;
    char err[1024], seg[1200];
    char **names = NULL;
    size_t n = 0;
    static const unsigned char half[20] = { 0x4b, 0x57, 0x52, 0x31, 1, 1, 0, 0, 0x10 };

    append_blocks(s, 6, 1);
    assert_int_equal(test_list_dir(s->wal[0], ".seg", &names, &n), 0);
    assert_int_equal(n, 1);
    test_path(seg, sizeof(seg), "%s/%s", s->wal[0], names[0]);
    assert_int_equal(test_truncate_file(seg, 10), 0);
    for (int i = 1; i < 3; i++) {
        FILE *f;

        test_path(seg, sizeof(seg), "%s/%s", s->wal[i], names[0]);
        assert_non_null(f = fopen(seg, "ab"));
        assert_int_equal(fwrite(half, 1, sizeof(half), f), sizeof(half));
        assert_int_equal(fclose(f), 0);
    }
    test_free_names(names, n);
    if (recover(s, &r, err, sizeof(err)) != KW_OK)
        fail_msg("recovery refused: %s", err);
    assert_int_equal(r.blocks_replayed, 6);
    assert_int_equal(sink_rows(s), 6 * RECS_PER_BLOCK);
}

/* The process died during WAL cleanup while one replica lagged: the others
 * had deleted the first segment, the lagging one still holds it with its
 * header cut short. Every LSN in it was acknowledged, but all were delivered
 * too (below the lowest LSN still needed), so it is a torn write and cut --
 * the blocks still needed replay from the later segments (found by the chaos
 * soak, trial 111 of seed 20261121). */
static void test_cleanup_crash_lagging_replica(void **state)
{
    rstate_t *s = *state;
    kw_delivery_stats_t st;
    kw_recovery_report_t r;
    kw_tracker_t *t = NULL;
    kw_sink_t *sink = NULL;
    kw_wal_t *w = NULL;
    char err[1024], spec[1200];
    char **names = NULL;
    size_t n = 0;
    uint64_t second;

    s->wo.segment_bytes = 4096;         /* several segments */
    append_blocks(s, 40, 1);
    assert_int_equal(test_list_dir(s->wal[0], ".seg", &names, &n), 0);
    assert_true(n >= 3);
    second = strtoull(names[1], NULL, 10);
    assert_true(second > 1 && second < 30);
    /* deliver the blocks up to the second segment, clean nothing */
    assert_int_equal(kw_wal_open(&s->wo, &w, NULL, err, sizeof(err)), KW_OK);
    assert_int_equal(kw_tracker_open(s->tracker, &t, err, sizeof(err)), KW_OK);
    test_path(spec, sizeof(spec), "sqlite:%s", s->db);
    assert_int_equal(kw_sink_open(spec, &sink, err, sizeof(err)), KW_OK);
    memset(&st, 0, sizeof(st));
    assert_int_equal(kw_delivery_round(w, t, sink, 1, (size_t)second, limit_one, NULL,
                                       &st, err, sizeof(err)), KW_OK);
    assert_int_equal(st.blocks, second);
    kw_sink_close(sink);
    kw_tracker_close(t);
    kw_wal_close(w);
    crash_in_cleanup_lagging(s, names, n);
    test_free_names(names, n);

    if (recover(s, &r, err, sizeof(err)) != KW_OK)
        fail_msg("recovery refused a cleaned segment's torn leftover: %s", err);
    assert_int_equal(r.blocks_replayed, 40 - second);
    assert_int_equal(sink_rows(s), 40 * RECS_PER_BLOCK);
    assert_int_equal(test_count_files(s->wal[2], ".seg"), test_count_files(s->wal[0], ".seg"));
}

/* The same leftover, but its blocks were never delivered: every copy of
 * acknowledged, needed records is gone, and recovery must say so. */
static void test_torn_needed_segment_refused(void **state)
{
    rstate_t *s = *state;
    kw_recovery_report_t r;
    char err[1024];
    char **names = NULL;
    size_t n = 0;

    s->wo.segment_bytes = 4096;
    append_blocks(s, 40, 1);
    assert_int_equal(test_list_dir(s->wal[0], ".seg", &names, &n), 0);
    assert_true(n >= 3);
    crash_in_cleanup_lagging(s, names, n);
    test_free_names(names, n);
    assert_int_equal(recover(s, &r, err, sizeof(err)), KW_ECORRUPT);
    assert_non_null(strstr(err, "lsn 1 "));
    /* nothing was changed: no sink, the leftover still there */
    assert_int_equal(access(s->db, F_OK), -1);
    assert_int_equal(test_count_files(s->wal[2], ".seg"), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_registers_and_replays, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tracker_deleted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tracker_garbage, setup, teardown),
        cmocka_unit_test_setup_teardown(test_one_replica_corrupt, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_everywhere, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_span_everywhere, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_last_everywhere, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keep_hands_on, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cleanup_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lagging_replica_torn_header, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lagging_header_peers_torn, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cleanup_crash_lagging_replica, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_needed_segment_refused, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
