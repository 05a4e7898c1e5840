"""0020 -- `kwal receive` end to end on a real ZooKeeper server and the shared
3-node Apache Kafka cluster.

a  bad configuration: one clear line naming the key, exit 2; ZooKeeper
   unreachable: exit 1 with a line naming it.
b  100,000 keyed records of 100 B over 8 partitions are consumed
   (auto.offset.reset=earliest, sqlite sink, small blocks and segments);
   SIGTERM stops kwal with exit 0; kwal-verify finds every record once; every
   partition's ZooKeeper offset is its end offset (invariant 1) and the WAL
   is cleaned down to its last segment; every record's end-to-end latency
   was measured, none longer than the test.
c  stop and restart mid-stream while records arrive: every record stored
   once (invariant 3), the restart goes on from the stored offsets and
   delivers nothing twice.
d  a second instance joins the group and leaves it: pooled, every record
   is stored once; the first instance gave partitions up on the rebalance.

Numbers come from kwal's --stats-json and kwal-verify, never from its log.
"""
import sqlite3
import subprocess
import time

import pytest

from kwalh import workload
from kwtest import check_latency

RECORDS = 100_000
PARTITIONS = 8


def receive_settings(zk, kafka, group, topic, d):
    return {
        "group.id": group,
        "topics": topic,
        "zookeeper.connect": zk.connect,
        "kafka.bootstrap.servers": kafka.bootstrap,
        "auto.offset.reset": "earliest",
        "wal.dirs": f"{d}/wal",
        "sink": f"sqlite:{d}/out.db",
        "batch.interval.ms": 500,
    }


def wait_until(pred, timeout, what, alive=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        if alive is not None and not alive():
            pytest.fail(f"{what}: the process died")
        time.sleep(0.25)
    pytest.fail(f"{what}: not within {timeout} s")


def stored(db, topic):
    return workload.sqlite_count(db, topic)


def check_offsets(zk, group, topic, db, total):
    """Every partition's ZooKeeper offset is its end offset in the sink, and
    they add up to total (invariant 1)."""
    zoff = zk.offsets(group, topic, PARTITIONS)
    ends = workload.sqlite_end_offsets(db, topic, PARTITIONS)
    assert zoff == ends, f"ZooKeeper {zoff} != sink end offsets {ends}"
    assert sum(zoff.values()) == total


def assert_verified(bins, manifest, *dbs):
    argv = [bins.verify, "--manifest", manifest]
    for db in dbs:
        argv += ["--sqlite", db]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    s = workload.parse_summary(r.stdout.splitlines()[-1])
    assert s["stored"] == s["expected"] and s["missing"] == 0 and s["duplicates"] == 0 \
        and s["duplicate_offsets"] == 0 and s["corrupt"] == 0, s


def test_bad_configuration(bins, zk, kafka3, tmp_path, names, kwal_factory):
    conf = receive_settings(zk, kafka3, names.group(), "t", tmp_path)
    cases = [
        (["-X", "group.id="], 2, "kwal: receive: group.id: required by kwal receive"),
        (["-X", "auto.offset.reset=sometimes"], 2,
         "auto.offset.reset: expected one of earliest, latest, error"),
        (["-X", "no.such.key=1"], 2, "no.such.key"),
        (["-X", "receivers=many"], 2, "receivers"),
        (["-X", "kafka.fetch.wait.max.ms=soon"], 2, "kafka.fetch.wait.max.ms"),
        (["-X", "zookeeper.connect=127.0.0.1:1"], 1, "127.0.0.1:1"),
        (["--no-such-option"], 2, "unexpected argument '--no-such-option'"),
        (["--stats-json"], 2, "--stats-json needs a file"),
    ]
    k = kwal_factory(["receive"], conf)
    for extra, want_rc, want_text in cases:
        r = subprocess.run([bins.kwal, "receive", "-c", k.conf, *extra], capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == want_rc, (extra, r.returncode, r.stderr)
        assert want_text in r.stderr, (extra, r.stderr)
        kwal_lines = [ln for ln in r.stderr.splitlines() if ln.startswith("kwal: ")]
        assert len(kwal_lines) == 1, (extra, r.stderr)


def test_all_records_then_stop(bins, zk, kafka3, tmp_path, names, kwal_factory):
    since = time.monotonic()
    topic, group = names.topic(), names.group()
    kafka3.create_topic(topic, PARTITIONS, rf=3)
    manifest = str(tmp_path / "m")
    lg = workload.Loadgen(bins, kafka3.bootstrap, topic, RECORDS, manifest,
                          str(tmp_path / "lg"))
    assert lg.run(timeout=300) == 0
    d = tmp_path / "s1"
    conf = receive_settings(zk, kafka3, group, topic, d)
    # small blocks and segments, so that the run makes segments to clean
    conf.update({"block.max.bytes": "256K", "wal.segment.bytes": "512K"})
    k = kwal_factory(["receive"], conf).start()
    db = str(d / "out.db")
    wait_until(lambda: stored(db, topic) >= RECORDS, 180, "100,000 stored", k.alive)
    assert k.stop() == 0
    s = k.stats()
    assert s["final"] is True
    assert s["records_received"] == RECORDS
    assert s["records_stored"] == RECORDS
    assert s["duplicate_deliveries"] == 0
    assert s["source_loss_records"] == 0
    assert s["wal_segments_cleaned"] >= 5, s
    check_latency(s, RECORDS, since)
    assert_verified(bins, manifest, db)
    check_offsets(zk, group, topic, db, RECORDS)
    ls = subprocess.run([bins.kwal, "wal", "ls", "--dir", str(d / "wal")],
                        capture_output=True, text=True, timeout=60)
    assert ls.returncode == 0, ls.stderr
    total = [ln for ln in ls.stdout.splitlines() if ln.startswith("total: ")]
    assert total and int(total[0].split()[1]) <= 1, ls.stdout


def test_backlog_in_bounded_batches(bins, zk, kafka3, tmp_path, names, kwal_factory):
    """batch.max.bytes=1M over a backlog of 50,000 records in blocks of at
    most 64 KiB: no batch holds more than 1 MiB of blocks weighed as their
    bytes + 256 B per record, beyond its first block, so the backlog takes
    many batches, delivered one after the other; every record stored once."""
    topic, group = names.topic(), names.group()
    kafka3.create_topic(topic, PARTITIONS, rf=3)
    manifest = str(tmp_path / "m")
    lg = workload.Loadgen(bins, kafka3.bootstrap, topic, 50_000, manifest,
                          str(tmp_path / "lg"))
    assert lg.run(timeout=300) == 0
    d = tmp_path / "s5"
    conf = receive_settings(zk, kafka3, group, topic, d)
    conf.update({"block.max.bytes": "64K", "batch.max.bytes": "1M"})
    k = kwal_factory(["receive"], conf).start()
    db = str(d / "out.db")
    wait_until(lambda: stored(db, topic) >= 50_000, 180, "50,000 stored", k.alive)
    assert k.stop() == 0
    s = k.stats()
    assert s["records_stored"] == 50_000 and s["duplicate_deliveries"] == 0, s
    with sqlite3.connect(db) as c:
        biggest, n = c.execute("SELECT MAX(records), COUNT(*) FROM batches").fetchone()
    # a record weighs at least 356 B (100 B payload + 256); one block (64 KiB
    # of at least 100 B records, < 656 of them) may go past the bound
    assert biggest * 356 <= (1 << 20) + 656 * 356, (biggest, n)
    assert n >= 50_000 * 356 // ((1 << 20) + 656 * 356), (biggest, n)
    assert_verified(bins, manifest, db)
    check_offsets(zk, group, topic, db, 50_000)


def test_stop_and_restart_mid_stream(bins, zk, kafka3, tmp_path, names, kwal_factory):
    topic, group = names.topic(), names.group()
    kafka3.create_topic(topic, PARTITIONS, rf=3)
    manifest = str(tmp_path / "m")
    lg = workload.Loadgen(bins, kafka3.bootstrap, topic, RECORDS, manifest,
                          str(tmp_path / "lg"), rate=4000)
    lg.start()
    d = tmp_path / "s2"
    db = str(d / "out.db")
    conf = receive_settings(zk, kafka3, group, topic, d)
    k1 = kwal_factory(["receive"], conf).start()
    wait_until(lambda: stored(db, topic) >= 30_000, 120, "30,000 stored", k1.alive)
    # the producer waits while the first run stops, so that the stop is
    # mid-stream however slow the machine is
    assert not lg.done(), "the producer finished before 30,000 were stored"
    lg.freeze()
    assert k1.stop() == 0
    first = stored(db, topic)
    assert first < RECORDS, f"not mid-stream: {first} stored at the first stop"
    lg.thaw()

    k2 = kwal_factory(["receive"], conf).start()
    wait_until(lg.done, 180, "the producer finishes")
    assert lg.rc == 0, "kwal-loadgen failed"
    wait_until(lambda: stored(db, topic) >= RECORDS, 120, "100,000 stored", k2.alive)
    assert k2.stop() == 0
    s = k2.stats()
    assert s["partitions_assigned_stored"] >= PARTITIONS, "the restart did not resume " \
        "from the offsets stored in ZooKeeper"
    assert s["partitions_assigned_reset"] == 0
    assert s["duplicate_deliveries"] == 0, "the restart delivered records twice"
    assert_verified(bins, manifest, db)
    check_offsets(zk, group, topic, db, RECORDS)


def test_instance_joins_and_leaves(bins, zk, kafka3, tmp_path, names, kwal_factory):
    topic, group = names.topic(), names.group()
    kafka3.create_topic(topic, PARTITIONS, rf=3)
    manifest = str(tmp_path / "m")
    lg = workload.Loadgen(bins, kafka3.bootstrap, topic, RECORDS, manifest,
                          str(tmp_path / "lg"), rate=4000)
    lg.start()
    da, dbb = tmp_path / "a", tmp_path / "b"
    a_conf = receive_settings(zk, kafka3, group, topic, da)
    a_conf["receivers"] = 2
    a = kwal_factory(["receive"], a_conf, name="a").start()
    wait_until(lambda: stored(str(da / "out.db"), topic) >= 20_000, 120, "A stores 20,000",
               a.alive)
    # the producer waits until B has partitions, so that records are left for
    # B however slow the machine is
    assert not lg.done(), "the producer finished before A stored 20,000"
    lg.freeze()
    b = kwal_factory(["receive"], receive_settings(zk, kafka3, group, topic, dbb),
                     name="b").start()
    wait_until(lambda: (b.stat("first_assignment_ms", -1) or -1) >= 0, 120,
               "B gets partitions", b.alive)
    lg.thaw()
    wait_until(lambda: stored(str(dbb / "out.db"), topic) > 0, 120, "B stores records",
               b.alive)
    assert b.stop() == 0, "instance B exited non-zero"
    wait_until(lg.done, 180, "the producer finishes")
    assert lg.rc == 0, "kwal-loadgen failed"
    wait_until(lambda: stored(str(da / "out.db"), topic) + stored(str(dbb / "out.db"), topic)
               >= RECORDS, 120, "100,000 stored over both", a.alive)
    assert a.stop() == 0
    assert a.stats()["partitions_revoked"] > 0, "A gave no partition up on the rebalance"
    assert_verified(bins, manifest, str(da / "out.db"), str(dbb / "out.db"))
