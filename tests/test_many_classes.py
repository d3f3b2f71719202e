"""1,000 to 10,000 classes: the sparse joint gives cleanlab's answer, in
bounded memory and bounded outputs.

The dense steps of cleanlab (its calibration, `_keep_at_least_n_per_class`,
`find_label_issues`) are the expectations; numpy's own `np.sum` is that of
the order-exact sum.
"""

import json
import os
import tracemalloc

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cleanlab.count import calibrate_confident_joint, compute_confident_joint
from cleanlab.filter import _keep_at_least_n_per_class, find_label_issues

from lossaudit import confident
from lossaudit.confident import CellCounts
from lossaudit.flag_counts import FlagCounts, LabelPair
from lossaudit.label_rules import LabelRules
from lossaudit.pipelines import audit
from lossaudit.rules import Thresholds
from lossaudit.summary import RunContext, RunStatistics, build_summary
from tests.browser import CHROMIUM, open_page
from tests.helpers import (
  confident_pieces,
  predictions_config,
  report_data,
  run_audit,
  write_predictions,
)


def many_class_probs(n, k, seed, noise=0.1):
  """Probabilities `(N, K)` float32 of a decent model over `k` classes whose
  sizes fall off as a power law (a few large classes, many small ones), and
  labels with `noise` flipped to the next class.

  Returns:
    `(probs, given, truth)`.
  """
  rng = np.random.default_rng(seed)
  sizes = 1.0 / np.arange(1, k + 1) ** 0.6
  truth = rng.choice(k, size=n, p=sizes / sizes.sum())
  probs = np.empty((n, k), np.float32)
  for lo in range(0, n, 2000):  # A few hundred MB at a time at most.
    rows = np.arange(lo, min(n, lo + 2000))
    weights = rng.exponential(size=(len(rows), k)).astype(np.float32)
    weights **= 4  # Most of the mass on few classes.
    weights[np.arange(len(rows)), truth[rows]] += rng.uniform(
        0, 8 * k / 100, len(rows)).astype(np.float32)
    confusable = (truth[rows] + 1) % k
    weights[np.arange(len(rows)), confusable] += rng.uniform(
        0, 3 * k / 100, len(rows)).astype(np.float32)
    probs[rows] = weights / weights.sum(axis=1, keepdims=True)
  given = truth.copy()
  flip = rng.random(n) < noise
  given[flip] = (truth[flip] + 1) % k
  return probs, given, truth


@pytest.mark.parametrize("length", [7, 128, 129, 1000, 70_001, 3_000_017])
def test_the_sparse_sum_is_numpys_sum_bit_for_bit(length):
  rng = np.random.default_rng(length)
  positions = np.unique(rng.integers(0, length, max(1, length // 50)))
  values = rng.random(len(positions)) * rng.integers(1, 1000,
                                                     len(positions)) / 7
  dense = np.zeros(length)
  dense[positions] = values
  assert confident.dense_order_sum(positions, values, length) == np.sum(dense)


def _small_classes_joint(k, seed):
  """A raw joint of a few cells a row, diagonal at least 1, and label
  counts of 1 to 11: many calibrated cells are exact halves."""
  rng = np.random.default_rng(seed)
  raw = np.zeros((k, k), np.int64)
  for g in range(k):
    raw[g, rng.choice(k, rng.integers(1, 5), replace=False)] = (
        rng.integers(1, 4))
  np.fill_diagonal(raw, np.clip(raw.diagonal(), 1, None))
  return raw, rng.integers(1, 12, k)


@pytest.mark.parametrize("k,seed", [(50, 4), (50, 10), (50, 21), (400, 3)])
def test_calibration_and_prune_counts_equal_cleanlab_on_halves(
    k, seed, monkeypatch):
  """Where a calibrated cell is a half, the last bit of the joint's sum
  decides its rounding: the sparse steps match cleanlab's dense ones cell
  for cell, and (the first three cases) a sum in another order does not."""
  raw, label_counts = _small_classes_joint(k, seed)
  expected = calibrate_confident_joint(
      raw, np.repeat(np.arange(k), label_counts))
  found = confident.calibrated_joint(confident.CellCounts.from_dense(raw),
                                     label_counts)
  np.testing.assert_array_equal(found.to_dense(), expected)
  prune = _keep_at_least_n_per_class(expected.T, 1, frac_noise=1.0).T
  prune[label_counts <= 1] = 0
  np.fill_diagonal(prune, 0)
  np.testing.assert_array_equal(
      confident.prune_counts(found, label_counts).to_dense(), prune)
  assert (prune > 0).sum() > k // 2
  if k == 50:
    monkeypatch.setattr(confident, "dense_order_sum",
                        lambda positions, values, n: np.sum(values[::-1]))
    reordered = confident.calibrated_joint(
        confident.CellCounts.from_dense(raw), label_counts)
    assert (reordered.to_dense() != expected).any()


@pytest.mark.parametrize("k,n", [
    (1000, 20_000), pytest.param(10_000, 20_000, marks=pytest.mark.slow)])
def test_label_issues_equal_cleanlab(k, n):
  probs, given, _ = many_class_probs(n, k, seed=k)
  ids = np.char.add("m", np.char.zfill(np.arange(n).astype(str), 6)
                    ).astype(object)
  thresholds, raw, counts = confident_pieces(probs, given, k, batches=4)
  joint = confident.calibrated_joint(raw, counts)
  expected_joint = compute_confident_joint(given, probs, calibrate=True)
  np.testing.assert_array_equal(joint.to_dense(), expected_joint)
  assert joint.total() == n
  # confident_learning.
  mask, _ = confident.issue_mask(probs, given, ids, thresholds)
  expected = find_label_issues(given, probs, filter_by="confident_learning")
  assert expected.sum() > n // 40
  np.testing.assert_array_equal(mask, expected)
  # prune_by_noise_rate: the cells' top n over three bundles.
  prune = confident.prune_counts(joint, counts)
  best = {}
  bundles = [confident.CellCandidates(prune) for _ in range(3)]
  for index, rows in enumerate(np.array_split(np.arange(n), 7)):
    bundles[index % 3].add(probs[rows], given[rows], ids[rows])
  for bundle in bundles:
    for cell, top_n, values, kept in bundle.cells():
      old = best.get(cell, (np.zeros(0), np.zeros(0, object)))
      merged_values = np.concatenate([old[0], values])
      merged_ids = np.concatenate([old[1], kept])
      order = np.lexsort((merged_ids, -merged_values))[:top_n]
      best[cell] = (merged_values[order], merged_ids[order])
  last = {cell: (v[-1], i[-1]) for cell, (v, i) in best.items()}
  mask, _ = confident.issue_mask(probs, given, ids, thresholds, cells=last)
  expected = find_label_issues(given, probs, filter_by="prune_by_noise_rate")
  assert expected.sum() > n // 40
  np.testing.assert_array_equal(mask, expected)


def test_the_joint_and_the_ranking_take_memory_in_cells_not_k_squared():
  """At K = 10,000 a dense joint is 800 MB; the sparse steps, from the
  accumulators to the cell ranking, take a few MB."""
  k, n = 10_000, 4_000
  rng = np.random.default_rng(0)
  given = rng.integers(0, k, n)
  guess = np.where(rng.random(n) < 0.2, rng.integers(0, k, n), given)
  tracemalloc.start()
  try:
    raw = confident.joint_counts(given, guess, np.ones(n, bool), k)
    raw = raw.merge(confident.CellCounts.empty(k))
    counts = np.bincount(given, minlength=k)
    joint = confident.calibrated_joint(raw, counts)
    prune = confident.prune_counts(joint, counts)
    candidates = confident.CellCandidates(prune)
    _, peak = tracemalloc.get_traced_memory()
  finally:
    tracemalloc.stop()
  assert joint.total() == n and len(joint.cells) < 2 * k
  assert len(prune.cells) > 100
  assert peak < 40e6, peak  # The dense K×K joint alone: 800e6.
  del candidates


def _predictions(path, n, k, seed, shards=2):
  """Writes `shards` Parquet files of `id`, `label` and probabilities `p`;
  returns `(probs, given, ids)`."""
  probs, given, _ = many_class_probs(n, k, seed)
  ids = np.char.add("r", np.char.zfill(np.arange(n).astype(str), 6))
  os.makedirs(path, exist_ok=True)
  for shard, rows in enumerate(np.array_split(np.arange(n), shards)):
    pq.write_table(pa.table({
        "id": ids[rows], "label": given[rows],
        "p": pa.FixedSizeListArray.from_arrays(
            pa.array(probs[rows].reshape(-1)), k)}),
        os.path.join(path, f"part-{shard}.parquet"), row_group_size=1000)
  return probs, given, ids


@pytest.fixture(scope="module")
def thousand_classes(tmp_path_factory):
  root = tmp_path_factory.mktemp("thousand")
  return root, _predictions(str(root / "data"), 20_000, 1000, seed=7)


@pytest.fixture(scope="module")
def ten_thousand_classes(tmp_path_factory):
  root = tmp_path_factory.mktemp("ten_thousand")
  names = [f"class number {k:05d}" for k in range(10_000)]
  (root / "vocabulary.txt").write_text("\n".join(names) + "\n")
  return root, _predictions(str(root / "data"), 20_000, 10_000, seed=8), names


def _audit(root, out, method, workers, write_config, **input_section):
  config = predictions_config(
      root / "data" / "*.parquet", out,
      input=input_section,
      flag={"loss_threshold": None, "label_issues": method})
  argv = ["--config", write_config(config, f"{out.name}.yaml")]
  if workers > 1:
    argv += [f"--direct_num_workers={workers}",
             "--direct_running_mode=multi_processing"]
  return audit.run(argv)


def _label_issue_ids(out):
  flagged = pd.read_parquet(out / "flagged")
  return set(flagged["id"])


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("method", ["confident_learning",
                                    "prune_by_noise_rate"])
def test_a_thousand_classes_equal_cleanlab(thousand_classes, tmp_path,
                                           write_config, method, workers):
  root, (probs, given, ids) = thousand_classes
  out = tmp_path / "out"
  summary = _audit(root, out, method, workers, write_config)
  expected = set(ids[find_label_issues(given, probs, filter_by=method)])
  assert len(expected) > 500
  assert _label_issue_ids(out) == expected
  issues = summary["label_issues"]
  # Up to 1,000 classes, the per-class lists stay in summary.json.
  assert len(issues["thresholds"]) == 1000 and issues["confident_joint"] is None
  joint = pd.read_parquet(out / "label_issues" / "joint.parquet")
  assert joint["count"].sum() == issues["joint_total"] == len(given)
  np.testing.assert_array_equal(
      np.bincount(joint["given"], weights=joint["count"], minlength=1000),
      np.bincount(given, minlength=1000))


@pytest.mark.slow  # 4 runs of 20,000 rows × 10,000 probabilities (~6 min).
def test_ten_thousand_classes_equal_cleanlab_with_bounded_outputs(
    ten_thousand_classes, tmp_path, write_config):
  """One test for the 4 runs: one worker holds the 800 MB of probabilities
  and cleanlab's copies, never two at once."""
  root, (probs, given, ids), names = ten_thousand_classes
  for method in ("confident_learning", "prune_by_noise_rate"):
    expected = set(ids[find_label_issues(given, probs, filter_by=method)])
    assert len(expected) > 500
    for workers in (1, 2):
      out = tmp_path / f"{method}-{workers}"
      summary = _audit(root, out, method, workers, write_config,
                       label_vocabulary=str(root / "vocabulary.txt"))
      assert _label_issue_ids(out) == expected, (method, workers)
      _check_bounded_outputs(out, summary, probs, given, names, expected,
                             render_page=workers == 1)


def _check_bounded_outputs(out, summary, probs, given, names, expected,
                           render_page):
  k = len(names)
  assert os.path.getsize(out / "summary.json") <= 1_000_000
  assert os.path.getsize(out / "report.html") <= 5_000_000
  issues = json.loads((out / "summary.json").read_text())["label_issues"]
  assert issues["num_classes"] == k
  assert issues["thresholds"] is None and issues["class_names"] is None
  # The top cells: the largest off-diagonal counts of cleanlab's joint.
  dense = compute_confident_joint(given, probs, calibrate=True)
  np.fill_diagonal(dense, 0)
  top = issues["top_cells"]
  assert len(top) == 100
  assert [cell["count"] for cell in top] == sorted(
      dense.reshape(-1), reverse=True)[:100]
  assert all(dense[c["given"], c["suggested"]] == c["count"] for c in top)
  assert top[0]["given_name"] == names[top[0]["given"]]
  joint = pd.read_parquet(out / "label_issues" / "joint.parquet")
  assert joint["count"].sum() == issues["joint_total"] == len(given)
  assert (joint["suggested_name"] == [names[j] for j in joint["suggested"]]
          ).all()
  classes = pd.read_parquet(out / "label_issues" / "classes.parquet")
  assert len(classes) == k
  np.testing.assert_array_equal(classes["label_count"],
                                np.bincount(given, minlength=k))
  assert classes["label_issues"].sum() == len(expected)
  pairs = pd.read_parquet(out / "label_issues" / "pairs.parquet")
  assert pairs["label_issues"].sum() == len(expected)
  assert (pairs["given_name"] == [names[k] for k in pairs["given"]]).all()
  assert summary["files"]["label_issues"] == [
      str(out / "label_issues" / name)
      for name in ("joint.parquet", "classes.parquet", "pairs.parquet")]
  page = (out / "report.html").read_text()
  heat_map = report_data(page)["heatMap"]
  assert len(heat_map["classes"]) == 30
  assert len(heat_map["cells"]) <= 30 * 30
  assert "class number" in page  # Named by the vocabulary.
  if render_page and CHROMIUM:
    with open_page(out / "report.html") as browser:
      assert browser.evaluate('document.querySelectorAll('
                              '"#label-issue-pairs tr").length') == 1 + 50
      assert browser.errors() == []


def test_a_rerun_without_label_issues_removes_their_files(tmp_path,
                                                          write_config):
  probs, given, _ = many_class_probs(400, 5, seed=1)
  (tmp_path / "data").mkdir()
  write_predictions(tmp_path / "data" / "part-0.parquet",
                    [f"x{i}" for i in range(400)], given, probs)
  out = tmp_path / "out"
  with_issues = predictions_config(
      tmp_path / "data" / "*.parquet", out,
      flag={"loss_threshold": None, "label_issues": "confident_learning"})
  first = audit.run(["--config", write_config(with_issues, "a.yaml")])
  joint = pd.read_parquet(out / "label_issues" / "joint.parquet")
  assert joint["count"].sum() == first["label_issues"]["joint_total"] == 400
  assert first["label_issues"]["confident_joint"] == (
      joint.pivot_table(index="given", columns="suggested", values="count",
                        fill_value=0).reindex(index=range(5), columns=range(5),
                                              fill_value=0).values.tolist())
  without = predictions_config(tmp_path / "data" / "*.parquet", out)
  second = audit.run(["--config", write_config(without, "b.yaml")])
  assert second["label_issues"] is None
  assert "label_issues" not in second["files"]
  assert not (out / "label_issues").exists()


def test_summary_json_stays_under_a_megabyte_at_ten_thousand_classes():
  """100,000 issues on distinct pairs (a 1M-example run with 10% noise at
  K = 10,000): `issues_by_pair` keeps the 10,000 with the most, and
  summary.json stays under 1 MB (every pair would make it 2.3 MB)."""
  k, pairs = 10_000, 100_000
  rng = np.random.default_rng(0)
  codes = rng.choice(k * k, size=3 * pairs, replace=False)
  codes = codes[codes // k != codes % k][:pairs]
  given, suggested = codes // k, codes % k
  diagonal = np.arange(k)
  joint = CellCounts.of_pairs(np.concatenate([diagonal, given]),
                              np.concatenate([diagonal, suggested]), k)
  label_counts = np.bincount(np.concatenate([diagonal, given]),
                             minlength=k).tolist()
  rules = LabelRules(
      method="confident_learning", thresholds=[0.5] * k,
      label_counts=label_counts, confident_joint=joint,
      noise_rate=[0.0] * k)
  statistics = RunStatistics(
      loss={"count": k + pairs, "nan_count": 0, "mean": 1.0,
            "quantiles": {"0.5": 1.0}},
      thresholds=Thresholds.of(label_issue=rules),
      flag_counts=FlagCounts(pairs, {"label_issue": pairs}, {
          LabelPair(int(g), int(s)): 1 for g, s in zip(given, suggested)}))
  document = build_summary(statistics, RunContext(
      config={"model": {}, "output": {"dir": "out"}},
      run={"runner": "DirectRunner", "run_id": "r", "start_time": 0.0}),
      seconds=1.0).document
  assert document["label_issues"]["thresholds"] is None
  assert len(document["label_issues"]["issues_by_pair"]) == 10_000
  assert document["label_issues"]["issue_pairs"] == pairs
  assert len(json.dumps(document, indent=2)) <= 1_000_000


def test_a_file_named_label_issues_is_refused_before_the_run(tmp_path,
                                                             capsys):
  """A user's plain file `label_issues` in output.dir (taken with
  `output.overwrite: true`) is refused before the run (it failed after the
  whole run, writing its files), and stays."""
  rng = np.random.default_rng(0)
  probs = rng.dirichlet(np.ones(3), size=60)
  write_predictions(tmp_path / "data.parquet",
                    [f"e{i}" for i in range(60)],
                    rng.integers(0, 3, 60), probs)
  out = tmp_path / "out"
  out.mkdir()
  (out / "label_issues").write_text("my notes\n")
  config = predictions_config(tmp_path / "data.parquet", out,
                              flag={"label_issues": "confident_learning"},
                              output={"overwrite": True})
  run_audit(config, exit_code=2)
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith(
      "lossaudit: error: output.dir:"), err[-3:]
  assert "label_issues" in err[0]
  assert (out / "label_issues").read_text() == "my notes\n"
  assert not os.path.exists(out / "summary.json")
