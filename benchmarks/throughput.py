"""Throughput benchmark: lossaudit vs a plain TensorFlow loop vs RunInference.

`scripts/benchmark [--examples N] [--hidden H] [--classes K] ...` builds the
data (tf.train.Example TFRecord shards) and an MLP, then in one run times

  (a) `lossaudit run` on the DirectRunner,
  (b) a plain TensorFlow loop over the same files (tf.data reading and
      parsing in parallel, model and loss in one tf.function, numpy
      quantiles and flagged ids),
  (c) the usual Beam way (ReadFromTFRecord, per-record parsing,
      RunInference, per-element loss, ApproximateQuantiles) on a subset,
      scaled to the full size,

each in its own process so its peak memory is its own. It checks that (a)
and (b) agree on the losses, quantiles and flagged ids, and prints
examples/s, the ratios a/b and a/c and peak memory, also as JSON.

`--case text|image|serialized` times other inputs instead (see cases.py):
raw strings into a `.keras` TextVectorization model, PNG bytes into a
SavedModel that decodes them, and serialized tf.Examples into a SavedModel
that parses them. For text and image, (a) is compared with (b), that case's
plain tf.data loop; for serialized, (a) is lossaudit with the
serialized-example SavedModel, (b) the plain loop calling the same
signature, and (d) lossaudit's own decode path (the same MLP as a SavedModel
taking the parsed features); it prints a/b and a/d. Each case checks that
its sides agree on the losses.

`--several` also times (a) with K=5 fold models (`model.folds`) and with
5 checkpoints (`model.checkpoints`), MLPs of the same shape, and prints
each one's median time and peak memory over (a)'s, one model.

`--checkpoint-rules` also times the label-issue rules of training
checkpoints (numeric case): `a-heldout-loss`, K=5 folds × 4 checkpoints each
(`model.select_checkpoint: heldout_loss`, `prune_by_noise_rate`), and
`a-early-aum`, 5 final fold models and 4 checkpoints of a full model
(`flag.label_issues: early_aum`): the scoring model perturbed, so that
label issues are a few percent of the rows, as with trained checkpoints.
Each prints its median time and peak memory over (a)'s.

`--nightly` also times (a) with flag history (`gate.baseline`: the (a) run
just before it, so every flag is persistent) and `output.clean` (a copy of
every input file less its flags), and prints its median time and peak
memory over (a)'s. `--flag-quantile 0` flags nearly every example (1M
flagged rows at 1M).

With `--baseline-code DIR` (a checkout of another commit, e.g. from
`git worktree add`) it also times (a) with that code, interleaved with the
others, and prints the ratios of median time and of peak memory (this
checkout over DIR's).

`--startup` times start-up instead (see startup.py).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import audit_at
import cases
import numpy as np
import startup

from lossaudit import datasets

QUANTILES = (0.5, 0.9, 0.99)
BASELINE = "@baseline"  # A mode's twin, run with --baseline-code.


def build(directory: str, examples: int, shards: int, features: int,
          hidden: int, classes: int, seed: int = 0) -> Dict:
  """Writes the data and model once; reuses them when the sizes match."""
  meta_path = os.path.join(directory, "meta.json")
  meta = dict(examples=examples, shards=shards, features=features,
              hidden=hidden, classes=classes, seed=seed,
              labels="model argmax, 10% flipped")
  if os.path.exists(meta_path):
    with open(meta_path) as f:
      if json.load(f) == meta:
        return meta
  os.makedirs(directory, exist_ok=True)
  # Labels are the model's own predictions with 10% flipped, so label-issue
  # detection has real work to do.
  model = _mlp(features, hidden, classes, seed)
  model.save(os.path.join(directory, "model.keras"))
  rng = np.random.default_rng(seed)
  data_dir = os.path.join(directory, "data")
  per_shard = -(-examples // shards)
  for shard in range(shards):
    lo, hi = shard * per_shard, min(examples, (shard + 1) * per_shard)
    x = rng.normal(size=(hi - lo, features)).astype(np.float32)
    label = model.predict(x, batch_size=4096, verbose=0).argmax(axis=1)
    flip = rng.random(hi - lo) < 0.1
    label[flip] = (label[flip] + rng.integers(1, classes, flip.sum())) % classes
    columns = {"id": np.char.add("ex-", np.arange(lo, hi).astype(str)),
               "x": x, "label": label}
    datasets.write_tfrecords(data_dir, columns, num_shards=1,
                             prefix=f"part-{shard:05d}-of-{shards:05d}")
  with open(meta_path, "w") as f:
    json.dump(meta, f)
  return meta


def _mlp(features: int, hidden: int, classes: int, seed: int):
  """The benchmark's MLP: two hidden layers and a confident (peaked)
  softmax output `probs`."""
  import keras  # pylint: disable=g-import-not-at-top

  keras.utils.set_random_seed(seed)
  inputs = keras.Input((features,), name="x")
  h = keras.layers.Dense(hidden, activation="relu")(inputs)
  h = keras.layers.Dense(hidden, activation="relu")(h)
  outputs = keras.layers.Dense(
      classes, activation="softmax", name="probs",
      kernel_initializer=keras.initializers.RandomNormal(stddev=0.3))(h)
  return keras.Model(inputs, outputs)


SEVERAL = 5  # Folds, or checkpoints, of `--several`.
SEVERAL_MODES = ("a-folds", "a-checkpoints")
CHECKPOINT_MODES = ("a-heldout-loss", "a-early-aum")
CHECKPOINTS = 4  # Per fold, and of the full model, of `--checkpoint-rules`.
NIGHTLY = "a-nightly"  # (a) with flag history (against (a)) and clean/.


def build_several(directory: str, features: int, hidden: int, classes: int,
                  seed: int = 0) -> None:
  """Writes `several-{k}.keras`, k < SEVERAL: MLPs shaped as `model.keras`
  with other weights, the folds or checkpoints of `--several`."""
  for k in range(SEVERAL):
    path = os.path.join(directory, f"several-{k}.keras")
    if not os.path.exists(path):
      _mlp(features, hidden, classes, seed + 1 + k).save(path)


def build_checkpoints(directory: str, seed: int = 100) -> None:
  """Writes `fold{k}-ckpt{c}.keras` (k < SEVERAL, c < CHECKPOINTS) and
  `full-ckpt{c}.keras`, the models of `--checkpoint-rules`: `model.keras`
  (whose predictions the labels are, 10% flipped) with its weights
  perturbed, more for earlier checkpoints, so that they agree with most
  labels as trained checkpoints would, and label issues are a few percent
  of the rows (random models would make most rows issues)."""
  import keras  # pylint: disable=g-import-not-at-top

  names = [(f"fold{k}-ckpt{c}", c) for k in range(SEVERAL)
           for c in range(CHECKPOINTS)]
  names += [(f"full-ckpt{c}", c) for c in range(CHECKPOINTS)]
  rng = np.random.default_rng(seed)
  for name, c in names:
    path = os.path.join(directory, f"{name}.keras")
    if os.path.exists(path):
      continue
    model = keras.models.load_model(os.path.join(directory, "model.keras"))
    scale = 0.4 * (CHECKPOINTS - c) / CHECKPOINTS
    model.set_weights([w + rng.normal(scale=scale * (w.std() + 1e-3),
                                      size=w.shape).astype(w.dtype)
                       for w in model.get_weights()])
    model.save(path)


def checkpoint_rule_sections(directory: str, mode: str
                             ) -> Tuple[Dict, Dict]:
  """The `model` and `flag` sections of a `CHECKPOINT_MODES` mode."""
  checkpoints = list(range(CHECKPOINTS))
  if mode == "a-heldout-loss":
    return ({"path": os.path.join(directory, "fold{fold}-ckpt{checkpoint}"
                                  ".keras"), "folds": SEVERAL,
             "checkpoints": checkpoints, "select_checkpoint": "heldout_loss"},
            {"label_issues": "prune_by_noise_rate"})
  last = CHECKPOINTS - 1
  return ({"path": os.path.join(directory, f"fold{{fold}}-ckpt{last}.keras"),
           "folds": SEVERAL, "checkpoints": checkpoints,
           "dynamics_path": os.path.join(directory,
                                         "full-ckpt{checkpoint}.keras")},
          {"label_issues": "early_aum"})


def several_model(directory: str, mode: str) -> Dict:
  """The `model` config section of a `SEVERAL_MODES` mode."""
  if mode == "a-folds":
    return {"path": os.path.join(directory, "several-{fold}.keras"),
            "folds": SEVERAL}
  return {"path": os.path.join(directory, "several-{checkpoint}.keras"),
          "checkpoints": list(range(SEVERAL))}


def _cpu_seconds() -> float:
  """CPU seconds of this process (every thread) and its finished
  children (the DirectRunner's worker processes)."""
  own = resource.getrusage(resource.RUSAGE_SELF)
  children = resource.getrusage(resource.RUSAGE_CHILDREN)
  return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _peak_rss_mb() -> float:
  """This process's peak resident memory, in MiB.

  Read from /proc's VmHWM: `ru_maxrss` survives exec on Linux, so a child
  would report its parent's peak when that was higher.
  """
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("VmHWM:"):
          return int(line.split()[1]) / 1024.0
  except OSError:
    pass
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ---- (a) lossaudit -------------------------------------------------------


def run_lossaudit(directory: str, out: str, workers: int, batch_size: int,
                  label_issues: Optional[str],
                  code_dir: Optional[str] = None, case: str = "numeric",
                  mode: str = "a", flag_quantile: float = 0.99) -> Dict:
  """Times `lossaudit run`; with `code_dir`, the code of that checkout.

  `case` and `mode` pick the data and model (`cases.audit_sections`). Like
  (b)'s, the time leaves out importing TensorFlow and Keras (4–5 s here),
  which `lossaudit run` does after checking its config.
  """
  import keras  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  import tensorflow  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  import yaml  # pylint: disable=g-import-not-at-top

  if code_dir:
    audit = audit_at.audit_module(code_dir)
  else:
    from lossaudit.pipelines import audit  # pylint: disable=g-import-not-at-top

  config = {
      "input": {"pattern": os.path.join(directory, "data", "*.tfrecord.gz")},
      "model": {"path": os.path.join(directory, "model.keras")},
      "loss": {"name": "sparse_categorical_crossentropy"},
      "batch_size": batch_size,
      "stats": {"quantiles": list(QUANTILES), "epsilon": 0.001},
      "flag": {"loss_quantile": flag_quantile, "label_issues": label_issues},
      "output": {"dir": out},
  }
  if mode == NIGHTLY:  # Today's flags joined with (a)'s; the clean copy.
    config["gate"] = {"baseline": os.path.join(os.path.dirname(out), "a")}
    config["output"]["clean"] = {}
  if case != "numeric":
    config["input"], config["model"] = cases.audit_sections(case, directory,
                                                            mode)
  if mode in SEVERAL_MODES:
    config["model"] = several_model(directory, mode)
  if mode in CHECKPOINT_MODES:
    config["model"], flag = checkpoint_rule_sections(directory, mode)
    config["flag"].update(flag)
  path = os.path.join(out + ".yaml")
  with open(path, "w") as f:
    yaml.safe_dump(config, f)
  argv = ["--config", path]
  if workers > 1:
    argv += [f"--direct_num_workers={workers}",
             "--direct_running_mode=multi_processing"]
  start, cpu = time.perf_counter(), _cpu_seconds()
  summary = audit.run(argv)
  seconds = time.perf_counter() - start
  return {"seconds": seconds, "examples": summary["examples_scored"],
          "cores_busy": (_cpu_seconds() - cpu) / seconds,
          "quantiles": summary["loss"]["quantiles"],
          "flagged": summary["flagged"]["total"],
          "clean": summary.get("clean"),
          "persistent": summary["flagged"].get("persistent")}


# ---- (b) plain TensorFlow ------------------------------------------------


def run_plain_tf(directory: str, out: str, batch_size: int,
                 case: str = "numeric") -> Dict:
  """Times the plain TensorFlow loop of `case`, then quantiles and flagged
  ids with numpy; saves its ids, losses and flagged ids for `_compare`.
  Like (a)'s, the time leaves out importing TensorFlow and Keras."""
  import keras  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  import tensorflow  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import

  start = time.perf_counter()
  if case == "numeric":
    ids, losses = _plain_tf_numeric(directory, batch_size)
  else:
    ids, losses = cases.plain_tf_losses(case, directory, batch_size)
  quantiles = {str(q): float(v) for q, v in zip(
      QUANTILES, np.quantile(losses, QUANTILES, method="inverted_cdf"))}
  threshold = float(np.quantile(losses, 0.99, method="inverted_cdf"))
  flagged = ids[losses > threshold]
  seconds = time.perf_counter() - start
  np.savez(os.path.join(out, "plain_tf.npz"), ids=ids, losses=losses,
           flagged=flagged)
  return {"seconds": seconds, "examples": int(losses.size),
          "quantiles": quantiles, "flagged": int(flagged.size)}


def _plain_tf_numeric(directory: str, batch_size: int):
  import glob  # pylint: disable=g-import-not-at-top

  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  meta = json.load(open(os.path.join(directory, "meta.json")))
  model = keras.models.load_model(os.path.join(directory, "model.keras"),
                                  compile=False)
  loss_fn = keras.losses.SparseCategoricalCrossentropy(reduction=None)
  spec = {
      "id": tf.io.FixedLenFeature([], tf.string),
      "x": tf.io.FixedLenFeature([meta["features"]], tf.float32),
      "label": tf.io.FixedLenFeature([], tf.int64),
  }
  files = sorted(glob.glob(os.path.join(directory, "data", "*.tfrecord.gz")))
  dataset = (tf.data.TFRecordDataset(files, compression_type="GZIP",
                                     num_parallel_reads=len(files))
             .batch(batch_size)
             .map(lambda r: tf.io.parse_example(r, spec),
                  num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
             .prefetch(tf.data.AUTOTUNE))

  @tf.function
  def score(batch):
    return loss_fn(batch["label"], model(batch["x"], training=False))

  ids, losses = [], []
  for batch in dataset:
    losses.append(score(batch).numpy())
    ids.append(batch["id"].numpy())
  return (np.concatenate(ids).astype(str),
          np.concatenate(losses).astype(np.float64))


# ---- (c) Beam RunInference, per element ----------------------------------


def run_inference(directory: str, subset: int) -> Dict:
  import glob  # pylint: disable=g-import-not-at-top

  import apache_beam as beam  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from apache_beam.ml.inference import base  # pylint: disable=g-import-not-at-top

  files = sorted(glob.glob(os.path.join(directory, "data", "*.tfrecord.gz")))
  records = []
  for record in tf.data.TFRecordDataset(files[:1], compression_type="GZIP"
                                        ).take(subset):
    records.append(record.numpy())
  subset_file = os.path.join(directory, f"subset-{len(records)}.tfrecord")
  with tf.io.TFRecordWriter(subset_file) as writer:
    for record in records:
      writer.write(record)

  meta = json.load(open(os.path.join(directory, "meta.json")))
  spec = {"x": tf.io.FixedLenFeature([meta["features"]], tf.float32),
          "label": tf.io.FixedLenFeature([], tf.int64)}

  def parse(record: bytes):
    parsed = tf.io.parse_single_example(record, spec)
    return parsed["label"], parsed["x"]

  def per_element_loss(element):
    import keras  # pylint: disable=g-import-not-at-top

    label, result = element
    return float(keras.losses.sparse_categorical_crossentropy(
        label, result.inference))

  handler = _keras_tensor_handler(os.path.join(directory, "model.keras"))
  start = time.perf_counter()
  with beam.Pipeline() as p:
    inferred = (p | beam.io.ReadFromTFRecord(subset_file)
                | "Parse" >> beam.Map(parse)
                | base.RunInference(base.KeyedModelHandler(handler)))
    losses = inferred | "Loss" >> beam.Map(per_element_loss)
    _ = losses | beam.ApproximateQuantiles.Globally(100)
  seconds = time.perf_counter() - start
  return {"seconds": seconds, "examples": len(records)}


def _keras_tensor_handler(path: str):
  """Beam's TFModelHandlerTensor, minus its tensorflow_hub import.

  Same contract: load the model once, `tf.stack` the batch of tensors that
  RunInference's BatchElements built, call the model, one PredictionResult
  per element.
  """
  from apache_beam.ml.inference import base  # pylint: disable=g-import-not-at-top

  class KerasModelHandlerTensor(base.ModelHandler):

    def load_model(self):
      import keras  # pylint: disable=g-import-not-at-top
      return keras.models.load_model(path, compile=False)

    def run_inference(self, batch, model, inference_args=None):
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      predictions = model(tf.stack(batch), training=False)
      return [base.PredictionResult(x, y) for x, y in zip(batch, predictions)]

  return KerasModelHandlerTensor()


# ---- driver ---------------------------------------------------------------


def _child(argv: List[str]) -> Dict:
  """Runs one mode in a fresh process; returns its JSON result."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  done = subprocess.run([sys.executable, os.path.abspath(__file__),
                         "--child"] + argv, capture_output=True, text=True,
                        env=env, check=False)
  if done.returncode:
    raise RuntimeError(f"benchmark child {argv} failed:\n{done.stderr[-3000:]}")
  return json.loads(done.stdout.strip().splitlines()[-1])


def _losses_of(out: str):
  """`(ids, losses, flagged ids)` of a run's output folder: the plain loop's
  `plain_tf.npz`, or lossaudit's `losses/` and `flagged/`."""
  import pandas as pd  # pylint: disable=g-import-not-at-top

  path = os.path.join(out, "plain_tf.npz")
  if os.path.exists(path):
    plain = np.load(path)
    return plain["ids"], plain["losses"], set(plain["flagged"])
  table = pd.read_parquet(os.path.join(out, "losses"), columns=["id", "loss"])
  flagged = set(pd.read_parquet(os.path.join(out, "flagged"),
                                columns=["id"])["id"])
  return table["id"].to_numpy(), table["loss"].to_numpy(), flagged


def _compare(out_a: str, out_b: str) -> Dict:
  """How far (a)'s losses and flagged ids are from (b)'s (the reference)."""
  import pandas as pd  # pylint: disable=g-import-not-at-top

  ids_b, losses_b, flagged_b = _losses_of(out_b)
  ids_a, losses_a, flagged_a = _losses_of(out_a)
  ours = pd.Series(losses_a, index=ids_a).reindex(ids_b).to_numpy()
  diff = np.abs(ours - losses_b)
  rel = float(np.max(diff / np.maximum(np.abs(losses_b), 1e-6)))
  return {"examples_compared": int(len(ids_b)),
          "examples_missing": int(np.isnan(ours).sum()),
          "max_relative_loss_difference": rel,
          "agree_1e-5": bool(rel <= 1e-5 and not np.isnan(ours).any()),
          "flagged_jaccard": len(flagged_a & flagged_b) /
                             max(1, len(flagged_a | flagged_b))}


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(prog="scripts/benchmark")
  parser.add_argument("--case", choices=cases.CASES, default="numeric",
                      help="what is scored (default numeric: the MLP on"
                      " float features)")
  parser.add_argument("--examples", type=int, default=None,
                      help="default: 1,000,000 (numeric, serialized),"
                      " 200,000 (text), 50,000 (image)")
  parser.add_argument("--shards", type=int, default=8)
  parser.add_argument("--features", type=int, default=64)
  parser.add_argument("--hidden", type=int, default=256)
  parser.add_argument("--classes", type=int, default=10)
  parser.add_argument("--batch-size", type=int, default=1024)
  parser.add_argument("--workers", type=int, default=1,
                      help="DirectRunner workers for (a)")
  parser.add_argument("--runinference-subset", type=int, default=20_000)
  parser.add_argument("--label-issues", default=None,
                      help="also time (a) with flag.label_issues=METHOD")
  parser.add_argument("--several", action="store_true",
                      help="also time (a) with 5 fold models and with 5"
                      " checkpoints (numeric case)")
  parser.add_argument("--checkpoint-rules", action="store_true",
                      help="also time (a) with 5 folds × 4 checkpoints"
                      " selected by held-out loss, and with early AUM"
                      " (numeric case)")
  parser.add_argument("--nightly", action="store_true",
                      help="also time (a) with flag history against (a)'s"
                      " run and output.clean (numeric case)")
  parser.add_argument("--flag-quantile", type=float, default=0.99,
                      help="(a)'s flag.loss_quantile (0: nearly every example"
                      " is flagged)")
  parser.add_argument("--modes", default=None,
                      help="default a,b,c (numeric), a,b (text, image),"
                      " a,b,d (serialized)")
  parser.add_argument("--baseline-code", default=None,
                      help="also time (a) with the checkout in this folder")
  parser.add_argument("--repeat", "--runs", type=int, default=None,
                      help="runs of each mode, interleaved; medians reported"
                      " (default 1 for numeric, 3 for the other cases)")
  parser.add_argument("--dir", default="bench")
  parser.add_argument("--json", default=None, help="also write results here")
  parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--mode", default=None, help=argparse.SUPPRESS)
  parser.add_argument("--startup", action="store_true",
                      help="time start-up instead: the demo config from the"
                      " command to the first scored batch, and a bad key"
                      " (startup.py; --repeat, default 5)")
  args = parser.parse_args(argv)
  if args.startup:
    found = startup.measure(args.dir, args.repeat or 5)
    startup.report(found)
    if args.json:
      with open(args.json, "w", encoding="utf-8") as f:
        json.dump(found, f, indent=1)
    return 0
  numeric = args.case in ("numeric", "serialized")
  if args.examples is None:
    args.examples = cases.DEFAULT_EXAMPLES[args.case]
  if args.modes is None:
    args.modes = {"numeric": "a,b,c", "serialized": "a,b,d"}.get(args.case,
                                                                 "a,b")
  if args.repeat is None:
    args.repeat = 1 if args.case == "numeric" else 3

  if numeric:
    data_dir = os.path.join(args.dir, f"n{args.examples}-k{args.classes}"
                            f"-h{args.hidden}-f{args.features}")
  else:
    data_dir = os.path.join(args.dir, f"{args.case}-n{args.examples}")
  out_root = os.path.join(args.dir, "out")
  if args.case != "numeric":
    out_root = os.path.join(out_root, args.case)
  if args.case != "numeric" and "c" in args.modes.split(","):
    parser.error("--modes: (c), RunInference, is timed in the numeric case"
                 " only")
  if args.child:
    out = os.path.join(out_root, args.mode)
    os.makedirs(out, exist_ok=True)
    mode = args.mode.removesuffix(BASELINE)
    at_baseline = mode != args.mode
    if mode in ("a", "d") or mode.startswith("a-"):
      result = run_lossaudit(data_dir, out, args.workers, args.batch_size,
                             args.label_issues if mode.startswith("a-") and
                             mode not in (*SEVERAL_MODES, *CHECKPOINT_MODES,
                                          NIGHTLY) else None,
                             args.baseline_code if at_baseline else None,
                             args.case, mode, args.flag_quantile)
    elif args.mode == "b":
      result = run_plain_tf(data_dir, out, args.batch_size, args.case)
    else:
      result = run_inference(data_dir, args.runinference_subset)
    result["peak_rss_mb"] = _peak_rss_mb()
    print(json.dumps(result))
    return 0

  print(f"Building {args.examples} examples in {data_dir} ...", flush=True)
  started = time.perf_counter()
  if numeric:
    build(data_dir, args.examples, args.shards, args.features, args.hidden,
          args.classes)
  if args.several:
    if args.case != "numeric":
      parser.error("--several: the numeric case only")
    build_several(data_dir, args.features, args.hidden, args.classes)
  if args.checkpoint_rules:
    if args.case != "numeric":
      parser.error("--checkpoint-rules: the numeric case only")
    build_checkpoints(data_dir)
  if args.case == "serialized":
    cases.build_serialized(data_dir, args.features)
  elif args.case == "text":
    cases.build_text(data_dir, args.examples, args.shards)
  elif args.case == "image":
    cases.build_image(data_dir, args.examples, args.shards)
  print(f"  ready in {time.perf_counter() - started:.0f} s", flush=True)
  common = [f"--case={args.case}", f"--examples={args.examples}",
            f"--shards={args.shards}", f"--features={args.features}",
            f"--hidden={args.hidden}", f"--classes={args.classes}",
            f"--batch-size={args.batch_size}",
            f"--workers={args.workers}", f"--dir={args.dir}",
            f"--runinference-subset={args.runinference_subset}",
            f"--flag-quantile={args.flag_quantile}"]
  modes = args.modes.split(",")
  if args.label_issues:
    modes.append(f"a-{args.label_issues}")
    common.append(f"--label-issues={args.label_issues}")
  if args.several:
    modes += list(SEVERAL_MODES)
  if args.checkpoint_rules:
    modes += list(CHECKPOINT_MODES)
  if args.nightly:
    if "a" not in modes or args.case != "numeric":
      parser.error("--nightly: the numeric case, with (a) among --modes")
    modes.insert(modes.index("a") + 1, NIGHTLY)
  if args.baseline_code:
    modes += [m + BASELINE for m in modes if m.split("-")[0] == "a"]
    common.append(f"--baseline-code={os.path.abspath(args.baseline_code)}")
  runs = {mode: [] for mode in modes}
  for repeat in range(args.repeat):
    for mode in modes:  # Interleaved, so drifts of a noisy machine are shared.
      print(f"Running ({mode}) {repeat + 1}/{args.repeat} ...", flush=True)
      r = _child(common + [f"--mode={mode}"])
      runs[mode].append(r)
      busy = (f", {r['cores_busy']:.2f} cores busy" if "cores_busy" in r
              else "")
      print(f"  ({mode}) {r['examples']} examples in {r['seconds']:.1f} s:"
            f" {r['examples'] / r['seconds']:,.0f} examples/s, peak RSS"
            f" {r['peak_rss_mb']:,.0f} MB{busy}", flush=True)
  results = {}
  for mode, done in runs.items():
    median = sorted(done, key=lambda r: r["seconds"])[len(done) // 2]
    peaks = sorted(r["peak_rss_mb"] for r in done)
    results[mode] = dict(median, runs_seconds=[r["seconds"] for r in done],
                         median_peak_rss_mb=peaks[len(peaks) // 2],
                         peak_rss_mb=max(r["peak_rss_mb"] for r in done),
                         examples_per_s=median["examples"] / median["seconds"])
  report = {"config": vars(args), "results": results}
  for other, agreement, what in (("b", "agreement", "a/b"),
                                 ("d", "agreement_a_d",
                                  "a/d (serialized-example model / decode"
                                  " path)")):
    if "a" in results and other in results:
      report[f"a_over_{other}"] = (results["a"]["examples_per_s"] /
                                   results[other]["examples_per_s"])
      report[agreement] = _compare(os.path.join(out_root, "a"),
                                   os.path.join(out_root, other))
      print(f"{what} = {report[f'a_over_{other}']:.2f}; agreement:"
            f" {report[agreement]}")
  if "a" in results and "c" in results:
    report["a_over_c"] = (results["a"]["examples_per_s"] /
                          results["c"]["examples_per_s"])
    print(f"a/c = {report['a_over_c']:.1f}")
  label_mode = f"a-{args.label_issues}"
  if "a" in results and label_mode in results:
    report["label_issues_time_ratio"] = (results[label_mode]["seconds"] /
                                         results["a"]["seconds"])
    print("label issues on / off time ="
          f" {report['label_issues_time_ratio']:.2f}")
  for mode in [m for m in (*SEVERAL_MODES, *CHECKPOINT_MODES, NIGHTLY)
               if m in results and "a" in results]:
    report[f"{mode}_over_a"] = {
        "median_time": results[mode]["seconds"] / results["a"]["seconds"],
        "median_peak_rss": (results[mode]["median_peak_rss_mb"] /
                            results["a"]["median_peak_rss_mb"])}
    print(f"({mode}) / (a): median time"
          f" {report[f'{mode}_over_a']['median_time']:.2f}, median peak"
          f" memory {report[f'{mode}_over_a']['median_peak_rss']:.2f}")
  for mode in [m for m in results if m + BASELINE in results]:
    new, old = results[mode], results[mode + BASELINE]
    report[f"{mode}_over_baseline"] = {
        "median_time": new["seconds"] / old["seconds"],
        "median_peak_rss": (new["median_peak_rss_mb"] /
                            old["median_peak_rss_mb"])}
    print(f"({mode}) this checkout / baseline: median time"
          f" {new['seconds'] / old['seconds']:.3f}, median peak memory"
          f" {new['median_peak_rss_mb'] / old['median_peak_rss_mb']:.3f}")
  print(json.dumps(report))
  if args.json:
    with open(args.json, "w") as f:
      json.dump(report, f, indent=2)
  return 0


if __name__ == "__main__":
  sys.exit(main())
