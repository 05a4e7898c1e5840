"""0072 -- tools/bench/bench-scale (kwal at many partitions: ownership and
balance over several instances, a rolling restart and a SIGKILL, ZooKeeper
writes per second from the server's counters, memory per partition) as a
user runs it, with tiny numbers: the runner's correctness, never its
figures.

  a. Bad arguments: exit 2 with a one-line reason and "Try ...".
  b. Both modes, 2 instances, at 4 and at 12 partitions, on a ZooKeeper and
     a 1-node Kafka cluster of its own, 1,000 records before the start and
     300 records/s: exit 0; one summary line per cell whose every key=value
     parses, each with status=ok, a balance within one of P/2, a positive
     Zxid delta, ZooKeeper and kwal writes per second, records per second
     stored and produced, RSS in the window and peak, CPU, nothing missing or
     stored twice; one per-partition line per mode (numbers of KiB, a
     positive ratio of writes); scale.csv has the four cells, every check
     passed and ZooKeeper at the end offsets; scale.md has the table;
     scale.json the settles of every cell (start, two restarts, one kill).
"""
import csv
import json

import pytest

import kwtest


@pytest.fixture
def bench(repo, bins):
    def run(*args, timeout=900):
        return kwtest.run_runner(repo, bins, "bench/bench-scale", *args, timeout=timeout)
    return run


def both(r):
    return "exit %d\n--- stdout:\n%s\n--- stderr:\n%s" % (r.returncode, r.stdout[-4000:],
                                                        r.stderr[-4000:])


@pytest.mark.parametrize("args,why", [
    (["--modes", "sideways"], "--modes: 'sideways'"),
    (["--partitions", "0"], "--partitions: at least 1"),
    (["--compare", "12", "--partitions", "12"], "--compare: fewer than --partitions (12)"),
    (["--rate", "0"], "--rate and --records are both 0"),
    (["-X", "nokey"], "-X nokey: expected KEY=VALUE"),
    (["--window", "0"], "--window: out of range"),
])
def test_bad_arguments(bench, args, why):
    r = bench(*args, timeout=60)
    assert r.returncode == 2, both(r)
    assert why in r.stderr and "Try 'bench-scale --help'" in r.stderr, both(r)
    assert r.stdout == "", both(r)


def test_tiny_scale(bench, tmp_path):
    out = tmp_path / "out"
    r = bench("--partitions", "12", "--compare", "4", "--instances", "2", "--records", "1000",
              "--rate", "300", "--window", "3", "--warmup", "0", "--stable", "2",
              "--seed", "1", "-o", str(out), "-q")
    assert r.returncode == 0, both(r)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("bench_scale: ")]
    assert len(lines) == 4, both(r)
    cells = set()
    for ln in lines:
        kv = dict(w.split("=", 1) for w in ln[len("bench_scale: "):].split())
        p = int(kv["partitions"])
        cells.add((kv["mode"], p))
        assert kv["status"] == "ok" and kv["instances"] == "2", ln
        counts = [int(c) for c in kv["balance"].split("/")]
        assert sum(counts) == p and max(counts) - min(counts) <= 1, ln
        assert int(kv["zxid_delta"]) > 0 and float(kv["window_s"]) >= 3, ln
        for k in ("zk_writes_per_s", "mntr_writes_per_s", "kwal_zk_writes_per_s",
                  "records_per_s", "produced_per_s", "rss_window_mib", "peak_rss_mib_mean",
                  "cpu_total_s"):
            assert float(kv[k]) > 0, (k, ln)
        assert kv["missing"] == "0" and kv["dups"] == "0", ln
    assert cells == {(m, p) for m in ("receive", "direct") for p in (4, 12)}, lines
    pp = [ln for ln in r.stdout.splitlines() if ln.startswith("bench_scale_per_partition: ")]
    assert len(pp) == 2, both(r)
    for ln in pp:
        kv = dict(w.split("=", 1) for w in ln.split()[1:])
        assert kv["partitions"] == "4,12", ln
        # numbers, of either sign at this size
        float(kv["rss_kib_per_partition"]), float(kv["peak_rss_kib_per_partition"])
        assert float(kv["zk_writes_per_s_ratio"]) > 0, ln
    with open(out / "scale.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted((row["mode"], int(row["partitions"])) for row in rows) == sorted(cells), rows
    for row in rows:
        assert row["ok"] == "1" and row["zk_at_end"] == "1", row
        assert int(row["produced"]) == int(row["stored"]) >= 1000, row
        assert float(row["zk_writes_per_s"]) > 0 and float(row["mntr_writes_per_s"]) > 0, row
    assert "| receive | 12 |" in (out / "scale.md").read_text()
    rep = json.loads((out / "scale.json").read_text())
    for name, settles in rep["settles"].items():
        assert [s["phase"] for s in settles] == ["start", "restart i1", "restart i2",
                                                 "kill i2"], (name, settles)
        assert all(s["ok"] for s in settles), (name, settles)
