/*
 * block.c -- the block codec of blockgen/FORMAT.md: the builder (one encoder,
 * used by kw_block_encode() and by the generator), the decoder that checks
 * every rule of "Decoding rules", the record iterator, and the accessors.
 *
 * Encoding is done in two steps: records are encoded one by one into the
 * records section as they are added (that is the copy the generator makes of
 * each record), while the topic and range tables are kept as arrays with hash
 * indexes; finishing writes header, topic table and range table, then the
 * records section, into one buffer.
 *
 * Decoding reads through a cursor that checks every length against the bytes
 * left before using it (rule 1); counts are checked against what the remaining
 * bytes could hold before anything is allocated for them, so a flipped count
 * cannot make the decoder allocate more than a small multiple of the input.
 */
#include "kw_endian.h"
#include "blockgen_int.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct kw_block {
    const uint8_t    *data;
    size_t            len;
    uint8_t          *owned;        /* freed with the block (data, unless borrowed) */
    kw_block_meta_t   meta;
    uint32_t          nrecords;
    uint32_t          ntopics;
    char             *topic_mem;    /* the names, NUL-terminated, back to back */
    const char      **topics;
    uint32_t          nranges;
    kw_block_range_t *ranges;
    size_t            records_off;  /* where the records section starts */
};

struct kw_block_iter {
    const kw_block_t   *block;
    size_t              off;
    uint32_t            index;
    kw_record_header_t *hdrs;
    size_t              hdr_cap;
};

/* ---- Little-endian ---- */


/* ---- Index tables ---- */

typedef int (*itab_eq_fn)(const void *ctx, uint32_t idx, const void *key);
typedef uint64_t (*itab_hash_fn)(const void *ctx, uint32_t idx);

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30; x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27; x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static uint64_t hash_name(const char *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;           /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)p[i]) * 0x100000001b3ull;
    return mix64(h);
}

static uint64_t hash_part(uint32_t topic, int32_t partition)
{
    return mix64(((uint64_t)topic << 32) | (uint32_t)partition);
}

static int64_t itab_find(const kw__itab_t *t, uint64_t h, itab_eq_fn eq,
                         const void *ctx, const void *key)
{
    if (t->slots == NULL)
        return -1;
    for (size_t i = h & t->mask;; i = (i + 1) & t->mask) {
        uint32_t s = t->slots[i];
        if (s == 0)
            return -1;
        if (eq(ctx, s - 1, key))
            return s - 1;
    }
}

static void itab_put(uint32_t *slots, size_t mask, uint64_t h, uint32_t idx)
{
    size_t i = h & mask;
    while (slots[i] != 0)
        i = (i + 1) & mask;
    slots[i] = idx + 1;
}

/* Make room for `want` entries at a load of at most one half. */
static kw_err_t itab_reserve(kw__itab_t *t, size_t want, itab_hash_fn hash, const void *ctx)
{
    size_t n = t->slots ? t->mask + 1 : 0, nn = n ? n : 16;
    uint32_t *s;

    if (want <= n / 2)
        return KW_OK;
    while (want > nn / 2)
        nn *= 2;
    s = calloc(nn, sizeof *s);
    if (s == NULL)
        return KW_ENOMEM;
    for (size_t i = 0; i < n; i++)
        if (t->slots[i] != 0)
            itab_put(s, nn - 1, hash(ctx, t->slots[i] - 1), t->slots[i] - 1);
    free(t->slots);
    t->slots = s;
    t->mask = nn - 1;
    return KW_OK;
}

static void itab_insert(kw__itab_t *t, uint64_t h, uint32_t idx)
{
    itab_put(t->slots, t->mask, h, idx);
    t->count++;
}

static void itab_clear(kw__itab_t *t)
{
    if (t->slots)
        memset(t->slots, 0, (t->mask + 1) * sizeof *t->slots);
    t->count = 0;
}

static void itab_free(kw__itab_t *t)
{
    free(t->slots);
    memset(t, 0, sizeof *t);
}

/* Keys: a name (bytes + length) in a table of NUL-terminated names, and a
 * (topic index, partition) in a table of ranges. */
typedef struct name_key { const char *name; size_t len; } name_key_t;
typedef struct part_key { uint32_t topic; int32_t partition; } part_key_t;

typedef struct names_ctx { char *const *names; const size_t *lens; } names_ctx_t;

static int names_eq(const void *ctx, uint32_t idx, const void *key)
{
    const names_ctx_t *c = ctx;
    const name_key_t *k = key;
    return c->lens[idx] == k->len && memcmp(c->names[idx], k->name, k->len) == 0;
}

static uint64_t names_hash(const void *ctx, uint32_t idx)
{
    const names_ctx_t *c = ctx;
    return hash_name(c->names[idx], c->lens[idx]);
}

static int brange_eq(const void *ctx, uint32_t idx, const void *key)
{
    const kw__brange_t *r = (const kw__brange_t *)ctx + idx;
    const part_key_t *k = key;
    return r->topic == k->topic && r->partition == k->partition;
}

static uint64_t brange_hash(const void *ctx, uint32_t idx)
{
    const kw__brange_t *r = (const kw__brange_t *)ctx + idx;
    return hash_part(r->topic, r->partition);
}

/* ---- Builder ---- */

void kw__builder_init(kw__builder_t *b)
{
    memset(b, 0, sizeof *b);
    b->last_range = UINT32_MAX;
}

static void builder_free_topics(kw__builder_t *b)
{
    for (uint32_t i = 0; i < b->ntopics; i++)
        free(b->topics[i]);
    b->ntopics = 0;
    b->topics_bytes = 0;
}

void kw__builder_free(kw__builder_t *b)
{
    builder_free_topics(b);
    free(b->recs);
    free(b->topics);
    free(b->topic_lens);
    free(b->ranges);
    itab_free(&b->topic_tab);
    itab_free(&b->range_tab);
    kw__builder_init(b);
}

kw_err_t kw__record_check(const kw_record_t *rec, uint64_t *size,
                          char *errstr, size_t errlen)
{
    const uint64_t limit = (uint64_t)1 << 62;
    uint64_t sz = KW__BLOCK_REC_MIN;
    size_t tl;

    if (rec == NULL)
        return kw_seterr(errstr, errlen, KW_EINVAL, "record is NULL");
    if (rec->topic == NULL)
        return kw_seterr(errstr, errlen, KW_EINVAL, "record has no topic");
    tl = strnlen(rec->topic, KW_BLOCK_MAX_TOPIC_LEN + 1);
    if (tl == 0 || tl > KW_BLOCK_MAX_TOPIC_LEN)
        return kw_seterr(errstr, errlen, KW_EINVAL,
                         "topic name must be 1..%u bytes", KW_BLOCK_MAX_TOPIC_LEN);
    if (rec->partition < 0)
        return kw_seterr(errstr, errlen, KW_EINVAL, "%s: negative partition %" PRId32,
                         rec->topic, rec->partition);
    if (rec->offset < 0 || rec->offset == INT64_MAX)
        return kw_seterr(errstr, errlen, KW_EINVAL, "%s [%" PRId32 "]: offset %" PRId64
                         " out of range",
                         rec->topic, rec->partition, rec->offset);
    if ((unsigned)rec->tstype > KW_TS_LOG_APPEND)
        return kw_seterr(errstr, errlen, KW_EINVAL, "%s [%" PRId32 "] @%" PRId64
                         ": unknown timestamp type %d", rec->topic, rec->partition,
                         rec->offset, (int)rec->tstype);
    if (rec->key != NULL) {
        if (rec->key_len > KW_BLOCK_MAX_FIELD)
            return kw_seterr(errstr, errlen, KW_EINVAL, "key of %zu bytes is too long",
                             rec->key_len);
        sz += rec->key_len;
    }
    if (rec->value != NULL) {
        if (rec->value_len > KW_BLOCK_MAX_FIELD)
            return kw_seterr(errstr, errlen, KW_EINVAL, "value of %zu bytes is too long",
                             rec->value_len);
        sz += rec->value_len;
    }
    if (rec->header_count > 0 && rec->headers == NULL)
        return kw_seterr(errstr, errlen, KW_EINVAL, "header_count %zu but no headers",
                         rec->header_count);
    if (rec->header_count > UINT32_MAX)
        return kw_seterr(errstr, errlen, KW_EINVAL, "too many headers (%zu)",
                         rec->header_count);
    for (size_t i = 0; i < rec->header_count; i++) {
        const kw_record_header_t *h = &rec->headers[i];
        if (h->name == NULL)
            return kw_seterr(errstr, errlen, KW_EINVAL, "header %zu has no name", i);
        if (h->name_len > KW_BLOCK_MAX_FIELD ||
            (h->value != NULL && h->value_len > KW_BLOCK_MAX_FIELD))
            return kw_seterr(errstr, errlen, KW_EINVAL, "header %zu is too long", i);
        sz += KW__BLOCK_HDR_MIN + h->name_len + (h->value ? h->value_len : 0);
        if (sz > limit)
            return kw_seterr(errstr, errlen, KW_EINVAL, "record is too large");
    }
    if (sz > limit || sz > SIZE_MAX / 4)
        return kw_seterr(errstr, errlen, KW_EINVAL, "record is too large");
    *size = sz;
    return KW_OK;
}

static int64_t builder_topic_find(const kw__builder_t *b, const char *topic, size_t tl)
{
    names_ctx_t c = { b->topics, b->topic_lens };
    name_key_t k = { topic, tl };
    return itab_find(&b->topic_tab, hash_name(topic, tl), names_eq, &c, &k);
}

int kw__builder_lookup(kw__builder_t *b, const kw_record_t *rec,
                       uint32_t *range, uint64_t *extra)
{
    size_t tl;
    int64_t t, r;

    *extra = 0;
    if (b->last_range != UINT32_MAX) {
        const kw__brange_t *lr = &b->ranges[b->last_range];
        if (lr->partition == rec->partition && strcmp(b->topics[lr->topic], rec->topic) == 0) {
            *range = b->last_range;
            return 1;
        }
    }
    tl = strlen(rec->topic);
    t = builder_topic_find(b, rec->topic, tl);
    if (t >= 0) {
        part_key_t k = { (uint32_t)t, rec->partition };
        r = itab_find(&b->range_tab, hash_part(k.topic, k.partition), brange_eq, b->ranges, &k);
        if (r >= 0) {
            *range = (uint32_t)r;
            b->last_range = (uint32_t)r;
            return 1;
        }
    }
    *extra = KW__BLOCK_RANGE_SIZE + (t >= 0 ? 0 : 2 + tl);
    return 0;
}

int64_t kw__builder_range_last(const kw__builder_t *b, uint32_t r)
{
    return b->ranges[r].last;
}

uint64_t kw__builder_size(const kw__builder_t *b)
{
    return KW__BLOCK_HDR_SIZE + b->topics_bytes +
           (uint64_t)b->nranges * KW__BLOCK_RANGE_SIZE + b->recs_len;
}

static uint8_t *put_nullable(uint8_t *p, const void *data, size_t len)
{
    if (data == NULL) {
        kw_put32(p, KW__BLOCK_NULL_LEN);
        return p + 4;
    }
    kw_put32(p, (uint32_t)len);
    if (len > 0)
        memcpy(p + 4, data, len);
    return p + 4 + len;
}

/* FORMAT.md, "Record", field by field. */
static void encode_record(uint8_t *p, const kw_record_t *rec, uint32_t topic)
{
    kw_put32(p + 0, topic);
    kw_put32(p + 4, (uint32_t)rec->partition);
    kw_put64(p + 8, (uint64_t)rec->offset);
    p[16] = (uint8_t)rec->tstype;
    kw_put64(p + 17, (uint64_t)rec->timestamp);
    p = put_nullable(p + 25, rec->key, rec->key_len);
    p = put_nullable(p, rec->value, rec->value_len);
    kw_put32(p, (uint32_t)rec->header_count);
    p += 4;
    for (size_t i = 0; i < rec->header_count; i++) {
        const kw_record_header_t *h = &rec->headers[i];
        kw_put32(p, (uint32_t)h->name_len);
        if (h->name_len > 0)
            memcpy(p + 4, h->name, h->name_len);
        p = put_nullable(p + 4 + h->name_len, h->value, h->value_len);
    }
}

static kw_err_t grow(void **arr, uint32_t *cap, uint32_t want, size_t elem)
{
    uint32_t nc;
    void *n;

    if (want <= *cap)
        return KW_OK;
    nc = *cap ? *cap : 8;
    while (nc < want)
        nc = nc > UINT32_MAX / 2 ? UINT32_MAX : nc * 2;
    n = realloc(*arr, (size_t)nc * elem);
    if (n == NULL)
        return KW_ENOMEM;
    *arr = n;
    *cap = nc;
    return KW_OK;
}

kw_err_t kw__builder_add(kw__builder_t *b, const kw_record_t *rec, uint64_t size,
                         char *errstr, size_t errlen)
{
    uint32_t r = 0, tcap;
    uint64_t extra;
    int64_t t = -1;
    size_t tl = 0;
    char *name = NULL;
    int found = kw__builder_lookup(b, rec, &r, &extra);

    if (b->nrecords == UINT32_MAX)
        return kw_seterr(errstr, errlen, KW_EINVAL, "block is full (%" PRIu32 " records)",
                         b->nrecords);
    if (found && rec->offset <= b->ranges[r].last)
        return kw_seterr(errstr, errlen, KW_EINVAL,
                         "%s [%" PRId32 "]: offset %" PRId64 " does not follow %" PRId64,
                         rec->topic, rec->partition, rec->offset, b->ranges[r].last);

    /* Reserve everything first, so that KW_ENOMEM leaves b as it was. */
    if (size > SIZE_MAX - b->recs_len)
        return KW_ENOMEM;
    if (b->recs_len + size > b->recs_cap) {
        size_t nc = b->recs_cap ? b->recs_cap : 4096;
        uint8_t *n;
        while (nc < b->recs_len + size)
            nc = nc > SIZE_MAX / 2 ? b->recs_len + size : nc * 2;
        n = realloc(b->recs, nc);
        if (n == NULL)
            return KW_ENOMEM;
        b->recs = n;
        b->recs_cap = nc;
    }
    if (!found) {
        tl = strlen(rec->topic);
        t = builder_topic_find(b, rec->topic, tl);
        if (t < 0) {
            names_ctx_t c = { b->topics, b->topic_lens };
            tcap = b->topics_cap;
            if (grow((void **)&b->topics, &tcap, b->ntopics + 1, sizeof *b->topics) != KW_OK)
                return KW_ENOMEM;
            tcap = b->topics_cap;
            if (grow((void **)&b->topic_lens, &tcap, b->ntopics + 1, sizeof *b->topic_lens) != KW_OK)
                return KW_ENOMEM;
            b->topics_cap = tcap;   /* both arrays hold at least tcap entries now */
            c.names = b->topics;
            c.lens = b->topic_lens;
            if (itab_reserve(&b->topic_tab, b->ntopics + 1, names_hash, &c) != KW_OK)
                return KW_ENOMEM;
        }
        if (grow((void **)&b->ranges, &b->ranges_cap, b->nranges + 1, sizeof *b->ranges) != KW_OK ||
            itab_reserve(&b->range_tab, b->nranges + 1, brange_hash, b->ranges) != KW_OK)
            return KW_ENOMEM;
        if (t < 0) {
            name = malloc(tl + 1);
            if (name == NULL)
                return KW_ENOMEM;
            memcpy(name, rec->topic, tl + 1);
        }
    }

    /* Commit. */
    if (!found) {
        if (t < 0) {
            t = b->ntopics++;
            b->topics[t] = name;
            b->topic_lens[t] = tl;
            b->topics_bytes += 2 + tl;
            itab_insert(&b->topic_tab, hash_name(name, tl), (uint32_t)t);
        }
        r = b->nranges++;
        b->ranges[r].topic = (uint32_t)t;
        b->ranges[r].partition = rec->partition;
        b->ranges[r].from = rec->offset;
        b->ranges[r].records = 0;
        itab_insert(&b->range_tab, hash_part((uint32_t)t, rec->partition), r);
    }
    b->ranges[r].last = rec->offset;
    b->ranges[r].records++;
    b->last_range = r;
    encode_record(b->recs + b->recs_len, rec, b->ranges[r].topic);
    b->recs_len += size;
    b->nrecords++;
    return KW_OK;
}

static void builder_reset(kw__builder_t *b)
{
    builder_free_topics(b);
    itab_clear(&b->topic_tab);
    itab_clear(&b->range_tab);
    b->nranges = 0;
    b->nrecords = 0;
    b->recs_len = 0;
    b->last_range = UINT32_MAX;
    if (b->recs_cap > (8u << 20)) {     /* do not keep a huge block's buffer */
        free(b->recs);
        b->recs = NULL;
        b->recs_cap = 0;
    }
}

kw_err_t kw__builder_finish(kw__builder_t *b, const kw_block_meta_t *meta,
                            kw_block_t **block)
{
    uint64_t total = kw__builder_size(b);
    size_t names = 0, off;
    kw_block_t *blk = NULL;
    uint8_t *p;
    char *tm;

    if (b->nrecords == 0)
        return KW_EINVAL;
    if (total > SIZE_MAX)
        return KW_ENOMEM;
    for (uint32_t i = 0; i < b->ntopics; i++)
        names += b->topic_lens[i] + 1;
    blk = calloc(1, sizeof *blk);
    if (blk == NULL)
        goto fail;
    blk->owned = malloc((size_t)total);
    blk->topic_mem = malloc(names);
    blk->topics = malloc(b->ntopics * sizeof *blk->topics);
    blk->ranges = malloc(b->nranges * sizeof *blk->ranges);
    if (!blk->owned || !blk->topic_mem || !blk->topics || !blk->ranges)
        goto fail;
    blk->data = blk->owned;
    blk->len = (size_t)total;
    blk->meta = *meta;
    blk->nrecords = b->nrecords;
    blk->ntopics = b->ntopics;
    blk->nranges = b->nranges;

    /* Header, FORMAT.md field by field. */
    p = blk->owned;
    kw_put32(p + 0, KW__BLOCK_MAGIC);
    kw_put16(p + 4, KW__BLOCK_VERSION);
    kw_put16(p + 6, 0);
    kw_put32(p + 8, meta->receiver_id);
    kw_put32(p + 12, b->nrecords);
    kw_put64(p + 16, meta->seq);
    kw_put64(p + 24, (uint64_t)meta->created_ms);
    kw_put32(p + 32, b->ntopics);
    kw_put32(p + 36, b->nranges);
    off = KW__BLOCK_HDR_SIZE;

    /* Topic table. */
    tm = blk->topic_mem;
    for (uint32_t i = 0; i < b->ntopics; i++) {
        size_t tl = b->topic_lens[i];
        kw_put16(p + off, (uint16_t)tl);
        memcpy(p + off + 2, b->topics[i], tl);
        off += 2 + tl;
        memcpy(tm, b->topics[i], tl + 1);
        blk->topics[i] = tm;
        tm += tl + 1;
    }

    /* Range table. */
    for (uint32_t i = 0; i < b->nranges; i++) {
        const kw__brange_t *r = &b->ranges[i];
        kw_put32(p + off, r->topic);
        kw_put32(p + off + 4, (uint32_t)r->partition);
        kw_put64(p + off + 8, (uint64_t)r->from);
        kw_put64(p + off + 16, (uint64_t)(r->last + 1));
        off += KW__BLOCK_RANGE_SIZE;
        blk->ranges[i].topic = blk->topics[r->topic];
        blk->ranges[i].partition = r->partition;
        blk->ranges[i].from_offset = r->from;
        blk->ranges[i].until_offset = r->last + 1;
        blk->ranges[i].records = r->records;
    }

    /* Records. */
    blk->records_off = off;
    memcpy(p + off, b->recs, b->recs_len);

    builder_reset(b);
    *block = blk;
    return KW_OK;

fail:
    kw_block_destroy(blk);
    return KW_ENOMEM;
}

/* ---- Encode ---- */

kw_err_t kw_block_encode(const kw_block_meta_t *meta, const kw_record_t *recs,
                         size_t n, kw_block_t **block, char *errstr, size_t errlen)
{
    kw__builder_t b;
    kw_err_t err = KW_OK;
    uint64_t size;

    if (meta == NULL || block == NULL || (recs == NULL && n > 0))
        return kw_seterr(errstr, errlen, KW_EINVAL, "kw_block_encode: NULL argument");
    if (n == 0 || n > UINT32_MAX)
        return kw_seterr(errstr, errlen, KW_EINVAL,
                         "a block holds 1..%" PRIu32 " records, not %zu", UINT32_MAX, n);
    kw__builder_init(&b);
    for (size_t i = 0; i < n; i++) {
        err = kw__record_check(&recs[i], &size, errstr, errlen);
        if (err == KW_OK)
            err = kw__builder_add(&b, &recs[i], size, errstr, errlen);
        if (err != KW_OK) {
            if (err == KW_ENOMEM)
                kw_seterr(errstr, errlen, err, "out of memory encoding record %zu", i);
            else if (errstr != NULL && errlen > 0) {
                char tmp[256];
                snprintf(tmp, sizeof tmp, "%s", errstr);
                kw_seterr(errstr, errlen, err, "record %zu: %s", i, tmp);
            }
            goto cleanup;
        }
    }
    err = kw__builder_finish(&b, meta, block);
    if (err != KW_OK)
        kw_seterr(errstr, errlen, err, "out of memory encoding a block");
cleanup:
    kw__builder_free(&b);
    return err;
}

/* ---- Decode ---- */

/* A cursor over data[0..len) that never reads past len. */
typedef struct rd {
    const uint8_t *p;
    size_t         len;
    size_t         off;
} rd_t;

static size_t rd_left(const rd_t *r) { return r->len - r->off; }

static int rd_bytes(rd_t *r, size_t n, const uint8_t **out)
{
    if (n > rd_left(r))
        return -1;
    *out = r->p + r->off;
    r->off += n;
    return 0;
}

static int rd_u8(rd_t *r, uint8_t *v)
{
    const uint8_t *q;
    if (rd_bytes(r, 1, &q))
        return -1;
    *v = q[0];
    return 0;
}

static int rd_u16(rd_t *r, uint16_t *v)
{
    const uint8_t *q;
    if (rd_bytes(r, 2, &q))
        return -1;
    *v = kw_get16(q);
    return 0;
}

static int rd_u32(rd_t *r, uint32_t *v)
{
    const uint8_t *q;
    if (rd_bytes(r, 4, &q))
        return -1;
    *v = kw_get32(q);
    return 0;
}

static int rd_u64(rd_t *r, uint64_t *v)
{
    const uint8_t *q;
    if (rd_bytes(r, 8, &q))
        return -1;
    *v = kw_get64(q);
    return 0;
}

/* A length-prefixed field whose length 0xFFFFFFFF means null. */
static int rd_nullable(rd_t *r, const void **data, size_t *len)
{
    uint32_t n;
    const uint8_t *q;

    if (rd_u32(r, &n))
        return -1;
    if (n == KW__BLOCK_NULL_LEN) {
        *data = NULL;
        *len = 0;
        return 0;
    }
    if (rd_bytes(r, n, &q))
        return -1;
    *data = q;
    *len = n;
    return 0;
}

#define CORRUPT(r, ...) corrupt(errstr, errlen, (r)->off, __VA_ARGS__)

static kw_err_t corrupt(char *errstr, size_t errlen, size_t off, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static kw_err_t corrupt(char *errstr, size_t errlen, size_t off, const char *fmt, ...)
{
    char what[200];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return kw_seterr(errstr, errlen, KW_ECORRUPT, "corrupt block: %s (byte %zu)", what, off);
}

/*
 * One record (FORMAT.md, "Record") at r's position. *topic gets the topic
 * index (checked < ntopics). With hdrs non-NULL the headers are stored in
 * *hdrs (grown as needed) and rec->headers points there; otherwise they are
 * only checked and skipped. rec->topic is left to the caller.
 */
static kw_err_t parse_record(rd_t *r, uint32_t index, uint32_t ntopics, kw_record_t *rec,
                             uint32_t *topic, kw_record_header_t **hdrs, size_t *hdr_cap,
                             char *errstr, size_t errlen)
{
    uint32_t t = 0, part = 0, nh = 0;
    uint64_t off = 0, ts = 0;
    uint8_t tstype = 0;

    if (rd_left(r) < KW__BLOCK_REC_MIN)
        return CORRUPT(r, "record %" PRIu32 ": %zu bytes left, a record needs %u",
                       index, rd_left(r), KW__BLOCK_REC_MIN);
    rd_u32(r, &t);
    if (t >= ntopics)
        return CORRUPT(r, "record %" PRIu32 ": topic_index %" PRIu32 " >= topic_count %" PRIu32,
                       index, t, ntopics);
    rd_u32(r, &part);
    rd_u64(r, &off);
    rd_u8(r, &tstype);
    if (tstype > KW_TS_LOG_APPEND)
        return CORRUPT(r, "record %" PRIu32 ": tstype %u", index, tstype);
    rd_u64(r, &ts);
    if (rd_nullable(r, &rec->key, &rec->key_len))
        return CORRUPT(r, "record %" PRIu32 ": key runs past the end", index);
    if (rd_nullable(r, &rec->value, &rec->value_len))
        return CORRUPT(r, "record %" PRIu32 ": value runs past the end", index);
    if (rd_u32(r, &nh))
        return CORRUPT(r, "record %" PRIu32 ": header_count runs past the end", index);
    if (nh > rd_left(r) / KW__BLOCK_HDR_MIN)
        return CORRUPT(r, "record %" PRIu32 ": header_count %" PRIu32 " cannot fit in %zu bytes",
                       index, nh, rd_left(r));
    if (hdrs != NULL && nh > *hdr_cap) {
        size_t nc = *hdr_cap ? *hdr_cap : 8;
        kw_record_header_t *n;
        while (nc < nh)
            nc *= 2;
        n = realloc(*hdrs, nc * sizeof *n);
        if (n == NULL)
            return KW_ENOMEM;
        *hdrs = n;
        *hdr_cap = nc;
    }
    for (uint32_t i = 0; i < nh; i++) {
        kw_record_header_t h;
        uint32_t nl;
        const uint8_t *name;

        if (rd_u32(r, &nl) || nl == KW__BLOCK_NULL_LEN || rd_bytes(r, nl, &name))
            return CORRUPT(r, "record %" PRIu32 ": header %" PRIu32 ": bad name length", index, i);
        h.name = (const char *)name;
        h.name_len = nl;
        if (rd_nullable(r, &h.value, &h.value_len))
            return CORRUPT(r, "record %" PRIu32 ": header %" PRIu32 ": value runs past the end",
                           index, i);
        if (hdrs != NULL)
            (*hdrs)[i] = h;
    }
    *topic = t;
    rec->partition = (int32_t)part;
    rec->offset = (int64_t)off;
    rec->tstype = (kw_tstype_t)tstype;
    rec->timestamp = (int64_t)ts;
    rec->headers = (hdrs != NULL && nh > 0) ? *hdrs : NULL;
    rec->header_count = nh;
    return KW_OK;
}

/* Per-range state while checking the records. */
typedef struct drange {
    uint32_t topic;
    int32_t  partition;
    int64_t  from, until, last;
    uint32_t records;
} drange_t;

static int drange_eq(const void *ctx, uint32_t idx, const void *key)
{
    const drange_t *r = (const drange_t *)ctx + idx;
    const part_key_t *k = key;
    return r->topic == k->topic && r->partition == k->partition;
}

static uint64_t drange_hash(const void *ctx, uint32_t idx)
{
    const drange_t *r = (const drange_t *)ctx + idx;
    return hash_part(r->topic, r->partition);
}

/* Check blk->data by FORMAT.md's decoding rules and fill the rest of blk. */
static kw_err_t decode_into(kw_block_t *blk, char *errstr, size_t errlen)
{
    rd_t r = { blk->data, blk->len, 0 }, r2;
    uint32_t magic, nrec, ntopics, nranges, next_topic = 0, next_range = 0;
    uint16_t version, flags;
    uint64_t seq, created;
    size_t names = 0, *lens = NULL;
    drange_t *dr = NULL;
    kw__itab_t tab = { 0 };
    kw_err_t err = KW_OK;
    char *tm;

    if (rd_left(&r) < KW__BLOCK_HDR_SIZE)
        return CORRUPT(&r, "%zu bytes, the header alone needs %u", blk->len, KW__BLOCK_HDR_SIZE);
    rd_u32(&r, &magic);
    rd_u16(&r, &version);
    rd_u16(&r, &flags);
    rd_u32(&r, &blk->meta.receiver_id);
    rd_u32(&r, &nrec);
    rd_u64(&r, &seq);
    rd_u64(&r, &created);
    rd_u32(&r, &ntopics);
    rd_u32(&r, &nranges);
    blk->meta.seq = seq;
    blk->meta.created_ms = (int64_t)created;
    if (magic != KW__BLOCK_MAGIC)
        return corrupt(errstr, errlen, 0, "bad magic 0x%08" PRIx32, magic);
    if (version != KW__BLOCK_VERSION)
        return corrupt(errstr, errlen, 4, "unknown version %u", version);
    if (flags != 0)
        return corrupt(errstr, errlen, 6, "unknown flags 0x%04x", flags);
    if (nrec == 0 || ntopics == 0 || nranges == 0)
        return corrupt(errstr, errlen, 12, "empty block (%" PRIu32 " records, %" PRIu32
                       " topics, %" PRIu32 " ranges)", nrec, ntopics, nranges);
    if (ntopics > rd_left(&r) / KW__BLOCK_TOPIC_MIN || nranges > rd_left(&r) / KW__BLOCK_RANGE_SIZE ||
        nrec > rd_left(&r) / KW__BLOCK_REC_MIN)
        return corrupt(errstr, errlen, 12, "counts (%" PRIu32 " records, %" PRIu32 " topics, %"
                       PRIu32 " ranges) cannot fit in %zu bytes", nrec, ntopics, nranges,
                       rd_left(&r));
    if (nranges > nrec || ntopics > nranges)
        return corrupt(errstr, errlen, 12, "%" PRIu32 " records, %" PRIu32 " ranges and %" PRIu32
                       " topics are inconsistent", nrec, nranges, ntopics);
    blk->nrecords = nrec;
    blk->ntopics = ntopics;
    blk->nranges = nranges;

    /* Topic table: first the lengths, so the names can be copied into one
     * allocation bounded by the input. */
    r2 = r;
    for (uint32_t i = 0; i < ntopics; i++) {
        uint16_t tl;
        const uint8_t *name;
        if (rd_u16(&r, &tl) || tl == 0 || tl > KW_BLOCK_MAX_TOPIC_LEN || rd_bytes(&r, tl, &name))
            return CORRUPT(&r, "topic %" PRIu32 ": bad name length", i);
        if (memchr(name, 0, tl) != NULL)
            return CORRUPT(&r, "topic %" PRIu32 ": NUL byte in the name", i);
        names += (size_t)tl + 1;
    }
    blk->topic_mem = malloc(names);
    blk->topics = malloc(ntopics * sizeof *blk->topics);
    lens = malloc(ntopics * sizeof *lens);
    if (!blk->topic_mem || !blk->topics || !lens) {
        err = KW_ENOMEM;
        goto cleanup;
    }
    tm = blk->topic_mem;
    for (uint32_t i = 0; i < ntopics; i++) {
        uint16_t tl = 0;
        const uint8_t *name = NULL;
        names_ctx_t c = { (char *const *)blk->topics, lens };
        name_key_t k;
        rd_u16(&r2, &tl);
        rd_bytes(&r2, tl, &name);
        memcpy(tm, name, tl);
        tm[tl] = '\0';
        k.name = tm;
        k.len = tl;
        if (itab_reserve(&tab, i + 1, names_hash, &c) != KW_OK) {
            err = KW_ENOMEM;
            goto cleanup;
        }
        if (itab_find(&tab, hash_name(tm, tl), names_eq, &c, &k) >= 0) {
            err = CORRUPT(&r2, "topic %" PRIu32 ": '%s' appears twice", i, tm);
            goto cleanup;
        }
        blk->topics[i] = tm;
        lens[i] = tl;
        itab_insert(&tab, hash_name(tm, tl), i);
        tm += tl + 1;
    }
    itab_free(&tab);

    /* Range table. */
    dr = malloc(nranges * sizeof *dr);
    blk->ranges = malloc(nranges * sizeof *blk->ranges);
    if (!dr || !blk->ranges || itab_reserve(&tab, nranges, drange_hash, dr) != KW_OK) {
        err = KW_ENOMEM;
        goto cleanup;
    }
    for (uint32_t i = 0; i < nranges; i++) {
        uint32_t t, part;
        uint64_t from, until;
        part_key_t k;

        if (rd_u32(&r, &t) || rd_u32(&r, &part) || rd_u64(&r, &from) || rd_u64(&r, &until)) {
            err = CORRUPT(&r, "range %" PRIu32 " runs past the end", i);
            goto cleanup;
        }
        if (t >= ntopics || t > next_topic) {
            err = CORRUPT(&r, "range %" PRIu32 ": topic_index %" PRIu32 " (expected <= %" PRIu32 ")",
                          i, t, next_topic);
            goto cleanup;
        }
        if (t == next_topic)
            next_topic++;
        if ((int32_t)part < 0 || (int64_t)from < 0 || (int64_t)until <= (int64_t)from) {
            err = CORRUPT(&r, "range %" PRIu32 ": partition %" PRId32 " [%" PRId64 ", %" PRId64 ")",
                          i, (int32_t)part, (int64_t)from, (int64_t)until);
            goto cleanup;
        }
        k.topic = t;
        k.partition = (int32_t)part;
        if (itab_find(&tab, hash_part(t, k.partition), drange_eq, dr, &k) >= 0) {
            err = CORRUPT(&r, "range %" PRIu32 ": %s [%" PRId32 "] appears twice",
                          i, blk->topics[t], k.partition);
            goto cleanup;
        }
        dr[i].topic = t;
        dr[i].partition = k.partition;
        dr[i].from = (int64_t)from;
        dr[i].until = (int64_t)until;
        dr[i].last = -1;
        dr[i].records = 0;
        itab_insert(&tab, hash_part(t, k.partition), i);
    }
    if (next_topic != ntopics) {
        err = CORRUPT(&r, "topic %" PRIu32 " has no range", next_topic);
        goto cleanup;
    }

    /* Records. */
    blk->records_off = r.off;
    for (uint32_t i = 0; i < nrec; i++) {
        kw_record_t rec;
        uint32_t t;
        part_key_t k;
        int64_t ri;
        drange_t *d;
        size_t at = r.off;

        err = parse_record(&r, i, ntopics, &rec, &t, NULL, NULL, errstr, errlen);
        if (err != KW_OK)
            goto cleanup;
        k.topic = t;
        k.partition = rec.partition;
        ri = itab_find(&tab, hash_part(t, rec.partition), drange_eq, dr, &k);
        if (ri < 0) {
            err = corrupt(errstr, errlen, at, "record %" PRIu32 ": %s [%" PRId32 "] has no range",
                          i, blk->topics[t], rec.partition);
            goto cleanup;
        }
        d = &dr[ri];
        if (d->records == 0) {
            if ((uint32_t)ri != next_range || rec.offset != d->from) {
                err = corrupt(errstr, errlen, at, "record %" PRIu32 ": first of range %" PRId64
                              " (offset %" PRId64 "), expected range %" PRIu32 " starting at %"
                              PRId64, i, ri, rec.offset, next_range, d->from);
                goto cleanup;
            }
            next_range++;
        } else if (rec.offset <= d->last) {
            err = corrupt(errstr, errlen, at, "record %" PRIu32 ": offset %" PRId64
                          " does not follow %" PRId64, i, rec.offset, d->last);
            goto cleanup;
        }
        if (rec.offset >= d->until) {
            err = corrupt(errstr, errlen, at, "record %" PRIu32 ": offset %" PRId64
                          " is not below until_offset %" PRId64, i, rec.offset, d->until);
            goto cleanup;
        }
        d->last = rec.offset;
        d->records++;
    }
    if (rd_left(&r) != 0) {
        err = CORRUPT(&r, "%zu trailing bytes", rd_left(&r));
        goto cleanup;
    }
    for (uint32_t i = 0; i < nranges; i++) {
        if (dr[i].records == 0 || dr[i].last != dr[i].until - 1) {
            err = CORRUPT(&r, "range %" PRIu32 " [%" PRId64 ", %" PRId64 ") ends at record offset %"
                          PRId64, i, dr[i].from, dr[i].until, dr[i].last);
            goto cleanup;
        }
        blk->ranges[i].topic = blk->topics[dr[i].topic];
        blk->ranges[i].partition = dr[i].partition;
        blk->ranges[i].from_offset = dr[i].from;
        blk->ranges[i].until_offset = dr[i].until;
        blk->ranges[i].records = dr[i].records;
    }

cleanup:
    if (err == KW_ENOMEM)
        kw_seterr(errstr, errlen, err, "out of memory decoding a block");
    itab_free(&tab);
    free(lens);
    free(dr);
    return err;
}

kw_err_t kw_block_decode(const void *data, size_t len, unsigned flags,
                         kw_block_t **block, char *errstr, size_t errlen)
{
    kw_block_t *blk;
    kw_err_t err;

    if (block == NULL || (data == NULL && len > 0) ||
        (flags & ~(KW_BLOCK_BORROW | KW_BLOCK_TAKE)) != 0 ||
        flags == (KW_BLOCK_BORROW | KW_BLOCK_TAKE))
        return kw_seterr(errstr, errlen, KW_EINVAL, "kw_block_decode: bad arguments");
    if (len < KW__BLOCK_HDR_SIZE)
        return corrupt(errstr, errlen, 0, "%zu bytes, the header alone needs %u",
                       len, KW__BLOCK_HDR_SIZE);
    blk = calloc(1, sizeof *blk);
    if (blk == NULL)
        return kw_seterr(errstr, errlen, KW_ENOMEM, "out of memory decoding a block");
    blk->len = len;
    if (flags == 0) {
        blk->owned = malloc(len);
        if (blk->owned == NULL) {
            free(blk);
            return kw_seterr(errstr, errlen, KW_ENOMEM, "out of memory decoding a block");
        }
        memcpy(blk->owned, data, len);
        blk->data = blk->owned;
    } else {
        blk->data = data;
    }
    err = decode_into(blk, errstr, errlen);
    if (err != KW_OK) {
        kw_block_destroy(blk);      /* frees data only if it was our copy */
        return err;
    }
    if (flags & KW_BLOCK_TAKE)
        blk->owned = (uint8_t *)(uintptr_t)data;
    *block = blk;
    return KW_OK;
}

void kw_block_destroy(kw_block_t *block)
{
    if (block == NULL)
        return;
    free(block->owned);
    free(block->topic_mem);
    free(block->topics);
    free(block->ranges);
    free(block);
}

/* ---- Accessors ---- */

const uint8_t *kw_block_data(const kw_block_t *block, size_t *len)
{
    if (len != NULL)
        *len = block->len;
    return block->data;
}

size_t kw_block_size(const kw_block_t *block) { return block->len; }
uint32_t kw_block_receiver_id(const kw_block_t *block) { return block->meta.receiver_id; }
uint64_t kw_block_seq(const kw_block_t *block) { return block->meta.seq; }
int64_t kw_block_created_ms(const kw_block_t *block) { return block->meta.created_ms; }
uint32_t kw_block_record_count(const kw_block_t *block) { return block->nrecords; }
size_t kw_block_range_count(const kw_block_t *block) { return block->nranges; }

const kw_block_range_t *kw_block_range(const kw_block_t *block, size_t i)
{
    return i < block->nranges ? &block->ranges[i] : NULL;
}

const kw_block_range_t *kw_block_range_find(const kw_block_t *block,
                                            const char *topic, int32_t partition)
{
    for (uint32_t i = 0; i < block->nranges; i++)
        if (block->ranges[i].partition == partition && strcmp(block->ranges[i].topic, topic) == 0)
            return &block->ranges[i];
    return NULL;
}

/* ---- Iterator ---- */

kw_err_t kw_block_iter_new(const kw_block_t *block, kw_block_iter_t **it)
{
    kw_block_iter_t *i;

    if (block == NULL || it == NULL)
        return KW_EINVAL;
    i = calloc(1, sizeof *i);
    if (i == NULL)
        return KW_ENOMEM;
    i->block = block;
    i->off = block->records_off;
    *it = i;
    return KW_OK;
}

kw_err_t kw_block_iter_next(kw_block_iter_t *it, kw_record_t *rec)
{
    const kw_block_t *b = it->block;
    rd_t r = { b->data, b->len, it->off };
    uint32_t t;
    kw_err_t err;

    if (it->index >= b->nrecords)
        return KW_EOF;
    /* The block was checked when made; parsing checks again, so data
     * changed behind a borrowed block is refused rather than misread. */
    err = parse_record(&r, it->index, b->ntopics, rec, &t, &it->hdrs, &it->hdr_cap, NULL, 0);
    if (err != KW_OK)
        return err;
    rec->topic = b->topics[t];
    it->off = r.off;
    it->index++;
    return KW_OK;
}

void kw_block_iter_destroy(kw_block_iter_t *it)
{
    if (it == NULL)
        return;
    free(it->hdrs);
    free(it);
}

/* ---- Flat batches ---- */

static kw_err_t flat_push(kw_flat_batch_t *fb, const kw_record_t *rec)
{
    kw_record_t *r;

    if (fb->n == fb->cap) {
        size_t ncap = fb->cap ? fb->cap * 2 : 1024;
        kw_record_t *nr = realloc(fb->recs, ncap * sizeof(*nr));

        if (nr == NULL)
            return KW_ENOMEM;
        fb->recs = nr;
        fb->cap = ncap;
    }
    r = &fb->recs[fb->n];
    *r = *rec;
    if (rec->header_count > 0) {
        kw_record_header_t *h = malloc(rec->header_count * sizeof(*h));
        kw_record_header_t **nh = realloc(fb->hdrs, (fb->nhdrs + 1) * sizeof(*nh));

        if (nh != NULL)
            fb->hdrs = nh;
        if (h == NULL || nh == NULL) {
            free(h);
            return KW_ENOMEM;
        }
        memcpy(h, rec->headers, rec->header_count * sizeof(*h));
        fb->hdrs[fb->nhdrs++] = h;
        r->headers = h;
    }
    fb->n++;
    return KW_OK;
}

kw_err_t kw_flat_batch_add(kw_flat_batch_t *fb, const kw_block_t *block)
{
    kw_block_iter_t *it = NULL;
    kw_record_t r;
    kw_err_t err;

    if ((err = kw_block_iter_new(block, &it)) != KW_OK)
        return err;
    while ((err = kw_block_iter_next(it, &r)) == KW_OK)
        if ((err = flat_push(fb, &r)) != KW_OK)
            break;
    kw_block_iter_destroy(it);
    return err == KW_EOF ? KW_OK : err;
}

void kw_flat_batch_free(kw_flat_batch_t *fb)
{
    for (size_t i = 0; i < fb->nhdrs; i++)
        free(fb->hdrs[i]);
    free(fb->hdrs);
    free(fb->recs);
    memset(fb, 0, sizeof(*fb));
}
