#!/bin/sh
# 0012-loadgen-verify.sh -- kwal-loadgen produces a workload that kcat reads
# back and kwal-verify checks, in each output form, and kwal-verify finds
# exactly what was done to a damaged copy.
#
# Starts kwal-kafka-mock (3 brokers, topics lg and lg2 with 8 partitions)
# and waits (bounded) for its --bootstrap-file. kwal-loadgen produces 20,000
# records of 100 bytes to lg with a manifest; kcat -C -J -e reads them into
# a JSON lines file; kwal-verify --jsonl passes and shows all 8 partitions
# used. Then, on copies of that file:
#   * seqs 1000..1009 and 15000 dropped, 42 and 77 doubled, 5000 tripled, a
#     padding byte of 12345 changed: exit 1 with missing ranges
#     "1000..1009, 12345, 15000", the three duplicated seqs, one corrupt
#     record (checksum mismatch, seq 12345) and the exact summary line;
#   * a line with \u escapes in key and payload still passes; a torn line is
#     one corrupt record;
#   * the records split over files in a directory (plus a .tmp file of
#     garbage) pass with --files; --expect N without a manifest passes.
# The same records loaded by the sqlite3 CLI into the sink's table pass with
# --sqlite; with 10 rows deleted and one payload altered, exit 1 naming them.
# kwal-loadgen --print-kcat piped into kcat -P -K: produces 5,000 records to
# lg2, which verify again. Finally: a producer that cannot reach a broker
# exits 1 counting its undelivered records, and bad arguments exit 2.
#
# Run by ctest with KWAL_BIN_DIR=<build>/tools and KWAL_SRC_DIR. Every wait
# is bounded; kills what it started and removes its directory.
set -u

BIN=${KWAL_BIN_DIR:?set KWAL_BIN_DIR to the build directory of tools/}
SRC=${KWAL_SRC_DIR:?set KWAL_SRC_DIR to the source tree}
KL="$BIN/kwal-kafka-mock"
LG="$BIN/kwal-loadgen"
VF="$BIN/kwal-verify"
NAME=0012
. "$SRC/tests/integration/lib.sh"

for tool in kcat sqlite3 timeout; do
    command -v "$tool" >/dev/null 2>&1 || fail "$tool is not installed"
done
for b in "$KL" "$LG" "$VF"; do
    [ -x "$b" ] || fail "$b is not built"
done

PID=
cleanup() {
    if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
        kill -KILL "$PID" 2>/dev/null
        wait "$PID" 2>/dev/null
    fi
    rm -rf "$T"
}
trap cleanup EXIT

ok() {
    checks=$((checks + 1))
    echo "ok: $*"
}

# summary: the last line of the last command's stdout.
summary() { tail -n 1 "$OUT"; }

# same_summary WANT DESC: require the summary line to be exactly WANT.
same_summary() {
    [ "$(summary)" = "$1" ] || fail "$2: summary '$(summary)', expected '$1'"
    ok "$2: $1"
}

# consume TOPIC FILE: all of TOPIC as kcat -J lines into FILE (bounded).
consume() {
    timeout 60 kcat -C -b "$BS" -t "$1" -e -J -q -o beginning >"$2" 2>"$T/kcat.err"
    st=$?
    [ "$st" -eq 0 ] || { cat "$T/kcat.err"; fail "kcat -C -t $1 exited $st"; }
}

# eight_partitions: the last kwal-verify run saw 8 partitions, none empty.
eight_partitions() {
    has "$OUT" "partitions: 8 -- $1/0=" "records in all 8 partitions of $1"
    grep '^partitions:' "$OUT" | grep -q "/[0-7]=0\b" && fail "an empty partition"
    grep '^partitions:' "$OUT"
}

# --- start the cluster ------------------------------------------------------
"$KL" --brokers 3 --topic lg:8 --topic lg2:8 --bootstrap-file "$T/bs" --no-stdin \
    >"$T/kl.out" 2>"$T/kl.err" &
PID=$!
n=0
until [ -s "$T/bs" ]; do
    n=$((n + 1))
    [ "$n" -lt 200 ] || { cat "$T/kl.err"; fail "no bootstrap file after 20 s"; }
    kill -0 "$PID" 2>/dev/null || { cat "$T/kl.err"; fail "kwal-kafka-mock died"; }
    sleep 0.1
done
BS=$(cat "$T/bs")
ok "cluster up: $BS"

# --- produce 20,000 records, read them back, verify --------------------------
expect 0 "kwal-loadgen produces 20000 records" \
    timeout 120 "$LG" --brokers "$BS" --topic lg --records 20000 --size 100 \
    --manifest "$T/m"
has "$ERR" "20000 of 20000 records" "kwal-loadgen reports every record delivered"
has "$T/m" "records=20000" "manifest has records"
has "$T/m" "delivered=20000" "manifest has delivered"
RUN=$(sed -n 's/^run_id=//p' "$T/m")
[ ${#RUN} -eq 16 ] || fail "manifest run_id '$RUN'"

consume lg "$T/all.jsonl"
lines=$(wc -l <"$T/all.jsonl" | tr -d ' ')
[ "$lines" -eq 20000 ] || fail "kcat read $lines records, expected 20000"
ok "kcat -J -e read 20000 records and stopped at the end"

expect 0 "kwal-verify --jsonl on the records as read" \
    "$VF" --manifest "$T/m" --jsonl "$T/all.jsonl"
same_summary "expected=20000 stored=20000 missing=0 duplicates=0 duplicate_offsets=0 corrupt=0 foreign=0 out_of_range=0" "clean jsonl"
eight_partitions lg

expect 0 "kwal-verify --expect 20000 (no manifest: the run with most records)" \
    "$VF" --expect 20000 --jsonl "$T/all.jsonl"
has "$OUT" "run: $RUN (the run with the most records)" "the run chosen is the manifest's"

expect 1 "kwal-verify with another run id" \
    "$VF" --expect 20000 --run-id 0123456789abcdef --jsonl "$T/all.jsonl"
same_summary "expected=20000 stored=0 missing=20000 duplicates=0 duplicate_offsets=0 corrupt=0 foreign=20000 out_of_range=0" "another run"
has "$OUT" "missing ranges: 0..19999" "everything of the other run is missing"

# --- damage a copy: drop, duplicate, alter --------------------------------
awk '
/"key":"100[0-9]"/ || /"key":"15000"/ { next }
/"key":"42"/ || /"key":"77"/          { print; print; next }
/"key":"5000"/                         { print; print; print; next }
/"key":"12345"/ {
    p = index($0, "\"payload\":\"") + 11 + 60   # a padding byte
    c = substr($0, p, 1)
    $0 = substr($0, 1, p - 1) (c == "x" ? "y" : "x") substr($0, p + 1)
}
{ print }' "$T/all.jsonl" >"$T/bad.jsonl" || fail "awk"
expect 1 "kwal-verify on the damaged copy" "$VF" --manifest "$T/m" --jsonl "$T/bad.jsonl"
cat "$OUT"
same_summary "expected=20000 stored=19992 missing=12 duplicates=4 duplicate_offsets=4 corrupt=1 foreign=0 out_of_range=0" "damaged jsonl"
has "$OUT" "missing: 12 in 3 ranges" "missing count and ranges"
has "$OUT" "missing ranges: 1000..1009, 12345, 15000" "missing ranges listed"
has "$OUT" "duplicate seqs: 42 (x2), 77 (x2), 5000 (x3)" "duplicated sequence numbers"
has "$OUT" "duplicate offsets: 4 extra copies of 3 offsets" "duplicated offsets"
has "$OUT" "checksum mismatch (claims run $RUN seq 12345)" "the altered record"
[ "$(grep -c '^corrupt:' "$OUT")" -eq 1 ] || fail "expected one corrupt: line"
ok "exactly one corrupt record listed"

# --- JSON escapes decode; a torn line is corrupt -----------------------------
sed -e '/"key":"7"/s/"key":"7"/"key":"\\u0037"/' \
    -e '/"key":"\\u0037"/s/"payload":"kwal1/"payload":"\\u006bw\\u0061l1/' \
    "$T/all.jsonl" >"$T/esc.jsonl"
grep -q '"key":"\\u0037","payload":"\\u006bw\\u0061l1' "$T/esc.jsonl" ||
    fail "sed did not write the escapes"
expect 0 "kwal-verify decodes \\u escapes in key and payload" \
    "$VF" --manifest "$T/m" --jsonl "$T/esc.jsonl"
{ cat "$T/all.jsonl"; head -n 1 "$T/all.jsonl" | cut -c 1-60; } >"$T/torn.jsonl"
expect 1 "kwal-verify on a file with a torn last line" \
    "$VF" --manifest "$T/m" --jsonl "$T/torn.jsonl"
same_summary "expected=20000 stored=20000 missing=0 duplicates=0 duplicate_offsets=0 corrupt=1 foreign=0 out_of_range=0" "torn line"
has "$OUT" "torn.jsonl:20001: not a kcat -J envelope" "the torn line is named"

# --- the file sink's layout --------------------------------------------------
mkdir "$T/files" || fail "mkdir"
split -l 7000 "$T/all.jsonl" "$T/files/batch-" || fail "split"
echo "garbage" >"$T/files/batch-zz.tmp"
echo "garbage" >"$T/files/.hidden"
expect 0 "kwal-verify --files on the records split in 3 files" \
    "$VF" --manifest "$T/m" --files "$T/files"
has "$OUT" "3 files, 20000 lines" "3 files read, .tmp and hidden ones skipped"

# --- the sqlite sink's table -------------------------------------------------
mksqlite() {
    rm -f "$2"
    sqlite3 "$2" <<EOF || fail "sqlite3 could not load $1"
CREATE TABLE records(topic TEXT, partition INTEGER, offset INTEGER, ts INTEGER,
                     key BLOB, payload BLOB, batch INTEGER,
                     PRIMARY KEY(topic, partition, offset));
CREATE TEMP TABLE raw(line TEXT);
.mode ascii
.separator "\037" "\n"
.import $1 raw
INSERT INTO records
  SELECT json_extract(line, '\$.topic'), json_extract(line, '\$.partition'),
         json_extract(line, '\$.offset'), json_extract(line, '\$.ts'),
         CAST(json_extract(line, '\$.key') AS BLOB),
         CAST(json_extract(line, '\$.payload') AS BLOB), 1
  FROM raw;
EOF
}
mksqlite "$T/all.jsonl" "$T/sink.db"
[ "$(sqlite3 "$T/sink.db" 'SELECT count(*) FROM records')" -eq 20000 ] ||
    fail "sqlite3 loaded $(sqlite3 "$T/sink.db" 'SELECT count(*) FROM records') rows"
expect 0 "kwal-verify --sqlite" "$VF" --manifest "$T/m" --sqlite "$T/sink.db"
same_summary "expected=20000 stored=20000 missing=0 duplicates=0 duplicate_offsets=0 corrupt=0 foreign=0 out_of_range=0" "sqlite"
eight_partitions lg

sqlite3 "$T/sink.db" "
DELETE FROM records WHERE CAST(key AS TEXT) IN ('300','301','302','303','304','305','306','307','308','309');
UPDATE records SET payload = CAST(replace(CAST(payload AS TEXT), ' 000000000400 ', ' 000000000401 ') AS BLOB)
 WHERE CAST(key AS TEXT) = '400';" || fail "sqlite3 update"
expect 1 "kwal-verify --sqlite after deleting and altering rows" \
    "$VF" --manifest "$T/m" --sqlite "$T/sink.db"
cat "$OUT"
same_summary "expected=20000 stored=19989 missing=11 duplicates=0 duplicate_offsets=0 corrupt=1 foreign=0 out_of_range=0" "damaged sqlite"
has "$OUT" "missing ranges: 300..309, 400" "sqlite: missing ranges"
has "$OUT" "checksum mismatch (claims run $RUN seq 401)" "sqlite: the altered row"

# --- kcat as the producer -----------------------------------------------------
expect 0 "kwal-loadgen --print-kcat" \
    "$LG" --print-kcat --records 5000 --size 120 --topic lg2 --manifest "$T/m2"
mv "$OUT" "$T/kcat-lines"
[ "$(wc -l <"$T/kcat-lines" | tr -d ' ')" -eq 5000 ] || fail "--print-kcat: not 5000 lines"
timeout 60 kcat -P -b "$BS" -t lg2 -K: -l "$T/kcat-lines" 2>"$T/kcat.err" ||
    { cat "$T/kcat.err"; fail "kcat -P failed"; }
ok "kcat -P -K: produced the --print-kcat lines"
consume lg2 "$T/lg2.jsonl"
expect 0 "kwal-verify on what kcat produced" "$VF" --manifest "$T/m2" --jsonl "$T/lg2.jsonl"
same_summary "expected=5000 stored=5000 missing=0 duplicates=0 duplicate_offsets=0 corrupt=0 foreign=0 out_of_range=0" "kcat-produced"
eight_partitions lg2

# --- failures ---------------------------------------------------------------
expect 1 "kwal-loadgen with no reachable broker" \
    timeout 60 "$LG" --brokers 127.0.0.1:1 --topic lg --records 10 --timeout 2 \
    --manifest "$T/m3"
has "$ERR" "10 of 10 records failed to deliver" "undelivered records counted"
has "$T/m3" "failed=10" "the manifest counts them too"
expect 2 "kwal-verify without an output" "$VF" --expect 10
has "$ERR" "kwal-verify: give an output" "names what is missing"
expect 2 "kwal-verify on a missing file" "$VF" --expect 10 --jsonl "$T/nonexistent"
has "$ERR" "kwal-verify: $T/nonexistent: No such file" "names the file"
expect 2 "kwal-verify on a database without the table" \
    "$VF" --expect 10 --sqlite "$T/m"
expect 2 "kwal-loadgen --size below the minimum" "$LG" --print-kcat --records 1 --size 10
has "$ERR" "kwal-loadgen: --size" "names the option"
expect 2 "kwal-loadgen without --records" "$LG" --print-kcat

echo "PASS: $checks checks"
