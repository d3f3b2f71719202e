"""The processes a run started, found in `/proc`, and ending them.

Beam's multi-process DirectRunner (`--direct_running_mode=multi_processing`)
starts each SDK worker as `/bin/sh -c 'python -m ...sdk_worker_main'` from a
thread that waits for it. A run stopped by a signal leaves those workers
running, and Python, which waits for that thread at exit, never exits.
`end_since(before)` ends every process started since `before` (the shells
and the workers under them), and returns once none is left, so that the run
releases its lock only when nothing writes any more.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Callable, Dict, FrozenSet, Iterable, Optional, Set


def _processes() -> Dict[int, int]:
  """Every live process's parent: `{pid: ppid}`, zombies left out; empty
  where there is no `/proc`."""
  found = {}
  try:
    names = os.listdir("/proc")
  except OSError:
    return {}
  for name in names:
    if not name.isdigit():
      continue
    try:
      with open(f"/proc/{name}/stat", encoding="ascii",
                errors="replace") as f:
        # After the parenthesised command name: state, ppid, ...
        fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
      continue  # Gone meanwhile.
    if fields and fields[0] not in ("Z", "X"):
      found[int(name)] = int(fields[1])
  return found


def descendants(pid: Optional[int] = None) -> FrozenSet[int]:
  """The live processes under `pid` (this process by default), at any
  depth."""
  pid = os.getpid() if pid is None else pid
  parents = _processes()
  children: Dict[int, Set[int]] = {}
  for child, parent in parents.items():
    children.setdefault(parent, set()).add(child)
  found: Set[int] = set()
  todo = [pid]
  while todo:
    for child in children.get(todo.pop(), ()):
      if child not in found:
        found.add(child)
        todo.append(child)
  return frozenset(found)


def alive(pids: Iterable[int]) -> FrozenSet[int]:
  """Those of `pids` still running (a zombie has stopped)."""
  live = _processes()
  return frozenset(p for p in pids if p in live)


def _signal(pids: Iterable[int], signum: int) -> None:
  for pid in pids:
    try:
      os.kill(pid, signum)
    except OSError:
      pass  # Gone meanwhile.


def end(pids: Iterable[int], grace: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
        wait: Callable[[float], None] = time.sleep) -> FrozenSet[int]:
  """Sends SIGTERM to `pids`, then SIGKILL to those still running after
  `grace` seconds; returns the ones still running 2 s after that (none,
  unless one is stuck in the kernel)."""
  left = alive(pids)
  for signum, seconds in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
    if not left:
      break
    _signal(left, signum)
    deadline = clock() + seconds
    while left and clock() < deadline:
      wait(0.02)
      left = alive(left)
  return left


def end_since(before: FrozenSet[int], grace: float = 3.0) -> FrozenSet[int]:
  """Ends the processes under this one that were not in `before`
  (`descendants()` then): see `end`."""
  return end(descendants() - before, grace)
