"""Shared pytest fixtures for kwal's Python integration tests.

Puts <repo>/tools/harness on sys.path (for `import kwalh`) and offers real
Apache Kafka clusters on loopback (kwalh.kafka.KafkaCluster):

    kafka3          one shared 3-node cluster for the whole session (started
                    on first use). After each test every node is running
                    again (paused ones resumed, stopped ones restarted), so a
                    test may stop, kill or pause nodes freely. Topics stay:
                    give yours unique names.
    kafka_factory   kafka_factory(nodes=1, start=True, **kwargs) -> a cluster
                    of the test's own (kwargs go to KafkaCluster: ssl=,
                    broker_props=, heap_mb=, ...), stopped after the test.
    kafka_version   the Kafka release: $KWAL_KAFKA_VERSION, default 4.1.1
                    (3.9.2 is the compatibility run).
    repo            the repository root (pathlib.Path).

and kwal's side (kwalh.proc, kwalh.services, kwalh.kwal):

    bins            kwal's programs: $KWAL_BIN_DIR, else <repo>/build/tools
                    (bins.kwal, bins.loadgen, bins.verify, bins.zk_local, ...).
    zk              a ZooKeeper server of the test's own (kwalh.services.ZooKeeper,
                    .connect is its connect string), stopped after the test.
    zk_fast         a ZooKeeper server of the module's own with a 500 ms tick,
                    so that sessions of 2 s are granted (ZooKeeper's minimum
                    is 2 ticks; kwtest.FAST asks for them); its tests share
                    it with unique group names.
    kwal_factory    kwal_factory(args, settings, name="kwal", xargs=(), env=None)
                    -> a kwalh.kwal.Kwal (not started) whose configuration file
                    is written from the settings dict; every one is SIGKILLed
                    after the test if still running.
    names           names.topic(), names.group(): unique per test, so tests
                    can share one Kafka cluster and one ZooKeeper layout.
    pg              a database of the test's own (kwalh.postgres.Database:
                    .conninfo, .sql(q) -> rows) on one PostgreSQL server for
                    the session (kwalh.postgres.PostgreSQL, started on first
                    use, fsync on); a test may stop, kill and start the
                    server (pg.server): it is running again after the test.

Marker `harness`: the tests of the test kit and the runners (the Kafka
launcher, the mock cluster, kwal-zk-local, the chaos, compare and bench
runners). tools/test.sh runs them with the plain build only; the sanitizer
build runs everything else (`-m "not harness"`).

The jars come from tools/testkit/fetch-kafka.sh (a no-op once fetched).
"""
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools" / "harness"))

from kwalh.kafka import DEFAULT_VERSION, KafkaCluster  # noqa: E402
from kwalh import postgres, proc, services  # noqa: E402
from kwalh.kwal import Kwal, write_conf  # noqa: E402


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def kafka_version() -> str:
    return os.environ.get("KWAL_KAFKA_VERSION", DEFAULT_VERSION)


@pytest.fixture(scope="session")
def _kafka3_session(tmp_path_factory, kafka_version):
    kc = KafkaCluster(tmp_path_factory.mktemp("kafka3"), nodes=3, version=kafka_version)
    kc.start()
    yield kc
    kc.stop()


@pytest.fixture
def kafka3(_kafka3_session):
    kc = _kafka3_session
    yield kc
    for i in kc.node_ids:                       # leave it whole for the next test
        if kc.node_state(i) == "paused":
            kc.resume_node(i)
    for i in kc.node_ids:
        if kc.node_state(i) == "stopped":
            kc.start_node(i)


@pytest.fixture
def kafka_factory(tmp_path, kafka_version):
    made = []

    def make(nodes: int = 1, start: bool = True, **kwargs) -> KafkaCluster:
        kwargs.setdefault("version", kafka_version)
        kc = KafkaCluster(tmp_path / f"kafka{len(made)}", nodes=nodes, **kwargs)
        made.append(kc)
        if start:
            kc.start()
        return kc

    yield make
    for kc in made:
        kc.stop()


@pytest.fixture(scope="session")
def bins():
    b = proc.Bins(proc.bin_dir())
    b.check()
    return b


@pytest.fixture
def zk(tmp_path, bins):
    server = services.ZooKeeper(bins, str(tmp_path / "zk"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def zk_fast(tmp_path_factory, bins):
    server = services.ZooKeeper(bins, str(tmp_path_factory.mktemp("zk") / "zk"), tick_ms=500)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def kwal_factory(tmp_path, bins):
    made = []

    def make(args, settings, name="kwal", xargs=(), env=None):
        base = str(tmp_path / f"{name}{len(made)}")
        conf = base + ".conf"
        write_conf(conf, settings)
        k = Kwal(bins, args, conf, base, xargs=xargs, env=env)
        made.append(k)
        return k

    yield make
    for k in made:
        if k.alive():
            k.kill()


@pytest.fixture(scope="session")
def _pg_session(tmp_path_factory):
    server = postgres.PostgreSQL(str(tmp_path_factory.mktemp("pg")))
    server.start()
    yield server
    server.destroy()


@pytest.fixture
def pg(_pg_session, request):
    server = _pg_session
    num = request.node.path.stem[5:9]
    name = "t%s_%s" % (num, "".join(c if c.isalnum() else "_" for c in request.node.name))
    db = postgres.Database(server, name[:60].lower())
    yield db
    if not server.running():
        server.start()


class _Names:
    def __init__(self, test_file, test_name):
        # the file's number too: two files may have tests of the same name,
        # and they share one cluster (test_0012 and test_0023 both have
        # test_kcat_producer)
        num = test_file[5:9] if test_file[5:9].isdigit() else test_file
        raw = f"{num}-{test_name}"
        self.base = "".join(c if c.isalnum() else "-" for c in raw)[:64]
        self.n = 0

    def _next(self, kind):
        self.n += 1
        return f"{self.base}-{kind}{self.n}"

    def topic(self):
        return self._next("t")

    def group(self):
        return self._next("g")


@pytest.fixture
def names(request):
    return _Names(request.node.path.stem, request.node.name)


# The tests of the test kit and of the runners, by file: see the top.
HARNESS_FILES = {
    "test_0010_kafka_local.py", "test_0011_zk_local.py", "test_0013_kafka_mock.py",
    "test_0035_chaos.py", "test_0050_compare.py", "test_0070_bench.py",
    "test_0071_bench_resume.py", "test_0072_bench_scale.py", "test_0092_verify_kafka.py",
}

# The longest fault tests (35-95 s each under ASan, most of it waiting for
# sessions, elections and outages to run their course), by file::function:
# tools/test.sh runs them on the plain build only, so that CI stays well
# inside its time (every other integration test runs under ASan + UBSan).
SLOW_TESTS = {
    "test_0022_receive_broker_down.py::test_brokers_down_and_back",
    "test_0023_receive_kcat.py::test_kcat_producer",
    "test_0024_receive_group_churn.py::test_group_churn",
    "test_0027_resume.py::test_resume_after_kill",
    "test_0041_direct_instances.py::test_share_join_kill",
    "test_0061_broker_failures.py::test_leader_failover",
    "test_0061_broker_failures.py::test_cluster_down_and_back",
    "test_0062_topology.py::test_tls",
}


def pytest_configure(config):
    config.addinivalue_line("markers", "harness: a test of the test kit or a runner "
                            "(plain build only in tools/test.sh)")
    config.addinivalue_line("markers", "slow: one of the longest fault tests "
                            "(plain build only in tools/test.sh)")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.name in HARNESS_FILES:
            item.add_marker(pytest.mark.harness)
        if "%s::%s" % (item.path.name, item.originalname) in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
