"""Reading real TFRecord and Parquet shards through Beam's file sources."""

import glob

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from tensorflow_metadata.proto.v0 import schema_pb2

from lossaudit import datasets
from transforms.read import (DEAD_LETTER, ReadParquetBatches,
                             ReadTFExampleBatches)


def _schema():
  schema = schema_pb2.Schema()
  schema.feature.add(name="id", type=schema_pb2.BYTES)
  schema.feature.add(name="x", type=schema_pb2.FLOAT)
  schema.feature.add(name="label", type=schema_pb2.INT)
  return schema.SerializeToString()


def _rows_per_file(element):
  source, batch = element
  return source.rsplit("/", 1)[-1], batch.num_rows


def _summed(pcoll, label):
  return (pcoll | f"{label}Rows" >> beam.Map(_rows_per_file)
          | f"{label}Sum" >> beam.CombinePerKey(sum))


def test_tfrecord_plain_and_gzip_batched_per_file(tmp_path, columns):
  datasets.write_tfrecords(str(tmp_path / "gz"), columns, num_shards=2)
  datasets.write_tfrecords(str(tmp_path / "plain"), columns, num_shards=1,
                           compression=None)
  with TestPipeline() as p:
    files = sorted(glob.glob(str(tmp_path / "gz" / "*.gz"))) + glob.glob(
        str(tmp_path / "plain" / "*"))
    read = p | ReadTFExampleBatches(files, _schema(), batch_size=500)
    assert_that(_summed(read["batches"], "All"), equal_to([
        ("part-00000-of-00002.tfrecord.gz", 1500),
        ("part-00001-of-00002.tfrecord.gz", 1500),
        ("part-00000-of-00001.tfrecord", 3000)]), label="rows")
    sizes = read["batches"] | beam.Map(lambda e: e[1].num_rows <= 500)
    assert_that(sizes | beam.combiners.Count.PerElement(),
                equal_to([(True, 12)]) , label="sizes")
    columns_ = read["batches"] | "Cols" >> beam.Map(
        lambda e: tuple(e[1].schema.names)) | beam.Distinct()
    assert_that(columns_, equal_to([("id", "x", "label")]), label="columns")


def test_undecodable_record_goes_to_dead_letter(tmp_path, columns):
  import tensorflow as tf

  path = str(tmp_path / "mixed.tfrecord")
  good = datasets.to_examples({k: v[:3] for k, v in columns.items()})
  with tf.io.TFRecordWriter(path) as writer:
    writer.write(good[0])
    writer.write(b"\xff\xfenot an example")
    writer.write(good[1])
  with TestPipeline() as p:
    read = p | ReadTFExampleBatches([path], _schema(), batch_size=10)
    assert_that(read["batches"] | beam.Map(lambda e: e[1].num_rows),
                equal_to([2]), label="good")
    assert_that(read[DEAD_LETTER] | beam.Map(
        lambda d: (d["source"], d["id"], d["error"].split(":")[0],
                   d["reason"])),
                equal_to([(path, None, "not a tf.train.Example",
                           "not_an_example")]),
                label="dead")


def test_parquet_split_into_batches(tmp_path, columns):
  datasets.write_parquet(str(tmp_path), columns, num_shards=2,
                         row_group_size=1000)
  with TestPipeline() as p:
    read = p | ReadParquetBatches(sorted(glob.glob(str(tmp_path / "*"))),
                                  ["id", "x", "label"], batch_size=400)
    assert_that(_summed(read["batches"], "All"), equal_to([
        ("part-00000-of-00002.parquet", 1500),
        ("part-00001-of-00002.parquet", 1500)]), label="rows")
    assert_that(read["batches"] | beam.Map(lambda e: e[1].num_rows <= 400)
                | beam.Distinct(), equal_to([True]), label="sizes")


def test_damaged_stretch_is_one_dead_letter_and_earlier_records_kept(
    tmp_path, columns):
  path = tmp_path / "damaged.tfrecord"
  datasets.write_tfrecords(str(tmp_path), {k: v[:10] for k, v in
                                           columns.items()}, num_shards=1,
                           compression=None, prefix="whole")
  whole = (tmp_path / "whole-00000-of-00001.tfrecord").read_bytes()
  record_size = len(whole) // 10
  damaged = bytearray(whole)
  damaged[4 * record_size + 20] ^= 0xFF  # Inside record 4's data.
  path.write_bytes(bytes(damaged))
  truncated = tmp_path / "truncated.tfrecord"
  truncated.write_bytes(whole[:-7])
  with TestPipeline() as p:
    read = p | ReadTFExampleBatches([str(path), str(truncated)], _schema(),
                                    batch_size=3)
    assert_that(_summed(read["batches"], "All"), equal_to([
        ("damaged.tfrecord", 4), ("truncated.tfrecord", 9)]), label="rows")
    assert_that(read[DEAD_LETTER] | beam.Map(
        lambda d: (d["source"].rsplit("/", 1)[-1], d["error"])), equal_to([
            ("damaged.tfrecord", f"unreadable from record 4 (byte"
             f" {4 * record_size}): corrupted record (bad CRC)"),
            ("truncated.tfrecord", f"unreadable from record 9 (byte"
             f" {9 * record_size}): truncated ({record_size - 7} trailing"
             " bytes)")]), label="dead")


def test_compression_found_by_content_and_bad_files_dead_lettered(
    tmp_path, columns):
  """A gzip file named plain, a plain file named `.gz`, a text file and an
  empty file: the first two are read whole, the others dead-lettered or
  empty."""
  part = {k: v[:10] for k, v in columns.items()}
  datasets.write_tfrecords(str(tmp_path / "gz"), part, num_shards=1)
  datasets.write_tfrecords(str(tmp_path / "plain"), part, num_shards=1,
                           compression=None)
  gzip_named_plain = tmp_path / "gzip-inside.tfrecord"
  gzip_named_plain.write_bytes(next((tmp_path / "gz").iterdir()).read_bytes())
  plain_named_gzip = tmp_path / "plain-inside.tfrecord.gz"
  plain_named_gzip.write_bytes(
      next((tmp_path / "plain").iterdir()).read_bytes())
  text = tmp_path / "notes.tfrecord"
  text.write_text("this is not a TFRecord file\n" * 20)
  empty = tmp_path / "empty.tfrecord"
  empty.write_bytes(b"")
  with TestPipeline() as p:
    read = p | ReadTFExampleBatches(
        [str(f) for f in (gzip_named_plain, plain_named_gzip, text, empty)],
        _schema(), batch_size=4)
    assert_that(_summed(read["batches"], "All"), equal_to([
        ("gzip-inside.tfrecord", 10), ("plain-inside.tfrecord.gz", 10)]),
                label="rows")
    assert_that(read[DEAD_LETTER] | beam.Map(
        lambda d: (d["source"].rsplit("/", 1)[-1], d["reason"],
                   d["error"].split(":")[0])), equal_to([
                       ("notes.tfrecord", "unreadable_stretch",
                        "unreadable from record 0 (byte 0)")]), label="dead")


def test_parquet_file_that_is_not_parquet_is_one_dead_letter(
    tmp_path, columns):
  datasets.write_parquet(str(tmp_path), {k: v[:30] for k, v in
                                         columns.items()}, num_shards=1,
                         row_group_size=10)
  (tmp_path / "zz-not-parquet.parquet").write_text("hello")
  with TestPipeline() as p:
    read = p | ReadParquetBatches(sorted(glob.glob(str(tmp_path / "*"))),
                                  ["id", "x", "label"], batch_size=400)
    assert_that(_summed(read["batches"], "All"), equal_to([
        ("part-00000-of-00001.parquet", 30)]), label="rows")
    assert_that(read[DEAD_LETTER] | beam.Map(
        lambda d: (d["source"].rsplit("/", 1)[-1], d["reason"],
                   d["error"].split(":")[0])), equal_to([
                       ("zz-not-parquet.parquet", "unreadable_file",
                        "unreadable file")]), label="dead")


def test_damaged_gzip_stream_keeps_the_records_before_it(tmp_path, columns):
  import gzip
  import zlib

  datasets.write_tfrecords(str(tmp_path / "plain"), columns, num_shards=1,
                           compression=None)
  raw = next((tmp_path / "plain").iterdir()).read_bytes()
  damaged = bytearray(gzip.compress(raw))
  damaged[len(damaged) // 2] ^= 0xFF
  path = tmp_path / "damaged.tfrecord.gz"
  path.write_bytes(bytes(damaged))
  try:
    gzip.decompress(bytes(damaged))
    assert False, "the damage went unnoticed"
  except (OSError, zlib.error, EOFError):
    pass
  with TestPipeline() as p:
    read = p | ReadTFExampleBatches([str(path)], _schema(), batch_size=500)
    kept = (read["batches"] | beam.Map(lambda e: e[1].num_rows)
            | beam.CombineGlobally(sum) | beam.Map(lambda n: ("kept", n)))
    dead = read[DEAD_LETTER] | beam.Map(
        lambda d: ("dead", d["reason"], d["error"]))

    def check(found):
      (_, kept), = [f for f in found if f[0] == "kept"]
      (_, reason, error), = [f for f in found if f[0] == "dead"]
      assert 0 < kept < len(columns["id"])
      assert reason == "unreadable_stretch"
      assert error.startswith(f"unreadable from record {kept}: damaged"
                              " compressed stream")

    assert_that((kept, dead) | beam.Flatten(), check)
