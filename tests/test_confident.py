"""Confident learning pieces, merged over batches, against cleanlab itself."""

import numpy as np
import pytest
from cleanlab.count import compute_confident_joint, get_confident_thresholds
from cleanlab.filter import find_label_issues

from lossaudit import confident
from lossaudit.stats import top_k_merge
from tests.helpers import noisy_probs


def _pieces(probs, given, k, batches=3):
  parts = np.array_split(np.arange(len(given)), batches)
  sums, counts = np.zeros(k), np.zeros(k, dtype=int)
  for rows in parts:
    s, c = confident.self_confidence_sums(probs[rows], given[rows], k)
    sums, counts = sums + s, counts + c
  thresholds = confident.confident_thresholds(sums, counts)
  raw = np.zeros((k, k), dtype=int)
  for rows in parts:
    guess, ok = confident.confident_guess(probs[rows], thresholds)
    raw += confident.joint_counts(given[rows], guess, ok, k)
  return thresholds, raw, counts


def test_thresholds_and_joint_match_cleanlab():
  probs, given, _ = noisy_probs(5000, 6, 0.1, 0)
  thresholds, raw, counts = _pieces(probs, given, 6)
  np.testing.assert_allclose(thresholds,
                             get_confident_thresholds(given, probs), rtol=1e-6)
  np.testing.assert_array_equal(
      confident.calibrated_joint(raw, counts),
      compute_confident_joint(given, probs, calibrate=True))


@pytest.mark.parametrize("method", ["confident_learning",
                                    "prune_by_noise_rate"])
def test_issues_match_cleanlab(method):
  k = 7
  probs, given, _ = noisy_probs(6000, k, 0.1, 1)
  ids = np.char.add("id-", np.arange(len(given)).astype(str)).astype(object)
  thresholds, raw, counts = _pieces(probs, given, k)
  if method == "confident_learning":
    mask, _ = confident.issue_mask(probs, given, ids, thresholds)
  else:
    prune = confident.prune_counts(confident.calibrated_joint(raw, counts),
                                   counts)
    # A small buffer in one bundle makes it compact and raise floors often.
    bundles = [confident.CellCandidates(prune, buffer_limit=limit)
               for limit in (None, 500)]
    for index, rows in enumerate(np.array_split(np.arange(len(given)), 6)):
      bundles[index % 2].add(probs[rows], given[rows], ids[rows])
    best = {}
    for bundle in bundles:
      for cell, values, kept in bundle.cells():
        old = best.get(cell, (np.zeros(0), np.zeros(0, dtype=object)))
        best[cell] = top_k_merge(np.concatenate([old[0], values]),
                                     np.concatenate([old[1], kept]),
                                     int(prune[cell]))
    last = {cell: (v[-1], i[-1]) for cell, (v, i) in best.items() if len(v)}
    mask, _ = confident.issue_mask(probs, given, ids, thresholds, cells=last)
  expected = find_label_issues(given, probs, filter_by=method)
  assert mask.sum() > 100
  np.testing.assert_array_equal(mask, expected)


def test_round_preserving_sum():
  assert confident.round_preserving_sum(np.array([0.4, 0.4, 0.2])).sum() == 1
  np.testing.assert_array_equal(
      confident.round_preserving_sum(np.array([1.5, 2.5, 1.0])), [2, 2, 1])


def test_noise_rates_and_suggestions():
  joint = np.array([[8, 2], [1, 9]])
  np.testing.assert_allclose(confident.noise_rates(joint), [0.2, 0.1])
  probs = np.array([[0.1, 0.9], [0.6, 0.4]], dtype=np.float32)
  np.testing.assert_array_equal(
      confident.suggested_labels(probs, np.array([0, 0]), np.array([0.5, 0.5])),
      [1, 1])
