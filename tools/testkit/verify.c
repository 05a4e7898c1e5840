/*
 * verify.c -- kwal-verify: check an output (a kwal sink, or kcat's -J
 * output) against a kwal-loadgen workload: expected, stored, missing,
 * duplicated, corrupt and foreign records.
 *
 * The workload is the sequence numbers first .. first+N-1 of one run id
 * (record format: workload.h). It comes from --manifest FILE (written by
 * kwal-loadgen), or from --expect N [--first SEQ] [--run-id HEX]; without a
 * run id the run holding the most valid records is taken as the workload.
 *
 * Outputs read (any number of them, pooled):
 *   --sqlite PATH   the sqlite sink's table records(topic, partition, offset,
 *                   ts, key, payload, batch) (DESIGN.md, "Outputs")
 *   --files DIR     the file sink: every regular file in DIR whose name does
 *                   not start with '.' and does not end in ".tmp", in name
 *                   order, each JSON lines in kcat's -J envelope
 *   --jsonl FILE    one file of such JSON lines ("-" for stdin)
 *   --postgresql CONNINFO  the postgresql sink's table records (the same
 *                   columns; libpq connection string or postgresql:// URI)
 *   --kafka BOOTSTRAP/TOPIC  the Kafka sink's output topic (the last '/'
 *                   separates the bootstrap servers from the topic), read
 *                   with a read_committed consumer from the beginning of
 *                   every partition to its last stable offset
 *                   (verify_kafka.h: the record format, how it reads);
 *                   --kafka-timeout MS (default 30000) bounds the whole
 *                   read, -X NAME=VALUE passes librdkafka properties (TLS)
 *
 * How it works: every record read is classified once, as it is read --
 *   * corrupt: a line that is not a valid envelope (verify_json.h), a null
 *     or malformed payload, a checksum mismatch, a payload size other than
 *     the manifest's, or a key that is not the payload's sequence number;
 *     each is listed with its location (FILE:LINE or PATH row N) and
 *     topic/partition@offset;
 *   * valid: run id and sequence number kept;
 * and a compact entry (run, seq, topic, partition, offset, class) is kept
 * per record.
 *
 * A --kafka record is classified by its SOURCE coordinates, taken from its
 * kwal.topic, kwal.partition and kwal.offset headers (so "topic/partition
 * @offset" below means the source's, and --topic filters source topics); a
 * record without them as its last three headers, or with unparsable ones,
 * is corrupt, listed by its output partition@offset. A valid one must also
 *   * be in output partition (source partition mod the partition count);
 *   * with the manifest's timestamps=1, have the timestamp (CreateTime) of
 *     its payload's ts_us / 1000;
 *   * with the manifest's headers=1, have exactly four headers, the first
 *     wl.seq = its sequence number;
 * else it is corrupt, with the reason. And an order check: within one
 * output partition, the records of each source (topic, partition) must
 * have strictly increasing source offsets in the order read (output
 * offset order); each record whose source offset is not above the one
 * before it counts as out_of_order, listed as output topic/partition
 * @offset with its source coordinates (a copy read right after its
 * original counts there too, as well as a duplicate).
 *
 * Records of a topic other than --topic (or the manifest's topic) are
 * skipped and counted. At the end, the entries are sorted by
 * (run, seq) to find the workload's run, missing sequence numbers (printed
 * as ranges), sequence numbers stored more than once, and out-of-range
 * ones; then by (topic, partition, offset) to find offsets stored more than
 * once and count records per partition; --kafka records are also sorted
 * by (output topic, output partition, source topic, source partition,
 * output offset) for the order check. Memory: about 40 bytes a record
 * (--kafka: 32 more).
 *
 * Output on stdout: detail lines (each starting with a word and ':'), then
 * as the last line the summary
 *
 *   expected=N stored=S missing=M duplicates=D duplicate_offsets=O corrupt=C
 *   foreign=F out_of_range=R      (one line)
 *
 * with " out_of_order=K" at its end when a --kafka output is read (and
 * only then, so the line stays the same for the other outputs). The
 * detail line "partitions: N -- TOPIC/P=COUNT, ..." counts records per
 * (topic, partition); --print-ends adds "ends: N -- TOPIC/P=END, ...",
 * one past the highest offset stored per (topic, partition) -- for
 * --kafka the source's, so a harness can compare them with the source
 * topic's end offsets.
 *
 * stored counts the valid records of the workload's run, every copy;
 * missing counts sequence numbers of the workload with no valid record;
 * duplicates and duplicate_offsets count extra copies (a record stored
 * three times adds 2); foreign counts valid records of other runs (not an
 * error by itself). Exit status: 0 when stored = expected and missing,
 * duplicates, duplicate_offsets, corrupt (and out_of_order) are all 0; 1
 * otherwise; 2 for bad arguments or an output that cannot be read (for
 * --kafka also: the topic does not exist, or the read did not finish
 * within --kafka-timeout -- the message names the partitions not
 * finished).
 */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <libpq-fe.h>
#include <sqlite3.h>

#include "cli.h"
#include "verify_json.h"
#include "verify_kafka.h"
#include "workload.h"

#define PROG "kwal-verify"
#define EXIT_USAGE 2
#define MAX_INPUTS 64
#define MAX_XPROPS 64

typedef enum { IN_SQLITE, IN_FILES, IN_JSONL, IN_POSTGRESQL, IN_KAFKA } input_kind_t;

typedef struct {
    input_kind_t kind;
    const char *path;
    char *bootstrap;        /* IN_KAFKA: path up to its last '/' (owned) */
    const char *ktopic;     /* IN_KAFKA: path after its last '/' */
} input_t;

typedef struct {
    const char *manifest;
    uint64_t expect;
    bool have_expect;
    uint64_t first;
    bool have_first;
    uint64_t run;
    bool have_run;
    uint64_t size;          /* 0: any */
    const char *topic;      /* NULL: every topic */
    uint64_t max_list;
    input_t inputs[MAX_INPUTS];
    int ninputs;
    bool have_kafka;
    uint64_t kafka_timeout_ms;
    const char *xprops[MAX_XPROPS];     /* -X NAME=VALUE for the Kafka reader */
    int nxprops;
    bool print_ends;
} opts_t;

enum { REC_VALID = 0, REC_CORRUPT = 1 };

/* One record read (about 40 bytes). */
typedef struct {
    uint64_t run;
    uint64_t seq;
    int64_t offset;
    int32_t partition;
    uint32_t topic;         /* index into verify_t.topics */
    uint8_t cls;            /* REC_VALID or REC_CORRUPT */
} rec_t;

/* One --kafka record's place, for the order check (32 bytes). */
typedef struct {
    int64_t out_offset;
    int64_t src_offset;
    int32_t out_partition;
    int32_t src_partition;
    uint32_t src_topic;     /* index into verify_t.topics */
    uint16_t input;         /* index into opts_t.inputs: the output topic */
} place_t;

typedef struct {
    const opts_t *o;
    uint64_t run;           /* the workload's: from options or chosen */
    bool have_run;
    uint64_t first, expect, size;
    const char *topic;
    rec_t *recs;
    size_t nrecs, cap;
    char **topics;
    uint32_t ntopics, topics_cap;
    uint64_t corrupt;       /* including unparsable lines (not in recs) */
    uint64_t other_topic;
    bool check_ts;          /* the manifest's timestamps=1 (--kafka) */
    bool check_headers;     /* the manifest's headers=1 (--kafka) */
    place_t *places;        /* --kafka records, for the order check */
    size_t nplaces, places_cap;
    char keybuf[KW_WL_KEY_MAX];
} verify_t;

static void oom(void)
{
    fprintf(stderr, PROG ": out of memory\n");
    exit(EXIT_USAGE);
}

/* ------------------------------------------------------- collecting -- */

static uint32_t topic_intern(verify_t *v, const char *name)
{
    for (uint32_t i = v->ntopics; i-- > 0;)
        if (strcmp(v->topics[i], name) == 0)
            return i;
    if (v->ntopics == v->topics_cap) {
        uint32_t cap = v->topics_cap ? v->topics_cap * 2 : 8;
        char **t = realloc(v->topics, cap * sizeof(*t));

        if (t == NULL)
            oom();
        v->topics = t;
        v->topics_cap = cap;
    }
    if ((v->topics[v->ntopics] = strdup(name)) == NULL)
        oom();
    return v->ntopics++;
}

__attribute__((format(printf, 2, 3)))
static void corrupt(verify_t *v, const char *fmt, ...)
{
    va_list ap;

    if (v->corrupt++ >= v->o->max_list) {
        if (v->corrupt == v->o->max_list + 1)
            printf("corrupt: ... (more not listed; see the summary)\n");
        return;
    }
    fputs("corrupt: ", stdout);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    fputc('\n', stdout);
}

/* Classify one record; where is "FILE:LINE", "PATH row N" or "kafka
 * TOPIC/P@O". Returns its entry, with its payload decoded into *wl, when it
 * is valid; NULL when it is corrupt (listed) or of another topic. */
static rec_t *take_rec(verify_t *v, const char *where, const char *topic, int64_t partition,
                       int64_t offset, const void *key, size_t klen, bool key_null,
                       const void *payload, size_t plen, bool payload_null,
                       kw_wl_rec_t *wl_out)
{
    rec_t *r;
    kw_wl_rec_t wl;
    kw_wl_status_t st;

    if (v->topic != NULL && strcmp(topic, v->topic) != 0) {
        v->other_topic++;
        return NULL;
    }
    if (v->nrecs == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 65536;
        rec_t *n = realloc(v->recs, cap * sizeof(*n));

        if (n == NULL)
            oom();
        v->recs = n;
        v->cap = cap;
    }
    r = &v->recs[v->nrecs++];
    memset(r, 0, sizeof(*r));
    r->topic = topic_intern(v, topic);
    r->partition = (int32_t)partition;
    r->offset = offset;
    r->cls = REC_CORRUPT;
    if (partition < INT32_MIN || partition > INT32_MAX) {
        corrupt(v, "%s %s/%" PRId64 "@%" PRId64 ": partition out of range",
                where, topic, partition, offset);
        return NULL;
    }
    if (payload_null) {
        corrupt(v, "%s %s/%" PRId64 "@%" PRId64 ": payload is null",
                where, topic, partition, offset);
        return NULL;
    }
    st = kw_wl_decode(payload, plen, &wl);
    if (st != KW_WL_OK) {
        if (wl.header_ok)
            corrupt(v, "%s %s/%" PRId64 "@%" PRId64 ": %s (claims run %016" PRIx64
                    " seq %" PRIu64 ")", where, topic, partition, offset,
                    kw_wl_status_str(st), wl.run, wl.seq);
        else
            corrupt(v, "%s %s/%" PRId64 "@%" PRId64 ": %s (%zu bytes)",
                    where, topic, partition, offset, kw_wl_status_str(st), plen);
        return NULL;
    }
    if (v->size != 0 && plen != v->size && (!v->have_run || wl.run == v->run)) {
        corrupt(v, "%s %s/%" PRId64 "@%" PRId64 ": payload of %zu bytes, expected %"
                PRIu64 " (seq %" PRIu64 ")", where, topic, partition, offset, plen,
                v->size, wl.seq);
        return NULL;
    }
    kw_wl_key(v->keybuf, wl.seq);
    if (key_null || klen != strlen(v->keybuf) || memcmp(key, v->keybuf, klen) != 0) {
        corrupt(v, "%s %s/%" PRId64 "@%" PRId64 ": key %s%.*s%s does not match seq %"
                PRIu64, where, topic, partition, offset, key_null ? "" : "'",
                key_null ? 4 : (int)(klen > 40 ? 40 : klen),
                key_null ? "null" : (const char *)key, key_null ? "" : "'", wl.seq);
        return NULL;
    }
    r->cls = REC_VALID;
    r->run = wl.run;
    r->seq = wl.seq;
    *wl_out = wl;
    return r;
}

static void take(verify_t *v, const char *where, const char *topic, int64_t partition,
                 int64_t offset, const void *key, size_t klen, bool key_null,
                 const void *payload, size_t plen, bool payload_null)
{
    kw_wl_rec_t wl;

    take_rec(v, where, topic, partition, offset, key, klen, key_null, payload, plen,
             payload_null, &wl);
}

/* ----------------------------------------------------------- inputs -- */

/* Returns the number of lines read, or -1 after printing an I/O error. */
static int64_t read_jsonl(verify_t *v, const char *path)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
    kw_envelope_t env = { 0 };
    char *line = NULL, where[4200], err[256];
    size_t lcap = 0;
    ssize_t n;
    int64_t lineno = 0;

    if (f == NULL) {
        fprintf(stderr, PROG ": %s: %s\n", path, strerror(errno));
        return -1;
    }
    while ((n = getline(&line, &lcap, f)) >= 0) {
        size_t len = (size_t)n;

        lineno++;
        if (len > 0 && line[len - 1] == '\n')
            len--;
        snprintf(where, sizeof(where), "%s:%" PRId64, path, lineno);
        if (!kw_envelope_parse(line, len, &env, err, sizeof(err))) {
            corrupt(v, "%s: not a kcat -J envelope: %s", where, err);
            continue;
        }
        take(v, where, env.topic.p, env.partition, env.offset,
             env.key.p, env.key.len, env.key.null,
             env.payload.p, env.payload.len, env.payload.null);
    }
    if (ferror(f)) {
        fprintf(stderr, PROG ": %s: read: %s\n", path, strerror(errno));
        lineno = -1;
    }
    free(line);
    kw_envelope_free(&env);
    if (f != stdin)
        fclose(f);
    return lineno;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool skipped_name(const char *name)
{
    size_t len = strlen(name);

    return name[0] == '.' || (len >= 4 && strcmp(name + len - 4, ".tmp") == 0);
}

/* Returns 0, or -1 after printing an I/O error. */
static int read_files(verify_t *v, const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    char **names = NULL, path[4096];
    size_t n = 0, cap = 0;
    int64_t lines = 0;
    int rc = 0;

    if (d == NULL) {
        fprintf(stderr, PROG ": %s: %s\n", dir, strerror(errno));
        return -1;
    }
    while ((errno = 0, de = readdir(d)) != NULL) {
        struct stat st;

        if (skipped_name(de->d_name))
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        if (stat(path, &st) != 0) {
            fprintf(stderr, PROG ": %s: %s\n", path, strerror(errno));
            rc = -1;
            break;
        }
        if (!S_ISREG(st.st_mode))
            continue;
        if (n == cap) {
            char **nn = realloc(names, (cap = cap ? cap * 2 : 64) * sizeof(*nn));

            if (nn == NULL)
                oom();
            names = nn;
        }
        if ((names[n++] = strdup(de->d_name)) == NULL)
            oom();
    }
    if (rc == 0 && errno != 0) {
        fprintf(stderr, PROG ": %s: readdir: %s\n", dir, strerror(errno));
        rc = -1;
    }
    closedir(d);
    if (n > 0)
        qsort(names, n, sizeof(*names), name_cmp);
    for (size_t i = 0; i < n && rc == 0; i++) {
        int64_t got;

        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        if ((got = read_jsonl(v, path)) < 0)
            rc = -1;
        else
            lines += got;
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    if (rc == 0)
        printf("input: files %s: %zu files, %" PRId64 " lines\n", dir, n, lines);
    return rc;
}

/* Returns 0, or -1 after printing an error. */
static int read_sqlite(verify_t *v, const char *path)
{
    static const char sql[] =
        "SELECT topic, partition, offset, key, payload FROM records";
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    char where[4200];
    int64_t row = 0;
    int rc;

    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        fprintf(stderr, PROG ": %s: %s\n", path, db ? sqlite3_errmsg(db) : "out of memory");
        sqlite3_close(db);
        return -1;
    }
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        fprintf(stderr, PROG ": %s: %s\n", path, sqlite3_errmsg(db));
        sqlite3_close(db);
        return -1;
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const unsigned char *topic = sqlite3_column_text(st, 0);
        bool key_null = sqlite3_column_type(st, 3) == SQLITE_NULL;
        bool payload_null = sqlite3_column_type(st, 4) == SQLITE_NULL;
        const void *key = sqlite3_column_blob(st, 3);
        size_t klen = (size_t)sqlite3_column_bytes(st, 3);
        const void *payload = sqlite3_column_blob(st, 4);
        size_t plen = (size_t)sqlite3_column_bytes(st, 4);

        row++;
        snprintf(where, sizeof(where), "%s row %" PRId64, path, row);
        take(v, where, topic ? (const char *)topic : "", sqlite3_column_int64(st, 1),
             sqlite3_column_int64(st, 2), key ? key : "", klen, key_null,
             payload ? payload : "", plen, payload_null);
    }
    if (rc != SQLITE_DONE) {
        fprintf(stderr, PROG ": %s: %s\n", path, sqlite3_errmsg(db));
        sqlite3_finalize(st);
        sqlite3_close(db);
        return -1;
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    printf("input: sqlite %s: %" PRId64 " rows\n", path, row);
    return 0;
}

/* --------------------------------------------------------- analysis -- */

static int by_run_seq(const void *a, const void *b)
{
    const rec_t *x = a, *y = b;

    if (x->cls != y->cls)
        return x->cls < y->cls ? -1 : 1;
    if (x->run != y->run)
        return x->run < y->run ? -1 : 1;
    if (x->seq != y->seq)
        return x->seq < y->seq ? -1 : 1;
    return 0;
}

static int by_offset(const void *a, const void *b)
{
    const rec_t *x = a, *y = b;

    if (x->topic != y->topic)
        return x->topic < y->topic ? -1 : 1;
    if (x->partition != y->partition)
        return x->partition < y->partition ? -1 : 1;
    if (x->offset != y->offset)
        return x->offset < y->offset ? -1 : 1;
    return 0;
}

/* A bounded, comma-separated list printed as one detail line. */
typedef struct {
    char *buf;
    size_t len, cap;
    uint64_t items, max;
} list_t;

__attribute__((format(printf, 2, 3)))
static void list_add(list_t *l, const char *fmt, ...)
{
    char item[512];
    va_list ap;
    size_t n;

    if (l->items++ >= l->max)
        return;
    va_start(ap, fmt);
    vsnprintf(item, sizeof(item), fmt, ap);
    va_end(ap);
    n = strlen(item) + 2;
    if (l->len + n + 1 > l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 1024;
        char *nb;

        while (cap < l->len + n + 1)
            cap *= 2;
        if ((nb = realloc(l->buf, cap)) == NULL)
            oom();
        l->buf = nb;
        l->cap = cap;
    }
    l->len += (size_t)sprintf(l->buf + l->len, "%s%s", l->len ? ", " : "", item);
}

static void list_print(list_t *l, const char *head)
{
    if (l->items > 0)
        printf("%s: %s%s\n", head, l->buf ? l->buf : "",
               l->items > l->max ? ", ..." : "");
    free(l->buf);
    memset(l, 0, sizeof(*l));
}

static void range_add(list_t *l, uint64_t from, uint64_t to)
{
    if (from == to)
        list_add(l, "%" PRIu64, from);
    else
        list_add(l, "%" PRIu64 "..%" PRIu64, from, to);
}

typedef struct {
    uint64_t stored, missing, duplicates, dup_offsets, foreign, out_of_range;
    uint64_t out_of_order;  /* --kafka only */
} counts_t;

/* Choose the run (the most valid records) unless given. Valid records come
 * first after sorting by (cls, run, seq). */
static void choose_run(verify_t *v, size_t nvalid)
{
    size_t best = 0;

    if (v->have_run)
        return;
    for (size_t i = 0; i < nvalid;) {
        size_t j = i;

        while (j < nvalid && v->recs[j].run == v->recs[i].run)
            j++;
        if (j - i > best) {
            best = j - i;
            v->run = v->recs[i].run;
            v->have_run = true;
        }
        i = j;
    }
}

static void analyse_seqs(verify_t *v, counts_t *c)
{
    size_t nvalid = 0, i, j;
    uint64_t next = v->first, end = v->first + v->expect, miss_ranges = 0;
    list_t miss = { .max = v->o->max_list }, dup = { .max = v->o->max_list };
    list_t oor = { .max = v->o->max_list }, foreign = { .max = v->o->max_list };
    uint64_t dup_seqs = 0;

    qsort(v->recs, v->nrecs, sizeof(*v->recs), by_run_seq);
    while (nvalid < v->nrecs && v->recs[nvalid].cls == REC_VALID)
        nvalid++;
    choose_run(v, nvalid);
    if (v->have_run)
        printf("run: %016" PRIx64 "%s, sequence numbers %" PRIu64 "..%" PRIu64
               " (%" PRIu64 " records)\n", v->run,
               v->o->have_run || v->o->manifest ? "" : " (the run with the most records)",
               v->first, end ? end - 1 : 0, v->expect);
    for (i = 0; i < nvalid; i = j) {
        const rec_t *r = &v->recs[i];

        for (j = i; j < nvalid && v->recs[j].run == r->run && v->recs[j].seq == r->seq; j++)
            ;
        if (!v->have_run || r->run != v->run) {
            size_t k = i;

            while (k < nvalid && v->recs[k].run == r->run)
                k++;
            c->foreign += k - i;
            list_add(&foreign, "%016" PRIx64 " (%zu)", r->run, k - i);
            j = k;
            continue;
        }
        c->stored += j - i;
        if (j - i > 1) {
            c->duplicates += j - i - 1;
            dup_seqs++;
            list_add(&dup, "%" PRIu64 " (x%zu)", r->seq, j - i);
        }
        if (r->seq < v->first || r->seq >= end) {
            c->out_of_range += j - i;
            list_add(&oor, "%" PRIu64, r->seq);
            continue;
        }
        if (r->seq > next) {
            c->missing += r->seq - next;
            miss_ranges++;
            range_add(&miss, next, r->seq - 1);
        }
        next = r->seq + 1;
    }
    if (next < end) {
        c->missing += end - next;
        miss_ranges++;
        range_add(&miss, next, end - 1);
    }
    if (c->missing > 0) {
        printf("missing: %" PRIu64 " in %" PRIu64 " range%s\n", c->missing, miss_ranges,
               miss_ranges == 1 ? "" : "s");
        list_print(&miss, "missing ranges");
    }
    if (c->duplicates > 0)
        printf("duplicates: %" PRIu64 " extra cop%s of %" PRIu64 " sequence number%s\n",
               c->duplicates, c->duplicates == 1 ? "y" : "ies", dup_seqs,
               dup_seqs == 1 ? "" : "s");
    list_print(&dup, "duplicate seqs");
    if (c->out_of_range > 0)
        printf("out of range: %" PRIu64 " records of the run outside %" PRIu64 "..%" PRIu64
               "\n", c->out_of_range, v->first, end ? end - 1 : 0);
    list_print(&oor, "out of range seqs");
    if (c->foreign > 0)
        printf("foreign: %" PRIu64 " valid records of other runs\n", c->foreign);
    list_print(&foreign, "foreign runs");
}

static void analyse_offsets(verify_t *v, counts_t *c)
{
    list_t dup = { .max = v->o->max_list }, parts = { .max = UINT64_MAX };
    list_t ends = { .max = UINT64_MAX };
    uint64_t dup_offsets = 0, nparts = 0;
    size_t i, j, pstart = 0;

    qsort(v->recs, v->nrecs, sizeof(*v->recs), by_offset);
    for (i = 0; i < v->nrecs; i = j) {
        const rec_t *r = &v->recs[i];

        for (j = i; j < v->nrecs && by_offset(&v->recs[j], r) == 0; j++)
            ;
        if (j - i > 1) {
            c->dup_offsets += j - i - 1;
            dup_offsets++;
            list_add(&dup, "%s/%" PRId32 "@%" PRId64 " (x%zu)", v->topics[r->topic],
                     r->partition, r->offset, j - i);
        }
        if (j == v->nrecs || v->recs[j].topic != r->topic ||
            v->recs[j].partition != r->partition) {
            nparts++;
            list_add(&parts, "%s/%" PRId32 "=%zu", v->topics[r->topic], r->partition,
                     j - pstart);
            list_add(&ends, "%s/%" PRId32 "=%" PRId64, v->topics[r->topic], r->partition,
                     r->offset + 1);
            pstart = j;
        }
    }
    if (c->dup_offsets > 0)
        printf("duplicate offsets: %" PRIu64 " extra cop%s of %" PRIu64 " offset%s\n",
               c->dup_offsets, c->dup_offsets == 1 ? "y" : "ies", dup_offsets,
               dup_offsets == 1 ? "" : "s");
    list_print(&dup, "duplicate offset list");
    printf("partitions: %" PRIu64 "%s%s\n", nparts, nparts ? " -- " : "",
           parts.buf ? parts.buf : "");
    if (v->o->print_ends)
        printf("ends: %" PRIu64 "%s%s\n", nparts, nparts ? " -- " : "",
               ends.buf ? ends.buf : "");
    free(parts.buf);
    free(ends.buf);
}

static int by_place(const void *a, const void *b)
{
    const place_t *x = a, *y = b;

    if (x->input != y->input)
        return x->input < y->input ? -1 : 1;
    if (x->out_partition != y->out_partition)
        return x->out_partition < y->out_partition ? -1 : 1;
    if (x->src_topic != y->src_topic)
        return x->src_topic < y->src_topic ? -1 : 1;
    if (x->src_partition != y->src_partition)
        return x->src_partition < y->src_partition ? -1 : 1;
    if (x->out_offset != y->out_offset)
        return x->out_offset < y->out_offset ? -1 : 1;
    return 0;
}

static bool same_stream(const place_t *x, const place_t *y)
{
    return x->input == y->input && x->out_partition == y->out_partition &&
           x->src_topic == y->src_topic && x->src_partition == y->src_partition;
}

/* The order check of --kafka outputs: within one output partition, the
 * records of one source partition, in output offset order (the order a
 * consumer reads them), must have strictly increasing source offsets. Each
 * record whose source offset is not above the one before it counts once. */
static void analyse_order(verify_t *v, counts_t *c)
{
    list_t bad = { .max = v->o->max_list };

    if (v->nplaces > 0)
        qsort(v->places, v->nplaces, sizeof(*v->places), by_place);
    for (size_t i = 1; i < v->nplaces; i++) {
        const place_t *p = &v->places[i - 1], *q = &v->places[i];

        if (!same_stream(p, q) || q->src_offset > p->src_offset)
            continue;
        c->out_of_order++;
        list_add(&bad, "%s/%" PRId32 "@%" PRId64 " (%s/%" PRId32 "@%" PRId64 " after @%" PRId64
                 ")", v->o->inputs[q->input].ktopic, q->out_partition, q->out_offset,
                 v->topics[q->src_topic], q->src_partition, q->src_offset, p->src_offset);
    }
    if (c->out_of_order > 0)
        printf("out of order: %" PRIu64 " record%s whose source offset is not above the one "
               "before it in its output partition\n", c->out_of_order,
               c->out_of_order == 1 ? "" : "s");
    list_print(&bad, "out of order list");
}

/* The postgresql sink's records, read in binary (bytes exactly) with a
 * cursor of 10,000 rows at a time. Returns 0, or -1 after printing an error
 * (never the password: libpq's messages do not carry it). */
static int read_postgresql(verify_t *v, const char *conninfo)
{
    PGconn *c = PQconnectdb(conninfo);
    PGresult *r = NULL;
    char where[300], host[200];
    int64_t row = 0;
    int rc = -1;

    snprintf(host, sizeof(host), "%s:%s/%s", c != NULL && PQhost(c) ? PQhost(c) : "?",
             c != NULL && PQport(c) ? PQport(c) : "?", c != NULL && PQdb(c) ? PQdb(c) : "?");
    if (c == NULL || PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, PROG ": postgresql %s: %s", host,
                c != NULL ? PQerrorMessage(c) : "out of memory\n");
        PQfinish(c);
        return -1;
    }
    r = PQexec(c, "BEGIN READ ONLY");
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        goto fail;
    PQclear(r);
    r = PQexec(c, "DECLARE kwal_verify NO SCROLL CURSOR FOR SELECT topic, partition, "
               "\"offset\", key, payload FROM records");
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        goto fail;
    for (;;) {
        int n;

        PQclear(r);
        r = PQexecParams(c, "FETCH 10000 FROM kwal_verify", 0, NULL, NULL, NULL, NULL, 1);
        if (PQresultStatus(r) != PGRES_TUPLES_OK)
            goto fail;
        n = PQntuples(r);
        if (n == 0)
            break;
        for (int i = 0; i < n; i++) {
            const unsigned char *p;
            int32_t part;
            int64_t off = 0;
            char topic[256];
            int tl = PQgetlength(r, i, 0);

            snprintf(topic, sizeof(topic), "%.*s", tl, PQgetvalue(r, i, 0));
            p = (const unsigned char *)PQgetvalue(r, i, 1);
            part = (int32_t)((uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
                             (uint32_t)p[2] << 8 | p[3]);
            p = (const unsigned char *)PQgetvalue(r, i, 2);
            for (int b = 0; b < 8; b++)
                off = (int64_t)((uint64_t)off << 8 | p[b]);
            row++;
            snprintf(where, sizeof(where), "postgresql %s row %" PRId64, host, row);
            take(v, where, topic, part, off, PQgetvalue(r, i, 3),
                 (size_t)PQgetlength(r, i, 3), PQgetisnull(r, i, 3) != 0,
                 PQgetvalue(r, i, 4), (size_t)PQgetlength(r, i, 4),
                 PQgetisnull(r, i, 4) != 0);
        }
    }
    printf("input: postgresql %s: %" PRId64 " rows\n", host, row);
    rc = 0;
    PQclear(r);
    r = NULL;
fail:
    if (rc != 0)
        fprintf(stderr, PROG ": postgresql %s: %s", host,
                r != NULL ? PQresultErrorMessage(r) : PQerrorMessage(c));
    PQclear(r);
    PQfinish(c);
    return rc;
}

/* ------------------------------------------------------------ kafka -- */

typedef struct {
    verify_t *v;
    const input_t *in;
    uint16_t input;         /* its index in opts_t.inputs */
} kafka_in_t;

static void place_add(verify_t *v, uint16_t input, const kw_vk_rec_t *k)
{
    place_t *pl;

    if (v->nplaces == v->places_cap) {
        size_t cap = v->places_cap ? v->places_cap * 2 : 65536;
        place_t *n = realloc(v->places, cap * sizeof(*n));

        if (n == NULL)
            oom();
        v->places = n;
        v->places_cap = cap;
    }
    pl = &v->places[v->nplaces++];
    memset(pl, 0, sizeof(*pl));
    pl->out_offset = k->offset;
    pl->src_offset = k->src_offset;
    pl->out_partition = k->partition;
    pl->src_partition = k->src_partition;
    pl->src_topic = topic_intern(v, k->src_topic);
    pl->input = input;
}

/* The timestamp rule (the manifest's timestamps=1). */
static bool kafka_ts_ok(verify_t *v, const char *where, const kw_vk_rec_t *k,
                        const kw_wl_rec_t *wl)
{
    int64_t want = (int64_t)(wl->ts_us / 1000);

    if (k->tstype == KW_VK_TS_CREATE && k->ts == want)
        return true;
    if (k->tstype != KW_VK_TS_CREATE)
        corrupt(v, "%s %s/%" PRId32 "@%" PRId64 ": timestamp is %s, expected CreateTime %"
                PRId64 " (the payload's ts_us / 1000)", where, k->src_topic, k->src_partition,
                k->src_offset, k->tstype == KW_VK_TS_NONE ? "missing" : "LogAppendTime", want);
    else
        corrupt(v, "%s %s/%" PRId32 "@%" PRId64 ": timestamp %" PRId64 ", expected %" PRId64
                " (the payload's ts_us / 1000)", where, k->src_topic, k->src_partition,
                k->src_offset, k->ts, want);
    return false;
}

/* The header rule (the manifest's headers=1): wl.seq first, then the
 * three kwal.* ones, nothing else. */
static bool kafka_headers_ok(verify_t *v, const char *where, const kw_vk_rec_t *k,
                             const kw_wl_rec_t *wl)
{
    char seq[KW_WL_KEY_MAX];
    size_t slen = kw_wl_key(seq, wl->seq);
    const char *val = k->first_value;
    int vlen = (int)(k->first_len > 40 ? 40 : k->first_len);

    if (k->first_name != NULL && strcmp(k->first_name, KW_WL_SEQ_HEADER) == 0 &&
        val != NULL && k->first_len == slen && memcmp(val, seq, slen) == 0) {
        if (k->nheaders == 4)
            return true;
        corrupt(v, "%s %s/%" PRId32 "@%" PRId64 ": %zu headers, expected 4 (" KW_WL_SEQ_HEADER
                " and the three kwal.* ones)", where, k->src_topic, k->src_partition,
                k->src_offset, k->nheaders);
        return false;
    }
    corrupt(v, "%s %s/%" PRId32 "@%" PRId64 ": first header %s%s%.*s%s, expected "
            KW_WL_SEQ_HEADER "='%s'", where, k->src_topic, k->src_partition, k->src_offset,
            k->first_name ? k->first_name : "(none)", k->first_name ? (val ? "='" : "=") : "",
            k->first_name ? (val ? vlen : 4) : 0, val ? val : "null",
            k->first_name && val ? "'" : "", seq);
    return false;
}

/* The checks only a Kafka output allows, on a record take_rec() found
 * valid; false after listing it as corrupt. */
static bool kafka_checks(verify_t *v, const char *where, const kw_vk_rec_t *k,
                         const kw_wl_rec_t *wl)
{
    int32_t want = k->src_partition % k->partitions;

    if (k->partition != want) {
        corrupt(v, "%s %s/%" PRId32 "@%" PRId64 ": in output partition %" PRId32 ", expected %"
                PRId32 " (source partition mod %" PRId32 " partitions)", where, k->src_topic,
                k->src_partition, k->src_offset, k->partition, want, k->partitions);
        return false;
    }
    if (v->check_ts && !kafka_ts_ok(v, where, k, wl))
        return false;
    if (v->check_headers && !kafka_headers_ok(v, where, k, wl))
        return false;
    return true;
}

/* kw_vk_read's callback: one output record, classified by its source
 * coordinates (the kwal.* headers). */
static void take_kafka(void *opaque, const kw_vk_rec_t *k)
{
    kafka_in_t *ki = opaque;
    verify_t *v = ki->v;
    char where[600];
    kw_wl_rec_t wl;
    rec_t *r;

    snprintf(where, sizeof(where), "kafka %s/%" PRId32 "@%" PRId64, ki->in->ktopic,
             k->partition, k->offset);
    if (k->src_err != NULL) {
        corrupt(v, "%s: %s", where, k->src_err);
        return;
    }
    if (v->topic == NULL || strcmp(k->src_topic, v->topic) == 0)
        place_add(v, ki->input, k);
    r = take_rec(v, where, k->src_topic, k->src_partition, k->src_offset, k->key, k->klen,
                 k->key_null, k->payload, k->plen, k->payload_null, &wl);
    if (r != NULL && !kafka_checks(v, where, k, &wl))
        r->cls = REC_CORRUPT;
}

/* Returns 0, or -1 after printing an error. */
static int read_kafka(verify_t *v, int idx)
{
    const input_t *in = &v->o->inputs[idx];
    kafka_in_t ki = { .v = v, .in = in, .input = (uint16_t)idx };
    kw_vk_opts_t ko = {
        .bootstrap = in->bootstrap, .topic = in->ktopic,
        .props = v->o->xprops, .nprops = v->o->nxprops,
        .timeout_ms = (int64_t)v->o->kafka_timeout_ms,
    };
    kw_vk_result_t res;
    char errstr[2048];

    if (kw_vk_read(&ko, take_kafka, &ki, &res, errstr, sizeof(errstr)) != KW_VK_OK) {
        fflush(stdout);
        fprintf(stderr, PROG ": kafka %s: %s\n", in->path, errstr);
        return -1;
    }
    printf("input: kafka %s: %" PRIu64 " records in %" PRId32 " partitions (read_committed, "
           "to the last stable offsets)\n", in->path, res.records, res.partitions);
    return 0;
}

/* ----------------------------------------------------------- options -- */

static void print_usage(FILE *out)
{
    fprintf(out,
"Usage: " PROG " (--manifest FILE | --expect N [--first SEQ] [--run-id HEX])\n"
"                   (--sqlite PATH | --files DIR | --jsonl FILE |\n"
"                    --postgresql CONNINFO | --kafka BOOTSTRAP/TOPIC)... [options]\n"
"       " PROG " --help\n"
"\n"
"Checks an output against a kwal-loadgen workload (the sequence numbers\n"
"first .. first+N-1 of one run; payload format: kwal-loadgen --help).\n"
"\n"
"Workload:\n"
"  -m, --manifest FILE  kwal-loadgen's manifest: run id, first, records, size,\n"
"                       topic, timestamps, headers (options below override it)\n"
"  -n, --expect N       number of records expected\n"
"      --first SEQ      first sequence number (default 0)\n"
"      --run-id HEX     the run (16 hex digits); default: the run with the\n"
"                       most valid records; others are reported as foreign\n"
"      --size BYTES     expected payload size (default: the manifest's, else any)\n"
"  -t, --topic NAME     only records of this topic (default: the manifest's,\n"
"                       else all); others are skipped and counted\n"
"Outputs (repeatable, pooled):\n"
"      --sqlite PATH    sqlite sink: table records(topic, partition, offset, ts,\n"
"                       key, payload, batch)\n"
"      --files DIR      file sink: JSON lines in every regular file of DIR, in\n"
"                       name order (names starting with '.' or ending in .tmp\n"
"                       are skipped)\n"
"      --jsonl FILE     JSON lines, '-' for stdin\n"
"      --postgresql CONNINFO  postgresql sink: its records table (a libpq\n"
"                       connection string or postgresql:// URI)\n"
"      --kafka BOOTSTRAP/TOPIC  Kafka sink: every partition of TOPIC from the\n"
"                       beginning to its end (read_committed: the last stable\n"
"                       offset); the last '/' ends the bootstrap servers\n"
"JSON lines are kcat -J envelopes: {\"topic\":..,\"partition\":..,\"offset\":..,\n"
"\"tstype\":..,\"ts\":..,\"key\":..,\"payload\":..[,\"headers\":..]}; other fields\n"
"are skipped; strict JSON (a line that is not counts as corrupt).\n"
"Kafka reader:\n"
"      --kafka-timeout MS  bound on the whole read of each --kafka output\n"
"                       (default 30000); past it: exit 2 naming the partitions\n"
"                       not finished\n"
"  -X NAME=VALUE        librdkafka consumer property (repeatable; TLS, SASL)\n"
"A --kafka record (a copy of a source record: key, value, timestamp and\n"
"headers the source's, then the headers kwal.topic, kwal.partition,\n"
"kwal.offset) is checked by its SOURCE coordinates from those headers.\n"
"It is also corrupt when they are missing or unparsable, when its output\n"
"partition is not the source partition mod the partition count, with the\n"
"manifest's timestamps=1 when its timestamp is not CreateTime payload ts /\n"
"1000, and with headers=1 when its headers are not wl.seq=<seq> and the\n"
"three kwal.* ones. Within an output partition the source offsets of each\n"
"source partition must strictly increase: each record that breaks it\n"
"counts in out_of_order.\n"
"Other:\n"
"      --max-list N     list at most N items per detail (default 20)\n"
"      --print-ends     also print \"ends: N -- TOPIC/P=END, ...\": one past\n"
"                       the highest offset stored per (topic, partition); for\n"
"                       --kafka the source's\n"
"  -h, --help           this text\n"
"\n"
"A record is corrupt when its line is not an envelope, its payload is null,\n"
"malformed, of the wrong size or fails its checksum, or its key is not its\n"
"sequence number. Output: detail lines (\"word: ...\"), then the summary as\n"
"the last line:\n"
"  expected=N stored=S missing=M duplicates=D duplicate_offsets=O corrupt=C foreign=F out_of_range=R\n"
"and, only when a --kafka output is read, \" out_of_order=K\" at its end.\n"
"stored: valid records of the run, every copy; missing: sequence numbers with\n"
"no valid record (listed as ranges); duplicates, duplicate_offsets: extra\n"
"copies of a sequence number, of a (topic, partition, offset); foreign: valid\n"
"records of other runs.\n"
"\n"
"Exit status: 0 when stored = expected and missing, duplicates,\n"
"duplicate_offsets, corrupt (and out_of_order) are 0; 1 otherwise; 2 for bad\n"
"arguments or an output that cannot be read (--kafka: no such topic, or not\n"
"read to its end within --kafka-timeout).\n");
}

static int add_input(opts_t *o, input_kind_t kind, const char *path)
{
    if (o->ninputs == MAX_INPUTS)
        return kw_cli_usage_error(PROG, "at most %d outputs", MAX_INPUTS);
    o->inputs[o->ninputs].kind = kind;
    o->inputs[o->ninputs].path = path;
    o->ninputs++;
    return 0;
}

/* --kafka BOOTSTRAP/TOPIC: the last '/' separates the two; the topic
 * name as Kafka allows it (1..249 of [a-zA-Z0-9._-]). */
static int add_kafka(opts_t *o, const char *spec)
{
    const char *slash = strrchr(spec, '/');
    input_t *in;
    int rc;

    if (slash == NULL || slash == spec || slash[1] == '\0')
        return kw_cli_usage_error(PROG, "--kafka: '%s' is not BOOTSTRAP/TOPIC (bootstrap "
                                  "servers, '/', the output topic)", spec);
    if (strlen(slash + 1) > 249 ||
        strspn(slash + 1, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
        != strlen(slash + 1))
        return kw_cli_usage_error(PROG, "--kafka: '%s' is not a topic name (1..249 of "
                                  "a-z A-Z 0-9 . _ -)", slash + 1);
    if ((rc = add_input(o, IN_KAFKA, spec)) != 0)
        return rc;
    in = &o->inputs[o->ninputs - 1];
    if ((in->bootstrap = strndup(spec, (size_t)(slash - spec))) == NULL)
        oom();
    in->ktopic = slash + 1;
    o->have_kafka = true;
    return 0;
}

static void opts_free(opts_t *o)
{
    for (int i = 0; i < o->ninputs; i++)
        free(o->inputs[i].bootstrap);
}

/* Returns 0, EXIT_USAGE after printing why, or -1 for --help (printed). */
static int opts_parse(int argc, char **argv, opts_t *o)
{
    static const struct option longopts[] = {
        { "manifest", required_argument, NULL, 'm' },
        { "expect", required_argument, NULL, 'n' },
        { "first", required_argument, NULL, 'F' },
        { "run-id", required_argument, NULL, 'R' },
        { "size", required_argument, NULL, 'S' },
        { "topic", required_argument, NULL, 't' },
        { "sqlite", required_argument, NULL, 'q' },
        { "files", required_argument, NULL, 'f' },
        { "jsonl", required_argument, NULL, 'j' },
        { "postgresql", required_argument, NULL, 'P' },
        { "kafka", required_argument, NULL, 'K' },
        { "kafka-timeout", required_argument, NULL, 'W' },
        { "print-ends", no_argument, NULL, 'E' },
        { "max-list", required_argument, NULL, 'L' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    int ch, rc;

    o->max_list = 20;
    o->kafka_timeout_ms = 30000;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, ":m:n:t:X:h", longopts, NULL)) != -1) {
        rc = 0;
        switch (ch) {
        case 'm': o->manifest = optarg; break;
        case 'n':
            if (!kw_cli_parse_u64(optarg, 0, KW_WL_MAX_SEQ + 1, &o->expect))
                return kw_cli_usage_error(PROG, "--expect: '%s' is not a number in 0..%llu", optarg,
                                   KW_WL_MAX_SEQ + 1);
            o->have_expect = true;
            break;
        case 'F':
            if (!kw_cli_parse_u64(optarg, 0, KW_WL_MAX_SEQ, &o->first))
                return kw_cli_usage_error(PROG, "--first: '%s' is not a number in 0..%llu", optarg,
                                   KW_WL_MAX_SEQ);
            o->have_first = true;
            break;
        case 'R':
            if (!kw_wl_run_parse(optarg, &o->run))
                return kw_cli_usage_error(PROG, "--run-id: '%s' is not 16 lower-case hex digits", optarg);
            o->have_run = true;
            break;
        case 'S':
            if (!kw_cli_parse_u64(optarg, KW_WL_MIN_SIZE, KW_WL_MAX_SIZE, &o->size))
                return kw_cli_usage_error(PROG, "--size: '%s' is not a number in %d..%d", optarg,
                                   KW_WL_MIN_SIZE, KW_WL_MAX_SIZE);
            break;
        case 't': o->topic = optarg; break;
        case 'q': rc = add_input(o, IN_SQLITE, optarg); break;
        case 'f': rc = add_input(o, IN_FILES, optarg); break;
        case 'j': rc = add_input(o, IN_JSONL, optarg); break;
        case 'P': rc = add_input(o, IN_POSTGRESQL, optarg); break;
        case 'K': rc = add_kafka(o, optarg); break;
        case 'W':
            if (!kw_cli_parse_u64(optarg, 1, 86400000, &o->kafka_timeout_ms))
                return kw_cli_usage_error(PROG, "--kafka-timeout: '%s' is not a number of ms in "
                                          "1..86400000", optarg);
            break;
        case 'X':
            if ((rc = kw_cli_xprop(PROG, optarg, o->xprops, &o->nxprops, MAX_XPROPS)) != 0)
                return rc;
            break;
        case 'E': o->print_ends = true; break;
        case 'L':
            if (!kw_cli_parse_u64(optarg, 0, 1000000, &o->max_list))
                return kw_cli_usage_error(PROG, "--max-list: '%s' is not a number in 0..1000000", optarg);
            break;
        case 'h':
            print_usage(stdout);
            return -1;
        case ':':
            return kw_cli_usage_error(PROG, "%s needs an argument", argv[optind - 1]);
        default:
            return kw_cli_usage_error(PROG, "unknown option '%s'", argv[optind - 1]);
        }
        if (rc != 0)
            return rc;
    }
    if (optind < argc)
        return kw_cli_usage_error(PROG, "unexpected argument '%s'", argv[optind]);
    if (o->manifest == NULL && !o->have_expect)
        return kw_cli_usage_error(PROG, "give the workload: --manifest FILE or --expect N");
    if (o->ninputs == 0)
        return kw_cli_usage_error(PROG, "give an output: --sqlite PATH, --files DIR, --jsonl FILE, --postgresql CONNINFO or --kafka BOOTSTRAP/TOPIC");
    if (o->nxprops > 0 && !o->have_kafka)
        return kw_cli_usage_error(PROG, "-X configures the Kafka reader: give --kafka too");
    return 0;
}

/* The workload from the manifest, then the options over it. Returns 0, or
 * EXIT_USAGE after printing why. */
static int workload_setup(verify_t *v, const opts_t *o, kw_wl_manifest_t *m)
{
    if (o->manifest != NULL) {
        char errstr[512];

        if (kw_wl_manifest_read(o->manifest, m, errstr, sizeof(errstr)) != 0) {
            fprintf(stderr, PROG ": manifest %s\n", errstr);
            return EXIT_USAGE;
        }
        v->run = m->run;
        v->have_run = true;
        v->first = m->first;
        v->expect = m->records;
        v->size = m->size;
        v->topic = m->topic[0] ? m->topic : NULL;
        v->check_ts = m->timestamps;
        v->check_headers = m->headers;
        if (m->failed > 0)
            printf("note: the manifest says %" PRId64 " records failed to deliver\n",
                   m->failed);
    }
    if (o->have_run) {
        v->run = o->run;
        v->have_run = true;
    }
    if (o->have_first)
        v->first = o->first;
    if (o->have_expect)
        v->expect = o->expect;
    if (o->size != 0)
        v->size = o->size;
    if (o->topic != NULL)
        v->topic = o->topic;
    if (v->expect > KW_WL_MAX_SEQ + 1 - v->first)
        return kw_cli_usage_error(PROG, "first + expected records go beyond sequence number %llu",
                           KW_WL_MAX_SEQ);
    return 0;
}

/* Read every output into v. Returns 0, or -1 after printing an error. */
static int read_inputs(verify_t *v, const opts_t *o)
{
    int rc = 0;

    for (int i = 0; i < o->ninputs && rc == 0; i++) {
        const input_t *in = &o->inputs[i];
        int64_t lines;

        switch (in->kind) {
        case IN_SQLITE:
            rc = read_sqlite(v, in->path);
            break;
        case IN_FILES:
            rc = read_files(v, in->path);
            break;
        case IN_POSTGRESQL:
            rc = read_postgresql(v, in->path);
            break;
        case IN_KAFKA:
            rc = read_kafka(v, i);
            break;
        case IN_JSONL:
            if ((lines = read_jsonl(v, in->path)) >= 0)
                printf("input: jsonl %s: %" PRId64 " lines\n", in->path, lines);
            rc = lines < 0 ? -1 : 0;
            break;
        }
    }
    return rc;
}

static void verify_free(verify_t *v)
{
    for (uint32_t i = 0; i < v->ntopics; i++)
        free(v->topics[i]);
    free(v->topics);
    free(v->recs);
    free(v->places);
}

/* Everything after the options; the exit status. */
static int verify_run(const opts_t *o)
{
    verify_t v = { .o = o };
    counts_t c = { 0 };
    kw_wl_manifest_t m;
    int rc;
    bool ok;

    if ((rc = workload_setup(&v, o, &m)) != 0)
        return rc;
    if (read_inputs(&v, o) != 0) {
        fflush(stdout);
        verify_free(&v);
        return EXIT_USAGE;
    }
    if (v.other_topic > 0)
        printf("other topics: %" PRIu64 " records not of topic %s, skipped\n",
               v.other_topic, v.topic);

    analyse_seqs(&v, &c);
    analyse_offsets(&v, &c);
    analyse_order(&v, &c);
    ok = c.stored == v.expect && c.missing == 0 && c.duplicates == 0 &&
         c.dup_offsets == 0 && v.corrupt == 0 && c.out_of_order == 0;
    printf("expected=%" PRIu64 " stored=%" PRIu64 " missing=%" PRIu64 " duplicates=%" PRIu64
           " duplicate_offsets=%" PRIu64 " corrupt=%" PRIu64 " foreign=%" PRIu64
           " out_of_range=%" PRIu64, v.expect, c.stored, c.missing, c.duplicates,
           c.dup_offsets, v.corrupt, c.foreign, c.out_of_range);
    if (o->have_kafka)
        printf(" out_of_order=%" PRIu64, c.out_of_order);
    putchar('\n');
    verify_free(&v);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, PROG ": stdout: %s\n", strerror(errno));
        return EXIT_USAGE;
    }
    return ok ? 0 : 1;
}

int main(int argc, char **argv)
{
    opts_t o = { 0 };
    int rc;

    if ((rc = opts_parse(argc, argv, &o)) == 0)
        rc = verify_run(&o);
    opts_free(&o);
    return rc < 0 ? 0 : rc;
}
