#!/bin/sh
# 0026-receive-no-wal.sh -- `kwal receive --no-wal`, the unreliable receiver
# (DESIGN.md "Semantics to compare": Spark's receiver before its WAL), against
# a real ZooKeeper server (kwal-zk-local) and the local Kafka cluster.
#
# (a) 20,000 keyed records over 4 partitions; `kwal receive --no-wal` stores
#     them all; SIGTERM stops it with exit 0. kwal-verify: every record stored
#     once, 0 missing; ZooKeeper offsets = end offsets; no WAL directory and no
#     tracker were created; recovery did not run; the start logged the WARN.
# (a2) a graceful stop loses nothing: with batch.interval.ms=60000, once the
#     ZooKeeper offsets cover all 20,000 records of a second topic (committed
#     on receipt) the sink still holds none of them (the blocks wait in
#     memory); SIGTERM delivers every pending block: all stored once.
# (b) a crash loses what was committed but not delivered: with
#     batch.interval.ms=60000 and KWAL_CRASH_AT=pipeline.committed:5 kwal dies
#     (exit 99) right after the 5th block's offsets went to ZooKeeper, nothing
#     delivered. The ZooKeeper offsets read right then, minus what the sink
#     held then, is the loss L (> 0). A normal `--no-wal` restart consumes
#     from those offsets until the rest is stored; kwal-verify then reports
#     exactly L missing and 0 duplicates, and per partition the sink holds
#     exactly the offsets from the crash-time ZooKeeper offset to the end.
# (c) bad arguments: --no-wal with --classic or --skip-corrupt exits 2 with
#     one line on stderr; `kwal recover --no-wal` is refused.
#
# Run by ctest with KWAL_BIN_DIR=<build>/tools and KWAL_SRC_DIR. Every wait
# is bounded; the exit trap kills kwal and the producer, stops ZooKeeper and
# the cluster, and removes the temporary directory.
set -u

BIN=${KWAL_BIN_DIR:?set KWAL_BIN_DIR to the build directory of tools/}
SRC=${KWAL_SRC_DIR:?set KWAL_SRC_DIR to the source tree}
NAME=0026
. "$SRC/tests/integration/lib.sh"
. "$SRC/tests/integration/lib_receive.sh"

N=20000
NC=6000
# short sessions, so the crashed process's owner nodes and group member go soon
ZKL_ARGS="--tick-ms 500"

# --- ZooKeeper and the cluster ------------------------------------------------
start_local nw:4 nw2:4 nw3:4

# conf DIR GROUP TOPIC: a --no-wal configuration in DIR/k.conf.
conf() {
    cat >"$1/k.conf" <<EOF
# 0026 scenario config
group.id=$2
topics=$3
receivers=2
zookeeper.connect=$ZK
zookeeper.session.timeout.ms=2000
kafka.bootstrap.servers=$BS
kafka.session.timeout.ms=3000
kafka.heartbeat.interval.ms=300
auto.offset.reset=earliest
wal.dirs=$1/wal
sink=sqlite:$1/out.db
block.max.bytes=16K
block.interval.ms=50
batch.interval.ms=500
EOF
}

# zk_offsets GROUP TOPIC: "o0 o1 o2 o3", the ZooKeeper offsets (0 when none).
zk_offsets() {
    offs= p=0
    while [ "$p" -lt 4 ]; do
        o=$(timeout 30 "$ZKL" get --connect "$ZK" "/consumers/$1/offsets/$2/$p" 2>/dev/null)
        offs="$offs ${o:-0}"
        p=$((p + 1))
    done
    echo $offs
}

# sum_words WORDS...: their sum.
sum_words() {
    s=0
    for w in "$@"; do
        s=$((s + w))
    done
    echo "$s"
}

# produce TOPIC N MANIFEST
produce() {
    expect 0 "kwal-loadgen produces $2 keyed records to $1" \
        timeout 300 "$LG" --brokers "$BS" --topic "$1" --records "$2" --size 100 \
        --manifest "$3"
    has "$ERR" "$2 of $2 records" "every record delivered to Kafka"
}

# --- (c) bad arguments ----------------------------------------------------------
mkdir -p "$T/c"
conf "$T/c" gc nw
expect 2 "kwal receive --no-wal --classic" "$KW" receive -c "$T/c/k.conf" --no-wal --classic
[ "$(wc -l <"$ERR")" -eq 1 ] || fail "expected one line on stderr"
has "$ERR" "kwal: receive: --no-wal cannot be combined with --classic" "names the conflict"
expect 2 "kwal receive --skip-corrupt --no-wal" \
    "$KW" receive -c "$T/c/k.conf" --skip-corrupt --no-wal
[ "$(wc -l <"$ERR")" -eq 1 ] || fail "expected one line on stderr"
has "$ERR" "kwal: receive: --no-wal cannot be combined with --skip-corrupt" "names the conflict"
expect 2 "kwal recover --no-wal" "$KW" recover -c "$T/c/k.conf" --no-wal
has "$ERR" "unexpected argument '--no-wal'" "recover has no --no-wal"
[ ! -e "$T/c/wal" ] && [ ! -e "$T/c/out.db" ] || fail "a refused command created files"
ok "refused commands created nothing"
expect 0 "kwal receive --help" "$KW" receive --help
has "$OUT" "--no-wal" "the usage text has --no-wal"

# --- (a) all records, SIGTERM, verify -------------------------------------------
produce nw "$N" "$T/ma"
mkdir -p "$T/a"
conf "$T/a" ga nw
"$KW" receive -c "$T/a/k.conf" --no-wal >"$T/a/kwal.out" 2>"$T/a/kwal.log" &
KWPID=$!
wait_stored "$T/a/out.db" "$T/ma" "$N" 120 "$T/a/kwal.log"
ok "kwal-verify sees $N stored"
stop_kwal "$T/a/kwal.log"
expect 0 "kwal-verify after the --no-wal run" "$VF" --manifest "$T/ma" --sqlite "$T/a/out.db"
[ "$(tail -n 1 "$OUT")" = "expected=$N stored=$N missing=0 duplicates=0 duplicate_offsets=0 corrupt=0 foreign=0 out_of_range=0" ] ||
    fail "verify summary: $(tail -n 1 "$OUT")"
ok "--no-wal: $N stored once, 0 missing, 0 duplicates"
check_offsets "$T/a" ga nw "$N" 4
has "$T/a/kwal.log" "--no-wal: no WAL, no recovery; records received but not yet delivered are lost on a crash" \
    "the start warns that a crash loses data"
has "$T/a/kwal.log" "no WAL (--no-wal)" "the service runs without a WAL"
! grep -q ' recovery: ' "$T/a/kwal.log" || { showlog "$T/a/kwal.log"; fail "recovery ran"; }
ok "recovery did not run"
[ ! -e "$T/a/wal" ] || fail "--no-wal created the WAL directory $T/a/wal"
ok "no WAL directory, no tracker"
grep 'receiver: stopped:' "$T/a/kwal.log" | grep -q "$N stored, 0 duplicate deliveries" ||
    { showlog "$T/a/kwal.log"; fail "stop summary does not say $N stored, 0 duplicate deliveries"; }
ok "stop summary: $N stored, 0 duplicate deliveries"

# --- (a2) a graceful stop delivers every pending block ------------------------
produce nw2 "$N" "$T/ma2"
mkdir -p "$T/a2"
conf "$T/a2" ga2 nw2
"$KW" receive -c "$T/a2/k.conf" --no-wal -X batch.interval.ms=60000 \
    >"$T/a2/kwal.out" 2>"$T/a2/kwal.log" &
KWPID=$!
n=0
while :; do
    # shellcheck disable=SC2046
    c=$(sum_words $(zk_offsets ga2 nw2))
    [ "$c" -ge "$N" ] && break
    n=$((n + 1))
    [ "$n" -lt 120 ] || { showlog "$T/a2/kwal.log"; fail "ZooKeeper offsets of nw2 sum to $c after 60 s"; }
    kill -0 "$KWPID" 2>/dev/null || { showlog "$T/a2/kwal.log"; fail "kwal receive died"; }
    sleep 0.5
done
ok "ZooKeeper offsets cover all $N records (committed on receipt)"
s=$(stored "$T/a2/out.db" "$T/ma2")
[ "${s:-0}" -eq 0 ] || fail "the sink already holds $s records (batch.interval.ms=60000)"
ok "the sink holds none of them yet: all $N pending in memory"
stop_kwal "$T/a2/kwal.log"
expect 0 "kwal-verify after the graceful stop" "$VF" --manifest "$T/ma2" --sqlite "$T/a2/out.db"
[ "$(tail -n 1 "$OUT")" = "expected=$N stored=$N missing=0 duplicates=0 duplicate_offsets=0 corrupt=0 foreign=0 out_of_range=0" ] ||
    fail "verify summary: $(tail -n 1 "$OUT")"
ok "SIGTERM delivered every pending block: $N stored once"
check_offsets "$T/a2" ga2 nw2 "$N" 4
b=$(sqlite3 "$T/a2/out.db" "SELECT count(*) FROM batches")
[ "$b" -eq 1 ] || fail "expected the one batch of the stop, the sink has $b"
ok "one batch, at the stop"

# --- (b) a crash loses the committed, undelivered blocks ----------------------
produce nw3 "$NC" "$T/mb"
mkdir -p "$T/b"
conf "$T/b" gb nw3
KWAL_CRASH_AT=pipeline.committed:5 "$KW" receive -c "$T/b/k.conf" --no-wal \
    -X batch.interval.ms=60000 >"$T/b/kwal.out" 2>"$T/b/run1.log" &
KWPID=$!
n=0
while kill -0 "$KWPID" 2>/dev/null; do
    n=$((n + 1))
    [ "$n" -lt 600 ] || { showlog "$T/b/run1.log"; fail "kwal did not reach pipeline.committed:5 in 60 s"; }
    sleep 0.1
done
wait "$KWPID"
st=$?
KWPID=
[ "$st" -eq 99 ] || { showlog "$T/b/run1.log"; fail "expected exit 99 at the crash point, got $st"; }
has "$T/b/run1.log" "crash point pipeline.committed reached" "kwal died at pipeline.committed:5"
crash_offs=$(zk_offsets gb nw3)
# shellcheck disable=SC2086
committed=$(sum_words $crash_offs)
held=$(stored "$T/b/out.db" "$T/mb")
held=${held:-0}
lost=$((committed - held))
ok "after the crash: ZooKeeper offsets $crash_offs (sum $committed), the sink holds $held"
[ "$lost" -gt 0 ] || fail "nothing committed and undelivered at the crash (committed $committed, held $held)"
[ "$lost" -lt "$NC" ] || fail "the crash left nothing to consume ($lost of $NC lost)"

"$KW" receive -c "$T/b/k.conf" --no-wal >"$T/b/kwal.out" 2>"$T/b/run2.log" &
KWPID=$!
wait_stored "$T/b/out.db" "$T/mb" $((NC - lost)) 120 "$T/b/run2.log"
stop_kwal "$T/b/run2.log"
expect 1 "kwal-verify after the crash (records missing)" \
    "$VF" --manifest "$T/mb" --sqlite "$T/b/out.db"
[ "$(tail -n 1 "$OUT")" = "expected=$NC stored=$((NC - lost)) missing=$lost duplicates=0 duplicate_offsets=0 corrupt=0 foreign=0 out_of_range=0" ] ||
    fail "verify summary: $(tail -n 1 "$OUT") (expected exactly $lost missing)"
ok "--no-wal crash: exactly $lost missing (committed, never delivered), 0 duplicates stored"
# per partition: exactly the offsets from the crash-time ZooKeeper offset on
end_offs=$(zk_offsets gb nw3)
# shellcheck disable=SC2086
[ "$(sum_words $end_offs)" -eq "$NC" ] || fail "ZooKeeper offsets $end_offs do not sum to $NC"
p=0
for from in $crash_offs; do
    # shellcheck disable=SC2086
    until=$(echo $end_offs | cut -d' ' -f$((p + 1)))
    got=$(sqlite3 "$T/b/out.db" "SELECT count(*) || ' ' || COALESCE(MIN(offset), -1) || ' ' || \
        COALESCE(MAX(offset), -1) FROM records WHERE topic='nw3' AND partition=$p")
    if [ "$until" -gt "$from" ]; then
        want="$((until - from)) $from $((until - 1))"
    else
        want="0 -1 -1"
    fi
    [ "$got" = "$want" ] ||
        fail "nw3/$p: sink has count/min/max '$got', expected '$want' (offsets $from..$((until - 1)))"
    p=$((p + 1))
done
ok "per partition the sink holds exactly the crash-time ZooKeeper offset to the end"
grep 'receiver: stopped:' "$T/b/run2.log" | grep -q ' 0 duplicate deliveries' ||
    { showlog "$T/b/run2.log"; fail "the restart delivered records twice"; }
ok "the restart consumed from ZooKeeper's offsets: 0 duplicate deliveries"

echo "PASS: $checks checks"
