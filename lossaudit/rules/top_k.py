"""`top_k`: flags the k largest losses."""

import math
from typing import NamedTuple, Optional

import numpy as np

from lossaudit import validation
from lossaudit.rules._registry import FlagRule, Setting, register


class TopKBound(NamedTuple):
  """The k-th largest `(loss, id)`: the top-k rule flags it and above."""

  loss: float
  id: str


def exceeds_top_k(losses: np.ndarray, ids: np.ndarray,
                  kth: Optional[TopKBound]) -> np.ndarray:
  """Whether each row is among the top k, given the k-th (loss, id) `(N,)`."""
  if kth is None:
    return np.zeros(losses.shape, dtype=bool)
  return (losses > kth.loss) | ((losses == kth.loss) & (ids <= kth.id))


class TopK(FlagRule):
  """Flags the `flag.top_k` largest losses, ties broken by the smaller id."""

  reason = "top_k"
  settings = (Setting("top_k", validation.integer(
      1, math.inf, "a positive integer", nullable=True), None,
                      "flag the k largest losses (ties: the smaller id)",
                      "Optional[int]"),)
  rank = 50
  config_rank = 35

  def statistics(self, scored, flag, epsilon, column):
    import apache_beam as beam  # pylint: disable=g-import-not-at-top

    from lossaudit.transforms.stats import TopKCombineFn  # pylint: disable=g-import-not-at-top

    return scored | "TopK" >> beam.CombineGlobally(
        TopKCombineFn(flag.top_k, column))

  def threshold(self, flag, loss_summary, slice_stats, own):
    return TopKBound._make(own[-1]) if own else None

  def mask(self, rows, threshold):
    return rows.finite & exceeds_top_k(rows.safe, rows.ids, threshold)


register(TopK())
