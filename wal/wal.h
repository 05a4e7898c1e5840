/*
 * wal.h -- kwal's replicated, segmented write-ahead log of opaque payloads.
 *
 * The WAL appends payloads as checksummed records to segment files in N replica
 * directories and acknowledges an append only once the record is fdatasync'ed on
 * the write quorum W of them. It knows nothing of Kafka, blocks or ZooKeeper:
 * a payload is bytes, a position is (LSN, segment, offset).
 *
 * Threads. kw_wal_append() may be called from any number of threads at once;
 * concurrent appends share writes and fdatasyncs (group commit). Each replica
 * has its own I/O thread ("wal-io-R"), so replicas are written in parallel.
 * kw_wal_read*(), iterators, kw_wal_cleanup(), kw_wal_stats() and
 * kw_wal_health() are safe to call concurrently with appends. kw_wal_close()
 * must be called once, after every other call on the handle has returned.
 *
 * Failure model. A replica whose open, write or fsync fails is marked failed
 * and takes no more writes until repaired (fsync is never retried on the same
 * file). Appends go on while at least W replicas are healthy; below that the
 * WAL becomes read-only and every append fails with KW_EQUORUM. Health is
 * persisted in every healthy replica and survives restarts.
 *
 * The on-disk format and the open/recovery algorithm are in wal/FORMAT.md.
 */
#ifndef KW_WAL_H
#define KW_WAL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "kw_err.h"
#include "kw_hist.h"

#define KW_WAL_MAX_REPLICAS   16
#define KW_WAL_MAX_RECORD     (256u * 1024u * 1024u)   /* stored payload bytes */

typedef struct kw_wal kw_wal_t;
typedef struct kw_wal_iter kw_wal_iter_t;

/*
 * File I/O table. Every file operation of the WAL goes through it, so tests can
 * inject faults per replica or simulate power loss. Each function gets the
 * table's ctx and the replica index it acts for, and follows the POSIX call it
 * is named after: -1 (or a short count) with errno set on failure.
 * kw_wal_io_posix() is the production table. Directory listing uses readdir
 * directly (reads of names cannot lose data).
 */
typedef struct kw_wal_io {
    int     (*open)(void *ctx, int replica, const char *path, int flags, mode_t mode);
    int     (*close)(void *ctx, int replica, int fd);
    ssize_t (*pread)(void *ctx, int replica, int fd, void *buf, size_t len, off_t off);
    ssize_t (*pwritev)(void *ctx, int replica, int fd, const struct iovec *iov,
                       int iovcnt, off_t off);
    /* Optional (NULL: not used): start writing [off, off + len) of fd to the
     * disk without waiting for it (Linux sync_file_range, SYNC_FILE_RANGE_WRITE).
     * A hint only: nothing counts as durable before fdatasync returns. A large
     * write batch goes out in pieces with this between them, so that the disk
     * writes one piece while the next is copied. -1 fails the replica as a
     * failed write does. */
    int     (*writeback)(void *ctx, int replica, int fd, off_t off, off_t len);
    int     (*fdatasync)(void *ctx, int replica, int fd);
    int     (*fsync)(void *ctx, int replica, int fd);           /* files and directories */
    int     (*ftruncate)(void *ctx, int replica, int fd, off_t len);
    int     (*unlink)(void *ctx, int replica, const char *path);
    int     (*rename)(void *ctx, int replica, const char *from, const char *to);
    int     (*mkdir)(void *ctx, int replica, const char *path, mode_t mode);
    void    *ctx;
} kw_wal_io_t;

/* The POSIX table; static storage, never NULL. */
const kw_wal_io_t *kw_wal_io_posix(void);

typedef struct kw_wal_options {
    const char *dirs[KW_WAL_MAX_REPLICAS]; /* replica directories; created 0700 if missing */
    int         ndirs;                     /* 1..KW_WAL_MAX_REPLICAS */
    int         write_quorum;              /* 0: majority (ndirs / 2 + 1) */
    uint64_t    segment_bytes;             /* roll size; 0: 64 MiB */
    uint64_t    segment_ms;                /* roll age; 0: 60000 */
    uint64_t    max_pending_bytes;         /* appended, not yet on every healthy
                                            * replica; appends wait above it; 0: 256 MiB */
    int         read_only;                 /* no lock, no repair, no appends (ls, dump, verify) */
    uint64_t    acked_lsn;                 /* every LSN up to this one was acknowledged
                                            * (the caller knows, e.g. from its tracker):
                                            * damage there is never cut as a torn tail
                                            * unless another replica has a good copy;
                                            * 0: not known */
    uint64_t    needed_lsn;                /* every LSN below this one was delivered
                                            * and may be cleaned: damage wholly below
                                            * it is a torn tail even when acknowledged
                                            * (e.g. a lagging replica's copy of a
                                            * segment the others cleaned); 0: not known */
    int         skip_lost;                 /* give up acknowledged records that no
                                            * replica can serve instead of refusing
                                            * (the user's explicit choice, e.g. `kwal
                                            * recover --skip-corrupt`): each becomes a
                                            * LOST placeholder (FORMAT.md), logged at
                                            * ERROR and listed in the report */
    const kw_wal_io_t *io;                 /* NULL: kw_wal_io_posix() */
} kw_wal_options_t;

/* Sets defaults; dirs/ndirs stay to be filled in. */
void kw_wal_options_init(kw_wal_options_t *opts);

/* Where a record is: its LSN and where its bytes start, valid on every replica. */
typedef struct kw_wal_pos {
    uint64_t lsn;
    uint64_t segment;    /* the segment's first LSN, i.e. its name */
    uint64_t offset;     /* byte offset of the record header in the segment */
    uint32_t size;       /* header + stored payload bytes */
} kw_wal_pos_t;

/* What open found and did (FORMAT.md, "Open and recovery algorithm", step 8). */
typedef struct kw_wal_open_report {
    int      replicas_healthy;
    int      replicas_failed;
    int      created;            /* 1 if this open created the WAL */
    uint64_t segments;           /* segments in the log after open */
    uint64_t records;            /* valid records found on the source replica */
    uint64_t first_lsn;          /* 0 if empty */
    uint64_t last_lsn;           /* 0 if empty */
    uint64_t torn_tails;         /* replicas whose tail was truncated */
    uint64_t torn_bytes;         /* bytes cut off, all replicas */
    uint64_t corrupt_records;    /* mid-log corrupt records with a good copy elsewhere */
    uint64_t reconciled_bytes;   /* bytes copied between replicas to align tails */
    uint64_t corrupt_lsn;        /* when open fails with KW_ECORRUPT: the LSN that
                                  * no replica can serve (0: not known) */
    uint64_t lost_records;       /* LSNs given up by skip_lost in this open */
    struct {
        uint64_t from, to;       /* LSNs, inclusive */
    } lost[8];                   /* the first ranges given up (nlost of them) */
    int      nlost;
} kw_wal_open_report_t;

/*
 * Open (or create) the WAL. Runs the open/recovery algorithm of FORMAT.md: scans
 * every healthy replica, truncates torn tails, reconciles replicas, and refuses
 * corruption that no replica can serve (KW_ECORRUPT, errstr names replica,
 * segment and offset). Another process holding the WAL gives KW_ELOCKED.
 * report may be NULL. On success *wal is owned by the caller.
 * Opens below the write quorum succeed; appends then fail with KW_EQUORUM.
 */
kw_err_t kw_wal_open(const kw_wal_options_t *opts, kw_wal_t **wal,
                     kw_wal_open_report_t *report, char *errstr, size_t errlen);

/* Stops the I/O threads and closes every file. NULL is a no-op. Appends that
 * are still waiting must have returned first. */
void kw_wal_close(kw_wal_t *wal);

#define KW_WAL_COMPRESS  0x1u   /* LZ4-compress the payload (kept raw if that does not shrink it) */
#define KW_WAL_LOST      0x2u   /* read back only: a placeholder for a record that was
                                 * given up (kw_wal_options_t.skip_lost); no payload */

/*
 * Append one payload and wait until it is durable on the write quorum. On
 * KW_OK, *pos (may be NULL) tells where it is. On any error nothing was
 * acknowledged: KW_EQUORUM when fewer than W replicas are healthy, KW_EINVAL
 * for a payload over KW_WAL_MAX_RECORD, KW_ECLOSED after close began.
 * The payload is copied; the caller keeps ownership. Any thread.
 */
kw_err_t kw_wal_append(kw_wal_t *wal, const void *payload, size_t len,
                       unsigned flags, kw_wal_pos_t *pos,
                       char *errstr, size_t errlen);

/* One record read back. payload is owned by the record. Every read function
 * overwrites *rec without looking at what it held: call kw_wal_record_clear()
 * once done with each record (the struct may then be reused), or its payload
 * leaks. */
typedef struct kw_wal_record {
    kw_wal_pos_t pos;
    unsigned     flags;          /* KW_WAL_COMPRESS if it was stored compressed */
    uint8_t     *payload;        /* decompressed */
    size_t       len;
    size_t       cap;
} kw_wal_record_t;

void kw_wal_record_clear(kw_wal_record_t *rec);

/*
 * Read the record at pos (as returned by append), verifying its checksum. A
 * mismatch on one replica is logged and the read is served from another
 * (counted in kw_wal_stats_t.read_fallbacks); a record bad on every replica
 * gives KW_ECORRUPT. A LOST placeholder is returned (KW_OK, flags
 * KW_WAL_LOST, len 0) only when no replica has the record itself. Only pos->segment and pos->offset are needed; pos->lsn,
 * when non-zero, must match.
 */
kw_err_t kw_wal_read(kw_wal_t *wal, const kw_wal_pos_t *pos,
                     kw_wal_record_t *rec, char *errstr, size_t errlen);

/* Read by LSN: KW_ENOTFOUND when the LSN was cleaned or never written. */
kw_err_t kw_wal_read_lsn(kw_wal_t *wal, uint64_t lsn, kw_wal_record_t *rec,
                         char *errstr, size_t errlen);

/*
 * Sequential reading from from_lsn (0: the oldest record) for recovery. The
 * iterator sees records durable when each next() is called. next() returns
 * KW_OK with a record, KW_EOF at the end, or an error (never skips a bad
 * record silently). Free with kw_wal_iter_destroy (NULL is a no-op). One
 * thread per iterator.
 */
kw_err_t kw_wal_iter_new(kw_wal_t *wal, uint64_t from_lsn, kw_wal_iter_t **it,
                         char *errstr, size_t errlen);
kw_err_t kw_wal_iter_next(kw_wal_iter_t *it, kw_wal_record_t *rec,
                          char *errstr, size_t errlen);
void kw_wal_iter_destroy(kw_wal_iter_t *it);

/*
 * Delete, on every healthy replica, every segment all of whose records have an
 * LSN below below_lsn. Never deletes the segment being written. The WAL never
 * decides on its own what is safe to delete: the caller gives the LSN.
 * *deleted (may be NULL) gets the number of segments removed.
 */
kw_err_t kw_wal_cleanup(kw_wal_t *wal, uint64_t below_lsn, int *deleted,
                        char *errstr, size_t errlen);

typedef enum {
    KW_REPLICA_HEALTHY = 0,
    KW_REPLICA_FAILED  = 1
} kw_replica_state_t;

typedef struct kw_wal_replica_info {
    const char        *dir;       /* owned by the WAL's options */
    kw_replica_state_t state;
    char               reason[160]; /* why it failed, empty if healthy */
    uint64_t           written_lsn; /* last LSN fdatasync'ed on this replica */
} kw_wal_replica_info_t;

/* Fills info[0..ndirs-1]; returns the number of healthy replicas. */
int kw_wal_health(kw_wal_t *wal, kw_wal_replica_info_t *info, int ninfo);

typedef struct kw_wal_stats {
    uint64_t appends;          /* acknowledged appends */
    uint64_t append_bytes;     /* payload bytes acknowledged (before compression) */
    uint64_t stored_bytes;     /* record bytes written per replica (headers included) */
    uint64_t writes;           /* pwritev calls, all replicas */
    uint64_t fsyncs;           /* fdatasync calls on segments, all replicas */
    kw_hist_summary_t fsync_us; /* how long each of those took, in microseconds
                                * (kw_hist.h: nearest-rank, exact below 64 us) */
    uint64_t rolls;            /* segments created */
    uint64_t read_fallbacks;   /* reads served by another replica after a bad checksum */
    uint64_t first_lsn;        /* oldest LSN still in the log, 0 if empty */
    uint64_t durable_lsn;      /* highest acknowledged LSN */
    uint64_t next_lsn;         /* an append that starts now gets at least this LSN */
    int      replicas_healthy;
} kw_wal_stats_t;

void kw_wal_stats(kw_wal_t *wal, kw_wal_stats_t *stats);

/* Information about one segment, for `kwal wal ls`. */
typedef struct kw_wal_segment_info {
    uint64_t first_lsn;
    uint64_t last_lsn;         /* first_lsn - 1 if empty */
    uint64_t bytes;
    uint64_t created_ms;
} kw_wal_segment_info_t;

/* Fills up to nmax entries, oldest first; returns the total count. */
size_t kw_wal_segments(kw_wal_t *wal, kw_wal_segment_info_t *out, size_t nmax);

/* One problem found by kw_wal_verify. */
typedef struct kw_wal_problem {
    int      replica;
    char     segment[32];      /* file name */
    uint64_t offset;
    char     what[200];
} kw_wal_problem_t;

typedef void (*kw_wal_problem_cb)(const kw_wal_problem_t *p, void *opaque);

/*
 * Check every record of every replica, failed ones included: headers,
 * checksums, LSN sequence, LZ4 payloads, that replicas agree. Never writes.
 * If no process has the WAL open, verify holds a shared lock meanwhile (an
 * opener then gets KW_ELOCKED) and checks everything. If the WAL is open
 * elsewhere (live), what is being written is left out: the tail of each
 * replica's last segment, segments newer than the snapshot, and how far each
 * replica got in the newest segment. Calls cb for each problem; returns the
 * number of problems (0: all good) or a negative kw_err_t when the WAL could
 * not be read at all. *live (may be NULL) tells which check ran.
 */
long kw_wal_verify(const kw_wal_options_t *opts, kw_wal_problem_cb cb,
                   void *opaque, int *live, char *errstr, size_t errlen);

/*
 * Rebuild replica `replica` (index into opts->dirs) from a healthy one: copy
 * every segment, fsync, mark it healthy in every replica's STATE. Takes the WAL
 * lock, so the WAL must not be open elsewhere. *copied_bytes may be NULL.
 */
kw_err_t kw_wal_repair(const kw_wal_options_t *opts, int replica,
                       uint64_t *copied_bytes, char *errstr, size_t errlen);

#endif /* KW_WAL_H */
