"""`robust_z`: flags a loss whose robust z-score is above a bound."""

from lossaudit import validation
from lossaudit.rules._registry import NOT_IN_FORCE, FlagRule, Setting, register

# The MAD of a normal distribution times this is its standard deviation.
MAD_TO_STD = 1.4826


class RobustZ(FlagRule):
  """Flags a loss whose robust z-score, (loss - median) / (1.4826 · MAD),
  is above `flag.robust_z`.

  The bound is turned into the loss it means: loss > median + z · 1.4826 ·
  MAD, with the median and MAD read from the quantile sketch; the rule is
  not in force when there is no median (no finite loss).
  """

  reason = "robust_z"
  settings = (Setting("robust_z", validation.number(0, open_low=True), None,
                      "flag a loss whose robust z-score (median and MAD)"
                      " is above this"),)
  rank = 30

  def threshold(self, flag, loss_summary, slice_stats, own):
    if loss_summary["median"] is None:
      return NOT_IN_FORCE
    return (loss_summary["median"] + flag.robust_z * MAD_TO_STD *
            loss_summary["mad"])

  def mask(self, rows, threshold):
    return None if threshold is None else rows.safe > threshold


register(RobustZ())
