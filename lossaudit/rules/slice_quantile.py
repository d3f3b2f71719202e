"""`slice_quantile`: flags a loss above a quantile of its slice's losses."""

import numpy as np

from lossaudit import validation
from lossaudit.errors import ConfigError
from lossaudit.rules._registry import FlagRule, Setting, register


class SliceQuantile(FlagRule):
  """Flags a loss above the `flag.slice_quantile` quantile of the losses of
  its slice (`stats.slice_by`)."""

  reason = "slice_quantile"
  settings = (Setting("slice_quantile", validation.number(0, 1), None,
                      "flag a loss above this quantile of its slice's"
                      " losses (needs stats.slice_by)"),)
  rank = 40

  def check_config(self, config):
    if config.stats.slice_by is None:
      raise ConfigError(
          "flag.slice_quantile: needs stats.slice_by to be set. Received:"
          " stats.slice_by=None")

  def sketch_quantiles(self, flag):
    return (flag.slice_quantile,)

  def threshold(self, flag, loss_summary, slice_stats, own):
    from lossaudit.stats import (
      format_quantile,  # Local: no sketch at config time.
    )

    key = format_quantile(flag.slice_quantile)
    return {name: stats["quantiles"][key]
            for name, stats in (slice_stats or {}).items()}

  def mask(self, rows, threshold):
    from lossaudit.spec import SLICE_COLUMN  # Local: no Arrow at config time.

    slices = rows.column(SLICE_COLUMN)
    if threshold is None or slices is None:
      return None
    names, index = np.unique(slices, return_inverse=True)
    bounds = np.array([threshold.get(n) for n in names], dtype=np.float64)
    bound = np.nan_to_num(bounds, nan=np.inf)[index.reshape(-1)]
    return rows.safe > bound


register(SliceQuantile())
