/*
 * zk_local.c -- kwal-zk-local: a real ZooKeeper server on loopback for tests
 * and demos, and a tiny client to look at it.
 *
 * DESIGN.md ("Test infrastructure") says the tests run against the real
 * server from Debian's `zookeeper` package. This program starts that server
 * in a directory of its own, waits until it serves, stops it and restarts it
 * on the same port and data (for outage tests):
 *
 *   DIR/zoo.cfg         generated on every start: dataDir=DIR/data,
 *                       clientPort, clientPortAddress=127.0.0.1, tickTime,
 *                       admin.enableServer=false, 4lw.commands.whitelist=*
 *   DIR/data/           snapshots and transaction logs (kept across restarts)
 *   DIR/zookeeper.log   the JVM's stdout and stderr, appended, one marker
 *                       line per start
 *   DIR/zookeeper.pid   the JVM's pid while it runs
 *   DIR/connect         the connect string, 127.0.0.1:PORT
 *
 * `start` picks the port: --port N, else the one of an earlier start in the
 * same DIR (DIR/zoo.cfg), else a free loopback port below the kernel's
 * ephemeral range (FREE_PORT_LO..FREE_PORT_HI, tried at random until one
 * binds; a small race that a failed start reports). Not from the ephemeral
 * range: there any process binding port 0 (a Kafka mock broker, any
 * client) may take the port while the server is down for a `restart`,
 * which then cannot come back. Nor from the local Kafka launcher's range
 * (kwalh/kafka.py: 26000-31999), for the same reason. It then runs
 *
 *   java -cp CLASSPATH org.apache.zookeeper.server.quorum.QuorumPeerMain DIR/zoo.cfg
 *
 * in a new session (setsid) with stdin from /dev/null. The classpath is the
 * one Debian's zkEnv.sh uses (/usr/share/java/zookeeper.jar, whose manifest
 * Class-Path names its dependencies under /usr/share/java) plus
 * zookeeper-jute and slf4j-api, and slf4j-simple when present, so the server
 * logs to its stderr, i.e. DIR/zookeeper.log (without a binding slf4j logs
 * nothing). KWAL_ZK_CLASSPATH replaces that classpath, JAVA the java binary
 * (default /usr/bin/java) and JVMFLAGS (split on blanks) adds JVM options, as
 * in zkServer.sh.
 *
 * Readiness: until the deadline (--timeout, default 30 s) it polls every
 * 50 ms: if the JVM exited, it fails at once; if the port accepts a TCP
 * connection, a ZooKeeper C-client session must connect and zoo_exists("/")
 * must succeed. Only then the connect string goes to stdout and DIR/connect.
 * A start that fails kills the JVM it started, and prints one line
 * "kwal-zk-local: <reason>" followed by the tail of DIR/zookeeper.log.
 *
 * A pid is only trusted (by stop, status, start) when /proc/PID/cmdline ends
 * with this DIR's zoo.cfg and the process is not a zombie, so a stale pid file
 * never gets another process killed.
 *
 * get, ls and create talk to any server (--connect HOST:PORT[/chroot]) with
 * the C client, whose own log is dropped unless KWAL_ZK_CLIENT_LOG is set.
 *
 * Exit status: 0 success; 1 failure (one line on stderr), `status` when not
 * serving, `get`/`ls` on a missing node; 2 bad arguments.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <zookeeper/zookeeper.h>

#include "kw_file.h"

#define PROG "kwal-zk-local"

#define EXIT_FAIL  1
#define EXIT_USAGE 2

#define MAIN_CLASS  "org.apache.zookeeper.server.quorum.QuorumPeerMain"
#define JAVA_DIR    "/usr/share/java"
#define LOG_TAIL    20
#define POLL_MS     50
#define MAX_JVM_ARGS 64

/* Options of all commands; which ones a command takes is checked in main. */
typedef struct zl_opts {
    const char *dir;
    const char *connect;
    int         port;        /* 0: choose */
    int         tick_ms;
    long        timeout_ms;  /* -1: the command's default */
    const char *args[2];     /* positional: PATH [DATA] */
    int         nargs;
} zl_opts_t;

/* Paths of the files in DIR, made absolute by zl_paths(). */
typedef struct zl_paths {
    char dir[PATH_MAX];
    char cfg[PATH_MAX];
    char data[PATH_MAX];
    char log[PATH_MAX];
    char pid[PATH_MAX];
    char connect[PATH_MAX];
} zl_paths_t;

/* ------------------------------------------------------------------ */
/* Messages                                                            */
/* ------------------------------------------------------------------ */

static void error_msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void error_msg(const char *fmt, ...)
{
    char msg[2048];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    fflush(stdout);
    fprintf(stderr, PROG ": %s\n", msg);
}

static const char USAGE[] =
    "Usage: " PROG " start   --dir DIR [--port N] [--tick-ms N] [--timeout SEC]\n"
    "       " PROG " stop    --dir DIR [--timeout SEC]\n"
    "       " PROG " restart --dir DIR [--tick-ms N] [--timeout SEC]\n"
    "       " PROG " status  --dir DIR [--timeout SEC]\n"
    "       " PROG " get     --connect HOST:PORT [--timeout SEC] PATH\n"
    "       " PROG " ls      --connect HOST:PORT [--timeout SEC] PATH\n"
    "       " PROG " create  --connect HOST:PORT [--timeout SEC] PATH DATA\n"
    "       " PROG " --help\n";

static void print_help(void)
{
    fputs(USAGE, stdout);
    fputs("\n"
          "Runs Debian's ZooKeeper server on a loopback port for tests and demos.\n"
          "\n"
          "  start    write DIR/zoo.cfg, start the server detached (log in\n"
          "           DIR/zookeeper.log, pid in DIR/zookeeper.pid), wait until a\n"
          "           client session works (default 30 s), print 127.0.0.1:PORT\n"
          "           and write it to DIR/connect. The port: --port, else the\n"
          "           one of an earlier start in DIR, else a free one.\n"
          "  stop     SIGTERM the server, SIGKILL after --timeout (default 10 s);\n"
          "           exit 0 if it was not running\n"
          "  restart  stop, then start on the same port with the same data\n"
          "  status   print the connect string and exit 0 if the server in DIR\n"
          "           serves, exit 1 otherwise (default wait 5 s)\n"
          "  get      print a znode's data (and a newline)\n"
          "  ls       print a znode's children, sorted, one per line\n"
          "  create   create a persistent znode (and any missing parents,\n"
          "           empty) holding DATA\n"
          "\n"
          "--tick-ms sets tickTime (default 2000; sessions may last 2 to 20 ticks).\n"
          "Environment: JAVA (default /usr/bin/java), JVMFLAGS, KWAL_ZK_CLASSPATH,\n"
          "KWAL_ZK_CLIENT_LOG=1 (show the C client's log on stderr).\n"
          "Exit status: 0 success; 1 failure, not serving, or no such node;\n"
          "2 bad arguments.\n", stdout);
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    fflush(stdout);
    fprintf(stderr, PROG ": %s\n%s", msg, USAGE);
    return EXIT_USAGE;
}

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */
/* ------------------------------------------------------------------ */

static long now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000 };

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Formats into buf; fails (returns -1 with a message) when it does not fit. */
static int fmt_path(char *buf, size_t size, const char *dir, const char *name)
{
    int n = snprintf(buf, size, "%s/%s", dir, name);

    if (n < 0 || (size_t)n >= size) {
        error_msg("path too long: %s/%s", dir, name);
        return -1;
    }
    return 0;
}

/* mkdir -p */
static int make_dirs(const char *path)
{
    char tmp[PATH_MAX];
    size_t len = strlen(path);

    if (len == 0 || len >= sizeof(tmp)) {
        error_msg("bad directory '%s'", path);
        return -1;
    }
    memcpy(tmp, path, len + 1);
    for (char *p = tmp + 1; ; p++) {
        if (*p == '/' || *p == '\0') {
            char c = *p;

            *p = '\0';
            if (mkdir(tmp, 0755) != 0 && errno != EEXIST) {
                error_msg("cannot create directory %s: %s", tmp, strerror(errno));
                return -1;
            }
            if (c == '\0')
                break;
            *p = c;
        }
    }
    return 0;
}

static int zl_paths(const char *dir, int create, zl_paths_t *p)
{
    if (create && make_dirs(dir) != 0)
        return -1;
    if (realpath(dir, p->dir) == NULL) {
        error_msg("%s: %s", dir, strerror(errno));
        return -1;
    }
    if (fmt_path(p->cfg, sizeof(p->cfg), p->dir, "zoo.cfg") != 0 ||
        fmt_path(p->data, sizeof(p->data), p->dir, "data") != 0 ||
        fmt_path(p->log, sizeof(p->log), p->dir, "zookeeper.log") != 0 ||
        fmt_path(p->pid, sizeof(p->pid), p->dir, "zookeeper.pid") != 0 ||
        fmt_path(p->connect, sizeof(p->connect), p->dir, "connect") != 0)
        return -1;
    return 0;
}

/* Reads up to size-1 bytes of a small file; -1 (errno set) if unreadable. */
static ssize_t read_small(const char *path, char *buf, size_t size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    size_t got = 0;

    if (fd < 0)
        return -1;
    while (got + 1 < size) {
        ssize_t n = read(fd, buf + got, size - 1 - got);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    buf[got] = '\0';
    return (ssize_t)got;
}

/* Writes a whole file under a temporary name and renames it into place. */
static int write_file(const char *path, const char *text)
{
    char why[512];

    if (kw_file_replace(path, text, strlen(text), why, sizeof(why)) != 0) {
        error_msg("%s", why);
        return -1;
    }
    return 0;
}

/* Prints the last lines the server wrote to its log since offset from. */
static void print_log_tail(const char *log, long from)
{
    static char buf[16384];
    FILE *f = fopen(log, "r");
    long size;
    size_t n;
    const char *p;
    int lines = 0;

    if (f == NULL) {
        fprintf(stderr, "(no log: %s: %s)\n", log, strerror(errno));
        return;
    }
    fseek(f, 0, SEEK_END);
    size = ftell(f);
    if (size - from > (long)sizeof(buf) - 1)
        from = size - (long)sizeof(buf) + 1;
    if (from < 0 || from > size)
        from = 0;
    fseek(f, from, SEEK_SET);
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    p = buf + n;
    if (p > buf && p[-1] == '\n')
        p--;
    while (p > buf && lines < LOG_TAIL) {
        p--;
        if (*p == '\n')
            lines++;
    }
    if (*p == '\n')
        p++;
    fprintf(stderr, "--- last lines of %s:\n%s", log, *p != '\0' ? p : "(nothing)\n");
    if (n > 0 && buf[n - 1] != '\n')
        fputc('\n', stderr);
}

/* ------------------------------------------------------------------ */
/* The server process                                                  */
/* ------------------------------------------------------------------ */

/*
 * True if pid is a live (not zombie) process whose last argument is cfg:
 * the server this DIR started, not whatever reuses a stale pid.
 */
static int is_our_server(pid_t pid, const char *cfg)
{
    static char buf[65536];
    char path[64], *last, *end;
    ssize_t n;

    if (pid <= 0 || kill(pid, 0) != 0)
        return 0;
    snprintf(path, sizeof(path), "/proc/%ld/stat", (long)pid);
    n = read_small(path, buf, sizeof(buf));
    if (n > 0) {
        const char *rp = strrchr(buf, ')');

        if (rp != NULL && (rp[2] == 'Z' || rp[2] == 'X'))
            return 0;
    }
    snprintf(path, sizeof(path), "/proc/%ld/cmdline", (long)pid);
    n = read_small(path, buf, sizeof(buf));
    if (n <= 0)
        return 0;
    end = buf + n;
    if (end[-1] == '\0')
        end--;
    *end = '\0';
    last = memrchr(buf, '\0', (size_t)(end - buf));
    last = last != NULL ? last + 1 : buf;
    return strcmp(last, cfg) == 0;
}

/* The pid in DIR/zookeeper.pid if it is our running server, else 0. */
static pid_t running_pid(const zl_paths_t *p)
{
    char buf[32];
    long v;

    if (read_small(p->pid, buf, sizeof(buf)) <= 0)
        return 0;
    v = strtol(buf, NULL, 10);
    if (v <= 0 || v > INT_MAX)
        return 0;
    return is_our_server((pid_t)v, p->cfg) ? (pid_t)v : 0;
}

/* The clientPort of an existing DIR/zoo.cfg, or 0. */
static int cfg_port(const zl_paths_t *p)
{
    char buf[8192];
    const char *s;

    if (read_small(p->cfg, buf, sizeof(buf)) <= 0)
        return 0;
    for (s = buf; s != NULL; s = strchr(s, '\n')) {
        if (*s == '\n')
            s++;
        if (strncmp(s, "clientPort=", 11) == 0) {
            long v = strtol(s + 11, NULL, 10);

            return v > 0 && v < 65536 ? (int)v : 0;
        }
    }
    return 0;
}

static int tcp_accepts(int port);

/* Below Linux's default ephemeral range (32768..60999). */
#define FREE_PORT_LO 20000
#define FREE_PORT_HI 26000

static int free_port(void)
{
    struct sockaddr_in sa;
    unsigned seed = (unsigned)getpid() ^ (unsigned)time(NULL);

    for (int tries = 0; tries < 200; tries++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), ok;
        int port = FREE_PORT_LO + (int)(rand_r(&seed) % (FREE_PORT_HI - FREE_PORT_LO));

        if (fd < 0) {
            error_msg("socket: %s", strerror(errno));
            return -1;
        }
        memset(&sa, 0, sizeof(sa));
        sa.sin_family = AF_INET;
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        sa.sin_port = htons((uint16_t)port);
        ok = bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
        close(fd);
        if (ok && !tcp_accepts(port))
            return port;
    }
    error_msg("cannot find a free loopback port in %d..%d", FREE_PORT_LO, FREE_PORT_HI - 1);
    return -1;
}

/* True if 127.0.0.1:port accepts a TCP connection right now. */
static int tcp_accepts(int port)
{
    struct sockaddr_in sa;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), ok;

    if (fd < 0)
        return 0;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons((uint16_t)port);
    ok = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
    close(fd);
    return ok;
}

static int write_cfg(const zl_paths_t *p, int port, int tick_ms)
{
    char text[4 * PATH_MAX];

    snprintf(text, sizeof(text),
             "# Generated by " PROG " on every start; edits are lost.\n"
             "tickTime=%d\n"
             "initLimit=10\n"
             "syncLimit=5\n"
             "dataDir=%s\n"
             "clientPort=%d\n"
             "clientPortAddress=127.0.0.1\n"
             "maxClientCnxns=0\n"
             "admin.enableServer=false\n"
             "4lw.commands.whitelist=*\n"
             "snapshot.trust.empty=true\n",
             tick_ms, p->data, port);
    return write_file(p->cfg, text);
}

/* Appends JAVA_DIR/name to the classpath if the jar exists. */
static void cp_add(char *cp, size_t size, const char *name)
{
    char jar[PATH_MAX];
    size_t len = strlen(cp);

    snprintf(jar, sizeof(jar), JAVA_DIR "/%s", name);
    if (access(jar, R_OK) != 0)
        return;
    snprintf(cp + len, size - len, "%s%s", len > 0 ? ":" : "", jar);
}

static void build_classpath(char *cp, size_t size)
{
    const char *env = getenv("KWAL_ZK_CLASSPATH");

    if (env != NULL && *env != '\0') {
        snprintf(cp, size, "%s", env);
        return;
    }
    cp[0] = '\0';
    cp_add(cp, size, "zookeeper.jar");
    cp_add(cp, size, "zookeeper-jute.jar");
    cp_add(cp, size, "slf4j-api.jar");
    cp_add(cp, size, "slf4j-simple.jar");
}

/*
 * Forks the JVM in a session of its own, output appended to the log.
 * Returns its pid, or -1 with a message.
 */
static pid_t spawn_server(const zl_paths_t *p)
{
    static char cp[8192], logdir[PATH_MAX + 32], jvmflags[4096];
    const char *java = getenv("JAVA"), *flags = getenv("JVMFLAGS");
    char *argv[MAX_JVM_ARGS + 16];
    int argc = 0, logfd, devnull;
    pid_t pid;
    time_t t = time(NULL);
    char stamp[64];

    if (java == NULL || *java == '\0')
        java = "/usr/bin/java";
    build_classpath(cp, sizeof(cp));
    snprintf(logdir, sizeof(logdir), "-Dzookeeper.log.dir=%s", p->dir);

    argv[argc++] = (char *)java;
    argv[argc++] = "-Xms32m";
    argv[argc++] = "-Xmx512m";
    argv[argc++] = "-XX:+UseSerialGC";
    argv[argc++] = "-Dorg.slf4j.simpleLogger.showDateTime=true";
    argv[argc++] = "-Dorg.slf4j.simpleLogger.dateTimeFormat=yyyy-MM-dd HH:mm:ss.SSS";
    argv[argc++] = "-Dzookeeper.jmx.log4j.disable=true";
    argv[argc++] = "-Dzookeeper.admin.enableServer=false";
    argv[argc++] = logdir;
    if (flags != NULL) {
        snprintf(jvmflags, sizeof(jvmflags), "%s", flags);
        for (char *tok = strtok(jvmflags, " \t\n"); tok != NULL && argc < MAX_JVM_ARGS;
             tok = strtok(NULL, " \t\n"))
            argv[argc++] = tok;
    }
    argv[argc++] = "-cp";
    argv[argc++] = cp;
    argv[argc++] = MAIN_CLASS;
    argv[argc++] = (char *)p->cfg;
    argv[argc] = NULL;

    logfd = open(p->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (logfd < 0) {
        error_msg("cannot open %s: %s", p->log, strerror(errno));
        return -1;
    }
    strftime(stamp, sizeof(stamp), "%Y-%m-%d %H:%M:%S", localtime(&t));
    dprintf(logfd, "=== " PROG " start %s:", stamp);
    for (int i = 0; i < argc; i++)
        dprintf(logfd, " %s", argv[i]);
    dprintf(logfd, "\n");
    devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (devnull < 0) {
        error_msg("cannot open /dev/null: %s", strerror(errno));
        close(logfd);
        return -1;
    }
    fflush(NULL);
    pid = fork();
    if (pid < 0) {
        error_msg("fork: %s", strerror(errno));
        close(logfd);
        close(devnull);
        return -1;
    }
    if (pid == 0) {
        setsid();
        if (dup2(devnull, 0) < 0 || dup2(logfd, 1) < 0 || dup2(logfd, 2) < 0)
            _exit(127);
        if (chdir(p->dir) != 0)
            _exit(127);
        signal(SIGPIPE, SIG_DFL);
        execv(java, argv);
        dprintf(2, PROG ": cannot run %s: %s\n", java, strerror(errno));
        _exit(127);
    }
    close(logfd);
    close(devnull);
    return pid;
}

/* Sends sig, then waits up to ms for the server to be gone. */
static int signal_and_wait(pid_t pid, const char *cfg, int sig, long ms)
{
    long deadline = now_ms() + ms;

    if (kill(pid, sig) != 0 && errno != ESRCH)
        return -1;
    for (;;) {
        waitpid(pid, NULL, WNOHANG);      /* reaps it if it is our child */
        if (!is_our_server(pid, cfg))
            return 0;
        if (now_ms() >= deadline)
            return -1;
        sleep_ms(POLL_MS);
    }
}

/* Stops the server whose pid is given; 0 once it is gone. */
static int kill_server(pid_t pid, const char *cfg, long term_ms)
{
    if (signal_and_wait(pid, cfg, SIGTERM, term_ms) == 0)
        return 0;
    error_msg("pid %ld ignored SIGTERM for %ld ms, sending SIGKILL", (long)pid, term_ms);
    return signal_and_wait(pid, cfg, SIGKILL, 5000);
}

/* ------------------------------------------------------------------ */
/* The ZooKeeper C client                                              */
/* ------------------------------------------------------------------ */

static void client_log(const char *message)
{
    if (getenv("KWAL_ZK_CLIENT_LOG") != NULL)
        fprintf(stderr, "zookeeper: %s\n", message);
}

static void no_watch(zhandle_t *zh, int type, int state, const char *path, void *ctx)
{
    (void)zh;
    (void)type;
    (void)state;
    (void)path;
    (void)ctx;
}

/*
 * Opens a session with hp within ms. Returns the handle, or NULL with the
 * reason in err.
 */
static zhandle_t *zk_connect(const char *hp, long ms, char *err, size_t errsize)
{
    long deadline = now_ms() + ms;
    zhandle_t *zh;
    int state;

    zh = zookeeper_init2(hp, no_watch, 10000, NULL, NULL, 0, client_log);
    if (zh == NULL) {
        snprintf(err, errsize, "cannot parse or resolve connect string '%s'", hp);
        return NULL;
    }
    while ((state = zoo_state(zh)) != ZOO_CONNECTED_STATE) {
        if (state == ZOO_EXPIRED_SESSION_STATE || state == ZOO_AUTH_FAILED_STATE) {
            snprintf(err, errsize, "session with %s failed (%s)", hp,
                     state == ZOO_AUTH_FAILED_STATE ? "authentication" : "expired");
            zookeeper_close(zh);
            return NULL;
        }
        if (now_ms() >= deadline) {
            snprintf(err, errsize, "no ZooKeeper session with %s within %ld ms", hp, ms);
            zookeeper_close(zh);
            return NULL;
        }
        sleep_ms(10);
    }
    return zh;
}

/* 0 if a session with hp connects within ms and zoo_exists("/") works. */
static int zk_probe(const char *hp, long ms, char *err, size_t errsize)
{
    zhandle_t *zh = zk_connect(hp, ms, err, errsize);
    struct Stat st;
    int rc;

    if (zh == NULL)
        return -1;
    rc = zoo_exists(zh, "/", 0, &st);
    zookeeper_close(zh);
    if (rc != ZOK) {
        snprintf(err, errsize, "exists / on %s: %s", hp, zerror(rc));
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* Commands                                                            */
/* ------------------------------------------------------------------ */

static int cmd_start(const zl_opts_t *o)
{
    zl_paths_t p;
    pid_t pid;
    int port, status;
    struct stat lst;
    long log_from, t0, deadline, timeout = o->timeout_ms >= 0 ? o->timeout_ms : 30000;
    char hp[64], err[512], pidtext[32], connect_text[80];

    if (zl_paths(o->dir, 1, &p) != 0)
        return EXIT_FAIL;
    pid = running_pid(&p);
    if (pid != 0) {
        error_msg("already running in %s (pid %ld, port %d)", p.dir, (long)pid, cfg_port(&p));
        return EXIT_FAIL;
    }
    port = o->port > 0 ? o->port : cfg_port(&p);
    if (port <= 0 && (port = free_port()) < 0)
        return EXIT_FAIL;
    snprintf(hp, sizeof(hp), "127.0.0.1:%d", port);
    if (tcp_accepts(port)) {
        error_msg("port %d is already in use on 127.0.0.1", port);
        return EXIT_FAIL;
    }
    if (make_dirs(p.data) != 0 || write_cfg(&p, port, o->tick_ms) != 0)
        return EXIT_FAIL;
    unlink(p.connect);
    log_from = stat(p.log, &lst) == 0 ? (long)lst.st_size : 0;

    t0 = now_ms();
    deadline = t0 + timeout;
    pid = spawn_server(&p);
    if (pid < 0)
        return EXIT_FAIL;
    snprintf(pidtext, sizeof(pidtext), "%ld\n", (long)pid);
    if (write_file(p.pid, pidtext) != 0)
        goto fail_kill;

    for (;;) {
        pid_t w = waitpid(pid, &status, WNOHANG);

        if (w == pid) {
            if (WIFEXITED(status))
                error_msg("ZooKeeper exited with status %d during start-up (%s)",
                          WEXITSTATUS(status), p.dir);
            else
                error_msg("ZooKeeper died of signal %d during start-up (%s)",
                          WIFSIGNALED(status) ? WTERMSIG(status) : 0, p.dir);
            unlink(p.pid);
            print_log_tail(p.log, log_from);
            return EXIT_FAIL;
        }
        if (tcp_accepts(port)) {
            long left = deadline - now_ms();

            if (zk_probe(hp, left > 5000 ? 5000 : left > 100 ? left : 100, err,
                         sizeof(err)) == 0)
                break;
        } else {
            snprintf(err, sizeof(err), "127.0.0.1:%d accepts no connection", port);
        }
        if (now_ms() >= deadline) {
            error_msg("ZooKeeper did not serve within %ld ms (%s); stopping it", timeout, err);
            goto fail_kill;
        }
        sleep_ms(POLL_MS);
    }

    snprintf(connect_text, sizeof(connect_text), "%s\n", hp);
    if (write_file(p.connect, connect_text) != 0)
        goto fail_kill;
    if (getenv("KWAL_ZK_VERBOSE") != NULL)
        fprintf(stderr, PROG ": pid %ld serving on %s after %ld ms\n", (long)pid, hp,
                now_ms() - t0);
    printf("%s\n", hp);
    return fflush(stdout) == 0 ? 0 : EXIT_FAIL;

fail_kill:
    kill_server(pid, p.cfg, 5000);
    unlink(p.pid);
    print_log_tail(p.log, log_from);
    return EXIT_FAIL;
}

static int cmd_stop(const zl_opts_t *o)
{
    zl_paths_t p;
    pid_t pid;
    long timeout = o->timeout_ms >= 0 ? o->timeout_ms : 10000;

    if (access(o->dir, F_OK) != 0 && errno == ENOENT)
        return 0;                          /* nothing was ever started there */
    if (zl_paths(o->dir, 0, &p) != 0)
        return EXIT_FAIL;
    pid = running_pid(&p);
    if (pid != 0 && kill_server(pid, p.cfg, timeout) != 0) {
        error_msg("pid %ld in %s survived SIGKILL", (long)pid, p.dir);
        return EXIT_FAIL;
    }
    unlink(p.pid);
    return 0;
}

static int cmd_restart(const zl_opts_t *o)
{
    zl_paths_t p;
    zl_opts_t start = *o, stop = *o;

    if (zl_paths(o->dir, 0, &p) != 0)
        return EXIT_FAIL;
    start.port = cfg_port(&p);
    if (start.port <= 0) {
        error_msg("nothing to restart: %s has no zoo.cfg from an earlier start", p.dir);
        return EXIT_FAIL;
    }
    stop.timeout_ms = -1;                  /* --timeout is the start's wait */
    if (cmd_stop(&stop) != 0)
        return EXIT_FAIL;
    return cmd_start(&start);
}

static int cmd_status(const zl_opts_t *o)
{
    zl_paths_t p;
    pid_t pid;
    int port;
    char hp[64], err[512];

    if (zl_paths(o->dir, 0, &p) != 0)
        return EXIT_FAIL;
    pid = running_pid(&p);
    if (pid == 0) {
        error_msg("not running in %s", p.dir);
        return EXIT_FAIL;
    }
    port = cfg_port(&p);
    snprintf(hp, sizeof(hp), "127.0.0.1:%d", port);
    if (port <= 0 || !tcp_accepts(port)) {
        error_msg("pid %ld in %s does not listen on %s", (long)pid, p.dir, hp);
        return EXIT_FAIL;
    }
    if (zk_probe(hp, o->timeout_ms >= 0 ? o->timeout_ms : 5000, err, sizeof(err)) != 0) {
        error_msg("pid %ld in %s does not serve: %s", (long)pid, p.dir, err);
        return EXIT_FAIL;
    }
    printf("%s\n", hp);
    return fflush(stdout) == 0 ? 0 : EXIT_FAIL;
}

static int node_error(const char *op, const char *path, int rc)
{
    error_msg("%s %s: %s", op, path, rc == ZNONODE ? "no such node" : zerror(rc));
    return EXIT_FAIL;
}

static int cmd_get(zhandle_t *zh, const char *path)
{
    for (int tries = 0; tries < 5; tries++) {
        struct Stat st;
        char *buf;
        int len, rc = zoo_exists(zh, path, 0, &st);

        if (rc != ZOK)
            return node_error("get", path, rc);
        len = st.dataLength + 1;
        buf = malloc((size_t)len);
        if (buf == NULL) {
            error_msg("out of memory");
            return EXIT_FAIL;
        }
        /* len comes back as the bytes copied (-1: no data), st as the
         * node's stat now: fewer bytes than the node holds means a larger
         * write raced and the copy is cut short -- read again */
        rc = zoo_get(zh, path, 0, buf, &len, &st);
        if (rc == ZOK && (len < 0 ? 0 : len) == st.dataLength) {
            if (len > 0)
                fwrite(buf, 1, (size_t)len, stdout);
            putchar('\n');
            free(buf);
            return fflush(stdout) == 0 ? 0 : EXIT_FAIL;
        }
        free(buf);
        if (rc != ZOK)
            return node_error("get", path, rc);
    }
    error_msg("get %s: data keeps changing size", path);
    return EXIT_FAIL;
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int cmd_ls(zhandle_t *zh, const char *path)
{
    struct String_vector kids = { 0, NULL };
    int rc = zoo_get_children(zh, path, 0, &kids);

    if (rc != ZOK)
        return node_error("ls", path, rc);
    if (kids.count > 0)
        qsort(kids.data, (size_t)kids.count, sizeof(kids.data[0]), compare_names);
    for (int i = 0; i < kids.count; i++)
        printf("%s\n", kids.data[i]);
    deallocate_String_vector(&kids);
    return fflush(stdout) == 0 ? 0 : EXIT_FAIL;
}

static int cmd_create(zhandle_t *zh, const char *path, const char *data)
{
    char parent[1024];
    size_t len = strlen(path);
    int rc;

    if (len >= sizeof(parent)) {
        error_msg("create: path too long");
        return EXIT_FAIL;
    }
    /* Missing parents first, empty (mkdir -p). */
    memcpy(parent, path, len + 1);
    for (char *s = strchr(parent + 1, '/'); s != NULL; s = strchr(s + 1, '/')) {
        *s = '\0';
        rc = zoo_create(zh, parent, NULL, -1, &ZOO_OPEN_ACL_UNSAFE, ZOO_PERSISTENT, NULL, 0);
        if (rc != ZOK && rc != ZNODEEXISTS)
            return node_error("create", parent, rc);
        *s = '/';
    }
    rc = zoo_create(zh, path, data, (int)strlen(data), &ZOO_OPEN_ACL_UNSAFE, ZOO_PERSISTENT,
                    NULL, 0);
    if (rc != ZOK)
        return node_error("create", path, rc);
    return 0;
}

static int run_client(const char *cmd, const zl_opts_t *o)
{
    char err[512];
    zhandle_t *zh;
    int rc;

    zh = zk_connect(o->connect, o->timeout_ms >= 0 ? o->timeout_ms : 10000, err, sizeof(err));
    if (zh == NULL) {
        error_msg("%s", err);
        return EXIT_FAIL;
    }
    if (strcmp(cmd, "get") == 0)
        rc = cmd_get(zh, o->args[0]);
    else if (strcmp(cmd, "ls") == 0)
        rc = cmd_ls(zh, o->args[0]);
    else
        rc = cmd_create(zh, o->args[0], o->args[1]);
    zookeeper_close(zh);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Arguments                                                           */
/* ------------------------------------------------------------------ */

/* Option flags, to say which options a command takes. */
enum { O_DIR = 1, O_PORT = 2, O_TICK = 4, O_TIMEOUT = 8, O_CONNECT = 16 };

static const struct zl_cmd {
    const char *name;
    unsigned    opts;
    int         nargs;
} CMDS[] = {
    { "start", O_DIR | O_PORT | O_TICK | O_TIMEOUT, 0 },
    { "stop", O_DIR | O_TIMEOUT, 0 },
    { "restart", O_DIR | O_TICK | O_TIMEOUT, 0 },
    { "status", O_DIR | O_TIMEOUT, 0 },
    { "get", O_CONNECT | O_TIMEOUT, 1 },
    { "ls", O_CONNECT | O_TIMEOUT, 1 },
    { "create", O_CONNECT | O_TIMEOUT, 2 },
};

static int parse_long(const char *opt, const char *s, long lo, long hi, long *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi)
        return usage_error("%s: '%s' is not a number from %ld to %ld", opt, s, lo, hi);
    *out = v;
    return 0;
}

int main(int argc, char **argv)
{
    const struct zl_cmd *cmd = NULL;
    zl_opts_t o = { .tick_ms = 2000, .timeout_ms = -1 };
    long v;

    if (argc < 2)
        return usage_error("missing command");
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        print_help();
        return 0;
    }
    for (size_t i = 0; i < sizeof(CMDS) / sizeof(CMDS[0]); i++)
        if (strcmp(argv[1], CMDS[i].name) == 0)
            cmd = &CMDS[i];
    if (cmd == NULL)
        return usage_error("unknown command '%s'", argv[1]);

    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *val = NULL;
        unsigned flag = 0;

        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            print_help();
            return 0;
        }
        if (a[0] != '-' || strcmp(a, "-") == 0) {
            if (o.nargs >= cmd->nargs)
                return usage_error("%s: unexpected argument '%s'", cmd->name, a);
            o.args[o.nargs++] = a;
            continue;
        }
        if (strcmp(a, "--dir") == 0)
            flag = O_DIR;
        else if (strcmp(a, "--port") == 0)
            flag = O_PORT;
        else if (strcmp(a, "--tick-ms") == 0)
            flag = O_TICK;
        else if (strcmp(a, "--timeout") == 0)
            flag = O_TIMEOUT;
        else if (strcmp(a, "--connect") == 0)
            flag = O_CONNECT;
        if (flag == 0 || (cmd->opts & flag) == 0)
            return usage_error("%s: unknown option '%s'", cmd->name, a);
        if (i + 1 >= argc)
            return usage_error("%s: %s needs a value", cmd->name, a);
        val = argv[++i];
        switch (flag) {
        case O_DIR:
            if (*val == '\0')
                return usage_error("%s: --dir is empty", cmd->name);
            o.dir = val;
            break;
        case O_CONNECT:
            if (*val == '\0')
                return usage_error("%s: --connect is empty", cmd->name);
            o.connect = val;
            break;
        case O_PORT:
            if (parse_long(a, val, 1, 65535, &v) != 0)
                return EXIT_USAGE;
            o.port = (int)v;
            break;
        case O_TICK:
            if (parse_long(a, val, 10, 60000, &v) != 0)
                return EXIT_USAGE;
            o.tick_ms = (int)v;
            break;
        default:
            if (parse_long(a, val, 0, 3600, &v) != 0)
                return EXIT_USAGE;
            o.timeout_ms = v * 1000;
            break;
        }
    }
    if ((cmd->opts & O_DIR) && o.dir == NULL)
        return usage_error("%s: --dir DIR is required", cmd->name);
    if ((cmd->opts & O_CONNECT) && o.connect == NULL)
        return usage_error("%s: --connect HOST:PORT is required", cmd->name);
    if (o.nargs < cmd->nargs)
        return usage_error("%s: missing %s", cmd->name, o.nargs == 0 ? "PATH" : "DATA");
    if (cmd->nargs > 0 && o.args[0][0] != '/')
        return usage_error("%s: PATH must start with '/': '%s'", cmd->name, o.args[0]);

    signal(SIGPIPE, SIG_IGN);
    zoo_set_debug_level(getenv("KWAL_ZK_CLIENT_LOG") != NULL ? ZOO_LOG_LEVEL_DEBUG
                                                            : ZOO_LOG_LEVEL_ERROR);
    if (strcmp(cmd->name, "start") == 0)
        return cmd_start(&o);
    if (strcmp(cmd->name, "stop") == 0)
        return cmd_stop(&o);
    if (strcmp(cmd->name, "restart") == 0)
        return cmd_restart(&o);
    if (strcmp(cmd->name, "status") == 0)
        return cmd_status(&o);
    return run_client(cmd->name, &o);
}
