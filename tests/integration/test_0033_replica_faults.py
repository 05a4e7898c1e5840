"""0033 -- WAL replica faults under `kwal receive` on the shared 3-node Apache
Kafka cluster: a WAL of 3 replica directories w0 w1 w2 with
wal.write.quorum=2 (wal/wal.h "Failure model", wal/FORMAT.md; DESIGN.md
invariants 1-3 and "Crash points and fault injection"). Faults come from
libfiu, switched on from outside with fiu-ctrl (kwal started with
KWAL_FIU_CTRL), and from flipping bytes of segment files.

a  A replica fails mid-run, while kwal-loadgen produces 8,000 records at
   1,000/s: writes to replica 1 fail with EIO, writes to replica 2 with
   ENOSPC (failinfo=28), fsyncs of replica 0 with EIO (one item each). The
   statistics must show the replica gone (wal_replicas_healthy 2) while
   records still arrive, and kwal goes on with the other two: every record
   stored once, every ZooKeeper offset at its end offset, `kwal wal ls` (kwal
   stopped) shows that replica FAILED with a reason and the other two
   healthy. A fourth item makes replica 1's writes short (half of what was
   asked): the WAL goes on, so no replica may fail and `kwal wal verify`
   must find nothing.
b  One replica corrupted while kwal is stopped: kwal dies at
   pipeline.committed:10 with a 60 s batch interval, 4 KiB segments and one
   receiver (10 blocks durable and in ZooKeeper, none delivered, one segment
   each); one byte in the middle of block 5's payload is flipped in replica
   1. `kwal wal verify` must exit 1 naming replica 1, that segment and
   offset, and no other replica; the restarted kwal reads the good copies:
   every record stored once, ZooKeeper at the end offsets.
c  The same byte of one block flipped in EVERY replica (as b), in two items:
   block 5 (a middle segment) and block 10 (the last record of the newest
   segment, which a torn tail would look like -- but the tracker and
   ZooKeeper know it was acknowledged). kwal receive, then kwal recover,
   must stop with a non-zero exit and, as the last line on stderr, one line
   naming the LSN and the Kafka offset ranges the block holds (from the
   tracker); ZooKeeper must not move, the bad block's segment must stay as
   it was on every replica (nothing of an acknowledged block cut), and the
   sink may only get the blocks below the bad one, once. These checks are
   collected and reported together at the end of the item. Then `kwal
   recover --skip-corrupt` must give the block up (statistics: 1 block and
   its records lost) and kwal receive finish: exactly the block's records
   missing, ZooKeeper past it, the WAL verified clean, and a plain `kwal
   recover` succeeds afterwards.
d  Two replicas out of three fail mid-run (writes to replicas 1 and 2, EIO):
   below the write quorum. kwal must pause (quorum_pauses counted, the WAL
   released: wal_replicas_healthy below 2) and keep running; for 5 s the ZooKeeper offsets must not move
   and never pass what is durable (the tracker's highest until offset per
   partition: a block is tracked only once the WAL acknowledged it). The
   WAL must be released (`kwal wal ls` reads it: 1 of 3 healthy, below
   quorum). The failure points are switched off and `kwal wal repair`
   rebuilds replicas 1 and 2 while kwal still runs (retried while kwal's
   periodic reopen holds the lock; if kwal resumes with two replicas before
   replica 2 is repaired, replica 2 is repaired after kwal stops). kwal must
   resume by itself (2 or 3 healthy replicas again), and the run ends with
   every record stored once, ZooKeeper at the end offsets, all three
   replicas healthy and `kwal wal verify` clean.

Numbers come from --stats-json, kwal-verify, `kwal wal ls|verify|dump`,
ZooKeeper, the sink and the tracker database; never from kwal's log.
"""
import os
import re
import shutil
import sqlite3
import time
import zlib

import pytest

from crashlib import Trial, wait_until, wal_args, wal_ls, wal_verify_dirs, \
    zk_fast  # noqa: F401 (fixture)
from kwalh import proc, workload
from kwalh.kwal import consuming

pytestmark = pytest.mark.skipif(shutil.which("fiu-ctrl") is None,
                                reason="fiu-ctrl is not installed (Debian fiu-utils)")

RATE_NREC = 8000
QL_NREC = 12000


def fault_trial(bins, zk, kafka, kwal_factory, names, d, nrec=6000):
    """A Trial with a WAL of 3 replicas, write quorum 2."""
    t = Trial(bins, zk, kafka, kwal_factory, names, d, nrec=nrec, replicas=3)
    t.settings["wal.write.quorum"] = 2
    return t


def fiu_prefix(tmp_path):
    return str(tmp_path / "fiu")


def fiu_send(prefix, k, *cmds):
    """libfiu remote-control commands to kwal process k over the fifos
    PREFIX-PID.in/.out; fiu-ctrl reports a rejected command on stdout with
    exit status 0, so any output fails."""
    fin, fout = f"{prefix}-{k.pid}.in", f"{prefix}-{k.pid}.out"
    wait_until(lambda: os.path.exists(fin) and os.path.exists(fout), 30,
               f"libfiu control fifos {fin}", k.alive, step=0.1)
    argv = ["fiu-ctrl", "-f", prefix]
    for c in cmds:
        argv += ["-c", c]
    rc, out, err = proc.run(argv + [str(k.pid)], 30)
    assert rc == 0 and not (out + err).strip(), \
        f"fiu-ctrl {cmds} {k.pid}: exit {rc}, output: {(out + err).strip()}"


def healthy(k):
    """wal_replicas_healthy: -1 while the WAL is released (below quorum)."""
    return (k.stats() or {}).get("wal_replicas_healthy", -1)


def paused(k):
    """Below the write quorum: counted, and the WAL released or 1 healthy."""
    return k.stat("quorum_pauses", 0) >= 1 and healthy(k) < 2


# --- a. a replica fails mid-run ------------------------------------------------

@pytest.mark.parametrize("replica,cmd,fails", [
    pytest.param(1, "enable name=wal/replica1/write", True, id="write-EIO-r1"),
    pytest.param(2, "enable name=wal/replica2/write,failinfo=28", True, id="write-ENOSPC-r2"),
    pytest.param(0, "enable name=wal/replica0/fsync", True, id="fsync-EIO-r0"),
    pytest.param(1, "enable name=wal/replica1/short", False, id="short-write-r1"),
])
def test_replica_fails_mid_run(replica, cmd, fails, bins, zk_fast, kafka3, tmp_path, names,
                               kwal_factory):
    t = fault_trial(bins, zk_fast, kafka3, kwal_factory, names, str(tmp_path / "t"),
                    nrec=RATE_NREC)
    prefix = fiu_prefix(tmp_path)
    k = t.kwal(env={"KWAL_FIU_CTRL": prefix}).start()
    wait_until(lambda: k.stats() is not None and consuming(k.stats()), 120, "kwal consumes",
               k.alive)
    lg = workload.Loadgen(bins, kafka3.bootstrap, t.topic, RATE_NREC, t.manifest,
                          str(tmp_path / "lg"), rate=1000).start()
    wait_until(lambda: t.stored() >= 1000, 120, "1,000 stored", k.alive)
    assert not lg.done(), "kwal-loadgen already done: the fault would come too late"
    assert healthy(k) == 3, k.stats()
    fiu_send(prefix, k, cmd)
    if fails:
        wait_until(lambda: healthy(k) == 2, 60, f"replica {replica} failed (statistics)",
                   k.alive)
        assert not lg.done(), \
            f"kwal-loadgen was done before replica {replica} failed: nothing produced after"
    else:
        time.sleep(2)
        assert not lg.done(), f"kwal-loadgen was done 2 s after '{cmd}'"
    wait_until(lg.done, 120, "kwal-loadgen finishes")
    assert lg.rc == 0, "kwal-loadgen failed"
    wait_until(lambda: t.stored() >= RATE_NREC, 120, f"{RATE_NREC} stored", k.alive)
    assert k.stop() == 0, f"exit {k.rc} after SIGTERM ({k.log_tail(3)})"
    s = k.stats()
    assert s["wal_replicas_healthy"] == (2 if fails else 3), s
    t.assert_all_once()
    t.check_offsets(RATE_NREC)
    ls = wal_ls(bins, t.wal_dirs)
    if not fails:
        assert ls["healthy"] == 3 and set(ls["state"].values()) == {"healthy"}, ls["text"]
        rc, out = wal_verify_dirs(bins, t.wal_dirs)
        assert rc == 0, "kwal wal verify after short writes:\n" + "\n".join(out[-20:])
        return
    assert ls["healthy"] == 2, ls["text"]
    assert ls["state"][replica] == "FAILED", ls["text"]
    assert ls["reason"].get(replica), f"wal ls gives no reason for replica {replica}"
    assert all(ls["state"][q] == "healthy" for q in range(3) if q != replica), ls["text"]


# --- b, c. corrupt records -------------------------------------------------------

def ten_blocks(t):
    """Die at pipeline.committed:10 with one receiver and 4 KiB segments:
    10 blocks in the WAL, one segment each, in ZooKeeper, none delivered."""
    t.produce()
    t.crash_run("pipeline.committed:10", batch_interval_ms=60000, batch_first_early="false",
                wal_segment_bytes="4K", receivers=1)
    ls = wal_ls(t.bins, t.wal_dirs)
    assert ls["records"] == 10 and ls["lsn"] == (1, 10) and ls["segments"] == 10, ls["text"]
    assert t.stored() == 0


def rec_pos(bins, dirs, lsn):
    """(segment file name, offset, size) of WAL record lsn (kwal wal dump)."""
    rc, out, err = proc.run([bins.kwal, "wal", "dump", *wal_args(dirs), "--from", str(lsn),
                             "--limit", "1"], 60)
    assert rc == 0, f"kwal wal dump: exit {rc}: {err}"
    for line in out.splitlines():
        f = line.split()
        if f and f[0] == str(lsn):
            return "%020d.seg" % int(f[1]), int(f[2]), int(f[3])
    pytest.fail(f"kwal wal dump: no record with LSN {lsn}:\n{out}")


def corrupt_rec(bins, dirs, lsn, replicas):
    """Flip the middle byte of record lsn's payload on the given replicas;
    (segment, record offset, byte offset)."""
    seg, off, size = rec_pos(bins, dirs, lsn)
    at = off + 32 + (size - 32) // 2
    for r in replicas:
        p = os.path.join(dirs[r], seg)
        with open(p, "r+b") as f:
            f.seek(at)
            b = f.read(1)
            assert len(b) == 1, f"nothing at byte {at} of {p}"
            f.seek(at)
            f.write(bytes([255 - b[0]]))
    return seg, off, at


def test_one_replica_corrupt(bins, zk_fast, kafka3, tmp_path, names, kwal_factory):
    t = fault_trial(bins, zk_fast, kafka3, kwal_factory, names, str(tmp_path / "t"))
    ten_blocks(t)
    seg, off, _ = corrupt_rec(bins, t.wal_dirs, 5, [1])
    rc, out = wal_verify_dirs(bins, t.wal_dirs)
    assert rc == 1, f"kwal wal verify exit {rc}:\n" + "\n".join(out)
    assert any(ln.startswith(f"replica 1 ({t.wal_dirs[1]}) segment {seg} offset {off}: ")
               for ln in out), "kwal wal verify does not name the damage:\n" + "\n".join(out)
    assert not any(ln.startswith(("replica 0 ", "replica 2 ")) for ln in out), \
        "kwal wal verify blames another replica too:\n" + "\n".join(out)
    t.finish()


def tracker_block(w0, lsn):
    """(ranges as "t/p offsets a..b", [(partition, from, until)], records of
    the block, records of the blocks below it), from the tracker."""
    db = sqlite3.connect(f"file:{w0}/tracker.db?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT topic, partition, from_offset, until_offset FROM block_ranges "
                          "WHERE lsn = ? ORDER BY topic, partition", (lsn,)).fetchall()
        records = db.execute("SELECT records FROM blocks WHERE lsn = ?", (lsn,)).fetchone()
        below = db.execute("SELECT COALESCE(SUM(records), 0) FROM blocks WHERE lsn < ?",
                           (lsn,)).fetchone()[0]
    finally:
        db.close()
    assert rows and records, f"the tracker has no block {lsn}"
    return ([f"{tp}/{p} offsets {a}..{u - 1}" for tp, p, a, u in rows],
            [(p, a, u) for _, p, a, u in rows], records[0], below)


def snapshot_wal(dirs, seg):
    """Per replica: the segment and STATE names, a checksum of all segments,
    and the bad block's segment (None when absent)."""
    res = []
    for d in dirs:
        names_ = sorted(f for f in os.listdir(d) if f.endswith(".seg") or f == "STATE")
        crc = 0
        for f in sorted(f for f in names_ if f.endswith(".seg")):
            with open(os.path.join(d, f), "rb") as fh:
                crc = zlib.crc32(fh.read(), crc)
        p = os.path.join(d, seg)
        bad = open(p, "rb").read() if os.path.exists(p) else None
        res.append((names_, crc, bad))
    return res


def check_stop(t, cmd, lsn, seg, ranges, below, z0, problems):
    """kwal CMD must fail with its one-line reason naming LSN and every range
    of the block as its last stderr line; ZooKeeper must not move, the bad
    block's segment must stay as it was on every replica (and every WAL
    file, when nothing was delivered); the sink may only get (some of) the
    blocks below it, once."""
    before = snapshot_wal(t.wal_dirs, seg)
    k = t.kwal(args=(cmd,)).start()
    rc = k.wait(180)
    if rc is None:
        k.kill()
        pytest.fail(f"kwal {cmd} still runs after 180 s with block {lsn} corrupt everywhere")
    assert rc != 0, f"kwal {cmd} exited 0 with block {lsn} corrupt on every replica"
    with open(k.log, errors="replace") as f:
        lines = [ln.rstrip("\n") for ln in f if ln.strip()]
    last = lines[-1] if lines else ""
    assert last.startswith(f"kwal: {cmd}: "), f"kwal {cmd}'s last stderr line: {last!r}"
    assert re.search(rf"(lsn|LSN) {lsn}(?!\d)", last), \
        f"kwal {cmd}'s reason does not name LSN {lsn}: {last}"
    for rg in ranges:
        assert rg in last, f"kwal {cmd}'s reason does not name '{rg}': {last}"
    z = t.zk_offsets()
    if z != z0:
        problems.append(f"kwal {cmd} moved ZooKeeper offsets: {z0} -> {z}")
    after = snapshot_wal(t.wal_dirs, seg)
    sn = t.stored()
    for r, ((n0, c0, b0), (n1, c1, b1)) in enumerate(zip(before, after)):
        if b0 is None:
            continue
        if b1 is None:
            problems.append(f"kwal {cmd} deleted {seg} (block {lsn}, acknowledged) from "
                            f"replica {r}")
        elif b1 != b0:
            problems.append(f"kwal {cmd} changed {seg} (block {lsn}, acknowledged) on "
                            f"replica {r}")
        elif sn == 0 and n1 != n0:
            problems.append(f"kwal {cmd} delivered nothing but changed the files of "
                            f"replica {r}: {n0} -> {n1}")
        elif sn == 0 and c1 != c0:
            problems.append(f"kwal {cmd} delivered nothing but changed the segments of "
                            f"replica {r}")
    if sn:
        v = t.verify()
        if v["duplicates"] or v["duplicate_offsets"] or v["corrupt"] or sn > below:
            problems.append(f"after kwal {cmd} the sink holds more than the {below} records "
                            f"of the blocks below {lsn}, or duplicates: {v.summary}")


@pytest.mark.parametrize("lsn", [pytest.param(5, id="middle-segment"),
                                 pytest.param(10, id="newest-segment-last-record")])
def test_every_replica_corrupt(lsn, bins, zk_fast, kafka3, tmp_path, names, kwal_factory):
    t = fault_trial(bins, zk_fast, kafka3, kwal_factory, names, str(tmp_path / "t"))
    ten_blocks(t)
    ranges, lost_ranges, lost, below = tracker_block(t.wal_dirs[0], lsn)
    seg, off, _ = corrupt_rec(bins, t.wal_dirs, lsn, [0, 1, 2])
    rc, out = wal_verify_dirs(bins, t.wal_dirs)
    assert rc == 1, f"kwal wal verify exit {rc}:\n" + "\n".join(out)
    for r in range(3):
        assert any(ln.startswith(f"replica {r} ({t.wal_dirs[r]}) segment {seg} offset {off}: ")
                   for ln in out), f"kwal wal verify does not name replica {r}:\n" + \
            "\n".join(out)
    z0 = t.zk_offsets()
    problems = []
    check_stop(t, "receive", lsn, seg, ranges, below, z0, problems)
    check_stop(t, "recover", lsn, seg, ranges, below, z0, problems)

    # --skip-corrupt, the user's explicit choice: the block is given up
    k = t.kwal(args=("recover",), xargs=["--skip-corrupt"]).start()
    assert k.wait(180) == 0, f"kwal recover --skip-corrupt: exit {k.rc} ({k.log_tail(3)})"
    s = k.stats()
    assert (s["blocks_lost"], s["records_lost"]) == (1, lost), \
        f"--skip-corrupt: expected 1 block of {lost} records lost: {s}"
    k = t.kwal().start()
    wait_until(lambda: t.stored() >= t.nrec - lost, 180, "the rest stored", k.alive)
    assert k.stop() == 0, f"exit {k.rc} after SIGTERM ({k.log_tail(3)})"
    v = t.verify()
    assert (v["expected"], v["stored"], v["missing"], v["duplicates"], v["duplicate_offsets"],
            v["corrupt"]) == (t.nrec, t.nrec - lost, lost, 0, 0, 0), v.summary
    db = sqlite3.connect(f"file:{t.db}?mode=ro", uri=True)
    try:
        for p, a, u in lost_ranges:
            n = db.execute("SELECT COUNT(*) FROM records WHERE topic=? AND partition=? AND "
                           "offset >= ? AND offset < ?", (t.topic, p, a, u)).fetchone()[0]
            assert n == 0, f"{n} records of the lost range {p}:{a}..{u} are in the sink"
    finally:
        db.close()
    zs = sum(v or 0 for v in t.zk_offsets().values())
    assert zs == t.nrec, f"ZooKeeper offsets sum to {zs} after --skip-corrupt"
    rc, out = wal_verify_dirs(bins, t.wal_dirs)
    assert rc == 0, "kwal wal verify after --skip-corrupt:\n" + "\n".join(out[-20:])
    k = t.kwal(args=("recover",)).start()
    assert k.wait(180) == 0, f"kwal recover again: exit {k.rc} ({k.log_tail(3)})"
    assert not problems, "\n".join(problems)


# --- d. quorum lost, repair, resume ----------------------------------------------

def durable_offsets(w0, topic, partitions):
    """{partition: the tracker's highest until offset} (0 when none)."""
    try:
        db = sqlite3.connect(f"file:{w0}/tracker.db?mode=ro", uri=True, timeout=10)
        try:
            res = {}
            for p in range(partitions):
                r = db.execute("SELECT until_offset FROM partitions WHERE topic=? AND "
                               "partition=?", (topic, p)).fetchone()
                res[p] = r[0] if r else 0
            return res
        finally:
            db.close()
    except sqlite3.Error as e:
        pytest.fail(f"reading the tracker: {e}")


def test_quorum_lost_repair_resume(bins, zk_fast, kafka3, tmp_path, names, kwal_factory):
    t = fault_trial(bins, zk_fast, kafka3, kwal_factory, names, str(tmp_path / "t"),
                    nrec=QL_NREC)
    prefix = fiu_prefix(tmp_path)
    k = t.kwal(env={"KWAL_FIU_CTRL": prefix}).start()
    wait_until(lambda: k.stats() is not None and consuming(k.stats()), 120, "kwal consumes",
               k.alive)
    lg = workload.Loadgen(bins, kafka3.bootstrap, t.topic, QL_NREC, t.manifest,
                          str(tmp_path / "lg"), rate=1000).start()
    wait_until(lambda: t.stored() >= 1500, 120, "1,500 stored", k.alive)
    fiu_send(prefix, k, "enable name=wal/replica1/write", "enable name=wal/replica2/write")
    wait_until(lambda: paused(k), 60, "the pause below the write quorum (statistics)",
               k.alive)
    time.sleep(1)            # offset updates of blocks acknowledged before the fault
    zp = t.zk_offsets()
    assert not lg.done(), "kwal-loadgen already done: nothing would arrive during the pause"
    for _ in range(10):
        time.sleep(0.5)
        assert k.alive(), f"kwal died while paused ({k.log_tail(3)})"
        z = t.zk_offsets()
        assert z == zp, f"ZooKeeper moved while paused: {zp} -> {z}"
        du = durable_offsets(t.wal_dirs[0], t.topic, t.partitions)
        assert all((z[p] or 0) <= du[p] for p in z), \
            f"ZooKeeper offsets {z} past the durable ones {du} (invariant 1)"
    ls = wal_ls(bins, t.wal_dirs)
    assert ls["healthy"] == 1 and ls["below_quorum"], ls["text"]
    fiu_send(prefix, k, "disable name=wal/replica1/write", "disable name=wal/replica2/write")

    def repair(r):
        """True when repaired; False when kwal resumed first and holds the
        WAL (retried while kwal's reopen attempt holds the lock)."""
        deadline = time.monotonic() + 60
        while True:
            rc, out, err = proc.run([bins.kwal, "wal", "repair", *wal_args(t.wal_dirs),
                                     "--replica", str(r)], 120)
            if rc == 0:
                return True
            assert "in use by another process" in err, \
                f"kwal wal repair --replica {r}: exit {rc}: {(out + err).strip()}"
            if healthy(k) >= 2:
                return False
            assert time.monotonic() < deadline, \
                f"kwal wal repair --replica {r}: the WAL stayed locked for 60 s"
            time.sleep(0.2)

    assert repair(1), "kwal resumed before any replica was repaired"
    r2 = repair(2)
    wait_until(lambda: healthy(k) >= 2, 90, "kwal resumes after the repair (statistics)",
               k.alive)
    wait_until(lg.done, 120, "kwal-loadgen finishes")
    assert lg.rc == 0, "kwal-loadgen failed"
    wait_until(lambda: t.stored() >= QL_NREC, 180, f"{QL_NREC} stored", k.alive)
    assert k.stop() == 0, f"exit {k.rc} after SIGTERM ({k.log_tail(3)})"
    t.assert_all_once()
    t.check_offsets(QL_NREC)
    if not r2:
        rc, out, err = proc.run([bins.kwal, "wal", "repair", *wal_args(t.wal_dirs),
                                 "--replica", "2"], 120)
        assert rc == 0, f"kwal wal repair --replica 2 (kwal stopped): {(out + err).strip()}"
    ls = wal_ls(bins, t.wal_dirs)
    assert ls["healthy"] == 3, ls["text"]
    rc, out = wal_verify_dirs(bins, t.wal_dirs)
    assert rc == 0, "kwal wal verify after the repair:\n" + "\n".join(out[-20:])
