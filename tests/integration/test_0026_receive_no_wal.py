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
import subprocess

from kwalh import workload
from kwalh.kwal import CRASH_EXIT
from kwtest import (assert_verified, check_zk_at_end, fast_settings, produce, rows, stored,
                    wait_until)

N = 20_000
NC = 6000
PARTITIONS = 4


def prepare(bins, zk, kafka, names, tmp_path, records, sub):
    """A 4-partition topic (RF 3) with records produced, a group, and the
    settings of a kwal with its files under tmp_path/sub: (topic, group,
    manifest, sink database, settings)."""
    topic, group = names.topic(), names.group()
    kafka.create_topic(topic, PARTITIONS, rf=3)
    manifest = produce(bins, kafka.bootstrap, topic, records, tmp_path, name=f"lg-{topic}")
    d = tmp_path / sub
    return topic, group, manifest, str(d / "out.db"), \
        fast_settings(zk, kafka.bootstrap, group, topic, d)


def test_bad_arguments(bins, tmp_path, names, kwal_factory):
    d = tmp_path / "c"
    k = kwal_factory(["receive"], fast_settings("127.0.0.1:1", "127.0.0.1:1", names.group(),
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
    topic, group, manifest, db, conf = prepare(bins, zk_fast, kafka3, names, tmp_path, N, "a")
    k = kwal_factory(["receive", "--no-wal"], conf).start()
    wait_until(lambda: stored(db, topic) >= N, 180, f"{N} stored", k.alive)
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
    assert_verified(bins, manifest, db, total=N)
    check_zk_at_end(zk_fast, group, topic, kafka3.end_offsets(topic), db=db, total=N)
    assert not (tmp_path / "a" / "wal").exists(), "--no-wal created the WAL directory"
    assert not [f for f in tmp_path.rglob("tracker.db*")], "--no-wal made a tracker"


def test_graceful_stop_delivers_pending(bins, zk_fast, kafka3, tmp_path, names, kwal_factory):
    topic, group, manifest, db, conf = prepare(bins, zk_fast, kafka3, names, tmp_path, N, "a2")
    k = kwal_factory(["receive", "--no-wal"], conf,
                     xargs=["-X", "batch.interval.ms=60000"]).start()
    wait_until(lambda: zk_fast.offsets_sum(group, topic, PARTITIONS) >= N, 120,
               "ZooKeeper offsets cover every record", k.alive)
    assert stored(db, topic) == 0, "the sink holds records already"
    assert k.stats()["records_stored"] == 0
    assert k.stop() == 0, k.log_tail(5)
    s = k.stats()
    assert s["records_stored"] == N and s["batches"] == 1, s
    assert s["duplicate_deliveries"] == 0, s
    assert_verified(bins, manifest, db, total=N)
    check_zk_at_end(zk_fast, group, topic, kafka3.end_offsets(topic), db=db, total=N)
    assert rows(db, "SELECT count(*) FROM batches") == [(1,)]


def test_crash_loses_committed_undelivered(bins, zk_fast, kafka3, tmp_path, names,
                                           kwal_factory):
    topic, group, manifest, db, conf = prepare(bins, zk_fast, kafka3, names, tmp_path, NC, "b")
    k = kwal_factory(["receive", "--no-wal"], conf, name="crash",
                     xargs=["-X", "batch.interval.ms=60000"],
                     env={"KWAL_CRASH_AT": "pipeline.committed:5"}).start()
    rc = k.wait(120)
    assert rc == CRASH_EXIT, f"exit {rc}, not the crash point's: {k.log_tail(5)}"
    crash = {p: v or 0 for p, v in zk_fast.offsets(group, topic, PARTITIONS).items()}
    committed = sum(crash.values())
    held = stored(db, topic)
    lost = committed - held
    assert 0 < lost < NC, f"committed {committed}, held {held}"

    k2 = kwal_factory(["receive", "--no-wal"], conf, name="after").start()
    wait_until(lambda: stored(db, topic) >= NC - lost, 180,
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
    end = check_zk_at_end(zk_fast, group, topic, kafka3.end_offsets(topic), total=NC)
    for p in range(PARTITIONS):
        got = rows(db, "SELECT count(*), MIN(offset), MAX(offset) FROM records "
                       "WHERE topic=? AND partition=?", topic, p)[0]
        want = (end[p] - crash[p], crash[p], end[p] - 1) if end[p] > crash[p] \
            else (0, None, None)
        assert got == want, f"{topic}/{p}: sink has {got}, expected offsets " \
            f"{crash[p]}..{end[p] - 1}"
