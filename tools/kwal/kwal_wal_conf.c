/*
 * kwal_wal_conf.c -- turns the wal.* configuration keys into the WAL's
 * kw_wal_options_t. It lives in tools/ because common/ must not depend on
 * wal/; whatever else opens the WAL from a configuration (the receiver) uses
 * this same function.
 */
#include "kwal.h"

kw_err_t kwal_wal_options_from_conf(const kw_conf_t *conf, const char *const *dirs,
                                    int ndirs, kw_wal_options_t *opts,
                                    char *errstr, size_t errlen)
{
    const kw_conf_wal_t *wc = &conf->wal;
    const char *what = ndirs > 0 ? "--dir" : "wal.dirs";

    kw_wal_options_init(opts);
    if (ndirs <= 0) {
        dirs = (const char *const *)wc->dirs.items;
        ndirs = wc->dirs.count;
    }
    if (ndirs < 1 || ndirs > KW_WAL_MAX_REPLICAS)
        return kw_seterr(errstr, errlen, KW_ECONFIG,
                         "%s: expected 1 to %d replica directories, got %d",
                         what, KW_WAL_MAX_REPLICAS, ndirs);
    if (wc->write_quorum > ndirs)
        return kw_seterr(errstr, errlen, KW_ECONFIG,
                         "wal.write.quorum: %lld is more than the number of "
                         "replica directories (%d in %s)", (long long)wc->write_quorum,
                         ndirs, what);
    for (int i = 0; i < ndirs; i++)
        opts->dirs[i] = dirs[i];
    opts->ndirs = ndirs;
    opts->write_quorum = (int)wc->write_quorum;
    opts->segment_bytes = wc->segment_bytes;
    opts->segment_ms = (uint64_t)wc->segment_ms;
    opts->max_pending_bytes = wc->max_pending_bytes;
    return KW_OK;
}
