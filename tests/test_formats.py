"""`lossaudit.formats`: each input format as an object, and no other module
asking which format it has."""

import ast
import os
import subprocess
import sys

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from tensorflow_metadata.proto.v0 import schema_pb2

from lossaudit import config, datasets, dead_letters, formats
from lossaudit.clean import CleanCounts, FileMarks
from lossaudit.model_inputs import POSITION_COLUMN, RAW_RECORD_COLUMN
from tests.helpers import REPO

FORMAT_NAMES = ("tfrecord", "parquet")
# Where product code lives; lossaudit/formats/ is the one place that may
# know a format by its name.
SOURCE_DIRS = ("lossaudit", "pipelines", "transforms", "benchmarks")
ROWS = 10


def _names_a_format(node: ast.AST) -> bool:
  """A format's name as a literal, alone or in a tuple, list or set."""
  if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
    return any(_names_a_format(e) for e in node.elts)
  return isinstance(node, ast.Constant) and node.value in FORMAT_NAMES


def _is_a_format_value(node: ast.AST) -> bool:
  """`x.format`, `format`, `input_format`, `fmt`."""
  if isinstance(node, ast.Attribute):
    return node.attr == "format"
  return isinstance(node, ast.Name) and node.id in (
      "format", "input_format", "fmt")


def format_switches(source: str) -> list:
  """Line numbers of `source` where a value is compared with a format's
  name (or a format value with anything), or a dict is keyed by one."""
  lines = []
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, ast.Compare):
      operands = [node.left, *node.comparators]
      if any(_names_a_format(o) or _is_a_format_value(o) for o in operands):
        lines.append(node.lineno)
    elif isinstance(node, ast.Dict) and any(
        k is not None and _names_a_format(k) for k in node.keys):
      lines.append(node.lineno)
  return lines


def test_the_switch_finder_finds_switches():
  source = "\n".join([
      'if config.input.format == "tfrecord": pass',
      'x = a if "parquet" != b else c',
      'y = fmt in ("parquet", "csv")',
      'z = {"tfrecord": 1}',
      'ok = formats.get(config.input.format).serialized_examples',
      'also_ok = f(format="tfrecord")',
  ])
  assert sorted(format_switches(source)) == [1, 2, 3, 4]


def test_no_format_switch_outside_the_formats_package():
  found = []
  for top in SOURCE_DIRS:
    for root, _, files in os.walk(os.path.join(REPO, top)):
      relative = os.path.relpath(root, REPO)
      if relative.split(os.sep)[:2] == ["lossaudit", "formats"]:
        continue
      for name in files:
        if name.endswith(".py"):
          path = os.path.join(root, name)
          with open(path, encoding="utf-8") as f:
            found += [f"{os.path.relpath(path, REPO)}:{line}"
                      for line in format_switches(f.read())]
  assert found == []


def test_the_registry_lists_each_format_the_default_first():
  assert formats.names() == FORMAT_NAMES
  assert config.FORMATS == FORMAT_NAMES
  assert [formats.get(n).name for n in FORMAT_NAMES] == list(FORMAT_NAMES)
  assert formats.get("tfrecord").serialized_examples
  assert not formats.get("parquet").serialized_examples
  with pytest.raises(KeyError):
    formats.get("csv")


def test_the_registry_imports_no_beam_tensorflow_or_arrow():
  loaded = subprocess.run(
      [sys.executable, "-c",
       "import sys, lossaudit.config, lossaudit.formats;"
       " print(sorted({m.split('.')[0] for m in sys.modules} &"
       " {'apache_beam', 'tensorflow', 'pyarrow'}))"],
      capture_output=True, text=True, check=True, cwd=REPO,
      env=dict(os.environ, PYTHONPATH=REPO))
  assert loaded.stdout.strip() == "[]"


def _columns():
  return {"id": np.array([f"r{i}" for i in range(ROWS)]),
          "x": np.arange(ROWS * 2, dtype=np.float32).reshape(ROWS, 2),
          "label": np.arange(ROWS) % 3}


# Serialized once: a map's order in a tf.train.Example is not fixed.
_RECORDS = datasets.to_examples(_columns())


def _write(fmt: str, directory) -> str:
  """`_columns()` as one file of format `fmt`: gzip TFRecord of `_RECORDS`,
  or Parquet in row groups of 4 rows."""
  if fmt == "tfrecord":
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    os.makedirs(directory, exist_ok=True)
    path = str(directory / "part.tfrecord.gz")
    with tf.io.TFRecordWriter(path, "GZIP") as writer:
      for record in _RECORDS:
        writer.write(record)
  else:
    (path,) = datasets.write_parquet(str(directory), _columns(),
                                     num_shards=1, row_group_size=4)
  return path


def _tf_schema() -> bytes:
  schema = schema_pb2.Schema()
  schema.feature.add(name="id", type=schema_pb2.BYTES)
  schema.feature.add(name="label", type=schema_pb2.INT)
  return schema.SerializeToString()


def _ids(column) -> list:
  """Ids as text, from strings, bytes or lists of either."""
  values = column.to_pylist()
  values = [v[0] if isinstance(v, list) else v for v in values]
  return [v.decode() if isinstance(v, bytes) else v for v in values]


# The types each format gives the columns it stores, read with no schema.
_STORED_TYPES = {
    "tfrecord": {"id": pa.large_list(pa.large_binary()),
                 "x": pa.large_list(pa.float32()),
                 "label": pa.large_list(pa.int64()),
                 RAW_RECORD_COLUMN: pa.large_binary()},
    "parquet": {"id": pa.string(), "x": pa.list_(pa.float32()),
                "label": pa.int64()},
}


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
def test_first_rows_have_the_stored_schema(tmp_path, fmt):
  path = _write(fmt, tmp_path)
  batch = formats.get(fmt).first_rows(path, 3)
  assert {f.name: f.type for f in batch.schema} == _STORED_TYPES[fmt]
  assert _ids(batch.column("id")) == ["r0", "r1", "r2"]


def test_tfrecord_first_rows_carry_each_record(tmp_path):
  path = _write("tfrecord", tmp_path)
  batch = formats.get("tfrecord").first_rows(path, ROWS)
  assert batch.column(RAW_RECORD_COLUMN).to_pylist() == _RECORDS


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
def test_an_empty_file_has_no_first_rows(tmp_path, fmt):
  if fmt == "tfrecord":
    path = tmp_path / "empty.tfrecord"
    path.write_bytes(b"")
  else:
    path = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"id": pa.array([], pa.string())}), path)
  assert formats.get(fmt).first_rows(str(path), 3) is None


def test_a_file_not_of_the_format_cannot_give_first_rows(tmp_path):
  path = tmp_path / "text.parquet"
  path.write_bytes(b"not parquet")
  with pytest.raises(Exception):
    formats.get("parquet").first_rows(str(path), 3)


def _rows_read(element):
  _, batch = element
  return list(zip(_ids(batch.column("id")),
                  batch.column(POSITION_COLUMN).to_pylist()))


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
def test_read_gives_every_row_with_its_position(tmp_path, fmt):
  path = _write(fmt, tmp_path)
  request = formats.ReadRequest(4, columns=("id", "label"),
                                schema=_tf_schema(), positions=True)
  expected = [(f"r{i}", i) for i in range(ROWS)]
  with TestPipeline() as p:
    read = p | "Read" >> formats.get(fmt).read([path], request)
    assert_that(read["batches"] | "Rows" >> beam.FlatMap(_rows_read),
                equal_to(expected), label="AllRows")
    assert_that(read[dead_letters.TAG], equal_to([]),
                label="NoDeadLetters")
    files = p | "Files" >> beam.Create([path])
    again = formats.get(fmt).read_files(files, request)
    assert_that(again | "RowsAgain" >> beam.FlatMap(_rows_read),
                equal_to(expected), label="AllRowsAgain")


def _target(tmp_path, fmt, path):
  return formats.CleanTarget(str(tmp_path), (path,), fmt,
                             label_column="label", num_classes=3)


def _marks():
  """Rows 1 and 3 dropped, row 2 relabelled to class 0, all scored."""
  return FileMarks(scored=np.array([[0, ROWS]], np.int64),
                   dropped=np.array([1, 3], np.int64),
                   relabelled=np.array([2], np.int64),
                   labels=np.array([0], np.int64))


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
def test_write_clean_keeps_the_rows_not_dropped(tmp_path, fmt):
  source = _write(fmt, tmp_path / "in")
  copy = str(tmp_path / f"copy-{os.path.basename(source)}")
  written = formats.get(fmt).write_clean(source, copy, _marks(),
                                         _target(tmp_path, fmt, source))
  assert (written.kept, written.relabelled, written.files) == (8, 1, 1)
  batch = formats.get(fmt).first_rows(copy, ROWS)
  kept = [i for i in range(ROWS) if i not in (1, 3)]
  assert _ids(batch.column("id")) == [f"r{i}" for i in kept]
  labels = [v[0] if isinstance(v, list) else v
            for v in batch.column("label").to_pylist()]
  assert labels == [0 if i == 2 else i % 3 for i in kept]


def test_tfrecord_clean_copy_keeps_records_byte_for_byte(tmp_path):
  source = _write("tfrecord", tmp_path / "in")
  copy = str(tmp_path / "copy.tfrecord.gz")
  formats.get("tfrecord").write_clean(source, copy, _marks(),
                                      _target(tmp_path, "tfrecord", source))
  records = _RECORDS
  copied = formats.get("tfrecord").first_rows(copy, ROWS).column(
      RAW_RECORD_COLUMN).to_pylist()
  assert [copied[0]] + copied[2:] == [records[i] for i in (0, 4, 5, 6, 7, 8,
                                                           9)]
  assert copied[1] != records[2]  # Relabelled: re-serialized.


def test_parquet_clean_copy_keeps_the_schema(tmp_path):
  source = _write("parquet", tmp_path / "in")
  copy = str(tmp_path / "copy.parquet")
  formats.get("parquet").write_clean(source, copy, _marks(),
                                     _target(tmp_path, "parquet", source))
  assert pq.read_schema(copy) == pq.read_schema(source)


def test_head_tells_a_parquet_file_rows_and_first_row_group(tmp_path):
  path = _write("parquet", tmp_path)
  head = formats.get("parquet").head(str(tmp_path / "*.parquet"),
                                     ["id", "absent"])
  assert (head.path, head.size_in_bytes, head.num_rows) == (
      path, os.path.getsize(path), ROWS)
  assert head.columns.column_names == ["id"]
  assert head.columns.column("id").to_pylist() == ["r0", "r1", "r2", "r3"]


def test_head_of_tfrecord_tells_nothing(tmp_path):
  _write("tfrecord", tmp_path)
  assert formats.get("tfrecord").head(str(tmp_path / "*"), ["id"]) is None


class JsonLines(formats.Format):
  """A third format, as a new module would define it: only `batches` and
  `write_clean`; reading in the pipeline and the probe's first rows come
  from the base class."""

  name = "jsonl"

  def batches(self, path, request):
    import pyarrow.json as pj  # pylint: disable=g-import-not-at-top

    table = pj.read_json(path)
    if request.columns is not None:
      table = table.select([c for c in request.columns
                            if c in table.column_names])
    yield from table.to_batches(max_chunksize=request.batch_size)

  def write_clean(self, source, path, marks, target):
    with open(source, "rb") as f:
      lines = f.readlines()
    kept = marks.kept(np.arange(len(lines)))
    with open(path, "wb") as f:
      f.writelines(line for line, keep in zip(lines, kept) if keep)
    return CleanCounts(kept=int(kept.sum()), files=1)


def _write_jsonl(path, rows):
  path.write_text("".join(
      f'{{"id": "r{i}", "label": {i % 3}}}\n' for i in range(rows)))
  return str(path)


def test_a_format_of_one_module_reads_in_the_pipeline_and_the_probe(
    tmp_path):
  good = _write_jsonl(tmp_path / "good.jsonl", ROWS)
  broken = tmp_path / "broken.jsonl"
  broken.write_text('{"id": "x0"}\n{"id": \n')
  jsonl = JsonLines()
  first = jsonl.first_rows(good, 3)
  assert (first.column("id").to_pylist(), str(first.schema.field(
      "label").type)) == (["r0", "r1", "r2"], "int64")
  request = formats.ReadRequest(4, columns=("id",), positions=True)
  expected = [(f"r{i}", i) for i in range(ROWS)]
  with TestPipeline() as p:
    read = p | "Read" >> jsonl.read([good, str(broken)], request)
    assert_that(read["batches"] | "Rows" >> beam.FlatMap(_rows_read),
                equal_to(expected), label="AllRows")
    assert_that(read[dead_letters.TAG] | "Why" >> beam.Map(
        lambda e: (e["source"], e["reason"])), equal_to(
            [(str(broken), dead_letters.UNREADABLE_FILE)]),
                label="OneDeadLetter")
    files = p | "Files" >> beam.Create([good])
    again = jsonl.read_files(files, request)
    assert_that(again | "RowsAgain" >> beam.FlatMap(_rows_read),
                equal_to(expected), label="AllRowsAgain")
  copy = str(tmp_path / "clean.jsonl")
  counts = jsonl.write_clean(good, copy, _marks(), None)
  assert counts.kept == 8
  assert jsonl.first_rows(copy, ROWS).column("id").to_pylist() == [
      f"r{i}" for i in range(ROWS) if i not in (1, 3)]
