"""0035 -- the chaos runner in CI: tools/chaos runs 20 trials of a fixed seed
against the binaries of this build.

Each trial produces 3,000 keyed records, kills `kwal receive` 1-3 times
(SIGKILL at a random moment or a crash point), maybe injects one fault (a WAL
replica's writes, short writes or fsyncs failing, a slow replica, a slow,
downed, killed or hung Kafka broker, a leader move, a ZooKeeper restart), lets
a last run store everything and stop on SIGTERM (exit 0), then checks: 0
missing, 0 duplicates stored, every partition's ZooKeeper offset at its end
offset, kwal wal verify clean (tools/harness/kwalh/chaos.py). The test fails
when any trial fails; the runner's output names the trial and the command
that re-runs it (tools/chaos --seed 35 --trial K --kafka KIND --keep), and its
logs are kept.

Two trials run side by side (--jobs 2, each slot with its own ZooKeeper and
Kafka cluster: a real 3-node cluster unless $KWAL_TEST_KAFKA=mock).

--sink kafka (sink=kafka:TOPIC, an output topic per trial, read back with a
read_committed consumer): two trials of seed 7 on a real cluster pass with
out_of_order=0 as well; with --kafka mock it is refused (exit 2: the mock
keeps no transactional offsets).

Run: KWAL_BIN_DIR=<build>/tools python3 -m pytest -q tests/integration/test_0035_chaos.py
"""
import glob
import os
import re
import subprocess
import sys

import pytest

from kwalh import services

KAFKA = os.environ.get("KWAL_TEST_KAFKA", "auto")


def failed_trial_tails(stdout):
    """The last lines of each failed trial's last run log (for people)."""
    out = []
    for d in re.findall(r"\(logs: (.*)\)$", stdout, re.M):
        logs = sorted(glob.glob(os.path.join(d, "run*.log")),
                      key=lambda p: int(re.search(r"run(\d+)\.log$", p).group(1)))
        if not logs:
            continue
        with open(logs[-1], errors="replace") as f:
            lines = [ln.rstrip("\n") for ln in f if "ZOO_" not in ln]
        out.append("--- %s (tail, without the ZooKeeper C client's lines):" % logs[-1])
        out += lines[-15:]
    return "\n".join(out)


def test_chaos_seed_35(tmp_path, repo, bins):
    chaos = str(repo / "tools" / "chaos")
    assert os.access(chaos, os.X_OK), "tools/chaos is missing or not executable"
    build = os.path.dirname(bins.dir)       # conftest: $KWAL_BIN_DIR or <repo>/build/tools
    r = subprocess.run([sys.executable, chaos, "--trials", "20", "--seed", "35", "--jobs", "2",
                        "--build", build, "--kafka", KAFKA, "--quiet", "--dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=1800, stdin=subprocess.DEVNULL)
    print(r.stdout)
    print(r.stderr, file=sys.stderr)
    assert r.returncode == 0, "tools/chaos exited %d\n%s\n%s" % (
        r.returncode, r.stdout[-3000:], failed_trial_tails(r.stdout))
    assert re.search(r"^chaos: .* trials=20 passed=20 failed=0 .* missing=0 .* dup_stored=0 .*"
                     r"status=ok", r.stdout, re.M), "no passing total line:\n" + r.stdout[-3000:]
    # the recovery times over every restart: ordered percentiles up to the max
    total = re.search(r"^chaos: .*", r.stdout, re.M).group(0)
    rec = {k: int(v) for k, v in re.findall(r"recovery_ms_(max|p50|p90|p99)=(\d+)", total)}
    assert set(rec) == {"max", "p50", "p90", "p99"}, total
    assert rec["p50"] <= rec["p90"] <= rec["p99"] <= rec["max"], total


# --- --sink kafka ------------------------------------------------------------------

def test_sink_kafka_refused_on_mock(repo):
    r = subprocess.run([sys.executable, str(repo / "tools" / "chaos"), "--sink", "kafka",
                        "--kafka", "mock", "--trials", "1"],
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 2, "exit %d\n%s%s" % (r.returncode, r.stdout, r.stderr)
    assert "--sink kafka needs --kafka real" in r.stderr, r.stderr
    assert r.stdout == "", r.stdout


@pytest.mark.skipif(services.resolve_kafka_kind(KAFKA) != "real",
                    reason="--sink kafka needs the real cluster (KWAL_TEST_KAFKA=mock)")
def test_chaos_sink_kafka(tmp_path, repo, bins):
    """Two trials of seed 7 (kills, a crash point with a backlog, a ZooKeeper
    restart) with every trial's output in a Kafka topic of its own: nothing
    missing, nothing stored twice, nothing out of order (about 70 s)."""
    build = os.path.dirname(bins.dir)
    r = subprocess.run([sys.executable, str(repo / "tools" / "chaos"), "--trials", "2",
                        "--seed", "7", "--sink", "kafka", "--kafka", "real", "--build", build,
                        "--quiet", "--dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    print(r.stdout)
    print(r.stderr, file=sys.stderr)
    assert r.returncode == 0, "tools/chaos --sink kafka exited %d\n%s\n%s" % (
        r.returncode, r.stdout[-3000:], failed_trial_tails(r.stdout))
    trials = re.findall(r"^trial \d+ .*", r.stdout, re.M)
    assert len(trials) == 2 and all("out_of_order=0" in t and "result=PASS" in t
                                    for t in trials), r.stdout
    assert re.search(r"^chaos: .* trials=2 passed=2 failed=0 produced=6000 stored=6000 "
                     r"missing=0 .* dup_stored=0 out_of_order=0 .* sink=kafka .*status=ok",
                     r.stdout, re.M), "no passing total line:\n" + r.stdout[-3000:]
