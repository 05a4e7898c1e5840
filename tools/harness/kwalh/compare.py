"""compare (`kwal compare`) -- the semantics comparison of DESIGN.md
("Semantics to compare"): the same workload and the same fault schedule
through each mode, and a report.

Modes (each on a fresh topic, consumer group and output):
  no-wal       kwal receive --no-wal     offsets stored as soon as received, no WAL
  classic      kwal receive --classic    WAL, recovery without ZooKeeper repair
  receive      kwal receive              WAL, recovery repairs ZooKeeper
  direct       kwal direct               ranges stored with the output (sqlite)
  direct-alo   kwal direct --at-least-once  offsets in ZooKeeper after the write
The receive modes and direct-alo write to a file: sink (one file per batch:
it does not deduplicate, so what is delivered twice is stored twice);
direct needs the sqlite sink (its ranges live in the same transaction).
--sink postgresql puts every mode on a PostgreSQL server the runner starts
(a database per mode): then every mode deduplicates by primary key, so
"dup. stored" stays 0 and "dup. delivered" shows what each mode sent twice;
the server's own disk writes are not in "disk B / B". --sink kafka puts
every mode on an output topic of its own on the cluster
(kwal-compare-<mode>-<time>-out, 3 partitions; created before the runs, on
a cluster of -c FILE with Kafka's TopicCommand), read back by kwal-verify
--kafka with a read_committed consumer; what a mode writes twice there
follows the sink's rules (sink/FORMAT.md, "kafka:TOPIC": receive modes skip
what their instance's writer group already holds, direct commits its
ranges in the transaction); the brokers' disk writes are not in "disk B /
B". It needs transactions: with --kafka mock it is refused (exit 2).

Per mode it reports: produced, stored (distinct records), missing,
duplicates delivered (the sink's own count, summed over the runs'
statistics: records it got again and did not store again), duplicates
stored (kwal-verify), throughput (stored records and MB per second of the
mode's wall time, workload start to the final stop: bounded by --rate),
end-to-end latency p50/p99 (producer timestamp in the payload to the batch
being durable in the output: the sqlite or postgresql batch's committed_ms,
a batch file's mtime; for --sink kafka, whose output has no commit time per
record, kwal's own statistics instead -- latency_ms_p50/p99 of --stats-json,
Kafka timestamp to the batch's transaction committed -- the largest of the
mode's runs, an upper bound of the mode's quantile since runs' quantiles do
not merge; a killed run's figures are its last statistics, at most a second
old; they count every delivery, replays and duplicates included), bytes written to disk per byte ingested (write_bytes of
/proc/PID/io, sampled every 0.2 s, over every run, divided by stored records
x size), and recovery time (the longest run's recovery_ms from its
statistics; "-" for modes without recovery). Output in --out DIR:
compare.md (a Markdown table), compare.csv, compare.png (gnuplot), and per
mode its logs, statistics and output.

Exit status: 0 when every mode ran (whatever it lost: that is the result),
1 when a mode could not run or the report could not be made, 2 for bad
arguments.
"""

import argparse
import glob
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time

from . import proc, services
from .kwal import CRASH_EXIT, MODES, Kwal, cluster_of, consuming, write_conf
from .workload import KafkaStore, Loadgen, nearest_rank, read_manifest, verify

ALL_MODES = ("no-wal", "classic", "receive", "direct", "direct-alo")

SCHEDULE_HELP = """\
The workload: kwal-loadgen produces --records records of --size bytes at
--rate records/s (in the background, while the mode runs) to a topic of
--partitions partitions. The schedule is a list of events, each ending one
run of the mode, after which it is started again at once:
  kill@S      SIGKILL S seconds (decimals allowed) after the run started
              (in the first run: after the workload started, which waits
              until the mode consumes)
  window@N    crash (KWAL_CRASH_AT) the Nth time the run passes its mode's
              "output durable, offset not yet stored" point: no-wal
              pipeline.committed (offsets stored, records only in memory),
              classic and receive pipeline.tracked (block in the WAL, its
              offsets not in ZooKeeper), direct and direct-alo direct.stored
              (batch in the sink, offsets not in ZooKeeper)
  crash@P:N   KWAL_CRASH_AT=P:N for every mode (a mode that never passes P
              runs on to the next event only when the workload is done)
After the last event the mode runs until its ZooKeeper offsets cover every
produced record (or --timeout), then gets SIGTERM.
"""

OUT_PARTITIONS = 3          # --sink kafka: each mode's output topic
MOCK_NO_KAFKA_SINK = ("--sink kafka needs a real Kafka cluster: the mock keeps no "
                      "transactional offsets (the sink's writer group)")

CSV_HEADER = ("mode,produced,stored,missing,dup_delivered,dup_stored,records_per_s,mb_per_s,"
              "latency_p50_ms,latency_p99_ms,disk_bytes_per_byte,recovery_ms")


UsageError = proc.UsageError
Parser = proc.ArgParser


def positive(name):
    def conv(s):
        if not s.isdigit() or int(s) <= 0:
            raise argparse.ArgumentTypeError("--%s must be a positive integer, got '%s'"
                                             % (name, s))
        return int(s)
    return conv


def kv_arg(s):
    if "=" not in s:
        raise argparse.ArgumentTypeError("-X needs key=value, got '%s'" % s)
    if any(c.isspace() for c in s):
        raise argparse.ArgumentTypeError("-X %s: no spaces, please" % s)
    return s


def parse_schedule(text):
    """[(kind, value)]: ("kill", seconds), ("window", n), ("crash", (point, n))."""
    evs = []
    for ev in [e for e in text.split(",") if e]:
        if ev.startswith("kill@"):
            s = ev[5:]
            if not re.fullmatch(r"[0-9]+(\.[0-9]+)?", s):
                raise UsageError("--schedule: '%s': kill@SECONDS" % ev)
            evs.append(("kill", float(s), ev))
        elif ev.startswith("window@"):
            n = ev[7:]
            if not n.isdigit() or int(n) <= 0:
                raise UsageError("--schedule: '%s': window@N, N >= 1" % ev)
            evs.append(("window", int(n), ev))
        elif ev.startswith("crash@") and ":" in ev:
            pt, n = ev[6:].rsplit(":", 1)
            if not n.isdigit() or int(n) <= 0:
                raise UsageError("--schedule: '%s': crash@POINT:N, N >= 1" % ev)
            evs.append(("crash", (pt, int(n)), ev))
        else:
            raise UsageError("--schedule: unknown event '%s' (kill@S, window@N, crash@POINT:N)"
                             % ev)
    return evs


def parse_args(argv):
    p = Parser(prog="kwal compare", formatter_class=argparse.RawDescriptionHelpFormatter,
               description="Runs the same workload and fault schedule through kwal's modes "
               "and writes a report (Markdown table, CSV, chart). Without -c it starts a local "
               "ZooKeeper and a local Kafka cluster itself.")
    p.add_argument("-c", dest="conf", metavar="FILE",
                   help="use the Kafka cluster and ZooKeeper of this kwal configuration "
                   "(kafka.bootstrap.servers, zookeeper.connect); topics "
                   "kwal-compare-<mode>-<time> are created by producing to them")
    p.add_argument("-n", "--records", type=positive("records"), default=30000,
                   help="records per mode (default 30000)")
    p.add_argument("-s", "--size", type=positive("size"), default=100,
                   help="payload bytes, 69.. (default 100)")
    p.add_argument("-p", "--partitions", type=positive("partitions"), default=4,
                   help="partitions per topic (local cluster only; default 4)")
    p.add_argument("-r", "--rate", type=positive("rate"), default=10000,
                   help="records per second produced (default 10000)")
    p.add_argument("--schedule", default="window@3,kill@1.5",
                   help="events, comma-separated (default window@3,kill@1.5): kill@S, "
                   "window@N, crash@POINT:N (see --help-schedule)")
    p.add_argument("--modes", default=",".join(ALL_MODES),
                   help="comma-separated subset of no-wal,classic,receive,direct,direct-alo "
                   "(default all, in that order)")
    p.add_argument("--sink", choices=("default", "postgresql", "kafka"), default="default",
                   help="default: file: for the receive modes and direct-alo, sqlite: for "
                   "direct; postgresql: every mode on a local PostgreSQL server, a database "
                   "per mode; kafka: every mode into an output topic of its own on the "
                   "cluster (3 partitions; not with --kafka mock; latency from kwal's "
                   "statistics)")
    p.add_argument("-o", "--out", help="report directory (default ./kwal-compare-<date-time>)")
    p.add_argument("--timeout", type=positive("timeout"), default=120,
                   help="bound for each mode to catch up after the workload (default 120)")
    p.add_argument("-X", dest="xargs", action="append", type=kv_arg, default=[],
                   metavar="KEY=VALUE", help="extra kwal setting for every run (repeatable)")
    p.add_argument("--kafka", choices=("auto", "real", "mock"), default="auto",
                   help="the local cluster (without -c): real (an Apache Kafka KRaft "
                   "cluster, kwalh.kafka), mock (kwal-kafka-mock), auto (default: real when "
                   "kwalh.kafka is there)")
    p.add_argument("--brokers", type=int, choices=(1, 3), default=3,
                   help="nodes of the local cluster (default 3; real: RF 3, "
                   "min.insync.replicas 2)")
    p.add_argument("--build", help="build directory whose tools/ has kwal (default: the "
                   "directory of this runner when kwal is there, else $KWAL_BIN_DIR, else "
                   "<repo>/build)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress display, only "
                   "the table")
    p.add_argument("--help-schedule", action="store_true", help="what the events mean")
    a = p.parse_args(argv)
    if a.help_schedule:
        return a
    if a.size < 69:
        raise UsageError("--size must be at least 69 (kwal-loadgen's record format)")
    a.mode_list = [m for m in a.modes.split(",") if m]
    for m in a.mode_list:
        if m not in ALL_MODES:
            raise UsageError("--modes: unknown mode '%s' (no-wal, classic, receive, direct, "
                             "direct-alo)" % m)
    a.events = parse_schedule(a.schedule)
    if a.sink == "kafka" and a.kafka == "mock" and not a.conf:
        raise UsageError(MOCK_NO_KAFKA_SINK)
    return a


def window_point(mode):
    if mode == "no-wal":
        return "pipeline.committed"
    if mode in ("classic", "receive"):
        return "pipeline.tracked"
    return "direct.stored"


# --- measurements -----------------------------------------------------------------

def percentiles(values):
    """(p50, p99) as the shell runner took them, or ("-", "-")."""
    if not values:
        return "-", "-"
    return nearest_rank(values, 0.50), nearest_rank(values, 0.99)


PG_LATENCY_SQL = ("SELECT b.committed_ms - (substr(convert_from(r.payload, 'UTF8'), 37, 16))"
                  "::bigint / 1000 FROM records r JOIN batches b ON b.id = r.batch")


def stats_latency(stats):
    """(p50, p99) for an output without a commit time per record (the Kafka
    sink): the largest latency_ms_p50 and latency_ms_p99 of the runs'
    statistics (each over that run's deliveries; the mode's quantile is at
    most the largest of its runs'), or ("-", "-") when no run measured any."""
    runs = [s for s in stats if (s.get("latency_records") or 0) > 0]
    if not runs:
        return "-", "-"
    return (max(s.get("latency_ms_p50", -1) for s in runs),
            max(s.get("latency_ms_p99", -1) for s in runs))


def latencies(d, mode, pgdb=None):
    """Producer timestamp (us in the payload) to the batch durable in the
    output, in ms, per record."""
    res = []
    if pgdb is not None:
        try:
            return [int(r[0]) for r in pgdb.sql(PG_LATENCY_SQL, timeout=300) if r and r[0]]
        except proc.HarnessError:
            return res
    if mode == "direct":
        db = os.path.join(d, "out.db")
        if not os.path.exists(db):
            return res
        try:
            c = sqlite3.connect("file:%s?mode=ro" % db, uri=True, timeout=10)
            try:
                rows = c.execute("SELECT b.committed_ms - CAST(substr(CAST(r.payload AS TEXT), "
                                 "37, 16) AS INTEGER) / 1000 FROM records r JOIN batches b "
                                 "ON b.id = r.batch").fetchall()
            finally:
                c.close()
            res = [r[0] for r in rows if r[0] is not None]
        except sqlite3.Error:
            pass
        return res
    for f in glob.glob(os.path.join(d, "out", "**", "batch-*.jsonl"), recursive=True):
        try:
            mt = os.stat(f).st_mtime
            with open(f, errors="replace") as fh:
                for line in fh:
                    i = line.find('"payload":"kwal1 ')
                    if i < 0:
                        continue
                    w = line[i + 17:].split(" ")
                    m = re.match(r"\d+", w[2]) if len(w) > 2 else None
                    if m:
                        res.append(int(mt * 1000 - int(m.group(0)) / 1000))
        except OSError:
            pass
    return res


class IoSampler(threading.Thread):
    """write_bytes of /proc/PID/io every 0.2 s while the process runs; the
    last value read."""

    def __init__(self, pid):
        super().__init__(daemon=True, name="io-%d" % pid)
        self.pid = pid
        self.value = 0
        self.stop = threading.Event()

    def run(self):
        path = "/proc/%d/io" % self.pid
        while not self.stop.is_set():
            try:
                with open(path) as f:
                    for line in f:
                        if line.startswith("write_bytes:"):
                            self.value = int(line.split()[1])
            except (OSError, ValueError):
                return
            self.stop.wait(0.2)


# --- the runner ---------------------------------------------------------------------

class Compare:
    def __init__(self, a, bins):
        self.a = a
        self.bins = bins
        self.stamp = time.strftime("%Y%m%d-%H%M%S")
        self.out = None
        self.zk = None
        self.kafka = None
        self.bs = None
        self.zk_connect = None
        self.failed = False
        self.kwal = None
        self.lg = None
        self.pg = None              # --sink postgresql: the server
        self.pgdbs = {}             # mode -> its Database
        self.stores = {}            # --sink kafka: mode -> its KafkaStore

    def progress(self, msg):
        if not self.a.quiet:
            sys.stderr.write(msg + "\n")
            sys.stderr.flush()

    def topic(self, m):
        return "kwal-compare-%s-%s" % (m, self.stamp)

    def out_topic(self, m):
        """--sink kafka: mode m's output topic."""
        return self.topic(m) + "-out"

    def create_out_topics(self):
        """--sink kafka: every mode's output topic, before the runs (kwal
        does not create it): on the cluster started here, or with Kafka's
        TopicCommand on the one of -c FILE."""
        tools = None
        if self.kafka is None:
            from .kafka import KafkaCluster     # for its tools (TopicCommand)
            tools = KafkaCluster(os.path.join(self.out, "kafka-tools"), nodes=1)
        for m in self.a.mode_list:
            services.create_topic(self.kafka, tools, self.bs, self.out_topic(m), OUT_PARTITIONS)
            self.stores[m] = KafkaStore(self.bs, self.out_topic(m), self.bins)
        self.progress("output topics: %s (%d partitions each)"
                      % (", ".join(self.out_topic(m) for m in self.a.mode_list), OUT_PARTITIONS))

    # --- the cluster

    def start_cluster(self):
        a = self.a
        if a.conf:
            try:
                self.bs, self.zk_connect = cluster_of(a.conf)
            except ValueError as e:
                raise UsageError(str(e))
            self.zk = services.ZooKeeper(self.bins, None)
            self.zk.connect = self.zk_connect
            self.progress("cluster: %s, ZooKeeper %s (from %s)" % (self.bs, self.zk_connect,
                                                                 a.conf))
            return
        kind = services.resolve_kafka_kind(a.kafka)
        self.progress("starting a local ZooKeeper and a local %s Kafka cluster (%d brokers)..."
                      % (kind, a.brokers))
        self.zk = services.ZooKeeper(self.bins, os.path.join(self.out, "zk"))
        self.zk_connect = self.zk.start()
        topics = ["%s:%d" % (self.topic(m), a.partitions) for m in a.mode_list]
        self.kafka = services.make_kafka(kind, self.bins, os.path.join(self.out, "kafka"),
                                         nodes=a.brokers, topics=topics)
        try:
            self.bs = self.kafka.start()
        except Exception as e:         # noqa: BLE001 -- the cluster's own errors
            raise proc.HarnessError("the %s Kafka cluster did not start: %s" % (kind, e))
        if kind == "real":
            for m in a.mode_list:
                ok, why = self.kafka.create_topic(self.topic(m), a.partitions)
                if not ok:
                    raise proc.HarnessError("cannot create %s: %s" % (self.topic(m), why))
        self.progress("cluster: %s, ZooKeeper %s" % (self.bs, self.zk_connect))

    # --- one mode

    def zk_sum(self, group, topic):
        return self.zk.offsets_sum(group, topic)

    def start_run(self, m, d, r, crash=None):
        env = {"KWAL_CRASH_AT": crash} if crash else {}
        xargs = []
        for x in self.a.xargs:
            xargs += ["-X", x]
        k = Kwal(self.bins, MODES[m], os.path.join(d, "k.conf"), os.path.join(d, "run%d" % r),
                 xargs, env).start()
        k.sampler = IoSampler(k.pid)
        k.sampler.start()
        self.kwal = k
        return k

    def end_run(self, k, runs):
        rc = k.wait()
        k.sampler.stop.set()
        k.sampler.join()
        runs.append(k)
        self.kwal = None
        return rc

    def produce_when_ready(self, k, ctx):
        """At the first run of a mode, once it consumes (at most 30 s), start
        the workload in the background, so that the schedule's events fall
        while records arrive."""
        if self.lg is not None:
            return
        k.wait_stats(consuming, 30)
        a = self.a
        self.progress("[%d/%d] %s: producing %d records at %d/s to %s"
                      % (ctx["k"], ctx["n"], ctx["m"], a.records, a.rate, ctx["topic"]))
        self.lg = Loadgen(self.bins, self.bs, ctx["topic"], a.records,
                          os.path.join(ctx["d"], "m"), os.path.join(ctx["d"], "lg"),
                          size=a.size, rate=a.rate).start()
        ctx["t0"] = proc.now_ms()

    def run_mode(self, k, m):
        a = self.a
        n = len(a.mode_list)
        d = os.path.join(self.out, m)
        os.makedirs(d, exist_ok=True)
        topic = group = self.topic(m)
        if self.pg is not None:
            from .postgres import Database
            self.pgdbs[m] = Database(self.pg, "compare_%s" % m.replace("-", "_"))
            sink = "postgresql:" + self.pgdbs[m].conninfo
        elif m in self.stores:
            sink = self.stores[m].spec
        else:
            sink = "sqlite:%s" % os.path.join(d, "out.db") if m == "direct" else \
                "file:%s" % os.path.join(d, "out")
        write_conf(os.path.join(d, "k.conf"), {
            "group.id": group,
            "topics": topic,
            "zookeeper.connect": self.zk_connect,
            "kafka.bootstrap.servers": self.bs,
            "auto.offset.reset": "earliest",
            "wal.dirs": ",".join(os.path.join(d, "w%d" % i) for i in range(3)),
            "sink": sink,
            "batch.interval.ms": 1000,
            "zookeeper.session.timeout.ms": 6000,
            "kafka.session.timeout.ms": 6000,
            "kafka.heartbeat.interval.ms": 500,
        }, "kwal compare: mode %s" % m)
        ctx = {"k": k, "n": n, "m": m, "d": d, "topic": topic, "t0": proc.now_ms()}
        self.lg = None
        runs = []
        r = 0
        for kind, val, text in a.events:
            r += 1
            if kind == "kill":
                kw = self.start_run(m, d, r)
                self.produce_when_ready(kw, ctx)
                ts = proc.now_ms()
                while kw.alive() and proc.now_ms() - ts < val * 1000:
                    time.sleep(0.05)
                kw.kill()
                how = "SIGKILL after %s s" % text[5:]
            else:
                spec = "%s:%d" % (window_point(m), val) if kind == "window" else \
                    "%s:%d" % val
                kw = self.start_run(m, d, r, spec)
                self.produce_when_ready(kw, ctx)
                # a point never reached: on once the workload is in ZooKeeper
                while kw.alive():
                    if self.lg.done() and self.zk_sum(group, topic) >= a.records:
                        kw.kill()
                        break
                    time.sleep(0.2)
                how = "crash at %s" % spec
            rc = self.end_run(kw, runs)
            if rc == CRASH_EXIT:
                how += " (reached)"
            elif rc != -signal.SIGKILL:
                how += " (exit %s before it: see %s)" % (proc.exit_word(rc), kw.log)
            self.progress("[%d/%d] %s: run %d ended: %s" % (k, n, m, r, how))
        # the final run: until ZooKeeper covers the workload, then SIGTERM
        r += 1
        kw = self.start_run(m, d, r)
        self.produce_when_ready(kw, ctx)
        polls, caught = 0, False
        while kw.alive():
            if self.lg.done():
                if self.zk_sum(group, topic) >= a.records:
                    caught = True
                    break
                polls += 1
                if polls >= a.timeout * 5:
                    break
            time.sleep(0.2)
        time.sleep(1.5)               # a last batch interval
        kw.term()
        if kw.wait(120) is None:
            kw.kill()
        rc = self.end_run(kw, runs)
        t1 = proc.now_ms()
        if self.lg.p is not None:
            proc.reap(self.lg.p)
        if rc != 0 or not caught:
            self.progress("[%d/%d] %s: FAILED: final run exit %s, caught up: %d (see %s)"
                          % (k, n, m, proc.exit_word(rc), int(caught), kw.log))
            self.failed = True
        return self.measure(m, d, runs, ctx["t0"], t1)

    def measure(self, m, d, runs, t0, t1):
        a = self.a
        man = read_manifest(os.path.join(d, "m"))
        produced = int(man["delivered"]) if man.get("delivered", "").isdigit() else 0
        if m in self.pgdbs:
            v = verify(self.bins, manifest=os.path.join(d, "m"),
                       postgresql=self.pgdbs[m].conninfo)
        elif m in self.stores:
            v = verify(self.bins, manifest=os.path.join(d, "m"), **self.stores[m].verify_args())
        elif m == "direct":
            v = verify(self.bins, manifest=os.path.join(d, "m"), sqlite=os.path.join(d, "out.db"))
        else:
            v = verify(self.bins, manifest=os.path.join(d, "m"), files=os.path.join(d, "out"))
        with open(os.path.join(d, "verify.out"), "w") as f:
            f.write((v.lines[-1] if v.lines else "") + "\n")
        if v.ok:
            stored, missing, dups = v["stored"], v["missing"], v["duplicates"]
        else:
            stored, missing, dups = 0, produced, 0
            self.failed = True
        distinct = stored - dups
        stats = [k.stats() or {} for k in runs]
        with open(os.path.join(d, "stats.json"), "w") as f:
            json.dump(stats, f, indent=1)
        dup_del = sum(s.get("duplicate_deliveries", 0) for s in stats)
        recs = [s["recovery_ms"] for s in stats if s.get("recovery_ms", -1) >= 0]
        rec = str(max(recs)) if recs else "-"
        wall = max(1, t1 - t0)
        tput = distinct * 1000 // wall
        mbs = "%.2f" % (distinct * a.size / 1048576 / (wall / 1000))
        if m in self.stores:
            p50, p99 = stats_latency(stats)
        else:
            p50, p99 = percentiles(latencies(d, m, self.pgdbs.get(m)))
        io = sum(k.sampler.value for k in runs)
        dpb = "%.2f" % (io / (distinct * a.size)) if distinct > 0 else "-"
        self.progress("[%d/%d] %s: produced %d, stored %d, missing %d, duplicates delivered %d, "
                      "stored %d" % (a.mode_list.index(m) + 1, len(a.mode_list), m, produced,
                                     distinct, missing, dup_del, dups))
        return [m, produced, distinct, missing, dup_del, dups, tput, mbs, p50, p99, dpb, rec]

    # --- the report

    def report(self, rows):
        a, out = self.a, self.out
        csv = os.path.join(out, "compare.csv")
        with open(csv, "w") as f:
            f.write(CSV_HEADER + "\n")
            for row in rows:
                f.write(",".join(str(x) for x in row) + "\n")
        md = os.path.join(out, "compare.md")
        with open(md, "w") as f:
            f.write("# kwal compare, %s\n\n" % self.stamp)
            f.write("Workload: %d records of %d B at %d/s, %d partitions per topic. Schedule: %s. "
                    "Cluster: %s, ZooKeeper %s. Sinks: %s.\n\n"
                    % (a.records, a.size, a.rate, a.partitions, a.schedule, self.bs,
                       self.zk_connect, self.sinks()))
            f.write("| mode | produced | stored | missing | dup. delivered | dup. stored | "
                    "records/s | MB/s | latency p50 ms | latency p99 ms | disk B / B | "
                    "recovery ms |\n")
            f.write("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
                    "| ---: |\n")
            for row in rows:
                f.write("| %s |%s\n" % (row[0], "".join(" %s |" % x for x in row[1:])))
            f.write("\nstored: distinct records in the output; dup. stored: extra copies there "
                    "(kwal-verify);\ndup. delivered: records the sink received again and did "
                    "not store again; records/s\nand MB/s over the mode's wall time (bounded by "
                    "the producer's rate); latency: producer\ntimestamp to the batch durable in "
                    "the output; disk B / B: bytes kwal wrote to storage\n(/proc/PID/io "
                    "write_bytes) per byte stored.\n")
            if self.stores:
                f.write("\nkafka sink: stored, missing and dup. stored read with a "
                        "read_committed consumer (kwal-verify --kafka); latency is kwal's own "
                        "(--stats-json latency_ms_p50/p99: Kafka timestamp to the batch's "
                        "transaction committed), the largest of the mode's runs -- an upper "
                        "bound of the mode's quantile, counting every delivery (replays and "
                        "duplicates too); the output keeps no commit time per record. The "
                        "brokers' disk writes are not in disk B / B.\n")
        dat = os.path.join(out, "chart.dat")
        with open(dat, "w") as f:
            for i, row in enumerate(rows, 1):
                p99 = 0 if row[9] == "-" else row[9]
                f.write("%d %s %s %s %s %s\n" % (i, row[0], row[3], row[5], row[6], p99))
        gp = os.path.join(out, "chart.gp")
        with open(gp, "w") as f:
            f.write(CHART % {"png": os.path.join(out, "compare.png"), "dat": dat,
                             "records": a.records, "rate": a.rate, "schedule": a.schedule})
        rc, _, err = proc.run(["gnuplot", gp], 120)
        with open(os.path.join(out, "gnuplot.err"), "w") as f:
            f.write(err)
        if rc != 0:
            sys.stderr.write(err)
            self.failed = True
        with open(md) as f:
            sys.stdout.write(f.read())
        print()
        print("report: %s, %s, %s" % (md, csv, os.path.join(out, "compare.png")), flush=True)

    def sinks(self):
        """The report's words for the sinks."""
        if self.pg is not None:
            return "postgresql (every mode)"
        if self.stores:
            return "kafka (every mode, an output topic of its own: %s)" % ", ".join(
                "%s %s" % (m, self.stores[m].spec) for m in self.a.mode_list)
        return "file: (receive modes, direct-alo), sqlite: (direct)"

    def main(self):
        a = self.a
        self.out = os.path.abspath(a.out or "./kwal-compare-%s" % self.stamp)
        try:
            os.makedirs(self.out, exist_ok=True)
        except OSError:
            raise proc.HarnessError("cannot create %s" % self.out)
        self.start_cluster()
        if a.sink == "postgresql":
            from .postgres import PostgreSQL
            self.pg = PostgreSQL(os.path.join(self.out, "pg"))
            self.progress("PostgreSQL %s (every mode's sink)" % self.pg.start())
        elif a.sink == "kafka":
            self.create_out_topics()
        rows = []
        for k, m in enumerate(a.mode_list, 1):
            rows.append(self.run_mode(k, m))
        self.report(rows)
        if self.failed:
            sys.stderr.write("kwal: compare: some modes did not run to the end (see above)\n")
            return 1
        return 0

    def cleanup(self):
        proc.kill_all()
        if self.kafka is not None:
            try:
                self.kafka.stop()
            except Exception:          # noqa: BLE001 -- best effort at exit
                pass
        if not self.a.conf and self.zk is not None and self.zk.dir \
                and os.path.isdir(self.zk.dir):
            self.zk.stop()
        if self.pg is not None:
            try:
                self.pg.destroy()       # what the report needs is in it
            except proc.HarnessError as e:
                sys.stderr.write("kwal: compare: PostgreSQL: %s\n" % e)


CHART = """\
set terminal pngcairo size 1200,800 font ",10" noenhanced
set output "%(png)s"
set multiplot layout 2,2 title "kwal compare: %(records)d records at %(rate)d/s, schedule %(schedule)s"
set style fill solid 0.6
set boxwidth 0.6
set xtics rotate by -20
set yrange [0:*]
set grid ytics
unset key
set title "missing records (lost)"
plot "%(dat)s" using 1:3:xtic(2) with boxes lc rgb "#c0392b"
set title "duplicates stored"
plot "%(dat)s" using 1:4:xtic(2) with boxes lc rgb "#e67e22"
set title "throughput (records/s)"
plot "%(dat)s" using 1:5:xtic(2) with boxes lc rgb "#2980b9"
set title "end-to-end latency p99 (ms)"
plot "%(dat)s" using 1:6:xtic(2) with boxes lc rgb "#27ae60"
unset multiplot
"""


def _on_term(sig, frame):
    raise SystemExit(143)


def usage_error(msg):
    sys.stderr.write("kwal: compare: %s\nTry 'kwal compare --help'.\n" % msg)
    return 2


def main(argv=None, prog_dir=None):
    """prog_dir: the directory the runner was started from (kwal-compare
    next to kwal: those binaries are used unless --build says otherwise)."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        a = parse_args(argv)
    except UsageError as e:
        return usage_error(e)
    if a.help_schedule:
        sys.stdout.write(SCHEDULE_HELP)
        return 0
    if a.build:
        bins = proc.Bins(proc.bin_dir(a.build))
    elif prog_dir and proc.is_program(os.path.join(prog_dir, "kwal")):
        bins = proc.Bins(prog_dir)
    else:
        bins = proc.Bins(proc.bin_dir())
    try:
        bins.check()
        proc.need_commands("gnuplot")
    except proc.HarnessError as e:
        sys.stderr.write("kwal: compare: %s\n" % e)
        return 1
    points = None
    for kind, val, text in a.events:
        if kind == "crash":
            points = points if points is not None else bins.crash_points("all")
            if val[0] not in points:
                return usage_error("--schedule: '%s': no crash point '%s' (kwal "
                                   "--list-crash-points)" % (text, val[0]))
    if not a.conf and a.kafka == "real" and "real" not in services.kafka_kinds_available():
        sys.stderr.write("kwal: compare: --kafka real: kwalh.kafka is not there\n")
        return 1
    if (a.sink == "kafka" and not a.conf and a.kafka == "auto"
            and services.resolve_kafka_kind("auto") == "mock"):
        return usage_error(MOCK_NO_KAFKA_SINK + " (--kafka auto found no real one: "
                           "kwalh.kafka is not there)")
    c = Compare(a, bins)
    old = signal.signal(signal.SIGTERM, _on_term)
    try:
        return c.main()
    except UsageError as e:
        return usage_error(e)
    except (proc.HarnessError, subprocess.SubprocessError) as e:
        sys.stderr.write("kwal: compare: %s\n" % e)
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("kwal: compare: interrupted\n")
        return 130
    except SystemExit:
        sys.stderr.write("kwal: compare: terminated\n")
        return 143
    finally:
        c.cleanup()
        signal.signal(signal.SIGTERM, old)
