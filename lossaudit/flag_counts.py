"""`FlagCounts`: how many examples were flagged, by reason and label pair.

Counted per flagged batch (`lossaudit.transforms.flag.count_reasons`) and
merged. `summary.json` writes them as `flagged` and, with label issues on,
`label_issues.issues_by_pair` (`"given->suggested"` keys); `from_summary`
reads them back, so no other module parses those keys.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np


class LabelPair(NamedTuple):
  """A label issue's given label and the label the model suggests."""

  given: int
  suggested: int

  def key(self) -> str:
    """The pair as `summary.json` writes it: `"given->suggested"`."""
    return f"{self.given}->{self.suggested}"

  @classmethod
  def from_key(cls, key: str) -> "LabelPair":
    given, suggested = key.split("->")
    return cls(int(given), int(suggested))


@dataclasses.dataclass(frozen=True)
class FlagCounts:
  """Flagged examples, counted.

  Attributes:
    total: flagged examples (an example with several reasons counts once).
    by_reason: `{reason: examples}`; an example counts under each reason.
    by_pair: label issues by `LabelPair`; empty with label issues off.
  """

  total: int = 0
  by_reason: Dict[str, int] = dataclasses.field(default_factory=dict)
  by_pair: Dict[LabelPair, int] = dataclasses.field(default_factory=dict)

  def merge(self, other: "FlagCounts") -> "FlagCounts":
    return FlagCounts(self.total + other.total,
                      _add(self.by_reason, other.by_reason),
                      _add(self.by_pair, other.by_pair))

  def to_dict(self) -> Dict:
    """`flagged` in `summary.json`: `total` and `by_reason`, by name."""
    return {"total": self.total,
            "by_reason": dict(sorted(self.by_reason.items()))}

  def pairs_to_dict(self, most: Optional[int] = None) -> Dict[str, int]:
    """`label_issues.issues_by_pair` in `summary.json`, sorted by key: the
    `most` pairs with the most issues (`top_pairs`), or all (None)."""
    return dict(sorted((pair.key(), n) for pair, n in self.top_pairs(most)))

  @classmethod
  def from_summary(cls, summary: Dict) -> "FlagCounts":
    """The counts a `summary.json` document records."""
    flagged = summary["flagged"]
    pairs = (summary.get("label_issues") or {}).get("issues_by_pair", {})
    return cls(flagged["total"], dict(flagged.get("by_reason", {})),
               {LabelPair.from_key(k): n for k, n in pairs.items()})

  def issue_matrix(self, num_classes: int,
                   classes: Optional[Sequence[int]] = None) -> np.ndarray:
    """Label issues `(K, K)` by given label (rows) and suggested label; with
    `classes` `(M,)`, only theirs `(M, M)`, in their order."""
    if classes is None:
      classes = range(num_classes)
    index = {k: i for i, k in enumerate(classes)}
    counts = np.zeros((len(index), len(index)), dtype=np.int64)
    for pair, n in self.by_pair.items():
      if pair.given in index and pair.suggested in index:
        counts[index[pair.given], index[pair.suggested]] = n
    return counts

  def most_involved(self, most: int) -> List[int]:
    """The at most `most` classes in the most label issues, given or
    suggested (ties: the smaller class), in class order."""
    involved = collections.Counter()
    for pair, n in self.by_pair.items():
      involved[pair.given] += n
      involved[pair.suggested] += n
    top = sorted(involved.items(), key=lambda kv: (-kv[1], kv[0]))[:most]
    return sorted(k for k, _ in top)

  def top_pairs(self, most: Optional[int] = None
                ) -> List[Tuple[LabelPair, int]]:
    """The at most `most` (None: all) label pairs with the most issues, most
    first (ties: the smaller pair first)."""
    return sorted(self.by_pair.items(), key=lambda kv: (-kv[1], kv[0]))[:most]

  def issues_by_given(self, num_classes: int) -> List[int]:
    """Label issues `(K,)` by given label."""
    issues = [0] * num_classes
    for pair, n in self.by_pair.items():
      issues[pair.given] += n
    return issues


def _add(a: Dict, b: Dict) -> Dict:
  total = collections.Counter(a)
  total.update(b)
  return dict(total)


# `merge_all` for `FlagCounts`: the pipeline graph's combiner of the counts.
