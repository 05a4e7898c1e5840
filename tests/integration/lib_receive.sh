# lib_receive.sh -- sourced by the receiver-mode integration scripts, after
# lib.sh (not a test itself: the ctest glob takes only NNNN-*.sh). Provides:
#   KW KL ZKL LG VF   kwal, kwal-kafka-mock, kwal-zk-local, kwal-loadgen, kwal-verify
#   KWPID KWPID2 LGPID KLPID   set them to background pids; the EXIT trap kills
#                     them, stops ZooKeeper and removes $T
#   ok MSG            count a passed check
#   start_local TOPIC:PARTITIONS...   ZooKeeper ($ZK) and a 3-broker cluster
#                     with these topics ($BS), both on loopback; with KLCTL set
#                     (a socket path, e.g. KLCTL="$T/kl.sock") the cluster also
#                     takes fault commands on that --control socket
#   kl_send COMMAND   send a fault command over $KLCTL, require 'ok'
# and the receive-test helpers first written for 0020 (a test may define its
# own versions after sourcing this file; the later definition wins):
#   showlog LOG                       tail of a kwal log
#   stored DB WORKLOAD                what kwal-verify --sqlite says is stored
#   wait_stored DB WORKLOAD N SECS LOG    until N stored (bounded; kwal alive)
#   stop_kwal LOG                     SIGTERM $KWPID, require exit 0 (bounded)
#   check_offsets DIR GROUP TOPIC TOTAL [PARTITIONS]   ZooKeeper offsets =
#                                     end offsets in DIR/out.db, sum TOTAL

KW="$BIN/kwal"
KL="$BIN/kwal-kafka-mock"
ZKL="$BIN/kwal-zk-local"
LG="$BIN/kwal-loadgen"
VF="$BIN/kwal-verify"

for tool in sqlite3 timeout; do
    command -v "$tool" >/dev/null 2>&1 || fail "$tool is not installed"
done
for b in "$KW" "$KL" "$ZKL" "$LG" "$VF"; do
    [ -x "$b" ] || fail "$b is not built"
done

KLPID= KWPID= KWPID2= LGPID=
# killpid PID: TERM first (a `timeout CMD` wrapper passes it on to CMD,
# which SIGKILL of the wrapper would leave running), KILL after 2 s.
killpid() {
    if [ -n "$1" ] && kill -0 "$1" 2>/dev/null; then
        kill -TERM "$1" 2>/dev/null
        k=0
        while kill -0 "$1" 2>/dev/null && [ "$k" -lt 20 ]; do
            k=$((k + 1))
            sleep 0.1
        done
        kill -KILL "$1" 2>/dev/null
        wait "$1" 2>/dev/null
    fi
}
cleanup() {
    killpid "$KWPID"
    killpid "$KWPID2"
    killpid "$LGPID"
    killpid "$KLPID"
    timeout 30 "$ZKL" stop --dir "$T/zk" >/dev/null 2>&1
    [ -n "${KWAL_KEEP_TMP-}" ] || rm -rf "$T"
}
trap cleanup EXIT

ok() {
    checks=$((checks + 1))
    echo "ok: $*"
}

start_local() {
    timeout 60 "$ZKL" start --dir "$T/zk" ${ZKL_ARGS-} >"$T/zk.out" 2>"$T/zk.err" ||
        { cat "$T/zk.err"; fail "kwal-zk-local start"; }
    ZK=$(cat "$T/zk/connect")
    ok "ZooKeeper up: $ZK"

    topics=$*                # names without spaces
    set --
    for t in $topics; do
        set -- "$@" --topic "$t"
    done
    [ -z "${KLCTL-}" ] || set -- "$@" --control "$KLCTL"
    "$KL" --brokers 3 "$@" --bootstrap-file "$T/bs" --no-stdin \
        >"$T/kl.out" 2>"$T/kl.err" &
    KLPID=$!
    n=0
    until [ -s "$T/bs" ]; do
        n=$((n + 1))
        [ "$n" -lt 200 ] || { cat "$T/kl.err"; fail "no bootstrap file after 20 s"; }
        kill -0 "$KLPID" 2>/dev/null || { cat "$T/kl.err"; fail "kwal-kafka-mock died"; }
        sleep 0.1
    done
    BS=$(cat "$T/bs")
    if [ -n "${KLCTL-}" ]; then
        n=0
        until [ -S "$KLCTL" ]; do
            n=$((n + 1))
            [ "$n" -lt 100 ] || { cat "$T/kl.err"; fail "no control socket $KLCTL after 10 s"; }
            sleep 0.1
        done
    fi
    ok "cluster up: $BS"
}

# kl_send COMMAND: one fault command over the control socket; require 'ok'.
kl_send() {
    [ -n "${KLCTL-}" ] || fail "kl_send '$1': start_local ran without KLCTL"
    ans=$(timeout 40 "$KL" --control "$KLCTL" --send "$1" 2>&1)
    st=$?
    [ "$st" -eq 0 ] && [ "$ans" = "ok" ] ||
        { tail -n 20 "$T/kl.err"; fail "kwal-kafka-mock '$1': exit $st, answer '$ans'"; }
    ok "cluster: $1"
}

# --- receive-test helpers (as in 0020) ----------------------------------------

showlog() {
    echo "--- kwal log (tail):"
    tail -n 40 "$1" 2>/dev/null
}

# stored DB WORKLOAD: what kwal-verify says is stored (empty while there is
# no table yet). WORKLOAD: a manifest file, or a run id of ${EXPECT:-100000}
# records (kwal-loadgen writes its manifest only when it is done).
stored() {
    if [ -f "$2" ]; then
        "$VF" --manifest "$2" --sqlite "$1" 2>/dev/null
    else
        "$VF" --expect "${EXPECT:-100000}" --run-id "$2" --sqlite "$1" 2>/dev/null
    fi | tail -n 1 | sed -n 's/.*stored=\([0-9]*\).*/\1/p'
}

# wait_stored DB WORKLOAD N SECS LOG: until at least N stored (bounded).
wait_stored() {
    n=0 s=0
    while :; do
        s=$(stored "$1" "$2")
        [ -n "$s" ] || s=0
        [ "$s" -ge "$3" ] && return 0
        n=$((n + 1))
        [ "$n" -lt $(($4 * 2)) ] || { showlog "$5"; fail "only $s of $3 stored after $4 s"; }
        if ! kill -0 "$KWPID" 2>/dev/null; then
            wait "$KWPID"
            st=$?
            showlog "$5"
            fail "kwal receive died with exit status $st (stored $s)"
        fi
        sleep 0.5
    done
}

# stop_kwal LOG: SIGTERM, require exit 0 within 60 s.
stop_kwal() {
    kill -TERM "$KWPID"
    n=0
    while kill -0 "$KWPID" 2>/dev/null; do
        n=$((n + 1))
        [ "$n" -lt 600 ] || { showlog "$1"; fail "kwal receive did not stop within 60 s"; }
        sleep 0.1
    done
    wait "$KWPID"
    st=$?
    KWPID=
    [ "$st" -eq 0 ] || { showlog "$1"; fail "kwal receive exited $st after SIGTERM"; }
    ok "kwal receive stopped on SIGTERM with exit 0"
}

# check_offsets DIR GROUP TOPIC TOTAL [PARTITIONS]: the ZooKeeper offset of
# each partition (0..PARTITIONS-1, default 8) = its end offset (max(offset)+1
# in DIR/out.db), summing to TOTAL.
check_offsets() {
    sum=0 p=0
    while [ "$p" -lt "${5:-8}" ]; do
        want=$(sqlite3 "$1/out.db" \
            "SELECT COALESCE(MAX(offset)+1, 0) FROM records WHERE topic='$3' AND partition=$p")
        got=$(timeout 30 "$ZKL" get --connect "$ZK" "/consumers/$2/offsets/$3/$p" 2>/dev/null)
        [ -n "$got" ] || got=0
        [ "$got" = "$want" ] || fail "ZooKeeper offset of $3/$p is '$got', end offset $want"
        sum=$((sum + got))
        p=$((p + 1))
    done
    [ "$sum" -eq "$4" ] || fail "ZooKeeper offsets of $3 sum to $sum, expected $4"
    ok "ZooKeeper offsets of $3 = end offsets of all ${5:-8} partitions, sum $sum"
}
