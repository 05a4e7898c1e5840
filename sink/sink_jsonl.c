/*
 * sink_jsonl.c -- JSON lines in kcat -J's envelope (the format is in sink.h),
 * and the `jsonl` sink that writes them to stdout.
 *
 * The encoder. kw_sink_json_append() writes the fields in kcat's order. For
 * strings it walks the bytes once: printable ASCII is copied, `"` `\` and
 * control bytes are escaped as yajl escapes them, a valid UTF-8 sequence
 * (checked by utf8__valid against the well-formed table of the Unicode
 * standard, ch. 3, table 3-7) is copied whole, and any other byte becomes
 * \u00xx. The worst case is 6 output bytes per input byte, reserved up front
 * so a string is appended without further checks.
 *
 * The sink. A batch is encoded into one buffer (txn write) and written to
 * fd 1 with write(2) at commit (no stdio buffer between batches: when
 * commit returns the bytes are in the pipe or file; an abort writes
 * nothing). A failed write fails the batch; bytes of a
 * partly written batch may be out already, so a consumer of stdout can see
 * records twice after a retry -- stdout cannot do better.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sink_int.h"

/* Length of the valid UTF-8 sequence starting at p (at most n bytes
 * available), or 0 if p[0] does not start one. */
static size_t utf8__valid(const unsigned char *p, size_t n)
{
    unsigned char c = p[0], lo = 0x80, hi = 0xBF;
    size_t len;

    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        len = 2;
    else if (c >= 0xE0 && c <= 0xEF)
        len = 3;
    else if (c >= 0xF0 && c <= 0xF4)
        len = 4;
    else
        return 0;                       /* 80..C1 (continuation, overlong), F5..FF */
    if (c == 0xE0)
        lo = 0xA0;                      /* overlong */
    else if (c == 0xED)
        hi = 0x9F;                      /* surrogates */
    else if (c == 0xF0)
        lo = 0x90;                      /* overlong */
    else if (c == 0xF4)
        hi = 0x8F;                      /* above U+10FFFF */
    if (n < len || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++) {
        if (p[i] < 0x80 || p[i] > 0xBF)
            return 0;
    }
    return len;
}

static void json__put(kw_sink_buf_t *b, const char *s, size_t len)
{
    if (len == 0)
        return;             /* s may be NULL (an empty key or value) */
    memcpy(b->data + b->len, s, len);
    b->len += len;
}

/* Append data as a JSON string (room reserved by the caller: 2 + 6 * len). */
static void json__string(kw_sink_buf_t *b, const void *data, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = data;
    char *o = b->data + b->len;
    size_t i = 0;

    *o++ = '"';
    while (i < len) {
        unsigned char c = p[i];
        size_t u;

        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
            *o++ = (char)c;
            i++;
            continue;
        }
        switch (c) {
        case '"':  *o++ = '\\'; *o++ = '"';  i++; continue;
        case '\\': *o++ = '\\'; *o++ = '\\'; i++; continue;
        case '\b': *o++ = '\\'; *o++ = 'b';  i++; continue;
        case '\f': *o++ = '\\'; *o++ = 'f';  i++; continue;
        case '\n': *o++ = '\\'; *o++ = 'n';  i++; continue;
        case '\r': *o++ = '\\'; *o++ = 'r';  i++; continue;
        case '\t': *o++ = '\\'; *o++ = 't';  i++; continue;
        default:   break;
        }
        u = c >= 0x80 ? utf8__valid(p + i, len - i) : 0;
        if (u > 0) {
            memcpy(o, p + i, u);
            o += u;
            i += u;
        } else {                        /* control byte, or not UTF-8 */
            *o++ = '\\';
            *o++ = 'u';
            *o++ = '0';
            *o++ = '0';
            *o++ = hex[c >> 4];
            *o++ = hex[c & 0xF];
            i++;
        }
    }
    *o++ = '"';
    b->len = (size_t)(o - b->data);
}

/* Bytes a JSON string of len input bytes may take (SIZE_MAX: too long). */
static size_t json__room(size_t len)
{
    return len > (SIZE_MAX - 2) / 6 ? SIZE_MAX : 2 + 6 * len;
}

kw_err_t kw_sink_json_append(kw_sink_buf_t *b, const kw_record_t *rec)
{
    size_t need, topic_len = strlen(rec->topic);
    char num[160];
    int k;

    /* Reserve everything at once: numbers and punctuation, then strings. */
    need = 200 + json__room(topic_len);
    need += rec->key != NULL ? json__room(rec->key_len) : 4;
    need += rec->value != NULL ? json__room(rec->value_len) : 4;
    for (size_t i = 0; i < rec->header_count; i++) {
        need += 2 + json__room(rec->headers[i].name_len);
        need += rec->headers[i].value != NULL ? json__room(rec->headers[i].value_len) : 4;
    }
    if (kw__sink_buf_reserve(b, need) != KW_OK)
        return KW_ENOMEM;

    json__put(b, "{\"topic\":", 9);
    json__string(b, rec->topic, topic_len);
    k = snprintf(num, sizeof(num), ",\"partition\":%" PRId32 ",\"offset\":%" PRId64,
                 rec->partition, rec->offset);
    json__put(b, num, (size_t)k);
    if (rec->tstype != KW_TS_NOT_AVAILABLE) {
        const char *type = rec->tstype == KW_TS_CREATE_TIME ? "create"
                         : rec->tstype == KW_TS_LOG_APPEND ? "logappend" : "unknown";

        k = snprintf(num, sizeof(num), ",\"tstype\":\"%s\",\"ts\":%" PRId64,
                     type, rec->timestamp);
        json__put(b, num, (size_t)k);
    }
    json__put(b, ",\"broker\":-1", 12);
    if (rec->header_count > 0) {
        json__put(b, ",\"headers\":[", 12);
        for (size_t i = 0; i < rec->header_count; i++) {
            const kw_record_header_t *h = &rec->headers[i];

            if (i > 0)
                json__put(b, ",", 1);
            json__string(b, h->name, h->name_len);
            json__put(b, ",", 1);
            if (h->value != NULL)
                json__string(b, h->value, h->value_len);
            else
                json__put(b, "null", 4);
        }
        json__put(b, "]", 1);
    }
    json__put(b, ",\"key\":", 7);
    if (rec->key != NULL)
        json__string(b, rec->key, rec->key_len);
    else
        json__put(b, "null", 4);
    json__put(b, ",\"payload\":", 11);
    if (rec->value != NULL)
        json__string(b, rec->value, rec->value_len);
    else
        json__put(b, "null", 4);
    json__put(b, "}\n", 2);
    return KW_OK;
}

/* ---- The jsonl sink ---- */

typedef struct jsonl__sink {
    kw_sink_buf_t buf;
    int           fd;
} jsonl__sink_t;

static kw_err_t jsonl__open(kw_sink_t *s, const char *arg, char *errstr, size_t errlen)
{
    jsonl__sink_t *j = calloc(1, sizeof(*j));

    (void)arg;
    if (j == NULL)
        return kw_seterr(errstr, errlen, KW_ENOMEM, "sink jsonl: out of memory");
    j->fd = STDOUT_FILENO;
    s->impl = j;
    return KW_OK;
}

static void jsonl__close(kw_sink_t *s)
{
    jsonl__sink_t *j = s->impl;

    if (j == NULL)
        return;
    free(j->buf.data);
    free(j);
}

static kw_err_t jsonl__begin(kw_sink_t *s, uint64_t batch_id, char *errstr,
                             size_t errlen)
{
    jsonl__sink_t *j = s->impl;

    (void)batch_id;
    (void)errstr;
    (void)errlen;
    j->buf.len = 0;
    return KW_OK;
}

/* Encode the batch; nothing reaches stdout before commit. */
static kw_err_t jsonl__write(kw_sink_t *s, uint64_t batch_id, const kw_record_t *recs,
                             size_t n, kw_sink_stats_t *st, int *replayed,
                             char *errstr, size_t errlen)
{
    jsonl__sink_t *j = s->impl;

    (void)replayed;
    j->buf.len = 0;
    for (size_t i = 0; i < n; i++) {
        if (kw_sink_json_append(&j->buf, &recs[i]) != KW_OK)
            return kw_seterr(errstr, errlen, KW_ENOMEM, "sink jsonl: batch %" PRIu64
                             ": out of memory encoding record %zu", batch_id, i);
    }
    st->stored = n;
    return KW_OK;
}

/* Drop the encoded lines; do not keep a huge buffer after a huge batch. */
static void jsonl__abort(kw_sink_t *s, uint64_t batch_id)
{
    jsonl__sink_t *j = s->impl;

    (void)batch_id;
    j->buf.len = 0;
    if (j->buf.cap > (64u << 20)) {
        free(j->buf.data);
        memset(&j->buf, 0, sizeof(j->buf));
    }
}

static kw_err_t jsonl__commit(kw_sink_t *s, uint64_t batch_id, char *errstr,
                              size_t errlen)
{
    jsonl__sink_t *j = s->impl;

    if (kw__sink_write_all(j->fd, j->buf.data, j->buf.len) != 0)
        return kw_seterr(errstr, errlen, KW_EIO, "sink jsonl: batch %" PRIu64
                         ": write to stdout: %s", batch_id, strerror(errno));
    jsonl__abort(s, batch_id);
    return KW_OK;
}

const kw__sink_ops_t kw__sink_jsonl_ops = {
    .kind = KW_SINK_JSONL,
    .name = "jsonl",
    .arg_what = NULL,
    .arg_meta = NULL,
    .open = jsonl__open,
    .close = jsonl__close,
    .begin = jsonl__begin,
    .write = jsonl__write,
    .commit = jsonl__commit,
    .abort = jsonl__abort,
};
