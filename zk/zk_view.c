/*
 * zk_view.c -- reading a consumer group's nodes without taking part in it
 * (zk.h, "Reading a group"): what `kwal status` shows of ZooKeeper.
 *
 * What it is for: an operator looks at a group while its instances run, or
 * after they stopped, and the look must not disturb it. A kw_zk_t cannot
 * serve: kw_zk_new creates the chroot and /consumers/<group>/{ids,owners,
 * offsets}, so a typo in group.id would leave a new, empty group behind, and
 * its handle runs a session thread that re-establishes what it owns. A view
 * is a plain session that only lists and reads: no node is created, no
 * watch is set, nothing is re-established.
 *
 * How it works. kw_zk_view_open splits zookeeper.connect into hosts and
 * chroot as kw_zk_new does, opens a session on the hosts (zookeeper_init2,
 * the client's own log routed to kwal's at debug level: a failure is said
 * once, by the caller, in kwal's words), adds the digest when there is one,
 * and waits for the connected state. Every read (view_get, view_children)
 * is retried on connection loss with the store's backoff until the call's
 * deadline (op_timeout_ms); ZNOAUTH -- a group made with a digest, read
 * without it -- is KW_EAUTH. Listings are sorted here, so callers print the
 * same order every time.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "zk_int.h"

struct kw_zk_view {
    char           *connect;       /* as given, for messages */
    char           *hosts;         /* connect without the chroot */
    char           *base;          /* <chroot>/consumers/<group> */
    int             op_ms;
    zhandle_t      *zh;
    pthread_mutex_t mu;            /* connected, dead */
    pthread_cond_t  cond;
    int             connected;
    int             dead;          /* expired or auth failed */
};

/* ------------------------------------------------------------------ */
/* the session                                                        */
/* ------------------------------------------------------------------ */

/* Session events only: a view sets no watches. Client's completion thread. */
static void view_watcher(zhandle_t *zh, int type, int state, const char *path, void *ctx)
{
    kw_zk_view_t *v = ctx;
    (void)zh;
    (void)path;

    if (type != ZOO_SESSION_EVENT)
        return;
    pthread_mutex_lock(&v->mu);
    v->connected = state == ZOO_CONNECTED_STATE;
    if (state == ZOO_EXPIRED_SESSION_STATE || state == ZOO_AUTH_FAILED_STATE)
        v->dead = 1;
    pthread_cond_broadcast(&v->cond);
    pthread_mutex_unlock(&v->mu);
}

/* The client library's own messages (connection refused, retries): the
 * caller says what they mean, so they go to kwal's log at debug level. */
static void view_client_log(const char *message)
{
    KW_LOG_D(MOD, "ZooKeeper client: %s", message);
}

/* Split connect into hosts and base (<chroot>/consumers/<group>), with the
 * rules of kw_zk_new: "/" and trailing slashes are no chroot, "//" is bad. */
static kw_err_t view_paths(kw_zk_view_t *v, const char *group, char *errstr, size_t errlen)
{
    char path[KW__ZK_PATH_MAX], chroot[KW__ZK_PATH_MAX] = "";
    char *slash = strchr(v->hosts, '/');

    if (slash != NULL) {
        size_t cl = strlen(slash);
        if (cl >= sizeof(chroot))
            return kw_seterr(errstr, errlen, KW_ECONFIG, "zookeeper.connect chroot too long");
        memcpy(chroot, slash, cl + 1);
        *slash = '\0';
        while (cl > 0 && chroot[cl - 1] == '/')
            chroot[--cl] = '\0';
    }
    if (v->hosts[0] == '\0' || strstr(chroot, "//") != NULL)
        return kw_seterr(errstr, errlen, KW_ECONFIG, "bad zookeeper.connect '%s'", v->connect);
    int bl = snprintf(path, sizeof(path), "%s/consumers/%s", chroot, group);
    if (bl < 0 || bl > KW__ZK_PATH_MAX - 2 * KW_ZK_TOPIC_MAX - 32)
        return kw_seterr(errstr, errlen, KW_ECONFIG, "zookeeper.connect chroot too long");
    if ((v->base = strdup(path)) == NULL)
        return kw_seterr(errstr, errlen, KW_ENOMEM, "out of memory");
    return KW_OK;
}

/* Wait for the first connected state, for at most timeout_ms. */
static kw_err_t view_connect(kw_zk_view_t *v, int session_ms, int timeout_ms,
                             const char *digest, char *errstr, size_t errlen)
{
    v->zh = zookeeper_init2(v->hosts, view_watcher, session_ms, NULL, v, 0, view_client_log);
    if (v->zh == NULL)
        return kw_seterr(errstr, errlen, KW_ECONFIG,
                         "zookeeper.connect '%s': cannot start a ZooKeeper client: %s",
                         v->connect, strerror(errno));
    if (digest != NULL) {
        int rc = zoo_add_auth(v->zh, "digest", digest, (int)strlen(digest), NULL, NULL);
        if (rc != ZOK)
            return kw_seterr(errstr, errlen, KW_EIO, "ZooKeeper %s: digest auth: %s",
                             v->connect, zerror(rc));
    }
    int64_t deadline = kw_mono_ms() + timeout_ms;
    pthread_mutex_lock(&v->mu);
    while (!v->connected && !v->dead && kw_mono_ms() < deadline) {
        struct timespec ts = kw_deadline_ts(CLOCK_MONOTONIC, deadline - kw_mono_ms());
        pthread_cond_timedwait(&v->cond, &v->mu, &ts);
    }
    int ok = v->connected && !v->dead;
    pthread_mutex_unlock(&v->mu);
    if (!ok)
        return kw_seterr(errstr, errlen, KW_ETIMEDOUT,
                         "cannot connect to ZooKeeper at '%s' within %d ms",
                         v->connect, timeout_ms);
    return KW_OK;
}

kw_err_t kw_zk_view_open(const kw_zk_options_t *opts, kw_zk_view_t **out,
                         char *errstr, size_t errlen)
{
    kw_zk_view_t *v;
    kw_err_t err;

    *out = NULL;
    if (opts == NULL || opts->connect == NULL || opts->connect[0] == '\0')
        return kw_seterr(errstr, errlen, KW_ECONFIG, "zookeeper.connect is not set");
    if (!kw__zk_valid_name(opts->group, 256))
        return kw_seterr(errstr, errlen, KW_ECONFIG, "bad group.id '%s'",
                         opts->group ? opts->group : "(null)");
    if (opts->digest != NULL && strchr(opts->digest, ':') == NULL)
        return kw_seterr(errstr, errlen, KW_ECONFIG, "ZooKeeper digest must be user:password");
    if (opts->session_timeout_ms < 0 || opts->connect_timeout_ms < 0 || opts->op_timeout_ms < 0)
        return kw_seterr(errstr, errlen, KW_ECONFIG, "negative ZooKeeper timeout");
    if ((v = calloc(1, sizeof(*v))) == NULL)
        return kw_seterr(errstr, errlen, KW_ENOMEM, "out of memory");
    v->op_ms = opts->op_timeout_ms ? opts->op_timeout_ms : 30000;
    pthread_mutex_init(&v->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&v->cond, &ca);
    pthread_condattr_destroy(&ca);
    v->connect = strdup(opts->connect);
    v->hosts = strdup(opts->connect);
    if (v->connect == NULL || v->hosts == NULL) {
        err = kw_seterr(errstr, errlen, KW_ENOMEM, "out of memory");
        goto fail;
    }
    err = view_paths(v, opts->group, errstr, errlen);
    if (err == KW_OK)
        err = view_connect(v, opts->session_timeout_ms ? opts->session_timeout_ms : 30000,
                           opts->connect_timeout_ms ? opts->connect_timeout_ms : 15000,
                           opts->digest, errstr, errlen);
    if (err != KW_OK)
        goto fail;
    *out = v;
    return KW_OK;

fail:
    kw_zk_view_close(v);
    return err;
}

void kw_zk_view_close(kw_zk_view_t *v)
{
    if (v == NULL)
        return;
    if (v->zh != NULL)
        zookeeper_close(v->zh);                  /* no callback after it returns */
    pthread_cond_destroy(&v->cond);
    pthread_mutex_destroy(&v->mu);
    free(v->base);
    free(v->hosts);
    free(v->connect);
    free(v);
}

/* ------------------------------------------------------------------ */
/* reads, retried across connection loss                              */
/* ------------------------------------------------------------------ */

/* The error of a failed read of path, as kw_err_t and one line. */
static kw_err_t view_fail(kw_zk_view_t *v, int rc, const char *path, char *errstr,
                          size_t errlen)
{
    if (rc == ZNOAUTH)
        return kw_seterr(errstr, errlen, KW_EAUTH,
                         "ZooKeeper %s: not allowed to read %s (the group's nodes have a "
                         "digest ACL: give the same digest)", v->connect, path);
    if (kw__zk_is_conn_loss(rc) || kw__zk_is_session_gone(rc))
        return kw_seterr(errstr, errlen, KW_EAGAIN, "ZooKeeper %s: reading %s: %s",
                         v->connect, path, zerror(rc));
    return kw_seterr(errstr, errlen, KW_EIO, "ZooKeeper %s: reading %s: %s", v->connect,
                     path, zerror(rc));
}

/* zoo_get: *len in, bytes read out (0 for a node without data). Raw rc;
 * connection loss retried until deadline. */
static int view_get(kw_zk_view_t *v, const char *path, char *buf, int *len,
                    struct Stat *st, int64_t deadline)
{
    int delay = KW__ZK_BACKOFF_MIN_MS, cap = *len, rc;

    for (;;) {
        *len = cap;
        rc = zoo_get(v->zh, path, 0, buf, len, st);
        if (!kw__zk_is_conn_loss(rc) || !kw__zk_backoff(deadline, &delay))
            break;
    }
    if (rc == ZOK && *len < 0)
        *len = 0;
    return rc;
}

static int view_children(kw_zk_view_t *v, const char *path, struct String_vector *out,
                         int64_t deadline)
{
    int delay = KW__ZK_BACKOFF_MIN_MS, rc;

    while ((rc = zoo_get_children(v->zh, path, 0, out)) != ZOK && kw__zk_is_conn_loss(rc) &&
           kw__zk_backoff(deadline, &delay))
        ;
    return rc;
}

kw_err_t kw_zk_view_group_exists(kw_zk_view_t *v, int *exists, char *errstr, size_t errlen)
{
    int64_t deadline = kw_mono_ms() + v->op_ms;
    int delay = KW__ZK_BACKOFF_MIN_MS, rc;
    struct Stat st;

    *exists = 0;
    while ((rc = zoo_exists(v->zh, v->base, 0, &st)) != ZOK && kw__zk_is_conn_loss(rc) &&
           kw__zk_backoff(deadline, &delay))
        ;
    if (rc == ZNONODE)
        return KW_OK;
    if (rc != ZOK)
        return view_fail(v, rc, v->base, errstr, errlen);
    *exists = 1;
    return KW_OK;
}

/* ------------------------------------------------------------------ */
/* instances                                                          */
/* ------------------------------------------------------------------ */

static int member_cmp(const void *a, const void *b)
{
    return strcmp(((const kw_zk_member_t *)a)->name, ((const kw_zk_member_t *)b)->name);
}

kw_err_t kw_zk_view_members(kw_zk_view_t *v, kw_zk_member_t **out, size_t *n,
                            char *errstr, size_t errlen)
{
    int64_t deadline = kw_mono_ms() + v->op_ms;
    struct String_vector ids = { 0, NULL };
    char path[KW__ZK_PATH_MAX];
    kw_zk_member_t *list = NULL;
    size_t k = 0;
    kw_err_t err = KW_OK;
    int rc;

    *out = NULL;
    *n = 0;
    snprintf(path, sizeof(path), "%s/ids", v->base);
    rc = view_children(v, path, &ids, deadline);
    if (rc == ZNONODE)
        return KW_OK;
    if (rc != ZOK)
        return view_fail(v, rc, path, errstr, errlen);
    if (ids.count > 0 && (list = calloc((size_t)ids.count, sizeof(*list))) == NULL) {
        err = kw_seterr(errstr, errlen, KW_ENOMEM, "out of memory");
        goto cleanup;
    }
    for (int32_t i = 0; i < ids.count; i++) {
        kw_zk_member_t *m = &list[k];
        int len = (int)sizeof(m->data) - 1;
        struct Stat st;

        if (!kw__zk_valid_name(ids.data[i], sizeof(m->name)))
            continue;
        snprintf(path, sizeof(path), "%s/ids/%s", v->base, ids.data[i]);
        rc = view_get(v, path, m->data, &len, &st, deadline);
        if (rc == ZNONODE)
            continue;                            /* it left meanwhile */
        if (rc != ZOK) {
            err = view_fail(v, rc, path, errstr, errlen);
            goto cleanup;
        }
        m->data[len] = '\0';
        snprintf(m->name, sizeof(m->name), "%s", ids.data[i]);
        m->created_ms = st.ctime;
        k++;
    }
    if (k > 1)
        qsort(list, k, sizeof(*list), member_cmp);

cleanup:
    deallocate_String_vector(&ids);
    if (err != KW_OK || k == 0) {
        free(list);
        return err;
    }
    *out = list;
    *n = k;
    return KW_OK;
}

/* ------------------------------------------------------------------ */
/* partitions: owners and offsets merged                              */
/* ------------------------------------------------------------------ */

typedef struct part_list {
    kw_zk_part_info_t *v;
    size_t             n, cap;
} part_list_t;

/* A partition number as kwal writes it: decimal digits, at most INT32_MAX. */
static int parse_partition(const char *s, int32_t *out)
{
    int64_t p = 0;

    if (s[0] == '\0' || strlen(s) > 10)
        return -1;
    for (const char *c = s; *c != '\0'; c++) {
        if (*c < '0' || *c > '9')
            return -1;
        p = p * 10 + (*c - '0');
    }
    if (p > INT32_MAX)
        return -1;
    *out = (int32_t)p;
    return 0;
}

/* The entry of topic/partition, added (unowned, no offset) when missing;
 * NULL when out of memory. Linear: a group has at most thousands. */
static kw_zk_part_info_t *part_entry(part_list_t *l, const char *topic, int32_t p)
{
    for (size_t i = 0; i < l->n; i++)
        if (l->v[i].partition == p && strcmp(l->v[i].topic, topic) == 0)
            return &l->v[i];
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        kw_zk_part_info_t *nv = realloc(l->v, cap * sizeof(*nv));
        if (nv == NULL)
            return NULL;
        l->v = nv;
        l->cap = cap;
    }
    kw_zk_part_info_t *e = &l->v[l->n++];
    memset(e, 0, sizeof(*e));
    snprintf(e->topic, sizeof(e->topic), "%s", topic);
    e->partition = p;
    e->offset = -1;
    return e;
}

/* Read one owner or offset node of topic/p into its entry. ZNONODE (gone
 * meanwhile) is no error. */
static kw_err_t read_part_node(kw_zk_view_t *v, part_list_t *l, int owners, const char *topic,
                               int32_t p, int64_t deadline, char *errstr, size_t errlen)
{
    char path[KW__ZK_PATH_MAX], buf[sizeof(((kw_zk_part_info_t *)0)->owner)];
    int len = (int)sizeof(buf) - 1, exists = 0, version, corrupt = 0;
    int64_t value = -1;
    struct Stat st;
    int rc, delay = KW__ZK_BACKOFF_MIN_MS;

    snprintf(path, sizeof(path), "%s/%s/%s/%" PRId32, v->base, owners ? "owners" : "offsets",
             topic, p);
    if (owners) {
        rc = view_get(v, path, buf, &len, &st, deadline);
        exists = rc == ZOK;
    } else {
        while ((rc = kw__zk_read_offset(v->zh, path, &exists, &value, &version, &corrupt)) != ZOK &&
               kw__zk_is_conn_loss(rc) && kw__zk_backoff(deadline, &delay))
            ;
    }
    if (rc == ZNONODE || (rc == ZOK && !exists))
        return KW_OK;
    if (rc != ZOK)
        return view_fail(v, rc, path, errstr, errlen);
    kw_zk_part_info_t *e = part_entry(l, topic, p);
    if (e == NULL)
        return kw_seterr(errstr, errlen, KW_ENOMEM, "out of memory");
    if (owners) {
        memcpy(e->owner, buf, (size_t)len);     /* buf fits, NUL included */
        e->owner[len] = '\0';
    } else {
        e->offset = corrupt ? -1 : value;
        e->offset_corrupt = corrupt;
    }
    return KW_OK;
}

/* Every partition node under <base>/owners (owners 1) or <base>/offsets. */
static kw_err_t read_part_tree(kw_zk_view_t *v, part_list_t *l, int owners, int64_t deadline,
                               char *errstr, size_t errlen)
{
    struct String_vector topics = { 0, NULL };
    char path[KW__ZK_PATH_MAX];
    kw_err_t err = KW_OK;
    int rc;

    snprintf(path, sizeof(path), "%s/%s", v->base, owners ? "owners" : "offsets");
    rc = view_children(v, path, &topics, deadline);
    if (rc == ZNONODE)
        return KW_OK;
    if (rc != ZOK)
        return view_fail(v, rc, path, errstr, errlen);
    for (int32_t t = 0; t < topics.count && err == KW_OK; t++) {
        struct String_vector parts = { 0, NULL };
        const char *topic = topics.data[t];

        if (!kw__zk_valid_name(topic, KW_ZK_TOPIC_MAX))
            continue;
        snprintf(path, sizeof(path), "%s/%s/%s", v->base, owners ? "owners" : "offsets", topic);
        rc = view_children(v, path, &parts, deadline);
        if (rc == ZNONODE)
            continue;
        if (rc != ZOK) {
            err = view_fail(v, rc, path, errstr, errlen);
            break;
        }
        for (int32_t i = 0; i < parts.count && err == KW_OK; i++) {
            int32_t p;
            if (parse_partition(parts.data[i], &p) == 0)
                err = read_part_node(v, l, owners, topic, p, deadline, errstr, errlen);
        }
        deallocate_String_vector(&parts);
    }
    deallocate_String_vector(&topics);
    return err;
}

static int part_cmp(const void *a, const void *b)
{
    const kw_zk_part_info_t *x = a, *y = b;
    int c = strcmp(x->topic, y->topic);
    if (c != 0)
        return c;
    return (x->partition > y->partition) - (x->partition < y->partition);
}

kw_err_t kw_zk_view_partitions(kw_zk_view_t *v, kw_zk_part_info_t **out, size_t *n,
                               char *errstr, size_t errlen)
{
    int64_t deadline = kw_mono_ms() + v->op_ms;
    part_list_t l = { NULL, 0, 0 };
    kw_err_t err;

    *out = NULL;
    *n = 0;
    err = read_part_tree(v, &l, 1, deadline, errstr, errlen);
    if (err == KW_OK)
        err = read_part_tree(v, &l, 0, deadline, errstr, errlen);
    if (err != KW_OK || l.n == 0) {
        free(l.v);
        return err;
    }
    qsort(l.v, l.n, sizeof(*l.v), part_cmp);
    *out = l.v;
    *n = l.n;
    return KW_OK;
}
