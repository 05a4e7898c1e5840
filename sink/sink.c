/*
 * sink.c -- sink dispatch: parses a `sink=` spec, opens the kind it names and
 * forwards every call through the kind's table (sink_int.h). The kinds live
 * in sink_sqlite.c, sink_file.c, sink_jsonl.c (with the JSON lines encoder)
 * and sink_null.c. This file also keeps the totals, so every kind reports
 * delivered / stored / duplicate counts the same way (invariant 3: duplicates
 * are counted and reported, never hidden).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kw_log.h"
#include "sink_int.h"

static const kw__sink_ops_t *const sink__kinds[] = {
    &kw__sink_sqlite_ops, &kw__sink_file_ops, &kw__sink_jsonl_ops, &kw__sink_null_ops
};

kw_err_t kw_sink_open(const char *spec, kw_sink_t **out, char *errstr, size_t errlen)
{
    const kw__sink_ops_t *ops = NULL;
    const char *colon, *arg = NULL;
    size_t kindlen;
    kw_sink_t *s;
    kw_err_t err;

    *out = NULL;
    if (spec == NULL || spec[0] == '\0')
        return kw_seterr(errstr, errlen, KW_ECONFIG, "sink: empty spec "
                         "(expected sqlite:PATH, file:DIR, jsonl or null)");
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
                         "(expected sqlite:PATH, file:DIR, jsonl or null)", spec);
    if ((ops->kind == KW_SINK_SQLITE || ops->kind == KW_SINK_FILE) &&
        (arg == NULL || arg[0] == '\0'))
        return kw_seterr(errstr, errlen, KW_ECONFIG, "sink '%s': %s needs a %s "
                         "(%s:%s)", spec, ops->name,
                         ops->kind == KW_SINK_SQLITE ? "path" : "directory", ops->name,
                         ops->kind == KW_SINK_SQLITE ? "PATH" : "DIR");
    if ((ops->kind == KW_SINK_JSONL || ops->kind == KW_SINK_NULL) && arg != NULL)
        return kw_seterr(errstr, errlen, KW_ECONFIG, "sink '%s': %s takes no argument",
                         spec, ops->name);
    s = calloc(1, sizeof(*s));
    if (s == NULL)
        return kw_seterr(errstr, errlen, KW_ENOMEM, "sink '%s': out of memory", spec);
    s->ops = ops;
    err = ops->open(s, arg, errstr, errlen);
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

static kw_err_t sink__write(kw_sink_t *s, uint64_t batch_id, const kw_record_t *recs,
                            size_t n, kw_sink_txn_hook_t hook, void *opaque,
                            kw_sink_stats_t *stats, char *errstr, size_t errlen)
{
    kw_sink_stats_t st;
    int replayed = 0;
    kw_err_t err;

    memset(&st, 0, sizeof(st));
    if (stats != NULL)
        memset(stats, 0, sizeof(*stats));
    if (batch_id == 0 || batch_id > (uint64_t)INT64_MAX || (n > 0 && recs == NULL))
        return kw_seterr(errstr, errlen, KW_EINVAL,
                         "sink %s: bad batch (id must be 1..INT64_MAX)", s->ops->name);
    err = s->ops->write(s, batch_id, recs, n, hook, opaque, &st, &replayed,
                        errstr, errlen);
    if (err != KW_OK) {
        s->totals.failures++;
        return err;
    }
    st.delivered = n;
    s->totals.batches++;
    s->totals.batches_replayed += replayed != 0;
    s->totals.delivered += st.delivered;
    s->totals.stored += st.stored;
    s->totals.duplicates_delivered += st.duplicates_delivered;
    if (st.duplicates_delivered > 0)
        KW_LOG_I("sink", "sink %s: batch %llu: %llu duplicate deliveries%s",
                 s->ops->name, (unsigned long long)batch_id,
                 (unsigned long long)st.duplicates_delivered,
                 replayed ? " (whole batch replayed)" : "");
    if (stats != NULL)
        *stats = st;
    return KW_OK;
}

kw_err_t kw_sink_write_batch(kw_sink_t *s, uint64_t batch_id, const kw_record_t *recs,
                             size_t n, kw_sink_stats_t *stats, char *errstr, size_t errlen)
{
    return sink__write(s, batch_id, recs, n, NULL, NULL, stats, errstr, errlen);
}

kw_err_t kw_sink_write_batch_tx(kw_sink_t *s, uint64_t batch_id, const kw_record_t *recs,
                                size_t n, kw_sink_txn_hook_t hook, void *opaque,
                                kw_sink_stats_t *stats, char *errstr, size_t errlen)
{
    if (s->ops->kind != KW_SINK_SQLITE) {
        if (stats != NULL)
            memset(stats, 0, sizeof(*stats));
        return kw_seterr(errstr, errlen, KW_EINVAL, "sink %s: a transaction hook "
                         "needs the sqlite sink", s->ops->name);
    }
    return sink__write(s, batch_id, recs, n, hook, opaque, stats, errstr, errlen);
}

struct sqlite3 *kw_sink_sqlite_db(kw_sink_t *s)
{
    return s->ops->kind == KW_SINK_SQLITE ? kw__sink_sqlite_conn(s) : NULL;
}

void kw_sink_get_totals(const kw_sink_t *s, kw_sink_totals_t *totals)
{
    *totals = s->totals;
}

kw_err_t kw__sink_buf_reserve(kw_sink_buf_t *b, size_t more)
{
    size_t need, cap;
    char *nd;

    if (more > SIZE_MAX - b->len)
        return KW_ENOMEM;
    need = b->len + more;
    if (need <= b->cap)
        return KW_OK;
    cap = b->cap == 0 ? 4096 : b->cap;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    nd = realloc(b->data, cap);
    if (nd == NULL)
        return KW_ENOMEM;
    b->data = nd;
    b->cap = cap;
    return KW_OK;
}

int kw__sink_write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;

    while (len > 0) {
        ssize_t w = write(fd, p, len);

        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        len -= (size_t)w;
    }
    return 0;
}
