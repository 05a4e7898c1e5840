#!/bin/sh
# 0001-wal-cli.sh -- `kwal wal ls|dump|verify|repair` against a real WAL.
#
# kwal-bench-wal --keep writes a 3-replica WAL with small segments; the test
# lists, dumps and verifies it, flips one byte in the middle of a segment of
# one replica (verify must exit 1 and name that replica and segment), repairs
# the replica by index and another one by directory (verify must exit 0
# again), and checks that bad arguments exit 2 with a usage hint and that a
# configuration file with an unknown key fails naming the file, line and key.
#
# Run by ctest with KWAL_BIN_DIR=<build>/tools (and KWAL_SRC_DIR). Stops at the
# first mismatch with a non-zero exit, showing the command's output. Cleans
# up its temporary directory.
set -u

BIN=${KWAL_BIN_DIR:?set KWAL_BIN_DIR to the build directory of tools/}
KWAL="$BIN/kwal"
BENCH="$BIN/kwal-bench-wal"

SRC=${KWAL_SRC_DIR:?set KWAL_SRC_DIR to the source tree}
NAME=0001
. "$SRC/tests/integration/lib.sh"


# flip FILE OFFSET: invert every bit of the byte at OFFSET.
flip() {
    old=$(od -An -tu1 -j "$2" -N1 "$1" | tr -d ' \n')
    [ -n "$old" ] || fail "cannot read byte $2 of $1"
    new=$((255 - old))
    # shellcheck disable=SC2059
    printf "\\$(printf '%03o' "$new")" |
        dd of="$1" bs=1 seek="$2" count=1 conv=notrunc 2>/dev/null ||
        fail "cannot write byte $2 of $1"
    now=$(od -An -tu1 -j "$2" -N1 "$1" | tr -d ' \n')
    [ "$now" -eq "$new" ] || fail "byte $2 of $1 is $now after writing $new"
    echo "flipped byte $2 of $1 ($old -> $new)"
}

# nth_segment DIR N: set SEG to the Nth segment file name of DIR (1-based,
# in LSN order: the names are zero-padded LSNs), or the last one when there
# are fewer; set NSEGS to the number of segments.
nth_segment() {
    SEG='' NSEGS=0
    for f in "$1"/*.seg; do
        [ -e "$f" ] || fail "no segments in $1"
        NSEGS=$((NSEGS + 1))
        [ "$NSEGS" -le "$2" ] && SEG=${f##*/}
    done
}

# ---- a WAL to look at: 3 replicas, 64 records of 64 KiB, 1 MiB segments ----
expect 0 "kwal-bench-wal writes a 3-replica WAL and keeps it" \
    "$BENCH" --quick --keep --dir "$T/bench" --sizes 64K --replicas 3 \
    --appenders 1 --mb 4 --segment-bytes 1M
cat "$OUT"
D="$T/bench/64K-r3-a1"
for r in 0 1 2; do
    [ -d "$D/wal-$r" ] || fail "kwal-bench-wal --keep left no $D/wal-$r"
done
DIRS="--dir $D/wal-0 --dir $D/wal-1 --dir $D/wal-2"

# ---- ls, dump, verify on a good WAL ----
# shellcheck disable=SC2086
expect 0 "wal ls" "$KWAL" wal ls $DIRS
cat "$OUT"
has "$OUT" "3 replicas, 3 healthy" "ls: every replica healthy"
has "$OUT" "$D/wal-2" "ls: names each replica directory"
has "$OUT" "00000000000000000001.seg" "ls: lists the first segment"
has "$OUT" "64 records" "ls: total of 64 records"
nth_segment "$D/wal-0" 1
[ "$NSEGS" -ge 3 ] || fail "expected several 1 MiB segments, found $NSEGS"
echo "ok: $NSEGS segments on disk"

# shellcheck disable=SC2086
expect 0 "wal dump --limit 3" "$KWAL" wal dump $DIRS --limit 3
[ "$(grep -c '^ *[0-9]' "$OUT")" -eq 3 ] || fail "dump --limit 3: not 3 records"
has "$OUT" "65536" "dump: payload length 65536"
# shellcheck disable=SC2086
expect 0 "wal dump --from 10 --limit 1" "$KWAL" wal dump $DIRS --from 10 --limit 1
awk 'NR == 2 { exit !($1 == 10) }' "$OUT" || fail "dump --from 10: first record is not LSN 10"
echo "ok: dump --from 10 starts at LSN 10"
# shellcheck disable=SC2086
expect 0 "wal dump --hex --limit 1" "$KWAL" wal dump $DIRS --hex --limit 1
has "$OUT" "00000000  " "dump --hex: hex dump of the payload"
has "$OUT" "0000fff0  " "dump --hex: the whole 64 KiB payload"
# shellcheck disable=SC2086
expect 0 "wal dump (all records)" "$KWAL" wal dump $DIRS
[ "$(grep -c '^ *[0-9]' "$OUT")" -eq 64 ] || fail "dump: not 64 records"

# shellcheck disable=SC2086
expect 0 "wal verify on a good WAL" "$KWAL" wal verify $DIRS

# The same WAL through a configuration file and -X.
cat >"$T/kwal.conf" <<EOF
# test configuration
wal.dirs = $D/wal-0, $D/wal-1, $D/wal-2
wal.write.quorum=2
EOF
expect 0 "wal verify -c FILE" "$KWAL" wal verify -c "$T/kwal.conf"
expect 0 "wal ls -c FILE -X log.level=warn" "$KWAL" wal ls -c "$T/kwal.conf" -X log.level=warn
has "$OUT" "write quorum 2" "ls -c: the quorum comes from the file"

# ---- one flipped byte in the middle of a segment of replica 1 ----
nth_segment "$D/wal-1" 2
seg=$SEG
size=$(wc -c <"$D/wal-1/$seg" | tr -d ' ')
flip "$D/wal-1/$seg" $((size / 2))
# shellcheck disable=SC2086
expect 1 "wal verify finds the flipped byte" "$KWAL" wal verify $DIRS
cat "$OUT" "$ERR"
has "$OUT" "replica 1 ($D/wal-1) segment $seg offset " "verify names replica 1 and segment $seg"
has "$ERR" "kwal: wal verify: " "verify: one-line reason on stderr"
if grep -q "^replica [02] " "$OUT"; then
    fail "verify blames a replica that was not touched"
fi
echo "ok: verify blames only replica 1"
# The good copies on replicas 0 and 2 still serve every record.
# shellcheck disable=SC2086
expect 0 "wal dump reads past the damage from another replica" "$KWAL" wal dump $DIRS
[ "$(grep -c '^ *[0-9]' "$OUT")" -eq 64 ] || fail "dump: not 64 records after the flip"

# shellcheck disable=SC2086
expect 0 "wal repair --replica 1" "$KWAL" wal repair $DIRS --replica 1
cat "$OUT"
has "$OUT" "repaired replica 1" "repair reports the replica"
has "$OUT" "bytes copied" "repair reports the bytes copied"
# shellcheck disable=SC2086
expect 0 "wal verify after repair" "$KWAL" wal verify $DIRS

# ---- again on replica 2, repaired by directory ----
nth_segment "$D/wal-2" 1
seg=$SEG
size=$(wc -c <"$D/wal-2/$seg" | tr -d ' ')
flip "$D/wal-2/$seg" $((size / 2))
expect 1 "wal verify -c finds the flipped byte" "$KWAL" wal verify -c "$T/kwal.conf"
has "$OUT" "replica 2 ($D/wal-2) segment $seg offset " "verify names replica 2 and segment $seg"
expect 0 "wal repair --target DIR" "$KWAL" wal repair -c "$T/kwal.conf" --target "$D/wal-2"
has "$OUT" "repaired replica 2" "repair --target picks replica 2"
expect 0 "wal verify after the second repair" "$KWAL" wal verify -c "$T/kwal.conf"
# shellcheck disable=SC2086
expect 0 "wal ls after repairs" "$KWAL" wal ls $DIRS
has "$OUT" "3 replicas, 3 healthy" "ls: every replica healthy after repairs"

# ---- a replaced disk: replica 0 comes back empty ----
if ! rm -rf "$D/wal-0" || ! mkdir "$D/wal-0"; then
    fail "cannot empty $D/wal-0"
fi
echo "emptied $D/wal-0"
# shellcheck disable=SC2086
expect 0 "wal ls with an empty replica" "$KWAL" wal ls $DIRS
has "$OUT" "3 replicas, 2 healthy" "ls: the empty replica is not healthy"
grep -q "^0  *FAILED " "$OUT" || fail "ls: replica 0 not shown as FAILED"
echo "ok: ls shows replica 0 FAILED"
# shellcheck disable=SC2086
expect 1 "wal verify with an empty replica" "$KWAL" wal verify $DIRS
has "$OUT" "replica 0 ($D/wal-0)" "verify names the empty replica"
# shellcheck disable=SC2086
expect 0 "wal dump with an empty replica" "$KWAL" wal dump $DIRS
[ "$(grep -c '^ *[0-9]' "$OUT")" -eq 64 ] || fail "dump: not 64 records with replica 0 empty"
# shellcheck disable=SC2086
expect 0 "wal repair --replica 0 fills it" "$KWAL" wal repair $DIRS --replica 0
# shellcheck disable=SC2086
expect 0 "wal verify after refilling replica 0" "$KWAL" wal verify $DIRS
# shellcheck disable=SC2086
expect 0 "wal ls after refilling replica 0" "$KWAL" wal ls $DIRS
has "$OUT" "3 replicas, 3 healthy" "ls: all healthy again"

# ---- bad arguments: exit 2, "kwal: <reason>" and a usage hint ----
expect 2 "kwal without a command" "$KWAL"
expect 2 "kwal --frob" "$KWAL" --frob
has "$ERR" "kwal: unknown option '--frob'" "unknown option named"
has "$ERR" "Try 'kwal --help'." "usage hint"
expect 2 "kwal wal without a subcommand" "$KWAL" wal
expect 2 "kwal wal frob" "$KWAL" wal frob --dir "$D/wal-0"
expect 2 "kwal wal ls without a WAL" "$KWAL" wal ls
has "$ERR" "Try 'kwal wal --help'." "wal usage hint"
expect 2 "kwal wal ls --dir without a value" "$KWAL" wal ls --dir
# shellcheck disable=SC2086
expect 2 "kwal wal dump --limit x" "$KWAL" wal dump $DIRS --limit x
# shellcheck disable=SC2086
expect 2 "kwal wal ls --hex (a dump option)" "$KWAL" wal ls $DIRS --hex
# shellcheck disable=SC2086
expect 2 "kwal wal repair without --replica/--target" "$KWAL" wal repair $DIRS
# shellcheck disable=SC2086
expect 2 "kwal wal repair --replica 7 of 3" "$KWAL" wal repair $DIRS --replica 7
# shellcheck disable=SC2086
expect 2 "kwal wal ls --quorum 4 with 3 replicas" "$KWAL" wal ls $DIRS --quorum 4

# ---- configuration errors name the file, the line and the key ----
cat >"$T/bad.conf" <<EOF
# line 1 is a comment
wal.dirs=$D/wal-0
wal.bogus.key = 1
EOF
expect 2 "-c FILE with an unknown key" "$KWAL" wal ls -c "$T/bad.conf"
has "$ERR" "kwal: $T/bad.conf:3: wal.bogus.key: unknown configuration key" \
    "unknown key named with file:line"
expect 2 "-X with a bad value" "$KWAL" wal ls -c "$T/kwal.conf" -X wal.write.quorum=x
has "$ERR" "wal.write.quorum: expected an integer between 0 and 16, got 'x'" \
    "bad value named with the key and the range"
expect 2 "kwal config with an unknown key" "$KWAL" config -c "$T/bad.conf"

# ---- the rest of the surface ----
expect 0 "kwal --version" "$KWAL" --version
has "$OUT" "kwal " "version printed"
expect 0 "kwal --help" "$KWAL" --help
has "$OUT" "wal.write.quorum" "--help lists the configuration keys"
expect 0 "kwal wal --help" "$KWAL" wal --help
expect 0 "kwal config -c FILE" "$KWAL" config -c "$T/kwal.conf"
has "$OUT" "# $T/kwal.conf:3" "config shows where a value came from"
has "$OUT" "wal.write.quorum=2" "config shows the value from the file"
# Its output is itself a valid configuration file.
"$KWAL" config -c "$T/kwal.conf" >"$T/again.conf" 2>"$ERR" || fail "kwal config failed"
expect 0 "kwal config output read back as a config file" "$KWAL" config -c "$T/again.conf"
has "$OUT" "wal.dirs=$D/wal-0,$D/wal-1,$D/wal-2" "config round trip keeps wal.dirs"

echo "0001-wal-cli: all $checks checks passed"
