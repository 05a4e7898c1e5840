"""0090 -- sink=postgresql:CONNINFO end to end: `kwal receive` and `kwal direct`
on a real PostgreSQL server (Debian's, started by the tests on a loopback
port: conftest's pg), a real ZooKeeper server and the shared 3-node Apache
Kafka cluster.

a  Bad input: sink=postgresql: without a connection string (exit 2, one line
   naming it); a server that does not answer (exit 1, one line naming host
   and port, never the password).
b  receive: 8,000 records; a crash at sink.mid-txn (pass 3), a restart until
   they are stored; then the server killed (immediate shutdown) for 3 s while
   6,000 more arrive at 2,000/s, and started again while kwal keeps running:
   every record of both workloads stored once (kwal-verify reads the server's
   records table), ZooKeeper at the end offsets, SIGTERM exit 0.
c  direct: the same with kwal direct -- crash at sink.mid-txn, the server
   killed and back -- and then two instances sharing the database, one of
   them SIGKILLed mid-run: every record stored once, per partition the stored
   ranges contiguous (each from is the previous until) and ending at the end
   offset, ZooKeeper at the end offsets.

Numbers come from --stats-json, kwal-verify, ZooKeeper and SQL on the server,
never from kwal's log.
"""
import os
import time

import pytest

from crashlib import short_session_settings, wait_until, zk_fast  # noqa: F401 (fixture)
from kwalh import proc, workload
from kwalh.kwal import CRASH_EXIT, consuming

PARTITIONS = 4


class Run:
    """A topic, a group, a database and kwal runs of one mode."""

    def __init__(self, mode, bins, zk, kafka, pg, kwal_factory, names, d):
        self.mode, self.bins, self.zk, self.kafka, self.pg = mode, bins, zk, kafka, pg
        self.kwal_factory = kwal_factory
        self.topic, self.group = names.topic(), names.group()
        self.d = str(d)
        os.makedirs(self.d, exist_ok=True)
        self.manifest = os.path.join(self.d, "lg.m")
        self.settings = {
            **short_session_settings(zk, kafka, self.group, self.topic),
            "sink": f"postgresql:{pg.conninfo}",
            "batch.interval.ms": 200,
        }
        # many small batches, so that the crash at pass 3 is mid-run
        if mode == "receive":
            self.settings.update({"wal.dirs": os.path.join(self.d, "wal"),
                                  "block.interval.ms": 50, "block.max.bytes": "16K"})
        else:
            self.settings["max.rate.per.partition"] = 1000
        self.n = 0
        kafka.create_topic(self.topic, PARTITIONS, rf=3)

    def kwal(self, env=None, **over):
        s = dict(self.settings)
        s.update(over)
        self.n += 1
        return self.kwal_factory([self.mode], s, name=f"{self.mode}{self.n}-", env=env)

    def stored(self):
        try:
            return int(self.pg.value("SELECT COUNT(*) FROM records") or 0)
        except proc.HarnessError:
            return 0            # the tables are not there yet, or the server is away

    def crash_at(self, spec, timeout=180):
        k = self.kwal(env={"KWAL_CRASH_AT": spec}).start()
        rc = k.wait(timeout)
        if rc is None:
            k.kill()
            pytest.fail(f"{spec}: kwal {self.mode} did not reach its crash point")
        assert rc == CRASH_EXIT, f"{spec}: exit {rc}, not {CRASH_EXIT} ({k.log_tail(3)})"

    def verify_once(self, n, manifest=None):
        """kwal-verify: the workload of manifest (default the first) stored
        once; other runs' records are foreign to it, not errors."""
        v = workload.verify(self.bins, manifest=manifest or self.manifest,
                            postgresql=self.pg.conninfo)
        assert v.ok, v.as_dict()
        assert (v["expected"], v["stored"], v["missing"], v["duplicates"],
                v["duplicate_offsets"], v["corrupt"]) == (n, n, 0, 0, 0, 0), v.summary

    def end_offsets(self):
        rows = self.pg.sql("SELECT partition, MAX(\"offset\") + 1 FROM records "
                           "GROUP BY partition")
        return {int(p): int(e) for p, e in rows}

    def check_offsets(self, total):
        zoff = {p: v or 0 for p, v in
                self.zk.offsets(self.group, self.topic, PARTITIONS).items()}
        assert zoff == self.end_offsets() == self.kafka.end_offsets(self.topic), zoff
        assert sum(zoff.values()) == total

    def ranges_contiguous(self):
        bad = self.pg.sql("SELECT partition, batch, prev, from_offset FROM (SELECT partition, "
                          "batch, from_offset, LAG(until_offset) OVER (PARTITION BY topic, "
                          "partition ORDER BY batch) AS prev FROM direct_ranges) r "
                          "WHERE prev IS NOT NULL AND prev != from_offset")
        assert not bad, f"ranges not starting where the previous one ended: {bad[:10]}"
        ends = {int(p): int(u) for p, u in self.pg.sql(
            "SELECT partition, MAX(until_offset) FROM direct_ranges GROUP BY partition")}
        assert ends == self.end_offsets(), ends


def produce(x, n, rate=None, name="lg", background=True):
    """kwal-loadgen of its own run id and manifest (x.d/NAME.m): started in
    the background, or run to its end (asserting it succeeded)."""
    lg = workload.Loadgen(x.bins, x.kafka.bootstrap, x.topic, n,
                          os.path.join(x.d, name + ".m"), os.path.join(x.d, name), rate=rate)
    if background:
        return lg.start()
    assert lg.run(180) == 0, "kwal-loadgen failed"
    return lg


# --- a. bad input ------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["receive", "direct"])
def test_bad_input(mode, bins, zk_fast, kafka3, pg, tmp_path, names,  # noqa: F811
                   kwal_factory):
    x = Run(mode, bins, zk_fast, kafka3, pg, kwal_factory, names, tmp_path / "bad")
    k = x.kwal()
    rc, _, err = proc.run([bins.kwal, mode, "-c", k.conf, "-X", "sink=postgresql:"], 120)
    assert rc == 2, (rc, err)
    assert "postgresql needs a connection string (postgresql:CONNINFO)" in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("kwal: ")]
    assert len(lines) == 1, err
    rc, _, err = proc.run([bins.kwal, mode, "-c", k.conf, "-X",
                           "sink=postgresql:host=127.0.0.1 port=1 user=u password=pw9secret "
                           "dbname=d connect_timeout=2"], 120)
    assert rc == 1, (rc, err)
    lines = [ln for ln in err.splitlines() if ln.startswith("kwal: ")]
    assert len(lines) == 1 and "host=127.0.0.1 port=1 dbname=d user=u" in lines[0] \
        and "cannot connect" in lines[0], err
    assert "pw9secret" not in err


# --- b, c. crash at sink.mid-txn and the server away ---------------------------------

@pytest.mark.parametrize("mode", ["receive", "direct"])
def test_crash_and_server_restart(mode, bins, zk_fast, kafka3, pg, tmp_path,  # noqa: F811
                                  names, kwal_factory):
    first, second = 8000, 6000
    x = Run(mode, bins, zk_fast, kafka3, pg, kwal_factory, names, tmp_path / mode)
    produce(x, first, background=False)
    x.crash_at("sink.mid-txn:3")
    assert x.stored() < first, "the crash run stored everything: the crash was not mid-run"

    k = x.kwal().start()
    wait_until(lambda: x.stored() >= first, 180, f"{first} stored after the crash", k.alive)
    # the server goes away while records keep arriving: batches fail, nothing
    # is acknowledged, kwal keeps running and delivers them once it is back
    x.pg.server.kill()
    lg2 = produce(x, second, rate=2000, name="lg2")
    time.sleep(3)
    assert k.alive(), f"kwal {mode} exited while the server was away: {k.log_tail(5)}"
    x.pg.server.start()
    wait_until(lg2.done, 180, "the second producer finishes")
    assert lg2.rc == 0, "kwal-loadgen failed"
    wait_until(lambda: x.stored() >= first + second, 240, f"{first + second} stored", k.alive)
    # ZooKeeper follows the sink (receive: before it; direct: after each batch)
    wait_until(lambda: sum((v or 0) for v in x.zk.offsets(x.group, x.topic,
                                                           PARTITIONS).values())
               >= first + second, 60, "ZooKeeper at the end offsets", k.alive)
    assert k.stop(grace=120) == 0, k.log_tail(5)
    s = k.stats()
    assert s["final"] is True and s["records_stored"] > 0, s
    x.verify_once(first)
    x.verify_once(second, manifest=os.path.join(x.d, "lg2.m"))
    x.check_offsets(first + second)
    if mode == "direct":
        x.ranges_contiguous()


# --- c. two direct instances on one database ------------------------------------------

def test_direct_instances_share_database(bins, zk_fast, kafka3, pg, tmp_path,  # noqa: F811
                                         names, kwal_factory):
    total = 12_000
    x = Run("direct", bins, zk_fast, kafka3, pg, kwal_factory, names, tmp_path / "two")
    lg = produce(x, total, rate=3000)
    a = x.kwal(**{"instance.id": "inst-a"}).start()
    b = x.kwal(**{"instance.id": "inst-b"}).start()
    wait_until(lambda: x.stored() >= 3000 and a.stat("partitions_owned", 0) > 0
               and b.stat("partitions_owned", 0) > 0, 180,
               "both instances own partitions and 3,000 are stored",
               lambda: a.alive() and b.alive())
    a.kill()
    wait_until(lg.done, 180, "the producer finishes")
    wait_until(lambda: x.stored() >= total, 240, f"{total} stored", b.alive)
    assert b.stop(grace=120) == 0, b.log_tail(5)
    x.verify_once(total)
    x.ranges_contiguous()
    # every partition's ranges came from both instances' batches or b's alone;
    # batch ids are unique across them (the primary key says so), and the
    # partitions a held went on where a's last committed range ended
    assert int(x.pg.value("SELECT COUNT(DISTINCT partition) FROM direct_ranges")) == PARTITIONS
    x.check_offsets(total)


# --- d. kwal-bench-sink: the sinks side by side --------------------------------------

@pytest.mark.parametrize("mode", ["receive", "direct"])
def test_bench_sink(mode, bins, pg, tmp_path):
    """kwal-bench-sink writes the same records through sqlite and postgresql:
    exit 0 (it checks every run stored all), one table row per sink, and the
    server holds exactly the records of its run's topic."""
    prog = os.path.join(bins.dir, "kwal-bench-sink")
    db = str(tmp_path / "bench.db")
    rc, out, err = proc.run([prog, "--sink", f"sqlite:{db}", "--sink", f"postgresql:{pg.conninfo}",
                             "--records", "3000", "--batch", "700", "--partitions", "3",
                             "--mode", mode, "--repeat", "1"], 300)
    assert rc == 0, (rc, out, err)
    rows = [ln.split("|")[1:-1] for ln in out.splitlines()
            if ln.startswith("| ") and not ln.startswith(("| sink", "| ---"))]
    assert [r[0].strip() for r in rows] == [f"sqlite:{db}", f"postgresql:{pg.conninfo}"], out
    for r in rows:
        assert float(r[1]) > 0 and float(r[3]) >= 0 and float(r[4]) > 0, r
    assert rows[0][5].strip() == "1.00x", rows
    assert pg.sql("SELECT topic, COUNT(*), COUNT(DISTINCT (partition, \"offset\")) "
                  "FROM records GROUP BY topic") == [[pg.value("SELECT MIN(topic) FROM records"),
                                                      "3000", "3000"]]
    if mode == "direct":
        assert pg.value("SELECT SUM(until_offset - from_offset) FROM direct_ranges") == "3000"
