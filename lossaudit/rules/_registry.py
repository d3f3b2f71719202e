"""`FlagRule`, the record of one flag rule, and the registry of rules.

A rule declares its `flag.*` settings, whether it needs every row scored
first (then the scored rows are spilled and read back for a second pass),
the quantiles it reads from the loss sketch, a Beam stage of its own
statistics if any, how it computes its threshold, and its mask and reason.
Everything that lists rules (the `flag` config keys, the flag reasons, the
spill decision, `summary.json` → `thresholds`) reads this registry.
"""

from __future__ import annotations

import dataclasses
import keyword
import re
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from lossaudit.validation import Rule

_RULES: Dict[str, "FlagRule"] = {}
# A reason or a flag key: it is a config key and a `flagged/` value.
_NAME = re.compile(r"[a-z][a-z0-9_]*")
# What `FlagConfig` holds beside the rules' settings.
_FLAG_CONFIG_NAMES = frozenset({"score", "needs_global_statistics"})
_LISTENERS: List[Callable[[], None]] = []


@dataclasses.dataclass(frozen=True)
class Setting:
  """One `flag.<key>` setting of a rule.

  Attributes:
    key: the key under `flag`.
    rule: what it accepts.
    default: its value when not set (None: the rule is off).
    help: one line for the docs.
    annotation: its type, as the config reference shows it.
  """

  key: str
  rule: Rule
  default: Any
  help: str
  annotation: str = "Optional[float]"


@dataclasses.dataclass
class Rows:
  """One scored batch as the rules read it.

  Attributes:
    batch: the scored RecordBatch.
    losses: `(N,)` the compared loss column.
    ids: `(N,)` string ids (object array).
    finite: `(N,)` whether each loss is finite.
    safe: `(N,)` the losses, -inf where not finite (never flagged by value).
    suggested: `(N,)` suggested labels, once the label-issue rule ran.
    cache: what a rule computed for another step of itself.
  """

  batch: Any
  losses: np.ndarray
  ids: np.ndarray
  finite: np.ndarray = dataclasses.field(init=False)
  safe: np.ndarray = dataclasses.field(init=False)
  suggested: Optional[np.ndarray] = None
  cache: Dict[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    self.finite = np.isfinite(self.losses)
    self.safe = np.where(self.finite, self.losses, -np.inf)

  def column(self, name: str) -> Optional[np.ndarray]:
    """`(N,)` column `name` of the batch (read once), or None when it has
    none."""
    if self.batch is None or name not in self.batch.schema.names:
      return None
    key = f"column:{name}"
    if key not in self.cache:
      self.cache[key] = self.batch.column(name).to_numpy(
          zero_copy_only=False)
    return self.cache[key]


class FlagRule:
  """One flag rule. Subclass it in a module of `lossaudit.rules` and
  `register` an instance there.

  Attributes:
    reason: the reason written in `flagged/` → `reasons`.
    settings: its `flag.*` settings; the first one turns it on (not None).
    rank: where the reason goes in the lists of reasons and in
      `summary.json` → `thresholds`.
    config_rank: where its settings go among the `flag` keys (default:
      `rank`).
    mask_rank: where its mask goes among a row's reasons (default: `rank`).
    global_statistics: whether its threshold needs every row scored first.
    in_thresholds: whether `summary.json` → `thresholds` lists it.
  """

  reason: str = ""
  settings: Tuple[Setting, ...] = ()
  rank: float = 1000.0
  config_rank: Optional[float] = None
  mask_rank: Optional[float] = None
  global_statistics: bool = True
  in_thresholds: bool = True

  def value(self, flag: Any) -> Any:
    """The value of its first setting in a `FlagConfig`."""
    return getattr(flag, self.settings[0].key) if self.settings else None

  def enabled(self, flag: Any) -> bool:
    """Whether `flag` turns the rule on."""
    return self.value(flag) is not None

  def check_config(self, config: Any) -> None:
    """Refuses an `AuditConfig` that turns the rule on without what it
    needs from other sections (`ConfigError`, one line)."""
    del config

  def sketch_quantiles(self, flag: Any) -> Tuple[float, ...]:
    """Quantiles the loss sketch must give its threshold."""
    del flag
    return ()

  def statistics(self, scored: Any, flag: Any, epsilon: float,
                 column: str) -> Any:
    """A singleton PCollection of what its threshold needs beyond the loss
    statistics (a Beam stage of its own), or None."""
    del scored, flag, epsilon, column
    return None

  def threshold(self, flag: Any, loss_summary: Dict,
                slice_stats: Optional[Dict[str, Dict]], own: Any) -> Any:
    """What it compares against, or `NOT_IN_FORCE`.

    Args:
      flag: the `FlagConfig`.
      loss_summary: `LossAccumulator.summary()` of every loss (empty when
        no rule needs global statistics).
      slice_stats: `{slice: summary}` with `stats.slice_by`, else None.
      own: the output of its `statistics` stage, or None.
    """
    raise NotImplementedError

  def mask(self, rows: Rows, threshold: Any) -> Optional[np.ndarray]:
    """`(N,)` bool, the rows it flags; None: it cannot apply here."""
    raise NotImplementedError

  def rescore(self, rows: Rows, mask: np.ndarray,
              score: np.ndarray) -> np.ndarray:
    """The `score` `(N,)` of the rows, after this rule flagged `mask`."""
    del rows, mask
    return score

  def solo_score(self, rows: Rows) -> Optional[np.ndarray]:
    """`(N,)` the score of a row that only rules with a solo score flag,
    or None (the loss orders it)."""
    del rows
    return None

  def summary_value(self, threshold: Any) -> Any:
    """The threshold as `summary.json` → `thresholds` writes it."""
    return list(threshold) if isinstance(threshold, tuple) else threshold


# A rule's threshold when the rule is not in force (not listed, no mask).
NOT_IN_FORCE = object()


def register(rule: FlagRule) -> FlagRule:
  """Adds `rule` to the registry.

  Raises:
    ValueError: its reason or one of its keys is taken.
  """
  names = [rule.reason, *(s.key for s in rule.settings)]
  odd = [n for n in names if not _NAME.fullmatch(str(n))
         or keyword.iskeyword(n) or n in _FLAG_CONFIG_NAMES]
  if odd:
    raise ValueError(f"register: expected a reason and flag keys of"
                     f" lowercase letters, digits and '_', not a Python"
                     f" keyword or {sorted(_FLAG_CONFIG_NAMES)}. Received:"
                     f" {odd}")
  if rule.reason in _RULES:
    raise ValueError(f"register: expected a new reason. Received:"
                     f" {rule.reason!r}, already registered")
  keys = {s.key for r in _RULES.values() for s in r.settings}
  taken = [s.key for s in rule.settings if s.key in keys]
  if taken:
    raise ValueError(f"register: expected new flag keys. Received: {taken}"
                     f" for {rule.reason!r}, keys of other rules")
  _RULES[rule.reason] = rule
  try:
    _changed()
  except Exception:
    del _RULES[rule.reason]  # As it was: the config's fields too.
    _changed()
    raise
  return rule


def unregister(reason: str) -> None:
  """Removes the rule of `reason` (a test's toy rule)."""
  del _RULES[reason]
  _changed()


def on_change(listener: Callable[[], None]) -> None:
  """Calls `listener()` whenever a rule is registered or removed."""
  _LISTENERS.append(listener)


def _changed() -> None:
  for listener in _LISTENERS:
    listener()


def _sorted(key: Callable[[FlagRule], float]) -> Tuple[FlagRule, ...]:
  return tuple(sorted(_RULES.values(), key=key))


def registered() -> Tuple[FlagRule, ...]:
  """Every rule, in `rank` order."""
  return _sorted(lambda r: r.rank)


def get(reason: str) -> FlagRule:
  return _RULES[reason]


def reasons() -> Tuple[str, ...]:
  """Every reason a row can be flagged for, in `rank` order."""
  return tuple(r.reason for r in registered())


def settings() -> Tuple[Setting, ...]:
  """Every rule's `flag.*` settings, in `config_rank` order."""
  ordered = _sorted(
      lambda r: r.rank if r.config_rank is None else r.config_rank)
  return tuple(s for r in ordered for s in r.settings)


def in_mask_order() -> Tuple[FlagRule, ...]:
  return _sorted(lambda r: r.rank if r.mask_rank is None else r.mask_rank)


def needs_global_statistics(flag: Any) -> bool:
  """Whether a rule `flag` turns on needs every row scored first: it says
  so, or it reads a quantile of the loss sketch (known only then)."""
  return any(r.enabled(flag) and (r.global_statistics or
                                  bool(r.sketch_quantiles(flag)))
             for r in registered())


def sketch_quantiles(flag: Any) -> Tuple[float, ...]:
  """The quantiles the rules `flag` turns on read from the loss sketch."""
  return tuple(q for r in registered() if r.enabled(flag)
               for q in r.sketch_quantiles(flag))


def _first_line(doc: str) -> str:
  """A docstring's first line as a table cell: "Flags a row." is "flags a
  row"."""
  line = doc.strip().split("\n")[0].rstrip(".")
  return line[:1].lower() + line[1:]


def table_markdown() -> str:
  """The rules as a Markdown table: reason, config key, default, help."""
  lines = ["| reason | config key | default | what it does |",
           "| --- | --- | --- | --- |"]
  for rule in registered():
    for setting in rule.settings or (None,):
      key = f"`flag.{setting.key}`" if setting else "(always on)"
      default = ("" if setting is None else "null" if setting.default is None
                 else f"`{setting.default}`")
      text = setting.help if setting else _first_line(rule.__doc__)
      lines.append(f"| `{rule.reason}` | {key} | {default} | {text} |")
  return "\n".join(lines) + "\n"
