"""`non_finite`: flags a row whose loss is not finite (always on)."""

from lossaudit.rules._registry import NOT_IN_FORCE, FlagRule, register


class NonFinite(FlagRule):
  """Flags a row whose loss is NaN or infinite (always on)."""

  reason = "non_finite"
  rank = 90
  mask_rank = 0  # First among a row's reasons.
  global_statistics = False
  in_thresholds = False
  always = True

  def enabled(self, flag):
    return True

  def threshold(self, flag, loss_summary, slice_stats, own):
    return NOT_IN_FORCE  # Nothing to compare with; `always` applies it.

  def mask(self, rows, threshold):
    return ~rows.finite


register(NonFinite())
