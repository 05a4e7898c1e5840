/*
 * wal_int.h -- internals shared by the WAL's source files. Include only from
 * wal/. The format constants mirror wal/FORMAT.md field by field.
 */
#ifndef KW_WAL_INT_H
#define KW_WAL_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "kw_hist.h"
#include "wal.h"

/* ---- Format (FORMAT.md) ---- */

#define KW__SEG_MAGIC          "KWALSEG1"
#define KW__SEG_VERSION        1
#define KW__SEG_HDR_SIZE       64
#define KW__REC_MAGIC          0x3152574Bu     /* "KWR1" as bytes */
#define KW__REC_VERSION        1
#define KW__REC_TYPE_DATA      1
#define KW__REC_TYPE_LOST      2   /* placeholder for a record given up (skip_lost) */
#define KW__REC_HDR_SIZE       32
#define KW__REC_FLAG_LZ4       0x1u
#define KW__REC_FLAG_BATCH_END 0x2u
#define KW__REC_FLAGS_KNOWN    (KW__REC_FLAG_LZ4 | KW__REC_FLAG_BATCH_END)
#define KW__WAL_ID_LEN         16
#define KW__SEG_NAME_LEN       24              /* 20 digits + ".seg" */

typedef struct kw__seg_hdr {
    uint8_t  wal_id[KW__WAL_ID_LEN];
    uint64_t first_lsn;
    uint64_t created_ms;
} kw__seg_hdr_t;

typedef struct kw__rec_hdr {
    unsigned type;          /* KW__REC_TYPE_*; 0 is written as DATA */
    unsigned flags;
    uint32_t length;        /* stored payload bytes */
    uint32_t raw_length;    /* after decompression */
    uint64_t lsn;
    uint64_t checksum;
} kw__rec_hdr_t;

void kw__seg_hdr_encode(const kw__seg_hdr_t *h, uint8_t out[KW__SEG_HDR_SIZE]);
/* 0 when magic, version, size, flags and checksum are right; -1 otherwise. */
int kw__seg_hdr_decode(const uint8_t in[KW__SEG_HDR_SIZE], kw__seg_hdr_t *h);

/* XXH3-64 of a payload: the inner hash of a record checksum. */
uint64_t kw__payload_hash(const void *payload, size_t len);
/* Write a record header; h->checksum is computed from the other fields and
 * payload_hash (kw__payload_hash of the stored payload) and stored back. */
void kw__rec_hdr_encode(kw__rec_hdr_t *h, uint64_t payload_hash,
                        uint8_t out[KW__REC_HDR_SIZE]);
/* Structural checks of FORMAT.md "Valid record" rule 2 (not the checksum):
 * 0 if they pass, -1 otherwise. */
int kw__rec_hdr_decode(const uint8_t in[KW__REC_HDR_SIZE], kw__rec_hdr_t *h);
/* Rule 3: 1 when the checksum in the header matches the stored payload. */
int kw__rec_checksum_ok(const uint8_t hdr[KW__REC_HDR_SIZE], const void *payload,
                        size_t len);

/* "<20-digit lsn>.seg" into buf (at least KW__SEG_NAME_LEN + 1 bytes). */
void kw__seg_name(uint64_t first_lsn, char *buf, size_t cap);
/* 1 and *first_lsn when name is a segment file name. */
int kw__seg_name_parse(const char *name, uint64_t *first_lsn);

/* ---- STATE file ---- */

typedef struct kw__state {
    uint8_t  wal_id[KW__WAL_ID_LEN];
    uint64_t replica_id;
    uint64_t generation;
    int      replicas;
    int      nfailed;
    uint64_t failed[KW_WAL_MAX_REPLICAS * 4];
    int      nfailed_dirs;
    uint64_t failed_dirs[KW_WAL_MAX_REPLICAS * 4];  /* kw__dir_hash of the dirs */
} kw__state_t;

/* Text form of FORMAT.md "STATE"; returns its length (< cap) or -1. */
int kw__state_format(const kw__state_t *s, char *buf, size_t cap);
kw_err_t kw__state_parse(const char *buf, size_t len, kw__state_t *s,
                         char *errstr, size_t errlen);
/* 1 when the replica with this id or this directory is listed as failed. */
int kw__state_is_failed(const kw__state_t *s, uint64_t replica_id, const char *dir);
/* XXH3-64 of a replica directory as written in wal.dirs. */
uint64_t kw__dir_hash(const char *dir);

/* ---- Small I/O helpers over the table (wal_io.c) ---- */

/* Full pread: returns bytes read (short only at end of file) or -1. */
ssize_t kw__pread_full(const kw_wal_io_t *io, int r, int fd, void *buf,
                       size_t len, off_t off);
/* Full pwritev of one buffer: 0 or -1 (errno set; a zero-byte write is EIO). */
int kw__pwrite_full(const kw_wal_io_t *io, int r, int fd, const void *buf,
                    size_t len, off_t off);
/* open dir, fsync, close: 0 or -1. */
int kw__fsync_dir(const kw_wal_io_t *io, int r, const char *dir);
/* Atomically replace dir/name with data: tmp, fdatasync, rename, fsync dir. */
int kw__write_file_atomic(const kw_wal_io_t *io, int r, const char *dir,
                          const char *name, const void *data, size_t len);
/* Read a whole small file (< cap bytes) into buf; length or -1 (errno). */
ssize_t kw__read_small_file(const kw_wal_io_t *io, int r, const char *path,
                            char *buf, size_t cap);
/* Sorted first LSNs of the segment files in dir; *out malloc'd. -1 on error. */
int kw__list_segments(const char *dir, uint64_t **out, size_t *n);
uint64_t kw__now_ms(void);

/* ---- Scanning (wal_open.c) ---- */

/* One segment of one replica as found by a scan. */
typedef struct kw__segscan {
    uint64_t first_lsn;
    uint64_t last_lsn;      /* first_lsn - 1 when it holds no valid record */
    uint64_t valid_bytes;   /* end of the last valid record (or header) */
    uint64_t file_bytes;
    uint64_t created_ms;
    int      header_ok;
} kw__segscan_t;

typedef void (*kw__problem_fn)(int replica, uint64_t segment, uint64_t offset,
                               const char *what, void *opaque);

/* The valid-record rule (FORMAT.md): the header decodes, the payload is all
 * there (avail bytes after the header), the checksum holds, and the LSN is
 * expect_lsn (0: any). 0, or -1 with what saying why (wal_format.c). */
int kw__rec_check(const uint8_t *hdr, const uint8_t *payload, uint64_t avail,
                  uint64_t expect_lsn, kw__rec_hdr_t *h, char *what, size_t whatlen);

/* Read and check the record at (segment file fd, off) of replica r (wal_io.c); on success
 * returns 0 and fills *h and, if payload is non-NULL, a malloc'd copy of the
 * stored payload. expect_lsn 0 accepts any LSN. -1: invalid (what says why). */
int kw__read_record(const kw_wal_io_t *io, int r, int fd, uint64_t off,
                    uint64_t file_size, uint64_t expect_lsn, kw__rec_hdr_t *h,
                    uint8_t **payload, char *what, size_t whatlen);

/* ---- The handle ---- */

/* An appended record on its way to the replicas. Immutable once queued, except
 * batch_end and hdr (BATCH_END), which the sealing I/O thread sets under the
 * lock, and payload, which its appender may swap for an owned copy under the
 * lock while no replica is writing it. The payload is the caller's buffer
 * (zero copy) until then; see keep_payload() in wal.c. */
typedef struct kw__entry {
    struct kw__entry *next;
    uint64_t lsn;
    uint64_t segment;
    uint64_t offset;
    uint64_t seg_created_ms;  /* for the segment header when starts_segment */
    int      starts_segment;  /* roll to a new segment before this record */
    int      batch_end;
    size_t   len;             /* header + stored payload */
    uint64_t payload_hash;
    uint8_t  hdr[KW__REC_HDR_SIZE];
    const uint8_t *payload;   /* stored payload: the caller's, or owned */
    uint8_t *owned;           /* malloc'd payload (compressed or copied), or NULL */
} kw__entry_t;

typedef struct kw__replica {
    kw_wal_t    *wal;
    int          index;
    char        *dir;
    uint64_t     id;
    int          lock_fd;
    int          failed;
    char         reason[160];
    pthread_t    thread;
    int          thread_started;
    pthread_cond_t cv;          /* its I/O thread waits here for work */
    /* Owned by the replica's I/O thread. */
    int          seg_fd;
    uint64_t     seg_first;
    /* Under wal->mu. */
    kw__entry_t *next;          /* next entry to write, NULL if none queued */
    uint64_t     done_lsn;      /* last LSN written and fdatasync'ed */
    uint64_t     state_gen;     /* STATE generation this replica holds */
    int          busy;          /* the write token: its holder (the I/O thread or
                                 * a leading appender) writes entries without mu;
                                 * they stay allocated even if it is failed */
    uint64_t     busy_lsn;      /* the first LSN of that write */
    uint64_t     busy_end;      /* and its last */
} kw__replica_t;

typedef struct kw__seg {
    uint64_t first_lsn;
    uint64_t last_lsn;
    uint64_t bytes;
    uint64_t created_ms;
} kw__seg_t;

struct kw_wal {
    kw_wal_options_t opts;      /* dirs point into replica[].dir */
    const kw_wal_io_t *io;
    int              nrep;
    int              quorum;
    uint8_t          wal_id[KW__WAL_ID_LEN];
    kw__replica_t    rep[KW_WAL_MAX_REPLICAS];

    pthread_mutex_t  mu;
    pthread_cond_t   cv_io;      /* broadcast on every queued record (linger) */
    pthread_cond_t   cv_ack;     /* appenders wait for durability */

    /* Under mu. */
    kw__seg_t       *segs;       /* oldest first */
    size_t           nsegs, capsegs;
    int              seg_open;   /* the last segment takes appends */
    kw__entry_t     *head, *tail;
    uint64_t         pending_bytes;
    uint64_t         next_lsn;
    uint64_t         durable_lsn;
    uint64_t         sealed_lsn;
    uint64_t         generation; /* STATE generation in force */
    int              broken;     /* below quorum: appends fail */
    int              inside;     /* appenders inside kw_wal_append */
    int              inside_peak;/* most appenders inside since the last seal */
    uint64_t         last_sync_ns; /* duration of the last batch write + sync */
    int              closing;

    /* Statistics. */
    atomic_uint_fast64_t st_appends, st_append_bytes, st_stored_bytes;
    atomic_uint_fast64_t st_writes, st_fsyncs, st_rolls, st_read_fallbacks;
    kw_hist_t            st_fsync_us;   /* each counted fdatasync's duration, us */
};

/* wal_open.c: opening (FORMAT.md's recovery algorithm). The files call
 * downwards only: wal_admin -> wal_open -> wal -> wal_io -> wal_format. */
kw_err_t kw__open_replicas(kw_wal_t *w, kw_wal_open_report_t *rep,
                           char *errstr, size_t errlen);
/* kw_wal_open, optionally without I/O threads (repair works alone). */
kw_err_t kw__open(const kw_wal_options_t *opts, int start_threads, kw_wal_t **wal,
                  kw_wal_open_report_t *report, char *errstr, size_t errlen);
/* wal_io.c: release the replicas' locks. */
void kw__unlock_replicas(kw_wal_t *w);
/* The failed set as STATE records it: ids and directory hashes. */
typedef struct kw__failed_set {
    int      n;
    uint64_t ids[KW_WAL_MAX_REPLICAS];
    uint64_t dirs[KW_WAL_MAX_REPLICAS];
} kw__failed_set_t;

/* Write STATE with this generation and failed set to replica r (wal_io.c).
 * Without mu. */
int kw__write_state(kw_wal_t *w, int r, uint64_t generation, const kw__failed_set_t *fs);
/* Collect the failed replicas (under mu or single-threaded). */
void kw__failed_set(kw_wal_t *w, kw__failed_set_t *fs);

/* wal.c */
/* After the replicas are open: settle the sequence and start one I/O thread
 * per healthy replica (unless read-only or !start_threads). */
kw_err_t kw__start_io(kw_wal_t *w, int start_threads, char *errstr, size_t errlen);
void kw__replica_fail(kw_wal_t *w, int r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));   /* holds mu */
int kw__segs_push(kw_wal_t *w, const kw__seg_t *s);
void kw__free_handle(kw_wal_t *w);
kw_err_t kw__alloc_handle(const kw_wal_options_t *opts, kw_wal_t **out,
                          char *errstr, size_t errlen);
/* Copy [from, to) of segment file `name` from replica src to replica dst
 * (as dst_name there, or name when NULL), then fdatasync; create makes a new
 * file (and fsyncs the directory). 0 or -1 with errno. */
int kw__copy_range(kw_wal_t *w, int src, int dst, const char *name,
                   const char *dst_name, uint64_t from, uint64_t to, int create);
/* Write a new STATE generation to every healthy replica (single-threaded use). */
kw_err_t kw__persist_states(kw_wal_t *w, char *errstr, size_t errlen);

#endif /* KW_WAL_INT_H */
