#!/bin/sh
# 0022-receive-broker-down.sh -- `kwal receive` rides out Kafka brokers going
# down and coming back while records arrive.
#
# A 3-broker cluster (kwal-kafka-mock with a --control socket) holds topic bd
# of 8 partitions; the test first sets the leaders itself (broker 1: 0 3 6,
# broker 2: 1 4 7, broker 3: 2 5). kwal-loadgen produces 100,000 keyed records
# of 100 B at 3,000/s in the background while `kwal receive` consumes them
# (auto.offset.reset=earliest, sqlite sink, batch.interval.ms=500). Mid-run:
#
#   1. `broker down 2` for at least 6 s. librdkafka 2.0.2's mock moves no
#      leadership on `broker down`: partitions 1 4 7 stall until the broker
#      is back, for the producer and for kwal alike. Checked: the other five
#      partitions keep flowing -- each gets stored past the end offset Kafka
#      had just after the broker went down (bounded wait) -- kwal stays up,
#      and the producer is still producing when the minimum hold is over.
#   2. `broker up 2`; then the leaders of broker 3's partitions (2 5) move to
#      broker 1 and `broker down 3` for at least 5 s. Checked: every one of
#      the 8 partitions is stored past the end offset it had just after
#      broker 3 went down: the stalled ones caught up after broker 2
#      returned, and the moved ones are produced to and fetched from their
#      new leader (the same checks on kwal and the producer as in 1).
#   3. `broker up 3`.
#
# The producer talks to the down brokers too (acks=all, idempotent,
# message.timeout.ms 120 s) and must still deliver all of its records
# ("100000 of 100000 records" on its stderr). One hazard is the mock's, not
# kwal's: librdkafka 2.0.2's mock checks producer sequence numbers only for
# transactional producers (rd_kafka_mock_validate_records), so a Produce
# request it appended but whose response was lost when `broker down` dropped
# the connection is appended again on the idempotent producer's retry -- a
# duplicate in Kafka at a new offset, which a real broker would refuse. One
# run of an earlier version of this test (about 1 in 35) stored two records
# of the downed broker's partition 4 twice, at distinct offsets. So that
# Kafka holds each record once, `broker down` is sent with the producer
# (only) frozen by SIGSTOP for 1 s, long enough for the mock to answer every
# request in flight; kwal is not frozen and meets the outage as it comes. If
# the sink is not exactly the workload, the test reads the whole topic back
# with kcat and shows whether Kafka itself holds the same duplicates.
#
# At the end (bounded waits): kwal-verify --manifest --sqlite reports
# stored=100000 missing=0 duplicates=0; the sink has 100,000 rows; SIGTERM
# stops kwal with exit 0 and its stop summary shows 0 duplicate deliveries;
# every partition's offset in ZooKeeper equals its end offset in the sink
# (max(offset)+1) and in Kafka (kcat -Q), summing to 100,000; the producer's
# and kwal's logs show the lost broker connections (the fault took effect).
#
# Run by ctest with KWAL_BIN_DIR=<build>/tools and KWAL_SRC_DIR. Every wait
# is bounded; the exit trap kills kwal, the producer and the cluster, stops
# ZooKeeper and removes the temporary directory.
set -u

BIN=${KWAL_BIN_DIR:?set KWAL_BIN_DIR to the build directory of tools/}
SRC=${KWAL_SRC_DIR:?set KWAL_SRC_DIR to the source tree}
NAME=0022
. "$SRC/tests/integration/lib.sh"
. "$SRC/tests/integration/lib_receive.sh"
command -v kcat >/dev/null 2>&1 || fail "kcat is not installed"

LOG="$T/s/kwal.log"
showlog() {
    echo "--- kwal log (tail, without the ZooKeeper C client's lines):"
    grep -v 'ZOO_' "$LOG" 2>/dev/null | tail -n 40
    echo "--- kwal-loadgen stderr (tail):"
    tail -n 10 "$T/lg.err" 2>/dev/null
}

# --- ZooKeeper and the cluster, with a control socket --------------------------
KLCTL="$T/kl.sock"
start_local bd:8

# The leaders, set here rather than left to the mock: p -> broker p % 3 + 1.
for p in 0 1 2 3 4 5 6 7; do
    kl_send "leader bd $p $((p % 3 + 1))"
done
kcat -L -b "$BS" -t bd >"$T/meta" 2>&1 || { cat "$T/meta"; fail "kcat -L"; }
lead=$(awk '/partition [0-9]+, leader/ { printf "%s%s", $2, $4 }' "$T/meta")
[ "$lead" = "0,1,1,2,2,3,3,1,4,2,5,3,6,1,7,2," ] || { cat "$T/meta"; fail "leaders: '$lead'"; }
ok "kcat -L: leaders broker 1: 0 3 6, broker 2: 1 4 7, broker 3: 2 5"

# kafka_end P: the end offset (high watermark) of bd/P in Kafka.
kafka_end() {
    timeout 30 kcat -Q -b "$BS" -t "bd:$1:-1" 2>/dev/null |
        sed -n "s/^bd \[$1\] offset \([0-9]*\)\$/\1/p"
}
# sink_end P: one past the highest offset of bd/P in the sink (0: none).
sink_end() {
    sqlite3 "$T/s/out.db" \
        "SELECT COALESCE(MAX(offset)+1, 0) FROM records WHERE topic='bd' AND partition=$1" \
        2>/dev/null || echo 0
}

# outage ID MIN_SECS PARTITIONS...: with broker ID down since $down (epoch
# seconds) and Kafka's end offsets just after that in $T/hw.<p>, wait (60 s
# at most) until MIN_SECS have passed and each of PARTITIONS is stored past
# that end offset. kwal must stay up; the producer must still be producing
# when MIN_SECS have passed (records kept arriving while the broker was down).
outage() {
    id=$1 min=$2
    shift 2
    n=0 held=
    while :; do
        kill -0 "$KWPID" 2>/dev/null || { showlog; fail "kwal receive died with broker $id down"; }
        if [ -z "$held" ] && [ $(($(date +%s) - down)) -ge "$min" ]; then
            kill -0 "$LGPID" 2>/dev/null ||
                { showlog; fail "kwal-loadgen ended within $min s of broker $id going down"; }
            held=1
        fi
        behind=
        for p in "$@"; do
            [ "$(sink_end "$p")" -gt "$(cat "$T/hw.$p")" ] || behind="$behind $p"
        done
        [ -z "$behind" ] && [ -n "$held" ] && break
        n=$((n + 1))
        [ "$n" -lt 120 ] || { showlog
            fail "broker $id down: partitions$behind not stored past their end offsets in 60 s"; }
        sleep 0.5
    done
}

# take_down ID: take broker ID down with the producer frozen (see the
# header): SIGSTOP, 1 s for the mock to answer what is in flight, `broker
# down ID`, SIGCONT. Sets $down.
take_down() {
    kill -STOP "$LGPID" || fail "cannot freeze kwal-loadgen"
    sleep 1
    down=$(date +%s)
    kl_send "broker down $1"
    kill -CONT "$LGPID" || fail "cannot resume kwal-loadgen"
}

# snapshot PARTITIONS...: Kafka's end offsets now, into $T/hw.<p>.
snapshot() {
    for p in "$@"; do
        hw=$(kafka_end "$p")
        [ -n "$hw" ] || fail "kcat -Q: no end offset for bd/$p"
        echo "$hw" >"$T/hw.$p"
    done
}

# --- the run ------------------------------------------------------------------
RUN=0022000000000001
mkdir -p "$T/s"
cat >"$T/r.conf" <<EOF
# 0022 scenario config
group.id=gbd
topics=bd
zookeeper.connect=$ZK
kafka.bootstrap.servers=$BS
auto.offset.reset=earliest
wal.dirs=$T/s/wal
sink=sqlite:$T/s/out.db
batch.interval.ms=500
EOF

start=$(date +%s)
"$LG" --brokers "$BS" --topic bd --records 100000 --size 100 \
    --rate 3000 --run-id "$RUN" --manifest "$T/m" >"$T/lg.out" 2>"$T/lg.err" &
LGPID=$!
"$KW" receive -c "$T/r.conf" >"$T/s/kwal.out" 2>"$LOG" &
KWPID=$!
wait_stored "$T/s/out.db" "$RUN" 10000 60 "$LOG"
ok "kwal receive stores records ($(stored "$T/s/out.db" "$RUN") so far)"

# --- 1. broker 2 down: its partitions stall, the others flow -------------------
kill -0 "$LGPID" 2>/dev/null || fail "kwal-loadgen already done: not mid-run"
take_down 2
snapshot 0 2 3 5 6
before=$(stored "$T/s/out.db" "$RUN")
outage 2 6 0 2 3 5 6
during=$(stored "$T/s/out.db" "$RUN")
ok "broker 2 down $(($(date +%s) - down)) s: partitions 0 2 3 5 6 stored past their end offsets;" \
    "stored ${before:-0} -> ${during:-0}"
parts=
for p in 1 4 7; do parts="$parts $p:$(sink_end "$p")"; done
echo "   (broker 2's partitions, sink end offsets at the end of the outage:$parts)"
kl_send "broker up 2"

# --- 2. leaders of broker 3 move to broker 1, broker 3 down --------------------
kl_send "leader bd 2 1"
kl_send "leader bd 5 1"
kill -0 "$LGPID" 2>/dev/null || fail "kwal-loadgen already done: not mid-run"
take_down 3
snapshot 0 1 2 3 4 5 6 7
before=$(stored "$T/s/out.db" "$RUN")
outage 3 5 0 1 2 3 4 5 6 7
during=$(stored "$T/s/out.db" "$RUN")
ok "broker 3 down $(($(date +%s) - down)) s: all 8 partitions stored past their end offsets" \
    "(2 5 on their new leader); stored ${before:-0} -> ${during:-0}"
kl_send "broker up 3"

# --- the rest of the run --------------------------------------------------------
n=0
while kill -0 "$LGPID" 2>/dev/null; do
    n=$((n + 1))
    [ "$n" -lt 1200 ] || fail "kwal-loadgen did not finish within 120 s after the outages"
    sleep 0.1
done
wait "$LGPID"
st=$?
LGPID=
[ "$st" -eq 0 ] || { tail -n 20 "$T/lg.err"; fail "kwal-loadgen exited $st"; }
grep -q "100000 of 100000 records" "$T/lg.err" || { tail -n 20 "$T/lg.err"; fail "not every record reached Kafka"; }
ok "kwal-loadgen delivered 100000 of 100000 records through both outages"
wait_stored "$T/s/out.db" "$T/m" 100000 120 "$LOG"
ok "all 100000 stored at $(($(date +%s) - start)) s"
stop_kwal "$LOG"

# diagnose: when the sink is not exactly the workload, show whether Kafka
# itself holds the same (kcat reads the whole topic into kwal-verify), where
# the duplicate sequence numbers sit in the sink and in Kafka, and the
# offsets (KWAL_KEEP_TMP=1 keeps the run's files: lib_receive.sh).
diagnose() {
    echo "--- diagnosis: kwal-verify on the sink:"
    "$VF" --manifest "$T/m" --sqlite "$T/s/out.db" 2>&1 | tail -n 6
    timeout 60 kcat -C -b "$BS" -t bd -e -q -o beginning -J >"$T/kafka.json" 2>"$T/kcat.err"
    echo "--- diagnosis: kwal-verify on Kafka's content (kcat -C -J, exit $?):"
    "$VF" --manifest "$T/m" --jsonl "$T/kafka.json" 2>&1 | tail -n 6
    seqs=$("$VF" --manifest "$T/m" --sqlite "$T/s/out.db" 2>/dev/null |
        sed -n 's/^duplicate seqs: //p' | tr -d ',' | tr ' ' '\n' | grep -v '^(x' | head -n 5)
    for q in $seqs; do
        echo "--- seq $q in the sink (partition|offset|batch|ts) and in Kafka:"
        sqlite3 "$T/s/out.db" "SELECT partition, offset, batch, ts FROM records
                               WHERE key = CAST('$q' AS BLOB) OR key = '$q'"
        grep "\"key\":\"$q\"," "$T/kafka.json" | cut -c1-120
    done
    for p in 0 1 2 3 4 5 6 7; do
        printf 'bd/%s: kafka end %s, zookeeper %s, sink rows %s, sink end %s\n' "$p" "$(kafka_end "$p")" \
            "$(timeout 30 "$ZKL" get --connect "$ZK" "/consumers/gbd/offsets/bd/$p" 2>/dev/null)" \
            "$(sqlite3 "$T/s/out.db" "SELECT count(*) FROM records WHERE partition=$p")" "$(sink_end "$p")"
    done
    echo "--- kwal-loadgen stderr (without librdkafka's FAIL lines):"
    grep -v '|FAIL|\|_TRANSPORT' "$T/lg.err" | tail -n 20
    echo "--- kwal's warnings and errors (without ZooKeeper client and librdkafka lines):"
    grep -v 'ZOO_\|^%' "$LOG" | grep -e ' WARN ' -e ' ERROR ' | head -n 20
    [ -z "${KWAL_KEEP_TMP-}" ] || echo "--- files kept in $T"
}

"$VF" --manifest "$T/m" --sqlite "$T/s/out.db" >"$OUT" 2>"$ERR"
st=$?
summary=$(tail -n 1 "$OUT")
want="expected=100000 stored=100000 missing=0 duplicates=0 duplicate_offsets=0 corrupt=0 foreign=0 out_of_range=0"
[ "$st" -eq 0 ] && [ "$summary" = "$want" ] ||
    { cat "$OUT"; diagnose; fail "kwal-verify after the broker outages: exit $st, $summary"; }
ok "kwal-verify after the broker outages (exit 0)"
ok "100000 stored once, 0 missing, 0 duplicates"
rows=$(sqlite3 "$T/s/out.db" "SELECT count(*) FROM records")
[ "$rows" -eq 100000 ] || fail "$rows rows in the sink"
ok "the sink holds exactly 100000 rows"
grep 'receiver: stopped:' "$LOG" | grep -q ' stored, 0 duplicate deliveries' ||
    { showlog; fail "records were delivered to the sink twice"; }
ok "the sink was delivered nothing twice (0 duplicate deliveries)"

check_offsets "$T/s" gbd bd 100000
for p in 0 1 2 3 4 5 6 7; do
    hw=$(kafka_end "$p")
    got=$(timeout 30 "$ZKL" get --connect "$ZK" "/consumers/gbd/offsets/bd/$p" 2>/dev/null)
    [ -n "$hw" ] && [ "$got" = "$hw" ] || fail "ZooKeeper offset of bd/$p is '$got', Kafka's end offset '$hw'"
done
ok "ZooKeeper offsets = Kafka's end offsets (kcat -Q) of all 8 partitions"

# the faults took effect: both clients lost their connections to the brokers
for id in 2 3; do
    port=$(echo "$BS" | cut -d, -f"$id" | cut -d: -f2)
    grep -q ":$port/$id: .*\(Connection refused\|Disconnected\)" "$T/lg.err" ||
        { tail -n 20 "$T/lg.err"; fail "kwal-loadgen's log shows no lost connection to broker $id"; }
    grep -q ":$port/$id: .*\(Connection refused\|Disconnected\)" "$LOG" ||
        { showlog; fail "kwal's log shows no lost connection to broker $id"; }
done
ok "kwal's and kwal-loadgen's logs show the lost connections to brokers 2 and 3"
echo "--- kwal's broker messages (first 10):"
grep -v 'ZOO_' "$LOG" | grep -e '/[23]: ' | head -n 10 | cut -c1-200
echo "PASS: $checks checks ($(($(date +%s) - start)) s of run)"
