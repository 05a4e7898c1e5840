"""0024 -- two `kwal receive` instances in one consumer group on the shared
3-node Apache Kafka cluster, one of them joining and leaving three times
while records arrive.

Run twice (two items): with librdkafka's default eager assignors, and with
kafka.partition.assignment.strategy=cooperative-sticky on both instances,
each on a fresh 8-partition topic and group. kwal-loadgen produces 100,000
keyed records of 100 B at 2,000/s. Instance A (receivers=2) runs the whole
time; instance B (1 receiver, its own WAL and sink, the same at every start)
is started and stopped with SIGTERM three times.

Checked:
* settled assignments agree everywhere: A alone before the first join,
  after each join and after each leave, the instances hold all 8 partitions
  between them (per their statistics: partitions assigned minus revoked),
  B some while it runs, and none of those counters moved for 2 s. Then
  ZooKeeper's owner nodes /consumers/<group>/owners/<topic>/0..7 each name
  the instance that holds the partition (as many per instance as its
  statistics say, and as its partitions_owned says), Kafka's own view of
  the group (kafka-consumer-groups --describe --members, one client.id per
  instance) assigns each partition once, to the instance ZooKeeper names,
  and /consumers/<group>/ids/ holds exactly the running instances, each
  with its host:pid. If a counter moves while this is read, it is read
  again (bounded);
* every SIGTERM stops its instance with exit 0, 0 duplicate deliveries, and
  a stopped B holds nothing (assigned = revoked, no owner node);
* no offset update was ever refused for lost ownership (blocks_fenced = 0,
  invariant 4);
* the protocol in effect: eager, a join revokes everything A held and a
  leave revokes A's partitions again; cooperative-sticky, a join revokes
  some but not all of A's partitions and a leave none;
* pooled over both sinks every record is stored exactly once (kwal-verify),
  B stored some, and every partition's ZooKeeper offset is its end offset
  over both sinks, summing to 100,000.

Numbers come from kwal's --stats-json, kwal-verify, ZooKeeper and Kafka's
tools, never from kwal's log.
"""
import socket
import sqlite3
import time

import pytest

from kwalh import proc, workload

TOTAL = 100_000
RATE = 2000
CYCLES = 3
PARTITIONS = 8
SETTLE_S = 180          # a generous bound: 2 cores shared with other clusters
QUIET_S = 2.0


def settings(zk, kafka, group, topic, d, client_id, extra):
    s = {
        "group.id": group,
        "topics": topic,
        "zookeeper.connect": zk.connect,
        "kafka.bootstrap.servers": kafka.bootstrap,
        "auto.offset.reset": "earliest",
        "wal.dirs": f"{d}/wal",
        "sink": f"sqlite:{d}/out.db",
        "batch.interval.ms": 500,
        "kafka.client.id": client_id,     # tells the instances apart in Kafka's tools
        "kafka.session.timeout.ms": 10000,
        "kafka.heartbeat.interval.ms": 1000,
    }
    s.update(extra)
    return s


def held(stats):
    """Partitions an instance holds now, by its own counters."""
    if stats is None:
        return 0
    return (stats["partitions_assigned_stored"] + stats["partitions_assigned_reset"]
            - stats["partitions_revoked"])


def signature(kwals):
    """The counters that move on every (re)assignment."""
    sig = []
    for k in kwals:
        s = k.stats() or {}
        sig.append((s.get("partitions_assigned_stored"), s.get("partitions_assigned_reset"),
                    s.get("partitions_revoked"), s.get("partitions_owned")))
    return tuple(sig)


def kafka_assignment(kafka, group, topic):
    """{client.id: set of partitions} from Kafka's own consumer-groups tool,
    or None while the group rebalances (or the tool cannot say)."""
    r = kafka.run_tool("consumer-groups", "--bootstrap-server", kafka.bootstrap,
                       "--describe", "--group", group, "--members", "--verbose",
                       check=False, timeout=120)
    if r.returncode != 0 or "rebalancing" in (r.stdout + r.stderr).lower():
        return None
    lines = [ln.split() for ln in r.stdout.splitlines() if ln.strip()]
    head = next((ln for ln in lines if ln and ln[0] == "GROUP"), None)
    if head is None:
        return None
    ci = head.index("CLIENT-ID")
    ai = head.index("CURRENT-ASSIGNMENT") if "CURRENT-ASSIGNMENT" in head \
        else head.index("ASSIGNMENT")
    res = {}
    for ln in lines:
        if ln is head or ln[0] != group or len(ln) != len(head):
            continue
        parts = res.setdefault(ln[ci], [])
        for item in ln[ai].split(";"):
            if item.startswith(topic + ":"):
                parts += [int(p) for p in item[len(topic) + 1:].split(",") if p.isdigit()]
    return res


class Churn:
    def __init__(self, bins, zk, kafka, kwal_factory, names, tmp, extra):
        self.bins, self.zk, self.kafka, self.kwal_factory = bins, zk, kafka, kwal_factory
        self.topic, self.group = names.topic(), names.group()
        kafka.create_topic(self.topic, PARTITIONS, rf=3)
        self.da, self.db_ = tmp / "a", tmp / "b"
        self.a_db, self.b_db = str(self.da / "out.db"), str(self.db_ / "out.db")
        self.a_conf = settings(zk, kafka, self.group, self.topic, self.da, "kwal-a", extra)
        self.a_conf["receivers"] = 2
        self.b_conf = settings(zk, kafka, self.group, self.topic, self.db_, "kwal-b", extra)
        self.manifest = str(tmp / "m")
        self.lg = workload.Loadgen(bins, kafka.bootstrap, self.topic, TOTAL, self.manifest,
                                   str(tmp / "lg"), rate=RATE)
        self.a = None
        self.b = None
        self.b_runs = []
        self.host = socket.gethostname()

    def stored(self):
        return (workload.sqlite_count(self.a_db, self.topic)
                + workload.sqlite_count(self.b_db, self.topic))

    def running(self):
        return [k for k in (self.a, self.b) if k is not None]

    def settle(self, what):
        """Wait for a settled, quiet assignment, then check ZooKeeper's
        owner and ids nodes and Kafka's view of the group against it (see
        the module docstring). Returns {"a": n, "b": n} partitions held."""
        deadline = time.monotonic() + SETTLE_S
        last, quiet_since, why = None, time.monotonic(), "no statistics yet"
        while True:
            for k, n in ((self.a, "A"), (self.b, "B")):
                if k is not None and not k.alive():
                    pytest.fail(f"{what}: instance {n} died ({k.log_tail(3)})")
            if time.monotonic() > deadline:
                pytest.fail(f"{what}: no settled assignment within {SETTLE_S} s: {why}")
            sig = signature(self.running())
            if sig != last:
                last, quiet_since = sig, time.monotonic()
            ha, hb = held(self.a.stats()), held(self.b.stats()) if self.b else 0
            if None in (self.a.stats(), self.b.stats() if self.b else {}):
                why = "no statistics yet"
            elif ha + hb != PARTITIONS or (self.b is not None and hb == 0):
                why = f"A holds {ha}, B {hb} (by their statistics)"
            elif time.monotonic() - quiet_since < QUIET_S:
                why = "counters still moving"
            else:
                snap = self.snapshot()
                if signature(self.running()) == sig:
                    ok, why = self.agrees(snap, ha, hb)
                    if ok:
                        print(f"{what}: settled, A {ha} B {hb}; owner nodes {snap[0]}; "
                              f"Kafka {snap[2]}")
                        return {"a": ha, "b": hb}
                last = None
            time.sleep(0.5)

    def snapshot(self):
        base = f"/consumers/{self.group}"
        owners = {}
        for c in self.zk.children(f"{base}/owners/{self.topic}"):
            owners[int(c)] = self.zk.get(f"{base}/owners/{self.topic}/{c}")
        ids = {c: self.zk.get(f"{base}/ids/{c}") for c in self.zk.children(f"{base}/ids")}
        return owners, ids, kafka_assignment(self.kafka, self.group, self.topic)

    def agrees(self, snap, ha, hb):
        """(True, "") when ZooKeeper and Kafka agree with the instances'
        counters, else (False, why) -- the caller retries until its bound."""
        owners, ids, kafka = snap
        inst = {}
        for who, k in (("A", self.a), ("B", self.b)):
            if k is None:
                continue
            mine = [i for i, data in ids.items() if data == f"{self.host}:{k.pid}"]
            if len(mine) != 1:
                return False, f"ids nodes {ids}: not one for {who} (pid {k.pid})"
            inst[who] = mine[0]
        if len(ids) != len(inst):
            return False, f"ids nodes {ids}: not only the running instances {inst}"
        if sorted(owners) != list(range(PARTITIONS)):
            return False, f"owner nodes {owners}: not partitions 0..{PARTITIONS - 1}"
        for who, want in (("A", ha), ("B", hb)):
            if who not in inst:
                continue
            mine = sorted(p for p, o in owners.items() if o == inst[who])
            k = self.a if who == "A" else self.b
            if len(mine) != want or k.stats()["partitions_owned"] != want:
                return False, (f"{who} ({inst[who]}) holds {want} by its counters, "
                               f"partitions_owned {k.stats()['partitions_owned']}, "
                               f"owner nodes {owners}")
        if any(o not in inst.values() for o in owners.values()):
            return False, f"owner nodes {owners} name an instance not running ({inst})"
        if kafka is None:
            return False, "Kafka's consumer-groups tool shows no settled assignment"
        flat = sorted(p for ps in kafka.values() for p in ps)
        if flat != list(range(PARTITIONS)):
            return False, f"Kafka assigns {kafka}: not each partition once"
        for who, cid in (("A", "kwal-a"), ("B", "kwal-b")):
            zk_side = sorted(p for p, o in owners.items() if o == inst.get(who))
            if sorted(kafka.get(cid, [])) != zk_side:
                return False, f"Kafka assigns {kafka}, ZooKeeper's owner nodes say {owners}"
        return True, ""

    def stop(self, k, who):
        rc = k.stop(grace=120)
        assert rc == 0, f"{who} exited {rc} after SIGTERM ({k.log_tail(3)})"
        s = k.stats()
        assert s["final"] is True
        assert s["duplicate_deliveries"] == 0, f"{who}: duplicate deliveries: {s}"
        assert s["blocks_fenced"] == 0, f"{who}: offset updates refused (ownership lost): {s}"
        return s


@pytest.mark.parametrize("protocol", ["eager", "cooperative-sticky"])
def test_group_churn(protocol, bins, zk, kafka3, tmp_path, names, kwal_factory):
    extra = {} if protocol == "eager" else \
        {"kafka.partition.assignment.strategy": "cooperative-sticky"}
    c = Churn(bins, zk, kafka3, kwal_factory, names, tmp_path, extra)
    c.lg.start()
    c.a = kwal_factory(["receive"], c.a_conf, name="a").start()
    c.settle("A alone")
    for cycle in range(1, CYCLES + 1):
        rev0 = c.a.stats()["partitions_revoked"]
        c.b = kwal_factory(["receive"], c.b_conf, name=f"b{cycle}-").start()
        c.b_runs.append(c.b)
        h = c.settle(f"join {cycle} ({c.stored()} stored)")
        rev1 = c.a.stats()["partitions_revoked"]
        if protocol == "eager":
            assert rev1 - rev0 >= PARTITIONS, \
                f"join {cycle}: eager, but A revoked {rev1 - rev0} of its {PARTITIONS}"
        else:
            assert 0 < rev1 - rev0 < PARTITIONS, \
                f"join {cycle}: cooperative, but A revoked {rev1 - rev0} of {PARTITIONS}"
        s = c.stop(c.b, f"B ({cycle})")
        assert held(s) == 0 and s["partitions_owned"] == 0, f"B exited still holding: {s}"
        c.b = None
        c.settle(f"leave {cycle}")
        rev2 = c.a.stats()["partitions_revoked"]
        if protocol == "eager":
            assert rev2 - rev1 >= h["a"], \
                f"leave {cycle}: eager, but A revoked {rev2 - rev1} of its {h['a']}"
        else:
            assert rev2 == rev1, f"leave {cycle}: cooperative, but A revoked {rev2 - rev1}"

    deadline = time.monotonic() + 300
    while not c.lg.done():
        assert time.monotonic() < deadline, "kwal-loadgen did not finish"
        time.sleep(0.5)
    assert c.lg.rc == 0, "kwal-loadgen failed"
    deadline = time.monotonic() + 180
    while c.stored() < TOTAL:
        assert c.a.alive(), f"A died ({c.a.log_tail(3)})"
        assert time.monotonic() < deadline, f"only {c.stored()} of {TOTAL} stored (pooled)"
        time.sleep(0.5)
    c.stop(c.a, "A")

    v = verify_pooled(bins, c.manifest, [c.a_db, c.b_db])
    assert (v["expected"], v["stored"], v["missing"], v["duplicates"], v["duplicate_offsets"],
            v["corrupt"]) == (TOTAL, TOTAL, 0, 0, 0, 0), v.summary
    sa, sb = workload.sqlite_count(c.a_db, c.topic), workload.sqlite_count(c.b_db, c.topic)
    assert sa + sb == TOTAL, (sa, sb)
    assert sb > 0, "instance B stored nothing"

    zoff = {p: v or 0 for p, v in c.zk.offsets(c.group, c.topic, PARTITIONS).items()}
    ends = pooled_end_offsets(c.a_db, c.b_db, c.topic)
    assert zoff == ends, f"ZooKeeper {zoff} != end offsets over both sinks {ends}"
    assert sum(zoff.values()) == TOTAL


def verify_pooled(bins, manifest, dbs):
    """kwal-verify over several sqlite sinks, pooled."""
    argv = [bins.verify, "--manifest", manifest]
    for db in dbs:
        argv += ["--sqlite", db]
    rc, out, err = proc.run(argv, 300)
    r = workload.VerifyResult(rc, out.splitlines(), err)
    assert r.ok, r.as_dict()
    return r


def pooled_end_offsets(a_db, b_db, topic):
    """{partition: MAX(offset)+1 over both sinks, 0 when none}."""
    db = sqlite3.connect(f"file:{a_db}?mode=ro", uri=True)
    try:
        db.execute("ATTACH ? AS b", (f"file:{b_db}?mode=ro",))
        res = {}
        for p in range(PARTITIONS):
            res[p] = db.execute(
                "SELECT COALESCE(MAX(o) + 1, 0) FROM (SELECT offset AS o FROM main.records "
                "WHERE topic=? AND partition=? UNION ALL SELECT offset FROM b.records "
                "WHERE topic=? AND partition=?)", (topic, p, topic, p)).fetchone()[0]
        return res
    finally:
        db.close()
