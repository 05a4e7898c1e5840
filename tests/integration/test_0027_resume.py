"""0027 -- resuming after a crash (DESIGN.md, "Resuming after a crash"), both
modes, on a real ZooKeeper server and the shared 3-node Kafka cluster.

a  SIGKILL while records flow and restart at once, three times: every
   restart resumes the ZooKeeper session its predecessor left
   (zk_session_resumed, owner nodes inherited), stores new records, and at
   the end every record is stored once and ZooKeeper is at the end offsets.
e  batch.first.early: with a 60 s batch interval the first records are
   stored within the first interval (0030/0032/0033 turn it off).
b  eight SIGKILLs in a row, each 1-3 s after the start (before, during or
   after the group join), then a normal run: every record stored once.
c  the fallback: the restart comes after the saved session has expired (a
   2 s ZooKeeper session): a new session, the normal path, every record once.
d  the guard: a second process on the same state (the WAL; in direct mode
   the same sqlite database) is refused at once naming the first one's pid;
   one with the same instance.id on other state is refused naming the
   instance; meanwhile the first one's ZooKeeper offsets never move
   backwards and it stores every record once.

Timing (how soon a restart stores again) is the benchmark's business
(tools/bench/bench-resume), not asserted here. Numbers come from --stats-json,
the sink, ZooKeeper and kwal-verify; never from kwal's log.
"""
import glob
import os
import random
import time

import pytest

import kwtest
from kwalh import workload

PARTITIONS = 4
MODES = ["receive", "direct"]


class Job:
    """A topic, a group, a directory and the runs of one mode on them."""

    def __init__(self, mode, bins, zk, kafka, kwal_factory, names, d, **extra):
        self.mode, self.bins, self.zk, self.kafka = mode, bins, zk, kafka
        self.kwal_factory = kwal_factory
        self.topic, self.group = names.topic(), names.group()
        self.d = str(d)
        os.makedirs(self.d, exist_ok=True)
        self.db = os.path.join(self.d, "out.db")
        self.settings = kwtest.settings(zk, kafka.bootstrap, self.group, self.topic, self.d,
                                        **{"receivers": 2, "block.interval.ms": 100,
                                           "batch.interval.ms": 300, **extra})
        self.n = 0
        kafka.create_topic(self.topic, PARTITIONS, rf=3)

    def kwal(self, name="run", **over):
        self.n += 1
        return self.kwal_factory([self.mode], {**self.settings, **over},
                                 name=f"{name}{self.n}-").start()

    def producer(self, records, rate):
        return kwtest.start_loadgen(self.bins, self.kafka.bootstrap, self.topic, records,
                                    self.d, rate=rate)

    def stored(self):
        return kwtest.stored(self.db, self.topic)

    def wait_stored_more(self, k, than, timeout=60):
        kwtest.wait_until(lambda: self.stored() > than, timeout,
                          f"{k.base}: records stored past {than}", k.alive)

    def finish(self, k, lg):
        """Let the producer end, k catch up with Kafka and stop cleanly; then
        every record once (kwal-verify), ZooKeeper at the end offsets."""
        man = kwtest.wait_loadgen(lg)
        ends = self.kafka.end_offsets(self.topic)
        kwtest.wait_zk_at_end(self.zk, self.group, self.topic, ends, k.alive)
        assert k.stop(grace=120) == 0, k.log_tail(5)
        s = k.stats()
        assert s["final"] is True, s
        total = int(man["delivered"])
        kwtest.assert_verified(self.bins, lg.manifest, self.db, total=total)
        kwtest.check_zk_at_end(self.zk, self.group, self.topic, ends, db=self.db, total=total)
        return s


def kill_now(k):
    rc = k.kill()
    assert rc is not None and rc != 0, f"{k.base}: exit {rc} before the SIGKILL"


@pytest.mark.parametrize("mode", MODES)
def test_resume_after_kill(mode, bins, zk, kafka3, kwal_factory, names, tmp_path):
    job = Job(mode, bins, zk, kafka3, kwal_factory, names, tmp_path)
    # 40 s of records at 2,000/s: some are left to store after the third
    # restart however slow the machine is
    lg = job.producer(80_000, rate=2000)
    k = job.kwal()
    job.wait_stored_more(k, 0)
    inherited = []
    for _ in range(3):
        time.sleep(random.uniform(0.2, 1.0))
        kill_now(k)
        before = job.stored()              # after the kill: the restart must store
        k = job.kwal()
        s = k.wait_stats(lambda s: s.get("zk_session_ms", -1) >= 0, 60)
        assert s is not None and s["zk_session_resumed"] == 1, (s, k.log_tail(5))
        job.wait_stored_more(k, before)
        inherited.append(k.stats()["zk_owner_nodes_inherited"])
    # a run killed before it took its partitions back may have released the
    # nodes it inherited (kw_zk_release_inherited); across three restarts at
    # least one finds them
    assert max(inherited) >= 1, inherited
    s = job.finish(k, lg)
    assert s["zk_session_resumed"] == 1, s
    if mode == "receive":
        for key in ("recovery_wal_open_ms", "recovery_tracker_ms", "recovery_zk_ms"):
            assert s[key] >= 0, (key, s)


def test_first_batch_early(bins, zk, kafka3, kwal_factory, names, tmp_path):
    """batch.first.early (the default): with a 60 s batch interval the first
    records are stored long before the first interval ends."""
    job = Job("receive", bins, zk, kafka3, kwal_factory, names, tmp_path,
              **{"batch.interval.ms": 60000})
    lg = job.producer(2000, rate=1000)
    k = job.kwal()
    job.wait_stored_more(k, 0, timeout=30)
    job.finish(k, lg)


@pytest.mark.parametrize("mode", MODES)
def test_quick_kills(mode, bins, zk, kafka3, kwal_factory, names, tmp_path):
    job = Job(mode, bins, zk, kafka3, kwal_factory, names, tmp_path)
    lg = job.producer(40_000, rate=2000)
    for _ in range(8):
        k = job.kwal(name="quick")
        time.sleep(random.uniform(1.0, 3.0))
        kill_now(k)
    k = job.kwal(name="last")
    before = job.stored()
    job.wait_stored_more(k, before)
    job.finish(k, lg)


@pytest.mark.parametrize("mode", MODES)
def test_expired_session_fallback(mode, bins, zk_fast, kafka3, kwal_factory, names, tmp_path):
    job = Job(mode, bins, zk_fast, kafka3, kwal_factory, names, tmp_path,
              **{"zookeeper.session.timeout.ms": 2000, "kafka.session.timeout.ms": 6000,
                 "kafka.heartbeat.interval.ms": 500})
    lg = job.producer(20_000, rate=2000)
    k = job.kwal()
    job.wait_stored_more(k, 0)
    kill_now(k)
    saved = glob.glob(f"{job.d}/*.zk-session") + glob.glob(f"{job.d}/wal/*.zk-session")
    assert len(saved) == 1, saved          # left by the crash, for the restart
    time.sleep(5)                          # the server ends the 2 s session
    before = job.stored()
    k = job.kwal()
    s = k.wait_stats(lambda s: s.get("zk_session_ms", -1) >= 0, 60)
    assert s is not None and s["zk_session_resumed"] == 0, (s, k.log_tail(5))
    assert s["zk_owner_nodes_inherited"] == 0, s
    job.wait_stored_more(k, before)
    job.finish(k, lg)


@pytest.mark.parametrize("mode", MODES)
def test_second_process_refused(mode, bins, zk, kafka3, kwal_factory, names, tmp_path):
    job = Job(mode, bins, zk, kafka3, kwal_factory, names, tmp_path / "a",
              **{"instance.id": "first"})
    lg = job.producer(20_000, rate=2000)
    a = job.kwal(name="a")
    job.wait_stored_more(a, 0)
    seen = [kwtest.zk_offsets(zk, job.group, job.topic, PARTITIONS)]

    # the same state: refused by the instance lock, before ZooKeeper
    b = job.kwal(name="b")
    assert b.wait(60) == 1, b.log_tail(5)
    with open(b.log, errors="replace") as f:
        err = f.read()
    assert f"pid {a.pid}" in err and "in use by another kwal process" in err, err[-2000:]

    # other state, the same instance.id: refused by ZooKeeper's ids node
    other = tmp_path / "c"
    c = job.kwal(name="c", **{"wal.dirs": f"{other}/wal", "sink": f"sqlite:{other}/out.db"})
    assert c.wait(60) == 1, c.log_tail(5)
    with open(c.log, errors="replace") as f:
        err = f.read()
    assert "instance 'first' is in use by a running kwal process" in err, err[-2000:]
    assert not os.path.exists(f"{other}/out.db") or \
        kwtest.stored(f"{other}/out.db", job.topic) == 0

    # the first one never saw its offsets go back, and goes on to the end
    assert a.alive(), a.log_tail(5)
    man = None
    while man is None:
        cur = kwtest.zk_offsets(zk, job.group, job.topic, PARTITIONS)
        prev = seen[-1]
        assert all(cur[p] >= prev[p] for p in cur), f"offsets went back: {prev} -> {cur}"
        seen.append(cur)
        if lg.done():
            man = workload.read_manifest(lg.manifest)
        time.sleep(0.2)
    job.finish(a, lg)
