"""What a config key accepts: `Rule`, its `Range`, and the common rules.

Apart from `lossaudit.config` so that the flag rules (`lossaudit.rules`),
which declare their own keys, can use them without importing the config.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Callable, Optional, Pattern, Sequence, Tuple

from lossaudit.errors import expected

# The scheme part of a URI, as Beam's FileSystems.get_scheme reads it.
SCHEME = re.compile(r"([a-zA-Z][-a-zA-Z0-9+.]*)://")


def fail(key: str, what: str, received: Any) -> None:
  raise expected(key, what, received)


@dataclasses.dataclass(frozen=True)
class Range:
  """Bounds of a number, closed unless `open_low` / `open_high`; NaN is out.

  Attributes:
    expected: the phrase when a value is out of range; None: the rule's.
  """

  low: float = -math.inf
  high: float = math.inf
  open_low: bool = False
  open_high: bool = False
  expected: Optional[str] = None

  def holds(self, value: Any) -> bool:
    too_low = value <= self.low if self.open_low else value < self.low
    too_high = value >= self.high if self.open_high else value > self.high
    # No math.isnan on an int: one of 400 digits would raise OverflowError.
    nan = isinstance(value, float) and math.isnan(value)
    return not (too_low or too_high or nan)


@dataclasses.dataclass(frozen=True)
class Rule:
  """What one config key accepts: the `metadata[RULE]` of its field.

  `apply` checks a value in this order, each failure raising
  `key: expected <phrase>. Received: <value>` with `expected` as the phrase
  unless said otherwise: None (accepted when `nullable`, else refused with
  `null_expected` when set), `types` (bool only when listed), `nonempty`,
  `choices`, `range` (its own phrase), `pattern` (a full match), `location`
  (a local path or gs:// URI, its own phrase), then `check(key, value)` for
  what is particular to the key. `convert` makes the value stored.
  """

  expected: str
  types: Tuple[type, ...] = ()
  nullable: bool = False
  null_expected: Optional[str] = None
  nonempty: bool = False
  choices: Tuple[Any, ...] = ()
  range: Optional[Range] = None
  pattern: Optional[Pattern[str]] = None
  location: bool = False
  check: Optional[Callable[[str, Any], None]] = None
  convert: Optional[Callable[[Any], Any]] = None

  def apply(self, key: str, value: Any) -> Any:
    """`value` as stored, once checked.

    Raises:
      ConfigError: `value` breaks the rule.
    """
    if value is None:
      if self.nullable:
        return None
      if self.null_expected is not None:
        fail(key, self.null_expected, value)
    if self.types and (not isinstance(value, self.types) or (
        isinstance(value, bool) and bool not in self.types)):
      fail(key, self.expected, value)
    if self.nonempty and not value:
      fail(key, self.expected, value)
    if self.choices and value not in self.choices:
      fail(key, self.expected, value)
    if self.range is not None and not self.range.holds(value):
      fail(key, self.range.expected or self.expected, value)
    if self.pattern is not None and not self.pattern.fullmatch(value):
      fail(key, self.expected, value)
    if self.location:
      check_location(key, value)
    if self.check is not None:
      self.check(key, value)
    return value if self.convert is None else self.convert(value)


def number(low: float = -math.inf, high: float = math.inf, *,
            open_low: bool = False, open_high: bool = False,
            nullable: bool = True, null_expected: Optional[str] = None
            ) -> Rule:
  """A number in a range (null too when `nullable`)."""
  left = "(" if open_low else "["
  right = ")" if open_high else "]"
  within = f"a number in {left}{low}, {high}{right}"
  return Rule("a number or null" if nullable else within,
              types=(int, float), nullable=nullable,
              null_expected=null_expected or within,
              range=Range(low, high, open_low, open_high, within))


def integer(low: int, high: float, expected: Optional[str] = None, *,
             nullable: bool = False) -> Rule:
  expected = expected or f"an integer in [{low}, {high}]"
  return Rule(expected, types=(int,), nullable=nullable,
              range=Range(low, high))


def one_of(choices: Sequence[Any], *, nullable: bool = False) -> Rule:
  """One of `choices`, listed in the message in the order given (a set's
  order would change from run to run)."""
  null = "null or " if nullable else ""
  listed = ", ".join(repr(c) for c in choices)
  return Rule(f"{null}one of {{{listed}}}", choices=tuple(choices),
              nullable=nullable)


def check_location(key: str, value: str) -> None:
  """Refuses URIs of filesystems other than GCS (local paths pass)."""
  match = SCHEME.match(value)
  if match and (match.group(1) != "gs" or value == "gs://"):
    fail(key, "a local path or gs:// URI", value)


def is_number(value: Any) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)
