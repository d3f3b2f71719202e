"""`loss_quantile`: flags a loss above a quantile of every loss."""

from lossaudit import validation
from lossaudit.rules._registry import FlagRule, Setting, register


class LossQuantile(FlagRule):
  """Flags a loss above the `flag.loss_quantile` quantile of every loss."""

  reason = "loss_quantile"
  settings = (Setting("loss_quantile", validation.number(0, 1), 0.99,
                      "flag a loss above this quantile of every loss"),)
  rank = 10

  def sketch_quantiles(self, flag):
    return (flag.loss_quantile,)

  def threshold(self, flag, loss_summary, slice_stats, own):
    from lossaudit.stats import (
      format_quantile,  # Local: no sketch at config time.
    )

    return loss_summary["quantiles"][format_quantile(flag.loss_quantile)]

  def mask(self, rows, threshold):
    return None if threshold is None else rows.safe > threshold


register(LossQuantile())
