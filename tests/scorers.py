"""Scorers for tests: a `BatchScorer` that runs out of memory on demand."""

import tensorflow as tf

from lossaudit.scoring import BatchScorer


class SmallMemoryScorer(BatchScorer):
  """Runs out of memory (`ResourceExhaustedError`) on more than `limit`
  rows; records the sizes it scored in `scored_sizes`."""

  limit = 100

  def __init__(self, spec, **kwargs):
    super().__init__(spec, **kwargs)
    self.scored_sizes = []

  def score_arrays(self, features, labels, fold=0):
    n = len(next(iter(labels.values())))
    if n > self.limit:
      raise tf.errors.ResourceExhaustedError(None, None, "OOM: test")
    self.scored_sizes.append(n)
    return super().score_arrays(features, labels, fold)
