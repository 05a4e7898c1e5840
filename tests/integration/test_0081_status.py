"""0081 -- `kwal status` against a real ZooKeeper server and the shared 3-node
Apache Kafka cluster, checked against the known state (ZooKeeper read raw,
Kafka's end offsets read by kcat -Q), never against kwal's log.

a  Two `kwal receive` instances of one group on a topic of 4 partitions, every
   record stored: --json lists both instances (name, host, pid), every
   partition owned by one of them (as the owner nodes say), stored = Kafka's
   end offset = high watermark, lag 0, totals exact; this machine's WAL is
   healthy. The human table has one row per partition with the same values.
b  After both stop: no instances, no owners, the offsets still there, lag 0,
   and the WAL with 0 pending blocks.
c  M more records produced while stopped: stored unchanged, high = the new
   end offset, lag per partition = what was produced there, total lag = M;
   the same in the human table.
d  A direct-mode group: its instance owns every partition, stored (ZooKeeper's
   mirror) = the sink's position (direct_ranges) = the end offset, lag 0, no
   WAL on this machine; after it stops: no owner, offsets there.
e  Bad arguments exit 2 with a usage hint; ZooKeeper unreachable exits 1 with
   one line naming it; a group that does not exist exits 1 saying so and is
   not created; Kafka unreachable exits 1, still prints ZooKeeper's view
   (stored offsets, watermarks and lag null) and says Kafka was unreachable.
"""
import json
import os
import socket

from kwtest import kcat, produce, run, settings, stored, wait_until

PARTITIONS = 4
RECORDS = 2000
MORE = 300


def status(bins, conf, *args, rc=0, timeout=120):
    """`kwal status -c conf ARGS` with exit status rc; the CompletedProcess."""
    return run([bins.kwal, "status", "-c", conf, *args], timeout=timeout, rc=rc)


def status_json(bins, conf, *args, rc=0):
    """`kwal status --json`: the object (stdout is exactly one JSON line).
    rc None: any exit status, None unless 0 (for waits)."""
    r = status(bins, conf, "--json", *args, rc=rc)
    if rc is None and r.returncode != 0:
        return None
    lines = r.stdout.splitlines()
    assert len(lines) == 1, r.both
    return json.loads(lines[0])


def table(bins, conf, rc=0):
    """The human output: (rows {(topic, partition): [owner, stored, high, lag]},
    the instances line, the total line, the whole text)."""
    text = status(bins, conf, rc=rc).stdout
    lines = text.splitlines()
    head = lines.index("partitions:")
    assert lines[head + 1].split()[:6] == ["TOPIC", "PARTITION", "OWNER", "STORED", "HIGH",
                                           "LAG"], text
    rows = {}
    for ln in lines[head + 2:]:
        if not ln.startswith("  "):
            break
        f = ln.split()
        rows[(f[0], int(f[1]))] = f[2:6]
    inst = [ln for ln in lines if ln.startswith("instances: ")]
    total = [ln for ln in lines if ln.startswith("total: ")]
    assert len(inst) == 1 and len(total) == 1, text
    return rows, inst[0], total[0], text


def zk_owner(zk, group, topic, p):
    return zk.get(f"/consumers/{group}/owners/{topic}/{p}")


def check_partitions(js, topic, ends, owners=None, stored=None, sink=False):
    """Every row of topic exactly: stored (default ends), high = ends, low 0,
    lag = high - stored, owner in owners (None: unowned); sink_next = stored
    when sink."""
    stored = stored or ends
    rows = [p for p in js["partitions"] if p["topic"] == topic]
    assert [p["partition"] for p in rows] == list(range(PARTITIONS)), js["partitions"]
    for p in rows:
        n = p["partition"]
        want = {"topic": topic, "partition": n, "stored": stored[n], "low": 0,
                "high": ends[n], "lag": ends[n] - stored[n],
                "sink_next": stored[n] if sink else None}
        got = {k: p[k] for k in want}
        assert got == want, (got, want)
        if owners is None:
            assert p["owner"] is None, p
        else:
            assert p["owner"] in owners, p


def check_table(rows, topic, ends, owners, stored=None):
    """The human rows say what the JSON said."""
    stored = stored or ends
    assert sorted(rows) == [(topic, n) for n in range(PARTITIONS)], rows
    for n in range(PARTITIONS):
        owner, st, high, lag = rows[(topic, n)]
        assert (st, high, lag) == (str(stored[n]), str(ends[n]), str(ends[n] - stored[n])), \
            rows[(topic, n)]
        assert owner in owners, rows[(topic, n)]


def test_receive_group(bins, zk, kafka3, tmp_path, names, kwal_factory):
    topic, group = names.topic(), names.group()
    kafka3.create_topic(topic, PARTITIONS, rf=3)
    produce(bins, kafka3.bootstrap, topic, RECORDS, tmp_path)
    ends = kafka3.end_offsets(topic)
    assert sum(ends.values()) == RECORDS and min(ends.values()) > 0, ends

    # (a) two instances, every record stored
    ks = {}
    for name in ("inst-a", "inst-b"):
        s = settings(zk, kafka3.bootstrap, group, topic, str(tmp_path / name),
                     **{"instance.id": name})
        ks[name] = kwal_factory(["receive"], s, name=name).start()
    conf_a = ks["inst-a"].conf

    def settled():
        js = status_json(bins, conf_a, rc=None)     # 1 until the group exists
        if js is None:
            return None
        owners = {p["owner"] for p in js["partitions"]}
        done = [p["stored"] for p in js["partitions"]] == [ends[n] for n in range(PARTITIONS)]
        return js if done and owners == {"inst-a", "inst-b"} and len(js["instances"]) == 2 \
            else None

    js = wait_until(settled, 180, "both instances own partitions and all is stored",
                    lambda: all(k.alive() for k in ks.values()))
    host = socket.gethostname()
    assert js["group"] == group and js["zookeeper"] == zk.connect, js
    assert js["kafka"] == {"bootstrap": kafka3.bootstrap, "reachable": True, "error": None}
    assert [(i["name"], i["host"], i["pid"]) for i in js["instances"]] == \
        [("inst-a", host, ks["inst-a"].pid), ("inst-b", host, ks["inst-b"].pid)], js
    assert js["topics"] == [{"topic": topic, "in_kafka": True, "partitions": PARTITIONS}]
    check_partitions(js, topic, ends, owners={"inst-a", "inst-b"})
    for p in js["partitions"]:
        assert p["owner"] == zk_owner(zk, group, topic, p["partition"]), p
    assert js["totals"] == {"partitions": PARTITIONS, "owned": PARTITIONS, "unowned": 0,
                            "lag": 0, "lag_unknown": 0}
    w = js["wal"]
    assert [(r["dir"], r["state"], r["reason"]) for r in w["replicas"]] == \
        [(str(tmp_path / "inst-a" / "wal"), "healthy", None)], w
    assert w["healthy"] == 1 and w["write_quorum"] == 1 and w["error"] is None, w
    assert w["tracker"]["path"] == str(tmp_path / "inst-a" / "wal" / "tracker.db"), w
    assert w["tracker"]["error"] is None and w["tracker"]["pending_blocks"] >= 0, w
    assert js["errors"] == []

    rows, inst, total, _ = table(bins, conf_a)
    assert inst == "instances: 2"
    check_table(rows, topic, ends, {"inst-a", "inst-b"})
    assert total == f"total: {PARTITIONS} partitions, {PARTITIONS} owned, 0 unowned, lag 0"

    # (b) stopped: no instances, no owners, offsets stay, nothing pending
    for k in ks.values():
        assert k.stop() == 0, k.log_tail(3)
    pooled = sum(stored(str(tmp_path / n / "out.db"), topic) for n in ks)
    assert pooled == RECORDS
    js = status_json(bins, conf_a)
    assert js["instances"] == [], js
    check_partitions(js, topic, ends, owners=None)
    assert js["totals"] == {"partitions": PARTITIONS, "owned": 0, "unowned": PARTITIONS,
                            "lag": 0, "lag_unknown": 0}
    t = js["wal"]["tracker"]
    assert (t["pending_blocks"], t["pending_records"], t["pending_bytes"], t["open_batches"]) \
        == (0, 0, 0, 0), t
    assert (t["blocks"]["durable"], t["blocks"]["offsets_stored"], t["blocks"]["allocated"]) \
        == (0, 0, 0), t
    # the WAL's first segment is made by its first append: inst-a has one
    # exactly when it received records (those it stored; it stopped cleanly)
    a_stored = stored(str(tmp_path / "inst-a" / "out.db"), topic)
    assert js["wal"]["replicas"][0]["state"] == "healthy", js["wal"]
    assert (js["wal"]["segments"] >= 1) == (a_stored > 0), (a_stored, js["wal"])
    assert js["wal"]["replicas"][0]["segments"] == js["wal"]["segments"], js["wal"]
    assert js["errors"] == []

    # (c) M more records while stopped: lag per partition as produced
    produce(bins, kafka3.bootstrap, topic, MORE, tmp_path, name="more", first=RECORDS)
    new_ends = kafka3.end_offsets(topic)
    produced = {n: new_ends[n] - ends[n] for n in range(PARTITIONS)}
    assert sum(produced.values()) == MORE and max(produced.values()) > 0, produced
    js = status_json(bins, conf_a)
    check_partitions(js, topic, new_ends, owners=None, stored=ends)
    assert {p["partition"]: p["lag"] for p in js["partitions"]} == produced
    assert js["totals"]["lag"] == MORE and js["totals"]["lag_unknown"] == 0, js["totals"]
    rows, inst, total, _ = table(bins, conf_a)
    assert inst == "instances: 0"
    check_table(rows, topic, new_ends, {"-"}, stored=ends)
    assert total == f"total: {PARTITIONS} partitions, 0 owned, {PARTITIONS} unowned, lag {MORE}"


def test_direct_group(bins, zk, kafka3, tmp_path, names, kwal_factory):
    topic, group = names.topic(), names.group()
    kafka3.create_topic(topic, PARTITIONS, rf=3)
    produce(bins, kafka3.bootstrap, topic, RECORDS, tmp_path)
    ends = kafka3.end_offsets(topic)
    d = tmp_path / "d"
    s = settings(zk, kafka3.bootstrap, group, topic, str(d), **{
        "instance.id": "direct-1", "wal.dirs": str(d / "no-wal-here"),
        "batch.interval.ms": 300})
    os.makedirs(d, exist_ok=True)
    k = kwal_factory(["direct"], s, name="direct").start()
    db = str(d / "out.db")
    wait_until(lambda: stored(db, topic) >= RECORDS, 180, f"{RECORDS} stored", k.alive)

    def settled():
        js = status_json(bins, k.conf, rc=None)
        return js if js is not None and [p["stored"] for p in js["partitions"]] == \
            [ends[n] for n in range(PARTITIONS)] else None

    js = wait_until(settled, 60, "ZooKeeper's mirror at the end offsets", k.alive)
    assert [(i["name"], i["pid"]) for i in js["instances"]] == [("direct-1", k.pid)], js
    check_partitions(js, topic, ends, owners={"direct-1"}, sink=True)
    assert js["totals"] == {"partitions": PARTITIONS, "owned": PARTITIONS, "unowned": 0,
                            "lag": 0, "lag_unknown": 0}
    assert js["wal"] is None and js["errors"] == [], js
    rows, inst, total, text = table(bins, k.conf)
    check_table(rows, topic, ends, {"direct-1"})
    assert "wal: none on this machine" in text, text

    assert k.stop(grace=120) == 0, k.log_tail(3)
    js = status_json(bins, k.conf)
    assert js["instances"] == []
    check_partitions(js, topic, ends, owners=None, sink=True)
    assert not os.path.exists(d / "no-wal-here"), "status created the WAL directory"


def test_errors(bins, zk, kafka3, tmp_path, names, kwal_factory):
    topic, group = names.topic(), names.group()
    kafka3.create_topic(topic, PARTITIONS, rf=3)
    conf = str(tmp_path / "s.conf")
    s = settings(zk, kafka3.bootstrap, group, topic, str(tmp_path / "s"))
    with open(conf, "w") as f:
        f.writelines(f"{k}={v}\n" for k, v in s.items())

    def one_line(r, *words):
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("kwal: status: "), r.both
        for w in words:
            assert w in lines[0], r.both
        return lines[0]

    # bad arguments: exit 2 with a usage hint
    for argv, words in [([], ["Give -c FILE"]), (["-c", conf, "--bogus"], ["'--bogus'"]),
                        (["-c", conf, "--timeout", "x"], ["--timeout"]),
                        (["-c", conf, "extra"], ["'extra'"]), (["-c"], ["-c needs"])]:
        r = run([bins.kwal, "status", *argv], rc=2)
        assert r.stdout == "", r.both
        assert "kwal: status: " in r.stderr and "Try 'kwal status --help'." in r.stderr, r.both
        for w in words:
            assert w in r.stderr, r.both
    r = run([bins.kwal, "status", "-c", conf, "-X", "group.id="], rc=2)
    one_line(r, "group.id")
    r = run([bins.kwal, "status", "--help"], rc=0)
    assert r.stdout.startswith("Usage: kwal status -c FILE"), r.both

    # ZooKeeper unreachable: one line, exit 1, nothing on stdout
    r = status(bins, conf, "-X", "zookeeper.connect=127.0.0.1:1", "--timeout", "1000", rc=1)
    assert r.stdout == ""
    one_line(r, "127.0.0.1:1", "ZooKeeper")

    # a group that does not exist: said, and not created
    r = status(bins, conf, rc=1)
    assert r.stdout == ""
    one_line(r, f"group '{group}' does not exist")
    assert zk.get(f"/consumers/{group}") is None

    # the group exists once kwal ran it; then Kafka unreachable: ZooKeeper's
    # view printed, watermarks unknown, exit 1 naming Kafka
    k = kwal_factory(["receive"], s, name="r").start()
    produce(bins, kafka3.bootstrap, topic, 200, tmp_path)
    ends = kafka3.end_offsets(topic)
    wait_until(lambda: zk.offsets(group, topic, PARTITIONS) == ends, 120,
               "ZooKeeper at the end offsets", k.alive)
    assert k.stop() == 0
    js = status_json(bins, conf, "-X", "kafka.bootstrap.servers=127.0.0.1:1",
                     "--timeout", "2000", rc=1)
    assert js["kafka"]["reachable"] is False and "127.0.0.1:1" in js["kafka"]["error"], js
    assert [(p["partition"], p["stored"], p["high"], p["lag"]) for p in js["partitions"]] == \
        [(n, ends[n], None, None) for n in range(PARTITIONS)], js
    assert js["totals"] == {"partitions": PARTITIONS, "owned": 0, "unowned": PARTITIONS,
                            "lag": 0, "lag_unknown": PARTITIONS}
    assert js["topics"] == [{"topic": topic, "in_kafka": None, "partitions": None}], js
    assert len(js["errors"]) == 1 and js["errors"][0].startswith("Kafka unreachable"), js
    r = status(bins, conf, "-X", "kafka.bootstrap.servers=127.0.0.1:1", "--timeout", "2000",
               rc=1)
    one_line(r, "Kafka unreachable")
    assert "kafka: unreachable" in r.stdout and f"total: {PARTITIONS} partitions" in r.stdout

    # the same group read whole again: exit 0, kcat agrees on the end offsets
    out = kcat("-Q", "-b", kafka3.bootstrap, *sum([["-t", f"{topic}:{n}:-1"]
                                                   for n in range(PARTITIONS)], []))
    assert all(f"{topic} [{n}] offset {ends[n]}" in out for n in range(PARTITIONS)), out
    js = status_json(bins, conf)
    assert [p["high"] for p in js["partitions"]] == [ends[n] for n in range(PARTITIONS)]
