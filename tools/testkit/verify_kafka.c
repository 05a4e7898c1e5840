/*
 * verify_kafka.c -- kwal-verify's Kafka input: one read_committed consumer
 * reads every partition of a topic from the beginning to its end (the
 * record format and the rules: verify_kafka.h).
 *
 * Steps: (1) a consumer with our properties, then the caller's; (2) the
 * topic's partition count from its metadata, retried until the deadline
 * while the topic has no leaders yet (an unknown topic ends the read at
 * once: KW_VK_NO_TOPIC); (3) assign() every partition at
 * RD_KAFKA_OFFSET_BEGINNING; (4) poll until every partition has reported
 * end of partition, handing each record to the callback with its headers
 * parsed; (5) close. Errors that librdkafka reports while polling (a broker
 * away for a while) are kept, not fatal: the deadline bounds the read, and
 * the last of them goes into the timeout's message.
 */
#include "verify_kafka.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#define POLL_MS 200
#define LIST_MAX 20             /* unfinished partitions named in a timeout */

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int remaining_ms(int64_t deadline, int cap)
{
    int64_t left = deadline - now_ms();

    if (left <= 0)
        return 0;
    return left < cap ? (int)left : cap;
}

/* ---------------------------------------------------------- consumer -- */

static bool conf_set(rd_kafka_conf_t *conf, const char *name, const char *value,
                     char *errstr, size_t errstr_size)
{
    char err[512];

    if (rd_kafka_conf_set(conf, name, value, err, sizeof(err)) != RD_KAFKA_CONF_OK) {
        snprintf(errstr, errstr_size, "%s=%s: %s", name, value, err);
        return false;
    }
    return true;
}

/* A "name=value" property from -X. */
static bool conf_set_prop(rd_kafka_conf_t *conf, const char *prop, char *errstr,
                          size_t errstr_size)
{
    const char *eq = strchr(prop, '=');
    char name[256];

    if (eq == NULL || eq == prop || (size_t)(eq - prop) >= sizeof(name)) {
        snprintf(errstr, errstr_size, "-X %s: not NAME=VALUE", prop);
        return false;
    }
    memcpy(name, prop, (size_t)(eq - prop));
    name[eq - prop] = '\0';
    return conf_set(conf, name, eq + 1, errstr, errstr_size);
}

static rd_kafka_t *consumer_new(const kw_vk_opts_t *o, char *errstr, size_t errstr_size)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    uint64_t rnd = 0;
    char group[64], err[512];
    rd_kafka_t *rk;

    /* a group of its own, never joined (assign(), not subscribe()) and
     * never committed to: the read leaves nothing behind */
    if (getrandom(&rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
        rnd = (uint64_t)now_ms();
    snprintf(group, sizeof(group), "kwal-verify-%ld-%016" PRIx64, (long)getpid(), rnd);
    if (!conf_set(conf, "bootstrap.servers", o->bootstrap, errstr, errstr_size) ||
        !conf_set(conf, "group.id", group, errstr, errstr_size) ||
        !conf_set(conf, "client.id", "kwal-verify", errstr, errstr_size) ||
        !conf_set(conf, "isolation.level", "read_committed", errstr, errstr_size) ||
        !conf_set(conf, "enable.auto.commit", "false", errstr, errstr_size) ||
        !conf_set(conf, "enable.auto.offset.store", "false", errstr, errstr_size) ||
        !conf_set(conf, "enable.partition.eof", "true", errstr, errstr_size) ||
        !conf_set(conf, "auto.offset.reset", "earliest", errstr, errstr_size) ||
        !conf_set(conf, "allow.auto.create.topics", "false", errstr, errstr_size))
        goto fail;
    for (int i = 0; i < o->nprops; i++)
        if (!conf_set_prop(conf, o->props[i], errstr, errstr_size))
            goto fail;
    if ((rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err))) == NULL) {
        snprintf(errstr, errstr_size, "cannot create a consumer: %s", err);
        goto fail;
    }
    return rk;   /* conf is owned by rk now */
fail:
    rd_kafka_conf_destroy(conf);
    return NULL;
}

/* The topic's partition count, retried until the deadline while the
 * metadata is incomplete. */
static kw_vk_status_t topic_partitions(rd_kafka_t *rk, const kw_vk_opts_t *o, int64_t deadline,
                                       int32_t *out, char *errstr, size_t errstr_size)
{
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, o->topic, NULL);
    rd_kafka_resp_err_t last = RD_KAFKA_RESP_ERR__TIMED_OUT;
    kw_vk_status_t st = KW_VK_TIMEOUT;

    if (rkt == NULL) {
        snprintf(errstr, errstr_size, "topic %s: %s", o->topic,
                 rd_kafka_err2str(rd_kafka_last_error()));
        return KW_VK_ERROR;
    }
    for (;;) {
        const struct rd_kafka_metadata *md = NULL;
        int wait = remaining_ms(deadline, 5000);
        rd_kafka_resp_err_t err;

        if (wait == 0)
            break;
        err = rd_kafka_metadata(rk, 0, rkt, &md, wait);
        if (err == RD_KAFKA_RESP_ERR_NO_ERROR && md->topic_cnt == 1)
            err = md->topics[0].err;
        if (err == RD_KAFKA_RESP_ERR_NO_ERROR && md->topics[0].partition_cnt > 0) {
            *out = md->topics[0].partition_cnt;
            st = KW_VK_OK;
        } else if (err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) {
            snprintf(errstr, errstr_size, "topic %s does not exist", o->topic);
            st = KW_VK_NO_TOPIC;
        }
        if (md != NULL)
            rd_kafka_metadata_destroy(md);
        if (st != KW_VK_TIMEOUT)
            break;
        if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
            last = err;
        usleep(200 * 1000);
    }
    if (st == KW_VK_TIMEOUT)
        snprintf(errstr, errstr_size, "no metadata for topic %s within %" PRId64 " ms (%s)",
                 o->topic, o->timeout_ms, rd_kafka_err2str(last));
    rd_kafka_topic_destroy(rkt);
    return st;
}

static rd_kafka_resp_err_t assign_all(rd_kafka_t *rk, const char *topic, int32_t n)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(n);
    rd_kafka_resp_err_t err;

    for (int32_t p = 0; p < n; p++)
        rd_kafka_topic_partition_list_add(l, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    err = rd_kafka_assign(rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    return err;
}

static void pause_one(rd_kafka_t *rk, const char *topic, int32_t p)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);

    rd_kafka_topic_partition_list_add(l, topic, p);
    rd_kafka_pause_partitions(rk, l);
    rd_kafka_topic_partition_list_destroy(l);
}

/* ----------------------------------------------------------- records -- */

/* Digits only (no sign, no space), at most max. */
static bool parse_dec(const void *val, size_t len, int64_t max, int64_t *out)
{
    const char *s = val;
    int64_t v = 0;

    if (val == NULL || len == 0 || len > 19)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        if (v > (max - (s[i] - '0')) / 10)
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

/* The header at idx must be name; its value in *val, *len. */
static bool header_at(rd_kafka_headers_t *h, size_t idx, const char *name, const void **val,
                      size_t *len)
{
    const char *got;

    return rd_kafka_header_get_all(h, idx, &got, val, len) == RD_KAFKA_RESP_ERR_NO_ERROR &&
           strcmp(got, name) == 0;
}

/* The source coordinates from the last three headers into r (src_err). */
static void parse_source(rd_kafka_headers_t *h, kw_vk_rec_t *r)
{
    const void *tv, *pv, *ov;
    size_t tl, pl, ol, n = r->nheaders;
    int64_t part, off;

    if (n < 3 || !header_at(h, n - 3, KW_VK_TOPIC_HEADER, &tv, &tl) ||
        !header_at(h, n - 2, KW_VK_PARTITION_HEADER, &pv, &pl) ||
        !header_at(h, n - 1, KW_VK_OFFSET_HEADER, &ov, &ol)) {
        snprintf(r->src_errbuf, sizeof(r->src_errbuf), "its last three headers (of %zu) are "
                 "not " KW_VK_TOPIC_HEADER ", " KW_VK_PARTITION_HEADER ", "
                 KW_VK_OFFSET_HEADER, n);
        r->src_err = r->src_errbuf;
        return;
    }
    if (tv == NULL || tl == 0 || tl >= sizeof(r->src_topic) || memchr(tv, '\0', tl) != NULL) {
        snprintf(r->src_errbuf, sizeof(r->src_errbuf), KW_VK_TOPIC_HEADER " is %s",
                 tv == NULL ? "null" : tl == 0 ? "empty" : "not a topic name");
        r->src_err = r->src_errbuf;
        return;
    }
    if (!parse_dec(pv, pl, INT32_MAX, &part) || !parse_dec(ov, ol, INT64_MAX, &off)) {
        bool bad_part = !parse_dec(pv, pl, INT32_MAX, &part);
        const void *v = bad_part ? pv : ov;
        size_t l = bad_part ? pl : ol;

        snprintf(r->src_errbuf, sizeof(r->src_errbuf), "%s '%.*s' is not a%s number",
                 bad_part ? KW_VK_PARTITION_HEADER : KW_VK_OFFSET_HEADER,
                 v == NULL ? 4 : (int)(l > 40 ? 40 : l), v == NULL ? "null" : (const char *)v,
                 bad_part ? " partition" : "n offset");
        r->src_err = r->src_errbuf;
        return;
    }
    memcpy(r->src_topic, tv, tl);
    r->src_topic[tl] = '\0';
    r->src_partition = (int32_t)part;
    r->src_offset = off;
}

/* Fill r from message m (its pointers stay m's). */
static void rec_fill(const rd_kafka_message_t *m, int32_t partitions, kw_vk_rec_t *r)
{
    rd_kafka_headers_t *h = NULL;
    rd_kafka_timestamp_type_t tstype;

    memset(r, 0, sizeof(*r));
    r->partition = m->partition;
    r->offset = m->offset;
    r->partitions = partitions;
    r->message = m;
    r->ts = rd_kafka_message_timestamp(m, &tstype);
    r->tstype = tstype == RD_KAFKA_TIMESTAMP_CREATE_TIME ? KW_VK_TS_CREATE
              : tstype == RD_KAFKA_TIMESTAMP_LOG_APPEND_TIME ? KW_VK_TS_LOG_APPEND
              : KW_VK_TS_NONE;
    r->key_null = m->key == NULL;
    r->key = m->key ? m->key : "";
    r->klen = m->key_len;
    r->payload_null = m->payload == NULL;
    r->payload = m->payload ? m->payload : "";
    r->plen = m->len;
    if (rd_kafka_message_headers(m, &h) == RD_KAFKA_RESP_ERR_NO_ERROR)
        r->nheaders = rd_kafka_header_cnt(h);
    if (r->nheaders > 0)
        rd_kafka_header_get_all(h, 0, &r->first_name, &r->first_value, &r->first_len);
    parse_source(h, r);
}

/* ------------------------------------------------------------ reading -- */

typedef struct {
    int32_t n;
    bool *done;
    int64_t *next;              /* the next offset expected (EOF: the end) */
    int32_t ndone;
    rd_kafka_resp_err_t last_err;
    char last_errstr[256];
} progress_t;

static void timeout_message(const kw_vk_opts_t *o, const progress_t *pg, char *errstr,
                            size_t errstr_size)
{
    size_t len;
    int listed = 0;

    len = (size_t)snprintf(errstr, errstr_size, "read not finished within %" PRId64
                           " ms: %" PRId32 " of %" PRId32 " partitions of %s did not reach "
                           "their end:", o->timeout_ms, pg->n - pg->ndone, pg->n, o->topic);
    for (int32_t p = 0; p < pg->n && len < errstr_size; p++) {
        if (pg->done[p])
            continue;
        if (listed == LIST_MAX) {
            len += (size_t)snprintf(errstr + len, errstr_size - len, ", ...");
            break;
        }
        if (pg->next[p] >= 0)
            len += (size_t)snprintf(errstr + len, errstr_size - len, "%s %" PRId32
                                    " (read up to offset %" PRId64 ")", listed ? "," : "",
                                    p, pg->next[p]);
        else
            len += (size_t)snprintf(errstr + len, errstr_size - len, "%s %" PRId32
                                    " (nothing read)", listed ? "," : "", p);
        listed++;
    }
    if (pg->last_err != RD_KAFKA_RESP_ERR_NO_ERROR && len < errstr_size)
        snprintf(errstr + len, errstr_size - len, "; last Kafka error: %s", pg->last_errstr);
}

/* One polled message. Returns false on a fatal error (errstr filled). */
static bool on_message(rd_kafka_t *rk, const kw_vk_opts_t *o, const rd_kafka_message_t *m,
                       progress_t *pg, kw_vk_cb_t *cb, void *opaque, kw_vk_result_t *res,
                       kw_vk_rec_t *rec, char *errstr, size_t errstr_size)
{
    bool ours = m->rkt != NULL && m->partition >= 0 && m->partition < pg->n;

    if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
        if (ours && !pg->done[m->partition]) {
            pg->done[m->partition] = true;
            pg->next[m->partition] = m->offset;
            pg->ndone++;
            pause_one(rk, o->topic, m->partition);
        }
        return true;
    }
    if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        char fatal[512];

        if (rd_kafka_fatal_error(rk, fatal, sizeof(fatal)) != RD_KAFKA_RESP_ERR_NO_ERROR) {
            snprintf(errstr, errstr_size, "fatal consumer error: %s", fatal);
            return false;
        }
        pg->last_err = m->err;
        snprintf(pg->last_errstr, sizeof(pg->last_errstr), "%s", rd_kafka_message_errstr(m));
        return true;
    }
    if (!ours || pg->done[m->partition])
        return true;            /* past the end we took: not read */
    rec_fill(m, pg->n, rec);
    pg->next[m->partition] = m->offset + 1;
    res->records++;
    cb(opaque, rec);
    return true;
}

static kw_vk_status_t poll_to_end(rd_kafka_t *rk, const kw_vk_opts_t *o, int64_t deadline,
                                  progress_t *pg, kw_vk_cb_t *cb, void *opaque,
                                  kw_vk_result_t *res, char *errstr, size_t errstr_size)
{
    kw_vk_rec_t *rec = malloc(sizeof(*rec));

    if (rec == NULL) {
        snprintf(errstr, errstr_size, "out of memory");
        return KW_VK_ERROR;
    }
    while (pg->ndone < pg->n) {
        int wait = remaining_ms(deadline, POLL_MS);
        rd_kafka_message_t *m;
        bool ok;

        if (wait == 0) {
            timeout_message(o, pg, errstr, errstr_size);
            free(rec);
            return KW_VK_TIMEOUT;
        }
        if ((m = rd_kafka_consumer_poll(rk, wait)) == NULL)
            continue;
        ok = on_message(rk, o, m, pg, cb, opaque, res, rec, errstr, errstr_size);
        rd_kafka_message_destroy(m);
        if (!ok) {
            free(rec);
            return KW_VK_ERROR;
        }
    }
    free(rec);
    return KW_VK_OK;
}

kw_vk_status_t kw_vk_read(const kw_vk_opts_t *o, kw_vk_cb_t *cb, void *opaque,
                          kw_vk_result_t *res, char *errstr, size_t errstr_size)
{
    int64_t deadline = now_ms() + o->timeout_ms;
    progress_t pg = { 0 };
    rd_kafka_resp_err_t err;
    kw_vk_status_t st;
    rd_kafka_t *rk;

    memset(res, 0, sizeof(*res));
    if ((rk = consumer_new(o, errstr, errstr_size)) == NULL)
        return KW_VK_ERROR;
    st = topic_partitions(rk, o, deadline, &pg.n, errstr, errstr_size);
    if (st != KW_VK_OK)
        goto out;
    res->partitions = pg.n;
    pg.done = calloc((size_t)pg.n, sizeof(*pg.done));
    pg.next = malloc((size_t)pg.n * sizeof(*pg.next));
    if (pg.done == NULL || pg.next == NULL) {
        snprintf(errstr, errstr_size, "out of memory");
        st = KW_VK_ERROR;
        goto out;
    }
    for (int32_t p = 0; p < pg.n; p++)
        pg.next[p] = -1;
    if ((err = assign_all(rk, o->topic, pg.n)) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        snprintf(errstr, errstr_size, "assign %s: %s", o->topic, rd_kafka_err2str(err));
        st = KW_VK_ERROR;
        goto out;
    }
    st = poll_to_end(rk, o, deadline, &pg, cb, opaque, res, errstr, errstr_size);
out:
    free(pg.done);
    free(pg.next);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return st;
}
