"""`input.label_vocabulary`, `input.pad_value`, `input.truncate` and
`model.serialized_examples_input`: their set-up errors, one line each."""

import os

import pytest

from lossaudit import planning
from lossaudit.config import InputConfig, ModelConfig
from lossaudit.errors import ConfigError
from lossaudit.model import TensorInfo
from lossaudit.spec import Feature, LossTerm


@pytest.mark.parametrize("value, message", [
    (["a", "b", "a"], "input.label_vocabulary: expected distinct class names;"
     " repeated: ['a']. Received: ['a', 'b', 'a']"),
    ([], "input.label_vocabulary: expected null, a non-empty list of distinct"
     " class names or the path of a file with one class name per line."
     " Received: []"),
    (["a", 3], "input.label_vocabulary: expected null, a non-empty list of"
     " distinct class names or the path of a file with one class name per"
     " line. Received: ['a', 3]"),
    ("s3://b/labels.txt", "input.label_vocabulary: expected a local path or"
     " gs:// URI. Received: 's3://b/labels.txt'"),
    (3, "input.label_vocabulary: expected null, a non-empty list of distinct"
     " class names or the path of a file with one class name per line."
     " Received: 3"),
])
def test_vocabulary_config_errors(value, message):
  with pytest.raises(ConfigError) as raised:
    InputConfig(pattern="x", label_vocabulary=value)
  assert str(raised.value) == message


@pytest.mark.parametrize("key, value, message", [
    ("pad_value", float("nan"), "input.pad_value: expected a number in"
     " [-inf, inf]. Received: nan"),
    ("pad_value", "0", "input.pad_value: expected a number or null."
     " Received: '0'"),
    ("truncate", "yes", "input.truncate: expected true or false. Received:"
     " 'yes'"),
])
def test_padding_config_errors(key, value, message):
  with pytest.raises(ConfigError) as raised:
    InputConfig(pattern="x", **{key: value})
  assert str(raised.value) == message


@pytest.mark.parametrize("value, message", [
    (1.5, "input.pad_value: expected an integer in [-2147483648, 2147483647]"
     " for model input 'tokens' (int32). Received: 1.5"),
    (1e20, "input.pad_value: expected an integer in [-2147483648,"
     " 2147483647] for model input 'tokens' (int32). Received: 1e+20"),
])
def test_an_integer_input_is_padded_with_an_integer_it_holds(value, message):
  features = [Feature("text", "text", (), "string"),
              Feature("tokens", "tokens", (None,), "int32")]
  with pytest.raises(ConfigError) as raised:
    planning._check_pad_value(value, features)  # pylint: disable=protected-access
  assert str(raised.value) == message
  planning._check_pad_value(-1.0, features)  # pylint: disable=protected-access
  planning._check_pad_value(0.5, features[:1])  # pylint: disable=protected-access


def test_serialized_examples_input_must_be_a_name():
  with pytest.raises(ConfigError) as raised:
    ModelConfig(path="m", serialized_examples_input="")
  assert str(raised.value) == (
      "model.serialized_examples_input: expected null or the name of a"
      " signature input. Received: ''")


def test_vocabulary_file_is_read_line_by_line(tmp_path):
  path = tmp_path / "labels.txt"
  path.write_bytes(b"\xef\xbb\xbfspam\r\nham\ncaf\xc3\xa9\n\n")
  assert planning.read_vocabulary(str(path)) == ("spam", "ham", "café")
  assert planning.read_vocabulary(["a", "b"]) == ["a", "b"]
  assert planning.read_vocabulary(None) is None


@pytest.mark.parametrize("content, message", [
    (b"", "input.label_vocabulary: expected one class name per line."
     " Received: '{path}' (an empty file)"),
    (b"a\n\nb\n", "input.label_vocabulary: expected one non-empty class name"
     " per line. Received: '{path}' (3 lines, a blank one among them)"),
    (b"a\nb\na\n", "input.label_vocabulary: expected distinct class names."
     " Received: '{path}', which repeats ['a']"),
    (b"\xff\xfe", "input.label_vocabulary: expected a UTF-8 text file with"
     " one class name per line. Received: '{path}' (not UTF-8)"),
])
def test_vocabulary_file_errors(tmp_path, content, message):
  path = tmp_path / "labels.txt"
  path.write_bytes(content)
  with pytest.raises(ConfigError) as raised:
    planning.read_vocabulary(str(path))
  assert str(raised.value) == message.format(path=path)


def test_missing_vocabulary_file(tmp_path):
  path = str(tmp_path / "nope.txt")
  with pytest.raises(ConfigError) as raised:
    planning.read_vocabulary(path)
  assert str(raised.value).startswith(
      f"input.label_vocabulary: expected a readable file with one class name"
      f" per line. Received: {path!r} (")


def test_a_vocabulary_that_is_no_regular_file_or_too_large(tmp_path,
                                                           monkeypatch):
  fifo = tmp_path / "labels.fifo"
  os.mkfifo(fifo)
  for path in (str(fifo), "/dev/zero", str(tmp_path)):
    with pytest.raises(ConfigError) as raised:
      planning.read_vocabulary(path)
    assert str(raised.value) == (
        "input.label_vocabulary: expected a regular file with one class name"
        f" per line. Received: {path!r} (not a regular file)")
  big = tmp_path / "big.txt"
  big.write_text("a\nb\nc\n")
  monkeypatch.setattr(planning, "VOCABULARY_BYTES", 5)
  with pytest.raises(ConfigError) as raised:
    planning.read_vocabulary(str(big))
  assert str(raised.value) == (
      "input.label_vocabulary: expected a file of at most 5 bytes of class"
      f" names. Received: {str(big)!r} (larger)")


def _term(num_classes):
  return LossTerm(output="probs", name="probs", label_column="label",
                  loss_name="sparse_categorical_crossentropy",
                  label_dtype="int64", signals="sparse",
                  num_classes=num_classes)


def test_vocabulary_must_name_every_class():
  planning.check_vocabulary(("a", "b", "c"), (_term(3),))
  with pytest.raises(ConfigError) as raised:
    planning.check_vocabulary(("a", "b"), (_term(3),))
  assert str(raised.value) == (
      "input.label_vocabulary: expected 3 class names, one per class of"
      " model output 'probs'. Received: 2")
  regression = LossTerm(output="y", name="y", label_column="t",
                        loss_name="mean_squared_error")
  with pytest.raises(ConfigError) as raised:
    planning.check_vocabulary(("a", "b"), (regression,))
  assert str(raised.value) == (
      "input.label_vocabulary: needs a classification loss with one class"
      " index per example (sparse or binary crossentropy). Received: 2 class"
      " names with loss ['mean_squared_error']")


class _Model:
  """What `serialized_examples_input` reads of a model: its inputs."""

  def __init__(self, *inputs):
    self.inputs = inputs


def _config(fmt="tfrecord", name=None):
  class Config:
    input = InputConfig(pattern="x", format=fmt)
    model = ModelConfig(path="m", serialized_examples_input=name)
  return Config


EXAMPLES = TensorInfo("examples", (), "string")


def test_serialized_examples_input_is_detected_with_tfrecord_only():
  assert planning.serialized_examples_input(_config(), _Model(EXAMPLES)) == (
      "examples")
  assert planning.serialized_examples_input(
      _config("parquet"), _Model(EXAMPLES)) is None
  text = TensorInfo("text", (), "string")
  assert planning.serialized_examples_input(_config(), _Model(text)) is None
  assert planning.serialized_examples_input(
      _config(), _Model(EXAMPLES, TensorInfo("x", (3,), "float32"))) is None


def test_serialized_examples_input_must_name_a_string_input():
  # With Parquet, the config refuses the key as it loads (test_config).
  model = _Model(EXAMPLES, TensorInfo("x", (3,), "float32"))
  with pytest.raises(ConfigError) as raised:
    planning.serialized_examples_input(_config("tfrecord", "x"), model)
  assert str(raised.value) == (
      "model.serialized_examples_input: expected one of the model's string"
      " inputs ['examples']. Received: 'x'")
