"""`WriteParquetShards`: small scored batches become large row groups."""

import glob
import io
import threading

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline

from lossaudit.transforms import write

SCHEMA = pa.schema([("id", pa.string()), ("loss", pa.float64())])


def _batches(sizes):
  start, found = 0, []
  for size in sizes:
    ids = [f"r{i:05d}" for i in range(start, start + size)]
    found.append(pa.record_batch({
        "id": pa.array(ids, pa.string()),
        "loss": pa.array(np.arange(start, start + size) / 10.0),
        "__probs__": pa.array([[0.5, 0.5]] * size)}))  # Internal: dropped.
    start += size
  return found


def _write(tmp_path, batches):
  with TestPipeline() as p:
    _ = (p | beam.Create(batches, reshuffle=False)
         | write.WriteParquetShards(str(tmp_path), "losses", SCHEMA,
                                    num_shards=1))
  (path,) = glob.glob(str(tmp_path / "losses" / "part-*.parquet"))
  return pq.ParquetFile(path)


def test_small_batches_are_written_as_one_row_group(tmp_path):
  found = _write(tmp_path, _batches([120] * 25 + [0]))
  assert found.metadata.num_row_groups == 1
  table = found.read()
  assert table.schema.equals(SCHEMA)
  assert table.num_rows == 3000
  assert sorted(table.column("id").to_pylist()) == [
      f"r{i:05d}" for i in range(3000)]
  np.testing.assert_array_equal(np.sort(table.column("loss").to_numpy()),
                                np.arange(3000) / 10.0)


def test_row_groups_end_at_the_row_bound(tmp_path, monkeypatch):
  monkeypatch.setattr(write, "ROW_GROUP_ROWS", 1000)
  found = _write(tmp_path, _batches([120] * 25))
  sizes = [found.metadata.row_group(i).num_rows
           for i in range(found.metadata.num_row_groups)]
  assert sorted(sizes) == [840, 1080, 1080]


def test_row_groups_end_at_the_byte_bound_of_the_kept_columns(monkeypatch):
  public = SCHEMA.names
  batches = _batches([100] * 10)
  row_bytes = batches[0].select(public).nbytes // 100
  monkeypatch.setattr(write, "ROW_GROUP_BYTES", 250 * row_bytes)
  fn = write._ToRowGroups(SCHEMA)  # pylint: disable=protected-access
  fn.start_bundle()
  tables = [t for b in batches for t in fn.process(b)]
  tables += [v.value for v in fn.finish_bundle()]
  # Only the kept columns count: `__probs__` would cut groups at 100 rows.
  assert [t.num_rows for t in tables] == [300, 300, 300, 100]
  assert all(t.schema.equals(SCHEMA) for t in tables)
  fn.start_bundle()  # A new bundle starts empty.
  assert list(fn.finish_bundle()) == []


class _RecordingWriter:
  """A ParquetWriter that notes the thread of each `write_table`."""

  def __init__(self, writer):
    self.writer = writer
    self.threads = []

  def write_table(self, table):
    self.threads.append(threading.current_thread().name)
    self.writer.write_table(table)

  def close(self):
    self.writer.close()


def test_row_groups_are_encoded_off_the_calling_thread():
  buffer = io.BytesIO()
  buffer.close = lambda: None  # Read back below.
  writer = write._RowGroupWriter(buffer, SCHEMA, "snappy")  # pylint: disable=protected-access
  recording = writer._writer = _RecordingWriter(writer._writer)  # pylint: disable=protected-access
  tables = [pa.Table.from_batches([b.select(SCHEMA.names)])
            for b in _batches([100, 50, 7])]
  for table in tables:
    writer.write(table)
  writer.close()
  assert len(recording.threads) == 3
  assert threading.current_thread().name not in recording.threads
  found = pq.ParquetFile(io.BytesIO(buffer.getvalue()))
  assert [found.metadata.row_group(i).num_rows for i in range(3)] == [
      100, 50, 7]
  assert found.read().equals(pa.concat_tables(tables))


@pytest.mark.parametrize("then", ["write", "close"])
def test_an_encoding_error_is_raised_by_the_next_write_or_close(then):
  wrong = pa.table({"id": pa.array(["a"]), "other": pa.array([1.0])})
  writer = write._RowGroupWriter(io.BytesIO(), SCHEMA, "snappy")  # pylint: disable=protected-access
  writer.write(wrong)
  with pytest.raises(ValueError, match="schema"):
    if then == "write":
      writer.write(wrong)
    else:
      writer.close()
