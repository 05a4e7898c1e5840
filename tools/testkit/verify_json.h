/*
 * verify_json.h -- a small, strict parser for one JSON line in kcat's -J
 * envelope (DESIGN.md, "Outputs"), used by kwal-verify.
 *
 * The line must be exactly one JSON object (surrounding whitespace
 * allowed). Fields used: "topic" (string), "partition", "offset" (integer
 * numbers), "key", "payload" (string or null), "ts" (integer), "tstype"
 * (string). Any other field ("broker", "headers", ...) must be valid JSON
 * and is skipped. topic, partition, offset and payload are required; a
 * missing key counts as null. A field given twice is an error.
 *
 * Strict JSON: strings with the escapes \" \\ \/ \b \f \n \r \t \uXXXX
 * (surrogate pairs combined, lone surrogates rejected, decoded to UTF-8),
 * no raw control characters; numbers in JSON's grammar; true, false, null;
 * nesting at most 32 deep. Bytes >= 0x80 inside strings are passed through
 * unchecked (a sink may write binary keys or payloads raw). Note: \u0080 ..
 * \u00ff decode to their two-byte UTF-8 form, as JSON defines; kwal's sink
 * (sink/sink_jsonl.c) escapes bytes that are not valid UTF-8 that way,
 * so binary data would not round-trip. The workload is ASCII, so this
 * never matters to kwal-verify.
 */
#ifndef KW_VERIFY_JSON_H
#define KW_VERIFY_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A decoded string; buffers are reused from line to line. */
typedef struct {
    char *p;
    size_t len;
    size_t cap;
    bool present;
    bool null;
} kw_jstr_t;

typedef struct {
    kw_jstr_t topic, key, payload, tstype;
    int64_t partition, offset, ts;
    bool has_partition, has_offset, has_ts;
} kw_envelope_t;

/* Parse line[0..len) into env (whose buffers it grows; zero-initialise env
 * once, free with kw_envelope_free). Returns true, or false with a reason
 * in err (including the byte position). */
bool kw_envelope_parse(const char *line, size_t len, kw_envelope_t *env,
                       char *err, size_t err_size);

void kw_envelope_free(kw_envelope_t *env);

#endif /* KW_VERIFY_JSON_H */
