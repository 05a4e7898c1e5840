"""kwtest -- small helpers the integration tests share (the fixtures are in
conftest.py): configuration dicts for each mode, bounded waits, commands run
with their output kept for the failure message (kcat among them), the
workload (kwal-loadgen) and the checks every end-to-end test makes
(kwal-verify's summary, ZooKeeper offsets against the sink's and Kafka's end
offsets). They read data only: the sink, ZooKeeper, Kafka, kwal's
--stats-json; never kwal's log.
"""
import os
import sqlite3
import subprocess
import time

import pytest

from kwalh import workload


def settings(zk, bootstrap, group, topic, d, **extra):
    """A configuration for kwal receive or direct: WAL under d/wal, the sqlite
    sink d/out.db, earliest start, 500 ms batches; extra keys win (use
    dots through a dict: settings(..., **{"kafka.x": 1})), and a key given
    as None is left out. zk: a ZooKeeper server (its .connect) or a connect
    string."""
    s = {
        "group.id": group,
        "topics": topic,
        "zookeeper.connect": getattr(zk, "connect", zk),
        "kafka.bootstrap.servers": bootstrap,
        "auto.offset.reset": "earliest",
        "wal.dirs": f"{d}/wal",
        "sink": f"sqlite:{d}/out.db",
        "batch.interval.ms": 500,
    }
    s.update(extra)
    return {k: v for k, v in s.items() if v is not None}


# Short sessions (ZooKeeper 2 s -- the zk_fast fixture's 500 ms tick grants
# it -- and Kafka 3 s), so that a dead instance's owner nodes and group
# membership go soon; 2 receivers and small, frequent blocks, so that a few
# thousand records make many blocks.
FAST = {
    "receivers": 2,
    "zookeeper.session.timeout.ms": 2000,
    "kafka.session.timeout.ms": 3000,
    "kafka.heartbeat.interval.ms": 300,
    "block.max.bytes": "16K",
    "block.interval.ms": 50,
}


def fast_settings(zk, bootstrap, group, topic, d, **extra):
    """settings() with FAST on top (extra wins over both)."""
    return settings(zk, bootstrap, group, topic, d, **{**FAST, **extra})


def wait_until(pred, timeout, what, alive=None, interval=0.25):
    """Poll pred() until true (its value); fail the test after timeout s, or
    as soon as alive() says the process it waits on died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        if alive is not None and not alive():
            pytest.fail(f"{what}: the process died")
        time.sleep(interval)
    pytest.fail(f"{what}: not within {timeout} s")


def run(argv, timeout=120, input=None, rc=None, text=True, extra=None):
    """Run argv (items made str; bytes kept) bounded by timeout s, stdin
    input or nothing; the CompletedProcess with .both: its exit status and
    the tails of stdout and stderr, for failure messages (extra(): more
    text there, e.g. a server's log). With rc, the exit status must be rc."""
    argv = [a if isinstance(a, bytes) else str(a) for a in argv]
    more = extra or (lambda: "")
    try:
        r = subprocess.run(argv, capture_output=True, text=text, timeout=timeout, input=input,
                           stdin=None if input is not None else subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{argv}: still running after {timeout} s{more()}")
    out, err = (r.stdout, r.stderr) if text else \
        (r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace"))
    r.both = f"exit {r.returncode}\n--- stdout:\n{out[-6000:]}\n--- stderr:\n{err[-3000:]}" \
        + more()
    if rc is not None:
        assert r.returncode == rc, f"{argv}: expected exit {rc}; {r.both}"
    return r


def run_runner(repo, bins, name, *args, timeout=600):
    """tools/NAME (a runner, e.g. "bench/bench-resume") with ARGS and this
    build's programs ($KWAL_BIN_DIR = bins.dir), stdin empty; the
    CompletedProcess (text)."""
    env = dict(os.environ, KWAL_BIN_DIR=bins.dir)
    return subprocess.run([str(repo / "tools" / name), *args], capture_output=True, text=True,
                          timeout=timeout, env=env, stdin=subprocess.DEVNULL)


def kcat(*args, input=None, timeout=60, text=True):
    """kcat ARGS, which must exit 0; its stdout (bytes unless text)."""
    return run(["kcat", *args], timeout, input=input, rc=0, text=text).stdout


def kcat_records(bootstrap, topic, timeout=120):
    """(partition, offset, key) of every record Kafka serves of topic now,
    read by kcat, sorted."""
    out = kcat("-C", "-b", bootstrap, "-t", topic, "-e", "-q", "-f", "%p %o %k\n",
               timeout=timeout)
    return sorted((int(p), int(o), k) for p, o, k in
                  (ln.split() for ln in out.splitlines() if ln.strip()))


def stored(db, topic):
    """Rows of topic in a sqlite sink (0 before there is one)."""
    return workload.sqlite_count(db, topic)


def rows(db, sql, *args):
    """The rows of a query on a sqlite database, opened read-only."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def assert_verified(bins, manifest, *dbs, total=None):
    """kwal-verify: every record of the manifest stored exactly once over dbs
    (pooled). With total: the summary is exactly expected=stored=total and 0
    in every other count (foreign, out_of_range too). The summary."""
    argv = [bins.verify, "--manifest", manifest]
    for db in dbs:
        argv += ["--sqlite", db]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    s = workload.parse_summary(r.stdout.splitlines()[-1])
    assert s["stored"] == s["expected"] and s["missing"] == 0 and s["duplicates"] == 0 \
        and s["duplicate_offsets"] == 0 and s["corrupt"] == 0, s
    if total is not None:
        assert s == {"expected": total, "stored": total, "missing": 0, "duplicates": 0,
                     "duplicate_offsets": 0, "corrupt": 0, "foreign": 0,
                     "out_of_range": 0}, s
    return s


def check_latency(stats, records, since):
    """The end-to-end latency in kwal's --stats-json (common/kw_stats.h): every
    one of records measured (each record written by kwal-loadgen has a
    timestamp), ordered quantiles, and none longer than the time since since
    (time.monotonic() before the records were produced) plus a second of
    clock granularity."""
    s = stats
    assert s["latency_records"] == records, s
    assert 0 <= s["latency_ms_p50"] <= s["latency_ms_p90"] <= s["latency_ms_p99"] \
        <= s["latency_ms_max"], s
    bound = (time.monotonic() - since) * 1000 + 1000
    assert s["latency_ms_max"] <= bound, f"latency max {s['latency_ms_max']} ms > {bound:.0f}"


def zk_offsets(zk, group, topic, partitions):
    """{partition: the group's ZooKeeper offset}, 0 where none is stored."""
    return {p: v or 0 for p, v in zk.offsets(group, topic, partitions).items()}


def wait_zk_at_end(zk, group, topic, kafka_ends, alive, timeout=120):
    """Wait until every partition's ZooKeeper offset is Kafka's end offset
    (kafka_ends: {partition: end offset}) while alive()."""
    wait_until(lambda: zk_offsets(zk, group, topic, len(kafka_ends)) == kafka_ends, timeout,
               f"ZooKeeper at the end offsets {kafka_ends}", alive)


def check_zk_at_end(zk, group, topic, kafka_ends=None, db=None, partitions=None, total=None):
    """Every partition's ZooKeeper offset is its end offset (invariant 1 at
    rest: nothing acknowledged that is not delivered, nothing left): in the
    sink (db: a sqlite sink, or a list of them pooled) and/or in Kafka
    (kafka_ends: {partition: end offset}); with total, they add up to it.
    Partitions: len(kafka_ends) unless given; no offset stored counts as 0.
    The ZooKeeper offsets."""
    n = partitions if partitions is not None else len(kafka_ends)
    zoff = zk_offsets(zk, group, topic, n)
    if db is not None:
        ends = {p: 0 for p in range(n)}
        for one in ([db] if isinstance(db, (str, os.PathLike)) else db):
            for p, e in workload.sqlite_end_offsets(str(one), topic, n).items():
                ends[p] = max(ends[p], e)
        assert zoff == ends, f"ZooKeeper {zoff} != sink end offsets {ends}"
    if kafka_ends is not None:
        assert zoff == kafka_ends, f"ZooKeeper {zoff} != Kafka end offsets {kafka_ends}"
    if total is not None:
        assert sum(zoff.values()) == total, f"ZooKeeper offsets {zoff} do not sum to {total}"
    return zoff


def loadgen(bins, bootstrap, topic, records, d, name="lg", manifest=None, first=None, **kw):
    """A kwal-loadgen (not started) of records keyed records to topic: its
    files d/NAME.out, .err, the manifest d/NAME.m unless given; first: its
    first sequence number (--first); kw: size, run_id, rate (Loadgen)."""
    lg = workload.Loadgen(bins, bootstrap, topic, records,
                          str(manifest or os.path.join(str(d), f"{name}.m")),
                          os.path.join(str(d), name), **kw)
    if first is not None:
        lg.argv += ["--first", str(first)]
    lg.records = records
    return lg


def start_loadgen(bins, bootstrap, topic, records, d, rate=None, name="lg", **kw):
    """loadgen(), started in the background (wait_loadgen ends it)."""
    return loadgen(bins, bootstrap, topic, records, d, name=name, rate=rate, **kw).start()


def lg_err(lg):
    """The tail of a kwal-loadgen's stderr (for failure messages)."""
    try:
        with open(lg.base + ".err", errors="replace") as f:
            return f.read()[-2000:]
    except OSError:
        return ""


def produce(bins, bootstrap, topic, records, d, name="lg", timeout=300, **kw):
    """Produce records (kwal-loadgen, acks=all, idempotent; loadgen()'s
    options) in the foreground: every one delivered. The manifest path."""
    lg = loadgen(bins, bootstrap, topic, records, d, name=name, **kw)
    assert lg.run(timeout=timeout) == 0, f"kwal-loadgen failed: {lg_err(lg)}"
    assert workload.read_manifest(lg.manifest).get("delivered") == str(records)
    return lg.manifest


def wait_loadgen(lg, timeout=180, what="the producer finishes"):
    """Wait for a background kwal-loadgen; it must exit 0 (every record
    delivered). Its manifest ({key: value})."""
    wait_until(lg.done, timeout, what)
    assert lg.rc == 0, f"kwal-loadgen failed: {lg_err(lg)}"
    return workload.read_manifest(lg.manifest)
