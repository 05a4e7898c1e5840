#!/bin/sh
# 0025-receive-source-loss.sh -- offset out of range: data loss at the source
# is logged loudly and counted (invariant 6), then auto.offset.reset applies.
#
# Scenario: a 1-partition topic gets 1,000 records of 1,000 B (kwal-loadgen,
# sequence numbers 0..999, so offset = sequence number throughout). `kwal
# receive` stores them all and is stopped (SIGTERM, exit 0): ZooKeeper's
# offset is 1000. While kwal is stopped, 10,000 more records of the same run
# (sequence numbers 1000..10999, ~10 MB) go to the partition; the mock
# cluster keeps at most ~5 MiB per partition, so retention removes records
# kwal still needs: the low watermark L (read with kcat) moves past 1000.
#
# Checked:
#   * with auto.offset.reset=error kwal exits non-zero with a one-line reason
#     on stderr naming the partition and saying data loss at the source, and
#     the stored offset in ZooKeeper stays 1000;
#   * with auto.offset.reset=earliest kwal logs "data loss at the source"
#     naming the partition and exactly the lost range 1000..L-1, goes on from
#     L, and stops (SIGTERM, exit 0) with a summary counting 1 source-loss
#     event; the sink holds exactly offsets 0..999 and L..10999, each once;
#     kwal-verify's missing ranges are exactly 1000..L-1 (nothing else
#     missing, no duplicates); ZooKeeper's offset = end offset = 11000.
#
# The librdkafka mock cluster's group coordinator waits session.timeout.ms
# minus 1 s after a member leaves before the next one may join, so kwal runs
# with kafka.session.timeout.ms=4000 (see 0024).
#
# Run by ctest with KWAL_BIN_DIR=<build>/tools and KWAL_SRC_DIR. Every wait
# is bounded; the exit trap kills kwal and the producer, stops ZooKeeper and
# the cluster, and removes the temporary directory.
set -u

BIN=${KWAL_BIN_DIR:?set KWAL_BIN_DIR to the build directory of tools/}
SRC=${KWAL_SRC_DIR:?set KWAL_SRC_DIR to the source tree}
NAME=0025
. "$SRC/tests/integration/lib.sh"
. "$SRC/tests/integration/lib_receive.sh"

command -v kcat >/dev/null 2>&1 || fail "kcat is not installed"

LOG="$T/kwal.log"
showlog() {
    echo "--- $(basename "$1") (tail, without the ZooKeeper C client's lines):"
    grep -v 'ZOO_' "$1" 2>/dev/null | tail -n 40
}

RUN=0025000000000001
TOPIC=lt
GROUP=gl
OFFNODE=/consumers/$GROUP/offsets/$TOPIC/0

# --- ZooKeeper and the cluster ------------------------------------------------
start_local "$TOPIC:1"

cat >"$T/r.conf" <<EOF
# 0025 scenario config
group.id=$GROUP
topics=$TOPIC
zookeeper.connect=$ZK
kafka.bootstrap.servers=$BS
auto.offset.reset=earliest
wal.dirs=$T/wal
sink=sqlite:$T/out.db
batch.interval.ms=500
# the mock coordinator waits session.timeout.ms - 1 s for rejoins (see above)
kafka.session.timeout.ms=4000
kafka.heartbeat.interval.ms=500
EOF

rows() { sqlite3 "$T/out.db" "SELECT count(*) FROM records" 2>/dev/null || echo 0; }
zkoffset() { timeout 30 "$ZKL" get --connect "$ZK" "$OFFNODE" 2>/dev/null; }

# low, high: the partition's watermarks, from kcat (not from kwal)
low() { timeout 30 kcat -Q -b "$BS" -t "$TOPIC:0:-2" 2>/dev/null | sed -n 's/.* offset \([0-9]*\)$/\1/p'; }
high() { timeout 30 kcat -Q -b "$BS" -t "$TOPIC:0:-1" 2>/dev/null | sed -n 's/.* offset \([0-9]*\)$/\1/p'; }

# wait_rows N SECS LOG: until the sink holds at least N rows (bounded).
wait_rows() {
    n=0
    while [ "$(rows)" -lt "$1" ]; do
        n=$((n + 1))
        [ "$n" -lt $(($2 * 2)) ] || { showlog "$3"; fail "only $(rows) of $1 rows stored after $2 s"; }
        kill -0 "$KWPID" 2>/dev/null || { showlog "$3"; fail "kwal receive died ($(rows) rows)"; }
        sleep 0.5
    done
}

# --- 1,000 records stored, offset 1000 in ZooKeeper ---------------------------
expect 0 "kwal-loadgen produces records 0..999" \
    timeout 120 "$LG" --brokers "$BS" --topic "$TOPIC" --records 1000 --size 1000 --run-id "$RUN"
"$KW" receive -c "$T/r.conf" >"$T/kwal.out" 2>"$T/kwal1.log" &
KWPID=$!
wait_rows 1000 120 "$T/kwal1.log"
stop_kwal "$T/kwal1.log"
[ "$(rows)" -eq 1000 ] || fail "$(rows) rows after the first run, expected 1000"
[ "$(zkoffset)" = 1000 ] || fail "ZooKeeper offset after the first run: '$(zkoffset)', expected 1000"
ok "first run: 1000 stored, ZooKeeper offset 1000"

# --- retention removes records kwal still needs --------------------------------
expect 0 "kwal-loadgen produces records 1000..10999 (~10 MB)" \
    timeout 120 "$LG" --brokers "$BS" --topic "$TOPIC" --records 10000 --first 1000 \
    --size 1000 --run-id "$RUN"
L=$(low)
H=$(high)
[ -n "$L" ] && [ -n "$H" ] || fail "kcat cannot read the watermarks of $TOPIC/0"
[ "$H" -eq 11000 ] || fail "high watermark $H, expected 11000"
[ "$L" -gt 1000 ] && [ "$L" -lt 11000 ] ||
    fail "low watermark $L: retention did not remove records kwal needs (1000..)"
first=$(timeout 30 kcat -C -b "$BS" -t "$TOPIC" -p 0 -o beginning -c 1 -e -q -f '%o\n' 2>/dev/null)
[ "$first" = "$L" ] || fail "kcat reads offset '$first' first, low watermark $L"
LAST=$((L - 1))
ok "retention moved the low watermark past the stored offset: Kafka has $L..$H, lost 1000..$LAST"

# --- auto.offset.reset=error: exit non-zero, offset untouched ------------------
expect 1 "kwal receive with auto.offset.reset=error" \
    timeout 120 "$KW" receive -c "$T/r.conf" -X auto.offset.reset=error
# stderr also carries the log; the reason is the one line starting "kwal: "
reason=$(grep '^kwal: ' "$ERR")
[ "$(grep -c '^kwal: ' "$ERR")" -eq 1 ] || fail "not one 'kwal: ' reason line on stderr: $reason"
case "$reason" in
"kwal: receive: "*"data loss at the source"*"$TOPIC/0"*) ;;
*) fail "the reason does not name data loss at the source of $TOPIC/0: '$reason'" ;;
esac
ok "one-line reason: $reason"
[ "$(zkoffset)" = 1000 ] || fail "ZooKeeper offset after the error run: '$(zkoffset)', expected 1000"
ok "the stored offset stays 1000"
[ "$(rows)" -eq 1000 ] || fail "$(rows) rows after the error run, expected 1000"
ok "the sink is unchanged (1000 rows)"

# --- auto.offset.reset=earliest: logged, counted, resumed at L -----------------
"$KW" receive -c "$T/r.conf" >"$T/kwal.out" 2>"$LOG" &
KWPID=$!
n=0
until grep -q 'data loss at the source' "$LOG"; do
    n=$((n + 1))
    [ "$n" -lt 600 ] || { showlog "$LOG"; fail "no 'data loss at the source' logged within 60 s"; }
    kill -0 "$KWPID" 2>/dev/null || { showlog "$LOG"; fail "kwal receive died"; }
    sleep 0.1
done
has "$LOG" "receiver-0: assigned $TOPIC/0 at stored offset 1000" "kwal started from the stored offset"
msg=$(grep -v 'ZOO_' "$LOG" | grep 'data loss at the source')
echo "$msg" | grep -q "ERROR .*data loss at the source: $TOPIC/0 offsets 1000\.\.$LAST no longer in Kafka" ||
    { showlog "$LOG"; fail "data loss line does not name $TOPIC/0 and 1000..$LAST: $msg"; }
ok "logged at ERROR: $(echo "$msg" | cut -d' ' -f3-)"
# then it goes on from the low watermark (auto.offset.reset=earliest)
WANT=$((1000 + 11000 - L))
wait_rows "$WANT" 60 "$LOG"
stop_kwal "$LOG"
msg=$(grep -v 'ZOO_' "$LOG" | grep 'data loss at the source')
[ "$(echo "$msg" | wc -l)" -eq 1 ] || { showlog "$LOG"; fail "expected one data loss line, got: $msg"; }
ok "the loss was logged once"
summary=$(grep 'receiver: stopped:' "$LOG")
echo "$summary" | grep -q ', 1 source-loss events,' ||
    { showlog "$LOG"; fail "stop summary does not count 1 source-loss event: $summary"; }
ok "stop summary counts it: $(echo "$summary" | cut -d' ' -f3-)"

expect 1 "kwal-verify over the whole run (records lost at the source)" \
    "$VF" --expect 11000 --run-id "$RUN" --sqlite "$T/out.db"
has "$OUT" "missing: $((L - 1000)) in 1 range" "kwal-verify: $((L - 1000)) missing, in one range"
has "$OUT" "missing ranges: 1000..$LAST" "kwal-verify: the missing range is the lost range 1000..$LAST"
[ "$(tail -n 1 "$OUT")" = "expected=11000 stored=$WANT missing=$((L - 1000)) duplicates=0 duplicate_offsets=0 corrupt=0 foreign=0 out_of_range=0" ] ||
    fail "verify summary: $(tail -n 1 "$OUT")"
ok "kwal-verify: $(tail -n 1 "$OUT")"
got=$(sqlite3 "$T/out.db" "SELECT count(*), count(DISTINCT offset), MIN(offset), MAX(offset) FROM records WHERE offset >= 1000")
[ "$got" = "$((11000 - L))|$((11000 - L))|$L|10999" ] ||
    fail "sink after offset 1000 holds count|distinct|min|max = $got, expected $((11000 - L))|$((11000 - L))|$L|10999"
ok "the sink holds exactly offsets 0..999 and $L..10999 ($WANT rows)"
[ "$(zkoffset)" = 11000 ] || fail "ZooKeeper offset at the end: '$(zkoffset)', expected 11000"
ok "ZooKeeper offset = end offset = 11000"

echo "PASS: $checks checks"
