"""Duplicate ids: ids that occur on more than one scored example.

Counted exactly, in two steps that both work per batch: the ids are split by
a hash into buckets (so each bucket fits on one worker), then each bucket's
ids are counted with Arrow's `value_counts`.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

NUM_BUCKETS = 64
LISTED = 100


def hash_buckets(ids: pa.Array, num_buckets: int = NUM_BUCKETS) -> np.ndarray:
  """The bucket of each id, `(N,)` int64 in `[0, num_buckets)`."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  if len(ids) == 0:
    return np.zeros(0, dtype=np.int64)
  return tf.strings.to_hash_bucket_fast(
      ids.to_numpy(zero_copy_only=False), num_buckets).numpy()


@dataclasses.dataclass
class Duplicates:
  """Ids seen more than once.

  Attributes:
    ids: how many distinct ids occur on more than one example.
    rows: how many examples carry such an id.
    listed: up to `LISTED` `(count, id)`, most frequent first, then by id.
  """

  ids: int = 0
  rows: int = 0
  listed: List[Tuple[int, str]] = dataclasses.field(default_factory=list)

  def merge(self, other: "Duplicates") -> "Duplicates":
    return Duplicates(self.ids + other.ids, self.rows + other.rows,
                      _most_frequent(self.listed + other.listed))

  def to_dict(self) -> Dict:
    return {"duplicate_ids": self.ids, "duplicate_id_rows": self.rows,
            "duplicate_id_examples": [
                {"id": id_, "count": count} for count, id_ in self.listed]}


def _most_frequent(pairs: Sequence[Tuple[int, str]]) -> List[Tuple[int, str]]:
  return sorted(pairs, key=lambda p: (-p[0], p[1]))[:LISTED]


def find_duplicates(ids: Sequence[pa.Array]) -> Duplicates:
  """Duplicates among all of `ids` (one bucket's arrays of strings)."""
  if not ids:
    return Duplicates()
  counts = pc.value_counts(pa.concat_arrays(list(ids)))
  repeated = counts.filter(pc.greater(counts.field("counts"), 1))
  table = pa.table({"id": repeated.field("values"),
                    "count": repeated.field("counts")})
  order = pc.sort_indices(
      table, sort_keys=[("count", "descending"), ("id", "ascending")])
  top = table.take(order[:LISTED])
  return Duplicates(
      ids=table.num_rows, rows=int(pc.sum(table["count"]).as_py() or 0),
      listed=list(zip(top["count"].to_pylist(), top["id"].to_pylist())))
