#!/bin/sh
# 0023-receive-kcat.sh -- `kwal receive` ingests what kcat produces, and its
# JSON lines are kcat's -J envelopes.
#
# Scenario 1 (kcat as the producer): kwal-loadgen --print-kcat writes 100,000
# keyed records of 100 B as KEY:PAYLOAD lines at 10,000/s into a fifo that
# `kcat -P -K:` reads and produces to topic kc (8 partitions) while
# `kwal receive` consumes kc (auto.offset.reset=earliest, sqlite sink,
# batch.interval.ms=500). kcat must exit 0 (it exits 1 when a delivery
# fails). Once kwal-verify reports everything stored (bounded wait), SIGTERM
# must stop kwal with exit 0; then kwal-verify --manifest --sqlite reports
# stored=100000 missing=0 duplicates=0 (the manifest and run id come from
# --print-kcat), the sink has 100,000 rows, and every partition's offset in
# ZooKeeper equals its end offset in the sink and in Kafka (kcat -Q),
# summing to 100,000.
#
# Scenario 2 (kcat's -J envelope): kcat produces 8 records to topic kh (4
# partitions) with keys (one with a quote, one empty), none (null key),
# payloads with quotes, backslashes, UTF-8, control bytes, colons, an empty
# payload and a null one (-Z), and headers (-H; repeated names, an empty
# value, a null value, none at all). Two instances of `kwal receive` in two
# groups ingest them, one with sink=file:DIR and one with sink=jsonl
# (stdout); both stop on SIGTERM with exit 0 and hold exactly 8 lines of
# valid JSON. Each line, parsed with jq, must equal what `kcat -C -J` prints
# for the same record in every field but broker (topic, partition, offset,
# tstype, ts, key, payload, headers -- present exactly when kcat has them),
# and have its fields in kcat's order. ZooKeeper offsets of both groups =
# Kafka's end offsets of kh.
#
# Run by ctest with KWAL_BIN_DIR=<build>/tools and KWAL_SRC_DIR. Every wait
# is bounded; the exit trap kills kwal, kcat, the producer and the cluster,
# stops ZooKeeper and removes the temporary directory.
set -u

BIN=${KWAL_BIN_DIR:?set KWAL_BIN_DIR to the build directory of tools/}
SRC=${KWAL_SRC_DIR:?set KWAL_SRC_DIR to the source tree}
NAME=0023
. "$SRC/tests/integration/lib.sh"
. "$SRC/tests/integration/lib_receive.sh"
for tool in kcat jq; do
    command -v "$tool" >/dev/null 2>&1 || fail "$tool is not installed (tools/install-deps.sh)"
done
KCPID=
trap 'killpid "$KCPID"; cleanup' EXIT
export LC_ALL=C

# --- ZooKeeper and the cluster ------------------------------------------------
start_local kc:8 kh:4

# kafka_end TOPIC P: the end offset (high watermark) of TOPIC/P in Kafka.
kafka_end() {
    timeout 30 kcat -Q -b "$BS" -t "$1:$2:-1" 2>/dev/null |
        sed -n "s/^$1 \[$2\] offset \([0-9]*\)\$/\1/p"
}

# zk_at_end GROUP TOPIC PARTITIONS TOTAL: each partition's ZooKeeper offset
# = Kafka's end offset, and they sum to TOTAL.
zk_at_end() {
    sum=0 p=0
    while [ "$p" -lt "$3" ]; do
        hw=$(kafka_end "$2" "$p")
        got=$(timeout 30 "$ZKL" get --connect "$ZK" "/consumers/$1/offsets/$2/$p" 2>/dev/null)
        [ -n "$got" ] || got=0
        [ -n "$hw" ] && [ "$got" = "$hw" ] ||
            fail "group $1: ZooKeeper offset of $2/$p is '$got', Kafka's end offset '$hw'"
        sum=$((sum + got))
        p=$((p + 1))
    done
    [ "$sum" -eq "$4" ] || fail "group $1: ZooKeeper offsets of $2 sum to $sum, expected $4"
    ok "group $1: ZooKeeper offsets = Kafka's end offsets of all $3 partitions of $2, sum $sum"
}

# conf FILE GROUP TOPIC DIR SINK: a receive configuration in FILE.
conf() {
    cat >"$1" <<EOF
# 0023 scenario config
group.id=$2
topics=$3
zookeeper.connect=$ZK
kafka.bootstrap.servers=$BS
auto.offset.reset=earliest
wal.dirs=$4/wal
sink=$5
batch.interval.ms=500
EOF
}

# --- scenario 1: kcat produces the kwal-loadgen workload ----------------------
RUN=0023000000000001
mkdir -p "$T/s1"
conf "$T/s1.conf" gkc kc "$T/s1" "sqlite:$T/s1/out.db"
start=$(date +%s)
"$KW" receive -c "$T/s1.conf" >"$T/s1/kwal.out" 2>"$T/s1/kwal.log" &
KWPID=$!
mkfifo "$T/kc.fifo" || fail "mkfifo"
kcat -P -b "$BS" -t kc -K: <"$T/kc.fifo" >"$T/kcat.out" 2>"$T/kcat.err" &
KCPID=$!
"$LG" --print-kcat --records 100000 --size 100 --rate 10000 --run-id "$RUN" \
    --topic kc --manifest "$T/m" >"$T/kc.fifo" 2>"$T/lg.err" &
LGPID=$!
wait_stored "$T/s1/out.db" "$RUN" 10000 60 "$T/s1/kwal.log"
kill -0 "$LGPID" 2>/dev/null && mid=" (kcat still producing)" || mid=
ok "kwal receive stores records produced by kcat: $(stored "$T/s1/out.db" "$RUN") so far$mid"

n=0
while kill -0 "$LGPID" 2>/dev/null || kill -0 "$KCPID" 2>/dev/null; do
    n=$((n + 1))
    [ "$n" -lt 1200 ] || fail "kwal-loadgen | kcat -P did not finish within 120 s"
    sleep 0.1
done
wait "$LGPID"
st=$?
LGPID=
[ "$st" -eq 0 ] || { cat "$T/lg.err"; fail "kwal-loadgen --print-kcat exited $st"; }
has "$T/lg.err" "printed 100000 records" "kwal-loadgen printed 100000 records for kcat"
wait "$KCPID"
st=$?
KCPID=
[ "$st" -eq 0 ] || { tail -n 20 "$T/kcat.err"; fail "kcat -P exited $st (a delivery failed?)"; }
ok "kcat -P produced them (exit 0)"
[ -f "$T/m" ] || fail "no manifest from kwal-loadgen --print-kcat"

wait_stored "$T/s1/out.db" "$T/m" 100000 120 "$T/s1/kwal.log"
ok "all 100000 stored at $(($(date +%s) - start)) s"
stop_kwal "$T/s1/kwal.log"
expect 0 "kwal-verify of the kcat-produced run" "$VF" --manifest "$T/m" --sqlite "$T/s1/out.db"
[ "$(tail -n 1 "$OUT")" = "expected=100000 stored=100000 missing=0 duplicates=0 duplicate_offsets=0 corrupt=0 foreign=0 out_of_range=0" ] ||
    fail "verify summary: $(tail -n 1 "$OUT")"
ok "100000 stored once, 0 missing, 0 duplicates"
rows=$(sqlite3 "$T/s1/out.db" "SELECT count(*) FROM records")
[ "$rows" -eq 100000 ] || fail "$rows rows in the sink"
ok "the sink holds exactly 100000 rows"
check_offsets "$T/s1" gkc kc 100000
zk_at_end gkc kc 8 100000

# --- scenario 2: keys, headers, and kcat's -J envelope ------------------------
# -K: splits at the first ':'; -H applies to every record of one kcat run.
# (No invalid UTF-8: kcat -J prints such bytes raw, which is not JSON; kwal
# escapes them, so the two cannot be compared field by field.)
{
    printf 'k1:hello\n'
    printf 'k"2:a "quoted" \\back\\slash, \303\251t\303\251 \346\227\245\346\234\254\n'
    printf ':empty key\n'
    printf 'k4:\n'
    printf 'tab:a\tb\001c\037d\n'
    printf 'sp ace:payload:with:colons\n'
} >"$T/kh.1"
timeout 60 kcat -P -b "$BS" -t kh -K: -l -H app=kwal -H trace=a=b -H empty= -H novalue \
    -H app=dup -H "utf=$(printf '\303\251')" "$T/kh.1" 2>"$T/kcat.err" ||
    { cat "$T/kcat.err"; fail "kcat -P (keys and headers)"; }
printf 'no key, no headers\n' | timeout 60 kcat -P -b "$BS" -t kh -p 2 2>"$T/kcat.err" ||
    { cat "$T/kcat.err"; fail "kcat -P (no key)"; }
printf 'k5:\n' | timeout 60 kcat -P -b "$BS" -t kh -p 3 -K: -Z -H only=one 2>"$T/kcat.err" ||
    { cat "$T/kcat.err"; fail "kcat -P -Z (null payload)"; }
ok "kcat produced 8 records to kh with keys and headers"

timeout 60 kcat -C -b "$BS" -t kh -e -q -o beginning -J >"$T/kcat.json" 2>"$T/kcat.err" ||
    { cat "$T/kcat.err"; fail "kcat -C -J"; }
[ "$(wc -l <"$T/kcat.json")" -eq 8 ] ||
    { cat "$T/kcat.json"; fail "kcat -C -J read $(wc -l <"$T/kcat.json") records, not 8"; }
ok "kcat -C -J reads the 8 records back"

mkdir -p "$T/f" "$T/j" "$T/f/out"
conf "$T/f.conf" gkf kh "$T/f" "file:$T/f/out"
conf "$T/j.conf" gkj kh "$T/j" jsonl
"$KW" receive -c "$T/f.conf" >"$T/f/kwal.out" 2>"$T/f/kwal.log" &
KWPID=$!
"$KW" receive -c "$T/j.conf" >"$T/j/kwal.out" 2>"$T/j/kwal.log" &
KWPID2=$!

# lines_in SINK: JSON lines written so far by the file sink or to stdout.
lines_in() {
    case "$1" in
    file) cat "$T"/f/out/batch-*.jsonl 2>/dev/null | wc -l ;;
    jsonl) wc -l <"$T/j/kwal.out" ;;
    esac
}
n=0
until [ "$(lines_in file)" -ge 8 ] && [ "$(lines_in jsonl)" -ge 8 ]; do
    n=$((n + 1))
    [ "$n" -lt 120 ] || { showlog "$T/f/kwal.log"; showlog "$T/j/kwal.log";
        fail "after 60 s: $(lines_in file) lines in file:, $(lines_in jsonl) on stdout, expected 8"; }
    kill -0 "$KWPID" 2>/dev/null || { showlog "$T/f/kwal.log"; fail "kwal receive (file sink) died"; }
    kill -0 "$KWPID2" 2>/dev/null || { showlog "$T/j/kwal.log"; fail "kwal receive (jsonl sink) died"; }
    sleep 0.5
done
ok "both sinks have the 8 records"
stop_kwal "$T/f/kwal.log"
KWPID=$KWPID2 KWPID2=
stop_kwal "$T/j/kwal.log"

cat "$T"/f/out/batch-*.jsonl >"$T/file.json"
cp "$T/j/kwal.out" "$T/jsonl.json"
ls "$T/f/out" | grep -v '^batch-[0-9]*\.jsonl$' >"$T/stray" &&
    { cat "$T/stray"; fail "stray files in the file sink's directory"; }
ok "the file sink's directory holds only batch-*.jsonl files"

# norm FILE: one line per record, every field but broker, keys sorted.
norm() { jq -c -S 'del(.broker)' "$1" | sort; }
# order FILE: per record, its partition, offset and field names in order.
order() { jq -c '[.partition, .offset, keys_unsorted]' "$1" | sort; }
norm "$T/kcat.json" >"$T/kcat.norm" || fail "jq cannot read kcat's output"
order "$T/kcat.json" >"$T/kcat.order"
for s in file jsonl; do
    [ "$(wc -l <"$T/$s.json")" -eq 8 ] ||
        { cat "$T/$s.json"; fail "sink $s: $(wc -l <"$T/$s.json") lines after the stop, expected 8"; }
    norm "$T/$s.json" >"$T/$s.norm" || { cat "$T/$s.json"; fail "sink $s: not JSON lines (jq)"; }
    ok "sink $s: exactly 8 lines, each valid JSON"
    diff "$T/kcat.norm" "$T/$s.norm" >"$T/diff" ||
        { cat "$T/diff"; fail "sink $s: records differ from kcat -C -J (< kcat, > kwal)"; }
    ok "sink $s: topic, partition, offset, tstype, ts, key, payload, headers = kcat -J's, for all 8"
    order "$T/$s.json" >"$T/$s.order"
    diff "$T/kcat.order" "$T/$s.order" >"$T/diff" ||
        { cat "$T/diff"; fail "sink $s: fields not in kcat's order (< kcat, > kwal)"; }
    ok "sink $s: fields in kcat -J's order"
done
# what the comparison covered
jq -e -s 'map(select(.key == null)) | length == 1' "$T/kcat.json" >/dev/null &&
jq -e -s 'map(select(.payload == null)) | length == 1' "$T/kcat.json" >/dev/null &&
jq -e -s 'map(select(.headers == null)) | length == 1' "$T/kcat.json" >/dev/null &&
jq -e -s 'map(select(.headers != null and any(.headers[]; . == null))) | length == 6' \
    "$T/kcat.json" >/dev/null || { cat "$T/kcat.json"; fail "kcat -J output is not the intended mix"; }
ok "compared: a null key, a null payload, a record without headers, null header values"
echo "--- kwal (jsonl) vs kcat -J, first record of partition 3:"
grep '"partition":3,"offset":0,' "$T/jsonl.json"
grep '"partition":3,"offset":0,' "$T/kcat.json"

zk_at_end gkf kh 4 8
zk_at_end gkj kh 4 8

echo "PASS: $checks checks ($(($(date +%s) - start)) s)"
