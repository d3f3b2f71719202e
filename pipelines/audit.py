"""The audit pipeline: read → score → statistics → flag → write.

`python -m pipelines.audit --config FILE [--set KEY=VALUE ...] [Beam options]`
is the same as `lossaudit run`.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Dict, List, Optional, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import (GoogleCloudOptions,
                                                  PipelineOptions,
                                                  StandardOptions)

from lossaudit import outputs, preflight
from lossaudit.config import AuditConfig, ConfigError, load_config
from lossaudit.stats import rule_thresholds
from transforms.flag import (FlagExamples, count_reasons, flagged_schema,
                             sum_counts)
from transforms.read import DEAD_LETTER, ReadParquetBatches, ReadTFExampleBatches
from transforms.score import ScoreBatches
from transforms.spill import ReadSpilled, SpillBatches
from transforms.stats import LossStats, TopKCombineFn
from transforms.label_issues import FindLabelIssues
from transforms.write import (WriteDeadLetters, WriteParquetShards, WriteSummary,
                              public_schema)

TOP_FLAGGED_IN_REPORT = 50


def build(p: beam.Pipeline, config: AuditConfig, plan: preflight.Plan,
          runner: str, start_time: float) -> None:
  """Adds the audit graph to `p`."""
  spec, out, flag = plan.spec, config.output.dir, config.flag
  if config.input.format == "tfrecord":
    read = p | "Read" >> ReadTFExampleBatches(plan.files, plan.tf_schema,
                                              config.batch_size)
  else:
    read = p | "Read" >> ReadParquetBatches(plan.files, plan.columns,
                                            config.batch_size)
  score = ScoreBatches(spec)
  if config.runtime.accelerator:
    score = score.with_resource_hints(accelerator=config.runtime.accelerator)
  scored = read["batches"] | "ScoreBatches" >> score
  quantiles = set(config.stats.quantiles) | {
      q for q in (flag.loss_quantile, flag.slice_quantile) if q is not None}
  column = "weighted_loss" if config.stats.weighted else "loss"
  stats = scored.scored | "LossStats" >> LossStats(
      config.stats.epsilon, sorted(quantiles), bool(spec.slice_column), column)
  top_k = (scored.scored | "TopK" >> beam.CombineGlobally(
      TopKCombineFn(flag.top_k, column))
           if flag.top_k else p | "NoTopK" >> beam.Create([None]))
  schema = spec.scored_schema()
  spilled = scored.scored | "Spill" >> SpillBatches(
      outputs.scratch_prefix(out), schema)

  def reread(purpose: str):
    return spilled | f"Reread{purpose}" >> ReadSpilled()

  label_rules = (scored.scored | "FindLabelIssues" >> FindLabelIssues(
      flag.label_issues, spec.classifier.num_classes, reread)
                 if flag.label_issues else p | "NoLabelIssues" >> beam.Create(
                     [None]))
  slice_stats = stats.get("slices") or p | "NoSlices" >> beam.Create([])
  thresholds = stats["global"] | "Thresholds" >> beam.Map(
      rule_thresholds, flag, beam.pvalue.AsSingleton(top_k),
      beam.pvalue.AsSingleton(label_rules), beam.pvalue.AsDict(slice_stats))
  flagged = reread("ForFlags") | "FlagExamples" >> FlagExamples(
      thresholds, schema, column)
  dead = ((read[DEAD_LETTER], scored[DEAD_LETTER])
          | "DeadLetters" >> beam.Flatten())

  written = {
      outputs.FLAGGED: flagged | "WriteFlagged" >> WriteParquetShards(
          out, outputs.FLAGGED, flagged_schema(schema),
          config.output.num_shards),
      outputs.DEAD_LETTER: dead | "WriteDeadLetters" >> WriteDeadLetters(
          out, config.output.num_shards),
      outputs.LOSSES: (
          scored.scored | "WriteLosses" >> WriteParquetShards(
              out, outputs.LOSSES, public_schema(schema),
              config.output.num_shards)
          if config.output.write_losses else p | "NoLosses" >> beam.Create([])),
  }
  _ = p | "WriteSummary" >> WriteSummary(
      out, config.to_dict(), runner, start_time,
      loss_stats=stats["global"],
      slice_stats=slice_stats,
      thresholds=thresholds,
      flag_counts=(flagged
                   | "CountReasons" >> beam.Map(count_reasons)
                   | "SumCounts" >> beam.CombineGlobally(sum_counts)),
      dead_lettered=dead | "CountDeadLetters" >> beam.combiners.Count.Globally(),
      top_flagged=(flagged
                   | "TopFlagged" >> beam.CombineGlobally(
                       TopKCombineFn(TOP_FLAGGED_IN_REPORT, "score"))
                   | "TopFlaggedRows" >> beam.Map(_top_rows)),
      devices=scored["device"] | "Devices" >> beam.Distinct(),
      written=written)


def _top_rows(top) -> List[Dict]:
  return [{"id": i, "score": s} for s, i in top]


def parse_args(argv: Optional[Sequence[str]] = None):
  """`--config`, `--set` and the Beam options that pass through."""
  parser = argparse.ArgumentParser(
      prog="lossaudit run",
      description="Audit a dataset with a saved model's per-sample losses.")
  parser.add_argument("--config", required=True, help="YAML config file")
  parser.add_argument(
      "--set", action="append", default=[], metavar="KEY=VALUE",
      help="override one dotted config key (value parsed as YAML)")
  return parser.parse_known_args(argv)


def run(argv: Optional[Sequence[str]] = None,
        test_pipeline: Optional[beam.Pipeline] = None) -> Dict:
  """Runs an audit and returns its summary.

  Raises:
    ConfigError: a bad config or set-up, before the pipeline starts.
  """
  known, beam_args = parse_args(argv)
  config = load_config(known.config, known.set)
  start_time = time.time()
  options = PipelineOptions(beam_args)
  # The checks before the run read gs:// with the same options as workers.
  FileSystems.set_options(options)
  plan = preflight.plan(config)
  outputs.prepare(config.output.dir)
  standard = options.view_as(StandardOptions)
  if standard.runner is None:
    standard.runner = "DirectRunner"
  runner = str(standard.runner)
  p = test_pipeline or beam.Pipeline(options=options)
  build(p, config, plan, runner, start_time)
  result = p.run()
  if options.view_as(GoogleCloudOptions).template_location:
    return {"template": options.view_as(GoogleCloudOptions).template_location}
  result.wait_until_finish()
  return outputs.read_json(outputs.join(config.output.dir, outputs.SUMMARY))


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Command-line entry point; returns the exit code."""
  logging.getLogger().setLevel(logging.WARNING)
  try:
    summary = run(argv)
  except ConfigError as e:
    print(f"lossaudit: error: {e}", file=sys.stderr)
    return 2
  if "template" in summary:
    print(f"lossaudit: wrote the job template {summary['template']}")
    return 0
  print(f"lossaudit: scored {summary['examples_scored']} of"
        f" {summary['examples_read']} examples"
        f" ({summary['examples_dead_lettered']} dead-lettered),"
        f" flagged {summary['flagged']['total']}."
        f" Outputs in {summary['config']['output']['dir']}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
