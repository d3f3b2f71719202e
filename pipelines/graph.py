"""The audit graph: read → score → rules → write, each a labelled helper.

`build` adds it to a pipeline; `lossaudit.pipelines.audit` validates the
config, plans the run and calls it. This module imports TensorFlow (through
the scorer), so the CLI imports it only once the config is known to be good.
"""

from __future__ import annotations

import functools
import time
from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

import apache_beam as beam
import pyarrow as pa

from lossaudit import (
  METRICS_NAMESPACE,
  dead_letters,
  decisions,
  drift,
  formats,
  outputs,
  preflight,
  rules,
  weights,
)
from lossaudit.clean import CleanCounts
from lossaudit.config import AuditConfig
from lossaudit.dead_letters import NOT_A_REGULAR_FILE, dead_letter
from lossaudit.early_aum import EARLY_AUM
from lossaudit.history import (
  RESOLVED_SCHEMA,
  SCORED_IDS_SCHEMA,
  SCORED_SCHEMA,
  HistoryCounts,
  with_history_schema,
)
from lossaudit.merging import merge_all
from lossaudit.previews import Previews
from lossaudit.rules import label_issue, rule_thresholds
from lossaudit.spec import PROBS_COLUMN
from lossaudit.summary import RunContext, RunStatistics
from lossaudit.transforms.buckets import BucketRows
from lossaudit.transforms.checkpoints import (
  SCORED,
  SELECTION,
  SelectCheckpoints,
)
from lossaudit.transforms.claim import (
  AfterClaim,
  ClaimOutputDir,
  JobClaim,
  RefreshLock,
)
from lossaudit.transforms.clean import (
  CleanTarget,
  WriteCleanFiles,
  WriteDecisions,
)
from lossaudit.transforms.duplicates import CountDuplicateIds
from lossaudit.transforms.flag import (
  DATA_MAP,
  DECIDED,
  MARKS,
  RELABELLED,
  WEIGHTS,
  CleanRule,
  FlagExamples,
  count_reasons,
  flagged_schema,
  relabelled_schema,
)
from lossaudit.transforms.history import (
  COUNTS,
  RESOLVED,
  FlagHistory,
  HistoryInputs,
)
from lossaudit.transforms.label_issues import (
  FindLabelIssues,
  ScoredBatches,
  with_early_aum,
)
from lossaudit.transforms.previews import (
  FetchPreviews,
  TopCandidatesCombineFn,
  preview_inputs,
)
from lossaudit.transforms.score import (
  CANDIDATES,
  DEVICE,
  TIMING,
  Candidates,
  ScoreBatches,
)
from lossaudit.transforms.spill import CountRows, ReadSpilled, SpillBatches
from lossaudit.transforms.stats import LossStats, TopRowsCombineFn
from lossaudit.transforms.write import (
  PROBABILITIES,
  WriteDeadLetters,
  WriteParquetShards,
  WriteSummary,
  losses_schema,
)
from lossaudit.weights import WeightRule

# Rows whose bytes the scorer keeps for the report's previews: the others
# are read again (`transforms.previews`).
PREVIEW_CANDIDATES = 50
LOCAL_RUNNERS = ("DirectRunner", "BundleBasedDirectRunner",
                 "SwitchingDirectRunner")


def build(p: beam.Pipeline, config: AuditConfig, plan: preflight.Plan,
          runner: str, run: Dict, baseline: Optional[drift.Baseline],
          job_claim: Optional[JobClaim] = None,
          clock: Callable[[], float] = time.time) -> None:
  """Adds the audit graph to `p`: read → score → rules → write.

  Args:
    run: `run_id` and `start_time` of this run, and `wall_start` (when
      `run()` began: `timings.wall_seconds` counts from it).
    baseline: the run to compare with, or None.
    job_claim: how the job claims `output.dir` itself (`ClaimOutputDir`),
      when the process that builds it does not hold it.
    clock: the time now, in epoch seconds (the lock's heartbeat).
  """
  scratch = outputs.scratch_prefix(config.output.dir, run["run_id"], "scored")
  heartbeat = functools.partial(RefreshLock, config.output.dir, run["run_id"],
                                config.output.lock_timeout_seconds, clock)
  claimed = (p | "ClaimOutputDir" >> ClaimOutputDir(job_claim)
             if job_claim else None)
  read = _read(p, config, plan)
  scored = _score(read, config, plan, runner,
                  outputs.scratch_prefix(config.output.dir, run["run_id"],
                                         "checkpoints"))
  scored = scored._replace(
      batches=scored.batches | "RefreshLockWhileScoring" >> heartbeat())
  scored = scored._replace(id_buckets=scored.batches | "BucketIds" >> (
      BucketRows(outputs.scratch_prefix(config.output.dir, run["run_id"],
                                        "ids"), SCORED_SCHEMA)))
  decided = _decisions(p, config, plan, baseline)
  rules = _rules(scored, config, plan, scratch,
                 _progress_interval(config, runner), heartbeat, decided)
  history = _history(scored, rules, config, plan, run, baseline, decided)
  _write(p, config, plan, read, scored, rules, history,
         run=dict(run, runner=runner), baseline=baseline, claimed=claimed,
         decided=decided)


def _decisions(p: beam.Pipeline, config: AuditConfig, plan: preflight.Plan,
               baseline: Optional[drift.Baseline]
               ) -> Optional[beam.PCollection]:
  """A singleton of the `Decisions` in force with `output.clean`: the
  baseline's `decisions.parquet` and `output.clean.decisions`, the latter
  winning per id; None without any (or without `output.clean`)."""
  if config.output.clean is None:
    return None
  found = decisions.union(baseline and baseline.decisions, plan.decisions)
  return None if found is None else p | "Decisions" >> beam.Create([found])


class _Read(NamedTuple):
  """What `_read` gives.

  Attributes:
    batches: `(file, RecordBatch)` of the examples read.
    dead_letters: entries for the input that could not be read.
  """

  batches: beam.PCollection
  dead_letters: beam.PCollection


class _Scored(NamedTuple):
  """What `_score` gives.

  Attributes:
    batches: scored RecordBatches (schema `spec.scored_schema()`).
    dead_letters: entries for the rows that could not be scored.
    timings: one `Timings` per batch scored.
    devices: `host:device` of each scoring DoFn instance.
    candidates: each bundle's running top rows as read, for the report's
      previews (`previews.candidates` tables; empty without previews).
    id_buckets: `(bucket, scratch file)` of the scored `(id, loss)`, split
      by id hash (`BucketRows`): the duplicate ids are counted, and the flag
      history joined, from them.
    selection: one `CheckpointSelection`, or None without
      `model.select_checkpoint: heldout_loss`.
  """

  batches: beam.PCollection
  dead_letters: beam.PCollection
  timings: beam.PCollection
  devices: beam.PCollection
  candidates: beam.PCollection
  id_buckets: Optional[beam.PCollection] = None
  selection: Optional[beam.PCollection] = None


class _Statistics(NamedTuple):
  """What `_statistics` gives.

  Attributes:
    loss: one `LossAccumulator.summary()` of every loss.
    slices: `(slice, LossAccumulator.summary())` pairs, or None without
      `stats.slice_by`.
    folds: `(fold, LossAccumulator.summary())` pairs, or None without
      `model.folds`.
    by_rule: `{reason: singleton}`, the statistics stage of each rule in
      force that has one (`FlagRule.statistics`).
  """

  loss: beam.PCollection
  slices: Optional[beam.PCollection]
  folds: Optional[beam.PCollection] = None
  by_rule: Dict[str, beam.PCollection] = {}


class _Flagged(NamedTuple):
  """What `_rules` gives: the flagged rows, and what flagged them.

  Attributes:
    statistics: the loss statistics the rules read.
    thresholds: one `Thresholds`: the rules.
    flagged: flagged RecordBatches (schema `flagged_schema`).
    data_map: one `DataMap`, or None without `model.checkpoints`.
    marks: `(source, FileMarks)` of each input file, or None without
      `output.clean`; `relabelled`: the rows `clean/` relabels.
    weights: `(id, weight)` batches, or None without `output.weights`.
    decided: `(found rows, DecisionCounts)` of each batch with decided
      rows, or None without decisions in force.
    spilled: the scratch files of the scored batches, when the rules read
      them back (`SpillBatches`), else None.
  """

  statistics: _Statistics
  thresholds: beam.PCollection
  flagged: beam.PCollection
  data_map: Optional[beam.PCollection] = None
  marks: Optional[beam.PCollection] = None
  relabelled: Optional[beam.PCollection] = None
  weights: Optional[beam.PCollection] = None
  spilled: Optional[beam.PCollection] = None
  decided: Optional[beam.PCollection] = None


def _read(p: beam.Pipeline, config: AuditConfig,
          plan: preflight.Plan) -> _Read:
  """The input files → batches of examples."""
  read = p | "Read" >> formats.get(config.input.format).read(
      plan.files, formats.ReadRequest(
          config.batch_size, columns=plan.columns, schema=plan.tf_schema,
          raw_records=plan.spec.reads_raw_records,
          positions=plan.spec.positions, id_column=config.input.id_column))
  return _Read(batches=read["batches"], dead_letters=read[dead_letters.TAG])


def _score(read: _Read, config: AuditConfig, plan: preflight.Plan,
           runner: str, scratch: str) -> _Scored:
  """Each batch scored once, by the model and loss of `plan.spec`; with
  `select_checkpoint`, by each checkpoint of its fold, then kept as its
  fold's selected checkpoint scored it (rows waiting in `scratch-*`)."""
  inputs = preview_inputs(plan.spec, config.input.image_shape)
  candidates = Candidates(
      tuple(column for _, column in inputs), _loss_column(config),
      PREVIEW_CANDIDATES) if inputs and plan.spec.id_column else None
  score = ScoreBatches(plan.spec, progress_interval=_progress_interval(
      config, runner),
                       candidates=candidates,
                       model_checked=plan.loss_computed_from is not None,
                       batch_size=config.batch_size)
  if config.runtime.accelerator:
    score = score.with_resource_hints(accelerator=config.runtime.accelerator)
  scored = read.batches | "ScoreBatches" >> score
  batches, selection = scored.scored, None
  if plan.spec.select_checkpoint:
    selected = batches | "SelectCheckpoints" >> SelectCheckpoints(
        plan.spec, scratch, _progress_interval(config, runner))
    batches, selection = selected[SCORED], selected[SELECTION]
  return _Scored(batches=batches,
                 dead_letters=scored[dead_letters.TAG],
                 timings=scored[TIMING], devices=scored[DEVICE],
                 candidates=scored[CANDIDATES], selection=selection)


def _progress_interval(config: AuditConfig, runner: str) -> Optional[float]:
  """Seconds between progress lines (None: none; only local runners print
  them)."""
  return config.runtime.progress_seconds if runner in LOCAL_RUNNERS else None


def _rules(scored: _Scored, config: AuditConfig, plan: preflight.Plan,
           scratch: str, progress_interval: Optional[float],
           heartbeat: Callable[[], beam.PTransform],
           decided: Optional[beam.PCollection] = None) -> _Flagged:
  """Statistics → thresholds → the flagged rows.

  When a rule needs every loss first (`FlagConfig.needs_global_statistics`,
  or `loss_bins` weights), the scored batches are spilled to scratch files
  `scratch-*` and read back for the passes after; otherwise each batch is
  flagged as it is scored, in one pass.
  """
  statistics = _statistics(scored.batches, config, plan)
  schema = plan.spec.scored_schema()
  clean, weights = config.output.clean, config.output.weights
  if (config.flag.needs_global_statistics
      or (weights and weights.scheme == "loss_bins")):
    spilled = scored.batches | "Spill" >> SpillBatches(scratch, schema)
    # The passes that read the batches back tell how far they are of it.
    total = (scored.batches | "CountScored" >> CountRows()
             if progress_interval else None)
    label_rules = _label_rules(scored.batches, spilled, total, config, plan,
                               progress_interval)
    own = dict(statistics.by_rule)
    if label_rules is not None:
      own[label_issue.REASON] = label_rules
    thresholds = statistics.loss | "Thresholds" >> beam.Map(
        rule_thresholds, flag_config=config.flag,
        rules=rules.in_force(config.flag),
        slice_stats=(None if statistics.slices is None
                     else beam.pvalue.AsDict(statistics.slices)),
        **{reason: _singleton(pcoll) for reason, pcoll in own.items()})
    to_flag = (spilled
               | "RereadForFlags" >> ReadSpilled("flagging",
                                                 progress_interval, total)
               | "RefreshLockWhileFlagging" >> heartbeat())
  else:
    thresholds = scored.batches.pipeline | "Thresholds" >> beam.Create(
        [rule_thresholds({}, config.flag)])
    to_flag, spilled = scored.batches, None
  flagged = (to_flag
             | "FlagExamples" >> FlagExamples(
                 thresholds, schema, _loss_column(config),
                 class_names=plan.spec.class_names,
                 data_map=plan.spec.dynamics,
                 clean_rule=clean and CleanRule(
                     clean.dropping, clean.relabel,
                     clean.relabel_min_probability, plan.spec.class_names),
                 weight_rule=_weight_rule(config),
                 loss_stats=statistics.loss if weights else None,
                 decisions=decided))
  if not isinstance(flagged, dict):
    return _Flagged(statistics, thresholds, flagged, spilled=spilled)
  return _Flagged(statistics, thresholds, flagged["flagged"],
                  data_map=flagged.get(DATA_MAP), marks=flagged.get(MARKS),
                  relabelled=flagged.get(RELABELLED),
                  weights=flagged.get(WEIGHTS), spilled=spilled,
                  decided=flagged.get(DECIDED) if decided else None)


def _weight_rule(config: AuditConfig) -> Optional[WeightRule]:
  weights = config.output.weights
  return weights and WeightRule(weights.scheme, weights.factor, weights.bins,
                                weights.counting)


class _History(NamedTuple):
  """What `_history` gives (see `FlagHistory`).

  Attributes:
    flagged: the flagged rows with `status`, `first_flagged`,
      `times_flagged`.
    resolved: the baseline's flags no longer flagged today.
    counts: one `HistoryCounts`.
  """

  flagged: beam.PCollection
  resolved: beam.PCollection
  counts: beam.PCollection


def _history(scored: _Scored, rules: _Flagged, config: AuditConfig,
             plan: preflight.Plan, run: Dict,
             baseline: Optional[drift.Baseline],
             decided: Optional[beam.PCollection] = None
             ) -> Optional[_History]:
  """Today's flags joined with the baseline's by id, when `gate.baseline`
  is set (no baseline run yet: every flag is new; a row kept by a decision
  is `reviewed`); else None."""
  if config.gate.baseline is None:
    return None
  joined = HistoryInputs(flagged=rules.flagged, scored=scored.id_buckets) | (
      "FlagHistory" >> FlagHistory(
          outputs.scratch_prefix(config.output.dir, run["run_id"], "history"),
          flagged_schema(plan.spec.scored_schema()),
          baseline.flagged_files if baseline else (),
          baseline.run_id if baseline else "", run["run_id"],
          baseline_ids=(() if baseline is None else baseline.ids_files
                        if baseline.ids_known else None),
          decisions=decided))
  return _History(joined["flagged"], joined[RESOLVED], joined[COUNTS])


def _statistics(scored: beam.PCollection, config: AuditConfig,
                plan: preflight.Plan) -> _Statistics:
  """The loss statistics of the scored batches, globally and per slice, and
  the top k losses."""
  flag, column = config.flag, _loss_column(config)
  quantiles = set(config.stats.quantiles) | set(
      rules.sketch_quantiles(flag))
  rule = _weight_rule(config)
  if rule is not None:  # The loss bins' edges.
    quantiles |= set(rule.quantiles())
  stats = scored | "LossStats" >> LossStats(
      config.stats.epsilon, sorted(quantiles), bool(plan.spec.slice_column),
      column, by_fold=bool(plan.spec.num_folds),
      max_slices=config.stats.max_slices,
      slice_name=plan.spec.slice_column or "")
  by_rule = {}
  for rule in rules.in_force(flag):
    found = rule.statistics(scored, flag, config.stats.epsilon, column)
    if found is not None:
      by_rule[rule.reason] = found
  return _Statistics(loss=stats["global"], slices=stats.get("slices"),
                     folds=stats.get("folds"), by_rule=by_rule)


def _label_rules(scored: beam.PCollection, spilled: beam.PCollection,
                 total: Optional[beam.PCollection], config: AuditConfig,
                 plan: preflight.Plan, progress_interval: Optional[float]
                 ) -> Optional[beam.PCollection]:
  """One `LabelRules`, or None when `flag.label_issues` is off."""
  method = config.flag.label_issues
  if not method:
    return None
  return (ScoredBatches(scored=scored, spilled=spilled)
          | "FindLabelIssues" >> FindLabelIssues(
              method, plan.spec.classifier.num_classes, progress_interval,
              total=total, checkpoints=config.model.checkpoints or (),
              max_fit=config.flag.early_aum_max_fit))


def _singleton(pcoll: Optional[beam.PCollection]):
  """`pcoll` as a singleton side input; None (a plain argument) for a rule
  that is off. Each stage saved is a fixed cost of every run."""
  return None if pcoll is None else beam.pvalue.AsSingleton(pcoll)


def _loss_column(config: AuditConfig) -> str:
  """The column the statistics and rules read: `flag.score` (`loss` or
  `deviance`), weighted with `stats.weighted`."""
  score = config.flag.score
  return f"weighted_{score}" if config.stats.weighted else score


def _write(p: beam.Pipeline, config: AuditConfig, plan: preflight.Plan,
           read: _Read, scored: _Scored, rules: _Flagged,
           history: Optional[_History], *, run: Dict,
           baseline: Optional[drift.Baseline],
           claimed: Optional[beam.PCollection] = None,
           decided: Optional[beam.PCollection] = None) -> None:
  """The flagged rows, dead letters and losses as shards (and with flag
  history, the resolved flags); then the summary, last. With `claimed`
  (`ClaimOutputDir`), what goes into `output.dir` waits for the claim."""
  out, num_shards = config.output.dir, config.output.num_shards
  schema = plan.spec.scored_schema()

  def after_claim(pcoll: beam.PCollection, name: str) -> beam.PCollection:
    if claimed is None:
      return pcoll
    return pcoll | f"{name}AfterClaim" >> AfterClaim(claimed)

  dead = _dead_letters(p, plan, read, scored)
  flagged, flagged_columns = rules.flagged, flagged_schema(schema)
  if history is not None:
    flagged = history.flagged
    flagged_columns = with_history_schema(flagged_columns)
  written = {
      outputs.FLAGGED: after_claim(flagged, "Flagged") | (
          "WriteFlagged" >> WriteParquetShards(
              out, outputs.FLAGGED, flagged_columns, num_shards)),
      outputs.DEAD_LETTER: after_claim(dead, "DeadLetters") | (
          "WriteDeadLetters" >> WriteDeadLetters(out, num_shards)),
      outputs.LOSSES: (
          after_claim(_losses(scored.batches, schema,
                              config.output.write_probabilities,
                              _early_aum_rows(config, rules)), "Losses")
          | "WriteLosses" >> WriteParquetShards(
              out, outputs.LOSSES,
              losses_schema(schema, config.output.write_probabilities,
                            early_aum=_has_early_aum(config)),
              num_shards)
          if config.output.write_losses else None),
  }
  if history is not None:
    written[outputs.RESOLVED] = after_claim(history.resolved, "Resolved") | (
        "WriteResolved" >> WriteParquetShards(
            out, outputs.RESOLVED, RESOLVED_SCHEMA, num_shards))
  if not config.output.write_losses:
    # What a later run's flag history needs of this one (else losses/).
    written[outputs.SCORED_IDS] = (
        after_claim(scored.batches, "ScoredIds")
        | "ScoredIds" >> beam.Map(lambda batch: batch.select(["id"]))
        | "WriteScoredIds" >> WriteParquetShards(
            out, outputs.SCORED_IDS, SCORED_IDS_SCHEMA, num_shards))
  # What a scheduler feeds back into training waits in the scratch until
  # the gates pass (`WriteSummary` hands it back).
  staged = outputs.stage_dir(out, run["run_id"])
  if rules.weights is not None:
    written[outputs.WEIGHTS] = rules.weights | (
        "WriteWeights" >> WriteParquetShards(
            staged, outputs.WEIGHTS, weights.SCHEMA, num_shards))
  clean_counts = None
  if rules.marks is not None:
    if config.output.clean.relabel or decided is not None:
      written[outputs.RELABELLED] = rules.relabelled | (
          "WriteRelabelled" >> WriteParquetShards(
              staged, outputs.RELABELLED,
              relabelled_schema(plan.spec.class_names), num_shards))
    clean_counts = rules.marks | "WriteClean" >> WriteCleanFiles(CleanTarget(
        staged, tuple(plan.files), config.input.format,
        label_column=(plan.spec.classifier.label_column
                      if plan.spec.classifier else None),
        class_names=plan.spec.class_names,
        num_classes=(plan.spec.classifier.num_classes
                     if plan.spec.classifier else None)))
    if decided is not None:
      clean_counts = (
          clean_counts,
          after_claim(rules.decided, "Decided") | "WriteDecisions" >> (
              WriteDecisions(out, run["run_id"], decided))
      ) | "CleanAndDecisions" >> beam.Flatten() | "SumCleanCounts" >> (
          beam.CombineGlobally(merge_all, empty=CleanCounts()))
  _write_summary(p, config, plan, scored, rules, history, dead, written,
                 run=run, baseline=baseline, clean_counts=clean_counts,
                 release_lock=claimed is not None)


def _losses(scored: beam.PCollection, schema, probabilities: bool,
            with_early_aum: Optional[beam.PCollection] = None
            ) -> beam.PCollection:
  """The scored batches as `losses/` has them: with `probabilities` (the
  internal probabilities column, renamed), when asked for; with
  `with_early_aum` (`_early_aum_rows`), those batches instead."""
  if with_early_aum is not None:
    scored, schema = with_early_aum, schema.append(
        pa.field(EARLY_AUM, pa.float64()))
  if not probabilities:
    return scored
  names = [PROBABILITIES if n == PROBS_COLUMN else n for n in schema.names]
  return scored | "NameProbabilities" >> beam.Map(
      lambda batch: batch.rename_columns(names))


def _has_early_aum(config: AuditConfig) -> bool:
  return config.flag.label_issues == EARLY_AUM


def _early_aum_rows(config: AuditConfig, rules: _Flagged
                    ) -> Optional[beam.PCollection]:
  """With `flag.label_issues: early_aum`, the scored batches read back with
  each row's early AUM (`early_aum`, null when the rule fell back); else
  None."""
  if not _has_early_aum(config):
    return None
  return (rules.spilled
          | "RereadForLosses" >> ReadSpilled()
          | "EarlyAum" >> beam.Map(
              with_early_aum,
              thresholds=beam.pvalue.AsSingleton(rules.thresholds)))


def _dead_letters(p: beam.Pipeline, plan: preflight.Plan, read: _Read,
                  scored: _Scored) -> beam.PCollection:
  """Every dead-letter entry: unread input, unscored rows, and the input
  paths that are not regular files."""
  parts = (read.dead_letters, scored.dead_letters)
  if plan.not_regular:
    parts += (p | "NotRegularFiles" >> beam.Create([
        dead_letter(path, None, "not a regular file (a FIFO, device, socket"
                    " or directory); never opened", NOT_A_REGULAR_FILE)
        for path in plan.not_regular]),)
  return (parts | "DeadLetters" >> beam.Flatten()
          | "CountDeadLetters" >> beam.ParDo(_CountDeadLetters()))


class _CountDeadLetters(beam.DoFn):
  """Counts every dead-letter entry in the `examples_dead_lettered` metric,
  whatever stage made it (as `summary.json` counts them), and passes it
  on."""

  def __init__(self):
    self._dead = beam.metrics.Metrics.counter(METRICS_NAMESPACE,
                                              "examples_dead_lettered")

  def start_bundle(self):
    self._dead.inc(0)  # Reported as 0 when nothing is dead-lettered.

  def process(self, entry):
    self._dead.inc()
    yield entry


def _write_summary(p: beam.Pipeline, config: AuditConfig,
                   plan: preflight.Plan, scored: _Scored, rules: _Flagged,
                   history: Optional[_History], dead: beam.PCollection,
                   written: Dict[str, Optional[beam.PCollection]], *,
                   run: Dict,
                   baseline: Optional[drift.Baseline],
                   clean_counts: Optional[beam.PCollection] = None,
                   release_lock: bool = False) -> None:
  """`summary.json`, `report.html` and `drift.json`, from what every stage
  counted; with `release_lock`, then the lock the job took."""
  out = config.output.dir
  flagged = rules.flagged if history is None else history.flagged
  top_flagged = flagged | "TopFlagged" >> beam.CombineGlobally(
      TopRowsCombineFn(config.report.max_rows, "score"))
  # Field of `RunStatistics` → what feeds it, and how one element sets the
  # field (None: as it is).
  feeds = {
      "loss": (rules.statistics.loss, None),
      "slices": (rules.statistics.slices, _pair_dict),
      "folds": (rules.statistics.folds, _pair_dict),
      "thresholds": (rules.thresholds, None),
      "flag_counts": (rules.flagged | "CountReasons" >> beam.Map(
          count_reasons), None),
      "dead_letter_reasons": (
          dead
          | "DeadLetterReasons" >> beam.Map(lambda entry: entry["reason"])
          | "CountDeadLetterReasons" >> beam.combiners.Count.PerElement(),
          _pair_dict),
      "duplicates": (scored.id_buckets | "CountDuplicateIds" >> (
          CountDuplicateIds()), None),
      "timings": (scored.timings, None),
      "devices": (scored.devices, lambda device: frozenset([device])),
      "top_flagged": (top_flagged, None),
      "previews": (_previews(p, config, plan, top_flagged, scored.candidates),
                   None),
      "data_map": (rules.data_map, None),
      "history": (None if history is None else history.counts, None),
      "clean": (clean_counts, None),
      "checkpoint_selection": (scored.selection, None),
  }
  # What this run has on, whatever its data: every key is then written.
  parts = [p | "SummaryKeys" >> beam.Create([RunStatistics(
      folds={} if plan.spec.num_folds else None,
      history=None if history is None else HistoryCounts(),
      clean=None if clean_counts is None else CleanCounts(),
      files={kind: () for kind in written})])]
  parts += [pcoll | f"Summary_{field}" >> beam.Map(_statistic, field, wrap)
            for field, (pcoll, wrap) in feeds.items() if pcoll is not None]
  parts += [pcoll | f"Summary_{kind}_files" >> beam.Map(
      _statistic, "files", functools.partial(_written, kind))
            for kind, pcoll in written.items() if pcoll is not None]
  _ = tuple(parts) | "WriteSummary" >> WriteSummary(
      out, config, RunContext(
          config.to_dict(), run, config.gate, baseline,
          class_names=plan.spec.class_names,
          loss_computed_from=plan.loss_computed_from),
      release_lock=release_lock)


def _pair_dict(pair: Tuple[Any, Any]) -> Dict[Any, Any]:
  """`(key, value)` as `{key: value}`."""
  return dict([pair])


def _written(kind: str, name: str) -> Dict[str, Tuple[str, ...]]:
  return {kind: (name,)}


def _statistic(value: Any, field: str,
               wrap: Optional[Callable[[Any], Any]] = None) -> RunStatistics:
  """`value` (an element of what feeds `field`) as a `RunStatistics`."""
  return RunStatistics(**{field: value if wrap is None else wrap(value)})


def _previews(p: beam.Pipeline, config: AuditConfig, plan: preflight.Plan,
              top_flagged: beam.PCollection, candidates: beam.PCollection
              ) -> Optional[beam.PCollection]:
  """One `Previews` of the top flagged rows' string inputs (thumbnails,
  text), or None when the model has no string input."""
  inputs = preview_inputs(plan.spec, config.input.image_shape)
  if not inputs:
    return None
  if not plan.spec.id_column:
    return p | "NoPreviews" >> beam.Create([Previews(
        tuple(name for name, _ in inputs), {},
        note="Examples are not shown: their ids are content fingerprints"
        " (input.id_column: null), and finding them in the input again would"
        " mean fingerprinting every record a second time. Set"
        " input.id_column to see them.")])
  top = candidates | "TopCandidates" >> beam.CombineGlobally(
      TopCandidatesCombineFn(PREVIEW_CANDIDATES))
  return top_flagged | "FetchPreviews" >> FetchPreviews(
      plan.files, config.input.format, plan.spec, plan.tf_schema,
      config.batch_size, candidates=top, image_shape=config.input.image_shape)
