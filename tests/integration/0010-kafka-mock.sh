#!/bin/sh
# 0010-kafka-local.sh -- kwal-kafka-mock is a Kafka cluster kcat can use,
# and it takes fault commands.
#
# Starts kwal-kafka-mock (3 brokers, topic kt with 4 partitions) in the
# background with stdin on a fifo and a --control socket, waits (bounded) for
# its --bootstrap-file, and checks that the first line of its stdout is the
# same bootstrap list. Produces 1000 keyed records with kcat and consumes them
# back: exactly 1000, 1000 distinct keys, every one of the 4 partitions used.
# Then fault commands, on both channels (stdin answers on stdout; the control
# socket through `kwal-kafka-mock --send`): broker down/up answer ok; a bad
# command answers error:; with every leader moved to broker 1 and broker 2
# down, and with 3 pushed Fetch errors, kcat still reads all 1000 records.
# Finally SIGTERM: exit status 0, bootstrap file and socket removed.
#
# Run by ctest with KWAL_BIN_DIR=<build>/tools (and KWAL_SRC_DIR). Every wait
# is bounded; stops at the first mismatch with a non-zero exit, showing the
# cluster's output and log. Kills what it started and removes its directory.
set -u

BIN=${KWAL_BIN_DIR:?set KWAL_BIN_DIR to the build directory of tools/}
KL="$BIN/kwal-kafka-mock"
command -v kcat >/dev/null 2>&1 || { echo "FAIL: kcat is not installed"; exit 1; }
[ -x "$KL" ] || { echo "FAIL: $KL is not built"; exit 1; }

T=$(mktemp -d "${TMPDIR:-/tmp}/kwal-0010.XXXXXX") || exit 1
PID=
cleanup() {
    exec 3>&- 2>/dev/null
    if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
        kill -KILL "$PID" 2>/dev/null
        wait "$PID" 2>/dev/null
    fi
    rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
case "$T" in
*[[:space:]]*) echo "FAIL: temporary directory '$T' has whitespace"; exit 1 ;;
esac

OUT="$T/out"     # the cluster's stdout: bootstrap line, then stdin answers
ERR="$T/err"     # the cluster's log
checks=0

fail() {
    echo "FAIL: $*"
    echo "--- kwal-kafka-mock stdout:"; cat "$OUT" 2>/dev/null
    echo "--- kwal-kafka-mock stderr (last 40 lines):"; tail -n 40 "$ERR" 2>/dev/null
    exit 1
}

ok() {
    checks=$((checks + 1))
    echo "ok: $*"
}

# wait_for SECONDS DESCRIPTION TEST...: poll TEST every 0.1 s.
wait_for() {
    limit=$(($1 * 10)) desc=$2
    shift 2
    n=0
    until "$@"; do
        n=$((n + 1))
        [ "$n" -lt "$limit" ] || fail "timed out after ${limit}0 ms waiting for $desc"
        [ -z "$PID" ] || kill -0 "$PID" 2>/dev/null || fail "kwal-kafka-mock died waiting for $desc"
        sleep 0.1
    done
}

lines() { wc -l <"$OUT" | tr -d ' '; }
more_lines() { [ "$(lines)" -gt "$1" ]; }

# stdin_cmd COMMAND WANT: send COMMAND on stdin, require the answer to start with WANT.
stdin_cmd() {
    before=$(lines)
    printf '%s\n' "$1" >&3
    wait_for 10 "the answer to '$1'" more_lines "$before"
    got=$(tail -n 1 "$OUT")
    case "$got" in
    "$2"*) ok "stdin '$1' -> $got" ;;
    *) fail "stdin '$1': expected '$2...', got '$got'" ;;
    esac
}

# ctl_cmd COMMAND WANT_STATUS WANT: the same over the control socket.
ctl_cmd() {
    got=$(timeout 40 "$KL" --control "$T/ctl" --send "$1" 2>&1)
    st=$?
    [ "$st" -eq "$2" ] || fail "--send '$1': expected exit $2, got $st ($got)"
    case "$got" in
    "$3"*) ok "control '$1' -> $got (exit $st)" ;;
    *) fail "--send '$1': expected '$3...', got '$got'" ;;
    esac
}

# consume: all of topic kt, one "partition key" line per record, into $T/consumed.
consume() {
    timeout 60 kcat -C -b "$BS" -t kt -e -q -o beginning -f '%p %k\n' >"$T/consumed" 2>"$T/kcat.err"
    st=$?
    [ "$st" -eq 0 ] || { cat "$T/kcat.err"; fail "kcat -C ($1) exited $st"; }
    n=$(wc -l <"$T/consumed" | tr -d ' ')
    [ "$n" -eq 1000 ] || { cat "$T/kcat.err"; fail "kcat -C ($1): $n records, expected 1000"; }
    ok "kcat consumed exactly 1000 records ($1)"
}

# --- start ---------------------------------------------------------------
mkfifo "$T/in" || fail "mkfifo"
"$KL" --brokers 3 --topic kt:4 --bootstrap-file "$T/bs" --control "$T/ctl" \
    <"$T/in" >"$OUT" 2>"$ERR" &
PID=$!
exec 3>"$T/in"    # keeps the cluster's stdin open; closing it would stop it
wait_for 20 "the bootstrap file" test -s "$T/bs"
BS=$(cat "$T/bs")
case "$BS" in
127.0.0.1:*,127.0.0.1:*,127.0.0.1:*) ok "bootstrap file lists 3 brokers: $BS" ;;
*) fail "bootstrap file holds '$BS'" ;;
esac
wait_for 10 "the bootstrap line on stdout" test -s "$OUT"
[ "$(head -n 1 "$OUT")" = "$BS" ] || fail "first stdout line '$(head -n 1 "$OUT")' != '$BS'"
ok "first line of stdout is the bootstrap list"
wait_for 10 "the control socket" test -S "$T/ctl"

# --- produce and consume --------------------------------------------------
awk 'BEGIN { for (i = 1; i <= 1000; i++) printf "key%d:value%d\n", i, i }' >"$T/records"
timeout 60 kcat -P -b "$BS" -t kt -K: -l "$T/records" 2>"$T/kcat.err" ||
    { cat "$T/kcat.err"; fail "kcat -P failed"; }
ok "kcat produced 1000 keyed records"

consume "no faults"
keys=$(cut -d' ' -f2 "$T/consumed" | sort -u | wc -l | tr -d ' ')
[ "$keys" -eq 1000 ] || fail "$keys distinct keys, expected 1000"
ok "1000 distinct keys"
parts=$(cut -d' ' -f1 "$T/consumed" | sort | uniq -c | tr -s ' ' | tr '\n' ';')
for p in 0 1 2 3; do
    c=$(awk -v p="$p" '$1 == p' "$T/consumed" | wc -l | tr -d ' ')
    [ "$c" -gt 0 ] || fail "partition $p holds no record (count;partition: $parts)"
done
ok "keys spread over the 4 partitions (count partition: $parts)"

# --- fault commands -------------------------------------------------------
stdin_cmd "broker down 2" "ok"
stdin_cmd "broker up 2" "ok"
stdin_cmd "frobnicate 1" "error:"
stdin_cmd "broker down 7" "error:"
stdin_cmd "rtt 3 20" "ok"
stdin_cmd "rtt 3 0" "ok"
ctl_cmd "broker down 3" 0 "ok"
ctl_cmd "broker up 3" 0 "ok"
ctl_cmd "no such command" 1 "error:"
ctl_cmd "leader nosuchtopic 0 1" 1 "error:"
ctl_cmd "error Fetch NOT_LEADER_FOR_PARTITION x" 1 "error:"

# A broker down keeps its partitions (the mock moves no leader): move them.
for p in 0 1 2 3; do
    ctl_cmd "leader kt $p 1" 0 "ok"
done
ctl_cmd "broker down 2" 0 "ok"
consume "all leaders on broker 1, broker 2 down"
ctl_cmd "broker up 2" 0 "ok"

stdin_cmd "error Fetch NOT_LEADER_FOR_PARTITION 3" "ok"
consume "after 3 injected Fetch errors"
stdin_cmd "create kt2 2" "ok"
stdin_cmd "create kt2 2" "error:"

# --- stop -----------------------------------------------------------------
kill -TERM "$PID"
n=0
while kill -0 "$PID" 2>/dev/null; do
    n=$((n + 1))
    [ "$n" -lt 100 ] || fail "still running 10 s after SIGTERM"
    sleep 0.1
done
wait "$PID"
st=$?
PID=
[ "$st" -eq 0 ] || fail "exit status $st after SIGTERM, expected 0"
ok "SIGTERM: exit 0"
[ ! -e "$T/bs" ] && [ ! -e "$T/ctl" ] || fail "bootstrap file or control socket left behind"
ok "bootstrap file and control socket removed"

echo "PASS: $checks checks"
