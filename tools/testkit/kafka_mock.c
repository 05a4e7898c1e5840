/*
 * kafka_local.c -- kwal-kafka-mock: a local Kafka cluster for tests and
 * demos, on librdkafka's mock cluster (rdkafka_mock.h).
 *
 * No Kafka broker is packaged for these machines (DESIGN.md, "Test
 * infrastructure"). librdkafka ships a mock cluster that speaks the Kafka
 * protocol on real loopback TCP sockets -- produce, fetch, list offsets,
 * consumer groups with offset commits, idempotent and transactional
 * producers -- and can inject faults. This program runs one standalone:
 *
 *   1. It creates an internal rd_kafka_t (a producer handle that never
 *      connects anywhere; the mock needs one for bookkeeping and logging),
 *      then rd_kafka_mock_cluster_new() with --brokers N brokers (ids 1..N),
 *      each listening on 127.0.0.1 on an ephemeral port. The mock runs its
 *      own I/O thread; every rd_kafka_mock_*() call below is a message to
 *      that thread, so calling them from the main thread is safe.
 *   2. It creates the --topic topics, writes the bootstrap list to
 *      --bootstrap-file (temporary file, fsync, rename: readers never see a
 *      partial list), and prints it as the first line of stdout.
 *   3. The main thread then poll()s, with one line buffer per channel, on:
 *      a self-pipe written by the SIGINT/SIGTERM handler, stdin (see below),
 *      the --control unix socket's listener and its connected clients.
 *      Each line is one fault command; the answer -- "ok" or
 *      "error: <reason>" -- goes back on the channel the command came from
 *      (stdout for stdin).
 *   4. On a signal, `quit`, or end of input on an interactive stdin it
 *      destroys the cluster, removes the bootstrap file and the control
 *      socket, and exits 0.
 *
 * stdin: a terminal, pipe, fifo or socket is read for commands and its end
 * means quit. /dev/null (any non-terminal character device) is ignored, so
 * `kwal-kafka-mock ... &` in a shell script keeps running. A regular file
 * is read to its end as a script of commands, then the cluster keeps
 * running. --no-stdin ignores stdin altogether.
 *
 * Client mode: `kwal-kafka-mock --control PATH --send COMMAND` sends one
 * command to a running instance and exits 0 for "ok", 1 for "error: ..."
 * (these machines have no nc or socat to talk to a unix socket).
 *
 * What the mock does not do like Kafka (see --help): each partition keeps at
 * most 5 MiB and 100,000 message sets and silently drops its oldest message
 * sets beyond that; clients can auto-create topics (4 partitions); a broker
 * taken down refuses connections but keeps leading its partitions (use
 * `leader` to move them); nothing persists across runs.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "cli.h"
#include "kw_file.h"
#include "kw_log.h"

#define PROG "kwal-kafka-mock"
#define MOD "kafka-mock"

#define EXIT_USAGE 2
#define MAX_BROKERS 64
#define MAX_PARTITIONS 10000
#define MAX_ERROR_COUNT 100000
#define MAX_CLIENTS 32
#define LINE_MAX_LEN 1024
#define TOPIC_NAME_MAX 249

/* A topic this program created: `leader` accepts only these, because
 * rd_kafka_mock_partition_set_leader() would silently create a missing
 * topic (with PARTITION + 1 partitions). */
typedef struct topic_spec {
    char name[TOPIC_NAME_MAX + 1];
    int  partitions;
    int  replication;                  /* 0: default, min(brokers, 3) */
} topic_spec_t;

typedef struct opts {
    int           brokers;
    topic_spec_t *topics;
    int           ntopics;
    const char   *bootstrap_file;      /* NULL: none */
    const char   *control;             /* NULL: no control socket */
    const char   *send;                /* client mode: command to send */
    bool          no_stdin;
    bool          debug;
} opts_t;

/* One line-oriented command channel: stdin or a control socket client. */
typedef struct chan {
    int    in_fd;                      /* -1: slot unused */
    int    out_fd;
    bool   is_socket;                  /* answer with send(MSG_NOSIGNAL) */
    bool   discarding;                 /* inside an over-long line */
    size_t len;
    char   buf[LINE_MAX_LEN];
} chan_t;

typedef enum { STDIN_OFF, STDIN_SCRIPT, STDIN_INTERACTIVE } stdin_mode_t;

typedef struct local {
    opts_t                   opts;
    rd_kafka_t              *rk;
    rd_kafka_mock_cluster_t *mcluster;
    topic_spec_t            *topics;   /* created topics (grows with `create`) */
    int                      ntopics, topics_cap;
    int                      listen_fd;
    chan_t                   in;       /* stdin */
    stdin_mode_t             stdin_mode;
    chan_t                   clients[MAX_CLIENTS];
    bool                     quit;
} local_t;

static int sig_pipe[2] = { -1, -1 };
static volatile sig_atomic_t sig_caught;

/* ---------------------------------------------------------------- names -- */

/* Kafka protocol ApiKeys by name (Kafka's names; librdkafka's
 * rd_kafka_ApiKey2str() is not public). A number is accepted as well. */
static const char *const api_names[] = {
    "Produce", "Fetch", "ListOffsets", "Metadata", "LeaderAndIsr",
    "StopReplica", "UpdateMetadata", "ControlledShutdown", "OffsetCommit",
    "OffsetFetch", "FindCoordinator", "JoinGroup", "Heartbeat", "LeaveGroup",
    "SyncGroup", "DescribeGroups", "ListGroups", "SaslHandshake",
    "ApiVersions", "CreateTopics", "DeleteTopics", "DeleteRecords",
    "InitProducerId", "OffsetForLeaderEpoch", "AddPartitionsToTxn",
    "AddOffsetsToTxn", "EndTxn", "WriteTxnMarkers", "TxnOffsetCommit",
    "DescribeAcls", "CreateAcls", "DeleteAcls", "DescribeConfigs",
    "AlterConfigs", "AlterReplicaLogDirs", "DescribeLogDirs",
    "SaslAuthenticate", "CreatePartitions", "CreateDelegationToken",
    "RenewDelegationToken", "ExpireDelegationToken",
    "DescribeDelegationToken", "DeleteGroups", "ElectLeaders",
    "IncrementalAlterConfigs", "AlterPartitionReassignments",
    "ListPartitionReassignments", "OffsetDelete",
};
#define API_COUNT ((int)(sizeof(api_names) / sizeof(api_names[0])))

/* Parse a base-10 integer in [lo, hi]; false when s is not exactly that. */
static bool parse_int(const char *s, long lo, long hi, long *out)
{
    char *end;
    long v;

    if (s == NULL || *s == '\0')
        return false;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

static int api_key_lookup(const char *name)
{
    long v;

    for (int i = 0; i < API_COUNT; i++) {
        size_t n = strlen(api_names[i]);

        /* "Fetch" and "FetchRequest" both name ApiKey 1. */
        if (strcasecmp(name, api_names[i]) == 0 ||
            (strncasecmp(name, api_names[i], n) == 0 &&
             strcasecmp(name + n, "Request") == 0))
            return i;
    }
    if (strcasecmp(name, "Offset") == 0 || strcasecmp(name, "ApiVersion") == 0)
        return strcasecmp(name, "Offset") == 0 ? 2 : 18;   /* librdkafka's names */
    if (parse_int(name, 0, INT16_MAX, &v))
        return (int)v;
    return -1;
}

/* An error code by its rd_kafka_err2name() name ("NOT_LEADER_FOR_PARTITION",
 * "_TRANSPORT"), with or without the RD_KAFKA_RESP_ERR_ prefix, or by number.
 * Returns false when unknown. */
static bool err_lookup(const char *name, rd_kafka_resp_err_t *out)
{
    const struct rd_kafka_err_desc *descs;
    size_t n;
    long v;

    if (strncasecmp(name, "RD_KAFKA_RESP_ERR_", 18) == 0)
        name += 18;
    if (strcasecmp(name, "NOT_LEADER_OR_FOLLOWER") == 0)
        name = "NOT_LEADER_FOR_PARTITION";  /* Kafka's newer name for 6 */
    rd_kafka_get_err_descs(&descs, &n);
    for (size_t i = 0; i < n; i++) {
        if (descs[i].name != NULL && strcasecmp(descs[i].name, name) == 0) {
            *out = descs[i].code;
            return true;
        }
    }
    if (parse_int(name, -200, 1000, &v) && strcmp(rd_kafka_err2name(
            (rd_kafka_resp_err_t)v), "") != 0) {
        *out = (rd_kafka_resp_err_t)v;
        return true;
    }
    return false;
}

static bool topic_name_valid(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > TOPIC_NAME_MAX || strcmp(s, ".") == 0 ||
        strcmp(s, "..") == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

/* ------------------------------------------------------------- topics -- */

static const topic_spec_t *topic_find(const local_t *l, const char *name)
{
    for (int i = 0; i < l->ntopics; i++)
        if (strcmp(l->topics[i].name, name) == 0)
            return &l->topics[i];
    return NULL;
}

/* Create a topic on the mock and remember it. On failure fills errstr. */
static int topic_create(local_t *l, const char *name, int partitions,
                        int replication, char *errstr, size_t errstr_size)
{
    rd_kafka_resp_err_t err;

    if (replication == 0)
        replication = l->opts.brokers < 3 ? l->opts.brokers : 3;
    if (replication > l->opts.brokers) {
        snprintf(errstr, errstr_size, "replication factor %d exceeds the %d "
                 "broker(s)", replication, l->opts.brokers);
        return -1;
    }
    if (topic_find(l, name) != NULL) {
        snprintf(errstr, errstr_size, "topic %s already exists", name);
        return -1;
    }
    if (l->ntopics == l->topics_cap) {
        int cap = l->topics_cap == 0 ? 8 : l->topics_cap * 2;
        topic_spec_t *t = realloc(l->topics, (size_t)cap * sizeof(*t));

        if (t == NULL) {
            snprintf(errstr, errstr_size, "out of memory");
            return -1;
        }
        l->topics = t;
        l->topics_cap = cap;
    }
    err = rd_kafka_mock_topic_create(l->mcluster, name, partitions, replication);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        snprintf(errstr, errstr_size, "cannot create topic %s: %s", name,
                 rd_kafka_err2str(err));
        return -1;
    }
    snprintf(l->topics[l->ntopics].name, sizeof(l->topics[0].name), "%s", name);
    l->topics[l->ntopics].partitions = partitions;
    l->topics[l->ntopics].replication = replication;
    l->ntopics++;
    KW_LOG_I(MOD, "created topic %s: %d partition(s), replication factor %d",
             name, partitions, replication);
    return 0;
}

/* ----------------------------------------------------------- commands -- */

static const char help_text[] =
    "commands (one per line; each answers 'ok' or 'error: <reason>'):\n"
    "  broker down ID|all         refuse and drop the broker's connections\n"
    "                             (its partitions keep their leader)\n"
    "  broker up ID|all           accept connections again\n"
    "  rtt ID|all MS              delay the broker's responses by MS ms\n"
    "  leader TOPIC PARTITION ID  make broker ID the partition's leader\n"
    "                             (ID -1: leaderless)\n"
    "  error API ERR [COUNT]      fail the next COUNT (default 1) requests of\n"
    "                             ApiKey API (Produce, Fetch, Metadata, ... or a\n"
    "                             number) with ERR (rd_kafka_err2name() name,\n"
    "                             e.g. NOT_LEADER_FOR_PARTITION, _TRANSPORT =\n"
    "                             disconnect, or a number)\n"
    "  clear API                  drop the errors still pushed for API\n"
    "  create TOPIC PARTITIONS [REPLICATION]\n"
    "  help                       this text, then 'ok'\n"
    "  quit                       stop the cluster and exit 0\n";

static bool parse_broker(const local_t *l, const char *s, int32_t *out)
{
    long v;

    if (strcasecmp(s, "all") == 0 || strcmp(s, "-1") == 0) {
        *out = -1;
        return true;
    }
    if (!parse_int(s, 1, l->opts.brokers, &v))
        return false;
    *out = (int32_t)v;
    return true;
}

/* Run one command line (tokens separated by blanks); write the answer, without
 * the final newline, into reply. Sets l->quit for `quit`. */
static void cmd_exec(local_t *l, char *line, char *reply, size_t rsz)
{
    char *argv[8], *save = NULL, *tok;
    int argc = 0;
    rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
    int32_t broker;
    long a, b;

    for (tok = strtok_r(line, " \t\r", &save); tok != NULL;
         tok = strtok_r(NULL, " \t\r", &save)) {
        if (argc == (int)(sizeof(argv) / sizeof(argv[0]))) {
            snprintf(reply, rsz, "error: too many arguments");
            return;
        }
        argv[argc++] = tok;
    }
    snprintf(reply, rsz, "ok");
    if (argc == 0) {
        snprintf(reply, rsz, "error: empty command (try 'help')");
        return;
    }

#define USAGE(u) do { snprintf(reply, rsz, "error: usage: %s", u); return; } while (0)

    if (strcmp(argv[0], "help") == 0) {
        snprintf(reply, rsz, "%sok", help_text);
    } else if (strcmp(argv[0], "quit") == 0) {
        l->quit = true;
    } else if (strcmp(argv[0], "broker") == 0) {
        if (argc != 3 || (strcmp(argv[1], "down") != 0 && strcmp(argv[1], "up") != 0))
            USAGE("broker down|up ID|all");
        if (!parse_broker(l, argv[2], &broker)) {
            snprintf(reply, rsz, "error: no broker '%s' (brokers are 1..%d or all)",
                     argv[2], l->opts.brokers);
            return;
        }
        err = strcmp(argv[1], "down") == 0
                  ? rd_kafka_mock_broker_set_down(l->mcluster, broker)
                  : rd_kafka_mock_broker_set_up(l->mcluster, broker);
    } else if (strcmp(argv[0], "rtt") == 0) {
        if (argc != 3)
            USAGE("rtt ID|all MS");
        if (!parse_broker(l, argv[1], &broker)) {
            snprintf(reply, rsz, "error: no broker '%s' (brokers are 1..%d or all)",
                     argv[1], l->opts.brokers);
            return;
        }
        if (!parse_int(argv[2], 0, 3600 * 1000, &a)) {
            snprintf(reply, rsz, "error: bad RTT '%s' (0..3600000 ms)", argv[2]);
            return;
        }
        err = rd_kafka_mock_broker_set_rtt(l->mcluster, broker, (int)a);
    } else if (strcmp(argv[0], "leader") == 0) {
        const topic_spec_t *t;

        if (argc != 4)
            USAGE("leader TOPIC PARTITION ID");
        if ((t = topic_find(l, argv[1])) == NULL) {
            snprintf(reply, rsz, "error: unknown topic '%s' (only topics made by "
                     "--topic or create)", argv[1]);
            return;
        }
        if (!parse_int(argv[2], 0, t->partitions - 1, &a)) {
            snprintf(reply, rsz, "error: topic %s has no partition '%s' (0..%d)",
                     t->name, argv[2], t->partitions - 1);
            return;
        }
        if (!parse_int(argv[3], -1, l->opts.brokers, &b) || b == 0) {
            snprintf(reply, rsz, "error: no broker '%s' (brokers are 1..%d, or "
                     "-1 for none)", argv[3], l->opts.brokers);
            return;
        }
        err = rd_kafka_mock_partition_set_leader(l->mcluster, t->name,
                                                 (int32_t)a, (int32_t)b);
    } else if (strcmp(argv[0], "error") == 0) {
        rd_kafka_resp_err_t code, *codes;
        int api;

        if (argc != 3 && argc != 4)
            USAGE("error API ERR [COUNT]");
        if ((api = api_key_lookup(argv[1])) < 0) {
            snprintf(reply, rsz, "error: unknown ApiKey '%s'", argv[1]);
            return;
        }
        if (!err_lookup(argv[2], &code)) {
            snprintf(reply, rsz, "error: unknown error code '%s'", argv[2]);
            return;
        }
        a = 1;
        if (argc == 4 && !parse_int(argv[3], 1, MAX_ERROR_COUNT, &a)) {
            snprintf(reply, rsz, "error: bad COUNT '%s' (1..%d)", argv[3],
                     MAX_ERROR_COUNT);
            return;
        }
        if ((codes = malloc((size_t)a * sizeof(*codes))) == NULL) {
            snprintf(reply, rsz, "error: out of memory");
            return;
        }
        for (long i = 0; i < a; i++)
            codes[i] = code;
        rd_kafka_mock_push_request_errors_array(l->mcluster, (int16_t)api,
                                                (size_t)a, codes);
        free(codes);
    } else if (strcmp(argv[0], "clear") == 0) {
        int api;

        if (argc != 2)
            USAGE("clear API");
        if ((api = api_key_lookup(argv[1])) < 0) {
            snprintf(reply, rsz, "error: unknown ApiKey '%s'", argv[1]);
            return;
        }
        rd_kafka_mock_clear_request_errors(l->mcluster, (int16_t)api);
    } else if (strcmp(argv[0], "create") == 0) {
        char why[300];

        if (argc != 3 && argc != 4)
            USAGE("create TOPIC PARTITIONS [REPLICATION]");
        if (!topic_name_valid(argv[1])) {
            snprintf(reply, rsz, "error: bad topic name '%s'", argv[1]);
            return;
        }
        if (!parse_int(argv[2], 1, MAX_PARTITIONS, &a)) {
            snprintf(reply, rsz, "error: bad PARTITIONS '%s' (1..%d)", argv[2],
                     MAX_PARTITIONS);
            return;
        }
        b = 0;
        if (argc == 4 && !parse_int(argv[3], 1, l->opts.brokers, &b)) {
            snprintf(reply, rsz, "error: bad REPLICATION '%s' (1..%d)", argv[3],
                     l->opts.brokers);
            return;
        }
        if (topic_create(l, argv[1], (int)a, (int)b, why, sizeof(why)) != 0)
            snprintf(reply, rsz, "error: %s", why);
    } else {
        snprintf(reply, rsz, "error: unknown command '%s' (try 'help')", argv[0]);
    }
#undef USAGE

    if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
        snprintf(reply, rsz, "error: %s", rd_kafka_err2str(err));
}

/* ----------------------------------------------------------- channels -- */

static void chan_reply(chan_t *c, const char *reply)
{
    char out[4096];
    int n = snprintf(out, sizeof(out), "%s\n", reply);
    size_t len = n < (int)sizeof(out) ? (size_t)n : sizeof(out) - 1;
    size_t off = 0;

    while (off < len) {
        ssize_t w = c->is_socket
                        ? send(c->out_fd, out + off, len - off, MSG_NOSIGNAL)
                        : write(c->out_fd, out + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            KW_LOG_W(MOD, "cannot answer on fd %d: %s", c->out_fd,
                     w < 0 ? strerror(errno) : "short write");
            return;
        }
        off += (size_t)w;
    }
}

/* Handle each complete line in the channel's buffer. */
static void chan_lines(local_t *l, chan_t *c)
{
    char *nl, reply[2048];

    while (!l->quit && (nl = memchr(c->buf, '\n', c->len)) != NULL) {
        size_t n = (size_t)(nl - c->buf);

        *nl = '\0';
        if (c->discarding) {
            c->discarding = false;
        } else if (n > 0 && c->buf[0] != '#') {
            KW_LOG_I(MOD, "command: %s", c->buf);
            cmd_exec(l, c->buf, reply, sizeof(reply));
            KW_LOG_I(MOD, "answer: %s", strncmp(reply, "commands", 8) == 0
                                            ? "(help) ok" : reply);
            chan_reply(c, reply);
        }
        memmove(c->buf, nl + 1, c->len - n - 1);
        c->len -= n + 1;
    }
    if (c->len == sizeof(c->buf)) {     /* a line longer than the buffer */
        if (!c->discarding)
            chan_reply(c, "error: line too long");
        c->discarding = true;
        c->len = 0;
    }
}

/* Read what is available; returns false at end of input or on error. */
static bool chan_read(local_t *l, chan_t *c)
{
    ssize_t r;

    do
        r = read(c->in_fd, c->buf + c->len, sizeof(c->buf) - c->len);
    while (r < 0 && errno == EINTR);
    if (r < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return true;
        KW_LOG_W(MOD, "read from fd %d: %s", c->in_fd, strerror(errno));
        return false;
    }
    if (r == 0) {
        if (c->len > 0 && c->len < sizeof(c->buf)) {   /* last line, no '\n' */
            c->buf[c->len++] = '\n';
            chan_lines(l, c);
        }
        return false;
    }
    c->len += (size_t)r;
    chan_lines(l, c);
    return true;
}

static void client_close(chan_t *c)
{
    close(c->in_fd);
    c->in_fd = c->out_fd = -1;
    c->len = 0;
    c->discarding = false;
}

static void client_accept(local_t *l)
{
    int fd = accept(l->listen_fd, NULL, NULL);

    if (fd < 0) {
        if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK)
            KW_LOG_W(MOD, "accept on %s: %s", l->opts.control, strerror(errno));
        return;
    }
    for (int i = 0; i < MAX_CLIENTS; i++) {
        chan_t *c = &l->clients[i];

        if (c->in_fd < 0) {
            c->in_fd = c->out_fd = fd;
            c->is_socket = true;
            c->len = 0;
            c->discarding = false;
            return;
        }
    }
    chan_t tmp = { .in_fd = fd, .out_fd = fd, .is_socket = true };
    chan_reply(&tmp, "error: too many control connections");
    close(fd);
}

/* ------------------------------------------------------------ set-up -- */

static void on_signal(int sig)
{
    int saved = errno;
    char b = (char)sig;

    sig_caught = sig;
    if (sig_pipe[1] >= 0 && write(sig_pipe[1], &b, 1) < 0) {
        /* nothing to do: the pipe is full, a wake-up is pending anyway */
    }
    errno = saved;
}

static int signals_install(void)
{
    struct sigaction sa;

    if (pipe(sig_pipe) != 0)
        return -1;
    for (int i = 0; i < 2; i++) {
        fcntl(sig_pipe[i], F_SETFD, FD_CLOEXEC);
        fcntl(sig_pipe[i], F_SETFL, O_NONBLOCK);
    }
    memset(&sa, 0, sizeof(sa));
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_signal;
    if (sigaction(SIGINT, &sa, NULL) != 0 || sigaction(SIGTERM, &sa, NULL) != 0)
        return -1;
    sa.sa_handler = SIG_IGN;
    return sigaction(SIGPIPE, &sa, NULL);
}

/* librdkafka log lines (syslog levels) go to kwal's log. */
static void rk_log(const rd_kafka_t *rk, int level, const char *fac,
                   const char *buf)
{
    kw_log_level_t kl = level <= 3 ? KW_LOG_ERROR
                        : level == 4 ? KW_LOG_WARN
                        : level <= 6 ? KW_LOG_INFO : KW_LOG_DEBUG;

    (void)rk;
    /* The bookkeeping handle has no bootstrap.servers, by design. */
    if (strcmp(fac, "CONFWARN") == 0 && strstr(buf, "bootstrap.servers") != NULL)
        kl = KW_LOG_DEBUG;
    kw_log(kl, "rdkafka", "%s: %s", fac, buf);
}

static stdin_mode_t stdin_mode_detect(bool no_stdin)
{
    struct stat st;

    if (no_stdin || fstat(STDIN_FILENO, &st) != 0)
        return STDIN_OFF;
    if (isatty(STDIN_FILENO) || S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode))
        return STDIN_INTERACTIVE;
    if (S_ISREG(st.st_mode))
        return STDIN_SCRIPT;
    return STDIN_OFF;                   /* /dev/null and other devices */
}

/* Write text to path atomically: PATH.tmp.PID, fsync, rename. */
static int write_file_atomic(const char *path, const char *text)
{
    return kw_file_replace(path, text, strlen(text), NULL, 0);
}

static int control_listen(const char *path)
{
    struct sockaddr_un sa;
    struct stat st;
    int fd;

    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(sa.sun_path)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    strcpy(sa.sun_path, path);
    /* A socket left by a killed run is stale; anything else is not ours. */
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            errno = EEXIST;
            return -1;
        }
        unlink(path);
    }
    if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
        return -1;
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(fd, 16) != 0) {
        int saved = errno;

        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

/* Start the cluster, topics, bootstrap file, control socket. Returns 0, or
 * -1 after logging why (everything made so far is undone by local_stop). */
static int local_start(local_t *l)
{
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    const char *bootstraps;

    rd_kafka_conf_set_log_cb(conf, rk_log);
    if (rd_kafka_conf_set(conf, "client.id", PROG, errstr, sizeof(errstr)) !=
            RD_KAFKA_CONF_OK ||
        (l->opts.debug && rd_kafka_conf_set(conf, "debug", "mock", errstr,
                                            sizeof(errstr)) != RD_KAFKA_CONF_OK)) {
        KW_LOG_E(MOD, "librdkafka configuration: %s", errstr);
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    /* On success the conf object is owned by the handle. */
    if ((l->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr))) == NULL) {
        KW_LOG_E(MOD, "cannot create the librdkafka handle: %s", errstr);
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    if ((l->mcluster = rd_kafka_mock_cluster_new(l->rk, l->opts.brokers)) == NULL) {
        KW_LOG_E(MOD, "cannot create a mock cluster with %d broker(s)",
                 l->opts.brokers);
        return -1;
    }
    bootstraps = rd_kafka_mock_cluster_bootstraps(l->mcluster);
    KW_LOG_I(MOD, "mock cluster up: %d broker(s) at %s (librdkafka %s)",
             l->opts.brokers, bootstraps, rd_kafka_version_str());

    for (int i = 0; i < l->opts.ntopics; i++) {
        const topic_spec_t *t = &l->opts.topics[i];

        if (topic_create(l, t->name, t->partitions, t->replication, errstr,
                         sizeof(errstr)) != 0) {
            KW_LOG_E(MOD, "%s", errstr);
            return -1;
        }
    }

    if (l->opts.control != NULL) {
        if ((l->listen_fd = control_listen(l->opts.control)) < 0) {
            KW_LOG_E(MOD, "cannot listen on control socket %s: %s",
                     l->opts.control, strerror(errno));
            return -1;
        }
        KW_LOG_I(MOD, "control socket: %s", l->opts.control);
    }

    if (l->opts.bootstrap_file != NULL) {
        char line[2048];

        snprintf(line, sizeof(line), "%s\n", bootstraps);
        if (write_file_atomic(l->opts.bootstrap_file, line) != 0) {
            KW_LOG_E(MOD, "cannot write bootstrap file %s: %s",
                     l->opts.bootstrap_file, strerror(errno));
            l->opts.bootstrap_file = NULL;     /* not ours to remove */
            return -1;
        }
    }
    printf("%s\n", bootstraps);
    fflush(stdout);
    return 0;
}

static void local_stop(local_t *l)
{
    for (int i = 0; i < MAX_CLIENTS; i++)
        if (l->clients[i].in_fd >= 0)
            client_close(&l->clients[i]);
    if (l->listen_fd >= 0) {
        close(l->listen_fd);
        unlink(l->opts.control);
    }
    if (l->opts.bootstrap_file != NULL)
        unlink(l->opts.bootstrap_file);
    if (l->mcluster != NULL)
        rd_kafka_mock_cluster_destroy(l->mcluster);
    if (l->rk != NULL)
        rd_kafka_destroy(l->rk);
    free(l->topics);
}

/* The main loop: commands and signals until quit. */
static void local_run(local_t *l)
{
    struct pollfd pfd[3 + MAX_CLIENTS];
    int map[3 + MAX_CLIENTS];

    while (!l->quit && !sig_caught) {
        int n = 0;

        pfd[n] = (struct pollfd){ .fd = sig_pipe[0], .events = POLLIN };
        map[n++] = -3;
        if (l->stdin_mode != STDIN_OFF) {
            pfd[n] = (struct pollfd){ .fd = STDIN_FILENO, .events = POLLIN };
            map[n++] = -2;
        }
        if (l->listen_fd >= 0) {
            pfd[n] = (struct pollfd){ .fd = l->listen_fd, .events = POLLIN };
            map[n++] = -1;
        }
        for (int i = 0; i < MAX_CLIENTS; i++) {
            if (l->clients[i].in_fd >= 0) {
                pfd[n] = (struct pollfd){ .fd = l->clients[i].in_fd, .events = POLLIN };
                map[n++] = i;
            }
        }
        if (poll(pfd, (nfds_t)n, 1000) < 0) {
            if (errno == EINTR)
                continue;
            KW_LOG_E(MOD, "poll: %s", strerror(errno));
            return;
        }
        rd_kafka_poll(l->rk, 0);
        for (int k = 0; k < n && !l->quit; k++) {
            if (pfd[k].revents == 0)
                continue;
            if (map[k] == -3) {
                break;                  /* sig_caught ends the loop */
            } else if (map[k] == -2) {
                if (!chan_read(l, &l->in)) {
                    if (l->stdin_mode == STDIN_INTERACTIVE) {
                        KW_LOG_I(MOD, "end of stdin: stopping");
                        l->quit = true;
                    }
                    l->stdin_mode = STDIN_OFF;
                }
            } else if (map[k] == -1) {
                client_accept(l);
            } else if (!chan_read(l, &l->clients[map[k]])) {
                client_close(&l->clients[map[k]]);
            }
        }
    }
    if (sig_caught)
        KW_LOG_I(MOD, "caught signal %d: stopping", (int)sig_caught);
}

/* Client mode (--control PATH --send COMMAND): send one command to a
 * running instance, print its answer, exit 0 for "ok", 1 otherwise. For
 * scripts on machines without nc/socat. Waits at most 30 s. */
static int send_command(const char *path, const char *command)
{
    struct sockaddr_un sa;
    struct timeval tv = { .tv_sec = 30 };
    char buf[8192], line[LINE_MAX_LEN + 2];
    size_t len = 0;
    ssize_t r;
    int fd, n;

    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(sa.sun_path)) {
        fprintf(stderr, PROG ": %s: %s\n", path, strerror(ENAMETOOLONG));
        return 1;
    }
    strcpy(sa.sun_path, path);
    n = snprintf(line, sizeof(line), "%s\n", command);
    if (n >= (int)sizeof(line)) {
        fprintf(stderr, PROG ": --send: command too long\n");
        return EXIT_USAGE;
    }
    if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0 ||
        connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
        send(fd, line, (size_t)n, MSG_NOSIGNAL) != n || shutdown(fd, SHUT_WR) != 0) {
        fprintf(stderr, PROG ": cannot send to control socket %s: %s\n", path,
                strerror(errno));
        if (fd >= 0)
            close(fd);
        return 1;
    }
    /* The server answers, then sees our end of input and closes. */
    while (len < sizeof(buf) - 1 &&
           ((r = read(fd, buf + len, sizeof(buf) - 1 - len)) > 0 ||
            (r < 0 && errno == EINTR)))
        if (r > 0)
            len += (size_t)r;
    if (len == 0 && r < 0)
        fprintf(stderr, PROG ": no answer from %s: %s\n", path, strerror(errno));
    close(fd);
    buf[len] = '\0';
    fputs(buf, stdout);
    /* The answer is its last line: "ok" (help's text comes before it). */
    return len >= 3 && strcmp(buf + len - 3, "ok\n") == 0 &&
                   (len == 3 || buf[len - 4] == '\n') ? 0 : 1;
}

/* ----------------------------------------------------------- options -- */

static void print_usage(FILE *out)
{
    fprintf(out,
"Usage: " PROG " [--brokers N] [--topic NAME:PARTITIONS[:REPLICATION]]...\n"
"                        [--bootstrap-file PATH] [--control PATH] [--no-stdin]\n"
"                        [--debug]\n"
"       " PROG " --control PATH --send COMMAND\n"
"       " PROG " --help\n"
"\n"
"A local Kafka cluster for tests and demos: librdkafka's mock cluster (%s)\n"
"with N brokers on 127.0.0.1 (ephemeral ports), speaking the Kafka protocol:\n"
"produce, fetch, offsets, consumer groups, idempotent/transactional producers.\n"
"The bootstrap list is the first line of stdout; logs go to stderr.\n"
"\n"
"Options:\n"
"  --brokers N              brokers, ids 1..N (default 3, at most %d)\n"
"  --topic NAME:P[:R]       create topic NAME with P partitions and replication\n"
"                           factor R (default min(N, 3)) at start; repeatable\n"
"  --bootstrap-file PATH    write the bootstrap list there (atomically: temp\n"
"                           file + rename) once listening; removed at exit\n"
"  --control PATH           also take commands on a unix stream socket at PATH\n"
"                           (or nc -U PATH; see --send)\n"
"  --no-stdin               do not read commands from stdin\n"
"  --send COMMAND           client mode: send COMMAND to the instance whose\n"
"                           --control socket is PATH, print the answer, exit 0\n"
"                           for ok and 1 for an error (no nc needed)\n"
"  --debug                  log the mock's debug messages (librdkafka debug=mock)\n"
"  --help                   this text\n"
"\n"
"Commands come one per line from stdin and from each --control connection;\n"
"the answer goes back on the same channel (stdout for stdin). stdin that is a\n"
"terminal, pipe or socket is read until its end, which stops the cluster;\n"
"/dev/null is ignored (so `%s &` keeps running); a regular file is run as\n"
"a script, then the cluster keeps running.\n"
"\n%s"
"\n"
"Differences from a real Kafka cluster:\n"
"  * Retention: each partition keeps at most 5 MiB and 100,000 message sets\n"
"    (producer batches) and silently drops its oldest ones beyond that. Size\n"
"    workloads with enough partitions, or consume while producing, and\n"
"    produce with keys so that partitions fill evenly.\n"
"  * Clients may auto-create topics (4 partitions); create them up front.\n"
"  * `broker down` drops and refuses connections but does not move\n"
"    partition leadership; use `leader` for that.\n"
"  * Nothing persists: all data is in memory and gone at exit.\n"
"\n"
"Stops on SIGINT, SIGTERM or `quit` and exits 0; exits 1 if the cluster\n"
"cannot start, 2 for bad arguments.\n",
            rd_kafka_version_str(), MAX_BROKERS, PROG, help_text);
}

/* Parse NAME:PARTITIONS[:REPLICATION]. */
static bool topic_spec_parse(const char *arg, topic_spec_t *t)
{
    char buf[TOPIC_NAME_MAX + 64], *p1, *p2;
    long v;

    if (strlen(arg) >= sizeof(buf))
        return false;
    strcpy(buf, arg);
    if ((p1 = strchr(buf, ':')) == NULL)
        return false;
    *p1++ = '\0';
    if ((p2 = strchr(p1, ':')) != NULL)
        *p2++ = '\0';
    if (!topic_name_valid(buf) || !parse_int(p1, 1, MAX_PARTITIONS, &v))
        return false;
    snprintf(t->name, sizeof(t->name), "%s", buf);
    t->partitions = (int)v;
    t->replication = 0;
    if (p2 != NULL) {
        if (!parse_int(p2, 1, MAX_BROKERS, &v))
            return false;
        t->replication = (int)v;
    }
    return true;
}

/* Returns 0, EXIT_USAGE after printing why, or -1 for --help (printed). */
static int opts_parse(int argc, char **argv, opts_t *o)
{
    static const struct option longopts[] = {
        { "brokers", required_argument, NULL, 'b' },
        { "topic", required_argument, NULL, 't' },
        { "bootstrap-file", required_argument, NULL, 'f' },
        { "control", required_argument, NULL, 'c' },
        { "no-stdin", no_argument, NULL, 'n' },
        { "send", required_argument, NULL, 's' },
        { "debug", no_argument, NULL, 'd' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    int ch;
    long v;

    o->brokers = 3;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (ch) {
        case 'b':
            if (!parse_int(optarg, 1, MAX_BROKERS, &v))
                return kw_cli_usage_error(PROG, "--brokers: '%s' is not a number in 1..%d",
                                   optarg, MAX_BROKERS);
            o->brokers = (int)v;
            break;
        case 't': {
            topic_spec_t *t = realloc(o->topics, (size_t)(o->ntopics + 1) * sizeof(*t));

            if (t == NULL)
                return kw_cli_usage_error(PROG, "out of memory");
            o->topics = t;
            if (!topic_spec_parse(optarg, &o->topics[o->ntopics]))
                return kw_cli_usage_error(PROG, "--topic: '%s' is not NAME:PARTITIONS[:REPLICATION] "
                                   "(name of [A-Za-z0-9._-], 1..%d partitions)",
                                   optarg, MAX_PARTITIONS);
            for (int i = 0; i < o->ntopics; i++)
                if (strcmp(o->topics[i].name, o->topics[o->ntopics].name) == 0)
                    return kw_cli_usage_error(PROG, "--topic: %s given twice", o->topics[i].name);
            o->ntopics++;
            break;
        }
        case 'f': o->bootstrap_file = optarg; break;
        case 'c': o->control = optarg; break;
        case 'n': o->no_stdin = true; break;
        case 's': o->send = optarg; break;
        case 'd': o->debug = true; break;
        case 'h':
            print_usage(stdout);
            return -1;
        case ':':
            return kw_cli_usage_error(PROG, "%s needs an argument", argv[optind - 1]);
        default:
            return kw_cli_usage_error(PROG, "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return kw_cli_usage_error(PROG, "unexpected argument '%s'", argv[optind]);
    if (o->send != NULL && o->control == NULL)
        return kw_cli_usage_error(PROG, "--send needs --control PATH");
    if (o->send != NULL && strchr(o->send, '\n') != NULL)
        return kw_cli_usage_error(PROG, "--send: one command, without a newline");
    for (int i = 0; i < o->ntopics; i++)
        if (o->topics[i].replication > o->brokers)
            return kw_cli_usage_error(PROG, "--topic %s: replication factor %d exceeds --brokers %d",
                               o->topics[i].name, o->topics[i].replication, o->brokers);
    return 0;
}

int main(int argc, char **argv)
{
    local_t l;
    int rc;

    memset(&l, 0, sizeof(l));
    l.listen_fd = -1;
    l.in.in_fd = STDIN_FILENO;
    l.in.out_fd = STDOUT_FILENO;
    for (int i = 0; i < MAX_CLIENTS; i++)
        l.clients[i].in_fd = l.clients[i].out_fd = -1;

    if ((rc = opts_parse(argc, argv, &l.opts)) != 0) {
        free(l.opts.topics);
        return rc < 0 ? 0 : rc;
    }
    if (l.opts.send != NULL) {
        rc = send_command(l.opts.control, l.opts.send);
        free(l.opts.topics);
        return rc;
    }
    if (l.opts.debug && kw_log_get_level() < KW_LOG_DEBUG)
        kw_log_set_level(KW_LOG_DEBUG);
    if (signals_install() != 0) {
        fprintf(stderr, PROG ": cannot install signal handlers: %s\n", strerror(errno));
        free(l.opts.topics);
        return 1;
    }
    l.stdin_mode = stdin_mode_detect(l.opts.no_stdin);

    rc = local_start(&l) == 0 ? 0 : 1;
    if (rc == 0)
        local_run(&l);
    local_stop(&l);
    free(l.opts.topics);
    if (rc != 0)
        fprintf(stderr, PROG ": cannot start the cluster (see the log above)\n");
    return rc;
}
