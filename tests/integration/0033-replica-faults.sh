#!/bin/sh
# 0033-replica-faults.sh -- WAL replica faults under kwal receive: a WAL of
# 3 replica directories with wal.write.quorum=2 (wal/wal.h "Failure model",
# wal/FORMAT.md; DESIGN.md invariants 1-3 and "Crash points and fault
# injection").
#
#   a. A replica fails mid-run (libfiu, switched on from outside with
#      fiu-ctrl while kwal-loadgen produces at a steady rate): three trials,
#      writes to replica 1 fail with EIO, writes to replica 2 fail with
#      ENOSPC (failinfo=28), fsyncs of replica 0 fail with EIO. kwal must log
#      the failure and keep going on the other two: every record stored
#      exactly once (kwal-verify), every ZooKeeper offset at its end offset,
#      and `kwal wal ls` (kwal stopped) shows that replica FAILED with a
#      reason, the other two healthy. A fourth trial makes replica 1's writes
#      short (half of what was asked): the WAL goes on with the rest, so no
#      replica may fail and `kwal wal verify` must find nothing.
#   b. One replica corrupted while kwal is stopped: kwal receive dies at
#      pipeline.committed:10 with a 60 s batch interval and 4 KiB segments
#      (10 blocks durable and in ZooKeeper, none delivered, one segment
#      each); one byte in the middle of block 5's payload is flipped in
#      replica 1. `kwal wal verify` must exit 1 naming replica 1 and that
#      segment; the restarted kwal must log that replica 1's record is bad
#      and a good copy serves the reads, and end with every record stored
#      once and ZooKeeper at the end offsets.
#   c. The same byte of one block flipped in EVERY replica (same set-up as
#      b), twice: block 5 (a middle segment), then block 10 (the last record
#      of the newest segment, which a torn tail would look like -- but the
#      tracker and ZooKeeper know it was acknowledged). kwal receive, then
#      kwal recover, must stop with a non-zero exit and, as the last line on
#      stderr, one line naming the LSN and the Kafka offset ranges the block
#      holds (read from the tracker); ZooKeeper must not move, the WAL's
#      files must stay as they were (nothing of an acknowledged block cut),
#      and the sink may only get the blocks below the bad one, once. These
#      checks report every failure and the test fails at the end. Then
#      `kwal recover --skip-corrupt` must give the block up: exactly its
#      records missing, each of its ranges logged as lost, ZooKeeper past
#      it, the WAL verified clean.
#   d. Two replicas out of three fail mid-run (writes to replicas 1 and 2,
#      EIO): the WAL is below its write quorum. kwal must log that it pauses,
#      keep running, and for 5 s the ZooKeeper offsets must not move and
#      never pass what is durable (the tracker's highest until offset per
#      partition: a block is tracked only once the WAL acknowledged it). The
#      WAL must be released (`kwal wal ls` reads it: 1 of 3 healthy, below
#      quorum). The failure points are switched off and `kwal wal repair`
#      rebuilds replicas 1 and 2 while kwal still runs (retried while kwal's
#      periodic reopen holds the lock; if kwal resumes with two replicas
#      before replica 2 is repaired, replica 2 is repaired after kwal stops).
#      kwal must resume by itself ("write quorum again"), and the run end
#      with every record stored once, ZooKeeper at the end offsets, all three
#      replicas healthy and `kwal wal verify` clean.
#
# Run by ctest with KWAL_BIN_DIR=<build>/tools and KWAL_SRC_DIR. Every wait
# is bounded; the exit trap kills what is left, stops ZooKeeper and the
# cluster, and removes the temporary directory (KWAL_KEEP_TMP=1 keeps it).
set -u

BIN=${KWAL_BIN_DIR:?set KWAL_BIN_DIR to the build directory of tools/}
SRC=${KWAL_SRC_DIR:?set KWAL_SRC_DIR to the source tree}
NAME=0033
. "$SRC/tests/integration/lib.sh"
. "$SRC/tests/integration/lib_crash.sh"   # crash_run, crash_finish
. "$SRC/tests/integration/lib_fault.sh"

# bug MSG: a check that failed; the test goes on to the end and then fails
# (so one bug does not hide the next).
bugs=0
bug() {
    echo "FAIL: $*"
    bugs=$((bugs + 1))
}

start_local fa1:4 fa2:4 fa3:4 fa4:4 fb:4 fc:4 fc2:4 fd:4

# verify_all DIR WORKLOAD N: kwal-verify says N stored once, nothing missing.
verify_all() {
    if [ -f "$2" ]; then
        summary=$("$VF" --manifest "$2" --sqlite "$1/out.db" 2>/dev/null | tail -n 1)
    else
        summary=$("$VF" --expect "$3" --run-id "$2" --sqlite "$1/out.db" 2>/dev/null | tail -n 1)
    fi
    case "$summary" in
    "expected=$3 stored=$3 missing=0 duplicates=0 duplicate_offsets=0 corrupt=0"*) ;;
    *) fail "$1: verify: $summary" ;;
    esac
}

# --- a. a replica fails mid-run -----------------------------------------------
# replica_trial TOPIC REPLICA FIU-COMMAND REASON: REASON is what kwal's log
# must give as the replica's failure (part of it; STATE keeps only that it
# failed, so `kwal wal ls` later says "marked failed in STATE"). REASON "-":
# the fault must not fail the replica (a short write is continued): no
# failure logged, all three healthy, `kwal wal verify` clean.
RATE_NREC=8000
replica_trial() {
    topic=$1 r=$2 cmd=$3 reason=$4 d="$T/$1"
    t0=$(date +%s)
    mkdir -p "$d"
    fault_conf "$d" "g-$topic" "$topic"
    KWAL_FIU_CTRL="$FIU" "$KW" receive -c "$d/k.conf" >"$d/kwal.out" 2>"$d/kwal.log" &
    KWPID=$!
    runid=$(printf '%016x' "$(($(date +%s%N) & 0x7fffffffffffffff))")
    "$LG" --brokers "$BS" --topic "$topic" --records "$RATE_NREC" --size 100 \
        --rate 1000 --run-id "$runid" >"$d/lg.out" 2>"$d/lg.err" &
    LGPID=$!
    EXPECT=$RATE_NREC
    wait_stored "$d/out.db" "$runid" 1000 60 "$d/kwal.log"
    kill -0 "$LGPID" 2>/dev/null || fail "$topic: kwal-loadgen already done: the fault would come too late"
    s0=$(stored "$d/out.db" "$runid")
    fiu_send "$KWPID" "$cmd"
    if [ "$reason" = - ]; then
        sleep 2
        kill -0 "$LGPID" 2>/dev/null ||
            fail "$topic: kwal-loadgen was done 2 s after '$cmd': nothing was produced under the fault"
        ok "$topic: '$cmd' on since $s0 records stored, records still arriving"
    else
        wait_log "$d/kwal.log" "replica $r \\($d/w$r\\) failed: " 20 "$topic: replica $r failure"
        kill -0 "$LGPID" 2>/dev/null ||
            fail "$topic: kwal-loadgen was done before replica $r failed: nothing was produced after the fault"
        why=$(grep -o "replica $r ($d/w$r) failed: .*" "$d/kwal.log" | head -n 1)
        case "$why" in
        *"$reason"*) ;;
        *) fail "$topic: replica $r's failure does not say '$reason': $why" ;;
        esac
        ok "$topic: replica $r failed after $s0 records stored, while records still arrive: ${why#*failed: }"
    fi
    n=0
    while kill -0 "$LGPID" 2>/dev/null; do
        n=$((n + 1))
        [ "$n" -lt 600 ] || fail "$topic: kwal-loadgen still producing after 60 s"
        sleep 0.1
    done
    wait "$LGPID" || { cat "$d/lg.err"; fail "$topic: kwal-loadgen failed"; }
    LGPID=
    wait_stored "$d/out.db" "$runid" "$RATE_NREC" 60 "$d/kwal.log"
    stop_kwal "$d/kwal.log"
    verify_all "$d" "$runid" "$RATE_NREC"
    check_offsets "$d" "g-$topic" "$topic" "$RATE_NREC" 4 >/dev/null
    expect 0 "$topic: kwal wal ls" "$KW" wal ls $(wal_dirs "$d")
    if [ "$reason" = - ]; then
        ! grep -q " failed: " "$d/kwal.log" ||
            fail "$topic: a replica failed: $(grep " failed: " "$d/kwal.log" | head -n 1)"
        has "$OUT" "wal: 3 replicas, 3 healthy, write quorum 2" "$topic: wal ls: all 3 healthy"
        expect 0 "$topic: kwal wal verify" "$KW" wal verify $(wal_dirs "$d")
        ok "$topic: $RATE_NREC stored once, 0 missing, ZooKeeper = end offsets; no replica failed, the WAL verifies ($(($(date +%s) - t0)) s)"
        return
    fi
    has "$OUT" "wal: 3 replicas, 2 healthy, write quorum 2" "$topic: wal ls: 2 of 3 healthy"
    grep -E -q "^$r +FAILED .*$d/w$r\$" "$OUT" || fail "$topic: wal ls does not show replica $r FAILED"
    grep -F -A1 "$d/w$r" "$OUT" | grep -F -q "reason: " ||
        fail "$topic: wal ls gives no reason for replica $r"
    for q in 0 1 2; do
        [ "$q" -eq "$r" ] && continue
        grep -E -q "^$q +healthy .*$d/w$q\$" "$OUT" || fail "$topic: wal ls: replica $q is not healthy"
    done
    ok "$topic: $RATE_NREC stored once, 0 missing, ZooKeeper = end offsets; wal ls: replica $r FAILED ($(grep -F -A1 "$d/w$r" "$OUT" | sed -n 's/.*reason: //p' | cut -c1-100)), the others healthy ($(($(date +%s) - t0)) s)"
}

replica_trial fa1 1 "enable name=wal/replica1/write" "Input/output error"
replica_trial fa2 2 "enable name=wal/replica2/write,failinfo=28" "No space left on device"
replica_trial fa3 0 "enable name=wal/replica0/fsync" "Input/output error"
replica_trial fa4 1 "enable name=wal/replica1/short" -

# --- b. one replica corrupted while stopped -----------------------------------
CRASH_NREC=6000
t0=$(date +%s)
d="$T/fb"
mkdir -p "$d"
fault_conf "$d" g-fb fb
timeout 120 "$LG" --brokers "$BS" --topic fb --records "$CRASH_NREC" --size 100 \
    --manifest "$d/m" >"$d/lg.out" 2>"$d/lg.err" || { cat "$d/lg.err"; fail "fb: kwal-loadgen"; }
# one receiver, so one pipeline: exactly 10 blocks are in the WAL when it
# dies at the 10th commit
crash_run "$d" "$d/run1.log" pipeline.committed:10 -X batch.interval.ms=60000 \
    -X wal.segment.bytes=4K -X receivers=1
expect 0 "fb: kwal wal ls after the crash" "$KW" wal ls $(wal_dirs "$d")
has "$OUT" ", 10 records (LSN 1..10)" "fb: the WAL holds the 10 blocks"
has "$OUT" "total: 10 segments" "fb: one segment per block"
corrupt_rec "$d" 5 1
ok "fb: replica 1: byte $AT of $SEG (block 5 at offset $OFF, $SIZE bytes) flipped"
expect 1 "fb: kwal wal verify finds the damage" "$KW" wal verify $(wal_dirs "$d")
grep -q "^replica 1 ($d/w1) segment $SEG offset $OFF: " "$OUT" ||
    fail "fb: kwal wal verify does not name replica 1, segment $SEG, offset $OFF"
! grep -q "^replica [02] " "$OUT" || fail "fb: kwal wal verify blames another replica too"
ok "fb: kwal wal verify: $(grep "^replica 1 " "$OUT" | head -n 1 | cut -c1-200)"
crash_finish "$d" "$d/last.log"
grep -q "replica 1 ($d/w1) segment $SEG offset $OFF: .*a good copy is on replica [02], reads use it" "$d/last.log" ||
    { showlog "$d/last.log"; fail "fb: the restart did not log replica 1's bad record and the good copy"; }
ok "fb: restart: $(grep -o "replica 1 ($d/w1) segment $SEG offset $OFF: .*" "$d/last.log" | head -n 1 | cut -c1-200)"
ok "fb: $CRASH_NREC stored once, 0 missing, ZooKeeper = end offsets ($(($(date +%s) - t0)) s)"

# --- c. the same record corrupted in every replica ----------------------------
# all_corrupt TOPIC LSN WHERE: a WAL of 10 blocks, one segment each (kwal
# died at pipeline.committed:10, nothing delivered); the middle byte of
# block LSN's payload flipped on all three replicas. kwal receive, then
# kwal recover, must fail (check_stop).
all_corrupt() {
    topic=$1 lsn=$2 where=$3 d="$T/$1"
    t0=$(date +%s)
    mkdir -p "$d"
    fault_conf "$d" "g-$topic" "$topic"
    timeout 120 "$LG" --brokers "$BS" --topic "$topic" --records "$CRASH_NREC" --size 100 \
        --manifest "$d/m" >"$d/lg.out" 2>"$d/lg.err" || { cat "$d/lg.err"; fail "$topic: kwal-loadgen"; }
    crash_run "$d" "$d/run1.log" pipeline.committed:10 -X batch.interval.ms=60000 \
        -X wal.segment.bytes=4K -X receivers=1
    expect 0 "$topic: kwal wal ls after the crash" "$KW" wal ls $(wal_dirs "$d")
    has "$OUT" "total: 10 segments, 10 records (LSN 1..10)" "$topic: 10 blocks, one segment each"
    # what the block holds, as the tracker says ("t/p offsets a..b")
    ranges=$(sqlite3 "$d/w0/tracker.db" "SELECT topic || '/' || partition || ' offsets ' || from_offset || '..' || (until_offset - 1) FROM block_ranges WHERE lsn = $lsn ORDER BY topic, partition")
    [ -n "$ranges" ] || fail "$topic: the tracker has no ranges for block $lsn"
    below=$(sqlite3 "$d/w0/tracker.db" "SELECT COALESCE(SUM(records), 0) FROM blocks WHERE lsn < $lsn")
    corrupt_rec "$d" "$lsn" 0 1 2
    ok "$topic: every replica: byte $AT of $SEG ($where, block $lsn) flipped; block $lsn holds: $(echo "$ranges" | tr '\n' ',' | sed 's/,$//;s/,/, /g')"
    expect 1 "$topic: kwal wal verify finds the damage" "$KW" wal verify $(wal_dirs "$d")
    for r in 0 1 2; do
        grep -q "^replica $r ($d/w$r) segment $SEG offset $OFF: " "$OUT" ||
            fail "$topic: kwal wal verify does not name replica $r, segment $SEG, offset $OFF"
    done
    ok "$topic: kwal wal verify names all three replicas at $SEG offset $OFF: $(grep "^replica 0 " "$OUT" | sed 's/.*offset [0-9]*: //')"
    z0=$(zk_offsets "g-$topic" "$topic")
    check_stop receive
    check_stop recover
    skip_corrupt
    ok "$topic: $(($(date +%s) - t0)) s"
}

# skip_corrupt: `kwal recover --skip-corrupt` (the user's explicit choice)
# must give block $lsn up and finish: exit 0, one ERROR line per Kafka range
# of the block saying it is lost; after kwal receive consumed the rest, the
# sink holds every record but exactly the block's (none of its offsets,
# nothing twice), ZooKeeper is past it (the offsets sum to everything
# produced) and `kwal wal verify` is clean. A second plain `kwal recover`
# succeeds.
skip_corrupt() {
    lost=$(sqlite3 "$d/w0/tracker.db" "SELECT records FROM blocks WHERE lsn = $lsn")
    sqlite3 -separator ' ' "$d/w0/tracker.db" "SELECT partition, from_offset, until_offset FROM block_ranges WHERE lsn = $lsn" >"$d/lost_ranges"
    expect 0 "$topic: kwal recover --skip-corrupt" timeout 120 "$KW" recover -c "$d/k.conf" --skip-corrupt
    echo "$ranges" | while IFS= read -r rg; do
        grep -q "ERROR delivery: block lsn $lsn was given up .*$rg.* lost" "$ERR" ||
            { echo "FAIL: $topic: --skip-corrupt did not log '$rg' as lost"; exit 1; }
    done || { tail -n 20 "$ERR"; fail "$topic: lost ranges not logged"; }
    ok "$topic: --skip-corrupt: $(grep "ERROR delivery: block lsn $lsn" "$ERR" | head -n 1 | sed 's/^[^ ]* //')"
    # then the service consumes the rest
    "$KW" receive -c "$d/k.conf" >"$d/kwal.out" 2>"$d/skip.log" &
    KWPID=$!
    wait_stored "$d/out.db" "$d/m" $((CRASH_NREC - lost)) 120 "$d/skip.log"
    stop_kwal "$d/skip.log"
    summary=$("$VF" --manifest "$d/m" --sqlite "$d/out.db" 2>/dev/null | tail -n 1)
    case "$summary" in
    "expected=$CRASH_NREC stored=$((CRASH_NREC - lost)) missing=$lost duplicates=0 duplicate_offsets=0 corrupt=0"*) ;;
    *) fail "$topic: after --skip-corrupt (block of $lost records lost) the sink holds: $summary" ;;
    esac
    while read -r lp lf lu; do
        n=$(sqlite3 "$d/out.db" "SELECT count(*) FROM records WHERE topic = '$topic' AND partition = $lp AND offset >= $lf AND offset < $lu")
        [ "$n" -eq 0 ] || fail "$topic: $n records of the lost range $lp:$lf..$lu are in the sink"
    done <"$d/lost_ranges"
    zs=0
    for zv in $(zk_offsets "g-$topic" "$topic"); do zs=$((zs + zv)); done
    [ "$zs" -eq "$CRASH_NREC" ] || fail "$topic: ZooKeeper offsets sum to $zs after --skip-corrupt, expected $CRASH_NREC"
    ok "$topic: $summary; ZooKeeper offsets sum to $zs"
    expect 0 "$topic: kwal wal verify after --skip-corrupt" "$KW" wal verify $(wal_dirs "$d")
    expect 0 "$topic: kwal recover again, without the flag" timeout 120 "$KW" recover -c "$d/k.conf"
}

# check_stop CMD: CMD (kwal receive or recover) must fail, with its one-line
# reason naming LSN $lsn and every range of that block as its last stderr
# line; ZooKeeper must not move; the segment of the bad block must stay as
# it was on every replica (nothing of an acknowledged block may be cut), and
# when nothing was delivered every WAL file must; the sink may only get
# (some of) the blocks below $lsn ($below records), once.
check_stop() {
    mkdir -p "$d/before"
    for r in 0 1 2; do
        (cd "$d/w$r" && ls *.seg STATE) >"$d/before/ls$r" || fail "$topic: ls w$r"
        cat "$d/w$r"/*.seg | cksum >"$d/before/sum$r"
        if [ -f "$d/w$r/$SEG" ]; then cksum <"$d/w$r/$SEG"; else echo absent; fi >"$d/before/seg$r"
    done
    # shellcheck disable=SC2086
    timeout 120 "$KW" $1 -c "$d/k.conf" >"$d/$1.out" 2>"$d/$1.err"
    st=$?
    [ "$st" -ne 0 ] && [ "$st" -ne 124 ] ||
        { tail -n 20 "$d/$1.err"; fail "$topic: kwal $1 exited $st with block $lsn corrupt on every replica"; }
    last=$(tail -n 1 "$d/$1.err")
    case "$last" in
    "kwal: $1: "*) ;;
    *) tail -n 20 "$d/$1.err"; fail "$topic: kwal $1's last stderr line is not its one-line reason: $last" ;;
    esac
    echo "$last" | grep -q -E "(lsn|LSN) ${lsn}[^0-9]" ||
        { tail -n 20 "$d/$1.err"; fail "$topic: kwal $1's reason does not name LSN $lsn: $last"; }
    echo "$ranges" | while IFS= read -r rg; do
        case "$last" in
        *"$rg"*) ;;
        *) echo "FAIL: $topic: kwal $1's reason does not name '$rg': $last"; exit 1 ;;
        esac
    done || fail "$topic: kwal $1: Kafka offset ranges of block $lsn not named"
    ok "$topic: kwal $1 exit $st; $last"
    [ "$(zk_offsets "g-$topic" "$topic")" = "$z0" ] ||
        bug "$topic: kwal $1 moved ZooKeeper offsets: $z0 -> $(zk_offsets "g-$topic" "$topic")"
    sn=$(stored "$d/out.db" "$d/m")
    for r in 0 1 2; do
        if [ "$(cat "$d/before/seg$r")" = absent ]; then
            :   # already reported
        elif [ ! -f "$d/w$r/$SEG" ]; then
            bug "$topic: kwal $1 deleted $SEG (block $lsn, acknowledged) from replica $r: $(grep -E "replica $r .*$SEG.*(truncated|cut)" "$d/$1.err" | head -n 1 | sed 's/^[^ ]* //')"
        elif ! cksum <"$d/w$r/$SEG" | cmp -s - "$d/before/seg$r"; then
            bug "$topic: kwal $1 changed $SEG (block $lsn, acknowledged) on replica $r: $(grep -E "replica $r .*$SEG.*(truncated|cut)" "$d/$1.err" | head -n 1 | sed 's/^[^ ]* //')"
        elif [ "${sn:-0}" -eq 0 ] && ! (cd "$d/w$r" && ls *.seg STATE) | cmp -s - "$d/before/ls$r"; then
            bug "$topic: kwal $1 delivered nothing but changed the files of replica $r: $(cd "$d/w$r" && ls | tr '\n' ' ')"
        elif [ "${sn:-0}" -eq 0 ] && ! cat "$d/w$r"/*.seg | cksum | cmp -s - "$d/before/sum$r"; then
            bug "$topic: kwal $1 delivered nothing but changed the segments of replica $r"
        fi
    done
    summary=$("$VF" --manifest "$d/m" --sqlite "$d/out.db" 2>/dev/null | tail -n 1)
    case "$summary" in
    ""|"expected=$CRASH_NREC stored="*" duplicates=0 duplicate_offsets=0 corrupt=0"*)
        [ "${sn:-0}" -le "$below" ] ||
            bug "$topic: after kwal $1 the sink holds more than the blocks below $lsn ($below records): $summary" ;;
    *) bug "$topic: after kwal $1 the sink holds: $summary" ;;
    esac
}

all_corrupt fc 5 "a middle segment"
all_corrupt fc2 10 "the newest segment, the last record"

# --- d. two of three replicas fail mid-run: quorum lost, repair, resume -------
# durable_offsets DIR TOPIC: "u0 u1 u2 u3", per partition the highest until
# offset of the blocks the tracker has (a block is tracked only once the WAL
# acknowledged it: durable on the write quorum).
durable_offsets() {
    du=
    for dp in 0 1 2 3; do
        dv=$(sqlite3 "file:$1/w0/tracker.db?mode=ro" \
            "SELECT until_offset FROM partitions WHERE topic = '$2' AND partition = $dp" 2>/dev/null)
        du="$du ${dv:-0}"
    done
    echo "${du# }"
}

# le "a b c d" "w x y z": every item of the first list <= its peer
le() {
    set -- $1 $2
    [ "$1" -le "$5" ] && [ "$2" -le "$6" ] && [ "$3" -le "$7" ] && [ "$4" -le "$8" ]
}

QL_NREC=12000
t0=$(date +%s)
d="$T/fd"
mkdir -p "$d"
fault_conf "$d" g-fd fd
KWAL_FIU_CTRL="$FIU" "$KW" receive -c "$d/k.conf" >"$d/kwal.out" 2>"$d/kwal.log" &
KWPID=$!
runid=$(printf '%016x' "$(($(date +%s%N) & 0x7fffffffffffffff))")
"$LG" --brokers "$BS" --topic fd --records "$QL_NREC" --size 100 \
    --rate 1000 --run-id "$runid" >"$d/lg.out" 2>"$d/lg.err" &
LGPID=$!
EXPECT=$QL_NREC
wait_stored "$d/out.db" "$runid" 1500 60 "$d/kwal.log"
fiu_send "$KWPID" "enable name=wal/replica1/write" "enable name=wal/replica2/write"
wait_log "$d/kwal.log" "the WAL is below its write quorum .*consumption pauses" 20 \
    "fd: the pause below the write quorum"
zp=$(zk_offsets g-fd fd)
sp=$(stored "$d/out.db" "$runid")
kill -0 "$LGPID" 2>/dev/null || fail "fd: kwal-loadgen already done: nothing would arrive during the pause"
ok "fd: replicas 1 and 2 failed; kwal paused with $sp stored, ZooKeeper at $zp"
grep -q "replica 1 ($d/w1) failed: " "$d/kwal.log" || fail "fd: replica 1's failure not logged"
grep -q "replica 2 ($d/w2) failed: " "$d/kwal.log" || fail "fd: replica 2's failure not logged"
# paused: ZooKeeper does not move, and never past what is durable
i=0
while [ "$i" -lt 10 ]; do
    sleep 0.5
    kill -0 "$KWPID" 2>/dev/null || { showlog "$d/kwal.log"; fail "fd: kwal died while paused"; }
    z=$(zk_offsets g-fd fd)
    [ "$z" = "$zp" ] || { showlog "$d/kwal.log"; fail "fd: ZooKeeper moved while paused: $zp -> $z"; }
    du=$(durable_offsets "$d" fd)
    le "$z" "$du" || fail "fd: ZooKeeper offsets $z past the durable ones $du"
    i=$((i + 1))
done
ok "fd: paused 5 s: ZooKeeper stayed at $zp, within what is durable ($du); $(stored "$d/out.db" "$runid") stored"
# the WAL is released: readable, 1 of 3 healthy, not locked
expect 0 "fd: kwal wal ls while paused" "$KW" wal ls $(wal_dirs "$d")
has "$OUT" "wal: 3 replicas, 1 healthy, write quorum 2 (BELOW QUORUM" "fd: wal ls: 1 of 3 healthy, below quorum"
fiu_send "$KWPID" "disable name=wal/replica1/write" "disable name=wal/replica2/write"
# repair REPLICA: kwal wal repair, retried while kwal's reopen attempt holds
# the lock (bounded); 0 when done, 1 when kwal resumed first and keeps it.
repair() {
    n=0
    while :; do
        "$KW" wal repair $(wal_dirs "$d") --replica "$1" >"$d/repair$1.out" 2>"$d/repair$1.err"
        rst=$?
        [ "$rst" -eq 0 ] && return 0
        grep -q "in use by another process" "$d/repair$1.err" ||
            { cat "$d/repair$1.out" "$d/repair$1.err"; fail "fd: kwal wal repair --replica $1: exit $rst"; }
        grep -q "the WAL has its write quorum again" "$d/kwal.log" && return 1
        n=$((n + 1))
        [ "$n" -lt 50 ] || { cat "$d/repair$1.err"; fail "fd: kwal wal repair --replica $1: WAL locked for 10 s"; }
        sleep 0.2
    done
}
repair 1 || fail "fd: kwal resumed before any replica was repaired"
ok "fd: kwal wal repair --replica 1 while kwal runs paused: $(cat "$d/repair1.out")"
if repair 2; then
    r2=done
    ok "fd: kwal wal repair --replica 2 while kwal runs paused: $(cat "$d/repair2.out")"
else
    r2=later
    ok "fd: kwal resumed with replicas 0 and 1 before replica 2 was repaired"
fi
wait_log "$d/kwal.log" "the WAL has its write quorum again \\(([23]) healthy replicas\\)" 30 \
    "fd: resuming after the repair"
ok "fd: $(grep -o 'the WAL has its write quorum again.*' "$d/kwal.log" | head -n 1)"
n=0
while kill -0 "$LGPID" 2>/dev/null; do
    n=$((n + 1))
    [ "$n" -lt 600 ] || fail "fd: kwal-loadgen still producing after 60 s"
    sleep 0.1
done
wait "$LGPID" || { cat "$d/lg.err"; fail "fd: kwal-loadgen failed"; }
LGPID=
wait_stored "$d/out.db" "$runid" "$QL_NREC" 90 "$d/kwal.log"
stop_kwal "$d/kwal.log"
verify_all "$d" "$runid" "$QL_NREC"
check_offsets "$d" g-fd fd "$QL_NREC" 4
if [ "$r2" = later ]; then
    expect 0 "fd: kwal wal repair --replica 2 (kwal stopped)" "$KW" wal repair $(wal_dirs "$d") --replica 2
fi
expect 0 "fd: kwal wal ls" "$KW" wal ls $(wal_dirs "$d")
has "$OUT" "wal: 3 replicas, 3 healthy, write quorum 2" "fd: all three replicas healthy"
expect 0 "fd: kwal wal verify" "$KW" wal verify $(wal_dirs "$d")
ok "fd: after the repair kwal resumed by itself: $QL_NREC stored once, 0 missing, ZooKeeper = end offsets ($(($(date +%s) - t0)) s)"

[ "$bugs" -eq 0 ] || { echo "FAIL: $bugs failed checks (above), $checks passed"; exit 1; }
echo "PASS: $checks checks"
