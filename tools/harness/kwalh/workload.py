"""workload -- the sequence-numbered workload: kwal-loadgen produces it,
kwal-verify checks an output against it (kwal-loadgen --help,
kwal-verify --help have the record format and the summary line).

kwal-verify's summary line is its documented result (the last line of
its stdout): expected=N stored=S missing=M duplicates=D duplicate_offsets=O
corrupt=C foreign=F out_of_range=R, and out_of_order=K at its end when a
Kafka output is read (--kafka).
"""

import os
import re
import signal
import sqlite3

from . import proc

SUMMARY_KEYS = ("expected", "stored", "missing", "duplicates", "duplicate_offsets", "corrupt",
                "foreign", "out_of_range", "out_of_order")   # the last: --kafka only


class Loadgen:
    """kwal-loadgen: run() in the foreground, or start() in the background
    (--rate); its manifest (key=value lines) is written when it is done."""

    def __init__(self, bins, brokers, topic, records, manifest, base, size=100, run_id=None,
                 rate=None, timeout=None, headers=False):
        self.bins = bins
        self.argv = [bins.loadgen, "--brokers", brokers, "--topic", topic, "--records",
                     str(records), "--size", str(size), "--manifest", manifest]
        if headers:
            self.argv.append("--headers")       # wl.seq=<seq> on every record
        if run_id:
            self.argv += ["--run-id", run_id]
        if rate:
            self.argv += ["--rate", str(rate)]
        if timeout:
            self.argv += ["--timeout", str(timeout)]
        self.manifest = manifest
        self.base = base
        self.p = None
        self.rc = None
        self.frozen = False

    def run(self, timeout):
        """Produce in the foreground, bounded; the exit status (124: hung)."""
        self.start()
        rc = proc.reap(self.p, timeout)
        if rc is None:
            rc = 124
            proc.kill_wait(self.p)
        self.rc = rc
        return rc

    def start(self):
        self.p = proc.spawn(self.argv, stdout=self.base + ".out", stderr=self.base + ".err")
        return self

    def running(self):
        return self.p is not None and self.rc is None and self.p.poll() is None

    def done(self):
        """True once the producer has ended (its status in rc)."""
        if self.p is None:
            return True
        if self.rc is None:
            if self.p.poll() is None:
                return False
            self.rc = proc.reap(self.p)
        return True

    def freeze(self):
        if self.running():
            self.p.send_signal(signal.SIGSTOP)
            self.frozen = True
        return self.frozen

    def thaw(self):
        if self.frozen and self.p.poll() is None:
            self.p.send_signal(signal.SIGCONT)
        self.frozen = False

    def kill(self):
        if self.p is not None and self.rc is None:
            self.rc = proc.kill_wait(self.p)

    def stop(self, timeout=120):
        """SIGTERM: it stops producing, waits for what is in flight and
        writes its manifest (what was delivered); its exit status."""
        if self.p is not None and self.rc is None:
            self.thaw()
            if self.p.poll() is None:
                self.p.send_signal(signal.SIGTERM)
            self.rc = proc.reap(self.p, timeout)
            if self.rc is None:
                self.rc = proc.kill_wait(self.p)
        return self.rc

    def started(self):
        return self.p is not None


def read_manifest(path):
    """{key: value} of a kwal-loadgen manifest, {} when there is none."""
    res = {}
    try:
        with open(path) as f:
            for line in f:
                if "=" in line:
                    k, v = line.rstrip("\n").split("=", 1)
                    res[k] = v
    except OSError:
        pass
    return res


def nearest_rank(values, q):
    """The q-quantile (0 < q <= 1) of values by nearest rank (the value at
    rank round(n*q), at least the first); 0 when there are none."""
    v = sorted(values)
    if not v:
        return 0
    return v[min(len(v), max(1, int(len(v) * q + 0.5))) - 1]


def parse_summary(line):
    """{key: int} of kwal-verify's summary line ({} if it is not one)."""
    res = {}
    for k, v in re.findall(r"(?:^|\s)([a-z_]+)=(\d+)", line or ""):
        res[k] = int(v)
    return res if "stored" in res else {}


class VerifyResult:
    def __init__(self, rc, lines, err):
        self.rc = rc
        self.lines = lines
        self.err = err
        self.summary = parse_summary(lines[-1] if lines else "")

    @property
    def ok(self):
        return bool(self.summary)

    def __getitem__(self, k):
        return self.summary.get(k, 0)

    def as_dict(self):
        return {"rc": self.rc, "summary": self.summary,
                "detail": self.lines[:-1][:20], "err": self.err.strip()[-300:]}


def verify(bins, manifest=None, expect=None, run_id=None, topic=None, sqlite=None, files=None,
           save=None, timeout=300, postgresql=None, kafka=None, kafka_props=None,
           kafka_timeout_ms=None, print_ends=False):
    """kwal-verify against a manifest (or expect + run_id) and an output
    (sqlite: a path, or a list of paths pooled; postgresql: a connection
    string; kafka: "BOOTSTRAP/TOPIC", the Kafka sink's output topic, with
    kafka_props {name: value} or ["name=value"] for its reader, as -X);
    the result (save: a path for its stdout)."""
    argv = [bins.verify]
    if manifest:
        argv += ["--manifest", manifest]
    if expect is not None:
        argv += ["--expect", str(expect)]
    if run_id:
        argv += ["--run-id", run_id]
    if topic:
        argv += ["--topic", topic]
    for db in ([sqlite] if isinstance(sqlite, str) else sqlite or []):
        argv += ["--sqlite", db]
    if files:
        argv += ["--files", files]
    if postgresql:
        argv += ["--postgresql", postgresql]
    if kafka:
        argv += ["--kafka", kafka]
        argv += _x_args(kafka_props)
        if kafka_timeout_ms:
            argv += ["--kafka-timeout", str(kafka_timeout_ms)]
    if print_ends:
        argv.append("--print-ends")
    rc, out, err = proc.run(argv, timeout)
    if save:
        with open(save, "w") as f:
            f.write(out)
    return VerifyResult(rc, out.splitlines(), err)


def _x_args(props):
    """-X name=value pairs of props: a dict, or a list of "name=value"."""
    items = props.items() if isinstance(props, dict) else \
        [p.split("=", 1) for p in (props or [])]
    argv = []
    for k, v in items:
        argv += ["-X", "%s=%s" % (k, v)]
    return argv


def detail_counts(lines, head):
    """{(topic, partition): n} of a detail line "HEAD: N -- T/P=n, ..." of
    kwal-verify (partitions:, ends:); {} when there is none. Topic names
    hold no '/', ',' or '='."""
    for line in lines:
        if line.startswith(head + ":"):
            _, _, items = line.partition(" -- ")
            res = {}
            for item in items.split(", "):
                name, eq, n = item.rpartition("=")
                topic, slash, part = name.rpartition("/")
                if eq and slash and part.isdigit() and n.isdigit():
                    res[(topic, int(part))] = int(n)
            return res
    return {}


# --- the sqlite sink, read directly (cheap enough to poll) -------------------

def _ro(path):
    return sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=10)


def sqlite_count(path, topic):
    """Rows of topic in a sqlite sink (0 before there is one)."""
    if not os.path.exists(path):
        return 0
    try:
        db = _ro(path)
        try:
            return db.execute("SELECT COUNT(*) FROM records WHERE topic=?",
                              (topic,)).fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error:
        return 0


def sqlite_end_offsets(path, topic, partitions):
    """{partition: MAX(offset)+1, 0 when none} of a sqlite sink."""
    db = _ro(path)
    try:
        res = {}
        for p in range(partitions):
            v = db.execute("SELECT COALESCE(MAX(offset)+1, 0) FROM records WHERE topic=? AND "
                           "partition=?", (topic, p)).fetchone()[0]
            res[p] = int(v)
        return res
    finally:
        db.close()


# --- a sink's store, whichever kind: what runners poll and verify ----------------

class SqliteStore:
    """sink=sqlite:PATH, read with Python's sqlite3 (read-only)."""

    kind = "sqlite"

    def __init__(self, path):
        self.path = path
        self.spec = "sqlite:" + path

    def count(self, topic):
        return sqlite_count(self.path, topic)

    def exists(self):
        return os.path.exists(self.path)

    def end_offsets(self, topic, partitions):
        return sqlite_end_offsets(self.path, topic, partitions)

    def verify_args(self):
        return {"sqlite": self.path}


class PgStore:
    """sink=postgresql:CONNINFO on a database of its own (a
    kwalh.postgres.Database), read with psql."""

    kind = "postgresql"

    def __init__(self, db):
        self.db = db
        self.spec = "postgresql:" + db.conninfo

    def count(self, topic):
        try:
            return int(self.db.value("SELECT COUNT(*) FROM records WHERE topic = '%s'"
                                     % topic.replace("'", "''")) or 0)
        except proc.HarnessError:
            return 0                    # no table yet, or the server is away

    def exists(self):
        return True

    def end_offsets(self, topic, partitions):
        rows = self.db.sql("SELECT partition, MAX(\"offset\") + 1 FROM records WHERE "
                           "topic = '%s' GROUP BY partition" % topic.replace("'", "''"))
        got = {int(p): int(e) for p, e in rows}
        return {p: got.get(p, 0) for p in range(partitions)}

    def verify_args(self):
        return {"postgresql": self.db.conninfo}


class KafkaStore:
    """sink=kafka:TOPIC: the output topic on the cluster at bootstrap, read
    by kwal-verify --kafka (read_committed, to the last stable offsets; the
    records' SOURCE coordinates come from their kwal.* headers). Every call
    reads the whole topic once: cheap for test sizes (about 0.5 s for
    20,000 records), not for millions. props: librdkafka properties for the
    reader ({name: value} or ["name=value"], TLS and such)."""

    kind = "kafka"

    def __init__(self, bootstrap, topic, bins, props=None, timeout_ms=30000):
        self.bootstrap = bootstrap
        self.topic = topic
        self.bins = bins
        self.props = props
        self.timeout_ms = timeout_ms
        self.spec = "kafka:" + topic

    def _read(self, source_topic=None):
        """(records per (source topic, partition), ends per (source topic,
        partition)) of the committed output, or None when the output topic
        does not exist (yet). kwal-verify runs with --expect 0 (so its exit
        status is 1 once there are records: only 2 is an error)."""
        v = verify(self.bins, expect=0, topic=source_topic, print_ends=True,
                   **self.verify_args(), kafka_timeout_ms=self.timeout_ms,
                   timeout=self.timeout_ms / 1000 + 60)
        if v.rc == 2 or not v.ok:
            if "does not exist" in v.err:
                return None
            raise proc.HarnessError("kwal-verify --kafka %s/%s: exit %s: %s"
                                    % (self.bootstrap, self.topic, v.rc, v.err.strip()[-500:]))
        return detail_counts(v.lines, "partitions"), detail_counts(v.lines, "ends")

    def count(self, topic):
        """Records of source topic `topic` in the committed output, every
        copy (corrupt ones with readable kwal.* headers too); 0 when the
        output topic does not exist yet, or cannot be read now (as
        PgStore.count: a poll goes on)."""
        try:
            got = self._read(topic)
        except proc.HarnessError:
            return 0
        return sum(got[0].values()) if got else 0

    def exists(self):
        return self._read() is not None

    def end_offsets(self, topic, partitions):
        """{source partition: highest source offset stored + 1, 0 when none}."""
        got = self._read(topic)
        ends = got[1] if got else {}
        return {p: ends.get((topic, p), 0) for p in range(partitions)}

    def verify_args(self):
        args = {"kafka": "%s/%s" % (self.bootstrap, self.topic)}
        if self.props:
            args["kafka_props"] = self.props
        return args
