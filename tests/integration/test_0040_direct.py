"""0040 -- `kwal direct` end to end on a real ZooKeeper server and the shared
3-node Apache Kafka cluster (every topic of its own, replication factor 3).

a  Bad input: no group.id, a topic pattern, a malformed direct.start.offsets
   item, sink=jsonl without --at-least-once: exit 2 with a one-line reason
   naming the key; an unknown option: a short usage error.
b  100,000 records over 8 partitions, auto.offset.reset=earliest: all stored
   once (kwal-verify), no duplicate deliveries (statistics and the sink's
   batches table), SIGTERM exits 0, ZooKeeper offsets = end offsets, and per
   partition the stored ranges (sink/FORMAT.md, direct_ranges) are
   contiguous -- each batch's from is the previous batch's until -- and end
   at the end offset; every record's end-to-end latency was measured, none
   longer than the test.
c  SIGKILL mid-run and restart: records produced at 4,000/s while kwal direct
   runs; SIGKILL once 8,000 are stored, start again: every record stored
   once, no duplicate deliveries (the ranges committed with the output say
   where to go on).
d  Start positions: latest (records already there are not read; once both
   partitions are planned -- partitions_owned -- only records produced after
   are stored); explicit direct.start.offsets (partition 0 from offset 100,
   partition 1 by auto.offset.reset=earliest).
e  max.rate.per.partition=100 with batch.interval.ms=1000: no stored range is
   longer than 100 offsets, and it takes several batches.
f  Crash points of the direct path at pass 3 (direct.read, sink.mid-txn,
   direct.stored; one item each): exit 99 there, then a normal run: 0
   missing, 0 duplicates stored, ZooKeeper = end offsets.
g  A crash at direct.stored:1 when that batch took everything: the restart
   has nothing to read and must still bring ZooKeeper up to the stored
   ranges (found by kwal compare).
h  backpressure.enabled with records arriving while it runs: every record
   stored once.
i  Two instances of one group on one sink database: the first owns every
   partition in ZooKeeper (owner nodes name it) until the second registers,
   then each holds two (the assignment; test_0041 has more); SIGKILL the first
   mid-run and the second takes its partitions over once the first's
   ZooKeeper session expires, going on from the ranges in the shared
   database: every record stored once, the ranges contiguous, and the owner
   nodes name the second.

Numbers come from --stats-json, kwal-verify, ZooKeeper and the sink, never from
kwal's log. ZooKeeper runs with a 500 ms tick (crashlib.zk_fast) so that the
3 s session of part i is granted.
"""
import os
import sqlite3
import subprocess
import time

import pytest

from crashlib import wait_until, zk_fast  # noqa: F401 (fixture)
from kwalh import proc, workload
from kwalh.kwal import CRASH_EXIT, consuming
from kwtest import check_latency


def _direct_points():
    try:
        pts = proc.Bins(proc.bin_dir()).crash_points("direct")
    except (OSError, subprocess.SubprocessError):
        pts = []
    return pts + ["sink.mid-txn"] if pts else []


DIRECT_POINTS = _direct_points()


class Direct:
    """A topic, a group, a directory with its sink, and kwal direct runs."""

    def __init__(self, bins, zk, kafka, kwal_factory, names, d, partitions, topic=None):
        """topic: an existing topic to read (default: a new one)."""
        self.bins, self.zk, self.kafka, self.kwal_factory = bins, zk, kafka, kwal_factory
        self.topic, self.group = topic or names.topic(), names.group()
        self.partitions = partitions
        self.d = str(d)
        os.makedirs(self.d, exist_ok=True)
        self.db = os.path.join(self.d, "out.db")
        self.manifest = os.path.join(self.d, "m")
        self.settings = {
            "group.id": self.group,
            "topics": self.topic,
            "zookeeper.connect": zk.connect,
            "kafka.bootstrap.servers": kafka.bootstrap,
            "auto.offset.reset": "earliest",
            "sink": f"sqlite:{self.db}",
            "batch.interval.ms": 300,
        }
        self.n = 0
        if topic is None:
            kafka.create_topic(self.topic, partitions, rf=3)

    def kwal(self, xargs=(), env=None, name="run", **over):
        s = dict(self.settings)
        s.update(over)
        self.n += 1
        return self.kwal_factory(["direct"], s, name=f"{name}{self.n}-", xargs=xargs, env=env)

    def produce(self, n, manifest=None, rate=None, background=False):
        lg = workload.Loadgen(self.bins, self.kafka.bootstrap, self.topic, n,
                              manifest or self.manifest, os.path.join(self.d, f"lg{self.n}"),
                              rate=rate)
        if background:
            return lg.start()
        assert lg.run(timeout=300) == 0, "kwal-loadgen failed"
        return lg

    def stored(self):
        return workload.sqlite_count(self.db, self.topic)

    def wait_stored(self, n, timeout, alive=None):
        """Wait until n records are stored; if not, fail naming every
        partition whose sink end offset is behind Kafka's, with its owner
        node, so that a stall can be told from a slow run."""
        try:
            wait_until(lambda: self.stored() >= n, timeout, f"{n:,} stored", alive)
        except pytest.fail.Exception as e:
            ends = self.kafka.end_offsets(self.topic) or {}
            sink = workload.sqlite_end_offsets(self.db, self.topic, self.partitions)
            who = owners(self.zk, self.group, self.topic, self.partitions)
            behind = {p: (sink.get(p), e_, who.get(p)) for p, e_ in sorted(ends.items())
                      if sink.get(p) != e_}
            pytest.fail(f"{e}; {self.stored()} stored; partitions behind Kafka's end "
                        f"(sink end, Kafka end, owner): {behind}")

    def sql(self, q, *args):
        db = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)
        try:
            return db.execute(q, args).fetchall()
        finally:
            db.close()

    def stop(self, k):
        rc = k.stop(grace=120)
        assert rc == 0, f"kwal direct exited {rc} after SIGTERM ({k.log_tail(3)})"
        s = k.stats()
        assert s["final"] is True and s["mode"] == "direct", s
        assert s["duplicate_deliveries"] == 0, s
        return s

    def verify_once(self, n, manifest=None):
        """kwal-verify: n stored once, nothing missing; the sink counted no
        duplicate delivery either."""
        v = workload.verify(self.bins, manifest=manifest or self.manifest, sqlite=self.db)
        assert v.ok, v.as_dict()
        assert (v["expected"], v["stored"], v["missing"], v["duplicates"],
                v["duplicate_offsets"], v["corrupt"]) == (n, n, 0, 0, 0, 0), v.summary
        dd = self.sql("SELECT COALESCE(SUM(duplicates), 0) FROM batches")[0][0]
        assert dd == 0, f"{dd} duplicate deliveries counted by the sink"

    def check_offsets(self, total):
        zoff = {p: v or 0 for p, v in
                self.zk.offsets(self.group, self.topic, self.partitions).items()}
        ends = workload.sqlite_end_offsets(self.db, self.topic, self.partitions)
        assert zoff == ends, f"ZooKeeper {zoff} != sink end offsets {ends}"
        assert sum(zoff.values()) == total

    def ranges_contiguous(self):
        """Per partition the stored ranges follow each other without gap or
        overlap and the last ends at the sink's end offset."""
        bad = self.sql("SELECT partition, batch, prev, from_offset FROM (SELECT partition, "
                       "batch, from_offset, LAG(until_offset) OVER (PARTITION BY topic, "
                       "partition ORDER BY batch) AS prev FROM direct_ranges WHERE topic = ?) "
                       "WHERE prev IS NOT NULL AND prev != from_offset", self.topic)
        assert not bad, f"ranges not starting where the previous one ended: {bad[:10]}"
        bad = self.sql("SELECT partition, u FROM (SELECT partition, MAX(until_offset) AS u "
                       "FROM direct_ranges WHERE topic = ? GROUP BY partition) r WHERE u != "
                       "(SELECT MAX(offset) + 1 FROM records WHERE topic = ? AND partition = "
                       "r.partition)", self.topic, self.topic)
        assert not bad, f"partitions whose last range does not end at the end offset: {bad}"


def owners(zk, group, topic, partitions):
    return {p: zk.get(f"/consumers/{group}/owners/{topic}/{p}") for p in range(partitions)}


# --- a. bad input ---------------------------------------------------------------

def test_bad_input(bins, zk_fast, kafka3, tmp_path, names, kwal_factory):
    x = Direct(bins, zk_fast, kafka3, kwal_factory, names, tmp_path / "bad", 2)
    k = x.kwal()
    t = x.topic
    cases = [
        (["-X", "group.id="], "kwal: direct: group.id: required by kwal direct"),
        (["-X", "topics=^d.*"], "kwal direct takes topic names, not patterns"),
        (["-X", f"direct.start.offsets={t}:x:1"], f"direct.start.offsets: '{t}:x:1': bad partition"),
        (["-X", "sink=jsonl"], "needs sink=sqlite:PATH"),
    ]
    for extra, want in cases:
        rc, out, err = proc.run([bins.kwal, "direct", "-c", k.conf, *extra], 120)
        assert rc == 2, (extra, rc, err)
        assert want in err, (extra, err)
        assert len([ln for ln in err.splitlines() if ln.startswith("kwal: ")]) == 1, (extra, err)
    rc, out, err = proc.run([bins.kwal, "direct", "-c", k.conf, "--no-such"], 120)
    assert rc == 2, (rc, err)
    assert 0 < len(err.strip().splitlines()) <= 2, f"more than a short usage error: {err}"


# --- b. 100,000 records --------------------------------------------------------------

def test_100k_records(bins, zk_fast, kafka3, tmp_path, names, kwal_factory):
    since = time.monotonic()
    x = Direct(bins, zk_fast, kafka3, kwal_factory, names, tmp_path / "a", 8)
    x.produce(100_000)
    k = x.kwal().start()
    wait_until(lambda: x.stored() >= 100_000, 300, "100,000 stored", k.alive)
    s = x.stop(k)
    assert s["records_stored"] == 100_000 and s["source_loss_records"] == 0, s
    check_latency(s, 100_000, since)
    x.verify_once(100_000)
    x.check_offsets(100_000)
    x.ranges_contiguous()


def test_backlog_in_bounded_batches(bins, zk_fast, kafka3, tmp_path, names, kwal_factory):
    """batch.max.bytes=1M over a backlog of 50,000 records: no batch holds
    more than 1 MiB of records weighed as key + payload + 256 B (at least
    356 B each here), so it takes many batches; every record stored once."""
    x = Direct(bins, zk_fast, kafka3, kwal_factory, names, tmp_path / "b2", 4)
    x.produce(50_000)
    k = x.kwal(**{"batch.max.bytes": "1M", "batch.interval.ms": 60_000}).start()
    wait_until(lambda: x.stored() >= 50_000, 300, "50,000 stored", k.alive)
    s = x.stop(k)
    assert s["records_stored"] == 50_000 and s["duplicate_deliveries"] == 0, s
    with sqlite3.connect(x.db) as db:
        biggest, n = db.execute("SELECT MAX(records), COUNT(*) FROM batches").fetchone()
    assert biggest * 356 <= (1 << 20) + 356, (biggest, n)
    assert n >= 50_000 * 356 // (1 << 20), (biggest, n)
    # a batch cut short by the bound is followed at once by the next one:
    # with a 60 s interval the backlog is done within the first interval
    assert s["batches"] == n, s
    x.verify_once(50_000)
    x.check_offsets(50_000)
    x.ranges_contiguous()


# --- c. SIGKILL mid-run and restart -------------------------------------------------

def test_sigkill_and_restart(bins, zk_fast, kafka3, tmp_path, names, kwal_factory):
    x = Direct(bins, zk_fast, kafka3, kwal_factory, names, tmp_path / "c", 4)
    lg = x.produce(20_000, rate=4000, background=True)
    k = x.kwal().start()
    wait_until(lambda: x.stored() >= 8000, 120, "8,000 stored", k.alive)
    k.kill()
    s1 = x.stored()
    assert s1 < 20_000, "everything stored before SIGKILL: not mid-run"
    k = x.kwal().start()
    wait_until(lg.done, 180, "kwal-loadgen finishes")
    assert lg.rc == 0, "kwal-loadgen failed"
    wait_until(lambda: x.stored() >= 20_000, 180, "20,000 stored", k.alive)
    x.stop(k)
    x.verify_once(20_000)
    x.check_offsets(20_000)
    x.ranges_contiguous()


# --- d. start positions ---------------------------------------------------------------

def test_start_positions(bins, zk_fast, kafka3, tmp_path, names, kwal_factory):
    # latest: the records already there are not read, the ones produced after are
    x = Direct(bins, zk_fast, kafka3, kwal_factory, names, tmp_path / "dl", 2)
    x.produce(1000, manifest=str(tmp_path / "before"))          # not wanted
    k = x.kwal(**{"auto.offset.reset": "latest"}).start()
    wait_until(lambda: (k.stats() or {}).get("partitions_owned", 0) >= 2, 120,
               "both partitions planned", k.alive)
    x.produce(500)
    wait_until(lambda: x.stored() >= 500, 120, "500 stored", k.alive)
    time.sleep(1)
    x.stop(k)
    x.verify_once(500)
    assert x.stored() == 500, f"{x.stored()} stored, expected only the 500 new ones"

    # explicit: partition 0 from offset 100, partition 1 from earliest
    ends = kafka3.end_offsets(x.topic)
    want = ends[0] - 100 + ends[1]
    y = Direct(bins, zk_fast, kafka3, kwal_factory, names, tmp_path / "dx", 2, topic=x.topic)
    k = y.kwal(**{"direct.start.offsets": f"{x.topic}:0:100"}).start()
    wait_until(lambda: y.stored() >= want, 120, f"{want} stored", k.alive)
    time.sleep(1)
    y.stop(k)
    lo = dict(y.sql("SELECT partition, MIN(offset) FROM records GROUP BY partition"))
    assert lo == {0: 100, 1: 0}, f"first offsets stored {lo}, expected {{0: 100, 1: 0}}"
    assert y.stored() == want, f"{y.stored()} stored, expected {want}"


# --- e. max.rate.per.partition ---------------------------------------------------------

def test_max_rate_per_partition(bins, zk_fast, kafka3, tmp_path, names, kwal_factory):
    x = Direct(bins, zk_fast, kafka3, kwal_factory, names, tmp_path / "e", 2)
    x.produce(2000)
    k = x.kwal(**{"max.rate.per.partition": 100, "batch.interval.ms": 1000}).start()

    def batches():
        if not os.path.exists(x.db):
            return 0
        try:
            return x.sql("SELECT COUNT(DISTINCT batch) FROM direct_ranges")[0][0]
        except sqlite3.Error:
            return 0

    wait_until(lambda: batches() >= 3, 120, "3 batches", k.alive)
    x.stop(k)
    longest = x.sql("SELECT MAX(until_offset - from_offset) FROM direct_ranges")[0][0]
    assert longest <= 100, f"a range of {longest} offsets with max.rate.per.partition=100"
    nb, rows = batches(), x.stored()
    assert 0 < rows <= nb * 200, f"{rows} records in {nb} batches: over 100 per partition"


# --- f, g. crash points of the direct path ------------------------------------------

def crash_direct(x, spec, timeout=180, **over):
    k = x.kwal(env={"KWAL_CRASH_AT": spec}, **over).start()
    rc = k.wait(timeout)
    if rc is None:
        k.kill()
        pytest.fail(f"{spec}: kwal direct did not reach its crash point in {timeout} s")
    assert rc == CRASH_EXIT, f"{spec}: expected exit {CRASH_EXIT}, got {rc} ({k.log_tail(3)})"


@pytest.mark.parametrize("point", DIRECT_POINTS or ["none-listed"])
def test_crash_point(point, bins, zk_fast, kafka3, tmp_path, names, kwal_factory):
    assert point != "none-listed", "kwal --list-crash-points lists no direct crash points"
    x = Direct(bins, zk_fast, kafka3, kwal_factory, names, tmp_path / "f", 4)
    x.produce(6000)
    crash_direct(x, f"{point}:3", **{"max.rate.per.partition": 1000, "batch.interval.ms": 200})
    k = x.kwal().start()
    wait_until(lambda: x.stored() >= 6000 and consuming(k.stats() or {}), 180,
               "6,000 stored after the restart", k.alive)
    x.stop(k)
    x.verify_once(6000)
    x.check_offsets(6000)
    x.ranges_contiguous()


def test_crash_after_last_batch(bins, zk_fast, kafka3, tmp_path, names, kwal_factory):
    x = Direct(bins, zk_fast, kafka3, kwal_factory, names, tmp_path / "g", 4)
    x.produce(1000)
    crash_direct(x, "direct.stored:1")
    assert x.stored() == 1000, f"the first batch stored {x.stored()}, not all 1000"
    k = x.kwal().start()
    wait_until(lambda: x.zk.offsets_sum(x.group, x.topic, 4) == 1000, 120,
               "ZooKeeper offsets at the stored ranges after the restart", k.alive, step=0.5)
    x.stop(k)
    x.verify_once(1000)
    x.check_offsets(1000)


# --- h. back-pressure ----------------------------------------------------------------

def test_backpressure(bins, zk_fast, kafka3, tmp_path, names, kwal_factory):
    x = Direct(bins, zk_fast, kafka3, kwal_factory, names, tmp_path / "h", 2)
    k = x.kwal(**{"backpressure.enabled": "true", "backpressure.min.rate": 200}).start()
    wait_until(lambda: consuming(k.stats() or {}), 120, "kwal direct plans", k.alive)
    x.produce(5000, rate=2000)
    wait_until(lambda: x.stored() >= 5000, 120, "5,000 stored", k.alive)
    s = x.stop(k)
    assert s["batches"] >= 2, s
    x.verify_once(5000)
    x.ranges_contiguous()


# --- i. failover between two instances sharing the sink database --------------------

def test_failover(bins, zk_fast, kafka3, tmp_path, names, kwal_factory):
    x = Direct(bins, zk_fast, kafka3, kwal_factory, names, tmp_path / "i", 4)
    x.settings["zookeeper.session.timeout.ms"] = 3000
    first = x.kwal(name="first", **{"instance.id": "first"}).start()
    wait_until(lambda: (first.stats() or {}).get("partitions_owned", 0) >= 4, 120,
               "the first instance plans its 4 partitions", first.alive)
    second = x.kwal(name="second", **{"instance.id": "second"}).start()
    lg = x.produce(8000, rate=2000, background=True)
    wait_until(lambda: x.stored() >= 2000, 120, "2,000 stored", first.alive)
    half = lambda: owners(x.zk, x.group, x.topic, 4) == (  # noqa: E731
        {0: "first", 1: "second", 2: "first", 3: "second"})
    wait_until(half, 120, "the two instances hold 2 partitions each (roundrobin)",
               second.alive)
    first.kill()
    s1 = x.stored()
    assert s1 < 8000, "everything stored before the failover"
    wait_until(lg.done, 180, "kwal-loadgen finishes")
    assert lg.rc == 0, "kwal-loadgen failed"
    wait_until(lambda: x.stored() >= 8000, 180, "8,000 stored by the second instance",
               second.alive)
    assert owners(x.zk, x.group, x.topic, 4) == {p: "second" for p in range(4)}
    s = x.stop(second)
    assert s["partitions_owned"] == 4 and s["records_stored"] > 0, \
        f"the second instance did not take all 4 partitions over: {s}"
    x.verify_once(8000)
    x.ranges_contiguous()
