"""`summary.json`, built in one place from one merged `RunStatistics`.

Every stage of a run that counts something hands the summary step one
`RunStatistics` with its own field set (the loss statistics, the flag
counts of a batch, a file written, ...); the pipeline merges them all
(`merging.merge_all`, each field by its own rule) into one value, and
`build_summary` turns that value and the run's `RunContext` into the
`summary.json` document, the `drift.json` document and what the report
draws beside them. A new output is a field here, its key in
`build_summary`, and the stage that feeds it (`pipelines.graph`).
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import platform
from typing import (
  TYPE_CHECKING,
  Any,
  Callable,
  Dict,
  FrozenSet,
  List,
  Mapping,
  Optional,
  Sequence,
  Tuple,
)

from lossaudit import drift, outputs
from lossaudit.clean import CleanCounts
from lossaudit.config import GateConfig
from lossaudit.duplicates import Duplicates
from lossaudit.flag_counts import FlagCounts
from lossaudit.history import HistoryCounts
from lossaudit.label_rules import PER_CLASS_CLASSES, LabelRules, class_columns
from lossaudit.timings import Timings

if TYPE_CHECKING:  # lossaudit.stats loads tfx_bsl, lossaudit.data_map Beam.
  from lossaudit.checkpoint_selection import CheckpointSelection
  from lossaudit.data_map import DataMap
  from lossaudit.previews import Previews
  from lossaudit.rules import Thresholds

# `summary.json` → `files`: the kinds a run writes, in this order.
FILE_KINDS = (outputs.LOSSES, outputs.FLAGGED, outputs.DEAD_LETTER,
              outputs.RESOLVED, outputs.WEIGHTS, outputs.RELABELLED,
              outputs.SCORED_IDS)


def _once(a: Any, b: Any) -> Any:
  """A statistic computed once (None: not yet, or off)."""
  if a is None:
    return b
  if b is None:
    return a
  raise ValueError(f"a statistic computed once arrived twice: {a!r}, {b!r}")


def _merged(a: Any, b: Any) -> Any:
  """Counts with `merge` (None: off)."""
  if a is None:
    return b
  if b is None:
    return a
  return a.merge(b)


def _union(a: Optional[Mapping], b: Optional[Mapping]) -> Optional[Dict]:
  """Groups each counted once, such as slices (None: off)."""
  if a is None or b is None:
    return _once(a, b)
  return {**a, **b}


def _summed(a: Mapping[str, int], b: Mapping[str, int]) -> Dict[str, int]:
  total = collections.Counter(a)
  total.update(b)
  return dict(total)


def _joined(a: Mapping[str, Tuple[str, ...]], b: Mapping[str, Tuple[str, ...]]
            ) -> Dict[str, Tuple[str, ...]]:
  return {kind: tuple(a.get(kind, ())) + tuple(b.get(kind, ()))
          for kind in {**a, **b}}


def _statistic(merge: Callable[[Any, Any], Any], default: Any = None,
               factory: Optional[Callable[[], Any]] = None):
  if factory is not None:
    return dataclasses.field(default_factory=factory,
                             metadata={"merge": merge})
  return dataclasses.field(default=default, metadata={"merge": merge})


@dataclasses.dataclass(frozen=True)
class RunStatistics:
  """What the stages of a run counted, merged into one value.

  Each stage gives a `RunStatistics` with its field set; `merge` combines
  two, each field by its rule, in any order. None marks what is off in
  this run; a `RunStatistics` listing what the run has on (an empty
  `folds`, a zero `history` or `clean`, the `files` kinds it writes) is
  merged in too, so that an empty input still gives every key.

  Attributes:
    loss: `LossAccumulator.summary()` of every score (its `cdf` draws the
      report's histogram).
    slices: `{slice: LossAccumulator.summary()}` (`stats.slice_by`).
    folds: `{fold: LossAccumulator.summary()}` with `model.folds`, else
      None.
    thresholds: the `Thresholds` the flag rules used.
    flag_counts: the flagged examples, counted.
    dead_letter_reasons: `{reason: dead-letter entries}`.
    duplicates: the ids seen more than once.
    timings: the time spent in the model and loss.
    devices: `host:device` of each scoring DoFn.
    files: `{kind: file names}` of the files written (`FILE_KINDS`).
    top_flagged: the highest-scored flagged rows, as dicts (the report's
      `report.max_rows`).
    previews: the top flagged rows' inputs (the report), or None.
    data_map: a sample of the training dynamics, or None without
      `model.checkpoints`.
    history: the flag history counts, or None without `gate.baseline`.
    clean: the `clean/` counts, or None without `output.clean`.
    checkpoint_selection: each fold's checkpoint and held-out losses, or
      None without `model.select_checkpoint: heldout_loss`.
  """

  loss: Optional[Dict[str, Any]] = _statistic(_once)
  slices: Dict[str, Dict[str, Any]] = _statistic(_union, factory=dict)
  folds: Optional[Dict[str, Dict[str, Any]]] = _statistic(_union)
  thresholds: Optional[Thresholds] = _statistic(_once)
  flag_counts: FlagCounts = _statistic(_merged, factory=FlagCounts)
  dead_letter_reasons: Dict[str, int] = _statistic(_summed, factory=dict)
  duplicates: Duplicates = _statistic(_merged, factory=Duplicates)
  timings: Timings = _statistic(_merged, factory=Timings)
  devices: FrozenSet[str] = _statistic(frozenset.union, factory=frozenset)
  files: Dict[str, Tuple[str, ...]] = _statistic(_joined, factory=dict)
  top_flagged: Optional[List[Dict[str, Any]]] = _statistic(_once)
  previews: Optional[Previews] = _statistic(_once)
  data_map: Optional[DataMap] = _statistic(_once)
  history: Optional[HistoryCounts] = _statistic(_merged)
  clean: Optional[CleanCounts] = _statistic(_merged)
  checkpoint_selection: Optional[CheckpointSelection] = _statistic(_once)

  def merge(self, other: "RunStatistics") -> "RunStatistics":
    return RunStatistics(**{
        f.name: f.metadata["merge"](getattr(self, f.name),
                                    getattr(other, f.name))
        for f in dataclasses.fields(self)})


@dataclasses.dataclass(frozen=True)
class RunContext:
  """What `summary.json` records that is known before the run starts.

  Attributes:
    config: the resolved config, as a dict (`AuditConfig.to_dict`).
    run: `run_id`, `runner` and `start_time` of the run.
    gate: the quality gates; with any set, `gate` and `drift.json`.
    baseline: the run to compare with, or None.
    class_names: the class names by index (`input.label_vocabulary`), or
      None; written as `class_names`, at top level and in `label_issues`,
      up to `PER_CLASS_CLASSES` classes.
    loss_computed_from: `logits` or `outputs` (what the crossentropy was
      computed from), or None; written as `loss.computed_from`.
  """

  config: Dict[str, Any]
  run: Dict[str, Any]
  gate: GateConfig = GateConfig()
  baseline: Optional[drift.Baseline] = None
  class_names: Optional[Tuple[str, ...]] = None
  loss_computed_from: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class Summary:
  """A run's `summary.json`, `drift.json`, and what the report draws.

  Attributes:
    document: `summary.json`, its keys in the order written.
    drift: the `drift.json` document, or None when no gate or baseline is
      set.
    cdf: evenly spaced loss quantiles `(M+1,)` for the report's histogram.
    top_flagged: the highest-scored flagged rows, as dicts.
    previews: the top flagged rows' string inputs, or None.
    data_map: a sample of the training dynamics, or None.
    label_classes: with label issues on, each class's numbers in full
      (`label_rules.class_columns`), for the report and
      `label_issues/classes.parquet`; else None.
    label_rules: with label issues on, the rules (`label_issues/
      joint.parquet` holds their joint); else None.
    flag_counts: the flags counted, every label pair among them
      (`summary.json` holds the `MAX_PAIRS` with the most issues).
  """

  document: Dict[str, Any]
  drift: Optional[Dict[str, Any]]
  cdf: Sequence[Optional[float]]
  top_flagged: Sequence[Dict[str, Any]]
  previews: Optional[Previews]
  data_map: Optional[DataMap]
  label_classes: Optional[Dict[str, list]] = None
  label_rules: Optional[LabelRules] = None
  flag_counts: FlagCounts = FlagCounts()


def versions() -> Dict[str, str]:
  """Versions of the stack that produced a run."""
  import importlib.metadata as md  # pylint: disable=g-import-not-at-top

  result = {"python": platform.python_version()}
  for dist in ("lossaudit", "tensorflow", "keras", "apache-beam", "tfx-bsl",
               "pyarrow", "numpy"):
    try:
      result[dist] = md.version(dist)
    except md.PackageNotFoundError:
      result[dist] = None
  return result


def build_summary(statistics: RunStatistics, context: RunContext,
                  seconds: float) -> Summary:
  """`summary.json` (and `drift.json`, and what the report draws) of a run.

  Args:
    statistics: everything the run counted, merged.
    context: what was known before it started.
    seconds: the run's seconds so far (`seconds`, `timings.wall_seconds`).
  """
  rules = statistics.thresholds.label_issues
  label_classes = None if rules is None else class_columns(
      rules, statistics.flag_counts.issues_by_given(rules.num_classes),
      context.class_names)
  document = _document(statistics, context, seconds, label_classes)
  return Summary(
      document=document, drift=_gate(document, context),
      cdf=statistics.loss.get("cdf", []),
      top_flagged=statistics.top_flagged or [],
      previews=statistics.previews, data_map=statistics.data_map,
      label_classes=label_classes, label_rules=rules,
      flag_counts=statistics.flag_counts)


# `label_issues.issues_by_pair` holds the pairs with the most issues, at
# most these (about 250 KB); `label_issues/pairs.parquet` holds them all.
MAX_PAIRS = 10_000


def _bounded(names: Optional[List[str]]) -> Optional[List[str]]:
  """Class names as `summary.json` writes them: null beyond
  `PER_CLASS_CLASSES` (`label_issues/classes.parquet` holds them)."""
  return names if names is None or len(names) <= PER_CLASS_CLASSES else None


def _document(statistics: RunStatistics, context: RunContext,
              seconds: float, label_classes: Optional[Dict[str, list]]
              ) -> Dict[str, Any]:
  """`summary.json`, less its `gate`; `label_classes` as `Summary`'s."""
  loss, flag_counts = statistics.loss, statistics.flag_counts
  config, run = context.config, context.run
  scored = loss["count"] + loss["nan_count"]
  dead_lettered = sum(statistics.dead_letter_reasons.values())
  names = list(context.class_names) if context.class_names else None
  thresholds = statistics.thresholds
  label_issues = None
  if thresholds.label_issues is not None:
    rules = thresholds.label_issues
    label_issues = dict(
        rules.to_dict(names),
        issues_by_pair=flag_counts.pairs_to_dict(MAX_PAIRS),
        issue_pairs=len(flag_counts.by_pair),
        issues_by_given=(label_classes["label_issues"]
                         if rules.num_classes <= PER_CLASS_CLASSES else None),
        class_names=_bounded(names))
  names = _bounded(names)
  folds = {}
  if statistics.folds is not None:  # Every fold: an empty one means a bad
    empty = {"count": 0, "nan_count": 0,  # split.
             "quantiles": {q: None for q in loss["quantiles"]}}
    every = range(max(config["model"].get("folds") or 0,
                      len(statistics.folds)))
    folds["folds"] = _counts_and_quantiles(
        [(k, statistics.folds.get(str(k), empty)) for k in every])
    selection = statistics.checkpoint_selection
    if selection is not None:
      checkpoints = [str(c) for c in config["model"]["checkpoints"]]
      for k, fold in folds["folds"].items():
        fold["selected_checkpoint"] = checkpoints[selection.selected[int(k)]]
        fold["heldout_loss"] = dict(zip(checkpoints,
                                        selection.heldout_loss[int(k)]))
  document = {
      "examples_read": scored + dead_lettered,
      "examples_scored": scored,
      "examples_dead_lettered": dead_lettered,
      "dead_letter": {"by_reason": dict(sorted(
          statistics.dead_letter_reasons.items()))},
      **statistics.duplicates.to_dict(),
      "loss": dict({k: v for k, v in loss.items() if k != "cdf"},
                   computed_from=context.loss_computed_from,
                   score=config.get("flag", {}).get("score", "loss")),
      "slices": _counts_and_quantiles(sorted(statistics.slices.items())),
      **folds,
      "thresholds": thresholds.to_dict(),
      "flagged": flag_counts.to_dict(),
      "label_issues": label_issues,
      "class_names": names,
      "config": config,
      "versions": versions(),
      "runner": run["runner"],
      "run_id": run["run_id"],
      "started": datetime.datetime.fromtimestamp(
          run["start_time"], datetime.timezone.utc).isoformat(
              timespec="seconds"),
      "devices": sorted(statistics.devices),
      "seconds": round(seconds, 3),
      "timings": statistics.timings.to_dict(seconds, scored),
      "files": {kind: sorted(statistics.files[kind]) for kind in FILE_KINDS
                if kind in statistics.files},
  }
  clean = statistics.clean
  if clean is not None:
    document["clean"] = dict(
        clean.to_dict(), adds_up=clean.kept + clean.dropped == scored)
  baseline = context.baseline
  if statistics.history is not None:
    document["flagged"].update(statistics.history.to_dict(
        baseline is None or baseline.ids_known))
    document["flag_history"] = {
        "baseline": baseline.dir if baseline else None,
        "baseline_run_id": baseline.run_id if baseline else None}
  if statistics.data_map is not None:
    document["data_map"] = {"points": statistics.data_map.points,
                            "total": int(statistics.data_map.total)}
  return document


def _gate(document: Dict[str, Any], context: RunContext
          ) -> Optional[Dict[str, Any]]:
  """The comparison with the baseline and the gates (`drift.json`), when
  any is set; records the outcome in `document["gate"]`."""
  gate, baseline = context.gate, context.baseline
  if all(v is None for v in dataclasses.astuple(gate)):
    return None
  found = drift.compare(
      document, baseline.summary if baseline else None,
      max_flagged_fraction=gate.max_flagged_fraction,
      max_quantile_shift=gate.max_quantile_shift,
      shift_quantiles=gate.shift_quantiles,
      max_new_flagged_fraction=gate.max_new_flagged_fraction,
      max_regression_fraction=gate.max_regression_fraction,
      current_dir=context.config["output"]["dir"],
      baseline_dir=baseline.dir if baseline else None)
  failures = drift.failed_gates(found)
  document["gate"] = {"baseline": baseline.dir if baseline else None,
                      "passed": found["passed"], "failures": failures,
                      "failed": failures,
                      "skipped": drift.skipped_gates(found)}
  return found


def _counts_and_quantiles(stats: Sequence[Tuple[Any, Dict]]
                          ) -> Dict[str, Dict]:
  """`{key: {count, quantiles}}` of `(key, LossAccumulator.summary())`
  pairs, in their order; the count includes non-finite losses."""
  return {str(k): {"count": v["count"] + v["nan_count"],
                   "quantiles": v["quantiles"]} for k, v in stats}
