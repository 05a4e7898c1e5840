#!/bin/sh
# 0021-receive-zk-outage.sh -- `kwal receive` survives a ZooKeeper outage.
#
# 60,000 keyed records of 100 B are produced at 3,000/s to an 8-partition
# topic while `kwal receive` (auto.offset.reset=earliest, sqlite sink,
# batch.interval.ms=500) consumes them. Once some are stored, the ZooKeeper
# server (kwal-zk-local) is stopped for 10 s: kwal must keep running and log
# that it is retrying ZooKeeper. ZooKeeper is then started again on the same
# port with the same data, and the run must end with every record stored
# exactly once (kwal-verify: 0 missing, 0 duplicates), SIGTERM exit 0, and
# every partition's ZooKeeper offset at its end offset.
#
# Run by ctest with KWAL_BIN_DIR=<build>/tools and KWAL_SRC_DIR. Every wait
# is bounded; the exit trap kills kwal, the producer and the cluster, stops
# ZooKeeper and removes the temporary directory.
set -u

BIN=${KWAL_BIN_DIR:?set KWAL_BIN_DIR to the build directory of tools/}
SRC=${KWAL_SRC_DIR:?set KWAL_SRC_DIR to the source tree}
NAME=0021
. "$SRC/tests/integration/lib.sh"
. "$SRC/tests/integration/lib_receive.sh"

LOG="$T/kwal.log"
showlog() {
    echo "--- kwal log (tail, without the ZooKeeper C client's lines):"
    grep -v 'ZOO_' "$LOG" 2>/dev/null | tail -n 40
    cp "$LOG" "${KWAL_KEEP_LOG:-/dev/null}" 2>/dev/null
}

# --- ZooKeeper and the cluster ------------------------------------------------
start_local zo:8

# stored: what kwal-verify says is stored (0 while there is no table yet).
# Before kwal-loadgen is done (no manifest yet) the run id stands in for it.
RUN=0021000000000001
TOTAL=60000
stored() {
    if [ -f "$T/m" ]; then
        "$VF" --manifest "$T/m" --sqlite "$T/out.db" 2>/dev/null
    else
        "$VF" --expect "$TOTAL" --run-id "$RUN" --sqlite "$T/out.db" 2>/dev/null
    fi | tail -n 1 | sed -n 's/.*stored=\([0-9]*\).*/\1/p'
}

# wait_stored N SECS: until at least N stored (bounded); kwal must live.
wait_stored() {
    n=0
    while :; do
        s=$(stored)
        [ -n "$s" ] || s=0
        [ "$s" -ge "$1" ] && return 0
        n=$((n + 1))
        [ "$n" -lt $(($2 * 2)) ] || { showlog; fail "only $s of $1 stored after $2 s"; }
        kill -0 "$KWPID" 2>/dev/null || { showlog; fail "kwal receive died (stored $s)"; }
        sleep 0.5
    done
}

# --- the run ------------------------------------------------------------------
cat >"$T/r.conf" <<EOF
# 0021 scenario config
group.id=gz
topics=zo
zookeeper.connect=$ZK
kafka.bootstrap.servers=$BS
auto.offset.reset=earliest
wal.dirs=$T/wal
sink=sqlite:$T/out.db
batch.interval.ms=500
EOF

start=$(date +%s)
timeout 120 "$LG" --brokers "$BS" --topic zo --records "$TOTAL" --size 100 \
    --rate 3000 --run-id "$RUN" --manifest "$T/m" >"$T/lg.out" 2>"$T/lg.err" &
LGPID=$!
"$KW" receive -c "$T/r.conf" >"$T/kwal.out" 2>"$LOG" &
KWPID=$!
wait_stored 3000 60
ok "kwal receive stores records ($(stored) so far)"

# --- the outage -----------------------------------------------------------------
timeout 30 "$ZKL" stop --dir "$T/zk" >"$T/zk.out" 2>"$T/zk.err" ||
    { cat "$T/zk.err"; fail "kwal-zk-local stop"; }
timeout 5 "$ZKL" status --dir "$T/zk" --timeout 1 >/dev/null 2>&1 &&
    fail "ZooKeeper still serves after stop"
before=$(stored)
ok "ZooKeeper stopped at $(($(date +%s) - start)) s with ${before:-0} stored"
sleep 5
mid=$(stored)
sleep 5
kill -0 "$KWPID" 2>/dev/null || { showlog; fail "kwal receive exited during the outage"; }
during=$(stored)
[ "${during:-0}" -lt "$TOTAL" ] || fail "not mid-stream: all stored during the outage"
ok "kwal receive still running after 10 s without ZooKeeper (${mid:-0} stored at 5 s, ${during:-0} at 10 s)"

timeout 60 "$ZKL" start --dir "$T/zk" >"$T/zk.out" 2>"$T/zk.err" ||
    { cat "$T/zk.err"; fail "kwal-zk-local start (again)"; }
[ "$(cat "$T/zk/connect")" = "$ZK" ] || fail "ZooKeeper came back on $(cat "$T/zk/connect"), not $ZK"
ok "ZooKeeper started again on $ZK at $(($(date +%s) - start)) s"

# --- the rest of the run --------------------------------------------------------
n=0
while kill -0 "$LGPID" 2>/dev/null; do
    n=$((n + 1))
    [ "$n" -lt 1200 ] || fail "kwal-loadgen did not finish within 120 s"
    sleep 0.1
done
wait "$LGPID" || { cat "$T/lg.err"; fail "kwal-loadgen failed"; }
LGPID=
grep -q "$TOTAL of $TOTAL records" "$T/lg.err" || { cat "$T/lg.err"; fail "not every record reached Kafka"; }
ok "kwal-loadgen delivered $TOTAL records to Kafka"
wait_stored "$TOTAL" 120
ok "all $TOTAL stored at $(($(date +%s) - start)) s"

kill -TERM "$KWPID"
n=0
while kill -0 "$KWPID" 2>/dev/null; do
    n=$((n + 1))
    [ "$n" -lt 600 ] || { showlog; fail "kwal receive did not stop within 60 s"; }
    sleep 0.1
done
wait "$KWPID"
st=$?
KWPID=
[ "$st" -eq 0 ] || { showlog; fail "kwal receive exited $st after SIGTERM"; }
ok "kwal receive stopped on SIGTERM with exit 0"

expect 0 "kwal-verify after the outage" "$VF" --manifest "$T/m" --sqlite "$T/out.db"
[ "$(tail -n 1 "$OUT")" = "expected=$TOTAL stored=$TOTAL missing=0 duplicates=0 duplicate_offsets=0 corrupt=0 foreign=0 out_of_range=0" ] ||
    fail "verify summary: $(tail -n 1 "$OUT")"
ok "$TOTAL stored once, 0 missing, 0 duplicates"

sum=0
for p in 0 1 2 3 4 5 6 7; do
    want=$(sqlite3 "$T/out.db" \
        "SELECT COALESCE(MAX(offset)+1, 0) FROM records WHERE topic='zo' AND partition=$p")
    got=$(timeout 30 "$ZKL" get --connect "$ZK" "/consumers/gz/offsets/zo/$p" 2>/dev/null)
    [ -n "$got" ] || got=0
    [ "$got" = "$want" ] || fail "ZooKeeper offset of zo/$p is '$got', end offset $want"
    sum=$((sum + got))
done
[ "$sum" -eq "$TOTAL" ] || fail "ZooKeeper offsets sum to $sum, expected $TOTAL"
ok "ZooKeeper offsets = end offsets of all 8 partitions, sum $sum"
# A commit that meets the outage either waits for the connection to read its
# offsets back ("reading them back", up to the 30 s operation timeout) or
# fails and is retried by the pipeline ("retrying").
zlog=$(grep -v 'ZOO_' "$LOG" | grep -e 'reading them back' -e 'retrying' | head -n 1)
[ -n "$zlog" ] || { showlog; fail "kwal did not log that it retries ZooKeeper"; }
ok "kwal logged the ZooKeeper outage: $(echo "$zlog" | cut -c1-160)"
# receiving paused (the hand-off queue filled while ZooKeeper was away)
pauses=$(sed -n 's/.* \([0-9]*\) pauses,.*/\1/p' "$LOG" | tail -n 1)
[ "${pauses:-0}" -ge 1 ] || { showlog; fail "kwal never paused receiving (pauses '${pauses}')"; }
ok "receiving paused ($pauses pauses) and resumed (all $TOTAL stored)"
echo "--- kwal's ZooKeeper messages:"
grep -v 'ZOO_' "$LOG" | grep -i 'zookeeper\|zk:\|session\|retrying\|paus' | head -n 20
echo "PASS: $checks checks"
