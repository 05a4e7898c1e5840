/*
 * workload.c -- encode and check load-generator records, read and write the
 * manifest. The formats are described in workload.h; encode and decode
 * follow its table field by field.
 */
#include "workload.h"
#include "kw_file.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <xxhash.h>

/* Field offsets and widths (workload.h, "RECORD PAYLOAD"). */
#define OFF_RUN   6
#define LEN_RUN   16
#define OFF_SEQ   23
#define LEN_SEQ   12
#define OFF_TS    36
#define LEN_TS    16
#define OFF_PAD   52
#define LEN_CSUM  16

static const char hexdig[] = "0123456789abcdef";

static void put_hex(char *p, uint64_t v)
{
    for (int i = LEN_RUN - 1; i >= 0; i--) {
        p[i] = hexdig[v & 0xf];
        v >>= 4;
    }
}

static void put_dec(char *p, int width, uint64_t v)
{
    for (int i = width - 1; i >= 0; i--) {
        p[i] = (char)('0' + v % 10);
        v /= 10;
    }
}

static bool get_hex(const char *p, uint64_t *out)
{
    uint64_t v = 0;

    for (int i = 0; i < 16; i++) {
        const char *d = (p[i] == '\0') ? NULL : strchr(hexdig, p[i]);

        if (d == NULL)
            return false;
        v = (v << 4) | (uint64_t)(d - hexdig);
    }
    *out = v;
    return true;
}

static bool get_dec(const char *p, int width, uint64_t *out)
{
    uint64_t v = 0;

    for (int i = 0; i < width; i++) {
        if (p[i] < '0' || p[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(p[i] - '0');
    }
    *out = v;
    return true;
}

void kw_wl_encode(char *buf, size_t size, uint64_t run, uint64_t seq, uint64_t ts_us)
{
    size_t npad = size - KW_WL_MIN_SIZE;

    memcpy(buf, KW_WL_MAGIC " ", 6);
    put_hex(buf + OFF_RUN, run);
    buf[OFF_RUN + LEN_RUN] = ' ';
    put_dec(buf + OFF_SEQ, LEN_SEQ, seq);
    buf[OFF_SEQ + LEN_SEQ] = ' ';
    put_dec(buf + OFF_TS, LEN_TS, ts_us);
    for (size_t i = 0; i < npad; i++)
        buf[OFF_PAD + i] = (char)('a' + (seq + i) % 26);
    buf[size - LEN_CSUM - 1] = ' ';
    put_hex(buf + size - LEN_CSUM, XXH3_64bits(buf, size - LEN_CSUM - 1));
}

kw_wl_status_t kw_wl_decode(const void *data, size_t len, kw_wl_rec_t *out)
{
    const char *buf = data;
    uint64_t want;

    memset(out, 0, sizeof(*out));
    if (len < KW_WL_MIN_SIZE || len > KW_WL_MAX_SIZE)
        return KW_WL_BAD_SIZE;
    if (memcmp(buf, KW_WL_MAGIC " ", 6) != 0)
        return KW_WL_BAD_MAGIC;
    if (!get_hex(buf + OFF_RUN, &out->run) || buf[OFF_RUN + LEN_RUN] != ' ' ||
        !get_dec(buf + OFF_SEQ, LEN_SEQ, &out->seq) || buf[OFF_SEQ + LEN_SEQ] != ' ' ||
        !get_dec(buf + OFF_TS, LEN_TS, &out->ts_us) ||
        buf[len - LEN_CSUM - 1] != ' ' || !get_hex(buf + len - LEN_CSUM, &want))
        return KW_WL_BAD_FIELD;
    out->header_ok = true;
    if (XXH3_64bits(buf, len - LEN_CSUM - 1) != want)
        return KW_WL_BAD_CHECKSUM;
    return KW_WL_OK;
}

const char *kw_wl_status_str(kw_wl_status_t st)
{
    switch (st) {
    case KW_WL_OK: return "ok";
    case KW_WL_BAD_SIZE: return "payload size out of range";
    case KW_WL_BAD_MAGIC: return "not a kwal1 payload";
    case KW_WL_BAD_FIELD: return "malformed payload field";
    case KW_WL_BAD_CHECKSUM: return "checksum mismatch";
    }
    return "unknown";
}

size_t kw_wl_key(char buf[KW_WL_KEY_MAX], uint64_t seq)
{
    return (size_t)snprintf(buf, KW_WL_KEY_MAX, "%" PRIu64, seq);
}

bool kw_wl_run_parse(const char *s, uint64_t *out)
{
    return strlen(s) == 16 && get_hex(s, out);
}

/* ---------------------------------------------------------- manifest -- */

int kw_wl_manifest_write(const char *path, const kw_wl_manifest_t *m,
                         char *errstr, size_t errstr_size)
{
    char text[1024];
    int n;
    size_t len;

    n = snprintf(text, sizeof(text),
                 "# kwal-loadgen manifest (format: tools/testkit/workload.h)\n"
                 "run_id=%016" PRIx64 "\nfirst=%" PRIu64 "\nrecords=%" PRIu64 "\n"
                 "size=%" PRIu64 "\ntopic=%s\ndelivered=%" PRId64 "\nfailed=%" PRId64 "\n"
                 "timestamps=%d\nheaders=%d\n",
                 m->run, m->first, m->records, m->size, m->topic, m->delivered, m->failed,
                 m->timestamps ? 1 : 0, m->headers ? 1 : 0);
    len = (size_t)n;
    if (kw_file_replace(path, text, len, errstr, errstr_size) != 0)
        return -1;
    return 0;
}

static bool parse_u64(const char *s, uint64_t *out)
{
    char *end;
    unsigned long long v;

    if (*s < '0' || *s > '9')
        return false;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return false;
    *out = v;
    return true;
}

static bool parse_i64(const char *s, int64_t *out)
{
    char *end;
    long long v;

    if (*s == '\0')
        return false;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return false;
    *out = v;
    return true;
}

/* "0" or "1". */
static bool parse_flag(const char *s, bool *out)
{
    if ((s[0] != '0' && s[0] != '1') || s[1] != '\0')
        return false;
    *out = s[0] == '1';
    return true;
}

int kw_wl_manifest_read(const char *path, kw_wl_manifest_t *m,
                        char *errstr, size_t errstr_size)
{
    FILE *f;
    char line[1024];
    int lineno = 0;
    bool have_run = false, have_records = false;

    memset(m, 0, sizeof(*m));
    m->delivered = m->failed = -1;
    if ((f = fopen(path, "r")) == NULL) {
        snprintf(errstr, errstr_size, "%s: %s", path, strerror(errno));
        return -1;
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        size_t len = strlen(line);
        char *eq, *val;
        bool ok = true;

        lineno++;
        if (len > 0 && line[len - 1] == '\n')
            line[--len] = '\0';
        else if (!feof(f)) {
            snprintf(errstr, errstr_size, "%s:%d: line too long", path, lineno);
            goto fail;
        }
        if (line[0] == '#' || line[0] == '\0')
            continue;
        if ((eq = strchr(line, '=')) == NULL) {
            snprintf(errstr, errstr_size, "%s:%d: not key=value", path, lineno);
            goto fail;
        }
        *eq = '\0';
        val = eq + 1;
        if (strcmp(line, "run_id") == 0)
            ok = have_run = kw_wl_run_parse(val, &m->run);
        else if (strcmp(line, "first") == 0)
            ok = parse_u64(val, &m->first) && m->first <= KW_WL_MAX_SEQ;
        else if (strcmp(line, "records") == 0)
            ok = have_records = parse_u64(val, &m->records);
        else if (strcmp(line, "size") == 0)
            ok = parse_u64(val, &m->size);
        else if (strcmp(line, "topic") == 0)
            ok = strlen(val) < sizeof(m->topic) &&
                 snprintf(m->topic, sizeof(m->topic), "%s", val) >= 0;
        else if (strcmp(line, "delivered") == 0)
            ok = parse_i64(val, &m->delivered);
        else if (strcmp(line, "failed") == 0)
            ok = parse_i64(val, &m->failed);
        else if (strcmp(line, "timestamps") == 0)
            ok = parse_flag(val, &m->timestamps);
        else if (strcmp(line, "headers") == 0)
            ok = parse_flag(val, &m->headers);
        if (!ok) {
            snprintf(errstr, errstr_size, "%s:%d: bad value for %s: '%s'",
                     path, lineno, line, val);
            goto fail;
        }
    }
    if (ferror(f)) {
        snprintf(errstr, errstr_size, "%s: read: %s", path, strerror(errno));
        goto fail;
    }
    fclose(f);
    if (!have_run || !have_records) {
        snprintf(errstr, errstr_size, "%s: no %s line", path, have_run ? "records" : "run_id");
        return -1;
    }
    if (m->records > KW_WL_MAX_SEQ + 1 - m->first) {
        snprintf(errstr, errstr_size, "%s: first+records beyond sequence %llu",
                 path, (unsigned long long)KW_WL_MAX_SEQ);
        return -1;
    }
    return 0;
fail:
    fclose(f);
    return -1;
}
