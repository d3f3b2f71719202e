"""`loss_threshold`: flags a loss above a fixed value."""

from lossaudit import validation
from lossaudit.rules._registry import FlagRule, Setting, register


class LossThreshold(FlagRule):
  """Flags a loss above `flag.loss_threshold`."""

  reason = "loss_threshold"
  settings = (Setting("loss_threshold", validation.number(), None,
                      "flag a loss above this value"),)
  rank = 20
  global_statistics = False

  def threshold(self, flag, loss_summary, slice_stats, own):
    return float(flag.loss_threshold)

  def mask(self, rows, threshold):
    return None if threshold is None else rows.safe > threshold


register(LossThreshold())
