/*
 * kwal_status_cmd.c -- `kwal status -c FILE [-X key=value]... [--json]
 * [--timeout MS]`: a consumer group at a glance, from ZooKeeper, Kafka and,
 * when this machine holds the instance's WAL, the WAL and its tracker.
 *
 * What it shows: the registered instances (/consumers/<group>/ids), one row
 * per partition -- owner instance (owners/), stored next offset (offsets/;
 * in direct mode the mirror kwal keeps of the ranges in the sink), Kafka's
 * high watermark and the lag (high - stored, when both are known) -- then
 * the totals, then, when wal.dirs exist here (receive mode), each replica
 * directory's health, segment files and bytes, and the tracker's pending
 * blocks: durable but not yet acknowledged by the sink. With a sqlite sink
 * holding direct mode's ranges (sink/FORMAT.md, direct_ranges), each row
 * also shows the sink's position, the truth of direct mode.
 *
 * What it never does: disturb the group or the instance. ZooKeeper is read
 * through a view (zk.h, "Reading a group"), which registers nothing and
 * creates no node: a group that does not exist is said to, not made. Kafka
 * is asked for metadata and watermarks by a client outside the group. The
 * instance lock is not taken, so status works while kwal runs and while it
 * is stopped: the WAL is opened read-only (no lock, no repair, as `kwal wal
 * ls`), the tracker and the sink with SQLITE_OPEN_READONLY (SQLite may leave
 * an empty -wal and -shm file beside a database it found closed: it cannot
 * remove them read-only; the next writer does). The tracker's schema is the
 * one documented in tracker/tracker.h (versions 1 and 2); the tracker has no
 * read-only open of its own, so the few counting queries are here.
 *
 * Exit status (kwal.h): 0 when every part was read; 1 when ZooKeeper cannot
 * be reached or read, or the group does not exist (one line, nothing on
 * stdout), or when a part could not be read -- Kafka unreachable, a
 * watermark, a corrupt offset node, the WAL, the tracker, the sink: then
 * everything that was read is printed (unknowns as "-" or null) and one line
 * on stderr names what was not; 2 for bad arguments or configuration.
 *
 * --json prints one object (keys always present; null when unknown):
 *
 *   group                the group.id
 *   zookeeper            zookeeper.connect
 *   kafka                {bootstrap: kafka.bootstrap.servers or null,
 *                         reachable: bool, error: null or why not}
 *   instances            [{name, host, pid (null unless "host:pid"),
 *                          registered_ms: the ids node's creation, wall ms}],
 *                        sorted by name
 *   topics               [{topic, in_kafka: bool or null (Kafka unknown),
 *                          partitions: Kafka's count or null}]: the
 *                        configured topics, those of `^regex` items found in
 *                        Kafka (names starting "__" left out), and those the
 *                        group has nodes for; sorted
 *   partitions           [{topic, partition, owner: instance or null,
 *                          stored: next offset in ZooKeeper or null,
 *                          low, high: Kafka's watermarks or null,
 *                          lag: high - stored or null,
 *                          sink_next: direct mode's next offset in the
 *                          sqlite sink, or null}]: every partition of those
 *                        topics in Kafka, and every one with a ZooKeeper
 *                        node; sorted by topic, then partition
 *   totals               {partitions, owned, unowned, lag: the sum of the
 *                          known lags, lag_unknown: partitions without one}
 *   wal                  null when no wal.dirs directory exists here; else
 *                        {replicas: [{dir, state: "healthy" | "failed" |
 *                          "unreadable" (the WAL did not open) | "missing"
 *                          (no such directory), reason: null or why,
 *                          written_lsn or null, segments, bytes: the *.seg
 *                          files in the directory or null}],
 *                         healthy, write_quorum, segments, records,
 *                         first_lsn, last_lsn (null when empty or
 *                         unreadable), error: null or why the WAL did not
 *                         open,
 *                         tracker: {path, pending_blocks, pending_records,
 *                           pending_bytes (blocks not yet acknowledged by the
 *                           sink), blocks: {durable, offsets_stored,
 *                           allocated, processed} (the blocks it still
 *                           holds; processed ones are pruned once the WAL is
 *                           cleaned below them), open_batches, error: null
 *                           or why it could not be read (then the counts are
 *                           null)}}
 *   errors               [one string per part that could not be read]
 */
#include "kwal.h"

#include <errno.h>
#include <dirent.h>
#include <inttypes.h>
#include <regex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <sqlite3.h>

#include "kw_log.h"
#include "kw_time.h"
#include "source.h"
#include "tracker.h"

#define STATUS_TIMEOUT_MS   10000
#define STATUS_MAX_PROBLEMS 16

/* One row: a partition as ZooKeeper, Kafka and the sink know it. */
typedef struct st_part {
    char    topic[KW_ZK_TOPIC_MAX];
    int32_t partition;
    char    owner[256];              /* "" unowned */
    int64_t stored;                  /* -1 unknown */
    int64_t low, high;               /* -1 unknown */
    int64_t sink_next;               /* -1 unknown */
} st_part_t;

typedef struct st_topic {
    char name[KW_ZK_TOPIC_MAX];
    int  in_kafka;                   /* -1 unknown */
    int  partitions;                 /* -1 unknown */
} st_topic_t;

typedef struct st_replica {
    const char *dir;
    const char *state;
    char        reason[200];
    int64_t     written_lsn;         /* -1 unknown */
    int64_t     segments, bytes;     /* -1 unknown */
} st_replica_t;

typedef struct st_tracker {
    char     path[4096];
    int      ok;
    uint64_t blocks[5], records[5], bytes[5];   /* index kw_block_state_t */
    uint64_t open_batches;
    char     error[4096 + 512];      /* path and SQLite's message */
} st_tracker_t;

typedef struct st_wal {
    int          present;
    int          ok;                 /* the WAL opened */
    int          nreplicas, healthy, quorum;
    st_replica_t replicas[KW_WAL_MAX_REPLICAS];
    uint64_t     segments, records, first_lsn, last_lsn;
    char         error[512];
    st_tracker_t tracker;
} st_wal_t;

typedef struct status {
    const kw_conf_t *conf;
    int              timeout_ms;
    kw_zk_member_t  *members;
    size_t           nmembers;
    st_part_t       *parts;
    size_t           nparts, capparts;
    st_topic_t      *topics;
    size_t           ntopics, captopics;
    int              kafka_ok;
    char             kafka_error[512];
    st_wal_t         wal;
    char             problems[STATUS_MAX_PROBLEMS][600];
    int              nproblems;
    int              problems_dropped;   /* beyond STATUS_MAX_PROBLEMS: counted */
} status_t;

/* A part that could not be read: said on stderr at the end, and in JSON. */
static void problem(status_t *st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void problem(status_t *st, const char *fmt, ...)
{
    va_list ap;

    if (st->nproblems == STATUS_MAX_PROBLEMS) {
        st->problems_dropped++;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(st->problems[st->nproblems++], sizeof(st->problems[0]), fmt, ap);
    va_end(ap);
}

/* ---- the lists --------------------------------------------------------- */

/* The row of topic/p, added with everything unknown when missing; NULL when
 * out of memory. */
static st_part_t *part_get(status_t *st, const char *topic, int32_t p)
{
    for (size_t i = 0; i < st->nparts; i++)
        if (st->parts[i].partition == p && strcmp(st->parts[i].topic, topic) == 0)
            return &st->parts[i];
    if (st->nparts == st->capparts) {
        size_t cap = st->capparts ? 2 * st->capparts : 64;
        st_part_t *n = realloc(st->parts, cap * sizeof(*n));
        if (n == NULL)
            return NULL;
        st->parts = n;
        st->capparts = cap;
    }
    st_part_t *e = &st->parts[st->nparts++];
    memset(e, 0, sizeof(*e));
    snprintf(e->topic, sizeof(e->topic), "%s", topic);
    e->partition = p;
    e->stored = e->low = e->high = e->sink_next = -1;
    return e;
}

static st_topic_t *topic_find(status_t *st, const char *name)
{
    for (size_t i = 0; i < st->ntopics; i++)
        if (strcmp(st->topics[i].name, name) == 0)
            return &st->topics[i];
    return NULL;
}

/* The topic's entry, added (unknown to Kafka) when missing; NULL when out of
 * memory. */
static st_topic_t *topic_get(status_t *st, const char *name)
{
    st_topic_t *found = topic_find(st, name);

    if (found != NULL)
        return found;
    if (st->ntopics == st->captopics) {
        size_t cap = st->captopics ? 2 * st->captopics : 16;
        st_topic_t *n = realloc(st->topics, cap * sizeof(*n));
        if (n == NULL)
            return NULL;
        st->topics = n;
        st->captopics = cap;
    }
    st_topic_t *t = &st->topics[st->ntopics++];
    snprintf(t->name, sizeof(t->name), "%s", name);
    t->in_kafka = t->partitions = -1;
    return t;
}

static int part_cmp(const void *a, const void *b)
{
    const st_part_t *x = a, *y = b;
    int c = strcmp(x->topic, y->topic);
    return c != 0 ? c : (x->partition > y->partition) - (x->partition < y->partition);
}

static int topic_cmp(const void *a, const void *b)
{
    return strcmp(((const st_topic_t *)a)->name, ((const st_topic_t *)b)->name);
}

/* ---- ZooKeeper --------------------------------------------------------- */

/*
 * Instances and partitions from ZooKeeper. KWAL_EXIT_OK, or the exit status
 * after saying why on stderr: nothing is worth showing without ZooKeeper's
 * view, or of a group that does not exist.
 */
static int read_zookeeper(status_t *st)
{
    const kw_conf_t *conf = st->conf;
    kw_zk_options_t zo;
    kw_zk_view_t *view = NULL;
    kw_zk_part_info_t *zp = NULL;
    size_t nzp = 0;
    char errstr[1024] = "";
    int exists = 0, rc = KWAL_EXIT_FAIL;
    kw_err_t err;

    kw_zk_options_from_conf(&zo, conf);
    zo.connect_timeout_ms = st->timeout_ms;
    zo.op_timeout_ms = st->timeout_ms;
    err = kw_zk_view_open(&zo, &view, errstr, sizeof(errstr));
    if (err == KW_OK)
        err = kw_zk_view_group_exists(view, &exists, errstr, sizeof(errstr));
    if (err == KW_OK && !exists) {
        kw_cli_error("kwal", "status: group '%s' does not exist in ZooKeeper at '%s' "
                     "(no /consumers/%s: no kwal instance of it ever ran there)",
                     conf->receiver.group_id, conf->zk.connect, conf->receiver.group_id);
        goto cleanup;
    }
    if (err == KW_OK)
        err = kw_zk_view_members(view, &st->members, &st->nmembers, errstr, sizeof(errstr));
    if (err == KW_OK)
        err = kw_zk_view_partitions(view, &zp, &nzp, errstr, sizeof(errstr));
    if (err != KW_OK) {
        kw_cli_error("kwal", "status: %s", errstr[0] ? errstr : kw_err_str(err));
        rc = err == KW_ECONFIG ? KWAL_EXIT_USAGE : KWAL_EXIT_FAIL;
        goto cleanup;
    }
    for (size_t i = 0; i < nzp; i++) {
        st_part_t *p = part_get(st, zp[i].topic, zp[i].partition);

        if (p == NULL || topic_get(st, zp[i].topic) == NULL) {
            kw_cli_error("kwal", "status: out of memory");
            goto cleanup;
        }
        snprintf(p->owner, sizeof(p->owner), "%s", zp[i].owner);
        p->stored = zp[i].offset;
        if (zp[i].offset_corrupt)
            problem(st, "ZooKeeper: the offset node of %s/%" PRId32 " does not hold a "
                    "decimal offset", zp[i].topic, zp[i].partition);
    }
    rc = KWAL_EXIT_OK;

cleanup:
    free(zp);
    kw_zk_view_close(view);
    return rc;
}

/* The topics named in `topics` (not the patterns): shown even when neither
 * ZooKeeper nor Kafka has them. 0, or -1 when out of memory. */
static int add_configured_topics(status_t *st)
{
    const kw_conf_list_t *l = &st->conf->receiver.topics;

    for (int i = 0; i < l->count; i++)
        if (l->items[i][0] != '^' && topic_get(st, l->items[i]) == NULL)
            return -1;
    return 0;
}

/* ---- Kafka ------------------------------------------------------------- */

/* kafka.bootstrap.servers (or metadata.broker.list), NULL when not set. */
static const char *kafka_bootstrap(const kw_conf_t *conf)
{
    for (size_t i = 0; i < conf->nkafka; i++)
        if (strcmp(conf->kafka[i].key, "bootstrap.servers") == 0 ||
            strcmp(conf->kafka[i].key, "metadata.broker.list") == 0)
            return conf->kafka[i].value;
    return NULL;
}

/* What librdkafka said last (its error callback), for the one-line reason. */
typedef struct kafka_ctx {
    char last[256];
} kafka_ctx_t;

static void kafka_error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    kafka_ctx_t *k = opaque;
    (void)rk;
    (void)err;
    snprintf(k->last, sizeof(k->last), "%s", reason);
}

/* Is topic one of the configured ones: a literal item, or matched by a
 * `^regex` item (Kafka's internal "__" topics left out)? */
static int topic_configured(const kw_conf_t *conf, const char *topic)
{
    const kw_conf_list_t *l = &conf->receiver.topics;

    for (int i = 0; i < l->count; i++) {
        regex_t re;
        int match;

        if (l->items[i][0] != '^') {
            if (strcmp(l->items[i], topic) == 0)
                return 1;
            continue;
        }
        if (strncmp(topic, "__", 2) == 0 || regcomp(&re, l->items[i], REG_EXTENDED | REG_NOSUB))
            continue;
        match = regexec(&re, topic, 0, NULL, 0) == 0;
        regfree(&re);
        if (match)
            return 1;
    }
    return 0;
}

/* The high and low watermarks of every partition of the topics Kafka has,
 * within what is left of the timeout. */
static void read_watermarks(status_t *st, rd_kafka_t *rk, int64_t deadline)
{
    for (size_t i = 0; i < st->nparts; i++) {
        st_part_t *p = &st->parts[i];
        const st_topic_t *t = topic_find(st, p->topic);
        int64_t lo = -1, hi = -1, left = deadline - kw_mono_ms();
        rd_kafka_resp_err_t e;

        if (t == NULL || t->in_kafka != 1)
            continue;                            /* Kafka has no such partition */
        if (left <= 0) {
            problem(st, "Kafka: no time left for the watermarks of %s/%" PRId32 " and "
                    "after (--timeout %d)", p->topic, p->partition, st->timeout_ms);
            return;
        }
        e = rd_kafka_query_watermark_offsets(rk, p->topic, p->partition, &lo, &hi, (int)left);
        if (e == RD_KAFKA_RESP_ERR_NO_ERROR) {
            p->low = lo;
            p->high = hi;
        } else if (e != RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION &&
                   e != RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) {
            problem(st, "Kafka: the watermarks of %s/%" PRId32 ": %s", p->topic, p->partition,
                    rd_kafka_err2str(e));
        }
    }
}

/* Add the partitions Kafka has of every topic shown (configured, matched,
 * or known to ZooKeeper) and mark which topics Kafka has. */
static int add_kafka_partitions(status_t *st, const struct rd_kafka_metadata *md)
{
    for (int i = 0; i < md->topic_cnt; i++) {
        const rd_kafka_metadata_topic_t *mt = &md->topics[i];
        st_topic_t *t;

        if (mt->err != RD_KAFKA_RESP_ERR_NO_ERROR)
            continue;
        t = topic_find(st, mt->topic);
        if (t == NULL && topic_configured(st->conf, mt->topic) &&
            (t = topic_get(st, mt->topic)) == NULL)
            return -1;
        if (t == NULL)
            continue;
        t->in_kafka = 1;
        t->partitions = mt->partition_cnt;
        for (int p = 0; p < mt->partition_cnt; p++)
            if (part_get(st, mt->topic, mt->partitions[p].id) == NULL)
                return -1;
    }
    for (size_t k = 0; k < st->ntopics; k++)
        if (st->topics[k].in_kafka < 0)
            st->topics[k].in_kafka = 0;
    return 0;
}

/* Partitions and watermarks from Kafka. When Kafka cannot be reached the
 * rows keep what ZooKeeper said, with the watermarks unknown. */
static void read_kafka(status_t *st)
{
    static const char *const quiet[] = { "log_level", "0", NULL };
    const struct rd_kafka_metadata *md = NULL;
    int64_t deadline = kw_mono_ms() + st->timeout_ms;
    rd_kafka_conf_t *kc = NULL;
    rd_kafka_t *rk = NULL;
    kafka_ctx_t kx;
    char errstr[1024] = "";
    rd_kafka_resp_err_t e;

    memset(&kx, 0, sizeof(kx));
    /* a client of a group of its own that joins nothing: the group's
     * members and committed offsets are not touched */
    if (kw_source_consumer_conf(st->conf, "kwal-status", quiet, &kc, errstr,
                                sizeof(errstr)) != KW_OK) {
        snprintf(st->kafka_error, sizeof(st->kafka_error), "%s", errstr);
        goto fail;
    }
    rd_kafka_conf_set_error_cb(kc, kafka_error_cb);
    rd_kafka_conf_set_opaque(kc, &kx);
    if ((rk = rd_kafka_new(RD_KAFKA_CONSUMER, kc, errstr, sizeof(errstr))) == NULL) {
        rd_kafka_conf_destroy(kc);
        snprintf(st->kafka_error, sizeof(st->kafka_error), "Kafka client: %s", errstr);
        goto fail;
    }
    e = rd_kafka_metadata(rk, 1, NULL, &md, st->timeout_ms);
    rd_kafka_poll(rk, 0);                        /* runs the error callback */
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
        snprintf(st->kafka_error, sizeof(st->kafka_error), "no metadata from %s%s (%s%s%s)",
                 kafka_bootstrap(st->conf) ? kafka_bootstrap(st->conf) : "the brokers",
                 e == RD_KAFKA_RESP_ERR__TIMED_OUT ? " within --timeout" : "",
                 rd_kafka_err2str(e), kx.last[0] ? ": " : "", kx.last);
        goto fail;
    }
    if (add_kafka_partitions(st, md) != 0) {
        snprintf(st->kafka_error, sizeof(st->kafka_error), "out of memory");
        goto fail;
    }
    rd_kafka_metadata_destroy(md);
    read_watermarks(st, rk, deadline);
    rd_kafka_destroy(rk);
    st->kafka_ok = 1;
    return;

fail:
    if (md != NULL)
        rd_kafka_metadata_destroy(md);
    if (rk != NULL)
        rd_kafka_destroy(rk);
    problem(st, "Kafka unreachable, high watermarks unknown: %s", st->kafka_error);
}

/* ---- SQLite, read-only ------------------------------------------------- */

/* Open path read-only (never created); NULL with errstr when it cannot. */
static sqlite3 *db_open_ro(const char *path, char *errstr, size_t errlen)
{
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL);

    if (rc != SQLITE_OK) {
        snprintf(errstr, errlen, "%s: %s", path, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_busy_timeout(db, 5000);              /* a writer's checkpoint */
    return db;
}

/* One integer from sql; -1 with errstr on error. */
static int db_int(sqlite3 *db, const char *path, const char *sql, int64_t *out,
                  char *errstr, size_t errlen)
{
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &s, NULL);

    if (rc == SQLITE_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        *out = sqlite3_column_int64(s, 0);
        sqlite3_finalize(s);
        return 0;
    }
    snprintf(errstr, errlen, "%s: %s", path, rc == SQLITE_DONE ? "no row" : sqlite3_errmsg(db));
    sqlite3_finalize(s);
    return -1;
}

/* Direct mode's position per partition in a sqlite sink (sink/FORMAT.md:
 * the highest until_offset of direct_ranges). No sqlite sink, no such file
 * or no such table: nothing to show, no problem. */
static void read_sink_ranges(status_t *st)
{
    const char *sink = st->conf->receiver.sink;
    const char *path = sink + strlen("sqlite:");
    sqlite3_stmt *s = NULL;
    sqlite3 *db;
    struct stat sb;
    char errstr[1024];
    int64_t has = 0;
    int prc, rc;

    if (strncmp(sink, "sqlite:", 7) != 0 || stat(path, &sb) != 0)
        return;
    if ((db = db_open_ro(path, errstr, sizeof(errstr))) == NULL ||
        db_int(db, path, "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND "
               "name = 'direct_ranges'", &has, errstr, sizeof(errstr)) != 0) {
        problem(st, "sink %s", errstr);
        goto out;
    }
    if (!has)
        goto out;
    prc = sqlite3_prepare_v2(db, "SELECT topic, partition, MAX(until_offset) FROM direct_ranges "
                             "GROUP BY topic, partition", -1, &s, NULL);
    rc = prc;
    while (prc == SQLITE_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        const char *topic = (const char *)sqlite3_column_text(s, 0);
        int64_t p = sqlite3_column_int64(s, 1);

        for (size_t i = 0; topic != NULL && i < st->nparts; i++)
            if (st->parts[i].partition == p && strcmp(st->parts[i].topic, topic) == 0)
                st->parts[i].sink_next = sqlite3_column_int64(s, 2);
    }
    if (rc != SQLITE_DONE)
        problem(st, "sink %s: %s", path, sqlite3_errmsg(db));
out:
    sqlite3_finalize(s);
    sqlite3_close(db);
}

/* The tracker's counts per block state (tracker.h, "Schema"). */
static void read_tracker(st_tracker_t *t)
{
    sqlite3_stmt *s = NULL;
    sqlite3 *db;
    struct stat sb;
    int64_t version = 0, open_batches = 0;
    int prc, rc;

    if (stat(t->path, &sb) != 0) {
        snprintf(t->error, sizeof(t->error), "%s: %s", t->path, strerror(errno));
        return;
    }
    if ((db = db_open_ro(t->path, t->error, sizeof(t->error))) == NULL)
        return;
    if (db_int(db, t->path, "PRAGMA user_version", &version, t->error, sizeof(t->error)) != 0)
        goto out;
    if (version != 1 && version != KW_TRACKER_SCHEMA_VERSION) {
        snprintf(t->error, sizeof(t->error), "%s: tracker schema version %" PRId64 ", not one "
                 "this kwal reads", t->path, version);
        goto out;
    }
    /* version 1 named the batches table "batches" */
    if (db_int(db, t->path, version == 1 ? "SELECT COUNT(*) FROM batches WHERE state = 1"
               : "SELECT COUNT(*) FROM delivery_batches WHERE state = 1", &open_batches,
               t->error, sizeof(t->error)) != 0)
        goto out;
    prc = sqlite3_prepare_v2(db, "SELECT state, COUNT(*), COALESCE(SUM(records), 0), "
                             "COALESCE(SUM(bytes), 0) FROM blocks GROUP BY state", -1, &s, NULL);
    rc = prc;
    while (prc == SQLITE_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        int64_t state = sqlite3_column_int64(s, 0);

        if (state < KW_BLOCK_DURABLE || state > KW_BLOCK_PROCESSED)
            continue;                            /* no such state: not counted */
        t->blocks[state] = (uint64_t)sqlite3_column_int64(s, 1);
        t->records[state] = (uint64_t)sqlite3_column_int64(s, 2);
        t->bytes[state] = (uint64_t)sqlite3_column_int64(s, 3);
    }
    if (rc != SQLITE_DONE) {
        snprintf(t->error, sizeof(t->error), "%s: %s", t->path, sqlite3_errmsg(db));
        goto out;
    }
    t->open_batches = (uint64_t)open_batches;
    t->ok = 1;
out:
    sqlite3_finalize(s);
    sqlite3_close(db);
}

/* ---- the local WAL ----------------------------------------------------- */

/* The *.seg files of dir and their bytes, as they are on disk (as `kwal wal
 * ls` counts them). -1 with errno when dir cannot be read. */
static int scan_segments(const char *dir, int64_t *nseg, int64_t *bytes)
{
    struct dirent *de;
    DIR *d = opendir(dir);

    *nseg = *bytes = 0;
    if (d == NULL)
        return -1;
    while ((de = readdir(d)) != NULL) {
        size_t len = strlen(de->d_name);
        struct stat sb;

        if (len < 5 || strcmp(de->d_name + len - 4, ".seg") != 0 ||
            fstatat(dirfd(d), de->d_name, &sb, 0) != 0)
            continue;
        (*nseg)++;
        *bytes += (int64_t)sb.st_size;
    }
    closedir(d);
    return 0;
}

static int is_dir(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

/* The WAL read-only (no lock: kwal may be running) and its tracker. */
static void read_wal(status_t *st)
{
    st_wal_t *w = &st->wal;
    kw_wal_replica_info_t info[KW_WAL_MAX_REPLICAS];
    kw_wal_segment_info_t *segs = NULL;
    kw_wal_open_report_t report;
    kw_wal_options_t wo;
    kw_wal_t *wal = NULL;
    char errstr[1024] = "";
    size_t nsegs = 0;

    for (int i = 0; i < st->conf->wal.dirs.count && !w->present; i++)
        w->present = is_dir(st->conf->wal.dirs.items[i]);
    if (!w->present)
        return;                                  /* not this machine's instance */
    if (kwal_wal_options_from_conf(st->conf, NULL, 0, &wo, errstr, sizeof(errstr)) != KW_OK) {
        snprintf(w->error, sizeof(w->error), "%s", errstr);
        problem(st, "WAL: %s", w->error);
        return;
    }
    wo.read_only = 1;
    w->nreplicas = wo.ndirs;
    w->quorum = wo.write_quorum > 0 ? wo.write_quorum : wo.ndirs / 2 + 1;
    memset(info, 0, sizeof(info));
    memset(&report, 0, sizeof(report));
    if (kw_wal_open(&wo, &wal, &report, errstr, sizeof(errstr)) == KW_OK) {
        w->ok = 1;
        w->healthy = kw_wal_health(wal, info, KW_WAL_MAX_REPLICAS);
        for (size_t cap = 64;; cap = nsegs + 16) {   /* the log may grow meanwhile */
            kw_wal_segment_info_t *n = realloc(segs, cap * sizeof(*segs));

            if (n == NULL) {
                problem(st, "WAL: out of memory listing its segments");
                nsegs = 0;
                break;
            }
            segs = n;
            if ((nsegs = kw_wal_segments(wal, segs, cap)) <= cap)
                break;
        }
        for (size_t i = 0; i < nsegs; i++) {
            if (segs[i].last_lsn + 1 <= segs[i].first_lsn)
                continue;                        /* empty */
            w->records += segs[i].last_lsn + 1 - segs[i].first_lsn;
            if (w->first_lsn == 0)
                w->first_lsn = segs[i].first_lsn;
            w->last_lsn = segs[i].last_lsn;
        }
        w->segments = nsegs;
        free(segs);
        kw_wal_close(wal);
    } else {
        snprintf(w->error, sizeof(w->error), "%s", errstr);
        problem(st, "WAL: %s", w->error);
    }
    for (int r = 0; r < wo.ndirs; r++) {
        st_replica_t *rp = &w->replicas[r];

        rp->dir = wo.dirs[r];
        rp->written_lsn = w->ok ? (int64_t)info[r].written_lsn : -1;
        rp->state = !is_dir(rp->dir) ? "missing" : !w->ok ? "unreadable"
                  : info[r].state == KW_REPLICA_HEALTHY ? "healthy" : "failed";
        if (w->ok && info[r].state != KW_REPLICA_HEALTHY)
            snprintf(rp->reason, sizeof(rp->reason), "%s", info[r].reason);
        if (scan_segments(rp->dir, &rp->segments, &rp->bytes) != 0) {
            snprintf(rp->reason, sizeof(rp->reason), "%s", strerror(errno));
            rp->segments = rp->bytes = -1;
        }
    }
    kw_tracker_default_path(st->conf->receiver.tracker_path, wo.dirs[0], w->tracker.path,
                            sizeof(w->tracker.path));
    read_tracker(&w->tracker);
    if (!w->tracker.ok)
        problem(st, "tracker: %s", w->tracker.error);
}

/* ---- totals ------------------------------------------------------------ */

typedef struct st_totals {
    size_t  partitions, owned, lag_unknown;
    int64_t lag;
} st_totals_t;

/* high - stored, or -1 when either is unknown. (A stored offset past the
 * high watermark -- a topic deleted and made again -- gives a negative lag,
 * shown as it is.) */
static int lag_known(const st_part_t *p)
{
    return p->stored >= 0 && p->high >= 0;
}

static st_totals_t totals_of(const status_t *st)
{
    st_totals_t t = { st->nparts, 0, 0, 0 };

    for (size_t i = 0; i < st->nparts; i++) {
        const st_part_t *p = &st->parts[i];

        t.owned += p->owner[0] != '\0';
        if (lag_known(p))
            t.lag += p->high - p->stored;
        else
            t.lag_unknown++;
    }
    return t;
}

/* "host:pid" split at the last ':'; *pid -1 when it is not a number. */
static void member_host_pid(const kw_zk_member_t *m, char *host, size_t cap, long *pid)
{
    const char *colon = strrchr(m->data, ':');
    char *end;

    *pid = -1;
    snprintf(host, cap, "%.*s", colon ? (int)(colon - m->data) : (int)strlen(m->data),
             m->data);
    if (colon != NULL && colon[1] >= '0' && colon[1] <= '9') {
        long v = strtol(colon + 1, &end, 10);
        if (*end == '\0')
            *pid = v;
    }
}

/* ---- the table --------------------------------------------------------- */

static void format_ms(int64_t ms, char *buf, size_t len)
{
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;

    if (ms <= 0 || gmtime_r(&secs, &tm) == NULL) {
        snprintf(buf, len, "-");
        return;
    }
    snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* v as text, or "-" when it is not known. */
static const char *num(char *buf, size_t len, int known, int64_t v)
{
    if (!known)
        return "-";
    snprintf(buf, len, "%" PRId64, v);
    return buf;
}

static void print_partitions(const status_t *st)
{
    int tw = 5, ow = 5, sink = 0;
    char b1[24], b2[24], b3[24], b4[24];

    for (size_t i = 0; i < st->nparts; i++) {
        const st_part_t *p = &st->parts[i];
        if ((int)strlen(p->topic) > tw)
            tw = (int)strlen(p->topic);
        if ((int)strlen(p->owner) > ow)
            ow = (int)strlen(p->owner);
        sink |= p->sink_next >= 0;
    }
    printf("\npartitions:\n");
    if (st->nparts == 0) {
        printf("  (none)\n");
        return;
    }
    printf("  %-*s  %9s  %-*s  %12s  %12s  %10s%s\n", tw, "TOPIC", "PARTITION", ow, "OWNER",
           "STORED", "HIGH", "LAG", sink ? "          SINK" : "");
    for (size_t i = 0; i < st->nparts; i++) {
        const st_part_t *p = &st->parts[i];

        printf("  %-*s  %9" PRId32 "  %-*s  %12s  %12s  %10s", tw, p->topic, p->partition,
               ow, p->owner[0] ? p->owner : "-", num(b1, sizeof(b1), p->stored >= 0, p->stored),
               num(b2, sizeof(b2), p->high >= 0, p->high),
               num(b3, sizeof(b3), lag_known(p), p->high - p->stored));
        if (sink)
            printf("  %12s", num(b4, sizeof(b4), p->sink_next >= 0, p->sink_next));
        putchar('\n');
    }
}

static void print_wal(const st_wal_t *w)
{
    const st_tracker_t *t = &w->tracker;
    char b1[24], b2[24], b3[24];

    if (!w->present) {
        printf("\nwal: none on this machine (no wal.dirs directory here)\n");
        return;
    }
    printf("\nwal: %d replica%s", w->nreplicas, w->nreplicas == 1 ? "" : "s");
    if (w->ok)
        printf(", %d healthy, write quorum %d; %" PRIu64 " segments, %" PRIu64 " records",
               w->healthy, w->quorum, w->segments, w->records);
    if (w->ok && w->records > 0)
        printf(" (LSN %" PRIu64 "..%" PRIu64 ")", w->first_lsn, w->last_lsn);
    if (!w->ok)
        printf("; not readable: %s", w->error);
    printf("\n  %-7s  %-10s  %20s  %8s  %14s  %s\n", "REPLICA", "STATE", "WRITTEN_LSN",
           "SEGMENTS", "BYTES", "DIR");
    for (int r = 0; r < w->nreplicas; r++) {
        const st_replica_t *rp = &w->replicas[r];

        printf("  %-7d  %-10s  %20s  %8s  %14s  %s%s%s\n", r, rp->state,
               num(b1, sizeof(b1), rp->written_lsn >= 0, rp->written_lsn),
               num(b2, sizeof(b2), rp->segments >= 0, rp->segments),
               num(b3, sizeof(b3), rp->bytes >= 0, rp->bytes), rp->dir,
               rp->reason[0] ? ": " : "", rp->reason);
    }
    if (!t->ok) {
        printf("tracker: not readable: %s\n", t->error);
        return;
    }
    printf("tracker %s: %" PRIu64 " pending blocks (%" PRIu64 " records, %" PRIu64 " bytes: "
           "%" PRIu64 " durable, %" PRIu64 " offsets stored, %" PRIu64 " in open batches), "
           "%" PRIu64 " open batches, %" PRIu64 " processed blocks kept\n", t->path,
           t->blocks[1] + t->blocks[2] + t->blocks[3], t->records[1] + t->records[2] +
           t->records[3], t->bytes[1] + t->bytes[2] + t->bytes[3], t->blocks[1], t->blocks[2],
           t->blocks[3], t->open_batches, t->blocks[4]);
}

static void print_human(const status_t *st)
{
    const kw_conf_t *conf = st->conf;
    const char *bs = kafka_bootstrap(conf);
    st_totals_t tot = totals_of(st);
    int nw = 4, first = 1;

    printf("group %s: ZooKeeper %s, Kafka %s\n", conf->receiver.group_id, conf->zk.connect,
           bs ? bs : "(kafka.bootstrap.servers not set)");
    if (!st->kafka_ok)
        printf("kafka: unreachable, high watermarks unknown: %s\n", st->kafka_error);

    printf("\ninstances: %zu\n", st->nmembers);
    for (size_t i = 0; i < st->nmembers; i++)
        if ((int)strlen(st->members[i].name) > nw)
            nw = (int)strlen(st->members[i].name);
    if (st->nmembers > 0)
        printf("  %-*s  %-30s  %s\n", nw, "NAME", "HOST:PID", "REGISTERED");
    for (size_t i = 0; i < st->nmembers; i++) {
        char when[40];
        format_ms(st->members[i].created_ms, when, sizeof(when));
        printf("  %-*s  %-30s  %s\n", nw, st->members[i].name, st->members[i].data, when);
    }

    print_partitions(st);
    for (size_t i = 0; i < st->ntopics; i++)
        if (st->topics[i].in_kafka == 0) {
            printf("%s%s", first ? "topics not in Kafka: " : ", ", st->topics[i].name);
            first = 0;
        }
    if (!first)
        putchar('\n');
    printf("\ntotal: %zu partitions, %zu owned, %zu unowned, lag %" PRId64, tot.partitions,
           tot.owned, tot.partitions - tot.owned, tot.lag);
    if (tot.lag_unknown > 0)
        printf(" (unknown for %zu)", tot.lag_unknown);
    putchar('\n');
    print_wal(&st->wal);
}

/* ---- JSON -------------------------------------------------------------- */

/* A JSON string (NULL: null); UTF-8 passes through. */
static void jstr(const char *s)
{
    if (s == NULL) {
        fputs("null", stdout);
        return;
    }
    putchar('"');
    for (const unsigned char *c = (const unsigned char *)s; *c != '\0'; c++) {
        if (*c == '"' || *c == '\\')
            printf("\\%c", *c);
        else if (*c == '\n')
            fputs("\\n", stdout);
        else if (*c < 0x20)
            printf("\\u%04x", *c);
        else
            putchar(*c);
    }
    putchar('"');
}

/* A number, or null when unknown. */
static void jnum(int known, int64_t v)
{
    if (known)
        printf("%" PRId64, v);
    else
        fputs("null", stdout);
}

static void print_json_wal(const st_wal_t *w)
{
    const st_tracker_t *t = &w->tracker;

    if (!w->present) {
        fputs("null", stdout);
        return;
    }
    fputs("{\"replicas\":[", stdout);
    for (int r = 0; r < w->nreplicas; r++) {
        const st_replica_t *rp = &w->replicas[r];

        printf("%s{\"dir\":", r ? "," : "");
        jstr(rp->dir);
        printf(",\"state\":\"%s\",\"reason\":", rp->state);
        jstr(rp->reason[0] ? rp->reason : NULL);
        fputs(",\"written_lsn\":", stdout);
        jnum(rp->written_lsn >= 0, rp->written_lsn);
        fputs(",\"segments\":", stdout);
        jnum(rp->segments >= 0, rp->segments);
        fputs(",\"bytes\":", stdout);
        jnum(rp->bytes >= 0, rp->bytes);
        putchar('}');
    }
    printf("],\"healthy\":%d,\"write_quorum\":%d,\"segments\":", w->healthy, w->quorum);
    jnum(w->ok, (int64_t)w->segments);
    fputs(",\"records\":", stdout);
    jnum(w->ok, (int64_t)w->records);
    fputs(",\"first_lsn\":", stdout);
    jnum(w->ok && w->records > 0, (int64_t)w->first_lsn);
    fputs(",\"last_lsn\":", stdout);
    jnum(w->ok && w->records > 0, (int64_t)w->last_lsn);
    fputs(",\"error\":", stdout);
    jstr(w->error[0] ? w->error : NULL);
    fputs(",\"tracker\":{\"path\":", stdout);
    jstr(t->path);
    fputs(",\"pending_blocks\":", stdout);
    jnum(t->ok, (int64_t)(t->blocks[1] + t->blocks[2] + t->blocks[3]));
    fputs(",\"pending_records\":", stdout);
    jnum(t->ok, (int64_t)(t->records[1] + t->records[2] + t->records[3]));
    fputs(",\"pending_bytes\":", stdout);
    jnum(t->ok, (int64_t)(t->bytes[1] + t->bytes[2] + t->bytes[3]));
    if (t->ok)
        printf(",\"blocks\":{\"durable\":%" PRIu64 ",\"offsets_stored\":%" PRIu64
               ",\"allocated\":%" PRIu64 ",\"processed\":%" PRIu64 "}", t->blocks[1],
               t->blocks[2], t->blocks[3], t->blocks[4]);
    else
        fputs(",\"blocks\":null", stdout);
    fputs(",\"open_batches\":", stdout);
    jnum(t->ok, (int64_t)t->open_batches);
    fputs(",\"error\":", stdout);
    jstr(t->ok ? NULL : t->error);
    fputs("}}", stdout);
}

static void print_json(const status_t *st)
{
    st_totals_t tot = totals_of(st);

    fputs("{\"group\":", stdout);
    jstr(st->conf->receiver.group_id);
    fputs(",\"zookeeper\":", stdout);
    jstr(st->conf->zk.connect);
    fputs(",\"kafka\":{\"bootstrap\":", stdout);
    jstr(kafka_bootstrap(st->conf));
    printf(",\"reachable\":%s,\"error\":", st->kafka_ok ? "true" : "false");
    jstr(st->kafka_ok ? NULL : st->kafka_error);
    fputs("},\"instances\":[", stdout);
    for (size_t i = 0; i < st->nmembers; i++) {
        char host[300];
        long pid;

        member_host_pid(&st->members[i], host, sizeof(host), &pid);
        printf("%s{\"name\":", i ? "," : "");
        jstr(st->members[i].name);
        fputs(",\"host\":", stdout);
        jstr(host);
        fputs(",\"pid\":", stdout);
        jnum(pid >= 0, pid);
        printf(",\"registered_ms\":%" PRId64 "}", st->members[i].created_ms);
    }
    fputs("],\"topics\":[", stdout);
    for (size_t i = 0; i < st->ntopics; i++) {
        const st_topic_t *t = &st->topics[i];

        printf("%s{\"topic\":", i ? "," : "");
        jstr(t->name);
        printf(",\"in_kafka\":%s,\"partitions\":",
               t->in_kafka < 0 ? "null" : t->in_kafka ? "true" : "false");
        jnum(t->partitions >= 0, t->partitions);
        putchar('}');
    }
    fputs("],\"partitions\":[", stdout);
    for (size_t i = 0; i < st->nparts; i++) {
        const st_part_t *p = &st->parts[i];

        printf("%s{\"topic\":", i ? "," : "");
        jstr(p->topic);
        printf(",\"partition\":%" PRId32 ",\"owner\":", p->partition);
        jstr(p->owner[0] ? p->owner : NULL);
        fputs(",\"stored\":", stdout);
        jnum(p->stored >= 0, p->stored);
        fputs(",\"low\":", stdout);
        jnum(p->low >= 0, p->low);
        fputs(",\"high\":", stdout);
        jnum(p->high >= 0, p->high);
        fputs(",\"lag\":", stdout);
        jnum(lag_known(p), p->high - p->stored);
        fputs(",\"sink_next\":", stdout);
        jnum(p->sink_next >= 0, p->sink_next);
        putchar('}');
    }
    printf("],\"totals\":{\"partitions\":%zu,\"owned\":%zu,\"unowned\":%zu,\"lag\":%" PRId64
           ",\"lag_unknown\":%zu},\"wal\":", tot.partitions, tot.owned,
           tot.partitions - tot.owned, tot.lag, tot.lag_unknown);
    print_json_wal(&st->wal);
    fputs(",\"errors\":[", stdout);
    for (int i = 0; i < st->nproblems; i++) {
        if (i)
            putchar(',');
        jstr(st->problems[i]);
    }
    if (st->problems_dropped > 0)
        printf(",\"and %d more\"", st->problems_dropped);
    fputs("]}\n", stdout);
}

/* ---- the command ------------------------------------------------------- */

static void print_usage(FILE *out)
{
    fputs("Usage: kwal status -c FILE [-X key=value]... [--json] [--timeout MS]\n"
          "\n"
          "The group of the configuration (group.id) at a glance: its running\n"
          "instances and, per partition of `topics` (and of every topic the group\n"
          "has offsets or owners for), the owner instance, the stored offset\n"
          "(ZooKeeper), Kafka's high watermark and the lag; totals; and, when\n"
          "wal.dirs exist on this machine, each WAL replica's health, segments and\n"
          "bytes, and the blocks durable but not yet acknowledged by the sink.\n"
          "Reads only: works while kwal runs and when it is stopped, takes no\n"
          "lock, creates nothing (a group that does not exist is said to).\n"
          "\n"
          "  --json        one JSON object (keys: README, `kwal status`)\n"
          "  --timeout MS  bound on reaching ZooKeeper and on Kafka's metadata and\n"
          "                watermarks (default 10000)\n"
          "\n"
          "Exit status: 0 when everything was read; 1 when ZooKeeper cannot be read\n"
          "or the group does not exist, or when a part could not be read (Kafka,\n"
          "the WAL, the tracker): what was read is printed, unknowns as - (null),\n"
          "and one line on stderr says what was not; 2 for bad arguments.\n", out);
}

typedef struct status_args {
    const char  *conf_path;
    const char **overrides;
    size_t       noverrides;
    int          json;
    int          timeout_ms;
} status_args_t;

/* KWAL_EXIT_OK, or the exit status after a usage error (*help for --help). */
static int parse_args(int argc, char **argv, status_args_t *a, int *help)
{
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i], *v = NULL;
        uint64_t ms;
        int r;

        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            *help = 1;
            return KWAL_EXIT_OK;
        }
        if ((r = kw_cli_conf_opt(argc, argv, &i, &a->conf_path, a->overrides,
                                 &a->noverrides)) != 0) {
            if (r < 0)
                return kw_cli_usage_error_topic("kwal", "status", "status: %s needs an "
                                                "argument", arg);
        } else if (strcmp(arg, "--json") == 0) {
            a->json = 1;
        } else if ((r = kw_cli_opt_value(argc, argv, &i, "--timeout", &v)) != 0) {
            if (r < 0 || !kw_cli_parse_u64(v, 100, 600000, &ms))
                return kw_cli_usage_error_topic("kwal", "status", "status: --timeout: "
                                                "expected milliseconds from 100 to 600000%s%s%s",
                                                v ? ", got '" : "", v ? v : "", v ? "'" : "");
            a->timeout_ms = (int)ms;
        } else {
            return kw_cli_usage_error_topic("kwal", "status", "status: unexpected argument "
                                            "'%s'", arg);
        }
    }
    if (a->conf_path == NULL && a->noverrides == 0)
        return kw_cli_usage_error_topic("kwal", "status", "status: which group? Give -c FILE");
    return KWAL_EXIT_OK;
}

/* The configuration, checked for what status needs. */
static int load_conf(const status_args_t *a, kw_conf_t **conf)
{
    char errstr[1024];
    kw_err_t err = kw_conf_load(a->conf_path, a->overrides, a->noverrides, conf, errstr,
                                sizeof(errstr));

    if (err != KW_OK) {
        kw_cli_error("kwal", "%s", errstr);
        return err == KW_ENOMEM ? KWAL_EXIT_FAIL : KWAL_EXIT_USAGE;
    }
    if ((*conf)->receiver.group_id[0] == '\0') {
        kw_cli_error("kwal", "status: group.id: required by kwal status");
        return KWAL_EXIT_USAGE;
    }
    /* status says itself what went wrong; the modules' INFO and WARN lines
     * (what the WAL's read-only open found, say) would only repeat it */
    if (kw_conf_is_set(*conf, "log.level"))
        kw_log_set_level((kw_log_level_t)(*conf)->log.level);
    else if (getenv("KWAL_LOG_LEVEL") == NULL)
        kw_log_set_level(KW_LOG_ERROR);
    return KWAL_EXIT_OK;
}

int kwal_status_main(int argc, char **argv)
{
    status_args_t a;
    status_t st;
    kw_conf_t *conf = NULL;
    int help = 0, rc;

    memset(&a, 0, sizeof(a));
    memset(&st, 0, sizeof(st));
    a.timeout_ms = STATUS_TIMEOUT_MS;
    if ((a.overrides = calloc((size_t)argc + 1, sizeof(*a.overrides))) == NULL) {
        kw_cli_error("kwal", "out of memory");
        return KWAL_EXIT_FAIL;
    }
    rc = parse_args(argc, argv, &a, &help);
    if (rc != KWAL_EXIT_OK || help) {
        if (help)
            print_usage(stdout);
        goto cleanup;
    }
    if ((rc = load_conf(&a, &conf)) != KWAL_EXIT_OK)
        goto cleanup;
    st.conf = conf;
    st.timeout_ms = a.timeout_ms;
    if ((rc = read_zookeeper(&st)) != KWAL_EXIT_OK)
        goto cleanup;
    if (add_configured_topics(&st) != 0) {
        kw_cli_error("kwal", "status: out of memory");
        rc = KWAL_EXIT_FAIL;
        goto cleanup;
    }
    read_kafka(&st);
    read_sink_ranges(&st);
    read_wal(&st);
    qsort(st.parts, st.nparts, sizeof(*st.parts), part_cmp);
    qsort(st.topics, st.ntopics, sizeof(*st.topics), topic_cmp);
    if (a.json)
        print_json(&st);
    else
        print_human(&st);
    if (st.nproblems > 0) {
        char line[STATUS_MAX_PROBLEMS * 610] = "";
        size_t n = 0;

        for (int i = 0; i < st.nproblems && n < sizeof(line); i++)
            n += (size_t)snprintf(line + n, sizeof(line) - n, "%s%s", i ? "; " : "",
                                  st.problems[i]);
        if (st.problems_dropped > 0 && n < sizeof(line))
            snprintf(line + n, sizeof(line) - n, "; and %d more", st.problems_dropped);
        kw_cli_error("kwal", "status: %s", line);
        rc = KWAL_EXIT_FAIL;
    }

cleanup:
    free(st.members);
    free(st.parts);
    free(st.topics);
    kw_conf_destroy(conf);
    free(a.overrides);
    return rc;
}
