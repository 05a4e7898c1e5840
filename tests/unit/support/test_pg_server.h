/*
 * test_pg_server.h -- a real PostgreSQL server for unit tests, started with
 * $KWAL_BIN_DIR/kwal-pg-local (Debian's server on a free loopback port, a
 * temporary data directory; fsync off: these tests never crash the host).
 *
 * Without KWAL_BIN_DIR (a test binary run by hand, outside ctest) start
 * returns 0 and the test should skip; with it, a server that cannot start is
 * a failure (-1). Only the test's main thread calls these.
 */
#ifndef KW_TEST_PG_SERVER_H
#define KW_TEST_PG_SERVER_H

#include <stddef.h>

typedef struct test_pg_server {
    char *dir;             /* temporary directory: kwal-pg-local's state */
    char  bin[1024];       /* kwal-pg-local */
    char  conninfo[256];   /* libpq connection string once started */
} test_pg_server_t;

/* Start a server in a new temporary directory named after tag. 1 started,
 * 0 no KWAL_BIN_DIR (skip), -1 failed (the tool's output is on stderr). */
int test_pg_server_start(test_pg_server_t *s, const char *tag);

/* Run `kwal-pg-local CMD --dir DIR`: "stop", "kill" (immediate: a crash),
 * "start --no-fsync" (again on the same port and data). 0 when it exits 0. */
int test_pg_server_cmd(test_pg_server_t *s, const char *cmd);

/* Stop the server and remove its data and directory. A server never
 * started is a no-op. */
void test_pg_server_stop(test_pg_server_t *s);

#endif /* KW_TEST_PG_SERVER_H */
