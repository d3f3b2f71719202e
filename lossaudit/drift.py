"""Run-over-run drift and quality gates: `drift.json` from two summaries.

Pure functions on `summary.json` documents, used by `lossaudit compare` and
by `lossaudit run` when a gate or `gate.baseline` is set.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

from lossaudit.decisions import Decisions
from lossaudit.flag_counts import FlagCounts

TINY = 1e-12


class Baseline(NamedTuple):
  """The run to compare with.

  Attributes:
    dir: its `output.dir`.
    summary: its `summary.json`.
    flagged_files: its `flagged/` Parquet files (copies in this run's
      scratch, once the run has taken them).
    ids_files: Parquet files with an `id` column of every id it scored
      (its `scored_ids/`, else its `losses/`; copies, as above).
    ids_known: whether it is known which ids it scored (false for a run
      that wrote neither).
    copied: whether these are already a copy an earlier run kept.
    decisions: its `decisions.parquet`, read when it was found, or None.
  """

  dir: str
  summary: Dict
  flagged_files: Tuple[str, ...] = ()
  ids_files: Tuple[str, ...] = ()
  ids_known: bool = False
  copied: bool = False
  decisions: Optional[Decisions] = None

  @property
  def run_id(self) -> str:
    return str(self.summary.get("run_id") or "")


def flagged_rate(summary: Dict) -> float:
  """`flagged.total / examples_scored` (0 for an empty run)."""
  scored = summary["examples_scored"]
  return summary["flagged"]["total"] / scored if scored else 0.0


def new_flagged_rate(summary: Dict) -> Optional[float]:
  """`flagged.new / examples_scored`, or None without flag history."""
  new = summary["flagged"].get("new")
  if new is None:
    return None
  scored = summary["examples_scored"]
  return new / scored if scored else 0.0


def flag_history(summary: Dict) -> Optional[Dict[str, int]]:
  """`{new, persistent, resolved, baseline_not_scored}` of a summary made
  with flag history, or None."""
  flagged = summary["flagged"]
  if flagged.get("new") is None:
    return None
  return {k: flagged.get(k) for k in ("new", "persistent", "resolved",
                                      "baseline_not_scored", "new_rows",
                                      "regressions", "scored_in_both")}


def dead_letter_rate(summary: Dict) -> float:
  read = summary["examples_read"]
  return summary["examples_dead_lettered"] / read if read else 0.0


def label_issue_rates(summary: Dict) -> Optional[Dict[str, float]]:
  """Per given class: label issues / examples with that label, or None
  (also beyond the classes whose counts `summary.json` holds)."""
  label_issues = summary.get("label_issues")
  if not label_issues or label_issues.get("label_counts") is None:
    return None
  # Summaries before `issues_by_given` listed every pair.
  issues = label_issues.get("issues_by_given") or (
      FlagCounts.from_summary(summary).issues_by_given(
          len(label_issues["label_counts"])))
  return {str(k): issues[k] / n if n else 0.0
          for k, n in enumerate(label_issues["label_counts"])}


def class_names(summary: Optional[Dict]) -> Optional[Dict[str, str]]:
  """`{class id: name}` (`input.label_vocabulary`) of a summary, or None.

  The ids are strings, as the keys of `label_issue_rate`.
  """
  if not summary:
    return None
  names = summary.get("class_names") or (
      summary.get("label_issues") or {}).get("class_names")
  return {str(k): str(name) for k, name in enumerate(names)} if names else None


def quantile_shift(baseline: Optional[float], current: Optional[float]
                   ) -> Optional[float]:
  """`|current - baseline| / |baseline|`: the relative move of a quantile."""
  if baseline is None or current is None:
    return None
  return abs(current - baseline) / max(abs(baseline), TINY)


def _change(baseline: Optional[float], current: Optional[float]) -> Dict:
  return {"baseline": baseline, "current": current,
          "change": None if baseline is None or current is None else
          current - baseline}


def _gate(name: str, limit: float, value: Optional[float], what: str,
          **extra: Any) -> Dict:
  passed = value is None or value <= limit
  return {"gate": name, "limit": limit, "value": value, "passed": passed,
          "exceeded_by": None if passed else value - limit, "what": what,
          **extra}


def compare(current: Dict, baseline: Optional[Dict], *,
            max_flagged_fraction: Optional[float] = None,
            max_quantile_shift: Optional[float] = None,
            shift_quantiles: Optional[Sequence[float]] = None,
            max_new_flagged_fraction: Optional[float] = None,
            max_regression_fraction: Optional[float] = None,
            current_dir: Optional[str] = None,
            baseline_dir: Optional[str] = None) -> Dict:
  """The `drift.json` document.

  Args:
    current: this run's summary.
    baseline: the earlier run's summary, or None (the gates that need one
      are then skipped, and say so).
    max_flagged_fraction: fail when `flagged.total / examples_scored`
      exceeds it.
    max_quantile_shift: fail when any loss quantile moves by more than this
      fraction of its baseline value.
    shift_quantiles: the quantiles that gate watches; None: all.
    max_new_flagged_fraction: fail when `flagged.new / examples_scored`
      (flag history) exceeds it; skipped without a baseline.
    max_regression_fraction: fail when `flagged.regressions /
      flagged.scored_in_both` (new flags on ids the baseline scored, over
      the ids both runs scored) exceeds it; skipped without a baseline or
      its scored ids.
    current_dir, baseline_dir: where the summaries came from, for the record.

  Returns:
    `{"baseline", "current", "quantiles", "flagged_rate", "dead_letter_rate",
    "label_issue_rate", "class_names", "flag_history", "gates", "passed"}`;
    `flag_history` is `flag_history(current)`; each gate has
    its `limit`, `value`, `passed` and `exceeded_by`; `class_names` names
    the class ids of `label_issue_rate` (`{id: name}`, the current run's
    vocabulary, else the baseline's), or is None without a vocabulary.
  """
  quantiles = {}
  skipped = "; skipped: no baseline run"
  if baseline is not None and score_of(baseline) != score_of(current):
    skipped = (f"; skipped: the baseline's quantiles are of the"
               f" {score_of(baseline)}, this run's of the {score_of(current)}"
               f" (flag.score)")
  elif baseline is not None:
    skipped = ""
    for q, value in current["loss"]["quantiles"].items():
      before = baseline["loss"]["quantiles"].get(q)
      quantiles[q] = dict(_change(before, value),
                          shift=quantile_shift(before, value))
  rates = label_issue_rates(current)
  base_rates = label_issue_rates(baseline) if baseline is not None else None
  label_rates = None
  if rates is not None:
    label_rates = {k: _change((base_rates or {}).get(k), v)
                   for k, v in rates.items()}
  gates: List[Dict] = []
  if max_flagged_fraction is not None:
    gates.append(_gate("max_flagged_fraction", max_flagged_fraction,
                       flagged_rate(current),
                       "flagged.total / examples_scored of this run"))
  if max_quantile_shift is not None:
    watched = (None if shift_quantiles is None else
               {_quantile_key(q, current) for q in shift_quantiles})
    shifts = {q: d["shift"] for q, d in quantiles.items()
              if d["shift"] is not None and (watched is None or q in watched)}
    worst = max(shifts, key=shifts.get) if shifts else None
    gates.append(_gate(
        "max_quantile_shift", max_quantile_shift,
        shifts[worst] if worst else None,
        "the largest |current - baseline| / |baseline| over the loss"
        " quantiles" + skipped,
        quantile=worst))
  if max_new_flagged_fraction is not None:
    history = flag_history(current)
    why = ("; skipped: no baseline run" if baseline is None else
           "; skipped: this run has no flag history (gate.baseline)"
           if history is None else "")
    gates.append(_gate(
        "max_new_flagged_fraction", max_new_flagged_fraction,
        None if why else new_flagged_rate(current),
        "flagged.new / examples_scored: flags the baseline did not have"
        + why))
  if max_regression_fraction is not None:
    flagged = current["flagged"]
    both = flagged.get("scored_in_both")
    why = ("; skipped: no baseline run" if baseline is None else
           "; skipped: new rows and regressions are unknown (the baseline"
           " wrote neither losses/ nor scored_ids/, or this run was not made"
           " against it)" if both is None else "")
    gates.append(_gate(
        "max_regression_fraction", max_regression_fraction,
        None if why else (flagged["regressions"] / both if both else 0.0),
        "flagged.regressions / flagged.scored_in_both: new flags on ids the"
        " baseline scored and did not flag" + why))
  return {
      "baseline": baseline_dir,
      "current": current_dir,
      "quantiles": quantiles,
      "flagged_rate": _change(
          flagged_rate(baseline) if baseline is not None else None,
          flagged_rate(current)),
      "dead_letter_rate": _change(
          dead_letter_rate(baseline) if baseline is not None else None,
          dead_letter_rate(current)),
      "label_issue_rate": label_rates,
      "class_names": class_names(current) or class_names(baseline),
      "flag_history": flag_history(current),
      "gates": gates,
      "passed": all(g["passed"] for g in gates),
  }


def score_of(summary: Dict) -> str:
  """What a summary's loss statistics are of: `loss` or `deviance`
  (`flag.score`; summaries from before it are of the loss)."""
  return summary["loss"].get("score") or "loss"


def _quantile_key(q: float, summary: Dict) -> str:
  """The summary's key of quantile `q` (keys are written as in the config)."""
  for key in summary["loss"]["quantiles"]:
    if float(key) == float(q):
      return key
  return str(q)


def failed_gates(drift: Dict) -> List[str]:
  """One line per failed gate: name, value, limit and by how much."""
  lines = []
  for g in drift["gates"]:
    if not g["passed"]:
      where = f" (quantile {g['quantile']})" if g.get("quantile") else ""
      lines.append(f"gate {g['gate']} failed{where}: {_num(g['value'])} >"
                   f" {_num(g['limit'])}, by {_num(g['exceeded_by'])}")
  return lines


def skipped_gates(drift: Dict) -> List[str]:
  """One line per gate that could not be measured, and why (no baseline
  yet, or a baseline that kept no scored ids)."""
  return [f"gate {g['gate']} skipped: {g['what'].split('; skipped: ')[1]}"
          for g in drift["gates"]
          if g["value"] is None and "; skipped: " in g["what"]]


def _num(value: float) -> str:
  return f"{value:.4g}" if isinstance(value, float) and math.isfinite(
      value) else str(value)
