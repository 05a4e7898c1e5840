"""0080 -- the metrics endpoint (metrics.listen; common/kw_stats.h has the
format, tools/kwal/kwal_metrics.c the server) of `kwal receive` and `kwal
direct`, on a real ZooKeeper server and the shared 3-node Apache Kafka
cluster.

a  kwal receive with metrics.listen=127.0.0.1:0: the port it picked is in
   --stats-json (metrics_port). While it runs, every scrape of GET /metrics
   (urllib) parses as Prometheus text with prometheus_client's parser, which
   raises on malformed text, and is served as text/plain; version=0.0.4.
   After 6,000 records over 4 partitions: kwal_records_stored_total is
   6,000 (as --stats-json says), every partition is owned with its
   position at Kafka's end offset and lag 0; the WAL's fsyncs are counted
   and their durations summarised (ordered quantiles); batch durations
   too. Another path is 404, another method 405. SIGTERM exits 0.
b  the same for kwal direct (no WAL: no fsync is summarised).
c  bad values: no port, a port out of range, a host that does not resolve,
   an IPv6 address without brackets -- exit 2 with one line naming
   metrics.listen, before anything else is opened; a port another socket
   listens on -- exit 1, also given as a port alone (PORT, :PORT: loopback).

Numbers come from the endpoint, --stats-json and Kafka, never from kwal's
log.
"""
import socket
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kwalh import proc
from kwtest import produce, settings, stored, wait_until

RECORDS = 6000
PARTITIONS = 4

# families every scrape has (kw_stats.h), with their types
FAMILIES = {
    "kwal_info": "gauge",
    "kwal_uptime_seconds": "gauge",
    "kwal_records_received": "counter",
    "kwal_records_stored": "counter",
    "kwal_duplicate_deliveries": "counter",
    "kwal_source_loss_records": "counter",
    "kwal_wal_written_bytes": "counter",
    "kwal_wal_fsyncs": "counter",
    "kwal_wal_replicas_healthy": "gauge",
    "kwal_recovery_seconds": "gauge",
    "kwal_partitions_owned": "gauge",
    "kwal_owner_changes": "counter",
    "kwal_latency_seconds": "summary",
    "kwal_batch_duration_seconds": "summary",
    "kwal_wal_fsync_duration_seconds": "summary",
    "kwal_partition_owned": "gauge",
    "kwal_partition_position": "gauge",
    "kwal_partition_high_watermark": "gauge",
    "kwal_partition_lag": "gauge",
}


class Scrape:
    """One parsed GET /metrics: samples by (sample name, labels)."""

    def __init__(self, text):
        self.text = text
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples = {}
        for f in self.families.values():
            for s in f.samples:
                key = (s.name, tuple(sorted(s.labels.items())))
                assert key not in self.samples, f"sample twice: {key}"
                self.samples[key] = s.value

    def get(self, name, default=None, **labels):
        return self.samples.get((name, tuple(sorted(labels.items()))), default)

    def partitions(self, name, topic):
        """{partition: value} of a per-partition family for topic."""
        return {int(s.labels["partition"]): s.value for s in self.families[name].samples
                if s.labels["topic"] == topic}

    def quantiles(self, name):
        """[p50, p90, p99, max] of a summary (None where absent) and its count."""
        qs = [self.get(name, quantile=q) for q in ("0.5", "0.9", "0.99", "1")]
        return qs, self.get(name + "_count")


def url(port, path="/metrics"):
    return f"http://127.0.0.1:{port}{path}"


def scrape(port):
    with urllib.request.urlopen(url(port), timeout=10) as r:
        assert r.status == 200
        assert r.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        text = r.read().decode("utf-8")
    return Scrape(text)


def http_status(port, path, method="GET"):
    req = urllib.request.Request(url(port, path), method=method, data=b"" if method == "POST"
                                 else None)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers
    except urllib.error.HTTPError as e:
        return e.code, e.headers


def metrics_port(k):
    s = k.wait_stats(lambda s: s.get("metrics_port", 0) > 0, 60)
    assert s is not None and s.get("metrics_port", 0) > 0, \
        f"no metrics_port in --stats-json ({k.log_tail(3)})"
    return s["metrics_port"]


def check_common(m, mode):
    """What every scrape of a running service has."""
    for name, typ in FAMILIES.items():
        assert name in m.families, f"family {name} missing"
        assert m.families[name].type == typ, (name, m.families[name].type)
    assert m.get("kwal_info", mode=mode) == 1
    assert m.get("kwal_uptime_seconds") >= 0
    assert m.get("kwal_source_loss_records_total") == 0
    assert m.get("kwal_duplicate_deliveries_total") == 0


def check_summary(m, name, unit_max):
    """A summary with values: ordered quantiles, none negative nor above
    unit_max (seconds)."""
    qs, count = m.quantiles(name)
    assert count and count > 0, (name, count)
    assert None not in qs, (name, qs)
    assert 0 <= qs[0] <= qs[1] <= qs[2] <= qs[3] <= unit_max, (name, qs)


def check_at_end(m, topic, ends):
    """Every partition owned, at Kafka's end offset, lag 0."""
    assert m.partitions("kwal_partition_owned", topic) == {p: 1 for p in ends}
    assert m.partitions("kwal_partition_position", topic) == ends
    assert m.partitions("kwal_partition_high_watermark", topic) == ends
    assert m.partitions("kwal_partition_lag", topic) == {p: 0 for p in ends}


def at_end(port, topic, ends):
    """The scrape once it shows every record stored and every partition at
    its end offset with lag 0; else None."""
    m = scrape(port)
    return m if (m.partitions("kwal_partition_position", topic) == ends
                 and m.partitions("kwal_partition_lag", topic) == {p: 0 for p in ends}
                 and m.get("kwal_records_stored_total") == sum(ends.values())) else None


def check_http(port):
    st, _ = http_status(port, "/")
    assert st == 404, st
    st, _ = http_status(port, "/metrics/x")
    assert st == 404, st
    st, headers = http_status(port, "/metrics", "POST")
    assert st == 405, st
    assert "GET" in headers.get("Allow", ""), dict(headers)


def run_mode(args, mode, bins, zk, kafka, tmp_path, names, kwal_factory, **extra):
    """Records first, then kwal ARGS with the endpoint on a free port: the
    checks of a. and b. The last scrape."""
    topic, group = names.topic(), names.group()
    kafka.create_topic(topic, PARTITIONS, rf=3)
    produce(bins, kafka.bootstrap, topic, RECORDS, tmp_path)
    ends = kafka.end_offsets(topic)
    assert sum(ends.values()) == RECORDS
    s = settings(zk, kafka.bootstrap, group, topic, tmp_path, **{"metrics.listen": "127.0.0.1:0",
                                                                 **extra})
    k = kwal_factory(args, s).start()
    port = metrics_port(k)
    # mid-stream, once a batch is stored (direct mode's partition view is a
    # snapshot taken after each batch)
    k.wait_stats(lambda s: s["records_stored"] > 0, 120)
    check_common(scrape(port), mode)
    wait_until(lambda: stored(f"{tmp_path}/out.db", topic) >= RECORDS, 240,
               f"{RECORDS} stored", k.alive)
    # the counters move when a delivery round ends, the positions with
    # each commit, the high watermarks with fetches: wait for all of them
    m = wait_until(lambda: at_end(port, topic, ends), 60, "the endpoint at the end offsets",
                   k.alive)
    check_common(m, mode)
    check_at_end(m, topic, ends)
    assert m.get("kwal_records_stored_total") == RECORDS
    assert m.get("kwal_partitions_owned") == PARTITIONS
    assert m.get("kwal_owner_changes_total") >= PARTITIONS
    check_summary(m, "kwal_batch_duration_seconds", 240)
    check_summary(m, "kwal_latency_seconds", 600)
    # one struct behind both: --stats-json says the same once it is rewritten
    js = k.wait_stats(lambda s: s["records_stored"] == RECORDS, 10)
    assert js["records_stored"] == RECORDS and js["metrics_port"] == port, js
    check_http(port)
    rc = k.stop(grace=120)
    assert rc == 0, f"kwal {args} exited {rc} ({k.log_tail(3)})"
    return m


# --- a. receive ------------------------------------------------------------------------

def test_receive(bins, zk_fast, kafka3, tmp_path, names, kwal_factory):
    m = run_mode(["receive"], "receive", bins, zk_fast, kafka3, tmp_path, names, kwal_factory)
    assert m.get("kwal_wal_fsyncs_total") > 0
    assert m.get("kwal_wal_written_bytes_total") > 0
    assert m.get("kwal_wal_replicas_healthy") == 1
    check_summary(m, "kwal_wal_fsync_duration_seconds", 60)
    assert m.get("kwal_recovery_seconds") is not None      # recovery ran first


# --- b. direct -------------------------------------------------------------------------

def test_direct(bins, zk_fast, kafka3, tmp_path, names, kwal_factory):
    m = run_mode(["direct"], "direct", bins, zk_fast, kafka3, tmp_path, names, kwal_factory,
                 **{"batch.interval.ms": 300})
    assert m.get("kwal_wal_fsync_duration_seconds_count") == 0      # no WAL
    assert m.get("kwal_wal_replicas_healthy") is None
    assert m.get("kwal_instances") in (None, 1)


# --- c. bad values ---------------------------------------------------------------------

BAD = [
    ("127.0.0.1", "no port"),
    ("127.0.0.1:65536", "port '65536' is not a number from 0 to 65535"),
    ("127.0.0.1:http", "port 'http' is not a number"),
    ("no-such-host.invalid:9100", "host 'no-such-host.invalid' does not resolve"),
    ("::1:9100", "an IPv6 address goes in brackets"),
    ("[]:9100", "no host"),
]


def one_error_line(err):
    lines = [ln for ln in err.splitlines() if ln.startswith("kwal: ")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("mode", ["receive", "direct"])
def test_bad_values(bins, zk_fast, kafka3, tmp_path, names, kwal_factory, mode):
    s = settings(zk_fast, kafka3.bootstrap, names.group(), names.topic(), tmp_path)
    k = kwal_factory([mode], s)
    for value, want in BAD:
        rc, out, err = proc.run([bins.kwal, mode, "-c", k.conf, "-X", f"metrics.listen={value}"],
                                60)
        assert rc == 2, (value, rc, err)
        line = one_error_line(err)
        assert "metrics.listen" in line and want in line, (value, line)
    # nothing was opened before the refusal: no WAL directory, no sink
    assert not (tmp_path / "wal").exists() and not (tmp_path / "out.db").exists()

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        rc, out, err = proc.run([bins.kwal, mode, "-c", k.conf, "-X",
                                 f"metrics.listen=127.0.0.1:{port}"], 60)
        assert rc == 1, (rc, err)
        line = one_error_line(err)
        assert f"metrics.listen: cannot listen on 127.0.0.1:{port}" in line, line
        # a port alone (or after a colon) is loopback's
        for value in (str(port), f":{port}"):
            rc, out, err = proc.run([bins.kwal, mode, "-c", k.conf, "-X",
                                     f"metrics.listen={value}"], 60)
            assert rc == 1, (value, rc, err)
            line = one_error_line(err)
            assert f"metrics.listen: cannot listen on 127.0.0.1:{port}" in line, line
