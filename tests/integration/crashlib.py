"""crashlib -- helpers of the crash and fault tests (0030, 0032, 0033; 0040
uses zk_fast and wait_until) on the shared real Kafka cluster: what
tests/integration/lib_crash.sh and lib_fault.sh gave the shell scripts.

A trial produces a workload up front (kwal-loadgen, manifest), runs `kwal
receive` until it dies at a crash point (crash_run: exit 99, CRASH_EXIT),
maybe does something to its files, and finishes with a normal run
(finish): every record stored once (kwal-verify), every partition's
ZooKeeper offset at its end offset in the sink (invariants 1-3).

Configuration (crash_settings): 2 receivers, a WAL of 2 replicas with small
blocks and segments (segment rolls and cleanups happen), a sqlite sink, and
short sessions -- ZooKeeper 2 s (the server runs with a 500 ms tick:
zk_fast) and Kafka 3 s -- so that a dead process's owner nodes and group
members go soon.

`kwal wal ls` and `kwal wal verify` are read through wal_ls() and
wal_verify_dirs() (their documented output, not kwal's log).

Numbers come from kwal's --stats-json, kwal-verify, ZooKeeper and the sink;
never from kwal's log (kept as a file for people: Kwal.log_tail()).
"""
import os
import re
import time

import pytest

from kwalh import proc, services, workload
from kwalh.kwal import CRASH_EXIT, consuming

NREC = 6000          # records per trial
PARTITIONS = 4


@pytest.fixture(scope="module")
def zk_fast(tmp_path_factory, bins):
    """One ZooKeeper server for the module, with a 500 ms tick so that
    sessions of 2 s are granted (ZooKeeper's minimum is 2 ticks). Tests
    share it with unique group names."""
    server = services.ZooKeeper(bins, str(tmp_path_factory.mktemp("zk") / "zk"), tick_ms=500)
    server.start()
    yield server
    server.stop()


def wait_until(pred, timeout, what, alive=None, step=0.2):
    """Poll pred until it is true; pytest.fail after timeout seconds, or as
    soon as alive() (a process) is false."""
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return
        if alive is not None and not alive():
            pytest.fail(f"{what}: the process ended first")
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout} s")
        time.sleep(step)


def short_session_settings(zk, kafka, group, topic):
    """group and topic from the earliest offset, with short sessions:
    ZooKeeper 2 s (zk_fast's tick allows it), Kafka 3 s."""
    return {
        "group.id": group,
        "topics": topic,
        "zookeeper.connect": zk.connect,
        "zookeeper.session.timeout.ms": 2000,
        "kafka.bootstrap.servers": kafka.bootstrap,
        "kafka.session.timeout.ms": 3000,
        "kafka.heartbeat.interval.ms": 300,
        "auto.offset.reset": "earliest",
    }


def crash_settings(zk, kafka, d, group, topic, replicas=2):
    """The trial configuration (see the module docstring)."""
    return {
        **short_session_settings(zk, kafka, group, topic),
        "receivers": 2,
        "wal.dirs": ",".join(f"{d}/w{i}" for i in range(replicas)),
        "wal.segment.bytes": "64K",
        "block.max.bytes": "16K",
        "block.interval.ms": 50,
        "batch.interval.ms": 200,
        "sink": f"sqlite:{d}/out.db",
    }


class Trial:
    """One topic, group, directory and workload on the shared cluster."""

    def __init__(self, bins, zk, kafka, kwal_factory, names, d, nrec=NREC,
                 partitions=PARTITIONS, replicas=2, store=None):
        self.bins, self.zk, self.kafka, self.kwal_factory = bins, zk, kafka, kwal_factory
        self.topic, self.group = names.topic(), names.group()
        self.d = d
        os.makedirs(d, exist_ok=True)
        self.nrec = nrec
        self.partitions = partitions
        self.db = os.path.join(d, "out.db")
        self.manifest = os.path.join(d, "m")
        self.settings = crash_settings(zk, kafka, d, self.group, self.topic, replicas)
        self.wal_dirs = [os.path.join(d, f"w{i}") for i in range(replicas)]
        # the sink: sqlite in d by default, or a workload.*Store
        self.store = store or workload.SqliteStore(self.db)
        self.settings["sink"] = self.store.spec
        self.runs = 0
        kafka.create_topic(self.topic, partitions, rf=3)

    def produce(self, timeout=240):
        lg = workload.Loadgen(self.bins, self.kafka.bootstrap, self.topic, self.nrec,
                              self.manifest, os.path.join(self.d, "lg"))
        assert lg.run(timeout=timeout) == 0, "kwal-loadgen failed"
        m = workload.read_manifest(self.manifest)
        assert int(m.get("delivered", -1)) == self.nrec, m

    def stored(self):
        """Records of the topic in the sink (sqlite: its primary key keeps
        them unique)."""
        return self.store.count(self.topic)

    def kwal(self, args=("receive",), xargs=(), env=None, **over):
        """A Kwal (not started) with the trial's settings, `over` on top
        (keyword names with '_' for '.': batch_interval_ms=60000)."""
        s = dict(self.settings)
        s.update({k.replace("_", "."): v for k, v in over.items()})
        self.runs += 1
        return self.kwal_factory(list(args), s, name=f"run{self.runs}-", xargs=xargs, env=env)

    def crash_run(self, spec, args=("receive",), xargs=(), timeout=240, **over):
        """Run kwal armed with KWAL_CRASH_AT=spec until it dies there: exit
        99. When every record is stored and it still runs it gets SIGTERM
        once (the way out passes receiver.revoke); any other ending fails
        the test -- a point that is never reached proves nothing."""
        k = self.kwal(args, xargs=xargs, env={"KWAL_CRASH_AT": spec}, **over).start()
        deadline = time.monotonic() + timeout
        termed = False
        while k.alive():
            if time.monotonic() > deadline:
                k.kill()
                pytest.fail(f"{spec}: kwal neither crashed nor stopped in {timeout} s "
                            f"(log: {k.log_tail(3)})")
            if not termed and k.stats() is not None and self.stored() >= self.nrec:
                k.term()
                termed = True
            time.sleep(0.2)
        rc = k.wait()
        assert rc == CRASH_EXIT, (f"{spec}: expected exit {CRASH_EXIT} at the crash point, "
                                  f"got {rc}{' after SIGTERM' if termed else ''} "
                                  f"(log: {k.log_tail(3)})")
        return k

    def finish(self, args=("receive",), xargs=(), timeout=240, **over):
        """Run kwal until every record is stored, SIGTERM (exit 0), then the
        checks: kwal-verify, ZooKeeper = end offsets. The Kwal (final stats)."""
        k = self.kwal(args, xargs=xargs, **over).start()
        # consuming: recovery is done and the service runs (a SIGTERM before
        # kwal has read its configuration would just kill it)
        wait_until(lambda: (k.stats() is not None and consuming(k.stats())
                            and self.stored() >= self.nrec), timeout,
                   f"{self.nrec} stored after the restart", k.alive)
        rc = k.stop()
        assert rc == 0, f"the last run exited {rc} after SIGTERM (log: {k.log_tail(3)})"
        s = k.stats()
        assert s is not None and s["final"] is True, s
        self.assert_all_once()
        self.check_offsets(self.nrec)
        return k

    def verify(self):
        return workload.verify(self.bins, manifest=self.manifest, **self.store.verify_args())

    def assert_all_once(self):
        v = self.verify()
        assert v.ok, f"kwal-verify: {v.as_dict()}"
        assert (v["expected"], v["stored"], v["missing"], v["duplicates"],
                v["duplicate_offsets"], v["corrupt"]) == (self.nrec, self.nrec, 0, 0, 0, 0), \
            v.summary

    def zk_offsets(self):
        """{partition: ZooKeeper offset, None where none is stored}."""
        return self.zk.offsets(self.group, self.topic, self.partitions)

    def check_offsets(self, total):
        """Every partition's ZooKeeper offset is its end offset in the sink,
        and they add up to total (invariant 1, nothing consumed twice)."""
        zoff = {p: (v or 0) for p, v in self.zk_offsets().items()}
        ends = self.store.end_offsets(self.topic, self.partitions)
        assert zoff == ends, f"ZooKeeper {zoff} != sink end offsets {ends}"
        assert sum(zoff.values()) == total, f"ZooKeeper offsets {zoff} do not sum to {total}"



def wal_args(dirs):
    """`--dir D` for each replica directory, in replica order."""
    return [a for d in dirs for a in ("--dir", str(d))]


def wal_ls(bins, dirs, timeout=120):
    """`kwal wal ls` of the replica directories, parsed from its documented
    output: {"replicas", "healthy", "quorum", "below_quorum", "state":
    {r: "healthy"|"FAILED"}, "reason": {r: text}, "segments", "records",
    "lsn": (first, last) or None, "text"}. Fails the test unless it exits 0."""
    rc, out, err = proc.run([bins.kwal, "wal", "ls", *wal_args(dirs)], timeout)
    assert rc == 0, f"kwal wal ls: exit {rc}: {err.strip()}"
    res = {"state": {}, "reason": {}, "lsn": None, "text": out}
    m = re.search(r"^wal: (\d+) replicas, (\d+) healthy, write quorum (\d+)", out, re.M)
    assert m, "kwal wal ls: no 'wal:' line:\n" + out
    res["replicas"], res["healthy"], res["quorum"] = (int(x) for x in m.groups())
    res["below_quorum"] = "BELOW QUORUM" in m.string[m.start():out.find("\n", m.start())]
    last = None
    for line in out.splitlines():
        f = line.split()
        if len(f) >= 2 and f[0].isdigit() and f[1] in ("healthy", "FAILED"):
            last = int(f[0])
            res["state"][last] = f[1]
        elif line.strip().startswith("reason: ") and last is not None:
            res["reason"][last] = line.strip()[len("reason: "):]
    m = re.search(r"^total: (\d+) segments, (\d+) records(?: \(LSN (\d+)\.\.(\d+)\))?", out, re.M)
    assert m, "kwal wal ls: no 'total:' line:\n" + out
    res["segments"], res["records"] = int(m.group(1)), int(m.group(2))
    if m.group(3):
        res["lsn"] = (int(m.group(3)), int(m.group(4)))
    return res


def wal_verify_dirs(bins, dirs, timeout=120):
    """(exit status, output lines) of `kwal wal verify --dir ...`."""
    rc, out, err = proc.run([bins.kwal, "wal", "verify", *wal_args(dirs)], timeout)
    return rc, (out + err).splitlines()
