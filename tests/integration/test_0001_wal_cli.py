"""0001 -- `kwal wal ls|dump|verify|repair` against a real WAL, and the
command line's errors. No Kafka, no ZooKeeper.

The WAL: kwal-bench-wal --keep writes 3 replicas of 64 records of 64 KiB in
1 MiB segments once per module; every test works on its own copy.

a  ls, dump (--limit, --from, --hex, all records) and verify on the good
   WAL, also through a configuration file (-c) and -X.
b  one flipped byte in the middle of a segment of replica 1: verify exits 1
   naming replica 1 and that segment (and no other replica) with a one-line
   reason on stderr; dump still reads all 64 records from the good copies;
   `repair --replica 1` fixes it and verify exits 0 again.
c  the same on replica 2 through -c, repaired by directory (--target).
d  a replaced disk: replica 0 comes back empty; ls shows it FAILED, verify
   names it, dump reads all 64 records, `repair --replica 0` refills it.
e  bad arguments exit 2 with "kwal: <reason>" and a usage hint; configuration
   errors name the file, the line and the key.
f  --version, --help, `kwal config` (where each value came from) and its
   output read back as a configuration file.

Outcomes come from exit statuses and from the documented output of the
`kwal wal` commands (their stdout is what they are for); kwal has no
statistics in these offline commands.
"""
import re
import shutil
from pathlib import Path

import pytest

from kwtest import run

RECORDS = 64
# one record row of `kwal wal dump`: lsn segment offset size flags length
DUMP_ROW = re.compile(r"^\s*(\d+)\s+\d+\s+\d+\s+\d+\s+\S+\s+(\d+)\s*$")


def dump_rows(out):
    """[(lsn, payload length)] of `kwal wal dump` output (no --hex)."""
    rows = []
    for line in out.splitlines():
        m = DUMP_ROW.match(line)
        if m:
            rows.append((int(m.group(1)), int(m.group(2))))
    return rows


def flip(path, offset):
    """Invert every bit of the byte at offset; return (old, new)."""
    with open(path, "r+b") as f:
        f.seek(offset)
        old = f.read(1)
        assert len(old) == 1, f"cannot read byte {offset} of {path}"
        new = bytes([255 - old[0]])
        f.seek(offset)
        f.write(new)
    with open(path, "rb") as f:
        f.seek(offset)
        assert f.read(1) == new, f"byte {offset} of {path} did not change"
    return old[0], new[0]


def segments(d):
    """Segment file names of a replica directory, in LSN order."""
    segs = sorted(p.name for p in Path(d).glob("*.seg"))
    assert segs, f"no segments in {d}"
    return segs


def flip_middle(d, nth):
    """Flip the middle byte of the nth segment (1-based; the last one if
    there are fewer) of replica directory d; its name."""
    segs = segments(d)
    seg = segs[min(nth, len(segs)) - 1]
    p = Path(d) / seg
    flip(p, p.stat().st_size // 2)
    return seg


class Wal:
    def __init__(self, bins, base):
        self.kwal = bins.kwal
        self.d = base
        self.replicas = [base / f"wal-{r}" for r in range(3)]
        self.dirs = [x for r in self.replicas for x in ("--dir", r)]
        self.conf = base / "kwal.conf"
        self.conf.write_text("# test configuration\n"
                             f"wal.dirs = {', '.join(str(r) for r in self.replicas)}\n"
                             "wal.write.quorum=2\n")

    def __call__(self, rc, *args):
        return run([self.kwal, *args], rc=rc)


@pytest.fixture(scope="module")
def pristine(bins, tmp_path_factory):
    """A 3-replica WAL of 64 records of 64 KiB in 1 MiB segments."""
    base = tmp_path_factory.mktemp("bench")
    bench = Path(bins.dir) / "kwal-bench-wal"
    run([bench, "--quick", "--keep", "--dir", base, "--sizes", "64K", "--replicas", "3",
         "--appenders", "1", "--mb", "4", "--segment-bytes", "1M"], 300, rc=0)
    d = base / "64K-r3-a1"
    for i in range(3):
        assert (d / f"wal-{i}").is_dir(), f"kwal-bench-wal --keep left no {d}/wal-{i}"
    return d


@pytest.fixture
def wal(bins, pristine, tmp_path):
    d = tmp_path / "wal"
    shutil.copytree(pristine, d)
    return Wal(bins, d)


def test_good_wal(wal):
    out = wal(0, "wal", "ls", *wal.dirs).stdout
    assert "3 replicas, 3 healthy" in out
    assert str(wal.replicas[2]) in out, "ls names each replica directory"
    assert "00000000000000000001.seg" in out, "ls lists the first segment"
    assert f"{RECORDS} records" in out
    assert len(segments(wal.replicas[0])) >= 3, "expected several 1 MiB segments"

    rows = dump_rows(wal(0, "wal", "dump", *wal.dirs, "--limit", "3").stdout)
    assert len(rows) == 3, rows
    assert all(length == 65536 for _, length in rows), rows
    rows = dump_rows(wal(0, "wal", "dump", *wal.dirs, "--from", "10", "--limit", "1").stdout)
    assert [lsn for lsn, _ in rows] == [10], "dump --from 10 starts at LSN 10"
    out = wal(0, "wal", "dump", *wal.dirs, "--hex", "--limit", "1").stdout
    assert "00000000  " in out, "dump --hex: hex dump of the payload"
    assert "0000fff0  " in out, "dump --hex: the whole 64 KiB payload"
    rows = dump_rows(wal(0, "wal", "dump", *wal.dirs).stdout)
    assert [lsn for lsn, _ in rows] == list(range(1, RECORDS + 1))

    wal(0, "wal", "verify", *wal.dirs)
    # the same WAL through a configuration file and -X
    wal(0, "wal", "verify", "-c", wal.conf)
    out = wal(0, "wal", "ls", "-c", wal.conf, "-X", "log.level=warn").stdout
    assert "write quorum 2" in out, "ls -c: the quorum comes from the file"


def test_flipped_byte_repaired_by_index(wal):
    seg = flip_middle(wal.replicas[1], 2)
    r = wal(1, "wal", "verify", *wal.dirs)
    assert f"replica 1 ({wal.replicas[1]}) segment {seg} offset " in r.stdout, r.both
    assert "kwal: wal verify: " in r.stderr, "verify: one-line reason on stderr"
    blamed = [ln for ln in r.stdout.splitlines() if re.match(r"^replica [02] ", ln)]
    assert not blamed, f"verify blames a replica that was not touched: {blamed}"
    # the good copies on replicas 0 and 2 still serve every record
    rows = dump_rows(wal(0, "wal", "dump", *wal.dirs).stdout)
    assert len(rows) == RECORDS, "dump: not every record after the flip"

    out = wal(0, "wal", "repair", *wal.dirs, "--replica", "1").stdout
    assert "repaired replica 1" in out
    assert "bytes copied" in out
    wal(0, "wal", "verify", *wal.dirs)


def test_flipped_byte_repaired_by_directory(wal):
    seg = flip_middle(wal.replicas[2], 1)
    r = wal(1, "wal", "verify", "-c", wal.conf)
    assert f"replica 2 ({wal.replicas[2]}) segment {seg} offset " in r.stdout, r.both
    out = wal(0, "wal", "repair", "-c", wal.conf, "--target", wal.replicas[2]).stdout
    assert "repaired replica 2" in out, "repair --target picks replica 2"
    wal(0, "wal", "verify", "-c", wal.conf)
    assert "3 replicas, 3 healthy" in wal(0, "wal", "ls", *wal.dirs).stdout


def test_replaced_disk(wal):
    shutil.rmtree(wal.replicas[0])
    wal.replicas[0].mkdir()
    out = wal(0, "wal", "ls", *wal.dirs).stdout
    assert "3 replicas, 2 healthy" in out, "ls: the empty replica is not healthy"
    assert re.search(r"^0 +FAILED ", out, re.M), f"ls: replica 0 not shown as FAILED\n{out}"
    r = wal(1, "wal", "verify", *wal.dirs)
    assert f"replica 0 ({wal.replicas[0]})" in r.stdout, r.both
    rows = dump_rows(wal(0, "wal", "dump", *wal.dirs).stdout)
    assert len(rows) == RECORDS, "dump: not every record with replica 0 empty"
    wal(0, "wal", "repair", *wal.dirs, "--replica", "0")
    wal(0, "wal", "verify", *wal.dirs)
    assert "3 replicas, 3 healthy" in wal(0, "wal", "ls", *wal.dirs).stdout


BAD_ARGS = [
    # (arguments, texts on stderr); {dirs} stands for the three --dir DIR
    ([], ()),
    (["--frob"], ("kwal: unknown option '--frob'", "Try 'kwal --help'.")),
    (["wal"], ()),
    (["wal", "frob", "{dirs}"], ()),
    (["wal", "ls"], ("Try 'kwal wal --help'.",)),
    (["wal", "ls", "--dir"], ()),
    (["wal", "dump", "{dirs}", "--limit", "x"], ()),
    (["wal", "ls", "{dirs}", "--hex"], ()),                 # a dump option
    (["wal", "repair", "{dirs}"], ()),                      # no --replica/--target
    (["wal", "repair", "{dirs}", "--replica", "7"], ()),    # 7 of 3
    (["wal", "ls", "{dirs}", "--quorum", "4"], ()),         # 4 of 3
]


@pytest.mark.parametrize("args,texts", BAD_ARGS,
                         ids=[" ".join(a) or "(nothing)" for a, _ in BAD_ARGS])
def test_bad_arguments(wal, args, texts):
    argv = []
    for a in args:
        argv += wal.dirs if a == "{dirs}" else [a]
    r = wal(2, *argv)
    for text in texts:
        assert text in r.stderr, r.both


def test_configuration_errors(wal):
    bad = wal.d / "bad.conf"
    bad.write_text(f"# line 1 is a comment\nwal.dirs={wal.replicas[0]}\nwal.bogus.key = 1\n")
    r = wal(2, "wal", "ls", "-c", bad)
    assert f"kwal: {bad}:3: wal.bogus.key: unknown configuration key" in r.stderr, r.both
    r = wal(2, "wal", "ls", "-c", wal.conf, "-X", "wal.write.quorum=x")
    assert "wal.write.quorum: expected an integer between 0 and 16, got 'x'" in r.stderr, r.both
    wal(2, "config", "-c", bad)


def test_version_help_config(wal):
    assert "kwal " in wal(0, "--version").stdout
    assert "wal.write.quorum" in wal(0, "--help").stdout, "--help lists the configuration keys"
    wal(0, "wal", "--help")
    out = wal(0, "config", "-c", wal.conf).stdout
    lines = out.splitlines()
    i = lines.index("wal.write.quorum=2")
    assert lines[i - 1] == f"# {wal.conf}:3", "config shows where a value came from"
    # its output is itself a valid configuration file
    again = wal.d / "again.conf"
    again.write_text(out)
    out = wal(0, "config", "-c", again).stdout
    want = "wal.dirs=" + ",".join(str(r) for r in wal.replicas)
    assert want in out.splitlines(), "config round trip keeps wal.dirs"
