"""Where lossaudit's time goes on one benchmark case, outside Beam.

  python benchmarks/profile_scoring.py --case text [--dir bench] [--top 25]

Plans the run as `lossaudit run` does (`preflight.plan`), then reads every
shard as the pipeline does (`tfrecord.tf_data_batches`, tfx_bsl decoder) and
scores each batch with `BatchScorer.score`, timing apart: reading and
decoding, `read_model_inputs` (Arrow → numpy), the traced model-and-loss
call (`score_arrays`, including the numpy → tensor conversion of its
feeds) and `scored_batch`. Prints the totals, then the top functions of a
cProfile of the scoring. Needs the data `scripts/benchmark --case CASE` built.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import time

import cases

from lossaudit import config as config_lib
from lossaudit import preflight, scoring, tfrecord
from lossaudit.model_inputs import read_model_inputs


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="profile_scoring")
  parser.add_argument("--case", choices=cases.CASES[1:], required=True)
  parser.add_argument("--examples", type=int, default=None)
  parser.add_argument("--batch-size", type=int, default=1024)
  parser.add_argument("--dir", default="bench")
  parser.add_argument("--top", type=int, default=25)
  args = parser.parse_args(argv)
  examples = args.examples or cases.DEFAULT_EXAMPLES[args.case]
  if args.case == "serialized":
    directory = os.path.join(args.dir, f"n{examples}-k10-h256-f64")
  else:
    directory = os.path.join(args.dir, f"{args.case}-n{examples}")
  inputs, model = cases.audit_sections(args.case, directory, "a")
  config = config_lib.AuditConfig.from_dict({
      "input": inputs, "model": model, "batch_size": args.batch_size,
      "output": {"dir": os.path.join(args.dir, "out", "profile")}})
  plan = preflight.plan(config)
  from tfx_bsl.coders import example_coder  # pylint: disable=g-import-not-at-top

  from lossaudit.model_inputs import with_raw_records  # pylint: disable=g-import-not-at-top

  decoder = example_coder.ExamplesToRecordBatchDecoder(plan.tf_schema)
  start = time.perf_counter()
  batches = []
  for path in plan.files:
    for part in tfrecord.tf_data_batches(path, args.batch_size):
      batch = decoder.DecodeBatch(part)
      if plan.spec.reads_raw_records:
        batch = with_raw_records(batch, part)
      batches.append((path, batch))
  read_s = time.perf_counter() - start
  scorer = scoring.BatchScorer(plan.spec)
  scorer.score(*batches[0])  # Traces the graph.
  parts = dict(read_model_inputs=0.0, score_arrays=0.0, scored_batch=0.0)

  def timed(name, fn):
    def wrapper(*a, **k):
      t = time.perf_counter()
      try:
        return fn(*a, **k)
      finally:
        parts[name] += time.perf_counter() - t
    return wrapper

  scoring.read_model_inputs = timed("read_model_inputs", read_model_inputs)
  scorer.score_arrays = timed("score_arrays", scorer.score_arrays)
  scoring.scored_batch = timed("scored_batch", scoring.scored_batch)
  profile = cProfile.Profile()
  start = time.perf_counter()
  profile.enable()
  rows = 0
  for path, batch in batches:
    scored, _ = scorer.score(path, batch)
    rows += scored.num_rows
  profile.disable()
  score_s = time.perf_counter() - start
  print(f"{args.case}: {rows} rows; read+decode {read_s:.2f} s,"
        f" scoring {score_s:.2f} s of which "
        + ", ".join(f"{k} {v:.2f} s" for k, v in parts.items()))
  pstats.Stats(profile, stream=sys.stdout).sort_stats("cumulative"
                                                      ).print_stats(args.top)
  return 0


if __name__ == "__main__":
  sys.exit(main())
