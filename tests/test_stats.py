"""Loss statistics: moments and sketch quantiles against numpy, merged."""

import math
import os
import pickle

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from lossaudit.config import FlagConfig
from lossaudit.rules import Rows, Thresholds, flag_masks, rule_thresholds
from lossaudit.rules.top_k import TopKBound
from lossaudit.stats import (
  LossAccumulator,
  format_quantile,
  quantile_grid,
  top_k_merge,
)
from lossaudit.transforms.stats import (
  LossStats,
  SliceStatsCombineFn,
  TooManySlicesError,
  TopKCombineFn,
)

QUANTILES = (0.001, 0.01, 0.25, 0.5, 0.9, 0.99, 0.999)


def _assert_rank_error(values, summary, eps):
  values = np.sort(values)
  n = len(values)
  for q in QUANTILES:
    v = summary["quantiles"][format_quantile(q)]
    lo = np.searchsorted(values, v, side="left") / n
    hi = np.searchsorted(values, v, side="right") / n
    assert lo - eps <= q <= hi + eps, (q, v, lo, hi)


@pytest.mark.parametrize("eps", [0.01, 0.001])
def test_merged_accumulators_match_numpy(eps):
  rng = np.random.default_rng(0)
  batches = [rng.lognormal(size=n) for n in (5000, 1, 20000, 7777)]
  parts = [LossAccumulator(eps).add(b) for b in batches]
  # Round trip through pickle, as a runner does between workers.
  parts = [pickle.loads(pickle.dumps(p.compact())) for p in parts]
  merged = parts[0]
  for p in parts[1:]:
    merged.merge(p)
  values = np.concatenate(batches)
  summary = merged.summary(QUANTILES)
  assert summary["count"] == values.size
  assert math.isclose(summary["mean"], values.mean(), rel_tol=1e-12)
  assert math.isclose(summary["std"], values.std(), rel_tol=1e-10)
  assert summary["min"] == values.min() and summary["max"] == values.max()
  assert summary["epsilon"] == eps
  _assert_rank_error(values, summary, eps)


def test_non_finite_losses_are_counted_not_sketched():
  acc = LossAccumulator(0.01).add(np.array([1.0, np.nan, np.inf, 3.0, -np.inf]))
  summary = acc.summary([0.5])
  assert summary["nan_count"] == 3
  assert summary["count"] == 2
  assert summary["max"] == 3.0
  assert summary["mean"] == 2.0


def test_empty_accumulator():
  summary = LossAccumulator(0.01).summary([0.5])
  assert summary["count"] == 0
  assert summary["mean"] is None
  assert summary["quantiles"] == {"0.5": None}


def test_quantile_grid_puts_every_quantile_on_the_grid():
  assert quantile_grid([0.5, 0.99, 0.999], 0.001) == 1000
  assert quantile_grid([0.5], 0.01) == 100
  assert quantile_grid([0.25, 0.999], 0.0005) == 2000
  assert quantile_grid([1 / 3], 0.01) == 102
  q = 0.1234567891
  steps = quantile_grid([q], 0.001)
  assert steps >= 1000 and abs(round(q * steps) / steps - q) < 1e-6


def test_format_quantile():
  assert [format_quantile(q) for q in (0.99, 0.5, 0.001, 1.0, 0.0)] == [
      "0.99", "0.5", "0.001", "1", "0"]


def test_top_k_merge_breaks_ties_by_id():
  losses = np.array([1.0, 5.0, 5.0, 3.0, 5.0])
  ids = np.array(["a", "e", "b", "c", "d"], dtype=object)
  values, kept = top_k_merge(losses, ids, 3)
  np.testing.assert_array_equal(values, [5.0, 5.0, 5.0])
  assert list(kept) == ["b", "d", "e"]
  _, kept = top_k_merge(losses, ids, 2)
  assert list(kept) == ["b", "d"]
  values, kept = top_k_merge(losses, ids, 0)
  assert values.shape == (0,) and kept.shape == (0,)


def test_flag_masks():
  losses = np.array([0.1, 2.0, np.nan, 5.0, 3.0])
  ids = np.array(list("abcde"), dtype=object)
  masks = dict(flag_masks(Rows(None, losses, ids), Thresholds.of(
      loss_quantile=2.5, loss_threshold=1.0, top_k=TopKBound(3.0, "e"))))
  np.testing.assert_array_equal(masks["non_finite"], [0, 0, 1, 0, 0])
  np.testing.assert_array_equal(masks["loss_quantile"], [0, 0, 0, 1, 1])
  np.testing.assert_array_equal(masks["loss_threshold"], [0, 1, 0, 1, 1])
  np.testing.assert_array_equal(masks["top_k"], [0, 0, 0, 1, 1])


def test_rule_thresholds():
  summary = {"quantiles": {"0.9": 4.0}}
  flag = FlagConfig(loss_quantile=0.9, loss_threshold=2, top_k=2)
  thresholds = rule_thresholds(summary, flag,
                               top_k=[(9.0, "x"), (8.0, "y")])
  assert thresholds == Thresholds.of(loss_quantile=4.0, loss_threshold=2.0,
                                     top_k=TopKBound(8.0, "y"))
  assert thresholds.to_dict() == {
      "loss_quantile": 4.0, "loss_threshold": 2.0, "top_k": [8.0, "y"]}


def test_rules_without_a_value_are_listed_and_flag_nothing():
  summary = {"quantiles": {"0.9": None}, "median": None, "mad": None}
  flag = FlagConfig(loss_quantile=0.9, robust_z=3.0, top_k=2)
  thresholds = rule_thresholds(summary, flag, top_k=[])
  # robust_z needs a median: not in force without one.
  assert thresholds.to_dict() == {"loss_quantile": None, "top_k": None}
  masks = dict(flag_masks(Rows(None, np.array([1.0, np.nan]),
                               np.array(["a", "b"], dtype=object)),
                          thresholds))
  assert list(masks) == ["non_finite", "top_k"]
  np.testing.assert_array_equal(masks["top_k"], [0, 0])


def _batch(ids, losses, slices=None):
  arrays = {"id": pa.array(ids), "loss": pa.array(losses, pa.float64())}
  if slices is not None:
    arrays["__slice__"] = pa.array(slices)
  return pa.RecordBatch.from_pydict(arrays)


def test_loss_stats_transform_globally_and_per_slice():
  batches = [_batch(["a", "b", "c"], [1.0, 2.0, 3.0], ["x", "y", "x"]),
             _batch(["d", "e"], [4.0, 5.0], ["y", "y"])]
  with TestPipeline() as p:
    stats = (p | beam.Create(batches)
             | LossStats(0.01, [0.5], by_slice=True))
    assert_that(stats["global"] | beam.Map(lambda s: (s["count"], s["mean"])),
                equal_to([(5, 3.0)]), label="global")
    assert_that(stats["slices"] | beam.MapTuple(
        lambda k, s: (k, s["count"], s["max"])),
                equal_to([("x", 2, 3.0), ("y", 3, 5.0)]), label="slices")


def test_top_k_combine_fn_over_batches():
  batches = [_batch(["a", "b", "c"], [1.0, 9.0, 3.0]),
             _batch(["d", "e", "f"], [9.0, float("nan"), 2.0])]
  with TestPipeline() as p:
    top = p | beam.Create(batches) | beam.CombineGlobally(TopKCombineFn(3))
    assert_that(top, equal_to([[(9.0, "b"), (9.0, "d"), (3.0, "c")]]))


# --- stats.max_slices ---------------------------------------------------------


def test_slice_stats_hold_at_most_max_slices():
  batches = [_batch(["a", "b", "c"], [1.0, 2.0, 3.0], ["x", "y", "x"]),
             _batch(["d", "e"], [4.0, 5.0], ["y", "y"])]
  with TestPipeline() as p:
    stats = (p | beam.Create(batches)
             | LossStats(0.01, [0.5], by_slice=True, max_slices=2,
                         slice_name="group"))
    assert_that(stats["slices"] | beam.MapTuple(
        lambda k, s: (k, s["count"], s["max"])),
                equal_to([("x", 2, 3.0), ("y", 3, 5.0)]))
  fn = SliceStatsCombineFn(0.01, [0.5], "loss", 2, "group")
  held = fn.add_input(fn.create_accumulator(), batches[0])
  assert sorted(held) == ["x", "y"]
  with pytest.raises(TooManySlicesError) as e:
    fn.add_input(held, _batch(["f"], [6.0], ["z"]))
  assert str(e.value) == (
      "stats.slice_by: expected at most stats.max_slices (2) slices."
      " Received: column 'group' with more than 2 distinct values (3 so"
      " far); the run stopped before holding statistics for each. Slice by"
      " a coarser column or raise stats.max_slices")
  other = fn.add_input(fn.create_accumulator(), _batch(["g"], [7.0], ["w"]))
  with pytest.raises(TooManySlicesError, match=r"\(3 so far\)"):
    fn.merge_accumulators([fn.add_input(fn.create_accumulator(),
                                        batches[0]), other])
  again = pickle.loads(pickle.dumps(e.value))
  assert (type(again), str(again)) == (TooManySlicesError, str(e.value))


def _slice_run(tmp_path, classifier_path, write_config, slices, max_slices):
  """A config over a Parquet copy of 300 rows whose `group` is `slices`."""
  from lossaudit import datasets  # pylint: disable=g-import-not-at-top
  from tests.helpers import base_config, make_columns  # pylint: disable=g-import-not-at-top

  columns = dict(make_columns(300), group=np.array(slices))
  datasets.write_parquet(str(tmp_path / "data"), columns, num_shards=1)
  config = base_config(tmp_path / "data" / "*.parquet", classifier_path,
                       tmp_path / "out", stats={"slice_by": "group",
                                                "max_slices": max_slices})
  config["input"]["format"] = "parquet"
  return write_config(config)


@pytest.mark.parametrize("column, max_slices, found", [
    ("id", 1000, "64 distinct values in the first 64 records, one per record"),
    ("group", 2, "3 distinct values in the first 64 records"),
])
def test_a_slice_column_with_too_many_values_is_refused_before_the_run(
    tmp_path, tfrecord_dir, classifier_path, write_config, capsys, column,
    max_slices, found):
  from lossaudit.pipelines import audit  # pylint: disable=g-import-not-at-top
  from tests.helpers import base_config  # pylint: disable=g-import-not-at-top

  config = base_config(tfrecord_dir / "*.gz", classifier_path,
                       tmp_path / "out", stats={"slice_by": column,
                                                "max_slices": max_slices})
  assert audit.main(["--config", write_config(config)]) == 2
  assert capsys.readouterr().err == (
      "lossaudit: error: stats.slice_by: expected at most stats.max_slices"
      f" ({max_slices}) slices (each holds statistics in memory and"
      f" summary.json). Received: column {column!r} with {found}; slice by a"
      " coarser column or raise stats.max_slices\n")
  assert not (tmp_path / "out").exists()


def test_a_few_rows_each_with_its_own_slice_are_not_refused(
    tmp_path, classifier_path, write_config):
  from lossaudit.pipelines import audit  # pylint: disable=g-import-not-at-top

  # 300 rows in 40 slices: the first 64 rows hold 40 values, not 64.
  config = _slice_run(tmp_path, classifier_path, write_config,
                      [f"s{i % 40}" for i in range(300)], 40)
  summary = audit.run(["--config", config])
  assert sorted(summary["slices"]) == sorted(f"s{i}" for i in range(40))
  assert sum(s["count"] for s in summary["slices"].values()) == 300


def test_more_slices_than_max_slices_during_the_run_stop_it(
    tmp_path, classifier_path, write_config, capsys):
  from lossaudit.pipelines import audit  # pylint: disable=g-import-not-at-top

  # The first 64 rows hold 2 slices; the rest a slice each.
  slices = ["a" if i % 2 else "b" for i in range(64)] + [
      f"row-{i}" for i in range(64, 300)]
  config = _slice_run(tmp_path, classifier_path, write_config, slices, 10)
  assert audit.main(["--config", config]) == 1
  # Progress lines (of this run, or an earlier run of this process) aside.
  err = "".join(line for line in capsys.readouterr().err.splitlines(True)
                if " examples scored (" not in line)
  assert err.startswith(
      "lossaudit: error: stats.slice_by: expected at most stats.max_slices"
      " (10) slices. Received: column 'group' with more than 10 distinct"
      " values (11 so far); the run stopped before holding statistics for"
      " each. Slice by a coarser column or raise stats.max_slices")
  assert len(err.splitlines()) == 1
  # No summary.json, no shards: only the marker (and Beam's empty
  # temporary folders, which the next run clears).
  assert [os.path.relpath(os.path.join(d, n), tmp_path / "out")
          for d, _, names in os.walk(tmp_path / "out") for n in names] == [
              ".lossaudit-run.json"]
