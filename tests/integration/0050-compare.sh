#!/bin/sh
# 0050-compare.sh -- `kwal compare`, the semantics comparison, as a user
# runs it.
#
#   a. Bad arguments: an unknown mode, an unknown schedule event, a crash
#      point kwal does not have: exit 2 with a one-line reason.
#   b. `kwal compare` alone (it starts its own ZooKeeper and Kafka cluster)
#      on a short workload with the default schedule (a crash in each mode's
#      "output durable, offset not stored" window, then a SIGKILL), every
#      mode. The outcome each mode exists to show: --no-wal loses records,
#      --classic loses none, receive and direct lose none and store nothing
#      twice; every mode saw the whole workload produced. The report is there:
#      compare.md with a row per mode, compare.csv, compare.png (a PNG).
#   c. With -c FILE it uses the cluster and ZooKeeper named there (started
#      here), one mode.
#
# Run by ctest with KWAL_BIN_DIR and KWAL_SRC_DIR.
set -u

BIN=${KWAL_BIN_DIR:?set KWAL_BIN_DIR to the build directory of tools/}
SRC=${KWAL_SRC_DIR:?set KWAL_SRC_DIR to the source tree}
NAME=0050
. "$SRC/tests/integration/lib.sh"
. "$SRC/tests/integration/lib_receive.sh"

# --- a. bad arguments ---------------------------------------------------------------
expect 2 "kwal compare with an unknown mode" "$KW" compare --modes receive,nope
has "$ERR" "unknown mode 'nope'" "names the mode"
expect 2 "kwal compare with an unknown event" "$KW" compare --schedule boom@1
has "$ERR" "unknown event 'boom@1'" "names the event"
expect 2 "kwal compare with an unknown crash point" "$KW" compare --schedule crash@no.such:1
has "$ERR" "no crash point 'no.such'" "names the point"

# col CSV MODE N: field N of MODE's row.
col() { awk -F, -v m="$2" -v n="$3" '$1 == m { print $n }' "$1"; }

# --- b. every mode, its own cluster -----------------------------------------------------
expect 0 "kwal compare (every mode, default schedule)" \
    timeout 600 "$KW" compare -n 8000 -r 4000 -o "$T/b" -q
csv="$T/b/compare.csv"
[ -f "$csv" ] || fail "no compare.csv"
for m in no-wal classic receive direct direct-alo; do
    [ "$(col "$csv" "$m" 2)" = 8000 ] || fail "$m: produced '$(col "$csv" "$m" 2)', expected 8000"
done
[ "$(col "$csv" no-wal 4)" -gt 0 ] || fail "--no-wal lost nothing under the default schedule: $(grep no-wal "$csv")"
[ "$(col "$csv" classic 4)" -eq 0 ] || fail "--classic lost records: $(grep classic "$csv")"
for m in receive direct; do
    [ "$(col "$csv" "$m" 4)" -eq 0 ] || fail "$m lost records: $(grep "^$m," "$csv")"
    [ "$(col "$csv" "$m" 6)" -eq 0 ] || fail "$m stored duplicates: $(grep "^$m," "$csv")"
done
ok "outcomes: no-wal missing $(col "$csv" no-wal 4); classic missing 0, duplicates stored $(col "$csv" classic 6); receive and direct 0 missing, 0 stored twice; direct-alo duplicates stored $(col "$csv" direct-alo 6)"
[ "$(grep -c '^| ' "$T/b/compare.md")" -eq 7 ] || fail "compare.md: not a header, a rule and 5 rows: $(cat "$T/b/compare.md")"
[ "$(head -c 4 "$T/b/compare.png" | od -An -c | tr -d ' ')" = '211PNG' ] ||
    fail "compare.png is not a PNG"
ok "report: compare.md (5 rows), compare.csv, compare.png"
grep -q "report: $T/b/compare.md" "$OUT" || fail "the report's path is not printed"

# --- c. -c FILE: a cluster and ZooKeeper of the user's --------------------------------
start_local
cat >"$T/user.conf" <<EOF
kafka.bootstrap.servers=$BS
zookeeper.connect=$ZK
EOF
expect 0 "kwal compare -c FILE --modes direct" \
    timeout 300 "$KW" compare -c "$T/user.conf" --modes direct --schedule kill@1 -n 3000 -r 3000 \
    -o "$T/c" -q
has "$OUT" "Cluster: $BS, ZooKeeper $ZK" "the report names the user's cluster"
[ "$(col "$T/c/compare.csv" direct 3)" = 3000 ] && [ "$(col "$T/c/compare.csv" direct 4)" = 0 ] ||
    fail "direct on the user's cluster: $(cat "$T/c/compare.csv")"
ok "direct on the user's cluster: 3000 stored, 0 missing"

echo "0050-compare: $checks checks passed"
