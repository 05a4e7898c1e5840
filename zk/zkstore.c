/*
 * zkstore.c -- kwal's ZooKeeper offset store and partition ownership.
 *
 * What it is for: the durability pipeline records each partition's next
 * offset in ZooKeeper once a block is durable, and receivers claim the
 * partitions they consume with ephemeral owner nodes, in the layout of
 * Kafka's ZooKeeper-based consumers (DESIGN.md, "ZooKeeper layout"). Every
 * offset write is guarded by the owner node (invariant 4, fencing).
 *
 * How it works. One kw_zk_t holds one live ZooKeeper client handle (a
 * zk_conn_t: the zhandle_t of the multi-threaded C client, a reference
 * count, and what its watcher saw: connected, dead). Calls take a reference
 * on the current conn under the mutex, drop the mutex, make their
 * synchronous ZooKeeper call, and give the reference back; a conn retired
 * by the session thread is closed by whoever drops its last reference, so
 * no call ever blocks on another's round trip and no handle is closed under
 * a caller.
 *
 * The local table `owned` lists the partitions we own: topic, partition, the
 * version of our owner node, whether that node exists in the current
 * session (valid), whether its deletion was seen and is being looked into
 * (suspect, see session_verify), and a cache of the offset node (exists,
 * value, version).
 * The cache is exact while we own the partition, because only the owner
 * writes the offset (and any other writer is caught by the version in our
 * set op, which makes us re-read it).
 *
 * States (kw_zk_state_t) and their transitions:
 *
 *      ACTIVE <--------- watcher: ZOO_CONNECTED_STATE ---------- DISCONNECTED
 *        |  \---------- watcher: ZOO_CONNECTING_STATE ----------->   |
 *        |                                                          |
 *        +--- watcher: ZOO_EXPIRED_SESSION_STATE (zk_watcher) ------+
 *        |                          |
 *        |                          v
 *        +<-- session_thread --- REESTABLISHING: new session, ids node,
 *             (epoch + 1)        owner nodes, offsets re-read
 *
 * Numbered rules the code refers to:
 *
 *  Z1. A commit is sent only for partitions whose entry is valid, and only
 *      while the state is not REESTABLISHING (invariant 4 locally).
 *  Z2. Each multi checks our ids node (the session still holds its
 *      ephemerals), every owner node at the version we created it with, and
 *      writes each offset node at the version we last saw, so an ending
 *      session, a stale owner or a concurrent writer makes the whole multi
 *      fail (invariant 4 in ZooKeeper).
 *  Z3. A multi whose reply is lost is resolved by reading the offsets back
 *      before anything else is sent (see zkstore.h).
 *  Z4. No ZooKeeper call is made with the mutex held, and the watcher (on
 *      the client's completion thread) only takes the mutex: so the mutex
 *      never waits on the completion thread.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "zk.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <zookeeper/zookeeper.h>

#include "kw_log.h"

#define MOD "zkstore"
#define PATH_MAX_LEN 1024
#define BACKOFF_MIN_MS 50
#define BACKOFF_MAX_MS 1000
#define OWN_POLL_MS    200

typedef struct zk_conn {
    struct kw_zk *zk;
    zhandle_t    *zh;
    int           refs;       /* calls using zh; under zk->mu */
    int           retired;    /* no longer zk->conn; last ref closes it */
    int           connected;  /* last session event: connected */
    int           dead;       /* expired or auth failed: useless */
} zk_conn_t;

typedef struct zk_owned {
    char     topic[KW_ZK_TOPIC_MAX];
    int32_t  partition;
    int      valid;           /* owner node exists in the current session */
    int      suspect;         /* its deletion was seen: lost, or our session ending? */
    int      owner_version;
    int      have_offset;     /* offset node exists */
    int64_t  offset;
    int      offset_version;
} zk_owned_t;

struct kw_zk {
    /* immutable after kw_zk_new */
    char *connect;            /* as given, for messages */
    char *hosts;              /* connect without the chroot */
    char *base;               /* <chroot>/consumers/<group> */
    char *chroot;             /* "" or "/x/y" */
    char *instance;
    char *digest;             /* NULL: open ACLs */
    int   session_ms, connect_ms, op_ms;
    struct ACL_vector *acl;

    pthread_mutex_t mu;       /* everything below */
    pthread_cond_t  cond;     /* state changes and watch events */
    zk_conn_t      *conn;     /* current client handle; NULL only briefly */
    int             reestablishing;
    int             registered;   /* kw_zk_register succeeded once */
    int             ids_version;  /* of our ids node in the current session, -1: none */
    int             ids_taken;    /* re-registration found our name taken */
    int             verify_needed;/* some entry is suspect: session thread checks */
    char           *ids_path;
    int             stopping;
    uint64_t        watch_gen;
    zk_owned_t     *owned;
    size_t          nowned, capowned;
    kw_zk_partition_t *lost;
    size_t          nlost, caplost;
    kw_zk_status_t  stats;    /* counters; state and session_id computed */
    pthread_t       session_thread;
    int             thread_started;
};

/* ------------------------------------------------------------------ */
/* small helpers                                                       */
/* ------------------------------------------------------------------ */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int64_t ms)
{
    struct timespec ts = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* Sleep the next backoff step, bounded by the deadline; 0 once it passed. */
static int backoff(int64_t deadline, int *delay)
{
    int64_t left = deadline - now_ms();
    if (left <= 0)
        return 0;
    sleep_ms(*delay < left ? *delay : left);
    *delay = *delay * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : *delay * 2;
    return 1;
}

/* Wait on zk->cond until abs deadline (monotonic ms). mu held. */
static void cond_wait_until(kw_zk_t *zk, int64_t deadline_ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t left = deadline_ms - now_ms();
    if (left <= 0)
        return;
    ts.tv_sec += (time_t)(left / 1000);
    ts.tv_nsec += (long)(left % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&zk->cond, &zk->mu, &ts);
}

static int is_conn_loss(int rc)
{
    return rc == ZCONNECTIONLOSS || rc == ZOPERATIONTIMEOUT;
}

static int is_session_gone(int rc)
{
    return rc == ZSESSIONEXPIRED || rc == ZINVALIDSTATE || rc == ZCLOSING ||
           rc == ZAUTHFAILED || rc == ZSESSIONMOVED;
}

static int valid_name(const char *s, size_t max)
{
    if (s == NULL || s[0] == '\0' || strlen(s) >= max)
        return 0;
    if (strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
        return 0;
    return strchr(s, '/') == NULL;
}

static kw_err_t topic_check(const char *topic, int32_t partition,
                            char *errstr, size_t errlen)
{
    if (!valid_name(topic, KW_ZK_TOPIC_MAX))
        return kw_seterr(errstr, errlen, KW_EINVAL, "bad topic name '%s'",
                         topic ? topic : "(null)");
    if (partition < 0)
        return kw_seterr(errstr, errlen, KW_EINVAL, "bad partition %" PRId32, partition);
    return KW_OK;
}

static void owner_path(const kw_zk_t *zk, const char *topic, int32_t p, char *buf)
{
    snprintf(buf, PATH_MAX_LEN, "%s/owners/%s/%" PRId32, zk->base, topic, p);
}

static void offset_path(const kw_zk_t *zk, const char *topic, int32_t p, char *buf)
{
    snprintf(buf, PATH_MAX_LEN, "%s/offsets/%s/%" PRId32, zk->base, topic, p);
}

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

/* ------------------------------------------------------------------ */
/* the local ownership table (mu held)                                 */
/* ------------------------------------------------------------------ */

static zk_owned_t *owned_find(kw_zk_t *zk, const char *topic, int32_t p)
{
    for (size_t i = 0; i < zk->nowned; i++)
        if (zk->owned[i].partition == p && strcmp(zk->owned[i].topic, topic) == 0)
            return &zk->owned[i];
    return NULL;
}

static zk_owned_t *owned_add(kw_zk_t *zk, const char *topic, int32_t p)
{
    if (zk->nowned == zk->capowned) {
        size_t cap = zk->capowned ? zk->capowned * 2 : 16;
        zk_owned_t *n = realloc(zk->owned, cap * sizeof(*n));
        if (n == NULL)
            return NULL;
        zk->owned = n;
        zk->capowned = cap;
    }
    zk_owned_t *e = &zk->owned[zk->nowned++];
    memset(e, 0, sizeof(*e));
    snprintf(e->topic, sizeof(e->topic), "%s", topic);
    e->partition = p;
    return e;
}

static void owned_remove(kw_zk_t *zk, zk_owned_t *e)
{
    size_t i = (size_t)(e - zk->owned);
    memmove(&zk->owned[i], &zk->owned[i + 1], (zk->nowned - i - 1) * sizeof(*e));
    zk->nowned--;
}

/* The partition is no longer ours: drop it and report it through kw_zk_lost. */
static void owned_lose(kw_zk_t *zk, zk_owned_t *e, const char *why)
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

/* ------------------------------------------------------------------ */
/* connections                                                          */
/* ------------------------------------------------------------------ */

/*
 * The client's watcher, on its completion thread. Only takes the mutex
 * (rule Z4). Session events move the state; node events wake owners that
 * wait in kw_zk_own, and the deletion of one of our owner nodes loses it.
 */
static void zk_watcher(zhandle_t *zh, int type, int state, const char *path, void *ctx)
{
    zk_conn_t *conn = ctx;
    kw_zk_t *zk = conn->zk;
    (void)zh;

    pthread_mutex_lock(&zk->mu);
    if (type == ZOO_SESSION_EVENT) {
        if (state == ZOO_CONNECTED_STATE) {
            conn->connected = 1;
        } else if (state == ZOO_CONNECTING_STATE || state == ZOO_ASSOCIATING_STATE) {
            conn->connected = 0;
        } else if (state == ZOO_EXPIRED_SESSION_STATE || state == ZOO_AUTH_FAILED_STATE) {
            conn->connected = 0;
            conn->dead = 1;
            if (conn == zk->conn) {
                for (size_t i = 0; i < zk->nowned; i++)
                    zk->owned[i].valid = 0;      /* the nodes went with the session */
                zk->ids_version = -1;
            }
            if (conn == zk->conn && !zk->reestablishing && !zk->stopping) {
                KW_LOG_W(MOD, "ZooKeeper session %s at %s: re-establishing ownership",
                         state == ZOO_EXPIRED_SESSION_STATE ? "expired" : "failed authentication",
                         zk->connect);
                zk->reestablishing = 1;
                zk->stats.expiries++;
            }
        }
    } else {
        zk->watch_gen++;
        if (type == ZOO_DELETED_EVENT && conn == zk->conn && !conn->dead && path != NULL) {
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
                    /* Either someone deleted it (lost) or our session is
                     * ending and the expiry is still on its way: the
                     * session thread tells them apart (session_verify). */
                    zk_owned_t *e = owned_find(zk, topic, (int32_t)p);
                    if (e != NULL && e->valid) {
                        e->valid = 0;
                        e->suspect = 1;
                        zk->verify_needed = 1;
                    }
                }
            }
        }
    }
    pthread_cond_broadcast(&zk->cond);
    pthread_mutex_unlock(&zk->mu);
}

static void conn_close(zk_conn_t *conn)
{
    if (conn == NULL)
        return;
    if (conn->zh != NULL)
        zookeeper_close(conn->zh);
    free(conn);
}

/*
 * Open a session on zk->hosts and wait until it is connected (timeout_ms),
 * giving up early when the handle is stopping. Not under mu.
 */
static kw_err_t conn_open(kw_zk_t *zk, int timeout_ms, zk_conn_t **out,
                          char *errstr, size_t errlen)
{
    zk_conn_t *conn = calloc(1, sizeof(*conn));
    if (conn == NULL)
        return kw_seterr(errstr, errlen, KW_ENOMEM, "out of memory");
    conn->zk = zk;
    conn->zh = zookeeper_init(zk->hosts, zk_watcher, zk->session_ms, NULL, conn, 0);
    if (conn->zh == NULL) {
        int e = errno;
        free(conn);
        return kw_seterr(errstr, errlen, KW_ECONFIG,
                         "zookeeper.connect '%s': cannot start a ZooKeeper client: %s",
                         zk->connect, strerror(e));
    }
    if (zk->digest != NULL) {
        int rc = zoo_add_auth(conn->zh, "digest", zk->digest, (int)strlen(zk->digest),
                              NULL, NULL);
        if (rc != ZOK) {
            conn_close(conn);
            return kw_seterr(errstr, errlen, KW_EIO, "ZooKeeper %s: digest auth: %s",
                             zk->connect, zerror(rc));
        }
    }
    int64_t deadline = now_ms() + timeout_ms;
    pthread_mutex_lock(&zk->mu);
    while (!conn->connected && !conn->dead && !zk->stopping && now_ms() < deadline)
        cond_wait_until(zk, deadline);
    int ok = conn->connected && !conn->dead;
    int stopping = zk->stopping;
    pthread_mutex_unlock(&zk->mu);
    if (!ok) {
        conn_close(conn);
        if (stopping)
            return kw_seterr(errstr, errlen, KW_ECLOSED, "closing");
        return kw_seterr(errstr, errlen, KW_ETIMEDOUT,
                         "cannot connect to ZooKeeper at '%s' within %d ms",
                         zk->connect, timeout_ms);
    }
    *out = conn;
    return KW_OK;
}

/* Take a reference on the current conn; NULL while re-establishing (unless
 * any is set) or stopping. */
static zk_conn_t *conn_get(kw_zk_t *zk, int any)
{
    zk_conn_t *c = NULL;
    pthread_mutex_lock(&zk->mu);
    if (zk->conn != NULL && !zk->stopping && (any || !zk->reestablishing)) {
        c = zk->conn;
        c->refs++;
    }
    pthread_mutex_unlock(&zk->mu);
    return c;
}

static void conn_put(kw_zk_t *zk, zk_conn_t *c)
{
    int close_it;
    pthread_mutex_lock(&zk->mu);
    close_it = --c->refs == 0 && c->retired;
    pthread_mutex_unlock(&zk->mu);
    if (close_it)
        conn_close(c);
}

/* Create every missing component of path (persistent, our ACL). */
static int ensure_path(kw_zk_t *zk, zhandle_t *zh, const char *path)
{
    char buf[PATH_MAX_LEN];
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
static kw_err_t ensure_path_retry(kw_zk_t *zk, zhandle_t *zh, const char *path,
                                  int64_t deadline, char *errstr, size_t errlen)
{
    int delay = BACKOFF_MIN_MS, rc;
    while ((rc = ensure_path(zk, zh, path)) != ZOK) {
        if (is_session_gone(rc))
            return kw_seterr(errstr, errlen, KW_EAGAIN, "ZooKeeper %s: creating %s: %s",
                             zk->connect, path, zerror(rc));
        if (!is_conn_loss(rc))
            return kw_seterr(errstr, errlen, KW_EIO, "ZooKeeper %s: creating %s: %s",
                             zk->connect, path, zerror(rc));
        if (!backoff(deadline, &delay))
            return kw_seterr(errstr, errlen, KW_EAGAIN, "ZooKeeper %s: creating %s: %s",
                             zk->connect, path, zerror(rc));
    }
    return KW_OK;
}

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

/* Read an offset node: *exists, *value, *version. Raw ZooKeeper rc. */
static int read_offset(zhandle_t *zh, const char *path, int *exists, int64_t *value,
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
/* ownership                                                            */
/* ------------------------------------------------------------------ */

typedef enum { OWN_OK, OWN_HELD, OWN_RETRY, OWN_GONE, OWN_ERR } own_rc_t;

/*
 * One attempt to create (or recognise) our owner node on zh. OWN_OK with
 * *version; OWN_HELD with holder (another session's node); OWN_RETRY after
 * connection loss; OWN_GONE when the session is gone; OWN_ERR otherwise
 * (*zrc tells). If watch, a watch is left on the node.
 */
static own_rc_t own_once(kw_zk_t *zk, zhandle_t *zh, const char *path, int *version,
                         char *holder, size_t holderlen, int *zrc)
{
    struct Stat st;
    int64_t sid = zoo_client_id(zh)->client_id;
    int rc = zoo_create2(zh, path, zk->instance, (int)strlen(zk->instance), zk->acl,
                         ZOO_EPHEMERAL, NULL, 0, &st);
    *zrc = rc;
    if (rc == ZOK) {
        *version = st.version;
        /* a deletion watch on our own node (kw_zk.h, "Fencing") */
        rc = zoo_exists(zh, path, 1, &st);
        *zrc = rc;
        if (rc == ZOK)
            return OWN_OK;
        /* deleted already? then the next attempt re-creates it */
    } else if (rc == ZNODEEXISTS) {
        char buf[256];
        int len = (int)sizeof(buf) - 1;
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
    if (is_conn_loss(rc))
        return OWN_RETRY;
    if (is_session_gone(rc))
        return OWN_GONE;
    return OWN_ERR;
}

static kw_err_t wait_active_until(kw_zk_t *zk, int64_t deadline)
{
    pthread_mutex_lock(&zk->mu);
    while (zk->reestablishing && !zk->stopping && now_ms() < deadline)
        cond_wait_until(zk, deadline);
    kw_err_t err = zk->stopping ? KW_ECLOSED : zk->reestablishing ? KW_ETIMEDOUT : KW_OK;
    pthread_mutex_unlock(&zk->mu);
    return err;
}

kw_err_t kw_zk_wait_active(kw_zk_t *zk, int timeout_ms)
{
    return wait_active_until(zk, now_ms() + timeout_ms);
}

kw_err_t kw_zk_own(kw_zk_t *zk, const char *topic, int32_t partition,
                   int timeout_ms, char *errstr, size_t errlen)
{
    char opath[PATH_MAX_LEN], fpath[PATH_MAX_LEN], parent[PATH_MAX_LEN], holder[256] = "";
    int64_t deadline = now_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    int64_t op_deadline = now_ms() + zk->op_ms;
    int delay = BACKOFF_MIN_MS;
    kw_err_t err = topic_check(topic, partition, errstr, errlen);
    if (err != KW_OK)
        return err;
    owner_path(zk, topic, partition, opath);
    offset_path(zk, topic, partition, fpath);

    for (;;) {
        int64_t dl = deadline > op_deadline ? deadline : op_deadline;
        if (wait_active_until(zk, dl) != KW_OK)
            return kw_seterr(errstr, errlen, KW_EAGAIN,
                             "ZooKeeper %s: session not re-established in time", zk->connect);
        pthread_mutex_lock(&zk->mu);
        zk_owned_t *e = owned_find(zk, topic, partition);
        int have = e != NULL && e->valid;
        int registered = zk->registered;
        uint64_t gen = zk->watch_gen;
        pthread_mutex_unlock(&zk->mu);
        if (!registered)
            return kw_seterr(errstr, errlen, KW_EINVAL,
                             "kw_zk_own before kw_zk_register (commits check the ids node)");
        if (have)
            return KW_OK;

        zk_conn_t *c = conn_get(zk, 0);
        if (c == NULL)
            continue;                            /* re-establishing: wait above */
        snprintf(parent, sizeof(parent), "%s/owners/%s", zk->base, topic);
        err = ensure_path_retry(zk, c->zh, parent, dl, errstr, errlen);
        if (err == KW_OK) {
            snprintf(parent, sizeof(parent), "%s/offsets/%s", zk->base, topic);
            err = ensure_path_retry(zk, c->zh, parent, dl, errstr, errlen);
        }
        if (err != KW_OK) {
            conn_put(zk, c);
            if (err == KW_EAGAIN && now_ms() < dl)
                continue;
            return err;
        }
        int version = 0, zrc = ZOK, exists = 0, offver = -1, corrupt = 0;
        int64_t off = -1;
        own_rc_t orc = own_once(zk, c->zh, opath, &version, holder, sizeof(holder), &zrc);
        if (orc == OWN_OK) {
            /* read the stored offset into the cache (retried) */
            while ((zrc = read_offset(c->zh, fpath, &exists, &off, &offver, &corrupt)) != ZOK &&
                   is_conn_loss(zrc) && backoff(op_deadline, &delay))
                ;
            if (zrc != ZOK)
                orc = is_session_gone(zrc) ? OWN_GONE : OWN_ERR;
            else if (corrupt) {
                /* give the node up again: the receiver must not consume
                 * this partition without knowing where to start */
                zoo_delete(c->zh, opath, -1);
                conn_put(zk, c);
                return kw_seterr(errstr, errlen, KW_ECORRUPT,
                                 "ZooKeeper %s: %s does not hold an ASCII decimal offset",
                                 zk->connect, fpath);
            }
        }
        if (orc == OWN_OK) {
            int added = 0;
            pthread_mutex_lock(&zk->mu);
            if (zk->conn == c && !zk->reestablishing && !c->dead) {
                zk_owned_t *n = owned_find(zk, topic, partition);
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
                }
            }
            pthread_mutex_unlock(&zk->mu);
            conn_put(zk, c);
            if (added) {
                KW_LOG_D(MOD, "owns %s/%" PRId32, topic, partition);
                return KW_OK;
            }
            continue;                            /* session changed meanwhile: again */
        }
        conn_put(zk, c);
        if (orc == OWN_ERR)
            return kw_seterr(errstr, errlen, KW_EIO, "ZooKeeper %s: owning %s: %s",
                             zk->connect, opath, zerror(zrc));
        if (orc == OWN_GONE)
            continue;                            /* the session thread takes over */
        if (orc == OWN_RETRY) {
            if (!backoff(dl, &delay))
                return kw_seterr(errstr, errlen, KW_EAGAIN, "ZooKeeper %s: owning %s: %s",
                                 zk->connect, opath, zerror(zrc));
            continue;
        }
        /* OWN_HELD: wait for a watch event, or poll */
        int64_t now = now_ms();
        if (now >= deadline)
            return kw_seterr(errstr, errlen, KW_EBUSY,
                             "%s/%" PRId32 " is owned by '%s' (waited %d ms)",
                             topic, partition, holder, timeout_ms);
        int64_t until = now + OWN_POLL_MS < deadline ? now + OWN_POLL_MS : deadline;
        pthread_mutex_lock(&zk->mu);
        while (zk->watch_gen == gen && !zk->stopping && now_ms() < until)
            cond_wait_until(zk, until);
        pthread_mutex_unlock(&zk->mu);
        delay = BACKOFF_MIN_MS;
    }
}

kw_err_t kw_zk_disown(kw_zk_t *zk, const char *topic, int32_t partition,
                      char *errstr, size_t errlen)
{
    char opath[PATH_MAX_LEN];
    kw_err_t err = topic_check(topic, partition, errstr, errlen);
    if (err != KW_OK)
        return err;
    owner_path(zk, topic, partition, opath);

    pthread_mutex_lock(&zk->mu);
    zk_owned_t *e = owned_find(zk, topic, partition);
    int valid = e != NULL && e->valid;
    int version = e != NULL ? e->owner_version : -1;
    if (e != NULL)
        owned_remove(zk, e);
    pthread_mutex_unlock(&zk->mu);
    /* Not valid: the node belongs to no live session of ours; the session
     * thread deletes one it re-creates for an entry that is gone. */
    if (!valid)
        return KW_OK;

    zk_conn_t *c = conn_get(zk, 1);
    if (c == NULL)
        return KW_OK;
    int64_t deadline = now_ms() + zk->op_ms;
    int delay = BACKOFF_MIN_MS, rc;
    while ((rc = zoo_delete(c->zh, opath, version)) != ZOK && is_conn_loss(rc) &&
           backoff(deadline, &delay))
        ;
    conn_put(zk, c);
    if (rc == ZOK || rc == ZNONODE || is_session_gone(rc))
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
/* the ids node                                                         */
/* ------------------------------------------------------------------ */

/* Create our ids node on zh (raw rc; ZOK also when it is ours already);
 * *version gets its version. */
static int register_once(kw_zk_t *zk, zhandle_t *zh, int *version)
{
    char data[300], host[256] = "unknown";
    struct Stat st;
    gethostname(host, sizeof(host) - 1);
    snprintf(data, sizeof(data), "%s:%ld", host, (long)getpid());
    int rc = zoo_create2(zh, zk->ids_path, data, (int)strlen(data), zk->acl, ZOO_EPHEMERAL,
                         NULL, 0, &st);
    if (rc == ZNODEEXISTS) {
        rc = zoo_exists(zh, zk->ids_path, 0, &st);
        if (rc == ZOK && st.ephemeralOwner != zoo_client_id(zh)->client_id)
            return ZNODEEXISTS;
        if (rc == ZNONODE)
            return ZCONNECTIONLOSS;              /* vanished: try again */
    }
    if (rc == ZOK)
        *version = st.version;
    return rc;
}

kw_err_t kw_zk_register(kw_zk_t *zk, char *errstr, size_t errlen)
{
    int64_t deadline = now_ms() + zk->op_ms;
    int delay = BACKOFF_MIN_MS, rc = ZOK;
    for (;;) {
        if (wait_active_until(zk, deadline) != KW_OK)
            return kw_seterr(errstr, errlen, KW_EAGAIN,
                             "ZooKeeper %s: session not re-established in time", zk->connect);
        zk_conn_t *c = conn_get(zk, 0);
        if (c == NULL)
            continue;
        int version = -1;
        rc = register_once(zk, c->zh, &version);
        if (rc == ZOK) {
            pthread_mutex_lock(&zk->mu);
            if (zk->conn == c && !c->dead) {
                zk->registered = 1;
                zk->ids_version = version;
            } else {
                rc = ZSESSIONEXPIRED;            /* again, on the new session */
            }
            pthread_mutex_unlock(&zk->mu);
        }
        conn_put(zk, c);
        if (rc == ZOK)
            return KW_OK;
        if (rc == ZNODEEXISTS)
            return kw_seterr(errstr, errlen, KW_EBUSY,
                             "instance '%s' is already registered in group by another session",
                             zk->instance);
        if (!is_conn_loss(rc) && !is_session_gone(rc))
            return kw_seterr(errstr, errlen, KW_EIO, "ZooKeeper %s: registering: %s",
                             zk->connect, zerror(rc));
        if (!backoff(deadline, &delay))
            return kw_seterr(errstr, errlen, KW_EAGAIN, "ZooKeeper %s: registering: %s",
                             zk->connect, zerror(rc));
    }
}

/* ------------------------------------------------------------------ */
/* offsets                                                              */
/* ------------------------------------------------------------------ */

kw_err_t kw_zk_get_offset(kw_zk_t *zk, const char *topic, int32_t partition,
                          int64_t *next, char *errstr, size_t errlen)
{
    char path[PATH_MAX_LEN];
    kw_err_t err = topic_check(topic, partition, errstr, errlen);
    if (err != KW_OK)
        return err;
    offset_path(zk, topic, partition, path);
    int64_t deadline = now_ms() + zk->op_ms;
    int delay = BACKOFF_MIN_MS;
    for (;;) {
        if (wait_active_until(zk, deadline) != KW_OK)
            return kw_seterr(errstr, errlen, KW_EAGAIN,
                             "ZooKeeper %s: session not re-established in time", zk->connect);
        zk_conn_t *c = conn_get(zk, 0);
        if (c == NULL)
            continue;
        int exists, version, corrupt;
        int64_t v;
        int rc = read_offset(c->zh, path, &exists, &v, &version, &corrupt);
        conn_put(zk, c);
        if (rc == ZOK) {
            if (!exists)
                return kw_seterr(errstr, errlen, KW_ENOTFOUND, "no offset stored at %s", path);
            if (corrupt)
                return kw_seterr(errstr, errlen, KW_ECORRUPT,
                                 "%s does not hold an ASCII decimal offset", path);
            *next = v;
            return KW_OK;
        }
        if (!is_conn_loss(rc) && !is_session_gone(rc))
            return kw_seterr(errstr, errlen, KW_EIO, "ZooKeeper %s: reading %s: %s",
                             zk->connect, path, zerror(rc));
        if (!backoff(deadline, &delay))
            return kw_seterr(errstr, errlen, KW_EAGAIN, "ZooKeeper %s: reading %s: %s",
                             zk->connect, path, zerror(rc));
    }
}

/* One partition of a planned multi. */
typedef struct plan_item {
    const kw_zk_offset_t *off;
    char   opath[PATH_MAX_LEN];
    char   fpath[PATH_MAX_LEN];
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
        zk_owned_t *e = owned_find(zk, offs[i].topic, offs[i].partition);
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
        owner_path(zk, e->topic, e->partition, it->opath);
        offset_path(zk, e->topic, e->partition, it->fpath);
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
        zk_owned_t *e = owned_find(zk, items[i].off->topic, items[i].off->partition);
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
    zk_owned_t *e = owned_find(zk, off->topic, off->partition);
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
    int delay = BACKOFF_MIN_MS;
    for (;;) {
        zk_conn_t *c = conn_get(zk, 0);
        if (c == NULL)
            return RB_AGAIN;
        int applied = 1, untouched = 1, rc = ZOK;
        for (size_t i = 0; i < k && rc == ZOK; i++) {
            int exists, version, corrupt;
            int64_t v;
            rc = read_offset(c->zh, items[i].fpath, &exists, &v, &version, &corrupt);
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
        conn_put(zk, c);
        if (rc == ZOK)
            return applied ? RB_APPLIED : untouched ? RB_NOT_APPLIED : RB_CHANGED;
        if (is_session_gone(rc) || !is_conn_loss(rc) || !backoff(deadline, &delay))
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
    int64_t deadline = now_ms() + zk->op_ms;
    int delay = BACKOFF_MIN_MS, replans = 0;
    size_t k = 0, nops = 0;
    int ids_version = -1;

    if (n == 0)
        return KW_OK;
    for (size_t i = 0; i < n; i++) {
        err = topic_check(offs[i].topic, offs[i].partition, errstr, errlen);
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
        zk_conn_t *c = conn_get(zk, 0);
        if (c == NULL) {
            err = kw_seterr(errstr, errlen, KW_EAGAIN,
                            "ZooKeeper session is being re-established; commit refused");
            goto cleanup;
        }
        memset(res, 0, nops * sizeof(*res));
        int rc = zk_multi(c->zh, (int)nops, ops, res);
        conn_put(zk, c);

        if (rc == ZOK) {
            for (size_t i = 0; i < k; i++)
                versions[i] = items[i].create ? 0 : items[i].stat.version;
            commit_applied(zk, items, k, versions);
            err = KW_OK;
            goto cleanup;
        }
        if (is_conn_loss(rc)) {
            KW_LOG_W(MOD, "ZooKeeper %s: commit of %zu offsets: %s; reading them back",
                     zk->connect, k, zerror(rc));
            readback_t rb = commit_readback(zk, items, k, versions, deadline);
            if (rb == RB_APPLIED) {
                commit_applied(zk, items, k, versions);
                err = KW_OK;
                goto cleanup;
            }
            if (rb == RB_CHANGED) {
                if (++replans > 3 || now_ms() >= deadline) {
                    err = kw_seterr(errstr, errlen, KW_EAGAIN,
                                    "offsets changed under the commit; retry");
                    goto cleanup;
                }
                goto replan;
            }
            if (rb == RB_AGAIN || !backoff(deadline, &delay)) {
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
        if (is_session_gone(rc)) {
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
            zk_owned_t *e = owned_find(zk, it->off->topic, it->off->partition);
            if (e != NULL && e->owner_version == it->owner_version)
                owned_lose(zk, e, "its owner node is gone or changed (commit fenced)");
            pthread_mutex_unlock(&zk->mu);
            err = kw_seterr(errstr, errlen, KW_EFENCED,
                            "commit fenced: owner node %s: %s; nothing written",
                            it->opath, zerror(res[bad].err));
            goto cleanup;
        }
        if (bad < nops && (rc == ZBADVERSION || rc == ZNODEEXISTS || rc == ZNONODE)) {
            /* the offset node changed under us (a forced write?): re-read */
            plan_item_t *it = &items[bad / 2 - 1];
            zk_conn_t *c2 = conn_get(zk, 0);
            int exists = 0, version = -1, corrupt = 0, rrc = ZCONNECTIONLOSS;
            int64_t v = -1;
            if (c2 != NULL) {
                rrc = read_offset(c2->zh, it->fpath, &exists, &v, &version, &corrupt);
                conn_put(zk, c2);
            }
            if (rrc == ZOK)
                cache_set(zk, it->off, exists, corrupt ? -1 : v, version);
            if (++replans > 3 || now_ms() >= deadline) {
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

/* ------------------------------------------------------------------ */
/* session re-establishment                                             */
/* ------------------------------------------------------------------ */

/*
 * Re-own one partition on the new session c. 0 done (owned, lost or
 * forgotten), -1 the session died meanwhile (start over), 1 stopping.
 */
static int reown_one(kw_zk_t *zk, zk_conn_t *c, const kw_zk_partition_t *p)
{
    char opath[PATH_MAX_LEN], fpath[PATH_MAX_LEN], parent[PATH_MAX_LEN], holder[256] = "";
    owner_path(zk, p->topic, p->partition, opath);
    offset_path(zk, p->topic, p->partition, fpath);
    snprintf(parent, sizeof(parent), "%s/owners/%s", zk->base, p->topic);
    int delay = BACKOFF_MIN_MS;
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
        own_rc_t orc = own_once(zk, c->zh, opath, &version, holder, sizeof(holder), &zrc);
        if (orc == OWN_OK) {
            zrc = read_offset(c->zh, fpath, &exists, &off, &offver, &corrupt);
            if (zrc != ZOK)
                orc = is_session_gone(zrc) ? OWN_GONE : OWN_RETRY;
        }
        if (orc == OWN_GONE)
            return -1;
        if (orc == OWN_RETRY || orc == OWN_ERR) {
            if (zrc == ZNONODE)
                ensure_path(zk, c->zh, parent);
            if (orc == OWN_ERR)
                KW_LOG_W(MOD, "re-owning %s: %s; retrying", opath, zerror(zrc));
            backoff(now_ms() + delay, &delay);
            continue;
        }
        int delete_it = 0;
        pthread_mutex_lock(&zk->mu);
        zk_owned_t *e = owned_find(zk, p->topic, p->partition);
        if (orc == OWN_HELD) {
            if (e != NULL) {
                char why[400];
                snprintf(why, sizeof(why), "taken by '%s' while our session was gone", holder);
                owned_lose(zk, e, why);
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

/*
 * Owner nodes of ours were deleted while the session looked alive. If our
 * ids node is still there under our session, the session is alive and
 * someone else deleted them: they are lost. If the session is ending, its
 * expiry arrives soon and re-establishment re-owns them. Called with mu held
 * (released around the round trip); retries every 100 ms until it knows.
 */
static void session_verify(kw_zk_t *zk)
{
    zk_conn_t *c = zk->conn;
    struct Stat st;
    c->refs++;
    pthread_mutex_unlock(&zk->mu);
    int64_t sid = zoo_client_id(c->zh)->client_id;
    int rc = zoo_exists(c->zh, zk->ids_path, 0, &st);
    conn_put(zk, c);
    pthread_mutex_lock(&zk->mu);
    if (c != zk->conn || c->dead || zk->reestablishing)
        return;                                  /* expiry path takes over */
    if (rc == ZOK && st.ephemeralOwner == sid) {
        for (size_t i = 0; i < zk->nowned;) {
            zk_owned_t *e = &zk->owned[i];
            if (e->suspect && !e->valid)
                owned_lose(zk, e, "its owner node was deleted by someone else");
            else
                i++;
        }
        zk->verify_needed = 0;
        return;
    }
    pthread_mutex_unlock(&zk->mu);
    sleep_ms(100);
    pthread_mutex_lock(&zk->mu);
}

/*
 * The zk-session thread: waits for an expiry, then replaces the conn and
 * re-establishes the ids node and every owner node before the state is
 * ACTIVE again (the watcher set REESTABLISHING).
 */
static void *session_main(void *arg)
{
    kw_zk_t *zk = arg;
    pthread_setname_np(pthread_self(), "zk-session");
    pthread_mutex_lock(&zk->mu);
    for (;;) {
        while (!zk->stopping && !zk->verify_needed &&
               !(zk->reestablishing || (zk->conn && zk->conn->dead)))
            pthread_cond_wait(&zk->cond, &zk->mu);
        if (zk->stopping)
            break;
        if (!zk->reestablishing && !(zk->conn && zk->conn->dead)) {
            session_verify(zk);                  /* verify_needed; mu held */
            continue;
        }
        zk->verify_needed = 0;                   /* re-owning covers suspects */
        zk->reestablishing = 1;
        zk_conn_t *old = zk->conn;
        zk->conn = NULL;
        int close_old = 0;
        if (old != NULL) {
            old->retired = 1;
            close_old = old->refs == 0;
        }
        pthread_mutex_unlock(&zk->mu);
        if (close_old)
            conn_close(old);

        /* a new session, as long as it takes */
        zk_conn_t *c = NULL;
        int delay = BACKOFF_MIN_MS;
        char err[256];
        for (;;) {
            kw_err_t e = conn_open(zk, zk->connect_ms, &c, err, sizeof(err));
            if (e == KW_OK || e == KW_ECLOSED)
                break;
            KW_LOG_W(MOD, "%s; retrying", err);
            backoff(now_ms() + delay, &delay);
        }
        pthread_mutex_lock(&zk->mu);
        if (c == NULL)
            continue;                            /* stopping */
        zk->conn = c;
        int registered = zk->registered;
        size_t np = zk->nowned;
        kw_zk_partition_t *snap = np ? calloc(np, sizeof(*snap)) : NULL;
        for (size_t i = 0; snap != NULL && i < np; i++) {
            snprintf(snap[i].topic, KW_ZK_TOPIC_MAX, "%s", zk->owned[i].topic);
            snap[i].partition = zk->owned[i].partition;
        }
        pthread_mutex_unlock(&zk->mu);
        if (np > 0 && snap == NULL) {            /* try again shortly */
            sleep_ms(BACKOFF_MIN_MS);
            pthread_mutex_lock(&zk->mu);
            c->dead = 1;
            continue;
        }

        int restart = 0;
        delay = BACKOFF_MIN_MS;
        while (registered) {
            int version = -1;
            int rc = register_once(zk, c->zh, &version);
            if (rc == ZOK) {
                pthread_mutex_lock(&zk->mu);
                zk->ids_version = version;
                zk->ids_taken = 0;
                pthread_mutex_unlock(&zk->mu);
                break;
            }
            if (is_session_gone(rc)) {
                restart = 1;
                break;
            }
            if (rc == ZNODEEXISTS) {
                KW_LOG_E(MOD, "instance '%s' is registered by another session; "
                         "not re-registered, commits are refused", zk->instance);
                pthread_mutex_lock(&zk->mu);
                zk->ids_taken = 1;
                pthread_mutex_unlock(&zk->mu);
                break;
            }
            if (!is_conn_loss(rc))
                KW_LOG_W(MOD, "re-registering: %s; retrying", zerror(rc));
            backoff(now_ms() + delay, &delay);
        }
        for (size_t i = 0; !restart && i < np; i++) {
            int r = reown_one(zk, c, &snap[i]);
            if (r != 0)
                restart = 1;
        }
        free(snap);
        pthread_mutex_lock(&zk->mu);
        if (restart || c->dead || zk->stopping)
            continue;
        zk->reestablishing = 0;
        zk->stats.epoch++;
        KW_LOG_I(MOD, "ZooKeeper session re-established (epoch %" PRIu64 ", %zu partitions owned)",
                 zk->stats.epoch, zk->nowned);
        pthread_cond_broadcast(&zk->cond);
    }
    pthread_mutex_unlock(&zk->mu);
    return NULL;
}

/* ------------------------------------------------------------------ */
/* life cycle                                                           */
/* ------------------------------------------------------------------ */

void kw_zk_options_init(kw_zk_options_t *opts)
{
    memset(opts, 0, sizeof(*opts));
    opts->session_timeout_ms = 30000;
    opts->connect_timeout_ms = 15000;
    opts->op_timeout_ms = 30000;
}

void kw_zk_options_from_conf(kw_zk_options_t *opts, const kw_conf_t *conf)
{
    const kw_conf_receiver_t *rc = &conf->receiver;

    kw_zk_options_init(opts);
    opts->connect = conf->zk.connect;
    opts->group = rc->group_id;
    opts->session_timeout_ms = (int)conf->zk.session_timeout_ms;
    opts->op_timeout_ms = (int)conf->zk.op_timeout_ms;
    if (rc->instance_id != NULL && rc->instance_id[0] != '\0')
        opts->instance = rc->instance_id;
}

void kw_zk_status(kw_zk_t *zk, kw_zk_status_t *st)
{
    pthread_mutex_lock(&zk->mu);
    *st = zk->stats;
    st->state = zk->reestablishing || zk->conn == NULL ? KW_ZK_REESTABLISHING
              : zk->conn->connected ? KW_ZK_ACTIVE : KW_ZK_DISCONNECTED;
    st->session_id = 0;
    if (zk->conn != NULL && !zk->reestablishing)
        st->session_id = zoo_client_id(zk->conn->zh)->client_id;
    pthread_mutex_unlock(&zk->mu);
}

void kw_zk_session_credentials(kw_zk_t *zk, int64_t *id, char passwd[16])
{
    *id = 0;
    memset(passwd, 0, 16);
    zk_conn_t *c = conn_get(zk, 0);
    if (c == NULL)
        return;
    const clientid_t *cid = zoo_client_id(c->zh);
    *id = cid->client_id;
    memcpy(passwd, cid->passwd, 16);
    conn_put(zk, c);
}

static char *dupstr(const char *s)
{
    return s ? strdup(s) : NULL;
}

/* The handle's allocations (its threads, locks and session already gone). */
static void free_handle(kw_zk_t *zk)
{
    free(zk->owned);
    free(zk->lost);
    free(zk->ids_path);
    free(zk->base);
    free(zk->chroot);
    free(zk->instance);
    free(zk->digest);
    free(zk->hosts);
    free(zk->connect);
    free(zk);
}

kw_err_t kw_zk_new(const kw_zk_options_t *opts, kw_zk_t **out,
                   char *errstr, size_t errlen)
{
    kw_zk_t *zk = NULL;
    kw_err_t err;
    char path[PATH_MAX_LEN];
    int mu_ok = 0, cond_ok = 0;

    *out = NULL;
    if (opts == NULL || opts->connect == NULL || opts->connect[0] == '\0')
        return kw_seterr(errstr, errlen, KW_ECONFIG, "zookeeper.connect is not set");
    if (!valid_name(opts->group, 256))
        return kw_seterr(errstr, errlen, KW_ECONFIG, "bad group.id '%s'",
                         opts->group ? opts->group : "(null)");
    if (opts->instance != NULL && !valid_name(opts->instance, 256))
        return kw_seterr(errstr, errlen, KW_ECONFIG, "bad instance name '%s'", opts->instance);
    if (opts->digest != NULL && strchr(opts->digest, ':') == NULL)
        return kw_seterr(errstr, errlen, KW_ECONFIG,
                         "ZooKeeper digest must be user:password");
    if (opts->session_timeout_ms < 0 || opts->connect_timeout_ms < 0 || opts->op_timeout_ms < 0)
        return kw_seterr(errstr, errlen, KW_ECONFIG, "negative ZooKeeper timeout");

    /* The client library logs on its own to stderr: its connection chatter
     * only at debug, its errors always (kwal says what they mean itself). */
    zoo_set_debug_level(kw_log_get_level() >= KW_LOG_DEBUG ? ZOO_LOG_LEVEL_INFO
                                                          : ZOO_LOG_LEVEL_ERROR);
    zk = calloc(1, sizeof(*zk));
    if (zk == NULL)
        return kw_seterr(errstr, errlen, KW_ENOMEM, "out of memory");
    zk->session_ms = opts->session_timeout_ms ? opts->session_timeout_ms : 30000;
    zk->connect_ms = opts->connect_timeout_ms ? opts->connect_timeout_ms : 15000;
    zk->op_ms = opts->op_timeout_ms ? opts->op_timeout_ms : 30000;
    zk->acl = opts->digest != NULL ? &ZOO_CREATOR_ALL_ACL : &ZOO_OPEN_ACL_UNSAFE;
    zk->connect = dupstr(opts->connect);
    zk->hosts = dupstr(opts->connect);
    zk->digest = dupstr(opts->digest);
    if (opts->instance != NULL) {
        zk->instance = dupstr(opts->instance);
    } else {
        char host[200] = "localhost";
        gethostname(host, sizeof(host) - 1);
        char buf[256];
        snprintf(buf, sizeof(buf), "%s-%ld", host, (long)getpid());
        zk->instance = dupstr(buf);
    }
    if (zk->connect == NULL || zk->hosts == NULL || zk->instance == NULL ||
        (opts->digest != NULL && zk->digest == NULL)) {
        err = kw_seterr(errstr, errlen, KW_ENOMEM, "out of memory");
        goto fail;
    }
    char *slash = strchr(zk->hosts, '/');
    zk->chroot = dupstr(slash ? slash : "");
    if (slash != NULL)
        *slash = '\0';
    if (zk->chroot == NULL) {
        err = kw_seterr(errstr, errlen, KW_ENOMEM, "out of memory");
        goto fail;
    }
    size_t cl = strlen(zk->chroot);
    while (cl > 0 && zk->chroot[cl - 1] == '/')  /* "/" and "/x/" */
        zk->chroot[--cl] = '\0';
    if (zk->hosts[0] == '\0' || strstr(zk->chroot, "//") != NULL) {
        err = kw_seterr(errstr, errlen, KW_ECONFIG, "bad zookeeper.connect '%s'", zk->connect);
        goto fail;
    }
    int bl = snprintf(path, sizeof(path), "%s/consumers/%s", zk->chroot, opts->group);
    if (bl < 0 || bl > PATH_MAX_LEN - 2 * KW_ZK_TOPIC_MAX - 32 ||
        (zk->base = strdup(path)) == NULL) {
        err = kw_seterr(errstr, errlen, KW_ECONFIG, "zookeeper.connect chroot too long");
        goto fail;
    }
    snprintf(path, sizeof(path), "%s/ids/%s", zk->base, zk->instance);
    if ((zk->ids_path = strdup(path)) == NULL) {
        err = kw_seterr(errstr, errlen, KW_ENOMEM, "out of memory");
        goto fail;
    }
    zk->ids_version = -1;
    if (pthread_mutex_init(&zk->mu, NULL) != 0) {
        err = kw_seterr(errstr, errlen, KW_ENOMEM, "pthread_mutex_init failed");
        goto fail;
    }
    mu_ok = 1;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    cond_ok = pthread_cond_init(&zk->cond, &ca) == 0;
    pthread_condattr_destroy(&ca);
    if (!cond_ok) {
        err = kw_seterr(errstr, errlen, KW_ENOMEM, "pthread_cond_init failed");
        goto fail;
    }

    err = conn_open(zk, zk->connect_ms, &zk->conn, errstr, errlen);
    if (err != KW_OK)
        goto fail;
    int64_t deadline = now_ms() + zk->op_ms;
    static const char *const subs[] = { "ids", "owners", "offsets" };
    for (size_t i = 0; i < 3; i++) {
        snprintf(path, sizeof(path), "%s/%s", zk->base, subs[i]);
        err = ensure_path_retry(zk, zk->conn->zh, path, deadline, errstr, errlen);
        if (err != KW_OK)
            goto fail;
    }
    if (pthread_create(&zk->session_thread, NULL, session_main, zk) != 0) {
        err = kw_seterr(errstr, errlen, KW_ENOMEM, "cannot start the zk-session thread");
        goto fail;
    }
    zk->thread_started = 1;
    KW_LOG_I(MOD, "connected to ZooKeeper at %s as '%s' (session 0x%" PRIx64 ")",
             zk->connect, zk->instance, (uint64_t)zoo_client_id(zk->conn->zh)->client_id);
    *out = zk;
    return KW_OK;

fail:
    if (zk->conn != NULL)
        conn_close(zk->conn);
    if (cond_ok)
        pthread_cond_destroy(&zk->cond);
    if (mu_ok)
        pthread_mutex_destroy(&zk->mu);
    free_handle(zk);
    return err;
}

void kw_zk_destroy(kw_zk_t *zk)
{
    if (zk == NULL)
        return;
    pthread_mutex_lock(&zk->mu);
    zk->stopping = 1;
    pthread_cond_broadcast(&zk->cond);
    pthread_mutex_unlock(&zk->mu);
    if (zk->thread_started)
        pthread_join(zk->session_thread, NULL);
    conn_close(zk->conn);                        /* ends the session: ephemerals go */
    pthread_cond_destroy(&zk->cond);
    pthread_mutex_destroy(&zk->mu);
    free_handle(zk);
}
