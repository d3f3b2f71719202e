"""Producing the next items of an iterator while the caller works on this one.

A Beam DoFn runs the steps fused after it on each element it yields before
it asks for the next one: reading and decoding the next batch waits for the
model to score this one. `prefetched` moves the producing to a thread, as
tf.data's `prefetch` does, so the two overlap: the model and tfx_bsl's
decoder release the GIL while they work.
"""

from __future__ import annotations

import queue
import threading
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")

_DONE = object()
_POLL_SECONDS = 0.1  # How often a blocked producer checks for a stop.


class _Raised:
  """An exception of the producer, to raise in the consumer."""

  def __init__(self, error: BaseException):
    self.error = error


def prefetched(items: Iterable[T], depth: int = 2) -> Iterator[T]:
  """`items`, in order, produced by a thread ahead of the caller.

  Besides the item the caller holds, up to `depth` items wait in a queue
  and the thread holds one more, finished or being produced. What
  producing raises is raised here, where the caller reaches that item. A
  caller that stops early (closes the generator) stops the thread, which
  closes `items` when it is a generator. The thread must not touch Beam's
  per-thread state (metrics, outputs): items are values for the caller to
  count and emit.

  Args:
    items: any iterable; consumed on the thread.
    depth: how many produced items may wait for the caller (>= 1).

  Yields:
    The items of `items`.
  """
  if depth < 1:
    raise ValueError(f"depth: expected an integer >= 1. Received: {depth!r}")
  iterator = iter(items)  # Raises here, before any thread starts.
  ready: queue.Queue = queue.Queue(maxsize=depth)
  stop = threading.Event()

  def put(value) -> bool:
    while not stop.is_set():
      try:
        ready.put(value, timeout=_POLL_SECONDS)
        return True
      except queue.Full:
        continue
    return False

  def produce():
    try:
      for item in iterator:
        if not put(item):
          return
      put(_DONE)
    except BaseException as e:  # pylint: disable=broad-except
      put(_Raised(e))
    finally:
      # A generator stopped early closes here, on its own thread: its
      # files are closed before the caller goes on.
      close = getattr(iterator, "close", None)
      if close is not None:
        close()

  thread = threading.Thread(target=produce, name="lossaudit-prefetch",
                            daemon=True)
  thread.start()
  try:
    while True:
      item = ready.get()
      if item is _DONE:
        return
      if isinstance(item, _Raised):
        raise item.error
      yield item
  finally:
    stop.set()
    # A generator dropped unfinished may be closed by the garbage collector
    # on any thread, this one included.
    if thread is not threading.current_thread():
      thread.join()
