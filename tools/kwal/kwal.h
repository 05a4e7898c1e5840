/*
 * kwal.h -- private to the `kwal` program (tools/kwal*.c): the pieces its
 * subcommands share. Not a library interface; nothing outside tools/ includes it.
 *
 * Exit status of every subcommand: KWAL_EXIT_OK on success, KWAL_EXIT_FAIL
 * with a one-line "kwal: <reason>" on stderr when the work failed,
 * KWAL_EXIT_USAGE for bad arguments or configuration (with a usage hint for
 * bad arguments). `kwal wal verify` also exits KWAL_EXIT_FAIL when it found
 * problems and KWAL_EXIT_USAGE (2) when it could not read the WAL at all.
 */
#ifndef KWAL_H
#define KWAL_H

#include <stddef.h>

#include "cli.h"
#include "kw_conf.h"
#include "kw_err.h"
#include "kw_instance.h"
#include "kw_stats.h"
#include "wal.h"
#include "zk.h"

#define KWAL_EXIT_OK     0
#define KWAL_EXIT_FAIL   1
#define KWAL_EXIT_USAGE  2

/* `kwal wal ...`: argv[0] is "wal". Returns the exit status. */
int kwal_wal_main(int argc, char **argv);

/* `kwal receive ...` (kwal_receive_cmd.c): argv[0] is "receive". Returns the
 * exit status. */
int kwal_receive_main(int argc, char **argv);

/* `kwal recover ...` (kwal_receive_cmd.c): argv[0] is "recover". */
int kwal_recover_main(int argc, char **argv);

/* `kwal direct ...` (kwal_direct_cmd.c): argv[0] is "direct". */
int kwal_direct_main(int argc, char **argv);

/* `kwal status ...` (kwal_status_cmd.c): argv[0] is "status". Reads the
 * group's state from ZooKeeper, Kafka and the local WAL; changes nothing.
 * Exit 1 also when only a part could not be read (the rest is printed). */
int kwal_status_main(int argc, char **argv);

/*
 * Fill *opts from the wal.* keys of conf (kw_wal_options_init() first, so
 * fields without a key keep the WAL's defaults). When ndirs > 0, dirs[0..ndirs-1]
 * replace wal.dirs (`--dir` on the command line); pass NULL, 0 otherwise.
 * opts->dirs point into conf (or dirs), which must outlive opts. KW_ECONFIG
 * when the settings contradict each other (a write quorum larger than the
 * number of replica directories).
 */
kw_err_t kwal_wal_options_from_conf(const kw_conf_t *conf, const char *const *dirs,
                                    int ndirs, kw_wal_options_t *opts,
                                    char *errstr, size_t errlen);

/* ---- the instance (kwal_instance.c) ---- */

/* One running instance: the lock on its state directory (kw_instance.h),
 * its name, its ZooKeeper session (zk.h), registered. */
typedef struct kwal_instance {
    kw_instance_t *lock;        /* NULL: no state directory (--no-wal) */
    kw_zk_t       *zk;
    char           name[256];
    int64_t        zk_ms;       /* how long lock + session + register took */
    int64_t        ready_mono;  /* kw_mono_ms() when it was ready */
} kwal_instance_t;

/*
 * Name the instance (instance.id, else from state, else the ZooKeeper
 * default), lock its state (kw_instance.h: a directory -- the first WAL
 * directory -- when state_is_dir, else a database file the lock and session
 * files go beside; NULL: no lock, no session file; `what` names the setting
 * it comes from, for the refusal), open the ZooKeeper session -- resuming
 * the one saved beside the state when the server still holds it -- and
 * register.
 * KW_ELOCKED when another process has dir; KW_EBUSY when another running
 * process uses the instance name; else the ZooKeeper error. *inst is zeroed
 * first and released on failure.
 */
kw_err_t kwal_instance_open(const kw_conf_t *conf, const char *state, int state_is_dir,
                            const char *what, kwal_instance_t *inst, char *errstr,
                            size_t errlen);

/* The instance's start-up figures into s (zk_session_*). */
void kwal_instance_stats(const kwal_instance_t *inst, int64_t start_mono, kw_stats_t *s);

/* Close the session (its ephemeral nodes and saved session go) and unlock.
 * A zeroed *inst is a no-op. */
void kwal_instance_close(kwal_instance_t *inst);

/* ---- --stats-json FILE (kwal_stats.c) ---- */

#define KWAL_STATS_INTERVAL_MS 1000

/* Fill the counters of s (mode, started_ms and uptime_ms are set) from the
 * command's state; start_mono is kw_mono_ms() at the writer's start, for the
 * *_ms times. Called on the writer's thread and at finish. */
typedef void (*kwal_stats_fill_fn)(kw_stats_t *s, int64_t start_mono, void *opaque);

typedef struct kwal_stats_writer kwal_stats_writer_t;

/* Start writing path every KWAL_STATS_INTERVAL_MS (path NULL: *out = NULL,
 * nothing is written). 0, or -1 when the thread could not start. */
int kwal_stats_start(const char *path, const char *mode, kwal_stats_fill_fn fill,
                     void *opaque, kwal_stats_writer_t **out);

/* Write the file now (on the writer's thread, soon): after something a
 * reader may wait for, such as the end of recovery. NULL is a no-op. */
void kwal_stats_kick(kwal_stats_writer_t *w);

/* Stop the thread and write the file once more with "final":true. NULL is a
 * no-op. The fill function must still be safe to call. */
void kwal_stats_finish(kwal_stats_writer_t *w);

/* ---- metrics.listen (kwal_metrics.c) ---- */

/* The partitions the endpoint shows (kw_receiver_partitions,
 * kw_direct_partitions): fill up to nmax, return how many there are. Called
 * on the endpoint's thread, at the same time as the fill function may run
 * on the --stats-json writer's. */
typedef size_t (*kwal_partitions_fn)(kw_stats_partition_t *out, size_t nmax, void *opaque);

typedef struct kwal_metrics kwal_metrics_t;

/*
 * Serve GET /metrics in the Prometheus text format (kw_stats.h) on listen,
 * metrics.listen's value: HOST:PORT with an IPv4 address or a name (the
 * first IPv4 address it resolves to, else the first address), or
 * [IPv6]:PORT; port 0 picks a free one (kwal_metrics_port). listen NULL or
 * "": *out = NULL, nothing served. Each request fills a kw_stats_t with
 * fill (mode as given, started_ms and uptime_ms from this call) and asks
 * parts for the partitions, on the endpoint's own thread (libmicrohttpd's);
 * both must be safe to call from there until kwal_metrics_stop returns.
 * Returns KWAL_EXIT_OK; KWAL_EXIT_USAGE when the value is malformed or its
 * host does not resolve; KWAL_EXIT_FAIL when the address cannot be bound
 * (in use, not local) or the server does not start -- errstr has one line
 * naming metrics.listen.
 */
int kwal_metrics_start(const char *listen, const char *mode, kwal_stats_fill_fn fill,
                       kwal_partitions_fn parts, void *opaque, kwal_metrics_t **out,
                       char *errstr, size_t errlen);

/* The port served (0 for NULL). */
int kwal_metrics_port(const kwal_metrics_t *m);

/* Stop serving (requests under way finish first) and free m. NULL is a no-op. */
void kwal_metrics_stop(kwal_metrics_t *m);

#endif /* KWAL_H */
