"""`model.select_checkpoint: heldout_loss`: each fold's checkpoint by its
mean held-out loss (`lossaudit.checkpoint_selection`), and end to end: the
label issues equal cleanlab's on the out-of-fold probabilities assembled
from each fold's best checkpoint (`tests/out_of_sample.py` trains them)."""

import numpy as np
import pytest
from cleanlab.filter import find_label_issues

from lossaudit import checkpoint_selection as cs
from lossaudit import cost
from lossaudit.folds import fold_of
from lossaudit.merging import merge_all
from lossaudit.pipelines import audit
from tests import out_of_sample
from tests.helpers import report_data, written_config

K = 5


def _sums(loss, fold, checkpoint, k=2, c=3):
  return cs.heldout_sums(np.asarray(loss, float), np.asarray(fold),
                         np.asarray(checkpoint), k, c)


def test_each_fold_takes_its_lowest_mean_heldout_loss():
  # Fold 0 (rows a, b): checkpoint 0 → (1 + 3) / 2 = 2, 1 → (0.5 + 2.5) / 2
  # = 1.5, 2 → (2 + 2) / 2 = 2. Fold 1 (row c): 0.2, 0.1, 0.3.
  loss = [1, 3, 0.5, 2.5, 2, 2, 0.2, 0.1, 0.3]
  fold = [0, 0, 0, 0, 0, 0, 1, 1, 1]
  checkpoint = [0, 0, 1, 1, 2, 2, 0, 1, 2]
  selection = cs.select(_sums(loss, fold, checkpoint))
  assert selection.selected == [1, 1]
  assert selection.heldout_loss == [[2.0, 1.5, 2.0], [0.2, 0.1, 0.3]]
  assert selection.rows == [2, 1]


def test_a_tie_takes_the_first_checkpoint_and_an_empty_fold_its_first():
  selection = cs.select(_sums([1, 0.5, 0.5], [0, 0, 0], [0, 1, 2]))
  assert selection.selected == [1, 0]
  assert selection.heldout_loss[1] == [None, None, None]
  assert selection.rows == [1, 0]


def test_a_checkpoint_that_diverged_on_rows_is_never_selected():
  # Three rows; the third is non-finite at every checkpoint (a bad input).
  # Checkpoint 0 is also NaN on the second, where the others are finite:
  # its mean over the first row alone (0.1) is lowest, but it has more
  # non-finite losses than the others, so it is no candidate. Of the
  # others, checkpoint 1 (0.9 + 1.0) / 2 = 0.95 beats 2 (0.8 + 1.2) / 2.
  loss = [0.1, np.nan, np.inf, 0.9, 1.0, np.nan, 0.8, 1.2, np.nan]
  fold = [0] * 9
  checkpoint = [0, 0, 0, 1, 1, 1, 2, 2, 2]
  selection = cs.select(_sums(loss, fold, checkpoint))
  assert selection.selected[0] == 1
  assert selection.heldout_loss[0] == [0.1, 0.95, 1.0]


def test_sums_merge_in_any_grouping():
  rng = np.random.default_rng(0)
  n = 1000
  loss = rng.exponential(size=n)
  loss[rng.choice(n, 20, replace=False)] = np.nan
  fold, checkpoint = rng.integers(0, 3, n), rng.integers(0, 4, n)
  whole = cs.heldout_sums(loss, fold, checkpoint, 3, 4)
  parts = [cs.heldout_sums(loss[i:i + 97], fold[i:i + 97],
                           checkpoint[i:i + 97], 3, 4)
           for i in range(0, n, 97)]
  merged = merge_all([merge_all(parts[:5], cs.HeldoutSums.empty(3, 4)),
                      merge_all(parts[5:], cs.HeldoutSums.empty(3, 4))],
                     cs.HeldoutSums.empty(3, 4))
  np.testing.assert_allclose(merged.sums, whole.sums, rtol=1e-12)
  np.testing.assert_array_equal(merged.counts, whole.counts)
  np.testing.assert_array_equal(merged.non_finite, whole.non_finite)
  means = np.array([[np.nanmean(np.where((fold == k) & (checkpoint == c),
                                         loss, np.nan)) for c in range(4)]
                    for k in range(3)])
  np.testing.assert_allclose(cs.select(merged).heldout_loss, means,
                             rtol=1e-12)


def test_selected_rows():
  keep = cs.selected_rows(np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1]),
                          [1, 0])
  assert keep.tolist() == [False, True, True, False]


def test_an_empty_fold_is_warned_of(capsys):
  summary = {"examples_scored": 4, "examples_read": 4,
             "examples_dead_lettered": 0, "flagged": {"total": 0},
             "config": {"output": {"dir": "out"}},
             "folds": {"0": {"count": 4, "selected_checkpoint": "2"},
                       "1": {"count": 0, "selected_checkpoint": "1"}}}
  assert audit._report(summary) == 0  # pylint: disable=protected-access
  assert capsys.readouterr().err == (
      "lossaudit: warning: fold 1 has no rows, so no held-out loss to select"
      " its checkpoint by (is input.fold_column, or model.folds, what the"
      " training used?)\n")


# End to end -------------------------------------------------------------------


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  n = 600
  ids = np.array([f"ex-{i:05d}" for i in range(n)])
  return out_of_sample.build(
      str(tmp_path_factory.mktemp("fold-checkpoints")), folds=fold_of(ids, K),
      num_folds=K, n=n, fold_checkpoints=out_of_sample.CHECKPOINTS)


def _heldout_reference(data):
  """`(selected (K,), heldout (K, C))` from each fold checkpoint's own
  Keras predictions: the mean crossentropy `-log p(given)` of its fold."""
  probs = data.fold_checkpoint_probs.astype(np.float64)  # (C, N, K)
  n = len(data.ids)
  loss = -np.log(probs[:, np.arange(n), data.labels])
  heldout = np.array([[loss[c, data.folds == k].mean()
                       for c in range(len(probs))] for k in range(K)])
  return heldout.argmin(axis=1), heldout


def _audit(data, out, select, workers=1):
  summary, flagged, losses = out_of_sample.audit(
      data, out, {"path": data.fold_checkpoint_model, "folds": K,
                  "checkpoints": list(data.fold_checkpoints),
                  "select_checkpoint": select},
      {"loss_quantile": None, "label_issues": "prune_by_noise_rate"}, workers)
  return summary, set(flagged["id"]), losses


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_heldout_loss_label_issues_equal_cleanlab_on_the_best_checkpoints(
    data, tmp_path, workers):
  summary, issues, losses = _audit(data, tmp_path / "best", "heldout_loss",
                                   workers)
  selected, heldout = _heldout_reference(data)
  names = [str(c) for c in data.fold_checkpoints]
  for k in range(K):
    fold = summary["folds"][str(k)]
    assert fold["selected_checkpoint"] == names[selected[k]]
    np.testing.assert_allclose(list(fold["heldout_loss"].values()),
                               heldout[k], rtol=1e-5)
  n = len(data.ids)
  oof = data.fold_checkpoint_probs[selected[data.folds], np.arange(n)]
  expected = set(data.ids[find_label_issues(
      data.labels, oof, filter_by="prune_by_noise_rate")])
  assert issues == expected
  # Every row once, scored by its fold's selected checkpoint.
  assert summary["examples_scored"] == n
  # Each checkpoint's rows spilled and read back once, then the flagging,
  # joint and cells passes: as `lossaudit plan` counts them.
  c = len(data.fold_checkpoints)
  counters = summary["metrics"]["counters"]
  assert counters["spill_rows_written"] == c * n + n
  assert counters["spill_rows_reread"] == c * n + 3 * n
  plan = cost.plan_cost(written_config(summary), n, 5)
  assert plan.scratch_passes == 4
  np.testing.assert_allclose(
      losses["loss"], -np.log(oof[np.arange(n), data.labels]), rtol=1e-4,
      atol=1e-6)
  with open(tmp_path / "best" / "report.html", encoding="utf-8") as f:
    page = f.read()
  assert 'id="heldout-loss"' in page and 'id="heldout-losses"' in page
  heldout = report_data(page)["heldout"]
  assert [fold["selected"] for fold in heldout["folds"]] == [
      heldout["checkpoints"].index(found["selected_checkpoint"])
      for found in summary["folds"].values()]
  noisy = set(data.ids[data.noisy])
  _, last, _ = _audit(data, tmp_path / "last", "last")
  print(f"F1 against the injected noise: best checkpoints"
        f" {out_of_sample.f1(issues, noisy):.3f}, last"
        f" {out_of_sample.f1(last, noisy):.3f}")
  assert out_of_sample.f1(issues, noisy) > out_of_sample.f1(last, noisy)
