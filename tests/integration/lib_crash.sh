# lib_crash.sh -- the crash-point matrix (DESIGN.md "Crash points and fault
# injection"), sourced by 0030-crash-points-1.sh and 0031-crash-points-3.sh
# after lib.sh (not a test itself: the ctest glob takes only NNNN-*.sh).
#
# crash_matrix NTH: for every crash point `kwal --list-crash-points` prints,
# one trial on a fresh topic (4 partitions) and group:
#   1. CRASH_NREC keyed records are produced (kwal-loadgen, manifest);
#   2. kwal receive runs with KWAL_CRASH_AT=<point>:NTH and must die there
#      (exit 99, the crash line in its log) -- if it has not when every
#      record is stored it gets SIGTERM (receiver.revoke is passed on the way
#      out); a run that ends any other way fails the test: a point the
#      matrix cannot reach proves nothing;
#   3. kwal receive runs again (recovery first) until every record is
#      stored, then SIGTERM (exit 0);
#   4. kwal-verify: stored = produced, 0 missing, 0 duplicates (invariants
#      1-3); every partition's ZooKeeper offset = its end offset.
# recovery.replay needs a backlog to replay: its trial first dies at
# pipeline.committed:30 with a 60 s batch interval (30 blocks durable, none
# in a batch yet; recovery replays at most 8 blocks per batch), then dies at
# recovery.replay:NTH inside the next recovery, and a third run finishes.
#
# The WAL has two replicas and small blocks and segments, so segment rolls
# and cleanups happen; sessions are short (ZooKeeper 2 s with a 500 ms tick,
# Kafka 3 s) so the dead process's owner nodes and group member go soon.

. "$SRC/tests/integration/lib_receive.sh"

CRASH_NREC=${CRASH_NREC:-6000}
ZKL_ARGS="--tick-ms 500"

# crash_conf DIR GROUP TOPIC: the trial configuration in DIR/k.conf.
crash_conf() {
    cat >"$1/k.conf" <<EOF
group.id=$2
topics=$3
receivers=2
zookeeper.connect=$ZK
zookeeper.session.timeout.ms=2000
kafka.bootstrap.servers=$BS
kafka.session.timeout.ms=3000
kafka.heartbeat.interval.ms=300
auto.offset.reset=earliest
wal.dirs=$1/w1,$1/w2
wal.segment.bytes=64K
block.max.bytes=16K
block.interval.ms=50
batch.interval.ms=200
sink=sqlite:$1/out.db
EOF
}

# crash_run DIR LOG SPEC [-X k=v...]: run kwal receive armed with SPEC until
# it dies there; fail unless it exits 99 with the crash line.
crash_run() {
    d=$1 log=$2 spec=$3
    shift 3
    # shellcheck disable=SC2086
    KWAL_CRASH_AT=$spec "$KW" receive -c "$d/k.conf" ${CRASH_MODE-} "$@" \
        >"$d/kwal.out" 2>"$log" &
    KWPID=$!
    n=0 termed=0
    while kill -0 "$KWPID" 2>/dev/null; do
        n=$((n + 1))
        [ "$n" -lt 1200 ] || { showlog "$log"; fail "$spec: kwal neither crashed nor stopped in 120 s"; }
        if [ "$termed" -eq 0 ] && [ $((n % 10)) -eq 0 ] &&
           [ "$(stored "$d/out.db" "$d/m")" = "$CRASH_NREC" ]; then
            kill -TERM "$KWPID" 2>/dev/null   # the stop path passes receiver.revoke
            termed=1
        fi
        sleep 0.1
    done
    wait "$KWPID"
    st=$?
    KWPID=
    [ "$st" -eq 99 ] || { showlog "$log"; fail "$spec: expected exit 99 at the crash point, got $st"; }
    grep -q "crash point ${spec%%:*} reached" "$log" ||
        { showlog "$log"; fail "$spec: no crash line in the log"; }
}

# crash_finish DIR LOG: run kwal receive until every record is stored, stop
# it, verify the sink and the ZooKeeper offsets.
crash_finish() {
    d=$1 log=$2
    # shellcheck disable=SC2086
    "$KW" receive -c "$d/k.conf" ${CRASH_MODE-} >"$d/kwal.out" 2>"$log" &
    KWPID=$!
    wait_stored "$d/out.db" "$d/m" "$CRASH_NREC" 120 "$log"
    stop_kwal "$log"
    summary=$("$VF" --manifest "$d/m" --sqlite "$d/out.db" 2>/dev/null | tail -n 1)
    case "$summary" in
    "expected=$CRASH_NREC stored=$CRASH_NREC missing=0 duplicates=0 duplicate_offsets=0 corrupt=0"*) ;;
    *) showlog "$log"; fail "$d: verify: $summary" ;;
    esac
    check_offsets "$d" "$(sed -n 's/^group.id=//p' "$d/k.conf")" \
        "$(sed -n 's/^topics=//p' "$d/k.conf")" "$CRASH_NREC" 4 >/dev/null
}

# crash_trial POINT NTH TOPIC
crash_trial() {
    point=$1 nth=$2 topic=$3 d="$T/$3"
    mkdir -p "$d"
    crash_conf "$d" "g-$topic" "$topic"
    timeout 120 "$LG" --brokers "$BS" --topic "$topic" --records "$CRASH_NREC" \
        --size 100 --manifest "$d/m" >"$d/lg.out" 2>"$d/lg.err" ||
        { cat "$d/lg.err"; fail "$topic: kwal-loadgen failed"; }
    t0=$(date +%s)
    if [ "$point" = recovery.replay ]; then
        crash_run "$d" "$d/run1.log" pipeline.committed:30 -X batch.interval.ms=60000
        crash_run "$d" "$d/run2.log" "recovery.replay:$nth"
    else
        crash_run "$d" "$d/run1.log" "$point:$nth"
    fi
    crash_finish "$d" "$d/last.log"
    rec=$(sed -n 's/.*recovery: done in \([0-9]*\) ms.*/\1/p' "$d/last.log" | tail -n 1)
    dups=$(sed -n 's/.* \([0-9]*\) duplicate deliveries; .*/\1/p' "$d/last.log" | tail -n 1)
    ok "$point:$nth -> restart: $CRASH_NREC stored once, 0 missing, ZooKeeper = end offsets (recovery ${rec:-?} ms, ${dups:-0} duplicate deliveries replayed, trial $(($(date +%s) - t0)) s)"
}

# crash_classic POINT TOPIC: one trial with --classic (Spark 1.2: recovery
# replays but does not repair ZooKeeper). Nothing may be missing, and the
# records in the window "WAL written, ZooKeeper not updated" are consumed
# again: the sink must report duplicate deliveries (stored once: the sqlite
# sink recognises them).
crash_classic() {
    CRASH_MODE=--classic
    crash_trial "$1" 1 "$2"
    CRASH_MODE=
    d="$T/$2"
    grep -q 'recovery: done.*(classic: no ZooKeeper repair)' "$d/last.log" ||
        { showlog "$d/last.log"; fail "--classic: recovery did not run in classic mode"; }
    dd=$(sed -n 's/.*stopped: .* stored, \([0-9]*\) duplicate deliveries.*/\1/p' \
         "$d/last.log" | tail -n 1)
    [ "${dd:-0}" -gt 0 ] ||
        { showlog "$d/last.log"; fail "--classic after $1: expected duplicate deliveries (re-consumed records), got '${dd:-0}'"; }
    ok "--classic after $1: 0 missing, $dd records consumed again and reported as duplicate deliveries"
}

# crash_matrix NTH [CLASSIC_POINT]: every crash point, one trial each; with
# CLASSIC_POINT also one --classic trial crashing there.
crash_matrix() {
    points=$("$KW" --list-crash-points | sed -n '/^# libfiu/q;/^#/d;s/ .*//p')
    [ -n "$points" ] || fail "kwal --list-crash-points printed no points"
    topics=
    i=0
    for p in $points; do
        i=$((i + 1))
        topics="$topics c$i:4"
    done
    [ -z "${2-}" ] || topics="$topics classic:4"
    # shellcheck disable=SC2086
    start_local $topics
    i=0
    for p in $points; do
        i=$((i + 1))
        crash_trial "$p" "$1" "c$i"
    done
    ok "all $i crash points passed at pass $1"
    [ -z "${2-}" ] || crash_classic "$2" classic
}
