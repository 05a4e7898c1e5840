/*
 * test_zk_server.c -- see test_zk_server.h.
 */
#include "test_zk_server.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test_util.h"

int test_zk_server_cmd(test_zk_server_t *s, const char *cmd)
{
    char line[2400];

    test_path(line, sizeof(line), "'%s' %s --dir '%s' >>'%s/cmd.out' 2>&1",
              s->bin, cmd, s->dir, s->dir);
    return system(line) == 0 ? 0 : -1;
}

void test_zk_server_path(const test_zk_server_t *s, const char *name, char *buf,
                         size_t cap)
{
    test_path(buf, cap, "%s/%s", s->dir, name);
}

int test_zk_server_start(test_zk_server_t *s, const char *tag, const char *extra)
{
    int rc;
    char cmd[512], path[1200];

    memset(s, 0, sizeof(*s));
    rc = test_bin_tool(tag, "kwal-zk-local", "a ZooKeeper server", s->bin, sizeof(s->bin));
    if (rc != 1)
        return rc;
    s->dir = test_tmpdir_new(tag);
    if (s->dir == NULL)
        return -1;
    test_path(cmd, sizeof(cmd), "start --timeout 60 %s", extra != NULL ? extra : "");
    if (test_zk_server_cmd(s, cmd) != 0) {
        test_path(path, sizeof(path), "cat '%s/cmd.out' >&2", s->dir);
        if (system(path) != 0)
            fprintf(stderr, "(no output)\n");
        fprintf(stderr, "%s: kwal-zk-local could not start ZooKeeper\n", tag);
        return -1;
    }
    test_zk_server_path(s, "connect", path, sizeof(path));
    if (test_read_line(path, s->connect, sizeof(s->connect)) != 0)
        return -1;
    return 1;
}

void test_zk_server_stop(test_zk_server_t *s)
{
    if (s->dir == NULL)
        return;
    (void)test_zk_server_cmd(s, "stop");
    if (getenv("KWAL_KEEP_TMP") == NULL)
        test_rmtree(s->dir);
    free(s->dir);
    s->dir = NULL;
}
