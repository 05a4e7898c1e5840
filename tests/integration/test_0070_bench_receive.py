"""0070 -- tools/bench/bench-receive (receiver mode next to kcat) as a user runs
it, with tiny numbers: the harness's correctness, never its timings.

  a. Bad arguments: exit 2 with a one-line reason (and "Try ..."), nothing
     started.
  b. 5,000 records over 4 partitions, one kcat/kwal pair, on a ZooKeeper and
     a 1-node Kafka cluster of its own (real unless $KWAL_TEST_KAFKA=mock):
     exit 0; the last line is the summary, every key=value of it parses, it
     says what was asked (records, size, partitions, receivers, repeat,
     pairs=1), status=ok, and both rates are > 0; --csv has one kcat and one
     kwal row, both verified (ok=1, exit 0), with wall time, CPU seconds and
     a peak RSS; the work directory is gone (no --keep).

Run: KWAL_BIN_DIR=<build>/tools python3 -m pytest -q tests/integration/test_0070_bench_receive.py
"""
import csv
import os

import pytest

import kwtest
from kwalh import services

KAFKA = services.resolve_kafka_kind(os.environ.get("KWAL_TEST_KAFKA", "auto"))


@pytest.fixture
def bench(repo, bins):
    """bench(*args, timeout=600): run tools/bench/bench-receive with this
    build's programs (conftest's bins)."""
    def run(*args, timeout=600):
        return kwtest.run_runner(repo, bins, "bench/bench-receive", *args, timeout=timeout)
    return run


def expect(want, desc, r):
    assert r.returncode == want, "%s: expected exit %d, got %d\n--- stdout:\n%s\n--- stderr:\n%s" % (
        desc, want, r.returncode, r.stdout[-4000:], r.stderr[-4000:])


def summary(stdout):
    """{key: value} of the last line, which must be the summary line."""
    lines = stdout.strip().splitlines()
    assert lines, "no output"
    last = lines[-1]
    assert last.startswith("bench_receive: "), "last line is not the summary: %r" % last
    words = last[len("bench_receive: "):].split()
    res = {}
    for w in words:
        assert "=" in w, "summary word without '=': %r in %r" % (w, last)
        k, v = w.split("=", 1)
        res[k] = v
    return res


# --- a. bad arguments ------------------------------------------------------------

@pytest.mark.parametrize("args,reason", [
    (["--size", "68"], "--size must be at least 69"),
    (["--records", "0"], "--records must be a positive integer"),
    (["-X", "block.interval.ms"], "-X needs key=value"),
    (["--rdkafka", "queued.min.messages"], "--rdkafka needs key=value"),
    (["--brokers", "2"], "invalid choice"),
    (["--nope"], "unrecognized arguments"),
])
def test_bad_arguments(bench, args, reason):
    r = bench(*args, timeout=60)
    expect(2, "bench-receive " + " ".join(args), r)
    assert reason in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) <= 2, r.stderr      # reason + "Try ..."
    assert r.stdout == "", r.stdout


# --- b. one small pair -----------------------------------------------------------

def test_small_pair(bench, tmp_path):
    out = tmp_path / "bench.csv"
    r = bench("--records", "5000", "--partitions", "4", "--repeat", "1", "--kafka", KAFKA,
              "--dir", str(tmp_path), "--csv", str(out), "--timeout", "180")
    expect(0, "bench-receive -n 5000 -p 4 -k 1", r)
    s = summary(r.stdout)
    want = {"records": "5000", "size": "100", "partitions": "4", "receivers": "1",
            "repeat": "1", "pairs": "1", "status": "ok"}
    for k, v in want.items():
        assert s.get(k) == v, "summary %s=%s, expected %s: %s" % (k, s.get(k), v, s)
    for k in ("kcat_rps", "kwal_rps", "kcat_mbs", "kwal_mbs", "ratio", "ratio_after_assign"):
        assert k in s, "no %s in the summary: %s" % (k, s)
        float(s[k])                              # parses
    assert float(s["kcat_rps"]) > 0 and float(s["kwal_rps"]) > 0, s
    assert float(s["ratio"]) > 0, s

    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert sorted(row["side"] for row in rows) == ["kcat", "kwal"], rows
    for row in rows:
        assert row["ok"] == "1" and row["exit"] == "0" and row["run"] == "1", row
        assert float(row["wall_s"]) > 0 and float(row["records_per_s"]) > 0, row
        assert float(row["cpu_s"]) >= 0 and float(row["cpu_user_s"]) >= 0 \
            and float(row["cpu_sys_s"]) >= 0, row
        assert int(row["max_rss_kib"]) > 0, row
    assert not list(tmp_path.glob("kwal-bench-receive.*")), "the work directory is still there"
