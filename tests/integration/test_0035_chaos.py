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

Run: KWAL_BIN_DIR=<build>/tools python3 -m pytest -q tests/integration/test_0035_chaos.py
"""
import glob
import os
import re
import subprocess
import sys

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
