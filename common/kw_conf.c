/*
 * kw_conf.c -- the configuration table and everything generated from it.
 *
 * props[] below is the only place a setting is described. Its `def` column is
 * parsed by the same code as a user's value when kw_conf_new() fills in the
 * defaults, so a default that breaks its own range fails loudly at start-up
 * (and in the unit test) instead of reaching a module.
 *
 * Adding a setting: add the field to a sub-struct in kw_conf.h (or a new
 * sub-struct for a new module), then one row here. Parsing, errors, --help
 * and CONFIGURATION.md (`kwal config --markdown`) follow from the row.
 */
#include "kw_conf.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define KW_CONF_KAFKA_PREFIX     "kafka."
#define KW_CONF_SINK_KAFKA_PREFIX "sink.kafka."
#define KW_CONF_MAX_WAL_DIRS     16   /* KW_WAL_MAX_REPLICAS; common does not include wal.h */

#define KIB 1024LL
#define MIB (1024LL * KIB)
#define GIB (1024LL * MIB)

static const char *const log_levels[] = { "error", "warn", "info", "debug", NULL };
/* Order: kw_offset_reset_t. */
static const char *const offset_resets[] = { "earliest", "latest", "error", NULL };
/* Order: kw_assignment_t. */
static const char *const assignments[] = { "roundrobin", "range", NULL };

#define FIELD(member) offsetof(kw_conf_t, member)

/* The table. Keep it grouped by prefix: the docs get one section per prefix. */
static const kw_conf_prop_t props[] = {
    { "wal.dirs", KW_CONF_LIST, "./kwal-wal", 1, KW_CONF_MAX_WAL_DIRS, NULL,
      FIELD(wal.dirs),
      "Replica directories of the write-ahead log, comma-separated, one per "
      "replica. Each is created (mode 0700) if missing. Put them on different "
      "disks: an acknowledged record is on at least wal.write.quorum of them, "
      "and appends go on while that many are healthy." },
    { "wal.write.quorum", KW_CONF_INT, "0", 0, KW_CONF_MAX_WAL_DIRS, NULL,
      FIELD(wal.write_quorum),
      "Replicas on which a record must be fdatasync'ed before its append is "
      "acknowledged. 0 means a majority (replicas / 2 + 1). At most the number "
      "of wal.dirs. Below the quorum of healthy replicas the WAL refuses appends." },
    { "wal.segment.bytes", KW_CONF_SIZE, "64M", 4 * KIB, 64 * GIB, NULL,
      FIELD(wal.segment_bytes),
      "Segment size: a segment is rolled when the next record would take it "
      "past this size. A larger record gets a segment of its own." },
    { "wal.segment.ms", KW_CONF_INT, "60000", 1, 7LL * 24 * 3600 * 1000, NULL,
      FIELD(wal.segment_ms),
      "Segment age in milliseconds: a segment older than this is rolled at "
      "the next append, so cleanup can free space on a quiet log." },
    { "wal.max.pending.bytes", KW_CONF_SIZE, "256M", 1 * MIB, 64 * GIB, NULL,
      FIELD(wal.max_pending_bytes),
      "Bytes appended but not yet written to every healthy replica. Appends "
      "wait above it, which pauses consumption instead of buffering without "
      "bound." },
    { "wal.compress", KW_CONF_BOOL, "true", 0, 0, NULL,
      FIELD(wal.compress),
      "LZ4-compress blocks before they are appended to the WAL (a block that "
      "does not shrink is stored raw)." },
    { "log.level", KW_CONF_ENUM, "info", 0, 0, log_levels,
      FIELD(log.level),
      "Messages above this level are not logged (to stderr). When the key is "
      "not set, the environment variable KWAL_LOG_LEVEL applies." },
    { "group.id", KW_CONF_STRING, "", 0, 0, NULL,
      FIELD(receiver.group_id),
      "Consumer group of the receivers (required by kwal receive). Also names "
      "the ZooKeeper path /consumers/<group.id> where offsets and owners live." },
    { "topics", KW_CONF_LIST, "", 0, 1024, NULL,
      FIELD(receiver.topics),
      "Topics the receivers subscribe to, comma-separated (required by kwal "
      "receive). An item starting with ^ is a regular expression, as in "
      "librdkafka." },
    { "receivers", KW_CONF_INT, "1", 1, 256, NULL,
      FIELD(receiver.receivers),
      "Receiver threads, each its own Kafka consumer in group.id." },
    { "max.rate.per.partition", KW_CONF_INT, "0", 0, INT64_C(1000000000), NULL,
      FIELD(receiver.max_rate_per_partition),
      "kwal direct: records per second read at most from each partition; a "
      "batch takes at most this x batch.interval.ms / 1000 records of a "
      "partition. 0 means up to the high watermark." },
    { "backpressure.enabled", KW_CONF_BOOL, "false", 0, 0, NULL,
      FIELD(receiver.backpressure),
      "kwal direct: estimate the rate the batches keep up with (a PID "
      "controller on each batch's processing time and scheduling delay) and "
      "read at most that many records per second, spread over the "
      "partitions read, within max.rate.per.partition." },
    { "backpressure.min.rate", KW_CONF_INT, "100", 1, INT64_C(1000000000), NULL,
      FIELD(receiver.backpressure_min_rate),
      "kwal direct with backpressure.enabled: the estimated rate (records per "
      "second, all partitions) never goes below this." },
    { "direct.assignment", KW_CONF_ENUM, "roundrobin", 0, 0, assignments,
      FIELD(receiver.direct_assignment),
      "kwal direct: how the instances of one group divide the partitions. "
      "Every instance computes the same assignment from the sorted instance "
      "ids (/consumers/<group>/ids) and the sorted partitions: roundrobin "
      "deals them out one by one over all topics (balanced within one "
      "partition); range gives each instance a contiguous run of each "
      "topic's partitions, as Kafka's range assignor. Every instance of a "
      "group must use the same value." },
    { "direct.start.offsets", KW_CONF_LIST, "", 0, 65536, NULL,
      FIELD(receiver.direct_start),
      "kwal direct: where partitions with no range stored yet start, as "
      "topic:partition:offset items; other such partitions follow "
      "auto.offset.reset." },
    { "receiver.max.rate", KW_CONF_INT, "0", 0, INT64_C(1000000000), NULL,
      FIELD(receiver.max_rate),
      "Records per second each receiver takes at most; 0 means unlimited." },
    { "auto.offset.reset", KW_CONF_ENUM, "latest", 0, 0, offset_resets,
      FIELD(receiver.auto_offset_reset),
      "Where to start a partition that has no offset stored in ZooKeeper, or "
      "whose stored offset is no longer in Kafka (then logged and counted as "
      "data loss at the source): earliest, latest, or error (stop with an "
      "error), as Kafka defines it. A stored offset is never overwritten "
      "because of it." },
    { "block.interval.ms", KW_CONF_INT, "200", 1, 3600000, NULL,
      FIELD(receiver.block_interval_ms),
      "A receiver cuts its current block this often (when it is not empty)." },
    { "block.max.bytes", KW_CONF_SIZE, "4M", 64, 256 * MIB, NULL,
      FIELD(receiver.block_max_bytes),
      "A block is cut early when it reaches this many encoded bytes." },
    { "batch.interval.ms", KW_CONF_INT, "2000", 1, 86400000, NULL,
      FIELD(receiver.batch_interval_ms),
      "Every this many milliseconds the durable blocks not yet delivered form "
      "one batch, written to the sink." },
    { "batch.max.bytes", KW_CONF_SIZE, "32M", 1 * MIB, 64 * GIB, NULL,
      FIELD(receiver.batch_max_bytes),
      "The most a batch holds in memory, each record weighed as its key and "
      "payload plus 256 bytes (receive "
      "mode: its block's encoded bytes plus as much): a backlog is stored as "
      "several batches, one right after the other, and direct mode starts the "
      "next batch at once when one was cut short by it. At least one record "
      "(receive: one block) per batch." },
    { "batch.first.early", KW_CONF_BOOL, "true", 0, 0, NULL,
      FIELD(receiver.batch_first_early),
      "kwal receive: the first batch after a start goes as soon as the first "
      "new block is durable, so that a restart stores records again at once; "
      "the batches after it keep the batch.interval.ms schedule. false: the "
      "first batch waits a whole interval, as Spark Streaming's did." },
    { "sink", KW_CONF_STRING, "sqlite:./kwal-out.db", 0, 0, NULL,
      FIELD(receiver.sink),
      "Where batches go: sqlite:PATH, file:DIR, postgresql:CONNINFO (a libpq "
      "connection string or postgresql:// URI), kafka:TOPIC (an existing topic, "
      "one Kafka transaction per batch; sink.kafka.* keys), jsonl (stdout) or "
      "null." },
    { "tracker.path", KW_CONF_STRING, "", 0, 0, NULL,
      FIELD(receiver.tracker_path),
      "The block tracker's SQLite database; empty means tracker.db in the "
      "first of wal.dirs." },
    { "instance.id", KW_CONF_STRING, "", 0, 0, NULL,
      FIELD(receiver.instance_id),
      "This instance's name in ZooKeeper (/consumers/<group.id>/ids/<name>, "
      "and the data of the owner nodes it holds) and the stem of its "
      "receivers' Kafka group.instance.id. Empty means <host>-<hash>, the "
      "hash of the real path of the instance's state (receive: the first of "
      "wal.dirs; direct: the sqlite sink's database), the same on every "
      "restart. Two running instances of one group must not share it: the "
      "second is refused." },
    { "receiver.static.membership", KW_CONF_BOOL, "true", 0, 0, NULL,
      FIELD(receiver.static_membership),
      "Receivers join the consumer group as static members (Kafka's "
      "group.instance.id = <instance.id>-r<N>), so a restart within "
      "kafka.session.timeout.ms gets the same partitions back without a "
      "rebalance. A clean stop still leaves the group at once." },
    { "zookeeper.connect", KW_CONF_STRING, "127.0.0.1:2181", 0, 0, NULL,
      FIELD(zk.connect),
      "ZooKeeper servers, host:port[,host:port...][/chroot], where offsets and "
      "partition owners are kept." },
    { "zookeeper.session.timeout.ms", KW_CONF_INT, "10000", 1000, 600000, NULL,
      FIELD(zk.session_timeout_ms),
      "ZooKeeper session timeout: after this long without the server the "
      "session expires and ownership is re-established." },
    { "zookeeper.op.timeout.ms", KW_CONF_INT, "30000", 1000, 3600000, NULL,
      FIELD(zk.op_timeout_ms),
      "How long one ZooKeeper operation (an offset commit, taking a partition) "
      "is retried through connection loss before the caller sees it fail; an "
      "offset commit that fails this way is retried again, never dropped." },
    { "metrics.listen", KW_CONF_STRING, "", 0, 0, NULL,
      FIELD(metrics.listen),
      "HOST:PORT where kwal receive and kwal direct serve their statistics "
      "in the Prometheus text format (GET /metrics); a port alone (PORT or "
      ":PORT) listens on 127.0.0.1; port 0 picks a free one (logged, and "
      "metrics_port in --stats-json). Empty means no endpoint. A host other "
      "than a loopback address exposes the statistics to the network." },
};

#define NPROPS (sizeof(props) / sizeof(props[0]))

/* Where each key was last set: NULL for its default, else a copy of `where`. */
struct kw_conf_priv {
    char *where[NPROPS];
};

static const char *const type_name[] = {
    [KW_CONF_STRING] = "string",
    [KW_CONF_INT]    = "int",
    [KW_CONF_BOOL]   = "bool",
    [KW_CONF_SIZE]   = "size",
    [KW_CONF_ENUM]   = "enum",
    [KW_CONF_LIST]   = "list",
};

const kw_conf_prop_t *kw_conf_props(size_t *count)
{
    if (count != NULL)
        *count = NPROPS;
    return props;
}

const kw_conf_prop_t *kw_conf_prop_find(const char *name)
{
    for (size_t i = 0; i < NPROPS; i++)
        if (strcmp(props[i].name, name) == 0)
            return &props[i];
    return NULL;
}

static void *field(kw_conf_t *conf, const kw_conf_prop_t *prop)
{
    return (char *)conf + prop->offset;
}

static const void *cfield(const kw_conf_t *conf, const kw_conf_prop_t *prop)
{
    return (const char *)conf + prop->offset;
}

/* "where: key: message" into errstr; returns KW_ECONFIG. */
static kw_err_t conf_err(char *errstr, size_t errlen, const char *where,
                         const char *key, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static kw_err_t conf_err(char *errstr, size_t errlen, const char *where,
                         const char *key, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (where != NULL && where[0] != '\0')
        return kw_seterr(errstr, errlen, KW_ECONFIG, "%s: %s: %s", where, key, msg);
    return kw_seterr(errstr, errlen, KW_ECONFIG, "%s: %s", key, msg);
}

/* ---- values ------------------------------------------------------------ */

static void list_free(kw_conf_list_t *list)
{
    for (int i = 0; i < list->count; i++)
        free(list->items[i]);
    free(list->items);
    list->items = NULL;
    list->count = 0;
}

/* Copy of s[0..len-1] without leading and trailing whitespace. */
static char *strndup_trim(const char *s, size_t len)
{
    while (len > 0 && isspace((unsigned char)s[0])) {
        s++;
        len--;
    }
    while (len > 0 && isspace((unsigned char)s[len - 1]))
        len--;
    return strndup(s, len);
}

static int parse_int(const char *s, int64_t *out)
{
    char *end;
    long long v;

    if (s[0] == '\0' || isspace((unsigned char)s[0]))
        return -1;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return -1;
    *out = (int64_t)v;
    return 0;
}

kw_err_t kw_conf_parse_size(const char *s, uint64_t *bytes)
{
    unsigned long long v;
    unsigned shift = 0;
    char *end;

    if (s == NULL || !isdigit((unsigned char)s[0]))
        return KW_EINVAL;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0)
        return KW_EINVAL;
    switch (tolower((unsigned char)*end)) {
    case 'k': shift = 10; break;
    case 'm': shift = 20; break;
    case 'g': shift = 30; break;
    case 't': shift = 40; break;
    default: break;
    }
    if (shift > 0) {
        end++;
        if (tolower((unsigned char)*end) == 'i' && tolower((unsigned char)end[1]) == 'b')
            end += 2;
        else if (tolower((unsigned char)*end) == 'b')
            end++;
    } else if (tolower((unsigned char)*end) == 'b') {
        end++;
    }
    if (*end != '\0')
        return KW_EINVAL;
    if (shift > 0 && v > (UINT64_MAX >> shift))
        return KW_EINVAL;
    *bytes = (uint64_t)v << shift;
    return KW_OK;
}

size_t kw_conf_format_size(uint64_t bytes, char *buf, size_t len)
{
    static const struct { unsigned shift; char suffix; } units[] = {
        { 40, 'T' }, { 30, 'G' }, { 20, 'M' }, { 10, 'K' },
    };
    int n;

    for (size_t i = 0; bytes != 0 && i < sizeof(units) / sizeof(units[0]); i++) {
        uint64_t unit = (uint64_t)1 << units[i].shift;

        if (bytes % unit == 0) {
            n = snprintf(buf, len, "%llu%c",
                         (unsigned long long)(bytes / unit), units[i].suffix);
            return n < 0 ? 0 : (size_t)n;
        }
    }
    n = snprintf(buf, len, "%llu", (unsigned long long)bytes);
    return n < 0 ? 0 : (size_t)n;
}

static int parse_bool(const char *s, int *out)
{
    static const char *const yes[] = { "true", "yes", "on", "1" };
    static const char *const no[] = { "false", "no", "off", "0" };

    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = 1;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = 0;
            return 0;
        }
    }
    return -1;
}

/* "error, warn, info, debug" (sep ", ") or "error|warn|info|debug". */
static void join_choices(const char *const *choices, const char *sep,
                         char *buf, size_t len)
{
    size_t used = 0;

    buf[0] = '\0';
    for (size_t i = 0; choices[i] != NULL && used < len; i++) {
        int n = snprintf(buf + used, len - used, "%s%s", i > 0 ? sep : "", choices[i]);

        if (n < 0)
            break;
        used += (size_t)n;
    }
}

/* Split value into a new list; on failure *list is untouched. */
static kw_err_t parse_list(const kw_conf_prop_t *prop, const char *value,
                           const char *where, kw_conf_list_t *list,
                           char *errstr, size_t errlen)
{
    kw_conf_list_t tmp = { NULL, 0 };
    const char *p = value;
    kw_err_t err = KW_OK;
    int cap = 0;

    while (value[0] != '\0') {
        const char *comma = strchr(p, ',');
        size_t len = comma != NULL ? (size_t)(comma - p) : strlen(p);
        char *item;

        if (tmp.count == cap) {
            int ncap = cap == 0 ? 4 : cap * 2;
            char **nitems = realloc(tmp.items, (size_t)ncap * sizeof(*nitems));

            if (nitems == NULL) {
                err = kw_seterr(errstr, errlen, KW_ENOMEM, "out of memory");
                goto fail;
            }
            tmp.items = nitems;
            cap = ncap;
        }
        item = strndup_trim(p, len);
        if (item == NULL) {
            err = kw_seterr(errstr, errlen, KW_ENOMEM, "out of memory");
            goto fail;
        }
        if (item[0] == '\0') {
            free(item);
            err = conf_err(errstr, errlen, where, prop->name,
                           "empty item in comma-separated list '%s'", value);
            goto fail;
        }
        tmp.items[tmp.count++] = item;
        if (comma == NULL)
            break;
        p = comma + 1;
    }
    if (tmp.count < prop->min || tmp.count > prop->max) {
        err = conf_err(errstr, errlen, where, prop->name,
                       "expected a comma-separated list of %lld to %lld items, "
                       "got %d in '%s'", (long long)prop->min, (long long)prop->max,
                       tmp.count, value);
        goto fail;
    }
    *list = tmp;
    return KW_OK;

fail:
    list_free(&tmp);
    return err;
}

/* Parse value for prop and store it in conf. */
static kw_err_t set_prop(kw_conf_t *conf, const kw_conf_prop_t *prop,
                         const char *value, const char *where,
                         char *errstr, size_t errlen)
{
    char range[128], buf[128];
    int64_t i64;
    uint64_t u64;
    int b;

    switch (prop->type) {
    case KW_CONF_STRING: {
        char *copy = strdup(value);
        char **dst = field(conf, prop);

        if (copy == NULL)
            return kw_seterr(errstr, errlen, KW_ENOMEM, "out of memory");
        free(*dst);
        *dst = copy;
        return KW_OK;
    }
    case KW_CONF_INT:
        if (parse_int(value, &i64) != 0 || i64 < prop->min || i64 > prop->max)
            return conf_err(errstr, errlen, where, prop->name,
                            "expected an integer between %lld and %lld, got '%s'",
                            (long long)prop->min, (long long)prop->max, value);
        *(int64_t *)field(conf, prop) = i64;
        return KW_OK;
    case KW_CONF_BOOL:
        if (parse_bool(value, &b) != 0)
            return conf_err(errstr, errlen, where, prop->name,
                            "expected true or false, got '%s'", value);
        *(int *)field(conf, prop) = b;
        return KW_OK;
    case KW_CONF_SIZE:
        if (kw_conf_parse_size(value, &u64) != KW_OK ||
            u64 < (uint64_t)prop->min || u64 > (uint64_t)prop->max) {
            kw_conf_format_size((uint64_t)prop->min, range, sizeof(range));
            kw_conf_format_size((uint64_t)prop->max, buf, sizeof(buf));
            return conf_err(errstr, errlen, where, prop->name,
                            "expected a size between %s and %s (bytes, or with "
                            "a K, M, G or T suffix), got '%s'", range, buf, value);
        }
        *(uint64_t *)field(conf, prop) = u64;
        return KW_OK;
    case KW_CONF_ENUM:
        for (int k = 0; prop->choices[k] != NULL; k++) {
            if (strcasecmp(value, prop->choices[k]) == 0) {
                *(int *)field(conf, prop) = k;
                return KW_OK;
            }
        }
        join_choices(prop->choices, ", ", range, sizeof(range));
        return conf_err(errstr, errlen, where, prop->name,
                        "expected one of %s, got '%s'", range, value);
    case KW_CONF_LIST: {
        kw_conf_list_t list;
        kw_err_t err = parse_list(prop, value, where, &list, errstr, errlen);

        if (err != KW_OK)
            return err;
        list_free(field(conf, prop));
        *(kw_conf_list_t *)field(conf, prop) = list;
        return KW_OK;
    }
    }
    return kw_seterr(errstr, errlen, KW_EINVAL, "%s: bad type in table", prop->name);
}

/* ---- unknown keys ------------------------------------------------------ */

/* Edit distance, capped: enough to suggest a key for a typo. */
static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    size_t row[64];

    if (la >= 64 || lb >= 64)
        return SIZE_MAX;
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];

        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);

            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

static kw_err_t unknown_key(const char *key, const char *where,
                            char *errstr, size_t errlen)
{
    const char *best = NULL;
    size_t best_d = 3;   /* suggest only within 2 edits */

    for (size_t i = 0; i < NPROPS; i++) {
        size_t d = edit_distance(key, props[i].name);

        if (d < best_d) {
            best_d = d;
            best = props[i].name;
        }
    }
    if (best != NULL)
        return conf_err(errstr, errlen, where, key,
                        "unknown configuration key (did you mean %s?)", best);
    return conf_err(errstr, errlen, where, key,
                    "unknown configuration key (see kwal --help; librdkafka "
                    "properties take the prefix '" KW_CONF_KAFKA_PREFIX "')");
}

/* ---- kafka. pass-through ------------------------------------------------ */

/* key (with its prefix) into *pairs: the source's `kafka.` keys or the kafka
 * sink's `sink.kafka.` keys. */
static kw_err_t set_kafka(kw_conf_pair_t **pairsp, size_t *np, const char *prefix,
                          const char *key, const char *value, const char *where,
                          char *errstr, size_t errlen)
{
    const char *name = key + strlen(prefix);
    kw_conf_pair_t *pairs;
    char *k = NULL, *v = NULL;

    if (name[0] == '\0')
        return conf_err(errstr, errlen, where, key,
                        "expected a librdkafka property name after '%s'", prefix);
    v = strdup(value);
    if (v == NULL)
        goto nomem;
    for (size_t i = 0; i < *np; i++) {
        if (strcmp((*pairsp)[i].key, name) == 0) {
            free((*pairsp)[i].value);
            (*pairsp)[i].value = v;
            return KW_OK;
        }
    }
    k = strdup(name);
    if (k == NULL)
        goto nomem;
    pairs = realloc(*pairsp, (*np + 1) * sizeof(*pairs));
    if (pairs == NULL)
        goto nomem;
    *pairsp = pairs;
    pairs[*np].key = k;
    pairs[*np].value = v;
    (*np)++;
    return KW_OK;

nomem:
    free(k);
    free(v);
    return kw_seterr(errstr, errlen, KW_ENOMEM, "out of memory");
}

/* ---- loading ----------------------------------------------------------- */

kw_err_t kw_conf_set(kw_conf_t *conf, const char *key, const char *value,
                     const char *where, char *errstr, size_t errlen)
{
    const kw_conf_prop_t *prop;
    char *where_copy = NULL;
    size_t idx;
    kw_err_t err;

    if (conf == NULL || key == NULL || value == NULL)
        return kw_seterr(errstr, errlen, KW_EINVAL, "kw_conf_set: NULL argument");
    if (key[0] == '\0')
        return conf_err(errstr, errlen, where, "(empty key)",
                        "expected key=value, got '=%s'", value);
    if (strncmp(key, KW_CONF_KAFKA_PREFIX, strlen(KW_CONF_KAFKA_PREFIX)) == 0)
        return set_kafka(&conf->kafka, &conf->nkafka, KW_CONF_KAFKA_PREFIX, key, value,
                         where, errstr, errlen);
    if (strncmp(key, KW_CONF_SINK_KAFKA_PREFIX, strlen(KW_CONF_SINK_KAFKA_PREFIX)) == 0)
        return set_kafka(&conf->sink_kafka, &conf->nsink_kafka, KW_CONF_SINK_KAFKA_PREFIX,
                         key, value, where, errstr, errlen);
    prop = kw_conf_prop_find(key);
    if (prop == NULL)
        return unknown_key(key, where, errstr, errlen);
    idx = (size_t)(prop - props);
    where_copy = strdup(where != NULL ? where : "");
    if (where_copy == NULL)
        return kw_seterr(errstr, errlen, KW_ENOMEM, "out of memory");
    err = set_prop(conf, prop, value, where, errstr, errlen);
    if (err != KW_OK) {
        free(where_copy);
        return err;
    }
    free(conf->priv->where[idx]);
    conf->priv->where[idx] = where_copy;
    return KW_OK;
}

/* Split "key=value" (both trimmed) and set it. */
static kw_err_t set_line(kw_conf_t *conf, const char *line, const char *where,
                         char *errstr, size_t errlen)
{
    const char *eq = strchr(line, '=');
    char *key = NULL, *value = NULL;
    kw_err_t err;

    if (eq == NULL) {
        if (where != NULL && where[0] != '\0')
            return kw_seterr(errstr, errlen, KW_ECONFIG,
                             "%s: expected key=value, got '%s'", where, line);
        return kw_seterr(errstr, errlen, KW_ECONFIG,
                         "expected key=value, got '%s'", line);
    }
    key = strndup_trim(line, (size_t)(eq - line));
    value = strndup_trim(eq + 1, strlen(eq + 1));
    if (key == NULL || value == NULL) {
        err = kw_seterr(errstr, errlen, KW_ENOMEM, "out of memory");
        goto cleanup;
    }
    err = kw_conf_set(conf, key, value, where, errstr, errlen);

cleanup:
    free(key);
    free(value);
    return err;
}

kw_err_t kw_conf_set_arg(kw_conf_t *conf, const char *arg,
                         char *errstr, size_t errlen)
{
    return set_line(conf, arg, "-X", errstr, errlen);
}

kw_err_t kw_conf_load_file(kw_conf_t *conf, const char *path,
                           char *errstr, size_t errlen)
{
    char where[4200];
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    long lineno = 0;
    kw_err_t err = KW_OK;
    FILE *f;

    f = fopen(path, "r");
    if (f == NULL)
        return kw_seterr(errstr, errlen, KW_EIO, "%s: %s", path, strerror(errno));
    while ((n = getline(&line, &cap, f)) >= 0) {
        char *p = line;

        lineno++;
        while (n > 0 && isspace((unsigned char)line[n - 1]))
            line[--n] = '\0';
        while (isspace((unsigned char)*p))
            p++;
        if (*p == '\0' || *p == '#')
            continue;
        snprintf(where, sizeof(where), "%s:%ld", path, lineno);
        err = set_line(conf, p, where, errstr, errlen);
        if (err != KW_OK)
            goto cleanup;
    }
    if (ferror(f))
        err = kw_seterr(errstr, errlen, KW_EIO, "%s: %s", path, strerror(errno));

cleanup:
    free(line);
    fclose(f);
    return err;
}

kw_err_t kw_conf_new(kw_conf_t **out, char *errstr, size_t errlen)
{
    kw_conf_t *conf;
    kw_err_t err;

    *out = NULL;
    conf = calloc(1, sizeof(*conf));
    if (conf == NULL)
        return kw_seterr(errstr, errlen, KW_ENOMEM, "out of memory");
    conf->priv = calloc(1, sizeof(*conf->priv));
    if (conf->priv == NULL) {
        err = kw_seterr(errstr, errlen, KW_ENOMEM, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < NPROPS; i++) {
        err = set_prop(conf, &props[i], props[i].def, "default", errstr, errlen);
        if (err != KW_OK)
            goto fail;
    }
    *out = conf;
    return KW_OK;

fail:
    kw_conf_destroy(conf);
    return err;
}

kw_err_t kw_conf_load(const char *path, const char *const *overrides, size_t n,
                      kw_conf_t **out, char *errstr, size_t errlen)
{
    kw_conf_t *conf = NULL;
    kw_err_t err;

    *out = NULL;
    err = kw_conf_new(&conf, errstr, errlen);
    if (err != KW_OK)
        return err;
    if (path != NULL) {
        err = kw_conf_load_file(conf, path, errstr, errlen);
        if (err != KW_OK)
            goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        err = kw_conf_set_arg(conf, overrides[i], errstr, errlen);
        if (err != KW_OK)
            goto fail;
    }
    *out = conf;
    return KW_OK;

fail:
    kw_conf_destroy(conf);
    return err;
}

void kw_conf_destroy(kw_conf_t *conf)
{
    if (conf == NULL)
        return;
    for (size_t i = 0; i < NPROPS; i++) {
        if (props[i].type == KW_CONF_STRING)
            free(*(char **)field(conf, &props[i]));
        else if (props[i].type == KW_CONF_LIST)
            list_free(field(conf, &props[i]));
        if (conf->priv != NULL)
            free(conf->priv->where[i]);
    }
    for (size_t i = 0; i < conf->nkafka; i++) {
        free(conf->kafka[i].key);
        free(conf->kafka[i].value);
    }
    free(conf->kafka);
    for (size_t i = 0; i < conf->nsink_kafka; i++) {
        free(conf->sink_kafka[i].key);
        free(conf->sink_kafka[i].value);
    }
    free(conf->sink_kafka);
    free(conf->priv);
    free(conf);
}

int kw_conf_is_set(const kw_conf_t *conf, const char *key)
{
    const kw_conf_prop_t *prop = kw_conf_prop_find(key);

    if (conf == NULL || prop == NULL)
        return 0;
    return conf->priv->where[prop - props] != NULL;
}

/* ---- output ------------------------------------------------------------ */

size_t kw_conf_format(const kw_conf_t *conf, const kw_conf_prop_t *prop,
                      char *buf, size_t len)
{
    const void *f = cfield(conf, prop);
    size_t used = 0;
    int n = 0;

    switch (prop->type) {
    case KW_CONF_STRING:
        n = snprintf(buf, len, "%s", *(char *const *)f != NULL ? *(char *const *)f : "");
        break;
    case KW_CONF_INT:
        n = snprintf(buf, len, "%lld", (long long)*(const int64_t *)f);
        break;
    case KW_CONF_BOOL:
        n = snprintf(buf, len, "%s", *(const int *)f ? "true" : "false");
        break;
    case KW_CONF_SIZE:
        return kw_conf_format_size(*(const uint64_t *)f, buf, len);
    case KW_CONF_ENUM:
        n = snprintf(buf, len, "%s", prop->choices[*(const int *)f]);
        break;
    case KW_CONF_LIST: {
        const kw_conf_list_t *list = f;

        if (len > 0)
            buf[0] = '\0';
        for (int i = 0; i < list->count; i++) {
            n = snprintf(buf + (used < len ? used : len),
                         used < len ? len - used : 0,
                         "%s%s", i > 0 ? "," : "", list->items[i]);
            if (n < 0)
                return used;
            used += (size_t)n;
        }
        return used;
    }
    }
    return n < 0 ? 0 : (size_t)n;
}

void kw_conf_print(const kw_conf_t *conf, FILE *out)
{
    char buf[4096];

    for (size_t i = 0; i < NPROPS; i++) {
        const char *where = conf->priv->where[i];

        kw_conf_format(conf, &props[i], buf, sizeof(buf));
        fprintf(out, "# %s\n%s=%s\n", where != NULL ? where : "default",
                props[i].name, buf);
    }
    for (size_t i = 0; i < conf->nkafka; i++)
        fprintf(out, "# passed to librdkafka as %s\n" KW_CONF_KAFKA_PREFIX "%s=%s\n",
                conf->kafka[i].key, conf->kafka[i].key, conf->kafka[i].value);
    for (size_t i = 0; i < conf->nsink_kafka; i++)
        fprintf(out, "# passed to the kafka sink's librdkafka as %s\n"
                KW_CONF_SINK_KAFKA_PREFIX "%s=%s\n", conf->sink_kafka[i].key,
                conf->sink_kafka[i].key, conf->sink_kafka[i].value);
}

/* The range column: "0..16", "4K..64G", "1..16 items", "error|warn|...". */
static void format_range(const kw_conf_prop_t *prop, char *buf, size_t len)
{
    char lo[32], hi[32];

    buf[0] = '\0';
    switch (prop->type) {
    case KW_CONF_INT:
        snprintf(buf, len, "%lld..%lld", (long long)prop->min, (long long)prop->max);
        break;
    case KW_CONF_SIZE:
        kw_conf_format_size((uint64_t)prop->min, lo, sizeof(lo));
        kw_conf_format_size((uint64_t)prop->max, hi, sizeof(hi));
        snprintf(buf, len, "%s..%s", lo, hi);
        break;
    case KW_CONF_BOOL:
        snprintf(buf, len, "true|false");
        break;
    case KW_CONF_ENUM:
        join_choices(prop->choices, "|", buf, len);
        break;
    case KW_CONF_LIST:
        snprintf(buf, len, "%lld..%lld items", (long long)prop->min, (long long)prop->max);
        break;
    case KW_CONF_STRING:
        break;
    }
}

/* Print text wrapped at width, every line starting with indent spaces. */
static void print_wrapped(FILE *out, const char *text, int indent, int width)
{
    const char *p = text;

    while (*p != '\0') {
        int avail = width - indent;
        int len = (int)strlen(p), cut = len;

        if (len > avail) {
            cut = avail;
            while (cut > 0 && p[cut] != ' ')
                cut--;
            if (cut == 0)
                cut = avail;
        }
        fprintf(out, "%*s%.*s\n", indent, "", cut, p);
        p += cut;
        while (*p == ' ')
            p++;
    }
}

void kw_conf_print_help(FILE *out)
{
    char range[128];

    for (size_t i = 0; i < NPROPS; i++) {
        const kw_conf_prop_t *prop = &props[i];

        format_range(prop, range, sizeof(range));
        fprintf(out, "  %s=%s   (%s%s%s)\n", prop->name, prop->def,
                type_name[prop->type], range[0] != '\0' ? ", " : "", range);
        print_wrapped(out, prop->desc, 6, 78);
    }
    fprintf(out, "  " KW_CONF_KAFKA_PREFIX "<property>=<value>\n");
    print_wrapped(out, "Passed to librdkafka unchanged, without the prefix "
                  "(for example kafka.bootstrap.servers=localhost:9092).", 6, 78);
    fprintf(out, "  " KW_CONF_SINK_KAFKA_PREFIX "<property>=<value>\n");
    print_wrapped(out, "sink=kafka:TOPIC: librdkafka producer properties of the sink, "
                  "without the prefix. Without sink.kafka.bootstrap.servers the sink "
                  "writes to the source's cluster with its kafka.* settings, these on "
                  "top.", 6, 78);
}

/* A Markdown table cell: '|' escaped, newlines flattened. */
static void md_cell(FILE *out, const char *s, int code)
{
    if (code)
        fputc('`', out);
    for (; *s != '\0'; s++) {
        if (*s == '|')
            fputs("\\|", out);
        else if (*s == '\n')
            fputc(' ', out);
        else
            fputc(*s, out);
    }
    if (code)
        fputc('`', out);
}

void kw_conf_print_markdown(FILE *out)
{
    char range[128];
    size_t i = 0;

    fputs("# kwal configuration\n"
          "\n"
          "<!-- Generated from the table in common/kw_conf.c by "
          "`kwal config --markdown`. Do not edit by hand. -->\n"
          "\n"
          "kwal reads its settings from a file given with `-c FILE`; each `-X key=value`\n"
          "on the command line then overrides one key, in order, as in kcat.\n"
          "\n"
          "* One `key=value` per line. Whitespace around the line, the key and the value\n"
          "  is ignored. Blank lines and lines starting with `#` are ignored.\n"
          "* The value is everything after the first `=`: there is no quoting and no\n"
          "  trailing comment, so a value may contain `#` and `=`.\n"
          "* A key given twice keeps its last value.\n"
          "* An unknown key, or a value that does not parse or is out of range, stops\n"
          "  kwal with a message naming the file, the line and the key, e.g.\n"
          "  `kwal.conf:3: wal.write.quorum: expected an integer between 0 and 16, got 'x'`.\n"
          "* Sizes are a number of bytes with an optional suffix `K`, `M`, `G` or `T`\n"
          "  (powers of 1024; `KiB`, `MiB`, ... are also accepted).\n"
          "* Booleans are `true`/`false` (also `yes`/`no`, `on`/`off`, `1`/`0`).\n"
          "* Lists are comma-separated; items are trimmed and may not be empty.\n"
          "* Keys starting with `kafka.` are passed to librdkafka unchanged, without the\n"
          "  prefix: `kafka.bootstrap.servers=localhost:9092` sets librdkafka's\n"
          "  `bootstrap.servers`. See librdkafka's CONFIGURATION.md for those.\n"
          "* Keys starting with `sink.kafka.` are the `kafka:TOPIC` sink's producer\n"
          "  properties, passed the same way. Without `sink.kafka.bootstrap.servers`\n"
          "  the sink writes to the source's cluster with its `kafka.` settings, these\n"
          "  on top.\n"
          "\n"
          "`kwal config -c FILE [-X key=value]...` prints the effective configuration\n"
          "as a configuration file, with a comment saying where each value came from.\n", out);

    while (i < NPROPS) {
        const char *name = props[i].name;
        const char *dot = strchr(name, '.');
        size_t plen = dot != NULL ? (size_t)(dot - name) + 1 : strlen(name);

        fprintf(out, "\n## `%.*s*`\n\n", (int)plen, name);
        fputs("| key | type | default | range | description |\n"
              "| --- | --- | --- | --- | --- |\n", out);
        for (; i < NPROPS && strncmp(props[i].name, name, plen) == 0; i++) {
            format_range(&props[i], range, sizeof(range));
            fputs("| ", out);
            md_cell(out, props[i].name, 1);
            fprintf(out, " | %s | ", type_name[props[i].type]);
            md_cell(out, props[i].def, 1);
            fputs(" | ", out);
            md_cell(out, range, 0);
            fputs(" | ", out);
            md_cell(out, props[i].desc, 0);
            fputs(" |\n", out);
        }
    }
}
