/*
 * blockgen_int.h -- private to blockgen/: the block builder that both
 * kw_block_encode() and the generator use, so there is one encoder.
 *
 * A builder holds the records section already encoded (FORMAT.md, "Record"),
 * plus the topic and range tables being formed; finishing writes the header
 * and the tables in front of the records and makes a kw_block_t. One thread.
 */
#ifndef KW_BLOCKGEN_INT_H
#define KW_BLOCKGEN_INT_H

#include <stddef.h>
#include <stdint.h>

#include "blockgen.h"

#define KW__BLOCK_MAGIC      0x3142574Bu   /* "KWB1" */
#define KW__BLOCK_VERSION    1u
#define KW__BLOCK_HDR_SIZE   40u
#define KW__BLOCK_TOPIC_MIN  3u            /* 2-byte length + at least 1 byte */
#define KW__BLOCK_RANGE_SIZE 24u
#define KW__BLOCK_REC_MIN    37u           /* record without key/value/header bytes */
#define KW__BLOCK_HDR_MIN    8u            /* record header entry without bytes */
#define KW__BLOCK_NULL_LEN   0xFFFFFFFFu

/* An index table: open addressing over uint32 slots holding (index + 1),
 * 0 = empty; what an index means, and how to hash and compare it, is the
 * caller's. */
typedef struct kw__itab {
    uint32_t *slots;
    size_t    mask;        /* slots - 1, slots a power of two (0 if none) */
    size_t    count;
} kw__itab_t;

typedef struct kw__brange {
    uint32_t topic;        /* index into the builder's topics */
    int32_t  partition;
    int64_t  from;
    int64_t  last;         /* last offset added */
    uint32_t records;
} kw__brange_t;

typedef struct kw__builder {
    uint8_t      *recs;           /* encoded records section */
    size_t        recs_len, recs_cap;
    uint32_t      nrecords;
    char        **topics;         /* NUL-terminated copies */
    size_t       *topic_lens;
    uint32_t      ntopics, topics_cap;
    uint64_t      topics_bytes;   /* topic table size */
    kw__itab_t    topic_tab;
    kw__brange_t *ranges;
    uint32_t      nranges, ranges_cap;
    kw__itab_t    range_tab;
    uint32_t      last_range;     /* cache of the last hit; UINT32_MAX: none */
} kw__builder_t;

void kw__builder_init(kw__builder_t *b);
void kw__builder_free(kw__builder_t *b);   /* frees everything; b may be reused after init */

/* Check rec against FORMAT.md and compute its encoded record size. KW_EINVAL
 * with errstr naming the field. */
kw_err_t kw__record_check(const kw_record_t *rec, uint64_t *size,
                          char *errstr, size_t errlen);

/* Where rec would go: the range index if its partition has one (return 1),
 * else 0 and *extra = the bytes a new range (and maybe topic) would add. */
int kw__builder_lookup(kw__builder_t *b, const kw_record_t *rec,
                       uint32_t *range, uint64_t *extra);

/* The offset of the last record of range r. */
int64_t kw__builder_range_last(const kw__builder_t *b, uint32_t r);

/* Append a checked rec of encoded size `size`. Its offset must be above its
 * partition's last one (KW_EINVAL otherwise). KW_ENOMEM leaves b unchanged. */
kw_err_t kw__builder_add(kw__builder_t *b, const kw_record_t *rec, uint64_t size,
                         char *errstr, size_t errlen);

/* Encoded size of the block so far. */
uint64_t kw__builder_size(const kw__builder_t *b);

/* Make the block (b must hold at least one record) and empty b for the next
 * one (keeping its buffers). KW_ENOMEM leaves b unchanged. */
kw_err_t kw__builder_finish(kw__builder_t *b, const kw_block_meta_t *meta,
                            kw_block_t **block);

#endif /* KW_BLOCKGEN_INT_H */
