/*
 * test_pg_server.c -- see test_pg_server.h.
 */
#include "test_pg_server.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test_util.h"

int test_pg_server_cmd(test_pg_server_t *s, const char *cmd)
{
    char line[2400];

    test_path(line, sizeof(line), "'%s' %s --dir '%s' >>'%s/cmd.out' 2>&1",
              s->bin, cmd, s->dir, s->dir);
    return system(line) == 0 ? 0 : -1;
}

int test_pg_server_start(test_pg_server_t *s, const char *tag)
{
    int rc;
    char path[1200];

    memset(s, 0, sizeof(*s));
    rc = test_bin_tool(tag, "kwal-pg-local", "a PostgreSQL server", s->bin, sizeof(s->bin));
    if (rc != 1)
        return rc;
    s->dir = test_tmpdir_new(tag);
    if (s->dir == NULL)
        return -1;
    if (test_pg_server_cmd(s, "start --no-fsync") != 0) {
        test_path(path, sizeof(path), "cat '%s/cmd.out' >&2", s->dir);
        if (system(path) != 0)
            fprintf(stderr, "(no output)\n");
        fprintf(stderr, "%s: kwal-pg-local could not start PostgreSQL\n", tag);
        return -1;
    }
    test_path(path, sizeof(path), "%s/conninfo", s->dir);
    if (test_read_line(path, s->conninfo, sizeof(s->conninfo)) != 0)
        return -1;
    return 1;
}

void test_pg_server_stop(test_pg_server_t *s)
{
    if (s->dir == NULL)
        return;
    (void)test_pg_server_cmd(s, "destroy");
    if (getenv("KWAL_KEEP_TMP") == NULL)
        test_rmtree(s->dir);
    free(s->dir);
    s->dir = NULL;
}
