#!/bin/sh
# 0035-chaos.sh -- the chaos runner in CI: tools/chaos.sh runs 20 trials of a
# fixed seed against the binaries of this build. Each trial produces 3,000
# keyed records, kills `kwal receive` 1-3 times (SIGKILL at a random moment or
# a crash point), maybe injects one fault (a WAL replica's writes, short
# writes or fsyncs failing, a slow replica, a slow or downed Kafka broker, a
# ZooKeeper restart), lets a last run store everything and stop on SIGTERM
# (exit 0), then verifies: 0 missing, 0 duplicates stored, every partition's
# ZooKeeper offset at its end offset, kwal wal verify clean (see the header
# of tools/chaos.sh). The test fails when any trial fails; the runner's
# output names the trial and the command that re-runs it
# (tools/chaos.sh --seed 35 --trial K --keep), and its logs are kept.
#
# Two trials run side by side (--jobs 2, each with its own ZooKeeper and
# Kafka cluster): a trial mostly waits for consumer-group sessions to expire,
# so this takes about 2.5 minutes here instead of 5.
#
# Run by ctest with KWAL_BIN_DIR=<build>/tools and KWAL_SRC_DIR.
set -u

BIN=${KWAL_BIN_DIR:?set KWAL_BIN_DIR to the build directory of tools/}
SRC=${KWAL_SRC_DIR:?set KWAL_SRC_DIR to the source tree}
NAME=0035
. "$SRC/tests/integration/lib.sh"

build=$(cd "$BIN/.." && pwd) || fail "no build directory above $BIN"
[ -x "$SRC/tools/chaos.sh" ] || fail "tools/chaos.sh is missing or not executable"

sh "$SRC/tools/chaos.sh" --trials 20 --seed 35 --jobs 2 --build "$build" --quiet \
    >"$OUT" 2>"$ERR"
st=$?
cat "$OUT"
if [ "$st" -ne 0 ]; then
    # the last lines of each failed trial's last run
    sed -n 's/.*(logs: \(.*\))$/\1/p' "$OUT" | while read -r dir; do
        last=""
        for f in "$dir"/run*.log; do     # run1.log .. run4.log
            [ -f "$f" ] && last=$f
        done
        [ -n "$last" ] || continue
        echo "--- $last (tail, without the ZooKeeper C client's lines):"
        grep -v 'ZOO_' "$last" | tail -n 15
    done
    fail "tools/chaos.sh exited $st"
fi
checks=$((checks + 1))
grep -q '^chaos: .* trials=20 passed=20 failed=0 .* missing=0 .* dup_stored=0 .* status=ok' "$OUT" ||
    fail "no passing total line"
checks=$((checks + 1))

echo "PASS: $checks checks"
