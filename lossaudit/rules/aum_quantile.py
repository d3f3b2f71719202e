"""`aum_quantile`: flags an area under the margin below its quantile."""

from typing import Any

from lossaudit import validation
from lossaudit.errors import ConfigError
from lossaudit.rules._registry import FlagRule, Setting, register


def aum_below(rows, threshold):
  """`(N,)` whether each row's AUM is below `threshold` (a NaN AUM is not:
  its row is `non_finite`); None without an `aum` column."""
  import numpy as np  # pylint: disable=g-import-not-at-top

  aum = rows.column("aum")
  if threshold is None or aum is None:
    return None
  return np.where(np.isnan(aum), np.inf, aum) < threshold


def minus_aum(rows):
  """A row flagged only by AUM rules is ordered by its AUM, lowest first."""
  return -rows.column("aum")


def check_checkpoints(config: Any, key: str) -> None:
  """An AUM rule (`flag.<key>`) needs `model.checkpoints`."""
  if not config.model.checkpoints:
    raise ConfigError(
        f"flag.{key}: needs model.checkpoints (AUM is a mean over"
        f" checkpoints). Received: flag.{key}={getattr(config.flag, key)!r}"
        f" with model.checkpoints=None")


class AumQuantile(FlagRule):
  """Flags an area under the margin (AUM, over `model.checkpoints`) below
  the `flag.aum_quantile` quantile of every AUM."""

  reason = "aum_quantile"
  settings = (Setting("aum_quantile", validation.number(0, 1), None,
                      "flag an area under the margin below this quantile of"
                      " every AUM (needs model.checkpoints)"),)
  rank = 60

  def check_config(self, config):
    check_checkpoints(config, "aum_quantile")

  def statistics(self, scored, flag, epsilon, column):
    from lossaudit.transforms.stats import LossStats  # pylint: disable=g-import-not-at-top

    return (scored | "AumStats" >> LossStats(
        epsilon, [flag.aum_quantile], column="aum"))["global"]

  def threshold(self, flag, loss_summary, slice_stats, own):
    from lossaudit.stats import (
      format_quantile,  # Local: no sketch at config time.
    )

    return own["quantiles"][format_quantile(flag.aum_quantile)]

  def mask(self, rows, threshold):
    return aum_below(rows, threshold)

  def solo_score(self, rows):
    return minus_aum(rows)


register(AumQuantile())
