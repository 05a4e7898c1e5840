/*
 * test_zk_server.h -- a real ZooKeeper server for unit tests, started with
 * $KWAL_BIN_DIR/kwal-zk-local (Debian's server on a free loopback port, a
 * temporary data directory).
 *
 * Without KWAL_BIN_DIR (a test binary run by hand, outside ctest) start
 * returns 0 and the test should skip; with it, a server that cannot start is
 * a failure (-1). Only the test's main thread calls these.
 */
#ifndef KW_TEST_ZK_SERVER_H
#define KW_TEST_ZK_SERVER_H

#include <stddef.h>

typedef struct test_zk_server {
    char *dir;             /* temporary directory: data, logs, "connect" */
    char  bin[1024];       /* kwal-zk-local */
    char  connect[256];    /* host:port once started */
} test_zk_server_t;

/* Start a server in a new temporary directory named after tag; extra is
 * appended to `kwal-zk-local start` (e.g. "--tick-ms 500"). 1 started,
 * 0 no KWAL_BIN_DIR (skip), -1 failed (the tool's output is on stderr). */
int test_zk_server_start(test_zk_server_t *s, const char *tag, const char *extra);

/* Run `kwal-zk-local CMD --dir DIR` (e.g. "stop", "start --timeout 60" to
 * restart on the same port and data). 0 when it exits 0, else -1. */
int test_zk_server_cmd(test_zk_server_t *s, const char *cmd);

/* A file inside the server's directory (for client logs). */
void test_zk_server_path(const test_zk_server_t *s, const char *name, char *buf,
                         size_t cap);

/* Stop the server and remove its directory (kept with KWAL_KEEP_TMP set).
 * A server never started is a no-op. */
void test_zk_server_stop(test_zk_server_t *s);

#endif /* KW_TEST_ZK_SERVER_H */
