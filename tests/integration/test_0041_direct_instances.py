"""
test_0041 -- kwal direct across instances (DESIGN.md, "Several instances").

Instances of one group share one sink database and divide the partitions by
the assignment each computes from the registered instance ids
(/consumers/<group>/ids) and the sorted partitions (direct.assignment). A
partition changes hands only after its batch is committed and its owner node
released, so a batch is never read by two instances.

a  Three instances share 64 partitions evenly (21 or 22 each, from the owner
   nodes in ZooKeeper), records arriving all along. A fourth joins: 16 each,
   the three gave up the fourth's share. One is SIGKILLed: its partitions stay
   its own until its session expires, then the three left hold 21 or 22 each.
   At the end: every record stored once, the sink counted no duplicate
   delivery, each partition's ranges follow each other without gap or overlap
   (so no range was read twice), ZooKeeper at the sink's end offsets.
b  direct.assignment=range: two instances, two topics of 3 and 5 partitions:
   each instance holds a contiguous run of each topic, as Kafka's range
   assignor gives it (2+3 and 1+2).
c  A clean stop hands over at once: the stopped instance's partitions are
   owned by the other well before a session timeout (60 s here) could end.

d  An instance frozen mid-batch past its session timeout while records
   arrive: libfiu's direct/stop (armed with fiu-ctrl) makes it SIGSTOP itself
   after reading a batch, before its sink transaction. The other takes its
   partitions over and stores ranges of them; thawed (SIGCONT), the frozen one
   tries to store the batch it had read -- the sink's range fence refuses it
   whole (batches_fenced), so nothing is delivered twice: every record stored
   once, no duplicate delivery counted, ranges without overlap; it
   re-registers and the partitions are shared again.

Numbers come from ZooKeeper, the sink, kwal-verify and --stats-json, never from
kwal's log.
"""
import shutil
import signal
import time

import pytest

from crashlib import wait_until, zk_fast  # noqa: F401 (fixture)
from test_0033_replica_faults import fiu_send
from test_0040_direct import Direct, owners


def holders(x, topic=None, partitions=None):
    """{instance: [partitions]} from the owner nodes; None for unowned."""
    got = {}
    for p, who in owners(x.zk, x.group, topic or x.topic, partitions or x.partitions).items():
        got.setdefault(who, []).append(p)
    return got


def balanced(x, names):
    """Every partition owned by one of names, each within one of even."""
    h = holders(x)
    if None in h or set(h) != set(names):
        return False
    even = x.partitions // len(names)
    return all(len(v) in (even, even + 1) for v in h.values())


def test_share_join_kill(bins, zk_fast, kafka3, tmp_path, names, kwal_factory):
    x = Direct(bins, zk_fast, kafka3, kwal_factory, names, tmp_path / "a", 64)
    x.settings["zookeeper.session.timeout.ms"] = 3000
    ks = {n: x.kwal(name=n, **{"instance.id": n}).start() for n in ("a", "b", "c")}
    lg = x.produce(60000, rate=1500, background=True)
    alive = lambda: all(k.alive() for k in ks.values())  # noqa: E731
    wait_until(lambda: balanced(x, ks), 120, "three instances hold 21 or 22 of 64 each",
               alive)
    wait_until(lambda: x.stored() >= 3000, 120, "3,000 stored", alive)

    ks["d"] = x.kwal(name="d", **{"instance.id": "d"}).start()
    wait_until(lambda: balanced(x, ks), 120, "four instances hold 16 each", alive)
    s = x.stored()
    wait_until(lambda: x.stored() >= s + 3000, 120, "3,000 more stored by four", alive)
    assert ks["d"].stats()["records_stored"] > 0, ks["d"].stats()

    victim = ks.pop("b")
    held = set(holders(x)["b"])
    victim.kill()
    killed = time.monotonic()
    # the victim's partitions are not read by anyone until its session ends
    h = holders(x)
    assert set(h.get("b", [])) == held or time.monotonic() - killed > 2.5, h
    wait_until(lambda: balanced(x, ks), 120, "the three left hold 21 or 22 each", alive)

    wait_until(lg.done, 300, "kwal-loadgen finishes")
    assert lg.rc == 0, "kwal-loadgen failed"
    x.wait_stored(60000, 240, alive)
    stats = {n: x.stop(k) for n, k in ks.items()}
    assert all(s["records_stored"] > 0 for s in stats.values()), stats
    x.verify_once(60000)
    x.ranges_contiguous()
    x.check_offsets(60000)
    assert holders(x) == {None: list(range(64))}, "owner nodes left after a clean stop"


def test_range_assignment(bins, zk_fast, kafka3, tmp_path, names, kwal_factory):
    x = Direct(bins, zk_fast, kafka3, kwal_factory, names, tmp_path / "b", 3)
    t2 = names.topic()
    kafka3.create_topic(t2, 5, rf=3)
    x.settings.update({"topics": f"{x.topic},{t2}", "direct.assignment": "range"})
    ks = [x.kwal(name=n, **{"instance.id": n}).start() for n in ("p", "q")]

    def both():
        return holders(x), holders(x, t2, 5)

    want = ({"p": [0, 1], "q": [2]}, {"p": [0, 1, 2], "q": [3, 4]})
    wait_until(lambda: both() == want, 120, f"range assignment {want}",
               lambda: all(k.alive() for k in ks))
    for k in ks:
        x.stop(k)


def test_clean_stop_hands_over(bins, zk_fast, kafka3, tmp_path, names, kwal_factory):
    x = Direct(bins, zk_fast, kafka3, kwal_factory, names, tmp_path / "c", 8)
    x.settings["zookeeper.session.timeout.ms"] = 60000
    first = x.kwal(name="first", **{"instance.id": "first"}).start()
    second = x.kwal(name="second", **{"instance.id": "second"}).start()
    lg = x.produce(20000, rate=2000, background=True)
    wait_until(lambda: balanced(x, ["first", "second"]), 120, "4 partitions each",
               lambda: first.alive() and second.alive())
    wait_until(lambda: x.stored() >= 2000, 120, "2,000 stored", second.alive)
    x.stop(first)
    stopped = time.monotonic()
    wait_until(lambda: balanced(x, ["second"]), 30, "the second owns all 8", second.alive)
    assert time.monotonic() - stopped < 30
    wait_until(lg.done, 180, "kwal-loadgen finishes")
    assert lg.rc == 0, "kwal-loadgen failed"
    wait_until(lambda: x.stored() >= 20000, 180, "20,000 stored", second.alive)
    x.stop(second)
    x.verify_once(20000)
    x.ranges_contiguous()
    x.check_offsets(20000)


def stopped(k):
    """The process is stopped (SIGSTOP): state T in /proc/PID/stat."""
    try:
        with open(f"/proc/{k.pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "T"
    except OSError:
        return False


@pytest.mark.skipif(shutil.which("fiu-ctrl") is None,
                    reason="fiu-ctrl is not installed (Debian fiu-utils)")
def test_frozen_instance_fenced(bins, zk_fast, kafka3, tmp_path, names, kwal_factory):
    x = Direct(bins, zk_fast, kafka3, kwal_factory, names, tmp_path / "d", 8)
    x.settings["zookeeper.session.timeout.ms"] = 3000
    prefix = str(tmp_path / "fiu")
    a = x.kwal(name="a", env={"KWAL_FIU_CTRL": prefix}, **{"instance.id": "a"}).start()
    b = x.kwal(name="b", **{"instance.id": "b"}).start()
    # records only once the two have settled: a must still have some to read
    # when it is armed
    wait_until(lambda: balanced(x, ["a", "b"]), 120, "4 partitions each",
               lambda: a.alive() and b.alive())
    lg = x.produce(40000, rate=2000, background=True)
    wait_until(lambda: x.stored() >= 4000, 120, "4,000 stored", b.alive)
    assert not lg.done(), "kwal-loadgen ended before a was armed"
    # a stops itself after reading a batch, before its sink transaction
    fiu_send(prefix, a, "enable name=direct/stop,onetime")
    try:
        wait_until(lambda: stopped(a), 60, "a stops itself mid-batch", a.alive)
        wait_until(lambda: balanced(x, ["b"]), 60, "b owns all 8 once a's session ended",
                   b.alive)
        s = x.stored()
        wait_until(lambda: x.stored() >= s + 2000, 60, "b stores a's share too", b.alive)
    finally:
        a.p.send_signal(signal.SIGCONT)
    wait_until(lambda: a.stat("batches_fenced", 0) >= 1, 60,
               "a's batch read before the freeze is refused by the range fence", a.alive)
    wait_until(lambda: balanced(x, ["a", "b"]), 120, "shared again after the thaw",
               lambda: a.alive() and b.alive())
    wait_until(lg.done, 180, "kwal-loadgen finishes")
    assert lg.rc == 0, "kwal-loadgen failed"
    wait_until(lambda: x.stored() >= 40000, 180, "40,000 stored",
               lambda: a.alive() and b.alive())
    x.stop(a)
    x.stop(b)
    x.verify_once(40000)
    x.ranges_contiguous()
    x.check_offsets(40000)
