"""0050 -- `kwal compare`, the semantics comparison, as a user runs it.

  a. Bad arguments: an unknown mode, an unknown schedule event, a crash
     point kwal does not have: exit 2 with a one-line reason.
  b. `kwal compare` alone (it starts its own ZooKeeper and Kafka cluster) on
     a short workload with the default schedule (a crash in each mode's
     "output durable, offset not stored" window, then a SIGKILL), every mode.
     The outcome each mode exists to show: --no-wal loses records, --classic
     loses none, receive and direct lose none and store nothing twice; every
     mode saw the whole workload produced. The report is there: compare.md
     with a row per mode, compare.csv, compare.png (a PNG).
  c. With -c FILE it uses the cluster and ZooKeeper named there (started
     here), one mode.
  d. --sink postgresql (on that cluster): classic, receive and direct store
     into databases on a PostgreSQL server it starts; all of them lose
     nothing and, deduplicated by primary key, store nothing twice.
  e. --sink kafka (on that cluster, real Kafka only): classic and direct
     write into output topics of their own, made before the runs with
     Kafka's TopicCommand; read back with a read_committed consumer, both
     lose nothing and store nothing twice (classic's duplicate deliveries
     are skipped by its writer group); the latency comes from kwal's
     statistics. With --kafka mock it is refused (exit 2).

The Kafka cluster is a real one (kwalh.kafka) unless $KWAL_TEST_KAFKA=mock.
Run: KWAL_BIN_DIR=<build>/tools python3 -m pytest -q tests/integration/test_0050_compare.py
"""
import csv
import os
import subprocess

import pytest

from kwalh import services

KAFKA = services.resolve_kafka_kind(os.environ.get("KWAL_TEST_KAFKA", "auto"))


@pytest.fixture
def kwal(bins):
    """kwal(*args, timeout=60): run `kwal ARGS` of this build (conftest's bins:
    $KWAL_BIN_DIR, else <repo>/build/tools)."""
    def run(*args, timeout=60):
        return subprocess.run([bins.kwal, *args], capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
    return run


def expect(want, desc, r):
    assert r.returncode == want, "%s: expected exit %d, got %d\n--- stdout:\n%s\n--- stderr:\n%s" % (
        desc, want, r.returncode, r.stdout[-4000:], r.stderr[-4000:])


def rows(path):
    with open(path) as f:
        return {row["mode"]: row for row in csv.DictReader(f)}


# --- a. bad arguments ------------------------------------------------------------

@pytest.mark.parametrize("args,reason", [
    (["--modes", "receive,nope"], "unknown mode 'nope'"),
    (["--schedule", "boom@1"], "unknown event 'boom@1'"),
    (["--schedule", "crash@no.such:1"], "no crash point 'no.such'"),
])
def test_bad_arguments(kwal, args, reason):
    r = kwal("compare", *args)
    expect(2, "kwal compare " + " ".join(args), r)
    assert reason in r.stderr
    assert len(r.stderr.strip().splitlines()) <= 2, r.stderr      # reason + "Try ..."


# --- b. every mode, its own cluster ----------------------------------------------

def test_every_mode(kwal, tmp_path):
    out = tmp_path / "b"
    r = kwal("compare", "-n", "8000", "-r", "4000", "-o", str(out), "-q", "--kafka", KAFKA,
             timeout=900)
    expect(0, "kwal compare (every mode, default schedule)", r)
    c = out / "compare.csv"
    assert c.exists(), "no compare.csv"
    t = rows(c)
    text = c.read_text()
    for m in ("no-wal", "classic", "receive", "direct", "direct-alo"):
        assert m in t, "%s: no row in\n%s" % (m, text)
        assert t[m]["produced"] == "8000", "%s: produced %s, expected 8000" % (m, t[m]["produced"])
    assert int(t["no-wal"]["missing"]) > 0, "--no-wal lost nothing under the default schedule:\n" + text
    assert int(t["classic"]["missing"]) == 0, "--classic lost records:\n" + text
    for m in ("receive", "direct"):
        assert int(t[m]["missing"]) == 0, "%s lost records:\n%s" % (m, text)
        assert int(t[m]["dup_stored"]) == 0, "%s stored duplicates:\n%s" % (m, text)
    print("outcomes: no-wal missing %s; classic missing 0, duplicates stored %s; receive and "
          "direct 0 missing, 0 stored twice; direct-alo duplicates stored %s"
          % (t["no-wal"]["missing"], t["classic"]["dup_stored"], t["direct-alo"]["dup_stored"]))
    md = (out / "compare.md").read_text()
    assert sum(1 for ln in md.splitlines() if ln.startswith("| ")) == 7, \
        "compare.md: not a header, a rule and 5 rows:\n" + md
    assert (out / "compare.png").read_bytes()[:4] == b"\x89PNG", "compare.png is not a PNG"
    assert "report: %s" % (out / "compare.md") in r.stdout, "the report's path is not printed"


# --- c. -c FILE: a cluster and ZooKeeper of the user's ---------------------------

@pytest.fixture
def user_cluster(tmp_path, request, bins, zk):
    """ZooKeeper and a Kafka cluster that auto-creates topics (kwal compare -c
    creates its topics by producing to them): (bootstrap, ZooKeeper connect)."""
    if KAFKA == "real":
        kc = request.getfixturevalue("kafka_factory")(
            nodes=1, broker_props={"auto.create.topics.enable": "true", "num.partitions": "4"})
        yield kc.bootstrap, zk.connect
        return
    mock = services.MockKafka(bins, str(tmp_path / "kafka"), nodes=3)
    try:
        yield mock.start(), zk.connect
    finally:
        mock.stop()


def test_user_cluster(kwal, tmp_path, user_cluster):
    bs, zk = user_cluster
    conf = tmp_path / "user.conf"
    conf.write_text("kafka.bootstrap.servers=%s\nzookeeper.connect=%s\n" % (bs, zk))
    out = tmp_path / "c"
    r = kwal("compare", "-c", str(conf), "--modes", "direct", "--schedule", "kill@1", "-n", "3000",
             "-r", "3000", "-o", str(out), "-q", timeout=600)
    expect(0, "kwal compare -c FILE --modes direct", r)
    assert "Cluster: %s, ZooKeeper %s" % (bs, zk) in r.stdout, \
        "the report does not name the user's cluster:\n" + r.stdout
    t = rows(out / "compare.csv")
    assert t["direct"]["stored"] == "3000" and t["direct"]["missing"] == "0", \
        "direct on the user's cluster:\n" + (out / "compare.csv").read_text()


# --- d. --sink postgresql: every mode on a PostgreSQL server ---------------------

def test_postgresql_sink(kwal, tmp_path, user_cluster):
    """--sink postgresql: every mode stores into a database of its own on a
    server kwal compare starts; the primary key deduplicates in every mode, so
    nothing is stored twice even by --classic, and nothing is lost by the
    modes that lose nothing. The latency comes from the server's batches."""
    bs, zk = user_cluster
    conf = tmp_path / "user.conf"
    conf.write_text("kafka.bootstrap.servers=%s\nzookeeper.connect=%s\n" % (bs, zk))
    out = tmp_path / "d"
    r = kwal("compare", "-c", str(conf), "--sink", "postgresql", "--modes",
             "classic,receive,direct", "--schedule", "window@3,kill@1", "-n", "3000", "-r", "3000",
             "-o", str(out), "-q", timeout=900)
    expect(0, "kwal compare --sink postgresql", r)
    assert "Sinks: postgresql (every mode)" in r.stdout, r.stdout
    t = rows(out / "compare.csv")
    text = (out / "compare.csv").read_text()
    for m in ("classic", "receive", "direct"):
        assert t[m]["produced"] == "3000" and t[m]["stored"] == "3000", text
        assert t[m]["missing"] == "0" and t[m]["dup_stored"] == "0", text
        assert float(t[m]["latency_p50_ms"]) >= 0, text


# --- e. --sink kafka: every mode into an output topic of its own -----------------

@pytest.mark.skipif(KAFKA != "real", reason="the Kafka sink needs transactions: real Kafka")
def test_kafka_sink(kwal, tmp_path, user_cluster):
    """--sink kafka: every mode writes into an output topic of its own, which
    kwal compare creates on the user's cluster (TopicCommand: kwal does not
    create it); kwal-verify --kafka reads each back: nothing lost, nothing
    stored twice (classic: the writer group's offsets; direct: its ranges in
    the transaction). The latency is kwal's own statistics: "-" for a mode
    none of whose runs wrote statistics after storing (a crash within the
    second), else ordered. Two modes, not three, to stay near a minute."""
    bs, zk = user_cluster
    conf = tmp_path / "user.conf"
    conf.write_text("kafka.bootstrap.servers=%s\nzookeeper.connect=%s\n" % (bs, zk))
    out = tmp_path / "e"
    r = kwal("compare", "-c", str(conf), "--sink", "kafka", "--modes", "classic,direct",
             "--schedule", "window@3,kill@1", "-n", "3000", "-r", "3000", "-o", str(out), "-q",
             timeout=900)
    expect(0, "kwal compare --sink kafka", r)
    assert "Sinks: kafka (every mode, an output topic of its own: classic kafka:kwal-compare-" \
        "classic-" in r.stdout, r.stdout
    assert "latency is kwal's own" in r.stdout, r.stdout
    t = rows(out / "compare.csv")
    text = (out / "compare.csv").read_text()
    for m in ("classic", "direct"):
        assert t[m]["produced"] == "3000" and t[m]["stored"] == "3000", text
        assert t[m]["missing"] == "0" and t[m]["dup_stored"] == "0", text
        p50, p99 = t[m]["latency_p50_ms"], t[m]["latency_p99_ms"]
        assert (p50, p99) == ("-", "-") or 0 <= float(p50) <= float(p99), text


def test_kafka_sink_refused_on_mock(kwal):
    r = kwal("compare", "--sink", "kafka", "--kafka", "mock")
    expect(2, "kwal compare --sink kafka --kafka mock", r)
    assert "--sink kafka needs a real Kafka cluster" in r.stderr, r.stderr
