"""scale -- kwal at many partitions (tools/bench/bench-scale; `--help` has
the options): every partition owned and balanced over several instances, a
rolling restart and a SIGKILL with nothing lost and nothing stored twice,
and what partitions cost -- ZooKeeper writes per second from the server's
own counters, memory, CPU.

On a local ZooKeeper (kwal-zk-local) and a 1-node local Apache Kafka cluster
(or the cluster of -c FILE), per mode (--modes) and per partition count
(--compare first, then --partitions), one cell:

  1. a topic of P partitions and a group of the cell's own; kwal-loadgen
     produces --records records before the instances start (flat out), then
     --rate records/s in the background until the cell's end (one run id,
     the sequence numbers going on; the keys spread the records over every
     partition through librdkafka's partitioner);
  2. --instances K instances of `kwal MODE --stats-json`, each with its own
     instance.id; receive: each its own wal.dirs and sqlite sink; direct:
     one sqlite sink shared by all (direct mode's exactly-once store, the
     instances share the partitions through ZooKeeper);
  3. settle: every partition's owner node (/consumers/<group>/owners/<topic>/<p>,
     data: the instance's name) is there, every running instance has
     registered (zk_session_ms), and the owners stayed the same for --stable
     seconds (receive: each instance's partitions_owned statistic equals its
     owner nodes) with every instance owning some, or for --idle-stable
     seconds if one owns none. Checks: all owned; each instance's count
     within one of P/K;
  4. steady state: the records not yet stored (Kafka's end offsets less the
     ZooKeeper offsets) within what --rate adds in two offset updates
     (receive: two block.interval.ms, direct: two batch.interval.ms, as
     `kwal config` reads them) plus a second, twice in a row; --warmup
     seconds later, a window of --window seconds. At both ends: ZooKeeper's
     Zxid (`srvr`: one per committed write transaction, a multi is one) and
     mntr's counters, asked over the four-letter-word socket, which opens no
     session and so writes nothing (kwalh.measure.zk_server_counters); each
     instance's statistics (zk_writes, blocks_durable, batches,
     records_stored, wal_bytes, wal_fsyncs, over its own uptime_ms) and its
     CPU seconds (/proc/PID/stat). No session is opened by this runner
     during the window;
  5. a rolling restart: each instance in turn is stopped with SIGTERM (it
     must exit 0), started again and the group settled; then the second
     instance is SIGKILLed, started again at once and the group settled.
     The producer runs all along;
  6. the producer stops (what it delivered is a prefix of its sequence
     numbers); every partition's ZooKeeper offset must reach Kafka's end
     offset; the instances stop with SIGTERM (exit 0) and the offsets must
     still be the end offsets; kwal-verify pools the cell's sinks: every
     record produced stored exactly once.

Memory: each instance's resident set (VmRSS) sampled every second of the
window, its mean, then the mean over the instances; and the peak RSS of each
instance's first process, which ran the window (os.wait4's ru_maxrss,
kwalh.measure.spawn_measured), which also holds what catching up a backlog
took (a batch of up to batch.max.bytes). Per partition, by mode, from each:
(mean at P - mean at --compare) / (P/K - compare/K), the partitions an
instance owns on average. It counts what grows with the topic's partitions
as a whole (metadata, per-partition state, buffers), not only with those
owned. CPU: the window's, per cell (all instances), and every process of
the cell from start to exit (ru_utime + ru_stime). Records/s: what the
instances stored in the window (their records_stored, which moves a batch at
a time: up to a batch per instance off at each end) next to what Kafka
received (its end offsets).

With -c FILE the cluster's ZooKeeper is shared with whatever else uses it:
its Zxid then counts their writes too.

Output in --out DIR (default ./kwal-bench-scale-<date-time>): scale.md
(the command, the tables, the checks), scale.csv (one row per cell),
scale.json (every figure, settle and check), and per cell its configuration
files, logs, statistics, kwal-verify's output and history.jsonl (what the
runner did, kwalh.history). WALs and sink databases are deleted after the
cell unless --keep. One line "bench_scale:" per cell and one
"bench_scale_per_partition:" per mode on stdout.

Exit status: 0 when every check of every cell passed, 1 otherwise, 2 for bad
arguments.
"""

import argparse
import collections
import json
import os
import shlex
import shutil
import signal
import struct
import sys
import time
import random
from dataclasses import asdict

from . import proc, services
from .checkers import Check
from .history import History
from .kwal import Kwal, cluster_of, write_conf
from .measure import ZkError, ZkReader, kill_live, spawn_measured, zk_server_counters
from .workload import Loadgen, read_manifest, verify

PROG = "bench-scale"
MODES = ("receive", "direct")
STOP_GRACE_S = 60                 # SIGTERM -> SIGKILL
POLL_S = 0.25                     # owner and offset polls
CSV_KEYS = ("mode", "partitions", "instances", "rate", "window_s", "zxid_delta",
            "zk_writes_per_s", "mntr_writes_per_s", "zk_fsyncs_per_s", "zk_bytes_per_write",
            "kwal_zk_writes_per_s", "blocks_per_s", "batches_per_s", "zk_writes_per_unit",
            "lag_at_window", "records_per_s", "produced_per_s", "wal_mb_per_s",
            "wal_fsyncs_per_s", "owned_min", "owned_max", "balance", "rss_window_mib",
            "peak_rss_mib_mean", "peak_rss_mib_max",
            "cpu_window_s", "cpu_window_pct", "cpu_total_s", "settle_start_s",
            "settle_restart_max_s", "settle_kill_s", "produced", "stored", "missing", "dups",
            "zk_at_end", "ok")


UsageError = proc.UsageError
_Parser = proc.ArgParser


def parse_args(argv):
    p = _Parser(prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
                description="kwal at many partitions, per mode: every partition owned and\n"
                "balanced over several instances, a rolling restart and a SIGKILL with\n"
                "nothing lost or stored twice, and ZooKeeper writes per second (from the\n"
                "server's own counters), memory and CPU at --compare and at --partitions\n"
                "partitions, on a local ZooKeeper and Apache Kafka (or -c FILE's).",
                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("-c", dest="conf", metavar="FILE",
                   help="use the cluster of this kwal configuration (kafka.bootstrap.servers, "
                   "zookeeper.connect) instead of starting one")
    p.add_argument("--modes", default="receive,direct", help="comma-separated: receive, direct "
                   "(default both)")
    p.add_argument("--partitions", type=int, default=1000,
                   help="partitions of the topic (default 1000)")
    p.add_argument("--compare", type=int, default=64,
                   help="first the same with this many partitions, for the per-partition "
                   "figures (default 64; 0: none)")
    p.add_argument("--instances", type=int, default=3, help="instances per mode (default 3)")
    p.add_argument("--records", type=int, default=0,
                   help="records produced before the instances start (default 0)")
    p.add_argument("--rate", type=int, default=2000,
                   help="records/s produced while the instances run (default 2000)")
    p.add_argument("--size", type=int, default=100, help="record size in bytes (default 100)")
    p.add_argument("--window", type=float, default=30.0,
                   help="seconds of the steady-state window (default 30)")
    p.add_argument("--warmup", type=float, default=5.0,
                   help="seconds between steady state and the window (default 5)")
    p.add_argument("--stable", type=float, default=5.0,
                   help="seconds the owners must stay the same to count as settled "
                   "(default 5)")
    p.add_argument("--idle-stable", type=float, default=20.0,
                   help="the same while an instance owns nothing (default 20)")
    p.add_argument("--settle-timeout", type=float, default=180.0,
                   help="seconds a settle or the final catch-up may take (default 180)")
    p.add_argument("-X", dest="xargs", action="append", default=[], metavar="KEY=VALUE",
                   help="a setting for every kwal instance (repeatable)")
    p.add_argument("--build", help="the build directory of the programs measured")
    p.add_argument("-o", "--out", help="the output directory (default "
                   "./kwal-bench-scale-<date-time>)")
    p.add_argument("--keep", action="store_true", help="keep WALs and sink databases")
    p.add_argument("--seed", type=int, default=None, help="random seed of the run ids")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    a = p.parse_args(argv)
    a.mode_list = [m for m in a.modes.split(",") if m]
    if not a.mode_list:
        raise UsageError("--modes: empty")
    for m in a.mode_list:
        if m not in MODES:
            raise UsageError("--modes: '%s': one of %s" % (m, ", ".join(MODES)))
    for name, low in (("partitions", 1), ("compare", 0), ("instances", 1), ("records", 0),
                      ("rate", 0), ("size", 69)):
        if getattr(a, name) < low:
            raise UsageError("--%s: at least %d" % (name, low))
    if a.compare >= a.partitions:
        raise UsageError("--compare: fewer than --partitions (%d)" % a.partitions)
    if a.rate == 0 and a.records == 0:
        raise UsageError("--rate and --records are both 0: nothing to store")
    for name in ("window", "warmup", "stable", "idle_stable", "settle_timeout"):
        v = getattr(a, name)
        if not (v >= 0 and v < float("inf")) or (name in ("window", "settle_timeout")
                                                  and v <= 0):
            raise UsageError("--%s: out of range" % name.replace("_", "-"))
    for x in a.xargs:
        if "=" not in x or x.startswith("="):
            raise UsageError("-X %s: expected KEY=VALUE" % x)
    a.counts = ([a.compare] if a.compare else []) + [a.partitions]
    return a


# --- what this runner reads ---------------------------------------------------------

def split_connect(connect):
    """(hosts, chroot) of a zookeeper.connect string ("" when no chroot)."""
    hosts, _, chroot = connect.partition("/")
    return hosts, ("/" + chroot.rstrip("/")) if chroot else ""


def proc_cpu_s(pid):
    """CPU seconds (user + system) a running process has used so far, or
    None when it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            s = f.read()
    except OSError:
        return None
    w = s[s.rindex(")") + 2:].split()     # from field 3 (state) on
    return (int(w[11]) + int(w[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_kib(pid):
    """A running process's resident set (VmRSS) in KiB, or None."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def kcat_end_offsets(bs, topic, partitions, timeout=60):
    """{partition: end offset} of every partition, by one kcat -Q
    (ListOffsets, timestamp -1), or None when kcat cannot say."""
    argv = ["kcat", "-Q", "-b", bs, "-J", "-m", "10"]
    for p in range(partitions):
        argv += ["-t", "%s:%d:-1" % (topic, p)]
    rc, out, _ = proc.run(argv, timeout)
    if rc != 0:
        return None
    try:
        got = json.loads(out.strip().splitlines()[-1])[topic]
    except (ValueError, IndexError, KeyError):
        return None
    res = {}
    for v in got.values():
        if isinstance(v, dict) and "partition" in v and "error" not in v:
            res[int(v["partition"])] = int(v["offset"])
    return res if len(res) == partitions else None


def rate(delta, seconds):
    return round(delta / seconds, 3) if seconds > 0 else None


def mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


# --- one instance -------------------------------------------------------------------

class Instance:
    """One kwal instance of a cell: its configuration, and its processes
    (a new one per start), each started by spawn_measured so that its own
    CPU and peak RSS are known when it is reaped."""

    def __init__(self, cell, n, settings):
        self.cell = cell
        self.n = n
        self.name = "%s-i%d" % (cell.name, n)
        self.d = os.path.join(cell.d, "i%d" % n)
        os.makedirs(self.d)
        self.conf = os.path.join(self.d, "kwal.conf")
        write_conf(self.conf, dict(settings, **{"instance.id": self.name}),
                   comment="%s %s instance %d" % (PROG, cell.name, n))
        self.runs = 0
        self.k = None               # the current process's Kwal (argv, statistics, log)
        self.ch = None              # ... and its measure.Child
        self.procs = []             # per process that ended: run, pid, how, rc, cpu_s, rss_kib

    def start(self):
        self.runs += 1
        b = self.cell.b
        self.k = Kwal(b.bins, [self.cell.mode], self.conf,
                      os.path.join(self.d, "run%d" % self.runs), b.xargs)
        self.ch = spawn_measured(self.k.argv(), stdout=self.k.base + ".out", stderr=self.k.log)
        self.cell.h.add("start", instance=self.n, run=self.runs, pid=self.ch.pid)
        return self

    def alive(self):
        return self.ch is not None and self.ch.poll() is None

    def stats(self):
        return (self.k.stats() if self.k else None) or {}

    def registered(self):
        return self.stats().get("zk_session_ms", -1) >= 0

    def _ended(self, how):
        ru = self.ch.ru
        e = {"instance": self.n, "run": self.runs, "pid": self.ch.pid, "how": how,
             "rc": self.ch.rc, "cpu_s": round(ru.ru_utime + ru.ru_stime, 3) if ru else None,
             "rss_kib": ru.ru_maxrss if ru else None, "stats": self.k.stats()}
        self.procs.append(e)
        self.cell.h.add("end", **e)
        return e

    def stop(self):
        """SIGTERM (SIGKILL after STOP_GRACE_S); the ended process's record."""
        self.ch.stop(STOP_GRACE_S)
        return self._ended("sigterm")

    def kill(self):
        self.ch.signal(signal.SIGKILL)
        self.ch.wait()
        return self._ended("sigkill")


# --- one cell: a mode at a partition count ------------------------------------------

class Cell:
    def __init__(self, bench, mode, partitions):
        self.b = bench
        self.a = bench.a
        self.mode = mode
        self.P = partitions
        self.K = self.a.instances
        self.name = "%s-%d" % (mode, partitions)
        self.d = os.path.join(bench.out, self.name)
        os.makedirs(self.d)
        self.topic = "scale-%s-%s" % (self.name, bench.stamp)
        self.group = "scale-%s-%s" % (self.name, bench.stamp)
        self.run_id = "%016x" % bench.rng.getrandbits(64)
        self.h = History()
        self.instances = []
        self.settles = []
        self.checks = {n: Check(n) for n in ("run", "producer", "owned", "balanced",
                                             "steady", "restarts", "no_loss",
                                             "no_dup_stored", "zk_offsets")}
        self.fig = {"mode": mode, "partitions": partitions, "instances": self.K,
                    "rate": self.a.rate}
        hosts, self.chroot = split_connect(bench.zk_connect)
        self.zk_hosts = hosts
        base = "%s/consumers/%s" % (self.chroot, self.group)
        self.owner_paths = ["%s/owners/%s/%d" % (base, self.topic, p) for p in range(self.P)]
        self.offset_paths = ["%s/offsets/%s/%d" % (base, self.topic, p) for p in range(self.P)]
        self.lg = None

    def say(self, msg):
        self.b.progress("%s: %s" % (self.name, msg))

    def fail(self, check, why):
        self.checks[check].fail(why)
        self.h.add("note", check=check, message=why)
        self.say("FAILED %s: %s" % (check, why))

    # --- set-up

    def settings(self):
        b = self.b
        s = {"group.id": self.group, "topics": self.topic, "zookeeper.connect": b.zk_connect,
             "kafka.bootstrap.servers": b.bs, "auto.offset.reset": "earliest"}
        return s

    def instance_settings(self, n):
        s = self.settings()
        if self.mode == "receive":
            s["wal.dirs"] = os.path.join(self.d, "i%d" % n, "wal")
            s["sink"] = "sqlite:" + os.path.join(self.d, "i%d" % n, "out.db")
        else:
            s["sink"] = "sqlite:" + os.path.join(self.d, "direct.db")
        for x in self.a.xargs:
            k, v = x.split("=", 1)
            s[k] = v
        return s

    def sinks(self):
        if self.mode == "receive":
            return [os.path.join(self.d, "i%d" % i.n, "out.db") for i in self.instances]
        return [os.path.join(self.d, "direct.db")]

    def produce(self):
        a, b = self.a, self.b
        if a.records:
            lg = Loadgen(b.bins, b.bs, self.topic, a.records, os.path.join(self.d, "prefill.m"),
                         os.path.join(self.d, "prefill"), size=a.size, run_id=self.run_id)
            t0 = time.monotonic()
            rc = lg.run(max(300, a.records / 1000))
            got = read_manifest(lg.manifest).get("delivered")
            self.h.add("produce", phase="prefill", rc=rc, delivered=got)
            if rc != 0 or got != str(a.records):
                raise proc.HarnessError("kwal-loadgen (%d records before the start) exit %s, "
                                        "delivered %s (%s.err)" % (a.records, rc, got, lg.base))
            self.say("produced %d records in %.1f s before the start"
                     % (a.records, time.monotonic() - t0))
        if a.rate:
            # more than a cell can take: it is stopped at the end
            self.lg = Loadgen(b.bins, b.bs, self.topic, a.rate * 36000,
                              os.path.join(self.d, "lg.m"), os.path.join(self.d, "lg"),
                              size=a.size, run_id=self.run_id, rate=a.rate)
            self.lg.argv += ["--first", str(a.records)]
            self.lg.start()
            self.h.add("produce", phase="start", rate=a.rate, first=a.records)

    # --- what ZooKeeper says

    def reader(self):
        try:
            return ZkReader(self.zk_hosts)
        except (OSError, ZkError) as e:
            raise proc.HarnessError("ZooKeeper at %s: %s" % (self.zk_hosts, e))

    def read(self, r, paths):
        """[data or None] of paths, in order."""
        try:
            got = r.get_many(paths)
        except (OSError, ZkError, struct.error) as e:
            raise proc.HarnessError("ZooKeeper read: %s" % e)
        return [got[p][0] if got.get(p) is not None else None for p in paths]

    def offsets(self, r):
        return [int(v) if v is not None and v.isdigit() else None
                for v in self.read(r, self.offset_paths)]

    # --- settling

    def settle(self, phase):
        """Wait until the group has settled (see the top); judge ownership and
        balance there. The settle's record."""
        a = self.a
        t0 = time.monotonic()
        deadline = t0 + a.settle_timeout
        r = self.reader()
        last, since, why = None, None, "no poll yet"
        res = {"phase": phase, "ok": False}
        try:
            while True:
                owners = self.read(r, self.owner_paths)
                now = time.monotonic()
                live = [i for i in self.instances if i.alive()]
                counts = collections.Counter(o for o in owners if o is not None)
                dead = [i.n for i in self.instances if not i.alive()]
                if dead:
                    why = "instance(s) %s exited" % dead
                    break
                state = (tuple(owners),
                         tuple(i.stats().get("partitions_owned") for i in live)
                         if self.mode == "receive" else ())
                if state != last:
                    last, since = state, now
                unowned = sum(1 for o in owners if o is None)
                unregistered = [i.n for i in live if not i.registered()]
                disagree = [i.n for i in live if self.mode == "receive"
                            and i.stats().get("partitions_owned") != counts.get(i.name, 0)]
                idle = [i.n for i in live if counts.get(i.name, 0) == 0]
                stable = now - since
                if unowned:
                    why = "%d partitions without an owner" % unowned
                elif unregistered:
                    why = "instance(s) %s not registered" % unregistered
                elif disagree:
                    why = "instance(s) %s: partitions_owned != owner nodes" % disagree
                elif stable >= (a.idle_stable if idle and self.P >= self.K else a.stable):
                    res["ok"] = True
                    res["idle"] = idle
                    break
                else:
                    why = "owners changed %.1f s ago" % stable
                if now > deadline:
                    break
                time.sleep(POLL_S)
        finally:
            r.close()
        # settled when the last change happened, not when it was seen to last
        res["seconds"] = round((since if res["ok"] else time.monotonic()) - t0, 1)
        res["counts"] = {i.n: counts.get(i.name, 0) for i in self.instances}
        res["unowned"] = sum(1 for o in owners if o is None)
        res["foreign"] = sum(n for name, n in counts.items()
                             if name not in {i.name for i in self.instances})
        self.settles.append(res)
        self.h.add("settle", **res)
        if not res["ok"]:
            self.fail("owned" if res["unowned"] else "restarts",
                      "%s: not settled within %g s: %s" % (phase, a.settle_timeout, why))
        self.judge_balance(res)
        self.say("%s: settled in %.1f s (%s), owned %s"
                 % (phase, res["seconds"], "ok" if res["ok"] else why,
                    "/".join(str(c) for c in res["counts"].values())))
        return res

    def judge_balance(self, s):
        lo, hi = self.P // self.K, -(-self.P // self.K)
        if s["unowned"]:
            self.fail("owned", "%s: %d of %d partitions without an owner"
                      % (s["phase"], s["unowned"], self.P))
        bad = {n: c for n, c in s["counts"].items() if not lo <= c <= hi}
        if bad:
            self.fail("balanced", "%s: owned per instance %s, not within one of %d/%d"
                      % (s["phase"], "/".join(str(c) for c in s["counts"].values()),
                         self.P, self.K))

    # --- the window

    def intervals(self):
        """(block.interval.ms, batch.interval.ms) in seconds, as kwal reads
        them from the first instance's configuration (`kwal config`)."""
        rc, out, err = proc.run([self.b.bins.kwal, "config", "-c", self.instances[0].conf]
                                + self.b.xargs, 30)
        if rc != 0:
            raise proc.HarnessError("kwal config -c %s: %s" % (self.instances[0].conf,
                                                                 err.strip()[-300:]))
        conf = dict(ln.split("=", 1) for ln in out.splitlines()
                    if "=" in ln and not ln.startswith("#"))
        return (int(conf["block.interval.ms"]) / 1000.0,
                int(conf["batch.interval.ms"]) / 1000.0)

    def wait_steady(self):
        """Until the records not yet stored (Kafka's end offsets less the
        ZooKeeper offsets, summed) stay within what the rate adds between two
        offset updates -- receive: two blocks, direct: two batches -- plus a
        second, twice in a row: the backlog (--records, and what came while
        the group formed) is stored. The lag then."""
        a = self.a
        block_s, batch_s = self.intervals()
        bound = a.rate * (2 * (block_s if self.mode == "receive" else batch_s) + 1)
        deadline = time.monotonic() + a.settle_timeout
        r = self.reader()
        ok, lag = 0, None
        try:
            while time.monotonic() < deadline and ok < 2:
                ends = kcat_end_offsets(self.b.bs, self.topic, self.P)
                offs = self.offsets(r)
                if ends is not None:
                    lag = sum(ends.values()) - sum(o or 0 for o in offs)
                    ok = ok + 1 if lag <= bound else 0
                time.sleep(1.0)
        finally:
            r.close()
        self.fig["lag_at_window"] = lag
        self.h.add("steady", ok=ok >= 2, lag=lag, bound=bound)
        if ok < 2:
            self.fail("steady", "%s records not stored after %g s (steady: at most %d)"
                      % (lag, a.settle_timeout, bound))
        else:
            self.say("steady: %d records not stored yet (at most %d)" % (lag, bound))

    def snapshot(self):
        ends = kcat_end_offsets(self.b.bs, self.topic, self.P)
        return {"t": time.monotonic(), "zk": zk_server_counters(self.zk_hosts),
                "produced": sum(ends.values()) if ends else None,
                "stats": {i.n: dict(i.stats()) for i in self.instances},
                "cpu": {i.n: proc_cpu_s(i.ch.pid) for i in self.instances},
                "pids": {i.n: i.ch.pid for i in self.instances}}

    def window(self):
        a = self.a
        self.say("window of %g s" % a.window)
        s0 = self.snapshot()
        rss = collections.defaultdict(list)        # instance -> VmRSS samples, KiB
        end = s0["t"] + a.window
        while time.monotonic() < end:
            for i in self.instances:
                v = proc_rss_kib(i.ch.pid)
                if v is not None:
                    rss[i.n].append(v)
            time.sleep(min(1.0, max(0.0, end - time.monotonic())))
        s1 = self.snapshot()
        f = self.fig
        secs = s1["t"] - s0["t"]
        f["window_s"] = round(secs, 2)
        z0, z1 = s0["zk"], s1["zk"]
        if z0.get("epoch") != z1.get("epoch"):
            raise proc.HarnessError("ZooKeeper's epoch changed during the window")
        f["zxid_delta"] = z1["zxid"] - z0["zxid"]
        f["zk_writes_per_s"] = rate(f["zxid_delta"], secs)
        for k, name in (("writes", "mntr_writes_per_s"), ("fsyncs", "zk_fsyncs_per_s")):
            if k in z0 and k in z1:
                f[name] = rate(z1[k] - z0[k], secs)
        if f["zxid_delta"] and "bytes_received" in z0:
            f["zk_bytes_per_write"] = round((z1["bytes_received"] - z0["bytes_received"])
                                            / f["zxid_delta"])
        f["zk_counters"] = {"start": z0, "end": z1}

        def per_s(key):
            # each instance's counter over its own uptime (its statistics are
            # up to a second old when read, both ends alike)
            total = 0.0
            for n in s0["stats"]:
                a0, a1 = s0["stats"][n], s1["stats"][n]
                dt = (a1.get("uptime_ms", 0) - a0.get("uptime_ms", 0)) / 1000.0
                if dt > 0:
                    total += (a1.get(key, 0) - a0.get(key, 0)) / dt
            return round(total, 3)
        f["kwal_zk_writes_per_s"] = per_s("zk_writes")
        f["blocks_per_s"] = per_s("blocks_durable")
        f["batches_per_s"] = per_s("batches")
        f["records_per_s"] = per_s("records_stored")
        if s0["produced"] is not None and s1["produced"] is not None:
            f["produced_per_s"] = rate(s1["produced"] - s0["produced"], secs)
        # the resident set in steady state: each instance's mean over the
        # window, then the mean over the instances
        f["rss_window_kib"] = {n: round(mean(v)) for n, v in rss.items() if v}
        if f["rss_window_kib"]:
            f["rss_window_mib"] = round(mean(f["rss_window_kib"].values()) / 1024.0, 2)
        f["wal_mb_per_s"] = round(per_s("wal_bytes") / 1e6, 3)
        f["wal_fsyncs_per_s"] = per_s("wal_fsyncs")
        unit = f["blocks_per_s"] if self.mode == "receive" else f["batches_per_s"]
        f["zk_writes_per_unit"] = round(f["zk_writes_per_s"] / unit, 3) if unit else None
        cpu = [s1["cpu"][n] - s0["cpu"][n] for n in s0["cpu"]
               if s0["cpu"][n] is not None and s1["cpu"][n] is not None]
        f["cpu_window_s"] = round(sum(cpu), 2)
        f["cpu_window_pct"] = round(100 * sum(cpu) / secs, 1)
        if s0["pids"] != s1["pids"] or len(cpu) != len(self.instances):
            self.fail("restarts", "an instance ended during the window")
        self.h.add("window", **{k: v for k, v in f.items() if k != "zk_counters"})
        self.say("Zxid +%d in %.1f s: %s writes/s (mntr %s/s); kwal zk_writes %s/s; "
                 "blocks %s/s, batches %s/s; %s records/s"
                 % (f["zxid_delta"], secs, f["zk_writes_per_s"], f.get("mntr_writes_per_s"),
                    f["kwal_zk_writes_per_s"], f["blocks_per_s"], f["batches_per_s"],
                    f["records_per_s"]))

    # --- faults

    def rolling_restart(self):
        for i in self.instances:
            e = i.stop()
            if e["rc"] != 0:
                self.fail("restarts", "instance %d exited %s after SIGTERM (%s)"
                          % (i.n, proc.exit_word(e["rc"]), i.k.log_tail(2)))
            i.start()
            self.settle("restart i%d" % i.n)

    def kill_one(self):
        i = self.instances[1 % self.K]
        i.kill()
        i.start()
        self.settle("kill i%d" % i.n)

    # --- the end

    def catch_up(self):
        """Stop the producer; wait until every ZooKeeper offset is Kafka's
        end offset. The end offsets."""
        b, a = self.b, self.a
        delivered = a.records
        if self.lg is not None:
            rc = self.lg.stop()
            man = read_manifest(self.lg.manifest)
            delivered += int(man.get("delivered", 0))
            self.h.add("produce", phase="end", rc=rc, delivered=man.get("delivered"))
            if man.get("delivered") is None:
                self.fail("producer", "kwal-loadgen left no manifest (exit %s)" % rc)
        self.fig["produced"] = delivered
        ends = kcat_end_offsets(b.bs, self.topic, self.P)
        if ends is None:
            self.fail("zk_offsets", "kcat -Q cannot read the end offsets of %s" % self.topic)
            return None
        if sum(ends.values()) < delivered:
            self.fail("producer", "Kafka holds %d records, the producer delivered %d"
                      % (sum(ends.values()), delivered))
        deadline = time.monotonic() + a.settle_timeout
        r = self.reader()
        try:
            while True:
                offs = self.offsets(r)
                behind = [p for p in range(self.P) if (offs[p] or 0) != ends[p]]
                if not behind:
                    break
                if time.monotonic() > deadline or not all(i.alive() for i in self.instances):
                    self.fail("zk_offsets", "%d partitions short of Kafka's end offsets "
                              "(first: %s)" % (len(behind), ", ".join(
                                  "%d:%s/%d" % (p, offs[p], ends[p]) for p in behind[:5])))
                    break
                time.sleep(POLL_S)
        finally:
            r.close()
        return ends

    def finish(self, ends):
        for i in self.instances:
            e = i.stop()
            if e["rc"] != 0:
                self.fail("restarts", "instance %d exited %s at the end (%s)"
                          % (i.n, proc.exit_word(e["rc"]), i.k.log_tail(2)))
        if ends is not None:
            r = self.reader()
            try:
                offs = self.offsets(r)
            finally:
                r.close()
            bad = [p for p in range(self.P) if offs[p] != ends[p]]
            self.h.add("observe", what="zk-offsets", behind=len(bad))
            if bad and self.checks["zk_offsets"].ok:
                self.fail("zk_offsets", "after the stop %d partitions' offsets are not "
                          "Kafka's end offsets (first: %s)" % (len(bad), ", ".join(
                              "%d:%s/%d" % (p, offs[p], ends[p]) for p in bad[:5])))
            self.fig["zk_at_end"] = int(not bad)
        v = verify(self.b.bins, expect=self.fig["produced"], run_id=self.run_id,
                   topic=self.topic, sqlite=[s for s in self.sinks() if os.path.exists(s)],
                   save=os.path.join(self.d, "verify.txt"))
        self.h.add("observe", what="verify", **v.as_dict())
        if not v.ok:
            self.fail("no_loss", "kwal-verify: %s" % (v.err.strip()[-300:] or "no summary"))
            return
        self.fig.update(stored=v["stored"], missing=v["missing"],
                        dups=v["duplicates"] + v["duplicate_offsets"])
        if v["missing"] or v["corrupt"]:
            self.fail("no_loss", "kwal-verify: missing=%d corrupt=%d (verify.txt)"
                      % (v["missing"], v["corrupt"]))
        if self.fig["dups"]:
            self.fail("no_dup_stored", "kwal-verify: duplicates=%d duplicate_offsets=%d"
                      % (v["duplicates"], v["duplicate_offsets"]))

    # --- the whole cell

    def run(self):
        a = self.a
        self.say("topic of %d partitions, %d instances, %d records/s"
                 % (self.P, self.K, a.rate))
        self.b.create_topic(self.topic, self.P)
        try:
            self.produce()
            for n in range(1, self.K + 1):
                self.instances.append(Instance(self, n, self.instance_settings(n)))
            for i in self.instances:
                i.start()
            self.settle("start")
            self.fig["owned_per_instance"] = dict(self.settles[-1]["counts"])
            self.wait_steady()
            time.sleep(a.warmup)
            self.window()
            self.rolling_restart()
            self.kill_one()
            self.finish(self.catch_up())
        except (proc.HarnessError, ZkError) as e:
            self.fail("run", str(e))
        finally:
            for i in self.instances:
                if i.alive():
                    i.kill()
            if self.lg is not None:
                self.lg.stop()
            self.h.dump(os.path.join(self.d, "history.jsonl"))
            if not a.keep:
                for i in self.instances:
                    shutil.rmtree(os.path.join(i.d, "wal"), ignore_errors=True)
                for s in self.sinks():
                    for f in (s, s + "-wal", s + "-shm"):
                        if os.path.exists(f):
                            os.unlink(f)
        self.figures()

    def figures(self):
        f = self.fig
        owned = list(f.get("owned_per_instance", {}).values())
        f["owned_min"] = min(owned) if owned else None
        f["owned_max"] = max(owned) if owned else None
        f["balance"] = "/".join(str(c) for c in owned)
        first = [e for e in (next((e for e in i.procs if e["run"] == 1), None)
                             for i in self.instances) if e and e["rss_kib"]]
        rss = [e["rss_kib"] for e in first]
        f["rss_kib"] = {e["instance"]: e["rss_kib"] for e in first}
        f["peak_rss_mib_mean"] = round(mean(rss) / 1024.0, 2) if rss else None
        f["peak_rss_mib_max"] = round(max(rss) / 1024.0, 2) if rss else None
        f["cpu_total_s"] = round(sum(e["cpu_s"] or 0 for i in self.instances
                                     for e in i.procs), 2)
        st = {s["phase"]: s["seconds"] for s in self.settles}
        f["settle_start_s"] = st.get("start")
        rs = [v for k, v in st.items() if k.startswith("restart")]
        f["settle_restart_max_s"] = max(rs) if rs else None
        f["settle_kill_s"] = next((v for k, v in st.items() if k.startswith("kill")), None)
        f["ok"] = int(all(c.ok for c in self.checks.values()))
        return f


# --- the run --------------------------------------------------------------------------

class Scale:
    def __init__(self, a, bins):
        self.a = a
        self.bins = bins
        self.xargs = []
        self.stamp = time.strftime("%Y%m%d-%H%M%S")
        self.rng = random.Random(a.seed)
        self.out = None
        self.zk = self.kafka = self.tools = None
        self.zk_connect = self.bs = None
        self.cells = []

    def progress(self, msg):
        if not self.a.quiet:
            sys.stderr.write("%s: %s\n" % (PROG, msg))
            sys.stderr.flush()

    def command(self):
        a = self.a
        w = ["tools/bench/bench-scale", "--modes", ",".join(a.mode_list), "--partitions",
             str(a.partitions), "--compare", str(a.compare), "--instances", str(a.instances),
             "--records", str(a.records), "--rate", str(a.rate), "--size", str(a.size),
             "--window", "%g" % a.window, "--warmup", "%g" % a.warmup]
        if a.conf:
            w += ["-c", a.conf]
        for x in a.xargs:
            w += ["-X", x]
        if a.out:
            w += ["-o", a.out]
        return " ".join(shlex.quote(x) for x in w)

    def start_cluster(self):
        a = self.a
        if a.conf:
            try:
                self.bs, self.zk_connect = cluster_of(a.conf)
            except ValueError as e:
                raise UsageError(str(e))
            from .kafka import KafkaCluster     # for its tools (TopicCommand)
            self.tools = KafkaCluster(os.path.join(self.out, "kafka-tools"), nodes=1)
            self.progress("cluster: Kafka %s, ZooKeeper %s (from %s)"
                          % (self.bs, self.zk_connect, a.conf))
            return
        self.progress("starting a local ZooKeeper and a 1-node Kafka cluster...")
        self.zk, self.zk_connect, self.kafka, self.bs = services.start_local(
            self.bins, os.path.join(self.out, "zk"), os.path.join(self.out, "kafka"), nodes=1)

    def create_topic(self, name, partitions):
        services.create_topic(self.kafka, self.tools, self.bs, name, partitions)

    def main(self):
        a = self.a
        self.out = os.path.abspath(a.out or "kwal-bench-scale-%s" % self.stamp)
        os.makedirs(self.out, exist_ok=True)
        for x in a.xargs:
            self.xargs += ["-X", x]
        try:
            load = " ".join(open("/proc/loadavg").read().split()[:3])
        except OSError:
            load = "?"
        self.started = "load %s at start" % load
        self.t0 = time.monotonic()
        self.progress("%s; output %s" % (self.command(), self.out))
        self.start_cluster()
        zk_server_counters(split_connect(self.zk_connect)[0])   # the words answer, or fail now
        for mode in a.mode_list:
            for p in a.counts:
                c = Cell(self, mode, p)
                self.cells.append(c)
                c.run()
        return self.report()

    # --- the report

    def per_partition(self):
        """Per mode: memory per partition and the ratio of ZooKeeper writes,
        from the --compare cell to the --partitions cell."""
        res = []
        for mode in self.a.mode_list:
            cs = [c.fig for c in self.cells if c.mode == mode]
            if len(cs) != 2:
                continue
            lo, hi = cs
            r = {"mode": mode, "partitions": "%d,%d" % (lo["partitions"], hi["partitions"]),
                 "rss_kib_per_partition": None, "peak_rss_kib_per_partition": None,
                 "zk_writes_per_s_ratio": None}
            dp = (hi["partitions"] - lo["partitions"]) / float(self.a.instances)
            for key, name in (("rss_window_mib", "rss_kib_per_partition"),
                              ("peak_rss_mib_mean", "peak_rss_kib_per_partition")):
                if lo.get(key) is not None and hi.get(key) is not None:
                    r[name] = round((hi[key] - lo[key]) * 1024 / dp, 2)
            if lo.get("zk_writes_per_s") and hi.get("zk_writes_per_s") is not None:
                r["zk_writes_per_s_ratio"] = round(hi["zk_writes_per_s"]
                                                   / lo["zk_writes_per_s"], 3)
            res.append(r)
        return res

    def markdown(self, pp, took):
        a = self.a

        def v(x):
            return "" if x is None else x
        md = ["# bench-scale: kwal at %d partitions" % a.partitions, "",
              "`%s`" % self.command(), "",
              "%s; Kafka %s (1 node) and ZooKeeper %s; %s CPUs; %s; %s; %.0f s in all." % (
                  self.bins.version(), self.bs, self.zk_connect, os.cpu_count() or "?",
                  self.started, time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), took), "",
              "Per cell: %d instances; %d records of %d B before the start, then %d records/s "
              "all along; a window of %g s in steady state, then a rolling restart (SIGTERM, "
              "start, settle, each in turn) and one SIGKILL. ZooKeeper writes/s: the Zxid's "
              "growth over the window (one per committed transaction; a multi is one), mntr's "
              "zk_cnt_updatelatency beside it, and the request bytes the server received per "
              "write; kwal's zk_writes (its offset multis) from its statistics. Writes per "
              "block (receive) or batch (direct): ZooKeeper's writes/s over kwal's blocks/s or "
              "batches/s. Records/s: stored by the instances (a batch at a time) / received "
              "by Kafka. RSS: the instances' mean resident set in the window; the peak of "
              "each instance's first process (mean and max). CPU: all instances, in the "
              "window and in all." % (a.instances, a.records, a.size, a.rate, a.window), "",
              "| mode | partitions | owned per instance | ZK writes/s (Zxid) | Zxid delta / s "
              "| mntr writes/s | ZK B per write | kwal zk_writes/s | blocks/s | batches/s "
              "| ZK writes per block or batch | records/s stored / produced | WAL MB/s "
              "| RSS MiB in window | peak RSS MiB mean / max | CPU s window (%) | CPU s all "
              "| settle s start / restart max / kill | checks |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        cols = ("balance", "zk_writes_per_s", ("zxid_delta", "window_s"), "mntr_writes_per_s",
                "zk_bytes_per_write", "kwal_zk_writes_per_s", "blocks_per_s", "batches_per_s",
                "zk_writes_per_unit", ("records_per_s", "produced_per_s"), "wal_mb_per_s",
                "rss_window_mib", ("peak_rss_mib_mean", "peak_rss_mib_max"),
                ("cpu_window_s", "cpu_window_pct"), "cpu_total_s",
                ("settle_start_s", "settle_restart_max_s", "settle_kill_s"))
        for c in self.cells:
            f = c.fig
            cells = [c.mode, str(c.P)]
            for col in cols:
                if isinstance(col, tuple):
                    w = [str(v(f.get(k))) for k in col]
                    cells.append("%s (%s)" % tuple(w) if col[0] == "cpu_window_s"
                                 else " / ".join(w))
                else:
                    cells.append(str(v(f.get(col))))
            bad = [k.name for k in c.checks.values() if not k.ok]
            cells.append("ok" if not bad else "FAILED: " + ", ".join(bad))
            md.append("| " + " | ".join(cells) + " |")
        if pp:
            md += ["", "### Per partition", "",
                   "(mean RSS at the larger partition count - at the smaller) / (partitions an "
                   "instance owns more on average), from the RSS in the window and from the "
                   "peak RSS; and the ratio of ZooKeeper writes/s.", "",
                   "| mode | partitions | KiB per partition (window) | KiB per partition "
                   "(peak) | ZK writes/s ratio |", "|---|---|---|---|---|"]
            md += ["| %s | %s | %s | %s | %s |" % (
                r["mode"], r["partitions"], v(r["rss_kib_per_partition"]),
                v(r["peak_rss_kib_per_partition"]), v(r["zk_writes_per_s_ratio"])) for r in pp]
        md += ["", "### Checks", ""]
        for c in self.cells:
            f = c.fig
            md.append("- %s: produced %s, stored %s, missing %s, stored twice %s, ZooKeeper "
                      "at Kafka's end offsets %s; %s" % (
                          c.name, v(f.get("produced")), v(f.get("stored")),
                          v(f.get("missing")), v(f.get("dups")),
                          {1: "yes", 0: "no"}.get(f.get("zk_at_end"), "?"),
                          "; ".join("%s: %s" % (k.name, " | ".join(k.problems))
                                    for k in c.checks.values() if not k.ok) or "every check "
                          "passed"))
        return md

    def summary_lines(self, pp):
        def v(x):
            return "-" if x is None or x == "" else x
        out = []
        keys = ("balance", "window_s", "zxid_delta", "zk_writes_per_s", "mntr_writes_per_s",
                "kwal_zk_writes_per_s", "zk_writes_per_unit", "records_per_s",
                "produced_per_s", "rss_window_mib", "peak_rss_mib_mean", "cpu_window_s",
                "cpu_total_s", "missing", "dups")
        for c in self.cells:
            f = c.fig
            out.append("bench_scale: mode=%s partitions=%d instances=%d %s status=%s" % (
                c.mode, c.P, c.K, " ".join("%s=%s" % (k, v(f.get(k))) for k in keys),
                "ok" if f.get("ok") else "failed"))
        for r in pp:
            out.append("bench_scale_per_partition: " + " ".join(
                "%s=%s" % (k, v(r[k])) for k in ("mode", "partitions", "rss_kib_per_partition",
                                                 "peak_rss_kib_per_partition",
                                                 "zk_writes_per_s_ratio")))
        return out

    def report(self):
        figs = [c.fig for c in self.cells]
        pp = self.per_partition()
        took = time.monotonic() - self.t0
        md = self.markdown(pp, took)
        with open(os.path.join(self.out, "scale.md"), "w") as f:
            f.write("\n".join(md) + "\n")
        with open(os.path.join(self.out, "scale.csv"), "w") as f:
            f.write(",".join(CSV_KEYS) + "\n")
            for fig in figs:
                f.write(",".join("" if fig.get(k) is None else str(fig[k]) for k in CSV_KEYS)
                        + "\n")
        with open(os.path.join(self.out, "scale.json"), "w") as f:
            json.dump({"command": self.command(), "version": self.bins.version(),
                       "started": self.started, "seconds": round(took), "cells": figs,
                       "per_partition": pp,
                       "checks": [{"cell": c.name, **asdict(k)} for c in self.cells
                                  for k in c.checks.values()],
                       "settles": {c.name: c.settles for c in self.cells}}, f, indent=1)
        sys.stdout.write("\n".join(md) + "\n\n" + "\n".join(self.summary_lines(pp)) + "\n")
        sys.stdout.write("output: %s\n" % self.out)
        bad = [(c.name, k) for c in self.cells for k in c.checks.values() if not k.ok]
        for name, k in bad:
            sys.stderr.write("%s: %s: %s: %s\n" % (PROG, name, k.name, " | ".join(k.problems)))
        return 1 if bad else 0

    def cleanup(self):
        kill_live()
        proc.kill_all()
        for what in (self.kafka, self.zk):
            if what is not None:
                try:
                    what.stop()
                except Exception:      # noqa: BLE001 -- best effort at exit
                    pass
        if self.out and not self.a.keep:
            for sub in ("zk", "kafka", "kafka-tools"):
                shutil.rmtree(os.path.join(self.out, sub), ignore_errors=True)


def _on_term(sig, frame):
    raise SystemExit(143)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        a = parse_args(argv)
    except UsageError as e:
        sys.stderr.write("%s: %s\nTry '%s --help'.\n" % (PROG, e, PROG))
        return 2
    bins = proc.Bins(proc.bin_dir(a.build))
    try:
        bins.check("kwal", "loadgen", "verify", *([] if a.conf else ["zk_local"]))
        proc.need_commands("kcat")
        if "real" not in services.kafka_kinds_available():
            raise proc.HarnessError("Apache Kafka's jars are missing (tools/install-deps.sh "
                                    "fetches them)")
    except proc.HarnessError as e:
        sys.stderr.write("%s: %s\n" % (PROG, e))
        return 1
    s = Scale(a, bins)
    old = signal.signal(signal.SIGTERM, _on_term)
    try:
        return s.main()
    except UsageError as e:
        sys.stderr.write("%s: %s\nTry '%s --help'.\n" % (PROG, e, PROG))
        return 2
    except (proc.HarnessError, ZkError) as e:
        sys.stderr.write("%s: %s\n" % (PROG, e))
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("%s: interrupted\n" % PROG)
        return 130
    except SystemExit:
        sys.stderr.write("%s: terminated\n" % PROG)
        return 143
    finally:
        s.cleanup()
        signal.signal(signal.SIGTERM, old)
