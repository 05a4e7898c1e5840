"""0023 -- `kwal receive` ingests what kcat produces, and its JSON lines are
kcat's -J envelopes. On a real ZooKeeper server and the shared 3-node Apache
Kafka cluster.

a  kcat as the producer: `kwal-loadgen --print-kcat` writes 100,000 keyed
   records of 100 B as KEY:PAYLOAD lines at 10,000/s into a pipe that
   `kcat -P -K:` reads and produces to an 8-partition topic (RF 3), while
   `kwal receive` consumes it (auto.offset.reset=earliest, sqlite sink,
   batch.interval.ms=500). kcat exits 0 (1 when a delivery fails). Once
   everything is stored (bounded wait) SIGTERM stops kwal with exit 0;
   kwal-verify --manifest --sqlite: stored=100000, 0 missing, 0 duplicates;
   the sink has 100,000 rows; every partition's ZooKeeper offset equals its
   end offset in the sink and in Kafka, summing to 100,000.
b  kcat's -J envelope: kcat produces 8 records to a 4-partition topic with
   keys (one with a quote, one empty), none (null key), payloads with
   quotes, backslashes, UTF-8, control bytes, colons, an empty payload and a
   null one (-Z), and headers (-H; repeated names, an empty value, a null
   value, none at all). Two `kwal receive` instances in two groups ingest
   them, one with sink=file:DIR and one with sink=jsonl (stdout); both stop
   on SIGTERM with exit 0, count 8 stored and 0 duplicate deliveries, and
   hold exactly 8 lines of valid JSON. Each line equals what `kcat -C -J`
   prints for the same record in every field (topic, partition, offset,
   tstype, ts, key, payload, headers -- present exactly when kcat has them)
   but broker (kwal writes -1: it does not know which broker served a
   record), with its fields in kcat's order. The file sink's directory holds
   only batch-N.jsonl files. ZooKeeper offsets of both groups = Kafka's end
   offsets.

Numbers come from kwal's --stats-json, kwal-verify and kcat, never from
kwal's log.
"""
import json
import os
import shutil
import subprocess
import time

import pytest

from kwalh import proc, workload

RUN = "0023000000000001"
TOTAL = 100_000

pytestmark = pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is not installed")


def wait_until(pred, timeout, what, alive=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        if alive is not None and not alive():
            pytest.fail(f"{what}: the process died")
        time.sleep(0.25)
    pytest.fail(f"{what}: not within {timeout} s")


def settings(zk, kafka, group, topic, d, sink):
    return {
        "group.id": group,
        "topics": topic,
        "zookeeper.connect": zk.connect,
        "kafka.bootstrap.servers": kafka.bootstrap,
        "auto.offset.reset": "earliest",
        "wal.dirs": f"{d}/wal",
        "sink": sink,
        "batch.interval.ms": 500,
    }


def kcat(*args, input=None, timeout=60):
    r = subprocess.run(["kcat", *args], input=input, capture_output=True, timeout=timeout)
    assert r.returncode == 0, f"kcat {' '.join(map(str, args))}: exit {r.returncode}: " \
        f"{r.stderr.decode(errors='replace')[-2000:]}"
    return r.stdout


def assert_zk_at_end(zk, kafka, group, topic, partitions, total):
    zoff = zk.offsets(group, topic, partitions)
    assert zoff == kafka.end_offsets(topic), f"group {group}: ZooKeeper {zoff}"
    assert sum(zoff.values()) == total


def test_kcat_producer(bins, zk, kafka3, tmp_path, names, kwal_factory):
    topic, group = names.topic(), names.group()
    kafka3.create_topic(topic, 8, rf=3)
    d = tmp_path / "s1"
    db = str(d / "out.db")
    manifest = str(tmp_path / "m")
    k = kwal_factory(["receive"], settings(zk, kafka3, group, topic, d, f"sqlite:{db}")).start()
    lg = kc = None
    try:
        lg = proc.spawn([bins.loadgen, "--print-kcat", "--records", str(TOTAL), "--size", "100",
                         "--rate", "10000", "--run-id", RUN, "--topic", topic,
                         "--manifest", manifest],
                        stdout=subprocess.PIPE, stderr=str(tmp_path / "lg.err"))
        kc = proc.spawn(["kcat", "-P", "-b", kafka3.bootstrap, "-t", topic, "-K:"],
                        stdin=lg.stdout, stderr=str(tmp_path / "kcat.err"))
        lg.stdout.close()                  # kcat holds the read end
        wait_until(lambda: workload.sqlite_count(db, topic) >= 10_000, 120, "10,000 stored",
                   k.alive)
        assert proc.reap(lg, 180) == 0, "kwal-loadgen --print-kcat failed"
        assert proc.reap(kc, 180) == 0, "kcat -P failed (a delivery failed?)"
    finally:
        for p in (lg, kc):
            if p is not None:
                proc.kill_wait(p)
    assert workload.read_manifest(manifest).get("records") == str(TOTAL)
    wait_until(lambda: workload.sqlite_count(db, topic) >= TOTAL, 180, f"{TOTAL} stored",
               k.alive)
    assert k.stop() == 0, k.log_tail(5)
    s = k.stats()
    assert s["records_received"] == TOTAL and s["records_stored"] == TOTAL, s
    assert s["duplicate_deliveries"] == 0, s
    r = workload.verify(bins, manifest=manifest, sqlite=db)
    assert r.rc == 0, r.as_dict()
    assert r.summary == {"expected": TOTAL, "stored": TOTAL, "missing": 0, "duplicates": 0,
                         "duplicate_offsets": 0, "corrupt": 0, "foreign": 0,
                         "out_of_range": 0}, r.as_dict()
    assert workload.sqlite_count(db, topic) == TOTAL
    zoff = zk.offsets(group, topic, 8)
    assert zoff == workload.sqlite_end_offsets(db, topic, 8)
    assert_zk_at_end(zk, kafka3, group, topic, 8, TOTAL)


# -K: splits at the first ':'; -H applies to every record of one kcat run.
# (No invalid UTF-8: kcat -J prints such bytes raw, which is not JSON; kwal
# escapes them, so the two cannot be compared field by field.)
KEYED = (b"k1:hello\n"
         b'k"2:a "quoted" \\back\\slash, \xc3\xa9t\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac\n'
         b":empty key\n"
         b"k4:\n"
         b"tab:a\tb\x01c\x1fd\n"
         b"sp ace:payload:with:colons\n")
HEADERS = ["-H", "app=kwal", "-H", "trace=a=b", "-H", "empty=", "-H", "novalue",
           "-H", "app=dup", "-H", b"utf=\xc3\xa9"]


def read_json_lines(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(ln) for ln in f.read().splitlines()]


def test_kcat_envelope(bins, zk, kafka3, tmp_path, names, kwal_factory):
    topic = names.topic()
    kafka3.create_topic(topic, 4, rf=3)
    bs = kafka3.bootstrap
    (tmp_path / "kh.1").write_bytes(KEYED)
    kcat("-P", "-b", bs, "-t", topic, "-K:", "-l", *HEADERS, str(tmp_path / "kh.1"))
    kcat("-P", "-b", bs, "-t", topic, "-p", "2", input=b"no key, no headers\n")
    kcat("-P", "-b", bs, "-t", topic, "-p", "3", "-K:", "-Z", "-H", "only=one", input=b"k5:\n")
    out = kcat("-C", "-b", bs, "-t", topic, "-e", "-q", "-o", "beginning", "-J")
    (tmp_path / "kcat.json").write_bytes(out)
    theirs = read_json_lines(tmp_path / "kcat.json")
    assert len(theirs) == 8, theirs
    # what the comparison covers
    assert sum(1 for r in theirs if r["key"] is None) == 1
    assert sum(1 for r in theirs if r["payload"] is None) == 1
    assert sum(1 for r in theirs if r.get("headers") is None) == 1
    assert sum(1 for r in theirs if r.get("headers") and None in r["headers"]) == 6

    f_dir, j_dir = tmp_path / "f", tmp_path / "j"
    (f_dir / "out").mkdir(parents=True)
    gf, gj = names.group(), names.group()
    kf = kwal_factory(["receive"], settings(zk, kafka3, gf, topic, f_dir, f"file:{f_dir}/out"),
                      name="file").start()
    kj = kwal_factory(["receive"], settings(zk, kafka3, gj, topic, j_dir, "jsonl"),
                      name="jsonl").start()
    jsonl_out = kj.base + ".out"

    def file_lines():
        n = 0
        for name in os.listdir(f_dir / "out"):
            if name.startswith("batch-") and name.endswith(".jsonl"):
                with open(f_dir / "out" / name, "rb") as f:
                    n += f.read().count(b"\n")
        return n

    def jsonl_lines():
        with open(jsonl_out, "rb") as f:
            return f.read().count(b"\n")

    wait_until(lambda: kf.stat("records_stored", 0) >= 8 and kj.stat("records_stored", 0) >= 8,
               120, "both sinks store the 8 records",
               lambda: kf.alive() and kj.alive())
    assert kf.stop() == 0, kf.log_tail(5)
    assert kj.stop() == 0, kj.log_tail(5)
    for k in (kf, kj):
        s = k.stats()
        assert s["records_stored"] == 8 and s["duplicate_deliveries"] == 0, s
    assert file_lines() == 8 and jsonl_lines() == 8

    files = sorted(os.listdir(f_dir / "out"))
    stray = [n for n in files if not (n.startswith("batch-") and n.endswith(".jsonl")
                                      and n[6:-6].isdigit())]
    assert not stray, f"stray files in the file sink's directory: {stray}"
    with open(tmp_path / "file.json", "wb") as out_f:
        for n in files:
            out_f.write((f_dir / "out" / n).read_bytes())

    def by_pos(records):
        return {(r["partition"], r["offset"]): r for r in records}

    want = by_pos(theirs)
    for sink, path in (("file", tmp_path / "file.json"), ("jsonl", jsonl_out)):
        ours = read_json_lines(path)
        assert len(ours) == 8, f"sink {sink}: {len(ours)} records"
        got = by_pos(ours)
        assert got.keys() == want.keys(), f"sink {sink}: positions {sorted(got)}"
        for pos, w in want.items():
            g = {k: v for k, v in got[pos].items() if k != "broker"}
            w_fields = {k: v for k, v in w.items() if k != "broker"}
            assert g == w_fields, f"sink {sink} {pos}: kwal {g} != kcat {w_fields}"
            assert list(g) == list(w_fields), \
                f"sink {sink} {pos}: fields {list(g)}, kcat's order {list(w_fields)}"
    assert_zk_at_end(zk, kafka3, gf, topic, 4, 8)
    assert_zk_at_end(zk, kafka3, gj, topic, 4, 8)
