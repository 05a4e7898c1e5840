# lib_receive.sh -- sourced by the receiver-mode integration scripts, after
# lib.sh (not a test itself: the ctest glob takes only NNNN-*.sh). Provides:
#   KW KL ZKL LG VF   kwal, kwal-kafka-local, kwal-zk-local, kwal-loadgen, kwal-verify
#   KWPID KWPID2 LGPID KLPID   set them to background pids; the EXIT trap kills
#                     them, stops ZooKeeper and removes $T
#   ok MSG            count a passed check
#   start_local TOPIC:PARTITIONS...   ZooKeeper ($ZK) and a 3-broker cluster
#                     with these topics ($BS), both on loopback

KW="$BIN/kwal"
KL="$BIN/kwal-kafka-local"
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
killpid() {
    if [ -n "$1" ] && kill -0 "$1" 2>/dev/null; then
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
    rm -rf "$T"
}
trap cleanup EXIT

ok() {
    checks=$((checks + 1))
    echo "ok: $*"
}

start_local() {
    timeout 60 "$ZKL" start --dir "$T/zk" >"$T/zk.out" 2>"$T/zk.err" ||
        { cat "$T/zk.err"; fail "kwal-zk-local start"; }
    ZK=$(cat "$T/zk/connect")
    ok "ZooKeeper up: $ZK"

    topics=$*                # names without spaces
    set --
    for t in $topics; do
        set -- "$@" --topic "$t"
    done
    "$KL" --brokers 3 "$@" --bootstrap-file "$T/bs" --no-stdin \
        >"$T/kl.out" 2>"$T/kl.err" &
    KLPID=$!
    n=0
    until [ -s "$T/bs" ]; do
        n=$((n + 1))
        [ "$n" -lt 200 ] || { cat "$T/kl.err"; fail "no bootstrap file after 20 s"; }
        kill -0 "$KLPID" 2>/dev/null || { cat "$T/kl.err"; fail "kwal-kafka-local died"; }
        sleep 0.1
    done
    BS=$(cat "$T/bs")
    ok "cluster up: $BS"
}
