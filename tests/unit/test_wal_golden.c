/*
 * test_wal_golden.c -- locks the WAL's on-disk format (wal/FORMAT.md,
 * version 1).
 *
 * How: tests/golden/wal-v1/ is a one-replica WAL written once by the code of
 * its day (STATE and segments, no LOCK). Its records are derived from their
 * LSN alone (golden_len, golden_fill, golden_flags below), so the test knows
 * every payload without storing it twice. The test
 *
 *   1. copies the golden replica to a temporary directory, opens the copy
 *      with read_only = 1, and reads every record back by LSN and with an
 *      iterator, comparing lengths, bytes and the compressed flag; checks
 *      kw_wal_verify finds nothing, and that no file of the copy changed;
 *   2. decodes the golden files itself, field by field from FORMAT.md
 *      (segment header, record header, both checksums, LSN sequence, LZ4
 *      payloads, the STATE text and its checksum), independently of
 *      wal/wal_format.c;
 *   3. writes a fresh WAL with today's code and decodes it the same way, so a
 *      change of format shows up even before anyone regenerates the golden
 *      files.
 *
 * Regenerate (only on a deliberate format change, with a new version):
 *   KWAL_GOLDEN_WRITE=/tmp/wal-v1 ./test_wal_golden
 *   rm -rf tests/golden/wal-v1 && cp -r /tmp/wal-v1 tests/golden/wal-v1
 * ctest sets KWAL_GOLDEN_DIR to tests/golden.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <inttypes.h>
#include <lz4.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "test_util.h"
#include "test_walcheck.h"
#include "wal.h"

#define GOLDEN_RECORDS   40
#define GOLDEN_FIRST_RUN 25      /* records 1..25 in the first session */
#define GOLDEN_SEG_BYTES 4096

/* ---- The golden records, a function of the LSN ---- */

static size_t golden_len(uint64_t lsn)
{
    if (lsn == 1)
        return 0;
    if (lsn == 20)
        return 6000;             /* compressible, stored compressed */
    if (lsn == 30)
        return 5000;             /* larger than a segment: a segment of its own */
    return (size_t)((lsn * 97) % 401);
}

static unsigned golden_flags(uint64_t lsn)
{
    return lsn == 20 || lsn == 21 ? KW_WAL_COMPRESS : 0;   /* 21: does not shrink, kept raw */
}

static void golden_fill(uint8_t *p, size_t len, uint64_t lsn)
{
    if (lsn == 20) {
        static const char text[] = "kwal golden record twenty; ";

        for (size_t j = 0; j < len; j++)
            p[j] = (uint8_t)text[j % (sizeof(text) - 1)];
        return;
    }
    /* xorshift64, written out byte by byte (same bytes on any machine). */
    uint64_t x = 0x9e3779b97f4a7c15ull ^ (lsn * 0x100000001b3ull);

    for (size_t j = 0; j < len; j++) {
        if (j % 8 == 0) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        p[j] = (uint8_t)(x >> (8 * (j % 8)));
    }
}

static uint8_t *golden_payload(uint64_t lsn, size_t *len)
{
    uint8_t *p;

    *len = golden_len(lsn);
    p = malloc(*len ? *len : 1);
    assert_non_null(p);
    golden_fill(p, *len, lsn);
    return p;
}

/* Write the golden WAL into dir (one replica). */
static void golden_write(const char *dir)
{
    kw_wal_options_t o;
    char path[4096];
    kw_wal_t *w;

    kw_wal_options_init(&o);
    o.dirs[0] = dir;
    o.ndirs = 1;
    o.segment_bytes = GOLDEN_SEG_BYTES;
    w = test_wal_open_ok(&o, NULL);
    for (uint64_t lsn = 1; lsn <= GOLDEN_RECORDS; lsn++) {
        size_t len;
        uint8_t *p = golden_payload(lsn, &len);

        if (lsn == GOLDEN_FIRST_RUN + 1) {      /* a restart in the middle */
            kw_wal_close(w);
            w = test_wal_open_ok(&o, NULL);
        }
        assert_int_equal(test_append_ok(w, NULL, p, len, golden_flags(lsn)).lsn, lsn);
        free(p);
    }
    kw_wal_close(w);
    test_path(path, sizeof(path), "%s/LOCK", dir);
    unlink(path);
}

/* ---- An independent decoder of FORMAT.md ---- */

static uint16_t le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t le32(const uint8_t *p) { return (uint32_t)le16(p) | (uint32_t)le16(p + 2) << 16; }
static uint64_t le64(const uint8_t *p) { return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32; }

static void hex(const uint8_t *p, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", p[i]);
}

/* STATE: the text lines of FORMAT.md and the XXH3-64 of all bytes before the
 * checksum line. Returns the wal_id in hex. */
static void decode_state(const char *dir, char wal_id_hex[33])
{
    char path[4096], *text, *line, *save = NULL, want[32];
    uint8_t *data;
    size_t len, body;
    int seen = 0;

    test_path(path, sizeof(path), "%s/STATE", dir);
    assert_int_equal(test_read_file(path, &data, &len), 0);
    text = calloc(1, len + 1);
    assert_non_null(text);
    memcpy(text, data, len);
    line = strstr(text, "checksum ");
    assert_non_null(line);
    body = (size_t)(line - text);
    snprintf(want, sizeof(want), "checksum %016" PRIx64 "\n", (uint64_t)XXH3_64bits(data, body));
    assert_string_equal(line, want);
    for (line = strtok_r(text, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
        unsigned long long v;

        if (seen == 0)
            assert_string_equal(line, "kwal-wal-state 1");
        else if (strncmp(line, "wal_id ", 7) == 0) {
            assert_int_equal(strlen(line + 7), 32);
            memcpy(wal_id_hex, line + 7, 33);
        } else if (strncmp(line, "replica_id ", 11) == 0)
            assert_int_equal(strlen(line + 11), 16);
        else if (sscanf(line, "generation %llu", &v) == 1)
            assert_true(v >= 1);
        else if (sscanf(line, "replicas %llu", &v) == 1)
            assert_int_equal(v, 1);
        else if (strcmp(line, "failed") == 0 || strcmp(line, "failed ") == 0)
            ;                                   /* no failed replica */
        else if (strcmp(line, "failed_dirs") == 0)
            ;                                   /* optional (added later in v1) */
        else if (strncmp(line, "checksum ", 9) != 0)
            fail_msg("STATE: unexpected line \"%s\"", line);
        seen++;
    }
    assert_true(seen == 7 || seen == 8);        /* with or without failed_dirs */
    free(text);
    free(data);
}

/* Every segment: header, records, checksums, LSNs, LZ4. Compares payloads
 * with golden_payload when golden is set. Returns the number of records. */
static uint64_t decode_segments(const char *dir, int golden)
{
    char **names, wal_id[33] = "";
    size_t nnames;
    uint64_t expect_lsn = 0, records = 0;

    decode_state(dir, wal_id);
    assert_int_equal(test_list_dir(dir, ".seg", &names, &nnames), 0);
    assert_true(nnames >= 2);
    for (size_t k = 0; k < nnames; k++) {
        char path[4096], idhex[33], name[64];
        uint8_t *d;
        size_t len, off = 64;
        uint64_t first;

        test_path(path, sizeof(path), "%s/%s", dir, names[k]);
        assert_int_equal(test_read_file(path, &d, &len), 0);
        assert_true(len >= 64);
        /* Segment header (64 bytes). */
        assert_memory_equal(d, "KWALSEG1", 8);
        assert_int_equal(le16(d + 8), 1);                  /* version */
        assert_int_equal(le16(d + 10), 64);                /* header_size */
        assert_int_equal(le32(d + 12), 0);                 /* flags */
        hex(d + 16, 16, idhex);
        assert_string_equal(idhex, wal_id);                /* wal_id as in STATE */
        first = le64(d + 32);
        test_seg_name(name, sizeof(name), first);
        assert_string_equal(names[k], name);               /* first_lsn == name */
        assert_true(le64(d + 40) > 1500000000000ull);      /* created_ms: wall clock */
        assert_int_equal(le64(d + 48), 0);                 /* reserved */
        assert_int_equal(le64(d + 56), XXH3_64bits(d, 56));
        if (expect_lsn == 0)
            expect_lsn = first;
        assert_int_equal(first, expect_lsn);
        /* Records, back to back. */
        while (off < len) {
            const uint8_t *h = d + off;
            uint8_t in[32];
            uint32_t slen, rlen;
            unsigned flags;

            assert_true(off + 32 <= len);
            assert_int_equal(le32(h), 0x3152574Bu);
            assert_memory_equal(h, "KWR1", 4);
            assert_int_equal(h[4], 1);                     /* version */
            assert_int_equal(h[5], 1);                     /* type DATA */
            flags = le16(h + 6);
            assert_int_equal(flags & ~3u, 0);
            slen = le32(h + 8);
            rlen = le32(h + 12);
            assert_true(slen <= KW_WAL_MAX_RECORD);
            assert_true(off + 32 + slen <= len);
            if (!(flags & 1u))
                assert_int_equal(rlen, slen);
            assert_int_equal(le64(h + 16), expect_lsn);
            /* Checksum: XXH3-64 of header bytes 0..23 + XXH3-64(payload) LE. */
            memcpy(in, h, 24);
            {
                uint64_t ph = XXH3_64bits(h + 32, slen);

                for (int b = 0; b < 8; b++)
                    in[24 + b] = (uint8_t)(ph >> (8 * b));
            }
            assert_int_equal(le64(h + 24), XXH3_64bits(in, 32));
            /* One record per append, each its own write batch. */
            if (golden)
                assert_true(flags & 2u);
            if (golden) {
                size_t glen;
                uint8_t *want = golden_payload(expect_lsn, &glen);

                assert_int_equal(rlen, glen);
                if (flags & 1u) {
                    uint8_t *raw = malloc(rlen ? rlen : 1);

                    assert_non_null(raw);
                    assert_int_equal(LZ4_decompress_safe((const char *)h + 32, (char *)raw,
                                                         (int)slen, (int)rlen), (int)rlen);
                    assert_memory_equal(raw, want, rlen);
                    free(raw);
                } else if (glen > 0) {
                    assert_memory_equal(h + 32, want, glen);
                }
                assert_int_equal((flags & 1u) != 0, expect_lsn == 20);
                free(want);
            }
            off += 32 + slen;
            expect_lsn++;
            records++;
        }
        assert_int_equal(off, len);
        free(d);
    }
    test_free_names(names, nnames);
    return records;
}

/* ---- Tests ---- */

/* The golden replica directory; skips the test when KWAL_GOLDEN_DIR is
 * unset (a run by hand), fails it when the files are missing. */
static const char *golden_src(char *buf, size_t cap)
{
    const char *base = getenv("KWAL_GOLDEN_DIR");

    if (base == NULL) {
        print_message("KWAL_GOLDEN_DIR unset: skipped (ctest sets it)\n");
        skip();
        return NULL;                  /* not reached: skip() leaves the test */
    }
    test_path(buf, cap, "%s/wal-v1", base);
    if (access(buf, F_OK) != 0)
        fail_msg("golden WAL %s missing", buf);
    return buf;
}

/* A temporary root per test, removed by teardown even when a test fails. */
static int setup(void **state)
{
    *state = test_tmpdir_new("golden");
    return *state != NULL ? 0 : -1;
}

static int teardown(void **state)
{
    test_rmtree(*state);
    free(*state);
    return 0;
}

/* The golden WAL opens read-only, yields exactly its payloads, verifies
 * clean, and is left untouched. */
static void test_golden_read(void **state)
{
    char srcbuf[4096], copy[4096];
    const char *src = golden_src(srcbuf, sizeof(srcbuf));
    kw_wal_options_t o;
    kw_wal_open_report_t rep;
    kw_wal_record_t rec;
    kw_wal_iter_t *it = NULL;
    char *root = *state, err[256], **before, **after;
    size_t nbefore, nafter, nseg;
    kw_wal_t *w;
    kw_err_t rc;

    memset(&rec, 0, sizeof(rec));
    test_path(copy, sizeof(copy), "%s/wal-v1", root);
    assert_int_equal(test_copy_tree(src, copy), 0);
    assert_int_equal(test_list_dir(copy, NULL, &before, &nbefore), 0);

    kw_wal_options_init(&o);
    o.dirs[0] = copy;
    o.ndirs = 1;
    o.read_only = 1;
    w = test_wal_open_ok(&o, &rep);
    assert_int_equal(rep.first_lsn, 1);
    assert_int_equal(rep.last_lsn, GOLDEN_RECORDS);
    assert_int_equal(rep.torn_tails, 0);
    assert_int_equal(rep.corrupt_records, 0);
    nseg = kw_wal_segments(w, NULL, 0);
    assert_int_equal((long)nseg, test_count_files(copy, ".seg"));
    assert_true(nseg >= 3);

    for (uint64_t lsn = 1; lsn <= GOLDEN_RECORDS; lsn++) {
        size_t len;
        uint8_t *want = golden_payload(lsn, &len);

        rc = test_read_lsn(w, lsn, &rec, err, sizeof(err));
        if (rc != KW_OK)
            fail_msg("golden LSN %" PRIu64 ": %s: %s", lsn, kw_err_name(rc), err);
        assert_int_equal(rec.pos.lsn, lsn);
        assert_int_equal(rec.len, len);
        if (len > 0)
            assert_memory_equal(rec.payload, want, len);
        assert_int_equal((rec.flags & KW_WAL_COMPRESS) != 0, lsn == 20);
        if (lsn == 30)
            assert_int_equal(rec.pos.segment, 30);
        free(want);
    }
    assert_int_equal(test_read_lsn(w, GOLDEN_RECORDS + 1, &rec, err, sizeof(err)), KW_ENOTFOUND);
    assert_int_equal(kw_wal_iter_new(w, 0, &it, err, sizeof(err)), KW_OK);
    for (uint64_t lsn = 1; lsn <= GOLDEN_RECORDS; lsn++) {
        size_t len;
        uint8_t *want = golden_payload(lsn, &len);

        assert_int_equal(test_iter_next(it, &rec, err, sizeof(err)), KW_OK);
        assert_int_equal(rec.pos.lsn, lsn);
        assert_int_equal(rec.len, len);
        if (len > 0)
            assert_memory_equal(rec.payload, want, len);
        free(want);
    }
    assert_int_equal(test_iter_next(it, &rec, err, sizeof(err)), KW_EOF);
    kw_wal_iter_destroy(it);
    /* Read-only: no appends. */
    assert_int_not_equal(kw_wal_append(w, "x", 1, 0, NULL, err, sizeof(err)), KW_OK);
    kw_wal_close(w);
    assert_int_equal(test_verify(&o, NULL), 0);

    /* Nothing was created, removed or changed. */
    assert_int_equal(test_list_dir(copy, NULL, &after, &nafter), 0);
    assert_int_equal(nafter, nbefore);
    for (size_t i = 0; i < nbefore; i++) {
        char a[4096], b[4096];

        assert_string_equal(before[i], after[i]);
        test_path(a, sizeof(a), "%s/%s", src, before[i]);
        test_path(b, sizeof(b), "%s/%s", copy, before[i]);
        if (!test_files_equal(a, b))
            fail_msg("read-only open changed %s", before[i]);
    }
    test_free_names(before, nbefore);
    test_free_names(after, nafter);
    kw_wal_record_clear(&rec);
}

/* The golden files decode by FORMAT.md alone. */
static void test_golden_format(void **state)
{
    char srcbuf[4096];
    const char *src = golden_src(srcbuf, sizeof(srcbuf));

    (void)state;
    assert_int_equal(decode_segments(src, 1), GOLDEN_RECORDS);
}

/* What today's code writes still decodes by FORMAT.md. */
static void test_fresh_format(void **state)
{
    char dir[4096];

    test_path(dir, sizeof(dir), "%s/r0", (char *)*state);
    golden_write(dir);
    assert_int_equal(decode_segments(dir, 1), GOLDEN_RECORDS);
}

int main(void)
{
    const char *out = getenv("KWAL_GOLDEN_WRITE");
    const struct CMUnitTest write_tests[] = {
        cmocka_unit_test_setup_teardown(test_fresh_format, setup, teardown),
    };
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_golden_read, setup, teardown),
        cmocka_unit_test(test_golden_format),
        cmocka_unit_test_setup_teardown(test_fresh_format, setup, teardown),
    };

    if (out != NULL) {
        int rc;

        /* Regenerate: check that today's code is consistent first. */
        rc = cmocka_run_group_tests_name("wal_golden_write", write_tests, NULL, NULL);
        if (rc != 0)
            return rc;
        if (access(out, F_OK) == 0) {
            fprintf(stderr, "KWAL_GOLDEN_WRITE: %s exists; give a new directory\n", out);
            return 1;
        }
        golden_write(out);
        fprintf(stderr, "golden WAL written to %s\n", out);
        return 0;
    }
    if (getenv("KWAL_TEST_FILTER") != NULL)
        cmocka_set_test_filter(getenv("KWAL_TEST_FILTER"));
    return cmocka_run_group_tests_name("wal_golden", tests, NULL, NULL);
}
