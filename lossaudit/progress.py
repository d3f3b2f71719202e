"""Progress lines from the workers of a local run.

Each worker process keeps its own totals and prints a line to stderr at most
every `interval` seconds, from the DoFns as they work: the DirectRunner runs
the whole pipeline inside `run()`, so nothing outside the workers could ask.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Optional

_lock = threading.Lock()
_state = {"interval": None, "start": None, "last": 0.0, "scored": 0,
          "dead": 0}


def enable(interval: Optional[float]) -> None:
  """Turns progress lines on in this process (None: off)."""
  with _lock:
    if interval and _state["interval"] is None:
      _state.update(interval=float(interval), start=time.monotonic(),
                    last=time.monotonic())


def add(scored: int = 0, dead_lettered: int = 0) -> None:
  """Counts work done; prints a progress line when one is due."""
  with _lock:
    _state["scored"] += scored
    _state["dead"] += dead_lettered
    interval = _state["interval"]
    now = time.monotonic()
    if interval is None or now - _state["last"] < interval:
      return
    _state["last"] = now
    elapsed = now - _state["start"]
    line = (f"lossaudit: {_state['scored']:,} examples scored"
            f" ({_state['scored'] / max(elapsed, 1e-9):,.0f}/s),"
            f" {_state['dead']:,} dead-lettered, {elapsed:.0f} s")
  print(line, file=sys.stderr, flush=True)
