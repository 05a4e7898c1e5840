/*
 * zk_int.h -- private to zk/: the handle of kwal's ZooKeeper store and what
 * its files share. Included only by the files of zk/; everything outside
 * uses zk.h.
 *
 * The store is split by responsibility, in layers; a file calls only into
 * the layers above it in this list, so no two files call each other:
 *
 *   zk_int.h       the handle (struct kw_zk), references on the client
 *                  handle (kw__zk_conn_get/put), waiting for ACTIVE, time
 *                  and backoff, ZooKeeper error classes, node paths.
 *   zk_owner.c     partition ownership: the local table of what we own,
 *                  owner nodes, lost partitions (kw_zk_own, _disown, _owned,
 *                  _lost), the ownership steps the session needs (mark
 *                  an owner node whose deletion was seen, re-own a partition
 *                  after expiry), and the node operations the other files
 *                  share (check a topic name, create a path, read an offset
 *                  node).
 *   zk_session.c   the session: options, kw_zk_new/destroy, the client's
 *                  watcher, the ids node (kw_zk_register), the zk-session
 *                  thread (expiry, re-establishment), status, credentials,
 *                  kw_zk_wait_active. Calls into zk_owner.c.
 *   zk_offsets.c   offsets: kw_zk_get_offset and the fenced commit. Calls
 *                  into zk_owner.c.
 *
 * One kw_zk_t holds one live ZooKeeper client handle (a kw__zk_conn_t: the
 * zhandle_t of the multi-threaded C client, a reference count, and what its
 * watcher saw: connected, dead). Calls take a reference on the current conn
 * under the mutex (kw__zk_conn_get), drop the mutex, make their synchronous
 * ZooKeeper call, and give the reference back (kw__zk_conn_put); a conn
 * retired by the session thread is closed by whoever drops its last
 * reference, so no call ever blocks on another's round trip and no handle
 * is closed under a caller.
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
 *      before anything else is sent (see zk.h, "Connection loss").
 *  Z4. No ZooKeeper call is made with the mutex held, and the watcher (on
 *      the client's completion thread) only takes the mutex: so the mutex
 *      never waits on the completion thread.
 */
#ifndef KW_ZK_INT_H
#define KW_ZK_INT_H

#include "zk.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <zookeeper/zookeeper.h>

#include "kw_log.h"
#include "kw_time.h"

/* The log module of every file of zk/. */
#define MOD "zk"
#define KW__ZK_PATH_MAX       1024
#define KW__ZK_BACKOFF_MIN_MS 50
#define KW__ZK_BACKOFF_MAX_MS 1000

/* One ZooKeeper client handle; see the top of this file. */
typedef struct kw__zk_conn {
    struct kw_zk *zk;
    zhandle_t    *zh;
    int           refs;       /* calls using zh; under zk->mu */
    int           retired;    /* no longer zk->conn; last ref closes it */
    int           connected;  /* last session event: connected */
    int           dead;       /* expired or auth failed: useless */
} kw__zk_conn_t;

/* One partition we own: an entry of zk->owned (zk_owner.c). */
typedef struct kw__zk_owned {
    char     topic[KW_ZK_TOPIC_MAX];
    int32_t  partition;
    int      valid;           /* owner node exists in the current session */
    int      suspect;         /* its deletion was seen: lost, or our session ending? */
    int      owner_version;
    int      have_offset;     /* offset node exists */
    int64_t  offset;
    int      offset_version;
} kw__zk_owned_t;

struct kw_zk {
    /* immutable after kw_zk_new */
    char *connect;            /* as given, for messages */
    char *hosts;              /* connect without the chroot */
    char *base;               /* <chroot>/consumers/<group> */
    char *chroot;             /* "" or "/x/y" */
    char *instance;
    char *digest;             /* NULL: open ACLs */
    char *session_file;       /* NULL: sessions are not saved (zk.h, "Resuming") */
    int   session_ms, connect_ms, op_ms;
    struct ACL_vector *acl;

    pthread_mutex_t mu;       /* everything below */
    pthread_cond_t  cond;     /* state changes and watch events */
    kw__zk_conn_t  *conn;     /* current client handle; NULL only briefly */
    int             reestablishing;
    int             registered;   /* kw_zk_register succeeded once */
    int             ids_version;  /* of our ids node in the current session, -1: none */
    int             ids_taken;    /* re-registration found our name taken */
    int             verify_needed;/* some entry is suspect: session thread checks */
    char           *ids_path;
    int             stopping;
    uint64_t        watch_gen;
    kw__zk_owned_t *owned;
    size_t          nowned, capowned;
    kw_zk_partition_t *lost;
    size_t          nlost, caplost;
    kw_zk_partition_t *inherited; /* owner nodes of a resumed session not taken back */
    size_t          ninherited;
    int             inherit_pending; /* kw_zk_release_inherited not yet done */
    kw_zk_partition_t *ensured;   /* topics whose owners/ and offsets/ parents are
                                   * known to exist (kw_zk_own creates them once;
                                   * partition unused) */
    size_t          nensured, capensured;
    pthread_mutex_t inherit_mu;   /* kw_zk_own's adoption vs the release's deletes;
                                   * held across ZooKeeper calls, so taken before mu
                                   * and never while holding it */
    kw_zk_status_t  stats;    /* counters; state and session_id computed */
    pthread_t       session_thread;
    int             thread_started;
};

/* ------------------------------------------------------------------ */
/* small helpers (zk_int.h)                                            */
/* ------------------------------------------------------------------ */

/* Sleep the next backoff step, bounded by the deadline; 0 once it passed. */
static inline int kw__zk_backoff(int64_t deadline, int *delay)
{
    int64_t left = deadline - kw_mono_ms();
    if (left <= 0)
        return 0;
    kw_sleep_ms(*delay < left ? *delay : left);
    *delay = *delay * 2 > KW__ZK_BACKOFF_MAX_MS ? KW__ZK_BACKOFF_MAX_MS : *delay * 2;
    return 1;
}

/* Wait on zk->cond until abs deadline (monotonic ms). mu held. */
static inline void kw__zk_cond_wait_until(kw_zk_t *zk, int64_t deadline_ms)
{
    int64_t left = deadline_ms - kw_mono_ms();
    struct timespec ts;

    if (left <= 0)
        return;
    ts = kw_deadline_ts(CLOCK_MONOTONIC, left);
    pthread_cond_timedwait(&zk->cond, &zk->mu, &ts);
}

static inline int kw__zk_is_conn_loss(int rc)
{
    return rc == ZCONNECTIONLOSS || rc == ZOPERATIONTIMEOUT;
}

static inline int kw__zk_is_session_gone(int rc)
{
    return rc == ZSESSIONEXPIRED || rc == ZINVALIDSTATE || rc == ZCLOSING ||
           rc == ZAUTHFAILED || rc == ZSESSIONMOVED;
}

/* A name usable as one path component: group, instance, topic. */
static inline int kw__zk_valid_name(const char *s, size_t max)
{
    if (s == NULL || s[0] == '\0' || strlen(s) >= max)
        return 0;
    if (strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
        return 0;
    return strchr(s, '/') == NULL;
}

/* buf has KW__ZK_PATH_MAX bytes. */
static inline void kw__zk_owner_path(const kw_zk_t *zk, const char *topic, int32_t p,
                                     char *buf)
{
    snprintf(buf, KW__ZK_PATH_MAX, "%s/owners/%s/%" PRId32, zk->base, topic, p);
}

static inline void kw__zk_offset_path(const kw_zk_t *zk, const char *topic, int32_t p,
                                      char *buf)
{
    snprintf(buf, KW__ZK_PATH_MAX, "%s/offsets/%s/%" PRId32, zk->base, topic, p);
}

/* ------------------------------------------------------------------ */
/* references on the client handle (zk_int.h)                          */
/* ------------------------------------------------------------------ */

static inline void kw__zk_conn_close(kw__zk_conn_t *conn)
{
    if (conn == NULL)
        return;
    if (conn->zh != NULL)
        zookeeper_close(conn->zh);
    free(conn);
}

/* Take a reference on the current conn; NULL while re-establishing (unless
 * any is set) or stopping. Not under mu. */
static inline kw__zk_conn_t *kw__zk_conn_get(kw_zk_t *zk, int any)
{
    kw__zk_conn_t *c = NULL;
    pthread_mutex_lock(&zk->mu);
    if (zk->conn != NULL && !zk->stopping && (any || !zk->reestablishing)) {
        c = zk->conn;
        c->refs++;
    }
    pthread_mutex_unlock(&zk->mu);
    return c;
}

/* Give a reference back; the last one on a retired conn closes it. Not
 * under mu. */
static inline void kw__zk_conn_put(kw_zk_t *zk, kw__zk_conn_t *c)
{
    int close_it;
    pthread_mutex_lock(&zk->mu);
    close_it = --c->refs == 0 && c->retired;
    pthread_mutex_unlock(&zk->mu);
    if (close_it)
        kw__zk_conn_close(c);
}

/* Wait until the state is not REESTABLISHING: KW_OK, KW_ETIMEDOUT at the
 * deadline (monotonic ms), KW_ECLOSED when stopping. Not under mu. */
static inline kw_err_t kw__zk_wait_active_until(kw_zk_t *zk, int64_t deadline)
{
    pthread_mutex_lock(&zk->mu);
    while (zk->reestablishing && !zk->stopping && kw_mono_ms() < deadline)
        kw__zk_cond_wait_until(zk, deadline);
    kw_err_t err = zk->stopping ? KW_ECLOSED : zk->reestablishing ? KW_ETIMEDOUT : KW_OK;
    pthread_mutex_unlock(&zk->mu);
    return err;
}

/* ------------------------------------------------------------------ */
/* zk_owner.c: ownership, and the node operations every layer uses     */
/* ------------------------------------------------------------------ */

/* KW_EINVAL (errstr filled) unless topic is a valid name and partition >= 0. */
kw_err_t kw__zk_topic_check(const char *topic, int32_t partition,
                            char *errstr, size_t errlen);

/* Create every missing component of path (persistent, our ACL) on zh,
 * retried across connection loss until the deadline: KW_EAGAIN when the
 * session is gone or the deadline passed, KW_EIO on any other error. Not
 * under mu. */
kw_err_t kw__zk_ensure_path_retry(kw_zk_t *zk, zhandle_t *zh, const char *path,
                                  int64_t deadline, char *errstr, size_t errlen);

/* Read an offset node: *exists, *value, *version, *corrupt (the node does
 * not hold an ASCII decimal). Raw ZooKeeper rc; a missing node is ZOK with
 * *exists 0. Not under mu. */
int kw__zk_read_offset(zhandle_t *zh, const char *path, int *exists, int64_t *value,
                       int *version, int *corrupt);

/* The local ownership table. mu held. */
kw__zk_owned_t *kw__zk_owned_find(kw_zk_t *zk, const char *topic, int32_t p);

/* The partition is no longer ours: drop it from the table and report it
 * through kw_zk_lost. e is invalid afterwards. mu held. */
void kw__zk_owned_lose(kw_zk_t *zk, kw__zk_owned_t *e, const char *why);

/* The watcher saw path deleted on the current, live conn: if it is the
 * owner node of a valid entry, mark the entry suspect (invalid) and ask the
 * session thread to verify. mu held (watcher thread). */
void kw__zk_owner_deleted(kw_zk_t *zk, const char *path);

/* A resumed session (kw_zk_new): list the owner nodes of the group that the
 * session holds into zk->inherited (zk.h, "Resuming"). Not under mu. */
kw_err_t kw__zk_inherit_scan(kw_zk_t *zk, kw__zk_conn_t *c, int64_t deadline,
                             char *errstr, size_t errlen);

/* Re-own one partition on the new session c (session thread, not under mu):
 * 0 done (owned, lost or forgotten), -1 the session died meanwhile (start
 * over), 1 stopping. */
int kw__zk_reown(kw_zk_t *zk, kw__zk_conn_t *c, const kw_zk_partition_t *p);

#endif /* KW_ZK_INT_H */
