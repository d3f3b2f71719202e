"""End-to-end audits on the DirectRunner, checked against Keras and numpy."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from lossaudit.errors import ConfigError
from lossaudit.pipelines import audit, command
from tests.helpers import base_config


def _read(out, kind):
  return pq.read_table(os.path.join(out, kind)).to_pandas()


def _keras_losses(model_path, columns):
  model = keras.models.load_model(model_path, compile=False)
  probs = model.predict(columns["x"], verbose=0)
  loss = keras.losses.SparseCategoricalCrossentropy(reduction=None)
  return np.asarray(loss(columns["label"], probs)), probs


@pytest.fixture(scope="module")
def tfrecord_run(tmp_path_factory, tfrecord_dir, classifier_path):
  out = tmp_path_factory.mktemp("out_tfrecord")
  config = base_config(tfrecord_dir / "*.tfrecord.gz", classifier_path, out,
                       flag={"loss_quantile": 0.95, "loss_threshold": 2.5,
                             "top_k": 25},
                       stats={"slice_by": "group", "epsilon": 0.001})
  path = tmp_path_factory.mktemp("cfg") / "config.yaml"
  path.write_text(json.dumps(config))
  summary = audit.run(["--config", str(path)])
  return out, summary


def test_losses_match_keras(tfrecord_run, columns, classifier_path):
  out, _ = tfrecord_run
  losses = _read(out, "losses").set_index("id").loc[columns["id"]]
  expected, probs = _keras_losses(classifier_path, columns)
  np.testing.assert_allclose(losses["loss"], expected, rtol=1e-5, atol=1e-7)
  np.testing.assert_array_equal(losses["given_label"], columns["label"])
  np.testing.assert_array_equal(losses["predicted_label"],
                                probs.argmax(axis=1))
  self_conf = probs[np.arange(len(probs)), columns["label"]]
  np.testing.assert_allclose(losses["self_confidence"], self_conf, rtol=1e-6)
  others = probs.copy()
  others[np.arange(len(probs)), columns["label"]] = -np.inf
  np.testing.assert_allclose(losses["margin"], self_conf - others.max(axis=1),
                             rtol=1e-5, atol=1e-7)


def test_counts_add_up(tfrecord_run, columns):
  out, summary = tfrecord_run
  assert summary["examples_read"] == len(columns["id"])
  assert summary["examples_read"] == (summary["examples_scored"] +
                                      summary["examples_dead_lettered"])
  assert summary["examples_dead_lettered"] == 0
  assert summary["loss"]["count"] + summary["loss"]["nan_count"] == len(
      columns["id"])
  assert sum(s["count"] for s in summary["slices"].values()) == len(
      columns["id"])
  assert len(_read(out, "losses")) == len(columns["id"])


def test_quantiles_within_epsilon_rank_error(tfrecord_run):
  out, summary = tfrecord_run
  losses = np.sort(_read(out, "losses")["loss"].to_numpy())
  n, eps = len(losses), summary["loss"]["epsilon"]
  for key, value in summary["loss"]["quantiles"].items():
    lo = np.searchsorted(losses, value, side="left") / n
    hi = np.searchsorted(losses, value, side="right") / n
    assert lo - eps <= float(key) <= hi + eps, (key, value, lo, hi)
  np.testing.assert_allclose(summary["loss"]["mean"], losses.mean(), rtol=1e-9)
  np.testing.assert_allclose(summary["loss"]["std"], losses.std(), rtol=1e-9)
  assert summary["loss"]["min"] == losses.min()
  assert summary["loss"]["max"] == losses.max()


def test_slice_quantiles_within_epsilon(tfrecord_run, columns):
  out, summary = tfrecord_run
  losses = _read(out, "losses").set_index("id").loc[columns["id"], "loss"]
  for name, stats in summary["slices"].items():
    values = np.sort(losses[columns["group"] == name].to_numpy())
    assert stats["count"] == len(values)
    for key, value in stats["quantiles"].items():
      lo = np.searchsorted(values, value, side="left") / len(values)
      hi = np.searchsorted(values, value, side="right") / len(values)
      assert lo - 0.001 <= float(key) <= hi + 0.001


def test_flagged_exactly_above_thresholds(tfrecord_run):
  out, summary = tfrecord_run
  losses = _read(out, "losses")
  flagged = _read(out, "flagged").set_index("id")
  thresholds = summary["thresholds"]
  q95 = summary["loss"]["quantiles"]["0.95"]
  assert thresholds["loss_quantile"] == q95
  by_quantile = set(losses.loc[losses["loss"] > q95, "id"])
  by_threshold = set(losses.loc[losses["loss"] > 2.5, "id"])
  ranked = losses.sort_values(["loss", "id"], ascending=[False, True])
  top = set(ranked["id"].iloc[:25])
  assert set(flagged.index) == by_quantile | by_threshold | top
  for reason, ids in (("loss_quantile", by_quantile),
                      ("loss_threshold", by_threshold), ("top_k", top)):
    got = {i for i, r in flagged["reasons"].items() if reason in list(r)}
    assert got == ids, reason
    assert summary["flagged"]["by_reason"][reason] == len(ids)
  assert summary["flagged"]["total"] == len(flagged)
  np.testing.assert_array_equal(flagged["score"], flagged["loss"])


def test_every_contract_output_exists(tfrecord_run):
  out, summary = tfrecord_run
  for name in ("summary.json", "report.html"):
    assert os.path.isfile(os.path.join(out, name))
  for kind, suffix in (("losses", ".parquet"), ("flagged", ".parquet"),
                       ("dead_letter", ".jsonl")):
    files = os.listdir(os.path.join(out, kind))
    assert files and all(f.startswith("part-") and f.endswith(suffix)
                         for f in files)
  assert summary["runner"] == "DirectRunner"
  assert summary["devices"] and all(
      d.endswith(("/CPU:0", "/GPU:0")) for d in summary["devices"])
  assert not os.path.exists(os.path.join(out, ".scratch"))
  assert summary["config"]["flag"]["top_k"] == 25
  html = open(os.path.join(out, "report.html")).read()
  assert 'id="histogram"' in html and 'id="quantiles"' in html
  assert 'id="slices"' in html and 'id="flagged"' in html


def test_parquet_and_tfrecord_copies_agree(tmp_path, tfrecord_run, parquet_dir,
                                           classifier_path, write_config):
  tf_out, tf_summary = tfrecord_run
  out = tmp_path / "out"
  config = base_config(parquet_dir / "*.parquet", classifier_path, out,
                       flag={"loss_quantile": 0.95, "loss_threshold": 2.5,
                             "top_k": 25},
                       stats={"slice_by": "group", "epsilon": 0.001})
  config["input"]["format"] = "parquet"
  summary = audit.run(["--config", write_config(config)])
  for key in ("examples_read", "examples_scored", "thresholds", "flagged"):
    assert summary[key] == tf_summary[key], key
  for key, value in tf_summary["loss"].items():
    if isinstance(value, str):
      assert summary["loss"][key] == value, key
    else:
      assert summary["loss"][key] == pytest.approx(value, rel=1e-12), key
  assert summary["slices"].keys() == tf_summary["slices"].keys()
  pq_losses = _read(out, "losses").sort_values("id").reset_index(drop=True)
  tf_losses = _read(tf_out, "losses").sort_values("id").reset_index(drop=True)
  assert pq_losses.equals(tf_losses)
  assert set(_read(out, "flagged")["id"]) == set(_read(tf_out, "flagged")["id"])


def test_saved_model_and_fingerprint_ids(tmp_path, tfrecord_dir,
                                         saved_model_path, classifier_path,
                                         columns, write_config):
  out = tmp_path / "out"
  config = base_config(tfrecord_dir / "*.tfrecord.gz", saved_model_path, out)
  config["input"]["id_column"] = None
  summary = audit.run(["--config", write_config(config)])
  assert summary["examples_scored"] == len(columns["id"])
  losses = _read(out, "losses")
  assert losses["id"].nunique() == len(columns["id"])
  expected, _ = _keras_losses(classifier_path, columns)
  np.testing.assert_allclose(np.sort(losses["loss"]), np.sort(expected),
                             rtol=1e-5, atol=1e-7)


@pytest.mark.slow  # test_ownership reruns into a run's own directory too.
def test_rerun_replaces_outputs(tmp_path, tfrecord_dir, classifier_path,
                                write_config):
  out = tmp_path / "out"
  config = base_config(tfrecord_dir / "*.tfrecord.gz", classifier_path, out)
  config["output"]["num_shards"] = 3
  audit.run(["--config", write_config(config)])
  assert len(os.listdir(out / "losses")) == 3
  config["output"]["num_shards"] = 2
  summary = audit.run(["--config", write_config(config)])
  assert sorted(os.listdir(out / "losses")) == [
      "part-00000-of-00002.parquet", "part-00001-of-00002.parquet"]
  assert len(_read(out, "losses")) == summary["examples_scored"]


@pytest.mark.parametrize("change, message", [
    ({"input": {"pattern": "/nonexistent/*.tfrecord"}},
     r"input.pattern: no file matches '/nonexistent/\*.tfrecord'"),
    ({"input": {"label_column": "lbl"}},
     r"input.label_column: column 'lbl' not found in the first 64 records"),
    ({"input": {"id_column": "key"}},
     r"input.id_column: column 'key' not found"),
    ({"model": {"path": "/nonexistent/model.keras"}},
     r"model.path: expected a .keras file or a SavedModel directory."
     r" Received: '/nonexistent/model.keras' \(no such file"),
    ({"input": {"feature_columns": ["target"]}},
     r"input: none of the first 64 records of .* can be scored; first"
     r" problem: feature 'target' has 1 values, expected 16"),
    ({"loss": {"name": "categorical_crossentropy"}},
     r"first problem: label 'label' has 1 values, expected 5"),
    ({"loss": {"custom": "tests.custom_losses:batch_mean"}},
     r"loss.custom: 'tests.custom_losses:batch_mean' must return one loss per"
     r" example, shape \(64,\); it returned shape \(\)"),
    ({"loss": {"custom": "tests.custom_losses:per_class_mean"}},
     r"loss.custom: 'tests.custom_losses:per_class_mean' must return one loss"
     r" per example, shape \(64,\); it returned shape \(5,\)"),
    ({"loss": {"custom": "tests.custom_losses:nowhere"}},
     r"loss.custom: could not build the loss: AttributeError"),
])
def test_setup_errors_stop_before_running(tmp_path, tfrecord_dir,
                                          classifier_path, write_config,
                                          change, message):
  config = base_config(tfrecord_dir / "*.tfrecord.gz", classifier_path,
                       tmp_path / "out", **change)
  with pytest.raises(ConfigError, match=message):
    audit.run(["--config", write_config(config)])
  assert not (tmp_path / "out").exists()


def test_label_out_of_range_and_missing_features_are_dead_lettered(
    tmp_path, classifier_path, write_config):
  from lossaudit import datasets
  from tests.helpers import make_columns

  cols = make_columns(n=300, seed=5)
  cols["label"][[3, 50]] = [7, -1]
  data = tmp_path / "data"
  datasets.write_tfrecords(str(data), cols, num_shards=2, compression=None)
  bad = {"id": np.array(["broken"]), "label": np.array([1])}
  datasets.write_tfrecords(str(data), bad, num_shards=1, compression=None,
                           prefix="zz-missing")
  out = tmp_path / "out"
  config = base_config(data / "*.tfrecord", classifier_path, out)
  summary = audit.run(["--config", write_config(config)])
  assert summary["examples_read"] == 301
  assert summary["examples_dead_lettered"] == 3
  assert summary["examples_scored"] == 298
  dead = [json.loads(line) for f in sorted(os.listdir(out / "dead_letter"))
          for line in open(out / "dead_letter" / f)]
  by_id = {d["id"]: d for d in dead}
  assert by_id["ex-00003"]["error"] == (
      "label 7 out of range: expected an integer class in [0, 5)")
  assert by_id["ex-00050"]["error"].startswith("label -1 out of range")
  assert by_id["broken"]["error"] == "missing feature 'x'"
  assert summary["dead_letter"]["by_reason"] == {
      "label_out_of_range": 2, "missing_feature": 1}
  assert by_id["broken"]["source"].endswith(
      "zz-missing-00000-of-00001.tfrecord")


def test_cli_exit_codes(tmp_path, tfrecord_dir, classifier_path, write_config):
  out = tmp_path / "out"
  config = base_config(tfrecord_dir / "*.tfrecord.gz", classifier_path, out)
  path = write_config(config)
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  bad = subprocess.run(
      [sys.executable, "-m", "lossaudit.pipelines.audit", "--config", path,
       "--set",
       "stats.epsilon=2"], capture_output=True, text=True, env=env)
  assert bad.returncode == 2
  assert bad.stderr.strip().splitlines()[-1] == (
      "lossaudit: error: stats.epsilon: expected a number in [1e-06, 0.5]."
      " Received: 2")
  assert "Traceback" not in bad.stderr
  good = subprocess.run(
      [sys.executable, "-m", "lossaudit.pipelines.cli", "run", "--config", path,
       "--set", "flag.top_k=3", "--direct_num_workers=1"],
      capture_output=True, text=True, env=env)
  assert good.returncode == 0, good.stderr[-2000:]
  assert f"Outputs in {out}" in good.stdout
  summary = json.loads((out / "summary.json").read_text())
  assert summary["flagged"]["by_reason"]["top_k"] == 3


def test_non_finite_losses_counted_and_flagged(tmp_path, regressor_path,
                                               write_config):
  from lossaudit import datasets
  from tests.helpers import make_columns

  cols = make_columns(n=200, seed=9)
  cols["target"][5] = np.nan
  cols["target"][17] = np.inf
  datasets.write_tfrecords(str(tmp_path / "data"), cols, num_shards=2)
  out = tmp_path / "out"
  config = base_config(tmp_path / "data" / "*", regressor_path, out,
                       loss={"name": "mean_squared_error"},
                       flag={"loss_quantile": None})
  config["input"]["label_column"] = "target"
  summary = audit.run(["--config", write_config(config)])
  assert summary["examples_scored"] == 200
  assert summary["loss"]["nan_count"] == 2
  assert summary["loss"]["count"] == 198
  assert all(np.isfinite(v) for v in summary["loss"]["quantiles"].values())
  flagged = _read(out, "flagged")
  assert sorted(flagged["id"]) == ["ex-00005", "ex-00017"]
  assert [list(r) for r in flagged["reasons"]] == [["non_finite"]] * 2
  assert summary["flagged"]["by_reason"] == {"non_finite": 2}


@pytest.mark.slow  # Two worker processes each load TensorFlow (~12 s).
def test_two_worker_processes_give_the_same_results(tmp_path, tfrecord_dir,
                                                    classifier_path,
                                                    write_config):
  outs = {}
  for workers in (1, 2):
    out = tmp_path / f"w{workers}"
    config = base_config(tfrecord_dir / "*.gz", classifier_path, out,
                         flag={"loss_quantile": 0.9, "top_k": 7},
                         stats={"slice_by": "group"})
    argv = ["--config", write_config(config, f"w{workers}.yaml")]
    if workers > 1:
      argv += ["--direct_num_workers=2",
               "--direct_running_mode=multi_processing"]
    outs[workers] = (audit.run(argv), out)
  (one, out_one), (two, out_two) = outs[1], outs[2]
  for key in ("examples_read", "examples_scored", "thresholds", "flagged",
              "slices"):
    assert one[key] == two[key], key
  assert one["loss"]["quantiles"] == two["loss"]["quantiles"]
  for kind in ("losses", "flagged"):
    a = _read(out_one, kind).sort_values("id").reset_index(drop=True)
    b = _read(out_two, kind).sort_values("id").reset_index(drop=True)
    assert a.equals(b), kind


def test_empty_dataset_completes_with_zero_counts(tmp_path, classifier_path,
                                                  write_config):
  data = tmp_path / "data"
  data.mkdir()
  (data / "part-0.tfrecord").write_bytes(b"")
  out = tmp_path / "out"
  config = base_config(data / "*.tfrecord", classifier_path, out)
  summary = audit.run(["--config", write_config(config)])
  assert (summary["examples_read"], summary["examples_scored"],
          summary["examples_dead_lettered"]) == (0, 0, 0)
  assert summary["loss"]["count"] == 0 and summary["flagged"]["total"] == 0
  assert (out / "report.html").exists()


# What `lossaudit run` refuses of the arguments it passes on to Beam (before
# the config is read): the option as typed, what was expected, the nearest
# known option.
KNOWN = ("expected a lossaudit option (--config, --set) or a Beam pipeline"
         " option")


@pytest.mark.parametrize("args, message", [
    (["--sett", "flag.loss_quantile=0.5"],
     f"--sett: {KNOWN}. Received: '--sett'. Did you mean --set?"),
    (["--sett=flag.loss_quantile=0.5"],
     f"--sett: {KNOWN}. Received: '--sett=flag.loss_quantile=0.5'. Did you"
     " mean --set?"),
    (["--direct_num_workrs=2"],
     f"--direct_num_workrs: {KNOWN}. Received: '--direct_num_workrs=2'. Did"
     " you mean --direct_num_workers?"),
    (["--runner=DirectRunner", "--temp_locaton", "/tmp/x"],
     f"--temp_locaton: {KNOWN}. Received: '--temp_locaton'. Did you mean"
     " --temp_location?"),
    (["extra.yaml"],
     f"Beam options: {KNOWN}. Received: 'extra.yaml' (a value that follows"
     " no option taking one)"),
    (["--direct_num_workers=two"],
     "--direct_num_workers: expected an integer. Received: 'two'"),
    (["--direct_running_mode", "threads"],
     "--direct_running_mode: expected one of {'in_memory', 'multi_threading',"
     " 'multi_processing'}. Received: 'threads'"),
    (["--project"], "--project: expected a value. Received: none"),
    (["--save_main_session=yes"],
     "--save_main_session: expected no value (the option is a switch)."
     " Received: 'yes'"),
])
def test_cli_unknown_beam_options_stop_the_run(tmp_path, capsys, write_config,
                                               args, message):
  out = tmp_path / "out"
  path = write_config(base_config(tmp_path / "*.gz", tmp_path / "m.keras",
                                  out))
  with pytest.raises(ConfigError) as info:
    audit.run(["--config", path] + args)
  assert str(info.value) == message
  assert audit.main(["--config", path] + args) == 2
  assert capsys.readouterr().err == f"lossaudit: error: {message}\n"
  assert not out.exists()


@pytest.mark.parametrize("args", [
    [],
    ["--runner=DirectRunner", "--direct_num_workers=2",
     "--direct_running_mode=multi_processing"],
    ["--runner", "DirectRunner", "--direct_num_workers", "2",
     "--direct_running_mode", "multi_threading"],
    ["--runner=DataflowRunner", "--project=p", "--region=us-central1",
     "--temp_location=gs://b/tmp", "--staging_location=gs://b/staging",
     "--sdk_container_image=gcr.io/p/lossaudit:1", "--sdk_location=container",
     "--machine_type=n1-standard-8", "--max_num_workers=8",
     "--experiments=use_runner_v2", "--experiments",
     "no_use_multiple_sdk_containers",
     "--dataflow_service_options=worker_accelerator=type:t;count:1",
     "--job_name=audit", "--template_location=gs://b/templates/audit.json"],
    ["--project", "p", "--region", "r", "--temp_location", "gs://b/tmp",
     "--sdk_container_image", "img", "--experiments", "x",
     "--template_location", "gs://b/t.json", "--no_use_public_ips",
     "--save_main_session", "--direct_num_workers", "0"],
    # The job service of a portable runner adds options only it knows.
    ["--runner=FlinkRunner", "--flink_master=localhost:8081",
     "--checkpointing_interval=1000"],
])
def test_cli_valid_beam_options_pass(args):
  command.check_beam_args(args)


def test_cli_demo_refuses_unknown_options(tmp_path, monkeypatch, capsys):
  from lossaudit.pipelines import demo

  monkeypatch.chdir(tmp_path)
  assert demo.main(["--ouput", str(tmp_path / "d")]) == 2
  assert capsys.readouterr().err == (
      "lossaudit: error: --ouput: expected a lossaudit option (--output,"
      " --data, --model) or a Beam pipeline option. Received: '--ouput'."
      " Did you mean --output?\n")
  # The demo sets the audit's --config and --set itself.
  assert demo.main(["--set", "output.dir=elsewhere"]) == 2
  assert capsys.readouterr().err.startswith(
      "lossaudit: error: --set: expected a lossaudit option (--output,"
      " --data, --model) or a Beam pipeline option. Received: '--set'")
  assert demo.main(["--out", "d"]) == 2  # No abbreviations.
  assert "Received: '--out'" in capsys.readouterr().err
  assert not os.listdir(tmp_path)


def test_cli_negative_worker_count_is_refused():
  with pytest.raises(ConfigError, match=(
      r"^--direct_num_workers: expected an integer >= 0 \(0: one a CPU\)."
      r" Received: -3$")):
    command.check_beam_args(["--direct_num_workers=-3"])


@pytest.mark.parametrize("preset, level", [(None, "2"), ("0", "0")])
def test_cli_quiets_tensorflow_unless_told(tmp_path, monkeypatch, capsys,
                                           preset, level):
  from lossaudit.pipelines import cli

  if preset is None:
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
  else:
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", preset)
  config = tmp_path / "c.yaml"
  config.write_text(yaml.safe_dump(base_config(
      tmp_path / "*.tfrecord", tmp_path / "m.keras", tmp_path / "out")))
  assert cli.main(["run", "--config", str(config), "--sett"]) == 2
  assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == level
  assert "--sett" in capsys.readouterr().err


@pytest.mark.slow  # A scenario variant; the default suite keeps its core.
def test_an_audit_over_two_thousand_files_mostly_empty_counts_every_record(
    tmp_path, columns, classifier_path, write_config):
  """A glob of 2,000 files, 1,997 of them empty: each file costs little (no
  tf.data reader is set up for a small one), and every record is scored."""
  from lossaudit import datasets

  data = tmp_path / "data"
  datasets.write_tfrecords(str(tmp_path / "real"), {
      k: v[:300] for k, v in columns.items()}, num_shards=3, compression=None)
  data.mkdir()
  for i, shard in enumerate(sorted((tmp_path / "real").iterdir())):
    shard.rename(data / f"shard-{700 * i + 5:04d}.tfrecord")
  for i in range(2000):
    path = data / f"shard-{i:04d}.tfrecord"
    if not path.exists():
      path.write_bytes(b"")
  out = tmp_path / "out"
  summary = audit.run(["--config", write_config(base_config(
      data / "*.tfrecord", classifier_path, out))])
  assert (summary["examples_scored"], summary["examples_dead_lettered"]) == (
      300, 0)
  counters = summary["metrics"]["counters"]
  assert (counters["records_read"], counters["examples_dead_lettered"]) == (
      300, 0)
  assert sorted(_read(out, "losses")["id"]) == sorted(columns["id"][:300])


def test_the_dead_letter_metric_counts_every_kind_of_dead_letter(
    tmp_path, classifier_path, write_config):
  """Read-side dead letters (an unreadable stretch, a file that is not
  regular, a record that is not a tf.train.Example) and scoring-side ones
  alike: the Beam counter agrees with the summary's count."""
  from lossaudit import datasets
  from tests.helpers import make_columns

  cols = make_columns(n=200, seed=6)
  cols["label"][[3, 50]] = [7, -1]  # label_out_of_range, twice.
  data = tmp_path / "data"
  datasets.write_tfrecords(str(data), cols, num_shards=1, compression=None)
  datasets.write_tfrecords(str(data), {"id": np.array(["broken"]),
                                       "label": np.array([1])},
                           num_shards=1, compression=None, prefix="zz-missing")
  shard = next(data.glob("part-*.tfrecord")).read_bytes()
  (data / "truncated.tfrecord").write_bytes(shard[:-5])
  (data / "text.tfrecord").write_text("not a TFRecord file\n" * 10)
  os.mkfifo(data / "pipe.tfrecord")
  out = tmp_path / "out"
  summary = audit.run(["--config", write_config(base_config(
      data / "*.tfrecord", classifier_path, out))])
  assert summary["dead_letter"]["by_reason"] == {
      "label_out_of_range": 4, "missing_feature": 1,
      "not_a_regular_file": 1, "unreadable_stretch": 2}
  assert summary["examples_dead_lettered"] == 8
  assert summary["metrics"]["counters"]["examples_dead_lettered"] == 8
