/*
 * wal_bench.c -- kwal-bench-wal: what the WAL costs next to the disk it
 * writes to.
 *
 * For every combination of payload size (default 64K, 256K, 1M, 4M), replica
 * count (1, 3) and concurrent appenders (1, 4) the program runs two cases on
 * the same directory, one right after the other so a noisy machine affects
 * both alike:
 *
 *   raw  The same number of threads append the same payloads to one plain
 *        file: each reserves the next offset, pwrite()s there, fdatasync()s.
 *        This is the cheapest durable append the file system offers.
 *   WAL  A fresh WAL with that many replica directories (write quorum: the
 *        default majority) takes the same payloads through kw_wal_append()
 *        without compression (the payloads are random, hence incompressible).
 *
 * For each it prints throughput (payload MB/s, MB = 10^6 bytes), append
 * latency p50/p99, the WAL's fdatasyncs per append per replica (kw_wal_stats:
 * fsyncs / appends / replicas_healthy; below 1 means group commit shares
 * fsyncs between appenders) and WAL MB/s / raw MB/s. The targets, checked
 * and flagged in the table: with payloads >= 256 KiB and one replica the WAL
 * reaches >= 0.85x raw; with R > 1 replicas it reaches >= 0.9/R x raw (0.30
 * for 3: raw writes one copy, the WAL R copies to the same disk, so 1/R is
 * the bound); with 4 appenders it issues < 0.5 fsyncs per append per
 * replica.
 *
 * With --interleave MB the two take turns instead, about MB MiB each, both open
 * all along and served by the same appender threads: on a shared machine a
 * whole raw run and the whole WAL run after it can meet very different load,
 * and ratios of single runs then scatter (the same case from 0.4x to 1.6x
 * here); in turns, slow spells fall on both more evenly. It narrows the
 * scatter, it does not remove it (here the typical difference between two
 * invocations of a case: 20% single, 15% with --repeat 3, 12% with
 * --repeat 3 --interleave 16), so repeat anyway.
 *
 * Each case gets its own directory BASE/<size>-r<replicas>-a<appenders>/
 * (raw.dat, wal-0, wal-1, ...), removed after the case unless --keep, which
 * leaves the WAL directories (tests use them as sample WALs).
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kw_conf.h"
#include "kw_log.h"
#include "wal.h"

#define MAX_LIST 16
#define MAX_APPENDERS 64
#define MAX_REPEAT 9

typedef struct bench_opts {
    const char *base;                 /* NULL: mkdtemp */
    uint64_t    mb;                   /* MiB of payload per case */
    uint64_t    sizes[MAX_LIST];
    int         nsizes;
    int         replicas[MAX_LIST];
    int         nreplicas;
    int         appenders[MAX_LIST];
    int         nappenders;
    uint64_t    segment_bytes;        /* 0: the WAL's default */
    int         repeat;               /* raw+WAL pairs per case; medians reported */
    uint64_t    interleave;           /* 0: raw run, then WAL run; else turns of
                                       * about this many MiB each */
    int         keep;
} bench_opts_t;

/* One run (raw or WAL) of one case. */
typedef struct run_result {
    double   seconds;
    double   mbps;
    double   p50_ms;
    double   p99_ms;
    double   fsyncs_per_append;      /* WAL only: per replica */
    uint64_t appends;
} run_result_t;

/* Shared by the appender threads of one run. */
typedef struct run_ctx {
    kw_wal_t          *wal;          /* NULL: raw run */
    int                fd;           /* raw run */
    const uint8_t     *payloads;     /* random bytes, size + PAYLOAD_SLACK */
    size_t             size;
    uint64_t           n;            /* appends in this run */
    atomic_uint_fast64_t next;       /* next append index */
    atomic_uint_fast64_t raw_offset; /* raw: next file offset */
    double            *lat_ms;       /* [n] */
    pthread_barrier_t  start;
    atomic_int         failed;
    char               errstr[512];
    pthread_mutex_t    err_lock;
} run_ctx_t;

#define PAYLOAD_SLACK (64 * 1024)

/* Set (to the signal number) by the signal thread on SIGINT, SIGTERM or
 * SIGHUP: appenders stop, main removes what it wrote and exits. */
static atomic_int interrupted;

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void die(const char *fmt, ...)
{
    va_list ap;

    fflush(stdout);
    fputs("kwal-bench-wal: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

/* snprintf into a path buffer; a path that does not fit is fatal. */
static void pathf(char *buf, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void pathf(char *buf, size_t len, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(buf, len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= len)
        die("path too long: %s...", buf);
}

static void usage(FILE *out)
{
    fputs("Usage: kwal-bench-wal [--dir BASE] [--mb N] [--sizes LIST] [--replicas LIST]\n"
          "                      [--appenders LIST] [--segment-bytes SIZE] [--repeat N]\n"
          "                      [--interleave MB] [--quick] [--keep]\n"
          "\n"
          "Measures kwal's WAL against plain pwrite+fdatasync appends on the same disk.\n"
          "\n"
          "  --dir BASE          where to write (default: a new directory under $TMPDIR\n"
          "                      or /tmp, removed at the end)\n"
          "  --mb N              MiB of payload per case (default 64; --quick: 4)\n"
          "  --sizes LIST        payload sizes, e.g. 64K,256K,1M,4M (the default;\n"
          "                      --quick: 64K,256K)\n"
          "  --replicas LIST     replica counts (default 1,3)\n"
          "  --appenders LIST    concurrent appender threads (default 1,4)\n"
          "  --segment-bytes S   WAL segment size (default: the WAL's, 64M)\n"
          "  --repeat N          run each case N times (raw, WAL, raw, WAL, ...) and\n"
          "                      report the median run of each (default 1, at most 9)\n"
          "  --interleave MB     raw and WAL take turns of about MB MiB each (at least\n"
          "                      one append per appender), both open all along, the\n"
          "                      same threads serving both, so that a busy machine\n"
          "                      slows both alike; e.g. --mb 256 --interleave 16\n"
          "                      (default: the whole raw run, then the whole WAL run)\n"
          "  --quick             a small run (seconds): --mb 4 --sizes 64K,256K\n"
          "  --keep              keep each case's WAL directories and print their paths:\n"
          "                      BASE/<size>-r<replicas>-a<appenders>/wal-<i>\n", out);
}

/* ---- small helpers ------------------------------------------------------- */

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int parse_size_list(const char *s, uint64_t *out, int max)
{
    char buf[256], *save = NULL, *tok;
    int n = 0;

    if (strlen(s) >= sizeof(buf))
        return -1;
    strcpy(buf, s);
    for (tok = strtok_r(buf, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
        if (n == max || kw_conf_parse_size(tok, &out[n]) != KW_OK || out[n] == 0 ||
            out[n] > KW_WAL_MAX_RECORD)
            return -1;
        n++;
    }
    return n;
}

static int parse_int_list(const char *s, int *out, int max, int lo, int hi)
{
    char buf[256], *save = NULL, *tok, *end;
    int n = 0;

    if (strlen(s) >= sizeof(buf))
        return -1;
    strcpy(buf, s);
    for (tok = strtok_r(buf, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
        long v = strtol(tok, &end, 10);

        if (n == max || *end != '\0' || end == tok || v < lo || v > hi)
            return -1;
        out[n++] = (int)v;
    }
    return n;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    if (remove(path) != 0 && errno != ENOENT)
        fprintf(stderr, "kwal-bench-wal: remove %s: %s\n", path, strerror(errno));
    return 0;
}

static void rm_rf(const char *path)
{
    nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

/* Nearest-rank percentile of sorted v[0..n-1]. */
static double percentile(const double *v, uint64_t n, double p)
{
    uint64_t rank;

    if (n == 0)
        return 0;
    rank = (uint64_t)((p / 100.0) * (double)n + 0.999999);
    if (rank < 1)
        rank = 1;
    if (rank > n)
        rank = n;
    return v[rank - 1];
}

/* xorshift64*: fast, and its output does not compress. */
static void fill_random(uint8_t *p, size_t len)
{
    uint64_t x = (uint64_t)time(NULL) * 0x9E3779B97F4A7C15ull ^ (uint64_t)getpid();

    if (x == 0)
        x = 1;
    for (size_t i = 0; i < len; i += 8) {
        uint64_t v;

        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        v = x * 0x2545F4914F6CDD1Dull;
        memcpy(p + i, &v, len - i < 8 ? len - i : 8);
    }
}

static void fmt_size(uint64_t bytes, char *buf, size_t len)
{
    kw_conf_format_size(bytes, buf, len);
}

/* ---- one run ------------------------------------------------------------- */

static void run_fail(run_ctx_t *ctx, const char *fmt, const char *detail)
{
    pthread_mutex_lock(&ctx->err_lock);
    if (!atomic_load(&ctx->failed))
        snprintf(ctx->errstr, sizeof(ctx->errstr), fmt, detail);
    atomic_store(&ctx->failed, 1);
    pthread_mutex_unlock(&ctx->err_lock);
}

static int raw_append(run_ctx_t *ctx, const uint8_t *p)
{
    uint64_t off = atomic_fetch_add(&ctx->raw_offset, ctx->size);
    size_t done = 0;

    while (done < ctx->size) {
        ssize_t w = pwrite(ctx->fd, p + done, ctx->size - done, (off_t)(off + done));

        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            run_fail(ctx, "raw pwrite: %s", w < 0 ? strerror(errno) : "wrote nothing");
            return -1;
        }
        done += (size_t)w;
    }
    if (fdatasync(ctx->fd) != 0) {
        run_fail(ctx, "raw fdatasync: %s", strerror(errno));
        return -1;
    }
    return 0;
}

/* Append number k (raw or WAL, as ctx says) and record its latency:
 * 0, or -1 after run_fail. */
static int append_one(run_ctx_t *ctx, uint64_t k)
{
    /* A different slice of the random buffer each time. */
    const uint8_t *p = ctx->payloads + (k * 4099) % PAYLOAD_SLACK;
    double t0 = now_s();
    char errstr[256];

    if (ctx->wal == NULL) {
        if (raw_append(ctx, p) != 0)
            return -1;
    } else {
        kw_err_t err = kw_wal_append(ctx->wal, p, ctx->size, 0, NULL,
                                     errstr, sizeof(errstr));

        if (err != KW_OK) {
            run_fail(ctx, "kw_wal_append: %s", errstr[0] != '\0' ? errstr
                                                                 : kw_err_str(err));
            return -1;
        }
    }
    ctx->lat_ms[k] = (now_s() - t0) * 1000.0;
    return 0;
}

static void *appender(void *arg)
{
    run_ctx_t *ctx = arg;
    uint64_t k;

    pthread_barrier_wait(&ctx->start);
    while (!atomic_load(&ctx->failed) && !atomic_load(&interrupted) &&
           (k = atomic_fetch_add(&ctx->next, 1)) < ctx->n)
        if (append_one(ctx, k) != 0)
            break;
    return NULL;
}

static run_ctx_t *ctx_new(kw_wal_t *wal, int fd, const uint8_t *payloads, size_t size,
                          uint64_t n, int threads)
{
    run_ctx_t *ctx = calloc(1, sizeof(*ctx));

    if (ctx == NULL)
        die("out of memory");
    ctx->wal = wal;
    ctx->fd = fd;
    ctx->payloads = payloads;
    ctx->size = size;
    ctx->n = n;
    atomic_init(&ctx->next, 0);
    atomic_init(&ctx->raw_offset, 0);
    atomic_init(&ctx->failed, 0);
    ctx->lat_ms = calloc(n, sizeof(*ctx->lat_ms));
    if (ctx->lat_ms == NULL)
        die("out of memory");
    pthread_mutex_init(&ctx->err_lock, NULL);
    pthread_barrier_init(&ctx->start, NULL, (unsigned)threads + 1);
    return ctx;
}

/* Fill res from the appends' latencies and the seconds they took. */
static void ctx_result(run_ctx_t *ctx, double seconds, run_result_t *res)
{
    res->seconds = seconds;
    if (atomic_load(&ctx->failed))
        die("%s", ctx->errstr);
    if (!atomic_load(&interrupted)) {   /* else the caller drops the run */
        qsort(ctx->lat_ms, ctx->n, sizeof(double), cmp_double);
        res->appends = ctx->n;
        res->mbps = (double)ctx->size * (double)ctx->n / 1e6 / res->seconds;
        res->p50_ms = percentile(ctx->lat_ms, ctx->n, 50);
        res->p99_ms = percentile(ctx->lat_ms, ctx->n, 99);
    }
}

static void ctx_free(run_ctx_t *ctx)
{
    pthread_barrier_destroy(&ctx->start);
    pthread_mutex_destroy(&ctx->err_lock);
    free(ctx->lat_ms);
    free(ctx);
}

/* Run n appends of size bytes with `threads` appenders, to wal or fd. */
static void run(kw_wal_t *wal, int fd, const uint8_t *payloads, size_t size,
                uint64_t n, int threads, run_result_t *res)
{
    pthread_t tids[MAX_APPENDERS];
    run_ctx_t *ctx = ctx_new(wal, fd, payloads, size, n, threads);
    double t0;

    for (int i = 0; i < threads; i++)
        if (pthread_create(&tids[i], NULL, appender, ctx) != 0)
            die("pthread_create failed");
    pthread_barrier_wait(&ctx->start);
    t0 = now_s();
    for (int i = 0; i < threads; i++)
        pthread_join(tids[i], NULL);
    ctx_result(ctx, now_s() - t0, res);
    ctx_free(ctx);
}

/*
 * Interleaved (--interleave): raw and WAL take turns, `turn` appends each, with
 * the raw file and the WAL open the whole time and the same appender threads
 * serving both, until each made n appends; which side goes first alternates.
 * On a shared machine the noise (other processes, the host's disk) then falls
 * on both alike, where two whole runs one after the other can meet very
 * different moments. Each side's throughput is its bytes over the sum of its
 * turns' times.
 */
typedef struct turns {
    run_ctx_t        *cur;          /* the side whose turn it is */
    uint64_t          end;          /* its turn ends before this append index */
    int               stop;
    pthread_barrier_t go, done;
} turns_t;

static void *turn_appender(void *arg)
{
    turns_t *t = arg;
    uint64_t k;

    for (;;) {
        run_ctx_t *ctx;

        pthread_barrier_wait(&t->go);
        if (t->stop)
            return NULL;
        ctx = t->cur;
        while (!atomic_load(&ctx->failed) && !atomic_load(&interrupted) &&
               (k = atomic_fetch_add(&ctx->next, 1)) < t->end)
            if (append_one(ctx, k) != 0)
                break;
        pthread_barrier_wait(&t->done);
    }
}

static void run_turns(kw_wal_t *wal, int fd, const uint8_t *payloads, size_t size,
                      uint64_t n, int threads, uint64_t turn, run_result_t *raw_res,
                      run_result_t *wal_res)
{
    pthread_t tids[MAX_APPENDERS];
    run_ctx_t *side[2];
    double secs[2] = { 0, 0 };
    uint64_t done = 0;
    turns_t t;

    side[0] = ctx_new(NULL, fd, payloads, size, n, threads);
    side[1] = ctx_new(wal, -1, payloads, size, n, threads);
    memset(&t, 0, sizeof(t));
    pthread_barrier_init(&t.go, NULL, (unsigned)threads + 1);
    pthread_barrier_init(&t.done, NULL, (unsigned)threads + 1);
    for (int i = 0; i < threads; i++)
        if (pthread_create(&tids[i], NULL, turn_appender, &t) != 0)
            die("pthread_create failed");
    if (turn < (uint64_t)threads)
        turn = (uint64_t)threads;
    for (uint64_t round = 0; done < n && !atomic_load(&interrupted); round++) {
        uint64_t end = done + turn < n ? done + turn : n;

        for (int j = 0; j < 2; j++) {
            int s = (int)((round + (uint64_t)j) % 2);
            double t0 = now_s();

            atomic_store(&side[s]->next, done);
            t.cur = side[s];
            t.end = end;
            pthread_barrier_wait(&t.go);
            pthread_barrier_wait(&t.done);
            secs[s] += now_s() - t0;
            if (atomic_load(&side[s]->failed))
                die("%s", side[s]->errstr);
        }
        done = end;
    }
    t.stop = 1;
    pthread_barrier_wait(&t.go);
    for (int i = 0; i < threads; i++)
        pthread_join(tids[i], NULL);
    ctx_result(side[0], secs[0], raw_res);
    ctx_result(side[1], secs[1], wal_res);
    ctx_free(side[0]);
    ctx_free(side[1]);
    pthread_barrier_destroy(&t.go);
    pthread_barrier_destroy(&t.done);
}

/* ---- one case ------------------------------------------------------------ */

static void run_raw(const char *casedir, const uint8_t *payloads, size_t size,
                    uint64_t n, int threads, run_result_t *res)
{
    char path[4096];
    int fd;

    pathf(path, sizeof(path), "%s/raw.dat", casedir);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        die("%s: %s", path, strerror(errno));
    run(NULL, fd, payloads, size, n, threads, res);
    close(fd);
    if (unlink(path) != 0)
        die("unlink %s: %s", path, strerror(errno));
}

/* The WAL run of a case; with --interleave the raw run too (into raw_res), in
 * turns with it. */
static void run_wal(const bench_opts_t *bo, const char *casedir, int replicas,
                    const uint8_t *payloads, size_t size, uint64_t n, int threads,
                    run_result_t *res, run_result_t *raw_res)
{
    char dirs[KW_WAL_MAX_REPLICAS][4096 + 16], path[4096];
    char errstr[1024] = "";
    kw_wal_options_t opts;
    kw_wal_stats_t stats;
    kw_wal_t *wal = NULL;
    kw_err_t err;

    kw_wal_options_init(&opts);
    for (int r = 0; r < replicas; r++) {
        pathf(dirs[r], sizeof(dirs[r]), "%s/wal-%d", casedir, r);
        opts.dirs[r] = dirs[r];
    }
    opts.ndirs = replicas;
    if (bo->segment_bytes > 0)
        opts.segment_bytes = bo->segment_bytes;
    err = kw_wal_open(&opts, &wal, NULL, errstr, sizeof(errstr));
    if (err != KW_OK)
        die("kw_wal_open %s: %s", casedir, errstr[0] != '\0' ? errstr : kw_err_str(err));
    if (bo->interleave > 0) {
        int fd;

        pathf(path, sizeof(path), "%s/raw.dat", casedir);
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0)
            die("%s: %s", path, strerror(errno));
        run_turns(wal, fd, payloads, size, n, threads,
                  bo->interleave * 1024 * 1024 / size, raw_res, res);
        close(fd);
        if (unlink(path) != 0)
            die("unlink %s: %s", path, strerror(errno));
    } else {
        run(wal, -1, payloads, size, n, threads, res);
    }
    memset(&stats, 0, sizeof(stats));
    kw_wal_stats(wal, &stats);
    res->fsyncs_per_append = stats.appends > 0 && stats.replicas_healthy > 0
        ? (double)stats.fsyncs / (double)stats.appends / (double)stats.replicas_healthy
        : 0;
    if (stats.appends != n && !atomic_load(&interrupted))
        fprintf(stderr, "kwal-bench-wal: warning: %s: kw_wal_stats counts %" PRIu64
                " appends, the benchmark made %" PRIu64 "\n", casedir, stats.appends, n);
    kw_wal_close(wal);
}

/* ---- main ---------------------------------------------------------------- */

static void *signal_thread(void *arg)
{
    sigset_t *set = arg;
    int sig = 0;

    if (sigwait(set, &sig) == 0)
        atomic_store(&interrupted, sig);
    return NULL;
}

/* Block the stop signals in every thread (the WAL's I/O threads inherit the
 * mask) and take them in one thread, so an interrupted run still cleans up. */
static void catch_signals(void)
{
    static sigset_t set;
    pthread_t tid;

    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    if (pthread_sigmask(SIG_BLOCK, &set, NULL) != 0 ||
        pthread_create(&tid, NULL, signal_thread, &set) != 0)
        die("cannot set up signal handling");
    pthread_detach(tid);
}

/* The first writes of a process to a fresh directory are slow (page cache,
 * file system allocation, code paths run cold): burn that in before the
 * first measured case, so the first case is not unfair to whichever runs first. */
static void warm_up(const bench_opts_t *bo, const char *base, const uint8_t *payloads,
                    size_t size)
{
    char dir[4096];
    uint64_t n = (bo->mb < 16 ? bo->mb : 16) * 1024 * 1024 / size;
    run_result_t res;

    pathf(dir, sizeof(dir), "%s/warm-up", base);
    if (mkdir(dir, 0700) != 0)
        die("mkdir %s: %s", dir, strerror(errno));
    run_raw(dir, payloads, size, n > 0 ? n : 1, 1, &res);
    run_wal(bo, dir, 1, payloads, size, n > 0 ? n : 1, 1, &res, &res);
    rm_rf(dir);
}

static int cmp_mbps(const void *a, const void *b)
{
    double x = ((const run_result_t *)a)->mbps, y = ((const run_result_t *)b)->mbps;

    return (x > y) - (x < y);
}

/* The median run by throughput (the lower middle one for an even count). */
static run_result_t median_run(run_result_t *runs, int n)
{
    qsort(runs, (size_t)n, sizeof(*runs), cmp_mbps);
    return runs[(n - 1) / 2];
}

/* Remove the WAL directories of an earlier repetition of a case. */
static void rm_wal_dirs(const char *casedir, int replicas)
{
    char dir[4096 + 16];

    for (int r = 0; r < replicas; r++) {
        pathf(dir, sizeof(dir), "%s/wal-%d", casedir, r);
        rm_rf(dir);
    }
}

static int is_value_opt(const char *a)
{
    static const char *const names[] = {
        "--dir", "--mb", "--sizes", "--replicas", "--appenders", "--segment-bytes",
        "--repeat", "--interleave",
    };

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strcmp(a, names[i]) == 0)
            return 1;
    return 0;
}

static void parse_opts(int argc, char **argv, bench_opts_t *bo)
{
    int quick = 0, have_mb = 0, have_sizes = 0;

    memset(bo, 0, sizeof(*bo));
    bo->mb = 64;
    bo->repeat = 1;
    bo->nsizes = parse_size_list("64K,256K,1M,4M", bo->sizes, MAX_LIST);
    bo->nreplicas = parse_int_list("1,3", bo->replicas, MAX_LIST, 1, KW_WAL_MAX_REPLICAS);
    bo->nappenders = parse_int_list("1,4", bo->appenders, MAX_LIST, 1, MAX_APPENDERS);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int takes_value = 1;

        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            exit(0);
        } else if (strcmp(a, "--quick") == 0) {
            quick = 1;
            takes_value = 0;
        } else if (strcmp(a, "--keep") == 0) {
            bo->keep = 1;
            takes_value = 0;
        } else if (!is_value_opt(a)) {
            goto bad;
        } else if (v == NULL) {
            goto missing;
        } else if (strcmp(a, "--dir") == 0) {
            bo->base = v;
        } else if (strcmp(a, "--mb") == 0) {
            char *end;
            unsigned long long mb = strtoull(v, &end, 10);

            if (*end != '\0' || end == v || mb == 0 || mb > 1024 * 1024)
                goto bad_value;
            bo->mb = mb;
            have_mb = 1;
        } else if (strcmp(a, "--sizes") == 0) {
            if ((bo->nsizes = parse_size_list(v, bo->sizes, MAX_LIST)) <= 0)
                goto bad_value;
            have_sizes = 1;
        } else if (strcmp(a, "--replicas") == 0) {
            bo->nreplicas = parse_int_list(v, bo->replicas, MAX_LIST, 1, KW_WAL_MAX_REPLICAS);
            if (bo->nreplicas <= 0)
                goto bad_value;
        } else if (strcmp(a, "--appenders") == 0) {
            if ((bo->nappenders = parse_int_list(v, bo->appenders, MAX_LIST, 1, MAX_APPENDERS)) <= 0)
                goto bad_value;
        } else if (strcmp(a, "--repeat") == 0) {
            int r[1];

            if (parse_int_list(v, r, 1, 1, MAX_REPEAT) != 1)
                goto bad_value;
            bo->repeat = r[0];
        } else if (strcmp(a, "--interleave") == 0) {
            char *end;
            unsigned long long k = strtoull(v, &end, 10);

            if (*end != '\0' || end == v || k == 0 || k > 1024 * 1024)
                goto bad_value;
            bo->interleave = k;
        } else if (strcmp(a, "--segment-bytes") == 0) {
            if (kw_conf_parse_size(v, &bo->segment_bytes) != KW_OK || bo->segment_bytes < 4096)
                goto bad_value;
        } else {
            goto bad;
        }
        if (takes_value)
            i++;
        continue;
bad_value:
        fprintf(stderr, "kwal-bench-wal: %s: bad value '%s'\n"
                "Try 'kwal-bench-wal --help'.\n", a, v);
        exit(2);
missing:
        fprintf(stderr, "kwal-bench-wal: %s needs a value\n"
                "Try 'kwal-bench-wal --help'.\n", a);
        exit(2);
bad:
        fprintf(stderr, "kwal-bench-wal: unknown %s '%s'\n"
                "Try 'kwal-bench-wal --help'.\n", a[0] == '-' ? "option" : "argument", a);
        exit(2);
    }
    if (quick) {
        if (!have_mb)
            bo->mb = 4;
        if (!have_sizes)
            bo->nsizes = parse_size_list("64K,256K", bo->sizes, MAX_LIST);
    }
}

int main(int argc, char **argv)
{
    char base[4096], casedir[4096], label[64], szbuf[32];
    struct { char dir[4096]; int replicas; } *kept = NULL;
    uint8_t *payloads;
    uint64_t maxsize = 0;
    bench_opts_t bo;
    int made_base = 0, nkept = 0, checked = 0, missed = 0;

    parse_opts(argc, argv, &bo);
    catch_signals();
    if (getenv("KWAL_LOG_LEVEL") == NULL)
        kw_log_set_level(KW_LOG_WARN);
    if (bo.base != NULL) {
        pathf(base, sizeof(base), "%s", bo.base);
        if (mkdir(base, 0700) != 0 && errno != EEXIST)
            die("mkdir %s: %s", base, strerror(errno));
    } else {
        const char *tmp = getenv("TMPDIR");

        pathf(base, sizeof(base), "%s/kwal-bench-XXXXXX",
                 tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp");
        if (mkdtemp(base) == NULL)
            die("mkdtemp %s: %s", base, strerror(errno));
        made_base = 1;
    }
    for (int i = 0; i < bo.nsizes; i++)
        if (bo.sizes[i] > maxsize)
            maxsize = bo.sizes[i];
    payloads = malloc(maxsize + PAYLOAD_SLACK);
    kept = calloc((size_t)(bo.nsizes * bo.nreplicas * bo.nappenders), sizeof(*kept));
    if (payloads == NULL || kept == NULL)
        die("out of memory");
    fill_random(payloads, maxsize + PAYLOAD_SLACK);
    warm_up(&bo, base, payloads, (size_t)bo.sizes[0]);

    printf("kwal-bench-wal: %" PRIu64 " MiB of random payload per case "
           "(incompressible, not compressed) in %s\n", bo.mb, base);
    if (bo.repeat > 1)
        printf("each case run %d times (raw, WAL, raw, WAL, ...); the median run "
               "of each is shown\n", bo.repeat);
    printf("raw: the same appender threads pwrite() at the end of one file and "
           "fdatasync() after each write,\n     ");
    if (bo.interleave > 0)
        printf("in turns of about %" PRIu64 " MiB with the WAL case, both open all along, ",
               bo.interleave);
    else
        printf("run just before the WAL case ");
    printf("in the same directory: one copy,\n     where a WAL of R replicas writes R "
           "copies to the same disk. MB = 10^6 bytes; latency per append.\n\n");
    printf("%-7s %4s %4s %6s | %8s %8s %8s | %8s %8s %8s %10s | %7s  %s\n",
           "payload", "repl", "app", "n", "raw MB/s", "p50 ms", "p99 ms",
           "WAL MB/s", "p50 ms", "p99 ms", "fsync/a/r", "WAL/raw", "targets");
    fflush(stdout);

    for (int si = 0; si < bo.nsizes; si++) {
        for (int ri = 0; ri < bo.nreplicas; ri++) {
            for (int ai = 0; ai < bo.nappenders; ai++) {
                size_t size = (size_t)bo.sizes[si];
                int replicas = bo.replicas[ri], threads = bo.appenders[ai];
                uint64_t n = bo.mb * 1024 * 1024 / size;
                run_result_t raw, wal, raws[MAX_REPEAT], wals[MAX_REPEAT];
                double ratio;
                char targets[128] = "";

                if (n < (uint64_t)threads)
                    n = (uint64_t)threads;
                fmt_size(size, szbuf, sizeof(szbuf));
                snprintf(label, sizeof(label), "%s-r%d-a%d", szbuf, replicas, threads);
                pathf(casedir, sizeof(casedir), "%s/%s", base, label);
                if (mkdir(casedir, 0700) != 0)
                    die("mkdir %s: %s%s", casedir, strerror(errno),
                        errno == EEXIST ? " (left by an earlier --keep run? "
                                          "remove it or use another --dir)" : "");
                memset(raws, 0, sizeof(raws));
                memset(wals, 0, sizeof(wals));
                for (int k = 0; k < bo.repeat; k++) {
                    if (k > 0)
                        rm_wal_dirs(casedir, replicas);
                    if (bo.interleave == 0)
                        run_raw(casedir, payloads, size, n, threads, &raws[k]);
                    run_wal(&bo, casedir, replicas, payloads, size, n, threads, &wals[k],
                            &raws[k]);
                }
                if (atomic_load(&interrupted))
                    goto interrupted;
                raw = median_run(raws, bo.repeat);
                wal = median_run(wals, bo.repeat);
                ratio = raw.mbps > 0 ? wal.mbps / raw.mbps : 0;

                if (size >= 256 * 1024 && replicas == 1) {
                    int ok = ratio >= 0.85;

                    checked++;
                    missed += !ok;
                    snprintf(targets, sizeof(targets), "ratio>=0.85 %s", ok ? "ok" : "MISSED");
                }
                if (replicas > 1) {
                    double want = 0.9 / replicas;
                    int ok = ratio >= want;
                    size_t used = strlen(targets);

                    checked++;
                    missed += !ok;
                    snprintf(targets + used, sizeof(targets) - used, "%sratio>=%.2f %s",
                             used > 0 ? ", " : "", want, ok ? "ok" : "MISSED");
                }
                if (threads >= 4) {
                    int ok = wal.fsyncs_per_append < 0.5;
                    size_t used = strlen(targets);

                    checked++;
                    missed += !ok;
                    snprintf(targets + used, sizeof(targets) - used, "%sfsync<0.5 %s",
                             used > 0 ? ", " : "", ok ? "ok" : "MISSED");
                }
                printf("%-7s %4d %4d %6" PRIu64 " | %8.1f %8.2f %8.2f | %8.1f %8.2f %8.2f "
                       "%10.3f | %7.2f  %s\n", szbuf, replicas, threads, n, raw.mbps,
                       raw.p50_ms,
                       raw.p99_ms, wal.mbps, wal.p50_ms, wal.p99_ms,
                       wal.fsyncs_per_append, ratio, targets);
                fflush(stdout);

                if (bo.keep) {
                    pathf(kept[nkept].dir, sizeof(kept[nkept].dir), "%s", casedir);
                    kept[nkept++].replicas = replicas;
                } else {
                    rm_rf(casedir);
                }
            }
        }
    }

    printf("\ntargets: payload >= 256K with 1 replica: WAL/raw >= 0.85; R > 1 replicas "
           "(R copies on one disk): WAL/raw >= 0.9/R;\n         4 appenders: < 0.5 fsyncs "
           "per append per replica\n");
    printf("         %d checked, %d missed\n", checked, missed);
    if (bo.keep) {
        printf("\nkept WAL directories (BASE/<size>-r<replicas>-a<appenders>/wal-<i>):\n");
        for (int i = 0; i < nkept; i++) {
            printf("  kwal wal ls");
            for (int r = 0; r < kept[i].replicas; r++)
                printf(" --dir %s/wal-%d", kept[i].dir, r);
            printf("\n");
        }
    } else if (made_base) {
        rm_rf(base);
    }
    free(kept);
    free(payloads);
    return 0;

interrupted:
    fflush(stdout);
    fprintf(stderr, "kwal-bench-wal: interrupted (signal %d); removing %s\n",
            atomic_load(&interrupted), made_base ? base : casedir);
    rm_rf(made_base ? base : casedir);
    free(kept);
    free(payloads);
    return 128 + atomic_load(&interrupted);
}
