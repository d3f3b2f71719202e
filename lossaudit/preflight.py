"""Checks made before the pipeline starts, and the reading schema they derive.

`plan` expands the globs, loads the model and reads a first small batch of
the data (`lossaudit.probe.read_sample`); then it makes the plan in stages
from the config and the model's signature (`lossaudit.planning`, which reads
no data), holding each stage against that batch as soon as it is made:
the columns, the labels of custom losses, and last the whole spec, scored
with the real scorer (`lossaudit.probe`). So a column that does not exist, a
model that does not fit the data or a loss that cannot be computed stops the
run with exit 2 and a one-line message, instead of failing on a worker an
hour later.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

from lossaudit import decisions, inputs, planning, probe
from lossaudit.config import AuditConfig
from lossaudit.decisions import Decisions
from lossaudit.model import PredictionsModel, load_models
from lossaudit.spec import ScoringSpec
from lossaudit.timings import StartupTimes


@dataclasses.dataclass(frozen=True)
class Plan:
  """What the pre-run checks found: the files, the spec and the schema."""

  files: Tuple[str, ...]  # Regular files to read.
  not_regular: Tuple[str, ...]  # Matched, never opened: dead letters.
  spec: ScoringSpec
  tf_schema: Optional[bytes]  # Serialized tensorflow_metadata Schema.
  columns: Tuple[str, ...]  # Columns to read.
  # `logits` or `outputs` (`scoring.BatchScorer.computed_from`); None when
  # no data was probed.
  loss_computed_from: Optional[str] = None
  # The models loaded for the check, held for the run: workers in this
  # process get them from `model.load_models` rather than loading again.
  models: Tuple = dataclasses.field(default=(), compare=False, repr=False)
  # `output.clean.decisions` as read (`lossaudit.decisions`), or None.
  decisions: Optional[Decisions] = dataclasses.field(default=None,
                                                     compare=False)


def plan(config: AuditConfig, found: Optional[inputs.InputFiles] = None,
         startup: Optional[StartupTimes] = None) -> Plan:
  """Runs every pre-run check and returns what the pipeline needs.

  In the order errors are reported: the globs are expanded, the model is
  loaded, the first records are read (`probe.read_sample`), then each stage
  of the plan (`planning`) is checked against them as soon as it is made.

  Args:
    config: the run's config.
    found: the input files, when the caller has expanded the globs already
      (`inputs.expand`).
    startup: times the model's loading (`model_load`) and the rest
      (`probe`), when given.

  Raises:
    ConfigError: naming the key, flag, file or column at fault.
  """
  startup = startup or StartupTimes()
  if found is None:
    found = inputs.expand(config.input.patterns, config.output.dir)
  dynamics = config.model.dynamics_paths()
  paths = config.model.path_groups() + ((dynamics,) if dynamics else ())
  models = paths and load_models(paths, config.model.signature,
                                 config.runtime.device,
                                 dynamics_last=bool(dynamics))
  startup.lap("model_load")
  sample = probe.read_sample(config, found.files)
  class_names = planning.read_vocabulary(config.input.label_vocabulary)
  if config.model.predictions_column:
    # The predictions are the scored model; the checkpoints of
    # `model.dynamics_path` (when set) read their own inputs beside them.
    models = ((PredictionsModel(
        config.model.predictions_column, planning.predictions_width(
            config, sample and sample.batch, sample and sample.path,
            class_names)),),) + tuple(models or ())
  model = models[0][-1]
  columns = config.input.feature_columns
  if config.model.predictions_column:
    features = planning.model_features(config, model)
    if dynamics:  # `input.feature_columns` maps the full model's inputs.
      features += planning.model_features(config, models[-1][-1], columns)
  else:
    features = planning.model_features(config, model, columns)
  if sample is not None:
    features = probe.match_lone_input(config, features, sample)
    probe.check_columns(config, features, sample)
    probe.check_slices(config, sample)
  terms = planning.loss_terms(config, model)
  if sample is not None:
    terms = probe.fit_custom_labels(terms, sample)
  spec = planning.assemble_spec(config, features, terms, class_names)
  planning.check_image_shape(config, spec)
  spec = dataclasses.replace(spec, model_versions=tuple(
      (m.path, m.version) for group in models for m in group
      if getattr(m, "version", None)))
  computed_from = None
  if sample is not None:
    computed_from = probe.check_scoring(config, spec, models, sample)
  value_type = sample.value_type if sample is not None else (lambda _: None)
  clean = config.output.clean
  decided = None
  if clean is not None and clean.decisions:
    decided = decisions.read(
        clean.decisions, spec.class_names,
        spec.classifier.num_classes if spec.classifier else None)
  startup.lap("probe")
  return Plan(files=found.files, not_regular=found.not_regular, spec=spec,
              tf_schema=planning.tf_schema(spec, value_type),
              columns=planning.needed_columns(spec),
              loss_computed_from=computed_from, models=models,
              decisions=decided)
