/*
 * source.h -- the Kafka side that receiver mode and direct mode share.
 *
 * Both modes read Kafka through librdkafka and hand what they read on as
 * kw_record_t (blockgen.h). This module holds the few things they must do
 * alike, so that the two semantics differ only where DESIGN.md says they do:
 *
 *   - building a consumer configuration from the kafka.* keys (passed to
 *     librdkafka unchanged) plus the settings kwal itself insists on
 *     (manual offsets, auto.offset.reset=error so that kwal's own policy
 *     decides -- a stored offset is never wiped);
 *   - the offset policy: where a partition with no stored offset starts, and
 *     what an offset Kafka no longer has means (source loss, invariant 6);
 *   - the conversion of a librdkafka message into a kw_record_t, pointing
 *     into the message (no copy).
 *
 * Library rules: nothing prints; errors come back as kw_err_t and errstr.
 * Every function is pure or works on the caller's objects only: any thread.
 */
#ifndef KW_SOURCE_H
#define KW_SOURCE_H

#include <stddef.h>
#include <stdint.h>

#include <librdkafka/rdkafka.h>

#include "blockgen.h"
#include "kw_conf.h"
#include "kw_err.h"

/* librdkafka's logical offsets (RD_KAFKA_OFFSET_BEGINNING / _END). */
#define KW_SOURCE_OFFSET_BEGINNING (-2)
#define KW_SOURCE_OFFSET_END       (-1)

/* How long the start-up probe (kw_source_probe) waits for a broker. */
#define KW_SOURCE_PROBE_MS 10000

/* ---- configuration ---- */

/*
 * Check the kafka.* settings of conf against librdkafka (at start: a bad key
 * is a configuration error, not a failure to retry). KW_ECONFIG naming the
 * key.
 */
kw_err_t kw_source_check_conf(const kw_conf_t *conf, char *errstr, size_t errlen);

/*
 * A new consumer configuration: every kafka.* key of conf, then group.id =
 * group_id, enable.auto.commit=false, enable.auto.offset.store=false and
 * auto.offset.reset=error (kwal applies auto.offset.reset itself), then the
 * extra key/value pairs (extra[0], extra[1], ... NULL-terminated; may be
 * NULL). KW_ECONFIG naming the key that librdkafka refused. On success *out
 * is the caller's (rd_kafka_new takes it, or rd_kafka_conf_destroy).
 */
kw_err_t kw_source_consumer_conf(const kw_conf_t *conf, const char *group_id,
                                 const char *const *extra, rd_kafka_conf_t **out,
                                 char *errstr, size_t errlen);

/*
 * Reach the cluster once at start: a metadata request through a client built
 * from conf's kafka.* keys, for at most timeout_ms. KW_OK when it answered.
 * KW_EAUTH when it cannot answer for a reason that will not pass by itself
 * -- the TLS handshake failed (a certificate that does not verify, a wrong
 * CA) or SASL authentication failed: errstr says which, with librdkafka's
 * words; the caller stops. KW_ETIMEDOUT when no broker answered (down,
 * unreachable): errstr says so; the caller goes on and waits for it, as it
 * does when the cluster goes away while it runs.
 */
kw_err_t kw_source_probe(const kw_conf_t *conf, int timeout_ms, char *errstr, size_t errlen);

/* ---- offset policy (pure) ---- */

/* Where to start a partition with no stored offset, per auto.offset.reset
 * (a kw_offset_reset_t): KW_SOURCE_OFFSET_BEGINNING for earliest, _END for
 * latest; -3 for error (the caller fails). */
int64_t kw_source_reset_offset(int policy);

/*
 * A partition's wanted offset is out of range; Kafka has low..high-1 (its
 * watermarks). Fills the range lost at the source, [*lost_from, *lost_until)
 * (empty unless wanted < low: retention removed it; invariant 6), and where
 * to go on: *seek_to is low for earliest, high for latest. Returns 0, or -1
 * for policy error (the caller fails; *seek_to is -1).
 */
int kw_source_out_of_range(int64_t wanted, int64_t low, int64_t high, int policy,
                           int64_t *lost_from, int64_t *lost_until, int64_t *seek_to);

/* ---- messages ---- */

/* How many headers m carries (0 when none). */
size_t kw_source_header_count(const rd_kafka_message_t *m);

/*
 * Fill rec from m: topic, partition, offset, timestamp and its type (-1 and
 * KW_TS_NOT_AVAILABLE when there is none), key, value, and headers into
 * hdrs, which has room for kw_source_header_count(m) entries (may be NULL
 * when that is 0). rec and hdrs point into m: valid while m is.
 */
void kw_source_record(const rd_kafka_message_t *m, kw_record_t *rec,
                      kw_record_header_t *hdrs);

#endif /* KW_SOURCE_H */
