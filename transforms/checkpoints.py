"""`SelectCheckpoints`: each fold's checkpoint by its held-out loss.

With `model.select_checkpoint: heldout_loss` the scorer gives every row
once per checkpoint of its fold. The held-out losses per (fold, checkpoint)
are summed as the rows are scored; the rows go to scratch files meanwhile
(memory stays flat), and are read back keeping only each fold's selected
checkpoint's. See `lossaudit/checkpoint_selection.py` for the rule.
"""

from __future__ import annotations

from typing import Optional

import apache_beam as beam
import pyarrow as pa

from lossaudit import checkpoint_selection
from lossaudit.checkpoint_selection import CheckpointSelection, HeldoutSums
from lossaudit.merging import merge_all
from lossaudit.spec import CHECKPOINT_COLUMN, ScoringSpec
from lossaudit.transforms.spill import ReadSpilled, SpillBatches

# The outputs of `SelectCheckpoints`.
SCORED = "scored"
SELECTION = "selection"


def _numpy(batch: pa.RecordBatch, column: str):
  return batch.column(column).to_numpy(zero_copy_only=False)


def _heldout_sums(batch: pa.RecordBatch, num_folds: int,
                  num_checkpoints: int) -> HeldoutSums:
  return checkpoint_selection.heldout_sums(
      _numpy(batch, "loss"), _numpy(batch, "fold"),
      _numpy(batch, CHECKPOINT_COLUMN), num_folds, num_checkpoints)


def _keep_selected(batch: pa.RecordBatch, selection: CheckpointSelection
                   ) -> pa.RecordBatch:
  """The rows of each fold's selected checkpoint, without
  `CHECKPOINT_COLUMN`."""
  keep = checkpoint_selection.selected_rows(
      _numpy(batch, "fold"), _numpy(batch, CHECKPOINT_COLUMN),
      selection.selected)
  return batch.filter(pa.array(keep)).drop_columns([CHECKPOINT_COLUMN])


class SelectCheckpoints(beam.PTransform):
  """Scored batches of every checkpoint → those of each fold's selected one.

  Outputs `scored`: RecordBatches of `spec.scored_schema()`, each row once;
  and `selection`: a singleton `CheckpointSelection`.

  Args:
    spec: what was scored (`select_checkpoint` set).
    scratch: the prefix of the scratch files the rows wait in.
    progress_interval: seconds between the reading pass's progress lines,
      at least (None: none).
  """

  def __init__(self, spec: ScoringSpec, scratch: str,
               progress_interval: Optional[float] = None):
    super().__init__()
    self._spec = spec
    self._scratch = scratch
    self._progress_interval = progress_interval

  def expand(self, batches):
    k, c = self._spec.num_folds, self._spec.checkpoints_per_fold
    selection = (batches
                 | "HeldoutLosses" >> beam.Map(_heldout_sums, k, c)
                 | "SumHeldoutLosses" >> beam.CombineGlobally(
                     merge_all, empty=HeldoutSums.empty(k, c))
                 | "Select" >> beam.Map(checkpoint_selection.select))
    selected = (batches
                | "Spill" >> SpillBatches(self._scratch,
                                          self._spec.scoring_schema())
                | "Reread" >> ReadSpilled("checkpoint selection",
                                          self._progress_interval)
                | "KeepSelected" >> beam.Map(
                    _keep_selected,
                    selection=beam.pvalue.AsSingleton(selection)))
    return {SCORED: selected, SELECTION: selection}
