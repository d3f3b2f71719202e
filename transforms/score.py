"""`ScoreBatches`: per-sample losses and classification signals, per batch."""

from __future__ import annotations

import socket
import time
from concurrent import futures
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.metrics import Metrics
from apache_beam.utils import shared

from lossaudit import METRICS_NAMESPACE, dead_letters, previews, progress
from lossaudit.scoring import BatchScorer
from lossaudit.spec import CHECKPOINT_COLUMN, ScoringSpec
from lossaudit.timings import Timings
from lossaudit.transforms.spill import in_global_window

DEVICE = "device"
TIMING = "timing"
CANDIDATES = "candidates"


class Candidates(NamedTuple):
  """Which scored rows to keep for the report's previews
  (`lossaudit.previews.candidates`).

  Attributes:
    columns: the string input columns.
    score_column: the scored column the flags compare.
    k: the highest-scored rows kept: each batch keeps those above the k-th
      highest its bundle kept so far (`previews.RunningTop`).
  """

  columns: Tuple[str, ...]
  score_column: str
  k: int


class _ScorerHandle:
  """Weak-referenceable holder for a process-wide `BatchScorer`."""

  def __init__(self, scorer: BatchScorer):
    self.scorer = scorer


class _Scored(NamedTuple):
  """A batch scored on the scoring thread (`BatchScorer.score`), timed."""

  scored: Optional[pa.RecordBatch]
  dead: List[Dict[str, Any]]
  seconds: float
  halvings: int
  finished: float  # Seconds since the epoch (the run's first batch).


class _Pending(NamedTuple):
  """A batch read, and its scoring under way."""

  batch: pa.RecordBatch
  result: "futures.Future[_Scored]"


class _ScoreBatchFn(beam.DoFn):
  """Scores `(file, RecordBatch)` → scored RecordBatch, plus dead letters.

  The model is loaded once per worker process in `setup()` and shared by all
  the DoFn instances of that process through `shared.Shared`. A batch is
  scored on a thread of this DoFn while the batch before leaves (its outputs
  are emitted with the next batch's `process`, the last in
  `finish_bundle`): the steps fused after this one overlap the model.
  Counters and outputs stay on Beam's thread. Each batch's scoring is timed
  by `clock` (seconds), and its end by `wall_clock` (seconds since the
  epoch); both are pickled with the DoFn, so module-level functions.
  """

  def __init__(self, spec: ScoringSpec, progress_interval: Optional[float],
               clock: Callable[[], float] = time.perf_counter,
               candidates: Optional[Candidates] = None,
               model_checked: bool = False,
               batch_size: Optional[int] = None,
               wall_clock: Callable[[], float] = time.time):
    self._spec = spec
    self._batch_size = batch_size
    self._wall_clock = wall_clock
    self._candidates = candidates
    self._model_checked = model_checked
    self._progress_interval = progress_interval
    self._clock = clock
    self._shared_handle = shared.Shared()
    self._scored = Metrics.counter(METRICS_NAMESPACE, "examples_scored")
    self._latency = Metrics.distribution(METRICS_NAMESPACE, "batch_latency_ms")
    self._halvings = Metrics.counter(METRICS_NAMESPACE, "batch_size_halvings")

  def setup(self):
    spec, checked, rows = self._spec, self._model_checked, self._batch_size
    self._scorer = self._shared_handle.acquire(
        lambda: _ScorerHandle(BatchScorer(spec, model_checked=checked,
                                          max_rows=rows)),
        tag=repr((spec, rows))).scorer
    # The model scores one batch on this thread while the steps fused after
    # this one handle the batch before (TensorFlow releases the GIL).
    self._executor = futures.ThreadPoolExecutor(
        max_workers=1, thread_name_prefix="lossaudit-score")
    self._device_reported = False
    progress.enable(self._progress_interval)

  def teardown(self):
    self._executor.shutdown(wait=True)

  def start_bundle(self):
    # Per bundle: the candidates of a bundle that fails are dropped with it.
    self._top = (previews.RunningTop(self._candidates.k)
                 if self._candidates else None)
    self._pending: Optional[_Pending] = None

  def process(self, element: Tuple[str, pa.RecordBatch]):
    if not self._device_reported:
      self._device_reported = True
      yield beam.pvalue.TaggedOutput(
          DEVICE, f"{socket.gethostname()}:{self._scorer.device}")
    source, batch = element
    previous, self._pending = self._pending, _Pending(
        batch, self._executor.submit(self._score, source, batch))
    if previous is not None:
      yield from self._outputs(previous)

  def finish_bundle(self):
    if self._pending is None:
      return
    for output in self._outputs(self._pending):
      if isinstance(output, beam.pvalue.TaggedOutput):
        yield beam.pvalue.TaggedOutput(output.tag,
                                       in_global_window(output.value))
      else:
        yield in_global_window(output)
    self._pending = None

  def _score(self, source: str, batch: pa.RecordBatch) -> _Scored:
    """Runs on the scoring thread."""
    start, halvings = self._clock(), self._scorer.halvings_in_thread()
    scored, dead = self._scorer.score(source, batch)
    return _Scored(scored, dead, self._clock() - start,
                   self._scorer.halvings_in_thread() - halvings,
                   self._wall_clock())

  def _outputs(self, pending: _Pending):
    """The outputs of a batch scored on the scoring thread; its counters."""
    batch, result = pending.batch, pending.result.result()
    scored, dead = result.scored, result.dead
    self._halvings.inc(result.halvings)
    self._latency.update(int(result.seconds * 1000))
    yield beam.pvalue.TaggedOutput(
        TIMING, Timings.of_batch(batch.num_rows, result.seconds,
                                 result.finished))
    for entry in dead:
      yield beam.pvalue.TaggedOutput(dead_letters.TAG, entry)
    # With `select_checkpoint`, each row once per checkpoint of its fold.
    per_row = self._spec.checkpoints_per_fold if (
        self._spec.select_checkpoint) else 1
    num_scored = 0 if scored is None else scored.num_rows // per_row
    progress.add(num_scored, len(dead))
    if scored is not None:
      self._scored.inc(num_scored)
      if self._candidates:
        yield from self._kept_candidates(batch, scored)
      yield scored

  def _kept_candidates(self, batch: pa.RecordBatch, scored: pa.RecordBatch):
    c = self._candidates
    if self._spec.select_checkpoint:  # Before the selection: the last's.
      scored = scored.filter(pc.equal(
          scored.column(CHECKPOINT_COLUMN),
          self._spec.checkpoints_per_fold - 1)).drop_columns(
              [CHECKPOINT_COLUMN])
    table = previews.candidates(batch, scored, self._spec.id_column,
                                c.columns, c.score_column, c.k,
                                above=self._top.bar)
    if table is not None:
      self._top.add(table)
      yield beam.pvalue.TaggedOutput(CANDIDATES, table)


class ScoreBatches(beam.PTransform):
  """Scores `(file, RecordBatch)` elements with one model and loss.

  Outputs: `scored` RecordBatches (schema `spec.scored_schema()`),
  `dead_letter` entries for rows that could not be scored, `device`:
  `host:device` of each scoring DoFn instance, `timing`: one
  `lossaudit.timings.Timings` per batch, and with `candidates`,
  `candidates`: each bundle's running top `k` rows as read (tables of the
  rows of a batch scored above the bundle's bar so far).

  Args:
    spec: what to score and how.
    progress_interval: seconds between progress lines on stderr from each
      worker process; None: none.
    candidates: which rows to keep for the report's previews, or None.
    model_checked: whether the pre-run check scored records with this model
      (`BatchScorer`'s `model_checked`).
    batch_size: rows per call of the model (`BatchScorer`'s `max_rows`); the
      batches scored may hold more.
  """

  def __init__(self, spec: ScoringSpec,
               progress_interval: Optional[float] = None,
               candidates: Optional[Candidates] = None,
               model_checked: bool = False,
               batch_size: Optional[int] = None):
    super().__init__()
    self._spec = spec
    self._batch_size = batch_size
    self._progress_interval = progress_interval
    self._candidates = candidates
    self._model_checked = model_checked

  def expand(self, batches):
    return batches | "Score" >> beam.ParDo(
        _ScoreBatchFn(self._spec, self._progress_interval,
                      candidates=self._candidates,
                      model_checked=self._model_checked,
                      batch_size=self._batch_size)).with_outputs(
            dead_letters.TAG, DEVICE, TIMING, CANDIDATES, main="scored")
