"""Label issues at many classes: lossaudit and cleanlab, same probabilities.

  python benchmarks/many_classes.py [--preset k1000|k10000|quick]
      [--rows N[,N...]] [--classes K] [--methods a,b] [--dir DIR]
      [--keep-data] [--out FILE.md] [--json FILE.json]

For each size (N rows, K classes) it writes synthetic predicted
probabilities as Parquet shards (`id` int64, `label` int64, `p`
list<float32>), generated chunk by chunk so that this script never holds
N×K values, then runs, each in its own process and one at a time:

* lossaudit as a user would: `python -m lossaudit.pipelines.audit --config
  X` (DirectRunner, its default one worker), `model.predictions_column: p`,
  `flag.label_issues` set to the method and no loss rule;
* cleanlab 2.9: a process that reads the same shards into one `(N, K)`
  float32 array and calls `cleanlab.filter.find_label_issues(labels, probs,
  filter_by=method, n_jobs=1)`.

for each method (`confident_learning`, `prune_by_noise_rate`). It measures
wall seconds, CPU seconds over wall ("cores busy"), the peak resident memory
of the process tree (the sum over the process and its children, polled from
/proc every 0.1 s, or the kernel's own peak of the largest process when that
is higher) and the Jaccard index of the flagged ids: lossaudit's
`flagged/` rows with the `label_issue` reason against cleanlab's mask.

The probabilities are those of a decent model with realistic confusions:
each class has 3 "similar" classes (the next 3, modulo K) that take some of
its mass, the rest is spread thinly over all K classes (so most of the mass
is on a few classes, and every probability is non-zero). 10% of the labels
are wrong: 8% moved to one of the similar classes, 2% to any class.

Presets (`--preset`): `k1000` (K=1,000 at N = 100k, 200k, 500k, 1M: growing
N at fixed K), `k10000` (K=10,000 at N = 20k, 50k, 100k), `quick` (K=1,000,
N=20k, a smoke run of about a minute). `--rows` and `--classes` give other
sizes. The data goes under `--dir` (default /tmp/bench33; 4 GB at 1M rows ×
1,000 classes) and is deleted after each size unless `--keep-data`. Run it
with `nice -n 10` on a shared machine.

A run that fails (killed for memory, say) is shown as such in the table
with its peak memory, and the script goes on with the next one.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from typing import Dict, List, Optional, Tuple

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METHODS = ("confident_learning", "prune_by_noise_rate")
PRESETS = {
    "quick": (1000, (20_000,)),
    "k1000": (1000, (100_000, 200_000, 500_000, 1_000_000)),
    "k10000": (10_000, (20_000, 50_000, 100_000)),
}
SIMILAR = 3  # Each class's similar classes: the next SIMILAR, modulo K.
NOISE_SIMILAR, NOISE_ANY = 0.08, 0.02
CHUNK_VALUES = 1 << 23  # Values generated at once (32 MB of float32).
SHARD_VALUES = 1 << 26  # Values per Parquet shard (256 MB of float32).
POLL_SECONDS = 0.1


# ---- data -------------------------------------------------------------------


def _chunk(rng: np.random.Generator, rows: int, classes: int
           ) -> Tuple[np.ndarray, np.ndarray]:
  """One chunk's given labels `(rows,)` int64 and probabilities
  `(rows, classes)` float32.

  Logits: standard normal noise on every class, plus log(K) + 2.5 (sd 1.5)
  on the true class and log(K) - 0.5 (sd 1.5) on each of its similar
  classes, so the true class takes about 60% of the mass at any K.
  """
  truth = rng.integers(0, classes, rows)
  logits = rng.standard_normal((rows, classes), dtype=np.float32)
  at = np.arange(rows)
  base = np.log(classes)
  logits[at, truth] += rng.normal(base + 2.5, 1.5, rows).astype(np.float32)
  for j in range(1, SIMILAR + 1):
    logits[at, (truth + j) % classes] += rng.normal(
        base - 0.5, 1.5, rows).astype(np.float32)
  logits -= logits.max(axis=1, keepdims=True)
  np.exp(logits, out=logits)
  logits /= logits.sum(axis=1, keepdims=True)
  given = truth.copy()
  u = rng.random(rows)
  similar = u < NOISE_SIMILAR
  given[similar] = (truth[similar] + rng.choice(
      np.arange(1, SIMILAR + 1), similar.sum(), p=[0.6, 0.3, 0.1])) % classes
  anyc = (u >= NOISE_SIMILAR) & (u < NOISE_SIMILAR + NOISE_ANY)
  given[anyc] = (truth[anyc] + rng.integers(1, classes, anyc.sum())) % classes
  return given, logits


def build(directory: str, rows: int, classes: int, seed: int = 0) -> Dict:
  """Writes `directory/data/part-*.parquet`; reuses it when the sizes match.

  Returns:
    The data's description (also `directory/meta.json`).
  """
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top

  meta_path = os.path.join(directory, "meta.json")
  meta = dict(rows=rows, classes=classes, seed=seed, similar=SIMILAR,
              noise=[NOISE_SIMILAR, NOISE_ANY], version=1)
  if os.path.exists(meta_path):
    with open(meta_path, encoding="utf-8") as f:
      if json.load(f) == meta:
        return meta
  shutil.rmtree(directory, ignore_errors=True)
  data = os.path.join(directory, "data")
  os.makedirs(data)
  rng = np.random.default_rng(seed)
  chunk = max(1, CHUNK_VALUES // classes)
  per_shard = max(chunk, SHARD_VALUES // classes // chunk * chunk)
  shards = -(-rows // per_shard)
  schema = pa.schema([("id", pa.int64()), ("label", pa.int64()),
                      ("p", pa.list_(pa.float32()))])
  for shard in range(shards):
    lo, hi = shard * per_shard, min(rows, (shard + 1) * per_shard)
    path = os.path.join(data, f"part-{shard:05d}-of-{shards:05d}.parquet")
    with pq.ParquetWriter(path, schema, compression="none") as writer:
      for start in range(lo, hi, chunk):
        n = min(chunk, hi - start)
        given, probs = _chunk(rng, n, classes)
        offsets = pa.array(np.arange(0, n * classes + 1, classes,
                                     dtype=np.int32))
        writer.write_table(pa.table({
            "id": np.arange(start, start + n, dtype=np.int64),
            "label": given,
            "p": pa.ListArray.from_arrays(offsets, probs.reshape(-1)),
        }, schema=schema))
  meta["shards"] = shards
  meta["bytes"] = sum(os.path.getsize(p) for p in
                      glob.glob(os.path.join(data, "*.parquet")))
  with open(meta_path, "w", encoding="utf-8") as f:
    json.dump({k: meta[k] for k in meta if k not in ("shards", "bytes")}, f)
  return meta


# ---- measuring a process tree ------------------------------------------------


def _tree_rss_bytes(root: int) -> int:
  """Resident bytes of `root` and every process below it."""
  children: Dict[int, List[int]] = {}
  rss: Dict[int, int] = {}
  for entry in os.listdir("/proc"):
    if not entry.isdigit():
      continue
    try:
      with open(f"/proc/{entry}/stat", encoding="utf-8") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
      continue
    pid = int(entry)
    children.setdefault(int(fields[1]), []).append(pid)  # ppid
    rss[pid] = int(fields[21]) * resource.getpagesize()
  total, todo = 0, [root]
  while todo:
    pid = todo.pop()
    total += rss.get(pid, 0)
    todo.extend(children.get(pid, ()))
  return total


def measure(command: List[str], env: Dict[str, str], log: str) -> Dict:
  """Runs `command`, its output to `log`.

  Returns:
    `{"rc", "wall_s", "cpu_s", "cores_busy", "peak_rss_mb" (the larger of
    the polled tree sum and the kernel's peak of one process),
    "tree_rss_mb", "maxrss_mb"}`.
  """
  peak = [0]
  with open(log, "w", encoding="utf-8") as out:
    start = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=out,
                            stderr=subprocess.STDOUT, cwd=REPO)
    done = threading.Event()

    def poll():
      while not done.wait(POLL_SECONDS):
        peak[0] = max(peak[0], _tree_rss_bytes(proc.pid))

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    done.set()
    poller.join()
  proc.returncode = os.waitstatus_to_exitcode(status)
  cpu = usage.ru_utime + usage.ru_stime
  maxrss = usage.ru_maxrss / 1024.0
  tree = peak[0] / 2.0 ** 20
  return {"rc": proc.returncode, "wall_s": wall, "cpu_s": cpu,
          "cores_busy": cpu / wall, "peak_rss_mb": max(tree, maxrss),
          "tree_rss_mb": tree, "maxrss_mb": maxrss}


# ---- the two sides -----------------------------------------------------------


def lossaudit_config(directory: str, out: str, method: str) -> Dict:
  """The audit's config: the predictions column, label issues only."""
  return {
      "input": {"pattern": os.path.join(directory, "data", "*.parquet"),
                "format": "parquet", "id_column": "id",
                "label_column": "label"},
      "model": {"predictions_column": "p"},
      "loss": {"name": "sparse_categorical_crossentropy"},
      "flag": {"loss_quantile": None, "label_issues": method},
      "output": {"dir": out, "overwrite": True},
  }


def run_lossaudit(directory: str, method: str) -> Tuple[Dict, Optional[set]]:
  """`python -m lossaudit.pipelines.audit --config X`, measured; the ids
  flagged `label_issue` (None when the run failed)."""
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  import yaml  # pylint: disable=g-import-not-at-top

  out = os.path.join(directory, f"lossaudit-{method}")
  shutil.rmtree(out, ignore_errors=True)
  config = os.path.join(directory, f"lossaudit-{method}.yaml")
  with open(config, "w", encoding="utf-8") as f:
    yaml.safe_dump(lossaudit_config(directory, out, method), f)
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
  result = measure([sys.executable, "-m", "lossaudit.pipelines.audit",
                    "--config", config], env, out + ".log")
  if result["rc"]:
    return result, None
  table = pq.read_table(os.path.join(out, "flagged"),
                        columns=["id", "reasons"]).to_pydict()
  # The flagged ids are strings whatever the input's id type.
  ids = {int(i) for i, reasons in zip(table["id"], table["reasons"])
         if "label_issue" in reasons}
  for name in ("summary.json", "report.html"):
    result[name] = os.path.getsize(os.path.join(out, name))
  result.update(render_report(os.path.join(out, "report.html")))
  shutil.rmtree(os.path.join(out, "losses"), ignore_errors=True)
  return result, ids


CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-dev-shm-usage", "--enable-logging=stderr",
                  "--v=0", "--dump-dom")


def render_report(path: str) -> Dict:
  """Headless Chromium's wall seconds to load `path` and dump its DOM (the
  whole process, as a user opening it would wait), and its console errors;
  {} without chromium."""
  chromium = shutil.which("chromium") or shutil.which("chromium-browser")
  if chromium is None:
    return {}
  began = time.perf_counter()
  done = subprocess.run([chromium, *CHROMIUM_FLAGS, f"file://{path}"],
                        capture_output=True, text=True, timeout=120,
                        check=False)
  return {"report_render_s": time.perf_counter() - began,
          "report_console_errors": done.stderr.count("CONSOLE")}


def run_cleanlab(directory: str, method: str) -> Tuple[Dict, Optional[set]]:
  """This script's `--cleanlab-child`, measured; the ids it flags."""
  out = os.path.join(directory, f"cleanlab-{method}")
  env = dict(os.environ, PYTHONPATH=REPO)
  result = measure([sys.executable, os.path.abspath(__file__),
                    "--cleanlab-child", directory, method, out + ".npy"],
                   env, out + ".log")
  if result["rc"]:
    return result, None
  with open(out + ".json", encoding="utf-8") as f:
    result.update(json.load(f))
  return result, set(np.load(out + ".npy").tolist())


def cleanlab_child(directory: str, method: str, out: str) -> None:
  """Reads the shards into `(N, K)` float32 and runs cleanlab; writes the
  flagged ids to `out` (.npy) and its load and filter seconds beside it."""
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  from cleanlab.filter import find_label_issues  # pylint: disable=g-import-not-at-top

  start = time.perf_counter()
  with open(os.path.join(directory, "meta.json"), encoding="utf-8") as f:
    meta = json.load(f)
  rows, classes = meta["rows"], meta["classes"]
  probs = np.empty((rows, classes), np.float32)
  ids = np.empty(rows, np.int64)
  labels = np.empty(rows, np.int64)
  at = 0
  for path in sorted(glob.glob(os.path.join(directory, "data", "*.parquet"))):
    for batch in pq.ParquetFile(path).iter_batches(batch_size=8192):
      n = batch.num_rows
      ids[at:at + n] = batch.column("id").to_numpy()
      labels[at:at + n] = batch.column("label").to_numpy()
      probs[at:at + n] = batch.column("p").values.to_numpy().reshape(
          n, classes)
      at += n
  assert at == rows, (at, rows)
  loaded = time.perf_counter()
  mask = find_label_issues(labels, probs, filter_by=method, n_jobs=1)
  found = time.perf_counter()
  np.save(out, ids[mask])
  with open(out[:-len(".npy")] + ".json", "w", encoding="utf-8") as f:
    json.dump({"load_s": loaded - start, "filter_s": found - loaded}, f)


# ---- the run and its table ------------------------------------------------


def jaccard(a: set, b: set) -> float:
  return len(a & b) / len(a | b) if a | b else 1.0


def run_size(base: str, rows: int, classes: int, methods: List[str],
             keep: bool) -> List[Dict]:
  directory = os.path.join(base, f"n{rows}-k{classes}")
  began = time.perf_counter()
  meta = build(directory, rows, classes)
  print(f"N={rows} K={classes}: data in {time.perf_counter() - began:.0f} s",
        file=sys.stderr, flush=True)
  results = []
  for method in methods:
    row = {"rows": rows, "classes": classes, "method": method}
    for side, run in (("lossaudit", run_lossaudit),
                      ("cleanlab", run_cleanlab)):
      row[side], row[side + "_ids"] = run(directory, method)
      print(f"  {method} {side}: rc {row[side]['rc']}, "
            f"{row[side]['wall_s']:.0f} s, "
            f"{row[side]['peak_rss_mb'] / 1024:.2f} GB", file=sys.stderr,
            flush=True)
    a, b = row.pop("lossaudit_ids"), row.pop("cleanlab_ids")
    if a is not None and b is not None:
      row.update(jaccard=jaccard(a, b), flagged_lossaudit=len(a),
                 flagged_cleanlab=len(b))
    results.append(row)
  if not keep:
    shutil.rmtree(directory, ignore_errors=True)
  del meta
  return results


def _side(r: Dict) -> str:
  cell = (f"{r['wall_s']:.0f} s | {r['cores_busy']:.2f} | "
          f"{r['peak_rss_mb'] / 1024:.2f} GB")
  if r["rc"]:
    reason = "killed" if r["rc"] < 0 or r["rc"] == 137 else f"exit {r['rc']}"
    cell = cell.replace(" s |", f" s ({reason}) |", 1)
  return cell


def table(results: List[Dict]) -> str:
  lines = ["| K | N | method | lossaudit time | cores busy | peak memory "
           "| cleanlab time | cores busy | peak memory | flagged "
           "(lossaudit / cleanlab) | Jaccard |",
           "| ---: | ---: | --- |" + " ---: |" * 8]
  for r in results:
    agree = ("-", "-")
    if "jaccard" in r:
      agree = (f"{r['flagged_lossaudit']:,} / {r['flagged_cleanlab']:,}",
               f"{r['jaccard']:.4f}")
    lines.append(f"| {r['classes']:,} | {r['rows']:,} | {r['method']} | "
                 f"{_side(r['lossaudit'])} | {_side(r['cleanlab'])} | "
                 f"{agree[0]} | {agree[1]} |")
  return "\n".join(lines)


def main(argv: List[str]) -> None:
  if argv[:1] == ["--cleanlab-child"]:
    cleanlab_child(*argv[1:4])
    return
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--preset", choices=sorted(PRESETS), default=None)
  parser.add_argument("--quick", action="store_true",
                      help="the same as --preset quick")
  parser.add_argument("--rows", default=None,
                      help="comma-separated row counts (with --classes)")
  parser.add_argument("--classes", type=int, default=1000)
  parser.add_argument("--methods", default=",".join(METHODS))
  parser.add_argument("--dir", default="/tmp/bench33")
  parser.add_argument("--keep-data", action="store_true")
  parser.add_argument("--out", default=None, help="also write the table here")
  parser.add_argument("--json", default=None,
                      help="also write every measurement here")
  args = parser.parse_args(argv)
  if args.quick:
    args.preset = "quick"
  if args.rows:
    classes, sizes = args.classes, tuple(int(n) for n in args.rows.split(","))
  elif args.preset:
    classes, sizes = PRESETS[args.preset]
  else:
    raise SystemExit("--preset or --rows: expected one. Received: neither")
  methods = args.methods.split(",")
  for method in methods:
    if method not in METHODS:
      raise SystemExit(f"--methods: expected names of {', '.join(METHODS)}. "
                       f"Received: {method}")
  results = []
  for rows in sizes:
    results += run_size(args.dir, rows, classes, methods, args.keep_data)
  text = table(results) + (
      "\n\nTime: wall seconds, reading the Parquet shards included; cores "
      "busy: CPU seconds over wall seconds; peak memory: resident memory of "
      "the process and its children.\n")
  renders = [r["lossaudit"] for r in results
             if "report_render_s" in r["lossaudit"]]
  if renders:
    largest = max(r["report.html"] for r in renders) / 1e6
    text += (
        f"report.html: at most {largest:.2f} MB; headless Chromium loads"
        " each in at most"
        f" {max(r['report_render_s'] for r in renders):.1f} s (its whole"
        f" process), {sum(r['report_console_errors'] for r in renders)}"
        " console errors. summary.json: at most"
        f" {max(r['summary.json'] for r in renders) / 1e6:.2f} MB.\n")
  print(text)
  if args.out:
    with open(args.out, "w", encoding="utf-8") as f:
      f.write(text)
  if args.json:
    with open(args.json, "w", encoding="utf-8") as f:
      json.dump(results, f, indent=1)


if __name__ == "__main__":
  main(sys.argv[1:])
