"""Flag history: which of today's flags are new, which persist since the
baseline run, and which the baseline had that are gone.

The join is by id, one hash bucket of ids at a time
(`lossaudit.transforms.history` splits every table by
`duplicates.hash_buckets`, so a worker holds one bucket, never every id):

- a flagged row is `persistent` when the baseline flagged its id too: it
  keeps the baseline's `first_flagged` (the run where the streak began) and
  gets `times_flagged` one more than the baseline's; otherwise it is `new`,
  first flagged by this run, once;
- a baseline flag is `resolved` when its id was scored today and is not
  flagged: it is listed with its old reasons and today's loss; one whose id
  was not scored today is counted as `not_scored`, neither resolved nor
  persistent.

A baseline from before flag history (no `first_flagged` column) counts each
of its flags as first flagged by the baseline run, once.

New flags are told apart by the ids the baseline scored (its `scored_ids/`
or `losses/`): a flagged row is `in_baseline` when the baseline scored its
id; a new flag on such an id is a regression, one on an id the baseline
never scored is on a new row. The regression rate's denominator is the
ids scored in both runs.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, NamedTuple, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lossaudit import decisions
from lossaudit.decisions import Decisions

NEW = "new"
PERSISTENT = "persistent"
# Flagged, and kept by a reviewer's decision on its given label of today
# (`lossaudit.decisions`): neither new nor persistent.
REVIEWED = "reviewed"
HISTORY_FIELDS = (pa.field("status", pa.string()),
                  pa.field("first_flagged", pa.string()),
                  pa.field("times_flagged", pa.int64()),
                  pa.field("in_baseline", pa.bool_()))
# The ids a run scored (`scored_ids/`, or the `id` column of `losses/`).
SCORED_IDS_SCHEMA = pa.schema([pa.field("id", pa.string())])
# What a baseline's `flagged/` gives the join, one row per id.
BASELINE_SCHEMA = pa.schema([
    pa.field("id", pa.string()),
    pa.field("reasons", pa.list_(pa.string())),
    pa.field("loss", pa.float64()),
    pa.field("first_flagged", pa.string()),
    pa.field("times_flagged", pa.int64()),
])
# What today's scored rows give the join.
SCORED_SCHEMA = pa.schema([pa.field("id", pa.string()),
                           pa.field("loss", pa.float64())])
RESOLVED_SCHEMA = pa.schema([
    pa.field("id", pa.string()),
    pa.field("loss", pa.float64()),
    pa.field("reasons", pa.list_(pa.string())),
    pa.field("baseline_loss", pa.float64()),
    pa.field("first_flagged", pa.string()),
    pa.field("times_flagged", pa.int64()),
])


def with_history_schema(flagged_schema: pa.Schema) -> pa.Schema:
  """`flagged/`'s schema with `status`, `first_flagged`, `times_flagged`."""
  return pa.schema(list(flagged_schema) + list(HISTORY_FIELDS))


@dataclasses.dataclass
class HistoryCounts:
  """Flags by history, summed over buckets.

  Attributes:
    new: today's flagged rows the baseline did not flag.
    persistent: today's flagged rows the baseline flagged too.
    resolved: baseline flags scored today and no longer flagged.
    not_scored: baseline flags whose id was not scored today.
    new_rows: distinct ids newly flagged that the baseline never scored.
    regressions: distinct ids newly flagged that the baseline scored (and
      did not flag): over `scored_in_both`, a fraction of ids.
    scored_in_both: distinct ids scored today and by the baseline.
    reviewed: today's flagged rows a `keep` decision covers (counted in
      none of the above).
  """

  new: int = 0
  persistent: int = 0
  resolved: int = 0
  not_scored: int = 0
  new_rows: int = 0
  regressions: int = 0
  scored_in_both: int = 0
  reviewed: int = 0

  def merge(self, other: "HistoryCounts") -> "HistoryCounts":
    return HistoryCounts(*(a + b for a, b in zip(
        dataclasses.astuple(self), dataclasses.astuple(other))))

  def to_dict(self, ids_known: bool = True) -> Dict[str, Optional[int]]:
    """`summary.json` → `flagged`'s history counts; without the baseline's
    scored ids (`ids_known` false), `new_rows`, `regressions` and
    `scored_in_both` are None."""
    def known(value: int) -> Optional[int]:
      return value if ids_known else None

    return {"new": self.new, "persistent": self.persistent,
            "resolved": self.resolved,
            "baseline_not_scored": self.not_scored,
            "new_rows": known(self.new_rows),
            "regressions": known(self.regressions),
            "scored_in_both": known(self.scored_in_both),
            "reviewed": self.reviewed}


class BucketHistory(NamedTuple):
  """What `join_bucket` gives.

  Attributes:
    flagged: today's flagged rows with `HISTORY_FIELDS` added.
    resolved: rows of `RESOLVED_SCHEMA`.
    counts: their `HistoryCounts`.
  """

  flagged: pa.Table
  resolved: pa.Table
  counts: HistoryCounts


def baseline_rows(table: pa.Table, baseline_run_id: str) -> pa.Table:
  """A baseline's `flagged/` rows as `BASELINE_SCHEMA`.

  Without history columns (a baseline from before flag history), each flag
  was first flagged by `baseline_run_id`, once.
  """
  n = table.num_rows
  names = table.schema.names
  first = (table.column("first_flagged") if "first_flagged" in names
           else pa.array([baseline_run_id] * n, pa.string()))
  times = (table.column("times_flagged") if "times_flagged" in names
           else pa.array(np.ones(n, np.int64)))
  return pa.table([table.column("id"), table.column("reasons"),
                   table.column("loss").cast(pa.float64()), first, times],
                  schema=BASELINE_SCHEMA)


def _first_per_id(table: pa.Table) -> pa.Table:
  """One row per id, the first (ids may repeat in a dataset)."""
  ids = table.column("id").to_numpy(zero_copy_only=False)
  if len(ids) == 0:
    return table
  _, first = np.unique(ids.astype(object).astype(str), return_index=True)
  if len(first) == len(ids):
    return table
  return table.take(pa.array(np.sort(first)))


def _count_distinct(ids: pa.ChunkedArray, rows: np.ndarray) -> int:
  """Distinct ids among `rows` `(N,)` bool of `ids` `(N,)`."""
  return len(_distinct(ids.filter(pa.array(rows))))


def _distinct(ids: pa.ChunkedArray) -> pa.Array:
  return pc.unique(ids.combine_chunks() if isinstance(
      ids, pa.ChunkedArray) else ids)


def join_bucket(flagged: pa.Table, baseline: pa.Table,
                scored: Optional[pa.Table], run_id: str,
                baseline_ids: Optional[pa.Table] = None,
                decided: Optional[Decisions] = None) -> BucketHistory:
  """Today's flags of one bucket of ids against the baseline's.

  Args:
    flagged: today's flagged rows `(F,)` (the `flagged/` schema).
    baseline: the baseline's flags `(B,)`, `BASELINE_SCHEMA`.
    scored: today's scored `(id, loss)` `(S,)` of this bucket; may be None
      when `baseline` and `baseline_ids` are empty.
    run_id: this run's id, the `first_flagged` of a new flag.
    baseline_ids: the ids the baseline scored `(I,)` of this bucket
      (`SCORED_IDS_SCHEMA`), or None when unknown (`in_baseline` is then
      null).
    decided: the decisions in force, or None: a flagged row with a `keep`
      decision on its given label of today is `reviewed`, counted neither
      new (nor a regression or new row) nor persistent.
  """
  baseline = _first_per_id(baseline)
  at = pc.index_in(flagged.column("id"), value_set=baseline.column("id"))
  found = pc.is_valid(at).to_numpy(zero_copy_only=False)
  index = np.asarray(pc.fill_null(at, 0).to_numpy(zero_copy_only=False),
                     np.int64)
  status = np.where(found, PERSISTENT, NEW).astype(object)
  given = (np.asarray(pc.fill_null(flagged.column("given_label"), -1
                                   ).to_numpy(zero_copy_only=False), np.int64)
           if "given_label" in flagged.schema.names else None)
  seen = decisions.reviewed(decided, flagged.column("id").combine_chunks()
                            if flagged.num_rows else pa.array([], pa.string()),
                            given)
  status[seen] = REVIEWED
  if baseline.num_rows:
    first = baseline.column("first_flagged").take(pa.array(index))
    times = baseline.column("times_flagged").take(
        pa.array(index)).to_numpy(zero_copy_only=False)
    first = pc.if_else(pa.array(found), first, run_id)
    times = np.where(found, times + 1, 1)
  else:
    first = pa.array([run_id] * flagged.num_rows, pa.string())
    times = np.ones(flagged.num_rows, np.int64)
  counts = HistoryCounts(new=int((~found & ~seen).sum()),
                         persistent=int((found & ~seen).sum()),
                         reviewed=int(seen.sum()))
  if baseline_ids is None:
    in_baseline = pa.nulls(flagged.num_rows, pa.bool_())
  else:
    known = _distinct(baseline_ids.column("id"))
    was_scored = pc.is_in(flagged.column("id"), value_set=known).to_numpy(
        zero_copy_only=False)
    in_baseline = pa.array(was_scored)
    ids = flagged.column("id")
    counts.regressions = _count_distinct(ids, ~found & ~seen & was_scored)
    counts.new_rows = _count_distinct(ids, ~found & ~seen & ~was_scored)
    if scored is not None and len(known):
      counts.scored_in_both = int(pc.sum(pc.is_in(
          _distinct(scored.column("id")), value_set=known)).as_py() or 0)
  annotated = flagged
  for field, values in zip(HISTORY_FIELDS, (
      pa.array(status.astype(str), pa.string()), first,
      pa.array(times.astype(np.int64)), in_baseline)):
    annotated = annotated.append_column(field, values)
  resolved = RESOLVED_SCHEMA.empty_table()
  gone = ~pc.is_in(baseline.column("id"),
                   value_set=flagged.column("id")).to_numpy(
                       zero_copy_only=False)
  if gone.any():
    candidates = baseline.filter(pa.array(gone))
    scored = scored if scored is not None else SCORED_SCHEMA.empty_table()
    where = pc.index_in(candidates.column("id"),
                        value_set=scored.column("id"))
    was_scored = pc.is_valid(where)
    kept = candidates.filter(was_scored)
    counts.resolved = kept.num_rows
    counts.not_scored = candidates.num_rows - kept.num_rows
    resolved = pa.table([
        kept.column("id"),
        scored.column("loss").take(pc.drop_null(where)),
        kept.column("reasons"), kept.column("loss"),
        kept.column("first_flagged"), kept.column("times_flagged")],
        schema=RESOLVED_SCHEMA)
  return BucketHistory(annotated, resolved, counts)
