"""The registered rules applied: their thresholds, then their masks."""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from lossaudit.rules._registry import (
  NOT_IN_FORCE,
  Rows,
  get,
  in_mask_order,
  registered,
)


@dataclasses.dataclass(frozen=True)
class Thresholds:
  """What each rule in force compares against.

  A rule in force may have no value (no finite loss to compute it from):
  it then flags nothing.

  Attributes:
    values: `{reason: threshold}` of the rules in force (`FlagRule.threshold`;
      the label-issue rule's is its `LabelRules`).
  """

  values: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  @classmethod
  def of(cls, **values: Any) -> "Thresholds":
    """`Thresholds.of(loss_threshold=1.0)`: by reason."""
    return cls(dict(values))

  @property
  def label_issues(self):
    """The `LabelRules` when `flag.label_issues` is on, else None."""
    return self.values.get("label_issue")

  def to_dict(self) -> Dict[str, object]:
    """`thresholds` in `summary.json`, in rank order (the label-issue rules
    have their own key there: `LabelRules.to_dict`)."""
    return {rule.reason: rule.summary_value(self.values[rule.reason])
            for rule in registered()
            if rule.in_thresholds and rule.reason in self.values}


def rule_thresholds(loss_summary: Dict, flag_config,
                    slice_stats: Optional[Dict[str, Dict]] = None,
                    **own) -> Thresholds:
  """The value each rule `flag_config` turns on compares against.

  Args:
    loss_summary: `LossAccumulator.summary()` of all losses; its quantiles
      include each rule's `sketch_quantiles` (empty when no rule needs
      global statistics).
    flag_config: a `FlagConfig`.
    slice_stats: `{slice: summary}` with `stats.slice_by`.
    **own: by reason, the output of a rule's own statistics stage
      (`FlagRule.statistics`; the label-issue rule's `LabelRules`).
  """
  values = {}
  for rule in registered():
    if not rule.enabled(flag_config):
      continue
    value = rule.threshold(flag_config, loss_summary, slice_stats,
                           own.get(rule.reason))
    if value is not NOT_IN_FORCE:
      values[rule.reason] = value
  return Thresholds(values)


def flag_masks(rows: Rows, thresholds: Thresholds
               ) -> List[Tuple[str, np.ndarray]]:
  """The rules that flag each row, as `[(reason, mask (N,))]`, in mask
  order; a rule that cannot apply to these rows is left out."""
  masks = []
  for rule in in_mask_order():
    if not (getattr(rule, "always", False) or rule.reason in thresholds.values):
      continue
    mask = rule.mask(rows, thresholds.values.get(rule.reason))
    if mask is not None:
      masks.append((rule.reason, mask))
  return masks


def scores(rows: Rows, masks: List[Tuple[str, np.ndarray]]) -> np.ndarray:
  """`(N,)` how suspect each row is: its loss (+inf when not finite), as
  each flagging rule rescores it; a row flagged only by rules with a solo
  score gets that score."""
  score = np.where(rows.finite, rows.losses, np.inf)
  for reason, mask in masks:
    score = get(reason).rescore(rows, mask, score)
  solo = [(mask, get(reason).solo_score(rows)) for reason, mask in masks]
  others = [mask for mask, value in solo if value is None]
  if len(others) == len(solo):
    return score
  flagged_otherwise = np.any(others, axis=0) if others else np.zeros(
      len(score), bool)
  for mask, value in reversed(solo):
    if value is not None:
      score = np.where(mask & ~flagged_otherwise, value, score)
  return score
