"""measure -- programs run with their own resource usage, and ZooKeeper
offsets read with the time the server stored them: what the bench runner
(kwalh.bench) times and weighs each contender with.

  spawn_measured(argv)  starts a program as a Child of this process, reaped
                        with os.wait4(): CPU user/system, peak RSS and the
                        bytes it had written to storage (ru_oublock) are its
                        own and its waited-for descendants'
  kill_live()           SIGKILL and reap every Child still running
  ZkReader              one ZooKeeper session, getData with the Stat's mtime
  zk_server_counters()  the server's own counters (four-letter words srvr,
                        mntr): its Zxid, committed writes, log fsyncs
"""

import os
import signal
import socket
import struct
import subprocess
import threading
import time

from . import proc

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
            m.write_bytes = self.ru.ru_oublock * 512   # storage writes, 512 B blocks
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


# --- ZooKeeper's own counters ---------------------------------------------------------

def zk_four_letter(connect, word, timeout=10):
    """The answer of ZooKeeper's four-letter word `word` (srvr, mntr, ...)
    from the first server of connect (host:port[,...][/chroot]). It is sent
    on a connection of its own that opens no session, so asking writes
    nothing (a session's start and end are write transactions). The server
    must whitelist the word (kwal-zk-local's zoo.cfg whitelists all)."""
    host, port = connect.split("/", 1)[0].split(",")[0].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout) as s:
        s.sendall(word.encode())
        chunks = []
        while True:
            c = s.recv(65536)
            if not c:
                break
            chunks.append(c)
    return b"".join(chunks).decode(errors="replace")


def zk_server_counters(connect, timeout=10):
    """{name: int} read from the server at connect: zxid (srvr's Zxid: the
    last committed transaction; its low 32 bits count the write transactions
    of the epoch, the high 32 bits, epoch, grow at a leader change),
    epoch, and from mntr: writes (zk_cnt_updatelatency: write requests the
    server answered), fsyncs (zk_cnt_fsynctime: transaction log fsyncs),
    bytes_received (zk_bytes_received_count), packets_received, znodes,
    sessions (zk_global_sessions + zk_local_sessions). ZkError when the
    server does not answer them (not whitelisted, not serving)."""
    try:
        srvr = zk_four_letter(connect, "srvr", timeout)
        mntr = zk_four_letter(connect, "mntr", timeout)
    except OSError as e:
        raise ZkError("four-letter words at %s: %s" % (connect, e))
    res = {}
    for line in srvr.splitlines():
        if line.startswith("Zxid:"):
            z = int(line.split(":", 1)[1].strip(), 16)
            res["zxid"], res["epoch"] = z, z >> 32
    m = {}
    for line in mntr.splitlines():
        w = line.split("\t")
        if len(w) == 2:
            m[w[0]] = w[1]
    names = {"writes": "zk_cnt_updatelatency", "fsyncs": "zk_cnt_fsynctime",
             "bytes_received": "zk_bytes_received_count",
             "packets_received": "zk_packets_received", "znodes": "zk_znode_count"}
    for k, key in names.items():
        if m.get(key, "").isdigit():
            res[k] = int(m[key])
    if m.get("zk_global_sessions", "").isdigit():
        res["sessions"] = int(m["zk_global_sessions"]) + int(m.get("zk_local_sessions") or 0)
    if "zxid" not in res:
        raise ZkError("srvr at %s gave no Zxid (is the word whitelisted?): %s"
                      % (connect, srvr.strip()[:200] or "no answer"))
    return res
