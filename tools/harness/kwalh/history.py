"""history -- what a trial did and saw, as data (Jepsen's history).

A History is a list of events, each a dict with "t_ms" (milliseconds
since the trial started), "type" and the event's own fields. The runner
appends; checkers read; nothing is parsed back from text. It is written
as JSON lines (history.jsonl in the trial's directory).

Event types and their fields:

  produce      phase (start|end), mode (upfront|during), rc, delivered
  run-start    run, kind, point, backlog, pid, env
  run-end      run, kind, point, backlog, rc (exit status; null when
               killed by us), killed (sigkill|hang|null), termed (bool),
               elapsed_ms, stats (the run's last statistics), how
  fault        phase (apply|undo|missed), fault (its type), run, ok, message,
               reason
  repair       replica, rc, message
  zk-restart   rc, message
  observe      what (verify|zk-offsets|wal-verify|kafka-dups|manifest),
               and what was observed
  note         message (the runner's own trouble, e.g. a producer hang)
"""

import json
import threading
import time


class History:
    def __init__(self):
        self.t0 = time.monotonic()
        self._ev = []
        self._lock = threading.Lock()

    def add(self, type_, **fields):
        assert "type" not in fields and "t_ms" not in fields, fields
        e = {"t_ms": int((time.monotonic() - self.t0) * 1000), "type": type_}
        e.update(fields)
        with self._lock:
            self._ev.append(e)
        return e

    def events(self, type_=None, **match):
        with self._lock:
            ev = list(self._ev)
        return [e for e in ev if (type_ is None or e["type"] == type_)
                and all(e.get(k) == v for k, v in match.items())]

    def last(self, type_, **match):
        ev = self.events(type_, **match)
        return ev[-1] if ev else None

    def observed(self, what):
        """The last observation of `what`, or None."""
        return self.last("observe", what=what)

    def dump(self, path):
        with open(path, "w") as f:
            for e in self.events():
                f.write(json.dumps(e, sort_keys=False) + "\n")

    @classmethod
    def load(cls, path):
        h = cls()
        with open(path) as f:
            h._ev = [json.loads(line) for line in f if line.strip()]
        return h
