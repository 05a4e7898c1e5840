"""0062 -- what changes around kwal on a real Apache Kafka cluster, and how
it connects.

a  partitions added to a topic while kwal runs are picked up (both modes):
   records produced to the new partitions are stored once.
b  TLS: a broker listener with a certificate from a test CA made by openssl;
   kwal receive connects with kafka.security.protocol=SSL and
   kafka.ssl.ca.location and stores everything; with a CA that did not sign
   the broker's certificate it stops with a clear one-line error.
c  an outside check: Kafka's own GetOffsetShell (end offsets), kcat (the
   records themselves) and kwal's ZooKeeper offsets and sink agree.
d  retention in direct mode: records deleted (DeleteRecords) while kwal
   direct is stopped are counted as source loss, exactly, and it goes on
   (receive mode's is test 0025).
"""
import os
import subprocess

import pytest

from kwalh.kafka import make_test_ca
from kwtest import (assert_verified, check_zk_at_end, produce, rows, settings, start_loadgen,
                    stored, wait_until)

MODES = ["receive", "direct"]


@pytest.mark.parametrize("mode", MODES)
def test_partitions_added(mode, bins, zk, kafka3, tmp_path, names, kwal_factory):
    topic, group = names.topic(), names.group()
    kafka3.create_topic(topic, 2, rf=3)
    m1 = produce(bins, kafka3.bootstrap, topic, 4000, tmp_path, name="lg1")
    d = tmp_path / mode
    db = str(d / "out.db")
    # librdkafka looks for new partitions at each metadata refresh (5 min by
    # default); direct mode asks every 5 s itself
    k = kwal_factory([mode], settings(zk, kafka3.bootstrap, group, topic, d, **{
        "kafka.topic.metadata.refresh.interval.ms": 2000})).start()
    wait_until(lambda: stored(db, topic) >= 4000, 120, "4,000 stored", k.alive)
    kafka3.add_partitions(topic, 5)
    m2 = produce(bins, kafka3.bootstrap, topic, 6000, tmp_path, name="lg2")
    wait_until(lambda: stored(db, topic) >= 10_000, 180, "10,000 stored", k.alive)
    new = rows(db, "SELECT COUNT(*) FROM records WHERE topic=? AND partition >= 2", topic)
    assert new[0][0] > 0, "nothing stored from the added partitions"
    ends = kafka3.end_offsets(topic)
    assert len(ends) == 5
    wait_until(lambda: zk.offsets(group, topic, 5) == ends, 120, "ZooKeeper at the end offsets",
               k.alive)
    assert k.stop() == 0
    assert_verified(bins, m1, db)
    assert_verified(bins, m2, db)
    assert k.stats()["duplicate_deliveries"] == 0


def test_tls(bins, zk, kafka_factory, tmp_path, names, kwal_factory):
    ca = make_test_ca(tmp_path / "ca")
    kc = kafka_factory(nodes=1, ssl=ca)
    topic, group = names.topic(), names.group()
    kc.create_topic(topic, 3)
    manifest = produce(bins, kc.bootstrap, topic, 5000, tmp_path)
    d = tmp_path / "tls"
    db = str(d / "out.db")
    tls = {"kafka.security.protocol": "SSL", "kafka.ssl.ca.location": ca["ca_cert"]}
    k = kwal_factory(["receive"], settings(zk, kc.ssl_bootstrap, group, topic, d, **tls))
    k.start()
    wait_until(lambda: stored(db, topic) >= 5000, 120, "5,000 stored over TLS", k.alive)
    assert k.stop() == 0
    assert_verified(bins, manifest, db)

    # a CA that did not sign the broker's certificate: a clear error, exit 1
    other = make_test_ca(tmp_path / "other-ca")
    bad = dict(tls, **{"kafka.ssl.ca.location": other["ca_cert"],
                       "kafka.socket.timeout.ms": 10000})
    kb = kwal_factory(["receive"], settings(zk, kc.ssl_bootstrap, names.group(), topic,
                                            tmp_path / "bad", **bad))
    r = subprocess.run(kb.argv(), capture_output=True, text=True, timeout=180)
    assert r.returncode == 1, (r.returncode, r.stderr[-2000:])
    last = [ln for ln in r.stderr.splitlines() if ln.startswith("kwal: ")]
    assert len(last) == 1, r.stderr[-2000:]
    assert "certificate" in last[0].lower() or "ssl" in last[0].lower(), last[0]
    # and the same bad CA in direct mode
    kd = kwal_factory(["direct"], settings(zk, kc.ssl_bootstrap, names.group(), topic,
                                           tmp_path / "bad-direct", **bad))
    r = subprocess.run(kd.argv(), capture_output=True, text=True, timeout=180)
    assert r.returncode == 1, (r.returncode, r.stderr[-2000:])
    last = [ln for ln in r.stderr.splitlines() if ln.startswith("kwal: ")]
    assert len(last) == 1 and ("certificate" in last[0].lower() or "ssl" in last[0].lower()), \
        r.stderr[-2000:]


def test_outside_check(bins, zk, kafka3, tmp_path, names, kwal_factory):
    topic, group = names.topic(), names.group()
    kafka3.create_topic(topic, 4, rf=3)
    manifest = produce(bins, kafka3.bootstrap, topic, 8000, tmp_path)
    d = tmp_path / "r"
    db = str(d / "out.db")
    k = kwal_factory(["receive"], settings(zk, kafka3.bootstrap, group, topic, d)).start()
    wait_until(lambda: stored(db, topic) >= 8000, 120, "8,000 stored", k.alive)
    assert k.stop() == 0
    # Kafka's own tool: the end offsets
    r = kafka3.run_tool("get-offsets", "--bootstrap-server", kafka3.bootstrap, "--topic", topic)
    out = r.stdout if hasattr(r, "stdout") else r
    shell = {}
    for line in out.splitlines():
        t, p, o = line.strip().split(":")
        if t == topic:
            shell[int(p)] = int(o)
    assert shell == kafka3.end_offsets(topic)
    check_zk_at_end(zk, group, topic, shell)
    # kcat reads the records: the same (partition, offset, key) as the sink
    kc = subprocess.run(["kcat", "-C", "-b", kafka3.bootstrap, "-t", topic, "-e", "-q",
                         "-f", "%p %o %k\n"], capture_output=True, text=True, timeout=120)
    assert kc.returncode == 0, kc.stderr
    seen = sorted(tuple(ln.split()) for ln in kc.stdout.splitlines() if ln.strip())
    mine = sorted((str(p), str(o), key) for p, o, key in
                  rows(db, "SELECT partition, offset, CAST(key AS TEXT) FROM records "
                           "WHERE topic=?", topic))
    assert seen == mine
    assert_verified(bins, manifest, db)


def test_direct_retention_loss(bins, zk, kafka3, tmp_path, names, kwal_factory):
    topic, group = names.topic(), names.group()
    kafka3.create_topic(topic, 2, rf=3)
    produce(bins, kafka3.bootstrap, topic, 2000, tmp_path, name="lg1")
    d = tmp_path / "d"
    db = str(d / "out.db")
    conf = settings(zk, kafka3.bootstrap, group, topic, d)
    k1 = kwal_factory(["direct"], conf).start()
    wait_until(lambda: stored(db, topic) >= 2000, 120, "2,000 stored", k1.alive)
    assert k1.stop() == 0
    before = kafka3.end_offsets(topic)
    produce(bins, kafka3.bootstrap, topic, 2000, tmp_path, name="lg2")
    after = kafka3.end_offsets(topic)
    # delete what kwal has not read yet, up to half of the new records
    lost = 0
    for p in (0, 1):
        cut = before[p] + (after[p] - before[p]) // 2
        assert kafka3.delete_records(topic, p, cut) == cut
        lost += cut - before[p]
    k2 = kwal_factory(["direct"], conf).start()
    wait_until(lambda: zk.offsets(group, topic, 2) == after, 120, "ZooKeeper at the end offsets",
               k2.alive)
    assert k2.stop() == 0
    s = k2.stats()
    assert s["source_loss_records"] == lost, (s["source_loss_records"], lost)
    assert s["source_loss_events"] == 2
    total = rows(db, "SELECT COUNT(*) FROM records WHERE topic=?", topic)[0][0]
    assert total == sum(after.values()) - lost
