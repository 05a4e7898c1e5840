"""checkers -- judge a trial's history, one checker per invariant
(DESIGN.md, "Invariants"), plus the conditions of a valid trial.

Each checker takes the plan and the history (kwalh.history) and returns a
Check: its name, whether it passed, and its problems as short phrases (the
trial line's "why:"). Checkers read data only: the events the runner
recorded, the observations it made at the end (kwal-verify's summary, the
ZooKeeper offsets, the sink's end offsets, `kwal wal verify`), and each
run's statistics (--stats-json). None of them reads kwal's log.

  runs            every run ended as its plan said (killed, crashed at its
                  point, stopped with exit 0), none hung; with --classic the
                  last recovery was classic
  workload        the producer delivered every record; the fault was applied
                  and undone, the replica repaired, ZooKeeper restarted
  no_loss         invariant 1: nothing missing (nor corrupt) in the sink
  no_dup_stored   invariant 3: nothing stored twice (beyond copies Kafka
                  itself holds: the mock may append a retried produce twice)
  in_order        a Kafka output (sink=kafka:TOPIC) keeps each source
                  partition's records in offset order within their output
                  partition (sink/FORMAT.md): kwal-verify's out_of_order is
                  0; the other outputs have no order to keep (no
                  out_of_order in their summary: passes)
  zk_offsets      every partition's ZooKeeper offset is its end offset in
                  the sink (and in Kafka, when the backend can say)
  wal_verify      `kwal wal verify` is clean, except on the replica the plan
                  failed, which it must then call failed
"""

import re
from dataclasses import dataclass, field

from .kwal import CRASH_EXIT


@dataclass
class Check:
    name: str
    ok: bool = True
    problems: list = field(default_factory=list)

    def fail(self, why):
        self.ok = False
        self.problems.append(why)
        return self


def run_outcome(ev):
    """(how, crash point reached, problem or None) of a run-end event."""
    kind, rc, killed, termed = ev["kind"], ev.get("rc"), ev.get("killed"), ev.get("termed")
    point = ev.get("point") or ""
    run = ev["run"]
    if killed == "hang":
        return "hang", False, ev.get("hang") or "run %d hung" % run
    if kind == "sigkill" and killed == "sigkill":
        return "killed@%dms" % ev.get("at_ms", 0), False, None
    if kind == "crash" and rc == CRASH_EXIT:
        return "crashed@%s%s" % (point, "(on-stop)" if termed else ""), True, None
    if kind == "crash" and rc == 0 and termed:
        return "not-reached(stopped)", False, None
    if kind == "final" and rc == 0 and termed:
        return "stopped", False, None
    word = "?" if rc is None else str(128 - rc if rc < 0 else rc)
    tail = ev.get("log_tail") or ""
    return ("exit-%s" % word, False,
            "run %d (%s) ended with exit %s%s" % (run, kind, word, ": " + tail[:200] if tail else ""))


def check_runs(plan, history, classic=False):
    c = Check("runs")
    for ev in history.events("run-end"):
        _, _, why = run_outcome(ev)
        if why:
            c.fail(why)
    ends = history.events("run-end")
    if classic and len(plan.runs) > 1 and ends and ends[-1]["kind"] == "final":
        st = ends[-1].get("stats") or {}
        if not (st.get("recovery_classic") == 1 and st.get("recovery_ms", -1) >= 0):
            c.fail("recovery-not-classic")
    return c


def check_workload(plan, history, final=True):
    """final=False: what can be judged while the trial still runs."""
    c = Check("workload")
    for ev in history.events("produce", phase="end"):
        rc = ev.get("rc")
        if rc in (0, None):
            continue
        if ev.get("mode") == "during":
            c.fail("producer-exit-%s" % rc)
        else:
            c.fail("producer-failed")
    if final:
        m = history.observed("manifest")
        produced = (m or {}).get("delivered")
        if produced is None:
            c.fail("no-manifest")
        elif produced != plan.records:
            c.fail("produced=%d/%d" % (produced, plan.records))
    for ev in history.events("fault"):
        if ev.get("phase") == "apply" and not ev.get("ok"):
            c.fail("fault-apply-failed(%s)" % ev["fault"])
        elif ev.get("phase") == "undo" and not ev.get("ok"):
            c.fail("fault-undo-failed(%s)" % ev["fault"])
    for ev in history.events("zk-restart"):
        if ev.get("rc") != 0:
            c.fail("zk-restart-failed(%s)" % ev.get("message", ""))
    for ev in history.events("repair"):
        if ev.get("rc") != 0:
            c.fail("wal-repair-failed(%s)" % ev.get("message", ""))
    for ev in history.events("note"):
        c.fail(ev["message"])
    return c


def _verify(history):
    v = history.observed("verify")
    return (v or {}).get("summary") or {}


def check_no_loss(plan, history):
    c = Check("no_loss")
    s = _verify(history)
    if not s:
        v = history.observed("verify") or {}
        err = (v.get("err") or "").strip().splitlines()
        return c.fail("verify-failed(%s)" % (err[-1] if err else "no summary"))
    if s.get("missing", 0):
        c.fail("missing=%d" % s["missing"])
    if s.get("corrupt", 0):
        c.fail("corrupt=%d" % s["corrupt"])
    return c


def dup_stored(history):
    """Duplicates stored by kwal, each extra copy once: extra copies of a
    sequence number beyond those Kafka holds, or extra copies of a source
    offset, whichever is more. A copy of an offset is also a copy of its
    sequence number, so the two are not added: with a Kafka output (no
    primary key) a record written twice is in both counts. The SQLite and
    PostgreSQL sinks never hold an offset twice (duplicate_offsets is 0
    there)."""
    s = _verify(history)
    kd = (history.observed("kafka-dups") or {}).get("count", 0)
    return max(0, s.get("duplicates", 0) - kd, s.get("duplicate_offsets", 0))


def out_of_order(history):
    """Records of a Kafka output whose source offset is not above the one
    before it in their output partition (kwal-verify --kafka's out_of_order;
    a copy read right after its original counts there too); 0 for the other
    outputs, whose summary has no such field."""
    return _verify(history).get("out_of_order", 0)


def check_no_dup_stored(plan, history):
    c = Check("no_dup_stored")
    n = dup_stored(history)
    if n:
        c.fail("dup_stored=%d" % n)
    return c


def check_in_order(plan, history):
    c = Check("in_order")
    n = out_of_order(history)
    if n:
        c.fail("out_of_order=%d" % n)
    return c


def check_zk_offsets(plan, history):
    c = Check("zk_offsets")
    o = history.observed("zk-offsets")
    if o is None or o.get("sink_end") is None:
        return c.fail("no-sink")
    bad = []
    kafka_end = o.get("kafka_end") or {}
    for p in sorted(o["sink_end"], key=int):
        want = o["sink_end"][p]
        got = o["zk"].get(p)
        if got != want:
            bad.append("%s:%s/%s" % (p, "none" if got is None else got, want))
        elif p in kafka_end and kafka_end[p] != want:
            bad.append("%s:%s/%s(kafka %s)" % (p, got, want, kafka_end[p]))
    if bad:
        c.fail("zk-offsets(got/end): " + " ".join(bad))
    return c


def wal_failed_replica(plan):
    return plan.fault.arg if plan.fault.type in ("wal-write", "wal-fsync", "wal-short") else None


def check_wal_verify(plan, history):
    """Problems may be reported only on the replica the plan failed, which
    verify must then call failed: a failed replica keeps what it held when it
    failed, as nothing writes to it until repair."""
    c = Check("wal_verify")
    o = history.observed("wal-verify")
    if o is None:
        return c.fail("kwal wal verify did not run")
    rc, lines = o["rc"], o["lines"]
    if rc == 0:
        return c
    r = wal_failed_replica(plan)
    mine = re.compile(r"^replica %s \(" % r) if r is not None else None
    other = [ln for ln in lines
             if not (mine and mine.match(ln))
             and not re.match(r"^[0-9]+ problems? in [0-9]+ replicas", ln)
             and not ln.startswith("kwal: wal verify: ")]
    called_failed = mine is not None and any(
        re.match(r"^replica %s \(.*\): replica is failed" % r, ln) for ln in lines)
    if rc != 1 or other or not called_failed:
        c.fail("kwal wal verify exit %d: %s" % (rc, (other or lines or [""])[0]))
    return c


def check_trial(plan, history, classic=False):
    """Every checker, in the order their problems are listed."""
    return [check_runs(plan, history, classic), check_workload(plan, history),
            check_no_loss(plan, history), check_no_dup_stored(plan, history),
            check_in_order(plan, history), check_zk_offsets(plan, history),
            check_wal_verify(plan, history)]


def measure(plan, history):
    """The trial's numbers, from the history."""
    s = _verify(history)
    m = history.observed("manifest") or {}
    ends = history.events("run-end")
    rec = [e["stats"]["recovery_ms"] for e in ends
           if e["run"] > 1 and e.get("stats") and e["stats"].get("recovery_ms", -1) >= 0]
    return {
        "produced": m.get("delivered") or 0,
        "stored": s.get("stored", 0),
        "missing": s.get("missing", plan.records) if s else plan.records,
        "dup_delivered": sum((e.get("stats") or {}).get("duplicate_deliveries", 0)
                             for e in ends),
        "dup_stored": dup_stored(history),
        "out_of_order": out_of_order(history),
        "kafka_dups": (history.observed("kafka-dups") or {}).get("count", 0),
        "reached": sum(1 for e in ends if run_outcome(e)[1]),
        "kills": sum(1 for e in ends if e["kind"] != "final"),
        "faults": 0 if plan.fault.type == "none" else 1,
        "applied": 1 if any(e.get("phase") == "apply" and e.get("ok")
                            for e in history.events("fault")) else 0,
        "recovery": rec,
    }
