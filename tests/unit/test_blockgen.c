/*
 * test_blockgen.c -- unit tests of blocks and the block generator
 * (blockgen/blockgen.h, blockgen/FORMAT.md): the encoding byte for byte, round
 * trips of random blocks, decoding of every truncation and every bit flip of
 * valid encodings, rejected inputs, the generator's cuts (interval with an
 * injected clock, max bytes, seek back, explicit), its offset ranges, and the
 * rate limiter's arithmetic.
 *
 * How: records are generated from a seeded PRNG (support/test_util.h) into a
 * test_recs_t that owns their bytes; expected ranges are computed here
 * independently of blockgen/. Truncations and flips decode from a buffer of
 * exactly the tested length, so under ASan any read past it is caught. A
 * decoded block is re-encoded from its own records and must give the same
 * bytes (FORMAT.md, "Canonical form").
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blockgen.h"
#include "test_util.h"

/* ---- Generated records ---- */

#define MAX_HDRS 4

typedef struct test_rec {
    kw_record_t        rec;
    kw_record_header_t hdrs[MAX_HDRS];
    void              *bufs[2 + 2 * MAX_HDRS];   /* everything malloc'd for it */
} test_rec_t;

typedef struct test_recs {
    test_rec_t *v;
    size_t      n;
    char      **topics;
    size_t      ntopics;
} test_recs_t;

static void *rand_bytes(uint64_t *st, size_t len)
{
    void *p = malloc(len ? len : 1);
    assert_non_null(p);
    test_fill_random(p, len, st);
    return p;
}

/* A nullable field: NULL (1/4), empty (1/8), or random bytes up to max. */
static const void *rand_field(uint64_t *st, size_t max, size_t *len, void **own)
{
    uint64_t k = test_rand_below(st, 8);
    if (k < 2) {
        *len = 7;                 /* ignored for NULL; make sure of it */
        return NULL;
    }
    *len = k == 2 ? 0 : (size_t)test_rand_below(st, max + 1);
    *own = rand_bytes(st, *len);
    return *own;
}

static char *rand_topic(uint64_t *st)
{
    size_t len = 1 + (size_t)(test_rand_below(st, 4) == 0 ? test_rand_below(st, 255)
                                                          : test_rand_below(st, 20));
    char *t = malloc(len + 1);
    assert_non_null(t);
    for (size_t i = 0; i < len; i++)
        t[i] = (char)(1 + test_rand_below(st, 255));   /* any byte but NUL */
    t[len] = '\0';
    return t;
}

/* n records over a few random topics and partitions, offsets increasing per
 * partition with random gaps, nulls, empties, headers and (with `large`) one
 * value of a few hundred KiB. */
static void recs_make(test_recs_t *rs, uint64_t seed, size_t n, int large)
{
    uint64_t st = seed;
    int64_t next_off[6][8];

    memset(rs, 0, sizeof *rs);
    rs->ntopics = 1 + (size_t)test_rand_below(&st, 6);
    rs->topics = calloc(rs->ntopics, sizeof *rs->topics);
    for (size_t t = 0; t < rs->ntopics; t++) {
        rs->topics[t] = rand_topic(&st);
        for (int p = 0; p < 8; p++)
            next_off[t][p] = test_rand_below(&st, 3) == 0 ? 0
                           : (int64_t)test_rand_below(&st, (uint64_t)1 << 62);
    }
    rs->v = calloc(n, sizeof *rs->v);
    assert_non_null(rs->v);
    rs->n = n;
    for (size_t i = 0; i < n; i++) {
        test_rec_t *r = &rs->v[i];
        size_t t = (size_t)test_rand_below(&st, rs->ntopics);
        int p = (int)test_rand_below(&st, 8);
        int nb = 0;

        r->rec.topic = rs->topics[t];
        r->rec.partition = p == 7 ? INT32_MAX : p;
        r->rec.offset = next_off[t][p];
        next_off[t][p] += 1 + (test_rand_below(&st, 3) == 0 ? (int64_t)test_rand_below(&st, 1000) : 0);
        r->rec.tstype = (kw_tstype_t)test_rand_below(&st, 3);
        r->rec.timestamp = r->rec.tstype == KW_TS_NOT_AVAILABLE ? -1 : (int64_t)test_rand(&st);
        r->rec.key = rand_field(&st, 40, &r->rec.key_len, &r->bufs[nb++]);
        if (large && i == n / 2) {
            r->rec.value_len = 300 * 1024 + (size_t)test_rand_below(&st, 1000);
            r->bufs[nb] = rand_bytes(&st, r->rec.value_len);
            r->rec.value = r->bufs[nb++];
        } else {
            r->rec.value = rand_field(&st, 300, &r->rec.value_len, &r->bufs[nb++]);
        }
        r->rec.header_count = (size_t)test_rand_below(&st, MAX_HDRS + 1);
        r->rec.headers = r->rec.header_count ? r->hdrs : NULL;
        for (size_t h = 0; h < r->rec.header_count; h++) {
            r->hdrs[h].name_len = (size_t)test_rand_below(&st, 12);
            r->bufs[nb] = rand_bytes(&st, r->hdrs[h].name_len);
            r->hdrs[h].name = r->bufs[nb++];
            r->hdrs[h].value = rand_field(&st, 30, &r->hdrs[h].value_len, &r->bufs[nb++]);
        }
    }
}

static void recs_free(test_recs_t *rs)
{
    for (size_t i = 0; i < rs->n; i++)
        for (size_t b = 0; b < sizeof rs->v[i].bufs / sizeof rs->v[i].bufs[0]; b++)
            free(rs->v[i].bufs[b]);
    for (size_t t = 0; t < rs->ntopics; t++)
        free(rs->topics[t]);
    free(rs->topics);
    free(rs->v);
    memset(rs, 0, sizeof *rs);
}

static kw_record_t *recs_array(const test_recs_t *rs)
{
    kw_record_t *a = calloc(rs->n ? rs->n : 1, sizeof *a);
    assert_non_null(a);
    for (size_t i = 0; i < rs->n; i++)
        a[i] = rs->v[i].rec;
    return a;
}

/* ---- Comparing ---- */

static void assert_field(const void *a, size_t alen, const void *b, size_t blen, const char *what)
{
    if ((a == NULL) != (b == NULL))
        fail_msg("%s: null %d vs %d", what, a == NULL, b == NULL);
    if (a == NULL)
        return;
    if (alen != blen || (alen > 0 && memcmp(a, b, alen) != 0))
        fail_msg("%s differs (%zu vs %zu bytes)", what, alen, blen);
}

static void assert_record_eq(const kw_record_t *want, const kw_record_t *got)
{
    assert_string_equal(want->topic, got->topic);
    assert_int_equal(want->partition, got->partition);
    assert_int_equal(want->offset, got->offset);
    assert_int_equal(want->tstype, got->tstype);
    assert_int_equal(want->timestamp, got->timestamp);
    assert_field(want->key, want->key_len, got->key, got->key_len, "key");
    assert_field(want->value, want->value_len, got->value, got->value_len, "value");
    assert_int_equal(want->header_count, got->header_count);
    for (size_t h = 0; h < want->header_count; h++) {
        assert_field(want->headers[h].name, want->headers[h].name_len,
                     got->headers[h].name, got->headers[h].name_len, "header name");
        assert_field(want->headers[h].value, want->headers[h].value_len,
                     got->headers[h].value, got->headers[h].value_len, "header value");
    }
}

/* Every record of blk, deep-copied so they outlive the iterator (a header
 * array per record). *n gets the count. */
typedef struct got_recs {
    kw_record_t        *v;
    kw_record_header_t *hdrs;
    size_t              n;
} got_recs_t;

static kw_err_t block_records(const kw_block_t *blk, got_recs_t *g)
{
    kw_block_iter_t *it;
    kw_record_t rec;
    size_t nh = 0, cap = 0, n = kw_block_record_count(blk);
    kw_err_t err;

    memset(g, 0, sizeof *g);
    g->v = calloc(n, sizeof *g->v);
    if (kw_block_iter_new(blk, &it) != KW_OK)
        return KW_ENOMEM;
    while ((err = kw_block_iter_next(it, &rec)) == KW_OK) {
        if (nh + rec.header_count > cap) {
            cap = (nh + rec.header_count) * 2 + 8;
            g->hdrs = realloc(g->hdrs, cap * sizeof *g->hdrs);
        }
        if (rec.header_count)
            memcpy(g->hdrs + nh, rec.headers, rec.header_count * sizeof *g->hdrs);
        rec.headers = (const kw_record_header_t *)(uintptr_t)nh;   /* fixed up below */
        nh += rec.header_count;
        g->v[g->n++] = rec;
    }
    kw_block_iter_destroy(it);
    for (size_t i = 0; i < g->n; i++)
        g->v[i].headers = g->v[i].header_count ? g->hdrs + (uintptr_t)g->v[i].headers : NULL;
    return err == KW_EOF ? KW_OK : err;
}

static void got_free(got_recs_t *g)
{
    free(g->v);
    free(g->hdrs);
}

/* Expected ranges computed from the records alone: (topic, partition) in
 * first-record order, first and last offset, count. */
typedef struct exp_range {
    const char *topic;
    int32_t     partition;
    int64_t     from, last;
    uint32_t    records;
} exp_range_t;

static size_t expected_ranges(const kw_record_t *recs, size_t n, exp_range_t *out, size_t max)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        size_t j;
        for (j = 0; j < k; j++)
            if (out[j].partition == recs[i].partition && strcmp(out[j].topic, recs[i].topic) == 0)
                break;
        if (j == k) {
            assert_true(k < max);
            out[k].topic = recs[i].topic;
            out[k].partition = recs[i].partition;
            out[k].from = recs[i].offset;
            out[k].records = 0;
            k++;
        }
        out[j].last = recs[i].offset;
        out[j].records++;
    }
    return k;
}

static void assert_ranges(const kw_block_t *blk, const kw_record_t *recs, size_t n)
{
    exp_range_t exp[64];
    size_t k = expected_ranges(recs, n, exp, 64);

    assert_int_equal(kw_block_range_count(blk), k);
    for (size_t i = 0; i < k; i++) {
        const kw_block_range_t *r = kw_block_range(blk, i);
        assert_string_equal(r->topic, exp[i].topic);
        assert_int_equal(r->partition, exp[i].partition);
        assert_int_equal(r->from_offset, exp[i].from);
        assert_int_equal(r->until_offset, exp[i].last + 1);
        assert_int_equal(r->records, exp[i].records);
        assert_ptr_equal(kw_block_range_find(blk, exp[i].topic, exp[i].partition), r);
    }
    assert_null(kw_block_range(blk, k));
    assert_null(kw_block_range_find(blk, "no such topic", 0));
}

/* Decode data and, if it decodes, check that re-encoding gives the same
 * bytes. Returns the decode result. */
static kw_err_t decode_and_reencode(const uint8_t *data, size_t len)
{
    kw_block_t *blk = NULL, *again = NULL;
    kw_block_meta_t meta;
    got_recs_t g;
    char err[256];
    kw_err_t rc = kw_block_decode(data, len, KW_BLOCK_BORROW, &blk, err, sizeof err);
    const uint8_t *d2;
    size_t l2;

    if (rc != KW_OK) {
        if (rc != KW_ECORRUPT)
            fail_msg("decode gave %s: %s", kw_err_name(rc), err);
        assert_true(strstr(err, "corrupt block") != NULL);
        return rc;
    }
    assert_int_equal(block_records(blk, &g), KW_OK);
    assert_int_equal(g.n, kw_block_record_count(blk));
    meta.receiver_id = kw_block_receiver_id(blk);
    meta.seq = kw_block_seq(blk);
    meta.created_ms = kw_block_created_ms(blk);
    rc = kw_block_encode(&meta, g.v, g.n, &again, err, sizeof err);
    if (rc != KW_OK)
        fail_msg("a decoded block does not re-encode: %s", err);
    d2 = kw_block_data(again, &l2);
    assert_int_equal(l2, len);
    assert_memory_equal(d2, data, len);
    assert_ranges(again, g.v, g.n);
    got_free(&g);
    kw_block_destroy(again);
    kw_block_destroy(blk);
    return KW_OK;
}

/* ---- Encoding ---- */

/* The encoding of one known block, written out by hand from FORMAT.md. */
static const uint8_t golden_block[] = {
    /* header */
    0x4B, 0x57, 0x42, 0x31,                         /* magic "KWB1" */
    0x01, 0x00,                                     /* version 1 */
    0x00, 0x00,                                     /* flags */
    0x07, 0x00, 0x00, 0x00,                         /* receiver_id 7 */
    0x02, 0x00, 0x00, 0x00,                         /* record_count 2 */
    0x2A, 0, 0, 0, 0, 0, 0, 0,                      /* seq 42 */
    0xE8, 0x03, 0, 0, 0, 0, 0, 0,                   /* created_ms 1000 */
    0x01, 0x00, 0x00, 0x00,                         /* topic_count 1 */
    0x02, 0x00, 0x00, 0x00,                         /* range_count 2 */
    /* topic 0 */
    0x02, 0x00, 't', '1',
    /* range 0: t1 [3] [5, 6) */
    0, 0, 0, 0,  3, 0, 0, 0,  5, 0, 0, 0, 0, 0, 0, 0,  6, 0, 0, 0, 0, 0, 0, 0,
    /* range 1: t1 [0] [9, 10) */
    0, 0, 0, 0,  0, 0, 0, 0,  9, 0, 0, 0, 0, 0, 0, 0,  10, 0, 0, 0, 0, 0, 0, 0,
    /* record 0: t1 [3] @5, create time 0x0102, null key, value "ab", 1 header h=null */
    0, 0, 0, 0,  3, 0, 0, 0,  5, 0, 0, 0, 0, 0, 0, 0,
    0x01,  0x02, 0x01, 0, 0, 0, 0, 0, 0,
    0xFF, 0xFF, 0xFF, 0xFF,
    0x02, 0, 0, 0, 'a', 'b',
    0x01, 0, 0, 0,
    0x01, 0, 0, 0, 'h',  0xFF, 0xFF, 0xFF, 0xFF,
    /* record 1: t1 [0] @9, no timestamp (-1), empty key, null value, no headers */
    0, 0, 0, 0,  0, 0, 0, 0,  9, 0, 0, 0, 0, 0, 0, 0,
    0x00,  0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
    0, 0, 0, 0,
    0xFF, 0xFF, 0xFF, 0xFF,
    0, 0, 0, 0,
};

static void golden_records(kw_record_t recs[2], kw_record_header_t *hdr)
{
    memset(recs, 0, 2 * sizeof *recs);
    hdr->name = "h";
    hdr->name_len = 1;
    hdr->value = NULL;
    recs[0].topic = "t1";
    recs[0].partition = 3;
    recs[0].offset = 5;
    recs[0].tstype = KW_TS_CREATE_TIME;
    recs[0].timestamp = 0x0102;
    recs[0].value = "ab";
    recs[0].value_len = 2;
    recs[0].headers = hdr;
    recs[0].header_count = 1;
    recs[1].topic = "t1";
    recs[1].partition = 0;
    recs[1].offset = 9;
    recs[1].tstype = KW_TS_NOT_AVAILABLE;
    recs[1].timestamp = -1;
    recs[1].key = "";
    recs[1].key_len = 0;
}

static void test_format_bytes(void **state)
{
    kw_record_t recs[2];
    kw_record_header_t hdr;
    kw_block_meta_t meta = { 7, 42, 1000 };
    kw_block_t *blk;
    char err[256];
    size_t len;
    const uint8_t *d;

    (void)state;
    golden_records(recs, &hdr);
    assert_int_equal(kw_block_encode(&meta, recs, 2, &blk, err, sizeof err), KW_OK);
    d = kw_block_data(blk, &len);
    assert_int_equal(len, sizeof golden_block);
    assert_memory_equal(d, golden_block, sizeof golden_block);
    assert_int_equal(kw_block_size(blk), sizeof golden_block);
    assert_int_equal(kw_block_receiver_id(blk), 7);
    assert_int_equal(kw_block_seq(blk), 42);
    assert_int_equal(kw_block_created_ms(blk), 1000);
    assert_int_equal(kw_block_record_count(blk), 2);
    assert_ranges(blk, recs, 2);
    kw_block_destroy(blk);
    assert_int_equal(decode_and_reencode(golden_block, sizeof golden_block), KW_OK);
}

/* Hand-made violations of FORMAT.md rules that a single bit flip does not
 * reach, each on a copy of golden_block. */
static void test_decode_rules(void **state)
{
    uint8_t b[sizeof golden_block + 8];
    size_t n = sizeof golden_block;
    const size_t topics = 40, range0 = 44, range1 = 68, rec0 = 92;
    const size_t rec1 = rec0 + 25 + 4 + 4 + 2 + 4 + 4 + 1 + 4;

    (void)state;
#define RESET() memcpy(b, golden_block, n)
#define EXPECT_CORRUPT(len) assert_int_equal(decode_and_reencode(b, (len)), KW_ECORRUPT)
    /* trailing byte */
    RESET(); b[n] = 0; EXPECT_CORRUPT(n + 1);
    /* record_count 0, topic_count 0, range_count 0 */
    RESET(); b[12] = 0; EXPECT_CORRUPT(n);
    RESET(); b[32] = 0; EXPECT_CORRUPT(n);
    RESET(); b[36] = 0; EXPECT_CORRUPT(n);
    /* topic name empty / with a NUL byte */
    RESET(); b[topics] = 0; EXPECT_CORRUPT(n);
    RESET(); b[topics + 3] = 0; EXPECT_CORRUPT(n);
    /* ranges swapped: no longer in first-record order */
    RESET(); memcpy(b + range0, golden_block + range1, 24);
    memcpy(b + range1, golden_block + range0, 24); EXPECT_CORRUPT(n);
    /* both ranges the same partition */
    RESET(); b[range1 + 4] = 3; EXPECT_CORRUPT(n);
    /* range wider than its records: [5, 7) with one record at 5 */
    RESET(); b[range0 + 16] = 7; EXPECT_CORRUPT(n);
    /* range starting below its first record */
    RESET(); b[range0 + 8] = 4; EXPECT_CORRUPT(n);
    /* empty range (until == from) and inverted range */
    RESET(); b[range0 + 16] = 5; EXPECT_CORRUPT(n);
    RESET(); b[range0 + 16] = 4; EXPECT_CORRUPT(n);
    /* negative partition and offsets */
    RESET(); b[range0 + 7] = 0x80; EXPECT_CORRUPT(n);
    RESET(); b[range0 + 15] = 0x80; EXPECT_CORRUPT(n);
    /* record of a partition with no range */
    RESET(); b[rec1 + 4] = 1; EXPECT_CORRUPT(n);
    /* topic index out of range in a record and in a range */
    RESET(); b[rec0] = 1; EXPECT_CORRUPT(n);
    RESET(); b[range0] = 1; EXPECT_CORRUPT(n);
    /* tstype 3 */
    RESET(); b[rec0 + 16] = 3; EXPECT_CORRUPT(n);
    /* header name length "null" */
    RESET(); memset(b + rec0 + 25 + 4 + 4 + 2 + 4, 0xFF, 4); EXPECT_CORRUPT(n);
    /* the untouched copy still decodes */
    RESET(); assert_int_equal(decode_and_reencode(b, n), KW_OK);
#undef RESET
#undef EXPECT_CORRUPT
}

/* A second topic: same name twice, and a topic that no range refers to. */
static void test_decode_topic_rules(void **state)
{
    kw_record_t recs[2];
    kw_record_header_t hdr;
    kw_block_meta_t meta = { 1, 1, 1 };
    kw_block_t *blk;
    char err[256];
    const uint8_t *d;
    uint8_t *b;
    size_t len;
    const size_t topics = 40;

    (void)state;
    golden_records(recs, &hdr);
    recs[1].topic = "t2";
    assert_int_equal(kw_block_encode(&meta, recs, 2, &blk, err, sizeof err), KW_OK);
    d = kw_block_data(blk, &len);
    b = malloc(len);
    /* the topic table is "t1" then "t2"; rename t2 to t1 */
    memcpy(b, d, len);
    assert_int_equal(b[topics + 4 + 3], '2');
    b[topics + 4 + 3] = '1';
    assert_int_equal(decode_and_reencode(b, len), KW_ECORRUPT);
    /* point range 1 at topic 0: topic 1 is no longer referred to (and range 1
     * duplicates nothing: partition 0 vs 3) */
    memcpy(b, d, len);
    b[topics + 8 + 24] = 0;
    assert_int_equal(decode_and_reencode(b, len), KW_ECORRUPT);
    /* topic referred to before its predecessor: swap the names' order is
     * legal only if ranges follow; swap the range topic indexes instead */
    memcpy(b, d, len);
    b[topics + 8] = 1;
    b[topics + 8 + 24] = 0;
    assert_int_equal(decode_and_reencode(b, len), KW_ECORRUPT);
    memcpy(b, d, len);
    assert_int_equal(decode_and_reencode(b, len), KW_OK);
    free(b);
    kw_block_destroy(blk);
}

static void roundtrip_one(uint64_t seed, size_t n, int large)
{
    test_recs_t rs;
    kw_record_t *recs;
    kw_block_meta_t meta;
    kw_block_t *blk, *dec;
    got_recs_t g;
    char err[256];
    const uint8_t *d;
    uint8_t *copy;
    size_t len;
    uint64_t st = seed * 7919;

    recs_make(&rs, seed, n, large);
    recs = recs_array(&rs);
    meta.receiver_id = (uint32_t)test_rand(&st);
    meta.seq = test_rand(&st);
    meta.created_ms = (int64_t)test_rand(&st);
    if (kw_block_encode(&meta, recs, n, &blk, err, sizeof err) != KW_OK)
        fail_msg("seed %" PRIu64 ": encode: %s", seed, err);
    assert_ranges(blk, recs, n);
    d = kw_block_data(blk, &len);

    /* three ways to decode */
    for (unsigned mode = 0; mode < 3; mode++) {
        unsigned flags = mode == 0 ? 0 : mode == 1 ? KW_BLOCK_BORROW : KW_BLOCK_TAKE;
        copy = malloc(len);
        memcpy(copy, d, len);
        if (kw_block_decode(copy, len, flags, &dec, err, sizeof err) != KW_OK)
            fail_msg("seed %" PRIu64 ": decode: %s", seed, err);
        if (flags == 0)
            free(copy);                 /* the block made its own copy */
        assert_int_equal(kw_block_receiver_id(dec), meta.receiver_id);
        assert_int_equal(kw_block_seq(dec), meta.seq);
        assert_int_equal(kw_block_created_ms(dec), meta.created_ms);
        assert_int_equal(kw_block_record_count(dec), n);
        assert_ranges(dec, recs, n);
        assert_int_equal(block_records(dec, &g), KW_OK);
        assert_int_equal(g.n, n);
        for (size_t i = 0; i < n; i++)
            assert_record_eq(&recs[i], &g.v[i]);
        got_free(&g);
        kw_block_destroy(dec);
        if (flags == KW_BLOCK_BORROW)
            free(copy);
    }
    assert_int_equal(decode_and_reencode(d, len), KW_OK);
    kw_block_destroy(blk);
    free(recs);
    recs_free(&rs);
}

/* Three blocks flattened into one batch: every record, in block order,
 * headers intact after the iterators are gone. */
static void test_flat_batch(void **state)
{
    test_recs_t rs[3];
    kw_record_t *recs[3];
    kw_block_t *blk[3];
    kw_block_meta_t meta = { 1, 1, 1 };
    kw_flat_batch_t fb;
    size_t sizes[3] = { 5, 1, 300 }, at = 0;
    char err[256];

    (void)state;
    memset(&fb, 0, sizeof(fb));
    for (int b = 0; b < 3; b++) {
        recs_make(&rs[b], 100 + (uint64_t)b, sizes[b], 0);
        recs[b] = recs_array(&rs[b]);
        if (kw_block_encode(&meta, recs[b], sizes[b], &blk[b], err, sizeof err) != KW_OK)
            fail_msg("encode: %s", err);
        assert_int_equal(kw_flat_batch_add(&fb, blk[b]), KW_OK);
    }
    assert_int_equal(fb.n, 306);
    for (int b = 0; b < 3; b++)
        for (size_t i = 0; i < sizes[b]; i++)
            assert_record_eq(&recs[b][i], &fb.recs[at++]);
    kw_flat_batch_free(&fb);
    assert_null(fb.recs);
    assert_int_equal(fb.n, 0);
    for (int b = 0; b < 3; b++) {
        kw_block_destroy(blk[b]);
        free(recs[b]);
        recs_free(&rs[b]);
    }
}

static void test_roundtrip_random(void **state)
{
    uint64_t st = 12345;

    (void)state;
    for (uint64_t seed = 1; seed <= 300; seed++)
        roundtrip_one(seed, 1 + (size_t)test_rand_below(&st, seed < 250 ? 60 : 2000), 0);
    for (uint64_t seed = 1000; seed < 1005; seed++)
        roundtrip_one(seed, 20, 1);
}

/* One record with every field at an edge. */
static void test_roundtrip_edges(void **state)
{
    char topic[KW_BLOCK_MAX_TOPIC_LEN + 1];
    kw_record_header_t hdrs[3] = {
        { "", 0, "", 0 },                  /* empty name, empty value */
        { "n", 1, NULL, 0 },               /* null value */
        { "x\0y", 3, "v\0w", 3 },          /* NUL bytes inside */
    };
    kw_record_t rec[2];
    kw_block_meta_t meta = { UINT32_MAX, UINT64_MAX, INT64_MIN };
    kw_block_t *blk, *dec;
    got_recs_t g;
    char err[256];
    const uint8_t *d;
    size_t len, big = 5u << 20;
    uint8_t *value = malloc(big);

    (void)state;
    memset(topic, 'T', KW_BLOCK_MAX_TOPIC_LEN);
    topic[KW_BLOCK_MAX_TOPIC_LEN] = '\0';
    test_fill_pattern(value, big, 99);
    memset(rec, 0, sizeof rec);
    rec[0].topic = topic;
    rec[0].partition = INT32_MAX;
    rec[0].offset = INT64_MAX - 1;
    rec[0].tstype = KW_TS_LOG_APPEND;
    rec[0].timestamp = INT64_MIN;
    rec[0].key = NULL;
    rec[0].key_len = 12345;          /* ignored: the key is null */
    rec[0].value = value;
    rec[0].value_len = big;
    rec[0].headers = hdrs;
    rec[0].header_count = 3;
    rec[1].topic = "a";
    rec[1].partition = 0;
    rec[1].offset = 0;
    rec[1].key = "";
    rec[1].value = "";
    assert_int_equal(kw_block_encode(&meta, rec, 2, &blk, err, sizeof err), KW_OK);
    d = kw_block_data(blk, &len);
    assert_int_equal(kw_block_range(blk, 0)->until_offset, INT64_MAX);
    assert_int_equal(kw_block_decode(d, len, KW_BLOCK_BORROW, &dec, err, sizeof err), KW_OK);
    assert_int_equal(block_records(dec, &g), KW_OK);
    rec[0].key_len = 0;
    assert_record_eq(&rec[0], &g.v[0]);
    assert_record_eq(&rec[1], &g.v[1]);
    assert_non_null(g.v[1].key);             /* empty is not null */
    assert_non_null(g.v[1].value);
    assert_null(g.v[0].key);
    assert_null(g.v[0].headers[1].value);
    assert_int_equal(kw_block_created_ms(dec), INT64_MIN);
    assert_int_equal(kw_block_seq(dec), UINT64_MAX);
    got_free(&g);
    kw_block_destroy(dec);
    kw_block_destroy(blk);
    free(value);
}

static void test_encode_rejects(void **state)
{
    char longtopic[KW_BLOCK_MAX_TOPIC_LEN + 2];
    kw_record_t r[2];
    kw_record_header_t nameless = { NULL, 0, NULL, 0 };
    kw_block_meta_t meta = { 0, 0, 0 };
    kw_block_t *blk = NULL;
    char err[256];

    (void)state;
    memset(longtopic, 'x', sizeof longtopic - 1);
    longtopic[sizeof longtopic - 1] = '\0';
#define BASE() do { memset(r, 0, sizeof r); r[0].topic = r[1].topic = "t"; \
                    r[1].offset = 1; } while (0)
#define REJECT(n) do { err[0] = '\0'; \
        assert_int_equal(kw_block_encode(&meta, r, (n), &blk, err, sizeof err), KW_EINVAL); \
        assert_true(err[0] != '\0'); } while (0)
    BASE(); assert_int_equal(kw_block_encode(&meta, r, 2, &blk, err, sizeof err), KW_OK);
    kw_block_destroy(blk);
    BASE(); REJECT(0);
    BASE(); r[1].topic = NULL; REJECT(2);
    BASE(); r[1].topic = ""; REJECT(2);
    BASE(); r[1].topic = longtopic; REJECT(2);
    BASE(); r[1].partition = -1; REJECT(2);
    BASE(); r[1].offset = -1; REJECT(2);
    BASE(); r[1].offset = INT64_MAX; REJECT(2);
    BASE(); r[1].offset = 0; REJECT(2);            /* not above the previous */
    BASE(); r[1].tstype = (kw_tstype_t)3; REJECT(2);
    BASE(); r[1].header_count = 1; REJECT(2);      /* no header array */
    BASE(); r[1].headers = &nameless; r[1].header_count = 1; REJECT(2);
    BASE(); r[1].value = "v"; r[1].value_len = (size_t)KW_BLOCK_MAX_FIELD + 1; REJECT(2);
    assert_int_equal(kw_block_encode(NULL, r, 1, &blk, err, sizeof err), KW_EINVAL);
    assert_int_equal(kw_block_decode(NULL, 5, 0, &blk, err, sizeof err), KW_EINVAL);
    assert_int_equal(kw_block_decode(golden_block, sizeof golden_block,
                                     KW_BLOCK_BORROW | KW_BLOCK_TAKE, &blk, err, sizeof err),
                     KW_EINVAL);
    kw_block_destroy(NULL);
    kw_block_iter_destroy(NULL);
#undef BASE
#undef REJECT
}

/* Every proper prefix of a valid encoding is corrupt, and so is every
 * extension; decoding each from a buffer of exactly that length. */
static void test_decode_truncations(void **state)
{
    (void)state;
    for (uint64_t seed = 1; seed <= 6; seed++) {
        test_recs_t rs;
        kw_record_t *recs;
        kw_block_meta_t meta = { 3, seed, 0 };
        kw_block_t *blk;
        char err[256];
        const uint8_t *d;
        size_t len;

        recs_make(&rs, seed * 31, 12, 0);
        recs = recs_array(&rs);
        assert_int_equal(kw_block_encode(&meta, recs, rs.n, &blk, err, sizeof err), KW_OK);
        d = kw_block_data(blk, &len);
        for (size_t cut = 0; cut < len; cut++) {
            uint8_t *b = malloc(cut ? cut : 1);
            kw_block_t *dec = NULL;
            memcpy(b, d, cut);
            if (kw_block_decode(b, cut, KW_BLOCK_BORROW, &dec, err, sizeof err) != KW_ECORRUPT)
                fail_msg("seed %" PRIu64 ": prefix of %zu/%zu bytes decoded", seed, cut, len);
            assert_null(dec);
            free(b);
        }
        for (size_t extra = 1; extra <= 9; extra++) {
            uint8_t *b = calloc(1, len + extra);
            memcpy(b, d, len);
            assert_int_equal(decode_and_reencode(b, len + extra), KW_ECORRUPT);
            free(b);
        }
        kw_block_destroy(blk);
        free(recs);
        recs_free(&rs);
    }
}

/* Every single bit flip, then every 4-byte window overwritten with values
 * that stress length fields: each either fails as corrupt or decodes to a
 * block that re-encodes to exactly the changed bytes. */
static void test_decode_bitflips(void **state)
{
    static const uint32_t nasty[] = { 0, 1, 0x7F, 0xFF, 0x100, 0xFFFF, 0x7FFFFFFF,
                                      0x80000000u, 0xFFFFFFFEu, 0xFFFFFFFFu };
    size_t decoded = 0, refused = 0;

    (void)state;
    for (uint64_t seed = 1; seed <= 4; seed++) {
        test_recs_t rs;
        kw_record_t *recs;
        kw_block_meta_t meta = { 9, seed, 77 };
        kw_block_t *blk;
        char err[256];
        const uint8_t *d;
        size_t len;
        uint8_t *b;

        recs_make(&rs, seed * 101, 6, 0);
        recs = recs_array(&rs);
        assert_int_equal(kw_block_encode(&meta, recs, rs.n, &blk, err, sizeof err), KW_OK);
        d = kw_block_data(blk, &len);
        b = malloc(len);
        for (size_t i = 0; i < len; i++) {
            for (unsigned bit = 0; bit < 8; bit++) {
                memcpy(b, d, len);
                b[i] ^= (uint8_t)(1u << bit);
                if (decode_and_reencode(b, len) == KW_OK)
                    decoded++;
                else
                    refused++;
            }
        }
        for (size_t i = 0; i + 4 <= len; i++) {
            for (size_t k = 0; k < sizeof nasty / sizeof nasty[0]; k++) {
                memcpy(b, d, len);
                for (int j = 0; j < 4; j++)
                    b[i + j] = (uint8_t)(nasty[k] >> (8 * j));
                if (decode_and_reencode(b, len) == KW_OK)
                    decoded++;
                else
                    refused++;
            }
        }
        free(b);
        kw_block_destroy(blk);
        free(recs);
        recs_free(&rs);
    }
    /* both outcomes happen: flips in payload bytes decode, flips in
     * structure are refused */
    assert_true(decoded > 0);
    assert_true(refused > 0);
}

/* Random garbage never crashes and a huge count never allocates wildly. */
static void test_decode_garbage(void **state)
{
    uint64_t st = 4242;

    (void)state;
    for (int i = 0; i < 20000; i++) {
        size_t len = (size_t)test_rand_below(&st, 300);
        uint8_t *b = malloc(len ? len : 1);
        kw_block_t *blk = NULL;
        test_fill_random(b, len, &st);
        if (len >= 8 && test_rand_below(&st, 2)) {       /* a plausible header start */
            memcpy(b, golden_block, len < 40 ? len : 40);
            if (len > 40 && test_rand_below(&st, 2))
                memcpy(b, golden_block, len < sizeof golden_block ? len : sizeof golden_block);
            b[test_rand_below(&st, len)] = (uint8_t)test_rand(&st);
        }
        if (kw_block_decode(b, len, KW_BLOCK_BORROW, &blk, NULL, 0) == KW_OK) {
            kw_block_destroy(blk);
            assert_int_equal(decode_and_reencode(b, len), KW_OK);
        }
        free(b);
    }
}

/* ---- Generator ---- */

static kw_blockgen_t *gen_new(int64_t interval, uint64_t max_bytes, uint64_t rate)
{
    kw_blockgen_config_t cfg;
    kw_blockgen_t *g = NULL;
    char err[256];

    kw_blockgen_config_init(&cfg);
    assert_int_equal(cfg.interval_ms, 200);
    assert_int_equal(cfg.first_seq, 1);
    assert_int_equal(cfg.max_rate, 0);
    cfg.receiver_id = 5;
    if (interval)
        cfg.interval_ms = interval;
    if (max_bytes)
        cfg.max_bytes = max_bytes;
    cfg.max_rate = rate;
    if (kw_blockgen_new(&cfg, &g, err, sizeof err) != KW_OK)
        fail_msg("kw_blockgen_new: %s", err);
    return g;
}

static void add(kw_blockgen_t *g, const char *topic, int32_t part, int64_t off, size_t vlen)
{
    static uint8_t zeros[4096];
    kw_record_t r;
    char err[256];

    memset(&r, 0, sizeof r);
    r.topic = topic;
    r.partition = part;
    r.offset = off;
    r.value = zeros;
    r.value_len = vlen;
    if (kw_blockgen_add(g, &r, err, sizeof err) != KW_OK)
        fail_msg("kw_blockgen_add: %s", err);
}

static void test_gen_interval(void **state)
{
    kw_blockgen_t *g = gen_new(200, 0, 0);
    kw_blockgen_stats_t s;
    kw_block_t *b;
    uint64_t bytes;

    (void)state;
    assert_int_equal(kw_blockgen_deadline(g), INT64_MAX);
    add(g, "t", 0, 10, 5);                     /* before the first tick */
    assert_int_equal(kw_blockgen_tick(g, 1000), KW_OK);   /* anchors */
    assert_int_equal(kw_blockgen_deadline(g), 1200);
    add(g, "t", 0, 11, 5);
    add(g, "t", 1, 3, 5);
    assert_int_equal(kw_blockgen_pending(g, &bytes), 3);
    assert_true(bytes > 0);
    assert_int_equal(kw_blockgen_tick(g, 1199), KW_OK);
    assert_int_equal(kw_blockgen_ready(g, NULL), 0);
    assert_int_equal(kw_blockgen_tick(g, 1200), KW_OK);
    assert_int_equal(kw_blockgen_ready(g, &bytes), 1);
    assert_int_equal(kw_blockgen_pending(g, NULL), 0);
    assert_int_equal(kw_blockgen_deadline(g), 1400);
    b = kw_blockgen_take(g);
    assert_non_null(b);
    assert_int_equal(bytes, kw_block_size(b));
    assert_int_equal(kw_block_seq(b), 1);
    assert_int_equal(kw_block_receiver_id(b), 5);
    assert_int_equal(kw_block_record_count(b), 3);
    assert_true(kw_block_created_ms(b) > 1600000000000LL);     /* wall clock */
    assert_int_equal(kw_block_range_count(b), 2);
    assert_int_equal(kw_block_range(b, 0)->from_offset, 10);
    assert_int_equal(kw_block_range(b, 0)->until_offset, 12);
    assert_int_equal(kw_block_range(b, 1)->from_offset, 3);
    assert_int_equal(kw_block_range(b, 1)->until_offset, 4);
    kw_block_destroy(b);
    assert_null(kw_blockgen_take(g));

    /* empty intervals make no block */
    for (int64_t t = 1400; t <= 3000; t += 100)
        assert_int_equal(kw_blockgen_tick(g, t), KW_OK);
    assert_int_equal(kw_blockgen_ready(g, NULL), 0);
    assert_int_equal(kw_blockgen_deadline(g), 3200);

    /* on cadence: an interval ends at 3200 whenever its records came */
    add(g, "t", 0, 12, 1);
    assert_int_equal(kw_blockgen_tick(g, 3199), KW_OK);
    assert_int_equal(kw_blockgen_ready(g, NULL), 0);
    assert_int_equal(kw_blockgen_tick(g, 3250), KW_OK);
    assert_int_equal(kw_blockgen_ready(g, NULL), 1);
    assert_int_equal(kw_blockgen_deadline(g), 3400);

    /* a stall longer than an interval restarts the cadence at now */
    add(g, "t", 0, 13, 1);
    assert_int_equal(kw_blockgen_tick(g, 9000), KW_OK);
    assert_int_equal(kw_blockgen_ready(g, NULL), 2);
    assert_int_equal(kw_blockgen_deadline(g), 9200);
    b = kw_blockgen_take(g);
    assert_int_equal(kw_block_seq(b), 2);
    kw_block_destroy(b);
    b = kw_blockgen_take(g);
    assert_int_equal(kw_block_seq(b), 3);
    assert_int_equal(kw_block_range(b, 0)->from_offset, 13);
    kw_block_destroy(b);

    /* an explicit cut, and a cut of nothing */
    add(g, "u", 2, 0, 1);
    assert_int_equal(kw_blockgen_cut(g), KW_OK);
    assert_int_equal(kw_blockgen_cut(g), KW_OK);
    assert_int_equal(kw_blockgen_ready(g, NULL), 1);
    kw_blockgen_stats(g, &s);
    assert_int_equal(s.blocks, 4);
    assert_int_equal(s.cut_interval, 3);
    assert_int_equal(s.cut_explicit, 1);
    assert_int_equal(s.records, 6);
    kw_blockgen_destroy(g);              /* frees the untaken block */
    kw_blockgen_destroy(NULL);
}

static void test_gen_max_bytes(void **state)
{
    /* Each record encodes to 37 + 100 bytes; a block with three ranges of
     * topic "topic" has 40 + 7 + 72 bytes of header and tables, so six records
     * make 941 bytes and a seventh would make 1078 > 1000. */
    static const uint32_t want[] = { 6, 6, 6, 6, 6, 6, 4, 1, 1 };
    const uint64_t max = 1000;
    kw_blockgen_t *g = gen_new(200, max, 0);
    kw_blockgen_stats_t s;
    kw_block_t *b;
    int64_t off = 0;
    size_t i = 0;

    (void)state;
    for (int k = 0; k < 40; k++)
        add(g, "topic", k % 3, off++, 100);
    assert_int_equal(kw_blockgen_ready(g, NULL), 6);
    /* a record alone larger than max_bytes: the block before it is cut, and
     * it gets a block of its own */
    add(g, "topic", 0, off++, 3000);
    assert_int_equal(kw_blockgen_ready(g, NULL), 8);
    assert_int_equal(kw_blockgen_pending(g, NULL), 0);
    add(g, "topic", 0, off++, 100);
    assert_int_equal(kw_blockgen_cut(g), KW_OK);
    kw_blockgen_stats(g, &s);
    assert_int_equal(s.cut_size, 8);
    assert_int_equal(s.cut_explicit, 1);
    while ((b = kw_blockgen_take(g)) != NULL) {
        assert_true(i < sizeof want / sizeof want[0]);
        assert_int_equal(kw_block_record_count(b), want[i]);
        if (want[i] == 6)
            assert_int_equal(kw_block_size(b), 941);
        if (i == 7)
            assert_true(kw_block_size(b) > max);
        else
            assert_true(kw_block_size(b) <= max);
        assert_int_equal(kw_block_seq(b), i + 1);
        kw_block_destroy(b);
        i++;
    }
    assert_int_equal(i, sizeof want / sizeof want[0]);
    kw_blockgen_destroy(g);
}

static void test_gen_ranges(void **state)
{
    kw_blockgen_t *g = gen_new(200, 0, 0);
    kw_blockgen_stats_t s;
    const kw_block_range_t *r;
    kw_block_t *b;

    (void)state;
    /* interleaved partitions, gaps in offsets */
    add(g, "a", 0, 100, 1);
    add(g, "a", 0, 105, 1);
    add(g, "b", 0, 7, 1);
    add(g, "a", 1, 0, 1);
    add(g, "a", 0, 106, 1);
    add(g, "b", 0, 1000, 1);
    /* partition a/1 goes back: the block is cut first */
    add(g, "a", 1, 0, 1);
    add(g, "a", 0, 200, 1);
    assert_int_equal(kw_blockgen_cut(g), KW_OK);
    kw_blockgen_stats(g, &s);
    assert_int_equal(s.cut_seek, 1);

    b = kw_blockgen_take(g);
    assert_int_equal(kw_block_record_count(b), 6);
    assert_int_equal(kw_block_range_count(b), 3);
    r = kw_block_range(b, 0);
    assert_string_equal(r->topic, "a");
    assert_int_equal(r->partition, 0);
    assert_int_equal(r->from_offset, 100);
    assert_int_equal(r->until_offset, 107);
    assert_int_equal(r->records, 3);
    r = kw_block_range(b, 1);
    assert_string_equal(r->topic, "b");
    assert_int_equal(r->from_offset, 7);
    assert_int_equal(r->until_offset, 1001);
    assert_int_equal(r->records, 2);
    r = kw_block_range_find(b, "a", 1);
    assert_non_null(r);
    assert_int_equal(r->from_offset, 0);
    assert_int_equal(r->until_offset, 1);
    assert_int_equal(decode_and_reencode(kw_block_data(b, NULL), kw_block_size(b)), KW_OK);
    kw_block_destroy(b);

    b = kw_blockgen_take(g);
    assert_int_equal(kw_block_seq(b), 2);
    assert_int_equal(kw_block_range_count(b), 2);
    assert_int_equal(kw_block_range_find(b, "a", 1)->from_offset, 0);
    assert_int_equal(kw_block_range_find(b, "a", 0)->from_offset, 200);
    kw_block_destroy(b);
    assert_null(kw_blockgen_take(g));
    kw_blockgen_destroy(g);
}

/* A long random stream with random ticks, cuts and sizes: every record comes
 * out exactly once, in order, in blocks with consecutive seqs. */
static void test_gen_stream(void **state)
{
    test_recs_t rs;
    kw_record_t *recs;
    kw_blockgen_t *g = gen_new(50, 20000, 0);
    uint64_t st = 777, seq = 1;
    int64_t now = 0;
    size_t next = 0, i = 0;
    char err[256];

    (void)state;
    recs_make(&rs, 2024, 3000, 1);
    recs = recs_array(&rs);
    while (i < rs.n || kw_blockgen_pending(g, NULL) > 0 || kw_blockgen_ready(g, NULL) > 0) {
        kw_block_t *b;
        if (i < rs.n) {
            if (kw_blockgen_add(g, &recs[i], err, sizeof err) != KW_OK)
                fail_msg("record %zu: %s", i, err);
            i++;
        } else {
            assert_int_equal(kw_blockgen_cut(g), KW_OK);
        }
        now += (int64_t)test_rand_below(&st, 3);
        assert_int_equal(kw_blockgen_tick(g, now), KW_OK);
        if (test_rand_below(&st, 500) == 0)
            assert_int_equal(kw_blockgen_cut(g), KW_OK);
        if (test_rand_below(&st, 4) != 0)
            continue;                   /* let blocks pile up sometimes */
        while ((b = kw_blockgen_take(g)) != NULL) {
            kw_block_t *dec;
            got_recs_t got;
            assert_int_equal(kw_block_seq(b), seq++);
            assert_int_equal(kw_block_decode(kw_block_data(b, NULL), kw_block_size(b), 0,
                                             &dec, err, sizeof err), KW_OK);
            assert_int_equal(block_records(dec, &got), KW_OK);
            assert_ranges(dec, got.v, got.n);
            for (size_t k = 0; k < got.n; k++)
                assert_record_eq(&recs[next++], &got.v[k]);
            got_free(&got);
            kw_block_destroy(dec);
            kw_block_destroy(b);
        }
    }
    assert_int_equal(next, rs.n);
    kw_blockgen_destroy(g);
    free(recs);
    recs_free(&rs);
}

static void test_gen_rejects(void **state)
{
    kw_blockgen_config_t cfg;
    kw_blockgen_t *g = NULL;
    kw_record_t r;
    char err[256];

    (void)state;
    kw_blockgen_config_init(&cfg);
    cfg.interval_ms = 0;
    assert_int_equal(kw_blockgen_new(&cfg, &g, err, sizeof err), KW_ECONFIG);
    assert_non_null(strstr(err, "block.interval.ms"));
    kw_blockgen_config_init(&cfg);
    cfg.max_bytes = 10;
    assert_int_equal(kw_blockgen_new(&cfg, &g, err, sizeof err), KW_ECONFIG);
    assert_non_null(strstr(err, "block.max.bytes"));
    cfg.max_bytes = KW_BLOCKGEN_MAX_BYTES + 1;
    assert_int_equal(kw_blockgen_new(&cfg, &g, err, sizeof err), KW_ECONFIG);
    assert_null(g);

    g = gen_new(200, 0, 0);
    add(g, "t", 0, 5, 1);
    memset(&r, 0, sizeof r);
    r.topic = "t";
    r.partition = -3;
    assert_int_equal(kw_blockgen_add(g, &r, err, sizeof err), KW_EINVAL);
    r.partition = 0;
    r.offset = -1;
    assert_int_equal(kw_blockgen_add(g, &r, err, sizeof err), KW_EINVAL);
    /* nothing was added and nothing cut by the refused records */
    assert_int_equal(kw_blockgen_pending(g, NULL), 1);
    assert_int_equal(kw_blockgen_ready(g, NULL), 0);
    kw_blockgen_destroy(g);
}

/* ---- Rate limiter ---- */

static void test_rate_math(void **state)
{
    kw_blockgen_t *g;
    kw_blockgen_stats_t s;
    int64_t now, taken;

    (void)state;
    /* unlimited */
    g = gen_new(200, 0, 0);
    for (int i = 0; i < 1000; i++)
        add(g, "t", 0, i, 0);
    assert_int_equal(kw_blockgen_rate_wait(g, 0), 0);
    kw_blockgen_destroy(g);

    /* 1000 records/s: a bucket of 100 records, 1 record per ms */
    g = gen_new(100000, 0, 1000);
    assert_int_equal(kw_blockgen_rate_wait(g, 500), 0);    /* anchors, full */
    for (int i = 0; i < 100; i++)
        add(g, "t", 0, i, 0);
    assert_int_equal(kw_blockgen_rate_wait(g, 500), 1);
    assert_int_equal(kw_blockgen_rate_wait(g, 501), 0);
    for (int i = 100; i < 150; i++)                 /* 50 at once: into debt */
        add(g, "t", 0, i, 0);
    assert_int_equal(kw_blockgen_rate_wait(g, 501), 50);
    assert_int_equal(kw_blockgen_rate_wait(g, 530), 21);
    assert_int_equal(kw_blockgen_rate_wait(g, 551), 0);
    /* time going backwards neither refills nor breaks anything */
    add(g, "t", 0, 150, 0);
    assert_int_equal(kw_blockgen_rate_wait(g, 100), 1);
    assert_int_equal(kw_blockgen_rate_wait(g, 552), 0);
    /* a long pause fills the bucket, no more */
    assert_int_equal(kw_blockgen_rate_wait(g, INT64_MAX / 4), 0);
    for (int i = 151; i < 251; i++)
        add(g, "t", 0, i, 0);
    assert_int_equal(kw_blockgen_rate_wait(g, INT64_MAX / 4), 1);
    kw_blockgen_stats(g, &s);
    assert_int_equal(s.rate_waits, 5);
    kw_blockgen_destroy(g);

    /* 3 records/s: a bucket of one record, waits rounded up to whole ms */
    g = gen_new(100000, 0, 3);
    assert_int_equal(kw_blockgen_rate_wait(g, 0), 0);
    add(g, "t", 0, 0, 0);
    assert_int_equal(kw_blockgen_rate_wait(g, 0), 334);
    assert_int_equal(kw_blockgen_rate_wait(g, 333), 1);
    assert_int_equal(kw_blockgen_rate_wait(g, 334), 0);
    kw_blockgen_destroy(g);

    /* a receiver loop on a simulated clock: over 10 s at 1000/s, intake is
     * the rate times the time plus at most one bucket */
    g = gen_new(100000, 64u << 20, 1000);
    now = 0;
    taken = 0;
    while (now < 10000) {
        int64_t w = kw_blockgen_rate_wait(g, now);
        if (w > 0) {
            now += w;
            continue;
        }
        add(g, "t", 0, taken++, 0);
        if (kw_blockgen_ready(g, NULL) > 0)
            kw_block_destroy(kw_blockgen_take(g));
    }
    assert_true(taken >= 10000);
    assert_true(taken <= 10000 + 100 + 1);
    kw_blockgen_destroy(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format_bytes),
        cmocka_unit_test(test_decode_rules),
        cmocka_unit_test(test_decode_topic_rules),
        cmocka_unit_test(test_roundtrip_random),
        cmocka_unit_test(test_roundtrip_edges),
        cmocka_unit_test(test_encode_rejects),
        cmocka_unit_test(test_decode_truncations),
        cmocka_unit_test(test_decode_bitflips),
        cmocka_unit_test(test_decode_garbage),
        cmocka_unit_test(test_gen_interval),
        cmocka_unit_test(test_gen_max_bytes),
        cmocka_unit_test(test_gen_ranges),
        cmocka_unit_test(test_gen_stream),
        cmocka_unit_test(test_gen_rejects),
        cmocka_unit_test(test_rate_math),
        cmocka_unit_test(test_flat_batch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
