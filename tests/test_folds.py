"""`lossaudit.folds.fold_of` and the `lossaudit folds` command."""

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lossaudit.folds import fold_of
from lossaudit.pipelines import cli
from tests.helpers import base_config

# FarmHash Fingerprint64 of the UTF-8 bytes of each id, as the `pyfarmhash`
# package (0.5.1) computes it: `farmhash.fingerprint64(id)`. A change here
# moves examples between folds and breaks every training split made before.
GOLDEN = {
    "a": 12917804110809363939,
    "id-0": 17063018083722726985,
    "id-1": 12795886349524972691,
    "": 11160318154034397263,
    "é": 693143013273849025,
}


def _fingerprints(ids):
  """FarmHash Fingerprint64 `(N,)` uint64, through `tf.fingerprint` (8
  little-endian bytes a string), not through `fold_of`'s hash op."""
  import tensorflow as tf

  digest = tf.fingerprint(tf.constant(ids, dtype=tf.string)).numpy()
  return np.frombuffer(digest.tobytes(), "<u8")


def test_golden_values():
  ids = list(GOLDEN)
  expected = np.array(list(GOLDEN.values()), dtype=np.uint64)
  np.testing.assert_array_equal(_fingerprints(ids), expected)
  for k in (2, 3, 5, 7, 10, 1000, 2**40 + 3):
    np.testing.assert_array_equal(fold_of(ids, k),
                                  (expected % np.uint64(k)).astype(np.int64))
  np.testing.assert_array_equal(fold_of(ids, 10), [9, 5, 1, 3, 5])


def test_matches_fingerprint64_mod_k_deterministic_in_range():
  rng = np.random.default_rng(0)
  ids = [f"ex-{i:05d}" for i in range(5000)] + [
      "".join(map(chr, rng.integers(32, 0xD000, rng.integers(0, 40))))
      for _ in range(1000)]
  for k in (2, 5, 13):
    folds = fold_of(ids, k)
    assert folds.dtype == np.int64 and folds.shape == (len(ids),)
    assert folds.min() >= 0 and folds.max() < k
    np.testing.assert_array_equal(
        folds, (_fingerprints(ids) % np.uint64(k)).astype(np.int64))
    np.testing.assert_array_equal(folds, fold_of(list(reversed(ids)),
                                                 k)[::-1])


def test_roughly_balanced():
  k, n = 5, 10_000
  counts = np.bincount(fold_of([f"user-{i}" for i in range(n)], k),
                       minlength=k)
  expected = n / k
  chi_square = ((counts - expected) ** 2 / expected).sum()
  assert chi_square < 25, counts  # 4 degrees of freedom: p < 1e-4.


@pytest.mark.parametrize("make", [
    list, tuple,
    lambda ids: np.array(ids),
    lambda ids: np.array(ids, dtype=object),
    lambda ids: np.array([s.encode() for s in ids]),
    lambda ids: np.array([s.encode() for s in ids], dtype=object),
    lambda ids: [s.encode() for s in ids],
    pa.array,
    lambda ids: pa.array(ids, pa.large_string()),
    lambda ids: pa.array([s.encode() for s in ids], pa.binary()),
    lambda ids: pa.chunked_array([ids[:2], ids[2:]]),
    lambda ids: pa.array(ids).dictionary_encode(),
], ids=["list", "tuple", "numpy_str", "numpy_object", "numpy_bytes",
        "numpy_object_bytes", "list_bytes", "arrow", "arrow_large",
        "arrow_binary", "arrow_chunked", "arrow_dictionary"])
def test_input_types_agree(make):
  ids = list(GOLDEN)
  np.testing.assert_array_equal(fold_of(make(ids), 7), fold_of(ids, 7))


def test_trailing_nul_bytes_are_hashed():
  assert fold_of([b"a\x00"], 1000)[0] != fold_of([b"a"], 1000)[0]


def test_empty():
  assert fold_of([], 3).shape == (0,)
  assert fold_of(pa.array([], pa.string()), 3).dtype == np.int64


@pytest.mark.parametrize("k, error", [
    (1, ValueError), (0, ValueError), (-3, ValueError), (True, TypeError),
    (2.0, TypeError), ("5", TypeError), (None, TypeError)])
def test_bad_num_folds(k, error):
  with pytest.raises(error, match=r"num_folds: expected an integer >= 2\."
                     r" Received: "):
    fold_of(["a"], k)


@pytest.mark.parametrize("ids", [
    ["a", None, "b", None],
    np.array(["a", None, "b", None], dtype=object),
    pa.array(["a", None, "b", None]),
    pa.chunked_array([["a", None], ["b", None]]),
])
def test_null_ids_are_refused(ids):
  with pytest.raises(ValueError, match=r"ids: .* 2 of 4 are null\. Received:"
                     r" None at positions \[1, 3\]"):
    fold_of(ids, 3)


@pytest.mark.parametrize("ids", [
    np.array([1, 2]), pa.array([1, 2]), ["a", 3], "abc"])
def test_ids_that_are_not_strings(ids):
  with pytest.raises(TypeError, match=r"^ids: expected "):
    fold_of(ids, 3)


# `lossaudit folds` end to end, in-process through the CLI entry point.


def _config(write_config, pattern, fmt, folds=3, **sections):
  config = base_config(pattern, "models/fold{fold}.keras", "unused", **sections)
  config["input"]["format"] = fmt
  config["model"]["folds"] = folds
  return write_config(config)


def _folds_cli(config, output, *extra):
  return cli.main(["folds", "--config", config, "--output", str(output),
                   *extra])


def _check_output(output, expected_ids, k=3):
  table = pq.read_table(str(output))  # Hidden files (the marker) left out.
  assert table.schema == pa.schema([("id", pa.string()), ("fold", pa.int64())])
  ids = table["id"].to_numpy(zero_copy_only=False)
  assert sorted(ids) == sorted(expected_ids)  # Every id, once.
  np.testing.assert_array_equal(table["fold"].to_numpy(), fold_of(ids, k))


def test_folds_of_tfrecords(tfrecord_dir, columns, write_config, tmp_path,
                            capsys):
  config = _config(write_config, tfrecord_dir / "*.tfrecord.gz", "tfrecord")
  output = tmp_path / "folds"
  assert _folds_cli(config, output) == 0
  _check_output(output, columns["id"])
  assert capsys.readouterr().out.strip() == (
      f"lossaudit: wrote 3,000 rows (id, fold) to {output}; skipped 0 rows"
      " (0 without an id, 0 whose id is not UTF-8)")


def test_folds_of_parquet_rerun_replaces_shards(parquet_dir, columns,
                                                write_config, tmp_path):
  config = _config(write_config, parquet_dir / "*.parquet", "parquet",
                   folds=5)
  output = tmp_path / "folds"
  assert _folds_cli(config, output, "--set", "output.num_shards=3") == 0
  assert len([n for n in os.listdir(output) if n.startswith("part-")]) == 3
  assert _folds_cli(config, output, "--set", "output.num_shards=1") == 0
  assert sorted(os.listdir(output)) == [".lossaudit-run.json",
                                        "part-00000-of-00001.parquet"]
  _check_output(output, columns["id"], k=5)


def test_rows_without_a_good_id_are_skipped_and_counted(
    write_config, tmp_path, capsys):
  data = tmp_path / "data"
  data.mkdir()
  pq.write_table(pa.table({
      "id": pa.array([b"a", None, b"\xff\xfe", b"b"], pa.binary()),
      "label": [0, 1, 2, 3]}), str(data / "p.parquet"))
  config = _config(write_config, data / "*.parquet", "parquet")
  output = tmp_path / "folds"
  assert _folds_cli(config, output) == 0
  _check_output(output, ["a", "b"])
  assert capsys.readouterr().out.strip() == (
      f"lossaudit: wrote 2 rows (id, fold) to {output}; skipped 2 rows (1"
      " without an id, 1 whose id is not UTF-8)")


def _exit_2(capsys, *args):
  assert _folds_cli(*args) == 2
  err = capsys.readouterr().err
  assert err.startswith("lossaudit: error: ") and err.count("\n") == 1, err
  assert "Traceback" not in err
  return err


def test_without_model_folds(tfrecord_dir, write_config, tmp_path, capsys):
  config = write_config(base_config(tfrecord_dir / "*.tfrecord.gz",
                                    "model.keras", "unused"))
  err = _exit_2(capsys, config, tmp_path / "folds")
  assert "model.folds: expected K, an integer >= 2" in err
  assert "Received: None" in err
  assert not (tmp_path / "folds").exists()


def test_missing_input(write_config, tmp_path, capsys):
  config = _config(write_config, tmp_path / "nothing" / "*.tfrecord.gz",
                   "tfrecord")
  err = _exit_2(capsys, config, tmp_path / "folds")
  assert "input.pattern: no file matches" in err
  assert not (tmp_path / "folds").exists()


def test_missing_id_column(tfrecord_dir, write_config, tmp_path, capsys):
  config = _config(write_config, tfrecord_dir / "*.tfrecord.gz", "tfrecord",
                   input={"id_column": "uid"})
  err = _exit_2(capsys, config, tmp_path / "folds")
  assert "input.id_column: column 'uid' not found" in err


@pytest.mark.parametrize("layout", [
    {"notes.txt": "mine"},
    # lossaudit's marker, but files `lossaudit folds` does not write (an
    # audit's output.dir): refused too, nothing deleted.
    {".lossaudit-run.json": "{}", "losses/part-00000-of-00001.parquet": "x",
     "notes.txt": "mine"},
])
def test_foreign_output_is_refused_and_left_intact(
    layout, tfrecord_dir, write_config, tmp_path, capsys):
  output = tmp_path / "mine"
  for name, text in layout.items():
    (output / name).parent.mkdir(parents=True, exist_ok=True)
    (output / name).write_text(text)
  config = _config(write_config, tfrecord_dir / "*.tfrecord.gz", "tfrecord")
  err = _exit_2(capsys, config, output)
  assert "--output: expected a new or empty directory" in err
  assert f"Received: {str(output)!r}" in err
  found = {os.path.relpath(os.path.join(root, n), output): None
           for root, _, names in os.walk(output) for n in names}
  assert sorted(found) == sorted(layout)
  assert (output / "notes.txt").read_text() == "mine"


def test_with_a_fold_column(tfrecord_dir, write_config, tmp_path, capsys):
  config = _config(write_config, tfrecord_dir / "*.tfrecord.gz", "tfrecord",
                   input={"fold_column": "label"})
  err = _exit_2(capsys, config, tmp_path / "folds")
  assert err.strip() == (
      "lossaudit: error: input.fold_column: expected null for lossaudit"
      " folds (an audit of this config reads the folds from that column, not"
      " from fold_of). Received: 'label'")


def test_without_an_id_column(tfrecord_dir, write_config, tmp_path, capsys):
  config = _config(write_config, tfrecord_dir / "*.tfrecord.gz", "tfrecord",
                   input={"id_column": None, "fold_column": "label"})
  err = _exit_2(capsys, config, tmp_path / "folds")
  assert "input.id_column: expected the id column" in err
