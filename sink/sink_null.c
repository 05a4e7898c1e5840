/*
 * sink_null.c -- the `null` sink: counts every record and keeps none
 * (benchmarks). Its transaction does nothing at any step; stored stays 0,
 * delivered is counted by sink.c. Stores no offset ranges.
 */
#include "sink_int.h"

static kw_err_t null__open(kw_sink_t *s, const char *arg, char *errstr, size_t errlen)
{
    (void)s;
    (void)arg;
    (void)errstr;
    (void)errlen;
    return KW_OK;
}

static void null__close(kw_sink_t *s)
{
    (void)s;
}

static kw_err_t null__begin(kw_sink_t *s, uint64_t batch_id, char *errstr, size_t errlen)
{
    (void)s;
    (void)batch_id;
    (void)errstr;
    (void)errlen;
    return KW_OK;
}

static kw_err_t null__write(kw_sink_t *s, uint64_t batch_id, const kw_record_t *recs,
                            size_t n, kw_sink_stats_t *st, int *replayed,
                            char *errstr, size_t errlen)
{
    (void)s;
    (void)batch_id;
    (void)recs;
    (void)n;
    (void)st;
    (void)replayed;
    (void)errstr;
    (void)errlen;
    return KW_OK;
}

static kw_err_t null__commit(kw_sink_t *s, uint64_t batch_id, char *errstr, size_t errlen)
{
    return null__begin(s, batch_id, errstr, errlen);
}

static void null__abort(kw_sink_t *s, uint64_t batch_id)
{
    (void)s;
    (void)batch_id;
}

const kw__sink_ops_t kw__sink_null_ops = {
    .kind = KW_SINK_NULL,
    .name = "null",
    .arg_what = NULL,
    .arg_meta = NULL,
    .open = null__open,
    .close = null__close,
    .begin = null__begin,
    .write = null__write,
    .commit = null__commit,
    .abort = null__abort,
};
