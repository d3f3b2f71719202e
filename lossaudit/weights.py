"""Per-example training weights from an audit (`output.weights`).

`weights/` holds `(id, weight)` of every scored example, for Keras'
`sample_weight`:

- `drop_flagged`: 0 for an example flagged for one of the counted reasons,
  else 1;
- `downweight_flagged`: `factor` for such an example, else 1;
- `loss_bins`: the bin of its loss among `bins` equal-count bins (0 the
  easiest, `bins - 1` the hardest; deciles for 10), read from the global
  quantile sketch, for curriculum schedules (easy first). A non-finite loss
  is in the last bin.
"""

from __future__ import annotations

from typing import Dict, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa

from lossaudit.stats import format_quantile

SCHEMA = pa.schema([pa.field("id", pa.string()),
                    pa.field("weight", pa.float64())])


class WeightRule(NamedTuple):
  """`output.weights`, as the flag pass applies it.

  Attributes:
    scheme: `drop_flagged`, `downweight_flagged` or `loss_bins`.
    factor: a flagged example's weight (`downweight_flagged`).
    bins: how many loss bins (`loss_bins`).
    reasons: the flag reasons that count.
  """

  scheme: str
  factor: float
  bins: int
  reasons: Tuple[str, ...]

  def quantiles(self) -> Tuple[float, ...]:
    """The bin edges' quantiles, `k / bins` for k in 1..bins-1 (none
    unless `loss_bins`)."""
    if self.scheme != "loss_bins":
      return ()
    return tuple(k / self.bins for k in range(1, self.bins))


def bin_edges(rule: WeightRule, loss_summary: Dict) -> Optional[np.ndarray]:
  """`(bins - 1,)` loss edges from a `LossAccumulator.summary()` whose
  quantiles include `rule.quantiles()`; None unless `loss_bins`."""
  if rule.scheme != "loss_bins":
    return None
  found = loss_summary["quantiles"]
  return np.array([np.inf if found[format_quantile(q)] is None
                   else found[format_quantile(q)] for q in rule.quantiles()],
                  np.float64)


def example_weights(rule: WeightRule, flagged: np.ndarray,
                    losses: np.ndarray, edges: Optional[Sequence[float]]
                    ) -> np.ndarray:
  """`(N,)` float64 weights of N examples.

  Args:
    flagged: `(N,)` bool, flagged for a counted reason.
    losses: `(N,)` the losses the statistics are of.
    edges: `bin_edges` (with `loss_bins`).
  """
  if rule.scheme == "drop_flagged":
    return np.where(flagged, 0.0, 1.0)
  if rule.scheme == "downweight_flagged":
    return np.where(flagged, float(rule.factor), 1.0)
  losses = np.asarray(losses, np.float64)
  bins = np.searchsorted(np.asarray(edges, np.float64),
                         np.nan_to_num(losses, nan=np.inf), side="left")
  bins = np.where(np.isfinite(losses), bins, rule.bins - 1)
  return np.minimum(bins, rule.bins - 1).astype(np.float64)
