"""0010 -- kwal-kafka-local runs a real Apache Kafka cluster that librdkafka
(kcat) can use, and its node faults do what they say.

Part A drives the launcher as scripts do: 3 nodes, a topic kt with 4
partitions and replication factor 3, a control socket, a bootstrap file, and
stdin as a pipe. kcat produces 1000 keyed messages and a kcat balanced
consumer group (-G) reads all of them back; `leader` answers a node id;
SIGKILL of the leader's node moves the leadership and `broker up` brings the
node back into the ISR; a node paused past the session timeout loses its
leadership and comes back after `resume`; `topic`, `partitions`,
`delete-records` and `leader T P ID` change the cluster; a bad command makes
`--send` exit 1 and bad arguments exit 2 with a message. SIGTERM stops every
JVM and removes the bootstrap file and the socket.

Part B uses the Python API (kwalh.kafka) on the shared `kafka3` cluster and on
a 1-node cluster with an SSL listener (a test CA made with openssl).

Run: python3 -m pytest -q tests/integration/test_0010_kafka_local.py
($KWAL_KAFKA_VERSION=3.9.2 for the compatibility run).
"""
import json
import os
import select
import signal
import subprocess
import time
from pathlib import Path

import pytest

from kwalh.kafka import DEFAULT_VERSION, KafkaError, make_test_ca
from kwtest import kcat, wait_until

REPO = Path(__file__).resolve().parents[2]
KL = REPO / "tools" / "testkit" / "kwal-kafka-local"


# --------------------------------------------------------------- helpers --

def kcat_json(*args, timeout=30):
    return json.loads(kcat(*args, "-J", timeout=timeout).strip().splitlines()[-1])


def topic_md(bootstrap, topic):
    md = kcat_json("-L", "-b", bootstrap, "-t", topic, "-m", "5")
    (t,) = [t for t in md["topics"] if t["topic"] == topic]
    assert "error" not in t, t
    return {p["partition"]: p for p in t["partitions"]}


def produce(bootstrap, topic, lines, *extra):
    kcat("-P", "-b", bootstrap, "-t", topic, *extra, input="".join(f"{x}\n" for x in lines))


def consume_group(bootstrap, group, topic, timeout=90):
    """A kcat balanced consumer (-G) from the group's committed offsets (the
    beginning for a new group) until the end of every partition (-e):
    [(partition, offset, key, value)]."""
    got = kcat("-b", bootstrap, "-G", group, "-X", "auto.offset.reset=earliest", "-e", "-q",
               "-f", "%p %o %k %s\n", topic, timeout=timeout)
    out = []
    for line in got.splitlines():
        p, o, k, v = line.split(" ", 3)
        out.append((int(p), int(o), k, v))
    return out


class Launcher:
    """A running kwal-kafka-local and the ways to talk to it."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.sock = str(tmp / "ctl")
        self.bootstrap_file = tmp / "bootstrap"
        self.err = open(tmp / "kl.err", "w")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [str(KL), "--brokers", "3", "--topic", "kt:4:3", "--control", self.sock,
             "--version", os.environ.get("KWAL_KAFKA_VERSION", DEFAULT_VERSION),
             "--bootstrap-file", str(self.bootstrap_file), "--dir", str(tmp / "cluster")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err)
        self.bootstrap = self.read_line(180)
        self.startup_s = time.monotonic() - t0
        self.jvms = self.children()

    def read_line(self, timeout=60) -> str:
        """One line of the launcher's stdout (first: the bootstrap list)."""
        fd = self.proc.stdout.fileno()
        buf = b""
        deadline = time.monotonic() + timeout
        while not buf.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                pytest.fail(f"no line from kwal-kafka-local (exit {self.proc.poll()}); "
                            f"stderr:\n{self.stderr_tail()}")
            r, _, _ = select.select([fd], [], [], left)
            if r:
                b = os.read(fd, 1)
                if not b:
                    continue
                buf += b
        return buf.decode().rstrip("\n")

    def stdin_command(self, cmd: str, timeout=120) -> str:
        self.proc.stdin.write(cmd.encode() + b"\n")
        self.proc.stdin.flush()
        return self.read_line(timeout)

    def send(self, cmd: str, timeout=180) -> subprocess.CompletedProcess:
        return subprocess.run([str(KL), "--control", self.sock, "--send", cmd],
                              capture_output=True, text=True, timeout=timeout)

    def ok(self, cmd: str) -> str:
        """Send CMD; assert exit 0 and an 'ok' answer; return what follows."""
        r = self.send(cmd)
        assert r.returncode == 0 and r.stdout.startswith("ok"), \
            f"{cmd!r}: exit {r.returncode}, answer {r.stdout!r}\n{self.stderr_tail()}"
        return r.stdout.strip()[2:].strip()

    def leader(self, topic, partition) -> int:
        return int(self.ok(f"leader {topic} {partition}"))

    def children(self) -> list[int]:
        """Pids of the launcher's children that are JVMs (scans /proc: this
        kernel may lack /proc/PID/task/TID/children)."""
        pids = []
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                stat = (d / "stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                if ppid == self.proc.pid and b"java" in (d / "cmdline").read_bytes():
                    pids.append(int(d.name))
            except (OSError, ValueError, IndexError):
                pass
        return pids

    def stderr_tail(self, n=40) -> str:
        self.err.flush()
        return "\n".join((self.tmp / "kl.err").read_text().splitlines()[-n:])


@pytest.fixture(scope="module")
def kl(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kl0010")
    launcher = Launcher(tmp)
    print(f"\nkwal-kafka-local: 3 nodes + topic kt:4:3, first line after "
          f"{launcher.startup_s:.1f} s")
    yield launcher
    # SIGTERM stops every JVM, removes the bootstrap file and the socket.
    jvms = launcher.children() + launcher.jvms
    launcher.proc.send_signal(signal.SIGTERM)
    rc = launcher.proc.wait(timeout=90)
    launcher.err.close()
    assert rc == 0, launcher.stderr_tail()
    for pid in set(jvms):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        assert b"kafka.Kafka" not in cmdline, f"JVM {pid} left running"
    assert not launcher.bootstrap_file.exists()
    assert not Path(launcher.sock).exists()


# ------------------------------------------------------ A: the launcher --

def test_bad_arguments_exit_2():
    for args, msg in ((["--brokers", "x"], "--brokers"),
                      (["--brokers", "0"], "--brokers"),
                      (["--topic", "nocolon"], "--topic"),
                      (["--brokers", "1", "--topic", "a:2:3"], "replication factor"),
                      (["--send", "status"], "--send needs --control"),
                      (["--no-such-option"], "unrecognized arguments")):
        r = subprocess.run([str(KL), *args], capture_output=True, text=True, timeout=30)
        assert r.returncode == 2, (args, r.returncode, r.stderr)
        assert msg in r.stderr, (args, r.stderr)
        assert r.stdout == "", (args, r.stdout)


def test_first_line_is_the_bootstrap_list(kl):
    hosts = kl.bootstrap.split(",")
    assert len(hosts) == 3 and all(h.startswith("127.0.0.1:") for h in hosts), kl.bootstrap
    assert kl.bootstrap_file.read_text() == kl.bootstrap + "\n"
    md = kcat_json("-L", "-b", kl.bootstrap, "-m", "5")
    assert sorted(b["id"] for b in md["brokers"]) == [1, 2, 3]
    assert sorted(b["name"] for b in md["brokers"]) == sorted(hosts)
    assert md["controllerid"] in (1, 2, 3)
    parts = topic_md(kl.bootstrap, "kt")
    assert sorted(parts) == [0, 1, 2, 3]
    for p in parts.values():
        assert p["leader"] in (1, 2, 3)
        assert sorted(r["id"] for r in p["replicas"]) == [1, 2, 3]
    assert len(kl.jvms) == 3, kl.jvms


def test_stdin_commands(kl):
    assert kl.stdin_command("status") == "ok 1:running 2:running 3:running"
    assert kl.stdin_command("nonsense").startswith("error: unknown command")


def test_produce_and_consume_with_a_kcat_group(kl):
    produce(kl.bootstrap, "kt", [f"k{i}:v{i}" for i in range(1000)], "-K:")
    offsets = dict(x.split(":") for x in kl.ok("offsets kt").split())
    assert sum(int(v) for v in offsets.values()) == 1000, offsets
    assert len(offsets) == 4 and all(int(v) > 0 for v in offsets.values()), offsets
    got = consume_group(kl.bootstrap, "g0010", "kt")
    assert len(got) == 1000
    assert sorted(v for _, _, _, v in got) == sorted(f"v{i}" for i in range(1000))
    assert all(k == "k" + v[1:] for _, _, k, v in got)
    # The group committed its offsets: a second run of it reads nothing new.
    assert consume_group(kl.bootstrap, "g0010", "kt") == []


def test_leader_answers_a_node_id(kl):
    parts = topic_md(kl.bootstrap, "kt")
    for p in range(4):
        assert kl.leader("kt", p) == parts[p]["leader"]


def test_send_bad_command_exits_1(kl):
    for cmd in ("bogus", "leader nope 0", "leader kt 99", "kill 9", "broker sideways 1",
                "topic kt 4", "rtt 1 100"):
        r = kl.send(cmd)
        assert r.returncode == 1, (cmd, r.returncode, r.stdout)
        assert r.stdout.startswith("error: "), (cmd, r.stdout)
    r = subprocess.run([str(KL), "--control", str(kl.tmp / "nosock"), "--send", "status"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "cannot talk" in r.stderr


def test_kill_the_leader_moves_leadership_then_restart(kl):
    victim = kl.leader("kt", 0)
    kl.ok(f"kill {victim}")
    assert f"{victim}:stopped" in kl.ok("status")
    new = wait_until(lambda: (lambda x: x if x not in (victim, -1) else None)(
        kl.leader("kt", 0)), 30, f"kt/0 led by another node than {victim}")
    assert new in (1, 2, 3)
    # acks=all still works with 2 of 3 replicas (min.insync.replicas=2).
    produce(kl.bootstrap, "kt", [f"x{i}" for i in range(100)], "-X", "acks=all", "-p", "0")
    kl.ok(f"broker up {victim}")
    assert kl.ok("status") == "1:running 2:running 3:running"
    wait_until(lambda: victim in [r["id"] for r in topic_md(kl.bootstrap, "kt")[0]["isrs"]],
               60, f"node {victim} back in kt/0's ISR")
    offs = dict(x.split(":") for x in kl.ok("offsets kt").split())
    assert sum(int(v) for v in offs.values()) == 1100


def test_pause_and_resume(kl):
    victim = kl.leader("kt", 1)
    kl.ok(f"pause {victim}")
    assert f"{victim}:paused" in kl.ok("status")
    # Past broker.session.timeout.ms (4 s) the controller fences it.
    wait_until(lambda: kl.leader("kt", 1) not in (victim, -1), 30,
               f"kt/1 led by another node than paused {victim}")
    kl.ok(f"resume {victim}")
    assert f"{victim}:running" in kl.ok("status")
    wait_until(lambda: victim in [b["id"] for b in kcat_json(
        "-L", "-b", kl.bootstrap, "-m", "5")["brokers"]], 60,
        f"node {victim} listed again")
    wait_until(lambda: victim in [r["id"] for r in topic_md(kl.bootstrap, "kt")[1]["isrs"]],
               60, f"node {victim} back in kt/1's ISR")


def test_move_leader(kl):
    for p in (2, 3):
        cur = kl.leader("kt", p)
        to = 1 + cur % 3
        kl.ok(f"leader kt {p} {to}")
        assert kl.leader("kt", p) == to
        assert topic_md(kl.bootstrap, "kt")[p]["leader"] == to


def test_topic_partitions_delete_records(kl):
    kl.ok("topic t2 2 3 retention.ms=600000")
    assert len(topic_md(kl.bootstrap, "t2")) == 2
    kl.ok("partitions t2 4")
    parts = topic_md(kl.bootstrap, "t2")
    assert sorted(parts) == [0, 1, 2, 3] and all(p["leader"] > 0 for p in parts.values())
    produce(kl.bootstrap, "t2", [f"m{i}" for i in range(10)], "-p", "0")
    assert kl.ok("delete-records t2 0 5") == "5"
    out = kcat("-C", "-b", kl.bootstrap, "-t", "t2", "-p", "0", "-o", "beginning", "-e", "-q",
               "-f", "%o %s\n")
    assert out.split("\n")[:5] == [f"{i} m{i}" for i in range(5, 10)]
    # the old program's `create` still works
    kl.ok("create old 1")
    assert len(topic_md(kl.bootstrap, "old")) == 1


# ----------------------------------------------------- B: the Python API --

def test_api_on_shared_cluster(kafka3):
    kc = kafka3
    assert (kc.workdir / "bootstrap").read_text().strip() == kc.bootstrap
    kc.create_topic("api1", 3, rf=3, config={"retention.ms": "600000"})
    assert kc.end_offsets("api1") == {0: 0, 1: 0, 2: 0}
    produce(kc.bootstrap, "api1", [f"a{i}" for i in range(20)], "-p", "1")
    assert kc.end_offsets("api1") == {0: 0, 1: 20, 2: 0}
    assert kc.delete_records("api1", 1, 7) == 7
    kc.alter_topic_config("api1", {"retention.ms": "1200000", "cleanup.policy": "delete"})
    out = kc.run_tool("configs", "--bootstrap-server", kc.bootstrap, "--describe",
                      "--entity-type", "topics", "--entity-name", "api1").stdout
    assert "retention.ms=1200000" in out
    kc.add_partitions("api1", 5)
    assert sorted(kc.end_offsets("api1")) == [0, 1, 2, 3, 4]
    with pytest.raises(KafkaError):
        kc.create_topic("api1", 1)
    # stop the leader's node gracefully: leadership moves at once
    old = kc.leader("api1", 0)
    kc.stop_node(old)
    assert kc.node_state(old) == "stopped"
    assert kc.wait_leader("api1", 0, not_in=(old,), timeout=15) != old
    kc.start_node(old)
    kc.wait_topic("api1", 5, full_isr=True, timeout=60)
    kc.move_leader("api1", 0, old)
    assert kc.leader("api1", 0) == old
    assert all(kc.rss_kb(i) > 0 for i in kc.node_ids)


def test_api_ssl_listener(kafka_factory, tmp_path):
    ca = make_test_ca(tmp_path / "ca")
    kc = kafka_factory(nodes=1, ssl=ca, heap_mb=256)
    assert kc.ssl_bootstrap and kc.ssl_bootstrap != kc.bootstrap
    kc.create_topic("s", 1)
    ssl = ["-X", "security.protocol=ssl", "-X", f"ssl.ca.location={ca['ca_cert']}"]
    produce(kc.ssl_bootstrap, "s", ["over-tls"], *ssl)
    out = kcat("-C", "-b", kc.ssl_bootstrap, *ssl, "-t", "s", "-o", "beginning", "-e", "-q")
    assert out.strip() == "over-tls", out
    # A client that does not trust the test CA is refused.
    r = subprocess.run(["kcat", "-L", "-b", kc.ssl_bootstrap, "-X", "security.protocol=ssl",
                        "-m", "3"], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
