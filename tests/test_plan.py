"""`lossaudit plan` and `lossaudit.cost`: a run's passes, bytes and hours."""

import importlib.util
import io
import os

import numpy as np
import pyarrow as pa
import pytest

from lossaudit import cost
from lossaudit.config import load_config
from lossaudit.pipelines import plan as plan_command
from tests.helpers import REPO, predictions_config, write_predictions


def _spilling_config(pattern, output_dir, **flag):
  """A loss quantile and prune_by_noise_rate: three passes over scratch."""
  return predictions_config(pattern, output_dir, flag=dict(
      {"loss_threshold": None, "loss_quantile": 0.95,
       "label_issues": "prune_by_noise_rate"}, **flag))


@pytest.fixture
def spilling(tmp_path, write_config):
  """`(config path, input glob)`: 4 rows of 3 classes, ids of 10 chars."""
  write_predictions(tmp_path / "in.parquet",
                    [f"id-{i:07d}" for i in range(4)], [0, 1, 2, 0],
                    np.full((4, 3), 1 / 3))
  pattern = str(tmp_path / "*.parquet")
  return write_config(_spilling_config(pattern, tmp_path / "out")), pattern


def _ipc_stream_bytes(batch):
  """What an Arrow IPC stream writer writes for `batch`, less the schema
  message and the end-of-stream marker."""
  sink = io.BytesIO()
  with pa.ipc.new_stream(sink, batch.schema) as writer:
    writer.write_batch(batch)
  empty = io.BytesIO()
  with pa.ipc.new_stream(empty, batch.schema):
    pass
  return len(sink.getvalue()) - len(empty.getvalue())


def test_spill_bytes_are_the_ipc_bytes_written(spilling):
  config = load_config(spilling[0], [])
  rows, k, ids = 2 * 256 + 10, 7, 12  # predictions_config: batches of 256
  plan = cost.plan_cost(config, rows, k, id_length=ids)

  def batch(n):
    probs = pa.array(np.zeros(n * k, np.float32))
    return pa.RecordBatch.from_pydict({
        "id": ["x" * ids] * n, "loss": np.zeros(n),
        "given_label": np.zeros(n, np.int64),
        "predicted_label": np.zeros(n, np.int64),
        "self_confidence": np.zeros(n), "margin": np.zeros(n),
        "probs": pa.FixedSizeListArray.from_arrays(probs, k)})

  expected = 2 * _ipc_stream_bytes(batch(256)) + _ipc_stream_bytes(batch(10))
  assert plan.spill_bytes == expected
  assert plan.scratch_passes == 3  # flagging, the joint, the cells
  assert plan.reread_bytes == 3 * expected
  assert plan.input_passes == 1


def test_golden_plan_at_a_billion_rows(spilling):
  config = load_config(spilling[0], [])
  plan = cost.plan_cost(config, 10**9, 100, id_length=16,
                        input_bytes_per_row=400, rows_per_second=25_000)
  assert plan.bundles == 1000
  # Scored row: id 16 + 4 (offset), 5 numbers of 8 bytes, 100 float32;
  # and under 512 bytes of message metadata a batch of 256 rows.
  assert 460 < plan.scored_row_bytes < 460 + 512 / 256
  shuffled = {s.name: s.bytes for s in plan.shuffles}
  # A sketch at epsilon 0.001: (3264 - 3 * 349) / 0.001 + 300 bytes, one
  # per bundle.
  assert shuffled["LossStats"] == 1000 * 2_217_300
  # A joint of 100 × 100 int64, the label counts, three array headers.
  assert shuffled["FindLabelIssues/SumJoint"] == 1000 * (80_000 + 800 + 450)
  # 100,000 candidates a bundle (issue rate 0.1) of 8 + 6 + 16 bytes, and
  # nearly all 9,900 cells at 300 bytes.
  assert shuffled["FindLabelIssues/TopNPerCell"] == pytest.approx(
      1000 * (100_000 * 30 + 9_900 * 300), rel=1e-4)
  assert plan.worker_hours == pytest.approx(10**9 / 25_000 / 3600)
  assert plan.input_bytes == 400 * 10**9
  rules = dict(plan.side_inputs)["FindLabelIssues rules"]
  assert 9 * 100**2 + 5 * 100**2 < rules < 10**6


def test_no_global_rule_spills_nothing(tmp_path, write_config):
  path = write_config(predictions_config(str(tmp_path / "*.parquet"),
                                         tmp_path / "out"))
  plan = cost.plan_cost(load_config(path, []), 10**6, 10)
  assert (plan.scratch_passes, plan.spill_bytes, plan.reread_bytes) == (
      0, 0, 0)


def test_rows_are_shuffled_only_with_num_shards(spilling):
  sharded = cost.plan_cost(load_config(spilling[0], ["output.num_shards=4"]),
                           10**6, 10)
  unsharded = cost.plan_cost(load_config(spilling[0], []), 10**6, 10)
  assert [s.per for s in sharded.shuffles].count("row") == 1
  assert "row" not in [s.per for s in unsharded.shuffles]
  assert sharded.shuffle_bytes - unsharded.shuffle_bytes == (
      unsharded.spill_bytes)


def test_plan_prints_the_figures_with_classes_from_the_input(spilling,
                                                             capsys):
  assert plan_command.main(["--config", spilling[0], "--rows", "1000000"]) == 0
  out = capsys.readouterr().out
  lines = out.splitlines()
  assert lines[0].startswith("rows 1,000,000, classes 3, bundles 1")
  assert "passes over the scratch  3" in lines
  # Ids of 10 characters: 10 + 4 + 40 + 12 bytes a scored row, and ~2 of
  # a batch's message metadata.
  assert "(scored row: 68 bytes)" in lines[0]
  assert any(line.startswith("spilled to scratch       67.") for line in lines)
  # 1M rows at 30,000 a second: 33 s, 0.009 h.
  assert lines[-1].startswith("worker-hours             0.009 (at 30,000")


@pytest.mark.parametrize("flags, message", [
    (["--rows", "0"], "--rows: expected an integer >= 1. Received: '0'"),
    (["--rows", "many"], "--rows: expected an integer >= 1. Received: 'many'"),
    (["--rows", "10", "--classes", "-1"],
     "--classes: expected an integer >= 0. Received: '-1'"),
    (["--rows", "10", "--rows-per-second", "0"],
     "--rows-per-second: expected a number > 0. Received: '0'"),
    (["--rows", "10", "--bytes-per-row", "nan"],
     "--bytes-per-row: expected a number > 0. Received: 'nan'"),
    (["--rows", "10", "--rows-per-bundle", "1.5"],
     "--rows-per-bundle: expected an integer >= 1. Received: '1.5'"),
    (["--rows", "10", "--issue-rate", "2"],
     "--issue-rate: expected a number > 0 and <= 1. Received: '2'"),
    (["--rows", "10", "--classes", "5"],
     "--classes: expected 3, as model.predictions_column 'p' in the input's"
     " first file has it. Received: 5"),
])
def test_a_bad_flag_exits_2_naming_it(spilling, capsys, flags, message):
  assert plan_command.main(["--config", spilling[0]] + flags) == 2
  err = capsys.readouterr().err
  assert err == f"lossaudit: error: {message}\n"


def test_an_input_not_read_is_said(spilling, tmp_path, capsys):
  missing = str(tmp_path / "nothing-*.parquet")
  assert plan_command.main(["--config", spilling[0], "--rows", "10",
                            "--classes", "3", "--set",
                            f"input.pattern={missing}"]) == 0
  assert capsys.readouterr().err == (
      "lossaudit: warning: no input file read for its size (parquet input,"
      f" input.pattern {missing!r}); planned at 1,000 bytes a row: pass"
      " --bytes-per-row\n")


def test_label_issues_need_a_classification_loss(spilling, capsys):
  assert plan_command.main(["--config", spilling[0], "--rows", "10",
                            "--set", "loss.name=mse"]) == 2
  assert capsys.readouterr().err == (
      "lossaudit: error: flag.label_issues: needs a classification loss"
      " (sparse or categorical crossentropy, or binary crossentropy on one"
      " sigmoid output). Received: 'prune_by_noise_rate' with loss"
      " ['mean_squared_error']\n")


def test_label_issues_need_two_classes_or_more(tmp_path, write_config,
                                               capsys):
  config = predictions_config(str(tmp_path / "none-*.tfrecord"),
                              tmp_path / "out", fmt="tfrecord",
                              flag={"label_issues": "confident_learning"})
  assert plan_command.main(["--config", write_config(config), "--rows", "10",
                            "--classes", "0"]) == 2
  assert capsys.readouterr().err == (
      "lossaudit: error: --classes: expected at least 2 with"
      " flag.label_issues (confident_learning). Received: 0\n")


def test_classes_are_asked_for_when_nothing_tells_them(tmp_path,
                                                       write_config, capsys):
  config = predictions_config(str(tmp_path / "none-*.tfrecord"),
                              tmp_path / "out", fmt="tfrecord")
  path = write_config(config)
  assert plan_command.main(["--config", path, "--rows", "10"]) == 2
  err = capsys.readouterr().err
  assert err.startswith("lossaudit: error: --classes: expected the number of"
                        " classes (0: not a classifier);")
  assert err.count("\n") == 1
  assert plan_command.main(["--config", path, "--rows", "10",
                            "--classes", "0"]) == 0


def test_a_bad_config_key_exits_2(spilling, capsys):
  assert plan_command.main(["--config", spilling[0], "--rows", "10",
                            "--set", "flag.nope=1"]) == 2
  err = capsys.readouterr().err
  assert err.startswith("lossaudit: error: flag.nope")
  assert err.count("\n") == 1


def test_missing_rows_exits_2_naming_it(spilling, capsys):
  with pytest.raises(SystemExit) as stopped:
    plan_command.main(["--config", spilling[0]])
  assert stopped.value.code == 2
  err = capsys.readouterr().err
  assert err == ("lossaudit plan: error: the following arguments are"
                 " required: --rows\n")


def _plan_check():
  spec = importlib.util.spec_from_file_location(
      "plan_check", os.path.join(REPO, "benchmarks", "plan_check.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_plan_matches_a_measured_run(tmp_path):
  """A real 20,000-row audit's spill counters and shuffled bytes, against
  the plan (benchmarks/plan_check.py runs the same at 1M rows)."""
  check = _plan_check()
  measured = check.measure(20_000, 10, str(tmp_path))
  counters = measured["counters"]
  assert counters["spill_rows_written"] == 20_000
  assert counters["spill_rows_reread"] == 3 * 20_000
  # Each row: id of 15 characters + 4, 5 numbers of 8 bytes, 10 float32.
  assert 20_000 * 99 < measured["spill_bytes_written"] < 20_000 * 100
  plan = cost.plan_cost(measured["config"], 20_000, 10,
                        input_bytes_per_row=measured["input_bytes_per_row"],
                        id_length=15)
  assert plan.spill_bytes == pytest.approx(measured["spill_bytes_written"],
                                           rel=0.2)
  assert plan.reread_bytes == pytest.approx(measured["spill_bytes_reread"],
                                            rel=0.2)
  assert plan.shuffle_bytes == pytest.approx(measured["shuffle_bytes"],
                                             rel=0.2)


@pytest.mark.slow
def test_plan_matches_a_measured_million_row_run(tmp_path):
  check = _plan_check()
  assert check.compare(1_000_000, 100, str(tmp_path), 0.2)


def test_prune_by_noise_rate_joint_carries_the_cells_margin_bins(spilling):
  config = load_config(spilling[0], [])
  assert config.flag.label_issues == "prune_by_noise_rate"
  plan = cost.plan_cost(config, 10**6, 10, id_length=16)
  shuffled = {s.name: s.bytes for s in plan.shuffles}
  # 10 × 10 int64 joint, 10 label counts, and 32 margin bins a cell (as
  # `confident.margin_bin_count(10)` gives), with four array headers.
  assert shuffled["FindLabelIssues/SumJoint"] == (
      800 + 80 + 10 * 10 * 32 * 8 + 4 * 150)
