/*
 * zk_owner.c -- partition ownership in kwal's ZooKeeper store.
 *
 * What it is for: a receiver consumes a partition only while it owns it,
 * and every offset written for the partition is guarded by its owner node
 * (invariant 4, fencing; zk.h, "Fencing"). Owning a partition is holding
 * the ephemeral node /consumers/<group>/owners/<topic>/<partition> in our
 * session, with our instance name as its data.
 *
 * How it works. The local table `owned` (zk->owned) lists the partitions we
 * own: topic, partition, the version of our owner node, whether that node
 * exists in the current session (valid), whether its deletion was seen and
 * is being looked into (suspect, see session_verify in zk_session.c), and a
 * cache of the offset node (exists, value, version). The cache is exact
 * while we own the partition, because only the owner writes the offset (and
 * any other writer is caught by the version in our set op, which makes us
 * re-read it).
 *
 * kw_zk_own creates the owner node (own_once) with a deletion watch on it
 * and reads the stored offset into the cache; while another session holds
 * the node it waits for a watch event, polling every OWN_POLL_MS. When the
 * client's watcher (zk_session.c) sees one of our owner nodes deleted,
 * kw__zk_owner_deleted marks the entry suspect, and the zk-session thread
 * finds out whether our session is still alive: if so someone else deleted
 * the node and the partition is lost (kw__zk_owned_lose; kw_zk_lost hands
 * it out); if not, the expiry is on its way. After an expiry the session
 * thread re-creates every owner node on the new session (kw__zk_reown); a
 * partition another instance took meanwhile is lost. kw_zk_disown forgets
 * the entry first (so later commits for it are refused), then deletes the
 * node.
 *
 * This file also holds the node operations the other files share: creating
 * a path, reading an offset node. zk_session.c and zk_offsets.c call into
 * this file; it calls neither (zk_int.h).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "zk_int.h"

#define OWN_POLL_MS 200

/* ------------------------------------------------------------------ */
/* node operations every file uses                                    */
/* ------------------------------------------------------------------ */

/* ASCII decimal, digits only, no overflow. */
static int parse_offset(const char *buf, int len, int64_t *out)
{
    int64_t v = 0;
    if (len <= 0 || len > 19)
        return -1;
    for (int i = 0; i < len; i++) {
        if (buf[i] < '0' || buf[i] > '9')
            return -1;
        if (v > (INT64_MAX - (buf[i] - '0')) / 10)
            return -1;
        v = v * 10 + (buf[i] - '0');
    }
    *out = v;
    return 0;
}

kw_err_t kw__zk_topic_check(const char *topic, int32_t partition,
                            char *errstr, size_t errlen)
{
    if (!kw__zk_valid_name(topic, KW_ZK_TOPIC_MAX))
        return kw_seterr(errstr, errlen, KW_EINVAL, "bad topic name '%s'",
                         topic ? topic : "(null)");
    if (partition < 0)
        return kw_seterr(errstr, errlen, KW_EINVAL, "bad partition %" PRId32, partition);
    return KW_OK;
}

/* Create every missing component of path (persistent, our ACL). Raw rc.
 * A path that exists costs one read: a create, even one that fails, is a
 * transaction the server syncs to its log. */
static int ensure_path(kw_zk_t *zk, zhandle_t *zh, const char *path)
{
    char buf[KW__ZK_PATH_MAX];
    struct Stat st;
    if (zoo_exists(zh, path, 0, &st) == ZOK)
        return ZOK;
    snprintf(buf, sizeof(buf), "%s", path);
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || *p == '\0') {
            char c = *p;
            *p = '\0';
            int rc = zoo_create(zh, buf, NULL, -1, zk->acl, ZOO_PERSISTENT, NULL, 0);
            if (rc != ZOK && rc != ZNODEEXISTS)
                return rc;
            *p = c;
            if (c == '\0')
                return ZOK;
        }
    }
}

/* ensure_path, retried across connection loss until the deadline. */
kw_err_t kw__zk_ensure_path_retry(kw_zk_t *zk, zhandle_t *zh, const char *path,
                                  int64_t deadline, char *errstr, size_t errlen)
{
    int delay = KW__ZK_BACKOFF_MIN_MS, rc;
    while ((rc = ensure_path(zk, zh, path)) != ZOK) {
        if (kw__zk_is_session_gone(rc))
            return kw_seterr(errstr, errlen, KW_EAGAIN, "ZooKeeper %s: creating %s: %s",
                             zk->connect, path, zerror(rc));
        if (!kw__zk_is_conn_loss(rc))
            return kw_seterr(errstr, errlen, KW_EIO, "ZooKeeper %s: creating %s: %s",
                             zk->connect, path, zerror(rc));
        if (!kw__zk_backoff(deadline, &delay))
            return kw_seterr(errstr, errlen, KW_EAGAIN, "ZooKeeper %s: creating %s: %s",
                             zk->connect, path, zerror(rc));
    }
    return KW_OK;
}

/* Read an offset node: *exists, *value, *version. Raw ZooKeeper rc. */
int kw__zk_read_offset(zhandle_t *zh, const char *path, int *exists, int64_t *value,
                       int *version, int *corrupt)
{
    char buf[64];
    int len = (int)sizeof(buf);
    struct Stat st;
    int rc = zoo_get(zh, path, 0, buf, &len, &st);
    *corrupt = 0;
    if (rc == ZNONODE) {
        *exists = 0;
        *value = -1;
        *version = -1;
        return ZOK;
    }
    if (rc != ZOK)
        return rc;
    *exists = 1;
    *version = st.version;
    if (parse_offset(buf, len, value) != 0)
        *corrupt = 1;
    return ZOK;
}

/* ------------------------------------------------------------------ */
/* the local ownership table (mu held)                                */
/* ------------------------------------------------------------------ */

kw__zk_owned_t *kw__zk_owned_find(kw_zk_t *zk, const char *topic, int32_t p)
{
    for (size_t i = 0; i < zk->nowned; i++)
        if (zk->owned[i].partition == p && strcmp(zk->owned[i].topic, topic) == 0)
            return &zk->owned[i];
    return NULL;
}

static kw__zk_owned_t *owned_add(kw_zk_t *zk, const char *topic, int32_t p)
{
    if (zk->nowned == zk->capowned) {
        size_t cap = zk->capowned ? zk->capowned * 2 : 16;
        kw__zk_owned_t *n = realloc(zk->owned, cap * sizeof(*n));
        if (n == NULL)
            return NULL;
        zk->owned = n;
        zk->capowned = cap;
    }
    kw__zk_owned_t *e = &zk->owned[zk->nowned++];
    memset(e, 0, sizeof(*e));
    snprintf(e->topic, sizeof(e->topic), "%s", topic);
    e->partition = p;
    return e;
}

static void owned_remove(kw_zk_t *zk, kw__zk_owned_t *e)
{
    size_t i = (size_t)(e - zk->owned);
    memmove(&zk->owned[i], &zk->owned[i + 1], (zk->nowned - i - 1) * sizeof(*e));
    zk->nowned--;
}

/* Whether topic's parents (owners/<topic>, offsets/<topic>) are known to
 * exist; mark (on) or forget (off) it. mu held. */
static int topic_ensured(const kw_zk_t *zk, const char *topic)
{
    for (size_t i = 0; i < zk->nensured; i++)
        if (strcmp(zk->ensured[i].topic, topic) == 0)
            return 1;
    return 0;
}

static void topic_mark(kw_zk_t *zk, const char *topic, int on)
{
    for (size_t i = 0; i < zk->nensured; i++)
        if (strcmp(zk->ensured[i].topic, topic) == 0) {
            if (!on)
                zk->ensured[i] = zk->ensured[--zk->nensured];
            return;
        }
    if (!on)
        return;
    if (zk->nensured == zk->capensured) {
        size_t cap = zk->capensured ? zk->capensured * 2 : 8;
        kw_zk_partition_t *n = realloc(zk->ensured, cap * sizeof(*n));
        if (n == NULL)
            return;                     /* not remembered: ensured again next time */
        zk->ensured = n;
        zk->capensured = cap;
    }
    snprintf(zk->ensured[zk->nensured++].topic, KW_ZK_TOPIC_MAX, "%s", topic);
}

/* An inherited owner node was taken back: no longer to be released. mu held. */
static void inherited_forget(kw_zk_t *zk, const char *topic, int32_t p)
{
    for (size_t i = 0; i < zk->ninherited; i++) {
        if (zk->inherited[i].partition == p && strcmp(zk->inherited[i].topic, topic) == 0) {
            zk->inherited[i] = zk->inherited[--zk->ninherited];
            return;
        }
    }
}

/* The partition is no longer ours: drop it and report it through kw_zk_lost. */
void kw__zk_owned_lose(kw_zk_t *zk, kw__zk_owned_t *e, const char *why)
{
    KW_LOG_W(MOD, "partition %s/%" PRId32 " lost: %s", e->topic, e->partition, why);
    if (zk->nlost == zk->caplost) {
        size_t cap = zk->caplost ? zk->caplost * 2 : 16;
        kw_zk_partition_t *n = realloc(zk->lost, cap * sizeof(*n));
        if (n != NULL) {
            zk->lost = n;
            zk->caplost = cap;
        }
    }
    if (zk->nlost < zk->caplost) {
        snprintf(zk->lost[zk->nlost].topic, KW_ZK_TOPIC_MAX, "%s", e->topic);
        zk->lost[zk->nlost].partition = e->partition;
        zk->nlost++;
    }
    zk->stats.lost_total++;
    owned_remove(zk, e);
}

/*
 * The watcher saw path deleted (on the current conn, not dead). Either
 * someone deleted our owner node (lost) or our session is ending and the
 * expiry is still on its way: the session thread tells them apart
 * (session_verify in zk_session.c).
 */
void kw__zk_owner_deleted(kw_zk_t *zk, const char *path)
{
    size_t blen = strlen(zk->base);
    if (strncmp(path, zk->base, blen) == 0 && strncmp(path + blen, "/owners/", 8) == 0) {
        const char *tp = path + blen + 8;
        const char *slash = strrchr(tp, '/');
        char topic[KW_ZK_TOPIC_MAX];
        int64_t p;
        if (slash != NULL && (size_t)(slash - tp) < sizeof(topic) &&
            parse_offset(slash + 1, (int)strlen(slash + 1), &p) == 0 && p <= INT32_MAX) {
            memcpy(topic, tp, (size_t)(slash - tp));
            topic[slash - tp] = '\0';
            kw__zk_owned_t *e = kw__zk_owned_find(zk, topic, (int32_t)p);
            if (e != NULL && e->valid) {
                e->valid = 0;
                e->suspect = 1;
                zk->verify_needed = 1;
            }
        }
    }
}

/* ------------------------------------------------------------------ */
/* owning                                                             */
/* ------------------------------------------------------------------ */

typedef enum { OWN_OK, OWN_HELD, OWN_RETRY, OWN_GONE, OWN_ERR } own_rc_t;

/* While inherited nodes may still be released, adopting one and deleting
 * it must not interleave: 1 with inherit_mu taken (the caller unlocks it
 * after own_once and its bookkeeping), 0 when nothing is left to release. */
static int inherit_guard(kw_zk_t *zk)
{
    pthread_mutex_lock(&zk->mu);
    int guard = zk->inherit_pending;
    pthread_mutex_unlock(&zk->mu);
    if (guard)
        pthread_mutex_lock(&zk->inherit_mu);
    return guard;
}

/*
 * One attempt to create (or recognise) our owner node on zh. OWN_OK with
 * *version; OWN_HELD with holder (another session's node); OWN_RETRY after
 * connection loss; OWN_GONE when the session is gone; OWN_ERR otherwise
 * (*zrc tells). A watch is left on the node. adopt: this session may hold
 * the node already (inherited nodes not yet released): look first.
 */
static own_rc_t own_once(kw_zk_t *zk, zhandle_t *zh, const char *path, int adopt,
                         int *version, char *holder, size_t holderlen, int *zrc)
{
    struct Stat st;
    int64_t sid = zoo_client_id(zh)->client_id;
    char buf[256];
    int len = (int)sizeof(buf) - 1;
    int rc;

    /* a node this session holds already (inherited from a resumed session,
     * or a create whose reply was lost) is adopted by a read: a create, even
     * one that fails, is a transaction the server syncs to its log */
    if (adopt) {
        rc = zoo_get(zh, path, 1, buf, &len, &st);
        if (rc == ZOK && st.ephemeralOwner == sid) {
            *zrc = rc;
            *version = st.version;
            return OWN_OK;
        }
        len = (int)sizeof(buf) - 1;
    }
    rc = zoo_create2(zh, path, zk->instance, (int)strlen(zk->instance), zk->acl,
                     ZOO_EPHEMERAL, NULL, 0, &st);
    *zrc = rc;
    if (rc == ZOK) {
        *version = st.version;
        /* a deletion watch on our own node (zk.h, "Fencing") */
        rc = zoo_exists(zh, path, 1, &st);
        *zrc = rc;
        if (rc == ZOK)
            return OWN_OK;
        /* deleted already? then the next attempt re-creates it */
    } else if (rc == ZNODEEXISTS) {
        rc = zoo_get(zh, path, 1, buf, &len, &st);
        *zrc = rc;
        if (rc == ZOK) {
            if (st.ephemeralOwner == sid) {      /* ours: a create whose reply was lost */
                *version = st.version;
                return OWN_OK;
            }
            buf[len < 0 ? 0 : len] = '\0';
            snprintf(holder, holderlen, "%s", buf);
            return OWN_HELD;
        }
    }
    if (rc == ZNONODE)
        return OWN_RETRY;                        /* released meanwhile, or parent missing */
    if (kw__zk_is_conn_loss(rc))
        return OWN_RETRY;
    if (kw__zk_is_session_gone(rc))
        return OWN_GONE;
    return OWN_ERR;
}

kw_err_t kw_zk_own(kw_zk_t *zk, const char *topic, int32_t partition,
                   int timeout_ms, char *errstr, size_t errlen)
{
    char opath[KW__ZK_PATH_MAX], fpath[KW__ZK_PATH_MAX], parent[KW__ZK_PATH_MAX];
    char holder[256] = "";
    int64_t deadline = kw_mono_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    int64_t op_deadline = kw_mono_ms() + zk->op_ms;
    int delay = KW__ZK_BACKOFF_MIN_MS;
    kw_err_t err = kw__zk_topic_check(topic, partition, errstr, errlen);
    if (err != KW_OK)
        return err;
    kw__zk_owner_path(zk, topic, partition, opath);
    kw__zk_offset_path(zk, topic, partition, fpath);

    for (;;) {
        int64_t dl = deadline > op_deadline ? deadline : op_deadline;
        if (kw__zk_wait_active_until(zk, dl) != KW_OK)
            return kw_seterr(errstr, errlen, KW_EAGAIN,
                             "ZooKeeper %s: session not re-established in time", zk->connect);
        pthread_mutex_lock(&zk->mu);
        kw__zk_owned_t *e = kw__zk_owned_find(zk, topic, partition);
        int have = e != NULL && e->valid;
        int registered = zk->registered;
        uint64_t gen = zk->watch_gen;
        pthread_mutex_unlock(&zk->mu);
        if (!registered)
            return kw_seterr(errstr, errlen, KW_EINVAL,
                             "kw_zk_own before kw_zk_register (commits check the ids node)");
        if (have)
            return KW_OK;

        kw__zk_conn_t *c = kw__zk_conn_get(zk, 0);
        if (c == NULL)
            continue;                            /* re-establishing: wait above */
        pthread_mutex_lock(&zk->mu);
        int ensured = topic_ensured(zk, topic);
        pthread_mutex_unlock(&zk->mu);
        err = KW_OK;
        if (!ensured) {                          /* once per topic, not per partition */
            snprintf(parent, sizeof(parent), "%s/owners/%s", zk->base, topic);
            err = kw__zk_ensure_path_retry(zk, c->zh, parent, dl, errstr, errlen);
            if (err == KW_OK) {
                snprintf(parent, sizeof(parent), "%s/offsets/%s", zk->base, topic);
                err = kw__zk_ensure_path_retry(zk, c->zh, parent, dl, errstr, errlen);
            }
            if (err == KW_OK) {
                pthread_mutex_lock(&zk->mu);
                topic_mark(zk, topic, 1);
                pthread_mutex_unlock(&zk->mu);
            }
        }
        if (err != KW_OK) {
            kw__zk_conn_put(zk, c);
            if (err == KW_EAGAIN && kw_mono_ms() < dl)
                continue;
            return err;
        }
        int version = 0, zrc = ZOK, exists = 0, offver = -1, corrupt = 0;
        int64_t off = -1;
        int guard = inherit_guard(zk);
        own_rc_t orc = own_once(zk, c->zh, opath, guard, &version, holder,
                                   sizeof(holder), &zrc);
        if (orc == OWN_OK) {
            /* read the stored offset into the cache (retried) */
            while ((zrc = kw__zk_read_offset(c->zh, fpath, &exists, &off, &offver,
                                             &corrupt)) != ZOK &&
                   kw__zk_is_conn_loss(zrc) && kw__zk_backoff(op_deadline, &delay))
                ;
            if (zrc != ZOK)
                orc = kw__zk_is_session_gone(zrc) ? OWN_GONE : OWN_ERR;
            else if (corrupt) {
                /* give the node up again: the receiver must not consume
                 * this partition without knowing where to start */
                zoo_delete(c->zh, opath, -1);
                if (guard)
                    pthread_mutex_unlock(&zk->inherit_mu);
                kw__zk_conn_put(zk, c);
                return kw_seterr(errstr, errlen, KW_ECORRUPT,
                                 "ZooKeeper %s: %s does not hold an ASCII decimal offset",
                                 zk->connect, fpath);
            }
        }
        if (orc == OWN_OK) {
            int added = 0;
            pthread_mutex_lock(&zk->mu);
            if (zk->conn == c && !zk->reestablishing && !c->dead) {
                kw__zk_owned_t *n = kw__zk_owned_find(zk, topic, partition);
                if (n == NULL)
                    n = owned_add(zk, topic, partition);
                if (n != NULL) {
                    n->valid = 1;
                    n->suspect = 0;
                    n->owner_version = version;
                    n->have_offset = exists;
                    n->offset = off;
                    n->offset_version = offver;
                    added = 1;
                    inherited_forget(zk, topic, partition);
                }
            }
            pthread_mutex_unlock(&zk->mu);
            if (guard)
                pthread_mutex_unlock(&zk->inherit_mu);
            kw__zk_conn_put(zk, c);
            if (added) {
                KW_LOG_D(MOD, "owns %s/%" PRId32, topic, partition);
                return KW_OK;
            }
            continue;                            /* session changed meanwhile: again */
        }
        if (guard)
            pthread_mutex_unlock(&zk->inherit_mu);
        kw__zk_conn_put(zk, c);
        if (orc == OWN_ERR)
            return kw_seterr(errstr, errlen, KW_EIO, "ZooKeeper %s: owning %s: %s",
                             zk->connect, opath, zerror(zrc));
        if (orc == OWN_GONE)
            continue;                            /* the session thread takes over */
        if (orc == OWN_RETRY) {
            if (zrc == ZNONODE) {                /* a parent went missing: ensure again */
                pthread_mutex_lock(&zk->mu);
                topic_mark(zk, topic, 0);
                pthread_mutex_unlock(&zk->mu);
            }
            if (!kw__zk_backoff(dl, &delay))
                return kw_seterr(errstr, errlen, KW_EAGAIN, "ZooKeeper %s: owning %s: %s",
                                 zk->connect, opath, zerror(zrc));
            continue;
        }
        /* OWN_HELD: wait for a watch event, or poll */
        int64_t now = kw_mono_ms();
        if (now >= deadline)
            return kw_seterr(errstr, errlen, KW_EBUSY,
                             "%s/%" PRId32 " is owned by '%s' (waited %d ms)",
                             topic, partition, holder, timeout_ms);
        int64_t until = now + OWN_POLL_MS < deadline ? now + OWN_POLL_MS : deadline;
        pthread_mutex_lock(&zk->mu);
        while (zk->watch_gen == gen && !zk->stopping && kw_mono_ms() < until)
            kw__zk_cond_wait_until(zk, until);
        pthread_mutex_unlock(&zk->mu);
        delay = KW__ZK_BACKOFF_MIN_MS;
    }
}

kw_err_t kw_zk_disown(kw_zk_t *zk, const char *topic, int32_t partition,
                      char *errstr, size_t errlen)
{
    char opath[KW__ZK_PATH_MAX];
    kw_err_t err = kw__zk_topic_check(topic, partition, errstr, errlen);
    if (err != KW_OK)
        return err;
    kw__zk_owner_path(zk, topic, partition, opath);

    pthread_mutex_lock(&zk->mu);
    kw__zk_owned_t *e = kw__zk_owned_find(zk, topic, partition);
    int valid = e != NULL && e->valid;
    int version = e != NULL ? e->owner_version : -1;
    if (e != NULL)
        owned_remove(zk, e);
    pthread_mutex_unlock(&zk->mu);
    /* Not valid: the node belongs to no live session of ours; the session
     * thread deletes one it re-creates for an entry that is gone. */
    if (!valid)
        return KW_OK;

    kw__zk_conn_t *c = kw__zk_conn_get(zk, 1);
    if (c == NULL)
        return KW_OK;
    int64_t deadline = kw_mono_ms() + zk->op_ms;
    int delay = KW__ZK_BACKOFF_MIN_MS, rc;
    while ((rc = zoo_delete(c->zh, opath, version)) != ZOK && kw__zk_is_conn_loss(rc) &&
           kw__zk_backoff(deadline, &delay))
        ;
    kw__zk_conn_put(zk, c);
    if (rc == ZOK || rc == ZNONODE || kw__zk_is_session_gone(rc))
        return KW_OK;                            /* gone either way */
    return kw_seterr(errstr, errlen, rc == ZBADVERSION ? KW_EFENCED : KW_EIO,
                     "ZooKeeper %s: deleting %s: %s", zk->connect, opath, zerror(rc));
}

size_t kw_zk_owned(kw_zk_t *zk, kw_zk_partition_t *out, size_t nmax)
{
    pthread_mutex_lock(&zk->mu);
    size_t n = zk->nowned;
    for (size_t i = 0; i < n && i < nmax; i++) {
        snprintf(out[i].topic, KW_ZK_TOPIC_MAX, "%s", zk->owned[i].topic);
        out[i].partition = zk->owned[i].partition;
    }
    pthread_mutex_unlock(&zk->mu);
    return n;
}

size_t kw_zk_lost(kw_zk_t *zk, kw_zk_partition_t *out, size_t nmax)
{
    pthread_mutex_lock(&zk->mu);
    size_t n = zk->nlost < nmax ? zk->nlost : nmax;
    if (n > 0) {          /* zk->lost is NULL until something is lost */
        memcpy(out, zk->lost, n * sizeof(*out));
        memmove(zk->lost, zk->lost + n, (zk->nlost - n) * sizeof(*out));
        zk->nlost -= n;
    }
    pthread_mutex_unlock(&zk->mu);
    return n;
}

/* ------------------------------------------------------------------ */
/* re-owning after expiry (the zk-session thread)                     */
/* ------------------------------------------------------------------ */

/*
 * Re-own one partition on the new session c. 0 done (owned, lost or
 * forgotten), -1 the session died meanwhile (start over), 1 stopping.
 */
int kw__zk_reown(kw_zk_t *zk, kw__zk_conn_t *c, const kw_zk_partition_t *p)
{
    char opath[KW__ZK_PATH_MAX], fpath[KW__ZK_PATH_MAX], parent[KW__ZK_PATH_MAX];
    char holder[256] = "";
    kw__zk_owner_path(zk, p->topic, p->partition, opath);
    kw__zk_offset_path(zk, p->topic, p->partition, fpath);
    snprintf(parent, sizeof(parent), "%s/owners/%s", zk->base, p->topic);
    int delay = KW__ZK_BACKOFF_MIN_MS;
    for (;;) {
        pthread_mutex_lock(&zk->mu);
        int stop = zk->stopping, dead = c->dead;
        pthread_mutex_unlock(&zk->mu);
        if (stop)
            return 1;
        if (dead)
            return -1;
        int version = 0, zrc = ZOK, exists = 0, offver = -1, corrupt = 0;
        int64_t off = -1;
        int guard = inherit_guard(zk);
        own_rc_t orc = own_once(zk, c->zh, opath, guard, &version, holder,
                                   sizeof(holder), &zrc);
        if (orc == OWN_OK) {
            zrc = kw__zk_read_offset(c->zh, fpath, &exists, &off, &offver, &corrupt);
            if (zrc != ZOK)
                orc = kw__zk_is_session_gone(zrc) ? OWN_GONE : OWN_RETRY;
        }
        if (orc == OWN_GONE)
            return -1;
        if (orc == OWN_RETRY || orc == OWN_ERR) {
            if (zrc == ZNONODE)
                ensure_path(zk, c->zh, parent);
            if (orc == OWN_ERR)
                KW_LOG_W(MOD, "re-owning %s: %s; retrying", opath, zerror(zrc));
            kw__zk_backoff(kw_mono_ms() + delay, &delay);
            continue;
        }
        int delete_it = 0;
        pthread_mutex_lock(&zk->mu);
        kw__zk_owned_t *e = kw__zk_owned_find(zk, p->topic, p->partition);
        if (orc == OWN_HELD) {
            if (e != NULL) {
                char why[400];
                snprintf(why, sizeof(why), "taken by '%s' while our session was gone", holder);
                kw__zk_owned_lose(zk, e, why);
            }
        } else if (e == NULL) {
            delete_it = 1;                       /* disowned meanwhile */
        } else {
            e->valid = 1;
            e->suspect = 0;
            e->owner_version = version;
            e->have_offset = exists;
            e->offset = corrupt ? -1 : off;
            e->offset_version = offver;
        }
        pthread_mutex_unlock(&zk->mu);
        if (delete_it)
            zoo_delete(c->zh, opath, version);
        return 0;
    }
}

/* ------------------------------------------------------------------ */
/* owner nodes inherited from a resumed session                       */
/* ------------------------------------------------------------------ */

/* get_children retried across connection loss until the deadline. */
static int children_retry(zhandle_t *zh, const char *path, int64_t deadline,
                          struct String_vector *out)
{
    int delay = KW__ZK_BACKOFF_MIN_MS, rc;
    while ((rc = zoo_get_children(zh, path, 0, out)) != ZOK && kw__zk_is_conn_loss(rc) &&
           kw__zk_backoff(deadline, &delay))
        ;
    return rc;
}

kw_err_t kw__zk_inherit_scan(kw_zk_t *zk, kw__zk_conn_t *c, int64_t deadline,
                             char *errstr, size_t errlen)
{
    char path[KW__ZK_PATH_MAX];
    struct String_vector topics = { 0, NULL };
    int64_t sid = zoo_client_id(c->zh)->client_id;
    kw_err_t err = KW_OK;
    int rc;

    snprintf(path, sizeof(path), "%s/owners", zk->base);
    rc = children_retry(c->zh, path, deadline, &topics);
    if (rc == ZNONODE)
        return KW_OK;
    if (rc != ZOK)
        return kw_seterr(errstr, errlen, KW_EAGAIN, "ZooKeeper %s: listing %s: %s",
                         zk->connect, path, zerror(rc));
    for (int32_t t = 0; t < topics.count && err == KW_OK; t++) {
        struct String_vector parts = { 0, NULL };
        const char *topic = topics.data[t];

        if (!kw__zk_valid_name(topic, KW_ZK_TOPIC_MAX))
            continue;
        snprintf(path, sizeof(path), "%s/owners/%s", zk->base, topic);
        rc = children_retry(c->zh, path, deadline, &parts);
        if (rc == ZNONODE)
            continue;
        if (rc != ZOK) {
            err = kw_seterr(errstr, errlen, KW_EAGAIN, "ZooKeeper %s: listing %s: %s",
                            zk->connect, path, zerror(rc));
            break;
        }
        for (int32_t i = 0; i < parts.count; i++) {
            int64_t p;
            struct Stat st;
            int delay = KW__ZK_BACKOFF_MIN_MS;

            if (parse_offset(parts.data[i], (int)strlen(parts.data[i]), &p) != 0 ||
                p > INT32_MAX)
                continue;
            snprintf(path, sizeof(path), "%s/owners/%s/%s", zk->base, topic, parts.data[i]);
            while ((rc = zoo_exists(c->zh, path, 0, &st)) != ZOK && kw__zk_is_conn_loss(rc) &&
                   kw__zk_backoff(deadline, &delay))
                ;
            if (rc == ZNONODE || (rc == ZOK && st.ephemeralOwner != sid))
                continue;
            if (rc != ZOK) {
                err = kw_seterr(errstr, errlen, KW_EAGAIN, "ZooKeeper %s: reading %s: %s",
                                zk->connect, path, zerror(rc));
                break;
            }
            pthread_mutex_lock(&zk->mu);
            kw_zk_partition_t *n = realloc(zk->inherited,
                                           (zk->ninherited + 1) * sizeof(*n));
            if (n != NULL) {
                zk->inherited = n;
                snprintf(n[zk->ninherited].topic, KW_ZK_TOPIC_MAX, "%s", topic);
                n[zk->ninherited].partition = (int32_t)p;
                zk->ninherited++;
                zk->stats.inherited++;
                zk->inherit_pending = 1;
            }
            pthread_mutex_unlock(&zk->mu);
            if (n == NULL)
                err = kw_seterr(errstr, errlen, KW_ENOMEM, "out of memory");
        }
        deallocate_String_vector(&parts);
    }
    deallocate_String_vector(&topics);
    return err;
}

size_t kw_zk_release_inherited(kw_zk_t *zk)
{
    char opath[KW__ZK_PATH_MAX];
    size_t released = 0;

    pthread_mutex_lock(&zk->inherit_mu);
    kw__zk_conn_t *c = kw__zk_conn_get(zk, 0);
    pthread_mutex_lock(&zk->mu);
    /* a session that expired since took its nodes along: nothing to do */
    size_t n = c != NULL ? zk->ninherited : 0;
    kw_zk_partition_t *list = zk->inherited;
    zk->inherited = NULL;
    zk->ninherited = 0;
    /* inherit_pending stays set until the deletes are done: a kw_zk_own
     * meanwhile must wait for inherit_mu (inherit_guard), or it could
     * recognise a node of this list as its own just before it is deleted */
    pthread_mutex_unlock(&zk->mu);
    for (size_t i = 0; i < n; i++) {
        int64_t deadline = kw_mono_ms() + zk->op_ms;
        int delay = KW__ZK_BACKOFF_MIN_MS, rc;

        struct Stat st;

        kw__zk_owner_path(zk, list[i].topic, list[i].partition, opath);
        /* only a node of this session: after an expiry the path may be
         * another instance's (our delete would fail on an expired handle,
         * but a re-established one is a new session) */
        while ((rc = zoo_exists(c->zh, opath, 0, &st)) != ZOK && kw__zk_is_conn_loss(rc) &&
               kw__zk_backoff(deadline, &delay))
            ;
        if (rc == ZOK && st.ephemeralOwner != zoo_client_id(c->zh)->client_id)
            rc = ZNONODE;
        while (rc == ZOK && (rc = zoo_delete(c->zh, opath, st.version)) != ZOK &&
               kw__zk_is_conn_loss(rc) && kw__zk_backoff(deadline, &delay))
            rc = ZOK;
        if (rc == ZOK) {
            released++;
            KW_LOG_I(MOD, "%s/%" PRId32 ": released (owned by this instance before the "
                     "restart, not taken back)", list[i].topic, list[i].partition);
        } else if (rc != ZNONODE) {
            KW_LOG_W(MOD, "%s/%" PRId32 ": cannot release the owner node inherited from "
                     "the resumed session (%s); it goes when the session ends",
                     list[i].topic, list[i].partition, zerror(rc));
        }
    }
    if (c != NULL)
        kw__zk_conn_put(zk, c);
    pthread_mutex_lock(&zk->mu);
    zk->stats.inherited_released += released;
    zk->inherit_pending = 0;
    pthread_mutex_unlock(&zk->mu);
    pthread_mutex_unlock(&zk->inherit_mu);
    free(list);
    return released;
}

/* ------------------------------------------------------------------ */
/* the group's instances                                              */
/* ------------------------------------------------------------------ */

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

void kw_zk_names_free(char **names, size_t n)
{
    for (size_t i = 0; names != NULL && i < n; i++)
        free(names[i]);
    free(names);
}

kw_err_t kw_zk_members(kw_zk_t *zk, char ***names, size_t *n, char *errstr, size_t errlen)
{
    char path[KW__ZK_PATH_MAX];
    struct String_vector kids = { 0, NULL };
    kw__zk_conn_t *c = kw__zk_conn_get(zk, 0);
    char **out;
    int rc;

    *names = NULL;
    *n = 0;
    if (c == NULL)
        return kw_seterr(errstr, errlen, KW_EAGAIN, "ZooKeeper %s: session being "
                         "re-established", zk->connect);
    snprintf(path, sizeof(path), "%s/ids", zk->base);
    rc = children_retry(c->zh, path, kw_mono_ms() + zk->op_ms, &kids);
    kw__zk_conn_put(zk, c);
    if (rc != ZOK)
        return kw_seterr(errstr, errlen, kw__zk_is_conn_loss(rc) ? KW_EAGAIN : KW_EIO,
                         "ZooKeeper %s: listing %s: %s", zk->connect, path, zerror(rc));
    out = calloc(kids.count > 0 ? (size_t)kids.count : 1, sizeof(*out));
    for (int32_t i = 0; out != NULL && i < kids.count; i++)
        if ((out[i] = strdup(kids.data[i])) == NULL) {
            kw_zk_names_free(out, (size_t)i);
            out = NULL;
        }
    if (out == NULL) {
        deallocate_String_vector(&kids);
        return kw_seterr(errstr, errlen, KW_ENOMEM, "out of memory");
    }
    qsort(out, (size_t)kids.count, sizeof(*out), name_cmp);
    *names = out;
    *n = (size_t)kids.count;
    deallocate_String_vector(&kids);
    return KW_OK;
}
