/*
 * sink.h -- where kwal delivers its batches (DESIGN.md "Outputs (sinks)").
 *
 * A sink is opened from a `sink=` spec string:
 *
 *   sqlite:PATH  SQLite database (the default); its tables, their rows, the
 *                schema version and the replay rule are in sink/FORMAT.md.
 *                The records table is exactly DESIGN.md's
 *                  records(topic TEXT, partition INTEGER, offset INTEGER,
 *                          ts INTEGER, key BLOB, payload BLOB, batch INTEGER,
 *                          PRIMARY KEY(topic, partition, offset))
 *                plus `batches` (one row per batch: counts and fingerprint)
 *                and `direct_ranges` (the offset ranges of put_range).
 *                One transaction per batch (journal_mode=WAL,
 *                synchronous=FULL). Records go in with INSERT OR IGNORE: a
 *                record already stored is not stored again and is counted as
 *                a duplicate delivery (invariant 3). A batch id already in
 *                `batches` with the same fingerprint (record count, first and
 *                last record's topic/partition/offset) is a replay: nothing
 *                is written and every record counts as a duplicate delivery.
 *                An id already there with another fingerprint (ids reused,
 *                e.g. after the tracker was rebuilt) is logged and stored
 *                record by record -- never skipped, so nothing is lost.
 *                ts is NULL when the record has no timestamp; a null key or
 *                payload is SQL NULL, an empty one a zero-length BLOB.
 *                Headers are not stored (the schema has no column for them).
 *                The only kind that stores offset ranges (put_range).
 *   file:DIR     One file per batch, DIR/batch-NNNNNNNNNN.jsonl (the batch id,
 *                zero-padded to at least 10 digits so names sort in batch
 *                order), JSON lines as below. Written as batch-<id>.jsonl.tmp,
 *                fsynced, renamed, then DIR fsynced: a final name always has
 *                a complete batch. DIR is created (mode 0755) if missing. An
 *                existing final file for the batch id with as many lines as
 *                the batch has records is a replay: skipped, every record
 *                counted as a duplicate delivery; with another line count the
 *                write fails with KW_ECORRUPT (ids reused: refusing is the
 *                only way not to lose either batch).
 *   postgresql:CONNINFO
 *                The sqlite sink's tables, rules and replay rule on a
 *                PostgreSQL server (libpq; sink/FORMAT.md has the types):
 *                CONNINFO is a libpq connection string, key=value words
 *                ("host=db1 port=5432 dbname=kwal user=kwal") or a URI
 *                (sink=postgresql://kwal@db1/kwal). The tables are created if
 *                missing, with a schema version in kwal_meta. Records go in
 *                with COPY and INSERT ... ON CONFLICT DO NOTHING: duplicates
 *                counted as with sqlite. Several instances (and processes)
 *                may share one database: batch ids of begin_next and the
 *                range fence are taken under advisory locks. A lost
 *                connection fails the call (KW_EIO: the batch is delivered
 *                again) and is re-established at the next begin.
 *                Headers are not stored. Errors name the server, never the
 *                password.
 *   kafka:TOPIC  Each batch one Kafka transaction (librdkafka's transactional
 *                producer) into the existing topic TOPIC, on the source's
 *                cluster or the one sink.kafka.bootstrap.servers names
 *                (sink.kafka.* keys: librdkafka producer properties). A
 *                record keeps its key, value, timestamp and headers, and gets
 *                three more headers: kwal.topic, kwal.partition and
 *                kwal.offset (its source coordinates); it goes to the
 *                output partition source partition % TOPIC's partitions.
 *                The batch's source offsets commit in the same transaction
 *                (send_offsets_to_transaction): direct mode's ranges to
 *                group.id, read back by kw_sink_range_next; receive mode's
 *                to the writer group <group.id>.kwal-sink.<instance>, and a
 *                record below what that group holds is a duplicate delivery,
 *                counted and not written. Needs kw_sink_open_opts (group and
 *                instance). sink/FORMAT.md has the rules and what a reader
 *                needs (isolation.level=read_committed).
 *   jsonl        JSON lines on stdout (fd 1), each batch written with write(2)
 *                before write_batch returns. Cannot recognise duplicates.
 *   null         Counts and discards (benchmarks).
 *
 * JSON lines follow kcat -J (kcat 1.7 json.c, fmt_msg_output_json), field
 * for field and in kcat's order, so kcat pipelines read them unchanged:
 *
 *   {"topic":"t","partition":0,"offset":42,"tstype":"create","ts":1700000000000,
 *    "broker":-1,"headers":["name","value","name2",null],"key":"k","payload":"v"}
 *
 *   - "tstype" is "create" or "logappend" (any other type: "unknown"); like
 *     kcat, "tstype" and "ts" are left out when the record has no timestamp.
 *   - "broker" is always -1: kcat writes -1 when it does not know the broker,
 *     and kwal does not keep the broker id.
 *   - "headers" only when the record has headers: kcat's default form, one
 *     flat array of name, value, name, value..., a null header value as null.
 *   - "key"/"payload": a JSON string, or null for a null key/value.
 *
 * Strings are escaped as yajl (kcat's generator) does, plus one rule for
 * bytes that are not UTF-8: `"` and `\` as \" and \\; \b \f \n \r \t; other
 * bytes below 0x20 as \u00xx (lowercase hex, as yajl); valid UTF-8
 * sequences (no overlongs, no surrogates, at most U+10FFFF) are copied as
 * they are, DEL (0x7F) included; every byte that is
 * not part of a valid UTF-8 sequence is written as \u00xx (its value, i.e.
 * read as Latin-1). kcat instead copies such bytes raw, which makes invalid
 * JSON. So output is always valid JSON and valid UTF-8; text payloads come
 * back exactly, but binary ones do not round-trip unambiguously (a parser
 * sees byte 0xE9 as U+00E9). The sqlite sink keeps bytes exactly.
 *
 * Threads. A sink handle belongs to one thread at a time (the batcher,
 * recovery before it starts, or direct mode's thread); no function is
 * thread-safe on the same handle, and a transaction is begun and ended on
 * the handle's thread.
 * Library rules: nothing here prints except the jsonl sink's records on
 * stdout; errors come back as kw_err_t with an errstr that names the path.
 */
#ifndef KW_SINK_H
#define KW_SINK_H

#include <stddef.h>
#include <stdint.h>

#include "blockgen.h"
#include "kw_conf.h"
#include "kw_err.h"
#include "kw_hist.h"

typedef struct kw_sink kw_sink_t;

typedef enum {
    KW_SINK_SQLITE = 0,
    KW_SINK_FILE   = 1,
    KW_SINK_JSONL  = 2,
    KW_SINK_NULL   = 3,
    KW_SINK_POSTGRESQL = 4,
    KW_SINK_KAFKA  = 5
} kw_sink_kind_t;

/* The sqlite sink's schema version (PRAGMA user_version; sink/FORMAT.md). */
#define KW_SINK_SQLITE_SCHEMA_VERSION 1
/* The postgresql sink's (kwal_meta's schema_version; sink/FORMAT.md). */
#define KW_SINK_PG_SCHEMA_VERSION 1

/* What one batch did (kw_sink_write_batch, kw_sink_txn_commit). */
typedef struct kw_sink_stats {
    uint64_t delivered;             /* records handed in (n) */
    uint64_t stored;                /* records the output holds now and did not
                                     * before (null: 0) */
    uint64_t duplicates_delivered;  /* records recognised as already stored
                                     * (sqlite, postgresql, file; invariant 3: counted,
                                     * never hidden) */
} kw_sink_stats_t;

/* Totals since open. */
typedef struct kw_sink_totals {
    uint64_t batches;               /* batches committed (write_batch or
                                     * txn_commit) */
    uint64_t batches_replayed;      /* of those, recognised whole as replays */
    uint64_t delivered;
    uint64_t stored;
    uint64_t duplicates_delivered;
    uint64_t failures;              /* batches that failed (write_batch, or a
                                     * transaction ended by an error, T2) */
} kw_sink_totals_t;

/*
 * Open a sink from its spec (above). KW_ECONFIG (errstr quotes the spec) for
 * an unknown kind or a missing PATH/DIR; KW_EIO for a database or directory
 * that cannot be opened or created. sqlite creates its tables in a new
 * database and checks the schema version (sink/FORMAT.md): a database
 * without one (user_version 0, written before versions existed) is
 * upgraded in place; a version this kwal does not know is refused with
 * KW_ECORRUPT naming the file and both versions. On success *sink is the
 * caller's.
 */
kw_err_t kw_sink_open(const char *spec, kw_sink_t **sink, char *errstr, size_t errlen);

/* What a sink may need beyond its spec: the kafka sink's group, instance
 * and cluster settings (the others ignore it). Pointers are only read,
 * during kw_sink_open_opts. */
typedef struct kw_sink_options {
    const char           *group;        /* group.id */
    const char           *instance;     /* this instance's name, the same on
                                         * every restart of its state (kwal's
                                         * instance name) */
    int                   direct;       /* 1: kwal direct (ranges in group) */
    const kw_conf_pair_t *kafka;        /* the source's kafka.* keys */
    size_t                nkafka;
    const kw_conf_pair_t *sink_kafka;   /* sink.kafka.* keys */
    size_t                nsink_kafka;
} kw_sink_options_t;

/* o from a loaded configuration (kept pointers: conf must outlive o). */
void kw_sink_options_from_conf(kw_sink_options_t *o, const kw_conf_t *conf,
                               const char *instance, int direct);

/* kw_sink_open with options (NULL: none; the kafka sink then refuses with
 * KW_ECONFIG). The kafka sink's open reaches the cluster: KW_EIO when it
 * cannot (init_transactions, the output topic's metadata), KW_ECONFIG for
 * a property librdkafka refuses. */
kw_err_t kw_sink_open_opts(const char *spec, const kw_sink_options_t *opts, kw_sink_t **sink,
                           char *errstr, size_t errlen);

/* Close (the sqlite database, the directory); an open transaction is
 * aborted first. NULL is a no-op. */
void kw_sink_close(kw_sink_t *sink);

kw_sink_kind_t kw_sink_kind(const kw_sink_t *sink);
/* "sqlite", "file", "jsonl", "null", "postgresql" or "kafka". */
const char *kw_sink_kind_name(const kw_sink_t *sink);

/*
 * Deliver batch batch_id (> 0, from the tracker) of n records (n may be 0:
 * an empty batch is recorded as such by sqlite and file). Returns once the
 * batch is durable in the output (sqlite: committed; file: renamed and the
 * directory fsynced; jsonl: written to stdout) -- only then may the caller
 * mark the batch processed. On error nothing of the batch is acknowledged;
 * the caller delivers it again (under the same id) later. recs and every
 * pointer in them (including headers) are only read, during the call.
 * stats may be NULL. The same as kw_sink_txn_begin + kw_sink_txn_write +
 * kw_sink_txn_commit (below); KW_EINVAL while a transaction is open.
 */
kw_err_t kw_sink_write_batch(kw_sink_t *sink, uint64_t batch_id,
                             const kw_record_t *recs, size_t n,
                             kw_sink_stats_t *stats, char *errstr, size_t errlen);

/* ---- Transactions ----
 *
 * One batch as a transaction, for a caller that stores more than the records
 * with it -- direct mode stores the offset ranges it read, so that output
 * and progress commit together (DESIGN.md "Outputs"):
 *
 *   kw_sink_txn_begin(sink, batch_id)
 *   kw_sink_txn_write(sink, recs, n)                  exactly once
 *   kw_sink_txn_put_range(sink, topic, partition, expect, from, until)  0..many
 *   kw_sink_txn_commit(sink, &stats)   or   kw_sink_txn_abort(sink)
 *
 * Every kind runs begin / write / commit / abort (what each one does is
 * below); only sqlite, postgresql and kafka store ranges (kw_sink_ranges_supported). At most one
 * transaction is open per handle. Rules for all of them:
 *
 *   T1. Nothing of the batch is visible in the output, or acknowledged,
 *       before commit returns KW_OK; after that the whole batch (records,
 *       its `batches` row, its ranges) is durable.
 *   T2. Any error from a txn function ends the open transaction: it is
 *       rolled back as abort would, counted as a failure in the totals, and
 *       abort is then a no-op. The caller delivers the batch again later.
 *   T3. A replay (write finds the batch already stored, same id and
 *       fingerprint -- sqlite and file) writes nothing: put_range is a
 *       no-op (the ranges committed with the batch the first time), commit
 *       writes nothing and reports every record as a duplicate delivery.
 *   T4. The sqlite crash point sink.mid-txn fires in commit, after the
 *       records, the `batches` row and the ranges are written and before
 *       COMMIT (file: in write, after the data and before its fsync).
 *
 * Calls out of this order (write before begin, put_range before write,
 * two writes, begin while one is open) fail with KW_EINVAL (and T2).
 */

/*
 * Open the transaction of batch batch_id (1..INT64_MAX). sqlite: BEGIN
 * IMMEDIATE (waits up to 10 s for another writer of the database, then
 * KW_EIO); postgresql: BEGIN (after reconnecting a lost connection); the
 * other kinds only note the id. KW_EINVAL for a bad id.
 */
kw_err_t kw_sink_txn_begin(kw_sink_t *sink, uint64_t batch_id,
                           char *errstr, size_t errlen);

/*
 * As kw_sink_txn_begin, for instances sharing one database: the batch id is
 * taken inside the transaction, under the database's write lock, so two
 * writers never use the same id -- the next after every id stored (the
 * `batches` rows and the ranges), and at least min_id. *batch_id gets it.
 * Only kinds that store ranges (sqlite, postgresql, kafka: its ids need not
 * differ across instances, it takes the next after its own); KW_EINVAL for the others and for a
 * min_id outside 1..INT64_MAX.
 */
kw_err_t kw_sink_txn_begin_next(kw_sink_t *sink, uint64_t min_id, uint64_t *batch_id,
                                char *errstr, size_t errlen);

/*
 * Write the batch's n records (n may be 0; recs may be NULL then). recs and
 * every pointer in them are only read, during the call. Recognises a replay
 * (T3). sqlite: the records (INSERT OR IGNORE) and the batch's `batches`
 * row; file: the lines to batch-<id>.jsonl.tmp, fsynced; jsonl: the lines
 * encoded in memory; null: nothing. KW_EIO (sqlite, postgresql, file), KW_ENOMEM,
 * KW_ECORRUPT (file: the batch's final file exists with another line count).
 */
kw_err_t kw_sink_txn_write(kw_sink_t *sink, const kw_record_t *recs, size_t n,
                           char *errstr, size_t errlen);

/*
 * Store the offset range [from_offset, until_offset) of topic/partition as
 * read for this batch, in the same transaction (after write). One range per
 * topic/partition per batch. topic is only read, during the call.
 *
 * Fencing: expect_next is where the caller believes the partition's stored
 * ranges end (what kw_sink_range_next said when it took the partition, then
 * the until of each range it committed; -1: none stored yet). When the
 * database holds another end -- another instance sharing it stored a range
 * of the partition meanwhile, e.g. after this one lost the partition without
 * knowing yet -- nothing of the batch is stored: KW_EFENCED, errstr naming the
 * partition and both ends, the transaction rolled back (T2); the caller
 * reads the partition's position again before it reads it again. The check
 * and the insert are in the transaction that holds the database's write lock
 * (sqlite: BEGIN IMMEDIATE; postgresql: an advisory lock of the partition), so two instances can never both store a range
 * after the same end (kafka: the group's committed offsets are read again
 * in commit, which then fails with KW_EFENCED; what makes it atomic there is
 * a transactional.id per source partition, whose producer range_next makes
 * anew: another owner's later commit is refused by the coordinator, also
 * KW_EFENCED -- sink_kafka.c says how; there, partitions committed before
 * the failing one stay committed, each with its range). KW_SINK_RANGE_UNCHECKED skips the check (a caller that
 * is the only writer of the partition by other means).
 *
 * KW_EINVAL when the sink does not store ranges (not sqlite or postgresql), for an empty
 * or negative range, a NULL topic or a negative partition; KW_EIO when it
 * cannot be stored -- also when this batch id already has a range for the
 * partition (e.g. another instance sharing the database committed this id
 * first): the transaction is rolled back (T2) and the caller tries again
 * with a new id. A no-op on a replay (T3).
 */
#define KW_SINK_RANGE_UNCHECKED (-2)

kw_err_t kw_sink_txn_put_range(kw_sink_t *sink, const char *topic, int32_t partition,
                               int64_t expect_next, int64_t from_offset,
                               int64_t until_offset, char *errstr, size_t errlen);

/*
 * Make the batch durable and end the transaction (T1). sqlite: COMMIT
 * (synchronous=FULL); file: rename the .tmp to its final name and fsync the
 * directory; jsonl: write(2) the lines to stdout; null: nothing. Then the
 * caller may mark the batch processed. stats (may be NULL) gets what the
 * batch did, valid only on KW_OK. On error the batch is not acknowledged
 * (T2; file: a failed directory fsync leaves the final file, which the
 * retry finds as a replay).
 */
kw_err_t kw_sink_txn_commit(kw_sink_t *sink, kw_sink_stats_t *stats,
                            char *errstr, size_t errlen);

/*
 * Roll the open transaction back: nothing of it stays (sqlite: ROLLBACK;
 * file: the .tmp removed; jsonl: the lines dropped). A no-op when no
 * transaction is open. Not counted as a failure.
 */
void kw_sink_txn_abort(kw_sink_t *sink);

/* ---- Offset ranges (read back at start) ---- */

/* 1 if the sink stores offset ranges (sqlite, postgresql, kafka), else 0. */
int kw_sink_ranges_supported(const kw_sink_t *sink);

/*
 * The next offset stored for topic/partition -- the highest until_offset
 * of its committed ranges -- in *next, or -1 when it has none. KW_EINVAL
 * when the sink does not store ranges or a transaction is open (it would
 * see uncommitted rows); KW_EIO when the database cannot be read.
 */
kw_err_t kw_sink_range_next(kw_sink_t *sink, const char *topic, int32_t partition,
                            int64_t *next, char *errstr, size_t errlen);

/*
 * The highest batch id that has committed ranges in *batch, 0 when none
 * (instances sharing one database number their batches after it). Errors
 * as kw_sink_range_next.
 */
kw_err_t kw_sink_ranges_last_batch(kw_sink_t *sink, uint64_t *batch,
                                   char *errstr, size_t errlen);

void kw_sink_get_totals(const kw_sink_t *sink, kw_sink_totals_t *totals);

/* ---- End-to-end latency (kw_stats.h, "latency_*") ----
 *
 * The latency of a stored record is the wall clock when the sink
 * acknowledged its batch (kw_sink_write_batch or kw_sink_txn_commit returned
 * KW_OK) minus the record's Kafka timestamp, whatever its type (create or
 * log-append time), in ms. A record without a timestamp (timestamp < 0) has
 * none; a negative difference (producer and kwal clocks apart) counts as 0.
 * Every record of an acknowledged batch counts, duplicate deliveries
 * included: the sink holds each of them then.
 */

/*
 * Add the latency of recs[0..n-1], acknowledged at now_ms (kw_wall_ms()
 * right after the acknowledgement), to h: one kw_hist_local_add per record
 * with a timestamp. h is the caller's (one batch's), merged into a shared
 * kw_hist_t afterwards. Returns how many were added. Any thread; recs only
 * read.
 */
uint64_t kw_sink_latency_add(kw_hist_local_t *h, const kw_record_t *recs, size_t n,
                             int64_t now_ms);

/* ---- JSON lines (used by file and jsonl; public for tools and tests) ---- */

/* A growable byte buffer. Zero-initialise; free data when done. */
typedef struct kw_sink_buf {
    char  *data;
    size_t len;
    size_t cap;
} kw_sink_buf_t;

/* Append rec as one JSON line (with its '\n') in the format above.
 * KW_ENOMEM leaves buf as it was. */
kw_err_t kw_sink_json_append(kw_sink_buf_t *buf, const kw_record_t *rec);

#endif /* KW_SINK_H */
