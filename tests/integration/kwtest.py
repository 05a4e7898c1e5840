"""kwtest -- small helpers the integration tests share (the fixtures are in
conftest.py): configuration dicts for each mode, bounded waits, and the
checks every end-to-end test makes (kwal-verify's summary, ZooKeeper offsets
against the sink's and Kafka's end offsets). They read data only: the sink,
ZooKeeper, Kafka, kwal's --stats-json; never kwal's log.
"""
import sqlite3
import subprocess
import time

import pytest

from kwalh import workload


def settings(zk, bootstrap, group, topic, d, **extra):
    """A configuration for kwal receive or direct: WAL under d/wal, the sqlite
    sink d/out.db, earliest start, 500 ms batches; extra keys win (use
    dots through a dict: settings(..., **{"kafka.x": 1}))."""
    s = {
        "group.id": group,
        "topics": topic,
        "zookeeper.connect": zk.connect,
        "kafka.bootstrap.servers": bootstrap,
        "auto.offset.reset": "earliest",
        "wal.dirs": f"{d}/wal",
        "sink": f"sqlite:{d}/out.db",
        "batch.interval.ms": 500,
    }
    s.update(extra)
    return s


def wait_until(pred, timeout, what, alive=None, interval=0.25):
    """Poll pred() until true; fail the test after timeout s, or as soon as
    alive() says the process it waits on died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        if alive is not None and not alive():
            pytest.fail(f"{what}: the process died")
        time.sleep(interval)
    pytest.fail(f"{what}: not within {timeout} s")


def stored(db, topic):
    return workload.sqlite_count(db, topic)


def rows(db, sql, *args):
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def assert_verified(bins, manifest, *dbs):
    """kwal-verify: every record of the manifest stored exactly once over dbs."""
    argv = [bins.verify, "--manifest", manifest]
    for db in dbs:
        argv += ["--sqlite", db]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    s = workload.parse_summary(r.stdout.splitlines()[-1])
    assert s["stored"] == s["expected"] and s["missing"] == 0 and s["duplicates"] == 0 \
        and s["duplicate_offsets"] == 0 and s["corrupt"] == 0, s
    return s


def check_zk_at_end(zk, group, topic, kafka_ends):
    """Every partition's ZooKeeper offset is Kafka's end offset (invariant 1
    at rest: nothing acknowledged that is not delivered, nothing left)."""
    zoff = zk.offsets(group, topic, len(kafka_ends))
    assert zoff == kafka_ends, f"ZooKeeper {zoff} != Kafka end offsets {kafka_ends}"


def start_loadgen(bins, bootstrap, topic, records, tmp_path, rate=None, name="lg"):
    lg = workload.Loadgen(bins, bootstrap, topic, records, str(tmp_path / f"{name}.m"),
                          str(tmp_path / name), rate=rate)
    return lg.start()


def produce(bins, bootstrap, topic, records, tmp_path, name="lg"):
    """Produce records (kwal-loadgen, acks=all, idempotent); the manifest path."""
    lg = workload.Loadgen(bins, bootstrap, topic, records, str(tmp_path / f"{name}.m"),
                          str(tmp_path / name))
    assert lg.run(timeout=300) == 0, "kwal-loadgen failed"
    return lg.manifest
