"""0060 -- offsets that hold no record a consumer is given, on real Apache
Kafka, in both modes (receive and direct).

a  transactions: kwal-txn-produce writes committed and aborted transactions
   (every third aborted) before and while kwal runs with
   isolation.level=read_committed. Exactly the committed records are stored,
   once; none of the aborted; every partition's ZooKeeper offset reaches
   Kafka's end offset, past the commit markers (no range or block waits for
   an offset that never comes: SPARK-17147); direct mode's stored ranges are
   contiguous up to the end offsets.
b  compaction: a compacted topic whose older segments the log cleaner has
   compacted (gaps in the offsets); exactly the records Kafka still serves
   are stored, once, and ZooKeeper ends at the end offsets.
"""
import os
import subprocess
import time

import pytest

from kwtest import check_zk_at_end, rows, settings, stored, wait_until

MODES = ["receive", "direct"]


def txn_produce(bins, bootstrap, topic, txns, per_txn, partitions, txn_id):
    r = subprocess.run([os.path.join(bins.dir, "kwal-txn-produce"), "--brokers", bootstrap,
                        "--topic", topic, "--transactions", str(txns), "--records",
                        str(per_txn), "--partitions", str(partitions), "--abort-every", "3",
                        "--id", txn_id], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return dict(kv.split("=") for kv in r.stdout.split())


def committed_keys(first_txn, txns, per_txn):
    return {f"t{t}-r{i}" for t in range(txns) for i in range(per_txn) if t % 3 != 2}


@pytest.mark.parametrize("mode", MODES)
def test_transactions(mode, bins, zk, kafka3, tmp_path, names, kwal_factory):
    topic, group = names.topic(), names.group()
    parts = 4
    kafka3.create_topic(topic, parts, rf=3)
    first = txn_produce(bins, kafka3.bootstrap, topic, 12, 10, parts, f"{topic}-a")
    assert int(first["aborted_txns"]) == 4
    d = tmp_path / mode
    db = str(d / "out.db")
    k = kwal_factory([mode], settings(zk, kafka3.bootstrap, group, topic, d,
                                      **{"kafka.isolation.level": "read_committed"})).start()
    wait_until(lambda: stored(db, topic) >= 80, 120, "the first committed records", k.alive)
    # more transactions while kwal runs: gaps in the middle and at the end
    second = txn_produce(bins, kafka3.bootstrap, topic, 9, 10, parts, f"{topic}-b")
    want = int(first["committed_records"]) + int(second["committed_records"])
    wait_until(lambda: stored(db, topic) >= want, 120, f"{want} stored", k.alive)
    ends = kafka3.end_offsets(topic)
    # every offset stored in ZooKeeper, up to the end (markers included)
    wait_until(lambda: zk.offsets(group, topic, parts) == ends, 120,
               f"ZooKeeper at the end offsets {ends}", k.alive)
    assert k.stop() == 0
    got = rows(db, "SELECT CAST(key AS TEXT), CAST(payload AS TEXT) FROM records WHERE topic=?",
               topic)
    assert len(got) == want, f"{len(got)} stored, {want} committed"
    assert {p for _, p in got} == {"committed"}, "an aborted record was stored"
    # keys repeat between the two producers' transactions: count per key
    keys = [key for key, _ in got]
    expect = sorted(list(committed_keys(0, 12, 10)) + list(committed_keys(0, 9, 10)))
    assert sorted(keys) == expect
    s = k.stats()
    assert s["records_stored"] == want and s["duplicate_deliveries"] == 0
    check_zk_at_end(zk, group, topic, ends)
    if mode == "direct":
        for p in range(parts):
            ranges = rows(db, "SELECT from_offset, until_offset FROM direct_ranges "
                              "WHERE topic=? AND partition=? ORDER BY from_offset", topic, p)
            assert ranges, f"no ranges for partition {p}"
            for (f0, u0), (f1, _) in zip(ranges, ranges[1:]):
                assert u0 == f1, f"ranges not contiguous on {p}: {ranges}"
            assert ranges[0][0] == 0 and ranges[-1][1] == ends[p]
    else:
        assert s["end_advances"] > 0, "no end-of-partition advance past a marker"


def kcat_visible(bootstrap, topic):
    """(partition, offset, key) of every record Kafka serves now."""
    r = subprocess.run(["kcat", "-C", "-b", bootstrap, "-t", topic, "-e", "-q",
                        "-f", "%p %o %k\n"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return sorted((int(p), int(o), k) for p, o, k in
                  (ln.split() for ln in r.stdout.splitlines() if ln.strip()))


@pytest.mark.parametrize("mode", MODES)
def test_compacted_topic(mode, bins, zk, kafka_factory, tmp_path, names, kwal_factory):
    kc = kafka_factory(nodes=1, broker_props={"log.cleaner.backoff.ms": "200"})
    topic, group = names.topic(), names.group()
    kc.create_topic(topic, 2, rf=1, config={
        "cleanup.policy": "compact", "segment.ms": "100", "min.cleanable.dirty.ratio": "0.01",
        "delete.retention.ms": "100", "min.compaction.lag.ms": "0"})
    produced = 0
    for rnd in range(8):           # 8 rounds of the same 50 keys: a segment each
        lines = "".join(f"k{i}:r{rnd}\n" for i in range(50))
        for p in (0, 1):
            subprocess.run(["kcat", "-P", "-b", kc.bootstrap, "-t", topic, "-p", str(p),
                            "-K:"], input=lines, text=True, check=True, timeout=60)
            produced += 50
        time.sleep(0.3)
    # the cleaner runs once segments rolled; a last record rolls the rest
    wait_until(lambda: len(kcat_visible(kc.bootstrap, topic)) < produced - 200, 120,
               "the log cleaner compacts the topic", interval=1)
    visible = kcat_visible(kc.bootstrap, topic)
    offsets = {(p, o) for p, o, _ in visible}
    ends = kc.end_offsets(topic)
    assert max(o for p, o in offsets if p == 0) < ends[0]
    d = tmp_path / mode
    db = str(d / "out.db")
    k = kwal_factory([mode], settings(zk, kc.bootstrap, group, topic, d)).start()
    wait_until(lambda: zk.offsets(group, topic, 2) == ends, 120,
               f"ZooKeeper at the end offsets {ends}", k.alive)
    assert k.stop() == 0
    got = rows(db, "SELECT partition, offset FROM records WHERE topic=?", topic)
    # the cleaner may have run again meanwhile: what kwal read is a subset of
    # what was served before it ran, and holds every record still served now
    got_set = {(p, o) for p, o in got}
    assert len(got) == len(got_set)
    now_visible = {(p, o) for p, o, _ in kcat_visible(kc.bootstrap, topic)}
    assert now_visible <= got_set <= offsets, \
        f"stored {len(got_set)}, served before {len(offsets)}, now {len(now_visible)}"
    assert len(got_set) < produced, "no gap: the topic was not compacted"
    s = k.stats()
    assert s["duplicate_deliveries"] == 0 and s["source_loss_records"] == 0
