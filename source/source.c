/*
 * source.c -- the Kafka side shared by both modes (source.h).
 */
#include "source.h"

#include <stdio.h>
#include <string.h>

_Static_assert(KW_SOURCE_OFFSET_BEGINNING == RD_KAFKA_OFFSET_BEGINNING &&
               KW_SOURCE_OFFSET_END == RD_KAFKA_OFFSET_END,
               "logical offsets are librdkafka's");

kw_err_t kw_source_check_conf(const kw_conf_t *conf, char *errstr, size_t errlen)
{
    rd_kafka_conf_t *kc = NULL;
    kw_err_t err = kw_source_consumer_conf(conf, "kwal-check", NULL, &kc, errstr, errlen);

    if (kc != NULL)
        rd_kafka_conf_destroy(kc);
    return err;
}

kw_err_t kw_source_consumer_conf(const kw_conf_t *conf, const char *group_id,
                                 const char *const *extra, rd_kafka_conf_t **out,
                                 char *errstr, size_t errlen)
{
    static const char *const fixed[] = {
        "enable.auto.commit", "false",
        "enable.auto.offset.store", "false",
        "auto.offset.reset", "error",
        NULL
    };
    /* kwal's own defaults for librdkafka, before the kafka.* settings (which
     * override them): the prefetch queue in front of each consumer is held
     * to 16 MiB (librdkafka's default, 64 MiB, is what dominates memory at
     * 100-byte records; README "Memory") */
    static const char *const defaults[] = {
        "queued.max.messages.kbytes", "16384",
        NULL
    };
    rd_kafka_conf_t *kc = rd_kafka_conf_new();
    char why[512];

    *out = NULL;
    for (size_t i = 0; defaults[i] != NULL; i += 2)
        if (rd_kafka_conf_set(kc, defaults[i], defaults[i + 1], why, sizeof(why)) !=
            RD_KAFKA_CONF_OK)
            goto fail_fixed;
    for (size_t i = 0; i < conf->nkafka; i++)
        if (rd_kafka_conf_set(kc, conf->kafka[i].key, conf->kafka[i].value, why,
                              sizeof(why)) != RD_KAFKA_CONF_OK)
            goto fail_kafka;
    if (group_id != NULL &&
        rd_kafka_conf_set(kc, "group.id", group_id, why, sizeof(why)) != RD_KAFKA_CONF_OK)
        goto fail_fixed;
    for (size_t i = 0; fixed[i] != NULL; i += 2)
        if (rd_kafka_conf_set(kc, fixed[i], fixed[i + 1], why, sizeof(why)) !=
            RD_KAFKA_CONF_OK)
            goto fail_fixed;
    for (size_t i = 0; extra != NULL && extra[i] != NULL; i += 2)
        if (rd_kafka_conf_set(kc, extra[i], extra[i + 1], why, sizeof(why)) !=
            RD_KAFKA_CONF_OK)
            goto fail_fixed;
    *out = kc;
    return KW_OK;

fail_kafka:
    rd_kafka_conf_destroy(kc);
    for (size_t i = 0; i < conf->nkafka; i++) {
        /* name the key librdkafka refused: the first that fails alone */
        rd_kafka_conf_t *one = rd_kafka_conf_new();
        int bad = rd_kafka_conf_set(one, conf->kafka[i].key, conf->kafka[i].value, why,
                                    sizeof(why)) != RD_KAFKA_CONF_OK;

        rd_kafka_conf_destroy(one);
        if (bad)
            return kw_seterr(errstr, errlen, KW_ECONFIG, "kafka.%s: %s",
                             conf->kafka[i].key, why);
    }
    return kw_seterr(errstr, errlen, KW_ECONFIG, "kafka.* settings refused by librdkafka");
fail_fixed:
    rd_kafka_conf_destroy(kc);
    return kw_seterr(errstr, errlen, KW_ECONFIG, "Kafka client: %s", why);
}

/* What the probe's client reported last (error_cb, librdkafka's thread). */
typedef struct probe_state {
    rd_kafka_resp_err_t auth_err;      /* first permanent one seen, or 0 */
    char                auth_msg[512];
    char                last_msg[512];
} probe_state_t;

static void probe_error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    probe_state_t *ps = opaque;

    (void)rk;
    if ((err == RD_KAFKA_RESP_ERR__SSL || err == RD_KAFKA_RESP_ERR__AUTHENTICATION ||
         err == RD_KAFKA_RESP_ERR_SASL_AUTHENTICATION_FAILED) && ps->auth_err == 0) {
        ps->auth_err = (rd_kafka_resp_err_t)err;
        snprintf(ps->auth_msg, sizeof(ps->auth_msg), "%s", reason);
    }
    snprintf(ps->last_msg, sizeof(ps->last_msg), "%s", reason);
}

kw_err_t kw_source_probe(const kw_conf_t *conf, int timeout_ms, char *errstr, size_t errlen)
{
    static const char *const quiet[] = { "log_level", "0", NULL };
    probe_state_t ps;
    rd_kafka_conf_t *kc = NULL;
    const struct rd_kafka_metadata *md = NULL;
    char why[512];
    rd_kafka_resp_err_t merr;
    rd_kafka_t *rk;
    kw_err_t err;

    memset(&ps, 0, sizeof(ps));
    if ((err = kw_source_consumer_conf(conf, "kwal-probe", quiet, &kc, errstr, errlen)) != KW_OK)
        return err;
    rd_kafka_conf_set_error_cb(kc, probe_error_cb);
    rd_kafka_conf_set_opaque(kc, &ps);
    rk = rd_kafka_new(RD_KAFKA_CONSUMER, kc, why, sizeof(why));
    if (rk == NULL) {
        rd_kafka_conf_destroy(kc);
        return kw_seterr(errstr, errlen, KW_ECONFIG, "Kafka client: %s", why);
    }
    /* the metadata call returns at its timeout when no broker answers; the
     * error callback runs from rd_kafka_poll */
    merr = rd_kafka_metadata(rk, 0, NULL, &md, timeout_ms);
    rd_kafka_poll(rk, 0);
    if (md != NULL)
        rd_kafka_metadata_destroy(md);
    rd_kafka_destroy(rk);
    if (merr == RD_KAFKA_RESP_ERR_NO_ERROR)
        return KW_OK;
    if (ps.auth_err != 0)
        return kw_seterr(errstr, errlen, KW_EAUTH, "Kafka: %s", ps.auth_msg);
    return kw_seterr(errstr, errlen, KW_ETIMEDOUT, "Kafka: no broker answered in %d ms (%s%s%s)",
                     timeout_ms, rd_kafka_err2str(merr), ps.last_msg[0] ? ": " : "",
                     ps.last_msg);
}

int64_t kw_source_reset_offset(int policy)
{
    switch (policy) {
    case KW_OFFSET_RESET_EARLIEST: return KW_SOURCE_OFFSET_BEGINNING;
    case KW_OFFSET_RESET_LATEST:   return KW_SOURCE_OFFSET_END;
    default:                       return -3;
    }
}

int kw_source_out_of_range(int64_t wanted, int64_t low, int64_t high, int policy,
                           int64_t *lost_from, int64_t *lost_until, int64_t *seek_to)
{
    /* lost at the source: what we wanted that retention removed */
    *lost_from = wanted >= 0 ? wanted : low;
    *lost_until = wanted >= 0 && wanted < low ? low : *lost_from;
    switch (policy) {
    case KW_OFFSET_RESET_EARLIEST:
        *seek_to = low;
        return 0;
    case KW_OFFSET_RESET_LATEST:
        *seek_to = high;   /* what lies between is skipped by the policy */
        return 0;
    default:
        *seek_to = -1;
        return -1;
    }
}

size_t kw_source_header_count(const rd_kafka_message_t *m)
{
    rd_kafka_headers_t *h = NULL;

    /* rd_kafka_message_headers() parses lazily; it takes a non-const message */
    if (rd_kafka_message_headers(m, &h) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        h == NULL)
        return 0;
    return rd_kafka_header_cnt(h);
}

void kw_source_record(const rd_kafka_message_t *m, kw_record_t *rec,
                      kw_record_header_t *hdrs)
{
    rd_kafka_timestamp_type_t tstype;
    rd_kafka_headers_t *h = NULL;

    memset(rec, 0, sizeof(*rec));
    rec->topic = rd_kafka_topic_name(m->rkt);
    rec->partition = m->partition;
    rec->offset = m->offset;
    rec->timestamp = rd_kafka_message_timestamp(m, &tstype);
    rec->tstype = tstype == RD_KAFKA_TIMESTAMP_CREATE_TIME ? KW_TS_CREATE_TIME :
                  tstype == RD_KAFKA_TIMESTAMP_LOG_APPEND_TIME ? KW_TS_LOG_APPEND :
                  KW_TS_NOT_AVAILABLE;
    if (rec->tstype == KW_TS_NOT_AVAILABLE)
        rec->timestamp = -1;
    rec->key = m->key;
    rec->key_len = m->key_len;
    rec->value = m->payload;
    rec->value_len = m->len;
    if (rd_kafka_message_headers(m, &h) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        h == NULL || rd_kafka_header_cnt(h) == 0)
        return;
    rec->header_count = rd_kafka_header_cnt(h);
    rec->headers = hdrs;
    for (size_t i = 0; i < rec->header_count; i++) {
        const char *name;
        const void *val;
        size_t vlen;

        rd_kafka_header_get_all(h, i, &name, &val, &vlen);
        hdrs[i].name = name;
        hdrs[i].name_len = strlen(name);
        hdrs[i].value = val;
        hdrs[i].value_len = vlen;
    }
}
