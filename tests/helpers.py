"""Helpers shared by the tests (fixtures are in conftest.py, which uses these).

Test files import from here, never from one another or from conftest.py.
"""

import json
import os
import re
import subprocess
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import yaml

NUM_EXAMPLES = 3000
NUM_FEATURES = 16
NUM_CLASSES = 5


def two_heads_model(seed: int, width: int, heads: Sequence[str]):
  """A Keras model on `x` with a softmax head and a regression head (named
  by `heads`) over one hidden layer of `width` units."""
  import keras  # pylint: disable=g-import-not-at-top

  keras.utils.set_random_seed(seed)
  inputs = keras.Input((NUM_FEATURES,), name="x")
  hidden = keras.layers.Dense(width, activation="relu")(inputs)
  classes, value = heads
  return keras.Model(inputs, {
      classes: keras.layers.Dense(NUM_CLASSES, activation="softmax")(hidden),
      value: keras.layers.Dense(1)(hidden),
  })
GCS_BUCKET = "lossaudit-test"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_columns(n=NUM_EXAMPLES, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, NUM_FEATURES)).astype(np.float32)
  y = rng.integers(0, NUM_CLASSES, n).astype(np.int64)
  return {
      "id": np.array([f"ex-{i:05d}" for i in range(n)]),
      "x": x,
      "label": y,
      "group": np.array(["abc"[i % 3] for i in range(n)]),
      "target": x[:, :2].sum(axis=1, keepdims=True).astype(np.float32),
  }


def build_classifier(activation="softmax"):
  import keras

  keras.utils.set_random_seed(1)
  inputs = keras.Input((NUM_FEATURES,), name="x")
  hidden = keras.layers.Dense(16, activation="relu")(inputs)
  outputs = keras.layers.Dense(NUM_CLASSES, activation=activation,
                               name="probs")(hidden)
  return keras.Model(inputs, outputs)


def base_config(pattern, model_path, output_dir, **sections):
  config = {
      "input": {"pattern": str(pattern), "format": "tfrecord",
                "id_column": "id", "label_column": "label"},
      "model": {"path": str(model_path)},
      "loss": {"name": "sparse_categorical_crossentropy"},
      "batch_size": 256,
      "stats": {"epsilon": 0.001},
      "flag": {"loss_quantile": 0.95},
      "output": {"dir": str(output_dir)},
  }
  # Keys that have no effect beside a custom or per-output loss are refused:
  # those losses get no default name, per-output ones no label column.
  loss = sections.get("loss") or {}
  if "custom" in loss or "outputs" in loss:
    del config["loss"]["name"]
  if "outputs" in loss:
    del config["input"]["label_column"]
  for key, value in sections.items():
    if isinstance(value, dict):
      config.setdefault(key, {}).update(value)
    else:
      config[key] = value
  return config


def run_audit(config: dict, *flags: str, exit_code: int = 0,
              path: Optional[str] = None) -> Optional[dict]:
  """Runs `lossaudit run` in this process, as from the command line.

  Args:
    config: the config; written as YAML to `path` (default: beside
      `output.dir`, as `<output.dir>.yaml`).
    flags: more arguments (`--set`, Beam options).
    exit_code: the exit code the run must end with (2: a refused config,
      its one line on stderr).

  Returns:
    The run's summary.json; None when it exits with another code than 0.
  """
  from lossaudit.pipelines import audit  # pylint: disable=g-import-not-at-top

  out = str(config["output"]["dir"])
  path = str(path or f"{out.rstrip('/')}.yaml")
  with open(path, "w", encoding="utf-8") as f:
    f.write(yaml.safe_dump(config))
  code = audit.main(["--config", path, *flags])
  assert code == exit_code, f"lossaudit run exited {code}, not {exit_code}"
  if code:
    return None
  with open(os.path.join(out, "summary.json"), encoding="utf-8") as f:
    return json.load(f)


def written_config(summary: dict):
  """The `AuditConfig` a run was given: the file `run_audit` wrote beside
  its `output.dir` (`summary.json`'s `config` is resolved, every key set)."""
  from lossaudit.config import AuditConfig  # pylint: disable=g-import-not-at-top

  with open(summary["config"]["output"]["dir"].rstrip("/") + ".yaml",
            encoding="utf-8") as f:
    return AuditConfig.from_dict(yaml.safe_load(f))


def predictions_config(pattern, output_dir, fmt="parquet", **sections):
  """A config auditing the probabilities column `p` (no model), flagging
  losses over 1 (p(given label) < 0.37), with `sections` merged in."""
  config = base_config(pattern, "", output_dir, input={"format": fmt},
                       flag={"loss_quantile": None, "loss_threshold": 1.0})
  config["model"] = {"predictions_column": "p"}
  for key, value in sections.items():
    config.setdefault(key, {}).update(value)
  return config


def write_predictions(path, ids, labels, probs) -> None:
  """A Parquet file of `id`, `label` and `p`: the `(N, K)` rows of `probs`
  as a fixed-size list column."""
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top

  probs = np.asarray(probs, np.float32)
  pq.write_table(pa.table({
      "id": ids, "label": labels,
      "p": pa.FixedSizeListArray.from_arrays(pa.array(probs.reshape(-1)),
                                             probs.shape[1]),
  }), path)


def upload(local: str, remote: str) -> None:
  """Copies a file or a directory tree, bytes as they are (no re-gzip)."""
  from apache_beam.io.filesystem import CompressionTypes
  from apache_beam.io.filesystems import FileSystems

  pairs = [(local, remote)] if os.path.isfile(local) else [
      (os.path.join(root, name),
       remote + "/" + os.path.relpath(os.path.join(root, name), local))
      for root, _, files in os.walk(local) for name in files]
  for path, target in pairs:
    with open(path, "rb") as src, FileSystems.create(
        target, compression_type=CompressionTypes.UNCOMPRESSED) as dst:
      dst.write(src.read())


def classifier_spec(model_path, output=None, weight_column=None, **term):
  """A `ScoringSpec` for the conftest classifier (sparse labels, K classes);
  `term` overrides fields of its one `LossTerm`."""
  from lossaudit.spec import Feature, LossTerm, ScoringSpec

  fields = dict(output=output or "probs", name="out", label_column="label",
                loss_name="sparse_categorical_crossentropy", label_shape=(),
                label_dtype="int64", signals="sparse", num_classes=NUM_CLASSES)
  fields.update(term)
  return ScoringSpec(
      model_path=model_path, signature="serving_default",
      features=(Feature("x", "x", (NUM_FEATURES,), "float32"),),
      terms=(LossTerm(**fields),), id_column="id",
      weight_column=weight_column)


def first_rows(columns, n=100):
  """The first `n` rows of `columns` (id, x, label) as one RecordBatch."""
  from lossaudit import datasets

  return datasets.to_arrow({k: columns[k][:n] for k in ("id", "x", "label")
                            }).to_batches()[0]


def confident_pieces(probs, given, k, batches=3):
  """Confident learning's mergeable pieces, computed batch by batch as the
  pipeline does: `(thresholds (K,), raw joint (CellCounts), label counts
  (K,))`."""
  from lossaudit import confident  # pylint: disable=g-import-not-at-top

  parts = np.array_split(np.arange(len(given)), batches)
  sums, counts = np.zeros(k), np.zeros(k, dtype=np.int64)
  for rows in parts:
    s, c = confident.self_confidence_sums(probs[rows], given[rows], k)
    sums, counts = sums + s, counts + c
  thresholds = confident.confident_thresholds(sums, counts)
  raw = confident.CellCounts.empty(k)
  for rows in parts:
    guess, ok = confident.confident_guess(probs[rows], thresholds)
    raw = raw.merge(confident.joint_counts(given[rows], guess, ok, k))
  return thresholds, raw, counts


def noisy_probs(n, k, noise, seed):
  """Probabilities of a decent model and labels with asymmetric noise."""
  rng = np.random.default_rng(seed)
  truth = rng.integers(0, k, n)
  logits = rng.normal(size=(n, k))
  logits[np.arange(n), truth] += 4.0
  probs = np.exp(logits)
  probs = (probs / probs.sum(axis=1, keepdims=True)).astype(np.float32)
  given = truth.copy()
  flip = rng.random(n) < noise * (1 + truth / k)  # Class-dependent rates.
  given[flip] = (truth[flip] + 1 + (truth[flip] % 2)) % k  # Asymmetric.
  return probs, given, truth


class FakeClock:
  """A clock for code that takes `clock: Callable[[], float]`: it stands
  still until the test moves it on."""

  def __init__(self, now: float = 1000.0):
    self.now = now

  def __call__(self) -> float:
    return self.now

  def advance(self, seconds: float) -> None:
    self.now += seconds


# The custom loss `tests.custom_losses:blocking_nll` prints this and waits
# for a line on stdin at the batch named by LOSSAUDIT_TEST_BLOCK_AT.
BLOCKED = "lossaudit-test: blocked"
# `lossaudit run` in a child process. Beam looks for Google credentials for
# ~25 s before it settles for anonymous access; the emulator needs none (as
# in conftest's `gcs`).
RUN_AUDIT = """
import os, sys
if os.environ.get("STORAGE_EMULATOR_HOST"):
  from apache_beam.internal.gcp import auth
  auth._Credentials._credentials_init = True
from lossaudit.pipelines import audit
sys.exit(audit.main(sys.argv[1:]))
"""


def audit_env(**extra: str) -> dict:
  """The environment of a child run: this checkout, quiet TensorFlow."""
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
  env.pop("LOSSAUDIT_TEST_BLOCK_AT", None)
  env.update(extra)
  return env


def start_blocked_audit(config_path: str, block_at: int = 2,
                        **env: str) -> subprocess.Popen:
  """Starts `lossaudit run` on a config whose loss is `blocking_nll`;
  returns once the run is blocked at batch `block_at`.

  Waits on the run's own words, not on a clock. `env` adds environment
  variables. The process's stdin and stderr are pipes: write a line to
  stdin to let it go on (then read stderr to its end), or kill it.
  """
  process = subprocess.Popen(
      [sys.executable, "-c", RUN_AUDIT, "--config", config_path], cwd=REPO,
      env=audit_env(LOSSAUDIT_TEST_BLOCK_AT=str(block_at), **env),
      stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
      stderr=subprocess.PIPE, text=True)
  seen = []
  for line in process.stderr:
    if BLOCKED in line:
      return process
    seen.append(line)
  process.wait()
  raise AssertionError(f"the run ended (exit {process.returncode}) before"
                       f" it blocked: {''.join(seen)[-2000:]}")


def check_combine_fn(fn: Any, inputs: Sequence[Any], expected_output: Any,
                     check: Optional[Callable[[Any, Any], None]] = None
                     ) -> None:
  """Runs a CombineFn every way a runner may and checks each output.

  As TFDV's combiner tests do, the inputs go through
  `create_accumulator` / `add_input` into one accumulator, and also split
  over two and over three accumulators; each accumulator is compacted and
  sent through the accumulator coder (as between workers), then they are
  merged, with an empty accumulator among them, in two orders and from an
  iterator (Beam may pass one); the merged one is compacted, sent through
  the coder again and extracted. Accumulators merged into the first must
  come out of `merge_accumulators` unchanged. Every way must give
  `expected_output`, which the caller computes independently of `fn` (numpy,
  a formula, sorting).

  Args:
    fn: a `beam.CombineFn`, or a callable that Beam wraps into one
      (`beam.CombineGlobally(callable)`).
    inputs: the elements to combine (may be empty).
    expected_output: what `extract_output` must give.
    check: `check(actual, expected_output)` raises AssertionError when they
      disagree; default `actual == expected_output`.
  """
  import apache_beam as beam

  fn = beam.CombineFn.maybe_from_callable(fn)
  coder = fn.get_accumulator_coder()

  def ship(accumulator):
    return coder.decode(coder.encode(fn.compact(accumulator)))

  def accumulate(part):
    accumulator = fn.create_accumulator()
    for element in part:
      accumulator = fn.add_input(accumulator, element)
    return ship(accumulator)

  def merge(accumulators):
    rest = [coder.encode(a) for a in accumulators[1:]]
    merged = fn.merge_accumulators(iter(accumulators))
    assert [coder.encode(a) for a in accumulators[1:]] == rest, (
        "merge_accumulators changed an accumulator other than the first")
    return ship(merged)

  inputs = list(inputs)
  half = len(inputs) // 2
  ways = {
      "one accumulator": lambda: accumulate(inputs),
      "two halves and an empty one": lambda: merge([
          accumulate(inputs[:half]), accumulate([]),
          accumulate(inputs[half:])]),
      "an empty one first, then three interleaved": lambda: merge([
          accumulate([])] + [accumulate(inputs[i::3]) for i in range(3)]),
      "three interleaved, reversed": lambda: merge([
          accumulate(inputs[i::3]) for i in (2, 1, 0)]),
  }
  fn.setup()
  try:
    for way, combine in ways.items():
      try:
        actual = fn.extract_output(combine())
        if check is None:
          assert actual == expected_output, f"{actual!r} != {expected_output!r}"
        else:
          check(actual, expected_output)
      except AssertionError as e:
        raise AssertionError(f"{type(fn).__name__}, {way}: {e}") from e
  finally:
    fn.teardown()


def staged_pipeline(job: dict):
  """The pipeline proto a Dataflow job JSON (a template, or the Flex
  launcher's `job_object`) runs: staged beside the job's packages."""
  from apache_beam.io.filesystems import FileSystems  # pylint: disable=g-import-not-at-top
  from apache_beam.portability.api import beam_runner_api_pb2  # pylint: disable=g-import-not-at-top

  staged = job["environment"]["workerPools"][0]["packages"][0]["location"]
  path = ("gs://" + staged.split("storage.googleapis.com/", 1)[1]).rsplit(
      "/", 1)[0] + "/pipeline.pb"
  with FileSystems.open(path) as f:
    return beam_runner_api_pb2.Pipeline.FromString(f.read())


def report_data(page: str) -> Dict[str, Any]:
  """The JSON document `report.html`'s charts and flagged rows are drawn
  from (`#report-data`)."""
  found = re.search(r'<script type="application/json" id="report-data">'
                    r"(.*?)</script>", page, re.S)
  assert found, "report.html has no #report-data"
  return json.loads(found.group(1))


def report_rows(page: str) -> List[Dict[str, Any]]:
  """The flagged rows `report.html` lists, as dicts, in its order."""
  rows = report_data(page)["rows"]
  return [dict(zip(rows["columns"], values)) for values in rows["values"]]


def small_summary() -> Dict[str, Any]:
  """A small `summary.json` document: 3 losses, one flagged."""
  from lossaudit.flag_counts import FlagCounts  # pylint: disable=g-import-not-at-top
  from lossaudit.rules import Thresholds  # pylint: disable=g-import-not-at-top
  from lossaudit.summary import RunContext, RunStatistics, build_summary  # pylint: disable=g-import-not-at-top

  loss_stats = {"count": 3, "nan_count": 0, "mean": 1.0, "std": 0.5,
                "min": 0.2, "max": 2.0, "quantiles": {"0.5": 0.9},
                "epsilon": 0.01, "median": 0.9, "mad": 0.4}
  return build_summary(
      RunStatistics(loss=loss_stats,
                    thresholds=Thresholds.of(loss_quantile=1.5),
                    flag_counts=FlagCounts(1, {"loss_quantile": 1})),
      RunContext(config={"batch_size": 4}, run={
          "runner": "DirectRunner", "run_id": "r1", "start_time": 0.0}),
      seconds=1.0).document
