/*
 * test_zk.c -- unit tests of the ZooKeeper offset store and partition
 * ownership (zk/zk.h) against a REAL ZooKeeper server.
 *
 * How: the group setup starts Debian's ZooKeeper with
 * $KWAL_BIN_DIR/kwal-zk-local (tickTime 500 ms, so sessions of 1 to 10 s
 * are allowed) in a temporary directory; the teardown stops it. Without
 * KWAL_BIN_DIR every test is skipped with a message; a binary that exists
 * but cannot start ZooKeeper fails the run. Every test uses its own group
 * (or chroot) so tests do not see each other's nodes. What kwal wrote is
 * read back raw with the ZooKeeper C client (raw_*), never through zk.h.
 * Faults: a session is expired by connecting a second client with its id and
 * password and closing it (the server then ends the session); an outage is
 * `kwal-zk-local stop` followed by `start` on the same port and data. Every
 * wait is bounded.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <zookeeper/zookeeper.h>

#include "test_util.h"
#include "test_zk_server.h"
#include "zk.h"

#define SESSION_MS 4000

static struct {
    int              skip;
    test_zk_server_t zk;
    FILE            *client_log;
} g;

/* ------------------------------------------------------------------ */
/* the server                                                          */
/* ------------------------------------------------------------------ */

static int group_setup(void **state)
{
    (void)state;
    int rc = test_zk_server_start(&g.zk, "zk", "--tick-ms 500");
    if (rc <= 0) {
        g.skip = rc == 0;
        return rc;
    }
    /* the ZooKeeper client's own log, kept next to the server's */
    char path[1200];
    test_zk_server_path(&g.zk, "client.log", path, sizeof(path));
    g.client_log = fopen(path, "a");
    if (g.client_log != NULL)
        zoo_set_log_stream(g.client_log);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    test_zk_server_stop(&g.zk);
    return 0;
}

#define SKIP_IF_NO_ZK() do { if (g.skip) { skip(); return; } } while (0)

/* ------------------------------------------------------------------ */
/* helpers                                                              */
/* ------------------------------------------------------------------ */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static kw_zk_t *open_zk(const char *connect, const char *group, const char *instance,
                        const char *digest, int op_ms)
{
    kw_zk_options_t o;
    kw_zk_t *zk = NULL;
    char err[512] = "";
    kw_zk_options_init(&o);
    o.connect = connect;
    o.group = group;
    o.instance = instance;
    o.digest = digest;
    o.session_timeout_ms = SESSION_MS;
    o.connect_timeout_ms = 10000;
    o.op_timeout_ms = op_ms;
    kw_err_t e = kw_zk_new(&o, &zk, err, sizeof(err));
    if (e != KW_OK)
        fail_msg("kw_zk_new(%s): %s: %s", connect, kw_err_name(e), err);
    e = kw_zk_register(zk, err, sizeof(err));
    if (e != KW_OK)
        fail_msg("kw_zk_register: %s: %s", kw_err_name(e), err);
    return zk;
}

static void expect_ok(kw_err_t e, const char *what, const char *err)
{
    if (e != KW_OK)
        fail_msg("%s: %s: %s", what, kw_err_name(e), err);
}

static zhandle_t *raw_connect_as(const char *connect, const clientid_t *cid)
{
    zhandle_t *zh = zookeeper_init(connect, NULL, SESSION_MS, cid, NULL, 0);
    assert_non_null(zh);
    int64_t deadline = now_ms() + 10000;
    while (zoo_state(zh) != ZOO_CONNECTED_STATE && now_ms() < deadline)
        usleep(10000);
    assert_int_equal(zoo_state(zh), ZOO_CONNECTED_STATE);
    return zh;
}

static zhandle_t *raw_connect(void)
{
    return raw_connect_as(g.zk.connect, NULL);
}

/* Node data as a string; returns the ZooKeeper rc. */
static int raw_get(zhandle_t *zh, const char *path, char *buf, int cap, struct Stat *st)
{
    int len = cap - 1;
    struct Stat s;
    int rc = zoo_get(zh, path, 0, buf, &len, st ? st : &s);
    buf[rc == ZOK && len > 0 ? len : 0] = '\0';
    return rc;
}

static void raw_expect(zhandle_t *zh, const char *path, const char *want)
{
    char buf[256];
    int rc = raw_get(zh, path, buf, sizeof(buf), NULL);
    if (want == NULL) {
        if (rc != ZNONODE)
            fail_msg("%s: expected no node, got rc %d data '%s'", path, rc, buf);
        return;
    }
    if (rc != ZOK)
        fail_msg("%s: %s", path, zerror(rc));
    if (strcmp(buf, want) != 0)
        fail_msg("%s holds '%s', expected '%s'", path, buf, want);
}

static kw_err_t commit1(kw_zk_t *zk, const char *topic, int32_t p, int64_t next,
                        unsigned flags, char *err, size_t errlen)
{
    kw_zk_offset_t o = { topic, p, next };
    return kw_zk_commit(zk, &o, 1, flags, err, errlen);
}

/* Expire zk's session: a second client joins it and closes it. */
static void expire_session(kw_zk_t *zk)
{
    clientid_t cid;
    int64_t id;
    kw_zk_session_credentials(zk, &id, cid.passwd);
    assert_true(id != 0);
    cid.client_id = id;
    zhandle_t *zh = raw_connect_as(g.zk.connect, &cid);
    zookeeper_close(zh);
}

/* ------------------------------------------------------------------ */
/* tests                                                                */
/* ------------------------------------------------------------------ */

/* Offsets round trip; the raw layout of DESIGN.md; commits never go back
 * unless forced; disown. */
static void test_roundtrip_layout(void **state)
{
    (void)state;
    SKIP_IF_NO_ZK();
    char err[512] = "";
    int64_t next = -7;
    kw_zk_t *zk = open_zk(g.zk.connect, "g-rt", "inst-a", NULL, 10000);
    zhandle_t *raw = raw_connect();

    expect_ok(kw_zk_own(zk, "orders", 0, 1000, err, sizeof(err)), "own", err);
    expect_ok(kw_zk_own(zk, "orders", 1, 1000, err, sizeof(err)), "own", err);
    expect_ok(kw_zk_own(zk, "orders", 0, 1000, err, sizeof(err)), "own twice", err);
    assert_int_equal(kw_zk_get_offset(zk, "orders", 0, &next, err, sizeof(err)), KW_ENOTFOUND);
    assert_int_equal(next, -7);

    kw_zk_offset_t offs[2] = { { "orders", 0, 42 }, { "orders", 1, 9000000000LL } };
    expect_ok(kw_zk_commit(zk, offs, 2, 0, err, sizeof(err)), "commit", err);
    expect_ok(kw_zk_get_offset(zk, "orders", 0, &next, err, sizeof(err)), "get", err);
    assert_int_equal(next, 42);
    expect_ok(kw_zk_get_offset(zk, "orders", 1, &next, err, sizeof(err)), "get", err);
    assert_int_equal(next, 9000000000LL);

    /* the layout, raw */
    char buf[256];
    struct Stat st;
    raw_expect(raw, "/consumers/g-rt/offsets/orders/0", "42");
    raw_expect(raw, "/consumers/g-rt/offsets/orders/1", "9000000000");
    raw_expect(raw, "/consumers/g-rt/owners/orders/0", "inst-a");
    assert_int_equal(raw_get(raw, "/consumers/g-rt/owners/orders/1", buf, sizeof(buf), &st), ZOK);
    kw_zk_status_t s;
    kw_zk_status(zk, &s);
    assert_int_equal(s.state, KW_ZK_ACTIVE);
    assert_true(st.ephemeralOwner == s.session_id);
    assert_int_equal(raw_get(raw, "/consumers/g-rt/ids/inst-a", buf, sizeof(buf), &st), ZOK);
    assert_true(st.ephemeralOwner == s.session_id);
    assert_non_null(strchr(buf, ':'));                   /* host:pid */
    assert_int_equal(raw_get(raw, "/consumers/g-rt/offsets/orders/0", buf, sizeof(buf), &st), ZOK);
    assert_true(st.ephemeralOwner == 0);                 /* persistent */

    /* never backwards, unless forced; equal is a no-op */
    expect_ok(commit1(zk, "orders", 0, 10, 0, err, sizeof(err)), "stale commit", err);
    raw_expect(raw, "/consumers/g-rt/offsets/orders/0", "42");
    expect_ok(commit1(zk, "orders", 0, 42, 0, err, sizeof(err)), "same commit", err);
    expect_ok(commit1(zk, "orders", 0, 10, KW_ZK_COMMIT_FORCE, err, sizeof(err)), "force", err);
    raw_expect(raw, "/consumers/g-rt/offsets/orders/0", "10");
    expect_ok(commit1(zk, "orders", 0, 11, 0, err, sizeof(err)), "forward", err);
    raw_expect(raw, "/consumers/g-rt/offsets/orders/0", "11");
    kw_zk_status(zk, &s);
    assert_true(s.stale_skipped >= 1);

    /* a value written behind our back is noticed through its version */
    assert_int_equal(zoo_set(raw, "/consumers/g-rt/offsets/orders/0", "500", 3, -1), ZOK);
    expect_ok(commit1(zk, "orders", 0, 20, 0, err, sizeof(err)), "commit after foreign set", err);
    raw_expect(raw, "/consumers/g-rt/offsets/orders/0", "500");   /* not moved back */
    expect_ok(commit1(zk, "orders", 0, 501, 0, err, sizeof(err)), "commit", err);
    raw_expect(raw, "/consumers/g-rt/offsets/orders/0", "501");

    /* rejected inputs */
    assert_int_equal(commit1(zk, "orders", 0, -1, 0, err, sizeof(err)), KW_EINVAL);
    assert_int_equal(commit1(zk, "a/b", 0, 1, 0, err, sizeof(err)), KW_EINVAL);
    kw_zk_offset_t dup[2] = { { "orders", 0, 600 }, { "orders", 0, 601 } };
    assert_int_equal(kw_zk_commit(zk, dup, 2, 0, err, sizeof(err)), KW_EINVAL);

    kw_zk_partition_t owned[4];
    assert_int_equal(kw_zk_owned(zk, owned, 4), 2);
    assert_string_equal(owned[0].topic, "orders");
    assert_int_equal(owned[0].partition, 0);
    assert_int_equal(owned[1].partition, 1);

    expect_ok(kw_zk_disown(zk, "orders", 1, err, sizeof(err)), "disown", err);
    raw_expect(raw, "/consumers/g-rt/owners/orders/1", NULL);
    assert_int_equal(kw_zk_owned(zk, owned, 4), 1);
    assert_int_equal(commit1(zk, "orders", 1, 9000000001LL, 0, err, sizeof(err)), KW_EFENCED);
    raw_expect(raw, "/consumers/g-rt/offsets/orders/1", "9000000000");
    expect_ok(kw_zk_disown(zk, "orders", 1, err, sizeof(err)), "disown again", err);

    /* a garbage offset node is reported, not guessed at */
    assert_int_equal(zoo_create(raw, "/consumers/g-rt/offsets/orders/7", "x1", 2,
                                &ZOO_OPEN_ACL_UNSAFE, ZOO_PERSISTENT, NULL, 0), ZOK);
    assert_int_equal(kw_zk_get_offset(zk, "orders", 7, &next, err, sizeof(err)), KW_ECORRUPT);

    /* destroy ends the session: the ephemeral nodes go at once */
    kw_zk_destroy(zk);
    raw_expect(raw, "/consumers/g-rt/owners/orders/0", NULL);
    raw_expect(raw, "/consumers/g-rt/ids/inst-a", NULL);
    raw_expect(raw, "/consumers/g-rt/offsets/orders/0", "501");
    zookeeper_close(raw);
    kw_zk_destroy(NULL);
}

/* Invariant 4 locally: a commit naming a partition we do not own is refused
 * before ZooKeeper, and nothing of it is written. */
static void test_commit_not_owned(void **state)
{
    (void)state;
    SKIP_IF_NO_ZK();
    char err[512] = "";
    kw_zk_t *zk = open_zk(g.zk.connect, "g-no", "inst-a", NULL, 10000);
    zhandle_t *raw = raw_connect();
    expect_ok(kw_zk_own(zk, "t", 0, 1000, err, sizeof(err)), "own", err);

    assert_int_equal(commit1(zk, "t", 5, 3, 0, err, sizeof(err)), KW_EFENCED);
    assert_non_null(strstr(err, "t/5"));
    kw_zk_offset_t offs[2] = { { "t", 0, 3 }, { "t", 5, 3 } };
    assert_int_equal(kw_zk_commit(zk, offs, 2, 0, err, sizeof(err)), KW_EFENCED);
    raw_expect(raw, "/consumers/g-no/offsets/t/0", NULL);
    raw_expect(raw, "/consumers/g-no/offsets/t/5", NULL);
    kw_zk_destroy(zk);
    zookeeper_close(raw);
}

/* A topic's parent nodes are created once per handle; when an operator
 * removed them meanwhile, taking a partition creates them again. */
static void test_parents_removed(void **state)
{
    (void)state;
    SKIP_IF_NO_ZK();
    char err[512] = "";
    kw_zk_t *zk = open_zk(g.zk.connect, "g-par", "inst-a", NULL, 10000);
    zhandle_t *raw = raw_connect();
    expect_ok(kw_zk_own(zk, "t", 0, 1000, err, sizeof(err)), "own", err);
    expect_ok(kw_zk_disown(zk, "t", 0, err, sizeof(err)), "disown", err);
    assert_int_equal(zoo_delete(raw, "/consumers/g-par/owners/t", -1), ZOK);
    assert_int_equal(zoo_delete(raw, "/consumers/g-par/offsets/t", -1), ZOK);
    expect_ok(kw_zk_own(zk, "t", 1, 5000, err, sizeof(err)), "own after the parents went",
              err);
    raw_expect(raw, "/consumers/g-par/owners/t/1", "inst-a");
    assert_int_equal(commit1(zk, "t", 1, 7, 0, err, sizeof(err)), KW_OK);
    raw_expect(raw, "/consumers/g-par/offsets/t/1", "7");
    kw_zk_destroy(zk);
    zookeeper_close(raw);
}

/* A chroot is created when missing and holds the whole layout. */
static void test_chroot(void **state)
{
    (void)state;
    SKIP_IF_NO_ZK();
    char err[512] = "", conn[300];
    test_path(conn, sizeof(conn), "%s/kwal/test-chroot", g.zk.connect);
    kw_zk_t *zk = open_zk(conn, "g-ch", "inst-a", NULL, 10000);
    zhandle_t *raw = raw_connect();
    expect_ok(kw_zk_own(zk, "t", 3, 1000, err, sizeof(err)), "own", err);
    expect_ok(commit1(zk, "t", 3, 77, 0, err, sizeof(err)), "commit", err);
    raw_expect(raw, "/kwal/test-chroot/consumers/g-ch/offsets/t/3", "77");
    raw_expect(raw, "/kwal/test-chroot/consumers/g-ch/owners/t/3", "inst-a");
    raw_expect(raw, "/consumers/g-ch/offsets/t/3", NULL);
    kw_zk_destroy(zk);
    zookeeper_close(raw);
}

/* With a digest, every node is readable only by that identity. */
static void test_digest_acl(void **state)
{
    (void)state;
    SKIP_IF_NO_ZK();
    char err[512] = "", conn[300], buf[64];
    int64_t next = 0;
    test_path(conn, sizeof(conn), "%s/kwal-acl", g.zk.connect);
    kw_zk_t *zk = open_zk(conn, "g-acl", "inst-a", "kwal:secret", 10000);
    expect_ok(kw_zk_own(zk, "t", 0, 1000, err, sizeof(err)), "own", err);
    expect_ok(commit1(zk, "t", 0, 5, 0, err, sizeof(err)), "commit", err);
    expect_ok(kw_zk_get_offset(zk, "t", 0, &next, err, sizeof(err)), "get", err);
    assert_int_equal(next, 5);
    zhandle_t *raw = raw_connect();
    assert_int_equal(raw_get(raw, "/kwal-acl/consumers/g-acl/offsets/t/0", buf, sizeof(buf), NULL),
                     ZNOAUTH);
    zookeeper_close(raw);
    kw_zk_destroy(zk);
}

typedef struct own_job {
    kw_zk_t *zk;
    int      timeout_ms;
    kw_err_t rc;
    int64_t  took_ms;
    char     err[512];
} own_job_t;

static void *own_thread(void *arg)
{
    own_job_t *j = arg;
    int64_t t0 = now_ms();
    j->rc = kw_zk_own(j->zk, "t", 0, j->timeout_ms, j->err, sizeof(j->err));
    j->took_ms = now_ms() - t0;
    return NULL;
}

/* Fencing between instances: B cannot own what A holds (it waits, then
 * KW_EBUSY naming A); it gets it once A disowns; A can no longer commit. */
static void test_fencing_busy(void **state)
{
    (void)state;
    SKIP_IF_NO_ZK();
    char err[512] = "";
    kw_zk_t *a = open_zk(g.zk.connect, "g-fb", "inst-a", NULL, 10000);
    kw_zk_t *b = open_zk(g.zk.connect, "g-fb", "inst-b", NULL, 10000);
    zhandle_t *raw = raw_connect();
    expect_ok(kw_zk_own(a, "t", 0, 1000, err, sizeof(err)), "A own", err);
    expect_ok(commit1(a, "t", 0, 10, 0, err, sizeof(err)), "A commit", err);

    int64_t t0 = now_ms();
    assert_int_equal(kw_zk_own(b, "t", 0, 600, err, sizeof(err)), KW_EBUSY);
    int64_t took = now_ms() - t0;
    assert_true(took >= 550 && took < 3000);
    assert_non_null(strstr(err, "inst-a"));
    assert_int_equal(commit1(b, "t", 0, 11, 0, err, sizeof(err)), KW_EFENCED);

    /* B waits; A lets go; B gets it promptly (watch) */
    own_job_t j = { .zk = b, .timeout_ms = 8000 };
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, own_thread, &j), 0);
    usleep(300 * 1000);
    expect_ok(kw_zk_disown(a, "t", 0, err, sizeof(err)), "A disown", err);
    pthread_join(th, NULL);
    expect_ok(j.rc, "B own after release", j.err);
    assert_true(j.took_ms < 3000);
    raw_expect(raw, "/consumers/g-fb/owners/t/0", "inst-b");

    assert_int_equal(commit1(a, "t", 0, 99, 0, err, sizeof(err)), KW_EFENCED);
    expect_ok(commit1(b, "t", 0, 12, 0, err, sizeof(err)), "B commit", err);
    raw_expect(raw, "/consumers/g-fb/offsets/t/0", "12");

    /* Invariant 4 in ZooKeeper: someone deletes B's owner node and takes it;
     * B's watch marks the partition lost; its commit is refused. */
    assert_int_equal(zoo_delete(raw, "/consumers/g-fb/owners/t/0", -1), ZOK);
    assert_int_equal(zoo_create(raw, "/consumers/g-fb/owners/t/0", "intruder", 8,
                                &ZOO_OPEN_ACL_UNSAFE, ZOO_EPHEMERAL, NULL, 0), ZOK);
    kw_zk_partition_t lost[4];
    size_t nl = 0;
    for (int64_t dl = now_ms() + 3000; nl == 0 && now_ms() < dl; usleep(20000))
        nl = kw_zk_lost(b, lost, 4);
    assert_int_equal(nl, 1);
    assert_string_equal(lost[0].topic, "t");
    assert_int_equal(lost[0].partition, 0);
    assert_int_equal(commit1(b, "t", 0, 13, 0, err, sizeof(err)), KW_EFENCED);
    raw_expect(raw, "/consumers/g-fb/offsets/t/0", "12");

    kw_zk_destroy(a);
    kw_zk_destroy(b);
    zookeeper_close(raw);
}

/* Session expiry: commits fail (retryably) until the new session has
 * re-created the ids and owner nodes; a partition taken meanwhile by someone
 * else is reported lost and stays fenced. */
static void test_session_expiry(void **state)
{
    (void)state;
    SKIP_IF_NO_ZK();
    char err[512] = "";
    kw_zk_t *a = open_zk(g.zk.connect, "g-ex", "inst-a", NULL, 10000);
    zhandle_t *raw = raw_connect();
    expect_ok(kw_zk_own(a, "t", 0, 1000, err, sizeof(err)), "own 0", err);
    expect_ok(kw_zk_own(a, "t", 1, 1000, err, sizeof(err)), "own 1", err);
    kw_zk_offset_t offs[2] = { { "t", 0, 100 }, { "t", 1, 200 } };
    expect_ok(kw_zk_commit(a, offs, 2, 0, err, sizeof(err)), "commit", err);
    kw_zk_status_t s0, s1;
    kw_zk_status(a, &s0);
    assert_int_equal(s0.epoch, 0);

    expire_session(a);
    /* the server has ended A's session: its nodes are gone; another
     * instance takes partition 1 before A can come back */
    assert_int_equal(zoo_create(raw, "/consumers/g-ex/owners/t/1", "inst-x", 6,
                                &ZOO_OPEN_ACL_UNSAFE, ZOO_EPHEMERAL, NULL, 0), ZOK);
    kw_zk_offset_t o2[1] = { { "t", 0, 150 } };
    kw_err_t e = kw_zk_commit(a, o2, 1, 0, err, sizeof(err));
    assert_int_equal(e, KW_EAGAIN);
    raw_expect(raw, "/consumers/g-ex/offsets/t/0", "100");

    /* A may learn of the expiry a little later: wait for the new epoch */
    for (int64_t dl = now_ms() + 15000; now_ms() < dl; usleep(20000)) {
        kw_zk_status(a, &s1);
        if (s1.epoch >= 1 && s1.state == KW_ZK_ACTIVE)
            break;
    }
    assert_int_equal(kw_zk_wait_active(a, 15000), KW_OK);
    kw_zk_status(a, &s1);
    assert_int_equal(s1.state, KW_ZK_ACTIVE);
    assert_int_equal(s1.epoch, 1);
    assert_int_equal(s1.expiries, 1);
    assert_true(s1.session_id != s0.session_id);
    assert_int_equal(s1.lost_total, 1);

    kw_zk_partition_t lost[4], owned[4];
    assert_int_equal(kw_zk_lost(a, lost, 4), 1);
    assert_int_equal(lost[0].partition, 1);
    assert_int_equal(kw_zk_lost(a, lost, 4), 0);
    assert_int_equal(kw_zk_owned(a, owned, 4), 1);
    assert_int_equal(owned[0].partition, 0);

    /* ownership of 0 re-established under the new session, ids too */
    struct Stat st;
    char buf[64];
    assert_int_equal(raw_get(raw, "/consumers/g-ex/owners/t/0", buf, sizeof(buf), &st), ZOK);
    assert_string_equal(buf, "inst-a");
    assert_true(st.ephemeralOwner == s1.session_id);
    assert_int_equal(raw_get(raw, "/consumers/g-ex/ids/inst-a", buf, sizeof(buf), &st), ZOK);
    assert_true(st.ephemeralOwner == s1.session_id);

    expect_ok(kw_zk_commit(a, o2, 1, 0, err, sizeof(err)), "commit after re-establishment", err);
    raw_expect(raw, "/consumers/g-ex/offsets/t/0", "150");
    assert_int_equal(commit1(a, "t", 1, 250, 0, err, sizeof(err)), KW_EFENCED);
    raw_expect(raw, "/consumers/g-ex/offsets/t/1", "200");
    kw_zk_destroy(a);
    zookeeper_close(raw);
}

typedef struct commit_job {
    kw_zk_t        *zk;
    kw_zk_offset_t  offs[2];
    kw_err_t        rc;
    char            err[512];
} commit_job_t;

static void *commit_thread(void *arg)
{
    commit_job_t *j = arg;
    j->rc = kw_zk_commit(j->zk, j->offs, 2, 0, j->err, sizeof(j->err));
    return NULL;
}

/* Connection loss: ZooKeeper stops for ~2 s. A commit issued meanwhile with
 * a long deadline succeeds after the restart; one with a short deadline
 * fails cleanly (KW_EAGAIN); never is a multi half applied. */
static void test_connection_loss(void **state)
{
    (void)state;
    SKIP_IF_NO_ZK();
    char err[512] = "";
    kw_zk_t *a = open_zk(g.zk.connect, "g-cl", "inst-a", NULL, 30000);
    kw_zk_t *b = open_zk(g.zk.connect, "g-cl", "inst-b", NULL, 1500);
    expect_ok(kw_zk_own(a, "t", 0, 1000, err, sizeof(err)), "own", err);
    expect_ok(kw_zk_own(a, "t", 1, 1000, err, sizeof(err)), "own", err);
    expect_ok(kw_zk_own(b, "u", 0, 1000, err, sizeof(err)), "own", err);
    expect_ok(kw_zk_own(b, "u", 1, 1000, err, sizeof(err)), "own", err);
    kw_zk_offset_t a1[2] = { { "t", 0, 5 }, { "t", 1, 6 } };
    kw_zk_offset_t b1[2] = { { "u", 0, 5 }, { "u", 1, 6 } };
    expect_ok(kw_zk_commit(a, a1, 2, 0, err, sizeof(err)), "commit", err);
    expect_ok(kw_zk_commit(b, b1, 2, 0, err, sizeof(err)), "commit", err);

    assert_int_equal(test_zk_server_cmd(&g.zk, "stop"), 0);
    commit_job_t ja = { .zk = a, .offs = { { "t", 0, 105 }, { "t", 1, 106 } } };
    commit_job_t jb = { .zk = b, .offs = { { "u", 0, 105 }, { "u", 1, 106 } } };
    pthread_t ta, tb;
    assert_int_equal(pthread_create(&ta, NULL, commit_thread, &ja), 0);
    assert_int_equal(pthread_create(&tb, NULL, commit_thread, &jb), 0);
    usleep(2000 * 1000);
    kw_zk_status_t s;
    kw_zk_status(a, &s);
    assert_int_equal(s.state, KW_ZK_DISCONNECTED);
    pthread_join(tb, NULL);                              /* 1.5 s deadline: gave up */
    assert_int_equal(jb.rc, KW_EAGAIN);
    assert_int_equal(test_zk_server_cmd(&g.zk, "start --timeout 60"), 0);
    pthread_join(ta, NULL);
    expect_ok(ja.rc, "commit across the outage", ja.err);

    zhandle_t *raw = raw_connect();
    raw_expect(raw, "/consumers/g-cl/offsets/t/0", "105");
    raw_expect(raw, "/consumers/g-cl/offsets/t/1", "106");
    /* B's commit failed: both partitions old (it never reached the server) */
    raw_expect(raw, "/consumers/g-cl/offsets/u/0", "5");
    raw_expect(raw, "/consumers/g-cl/offsets/u/1", "6");
    /* ... and sending it again is safe */
    expect_ok(kw_zk_wait_active(b, 10000), "B active", "");
    kw_zk_offset_t b2[2] = { { "u", 0, 105 }, { "u", 1, 106 } };
    kw_err_t e = KW_EAGAIN;
    for (int i = 0; i < 10 && e == KW_EAGAIN; i++)
        e = kw_zk_commit(b, b2, 2, 0, err, sizeof(err));
    expect_ok(e, "B commit again", err);
    raw_expect(raw, "/consumers/g-cl/offsets/u/0", "105");
    raw_expect(raw, "/consumers/g-cl/offsets/u/1", "106");
    kw_zk_status(a, &s);
    assert_int_equal(s.state, KW_ZK_ACTIVE);
    assert_int_equal(s.expiries, 0);                     /* the session survived */
    zookeeper_close(raw);
    kw_zk_destroy(a);
    kw_zk_destroy(b);
}

/* ------------------------------------------------------------------ */
/* resuming (zk.h, "Resuming")                                         */
/* ------------------------------------------------------------------ */

static kw_zk_t *open_resumable(const char *group, const char *instance, const char *file)
{
    kw_zk_options_t o;
    kw_zk_t *zk = NULL;
    char err[512] = "";

    kw_zk_options_init(&o);
    o.connect = g.zk.connect;
    o.group = group;
    o.instance = instance;
    o.session_timeout_ms = SESSION_MS;
    o.connect_timeout_ms = 10000;
    o.op_timeout_ms = 10000;
    o.session_file = file;
    expect_ok(kw_zk_new(&o, &zk, err, sizeof(err)), "kw_zk_new", err);
    expect_ok(kw_zk_register(zk, err, sizeof(err)), "kw_zk_register", err);
    return zk;
}

/* A crashed process: a child opens a resumable session, owns partitions 0
 * and 1 of t, commits, reports its session id on a pipe, and is SIGKILLed
 * with its session still open. Returns the session id. */
static int64_t crashed_owner(const char *group, const char *instance, const char *file)
{
    int fds[2];
    int64_t id = 0;
    pid_t pid;
    int status;

    assert_int_equal(pipe(fds), 0);
    fflush(NULL);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        kw_zk_options_t o;
        kw_zk_t *zk = NULL;
        char err[512], pw[16];
        kw_zk_offset_t offs[2] = { { "t", 0, 40 }, { "t", 1, 50 } };

        close(fds[0]);
        kw_zk_options_init(&o);
        o.connect = g.zk.connect;
        o.group = group;
        o.instance = instance;
        o.session_timeout_ms = SESSION_MS;
        o.session_file = file;
        if (kw_zk_new(&o, &zk, err, sizeof(err)) != KW_OK ||
            kw_zk_register(zk, err, sizeof(err)) != KW_OK ||
            kw_zk_own(zk, "t", 0, 3000, err, sizeof(err)) != KW_OK ||
            kw_zk_own(zk, "t", 1, 3000, err, sizeof(err)) != KW_OK ||
            kw_zk_commit(zk, offs, 2, 0, err, sizeof(err)) != KW_OK)
            _exit(3);
        kw_zk_session_credentials(zk, &id, pw);
        if (write(fds[1], &id, sizeof(id)) != (ssize_t)sizeof(id))
            _exit(4);
        for (;;)
            pause();                    /* the parent kills it, session open */
    }
    close(fds[1]);
    ssize_t n = read(fds[0], &id, sizeof(id));
    close(fds[0]);
    kill(pid, SIGKILL);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (n != (ssize_t)sizeof(id))
        fail_msg("the crashing child did not get its partitions (exit %d)",
                 WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    return id;
}

/* The restart resumes the crashed process's session: the same session id,
 * its owner nodes inherited; what it takes back it has at once, the rest is
 * released for others; a clean stop removes the session file. */
static void test_resume(void **state)
{
    (void)state;
    SKIP_IF_NO_ZK();
    char *dir = test_tmpdir_new("zk-resume");
    char file[600], err[512] = "", buf[64];
    struct Stat st;
    kw_zk_status_t zs;
    zhandle_t *raw = raw_connect();

    snprintf(file, sizeof(file), "%s/instance.zk-session", dir);
    int64_t id = crashed_owner("g-rs", "inst-r", file);
    assert_int_equal(access(file, F_OK), 0);

    int64_t t0 = now_ms();
    kw_zk_t *zk = open_resumable("g-rs", "inst-r", file);
    kw_zk_status(zk, &zs);
    assert_int_equal(zs.resumed, 1);
    assert_true(zs.session_id == id);
    assert_int_equal(zs.inherited, 2);
    /* taken back without waiting for anything to expire */
    expect_ok(kw_zk_own(zk, "t", 0, 0, err, sizeof(err)), "own inherited 0", err);
    assert_true(now_ms() - t0 < SESSION_MS);
    int64_t next = -1;
    expect_ok(kw_zk_get_offset(zk, "t", 0, &next, err, sizeof(err)), "offset", err);
    assert_int_equal(next, 40);
    /* partition 1 is not wanted any more: released for others */
    assert_int_equal(kw_zk_release_inherited(zk), 1);
    assert_int_equal(kw_zk_release_inherited(zk), 0);
    kw_zk_status(zk, &zs);
    assert_int_equal(zs.inherited_released, 1);
    raw_expect(raw, "/consumers/g-rs/owners/t/1", NULL);
    assert_int_equal(raw_get(raw, "/consumers/g-rs/owners/t/0", buf, sizeof(buf), &st), ZOK);
    assert_string_equal(buf, "inst-r");
    assert_true(st.ephemeralOwner == id);
    /* the ids node says who runs the instance now */
    assert_int_equal(raw_get(raw, "/consumers/g-rs/ids/inst-r", buf, sizeof(buf), &st), ZOK);
    snprintf(err, sizeof(err), ":%ld", (long)getpid());
    assert_non_null(strstr(buf, err));
    /* still fenced like any owner: only what it owns is committed */
    expect_ok(commit1(zk, "t", 0, 41, 0, err, sizeof(err)), "commit 0", err);
    assert_int_equal(commit1(zk, "t", 1, 51, 0, err, sizeof(err)), KW_EFENCED);
    raw_expect(raw, "/consumers/g-rs/offsets/t/1", "50");

    kw_zk_destroy(zk);                  /* a clean stop: nothing left to resume */
    assert_int_equal(access(file, F_OK), -1);
    raw_expect(raw, "/consumers/g-rs/owners/t/0", NULL);
    zookeeper_close(raw);
    test_rmtree(dir);
    free(dir);
}

/* The saved session is gone (expired, or the file is garbage): a new
 * session is opened as without the file, the dead one's nodes are not ours,
 * and the file names the new session afterwards. */
static void test_resume_fallback(void **state)
{
    (void)state;
    SKIP_IF_NO_ZK();
    char *dir = test_tmpdir_new("zk-resume-fb");
    char file[600], err[512] = "";
    kw_zk_status_t zs;
    clientid_t cid;
    FILE *f;

    snprintf(file, sizeof(file), "%s/instance.zk-session", dir);
    int64_t id = crashed_owner("g-rf", "inst-f", file);
    /* the server ends the dead session (as if the restart came too late) */
    cid.client_id = id;
    {
        char line[512], hosts[256], pw[33];
        long long sid;

        f = fopen(file, "r");
        assert_non_null(f);
        assert_non_null(fgets(line, sizeof(line), f));
        fclose(f);
        assert_int_equal(sscanf(line, "kwal-zk-session 1 %255s %llx %32s", hosts, &sid, pw), 3);
        assert_true((int64_t)sid == id);
        for (int i = 0; i < 16; i++) {
            unsigned v;

            assert_int_equal(sscanf(pw + 2 * i, "%2x", &v), 1);
            cid.passwd[i] = (char)v;
        }
    }
    zookeeper_close(raw_connect_as(g.zk.connect, &cid));

    kw_zk_t *zk = open_resumable("g-rf", "inst-f", file);
    kw_zk_status(zk, &zs);
    assert_int_equal(zs.resumed, 0);
    assert_int_equal(zs.inherited, 0);
    assert_true(zs.session_id != id);
    expect_ok(kw_zk_own(zk, "t", 1, 3000, err, sizeof(err)), "own after expiry", err);
    kw_zk_destroy(zk);

    /* garbage in the file: refused as a session, never fatal */
    f = fopen(file, "w");
    assert_non_null(f);
    fputs("kwal-zk-session 1 nonsense\n", f);
    fclose(f);
    zk = open_resumable("g-rf", "inst-f", file);
    kw_zk_status(zk, &zs);
    assert_int_equal(zs.resumed, 0);
    /* the new session is saved for the next restart */
    f = fopen(file, "r");
    assert_non_null(f);
    {
        char line[512];

        assert_non_null(fgets(line, sizeof(line), f));
        snprintf(err, sizeof(err), "%llx", (unsigned long long)zs.session_id);
        assert_non_null(strstr(line, err));
    }
    fclose(f);
    kw_zk_destroy(zk);
    test_rmtree(dir);
    free(dir);
}

/* Two live sessions cannot register one instance name: the second is
 * refused with KW_EBUSY naming the holder (invariant 4's guard against a
 * second process with the same instance.id). */
static void test_register_conflict(void **state)
{
    (void)state;
    SKIP_IF_NO_ZK();
    char err[512] = "";
    kw_zk_options_t o;
    kw_zk_t *b = NULL;
    kw_zk_t *a = open_zk(g.zk.connect, "g-rc", "inst-same", NULL, 10000);

    kw_zk_options_init(&o);
    o.connect = g.zk.connect;
    o.group = "g-rc";
    o.instance = "inst-same";
    o.session_timeout_ms = SESSION_MS;
    expect_ok(kw_zk_new(&o, &b, err, sizeof(err)), "kw_zk_new", err);
    int64_t t0 = now_ms();
    assert_int_equal(kw_zk_register(b, err, sizeof(err)), KW_EBUSY);
    assert_true(now_ms() - t0 < SESSION_MS + 6000);
    assert_non_null(strstr(err, "inst-same"));
    assert_int_equal(kw_zk_own(b, "t", 0, 0, err, sizeof(err)), KW_EINVAL);
    expect_ok(kw_zk_own(a, "t", 0, 0, err, sizeof(err)), "the first keeps going", err);
    kw_zk_destroy(b);
    kw_zk_destroy(a);
}

/* Nothing listens: a clear error naming the connect string, in bounded time. */
static void test_unreachable(void **state)
{
    (void)state;
    SKIP_IF_NO_ZK();
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET };
    socklen_t sl = sizeof(sa);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    close(fd);                                           /* a port nobody listens on */
    char conn[64], err[512] = "";
    test_path(conn, sizeof(conn), "127.0.0.1:%d", ntohs(sa.sin_port));

    kw_zk_options_t o;
    kw_zk_t *zk = (kw_zk_t *)&o;
    kw_zk_options_init(&o);
    o.connect = conn;
    o.group = "g";
    o.connect_timeout_ms = 1000;
    int64_t t0 = now_ms();
    assert_int_equal(kw_zk_new(&o, &zk, err, sizeof(err)), KW_ETIMEDOUT);
    assert_true(now_ms() - t0 < 5000);
    assert_null(zk);
    assert_non_null(strstr(err, conn));

    o.connect = "";
    assert_int_equal(kw_zk_new(&o, &zk, err, sizeof(err)), KW_ECONFIG);
    o.connect = conn;
    o.group = "a/b";
    assert_int_equal(kw_zk_new(&o, &zk, err, sizeof(err)), KW_ECONFIG);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_layout),
        cmocka_unit_test(test_parents_removed),
        cmocka_unit_test(test_commit_not_owned),
        cmocka_unit_test(test_chroot),
        cmocka_unit_test(test_digest_acl),
        cmocka_unit_test(test_fencing_busy),
        cmocka_unit_test(test_session_expiry),
        cmocka_unit_test(test_connection_loss),
        cmocka_unit_test(test_unreachable),
        cmocka_unit_test(test_resume),
        cmocka_unit_test(test_resume_fallback),
        cmocka_unit_test(test_register_conflict),
    };
    if (getenv("KWAL_TEST_FILTER") != NULL)              /* one test, when debugging */
        cmocka_set_test_filter(getenv("KWAL_TEST_FILTER"));
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
