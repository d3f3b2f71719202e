"""The copy of the baseline a run reads: its summary, `flagged/` and
scored-id files (and its decisions, read already), copied into the run's
scratch before the run clears anything, so that a baseline re-written while
the run goes (or the run's own directory, cleared) cannot mix two runs."""

from __future__ import annotations

from apache_beam.io.filesystems import FileSystems

from lossaudit import decisions, outputs
from lossaudit.drift import Baseline
from lossaudit.errors import ConfigError


def names(baseline: Baseline, prefix: str) -> Baseline:
  """`baseline` as its copy under `prefix` names it (`prefix-summary.json`,
  `prefix-NNNNN.parquet`, `prefix-ids-NNNNN.parquet`): nothing copied yet."""
  flagged = [f"{prefix}-{i:05d}.parquet"
             for i in range(len(baseline.flagged_files))]
  ids = [f"{prefix}-ids-{i:05d}.parquet"
         for i in range(len(baseline.ids_files))]
  return baseline._replace(flagged_files=tuple(flagged), ids_files=tuple(ids))


def copy(baseline: Baseline, prefix: str) -> Baseline:
  """Copies `baseline` to the names `names(baseline, prefix)` gives, then
  reads its summary again, to make sure the copy is of one run.

  Returns:
    The copy.

  Raises:
    ConfigError: the baseline changed (or vanished) since its summary was
      read, or while it was copied.
  """
  copied = names(baseline, prefix)
  changed = (f"gate.baseline: expected a completed run that stays as it is"
             f" while this run copies it; it changed (another run is writing"
             f" there?). Received: {baseline.dir!r}")
  outputs.write_json(f"{prefix}-summary.json", baseline.summary)
  if baseline.decisions is not None:
    decisions.write(f"{prefix}-{outputs.DECISIONS}", baseline.decisions)
  sources = [*baseline.flagged_files, *baseline.ids_files]
  try:
    if sources:
      FileSystems.copy(sources, [*copied.flagged_files, *copied.ids_files])
    again = (baseline.summary if baseline.copied else outputs.read_json(
        outputs.join(baseline.dir, outputs.SUMMARY)))
  except Exception:  # pylint: disable=broad-except
    raise ConfigError(changed) from None
  if again != baseline.summary:
    raise ConfigError(changed)
  return copied
