"""Loading a saved model (.keras file or SavedModel directory) for scoring,
and choosing the device it runs on.

Keras 3 cannot `load_model` a SavedModel directory, so SavedModels are loaded
with `tf.saved_model.load` and called through their serving signature.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import shutil
import tempfile
from typing import Dict, Optional, Sequence, Tuple

import keras
import tensorflow as tf
from apache_beam.utils import shared

from lossaudit.errors import ConfigError, explained


@dataclasses.dataclass(frozen=True)
class TensorInfo:
  """Name, per-example shape (no batch axis) and dtype name of a tensor,
  and whether it is a `tf.RaggedTensor`."""

  name: str
  shape: Tuple[Optional[int], ...]
  dtype: str
  ragged: bool = False


_CACHE_DIR = os.path.join(tempfile.gettempdir(), "lossaudit-models")


def local_copy(path: str, version: Optional[str] = None) -> str:
  """A local path for a model on any Beam filesystem (gs://, ...).

  A remote `.keras` file or SavedModel directory is copied once per machine
  into a cache keyed by its path, size and modification time
  (`remote_version`); a local path is returned as it is. Missing remote
  paths are returned unchanged (and then reported as missing).

  Args:
    version: the `remote_version` the run was planned with: a model
      overwritten since (or while it is copied) is refused, so that every
      worker of a job scores with the one model.

  Raises:
    ConfigError: the model is not of `version`.
  """
  return _local_copy(path, version)[0]


def remote_version(path: str) -> Optional[str]:
  """What names a remote model's files as they are now (a hash of their
  paths, sizes and modification times); None for a local or missing one."""
  return _local_copy(path, None, copy=False)[1]


def _changed(path: str, key: str = "model.path") -> ConfigError:
  return ConfigError(
      f"{key}: expected the model as it was when the run was planned;"
      " its files changed since (overwritten while the job runs?), and a"
      f" job scores with one model. Received: {path!r}")


def _remote_files(root: str):
  from apache_beam.io.filesystems import FileSystems  # pylint: disable=g-import-not-at-top

  matches = FileSystems.match([root, root + "/**"])
  files = [m for result in matches for m in result.metadata_list]
  stamp = hashlib.sha256(repr(sorted(
      (m.path, m.size_in_bytes, m.last_updated_in_seconds)
      for m in files)).encode()).hexdigest()[:16]
  return files, stamp


def _local_copy(path: str, version: Optional[str], copy: bool = True,
                key: str = "model.path") -> Tuple[str, Optional[str]]:
  """`(local path, remote_version)`; see `local_copy` (its errors name
  `key`)."""
  if "://" not in path:
    return path, None
  from apache_beam.io.filesystem import CompressionTypes  # pylint: disable=g-import-not-at-top
  from apache_beam.io.filesystems import FileSystems  # pylint: disable=g-import-not-at-top

  UNCOMPRESSED = CompressionTypes.UNCOMPRESSED  # pylint: disable=invalid-name

  root = path.rstrip("/")
  files, stamp = _remote_files(root)
  if not files:
    return path, None
  if version is not None and stamp != version:
    raise _changed(path, key)
  single = len(files) == 1 and files[0].path.rstrip("/") == root
  name = os.path.basename(root) if single else "model"
  target = os.path.join(_CACHE_DIR, stamp, name)
  if not copy or os.path.exists(target):
    return target, stamp
  staging = tempfile.mkdtemp(dir=os.makedirs(_CACHE_DIR, exist_ok=True) or
                             _CACHE_DIR)
  for meta in files:
    relative = os.path.basename(root) if single else meta.path[len(root) +
                                                               1:]
    if not relative or meta.path.endswith("/"):
      continue
    local = os.path.join(staging, name if single else os.path.join(
        name, relative))
    os.makedirs(os.path.dirname(local), exist_ok=True)
    with FileSystems.open(meta.path, compression_type=UNCOMPRESSED) as src, \
        open(local, "wb") as dst:
      shutil.copyfileobj(src, dst, 16 << 20)
  if _remote_files(root)[1] != stamp:  # Overwritten while it was copied.
    shutil.rmtree(staging, ignore_errors=True)
    raise _changed(path, key)
  os.makedirs(os.path.dirname(target), exist_ok=True)
  try:
    os.rename(os.path.join(staging, name), target)
  except OSError:  # Another process of this worker copied it first.
    pass
  shutil.rmtree(staging, ignore_errors=True)
  return target, stamp


class AuditModel:
  """A model called on a dict of batched input tensors.

  Its load errors name `key`: `model.path`, or `model.dynamics_path` for
  the checkpoints of the model trained on every row.

  Attributes:
    inputs: the model's inputs, in the model's order.
    outputs: the model's outputs, by name (Keras output names, or the
      serving signature's output keys).
  """

  def __init__(self, path: str, signature: str = "serving_default",
               version: Optional[str] = None, key: str = "model.path"):
    self.path = path
    self._key = key
    path, self.version = _local_copy(path, version, key=key)
    if os.path.isdir(path):
      if not tf.saved_model.contains_saved_model(path):
        raise ConfigError(
            f"{key}: expected a .keras file or a SavedModel directory."
            f" Received: {path!r} (a directory with no saved_model.pb)")
      self._load_saved_model(path, signature)
    elif os.path.isfile(path):
      self._load_keras(path)
    else:
      raise ConfigError(
          f"{key}: expected a .keras file or a SavedModel directory."
          f" Received: {path!r} (no such file or directory)")

  def _load_keras(self, path: str) -> None:
    try:
      model = keras.models.load_model(path, compile=False)
    except Exception as e:  # pylint: disable=broad-except
      raise ConfigError(
          f"{self._key}: expected a Keras model file. Received: {path!r}"
          f" ({explained(type(e).__name__, e)})") from None
    self._keras_model = model
    self.inputs = tuple(
        TensorInfo(t.name, tuple(t.shape[1:]), _dtype_name(t.dtype))
        for t in model.inputs)
    if isinstance(model, keras.Sequential):
      # A loaded Sequential has `outputs` but no `output` or `output_names`
      # until it is called: its one output is its last layer's.
      named = [(model.layers[-1].name, model.outputs[0])]
    elif isinstance(model.output, dict):
      named = list(model.output.items())
    else:
      named = list(zip(model.output_names, model.outputs))
    self.outputs = {
        name: TensorInfo(name, tuple(t.shape[1:]), _dtype_name(t.dtype))
        for name, t in named
    }

  def _load_saved_model(self, path: str, signature: str) -> None:
    try:
      loaded = tf.saved_model.load(path)
    except Exception as e:  # pylint: disable=broad-except
      raise ConfigError(
          f"{self._key}: expected a loadable SavedModel. Received: {path!r}"
          f" ({explained(type(e).__name__, e)})") from None
    if signature not in loaded.signatures:
      raise ConfigError(
          f"model.signature: expected one of {sorted(loaded.signatures)}."
          f" Received: {signature!r}")
    self._saved_model = loaded  # Keeps the variables alive.
    self._signature = loaded.signatures[signature]
    specs = self._signature.structured_input_signature[1]
    ragged = _ragged_function(loaded, self._signature)
    if ragged is not None:
      # The signature takes each ragged input as flat tensors (`x`, `x_1`);
      # the function it wraps takes the tf.RaggedTensor itself.
      self._signature, specs = ragged
    self.inputs = tuple(
        TensorInfo(name, tuple(spec.shape[1:]), spec.dtype.name,
                   isinstance(spec, tf.RaggedTensorSpec))
        for name, spec in sorted(specs.items()))
    self.outputs = {
        name: TensorInfo(name, tuple(spec.shape[1:]), spec.dtype.name)
        for name, spec in sorted(self._signature.structured_outputs.items())
    }

  def output(self, name: Optional[str], key: str = "model.output"
             ) -> TensorInfo:
    """The output called `name`; None picks the only one."""
    names = list(self.outputs)
    if name is None:
      if len(names) != 1:
        raise ConfigError(
            f"{key}: the model has outputs {names}; expected the name of the"
            " one to score. Received: None")
      return self.outputs[names[0]]
    if name not in self.outputs:
      raise ConfigError(f"{key}: expected one of {names}. Received: {name!r}")
    return self.outputs[name]

  def take_names(self, other: "AuditModel") -> None:
    """Answers to `other`'s input and output names, which it has in the
    same order, shapes and dtypes: a fold or checkpoint model built in the
    same Python process as the first gets other names from Keras
    (`dense_3`, `input_layer_2`), and only its structure must match."""
    own_inputs = {public.name: own.name
                  for public, own in zip(other.inputs, self.inputs)}
    own_outputs = {own: public
                   for own, public in zip(self.outputs, other.outputs)}
    self._names = (own_inputs, own_outputs)
    self.inputs = other.inputs
    self.outputs = dict(other.outputs)

  def __call__(self, features: Dict[str, tf.Tensor]
               ) -> Dict[str, tf.Tensor]:
    """Runs the model on `{input: (N, ...) tensor}` → `{output: (N, ...)}`."""
    own_inputs, own_outputs = getattr(self, "_names", ({}, {}))
    if own_inputs:
      features = {own_inputs.get(k, k): v for k, v in features.items()}
    if hasattr(self, "_signature"):
      result = self._signature(**features)
    elif len(self.inputs) == 1:
      name = self.inputs[0].name
      result = self._keras_model(features[own_inputs.get(name, name)],
                                 training=False)
    else:
      result = self._keras_model(features, training=False)
    if isinstance(result, dict):
      return {own_outputs.get(k, k): v for k, v in result.items()}
    if isinstance(result, (list, tuple)):
      return dict(zip(self.outputs, result))
    return {next(iter(self.outputs)): result}


def _ragged_function(loaded, signature):
  """The restored function that `signature` wraps, when it takes a
  tf.RaggedTensor, and its `{input: spec}`; else None.

  A SavedModel signature flattens a RaggedTensorSpec input into its values
  and row splits; the function it calls keeps the spec.
  """
  called = [op.get_attr("f").name for op in signature.graph.get_operations()
            if op.type in ("PartitionedCall", "StatefulPartitionedCall")]
  if len(called) != 1:
    return None
  for value in list(vars(loaded).values()):
    for function in getattr(value, "concrete_functions", None) or ():
      if function.name.decode() != called[0]:
        continue
      args, kwargs = function.structured_input_signature
      names = list(function.function_type.parameters)
      specs = dict(zip(names, args), **kwargs)
      outputs = function.structured_outputs
      if not (any(isinstance(s, tf.RaggedTensorSpec) for s in specs.values())
              and isinstance(outputs, dict) and
              set(outputs) == set(signature.structured_outputs)):
        return None
      return function, specs
  return None


def _dtype_name(dtype) -> str:
  return getattr(dtype, "name", str(dtype))


def select_device(device: str) -> str:
  """The TensorFlow device to score on, for `runtime.device`.

  `auto` takes the first GPU TensorFlow sees, else the CPU; `gpu` fails
  without one. GPU memory grows on demand rather than all at once, so
  several worker threads can share one GPU.

  Raises:
    RuntimeError: `gpu` was asked for and none is visible.
  """
  gpus = [] if device == "cpu" else tf.config.list_physical_devices("GPU")
  for gpu in gpus:
    try:
      tf.config.experimental.set_memory_growth(gpu, True)
    except RuntimeError:  # Already initialised in this process.
      pass
  if device == "gpu" and not gpus:
    raise RuntimeError("runtime.device: expected a visible GPU. Received:"
                       " none (tf.config.list_physical_devices('GPU') is"
                       " empty)")
  name = "/GPU:0" if gpus else "/CPU:0"
  logging.info("lossaudit scores on %s", name)
  return name


PREDICTIONS_OUTPUT = "predictions"


class PredictionsModel:
  """Predictions read from a column, in place of a model
  (`model.predictions_column`): its one output is its one input.

  Attributes:
    inputs: the column, `(K,)` float32.
    outputs: `predictions`, `(K,)` float32.
  """

  def __init__(self, column: str, width: int):
    self.path = None
    self.inputs = (TensorInfo(column, (width,), "float32"),)
    self.outputs = {PREDICTIONS_OUTPUT: TensorInfo(PREDICTIONS_OUTPUT,
                                                   (width,), "float32")}

  def output(self, name: Optional[str], key: str = "model.output"
             ) -> TensorInfo:
    if name not in (None, PREDICTIONS_OUTPUT):
      raise ConfigError(f"{key}: expected null or {PREDICTIONS_OUTPUT!r}"
                        f" with model.predictions_column. Received: {name!r}")
    return self.outputs[PREDICTIONS_OUTPUT]

  def __call__(self, features: Dict[str, tf.Tensor]
               ) -> Dict[str, tf.Tensor]:
    return {PREDICTIONS_OUTPUT: features[self.inputs[0].name]}


class _LoadedModels:
  """What `_LOADED` holds. `shared.Shared` keeps weak references: each
  model refers back to this, so whoever holds a model keeps them all."""

  def __init__(self, models: Tuple[Tuple[AuditModel, ...], ...]):
    self.models = models
    for model in (m for group in models for m in group):
      model.loaded_with = self


# The models loaded in this process: the pre-run check's are the workers'
# when they run in the launcher's process (the DirectRunner's default).
_LOADED = shared.Shared()


def model_version(path: str, pinned: Optional[str] = None) -> Tuple:
  """What says that the model at `path` changed: a local file's or
  directory's files' sizes and modification times; for a remote model, its
  local copy (named by the remote files' sizes and times; `pinned`: the
  `remote_version` it must have)."""
  path = local_copy(path, pinned)
  if not os.path.isdir(path):
    try:
      found = os.stat(path)
    except OSError:
      return (path,)
    return (path, found.st_size, found.st_mtime_ns)
  files = []
  for root, _, names in os.walk(path):
    for name in names:
      found = os.stat(os.path.join(root, name))
      files.append((os.path.relpath(os.path.join(root, name), path),
                    found.st_size, found.st_mtime_ns))
  return (path, *sorted(files))


def load_models(paths: Sequence[Sequence[str]], signature: str,
                device: str = "auto",
                pinned: Optional[Dict[str, str]] = None,
                dynamics_last: bool = False
                ) -> Tuple[Tuple[AuditModel, ...], ...]:
  """The models of a run, `[fold][checkpoint]`, each loaded once a process.

  Every model must have the first's inputs and outputs: each example is
  scored by one of them (folds) or by all (checkpoints) in one graph. The
  same paths, unchanged on disk (`model_version`), with the same signature
  and device give the models already loaded in this process (the pre-run
  check's, to the DirectRunner's workers).

  Args:
    paths: each fold's model paths, one a checkpoint.
    signature: the SavedModel signature.
    device: `runtime.device`: `cpu` places the models' variables on the
      CPU, any other value where TensorFlow places them (its first GPU, if
      it sees one, as `select_device` picks).
    pinned: the `remote_version` of each remote model path, as the run was
      planned with (`ScoringSpec.model_versions`).
    dynamics_last: whether the last group is `model.dynamics_path`'s
      checkpoints (its errors name that key).

  Raises:
    ConfigError: a model is missing or cannot be loaded (naming its path),
      its inputs or outputs differ from the first's, or a pinned model
      changed.
  """
  paths = tuple(tuple(group) for group in paths)
  on_cpu = device == "cpu"
  pinned = pinned or {}
  versions = tuple(model_version(p, pinned.get(p))
                   for group in paths for p in group)
  return _LOADED.acquire(
      lambda: _LoadedModels(_load_models(paths, signature, on_cpu, pinned,
                                         dynamics_last)),
      tag=repr((paths, versions, signature, on_cpu))).models


def _load_models(paths: Tuple[Tuple[str, ...], ...], signature: str,
                 on_cpu: bool, pinned: Dict[str, str],
                 dynamics_last: bool = False
                 ) -> Tuple[Tuple[AuditModel, ...], ...]:
  keys = ["model.path"] * len(paths)
  if dynamics_last:
    keys[-1] = DYNAMICS_KEY
  with tf.device("/CPU:0") if on_cpu else contextlib.nullcontext():
    loaded = tuple(tuple(AuditModel(path, signature, pinned.get(path), key)
                         for path in group)
                   for group, key in zip(paths, keys))
  first = loaded[0][0]
  for group, key in zip(loaded, keys):
    for model in group:
      if _by_name(model) == _by_name(first):
        continue  # Routed by name (a multi-output model's names matter).
      for what, mine, theirs in (("inputs", model.inputs, first.inputs),
                                 ("outputs", model.outputs, first.outputs)):
        if _structure(mine) != _structure(theirs):
          raise ConfigError(
              f"{key}: expected every fold and checkpoint model to have"
              f" the {what} of {first.path!r} (shapes and dtypes, in order):"
              f" {_shapes(theirs)}. Received: {model.path!r} with"
              f" {_shapes(mine)}")
      model.take_names(first)
  return loaded


# The key of the checkpoints of the model trained on every row.
DYNAMICS_KEY = "model.dynamics_path"



def _by_name(model: AuditModel) -> Tuple:
  """A model's inputs and outputs, by name."""
  return (sorted((t.name, t) for t in model.inputs),
          sorted(model.outputs.items()))


def _structure(infos) -> Tuple:
  """Shapes, dtypes and raggedness of tensors, in order, names aside."""
  infos = infos.values() if isinstance(infos, dict) else infos
  return tuple((t.shape, t.dtype, t.ragged) for t in infos)


def _shapes(infos) -> str:
  infos = infos.values() if isinstance(infos, dict) else infos
  return ", ".join(f"{t.name} {(None,) + tuple(t.shape)} {t.dtype}"
                   for t in infos)
