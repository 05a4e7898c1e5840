#!/bin/sh
# 0024-receive-group-churn.sh -- two `kwal receive` instances in one consumer
# group, one of them joining and leaving three times while records arrive.
#
# Scenario (run twice: with librdkafka's default eager assignors, then with
# kafka.partition.assignment.strategy=cooperative-sticky on both instances,
# each time on a fresh 8-partition topic and group): kwal-loadgen produces
# 100,000 keyed records of 100 B at a steady 2,000/s. Instance A (receivers=2)
# runs the whole time; instance B (1 receiver, its own WAL and sink, the same
# ones at every start) is started and stopped (SIGTERM) three times.
#
# Checked:
#   * every SIGTERM stops its instance with exit 0, and a stopped B's log
#     shows every partition it was assigned revoked again;
#   * owner nodes match the assignment at every quiescent moment: A alone
#     before the first join, after each join has settled and after each leave
#     has settled. "Settled" is read from the logs (each instance's
#     "assigned" minus "revoked" lines, per receiver): the instances hold all
#     8 partitions between them, each exactly once, B some of them while it
#     runs, and no assigned/revoked line appeared for 2 s. Then, with
#     kwal-zk-local ls/get, /consumers/<group>/owners/<topic>/ must hold
#     exactly the nodes 0..7, each naming the instance whose log holds the
#     partition; that instance must be registered under /consumers/<group>/ids/
#     (ids/<instance> holding "host:pid" of a running kwal), and only running
#     instances may be registered. If an assigned/revoked line appears while
#     ZooKeeper is read, the snapshot is taken again (bounded);
#   * no partition was ever reported lost (zk "partition ... lost");
#   * pooled over both sinks, every record is stored exactly once
#     (kwal-verify --sqlite A --sqlite B: missing=0 duplicates=0), each stop
#     summary reports 0 duplicate deliveries (a revoke flushes first), and
#     every partition's ZooKeeper offset equals its end offset over both
#     sinks, summing to 100,000.
#
# The librdkafka mock cluster's group coordinator waits session.timeout.ms
# minus 1 s for members to rejoin before it elects a leader (a real broker
# goes on as soon as every member has rejoined), so the instances run with
# kafka.session.timeout.ms=4000 and kafka.heartbeat.interval.ms=500;
# otherwise every join and leave would take 44 s.
#
# Run by ctest with KWAL_BIN_DIR=<build>/tools and KWAL_SRC_DIR. Every wait
# is bounded; the exit trap kills kwal and the producer, stops ZooKeeper and
# the cluster, and removes the temporary directory.
set -u

BIN=${KWAL_BIN_DIR:?set KWAL_BIN_DIR to the build directory of tools/}
SRC=${KWAL_SRC_DIR:?set KWAL_SRC_DIR to the source tree}
NAME=0024
. "$SRC/tests/integration/lib.sh"
. "$SRC/tests/integration/lib_receive.sh"

TOTAL=100000
RATE=2000
CYCLES=3

showlog() {
    for f in "$@"; do
        echo "--- $(basename "$(dirname "$f")")/$(basename "$f") (tail, without the ZooKeeper C client's lines):"
        grep -v 'ZOO_' "$f" 2>/dev/null | tail -n 30
    done
}

# --- ZooKeeper and the cluster ------------------------------------------------
start_local ge:8 gc:8

# conf FILE GROUP TOPIC DIR: a receive configuration in FILE.
conf() {
    cat >"$1" <<EOF
# 0024 scenario config
group.id=$2
topics=$3
zookeeper.connect=$ZK
kafka.bootstrap.servers=$BS
auto.offset.reset=earliest
wal.dirs=$4/wal
sink=sqlite:$4/out.db
batch.interval.ms=500
# the mock coordinator waits session.timeout.ms - 1 s for rejoins (see above)
kafka.session.timeout.ms=4000
kafka.heartbeat.interval.ms=500
EOF
}

# stored: what kwal-verify says is stored, pooled over the sinks that exist
# (0 while there are none). Before kwal-loadgen is done (no manifest yet) the
# run id stands in for the manifest.
stored() {
    set --
    for db in "$D/a/out.db" "$D/b/out.db"; do
        [ -f "$db" ] && set -- "$@" --sqlite "$db"
    done
    [ $# -gt 0 ] || { echo 0; return; }
    if [ -f "$D/m" ]; then
        "$VF" --manifest "$D/m" "$@" 2>/dev/null
    else
        "$VF" --expect "$TOTAL" --run-id "$RUN" "$@" 2>/dev/null
    fi | tail -n 1 | sed -n 's/.*stored=\([0-9]*\).*/\1/p'
}

# held LOG: the partitions of $TOPIC that LOG's instance holds ("assigned"
# minus "revoked", per receiver), one "PARTITION RECEIVERS" line each, sorted.
held() {
    awk -v t="$TOPIC/" '
        $3 == "receiver:" && ($5 == "assigned" || $5 == "revoked") && index($6, t) == 1 {
            k = $4 " " substr($6, length(t) + 1)
            h[k] = ($5 == "assigned")
        }
        END {
            for (k in h)
                if (h[k]) { split(k, a, " "); c[a[2]]++ }
            for (p in c) print p, c[p]
        }' "$1" 2>/dev/null | sort -n
}

# events LOG: how many assigned/revoked lines LOG has (a change = a rebalance).
events() {
    grep -c -e ': assigned ' -e ': revoked ' "$1" 2>/dev/null
}

# instance LOG: the instance name kwal registered under (its ids node).
instance() {
    sed -n "s/.*zk: connected to ZooKeeper at .* as '\([^']*\)'.*/\1/p" "$1" | head -n 1
}

zkls() { timeout 30 "$ZKL" ls --connect "$ZK" "$1"; }
zkget() { timeout 30 "$ZKL" get --connect "$ZK" "$1"; }

# expected WITH_B: write $D/want ("PARTITION INSTANCE" lines, as the logs say)
# and return 0 when the logs show a settled assignment: every partition held
# exactly once over the running instances, by one receiver, B holding some
# when WITH_B is 1.
expected() {
    held "$ALOG" >"$D/held.a"
    : >"$D/held.b"
    [ "$1" -eq 1 ] && held "$BLOG" >"$D/held.b"
    { sed "s/ .*/ $AINST/" "$D/held.a"; [ "$1" -eq 1 ] && sed "s/ .*/ $BINST/" "$D/held.b"; } |
        sort -n >"$D/want"
    [ "$(cut -d' ' -f1 "$D/want" | tr '\n' ' ')" = "0 1 2 3 4 5 6 7 " ] || return 1
    ! grep -qv ' 1$' "$D/held.a" "$D/held.b" || return 1
    [ "$1" -eq 0 ] || [ -s "$D/held.b" ] || return 1
    return 0
}

# snapshot: $D/owners ("PARTITION INSTANCE" from the owner nodes) and
# $D/ids ("INSTANCE host:pid" from the ids nodes).
snapshot() {
    zkls "/consumers/$GROUP/owners/$TOPIC" >"$D/owner.ls" 2>"$D/zk.err" || return 1
    : >"$D/owners"
    while read -r zp; do
        zo=$(zkget "/consumers/$GROUP/owners/$TOPIC/$zp" 2>>"$D/zk.err" </dev/null) || zo="?"
        echo "$zp $zo" >>"$D/owners"
    done <"$D/owner.ls"
    sort -n -o "$D/owners" "$D/owners"
    zkls "/consumers/$GROUP/ids" >"$D/ids.ls" 2>>"$D/zk.err" || return 1
    : >"$D/ids"
    while read -r zi; do
        echo "$zi $(zkget "/consumers/$GROUP/ids/$zi" 2>>"$D/zk.err" </dev/null)" >>"$D/ids"
    done <"$D/ids.ls"
    return 0
}

evidence() {
    echo "--- held by A ($AINST), per the log (partition receivers):"; cat "$D/held.a"
    echo "--- held by B ($BINST), per the log:"; cat "$D/held.b"
    echo "--- owner nodes (partition instance):"; cat "$D/owners" 2>/dev/null
    echo "--- ids nodes (instance data):"; cat "$D/ids" 2>/dev/null
    cat "$D/zk.err" 2>/dev/null
}

# settle WITH_B WHAT: wait (bounded) until the logs show a settled
# assignment that has been quiet for 2 s, read ZooKeeper, and check that the
# owner and ids nodes agree with the logs (see the header).
settle() {
    n=0 quiet=0 last=
    while :; do
        n=$((n + 1))
        [ "$n" -le 90 ] || { evidence; showlog "$ALOG" "$BLOG"; fail "$2: no settled assignment after 90 s"; }
        kill -0 "$KWPID" 2>/dev/null || { showlog "$ALOG"; fail "$2: instance A died"; }
        if [ "$1" -eq 1 ]; then
            kill -0 "$KWPID2" 2>/dev/null || { showlog "$BLOG"; fail "$2: instance B died"; }
        fi
        sig="$(events "$ALOG") $(events "$BLOG")"
        if [ "$sig" = "$last" ]; then quiet=$((quiet + 1)); else quiet=0 last=$sig; fi
        if [ "$quiet" -ge 2 ] && expected "$1"; then
            snapshot || { evidence; fail "$2: cannot read ZooKeeper"; }
            sleep 1
            # an assigned/revoked line while ZooKeeper was read: read again
            [ "$(events "$ALOG") $(events "$BLOG")" = "$sig" ] && break
            quiet=0
            continue
        fi
        sleep 1
    done
    # every partition exactly one owner node, naming the instance whose log
    # holds the partition
    cmp -s "$D/owners" "$D/want" ||
        { evidence; echo "--- expected owners (from the logs):"; cat "$D/want"; fail "$2: owner nodes differ from the logs' assignment"; }
    # registered: exactly the running instances, each with its pid
    { echo "$AINST $(hostname):$KWPID"; [ "$1" -eq 1 ] && echo "$BINST $(hostname):$KWPID2"; } |
        sort >"$D/ids.want"
    sort -o "$D/ids" "$D/ids"
    cmp -s "$D/ids" "$D/ids.want" ||
        { evidence; echo "--- expected ids:"; cat "$D/ids.want"; fail "$2: ids nodes are not the running instances"; }
    ok "$2: owners = assignment (A $(cut -d' ' -f1 "$D/held.a" | tr '\n' ' ')| B $(cut -d' ' -f1 "$D/held.b" | tr '\n' ' ')), owners registered and running"
}

# stop_pid PID LOG WHO: SIGTERM, require exit 0 within 60 s.
stop_pid() {
    kill -TERM "$1"
    n=0
    while kill -0 "$1" 2>/dev/null; do
        n=$((n + 1))
        [ "$n" -lt 600 ] || { showlog "$2"; fail "$3 did not stop within 60 s"; }
        sleep 0.1
    done
    wait "$1"
    st=$?
    [ "$st" -eq 0 ] || { showlog "$2"; fail "$3 exited $st after SIGTERM"; }
    grep 'receiver: stopped:' "$2" | grep -q ' stored, 0 duplicate deliveries' ||
        { showlog "$2"; fail "$3: stop summary missing or duplicates delivered"; }
    ok "$3 stopped on SIGTERM with exit 0, 0 duplicate deliveries"
}

# scenario TAG TOPIC GROUP RUNID [-X key=value]...: the run described above;
# the -X options go to both instances.
scenario() {
    TAG=$1 TOPIC=$2 GROUP=$3 RUN=$4
    shift 4
    D="$T/$TAG"
    mkdir -p "$D/a" "$D/b"
    conf "$D/a.conf" "$GROUP" "$TOPIC" "$D/a"
    echo "receivers=2" >>"$D/a.conf"
    conf "$D/b.conf" "$GROUP" "$TOPIC" "$D/b"
    ALOG="$D/a/kwal.log" BLOG="$D/b/none.log"
    : >"$BLOG"
    BINST=

    # not under timeout(1): LGPID must be the producer itself, so that the
    # exit trap's kill reaches it (the wait for it below is bounded)
    "$LG" --brokers "$BS" --topic "$TOPIC" --records "$TOTAL" --size 100 \
        --rate "$RATE" --run-id "$RUN" --manifest "$D/m" >"$D/lg.out" 2>"$D/lg.err" &
    LGPID=$!
    "$KW" receive -c "$D/a.conf" "$@" >"$D/a/kwal.out" 2>"$ALOG" &
    KWPID=$!
    n=0
    until [ -n "$(instance "$ALOG")" ]; do
        n=$((n + 1))
        [ "$n" -lt 300 ] || { showlog "$ALOG"; fail "$TAG: instance A did not connect to ZooKeeper"; }
        sleep 0.1
    done
    AINST=$(instance "$ALOG")
    settle 0 "$TAG: A alone"

    cycle=1
    while [ "$cycle" -le "$CYCLES" ]; do
        BLOG="$D/b/kwal$cycle.log"
        "$KW" receive -c "$D/b.conf" "$@" >"$D/b/kwal.out" 2>"$BLOG" &
        KWPID2=$!
        n=0
        until [ -n "$(instance "$BLOG")" ]; do
            n=$((n + 1))
            [ "$n" -lt 300 ] || { showlog "$BLOG"; fail "$TAG: instance B did not connect to ZooKeeper"; }
            kill -0 "$KWPID2" 2>/dev/null || { showlog "$BLOG"; fail "$TAG: instance B died"; }
            sleep 0.1
        done
        BINST=$(instance "$BLOG")
        if kill -0 "$LGPID" 2>/dev/null; then during="while producing"; else during="after production"; fi
        settle 1 "$TAG: join $cycle ($during, $(stored) stored)"

        stop_pid "$KWPID2" "$BLOG" "$TAG: instance B ($cycle)"
        KWPID2=
        [ -z "$(held "$BLOG")" ] ||
            { showlog "$BLOG"; fail "$TAG: B exited still holding $(held "$BLOG" | cut -d' ' -f1 | tr '\n' ' ')"; }
        settle 0 "$TAG: leave $cycle"
        cycle=$((cycle + 1))
    done

    n=0
    while kill -0 "$LGPID" 2>/dev/null; do
        n=$((n + 1))
        [ "$n" -lt 1200 ] || fail "$TAG: kwal-loadgen did not finish within 120 s"
        sleep 0.1
    done
    wait "$LGPID" || { cat "$D/lg.err"; fail "$TAG: kwal-loadgen failed"; }
    LGPID=
    grep -q "$TOTAL of $TOTAL records" "$D/lg.err" || { cat "$D/lg.err"; fail "$TAG: not every record reached Kafka"; }
    n=0
    while :; do
        s=$(stored)
        [ "${s:-0}" -ge "$TOTAL" ] && break
        n=$((n + 1))
        [ "$n" -lt 240 ] || { showlog "$ALOG"; fail "$TAG: only ${s:-0} of $TOTAL stored (pooled) after 120 s"; }
        kill -0 "$KWPID" 2>/dev/null || { showlog "$ALOG"; fail "$TAG: instance A died"; }
        sleep 0.5
    done
    stop_pid "$KWPID" "$ALOG" "$TAG: instance A"
    KWPID=

    expect 0 "$TAG: kwal-verify on both sinks pooled" \
        "$VF" --manifest "$D/m" --sqlite "$D/a/out.db" --sqlite "$D/b/out.db"
    [ "$(tail -n 1 "$OUT")" = "expected=$TOTAL stored=$TOTAL missing=0 duplicates=0 duplicate_offsets=0 corrupt=0 foreign=0 out_of_range=0" ] ||
        fail "$TAG: verify summary: $(tail -n 1 "$OUT")"
    sa=$(sqlite3 "$D/a/out.db" "SELECT count(*) FROM records")
    sb=$(sqlite3 "$D/b/out.db" "SELECT count(*) FROM records")
    [ $((sa + sb)) -eq "$TOTAL" ] || fail "$TAG: $sa + $sb rows in the sinks, expected $TOTAL"
    [ "$sb" -gt 0 ] || fail "$TAG: instance B stored nothing"
    ok "$TAG: $TOTAL stored exactly once over both sinks (A $sa, B $sb), 0 missing, 0 duplicates"

    lost=$(grep -h 'zk: partition .* lost' "$ALOG" "$D"/b/kwal*.log)
    [ -z "$lost" ] || { echo "$lost"; fail "$TAG: partitions were lost"; }
    ok "$TAG: no partition lost in ZooKeeper"

    sum=0
    for p in 0 1 2 3 4 5 6 7; do
        want=$(sqlite3 "$D/a/out.db" "ATTACH '$D/b/out.db' AS b;
            SELECT COALESCE(MAX(o) + 1, 0) FROM (
              SELECT offset AS o FROM main.records WHERE topic='$TOPIC' AND partition=$p
              UNION ALL
              SELECT offset FROM b.records WHERE topic='$TOPIC' AND partition=$p)")
        got=$(zkget "/consumers/$GROUP/offsets/$TOPIC/$p" 2>/dev/null)
        [ -n "$got" ] || got=0
        [ "$got" = "$want" ] || fail "$TAG: ZooKeeper offset of $TOPIC/$p is '$got', end offset $want"
        sum=$((sum + got))
    done
    [ "$sum" -eq "$TOTAL" ] || fail "$TAG: ZooKeeper offsets of $TOPIC sum to $sum, expected $TOTAL"
    ok "$TAG: ZooKeeper offsets = end offsets of all 8 partitions, sum $sum"
}

start=$(date +%s)
scenario eager ge gge 0024000000000001
ok "eager assignors: done at $(($(date +%s) - start)) s"
scenario coop gc ggc 0024000000000002 -X kafka.partition.assignment.strategy=cooperative-sticky
ok "cooperative-sticky: done at $(($(date +%s) - start)) s"
# the cooperative protocol was in effect: an eager rebalance revokes all of
# A's partitions every time, a cooperative one only those that move
re=$(grep -c ': revoked ge/' "$T/eager/a/kwal.log")
rc=$(grep -c ': revoked gc/' "$T/coop/a/kwal.log")
[ "$rc" -gt 0 ] && [ "$rc" -lt "$re" ] ||
    fail "instance A revoked $rc partitions with cooperative-sticky, $re with eager assignors"
ok "instance A revoked $rc partitions with cooperative-sticky, $re with eager assignors"

echo "PASS: $checks checks"
