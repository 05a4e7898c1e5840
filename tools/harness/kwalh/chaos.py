"""chaos -- crash trials for `kwal receive` (DESIGN.md, invariants 1-3;
"Crash points and fault injection").

Kill kwal, break things around it, restart it, and check that the sink ends
up with every record exactly once. One local ZooKeeper (kwal-zk-local,
--tick-ms 500) and one Kafka cluster serve each slot (--jobs J: J slots, J
trials side by side, so that one trial's faults never touch another): a real
3-node KRaft cluster (topics RF=3, min.insync.replicas=2, producer acks=all)
or the mock cluster (--kafka). Each trial gets a fresh topic, consumer
group, 3-replica WAL (write quorum 2) and sink -- an SQLite file; with
--sink postgresql a database of its own on one local PostgreSQL server the
runner starts; with --sink kafka an output topic of its own on the trial's
Kafka cluster (3 partitions, the cluster's replication), created before the
first run (kwal does not create it) and read back with a read_committed
consumer (kwal-verify --kafka, kwalh.workload.KafkaStore) -- and a plan
drawn from a PRNG seeded with (seed, trial) (kwalh.plan; --plans prints
them). The plans do not depend on the sink.

--sink kafka needs a cluster with transactions: the real one. The mock
keeps no transactional offsets (the sink's writer group), so --sink kafka
with --kafka mock is refused (exit 2), as is --kafka auto when only the
mock is there. The Kafka output must also keep each source partition's
records in offset order: an out-of-order record (kwal-verify's
out_of_order) fails the trial (checker in_order).

The pieces, Jepsen's way:

  plan       kwalh.plan: produce, the runs and how each ends, the fault
  runner     Trial below: carries the plan out (the producer, kwal runs,
             the nemesis) and records what happened in a History
  nemesis    Nemesis below: applies and undoes the plan's fault -- libfiu
             through fiu-ctrl (a WAL replica's writes, short writes or fsyncs
             failing, a slow replica), a slow broker, a broker down, and with
             the real cluster a broker SIGKILLed, SIGSTOPped (hung) or a
             partition's leader moved, or ZooKeeper restarted
  checkers   kwalh.checkers: one per invariant, judging the history

Numbers come from kwal's statistics (--stats-json) and from kwal-verify,
outcomes from exit statuses (99: a crash point was reached); kwal's log is
kept for people, never read. A failed trial's directory (configuration,
every run's log and statistics, history.jsonl, WAL, sink) is kept and the
command that re-runs it is printed.

Exit status: 0 when every trial passed, 1 otherwise, 2 for bad arguments.
"""

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time

from . import checkers, plan as planmod, proc, services
from .history import History
from .kwal import Kwal, wal_repair, wal_verify, write_conf
from .workload import (KafkaStore, Loadgen, PgStore, SqliteStore, nearest_rank,
                       read_manifest, verify)

PROG = "tools/chaos"

EPILOG = """\
Per trial one line:
  trial K seed=S plan=... produced=N stored=N missing=0 dup_delivered=D
  dup_stored=0 recovery_ms=R zk=ok result=PASS
(recovery_ms: the longest recovery of the trial's restarts, from the runs'
statistics; dup_delivered: records the sink received again and did not store
twice, summed over the runs' statistics; with --sink kafka also
out_of_order=K before recovery_ms), and at the end:
  chaos: seed=S trials=T passed=T failed=0 produced=... stored=... missing=0
  dup_delivered=... dup_stored=0 recovery_ms_max=... recovery_ms_mean=...
  recovery_ms_p50=... recovery_ms_p90=... recovery_ms_p99=... ... status=ok
(the recovery figures over every restart of every trial: recovery_ms of the
runs' statistics, percentiles by nearest rank; with --sink kafka
out_of_order=K after dup_stored)
A failed trial prints how to re-run it: tools/chaos --seed S --trial K --keep
(same plan; timing is the machine's). Soak: tools/chaos --trials 500 --jobs 2.

Exit 0 when every trial passed, 1 otherwise, 2 for bad arguments.
"""


UsageError = proc.UsageError
Parser = proc.ArgParser

MOCK_NO_KAFKA_SINK = ("--sink kafka needs --kafka real: the mock cluster keeps no "
                      "transactional offsets (the sink's writer group)")
OUT_PARTITIONS = 3          # --sink kafka: each trial's output topic


def positive(name):
    def conv(s):
        if not s.isdigit() or int(s) <= 0:
            raise argparse.ArgumentTypeError("--%s must be a positive integer, got '%s'"
                                             % (name, s))
        return int(s)
    return conv


def seed_arg(s):
    if not s.isdigit() or len(s) > 9:
        raise argparse.ArgumentTypeError("--seed must be 0..999999999, got '%s'" % s)
    return int(s)


def kv_arg(s):
    if "=" not in s:
        raise argparse.ArgumentTypeError("-X needs key=value, got '%s'" % s)
    if any(c.isspace() for c in s):
        raise argparse.ArgumentTypeError("-X %s: no spaces, please" % s)
    return s


def parse_args(argv):
    p = Parser(prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
               description="Crash trials for `kwal receive` on a local ZooKeeper and a local "
               "Kafka cluster. Each trial produces a workload, kills kwal 1-3 times (SIGKILL "
               "at a random moment or a crash point), maybe injects one fault (WAL replica "
               "write, short write or fsync failure, slow replica, slow, downed, killed or "
               "hung Kafka broker, leader move, ZooKeeper restart), restarts it (recovery runs "
               "first), lets a last run store everything, stops it with SIGTERM and verifies "
               "the sink against the producer.", epilog=EPILOG)
    p.add_argument("-n", "--trials", type=positive("trials"), default=20,
                   help="trials to run (default 20)")
    p.add_argument("-s", "--seed", type=seed_arg,
                   help="seed, 0..999999999 (default: from the clock); printed, with the "
                   "trial number it re-draws a trial's plan")
    p.add_argument("-k", "--trial", type=positive("trial"),
                   help="run only trial K of seed S (with --seed; plan as in the full run)")
    p.add_argument("-r", "--records", type=positive("records"), default=3000,
                   help="records per trial (default 3000)")
    p.add_argument("-p", "--partitions", type=positive("partitions"), default=4,
                   help="partitions of each trial's topic (default 4)")
    p.add_argument("-j", "--jobs", type=positive("jobs"), default=1,
                   help="trials run side by side, each slot with its own ZooKeeper and Kafka "
                   "cluster (default 1)")
    p.add_argument("--kafka", choices=("auto", "real", "mock"), default="auto",
                   help="real: a 3-node Apache Kafka cluster per slot (kwalh.kafka); mock: "
                   "kwal-kafka-mock; auto (default): real when kwalh.kafka is there")
    p.add_argument("--build", help="build directory, relative to the repository or absolute "
                   "(default build; binaries in DIR/tools; else $KWAL_BIN_DIR)")
    p.add_argument("--dir", help="where the work directory is created, as a new "
                   "kwal-chaos.XXXXXX inside (default ${TMPDIR:-/tmp})")
    p.add_argument("--timeout", type=positive("timeout"), default=120,
                   help="bound for each run to store every record, and for the producer "
                   "(default 120)")
    p.add_argument("--classic", action="store_true",
                   help="run `kwal receive --classic` (no ZooKeeper repair in recovery): "
                   "duplicate deliveries are then expected")
    p.add_argument("--sink", choices=("sqlite", "postgresql", "kafka"), default="sqlite",
                   help="the trials' sink: sqlite (default), postgresql (a local server "
                   "the runner starts; a database per trial) or kafka (an output topic per "
                   "trial on the trial's cluster, 3 partitions; needs --kafka real)")
    p.add_argument("-X", dest="xargs", action="append", type=kv_arg, default=[],
                   metavar="KEY=VALUE", help="extra kwal setting for every run (repeatable)")
    p.add_argument("--keep", action="store_true",
                   help="keep every trial's directory; a failed trial's is always kept")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="only the per-trial lines, the re-run hints and the total")
    p.add_argument("--plans", action="store_true",
                   help="print the trials' plans and exit (starts nothing)")
    a = p.parse_args(argv)
    if a.records < 10:
        raise UsageError("--records must be at least 10")
    if a.trial is not None and a.seed is None:
        raise UsageError("--trial needs --seed (the seed of the run it comes from)")
    if a.sink == "kafka" and a.kafka == "mock":
        raise UsageError(MOCK_NO_KAFKA_SINK)
    if a.seed is None:
        a.seed = (time.time_ns() // 1000 + os.getpid()) % 1000000000
    return a


# --- slots --------------------------------------------------------------------

class Slot:
    """One ZooKeeper server and one Kafka cluster, used by one trial at a time."""

    def __init__(self, n, work, bins, kafka_kind):
        self.n = n
        self.dir = os.path.join(work, "slot%d" % n)
        self.bins = bins
        self.kafka_kind = kafka_kind
        self.zk = services.ZooKeeper(bins, os.path.join(self.dir, "zk"), tick_ms=500)
        self.kafka = None
        self.restarts = 0

    def start(self):
        os.makedirs(self.dir, exist_ok=True)
        self.zk.start()
        self.start_kafka()

    def start_kafka(self):
        d = os.path.join(self.dir, "kafka%d" % (self.restarts + 1))
        if self.kafka is not None:
            self.kafka.stop()
        os.makedirs(d, exist_ok=True)
        self.kafka = services.make_kafka(self.kafka_kind, self.bins, d, nodes=3)
        self.kafka.start()

    def revive(self, err):
        """Before a trial, start again what of the slot died -- its Kafka
        cluster (the mock's own assertions can end it) or ZooKeeper -- so
        that one dead server fails one trial, not every later one."""
        if not self.kafka.alive():
            err.write("chaos: slot %d: the Kafka cluster died (%s); starting it again\n"
                      % (self.n, self.kafka.last_log(1)))
            self.restarts += 1
            if self.kafka.kind == "mock":
                self.kafka.stop()
                self.start_kafka()
            else:
                self.kafka.revive()
        if not self.zk.serving():
            err.write("chaos: slot %d: ZooKeeper does not serve; starting it again\n" % self.n)
            ok, why = self.zk.restart()
            if not ok:
                raise proc.HarnessError("kwal-zk-local restart failed: %s" % why)
            self.restarts += 1

    def stop(self):
        if self.kafka is not None:
            try:
                self.kafka.stop()
            except Exception:          # noqa: BLE001 -- best effort at exit
                pass
        self.zk.stop()


# --- the nemesis ----------------------------------------------------------------

class Nemesis:
    """The plan's one fault. state: pending, applying, on (until off_at),
    undoing, done, missed. Kafka and ZooKeeper actions run in a thread of
    their own (a real broker takes seconds to stop or start); libfiu's are
    immediate and need the current kwal's pid."""

    def __init__(self, trial):
        self.t = trial
        self.f = trial.plan.fault
        self.state = "done" if self.f.type == "none" else "pending"
        self.off_at = 0
        self.bg = None
        self.lock = threading.Lock()

    # the run loop asks: may the run be stopped as far as the fault goes?
    def quiet(self, run):
        return (self.state not in ("applying", "on", "undoing")
                and not (self.f.run == run and self.state == "pending"))

    def busy(self):
        return self.bg is not None and self.bg.is_alive()

    def join(self):
        if self.bg is not None:
            self.bg.join()
            self.bg = None

    def _background(self, fn):
        self.join()
        self.bg = threading.Thread(target=fn, daemon=True,
                                   name="nemesis-%d" % self.t.plan.trial)
        self.bg.start()

    def tick(self, run, elapsed, kwal):
        if (self.state == "pending" and run == self.f.run and elapsed >= self.f.at_ms
                and kwal.alive()):
            self.apply(run, elapsed, kwal)
        elif self.state == "on" and proc.now_ms() >= self.off_at and not self.busy():
            self.undo(run, "time", kwal)

    def _fiu(self, kwal, cmd):
        rc, out, err = proc.run(["fiu-ctrl", "-f", os.path.join(self.t.dir, "fiu"), "-c", cmd,
                                 str(kwal.pid)], 10)
        with open(os.path.join(self.t.dir, "fault.log"), "a") as f:
            f.write("%s -> %d %s%s" % (cmd, rc, out, err))
        return rc == 0, (out + err).strip()

    def _applied(self, run, elapsed, ok, msg, lasting):
        h = self.t.history
        if ok:
            self.state = "on" if lasting else "done"
            self.off_at = proc.now_ms() + self.f.dur_ms
            h.add("fault", phase="apply", fault=self.f.type, run=run, ok=True, message=msg)
            self.t.say("      run %d: fault %s applied at %d ms" % (run, self.f.type, elapsed))
        else:
            self.state = "done"
            h.add("fault", phase="apply", fault=self.f.type, run=run, ok=False, message=msg)

    def apply(self, run, elapsed, kwal):
        f, k = self.f, self.t.kafka
        t = f.type
        if t in planmod.WAL_FAILS or t == "wal-delay":
            name = "wal/replica%d/%s" % (f.arg, t[4:])
            cmd = "enable name=%s" % name + (",failinfo=%d" % f.ms if t == "wal-delay" else "")
            ok, msg = self._fiu(kwal, cmd)
            if not ok and not kwal.alive():
                self.state = "missed"     # kwal ended (a crash point) just as it came
                self.t.history.add("fault", phase="missed", fault=t, run=run,
                                   reason="process ended")
                return
            self._applied(run, elapsed, ok, msg, lasting=t == "wal-delay")
            return
        if t == "zk-restart":
            self.state = "done"           # ZooKeeper comes back by itself
            self.t.history.add("fault", phase="apply", fault=t, run=run, ok=True, message="")
            self.t.say("      run %d: fault %s applied at %d ms" % (run, t, elapsed))

            def restart():
                ok, msg = self.t.slot.zk.restart()
                self.t.history.add("zk-restart", rc=0 if ok else 1, message=msg)
            self._background(restart)
            return
        self.state = "applying"

        def act():
            if t == "kafka-rtt":
                ok, msg = k.slow(f.arg, f.ms)
            elif t == "broker-down":
                frozen = False
                if k.kind == "mock" and self.t.producer is not None:
                    # the mock appends a produce request whose answer a dropped
                    # connection lost a second time on retry: freeze the producer
                    frozen = self.t.producer.freeze()
                    if frozen:
                        time.sleep(1)
                ok, msg = k.down(f.arg)
                if frozen:
                    self.t.producer.thaw()
            elif t == "broker-kill":
                ok, msg = k.kill(f.arg)
            elif t == "broker-pause":
                ok, msg = k.pause(f.arg)
            elif t == "leader-move":
                ok, msg = k.move_leader(self.t.topic, f.arg, f.node)
            else:
                ok, msg = False, "unknown fault"
            self._applied(run, elapsed, ok, msg, lasting=t != "leader-move")
        self._background(act)

    def undo(self, run, why, kwal=None):
        f, k, t = self.f, self.t.kafka, self.f.type
        if t == "wal-delay":
            ok, msg = (True, "") if why == "gone" or kwal is None or not kwal.alive() else \
                self._fiu(kwal, "disable name=wal/replica%d/delay" % f.arg)
            self.state = "done"
            self.t.history.add("fault", phase="undo", fault=t, run=run, ok=True, reason=why,
                               message=msg)
            return
        self.state = "undoing"

        def act():
            if t == "kafka-rtt":
                ok, msg = k.unslow(f.arg)
            elif t == "broker-down":
                ok, msg = k.up(f.arg)
            elif t == "broker-kill":
                ok, msg = k.restart(f.arg)
            elif t == "broker-pause":
                ok, msg = k.resume(f.arg)
            else:
                ok, msg = True, ""
            self.state = "done"
            self.t.history.add("fault", phase="undo", fault=t, run=run, ok=ok, reason=why,
                               message=msg)
        self._background(act)

    def run_over(self, run):
        """The run ended: process-local faults end with it."""
        if self.state == "pending" and run == self.f.run:
            self.state = "missed"
            self.t.history.add("fault", phase="missed", fault=self.f.type, run=run,
                               reason="run ended first")
        elif self.state == "on" and self.f.type.startswith("wal-"):
            self.undo(run, "gone")

    def trial_over(self, run):
        self.join()
        if self.state == "pending":
            self.state = "missed"
            self.t.history.add("fault", phase="missed", fault=self.f.type, run=run,
                               reason="trial ended first")
        if self.state == "on":
            self.undo(run, "trial-end")
        self.join()


# --- a trial ----------------------------------------------------------------------

class Trial:
    def __init__(self, runner, slot, k):
        self.r = runner
        self.a = runner.args
        self.bins = runner.bins
        self.slot = slot
        self.kafka = slot.kafka
        self.plan = runner.plan_of(k)
        self.dir = os.path.join(runner.work, "trial-%d" % k)
        self.topic = "chaos-%d" % k
        self.group = "chaos-g%d" % k
        self.conf = os.path.join(self.dir, "k.conf")
        self.db = os.path.join(self.dir, "out.db")
        self.out_topic = None       # --sink kafka: the trial's output topic
        if runner.pg is not None:
            from .postgres import Database
            self.store = PgStore(Database(runner.pg, "chaos_%d_%d" % (self.plan.seed, k)))
        elif self.a.sink == "kafka":
            self.out_topic = "chaos-%d-out" % k
            self.store = KafkaStore(self.kafka.bootstrap, self.out_topic, self.bins)
        else:
            self.store = SqliteStore(self.db)
        self.history = History()
        self.producer = None
        self.out = []            # lines for stdout (printed by the runner)

    def say(self, line):
        if not self.a.quiet:
            self.emit(line)

    def emit(self, line):
        if self.r.stopping.is_set():
            return                  # interrupted: the runner has said so
        if self.a.jobs == 1:
            print(line, flush=True)
        else:
            self.out.append(line)

    def failing(self):
        """A problem so far: no further runs."""
        return bool(checkers.check_runs(self.plan, self.history).problems
                    or checkers.check_workload(self.plan, self.history, final=False).problems)

    # --- what is in

    def stored(self):
        return self.store.count(self.topic)

    def all_in(self, backlog):
        """Everything is stored -- or, for a run holding its batches back,
        durable in the WAL with the offsets in ZooKeeper."""
        if backlog:
            return self.slot.zk.offsets_sum(self.group, self.topic,
                                            self.plan.partitions) >= self.plan.records
        return self.stored() >= self.plan.records

    def producer_done(self):
        if self.producer is None or not self.producer.started():
            return True
        if self.producer.done():
            if not getattr(self.producer, "recorded", False):
                self.producer.recorded = True
                self.history.add("produce", phase="end", mode="during", rc=self.producer.rc)
            return True
        return False

    # --- one run of kwal receive

    def run_kwal(self, run, nem):
        pr = self.plan.runs[run - 1]
        env = {}
        if pr.kind == "crash":
            env["KWAL_CRASH_AT"] = pr.point
        if run == self.plan.fault.run:
            env["KWAL_FIU_CTRL"] = os.path.join(self.dir, "fiu")
        xargs = []
        for x in self.a.xargs:
            xargs += ["-X", x]
        if pr.backlog:
            xargs += ["-X", "batch.interval.ms=60000"]
        args = ["receive"] + (["--classic"] if self.a.classic else [])
        nem.join()                    # a ZooKeeper restart under way
        kw = Kwal(self.bins, args, self.conf, os.path.join(self.dir, "run%d" % run), xargs,
                  env).start()
        self.history.add("run-start", run=run, kind=pr.kind, point=pr.point,
                         backlog=pr.backlog, pid=kw.pid, env=env)
        termed, term_at, n, killed, hang = False, 0, 0, None, None
        limit = self.a.timeout * 1000 + self.plan.fault.dur_ms + 5000
        while True:
            if self.r.stopping.is_set():
                kw.kill()
                killed = "runner"
                break
            el = kw.elapsed_ms()
            nem.tick(run, el, kw)
            if not kw.alive():
                kw.wait()
                break
            if pr.kind == "sigkill" and el >= pr.at_ms:
                kw.kill()
                killed = "sigkill"
                break
            n += 1
            # stop once everything is in and the fault of this run is over
            if (pr.kind != "sigkill" and not termed and n % 5 == 0 and el >= pr.at_ms
                    and nem.quiet(run) and self.producer_done() and self.all_in(pr.backlog)):
                kw.term()
                termed, term_at = True, el
            if termed and el - term_at > 60000:
                hang = "run %d: still running 60 s after SIGTERM (killed)" % run
            elif not termed and el > limit:
                hang = "run %d: %d of %d stored after %d s (killed)" % (
                    run, self.stored(), self.plan.records, self.a.timeout)
            if hang:
                kw.kill()
                killed = "hang"
                break
            time.sleep(0.1)
        nem.run_over(run)
        stats = kw.stats()
        ev = self.history.add("run-end", run=run, kind=pr.kind, point=pr.point,
                              backlog=pr.backlog, at_ms=pr.at_ms, rc=kw.rc, killed=killed,
                              termed=termed, hang=hang, elapsed_ms=kw.elapsed_ms(),
                              stats=stats, log_tail=kw.log_tail(1))
        how, _, _ = checkers.run_outcome(ev)
        ev["how"] = how
        rec = (stats or {}).get("recovery_ms", -1)
        self.say("      run %d (%s%s%s): %s after %d ms, recovery %s ms, stored %d" % (
            run, pr.kind, " " + pr.point if pr.point else "", " +backlog" if pr.backlog else "",
            how, kw.elapsed_ms(), rec if rec is not None and rec >= 0 else "?", self.stored()))

    # --- the trial

    def write_conf(self):
        s = {
            "group.id": self.group,
            "topics": self.topic,
            "receivers": 2,
            "zookeeper.connect": self.slot.zk.connect,
            "zookeeper.session.timeout.ms": 2000,
            "kafka.bootstrap.servers": self.kafka.bootstrap,
            "kafka.session.timeout.ms": 3000,
            "kafka.heartbeat.interval.ms": 300,
            "auto.offset.reset": "earliest",
            "wal.dirs": ",".join(os.path.join(self.dir, "w%d" % i) for i in range(3)),
            "wal.write.quorum": 2,
            "wal.segment.bytes": "64K",
            "block.max.bytes": "16K",
            "block.interval.ms": 50,
            "batch.interval.ms": 200,
            "sink": self.store.spec,
        }
        write_conf(self.conf, s, "tools/chaos seed %d trial %d (kafka %s)"
                   % (self.plan.seed, self.plan.trial, self.kafka.kind))

    def run(self):
        """Carry the plan out, observe, check; the trial's result (dict)."""
        p, h, a = self.plan, self.history, self.a
        t0 = time.monotonic()
        os.makedirs(self.dir, exist_ok=True)
        self.say("--- trial %d: %s" % (p.trial, p.describe()))
        with open(os.path.join(self.dir, "plan.json"), "w") as f:
            json.dump(p.as_dict(), f, indent=1)
        ok, ans = self.kafka.create_topic(self.topic, p.partitions)
        if not ok:
            h.add("note", message="create-topic(%s)" % ans)
        if self.out_topic is not None:
            ok, ans = self.kafka.create_topic(self.out_topic, OUT_PARTITIONS)
            if not ok:
                h.add("note", message="create-output-topic(%s)" % ans)
        self.write_conf()
        nem = Nemesis(self)
        manifest = os.path.join(self.dir, "m")
        lg = Loadgen(self.bins, self.kafka.bootstrap, self.topic, p.records, manifest,
                     os.path.join(self.dir, "lg"), size=100, run_id=p.run_id,
                     rate=p.rate if p.produce == "during" else None,
                     timeout=a.timeout if p.produce == "during" else None)
        h.add("produce", phase="start", mode=p.produce, rate=p.rate)
        if p.produce == "upfront":
            rc = lg.run(a.timeout)
            h.add("produce", phase="end", mode="upfront", rc=rc)
        else:
            self.producer = lg.start()
        run = 1
        while run <= len(p.runs) and not self.failing() and not self.r.stopping.is_set():
            self.run_kwal(run, nem)
            f = p.fault
            if (f.repair and nem.state == "done" and run == f.run and not self.failing()):
                rc, lines = wal_repair(self.bins, self.conf, f.arg)
                h.add("repair", replica=f.arg, rc=rc, message=(lines or [""])[-1])
                if rc == 0:
                    self.say("      kwal wal repair --replica %d: %s" % (f.arg, (lines or [""])[0]))
            run += 1
        # the end of the fault and of the producer
        nem.trial_over(len(p.runs) + 1)
        if self.producer is not None:
            deadline = time.monotonic() + a.timeout
            while not self.producer_done():
                if time.monotonic() > deadline or self.r.stopping.is_set():
                    self.producer.kill()
                    self.producer.recorded = True
                    h.add("note", message="producer-hang")
                    break
                time.sleep(0.1)
        self.observe(manifest)
        checks = checkers.check_trial(p, h, classic=a.classic)
        h.add("checks", results=[{"name": c.name, "ok": c.ok, "problems": c.problems}
                                 for c in checks])
        h.dump(os.path.join(self.dir, "history.jsonl"))
        return self.report(checks, nem, time.monotonic() - t0)

    def observe(self, manifest):
        h, p = self.history, self.plan
        m = read_manifest(manifest)
        h.add("observe", what="manifest",
              delivered=int(m["delivered"]) if m.get("delivered", "").isdigit() else None)
        v = verify(self.bins, manifest=manifest, **self.store.verify_args(),
                   save=os.path.join(self.dir, "verify.out"))
        h.add("observe", what="verify", **v.as_dict())
        if v.summary.get("duplicates", 0):
            h.add("observe", what="kafka-dups", count=self.kafka_dups())
        if self.store.exists():
            sink_end = self.store.end_offsets(self.topic, p.partitions)
            zk = self.slot.zk.offsets(self.group, self.topic, p.partitions)
            ke = self.kafka.end_offsets(self.topic)
            h.add("observe", what="zk-offsets",
                  sink_end={str(k): v for k, v in sink_end.items()},
                  zk={str(k): v for k, v in zk.items()},
                  kafka_end=None if ke is None else {str(k): v for k, v in ke.items()})
        rc, lines = wal_verify(self.bins, self.conf)
        with open(os.path.join(self.dir, "wal-verify.out"), "w") as f:
            f.write("\n".join(lines) + "\n")
        h.add("observe", what="wal-verify", rc=rc, lines=lines[:50])

    def kafka_dups(self):
        """Extra copies of sequence numbers Kafka itself holds (the mock may
        append a retried produce twice); 0 without kcat."""
        if shutil.which("kcat") is None:
            return 0
        rc, out, _ = proc.run(["kcat", "-C", "-b", self.kafka.bootstrap, "-t", self.topic,
                               "-o", "beginning", "-e", "-q", "-f", "%k\n"], 60)
        seen = {}
        for k in out.split():
            seen[k] = seen.get(k, 0) + 1
        return sum(n - 1 for n in seen.values() if n > 1)

    def report(self, checks, nem, secs):
        p = self.plan
        m = checkers.measure(p, self.history)
        problems = [w for c in checks for w in c.problems]
        result = "PASS" if not problems else "FAIL"
        zkc = next(c for c in checks if c.name == "zk_offsets")
        zk = ("ok" if zkc.ok else
              "none" if self.history.observed("zk-offsets") is None else "differ")
        rec = m["recovery"]
        note = " (fault not reached)" if nem.state == "missed" else ""
        extra = " kafka_dups=%d" % m["kafka_dups"] if m["kafka_dups"] else ""
        if self.a.sink == "kafka":
            extra += " out_of_order=%d" % m["out_of_order"]
        self.emit("trial %d seed=%d plan=[%s]%s produced=%d stored=%d missing=%d "
                  "dup_delivered=%d dup_stored=%d%s recovery_ms=%s zk=%s result=%s time=%ds"
                  % (p.trial, p.seed, p.describe(), note, m["produced"], m["stored"],
                     m["missing"], m["dup_delivered"], m["dup_stored"], extra,
                     max(rec) if rec else "-", zk, result, int(secs)))
        if problems:
            self.emit("  why: " + "; ".join(problems))
            self.emit("  re-run: %s   (logs: %s)" % (self.r.rerun(p.trial), self.dir))
        elif not self.a.keep:
            shutil.rmtree(self.dir, ignore_errors=True)
        m["result"] = result
        return m


# --- the runner -------------------------------------------------------------------

class Runner:
    def __init__(self, args, bins, points, kafka_kind):
        self.args = args
        self.bins = bins
        self.points = points
        self.kafka_kind = kafka_kind
        self.work = None
        self.slots = []
        self.pg = None              # --sink postgresql: the server every trial shares
        self.stopping = threading.Event()
        self.failed_any = False

    def plan_of(self, k):
        a = self.args
        return planmod.draw(a.seed, k, a.records, a.partitions, self.points, self.kafka_kind)

    def rerun(self, k):
        a = self.args
        s = "%s --seed %d --trial %d --kafka %s" % (PROG, a.seed, k, self.kafka_kind)
        if a.classic:
            s += " --classic"
        if a.sink != "sqlite":
            s += " --sink %s" % a.sink
        if a.records != 3000:
            s += " --records %d" % a.records
        if a.partitions != 4:
            s += " --partitions %d" % a.partitions
        if a.build:
            s += " --build %s" % a.build
        if a.timeout != 120:
            s += " --timeout %d" % a.timeout
        for x in a.xargs:
            s += " -X %s" % x
        return s + " --keep"

    def trials(self):
        a = self.args
        return [a.trial] if a.trial else list(range(1, a.trials + 1))

    def run_trial(self, slot, k, results):
        t = None
        try:
            t = Trial(self, slot, k)
            results[k] = (t.run(), t.out)
        except Exception as e:          # noqa: BLE001 -- one trial's trouble, not the run's
            out = t.out if t else []
            out.append("trial %d seed=%d result=FAIL:runner-error (%s: %s)"
                       % (k, self.args.seed, type(e).__name__, e))
            out.append("  re-run: %s   (logs: %s)"
                       % (self.rerun(k), os.path.join(self.work, "trial-%d" % k)))
            if self.args.jobs == 1:
                for line in out[-2:]:
                    print(line, flush=True)
                out = []
            results[k] = (None, out)

    def main(self):
        a = self.args
        base = a.dir or os.environ.get("TMPDIR") or "/tmp"
        os.makedirs(base, exist_ok=True)
        self.work = tempfile.mkdtemp(prefix="kwal-chaos.", dir=base)
        t_start = time.monotonic()
        if a.sink == "postgresql":
            from .postgres import PostgreSQL
            self.pg = PostgreSQL(os.path.join(self.work, "pg"))
            self.pg.start()
        mode_word = "receive --classic" if a.classic else "receive"
        for i in range(1, a.jobs + 1):
            s = Slot(i, self.work, self.bins, self.kafka_kind)
            self.slots.append(s)
            s.start()
        trials = self.trials()
        say = (lambda line: None) if a.quiet else (lambda line: print(line, flush=True))
        say("==> chaos: seed %d, trials %d..%d, %d records x %d partitions per trial, kwal %s"
            % (a.seed, trials[0], trials[-1], a.records, a.partitions, mode_word))
        if a.jobs == 1:
            s = self.slots[0]
            say("    %s (%s); ZooKeeper %s; Kafka %s (%s); %d crash points; work directory %s"
                % (self.bins.version(), self.bins.dir, s.zk.connect, s.kafka.bootstrap,
                   self.kafka_kind, len(self.points), self.work))
        else:
            say("    %s (%s); %d trials at a time, each slot with its own ZooKeeper and %s Kafka "
                "cluster; %d crash points; work directory %s"
                % (self.bins.version(), self.bins.dir, a.jobs, self.kafka_kind,
                   len(self.points), self.work))
        say("    re-run one trial: %s" % self.rerun(0).replace("--trial 0", "--trial K"))

        results = {}
        running = {}             # slot -> (thread, trial)
        pending = list(trials)
        shown = 0
        tot = {"produced": 0, "stored": 0, "missing": 0, "dup_delivered": 0, "dup_stored": 0,
               "out_of_order": 0, "kafka_dups": 0, "reached": 0, "kills": 0, "faults": 0,
               "applied": 0}
        recs = []
        n_pass, failed = 0, []
        while shown < len(trials):
            for s in self.slots:
                th = running.get(s.n)
                if th is not None and not th[0].is_alive():
                    th[0].join()
                    running.pop(s.n)
                if s.n not in running and pending:
                    k = pending.pop(0)
                    s.revive(sys.stderr)
                    th = threading.Thread(target=self.run_trial, args=(s, k, results),
                                          daemon=True, name="trial-%d" % k)
                    th.start()
                    running[s.n] = (th, k)
            while shown < len(trials) and trials[shown] in results:
                k = trials[shown]
                m, out = results.pop(k)
                for line in out:
                    print(line, flush=True)
                shown += 1
                if m is not None and m["result"] == "PASS":
                    n_pass += 1
                else:
                    failed.append(k)
                    self.failed_any = True
                if m is not None:
                    for key in tot:
                        tot[key] += m[key]
                    recs += m["recovery"]
            time.sleep(0.2)
        n = n_pass + len(failed)
        status = "ok" if not failed else "FAILED"
        ooo = " out_of_order=%d" % tot["out_of_order"] if a.sink == "kafka" else ""
        print("chaos: seed=%d trials=%d passed=%d failed=%d produced=%d stored=%d missing=%d "
              "dup_delivered=%d dup_stored=%d%s kafka_dups=%d recovery_ms_max=%d "
              "recovery_ms_mean=%d recovery_ms_p50=%d recovery_ms_p90=%d recovery_ms_p99=%d "
              "restarts=%d kills=%d crash_points_reached=%d faults=%d "
              "applied=%d mode=%s kafka=%s sink=%s jobs=%d slot_restarts=%d time=%ds status=%s%s"
              % (a.seed, n, n_pass, len(failed), tot["produced"], tot["stored"], tot["missing"],
                 tot["dup_delivered"], tot["dup_stored"], ooo, tot["kafka_dups"],
                 max(recs) if recs else 0, sum(recs) // len(recs) if recs else 0,
                 nearest_rank(recs, 0.50), nearest_rank(recs, 0.90), nearest_rank(recs, 0.99),
                 len(recs),
                 tot["kills"], tot["reached"], tot["faults"], tot["applied"], mode_word,
                 self.kafka_kind, a.sink, a.jobs, sum(s.restarts for s in self.slots),
                 int(time.monotonic() - t_start), status,
                 " failed_trials=" + ",".join(map(str, failed)) if failed else ""), flush=True)
        return 0 if not failed else 1

    def cleanup(self):
        self.stopping.set()
        proc.kill_all()
        for s in self.slots:
            s.stop()
        if self.pg is not None:
            try:
                self.pg.stop() if (self.args.keep or self.failed_any) else self.pg.destroy()
            except proc.HarnessError as e:
                print("chaos: PostgreSQL: %s" % e, file=sys.stderr, flush=True)
        proc.kill_all()
        if self.work:
            if self.args.keep or self.failed_any:
                print("kept %s" % self.work, flush=True)
            else:
                shutil.rmtree(self.work, ignore_errors=True)


def _on_term(sig, frame):
    raise SystemExit(143)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        a = parse_args(argv)
    except UsageError as e:
        sys.stderr.write("chaos: %s\nTry '%s --help'.\n" % (e, PROG))
        return 2
    bins = proc.Bins(proc.bin_dir(a.build))
    try:
        bins.check()
        proc.need_commands("fiu-ctrl")
        points = bins.crash_points("receive")
        if not points:
            raise proc.HarnessError("kwal --list-crash-points printed no points")
        kind = services.resolve_kafka_kind(a.kafka)
        if kind == "real" and "real" not in services.kafka_kinds_available():
            raise proc.HarnessError("--kafka real: kwalh.kafka is not there")
        if a.sink == "kafka" and kind == "mock":
            raise UsageError(MOCK_NO_KAFKA_SINK + " (--kafka auto found no real one: "
                             "kwalh.kafka is not there)")
    except UsageError as e:
        sys.stderr.write("chaos: %s\nTry '%s --help'.\n" % (e, PROG))
        return 2
    except proc.HarnessError as e:
        sys.stderr.write("chaos: %s\n" % e)
        return 1
    runner = Runner(a, bins, points, kind)
    if a.plans:
        for k in runner.trials():
            tp = runner.plan_of(k)
            print("trial %d seed=%d plan=[%s] run_id=%s" % (k, a.seed, tp.describe(), tp.run_id))
        return 0
    old = signal.signal(signal.SIGTERM, _on_term)
    try:
        return runner.main()
    except proc.HarnessError as e:
        sys.stderr.write("chaos: %s\n" % e)
        runner.failed_any = True
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("chaos: interrupted\n")
        runner.failed_any = True
        return 130
    except SystemExit as e:
        sys.stderr.write("chaos: terminated\n")
        runner.failed_any = True
        return e.code if isinstance(e.code, int) else 143
    finally:
        runner.cleanup()
        signal.signal(signal.SIGTERM, old)
