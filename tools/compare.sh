#!/bin/sh
# compare.sh (`kwal compare`) -- the semantics comparison of DESIGN.md
# ("Semantics to compare"): the same workload and the same fault schedule
# through each mode, and a report.
#
# Modes (each on a fresh topic, consumer group and output):
#   no-wal       kwal receive --no-wal     offsets stored as soon as received, no WAL
#   classic      kwal receive --classic    WAL, recovery without ZooKeeper repair
#   receive      kwal receive              WAL, recovery repairs ZooKeeper
#   direct       kwal direct               ranges stored with the output (sqlite)
#   direct-alo   kwal direct --at-least-once  offsets in ZooKeeper after the write
# The receive modes and direct-alo write to a file: sink (one file per batch:
# it does not deduplicate, so what is delivered twice is stored twice);
# direct needs the sqlite sink (its ranges live in the same transaction).
#
# The workload: kwal-loadgen produces --records records of --size bytes at
# --rate records/s (in the background, while the mode runs) to a topic of
# --partitions partitions. The schedule is a list of events, each ending one
# run of the mode, after which it is started again at once:
#   kill@S      SIGKILL S seconds (decimals allowed) after the run started
#               (in the first run: after the workload started, which waits
#               until the mode consumes)
#   window@N    crash (KWAL_CRASH_AT) the Nth time the run passes its mode's
#               "output durable, offset not yet stored" point: no-wal
#               pipeline.committed (offsets stored, records only in memory),
#               classic and receive pipeline.tracked (block in the WAL, its
#               offsets not in ZooKeeper), direct and direct-alo direct.stored
#               (batch in the sink, offsets not in ZooKeeper)
#   crash@P:N   KWAL_CRASH_AT=P:N for every mode (a mode that never passes P
#               runs on to the next event only when the workload is done)
# After the last event the mode runs until its ZooKeeper offsets cover every
# produced record (or --timeout), then gets SIGTERM.
#
# Per mode it reports: produced, stored (distinct records), missing,
# duplicates delivered (the sink's own count: records it got again and did
# not store again), duplicates stored (kwal-verify), throughput (stored
# records and MB per second of the mode's wall time, first start to the
# final stop: bounded by --rate), end-to-end latency p50/p99 (producer
# timestamp in the payload to the batch being durable in the output: the
# sqlite batch's committed_ms, a batch file's mtime), bytes written to disk
# per byte ingested (write_bytes of /proc/PID/io, sampled every 0.2 s, over
# every run, divided by stored records x size), and recovery time (the
# longest restart's "recovery: done in N ms"; "-" for modes without
# recovery). Output in --out DIR: compare.md (a Markdown table), compare.csv,
# compare.png (gnuplot), and per mode its logs and output.
#
# Exit status: 0 when every mode ran (whatever it lost: that is the result),
# 1 when a mode could not run or the report could not be made, 2 for bad
# arguments.
set -u

prog="kwal compare"
here=$(cd "$(dirname "$0")" && pwd)

usage() {
    cat <<EOF
Usage: kwal compare [options]

Runs the same workload and fault schedule through kwal's modes and writes a
report (Markdown table, CSV, chart). Without -c it starts a local ZooKeeper
and a local Kafka cluster itself.

Options:
  -c FILE             use the Kafka cluster and ZooKeeper of this kwal
                      configuration (kafka.bootstrap.servers,
                      zookeeper.connect); topics kwal-compare-<mode>-<time>
                      are created by producing to them
  -n, --records N     records per mode (default 30000)
  -s, --size B        payload bytes, 69.. (default 100)
  -p, --partitions P  partitions per topic (local cluster only; default 4)
  -r, --rate R        records per second produced (default 10000)
      --schedule LIST events, comma-separated (default window@3,kill@1.5):
                      kill@S, window@N, crash@POINT:N (see kwal compare
                      --help-schedule)
      --modes LIST    comma-separated subset of no-wal,classic,receive,
                      direct,direct-alo (default all, in that order)
  -o, --out DIR       report directory (default ./kwal-compare-<date-time>)
      --timeout S     bound for each mode to catch up after the workload
                      (default 120)
  -X KEY=VALUE        extra kwal setting for every run (repeatable)
  -q, --quiet         no progress display, only the table
      --help-schedule what the events mean
  -h, --help          this text
EOF
}

usage_schedule() {
    sed -n '/^# The workload/,/^# produced record/p' "$0" | sed 's/^# \{0,1\}//'
}

die_usage() {
    echo "kwal: compare: $*" >&2
    echo "Try 'kwal compare --help'." >&2
    exit 2
}

is_uint() {
    case $1 in
    '' | *[!0-9]*) return 1 ;;
    *) return 0 ;;
    esac
}

conf=""
records=30000
size=100
partitions=4
rate=10000
schedule="window@3,kill@1.5"
modes="no-wal,classic,receive,direct,direct-alo"
out=""
timeout_s=120
quiet=0
xargs_kw=""

while [ $# -gt 0 ]; do
    opt=$1
    case $opt in
    -h | --help) usage; exit 0 ;;
    --help-schedule) usage_schedule; exit 0 ;;
    -q | --quiet) quiet=1; shift; continue ;;
    -c | -n | --records | -s | --size | -p | --partitions | -r | --rate | --schedule | \
    --modes | -o | --out | --timeout | -X)
        [ $# -ge 2 ] || die_usage "$opt needs an argument"
        val=$2
        shift 2 ;;
    --*=*)
        val=${opt#*=}
        opt=${opt%%=*}
        shift ;;
    *) die_usage "unexpected argument '$opt'" ;;
    esac
    case $opt in
    -c) conf=$val ;;
    -n | --records) records=$val ;;
    -s | --size) size=$val ;;
    -p | --partitions) partitions=$val ;;
    -r | --rate) rate=$val ;;
    --schedule) schedule=$val ;;
    --modes) modes=$val ;;
    -o | --out) out=$val ;;
    --timeout) timeout_s=$val ;;
    -X)
        case $val in
        *=*) ;;
        *) die_usage "-X needs key=value, got '$val'" ;;
        esac
        case $val in
        *[[:space:]]*) die_usage "-X $val: no spaces, please" ;;
        esac
        xargs_kw="$xargs_kw -X $val" ;;
    *) die_usage "unknown option '$opt'" ;;
    esac
done

for pair in "records:$records" "size:$size" "partitions:$partitions" "rate:$rate" "timeout:$timeout_s"; do
    x=${pair#*:}
    # shellcheck disable=SC2015 # die_usage exits
    is_uint "$x" && [ "$x" -gt 0 ] || die_usage "--${pair%%:*} must be a positive integer, got '$x'"
done
[ "$size" -ge 69 ] || die_usage "--size must be at least 69 (kwal-loadgen's record format)"
for m in $(echo "$modes" | tr ',' ' '); do
    case $m in
    no-wal | classic | receive | direct | direct-alo) ;;
    *) die_usage "--modes: unknown mode '$m' (no-wal, classic, receive, direct, direct-alo)" ;;
    esac
done
for ev in $(echo "$schedule" | tr ',' ' '); do
    case $ev in
    kill@*)
        s=${ev#kill@}
        echo "$s" | grep -Eq '^[0-9]+(\.[0-9]+)?$' || die_usage "--schedule: '$ev': kill@SECONDS" ;;
    window@*)
        # shellcheck disable=SC2015
        is_uint "${ev#window@}" && [ "${ev#window@}" -gt 0 ] || die_usage "--schedule: '$ev': window@N, N >= 1" ;;
    crash@*:*)
        n=${ev##*:}
        # shellcheck disable=SC2015
        is_uint "$n" && [ "$n" -gt 0 ] || die_usage "--schedule: '$ev': crash@POINT:N, N >= 1" ;;
    *) die_usage "--schedule: unknown event '$ev' (kill@S, window@N, crash@POINT:N)" ;;
    esac
done

# the programs: next to this script when installed as build/tools/kwal-compare
bin=${KWAL_BIN_DIR:-$here}
KW=$bin/kwal
KL=$bin/kwal-kafka-mock
ZKL=$bin/kwal-zk-local
LG=$bin/kwal-loadgen
VF=$bin/kwal-verify
for t in "$KW" "$KL" "$ZKL" "$LG" "$VF"; do
    [ -x "$t" ] || { echo "kwal: compare: $t not found (build kwal first)" >&2; exit 1; }
done
for t in sqlite3 gnuplot awk timeout; do
    command -v "$t" >/dev/null 2>&1 ||
        { echo "kwal: compare: $t not found (tools/install-deps.sh installs it)" >&2; exit 1; }
done
for ev in $(echo "$schedule" | tr ',' ' '); do
    case $ev in
    crash@*)
        p=${ev#crash@}
        p=${p%:*}
        "$KW" --list-crash-points | grep -q "^$p " ||
            die_usage "--schedule: '$ev': no crash point '$p' (kwal --list-crash-points)" ;;
    esac
done

stamp=$(date +%Y%m%d-%H%M%S)
[ -n "$out" ] || out="./kwal-compare-$stamp"
mkdir -p "$out" || { echo "kwal: compare: cannot create $out" >&2; exit 1; }
out=$(cd "$out" && pwd)
case $out in
*[[:space:]]*) echo "kwal: compare: '$out' has whitespace" >&2; exit 1 ;;
esac

KWPID="" LGPID="" SAMPLERPID="" KLPID=""
cleanup() {
    trap - EXIT INT TERM
    for p in "$KWPID" "$LGPID" "$SAMPLERPID"; do
        [ -n "$p" ] && kill -KILL "$p" 2>/dev/null
    done
    if [ -n "$KLPID" ]; then
        kill -TERM "$KLPID" 2>/dev/null
        wait "$KLPID" 2>/dev/null
    fi
    [ -z "$conf" ] && [ -d "$out/zk" ] && timeout 60 "$ZKL" stop --dir "$out/zk" >/dev/null 2>&1
}
trap cleanup EXIT
trap 'echo "kwal: compare: interrupted" >&2; exit 130' INT
trap 'echo "kwal: compare: terminated" >&2; exit 143' TERM

progress() { [ "$quiet" = 1 ] || printf '%s\n' "$*" >&2; }
now_ms() { date +%s%3N; }

# --- the cluster ------------------------------------------------------------
if [ -n "$conf" ]; then
    [ -r "$conf" ] || die_usage "-c $conf: cannot read it"
    BS=$(sed -n 's/^[[:space:]]*kafka\.bootstrap\.servers[[:space:]]*=[[:space:]]*//p' "$conf" | tail -n 1)
    ZK=$(sed -n 's/^[[:space:]]*zookeeper\.connect[[:space:]]*=[[:space:]]*//p' "$conf" | tail -n 1)
    [ -n "$BS" ] && [ -n "$ZK" ] ||
        die_usage "-c $conf: needs kafka.bootstrap.servers and zookeeper.connect"
    progress "cluster: $BS, ZooKeeper $ZK (from $conf)"
else
    progress "starting a local ZooKeeper and a local Kafka cluster (3 brokers)..."
    timeout 60 "$ZKL" start --dir "$out/zk" >"$out/zk.out" 2>"$out/zk.err" ||
        { cat "$out/zk.err" >&2; echo "kwal: compare: kwal-zk-local start failed" >&2; exit 1; }
    ZK=$(cat "$out/zk/connect")
    set --
    for m in $(echo "$modes" | tr ',' ' '); do
        set -- "$@" --topic "kwal-compare-$m-$stamp:$partitions"
    done
    "$KL" --brokers 3 "$@" --bootstrap-file "$out/bs" --no-stdin >"$out/kl.out" 2>"$out/kl.err" &
    KLPID=$!
    n=0
    until [ -s "$out/bs" ]; do
        n=$((n + 1))
        [ "$n" -lt 200 ] || { cat "$out/kl.err" >&2; echo "kwal: compare: no cluster after 20 s" >&2; exit 1; }
        sleep 0.1
    done
    BS=$(cat "$out/bs")
    progress "cluster: $BS, ZooKeeper $ZK"
fi

# --- helpers ----------------------------------------------------------------

field() { echo "$2" | sed -n "s/.*[[:space:]]$1=\([0-9]*\).*/\1/p;s/^$1=\([0-9]*\).*/\1/p" | head -n 1; }

# zk_sum GROUP TOPIC: the ZooKeeper offsets of the topic's partitions, summed.
zk_sum() {
    timeout 30 "$ZKL" ls --connect "$ZK" "/consumers/$1/offsets/$2" 2>/dev/null |
    while read -r zp; do
        timeout 30 "$ZKL" get --connect "$ZK" "/consumers/$1/offsets/$2/$zp" 2>/dev/null
        echo
    done | awk '/^[0-9]+$/ { s += $1 } END { print s + 0 }'
}

# sample_io PID FILE: write_bytes of PID every 0.2 s into FILE (last value).
sample_io() {
    while kill -0 "$1" 2>/dev/null; do
        v=$(sed -n 's/^write_bytes: //p' "/proc/$1/io" 2>/dev/null)
        [ -n "$v" ] && echo "$v" >"$2"
        sleep 0.2
    done
}

window_point() {
    case $1 in
    no-wal) echo pipeline.committed ;;
    classic | receive) echo pipeline.tracked ;;
    *) echo direct.stored ;;
    esac
}

# start_run MODE DIR RUN [CRASHSPEC]: kwal in the background (KWPID), its
# write_bytes sampled into DIR/io.RUN.
start_run() {
    m=$1 d=$2 r=$3 crash=${4-}
    case $m in
    no-wal) set -- receive --no-wal ;;
    classic) set -- receive --classic ;;
    receive) set -- receive ;;
    direct) set -- direct ;;
    direct-alo) set -- direct --at-least-once ;;
    esac
    # shellcheck disable=SC2086 # xargs_kw: -X words
    if [ -n "$crash" ]; then
        KWAL_CRASH_AT=$crash "$KW" "$@" -c "$d/k.conf" $xargs_kw >"$d/run$r.out" 2>"$d/run$r.log" &
    else
        "$KW" "$@" -c "$d/k.conf" $xargs_kw >"$d/run$r.out" 2>"$d/run$r.log" &
    fi
    KWPID=$!
    sample_io "$KWPID" "$d/io.$r" &
    SAMPLERPID=$!
}

# end_run: reap kwal and the sampler; ST = kwal's exit status.
end_run() {
    wait "$KWPID" 2>/dev/null
    ST=$?
    KWPID=
    wait "$SAMPLERPID" 2>/dev/null
    SAMPLERPID=
}

# latency DIR MODE: "p50 p99" in ms, from the output.
latency() {
    if [ "$2" = direct ]; then
        sqlite3 "$1/out.db" "SELECT b.committed_ms - CAST(substr(CAST(r.payload AS TEXT), 37, 16) AS INTEGER) / 1000 FROM records r JOIN batches b ON b.id = r.batch" 2>/dev/null
    else
        find "$1/out" -name 'batch-*.jsonl' -printf '%T@ %p\n' 2>/dev/null |
        while read -r mt f; do
            awk -v mt="$mt" '{
                i = index($0, "\"payload\":\"kwal1 ");
                if (i == 0) next;
                split(substr($0, i + 17), w, " ");
                printf "%d\n", mt * 1000 - w[3] / 1000;
            }' "$f"
        done
    fi | sort -n | awk '{ v[NR] = $1 } END {
        if (NR == 0) { print "- -"; exit }
        i50 = int(NR * 0.50 + 0.5); if (i50 < 1) i50 = 1;
        i99 = int(NR * 0.99 + 0.5); if (i99 < 1) i99 = 1; if (i99 > NR) i99 = NR;
        print v[i50], v[i99] }'
}

# produce_when_ready: at the first run of a mode, once it consumes (its
# partitions assigned, or direct's first ranges planned; at most 30 s), start
# the workload in the background (LGPID, t0), so that the schedule's events
# fall while records arrive.
produce_when_ready() {
    [ -z "$LGPID" ] || return 0
    n=0
    until grep -q -E ' (assigned .* at |starts at offset )' "$d/run$r.log" 2>/dev/null; do
        n=$((n + 1))
        kill -0 "$KWPID" 2>/dev/null && [ "$n" -lt 300 ] || break
        sleep 0.1
    done
    progress "[$k/$nmodes] $m: producing $records records at $rate/s to $topic"
    "$LG" --brokers "$BS" --topic "$topic" --records "$records" --size "$size" --rate "$rate" \
        --manifest "$d/m" >"$d/lg.out" 2>"$d/lg.err" &
    LGPID=$!
    t0=$(now_ms)
}

# --- one mode ---------------------------------------------------------------

echo "mode,produced,stored,missing,dup_delivered,dup_stored,records_per_s,mb_per_s,latency_p50_ms,latency_p99_ms,disk_bytes_per_byte,recovery_ms" >"$out/compare.csv"
nmodes=$(echo "$modes" | tr ',' '\n' | grep -c .)
k=0
failed=0
for m in $(echo "$modes" | tr ',' ' '); do
    k=$((k + 1))
    d="$out/$m"
    mkdir -p "$d"
    topic="kwal-compare-$m-$stamp"
    group="kwal-compare-$m-$stamp"
    if [ "$m" = direct ]; then sink="sqlite:$d/out.db"; else sink="file:$d/out"; fi
    cat >"$d/k.conf" <<EOF
# kwal compare: mode $m
group.id=$group
topics=$topic
zookeeper.connect=$ZK
kafka.bootstrap.servers=$BS
auto.offset.reset=earliest
wal.dirs=$d/w0,$d/w1,$d/w2
sink=$sink
batch.interval.ms=1000
zookeeper.session.timeout.ms=6000
kafka.session.timeout.ms=6000
kafka.heartbeat.interval.ms=500
EOF
    LGPID=
    r=0
    rec_max=-
    for ev in $(echo "$schedule" | tr ',' ' '); do
        r=$((r + 1))
        case $ev in
        kill@*)
            start_run "$m" "$d" "$r"
            produce_when_ready
            ms=$(echo "${ev#kill@}" | awk '{ printf "%d", $1 * 1000 }')
            ts=$(now_ms)
            while kill -0 "$KWPID" 2>/dev/null && [ $(($(now_ms) - ts)) -lt "$ms" ]; do
                sleep 0.05
            done
            kill -KILL "$KWPID" 2>/dev/null
            how="SIGKILL after ${ev#kill@} s" ;;
        window@* | crash@*)
            if [ "${ev%%@*}" = window ]; then
                spec="$(window_point "$m"):${ev#window@}"
            else
                spec=${ev#crash@}
            fi
            start_run "$m" "$d" "$r" "$spec"
            produce_when_ready
            # a point never reached: on once the workload is in ZooKeeper
            while kill -0 "$KWPID" 2>/dev/null; do
                if ! kill -0 "$LGPID" 2>/dev/null && [ "$(zk_sum "$group" "$topic")" -ge "$records" ]; then
                    kill -KILL "$KWPID" 2>/dev/null
                    break
                fi
                sleep 0.2
            done
            how="crash at $spec" ;;
        esac
        end_run
        case $ST in
        99) how="$how (reached)" ;;
        137) ;;
        *) how="$how (exit $ST before it: see $d/run$r.log)" ;;
        esac
        progress "[$k/$nmodes] $m: run $r ended: $how"
    done
    # the final run: until ZooKeeper covers the workload, then SIGTERM
    r=$((r + 1))
    start_run "$m" "$d" "$r"
    produce_when_ready
    n=0
    caught=0
    while kill -0 "$KWPID" 2>/dev/null; do
        if ! kill -0 "$LGPID" 2>/dev/null; then
            [ "$(zk_sum "$group" "$topic")" -ge "$records" ] && { caught=1; break; }
            n=$((n + 1))
            [ "$n" -lt $((timeout_s * 5)) ] || break
        fi
        sleep 0.2
    done
    sleep 1.5           # a last batch interval
    kill -TERM "$KWPID" 2>/dev/null
    end_run
    t1=$(now_ms)
    wait "$LGPID" 2>/dev/null
    LGPID=
    if [ "$ST" -ne 0 ] || [ "$caught" = 0 ]; then
        progress "[$k/$nmodes] $m: FAILED: final run exit $ST, caught up: $caught (see $d/run$r.log)"
        failed=1
    fi

    # --- measure
    produced=$(sed -n 's/^delivered=//p' "$d/m" 2>/dev/null)
    [ -n "$produced" ] || produced=0
    if [ "$m" = direct ]; then
        vline=$("$VF" --manifest "$d/m" --sqlite "$d/out.db" 2>/dev/null | tail -n 1)
    else
        vline=$("$VF" --manifest "$d/m" --files "$d/out" 2>/dev/null | tail -n 1)
    fi
    echo "$vline" >"$d/verify.out"
    v_stored=$(field stored "$vline")
    v_missing=$(field missing "$vline")
    v_dups=$(field duplicates "$vline")
    [ -n "$v_stored" ] || { v_stored=0 v_missing=$produced v_dups=0; failed=1; }
    distinct=$((v_stored - v_dups))
    dup_del=$(cat "$d"/run*.log 2>/dev/null |
              sed -n 's/.* sink [a-z]*: batch [0-9]*: \([0-9]*\) duplicate deliveries.*/\1/p' |
              awk '{ s += $1 } END { print s + 0 }')
    rec=$(sed -n 's/.* recovery: done in \([0-9]*\) ms.*/\1/p' "$d"/run*.log 2>/dev/null | sort -n | tail -n 1)
    [ -n "$rec" ] || rec=-
    wall=$((t1 - t0))
    [ "$wall" -gt 0 ] || wall=1
    tput=$((distinct * 1000 / wall))
    mbs=$(awk -v n="$distinct" -v s="$size" -v w="$wall" 'BEGIN { printf "%.2f", n * s / 1048576 / (w / 1000) }')
    lat=$(latency "$d" "$m")
    io=$(cat "$d"/io.* 2>/dev/null | awk '{ s += $1 } END { print s + 0 }')
    dpb=$(awk -v io="$io" -v n="$distinct" -v s="$size" 'BEGIN { if (n > 0) printf "%.2f", io / (n * s); else print "-" }')
    echo "$m,$produced,$distinct,$v_missing,$dup_del,$v_dups,$tput,$mbs,${lat% *},${lat#* },$dpb,$rec" >>"$out/compare.csv"
    progress "[$k/$nmodes] $m: produced $produced, stored $distinct, missing $v_missing, duplicates delivered $dup_del, stored $v_dups"
done

# --- the report --------------------------------------------------------------
{
    echo "# kwal compare, $stamp"
    echo
    echo "Workload: $records records of $size B at $rate/s, $partitions partitions per topic. Schedule: $schedule. Cluster: $BS, ZooKeeper $ZK."
    echo
    echo "| mode | produced | stored | missing | dup. delivered | dup. stored | records/s | MB/s | latency p50 ms | latency p99 ms | disk B / B | recovery ms |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    tail -n +2 "$out/compare.csv" | awk -F, '{ printf "| %s |", $1; for (i = 2; i <= NF; i++) printf " %s |", $i; printf "\n" }'
    echo
    echo "stored: distinct records in the output; dup. stored: extra copies there (kwal-verify);"
    echo "dup. delivered: records the sink received again and did not store again; records/s"
    echo "and MB/s over the mode's wall time (bounded by the producer's rate); latency: producer"
    echo "timestamp to the batch durable in the output; disk B / B: bytes kwal wrote to storage"
    echo "(/proc/PID/io write_bytes) per byte stored."
} >"$out/compare.md"

# the chart: four panels, one bar per mode
awk -F, 'NR > 1 { gsub(/-/, "0", $9); gsub(/-/, "0", $10); print NR - 1, $1, $4, $6, $7, $10 }' "$out/compare.csv" >"$out/chart.dat"
cat >"$out/chart.gp" <<EOF
set terminal pngcairo size 1200,800 font ",10" noenhanced
set output "$out/compare.png"
set multiplot layout 2,2 title "kwal compare: $records records at $rate/s, schedule $schedule"
set style fill solid 0.6
set boxwidth 0.6
set xtics rotate by -20
set yrange [0:*]
set grid ytics
unset key
set title "missing records (lost)"
plot "$out/chart.dat" using 1:3:xtic(2) with boxes lc rgb "#c0392b"
set title "duplicates stored"
plot "$out/chart.dat" using 1:4:xtic(2) with boxes lc rgb "#e67e22"
set title "throughput (records/s)"
plot "$out/chart.dat" using 1:5:xtic(2) with boxes lc rgb "#2980b9"
set title "end-to-end latency p99 (ms)"
plot "$out/chart.dat" using 1:6:xtic(2) with boxes lc rgb "#27ae60"
unset multiplot
EOF
gnuplot "$out/chart.gp" 2>"$out/gnuplot.err" || { cat "$out/gnuplot.err" >&2; failed=1; }

cat "$out/compare.md"
echo
echo "report: $out/compare.md, $out/compare.csv, $out/compare.png"
[ "$failed" = 0 ] || { echo "kwal: compare: some modes did not run to the end (see above)" >&2; exit 1; }
exit 0
