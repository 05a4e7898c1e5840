/*
 * kwal.c -- main() of the `kwal` program: global options and subcommand
 * dispatch.
 *
 * kwal is one program with subcommands (DESIGN.md, "Command line"). This
 * file parses `--help` and `--version`, runs `kwal config`, and hands
 * `kwal wal ...` to kwal_wal_cmd.c, `kwal receive ...` to
 * kwal_receive_cmd.c and `kwal status ...` to kwal_status_cmd.c. The
 * libraries never print to stdout or exit; this program does both, with
 * the exit statuses of kwal.h.
 */
#include "kwal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kw_fault.h"
#include "kw_log.h"

#ifndef KWAL_VERSION
#define KWAL_VERSION "0.0.0"
#endif

/* See kwal.h. */
static void print_usage(FILE *out)
{
    fputs("Usage: kwal COMMAND [OPTIONS]\n"
          "       kwal --help | --version | --list-crash-points\n"
          "\n"
          "kwal takes records out of Apache Kafka with zero data loss.\n"
          "\n"
          "Commands:\n"
          "  receive -c FILE [-X k=v]... receiver mode: consume, WAL, ZooKeeper offsets,\n"
          "                              batches to the sink (kwal receive --help)\n"
          "  recover -c FILE [-X k=v]... recovery alone: replay unacknowledged blocks into\n"
          "                              the sink, repair ZooKeeper (kwal recover --help)\n"
          "  direct -c FILE [-X k=v]...  direct mode: exact offset ranges per batch, stored\n"
          "                              with the output in one transaction (kwal direct --help)\n"
          "  status -c FILE [--json]     the group at a glance: instances, owners, stored\n"
          "                              offsets, lag, local WAL health (kwal status --help)\n"
          "  compare [options]           the same workload and faults through every mode: a\n"
          "                              report, CSV and chart (kwal compare --help)\n"
          "  bench [options]             kwal's modes next to kcat and Spark Streaming on\n"
          "                              a real Kafka cluster: a report, CSV and chart\n"
          "                              (kwal bench --help)\n"
          "  wal ls|dump|verify|repair   inspect, check and repair the write-ahead log\n"
          "                              (kwal wal --help)\n"
          "  config                      print the effective configuration, or its\n"
          "                              documentation (kwal config --help)\n"
          "\n"
          "Configuration: -c FILE reads key=value lines (# starts a comment line);\n"
          "-X key=value overrides one key after the file, as in kcat. Keys:\n"
          "\n", out);
    kw_conf_print_help(out);
    fputs("\n"
          "Fault injection (for tests; see kwal --list-crash-points):\n"
          "  KWAL_CRASH_AT=POINT[:N]   _exit(99) the Nth time a thread passes POINT\n"
          "  KWAL_FIU='enable name=P;...'  enable libfiu failure points at start\n"
          "  KWAL_FIU_CTRL=PREFIX      take fiu-ctrl -f PREFIX commands at run time\n"
          "\n"
          "Exit status: 0 on success; 1 when the command failed (one line on stderr);\n"
          "2 for bad arguments or configuration; 99 at an armed crash point.\n", out);
}

static void print_crash_points(FILE *out)
{
    fputs("# crash points, in data-flow order: KWAL_CRASH_AT=<point>[:<nth>]\n", out);
    for (int i = 0; i < KW_CRASH_DIRECT_READ; i++)
        fprintf(out, "%-20s %s\n", kw_crash_point_name((kw_crash_point_t)i),
                kw_crash_point_desc((kw_crash_point_t)i));
    fputs("# libfiu failure points: KWAL_FIU / KWAL_FIU_CTRL\n", out);
#define KW__FAULT_ROW(e, name, desc) fprintf(out, "%-20s %s\n", name, desc);
    KW_FAULT_POINTS(KW__FAULT_ROW)
#undef KW__FAULT_ROW
    fputs("# crash points of kwal direct (it also passes sink.mid-txn): "
          "KWAL_CRASH_AT=<point>[:<nth>]\n", out);
    for (int i = KW_CRASH_DIRECT_READ; i < KW__CRASH_COUNT; i++)
        fprintf(out, "%-20s %s\n", kw_crash_point_name((kw_crash_point_t)i),
                kw_crash_point_desc((kw_crash_point_t)i));
}

static void print_config_usage(FILE *out)
{
    fputs("Usage: kwal config [-c FILE] [-X key=value]...\n"
          "       kwal config --markdown\n"
          "\n"
          "Without --markdown: load the configuration (defaults, then FILE, then\n"
          "each -X in order) and print it as a configuration file: every key=value\n"
          "after a comment saying where the value came from.\n"
          "Fails, naming the file, line and key, on anything that does not parse.\n"
          "\n"
          "--markdown: print the documentation of every key as Markdown (the\n"
          "contents of CONFIGURATION.md).\n", out);
}

/* `kwal config ...`; argv[0] is "config". */
static int config_main(int argc, char **argv)
{
    const char **overrides = NULL;
    const char *path = NULL;
    char errstr[1024];
    kw_conf_t *conf = NULL;
    size_t noverrides = 0;
    int markdown = 0, rc = KWAL_EXIT_USAGE;
    kw_err_t err;

    overrides = calloc((size_t)argc, sizeof(*overrides));
    if (overrides == NULL) {
        kw_cli_error("kwal", "out of memory");
        return KWAL_EXIT_FAIL;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int r;

        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            print_config_usage(stdout);
            rc = KWAL_EXIT_OK;
            goto cleanup;
        } else if (strcmp(a, "--markdown") == 0) {
            markdown = 1;
        } else if ((r = kw_cli_conf_opt(argc, argv, &i, &path, overrides,
                                      &noverrides)) != 0) {
            if (r < 0) {
                rc = kw_cli_usage_error_topic("kwal", "config", "config: %s needs an argument", a);
                goto cleanup;
            }
        } else {
            rc = kw_cli_usage_error_topic("kwal", "config", "config: unexpected argument '%s'", a);
            goto cleanup;
        }
    }
    if (markdown) {
        if (path != NULL || noverrides > 0) {
            rc = kw_cli_usage_error_topic("kwal", "config", "config: --markdown takes no -c or -X");
            goto cleanup;
        }
        kw_conf_print_markdown(stdout);
        rc = KWAL_EXIT_OK;
        goto cleanup;
    }
    err = kw_conf_load(path, overrides, noverrides, &conf, errstr, sizeof(errstr));
    if (err != KW_OK) {
        kw_cli_error("kwal", "%s", errstr);
        rc = err == KW_ENOMEM ? KWAL_EXIT_FAIL : KWAL_EXIT_USAGE;
        goto cleanup;
    }
    kw_conf_print(conf, stdout);
    rc = KWAL_EXIT_OK;

cleanup:
    kw_conf_destroy(conf);
    free(overrides);
    return rc;
}

/* `kwal compare` and `kwal bench`: the runners are Python programs
 * (tools/compare, tools/bench/bench), linked as kwal-NAME next to this
 * binary; $env (KWAL_COMPARE, KWAL_BENCH) names another copy. */
static int runner_main(const char *name, const char *env_name, int argc, char **argv)
{
    char self[4096], path[4200];
    const char *env = getenv(env_name);
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    char **args = calloc((size_t)argc + 2, sizeof(*args));

    if (args == NULL) {
        kw_cli_error("kwal", "out of memory");
        return KWAL_EXIT_FAIL;
    }
    if (env != NULL && env[0] != '\0') {
        snprintf(path, sizeof(path), "%s", env);
    } else if (n > 0) {
        self[n] = '\0';
        *strrchr(self, '/') = '\0';
        snprintf(path, sizeof(path), "%s/kwal-%s", self, name);
    } else {
        path[0] = '\0';
    }
    if (path[0] == '\0' || access(path, X_OK) != 0) {
        kw_cli_error("kwal", "%s: the runner %s is missing (it is built next to kwal; "
                   "%s=PATH names another)", name, path[0] ? path : "kwal-<command>", env_name);
        free(args);
        return KWAL_EXIT_FAIL;
    }
    args[0] = path;
    for (int i = 1; i < argc; i++)
        args[i] = argv[i];
    fflush(stdout);
    execv(path, args);
    kw_cli_error("kwal", "%s: cannot run %s: %s", name, path, strerror(errno));
    free(args);
    return KWAL_EXIT_FAIL;
}

int main(int argc, char **argv)
{
    char errstr[512];
    const char *cmd;
    int rc;

    (void)kw_cli_on_crash_signals("kwal");
    if (argc < 2)
        return kw_cli_usage_error_topic("kwal", NULL, "missing command");
    if (kw_fault_init(errstr, sizeof(errstr)) != KW_OK) {
        kw_cli_error("kwal", "%s", errstr);
        return KWAL_EXIT_USAGE;
    }
    cmd = argv[1];
    if (strcmp(cmd, "--list-crash-points") == 0) {
        print_crash_points(stdout);
        rc = KWAL_EXIT_OK;
    } else if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 ||
        strcmp(cmd, "help") == 0) {
        print_usage(stdout);
        rc = KWAL_EXIT_OK;
    } else if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "-V") == 0 ||
               strcmp(cmd, "version") == 0) {
        printf("kwal %s\n", KWAL_VERSION);
        rc = KWAL_EXIT_OK;
    } else if (strcmp(cmd, "wal") == 0) {
        rc = kwal_wal_main(argc - 1, argv + 1);
    } else if (strcmp(cmd, "receive") == 0) {
        rc = kwal_receive_main(argc - 1, argv + 1);
    } else if (strcmp(cmd, "recover") == 0) {
        rc = kwal_recover_main(argc - 1, argv + 1);
    } else if (strcmp(cmd, "direct") == 0) {
        rc = kwal_direct_main(argc - 1, argv + 1);
    } else if (strcmp(cmd, "status") == 0) {
        rc = kwal_status_main(argc - 1, argv + 1);
    } else if (strcmp(cmd, "compare") == 0) {
        rc = runner_main("compare", "KWAL_COMPARE", argc - 1, argv + 1);
    } else if (strcmp(cmd, "bench") == 0) {
        rc = runner_main("bench", "KWAL_BENCH", argc - 1, argv + 1);
    } else if (strcmp(cmd, "config") == 0) {
        rc = config_main(argc - 1, argv + 1);
    } else if (cmd[0] == '-') {
        rc = kw_cli_usage_error_topic("kwal", NULL, "unknown option '%s'", cmd);
    } else {
        rc = kw_cli_usage_error_topic("kwal", NULL, "unknown command '%s'", cmd);
    }
    if (fflush(stdout) != 0 || ferror(stdout)) {
        kw_cli_error("kwal", "writing to stdout failed");
        if (rc == KWAL_EXIT_OK)
            rc = KWAL_EXIT_FAIL;
    }
    return rc;
}
