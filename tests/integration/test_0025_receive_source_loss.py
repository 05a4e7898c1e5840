"""0025 -- records gone at the source: offset out of range is data loss at the
source, counted exactly (invariant 6); then auto.offset.reset applies. On a
real ZooKeeper server and the shared 3-node Apache Kafka cluster.

Each test: a 1-partition topic (RF 3) gets records 0..999 of one
kwal-loadgen run (offset = sequence number throughout). `kwal receive`
stores them all and stops (SIGTERM, exit 0): ZooKeeper's offset is 1000.
While kwal is stopped, records 1000..10999 of the same run go to the
partition, and Kafka drops records kwal still needs, so that the low
watermark L (read with kcat, not from kwal) moves past 1000:

a  DeleteRecords (kafka-delete-records) up to offset 4321, chosen by the
   test;
b  retention: segment.bytes=1 MiB and retention.bytes=3 MiB on the topic,
   records of 1,000 B; the broker's retention check deletes old segments,
   L lands on a segment boundary that Kafka picks.

Then, in both:
   * with auto.offset.reset=error kwal exits 1 with one "kwal: " line on
     stderr naming data loss at the source of the partition; ZooKeeper's
     offset stays 1000, the sink is unchanged;
   * with auto.offset.reset=earliest kwal starts from the stored offset
     1000, counts exactly one source-loss event of exactly L-1000 records
     (--stats-json), goes on from L, and keeps consuming: 1,000 records
     produced after the loss are stored too. The sink holds exactly offsets
     0..999 and L..11999, each once; kwal-verify's only missing range is
     1000..L-1; ZooKeeper's offset = Kafka's end offset = 12000.

Numbers come from kwal's --stats-json, kwal-verify and kcat, never from
kwal's log.
"""
import re
import sqlite3
import subprocess
import time

import pytest

from kwalh import workload

RUN = "0025000000000001"
FIRST = 1000          # stored before the loss
MORE = 10_000         # produced while kwal is stopped: 1000..10999
AFTER = 1000          # produced after the loss, while kwal runs: 11000..11999
DELETE_BEFORE = 4321  # (a) DeleteRecords up to here
TOTAL = FIRST + MORE + AFTER


def wait_until(pred, timeout, what, alive=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        if alive is not None and not alive():
            pytest.fail(f"{what}: the process died")
        time.sleep(0.25)
    pytest.fail(f"{what}: not within {timeout} s")


def produce(bins, kafka, topic, tmp_path, first, records, size):
    """Records first..first+records-1 of run RUN, in the foreground."""
    lg = workload.Loadgen(bins, kafka.bootstrap, topic, records, str(tmp_path / f"m{first}"),
                          str(tmp_path / f"lg{first}"), size=size, run_id=RUN)
    lg.argv += ["--first", str(first)]
    assert lg.run(timeout=300) == 0, open(lg.base + ".err").read()[-2000:]


def watermark(kafka, topic, which):
    """TOPIC/0's low (-2) or high (-1) watermark, from kcat -Q."""
    r = subprocess.run(["kcat", "-Q", "-b", kafka.bootstrap, "-t", f"{topic}:0:{which}"],
                       capture_output=True, text=True, timeout=60)
    m = re.search(r"offset (\d+)\s*$", r.stdout)
    assert r.returncode == 0 and m, r.stdout + r.stderr
    return int(m.group(1))


def first_readable(kafka, topic):
    """The offset of the first record kcat reads from TOPIC/0."""
    r = subprocess.run(["kcat", "-C", "-b", kafka.bootstrap, "-t", topic, "-p", "0",
                        "-o", "beginning", "-c", "1", "-e", "-q", "-f", "%o\n"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return int(r.stdout.split()[0])


def sink_offsets(db, topic, at_least):
    """(count, distinct, min, max) of TOPIC/0's offsets >= at_least in the sink."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return con.execute("SELECT count(*), count(DISTINCT offset), MIN(offset), MAX(offset) "
                           "FROM records WHERE topic=? AND partition=0 AND offset>=?",
                           (topic, at_least)).fetchone()
    finally:
        con.close()


def settings(zk, kafka, group, topic, tmp_path):
    return {
        "group.id": group,
        "topics": topic,
        "zookeeper.connect": zk.connect,
        "kafka.bootstrap.servers": kafka.bootstrap,
        "auto.offset.reset": "earliest",
        "wal.dirs": f"{tmp_path}/wal",
        "sink": f"sqlite:{tmp_path}/out.db",
        "batch.interval.ms": 500,
    }


def first_run(bins, zk, kafka, topic, group, tmp_path, kwal_factory, size):
    """Records 0..999 stored by a first kwal, stopped: ZooKeeper has 1000."""
    db = str(tmp_path / "out.db")
    produce(bins, kafka, topic, tmp_path, 0, FIRST, size)
    k = kwal_factory(["receive"], settings(zk, kafka, group, topic, tmp_path), name="first")
    k.start()
    wait_until(lambda: workload.sqlite_count(db, topic) >= FIRST, 120, f"{FIRST} stored",
               k.alive)
    assert k.stop() == 0, k.log_tail(5)
    s = k.stats()
    assert s["records_stored"] == FIRST and s["source_loss_events"] == 0, s
    assert workload.sqlite_count(db, topic) == FIRST
    assert zk.offsets(group, topic, 1) == {0: FIRST}


def after_loss(bins, zk, kafka, topic, group, tmp_path, kwal_factory, low, size):
    """Kafka has low..10999 now: reset=error refuses, reset=earliest counts
    the loss exactly and goes on."""
    db = str(tmp_path / "out.db")
    conf = settings(zk, kafka, group, topic, tmp_path)

    # auto.offset.reset=error: exit 1, one reason line, nothing moved
    k = kwal_factory(["receive"], conf, name="error", xargs=["-X", "auto.offset.reset=error"])
    k.start()
    rc = k.wait(180)
    assert rc == 1, f"exit {rc}: {k.log_tail(5)}"
    with open(k.log, errors="replace") as f:
        reasons = [ln for ln in f if ln.startswith("kwal: ")]
    assert len(reasons) == 1, reasons
    assert reasons[0].startswith("kwal: receive: ") and "data loss at the source" in \
        reasons[0] and f"{topic}/0" in reasons[0], reasons[0]
    assert zk.offsets(group, topic, 1) == {0: FIRST}, "reset=error moved the stored offset"
    assert workload.sqlite_count(db, topic) == FIRST, "reset=error changed the sink"

    # auto.offset.reset=earliest: counted once, exactly, then on from low
    k = kwal_factory(["receive"], conf, name="earliest").start()
    lost = low - FIRST
    s = k.wait_stats(lambda s: s.get("source_loss_events", 0) >= 1, 120)
    assert k.alive(), k.log_tail(5)
    assert s and s["source_loss_events"] == 1, s
    assert s["source_loss_records"] == lost, s
    kept = FIRST + (FIRST + MORE - low)
    wait_until(lambda: workload.sqlite_count(db, topic) >= kept, 120, f"{kept} stored", k.alive)
    produce(bins, kafka, topic, tmp_path, FIRST + MORE, AFTER, size)   # it goes on
    wait_until(lambda: workload.sqlite_count(db, topic) >= kept + AFTER, 120,
               f"{kept + AFTER} stored", k.alive)
    assert k.stop() == 0, k.log_tail(5)
    s = k.stats()
    assert s["final"] is True
    assert s["source_loss_events"] == 1, s
    assert s["source_loss_records"] == lost, s
    assert s["partitions_assigned_stored"] == 1 and s["partitions_assigned_reset"] == 0, s
    assert s["records_stored"] == FIRST + MORE + AFTER - low, s
    assert s["duplicate_deliveries"] == 0, s

    r = workload.verify(bins, expect=TOTAL, run_id=RUN, topic=topic, sqlite=db)
    assert r.rc == 1, r.as_dict()
    assert r.summary == {"expected": TOTAL, "stored": TOTAL - lost, "missing": lost,
                         "duplicates": 0, "duplicate_offsets": 0, "corrupt": 0,
                         "foreign": 0, "out_of_range": 0}, r.as_dict()
    assert f"missing ranges: {FIRST}..{low - 1}" in r.lines, r.lines[:10]
    assert sink_offsets(db, topic, FIRST) == (TOTAL - low, TOTAL - low, low, TOTAL - 1)
    assert sink_offsets(db, topic, 0)[:2] == (TOTAL - lost, TOTAL - lost)
    assert zk.offsets(group, topic, 1) == {0: TOTAL}
    assert kafka.end_offsets(topic) == {0: TOTAL}


def test_deleted_records(bins, zk, kafka3, tmp_path, names, kwal_factory):
    topic, group = names.topic(), names.group()
    kafka3.create_topic(topic, 1, rf=3)
    first_run(bins, zk, kafka3, topic, group, tmp_path, kwal_factory, size=100)

    produce(bins, kafka3, topic, tmp_path, FIRST, MORE, 100)
    assert kafka3.delete_records(topic, 0, DELETE_BEFORE) == DELETE_BEFORE
    assert watermark(kafka3, topic, -2) == DELETE_BEFORE
    assert watermark(kafka3, topic, -1) == FIRST + MORE
    assert first_readable(kafka3, topic) == DELETE_BEFORE

    after_loss(bins, zk, kafka3, topic, group, tmp_path, kwal_factory, DELETE_BEFORE, 100)


def test_retention(bins, zk, kafka3, tmp_path, names, kwal_factory):
    topic, group = names.topic(), names.group()
    kafka3.create_topic(topic, 1, rf=3, config={"segment.bytes": 1024 * 1024})
    first_run(bins, zk, kafka3, topic, group, tmp_path, kwal_factory, size=1000)

    produce(bins, kafka3, topic, tmp_path, FIRST, MORE, 1000)    # ~10 MB, ~10 segments
    assert watermark(kafka3, topic, -2) == 0
    kafka3.alter_topic_config(topic, {"retention.bytes": 3 * 1024 * 1024})
    # log.retention.check.interval.ms is 10 s on the test cluster
    wait_until(lambda: watermark(kafka3, topic, -2) > FIRST, 120,
               "retention moves the low watermark past 1000")
    kafka3.alter_topic_config(topic, {"retention.bytes": None})   # no further deletion
    time.sleep(2)
    low = watermark(kafka3, topic, -2)
    assert FIRST < low < FIRST + MORE, low
    assert watermark(kafka3, topic, -1) == FIRST + MORE
    assert first_readable(kafka3, topic) == low

    after_loss(bins, zk, kafka3, topic, group, tmp_path, kwal_factory, low, 1000)
