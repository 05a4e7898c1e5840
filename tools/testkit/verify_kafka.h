/*
 * verify_kafka.h -- read a Kafka topic that kwal's Kafka sink wrote, from
 * the beginning of every partition to its end, for kwal-verify --kafka.
 *
 * The sink's output record (sink=kafka:TOPIC) is a copy of a source record:
 * its key and value are the source's, its timestamp the source's
 * (CreateTime), its output partition the source partition modulo the output
 * topic's partition count, and its headers the source's, in order, followed
 * by three more:
 *
 *   kwal.topic      the source topic's name
 *   kwal.partition  the source partition, decimal
 *   kwal.offset     the source offset, decimal
 *
 * Only committed transactions count: the reader is a read_committed
 * consumer. It assigns every partition at the beginning (a random group.id,
 * no subscription, never a commit), and a partition is finished when it
 * reports end of partition (enable.partition.eof): for read_committed that
 * is the last stable offset. Records a partition delivers after that are
 * not read (the partition is paused). The whole read, metadata included,
 * ends by the deadline.
 *
 * For each record read the callback gets a kw_vk_rec_t: the output
 * coordinates, timestamp, key, value, the first header and the source
 * coordinates parsed from the last three headers -- or, in src_err, why
 * they could not be (missing, in another order, unparsable).
 *
 * Nothing here prints or exits (librdkafka's own log lines aside, which go
 * to stderr); errors come back in errstr.
 */
#ifndef KW_VERIFY_KAFKA_H
#define KW_VERIFY_KAFKA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KW_VK_TOPIC_HEADER     "kwal.topic"
#define KW_VK_PARTITION_HEADER "kwal.partition"
#define KW_VK_OFFSET_HEADER    "kwal.offset"
#define KW_VK_TOPIC_MAX        256

typedef enum {
    KW_VK_TS_NONE = 0,      /* the record has no timestamp */
    KW_VK_TS_CREATE,        /* CreateTime */
    KW_VK_TS_LOG_APPEND     /* LogAppendTime */
} kw_vk_tstype_t;

/* One output record; every pointer is valid only during the callback. */
typedef struct {
    int32_t partition;          /* output partition */
    int64_t offset;             /* output offset */
    int32_t partitions;         /* the output topic's partition count */
    int64_t ts;                 /* ms since the epoch; -1 when none */
    kw_vk_tstype_t tstype;
    const void *key;
    size_t klen;
    bool key_null;
    const void *payload;
    size_t plen;
    bool payload_null;
    size_t nheaders;
    const char *first_name;     /* the first header, NULL when none */
    const void *first_value;    /* NULL: a null value */
    size_t first_len;
    const char *src_err;        /* NULL when the source coordinates parse */
    char src_topic[KW_VK_TOPIC_MAX];
    int32_t src_partition;
    int64_t src_offset;
    char src_errbuf[200];       /* where src_err points when it is not constant */
    const void *message;        /* the rd_kafka_message_t itself, for a caller
                                 * that wants more of it (kwal-txn-produce) */
} kw_vk_rec_t;

typedef void (kw_vk_cb_t)(void *opaque, const kw_vk_rec_t *rec);

typedef struct {
    const char *bootstrap;      /* bootstrap.servers */
    const char *topic;
    const char *const *props;   /* "name=value" librdkafka properties, after ours */
    int nprops;
    int64_t timeout_ms;         /* bounds the whole read */
} kw_vk_opts_t;

typedef struct {
    int32_t partitions;         /* the output topic's */
    uint64_t records;           /* handed to the callback */
} kw_vk_result_t;

typedef enum {
    KW_VK_OK = 0,
    KW_VK_NO_TOPIC,             /* the topic does not exist */
    KW_VK_ERROR,                /* a property refused, a fatal Kafka error */
    KW_VK_TIMEOUT               /* errstr names the partitions not finished */
} kw_vk_status_t;

/* Read o->topic as above, calling cb(opaque, rec) for every record in
 * offset order per partition (partitions interleaved). Returns KW_VK_OK
 * with res filled, or another status with errstr filled. Blocks the
 * calling thread; the callback runs on it. */
kw_vk_status_t kw_vk_read(const kw_vk_opts_t *o, kw_vk_cb_t *cb, void *opaque,
                          kw_vk_result_t *res, char *errstr, size_t errstr_size);

#endif /* KW_VERIFY_KAFKA_H */
