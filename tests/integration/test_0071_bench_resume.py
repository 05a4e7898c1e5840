"""0071 -- tools/bench/bench-resume (time from a SIGKILL and restart to the
first record stored) as a user runs it, with tiny numbers: the harness's
correctness, never its timings.

  a. Bad arguments: exit 2 with a one-line reason and "Try ...".
  b. Direct mode, one kill and one quick kill, on a ZooKeeper and a 1-node
     Kafka cluster of its own, this build as both baseline and candidate:
     exit 0; one summary line per schedule whose every key=value parses, each
     with kills=1, resumed=1 for the candidate (a resumed ZooKeeper session;
     the baseline is the same build, so resumed=1 too), a first-stored time,
     missing=0 and dups=0; a ratio line; resume.csv has one row per restart
     with the statistics' figures; resume.md has the table.
"""
import csv
import os

import pytest

import kwtest


@pytest.fixture
def bench(repo, bins):
    def run(*args, timeout=600):
        return kwtest.run_runner(repo, bins, "bench/bench-resume", *args, timeout=timeout)
    return run


def both(r):
    return "exit %d\n--- stdout:\n%s\n--- stderr:\n%s" % (r.returncode, r.stdout[-4000:],
                                                        r.stderr[-4000:])


@pytest.mark.parametrize("args,why", [
    (["--modes", "sideways"], "--modes: 'sideways'"),
    (["--kills", "-1"], "--kills: out of range"),
    (["-X", "nokey"], "-X nokey: expected KEY=VALUE"),
    (["--rate", "fast"], "--rate"),
])
def test_bad_arguments(bench, args, why):
    r = bench(*args, timeout=60)
    assert r.returncode == 2, both(r)
    assert why in r.stderr and "Try 'bench-resume --help'" in r.stderr, both(r)
    assert r.stdout == "", both(r)


def test_one_kill_direct(bench, bins, tmp_path):
    out = tmp_path / "out"
    build = os.path.dirname(bins.dir)
    r = bench("--modes", "direct", "--kills", "1", "--quick-kills", "1", "--brokers", "1",
              "--partitions", "2", "--rate", "500", "--seed", "1", "--baseline", build,
              "--build", build, "--out", str(out), "-q")
    assert r.returncode == 0, both(r)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("bench_resume: ")]
    assert len(lines) == 2, both(r)
    for ln in lines:
        kv = dict(w.split("=", 1) for w in ln[len("bench_resume: "):].split())
        assert kv["kills"] == "1" and kv["resumed"] == "1", ln
        assert kv["missing"] == "0" and kv["dups"] == "0", ln
        assert int(kv["p50_ms"]) >= 0 and int(kv["after_quick_ms"]) >= 0, ln
        assert float(kv["cpu_s"]) > 0, ln
    assert {dict(w.split("=", 1) for w in ln.split()[1:])["schedule"] for ln in lines} == \
        {"direct-baseline", "direct-candidate"}, lines
    assert any(ln.startswith("bench_resume_ratio: mode=direct ") for ln in r.stdout.splitlines())
    with open(out / "resume.csv") as f:
        rows = list(csv.DictReader(f))
    # per schedule: the first run, one kill, the run after the quick kill
    assert sorted(r_["kind"] for r_ in rows) == sorted(["first", "kill", "after-quick"] * 2), rows
    for row in rows:
        assert int(row["first_stored_ms"]) >= 0, row
        if row["kind"] != "first":
            assert row["zk_session_resumed"] == "1", row
    assert "| direct-candidate | 1 | 1 |" in (out / "resume.md").read_text()
