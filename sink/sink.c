/*
 * sink.c -- sink dispatch: parses a `sink=` spec, opens the kind it names and
 * forwards every call through the kind's table (sink_int.h). The kinds live
 * in sink_sqlite.c, sink_file.c, sink_jsonl.c (with the JSON lines encoder)
 * and sink_null.c. This file also keeps the totals, so every kind reports
 * delivered / stored / duplicate counts the same way (invariant 3: duplicates
 * are counted and reported, never hidden).
 *
 * Transactions. Every batch is one: begin, write, (put_range...), commit or
 * abort -- kw_sink_write_batch is the first three in a row. This file holds
 * the transaction's state (struct kw_sink's txn), so the kinds never see a
 * call out of order: it checks the order and the arguments, skips
 * put_range and commit after a replay (T3), and after any error calls the
 * kind's abort and ends the transaction (T2).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kw_log.h"
#include "sink_int.h"

static const kw__sink_ops_t *const sink__kinds[] = {
    &kw__sink_sqlite_ops, &kw__sink_file_ops, &kw__sink_jsonl_ops, &kw__sink_null_ops,
    &kw__sink_pg_ops, &kw__sink_kafka_ops
};

kw_err_t kw_sink_open(const char *spec, kw_sink_t **out, char *errstr, size_t errlen)
{
    return kw_sink_open_opts(spec, NULL, out, errstr, errlen);
}

void kw_sink_options_from_conf(kw_sink_options_t *o, const kw_conf_t *conf,
                               const char *instance, int direct)
{
    memset(o, 0, sizeof(*o));
    o->group = conf->receiver.group_id;
    o->instance = instance;
    o->direct = direct;
    o->kafka = conf->kafka;
    o->nkafka = conf->nkafka;
    o->sink_kafka = conf->sink_kafka;
    o->nsink_kafka = conf->nsink_kafka;
}

kw_err_t kw_sink_open_opts(const char *spec, const kw_sink_options_t *opts, kw_sink_t **out,
                           char *errstr, size_t errlen)
{
    const kw__sink_ops_t *ops = NULL;
    const char *colon, *arg = NULL;
    size_t kindlen;
    kw_sink_t *s;
    kw_err_t err;

    *out = NULL;
    if (spec == NULL || spec[0] == '\0')
        return kw_seterr(errstr, errlen, KW_ECONFIG, "sink: empty spec "
                         "(expected sqlite:PATH, file:DIR, postgresql:CONNINFO, kafka:TOPIC, jsonl or null)");
    colon = strchr(spec, ':');
    kindlen = colon != NULL ? (size_t)(colon - spec) : strlen(spec);
    if (colon != NULL)
        arg = colon + 1;
    for (size_t i = 0; i < sizeof(sink__kinds) / sizeof(sink__kinds[0]); i++) {
        if (strlen(sink__kinds[i]->name) == kindlen &&
            memcmp(sink__kinds[i]->name, spec, kindlen) == 0)
            ops = sink__kinds[i];
    }
    if (ops == NULL)
        return kw_seterr(errstr, errlen, KW_ECONFIG, "sink '%s': unknown kind "
                         "(expected sqlite:PATH, file:DIR, postgresql:CONNINFO, kafka:TOPIC, jsonl or null)", spec);
    if (ops->arg_what != NULL && (arg == NULL || arg[0] == '\0'))
        return kw_seterr(errstr, errlen, KW_ECONFIG, "sink '%s': %s needs a %s (%s:%s)", spec,
                         ops->name, ops->arg_what, ops->name, ops->arg_meta);
    if (ops->arg_what == NULL && arg != NULL)
        return kw_seterr(errstr, errlen, KW_ECONFIG, "sink '%s': %s takes no argument",
                         spec, ops->name);
    s = calloc(1, sizeof(*s));
    if (s == NULL)
        return kw_seterr(errstr, errlen, KW_ENOMEM, "sink '%s': out of memory", spec);
    s->ops = ops;
    s->opts = opts;
    err = ops->open(s, arg, errstr, errlen);
    s->opts = NULL;
    if (err != KW_OK) {
        free(s);
        return err;
    }
    *out = s;
    return KW_OK;
}

void kw_sink_close(kw_sink_t *s)
{
    if (s == NULL)
        return;
    kw_sink_txn_abort(s);
    s->ops->close(s);
    free(s);
}

kw_sink_kind_t kw_sink_kind(const kw_sink_t *s)
{
    return s->ops->kind;
}

const char *kw_sink_kind_name(const kw_sink_t *s)
{
    return s->ops->name;
}

/* ---- Transactions (sink.h T1-T4) ---- */

/* T2: an error ends the open transaction (rolled back, counted). */
static kw_err_t txn__fail(kw_sink_t *s, kw_err_t err)
{
    if (s->txn.state != KW__TXN_NONE) {
        s->ops->abort(s, s->txn.batch_id);
        s->txn.state = KW__TXN_NONE;
        s->totals.failures++;
    }
    return err;
}

/* A call out of order: KW_EINVAL, and T2 for a transaction that is open. */
static kw_err_t txn__order(kw_sink_t *s, const char *call, char *errstr, size_t errlen)
{
    static const char *const where[] = {
        "no transaction is open", "the batch is not written yet",
        "the batch is written already"
    };

    kw_seterr(errstr, errlen, KW_EINVAL, "sink %s: %s: %s (batch %llu)", s->ops->name,
              call, where[s->txn.state], (unsigned long long)s->txn.batch_id);
    return txn__fail(s, KW_EINVAL);
}

static int txn__bad_id(uint64_t batch_id)
{
    return batch_id == 0 || batch_id > (uint64_t)INT64_MAX;
}

kw_err_t kw_sink_txn_begin(kw_sink_t *s, uint64_t batch_id, char *errstr, size_t errlen)
{
    kw_err_t err;

    if (s->txn.state != KW__TXN_NONE)
        return txn__order(s, "begin", errstr, errlen);
    if (txn__bad_id(batch_id))
        return kw_seterr(errstr, errlen, KW_EINVAL,
                         "sink %s: bad batch (id must be 1..INT64_MAX)", s->ops->name);
    memset(&s->txn, 0, sizeof(s->txn));
    s->txn.batch_id = batch_id;
    s->txn.state = KW__TXN_BEGUN;
    err = s->ops->begin(s, batch_id, errstr, errlen);
    return err == KW_OK ? KW_OK : txn__fail(s, err);
}

kw_err_t kw_sink_txn_begin_next(kw_sink_t *s, uint64_t min_id, uint64_t *batch_id,
                                char *errstr, size_t errlen)
{
    kw_err_t err;

    if (s->txn.state != KW__TXN_NONE)
        return txn__order(s, "begin", errstr, errlen);
    if (s->ops->begin_next == NULL)
        return kw_seterr(errstr, errlen, KW_EINVAL, "sink %s does not number batches "
                         "itself (only sqlite and postgresql do)", s->ops->name);
    if (txn__bad_id(min_id))
        return kw_seterr(errstr, errlen, KW_EINVAL,
                         "sink %s: bad batch (id must be 1..INT64_MAX)", s->ops->name);
    memset(&s->txn, 0, sizeof(s->txn));
    s->txn.state = KW__TXN_BEGUN;
    err = s->ops->begin_next(s, min_id, &s->txn.batch_id, errstr, errlen);
    if (err == KW_OK && txn__bad_id(s->txn.batch_id))
        err = kw_seterr(errstr, errlen, KW_EIO, "sink %s: no batch id left", s->ops->name);
    if (err != KW_OK)
        return txn__fail(s, err);
    *batch_id = s->txn.batch_id;
    return KW_OK;
}

kw_err_t kw_sink_txn_write(kw_sink_t *s, const kw_record_t *recs, size_t n,
                           char *errstr, size_t errlen)
{
    kw_err_t err;

    if (s->txn.state != KW__TXN_BEGUN)
        return txn__order(s, "write", errstr, errlen);
    if (n > 0 && recs == NULL)
        return txn__fail(s, kw_seterr(errstr, errlen, KW_EINVAL, "sink %s: batch %llu: "
                                      "%zu records and no array", s->ops->name,
                                      (unsigned long long)s->txn.batch_id, n));
    err = s->ops->write(s, s->txn.batch_id, recs, n, &s->txn.st, &s->txn.replayed,
                        errstr, errlen);
    if (err != KW_OK)
        return txn__fail(s, err);
    s->txn.st.delivered = n;
    s->txn.state = KW__TXN_WRITTEN;
    return KW_OK;
}

kw_err_t kw_sink_txn_put_range(kw_sink_t *s, const char *topic, int32_t partition,
                               int64_t expect_next, int64_t from_offset,
                               int64_t until_offset, char *errstr, size_t errlen)
{
    kw_err_t err;

    if (s->txn.state != KW__TXN_WRITTEN)
        return txn__order(s, "put_range", errstr, errlen);
    if (s->ops->put_range == NULL)
        return txn__fail(s, kw_seterr(errstr, errlen, KW_EINVAL, "sink %s does not store "
                                      "offset ranges (only sqlite and postgresql do)", s->ops->name));
    if (topic == NULL || partition < 0 || from_offset < 0 || until_offset <= from_offset ||
        expect_next < KW_SINK_RANGE_UNCHECKED)
        return txn__fail(s, kw_seterr(errstr, errlen, KW_EINVAL, "sink %s: batch %llu: "
                                      "bad range %s/%d [%lld, %lld)", s->ops->name,
                                      (unsigned long long)s->txn.batch_id,
                                      topic != NULL ? topic : "(null)", (int)partition,
                                      (long long)from_offset, (long long)until_offset));
    if (s->txn.replayed)
        return KW_OK;                   /* T3: committed with the batch */
    err = s->ops->put_range(s, s->txn.batch_id, topic, partition, expect_next, from_offset,
                            until_offset, errstr, errlen);
    return err == KW_OK ? KW_OK : txn__fail(s, err);
}

kw_err_t kw_sink_txn_commit(kw_sink_t *s, kw_sink_stats_t *stats,
                            char *errstr, size_t errlen)
{
    const kw_sink_stats_t *st = &s->txn.st;
    kw_err_t err;

    if (stats != NULL)
        memset(stats, 0, sizeof(*stats));
    if (s->txn.state != KW__TXN_WRITTEN)
        return txn__order(s, "commit", errstr, errlen);
    if (!s->txn.replayed) {
        err = s->ops->commit(s, s->txn.batch_id, errstr, errlen);
        if (err != KW_OK)
            return txn__fail(s, err);
    }
    s->txn.state = KW__TXN_NONE;
    s->totals.batches++;
    s->totals.batches_replayed += s->txn.replayed != 0;
    s->totals.delivered += st->delivered;
    s->totals.stored += st->stored;
    s->totals.duplicates_delivered += st->duplicates_delivered;
    if (st->duplicates_delivered > 0)
        KW_LOG_I("sink", "sink %s: batch %llu: %llu duplicate deliveries%s",
                 s->ops->name, (unsigned long long)s->txn.batch_id,
                 (unsigned long long)st->duplicates_delivered,
                 s->txn.replayed ? " (whole batch replayed)" : "");
    if (stats != NULL)
        *stats = *st;
    return KW_OK;
}

void kw_sink_txn_abort(kw_sink_t *s)
{
    if (s->txn.state == KW__TXN_NONE)
        return;
    s->ops->abort(s, s->txn.batch_id);
    s->txn.state = KW__TXN_NONE;
}

kw_err_t kw_sink_write_batch(kw_sink_t *s, uint64_t batch_id, const kw_record_t *recs,
                             size_t n, kw_sink_stats_t *stats, char *errstr, size_t errlen)
{
    kw_err_t err;

    if (stats != NULL)
        memset(stats, 0, sizeof(*stats));
    if (s->txn.state != KW__TXN_NONE)
        return kw_seterr(errstr, errlen, KW_EINVAL, "sink %s: write_batch: a "
                         "transaction (batch %llu) is open", s->ops->name,
                         (unsigned long long)s->txn.batch_id);
    if (txn__bad_id(batch_id) || (n > 0 && recs == NULL))
        return kw_seterr(errstr, errlen, KW_EINVAL,
                         "sink %s: bad batch (id must be 1..INT64_MAX)", s->ops->name);
    if ((err = kw_sink_txn_begin(s, batch_id, errstr, errlen)) != KW_OK ||
        (err = kw_sink_txn_write(s, recs, n, errstr, errlen)) != KW_OK)
        return err;
    return kw_sink_txn_commit(s, stats, errstr, errlen);
}

/* ---- Offset ranges ---- */

int kw_sink_ranges_supported(const kw_sink_t *s)
{
    return s->ops->put_range != NULL;
}

/* KW_OK when s can be asked for its ranges now. */
static kw_err_t ranges__readable(kw_sink_t *s, const char *call, char *errstr,
                                 size_t errlen)
{
    if (s->ops->range_next == NULL)
        return kw_seterr(errstr, errlen, KW_EINVAL, "sink %s does not store offset "
                         "ranges (only sqlite and postgresql do)", s->ops->name);
    if (s->txn.state != KW__TXN_NONE)
        return kw_seterr(errstr, errlen, KW_EINVAL, "sink %s: %s: a transaction "
                         "(batch %llu) is open", s->ops->name, call,
                         (unsigned long long)s->txn.batch_id);
    return KW_OK;
}

kw_err_t kw_sink_range_next(kw_sink_t *s, const char *topic, int32_t partition,
                            int64_t *next, char *errstr, size_t errlen)
{
    kw_err_t err = ranges__readable(s, "range_next", errstr, errlen);

    *next = -1;
    if (err != KW_OK)
        return err;
    if (topic == NULL)
        return kw_seterr(errstr, errlen, KW_EINVAL, "sink %s: range_next: no topic",
                         s->ops->name);
    return s->ops->range_next(s, topic, partition, next, errstr, errlen);
}

kw_err_t kw_sink_ranges_last_batch(kw_sink_t *s, uint64_t *batch,
                                   char *errstr, size_t errlen)
{
    kw_err_t err = ranges__readable(s, "ranges_last_batch", errstr, errlen);

    *batch = 0;
    if (err != KW_OK)
        return err;
    return s->ops->ranges_last_batch(s, batch, errstr, errlen);
}

void kw_sink_get_totals(const kw_sink_t *s, kw_sink_totals_t *totals)
{
    *totals = s->totals;
}

uint64_t kw_sink_latency_add(kw_hist_local_t *h, const kw_record_t *recs, size_t n,
                             int64_t now_ms)
{
    uint64_t added = 0;

    for (size_t i = 0; i < n; i++) {
        int64_t ts = recs[i].timestamp;

        if (ts < 0)
            continue;
        kw_hist_local_add(h, now_ms - ts, 1);   /* < 0 (clocks apart): 0 */
        added++;
    }
    return added;
}
