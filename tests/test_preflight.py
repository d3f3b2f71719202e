"""The two halves of the pre-run checks, each alone: planning (config and
model signature, no data) and the probe (the first records of the data)."""

import dataclasses

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lossaudit import planning, probe
from lossaudit.config import AuditConfig
from lossaudit.errors import ConfigError
from lossaudit.model import AuditModel, TensorInfo
from lossaudit.spec import Feature


def _model(inputs, outputs):
  """An AuditModel with these signatures and no weights: planning only
  reads `inputs` and `output()`."""
  model = AuditModel.__new__(AuditModel)
  model.inputs = tuple(TensorInfo(n, s, d) for n, s, d in inputs)
  model.outputs = {n: TensorInfo(n, s, d) for n, s, d in outputs}
  return model


CLASSIFIER = _model([("x", (4,), "float32")], [("probs", (3,), "float32")])


def _config(**sections):
  raw = {"input": {"pattern": "nowhere/*.parquet", "format": "parquet"},
         "model": {"path": "m.keras"}}
  for name, values in sections.items():
    raw[name] = {**raw.get(name, {}), **values}
  return AuditConfig.from_dict(raw)


def test_planning_needs_only_the_config_and_the_signature():
  config = _config(input={"weight_column": "w"},
                   flag={"label_issues": "confident_learning"})
  features = planning.model_features(config, CLASSIFIER)
  terms = planning.loss_terms(config, CLASSIFIER)
  spec = planning.assemble_spec(config, features, terms)
  assert spec.features == (
      Feature(model_input="x", column="x", shape=(4,), dtype="float32"),)
  (term,) = spec.terms
  assert (term.output, term.label_column, term.label_dtype) == (
      "probs", "label", "int64")
  assert (term.signals, term.num_classes, term.label_shape) == (
      "sparse", 3, ())
  assert spec.keep_probs and spec.weight_column == "w"
  assert planning.needed_columns(spec) == ("x", "label", "id", "w")

  from tensorflow_metadata.proto.v0 import schema_pb2

  schema = schema_pb2.Schema.FromString(planning.tf_schema(spec))
  assert {f.name: f.type for f in schema.feature} == {
      "x": schema_pb2.FLOAT, "label": schema_pb2.INT,
      "id": schema_pb2.BYTES, "w": schema_pb2.FLOAT}
  # The types found in the data win over the defaults.
  types = {"id": pa.int64()}
  schema = schema_pb2.Schema.FromString(planning.tf_schema(spec, types.get))
  assert schema.feature[2].type == schema_pb2.INT


def test_planning_errors():
  with pytest.raises(ConfigError, match="^model.output: expected one of"):
    planning.loss_terms(_config(model={"output": "nope"}), CLASSIFIER)
  regression = _config(loss={"name": "mean_squared_error"},
                       flag={"label_issues": "confident_learning"})
  terms = planning.loss_terms(regression, CLASSIFIER)
  with pytest.raises(ConfigError, match="^flag.label_issues: needs a"):
    planning.assemble_spec(regression, (), terms)


def _sample(**columns):
  return probe.Sample(pa.RecordBatch.from_pydict(columns), "data.parquet")


def test_probe_checks_the_plans_columns():
  config = _config()
  features = planning.model_features(config, CLASSIFIER)
  sample = _sample(id=["a", "b"], x=[[0.0] * 4] * 2, label=[0, 1])
  probe.check_columns(config, features, sample)
  with pytest.raises(ConfigError) as info:
    probe.check_columns(config, features, _sample(
        id=["a", "b"], label=[0, 1], pixels=[[0.0] * 4] * 2,
        pixels2=[[0.0] * 4] * 2))
  assert str(info.value) == (
      "input.feature_columns: expected a column for each model input (null"
      " reads the columns named as the inputs); no column is named 'x' in the"
      " first 2 records of data.parquet. Set input.feature_columns: {x:"
      " COLUMN}, COLUMN one of ['pixels', 'pixels2']")
  # A lone input Keras named (`input_layer_2`) reads the one candidate
  # column (not the id or the label); an input named by its user does not.
  lone = _sample(id=["a"], label=[0], pixels=[[0.0] * 4])
  assert probe.match_lone_input(config, features, lone) == tuple(features)
  unnamed = (features[0]._replace(model_input="input_layer_2",
                                  column="input_layer_2"),)
  (feature,) = probe.match_lone_input(config, unnamed, lone)
  assert feature == unnamed[0]._replace(column="pixels")
  probe.check_columns(config, (feature,), lone)
  named = _config(input={"feature_columns": ["x"]})
  assert probe.match_lone_input(named, unnamed, lone) == unnamed
  assert sample.value_type("x") == pa.float64()
  assert sample.value_type("nope") is None
  assert _sample(n=[None]).value_type("n") is None


def test_probe_gives_custom_labels_their_size_in_the_data():
  config = _config(loss={"custom": "tests.custom_losses:per_sample_nll"})
  (term,) = planning.loss_terms(config, CLASSIFIER)
  assert term.label_shape == (3,)  # The output's, until data is seen.
  scalar = _sample(label=[0, 1])
  assert probe.fit_custom_labels((term,), scalar)[0].label_shape == ()
  pairs = _sample(label=[[0, 1], [1, 0]])
  assert probe.fit_custom_labels((term,), pairs)[0].label_shape == (2,)
  missing = _sample(other=[1])
  assert probe.fit_custom_labels((term,), missing) == (term,)
  plain = dataclasses.replace(term, custom=None)
  assert probe.fit_custom_labels((plain,), pairs) == (plain,)


def test_probe_reads_the_first_records(tmp_path):
  config = _config()
  empty, full = tmp_path / "empty.parquet", tmp_path / "full.parquet"
  pq.write_table(pa.table({"label": pa.array([], pa.int64())}), empty)
  pq.write_table(pa.table({"label": list(range(100))}), full)
  sample = probe.read_sample(config, [str(empty), str(full)])
  assert sample.path == str(full)
  assert sample.num_rows == probe.PROBE_RECORDS
  assert probe.read_sample(config, [str(empty)]) is None
  bad = tmp_path / "bad.parquet"
  bad.write_bytes(b"not parquet")
  assert probe.read_sample(config, [str(bad), str(full)]).path == str(full)
  with pytest.raises(ConfigError, match="^input.pattern: expected parquet"
                     " files. None of the 1 matched files could be read"):
    probe.read_sample(config, [str(bad)])


def test_the_sample_reads_past_a_record_whose_data_fails_its_crc(tmp_path):
  from lossaudit.formats.tfrecord import first_records
  from lossaudit.tfrecord import masked_crc

  def framed(record, data_crc=None):
    length = len(record).to_bytes(8, "little")
    crc = masked_crc(record) if data_crc is None else data_crc
    return (length + masked_crc(length).to_bytes(4, "little") + record +
            crc.to_bytes(4, "little"))

  path = tmp_path / "first-bad.tfrecord"
  path.write_bytes(framed(b"one", data_crc=0) + framed(b"two") +
                   framed(b"three"))
  assert first_records(str(path), 64) == [b"two", b"three"]
  broken_length = bytearray(framed(b"one") + framed(b"two"))
  broken_length[0] ^= 0xFF
  path.write_bytes(bytes(broken_length))
  with pytest.raises(ValueError, match=r"^unreadable from record 0 \(byte 0\):"
                     r" corrupted length \(bad CRC\)$"):
    first_records(str(path), 64)
