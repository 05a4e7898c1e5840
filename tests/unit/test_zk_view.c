/*
 * test_zk_view.c -- unit tests of the read-only view of a group (zk/zk.h,
 * "Reading a group") against a REAL ZooKeeper server.
 *
 * How: the group setup starts Debian's ZooKeeper with
 * $KWAL_BIN_DIR/kwal-zk-local in a temporary directory, as test_zk.c does
 * (without KWAL_BIN_DIR every test is skipped). The group's state is made
 * with the store itself (kw_zk_new, register, own, commit) and, for what
 * kwal never writes (a garbage offset, a foreign child), with the raw
 * ZooKeeper client; the view must report exactly that state and create
 * nothing, which is checked raw. Every test uses its own group or chroot.
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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <zookeeper/zookeeper.h>

#include "test_util.h"
#include "test_zk_server.h"
#include "zk.h"

static struct {
    int              skip;
    test_zk_server_t zk;
    FILE            *client_log;
} g;

static int group_setup(void **state)
{
    (void)state;
    int rc = test_zk_server_start(&g.zk, "zkview", "--tick-ms 500");
    if (rc <= 0) {
        g.skip = rc == 0;
        return rc;
    }
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

static int64_t wall_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static void expect_ok(kw_err_t e, const char *what, const char *err)
{
    if (e != KW_OK)
        fail_msg("%s: %s: %s", what, kw_err_name(e), err);
}

/* A registered instance of the store (what a running kwal holds). */
static kw_zk_t *open_member(const char *connect, const char *group, const char *instance,
                            const char *digest)
{
    kw_zk_options_t o;
    kw_zk_t *zk = NULL;
    char err[512] = "";

    kw_zk_options_init(&o);
    o.connect = connect;
    o.group = group;
    o.instance = instance;
    o.digest = digest;
    o.session_timeout_ms = 4000;
    o.op_timeout_ms = 10000;
    expect_ok(kw_zk_new(&o, &zk, err, sizeof(err)), "kw_zk_new", err);
    expect_ok(kw_zk_register(zk, err, sizeof(err)), "kw_zk_register", err);
    return zk;
}

static void own_commit(kw_zk_t *zk, const char *topic, int32_t p, int64_t next)
{
    char err[512] = "";
    expect_ok(kw_zk_own(zk, topic, p, 2000, err, sizeof(err)), "own", err);
    if (next >= 0) {
        kw_zk_offset_t o = { topic, p, next };
        expect_ok(kw_zk_commit(zk, &o, 1, 0, err, sizeof(err)), "commit", err);
    }
}

static kw_zk_view_t *open_view(const char *connect, const char *group, const char *digest)
{
    kw_zk_options_t o;
    kw_zk_view_t *v = NULL;
    char err[512] = "";

    kw_zk_options_init(&o);
    o.connect = connect;
    o.group = group;
    o.digest = digest;
    o.connect_timeout_ms = 10000;
    o.op_timeout_ms = 10000;
    expect_ok(kw_zk_view_open(&o, &v, err, sizeof(err)), "kw_zk_view_open", err);
    return v;
}

static zhandle_t *raw_connect(void)
{
    zhandle_t *zh = zookeeper_init(g.zk.connect, NULL, 4000, NULL, NULL, 0);
    assert_non_null(zh);
    for (int i = 0; i < 1000 && zoo_state(zh) != ZOO_CONNECTED_STATE; i++)
        usleep(10000);
    assert_int_equal(zoo_state(zh), ZOO_CONNECTED_STATE);
    return zh;
}

static void raw_absent(zhandle_t *zh, const char *path)
{
    struct Stat st;
    int rc = zoo_exists(zh, path, 0, &st);
    if (rc != ZNONODE)
        fail_msg("%s: expected no node, got %s", path, zerror(rc));
}

static void expect_part(const kw_zk_part_info_t *p, const char *topic, int32_t partition,
                        const char *owner, int64_t offset, int corrupt)
{
    if (strcmp(p->topic, topic) != 0 || p->partition != partition ||
        strcmp(p->owner, owner) != 0 || p->offset != offset || p->offset_corrupt != corrupt)
        fail_msg("partition %s/%d owner '%s' offset %lld corrupt %d; expected %s/%d owner "
                 "'%s' offset %lld corrupt %d", p->topic, (int)p->partition, p->owner,
                 (long long)p->offset, p->offset_corrupt, topic, (int)partition, owner,
                 (long long)offset, corrupt);
}

/* ------------------------------------------------------------------ */
/* tests                                                                */
/* ------------------------------------------------------------------ */

/* Two instances, owned and released partitions, offsets with and without
 * an owner, nodes kwal never writes: the view reports exactly that, sorted,
 * and does not show up as an instance itself; after an instance leaves its
 * partitions are unowned and their offsets stay. */
static void test_view_group(void **state)
{
    (void)state;
    SKIP_IF_NO_ZK();
    char err[512] = "", host[256] = "", want_data[300];
    int64_t t0 = wall_ms();
    kw_zk_t *a = open_member(g.zk.connect, "g-v", "inst-a", NULL);
    kw_zk_t *b = open_member(g.zk.connect, "g-v", "inst-b", NULL);
    zhandle_t *raw = raw_connect();

    own_commit(a, "t", 1, 20);
    own_commit(a, "t", 0, 10);
    expect_ok(kw_zk_disown(a, "t", 1, err, sizeof(err)), "disown", err);
    own_commit(b, "u", 2, -1);                       /* owned, nothing stored yet */
    own_commit(b, "t", 10, 5);                       /* sorts after t/1 as a number */
    assert_int_equal(zoo_create(raw, "/consumers/g-v/offsets/t/7", "x1", 2,
                                &ZOO_OPEN_ACL_UNSAFE, ZOO_PERSISTENT, NULL, 0), ZOK);
    assert_int_equal(zoo_create(raw, "/consumers/g-v/offsets/t/notes", "1", 1,
                                &ZOO_OPEN_ACL_UNSAFE, ZOO_PERSISTENT, NULL, 0), ZOK);

    kw_zk_view_t *v = open_view(g.zk.connect, "g-v", NULL);
    int exists = -1;
    expect_ok(kw_zk_view_group_exists(v, &exists, err, sizeof(err)), "exists", err);
    assert_int_equal(exists, 1);

    kw_zk_member_t *m = NULL;
    size_t n = 0;
    expect_ok(kw_zk_view_members(v, &m, &n, err, sizeof(err)), "members", err);
    assert_int_equal(n, 2);                          /* the view is not one */
    assert_string_equal(m[0].name, "inst-a");
    assert_string_equal(m[1].name, "inst-b");
    gethostname(host, sizeof(host) - 1);
    snprintf(want_data, sizeof(want_data), "%s:%ld", host, (long)getpid());
    assert_string_equal(m[0].data, want_data);
    assert_true(m[0].created_ms >= t0 - 5000 && m[0].created_ms <= wall_ms() + 5000);
    free(m);

    kw_zk_part_info_t *p = NULL;
    expect_ok(kw_zk_view_partitions(v, &p, &n, err, sizeof(err)), "partitions", err);
    assert_int_equal(n, 5);
    expect_part(&p[0], "t", 0, "inst-a", 10, 0);
    expect_part(&p[1], "t", 1, "", 20, 0);
    expect_part(&p[2], "t", 7, "", -1, 1);
    expect_part(&p[3], "t", 10, "inst-b", 5, 0);
    expect_part(&p[4], "u", 2, "inst-b", -1, 0);
    free(p);

    /* A leaves: its ids and owner nodes go with its session, offsets stay */
    kw_zk_destroy(a);
    expect_ok(kw_zk_view_members(v, &m, &n, err, sizeof(err)), "members", err);
    assert_int_equal(n, 1);
    assert_string_equal(m[0].name, "inst-b");
    free(m);
    expect_ok(kw_zk_view_partitions(v, &p, &n, err, sizeof(err)), "partitions", err);
    assert_int_equal(n, 5);
    expect_part(&p[0], "t", 0, "", 10, 0);
    free(p);

    kw_zk_destroy(b);
    expect_ok(kw_zk_view_members(v, &m, &n, err, sizeof(err)), "members", err);
    assert_int_equal(n, 0);
    assert_null(m);
    kw_zk_view_close(v);
    kw_zk_view_close(NULL);
    zookeeper_close(raw);
}

/* A group (and a chroot) that does not exist: said so, empty listings, and
 * nothing is created -- unlike kw_zk_new. */
static void test_view_missing_group(void **state)
{
    (void)state;
    SKIP_IF_NO_ZK();
    char err[512] = "", conn[300];
    zhandle_t *raw = raw_connect();
    const char *connects[2] = { g.zk.connect, conn };

    test_path(conn, sizeof(conn), "%s/no/such/chroot", g.zk.connect);
    for (int i = 0; i < 2; i++) {
        kw_zk_view_t *v = open_view(connects[i], "g-none", NULL);
        kw_zk_member_t dummy_m, *m = &dummy_m;          /* must come back NULL */
        kw_zk_part_info_t dummy_p, *p = &dummy_p;
        size_t n = 7;
        int exists = -1;

        expect_ok(kw_zk_view_group_exists(v, &exists, err, sizeof(err)), "exists", err);
        assert_int_equal(exists, 0);
        expect_ok(kw_zk_view_members(v, &m, &n, err, sizeof(err)), "members", err);
        assert_int_equal(n, 0);
        assert_null(m);
        n = 7;
        expect_ok(kw_zk_view_partitions(v, &p, &n, err, sizeof(err)), "partitions", err);
        assert_int_equal(n, 0);
        assert_null(p);
        kw_zk_view_close(v);
    }
    raw_absent(raw, "/consumers/g-none");
    raw_absent(raw, "/no");
    zookeeper_close(raw);
}

/* The chroot of zookeeper.connect is honoured as by the store: the view with
 * it sees the group, the view without it does not. */
static void test_view_chroot(void **state)
{
    (void)state;
    SKIP_IF_NO_ZK();
    char err[512] = "", conn[300], conn_slash[300];
    test_path(conn, sizeof(conn), "%s/kv/c", g.zk.connect);
    test_path(conn_slash, sizeof(conn_slash), "%s/kv/c/", g.zk.connect);
    kw_zk_t *a = open_member(conn, "g-vc", "inst-a", NULL);
    own_commit(a, "t", 3, 77);

    kw_zk_view_t *v = open_view(conn_slash, "g-vc", NULL);
    kw_zk_part_info_t *p = NULL;
    size_t n = 0;
    expect_ok(kw_zk_view_partitions(v, &p, &n, err, sizeof(err)), "partitions", err);
    assert_int_equal(n, 1);
    expect_part(&p[0], "t", 3, "inst-a", 77, 0);
    free(p);
    kw_zk_view_close(v);

    v = open_view(g.zk.connect, "g-vc", NULL);
    int exists = -1;
    expect_ok(kw_zk_view_group_exists(v, &exists, err, sizeof(err)), "exists", err);
    assert_int_equal(exists, 0);
    kw_zk_view_close(v);
    kw_zk_destroy(a);
}

/* A group made with a digest: readable with the same digest; without it the
 * group is seen to exist but its nodes are KW_EAUTH, said in one line. */
static void test_view_digest(void **state)
{
    (void)state;
    SKIP_IF_NO_ZK();
    char err[512] = "", conn[300];
    test_path(conn, sizeof(conn), "%s/kv-acl", g.zk.connect);
    kw_zk_t *a = open_member(conn, "g-va", "inst-a", "kwal:secret");
    own_commit(a, "t", 0, 5);

    kw_zk_view_t *v = open_view(conn, "g-va", "kwal:secret");
    kw_zk_part_info_t *p = NULL;
    kw_zk_member_t *m = NULL;
    size_t n = 0;
    expect_ok(kw_zk_view_partitions(v, &p, &n, err, sizeof(err)), "partitions", err);
    assert_int_equal(n, 1);
    expect_part(&p[0], "t", 0, "inst-a", 5, 0);
    free(p);
    expect_ok(kw_zk_view_members(v, &m, &n, err, sizeof(err)), "members", err);
    assert_int_equal(n, 1);
    free(m);
    kw_zk_view_close(v);

    v = open_view(conn, "g-va", NULL);
    int exists = -1;
    expect_ok(kw_zk_view_group_exists(v, &exists, err, sizeof(err)), "exists", err);
    assert_int_equal(exists, 1);
    assert_int_equal(kw_zk_view_members(v, &m, &n, err, sizeof(err)), KW_EAUTH);
    assert_non_null(strstr(err, "digest"));
    assert_null(strchr(err, '\n'));
    assert_int_equal(kw_zk_view_partitions(v, &p, &n, err, sizeof(err)), KW_EAUTH);
    kw_zk_view_close(v);

    v = open_view(conn, "g-va", "kwal:wrong");
    assert_int_equal(kw_zk_view_partitions(v, &p, &n, err, sizeof(err)), KW_EAUTH);
    kw_zk_view_close(v);
    kw_zk_destroy(a);
}

/* Nothing listens: KW_ETIMEDOUT naming the connect string, in bounded time;
 * bad options are KW_ECONFIG before any connection. */
static void test_view_unreachable(void **state)
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
    kw_zk_view_t *v = (kw_zk_view_t *)&o;
    kw_zk_options_init(&o);
    o.connect = conn;
    o.group = "g";
    o.connect_timeout_ms = 1000;
    int64_t t0 = wall_ms();
    assert_int_equal(kw_zk_view_open(&o, &v, err, sizeof(err)), KW_ETIMEDOUT);
    assert_true(wall_ms() - t0 < 5000);
    assert_null(v);
    assert_non_null(strstr(err, conn));

    o.connect = "";
    assert_int_equal(kw_zk_view_open(&o, &v, err, sizeof(err)), KW_ECONFIG);
    o.connect = "/only-a-chroot";
    assert_int_equal(kw_zk_view_open(&o, &v, err, sizeof(err)), KW_ECONFIG);
    o.connect = "127.0.0.1:1/a//b";
    assert_int_equal(kw_zk_view_open(&o, &v, err, sizeof(err)), KW_ECONFIG);
    o.connect = conn;
    o.group = "a/b";
    assert_int_equal(kw_zk_view_open(&o, &v, err, sizeof(err)), KW_ECONFIG);
    o.group = "g";
    o.digest = "nocolon";
    assert_int_equal(kw_zk_view_open(&o, &v, err, sizeof(err)), KW_ECONFIG);
    assert_null(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_view_group),
        cmocka_unit_test(test_view_missing_group),
        cmocka_unit_test(test_view_chroot),
        cmocka_unit_test(test_view_digest),
        cmocka_unit_test(test_view_unreachable),
    };
    if (getenv("KWAL_TEST_FILTER") != NULL)              /* one test, when debugging */
        cmocka_set_test_filter(getenv("KWAL_TEST_FILTER"));
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
