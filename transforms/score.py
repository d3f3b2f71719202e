"""`ScoreBatches`: per-sample losses and classification signals, per batch."""

from __future__ import annotations

import socket
import time
from typing import Tuple

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics import Metrics
from apache_beam.utils import shared

from lossaudit.scoring import BatchScorer, ScoringSpec

DEAD_LETTER = "dead_letter"
DEVICE = "device"
_NAMESPACE = "lossaudit"


class _ScorerHandle:
  """Weak-referenceable holder for a process-wide `BatchScorer`."""

  def __init__(self, scorer: BatchScorer):
    self.scorer = scorer


class _ScoreBatchFn(beam.DoFn):
  """Scores `(file, RecordBatch)` → scored RecordBatch, plus dead letters.

  The model is loaded once per worker process in `setup()` and shared by all
  the DoFn instances of that process through `shared.Shared`.
  """

  def __init__(self, spec: ScoringSpec):
    self._spec = spec
    self._shared_handle = shared.Shared()
    self._scored = Metrics.counter(_NAMESPACE, "examples_scored")
    self._dead = Metrics.counter(_NAMESPACE, "examples_dead_lettered")
    self._latency = Metrics.distribution(_NAMESPACE, "batch_latency_ms")

  def setup(self):
    spec = self._spec
    self._scorer = self._shared_handle.acquire(
        lambda: _ScorerHandle(BatchScorer(spec)),
        tag=repr(spec)).scorer
    self._device_reported = False

  def process(self, element: Tuple[str, pa.RecordBatch]):
    source, batch = element
    if not self._device_reported:
      self._device_reported = True
      yield beam.pvalue.TaggedOutput(
          DEVICE, f"{socket.gethostname()}:{self._scorer.device}")
    start = time.perf_counter()
    scored, dead = self._scorer.score(source, batch)
    self._latency.update(int((time.perf_counter() - start) * 1000))
    for entry in dead:
      yield beam.pvalue.TaggedOutput(DEAD_LETTER, entry)
    self._dead.inc(len(dead))
    if scored is not None:
      self._scored.inc(scored.num_rows)
      yield scored


class ScoreBatches(beam.PTransform):
  """Scores `(file, RecordBatch)` elements with one model and loss.

  Outputs: `scored` RecordBatches (schema `spec.scored_schema()`),
  `dead_letter` entries for rows that could not be scored, and `device`:
  `host:device` of each scoring DoFn instance.
  """

  def __init__(self, spec: ScoringSpec):
    super().__init__()
    self._spec = spec

  def expand(self, batches):
    return batches | "Score" >> beam.ParDo(
        _ScoreBatchFn(self._spec)).with_outputs(DEAD_LETTER, DEVICE,
                                                main="scored")
