"""0061 -- broker failures a real Apache Kafka cluster has and the mock could
not show, in both modes (receive and direct).

a  leader failover: a 3-node cluster of the test's own, a topic with
   replication factor 3 and min.insync.replicas=2, the producer with
   acks=all; SIGKILL the node that leads the busiest partitions while records
   flow, restart it later. 0 lost, 0 duplicates stored, ZooKeeper at the end
   offsets.
b  the whole cluster down for 20 s and back (its one node stopped, then
   started on the same ports and data): kwal waits, goes on by itself, and
   nothing is lost or stored twice.
"""
import collections
import time

import pytest

from kwtest import (assert_verified, check_zk_at_end, settings, start_loadgen, stored,
                    wait_until)

MODES = ["receive", "direct"]
RECORDS = 40_000


def busiest_leader(kc, topic, partitions):
    leaders = collections.Counter(kc.leader(topic, p) for p in range(partitions))
    return leaders.most_common(1)[0][0]


@pytest.mark.parametrize("mode", MODES)
def test_leader_failover(mode, bins, zk, kafka_factory, tmp_path, names, kwal_factory):
    kc = kafka_factory(nodes=3)
    topic, group = names.topic(), names.group()
    parts = 6
    kc.create_topic(topic, parts, rf=3, config={"min.insync.replicas": "2"})
    # 20 s of production at 2,000 records/s: the failover happens mid-stream
    lg = start_loadgen(bins, kc.bootstrap, topic, RECORDS, tmp_path, rate=2000)
    d = tmp_path / mode
    db = str(d / "out.db")
    k = kwal_factory([mode], settings(zk, kc.bootstrap, group, topic, d)).start()
    wait_until(lambda: stored(db, topic) >= 6000, 120, "6,000 stored", k.alive)
    victim = busiest_leader(kc, topic, parts)
    led = [p for p in range(parts) if kc.leader(topic, p) == victim]
    kc.kill_node(victim)
    for p in led:
        kc.wait_leader(topic, p, timeout=60, not_in=(victim,))
    before = stored(db, topic)
    assert not lg.done(), "the producer finished before the failover: raise RECORDS"
    wait_until(lambda: stored(db, topic) > before + 2000, 120,
               "records stored while the old leader is down", k.alive)
    kc.start_node(victim)
    wait_until(lg.done, 240, "the producer finishes")
    assert lg.rc == 0, "kwal-loadgen failed (acks=all with one node down must go on)"
    wait_until(lambda: stored(db, topic) >= RECORDS, 180, f"{RECORDS} stored", k.alive)
    ends = kc.end_offsets(topic)
    wait_until(lambda: zk.offsets(group, topic, parts) == ends, 120,
               "ZooKeeper at the end offsets", k.alive)
    assert k.stop() == 0
    assert_verified(bins, lg.manifest, db)
    check_zk_at_end(zk, group, topic, ends)
    s = k.stats()
    assert s["records_stored"] == RECORDS and s["source_loss_records"] == 0, s


@pytest.mark.parametrize("mode", MODES)
def test_cluster_down_and_back(mode, bins, zk, kafka_factory, tmp_path, names,
                               kwal_factory):
    kc = kafka_factory(nodes=1)
    topic, group = names.topic(), names.group()
    parts = 4
    kc.create_topic(topic, parts)
    first = start_loadgen(bins, kc.bootstrap, topic, 10_000, tmp_path, name="lg1")
    wait_until(first.done, 120, "the first records produced")
    assert first.rc == 0
    d = tmp_path / mode
    db = str(d / "out.db")
    k = kwal_factory([mode], settings(zk, kc.bootstrap, group, topic, d)).start()
    wait_until(lambda: stored(db, topic) >= 10_000, 120, "10,000 stored", k.alive)
    for i in kc.node_ids:
        kc.stop_node(i)
    down_at = time.monotonic()
    while time.monotonic() - down_at < 20:
        assert k.alive(), f"kwal {mode} exited while the cluster was down (rc {k.poll()})"
        time.sleep(1)
    for i in kc.node_ids:
        kc.start_node(i)
    kc.wait_topic(topic, parts)
    second = start_loadgen(bins, kc.bootstrap, topic, 10_000, tmp_path, name="lg2")
    wait_until(second.done, 180, "the second records produced")
    assert second.rc == 0
    wait_until(lambda: stored(db, topic) >= 20_000, 180,
               "20,000 stored after the cluster came back", k.alive)
    ends = kc.end_offsets(topic)
    wait_until(lambda: zk.offsets(group, topic, parts) == ends, 120,
               "ZooKeeper at the end offsets", k.alive)
    assert k.stop() == 0
    assert_verified(bins, first.manifest, db)
    assert_verified(bins, second.manifest, db)
    s = k.stats()
    assert s["records_stored"] == 20_000 and s["duplicate_deliveries"] == 0, s
    check_zk_at_end(zk, group, topic, ends)
