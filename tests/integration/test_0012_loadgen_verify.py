"""0012 -- kwal-loadgen produces a workload to a real Apache Kafka cluster
(the shared 3-node `kafka3`), kcat reads it back, and kwal-verify checks it in
each output form and finds exactly what was done to a damaged copy.

The workload (made once per module, on first use): kwal-loadgen produces
20,000 records of 100 B to a topic of 8 partitions (replication factor 3)
with a manifest; `kcat -C -J -e` reads them into a JSON lines file.

a  every record delivered (loadgen's summary and manifest); kcat read 20,000
   lines and stopped at the end; kwal-verify --jsonl passes with the exact
   summary and records in all 8 partitions.
b  --expect N without a manifest picks the run with the most records (the
   manifest's); --run-id of another run: every record foreign, all missing.
c  a damaged copy -- seqs 1000..1009 and 15000 dropped, 42 and 77 doubled,
   5000 tripled, a padding byte of 12345 changed: exit 1 with missing ranges
   "1000..1009, 12345, 15000", the three duplicated seqs, one corrupt record
   (checksum mismatch, seq 12345) and the exact summary line.
d  \\u escapes in key and payload decode and pass; a torn last line is one
   corrupt record, named by file and line.
e  the file sink's layout: the records split over 3 files in a directory
   (plus a .tmp file and a hidden file of garbage, skipped) pass with --files.
f  the sqlite sink's table (the records loaded into records(topic, partition,
   offset, ts, key, payload, batch)) passes with --sqlite; with 10 rows
   deleted and one payload altered, exit 1 naming them.
g  kcat as the producer: kwal-loadgen --print-kcat piped into kcat -P -K:
   produces 5,000 records to a second topic, which verify again.
h  failures: a producer that cannot reach a broker exits 1 counting its
   undelivered records (stderr and manifest); bad arguments exit 2.

Numbers come from kwal-verify's summary line and detail lines, kwal-loadgen's
manifest and its documented count on stderr, and line counts of what kcat
read; kwal itself does not run here.
"""
import json
import sqlite3

import pytest

from kwalh import workload
from kwtest import kcat, run

RECORDS = 20_000
PARTITIONS = 8
CLEAN = ("expected={n} stored={n} missing=0 duplicates=0 duplicate_offsets=0 corrupt=0 "
         "foreign=0 out_of_range=0")


def verify(bins, rc, *args):
    """kwal-verify ARGS; require exit rc; (summary line, stdout)."""
    r = run([bins.verify, *args], 300, rc=rc)
    lines = r.stdout.splitlines()
    assert lines and workload.parse_summary(lines[-1]), f"no summary line; {r.both}"
    return lines[-1], r.stdout


def consume(bootstrap, topic, path):
    """All of topic as kcat -J lines into path (kcat stops at the end, -e)."""
    out = kcat("-C", "-b", bootstrap, "-t", topic, "-e", "-J", "-q", "-o", "beginning",
               timeout=240)
    with open(path, "w") as f:
        f.write(out)
    return out.splitlines()


def all_partitions(out, topic):
    """kwal-verify's partitions: line shows records in all 8 partitions."""
    line = [ln for ln in out.splitlines() if ln.startswith("partitions:")]
    assert line, f"no partitions: line\n{out}"
    assert line[0].startswith(f"partitions: {PARTITIONS} -- {topic}/0="), line[0]
    counts = {}
    for item in line[0].split("--", 1)[1].split():
        name, _, n = item.rstrip(",").partition("=")
        counts[name] = int(n)
    assert set(counts) == {f"{topic}/{p}" for p in range(PARTITIONS)}, line[0]
    assert all(n > 0 for n in counts.values()), f"an empty partition: {line[0]}"


def key_of(line):
    return json.loads(line)["key"]


class Produced:
    """The module's workload: topic, manifest, run id, the JSON lines read."""

    def __init__(self, d, topic):
        self.d = d
        self.topic = topic
        self.manifest = str(d / "m")
        self.jsonl = str(d / "all.jsonl")
        self.lines = []
        self.run_id = None
        self.error = None


@pytest.fixture(scope="module")
def _produced_cache():
    return {}


@pytest.fixture
def produced(_produced_cache, bins, kafka3, names, tmp_path_factory):
    """Produce the workload on first use; later tests reuse it."""
    if "p" not in _produced_cache:
        p = Produced(tmp_path_factory.mktemp("lg"), names.topic())
        _produced_cache["p"] = p
        kafka3.create_topic(p.topic, PARTITIONS, rf=3)
        r = run([bins.loadgen, "--brokers", kafka3.bootstrap, "--topic", p.topic, "--records",
                 RECORDS, "--size", 100, "--manifest", p.manifest], 300)
        p.produce = r
        if r.returncode == 0:
            p.lines = consume(kafka3.bootstrap, p.topic, p.jsonl)
            p.run_id = workload.read_manifest(p.manifest).get("run_id")
        else:
            p.error = f"kwal-loadgen failed: {r.both}"
    p = _produced_cache["p"]
    if p.error:
        pytest.fail(p.error)
    return p


def write_lines(path, lines):
    with open(path, "w") as f:
        f.write("".join(ln + "\n" for ln in lines))
    return str(path)


# ----------------------------------------------------------------- tests --

def test_produce_read_back_verify(bins, produced):
    r = produced.produce
    assert r.returncode == 0, r.both
    assert f"{RECORDS} of {RECORDS} records" in r.stderr, "loadgen's count of deliveries"
    m = workload.read_manifest(produced.manifest)
    assert m.get("records") == str(RECORDS), m
    assert m.get("delivered") == str(RECORDS), m
    assert len(m.get("run_id", "")) == 16, m
    assert len(produced.lines) == RECORDS, "kcat -J -e did not read every record"

    summary, out = verify(bins, 0, "--manifest", produced.manifest, "--jsonl", produced.jsonl)
    assert summary == CLEAN.format(n=RECORDS)
    all_partitions(out, produced.topic)


def test_run_selection(bins, produced):
    _, out = verify(bins, 0, "--expect", RECORDS, "--jsonl", produced.jsonl)
    assert f"run: {produced.run_id} (the run with the most records)" in out, out
    summary, out = verify(bins, 1, "--expect", RECORDS, "--run-id", "0123456789abcdef",
                          "--jsonl", produced.jsonl)
    assert summary == (f"expected={RECORDS} stored=0 missing={RECORDS} duplicates=0 "
                       f"duplicate_offsets=0 corrupt=0 foreign={RECORDS} out_of_range=0")
    assert f"missing ranges: 0..{RECORDS - 1}" in out, out


def test_damaged_copy(bins, produced, tmp_path):
    drop = {str(s) for s in list(range(1000, 1010)) + [15000]}
    copies = {"42": 2, "77": 2, "5000": 3}
    bad = []
    for line in produced.lines:
        k = key_of(line)
        if k in drop:
            continue
        if k == "12345":
            p = line.index('"payload":"') + len('"payload":"') + 60     # a padding byte
            line = line[:p] + ("y" if line[p] == "x" else "x") + line[p + 1:]
        bad += [line] * copies.get(k, 1)
    path = write_lines(tmp_path / "bad.jsonl", bad)
    summary, out = verify(bins, 1, "--manifest", produced.manifest, "--jsonl", path)
    assert summary == ("expected=20000 stored=19992 missing=12 duplicates=4 "
                       "duplicate_offsets=4 corrupt=1 foreign=0 out_of_range=0"), out
    assert "missing: 12 in 3 ranges" in out, out
    assert "missing ranges: 1000..1009, 12345, 15000" in out, out
    assert "duplicate seqs: 42 (x2), 77 (x2), 5000 (x3)" in out, out
    assert "duplicate offsets: 4 extra copies of 3 offsets" in out, out
    assert f"checksum mismatch (claims run {produced.run_id} seq 12345)" in out, out
    corrupt = [ln for ln in out.splitlines() if ln.startswith("corrupt:")]
    assert len(corrupt) == 1, f"expected one corrupt: line\n{out}"


def test_escapes_and_torn_line(bins, produced, tmp_path):
    esc, done = [], 0
    for line in produced.lines:
        if '"key":"7"' in line:
            line = line.replace('"key":"7"', '"key":"\\u0037"').replace(
                '"payload":"kwal1', '"payload":"\\u006bw\\u0061l1')
            assert '"key":"\\u0037","payload":"\\u006bw\\u0061l1' in line, line
            done += 1
        esc.append(line)
    assert done == 1, f"{done} records with key 7"
    path = write_lines(tmp_path / "esc.jsonl", esc)
    verify(bins, 0, "--manifest", produced.manifest, "--jsonl", path)

    path = write_lines(tmp_path / "torn.jsonl", produced.lines + [produced.lines[0][:60]])
    summary, out = verify(bins, 1, "--manifest", produced.manifest, "--jsonl", path)
    assert summary == ("expected=20000 stored=20000 missing=0 duplicates=0 "
                       "duplicate_offsets=0 corrupt=1 foreign=0 out_of_range=0"), out
    assert f"torn.jsonl:{RECORDS + 1}: not a kcat -J envelope" in out, out


def test_file_sink_layout(bins, produced, tmp_path):
    d = tmp_path / "files"
    d.mkdir()
    for i, start in enumerate(range(0, RECORDS, 7000)):
        write_lines(d / f"batch-a{'abc'[i]}", produced.lines[start:start + 7000])
    (d / "batch-zz.tmp").write_text("garbage\n")
    (d / ".hidden").write_text("garbage\n")
    summary, out = verify(bins, 0, "--manifest", produced.manifest, "--files", d)
    assert summary == CLEAN.format(n=RECORDS)
    assert f"3 files, {RECORDS} lines" in out, "the .tmp and hidden files were read\n" + out


def load_sqlite(lines, db):
    """The records as the sqlite sink's table holds them (key, payload: BLOB)."""
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE records(topic TEXT, partition INTEGER, offset INTEGER, "
                "ts INTEGER, key BLOB, payload BLOB, batch INTEGER, "
                "PRIMARY KEY(topic, partition, offset))")
    rows = []
    for line in lines:
        e = json.loads(line)
        rows.append((e["topic"], e["partition"], e["offset"], e["ts"], e["key"].encode(),
                     e["payload"].encode(), 1))
    con.executemany("INSERT INTO records VALUES (?,?,?,?,?,?,?)", rows)
    con.commit()
    return con


def test_sqlite_sink_table(bins, produced, tmp_path):
    db = str(tmp_path / "sink.db")
    con = load_sqlite(produced.lines, db)
    try:
        assert con.execute("SELECT count(*) FROM records").fetchone()[0] == RECORDS
        summary, out = verify(bins, 0, "--manifest", produced.manifest, "--sqlite", db)
        assert summary == CLEAN.format(n=RECORDS)
        all_partitions(out, produced.topic)

        n = con.execute("DELETE FROM records WHERE CAST(key AS TEXT) IN "
                        "('300','301','302','303','304','305','306','307','308','309')").rowcount
        assert n == 10
        n = con.execute("UPDATE records SET payload = CAST(replace(CAST(payload AS TEXT), "
                        "' 000000000400 ', ' 000000000401 ') AS BLOB) "
                        "WHERE CAST(key AS TEXT) = '400'").rowcount
        assert n == 1
        con.commit()
    finally:
        con.close()
    summary, out = verify(bins, 1, "--manifest", produced.manifest, "--sqlite", db)
    assert summary == ("expected=20000 stored=19989 missing=11 duplicates=0 "
                       "duplicate_offsets=0 corrupt=1 foreign=0 out_of_range=0"), out
    assert "missing ranges: 300..309, 400" in out, out
    assert f"checksum mismatch (claims run {produced.run_id} seq 401)" in out, out


def test_kcat_producer(bins, kafka3, names, tmp_path):
    topic = names.topic()
    kafka3.create_topic(topic, PARTITIONS, rf=3)
    m2 = str(tmp_path / "m2")
    r = run([bins.loadgen, "--print-kcat", "--records", 5000, "--size", 120, "--topic", topic,
             "--manifest", m2], 120)
    assert r.returncode == 0, r.both
    assert len(r.stdout.splitlines()) == 5000, "--print-kcat: not 5000 lines"
    lines = tmp_path / "kcat-lines"
    lines.write_text(r.stdout)
    kcat("-P", "-b", kafka3.bootstrap, "-t", topic, "-K:", "-l", lines, timeout=180)
    got = consume(kafka3.bootstrap, topic, tmp_path / "t2.jsonl")
    assert len(got) == 5000, f"kcat read {len(got)} records, expected 5000"
    summary, out = verify(bins, 0, "--manifest", m2, "--jsonl", tmp_path / "t2.jsonl")
    assert summary == CLEAN.format(n=5000)
    all_partitions(out, topic)


def test_failures(bins, tmp_path):
    m3 = tmp_path / "m3"
    r = run([bins.loadgen, "--brokers", "127.0.0.1:1", "--topic", "lg", "--records", 10,
             "--timeout", 2, "--manifest", m3], 90)
    assert r.returncode == 1, r.both
    assert "10 of 10 records failed to deliver" in r.stderr, r.both
    assert workload.read_manifest(m3).get("failed") == "10"

    r = run([bins.verify, "--expect", 10], 60)
    assert r.returncode == 2 and "kwal-verify: give an output" in r.stderr, r.both
    missing = tmp_path / "nonexistent"
    r = run([bins.verify, "--expect", 10, "--jsonl", missing], 60)
    assert r.returncode == 2 and f"kwal-verify: {missing}: No such file" in r.stderr, r.both
    r = run([bins.verify, "--expect", 10, "--sqlite", m3], 60)      # no records table
    assert r.returncode == 2, r.both
    r = run([bins.loadgen, "--print-kcat", "--records", 1, "--size", 10], 60)
    assert r.returncode == 2 and "kwal-loadgen: --size" in r.stderr, r.both
    r = run([bins.loadgen, "--print-kcat"], 60)
    assert r.returncode == 2, r.both
