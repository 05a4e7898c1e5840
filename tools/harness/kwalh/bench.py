"""bench -- `kwal bench`: kwal next to kcat and Spark Streaming on the same
records, on a real Apache Kafka cluster (`kwal bench --help` has the options).

Contenders, each reading the same pre-filled topic with a fresh consumer
group:

  kcat            `kcat -G GROUP -o beginning -e -f '%T\\n' TOPIC`, its stdout
                  read by the runner (the floor: a consumer and nothing else)
  spark           Spark Streaming's direct stream (spark-streaming-kafka-0-10,
                  tools/bench/spark), local[2], batch interval = kwal's
                  batch.interval.ms: each batch's records written to files,
                  then commitAsync -- the pattern of Spark's Kafka guide
  receive         `kwal receive`, WAL of 1 replica
  receive-3       `kwal receive`, WAL of 3 replicas, wal.write.quorum=2
  receive-no-wal  `kwal receive --no-wal`
  direct          `kwal direct` (exactly once: ranges in the sqlite sink)
  direct-alo      `kwal direct --at-least-once`

kwal's contenders write to --sink: sqlite (default, kwal's default: the
records stored, with their keys, and a record delivered twice stored once),
postgresql (the same tables on a PostgreSQL server the runner starts on
loopback, fsync on, a database per run), kafka (sink=kafka:TOPIC: one Kafka
transaction per batch into an output topic of the run's own on the same
cluster, <group>-out with --partitions partitions so that each source
partition has an output partition; created before the launch -- on -c
FILE's cluster with Kafka's TopicCommand -- and deleted after the run
unless --keep), file (a JSON-lines file per batch, fsynced and renamed: the
counterpart of Spark's files) or null; direct to sqlite, or postgresql
with --sink postgresql, or kafka with --sink kafka (its ranges live
there). kcat and spark have no sink of kwal's: --sink does not change
them (kcat stores nothing, Spark writes its own files). With --sink kafka
the brokers do the storing: their disk writes and CPU are not in kwal's
"written" and CPU columns (nor a database server's with postgresql), and
the output is not read back (as for every sink: a run is verified by
ZooKeeper's offsets and kwal's statistics).

Workloads (--workloads; --scale multiplies every record count):

  100b   2,000,000 records of 100 B over 32 partitions, produced once before
  1k     500,000 records of 1,024 B, the same way
  rate   --rate records/s (default 50,000) of 100 B for --duration seconds
         (default 60), produced while the contender runs, into a fresh topic
         per run; for the end-to-end latency

Per run (one contender, one workload), from the process launch (t0):

  ready    the contender can read: kcat's "assigned" line, kwal's
           first_assignment_ms, Spark's "started" line (its streaming
           context running)
  end      the last record stored: kcat's exit (-e) or its Nth line; kwal's
           ZooKeeper offsets all at the end, the time ZooKeeper stored the
           last of them (the znodes' mtime); Spark's last batch done
  start-up = ready - t0; steady = end - ready; records/s and MB/s are over
  the steady time (payload bytes, MB = 10^6 B)

and from os.wait4() of the process (kwalh.measure): CPU user + sys (per
million records), peak RSS, bytes written to storage (ru_oublock) per
payload byte. Latency (rate workload): per record, the time it was stored
minus its Kafka timestamp (the producer's CreateTime): kwal's statistics
(latency_ms_*), kcat's per line as the runner reads it, Spark's per record
when its batch file was closed. Each throughput workload runs every
contender --repeat times, interleaved (A B C, A B C, ...), and the rate
workload --rate-repeat times; the report gives medians of verified runs and
each contender's ratios to kcat and Spark in the same run.

Each run is verified: kcat read every partition to its end and printed N
lines; kwal's offsets in ZooKeeper are the end offsets, it exited 0 on
SIGTERM and its final statistics say N records stored, none twice; Spark
exited 0 having counted N records and its files hold every (partition,
offset) once.

Outputs in --out (default ./kwal-bench-<date-time>): bench.md (the table and
the targets), bench.csv (one row per run), bench.png (gnuplot), plan.json,
measurements.jsonl, checks.json; per run its logs and statistics under
runs/. Exit 0 when every run was verified, 1 otherwise, 2 for bad arguments.
"""

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field

from . import proc, services
from .checkers import Check
from .kwal import Kwal, cluster_of, read_stats, write_conf
from .measure import Child, ZkError, ZkReader, kill_live, spawn_measured
from .workload import Loadgen, nearest_rank, read_manifest

PROG = "kwal bench"
SUMMARY = "bench"
POLL_S = 0.1                          # ZooKeeper poll while kwal runs
STOP_GRACE_S = 60                     # SIGTERM -> SIGKILL
READY_TIMEOUT_S = 120                 # rate workload: launch -> ready
SPARK_VERSION = "4.2.0"

CONTENDERS = ("kcat", "spark", "receive", "receive-3", "receive-no-wal", "direct", "direct-alo")
KWAL_ARGS = {
    "receive": ["receive"],
    "receive-3": ["receive"],
    "receive-no-wal": ["receive", "--no-wal"],
    "direct": ["direct"],
    "direct-alo": ["direct", "--at-least-once"],
}
# name -> (records, payload bytes); "rate" is made from --rate and --duration
WORKLOADS = {"100b": (2000000, 100), "1k": (500000, 1024)}
WORKLOAD_NAMES = ("100b", "1k", "rate")
RATE_SIZE = 100

CSV_HEADER = ("workload,contender,run,ok,exit,records,size,wall_s,startup_s,steady_s,"
              "records_per_s,mb_per_s,cpu_user_s,cpu_sys_s,cpu_s_per_m,max_rss_kib,"
              "write_bytes,write_per_byte,latency_p50_ms,latency_p99_ms,latency_max_ms,problems")

EPILOG = """\
Contenders: kcat, spark, receive (WAL 1 replica), receive-3 (3 replicas,
write quorum 2), receive-no-wal, direct (exactly once), direct-alo.
Workloads: 100b (2M x 100 B), 1k (500k x 1 KiB), rate (--rate records/s for
--duration s, latency). Records/s are steady-state: from the moment a
contender can read (partitions assigned, Spark's context started) to the last
record stored; start-up (launch to that moment) is given apart. CPU is user +
sys of the process (and its children), per million records; RSS the peak;
"written" the bytes it wrote to storage per payload byte.

The last line is one summary:

  bench: workloads=100b,1k,rate contenders=... repeat=3 runs=... verified=...
  100b_kcat_rps=... 100b_receive-3_rps=... ... status=ok

Spark's jars and program come from Maven Central through
tools/bench/fetch-spark.sh (tools/install-deps.sh runs it); --spark DIR names
another copy. Spark runs with -Xmx (--spark-heap, default 1g), local[2].

Exit 0 when every run was verified, 1 otherwise, 2 for bad arguments.
"""


UsageError = proc.UsageError
Parser = proc.ArgParser


def positive(name):
    def conv(s):
        if not s.isdigit() or int(s) <= 0:
            raise argparse.ArgumentTypeError("--%s must be a positive integer, got '%s'"
                                             % (name, s))
        return int(s)
    return conv


def positive_float(name):
    def conv(s):
        try:
            v = float(s)
        except ValueError:
            v = 0.0
        if not v > 0 or v != v or v == float("inf"):
            raise argparse.ArgumentTypeError("--%s must be a positive number, got '%s'"
                                             % (name, s))
        return v
    return conv


def kv_arg(opt):
    def conv(s):
        if "=" not in s or s.startswith("="):
            raise argparse.ArgumentTypeError("%s needs key=value, got '%s'" % (opt, s))
        if any(c.isspace() for c in s):
            raise argparse.ArgumentTypeError("%s %s: no spaces, please" % (opt, s))
        return s
    return conv


def names_arg(opt, allowed):
    def conv(s):
        got = [w for w in s.split(",") if w]
        bad = [w for w in got if w not in allowed]
        if bad or not got:
            raise argparse.ArgumentTypeError("%s: unknown '%s' (one or more of %s)"
                                             % (opt, ",".join(bad) or s, ",".join(allowed)))
        return list(dict.fromkeys(got))
    return conv


def parse_args(argv):
    p = Parser(prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
               description="kwal's modes next to kcat and Spark Streaming's direct stream on the "
               "same pre-filled topics of a real Apache Kafka cluster (started here, or -c FILE's): "
               "steady-state records/s and MB/s, start-up, CPU seconds per million records, peak "
               "RSS, bytes written per byte, and end-to-end latency at a fixed rate. Runs are "
               "interleaved and repeated; the report (Markdown, CSV, chart) gives medians.",
               epilog=EPILOG)
    p.add_argument("-c", dest="conf", metavar="FILE",
                   help="use the cluster of this kwal configuration (kafka.bootstrap.servers, "
                   "zookeeper.connect) instead of starting one; topics are created there")
    p.add_argument("--contenders", type=names_arg("--contenders", CONTENDERS),
                   default=list(CONTENDERS), metavar="LIST",
                   help="comma-separated, in run order (default %s)" % ",".join(CONTENDERS))
    p.add_argument("--workloads", type=names_arg("--workloads", WORKLOAD_NAMES),
                   default=list(WORKLOAD_NAMES), metavar="LIST",
                   help="comma-separated (default %s)" % ",".join(WORKLOAD_NAMES))
    p.add_argument("-k", "--repeat", type=positive("repeat"), default=3,
                   help="runs of each contender per throughput workload (default 3)")
    p.add_argument("--rate-repeat", type=positive("rate-repeat"), default=1,
                   help="runs of each contender on the rate workload (default 1)")
    p.add_argument("--scale", type=positive_float("scale"), default=1.0,
                   help="multiply every workload's record count (and --duration) by this "
                   "(default 1; e.g. 0.01 for a quick look)")
    p.add_argument("--rate", type=positive("rate"), default=50000,
                   help="records/s of the rate workload (default 50000)")
    p.add_argument("--duration", type=positive("duration"), default=60,
                   help="seconds of the rate workload (default 60)")
    p.add_argument("-p", "--partitions", type=positive("partitions"), default=32,
                   help="partitions of every topic (default 32)")
    p.add_argument("--brokers", type=int, choices=(1, 3), default=1,
                   help="nodes of the local Kafka cluster (default 1; 3: RF 3, "
                   "min.insync.replicas 2)")
    p.add_argument("--sink", choices=("sqlite", "postgresql", "kafka", "file", "null"),
                   default="sqlite",
                   help="sink of receive, receive-3, receive-no-wal and direct-alo: sqlite "
                   "(default), postgresql (a local server the runner starts), kafka (an "
                   "output topic per run on the same cluster, --partitions partitions, "
                   "deleted after the run unless --keep), file (a JSON-lines file per batch, "
                   "fsynced: what Spark's contender writes, without the fsync) or null; "
                   "direct uses sqlite, or postgresql / kafka with --sink postgresql / "
                   "kafka; kcat and spark have no kwal sink")
    p.add_argument("--batch-ms", type=positive("batch-ms"), default=2000,
                   help="kwal's batch.interval.ms and Spark's batch interval (default 2000, "
                   "kwal's default)")
    p.add_argument("-X", dest="xconf", action="append", type=kv_arg("-X"), default=[],
                   metavar="KEY=VALUE", help="extra kwal setting for every kwal contender "
                   "(repeatable)")
    p.add_argument("--rdkafka", dest="rdconf", action="append", type=kv_arg("--rdkafka"),
                   default=[], metavar="KEY=VALUE",
                   help="librdkafka consumer property for kcat and kwal (repeatable)")
    p.add_argument("--spark", metavar="DIR", help="Spark's jars and the program (default: "
                   "what tools/bench/fetch-spark.sh prints, fetching it when missing)")
    p.add_argument("--spark-heap", default="1g", metavar="SIZE",
                   help="Spark's JVM -Xmx (default 1g)")
    p.add_argument("-o", "--out", metavar="DIR",
                   help="report directory (default ./kwal-bench-<date-time>)")
    p.add_argument("--build", metavar="DIR",
                   help="build directory whose tools/ has kwal (default: the kwal that runs "
                   "this, else $KWAL_BIN_DIR, else build)")
    p.add_argument("--timeout", type=positive("timeout"), default=900, metavar="S",
                   help="bound, in seconds, for each run and each production (default 900)")
    p.add_argument("--keep", action="store_true",
                   help="keep the runs' WALs, sink databases, output topics (--sink kafka) "
                   "and Spark's files")
    a = p.parse_args(argv)
    if not re.fullmatch(r"[0-9]+[kKmMgG]?", a.spark_heap):
        raise UsageError("--spark-heap must be a JVM size like 1g or 768m, got '%s'"
                         % a.spark_heap)
    return a


# --- the plan ----------------------------------------------------------------------

@dataclass
class Workload:
    name: str
    records: int
    size: int
    rate: int = 0             # records/s while the contender runs; 0: produced before
    topic: str = ""           # throughput workloads: the one pre-filled topic


@dataclass
class Step:
    workload: str
    contender: str
    run: int
    group: str
    topic: str
    out_topic: str = ""         # --sink kafka, kwal's contenders: the output topic


@dataclass
class Plan:
    contenders: list
    workloads: list
    repeat: int
    rate_repeat: int
    partitions: int
    brokers: int
    sink: str
    batch_ms: int
    kwal_settings: list
    rdkafka: list
    spark_heap: str
    timeout_s: int
    steps: list = field(default_factory=list)

    def workload(self, name):
        return next(Workload(**w) for w in self.workloads if w["name"] == name)


def make_plan(a, tag):
    """What runs, in which order: per workload, run 1 of every contender,
    then run 2, ... (tag: unique per invocation, in every group and topic)."""
    wls = []
    for name in a.workloads:
        if name == "rate":
            n = max(1, int(a.rate * a.duration * a.scale + 0.5))
            wls.append(Workload("rate", n, RATE_SIZE, rate=a.rate))
        else:
            n, size = WORKLOADS[name]
            wls.append(Workload(name, max(1, int(n * a.scale + 0.5)), size,
                                topic="bench-%s-%s" % (name, tag)))
    pl = Plan(contenders=list(a.contenders), workloads=[asdict(w) for w in wls],
              repeat=a.repeat, rate_repeat=a.rate_repeat, partitions=a.partitions,
              brokers=a.brokers, sink=a.sink, batch_ms=a.batch_ms,
              kwal_settings=list(a.xconf), rdkafka=list(a.rdconf), spark_heap=a.spark_heap,
              timeout_s=a.timeout)
    for w in wls:
        for r in range(1, (a.rate_repeat if w.rate else a.repeat) + 1):
            for c in a.contenders:
                group = "bench-%s-%s-%d-%s" % (w.name, c, r, tag)
                topic = w.topic or "bench-rate-%s-%d-%s" % (c, r, tag)
                out = group + "-out" if a.sink == "kafka" and c in KWAL_ARGS else ""
                pl.steps.append(Step(w.name, c, r, group, topic, out))
    return pl


# --- measurement records -----------------------------------------------------------

@dataclass
class Measurement:
    """What one step did and observed. Times in seconds (wall clock, t0 =
    launch); None when unknown. Nothing in it is a verdict."""
    workload: str
    contender: str
    run: int
    group: str
    topic: str
    records: int = 0
    size: int = 0
    pid: int = 0
    exit: int = None            # exit status (kwal: after our SIGTERM); -N: signal N
    timed_out: bool = False
    killed: bool = False
    exited_early: bool = False  # ended before the last record was stored
    wall_s: float = None        # t0 -> end
    startup_s: float = None     # t0 -> ready
    steady_s: float = None      # ready -> end
    end: str = ""               # how the end was taken
    cpu_user_s: float = None
    cpu_sys_s: float = None
    max_rss_kib: int = None
    write_bytes: int = None
    rss_inherited: bool = False
    counted: int = None         # records the contender reported / printed
    latency: dict = None        # {"p50": ms, "p90":, "p99":, "max":}
    ends: dict = field(default_factory=dict)        # kcat: {partition: end offset}
    zk_offsets: dict = field(default_factory=dict)  # kwal: {partition: offset}
    stats: dict = None          # kwal: final statistics
    spark: dict = None          # spark: its "done" line
    files: dict = None          # spark: {"records":, "dups":, "bad": [partitions]}
    producer: dict = None       # rate: the producer's manifest
    note: str = ""

    @property
    def cpu_s(self):
        if self.cpu_user_s is None:
            return None
        return self.cpu_user_s + self.cpu_sys_s


# --- the checks ---------------------------------------------------------------------

def check_workload(w, manifest, rc, timeout):
    c = Check("workload %s" % w.name)
    delivered = manifest.get("delivered", "")
    if rc != 0:
        c.fail("kwal-loadgen exit %s%s" % (proc.exit_word(rc), " (timed out after %d s)"
                                           % timeout if rc == 124 else ""))
    if delivered != str(w.records):
        c.fail("delivered %s of %d records" % (delivered or "?", w.records))
    return c


def check_topic(w, partitions, topic):
    """topic: {partition: (records, first offset, last offset)} as kcat -C read it."""
    c = Check("topic %s" % w.name)
    total = sum(n for n, _, _ in topic.values())
    bad = [p for p, (n, lo, hi) in sorted(topic.items()) if lo != 0 or hi + 1 != n]
    if total != w.records or len(topic) > partitions or bad:
        c.fail("%d records in %d partitions (expected %d in %d)%s" % (
            total, len(topic), w.records, partitions,
            "; partitions not from 0 or with gaps: %s" % " ".join(map(str, bad)) if bad else ""))
    return c


def _mismatch(got, want):
    return ["%d:%s/%d" % (p, "-" if got.get(p) is None else got.get(p), n)
            for p, n in sorted(want.items()) if got.get(p) != n]


def _common(c, plan, m):
    if m.timed_out:
        c.fail("not done after %d s" % plan.timeout_s)
    if m.exited_early:
        c.fail("ended before the last record was stored (exit %s)" % proc.exit_word(m.exit))


def check_kcat(plan, w, counts, m):
    """kcat read every partition to its end (throughput: "Reached end ... at
    offset X", X = the partition's record count; exit 0) and printed one line
    per record."""
    c = Check("%s kcat run %d" % (w.name, m.run))
    _common(c, plan, m)
    if not w.rate:
        if m.exit != 0 and not m.timed_out:
            c.fail("exit %s" % proc.exit_word(m.exit))
        bad = _mismatch(m.ends, counts)
        if bad:
            c.fail("partitions not read to the end (got/want): %s" % " ".join(bad))
    if m.counted != w.records:
        c.fail("%s records printed (expected %d)" % (m.counted, w.records))
    return c


def check_kwal(plan, w, counts, m):
    """kwal's offsets in ZooKeeper are the end offsets (rate: they sum to N);
    after SIGTERM it exited 0; its final statistics say N records stored and
    no duplicate delivery."""
    c = Check("%s %s run %d" % (w.name, m.contender, m.run))
    _common(c, plan, m)
    if counts:
        bad = _mismatch(m.zk_offsets, counts)
        if bad:
            c.fail("ZooKeeper offsets differ from the end offsets (got/want): %s"
                   % " ".join(bad))
    elif sum(m.zk_offsets.values()) != w.records:
        c.fail("ZooKeeper offsets sum to %d (expected %d)" % (sum(m.zk_offsets.values()),
                                                               w.records))
    if not m.exited_early:
        if m.killed:
            c.fail("still running %d s after SIGTERM; killed" % STOP_GRACE_S)
        elif m.exit != 0:
            c.fail("exit %s after SIGTERM" % proc.exit_word(m.exit))
    st = m.stats or {}
    if not st.get("final"):
        c.fail("no final statistics (--stats-json)")
    elif st.get("records_stored") != w.records:
        c.fail("%s records stored (expected %d)" % (st.get("records_stored"), w.records))
    elif st.get("duplicate_deliveries"):
        c.fail("%d duplicate deliveries" % st["duplicate_deliveries"])
    return c


def check_spark(plan, w, counts, m):
    """Spark exited 0 after counting N records; its files hold every
    (partition, offset) once (throughput: exactly the topic's offsets)."""
    c = Check("%s spark run %d" % (w.name, m.run))
    _common(c, plan, m)
    if not m.timed_out and m.exit != 0:
        c.fail("exit %s" % proc.exit_word(m.exit))
    if m.spark is None:
        c.fail("no \"done\" line")
    elif m.spark.get("records") != w.records:
        c.fail("counted %s records (expected %d)" % (m.spark.get("records"), w.records))
    f = m.files or {}
    if f.get("error"):
        c.fail("its files: %s" % f["error"])
    elif f.get("records") != w.records:
        c.fail("%s records in its files (expected %d)" % (f.get("records"), w.records))
    if f.get("dups"):
        c.fail("%d records written twice" % f["dups"])
    if f.get("bad"):
        c.fail("partitions with offsets missing or out of range: %s"
               % " ".join(map(str, f["bad"][:20])))
    return c


# --- arithmetic ---------------------------------------------------------------------

def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def quantiles(hist):
    """{"p50","p90","p99","max"} of {ms: count} (nearest rank), None if empty."""
    n = sum(hist.values())
    if not n:
        return None
    keys = sorted(hist)
    res = {"max": keys[-1]}
    for name, q in (("p50", 0.50), ("p90", 0.90), ("p99", 0.99)):
        rank = min(n, max(1, int(n * q + 0.5)))
        acc = 0
        for k in keys:
            acc += hist[k]
            if acc >= rank:
                res[name] = k
                break
    return res


def check_files(out_dir, counts, total_expected):
    """What Spark wrote in OUT/batch-*/part-*: per record a line `<partition>
    <offset> <ts> <key bytes> <value bytes>`, then the key, the value and a
    newline. {"records": n, "dups": d, "bad": [partitions]}; with counts
    ({partition: records}) every offset 0..n-1 must be there once."""
    seen = {}
    n = dups = 0
    if os.path.isdir(out_dir):
        for b in sorted(os.listdir(out_dir)):
            bd = os.path.join(out_dir, b)
            if not (b.startswith("batch-") and os.path.isdir(bd)):
                continue
            for fn in os.listdir(bd):
                if not fn.startswith("part-"):
                    continue
                with open(os.path.join(bd, fn), "rb") as f:
                    for line in iter(f.readline, b""):
                        w = line.split()
                        if len(w) != 5:
                            raise proc.HarnessError("%s: not a record header: %r"
                                                    % (os.path.join(bd, fn), line[:80]))
                        part, off = int(w[0]), int(w[1])
                        f.seek(int(w[3]) + int(w[4]) + 1, os.SEEK_CUR)
                        bits = seen.get(part)
                        if bits is None:
                            bits = seen[part] = bytearray()
                        if off >= len(bits):
                            bits.extend(bytes(max(off + 1 - len(bits), len(bits))))
                        if bits[off]:
                            dups += 1
                        else:
                            bits[off] = 1
                            n += 1
    bad = []
    if counts:
        for part, want in sorted(counts.items()):
            bits = seen.get(part, bytearray())
            if bits.count(1) != want or any(bits[want:]):
                bad.append(part)
    return {"records": n, "dups": dups, "bad": bad}


# --- the runner ---------------------------------------------------------------------

class Bench:
    def __init__(self, a, bins):
        self.a = a
        self.bins = bins
        self.out = None
        self.zk = None
        self.zk_connect = None
        self.kafka = None
        self.pg = None              # --sink postgresql: the local server
        self.tools = None           # a KafkaCluster for its tools (-c: topics)
        self.bs = None
        self.plan = None
        self.counts = {}            # workload -> {partition: records}
        self.measurements = []
        self.verdicts = {}          # (workload, contender, run) -> Check
        self.checks = []
        self.failed = False
        self.spark_dir = None
        self.spark_jvm = []

    def say(self, msg):
        print(msg, flush=True)

    def warn(self, msg):
        sys.stderr.write(msg + "\n")
        sys.stderr.flush()

    def path(self, *parts):
        return os.path.join(self.out, *parts)

    def record(self, m):
        self.measurements.append(m)
        with open(self.path("measurements.jsonl"), "a") as f:
            f.write(json.dumps(asdict(m)) + "\n")

    def judge(self, c):
        self.checks.append(c)
        if not c.ok:
            self.failed = True
        return c

    def rerun(self):
        a = self.a
        words = ["kwal", "bench", "--contenders", ",".join(a.contenders), "--workloads",
                 ",".join(a.workloads), "-k", str(a.repeat), "--rate-repeat", str(a.rate_repeat),
                 "--partitions", str(a.partitions), "--sink", a.sink, "--batch-ms",
                 str(a.batch_ms)]
        if a.scale != 1.0:
            words += ["--scale", "%g" % a.scale]
        if "rate" in a.workloads:
            words += ["--rate", str(a.rate), "--duration", str(a.duration)]
        words += ["-c", a.conf] if a.conf else ["--brokers", str(a.brokers)]
        for x in a.xconf:
            words += ["-X", x]
        for x in a.rdconf:
            words += ["--rdkafka", x]
        return " ".join(shlex.quote(w) for w in words)

    # --- set-up

    def prepare_spark(self):
        d = self.a.spark
        if not d:
            fetch = os.path.join(proc.REPO, "tools", "bench", "fetch-spark.sh")
            self.say("    Spark: %s (fetches Spark %s's jars when missing)" % (fetch,
                                                                           SPARK_VERSION))
            rc, out, err = proc.run(["sh", fetch, SPARK_VERSION], 1800)
            if rc != 0:
                raise proc.HarnessError("Spark is needed for the spark contender: %s exit %s: %s"
                                        % (fetch, proc.exit_word(rc), err.strip()[-500:]))
            d = out.strip().splitlines()[-1] if out.strip() else ""
        jar = os.path.join(d, "kwal-spark-bench.jar")
        if not (os.path.isdir(os.path.join(d, "libs")) and os.path.isfile(jar)):
            raise proc.HarnessError("--spark %s: no libs/ and kwal-spark-bench.jar there" % d)
        self.spark_dir = d
        opts = os.path.join(proc.REPO, "tools", "bench", "spark", "jvm.options")
        with open(opts) as f:
            self.spark_jvm = [ln.strip() for ln in f
                              if ln.strip() and not ln.lstrip().startswith("#")]

    def start_cluster(self):
        a = self.a
        if a.conf:
            try:
                self.bs, self.zk_connect = cluster_of(a.conf)
            except ValueError as e:
                raise UsageError(str(e))
            self.zk = services.ZooKeeper(self.bins, None)
            self.zk.connect = self.zk_connect
            from .kafka import KafkaCluster     # for its tools (TopicCommand)
            self.tools = KafkaCluster(self.path("kafka-tools"), nodes=1)
            self.say("    cluster: Kafka %s, ZooKeeper %s (from %s)" % (self.bs, self.zk_connect,
                                                                      a.conf))
            self.start_pg()
            return
        self.zk, self.zk_connect, self.kafka, self.bs = services.start_local(
            self.bins, self.path("zk"), self.path("kafka"), nodes=a.brokers)
        self.say("    ZooKeeper %s; Kafka %s (Apache Kafka, %d node(s))"
                 % (self.zk_connect, self.bs, a.brokers))
        self.start_pg()

    def start_pg(self):
        if self.a.sink != "postgresql":
            return
        from .postgres import PostgreSQL
        self.pg = PostgreSQL(self.path("pg"))
        self.pg.start()
        self.say("    PostgreSQL %s (sink)" % self.pg.conninfo)

    def create_topic(self, name):
        services.create_topic(self.kafka, self.tools, self.bs, name, self.a.partitions)

    def delete_topic(self, name):
        """Delete a topic this runner made (--sink kafka's outputs); a warning
        when it cannot (the run's verdict stands)."""
        try:
            if self.kafka is not None:
                self.kafka.cluster.delete_topic(name)
                return
            rc, _, err = proc.run(self.tools.tool_cmd("topics", "--bootstrap-server", self.bs,
                                                      "--delete", "--topic", name), 120)
            if rc != 0:
                raise proc.HarnessError(err.strip()[-300:])
        except Exception as e:          # noqa: BLE001 -- the cluster's own errors too
            self.warn("%s: cannot delete output topic %s: %s" % (PROG, name, e))

    def produce(self, w, topic, rate=0, background=False):
        base = self.path("runs", "produce-%s" % topic)
        lg = Loadgen(self.bins, self.bs, topic, w.records, base + ".manifest", base,
                     size=w.size, rate=rate or None)
        if background:
            return lg.start()
        t0 = time.monotonic()
        rc = lg.run(self.a.timeout)
        c = self.judge(check_workload(w, read_manifest(base + ".manifest"), rc, self.a.timeout))
        if not c.ok:
            raise proc.HarnessError("producing %s: %s (%s.err)" % (w.name, "; ".join(c.problems),
                                                                  base))
        self.say("    %s: produced %d records of %d B in %.1f s (kwal-loadgen, flat out)"
                 % (w.name, w.records, w.size, time.monotonic() - t0))
        return lg

    def read_topic(self, topic):
        """{partition: (records, first offset, last offset)}, read once with kcat -C."""
        err = self.path("runs", "topic-check-%s.err" % topic)
        p = proc.spawn(["kcat", "-C", "-b", self.bs, "-t", topic, "-o", "beginning", "-e",
                        "-q", "-f", "%p %o\\n"], stdout=subprocess.PIPE, stderr=err)
        expired = []

        def expire():
            expired.append(True)
            p.kill()
        timer = threading.Timer(self.a.timeout, expire)
        timer.daemon = True
        timer.start()
        res = {}
        try:
            for line in p.stdout:
                w = line.split()
                if len(w) != 2:
                    continue
                part, off = int(w[0]), int(w[1])
                n, lo, hi = res.get(part, (0, off, off))
                res[part] = (n + 1, min(lo, off), max(hi, off))
        finally:
            timer.cancel()
            p.stdout.close()
            rc = proc.kill_wait(p, signal.SIGTERM, grace=10)
        if rc != 0:
            raise proc.HarnessError("kcat -C (topic check) exit %s%s: see %s" % (
                proc.exit_word(rc), " (timed out)" if expired else "", err))
        return res

    def fill(self, w):
        """Create and fill a throughput workload's topic, then check it."""
        self.create_topic(w.topic)
        self.produce(w, w.topic)
        topic = self.read_topic(w.topic)
        c = self.judge(check_topic(w, self.a.partitions, topic))
        if not c.ok:
            raise proc.HarnessError("topic check: %s" % "; ".join(c.problems))
        self.counts[w.name] = {p: n for p, (n, _, _) in topic.items()}

    # --- kcat

    def run_kcat(self, st, w, m, d):
        argv = ["kcat", "-G", st.group, "-b", self.bs, "-o", "beginning", "-f", "%T\\n"]
        # -e: exit at the end of every partition; the rate workload instead
        # reads until N lines came, unbuffered (-u) so that each line is seen
        # when kcat has the record
        argv.append("-u" if w.rate else "-e")
        for kv in self.a.rdconf:
            argv += ["-X", kv]
        argv.append(st.topic)
        lines, assigned = [], []
        got = {"n": 0, "end": None}
        hist = {}
        done = threading.Event()

        def read_stderr(f):
            for raw in f:
                now = time.time()
                line = raw.decode(errors="replace").rstrip("\n")
                if not assigned and "rebalanced" in line and "assigned:" in line:
                    assigned.append(now)
                lines.append("%.6f %s" % (now, line))

        def read_stdout(f):
            rest = b""
            while True:
                chunk = f.read1(1 << 20) if hasattr(f, "read1") else f.read(1 << 20)
                if not chunk:
                    break
                now = time.time()
                k = chunk.count(b"\n")
                if w.rate:
                    now_ms = int(now * 1000)
                    buf = rest + chunk
                    cut = buf.rfind(b"\n") + 1
                    for ts in buf[:cut].split():
                        lat = max(0, now_ms - int(ts))
                        hist[lat] = hist.get(lat, 0) + 1
                    rest = buf[cut:]
                got["n"] += k
                if got["n"] >= w.records and got["end"] is None:
                    got["end"] = now
                    done.set()
            done.set()

        r_err, w_err = os.pipe()
        r_out, w_out = os.pipe()
        t0 = time.time()
        try:
            ch = spawn_measured(argv, stdout=w_out, stderr=w_err)
        finally:
            os.close(w_err)
            os.close(w_out)
        m.pid = ch.pid
        producer = None
        with os.fdopen(r_err, "rb") as ef, os.fdopen(r_out, "rb") as of:
            te = threading.Thread(target=read_stderr, args=(ef,), daemon=True)
            to = threading.Thread(target=read_stdout, args=(of,), daemon=True)
            te.start()
            to.start()
            try:
                if w.rate:
                    producer = self.start_rate(w, st, lambda: bool(assigned), ch, m)
                    if producer is not None:
                        done.wait(w.records / w.rate + self.a.timeout)
                    if ch.poll() is not None and got["end"] is None:
                        m.exited_early = True
                    elif got["end"] is None:
                        m.timed_out = True
                    ch.stop(STOP_GRACE_S)
                else:
                    ch.wait(self.a.timeout)
            finally:
                ch.stop(0)       # interrupted: its pipes must close before ours
                if producer is not None:
                    producer.stop(60)
            to.join(30)
            te.join(10)
        self.reaped(ch, m, producer)
        m.counted = got["n"]
        with open(os.path.join(d, "kcat.err"), "w") as f:
            f.write("# %s\n" % " ".join(shlex.quote(x) for x in argv))
            f.write("\n".join(lines) + "\n")
        for ln in lines:
            g = re.search(r"Reached end of topic (\S+) \[(\d+)\] at offset (\d+)", ln)
            if g and g.group(1) == st.topic:
                m.ends[int(g.group(2))] = int(g.group(3))
        end = got["end"] if w.rate else (ch.t_exit - time.monotonic() + time.time()
                                        if ch.t_exit else None)
        m.end = "nth-line" if w.rate else "exit"
        self.times(m, t0, assigned[0] if assigned else None, end)
        m.latency = quantiles(hist) if w.rate else None
        m.note = " | ".join(ln.split(" ", 1)[1] for ln in lines[-3:])

    # --- the rate workload's producer

    def start_rate(self, w, st, ready, ch, m):
        """Wait (up to READY_TIMEOUT_S) until ready() says the contender can
        read, then start the producer at w.rate; None if it never was."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not ready():
            if ch.poll() is not None:
                m.exited_early = True
                return None
            if time.monotonic() > deadline:
                m.timed_out = True
                m.note = "not ready after %d s" % READY_TIMEOUT_S
                return None
            time.sleep(0.05)
        return self.produce(w, st.topic, rate=w.rate, background=True)

    def reaped(self, ch, m, producer):
        """After the contender ended: its resource usage and exit into m (a
        timeout seen by the runner stays one), and the rate workload's
        producer stopped, its manifest kept."""
        timed_out = m.timed_out or ch.timed_out
        ch.usage_into(m)
        m.timed_out = timed_out
        if producer is not None:
            rc = producer.stop(60) if not producer.done() else producer.rc
            m.producer = read_manifest(producer.manifest)
            m.producer["exit"] = rc

    # --- kwal

    def kwal_conf(self, st, d):
        a = self.a
        s = {
            "group.id": st.group,
            "topics": st.topic,
            "zookeeper.connect": self.zk_connect,
            "kafka.bootstrap.servers": self.bs,
            "auto.offset.reset": "earliest",
            "batch.interval.ms": a.batch_ms,
        }
        if st.contender.startswith("receive"):
            reps = 3 if st.contender == "receive-3" else 1
            s["wal.dirs"] = ",".join(os.path.join(d, "wal%d" % i) for i in range(reps))
            if reps == 3:
                s["wal.write.quorum"] = 2
        if a.sink == "postgresql":
            from .postgres import Database
            db = Database(self.pg, "bench_%s_%s_%d" % (st.workload, st.contender.replace("-", "_"),
                                                       st.run))
            s["sink"] = "postgresql:" + db.conninfo
        elif a.sink == "kafka":
            s["sink"] = "kafka:" + st.out_topic
        elif st.contender == "direct" or a.sink == "sqlite":
            s["sink"] = "sqlite:" + os.path.join(d, "sink.db")
        elif a.sink == "file":
            s["sink"] = "file:" + os.path.join(d, "out")
        else:
            s["sink"] = "null"
        for kv in a.rdconf:
            k, v = kv.split("=", 1)
            s["kafka." + k] = v
        for kv in a.xconf:
            k, v = kv.split("=", 1)
            s[k] = v
        conf = os.path.join(d, "kwal.conf")
        write_conf(conf, s, "%s: %s, %s run %d" % (PROG, st.contender, st.workload, st.run))
        return conf

    def wait_offsets(self, st, w, ch, m, counts):
        """Poll the group's offsets until each is its partition's record count
        (counts; the rate workload: until they sum to N), kwal ends, or the
        timeout. The end (wall clock): the newest offset znode's mtime, i.e.
        when ZooKeeper stored the last of them; if this runner's reader
        fails, the time a kwal-zk-local poll saw them (coarser)."""
        base = "/consumers/%s/offsets/%s/" % (st.group, st.topic)
        paths = [base + str(p) for p in range(self.a.partitions)]
        deadline = time.monotonic() + self.a.timeout + (w.records / w.rate if w.rate else 0)
        reader = None
        try:
            reader = ZkReader(self.zk_connect)
        except (OSError, ZkError) as e:
            m.note = "ZooKeeper reader: %s; polling with kwal-zk-local" % e
        try:
            while True:
                if ch.poll() is not None:
                    m.exited_early = True
                    return None
                if reader is not None:
                    try:
                        got = reader.get_many(paths)
                    except (OSError, ZkError, struct.error) as e:
                        m.note = "ZooKeeper reader: %s; polling with kwal-zk-local" % e
                        reader.close()
                        reader = None
                        continue
                    offs = {int(p.rsplit("/", 1)[1]): (int(v[0]), v[1])
                            for p, v in got.items() if v is not None and v[0].isdigit()}
                    if self._at_end({p: o for p, (o, _) in offs.items()}, counts, w):
                        m.end = "zk-mtime"
                        return max(t for _, t in offs.values()) / 1000.0
                else:
                    offs = self.zk.offsets(st.group, st.topic, self.a.partitions)
                    if self._at_end({p: o or 0 for p, o in offs.items()}, counts, w):
                        m.end = "zk-poll"
                        return time.time()
                if time.monotonic() > deadline:
                    m.timed_out = True
                    return None
                time.sleep(POLL_S if reader is not None else 1.0)
        finally:
            if reader is not None:
                reader.close()

    @staticmethod
    def _at_end(offs, counts, w):
        if counts:
            return all(offs.get(p, 0) >= n for p, n in counts.items())
        return sum(offs.values()) >= w.records

    def run_kwal(self, st, w, m, d):
        if st.out_topic:
            self.create_topic(st.out_topic)     # kwal does not create it
        conf = self.kwal_conf(st, d)
        k = Kwal(self.bins, KWAL_ARGS[st.contender], conf, os.path.join(d, "kwal"))
        t0 = time.time()
        ch = spawn_measured(k.argv(), stdout=os.path.join(d, "kwal.out"), stderr=k.log)
        m.pid = ch.pid
        producer = None
        t1 = None
        if w.rate:
            def ready():
                s = read_stats(k.stats_path) or {}
                return (s.get("first_assignment_ms") or -1) >= 0
            producer = self.start_rate(w, st, ready, ch, m)
        if producer is not None or not w.rate:
            t1 = self.wait_offsets(st, w, ch, m, self.counts.get(w.name))
        if ch.rc is None:
            ch.stop(STOP_GRACE_S)
        self.reaped(ch, m, producer)
        m.stats = k.stats()
        m.zk_offsets = self.zk.offsets(st.group, st.topic, self.a.partitions)
        m.zk_offsets = {p: o for p, o in m.zk_offsets.items() if o is not None}
        st_ = m.stats or {}
        m.counted = st_.get("records_stored")
        fa = st_.get("first_assignment_ms", -1)
        ready = t0 + fa / 1000.0 if fa is not None and fa >= 0 else None
        self.times(m, t0, ready, t1)
        if w.rate and st_.get("latency_records"):     # pre-filled: the backlog's age
            m.latency = {q: st_.get("latency_ms_" + q) for q in ("p50", "p90", "p99", "max")}
        if m.exited_early or m.exit != 0 or m.timed_out:
            m.note = (m.note + " | " if m.note else "") + k.log_tail(3)

    # --- spark

    def run_spark(self, st, w, m, d):
        outdir = os.path.join(d, "out")
        cp = "%s/*:%s" % (os.path.join(self.spark_dir, "libs"),
                          os.path.join(self.spark_dir, "kwal-spark-bench.jar"))
        argv = (["java"] + self.spark_jvm + ["-Xmx" + self.a.spark_heap, "-cp", cp,
                                            "kwal.bench.SparkDirect", "--bootstrap", self.bs,
                                            "--topic", st.topic, "--group", st.group,
                                            "--out", outdir, "--records", str(w.records),
                                            "--batch-ms", str(self.a.batch_ms),
                                            "--master", "local[2]"])
        events = {}
        done = threading.Event()

        def read_stdout(f):
            with open(os.path.join(d, "spark.out"), "w") as log:
                for raw in f:
                    line = raw.decode(errors="replace")
                    log.write(line)
                    try:
                        ev = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(ev, dict) and ev.get("event") in ("started", "done"):
                        events[ev["event"]] = ev
            done.set()

        r_out, w_out = os.pipe()
        t0 = time.time()
        try:
            ch = spawn_measured(argv, stdout=w_out, stderr=os.path.join(d, "spark.err"))
        finally:
            os.close(w_out)
        m.pid = ch.pid
        producer = None
        with os.fdopen(r_out, "rb") as of:
            to = threading.Thread(target=read_stdout, args=(of,), daemon=True)
            to.start()
            try:
                if w.rate:
                    producer = self.start_rate(w, st, lambda: "started" in events, ch, m)
                if producer is not None or not w.rate:
                    ch.wait(self.a.timeout + (w.records / w.rate if w.rate else 0))
                else:
                    ch.stop(STOP_GRACE_S)
            finally:
                ch.stop(0)       # interrupted: its pipes must close before ours
                if producer is not None:
                    producer.stop(60)
            to.join(30)
        self.reaped(ch, m, producer)
        m.spark = events.get("done")
        sp = m.spark or {}
        m.counted = sp.get("records")
        m.end = "last-batch"
        ready = (events.get("started") or {}).get("ready_ms")
        last = sp.get("last_out_ms")
        self.times(m, t0, ready / 1000.0 if ready else None, last / 1000.0 if last else None)
        if w.rate and sp.get("latency_ms_p50") is not None:
            m.latency = {q: sp.get("latency_ms_" + q) for q in ("p50", "p90", "p99", "max")}
        try:
            m.files = check_files(outdir, self.counts.get(w.name), w.records)
        except (OSError, ValueError, proc.HarnessError) as e:
            m.files = {"error": str(e)}
        if m.exit != 0 or m.spark is None:
            try:
                with open(os.path.join(d, "spark.err"), errors="replace") as f:
                    m.note = " | ".join(f.read().strip().splitlines()[-3:])[-600:]
            except OSError:
                pass
        if not self.a.keep:
            shutil.rmtree(outdir, ignore_errors=True)

    # --- one step

    @staticmethod
    def times(m, t0, ready, end):
        if end is not None:
            m.wall_s = round(max(end - t0, 0.001), 3)
        if ready is not None:
            m.startup_s = round(max(ready - t0, 0.0), 3)
            if end is not None:
                m.steady_s = round(max(end - ready, 0.001), 3)

    def run_step(self, st):
        w = self.plan.workload(st.workload)
        d = self.path("runs", "%s-%s-%d" % (st.workload, st.contender, st.run))
        os.makedirs(d, exist_ok=True)
        if w.rate:
            self.create_topic(st.topic)
        m = Measurement(st.workload, st.contender, st.run, st.group, st.topic, w.records, w.size)
        counts = self.counts.get(w.name)
        if st.contender == "kcat":
            self.run_kcat(st, w, m, d)
            c = check_kcat(self.plan, w, counts, m)
        elif st.contender == "spark":
            self.run_spark(st, w, m, d)
            c = check_spark(self.plan, w, counts, m)
        else:
            self.run_kwal(st, w, m, d)
            c = check_kwal(self.plan, w, counts, m)
        if m.producer is not None:
            pc = check_workload(w, m.producer, m.producer.get("exit"), self.a.timeout)
            if not pc.ok:
                c.fail("producer: " + "; ".join(pc.problems))
        self.record(m)
        self.judge(c)
        self.verdicts[(st.workload, st.contender, st.run)] = c
        if not self.a.keep:
            for sub in ("wal0", "wal1", "wal2", "out"):
                shutil.rmtree(os.path.join(d, sub), ignore_errors=True)
            for fn in os.listdir(d):
                if fn.startswith("sink.db"):
                    os.unlink(os.path.join(d, fn))
            if st.out_topic:
                self.delete_topic(st.out_topic)
        if c.ok:
            self.say(self.line(m))
        else:
            self.warn("    %s %-14s run %d: %s%s" % (st.workload, st.contender, st.run,
                                                    "; ".join(c.problems),
                                                    " (%s)" % m.note if m.note else ""))
        return m

    # --- the report

    def line(self, m):
        rps = m.records / m.steady_s if m.steady_s else 0
        words = ["    %-4s %-14s run %d:" % (m.workload, m.contender, m.run),
                 "%9.0f rec/s %6.1f MB/s" % (rps, rps * m.size / 1e6),
                 "start-up %5.2f s" % (m.startup_s or 0)]
        if m.cpu_s is not None:
            words.append("cpu %6.2f s rss %6.1f MiB written %5.2f B/B" % (
                m.cpu_s, m.max_rss_kib / 1024.0,
                (m.write_bytes or 0) / float(m.records * m.size)))
        if m.latency:
            words.append("latency p50 %s p99 %s ms" % (m.latency.get("p50"),
                                                       m.latency.get("p99")))
        return " ".join(words)

    def verified(self, wl, contender):
        return [m for m in self.measurements if m.workload == wl and m.contender == contender
                and self.verdicts[(wl, contender, m.run)].ok and m.steady_s]

    def row(self, wl, contender):
        """Medians of the verified runs of one contender on one workload, and
        its ratios to kcat and Spark in the same run (medians of per-run
        ratios); None when no run was verified."""
        ms = self.verified(wl, contender)
        if not ms:
            return None
        rps = [m.records / m.steady_s for m in ms]
        res = {
            "runs": len(ms),
            "rps": median(rps),
            "mbs": median([r * ms[0].size / 1e6 for r in rps]),
            "startup_s": median([m.startup_s for m in ms]),
            "cpu_per_m": median([m.cpu_s / (m.records / 1e6) for m in ms
                                 if m.cpu_s is not None]),
            "rss_mib": median([m.max_rss_kib / 1024.0 for m in ms
                               if m.max_rss_kib is not None]),
            "written": median([m.write_bytes / float(m.records * m.size) for m in ms
                               if m.write_bytes is not None]),
            "p50": median([(m.latency or {}).get("p50") for m in ms]),
            "p99": median([(m.latency or {}).get("p99") for m in ms]),
        }
        for base in ("kcat", "spark"):
            ratios = []
            for m in ms:
                b = next((x for x in self.verified(wl, base) if x.run == m.run), None)
                if b is not None:
                    ratios.append(b.steady_s / m.steady_s)
            res["vs_" + base] = median(ratios)
        return res

    def table(self):
        out = []
        for wd in self.plan.workloads:
            w = Workload(**wd)
            desc = ("%d records of %d B at %d records/s" % (w.records, w.size, w.rate) if w.rate
                    else "%d records of %d B, pre-filled" % (w.records, w.size))
            out.append("### %s: %s, %d partitions\n" % (w.name, desc, self.plan.partitions))
            out.append("| contender | runs | records/s | MB/s | start-up s | CPU s / M records "
                       "| peak RSS MiB | written B/B | latency p50 / p99 ms | vs kcat | vs Spark |")
            out.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
            for c in self.plan.contenders:
                r = self.row(w.name, c)
                if r is None:
                    out.append("| %s | 0 | - | - | - | - | - | - | - | - | - |" % c)
                    continue

                def f(x, fmt):
                    return "-" if x is None else fmt % x
                lat = "-" if r["p50"] is None else "%s / %s" % (f(r["p50"], "%.0f"),
                                                               f(r["p99"], "%.0f"))
                out.append("| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                    c, r["runs"], f(r["rps"], "%.0f"), f(r["mbs"], "%.1f"),
                    f(r["startup_s"], "%.2f"), f(r["cpu_per_m"], "%.2f"),
                    f(r["rss_mib"], "%.0f"), f(r["written"], "%.2f"), lat,
                    f(r["vs_kcat"] if c != "kcat" else None, "%.2f"),
                    f(r["vs_spark"] if c != "spark" else None, "%.2f")))
            out.append("")
        return "\n".join(out)

    def targets(self):
        """The issue's targets, each with its figure and met / not met / not
        measured (a contender or workload left out)."""
        res = []

        def add(what, value, ok, detail):
            res.append((what, "not measured" if value is None else ("met" if ok else "NOT met"),
                        detail if value is not None else ""))
        for wl in [w["name"] for w in self.plan.workloads if not w["rate"]]:
            for c, need in (("receive-3", 0.8), ("direct", 0.9)):
                r = self.row(wl, c) or {}
                v = r.get("vs_kcat")
                add("%s %s >= %.1fx kcat records/s" % (wl, c, need), v,
                    v is not None and v >= need, "%.2fx" % v if v is not None else "")
            sp = self.row(wl, "spark") or {}
            for c in ("receive-3", "direct"):
                r = self.row(wl, c) or {}
                v = r.get("vs_spark")
                add("%s %s >= 3x Spark records/s" % (wl, c), v, v is not None and v >= 3,
                    "%.2fx" % v if v is not None else "")
                cpu = (r.get("cpu_per_m") / sp["cpu_per_m"]
                       if r.get("cpu_per_m") is not None and sp.get("cpu_per_m") else None)
                add("%s %s CPU per record <= 1/3 of Spark's" % (wl, c), cpu,
                    cpu is not None and cpu <= 1 / 3.0, "%.2fx" % cpu if cpu is not None else "")
                rss = (r.get("rss_mib") / sp["rss_mib"]
                       if r.get("rss_mib") is not None and sp.get("rss_mib") else None)
                add("%s %s peak RSS <= 1/5 of Spark's" % (wl, c), rss,
                    rss is not None and rss <= 0.2, "%.2fx" % rss if rss is not None else "")
        if "100b" in [w["name"] for w in self.plan.workloads]:
            for c in ("receive", "direct"):
                r = self.row("100b", c) or {}
                v = r.get("rss_mib")
                add("100b %s peak RSS <= 200 MB (default settings)" % c, v,
                    v is not None and v * 1.048576 <= 200, "%.0f MB" % (v * 1.048576)
                    if v is not None else "")
        for c in [x for x in self.plan.contenders if x in KWAL_ARGS]:
            r = self.row("rate", c) or {}
            v = r.get("p99")
            add("rate %s latency p99 <= 2 x batch.interval.ms (%d ms)"
                % (c, 2 * self.plan.batch_ms), v, v is not None and v <= 2 * self.plan.batch_ms,
                "%.0f ms" % v if v is not None else "")
        return res

    def csv_rows(self):
        rows = []
        for m in self.measurements:
            c = self.verdicts.get((m.workload, m.contender, m.run))

            def v(x, fmt="%s"):
                return "" if x is None else fmt % x
            rps = m.records / m.steady_s if m.steady_s else None
            lat = m.latency or {}
            rows.append(",".join([
                m.workload, m.contender, str(m.run), "1" if c and c.ok else "0", v(m.exit),
                str(m.records), str(m.size), v(m.wall_s, "%.3f"), v(m.startup_s, "%.3f"),
                v(m.steady_s, "%.3f"), v(rps, "%.0f"),
                v(rps * m.size / 1e6 if rps else None, "%.2f"),
                v(m.cpu_user_s, "%.3f"), v(m.cpu_sys_s, "%.3f"),
                v(m.cpu_s / (m.records / 1e6) if m.cpu_s is not None else None, "%.3f"),
                v(m.max_rss_kib), v(m.write_bytes),
                v(m.write_bytes / float(m.records * m.size) if m.write_bytes is not None
                  else None, "%.3f"),
                v(lat.get("p50")), v(lat.get("p99")), v(lat.get("max")),
                '"%s"' % "; ".join(c.problems).replace('"', "'") if c else ""]))
        return rows

    def chart(self):
        """bench.png: steady records/s and CPU s per million records, per
        workload and contender (gnuplot; skipped with a warning if it fails)."""
        dat = self.path("bench.dat")
        wls = [w["name"] for w in self.plan.workloads]
        with open(dat, "w") as f:
            f.write("# contender " + " ".join("%s_rps %s_cpu" % (w, w) for w in wls) + "\n")
            for c in self.plan.contenders:
                vals = []
                for w in wls:
                    r = self.row(w, c) or {}
                    vals += [r.get("rps") or 0, r.get("cpu_per_m") or 0]
                f.write("%s %s\n" % (c, " ".join("%.3f" % x for x in vals)))
        cols = lambda k: ", ".join('"%s" using %d:xtic(1) title "%s"' % (dat, 2 + 2 * i + k, w)
                                   for i, w in enumerate(wls))
        gp = self.path("bench.gp")
        with open(gp, "w") as f:
            f.write(CHART % {"png": self.path("bench.png"), "partitions": self.plan.partitions,
                             "rps": cols(0), "cpu": cols(1)})
        rc, _, err = proc.run(["gnuplot", gp], 120)
        if rc != 0:
            self.warn("%s: gnuplot failed (exit %s): %s" % (PROG, proc.exit_word(rc),
                                                            err.strip()[-300:]))

    def write_outputs(self, started):
        with open(self.path("checks.json"), "w") as f:
            json.dump([asdict(c) for c in self.checks], f, indent=1)
        with open(self.path("bench.csv"), "w") as f:
            f.write(CSV_HEADER + "\n" + "".join(r + "\n" for r in self.csv_rows()))
        md = ["# kwal bench", "",
              "`%s`" % self.rerun(), "",
              "%s; Kafka %s; %s; %s CPUs; %s; batch.interval.ms = Spark's batch = %d ms; "
              "kwal sink %s (direct: %s)." % (
                  self.bins.version(), self.bs, started, os.cpu_count() or "?",
                  time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), self.plan.batch_ms,
                  self.plan.sink, self.plan.sink if self.plan.sink in ("postgresql", "kafka")
                  else "sqlite"), "",
              "Records/s: steady state, from the moment the contender can read to the last "
              "record stored (medians of verified runs); start-up apart. \"vs kcat\" / \"vs "
              "Spark\": the contender's records/s over theirs, in the same run.", "",
              self.table(), "### Targets", "",
              "| target | status | figure |", "| --- | --- | --- |"]
        md += ["| %s | %s | %s |" % t for t in self.targets()]
        md += ["", "![chart](bench.png)", ""]
        with open(self.path("bench.md"), "w") as f:
            f.write("\n".join(md))
        self.chart()

    # --- main

    def main(self):
        a = self.a
        self.out = os.path.abspath(a.out or "kwal-bench-%s" % time.strftime("%Y%m%d-%H%M%S"))
        os.makedirs(self.path("runs"), exist_ok=True)
        tag = "%d-%s" % (os.getpid(), time.strftime("%H%M%S"))
        self.plan = make_plan(a, tag)
        with open(self.path("plan.json"), "w") as f:
            json.dump(asdict(self.plan), f, indent=1)
        try:
            load = " ".join(open("/proc/loadavg").read().split()[:3])
        except OSError:
            load = "?"
        started = "load %s at start" % load
        self.say("==> kwal bench: %s; workloads %s; %d run(s) each (rate: %d), interleaved"
                 % (",".join(a.contenders), ",".join(a.workloads), a.repeat, a.rate_repeat))
        self.say("    %s (%s), %s CPUs, %s" % (self.bins.version(), self.bins.dir,
                                              os.cpu_count() or "?", started))
        self.say("    report directory %s" % self.out)
        self.say("    re-run: %s" % self.rerun())
        if "spark" in a.contenders:
            self.prepare_spark()
        self.start_cluster()
        for wd in self.plan.workloads:
            w = Workload(**wd)
            if not w.rate:
                self.fill(w)
            for st in [s for s in self.plan.steps if s.workload == w.name]:
                self.run_step(st)
        self.write_outputs(started)
        return self.summary()

    def summary(self):
        pl = self.plan
        ok = sum(1 for c in self.verdicts.values() if c.ok)
        words = ["workloads=%s" % ",".join(w["name"] for w in pl.workloads),
                 "contenders=%s" % ",".join(pl.contenders), "repeat=%d" % pl.repeat,
                 "runs=%d" % len(self.verdicts), "verified=%d" % ok]
        for wd in pl.workloads:
            for c in pl.contenders:
                r = self.row(wd["name"], c)
                if r is not None:
                    words.append("%s_%s_rps=%.0f" % (wd["name"], c, r["rps"]))
        status = "failed" if self.failed else "ok"
        words.append("status=%s" % status)
        self.say("report: %s, %s, %s" % (self.path("bench.md"), self.path("bench.csv"),
                                         self.path("bench.png")))
        self.say("%s: %s" % (SUMMARY, " ".join(words)))
        return 1 if self.failed else 0

    def cleanup(self):
        kill_live()
        proc.kill_all()
        if self.kafka is not None:
            try:
                self.kafka.stop()
            except Exception:               # noqa: BLE001 -- best effort at exit
                pass
        if not self.a.conf and self.zk is not None and self.zk.dir \
                and os.path.isdir(self.zk.dir):
            self.zk.stop()
        if self.pg is not None:
            try:
                self.pg.stop() if self.a.keep else self.pg.destroy()
            except Exception:               # noqa: BLE001 -- best effort at exit
                pass
        proc.kill_all()
        if self.out and not self.a.keep:
            for sub in ("zk", "kafka", "kafka-tools"):
                shutil.rmtree(self.path(sub), ignore_errors=True)


CHART = """\
set terminal pngcairo size 1200,700 font ",10" noenhanced
set output "%(png)s"
set multiplot layout 1,2 title "kwal bench (%(partitions)d partitions): medians of verified runs"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.7
set xtics rotate by -30
set yrange [0:*]
set grid ytics
set key top right
set title "steady-state records/s"
plot %(rps)s
set title "CPU seconds per million records"
plot %(cpu)s
unset multiplot
"""


def _on_term(sig, frame):
    raise SystemExit(143)


def usage_error(msg):
    sys.stderr.write("kwal: bench: %s\nTry 'kwal bench --help'.\n" % msg)
    return 2


def main(argv=None, prog_dir=None):
    """prog_dir: the directory the runner was started from (kwal-bench next
    to kwal: those binaries are used unless --build says otherwise)."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        a = parse_args(argv)
    except UsageError as e:
        return usage_error(e)
    bins = proc.Bins(proc.bin_dir(a.build, near=prog_dir))
    try:
        bins.check("kwal", "loadgen", *([] if a.conf else ["zk_local"]))
        proc.need_commands("kcat", *(["java"] if "spark" in a.contenders else []),
                           "gnuplot")
        if not a.conf and "real" not in services.kafka_kinds_available():
            raise proc.HarnessError("Apache Kafka's jars are missing (tools/install-deps.sh "
                                    "fetches them)")
    except proc.HarnessError as e:
        sys.stderr.write("kwal: bench: %s\n" % e)
        return 1
    b = Bench(a, bins)
    old = signal.signal(signal.SIGTERM, _on_term)
    try:
        return b.main()
    except UsageError as e:
        return usage_error(e)
    except proc.HarnessError as e:
        sys.stderr.write("kwal: bench: %s\n" % e)
        b.failed = True
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("kwal: bench: interrupted\n")
        return 130
    except SystemExit:
        sys.stderr.write("kwal: bench: terminated\n")
        return 143
    finally:
        b.cleanup()
        signal.signal(signal.SIGTERM, old)
