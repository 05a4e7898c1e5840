"""kwalh.kafka -- a real Apache Kafka cluster on loopback for kwal's tests.

DESIGN.md ("Test infrastructure") asks for a real broker: this module runs 1 or
3 (any N up to 9) combined broker+controller KRaft nodes of a pinned Apache
Kafka release, each a child JVM with a bounded heap, and lets a test stop,
SIGKILL, SIGSTOP and restart single nodes. Python 3.11 standard library only.

How it works
------------
Jars. `tools/testkit/fetch-kafka.sh VERSION` (Maven, tools/testkit/kafka/pom.xml)
puts Kafka's jars in `<repo>/.deps/kafka-VERSION/libs/` once; it is a no-op
afterwards, so the tests run offline. Every JVM runs with `-cp 'libs/*'`.

Layout of a cluster's workdir (the caller owns it; nothing is deleted):

    workdir/cluster.json        cluster id, version, every node's ports
    workdir/bootstrap           "127.0.0.1:P1,127.0.0.1:P2,..." (atomic write)
    workdir/ssl_bootstrap       the same for the SSL listener (ssl= only)
    workdir/log4j2.properties   broker logging: WARN and up to nodeI/server.log
    workdir/log4j.properties    the same for Kafka 3.x (reload4j)
    workdir/tools-log4j*.*      tool logging: WARN and up to stderr
    workdir/nodeI/server.properties, nodeI/data/ (log.dirs), nodeI/server.log,
    workdir/nodeI/stdout, nodeI/stderr, nodeI/pid

start(). It picks free loopback ports in 26000-31999 (below the kernel's
ephemeral range, so no client socket takes them while a node is down: a
restarted node gets the same ports), one for the controller listener and one
for the PLAINTEXT listener of each node (plus one for SSL). Each node's
server.properties says process.roles=broker,controller, node.id=I, a static
controller.quorum.voters list, advertised 127.0.0.1 listeners, and test
settings (replication factors that fit N, no topic auto-creation, no initial
rebalance delay, 8 MiB segments, fast failure detection; see
_server_properties()). A random cluster id formats every node's storage with
`kafka.tools.StorageTool format` (in parallel). Then each node starts as
`java -Xmx... kafka.Kafka server.properties` in its own session, and start()
polls every node with `kcat -L -J` until each one answers metadata that lists
every running node and a controller. The bootstrap list goes to
workdir/bootstrap. A node that exits or times out raises KafkaStartError with
the tail of its server.log and stderr; a port taken in the meantime by someone
else makes the first start pick new ports and try again.

Administration. Reads go through kcat (milliseconds): metadata, leaders and
ISR with `kcat -L -J`, end offsets with `kcat -Q` (ListOffsets, timestamp -1).
Writes go through Kafka's own admin tools from the same jars
(TopicCommand, DeleteRecordsCommand, ConfigCommand, ReassignPartitionsCommand,
LeaderElectionCommand), whose class names differ between 3.9 and 4.x and are
found in the jars. A JVM tool costs about 1 s of start-up on 2 cores; a
class-data-sharing archive (AppCDS, made by the first tool run and kept next
to the jars) brings that to about 0.5 s, and one made by the first broker that
stops gracefully halves a broker's start-up. Every write waits until the
metadata of every serving node shows the result (each partition led).

Faults. stop_node() sends SIGTERM (controlled shutdown) and waits, kill_node()
SIGKILL, pause_node()/resume_node() SIGSTOP/SIGCONT, start_node() restarts a
node on its ports and data. move_leader() reorders the partition's replica
list with a reassignment so that the target is the preferred replica, then
runs a preferred leader election (auto.leader.rebalance.enable is off, so the
leader stays where a test puts it).

stop() sends SIGTERM to every node at once and SIGKILLs what is left after
its timeout. The node that stops last, if it leads the KRaft quorum, waits 5 s
(hard-coded in Kafka) for voters that are gone; its broker side has already
shut down cleanly by then, so stop() gives it LAST_NODE_GRACE (2 s) and then
SIGKILLs it.

Measured on the 2-core machine (Kafka 4.1.1, while other test suites ran,
load 5-9): a 1-node start (format + boot + ready) 2.1-2.4 s, 3 nodes 6-7 s
(3.2 s and 9.4-11 s without the AppCDS archives); a tool (create_topic)
0.5-1.1 s; an idle node's RSS 170-190 MiB with -Xmx512m -Xms128m.

Never leaving JVMs behind: stop() is idempotent and safe at any time; every
started cluster is stopped by an atexit hook; and each JVM gets
PR_SET_PDEATHSIG=SIGKILL when it is started from the main thread, so it dies
with this process even after a SIGKILL (from another thread the JVM would die
with that thread, so there only atexit and stop() apply). Each node's pid is
also written to nodeI/pid; start() on a workdir kills a JVM still running from
an earlier process there.

Example:

    from kwalh.kafka import KafkaCluster
    with KafkaCluster("/tmp/k", nodes=3) as kc:
        kc.create_topic("t", 4, rf=3)
        kc.kill_node(kc.leader("t", 0))
        ...
"""
from __future__ import annotations

import atexit
import base64
import ctypes
import ctypes.util
import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import zipfile
from pathlib import Path

DEFAULT_VERSION = "4.1.1"
MAX_HEAP_MB = 512
MAX_NODES = 9
PORT_LO, PORT_HI = 26000, 32000          # [lo, hi): below ip_local_port_range;
                                         # kwal-zk-local takes 20000-25999

__all__ = ["KafkaCluster", "KafkaError", "KafkaStartError", "make_test_ca",
           "kafka_libs", "free_port", "repo_root", "DEFAULT_VERSION"]


class KafkaError(RuntimeError):
    """A Kafka tool, kcat, or the cluster failed; the message says why."""


class KafkaStartError(KafkaError):
    """A node did not come up; the message ends with its log's tail."""


# ------------------------------------------------------------------ paths --

def repo_root() -> Path:
    """The kwal checkout this file belongs to (tools/harness/kwalh/ -> repo)."""
    return Path(__file__).resolve().parents[3]


def kafka_libs(version: str = DEFAULT_VERSION) -> Path:
    """The folder of Kafka VERSION's jars, fetching them on first use.

    Runs tools/testkit/fetch-kafka.sh, which does nothing (and needs no
    network) when the jars are already in <repo>/.deps/kafka-VERSION/libs.
    """
    script = repo_root() / "tools" / "testkit" / "fetch-kafka.sh"
    r = subprocess.run([str(script), version], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True)
    libs = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
    if r.returncode != 0 or not libs or not Path(libs).is_dir():
        raise KafkaError(f"cannot get Kafka {version}'s jars ({script}, exit "
                         f"{r.returncode}): {r.stderr.strip()[-2000:]}")
    return Path(libs)


# Main classes by role; the first one present in the jars wins (Kafka moved
# the admin tools from core, Scala, to kafka-tools, Java, between 3.x and 4.x).
_TOOL_CLASSES = {
    "server": ["kafka.Kafka"],
    "storage": ["kafka.tools.StorageTool", "org.apache.kafka.tools.StorageTool"],
    "topics": ["org.apache.kafka.tools.TopicCommand", "kafka.admin.TopicCommand"],
    "delete-records": ["org.apache.kafka.tools.DeleteRecordsCommand",
                       "kafka.admin.DeleteRecordsCommand"],
    "configs": ["org.apache.kafka.tools.ConfigCommand", "kafka.admin.ConfigCommand"],
    "reassign": ["org.apache.kafka.tools.reassign.ReassignPartitionsCommand",
                 "kafka.admin.ReassignPartitionsCommand"],
    "leader-election": ["org.apache.kafka.tools.LeaderElectionCommand",
                        "kafka.admin.LeaderElectionCommand"],
    "get-offsets": ["org.apache.kafka.tools.GetOffsetShell", "kafka.tools.GetOffsetShell"],
    "consumer-groups": ["org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
                        "kafka.admin.ConsumerGroupCommand"],
    "console-consumer": ["org.apache.kafka.tools.consumer.ConsoleConsumer",
                         "kafka.tools.ConsoleConsumer"],
    "console-producer": ["org.apache.kafka.tools.ConsoleProducer",
                         "kafka.tools.ConsoleProducer"],
}
_class_cache: dict[Path, dict[str, str]] = {}


def _tool_classes(libs: Path) -> dict[str, str]:
    """Role -> main class, for the classes the jars in libs contain."""
    if libs in _class_cache:
        return _class_cache[libs]
    present: set[str] = set()
    for jar in sorted(libs.glob("kafka*.jar")):
        with zipfile.ZipFile(jar) as z:
            present.update(n[:-6].replace("/", ".") for n in z.namelist()
                           if n.endswith(".class") and "$" not in n)
    found = {}
    for role, names in _TOOL_CLASSES.items():
        for n in names:
            if n in present:
                found[role] = n
                break
    for role in ("server", "storage"):
        if role not in found:
            raise KafkaError(f"no {role} class ({_TOOL_CLASSES[role]}) in {libs}")
    _class_cache[libs] = found
    return found


# ------------------------------------------------------------------ ports --

_ports_given: set[int] = set()            # never hand out a port twice per process
_ports_lock = threading.Lock()


def _tcp_accepts(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    """A loopback TCP port in 26000-31999 that nothing uses right now.

    Not from the ephemeral range: there any client socket may take the port
    while a node is down for a restart. A small race remains (someone may bind
    it before the node does); start() retries with new ports on a bind error.
    """
    rnd = random.SystemRandom()
    with _ports_lock:
        for _ in range(500):
            port = rnd.randrange(PORT_LO, PORT_HI)
            if port in _ports_given:
                continue
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind(("127.0.0.1", port))    # no SO_REUSEADDR: TIME_WAIT counts
            except OSError:
                continue
            finally:
                s.close()
            if _tcp_accepts(port, timeout=0.2):
                continue
            _ports_given.add(port)
            return port
    raise KafkaError(f"no free loopback port in {PORT_LO}..{PORT_HI - 1}")


# --------------------------------------------------------------- children --

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_PR_SET_PDEATHSIG = 1


def _child_setup_factory():
    """A preexec_fn that makes the child die (SIGKILL) when its parent does.

    Linux ties PDEATHSIG to the thread that forked, so it is only used when
    called from the main thread (see the module docstring).
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    parent = os.getpid()

    def setup():
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:         # the parent died before prctl
            os.kill(os.getpid(), signal.SIGKILL)
    return setup


def _tail(path: Path, lines: int = 30) -> str:
    try:
        data = path.read_bytes()[-16384:].decode("utf-8", "replace")
    except OSError:
        return f"({path}: missing)"
    out = data.splitlines()[-lines:]
    return "\n".join(out) if out else f"({path}: empty)"


def _write_atomic(path: Path, text: str) -> None:
    """Write, fsync, rename: readers never see a partial file."""
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    j = shutil.which("java")
    if not j:
        raise KafkaError("no java on PATH (Java 17 is needed)")
    return j


def _kcat() -> str:
    k = shutil.which("kcat") or shutil.which("kafkacat")
    if not k:
        raise KafkaError("no kcat on PATH (tools/install-deps.sh installs it)")
    return k


def _cluster_id() -> str:
    """A Kafka Uuid as `kafka-storage random-uuid` prints it: 16 random bytes,
    URL-safe base64 without padding, never starting with '-'."""
    while True:
        cid = base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


# --------------------------------------------------------------- test CA --

def make_test_ca(directory, password: str = "kwal-test",
                 hosts=("127.0.0.1", "localhost"), days: int = 3650) -> dict:
    """Make a test CA, a broker key/certificate and a client key/certificate
    with the openssl CLI, in PEM form only (Kafka reads PEM key and trust
    stores itself: ssl.keystore.type=PEM), under DIRECTORY.

    Returns a dict usable as KafkaCluster(ssl=...):
        keystore      broker private key (encrypted PKCS#8) + certificate chain
        key_password  the key's password
        truststore    the CA certificate (PEM), = ca_cert
        ca_cert, ca_key
        broker_cert, broker_key (unencrypted)
        client_cert, client_key (unencrypted, for librdkafka's
                      ssl.certificate.location / ssl.key.location)
        client_auth   "none" (set to "required" for mutual TLS)
    The broker certificate names every entry of HOSTS (IP or DNS) as a
    subjectAltName, so clients that verify host names accept it.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    ossl = shutil.which("openssl")
    if not ossl:
        raise KafkaError("no openssl on PATH")

    def run(*args):
        r = subprocess.run([ossl, *args], cwd=d, capture_output=True, text=True)
        if r.returncode != 0:
            raise KafkaError(f"openssl {' '.join(args)}: {r.stderr.strip()}")

    sans = ",".join(("IP:" if re.fullmatch(r"[0-9.]+|[0-9a-fA-F:]+:[0-9a-fA-F:]*", h)
                     else "DNS:") + h for h in hosts)
    (d / "broker.ext").write_text(
        f"subjectAltName={sans}\nextendedKeyUsage=serverAuth,clientAuth\n"
        "basicConstraints=CA:FALSE\n")
    (d / "client.ext").write_text("extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n")
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
        "-out", "ca.pem", "-days", str(days), "-subj", "/CN=kwal test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    for who, cn in (("broker", hosts[0]), ("client", "kwal-test-client")):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{who}.key",
            "-out", f"{who}.csr", "-subj", f"/CN={cn}")
        run("x509", "-req", "-in", f"{who}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{who}.pem", "-days", str(days),
            "-extfile", f"{who}.ext")
    # Kafka's PEM key store wants an encrypted PKCS#8 key (ssl.key.password);
    # PBE-SHA1-3DES is a scheme Java's EncryptedPrivateKeyInfo decodes by name.
    run("pkcs8", "-topk8", "-in", "broker.key", "-out", "broker.p8",
        "-v1", "PBE-SHA1-3DES", "-passout", f"pass:{password}")
    (d / "broker-keystore.pem").write_text(
        (d / "broker.p8").read_text() + (d / "broker.pem").read_text())
    for f in ("ca.key", "broker.key", "client.key", "broker.p8", "broker-keystore.pem"):
        os.chmod(d / f, 0o600)
    return {
        "keystore": str(d / "broker-keystore.pem"),
        "key_password": password,
        "truststore": str(d / "ca.pem"),
        "ca_cert": str(d / "ca.pem"),
        "ca_key": str(d / "ca.key"),
        "broker_cert": str(d / "broker.pem"),
        "broker_key": str(d / "broker.key"),
        "client_cert": str(d / "client.pem"),
        "client_key": str(d / "client.key"),
        "client_auth": "none",
    }


# ------------------------------------------------------------------- CDS --

def _cds_key(java: str, libs: Path, opts: list[str], role: str) -> str:
    """Identifies a class-data-sharing archive: the JVM binary, the jars, the
    JVM options that shape the archive, and the role (broker or tools)."""
    st = os.stat(os.path.realpath(java))
    h = hashlib.sha1()
    h.update(f"{os.path.realpath(java)}:{st.st_size}:{st.st_mtime_ns}:{role}".encode())
    h.update(" ".join(opts).encode())
    for jar in sorted(p.name for p in libs.iterdir()):
        h.update(jar.encode())
    return h.hexdigest()[:16]


class _Cds:
    """One AppCDS archive (JDK 17 dynamic archive) for one role.

    opts() gives either -XX:SharedArchiveFile=FINAL when the archive exists,
    or (for the first JVM of this role, once per process) a temporary
    -XX:ArchiveClassesAtExit=TMP; publish() renames TMP to FINAL after that
    JVM exited normally. A missing, stale or foreign archive only costs speed:
    the JVM then runs without it (-Xshare:auto, its warnings silenced).
    """

    def __init__(self, directory: Path, key: str, role: str):
        self.final = directory / f"{role}-{key}.jsa"
        self.directory = directory
        self.dumping = False
        self.lock = threading.Lock()

    def opts(self) -> tuple[list[str], Path | None]:
        quiet = ["-Xlog:cds=off", "-Xlog:cds+dynamic=off"]
        if self.final.exists():
            return [f"-XX:SharedArchiveFile={self.final}", *quiet], None
        with self.lock:
            if self.dumping:
                return [], None
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
            except OSError:
                return [], None
            if not os.access(self.directory, os.W_OK):
                return [], None
            self.dumping = True
        tmp = self.directory / f".{self.final.name}.{os.getpid()}.{random.randrange(1 << 30)}"
        return [f"-XX:ArchiveClassesAtExit={tmp}", *quiet], tmp

    def publish(self, tmp: Path | None, ok: bool) -> None:
        if tmp is None:
            return
        try:
            if ok and tmp.exists() and tmp.stat().st_size > 0:
                os.replace(tmp, self.final)
            else:
                tmp.unlink(missing_ok=True)
        except OSError:
            pass
        with self.lock:
            self.dumping = False


# --------------------------------------------------------------- logging --

_LOG4J2_BROKER = """\
# Broker logging (Kafka 4.x, log4j2): {level} and up to <node dir>/server.log.
status = error
name = kwal-test-broker
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = ${{sys:kafka.logs.dir}}/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = {level}
rootLogger.appenderRef.file.ref = FILE
"""
_LOG4J1_BROKER = """\
# Broker logging (Kafka 3.x, reload4j): {level} and up to <node dir>/server.log.
log4j.rootLogger={level}, file
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File=${{kafka.logs.dir}}/server.log
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
"""
_LOG4J2_TOOLS = """\
# Tool logging (Kafka 4.x, log4j2): WARN and up to stderr.
status = error
name = kwal-test-tools
appender.err.type = Console
appender.err.name = STDERR
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.err.ref = STDERR
"""
_LOG4J1_TOOLS = """\
# Tool logging (Kafka 3.x, reload4j): WARN and up to stderr.
log4j.rootLogger=WARN, stderr
log4j.appender.stderr=org.apache.log4j.ConsoleAppender
log4j.appender.stderr.Target=System.err
log4j.appender.stderr.layout=org.apache.log4j.PatternLayout
log4j.appender.stderr.layout.ConversionPattern=[%d] %p %m (%c)%n
"""


# ------------------------------------------------------------------ nodes --

class _Node:
    """One combined broker+controller JVM. state: stopped|running|paused."""

    def __init__(self, nid: int, directory: Path):
        self.id = nid
        self.dir = directory
        self.controller_port = 0
        self.port = 0
        self.ssl_port = 0
        self.proc: subprocess.Popen | None = None
        self.paused = False
        self.cds_tmp: Path | None = None
        self.started_at = 0.0

    @property
    def state(self) -> str:
        if self.proc is None or self.proc.poll() is not None:
            return "stopped"
        return "paused" if self.paused else "running"

    @property
    def props(self) -> Path:
        return self.dir / "server.properties"


_live: set = set()                     # clusters with JVMs, for the atexit hook
_live_lock = threading.Lock()


@atexit.register
def _stop_all_at_exit() -> None:
    with _live_lock:
        clusters = list(_live)
    for c in clusters:
        try:
            c.stop(timeout=15)
        except Exception:               # noqa: BLE001 - best effort at exit
            pass


# ---------------------------------------------------------------- cluster --

class KafkaCluster:
    """A real Kafka cluster of NODES combined KRaft nodes (ids 1..N) on loopback.

    workdir       folder for configs, data and logs (made if missing; kept)
    nodes         1..9 (1 or 3 are the tested shapes)
    version       Kafka release whose jars fetch-kafka.sh provides (4.x or 3.9.x)
    heap_mb       each JVM's -Xmx, 64..512
    ssl           None, or a dict like make_test_ca()'s: keystore, key_password,
                  truststore (optional), client_auth (none|requested|required);
                  adds an SSL listener per node (ssl_bootstrap)
    broker_props  dict of server.properties entries over the defaults
    libs          folder of jars (default: fetch-kafka.sh VERSION)
    jvm_opts      extra JVM options for the nodes (after the defaults)
    log_level     broker log level to server.log (WARN)
    cds           use AppCDS archives to start JVMs faster (True)
    """

    LAST_NODE_GRACE = 2.0      # stop(): seconds the last node may linger

    def __init__(self, workdir, nodes: int = 1, version: str = DEFAULT_VERSION,
                 heap_mb: int = MAX_HEAP_MB, ssl: dict | None = None,
                 broker_props: dict | None = None, *, libs=None,
                 jvm_opts: list[str] | None = None, log_level: str = "WARN",
                 cds: bool = True):
        if not isinstance(nodes, int) or not 1 <= nodes <= MAX_NODES:
            raise ValueError(f"nodes must be 1..{MAX_NODES}, not {nodes!r}")
        if not isinstance(heap_mb, int) or not 64 <= heap_mb <= MAX_HEAP_MB:
            raise ValueError(f"heap_mb must be 64..{MAX_HEAP_MB}, not {heap_mb!r}")
        if ssl is not None and "keystore" not in ssl:
            raise ValueError("ssl needs at least 'keystore' (see make_test_ca)")
        self.workdir = Path(workdir).resolve()
        self.version = version
        self.heap_mb = heap_mb
        self.ssl = dict(ssl) if ssl else None
        self.broker_props = dict(broker_props or {})
        self.jvm_opts = list(jvm_opts or [])
        self.log_level = log_level
        self.use_cds = cds
        self.libs = Path(libs).resolve() if libs else None
        self.nodes = {i: _Node(i, self.workdir / f"node{i}") for i in range(1, nodes + 1)}
        self.cluster_id = ""
        self._configured = False
        self._java = _java()
        self._kcat = _kcat()
        self._classes: dict[str, str] = {}
        self._cds_broker: _Cds | None = None
        self._cds_tools: _Cds | None = None

    # ------------------------------------------------------------ props --

    @property
    def node_ids(self) -> list[int]:
        return sorted(self.nodes)

    @property
    def bootstrap(self) -> str:
        """Every node's PLAINTEXT listener, comma-separated host:port."""
        return ",".join(f"127.0.0.1:{n.port}" for n in self._sorted())

    @property
    def ssl_bootstrap(self) -> str:
        """Every node's SSL listener ("" without ssl=)."""
        if not self.ssl:
            return ""
        return ",".join(f"127.0.0.1:{n.ssl_port}" for n in self._sorted())

    def node_bootstrap(self, i: int) -> str:
        """Node I's PLAINTEXT listener, host:port."""
        return f"127.0.0.1:{self._node(i).port}"

    def node_state(self, i: int) -> str:
        """'running', 'paused' or 'stopped' (also after a crash)."""
        return self._node(i).state

    def pid(self, i: int) -> int | None:
        n = self._node(i)
        return n.proc.pid if n.state != "stopped" else None

    def rss_kb(self, i: int) -> int:
        """Node I's resident set size in KiB (0 when it is not running)."""
        pid = self.pid(i)
        if pid is None:
            return 0
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        except OSError:
            pass
        return 0

    def log_path(self, i: int) -> Path:
        return self._node(i).dir / "server.log"

    def _node(self, i) -> _Node:
        try:
            return self.nodes[int(i)]
        except (KeyError, ValueError, TypeError):
            raise KafkaError(f"no node {i!r} (nodes are {self.node_ids})") from None

    def _sorted(self) -> list[_Node]:
        return [self.nodes[i] for i in sorted(self.nodes)]

    def _serving(self) -> list[_Node]:
        return [n for n in self._sorted() if n.state == "running"]

    def _serving_bootstrap(self) -> str:
        s = self._serving()
        if not s:
            raise KafkaError("no node is running")
        return ",".join(f"127.0.0.1:{n.port}" for n in s)

    # ------------------------------------------------------------ config --

    def _replication(self) -> int:
        return min(len(self.nodes), 3)

    def _min_isr(self) -> int:
        return min(len(self.nodes), 2)

    def _server_properties(self, n: _Node) -> dict[str, str]:
        voters = ",".join(f"{m.id}@127.0.0.1:{m.controller_port}" for m in self._sorted())
        listeners = [f"PLAINTEXT://127.0.0.1:{n.port}"]
        protos = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
        if self.ssl:
            listeners.append(f"SSL://127.0.0.1:{n.ssl_port}")
            protos.append("SSL:SSL")
        rf = str(self._replication())
        p = {
            # KRaft, combined mode, static quorum.
            "process.roles": "broker,controller",
            "node.id": str(n.id),
            "controller.quorum.voters": voters,
            "controller.listener.names": "CONTROLLER",
            "listeners": ",".join(listeners + [f"CONTROLLER://127.0.0.1:{n.controller_port}"]),
            "advertised.listeners": ",".join(listeners),
            "listener.security.protocol.map": ",".join(protos),
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(n.dir / "data"),
            # Replication that fits N nodes.
            "default.replication.factor": rf,
            "offsets.topic.replication.factor": rf,
            "transaction.state.log.replication.factor": rf,
            "transaction.state.log.min.isr": str(self._min_isr()),
            "min.insync.replicas": str(self._min_isr()),
            "unclean.leader.election.enable": "false",
            # Tests create their topics; leaders stay where tests put them.
            "auto.create.topics.enable": "false",
            "auto.leader.rebalance.enable": "false",
            "num.partitions": "1",
            "delete.topic.enable": "true",
            # Groups form at once, with short sessions allowed.
            "group.initial.rebalance.delay.ms": "0",
            "group.min.session.timeout.ms": "1000",
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.num.partitions": "10",
            # A dead node is fenced (leadership moves) within ~4 s.
            "broker.heartbeat.interval.ms": "500",
            "broker.session.timeout.ms": "4000",
            "replica.lag.time.max.ms": "10000",
            # Small segments (delete-records, retention), light threads.
            "log.segment.bytes": str(8 * 1024 * 1024),
            "log.retention.check.interval.ms": "10000",
            "log.cleaner.threads": "1",
            "log.cleaner.dedupe.buffer.size": str(16 * 1024 * 1024),
            "num.network.threads": "2",
            "num.io.threads": "4",
            "num.replica.fetchers": "1",
            "num.recovery.threads.per.data.dir": "1",
            "background.threads": "4",
        }
        if self.ssl:
            s = self.ssl
            p["ssl.keystore.type"] = s.get("keystore_type", "PEM")
            p["ssl.keystore.location"] = str(s["keystore"])
            if s.get("key_password"):
                p["ssl.key.password"] = s["key_password"]
            if s.get("keystore_password"):
                p["ssl.keystore.password"] = s["keystore_password"]
            if s.get("truststore"):
                p["ssl.truststore.type"] = s.get("truststore_type", "PEM")
                p["ssl.truststore.location"] = str(s["truststore"])
                if s.get("truststore_password"):
                    p["ssl.truststore.password"] = s["truststore_password"]
            p["ssl.client.auth"] = s.get("client_auth", "none")
        for k, v in self.broker_props.items():
            if v is None:
                p.pop(k, None)
            else:
                p[k] = str(v)
        return p

    def _write_configs(self) -> None:
        """Ports, cluster id, server.properties, log configs, cluster.json."""
        for n in self._sorted():
            n.dir.mkdir(parents=True, exist_ok=True)
            n.controller_port = free_port()
            n.port = free_port()
            if self.ssl:
                n.ssl_port = free_port()
        if not self.cluster_id:
            self.cluster_id = _cluster_id()
        level = self.log_level
        (self.workdir / "log4j2.properties").write_text(_LOG4J2_BROKER.format(level=level))
        (self.workdir / "log4j.properties").write_text(_LOG4J1_BROKER.format(level=level))
        (self.workdir / "tools-log4j2.properties").write_text(_LOG4J2_TOOLS)
        (self.workdir / "tools-log4j.properties").write_text(_LOG4J1_TOOLS)
        for n in self._sorted():
            lines = [f"# node {n.id} of kwal test cluster {self.cluster_id} "
                     f"(written by kwalh.kafka)"]
            lines += [f"{k}={v}" for k, v in self._server_properties(n).items()]
            n.props.write_text("\n".join(lines) + "\n")
        info = {
            "cluster_id": self.cluster_id, "version": self.version,
            "libs": str(self.libs), "bootstrap": self.bootstrap,
            "ssl_bootstrap": self.ssl_bootstrap,
            "nodes": {str(n.id): {"port": n.port, "controller_port": n.controller_port,
                                  "ssl_port": n.ssl_port, "dir": str(n.dir)}
                      for n in self._sorted()},
        }
        _write_atomic(self.workdir / "cluster.json", json.dumps(info, indent=2) + "\n")
        self._configured = True

    def _log_opts(self, tools: bool = False) -> list[str]:
        pre = "tools-" if tools else ""
        return [f"-Dlog4j2.configurationFile={self.workdir / (pre + 'log4j2.properties')}",
                f"-Dlog4j.configuration=file:{self.workdir / (pre + 'log4j.properties')}"]

    # ------------------------------------------------------------- JVMs --

    def _broker_jvm_opts(self) -> list[str]:
        # G1 as Kafka's own scripts use it: start-up was the same as with
        # SerialGC here (~4.3 s uncached), and it keeps pauses short under
        # the load tests and benches put on the brokers.
        return [f"-Xmx{self.heap_mb}m", f"-Xms{min(self.heap_mb, 128)}m",
                "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
                "-XX:InitiatingHeapOccupancyPercent=35",
                "-XX:+ExplicitGCInvokesConcurrent", "-Djava.awt.headless=true",
                *self.jvm_opts]

    # Tools: C1 only and SerialGC start fastest; they run for a second.
    _TOOL_JVM_OPTS = ["-Xmx256m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC",
                      "-Djava.awt.headless=true"]

    def _prepare(self) -> None:
        if self.libs is None:
            self.libs = kafka_libs(self.version)
        self._classes = _tool_classes(self.libs)
        if self.use_cds and self._cds_broker is None:
            cds_dir = self.libs.parent / "cds"
            self._cds_broker = _Cds(cds_dir, _cds_key(self._java, self.libs,
                                    self._broker_jvm_opts(), "broker"), "broker")
            self._cds_tools = _Cds(cds_dir, _cds_key(self._java, self.libs,
                                   self._TOOL_JVM_OPTS, "tools"), "tools")

    def tool_cmd(self, role: str, *args: str) -> list[str]:
        """The argv that runs Kafka tool ROLE (a key of _TOOL_CLASSES, e.g.
        "topics", "consumer-groups", or a main class name) with ARGS. Does not
        add --bootstrap-server. No AppCDS (see run_tool)."""
        self._prepare()
        cls = self._classes.get(role) or (role if "." in role else None)
        if cls is None:
            raise KafkaError(f"Kafka {self.version} has no '{role}' tool")
        return [self._java, *self._TOOL_JVM_OPTS, *self._log_opts(tools=True),
                "-cp", str(self.libs / "*"), cls, *args]

    def run_tool(self, role: str, *args: str, timeout: float = 120,
                 check: bool = True) -> subprocess.CompletedProcess:
        """Run Kafka tool ROLE with ARGS; raise KafkaError on a non-zero exit
        (check=True) or timeout. Returns the CompletedProcess (text)."""
        cmd = self.tool_cmd(role, *args)
        tmp = None
        if self._cds_tools is not None:
            cds, tmp = self._cds_tools.opts()
            cmd[1:1] = cds
        try:
            r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True,
                               text=True, timeout=timeout, cwd=self.workdir,
                               preexec_fn=_child_setup_factory())
        except subprocess.TimeoutExpired as e:
            if self._cds_tools is not None:
                self._cds_tools.publish(tmp, False)
            raise KafkaError(f"{role} {' '.join(args)}: no answer in {timeout} s") from e
        if self._cds_tools is not None:
            self._cds_tools.publish(tmp, r.returncode == 0)
        if check and r.returncode != 0:
            raise KafkaError(f"{role} {' '.join(args)}: exit {r.returncode}: "
                             f"{(r.stderr.strip() or r.stdout.strip())[-3000:]}")
        return r

    def _format(self, nodes: list[_Node]) -> None:
        """kafka.tools.StorageTool format, for the nodes not formatted yet,
        all at once (each is a JVM start)."""
        todo = [n for n in nodes if not (n.dir / "data" / "meta.properties").exists()]
        procs = []
        for n in todo:
            cmd = self.tool_cmd("storage", "format", "-t", self.cluster_id,
                                "-c", str(n.props), "--ignore-formatted")
            if self._cds_tools is not None and self._cds_tools.final.exists():
                cmd[1:1] = self._cds_tools.opts()[0]
            procs.append((n, subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True, cwd=self.workdir,
                preexec_fn=_child_setup_factory())))
        errors = []
        for n, p in procs:
            try:
                out, _ = p.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                p.kill()
                out, _ = p.communicate()
            if p.returncode != 0:
                errors.append(f"node {n.id}: exit {p.returncode}: {out.strip()[-2000:]}")
        if errors:
            raise KafkaStartError("cannot format KRaft storage:\n" + "\n".join(errors))

    def _launch(self, n: _Node) -> None:
        """Start node N's JVM (does not wait for it to serve)."""
        self._kill_stale(n)
        cmd = [self._java, *self._broker_jvm_opts()]
        n.cds_tmp = None
        if self._cds_broker is not None:
            cds, n.cds_tmp = self._cds_broker.opts()
            cmd += cds
        cmd += [*self._log_opts(), f"-Dkafka.logs.dir={n.dir}",
                "-cp", str(self.libs / "*"), self._classes["server"], str(n.props)]
        with open(n.dir / "stdout", "ab") as out, open(n.dir / "stderr", "ab") as err:
            stamp = f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} start\n".encode()
            out.write(stamp)
            err.write(stamp)
            out.flush()
            err.flush()
            n.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                      stderr=err, cwd=n.dir, start_new_session=True,
                                      preexec_fn=_child_setup_factory())
        n.paused = False
        n.started_at = time.monotonic()
        (n.dir / "pid").write_text(f"{n.proc.pid}\n")
        with _live_lock:
            _live.add(self)

    def _kill_stale(self, n: _Node) -> None:
        """SIGKILL a JVM an earlier process left running on this node dir."""
        try:
            pid = int((n.dir / "pid").read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return
        if n.proc is not None and n.proc.pid == pid:
            return
        if str(n.props).encode() in cmdline:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
            for _ in range(100):
                if not Path(f"/proc/{pid}").exists():
                    break
                time.sleep(0.05)

    def _reap(self, n: _Node, ok_exit: bool) -> None:
        """After node N's JVM exited: publish or drop its CDS dump."""
        if self._cds_broker is not None and n.cds_tmp is not None:
            self._cds_broker.publish(n.cds_tmp, ok_exit)
            n.cds_tmp = None

    # --------------------------------------------------------- metadata --

    def _kcat_json(self, args: list[str], timeout: float = 10) -> dict | None:
        try:
            r = subprocess.run([self._kcat, *args, "-J"], stdin=subprocess.DEVNULL,
                               capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        if r.returncode != 0:
            return None
        try:
            return json.loads(r.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return None

    def _node_metadata(self, n: _Node, topic: str | None = None,
                       timeout_s: int = 2) -> dict | None:
        args = ["-L", "-b", f"127.0.0.1:{n.port}", "-m", str(timeout_s)]
        if topic is not None:
            args += ["-t", topic]
        return self._kcat_json(args, timeout=timeout_s + 8)

    def metadata(self, topic: str | None = None) -> dict:
        """kcat -L -J from the first running node that answers: brokers,
        controllerid, topics[].partitions[] with leader, replicas, isrs."""
        for n in self._serving():
            md = self._node_metadata(n, topic)
            if md is not None:
                return md
        raise KafkaError("no running node answers metadata requests")

    def partitions(self, topic: str) -> dict[int, dict]:
        """{partition: {"leader": id (-1: none), "replicas": [ids], "isr": [ids]}}."""
        md = self.metadata(topic)
        return self._topic_partitions(md, topic)

    @staticmethod
    def _topic_partitions(md: dict, topic: str) -> dict[int, dict]:
        for t in md.get("topics", []):
            if t.get("topic") == topic:
                if t.get("error"):
                    raise KafkaError(f"topic {topic}: {t['error']}")
                return {p["partition"]: {
                            "leader": p.get("leader", -1),
                            "replicas": [r["id"] for r in p.get("replicas", [])],
                            "isr": [r["id"] for r in p.get("isrs", [])]}
                        for p in t.get("partitions", [])}
        raise KafkaError(f"topic {topic}: not in the metadata")

    def leader(self, topic: str, partition: int) -> int:
        """The node id leading TOPIC/PARTITION now (-1: no leader)."""
        parts = self.partitions(topic)
        if partition not in parts:
            raise KafkaError(f"topic {topic} has no partition {partition} "
                             f"(0..{len(parts) - 1})")
        return parts[partition]["leader"]

    def wait_leader(self, topic: str, partition: int, timeout: float = 30,
                    not_in=(), want: int | None = None) -> int:
        """Wait until TOPIC/PARTITION has a leader not in NOT_IN (and equal
        to WANT if given); return it. KafkaError on timeout."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            try:
                last = self.leader(topic, partition)
                if last >= 0 and last not in not_in and (want is None or last == want):
                    return last
            except KafkaError:
                pass
            if time.monotonic() > deadline:
                raise KafkaError(f"{topic}/{partition}: leader is {last} after "
                                 f"{timeout} s (wanted {want if want else 'one'}"
                                 f"{', not in ' + str(list(not_in)) if not_in else ''})")
            time.sleep(0.2)

    def wait_topic(self, topic: str, partitions: int | None = None,
                   timeout: float = 60, full_isr: bool = False) -> dict[int, dict]:
        """Wait until every running node's metadata shows TOPIC with
        PARTITIONS partitions (if given), each with a leader (and, with
        full_isr, every replica in sync). Returns partitions()."""
        deadline = time.monotonic() + timeout
        why = "no metadata"
        while True:
            ok = True
            parts: dict[int, dict] = {}
            for n in self._serving():
                md = self._node_metadata(n, topic)
                try:
                    parts = self._topic_partitions(md, topic) if md else {}
                except KafkaError as e:
                    parts, why = {}, str(e)
                if not parts:
                    ok = False
                    break
                if partitions is not None and len(parts) != partitions:
                    ok, why = False, f"node {n.id} shows {len(parts)} partitions"
                    break
                bad = [p for p, v in parts.items() if v["leader"] < 0 or
                       (full_isr and set(v["isr"]) != set(v["replicas"]))]
                if bad:
                    ok, why = False, f"node {n.id}: partitions {bad} not led/in sync"
                    break
            if ok and parts:
                return parts
            if time.monotonic() > deadline:
                raise KafkaError(f"topic {topic} not ready after {timeout} s: {why}")
            time.sleep(0.1)

    def end_offsets(self, topic: str, timeout: float = 20) -> dict[int, int]:
        """{partition: end offset (high watermark)} via kcat -Q (ListOffsets
        with timestamp -1, read_uncommitted). Retries for up to TIMEOUT s: a
        partition whose leader is paused or dead answers only once another
        node leads it."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self._end_offsets_once(topic)
            except KafkaError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.2)

    def group_offsets(self, group: str, topic: str) -> dict[int, int]:
        """{partition: committed offset} of GROUP for TOPIC (ConsumerGroupCommand
        --describe --offsets); partitions without one are left out."""
        r = self.run_tool("consumer-groups", "--bootstrap-server", self._serving_bootstrap(),
                          "--describe", "--offsets", "--group", group)
        res = {}
        for line in r.stdout.splitlines():
            f = line.split()
            if len(f) >= 4 and f[0] == group and f[1] == topic and f[2].isdigit() \
                    and f[3].isdigit():
                res[int(f[2])] = int(f[3])
        return res

    def _end_offsets_once(self, topic: str) -> dict[int, int]:
        parts = self.partitions(topic)
        args = ["-Q", "-b", self._serving_bootstrap(), "-m", "3"]
        for p in sorted(parts):
            args += ["-t", f"{topic}:{p}:-1"]
        out = self._kcat_json(args, timeout=10)
        if out is None or topic not in out:
            raise KafkaError(f"kcat -Q cannot read {topic}'s end offsets")
        res = {}
        for v in out[topic].values():
            if isinstance(v, dict) and "partition" in v:
                if "error" in v:
                    raise KafkaError(f"{topic}/{v['partition']}: {v['error']}")
                res[int(v["partition"])] = int(v["offset"])
        if set(res) != set(parts):
            raise KafkaError(f"kcat -Q answered partitions {sorted(res)} of {sorted(parts)}")
        return res

    # -------------------------------------------------------- lifecycle --

    def start(self, timeout: float = 90) -> "KafkaCluster":
        """Start every node (formatting storage on first use) and wait until
        each serves metadata listing all nodes and a controller. Writes
        workdir/bootstrap. KafkaStartError (with log tails) on failure, after
        stopping what it started. Restarts a stopped cluster on its ports
        and data."""
        deadline = time.monotonic() + timeout
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._prepare()
        first = not self._configured
        attempts = 3 if first else 1
        for attempt in range(1, attempts + 1):
            if first:
                self._write_configs()
            try:
                self._format(self._sorted())
                for n in self._sorted():
                    if n.state == "stopped":
                        self._launch(n)
                self._wait_serving(self._sorted(), deadline)
                break
            except KafkaStartError as e:
                self.stop(timeout=10)
                if attempt < attempts and "Address already in use" in str(e):
                    continue                 # someone took a port: new ports
                raise
        _write_atomic(self.workdir / "bootstrap", self.bootstrap + "\n")
        if self.ssl:
            _write_atomic(self.workdir / "ssl_bootstrap", self.ssl_bootstrap + "\n")
        return self

    def _wait_serving(self, nodes: list[_Node], deadline: float) -> None:
        """Wait until each of NODES answers metadata that lists every running
        node and a controller (and its SSL port accepts connections)."""
        pending = {n.id for n in nodes}
        while pending:
            expect = {m.id for m in self._serving()}
            for i in sorted(pending):
                n = self.nodes[i]
                if n.proc is None or n.proc.poll() is not None:
                    rc = n.proc.returncode if n.proc else None
                    self._reap(n, False)
                    raise KafkaStartError(f"node {i} exited (code {rc}) while "
                                          f"starting\n{self._log_tails(n)}")
                if not _tcp_accepts(n.port):
                    continue
                md = self._node_metadata(n, timeout_s=1)
                if md is None or md.get("controllerid", -1) < 0:
                    continue
                if not expect <= {b["id"] for b in md.get("brokers", [])}:
                    continue
                if self.ssl and not _tcp_accepts(n.ssl_port):
                    continue
                pending.discard(i)
            if not pending:
                return
            if time.monotonic() > deadline:
                worst = self.nodes[min(pending)]
                raise KafkaStartError(f"node(s) {sorted(pending)} not serving in "
                                      f"time\n{self._log_tails(worst)}")
            time.sleep(0.1)

    def _log_tails(self, n: _Node) -> str:
        return (f"--- {n.dir / 'server.log'} (tail):\n{_tail(n.dir / 'server.log')}\n"
                f"--- {n.dir / 'stderr'} (tail):\n{_tail(n.dir / 'stderr', 15)}\n"
                f"--- {n.dir / 'stdout'} (tail):\n{_tail(n.dir / 'stdout', 15)}")

    def stop(self, timeout: float = 30) -> None:
        """Stop every node: SIGCONT if paused, SIGTERM all at once, SIGKILL
        what is left after TIMEOUT s. Idempotent; safe from atexit or a
        signal handler; never raises for a node already gone."""
        nodes = [n for n in self._sorted() if n.proc is not None]
        for n in nodes:
            if n.proc.poll() is None:
                try:
                    if n.paused:
                        n.proc.send_signal(signal.SIGCONT)
                    n.proc.send_signal(signal.SIGTERM)
                except OSError:
                    pass
        # The node left last, when it leads the KRaft quorum, spends 5 s
        # (hard-coded) trying to hand leadership to voters that are gone,
        # after its broker side has shut down cleanly. So once only one node
        # is left, it gets LAST_NODE_GRACE s more before SIGKILL -- unless it
        # writes a CDS archive at exit, which needs a normal exit.
        deadline = time.monotonic() + timeout
        alone_since = None
        while True:
            left = [n for n in nodes if n.proc.poll() is None]
            now = time.monotonic()
            if len(left) <= 1 and len(nodes) > 1 and alone_since is None:
                alone_since = now
            if not left or now >= deadline:
                break
            if (len(left) == 1 and left[0].cds_tmp is None and alone_since is not None
                    and now - alone_since >= self.LAST_NODE_GRACE):
                break
            time.sleep(0.05)
        for n in nodes:
            self._wait_exit(n, 0 if n.proc.poll() is None else 1)
        with _live_lock:
            _live.discard(self)

    def _wait_exit(self, n: _Node, timeout: float) -> None:
        """Wait for node N's JVM to exit, SIGKILL it after TIMEOUT s."""
        p = n.proc
        if p is None:
            return
        graceful = True
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            graceful = False
            try:
                p.kill()
            except OSError:
                pass
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        n.paused = False
        # A JVM stopped by SIGTERM exits 143; only then is a CDS dump whole.
        self._reap(n, graceful and p.returncode in (0, 143))

    def __enter__(self) -> "KafkaCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ----------------------------------------------------- node control --

    def stop_node(self, i: int, timeout: float = 60) -> None:
        """SIGTERM node I (controlled shutdown) and wait; SIGKILL after
        TIMEOUT s. No-op if it is not running."""
        n = self._node(i)
        if n.state == "stopped":
            return
        if n.paused:
            n.proc.send_signal(signal.SIGCONT)
        n.proc.send_signal(signal.SIGTERM)
        self._wait_exit(n, timeout)

    def kill_node(self, i: int) -> None:
        """SIGKILL node I and reap it. No-op if it is not running."""
        n = self._node(i)
        if n.state == "stopped":
            return
        n.proc.send_signal(signal.SIGKILL)
        self._wait_exit(n, 30)

    def pause_node(self, i: int) -> None:
        """SIGSTOP node I (it keeps its sockets; the others fence it after
        broker.session.timeout.ms)."""
        n = self._node(i)
        if n.state == "stopped":
            raise KafkaError(f"node {i} is not running")
        n.proc.send_signal(signal.SIGSTOP)
        n.paused = True

    def resume_node(self, i: int) -> None:
        """SIGCONT node I."""
        n = self._node(i)
        if n.state == "stopped":
            raise KafkaError(f"node {i} is not running")
        n.proc.send_signal(signal.SIGCONT)
        n.paused = False

    def start_node(self, i: int, timeout: float = 60) -> None:
        """Start node I again on its ports and data; wait until it serves
        (listed in its own metadata with every running node). No-op if it is
        running; KafkaError if paused."""
        n = self._node(i)
        if n.state == "running":
            return
        if n.state == "paused":
            raise KafkaError(f"node {i} is paused (resume it)")
        if not self._configured:
            raise KafkaError("the cluster was never started")
        self._reap(n, False)
        self._launch(n)
        self._wait_serving([n], time.monotonic() + timeout)

    # ------------------------------------------------------------ admin --

    def create_topic(self, name: str, partitions: int, rf: int = 1,
                     config: dict | None = None, timeout: float = 60) -> None:
        """Create topic NAME (TopicCommand) and wait until every running
        node's metadata shows all its partitions led."""
        if not 1 <= rf <= len(self.nodes):
            raise KafkaError(f"replication factor {rf} does not fit {len(self.nodes)} node(s)")
        args = ["--bootstrap-server", self._serving_bootstrap(), "--create",
                "--topic", name, "--partitions", str(partitions),
                "--replication-factor", str(rf)]
        for k, v in (config or {}).items():
            args += ["--config", f"{k}={v}"]
        self.run_tool("topics", *args)
        self.wait_topic(name, partitions, timeout=timeout)

    def delete_topic(self, name: str) -> None:
        """Delete topic NAME (TopicCommand --delete)."""
        self.run_tool("topics", "--bootstrap-server", self._serving_bootstrap(),
                      "--delete", "--topic", name)

    def add_partitions(self, name: str, total: int, timeout: float = 60) -> None:
        """Grow topic NAME to TOTAL partitions and wait until they are led."""
        self.run_tool("topics", "--bootstrap-server", self._serving_bootstrap(),
                      "--alter", "--topic", name, "--partitions", str(total))
        self.wait_topic(name, total, timeout=timeout)

    def delete_records(self, topic: str, partition: int, before_offset: int) -> int:
        """Delete TOPIC/PARTITION's records below BEFORE_OFFSET (-1: up to the
        high watermark). Returns the new low watermark."""
        spec = {"version": 1, "partitions": [
            {"topic": topic, "partition": int(partition), "offset": int(before_offset)}]}
        f = self.workdir / f".delete-records.{os.getpid()}.{threading.get_ident()}.json"
        f.write_text(json.dumps(spec))
        try:
            r = self.run_tool("delete-records", "--bootstrap-server",
                              self._serving_bootstrap(), "--offset-json-file", str(f))
        finally:
            f.unlink(missing_ok=True)
        m = re.search(r"low_watermark:\s*(\d+)", r.stdout)
        if not m:
            raise KafkaError(f"delete-records {topic}/{partition} {before_offset}: "
                             f"{(r.stdout.strip() + ' ' + r.stderr.strip())[-2000:]}")
        return int(m.group(1))

    def alter_topic_config(self, name: str, config: dict) -> None:
        """Set topic NAME's configs (value None: back to the default)."""
        add = [f"{k}={'[' + str(v) + ']' if ',' in str(v) else v}"
               for k, v in config.items() if v is not None]
        delete = [k for k, v in config.items() if v is None]
        args = ["--bootstrap-server", self._serving_bootstrap(), "--alter",
                "--entity-type", "topics", "--entity-name", name]
        if add:
            args += ["--add-config", ",".join(add)]
        if delete:
            args += ["--delete-config", ",".join(delete)]
        self.run_tool("configs", *args)

    def move_leader(self, topic: str, partition: int, to_node: int,
                    timeout: float = 60) -> None:
        """Make node TO_NODE the leader of TOPIC/PARTITION.

        Reassigns the partition so that TO_NODE is the first (preferred)
        replica -- keeping the replication factor, and replacing the last
        replica if TO_NODE held none -- waits until the reassignment is done
        and TO_NODE is in sync, then runs a preferred leader election and
        waits until the metadata shows TO_NODE leading.
        """
        target = self._node(to_node).id
        if self.nodes[target].state != "running":
            raise KafkaError(f"node {target} is not running")
        deadline = time.monotonic() + timeout
        info = self.partitions(topic).get(partition)
        if info is None:
            raise KafkaError(f"topic {topic} has no partition {partition}")
        if info["leader"] == target:
            return
        replicas = info["replicas"]
        if not replicas or replicas[0] != target:
            others = [r for r in replicas if r != target]
            new = [target] + others[:max(len(replicas), 1) - 1]
            plan = {"version": 1, "partitions": [
                {"topic": topic, "partition": partition, "replicas": new}]}
            f = self.workdir / f".reassign.{os.getpid()}.{threading.get_ident()}.json"
            f.write_text(json.dumps(plan))
            try:
                self.run_tool("reassign", "--bootstrap-server", self._serving_bootstrap(),
                              "--reassignment-json-file", str(f), "--execute")
            finally:
                f.unlink(missing_ok=True)
            while True:                      # done: exact replica list, in sync
                v = self.partitions(topic).get(partition, {})
                if v.get("replicas") == new and target in v.get("isr", []):
                    break
                if time.monotonic() > deadline:
                    raise KafkaError(f"{topic}/{partition}: reassignment to {new} "
                                     f"not done after {timeout} s (now {v})")
                time.sleep(0.2)
        while True:
            r = self.run_tool("leader-election", "--bootstrap-server",
                              self._serving_bootstrap(), "--election-type", "PREFERRED",
                              "--topic", topic, "--partition", str(partition),
                              check=False)
            try:
                self.wait_leader(topic, partition, want=target, timeout=3)
                return
            except KafkaError:
                pass
            if time.monotonic() > deadline:
                raise KafkaError(f"{topic}/{partition}: node {target} did not become "
                                 f"leader in {timeout} s: "
                                 f"{(r.stdout + r.stderr).strip()[-1500:]}")
            time.sleep(0.5)
