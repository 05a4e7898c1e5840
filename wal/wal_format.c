/*
 * wal_format.c -- encode and decode every byte of wal/FORMAT.md: the segment
 * header, the record header and its checksum, segment file names and the
 * STATE file. Each encode has its decode next to it, field by field in the
 * order of the tables in FORMAT.md.
 */
#include "kw_endian.h"
#include "wal_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>


/* ---- Segment header ---- */

void kw__seg_hdr_encode(const kw__seg_hdr_t *h, uint8_t out[KW__SEG_HDR_SIZE])
{
    memset(out, 0, KW__SEG_HDR_SIZE);
    memcpy(out + 0, KW__SEG_MAGIC, 8);
    kw_put16(out + 8, KW__SEG_VERSION);
    kw_put16(out + 10, KW__SEG_HDR_SIZE);
    kw_put32(out + 12, 0);                                   /* flags */
    memcpy(out + 16, h->wal_id, KW__WAL_ID_LEN);
    kw_put64(out + 32, h->first_lsn);
    kw_put64(out + 40, h->created_ms);
    kw_put64(out + 48, 0);                                   /* reserved */
    kw_put64(out + 56, XXH3_64bits(out, 56));
}

int kw__seg_hdr_decode(const uint8_t in[KW__SEG_HDR_SIZE], kw__seg_hdr_t *h)
{
    if (memcmp(in, KW__SEG_MAGIC, 8) != 0 || kw_get16(in + 8) != KW__SEG_VERSION ||
        kw_get16(in + 10) != KW__SEG_HDR_SIZE || kw_get32(in + 12) != 0 ||
        kw_get64(in + 56) != XXH3_64bits(in, 56))
        return -1;
    memcpy(h->wal_id, in + 16, KW__WAL_ID_LEN);
    h->first_lsn = kw_get64(in + 32);
    h->created_ms = kw_get64(in + 40);
    return 0;
}

/* ---- Record header ---- */

uint64_t kw__payload_hash(const void *payload, size_t len)
{
    return XXH3_64bits(payload, len);
}

static uint64_t rec_checksum(const uint8_t hdr[KW__REC_HDR_SIZE], uint64_t payload_hash)
{
    uint8_t buf[32];

    memcpy(buf, hdr, 24);
    kw_put64(buf + 24, payload_hash);
    return XXH3_64bits(buf, sizeof(buf));
}

void kw__rec_hdr_encode(kw__rec_hdr_t *h, uint64_t payload_hash,
                        uint8_t out[KW__REC_HDR_SIZE])
{
    kw_put32(out + 0, KW__REC_MAGIC);
    out[4] = KW__REC_VERSION;
    out[5] = (uint8_t)(h->type ? h->type : KW__REC_TYPE_DATA);
    kw_put16(out + 6, (uint16_t)h->flags);
    kw_put32(out + 8, h->length);
    kw_put32(out + 12, h->raw_length);
    kw_put64(out + 16, h->lsn);
    h->checksum = rec_checksum(out, payload_hash);
    kw_put64(out + 24, h->checksum);
}

int kw__rec_hdr_decode(const uint8_t in[KW__REC_HDR_SIZE], kw__rec_hdr_t *h)
{
    h->type = in[5];
    h->flags = kw_get16(in + 6);
    h->length = kw_get32(in + 8);
    h->raw_length = kw_get32(in + 12);
    h->lsn = kw_get64(in + 16);
    h->checksum = kw_get64(in + 24);
    if (kw_get32(in) != KW__REC_MAGIC || in[4] != KW__REC_VERSION ||
        (h->type != KW__REC_TYPE_DATA && h->type != KW__REC_TYPE_LOST) ||
        (h->flags & ~KW__REC_FLAGS_KNOWN) != 0 ||
        (h->type == KW__REC_TYPE_LOST && (h->flags & KW__REC_FLAG_LZ4) != 0) ||
        h->length > KW_WAL_MAX_RECORD || h->raw_length > KW_WAL_MAX_RECORD ||
        h->lsn == 0)
        return -1;
    if (!(h->flags & KW__REC_FLAG_LZ4) && h->raw_length != h->length)
        return -1;
    return 0;
}

int kw__rec_checksum_ok(const uint8_t hdr[KW__REC_HDR_SIZE], const void *payload,
                        size_t len)
{
    return rec_checksum(hdr, kw__payload_hash(payload, len)) == kw_get64(hdr + 24);
}

/* ---- Segment names ---- */

void kw__seg_name(uint64_t first_lsn, char *buf, size_t cap)
{
    snprintf(buf, cap, "%020" PRIu64 ".seg", first_lsn);
}

int kw__seg_name_parse(const char *name, uint64_t *first_lsn)
{
    uint64_t v = 0;

    if (strlen(name) != KW__SEG_NAME_LEN || strcmp(name + 20, ".seg") != 0)
        return 0;
    for (int i = 0; i < 20; i++) {
        if (name[i] < '0' || name[i] > '9')
            return 0;
        v = v * 10 + (uint64_t)(name[i] - '0');
    }
    *first_lsn = v;
    return 1;
}

/* ---- STATE ---- */

static void hex_encode(const uint8_t *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";

    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

static int hex_decode(const char *in, size_t inlen, uint8_t *out, size_t n)
{
    if (inlen != 2 * n)
        return -1;
    for (size_t i = 0; i < 2 * n; i++) {
        int c = in[i], v;

        if (c >= '0' && c <= '9')
            v = c - '0';
        else if (c >= 'a' && c <= 'f')
            v = c - 'a' + 10;
        else
            return -1;
        if (i % 2 == 0)
            out[i / 2] = (uint8_t)(v << 4);
        else
            out[i / 2] |= (uint8_t)v;
    }
    return 0;
}

/* Append " %016x" per id at buf + *n: 0, or -1 when it does not fit. */
static int format_id_list(char *buf, size_t cap, size_t *n, const uint64_t *ids, int count)
{
    for (int i = 0; i < count; i++) {
        int k = snprintf(buf + *n, cap - *n, " %016" PRIx64, ids[i]);

        if (k < 0 || (size_t)k >= cap - *n)
            return -1;
        *n += (size_t)k;
    }
    return 0;
}

int kw__state_format(const kw__state_t *s, char *buf, size_t cap)
{
    char id[2 * KW__WAL_ID_LEN + 1];
    size_t n;
    int k;

    hex_encode(s->wal_id, KW__WAL_ID_LEN, id);
    k = snprintf(buf, cap,
                 "kwal-wal-state 1\nwal_id %s\nreplica_id %016" PRIx64 "\n"
                 "generation %" PRIu64 "\nreplicas %d\nfailed",
                 id, s->replica_id, s->generation, s->replicas);
    if (k < 0 || (size_t)k >= cap)
        return -1;
    n = (size_t)k;
    if (format_id_list(buf, cap, &n, s->failed, s->nfailed) < 0)
        return -1;
    k = snprintf(buf + n, cap - n, "\nfailed_dirs");
    if (k < 0 || (size_t)k >= cap - n)
        return -1;
    n += (size_t)k;
    if (format_id_list(buf, cap, &n, s->failed_dirs, s->nfailed_dirs) < 0)
        return -1;
    k = snprintf(buf + n, cap - n, "\n");
    if (k < 0 || (size_t)k >= cap - n)
        return -1;
    n += (size_t)k;
    k = snprintf(buf + n, cap - n, "checksum %016" PRIx64 "\n", XXH3_64bits(buf, n));
    if (k < 0 || (size_t)k >= cap - n)
        return -1;
    return (int)(n + (size_t)k);
}

/* Next line of buf[*pos..len) without its newline; NULL at the end. */
static const char *next_line(const char *buf, size_t len, size_t *pos, size_t *linelen)
{
    const char *start = buf + *pos, *nl;

    if (*pos >= len)
        return NULL;
    nl = memchr(start, '\n', len - *pos);
    if (nl == NULL)
        return NULL;       /* every line of STATE ends with a newline */
    *linelen = (size_t)(nl - start);
    *pos += *linelen + 1;
    return start;
}

static int parse_u64(const char *s, size_t n, int base, uint64_t *out)
{
    char tmp[32], *end;

    if (n == 0 || n >= sizeof(tmp))
        return -1;
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    if (tmp[0] == '-' || tmp[0] == '+' || tmp[0] == ' ')
        return -1;
    *out = strtoull(tmp, &end, base);
    return *end == '\0' ? 0 : -1;
}

/* " %016x" repeated, as in the failed and failed_dirs lines: 0 or -1. */
static int parse_id_list(const char *line, size_t linelen, uint64_t *out, int *n, size_t cap)
{
    while (linelen > 0) {
        if (linelen < 17 || line[0] != ' ' || (size_t)*n >= cap ||
            parse_u64(line + 1, 16, 16, &out[*n]) < 0)
            return -1;
        (*n)++;
        line += 17;
        linelen -= 17;
    }
    return 0;
}

kw_err_t kw__state_parse(const char *buf, size_t len, kw__state_t *s,
                         char *errstr, size_t errlen)
{
    static const char *const keys[] = { "kwal-wal-state ", "wal_id ", "replica_id ",
                                        "generation ", "replicas ", "failed",
                                        "failed_dirs", "checksum " };
    size_t pos = 0, linelen = 0, body_end = 0;
    const char *line;
    uint64_t v;

    memset(s, 0, sizeof(*s));
    for (int k = 0; k < 8; k++) {
        size_t klen = strlen(keys[k]), save = pos;

        if (k == 7)
            body_end = pos;
        line = next_line(buf, len, &pos, &linelen);
        if (k == 6 && (line == NULL || linelen < klen || memcmp(line, keys[k], klen) != 0)) {
            pos = save;          /* optional: STATE files of the first version */
            continue;
        }
        if (line == NULL || linelen < klen || memcmp(line, keys[k], klen) != 0)
            return kw_seterr(errstr, errlen, KW_ECORRUPT, "line %d: expected '%s'",
                             k + 1, keys[k]);
        line += klen;
        linelen -= klen;
        switch (k) {
        case 0:
            if (linelen != 1 || line[0] != '1')
                return kw_seterr(errstr, errlen, KW_ECORRUPT, "unknown STATE version");
            break;
        case 1:
            if (hex_decode(line, linelen, s->wal_id, KW__WAL_ID_LEN) < 0)
                return kw_seterr(errstr, errlen, KW_ECORRUPT, "bad wal_id");
            break;
        case 2:
            if (linelen != 16 || parse_u64(line, linelen, 16, &s->replica_id) < 0)
                return kw_seterr(errstr, errlen, KW_ECORRUPT, "bad replica_id");
            break;
        case 3:
            if (parse_u64(line, linelen, 10, &s->generation) < 0)
                return kw_seterr(errstr, errlen, KW_ECORRUPT, "bad generation");
            break;
        case 4:
            if (parse_u64(line, linelen, 10, &v) < 0 || v < 1 || v > KW_WAL_MAX_REPLICAS * 4)
                return kw_seterr(errstr, errlen, KW_ECORRUPT, "bad replicas");
            s->replicas = (int)v;
            break;
        case 5:
            if (parse_id_list(line, linelen, s->failed, &s->nfailed,
                              sizeof(s->failed) / sizeof(s->failed[0])) < 0)
                return kw_seterr(errstr, errlen, KW_ECORRUPT, "bad failed list");
            break;
        case 6:
            if (parse_id_list(line, linelen, s->failed_dirs, &s->nfailed_dirs,
                              sizeof(s->failed_dirs) / sizeof(s->failed_dirs[0])) < 0)
                return kw_seterr(errstr, errlen, KW_ECORRUPT, "bad failed_dirs list");
            break;
        case 7:
            if (linelen != 16 || parse_u64(line, linelen, 16, &v) < 0 ||
                v != XXH3_64bits(buf, body_end))
                return kw_seterr(errstr, errlen, KW_ECORRUPT, "checksum mismatch");
            break;
        }
    }
    if (pos != len)
        return kw_seterr(errstr, errlen, KW_ECORRUPT, "trailing bytes");
    return KW_OK;
}

uint64_t kw__dir_hash(const char *dir)
{
    return XXH3_64bits(dir, strlen(dir));
}

int kw__state_is_failed(const kw__state_t *s, uint64_t replica_id, const char *dir)
{
    uint64_t h = kw__dir_hash(dir);

    for (int i = 0; i < s->nfailed; i++)
        if (s->failed[i] == replica_id)
            return 1;
    for (int i = 0; i < s->nfailed_dirs; i++)
        if (s->failed_dirs[i] == h)
            return 1;
    return 0;
}

/* ---- LZ4 payloads (FORMAT.md "Valid record" rule 5) ---- */

#include <lz4.h>

#include "wal_scan.h"

int kw__lz4_check(const uint8_t *src, uint32_t len, uint32_t raw_len)
{
    char *out = malloc(raw_len ? raw_len : 1);
    int n;

    if (out == NULL)
        return 0;
    n = LZ4_decompress_safe((const char *)src, out, (int)len, (int)raw_len);
    free(out);
    return n >= 0 && (uint32_t)n == raw_len;
}

int kw__rec_check(const uint8_t *hdr, const uint8_t *payload, uint64_t avail,
                     uint64_t expect_lsn, kw__rec_hdr_t *h, char *what, size_t whatlen)
{
    if (kw__rec_hdr_decode(hdr, h) < 0) {
        snprintf(what, whatlen, "bad record header");
        return -1;
    }
    if (h->length > avail) {
        snprintf(what, whatlen, "record of %u bytes runs past the end of the file",
                 h->length);
        return -1;
    }
    if (!kw__rec_checksum_ok(hdr, payload, h->length)) {
        snprintf(what, whatlen, "checksum mismatch (LSN %" PRIu64 " in header)", h->lsn);
        return -1;
    }
    if (expect_lsn != 0 && h->lsn != expect_lsn) {
        snprintf(what, whatlen, "LSN %" PRIu64 " where %" PRIu64 " was expected",
                 h->lsn, expect_lsn);
        return -1;
    }
    return 0;
}
