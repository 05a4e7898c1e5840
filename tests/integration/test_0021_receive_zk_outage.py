"""0021 -- `kwal receive` survives a ZooKeeper outage, on a real ZooKeeper
server and the shared 3-node Apache Kafka cluster.

a  60,000 keyed records of 100 B are produced at 3,000/s to an 8-partition
   topic (RF 3) while `kwal receive` consumes them (auto.offset.reset=earliest,
   sqlite sink, batch.interval.ms=500). Once some are stored, the ZooKeeper
   server is stopped for 10 s: kwal keeps running, stores no offset while
   ZooKeeper is away (its zk_writes stand still), and receiving pauses
   (invariant 5: the pipeline holds the block whose offsets it cannot store,
   the hand-off queue fills). ZooKeeper then starts again on the same port
   with the same data.
b  the run ends with every record stored exactly once (kwal-verify: 0
   missing, 0 duplicates; no duplicate deliveries), SIGTERM exit 0, and every
   partition's ZooKeeper offset at its end offset in the sink and in Kafka
   (invariant 1).

Numbers come from kwal's --stats-json and kwal-verify, never from its log.
"""
import subprocess
import time

import pytest

from kwalh import workload

TOTAL = 60_000
PARTITIONS = 8
OUTAGE_S = 10


def wait_until(pred, timeout, what, alive=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        if alive is not None and not alive():
            pytest.fail(f"{what}: the process died")
        time.sleep(0.25)
    pytest.fail(f"{what}: not within {timeout} s")


def assert_verified(bins, manifest, db, total):
    r = subprocess.run([bins.verify, "--manifest", manifest, "--sqlite", db],
                       capture_output=True, text=True, timeout=300)
    s = workload.parse_summary(r.stdout.splitlines()[-1] if r.stdout else "")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    assert s == {"expected": total, "stored": total, "missing": 0, "duplicates": 0,
                 "duplicate_offsets": 0, "corrupt": 0, "foreign": 0,
                 "out_of_range": 0}, s


def test_zookeeper_outage(bins, zk, kafka3, tmp_path, names, kwal_factory):
    topic, group = names.topic(), names.group()
    kafka3.create_topic(topic, PARTITIONS, rf=3)
    manifest = str(tmp_path / "m")
    db = str(tmp_path / "out.db")
    lg = workload.Loadgen(bins, kafka3.bootstrap, topic, TOTAL, manifest,
                          str(tmp_path / "lg"), rate=3000)
    k = kwal_factory(["receive"], {
        "group.id": group,
        "topics": topic,
        "zookeeper.connect": zk.connect,
        "kafka.bootstrap.servers": kafka3.bootstrap,
        "auto.offset.reset": "earliest",
        "wal.dirs": f"{tmp_path}/wal",
        "sink": f"sqlite:{db}",
        "batch.interval.ms": 500,
    })
    lg.start()
    k.start()
    wait_until(lambda: workload.sqlite_count(db, topic) >= 3000, 120, "3,000 stored", k.alive)
    assert not lg.done(), "the producer is done already: not mid-stream"

    # --- a: the outage
    connect = zk.connect
    zk.stop()
    assert not zk.serving(), "ZooKeeper still serves after stop"
    t0 = time.monotonic()
    time.sleep(2)                        # a commit in flight has failed by now
    before = k.stats()
    time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - t0)))
    assert k.alive(), f"kwal exited during the ZooKeeper outage: {k.log_tail(5)}"
    during = k.stats()
    assert during["zk_writes"] == before["zk_writes"], \
        "offsets were stored while ZooKeeper was down"
    assert workload.sqlite_count(db, topic) < TOTAL, "not mid-stream: all stored in the outage"
    assert zk.start() == connect, "ZooKeeper came back on another port"

    # --- b: the rest of the run
    wait_until(lg.done, 180, "the producer finishes")
    assert lg.rc == 0, "kwal-loadgen failed"
    assert workload.read_manifest(manifest).get("delivered") == str(TOTAL)
    wait_until(lambda: workload.sqlite_count(db, topic) >= TOTAL, 180, f"{TOTAL} stored",
               k.alive)
    # the statistics file is rewritten once a second: the catch-up after the
    # outage can be quicker than that
    s_live = k.wait_stats(lambda s: s["zk_writes"] > during["zk_writes"], 10)
    assert s_live["zk_writes"] > during["zk_writes"], "no offset stored after the outage"
    assert k.stop() == 0, k.log_tail(5)
    s = k.stats()
    assert s["final"] is True
    assert s["records_received"] == TOTAL
    assert s["records_stored"] == TOTAL
    assert s["duplicate_deliveries"] == 0
    assert s["receiver_restarts"] == 0
    assert s["pauses"] >= 1, "receiving never paused while ZooKeeper was away"
    assert_verified(bins, manifest, db, TOTAL)
    zoff = zk.offsets(group, topic, PARTITIONS)
    assert zoff == workload.sqlite_end_offsets(db, topic, PARTITIONS)
    assert zoff == kafka3.end_offsets(topic)
    assert sum(zoff.values()) == TOTAL
