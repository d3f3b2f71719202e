"""Confident learning pieces, merged over batches, against cleanlab itself."""

import numpy as np
import pytest
from cleanlab.count import compute_confident_joint, get_confident_thresholds
from cleanlab.filter import find_label_issues

from lossaudit import confident
from lossaudit.stats import top_k_merge
from tests.helpers import confident_pieces, noisy_probs


def test_thresholds_and_joint_match_cleanlab():
  probs, given, _ = noisy_probs(5000, 6, 0.1, 0)
  thresholds, raw, counts = confident_pieces(probs, given, 6)
  np.testing.assert_allclose(thresholds,
                             get_confident_thresholds(given, probs), rtol=1e-6)
  np.testing.assert_array_equal(
      confident.calibrated_joint(raw, counts).to_dense(),
      compute_confident_joint(given, probs, calibrate=True))


def _cuts(probs, given, prune, batches=3):
  """Each cell's cut-off bin, the margin histograms summed over batches."""
  k = probs.shape[1]
  bins = confident.margin_bin_count(k)
  histogram = sum(confident.margin_histogram(probs[rows], given[rows], bins)
                  for rows in np.array_split(np.arange(len(given)), batches))
  return confident.cut_bins(histogram, prune), bins


def _bundles(probs, given, ids, prune, limits=(None, 500), batches=6,
             cuts=None):
  """Each bundle's `cells()`, the batches dealt over bundles (one per
  buffer limit)."""
  bundles = [confident.CellCandidates(prune, buffer_limit=limit, cuts=cuts)
             for limit in limits]
  for index, rows in enumerate(np.array_split(np.arange(len(given)),
                                              batches)):
    bundles[index % len(bundles)].add(probs[rows], given[rows], ids[rows])
  return [list(bundle.cells()) for bundle in bundles]


def _cells_over_bundles(probs, given, ids, prune, limits=(None, 500),
                        batches=6, cuts=None):
  """Each cell's n-th `(margin, id)`, the bundles' candidates merged as the
  shuffle would."""
  best = {}
  for cells in _bundles(probs, given, ids, prune, limits, batches, cuts):
    for cell, n, values, kept in cells:
      old = best.get(cell, (np.zeros(0), np.zeros(0, dtype=object)))
      best[cell] = top_k_merge(np.concatenate([old[0], values]),
                               np.concatenate([old[1], kept]), n)
  return {cell: (v[-1], i[-1]) for cell, (v, i) in best.items() if len(v)}


def _prune(probs, given, k):
  """The thresholds, and the prune counts (sparse, as the code takes them,
  and dense `(K, K)`, diagonal 0, to count on)."""
  thresholds, raw, counts = confident_pieces(probs, given, k)
  prune = confident.prune_counts(confident.calibrated_joint(raw, counts),
                                 counts)
  return thresholds, prune, prune.to_dense()


@pytest.mark.parametrize("method", ["confident_learning",
                                    "prune_by_noise_rate"])
def test_issues_match_cleanlab(method):
  k = 7
  probs, given, _ = noisy_probs(6000, k, 0.1, 1)
  ids = np.char.add("id-", np.arange(len(given)).astype(str)).astype(object)
  thresholds, prune, _ = _prune(probs, given, k)
  if method == "confident_learning":
    mask, _ = confident.issue_mask(probs, given, ids, thresholds)
  else:
    # A small buffer in one bundle makes it compact and raise floors often.
    last = _cells_over_bundles(probs, given, ids, prune,
                               cuts=_cuts(probs, given, prune))
    mask, _ = confident.issue_mask(probs, given, ids, thresholds, cells=last)
  expected = find_label_issues(given, probs, filter_by=method)
  assert mask.sum() > 100
  np.testing.assert_array_equal(mask, expected)


@pytest.mark.slow  # 12k rows of 40 classes, twice (~15 s).
@pytest.mark.parametrize("with_cuts", [True, False])
def test_prune_by_noise_rate_matches_cleanlab_with_many_classes(with_cuts):
  k = 40
  probs, given = _quantized_probs(12_000, k, 1 << 20, 5)  # Few ties.
  ids = np.char.add("r", np.arange(len(given)).astype(str)).astype(object)
  thresholds, prune, dense = _prune(probs, given, k)
  assert (dense > 0).sum() > 100  # Many cells.
  cuts = _cuts(probs, given, prune) if with_cuts else None
  assert not with_cuts or cuts[1] == 10  # 40 classes: 16384 // 40² bins.
  # Tiny buffers: batches are added in chunks of a few rows.
  last = _cells_over_bundles(probs, given, ids, prune,
                             limits=(None, 300, 41), batches=9, cuts=cuts)
  mask, _ = confident.issue_mask(probs, given, ids, thresholds, cells=last)
  expected = find_label_issues(given, probs, filter_by="prune_by_noise_rate")
  assert mask.sum() > 500
  np.testing.assert_array_equal(mask, expected)


def _quantized_probs(n, k, units, seed):
  """Probabilities in multiples of 1/units (exact in float32: few units, many
  tied margins), and labels 15% flipped to one of the next three classes."""
  rng = np.random.default_rng(seed)
  truth = rng.integers(0, k, n)
  weights = rng.gamma(0.3, size=(n, k))
  weights[np.arange(n), truth] += rng.uniform(1, 6, n)
  weights /= weights.sum(axis=1, keepdims=True)
  probs = (np.stack([rng.multinomial(units, w) for w in weights]) /
           units).astype(np.float32)
  given = truth.copy()
  flip = rng.random(n) < 0.15
  given[flip] = (truth[flip] + 1 + rng.integers(0, 3, flip.sum())) % k
  return probs, given


def test_prune_by_noise_rate_with_ties_is_a_cleanlab_answer():
  """With margins tied at a cell's n-th, cleanlab's answer depends on the
  order of the rows (`np.argsort` is not stable); ours takes the smaller id
  first in every bundle, so it is that rule's answer on all rows at once,
  whatever the bundles. Every other row is flagged as cleanlab flags it."""
  k, n = 30, 8000
  probs, given = _quantized_probs(n, k, 64, 0)
  ids = np.char.add("t", np.char.zfill(np.arange(n).astype(str), 5)
                    ).astype(object)
  thresholds, prune, dense = _prune(probs, given, k)
  last = _cells_over_bundles(probs, given, ids, prune,
                             limits=(None, 200, 1000), batches=11,
                             cuts=_cuts(probs, given, prune))
  mask, suggested = confident.issue_mask(probs, given, ids, thresholds,
                                         cells=last)

  # The smaller-id rule on all rows at once, cell by cell; and the rows
  # tied at a cell's n-th margin, which any order may take or leave.
  expected = np.zeros(n, dtype=bool)
  tied_at_nth = np.zeros(n, dtype=bool)
  for g, j in zip(*np.nonzero(dense)):
    rows = np.flatnonzero(given == g)
    margin = probs[rows, j] - probs[rows, g]
    expected[rows[np.lexsort((ids[rows], -margin))[:dense[g, j]]]] = True
    nth = np.sort(margin)[::-1][min(dense[g, j], len(rows)) - 1]
    tied_at_nth[rows[margin == nth]] = True
  expected[expected] &= ~confident.keeps_given_label(probs[expected],
                                                     given[expected])
  np.testing.assert_array_equal(mask, expected)

  untied = ~tied_at_nth
  rng = np.random.default_rng(1)
  answers = []
  for _ in range(3):
    order = rng.permutation(n)
    answer = np.zeros(n, dtype=bool)
    answer[order] = find_label_issues(given[order], probs[order],
                                      filter_by="prune_by_noise_rate")
    np.testing.assert_array_equal(mask[untied], answer[untied])
    answers.append(answer)
  assert (answers[0] != answers[1]).any()  # The ties matter to cleanlab.
  assert mask.sum() > 1000 and untied.mean() > 0.9
  # Rows tied at an n-th are both taken and left: the tie rule decides.
  assert (tied_at_nth & mask).sum() > 10 and (tied_at_nth & ~mask).sum() > 10
  # Many flagged rows tie with another in their cell (given, suggested).
  rows = np.flatnonzero(mask)
  tied = probs[rows, suggested[rows]] - probs[rows, given[rows]]
  keys = np.stack([given[rows], suggested[rows], tied.view(np.int32)], 1)
  _, counts = np.unique(keys, axis=0, return_counts=True)
  assert counts[counts > 1].sum() > 200


def test_margin_histograms_stay_within_their_budget():
  # Bins a cell: at most 32, and K² × bins at most 16384 counts.
  assert [confident.margin_bin_count(k) for k in (2, 10, 22, 23, 40, 64, 65)
          ] == [32, 32, 32, 30, 10, 4, 0]


def test_margin_bins_never_fall_as_margins_rise():
  edges = np.float32([-1, -0.5, 0, 0.25, 1])
  m = np.sort(np.concatenate([
      edges, np.nextafter(edges, np.float32(-2)),
      np.nextafter(edges, np.float32(2)),
      np.random.default_rng(0).uniform(-1, 1, 1000).astype(np.float32)]))
  m = m[(m >= -1) & (m <= 1)]
  bins = confident.margin_bins(m[:, None], 8)[:, 0]
  assert (np.diff(bins) >= 0).all()
  assert bins[0] == 0 and bins[-1] == 7
  assert set(bins) == set(range(8))
  # Equal widths: -0.5 starts the third of 8 bins over [-1, 1].
  assert confident.margin_bins(np.float32([[-0.5, 0.0, 0.2499, 0.25]]),
                               8).tolist() == [[2, 4, 4, 5]]


def test_margin_histogram_counts_each_row_in_each_cell_of_its_label():
  probs = np.float32([[0.5, 0.5, 0.0],    # given 0: margins 0, 0, -0.5
                      [0.1, 0.8, 0.1],    # given 1: margins -0.7, 0, -0.7
                      [1.0, 0.0, 0.0]])   # given 0: margins 0, -1, -1
  histogram = confident.margin_histogram(probs, np.array([0, 1, 0]), 4)
  expected = np.zeros((3, 3, 4), dtype=int)
  # Bins of width 0.5: [-1, -0.5), [-0.5, 0), [0, 0.5), [0.5, 1].
  expected[0, 0, 2] = 2
  expected[0, 1, 2] += 1
  expected[0, 1, 0] += 1
  expected[0, 2, 1] += 1
  expected[0, 2, 0] += 1
  expected[1, 0, 0] = 1
  expected[1, 1, 2] = 1
  expected[1, 2, 0] = 1
  np.testing.assert_array_equal(histogram, expected)
  # Counted a row at a time (chunks of K pairs): the same.
  np.testing.assert_array_equal(
      confident.margin_histogram(probs, np.array([0, 1, 0]), 4, chunk=3),
      expected)


def test_cut_bins_keep_at_least_n_rows():
  histogram = np.array([[[5, 0, 3, 2]] * 5] * 5)  # Five cells a row.
  prune = np.zeros((5, 5), int)
  prune[0] = [0, 2, 6, 11, 0]
  # At or above bins 0..3: 10, 5, 5, 2 rows.
  np.testing.assert_array_equal(
      confident.cut_bins(histogram, confident.CellCounts.from_dense(prune))[0],
      [3, 3, 0, 0, 3])


def test_cuts_bound_what_all_bundles_emit():
  k = 10
  probs, given, _ = noisy_probs(40_000, k, 0.1, 7)
  ids = np.char.add("b", np.arange(len(given)).astype(str)).astype(object)
  _, prune, dense = _prune(probs, given, k)
  cuts = _cuts(probs, given, prune)
  final = dense.sum()

  def emitted(cuts):
    per_cell = np.zeros((k, k), dtype=int)
    for cells in _bundles(probs, given, ids, prune, limits=[None] * 40,
                          batches=80, cuts=cuts):
      for cell, n, values, _ in cells:
        assert len(values) <= n == dense[cell]
        per_cell[cell] += len(values)
    return per_cell

  with_cuts, without = emitted(cuts), emitted(None)
  # The stated bound: fewer than n plus the rows of the cut-off bin a cell.
  histogram = confident.margin_histogram(probs, given, cuts[1])
  in_cut_bin = np.take_along_axis(histogram, cuts[0][..., None], -1)[..., 0]
  active = dense > 0
  assert (with_cuts[active] <= (dense + in_cut_bin - 1)[active]).all()
  assert (with_cuts[~active] == 0).all()
  assert with_cuts.sum() <= 1.1 * final
  assert without.sum() > 3 * final  # 40 bundles' own top n each.


def test_round_preserving_sum():
  assert confident.round_preserving_sum(np.array([0.4, 0.4, 0.2])).sum() == 1
  np.testing.assert_array_equal(
      confident.round_preserving_sum(np.array([1.5, 2.5, 1.0])), [2, 2, 1])


def test_noise_rates_and_suggestions():
  joint = confident.CellCounts.from_dense(np.array([[8, 2], [1, 9]]))
  np.testing.assert_allclose(confident.noise_rates(joint), [0.2, 0.1])
  probs = np.array([[0.1, 0.9], [0.6, 0.4]], dtype=np.float32)
  np.testing.assert_array_equal(
      confident.suggested_labels(probs, np.array([0, 0]), np.array([0.5, 0.5])),
      [1, 1])
