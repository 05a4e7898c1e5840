#!/bin/sh
# chaos.sh -- crash trials for `kwal receive`: kill it, break things around
# it, restart it, and check that the sink ends up with every record exactly
# once (DESIGN.md, invariants 1-3; "Crash points and fault injection").
#
# One local ZooKeeper (kwal-zk-local, --tick-ms 500) and one local Kafka
# cluster (kwal-kafka-mock, 3 brokers, a --control socket) serve the whole
# run (with --jobs J, J pairs of them: J trials run side by side, one per
# pair, so that one trial's faults never touch another). Each trial gets a
# fresh topic (created over the control socket), a fresh consumer group, a
# fresh 3-replica WAL (write quorum 2) and a fresh SQLite sink, and a plan
# drawn from a deterministic PRNG seeded from (seed, trial), so that
# `--seed S --trial K` draws trial K's plan again (`--plans` prints plans):
#
#   produce   up front (kwal-loadgen before kwal starts) or during (kwal-loadgen
#             --rate in the background for 3-10 s, across the kills);
#   kills     1-3 runs of `kwal receive` that end abruptly, each either
#             SIGKILL after a random delay (0.2-7 s from start: recovery,
#             group join, consumption) or a crash point from
#             `kwal --list-crash-points` with a random pass count
#             (KWAL_CRASH_AT=point:nth; exit 99). A crash point that is not
#             reached once every record is stored and 0.2-7 s have passed
#             gets SIGTERM (the stop path passes receiver.revoke and the
#             last batch); it may then crash on the way out or exit 0. Some
#             kill runs hold their batches back (batch.interval.ms=60000;
#             "everything in" then means every offset in ZooKeeper) so that
#             the next recovery has a backlog to replay (recovery.replay is
#             drawn only after such a run);
#   fault     none, or one of: a WAL replica's writes, short writes or fsyncs
#             failing (libfiu through fiu-ctrl, KWAL_FIU_CTRL; one replica of
#             three, quorum 2; the replica is then possibly rebuilt with
#             `kwal wal repair` once that run is over), a WAL replica made
#             slow (wal/replicaR/delay), a Kafka broker slowed (`rtt`) or
#             taken down and up again (`broker down`/`up`; the producer is
#             frozen for 1 s around `down`, see 0022-receive-broker-down.sh
#             for why), or ZooKeeper restarted (kwal-zk-local restart) --
#             at a random moment of a random run;
#   final     one last run until every record is stored, then SIGTERM: exit 0
#             required.
#
# Then it verifies: kwal-verify --manifest --sqlite (produced, stored, missing,
# duplicates stored); duplicate deliveries summed from every run's log (the
# sink's "batch B: N duplicate deliveries" lines, recovery's and the
# batcher's alike); the recovery time of every restart ("recovery: done in N
# ms"); every partition's offset in ZooKeeper against its end offset in the
# sink; and `kwal wal verify` on the closed WAL (only the replica the plan
# failed, if not repaired, may be reported). A trial fails on any missing
# record, any duplicate stored (beyond duplicates Kafka itself holds: the mock
# can append a retried produce twice), any ZooKeeper offset that is not the
# end offset, any unexpected exit of kwal (a run meant to be killed that ends
# by itself, a crash without its crash line, a non-zero exit after SIGTERM),
# a hang (not everything stored within --timeout, or no exit 60 s after
# SIGTERM), or a failed kwal wal repair / verify. A failed trial's directory
# (configuration, every run's log, fault log, WAL, sink) is kept. With
# --classic (Spark 1.2's recovery without ZooKeeper repair) duplicate
# deliveries are expected; nothing else changes.
#
# Exit status: 0 when every trial passed, 1 otherwise, 2 for bad arguments.
set -u

prog=chaos.sh
here=$(cd "$(dirname "$0")/.." && pwd)

usage() {
    cat <<EOF
Usage: tools/$prog [options]

Crash trials for \`kwal receive\` on a local ZooKeeper and a local Kafka
cluster. Each trial produces a workload, kills kwal 1-3 times (SIGKILL at a
random moment or a crash point), maybe injects one fault (WAL replica write,
short write or fsync failure, slow replica, slow or downed Kafka broker,
ZooKeeper restart), restarts it (recovery runs first), lets a last run store
everything, stops it with SIGTERM and verifies the sink against the producer.

Options:
  -n, --trials T      trials to run (default 20)
  -s, --seed S        seed, 0..999999999 (default: from the clock); printed,
                      with the trial number it re-draws a trial's plan
  -k, --trial K       run only trial K of seed S (with --seed; plan as in the
                      full run)
  -r, --records N     records per trial (default 3000)
  -p, --partitions P  partitions of each trial's topic (default 4)
  -j, --jobs J        trials run side by side, each slot with its own
                      ZooKeeper and Kafka cluster (default 1); most of a
                      trial is waiting for consumer-group sessions to expire,
                      so 2-4 save time even on 2 CPUs
      --build DIR     build directory, relative to the repository or absolute
                      (default build; binaries in DIR/tools)
      --dir DIR       where the work directory is created, as a new
                      kwal-chaos.XXXXXX inside (default \${TMPDIR:-/tmp})
      --timeout S     bound for each run to store every record, and for the
                      producer (default 120)
      --classic       run \`kwal receive --classic\` (no ZooKeeper repair in
                      recovery): duplicate deliveries are then expected
  -X KEY=VALUE        extra kwal setting for every run (repeatable)
      --keep          keep every trial's directory (logs, WAL, sink); a
                      failed trial's directory is always kept
  -q, --quiet         only the per-trial lines, the re-run hints and the total
      --plans         print the trials' plans and exit (starts nothing)
  -h, --help          this text

Per trial one line:
  trial K seed=S plan=... produced=N stored=N missing=0 dup_delivered=D
  dup_stored=0 recovery_ms=R zk=ok result=PASS
(recovery_ms: the longest recovery of the trial's restarts; dup_delivered:
records the sink received again and did not store twice), and at the end:
  chaos: seed=S trials=T passed=T failed=0 produced=... stored=... missing=0
  dup_delivered=... dup_stored=0 recovery_ms_max=... ... status=ok
A failed trial prints how to re-run it: tools/$prog --seed S --trial K --keep
(same plan; timing is the machine's). Soak: tools/$prog --trials 500 --jobs 2.

Exit 0 when every trial passed, 1 otherwise, 2 for bad arguments.
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

trials=20
jobs=1
seed=""
only_trial=""
records=3000
partitions=4
build=build
workdir=""
timeout_s=120
classic=0
plans_only=0
keep=0
quiet=0
xargs_kw=""      # " -X k=v" words for kwal receive (no spaces inside values)
argv_rerun=""    # options to repeat in a re-run hint

while [ $# -gt 0 ]; do
    opt=$1
    case $opt in
    -h | --help) usage; exit 0 ;;
    --keep) keep=1; shift; continue ;;
    --classic) classic=1; argv_rerun="$argv_rerun --classic"; shift; continue ;;
    -q | --quiet) quiet=1; shift; continue ;;
    --plans) plans_only=1; shift; continue ;;
    -n | --trials | -s | --seed | -k | --trial | -r | --records | -p | --partitions | \
    -j | --jobs | --build | --dir | --timeout | -X)
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
    -n | --trials) trials=$val ;;
    -s | --seed) seed=$val ;;
    -k | --trial) only_trial=$val ;;
    -j | --jobs) jobs=$val ;;
    -r | --records) records=$val; argv_rerun="$argv_rerun --records $val" ;;
    -p | --partitions) partitions=$val; argv_rerun="$argv_rerun --partitions $val" ;;
    --build) build=$val; argv_rerun="$argv_rerun --build $val" ;;
    --dir) workdir=$val ;;
    --timeout) timeout_s=$val; argv_rerun="$argv_rerun --timeout $val" ;;
    -X)
        case $val in
        *=*) ;;
        *) die_usage "-X needs key=value, got '$val'" ;;
        esac
        case $val in
        *[[:space:]]*) die_usage "-X $val: no spaces, please" ;;
        esac
        xargs_kw="$xargs_kw -X $val"
        argv_rerun="$argv_rerun -X $val" ;;
    *) die_usage "unknown option '$opt'" ;;
    esac
done

for pair in "trials:$trials" "jobs:$jobs" "records:$records" "partitions:$partitions" "timeout:$timeout_s"; do
    x=${pair#*:}
    # shellcheck disable=SC2015 # die_usage exits
    is_uint "$x" && [ "$x" -gt 0 ] || die_usage "--${pair%%:*} must be a positive integer, got '$x'"
done
[ "$records" -ge 10 ] || die_usage "--records must be at least 10"
if [ -n "$seed" ]; then
    # shellcheck disable=SC2015
    is_uint "$seed" && [ "${#seed}" -le 9 ] || die_usage "--seed must be 0..999999999, got '$seed'"
    seed=$(echo "$seed" | sed 's/^0*//; s/^$/0/')
fi
if [ -n "$only_trial" ]; then
    [ -n "$seed" ] || die_usage "--trial needs --seed (the seed of the run it comes from)"
    # shellcheck disable=SC2015
    is_uint "$only_trial" && [ "$only_trial" -gt 0 ] || die_usage "--trial must be a positive integer"
fi
[ -n "$seed" ] || seed=$(( ( $(date +%s%N) / 1000 + $$ ) % 1000000000 ))

case $build in
/*) bin=$build/tools ;;
*) bin=$here/$build/tools ;;
esac
KW=$bin/kwal
KL=$bin/kwal-kafka-mock
ZKL=$bin/kwal-zk-local
LG=$bin/kwal-loadgen
VF=$bin/kwal-verify
for t in "$KW" "$KL" "$ZKL" "$LG" "$VF"; do
    [ -x "$t" ] || { echo "$prog: $t not found; build first (cmake --build $build)" >&2; exit 1; }
done
for t in sqlite3 timeout fiu-ctrl awk; do
    command -v "$t" >/dev/null 2>&1 || { echo "$prog: $t not found (tools/install-deps.sh)" >&2; exit 1; }
done
have_kcat=0
command -v kcat >/dev/null 2>&1 && have_kcat=1
date +%s%3N | grep -q '^[0-9]*$' || { echo "$prog: needs GNU date (+%N)" >&2; exit 1; }

# The crash points kwal knows, in data-flow order.
points=$("$KW" --list-crash-points | sed -n '/^# libfiu/q;/^#/d;s/ .*//p')
[ -n "$points" ] || { echo "$prog: kwal --list-crash-points printed no points" >&2; exit 1; }
npoints=$(echo "$points" | wc -l)

[ -z "$workdir" ] || mkdir -p "$workdir"
work=$(mktemp -d "${workdir:-${TMPDIR:-/tmp}}/kwal-chaos.XXXXXX") ||
    { echo "$prog: cannot create a work directory" >&2; exit 1; }
case $work in
*[[:space:]]*) echo "$prog: work directory '$work' has whitespace" >&2; rm -rf "$work"; exit 1 ;;
esac

# ------------------------------------------------------------- processes --

slots_up=0       # slots whose ZooKeeper and cluster were started
KWPID=""         # kwal receive of the current run (in a trial's subshell)
LGPID=""         # background kwal-loadgen of the current trial
ZRPID=""         # background kwal-zk-local restart
failed_any=0

killwait() {     # killwait PID: SIGKILL a process we started, reap it
    if [ -n "$1" ] && kill -0 "$1" 2>/dev/null; then
        kill -KILL "$1" 2>/dev/null
    fi
    [ -z "$1" ] || wait "$1" 2>/dev/null
}

# trial_cleanup: what a trial's subshell started (on its exit, however)
trial_cleanup() {
    killwait "$KWPID"
    killwait "$LGPID"
    [ -z "$ZRPID" ] || wait "$ZRPID" 2>/dev/null
}

cleanup() {
    trap - EXIT INT TERM
    # trials still running (their subshells kill their kwal and producer)
    s=1
    while [ "$s" -le "$jobs" ]; do
        eval "cp=\${slot_pid_$s-}"
        if [ -n "$cp" ] && kill -0 "$cp" 2>/dev/null; then
            kill -TERM "$cp" 2>/dev/null
            wait "$cp" 2>/dev/null
        fi
        s=$((s + 1))
    done
    s=1
    while [ "$s" -le "$slots_up" ]; do
        eval "kp=\${kafka_pid_$s-}"
        if [ -n "$kp" ]; then
            kill -TERM "$kp" 2>/dev/null
            n=0
            while kill -0 "$kp" 2>/dev/null && [ "$n" -lt 100 ]; do
                n=$((n + 1))
                sleep 0.1
            done
            killwait "$kp"
        fi
        timeout 60 "$ZKL" stop --dir "$work/slot$s/zk" >/dev/null 2>&1
        s=$((s + 1))
    done
    if [ "$keep" = 1 ] || [ "$failed_any" = 1 ]; then
        echo "kept $work"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
trap 'echo "$prog: interrupted" >&2; exit 130' INT
trap 'echo "$prog: terminated" >&2; exit 143' TERM

say() { [ "$quiet" = 1 ] || echo "$@"; }
now_ms() { date +%s%3N; }

# --------------------------------------------------------------- the PRNG --
# A 31-bit LCG (glibc's constants) in shell arithmetic; a trial's state is
# seeded from (seed, trial) and mixed; rnd N draws 0..N-1 into R from the
# state's high bits.

RS=0
prng_init() {    # prng_init SEED TRIAL
    RS=$(( ($1 * 69069 + $2 * 362437 + 1013904223) % 2147483648 ))
    for _ in 1 2 3 4 5 6 7 8; do
        RS=$(( (RS * 1103515245 + 12345) % 2147483648 ))
    done
}
rnd() {
    RS=$(( (RS * 1103515245 + 12345) % 2147483648 ))
    R=$(( (RS / 65536) % $1 ))
}
rnd_range() {    # rnd_range LO HI: LO..HI into R
    rnd $(($2 - $1 + 1))
    R=$(($1 + R))
}

# ---------------------------------------------------------------- a trial --

# pick_nth POINT: a pass count for a crash point into R (what a 3000-record
# trial passes: a few dozen blocks, batches, WAL writes).
pick_nth() {
    case $1 in
    receiver.polled) rnd_range 1 "$records" ;;
    block.cut | wal.mid-write | wal.before-fsync | wal.before-ack | \
    pipeline.wal-acked | pipeline.tracked | pipeline.committed) rnd_range 1 20 ;;
    batch.allocated | sink.mid-txn | sink.committed) rnd_range 1 4 ;;
    wal.segment-roll | wal.cleanup | recovery.replay | receiver.revoke) rnd_range 1 2 ;;
    *) rnd_range 1 5 ;;
    esac
}

# plan_trial K: draws trial K's plan into P_* variables (nothing else
# consumes the PRNG, so the plan depends on (seed, K) only).
plan_trial() {
    prng_init "$seed" "$1"
    rnd 2
    if [ "$R" = 0 ]; then
        P_produce=upfront P_rate=0
        P_plan="produce=upfront"
    else
        rnd_range 3000 10000
        P_rate=$(( (records * 1000 + R - 1) / R ))
        P_produce=during
        P_plan="produce=during@${P_rate}/s"
    fi
    rnd_range 1 3
    P_kills=$R
    P_runs=$((P_kills + 1))
    i=1
    kplan=""
    prev_backlog=0
    while [ "$i" -le "$P_kills" ]; do
        rnd 2
        if [ "$R" = 0 ]; then
            rnd_range 200 7000
            eval "P_kind_$i=sigkill P_at_$i=$R P_point_$i="
            kw="sigkill@${R}ms"
        else
            rnd "$npoints"
            pt=$(echo "$points" | sed -n "$((R + 1))p")
            if [ "$pt" = recovery.replay ] && [ "$prev_backlog" = 0 ]; then
                # nothing to replay without a backlog: the run before holds one
                # (and, killed at a set time, runs past the group join first)
                if [ "$i" -gt 1 ]; then
                    eval "P_backlog_$((i - 1))=1 pk=\$P_kind_$((i - 1)) pa=\$P_at_$((i - 1))"
                    # shellcheck disable=SC2154 # pk, pa: set by the eval
                    if [ "$pk" = sigkill ] && [ "$pa" -lt 5000 ]; then
                        eval "P_at_$((i - 1))=$((pa + 5000))"
                        kplan=$(echo "$kplan" | sed "s/sigkill@${pa}ms\$/sigkill@$((pa + 5000))ms/")
                    fi
                    kplan="$kplan+backlog"
                else
                    rnd "$npoints"   # run 1 recovers an empty WAL: draw again
                    pt=$(echo "$points" | sed -n "$((R + 1))p")
                    [ "$pt" != recovery.replay ] || pt=pipeline.committed
                fi
            fi
            pick_nth "$pt"
            nth=$R
            rnd_range 200 7000     # not reached by then: SIGTERM once all is stored
            eval "P_kind_$i=crash P_at_$i=$R P_point_$i=$pt:$nth"
            kw="$pt:$nth"
        fi
        rnd 5
        if [ "$R" = 0 ]; then
            eval "P_backlog_$i=1"
            kw="$kw+backlog"
            prev_backlog=1
        else
            eval "P_backlog_$i=0"
            prev_backlog=0
        fi
        kplan="$kplan${kplan:+,}$kw"
        i=$((i + 1))
    done
    eval "P_kind_$P_runs=final P_at_$P_runs=0 P_point_$P_runs= P_backlog_$P_runs=0"
    P_plan="$P_plan kills=${P_kills}[$kplan]"

    # the fault: 0 none (weighted x3), else one kind
    rnd 10
    F_arg="" F_ms=0 F_dur=0 F_repair=0
    case $R in
    0 | 1 | 2) F_type=none ;;
    3) F_type=wal-write ;;
    4) F_type=wal-fsync ;;
    5) F_type=wal-short ;;
    6) F_type=wal-delay ;;
    7) F_type=kafka-rtt ;;
    8) F_type=broker-down ;;
    9) F_type="zk-restart" ;;
    esac
    rnd_range 1 "$P_runs"
    F_run=$R
    rnd_range 300 5000
    F_at=$R
    # a run killed at a set time gets its fault before that
    eval "fk=\$P_kind_$F_run fa=\$P_at_$F_run"
    # shellcheck disable=SC2154 # fk, fa: set by the eval
    if [ "$fk" = sigkill ] && [ "$fa" -gt 400 ]; then
        F_at=$(( 300 + (F_at - 300) * (fa - 400) / 4700 ))
    fi
    case $F_type in
    wal-write | wal-fsync | wal-short)
        rnd 3; F_arg=$R
        rnd 2; F_repair=$R
        fdesc="r$F_arg" ;;
    wal-delay)
        rnd 3; F_arg=$R
        rnd_range 20 300; F_ms=$R
        rnd_range 1000 5000; F_dur=$R
        fdesc="r$F_arg:${F_ms}ms/${F_dur}ms" ;;
    kafka-rtt)
        rnd_range 1 3; F_arg=$R
        rnd_range 50 1000; F_ms=$R
        rnd_range 1000 5000; F_dur=$R
        fdesc="b$F_arg:${F_ms}ms/${F_dur}ms" ;;
    broker-down)
        rnd_range 1 3; F_arg=$R
        rnd_range 1000 5000; F_dur=$R
        fdesc="b$F_arg/${F_dur}ms" ;;
    *) fdesc="" ;;
    esac
    if [ "$F_type" = none ]; then
        P_plan="$P_plan fault=none"
    else
        P_plan="$P_plan fault=$F_type${fdesc:+:$fdesc}@run$F_run+${F_at}ms"
        [ "$F_repair" = 0 ] || P_plan="$P_plan+repair"
    fi
    # the run id of the workload (16 hex digits)
    rnd 65536; a=$R; rnd 65536; b=$R; rnd 65536; c=$R; rnd 65536
    P_runid=$(printf '%04x%04x%04x%04x' "$a" "$b" "$c" "$R")
}

# ------------------------------------------------------------------ set-up --

if [ "$plans_only" = 1 ]; then
    k=${only_trial:-1}
    while [ "$k" -le "${only_trial:-$trials}" ]; do
        plan_trial "$k"
        echo "trial $k seed=$seed plan=[$P_plan] run_id=$P_runid"
        k=$((k + 1))
    done
    rm -rf "$work"
    trap - EXIT
    exit 0
fi

fail_setup() {
    echo "$prog: $*" >&2
    failed_any=1
    exit 1
}

# A slot: one ZooKeeper server and one Kafka cluster, used by one trial at
# a time (--jobs slots run trials side by side).
start_slot() {
    sd=$work/slot$1
    mkdir -p "$sd"
    slots_up=$1
    timeout 90 "$ZKL" start --dir "$sd/zk" --tick-ms 500 --timeout 60 \
        >"$sd/zk.out" 2>"$sd/zk.err" ||
        fail_setup "kwal-zk-local start failed: $(tail -n 3 "$sd/zk.err")"
    start_kafka "$1"
}

# start_kafka S: slot S's Kafka cluster (a fresh one: new ports)
start_kafka() {
    sd=$work/slot$1
    rm -f "$sd/bootstrap" "$sd/kl.sock"
    "$KL" --brokers 3 --control "$sd/kl.sock" --bootstrap-file "$sd/bootstrap" --no-stdin \
        >"$sd/kafka.out" 2>>"$sd/kafka.log" </dev/null &
    eval "kafka_pid_$1=$!"
    n=0
    while [ ! -s "$sd/bootstrap" ] || [ ! -S "$sd/kl.sock" ]; do
        n=$((n + 1))
        eval "kill -0 \$kafka_pid_$1" 2>/dev/null ||
            fail_setup "kwal-kafka-mock exited: $(tail -n 3 "$sd/kafka.log")"
        [ "$n" -le 300 ] || fail_setup "kwal-kafka-mock did not start within 30 s"
        sleep 0.1
    done
}
# revive_slot S: before a trial, start again what of slot S died -- the
# Kafka cluster (the mock's own assertions can end it: librdkafka 2.0.2's
# consumer-group code once aborted after a broker down/up) or ZooKeeper --
# so that one dead server fails one trial, not every later one on the slot.
slot_restarts=0
revive_slot() {
    sd=$work/slot$1
    eval "kp=\${kafka_pid_$1-}"
    if [ -n "$kp" ] && ! kill -0 "$kp" 2>/dev/null; then
        wait "$kp" 2>/dev/null
        echo "chaos: slot $1: the Kafka cluster died ($(tail -n 1 "$sd/kafka.log")); starting a new one" >&2
        start_kafka "$1"
        slot_restarts=$((slot_restarts + 1))
    fi
    if ! timeout 30 "$ZKL" status --dir "$sd/zk" --timeout 5 >/dev/null 2>&1; then
        echo "chaos: slot $1: ZooKeeper does not serve; starting it again" >&2
        timeout 90 "$ZKL" restart --dir "$sd/zk" --tick-ms 500 --timeout 60 \
            >>"$sd/zk.out" 2>>"$sd/zk.err" ||
            fail_setup "kwal-zk-local restart failed: $(tail -n 3 "$sd/zk.err")"
        slot_restarts=$((slot_restarts + 1))
    fi
}

# use_slot S: zk, bs and sd of slot S
use_slot() {
    sd=$work/slot$1
    zk=$(cat "$sd/zk/connect")
    bs=$(cat "$sd/bootstrap")
}

s=1
while [ "$s" -le "$jobs" ]; do
    start_slot "$s"
    s=$((s + 1))
done
use_slot 1

# kl COMMAND: one command to the slot's cluster; 0 when it answered ok.
kl() {
    kl_ans=$(timeout 40 "$KL" --control "$sd/kl.sock" --send "$1" 2>&1)
    [ "$kl_ans" = ok ]
}

if [ -n "$only_trial" ]; then
    first_trial=$only_trial last_trial=$only_trial
else
    first_trial=1 last_trial=$trials
fi
mode_word=receive
[ "$classic" = 0 ] || mode_word="receive --classic"
say "==> chaos: seed $seed, trials $first_trial..$last_trial, $records records x $partitions" \
    "partitions per trial, kwal $mode_word"
if [ "$jobs" = 1 ]; then
    say "    $("$KW" --version 2>/dev/null | head -n 1) ($bin); ZooKeeper $zk; Kafka $bs;" \
        "$npoints crash points; work directory $work"
else
    say "    $("$KW" --version 2>/dev/null | head -n 1) ($bin); $jobs trials at a time, each" \
        "slot with its own ZooKeeper and Kafka cluster; $npoints crash points; work directory $work"
fi
say "    re-run one trial: tools/$prog --seed $seed --trial K$argv_rerun --keep"

# --- the fault ---------------------------------------------------------------
# F_state: pending, on (until F_off, wall clock ms), done, missed.

fiu() {          # fiu COMMAND: libfiu command to the current kwal
    timeout 10 fiu-ctrl -f "$d/fiu" -c "$1" "$KWPID" >>"$d/fault.log" 2>&1
}

fault_apply() {
    fa_ok=1
    case $F_type in
    wal-write) fiu "enable name=wal/replica$F_arg/write" || fa_ok=0 ;;
    wal-fsync) fiu "enable name=wal/replica$F_arg/fsync" || fa_ok=0 ;;
    wal-short) fiu "enable name=wal/replica$F_arg/short" || fa_ok=0 ;;
    wal-delay) fiu "enable name=wal/replica$F_arg/delay,failinfo=$F_ms" || fa_ok=0 ;;
    kafka-rtt) kl "rtt $F_arg $F_ms" || fa_ok=0 ;;
    broker-down)
        # the producer is frozen meanwhile: the mock appends a produce request
        # whose answer a dropped connection lost a second time on retry
        fa_frozen=0
        if [ -n "$LGPID" ] && kill -STOP "$LGPID" 2>/dev/null; then
            fa_frozen=1
            sleep 1
        fi
        kl "broker down $F_arg" || fa_ok=0
        [ "$fa_frozen" = 0 ] || kill -CONT "$LGPID" 2>/dev/null ;;
    zk-restart)
        ( timeout 90 "$ZKL" restart --dir "$sd/zk" --tick-ms 500 --timeout 60 \
              >"$d/zk-restart.out" 2>&1
          echo $? >"$d/zk-restart.rc" ) &
        ZRPID=$! ;;
    esac
    if [ "$fa_ok" = 0 ] && [ -n "$KWPID" ] && ! kill -0 "$KWPID" 2>/dev/null; then
        F_state=missed      # kwal ended (a crash point) just as the fault came
        return
    fi
    if [ "$fa_ok" = 1 ]; then
        F_state=on
        F_off=$(( $(now_ms) + F_dur ))
        case $F_type in      # on until the process ends, or done at once
        wal-write | wal-fsync | wal-short | zk-restart) F_state="done" ;;
        esac
        echo "$(date -u +%H:%M:%S.%3N) run $run: $F_type applied" >>"$d/fault.log"
        say "      run $run: fault $F_type applied at $1 ms"
    else
        F_state="done"
        T_err="$T_err; fault-apply-failed($F_type)"
    fi
}

fault_undo() {   # the fault's end (its time is up, or its process is gone)
    case $F_type in
    wal-delay) [ "$1" = gone ] || fiu "disable name=wal/replica$F_arg/delay" ;;
    kafka-rtt) kl "rtt $F_arg 0" || T_err="$T_err; fault-undo-failed($F_type)" ;;
    broker-down) kl "broker up $F_arg" || T_err="$T_err; fault-undo-failed($F_type)" ;;
    esac
    F_state="done"
    echo "$(date -u +%H:%M:%S.%3N) run $run: $F_type over ($1)" >>"$d/fault.log"
}

# fault_tick ELAPSED_MS ALIVE: apply or end the fault as its plan says.
fault_tick() {
    if [ "$F_state" = pending ] && [ "$run" = "$F_run" ] && [ "$1" -ge "$F_at" ] &&
       [ "$2" = 1 ]; then
        fault_apply "$1"
    elif [ "$F_state" = on ] && [ "$(now_ms)" -ge "$F_off" ]; then
        fault_undo time
    fi
}

# fault_run_over: the run ended; process-local faults end with it.
fault_run_over() {
    if [ "$F_state" = pending ] && [ "$run" = "$F_run" ]; then
        F_state=missed
    elif [ "$F_state" = on ]; then
        case $F_type in
        wal-*) fault_undo gone ;;
        esac
    fi
}

zk_restart_wait() {
    [ -n "$ZRPID" ] || return 0
    wait "$ZRPID" 2>/dev/null
    ZRPID=""
    [ "$(cat "$d/zk-restart.rc" 2>/dev/null)" = 0 ] ||
        T_err="$T_err; zk-restart-failed($(tail -n 1 "$d/zk-restart.out" 2>/dev/null))"
}

# --- helpers -----------------------------------------------------------------

# stored: valid records of the trial's workload in the sink (0 before any)
stored() {
    st_s=$("$VF" --expect "$records" --run-id "$P_runid" --topic "$topic" \
           --sqlite "$d/out.db" 2>/dev/null | tail -n 1 | sed -n 's/.* stored=\([0-9]*\).*/\1/p')
    echo "${st_s:-0}"
}

# producer_done: 0 once the background producer (if any) has finished
producer_done() {
    [ -n "$LGPID" ] || return 0
    kill -0 "$LGPID" 2>/dev/null && return 1
    wait "$LGPID"
    LG_rc=$?
    LGPID=""
    [ "$LG_rc" = 0 ] || T_err="$T_err; producer-exit-$LG_rc"
    return 0
}

# zk_sum: the sum of the group's offsets in ZooKeeper (records durable in the
# WAL), for runs that hold their batches back
zk_sum() {
    zs_p=0 zs_sum=0
    while [ "$zs_p" -lt "$partitions" ]; do
        zs_v=$(timeout 10 "$ZKL" get --connect "$zk" --timeout 5 \
               "/consumers/$group/offsets/$topic/$zs_p" 2>/dev/null)
        is_uint "$zs_v" || zs_v=0
        zs_sum=$((zs_sum + zs_v))
        zs_p=$((zs_p + 1))
    done
    echo "$zs_sum"
}

# shellcheck disable=SC2154 # rk_backlog: set in run_kwal
# all_in: 0 when the run has everything -- stored, or with a backlog (its
# batches held back) durable in the WAL with the offsets in ZooKeeper
all_in() {
    if [ "$rk_backlog" = 1 ]; then
        [ "$(zk_sum)" -ge "$records" ]
    else
        [ "$(stored)" -ge "$records" ]
    fi
}

# --- one run of kwal receive ---------------------------------------------------
# run_kwal: run number $run per plan; sets R_how (killed, crashed, stopped,
# stopped-crashed, error) and appends to T_err on anything unexpected.
# shellcheck disable=SC2154 # rk_* are set by the eval
run_kwal() {
    eval "rk_kind=\$P_kind_$run rk_at=\$P_at_$run rk_point=\$P_point_$run rk_backlog=\$P_backlog_$run"
    rk_log=$d/run$run.log
    rk_env=""
    [ "$rk_kind" != crash ] || rk_env="KWAL_CRASH_AT=$rk_point"
    [ "$run" != "$F_run" ] || rk_env="$rk_env KWAL_FIU_CTRL=$d/fiu"
    rk_x=$xargs_kw
    [ "$rk_backlog" = 0 ] || rk_x="$rk_x -X batch.interval.ms=60000"
    rk_c=""
    [ "$classic" = 0 ] || rk_c=--classic
    zk_restart_wait
    # shellcheck disable=SC2086 # word lists on purpose
    env $rk_env "$KW" receive -c "$d/k.conf" $rk_x $rk_c >"$d/run$run.out" 2>"$rk_log" </dev/null &
    KWPID=$!
    rk_t0=$(now_ms)
    rk_termed=0 rk_term_at=0 rk_n=0 rk_st=""
    R_how=""
    while :; do
        rk_el=$(( $(now_ms) - rk_t0 ))
        rk_alive=0
        kill -0 "$KWPID" 2>/dev/null && rk_alive=1
        fault_tick "$rk_el" "$rk_alive"
        if [ "$rk_alive" = 0 ]; then
            wait "$KWPID"
            rk_st=$?
            break
        fi
        if [ "$rk_kind" = sigkill ] && [ "$rk_el" -ge "$rk_at" ]; then
            kill -KILL "$KWPID" 2>/dev/null
            wait "$KWPID"
            rk_st=killed
            break
        fi
        rk_n=$((rk_n + 1))
        # stop once everything is stored and the fault of this run is over
        if [ "$rk_kind" != sigkill ] && [ "$rk_termed" = 0 ] && [ $((rk_n % 5)) = 0 ] &&
           [ "$rk_el" -ge "$rk_at" ] &&
           [ "$F_state" != on ] && { [ "$F_run" != "$run" ] || [ "$F_state" != pending ]; } &&
           producer_done && all_in; then
            kill -TERM "$KWPID" 2>/dev/null
            rk_termed=1 rk_term_at=$rk_el
        fi
        if [ "$rk_termed" = 1 ] && [ $((rk_el - rk_term_at)) -gt 60000 ]; then
            T_err="$T_err; run $run: still running 60 s after SIGTERM (killed)"
            kill -KILL "$KWPID" 2>/dev/null
            wait "$KWPID"
            rk_st=hang
            break
        fi
        if [ "$rk_termed" = 0 ] && [ "$rk_el" -gt $((timeout_s * 1000 + F_dur + 5000)) ]; then
            T_err="$T_err; run $run: $(stored) of $records stored after ${timeout_s} s (killed)"
            kill -KILL "$KWPID" 2>/dev/null
            wait "$KWPID"
            rk_st=hang
            break
        fi
        sleep 0.1
    done
    KWPID=""
    fault_run_over
    rk_crashline=0
    grep -q "crash point ${rk_point%%:*} reached" "$rk_log" 2>/dev/null && rk_crashline=1
    case $rk_kind:$rk_st:$rk_termed in
    sigkill:killed:*) R_how="killed@${rk_at}ms" ;;
    crash:99:0)
        if [ "$rk_crashline" = 1 ]; then
            R_how="crashed@$rk_point"; T_reached=$((T_reached + 1))
        else
            R_how="exit99-no-crash-line"; T_err="$T_err; run $run: exit 99 without the crash line of $rk_point"
        fi ;;
    crash:99:1)
        if [ "$rk_crashline" = 1 ]; then
            R_how="crashed@$rk_point(on-stop)"; T_reached=$((T_reached + 1))
        else
            R_how="exit99-no-crash-line"; T_err="$T_err; run $run: exit 99 without the crash line of $rk_point"
        fi ;;
    crash:0:1) R_how="not-reached(stopped)" ;;
    final:0:1) R_how="stopped" ;;
    *:hang:*) R_how="hang" ;;
    *)
        R_how="exit-$rk_st"
        T_err="$T_err; run $run ($rk_kind) ended with exit $rk_st: $(grep -v 'ZOO_\|^%' "$rk_log" | tail -n 1 | cut -c1-200)" ;;
    esac
    rk_rec=$(sed -n 's/.* recovery: done in \([0-9]*\) ms.*/\1/p' "$rk_log" | tail -n 1)
    if [ "$run" -gt 1 ] && [ -n "$rk_rec" ]; then
        T_rec="$T_rec $rk_rec"
    fi
    rk_bl=""
    [ "$rk_backlog" = 0 ] || rk_bl=" +backlog"
    say "      run $run ($rk_kind${rk_point:+ $rk_point}$rk_bl): $R_how after" \
        "$(( $(now_ms) - rk_t0 )) ms, recovery ${rk_rec:-?} ms, stored $(stored)"
}

# --- verification --------------------------------------------------------------

# field NAME LINE: the value of NAME=... in LINE
field() { echo " $2" | sed -n "s/.* $1=\\([0-9]*\\).*/\\1/p"; }

# kafka_dups: extra copies of sequence numbers Kafka itself holds (the mock
# may append a retried produce twice); 0 without kcat.
kafka_dups() {
    [ "$have_kcat" = 1 ] || { echo 0; return; }
    timeout 60 kcat -C -b "$bs" -t "$topic" -o beginning -e -q -f '%k\n' 2>/dev/null |
        sort | uniq -c | awk '$1 > 1 { s += $1 - 1 } END { print s + 0 }'
}

# check_zk: every partition's ZooKeeper offset = its end offset in the sink
check_zk() {
    cz_p=0 cz_bad=""
    while [ "$cz_p" -lt "$partitions" ]; do
        cz_want=$(sqlite3 "$d/out.db" "SELECT COALESCE(MAX(offset)+1, 0) FROM records \
                  WHERE topic='$topic' AND partition=$cz_p" 2>/dev/null)
        cz_got=$(timeout 30 "$ZKL" get --connect "$zk" \
                 "/consumers/$group/offsets/$topic/$cz_p" 2>/dev/null)
        [ -n "$cz_got" ] || cz_got=none
        [ "$cz_got" = "$cz_want" ] || cz_bad="$cz_bad $cz_p:$cz_got/$cz_want"
        cz_p=$((cz_p + 1))
    done
    if [ -z "$cz_bad" ]; then
        T_zk=ok
    else
        T_zk="differ"
        T_err="$T_err; zk-offsets(got/end):$cz_bad"
    fi
}

# --- the trial -----------------------------------------------------------------

run_trial() {
    k=$1
    d=$work/trial-$k
    topic=chaos-$k
    group=chaos-g$k
    mkdir -p "$d"
    plan_trial "$k"
    T_err="" T_rec="" T_reached=0 T_zk="?" T_kills=0 T_faults=0 T_applied=0
    tr_t0=$(date +%s)
    say "--- trial $k: $P_plan"
    {
        echo "seed=$seed trial=$k"
        echo "plan=$P_plan"
        echo "run_id=$P_runid"
    } >"$d/plan"
    kl "create $topic $partitions" || T_err="$T_err; create-topic($kl_ans)"
    cat >"$d/k.conf" <<EOF
# tools/chaos.sh seed $seed trial $k
group.id=$group
topics=$topic
receivers=2
zookeeper.connect=$zk
zookeeper.session.timeout.ms=2000
kafka.bootstrap.servers=$bs
kafka.session.timeout.ms=3000
kafka.heartbeat.interval.ms=300
auto.offset.reset=earliest
wal.dirs=$d/w0,$d/w1,$d/w2
wal.write.quorum=2
wal.segment.bytes=64K
block.max.bytes=16K
block.interval.ms=50
batch.interval.ms=200
sink=sqlite:$d/out.db
EOF
    F_state=pending
    [ "$F_type" != none ] || F_state="done"
    run=0
    lg_args="--brokers $bs --topic $topic --records $records --size 100 --run-id $P_runid --manifest $d/m"
    if [ "$P_produce" = upfront ]; then
        # shellcheck disable=SC2086
        timeout "$timeout_s" "$LG" $lg_args >"$d/lg.out" 2>"$d/lg.err" </dev/null ||
            T_err="$T_err; producer-failed"
    else
        # shellcheck disable=SC2086
        "$LG" $lg_args --rate "$P_rate" --timeout "$timeout_s" >"$d/lg.out" 2>"$d/lg.err" </dev/null &
        LGPID=$!
    fi
    run=1
    while [ "$run" -le "$P_runs" ] && [ -z "$T_err" ]; do
        run_kwal
        eval "rk_kind=\$P_kind_$run"
        [ "$rk_kind" = final ] || T_kills=$((T_kills + 1))
        # a replica fault's run is over: rebuild the replica if the plan says so
        if [ "$F_repair" = 1 ] && [ "$F_state" = "done" ] && [ "$run" = "$F_run" ] &&
           [ -z "$T_err" ]; then
            if timeout 120 "$KW" wal repair -c "$d/k.conf" --replica "$F_arg" \
                   >"$d/repair.out" 2>&1; then
                say "      kwal wal repair --replica $F_arg: $(head -n 1 "$d/repair.out")"
            else
                T_err="$T_err; wal-repair-failed($(tail -n 1 "$d/repair.out"))"
            fi
        fi
        run=$((run + 1))
    done
    run=$((P_runs + 1))
    # the end of the fault and of the producer
    [ "$F_state" != pending ] || F_state=missed
    if [ "$F_state" = on ]; then
        fault_undo trial-end
    fi
    zk_restart_wait
    if [ -n "$LGPID" ]; then
        lg_n=0
        while ! producer_done; do
            lg_n=$((lg_n + 1))
            if [ "$lg_n" -gt $((timeout_s * 10)) ]; then
                kill -KILL "$LGPID" 2>/dev/null
                wait "$LGPID" 2>/dev/null
                LGPID=""
                T_err="$T_err; producer-hang"
                break
            fi
            sleep 0.1
        done
    fi
    [ "$F_type" = none ] || T_faults=1
    case $F_state in
    "done") [ "$F_type" = none ] || T_applied=1; f_note="" ;;
    missed) f_note=" (fault not reached)" ;;
    *) f_note="" ;;
    esac

    # verify
    produced=$(sed -n 's/^delivered=//p' "$d/m" 2>/dev/null)
    [ -n "$produced" ] || { produced=0; T_err="$T_err; no-manifest"; }
    vline=$("$VF" --manifest "$d/m" --sqlite "$d/out.db" 2>"$d/verify.err" | tee "$d/verify.out" | tail -n 1)
    v_stored=$(field stored "$vline")
    v_missing=$(field missing "$vline")
    v_dups=$(field duplicates "$vline")
    v_dupoff=$(field duplicate_offsets "$vline")
    v_corrupt=$(field corrupt "$vline")
    if [ -z "$v_stored" ]; then
        v_stored=0 v_missing=$records v_dups=0 v_dupoff=0 v_corrupt=0
        T_err="$T_err; verify-failed($(tail -n 1 "$d/verify.err"))"
    fi
    src_dups=0
    [ "$v_dups" = 0 ] || src_dups=$(kafka_dups)
    dup_stored=$(( v_dups - src_dups + v_dupoff ))
    [ "$dup_stored" -ge 0 ] || dup_stored=0
    dup_del=$(cat "$d"/run*.log 2>/dev/null |
              sed -n 's/.* sink [a-z]*: batch [0-9]*: \([0-9]*\) duplicate deliveries.*/\1/p' |
              awk '{ s += $1 } END { print s + 0 }')
    [ "$v_missing" = 0 ] || T_err="$T_err; missing=$v_missing"
    [ "$dup_stored" = 0 ] || T_err="$T_err; dup_stored=$dup_stored"
    [ "$v_corrupt" = 0 ] || T_err="$T_err; corrupt=$v_corrupt"
    [ "$produced" = "$records" ] || T_err="$T_err; produced=$produced/$records"
    if [ -f "$d/out.db" ]; then
        check_zk
    else
        T_zk=none
        T_err="$T_err; no-sink"
    fi
    # the WAL, closed now: problems may be reported only on a replica the
    # plan failed (and not repaired), which verify must then call failed --
    # a failed replica keeps what it held when it failed (e.g. a segment
    # whose header write failed), as nothing writes to it until repair
    timeout 120 "$KW" wal verify -c "$d/k.conf" >"$d/wal-verify.out" 2>&1
    wv_rc=$?
    wv_r=x
    case $F_type in
    wal-write | wal-fsync | wal-short) wv_r=$F_arg ;;
    esac
    if [ "$wv_rc" != 0 ]; then
        wv_other=$(grep -v -e "^replica $wv_r (" \
                       -e '^[0-9]* problems* in [0-9]* replicas' -e '^kwal: wal verify: ' \
                       "$d/wal-verify.out" | head -n 1)
        if [ "$wv_rc" != 1 ] || [ -n "$wv_other" ] ||
           ! grep -q "^replica $wv_r (.*): replica is failed" "$d/wal-verify.out"; then
            T_err="$T_err; kwal wal verify exit $wv_rc: ${wv_other:-$(head -n 1 "$d/wal-verify.out")}"
        fi
    fi
    if [ "$classic" = 1 ] && [ "$P_runs" -gt 1 ] &&
       ! grep -q 'recovery: done.*(classic: no ZooKeeper repair)' "$d/run$P_runs.log"; then
        T_err="$T_err; recovery-not-classic"
    fi
    # recovery times of the restarts
    rec_max=0 rec_sum=0 rec_n=0
    for r in $T_rec; do
        [ "$r" -le "$rec_max" ] || rec_max=$r
        rec_n=$((rec_n + 1))
        rec_sum=$((rec_sum + r))
    done
    rec_show=$rec_max
    [ "$rec_n" -gt 0 ] || rec_show="-"
    extra=""
    [ "$src_dups" = 0 ] || extra=" kafka_dups=$src_dups"
    if [ -z "$T_err" ]; then
        result=PASS
    else
        result=FAIL
    fi
    echo "trial $k seed=$seed plan=[$P_plan]$f_note produced=$produced stored=$v_stored" \
         "missing=$v_missing dup_delivered=$dup_del dup_stored=$dup_stored$extra" \
         "recovery_ms=$rec_show zk=$T_zk result=$result time=$(( $(date +%s) - tr_t0 ))s"
    [ -z "$T_err" ] || echo "  why: $(echo "$T_err" | sed 's/^; //')"
    if [ "$result" = PASS ]; then
        [ "$keep" = 1 ] || rm -rf "$d"
    else
        echo "  re-run: tools/$prog --seed $seed --trial $k$argv_rerun --keep   (logs: $d)"
    fi
    # for the totals
    echo "$result $produced $v_stored $v_missing $dup_del $dup_stored $src_dups" \
         "$T_reached $T_kills $T_faults $T_applied $rec_sum $rec_n $rec_max" >"$work/res-$k"
}

# trial_sub SLOT K: trial K on slot SLOT, in a subshell of its own
trial_sub() {
    trap trial_cleanup EXIT
    trap 'exit 143' TERM
    trap 'exit 130' INT
    use_slot "$1"
    run_trial "$2"
}

# start_trial SLOT K: in the background; with one slot its output goes
# straight to stdout, else to a file shown when the trial is over.
start_trial() {
    mkdir -p "$work/trial-$2"
    if [ "$jobs" = 1 ]; then
        ( trial_sub "$1" "$2" ) 2>>"$work/trial-$2/shell.err" &
    else
        ( trial_sub "$1" "$2" ) >"$work/out-$2" 2>>"$work/trial-$2/shell.err" &
    fi
    eval "slot_pid_$1=$! slot_trial_$1=$2"
}

tot_prod=0 tot_stored=0 tot_missing=0 tot_dupdel=0 tot_dupst=0 tot_srcdup=0
tot_rec_n=0 tot_rec_sum=0 tot_rec_max=0 tot_kills=0 tot_reached=0
tot_faults=0 tot_applied=0 n_pass=0 n_fail=0 failed_list=""
t_start=$(date +%s)

# report K: show trial K (when it ran in a slot of several) and add it up
report() {
    [ "$jobs" = 1 ] || cat "$work/out-$1" 2>/dev/null
    rm -f "$work/out-$1"
    if [ -s "$work/res-$1" ]; then
        read -r r_res r_prod r_stored r_missing r_dupdel r_dupst r_srcdup r_reached \
            r_kills r_faults r_applied r_recsum r_recn r_recmax <"$work/res-$1"
    else
        r_res=FAIL r_prod=0 r_stored=0 r_missing=0 r_dupdel=0 r_dupst=0 r_srcdup=0
        r_reached=0 r_kills=0 r_faults=0 r_applied=0 r_recsum=0 r_recn=0 r_recmax=0
        echo "trial $1 seed=$seed result=FAIL:runner-error ($(tail -n 3 "$work/trial-$1/shell.err" 2>/dev/null | tr '\n' ' '))"
        echo "  re-run: tools/$prog --seed $seed --trial $1$argv_rerun --keep   (logs: $work/trial-$1)"
    fi
    rm -f "$work/res-$1"
    if [ "$r_res" = PASS ]; then
        n_pass=$((n_pass + 1))
    else
        n_fail=$((n_fail + 1))
        failed_list="$failed_list $1"
        failed_any=1
    fi
    tot_prod=$((tot_prod + r_prod))
    tot_stored=$((tot_stored + r_stored))
    tot_missing=$((tot_missing + r_missing))
    tot_dupdel=$((tot_dupdel + r_dupdel))
    tot_dupst=$((tot_dupst + r_dupst))
    tot_srcdup=$((tot_srcdup + r_srcdup))
    tot_reached=$((tot_reached + r_reached))
    tot_kills=$((tot_kills + r_kills))
    tot_faults=$((tot_faults + r_faults))
    tot_applied=$((tot_applied + r_applied))
    tot_rec_sum=$((tot_rec_sum + r_recsum))
    tot_rec_n=$((tot_rec_n + r_recn))
    [ "$r_recmax" -le "$tot_rec_max" ] || tot_rec_max=$r_recmax
}

next=$first_trial      # the next trial to start
shown=$first_trial     # the next trial to report (in order)
while [ "$shown" -le "$last_trial" ]; do
    s=1
    while [ "$s" -le "$jobs" ]; do
        eval "sp=\${slot_pid_$s-} sl_t=\${slot_trial_$s-}"
        if [ -n "$sp" ] && ! kill -0 "$sp" 2>/dev/null; then
            wait "$sp" 2>/dev/null
            # shellcheck disable=SC2154 # sl_t: set by the eval above
            eval "slot_pid_$s= done_$sl_t=1"
            sp=""
        fi
        if [ -z "$sp" ] && [ "$next" -le "$last_trial" ]; then
            revive_slot "$s"
            start_trial "$s" "$next"
            next=$((next + 1))
        fi
        s=$((s + 1))
    done
    while [ "$shown" -le "$last_trial" ] && eval "[ -n \"\${done_$shown-}\" ]"; do
        report "$shown"
        shown=$((shown + 1))
    done
    if [ "$jobs" = 1 ] && [ -n "${slot_pid_1-}" ]; then
        wait "$slot_pid_1" 2>/dev/null     # (a signal to us ends the wait)
    else
        sleep 0.2
    fi
done

ntr=$((n_pass + n_fail))
rec_mean=0
[ "$tot_rec_n" = 0 ] || rec_mean=$((tot_rec_sum / tot_rec_n))
status=ok
[ "$n_fail" = 0 ] || status=FAILED
echo "chaos: seed=$seed trials=$ntr passed=$n_pass failed=$n_fail produced=$tot_prod" \
     "stored=$tot_stored missing=$tot_missing dup_delivered=$tot_dupdel dup_stored=$tot_dupst" \
     "kafka_dups=$tot_srcdup recovery_ms_max=$tot_rec_max recovery_ms_mean=$rec_mean" \
     "restarts=$tot_rec_n kills=$tot_kills crash_points_reached=$tot_reached" \
     "faults=$tot_faults applied=$tot_applied mode=$mode_word jobs=$jobs" \
     "slot_restarts=$slot_restarts" \
     "time=$(( $(date +%s) - t_start ))s status=$status${failed_list:+ failed_trials=$(echo "$failed_list" | sed 's/^ //; s/ /,/g')}"
[ "$n_fail" = 0 ]
