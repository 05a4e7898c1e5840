#!/bin/sh
# bench_receive.sh -- receiver mode's end-to-end throughput next to kcat.
#
# Records/s ingested end to end by `kwal receive` (WAL on, 1 replica, `null`
# sink) next to `kcat -G` consuming the same topic to /dev/null, in the same
# run, as a ratio. `--help` has the options; in short:
#
#   1. starts a local ZooKeeper (kwal-zk-local) and a local Kafka cluster
#      (kwal-kafka-mock) with one topic of P partitions;
#   2. produces the workload once, flat out, with kwal-loadgen (keyed, so
#      the partitions fill evenly), then reads the whole topic once with
#      `kcat -C` to check it: N records, every partition starting at
#      offset 0 (the mock cluster keeps ~5 MiB and 100,000 message sets per
#      partition and silently drops older data; this catches that);
#   3. K times, alternating so that machine noise hits both alike:
#      a. kcat: `kcat -G <fresh group> -b BS -o beginning -e TOPIC >/dev/null`,
#         timed from start to exit. kcat 1.7.1 in -G mode with -e exits once
#         every assigned partition has reached its end (it counts
#         PARTITION_EOF events against the assignment), and -o beginning
#         starts every assigned partition at its first offset. -q is not
#         given because kcat's stderr at the default verbosity is how the run
#         is checked: one "Reached end of topic T [p] at offset X" line per
#         partition, X must equal the partition's record count (from step 2:
#         it started at 0 and read up to the end, so it read all N records),
#         and the exit status must be 0. That is ~35 lines, no cost.
#      b. kwal: `kwal receive` with a fresh group.id, a fresh 1-replica WAL,
#         sink=null, auto.offset.reset=earliest, timed from start until every
#         offset is committed in ZooKeeper. kwal runs at log.level=debug so
#         that its pipeline logs one line per block after the block's
#         offsets are in ZooKeeper ("pipeline: block R/S: lsn L, N records,
#         ..."); the script sums those (cheap: one line per block) and, once
#         they reach N, reads /consumers/<group>/offsets/<topic>/<p> for
#         every partition with `kwal-zk-local get`: every one must equal the
#         partition's record count. The end time is the timestamp of the log
#         line that completed N (kwal's own clock, ms). Should the debug line
#         ever change, the script falls back to polling ZooKeeper every 2 s
#         (end time = when the poll saw N; coarser). kwal is then stopped with
#         SIGTERM; it must exit 0 and log "stopped: N records received".
#   4. prints, per run, records/s and MB/s (payload bytes, MB = 10^6 B) for
#      both and the ratio kwal/kcat per pair; then the medians and one
#      summary line starting with "bench_receive:".
#
# Both times include process start and the consumer group's join. The
# librdkafka mock cluster holds a fresh group's first join for 3 s (like a
# broker's group.initial.rebalance.delay.ms), for kcat and kwal alike, which
# pulls the end-to-end ratio towards 1. Each run
# therefore also shows the time from partition assignment to the end ("after
# assignment": kcat's "rebalanced ... assigned" line, kwal's first
# "receiver-N: assigned" line) and its ratio.
#
# What kwal's defaults do here: a receiver cuts a block every
# block.interval.ms (200) or at block.max.bytes (4M); each block is appended
# to the WAL (fdatasync) and only then are its offsets written to ZooKeeper,
# so the tail of a run waits at most one block interval plus one append. The
# batch scheduler (batch.interval.ms, 2000) reads the durable blocks back
# from the WAL and hands them to the sink; it adds latency to the sink, not
# to the offsets in ZooKeeper that end the measurement, but its reading back
# competes for the CPU while the run is on. `-X key=value` passes any kwal
# setting to try others.
#
# librdkafka's consumer defaults shape both numbers as much as either program
# does: a consumer stops fetching for a while whenever its queue holds
# queued.min.messages (100,000) records, so a single consumer alternates
# bursts and pauses and its times scatter widely (kwal with receivers=R has R
# consumers, hence R such queues). `--rdkafka queued.min.messages=10000000`,
# given to kcat and kwal alike, lifts that limit: both then run at the speed
# of the local cluster and the pairs agree far better.
#
# Cleans up everything it started on exit (SIGTERM, then SIGKILL after a
# bounded wait); the work directory is removed unless --keep. Exit status: 0
# when every run completed and was verified, 1 otherwise, 2 for bad
# arguments.
set -eu

prog=bench_receive.sh
here=$(cd "$(dirname "$0")/.." && pwd)

usage() {
    cat <<EOF
Usage: tools/$prog [options]

Receiver mode's end-to-end throughput: N records of B bytes over P partitions
ingested by \`kwal receive\` (WAL on, 1 replica, sink=null) from start until
every offset is committed in ZooKeeper, next to \`kcat -G GROUP -o beginning -e\`
consuming the same topic to /dev/null, alternating kcat, kwal, kcat, kwal, ...
K times on a local ZooKeeper and a local (mock) Kafka cluster. Prints records/s
and MB/s per run, the ratio kwal/kcat per pair and the median ratio.

Options:
  -n, --records N     records to produce (default 1000000)
  -s, --size B        payload bytes per record, >= 69 (default 100)
  -p, --partitions P  partitions of the topic (default 32)
  -r, --receivers R   kwal receiver threads, receivers=R (default 1)
  -k, --repeat K      kcat/kwal pairs (default 3)
      --brokers N     brokers of the local Kafka cluster (default 3)
      --build DIR     build directory, relative to the repository or absolute
                      (default build; binaries in DIR/tools)
      --dir DIR       where the work directory (WALs, logs) is created, as a
                      new kwal-bench-receive.XXXXXX inside (default \${TMPDIR:-/tmp})
      --timeout S     bound, in seconds, for each run, the production and
                      the topic check (default 600)
  -X KEY=VALUE        extra kwal setting (repeatable), e.g.
                      -X block.interval.ms=50 -X batch.interval.ms=10000
      --rdkafka KEY=VALUE
                      librdkafka consumer property for both sides
                      (repeatable): kcat -X KEY=VALUE and kwal
                      kafka.KEY=VALUE, e.g. --rdkafka queued.min.messages=1000000
      --keep          keep the work directory (logs, WALs, configurations)
  -h, --help          this text

Each run is verified: kcat must exit 0 having reached the end of every
partition from offset 0 (its stderr lines "Reached end of topic ... at offset
X", X = the partition's record count); kwal's offsets in ZooKeeper must equal
every partition's record count, and after SIGTERM it must exit 0 having
received exactly N records. The last line is one summary, e.g.

  bench_receive: records=1000000 size=100 partitions=32 receivers=1 repeat=3
  kcat_rps=... kwal_rps=... ratio=... ratio_after_assign=... status=ok

(one line; rps and ratios are medians). Exit 0 when every run was verified,
1 otherwise, 2 for bad arguments.
EOF
}

die_usage() {
    echo "$prog: $*" >&2
    echo "Try 'tools/$prog --help'." >&2
    exit 2
}

is_uint() {
    case $1 in
    '' | *[!0-9]*) return 1 ;;
    *) return 0 ;;
    esac
}

records=1000000
size=100
partitions=32
receivers=1
repeat=3
brokers=3
build=build
workdir=""
timeout_s=600
keep=0
xconf=""        # newline-separated kwal settings from -X
rdconf=""       # newline-separated librdkafka properties from --rdkafka

while [ $# -gt 0 ]; do
    opt=$1
    case $opt in
    -h | --help) usage; exit 0 ;;
    --keep) keep=1; shift; continue ;;
    -n | --records | -s | --size | -p | --partitions | -r | --receivers | \
    -k | --repeat | --brokers | --build | --dir | --timeout | -X | --rdkafka)
        [ $# -ge 2 ] || die_usage "$opt needs an argument"
        val=$2
        shift 2 ;;
    --*=*)
        val=${opt#*=}
        opt=${opt%%=*}
        shift ;;
    -*) die_usage "unknown option '$opt'" ;;
    *) die_usage "unexpected argument '$opt'" ;;
    esac
    case $opt in
    -n | --records) records=$val ;;
    -s | --size) size=$val ;;
    -p | --partitions) partitions=$val ;;
    -r | --receivers) receivers=$val ;;
    -k | --repeat) repeat=$val ;;
    --brokers) brokers=$val ;;
    --build) build=$val ;;
    --dir) workdir=$val ;;
    --timeout) timeout_s=$val ;;
    -X)
        case $val in
        *=*) ;;
        *) die_usage "-X needs key=value, got '$val'" ;;
        esac
        xconf="$xconf$val
" ;;
    --rdkafka)
        case $val in
        *=*) ;;
        *) die_usage "--rdkafka needs key=value, got '$val'" ;;
        esac
        rdconf="$rdconf$val
" ;;
    *) die_usage "unknown option '$opt'" ;;
    esac
done

# shellcheck disable=SC2015 # die_usage exits
for pair in "records:$records" "size:$size" "partitions:$partitions" \
            "receivers:$receivers" "repeat:$repeat" "brokers:$brokers" "timeout:$timeout_s"; do
    x=${pair#*:}
    is_uint "$x" && [ "$x" -gt 0 ] || die_usage "--${pair%%:*} must be a positive integer, got '$x'"
done
[ "$size" -ge 69 ] || die_usage "--size must be at least 69 (kwal-loadgen's record format)"

case $build in
/*) bin=$build/tools ;;
*) bin=$here/$build/tools ;;
esac
for t in kwal kwal-loadgen kwal-kafka-mock kwal-zk-local; do
    [ -x "$bin/$t" ] || { echo "$prog: $bin/$t not found; build first (cmake --build $build)" >&2; exit 1; }
done
for t in kcat timeout awk; do
    command -v "$t" >/dev/null 2>&1 || { echo "$prog: $t not found (tools/install-deps.sh)" >&2; exit 1; }
done
date -u -d 2000-01-01T00:00:00.250Z +%s.%N >/dev/null 2>&1 ||
    { echo "$prog: needs GNU date (date -d, +%N)" >&2; exit 1; }

# The mock keeps ~5 MiB per partition (the topic check below is what counts).
per_part=$(( (records * (size + 24)) / partitions ))
[ "$per_part" -le 5242880 ] ||
    echo "$prog: warning: ~$per_part bytes per partition may exceed the local cluster's" \
         "retention (~5 MiB per partition); use more --partitions" >&2

[ -z "$workdir" ] || mkdir -p "$workdir"
work=$(mktemp -d "${workdir:-${TMPDIR:-/tmp}}/kwal-bench-receive.XXXXXX")
topic=bench
kafka_pid=""
kwal_pid=""
zk_started=0

now() { date +%s.%N; }
# seconds between two epoch times, 3 decimals
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
# ISO-8601 UTC log timestamp (kwal's log) -> epoch seconds
iso_epoch() { date -u -d "$1" +%s.%N; }

# POSIX sh has no local variables: each function's own carry its prefix.

# stop_pid PID [GRACE]: SIGTERM a process we started, SIGKILL after GRACE s.
stop_pid() {
    sp_pid=$1
    sp_grace=${2:-10}
    kill -TERM "$sp_pid" 2>/dev/null || return 0
    sp_n=0
    while kill -0 "$sp_pid" 2>/dev/null; do
        sp_n=$((sp_n + 1))
        if [ "$sp_n" -gt $((sp_grace * 10)) ]; then
            kill -KILL "$sp_pid" 2>/dev/null || true
            break
        fi
        sleep 0.1
    done
}

cleanup() {
    trap - EXIT INT TERM
    if [ -s "$work/kcat.pid" ]; then
        stop_pid "$(cat "$work/kcat.pid")" 5
        rm -f "$work/kcat.pid"
    fi
    [ -z "$kwal_pid" ] || stop_pid "$kwal_pid" 30
    [ -z "$kafka_pid" ] || stop_pid "$kafka_pid" 10
    if [ "$zk_started" = 1 ]; then
        "$bin/kwal-zk-local" stop --dir "$work/zk" >/dev/null 2>&1 || true
    fi
    if [ "$keep" = 1 ]; then
        echo "kept $work"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
trap 'echo "$prog: interrupted" >&2; exit 130' INT
trap 'echo "$prog: terminated" >&2; exit 143' TERM

fail() {
    echo "$prog: $*" >&2
    exit 1
}

echo "==> bench_receive: $records records of $size B over $partitions partitions," \
     "kwal receivers=$receivers, $repeat kcat/kwal pair(s)"
echo "    $("$bin/kwal" --version 2>/dev/null | head -1) ($bin)," \
     "$(kcat -V 2>&1 | sed -n 's/^Version \([^ ]*\).*librdkafka \([^ ]*\).*/kcat \1 (librdkafka \2)/p')," \
     "$(nproc 2>/dev/null || echo '?') CPUs, load $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')"
echo "    work directory $work"

# --------------------------------------------------------------- set-up --

zk=$("$bin/kwal-zk-local" start --dir "$work/zk" --timeout 60) ||
    fail "kwal-zk-local did not start (its log: $work/zk/zookeeper.log; --keep keeps it)"
zk_started=1

"$bin/kwal-kafka-mock" --brokers "$brokers" --topic "$topic:$partitions" \
    --bootstrap-file "$work/bootstrap" --no-stdin \
    >"$work/kafka.out" 2>"$work/kafka.log" </dev/null &
kafka_pid=$!
n=0
while [ ! -s "$work/bootstrap" ]; do
    n=$((n + 1))
    kill -0 "$kafka_pid" 2>/dev/null || { cat "$work/kafka.log" >&2; fail "kwal-kafka-mock exited"; }
    [ "$n" -le 300 ] || fail "kwal-kafka-mock did not start within 30 s"
    sleep 0.1
done
bs=$(cat "$work/bootstrap")
echo "    ZooKeeper $zk; Kafka $bs ($brokers broker(s), topic $topic, $partitions partitions)"

t0=$(now)
timeout "$timeout_s" "$bin/kwal-loadgen" --brokers "$bs" --topic "$topic" \
    --records "$records" --size "$size" --manifest "$work/manifest" --quiet \
    >"$work/loadgen.log" 2>&1 </dev/null ||
    { cat "$work/loadgen.log" >&2; fail "kwal-loadgen failed"; }
t1=$(now)
echo "    produced $records records in $(elapsed "$t0" "$t1") s (kwal-loadgen, flat out)"

# The topic as it is: per partition its record count, first and last offset.
timeout "$timeout_s" kcat -C -b "$bs" -t "$topic" -o beginning -e -q -f '%p %o\n' \
    2>"$work/check.err" </dev/null |
    awk '{ n[$1]++; if (!($1 in lo) || $2 < lo[$1]) lo[$1] = $2; if ($2 > hi[$1]) hi[$1] = $2 }
         END { for (p in n) print p, n[p], lo[p], hi[p] }' | sort -n >"$work/partitions"
awk -v n="$records" -v np="$partitions" '
    { total += $2; parts++; if ($3 != 0 || $4 + 1 != $2) bad = bad " " $1 }
    END {
        if (total != n || parts != np || bad != "") {
            printf "topic check: %d records in %d partitions (expected %d in %d)%s\n",
                   total, parts, n, np, bad != "" ? "; partitions not from 0 or with gaps:" bad : ""
            exit 1
        }
    }' "$work/partitions" >"$work/check.out" ||
    fail "$(cat "$work/check.out" "$work/check.err")" \
         "-- did the local cluster drop data (retention)? use more --partitions"
min_p=$(awk 'NR == 1 || $2 < m { m = $2 } END { print m }' "$work/partitions")
max_p=$(awk '$2 > m { m = $2 } END { print m }' "$work/partitions")
echo "    topic checked with kcat -C: $records records, $min_p..$max_p per partition," \
     "every partition from offset 0"

# ----------------------------------------------------------------- runs --

payload_mb=$(awk -v n="$records" -v s="$size" 'BEGIN { print n * s / 1e6 }')

# rates SECONDS: "<records/s> <MB/s>" for the N records
rates() {
    awk -v t="$1" -v n="$records" -v mb="$payload_mb" \
        'BEGIN { if (t <= 0) t = 0.001; printf "%.0f %.1f\n", n / t, mb / t }'
}

# run_kcat RUN: sets kc_time and kc_after (seconds); 1 if the run failed
run_kcat() {
    rk_d=$work/run-$1
    rk_group=bench-kcat-$1-$$
    mkdir -p "$rk_d"
    rm -f "$work/kcat.pid"
    rk_t0=$(now)
    (
        set --
        IFS='
'
        for kv in $rdconf; do
            set -- "$@" -X "$kv"
        done
        unset IFS
        timeout "$timeout_s" kcat -G "$rk_group" -b "$bs" -o beginning -e "$@" "$topic" \
            2>&1 >/dev/null </dev/null &
        echo $! >"$work/kcat.pid"
        rc=0
        wait $! || rc=$?
        echo "- kcat-exit $rc $(date +%s.%N)"
    ) | while IFS= read -r line; do
        # stamp only the assignment line (one `date` per run, not one per line)
        case $line in
        *rebalanced*assigned:*) echo "$(date +%s.%N) $line" ;;
        *) echo "- $line" ;;
        esac
    done >"$rk_d/kcat.err" &
    rk_job=$!
    wait "$rk_job" || true
    rm -f "$work/kcat.pid"
    rk_rc=$(awk '$3 == "kcat-exit" { print $4 }' "$rk_d/kcat.err")
    rk_t1=$(awk '$3 == "kcat-exit" { print $5 }' "$rk_d/kcat.err")
    rk_ta=$(awk '$1 != "-" { print $1; exit }' "$rk_d/kcat.err")
    if [ "$rk_rc" != 0 ] || [ -z "$rk_t1" ]; then
        echo "    run $1 kcat: failed, exit ${rk_rc:-?} (124: timed out after $timeout_s s):" >&2
        tail -5 "$rk_d/kcat.err" >&2
        return 1
    fi
    # every partition read to its end, which is its record count (from 0)
    if ! awk 'NR == FNR { want[$1] = $2; next }
              /Reached end of topic/ {
                  p = $0; sub(/.*\[/, "", p); sub(/\].*/, "", p)
                  o = $0; sub(/.* at offset /, "", o); sub(/[^0-9].*/, "", o)
                  got[p] = o
              }
              END {
                  for (p in want) if (got[p] != want[p]) bad = bad " " p ":" got[p] "/" want[p]
                  if (bad != "") { print "partitions not read to the end (got/want):" bad; exit 1 }
              }' "$work/partitions" "$rk_d/kcat.err" >"$rk_d/kcat.check"; then
        echo "    run $1 kcat: $(cat "$rk_d/kcat.check")" >&2
        return 1
    fi
    kc_time=$(elapsed "$rk_t0" "$rk_t1")
    kc_after=0
    [ -z "$rk_ta" ] || kc_after=$(elapsed "$rk_ta" "$rk_t1")
    return 0
}

# offsets_ok GROUP FILE: writes "partition offset" lines for GROUP's offsets
# in ZooKeeper to FILE; 0 if every one equals its partition's record count.
offsets_ok() {
    oo_p=0
    : >"$2"
    while [ "$oo_p" -lt "$partitions" ]; do
        oo_v=$("$bin/kwal-zk-local" get --connect "$zk" --timeout 5 \
               "/consumers/$1/offsets/$topic/$oo_p" 2>/dev/null) || oo_v=none
        echo "$oo_p $oo_v" >>"$2"
        oo_p=$((oo_p + 1))
    done
    awk 'NR == FNR { want[$1] = $2; next } $2 != want[$1] { bad = 1 } END { exit bad }' \
        "$work/partitions" "$2"
}

# log_progress LOG: "<records committed> [<log time when they reached N>]"
# from the pipeline's debug line per block, logged once its offsets are in
# ZooKeeper: "... DEBUG pipeline: block R/S: lsn L, N records, B bytes".
log_progress() {
    awk -v n="$records" '
        / pipeline: block / && !/fenced/ && match($0, /, [0-9]+ records,/) {
            sum += substr($0, RSTART + 2, RLENGTH - 2) + 0
            if (sum >= n && at == "") at = $1
        }
        END { print sum + 0, at }' "$1"
}

# run_kwal RUN: sets kw_time and kw_after (seconds); 1 if the run failed
run_kwal() {
    rw_d=$work/run-$1
    rw_group=bench-kwal-$1-$$
    mkdir -p "$rw_d"
    {
        echo "# tools/bench/bench_receive.sh, run $1"
        echo "group.id=$rw_group"
        echo "topics=$topic"
        echo "receivers=$receivers"
        echo "zookeeper.connect=$zk"
        echo "kafka.bootstrap.servers=$bs"
        echo "auto.offset.reset=earliest"
        echo "wal.dirs=$rw_d/wal"
        echo "sink=null"
        echo "log.level=debug"
        printf '%s' "$rdconf" | sed 's/^/kafka./'
        printf '%s' "$xconf"
    } >"$rw_d/kwal.conf"
    rw_t0=$(now)
    "$bin/kwal" receive -c "$rw_d/kwal.conf" 2>"$rw_d/kwal.log" </dev/null &
    kwal_pid=$!
    rw_deadline=$(( $(date +%s) + timeout_s ))
    rw_t1=""
    rw_polls=0
    while :; do
        if ! kill -0 "$kwal_pid" 2>/dev/null; then
            wait "$kwal_pid" || true
            kwal_pid=""
            echo "    run $1 kwal: kwal receive exited early:" >&2
            tail -5 "$rw_d/kwal.log" >&2
            return 1
        fi
        rw_prog=$(log_progress "$rw_d/kwal.log")
        rw_sum=${rw_prog%% *}
        rw_at=${rw_prog#* }
        if [ "$rw_sum" -ge "$records" ] && [ -n "$rw_at" ]; then
            if offsets_ok "$rw_group" "$rw_d/offsets"; then
                rw_t1=$(iso_epoch "$rw_at")
                break
            fi
        elif [ "$rw_sum" -eq 0 ]; then
            # no pipeline lines (yet): fall back to ZooKeeper every 2 s
            rw_polls=$((rw_polls + 1))
            if [ $((rw_polls % 20)) -eq 0 ] && offsets_ok "$rw_group" "$rw_d/offsets"; then
                rw_t1=$(now)
                echo "    (run $1 kwal: no pipeline lines in its log; end time from polling ZooKeeper)"
                break
            fi
        fi
        if [ "$(date +%s)" -ge "$rw_deadline" ]; then
            echo "    run $1 kwal: not every offset in ZooKeeper after $timeout_s s" \
                 "(its log: $rw_sum records committed; $rw_d/offsets)" >&2
            stop_pid "$kwal_pid" 30
            kwal_pid=""
            return 1
        fi
        sleep 0.1
    done
    rw_ta=$(awk '/ receiver-[0-9]+: assigned / { print $1; exit }' "$rw_d/kwal.log")
    kill -TERM "$kwal_pid" 2>/dev/null || true
    rw_n=0
    while kill -0 "$kwal_pid" 2>/dev/null && [ "$rw_n" -lt 600 ]; do
        rw_n=$((rw_n + 1))
        sleep 0.1
    done
    rw_rc=0
    if kill -0 "$kwal_pid" 2>/dev/null; then
        echo "    run $1 kwal: still running 60 s after SIGTERM; killing it" >&2
        kill -KILL "$kwal_pid" 2>/dev/null || true
    fi
    wait "$kwal_pid" || rw_rc=$?
    kwal_pid=""
    rw_received=$(sed -n 's/.* stopped: \([0-9]*\) records received.*/\1/p' "$rw_d/kwal.log" | tail -1)
    if [ "$rw_rc" != 0 ] || [ "$rw_received" != "$records" ]; then
        echo "    run $1 kwal: exit $rw_rc after SIGTERM, ${rw_received:-?} records" \
             "received (expected $records):" >&2
        tail -5 "$rw_d/kwal.log" >&2
        return 1
    fi
    kw_time=$(elapsed "$rw_t0" "$rw_t1")
    kw_after=0
    [ -z "$rw_ta" ] || kw_after=$(elapsed "$(iso_epoch "$rw_ta")" "$rw_t1")
    [ "$keep" = 1 ] || rm -rf "$rw_d/wal"
    return 0
}

status=ok
: >"$work/results"
run=1
while [ "$run" -le "$repeat" ]; do
    if run_kcat "$run"; then
        # shellcheck disable=SC2046 # split on purpose: two numbers each
        set -- $(rates "$kc_time") $(rates "$kc_after")
        printf '    run %d/%d kcat: %7.3f s %8s rec/s %6s MB/s  (after assignment %6.3f s %8s rec/s)\n' \
            "$run" "$repeat" "$kc_time" "$1" "$2" "$kc_after" "$3"
        if run_kwal "$run"; then
            ratio=$(awk -v a="$kc_time" -v b="$kw_time" 'BEGIN { printf "%.3f", a / b }')
            ratio_a=$(awk -v a="$kc_after" -v b="$kw_after" \
                      'BEGIN { printf "%.3f", (a > 0 && b > 0) ? a / b : 0 }')
            # shellcheck disable=SC2046
            set -- $(rates "$kw_time") $(rates "$kw_after")
            printf '    run %d/%d kwal: %7.3f s %8s rec/s %6s MB/s  (after assignment %6.3f s %8s rec/s)  kwal/kcat %s (after assignment %s)\n' \
                "$run" "$repeat" "$kw_time" "$1" "$2" "$kw_after" "$3" "$ratio" "$ratio_a"
            echo "$kc_time $kw_time $kc_after $kw_after $ratio $ratio_a" >>"$work/results"
        else
            status=failed
        fi
    else
        status=failed
    fi
    run=$((run + 1))
done

# -------------------------------------------------------------- summary --

pairs=$(wc -l <"$work/results")
summary="records=$records size=$size partitions=$partitions receivers=$receivers"
summary="$summary repeat=$repeat pairs=$pairs"
[ -z "$rdconf" ] || summary="$summary rdkafka=$(printf '%s' "$rdconf" | tr '\n' ',' | sed 's/,$//')"
[ -z "$xconf" ] || summary="$summary kwal_settings=$(printf '%s' "$xconf" | tr '\n' ',' | sed 's/,$//')"
if [ "$pairs" -eq 0 ]; then
    echo "bench_receive: $summary status=failed"
    exit 1
fi
median() {   # median of column $1 of the results
    awk -v c="$1" '{ print $c }' "$work/results" | sort -g |
        awk '{ v[NR] = $1 }
             END { printf "%.3f\n", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
# shellcheck disable=SC2046
set -- $(rates "$(median 1)") $(rates "$(median 2)")
kc_rps=$1 kc_mbs=$2 kw_rps=$3 kw_mbs=$4
ratio=$(median 5)
ratio_a=$(median 6)
echo "    medians of $pairs pair(s): kcat $kc_rps rec/s ($kc_mbs MB/s), kwal $kw_rps rec/s" \
     "($kw_mbs MB/s); kwal/kcat $ratio end to end, $ratio_a after assignment"
echo "bench_receive: $summary kcat_rps=$kc_rps kcat_mbs=$kc_mbs kwal_rps=$kw_rps" \
     "kwal_mbs=$kw_mbs ratio=$ratio ratio_after_assign=$ratio_a status=$status"
[ "$status" = ok ]
