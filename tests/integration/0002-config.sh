#!/bin/sh
# 0002-config.sh -- the configuration table through `kwal config`: file
# syntax, every value type, -X overrides, kafka.* pass-through, the error
# messages (file:line: key: what was expected), and that CONFIGURATION.md is
# what `kwal config --markdown` prints (the docs match the table in
# common/kw_conf.c). When the last check fails after a change to the table,
# regenerate the file:  cmake --build <build> --target configuration-md
#
# Run by ctest with KWAL_BIN_DIR=<build>/tools and KWAL_SRC_DIR. Stops at the
# first mismatch with a non-zero exit.
set -u

BIN=${KWAL_BIN_DIR:?set KWAL_BIN_DIR to the build directory of tools/}
SRC=${KWAL_SRC_DIR:?set KWAL_SRC_DIR to the source tree}
KWAL="$BIN/kwal"

NAME=0002
. "$SRC/tests/integration/lib.sh"

# line TEXT DESCRIPTION: stdout has a line that is exactly TEXT.
line() {
    grep -F -x -q -- "$1" "$OUT" || fail "$2: no line '$1'"
    checks=$((checks + 1))
    echo "ok: $2"
}

# from ORIGIN KEY=VALUE DESCRIPTION: `kwal config` printed KEY=VALUE right
# after the comment line "# ORIGIN".
from() {
    awk -v c="# $1" -v kv="$2" '$0 == kv && prev == c { found = 1 } { prev = $0 }
        END { exit !found }' "$OUT" || fail "$3: no '$2' after '# $1'"
    checks=$((checks + 1))
    echo "ok: $3"
}


# ---- defaults ----
expect 0 "kwal config (defaults)" "$KWAL" config
from "default" "wal.dirs=./kwal-wal" "default wal.dirs"
from "default" "wal.write.quorum=0" "default quorum: majority"
from "default" "wal.segment.bytes=64M" "default segment size"
from "default" "wal.segment.ms=60000" "default segment age"
from "default" "wal.max.pending.bytes=256M" "default pending bytes"
from "default" "wal.compress=true" "default compression"
from "default" "log.level=info" "default log level"

# ---- file syntax and every type ----
printf '%s\n' \
    "# a comment" \
    "" \
    "   wal.dirs =  /a , /b,/c  " \
    "wal.write.quorum=1" \
    "	# an indented comment" \
    "wal.write.quorum = 2" \
    "wal.segment.bytes=1GiB" \
    "wal.max.pending.bytes=1048576" \
    "wal.compress=off" \
    "log.level=DEBUG" \
    "kafka.bootstrap.servers=127.0.0.1:9092" \
    "kafka.sasl.password=p#ss=word" \
    "kafka.client.id=first" >"$T/k.conf"
printf 'wal.segment.ms=5\r\n' >>"$T/k.conf"
expect 0 "kwal config -c FILE -X ..." "$KWAL" config -c "$T/k.conf" \
    -X wal.segment.bytes=4k -X kafka.client.id=second -Xwal.compress=yes
from "$T/k.conf:3" "wal.dirs=/a,/b,/c" "list trimmed, file:line remembered"
from "$T/k.conf:6" "wal.write.quorum=2" "a key given twice keeps the last value"
from "-X" "wal.segment.bytes=4K" "-X overrides the file; sizes take k/K"
from "$T/k.conf:8" "wal.max.pending.bytes=1M" "plain byte counts"
from "$T/k.conf:14" "wal.segment.ms=5" "CRLF line endings"
from "-X" "wal.compress=true" "booleans: off, yes"
from "$T/k.conf:10" "log.level=debug" "enums are case-insensitive"
line "kafka.bootstrap.servers=127.0.0.1:9092" "kafka.* passed through"
line "kafka.sasl.password=p#ss=word" "values keep # and ="
line "kafka.client.id=second" "-X overrides a kafka.* key"

# ---- errors: exit 2, "kwal: where: key: what was expected" ----
# bad DESCRIPTION MESSAGE ARGS...: `kwal config ARGS` exits 2 with one line
# on stderr that holds MESSAGE. (sh has no locals: names differ from expect's.)
bad() {
    bad_desc=$1 bad_msg=$2
    shift 2
    expect 2 "$bad_desc" "$KWAL" config "$@"
    has "$ERR" "$bad_msg" "$bad_desc: message"
    [ "$(wc -l <"$ERR" | tr -d ' ')" -eq 1 ] || fail "$bad_desc: not one line on stderr"
}
printf 'wal.dirs=/a\n\nwal.write.quorum=x\n' >"$T/q.conf"
bad "bad integer in a file" "kwal: $T/q.conf:3: wal.write.quorum: expected an integer between 0 and 16, got 'x'" -c "$T/q.conf"
printf 'wal.dirs=/a\nwal.dir=/b\n' >"$T/u.conf"
bad "unknown key in a file" "kwal: $T/u.conf:2: wal.dir: unknown configuration key (did you mean wal.dirs?)" -c "$T/u.conf"
printf 'wal.dirs\n' >"$T/e.conf"
bad "line without =" "kwal: $T/e.conf:1: expected key=value, got 'wal.dirs'" -c "$T/e.conf"
bad "missing file" "kwal: $T/none.conf: No such file or directory" -c "$T/none.conf"
bad "integer out of range" "kwal: -X: wal.write.quorum: expected an integer between 0 and 16, got '17'" -X wal.write.quorum=17
bad "size with a bad suffix" "kwal: -X: wal.segment.bytes: expected a size between 4K and 64G" -X wal.segment.bytes=10Q
bad "size below the minimum" "got '1K'" -X wal.segment.bytes=1K
bad "bad boolean" "kwal: -X: wal.compress: expected true or false, got 'maybe'" -X wal.compress=maybe
bad "bad enum" "kwal: -X: log.level: expected one of error, warn, info, debug, got 'trace'" -X log.level=trace
bad "empty list item" "kwal: -X: wal.dirs: empty item in comma-separated list '/a,,/b'" -X wal.dirs=/a,,/b
bad "empty list" "kwal: -X: wal.dirs: expected a comma-separated list of 1 to 16 items" -X wal.dirs=
bad "too many replicas" "got 17 in" -X wal.dirs=1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17
bad "unknown key, no suggestion" "kwal: -X: frobnicate: unknown configuration key" -X frobnicate=1
bad "kafka. without a name" "kwal: -X: kafka.: expected a librdkafka property name" -X kafka.=1
bad "-X without =" "kwal: -X: expected key=value, got 'wal.dirs'" -X wal.dirs
expect 2 "-X without a value" "$KWAL" config -X
expect 2 "config with a stray argument" "$KWAL" config stray

# ---- the docs are generated from the table ----
expect 0 "kwal config --markdown" "$KWAL" config --markdown
if ! diff -u "$SRC/CONFIGURATION.md" "$OUT"; then
    echo "FAIL: CONFIGURATION.md is out of date; regenerate it with:"
    echo "  $BIN/kwal config --markdown > $SRC/CONFIGURATION.md"
    echo "  (or: cmake --build <build> --target configuration-md)"
    exit 1
fi
checks=$((checks + 1))
echo "ok: CONFIGURATION.md matches kwal config --markdown"
expect 0 "kwal --help" "$KWAL" --help
for key in wal.dirs wal.write.quorum wal.segment.bytes wal.segment.ms \
    wal.max.pending.bytes wal.compress log.level; do
    has "$OUT" "  $key=" "--help documents $key"
done

echo "0002-config: all $checks checks passed"
