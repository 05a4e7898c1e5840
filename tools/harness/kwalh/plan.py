"""plan -- a chaos trial's plan, drawn from a PRNG seeded with (seed, trial).

Nothing but the plan consumes the PRNG, so `--seed S --trial K` draws trial
K's plan again. The PRNG and the order of the draws are those of the shell
runner this replaced (tools/chaos.sh): a 31-bit LCG with glibc's constants,
seeded from (seed, trial) and mixed; rnd(N) takes 0..N-1 from the state's
high bits. With the mock cluster a seed draws the same plans as it did. The
real cluster's fault menu is larger (broker SIGKILL, SIGSTOP, leader moves),
so its plans differ from the mock's from the fault on.

A plan:

  produce   up front (kwal-loadgen before kwal starts) or during (--rate,
            in the background for 3-10 s, across the kills);
  runs      1-3 runs that end abruptly -- SIGKILL after 0.2-7 s, or a crash
            point (KWAL_CRASH_AT=point:nth), given SIGTERM if not reached
            once everything is in and its time has passed -- some holding
            their batches back (batch.interval.ms=60000) so that the next
            recovery has a backlog; then a final run until everything is
            stored, stopped with SIGTERM;
  fault     none, or one of FAULTS at a moment of a run;
  run_id    the workload's run id (16 hex digits).
"""

from dataclasses import dataclass, field, asdict

MOD = 2147483648

# fault types, in draw order (index = draw - 3); the real cluster adds three
FAULTS_MOCK = ("wal-write", "wal-fsync", "wal-short", "wal-delay", "kafka-rtt", "broker-down",
               "zk-restart")
FAULTS_REAL = FAULTS_MOCK + ("broker-kill", "broker-pause", "leader-move")
# faults of one WAL replica, failed through libfiu; the others
WAL_FAILS = ("wal-write", "wal-fsync", "wal-short")


class Prng:
    """The shell runner's LCG, draw for draw."""

    def __init__(self, seed, trial):
        self.s = (seed * 69069 + trial * 362437 + 1013904223) % MOD
        for _ in range(8):
            self._step()

    def _step(self):
        self.s = (self.s * 1103515245 + 12345) % MOD

    def rnd(self, n):
        """0..n-1"""
        self._step()
        return (self.s // 65536) % n

    def range(self, lo, hi):
        """lo..hi"""
        return lo + self.rnd(hi - lo + 1)


@dataclass
class Run:
    kind: str            # sigkill | crash | final
    at_ms: int = 0       # sigkill: when; crash: not before (then SIGTERM once all is in)
    point: str = ""      # crash: POINT:NTH
    backlog: bool = False

    def describe(self):
        if self.kind == "sigkill":
            return "sigkill@%dms" % self.at_ms
        return self.point


@dataclass
class Fault:
    type: str = "none"
    run: int = 0         # the run (1-based) it hits
    at_ms: int = 0       # after that run's start
    arg: int = 0         # replica, broker (1..3) or partition
    ms: int = 0          # delay
    dur_ms: int = 0      # how long it lasts (0: at once)
    node: int = 0        # leader-move: the new leader
    repair: bool = False  # WAL replica failures: kwal wal repair after the run

    def describe(self):
        t = self.type
        if t in WAL_FAILS:
            d = "r%d" % self.arg
        elif t == "wal-delay":
            d = "r%d:%dms/%dms" % (self.arg, self.ms, self.dur_ms)
        elif t == "kafka-rtt":
            d = "b%d:%dms/%dms" % (self.arg, self.ms, self.dur_ms)
        elif t in ("broker-down", "broker-kill", "broker-pause"):
            d = "b%d/%dms" % (self.arg, self.dur_ms)
        elif t == "leader-move":
            d = "p%d->b%d" % (self.arg, self.node)
        else:
            d = ""
        s = "%s%s@run%d+%dms" % (t, ":" + d if d else "", self.run, self.at_ms)
        return s + ("+repair" if self.repair else "")


@dataclass
class TrialPlan:
    seed: int
    trial: int
    records: int
    partitions: int
    kafka: str
    produce: str = "upfront"     # upfront | during
    rate: int = 0
    runs: list = field(default_factory=list)
    fault: Fault = field(default_factory=Fault)
    run_id: str = ""
    kills_desc: str = ""

    @property
    def kills(self):
        return len(self.runs) - 1

    def describe(self):
        p = "produce=upfront" if self.produce == "upfront" else "produce=during@%d/s" % self.rate
        p += " kills=%d[%s]" % (self.kills, self.kills_desc)
        if self.fault.type == "none":
            p += " fault=none"
        else:
            p += " fault=" + self.fault.describe()
        return p

    def as_dict(self):
        d = asdict(self)
        d["describe"] = self.describe()
        return d


def pick_nth(rng, point, records):
    """A pass count for a crash point (what a 3000-record trial passes: a
    few dozen blocks, batches, WAL writes)."""
    if point == "receiver.polled":
        return rng.range(1, records)
    if point in ("block.cut", "wal.mid-write", "wal.before-fsync", "wal.before-ack",
                 "pipeline.wal-acked", "pipeline.tracked", "pipeline.committed"):
        return rng.range(1, 20)
    if point in ("batch.allocated", "sink.mid-txn", "sink.committed"):
        return rng.range(1, 4)
    if point in ("wal.segment-roll", "wal.cleanup", "recovery.replay", "receiver.revoke"):
        return rng.range(1, 2)
    return rng.range(1, 5)


def draw(seed, trial, records, partitions, points, kafka="mock"):
    """Trial `trial`'s plan. points: kwal receive's crash points in
    data-flow order (kwal --list-crash-points)."""
    rng = Prng(seed, trial)
    tp = TrialPlan(seed=seed, trial=trial, records=records, partitions=partitions, kafka=kafka)
    if rng.rnd(2) == 0:
        tp.produce, tp.rate = "upfront", 0
    else:
        r = rng.range(3000, 10000)
        tp.produce, tp.rate = "during", (records * 1000 + r - 1) // r
    kills = rng.range(1, 3)
    descs = []          # one per kill, edited as the shell runner did
    prev_backlog = False
    runs = []
    for i in range(1, kills + 1):
        if rng.rnd(2) == 0:
            at = rng.range(200, 7000)
            run = Run("sigkill", at_ms=at)
            desc = run.describe()
        else:
            pt = points[rng.rnd(len(points))]
            if pt == "recovery.replay" and not prev_backlog:
                # nothing to replay without a backlog: the run before holds
                # one (and, killed at a set time, runs past the group join)
                if i > 1:
                    prev = runs[-1]
                    prev.backlog = True
                    if prev.kind == "sigkill" and prev.at_ms < 5000:
                        prev.at_ms += 5000
                        descs[-1] = prev.describe()
                    descs[-1] += "+backlog"
                else:
                    pt = points[rng.rnd(len(points))]   # run 1 recovers an empty WAL
                    if pt == "recovery.replay":
                        pt = "pipeline.committed"
            nth = pick_nth(rng, pt, records)
            at = rng.range(200, 7000)
            run = Run("crash", at_ms=at, point="%s:%d" % (pt, nth))
            desc = run.describe()
        if rng.rnd(5) == 0:
            run.backlog = True
            desc += "+backlog"
            prev_backlog = True
        else:
            prev_backlog = False
        runs.append(run)
        descs.append(desc)
    runs.append(Run("final"))
    tp.runs = runs
    tp.kills_desc = ",".join(descs)

    menu = FAULTS_REAL if kafka == "real" else FAULTS_MOCK
    r = rng.rnd(len(menu) + 3)
    f = Fault(type="none" if r < 3 else menu[r - 3])
    f.run = rng.range(1, len(runs))
    f.at_ms = rng.range(300, 5000)
    hit = runs[f.run - 1]
    if hit.kind == "sigkill" and hit.at_ms > 400:   # before the kill
        f.at_ms = 300 + (f.at_ms - 300) * (hit.at_ms - 400) // 4700
    if f.type in WAL_FAILS:
        f.arg = rng.rnd(3)
        f.repair = rng.rnd(2) == 1
    elif f.type == "wal-delay":
        f.arg = rng.rnd(3)
        f.ms = rng.range(20, 300)
        f.dur_ms = rng.range(1000, 5000)
    elif f.type == "kafka-rtt":
        f.arg = rng.range(1, 3)
        f.ms = rng.range(50, 1000)
        f.dur_ms = rng.range(1000, 5000)
    elif f.type in ("broker-down", "broker-kill", "broker-pause"):
        f.arg = rng.range(1, 3)
        f.dur_ms = rng.range(1000, 5000)
    elif f.type == "leader-move":
        f.arg = rng.rnd(partitions)
        f.node = rng.range(1, 3)
    tp.fault = f
    a, b, c, d = (rng.rnd(65536) for _ in range(4))
    tp.run_id = "%04x%04x%04x%04x" % (a, b, c, d)
    return tp
