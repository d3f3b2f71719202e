"""What a run would cost, before it starts: passes, bytes, worker-hours.

`plan_cost` follows the audit graph (`lossaudit.pipelines.graph`) stage by
stage from the config alone, for `rows` examples of `classes` classes:

- passes over the input (one; two with `output.clean`, which rewrites the
  input files) and over the scratch (`transforms/spill.py`: the scored rows
  are written once when a rule needs every loss first, then read back by
  the flagging pass and by each label-issue pass after the first);
- bytes spilled and re-read: the scored rows' Arrow IPC size, computed from
  the scored schema the config implies;
- bytes shuffled: what enters each GroupByKey. The combiners are lifted, so
  they shuffle one compacted accumulator per bundle, not rows; their sizes
  are the pickled sizes measured for this code (`benchmarks/plan_check.py`
  checks the whole against a real run). Rows are shuffled only with
  `output.num_shards` set (Beam's sharded write groups every row);
- the side inputs the workers load, and the worker-hours implied by a
  measured rows per second.

Figures per bundle depend on how many rows a bundle holds: the DirectRunner
runs each stage as one bundle, Dataflow splits the input into many. The
default (`ROWS_PER_BUNDLE`) is stated in docs/running-at-a-billion-rows.md.
"""

from __future__ import annotations

import dataclasses
import math
from typing import List, Tuple

import pyarrow as pa

from lossaudit import confident
from lossaudit.config import AuditConfig
from lossaudit.early_aum import EARLY_AUM

# Rows one bundle of a scoring worker holds, unless told (`rows_per_bundle`).
ROWS_PER_BUNDLE = 1_000_000
# End-to-end rows per second of one worker, unless told: measured on the
# DirectRunner (one process, 2 cores) auditing a predictions column of 100
# classes with a loss quantile and label issues (docs: "Running at a
# billion rows"). A model's scoring is usually slower: pass your own.
DEFAULT_ROWS_PER_SECOND = 30_000
# Input bytes per row when the input cannot be sampled.
DEFAULT_INPUT_BYTES_PER_ROW = 1_000
# Characters of an id when the input cannot be sampled.
DEFAULT_ID_LENGTH = 16
# Label issues among the rows when told nothing else (sizes the
# prune_by_noise_rate candidates and the label-pair counts).
DEFAULT_ISSUE_RATE = 0.1

# Pickled sizes of accumulators, measured (bytes): a compacted quantile
# sketch holds 32 bytes a value until its size reaches its cap, about
# (3264 - 349 log10(1/epsilon)) / epsilon; a numpy array pickles with
# ~150 bytes of header; a cell's candidates cost ~300 bytes besides 8 bytes
# of margin and the id (~6 bytes of pickling each); a label pair's count
# ~12 bytes.
_SKETCH_BYTES_PER_VALUE = 32
_ARRAY_OVERHEAD = 150
_CELL_OVERHEAD = 300
_CANDIDATE_OVERHEAD = 8 + 6
_PAIR_BYTES = 12
# Small per-bundle accumulators and names (bytes, measured): the flag
# counts, timings, devices, row count and duplicate-id counts; a row of the
# report's flagged rows (`report.max_rows` of them); one scratch file's
# name through a Reshuffle; a bucket's scratch file name; a written file's
# name.
_SMALL_ACCUMULATORS = 1_600
_TOP_ROW_BYTES = 130
_PATH_BYTES = 250
_BUCKETS = 64
_BUCKET_BYTES = 120
_WRITTEN_FILE_BYTES = 150


@dataclasses.dataclass(frozen=True)
class Shuffle:
  """One shuffling step.

  Attributes:
    name: the step (its stage name in the graph).
    bytes: encoded bytes entering its GroupByKey, in all.
    per: what is shuffled: `bundle` (an accumulator or a name per bundle)
      or `row`.
  """

  name: str
  bytes: int
  per: str


@dataclasses.dataclass(frozen=True)
class CostPlan:
  """What a run of `rows` examples would take.

  Attributes:
    rows: examples.
    classes: K (0: not a classifier).
    bundles: bundles of the scoring stage assumed.
    input_passes: reads of the whole input.
    scratch_passes: reads of the spilled scored rows (0: nothing spilled).
    input_bytes: bytes of input read, all passes.
    spill_bytes: bytes written to scratch (`spill_bytes_written`).
    reread_bytes: bytes read back from scratch, all passes
      (`spill_bytes_reread`).
    scored_row_bytes: Arrow IPC bytes of one scored row.
    shuffles: each shuffling step.
    accumulators: `(name, bytes)` of one bundle's accumulators.
    side_inputs: `(name, bytes)` of each side input a worker loads.
    rows_per_second: the end-to-end rate of one worker assumed.
    worker_hours: `rows / rows_per_second / 3600`.
  """

  rows: int
  classes: int
  bundles: int
  input_passes: int
  scratch_passes: int
  input_bytes: int
  spill_bytes: int
  reread_bytes: int
  scored_row_bytes: float
  shuffles: Tuple[Shuffle, ...]
  accumulators: Tuple[Tuple[str, int], ...]
  side_inputs: Tuple[Tuple[str, int], ...]
  rows_per_second: float
  worker_hours: float

  @property
  def shuffle_bytes(self) -> int:
    """Bytes shuffled, every step."""
    return sum(s.bytes for s in self.shuffles)


def sketch_bytes(values: int, epsilon: float) -> int:
  """Pickled bytes of a compacted `LossAccumulator` of `values` losses."""
  cap = (3264 - 349 * math.log10(1 / epsilon)) / epsilon
  return int(min(_SKETCH_BYTES_PER_VALUE * values, cap)) + 300


def distinct_cells(draws: float, cells: int) -> float:
  """Expected distinct cells hit by `draws` uniform draws over `cells`."""
  if cells <= 0:
    return 0.0
  return cells * -math.expm1(-draws / cells)


def scored_schema(config: AuditConfig, classes: int) -> pa.Schema:
  """The scored rows' schema as the config implies it (one loss; the class
  signals of a classifier), as `ScoringSpec.scored_schema` makes it."""
  fields = [pa.field("id", pa.string()), pa.field("loss", pa.float64())]
  if config.input.weight_column:
    fields.append(pa.field("weighted_loss", pa.float64()))
  if classes:
    fields += [pa.field(name, pa.int64())
               for name in ("given_label", "predicted_label")]
    fields += [pa.field(name, pa.float64())
               for name in ("self_confidence", "margin")]
    if config.input.label_vocabulary is not None:
      fields += [pa.field(name, pa.string())
                 for name in ("given_class", "predicted_class")]
  if config.stats.slice_by:
    fields.append(pa.field("slice", pa.string()))
  if classes and (config.flag.label_issues is not None
                  or config.output.write_probabilities):
    fields.append(pa.field("probs", pa.list_(pa.float32(), classes)))
  if classes and config.flag.label_issues == EARLY_AUM:
    c = len(config.model.checkpoints)
    fields += [pa.field("margins", pa.list_(pa.float32(), c)),
               pa.field("correct", pa.list_(pa.bool_(), c))]
  return pa.schema(fields)


def batch_ipc_bytes(schema: pa.Schema, rows: int, id_length: int) -> int:
  """Arrow IPC bytes of a batch of `rows` rows of `schema`, strings of
  `id_length` characters."""
  arrays = []
  for field in schema:
    if pa.types.is_string(field.type):
      arrays.append(pa.array(["x" * id_length] * rows, pa.string()))
    elif pa.types.is_fixed_size_list(field.type):
      width = field.type.list_size
      arrays.append(pa.FixedSizeListArray.from_arrays(
          pa.nulls(rows * width, field.type.value_type).fill_null(0), width))
    else:
      arrays.append(pa.nulls(rows, field.type).fill_null(0))
  batch = pa.RecordBatch.from_arrays(arrays, schema=schema)
  return pa.ipc.get_record_batch_size(batch)


def _spilled_bytes(config: AuditConfig, schema: pa.Schema, rows: int,
                   id_length: int) -> int:
  """Bytes of `rows` scored rows spilled in batches of `batch_size`."""
  size = config.batch_size
  full, rest = divmod(rows, size)
  total = full * batch_ipc_bytes(schema, size, id_length) if full else 0
  if rest:
    total += batch_ipc_bytes(schema, rest, id_length)
  return total


def spills(config: AuditConfig) -> bool:
  """Whether the scored rows go to scratch (`graph._rules`)."""
  weights = config.output.weights
  return bool(config.flag.needs_global_statistics
              or (weights and weights.scheme == "loss_bins"))


def scratch_passes(config: AuditConfig) -> int:
  """Reads of the spilled rows: flagging, then each label-issue pass
  after the thresholds (the joint; prune_by_noise_rate's and early AUM's
  cells; early AUM's fit, ranking and `losses/`)."""
  if not spills(config):
    return 0
  method = config.flag.label_issues
  return 1 + (1 if method else 0) + (
      1 if method in ("prune_by_noise_rate", EARLY_AUM) else 0) + (
          3 if method == EARLY_AUM else 0)


def checkpoint_rows(config: AuditConfig) -> int:
  """How many times each row is spilled and read back before each fold's
  checkpoint is selected (`model.select_checkpoint: heldout_loss`: once per
  checkpoint of its fold), 0 otherwise."""
  if config.model.select_checkpoint != "heldout_loss":
    return 0
  return len(config.model.checkpoints)


def flagged_rate(config: AuditConfig, rows: int, issue_rate: float
                 ) -> float:
  """The share of the rows flagged, as the rules with a known rate add up:
  `1 - q` of each quantile rule, `top_k / rows`, and `issue_rate` (label
  issues); the rules of a fixed threshold flag what the data holds, counted
  as 1% each."""
  flag = config.flag
  rate = issue_rate + (flag.top_k or 0) / max(rows, 1)
  rate += sum(1.0 - q for q in (flag.loss_quantile, flag.slice_quantile,
                                flag.aum_quantile) if q is not None)
  rate += 0.01 * sum(v is not None for v in (
      flag.loss_threshold, flag.robust_z, flag.aum_below))
  return min(rate, 1.0)


def plan_cost(config: AuditConfig, rows: int, classes: int, *,
              rows_per_second: float = DEFAULT_ROWS_PER_SECOND,
              input_bytes_per_row: float = DEFAULT_INPUT_BYTES_PER_ROW,
              id_length: int = DEFAULT_ID_LENGTH,
              rows_per_bundle: int = ROWS_PER_BUNDLE,
              issue_rate: float = DEFAULT_ISSUE_RATE) -> CostPlan:
  """The `CostPlan` of auditing `rows` examples of `classes` classes.

  Args:
    config: the run's config.
    rows: N, examples.
    classes: K (0 for a model that is not a classifier).
    rows_per_second: one worker's end-to-end rate.
    input_bytes_per_row: bytes of input a row.
    id_length: characters of an id.
    rows_per_bundle: rows a scoring bundle holds (see module docstring).
    issue_rate: label issues among the rows.
  """
  bundles = max(1, math.ceil(rows / rows_per_bundle))
  bundle_rows = math.ceil(rows / bundles)
  schema = scored_schema(config, classes)
  spilled = _spilled_bytes(config, schema, rows, id_length) if rows else 0
  passes = scratch_passes(config)
  # Every checkpoint's rows, written once and read back once.
  selecting = spilled * checkpoint_rows(config)
  method = config.flag.label_issues if classes else None
  flag = config.flag

  accumulators: List[Tuple[str, int]] = []
  shuffles: List[Shuffle] = []

  def per_bundle(name: str, size: int) -> None:
    accumulators.append((name, size))
    shuffles.append(Shuffle(name, size * bundles, "bundle"))

  epsilon = config.stats.epsilon
  per_bundle("LossStats", sketch_bytes(bundle_rows, epsilon))
  if flag.aum_quantile is not None:
    per_bundle("AumStats", sketch_bytes(bundle_rows, epsilon))
  if flag.top_k:
    per_bundle("TopK", _ARRAY_OVERHEAD * 2 + flag.top_k * (
        8 + id_length + 6))
  per_bundle("TopFlagged", _ARRAY_OVERHEAD + _TOP_ROW_BYTES * min(
      config.report.max_rows, math.ceil(
          bundle_rows * flagged_rate(config, rows, issue_rate if method
                                     else 0.0))))
  issues = issue_rate * bundle_rows
  pairs = distinct_cells(issues, classes * (classes - 1))
  counts = _SMALL_ACCUMULATORS + (int(_PAIR_BYTES * pairs) if method else 0)
  per_bundle("SumCounts and other counts", counts)
  if method:
    per_bundle("FindLabelIssues/SumSelfConfidence",
               2 * _ARRAY_OVERHEAD + 16 * classes)
    # prune_by_noise_rate's joint also counts each cell's margins in
    # `margin_bin_count(K)` bins, for the cells' cut-offs.
    bins = (confident.margin_bin_count(classes)
            if method in ("prune_by_noise_rate", EARLY_AUM) else 0)
    per_bundle("FindLabelIssues/SumJoint",
               3 * _ARRAY_OVERHEAD + 8 * classes * classes + 8 * classes
               + (_ARRAY_OVERHEAD + 8 * classes * classes * bins
                  if bins else 0))
    if method == EARLY_AUM:  # Each class's smallest early AUMs.
      per_bundle("FindLabelIssues/AumCandidates", int(
          _ARRAY_OVERHEAD * 4 + 24 * issues))
    if method in ("prune_by_noise_rate", EARLY_AUM):
      per_bundle("FindLabelIssues/TopNPerCell", int(
          _CELL_OVERHEAD * pairs
          + (_CANDIDATE_OVERHEAD + id_length) * issues))
  names = _BUCKETS * _BUCKET_BYTES + (1 + passes) * _PATH_BYTES + (
      2 * _WRITTEN_FILE_BYTES)
  shuffles.append(Shuffle("file names (Reshuffles, buckets, writes)",
                          names * bundles, "bundle"))
  if config.output.num_shards:
    if config.output.write_losses:
      shuffles.append(Shuffle("WriteLosses (output.num_shards)",
                              _spilled_bytes(config, schema, rows,
                                             id_length), "row"))

  side_inputs = [("Thresholds", 2_000)]
  if method:
    cells = (distinct_cells(issue_rate * rows, classes * (classes - 1))
             if method in ("prune_by_noise_rate", EARLY_AUM) else 0)
    # LabelRules: the calibrated joint (floats) and prune counts (ints) as
    # lists of K×K, and each cell's n-th candidate.
    side_inputs.append(("FindLabelIssues rules", int(
        9 * classes * classes
        + (5 * classes * classes if method in ("prune_by_noise_rate",
                                                EARLY_AUM) else 0)
        + cells * (30 + id_length) + 30 * classes)))
    side_inputs.append(("FindLabelIssues thresholds", 9 * classes + 100))

  return CostPlan(
      rows=rows, classes=classes, bundles=bundles,
      input_passes=1 + (1 if config.output.clean else 0),
      scratch_passes=passes + (1 if selecting else 0),
      input_bytes=int(rows * input_bytes_per_row * (
          1 + (1 if config.output.clean else 0))),
      spill_bytes=(spilled if passes else 0) + selecting,
      reread_bytes=spilled * passes + selecting,
      scored_row_bytes=(spilled / rows if rows else 0.0),
      shuffles=tuple(shuffles), accumulators=tuple(accumulators),
      side_inputs=tuple(side_inputs), rows_per_second=rows_per_second,
      worker_hours=rows / rows_per_second / 3600)


def format_bytes(n: float) -> str:
  """`n` bytes in B, KB, MB, GB, TB (powers of 1000)."""
  if abs(n) < 1000:
    return f"{n:.0f} B"
  for unit in ("KB", "MB", "GB", "TB"):
    n /= 1000
    if abs(n) < 1000:
      return f"{n:.1f} {unit}"
  return f"{n / 1000:.1f} PB"


def plan_table(plan: CostPlan) -> str:
  """The plan as the lines `lossaudit plan` prints."""
  lines = [
      f"rows {plan.rows:,}, classes {plan.classes:,}, bundles"
      f" {plan.bundles:,} (scored row: {plan.scored_row_bytes:.0f} bytes)",
      f"passes over the input    {plan.input_passes}"
      f" ({format_bytes(plan.input_bytes)} read)",
      f"passes over the scratch  {plan.scratch_passes}",
      f"spilled to scratch       {format_bytes(plan.spill_bytes)}",
      f"re-read from scratch     {format_bytes(plan.reread_bytes)}",
      f"shuffled                 {format_bytes(plan.shuffle_bytes)}",
  ]
  what = {"bundle": "one a bundle", "row": "every row"}
  lines += [f"  {format_bytes(s.bytes):>10}  {s.name}"
            f" ({what.get(s.per, s.per)})" for s in plan.shuffles]
  lines.append("accumulators, one bundle")
  lines += [f"  {format_bytes(size):>10}  {name}"
            for name, size in plan.accumulators]
  lines.append("side inputs, each worker")
  lines += [f"  {format_bytes(size):>10}  {name}"
            for name, size in plan.side_inputs]
  hours = plan.worker_hours
  lines.append(f"worker-hours             {hours:,.{1 if hours >= 1 else 3}f}"
               f" (at {plan.rows_per_second:,.0f} rows/s a worker)")
  return "\n".join(lines)
