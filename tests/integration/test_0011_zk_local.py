"""0011 -- kwal-zk-local against Debian's real ZooKeeper server. No Kafka.

This tests the program behind the `zk` fixture, so it drives kwal-zk-local
itself (every command bounded by a timeout) in a directory of its own, and
stops the server after each test whatever happened.

a  bad arguments exit 2 with a usage line; --help prints it.
b  nothing running yet: `status` exits 1, `stop` exits 0.
c  `start` on a free loopback port prints 127.0.0.1:PORT and writes it to
   DIR/connect; zoo.cfg binds loopback and has a dataDir; the pid in
   DIR/zookeeper.pid is alive; `status` prints the connect string; a second
   start in the same directory exits 1 saying why. `create` makes a znode
   (and its missing parents), `get` and `ls` (sorted) read it back; a missing
   node exits 1 naming it; creating an existing node exits 1.
d  `restart` keeps the port, replaces the server process, and the znode
   survives; `stop` ends the server process, `status` then exits 1 (not
   running), a second `stop` exits 0, and a client command against the
   stopped server fails within its timeout; `start` again in the same
   directory reuses the port and the data is still there.

Outcomes come from exit statuses, the program's stdout (its documented
answers) and the process table; kwal is not involved.
"""
import os

import pytest

from kwtest import run


class ZkLocal:
    """kwal-zk-local in directory d; every command at most 90 s."""

    def __init__(self, bins, d):
        self.prog = bins.zk_local
        self.d = d

    def run(self, *args, timeout=90, rc=None):
        """kwal-zk-local ARGS (with rc: its exit status must be rc); the
        server's log tail goes into the failure messages."""
        return run([self.prog, *args], timeout, rc=rc, extra=self.log_tail)

    def expect(self, rc, *args, **kw):
        return self.run(*args, rc=rc, **kw)

    def log_tail(self, n=30):
        try:
            with open(os.path.join(self.d, "zookeeper.log"), errors="replace") as f:
                return "\n--- server log (tail):\n" + "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def pid(self):
        with open(os.path.join(self.d, "zookeeper.pid")) as f:
            return int(f.read().strip())


def alive(pid):
    """pid runs and is not a zombie (a container's init may not reap the
    daemonised server at once)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


@pytest.fixture
def zkl(bins, tmp_path):
    d = tmp_path / "zk"
    z = ZkLocal(bins, str(d))
    yield z
    z.run("stop", "--dir", d, timeout=60)


BAD_ARGS = [
    # (arguments, texts on stderr); {dir} is the test's directory
    ([], ["Usage: kwal-zk-local"]),
    (["frobnicate", "--dir", "{dir}"],
     ["kwal-zk-local: unknown command 'frobnicate'", "Usage: kwal-zk-local"]),
    (["start", "--dir", "{dir}", "--bogus"], ["Usage: kwal-zk-local"]),
    (["start"], []),                                        # no --dir
    (["start", "--dir", "{dir}", "--port", "70000"], []),
    (["get", "--connect", "127.0.0.1:1"], []),              # no PATH
    (["get", "--connect", "127.0.0.1:1", "nope"], []),      # a relative znode path
]


@pytest.mark.parametrize("args,texts", BAD_ARGS,
                         ids=[" ".join(a) or "(nothing)" for a, _ in BAD_ARGS])
def test_bad_arguments(zkl, args, texts):
    r = zkl.expect(2, *[a.replace("{dir}", zkl.d) for a in args])
    for t in texts:
        assert t in r.stderr, r.both
    assert not os.path.exists(os.path.join(zkl.d, "zookeeper.pid")), "a server started"


def test_help(zkl):
    assert "Usage: kwal-zk-local" in zkl.expect(0, "--help").stdout


def test_nothing_running(zkl):
    os.mkdir(zkl.d)
    zkl.expect(1, "status", "--dir", zkl.d)
    zkl.expect(0, "stop", "--dir", zkl.d)


def start(zkl):
    hp = zkl.expect(0, "start", "--dir", zkl.d).stdout.strip()
    host, _, port = hp.partition(":")
    assert host == "127.0.0.1" and port.isdigit(), f"start printed {hp!r}"
    return hp


def test_start_and_znodes(zkl):
    os.mkdir(zkl.d)
    hp = start(zkl)
    with open(os.path.join(zkl.d, "connect")) as f:
        assert f.read() == hp + "\n", "DIR/connect holds the connect string"
    with open(os.path.join(zkl.d, "zoo.cfg")) as f:
        cfg = f.read()
    assert "clientPortAddress=127.0.0.1" in cfg, "zoo.cfg binds loopback"
    assert "dataDir=" in cfg
    assert alive(zkl.pid()), "the pid in zookeeper.pid is not alive"

    assert zkl.expect(0, "status", "--dir", zkl.d).stdout == hp + "\n"
    r = zkl.expect(1, "start", "--dir", zkl.d)
    assert "already running" in r.stderr, r.both

    zkl.expect(0, "create", "--connect", hp, "/consumers/g1/offsets/t1/0", "4242")
    assert zkl.expect(0, "get", "--connect", hp, "/consumers/g1/offsets/t1/0").stdout \
        == "4242\n"
    zkl.expect(0, "create", "--connect", hp, "/consumers/g1/offsets/t1/1", "7")
    assert zkl.expect(0, "ls", "--connect", hp, "/consumers/g1/offsets/t1").stdout \
        == "0\n1\n", "ls lists the children, sorted"
    r = zkl.expect(1, "get", "--connect", hp, "/consumers/nope")
    assert "no such node" in r.stderr, r.both
    zkl.expect(1, "create", "--connect", hp, "/consumers/g1/offsets/t1/0", "1")
    assert zkl.expect(0, "get", "--connect", hp, "/consumers/g1/offsets/t1/0").stdout \
        == "4242\n", "a failed create changed the node"


def test_restart_stop_start(zkl):
    os.mkdir(zkl.d)
    hp = start(zkl)
    zkl.expect(0, "create", "--connect", hp, "/consumers/g1/offsets/t1/0", "4242")
    zkl.expect(0, "create", "--connect", hp, "/consumers/g1/offsets/t1/1", "7")

    old = zkl.pid()
    assert zkl.expect(0, "restart", "--dir", zkl.d).stdout == hp + "\n", \
        "restart keeps the port"
    assert zkl.pid() != old, "restart kept the old pid"
    assert not alive(old), "the old server still runs after restart"
    assert zkl.expect(0, "get", "--connect", hp, "/consumers/g1/offsets/t1/0").stdout \
        == "4242\n", "the znode did not survive the restart"

    pid = zkl.pid()
    zkl.expect(0, "stop", "--dir", zkl.d)
    assert not alive(pid), f"server pid {pid} alive after stop"
    r = zkl.expect(1, "status", "--dir", zkl.d)
    assert "not running" in r.stderr, r.both
    zkl.expect(0, "stop", "--dir", zkl.d)
    r = zkl.expect(1, "get", "--connect", hp, "--timeout", "2", "/consumers", timeout=30)
    assert "no ZooKeeper session" in r.stderr, r.both

    assert start(zkl) == hp, "start in the same dir does not reuse the port"
    assert zkl.expect(0, "get", "--connect", hp, "/consumers/g1/offsets/t1/1").stdout \
        == "7\n", "the data did not survive stop and start"
    zkl.expect(0, "stop", "--dir", zkl.d)
