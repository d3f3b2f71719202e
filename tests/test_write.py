"""`WriteParquetShards`: small scored batches become large row groups."""

import glob

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
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
