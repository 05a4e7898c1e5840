"""0002 -- the configuration table through `kwal config`. No Kafka, no
ZooKeeper.

a  defaults: `kwal config` prints every key after a "# default" line.
b  file syntax and every value type: comments (also indented), blank lines,
   spaces around keys, values and list items, a key given twice (the last
   wins), sizes with suffixes, plain byte counts, booleans, case-insensitive
   enums, CRLF line endings, kafka.* pass-through (values keep # and =), and
   -X overriding the file (also a kafka.* key); each value comes after a
   "# FILE:LINE" or "# -X" line naming where it came from.
c  errors exit 2 with one line on stderr, "kwal: where: key: what was
   expected" (file:line or -X), with a suggestion for a near miss.
d  CONFIGURATION.md is what `kwal config --markdown` prints (the docs match
   the table in common/kw_conf.c), and --help documents the keys. When that
   check fails after a change to the table, regenerate the file:
       cmake --build <build> --target configuration-md

Outcomes come from exit statuses and from `kwal config`'s output, which is
itself a configuration file (its documented purpose); there are no
statistics in this offline command.
"""
import difflib

import pytest

from kwtest import run


def config(bins, *args, rc=0):
    return run([bins.kwal, "config", *args], 60, rc=rc)


def origins(out):
    """{line "key=value": the comment line right before it, without "# "}."""
    res, prev = {}, None
    for line in out.splitlines():
        if prev is not None and prev.startswith("# ") and not line.startswith("#"):
            res[line] = prev[2:]
        prev = line
    return res


DEFAULTS = ["wal.dirs=./kwal-wal", "wal.write.quorum=0", "wal.segment.bytes=64M",
            "wal.segment.ms=60000", "wal.max.pending.bytes=256M", "wal.compress=true",
            "log.level=info"]


def test_defaults(bins):
    got = origins(config(bins).stdout)
    for kv in DEFAULTS:
        assert got.get(kv) == "default", f"{kv}: {got.get(kv)!r}"


def test_file_syntax_and_types(bins, tmp_path):
    conf = tmp_path / "k.conf"
    conf.write_bytes("\n".join([
        "# a comment",
        "",
        "   wal.dirs =  /a , /b,/c  ",
        "wal.write.quorum=1",
        "\t# an indented comment",
        "wal.write.quorum = 2",
        "wal.segment.bytes=1GiB",
        "wal.max.pending.bytes=1048576",
        "wal.compress=off",
        "log.level=DEBUG",
        "kafka.bootstrap.servers=127.0.0.1:9092",
        "kafka.sasl.password=p#ss=word",
        "kafka.client.id=first",
    ]).encode() + b"\nwal.segment.ms=5\r\n")
    out = config(bins, "-c", conf, "-X", "wal.segment.bytes=4k", "-X", "kafka.client.id=second",
                 "-Xwal.compress=yes").stdout
    got = origins(out)
    want = {
        "wal.dirs=/a,/b,/c": f"{conf}:3",            # list trimmed, file:line remembered
        "wal.write.quorum=2": f"{conf}:6",           # a key given twice keeps the last value
        "wal.segment.bytes=4K": "-X",                 # -X overrides the file; sizes take k/K
        "wal.max.pending.bytes=1M": f"{conf}:8",     # plain byte counts
        "wal.segment.ms=5": f"{conf}:14",            # CRLF line endings
        "wal.compress=true": "-X",                    # booleans: off, yes
        "log.level=debug": f"{conf}:10",             # enums are case-insensitive
    }
    for kv, origin in want.items():
        assert got.get(kv) == origin, f"{kv}: from {got.get(kv)!r}, expected {origin!r}\n{out}"
    lines = out.splitlines()
    for kv in ["kafka.bootstrap.servers=127.0.0.1:9092",   # kafka.* passed through
               "kafka.sasl.password=p#ss=word",            # values keep # and =
               "kafka.client.id=second"]:                  # -X overrides a kafka.* key
        assert kv in lines, f"no line {kv!r}\n{out}"
    assert "kafka.client.id=first" not in lines


MISSING = object()      # -c names a file that does not exist

# (name, file content (None: no -c), -X arguments, the message on stderr);
# {f} stands for the file's path
BAD = [
    ("bad integer in a file", "wal.dirs=/a\n\nwal.write.quorum=x\n", [],
     "kwal: {f}:3: wal.write.quorum: expected an integer between 0 and 16, got 'x'"),
    ("unknown key in a file", "wal.dirs=/a\nwal.dir=/b\n", [],
     "kwal: {f}:2: wal.dir: unknown configuration key (did you mean wal.dirs?)"),
    ("line without =", "wal.dirs\n", [], "kwal: {f}:1: expected key=value, got 'wal.dirs'"),
    ("missing file", MISSING, [], "kwal: {f}: No such file or directory"),
    ("integer out of range", None, ["wal.write.quorum=17"],
     "kwal: -X: wal.write.quorum: expected an integer between 0 and 16, got '17'"),
    ("size with a bad suffix", None, ["wal.segment.bytes=10Q"],
     "kwal: -X: wal.segment.bytes: expected a size between 4K and 64G"),
    ("size below the minimum", None, ["wal.segment.bytes=1K"], "got '1K'"),
    ("bad boolean", None, ["wal.compress=maybe"],
     "kwal: -X: wal.compress: expected true or false, got 'maybe'"),
    ("bad enum", None, ["log.level=trace"],
     "kwal: -X: log.level: expected one of error, warn, info, debug, got 'trace'"),
    ("empty list item", None, ["wal.dirs=/a,,/b"],
     "kwal: -X: wal.dirs: empty item in comma-separated list '/a,,/b'"),
    ("empty list", None, ["wal.dirs="],
     "kwal: -X: wal.dirs: expected a comma-separated list of 1 to 16 items"),
    ("too many replicas", None, ["wal.dirs=" + ",".join(str(i) for i in range(1, 18))],
     "got 17 in"),
    ("unknown key, no suggestion", None, ["frobnicate=1"],
     "kwal: -X: frobnicate: unknown configuration key"),
    ("kafka. without a name", None, ["kafka.=1"], "kwal: -X: kafka.: expected a librdkafka property name"),
    ("-X without =", None, ["wal.dirs"], "kwal: -X: expected key=value, got 'wal.dirs'"),
]


@pytest.mark.parametrize("content,xs,msg", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_errors(bins, tmp_path, content, xs, msg):
    args = []
    if content is not None:
        f = tmp_path / ("none.conf" if content is MISSING else "bad.conf")
        if content is not MISSING:
            f.write_text(content)
        args += ["-c", f]
        msg = msg.replace("{f}", str(f))
    for x in xs:
        args += ["-X", x]
    r = config(bins, *args, rc=2)
    assert msg in r.stderr, r.both
    assert len(r.stderr.splitlines()) == 1, f"not one line on stderr; {r.both}"


def test_argument_errors(bins):
    config(bins, "-X", rc=2)                 # -X without a value
    config(bins, "stray", rc=2)              # a stray argument


def test_docs_are_generated_from_the_table(bins, repo):
    out = config(bins, "--markdown").stdout
    doc = (repo / "CONFIGURATION.md").read_text()
    diff = "".join(difflib.unified_diff(doc.splitlines(True), out.splitlines(True),
                                        "CONFIGURATION.md", "kwal config --markdown"))
    assert not diff, ("CONFIGURATION.md is out of date; regenerate it with `cmake --build "
                      "<build> --target configuration-md`\n" + diff[:4000])
    r = run([bins.kwal, "--help"], 60, rc=0)
    for key in ["wal.dirs", "wal.write.quorum", "wal.segment.bytes", "wal.segment.ms",
                "wal.max.pending.bytes", "wal.compress", "log.level"]:
        assert f"  {key}=" in r.stdout, f"--help does not document {key}"
