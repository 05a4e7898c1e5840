"""kwal -- one kwal process: a generated configuration file, the command
line of a mode, start / SIGTERM / SIGKILL, the exit status, and its
statistics (--stats-json; format at the top of common/kw_stats.h).

The statistics file is replaced atomically every second and at exit (then
with "final": true). A run that crashed (SIGKILL, or a crash point: kwal
_exit(99)s) leaves its last periodic file: up to a second old.

Runners read numbers from the statistics and outcomes from exit statuses,
never from kwal's log (which is kept as a file for people).
"""

import json
import os
import signal
import time

from . import proc

CRASH_EXIT = 99          # KWAL_CRASH_AT reached: _exit(99)

# mode name -> kwal arguments (compare's modes; chaos uses receive/classic)
MODES = {
    "no-wal": ["receive", "--no-wal"],
    "classic": ["receive", "--classic"],
    "receive": ["receive"],
    "direct": ["direct"],
    "direct-alo": ["direct", "--at-least-once"],
}


def write_conf(path, settings, comment=None):
    """A kwal configuration file: key=value lines in the given order."""
    with open(path, "w") as f:
        if comment:
            f.write("# %s\n" % comment)
        for k, v in settings.items():
            f.write("%s=%s\n" % (k, v))


def read_conf(path):
    """{key: value} of a kwal configuration file (the last one wins)."""
    res = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#") or "=" not in line:
                continue
            k, v = line.split("=", 1)
            res[k.strip()] = v.strip()
    return res


def cluster_of(path):
    """(kafka.bootstrap.servers, zookeeper.connect) of a kwal configuration
    file, for a runner given -c FILE; ValueError with a one-line reason when
    it cannot be read or lacks either."""
    try:
        c = read_conf(path)
    except OSError as e:
        raise ValueError("-c %s: cannot read it (%s)" % (path, e.strerror))
    bs, zk = c.get("kafka.bootstrap.servers"), c.get("zookeeper.connect")
    if not bs or not zk:
        raise ValueError("-c %s: needs kafka.bootstrap.servers and zookeeper.connect" % path)
    return bs, zk


def read_stats(path):
    """The statistics object in path, or None (not written yet)."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


class Kwal:
    """One run of kwal: `Kwal(bins, args, conf, base)` writes nothing until
    start(); base is a path prefix: base.log (stderr), base.out (stdout),
    base.stats.json."""

    def __init__(self, bins, args, conf, base, xargs=(), env=None):
        self.bins = bins
        self.args = list(args)
        self.conf = conf
        self.base = base
        self.xargs = list(xargs)
        self.env = dict(env or {})
        self.log = base + ".log"
        self.stats_path = base + ".stats.json"
        self.p = None
        self.t0 = None
        self.rc = None
        self.signalled = None      # the signal we sent last, if any
        self._last = None

    @property
    def pid(self):
        return self.p.pid if self.p else None

    def argv(self):
        return [self.bins.kwal] + self.args + ["-c", self.conf, "--stats-json",
                                               self.stats_path] + self.xargs

    def start(self):
        env = dict(os.environ)
        env.update(self.env)
        if os.path.exists(self.stats_path):
            os.unlink(self.stats_path)
        self.p = proc.spawn(self.argv(), stdout=self.base + ".out", stderr=self.log, env=env)
        self.t0 = proc.now_ms()
        return self

    def elapsed_ms(self):
        return proc.now_ms() - self.t0

    def alive(self):
        return self.p is not None and self.p.poll() is None

    def poll(self):
        if self.rc is None and self.p is not None:
            rc = self.p.poll()
            if rc is not None:
                self.rc = proc.reap(self.p)
        return self.rc

    def wait(self, timeout=None):
        """Exit status, or None if still running after timeout."""
        if self.rc is None:
            self.rc = proc.reap(self.p, timeout)
        return self.rc

    def term(self):
        self._signal(signal.SIGTERM)

    def kill(self):
        self._signal(signal.SIGKILL)
        return self.wait()

    def _signal(self, sig):
        if self.alive():
            try:
                self.p.send_signal(sig)
                self.signalled = sig
            except ProcessLookupError:
                pass

    def stop(self, grace=60):
        """SIGTERM, SIGKILL after grace seconds; the exit status."""
        self.term()
        rc = self.wait(grace)
        if rc is None:
            rc = self.kill()
        return rc

    def crashed(self):
        return self.rc == CRASH_EXIT

    def stats(self):
        """The latest statistics (the file as it is now, else the last read)."""
        s = read_stats(self.stats_path)
        if s is not None:
            self._last = s
        return self._last

    def stat(self, name, default=None):
        s = self.stats()
        return default if s is None else s.get(name, default)

    def wait_stats(self, pred, timeout):
        """Poll the statistics until pred(stats) is true, the process ends or
        timeout seconds pass; the last statistics."""
        deadline = time.monotonic() + timeout
        while True:
            s = self.stats()
            if s is not None and pred(s):
                return s
            if not self.alive() or time.monotonic() > deadline:
                return s
            time.sleep(0.1)

    def log_tail(self, n=1):
        """The last n lines of the log without the ZooKeeper C client's and
        librdkafka's lines -- for people reading a failure, never parsed."""
        try:
            with open(self.log, errors="replace") as f:
                lines = [ln.rstrip("\n") for ln in f
                         if "ZOO_" not in ln and not ln.startswith("%")]
        except OSError:
            return ""
        return " | ".join(lines[-n:])


def consuming(stats):
    """True once a run consumes: a partition assigned (receive) or its first
    ranges planned (direct)."""
    return (stats.get("partitions_owned", 0) > 0
            or stats.get("first_assignment_ms", -1) >= 0
            or stats.get("records_received", 0) > 0)


def wal_verify(bins, conf, timeout=120):
    """(exit status, output lines) of `kwal wal verify -c conf`."""
    rc, out, err = proc.run([bins.kwal, "wal", "verify", "-c", conf], timeout)
    return rc, (out + err).splitlines()


def wal_repair(bins, conf, replica, timeout=120):
    """(exit status, output lines) of `kwal wal repair -c conf --replica N`."""
    rc, out, err = proc.run([bins.kwal, "wal", "repair", "-c", conf, "--replica", str(replica)],
                            timeout)
    return rc, (out + err).splitlines()
