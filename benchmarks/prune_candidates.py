"""`prune_by_noise_rate` ranking pass: what one bundle emits, and its memory.

  python benchmarks/prune_candidates.py [--rows 1000000] [--classes 10]
      [--noise 0.1] [--batch-sizes 1024,65536,1000000] [--bundles 1,1000]
      [--baseline-code DIR] [--json]

builds synthetic scored batches (a decent model's probabilities, labels
flipped at a class-dependent rate of about `noise`), computes the
thresholds, the calibrated joint and each cell's count n[k, j] as the
pipeline does, then feeds the batches to the ranking DoFn in ONE bundle (the
worst case for a bundle: it holds the whole dataset), or dealt in turn over
several bundles (the case of many small bundles), and reports, per batch
size and number of bundles:

  emitted: the (cell, candidate) pairs the bundles emit, which the
    `TopNPerCell` shuffle carries; `final`: the number of rows the cells
    keep in all, sum(n[k, j]) off the diagonal;
  traced_peak_mb: the largest memory that numpy and Python held at once
    during the bundles, over what they held before (tracemalloc);
  max_rss_mb: the process's peak resident memory (imports and data
    included);
  seconds: the ranking pass's; joint_seconds and joint_peak_mb: the
    joint's pass's (run as one bundle), as traced_peak_mb;
  candidates_mb: the emitted candidates pickled, as the shuffle carries
    them; joints_mb: what the joint's pass ships for as many bundles, its
    joint counts (with the margin histograms) pickled times the bundles.

Each measurement runs in a process of its own. With `--baseline-code DIR`
(a checkout of another commit, e.g. `git worktree add /tmp/base main`) it
also measures that code, and prints both.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import subprocess
import sys
import time
import tracemalloc
from typing import Dict, List

import numpy as np

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _import_from(code: str):
  """lossaudit from the checkout `code`, its top-level transforms/ folder as
  `lossaudit.transforms` (as pyproject.toml installs it)."""
  sys.path.insert(0, code)
  import lossaudit  # pylint: disable=g-import-not-at-top

  if os.path.realpath(os.path.dirname(lossaudit.__file__)) != os.path.realpath(
      os.path.join(code, "lossaudit")):
    raise SystemExit(f"--code: expected lossaudit under {code}. Received: "
                     f"{lossaudit.__file__}")
  if not os.path.isdir(os.path.join(code, "lossaudit", "transforms")):
    lossaudit.__path__.append(code)


def _data(rows: int, classes: int, noise: float, seed: int = 0):
  """Probabilities `(N, K)` float32, given labels `(N,)` and ids `(N,)`."""
  rng = np.random.default_rng(seed)
  truth = rng.integers(0, classes, rows)
  logits = rng.normal(size=(rows, classes)).astype(np.float32)
  logits[np.arange(rows), truth] += 4.0
  probs = np.exp(logits)
  probs /= probs.sum(axis=1, keepdims=True)
  given = truth.copy()
  flip = rng.random(rows) < noise * (1 + truth / classes)
  given[flip] = (truth[flip] + 1 + (truth[flip] % 2)) % classes
  ids = np.char.add("id-", np.arange(rows).astype(str)).astype(object)
  return probs, given, ids


def _measure(args) -> Dict:
  _import_from(args.code)
  # pylint: disable=g-import-not-at-top  (from the checkout `args.code`)
  import pyarrow as pa

  from lossaudit import confident
  from lossaudit.transforms import label_issues
  try:
    from lossaudit.spec import PROBS_COLUMN
  except ImportError:  # A checkout from before lossaudit.spec.
    from lossaudit.scoring import PROBS_COLUMN

  k = args.classes
  probs, given, ids = _data(args.rows, k, args.noise)
  sums, counts = confident.self_confidence_sums(probs, given, k)
  thresholds = confident.confident_thresholds(sums, counts).tolist()
  size = args.batch_size
  batches = [pa.RecordBatch.from_arrays(
      [pa.FixedSizeListArray.from_arrays(
          pa.array(probs[i:i + size].reshape(-1)), k),
       pa.array(given[i:i + size]), pa.array(ids[i:i + size]),
       pa.array(np.ones(len(given[i:i + size])))],
      names=[PROBS_COLUMN, "given_label", "id", "loss"])
             for i in range(0, args.rows, size)]
  del probs, given, ids
  # pylint: disable=protected-access  (the pipeline's own steps, run here)
  # The joint's pass as the pipeline runs it, in one bundle; with margin
  # histograms where the code has them.
  bins = getattr(confident, "margin_bin_count", lambda _: 0)(k)
  tracemalloc.start()
  start = time.perf_counter()
  joint_fn = (label_issues._JointCountsFn(k, bins) if bins
              else label_issues._JointCountsFn(k))
  joint_fn.start_bundle()
  for batch in batches:
    joint_fn.process(batch, thresholds)
  (joint,) = [value.value for value in joint_fn.finish_bundle()]
  joint_seconds = time.perf_counter() - start
  _, joint_peak = tracemalloc.get_traced_memory()
  tracemalloc.stop()
  rules = label_issues._finish_joint(joint, "prune_by_noise_rate",
                                     thresholds)
  prune = np.asarray(rules.prune_counts)
  tracemalloc.start()
  start = time.perf_counter()
  emitted, shipped = 0, 0
  for bundle in range(args.bundles):
    fn = label_issues._CellCandidatesFn(k)
    fn.start_bundle()
    for batch in batches[bundle::args.bundles]:
      fn.process(batch, rules)
    for value in fn.finish_bundle():
      emitted += len(value.value[1].ids)
      shipped += len(pickle.dumps(value.value))
  seconds = time.perf_counter() - start
  _, peak = tracemalloc.get_traced_memory()
  tracemalloc.stop()
  return {"batch_size": size, "bundles": args.bundles, "emitted": emitted,
          "final": int(prune.sum() - np.trace(prune)),
          "traced_peak_mb": round(peak / 2**20, 1),
          "max_rss_mb": round(resource.getrusage(
              resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
          "seconds": round(seconds, 2),
          "joint_seconds": round(joint_seconds, 2),
          "joint_peak_mb": round(joint_peak / 2**20, 1),
          "candidates_mb": round(shipped / 2**20, 1),
          "joints_mb": round(args.bundles * len(pickle.dumps(joint)) / 2**20,
                             1)}


def _run(code: str, batch_size: int, bundles: int, args) -> Dict:
  out = subprocess.run(
      [sys.executable, __file__, "--child", "--code", code, "--rows",
       str(args.rows), "--classes", str(args.classes), "--noise",
       str(args.noise), "--batch-sizes", str(batch_size), "--bundles",
       str(bundles)],
      check=True, capture_output=True, text=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: List[str]) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--rows", type=int, default=1_000_000)
  parser.add_argument("--classes", type=int, default=10)
  parser.add_argument("--noise", type=float, default=0.1)
  parser.add_argument("--batch-sizes", default="1024,65536,1000000")
  parser.add_argument("--bundles", default="1,1000")
  parser.add_argument("--baseline-code", default=None)
  parser.add_argument("--json", action="store_true")
  parser.add_argument("--code", default=HERE, help=argparse.SUPPRESS)
  parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  sizes = [int(s) for s in args.batch_sizes.split(",")]
  bundles = [int(b) for b in args.bundles.split(",")]
  if args.child:
    args.batch_size, args.bundles = sizes[0], bundles[0]
    print(json.dumps(_measure(args)))
    return
  sides = {"this": HERE}
  if args.baseline_code:
    sides["baseline"] = os.path.abspath(args.baseline_code)
  results = [dict(code=side, **_run(path, size, count, args))
             for size in sizes for count in bundles
             for side, path in sides.items()]
  if args.json:
    print(json.dumps(results, indent=1))
    return
  print(f"{args.rows} rows, {args.classes} classes, noise {args.noise}")
  columns = ["code", "batch_size", "bundles", "emitted", "final",
             "traced_peak_mb", "max_rss_mb", "seconds", "joint_seconds",
             "joint_peak_mb", "candidates_mb", "joints_mb"]
  print(" ".join(f"{c:>14}" for c in columns))
  for r in results:
    print(" ".join(f"{r[c]!s:>14}" for c in columns))


if __name__ == "__main__":
  main(sys.argv[1:])
