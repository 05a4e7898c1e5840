/*
 * zk_offsets.c -- offsets in kwal's ZooKeeper store: reading a partition's
 * stored next offset, and the fenced commit.
 *
 * What it is for: once a block is durable, the durability pipeline records
 * each partition's next offset in /consumers/<group>/offsets/<topic>/
 * <partition> (ASCII decimal), where a restarted or another instance picks
 * it up. A write must never come from an instance that no longer owns the
 * partition (invariant 4, fencing), must never move an offset backwards
 * (unless forced, for recovery) and must be all or nothing across the
 * partitions of one commit.
 *
 * How it works. kw_zk_commit plans under the mutex (plan_commit, rule Z1):
 * each partition must be in the ownership table and valid, and one whose
 * cached offset is already at least as far is left out. It then sends one
 * zoo_multi (rule Z2): a check of our ids node at its version, then per
 * partition a check of the owner node at the version we created it with
 * and a set of the offset node at the version we last saw (a create when
 * there is none). The cache comes from the ownership table (zk_owner.c),
 * filled when the partition was owned and kept up to date here
 * (commit_applied, cache_set).
 *
 * How a failed multi is read: a lost reply (connection loss) is resolved by
 * reading every offset node back before anything else is sent
 * (commit_readback, rule Z3); a failed ids check means our session is
 * ending (KW_EAGAIN, nothing written); a failed owner check means the
 * partition is lost (KW_EFENCED); a failed offset op means someone else
 * wrote the node: it is re-read and the commit planned again, at most
 * three times. The multi is sent with zoo_amulti and a wait (zk_multi)
 * rather than zoo_multi, to avoid a leak in the client library.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "zk_int.h"

/* ------------------------------------------------------------------ */
/* reading                                                            */
/* ------------------------------------------------------------------ */

kw_err_t kw_zk_get_offset(kw_zk_t *zk, const char *topic, int32_t partition,
                          int64_t *next, char *errstr, size_t errlen)
{
    char path[KW__ZK_PATH_MAX];
    kw_err_t err = kw__zk_topic_check(topic, partition, errstr, errlen);
    if (err != KW_OK)
        return err;
    kw__zk_offset_path(zk, topic, partition, path);
    int64_t deadline = kw_mono_ms() + zk->op_ms;
    int delay = KW__ZK_BACKOFF_MIN_MS;
    for (;;) {
        if (kw__zk_wait_active_until(zk, deadline) != KW_OK)
            return kw_seterr(errstr, errlen, KW_EAGAIN,
                             "ZooKeeper %s: session not re-established in time", zk->connect);
        kw__zk_conn_t *c = kw__zk_conn_get(zk, 0);
        if (c == NULL)
            continue;
        int exists, version, corrupt;
        int64_t v;
        int rc = kw__zk_read_offset(c->zh, path, &exists, &v, &version, &corrupt);
        kw__zk_conn_put(zk, c);
        if (rc == ZOK) {
            if (!exists)
                return kw_seterr(errstr, errlen, KW_ENOTFOUND, "no offset stored at %s", path);
            if (corrupt)
                return kw_seterr(errstr, errlen, KW_ECORRUPT,
                                 "%s does not hold an ASCII decimal offset", path);
            *next = v;
            return KW_OK;
        }
        if (!kw__zk_is_conn_loss(rc) && !kw__zk_is_session_gone(rc))
            return kw_seterr(errstr, errlen, KW_EIO, "ZooKeeper %s: reading %s: %s",
                             zk->connect, path, zerror(rc));
        if (!kw__zk_backoff(deadline, &delay))
            return kw_seterr(errstr, errlen, KW_EAGAIN, "ZooKeeper %s: reading %s: %s",
                             zk->connect, path, zerror(rc));
    }
}

/* ------------------------------------------------------------------ */
/* the fenced commit                                                  */
/* ------------------------------------------------------------------ */

/*
 * zoo_multi, made synchronous by hand. The client's own zoo_multi leaks the
 * completion entries of the sub-operations when the request fails without a
 * reply (connection loss, expiry): its free_completions() destroys a sync
 * completion without cleaning up the multi's list, whereas the asynchronous
 * path calls cleanup_failed_multi() (ZooKeeper 3.8 C client). So we use
 * zoo_amulti and wait. The completion always comes while we hold a
 * reference on the conn (it is not closed under us), so the wait is not
 * bounded here; the client's own timeouts bound it.
 */
typedef struct multi_wait {
    pthread_mutex_t mu;
    pthread_cond_t  cond;
    int             done;
    int             rc;
} multi_wait_t;

static void multi_done(int rc, const void *data)
{
    multi_wait_t *w = (multi_wait_t *)(uintptr_t)data;
    pthread_mutex_lock(&w->mu);
    w->rc = rc;
    w->done = 1;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->mu);
}

static int zk_multi(zhandle_t *zh, int count, const zoo_op_t *ops, zoo_op_result_t *res)
{
    multi_wait_t w;
    memset(&w, 0, sizeof(w));
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cond, NULL);
    int rc = zoo_amulti(zh, count, ops, res, multi_done, &w);
    if (rc == ZOK) {
        pthread_mutex_lock(&w.mu);
        while (!w.done)
            pthread_cond_wait(&w.cond, &w.mu);
        rc = w.rc;
        pthread_mutex_unlock(&w.mu);
    }
    pthread_cond_destroy(&w.cond);
    pthread_mutex_destroy(&w.mu);
    return rc;
}

/* One partition of a planned multi. */
typedef struct plan_item {
    const kw_zk_offset_t *off;
    char   opath[KW__ZK_PATH_MAX];
    char   fpath[KW__ZK_PATH_MAX];
    char   value[24];
    int    owner_version;
    int    create;            /* offset node absent: create it */
    int    offset_version;
    struct Stat stat;         /* set op result */
} plan_item_t;

/* Build the plan under mu (rule Z1). Returns KW_OK with *nitems (may be 0). */
static kw_err_t plan_commit(kw_zk_t *zk, const kw_zk_offset_t *offs, size_t n, unsigned flags,
                            plan_item_t *items, size_t *nitems, int *ids_version,
                            char *errstr, size_t errlen)
{
    kw_err_t err = KW_OK;
    size_t k = 0;
    pthread_mutex_lock(&zk->mu);
    if (zk->reestablishing || zk->stopping || zk->ids_version < 0) {
        err = kw_seterr(errstr, errlen, zk->stopping ? KW_ECLOSED : KW_EAGAIN,
                        "ZooKeeper session is being re-established; commit refused");
        goto out;
    }
    if (zk->ids_taken) {
        err = kw_seterr(errstr, errlen, KW_EFENCED,
                        "instance '%s' is registered by another session; commit refused",
                        zk->instance);
        goto out;
    }
    *ids_version = zk->ids_version;
    for (size_t i = 0; i < n; i++) {
        kw__zk_owned_t *e = kw__zk_owned_find(zk, offs[i].topic, offs[i].partition);
        if (e == NULL) {
            err = kw_seterr(errstr, errlen, KW_EFENCED,
                            "commit refused: %s/%" PRId32 " is not owned by this instance",
                            offs[i].topic, offs[i].partition);
            goto out;
        }
        if (!e->valid) {
            err = kw_seterr(errstr, errlen, KW_EAGAIN,
                            "commit refused: ownership of %s/%" PRId32 " is being "
                            "re-established", offs[i].topic, offs[i].partition);
            goto out;
        }
        if (e->have_offset && offs[i].next <= e->offset && !(flags & KW_ZK_COMMIT_FORCE)) {
            if (offs[i].next < e->offset) {
                zk->stats.stale_skipped++;
                KW_LOG_D(MOD, "%s/%" PRId32 ": stored offset %" PRId64 " > %" PRId64
                         ", left as it is", e->topic, e->partition, e->offset, offs[i].next);
            }
            continue;
        }
        plan_item_t *it = &items[k++];
        it->off = &offs[i];
        kw__zk_owner_path(zk, e->topic, e->partition, it->opath);
        kw__zk_offset_path(zk, e->topic, e->partition, it->fpath);
        snprintf(it->value, sizeof(it->value), "%" PRId64, offs[i].next);
        it->owner_version = e->owner_version;
        it->create = !e->have_offset;
        it->offset_version = e->offset_version;
    }
out:
    pthread_mutex_unlock(&zk->mu);
    *nitems = k;
    return err;
}

/* After success: update the cache of every item to what is now stored. */
static void commit_applied(kw_zk_t *zk, plan_item_t *items, size_t k, const int *versions)
{
    pthread_mutex_lock(&zk->mu);
    for (size_t i = 0; i < k; i++) {
        kw__zk_owned_t *e = kw__zk_owned_find(zk, items[i].off->topic, items[i].off->partition);
        if (e == NULL || e->owner_version != items[i].owner_version)
            continue;
        e->have_offset = 1;
        e->offset = items[i].off->next;
        e->offset_version = versions[i];
    }
    zk->stats.commits++;
    pthread_mutex_unlock(&zk->mu);
}

/* Refresh the cache of one owned partition from what was read. */
static void cache_set(kw_zk_t *zk, const kw_zk_offset_t *off, int exists, int64_t v, int version)
{
    pthread_mutex_lock(&zk->mu);
    kw__zk_owned_t *e = kw__zk_owned_find(zk, off->topic, off->partition);
    if (e != NULL) {
        e->have_offset = exists;
        e->offset = v;
        e->offset_version = version;
    }
    pthread_mutex_unlock(&zk->mu);
}

typedef enum { RB_APPLIED, RB_NOT_APPLIED, RB_CHANGED, RB_AGAIN } readback_t;

/*
 * Rule Z3: the reply of a multi was lost. Read every offset node back:
 * all hold our values -> applied; all still at the versions we expected ->
 * not applied; anything else -> changed by someone else (caches refreshed).
 * RB_AGAIN when ZooKeeper could not be read before the deadline.
 */
static readback_t commit_readback(kw_zk_t *zk, plan_item_t *items, size_t k,
                                  int *versions, int64_t deadline)
{
    int delay = KW__ZK_BACKOFF_MIN_MS;
    for (;;) {
        kw__zk_conn_t *c = kw__zk_conn_get(zk, 0);
        if (c == NULL)
            return RB_AGAIN;
        int applied = 1, untouched = 1, rc = ZOK;
        for (size_t i = 0; i < k && rc == ZOK; i++) {
            int exists, version, corrupt;
            int64_t v;
            rc = kw__zk_read_offset(c->zh, items[i].fpath, &exists, &v, &version, &corrupt);
            if (rc != ZOK)
                break;
            int mine = exists && !corrupt && v == items[i].off->next;
            int same = items[i].create ? !exists : (exists && version == items[i].offset_version);
            applied &= mine;
            untouched &= same && !mine;
            versions[i] = version;
            if (!mine && !same)
                cache_set(zk, items[i].off, exists, corrupt ? -1 : v, version);
        }
        kw__zk_conn_put(zk, c);
        if (rc == ZOK)
            return applied ? RB_APPLIED : untouched ? RB_NOT_APPLIED : RB_CHANGED;
        if (kw__zk_is_session_gone(rc) || !kw__zk_is_conn_loss(rc) ||
            !kw__zk_backoff(deadline, &delay))
            return RB_AGAIN;
    }
}

kw_err_t kw_zk_commit(kw_zk_t *zk, const kw_zk_offset_t *offs, size_t n,
                      unsigned flags, char *errstr, size_t errlen)
{
    plan_item_t *items = NULL;
    zoo_op_t *ops = NULL;
    zoo_op_result_t *res = NULL;
    int *versions = NULL;
    kw_err_t err = KW_OK;
    int64_t deadline = kw_mono_ms() + zk->op_ms;
    int delay = KW__ZK_BACKOFF_MIN_MS, replans = 0;
    size_t k = 0, nops = 0;
    int ids_version = -1;

    if (n == 0)
        return KW_OK;
    for (size_t i = 0; i < n; i++) {
        err = kw__zk_topic_check(offs[i].topic, offs[i].partition, errstr, errlen);
        if (err == KW_OK && offs[i].next < 0)
            err = kw_seterr(errstr, errlen, KW_EINVAL, "negative offset for %s/%" PRId32,
                            offs[i].topic, offs[i].partition);
        for (size_t j = 0; err == KW_OK && j < i; j++)
            if (offs[j].partition == offs[i].partition && strcmp(offs[j].topic, offs[i].topic) == 0)
                err = kw_seterr(errstr, errlen, KW_EINVAL, "%s/%" PRId32 " twice in one commit",
                                offs[i].topic, offs[i].partition);
        if (err != KW_OK)
            return err;
    }
    items = calloc(n, sizeof(*items));
    ops = calloc(2 * n + 1, sizeof(*ops));
    res = calloc(2 * n + 1, sizeof(*res));
    versions = calloc(n, sizeof(*versions));
    if (items == NULL || ops == NULL || res == NULL || versions == NULL) {
        err = kw_seterr(errstr, errlen, KW_ENOMEM, "out of memory");
        goto cleanup;
    }

replan:
    err = plan_commit(zk, offs, n, flags, items, &k, &ids_version, errstr, errlen);
    if (err != KW_OK || k == 0)
        goto cleanup;
    /* op 0: our ids node, i.e. our session still holds its ephemerals;
     * then per partition its owner check and its offset write (rule Z2) */
    nops = 2 * k + 1;
    zoo_check_op_init(&ops[0], zk->ids_path, ids_version);
    for (size_t i = 0; i < k; i++) {
        plan_item_t *it = &items[i];
        zoo_check_op_init(&ops[2 * i + 1], it->opath, it->owner_version);
        if (it->create)
            zoo_create_op_init(&ops[2 * i + 2], it->fpath, it->value, (int)strlen(it->value),
                               zk->acl, ZOO_PERSISTENT, NULL, 0);
        else
            zoo_set_op_init(&ops[2 * i + 2], it->fpath, it->value, (int)strlen(it->value),
                            it->offset_version, &it->stat);
    }

    for (;;) {
        kw__zk_conn_t *c = kw__zk_conn_get(zk, 0);
        if (c == NULL) {
            err = kw_seterr(errstr, errlen, KW_EAGAIN,
                            "ZooKeeper session is being re-established; commit refused");
            goto cleanup;
        }
        memset(res, 0, nops * sizeof(*res));
        int rc = zk_multi(c->zh, (int)nops, ops, res);
        kw__zk_conn_put(zk, c);

        if (rc == ZOK) {
            for (size_t i = 0; i < k; i++)
                versions[i] = items[i].create ? 0 : items[i].stat.version;
            commit_applied(zk, items, k, versions);
            err = KW_OK;
            goto cleanup;
        }
        if (kw__zk_is_conn_loss(rc)) {
            KW_LOG_W(MOD, "ZooKeeper %s: commit of %zu offsets: %s; reading them back",
                     zk->connect, k, zerror(rc));
            readback_t rb = commit_readback(zk, items, k, versions, deadline);
            if (rb == RB_APPLIED) {
                commit_applied(zk, items, k, versions);
                err = KW_OK;
                goto cleanup;
            }
            if (rb == RB_CHANGED) {
                if (++replans > 3 || kw_mono_ms() >= deadline) {
                    err = kw_seterr(errstr, errlen, KW_EAGAIN,
                                    "offsets changed under the commit; retry");
                    goto cleanup;
                }
                goto replan;
            }
            if (rb == RB_AGAIN || !kw__zk_backoff(deadline, &delay)) {
                err = kw_seterr(errstr, errlen, KW_EAGAIN,
                                "ZooKeeper %s unreachable: commit not known to be applied; "
                                "retry it", zk->connect);
                goto cleanup;
            }
            pthread_mutex_lock(&zk->mu);
            zk->stats.commit_retries++;
            pthread_mutex_unlock(&zk->mu);
            continue;
        }
        if (kw__zk_is_session_gone(rc)) {
            err = kw_seterr(errstr, errlen, KW_EAGAIN,
                            "ZooKeeper session lost during the commit (%s); retry it",
                            zerror(rc));
            goto cleanup;
        }
        /* A guarded op failed: which one? (the others report ZOK or
         * ZRUNTIMEINCONSISTENCY) */
        size_t bad = nops;
        for (size_t i = 0; i < nops; i++)
            if (res[i].err != ZOK && res[i].err != ZRUNTIMEINCONSISTENCY) {
                bad = i;
                break;
            }
        if (bad == 0) {                          /* our session is ending */
            err = kw_seterr(errstr, errlen, KW_EAGAIN,
                            "our ids node %s is gone (%s): the session is ending; "
                            "nothing written, retry", zk->ids_path, zerror(res[0].err));
            goto cleanup;
        }
        if (bad < nops && bad % 2 == 1) {        /* owner check: fenced */
            plan_item_t *it = &items[bad / 2];
            pthread_mutex_lock(&zk->mu);
            kw__zk_owned_t *e = kw__zk_owned_find(zk, it->off->topic, it->off->partition);
            if (e != NULL && e->owner_version == it->owner_version)
                kw__zk_owned_lose(zk, e, "its owner node is gone or changed (commit fenced)");
            pthread_mutex_unlock(&zk->mu);
            err = kw_seterr(errstr, errlen, KW_EFENCED,
                            "commit fenced: owner node %s: %s; nothing written",
                            it->opath, zerror(res[bad].err));
            goto cleanup;
        }
        if (bad < nops && (rc == ZBADVERSION || rc == ZNODEEXISTS || rc == ZNONODE)) {
            /* the offset node changed under us (a forced write?): re-read */
            plan_item_t *it = &items[bad / 2 - 1];
            kw__zk_conn_t *c2 = kw__zk_conn_get(zk, 0);
            int exists = 0, version = -1, corrupt = 0, rrc = ZCONNECTIONLOSS;
            int64_t v = -1;
            if (c2 != NULL) {
                rrc = kw__zk_read_offset(c2->zh, it->fpath, &exists, &v, &version, &corrupt);
                kw__zk_conn_put(zk, c2);
            }
            if (rrc == ZOK)
                cache_set(zk, it->off, exists, corrupt ? -1 : v, version);
            if (++replans > 3 || kw_mono_ms() >= deadline) {
                err = kw_seterr(errstr, errlen, KW_EAGAIN,
                                "offset node %s keeps changing under the commit; retry",
                                it->fpath);
                goto cleanup;
            }
            goto replan;
        }
        err = kw_seterr(errstr, errlen, KW_EIO, "ZooKeeper %s: commit: %s",
                        zk->connect, zerror(rc));
        goto cleanup;
    }

cleanup:
    free(items);
    free(ops);
    free(res);
    free(versions);
    return err;
}
