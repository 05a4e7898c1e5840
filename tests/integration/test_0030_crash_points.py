"""0030 -- the crash-point matrix of `kwal receive` (DESIGN.md "Crash points
and fault injection", invariants 1-3) on the shared 3-node Apache Kafka
cluster: one pytest item per (crash point, pass).

Every crash point that `kwal --list-crash-points` prints for receive is tried
at its 1st and at its 3rd pass, each trial on a fresh 4-partition topic and
group (crashlib.Trial):

1. 6,000 keyed records of 100 B are produced up front (kwal-loadgen);
2. `kwal receive` runs with KWAL_CRASH_AT=<point>:<pass> and must die there
   (exit 99). If every record is stored and it still runs, it gets SIGTERM
   (the way out passes receiver.revoke); any other ending fails the case: a
   point the trial cannot reach proves nothing;
3. `kwal receive` runs again (recovery first) until every record is stored,
   then SIGTERM must stop it with exit 0;
4. kwal-verify: stored = produced, 0 missing, 0 duplicates (invariants 1-3);
   every partition's ZooKeeper offset is its end offset in the sink; the
   last run's statistics say recovery ran (not classic); `kwal wal verify`
   finds nothing wrong with the stopped WAL.

recovery.replay needs a backlog: its trial first dies at
pipeline.committed:30 with a 60 s batch interval, no early first batch (30 blocks durable, none in
a batch; recovery replays at most 8 blocks per batch), then at
recovery.replay:<pass> inside the next recovery, and a third run finishes
after replaying the rest (blocks_replayed > 0).

One more item runs `--classic` (Spark 1.2: recovery replays, ZooKeeper is not
repaired) dying at pipeline.tracked:1: nothing is missing, the records of the
window "in the WAL, not in ZooKeeper" are consumed again, and the sink counts
them as duplicate deliveries (stored once).

Numbers come from --stats-json, kwal-verify, ZooKeeper and the sink, never
from kwal's log. The WAL has two replicas and small blocks and segments, so
segment rolls and cleanups happen; sessions are short (ZooKeeper 2 s on a
500 ms tick, Kafka 3 s).

Run: KWAL_BIN_DIR=<build>/tools python3 -m pytest -q tests/integration/test_0030_crash_points.py
(-k 'wal.cleanup' for one point).
"""
import pytest

from crashlib import Trial, zk_fast  # noqa: F401 -- zk_fast is a fixture
from kwalh import proc
from kwalh.kwal import wal_verify


def _receive_points():
    try:
        return proc.Bins(proc.bin_dir()).crash_points("receive")
    except (OSError, proc.subprocess.SubprocessError):
        return []


POINTS = _receive_points()
CASES = [pytest.param(p, n, id=f"{p}:{n}") for p in POINTS for n in (1, 3)] or \
    [pytest.param("", 0, id="no-points")]


def test_crash_points_are_listed():
    assert len(POINTS) >= 10, f"kwal --list-crash-points printed {POINTS}"
    assert "receiver.polled" in POINTS and "recovery.replay" in POINTS, POINTS


@pytest.mark.parametrize("point,nth", CASES)
def test_crash_point(point, nth, bins, zk_fast, kafka3, tmp_path, names, kwal_factory):
    assert point, "kwal --list-crash-points printed no crash points"
    t = Trial(bins, zk_fast, kafka3, kwal_factory, names, str(tmp_path / "t"))
    t.produce()
    if point == "recovery.replay":
        t.crash_run("pipeline.committed:30", batch_interval_ms=60000, batch_first_early="false")
        assert t.stored() == 0, "a batch was delivered within the 60 s batch interval"
        t.crash_run(f"recovery.replay:{nth}")
    else:
        t.crash_run(f"{point}:{nth}")
    k = t.finish()
    s = k.stats()
    assert s["recovery_ms"] >= 0 and s["recovery_classic"] == 0, s
    assert s["source_loss_records"] == 0, s
    if point == "recovery.replay":
        assert s["blocks_replayed"] > 0, "the last run replayed nothing of the backlog"
    rc, out = wal_verify(bins, k.conf)
    assert rc == 0, "kwal wal verify after the trial:\n" + "\n".join(out[-20:])


def test_classic_after_pipeline_tracked(bins, zk_fast, kafka3, tmp_path, names,
                                        kwal_factory):
    t = Trial(bins, zk_fast, kafka3, kwal_factory, names, str(tmp_path / "t"))
    t.produce()
    t.crash_run("pipeline.tracked:1", xargs=["--classic"])
    k = t.finish(xargs=["--classic"])
    s = k.stats()
    assert s["recovery_classic"] == 1, "recovery did not run in classic mode"
    assert s["duplicate_deliveries"] > 0, ("--classic after pipeline.tracked: expected the "
                                           "re-consumed records as duplicate deliveries")
