"""Loading a saved model (.keras file or SavedModel directory) for scoring.

Keras 3 cannot `load_model` a SavedModel directory, so SavedModels are loaded
with `tf.saved_model.load` and called through their serving signature.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Dict, Optional, Tuple

from lossaudit.config import ConfigError


@dataclasses.dataclass(frozen=True)
class TensorInfo:
  """Name, per-example shape (no batch axis) and dtype name of a tensor."""

  name: str
  shape: Tuple[Optional[int], ...]
  dtype: str


class AuditModel:
  """A model called on a dict of batched input tensors, giving one output.

  Attributes:
    inputs: the model's inputs, in the model's order.
    output: the scored output.
  """

  def __init__(self, path: str, signature: str = "serving_default",
               output: Optional[str] = None):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    self.path = path
    if os.path.isdir(path):
      if not tf.saved_model.contains_saved_model(path):
        raise ConfigError(
            f"model.path: expected a .keras file or a SavedModel directory."
            f" Received: {path!r} (a directory with no saved_model.pb)")
      self._load_saved_model(path, signature, output)
    elif os.path.isfile(path):
      self._load_keras(path, output)
    else:
      raise ConfigError(
          f"model.path: expected a .keras file or a SavedModel directory."
          f" Received: {path!r} (no such file or directory)")

  def _load_keras(self, path: str, output: Optional[str]) -> None:
    import keras  # pylint: disable=g-import-not-at-top

    try:
      model = keras.models.load_model(path, compile=False)
    except Exception as e:  # pylint: disable=broad-except
      raise ConfigError(
          f"model.path: expected a Keras model file. Received: {path!r}"
          f" ({type(e).__name__}: {_first_line(e)})") from None
    self._keras_model = model
    self.inputs = tuple(
        TensorInfo(t.name, tuple(t.shape[1:]), _dtype_name(t.dtype))
        for t in model.inputs)
    names = list(getattr(model, "output_names", None) or
                 [t.name for t in model.outputs])
    if output is None and len(model.outputs) != 1:
      raise ConfigError(
          f"model.output: the model has {len(model.outputs)} outputs"
          f" {names}; expected the name of the one to score. Received: None")
    index = 0 if output is None else _index_of(names, output)
    self._output_index = index if len(model.outputs) > 1 else None
    tensor = model.outputs[index]
    self.output = TensorInfo(names[index], tuple(tensor.shape[1:]),
                             _dtype_name(tensor.dtype))

  def _load_saved_model(self, path: str, signature: str,
                        output: Optional[str]) -> None:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    try:
      loaded = tf.saved_model.load(path)
    except Exception as e:  # pylint: disable=broad-except
      raise ConfigError(
          f"model.path: expected a loadable SavedModel. Received: {path!r}"
          f" ({type(e).__name__}: {_first_line(e)})") from None
    if signature not in loaded.signatures:
      raise ConfigError(
          f"model.signature: expected one of {sorted(loaded.signatures)}."
          f" Received: {signature!r}")
    self._saved_model = loaded  # Keeps the variables alive.
    self._signature = loaded.signatures[signature]
    specs = self._signature.structured_input_signature[1]
    self.inputs = tuple(
        TensorInfo(name, tuple(spec.shape[1:]), spec.dtype.name)
        for name, spec in sorted(specs.items()))
    outputs = self._signature.structured_outputs
    names = sorted(outputs)
    if output is None and len(names) != 1:
      raise ConfigError(
          f"model.output: the signature has outputs {names}; expected the"
          " name of the one to score. Received: None")
    self._output_key = names[0] if output is None else names[_index_of(
        names, output)]
    spec = outputs[self._output_key]
    self.output = TensorInfo(self._output_key, tuple(spec.shape[1:]),
                             spec.dtype.name)

  def __call__(self, features: Dict[str, "tf.Tensor"]) -> "tf.Tensor":
    """Runs the model on `{input name: (N, ...) tensor}` → `(N, ...)` output."""
    if hasattr(self, "_signature"):
      return self._signature(**features)[self._output_key]
    if len(self.inputs) == 1:
      result = self._keras_model(features[self.inputs[0].name], training=False)
    else:
      result = self._keras_model(features, training=False)
    if self._output_index is not None:
      result = result[self._output_index]
    return result


def _index_of(names, wanted: str) -> int:
  if wanted not in names:
    raise ConfigError(
        f"model.output: expected one of {list(names)}. Received: {wanted!r}")
  return list(names).index(wanted)


def _dtype_name(dtype) -> str:
  return getattr(dtype, "name", str(dtype))


def _first_line(error: Exception) -> str:
  text = str(error).strip()
  return text.splitlines()[0] if text else ""
