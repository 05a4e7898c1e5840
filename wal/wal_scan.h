/*
 * wal_scan.h -- scanning a replica's segments (wal_open.c), shared by open,
 * verify and repair. Private to wal/.
 */
#ifndef KW_WAL_SCAN_H
#define KW_WAL_SCAN_H

#include "wal_int.h"

typedef enum {
    KW__SPOT_RECORD = 0,   /* an invalid record */
    KW__SPOT_HEADER = 1,   /* an unusable segment header */
    KW__SPOT_GAP    = 2    /* LSNs missing between two segments */
} kw__spot_kind_t;

/* One place where a scan found something wrong. */
typedef struct kw__spot {
    size_t   seg;          /* index into kw__repscan_t.segs */
    uint64_t offset;
    uint64_t expect;       /* LSN expected there */
    uint64_t resume_off;   /* next valid record after it, UINT64_MAX if none */
    uint64_t resume_lsn;   /* its LSN, 0 if none */
    int      torn;         /* the torn-tail rule of FORMAT.md holds */
    kw__spot_kind_t kind;
    char     what[160];
} kw__spot_t;

typedef struct kw__repscan {
    kw__segscan_t *segs;
    size_t         nsegs;
    kw__spot_t    *spots;
    size_t         nspots;
    uint64_t       records;
    uint64_t       last_lsn;
} kw__repscan_t;

/* Scan every segment in dir (never modifies anything). check_lz4 also
 * decompresses LZ4 payloads. */
kw_err_t kw__scan_replica(const kw_wal_io_t *io, int r, const char *dir,
                          const uint8_t *wal_id, int check_lz4, kw__repscan_t *s,
                          char *errstr, size_t errlen);
void kw__repscan_free(kw__repscan_t *s);

/* 1 when an LZ4 block of len bytes decompresses to exactly raw_len bytes. */
int kw__lz4_check(const uint8_t *src, uint32_t len, uint32_t raw_len);

#endif /* KW_WAL_SCAN_H */
