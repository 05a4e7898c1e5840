/*
 * workload.h -- the load generator's record format and manifest, shared by
 * kwal-loadgen (which writes them) and kwal-verify (which checks them).
 *
 * RECORD PAYLOAD (exactly `size` bytes, printable ASCII, no newline, no ':'
 * and no '"' or '\\', so it travels unchanged through `kcat -P -K:` lines,
 * JSON strings and SQLite BLOBs):
 *
 *   offset  length    field
 *   0       5         magic "kwal1" (format version 1)
 *   5       1         ' '
 *   6       16        run id: 64 bits, 16 lower-case hex digits
 *   22      1         ' '
 *   23      12        sequence number: 12 decimal digits, zero-padded
 *   35      1         ' '
 *   36      16        producer timestamp: microseconds since the Unix epoch
 *                     (CLOCK_REALTIME), 16 decimal digits, zero-padded
 *   52      size-69   padding: byte i (i = 0..size-70) is 'a' + (seq+i) % 26
 *   size-17 1         ' '
 *   size-16 16        checksum: XXH3_64bits of bytes [0, size-17), that is
 *                     everything before this separator, 16 lower-case hex
 *
 * so the smallest record is KW_WL_MIN_SIZE = 69 bytes. A payload is valid
 * when its length is in [KW_WL_MIN_SIZE, KW_WL_MAX_SIZE], the magic, the
 * separators and every digit are where the table puts them, and the
 * checksum matches. Padding bytes are not checked one by one: the checksum
 * covers them.
 *
 * RECORD KEY: the sequence number in decimal without leading zeros ("0",
 * "1", ..., "19999"). Keyed records spread evenly over the partitions
 * (librdkafka's and kcat's default partitioner hashes the key); the
 * verifier requires the key to match the payload's sequence number.
 *
 * RECORD TIMESTAMP (kwal-loadgen, when it produces to Kafka): the record's
 * Kafka timestamp is set explicitly to the payload's producer time in
 * milliseconds, ts_us / 1000 (CreateTime; a topic with
 * message.timestamp.type=LogAppendTime overrides it), so that a copy of the
 * record can be checked against its payload. --print-kcat leaves it to kcat.
 *
 * RECORD HEADERS (kwal-loadgen --headers): one header, KW_WL_SEQ_HEADER
 * "wl.seq", whose value is the sequence number in decimal, like the key.
 * Without --headers a record has none.
 *
 * MANIFEST (kwal-loadgen --manifest FILE): `key=value` lines, '#' comments,
 * unknown keys ignored, written atomically (temporary file, fsync, rename):
 *
 *   run_id=<16 hex>   first=<seq of the first record>   records=<N>
 *   size=<payload bytes>   topic=<name>   delivered=<N>   failed=<N>
 *   timestamps=<0|1>   headers=<0|1>
 *
 * The workload is the sequence numbers first .. first+records-1 of run_id.
 * `delivered` counts successful delivery reports; `failed` counts the
 * records not delivered (failed reports, and records never produced because
 * the run was interrupted); both are -1 when not known (--print-kcat).
 * `timestamps=1`: every record's timestamp is its payload's ts_us / 1000
 * ("RECORD TIMESTAMP"); `headers=1`: every record carries the wl.seq header
 * ("RECORD HEADERS"). A manifest without these lines (written before they
 * existed) reads as 0 for both.
 *
 * Nothing here prints or exits; errors come back in errstr.
 */
#ifndef KW_WORKLOAD_H
#define KW_WORKLOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KW_WL_MAGIC      "kwal1"
#define KW_WL_MIN_SIZE   69
#define KW_WL_MAX_SIZE   (1024 * 1024)
#define KW_WL_MAX_SEQ    999999999999ULL   /* 12 decimal digits */
#define KW_WL_KEY_MAX    24                /* key buffer size, with the NUL */
#define KW_WL_TOPIC_MAX  256
#define KW_WL_SEQ_HEADER "wl.seq"          /* RECORD HEADERS */

typedef enum {
    KW_WL_OK = 0,
    KW_WL_BAD_SIZE,       /* shorter than 69 or longer than KW_WL_MAX_SIZE */
    KW_WL_BAD_MAGIC,      /* not "kwal1 " */
    KW_WL_BAD_FIELD,      /* a separator or digit out of place */
    KW_WL_BAD_CHECKSUM    /* fields parse, checksum does not match */
} kw_wl_status_t;

/* What kw_wl_decode() read. run, seq and ts_us are set when header_ok,
 * which is also true for KW_WL_BAD_CHECKSUM (then they are only claims). */
typedef struct {
    bool header_ok;
    uint64_t run;
    uint64_t seq;
    uint64_t ts_us;
} kw_wl_rec_t;

/* Write the payload of record (run, seq, ts_us) into buf[0..size). size
 * must be in [KW_WL_MIN_SIZE, KW_WL_MAX_SIZE] and seq <= KW_WL_MAX_SEQ. */
void kw_wl_encode(char *buf, size_t size, uint64_t run, uint64_t seq, uint64_t ts_us);

/* Check and parse a payload of len bytes. */
kw_wl_status_t kw_wl_decode(const void *buf, size_t len, kw_wl_rec_t *out);

const char *kw_wl_status_str(kw_wl_status_t st);

/* The key of record seq, NUL-terminated; returns its length. */
size_t kw_wl_key(char buf[KW_WL_KEY_MAX], uint64_t seq);

/* Parse exactly 16 lower-case hex digits (a run id). */
bool kw_wl_run_parse(const char *s, uint64_t *out);

typedef struct {
    uint64_t run;
    uint64_t first;
    uint64_t records;
    uint64_t size;
    char topic[KW_WL_TOPIC_MAX];
    int64_t delivered;   /* -1: not known */
    int64_t failed;      /* -1: not known */
    bool timestamps;     /* record timestamp = ts_us / 1000 */
    bool headers;        /* records carry the wl.seq header */
} kw_wl_manifest_t;

/* Write m to path atomically. Returns 0, or -1 with errstr filled. */
int kw_wl_manifest_write(const char *path, const kw_wl_manifest_t *m,
                         char *errstr, size_t errstr_size);

/* Read path into m. run_id and records are required. Returns 0, or -1 with
 * errstr filled (naming the file and line). */
int kw_wl_manifest_read(const char *path, kw_wl_manifest_t *m,
                        char *errstr, size_t errstr_size);

#endif /* KW_WORKLOAD_H */
