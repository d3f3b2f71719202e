"""Checks `lossaudit plan` against a measured run: spill, re-read, shuffle.

  python benchmarks/plan_check.py [--rows 1000000] [--classes 100]
      [--tolerance 0.2] [--keep DIR]

Writes a predictions Parquet file of ROWS random rows over CLASSES classes
(`model.predictions_column`: no model is scored), audits it on the
DirectRunner with the rules that spill and re-read (a loss quantile and
`prune_by_noise_rate` label issues), and measures:

- spill bytes written and re-read: the `spill_bytes_written` and
  `spill_bytes_reread` counters of the run;
- shuffle bytes: every byte written into a GroupByKey of the run (the
  combiners' too, after combiner lifting), encoded with the pipeline's
  coders, as the DirectRunner's grouping buffers receive them.

It prints them beside `lossaudit.cost.plan_cost` of the same config and
rows, and exits 1 when a planned figure is off the measured one by more
than the tolerance (0 otherwise).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import inspect
import os
import sys
import tempfile
from typing import Dict, Iterator

import numpy as np
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

# pylint: disable=g-import-not-at-top,wrong-import-position
from tests.helpers import predictions_config, write_predictions  # noqa: E402

FILE_ROWS = 200_000  # Rows per input file.


def write_input(directory: str, rows: int, classes: int, seed: int = 0
                ) -> str:
  """Parquet files of `rows` rows (`id`, `label`, `p`); their glob."""
  rng = np.random.default_rng(seed)
  os.makedirs(directory, exist_ok=True)
  for start in range(0, rows, FILE_ROWS):
    n = min(FILE_ROWS, rows - start)
    labels = rng.integers(0, classes, n)
    logits = rng.normal(size=(n, classes)).astype(np.float32)
    # Mostly the given label, sometimes another: a noise rate to find.
    likely = np.where(rng.random(n) < 0.9, labels,
                      rng.integers(0, classes, n))
    logits[np.arange(n), likely] += 4.0
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    write_predictions(
        os.path.join(directory, f"part-{start // FILE_ROWS:05d}.parquet"),
        [f"ex-{i:012d}" for i in range(start, start + n)], labels, probs)
  return os.path.join(directory, "part-*.parquet")


def audit_config(pattern: str, output_dir: str) -> Dict:
  """The audited config: a loss quantile and prune_by_noise_rate label
  issues, so the scored rows are spilled and re-read three times."""
  return predictions_config(
      pattern, output_dir,
      flag={"loss_threshold": None, "loss_quantile": 0.95,
            "label_issues": "prune_by_noise_rate"})


@contextlib.contextmanager
def counting_shuffles() -> Iterator[Dict[str, int]]:
  """Counts the encoded bytes written into each GroupByKey of the
  DirectRunner (FnApiRunner) runs inside: `{GroupByKey transform: bytes}`.
  """
  # pylint: disable-next=import-outside-toplevel
  from apache_beam.runners.portability.fn_api_runner import execution

  counted: Dict[str, int] = collections.defaultdict(int)
  buffer_class = execution.GroupingBuffer
  init, append = buffer_class.__init__, buffer_class.append

  def counting_init(self, *args, **kwargs):
    init(self, *args, **kwargs)
    # The runner names the GroupByKey transform `name` where it makes one.
    caller = inspect.currentframe().f_back
    self._plan_check_name = str(caller.f_locals.get("name", "?"))

  def counting_append(self, elements_data: bytes) -> None:
    counted[self._plan_check_name] += len(elements_data)
    append(self, elements_data)

  buffer_class.__init__, buffer_class.append = counting_init, counting_append
  try:
    yield counted
  finally:
    buffer_class.__init__, buffer_class.append = init, append


def measure(rows: int, classes: int, directory: str) -> Dict:
  """Audits `rows` generated rows of `classes` classes in `directory`;
  `{"config", "input_bytes_per_row", "spill_bytes_written",
  "spill_bytes_reread", "shuffle_bytes", "shuffles", "counters"}`."""
  from lossaudit.config import load_config
  from lossaudit.pipelines import audit
  from lossaudit.transforms import spill
  # pylint: enable=g-import-not-at-top,wrong-import-position

  pattern = write_input(os.path.join(directory, "input"), rows, classes)
  config_path = os.path.join(directory, "config.yaml")
  with open(config_path, "w", encoding="utf-8") as f:
    yaml.safe_dump(audit_config(pattern, os.path.join(directory, "out")), f)
  with counting_shuffles() as shuffles:
    summary = audit.run(["--config", config_path])
  counters = summary["metrics"]["counters"]
  input_dir = os.path.dirname(pattern)
  input_bytes = sum(os.path.getsize(os.path.join(input_dir, name))
                    for name in os.listdir(input_dir))
  return {
      "config": load_config(config_path, []),
      "input_bytes_per_row": input_bytes / rows,
      "spill_bytes_written": counters[spill.SPILL_BYTES_WRITTEN],
      "spill_bytes_reread": counters[spill.SPILL_BYTES_REREAD],
      "shuffle_bytes": sum(shuffles.values()),
      "shuffles": dict(shuffles),
      "counters": counters,
  }


def compare(rows: int, classes: int, directory: str, tolerance: float
            ) -> bool:
  """Prints the measured and planned figures; whether all are within
  `tolerance` of each other."""
  from lossaudit import cost
  from lossaudit.pipelines.plan import sample_input

  measured = measure(rows, classes, directory)
  # As `lossaudit plan --rows ROWS` plans it: bytes a row and id length
  # sampled from the input's first file.
  sample = sample_input(measured["config"])
  plan = cost.plan_cost(measured["config"], rows, classes,
                        input_bytes_per_row=sample.bytes_per_row,
                        id_length=round(sample.id_length))
  planned = {"spill_bytes_written": plan.spill_bytes,
             "spill_bytes_reread": plan.reread_bytes,
             "shuffle_bytes": plan.shuffle_bytes}
  print(f"rows {rows:,}, classes {classes:,}, input"
        f" {measured['input_bytes_per_row']:.1f} bytes/row")
  print("shuffled, measured per GroupByKey:")
  for name, size in sorted(measured["shuffles"].items(),
                           key=lambda item: -item[1]):
    print(f"  {size:>15,}  {name}")
  print("shuffled, planned per stage:")
  for stage in plan.shuffles:
    print(f"  {stage.bytes:>15,}  {stage.name}")
  ok = True
  print(f"{'figure':<22}{'measured':>16}{'planned':>16}{'planned/measured':>18}")
  for name, value in planned.items():
    ratio = value / measured[name] if measured[name] else float("inf")
    ok &= abs(ratio - 1) <= tolerance
    print(f"{name:<22}{measured[name]:>16,}{value:>16,}{ratio:>18.3f}")
  return ok


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--rows", type=int, default=1_000_000)
  parser.add_argument("--classes", type=int, default=100)
  parser.add_argument("--tolerance", type=float, default=0.2)
  parser.add_argument("--keep", help="a directory for the input and outputs"
                      " (kept); default: a temporary one")
  args = parser.parse_args(argv)
  if args.keep:
    os.makedirs(args.keep, exist_ok=True)
    ok = compare(args.rows, args.classes, args.keep, args.tolerance)
  else:
    with tempfile.TemporaryDirectory() as directory:
      ok = compare(args.rows, args.classes, directory, args.tolerance)
  print("within tolerance" if ok else
        f"OFF by more than {args.tolerance:.0%}")
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(main())
