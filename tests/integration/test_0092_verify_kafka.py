"""0092 -- kwal-verify --kafka checks a Kafka output topic in the Kafka sink's
format (tools/testkit/verify_kafka.h) on a real Apache Kafka cluster (the
shared 3-node `kafka3`), and finds exactly what was done to a broken copy.

The workload (made once per module, on first use): kwal-loadgen --headers
produces 2,000 records to a source topic of 4 partitions; kwal-txn-produce
--copy-from stands in for the sink: it copies the source to an output topic
of 3 partitions (source partition mod 3, key, value, timestamp, headers,
then kwal.topic/partition/offset) in one committed transaction, with
--abort-copies between two aborted transactions holding a copy of every
record each.

a  kwal-loadgen's records carry the timestamp ts_us/1000 of their payload
   and the header wl.seq=<seq>; its manifest says timestamps=1, headers=1.
b  the clean copy passes with the exact summary (out_of_order=0 at its end),
   the 4,000 aborted copies are not read (2,000 records read although the
   topic's offsets hold more than 6,000); KafkaStore counts 2,000 records and
   its end offsets per source partition are the source topic's.
c  broken copies, each caught by exit 1 and its own detail line: a record
   written twice in the committed transaction (duplicates=1 and, as it goes
   back, out_of_order=1), two records of a source partition swapped
   (out_of_order=1, nothing else), a timestamp 1 ms off (corrupt=1, the
   reason named), a record without kwal.offset (corrupt=1, listed by its
   output partition@offset).
d  errors, exit 2: a malformed --kafka, a topic that does not exist
   (KafkaStore counts 0 then), a read that cannot finish because the leader
   of a partition is paused (--kafka-timeout: the message names exactly the
   partitions it leads).

kwal itself does not run here.
"""
import json
import os

import pytest

from kwalh import workload
from kwtest import kcat, run

RECORDS = 2_000
SRC_PARTITIONS = 4
OUT_PARTITIONS = 3
CLEAN = ("expected={n} stored={n} missing=0 duplicates=0 duplicate_offsets=0 corrupt=0 "
         "foreign=0 out_of_range=0 out_of_order=0")


class Source:
    """The module's workload: source topic and manifest."""

    def __init__(self, d, topic):
        self.topic = topic
        self.manifest = str(d / "m")
        self.error = None


@pytest.fixture(scope="module")
def _source_cache():
    return {}


@pytest.fixture
def source(_source_cache, bins, kafka3, names, tmp_path_factory):
    """Produce the workload on first use; later tests reuse it."""
    if "s" not in _source_cache:
        s = Source(tmp_path_factory.mktemp("vk"), names.topic())
        _source_cache["s"] = s
        kafka3.create_topic(s.topic, SRC_PARTITIONS, rf=3)
        r = run([bins.loadgen, "--brokers", kafka3.bootstrap, "--topic", s.topic, "--records",
                 RECORDS, "--size", 100, "--headers", "--manifest", s.manifest, "-q"], 120)
        if r.returncode != 0:
            s.error = f"kwal-loadgen failed: {r.both}"
    s = _source_cache["s"]
    if s.error:
        pytest.fail(s.error)
    return s


def copy(bins, kafka, src, out, *extra):
    """kwal-txn-produce --copy-from src into a new topic out; its counts."""
    kafka.create_topic(out, OUT_PARTITIONS, rf=3)
    r = run([os.path.join(bins.dir, "kwal-txn-produce"), "--brokers", kafka.bootstrap,
             "--topic", out, "--copy-from", src, "--partitions", OUT_PARTITIONS,
             "--id", f"{out}-txn", *extra], 120, rc=0)
    return dict(kv.split("=") for kv in r.stdout.split())


def verify(bins, rc, *args):
    """kwal-verify ARGS; require exit rc; (summary line, stdout)."""
    r = run([bins.verify, *args], 120, rc=rc)
    lines = r.stdout.splitlines()
    assert lines and workload.parse_summary(lines[-1]), f"no summary line; {r.both}"
    return lines[-1], r.stdout


def detail(out, head):
    """The detail line starting with head + ':' (its text after that)."""
    got = [ln for ln in out.splitlines() if ln.startswith(head + ":")]
    assert got, f"no '{head}:' line\n{out}"
    return got[0][len(head) + 1:].strip()


# ----------------------------------------------------------------- tests --

def test_loadgen_timestamps_headers(kafka3, source):
    m = workload.read_manifest(source.manifest)
    assert (m.get("timestamps"), m.get("headers"), m.get("delivered")) == \
        ("1", "1", str(RECORDS)), m
    lines = kcat("-C", "-b", kafka3.bootstrap, "-t", source.topic, "-e", "-q", "-J",
                 "-o", "beginning", timeout=60).splitlines()
    assert len(lines) == RECORDS
    for line in lines[:50]:
        e = json.loads(line)
        ts_us = int(e["payload"].split()[3][:16])
        assert (e["tstype"], e["ts"]) == ("create", ts_us // 1000), e
        assert e["headers"] == ["wl.seq", e["key"]], e


def test_clean_copy(bins, kafka3, source, names):
    out = names.topic()
    c = copy(bins, kafka3, source.topic, out, "--abort-copies")
    assert c == {"committed_txns": "1", "aborted_txns": "2",
                 "committed_records": str(RECORDS), "aborted_records": str(2 * RECORDS)}, c
    # the aborted copies do take offsets: more than all records written
    assert sum(kafka3.end_offsets(out).values()) > 3 * RECORDS
    summary, stdout = verify(bins, 0, "--manifest", source.manifest,
                             "--kafka", f"{kafka3.bootstrap}/{out}", "--print-ends")
    assert summary == CLEAN.format(n=RECORDS)
    assert detail(stdout, "input").startswith(
        f"kafka {kafka3.bootstrap}/{out}: {RECORDS} records in {OUT_PARTITIONS} partitions"), \
        stdout
    ends = workload.detail_counts(stdout.splitlines(), "ends")
    assert ends == {(source.topic, p): e for p, e in kafka3.end_offsets(source.topic).items()}

    store = workload.KafkaStore(kafka3.bootstrap, out, bins)
    assert (store.kind, store.spec) == ("kafka", "kafka:" + out)
    assert store.exists()
    assert store.count(source.topic) == RECORDS
    assert store.count("another-topic") == 0
    assert store.end_offsets(source.topic, SRC_PARTITIONS) == kafka3.end_offsets(source.topic)
    v = workload.verify(bins, manifest=source.manifest, **store.verify_args())
    assert v.rc == 0 and v.summary["out_of_order"] == 0, v.as_dict()


BROKEN = {
    # fault: (summary fields that differ from a clean run, detail line, its start)
    "duplicate": ({"stored": RECORDS + 1, "duplicates": 1, "duplicate_offsets": 1,
                   "out_of_order": 1}, "duplicate seqs", None),
    "swap": ({"out_of_order": 1}, "out of order list", None),
    "timestamp": ({"stored": RECORDS - 1, "missing": 1, "corrupt": 1}, "corrupt",
                  "kafka {out}/"),
    "no-header": ({"stored": RECORDS - 1, "missing": 1, "corrupt": 1}, "corrupt",
                  "kafka {out}/"),
}


@pytest.mark.parametrize("fault", sorted(BROKEN))
def test_broken_copy(fault, bins, kafka3, source, names):
    out = names.topic()
    copy(bins, kafka3, source.topic, out, "--fault", fault)
    summary, stdout = verify(bins, 1, "--manifest", source.manifest,
                             "--kafka", f"{kafka3.bootstrap}/{out}")
    want = workload.parse_summary(CLEAN.format(n=RECORDS))
    diff, head, start = BROKEN[fault]
    want.update(diff)
    assert workload.parse_summary(summary) == want, stdout
    line = detail(stdout, head)
    if start:
        assert line.startswith(start.format(out=out)), line
    if fault == "timestamp":
        assert "timestamp" in line and "(the payload's ts_us / 1000)" in line, line
    if fault == "no-header":
        assert "are not kwal.topic, kwal.partition, kwal.offset" in line, line
    if fault == "swap":
        # output topic/partition@offset, then the source record that went back
        assert line.startswith(f"{out}/") and f"({source.topic}/" in line, line


def test_errors(bins, kafka3, source, names):
    r = run([bins.verify, "--manifest", source.manifest, "--kafka", "no-slash"], 30, rc=2)
    assert "is not BOOTSTRAP/TOPIC" in r.stderr, r.both
    r = run([bins.verify, "--manifest", source.manifest, "--kafka", f"{kafka3.bootstrap}/"],
            30, rc=2)
    assert "is not BOOTSTRAP/TOPIC" in r.stderr, r.both
    missing = names.topic()
    r = run([bins.verify, "--manifest", source.manifest,
             "--kafka", f"{kafka3.bootstrap}/{missing}"], 60, rc=2)
    assert f"topic {missing} does not exist" in r.stderr, r.both
    store = workload.KafkaStore(kafka3.bootstrap, missing, bins)
    assert store.count(source.topic) == 0 and not store.exists()


def test_read_timeout(bins, kafka3, source, names):
    """A partition whose only replica's node is paused never reaches its end:
    exit 2 after --kafka-timeout, naming exactly the partitions it leads."""
    out = names.topic()
    kafka3.create_topic(out, OUT_PARTITIONS, rf=1)
    leaders = {p: kafka3.leader(out, p) for p in range(OUT_PARTITIONS)}
    paused = leaders[0]
    other = next(i for i in kafka3.node_ids if i != paused)
    kafka3.pause_node(paused)                    # the fixture resumes it
    try:
        # bootstrap through a running node, so the metadata is answered
        r = run([bins.verify, "--manifest", source.manifest, "--kafka-timeout", 4000,
                 "--kafka", f"{kafka3.node_bootstrap(other)}/{out}"], 60, rc=2)
    finally:
        kafka3.resume_node(paused)
    stuck = [p for p, n in leaders.items() if n == paused]
    msg = [ln for ln in r.stderr.splitlines() if "read not finished within 4000 ms" in ln]
    assert msg, r.both
    assert f"{len(stuck)} of {OUT_PARTITIONS} partitions of {out} did not reach their end: " \
        in msg[0], msg[0]
    named = msg[0].split("did not reach their end: ", 1)[1]
    assert named == ", ".join(f"{p} (nothing read)" for p in stuck), msg[0]
