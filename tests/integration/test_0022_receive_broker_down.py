"""0022 -- `kwal receive` rides out Kafka brokers going down and coming back
while records arrive, on a real ZooKeeper server and a 3-node Apache Kafka
cluster of the test's own (nodes are stopped, killed and paused here).

The topic has 8 partitions, replication factor 3, min.insync.replicas=2,
created with its leaders set by the test (node 1: 0 3 6, node 2: 1 4 7,
node 3: 2 5). `kwal receive` consumes it (auto.offset.reset=earliest,
sqlite sink, batch.interval.ms=500). The workload is one kwal-loadgen run
(keyed records of 100 B, acks=all, idempotent) produced in four chunks of
sequence numbers at 2,000/s: 10,000 before the faults, then 40,000 (20 s)
started just before each fault, so that records keep arriving through
every outage however slow the machine is. One fault at a time; after each
the node starts again and the test waits until every replica is back in
sync (so that the next fault leaves two):

1. node 2 stops (SIGTERM: controlled shutdown) for at least 6 s. The
   cluster moves its partitions' leadership to the other replicas (checked
   in the metadata). Checked: every one of the 8 partitions is stored past
   the end offset Kafka had just after the node went down (bounded wait),
   kwal stays up, and the chunk's producer still produces when the minimum
   hold is over.
2. the leaders of partitions 2 and 5 move to node 1 (reassignment and
   preferred election), then node 3 is SIGKILLed for at least 6 s: the
   controller fences it after broker.session.timeout.ms and elects new
   leaders for what it led (checked in the metadata). The same checks.
3. the node leading the most partitions hangs (SIGSTOP) for at least 10 s
   -- the slow broker of the mock's `rtt` -- long enough to be fenced and
   lose its leadership (checked in the metadata), then resumes. Checked
   during the hang: the partitions it did not lead are stored past the end
   offsets they had just after it hung (the idempotent producer holds the
   hung leader's partitions until its requests to it end, so those get no
   new records to check before it resumes), kwal stays up, the producer
   still produces after 10 s.

At the end (bounded waits): every chunk's producer delivered all of its
records; kwal-verify --expect 130000 --run-id --sqlite: stored=130000,
0 missing, 0 duplicates (when not, the topic is read back with kcat to
show whether Kafka itself holds duplicates); the sink has 130,000 rows;
SIGTERM stops kwal with exit 0 and its statistics count 130,000 received
and stored and 0 duplicate deliveries; every partition's ZooKeeper offset
equals its end offset in the sink and in Kafka, summing to 130,000
(invariant 1).

Numbers come from kwal's --stats-json, kwal-verify, kcat and the cluster's
metadata, never from kwal's log.
"""
import collections
import json
import subprocess
import time

import pytest

from kwalh import workload

RUN = "0022000000000001"
RATE = 2000
FIRST_CHUNK = 10_000
CHUNK = 40_000                      # 20 s at RATE, one per fault
TOTAL = FIRST_CHUNK + 3 * CHUNK
PARTITIONS = 8
LEADERS = {p: p % 3 + 1 for p in range(PARTITIONS)}      # 1: 0 3 6, 2: 1 4 7, 3: 2 5


def wait_until(pred, timeout, what, alive=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        if alive is not None and not alive():
            pytest.fail(f"{what}: the process died")
        time.sleep(0.25)
    pytest.fail(f"{what}: not within {timeout} s")


def create_led_topic(kc, topic):
    """TOPIC with PARTITIONS partitions, RF 3, min.insync.replicas=2, and
    partition p led by node LEADERS[p] (the first replica of its list)."""
    lists = []
    for p in range(PARTITIONS):
        lead = LEADERS[p]
        lists.append(":".join(str(n) for n in (lead, lead % 3 + 1, (lead + 1) % 3 + 1)))
    kc.run_tool("topics", "--bootstrap-server", kc.bootstrap, "--create", "--topic", topic,
                "--replica-assignment", ",".join(lists), "--config", "min.insync.replicas=2")
    parts = kc.wait_topic(topic, PARTITIONS, full_isr=True)
    assert {p: v["leader"] for p, v in parts.items()} == LEADERS, parts


def leaders(kc, topic):
    return {p: v["leader"] for p, v in kc.partitions(topic).items()}


def kafka_ends(kc, topic, parts, timeout=60):
    """{p: end offset} of TOPIC's partitions PARTS, asked (kcat -Q) of the
    running nodes only; retried while a partition has no leader that
    answers."""
    bs = ",".join(kc.node_bootstrap(i) for i in kc.node_ids if kc.node_state(i) == "running")
    args = ["kcat", "-Q", "-J", "-b", bs, "-m", "5"]
    for p in parts:
        args += ["-t", f"{topic}:{p}:-1"]
    deadline = time.monotonic() + timeout
    while True:
        r = subprocess.run(args, capture_output=True, text=True, timeout=60)
        try:
            got = {int(v["partition"]): int(v["offset"])
                   for v in json.loads(r.stdout.strip().splitlines()[-1])[topic].values()
                   if isinstance(v, dict) and "partition" in v and "error" not in v}
        except (ValueError, IndexError, KeyError):
            got = {}
        if set(got) == set(parts):
            return got
        assert time.monotonic() < deadline, f"kcat -Q {topic} {parts}: {r.stdout} {r.stderr}"
        time.sleep(0.5)


class Chunks:
    """The workload: sequence numbers 0..TOTAL-1 of run RUN, produced by one
    kwal-loadgen per chunk (--first), in the background."""

    def __init__(self, bins, bootstrap, topic, tmp_path):
        self.args = (bins, bootstrap, topic)
        self.tmp = tmp_path
        self.first = 0
        self.all = []

    def start(self, records):
        bins, bootstrap, topic = self.args
        lg = workload.Loadgen(bins, bootstrap, topic, records,
                              str(self.tmp / f"m{self.first}"), str(self.tmp / f"lg{self.first}"),
                              rate=RATE, run_id=RUN)
        lg.argv += ["--first", str(self.first)]
        lg.records = records
        self.first += records
        self.all.append(lg.start())
        return lg

    def finish(self, lg, timeout=240):
        """Wait for LG; it must have delivered every record of its chunk."""
        wait_until(lg.done, timeout, f"the producer of {lg.manifest} finishes")
        assert lg.rc == 0, open(lg.base + ".err").read()[-2000:]
        assert workload.read_manifest(lg.manifest).get("delivered") == str(lg.records)

    def kill_all(self):
        for lg in self.all:
            lg.thaw()
            lg.kill()


def outage(kc, k, lg, db, topic, what, min_s, since, parts=tuple(range(PARTITIONS))):
    """With a fault in place since SINCE (monotonic): Kafka's end offsets of
    PARTS now; then wait until MIN_S s have passed and each of PARTS is stored
    past them. kwal must stay up, the chunk's producer LG must still be
    producing after MIN_S s."""
    snap = kafka_ends(kc, topic, parts, timeout=90)
    held = False
    deadline = time.monotonic() + 150
    ends, behind = {}, list(parts)
    while True:
        assert k.alive(), f"{what}: kwal exited: {k.log_tail(5)}"
        if not held and time.monotonic() - since >= min_s:
            assert not lg.done(), f"{what}: the producer ended within {min_s} s: not mid-run"
            held = True
        if held:
            ends = workload.sqlite_end_offsets(db, topic, PARTITIONS)
            behind = [p for p in parts if ends[p] <= snap[p]]
            if not behind:
                return snap
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: partitions {behind} not stored past Kafka's end offsets "
                        f"{snap} (sink {ends})")
        time.sleep(0.5)


def make_whole(kc, topic, node):
    """Start NODE again and wait until every replica of TOPIC is in sync."""
    kc.start_node(node)
    kc.wait_topic(topic, PARTITIONS, timeout=180, full_isr=True)


def diagnose(bins, kc, topic, db, tmp_path):
    """Whether Kafka itself holds what the sink holds: kwal-verify on the sink
    and on the whole topic read back with kcat -J."""
    v = workload.verify(bins, expect=TOTAL, run_id=RUN, topic=topic, sqlite=db)
    dump = tmp_path / "kafka.json"
    with open(dump, "wb") as f:
        subprocess.run(["kcat", "-C", "-b", kc.bootstrap, "-t", topic, "-e", "-q",
                        "-o", "beginning", "-J"], stdout=f, stderr=subprocess.DEVNULL,
                       timeout=300)
    vk = subprocess.run([bins.verify, "--expect", str(TOTAL), "--run-id", RUN,
                         "--jsonl", str(dump)], capture_output=True, text=True, timeout=300)
    return (f"sink: {' | '.join(v.lines[-6:])}\n"
            f"Kafka (kcat -C -J): {' | '.join(vk.stdout.splitlines()[-6:])}")


def test_brokers_down_and_back(bins, zk, kafka_factory, tmp_path, names, kwal_factory):
    kc = kafka_factory(nodes=3)
    topic, group = names.topic(), names.group()
    create_led_topic(kc, topic)
    db = str(tmp_path / "out.db")
    k = kwal_factory(["receive"], {
        "group.id": group,
        "topics": topic,
        "zookeeper.connect": zk.connect,
        "kafka.bootstrap.servers": kc.bootstrap,
        "auto.offset.reset": "earliest",
        "wal.dirs": f"{tmp_path}/wal",
        "sink": f"sqlite:{db}",
        "batch.interval.ms": 500,
    })
    chunks = Chunks(bins, kc.bootstrap, topic, tmp_path)
    try:
        lg = chunks.start(FIRST_CHUNK)
        k.start()
        wait_until(lambda: workload.sqlite_count(db, topic) >= 5000, 120, "5,000 stored",
                   k.alive)
        chunks.finish(lg)

        # --- 1. node 2 stops (controlled shutdown)
        lg = chunks.start(CHUNK)
        time.sleep(1)
        t = time.monotonic()
        kc.stop_node(2)
        for p in range(PARTITIONS):
            kc.wait_leader(topic, p, timeout=60, not_in=(2,))
        outage(kc, k, lg, db, topic, "node 2 stopped", 6, t)
        make_whole(kc, topic, 2)
        chunks.finish(lg)

        # --- 2. leaders of 2 and 5 move to node 1, node 3 is killed
        kc.move_leader(topic, 2, 1)
        kc.move_leader(topic, 5, 1)
        now = leaders(kc, topic)
        assert now[2] == 1 and now[5] == 1, now
        lg = chunks.start(CHUNK)
        time.sleep(1)
        t = time.monotonic()
        kc.kill_node(3)
        for p in range(PARTITIONS):
            kc.wait_leader(topic, p, timeout=60, not_in=(3,))
        outage(kc, k, lg, db, topic, "node 3 killed", 6, t)
        make_whole(kc, topic, 3)
        chunks.finish(lg)

        # --- 3. the busiest leader hangs for at least 10 s
        now = leaders(kc, topic)
        busiest = collections.Counter(now.values()).most_common(1)[0][0]
        others = tuple(p for p in range(PARTITIONS) if now[p] != busiest)
        lg = chunks.start(CHUNK)
        time.sleep(1)
        t = time.monotonic()
        kc.pause_node(busiest)
        try:
            outage(kc, k, lg, db, topic, f"node {busiest} paused", 10, t, others)
            for p in range(PARTITIONS):
                kc.wait_leader(topic, p, timeout=60, not_in=(busiest,))
        finally:
            kc.resume_node(busiest)
        assert k.alive(), k.log_tail(5)
        chunks.finish(lg)
    finally:
        chunks.kill_all()

    # --- the end
    assert chunks.first == TOTAL
    wait_until(lambda: workload.sqlite_count(db, topic) >= TOTAL, 180, f"{TOTAL} stored",
               k.alive)
    assert k.stop() == 0, k.log_tail(5)
    s = k.stats()
    r = workload.verify(bins, expect=TOTAL, run_id=RUN, topic=topic, sqlite=db)
    ok = {"expected": TOTAL, "stored": TOTAL, "missing": 0, "duplicates": 0,
          "duplicate_offsets": 0, "corrupt": 0, "foreign": 0, "out_of_range": 0}
    assert r.rc == 0 and r.summary == ok, diagnose(bins, kc, topic, db, tmp_path)
    assert workload.sqlite_count(db, topic) == TOTAL
    assert s["final"] is True
    assert s["records_received"] == TOTAL and s["records_stored"] == TOTAL, s
    assert s["duplicate_deliveries"] == 0, s
    zoff = zk.offsets(group, topic, PARTITIONS)
    assert zoff == workload.sqlite_end_offsets(db, topic, PARTITIONS)
    assert zoff == kc.end_offsets(topic)
    assert sum(zoff.values()) == TOTAL
