#!/bin/sh
# The main job on local defaults: receiver mode end to end on this machine.
#
#   1. installs what is missing and builds;
#   2. starts a local ZooKeeper server (kwal-zk-local) and a local Apache
#      Kafka broker (kwal-kafka-local: one KRaft node on loopback, from the
#      jars tools/install-deps.sh fetched) with an 8-partition topic;
#   3. produces a keyed, checksummed workload (kwal-loadgen; 100,000 records,
#      or KWAL_DEMO_RECORDS);
#   4. runs `kwal receive` (3 WAL replicas, SQLite sink) until every record is
#      stored, then stops it with SIGTERM (it flushes and exits 0);
#   5. verifies the sink against the workload (kwal-verify: stored = expected,
#      0 missing, 0 duplicates) and shows the consumer offsets in ZooKeeper and
#      the WAL, which is cleaned once the sink has the records.
# Everything lives in a temporary directory, removed at the end (set
# KWAL_DEMO_KEEP=1 to keep it). Exit 0 only if the verification passes.
set -eu

here=$(cd "$(dirname "$0")/.." && pwd)
jobs=$(nproc 2>/dev/null || echo 2)
records=${KWAL_DEMO_RECORDS:-100000}

"$here/tools/install-deps.sh"
cmake -S "$here" -B "$here/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$here/build" -j "$jobs" >/dev/null
bin="$here/build/tools"

work=$(mktemp -d "${TMPDIR:-/tmp}/kwal-demo.XXXXXX")
kafka_pid=""
kwal_pid=""
cleanup() {
    [ -n "$kwal_pid" ] && kill "$kwal_pid" 2>/dev/null || true
    if [ -n "$kafka_pid" ]; then
        kill "$kafka_pid" 2>/dev/null || true
        wait "$kafka_pid" 2>/dev/null || true      # it stops its JVM first
    fi
    "$bin/kwal-zk-local" stop --dir "$work/zk" >/dev/null 2>&1 || true
    if [ "${KWAL_DEMO_KEEP:-0}" = 1 ]; then
        echo "kept $work"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "==> local ZooKeeper"
zk=$("$bin/kwal-zk-local" start --dir "$work/zk")
echo "    $zk"

echo "==> local Apache Kafka: one broker, topic demo with 8 partitions"
t0=$(date +%s%N)
"$bin/kwal-kafka-local" --brokers 1 --topic demo:8 --dir "$work/kafka" \
    --bootstrap-file "$work/bootstrap" --no-stdin >"$work/kafka.out" 2>"$work/kafka.log" &
kafka_pid=$!
i=0
while [ ! -s "$work/bootstrap" ]; do
    i=$((i + 1))
    kill -0 "$kafka_pid" 2>/dev/null || { echo "kafka did not start:"; cat "$work/kafka.log"; exit 1; }
    [ "$i" -le 1200 ] || { echo "kafka did not start in 120 s:"; cat "$work/kafka.log"; exit 1; }
    sleep 0.1
done
bootstrap=$(cat "$work/bootstrap")
echo "    $bootstrap (up in $(( ($(date +%s%N) - t0) / 1000000 )) ms)"
kcat -L -b "$bootstrap" -t demo | sed -n '1,3p' | sed 's/^/    /'

echo "==> producing $records records (kwal-loadgen)"
"$bin/kwal-loadgen" --brokers "$bootstrap" --topic demo --records "$records" \
    --manifest "$work/manifest"

cat >"$work/kwal.conf" <<CONF
# kwal receive, local demo
group.id=kwal-demo
topics=demo
receivers=2
zookeeper.connect=$zk
kafka.bootstrap.servers=$bootstrap
auto.offset.reset=earliest
wal.dirs=$work/wal-0,$work/wal-1,$work/wal-2
sink=sqlite:$work/out.db
batch.interval.ms=500
CONF
echo "==> kwal receive -c $work/kwal.conf"
"$bin/kwal" receive -c "$work/kwal.conf" 2>"$work/kwal.log" &
kwal_pid=$!
i=0
until "$bin/kwal-verify" --manifest "$work/manifest" --sqlite "$work/out.db" >/dev/null 2>&1; do
    i=$((i + 1))
    if ! kill -0 "$kwal_pid" 2>/dev/null; then
        echo "kwal receive stopped early:"; tail -20 "$work/kwal.log"; exit 1
    fi
    [ "$i" -le 300 ] || { echo "not all records stored after 300 s"; tail -20 "$work/kwal.log"; exit 1; }
    sleep 1
done
kill -TERM "$kwal_pid"
status=0
wait "$kwal_pid" || status=$?
kwal_pid=""
echo "    kwal receive exited $status after SIGTERM"
[ "$status" -eq 0 ] || { tail -20 "$work/kwal.log"; exit 1; }

echo "==> kwal-verify --sqlite $work/out.db"
"$bin/kwal-verify" --manifest "$work/manifest" --sqlite "$work/out.db"

echo "==> offsets in ZooKeeper (/consumers/kwal-demo/offsets/demo/<partition>)"
for p in 0 1 2 3 4 5 6 7; do
    printf '    partition %s: %s\n' "$p" \
        "$("$bin/kwal-zk-local" get --connect "$zk" "/consumers/kwal-demo/offsets/demo/$p")"
done

echo "==> kwal wal ls (segments whose blocks the sink has are deleted; the one being written stays)"
"$bin/kwal" wal ls -c "$work/kwal.conf"
