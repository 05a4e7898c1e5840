/*
 * zk_session.c -- the ZooKeeper session of kwal's store: connecting, the
 * instance's ids node, expiry and re-establishment, the handle's life cycle.
 *
 * What it is for: the durability pipeline records each partition's next
 * offset in ZooKeeper once a block is durable, and receivers claim the
 * partitions they consume with ephemeral owner nodes, in the layout of
 * Kafka's ZooKeeper-based consumers (DESIGN.md, "ZooKeeper layout"). Every
 * offset write is guarded by the owner node (invariant 4, fencing), and
 * ephemeral nodes live only as long as the session that made them. This
 * file keeps that session and, when it expires, builds a new one holding the
 * same ids and owner nodes before any commit is let through again.
 *
 * How it works. kw_zk_new splits zookeeper.connect into hosts and chroot,
 * opens the first session (conn_open: zookeeper_init, digest auth, wait for
 * the connected state), creates <chroot>/consumers/<group>/{ids,owners,
 * offsets} and starts the zk-session thread. Calls share the client handle
 * through references (zk_int.h). The client's watcher (zk_watcher) runs on
 * the client's completion thread and only takes the mutex (rule Z4):
 * session events move the state, node events wake the callers of kw_zk_own
 * that wait for a partition, and the deletion of one of our owner nodes
 * goes to kw__zk_owner_deleted (zk_owner.c).
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
 * The zk-session thread (session_main) sleeps until the session expires or
 * an owner node of ours is suspect. After an expiry it retires the dead
 * conn, opens a new session (as long as that takes), re-creates the ids
 * node (register_once) and every owner node (kw__zk_reown, which re-reads
 * the offset too), and only then leaves REESTABLISHING with the epoch one
 * higher. For a suspect owner node it asks whether our ids node is still
 * held by our session (session_verify): if so the node was deleted by
 * someone else and the partition is lost; if not, the expiry is on its way.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "zk_int.h"

#include <signal.h>
#include <unistd.h>

#include "kw_file.h"

/* ------------------------------------------------------------------ */
/* the client handle                                                  */
/* ------------------------------------------------------------------ */

/*
 * The client's watcher, on its completion thread. Only takes the mutex
 * (rule Z4). Session events move the state; node events wake owners that
 * wait in kw_zk_own, and the deletion of one of our owner nodes makes it
 * suspect (kw__zk_owner_deleted).
 */
static void zk_watcher(zhandle_t *zh, int type, int state, const char *path, void *ctx)
{
    kw__zk_conn_t *conn = ctx;
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
        if (type == ZOO_DELETED_EVENT && conn == zk->conn && !conn->dead && path != NULL)
            kw__zk_owner_deleted(zk, path);      /* ours? suspect: session_verify */
    }
    pthread_cond_broadcast(&zk->cond);
    pthread_mutex_unlock(&zk->mu);
}

/*
 * Open a session on zk->hosts and wait until it is connected (timeout_ms),
 * giving up early when the handle is stopping. Not under mu.
 */
static kw_err_t conn_open(kw_zk_t *zk, int timeout_ms, const clientid_t *resume,
                          kw__zk_conn_t **out, char *errstr, size_t errlen)
{
    kw__zk_conn_t *conn = calloc(1, sizeof(*conn));
    if (conn == NULL)
        return kw_seterr(errstr, errlen, KW_ENOMEM, "out of memory");
    conn->zk = zk;
    conn->zh = zookeeper_init(zk->hosts, zk_watcher, zk->session_ms, resume, conn, 0);
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
            kw__zk_conn_close(conn);
            return kw_seterr(errstr, errlen, KW_EIO, "ZooKeeper %s: digest auth: %s",
                             zk->connect, zerror(rc));
        }
    }
    int64_t deadline = kw_mono_ms() + timeout_ms;
    pthread_mutex_lock(&zk->mu);
    while (!conn->connected && !conn->dead && !zk->stopping && kw_mono_ms() < deadline)
        kw__zk_cond_wait_until(zk, deadline);
    int ok = conn->connected && !conn->dead;
    int stopping = zk->stopping, dead = conn->dead;
    pthread_mutex_unlock(&zk->mu);
    if (!ok) {
        kw__zk_conn_close(conn);
        if (stopping)
            return kw_seterr(errstr, errlen, KW_ECLOSED, "closing");
        if (resume != NULL && dead)
            return kw_seterr(errstr, errlen, KW_ENOTFOUND, "session 0x%" PRIx64 " expired",
                             (uint64_t)resume->client_id);
        return kw_seterr(errstr, errlen, KW_ETIMEDOUT,
                         "cannot connect to ZooKeeper at '%s' within %d ms",
                         zk->connect, timeout_ms);
    }
    *out = conn;
    return KW_OK;
}

/* ------------------------------------------------------------------ */
/* the session file (zk.h, "Resuming")                                */
/* ------------------------------------------------------------------ */

/* Line format: "kwal-zk-session 1 <hosts> <id, hex> <password, 32 hex>\n". */
#define SESSION_MAGIC "kwal-zk-session 1"

/* The session saved in zk->session_file for this ensemble: 0 and *cid, or -1
 * (no file, another ensemble's, unreadable: logged). */
static int session_file_read(kw_zk_t *zk, clientid_t *cid)
{
    char line[2048], hosts[1024], pw[40];
    unsigned long long id;
    FILE *f = fopen(zk->session_file, "re");

    if (f == NULL) {
        if (errno != ENOENT)
            KW_LOG_W(MOD, "cannot read %s: %s; opening a new session", zk->session_file,
                     strerror(errno));
        return -1;
    }
    int got = fgets(line, sizeof(line), f) != NULL;
    fclose(f);
    memset(cid, 0, sizeof(*cid));
    if (!got || strncmp(line, SESSION_MAGIC " ", sizeof(SESSION_MAGIC)) != 0 ||
        sscanf(line + sizeof(SESSION_MAGIC), "%1023s %llx %32s", hosts, &id, pw) != 3 ||
        strlen(pw) != 32) {
        KW_LOG_W(MOD, "%s is not a saved session; opening a new session", zk->session_file);
        return -1;
    }
    if (strcmp(hosts, zk->hosts) != 0) {
        KW_LOG_I(MOD, "%s names a session of ZooKeeper %s, not %s: opening a new session",
                 zk->session_file, hosts, zk->hosts);
        return -1;
    }
    for (int i = 0; i < 16; i++) {
        unsigned b;
        if (sscanf(pw + 2 * i, "%2x", &b) != 1)
            return -1;
        cid->passwd[i] = (char)b;
    }
    cid->client_id = (int64_t)id;
    return 0;
}

/* Save zh's session in zk->session_file. A failure is logged: the next start
 * then waits for this session to expire instead of resuming it. */
static void session_file_write(kw_zk_t *zk, zhandle_t *zh)
{
    const clientid_t *cid = zoo_client_id(zh);
    char line[2048], err[512];
    int n = snprintf(line, sizeof(line), SESSION_MAGIC " %s %" PRIx64 " ", zk->hosts,
                     (uint64_t)cid->client_id);

    for (int i = 0; i < 16 && n > 0 && (size_t)n < sizeof(line) - 3; i++)
        n += snprintf(line + n, sizeof(line) - (size_t)n, "%02x", (unsigned char)cid->passwd[i]);
    if (n > 0 && (size_t)n < sizeof(line) - 1) {
        line[n++] = '\n';
        if (kw_file_replace(zk->session_file, line, (size_t)n, err, sizeof(err)) == 0)
            return;
    } else {
        snprintf(err, sizeof(err), "%s: connect string too long", zk->session_file);
    }
    KW_LOG_W(MOD, "cannot save the ZooKeeper session (%s): a restart will wait for it "
             "to expire", err);
}

/* ------------------------------------------------------------------ */
/* the ids node                                                       */
/* ------------------------------------------------------------------ */

/* Our ids node's data: "host:pid". */
static void ids_data(char *buf, size_t len)
{
    char host[256] = "unknown";
    gethostname(host, sizeof(host) - 1);
    snprintf(buf, len, "%s:%ld", host, (long)getpid());
}

/* Create our ids node on zh (raw rc; ZOK also when it is ours already, e.g.
 * in a resumed session: then its data is made ours); *version gets its
 * version. ZNODEEXISTS: another session holds it, its data in holder. */
static int register_once(kw_zk_t *zk, zhandle_t *zh, int *version, char *holder,
                         size_t holderlen)
{
    char data[300], buf[300];
    int len = (int)sizeof(buf) - 1;
    struct Stat st;
    ids_data(data, sizeof(data));
    int rc = zoo_create2(zh, zk->ids_path, data, (int)strlen(data), zk->acl, ZOO_EPHEMERAL,
                         NULL, 0, &st);
    if (rc == ZNODEEXISTS) {
        rc = zoo_get(zh, zk->ids_path, 0, buf, &len, &st);
        if (rc == ZNONODE)
            return ZCONNECTIONLOSS;              /* vanished: try again */
        if (rc != ZOK)
            return rc;
        buf[len < 0 ? 0 : len] = '\0';
        if (st.ephemeralOwner != zoo_client_id(zh)->client_id) {
            snprintf(holder, holderlen, "%s", buf);
            return ZNODEEXISTS;
        }
        if (strcmp(buf, data) != 0 &&
            (rc = zoo_set2(zh, zk->ids_path, data, (int)strlen(data), st.version, &st)) != ZOK)
            return rc == ZBADVERSION ? ZCONNECTIONLOSS : rc;
    }
    if (rc == ZOK)
        *version = st.version;
    return rc;
}

/* Does holder ("host:pid", an ids node's data) name a running kwal process
 * on this host other than us? */
static int holder_runs_here(const char *holder)
{
    char host[256] = "", comm[64] = "", path[64];
    const char *colon = strrchr(holder, ':');
    long pid;
    FILE *f;

    gethostname(host, sizeof(host) - 1);
    if (colon == NULL || (size_t)(colon - holder) != strlen(host) ||
        strncmp(holder, host, strlen(host)) != 0)
        return 0;
    pid = strtol(colon + 1, NULL, 10);
    if (pid <= 0 || pid == (long)getpid() || (kill((pid_t)pid, 0) != 0 && errno != EPERM))
        return 0;
    snprintf(path, sizeof(path), "/proc/%ld/comm", pid);
    if ((f = fopen(path, "re")) == NULL)
        return 1;                                /* no /proc: assume it is one */
    int got = fgets(comm, sizeof(comm), f) != NULL;
    fclose(f);
    return got && strncmp(comm, "kwal", 4) == 0;
}

kw_err_t kw_zk_register(kw_zk_t *zk, char *errstr, size_t errlen)
{
    int64_t deadline = kw_mono_ms() + zk->op_ms, held_until = 0;
    int delay = KW__ZK_BACKOFF_MIN_MS, rc = ZOK;
    char holder[300] = "";
    for (;;) {
        if (kw__zk_wait_active_until(zk, deadline) != KW_OK)
            return kw_seterr(errstr, errlen, KW_EAGAIN,
                             "ZooKeeper %s: session not re-established in time", zk->connect);
        kw__zk_conn_t *c = kw__zk_conn_get(zk, 0);
        if (c == NULL)
            continue;
        int version = -1;
        rc = register_once(zk, c->zh, &version, holder, sizeof(holder));
        int timeout = zoo_recv_timeout(c->zh);
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
        kw__zk_conn_put(zk, c);
        if (rc == ZOK)
            return KW_OK;
        if (rc == ZNODEEXISTS) {
            if (holder_runs_here(holder))
                return kw_seterr(errstr, errlen, KW_EBUSY,
                                 "instance '%s' is in use by a running kwal process (%s): "
                                 "two processes of group '%s' cannot share an instance.id",
                                 zk->instance, holder, strrchr(zk->base, '/') + 1);
            /* a predecessor whose session we could not resume: its session
             * ends within the session timeout */
            if (held_until == 0) {
                held_until = kw_mono_ms() + (timeout > 0 ? timeout : zk->session_ms) + 2000;
                if (held_until > deadline)
                    deadline = held_until;
                KW_LOG_I(MOD, "instance '%s' is still registered by an earlier session "
                         "(%s); waiting up to %" PRId64 " ms for it to expire", zk->instance,
                         holder, held_until - kw_mono_ms());
            }
            if (kw_mono_ms() >= held_until)
                return kw_seterr(errstr, errlen, KW_EBUSY,
                                 "instance '%s' is registered by another live session (%s) "
                                 "that did not expire: is another kwal process running with "
                                 "this instance.id?", zk->instance, holder);
            kw_sleep_ms(200);
            continue;
        }
        if (!kw__zk_is_conn_loss(rc) && !kw__zk_is_session_gone(rc))
            return kw_seterr(errstr, errlen, KW_EIO, "ZooKeeper %s: registering: %s",
                             zk->connect, zerror(rc));
        if (!kw__zk_backoff(deadline, &delay))
            return kw_seterr(errstr, errlen, KW_EAGAIN, "ZooKeeper %s: registering: %s",
                             zk->connect, zerror(rc));
    }
}

/* ------------------------------------------------------------------ */
/* expiry and re-establishment (the zk-session thread)                */
/* ------------------------------------------------------------------ */

/*
 * Owner nodes of ours were deleted while the session looked alive. If our
 * ids node is still there under our session, the session is alive and
 * someone else deleted them: they are lost. If the session is ending, its
 * expiry arrives soon and re-establishment re-owns them. Called with mu held
 * (released around the round trip); retries every 100 ms until it knows.
 */
static void session_verify(kw_zk_t *zk)
{
    kw__zk_conn_t *c = zk->conn;
    struct Stat st;
    c->refs++;
    pthread_mutex_unlock(&zk->mu);
    int64_t sid = zoo_client_id(c->zh)->client_id;
    int rc = zoo_exists(c->zh, zk->ids_path, 0, &st);
    kw__zk_conn_put(zk, c);
    pthread_mutex_lock(&zk->mu);
    if (c != zk->conn || c->dead || zk->reestablishing)
        return;                                  /* expiry path takes over */
    if (rc == ZOK && st.ephemeralOwner == sid) {
        for (size_t i = 0; i < zk->nowned;) {
            kw__zk_owned_t *e = &zk->owned[i];
            if (e->suspect && !e->valid)
                kw__zk_owned_lose(zk, e, "its owner node was deleted by someone else");
            else
                i++;
        }
        zk->verify_needed = 0;
        return;
    }
    pthread_mutex_unlock(&zk->mu);
    kw_sleep_ms(100);
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
        kw__zk_conn_t *old = zk->conn;
        zk->conn = NULL;
        int close_old = 0;
        if (old != NULL) {
            old->retired = 1;
            close_old = old->refs == 0;
        }
        pthread_mutex_unlock(&zk->mu);
        if (close_old)
            kw__zk_conn_close(old);

        /* a new session, as long as it takes */
        kw__zk_conn_t *c = NULL;
        int delay = KW__ZK_BACKOFF_MIN_MS;
        char err[256];
        for (;;) {
            kw_err_t e = conn_open(zk, zk->connect_ms, NULL, &c, err, sizeof(err));
            if (e == KW_OK || e == KW_ECLOSED)
                break;
            KW_LOG_W(MOD, "%s; retrying", err);
            kw__zk_backoff(kw_mono_ms() + delay, &delay);
        }
        if (c != NULL && zk->session_file != NULL)
            session_file_write(zk, c->zh);
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
            kw_sleep_ms(KW__ZK_BACKOFF_MIN_MS);
            pthread_mutex_lock(&zk->mu);
            c->dead = 1;
            continue;
        }

        int restart = 0;
        delay = KW__ZK_BACKOFF_MIN_MS;
        while (registered) {
            int version = -1;
            char holder[300];
            int rc = register_once(zk, c->zh, &version, holder, sizeof(holder));
            if (rc == ZOK) {
                pthread_mutex_lock(&zk->mu);
                zk->ids_version = version;
                zk->ids_taken = 0;
                pthread_mutex_unlock(&zk->mu);
                break;
            }
            if (kw__zk_is_session_gone(rc)) {
                restart = 1;
                break;
            }
            if (rc == ZNODEEXISTS) {
                KW_LOG_E(MOD, "instance '%s' is registered by another session (%s); "
                         "not re-registered, commits are refused", zk->instance, holder);
                pthread_mutex_lock(&zk->mu);
                zk->ids_taken = 1;
                pthread_mutex_unlock(&zk->mu);
                break;
            }
            if (!kw__zk_is_conn_loss(rc))
                KW_LOG_W(MOD, "re-registering: %s; retrying", zerror(rc));
            kw__zk_backoff(kw_mono_ms() + delay, &delay);
        }
        for (size_t i = 0; !restart && i < np; i++) {
            int r = kw__zk_reown(zk, c, &snap[i]);
            if (r != 0)
                restart = 1;
        }
        free(snap);
        pthread_mutex_lock(&zk->mu);
        if (restart || c->dead || zk->stopping)
            continue;
        zk->reestablishing = 0;
        zk->stats.epoch++;
        /* the resumed session's nodes went with it: nothing left to release */
        zk->ninherited = 0;
        zk->inherit_pending = 0;
        KW_LOG_I(MOD, "ZooKeeper session re-established (epoch %" PRIu64 ", %zu partitions owned)",
                 zk->stats.epoch, zk->nowned);
        pthread_cond_broadcast(&zk->cond);
    }
    pthread_mutex_unlock(&zk->mu);
    return NULL;
}

/* ------------------------------------------------------------------ */
/* life cycle                                                         */
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
    kw__zk_conn_t *c = kw__zk_conn_get(zk, 0);
    if (c == NULL)
        return;
    const clientid_t *cid = zoo_client_id(c->zh);
    *id = cid->client_id;
    memcpy(passwd, cid->passwd, 16);
    kw__zk_conn_put(zk, c);
}

const char *kw_zk_instance(const kw_zk_t *zk)
{
    return zk->instance;
}

kw_err_t kw_zk_wait_active(kw_zk_t *zk, int timeout_ms)
{
    return kw__zk_wait_active_until(zk, kw_mono_ms() + timeout_ms);
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
    free(zk->inherited);
    free(zk->ensured);
    free(zk->session_file);
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
    char path[KW__ZK_PATH_MAX];
    int mu_ok = 0, cond_ok = 0;

    *out = NULL;
    if (opts == NULL || opts->connect == NULL || opts->connect[0] == '\0')
        return kw_seterr(errstr, errlen, KW_ECONFIG, "zookeeper.connect is not set");
    if (!kw__zk_valid_name(opts->group, 256))
        return kw_seterr(errstr, errlen, KW_ECONFIG, "bad group.id '%s'",
                         opts->group ? opts->group : "(null)");
    if (opts->instance != NULL && !kw__zk_valid_name(opts->instance, 256))
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
    zk->session_file = dupstr(opts->session_file);
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
        (opts->digest != NULL && zk->digest == NULL) ||
        (opts->session_file != NULL && zk->session_file == NULL)) {
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
    if (bl < 0 || bl > KW__ZK_PATH_MAX - 2 * KW_ZK_TOPIC_MAX - 32 ||
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
    if (pthread_mutex_init(&zk->inherit_mu, NULL) != 0) {
        pthread_mutex_destroy(&zk->mu);
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

    clientid_t saved;
    int resumed = 0;
    if (zk->session_file != NULL && session_file_read(zk, &saved) == 0) {
        err = conn_open(zk, zk->connect_ms, &saved, &zk->conn, errstr, errlen);
        if (err == KW_OK && zoo_client_id(zk->conn->zh)->client_id == saved.client_id) {
            resumed = 1;
        } else if (err == KW_OK || err == KW_ENOTFOUND) {
            KW_LOG_I(MOD, "the saved ZooKeeper session 0x%" PRIx64 " has expired: opening "
                     "a new one", (uint64_t)saved.client_id);
            if (zk->conn != NULL) {
                kw__zk_conn_close(zk->conn);
                zk->conn = NULL;
            }
        } else {
            goto fail;
        }
    }
    if (!resumed) {
        err = conn_open(zk, zk->connect_ms, NULL, &zk->conn, errstr, errlen);
        if (err != KW_OK)
            goto fail;
        if (zk->session_file != NULL)
            session_file_write(zk, zk->conn->zh);
    }
    zk->stats.resumed = resumed;
    int64_t deadline = kw_mono_ms() + zk->op_ms;
    static const char *const subs[] = { "ids", "owners", "offsets" };
    for (size_t i = 0; i < 3; i++) {
        snprintf(path, sizeof(path), "%s/%s", zk->base, subs[i]);
        err = kw__zk_ensure_path_retry(zk, zk->conn->zh, path, deadline, errstr, errlen);
        if (err != KW_OK)
            goto fail;
    }
    if (resumed) {
        err = kw__zk_inherit_scan(zk, zk->conn, deadline, errstr, errlen);
        if (err != KW_OK)
            goto fail;
    }
    if (pthread_create(&zk->session_thread, NULL, session_main, zk) != 0) {
        err = kw_seterr(errstr, errlen, KW_ENOMEM, "cannot start the zk-session thread");
        goto fail;
    }
    zk->thread_started = 1;
    KW_LOG_I(MOD, "connected to ZooKeeper at %s as '%s' (session 0x%" PRIx64 "%s%s, "
             "%zu owner nodes held)", zk->connect, zk->instance,
             (uint64_t)zoo_client_id(zk->conn->zh)->client_id,
             resumed ? ", resumed from " : "", resumed ? zk->session_file : "",
             zk->ninherited);
    *out = zk;
    return KW_OK;

fail:
    if (zk->conn != NULL)
        kw__zk_conn_close(zk->conn);
    if (cond_ok)
        pthread_cond_destroy(&zk->cond);
    if (mu_ok) {
        pthread_mutex_destroy(&zk->inherit_mu);
        pthread_mutex_destroy(&zk->mu);
    }
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
    kw__zk_conn_close(zk->conn);                        /* ends the session: ephemerals go */
    if (zk->session_file != NULL && unlink(zk->session_file) != 0 && errno != ENOENT)
        KW_LOG_W(MOD, "cannot remove %s: %s", zk->session_file, strerror(errno));
    pthread_cond_destroy(&zk->cond);
    pthread_mutex_destroy(&zk->inherit_mu);
    pthread_mutex_destroy(&zk->mu);
    free_handle(zk);
}
