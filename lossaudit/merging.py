"""`merge_all`: the one combiner of the values that merge (`a.merge(b)`).

`Duplicates`, `FlagCounts`, `Timings` and the label-issue sums each have a
`merge`; `beam.CombineGlobally(merge_all, empty=...)` combines any of them.
`SummedArrays` gives a dataclass of numpy arrays the merge that sums them.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Iterable, TypeVar

Mergeable = TypeVar("Mergeable")


def merge_all(parts: Iterable[Mergeable], empty: Mergeable) -> Mergeable:
  """`empty` merged with each of `parts` in order (`empty` for none).

  Beam calls it on inputs and on its own results alike, so `merge` must be
  associative, and `empty` what merging nothing gives.

  Args:
    parts: values of one type, each with `merge(other)`.
    empty: the value of that type that stands for nothing.
  """
  return functools.reduce(lambda total, part: total.merge(part), parts, empty)


class SummedArrays:
  """A dataclass of numpy arrays that merge by element-wise sums."""

  def merge(self, other):
    return type(self)(*(getattr(self, f.name) + getattr(other, f.name)
                        for f in dataclasses.fields(self)))
