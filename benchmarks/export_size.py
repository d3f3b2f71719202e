"""Time and size of `lossaudit export` at N flagged rows.

  python benchmarks/export_size.py RUN_DIR N [--previews]

Copies the completed run in RUN_DIR (a classification run with label
issues) to a temporary folder, replaces its `flagged/` with N rows made
from its own (ids renamed, scores drawn at random, every second row a
label issue), with `--previews` a `previews.parquet` of a 2 KB image URI
for each, then exports both formats and prints seconds, peak memory and
bytes of each.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lossaudit.pipelines import export


def make_run(source: str, target: str, n: int, previews: bool) -> None:
  shutil.copytree(source, target)
  flagged = os.path.join(target, "flagged")
  files = sorted(os.listdir(flagged))
  table = pa.concat_tables(pq.read_table(os.path.join(flagged, f))
                           for f in files)
  for f in files:
    os.remove(os.path.join(flagged, f))
  rng = np.random.default_rng(0)
  rows = table.take(pa.array(rng.integers(0, table.num_rows, n)))
  ids = pa.array([f"row-{i:09d}" for i in range(n)])
  rows = rows.set_column(0, "id", ids)
  rows = rows.set_column(rows.schema.get_field_index("score"), "score",
                         pa.array(rng.exponential(size=n)))
  if "suggested_label" in rows.column_names:
    keep = pa.array(np.arange(n) % 2 == 0)
    i = rows.schema.get_field_index("suggested_label")
    rows = rows.set_column(i, "suggested_label", pc.if_else(
        keep, rows.column(i), pa.scalar(None, pa.int64())))
  pq.write_table(rows, os.path.join(flagged,
                                    "part-00000-of-00001.parquet"))
  if previews:
    uri = "data:image/png;base64," + "A" * 2000
    pq.write_table(pa.table({
        "id": ids, "input": pa.array(["image"] * n),
        "kind": pa.array(["image"] * n), "value": pa.array([uri] * n),
        "more": pa.array(np.zeros(n, np.int64))}),
                   os.path.join(target, "previews.parquet"))


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("run_dir")
  parser.add_argument("rows", type=int)
  parser.add_argument("--previews", action="store_true")
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    run = os.path.join(tmp, "run")
    make_run(args.run_dir, run, args.rows, args.previews)
    for fmt, name in (("csv", "rows.csv"), ("label-studio", "tasks.json")):
      out = os.path.join(tmp, name)
      start = time.perf_counter()
      assert export.main([run, "--format", fmt, "--output", out]) == 0
      seconds = time.perf_counter() - start
      peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
      print(f"{fmt}: {args.rows} rows in {seconds:.2f} s,"
            f" {os.path.getsize(out) / 1e6:.1f} MB, peak RSS so far"
            f" {peak:.0f} MB")


if __name__ == "__main__":
  main()
