"""`prefetch.prefetched`: items in order, errors where they happen, and no
thread left behind."""

import threading

import pytest

from lossaudit import prefetch


def _prefetch_threads():
  return [t for t in threading.enumerate() if t.name == "lossaudit-prefetch"]


def test_items_come_in_order_from_another_thread():
  producers = []

  def items():
    for i in range(100):
      producers.append(threading.get_ident())
      yield i

  assert list(prefetch.prefetched(items(), depth=3)) == list(range(100))
  assert set(producers) == {producers[0]} != {threading.get_ident()}
  assert not _prefetch_threads()


def test_producer_runs_at_most_depth_ahead():
  produced = []

  def items():
    for i in range(10):
      produced.append(i)
      yield i

  found = prefetch.prefetched(items(), depth=2)
  assert next(found) == 0
  # One taken, two waiting in the queue, one blocked on putting: no more.
  while len(produced) < 4:
    pass
  assert len(produced) == 4
  assert list(found) == list(range(1, 10))


def test_an_error_is_raised_where_its_item_would_have_been():
  def items():
    yield 1
    yield 2
    raise ValueError("record 3 is broken")

  found = prefetch.prefetched(items())
  assert next(found) == 1
  assert next(found) == 2
  with pytest.raises(ValueError, match="record 3 is broken"):
    next(found)
  assert not _prefetch_threads()


def test_stopping_early_stops_the_thread():
  closed = threading.Event()

  def items():
    try:
      for i in range(1_000_000):
        yield i
    finally:
      closed.set()

  found = prefetch.prefetched(items(), depth=1)
  assert next(found) == 0
  found.close()
  assert closed.is_set()
  assert not _prefetch_threads()


def test_an_empty_iterable_gives_nothing():
  assert list(prefetch.prefetched(iter(()))) == []
