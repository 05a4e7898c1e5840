"""0026 -- `kwal receive --no-wal`, the unreliable receiver (DESIGN.md
"Semantics to compare": Spark's receiver before its WAL), on a real ZooKeeper
server (tick 500 ms, so 2 s sessions are allowed) and the shared 3-node
Apache Kafka cluster. Topics of 4 partitions (RF 3); kwal runs 2 receivers,
blocks of at most 16 KiB every 50 ms.

a  20,000 keyed records; `kwal receive --no-wal` stores them all; SIGTERM
   stops it with exit 0. kwal-verify: every record stored once; ZooKeeper
   offsets = end offsets in the sink and in Kafka; the statistics say mode
   receive-no-wal, no recovery ran (recovery_ms -1), no WAL (no replica, no
   byte, no fsync, no durable block); no WAL directory and no tracker exist.
a2 a graceful stop loses nothing: with batch.interval.ms=60000, once the
   ZooKeeper offsets cover all 20,000 records of a second topic (committed on
   receipt) the sink holds none of them (the blocks wait in memory); SIGTERM
   delivers every pending block, in one batch: all stored once.
b  a crash loses what was committed but not delivered: with
   batch.interval.ms=60000 and KWAL_CRASH_AT=pipeline.committed:5 kwal dies
   (exit 99) right after the 5th block's offsets went to ZooKeeper, nothing
   delivered. The ZooKeeper offsets read then, minus what the sink held
   then, is the loss L (> 0). A normal `--no-wal` restart consumes from those
   offsets until the rest is stored; kwal-verify then reports exactly L
   missing and 0 duplicates, and per partition the sink holds exactly the
   offsets from the crash-time ZooKeeper offset to the end.
c  bad arguments: --no-wal with --classic or --skip-corrupt exits 2 with one
   line on stderr; `kwal recover --no-wal` is refused (exit 2, one "kwal: "
   line); none creates a file.

Numbers come from kwal's --stats-json and kwal-verify, never from its log.
"""
import sqlite3
import subprocess
import time

import pytest

from kwalh import services, workload
from kwalh.kwal import CRASH_EXIT

N = 20_000
NC = 6000
PARTITIONS = 4


@pytest.fixture
def zk_fast(tmp_path, bins):
    """A ZooKeeper server with a 500 ms tick: sessions of 2 s are allowed
    (min 2 ticks), so a crashed instance's owner nodes go soon."""
    server = services.ZooKeeper(bins, str(tmp_path / "zk"), tick_ms=500)
    server.start()
    yield server
    server.stop()


def wait_until(pred, timeout, what, alive=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        if alive is not None and not alive():
            pytest.fail(f"{what}: the process died")
        time.sleep(0.25)
    pytest.fail(f"{what}: not within {timeout} s")


def settings(zk_connect, bootstrap, group, topic, d):
    return {
        "group.id": group,
        "topics": topic,
        "receivers": 2,
        "zookeeper.connect": zk_connect,
        "zookeeper.session.timeout.ms": 2000,
        "kafka.bootstrap.servers": bootstrap,
        "kafka.session.timeout.ms": 3000,
        "kafka.heartbeat.interval.ms": 300,
        "auto.offset.reset": "earliest",
        "wal.dirs": f"{d}/wal",
        "sink": f"sqlite:{d}/out.db",
        "block.max.bytes": "16K",
        "block.interval.ms": 50,
        "batch.interval.ms": 500,
    }


def produce(bins, kafka, topic, records, tmp_path):
    manifest = str(tmp_path / f"m-{topic}")
    lg = workload.Loadgen(bins, kafka.bootstrap, topic, records, manifest,
                          str(tmp_path / f"lg-{topic}"))
    assert lg.run(timeout=300) == 0, open(lg.base + ".err").read()[-2000:]
    assert workload.read_manifest(manifest).get("delivered") == str(records)
    return manifest


def zk_sum(zk, group, topic):
    return sum(v or 0 for v in zk.offsets(group, topic, PARTITIONS).values())


def assert_all_once(bins, manifest, db, total):
    r = workload.verify(bins, manifest=manifest, sqlite=db)
    assert r.rc == 0, r.as_dict()
    assert r.summary == {"expected": total, "stored": total, "missing": 0, "duplicates": 0,
                         "duplicate_offsets": 0, "corrupt": 0, "foreign": 0,
                         "out_of_range": 0}, r.as_dict()


def assert_offsets_at_end(zk, kafka, group, topic, db, total):
    zoff = zk.offsets(group, topic, PARTITIONS)
    assert zoff == workload.sqlite_end_offsets(db, topic, PARTITIONS)
    assert zoff == kafka.end_offsets(topic)
    assert sum(zoff.values()) == total


def test_bad_arguments(bins, tmp_path, names, kwal_factory):
    d = tmp_path / "c"
    k = kwal_factory(["receive"], settings("127.0.0.1:1", "127.0.0.1:1", names.group(),
                                           names.topic(), d))
    cases = [
        (["receive", "--no-wal", "--classic"],
         "kwal: receive: --no-wal cannot be combined with --classic"),
        (["receive", "--skip-corrupt", "--no-wal"],
         "kwal: receive: --no-wal cannot be combined with --skip-corrupt"),
        (["recover", "--no-wal"], "unexpected argument '--no-wal'"),
    ]
    for args, want in cases:
        r = subprocess.run([bins.kwal, args[0], "-c", k.conf, *args[1:]], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 2, (args, r.returncode, r.stderr)
        assert want in r.stderr, (args, r.stderr)
        kwal_lines = [ln for ln in r.stderr.splitlines() if ln.startswith("kwal: ")]
        assert len(kwal_lines) == 1, (args, r.stderr)
        if args[0] == "receive":
            assert len(r.stderr.splitlines()) == 1, (args, r.stderr)
    assert not (d / "wal").exists() and not (d / "out.db").exists(), \
        "a refused command created files"
    r = subprocess.run([bins.kwal, "receive", "--help"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and "--no-wal" in r.stdout


def test_all_records(bins, zk_fast, kafka3, tmp_path, names, kwal_factory):
    topic, group = names.topic(), names.group()
    kafka3.create_topic(topic, PARTITIONS, rf=3)
    manifest = produce(bins, kafka3, topic, N, tmp_path)
    d = tmp_path / "a"
    db = str(d / "out.db")
    k = kwal_factory(["receive", "--no-wal"],
                     settings(zk_fast.connect, kafka3.bootstrap, group, topic, d)).start()
    wait_until(lambda: workload.sqlite_count(db, topic) >= N, 180, f"{N} stored", k.alive)
    assert k.stop() == 0, k.log_tail(5)
    s = k.stats()
    assert s["final"] is True
    assert s["mode"] == "receive-no-wal"
    assert s["recovery_ms"] == -1, "recovery ran"
    assert s["wal_replicas_healthy"] == -1 and s["wal_bytes"] == 0 and s["wal_fsyncs"] == 0 \
        and s["blocks_durable"] == 0 and s["wal_segments_cleaned"] == 0, s
    assert s["records_received"] == N and s["records_stored"] == N, s
    assert s["duplicate_deliveries"] == 0, s
    assert s["blocks_offsets_stored"] > 0 and s["zk_writes"] > 0, s
    assert_all_once(bins, manifest, db, N)
    assert_offsets_at_end(zk_fast, kafka3, group, topic, db, N)
    assert not (d / "wal").exists(), "--no-wal created the WAL directory"
    assert not [f for f in tmp_path.rglob("tracker.db*")], "--no-wal made a tracker"


def test_graceful_stop_delivers_pending(bins, zk_fast, kafka3, tmp_path, names, kwal_factory):
    topic, group = names.topic(), names.group()
    kafka3.create_topic(topic, PARTITIONS, rf=3)
    manifest = produce(bins, kafka3, topic, N, tmp_path)
    d = tmp_path / "a2"
    db = str(d / "out.db")
    k = kwal_factory(["receive", "--no-wal"],
                     settings(zk_fast.connect, kafka3.bootstrap, group, topic, d),
                     xargs=["-X", "batch.interval.ms=60000"]).start()
    wait_until(lambda: zk_sum(zk_fast, group, topic) >= N, 120,
               "ZooKeeper offsets cover every record", k.alive)
    assert workload.sqlite_count(db, topic) == 0, "the sink holds records already"
    assert k.stats()["records_stored"] == 0
    assert k.stop() == 0, k.log_tail(5)
    s = k.stats()
    assert s["records_stored"] == N and s["batches"] == 1, s
    assert s["duplicate_deliveries"] == 0, s
    assert_all_once(bins, manifest, db, N)
    assert_offsets_at_end(zk_fast, kafka3, group, topic, db, N)
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        assert con.execute("SELECT count(*) FROM batches").fetchone()[0] == 1
    finally:
        con.close()


def test_crash_loses_committed_undelivered(bins, zk_fast, kafka3, tmp_path, names,
                                           kwal_factory):
    topic, group = names.topic(), names.group()
    kafka3.create_topic(topic, PARTITIONS, rf=3)
    manifest = produce(bins, kafka3, topic, NC, tmp_path)
    d = tmp_path / "b"
    db = str(d / "out.db")
    conf = settings(zk_fast.connect, kafka3.bootstrap, group, topic, d)
    k = kwal_factory(["receive", "--no-wal"], conf, name="crash",
                     xargs=["-X", "batch.interval.ms=60000"],
                     env={"KWAL_CRASH_AT": "pipeline.committed:5"}).start()
    rc = k.wait(120)
    assert rc == CRASH_EXIT, f"exit {rc}, not the crash point's: {k.log_tail(5)}"
    crash = {p: v or 0 for p, v in zk_fast.offsets(group, topic, PARTITIONS).items()}
    committed = sum(crash.values())
    held = workload.sqlite_count(db, topic)
    lost = committed - held
    assert 0 < lost < NC, f"committed {committed}, held {held}"

    k2 = kwal_factory(["receive", "--no-wal"], conf, name="after").start()
    wait_until(lambda: workload.sqlite_count(db, topic) >= NC - lost, 180,
               f"{NC - lost} stored", k2.alive)
    assert k2.stop() == 0, k2.log_tail(5)
    s = k2.stats()
    assert s["duplicate_deliveries"] == 0, "the restart delivered records twice"
    assert s["records_stored"] == NC - committed, s
    r = workload.verify(bins, manifest=manifest, sqlite=db)
    assert r.rc == 1, r.as_dict()
    assert r.summary == {"expected": NC, "stored": NC - lost, "missing": lost, "duplicates": 0,
                         "duplicate_offsets": 0, "corrupt": 0, "foreign": 0,
                         "out_of_range": 0}, r.as_dict()
    end = zk_fast.offsets(group, topic, PARTITIONS)
    assert end == kafka3.end_offsets(topic) and sum(end.values()) == NC, end
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        for p in range(PARTITIONS):
            got = con.execute("SELECT count(*), MIN(offset), MAX(offset) FROM records "
                              "WHERE topic=? AND partition=?", (topic, p)).fetchone()
            want = (end[p] - crash[p], crash[p], end[p] - 1) if end[p] > crash[p] \
                else (0, None, None)
            assert got == want, f"{topic}/{p}: sink has {got}, expected offsets " \
                f"{crash[p]}..{end[p] - 1}"
    finally:
        con.close()
