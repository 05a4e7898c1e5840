#!/bin/sh
# 0020-receive.sh -- `kwal receive` end to end against a real ZooKeeper
# server (kwal-zk-local) and the local Kafka cluster (kwal-kafka-mock).
#
# Scenario 1: 100,000 keyed records of 100 B over 8 partitions (kwal-loadgen)
# are consumed by `kwal receive` (auto.offset.reset=earliest, sqlite sink,
# batch.interval.ms=500). Once kwal-verify --sqlite reports them all stored
# (bounded wait), SIGTERM must stop kwal with exit 0. Then: kwal-verify
# passes (0 missing, 0 duplicates); every partition's offset in ZooKeeper
# equals its end offset (max(offset)+1 in the sink) and they sum to 100,000
# (invariant 1: nothing acknowledged that is not delivered, nothing missing);
# `kwal wal ls` shows the WAL cleaned down to its last segment.
#
# Scenario 2 (stop and restart mid-stream): a second topic gets 100,000
# records produced at a steady rate while kwal runs; kwal is stopped with
# SIGTERM once about half is stored (exit 0), restarted, and the run must end
# with every record stored exactly once (invariant 3) and the ZooKeeper
# offsets at the end offsets.
#
# Run by ctest with KWAL_BIN_DIR=<build>/tools and KWAL_SRC_DIR. Every wait
# is bounded; the exit trap kills kwal and the producer, stops ZooKeeper and
# the cluster, and removes the temporary directory.
set -u

BIN=${KWAL_BIN_DIR:?set KWAL_BIN_DIR to the build directory of tools/}
SRC=${KWAL_SRC_DIR:?set KWAL_SRC_DIR to the source tree}
NAME=0020
. "$SRC/tests/integration/lib.sh"
. "$SRC/tests/integration/lib_receive.sh"

# --- ZooKeeper and the cluster ------------------------------------------------
start_local rt:8 rt2:8 rt3:8

# conf FILE GROUP TOPIC DIR: a receive configuration in FILE.
conf() {
    cat >"$1" <<EOF
# 0020 scenario config
group.id=$2
topics=$3
zookeeper.connect=$ZK
kafka.bootstrap.servers=$BS
auto.offset.reset=earliest
wal.dirs=$4/wal
sink=sqlite:$4/out.db
batch.interval.ms=500
# the mock coordinator holds every rebalance for session.timeout.ms - 1 s
kafka.session.timeout.ms=6000
kafka.heartbeat.interval.ms=500
EOF
}

# --- bad configuration: clear one-line errors ---------------------------------
conf "$T/bad.conf" gb rt "$T/bad"
expect 2 "kwal receive without group.id" "$KW" receive -c "$T/bad.conf" -X group.id=
has "$ERR" "kwal: receive: group.id: required by kwal receive" "names the missing key"
expect 2 "kwal receive with a bad auto.offset.reset" \
    "$KW" receive -c "$T/bad.conf" -X auto.offset.reset=sometimes
has "$ERR" "auto.offset.reset: expected one of earliest, latest, error" "names the bad value"
expect 2 "kwal receive with an unknown key" "$KW" receive -c "$T/bad.conf" -X no.such.key=1
has "$ERR" "no.such.key" "names the unknown key"
expect 2 "kwal receive with a bad number" "$KW" receive -c "$T/bad.conf" -X receivers=many
has "$ERR" "receivers" "names the key with the bad number"
expect 2 "kwal receive with a bad kafka.* value" \
    "$KW" receive -c "$T/bad.conf" -X kafka.fetch.wait.max.ms=soon
has "$ERR" "kafka.fetch.wait.max.ms" "names the bad librdkafka key"
expect 1 "kwal receive with ZooKeeper unreachable" \
    timeout 60 "$KW" receive -c "$T/bad.conf" -X zookeeper.connect=127.0.0.1:1
grep -q '^kwal: receive: .*127.0.0.1:1' "$ERR" || fail "no one-line reason naming ZooKeeper"
ok "unreachable ZooKeeper: $(grep '^kwal: ' "$ERR")"

# --- scenario 1: 100,000 records, run, stop, check ---------------------------
expect 0 "kwal-loadgen produces 100000 keyed records to rt" \
    timeout 300 "$LG" --brokers "$BS" --topic rt --records 100000 --size 100 \
    --manifest "$T/m1"
has "$ERR" "100000 of 100000 records" "every record delivered to Kafka"

mkdir -p "$T/s1"
conf "$T/s1.conf" g1 rt "$T/s1"
# small blocks and segments, so the run makes many segments for cleanup
printf 'block.max.bytes=256K\nwal.segment.bytes=512K\n' >>"$T/s1.conf"
"$KW" receive -c "$T/s1.conf" >"$T/s1/kwal.out" 2>"$T/s1/kwal.log" &
KWPID=$!
wait_stored "$T/s1/out.db" "$T/m1" 100000 120 "$T/s1/kwal.log"
ok "kwal-verify sees 100000 stored"
stop_kwal "$T/s1/kwal.log"

expect 0 "kwal-verify --sqlite after the run" "$VF" --manifest "$T/m1" --sqlite "$T/s1/out.db"
[ "$(tail -n 1 "$OUT")" = "expected=100000 stored=100000 missing=0 duplicates=0 duplicate_offsets=0 corrupt=0 foreign=0 out_of_range=0" ] ||
    fail "verify summary: $(tail -n 1 "$OUT")"
ok "100000 stored, 0 missing, 0 duplicates"
rows=$(sqlite3 "$T/s1/out.db" "SELECT count(*) FROM records")
[ "$rows" -eq 100000 ] || fail "$rows rows in the sink"
ok "the sink holds exactly 100000 rows"
check_offsets "$T/s1" g1 rt 100000
has "$T/s1/kwal.log" "stopped:" "kwal logged its stop summary"

expect 0 "kwal wal ls after the run" "$KW" wal ls --dir "$T/s1/wal"
cat "$OUT"
nseg=$(sed -n 's/^total: \([0-9]*\) segments.*/\1/p' "$OUT")
[ -n "$nseg" ] || fail "no total line in kwal wal ls"
[ "$nseg" -le 1 ] || fail "WAL not cleaned: $nseg segments remain"
cleaned=$(sed -n 's/.* \([0-9]*\) WAL segments cleaned.*/\1/p' "$T/s1/kwal.log" | tail -n 1)
[ -n "$cleaned" ] && [ "$cleaned" -ge 5 ] ||
    { showlog "$T/s1/kwal.log"; fail "expected at least 5 segments cleaned, log says '$cleaned'"; }
ok "WAL cleaned: $cleaned segments removed, $nseg (the last) remains"

# --- scenario 2: stop and restart mid-stream ----------------------------------
mkdir -p "$T/s2"
RUN2=0020000000000002
conf "$T/s2.conf" g2 rt2 "$T/s2"
timeout 300 "$LG" --brokers "$BS" --topic rt2 --records 100000 --size 100 \
    --rate 4000 --run-id "$RUN2" --manifest "$T/m2" >"$T/lg2.out" 2>"$T/lg2.err" &
LGPID=$!
"$KW" receive -c "$T/s2.conf" >"$T/s2/kwal.out" 2>"$T/s2/kwal1.log" &
KWPID=$!
wait_stored "$T/s2/out.db" "$RUN2" 30000 120 "$T/s2/kwal1.log"
stop_kwal "$T/s2/kwal1.log"
first=$(stored "$T/s2/out.db" "$RUN2")
[ "$first" -lt 90000 ] || fail "not mid-stream: $first stored at the first stop"
ok "first run stopped mid-stream with $first stored"

"$KW" receive -c "$T/s2.conf" >"$T/s2/kwal.out" 2>"$T/s2/kwal2.log" &
KWPID=$!
n=0
while kill -0 "$LGPID" 2>/dev/null; do
    n=$((n + 1))
    [ "$n" -lt 1200 ] || fail "kwal-loadgen did not finish within 120 s"
    sleep 0.1
done
wait "$LGPID" || { cat "$T/lg2.err"; fail "kwal-loadgen (rate) failed"; }
LGPID=
wait_stored "$T/s2/out.db" "$T/m2" 100000 120 "$T/s2/kwal2.log"
stop_kwal "$T/s2/kwal2.log"
expect 0 "kwal-verify after stop and restart" "$VF" --manifest "$T/m2" --sqlite "$T/s2/out.db"
[ "$(tail -n 1 "$OUT")" = "expected=100000 stored=100000 missing=0 duplicates=0 duplicate_offsets=0 corrupt=0 foreign=0 out_of_range=0" ] ||
    fail "verify summary: $(tail -n 1 "$OUT")"
ok "stop and restart: 100000 stored once, 0 missing, 0 duplicates"
has "$T/s2/kwal2.log" "at stored offset" "the restart resumed from ZooKeeper offsets"
grep 'receiver: stopped:' "$T/s2/kwal2.log" | grep -q ' stored, 0 duplicate deliveries' ||
    { showlog "$T/s2/kwal2.log"; fail "the restart delivered records twice"; }
ok "the restart delivered nothing twice (0 duplicate deliveries)"
check_offsets "$T/s2" g2 rt2 100000

# --- scenario 3: a second instance joins and leaves the group ---------------
# Instance A (2 receivers) consumes rt3 while records arrive; instance B joins
# (A's receivers revoke: flush, wait for ZooKeeper, disown) and later leaves.
# Each has its own WAL and sink; pooled, every record is stored exactly once.
RUN3=0020000000000003
mkdir -p "$T/a" "$T/b"
conf "$T/a.conf" g3 rt3 "$T/a"
echo "receivers=2" >>"$T/a.conf"
conf "$T/b.conf" g3 rt3 "$T/b"
timeout 300 "$LG" --brokers "$BS" --topic rt3 --records 100000 --size 100 \
    --rate 4000 --run-id "$RUN3" --manifest "$T/m3" >"$T/lg3.out" 2>"$T/lg3.err" &
LGPID=$!
"$KW" receive -c "$T/a.conf" >"$T/a/kwal.out" 2>"$T/a/kwal.log" &
KWPID=$!
wait_stored "$T/a/out.db" "$RUN3" 20000 120 "$T/a/kwal.log"
"$KW" receive -c "$T/b.conf" >"$T/b/kwal.out" 2>"$T/b/kwal.log" &
KWPID2=$!
n=0
until [ "$(stored "$T/b/out.db" "$RUN3")" -gt 0 ] 2>/dev/null; do
    n=$((n + 1))
    [ "$n" -lt 240 ] || { showlog "$T/b/kwal.log"; fail "instance B stored nothing in 120 s"; }
    kill -0 "$KWPID2" 2>/dev/null || { showlog "$T/b/kwal.log"; fail "instance B died"; }
    sleep 0.5
done
ok "instance B joined the group and stores records"
# B leaves: its partitions go back to A
kill -TERM "$KWPID2"
n=0
while kill -0 "$KWPID2" 2>/dev/null; do
    n=$((n + 1))
    [ "$n" -lt 600 ] || { showlog "$T/b/kwal.log"; fail "instance B did not stop"; }
    sleep 0.1
done
wait "$KWPID2" || { showlog "$T/b/kwal.log"; fail "instance B exited non-zero"; }
KWPID2=
ok "instance B stopped with exit 0"
n=0
while kill -0 "$LGPID" 2>/dev/null; do
    n=$((n + 1))
    [ "$n" -lt 1200 ] || fail "kwal-loadgen did not finish within 120 s"
    sleep 0.1
done
wait "$LGPID" || { cat "$T/lg3.err"; fail "kwal-loadgen (rt3) failed"; }
LGPID=
n=0
while :; do
    s=$("$VF" --manifest "$T/m3" --sqlite "$T/a/out.db" --sqlite "$T/b/out.db" 2>/dev/null |
        tail -n 1 | sed -n 's/.*stored=\([0-9]*\).*/\1/p')
    [ "${s:-0}" -ge 100000 ] && break
    n=$((n + 1))
    [ "$n" -lt 240 ] || { showlog "$T/a/kwal.log"; fail "only ${s:-0} stored (pooled)"; }
    sleep 0.5
done
stop_kwal "$T/a/kwal.log"
expect 0 "kwal-verify on both sinks pooled" \
    "$VF" --manifest "$T/m3" --sqlite "$T/a/out.db" --sqlite "$T/b/out.db"
[ "$(tail -n 1 "$OUT")" = "expected=100000 stored=100000 missing=0 duplicates=0 duplicate_offsets=0 corrupt=0 foreign=0 out_of_range=0" ] ||
    fail "verify summary: $(tail -n 1 "$OUT")"
ok "join and leave: 100000 stored once over both instances, 0 missing, 0 duplicates"
sa=$(sqlite3 "$T/a/out.db" "SELECT count(*) FROM records")
sb=$(sqlite3 "$T/b/out.db" "SELECT count(*) FROM records")
ok "instance A stored $sa, instance B $sb"
has "$T/a/kwal.log" "revoked rt3/" "instance A gave partitions up on the rebalance"

echo "PASS: $checks checks"
