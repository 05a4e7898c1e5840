"""services -- the servers kwal talks to, started and stopped from Python.

ZooKeeper is Debian's server through kwal-zk-local (start, stop, restart,
status; get and ls read znodes). Kafka is one of two backends behind one
interface (KafkaBackend):

  real  a real Apache Kafka KRaft cluster (kwalh.kafka.KafkaCluster): 1 or 3
        nodes, topics with RF = nodes and min.insync.replicas=2 on 3 nodes;
        node faults: stop, SIGKILL, SIGSTOP, restart, leader moves. It has
        no per-broker response delay; `slow` is emulated with SIGSTOP /
        SIGCONT cycles (the broker hangs for MS, runs for 100 ms, ...).
  mock  librdkafka's mock cluster (kwal-kafka-mock with a --control socket):
        rtt (a slow broker), broker down / up, leader moves; nothing on disk.

Nodes are numbered from 1 in plans and here (broker ids of the mock); the
real backend maps them to KafkaCluster's own numbering.
"""

import os
import threading
import time

from . import proc


class ZooKeeper:
    """One local ZooKeeper server in directory `dir` (kwal-zk-local)."""

    def __init__(self, bins, directory, tick_ms=None):
        self.bins = bins
        self.dir = directory
        self.tick_ms = tick_ms
        self.connect = None

    def _tick(self):
        return ["--tick-ms", str(self.tick_ms)] if self.tick_ms else []

    def start(self, timeout=60):
        rc, out, err = proc.run([self.bins.zk_local, "start", "--dir", self.dir] + self._tick()
                                + ["--timeout", str(timeout)], timeout + 30)
        if rc != 0:
            raise proc.HarnessError("kwal-zk-local start failed: %s" % _tail(err))
        self.connect = out.split()[0] if out.split() else self._read_connect()
        return self.connect

    def _read_connect(self):
        with open(os.path.join(self.dir, "connect")) as f:
            return f.read().strip()

    def restart(self, timeout=60, tries=5):
        """(ok, message). When the restart's start finds the port still taken
        (kwal-zk-local has seen it accept connections just after the old
        server was gone), start again on the same port a few times."""
        rc, out, err = proc.run([self.bins.zk_local, "restart", "--dir", self.dir]
                                + self._tick() + ["--timeout", str(timeout)], timeout + 30)
        msgs = []
        while rc != 0 and "already in use" in err and tries > 1:
            msgs.append(_tail(err, 1))
            tries -= 1
            time.sleep(1)
            rc, out, err = proc.run([self.bins.zk_local, "start", "--dir", self.dir]
                                    + self._tick() + ["--timeout", str(timeout)], timeout + 30)
        if rc == 0 and msgs:
            return True, "started again after: " + "; ".join(msgs)
        return rc == 0, _tail(err or out)

    def serving(self):
        rc, _, _ = proc.run([self.bins.zk_local, "status", "--dir", self.dir, "--timeout", "5"],
                            30)
        return rc == 0

    def stop(self):
        proc.run([self.bins.zk_local, "stop", "--dir", self.dir], 60)

    def get(self, path, timeout=10, tries=3):
        """A znode's data as text, or None (no such node; or no answer from
        the server in `tries` attempts -- a busy server's slow answer is
        asked again rather than read as a missing node)."""
        for _ in range(tries):
            rc, out, err = proc.run([self.bins.zk_local, "get", "--connect", self.connect,
                                     "--timeout", str(max(1, timeout // 2)), path], timeout)
            if rc == 0:
                return out.strip()
            if "no such node" in (err or ""):
                return None
        return None

    def children(self, path, timeout=30):
        rc, out, _ = proc.run([self.bins.zk_local, "ls", "--connect", self.connect, path],
                              timeout)
        return out.split() if rc == 0 else []

    def offsets(self, group, topic, partitions=None):
        """{partition: offset} of /consumers/<group>/offsets/<topic>; with
        partitions (a count), those partitions only, None where missing."""
        base = "/consumers/%s/offsets/%s" % (group, topic)
        parts = range(partitions) if partitions is not None else \
            sorted(int(c) for c in self.children(base) if c.isdigit())
        res = {}
        for p in parts:
            v = self.get("%s/%d" % (base, p))
            res[p] = int(v) if v is not None and v.isdigit() else None
        return res

    def offsets_sum(self, group, topic, partitions=None):
        return sum(v or 0 for v in self.offsets(group, topic, partitions).values())


def _tail(text, n=3):
    return " ".join(text.strip().splitlines()[-n:])


# --- Kafka ------------------------------------------------------------------

class KafkaBackend:
    """What a runner needs of a Kafka cluster. `faults` names the node
    faults the backend can inject (a subset of FAULTS)."""

    FAULTS = ("slow", "down", "kill", "pause", "leader")
    kind = "?"
    faults = ()
    nodes = 3
    bootstrap = None

    def start(self):
        raise NotImplementedError

    def stop(self):
        raise NotImplementedError

    def alive(self):
        return True

    def revive(self):
        """Bring a dead cluster (or node) back."""
        self.stop()
        self.start()

    def last_log(self, n=1):
        return ""

    def create_topic(self, name, partitions):
        raise NotImplementedError

    def end_offsets(self, topic):
        """{partition: end offset}, or None when the backend cannot say."""
        return None

    # node faults; each returns (ok, message)
    def slow(self, node, ms):
        return False, "not supported"

    def unslow(self, node):
        return False, "not supported"

    def down(self, node):
        return False, "not supported"

    def up(self, node):
        return False, "not supported"

    def kill(self, node):
        return False, "not supported"

    def restart(self, node):
        return False, "not supported"

    def pause(self, node):
        return False, "not supported"

    def resume(self, node):
        return False, "not supported"

    def move_leader(self, topic, partition, node):
        return False, "not supported"

    def describe(self):
        return "%s Kafka (%d nodes) %s" % (self.kind, self.nodes, self.bootstrap)


class MockKafka(KafkaBackend):
    """kwal-kafka-mock with a --control socket in `directory`."""

    kind = "mock"
    faults = ("slow", "down", "leader")

    def __init__(self, bins, directory, nodes=3, topics=()):
        self.bins = bins
        self.dir = directory
        self.nodes = nodes
        self.topics = list(topics)        # NAME:P created at start
        self.sock = os.path.join(directory, "kl.sock")
        self.bsfile = os.path.join(directory, "bootstrap")
        self.log = os.path.join(directory, "kafka.log")
        self.p = None

    def start(self, timeout=30):
        os.makedirs(self.dir, exist_ok=True)
        for f in (self.sock, self.bsfile):
            if os.path.exists(f):
                os.unlink(f)
        argv = [self.bins.kafka_mock, "--brokers", str(self.nodes), "--control", self.sock,
                "--bootstrap-file", self.bsfile, "--no-stdin"]
        for t in self.topics:
            argv += ["--topic", t]
        self.p = proc.spawn(argv, stdout=os.path.join(self.dir, "kafka.out"),
                            stderr=">>" + self.log)
        deadline = time.monotonic() + timeout
        while not (os.path.exists(self.bsfile) and os.path.getsize(self.bsfile) > 0
                   and os.path.exists(self.sock)):
            if self.p.poll() is not None:
                raise proc.HarnessError("kwal-kafka-mock exited: %s" % self.last_log(3))
            if time.monotonic() > deadline:
                raise proc.HarnessError("kwal-kafka-mock did not start within %d s" % timeout)
            time.sleep(0.1)
        with open(self.bsfile) as f:
            self.bootstrap = f.read().strip()
        return self.bootstrap

    def last_log(self, n=1):
        try:
            with open(self.log, errors="replace") as f:
                return _tail(f.read(), n)
        except OSError:
            return ""

    def alive(self):
        return self.p is not None and self.p.poll() is None

    def stop(self):
        if self.p is not None:
            proc.kill_wait(self.p, __import__("signal").SIGTERM, grace=10)
            self.p = None

    def send(self, command):
        """(ok, answer) of one control command."""
        rc, out, err = proc.run([self.bins.kafka_mock, "--control", self.sock, "--send",
                                 command], 40)
        ans = (out + err).strip()
        return rc == 0 and ans == "ok", ans

    def create_topic(self, name, partitions):
        return self.send("create %s %d" % (name, partitions))

    def slow(self, node, ms):
        return self.send("rtt %d %d" % (node, ms))

    def unslow(self, node):
        return self.send("rtt %d 0" % node)

    def down(self, node):
        return self.send("broker down %d" % node)

    def up(self, node):
        return self.send("broker up %d" % node)

    def move_leader(self, topic, partition, node):
        return self.send("leader %s %d %d" % (topic, partition, node))


class RealKafka(KafkaBackend):
    """A real Apache Kafka KRaft cluster (kwalh.kafka.KafkaCluster)."""

    kind = "real"
    faults = ("slow", "down", "kill", "pause", "leader")
    # consumer sessions of a few seconds (chaos uses 3 s), quick first joins
    BROKER_PROPS = {
        "group.min.session.timeout.ms": "1000",
        "group.initial.rebalance.delay.ms": "0",
    }

    def __init__(self, directory, nodes=3, version=None, heap_mb=None, broker_props=None):
        from .kafka import KafkaCluster     # someone else's module; imported on use
        props = dict(self.BROKER_PROPS)
        props.update(broker_props or {})
        kw = {"nodes": nodes, "broker_props": props}
        if version:
            kw["version"] = version
        if heap_mb:
            kw["heap_mb"] = heap_mb
        self.dir = directory
        self.nodes = nodes
        self.cluster = KafkaCluster(directory, **kw)
        self._slow = {}                     # node -> (stop event, thread)
        self._lock = threading.Lock()

    def start(self):
        self.cluster.start()
        self.bootstrap = self.cluster.bootstrap
        return self.bootstrap

    def stop(self):
        for n in list(self._slow):
            self.unslow(n)
        self.cluster.stop()

    def alive(self):
        """Every node runs (none stopped, none paused)."""
        return all(self.cluster.node_state(i) == "running" for i in self.cluster.node_ids)

    def revive(self):
        """Resume paused nodes, start stopped ones."""
        for i in self.cluster.node_ids:
            st = self.cluster.node_state(i)
            if st == "paused":
                self.cluster.resume_node(i)
            elif st == "stopped":
                self.cluster.start_node(i)

    def last_log(self, n=1):
        bad = [i for i in self.cluster.node_ids if self.cluster.node_state(i) != "running"]
        return "node(s) %s not running" % bad if bad else ""

    def _i(self, node):
        """Our node number (1..N) in KafkaCluster's numbering (the same)."""
        return node

    def _call(self, what, *args):
        try:
            r = getattr(self.cluster, what)(*args)
            return True, "ok" if r is None or r is True else str(r)
        except Exception as e:      # noqa: BLE001 -- report, never raise into a trial
            return False, "%s: %s" % (type(e).__name__, e)

    def create_topic(self, name, partitions):
        rf = min(3, self.nodes)
        cfg = {"min.insync.replicas": "2"} if rf >= 3 else None
        return self._call("create_topic", name, partitions, rf, cfg)

    def end_offsets(self, topic):
        try:
            r = self.cluster.end_offsets(topic)
            return {int(k): int(v) for k, v in dict(r).items()}
        except Exception:           # noqa: BLE001
            return None

    def down(self, node):
        return self._call("stop_node", self._i(node))

    def up(self, node):
        return self._call("start_node", self._i(node))

    def kill(self, node):
        return self._call("kill_node", self._i(node))

    def restart(self, node):
        return self._call("start_node", self._i(node))

    def pause(self, node):
        return self._call("pause_node", self._i(node))

    def resume(self, node):
        return self._call("resume_node", self._i(node))

    def move_leader(self, topic, partition, node):
        return self._call("move_leader", topic, partition, self._i(node))

    def slow(self, node, ms):
        """Hang the broker MS ms, let it run 100 ms, again, until unslow()."""
        ok, why = self._call("pause_node", self._i(node))
        if not ok:
            return ok, why
        self._call("resume_node", self._i(node))
        stop = threading.Event()

        def cycle():
            while not stop.is_set():
                self._call("pause_node", self._i(node))
                stop.wait(ms / 1000.0)
                self._call("resume_node", self._i(node))
                stop.wait(0.1)

        t = threading.Thread(target=cycle, name="slow-b%d" % node, daemon=True)
        with self._lock:
            self._slow[node] = (stop, t)
        t.start()
        return True, "ok"

    def unslow(self, node):
        with self._lock:
            st = self._slow.pop(node, None)
        if st is None:
            return True, "ok"
        st[0].set()
        st[1].join()
        return self._call("resume_node", self._i(node))


def kafka_kinds_available():
    """'real' when kwalh.kafka can be imported, and 'mock'."""
    kinds = ["mock"]
    try:
        from . import kafka  # noqa: F401
        kinds.insert(0, "real")
    except Exception:               # noqa: BLE001 -- absent or broken: no real cluster
        pass
    return kinds


def resolve_kafka_kind(kind):
    """auto -> real when available, else mock."""
    if kind == "auto":
        return kafka_kinds_available()[0]
    return kind


def make_kafka(kind, bins, directory, nodes=3, topics=()):
    """A backend of kind 'real' or 'mock' (not started). topics: NAME:P the
    mock creates at start (the real backend creates them after start)."""
    if kind == "real":
        return RealKafka(directory, nodes=nodes)
    return MockKafka(bins, directory, nodes=nodes, topics=topics)


def start_local(bins, zk_dir, kafka_dir, nodes=1):
    """A local ZooKeeper and a real Kafka cluster of nodes for a runner:
    (zk, zk_connect, kafka, bootstrap). HarnessError when either does not
    start; whatever did start is stopped first."""
    zk = ZooKeeper(bins, zk_dir)
    zk_connect = zk.start()
    kafka = make_kafka("real", bins, kafka_dir, nodes=nodes)
    try:
        bs = kafka.start()
    except Exception as e:              # noqa: BLE001 -- the cluster's own errors too
        for part in (kafka, zk):
            try:
                part.stop()
            except Exception:           # noqa: BLE001 -- the first error is the one to see
                pass
        if isinstance(e, proc.HarnessError):
            raise
        raise proc.HarnessError("the Kafka cluster did not start: %s" % e)
    return zk, zk_connect, kafka, bs


def create_topic(kafka, tools, bootstrap, name, partitions):
    """Create a topic: on the cluster a runner started (kafka), else with
    Kafka's TopicCommand (tools, a KafkaCluster for its tools) on the one at
    bootstrap. HarnessError naming the topic when it cannot."""
    try:
        if kafka is not None:
            ok, why = kafka.create_topic(name, partitions)
            if not ok:
                raise proc.HarnessError(why)
            return
        argv = tools.tool_cmd("topics", "--bootstrap-server", bootstrap, "--create",
                              "--topic", name, "--partitions", str(partitions))
        rc, _, err = proc.run(argv, 120)
        if rc != 0:
            raise proc.HarnessError(err.strip()[-500:])
    except proc.HarnessError as e:
        raise proc.HarnessError("cannot create topic %s (%d partitions): %s"
                                % (name, partitions, e))
