"""proc -- where the programs are, and the processes the harness starts.

Every process a runner starts goes through spawn(), which remembers it, so
that kill_all() (at exit, on SIGINT/SIGTERM) leaves nothing behind: a
runner ends only what it started, by pid.

Binaries are found in one directory (Bins): --build DIR's tools/, else
$KWAL_BIN_DIR, else <repo>/build/tools (see bin_dir()).
"""

import argparse
import os
import re
import shutil
import signal
import subprocess
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.realpath(__file__)))))


class HarnessError(Exception):
    """A runner cannot go on (a program is missing, a server did not start)."""


class UsageError(Exception):
    """A bad command line: a runner prints it with a usage hint and exits 2."""


class ArgParser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of exiting, so each runner
    reports bad arguments its own way; "argument --x: --x needs ..." loses
    its redundant prefix."""

    def error(self, message):
        raise UsageError(re.sub(r"^argument [^ ]+: (?=-)", "", message))


def bin_dir(build=None, near=None):
    """The directory of kwal's programs: BUILD/tools when build is given
    (relative to the repository unless absolute), else $KWAL_BIN_DIR, else
    the directory `near` when it holds a kwal binary (a runner installed next
    to kwal), else <repo>/build/tools."""
    if build:
        b = build if os.path.isabs(build) else os.path.join(REPO, build)
        return os.path.join(b, "tools")
    env = os.environ.get("KWAL_BIN_DIR")
    if env:
        return env
    if near and is_program(os.path.join(near, "kwal")):
        return near
    return os.path.join(REPO, "build", "tools")


def is_program(path):
    return os.path.isfile(path) and os.access(path, os.X_OK)


class Bins:
    """kwal and the test kit's programs in one directory."""

    NAMES = {
        "kwal": "kwal",
        "kafka_mock": "kwal-kafka-mock",
        "zk_local": "kwal-zk-local",
        "loadgen": "kwal-loadgen",
        "verify": "kwal-verify",
    }

    def __init__(self, directory):
        self.dir = os.path.abspath(directory)
        for attr, name in self.NAMES.items():
            setattr(self, attr, os.path.join(self.dir, name))

    def check(self, *attrs):
        """HarnessError naming the first program of attrs (default all)
        that is not there."""
        for a in attrs or self.NAMES:
            p = getattr(self, a)
            if not is_program(p):
                raise HarnessError("%s not found; build first (cmake --build)" % p)

    def version(self):
        try:
            r = subprocess.run([self.kwal, "--version"], capture_output=True, text=True,
                               timeout=10)
            return (r.stdout.splitlines() or ["kwal ?"])[0]
        except (OSError, subprocess.TimeoutExpired):
            return "kwal ?"

    def crash_points(self, mode="receive"):
        """The crash points of `kwal --list-crash-points`, in data-flow
        order: receive's (the first list), or direct's (its own list; direct
        also passes sink.mid-txn), or "all"."""
        r = subprocess.run([self.kwal, "--list-crash-points"], capture_output=True,
                           text=True, timeout=10)
        sections, cur = [], None
        for line in r.stdout.splitlines():
            if line.startswith("#"):
                cur = []
                sections.append((line, cur))
            elif line.strip() and cur is not None:
                cur.append(line.split()[0])
        receive = sections[0][1] if sections else []
        direct = [p for h, s in sections if "direct" in h for p in s]
        if mode == "receive":
            return receive
        if mode == "direct":
            return direct
        return [p for h, s in sections if "libfiu" not in h for p in s]


def need_commands(*names):
    for n in names:
        if shutil.which(n) is None:
            raise HarnessError("%s not found (tools/install-deps.sh installs it)" % n)


# --- processes --------------------------------------------------------------

_lock = threading.Lock()
_procs = set()


def spawn(argv, stdout=None, stderr=None, env=None, cwd=None, stdin=subprocess.DEVNULL):
    """Popen(argv), remembered until reap(). stdout/stderr: a path (opened
    for writing; appended to when it starts with '>>'), a file object, or
    None for DEVNULL."""
    files = []

    def target(x):
        if x is None:
            return subprocess.DEVNULL
        if isinstance(x, str):
            mode = "ab" if x.startswith(">>") else "wb"
            f = open(x[2:] if x.startswith(">>") else x, mode)
            files.append(f)
            return f
        return x

    try:
        p = subprocess.Popen(argv, stdout=target(stdout), stderr=target(stderr), stdin=stdin,
                             env=env, cwd=cwd)
    finally:
        for f in files:
            f.close()
    with _lock:
        _procs.add(p)
    return p


def reap(p, timeout=None):
    """Wait for p (None: no bound); its exit status, or None if it still
    runs after timeout."""
    try:
        rc = p.wait(timeout)
    except subprocess.TimeoutExpired:
        return None
    with _lock:
        _procs.discard(p)
    return rc


def kill_wait(p, sig=signal.SIGKILL, grace=None):
    """Send sig to p if it runs (SIGKILL after grace seconds, if given),
    then reap it; its exit status."""
    if p is None:
        return None
    if p.poll() is None:
        try:
            p.send_signal(sig)
        except ProcessLookupError:
            pass
        if grace is not None and sig != signal.SIGKILL:
            if reap(p, grace) is None:
                try:
                    p.kill()
                except ProcessLookupError:
                    pass
    return reap(p)


def kill_all():
    """SIGKILL every process spawn() started that is still running."""
    with _lock:
        procs = list(_procs)
    for p in procs:
        kill_wait(p)


def run(argv, timeout, **kw):
    """subprocess.run with a bound: (exit status, stdout, stderr) as text;
    status 124 when the bound was hit (as timeout(1))."""
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL, **kw)
        return r.returncode, r.stdout, r.stderr
    except subprocess.TimeoutExpired as e:
        def s(x):
            return x.decode(errors="replace") if isinstance(x, bytes) else (x or "")
        return 124, s(e.stdout), s(e.stderr)


def now_ms():
    return int(time.monotonic() * 1000)


def wall_ms():
    return int(time.time() * 1000)


def exit_word(rc):
    """An exit status as today's runners print it: N, or 128+signal."""
    if rc is None:
        return "running"
    return str(128 - rc) if rc < 0 else str(rc)
