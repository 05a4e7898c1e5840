"""0070 -- `kwal bench` (kwal next to kcat and Spark Streaming) as a user
runs it, in short form: the harness's correctness, never its timings.

  a. Bad arguments: exit 2 with a one-line reason (and "Try ..."), nothing
     started.
  b. Every contender (kcat, Spark's direct stream, the five kwal modes) on
     every workload (100b, 1k, rate) at --scale 0.002 (4,000 x 100 B,
     1,000 x 1 KiB, 6,000 at 50,000/s), one run each, on a ZooKeeper and a
     1-node Kafka cluster of its own: exit 0; the summary says 21 runs, 21
     verified, status=ok; bench.csv has one verified row per contender and
     workload with its times, CPU, peak RSS and records/s, and on the rate
     workload ordered latency quantiles; bench.md has every contender's row
     in every table and the targets; bench.png is a PNG.
  c. -c FILE: the user's cluster (the shared test cluster): no cluster
     started, topics made there, the runs verified.
  d. A kwal contender that cannot run (a setting kwal refuses): the run is
     not verified, the summary says status=failed, exit 1, and its CSV row
     says why; kcat's run beside it still verified.
  e. --sink kafka on a 1-node cluster of the test's (-c FILE): receive and
     direct each write into an output topic of their own, made with Kafka's
     TopicCommand (32 partitions, as the source) and kept (--keep); both runs
     verified, and kwal-verify --kafka finds every record of the workload in
     each, once and in order.

Run: KWAL_BIN_DIR=<build>/tools python3 -m pytest -q tests/integration/test_0070_bench.py
"""
import csv
import json

import pytest

import kwtest
from kwalh import workload

CONTENDERS = ["kcat", "spark", "receive", "receive-3", "receive-no-wal", "direct", "direct-alo"]
WORKLOADS = ["100b", "1k", "rate"]


@pytest.fixture
def bench(repo, bins):
    """bench(*args, timeout=900): tools/bench/bench (what `kwal bench` runs)
    with this build's programs (conftest's bins)."""
    def run(*args, timeout=900):
        return kwtest.run_runner(repo, bins, "bench/bench", *args, timeout=timeout)
    return run


def expect(want, desc, r):
    assert r.returncode == want, "%s: expected exit %d, got %d\n--- stdout:\n%s\n--- stderr:\n%s" % (
        desc, want, r.returncode, r.stdout[-4000:], r.stderr[-4000:])


def summary(stdout):
    """{key: value} of the last line, which must be the summary line."""
    lines = stdout.strip().splitlines()
    assert lines, "no output"
    last = lines[-1]
    assert last.startswith("bench: "), "last line is not the summary: %r" % last
    res = {}
    for w in last[len("bench: "):].split():
        assert "=" in w, "summary word without '=': %r in %r" % (w, last)
        k, v = w.split("=", 1)
        res[k] = v
    return res


def rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


# --- a. bad arguments ------------------------------------------------------------

@pytest.mark.parametrize("args,reason", [
    (["--contenders", "kcat,flink"], "--contenders: unknown 'flink'"),
    (["--workloads", "10b"], "--workloads: unknown '10b'"),
    (["--scale", "0"], "--scale must be a positive number"),
    (["--repeat", "0"], "--repeat must be a positive integer"),
    (["--spark-heap", "lots"], "--spark-heap must be a JVM size"),
    (["-X", "block.interval.ms"], "-X needs key=value"),
    (["--brokers", "2"], "invalid choice"),
    (["--nope"], "unrecognized arguments"),
])
def test_bad_arguments(bench, args, reason):
    r = bench(*args, timeout=60)
    expect(2, "kwal bench " + " ".join(args), r)
    assert reason in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) <= 2, r.stderr      # reason + "Try ..."
    assert r.stdout == "", r.stdout


def test_missing_conf_file(bench, tmp_path):
    r = bench("-c", str(tmp_path / "none.conf"), "--contenders", "kcat", "-o",
              str(tmp_path / "out"), timeout=60)
    expect(2, "kwal bench -c <missing>", r)
    assert "cannot read it" in r.stderr, r.stderr


# --- b. everything, short ----------------------------------------------------------

def test_short_form(bench, tmp_path):
    out = tmp_path / "report"
    r = bench("--scale", "0.002", "-k", "1", "-o", str(out), "--timeout", "300", timeout=1500)
    expect(0, "kwal bench --scale 0.002 -k 1", r)
    s = summary(r.stdout)
    assert s["status"] == "ok", s
    assert s["runs"] == str(len(CONTENDERS) * len(WORKLOADS)), s
    assert s["verified"] == s["runs"], s
    assert s["contenders"] == ",".join(CONTENDERS) and s["workloads"] == ",".join(WORKLOADS), s
    for w in WORKLOADS:
        for c in CONTENDERS:
            assert float(s["%s_%s_rps" % (w, c)]) > 0, (w, c, s)

    got = rows(out / "bench.csv")
    assert sorted((x["workload"], x["contender"]) for x in got) == \
        sorted((w, c) for w in WORKLOADS for c in CONTENDERS), got
    want_records = {"100b": 4000, "1k": 1000, "rate": 6000}
    for x in got:
        where = "%s/%s: %s" % (x["workload"], x["contender"], x)
        assert x["ok"] == "1" and x["problems"] == "", where
        assert int(x["records"]) == want_records[x["workload"]], where
        assert float(x["wall_s"]) >= float(x["steady_s"]) > 0, where
        assert float(x["startup_s"]) >= 0 and float(x["records_per_s"]) > 0, where
        assert float(x["cpu_user_s"]) + float(x["cpu_sys_s"]) > 0, where
        assert int(x["max_rss_kib"]) > 1024, where
        assert int(x["write_bytes"]) >= 0, where
        if x["contender"].startswith(("receive", "direct")):
            # kwal stores every record in sqlite (its default sink): it writes
            assert int(x["write_bytes"]) > 0, where
        if x["workload"] == "rate":
            p50, p99, mx = (float(x[k]) for k in ("latency_p50_ms", "latency_p99_ms",
                                                  "latency_max_ms"))
            assert 0 <= p50 <= p99 <= mx, where
        else:
            assert x["latency_p50_ms"] == "", where

    md = (out / "bench.md").read_text()
    for w in WORKLOADS:
        assert "### %s:" % w in md, md
    for c in CONTENDERS:
        assert md.count("| %s | 1 |" % c) == len(WORKLOADS), (c, md)
    assert "### Targets" in md and "| 100b direct >= 0.9x kcat records/s |" in md, md
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / "kafka").exists() and not (out / "zk").exists()


# --- c. a cluster of the user's (-c FILE) ---------------------------------------------

def test_user_cluster(bench, tmp_path, zk, kafka3):
    """-c FILE: no cluster started; the topics are made on the user's (the
    shared 3-node test cluster) with Kafka's own TopicCommand, 32 partitions
    each, and the runs are verified there."""
    conf = tmp_path / "user.conf"
    conf.write_text("kafka.bootstrap.servers=%s\nzookeeper.connect=%s\n"
                    % (kafka3.bootstrap, zk.connect))
    out = tmp_path / "report"
    r = bench("-c", str(conf), "--contenders", "kcat,direct", "--workloads", "100b,rate",
              "--scale", "0.002", "-k", "1", "-o", str(out), "--timeout", "180", timeout=900)
    expect(0, "kwal bench -c FILE", r)
    assert "cluster: Kafka %s, ZooKeeper %s" % (kafka3.bootstrap, zk.connect) in r.stdout, r.stdout
    s = summary(r.stdout)
    assert s["status"] == "ok" and s["runs"] == "4" and s["verified"] == "4", s
    plan = json.loads((out / "plan.json").read_text())
    topic = next(w["topic"] for w in plan["workloads"] if w["name"] == "100b")
    assert len(kafka3.wait_topic(topic, 32, timeout=30)) == 32
    assert not (out / "kafka").exists() and not (out / "zk").exists()


# --- d. a contender that fails ------------------------------------------------------

def test_failed_run_is_reported(bench, tmp_path):
    out = tmp_path / "report"
    r = bench("--contenders", "kcat,receive", "--workloads", "100b", "--scale", "0.002", "-k", "1",
              "-X", "wal.write.quorum=2", "-o", str(out), "--timeout", "120", timeout=600)
    expect(1, "kwal bench with a refused setting", r)
    s = summary(r.stdout)
    assert s["status"] == "failed" and s["runs"] == "2" and s["verified"] == "1", s
    by = {x["contender"]: x for x in rows(out / "bench.csv")}
    assert by["kcat"]["ok"] == "1", by
    assert by["receive"]["ok"] == "0" and by["receive"]["problems"], by
    assert "| receive | 0 |" in (out / "bench.md").read_text()


# --- e. --sink kafka ---------------------------------------------------------------

def test_sink_kafka(bench, tmp_path, zk, kafka_factory, bins):
    kc = kafka_factory(nodes=1)
    conf = tmp_path / "user.conf"
    conf.write_text("kafka.bootstrap.servers=%s\nzookeeper.connect=%s\n"
                    % (kc.bootstrap, zk.connect))
    out = tmp_path / "report"
    r = bench("-c", str(conf), "--contenders", "receive,direct", "--workloads", "100b",
              "--scale", "0.002", "-k", "1", "--sink", "kafka", "--keep", "-o", str(out),
              "--timeout", "120", timeout=600)
    expect(0, "kwal bench --sink kafka", r)
    s = summary(r.stdout)
    assert s["status"] == "ok" and s["runs"] == "2" and s["verified"] == "2", s
    assert "kwal sink kafka (direct: kafka)" in (out / "bench.md").read_text()
    plan = json.loads((out / "plan.json").read_text())
    steps = {st["contender"]: st for st in plan["steps"]}
    assert set(steps) == {"receive", "direct"}, steps
    for c, st in steps.items():
        assert st["out_topic"] == st["group"] + "-out", st
        assert len(kc.wait_topic(st["out_topic"], 32, timeout=30)) == 32
        v = workload.verify(bins, manifest=str(out / "runs" / ("produce-%s.manifest"
                                                                % st["topic"])),
                            kafka="%s/%s" % (kc.bootstrap, st["out_topic"]))
        assert v.rc == 0 and v["stored"] == 4000 and v["out_of_order"] == 0, (c, v.as_dict())
