# lib_fault.sh -- WAL replica faults for the integration scripts (0033,
# 0034), sourced after lib.sh and lib_crash.sh (not a test itself: the ctest
# glob takes only NNNN-*.sh). Provides:
#   fault_conf DIR GROUP TOPIC   DIR/k.conf: 2 receivers, a WAL of 3 replicas
#                     DIR/w0 DIR/w1 DIR/w2 (replica R is DIR/wR) with
#                     wal.write.quorum=2, small blocks, sqlite sink DIR/out.db,
#                     short sessions (as lib_crash.sh's crash_conf)
#   wal_dirs DIR      "--dir DIR/w0 --dir DIR/w1 --dir DIR/w2" for kwal wal
#   fiu_send PID CMD...   libfiu remote-control commands to kwal process PID
#                     over the fifos $FIU-PID.in/.out (start kwal with
#                     KWAL_FIU_CTRL="$FIU"); fails unless the fifos exist,
#                     fiu-ctrl exits 0 and prints nothing (it reports
#                     rejected commands on stdout with exit status 0)
#   wait_log LOG PATTERN SECS DESC   until grep -E PATTERN matches LOG
#                     (bounded; fails if $KWPID dies meanwhile)
#   rec_pos DIR LSN   sets SEG (file name), OFF, SIZE of WAL record LSN
#                     (kwal wal dump)
#   flip_byte FILE OFFSET   replace the byte at OFFSET by its complement
#   corrupt_rec DIR LSN R...   flip the middle byte of record LSN's payload
#                     in replicas R... (sets SEG, OFF, SIZE, AT)
#   zk_offsets GROUP TOPIC [N]   "o0 o1 ..." ZooKeeper offsets of partitions
#                     0..N-1 (default 4), 0 where none is stored

command -v fiu-ctrl >/dev/null 2>&1 || fail "fiu-ctrl is not installed (Debian fiu-utils)"
command -v od >/dev/null 2>&1 || fail "od is not installed"

FIU="$T/fiu"

fault_conf() {
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
wal.dirs=$1/w0,$1/w1,$1/w2
wal.write.quorum=2
wal.segment.bytes=64K
block.max.bytes=16K
block.interval.ms=50
batch.interval.ms=200
sink=sqlite:$1/out.db
EOF
}

wal_dirs() {
    echo "--dir $1/w0 --dir $1/w1 --dir $1/w2"
}

fiu_send() {
    fpid=$1
    shift
    n=0
    until [ -p "$FIU-$fpid.in" ] && [ -p "$FIU-$fpid.out" ]; do
        n=$((n + 1))
        [ "$n" -lt 100 ] || fail "no libfiu control fifos $FIU-$fpid.in/.out after 10 s"
        kill -0 "$fpid" 2>/dev/null || fail "process $fpid died before fiu-ctrl"
        sleep 0.1
    done
    fdesc="$*"
    nc=$#
    for c in "$@"; do
        set -- "$@" -c "$c"
    done
    shift "$nc"
    fout=$(timeout 20 fiu-ctrl -f "$FIU" "$@" "$fpid" 2>&1)
    fst=$?
    [ "$fst" -eq 0 ] && [ -z "$fout" ] ||
        fail "fiu-ctrl '$fdesc' $fpid: exit $fst, output: $fout"
    ok "fiu-ctrl: $fdesc (kwal pid $fpid)"
}

wait_log() {
    n=0
    until grep -E -q -- "$2" "$1" 2>/dev/null; do
        n=$((n + 1))
        [ "$n" -lt $(($3 * 10)) ] || { showlog "$1"; fail "$4: not logged within $3 s"; }
        [ -z "$KWPID" ] || kill -0 "$KWPID" 2>/dev/null ||
            { showlog "$1"; fail "$4: kwal died first"; }
        sleep 0.1
    done
}

rec_pos() {
    line=$("$KW" wal dump $(wal_dirs "$1") --from "$2" --limit 1 2>/dev/null |
        awk -v l="$2" '$1 == l { print $2, $3, $4 }')
    [ -n "$line" ] || fail "kwal wal dump: no record with LSN $2 in $1"
    set -- $line
    SEG=$(printf '%020d.seg' "$1")
    OFF=$2
    SIZE=$3
}

flip_byte() {
    b=$(od -An -tu1 -j "$2" -N 1 "$1" | tr -d ' ')
    [ -n "$b" ] || fail "flip_byte: nothing at offset $2 of $1"
    # shellcheck disable=SC2059
    printf "\\$(printf '%03o' $((255 - b)))" |
        dd of="$1" bs=1 seek="$2" conv=notrunc 2>/dev/null || fail "flip_byte: dd on $1"
}

corrupt_rec() {
    cd_dir=$1 cd_lsn=$2
    shift 2
    rec_pos "$cd_dir" "$cd_lsn"
    AT=$((OFF + 32 + (SIZE - 32) / 2))
    for r in "$@"; do
        [ -f "$cd_dir/w$r/$SEG" ] || fail "corrupt_rec: no $cd_dir/w$r/$SEG"
        flip_byte "$cd_dir/w$r/$SEG" "$AT"
    done
}

zk_offsets() {
    zo= zp=0
    while [ "$zp" -lt "${3:-4}" ]; do
        zv=$(timeout 30 "$ZKL" get --connect "$ZK" "/consumers/$1/offsets/$2/$zp" 2>/dev/null)
        zo="$zo ${zv:-0}"
        zp=$((zp + 1))
    done
    echo "${zo# }"
}
