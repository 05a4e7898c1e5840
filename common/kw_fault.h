/*
 * kw_fault.h -- crash points and named failure points (DESIGN.md, "Crash
 * points and fault injection").
 *
 * Crash points. Every step boundary of the data flow has a named crash
 * point, listed once in KW_CRASH_POINTS below (`kwal --list-crash-points`
 * prints the list). With KWAL_CRASH_AT=<point>[:<nth>] in the environment
 * (nth defaults to 1) the process dies abruptly -- _exit(KW_CRASH_EXIT), no
 * atexit handlers, no flushing, no unlocking -- the nth time any thread
 * passes that point, after one line on stderr naming the point. Production
 * builds keep the hooks: an unarmed point costs one compare.
 *
 * Failure points. kw_fault(name) asks libfiu whether the named point should
 * fail now; the caller then acts as the real failure would (an I/O error,
 * a receiver failure). Points are enabled from the environment at start
 * (KWAL_FIU="enable name=wal/replica1/pwrite;disable name=..." -- libfiu
 * remote-control commands separated by ';') or at run time with
 * `fiu-ctrl -f PREFIX -c 'enable name=...' PID` when KWAL_FIU_CTRL=PREFIX
 * (libfiu's named pipes PREFIX-<pid>.in/.out). The names kwal checks are
 * listed in KW_FAULT_POINTS.
 *
 * Threads. kw_fault_init() runs once, in the program's main thread, before
 * any other thread starts; after it, kw_crash() and kw_fault() may be
 * called from any thread. Without kw_fault_init() (unit tests) nothing is
 * armed unless kw_crash_arm() is called.
 */
#ifndef KW_FAULT_H
#define KW_FAULT_H

#include <stddef.h>

#include "kw_err.h"

/* Exit status of a process stopped at a crash point. */
#define KW_CRASH_EXIT 99

/* X(ENUM, "name", "where it is") -- in data-flow order. */
#define KW_CRASH_POINTS(X)                                                          \
    X(RECEIVER_POLLED,   "receiver.polled",                                         \
      "a record was polled from Kafka; it is not in a block yet")                   \
    X(BLOCK_CUT,         "block.cut",                                               \
      "a block was cut and queued; it is not in the WAL yet")                       \
    X(WAL_MID_WRITE,     "wal.mid-write",                                           \
      "part of a WAL batch is written to a replica file (some bytes)")              \
    X(WAL_BEFORE_FSYNC,  "wal.before-fsync",                                        \
      "a WAL batch is written to a replica, not yet fsynced")                       \
    X(WAL_BEFORE_ACK,    "wal.before-ack",                                          \
      "a WAL batch is fsynced on the quorum; the appender is not told yet")         \
    X(WAL_SEGMENT_ROLL,  "wal.segment-roll",                                        \
      "a new WAL segment is created; the old one is sealed")                        \
    X(PIPELINE_WAL_ACKED, "pipeline.wal-acked",                                     \
      "a block is durable in the WAL; the tracker does not have it yet")            \
    X(PIPELINE_TRACKED,  "pipeline.tracked",                                        \
      "a block is in the tracker; its offsets are not in ZooKeeper yet")            \
    X(PIPELINE_COMMITTED, "pipeline.committed",                                     \
      "a block's offsets are in ZooKeeper")                                         \
    X(BATCH_ALLOCATED,   "batch.allocated",                                         \
      "a batch is allocated in the tracker; the sink has not started it")           \
    X(SINK_MID_TXN,      "sink.mid-txn",                                            \
      "the sink transaction of a batch is open with records written")               \
    X(SINK_COMMITTED,    "sink.committed",                                          \
      "the sink committed a batch; its blocks are not marked processed yet")        \
    X(WAL_CLEANUP,       "wal.cleanup",                                             \
      "WAL cleanup removed some segments but not all it meant to")                  \
    X(RECOVERY_REPLAY,   "recovery.replay",                                         \
      "recovery replayed part of the unacknowledged blocks")                        \
    X(RECEIVER_REVOKE,   "receiver.revoke",                                         \
      "a receiver is giving partitions up: its last block is flushed and "         \
      "committed; the owner node of the next partition is not deleted yet")

/* The points only `kwal direct` passes (it also passes sink.mid-txn). */
#define KW_DIRECT_CRASH_POINTS(X)                                                   \
    X(DIRECT_READ,       "direct.read",                                             \
      "direct mode read a batch's offset ranges; the sink has not started it")     \
    X(DIRECT_STORED,     "direct.stored",                                           \
      "direct mode committed a batch and its ranges to the sink; ZooKeeper "       \
      "does not have its offsets yet")

typedef enum {
#define KW__CRASH_ENUM(e, name, desc) KW_CRASH_##e,
    KW_CRASH_POINTS(KW__CRASH_ENUM)
    KW_DIRECT_CRASH_POINTS(KW__CRASH_ENUM)
#undef KW__CRASH_ENUM
    KW__CRASH_COUNT
} kw_crash_point_t;

/* The receive-mode points are 0 .. KW_CRASH_DIRECT_READ - 1. */

/* libfiu failure points kwal checks. X(ENUM, "name", "what failing does"). */
#define KW_FAULT_POINTS(X)                                                          \
    X(RECEIVER_FAIL,  "receiver/fail",                                              \
      "the receiver thread that checks it fails (it is restarted with backoff)")   \
    X(WAL_WRITE,      "wal/replicaR/write",                                         \
      "writes to WAL replica R (0-based) fail: errno failinfo, default EIO")       \
    X(WAL_SHORT,      "wal/replicaR/short",                                         \
      "writes to WAL replica R write half of what they were asked")                \
    X(WAL_FSYNC,      "wal/replicaR/fsync",                                         \
      "fdatasync/fsync of WAL replica R fail: errno failinfo, default EIO")        \
    X(WAL_DELAY,      "wal/replicaR/delay",                                         \
      "writes and syncs of WAL replica R first sleep failinfo ms (default 100)")   \
    X(DIRECT_STOP,    "direct/stop",                                                \
      "kwal direct stops itself (SIGSTOP) after reading a batch, before its sink "  \
      "transaction: frozen mid-batch without the sink's lock (SIGCONT goes on)")  \
    X(SINK_KAFKA_STOP, "sink/kafka-stop",                                           \
      "the kafka sink stops its process (SIGSTOP) with the batch's transactions "   \
      "open and their offsets sent, just before commit_transaction")

/* The armed point (KW__CRASH_COUNT: none). Written by kw_fault_init() and
 * kw_crash_arm() only, before other threads run. */
extern int kw__crash_armed;
void kw__crash_pass(kw_crash_point_t p);

/* Pass crash point p: dies here when p is armed and this is its nth pass. */
static inline void kw_crash(kw_crash_point_t p)
{
    if (__builtin_expect(kw__crash_armed == (int)p, 0))
        kw__crash_pass(p);
}

/* Nonzero when p is the armed point (whatever its pass count): for points
 * that need to set the scene first (wal.mid-write writes half a header). */
static inline int kw_crash_is_armed(kw_crash_point_t p)
{
    return kw__crash_armed == (int)p;
}

/* Name and description of a crash point (NULL when p is out of range). */
const char *kw_crash_point_name(kw_crash_point_t p);
const char *kw_crash_point_desc(kw_crash_point_t p);

/* Arm "point[:nth]" (nth >= 1). KW_EINVAL naming the problem for an unknown
 * point or a bad nth; NULL or "" disarms. Not thread-safe (see above). */
kw_err_t kw_crash_arm(const char *spec, char *errstr, size_t errlen);

/*
 * Read KWAL_CRASH_AT, KWAL_FIU and KWAL_FIU_CTRL (see above) and set libfiu
 * up. KW_ECONFIG naming the variable for a bad value (a program should stop
 * then: a fault test that silently injects nothing proves nothing).
 */
kw_err_t kw_fault_init(char *errstr, size_t errlen);

/* Nonzero when the libfiu point `name` is enabled and fails now. 0 before
 * kw_fault_init(). */
int kw_fault(const char *name);

/* Nonzero once libfiu is on (a caller may skip building point names). */
int kw_fault_active(void);

/* The failinfo of the last point that failed in this thread, as a number
 * (fiu-ctrl's failinfo=N); 0 when none was given. */
long kw_fault_info(void);

#endif /* KW_FAULT_H */
