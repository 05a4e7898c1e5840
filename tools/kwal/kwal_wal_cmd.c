/*
 * kwal_wal_cmd.c -- `kwal wal ls|dump|verify|repair`: look into the WAL,
 * check it, rebuild a replica.
 *
 * Every subcommand finds the WAL either from the configuration (`-c FILE`,
 * `-X key=value`, the wal.* keys) or from `--dir DIR` given once per replica,
 * in replica order (with `--quorum N`); `--dir` replaces wal.dirs when both
 * are given. ls, dump and verify open the WAL read-only: they take no lock,
 * change nothing, and work while the daemon has the WAL open. repair takes
 * the WAL's lock, so the daemon must be stopped.
 *
 * Output goes to stdout; the one-line reason for a failure goes to stderr as
 * "kwal: wal <cmd>: <reason>". Exit statuses are those of kwal.h; verify
 * exits 1 when it found problems and 2 when it could not read the WAL.
 */
#include "kwal.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "kw_log.h"

/* Which options a subcommand takes, beyond the common ones. */
enum {
    OPT_DUMP   = 1 << 0,   /* --hex, --from, --limit */
    OPT_REPAIR = 1 << 1,   /* --replica, --target */
};

typedef struct wal_cmd {
    const char *name;
    unsigned    opts;
    int         read_only;
    int       (*run)(const struct wal_cmd *cmd, const kw_wal_options_t *opts,
                     void *args);
} wal_cmd_t;

/* Parsed command line of one subcommand. */
typedef struct wal_args {
    const char  *conf_path;
    const char **overrides;          /* -X values (argv storage) and --quorum */
    size_t       noverrides;
    char         quorum_kv[48];      /* --quorum N as "wal.write.quorum=N" */
    const char  *dirs[KW_WAL_MAX_REPLICAS];
    int          ndirs;
    int          hex;
    uint64_t     from_lsn;
    uint64_t     limit;              /* 0: no limit */
    long         replica;            /* -1: not given */
    const char  *target;
} wal_args_t;

static void print_wal_usage(FILE *out)
{
    fputs("Usage: kwal wal ls     WAL\n"
          "       kwal wal dump   WAL [--from LSN] [--limit N] [--hex]\n"
          "       kwal wal verify WAL\n"
          "       kwal wal repair WAL (--replica N | --target DIR)\n"
          "\n"
          "WAL is either  -c FILE [-X key=value]...  (the wal.* keys of the\n"
          "configuration) or  --dir DIR [--dir DIR]... [--quorum N]  (one --dir per\n"
          "replica, in replica order). --dir replaces wal.dirs when both are given.\n"
          "\n"
          "  ls      per replica: directory, health, last LSN written; every segment\n"
          "          with its first and last LSN, size and creation time; totals\n"
          "  dump    one line per record: LSN, segment, offset, size, flags, payload\n"
          "          length; --hex adds the payload; --from starts at an LSN (default:\n"
          "          the oldest); --limit stops after N records\n"
          "  verify  check every record of every replica (failed ones included);\n"
          "          prints each problem, exits 0 if none, 1 if any, 2 on errors\n"
          "  repair  rebuild one replica (index N in WAL order, or its directory)\n"
          "          from a healthy one; needs the WAL closed (stop the daemon)\n"
          "\n"
          "ls, dump and verify open the WAL read-only and work while kwal runs;\n"
          "verify may then report the tail being written as replicas disagreeing\n"
          "(run it again, or on a stopped WAL, before repairing).\n", out);
}

static int parse_u64(const char *s, uint64_t *out)
{
    unsigned long long v;
    char *end;

    if (s == NULL || s[0] < '0' || s[0] > '9')
        return -1;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return -1;
    *out = (uint64_t)v;
    return 0;
}

/* Parse argv (argv[0] is the subcommand). Returns KWAL_EXIT_OK, or the exit
 * status after printing the problem (KWAL_EXIT_OK with *help set for --help). */
static int parse_args(const wal_cmd_t *cmd, int argc, char **argv,
                      wal_args_t *args, int *help)
{
    const char *topic = "wal";

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        uint64_t n;
        int r;

        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            *help = 1;
            return KWAL_EXIT_OK;
        }
        if ((r = kw_cli_conf_opt(argc, argv, &i, &args->conf_path, args->overrides,
                               &args->noverrides)) != 0) {
            if (r < 0)
                goto missing;
        } else if ((r = kw_cli_opt_value(argc, argv, &i, "--dir", &v)) != 0) {
            if (r < 0)
                goto missing;
            if (args->ndirs == KW_WAL_MAX_REPLICAS)
                return kw_cli_usage_error_topic("kwal", topic, "wal %s: at most %d --dir",
                                        cmd->name, KW_WAL_MAX_REPLICAS);
            if (v[0] == '\0')
                return kw_cli_usage_error_topic("kwal", topic, "wal %s: --dir: empty directory name",
                                        cmd->name);
            args->dirs[args->ndirs++] = v;
        } else if ((r = kw_cli_opt_value(argc, argv, &i, "--quorum", &v)) != 0) {
            if (r < 0)
                goto missing;
            if (parse_u64(v, &n) != 0 || n > KW_WAL_MAX_REPLICAS)
                return kw_cli_usage_error_topic("kwal", topic, "wal %s: --quorum: expected 0 to %d, "
                                        "got '%s'", cmd->name, KW_WAL_MAX_REPLICAS, v);
            /* The same as -X wal.write.quorum=N at this place. */
            snprintf(args->quorum_kv, sizeof(args->quorum_kv), "wal.write.quorum=%u",
                     (unsigned)n);
            args->overrides[args->noverrides++] = args->quorum_kv;
        } else if ((cmd->opts & OPT_DUMP) && strcmp(a, "--hex") == 0) {
            args->hex = 1;
        } else if ((cmd->opts & OPT_DUMP) &&
                   (r = kw_cli_opt_value(argc, argv, &i, "--from", &v)) != 0) {
            if (r < 0)
                goto missing;
            if (parse_u64(v, &args->from_lsn) != 0)
                return kw_cli_usage_error_topic("kwal", topic, "wal %s: --from: expected an LSN, "
                                        "got '%s'", cmd->name, v);
        } else if ((cmd->opts & OPT_DUMP) &&
                   (r = kw_cli_opt_value(argc, argv, &i, "--limit", &v)) != 0) {
            if (r < 0)
                goto missing;
            if (parse_u64(v, &args->limit) != 0 || args->limit == 0)
                return kw_cli_usage_error_topic("kwal", topic, "wal %s: --limit: expected a positive "
                                        "number, got '%s'", cmd->name, v);
        } else if ((cmd->opts & OPT_REPAIR) &&
                   (r = kw_cli_opt_value(argc, argv, &i, "--replica", &v)) != 0) {
            if (r < 0)
                goto missing;
            if (parse_u64(v, &n) != 0 || n >= KW_WAL_MAX_REPLICAS)
                return kw_cli_usage_error_topic("kwal", topic, "wal %s: --replica: expected a replica "
                                        "index, got '%s'", cmd->name, v);
            args->replica = (long)n;
        } else if ((cmd->opts & OPT_REPAIR) &&
                   (r = kw_cli_opt_value(argc, argv, &i, "--target", &v)) != 0) {
            if (r < 0)
                goto missing;
            args->target = v;
        } else if (a[0] == '-') {
            return kw_cli_usage_error_topic("kwal", topic, "wal %s: unknown option '%s'", cmd->name, a);
        } else {
            return kw_cli_usage_error_topic("kwal", topic, "wal %s: unexpected argument '%s'",
                                    cmd->name, a);
        }
        continue;
missing:
        return kw_cli_usage_error_topic("kwal", topic, "wal %s: %s needs an argument", cmd->name, a);
    }
    if (args->conf_path == NULL && args->noverrides == 0 && args->ndirs == 0)
        return kw_cli_usage_error_topic("kwal", topic, "wal %s: which WAL? Give -c FILE or --dir DIR",
                                cmd->name);
    if ((cmd->opts & OPT_REPAIR) && (args->replica >= 0) == (args->target != NULL))
        return kw_cli_usage_error_topic("kwal", topic, "wal %s: give exactly one of --replica N and "
                                "--target DIR", cmd->name);
    return KWAL_EXIT_OK;
}

/* ---- ls ------------------------------------------------------------------ */

static void format_ms(uint64_t ms, char *buf, size_t len)
{
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;

    if (ms == 0 || gmtime_r(&secs, &tm) == NULL) {
        snprintf(buf, len, "-");
        return;
    }
    snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             (unsigned)(ms % 1000));
}

/* Count the *.seg files of dir and their bytes, as they are on disk. */
static int scan_dir(const char *dir, uint64_t *nseg, uint64_t *bytes)
{
    struct dirent *de;
    DIR *d = opendir(dir);

    *nseg = 0;
    *bytes = 0;
    if (d == NULL)
        return -1;
    while ((de = readdir(d)) != NULL) {
        size_t len = strlen(de->d_name);
        struct stat st;

        if (len < 5 || strcmp(de->d_name + len - 4, ".seg") != 0)
            continue;
        if (fstatat(dirfd(d), de->d_name, &st, 0) != 0)
            continue;
        (*nseg)++;
        *bytes += (uint64_t)st.st_size;
    }
    closedir(d);
    return 0;
}

static int quorum_of(const kw_wal_options_t *opts)
{
    return opts->write_quorum > 0 ? opts->write_quorum : opts->ndirs / 2 + 1;
}

static int open_wal(const wal_cmd_t *cmd, const kw_wal_options_t *opts,
                    kw_wal_t **wal, kw_wal_open_report_t *report)
{
    char errstr[1024] = "";
    kw_err_t err;

    memset(report, 0, sizeof(*report));
    err = kw_wal_open(opts, wal, report, errstr, sizeof(errstr));
    if (err != KW_OK) {
        kw_cli_error("kwal", "wal %s: %s", cmd->name, errstr[0] != '\0' ? errstr : kw_err_str(err));
        return KWAL_EXIT_FAIL;
    }
    return KWAL_EXIT_OK;
}

static int cmd_ls(const wal_cmd_t *cmd, const kw_wal_options_t *opts, void *unused)
{
    kw_wal_replica_info_t info[KW_WAL_MAX_REPLICAS];
    kw_wal_segment_info_t *segs = NULL;
    kw_wal_open_report_t report;
    kw_wal_t *wal = NULL;
    uint64_t total_bytes = 0, total_records = 0;
    size_t nsegs = 0, cap = 64;
    int healthy, rc;

    (void)unused;
    rc = open_wal(cmd, opts, &wal, &report);
    if (rc != KWAL_EXIT_OK)
        return rc;
    memset(info, 0, sizeof(info));
    healthy = kw_wal_health(wal, info, KW_WAL_MAX_REPLICAS);
    printf("wal: %d replicas, %d healthy, write quorum %d%s\n", opts->ndirs, healthy,
           quorum_of(opts), healthy < quorum_of(opts) ? " (BELOW QUORUM: read-only)" : "");
    if (report.torn_tails > 0 || report.corrupt_records > 0)
        printf("open: %" PRIu64 " torn tails (%" PRIu64 " bytes, left as they are: "
               "read-only), %" PRIu64 " corrupt records with a good copy "
               "(kwal wal verify names them)\n",
               report.torn_tails, report.torn_bytes, report.corrupt_records);
    printf("\n%-7s  %-7s  %20s  %8s  %14s  %s\n", "replica", "state", "written_lsn",
           "segments", "bytes", "dir");
    for (int r = 0; r < opts->ndirs; r++) {
        uint64_t nseg = 0, bytes = 0;
        int scanned = scan_dir(opts->dirs[r], &nseg, &bytes);

        printf("%-7d  %-7s  %20" PRIu64 "  ", r,
               info[r].state == KW_REPLICA_HEALTHY ? "healthy" : "FAILED",
               info[r].written_lsn);
        if (scanned == 0)
            printf("%8" PRIu64 "  %14" PRIu64 "  %s\n", nseg, bytes, opts->dirs[r]);
        else
            printf("%8s  %14s  %s (%s)\n", "-", "-", opts->dirs[r], strerror(errno));
        if (info[r].state != KW_REPLICA_HEALTHY && info[r].reason[0] != '\0')
            printf("%-7s  reason: %s\n", "", info[r].reason);
    }

    for (;;) {
        kw_wal_segment_info_t *n = realloc(segs, cap * sizeof(*segs));

        if (n == NULL) {
            kw_cli_error("kwal", "wal %s: out of memory", cmd->name);
            rc = KWAL_EXIT_FAIL;
            goto cleanup;
        }
        segs = n;
        nsegs = kw_wal_segments(wal, segs, cap);
        if (nsegs <= cap)
            break;
        cap = nsegs + 16;   /* the log grew meanwhile: try again */
    }
    printf("\n%-24s  %20s  %20s  %10s  %14s  %s\n", "segment", "first_lsn", "last_lsn",
           "records", "bytes", "created");
    for (size_t i = 0; i < nsegs; i++) {
        uint64_t records = segs[i].last_lsn + 1 >= segs[i].first_lsn
                           ? segs[i].last_lsn + 1 - segs[i].first_lsn : 0;
        char name[32], created[80];

        snprintf(name, sizeof(name), "%020" PRIu64 ".seg", segs[i].first_lsn);
        format_ms(segs[i].created_ms, created, sizeof(created));
        printf("%-24s  %20" PRIu64 "  ", name, segs[i].first_lsn);
        if (records > 0)
            printf("%20" PRIu64, segs[i].last_lsn);
        else
            printf("%20s", "-");
        printf("  %10" PRIu64 "  %14" PRIu64 "  %s\n", records, segs[i].bytes, created);
        total_records += records;
        total_bytes += segs[i].bytes;
    }
    printf("\ntotal: %zu segments, %" PRIu64 " records", nsegs, total_records);
    if (total_records > 0)
        printf(" (LSN %" PRIu64 "..%" PRIu64 ")", segs[0].first_lsn,
               segs[nsegs - 1].last_lsn >= segs[nsegs - 1].first_lsn
               ? segs[nsegs - 1].last_lsn : segs[nsegs - 1].first_lsn - 1);
    printf(", %" PRIu64 " bytes per replica, %" PRIu64 " bytes on %d replicas\n",
           total_bytes, total_bytes * (uint64_t)opts->ndirs, opts->ndirs);
    rc = KWAL_EXIT_OK;

cleanup:
    free(segs);
    kw_wal_close(wal);
    return rc;
}

/* ---- dump ---------------------------------------------------------------- */

/* hexdump -C style, indented. */
static void print_hex(const uint8_t *p, size_t len)
{
    for (size_t off = 0; off < len; off += 16) {
        size_t n = len - off < 16 ? len - off : 16;

        printf("    %08zx  ", off);
        for (size_t i = 0; i < 16; i++) {
            if (i < n)
                printf("%02x ", p[off + i]);
            else
                fputs("   ", stdout);
            if (i == 7)
                putchar(' ');
        }
        fputs(" |", stdout);
        for (size_t i = 0; i < n; i++)
            putchar(p[off + i] >= 0x20 && p[off + i] < 0x7f ? p[off + i] : '.');
        fputs("|\n", stdout);
    }
}

static int cmd_dump(const wal_cmd_t *cmd, const kw_wal_options_t *opts, void *argp)
{
    const wal_args_t *args = argp;
    kw_wal_record_t rec;
    kw_wal_open_report_t report;
    kw_wal_iter_t *it = NULL;
    kw_wal_t *wal = NULL;
    char errstr[1024] = "";
    uint64_t count = 0;
    kw_err_t err;
    int rc;

    memset(&rec, 0, sizeof(rec));
    rc = open_wal(cmd, opts, &wal, &report);
    if (rc != KWAL_EXIT_OK)
        return rc;
    err = kw_wal_iter_new(wal, args->from_lsn, &it, errstr, sizeof(errstr));
    if (err != KW_OK) {
        kw_cli_error("kwal", "wal %s: %s", cmd->name, errstr[0] != '\0' ? errstr : kw_err_str(err));
        rc = KWAL_EXIT_FAIL;
        goto cleanup;
    }
    printf("%20s  %20s  %12s  %10s  %5s  %10s\n", "lsn", "segment", "offset", "size",
           "flags", "length");
    while (args->limit == 0 || count < args->limit) {
        errstr[0] = '\0';
        err = kw_wal_iter_next(it, &rec, errstr, sizeof(errstr));
        if (err == KW_EOF)
            break;
        if (err != KW_OK) {
            kw_cli_error("kwal", "wal %s: after %" PRIu64 " records: %s", cmd->name, count,
                       errstr[0] != '\0' ? errstr : kw_err_str(err));
            rc = KWAL_EXIT_FAIL;
            goto cleanup;
        }
        printf("%20" PRIu64 "  %20" PRIu64 "  %12" PRIu64 "  %10" PRIu32 "  %5s  %10zu\n",
               rec.pos.lsn, rec.pos.segment, rec.pos.offset, rec.pos.size,
               (rec.flags & KW_WAL_LOST) ? "LOST" : (rec.flags & KW_WAL_COMPRESS) ? "lz4" : "-",
               rec.len);
        if (args->hex)
            print_hex(rec.payload, rec.len);
        kw_wal_record_clear(&rec);   /* wal.h: clear before reusing the struct */
        count++;
    }
    rc = KWAL_EXIT_OK;

cleanup:
    kw_wal_record_clear(&rec);
    kw_wal_iter_destroy(it);
    kw_wal_close(wal);
    return rc;
}

/* ---- verify -------------------------------------------------------------- */

typedef struct verify_ctx {
    const kw_wal_options_t *opts;
    long                    printed;
} verify_ctx_t;

static void verify_problem(const kw_wal_problem_t *p, void *opaque)
{
    verify_ctx_t *ctx = opaque;
    const char *dir = p->replica >= 0 && p->replica < ctx->opts->ndirs
                      ? ctx->opts->dirs[p->replica] : "?";

    if (p->segment[0] != '\0')
        printf("replica %d (%s) segment %s offset %" PRIu64 ": %s\n", p->replica, dir,
               p->segment, p->offset, p->what);
    else   /* about the whole replica (failed, missing, foreign) */
        printf("replica %d (%s): %s\n", p->replica, dir, p->what);
    ctx->printed++;
}

static int cmd_verify(const wal_cmd_t *cmd, const kw_wal_options_t *opts, void *unused)
{
    verify_ctx_t ctx = { opts, 0 };
    char errstr[1024] = "";
    long problems;
    int live = 0;

    (void)unused;
    problems = kw_wal_verify(opts, verify_problem, &ctx, &live, errstr, sizeof(errstr));
    if (problems >= 0 && live)
        printf("note: the WAL is open in another process; the segment being written "
               "was not checked\n");
    if (problems < 0) {
        kw_cli_error("kwal", "wal %s: %s", cmd->name,
                   errstr[0] != '\0' ? errstr : kw_err_str((kw_err_t)-problems));
        return KWAL_EXIT_USAGE;   /* "2 on errors" */
    }
    if (problems > 0) {
        printf("%ld problem%s in %d replicas\n", problems, problems == 1 ? "" : "s",
               opts->ndirs);
        kw_cli_error("kwal", "wal %s: %ld problem%s found", cmd->name, problems,
                   problems == 1 ? "" : "s");
        return KWAL_EXIT_FAIL;
    }
    printf("ok: %d replicas, no problems\n", opts->ndirs);
    return KWAL_EXIT_OK;
}

/* ---- repair -------------------------------------------------------------- */

/* Index of dir among opts->dirs: same string, or the same directory. */
static int find_replica(const kw_wal_options_t *opts, const char *dir)
{
    struct stat want, st;

    for (int r = 0; r < opts->ndirs; r++)
        if (strcmp(opts->dirs[r], dir) == 0)
            return r;
    if (stat(dir, &want) != 0)
        return -1;
    for (int r = 0; r < opts->ndirs; r++)
        if (stat(opts->dirs[r], &st) == 0 && st.st_dev == want.st_dev &&
            st.st_ino == want.st_ino)
            return r;
    return -1;
}

static int cmd_repair(const wal_cmd_t *cmd, const kw_wal_options_t *opts, void *argp)
{
    const wal_args_t *args = argp;
    char errstr[1024] = "";
    uint64_t copied = 0;
    kw_err_t err;
    int replica;

    if (args->target != NULL) {
        replica = find_replica(opts, args->target);
        if (replica < 0)
            return kw_cli_usage_error_topic("kwal", "wal", "wal %s: --target %s is not one of the "
                                    "WAL's %d directories", cmd->name, args->target,
                                    opts->ndirs);
    } else {
        replica = (int)args->replica;
        if (replica >= opts->ndirs)
            return kw_cli_usage_error_topic("kwal", "wal", "wal %s: --replica %d: the WAL has replicas "
                                    "0 to %d", cmd->name, replica, opts->ndirs - 1);
    }
    err = kw_wal_repair(opts, replica, &copied, errstr, sizeof(errstr));
    if (err != KW_OK) {
        kw_cli_error("kwal", "wal %s: replica %d (%s): %s", cmd->name, replica,
                   opts->dirs[replica], errstr[0] != '\0' ? errstr : kw_err_str(err));
        return KWAL_EXIT_FAIL;
    }
    printf("repaired replica %d (%s): %" PRIu64 " bytes copied\n", replica,
           opts->dirs[replica], copied);
    return KWAL_EXIT_OK;
}

/* ---- dispatch ------------------------------------------------------------ */

static const wal_cmd_t wal_cmds[] = {
    { "ls",     0,          1, cmd_ls },
    { "dump",   OPT_DUMP,   1, cmd_dump },
    { "verify", 0,          1, cmd_verify },
    { "repair", OPT_REPAIR, 0, cmd_repair },
};

/* Build the WAL options from the configuration and the --dir/--quorum flags. */
static int make_options(const wal_cmd_t *cmd, const wal_args_t *args,
                        kw_conf_t **confp, kw_wal_options_t *opts)
{
    char errstr[1024];
    kw_err_t err;

    err = kw_conf_load(args->conf_path, args->overrides, args->noverrides, confp,
                       errstr, sizeof(errstr));
    if (err != KW_OK) {
        kw_cli_error("kwal", "%s", errstr);
        return err == KW_ENOMEM ? KWAL_EXIT_FAIL : KWAL_EXIT_USAGE;
    }
    /* The WAL's INFO messages (what open found) repeat what these commands
     * print, and verify prints every problem the WAL would warn about: show
     * less unless log.level or KWAL_LOG_LEVEL asks for more. */
    if (kw_conf_is_set(*confp, "log.level"))
        kw_log_set_level((kw_log_level_t)(*confp)->log.level);
    else if (getenv("KWAL_LOG_LEVEL") == NULL)
        kw_log_set_level(cmd->run == cmd_verify ? KW_LOG_ERROR : KW_LOG_WARN);
    err = kwal_wal_options_from_conf(*confp, args->dirs, args->ndirs, opts,
                                     errstr, sizeof(errstr));
    if (err != KW_OK) {
        kw_cli_error("kwal", "wal %s: %s", cmd->name, errstr);
        return KWAL_EXIT_USAGE;
    }
    opts->read_only = cmd->read_only;
    return KWAL_EXIT_OK;
}

int kwal_wal_main(int argc, char **argv)
{
    const wal_cmd_t *cmd = NULL;
    kw_wal_options_t opts;
    kw_conf_t *conf = NULL;
    wal_args_t args;
    int help = 0, rc;

    if (argc < 2)
        return kw_cli_usage_error_topic("kwal", "wal", "wal: missing subcommand (ls, dump, verify, repair)");
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        print_wal_usage(stdout);
        return KWAL_EXIT_OK;
    }
    for (size_t i = 0; i < sizeof(wal_cmds) / sizeof(wal_cmds[0]); i++)
        if (strcmp(argv[1], wal_cmds[i].name) == 0)
            cmd = &wal_cmds[i];
    if (cmd == NULL)
        return kw_cli_usage_error_topic("kwal", "wal", "wal: unknown subcommand '%s'", argv[1]);

    memset(&args, 0, sizeof(args));
    args.replica = -1;
    args.overrides = calloc((size_t)argc, sizeof(*args.overrides));
    if (args.overrides == NULL) {
        kw_cli_error("kwal", "out of memory");
        return KWAL_EXIT_FAIL;
    }
    rc = parse_args(cmd, argc - 1, argv + 1, &args, &help);
    if (rc != KWAL_EXIT_OK)
        goto cleanup;
    if (help) {
        print_wal_usage(stdout);
        goto cleanup;
    }
    rc = make_options(cmd, &args, &conf, &opts);
    if (rc != KWAL_EXIT_OK)
        goto cleanup;
    rc = cmd->run(cmd, &opts, &args);

cleanup:
    kw_conf_destroy(conf);
    free(args.overrides);
    return rc;
}
