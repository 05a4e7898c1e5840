#!/bin/sh
# 0011-zk-local.sh -- kwal-zk-local against Debian's real ZooKeeper server.
#
# Starts a server in a temporary directory on a free loopback port, checks
# `status`, creates a znode (with missing parents) and reads it back with
# `get` and `ls`, restarts the server (same port, the znode survives), stops
# it (`status` then exits 1, a second `stop` exits 0), and checks that bad
# arguments exit 2 with a usage line and that client commands against a dead
# server fail within their timeout.
#
# Run by ctest with KWAL_BIN_DIR=<build>/tools. Every command runs under
# timeout(1), so nothing waits forever; the traps stop the server and remove
# the temporary directory on any exit.
set -u

BIN=${KWAL_BIN_DIR:?set KWAL_BIN_DIR to the build directory of tools/}
ZKL="$BIN/kwal-zk-local"

T=$(mktemp -d "${TMPDIR:-/tmp}/kwal-0011.XXXXXX") || exit 1
cleanup() {
    timeout 30 "$ZKL" stop --dir "$T/zk" >/dev/null 2>&1
    rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

OUT="$T/out"
ERR="$T/err"
checks=0

fail() {
    echo "FAIL: $*"
    echo "--- stdout:"; cat "$OUT" 2>/dev/null
    echo "--- stderr:"; cat "$ERR" 2>/dev/null
    echo "--- server log (tail):"; tail -n 30 "$T/zk/zookeeper.log" 2>/dev/null
    exit 1
}

# expect STATUS DESCRIPTION COMMAND...: run COMMAND (at most 90 s), require
# its exit status.
expect() {
    want=$1 desc=$2
    shift 2
    timeout 90 "$@" >"$OUT" 2>"$ERR"
    got=$?
    [ "$got" -eq "$want" ] || fail "$desc: expected exit $want, got $got from: $*"
    checks=$((checks + 1))
    echo "ok: $desc (exit $got)"
}

# same FILE TEXT DESCRIPTION: require FILE to hold exactly the line TEXT.
same() {
    printf '%s\n' "$2" | cmp -s - "$1" || fail "$3: expected '$2'"
    checks=$((checks + 1))
    echo "ok: $3"
}

# alive PID: true if PID runs and is not a zombie (a container's init may not
# reap the daemonised server at once).
alive() {
    kill -0 "$1" 2>/dev/null || return 1
    state=$(sed -n 's/^[0-9]* (.*) \([A-Za-z]\).*/\1/p' "/proc/$1/stat" 2>/dev/null)
    [ "$state" != Z ] && [ "$state" != X ]
}

has() {
    grep -F -q -- "$2" "$1" || fail "$3: '$2' not in $(basename "$1")"
    checks=$((checks + 1))
    echo "ok: $3"
}

# --- bad arguments -----------------------------------------------------------
expect 2 "no command" "$ZKL"
has "$ERR" "Usage: kwal-zk-local" "usage line without a command"
expect 2 "unknown command" "$ZKL" frobnicate --dir "$T/zk"
has "$ERR" "kwal-zk-local: unknown command 'frobnicate'" "unknown command named"
has "$ERR" "Usage: kwal-zk-local" "usage line for an unknown command"
expect 2 "unknown option" "$ZKL" start --dir "$T/zk" --bogus
has "$ERR" "Usage: kwal-zk-local" "usage line for an unknown option"
expect 2 "start without --dir" "$ZKL" start
expect 2 "bad port" "$ZKL" start --dir "$T/zk" --port 70000
expect 2 "get without PATH" "$ZKL" get --connect 127.0.0.1:1
expect 2 "relative znode path" "$ZKL" get --connect 127.0.0.1:1 nope
expect 0 "--help" "$ZKL" --help
has "$OUT" "Usage: kwal-zk-local" "--help prints the usage"

# --- nothing running yet ------------------------------------------------------
mkdir "$T/zk" || fail "mkdir"
expect 1 "status before start" "$ZKL" status --dir "$T/zk"
expect 0 "stop when nothing runs" "$ZKL" stop --dir "$T/zk"

# --- start ---------------------------------------------------------------------
t0=$(date +%s)
expect 0 "start" "$ZKL" start --dir "$T/zk"
echo "   (server up after $(($(date +%s) - t0)) s)"
HP=$(cat "$OUT")
case "$HP" in
127.0.0.1:[0-9]*) ;;
*) fail "start printed '$HP', not 127.0.0.1:PORT" ;;
esac
same "$T/zk/connect" "$HP" "DIR/connect holds the connect string"
has "$T/zk/zoo.cfg" "clientPortAddress=127.0.0.1" "zoo.cfg binds loopback"
has "$T/zk/zoo.cfg" "dataDir=" "zoo.cfg has a dataDir"
[ -s "$T/zk/zookeeper.pid" ] || fail "no pid file"
alive "$(cat "$T/zk/zookeeper.pid")" || fail "pid in zookeeper.pid is not alive"
checks=$((checks + 1))

expect 0 "status while running" "$ZKL" status --dir "$T/zk"
same "$OUT" "$HP" "status prints the connect string"
expect 1 "second start in the same dir" "$ZKL" start --dir "$T/zk"
has "$ERR" "already running" "second start says why"

# --- znodes ----------------------------------------------------------------------
expect 0 "create with parents" "$ZKL" create --connect "$HP" /consumers/g1/offsets/t1/0 4242
expect 0 "get" "$ZKL" get --connect "$HP" /consumers/g1/offsets/t1/0
same "$OUT" "4242" "get returns the data"
expect 0 "create a sibling" "$ZKL" create --connect "$HP" /consumers/g1/offsets/t1/1 7
expect 0 "ls" "$ZKL" ls --connect "$HP" /consumers/g1/offsets/t1
printf '0\n1\n' | cmp -s - "$OUT" || fail "ls lists both partitions"
checks=$((checks + 1)); echo "ok: ls lists the children, sorted"
expect 1 "get a missing node" "$ZKL" get --connect "$HP" /consumers/nope
has "$ERR" "no such node" "missing node named"
expect 1 "create an existing node" "$ZKL" create --connect "$HP" /consumers/g1/offsets/t1/0 1

# --- restart: same port, same data --------------------------------------------------
old_pid=$(cat "$T/zk/zookeeper.pid")
expect 0 "restart" "$ZKL" restart --dir "$T/zk"
same "$OUT" "$HP" "restart keeps the port"
[ "$(cat "$T/zk/zookeeper.pid")" != "$old_pid" ] || fail "restart kept the old pid"
alive "$old_pid" && fail "the old server still runs after restart"
checks=$((checks + 1)); echo "ok: restart replaced the server process"
expect 0 "get after restart" "$ZKL" get --connect "$HP" /consumers/g1/offsets/t1/0
same "$OUT" "4242" "the znode survives the restart"

# --- stop --------------------------------------------------------------------------
pid=$(cat "$T/zk/zookeeper.pid")
expect 0 "stop" "$ZKL" stop --dir "$T/zk"
alive "$pid" && fail "server pid $pid alive after stop"
checks=$((checks + 1)); echo "ok: server process gone after stop"
expect 1 "status after stop" "$ZKL" status --dir "$T/zk"
has "$ERR" "not running" "status says not running"
expect 0 "second stop" "$ZKL" stop --dir "$T/zk"
expect 1 "get from a stopped server" "$ZKL" get --connect "$HP" --timeout 2 /consumers
has "$ERR" "no ZooKeeper session" "client timeout named"

# --- start again after a stop: same port, data still there ---------------------------
expect 0 "start after stop" "$ZKL" start --dir "$T/zk"
same "$OUT" "$HP" "start in the same dir reuses the port"
expect 0 "get after stop and start" "$ZKL" get --connect "$HP" /consumers/g1/offsets/t1/1
same "$OUT" "7" "data survives stop and start"
expect 0 "final stop" "$ZKL" stop --dir "$T/zk"

echo "PASS: $checks checks"
