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
  produced, holding = [], threading.Event()

  def items():
    for i in range(10):
      produced.append(i)
      if i == 3:
        holding.set()
      yield i

  found = prefetch.prefetched(items(), depth=2)
  assert next(found) == 0
  # 0 taken, 1 and 2 in the queue, 3 held by the thread until one is taken.
  assert holding.wait(timeout=60)
  assert produced == [0, 1, 2, 3]
  assert list(found) == list(range(1, 10))


def test_depth_below_one_and_a_non_iterable_are_refused():
  with pytest.raises(ValueError, match="depth: expected an integer >= 1."
                     " Received: 0"):
    next(prefetch.prefetched(iter(()), depth=0))
  with pytest.raises(TypeError, match="not iterable"):
    next(prefetch.prefetched(5))
  assert not _prefetch_threads()


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


def test_an_error_before_the_first_item_is_raised_at_once():
  def items():
    raise OSError("no such file")
    yield  # pylint: disable=unreachable

  with pytest.raises(OSError, match="no such file"):
    next(prefetch.prefetched(items()))
  assert not _prefetch_threads()


def test_an_empty_iterable_gives_nothing():
  assert list(prefetch.prefetched(iter(()))) == []
