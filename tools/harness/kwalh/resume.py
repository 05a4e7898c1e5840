"""resume -- how soon kwal is back in business after a SIGKILL
(tools/bench/bench-resume; `--help` has the options).

On a local ZooKeeper and a local real Kafka cluster it starts, per mode
(receive, direct) and per build (--baseline DIR when given, and --build
DIR), one schedule on a fresh topic, group and sqlite sink. The builds'
schedules of a mode run side by side, each with its own producer, and take
turns kill by kill (A B, then B A, ...), so that the cluster's state and the
machine's noise hit both alike -- run one after the other, the first
schedule's restarts were 4-5 times slower than the second's whichever build
it was. Per schedule:

  1. kwal-loadgen produces --rate records/s in the background for the whole
     schedule; kwal starts and stores its first records;
  2. --kills times: wait a random 0.5-1.5 s, SIGKILL kwal while records
     flow, start it again at once, and wait until it stores a record again
     (its --stats-json: first_stored_ms, from the process's start). Per
     restart it keeps first_stored_ms, whether the ZooKeeper session was
     resumed (zk_session_resumed), zk_session_ms, first_assignment_ms and,
     in receive mode, the recovery phases (recovery_*_ms);
  3. --quick-kills times: start kwal and SIGKILL it 1-3 s later (before,
     during or just after the group join); then a last, normal run, whose
     first_stored_ms is reported;
  4. the producer stops; the last run catches up until every partition's
     ZooKeeper offset is Kafka's end offset, and stops with SIGTERM;
     kwal-verify counts missing and duplicate records in the sink.

A restart that stores nothing within --restart-timeout seconds counts as
that many milliseconds and fails the schedule. CPU seconds (user + system)
and the peak RSS are those of the schedule's kwal processes (their resource
usage when reaped; RSS: the largest one).

Output in --out DIR (default: a temporary directory, removed unless
--keep): resume.md (per schedule: the distribution of first_stored_ms over
the kills -- min, p50, p90, max -- and the rest), resume.csv (one line per
restart), and per schedule its logs and statistics. One summary line per
schedule starts with "bench_resume:"; with --baseline, one line per mode
"bench_resume_ratio:" gives candidate/baseline of the medians.

Exit status: 0 when every schedule ran to the end with nothing lost and
nothing stored twice, 1 otherwise, 2 for bad arguments.
"""

import os
import random
import resource
import shutil
import signal
import statistics
import sys
import tempfile
import time

from . import proc, services
from .kwal import Kwal, write_conf
from .workload import Loadgen, nearest_rank, read_manifest, verify

MODES = ("receive", "direct")


UsageError = proc.UsageError
_Parser = proc.ArgParser


def parse_args(argv):
    p = _Parser(prog="bench-resume", description="Time from a restart after SIGKILL to the "
                "first record stored, per mode, on a local real Kafka cluster.")
    p.add_argument("--modes", default="receive,direct", help="comma-separated: receive, direct")
    p.add_argument("--kills", type=int, default=10, help="SIGKILLs while records flow (10)")
    p.add_argument("--quick-kills", type=int, default=8,
                   help="SIGKILLs 1-3 s after a start, then a normal run (8)")
    p.add_argument("--rate", type=int, default=5000, help="records/s produced (5000)")
    p.add_argument("--size", type=int, default=100, help="record size in bytes (100)")
    p.add_argument("--partitions", type=int, default=8, help="partitions of the topic (8)")
    p.add_argument("--brokers", type=int, default=3, help="Kafka nodes (3)")
    p.add_argument("--restart-timeout", type=float, default=60.0,
                   help="seconds a restart may take to store a record (60)")
    p.add_argument("--build", help="the build directory of the programs measured")
    p.add_argument("--baseline", help="a second build directory, measured first, alike")
    p.add_argument("-X", dest="xargs", action="append", default=[], metavar="KEY=VALUE",
                   help="a setting for every kwal run (e.g. batch.interval.ms=500)")
    p.add_argument("--seed", type=int, default=None, help="random seed of the kill times")
    p.add_argument("--out", help="the output directory (default: temporary)")
    p.add_argument("--keep", action="store_true", help="keep the temporary output directory")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    a = p.parse_args(argv)
    a.mode_list = [m for m in a.modes.split(",") if m]
    for m in a.mode_list:
        if m not in MODES:
            raise UsageError("--modes: '%s': one of %s" % (m, ", ".join(MODES)))
    for name in ("kills", "quick_kills", "rate", "size", "partitions", "brokers"):
        if getattr(a, name) < (1 if name in ("rate", "size", "partitions", "brokers") else 0):
            raise UsageError("--%s: out of range" % name.replace("_", "-"))
    for x in a.xargs:
        if "=" not in x:
            raise UsageError("-X %s: expected KEY=VALUE" % x)
    return a


class Schedule:
    """One mode and one build: its directory, topic, group, runs, figures."""

    def __init__(self, bench, label, bins, mode):
        self.b, self.label, self.bins, self.mode = bench, label, bins, mode
        self.name = "%s-%s" % (mode, label)
        self.d = os.path.join(bench.out, self.name)
        os.makedirs(self.d)
        self.topic = "kwal-resume-%s-%s" % (self.name, bench.stamp)
        self.group = "kwal-resume-%s-%s" % (self.name, bench.stamp)
        self.db = os.path.join(self.d, "out.db")
        self.conf = os.path.join(self.d, "k.conf")
        self.runs = 0
        self.restarts = []      # per restart: its statistics and kind
        self.cpu = 0.0
        self.rss_kb = 0
        self.problems = []

    def start(self):
        self.runs += 1
        xargs = []
        for x in self.b.a.xargs:
            xargs += ["-X", x]
        return Kwal(self.bins, [self.mode], self.conf,
                    os.path.join(self.d, "run%d" % self.runs), xargs).start()

    def wait_first_stored(self, k, kind):
        """Wait until k stores a record (or the timeout); keep the restart's
        figures."""
        limit = self.b.a.restart_timeout
        s = k.wait_stats(lambda s: s.get("first_stored_ms", -1) >= 0, limit)
        row = {"kind": kind, "run": self.runs}
        if s is None or s.get("first_stored_ms", -1) < 0:
            row["first_stored_ms"] = int(limit * 1000)
            self.problems.append("run %d stored nothing within %g s (%s)"
                                 % (self.runs, limit, k.log_tail(2)))
        else:
            row["first_stored_ms"] = s["first_stored_ms"]
        for key in ("zk_session_resumed", "zk_session_ms", "first_assignment_ms",
                    "recovery_ms", "recovery_wal_open_ms", "recovery_tracker_ms",
                    "recovery_replay_ms", "recovery_zk_ms", "zk_owner_nodes_inherited"):
            row[key] = (s or {}).get(key, "")
        self.restarts.append(row)
        return row

    def kill(self, k):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        k.kill()
        self._account(before)

    def _account(self, before):
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.cpu += (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        self.rss_kb = max(self.rss_kb, after.ru_maxrss)

    # The schedule in steps, so that the bench can interleave the builds'
    # schedules of a mode kill by kill (see the top).

    def begin(self):
        """The topic, the conf, the producer, and the first run stored."""
        a, b = self.b.a, self.b
        ok, why = b.kafka.create_topic(self.topic, a.partitions)
        if not ok:
            raise proc.HarnessError("cannot create %s: %s" % (self.topic, why))
        settings = {
            "group.id": self.group, "topics": self.topic,
            "zookeeper.connect": b.zk_connect, "kafka.bootstrap.servers": b.bs,
            "auto.offset.reset": "earliest", "wal.dirs": os.path.join(self.d, "wal"),
            "sink": "sqlite:" + self.db,
        }
        write_conf(self.conf, settings, comment="bench-resume %s" % self.name)
        # more than the schedule can take (a baseline waits up to --restart-timeout
        # per restart): it is stopped at the end
        self.lg = Loadgen(self.bins, b.bs, self.topic, a.rate * 3600,
                          os.path.join(self.d, "m"), os.path.join(self.d, "lg"), size=a.size,
                          rate=a.rate).start()
        b.progress("%s: producing %d records/s; %d kills, %d quick kills"
                   % (self.name, a.rate, a.kills, a.quick_kills))
        self.k = self.start()
        self.wait_first_stored(self.k, "first")

    def kill_once(self, i):
        """Kill i (from 0): SIGKILL while records flow, restart, first record."""
        b = self.b
        time.sleep(b.rng.uniform(0.5, 1.5))
        self.kill(self.k)
        self.k = self.start()
        r = self.wait_first_stored(self.k, "kill")
        b.progress("%s: kill %d: first record stored %s ms after the restart (resumed=%s)"
                   % (self.name, i + 1, r["first_stored_ms"], r["zk_session_resumed"]))

    def quick_kills(self):
        """The quick kills, then the normal run's first record."""
        a, b = self.b.a, self.b
        for i in range(a.quick_kills):
            self.kill(self.k)
            self.k = self.start()
            time.sleep(b.rng.uniform(1.0, 3.0))
        self.kill(self.k)
        self.k = self.start()
        r = self.wait_first_stored(self.k, "after-quick")
        if a.quick_kills:
            b.progress("%s: after %d quick kills: first record stored %s ms after the start"
                       % (self.name, a.quick_kills, r["first_stored_ms"]))

    def stop_producer(self):
        self.lg.stop()

    def finish(self):
        """The last run catches up to Kafka's end offsets and stops; verify."""
        a, b, k = self.b.a, self.b, self.k
        man = read_manifest(self.lg.manifest)
        ends = b.kafka.end_offsets(self.topic) or {}
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and k.alive():
            zoff = b.zk.offsets(self.group, self.topic, a.partitions)
            if ends and all((zoff.get(p) or 0) == e for p, e in ends.items()):
                break
            time.sleep(0.2)
        else:
            self.problems.append("the last run did not reach Kafka's end offsets %s" % ends)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        rc = k.stop(grace=120)
        self._account(before)
        if rc != 0:
            self.problems.append("the last run exited %s after SIGTERM (%s)"
                                 % (rc, k.log_tail(2)))
        # the producer was stopped: what it delivered is the prefix of its
        # sequence numbers it sent (in order, idempotent), which kwal must have
        self.delivered = int(man.get("delivered", 0))
        v = verify(self.bins, manifest=self.lg.manifest, expect=self.delivered, sqlite=self.db,
                   save=os.path.join(self.d, "verify.txt"))
        self.missing = v["missing"] if v.ok else None
        self.dups = (v["duplicates"] + v["duplicate_offsets"]) if v.ok else None
        if not v.ok or self.missing or self.dups or v["out_of_range"] or v["corrupt"]:
            self.problems.append("kwal-verify: %s" % (v.summary if v.ok else v.err))

    def figures(self):
        kills = [r["first_stored_ms"] for r in self.restarts if r["kind"] == "kill"]
        resumed = sum(1 for r in self.restarts if r["kind"] == "kill"
                      and r["zk_session_resumed"] == 1)
        last = [r["first_stored_ms"] for r in self.restarts if r["kind"] == "after-quick"]
        return {
            "schedule": self.name, "mode": self.mode, "build": self.label,
            "kills": len(kills), "resumed": resumed,
            "min": min(kills) if kills else None,
            "p50": nearest_rank(kills, 0.5) if kills else None,
            "median": statistics.median(kills) if kills else None,
            "p90": nearest_rank(kills, 0.9) if kills else None, "max": max(kills) if kills else None,
            "after_quick": last[0] if last else None,
            "delivered": getattr(self, "delivered", None),
            "missing": getattr(self, "missing", None), "dups": getattr(self, "dups", None),
            "cpu_s": round(self.cpu, 2), "peak_rss_mb": round(self.rss_kb / 1024.0, 1),
        }


class Bench:
    def __init__(self, a, builds):
        self.a = a
        self.builds = builds            # [(label, Bins)]
        self.stamp = time.strftime("%Y%m%d-%H%M%S")
        self.rng = random.Random(a.seed)
        self.out = None
        self.tmp = False
        self.zk = self.kafka = None
        self.schedules = []

    def progress(self, msg):
        if not self.a.quiet:
            sys.stderr.write("bench-resume: " + msg + "\n")
            sys.stderr.flush()

    def main(self):
        a = self.a
        if a.out:
            self.out = os.path.abspath(a.out)
            os.makedirs(self.out, exist_ok=True)
        else:
            self.out = tempfile.mkdtemp(prefix="kwal-bench-resume-")
            self.tmp = True
        bins0 = self.builds[-1][1]
        self.progress("starting a local ZooKeeper and a %d-node Kafka cluster..." % a.brokers)
        self.zk = services.ZooKeeper(bins0, os.path.join(self.out, "zk"))
        self.zk_connect = self.zk.start()
        self.kafka = services.make_kafka("real", bins0, os.path.join(self.out, "kafka"),
                                         nodes=a.brokers)
        self.bs = self.kafka.start()
        for mode in a.mode_list:
            ss = [Schedule(self, label, bins, mode) for label, bins in self.builds]
            self.schedules += ss
            for s in ss:
                s.begin()
            for i in range(a.kills):    # A B, B A, A B, ...: neither build always first
                for s in (ss if i % 2 == 0 else ss[::-1]):
                    s.kill_once(i)
            for s in ss:
                s.quick_kills()
            for s in ss:
                s.stop_producer()
            for s in ss:
                s.finish()
        return self.report()

    def report(self):
        rows = [s.figures() for s in self.schedules]
        lines = ["# bench-resume: first record stored after a SIGKILL and an immediate "
                 "restart", "",
                 "%d kills per schedule while %d records/s of %d B flow into %d partitions "
                 "(%d Kafka nodes); then %d SIGKILLs 1-3 s after a start and a normal run. "
                 "Milliseconds from the restart to the first record stored (kwal's "
                 "--stats-json first_stored_ms)." % (self.a.kills, self.a.rate, self.a.size,
                                                     self.a.partitions, self.a.brokers,
                                                     self.a.quick_kills), "",
                 "| schedule | kills | resumed | min | p50 | p90 | max | after quick kills "
                 "| delivered | missing | dups stored | CPU s | peak RSS MB |",
                 "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            lines.append("| %(schedule)s | %(kills)s | %(resumed)s | %(min)s | %(p50)s | "
                         "%(p90)s | %(max)s | %(after_quick)s | %(delivered)s | %(missing)s | "
                         "%(dups)s | %(cpu_s)s | %(peak_rss_mb)s |" % r)
        with open(os.path.join(self.out, "resume.md"), "w") as f:
            f.write("\n".join(lines) + "\n")
        keys = ["schedule", "kind", "run", "first_stored_ms", "zk_session_resumed",
                "zk_session_ms", "first_assignment_ms", "recovery_ms", "recovery_wal_open_ms",
                "recovery_tracker_ms", "recovery_replay_ms", "recovery_zk_ms",
                "zk_owner_nodes_inherited"]
        with open(os.path.join(self.out, "resume.csv"), "w") as f:
            f.write(",".join(keys) + "\n")
            for s in self.schedules:
                for r in s.restarts:
                    f.write(",".join(str({**r, "schedule": s.name}.get(k, "")) for k in keys)
                            + "\n")
        sys.stdout.write("\n".join(lines) + "\n\n")
        for r in rows:
            sys.stdout.write("bench_resume: schedule=%(schedule)s kills=%(kills)s "
                             "resumed=%(resumed)s min_ms=%(min)s p50_ms=%(p50)s "
                             "median_ms=%(median)s p90_ms=%(p90)s max_ms=%(max)s "
                             "after_quick_ms=%(after_quick)s missing=%(missing)s "
                             "dups=%(dups)s cpu_s=%(cpu_s)s peak_rss_mb=%(peak_rss_mb)s\n" % r)
        if len(self.builds) == 2:
            for mode in self.a.mode_list:
                by = {r["build"]: r for r in rows if r["mode"] == mode}
                base, cand = by.get("baseline"), by.get("candidate")
                if base and cand and base["median"] and cand["median"] is not None:
                    sys.stdout.write("bench_resume_ratio: mode=%s median_candidate/baseline=%.3f "
                                     "(%s ms / %s ms)\n" % (mode, cand["median"] / base["median"],
                                                            cand["median"], base["median"]))
        sys.stdout.write("output: %s\n" % self.out)
        bad = [(s.name, p) for s in self.schedules for p in s.problems]
        for name, p in bad:
            sys.stderr.write("bench-resume: %s: %s\n" % (name, p))
        return 1 if bad else 0

    def cleanup(self):
        proc.kill_all()
        for what in (self.kafka, self.zk):
            if what is not None:
                try:
                    what.stop()
                except Exception:      # noqa: BLE001 -- best effort at exit
                    pass
        if self.tmp and not self.a.keep and self.out:
            shutil.rmtree(self.out, ignore_errors=True)


def _on_term(sig, frame):
    raise SystemExit(143)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        a = parse_args(argv)
    except UsageError as e:
        sys.stderr.write("bench-resume: %s\nTry 'bench-resume --help'.\n" % e)
        return 2
    builds = []
    try:
        if a.baseline:
            builds.append(("baseline", proc.Bins(proc.bin_dir(a.baseline))))
        builds.append(("candidate", proc.Bins(proc.bin_dir(a.build))))
        for _, bins in builds:
            bins.check()
    except proc.HarnessError as e:
        sys.stderr.write("bench-resume: %s\n" % e)
        return 1
    if "real" not in services.kafka_kinds_available():
        sys.stderr.write("bench-resume: the real Kafka cluster (kwalh.kafka) is not there\n")
        return 1
    b = Bench(a, builds)
    old = signal.signal(signal.SIGTERM, _on_term)
    try:
        return b.main()
    except proc.HarnessError as e:
        sys.stderr.write("bench-resume: %s\n" % e)
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("bench-resume: interrupted\n")
        return 130
    except SystemExit:
        sys.stderr.write("bench-resume: terminated\n")
        return 143
    finally:
        b.cleanup()
        signal.signal(signal.SIGTERM, old)
