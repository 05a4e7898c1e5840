"""0013 -- kwal-kafka-mock, librdkafka's mock cluster as a program, is a Kafka
cluster kcat can use, and it takes fault commands.

Why a mock at all: every other test runs on a real Apache Kafka cluster
(DESIGN.md, "Test infrastructure"). librdkafka's mock cluster is kept only
for what a real broker cannot do on demand -- inject a protocol error on the
Nth request (`error API ERR COUNT`) -- and this test checks the program that
offers it. (It was 0010-kafka-mock.sh; 0010 is now the real cluster's
launcher, test_0010_kafka_local.py.)

Each test starts its own kwal-kafka-mock: 3 brokers, topic kt with 4
partitions, a --bootstrap-file, a --control socket, and stdin as a pipe.

a  the bootstrap file lists 3 loopback brokers and is the first line of
   stdout; kcat produces 1000 keyed records and consumes them back: exactly
   1000, 1000 distinct keys, every one of the 4 partitions used.
b  fault commands on both channels (stdin answers on stdout; the control
   socket through `kwal-kafka-mock --control PATH --send`): broker down/up
   and rtt answer ok, bad commands answer error: (and --send exits 1).
c  with every leader moved to broker 1 and broker 2 down, and then with 3
   pushed Fetch errors, kcat still reads all 1000 records; `create` makes a
   topic once and answers error: the second time.
d  SIGTERM: exit status 0, bootstrap file and socket removed; the end of
   stdin (a pipe) stops it too, with exit 0.

Outcomes come from exit statuses, the program's answers (its protocol) and
what kcat reads; kwal itself does not run here.
"""
import collections
import os
import signal
import stat
import subprocess

import pytest

from kwalh import proc
from kwtest import kcat, run, wait_until

PARTITIONS = 4
RECORDS = 1000


class Mock:
    """One kwal-kafka-mock with stdin on a pipe, stdout and stderr in files."""

    def __init__(self, bins, d):
        self.prog = bins.kafka_mock
        self.d = d
        self.bs_file = d / "bs"
        self.ctl = d / "ctl"
        self.out = d / "out"          # bootstrap line, then the answers to stdin
        self.err = d / "err"          # the cluster's log
        self.p = None
        self.bootstrap = None

    def start(self):
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.p = subprocess.Popen(
                [self.prog, "--brokers", "3", "--topic", f"kt:{PARTITIONS}", "--bootstrap-file",
                 str(self.bs_file), "--control", str(self.ctl)],
                stdin=subprocess.PIPE, stdout=out, stderr=err, text=True)
        wait_until(lambda: self.bs_file.exists() and self.bs_file.stat().st_size > 0, 30,
                   "the bootstrap file", self.alive, interval=0.1)
        self.bootstrap = self.bs_file.read_text().strip()
        wait_until(lambda: self.out_lines(), 20, "the bootstrap line on stdout", self.alive,
                   interval=0.1)
        wait_until(lambda: self.ctl.exists() and stat.S_ISSOCK(self.ctl.stat().st_mode), 20,
                   "the control socket", self.alive, interval=0.1)
        return self

    def alive(self):
        return self.p is not None and self.p.poll() is None

    def out_lines(self):
        return self.out.read_text().splitlines()

    def log_tail(self, n=40):
        lines = self.err.read_text(errors="replace").splitlines()[-n:]
        return "\n--- kwal-kafka-mock stderr (tail):\n" + "\n".join(lines)

    def stdin_cmd(self, command, want):
        """Send command on stdin; its answer (the next stdout line) starts with want."""
        before = len(self.out_lines())
        self.p.stdin.write(command + "\n")
        self.p.stdin.flush()
        wait_until(lambda: len(self.out_lines()) > before, 30, f"the answer to {command!r}",
                   self.alive, interval=0.1)
        got = self.out_lines()[before]
        assert got.startswith(want), f"stdin {command!r}: {got!r}, expected {want!r}..." \
            + self.log_tail()

    def ctl_cmd(self, command, rc, want):
        """The same over the control socket (--send); its exit status is rc."""
        r = run([self.prog, "--control", self.ctl, "--send", command], 40)
        got = (r.stdout + r.stderr).strip()
        assert r.returncode == rc, f"--send {command!r}: {r.both}"
        assert got.startswith(want), f"--send {command!r}: {got!r}, expected {want!r}..."

    def produce(self):
        lines = "".join(f"key{i}:value{i}\n" for i in range(1, RECORDS + 1))
        kcat("-P", "-b", self.bootstrap, "-t", "kt", "-K:", input=lines, timeout=120)

    def consume(self, what):
        """All of kt as [(partition, key)]; exactly RECORDS of them."""
        out = kcat("-C", "-b", self.bootstrap, "-t", "kt", "-e", "-q", "-o", "beginning",
                   "-f", "%p %k\\n", timeout=120)
        recs = [tuple(ln.split(" ", 1)) for ln in out.splitlines()]
        assert len(recs) == RECORDS, f"kcat -C ({what}): {len(recs)} records, expected " \
            f"{RECORDS}; {out[-3000:]}"
        return recs


@pytest.fixture
def mock(bins, tmp_path):
    m = Mock(bins, tmp_path)
    yield m.start()
    if m.p.stdin:
        m.p.stdin.close()
    proc.kill_wait(m.p, signal.SIGKILL)


def test_bootstrap_and_round_trip(mock):
    hosts = mock.bootstrap.split(",")
    assert len(hosts) == 3 and all(h.startswith("127.0.0.1:") for h in hosts), mock.bootstrap
    assert mock.out_lines()[0] == mock.bootstrap, "the first line of stdout is not the " \
        "bootstrap list"
    mock.produce()
    recs = mock.consume("no faults")
    assert len({k for _, k in recs}) == RECORDS, "keys are not distinct"
    per_part = collections.Counter(int(p) for p, _ in recs)
    assert sorted(per_part) == list(range(PARTITIONS)), f"partitions used: {per_part}"


def test_commands_on_both_channels(mock):
    mock.stdin_cmd("broker down 2", "ok")
    mock.stdin_cmd("broker up 2", "ok")
    mock.stdin_cmd("frobnicate 1", "error:")
    mock.stdin_cmd("broker down 7", "error:")
    mock.stdin_cmd("rtt 3 20", "ok")
    mock.stdin_cmd("rtt 3 0", "ok")
    mock.ctl_cmd("broker down 3", 0, "ok")
    mock.ctl_cmd("broker up 3", 0, "ok")
    mock.ctl_cmd("no such command", 1, "error:")
    mock.ctl_cmd("leader nosuchtopic 0 1", 1, "error:")
    mock.ctl_cmd("error Fetch NOT_LEADER_FOR_PARTITION x", 1, "error:")
    assert mock.alive()


def test_consume_through_faults(mock):
    mock.produce()
    # a broker down keeps its partitions (the mock moves no leader): move them
    for p in range(PARTITIONS):
        mock.ctl_cmd(f"leader kt {p} 1", 0, "ok")
    mock.ctl_cmd("broker down 2", 0, "ok")
    mock.consume("all leaders on broker 1, broker 2 down")
    mock.ctl_cmd("broker up 2", 0, "ok")

    mock.stdin_cmd("error Fetch NOT_LEADER_FOR_PARTITION 3", "ok")
    mock.consume("after 3 injected Fetch errors")
    mock.stdin_cmd("create kt2 2", "ok")
    mock.stdin_cmd("create kt2 2", "error:")


def exits_clean(mock, after):
    """The mock exits 0 within 30 s, its bootstrap file removed."""
    try:
        rc = mock.p.wait(30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running 30 s {after}")
    assert rc == 0, f"exit status {rc} {after}" + mock.log_tail()
    assert not mock.bs_file.exists(), "bootstrap file left behind"


def test_sigterm(mock):
    mock.p.send_signal(signal.SIGTERM)
    exits_clean(mock, "after SIGTERM")
    assert not os.path.exists(mock.ctl), "control socket left behind"


def test_end_of_stdin(mock):
    mock.p.stdin.close()
    exits_clean(mock, "at the end of stdin")
