"""bench -- receiver mode's end-to-end throughput next to kcat
(tools/bench/bench-receive; `--help` has the options).

Records/s ingested end to end by `kwal receive` (WAL on, 1 replica, `null`
sink) next to `kcat -G` consuming the same topic to /dev/null, in the same
invocation, as a ratio:

  1. starts a local ZooKeeper (kwal-zk-local) and a local Kafka cluster: a
     real Apache Kafka KRaft cluster (kwalh.kafka.KafkaCluster through
     kwalh.services; 1 node, or --brokers 3: RF 3, min.insync.replicas 2),
     or with --kafka mock the librdkafka mock cluster, with one topic of P
     partitions;
  2. produces the workload once, flat out, with kwal-loadgen (keyed, so the
     partitions fill evenly), then reads the whole topic once with `kcat -C`
     to learn and check it: N records, every partition from offset 0 without
     gaps (the mock keeps ~5 MiB per partition and silently drops older
     data; this catches that);
  3. K times, alternating so that machine noise hits both alike:
     a. kcat: `kcat -G <fresh group> -b BS -o beginning -e TOPIC >/dev/null`,
        timed from start to exit. kcat 1.7.1 in -G mode with -e exits once
        every assigned partition has reached its end; its stderr says so per
        partition ("Reached end of topic T [p] at offset X"), and "Group G
        rebalanced ... assigned: ..." when it got its partitions (the time
        "after assignment" starts when that line is read);
     b. kwal: `kwal receive --stats-json` with a fresh group.id, a fresh
        1-replica WAL, sink=null, auto.offset.reset=earliest, timed from
        start until every partition's offset in ZooKeeper
        (/consumers/<group>/offsets/<topic>/<p>) equals the partition's
        record count. The runner polls those znodes every 0.1 s over one
        ZooKeeper session of its own (ZkReader, a few lines of the wire
        protocol) and takes the end time from their Stat: the largest mtime,
        i.e. when ZooKeeper stored the last of them -- kwal's commit time,
        to the millisecond, whatever the polling interval. "After
        assignment" starts at the statistics' first_assignment_ms. kwal then
        gets SIGTERM.
  4. checks each run (below), prints per run the wall time, records/s, MB/s
     (payload bytes, MB = 10^6 B), the CPU seconds (user + system) and the
     peak RSS of the process (os.wait4's resource usage: ru_utime, ru_stime,
     ru_maxrss; kwal's include its stop after SIGTERM; each program is
     started through a small shell so that ru_maxrss is its own, see
     spawn_measured()), the ratio kwal/kcat per pair, then the medians and
     one summary line starting with "bench_receive:".

Numbers about kwal come from its --stats-json only (records_received,
first_assignment_ms, final); its log is kept for people, never read.

The pieces, kept apart as in the other runners:

  plan          Plan: the workload, the cluster, and the steps in the order
                they run (kcat 1, kwal 1, kcat 2, ...), each with its
                consumer group; written to plan.json before anything runs
  measurements  Measurement: what one step did and observed (times, the
                process's resource usage, exit status, kcat's end offsets,
                kwal's ZooKeeper offsets and final statistics), appended to
                measurements.jsonl; nothing in it is a verdict
  checks        check_workload(), check_topic(), check_kcat(), check_kwal():
                each reads the plan and measurements and returns a Check
                (kwalh.checkers) with its problems; written to checks.json.
                A pair counts in the medians only when both its checks pass.

Exit status: 0 when every run completed and was verified, 1 otherwise, 2
for bad arguments; 130/143 after SIGINT/SIGTERM (everything started is
stopped first). The work directory is removed unless --keep.
"""

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field

from . import proc, services
from .checkers import Check
from .kwal import Kwal, write_conf
from .workload import Loadgen, read_manifest

PROG = "tools/bench/bench-receive"
NAME = "bench-receive"
SUMMARY = "bench_receive"
TOPIC = "bench"
MOCK_RETENTION = 5 * 1024 * 1024      # bytes the mock keeps per partition, about
POLL_S = 0.1                          # ZooKeeper poll while kwal runs
STOP_GRACE_S = 60                     # SIGTERM -> SIGKILL for kwal

CSV_HEADER = ("run,side,group,ok,exit,wall_s,records_per_s,mb_per_s,after_assign_s,"
              "records_per_s_after_assign,cpu_user_s,cpu_sys_s,cpu_s,max_rss_kib,problems")

EPILOG = """\
Each run is verified: kcat must exit 0 having reached the end of every
partition from offset 0 (its "Reached end of topic ... at offset X" lines, X =
the partition's record count); kwal's offsets in ZooKeeper must equal every
partition's record count, and after SIGTERM it must exit 0 with final
statistics saying records_received = N. Per run it prints wall time,
records/s, MB/s, CPU seconds (user+sys) and peak RSS of the process; the last
line is one summary (rps and ratios are medians over the verified pairs):

  bench_receive: records=1000000 size=100 partitions=32 receivers=1 repeat=3
  pairs=3 kcat_rps=... kcat_mbs=... kwal_rps=... kwal_mbs=... ratio=...
  ratio_after_assign=... status=ok

(one line; rdkafka=... and kwal_settings=... follow pairs= when given).
ratio = kwal's records/s over kcat's. Both times include process start and
the group's join; "after assignment" leaves those out. librdkafka's
queued.min.messages (100,000) makes a consumer pause whenever its queue holds
that many records, which scatters both sides' times; `--rdkafka
queued.min.messages=10000000` lifts that for both. Work directory: plan.json,
measurements.jsonl, checks.json, bench.csv, and per run kcat's stderr, kwal's
configuration, log and statistics (--keep keeps it).

Exit 0 when every run was verified, 1 otherwise, 2 for bad arguments.
"""


class UsageError(Exception):
    pass


class Parser(argparse.ArgumentParser):
    """argparse, with a one-line reason on errors (the caller exits 2)."""

    def error(self, message):
        raise UsageError(re.sub(r"^argument [^ ]+: (?=-)", "", message))


def positive(name):
    def conv(s):
        if not s.isdigit() or int(s) <= 0:
            raise argparse.ArgumentTypeError("--%s must be a positive integer, got '%s'"
                                             % (name, s))
        return int(s)
    return conv


def kv_arg(opt):
    def conv(s):
        if "=" not in s or s.startswith("="):
            raise argparse.ArgumentTypeError("%s needs key=value, got '%s'" % (opt, s))
        if any(c.isspace() for c in s):
            raise argparse.ArgumentTypeError("%s %s: no spaces, please" % (opt, s))
        return s
    return conv


def parse_args(argv):
    p = Parser(prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
               description="Receiver mode's end-to-end throughput: N records of B bytes over P "
               "partitions ingested by `kwal receive` (WAL on, 1 replica, sink=null) from "
               "start until every offset is committed in ZooKeeper, next to `kcat -G GROUP -o "
               "beginning -e` consuming the same topic to /dev/null, alternating kcat, kwal, "
               "kcat, kwal, ... K times on a local ZooKeeper and a local Apache Kafka cluster "
               "(KRaft). Prints per run wall time, records/s, MB/s, CPU seconds and peak RSS, "
               "the ratio kwal/kcat per pair and the medians.", epilog=EPILOG)
    p.add_argument("-n", "--records", type=positive("records"), default=1000000,
                   help="records to produce (default 1000000)")
    p.add_argument("-s", "--size", type=positive("size"), default=100,
                   help="payload bytes per record, >= 69 (default 100)")
    p.add_argument("-p", "--partitions", type=positive("partitions"), default=32,
                   help="partitions of the topic (default 32)")
    p.add_argument("-r", "--receivers", type=positive("receivers"), default=1,
                   help="kwal receiver threads, receivers=R (default 1)")
    p.add_argument("-k", "--repeat", type=positive("repeat"), default=3,
                   help="kcat/kwal pairs (default 3)")
    p.add_argument("--brokers", type=int, choices=(1, 3), default=1,
                   help="nodes of the local Kafka cluster (default 1; 3: topic RF 3, "
                   "min.insync.replicas 2)")
    p.add_argument("--kafka", choices=("real", "mock"), default="real",
                   help="real (default): an Apache Kafka KRaft cluster (kwalh.kafka); mock: "
                   "librdkafka's mock cluster (kwal-kafka-mock; keeps ~5 MiB per partition)")
    p.add_argument("--build", metavar="DIR",
                   help="build directory, relative to the repository or absolute (binaries "
                   "in DIR/tools; default $KWAL_BIN_DIR, else build)")
    p.add_argument("--dir", metavar="DIR",
                   help="where the work directory (WALs, logs) is created, as a new "
                   "kwal-bench-receive.XXXXXX inside (default ${TMPDIR:-/tmp})")
    p.add_argument("--timeout", type=positive("timeout"), default=600, metavar="S",
                   help="bound, in seconds, for each run, the production and the topic check "
                   "(default 600)")
    p.add_argument("-X", dest="xconf", action="append", type=kv_arg("-X"), default=[],
                   metavar="KEY=VALUE", help="extra kwal setting (repeatable), e.g. -X "
                   "block.interval.ms=50 -X batch.interval.ms=10000")
    p.add_argument("--rdkafka", dest="rdconf", action="append", type=kv_arg("--rdkafka"),
                   default=[], metavar="KEY=VALUE",
                   help="librdkafka consumer property for both sides (repeatable): kcat -X "
                   "KEY=VALUE and kwal kafka.KEY=VALUE, e.g. --rdkafka "
                   "queued.min.messages=10000000")
    p.add_argument("--csv", metavar="FILE", help="also write the per-run CSV (bench.csv) to "
                   "FILE")
    p.add_argument("--keep", action="store_true",
                   help="keep the work directory (logs, WALs, configurations, plan, "
                   "measurements, checks)")
    a = p.parse_args(argv)
    if a.size < 69:
        raise UsageError("--size must be at least 69 (kwal-loadgen's record format)")
    return a


# --- the plan ----------------------------------------------------------------------

@dataclass
class Step:
    side: str                 # kcat | kwal
    run: int                  # 1..repeat
    group: str                # a fresh consumer group


@dataclass
class Plan:
    records: int
    size: int
    partitions: int
    receivers: int
    repeat: int
    kafka: str
    brokers: int
    topic: str
    timeout_s: int
    rdkafka: list
    kwal_settings: list
    steps: list = field(default_factory=list)

    def settings_words(self):
        """The summary's words for the settings that shape both sides."""
        w = []
        if self.rdkafka:
            w.append("rdkafka=" + ",".join(self.rdkafka))
        if self.kwal_settings:
            w.append("kwal_settings=" + ",".join(self.kwal_settings))
        return w


def make_plan(a, tag):
    """What is run, in which order: kcat then kwal, --repeat times, each with a
    group of its own (tag: unique per invocation)."""
    pl = Plan(records=a.records, size=a.size, partitions=a.partitions, receivers=a.receivers,
              repeat=a.repeat, kafka=a.kafka, brokers=a.brokers, topic=TOPIC,
              timeout_s=a.timeout, rdkafka=list(a.rdconf), kwal_settings=list(a.xconf))
    for r in range(1, a.repeat + 1):
        for side in ("kcat", "kwal"):
            pl.steps.append(Step(side, r, "bench-%s-%d-%s" % (side, r, tag)))
    return pl


# --- measurement records -----------------------------------------------------------

@dataclass
class Measurement:
    """What one step did and observed. Times in seconds; None when unknown."""
    side: str
    run: int
    group: str
    pid: int = 0
    exit: int = None            # exit status (kwal: after our SIGTERM); -N: signal N
    timed_out: bool = False     # hit --timeout (then killed)
    killed: bool = False        # SIGKILLed by the runner
    wall_s: float = None        # kcat: start to exit; kwal: start to offsets in ZooKeeper
    after_assign_s: float = None
    end: str = ""               # kwal: how the end time was taken (zk-mtime | zk-poll)
    cpu_user_s: float = None    # os.wait4 resource usage of the process
    cpu_sys_s: float = None
    max_rss_kib: int = None
    rss_inherited: bool = False  # started without a subreaper: RSS includes the harness's
    ends: dict = field(default_factory=dict)        # kcat: {partition: end offset reached}
    zk_offsets: dict = field(default_factory=dict)  # kwal: {partition: offset} after its stop
    exited_early: bool = False  # kwal ended before its offsets were all there
    stats: dict = None          # kwal: the final statistics (--stats-json)
    note: str = ""              # for people: a log tail, kcat's last lines

    @property
    def cpu_s(self):
        if self.cpu_user_s is None:
            return None
        return self.cpu_user_s + self.cpu_sys_s


# --- processes with their own resource usage ---------------------------------------
#
# The CPU seconds and the peak RSS of a run come from os.wait4() on the
# process itself. Linux keeps, in ru_maxrss, the largest RSS of every memory
# image the process had -- including the one it was forked from, up to its
# exec: a program started straight from this Python process would report at
# least the harness's own RSS (tens of MiB). So each measured program is
# started by a small /bin/sh that forks it in the background and exits at
# once, while this process is a child subreaper (prctl
# PR_SET_CHILD_SUBREAPER): the program is then this process's child, waited
# for with os.wait4(), and its ru_maxrss starts from the shell's image (about
# 1 MiB). Without prctl the program is started directly (rss_inherited).

_PR_SET_CHILD_SUBREAPER = 36
_libc = None
_live = set()                  # Child objects not reaped yet (cleanup kills them)
_live_lock = threading.Lock()


def _subreaper(on):
    """True when this process is now (on) / no longer (not on) a subreaper."""
    global _libc
    try:
        if _libc is None:
            import ctypes
            _libc = ctypes.CDLL(None, use_errno=True)
        return _libc.prctl(_PR_SET_CHILD_SUBREAPER, 1 if on else 0, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


class Child:
    """A program started by spawn_measured(), reaped with os.wait4() so that
    its own resource usage is known (CPU user/system, peak RSS)."""

    def __init__(self, pid, rss_inherited=False):
        self.pid = pid
        self.rss_inherited = rss_inherited
        self.rc = None
        self.ru = None
        self.t_exit = None          # time.monotonic() when it was seen to end
        self.killed = False
        self.timed_out = False
        self.popen = None
        with _live_lock:
            _live.add(self)

    def _done(self, status, ru):
        self.t_exit = time.monotonic()
        self.rc = os.waitstatus_to_exitcode(status)
        self.ru = ru
        if self.popen is not None:
            self.popen.returncode = self.rc
        with _live_lock:
            _live.discard(self)

    def poll(self):
        if self.rc is None:
            pid, status, ru = os.wait4(self.pid, os.WNOHANG)
            if pid != 0:
                self._done(status, ru)
        return self.rc

    def wait(self, timeout=None):
        """Block until it ends (timeout: SIGKILL it then, timed_out=True)."""
        timer = None
        if timeout is not None:
            timer = threading.Timer(timeout, self._expire)
            timer.daemon = True
            timer.start()
        try:
            if self.rc is None:
                _, status, ru = os.wait4(self.pid, 0)
                self._done(status, ru)
        finally:
            if timer is not None:
                timer.cancel()
        return self.rc

    def _expire(self):
        if self.rc is None:
            self.timed_out = True
            self.signal(signal.SIGKILL)

    def signal(self, sig):
        # until we reap it, the pid is its own (a zombie at worst)
        if self.rc is None:
            if sig == signal.SIGKILL:
                self.killed = True
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, grace):
        """SIGTERM, SIGKILL after grace seconds; the exit status."""
        self.signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while self.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.rc is None:
            self.signal(signal.SIGKILL)
            self.wait()
        return self.rc

    def usage_into(self, m):
        if self.ru is not None:
            m.cpu_user_s = round(self.ru.ru_utime, 3)
            m.cpu_sys_s = round(self.ru.ru_stime, 3)
            m.max_rss_kib = self.ru.ru_maxrss      # KiB on Linux
            m.rss_inherited = self.rss_inherited
        m.exit = self.rc
        m.killed = self.killed
        m.timed_out = self.timed_out


def kill_live():
    """SIGKILL and reap every measured program still running."""
    with _live_lock:
        live = list(_live)
    for ch in live:
        ch.signal(signal.SIGKILL)
        try:
            ch.wait()
        except ChildProcessError:
            pass


def spawn_measured(argv, stdout=None, stderr=None, env=None):
    """Start argv (stdin /dev/null; stdout/stderr: a path, a file descriptor
    or None for /dev/null) as a Child of this process (see above)."""
    def target(x):
        if x is None:
            return subprocess.DEVNULL
        if isinstance(x, str):
            return open(x, "wb")
        return x
    out, err = target(stdout), target(stderr)
    try:
        if not _subreaper(True):
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                 env=env)
            ch = Child(p.pid, rss_inherited=True)
            ch.popen = p            # kept (a Popen collected while running would be polled)
            return ch
        r, w = os.pipe()
        try:
            # the program in the background without the pid pipe; its pid on it
            sh = subprocess.Popen(["/bin/sh", "-c", '"$@" %d>&- & echo $! >&%d' % (w, w),
                                   "sh"] + list(argv), stdin=subprocess.DEVNULL, stdout=out,
                                  stderr=err, env=env, pass_fds=(w,))
            os.close(w)
            w = -1
            rc = sh.wait()
            pid = os.read(r, 64).decode().strip()
        finally:
            os.close(r)
            if w >= 0:
                os.close(w)
            _subreaper(False)
        if rc != 0 or not pid.isdigit():
            raise proc.HarnessError("/bin/sh could not start %s (exit %s)" % (argv[0], rc))
        return Child(int(pid))
    finally:
        for f in (out, err):
            if not isinstance(f, int) and f is not None:
                f.close()


# --- ZooKeeper, read with the znodes' Stat ------------------------------------------

class ZkError(Exception):
    pass


class ZkReader:
    """A minimal ZooKeeper client: one session, getData only, requests
    pipelined. kwal-zk-local get (one process per znode) says neither when a
    znode was written nor is it cheap enough to poll; this gives each
    offset's value with its Stat's mtime (the ZooKeeper server's clock, ms
    since the epoch, the same clock as time.time() on this machine)."""

    OP_GET_DATA = 4
    OP_CLOSE = -11
    ERR_NONODE = -101

    def __init__(self, connect, timeout=10):
        host, port = connect.split(",")[0].rsplit(":", 1)
        self.s = socket.create_connection((host, int(port)), timeout)
        self.xid = 0
        # ConnectRequest: protocolVersion, lastZxidSeen, timeOut, sessionId,
        # passwd (16 bytes), readOnly
        self._send(struct.pack(">iqiqi", 0, 0, 30000, 0, 16) + bytes(16) + b"\0")
        r = self._recv()
        if len(r) < 16 or struct.unpack_from(">i", r, 4)[0] <= 0:
            raise ZkError("session refused")

    def _send(self, body):
        self.s.sendall(struct.pack(">i", len(body)) + body)

    def _read(self, n):
        b = b""
        while len(b) < n:
            c = self.s.recv(n - len(b))
            if not c:
                raise ZkError("connection closed")
            b += c
        return b

    def _recv(self):
        (n,) = struct.unpack(">i", self._read(4))
        return self._read(n)

    def get_many(self, paths):
        """{path: (data as text, mtime ms)}, None for a path with no node."""
        out, want = b"", {}
        for path in paths:
            self.xid += 1
            pb = path.encode()
            body = struct.pack(">iii", self.xid, self.OP_GET_DATA, len(pb)) + pb + b"\0"
            out += struct.pack(">i", len(body)) + body
            want[self.xid] = path
        self.s.sendall(out)
        res = {}
        while want:
            r = self._recv()
            xid, _zxid, err = struct.unpack_from(">iqi", r)
            if xid not in want:          # a watch event or a ping's answer: not ours
                continue
            path = want.pop(xid)
            if err == self.ERR_NONODE:
                res[path] = None
                continue
            if err != 0:
                raise ZkError("getData %s: error %d" % (path, err))
            (dlen,) = struct.unpack_from(">i", r, 16)
            data = r[20:20 + max(dlen, 0)]
            # Stat: czxid, mzxid, ctime, mtime, ...
            _cz, _mz, _ct, mtime = struct.unpack_from(">qqqq", r, 20 + max(dlen, 0))
            res[path] = (data.decode(errors="replace").strip(), mtime)
        return res

    def close(self):
        try:
            self.xid += 1
            self._send(struct.pack(">ii", self.xid, self.OP_CLOSE))
        except OSError:
            pass
        try:
            self.s.close()
        except OSError:
            pass


# --- the checks ---------------------------------------------------------------------

def check_workload(plan, manifest, rc):
    c = Check("workload")
    delivered = manifest.get("delivered", "")
    if rc != 0:
        c.fail("kwal-loadgen exit %s%s" % (proc.exit_word(rc), " (timed out after %d s)"
                                           % plan.timeout_s if rc == 124 else ""))
    if delivered != str(plan.records):
        c.fail("delivered %s of %d records" % (delivered or "?", plan.records))
    return c


def check_topic(plan, topic):
    """topic: {partition: (records, first offset, last offset)} as kcat -C read it."""
    c = Check("topic")
    total = sum(n for n, _, _ in topic.values())
    bad = [p for p, (n, lo, hi) in sorted(topic.items()) if lo != 0 or hi + 1 != n]
    if total != plan.records or len(topic) != plan.partitions or bad:
        c.fail("%d records in %d partitions (expected %d in %d)%s" % (
            total, len(topic), plan.records, plan.partitions,
            "; partitions not from 0 or with gaps: %s" % " ".join(map(str, bad)) if bad else ""))
    return c


def _mismatch(got, want):
    return ["%d:%s/%d" % (p, "-" if got.get(p) is None else got.get(p), n)
            for p, n in sorted(want.items()) if got.get(p) != n]


def check_kcat(plan, counts, m):
    """kcat exited 0 having reached the end of every partition, which is the
    partition's record count (it started at 0, so it read all N records)."""
    c = Check("kcat run %d" % m.run)
    if m.timed_out:
        c.fail("timed out after %d s" % plan.timeout_s)
    elif m.exit != 0:
        c.fail("exit %s" % proc.exit_word(m.exit))
    bad = _mismatch(m.ends, counts)
    if bad:
        c.fail("partitions not read to the end (got/want): %s" % " ".join(bad))
    return c


def check_kwal(plan, counts, m):
    """Every offset of kwal's group in ZooKeeper is its partition's record
    count; after SIGTERM kwal exited 0 and its final statistics say it
    received exactly N records."""
    c = Check("kwal run %d" % m.run)
    if m.exited_early:
        c.fail("kwal receive exited before its offsets were all in ZooKeeper (exit %s)"
               % proc.exit_word(m.exit))
    elif m.timed_out:
        c.fail("not every offset in ZooKeeper after %d s" % plan.timeout_s)
    bad = _mismatch(m.zk_offsets, counts)
    if bad:
        c.fail("ZooKeeper offsets differ from the record counts (got/want): %s" % " ".join(bad))
    if not m.exited_early:
        if m.killed:
            c.fail("still running %d s after SIGTERM; killed" % STOP_GRACE_S)
        elif m.exit != 0:
            c.fail("exit %s after SIGTERM" % proc.exit_word(m.exit))
    st = m.stats or {}
    if not st.get("final"):
        c.fail("no final statistics (--stats-json)")
    if st.get("records_received") != plan.records:
        c.fail("%s records received (expected %d)" % (st.get("records_received", "?"),
                                                      plan.records))
    return c


# --- arithmetic ---------------------------------------------------------------------

def rates(records, size, t):
    """(records/s, MB/s) for N records of size bytes in t seconds."""
    t = max(t, 0.001)
    return records / t, records * size / 1e6 / t


def median(values):
    return statistics.median(values) if values else 0.0


# --- the runner ---------------------------------------------------------------------

class Bench:
    def __init__(self, a, bins):
        self.a = a
        self.bins = bins
        self.work = None
        self.zk = None
        self.kafka = None
        self.bs = None
        self.plan = None
        self.counts = {}            # partition -> records (from the topic check)
        self.measurements = []
        self.checks = []
        self.failed = False

    def say(self, msg):
        print(msg, flush=True)

    def warn(self, msg):
        sys.stderr.write(msg + "\n")
        sys.stderr.flush()

    def path(self, *parts):
        return os.path.join(self.work, *parts)

    def rerun(self):
        a = self.a
        words = [PROG, "-n", str(a.records), "-s", str(a.size), "-p", str(a.partitions),
                 "-r", str(a.receivers), "-k", str(a.repeat), "--brokers", str(a.brokers),
                 "--kafka", a.kafka, "--timeout", str(a.timeout)]
        if a.build:
            words += ["--build", a.build]
        for x in a.xconf:
            words += ["-X", x]
        for x in a.rdconf:
            words += ["--rdkafka", x]
        return " ".join(shlex.quote(w) for w in words)

    # --- records

    def record(self, m):
        self.measurements.append(m)
        with open(self.path("measurements.jsonl"), "a") as f:
            f.write(json.dumps(asdict(m)) + "\n")

    def judge(self, c):
        self.checks.append(c)
        if not c.ok:
            self.failed = True
        return c

    # --- set-up

    def start_cluster(self):
        a = self.a
        self.zk = services.ZooKeeper(self.bins, self.path("zk"))
        self.zk.start()
        self.kafka = services.make_kafka(a.kafka, self.bins, self.path("kafka"), nodes=a.brokers,
                                         topics=["%s:%d" % (TOPIC, a.partitions)])
        try:
            self.bs = self.kafka.start()
        except proc.HarnessError:
            raise
        except Exception as e:              # noqa: BLE001 -- the cluster's own errors
            raise proc.HarnessError("the %s Kafka cluster did not start: %s" % (a.kafka, e))
        if a.kafka == "real":
            ok, why = self.kafka.create_topic(TOPIC, a.partitions)
            if not ok:
                raise proc.HarnessError("cannot create topic %s: %s" % (TOPIC, why))
        self.say("    ZooKeeper %s; Kafka %s (%s, %d node(s), topic %s, %d partitions)"
                 % (self.zk.connect, self.bs, a.kafka, a.brokers, TOPIC, a.partitions))

    def produce(self):
        a = self.a
        t0 = time.monotonic()
        lg = Loadgen(self.bins, self.bs, TOPIC, a.records, self.path("manifest"),
                     self.path("loadgen"), size=a.size)
        rc = lg.run(a.timeout)
        t = time.monotonic() - t0
        c = self.judge(check_workload(self.plan, read_manifest(self.path("manifest")), rc))
        if not c.ok:
            raise proc.HarnessError("producing: %s (%s.err)" % ("; ".join(c.problems),
                                                               self.path("loadgen")))
        self.say("    produced %d records in %.3f s (kwal-loadgen, flat out)" % (a.records, t))

    def read_topic(self):
        """{partition: (records, first offset, last offset)} of the whole topic,
        read once with kcat -C."""
        a = self.a
        err = self.path("topic-check.err")
        p = proc.spawn(["kcat", "-C", "-b", self.bs, "-t", TOPIC, "-o", "beginning", "-e",
                        "-q", "-f", "%p %o\\n"], stdout=subprocess.PIPE, stderr=err)
        expired = []

        def expire():
            expired.append(True)
            p.kill()
        timer = threading.Timer(a.timeout, expire)
        timer.daemon = True
        timer.start()
        topic = {}
        try:
            for line in p.stdout:
                w = line.split()
                if len(w) != 2:
                    continue
                part, off = int(w[0]), int(w[1])
                n, lo, hi = topic.get(part, (0, off, off))
                topic[part] = (n + 1, min(lo, off), max(hi, off))
        finally:
            timer.cancel()
            p.stdout.close()
            rc = proc.kill_wait(p, signal.SIGTERM, grace=10)
        if rc != 0:
            raise proc.HarnessError("kcat -C (topic check) exit %s%s: see %s" % (
                proc.exit_word(rc), " (timed out)" if expired else "", err))
        return topic

    def check_topic(self):
        topic = self.read_topic()
        c = self.judge(check_topic(self.plan, topic))
        with open(self.path("partitions"), "w") as f:
            for part, (n, lo, hi) in sorted(topic.items()):
                f.write("%d %d %d %d\n" % (part, n, lo, hi))
        if not c.ok:
            raise proc.HarnessError("topic check: %s -- did the local cluster drop data "
                                    "(retention)? use more --partitions" % "; ".join(c.problems))
        self.counts = {part: n for part, (n, _, _) in topic.items()}
        ns = self.counts.values()
        self.say("    topic checked with kcat -C: %d records, %d..%d per partition, every "
                 "partition from offset 0" % (self.a.records, min(ns), max(ns)))

    # --- the steps

    def run_kcat(self, st):
        a = self.a
        d = self.path("run-%d" % st.run)
        os.makedirs(d, exist_ok=True)
        argv = ["kcat", "-G", st.group, "-b", self.bs, "-o", "beginning", "-e"]
        for kv in a.rdconf:
            argv += ["-X", kv]
        argv.append(TOPIC)
        m = Measurement("kcat", st.run, st.group)
        lines, assigned = [], []

        def read_stderr(f):
            for raw in f:
                now = time.monotonic()
                line = raw.decode(errors="replace").rstrip("\n")
                if not assigned and "rebalanced" in line and "assigned:" in line:
                    assigned.append(now)
                lines.append("%.6f %s" % (now, line))

        r, w = os.pipe()
        t0 = time.monotonic()
        try:
            ch = spawn_measured(argv, stdout=None, stderr=w)
        finally:
            os.close(w)
        m.pid = ch.pid
        with os.fdopen(r, "rb") as rf:
            reader = threading.Thread(target=read_stderr, args=(rf,), daemon=True,
                                      name="kcat-stderr")
            reader.start()
            ch.wait(a.timeout)
            reader.join(10)
        ch.usage_into(m)
        with open(os.path.join(d, "kcat.err"), "w") as f:
            f.write("# %s\n" % " ".join(shlex.quote(x) for x in argv))
            f.write("\n".join(lines) + "\n")
        for ln in lines:
            g = re.search(r"Reached end of topic (\S+) \[(\d+)\] at offset (\d+)", ln)
            if g and g.group(1) == TOPIC:
                m.ends[int(g.group(2))] = int(g.group(3))
        m.wall_s = round(ch.t_exit - t0, 3)
        if assigned:
            m.after_assign_s = round(ch.t_exit - assigned[0], 3)
        m.note = " | ".join(ln.split(" ", 1)[1] for ln in lines[-3:])
        self.record(m)
        return m

    def kwal_conf(self, st, d):
        a = self.a
        s = {
            "group.id": st.group,
            "topics": TOPIC,
            "receivers": a.receivers,
            "zookeeper.connect": self.zk.connect,
            "kafka.bootstrap.servers": self.bs,
            "auto.offset.reset": "earliest",
            "wal.dirs": os.path.join(d, "wal"),
            "sink": "null",
        }
        for kv in a.rdconf:
            k, v = kv.split("=", 1)
            s["kafka." + k] = v
        for kv in a.xconf:
            k, v = kv.split("=", 1)
            s[k] = v
        conf = os.path.join(d, "kwal.conf")
        write_conf(conf, s, "%s, run %d" % (PROG, st.run))
        return conf

    def wait_offsets(self, st, ch, m):
        """Poll the group's offsets until each equals (or passes) its
        partition's record count, kwal ends, or --timeout. The end time (wall
        clock): the last offset znode's mtime; if this runner's ZooKeeper
        reader fails, the time a kwal-zk-local poll saw them (coarser)."""
        base = "/consumers/%s/offsets/%s/" % (st.group, TOPIC)
        pending = {base + str(p): n for p, n in self.counts.items()}
        mtimes = []
        deadline = time.monotonic() + self.a.timeout
        reader = None
        try:
            reader = ZkReader(self.zk.connect)
        except (OSError, ZkError) as e:
            m.note = "ZooKeeper reader: %s; polling with kwal-zk-local" % e
        try:
            while True:
                if ch.poll() is not None:
                    m.exited_early = True
                    return None
                if reader is not None:
                    try:
                        got = reader.get_many(list(pending))
                    except (OSError, ZkError, struct.error) as e:
                        m.note = "ZooKeeper reader: %s; polling with kwal-zk-local" % e
                        reader.close()
                        reader = None
                        continue
                    for path, v in got.items():
                        if v is not None and v[0].isdigit() and int(v[0]) >= pending[path]:
                            del pending[path]
                            mtimes.append(v[1])
                    if not pending:
                        m.end = "zk-mtime"
                        return max(mtimes) / 1000.0
                else:
                    offs = self.zk.offsets(st.group, TOPIC, self.a.partitions)
                    if all((offs.get(p) or 0) >= n for p, n in self.counts.items()):
                        m.end = "zk-poll"
                        return time.time()
                if time.monotonic() > deadline:
                    m.timed_out = True
                    return None
                time.sleep(POLL_S if reader is not None else 1.0)
        finally:
            if reader is not None:
                reader.close()

    def run_kwal(self, st):
        a = self.a
        d = self.path("run-%d" % st.run)
        os.makedirs(d, exist_ok=True)
        conf = self.kwal_conf(st, d)
        m = Measurement("kwal", st.run, st.group)
        k = Kwal(self.bins, ["receive"], conf, os.path.join(d, "kwal"))
        if os.path.exists(k.stats_path):
            os.unlink(k.stats_path)
        t0 = time.time()
        ch = spawn_measured(k.argv(), stdout=os.path.join(d, "kwal.out"), stderr=k.log)
        m.pid = ch.pid
        t1 = self.wait_offsets(st, ch, m)
        timed_out = m.timed_out
        if ch.rc is None:
            ch.stop(STOP_GRACE_S)
        ch.usage_into(m)
        m.timed_out = timed_out
        m.stats = k.stats()
        m.zk_offsets = self.zk.offsets(st.group, TOPIC, a.partitions)
        if t1 is not None:
            if t1 < t0:                     # the clock stepped back: no time to give
                t1 = t0 + 0.001
            m.wall_s = round(t1 - t0, 3)
            fa = (m.stats or {}).get("first_assignment_ms", -1)
            if fa is not None and fa >= 0:
                m.after_assign_s = round(max(t1 - (t0 + fa / 1000.0), 0.0), 3)
        if m.exited_early or m.exit != 0 or m.timed_out:
            m.note = (m.note + " | " if m.note else "") + k.log_tail(3)
        self.record(m)
        if not a.keep:
            shutil.rmtree(os.path.join(d, "wal"), ignore_errors=True)
        return m

    # --- the report

    def line(self, m, extra=""):
        pl = self.plan
        rps, mbs = rates(pl.records, pl.size, m.wall_s)
        after = ""
        if m.after_assign_s:
            after = "  (after assignment %6.3f s %8.0f rec/s)" % (
                m.after_assign_s, rates(pl.records, pl.size, m.after_assign_s)[0])
        usage = ""
        if m.cpu_s is not None:
            usage = "  cpu %6.2f s (user %.2f + sys %.2f)  rss %6.1f MiB%s" % (
                m.cpu_s, m.cpu_user_s, m.cpu_sys_s, m.max_rss_kib / 1024.0,
                " (with the harness's)" if m.rss_inherited else "")
        return "    run %d/%d %s: %7.3f s %8.0f rec/s %6.1f MB/s%s%s%s" % (
            m.run, pl.repeat, m.side, m.wall_s, rps, mbs, usage, after, extra)

    def csv_rows(self, verdicts):
        pl = self.plan
        rows = []
        for m in self.measurements:
            c = verdicts.get((m.side, m.run))
            rps = mbs = rps_a = ""
            if m.wall_s:
                r, b = rates(pl.records, pl.size, m.wall_s)
                rps, mbs = "%.0f" % r, "%.1f" % b
            if m.after_assign_s:
                rps_a = "%.0f" % rates(pl.records, pl.size, m.after_assign_s)[0]

            def v(x, fmt="%s"):
                return "" if x is None else fmt % x
            rows.append(",".join([
                str(m.run), m.side, m.group, "1" if c and c.ok else "0",
                v(m.exit), v(m.wall_s, "%.3f"), rps, mbs, v(m.after_assign_s, "%.3f"), rps_a,
                v(m.cpu_user_s, "%.3f"), v(m.cpu_sys_s, "%.3f"), v(m.cpu_s, "%.3f"),
                v(m.max_rss_kib), '"%s"' % "; ".join(c.problems).replace('"', "'") if c else ""]))
        return rows

    def write_outputs(self, verdicts):
        with open(self.path("checks.json"), "w") as f:
            json.dump([asdict(c) for c in self.checks], f, indent=1)
        text = CSV_HEADER + "\n" + "".join(r + "\n" for r in self.csv_rows(verdicts))
        with open(self.path("bench.csv"), "w") as f:
            f.write(text)
        if self.a.csv:
            with open(self.a.csv, "w") as f:
                f.write(text)

    def main(self):
        a = self.a
        base = a.dir or os.environ.get("TMPDIR") or "/tmp"
        os.makedirs(base, exist_ok=True)
        self.work = tempfile.mkdtemp(prefix="kwal-bench-receive.", dir=base)
        self.plan = make_plan(a, "%d-%s" % (os.getpid(), time.strftime("%H%M%S")))
        with open(self.path("plan.json"), "w") as f:
            json.dump(asdict(self.plan), f, indent=1)
        kc = proc.run(["kcat", "-V"], 10)[1]
        g = re.search(r"Version (\S+).*librdkafka (\S+)", kc, re.S)
        try:
            load = " ".join(open("/proc/loadavg").read().split()[:3])
        except OSError:
            load = "?"
        self.say("==> %s: %d records of %d B over %d partitions, kwal receivers=%d, %d kcat/kwal "
                 "pair(s)" % (SUMMARY, a.records, a.size, a.partitions, a.receivers, a.repeat))
        self.say("    %s (%s), %s, %s CPUs, load %s" % (
            self.bins.version(), self.bins.dir,
            "kcat %s (librdkafka %s)" % g.groups() if g else "kcat ?", os.cpu_count() or "?",
            load))
        self.say("    work directory %s" % self.work)
        self.say("    re-run: %s" % self.rerun())
        if a.kafka == "mock":
            per_part = a.records * (a.size + 24) // a.partitions
            if per_part > MOCK_RETENTION:
                self.warn("%s: warning: ~%d bytes per partition may exceed the mock cluster's "
                          "retention (~5 MiB per partition); use more --partitions"
                          % (NAME, per_part))

        self.start_cluster()
        self.produce()
        self.check_topic()

        verdicts = {}
        for st in self.plan.steps:
            if st.side == "kcat":
                m = self.run_kcat(st)
                c = self.judge(check_kcat(self.plan, self.counts, m))
            else:
                m = self.run_kwal(st)
                c = self.judge(check_kwal(self.plan, self.counts, m))
            verdicts[(st.side, st.run)] = c
            if not c.ok:
                self.warn("    run %d %s: %s%s" % (st.run, st.side, "; ".join(c.problems),
                                                  " (%s)" % m.note if m.note else ""))
                continue
            if st.side == "kcat":
                self.say(self.line(m))
                continue
            kc_m = next(x for x in self.measurements if x.side == "kcat" and x.run == st.run)
            if verdicts.get(("kcat", st.run)) and verdicts[("kcat", st.run)].ok:
                ratio = kc_m.wall_s / max(m.wall_s, 0.001)
                ratio_a = (kc_m.after_assign_s / m.after_assign_s
                           if kc_m.after_assign_s and m.after_assign_s else 0.0)
                self.say(self.line(m, "  kwal/kcat %.3f (after assignment %.3f)"
                                   % (ratio, ratio_a)))
            else:
                self.say(self.line(m))

        self.write_outputs(verdicts)
        return self.summary(verdicts)

    def summary(self, verdicts):
        pl = self.plan
        pairs = []
        for r in range(1, pl.repeat + 1):
            if verdicts[("kcat", r)].ok and verdicts[("kwal", r)].ok:
                kc = next(x for x in self.measurements if x.side == "kcat" and x.run == r)
                kw = next(x for x in self.measurements if x.side == "kwal" and x.run == r)
                pairs.append((kc, kw))
        words = ["records=%d" % pl.records, "size=%d" % pl.size, "partitions=%d" % pl.partitions,
                 "receivers=%d" % pl.receivers, "repeat=%d" % pl.repeat, "pairs=%d" % len(pairs)]
        words += pl.settings_words()
        if not pairs:
            self.say("%s: %s status=failed" % (SUMMARY, " ".join(words)))
            return 1
        kc_t = median([kc.wall_s for kc, _ in pairs])
        kw_t = median([kw.wall_s for _, kw in pairs])
        ratio = median([kc.wall_s / max(kw.wall_s, 0.001) for kc, kw in pairs])
        ratio_a = median([kc.after_assign_s / kw.after_assign_s
                          if kc.after_assign_s and kw.after_assign_s else 0.0
                          for kc, kw in pairs])
        kc_rps, kc_mbs = rates(pl.records, pl.size, kc_t)
        kw_rps, kw_mbs = rates(pl.records, pl.size, kw_t)

        def usage(ms):
            cpu = median([m.cpu_s for m in ms if m.cpu_s is not None])
            rss = median([m.max_rss_kib for m in ms if m.max_rss_kib is not None]) / 1024.0
            return "cpu %.2f s, rss %.1f MiB" % (cpu, rss)
        self.say("    medians of %d pair(s): kcat %.0f rec/s (%.1f MB/s; %s), kwal %.0f rec/s "
                 "(%.1f MB/s; %s); kwal/kcat %.3f end to end, %.3f after assignment"
                 % (len(pairs), kc_rps, kc_mbs, usage([kc for kc, _ in pairs]), kw_rps, kw_mbs,
                    usage([kw for _, kw in pairs]), ratio, ratio_a))
        status = "failed" if self.failed else "ok"
        words += ["kcat_rps=%.0f" % kc_rps, "kcat_mbs=%.1f" % kc_mbs, "kwal_rps=%.0f" % kw_rps,
                  "kwal_mbs=%.1f" % kw_mbs, "ratio=%.3f" % ratio,
                  "ratio_after_assign=%.3f" % ratio_a, "status=%s" % status]
        self.say("%s: %s" % (SUMMARY, " ".join(words)))
        return 1 if self.failed else 0

    def cleanup(self):
        kill_live()
        proc.kill_all()
        if self.kafka is not None:
            try:
                self.kafka.stop()
            except Exception:               # noqa: BLE001 -- best effort at exit
                pass
        if self.zk is not None and self.zk.dir and os.path.isdir(self.zk.dir):
            self.zk.stop()
        proc.kill_all()
        if self.work:
            if self.a.keep:
                print("kept %s" % self.work, flush=True)
            else:
                shutil.rmtree(self.work, ignore_errors=True)
                if self.failed:
                    self.warn("%s: work directory removed; --keep keeps it (logs, "
                              "statistics, plan, measurements, checks)" % NAME)


def _on_term(sig, frame):
    raise SystemExit(143)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        a = parse_args(argv)
    except UsageError as e:
        sys.stderr.write("%s: %s\nTry '%s --help'.\n" % (NAME, e, PROG))
        return 2
    bins = proc.Bins(proc.bin_dir(a.build))
    try:
        bins.check("kwal", "loadgen", "zk_local", *(["kafka_mock"] if a.kafka == "mock" else []))
        proc.need_commands("kcat")
        if a.kafka == "real" and "real" not in services.kafka_kinds_available():
            raise proc.HarnessError("--kafka real: kwalh.kafka is not there")
    except proc.HarnessError as e:
        sys.stderr.write("%s: %s\n" % (NAME, e))
        return 1
    b = Bench(a, bins)
    old = signal.signal(signal.SIGTERM, _on_term)
    try:
        return b.main()
    except proc.HarnessError as e:
        sys.stderr.write("%s: %s\n" % (NAME, e))
        b.failed = True
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("%s: interrupted\n" % NAME)
        return 130
    except SystemExit:
        sys.stderr.write("%s: terminated\n" % NAME)
        return 143
    finally:
        b.cleanup()
        signal.signal(signal.SIGTERM, old)
