/*
 * sink.h -- where kwal delivers its batches (DESIGN.md "Outputs (sinks)").
 *
 * A sink is opened from a `sink=` spec string:
 *
 *   sqlite:PATH  SQLite database (the default). Table
 *                  records(topic TEXT, partition INTEGER, offset INTEGER,
 *                          ts INTEGER, key BLOB, payload BLOB, batch INTEGER,
 *                          PRIMARY KEY(topic, partition, offset))
 *                exactly as DESIGN.md gives it, plus a table
 *                  batches(id INTEGER PRIMARY KEY, records, stored, duplicates,
 *                          first_topic, first_partition, first_offset,
 *                          last_topic, last_partition, last_offset, committed_ms)
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
 * Threads. A sink handle belongs to one thread at a time (the batcher, or
 * recovery before it starts); no function is thread-safe on the same handle.
 * Library rules: nothing here prints except the jsonl sink's records on
 * stdout; errors come back as kw_err_t with an errstr that names the path.
 */
#ifndef KW_SINK_H
#define KW_SINK_H

#include <stddef.h>
#include <stdint.h>

#include "blockgen.h"
#include "kw_err.h"

struct sqlite3;

typedef struct kw_sink kw_sink_t;

typedef enum {
    KW_SINK_SQLITE = 0,
    KW_SINK_FILE   = 1,
    KW_SINK_JSONL  = 2,
    KW_SINK_NULL   = 3
} kw_sink_kind_t;

/* What one write_batch call did. */
typedef struct kw_sink_stats {
    uint64_t delivered;             /* records handed in (n) */
    uint64_t stored;                /* records the output holds now and did not
                                     * before (null: 0) */
    uint64_t duplicates_delivered;  /* records recognised as already stored
                                     * (sqlite, file; invariant 3: counted,
                                     * never hidden) */
} kw_sink_stats_t;

/* Totals since open. */
typedef struct kw_sink_totals {
    uint64_t batches;               /* write_batch calls that succeeded */
    uint64_t batches_replayed;      /* of those, recognised whole as replays */
    uint64_t delivered;
    uint64_t stored;
    uint64_t duplicates_delivered;
    uint64_t failures;              /* write_batch calls that failed */
} kw_sink_totals_t;

/*
 * Open a sink from its spec (above). KW_ECONFIG (errstr quotes the spec) for
 * an unknown kind or a missing PATH/DIR; KW_EIO for a database or directory
 * that cannot be opened or created. On success *sink is the caller's.
 */
kw_err_t kw_sink_open(const char *spec, kw_sink_t **sink, char *errstr, size_t errlen);

/* Close (the sqlite database, the directory). NULL is a no-op. */
void kw_sink_close(kw_sink_t *sink);

kw_sink_kind_t kw_sink_kind(const kw_sink_t *sink);
/* "sqlite", "file", "jsonl" or "null". */
const char *kw_sink_kind_name(const kw_sink_t *sink);

/*
 * Deliver batch batch_id (> 0, from the tracker) of n records (n may be 0:
 * an empty batch is recorded as such by sqlite and file). Returns once the
 * batch is durable in the output (sqlite: committed; file: renamed and the
 * directory fsynced; jsonl: written to stdout) -- only then may the caller
 * mark the batch processed. On error nothing of the batch is acknowledged;
 * the caller delivers it again (under the same id) later. recs and every
 * pointer in them (including headers) are only read, during the call.
 * stats may be NULL.
 */
kw_err_t kw_sink_write_batch(kw_sink_t *sink, uint64_t batch_id,
                             const kw_record_t *recs, size_t n,
                             kw_sink_stats_t *stats, char *errstr, size_t errlen);

/*
 * Direct mode's hook: called by the sqlite sink inside the batch's
 * transaction, after the records and before COMMIT, with the sink's
 * connection, so direct mode stores its offset ranges atomically with the
 * output (DESIGN.md "Outputs"). Return KW_OK to commit; anything else rolls
 * the whole batch back and write_batch returns that error (the hook fills
 * errstr). Not called for a batch recognised as a replay (its ranges were
 * committed with it). The hook must not BEGIN/COMMIT itself.
 */
typedef kw_err_t (*kw_sink_txn_hook_t)(struct sqlite3 *db, uint64_t batch_id,
                                       void *opaque, char *errstr, size_t errlen);

/* kw_sink_write_batch with a hook; KW_EINVAL unless the sink is sqlite. */
kw_err_t kw_sink_write_batch_tx(kw_sink_t *sink, uint64_t batch_id,
                                const kw_record_t *recs, size_t n,
                                kw_sink_txn_hook_t hook, void *opaque,
                                kw_sink_stats_t *stats, char *errstr, size_t errlen);

/* The sqlite sink's connection (direct mode creates and reads its range
 * table through it, on the sink's thread, outside write_batch); NULL for
 * other kinds. Owned by the sink. */
struct sqlite3 *kw_sink_sqlite_db(kw_sink_t *sink);

void kw_sink_get_totals(const kw_sink_t *sink, kw_sink_totals_t *totals);

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
