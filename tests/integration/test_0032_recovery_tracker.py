"""0032 -- start-up recovery when the block tracker is lost or unreadable, and
`kwal recover` on its own (recovery/recovery.h, step 2; DESIGN.md
invariants 1-3), on the shared 3-node Apache Kafka cluster.

Every trial (crashlib.Trial): 6,000 keyed records of 100 B over 4 partitions
are produced up front, `kwal receive` (2 receivers, 2-replica WAL, sqlite
sink) takes part of them and dies, something is done to the tracker, then
kwal runs again until every record is stored and must end with kwal-verify:
stored = produced, 0 missing, 0 duplicates, and every partition's ZooKeeper
offset at its end offset.

a  tracker deleted: kwal receive, slowed by receiver.max.rate, gets SIGKILL
   once a third is stored (some blocks delivered, some only durable);
   tracker.db and its -wal/-shm files are deleted. The restart must rebuild
   the tracker from the WAL: it replays every block the WAL holds (as `kwal
   wal ls` counted them; blocks the sink had are delivered again, never
   stored twice) and a tracker database exists again.
b  tracker replaced by garbage: kwal dies at pipeline.committed:20 with a
   60 s batch interval, no early first batch (20 blocks durable and in ZooKeeper, none delivered);
   tracker.db is overwritten with 24 KiB of random bytes (its -wal and -shm
   files left as the crash left them). Recovery must move it aside to
   tracker.db.unreadable-<ms> as it was (bytes unchanged, its -wal and -shm
   files moved with it as ...-<ms>-wal/-shm), rebuild it and replay every
   block of the WAL. The moved-aside checks are collected and reported
   together at the end of the item, so one does not hide the next.
c  `kwal recover` alone: kwal dies at pipeline.wal-acked:20 with a 60 s batch
   interval (20 blocks in the WAL, the 20th neither tracked nor in
   ZooKeeper; nothing in the sink). `kwal recover` must replay exactly what
   the WAL holds into the sink and move ZooKeeper forward to it, consuming
   nothing: stored = the records of the WAL's blocks, each partition's stored
   offsets are exactly 0..ZooKeeper offset - 1, no instance left registered.
   A second `kwal recover` replays nothing and changes nothing. Then kwal
   receive finishes the workload.

Numbers come from --stats-json (kwal recover writes it too), kwal-verify,
`kwal wal ls`, ZooKeeper, the sink and the file system; never from kwal's log.
"""
import os
import re
import sqlite3

from crashlib import NREC, Trial, wait_until, wal_ls, zk_fast  # noqa: F401 (fixture)
from kwalh import workload


def tracker_files(w0):
    return sorted(f for f in os.listdir(w0) if f.startswith("tracker.db"))


def test_tracker_deleted(bins, zk_fast, kafka3, tmp_path, names, kwal_factory):
    t = Trial(bins, zk_fast, kafka3, kwal_factory, names, str(tmp_path / "t"))
    t.produce()
    k = t.kwal(receiver_max_rate=400).start()
    wait_until(lambda: t.stored() >= NREC // 3, 180, "a third stored", k.alive)
    k.kill()
    s1 = t.stored()
    assert s1 < NREC, "every record was stored before SIGKILL; slow kwal down"
    w0 = t.wal_dirs[0]
    assert os.path.exists(os.path.join(w0, "tracker.db")), tracker_files(w0)
    for f in tracker_files(w0):
        os.unlink(os.path.join(w0, f))
    wal = wal_ls(bins, t.wal_dirs)
    assert wal["records"] > 0, "the WAL holds no block to rebuild the tracker from"

    k = t.finish()
    s = k.stats()
    assert os.path.exists(os.path.join(w0, "tracker.db")), "no tracker after the restart"
    # a fresh tracker knows no block as acknowledged: every block of the WAL
    # is registered and replayed (an intact one replays only unacknowledged ones)
    assert s["blocks_replayed"] == wal["records"], \
        f"{wal['records']} blocks in the WAL, {s['blocks_replayed']} replayed"
    assert s["recovery_ms"] >= 0 and s["records_replayed"] > 0, s


def test_tracker_garbage(bins, zk_fast, kafka3, tmp_path, names, kwal_factory):
    t = Trial(bins, zk_fast, kafka3, kwal_factory, names, str(tmp_path / "t"))
    t.produce()
    t.crash_run("pipeline.committed:20", batch_interval_ms=60000, batch_first_early="false")
    assert t.stored() == 0, "records were delivered within the 60 s batch interval"
    w0 = t.wal_dirs[0]
    tracker = os.path.join(w0, "tracker.db")
    assert os.path.exists(tracker), tracker_files(w0)
    garbage = os.urandom(24 * 1024)
    with open(tracker, "wb") as f:
        f.write(garbage)
    before = {sfx: open(tracker + sfx, "rb").read()
              for sfx in ("-wal", "-shm") if os.path.exists(tracker + sfx)}
    wal = wal_ls(bins, t.wal_dirs)
    assert wal["records"] >= 20, wal["text"]

    k = t.finish()
    s = k.stats()
    problems = []
    moved = [f for f in os.listdir(w0) if re.fullmatch(r"tracker\.db\.unreadable-\d+", f)]
    assert len(moved) == 1, f"expected one tracker.db.unreadable-<ms>: {tracker_files(w0)}"
    with open(os.path.join(w0, moved[0]), "rb") as f:
        kept = f.read()
    if kept != garbage:
        first = next((i for i, (x, y) in enumerate(zip(kept, garbage)) if x != y),
                     min(len(kept), len(garbage)))
        problems.append(f"{moved[0]} does not hold the bytes that were in tracker.db "
                        f"({len(garbage)} random bytes; now {len(kept)}, first "
                        f"difference at byte {first})")
    for sfx, data in before.items():
        p = os.path.join(w0, moved[0] + sfx)
        if not os.path.exists(p):
            problems.append(f"tracker.db{sfx} was there before recovery, but there is "
                            f"no {moved[0]}{sfx}")
        elif open(p, "rb").read() != data:
            problems.append(f"{moved[0]}{sfx} differs from the tracker.db{sfx} of the crash")
    if s["blocks_replayed"] != wal["records"]:
        problems.append(f"{wal['records']} blocks in the WAL, {s['blocks_replayed']} replayed "
                        f"by the rebuilt tracker")
    assert not problems, "\n".join(problems)


def test_recover_alone(bins, zk_fast, kafka3, tmp_path, names, kwal_factory):
    t = Trial(bins, zk_fast, kafka3, kwal_factory, names, str(tmp_path / "t"))
    t.produce()
    t.crash_run("pipeline.wal-acked:20", batch_interval_ms=60000, batch_first_early="false")
    assert t.stored() == 0, "records were delivered within the 60 s batch interval"
    wal = wal_ls(bins, t.wal_dirs)
    # 20 blocks, or 21: the other receiver's pipeline may have appended its
    # block at the same moment (they share the WAL's writes)
    assert 20 <= wal["records"] <= 21, wal["text"]
    z0 = sum(v or 0 for v in t.zk_offsets().values())

    r1 = t.kwal(args=("recover",)).start()
    assert r1.wait(180) == 0, f"kwal recover: exit {r1.rc} ({r1.log_tail(3)})"
    s = r1.stats()
    assert s["final"] is True and s["mode"] == "recover", s
    assert s["blocks_replayed"] == wal["records"], \
        f"kwal recover replayed {s['blocks_replayed']} of the WAL's {wal['records']} blocks"
    s2 = t.stored()
    assert 0 < s2 < NREC, f"{s2} stored after kwal recover"
    assert s["records_replayed"] == s2 and s["records_stored"] == s2, (s2, s)
    v = t.verify()
    assert (v["expected"], v["stored"], v["missing"], v["duplicates"], v["duplicate_offsets"],
            v["corrupt"]) == (NREC, s2, NREC - s2, 0, 0, 0), v.summary
    # ZooKeeper = what the WAL holds, and the sink holds exactly offsets
    # 0..zk-1 of every partition: nothing was consumed beyond the WAL
    t.check_offsets(s2)
    ends = workload.sqlite_end_offsets(t.db, t.topic, t.partitions)
    counts = per_partition_counts(t.db, t.topic, t.partitions)
    assert counts == ends, f"rows per partition {counts} != end offsets {ends}: a gap"
    assert z0 < s2, f"ZooKeeper summed to {z0} before kwal recover, {s2} after: not behind"
    ids = zk_fast.children(f"/consumers/{t.group}/ids")
    assert ids == [], f"instances still registered after kwal recover: {ids}"

    r2 = t.kwal(args=("recover",)).start()
    assert r2.wait(180) == 0, f"kwal recover again: exit {r2.rc} ({r2.log_tail(3)})"
    s = r2.stats()
    assert s["blocks_replayed"] == 0 and s["records_replayed"] == 0, s
    assert t.stored() == s2, "the second kwal recover changed the sink"
    assert sum(v or 0 for v in t.zk_offsets().values()) == s2, \
        "the second kwal recover changed ZooKeeper"

    t.finish()


def per_partition_counts(db, topic, partitions):
    """{partition: rows of topic in the sink}."""
    c = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {p: c.execute("SELECT COUNT(*) FROM records WHERE topic=? AND partition=?",
                             (topic, p)).fetchone()[0] for p in range(partitions)}
    finally:
        c.close()
