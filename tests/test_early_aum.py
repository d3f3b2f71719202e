"""`flag.label_issues: early_aum` (`lossaudit.early_aum`): its pieces, and
end to end against the plain numpy + cleanlab reference
(`tests/early_aum_reference.py`) on models `tests/out_of_sample.py` trains:
with folds and with a predictions column, on class-conditional noise, on
sklearn's digits with asymmetric noise, and where no checkpoint is usable."""

import os
import re

import numpy as np
import pytest
import tensorflow as tf
import yaml

from lossaudit import cost
from lossaudit import early_aum as ea
from lossaudit.config import AuditConfig
from lossaudit.errors import ConfigError
from lossaudit.folds import fold_of
from lossaudit.merging import merge_all
from lossaudit.pipelines import audit
from lossaudit.transforms.label_issues import (
  AumCandidates,
  SmallestAumCombineFn,
)
from tests import early_aum_reference as reference
from tests import out_of_sample
from tests.helpers import REPO, check_combine_fn, written_config

K = 5


def test_fit_counts_and_the_usable_checkpoints():
  # 4 rows, 2 classes, 3 checkpoints. Rows 1 and 3 are suspects (given 0
  # and 1). Checkpoint 0 predicts every given label but row 1's; 1 all but
  # rows 1 and 3; 2 every one. The out-of-sample argmax is right on rows 0
  # and 2 only.
  given = np.array([0, 0, 1, 1])
  oof = np.array([[.9, .1], [.4, .6], [.2, .8], [.7, .3]])
  correct = np.array([[1, 1, 1], [0, 0, 1], [1, 1, 1], [1, 0, 1]], bool)
  suspect = np.array([False, True, False, True])
  counts = ea.fit_counts(given, oof, correct, suspect)
  assert counts.suspects.tolist() == [1, 1]
  assert counts.suspects_fit.tolist() == [1, 0, 2]
  assert counts.correct.tolist() == [3, 2, 4]
  assert int(counts.oof_correct) == 2 and int(counts.rows) == 4
  rule = ea.decide(counts, ("a", "b", "c"), 0.5)
  # fit 1/2, 0, 1; accuracy 3/4, 1/2, 1 against the argmax's 2/4.
  assert rule.fit == [0.5, 0.0, 1.0]
  assert rule.accuracy == [0.75, 0.5, 1.0] and rule.oof_accuracy == 0.5
  assert rule.usable == [True, True, False] and not rule.fell_back
  margins = np.array([[1.0, 3.0, 9.0], [-2.0, -4.0, 9.0]])
  np.testing.assert_array_equal(rule.aum(margins), [2.0, -3.0])
  strict = ea.decide(counts, ("a", "b", "c"), 0.4)
  assert strict.usable == [False, True, False]
  assert ea.decide(counts, ("a", "b", "c"), 0.0).usable == [False, True,
                                                            False]


def test_a_checkpoint_with_more_non_finite_margins_is_not_usable():
  # 3 rows, all suspects; checkpoint 1 has one NaN margin (it diverged on
  # a row the others score), so is not usable though it fits no suspect.
  given, oof = np.array([0, 1, 0]), np.array([[.4, .6], [.7, .3], [.2, .8]])
  correct = np.array([[0, 0], [0, 0], [1, 0]], bool)
  margins = np.array([[-1.0, -1.0], [-2.0, np.nan], [1.0, -3.0]])
  counts = ea.fit_counts(given, oof, correct, np.ones(3, bool), margins)
  assert counts.non_finite.tolist() == [0, 1]
  rule = ea.decide(counts, ("a", "b"), 0.5)
  # fit 1/3 and 0; accuracy 1/3 and 0 against the argmax's 0.
  assert rule.usable == [True, False] and rule.non_finite == [0, 1]


def test_no_suspects_means_no_usable_checkpoint():
  counts = ea.fit_counts(np.array([0, 1]), np.array([[.9, .1], [.1, .9]]),
                         np.ones((2, 2), bool), np.zeros(2, bool))
  rule = ea.decide(counts, ("1", "2"), 0.5)
  assert rule.fit == [None, None] and rule.fell_back
  assert np.isnan(rule.aum(np.zeros((2, 2)))).all()


def test_fit_counts_merge_in_any_grouping():
  rng = np.random.default_rng(1)
  n, k, c = 500, 4, 3
  given = rng.integers(0, k, n)
  oof = rng.dirichlet(np.ones(k), n)
  correct = rng.random((n, c)) < 0.7
  suspect = rng.random(n) < 0.2
  whole = ea.fit_counts(given, oof, correct, suspect)
  parts = [ea.fit_counts(given[i:i + 60], oof[i:i + 60], correct[i:i + 60],
                         suspect[i:i + 60]) for i in range(0, n, 60)]
  empty = ea.FitCounts.empty(k, c)
  merged = merge_all([merge_all(parts[:3], empty), merge_all(parts[3:], empty)],
                     empty)
  for field in ("suspects", "suspects_fit", "correct", "oof_correct", "rows"):
    np.testing.assert_array_equal(getattr(merged, field),
                                  getattr(whole, field))


def _smallest_by_sorting(given, aum, hashes, caps):
  """Each class's `caps[j]` smallest `(aum, hash)` rows with `aum < 0`, by
  Python's sort of tuples."""
  flagged = set()
  for j in range(len(caps)):
    rows = sorted((aum[i], int(hashes[i]), i) for i in range(len(given))
                  if given[i] == j and aum[i] < 0)
    flagged |= {i for _, _, i in rows[:caps[j]]}
  return flagged


@pytest.mark.parametrize("buffer_limit", [None, 7])
def test_bundles_candidates_give_each_class_its_smallest_rows(buffer_limit):
  rng = np.random.default_rng(2)
  n, k = 3000, 4
  given = rng.integers(0, k, n)
  # Few distinct values: many ties, broken by the hash.
  aum = rng.integers(-6, 4, n).astype(np.float64) / 2
  hashes = rng.permutation(n).astype(np.uint64)  # Distinct, as ids are.
  hashes[:10] += np.uint64(1 << 63)  # Past int64.
  suspects = np.array([40, 0, 300, 1000])
  bundles = [ea.SmallestPerClass(suspects, buffer_limit)
             for _ in range(7)]
  for i, bundle in enumerate(bundles):
    rows = slice(i * n // 7, (i + 1) * n // 7)
    for lo in range(rows.start, rows.stop, 50):  # Batches of 50.
      hi = min(lo + 50, rows.stop)
      bundle.add(aum[lo:hi], given[lo:hi], hashes[lo:hi])
  below = sum(b.below_zero for b in bundles)
  np.testing.assert_array_equal(below,
                                np.bincount(given[aum < 0], minlength=k))
  emitted = [b.candidates() for b in bundles]
  for part in emitted:  # A bundle emits at most a class's suspects.
    assert (np.bincount(part[0], minlength=k) <= suspects).all()
  caps = np.minimum(below, suspects)
  cuts = ea.class_cuts(*(np.concatenate(p) for p in zip(*emitted)), caps)
  assert 1 not in cuts  # Class 1 has no suspect: it flags nothing.
  rule = ea.EarlyAumRule(("c",), [0.0], [1.0], 0.5, 0.5, suspects.tolist(),
                         below.tolist(), cuts)
  flagged = rule.mask(aum, given, hashes)
  assert set(np.flatnonzero(flagged)) == _smallest_by_sorting(
      given, aum, hashes, caps)
  assert flagged.sum() == caps.sum()


def test_the_bundles_candidates_combine_to_each_classs_smallest():
  rng = np.random.default_rng(3)
  n, k = 2000, 3
  given = rng.integers(0, k, n)
  aum = rng.normal(size=n).round(1)  # Ties, broken by the hash.
  hashes = rng.permutation(n).astype(np.uint64)
  limits = np.array([30, 0, 500])
  bundles = []
  for lo in range(0, n, 300):
    bundle = ea.SmallestPerClass(limits)
    bundle.add(aum[lo:lo + 300], given[lo:lo + 300], hashes[lo:lo + 300])
    bundles.append(AumCandidates(bundle.below_zero, *bundle.candidates(),
                                 limits))
  below = np.bincount(given[aum < 0], minlength=k)
  kept = _smallest_by_sorting(given, aum, hashes, limits)
  expected = (below.tolist(), sorted(int(hashes[i]) for i in kept))

  def check(actual, wanted):
    assert (actual.below_zero.tolist(),
            sorted(actual.id_hash.astype(int).tolist())) == wanted

  check_combine_fn(SmallestAumCombineFn(), bundles, expected, check)


def test_the_mask_never_flags_nan_and_a_class_without_a_cut():
  rule = ea.EarlyAumRule(("c",), [0.0], [1.0], 0.5, 0.5, [1, 1], [1, 0],
                         {0: ea.ClassCut(-1.0, 5)})
  aum = np.array([-1.0, -1.0, np.nan, -np.inf, -np.inf])
  given = np.array([0, 0, 0, 1, 0])
  hashes = np.array([5, 6, 0, 0, 0], np.uint64)
  assert rule.mask(aum, given, hashes).tolist() == [True, False, False,
                                                    False, True]


def test_summary_fields():
  rule = ea.EarlyAumRule(("1", "2"), [0.2, 0.9], [0.8, 1.0], 0.7, 0.5,
                         [3, 2], [1, 5])
  assert rule.to_dict() == {
      "checkpoints": ["1", "2"], "fit": [0.2, 0.9], "accuracy": [0.8, 1.0],
      "oof_accuracy": 0.7, "usable": [True, False], "fell_back": False,
      "max_fit": 0.5, "non_finite": None, "suspects": [3, 2],
      "below_zero": [1, 5], "flagged": [1, 2]}
  fell_back = ea.EarlyAumRule(("1",), [0.9], [1.0], 0.7, 0.5, [3, 2])
  assert fell_back.to_dict()["below_zero"] is None
  assert fell_back.to_dict()["flagged"] == [3, 2]  # The suspects.


# The config -------------------------------------------------------------------


def _config(model, flag=None, input_=None):
  return AuditConfig.from_dict({
      "input": {"pattern": "data/*.parquet", "format": "parquet",
                "id_column": "id", "label_column": "label", **(input_ or {})},
      "model": model, "flag": {"loss_quantile": None, **(flag or {})}})


FOLDS_AND_FULL = {"path": "m/fold{fold}.keras", "folds": 5,
                  "checkpoints": [1, 2, 4], "dynamics_path":
                  "m/full/epoch{checkpoint}.keras"}


def test_accepted_configs():
  config = _config(FOLDS_AND_FULL, {"label_issues": "early_aum"})
  assert config.model.path_groups() == tuple(
      (f"m/fold{k}.keras",) for k in range(5))
  assert config.model.dynamics_paths() == tuple(
      f"m/full/epoch{c}.keras" for c in (1, 2, 4))
  assert config.flag.early_aum_max_fit == 0.5
  config = _config({"predictions_column": "oof", "checkpoints": ["a", "b"],
                    "dynamics_path": "full/{checkpoint}", "signature":
                    "scores"}, {"label_issues": "early_aum",
                                "early_aum_max_fit": 0.3},
                   {"format": "parquet"})
  assert config.model.path_groups() == ()
  assert config.flag.early_aum_max_fit == 0.3
  both = _config({"path": "m/fold{fold}/epoch{checkpoint}.keras", "folds": 3,
                  "checkpoints": [1, 2], "select_checkpoint": "heldout_loss",
                  "dynamics_path": "m/full/epoch{checkpoint}.keras"},
                 {"label_issues": "early_aum"})
  assert both.model.paths(2) == ("m/fold2/epoch1.keras",
                                 "m/fold2/epoch2.keras")


@pytest.mark.parametrize("model, flag, message", [
    ({"path": "m/fold{fold}.keras", "folds": 5,
      "select_checkpoint": "heldout_loss"}, {},
     r"^model.select_checkpoint: 'heldout_loss' needs model.folds and"
     r" model.checkpoints, with \{fold\} and \{checkpoint\} in model.path"
     r" \(each fold's checkpoints are compared on its held-out rows\)."
     r" Received: model.path='m/fold\{fold\}.keras', folds=5,"
     r" checkpoints=None$"),
    ({"path": "m/epoch{checkpoint}.keras", "checkpoints": [1, 2],
      "select_checkpoint": "heldout_loss"}, {},
     r"^model.select_checkpoint: 'heldout_loss' needs model.folds .*"
     r" folds=None, checkpoints=\['1', '2'\]$"),
    ({"path": "m/fold{fold}.keras", "folds": 5, "checkpoints": [1, 2],
      "dynamics_path": "m/full/epoch{checkpoint}.keras",
      "select_checkpoint": "heldout_loss"}, {},
     r"^model.select_checkpoint: 'heldout_loss' needs model.folds and"
     r" model.checkpoints, with \{fold\} and \{checkpoint\} in model.path"),
    ({"path": "m/fold{fold}.keras", "folds": 5,
      "dynamics_path": "m/full/epoch{checkpoint}.keras"}, {},
     r"^model.dynamics_path: needs model.checkpoints \(the names filling"
     r" \{checkpoint\}\). Received: 'm/full/epoch\{checkpoint\}.keras'"
     r" with model.checkpoints=None$"),
    ({"path": "m/fold{fold}.keras", "folds": 5, "checkpoints": [1, 2],
      "dynamics_path": "m/full.keras"}, {},
     r"^model.dynamics_path: expected a path holding \{checkpoint\} \(once\)"
     r" and no other placeholder: the checkpoints of one model trained on"
     r" every row. Received: 'm/full.keras'$"),
    ({"path": "m/fold{fold}.keras", "folds": 5, "checkpoints": [1, 2],
      "dynamics_path": "m/e{checkpoint:03d}.keras"}, {},
     r"^model.dynamics_path: expected a path holding \{checkpoint\} \(once\)"
     r" and no other placeholder: .* Received: 'm/e\{checkpoint:03d\}.keras'$"),
    ({"path": "m/fold{fold}.keras", "folds": 5, "checkpoints": [1, 2],
      "dynamics_path": "m/{fold}/epoch{checkpoint}.keras"}, {},
     r"^model.dynamics_path: expected a path holding \{checkpoint\}"),
    ({"path": "m/fold{fold}.keras", "folds": 5}, {"label_issues": "early_aum"},
     r"^flag.label_issues: 'early_aum' needs model.dynamics_path \(the"
     r" checkpoints of a model trained on every row, \{checkpoint\} filled"
     r" from model.checkpoints\). Received: model.dynamics_path=None$"),
    ({"path": "m/all.keras", "checkpoints": [1, 2],
      "dynamics_path": "m/full/epoch{checkpoint}.keras"},
     {"label_issues": "early_aum"},
     r"^flag.label_issues: 'early_aum' needs out-of-sample probabilities"
     r" \(model.folds, or model.predictions_column holding out-of-fold"
     r" predictions\): in-sample probabilities memorise the noise."
     r" Received: model.path='m/all.keras' with model.folds=None$"),
    (FOLDS_AND_FULL, {"label_issues": "prune_by_noise_rate",
                      "early_aum_max_fit": 0.4},
     r"^flag.early_aum_max_fit: has no effect without flag.label_issues"
     r" 'early_aum' \(only that method reads it\). Received: 0.4$"),
    (FOLDS_AND_FULL, {"label_issues": "early_aum", "early_aum_max_fit": 1.5},
     r"^flag.early_aum_max_fit: expected a number in \[0, 1\]. Received:"
     r" 1.5$"),
    ({"predictions_column": "oof", "checkpoints": [1, 2]}, {},
     r"^model.checkpoints: needs model.path \(a predictions column is already"
     r" out-of-sample or one set of predictions\)"),
])
def test_refusals_name_the_key(model, flag, message):
  with pytest.raises(ConfigError, match=message):
    _config(model, flag)


def test_the_docs_configs_are_accepted():
  with open(os.path.join(REPO, "docs", "best-label-issues.md"),
            encoding="utf-8") as f:
    blocks = [b for b in re.findall(r"```yaml\n(.*?)```", f.read(), re.S)
              if not b.startswith("# ")]  # A `# FILE` block runs.
  assert len(blocks) == 2
  for block in blocks:
    raw = yaml.safe_load(block)
    config = _config(raw["model"], raw["flag"])
    assert config.model.checkpoints == ("1", "2", "4", "8", "16", "32", "40")


def test_a_refused_config_exits_2_with_one_line(tmp_path, capsys):
  path = tmp_path / "config.yaml"
  path.write_text(
      "input: {pattern: data/*.parquet, format: parquet, id_column: id}\n"
      "model: {path: 'm/fold{fold}.keras', folds: 5}\n"
      "flag: {label_issues: early_aum}\n")
  assert audit.main(["--config", str(path)]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith(
      "lossaudit: error: flag.label_issues: 'early_aum' needs"
      " model.dynamics_path")


# End to end -------------------------------------------------------------------


def _build(root, n, **kwargs):
  ids = np.array([f"ex-{i:05d}" for i in range(n)])
  return out_of_sample.build(str(root), folds=fold_of(ids, K), num_folds=K,
                             n=n, **kwargs)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
  """Gaussian clusters, 16% class-conditional noise (j → j + 1)."""
  return _build(tmp_path_factory.mktemp("pairs"), 1000, noise=0.16,
                noise_kind="pairs")


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
  """sklearn's digits, 20% asymmetric noise (j → j + 1)."""
  return _build(tmp_path_factory.mktemp("digits"), 1797, noise=0.2,
                noise_kind="pairs", dataset="digits")


def _reference(data, checkpoints=None, max_fit=0.5) -> reference.EarlyAum:
  """The reference on the saved models' own Keras predictions."""
  chosen = [data.checkpoints.index(c) for c in checkpoints or
            data.checkpoints]
  logits = data.checkpoint_logits.astype(np.float64)[chosen]  # (C, N, K)
  n, given = len(data.ids), data.labels
  others = np.where(np.arange(logits.shape[2]) == given[:, None], -np.inf,
                    logits)
  margins = logits[:, np.arange(n), given] - others.max(axis=2)
  preds = data.checkpoint_probs[chosen].argmax(axis=2)
  # FarmHash Fingerprint64 of each id's UTF-8 bytes.
  hashes = tf.fingerprint(tf.constant([i.encode() for i in data.ids])
                          ).numpy().view("<u8").reshape(-1)
  return reference.early_aum(given, data.oof_probs, margins, preds, hashes,
                             max_fit=max_fit)


def _audit(data, out, source, checkpoints=None, workers=1, **flag):
  model = {"checkpoints": list(checkpoints or data.checkpoints),
           "dynamics_path": data.checkpoint_model}
  if source == "folds":
    model.update(path=data.fold_model, folds=K)
  else:
    model.update(predictions_column="oof_probs")
  return out_of_sample.audit(
      data, out, model, {"loss_quantile": None, "label_issues": "early_aum",
                         **flag}, workers)


def _check_equal(data, tmp_path, source, expected, **audit):
  summary, flagged, losses = _audit(data, tmp_path / source, source, **audit)
  assert set(flagged["id"]) == set(data.ids[expected.flags])
  # Six passes over the spilled rows, as `lossaudit plan` counts them:
  # flagging, the joint, the cells, the fit, the ranking and losses/.
  n = len(data.ids)
  assert summary["metrics"]["counters"]["spill_rows_reread"] == 6 * n
  assert cost.scratch_passes(written_config(summary)) == 6
  found = summary["label_issues"]["early_aum"]
  assert found["usable"] == expected.usable.tolist()
  assert found["fell_back"] == expected.fell_back
  np.testing.assert_allclose(found["fit"], expected.fit)
  np.testing.assert_allclose(found["accuracy"], expected.accuracy)
  assert found["oof_accuracy"] == pytest.approx(expected.oof_accuracy)
  assert summary["flagged"]["by_reason"]["label_issue"] == (
      expected.flags.sum())
  with open(tmp_path / source / "report.html", encoding="utf-8") as f:
    page = f.read()
  assert 'id="early-aum-checkpoints"' in page
  assert 'id="early-aum-classes"' in page
  if expected.a is None:
    assert losses["early_aum"].isna().all()
  else:  # Float32 margins in the graph.
    np.testing.assert_allclose(losses["early_aum"], expected.a, atol=1e-5)
  return summary, flagged


@pytest.mark.slow
@pytest.mark.parametrize("source", ["folds", "predictions"])
def test_class_conditional_noise_equals_the_reference(pairs, tmp_path,
                                                      source):
  expected = _reference(pairs)
  assert not expected.fell_back
  _check_equal(pairs, tmp_path, source, expected)
  noisy = set(pairs.ids[pairs.noisy])
  suspects = set(pairs.ids[reference.suspects(pairs.labels,
                                              pairs.oof_probs)])
  early = out_of_sample.f1(pairs.ids[expected.flags], noisy)
  print(f"F1 against the injected noise: early AUM {early:.3f},"
        f" prune_by_noise_rate {out_of_sample.f1(suspects, noisy):.3f}")


@pytest.mark.slow
@pytest.mark.parametrize("source, workers", [("folds", 2),
                                             ("predictions", 1)])
def test_digits_with_asymmetric_noise_equals_the_reference(
    digits, tmp_path, source, workers):
  expected = _reference(digits)
  assert not expected.fell_back
  _check_equal(digits, tmp_path, source, expected, workers=workers)


@pytest.mark.slow
@pytest.mark.parametrize("source", ["folds", "predictions"])
def test_no_usable_checkpoint_falls_back_to_the_suspects(pairs, tmp_path,
                                                         source, capsys):
  late = [20, 40]  # Both fit the suspects' noisy labels.
  expected = _reference(pairs, late)
  assert expected.fell_back and not expected.usable.any()
  summary, flagged = _check_equal(pairs, tmp_path, source, expected,
                                  checkpoints=late)
  suspects = reference.suspects(pairs.labels, pairs.oof_probs)
  assert set(flagged["id"]) == set(pairs.ids[suspects])
  found = summary["label_issues"]["early_aum"]
  assert found["below_zero"] is None
  assert sum(found["flagged"]) == suspects.sum()
  assert ("lossaudit: warning: early_aum fell back to the prune_by_noise_rate"
          " suspects: no checkpoint of model.dynamics_path is usable"
          in capsys.readouterr().err)
