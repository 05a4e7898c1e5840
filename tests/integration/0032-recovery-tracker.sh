#!/bin/sh
# 0032-recovery-tracker.sh -- start-up recovery when the block tracker is
# lost or unreadable, and `kwal recover` on its own (recovery/recovery.h,
# step 2; DESIGN.md invariants 1-3).
#
# Every trial: 6000 keyed records of 100 B over 4 partitions are produced up
# front (kwal-loadgen --manifest), kwal receive (2 receivers, 2-replica WAL,
# sqlite sink) takes part of them and dies; something is done to the
# tracker; then kwal runs again until every record is stored and must end
# with kwal-verify: stored = produced, 0 missing, 0 duplicates, and every
# partition's ZooKeeper offset = its end offset.
#
#   a. tracker deleted: kwal receive, slowed by receiver.max.rate, is killed
#      with SIGKILL once a third is stored (some blocks delivered, some only
#      durable); tracker.db and its -wal/-shm files are deleted. The next
#      kwal receive must say it rebuilds the tracker from the WAL (blocks the
#      sink already had are delivered again and counted, never stored twice).
#   b. tracker replaced by garbage: kwal dies at pipeline.committed:20 with a
#      60 s batch interval (20 blocks durable and in ZooKeeper, none
#      delivered); tracker.db is overwritten with random bytes (its -wal and
#      -shm files are left as the crash left them). Recovery must move it
#      aside to tracker.db.unreadable-<ms> as it was (bytes unchanged, its
#      -wal and -shm files moved with it as ...-<ms>-wal/-shm), rebuild and
#      replay. The moved-aside checks report every failure and the test
#      fails at the end, after the other trials.
#   c. `kwal recover` alone: kwal dies at pipeline.wal-acked:20 with a 60 s
#      batch interval (20 blocks in the WAL, the 20th neither tracked nor in
#      ZooKeeper; nothing in the sink). `kwal recover -c` must replay exactly
#      what the WAL holds into the sink and move ZooKeeper forward to it,
#      consuming nothing: stored = the records of the 20 WAL blocks, each
#      partition's stored offsets are exactly 0..ZooKeeper offset - 1, no
#      instance left registered. A second `kwal recover` replays nothing and
#      changes nothing. Then kwal receive finishes the workload.
#
# Run by ctest with KWAL_BIN_DIR=<build>/tools and KWAL_SRC_DIR. Every wait
# is bounded; the exit trap kills what is left, stops ZooKeeper and the
# cluster, and removes the temporary directory (KWAL_KEEP_TMP=1 keeps it).
set -u

BIN=${KWAL_BIN_DIR:?set KWAL_BIN_DIR to the build directory of tools/}
SRC=${KWAL_SRC_DIR:?set KWAL_SRC_DIR to the source tree}
NAME=0032
. "$SRC/tests/integration/lib.sh"
. "$SRC/tests/integration/lib_crash.sh"   # crash_conf, crash_run, crash_finish

CRASH_NREC=6000

# bug MSG: a check that failed; the test goes on to the end and then fails
# (so one bug does not hide the next).
bugs=0
bug() {
    echo "FAIL: $*"
    bugs=$((bugs + 1))
}
start_local ta:4 tb:4 tc:4

# produce DIR TOPIC: the workload, its manifest in DIR/m.
produce() {
    mkdir -p "$1"
    timeout 120 "$LG" --brokers "$BS" --topic "$2" --records "$CRASH_NREC" \
        --size 100 --manifest "$1/m" >"$1/lg.out" 2>"$1/lg.err" ||
        { cat "$1/lg.err"; fail "$2: kwal-loadgen failed"; }
}

# stored_now DIR: records of the workload in DIR/out.db (0 without a table).
stored_now() {
    s=$(stored "$1/out.db" "$1/m")
    echo "${s:-0}"
}

# zk_sum GROUP TOPIC: sum of the ZooKeeper offsets of partitions 0..3.
zk_sum() {
    zs=0
    for zp in 0 1 2 3; do
        zv=$(timeout 30 "$ZKL" get --connect "$ZK" "/consumers/$1/offsets/$2/$zp" 2>/dev/null)
        zs=$((zs + ${zv:-0}))
    done
    echo "$zs"
}

# --- a. tracker deleted after SIGKILL mid-run ---------------------------------
t0=$(date +%s)
d="$T/a"
produce "$d" ta
crash_conf "$d" g-ta ta
"$KW" receive -c "$d/k.conf" -X receiver.max.rate=400 >"$d/kwal.out" 2>"$d/run1.log" &
KWPID=$!
wait_stored "$d/out.db" "$d/m" 2000 60 "$d/run1.log"
kill -KILL "$KWPID"
wait "$KWPID" 2>/dev/null
KWPID=
s1=$(stored_now "$d")
[ "$s1" -lt "$CRASH_NREC" ] || fail "a: every record was stored before SIGKILL; slow kwal down"
ok "a: kwal receive killed with SIGKILL after $s1 of $CRASH_NREC records stored"
[ -f "$d/w1/tracker.db" ] || fail "a: no tracker database at $d/w1/tracker.db"
rm -f "$d/w1/tracker.db" "$d/w1/tracker.db-wal" "$d/w1/tracker.db-shm"
ok "a: tracker.db (and -wal, -shm) deleted"
crash_finish "$d" "$d/last.log"
grep -q "tracker $d/w1/tracker.db is missing: rebuilding it from the WAL" "$d/last.log" ||
    { showlog "$d/last.log"; fail "a: recovery did not say it rebuilds the missing tracker"; }
rec=$(grep 'recovery: done' "$d/last.log" | tail -n 1)
[ -n "$rec" ] || { showlog "$d/last.log"; fail "a: no recovery summary line"; }
ok "a: tracker rebuilt from the WAL; $CRASH_NREC stored once, 0 missing, ZooKeeper = end offsets ($(($(date +%s) - t0)) s)"
echo "   ${rec#*recovery: }"

# --- b. tracker replaced by garbage -------------------------------------------
t0=$(date +%s)
d="$T/b"
produce "$d" tb
crash_conf "$d" g-tb tb
crash_run "$d" "$d/run1.log" pipeline.committed:20 -X batch.interval.ms=60000
s1=$(stored_now "$d")
[ "$s1" -eq 0 ] || fail "b: $s1 records stored before the crash (batch interval 60 s: expected none)"
ok "b: kwal died at pipeline.committed:20, nothing delivered yet"
[ -f "$d/w1/tracker.db" ] || fail "b: no tracker database at $d/w1/tracker.db"
dd if=/dev/urandom of="$d/garbage" bs=1024 count=24 2>/dev/null || fail "b: dd"
cp "$d/garbage" "$d/w1/tracker.db" || fail "b: cp"
for sfx in -wal -shm; do
    [ ! -f "$d/w1/tracker.db$sfx" ] || cp "$d/w1/tracker.db$sfx" "$d/tracker$sfx.before"
done
ok "b: tracker.db replaced by 24 KiB of random bytes ($(ls "$d/w1" | grep -c '^tracker.db') tracker files)"
crash_finish "$d" "$d/last.log"
grep -q "the tracker database cannot be opened (.*); moving it to $d/w1/tracker.db.unreadable-[0-9]* and rebuilding it from the WAL" "$d/last.log" ||
    { showlog "$d/last.log"; fail "b: recovery did not say it moves the unreadable tracker aside"; }
grep -q "tracker $d/w1/tracker.db was unreadable: rebuilding it from the WAL" "$d/last.log" ||
    { showlog "$d/last.log"; fail "b: recovery did not say it rebuilds the unreadable tracker"; }
moved=$(ls "$d/w1" | grep -E '^tracker\.db\.unreadable-[0-9]+$')
[ "$(echo "$moved" | wc -l)" -eq 1 ] && [ -n "$moved" ] ||
    fail "b: expected one tracker.db.unreadable-<ms> in $d/w1, found: $(ls "$d/w1" | tr '\n' ' ')"
# moved aside means kept as it was, with the -wal/-shm files the crash left
cmp -s "$d/garbage" "$d/w1/$moved" ||
    bug "b: $moved does not hold the bytes that were in tracker.db ($(wc -c <"$d/garbage") random bytes; now $(wc -c <"$d/w1/$moved") bytes, first difference: $(cmp "$d/garbage" "$d/w1/$moved" 2>&1 | sed 's/.*differ: //'))"
for sfx in -wal -shm; do
    if [ -f "$d/tracker$sfx.before" ] && [ ! -f "$d/w1/$moved$sfx" ]; then
        bug "b: tracker.db$sfx was there before recovery, but there is no $moved$sfx"
    fi
done
rec=$(grep 'recovery: done' "$d/last.log" | tail -n 1)
ok "b: unreadable tracker moved to $moved, rebuilt; $CRASH_NREC stored once, 0 missing, ZooKeeper = end offsets ($(($(date +%s) - t0)) s)"
echo "   ${rec#*recovery: }"

# --- c. kwal recover alone ----------------------------------------------------
t0=$(date +%s)
d="$T/c"
produce "$d" tc
crash_conf "$d" g-tc tc
crash_run "$d" "$d/run1.log" pipeline.wal-acked:20 -X batch.interval.ms=60000
s1=$(stored_now "$d")
[ "$s1" -eq 0 ] || fail "c: $s1 records stored before the crash (batch interval 60 s: expected none)"
expect 0 "c: kwal wal ls after the crash" "$KW" wal ls --dir "$d/w1" --dir "$d/w2"
# 20 blocks, or 21: the other receiver's pipeline may have appended its
# block at the same moment (they share the WAL's writes)
nwal=$(sed -n 's/^total: .*, \([0-9]*\) records (LSN 1\.\.[0-9]*).*/\1/p' "$OUT")
[ -n "$nwal" ] && [ "$nwal" -ge 20 ] && [ "$nwal" -le 21 ] ||
    fail "c: the WAL holds '${nwal:-?}' blocks, expected the 20 (or 21) appended before the crash"
z0=$(zk_sum g-tc tc)
expect 0 "c: kwal recover" timeout 120 "$KW" recover -c "$d/k.conf"
cp "$ERR" "$d/recover1.log"
rec=$(grep 'recovery: done' "$d/recover1.log" | tail -n 1)
[ -n "$rec" ] || fail "c: no recovery summary line"
case "$rec" in
*"; $nwal blocks ("*" records) replayed"*) ;;
*) fail "c: recover did not replay the $nwal blocks of the WAL: $rec" ;;
esac
nrep=$(echo "$rec" | sed -n "s/.*; $nwal blocks (\([0-9]*\) records) replayed.*/\1/p")
s2=$(stored_now "$d")
[ "$s2" -gt 0 ] && [ "$s2" -lt "$CRASH_NREC" ] ||
    fail "c: after kwal recover $s2 records stored, expected some but not all $CRASH_NREC"
[ "$s2" -eq "$nrep" ] || fail "c: $nrep records replayed, but $s2 stored"
summary=$("$VF" --manifest "$d/m" --sqlite "$d/out.db" 2>/dev/null | tail -n 1)
case "$summary" in
"expected=$CRASH_NREC stored=$s2 missing=$((CRASH_NREC - s2)) duplicates=0 duplicate_offsets=0 corrupt=0"*) ;;
*) fail "c: verify after kwal recover: $summary" ;;
esac
ok "c: kwal recover replayed the $nwal WAL blocks: $s2 records stored once (sink had 0)"
# ZooKeeper = what the WAL holds, the sink holds exactly offsets 0..zk-1 of
# every partition: nothing was consumed beyond the WAL
check_offsets "$d" g-tc tc "$s2" 4
p=0
while [ "$p" -lt 4 ]; do
    cnt=$(sqlite3 "$d/out.db" "SELECT COUNT(*) || ' ' || COALESCE(MAX(offset)+1, 0) FROM records WHERE topic='tc' AND partition=$p")
    [ "${cnt% *}" = "${cnt#* }" ] || fail "c: partition $p: count and end offset differ ($cnt)"
    p=$((p + 1))
done
ok "c: each partition's sink holds exactly offsets 0..(ZooKeeper offset - 1)"
[ "$z0" -lt "$s2" ] ||
    fail "c: ZooKeeper offsets summed to $z0 before kwal recover, $s2 after: expected them behind the WAL"
grep -q 'ZooKeeper offset moved from' "$d/recover1.log" || fail "c: no ZooKeeper offset was moved"
ok "c: ZooKeeper moved forward from $z0 to $s2 (the 20th block was in the WAL, not in ZooKeeper)"
ids=$(timeout 30 "$ZKL" ls --connect "$ZK" /consumers/g-tc/ids 2>/dev/null)
[ -z "$ids" ] || fail "c: instances still registered after kwal recover: $ids"
ok "c: no instance registered in ZooKeeper after kwal recover"
echo "   ${rec#*recovery: }"
# again: nothing to do
expect 0 "c: kwal recover again" timeout 120 "$KW" recover -c "$d/k.conf"
rec2=$(grep 'recovery: done' "$ERR" | tail -n 1)
case "$rec2" in
*"; 0 blocks (0 records) replayed"*"; 0 of "*) ;;
*) fail "c: a second kwal recover did something: $rec2" ;;
esac
[ "$(stored_now "$d")" -eq "$s2" ] || fail "c: the second kwal recover changed the sink"
[ "$(zk_sum g-tc tc)" -eq "$s2" ] || fail "c: the second kwal recover changed ZooKeeper"
ok "c: a second kwal recover replays nothing and moves nothing"
crash_finish "$d" "$d/last.log"
ok "c: kwal receive then finished: $CRASH_NREC stored once, 0 missing, ZooKeeper = end offsets ($(($(date +%s) - t0)) s)"

[ "$bugs" -eq 0 ] || { echo "FAIL: $bugs failed checks (above), $checks passed"; exit 1; }
echo "PASS: $checks checks"
