"""The registered rules applied: their thresholds, then their masks."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from lossaudit.rules._registry import NOT_IN_FORCE, FlagRule, Rows, registered


@dataclasses.dataclass(frozen=True)
class Thresholds:
  """What each rule in force compares against.

  A rule in force may have no value (no finite loss to compute it from):
  it then flags nothing.

  Attributes:
    values: `{reason: threshold}` of the rules in force (`FlagRule.threshold`;
      the label-issue rule's is its `LabelRules`).
    packed_rules: the rules in force, in `rank` order, as the launching
      process registered them, pickled by Beam's pickler (a class of the
      user's `__main__` by value): they travel with the thresholds, so a
      rule registered by the user's own code flags rows on workers that
      never ran that code. Empty: the rules of this process's registry.
  """

  values: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  packed_rules: bytes = dataclasses.field(
      default=b"", compare=False, repr=False)

  @classmethod
  def with_rules(cls, values: Mapping[str, Any],
                 rules: Sequence[FlagRule]) -> "Thresholds":
    """`values`, and `rules` (those in force) packed to travel with them."""
    return cls(values, _pack(tuple(rules)))

  def in_force(self) -> Tuple[FlagRule, ...]:
    """The rules that apply: those with a value, and those always on."""
    every = _unpack(self.packed_rules) if self.packed_rules else registered()
    return tuple(rule for rule in every
                 if rule.reason in self.values or _always(rule))

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
            for rule in self.in_force()
            if rule.in_thresholds and rule.reason in self.values}


def _pack(rules: Tuple[FlagRule, ...]) -> bytes:
  from apache_beam.internal import pickler  # pylint: disable=g-import-not-at-top

  return pickler.dumps(rules)


@functools.lru_cache(maxsize=8)
def _unpack(packed: bytes) -> Tuple[FlagRule, ...]:
  from apache_beam.internal import pickler  # pylint: disable=g-import-not-at-top

  return pickler.loads(packed)


def _always(rule: FlagRule) -> bool:
  return getattr(rule, "always", False)


def in_force(flag_config) -> Tuple[FlagRule, ...]:
  """The registered rules `flag_config` turns on, and those always on, in
  `rank` order: what the pipeline takes along (`rule_thresholds`)."""
  return tuple(rule for rule in registered()
               if _always(rule) or rule.enabled(flag_config))


def rule_thresholds(loss_summary: Dict, flag_config,
                    slice_stats: Optional[Dict[str, Dict]] = None,
                    rules: Optional[Tuple[FlagRule, ...]] = None,
                    **own) -> Thresholds:
  """The value each rule `flag_config` turns on compares against.

  Args:
    loss_summary: `LossAccumulator.summary()` of all losses; its quantiles
      include each rule's `sketch_quantiles` (empty when no rule needs
      global statistics).
    flag_config: a `FlagConfig`.
    slice_stats: `{slice: summary}` with `stats.slice_by`.
    rules: the rules in force (`in_force(flag_config)` where the pipeline
      is built); None: this process's.
    **own: by reason, the output of a rule's own statistics stage
      (`FlagRule.statistics`; the label-issue rule's `LabelRules`).
  """
  rules = in_force(flag_config) if rules is None else tuple(rules)
  values = {}
  for rule in rules:
    if _always(rule):  # Nothing to compare with: `flag_masks` applies it.
      continue
    value = rule.threshold(flag_config, loss_summary, slice_stats,
                           own.get(rule.reason))
    if value is not NOT_IN_FORCE:
      values[rule.reason] = value
  return Thresholds.with_rules(values, rules)


def flag_masks(rows: Rows, thresholds: Thresholds
               ) -> List[Tuple[str, np.ndarray]]:
  """The rules that flag each row, as `[(reason, mask (N,))]`, in mask
  order; a rule that cannot apply to these rows is left out."""
  masks = []
  for rule in sorted(thresholds.in_force(), key=_mask_rank):
    mask = rule.mask(rows, thresholds.values.get(rule.reason))
    if mask is not None:
      masks.append((rule.reason, _checked(rule, mask, len(rows.losses))))
  return masks


def _mask_rank(rule: FlagRule) -> float:
  return rule.rank if rule.mask_rank is None else rule.mask_rank


def _checked(rule: FlagRule, mask: Any, rows: int) -> np.ndarray:
  """`mask` if it is one bool a row, else a ValueError naming the rule (a
  float or int mask would be taken for counts of reasons)."""
  mask = np.asarray(mask)
  if mask.dtype != np.bool_ or mask.shape != (rows,):
    raise ValueError(
        f"flag rule {rule.reason!r}: mask() must return a bool array of"
        f" shape ({rows},), one value a row. Received: {mask.dtype} of shape"
        f" {mask.shape}")
  return mask


def scores(rows: Rows, masks: List[Tuple[str, np.ndarray]],
           thresholds: Thresholds) -> np.ndarray:
  """`(N,)` how suspect each row is: its loss (+inf when not finite), as
  each flagging rule (`flag_masks`) rescores it; a row flagged only by rules
  with a solo score gets that score."""
  by_reason = {rule.reason: rule for rule in thresholds.in_force()}
  score = np.where(rows.finite, rows.losses, np.inf)
  for reason, mask in masks:
    score = by_reason[reason].rescore(rows, mask, score)
  solo = [(mask, by_reason[reason].solo_score(rows)) for reason, mask in masks]
  others = [mask for mask, value in solo if value is None]
  if len(others) == len(solo):
    return score
  flagged_otherwise = np.any(others, axis=0) if others else np.zeros(
      len(score), bool)
  for mask, value in reversed(solo):
    if value is not None:
      score = np.where(mask & ~flagged_otherwise, value, score)
  return score
