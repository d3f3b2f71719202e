"""Reading real TFRecord and Parquet shards through Beam's file sources."""

import glob

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from tensorflow_metadata.proto.v0 import schema_pb2

from lossaudit import datasets, dead_letters, tfrecord
from lossaudit.transforms import read as read_module
from lossaudit.transforms.read import ReadParquetBatches, ReadTFExampleBatches


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


def _placed(request, monkeypatch, paths, where):
  """`paths` as the reader gets them: local, or uploaded to gs:// (the
  emulator) and read by tf.data from local copies however small."""
  if where == "local":
    return [str(p) for p in paths]
  from tests.helpers import upload

  gcs = request.getfixturevalue("gcs")
  monkeypatch.setattr(tfrecord, "TF_DATA_MIN_BYTES", 0)
  remote = []
  for path in paths:
    remote.append(f"{gcs}/{request.node.name}/{path.name}")
    upload(str(path), remote[-1])
  return remote


_PLACES = pytest.mark.parametrize("where", ["local", "gs"])


def test_tfrecord_plain_and_gzip_gathered_per_file(tmp_path, columns,
                                                   monkeypatch):
  datasets.write_tfrecords(str(tmp_path / "gz"), columns, num_shards=2)
  datasets.write_tfrecords(str(tmp_path / "plain"), columns, num_shards=1,
                           compression=None)
  # Read 500 at a time, gathered into elements of up to 1,000 rows.
  monkeypatch.setattr(read_module, "ELEMENT_ROWS", 1000)
  with TestPipeline() as p:
    files = sorted(glob.glob(str(tmp_path / "gz" / "*.gz"))) + glob.glob(
        str(tmp_path / "plain" / "*"))
    read = p | ReadTFExampleBatches(files, _schema(), batch_size=500)
    assert_that(_summed(read["batches"], "All"), equal_to([
        ("part-00000-of-00002.tfrecord.gz", 1500),
        ("part-00001-of-00002.tfrecord.gz", 1500),
        ("part-00000-of-00001.tfrecord", 3000)]), label="rows")
    assert_that(read["batches"] | beam.Map(_rows_per_file), equal_to([
        ("part-00000-of-00002.tfrecord.gz", 1000),
        ("part-00000-of-00002.tfrecord.gz", 500),
        ("part-00001-of-00002.tfrecord.gz", 1000),
        ("part-00001-of-00002.tfrecord.gz", 500)] + [
            ("part-00000-of-00001.tfrecord", 1000)] * 3), label="sizes")
    columns_ = read["batches"] | "Cols" >> beam.Map(
        lambda e: tuple(e[1].schema.names)) | beam.Distinct()
    assert_that(columns_, equal_to([("id", "x", "label")]), label="columns")


def test_records_are_gathered_up_to_rows_or_bytes(monkeypatch):
  unreadable = tfrecord.Unreadable(0, 0, "damaged", False)
  items = [[b"a"] * 3, [b"b"] * 3, unreadable, [b"c"] * 2, [b"d" * 10],
           [b"e"]]
  gathered = list(read_module._gathered(iter(items), rows=6))
  assert gathered == [[b"a"] * 3 + [b"b"] * 3, unreadable,
                      [b"c"] * 2 + [b"d" * 10] + [b"e"]]
  monkeypatch.setattr(read_module, "ELEMENT_BYTES", 10)
  gathered = list(read_module._gathered(iter(items), rows=6))
  assert gathered == [[b"a"] * 3 + [b"b"] * 3, unreadable, [b"c"] * 2,
                      [b"d" * 10], [b"e"]]
  assert read_module.element_rows(100) == read_module.ELEMENT_ROWS
  assert read_module.element_rows(1 << 20) == 1 << 20


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
    assert_that(read[dead_letters.TAG] | beam.Map(
        lambda d: (d["source"], d["id"], d["error"].split(":")[0],
                   d["reason"])),
                equal_to([(path, None, "not a tf.train.Example",
                           "not_an_example")]),
                label="dead")


def test_scattered_undecodable_records_are_found_and_the_rest_kept(
    tmp_path, columns):
  import tensorflow as tf

  path = str(tmp_path / "scattered.tfrecord")
  good = datasets.to_examples({k: v[:200] for k, v in columns.items()})
  bad = {5: b"\xff\xfenot an example", 100: b"junk", 199: b"\x00"}
  with tf.io.TFRecordWriter(path) as writer:
    for i, record in enumerate(good):
      writer.write(bad.get(i, record))
  with TestPipeline() as p:
    read = p | ReadTFExampleBatches([path], _schema(), batch_size=64)
    assert_that(read["batches"] | beam.Map(
        lambda e: [v[0] for v in e[1].column("id").to_pylist()]),
                equal_to([[columns["id"][i].encode() for i in range(200)
                           if i not in bad]]), label="good")
    assert_that(read[dead_letters.TAG] | beam.Map(lambda d: d["reason"]),
                equal_to(["not_an_example"] * 3), label="dead")


def test_parquet_elements_of_wide_rows_stay_near_the_byte_bound(
    tmp_path, columns, monkeypatch):
  datasets.write_parquet(str(tmp_path), columns, num_shards=1,
                         row_group_size=3000)
  nbytes = pq.read_table(next(tmp_path.iterdir()),
                         columns=["id", "x", "label"]).nbytes
  monkeypatch.setattr(read_module, "ELEMENT_BYTES", -(-700 * nbytes // 3000))
  with TestPipeline() as p:
    read = p | ReadParquetBatches([str(next(tmp_path.iterdir()))],
                                  ["id", "x", "label"], batch_size=100)
    assert_that(read["batches"] | beam.Map(lambda e: e[1].num_rows),
                equal_to([700] * 4 + [200]), label="sizes")


def test_parquet_split_into_batches(tmp_path, columns):
  datasets.write_parquet(str(tmp_path), columns, num_shards=2,
                         row_group_size=1000)
  with TestPipeline() as p:
    read = p | ReadParquetBatches(sorted(glob.glob(str(tmp_path / "*"))),
                                  ["id", "x", "label"], batch_size=400)
    assert_that(_summed(read["batches"], "All"), equal_to([
        ("part-00000-of-00002.parquet", 1500),
        ("part-00001-of-00002.parquet", 1500)]), label="rows")
    # Row groups of 1,000 rows, cut at `element_rows(400)` (8,192).
    assert_that(read["batches"] | beam.Map(_rows_per_file), equal_to([
        ("part-00000-of-00002.parquet", 1000),
        ("part-00000-of-00002.parquet", 500),
        ("part-00001-of-00002.parquet", 1000),
        ("part-00001-of-00002.parquet", 500)]), label="sizes")


@_PLACES
def test_damaged_stretch_is_one_dead_letter_and_earlier_records_kept(
    request, monkeypatch, tmp_path, columns, where):
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
    read = p | ReadTFExampleBatches(
        _placed(request, monkeypatch, [path, truncated], where), _schema(),
        batch_size=3)
    assert_that(_summed(read["batches"], "All"), equal_to([
        ("damaged.tfrecord", 9), ("truncated.tfrecord", 9)]), label="rows")
    assert_that(read[dead_letters.TAG] | beam.Map(
        lambda d: (d["source"].rsplit("/", 1)[-1], d["error"])), equal_to([
            ("damaged.tfrecord", f"unreadable record 4 (byte"
             f" {4 * record_size}): corrupted record (bad CRC); the records"
             " after it were read"),
            ("truncated.tfrecord", f"unreadable from record 9 (byte"
             f" {9 * record_size}): truncated ({record_size - 7} trailing"
             f" bytes; the record's header gives a length of"
             f" {record_size - 16})")]), label="dead")


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
    assert_that(read[dead_letters.TAG] | beam.Map(
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
    assert_that(read[dead_letters.TAG] | beam.Map(
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
  damaged = bytearray(gzip.compress(raw, mtime=0))
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
    dead = read[dead_letters.TAG] | beam.Map(
        lambda d: ("dead", d["reason"], d["error"]))

    def check(found):
      (_, kept), = [f for f in found if f[0] == "kept"]
      dead = [f[1:] for f in found if f[0] == "dead"]
      assert 0 < kept < len(columns["id"])
      # Inflated up to the damage: it is found by zlib or, when the flipped
      # byte inflates to garbage, by the CRC of a record's length (the rest
      # of the stream) or of its data (that record alone); each is named by
      # record and byte, and every record is kept or named.
      assert {reason for reason, _ in dead} <= {"unreadable_stretch",
                                               "unreadable_record"}
      (error,) = [e for reason, e in dead if reason == "unreadable_stretch"]
      assert error.startswith("unreadable from record ")
      assert error.split("): ", 1)[1].startswith((
          "damaged compressed stream", "corrupted length (bad CRC)"))
      stretch_from = int(error.split()[3])
      singles = {int(e.split()[2]) for reason, e in dead
                 if reason == "unreadable_record"}
      assert all(e.startswith("unreadable record ") for reason, e in dead
                 if reason == "unreadable_record")
      assert len(singles) == len(dead) - 1
      assert all(index < stretch_from for index in singles)
      assert kept + len(singles) == stretch_from

    assert_that((kept, dead) | beam.Flatten(), check)


# What the promise asks of every reader: each readable record counted, each
# unreadable stretch one marker naming where it broke, nothing lost between.

_WRITTEN = 224  # Records in each small file below (a demo shard's size).


def _plain_records(tmp_path, columns, n=_WRITTEN):
  """`(framed file bytes, number of records)` of `n` good records."""
  directory = tmp_path / "source"
  datasets.write_tfrecords(str(directory), {k: v[:n] for k, v in
                                            columns.items()}, num_shards=1,
                           compression=None)
  return next(directory.iterdir()).read_bytes(), n


def _walk(path, gcs):
  """`(records read, Unreadable markers)` of one file, as the pipeline
  reads it: by the walker (a small file), and the same through tf.data,
  and the same again from a copy on gs:// (`gcs`), walked through Beam's
  `FileSystems` and read by tf.data from a local copy."""
  from lossaudit import tfrecord
  from tests.helpers import upload

  remote = f"{gcs}/walk/{path.parent.name}/{path.name}"
  upload(str(path), remote)

  def walked(source):
    items = list(tfrecord.tf_data_batches(source, batch_size=100))
    read = sum(len(i) for i in items if isinstance(i, list))
    return read, [i for i in items if isinstance(i, tfrecord.Unreadable)]

  by_walker = walked(str(path))
  assert walked(remote) == by_walker
  least = tfrecord.TF_DATA_MIN_BYTES
  tfrecord.TF_DATA_MIN_BYTES = 0
  try:
    assert walked(str(path)) == by_walker
    assert walked(remote) == by_walker
  finally:
    tfrecord.TF_DATA_MIN_BYTES = least
  return by_walker


def _gzip(data: bytes) -> bytes:
  import gzip

  return gzip.compress(data)


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("extra", [1, 6, 11])
def test_a_few_trailing_bytes_are_one_unreadable_stretch(
    gcs, tmp_path, columns, compress, extra):
  """tf.data takes a partial header at the end for the end of the file."""
  raw, written = _plain_records(tmp_path, columns)
  path = tmp_path / "trailing.tfrecord"
  path.write_bytes((_gzip if compress else bytes)(raw + b"\x07" * extra))
  read, (marker,) = _walk(path, gcs)
  assert (read, marker.record, marker.offset) == (written, written, len(raw))
  assert marker.reason == f"truncated ({extra} trailing bytes)"
  assert read + (written - marker.record) == written


@pytest.mark.parametrize("size", [1, 11])
def test_a_tiny_garbage_file_is_one_unreadable_stretch(gcs, tmp_path, size):
  path = tmp_path / "tiny.tfrecord"
  path.write_bytes(b"\x07" * size)
  read, (marker,) = _walk(path, gcs)
  assert (read, marker.describe()) == (
      0, f"unreadable from record 0 (byte 0): truncated ({size} trailing"
      " bytes)")


def _bad_crc(gz: bytes) -> bytes:
  damaged = bytearray(gz)
  damaged[-8] ^= 0xFF  # The CRC32 of the gzip trailer.
  return bytes(damaged)


def _bad_isize(gz: bytes) -> bytes:
  damaged = bytearray(gz)
  damaged[-1] ^= 0xFF  # The ISIZE of the gzip trailer.
  return bytes(damaged)


@pytest.mark.parametrize("damage, reason", [
    (_bad_crc, "damaged compressed stream (error: Error -3 while"
     " decompressing data: incorrect data check)"),
    (_bad_isize, "damaged compressed stream (error: Error -3 while"
     " decompressing data: incorrect length check)"),
    (lambda gz: gz + b"junk after it",
     "13 bytes after the end of the gzip stream"),
])
def test_gzip_trailer_damage_keeps_every_record(gcs, tmp_path, columns,
                                                damage, reason):
  raw, written = _plain_records(tmp_path, columns)
  path = tmp_path / "damaged.tfrecord.gz"
  path.write_bytes(damage(_gzip(raw)))
  read, (marker,) = _walk(path, gcs)
  assert (read, marker.record, marker.offset, marker.reason) == (
      written, written, len(raw), reason)


def test_truncated_gzip_keeps_the_records_inflated_before_the_cut(
    gcs, tmp_path, columns):
  from lossaudit import tfrecord

  raw, written = _plain_records(tmp_path, columns)
  gz = _gzip(raw)
  path = tmp_path / "cut.tfrecord.gz"
  path.write_bytes(gz[:len(gz) * 3 // 4])
  read, (marker,) = _walk(path, gcs)
  assert 0 < read < written and marker.record == read
  assert marker.reason.startswith("damaged compressed stream (EOFError")
  # The marker names the first record not read: where its framing starts.
  assert marker.offset == sum(
      len(r) + 16 for r in next(tfrecord.read_batches(
          str(tmp_path / "source" / "part-00000-of-00001.tfrecord"), read)))
  assert read + (written - marker.record) == written


def test_concatenated_gzip_members_are_read_whole(gcs, tmp_path, columns):
  raw, written = _plain_records(tmp_path, columns)
  cut = len(raw) // 3 + 5  # Inside a record: members need not end on one.
  path = tmp_path / "members.tfrecord.gz"
  path.write_bytes(_gzip(raw[:cut]) + _gzip(raw[cut:]))
  assert _walk(path, gcs) == (written, [])


def test_walker_salvages_a_large_gzip_piece_up_to_its_damage(
    tmp_path, monkeypatch, columns):
  """Damage inside one large piece of compressed input: what was inflated
  before it in that piece is kept too."""
  from lossaudit import tfrecord

  monkeypatch.setattr(tfrecord, "GZIP_PIECE_BYTES", 1 << 30)
  raw, written = _plain_records(tmp_path, columns)
  path = tmp_path / "bad-crc.tfrecord.gz"
  path.write_bytes(_bad_crc(_gzip(raw)))
  items = list(tfrecord.read_batches(str(path), 1000, "gzip"))
  assert [len(items[0]), items[1].record, items[1].offset] == [
      written, written, len(raw)]


@_PLACES
def test_short_files_and_gzip_damage_through_the_pipeline(
    request, monkeypatch, tmp_path, columns, where):
  raw, written = _plain_records(tmp_path, columns)
  files = {"good.tfrecord": raw, "trailing.tfrecord": raw + b"\x07" * 3,
           "trailing.tfrecord.gz": _gzip(raw + b"\x07" * 11),
           "tiny.tfrecord": b"\x07" * 5,
           "bad-crc.tfrecord.gz": _bad_crc(_gzip(raw)),
           "junk.tfrecord.gz": _gzip(raw) + b"junk"}
  for name, data in files.items():
    (tmp_path / name).write_bytes(data)
  with TestPipeline() as p:
    read = p | ReadTFExampleBatches(
        _placed(request, monkeypatch, [tmp_path / n for n in files], where),
        _schema(), batch_size=100)
    assert_that(_summed(read["batches"], "All"), equal_to([
        (n, written) for n in files if n != "tiny.tfrecord"]), label="rows")
    assert_that(read[dead_letters.TAG] | beam.Map(
        lambda d: (d["source"].rsplit("/", 1)[-1], d["reason"],
                   d["error"].split(":")[0])), equal_to([
                       (n, "unreadable_stretch",
                        f"unreadable from record {r} (byte {b})")
                       for n, r, b in [
                           ("trailing.tfrecord", written, len(raw)),
                           ("trailing.tfrecord.gz", written, len(raw)),
                           ("tiny.tfrecord", 0, 0),
                           ("bad-crc.tfrecord.gz", written, len(raw)),
                           ("junk.tfrecord.gz", written, len(raw))]]),
                label="dead")



# Read in a child process: before the check, tf.data's plain-file reader
# allocated the crafted length and the process died (SIGSEGV).
_READ_CHILD = """
import json, sys
import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from tests.test_read import _schema
from lossaudit import dead_letters, tfrecord
from lossaudit.transforms.read import ReadTFExampleBatches

tfrecord.TF_DATA_MIN_BYTES = 0  # tf.data reads these small files too.
with TestPipeline() as p:
  read = p | ReadTFExampleBatches(sys.argv[1:], _schema(), batch_size=100)
  (read["batches"] | beam.Map(lambda e: ("rows", e[0], e[1].num_rows))
   | "Rows" >> beam.Map(lambda r: print(json.dumps(r), flush=True)))
  (read[dead_letters.TAG]
   | beam.Map(lambda d: ("dead", d["source"], d["reason"], d["error"]))
   | "Dead" >> beam.Map(lambda r: print(json.dumps(r), flush=True)))
"""


def _overlong(raw: bytes, length: int) -> bytes:
  """`raw`, then a header of `length` with a valid CRC and a few bytes."""
  import struct

  header = struct.pack("<Q", length)
  return raw + header + struct.pack("<I", tfrecord.masked_crc(header)) + (
      b"\x07" * 30)


def test_a_length_past_the_end_is_one_unreadable_stretch_not_a_crash(
    tmp_path, columns):
  import json
  import subprocess
  import sys

  from tests.helpers import REPO, audit_env

  raw, written = _plain_records(tmp_path, columns)
  files = {"good.tfrecord": raw,
           "overlong.tfrecord": _overlong(raw, 1 << 40),
           "overlong.tfrecord.gz": _gzip(_overlong(raw, 1 << 40)),
           "past-end.tfrecord": _overlong(raw, 1000)}
  for name, data in files.items():
    (tmp_path / name).write_bytes(data)
  child = subprocess.run(
      [sys.executable, "-c", _READ_CHILD] + [str(tmp_path / n)
                                            for n in files],
      cwd=REPO, env=audit_env(), capture_output=True, text=True, check=False)
  assert child.returncode == 0, child.stderr[-2000:]
  lines = [json.loads(line) for line in child.stdout.splitlines()]
  rows = {}
  for _, source, n in (line for line in lines if line[0] == "rows"):
    name = source.rsplit("/", 1)[-1]
    rows[name] = rows.get(name, 0) + n
  assert rows == {name: written for name in files}
  dead = sorted((d[1].rsplit("/", 1)[-1], d[2], d[3]) for d in lines
                if d[0] == "dead")
  where = f"unreadable from record {written} (byte {len(raw)}): truncated"
  assert dead == [
      ("overlong.tfrecord", "unreadable_stretch",
       f"{where} (42 trailing bytes; the record's header gives a length of"
       f" {1 << 40})"),
      ("overlong.tfrecord.gz", "unreadable_stretch",
       f"{where} (42 trailing bytes; the record's header gives a length of"
       f" {1 << 40})"),
      ("past-end.tfrecord", "unreadable_stretch",
       f"{where} (42 trailing bytes; the record's header gives a length of"
       " 1000)")]


def _label_record(label):
  import numpy as np

  return datasets.to_examples({
      "id": np.array([f"odd-{label}"]),
      "x": np.zeros((1, 16), np.float32),
      "label": np.array([label])})[0]


def test_probe_decodes_the_largest_group_of_agreeing_records():
  from lossaudit.formats.tfrecord import decode_examples

  ints = [_label_record(i) for i in range(3)]
  batch = decode_examples([_label_record(1.5)] + ints + [b"\xff"])
  assert (batch.num_rows, str(batch.schema.field("label").type)) == (
      3, "large_list<item: int64>")
  # A tie: the group of the first record that decodes.
  batch = decode_examples([b"\xff", _label_record(2.5), ints[0]])
  assert (batch.num_rows, str(batch.schema.field("label").type)) == (
      1, "large_list<item: float>")
  with pytest.raises(Exception):
    decode_examples([b"\xff", b"\xfe"])


def test_one_wrong_typed_label_among_the_first_records_is_one_dead_letter(
    tmp_path, columns, classifier_path, write_config):
  """Record 3 of an int-label file has a float label: the probe decodes
  the others, and the run dead-letters that one record."""
  import json

  import tensorflow as tf

  from lossaudit.pipelines import audit
  from tests.helpers import base_config

  written = 100
  records = datasets.to_examples({k: v[:written] for k, v in
                                  columns.items()})
  records[3] = _label_record(1.0)
  (tmp_path / "data").mkdir()
  with tf.io.TFRecordWriter(str(tmp_path / "data" / "part.tfrecord")) as w:
    for record in records:
      w.write(record)
  out = tmp_path / "out"
  assert audit.main(["--config", write_config(base_config(
      tmp_path / "data" / "*.tfrecord", classifier_path, out))]) == 0
  summary = json.loads((out / "summary.json").read_text())
  assert summary["dead_letter"]["by_reason"] == {"wrong_type": 1}
  assert (summary["examples_read"], summary["examples_scored"],
          summary["examples_dead_lettered"]) == (written, written - 1, 1)
  (dead,) = [json.loads(line) for line in next(
      (out / "dead_letter").iterdir()).read_text().splitlines()]
  assert (dead["id"], dead["reason"]) == ("odd-1.0", "wrong_type")
  assert dead["error"].startswith("feature 'label' has the wrong type:")


def test_wrong_typed_records_carry_their_id_and_name_the_feature(tmp_path):
  import numpy as np
  from tensorflow.core.example import example_pb2

  def record(id_kind, x_kind, label_kind):
    example = example_pb2.Example()
    feature = example.features.feature
    values = {"bytes_list": [b"r-7"], "int64_list": [7],
              "float_list": [7.0]}
    for name, kind in (("id", id_kind), ("x", x_kind),
                       ("label", label_kind)):
      getattr(feature[name], kind).value.extend(
          values[kind] * (16 if name == "x" else 1))
    return example.SerializeToString()

  good = datasets.to_examples({"id": np.array(["ok-0", "ok-1"]),
                               "x": np.zeros((2, 16), np.float32),
                               "label": np.array([1, 2])})
  bad_x = record("bytes_list", "bytes_list", "int64_list")
  bad_label = record("bytes_list", "float_list", "float_list")
  bad_id = record("float_list", "float_list", "int64_list")
  example = example_pb2.Example.FromString(bad_x)
  example.features.feature["id"].bytes_list.value[0] = b"\xffr-7"
  not_utf8 = example.SerializeToString()
  path = tmp_path / "mixed.tfrecord"
  import tensorflow as tf

  with tf.io.TFRecordWriter(str(path)) as w:
    for r in [good[0], bad_x, bad_label, bad_id, not_utf8, good[1]]:
      w.write(r)
  with TestPipeline() as p:
    read = p | ReadTFExampleBatches([str(path)], _schema(), batch_size=10,
                                    id_column="id")
    assert_that(_summed(read["batches"], "All"),
                equal_to([("mixed.tfrecord", 2)]), label="rows")
    assert_that(read[dead_letters.TAG] | beam.Map(
        lambda d: (d["id"], d["reason"], d["error"].split(":")[0])),
        equal_to([
            ("r-7", "wrong_type", "feature 'x' has the wrong type"),
            ("r-7", "wrong_type", "feature 'label' has the wrong type"),
            (None, "wrong_type", "feature 'id' has the wrong type"),
            (None, "wrong_type", "feature 'x' has the wrong type")]),
        label="dead")


def test_parquet_categorical_columns_are_read_as_their_values(tmp_path):
  path = tmp_path / "categorical.parquet"
  pq.write_table(pa.table({
      "id": ["a", "b", "c"],
      "text": pa.array(["good", "bad", "good"]).dictionary_encode(),
      "label": pa.array(["spam", "ham", "spam"]).dictionary_encode()}), path)
  assert pa.types.is_dictionary(pq.read_schema(path).field("label").type)
  with TestPipeline() as p:
    read = p | ReadParquetBatches([str(path)], ["id", "text", "label"],
                                  batch_size=10)
    assert_that(read["batches"] | beam.Map(
        lambda e: (str(e[1].schema.field("text").type),
                   str(e[1].schema.field("label").type),
                   e[1].column("label").to_pylist())),
                equal_to([("string", "string", ["spam", "ham", "spam"])]))
