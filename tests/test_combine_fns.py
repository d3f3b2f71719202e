"""Every combiner of the pipeline, through `check_combine_fn` (no pipeline).

Each is run the ways a runner may (one accumulator; split, shipped through
the accumulator coder and merged, with an empty one), and checked against
numpy, sorting or counting done here: exact counts, sums, min and max;
quantiles within the sketch's rank error `epsilon`.
"""

import collections
import functools
import math

import numpy as np
import pyarrow as pa
import pytest

from lossaudit import confident, duplicates
from lossaudit.flag_counts import FlagCounts, LabelPair
from lossaudit.merging import merge_all
from lossaudit.timings import Timings
from lossaudit.transforms.label_issues import (
  CellTopNCombineFn,
  _JointCounts,
  _no_joint_counts,
)
from lossaudit.transforms.stats import (
  LossStatsCombineFn,
  TopKCombineFn,
  TopRowsCombineFn,
)
from tests.helpers import check_combine_fn

EPSILON = 0.01
QUANTILES = (0.25, 0.5, 0.9, 0.99)


# LossStatsCombineFn ----------------------------------------------------------


def _loss_batches(rng, n=6000):
  """`(batches, finite losses sorted, non-finite count)`: ties (2 decimals),
  non-finite values, an empty batch and an all-NaN batch among them."""
  values = np.round(rng.lognormal(size=n), 2)
  bad = rng.choice(n, 25, replace=False)
  values[bad] = rng.choice([np.nan, np.inf, -np.inf], bad.size)
  batches = np.array_split(values, np.sort(rng.choice(n, 16, replace=False)))
  batches[3:3] = [np.zeros(0), np.full(3, np.nan)]
  finite = np.sort(values[np.isfinite(values)])
  return batches, finite, bad.size + 3


def _assert_rank(finite, value, q, epsilon):
  """`value` is one of the sorted `finite` losses, ranked within `epsilon`
  of quantile `q`."""
  n = len(finite)
  lo = np.searchsorted(finite, value, side="left")
  hi = np.searchsorted(finite, value, side="right")
  assert hi > lo, f"quantile {q}: {value} is not one of the losses"
  # `value` holds ranks lo .. hi - 1; quantile q is rank q * (n - 1).
  target = q * (n - 1)
  distance = max(lo - target, target - (hi - 1), 0)
  assert distance <= epsilon * n + 1, (
      f"quantile {q}: {value} has ranks [{lo}, {hi}) of {n}, {distance}"
      f" from {target:.1f} (allowed {epsilon * n + 1:.1f})")


def _check_loss_stats(finite, epsilon):
  n = len(finite)

  def check(actual, expected):
    exact = {k: actual[k] for k in ("count", "nan_count", "min", "max",
                                    "epsilon")}
    assert exact == {k: expected[k] for k in exact}
    assert actual["mean"] == pytest.approx(expected["mean"], rel=1e-12)
    assert actual["std"] == pytest.approx(expected["std"], rel=1e-9)
    assert set(actual["quantiles"]) == expected["quantiles"]
    for key, value in actual["quantiles"].items():
      _assert_rank(finite, value, float(key), epsilon)
    _assert_rank(finite, actual["median"], 0.5, epsilon)
    # Half the losses lie within MAD of the median, up to the rank errors of
    # the median and of both ends (each epsilon), and the grid's step.
    distance = np.abs(finite - actual["median"])
    tolerance = 3 * epsilon + 2 / n
    assert np.mean(distance <= actual["mad"]) >= 0.5 - tolerance
    assert np.mean(distance < actual["mad"]) <= 0.5 + tolerance
    cdf = actual["cdf"]
    assert len(cdf) == 201 and cdf == sorted(cdf)
    for i, value in enumerate(cdf):
      _assert_rank(finite, value, i / 200, epsilon)

  return check


def test_loss_stats_against_numpy():
  batches, finite, non_finite = _loss_batches(np.random.default_rng(0))
  expected = {
      "count": finite.size, "nan_count": non_finite,
      "min": float(finite.min()), "max": float(finite.max()),
      "mean": float(finite.mean()), "std": float(finite.std()),
      "epsilon": EPSILON,
      "quantiles": {"0.25", "0.5", "0.9", "0.99"},  # Keys as in the config.
  }
  check_combine_fn(LossStatsCombineFn(EPSILON, QUANTILES), batches, expected,
                   check=_check_loss_stats(finite, EPSILON))


def _check_subset(actual, expected):
  assert {k: actual[k] for k in expected} == expected


@pytest.mark.parametrize("batches, nan_count", [
    ([], 0),
    ([np.zeros(0)], 0),
    ([np.array([np.nan, np.inf]), np.zeros(0), np.array([-np.inf])], 3),
], ids=["nothing", "an empty batch", "only non-finite"])
def test_loss_stats_of_no_finite_loss(batches, nan_count):
  expected = {"count": 0, "nan_count": nan_count, "mean": None, "std": None,
              "min": None, "max": None, "median": None, "mad": None,
              "quantiles": {"0.5": None, "0.99": None}, "cdf": [],
              "epsilon": EPSILON}
  check_combine_fn(LossStatsCombineFn(EPSILON, (0.5, 0.99)), batches,
                   expected, check=_check_subset)


# TopKCombineFn, TopRowsCombineFn ---------------------------------------------


def _scored_batches(rng, sizes=(7, 0, 31, 1, 18, 25, 12, 9)):
  """Scored batches with `id`, `score` (ties, NaN, ±inf) and `label`; the
  ids are unique, in no order."""
  n = sum(sizes)
  ids = np.array([f"r{i:03d}" for i in rng.permutation(n)])
  scores = np.round(rng.normal(size=n), 1)
  scores[rng.choice(n, 6, replace=False)] = [np.nan, np.nan, np.inf,
                                              -np.inf, -np.inf, np.nan]
  labels = rng.integers(0, 5, n)
  bounds = np.cumsum(sizes)[:-1]
  schema = pa.schema([("id", pa.string()), ("score", pa.float64()),
                      ("label", pa.int64())])
  return [pa.RecordBatch.from_pydict({"id": i.tolist(), "score": s,
                                      "label": y}, schema=schema)
          for i, s, y in zip(np.split(ids, bounds), np.split(scores, bounds),
                             np.split(labels, bounds))]


def _rows(batches):
  return [row for b in batches for row in b.to_pylist()]


@pytest.mark.parametrize("k", [1, 10, 1000])
def test_top_k_is_the_k_largest_finite_then_smaller_id(k):
  batches = _scored_batches(np.random.default_rng(1))
  finite = [(r["score"], r["id"]) for r in _rows(batches)
            if math.isfinite(r["score"])]
  expected = sorted(finite, key=lambda p: (-p[0], p[1]))[:k]
  assert len(expected) == min(k, len(_rows(batches)) - 6)
  check_combine_fn(TopKCombineFn(k, "score"), batches, expected)
  check_combine_fn(TopKCombineFn(k, "score"), [], [])


def _same_rows(actual, expected):
  assert [r["id"] for r in actual] == [r["id"] for r in expected]
  np.testing.assert_equal(actual, expected)  # NaN equals NaN here.


# k 0: report.max_rows 0 (no rows in the report).
@pytest.mark.parametrize("k", [0, 1, 6, 1000])
def test_top_rows_are_whole_rows_largest_first_nan_last(k):
  batches = _scored_batches(np.random.default_rng(2))
  rows = _rows(batches)
  expected = sorted(rows, key=lambda r: (
      math.isnan(r["score"]), 0 if math.isnan(r["score"]) else -r["score"],
      r["id"]))[:k]
  if k == 1000:  # Every row: +inf first, -inf before NaN at the end.
    assert expected[0]["score"] == np.inf and expected[-4]["score"] == -np.inf
    assert all(math.isnan(r["score"]) for r in expected[-3:])
  check_combine_fn(TopRowsCombineFn(k, "score"), batches, expected,
                   check=_same_rows)
  check_combine_fn(TopRowsCombineFn(k, "score"), [], [])


# CellTopNCombineFn ----------------------------------------------------------


@pytest.mark.parametrize("n", [1, 4, 12, 100])
def test_cell_top_n_extracts_the_nth_candidate(n):
  rng = np.random.default_rng(3)
  ids = iter(f"e{i:03d}" for i in rng.permutation(1000))
  inputs = []
  for size in (3, 0, 5, 1, 4, 2):  # Each bundle's candidates of one cell.
    values = np.round(rng.uniform(-1, 0, size), 1)
    inputs.append((n, values, np.array([next(ids) for _ in range(size)],
                                        dtype=object)))
  candidates = sorted(
      ((float(v), str(i)) for _, values, kept in inputs
       for v, i in zip(values, kept)), key=lambda p: (-p[0], p[1]))
  expected = candidates[min(n, len(candidates)) - 1]
  check_combine_fn(CellTopNCombineFn(), inputs, expected)
  check_combine_fn(CellTopNCombineFn(), [], None)


# Duplicate ids: one count per bucket, merged -------------------------------


def test_duplicates_merged_over_buckets_are_counted_exactly():
  rng = np.random.default_rng(5)
  # 400 ids, seen 1 to 4 times: more repeated ids than are listed.
  counts = {f"id-{i:03d}": int(c) for i, c in enumerate(
      rng.integers(1, 5, 400))}
  seen = [i for i, c in counts.items() for _ in range(c)]
  rng.shuffle(seen)
  buckets = collections.defaultdict(list)  # Disjoint, as hash buckets are.
  for i in seen:
    buckets[int(i[3:]) % 7].append(i)
  inputs = [duplicates.find_duplicates([pa.array(ids[:len(ids) // 2]),
                                        pa.array(ids[len(ids) // 2:])])
            for ids in buckets.values()]
  repeated = {i: c for i, c in counts.items() if c > 1}
  assert len(repeated) > duplicates.LISTED
  expected = duplicates.Duplicates(
      ids=len(repeated), rows=sum(repeated.values()),
      listed=sorted(((c, i) for i, c in repeated.items()),
                    key=lambda p: (-p[0], p[1]))[:duplicates.LISTED])
  merge = functools.partial(merge_all, empty=duplicates.Duplicates())
  check_combine_fn(merge, inputs, expected)
  check_combine_fn(merge, [], duplicates.Duplicates())


# Flag counts and timings: summed over batches ------------------------------


def test_flag_counts_sum_by_reason_and_pair():
  rng = np.random.default_rng(6)
  reasons = ("loss_quantile", "top_k", "label_issue", "non_finite")
  inputs, total = [], 0
  by_reason, by_pair = collections.Counter(), collections.Counter()
  for _ in range(15):  # One batch's counts each.
    n = int(rng.integers(1, 40))
    batch_reasons = {r: int(rng.integers(1, n + 1))
                     for r in rng.choice(reasons, 2, replace=False)}
    batch_pairs = {LabelPair(int(g), int(s)): int(rng.integers(1, 5))
                   for g, s in rng.integers(0, 3, (2, 2)) if g != s}
    inputs.append(FlagCounts(n, batch_reasons, batch_pairs))
    total += n
    by_reason.update(batch_reasons)
    by_pair.update(batch_pairs)
  expected = FlagCounts(total, dict(by_reason), dict(by_pair))
  merge = functools.partial(merge_all, empty=FlagCounts())
  check_combine_fn(merge, inputs, expected)
  check_combine_fn(merge, [], FlagCounts())


def test_timings_sum_batches_rows_seconds_and_keep_the_slowest():
  rng = np.random.default_rng(7)
  rows = rng.integers(1, 300, 23)
  seconds = rng.integers(1, 200, 23) / 64  # Binary fractions: sums exact.
  inputs = [Timings(batches=1, rows=int(r), seconds=float(s),
                    slowest=float(s)) for r, s in zip(rows, seconds)]
  expected = Timings(batches=23, rows=int(rows.sum()),
                     seconds=float(seconds.sum()), slowest=float(seconds.max()))
  merge = functools.partial(merge_all, empty=Timings())
  check_combine_fn(merge, inputs, expected)
  check_combine_fn(merge, [], Timings())


def test_joint_counts_and_margin_histograms_sum_over_batches():
  rng = np.random.default_rng(8)
  k, bins = 4, 8
  inputs, given_all, guess_all, cell_bin_all = [], [], [], []
  for _ in range(9):  # One batch's counts each.
    n = int(rng.integers(1, 30))
    given, guess = rng.integers(0, k, n), rng.integers(0, k, n)
    cell_bin = rng.integers(0, bins, (n, k))  # Row i, class j: its bin.
    joint = np.zeros((k, k), dtype=np.int64)
    np.add.at(joint, (given, guess), 1)
    histogram = np.zeros((k, k, bins), dtype=np.int64)
    for j in range(k):
      np.add.at(histogram, (given, j, cell_bin[:, j]), 1)
    inputs.append(_JointCounts(confident.CellCounts.from_dense(joint),
                               np.bincount(given, minlength=k),
                               np.asarray(n % 3, np.int64), histogram))
    given_all.append(given)
    guess_all.append(guess)
    cell_bin_all.append(cell_bin)
  given, guess = np.concatenate(given_all), np.concatenate(guess_all)
  cell_bin = np.concatenate(cell_bin_all)
  expected_histogram = np.zeros((k, k, bins), dtype=int)
  for row, g in enumerate(given):  # Counted row by row, independently.
    for j in range(k):
      expected_histogram[g, j, cell_bin[row, j]] += 1
  expected = (np.histogram2d(given, guess, bins=k, range=[[0, k], [0, k]]
                             )[0].astype(int),
              np.bincount(given, minlength=k),
              sum(len(g) % 3 for g in given_all), expected_histogram)

  def same(actual, expected):
    np.testing.assert_array_equal(actual.joint.to_dense(), expected[0])
    for field, want in zip(("labels", "non_finite", "margins"), expected[1:]):
      np.testing.assert_array_equal(getattr(actual, field), want, field)

  merge = functools.partial(merge_all, empty=_no_joint_counts(k, bins))
  check_combine_fn(merge, inputs, expected, check=same)
  empty = _no_joint_counts(k, bins)
  check_combine_fn(merge, [], (np.zeros((k, k)), empty.labels, 0,
                               np.zeros((k, k, bins))), check=same)
