/*
 * sink_null.c -- the `null` sink: counts every record and keeps none
 * (benchmarks). stored stays 0; delivered is counted by sink.c.
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

static kw_err_t null__write(kw_sink_t *s, uint64_t batch_id, const kw_record_t *recs,
                            size_t n, kw_sink_txn_hook_t hook, void *opaque,
                            kw_sink_stats_t *st, int *replayed,
                            char *errstr, size_t errlen)
{
    (void)s;
    (void)batch_id;
    (void)recs;
    (void)n;
    (void)hook;
    (void)opaque;
    (void)st;
    (void)replayed;
    (void)errstr;
    (void)errlen;
    return KW_OK;
}

const kw__sink_ops_t kw__sink_null_ops = {
    KW_SINK_NULL, "null", null__open, null__close, null__write
};
