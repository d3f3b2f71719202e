"""`aum_below`: flags an area under the margin below a fixed value."""

from lossaudit import validation
from lossaudit.rules._registry import FlagRule, Setting, register
from lossaudit.rules.aum_quantile import aum_below, check_checkpoints, minus_aum


class AumBelow(FlagRule):
  """Flags an area under the margin (AUM, over `model.checkpoints`) below
  `flag.aum_below`."""

  reason = "aum_below"
  settings = (Setting("aum_below", validation.number(), None,
                      "flag an area under the margin below this value"
                      " (needs model.checkpoints)"),)
  rank = 70
  global_statistics = False

  def check_config(self, config):
    check_checkpoints(config, "aum_below")

  def threshold(self, flag, loss_summary, slice_stats, own):
    return float(flag.aum_below)

  def mask(self, rows, threshold):
    return aum_below(rows, threshold)

  def solo_score(self, rows):
    return minus_aum(rows)


register(AumBelow())
