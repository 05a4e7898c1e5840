/*
 * sink_pg.c -- the `postgresql:CONNINFO` sink (rules in sink.h, every table
 * and column in sink/FORMAT.md): the sqlite sink's tables on a PostgreSQL
 * server, through libpq. The shared store of several instances.
 *
 * One batch, one transaction (sink.h T1-T4), READ COMMITTED:
 *
 *   begin       BEGIN
 *   begin_next  BEGIN; pg_advisory_xact_lock(ids): one id taker at a time
 *               across every connection, until the transaction ends; then
 *               the next id after every id in batches and direct_ranges
 *   write       SELECT the batch's row in batches
 *                 same fingerprint  -> ROLLBACK; replay (T3)
 *                 other fingerprint -> warn (batch id reused) and go on
 *               COPY the records (binary) into a temporary table, then
 *               INSERT INTO records SELECT ... ON CONFLICT DO NOTHING: the
 *               rows it inserted are stored, the rest duplicate deliveries
 *               (invariant 3); INSERT ... ON CONFLICT (id) DO UPDATE the
 *               batch's row
 *   put_range   pg_advisory_xact_lock(topic/partition), then the fence
 *               (the partition's stored end, read after the lock: READ
 *               COMMITTED reads what committed before the statement) and
 *               INSERT INTO direct_ranges
 *   commit      crash point sink.mid-txn, then COMMIT
 *   abort       ROLLBACK (when the connection is still there)
 *
 * The server going away. Any call that finds the connection broken resets
 * it first (PQreset: a new connection with the same settings); when that
 * fails it returns KW_EIO, which the callers retry (direct mode with
 * backoff, receive mode at the next interval, recovery for a while). A
 * transaction the server lost is lost whole: nothing of it was
 * acknowledged (T1). A COMMIT whose answer is lost may or may not have
 * committed: KW_EIO, and the retry finds out -- the same batch is then a
 * replay (its batches row), or, for direct mode's next id, its ranges
 * fence the retry (KW_EFENCED) and direct mode reads its positions again.
 *
 * Names. Errors and logs name the sink as postgresql:host=H port=P
 * dbname=D user=U -- never the password. The tables are created, if
 * missing, in the connection's search_path (schema public by default;
 * options='-c search_path=...' in CONNINFO picks another).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "kw_fault.h"
#include "kw_log.h"
#include "kw_time.h"
#include "sink_int.h"

/* pg_advisory_xact_lock keys: 'kwal' in the high half, then what. */
#define PG_LOCK_SCHEMA  INT64_C(0x6b77616c00000001)
#define PG_LOCK_IDS     INT64_C(0x6b77616c00000002)

typedef struct pg__sink {
    PGconn *conn;
    char   *name;        /* "postgresql:host=... dbname=..." without password */
    int     temp_ready;  /* the temporary table exists on this connection */
    char   *copy;        /* COPY data of one batch */
    size_t  copy_len, copy_cap;
} pg__sink_t;

/* Every table of FORMAT.md; records exactly as DESIGN.md gives it, in
 * PostgreSQL's types ("offset" is a reserved word there: quoted). */
static const char *const pg__schema =
    "CREATE TABLE IF NOT EXISTS kwal_meta(key text PRIMARY KEY, value text NOT NULL);"
    "CREATE TABLE IF NOT EXISTS records(topic text NOT NULL, partition integer NOT NULL, "
    "\"offset\" bigint NOT NULL, ts bigint, key bytea, payload bytea, batch bigint, "
    "PRIMARY KEY(topic, partition, \"offset\"));"
    "CREATE TABLE IF NOT EXISTS batches(id bigint PRIMARY KEY, records bigint NOT NULL, "
    "stored bigint NOT NULL, duplicates bigint NOT NULL, first_topic text, "
    "first_partition integer, first_offset bigint, last_topic text, "
    "last_partition integer, last_offset bigint, committed_ms bigint NOT NULL);"
    "CREATE TABLE IF NOT EXISTS direct_ranges(batch bigint NOT NULL, topic text NOT NULL, "
    "partition integer NOT NULL, from_offset bigint NOT NULL, "
    "until_offset bigint NOT NULL, PRIMARY KEY(batch, topic, partition));"
    "CREATE INDEX IF NOT EXISTS direct_ranges_tp "
    "ON direct_ranges(topic, partition, until_offset);";

/* libpq's messages end in a newline; errstr lines do not. */
static const char *pg__msg(const PGconn *c, const PGresult *r, char *buf, size_t cap)
{
    const char *m = r != NULL && PQresultErrorMessage(r)[0] != '\0'
                    ? PQresultErrorMessage(r) : PQerrorMessage(c);
    size_t n;

    snprintf(buf, cap, "%s", m != NULL && m[0] != '\0' ? m : "(no message)");
    n = strlen(buf);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
        buf[--n] = '\0';
    for (char *p = buf; *p != '\0'; p++)
        if (*p == '\n' || *p == '\t')
            *p = ' ';
    return buf;
}

static kw_err_t pg__err(pg__sink_t *g, const PGresult *r, char *errstr, size_t errlen,
                        const char *what)
{
    char m[600];

    return kw_seterr(errstr, errlen, KW_EIO, "sink %s: %s: %s%s", g->name, what,
                     pg__msg(g->conn, r, m, sizeof(m)),
                     PQstatus(g->conn) == CONNECTION_BAD ? " (connection lost)" : "");
}

/* The name: the settings libpq would use, without the password. */
static char *pg__display_name(const char *conninfo)
{
    static const char *const shown[] = {"host", "hostaddr", "port", "dbname", "user"};
    PQconninfoOption *opts = PQconninfoParse(conninfo, NULL);
    char buf[1024];
    size_t used;

    used = (size_t)snprintf(buf, sizeof(buf), "postgresql:");
    if (opts == NULL)
        return strdup("postgresql:(unparsable connection string)");
    for (size_t i = 0; i < sizeof(shown) / sizeof(shown[0]); i++)
        for (PQconninfoOption *o = opts; o->keyword != NULL; o++)
            if (strcmp(o->keyword, shown[i]) == 0 && o->val != NULL && o->val[0] != '\0' &&
                used < sizeof(buf))
                used += (size_t)snprintf(buf + used, sizeof(buf) - used, "%s%s=%s",
                                         used > strlen("postgresql:") ? " " : "",
                                         o->keyword, o->val);
    PQconninfoFree(opts);
    if (used == strlen("postgresql:"))
        snprintf(buf + used, sizeof(buf) - used, "(libpq defaults)");
    return strdup(buf);
}

/* One statement without parameters whose result is status (COMMAND_OK or
 * TUPLES_OK). */
static kw_err_t pg__exec(pg__sink_t *g, const char *sql, const char *what,
                         char *errstr, size_t errlen)
{
    PGresult *r = PQexec(g->conn, sql);
    kw_err_t err = KW_OK;

    if (r == NULL || (PQresultStatus(r) != PGRES_COMMAND_OK &&
                      PQresultStatus(r) != PGRES_TUPLES_OK))
        err = pg__err(g, r, errstr, errlen, what);
    PQclear(r);
    return err;
}

/* A statement with text parameters; the result (caller clears) or NULL
 * with errstr set. */
static PGresult *pg__query(pg__sink_t *g, const char *sql, int n, const char *const *vals,
                           const char *what, char *errstr, size_t errlen)
{
    PGresult *r = PQexecParams(g->conn, sql, n, NULL, vals, NULL, NULL, 0);

    if (r == NULL || (PQresultStatus(r) != PGRES_COMMAND_OK &&
                      PQresultStatus(r) != PGRES_TUPLES_OK)) {
        pg__err(g, r, errstr, errlen, what);
        PQclear(r);
        return NULL;
    }
    return r;
}

/* One bigint from a one-row result of sql (params as pg__query). */
static kw_err_t pg__int(pg__sink_t *g, const char *sql, int n, const char *const *vals,
                        int64_t *v, const char *what, char *errstr, size_t errlen)
{
    PGresult *r = pg__query(g, sql, n, vals, what, errstr, errlen);

    if (r == NULL)
        return KW_EIO;
    if (PQntuples(r) != 1 || PQnfields(r) < 1 || PQgetisnull(r, 0, 0)) {
        PQclear(r);
        return kw_seterr(errstr, errlen, KW_EIO, "sink %s: %s: no value", g->name, what);
    }
    *v = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return KW_OK;
}

/*
 * The schema version rule of FORMAT.md: kwal_meta's schema_version; none
 * (a new database) -> every table and version 1; 1 -> any table it lacks;
 * any other -> refused (KW_ECORRUPT), nothing changed. In one transaction
 * under the schema lock, so instances opening one new database at once do
 * not race on CREATE TABLE.
 */
static kw_err_t pg__schema_init(pg__sink_t *g, char *errstr, size_t errlen)
{
    char lock[96], ver[16];
    const char *vals[1];
    PGresult *r = NULL;
    int64_t version = 0;
    kw_err_t err;

    snprintf(lock, sizeof(lock), "SELECT pg_advisory_xact_lock(%" PRId64 ")",
             PG_LOCK_SCHEMA);
    if ((err = pg__exec(g, "BEGIN", "begin", errstr, errlen)) != KW_OK ||
        (err = pg__exec(g, lock, "schema lock", errstr, errlen)) != KW_OK)
        goto fail;
    r = pg__query(g, "SELECT to_regclass('kwal_meta') IS NOT NULL", 0, NULL,
                  "read the schema version", errstr, errlen);
    if (r == NULL) {
        err = KW_EIO;
        goto fail;
    }
    if (strcmp(PQgetvalue(r, 0, 0), "t") == 0) {
        PQclear(r);
        r = pg__query(g, "SELECT value FROM kwal_meta WHERE key = 'schema_version'", 0,
                      NULL, "read the schema version", errstr, errlen);
        if (r == NULL) {
            err = KW_EIO;
            goto fail;
        }
        if (PQntuples(r) == 1)
            version = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    }
    PQclear(r);
    r = NULL;
    if (version != 0 && version != KW_SINK_PG_SCHEMA_VERSION) {
        err = kw_seterr(errstr, errlen, KW_ECORRUPT, "sink %s: schema version %" PRId64
                        " (kwal_meta), this kwal knows %d: written by a newer kwal "
                        "(sink/FORMAT.md)", g->name, version, KW_SINK_PG_SCHEMA_VERSION);
        goto fail;
    }
    if ((err = pg__exec(g, pg__schema, "create the tables", errstr, errlen)) != KW_OK)
        goto fail;
    snprintf(ver, sizeof(ver), "%d", KW_SINK_PG_SCHEMA_VERSION);
    vals[0] = ver;
    r = pg__query(g, "INSERT INTO kwal_meta(key, value) VALUES('schema_version', $1) "
                  "ON CONFLICT (key) DO NOTHING", 1, vals, "set the schema version",
                  errstr, errlen);
    if (r == NULL) {
        err = KW_EIO;
        goto fail;
    }
    PQclear(r);
    if ((err = pg__exec(g, "COMMIT", "commit the schema", errstr, errlen)) != KW_OK)
        goto fail;
    if (version == 0)
        KW_LOG_I("sink", "sink %s: created the tables (schema version %d)", g->name,
                 KW_SINK_PG_SCHEMA_VERSION);
    return KW_OK;

fail:
    if (PQtransactionStatus(g->conn) != PQTRANS_IDLE &&
        PQstatus(g->conn) == CONNECTION_OK)
        PQclear(PQexec(g->conn, "ROLLBACK"));
    return err;
}

/* The temporary table COPY fills, once per connection (gone with it). */
static kw_err_t pg__temp_table(pg__sink_t *g, char *errstr, size_t errlen)
{
    kw_err_t err;

    if (g->temp_ready)
        return KW_OK;
    err = pg__exec(g, "CREATE TEMPORARY TABLE IF NOT EXISTS kwal_in(topic text, "
                   "partition integer, \"offset\" bigint, ts bigint, key bytea, "
                   "payload bytea, batch bigint) ON COMMIT DELETE ROWS",
                   "create the temporary table", errstr, errlen);
    g->temp_ready = err == KW_OK;
    return err;
}

/* The connection usable again, or KW_EIO: a broken one is reset (a new
 * connection, same settings). Only outside a transaction. */
static kw_err_t pg__ready(pg__sink_t *g, char *errstr, size_t errlen)
{
    char m[600];

    if (PQstatus(g->conn) == CONNECTION_OK)
        return KW_OK;
    g->temp_ready = 0;
    PQreset(g->conn);
    if (PQstatus(g->conn) != CONNECTION_OK)
        return kw_seterr(errstr, errlen, KW_EIO, "sink %s: connection lost; reconnecting: %s",
                         g->name, pg__msg(g->conn, NULL, m, sizeof(m)));
    KW_LOG_I("sink", "sink %s: reconnected", g->name);
    return KW_OK;
}

/* The server's notices and warnings (e.g. "terminating connection due to
 * administrator command") go to the log, not to stderr as libpq would. */
static void pg__notice(void *arg, const char *message)
{
    pg__sink_t *g = arg;
    char m[600];
    size_t n;

    snprintf(m, sizeof(m), "%s", message);
    n = strlen(m);
    while (n > 0 && m[n - 1] == '\n')
        m[--n] = '\0';
    KW_LOG_W("sink", "sink %s: server says: %s", g->name, m);
}

static void pg__close(kw_sink_t *s)
{
    pg__sink_t *g = s->impl;

    if (g == NULL)
        return;
    PQfinish(g->conn);
    free(g->name);
    free(g->copy);
    free(g);
    s->impl = NULL;
}

/* arg: a libpq connection string (key=value ...) or, for a spec written as
 * a URI (postgresql://...), "//..." -- the URI is given back its scheme. */
static kw_err_t pg__open(kw_sink_t *s, const char *arg, char *errstr, size_t errlen)
{
    /* a dead server or network is noticed: keepalives after 10 s idle,
     * and data unacknowledged for 60 s ends the connection */
    static const char *const keys[] = {"connect_timeout", "application_name", "keepalives_idle",
                                       "keepalives_interval", "keepalives_count",
                                       "tcp_user_timeout", "dbname", NULL};
    const char *vals[8] = {"10", "kwal", "10", "5", "3", "60000", NULL, NULL};
    pg__sink_t *g = calloc(1, sizeof(*g));
    char *conninfo = NULL, m[600];
    kw_err_t err;

    if (g == NULL)
        return kw_seterr(errstr, errlen, KW_ENOMEM, "sink postgresql: out of memory");
    s->impl = g;
    if (strncmp(arg, "//", 2) == 0) {
        size_t n = strlen("postgresql:") + strlen(arg) + 1;

        if ((conninfo = malloc(n)) != NULL)
            snprintf(conninfo, n, "postgresql:%s", arg);
    } else {
        conninfo = strdup(arg);
    }
    if (conninfo == NULL) {
        pg__close(s);
        return kw_seterr(errstr, errlen, KW_ENOMEM, "sink postgresql: out of memory");
    }
    {
        char *why = NULL;
        PQconninfoOption *o = PQconninfoParse(conninfo, &why);

        if (o == NULL) {
            if (why != NULL)
                why[strcspn(why, "\n")] = '\0';
            err = kw_seterr(errstr, errlen, why != NULL ? KW_ECONFIG : KW_ENOMEM,
                            "sink postgresql: bad connection string: %s",
                            why != NULL ? why : "out of memory");
            PQfreemem(why);
            free(conninfo);
            pg__close(s);
            return err;
        }
        PQconninfoFree(o);
    }
    if ((g->name = pg__display_name(conninfo)) == NULL) {
        free(conninfo);
        pg__close(s);
        return kw_seterr(errstr, errlen, KW_ENOMEM, "sink postgresql: out of memory");
    }
    /* our defaults first: what the connection string says wins */
    vals[6] = conninfo;
    g->conn = PQconnectdbParams(keys, vals, 1);
    free(conninfo);
    if (g->conn == NULL) {
        pg__close(s);
        return kw_seterr(errstr, errlen, KW_ENOMEM, "sink postgresql: out of memory");
    }
    PQsetNoticeProcessor(g->conn, pg__notice, g);
    if (PQstatus(g->conn) != CONNECTION_OK) {
        err = kw_seterr(errstr, errlen, PQconnectionNeedsPassword(g->conn) ? KW_EAUTH : KW_EIO,
                        "sink %s: cannot connect: %s", g->name,
                        pg__msg(g->conn, NULL, m, sizeof(m)));
        pg__close(s);
        return err;
    }
    if ((err = pg__exec(g, "SET client_min_messages = warning", "settings", errstr,
                        errlen)) != KW_OK ||
        (err = pg__schema_init(g, errstr, errlen)) != KW_OK) {
        pg__close(s);
        return err;
    }
    return KW_OK;
}

static kw_err_t pg__begin(kw_sink_t *s, uint64_t batch_id, char *errstr, size_t errlen)
{
    pg__sink_t *g = s->impl;
    kw_err_t err;

    (void)batch_id;
    if ((err = pg__ready(g, errstr, errlen)) != KW_OK ||
        (err = pg__temp_table(g, errstr, errlen)) != KW_OK)
        return err;
    return pg__exec(g, "BEGIN", "begin", errstr, errlen);
}

static kw_err_t pg__begin_next(kw_sink_t *s, uint64_t min_id, uint64_t *batch_id,
                               char *errstr, size_t errlen)
{
    pg__sink_t *g = s->impl;
    char lock[96];
    int64_t max = 0;
    kw_err_t err;

    snprintf(lock, sizeof(lock), "SELECT pg_advisory_xact_lock(%" PRId64 ")", PG_LOCK_IDS);
    if ((err = pg__begin(s, 0, errstr, errlen)) != KW_OK ||
        (err = pg__exec(g, lock, "batch id lock", errstr, errlen)) != KW_OK ||
        (err = pg__int(g, "SELECT GREATEST((SELECT COALESCE(MAX(id), 0) FROM batches), "
                       "(SELECT COALESCE(MAX(batch), 0) FROM direct_ranges))", 0, NULL,
                       &max, "read the last batch id", errstr, errlen)) != KW_OK)
        return err;
    *batch_id = (uint64_t)max + 1 > min_id ? (uint64_t)max + 1 : min_id;
    return KW_OK;
}

static void pg__abort(kw_sink_t *s, uint64_t batch_id)
{
    pg__sink_t *g = s->impl;

    (void)batch_id;
    if (PQstatus(g->conn) != CONNECTION_OK)
        return;         /* the server ended the transaction with the connection */
    /* a COPY left open by an error is ended first */
    if (PQtransactionStatus(g->conn) == PQTRANS_ACTIVE) {
        PGresult *r;

        (void)PQputCopyEnd(g->conn, "aborted");
        while ((r = PQgetResult(g->conn)) != NULL)
            PQclear(r);
    }
    if (PQtransactionStatus(g->conn) != PQTRANS_IDLE)
        PQclear(PQexec(g->conn, "ROLLBACK"));
}

/* ---- COPY ... (FORMAT binary) ----
 * A signature and two zero words, then per row a field count and per field
 * its length (-1: NULL) and bytes, all in network order; -1 ends it. */

static int pg__reserve(pg__sink_t *g, size_t more)
{
    if (g->copy_len + more <= g->copy_cap)
        return 0;
    size_t cap = g->copy_cap > 0 ? g->copy_cap : 65536;

    while (cap < g->copy_len + more)
        cap *= 2;
    char *p = realloc(g->copy, cap);

    if (p == NULL)
        return -1;
    g->copy = p;
    g->copy_cap = cap;
    return 0;
}

static void pg__put(pg__sink_t *g, const void *p, size_t n)
{
    memcpy(g->copy + g->copy_len, p, n);
    g->copy_len += n;
}

static void pg__put_i16(pg__sink_t *g, int16_t v)
{
    uint16_t be = htons((uint16_t)v);

    pg__put(g, &be, 2);
}

static void pg__put_i32(pg__sink_t *g, int32_t v)
{
    uint32_t be = htonl((uint32_t)v);

    pg__put(g, &be, 4);
}

static void pg__put_i64(pg__sink_t *g, int64_t v)
{
    pg__put_i32(g, (int32_t)((uint64_t)v >> 32));
    pg__put_i32(g, (int32_t)((uint64_t)v & 0xffffffffu));
}

static void pg__put_field(pg__sink_t *g, const void *p, size_t n)
{
    if (p == NULL) {
        pg__put_i32(g, -1);
        return;
    }
    pg__put_i32(g, (int32_t)n);
    if (n > 0)
        pg__put(g, p, n);
}

/* The batch as COPY data in g->copy. KW_ENOMEM, or KW_EINVAL for a field
 * longer than a COPY field can be (1 GiB). */
static kw_err_t pg__encode(pg__sink_t *g, uint64_t batch_id, const kw_record_t *recs,
                           size_t n, char *errstr, size_t errlen)
{
    static const char sig[11] = {'P', 'G', 'C', 'O', 'P', 'Y', '\n', '\377', '\r', '\n',
                                 '\0'};

    g->copy_len = 0;
    if (pg__reserve(g, sizeof(sig) + 8 + 2) != 0)
        return kw_seterr(errstr, errlen, KW_ENOMEM, "sink %s: out of memory", g->name);
    pg__put(g, sig, sizeof(sig));
    pg__put_i32(g, 0);          /* flags */
    pg__put_i32(g, 0);          /* header extension */
    for (size_t i = 0; i < n; i++) {
        const kw_record_t *r = &recs[i];
        size_t tlen = strlen(r->topic);

        if (tlen > (1u << 30) || r->key_len > (1u << 30) || r->value_len > (1u << 30))
            return kw_seterr(errstr, errlen, KW_EINVAL, "sink %s: record %s/%d@%" PRId64
                             ": a field over 1 GiB", g->name, r->topic, (int)r->partition,
                             r->offset);
        if (pg__reserve(g, 2 + 7 * 4 + tlen + 4 + 8 + 8 + r->key_len + r->value_len + 8) != 0)
            return kw_seterr(errstr, errlen, KW_ENOMEM, "sink %s: out of memory", g->name);
        pg__put_i16(g, 7);
        pg__put_field(g, r->topic, tlen);
        pg__put_i32(g, 4);
        pg__put_i32(g, r->partition);
        pg__put_i32(g, 8);
        pg__put_i64(g, r->offset);
        if (r->tstype == KW_TS_NOT_AVAILABLE) {
            pg__put_i32(g, -1);
        } else {
            pg__put_i32(g, 8);
            pg__put_i64(g, r->timestamp);
        }
        /* a NULL key or payload is NULL, an empty one a zero-length bytea */
        pg__put_field(g, r->key, r->key_len);
        pg__put_field(g, r->value, r->value_len);
        pg__put_i32(g, 8);
        pg__put_i64(g, (int64_t)batch_id);
    }
    if (pg__reserve(g, 2) != 0)
        return kw_seterr(errstr, errlen, KW_ENOMEM, "sink %s: out of memory", g->name);
    pg__put_i16(g, -1);
    return KW_OK;
}

static kw_err_t pg__copy(pg__sink_t *g, char *errstr, size_t errlen)
{
    PGresult *r = PQexec(g->conn, "COPY kwal_in FROM STDIN (FORMAT binary)");
    kw_err_t err = KW_OK;

    if (r == NULL || PQresultStatus(r) != PGRES_COPY_IN) {
        err = pg__err(g, r, errstr, errlen, "COPY");
        PQclear(r);
        return err;
    }
    PQclear(r);
    for (size_t off = 0; off < g->copy_len;) {
        size_t chunk = g->copy_len - off < (1u << 20) ? g->copy_len - off : (1u << 20);

        if (PQputCopyData(g->conn, g->copy + off, (int)chunk) != 1)
            return pg__err(g, NULL, errstr, errlen, "COPY data");
        off += chunk;
    }
    if (PQputCopyEnd(g->conn, NULL) != 1)
        return pg__err(g, NULL, errstr, errlen, "COPY end");
    while ((r = PQgetResult(g->conn)) != NULL) {
        if (PQresultStatus(r) != PGRES_COMMAND_OK && err == KW_OK)
            err = pg__err(g, r, errstr, errlen, "COPY");
        PQclear(r);
    }
    return err;
}

static int pg__text_eq(const PGresult *r, int col, const char *s)
{
    return !PQgetisnull(r, 0, col) && s != NULL && strcmp(PQgetvalue(r, 0, col), s) == 0;
}

static int64_t pg__col_i64(const PGresult *r, int col)
{
    return PQgetisnull(r, 0, col) ? INT64_MIN : strtoll(PQgetvalue(r, 0, col), NULL, 10);
}

/* 1 if the batches row in r (one row) has this batch's fingerprint. */
static int pg__same_batch(const PGresult *r, const kw_record_t *recs, size_t n)
{
    if ((uint64_t)pg__col_i64(r, 0) != n)
        return 0;
    if (n == 0)
        return 1;
    return pg__text_eq(r, 1, recs[0].topic) && pg__col_i64(r, 2) == recs[0].partition &&
           pg__col_i64(r, 3) == recs[0].offset && pg__text_eq(r, 4, recs[n - 1].topic) &&
           pg__col_i64(r, 5) == recs[n - 1].partition &&
           pg__col_i64(r, 6) == recs[n - 1].offset;
}

static kw_err_t pg__write(kw_sink_t *s, uint64_t batch_id, const kw_record_t *recs,
                          size_t n, kw_sink_stats_t *st, int *replayed,
                          char *errstr, size_t errlen)
{
    pg__sink_t *g = s->impl;
    char id[24], v[10][24];
    const char *vals[11];
    uint64_t stored;
    PGresult *r;
    kw_err_t err;

    snprintf(id, sizeof(id), "%" PRIu64, batch_id);
    vals[0] = id;
    r = pg__query(g, "SELECT records, first_topic, first_partition, first_offset, "
                  "last_topic, last_partition, last_offset FROM batches WHERE id = $1",
                  1, vals, "read batches", errstr, errlen);
    if (r == NULL)
        return KW_EIO;
    if (PQntuples(r) == 1 && pg__same_batch(r, recs, n)) {
        PQclear(r);
        pg__abort(s, batch_id);
        st->duplicates_delivered = n;
        *replayed = 1;
        return KW_OK;
    }
    if (PQntuples(r) == 1)
        KW_LOG_W("sink", "sink %s: batch %" PRIu64 " is already stored with other records "
                 "(batch id reused?); storing this one record by record", g->name, batch_id);
    PQclear(r);

    stored = 0;
    if (n > 0) {
        if ((err = pg__encode(g, batch_id, recs, n, errstr, errlen)) != KW_OK ||
            (err = pg__copy(g, errstr, errlen)) != KW_OK)
            return err;
        r = pg__query(g, "INSERT INTO records(topic, partition, \"offset\", ts, key, payload, "
                      "batch) SELECT topic, partition, \"offset\", ts, key, payload, batch "
                      "FROM kwal_in ON CONFLICT DO NOTHING", 0, NULL, "insert records",
                      errstr, errlen);
        if (r == NULL)
            return KW_EIO;
        stored = strtoull(PQcmdTuples(r), NULL, 10);
        PQclear(r);
        /* kwal_in empties itself at the end of the transaction */
    }

    snprintf(v[0], sizeof(v[0]), "%zu", n);
    snprintf(v[1], sizeof(v[1]), "%" PRIu64, stored);
    snprintf(v[2], sizeof(v[2]), "%" PRIu64, (uint64_t)n - stored);
    vals[1] = v[0];
    vals[2] = v[1];
    vals[3] = v[2];
    if (n > 0) {
        snprintf(v[3], sizeof(v[3]), "%d", (int)recs[0].partition);
        snprintf(v[4], sizeof(v[4]), "%" PRId64, recs[0].offset);
        snprintf(v[5], sizeof(v[5]), "%d", (int)recs[n - 1].partition);
        snprintf(v[6], sizeof(v[6]), "%" PRId64, recs[n - 1].offset);
        vals[4] = recs[0].topic;
        vals[5] = v[3];
        vals[6] = v[4];
        vals[7] = recs[n - 1].topic;
        vals[8] = v[5];
        vals[9] = v[6];
    } else {
        for (int c = 4; c <= 9; c++)
            vals[c] = NULL;
    }
    snprintf(v[7], sizeof(v[7]), "%" PRId64, kw_wall_ms());
    vals[10] = v[7];
    r = pg__query(g, "INSERT INTO batches(id, records, stored, duplicates, first_topic, "
                  "first_partition, first_offset, last_topic, last_partition, last_offset, "
                  "committed_ms) VALUES($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) "
                  "ON CONFLICT (id) DO UPDATE SET records = EXCLUDED.records, "
                  "stored = EXCLUDED.stored, duplicates = EXCLUDED.duplicates, "
                  "first_topic = EXCLUDED.first_topic, "
                  "first_partition = EXCLUDED.first_partition, "
                  "first_offset = EXCLUDED.first_offset, last_topic = EXCLUDED.last_topic, "
                  "last_partition = EXCLUDED.last_partition, "
                  "last_offset = EXCLUDED.last_offset, committed_ms = EXCLUDED.committed_ms",
                  11, vals, "record the batch", errstr, errlen);
    if (r == NULL)
        return KW_EIO;
    PQclear(r);
    st->stored = stored;
    st->duplicates_delivered = n - stored;
    return KW_OK;
}

static kw_err_t pg__range_end(pg__sink_t *g, const char *topic, int32_t partition,
                              int64_t *end, char *errstr, size_t errlen)
{
    char p[16];
    const char *vals[2] = {topic, p};

    snprintf(p, sizeof(p), "%d", (int)partition);
    return pg__int(g, "SELECT COALESCE(MAX(until_offset), -1) FROM direct_ranges "
                   "WHERE topic = $1 AND partition = $2", 2, vals, end,
                   "read direct_ranges", errstr, errlen);
}

static kw_err_t pg__put_range(kw_sink_t *s, uint64_t batch_id, const char *topic,
                              int32_t partition, int64_t expect_next, int64_t from_offset,
                              int64_t until_offset, char *errstr, size_t errlen)
{
    pg__sink_t *g = s->impl;
    char b[24], p[16], f[24], u[24];
    const char *vals[5] = {b, topic, p, f, u};
    PGresult *r;

    snprintf(b, sizeof(b), "%" PRIu64, batch_id);
    snprintf(p, sizeof(p), "%d", (int)partition);
    snprintf(f, sizeof(f), "%" PRId64, from_offset);
    snprintf(u, sizeof(u), "%" PRId64, until_offset);
    if (expect_next != KW_SINK_RANGE_UNCHECKED) {
        const char *lv[2] = {topic, p};
        int64_t end;
        kw_err_t err;

        /* one writer of the partition's ranges at a time, until commit */
        r = pg__query(g, "SELECT pg_advisory_xact_lock(hashtextextended($1 || '/' || $2, "
                      "1801677164))", 2, lv, "range lock", errstr, errlen);
        if (r == NULL)
            return KW_EIO;
        PQclear(r);
        if ((err = pg__range_end(g, topic, partition, &end, errstr, errlen)) != KW_OK)
            return err;
        if (end != expect_next)
            return kw_seterr(errstr, errlen, KW_EFENCED, "sink %s: batch %" PRIu64 ": %s/%d: "
                             "its stored ranges end at %" PRId64 ", not %" PRId64 ": another "
                             "instance stored a range of it meanwhile", g->name, batch_id,
                             topic, (int)partition, end, expect_next);
    }
    r = pg__query(g, "INSERT INTO direct_ranges(batch, topic, partition, from_offset, "
                  "until_offset) VALUES($1, $2, $3, $4, $5)", 5, vals, "store a range",
                  errstr, errlen);
    if (r == NULL) {
        char m[900];

        snprintf(m, sizeof(m), "%s", errstr);
        return kw_seterr(errstr, errlen, KW_EIO, "batch %" PRIu64 ": range %s/%d [%" PRId64
                         ", %" PRId64 "): %s", batch_id, topic, (int)partition, from_offset,
                         until_offset, m);
    }
    PQclear(r);
    return KW_OK;
}

/* T4: sink.mid-txn after everything of the batch is written, before COMMIT. */
static kw_err_t pg__commit(kw_sink_t *s, uint64_t batch_id, char *errstr, size_t errlen)
{
    pg__sink_t *g = s->impl;
    PGresult *r;
    kw_err_t err = KW_OK;

    (void)batch_id;
    kw_crash(KW_CRASH_SINK_MID_TXN);
    r = PQexec(g->conn, "COMMIT");
    /* a COMMIT of a failed transaction answers ROLLBACK: not committed */
    if (r == NULL || PQresultStatus(r) != PGRES_COMMAND_OK ||
        strcmp(PQcmdStatus(r), "COMMIT") != 0)
        err = pg__err(g, r, errstr, errlen, r != NULL && PQresultStatus(r) ==
                      PGRES_COMMAND_OK ? "commit (rolled back)" : "commit");
    PQclear(r);
    return err;
}

static kw_err_t pg__range_next(kw_sink_t *s, const char *topic, int32_t partition,
                               int64_t *next, char *errstr, size_t errlen)
{
    pg__sink_t *g = s->impl;
    kw_err_t err = pg__ready(g, errstr, errlen);

    return err != KW_OK ? err : pg__range_end(g, topic, partition, next, errstr, errlen);
}

static kw_err_t pg__ranges_last_batch(kw_sink_t *s, uint64_t *batch, char *errstr,
                                      size_t errlen)
{
    pg__sink_t *g = s->impl;
    int64_t v = 0;
    kw_err_t err = pg__ready(g, errstr, errlen);

    if (err == KW_OK)
        err = pg__int(g, "SELECT COALESCE(MAX(batch), 0) FROM direct_ranges", 0, NULL, &v,
                      "read direct_ranges", errstr, errlen);
    *batch = v > 0 ? (uint64_t)v : 0;
    return err;
}

const kw__sink_ops_t kw__sink_pg_ops = {
    .kind = KW_SINK_POSTGRESQL,
    .name = "postgresql",
    .arg_what = "connection string",
    .arg_meta = "CONNINFO",
    .open = pg__open,
    .close = pg__close,
    .begin = pg__begin,
    .begin_next = pg__begin_next,
    .write = pg__write,
    .commit = pg__commit,
    .abort = pg__abort,
    .put_range = pg__put_range,
    .range_next = pg__range_next,
    .ranges_last_batch = pg__ranges_last_batch,
};
