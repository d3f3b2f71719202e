"""What one bundle of the `prune_by_noise_rate` ranking pass emits.

Every row given class k is a candidate of every cell (k, j), so a bundle's
top n of a cell holds `min(n[k, j], rows given k in the bundle)` candidates:
counted here from the labels, not from the code under test.
"""

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.util import assert_that, equal_to

from lossaudit import confident
from lossaudit.label_rules import PRUNE_BY_NOISE_RATE, LabelRules
from lossaudit.spec import PROBS_COLUMN
from lossaudit.transforms.label_issues import (
  _CellCandidatesFn,
  _finish_joint,
  _JointCountsFn,
)
from tests.helpers import noisy_probs

K = 10


def _scored_batch(probs, given, ids):
  return pa.RecordBatch.from_arrays(
      [pa.FixedSizeListArray.from_arrays(pa.array(probs.reshape(-1)), K),
       pa.array(given), pa.array(ids), pa.array(np.ones(len(given)))],
      names=[PROBS_COLUMN, "given_label", "id", "loss"])


def _data(n=30_000, seed=2):
  probs, given, _ = noisy_probs(n, K, 0.1, seed)
  ids = np.char.add("c", np.arange(n).astype(str)).astype(object)
  sums, counts = confident.self_confidence_sums(probs, given, K)
  thresholds = confident.confident_thresholds(sums, counts)
  guess, ok = confident.confident_guess(probs, thresholds)
  joint = confident.calibrated_joint(
      confident.joint_counts(given, guess, ok, K), counts)
  prune = confident.prune_counts(joint, counts)
  rules = LabelRules(
      method=PRUNE_BY_NOISE_RATE, thresholds=thresholds.tolist(),
      label_counts=counts.tolist(), confident_joint=joint,
      noise_rate=confident.noise_rates(joint).tolist(),
      prune_counts=prune)
  return probs, given, ids, prune.to_dense(), rules


def _emitted(batches, rules):
  fn = _CellCandidatesFn(K)
  fn.start_bundle()
  for batch in batches:
    fn.process(batch, rules)
  return {cell: top for cell, top in
          (emitted.value for emitted in fn.finish_bundle())}


def _expected_sizes(given, prune):
  rows = np.bincount(given, minlength=K)
  return {(g, j): min(int(prune[g, j]), int(rows[g]))
          for g in range(K) for j in range(K)
          if g != j and prune[g, j] > 0 and rows[g] > 0}


def test_a_bundle_emits_at_most_each_cells_count():
  probs, given, ids, prune, rules = _data()
  off_diagonal = int(prune.sum() - np.trace(prune))
  assert off_diagonal > 2000 and np.trace(prune) == 0
  for lo, hi, size in [(0, 30_000, 1000), (0, 30_000, 30_000),
                       (1000, 1400, 100)]:
    batches = [_scored_batch(probs[i:i + size], given[i:i + size],
                             ids[i:i + size]) for i in range(lo, hi, size)]
    emitted = _emitted(batches, rules)
    assert {cell: len(top.ids) for cell, top in emitted.items()} == (
        _expected_sizes(given[lo:hi], prune))
    # The stated bound: at most n a cell, the final count in all.
    assert sum(len(top.ids) for top in emitted.values()) <= off_diagonal
    assert all(top.n == prune[cell] for cell, top in emitted.items())


def test_large_batches_are_ranked_as_small_ones():
  probs, given, ids, _, rules = _data(8000, seed=4)
  small = _emitted([_scored_batch(probs[i:i + 500], given[i:i + 500],
                                  ids[i:i + 500])
                    for i in range(0, 8000, 500)], rules)
  large = _emitted([_scored_batch(probs, given, ids)], rules)
  assert small.keys() == large.keys()
  for cell, top in small.items():
    np.testing.assert_array_equal(large[cell].margins, top.margins)
    np.testing.assert_array_equal(large[cell].ids, top.ids)
    # Largest margin first, ties by the smaller id.
    margins = probs[:, cell[1]] - probs[:, cell[0]]
    rows = np.flatnonzero(given == cell[0])
    best = rows[np.lexsort((ids[rows], -margins[rows]))[:len(top.ids)]]
    np.testing.assert_array_equal(top.ids, ids[best])


def test_the_candidates_counter_counts_what_a_bundle_emits():
  probs, given, ids, prune, rules = _data(5000, seed=6)
  expected = sum(_expected_sizes(given, prune).values())
  pipeline = beam.Pipeline()
  sizes = (pipeline
           | beam.Create([_scored_batch(probs, given, ids)])
           | beam.ParDo(_CellCandidatesFn(K), rules=rules)
           | beam.Map(lambda cell_top: len(cell_top[1].ids))
           | beam.CombineGlobally(sum))
  assert_that(sizes, equal_to([expected]))
  result = pipeline.run()
  result.wait_until_finish()
  counters = result.metrics().query(
      MetricsFilter().with_name("label_issue_candidates"))["counters"]
  assert sum(c.committed for c in counters) == expected > 500


def test_the_joint_pass_cuts_what_many_bundles_emit():
  probs, given, ids, prune, rules = _data()
  batches = [_scored_batch(probs[i:i + 1000], given[i:i + 1000],
                           ids[i:i + 1000]) for i in range(0, 30_000, 1000)]
  joint = _JointCountsFn(K, confident.margin_bin_count(K))
  joint.start_bundle()
  for batch in batches:
    joint.process(batch, rules.thresholds)
  (counts,) = [value.value for value in joint.finish_bundle()]
  cut = _finish_joint(counts, PRUNE_BY_NOISE_RATE, rules.thresholds)
  np.testing.assert_array_equal(cut.prune_counts.to_dense(), prune)
  assert cut.margin_bins == 32 and np.shape(cut.cut_bins) == (K, K)
  final = int(prune.sum() - np.trace(prune))

  def emitted(rules):
    total = 0
    for bundle in range(30):  # One batch a bundle.
      for cell, top in _emitted([batches[bundle]], rules).items():
        assert len(top.ids) <= prune[cell]
        total += len(top.ids)
    return total

  assert emitted(rules) > 4 * final  # Each bundle's own top n a cell.
  assert final <= emitted(cut) < 1.1 * final
