#!/bin/sh
# 0040-direct.sh -- `kwal direct` end to end against a real ZooKeeper server
# (kwal-zk-local) and the local Kafka cluster (kwal-kafka-mock).
#
#   a. Bad input: no group.id, a topic pattern, a malformed
#      direct.start.offsets item, sink=jsonl without --at-least-once: exit 2
#      with a one-line reason naming the key.
#   b. 100,000 records over 8 partitions, auto.offset.reset=earliest: all
#      stored once (kwal-verify), no duplicate deliveries, SIGTERM exits 0,
#      ZooKeeper offsets = end offsets, and per partition the stored ranges
#      are contiguous (each batch's from = the previous batch's until) and end
#      at the end offset.
#   c. Restart mid-run: records produced at a steady rate while kwal direct
#      runs; SIGKILL once about half is stored, start again: every record
#      stored once, no duplicate deliveries (the ranges committed with the
#      output say where to go on).
#   d. Start positions: latest (only records produced after the start are
#      stored), explicit direct.start.offsets (each partition starts at its
#      given offset; the others follow auto.offset.reset).
#   e. max.rate.per.partition=100 with batch.interval.ms=1000: no stored
#      range is longer than 100 offsets, and it takes several batches.
#   f. Crash points of the direct path at pass 3 (direct.read, sink.mid-txn,
#      direct.stored): exit 99 there, then a normal run: 0 missing, 0
#      duplicates stored, ZooKeeper = end offsets.
#   g. A crash at direct.stored:1 when that batch took everything: the
#      restart has nothing to read and must still bring ZooKeeper up to the
#      stored ranges (found by kwal compare).
#   h. backpressure.enabled with records arriving while it runs: the rate
#      estimate is logged, every record stored once.
#   i. Two instances of one group on one sink database: the first owns every
#      partition in ZooKeeper, the second waits; SIGKILL the first mid-run
#      and the second takes the partitions over once the first's session
#      expires, going on from the ranges in the shared database: every
#      record stored once.
#
# Run by ctest with KWAL_BIN_DIR and KWAL_SRC_DIR; every wait is bounded.
set -u

BIN=${KWAL_BIN_DIR:?set KWAL_BIN_DIR to the build directory of tools/}
SRC=${KWAL_SRC_DIR:?set KWAL_SRC_DIR to the source tree}
NAME=0040
. "$SRC/tests/integration/lib.sh"
. "$SRC/tests/integration/lib_receive.sh"

start_local da:8 dc:4 dd:2 de:2 df1:4 df2:4 df3:4 dg:4 dh:2 di:4

# dconf DIR GROUP TOPIC: a direct-mode configuration in DIR/k.conf.
dconf() {
    mkdir -p "$1"
    cat >"$1/k.conf" <<EOF
group.id=$2
topics=$3
zookeeper.connect=$ZK
kafka.bootstrap.servers=$BS
auto.offset.reset=earliest
sink=sqlite:$1/out.db
batch.interval.ms=300
EOF
}

# produce DIR TOPIC N: kwal-loadgen, manifest in DIR/m.
produce() {
    timeout 120 "$LG" --brokers "$BS" --topic "$2" --records "$3" --size 100 \
        --manifest "$1/m" >"$1/lg.out" 2>"$1/lg.err" ||
        { cat "$1/lg.err"; fail "$2: kwal-loadgen"; }
}

# start_direct DIR LOG [ARGS...]: kwal direct in the background (KWPID).
start_direct() {
    dir=$1 log=$2
    shift 2
    "$KW" direct -c "$dir/k.conf" "$@" >"$dir/kwal.out" 2>"$log" &
    KWPID=$!
}

# verify_once DIR N WHAT: kwal-verify finds N stored, nothing missing, no
# duplicates; the sink counted no duplicate delivery either.
verify_once() {
    summary=$("$VF" --manifest "$1/m" --sqlite "$1/out.db" 2>/dev/null | tail -n 1)
    case "$summary" in
    "expected=$2 stored=$2 missing=0 duplicates=0 duplicate_offsets=0 corrupt=0"*) ;;
    *) fail "$3: verify: $summary" ;;
    esac
    dd=$(sqlite3 "$1/out.db" "SELECT COALESCE(SUM(duplicates), 0) FROM batches")
    [ "$dd" -eq 0 ] || fail "$3: $dd duplicate deliveries counted by the sink"
    ok "$3: $summary, 0 duplicate deliveries"
}

# ranges_contiguous DIR TOPIC: per partition the stored ranges follow each
# other without gap or overlap and end at the sink's end offset.
ranges_contiguous() {
    bad=$(sqlite3 "$1/out.db" "SELECT count(*) FROM (SELECT from_offset, LAG(until_offset) OVER (PARTITION BY topic, partition ORDER BY batch) AS prev FROM direct_ranges WHERE topic = '$2') WHERE prev IS NOT NULL AND prev != from_offset")
    [ "$bad" -eq 0 ] || fail "$2: $bad stored ranges do not start where the previous one ended"
    bad=$(sqlite3 "$1/out.db" "SELECT count(*) FROM (SELECT partition, MAX(until_offset) AS u FROM direct_ranges WHERE topic = '$2' GROUP BY partition) r WHERE u != (SELECT MAX(offset) + 1 FROM records WHERE topic = '$2' AND partition = r.partition)")
    [ "$bad" -eq 0 ] || fail "$2: $bad partitions whose last range does not end at the end offset"
    nb=$(sqlite3 "$1/out.db" "SELECT count(DISTINCT batch) FROM direct_ranges WHERE topic = '$2'")
    ok "$2: stored ranges contiguous over $nb batches, ending at the end offsets"
}

# --- a. bad input ---------------------------------------------------------------
dconf "$T/bad" gbad da
expect 2 "kwal direct without group.id" "$KW" direct -c "$T/bad/k.conf" -X group.id=
has "$ERR" "kwal: direct: group.id: required by kwal direct" "names the missing key"
expect 2 "kwal direct with a topic pattern" "$KW" direct -c "$T/bad/k.conf" -X 'topics=^d.*'
has "$ERR" "kwal direct takes topic names, not patterns" "says why"
expect 2 "kwal direct with a bad direct.start.offsets" \
    "$KW" direct -c "$T/bad/k.conf" -X direct.start.offsets=da:x:1
has "$ERR" "direct.start.offsets: 'da:x:1': bad partition" "names the item"
expect 2 "kwal direct with sink=jsonl" "$KW" direct -c "$T/bad/k.conf" -X sink=jsonl
has "$ERR" "needs sink=sqlite:PATH" "says which sink it needs"
expect 2 "kwal direct with an unknown option" "$KW" direct -c "$T/bad/k.conf" --no-such
[ "$(wc -l <"$ERR")" -le 2 ] || fail "more than a short usage error: $(cat "$ERR")"

# --- b. 100,000 records ---------------------------------------------------------
d="$T/a"
dconf "$d" ga da
produce "$d" da 100000
t0=$(date +%s)
start_direct "$d" "$d/run.log"
wait_stored "$d/out.db" "$d/m" 100000 180 "$d/run.log"
stop_kwal "$d/run.log"
verify_once "$d" 100000 "da: 100,000 records in $(($(date +%s) - t0)) s"
check_offsets "$d" ga da 100000 8
ranges_contiguous "$d" da

# --- c. SIGKILL mid-run and restart ----------------------------------------------
d="$T/c"
dconf "$d" gc dc
EXPECT=20000
runid=00000000000000dc
"$LG" --brokers "$BS" --topic dc --records 20000 --size 100 --rate 4000 --run-id "$runid" \
    --manifest "$d/m" >"$d/lg.out" 2>"$d/lg.err" &
LGPID=$!
start_direct "$d" "$d/run1.log"
wait_stored "$d/out.db" "$runid" 8000 60 "$d/run1.log"
kill -KILL "$KWPID"
wait "$KWPID" 2>/dev/null
KWPID=
s1=$(stored "$d/out.db" "$runid")
ok "dc: SIGKILL with $s1 stored"
start_direct "$d" "$d/run2.log"
wait "$LGPID" || { cat "$d/lg.err"; fail "dc: kwal-loadgen"; }
LGPID=
wait_stored "$d/out.db" "$d/m" 20000 60 "$d/run2.log"
stop_kwal "$d/run2.log"
verify_once "$d" 20000 "dc: after SIGKILL at $s1 stored and a restart"
check_offsets "$d" gc dc 20000 4
ranges_contiguous "$d" dc

# --- d. start positions ------------------------------------------------------------
# latest: the records already there are not read, the ones produced after are
d="$T/dl"
dconf "$d" gdl dd
produce "$T" dd 1000                      # before: not wanted
start_direct "$d" "$d/run.log" -X auto.offset.reset=latest
n=0
until [ "$(grep -c 'starts at offset' "$d/run.log")" -ge 2 ]; do
    n=$((n + 1))
    [ "$n" -lt 300 ] || { showlog "$d/run.log"; fail "dd: partitions did not start in 30 s"; }
    sleep 0.1
done
produce "$d" dd 500
wait_stored "$d/out.db" "$d/m" 500 60 "$d/run.log"
sleep 1
stop_kwal "$d/run.log"
verify_once "$d" 500 "dd latest: the 500 records produced after the start"
rows=$(sqlite3 "$d/out.db" "SELECT count(*) FROM records")
[ "$rows" -eq 500 ] || fail "dd latest: $rows records stored, expected only the 500 new ones"
# explicit: partition 0 from offset 100, partition 1 from earliest
d="$T/dx"
dconf "$d" gdx dd
start_direct "$d" "$d/run.log" -X direct.start.offsets=dd:0:100
n=0
want=$(( $(timeout 30 "$ZKL" get --connect "$ZK" "/consumers/gdl/offsets/dd/0") - 100 + $(timeout 30 "$ZKL" get --connect "$ZK" "/consumers/gdl/offsets/dd/1") ))
until [ "$(sqlite3 "$d/out.db" "SELECT count(*) FROM records" 2>/dev/null || echo 0)" -ge "$want" ]; do
    n=$((n + 1))
    [ "$n" -lt 300 ] || { showlog "$d/run.log"; fail "dd explicit: fewer than $want records in 30 s"; }
    sleep 0.1
done
stop_kwal "$d/run.log"
got=$(sqlite3 "$d/out.db" "SELECT MIN(offset) FROM records WHERE partition = 0")
[ "$got" = 100 ] || fail "dd explicit: partition 0 starts at $got, expected 100"
got=$(sqlite3 "$d/out.db" "SELECT MIN(offset) FROM records WHERE partition = 1")
[ "$got" = 0 ] || fail "dd explicit: partition 1 starts at $got, expected 0 (earliest)"
rows=$(sqlite3 "$d/out.db" "SELECT count(*) FROM records")
[ "$rows" -eq "$want" ] || fail "dd explicit: $rows records stored, expected $want"
ok "dd explicit: partition 0 from offset 100, partition 1 from 0: $rows records"

# --- e. max.rate.per.partition ------------------------------------------------------
d="$T/e"
dconf "$d" ge de
produce "$d" de 2000
start_direct "$d" "$d/run.log" -X max.rate.per.partition=100 -X batch.interval.ms=1000
n=0
until [ "$(sqlite3 "$d/out.db" "SELECT count(DISTINCT batch) FROM direct_ranges" 2>/dev/null || echo 0)" -ge 3 ]; do
    n=$((n + 1))
    [ "$n" -lt 300 ] || { showlog "$d/run.log"; fail "de: fewer than 3 batches in 30 s"; }
    sleep 0.1
done
stop_kwal "$d/run.log"
longest=$(sqlite3 "$d/out.db" "SELECT MAX(until_offset - from_offset) FROM direct_ranges")
[ "$longest" -le 100 ] || fail "de: a range of $longest offsets with max.rate.per.partition=100 and 1 s batches"
nb=$(sqlite3 "$d/out.db" "SELECT count(DISTINCT batch) FROM direct_ranges")
rows=$(sqlite3 "$d/out.db" "SELECT count(*) FROM records")
[ "$rows" -le $((nb * 200)) ] || fail "de: $rows records in $nb batches: more than 100 per partition per batch"
ok "de: $nb batches, longest range $longest offsets, $rows records (at most 100 per partition per batch)"

# --- f. crash points of the direct path ----------------------------------------------
i=0
for pt in direct.read sink.mid-txn direct.stored; do
    i=$((i + 1))
    d="$T/f$i" topic=df$i
    dconf "$d" "gf$i" "$topic"
    produce "$d" "$topic" 6000
    KWAL_CRASH_AT="$pt:3" "$KW" direct -c "$d/k.conf" -X max.rate.per.partition=1000 \
        -X batch.interval.ms=200 >"$d/kwal.out" 2>"$d/run1.log"
    st=$?
    [ "$st" -eq 99 ] || { showlog "$d/run1.log"; fail "$topic: expected exit 99 at $pt:3, got $st"; }
    grep -q "crash point $pt reached" "$d/run1.log" || { showlog "$d/run1.log"; fail "$topic: no crash line"; }
    s1=$(stored "$d/out.db" "$d/m")
    start_direct "$d" "$d/run2.log"
    wait_stored "$d/out.db" "$d/m" 6000 60 "$d/run2.log"
    stop_kwal "$d/run2.log"
    verify_once "$d" 6000 "$topic: crash at $pt:3 with ${s1:-0} stored, then a restart"
    check_offsets "$d" "gf$i" "$topic" 6000 4
done

# g. a crash after the last batch's commit, before ZooKeeper: the restart has
# nothing new to read, and must still bring ZooKeeper up to the stored ranges
d="$T/g"
dconf "$d" gg dg
produce "$d" dg 1000
KWAL_CRASH_AT=direct.stored:1 "$KW" direct -c "$d/k.conf" >"$d/kwal.out" 2>"$d/run1.log"
st=$?
[ "$st" -eq 99 ] || { showlog "$d/run1.log"; fail "dg: expected exit 99 at direct.stored:1, got $st"; }
[ "$(stored "$d/out.db" "$d/m")" = 1000 ] || fail "dg: the first batch did not store all 1000"
start_direct "$d" "$d/run2.log"
n=0
until [ "$(for p in 0 1 2 3; do timeout 30 "$ZKL" get --connect "$ZK" "/consumers/gg/offsets/dg/$p" 2>/dev/null; echo; done | awk '/^[0-9]+$/ { s += $1 } END { print s + 0 }')" -eq 1000 ]; do
    n=$((n + 1))
    [ "$n" -lt 60 ] || { showlog "$d/run2.log"; fail "dg: ZooKeeper offsets not at the stored ranges 30 s after the restart"; }
    sleep 0.5
done
stop_kwal "$d/run2.log"
verify_once "$d" 1000 "dg: crash at direct.stored:1 with everything stored"
check_offsets "$d" gg dg 1000 4

# h. back-pressure on, records arriving while it runs: the estimator logs
# its rate, and nothing is lost or stored twice
d="$T/h"
dconf "$d" gh dh
start_direct "$d" "$d/run.log" -X backpressure.enabled=true -X backpressure.min.rate=200
"$LG" --brokers "$BS" --topic dh --records 5000 --size 100 --rate 2000 \
    --manifest "$d/m" >"$d/lg.out" 2>"$d/lg.err" ||
    { cat "$d/lg.err"; fail "dh: kwal-loadgen"; }
wait_stored "$d/out.db" "$d/m" 5000 60 "$d/run.log"
stop_kwal "$d/run.log"
grep -q "INFO  direct: back-pressure: [0-9]* records/s" "$d/run.log" ||
    { showlog "$d/run.log"; fail "dh: no back-pressure estimate logged"; }
verify_once "$d" 5000 "dh: back-pressure on ($(grep -c 'back-pressure:' "$d/run.log") estimate lines, last: $(grep 'back-pressure:' "$d/run.log" | tail -n 1 | sed 's/.*back-pressure: //'))"

# i. failover between two instances sharing the sink database
d="$T/i"
dconf "$d" gi di
echo "zookeeper.session.timeout.ms=3000" >>"$d/k.conf"
"$KW" direct -c "$d/k.conf" -X instance.id=first >"$d/a.out" 2>"$d/a.log" &
KWPID=$!
n=0
until [ "$(grep -c 'starts at offset' "$d/a.log")" -ge 4 ]; do
    n=$((n + 1))
    [ "$n" -lt 300 ] || { showlog "$d/a.log"; fail "di: the first instance did not start its 4 partitions"; }
    sleep 0.1
done
"$KW" direct -c "$d/k.conf" -X instance.id=second >"$d/b.out" 2>"$d/b.log" &
KWPID2=$!
"$LG" --brokers "$BS" --topic di --records 8000 --size 100 --rate 2000 --run-id 00000000000000d1 \
    --manifest "$d/m" >"$d/lg.out" 2>"$d/lg.err" &
LGPID=$!
EXPECT=8000
wait_stored "$d/out.db" 00000000000000d1 2000 60 "$d/a.log"
grep -q "not read for now: di/0 is owned by 'first'" "$d/b.log" ||
    { showlog "$d/b.log"; fail "di: the second instance did not wait for the first's partitions"; }
kill -KILL "$KWPID"
wait "$KWPID" 2>/dev/null
s1=$(stored "$d/out.db" 00000000000000d1)
ok "di: the first instance SIGKILLed with $s1 stored; the second waited for its partitions"
KWPID=$KWPID2
KWPID2=
wait "$LGPID" || { cat "$d/lg.err"; fail "di: kwal-loadgen"; }
LGPID=
wait_stored "$d/out.db" "$d/m" 8000 60 "$d/b.log"
stop_kwal "$d/b.log"
[ "$(grep -c 'di/[0-3]: free again, read by this instance now' "$d/b.log")" -eq 4 ] ||
    { showlog "$d/b.log"; fail "di: the second instance did not take over all 4 partitions"; }
verify_once "$d" 8000 "di: failover to the second instance"
ranges_contiguous "$d" di

echo "0040-direct: $checks checks passed"
