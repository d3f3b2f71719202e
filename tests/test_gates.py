"""Quality gates, `lossaudit compare`, `drift.json` and nightly runs."""

import json
import os
import re
import stat
import subprocess

import pytest

from lossaudit import drift
from lossaudit.pipelines import audit, cli, demo
from tests.helpers import audit_env, base_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GATES = {"max_flagged_fraction": 0.15, "max_quantile_shift": 1.0}


def _summary(quantiles, flagged, scored=1000, label_issues=None):
  return {"examples_read": scored, "examples_scored": scored,
          "examples_dead_lettered": 0,
          "loss": {"quantiles": quantiles}, "flagged": {"total": flagged},
          "label_issues": label_issues}


def test_compare_quantile_shifts_rates_and_gates():
  baseline = _summary({"0.5": 0.2, "0.9": 1.0}, 50, label_issues=
                      {"label_counts": [600, 400],
                       "issues_by_pair": {"0->1": 30, "1->0": 20}})
  current = _summary({"0.5": 0.25, "0.9": 2.5}, 200, label_issues=
                     {"label_counts": [600, 400],
                      "issues_by_pair": {"0->1": 120, "1->0": 80}})
  found = drift.compare(current, baseline, max_flagged_fraction=0.1,
                        max_quantile_shift=1.0)
  assert found["quantiles"]["0.5"]["shift"] == pytest.approx(0.25)
  assert found["quantiles"]["0.9"]["shift"] == pytest.approx(1.5)
  assert found["flagged_rate"] == {"baseline": 0.05, "current": 0.2,
                                   "change": pytest.approx(0.15)}
  assert found["label_issue_rate"]["0"] == {
      "baseline": 0.05, "current": 0.2, "change": pytest.approx(0.15)}
  assert found["label_issue_rate"]["1"]["current"] == 0.2
  by_gate = {g["gate"]: g for g in found["gates"]}
  assert by_gate["max_flagged_fraction"]["exceeded_by"] == pytest.approx(0.1)
  assert by_gate["max_quantile_shift"]["quantile"] == "0.9"
  assert by_gate["max_quantile_shift"]["exceeded_by"] == pytest.approx(0.5)
  assert not found["passed"]
  assert drift.failed_gates(found) == [
      "gate max_flagged_fraction failed: 0.2 > 0.1, by 0.1",
      "gate max_quantile_shift failed (quantile 0.9): 1.5 > 1, by 0.5"]


def test_quantile_shift_gate_watches_only_the_chosen_quantiles():
  baseline = _summary({"0.01": 1e-7, "0.9": 1.0}, 10)
  current = _summary({"0.01": 3e-7, "0.9": 1.2}, 10)
  every = drift.compare(current, baseline, max_quantile_shift=0.5)
  assert every["gates"][0]["quantile"] == "0.01" and not every["passed"]
  upper = drift.compare(current, baseline, max_quantile_shift=0.5,
                        shift_quantiles=[0.9])
  assert upper["passed"]
  assert upper["gates"][0]["value"] == pytest.approx(0.2)
  assert upper["quantiles"]["0.01"]["shift"] == pytest.approx(2.0)


def test_quantiles_of_the_loss_and_of_the_deviance_are_not_compared():
  baseline = _summary({"0.9": 1.0}, 10)  # From before flag.score: the loss.
  current = _summary({"0.9": 40.0}, 10)
  current["loss"]["score"] = "deviance"
  found = drift.compare(current, baseline, max_quantile_shift=0.5)
  assert found["quantiles"] == {}
  gate = found["gates"][0]
  assert gate["value"] is None and gate["passed"]
  assert gate["what"].endswith(
      "; skipped: the baseline's quantiles are of the loss, this run's of"
      " the deviance (flag.score)")


def test_shift_quantiles_must_be_configured_quantiles():
  from lossaudit.config import AuditConfig
  from lossaudit.errors import ConfigError

  with pytest.raises(ConfigError, match=re.escape(
      "gate.shift_quantiles: expected quantiles of stats.quantiles [0.5, 0.9]."
      " Received: [0.99]")):
    AuditConfig.from_dict({
        "input": {"pattern": "x"}, "model": {"path": "m"},
        "stats": {"quantiles": [0.5, 0.9]},
        "gate": {"shift_quantiles": [0.99]}})
  with pytest.raises(ConfigError, match=re.escape(
      "gate.shift_quantiles: expected null or a non-empty list of quantiles."
      " Received: 0.9")):
    AuditConfig.from_dict({"input": {"pattern": "x"}, "model": {"path": "m"},
                           "gate": {"shift_quantiles": 0.9}})


def test_compare_without_a_baseline_checks_only_absolute_gates():
  found = drift.compare(_summary({"0.5": 1.0}, 10), None,
                        max_flagged_fraction=0.05, max_quantile_shift=0.1)
  assert found["passed"]
  assert found["quantiles"] == {}
  shift = [g for g in found["gates"] if g["gate"] == "max_quantile_shift"][0]
  assert shift["value"] is None and "no baseline" in shift["what"]


@pytest.fixture(scope="module")
def noisier_data(workdir):
  """The demo's audit digits with twice the label noise (20%)."""
  data = workdir / "demo-data-noisier"
  demo.build(str(data), None, noise_rate=2 * demo.NOISE_RATE)
  return data


def _config(data, model, out, **gate):
  return base_config(data / "part-*.tfrecord.gz", model, out,
                     flag={"loss_quantile": None,
                           "label_issues": "prune_by_noise_rate"},
                     gate=gate)


@pytest.mark.slow  # A scenario variant; the default suite keeps its core.
def test_compare_cli_against_itself_passes_and_doubled_noise_fails(
    tmp_path, demo_build, noisier_data, write_config, capsys):
  data, model, _ = demo_build
  baseline, noisier = tmp_path / "baseline", tmp_path / "noisier"
  first = audit.run(["--config", write_config(
      _config(data, model, baseline), "a.yaml")])
  second = audit.run(["--config", write_config(
      _config(noisier_data, model, noisier), "b.yaml")])
  assert 0.08 < drift.flagged_rate(first) < 0.13
  assert drift.flagged_rate(second) > 0.17

  gates = ["--max-flagged-fraction", "0.15", "--max-quantile-shift", "1.0"]
  assert cli.main(["compare", str(baseline), str(baseline)] + gates) == 0
  same = json.loads((baseline / "drift.json").read_text())
  assert same["passed"] and [g["passed"] for g in same["gates"]] == [True] * 2
  assert all(d["shift"] == 0 for d in same["quantiles"].values())

  assert cli.main(["compare", str(baseline), str(noisier)] + gates) == 3
  found = json.loads((noisier / "drift.json").read_text())
  assert not found["passed"]
  gate = {g["gate"]: g for g in found["gates"]}["max_flagged_fraction"]
  rate = drift.flagged_rate(second)
  assert (gate["passed"], gate["value"], gate["limit"]) == (False, rate, 0.15)
  assert gate["exceeded_by"] == pytest.approx(rate - 0.15)
  assert found["flagged_rate"]["change"] == pytest.approx(
      rate - drift.flagged_rate(first))
  rates = found["label_issue_rate"]
  assert sum(d["change"] > 0 for d in rates.values()) >= 8
  err = capsys.readouterr().err
  assert re.search(r"gate max_flagged_fraction failed: 0\.\d+ > 0\.15, by"
                   r" 0\.\d+", err)


def test_run_with_a_baseline_fails_its_gate_with_exit_3(
    tmp_path, demo_build, noisier_data, write_config, capsys):
  data, model, _ = demo_build
  baseline, noisier = tmp_path / "baseline", tmp_path / "noisier"
  audit.run(["--config", write_config(_config(data, model, baseline),
                                      "a.yaml")])
  config = _config(noisier_data, model, noisier, baseline=str(baseline),
                   **GATES)
  assert audit.main(["--config", write_config(config, "b.yaml")]) == 3
  summary = json.loads((noisier / "summary.json").read_text())
  assert summary["gate"]["passed"] is False
  assert summary["gate"]["baseline"] == str(baseline)
  assert summary["gate"]["failed"][0].startswith(
      "gate max_flagged_fraction failed")
  found = json.loads((noisier / "drift.json").read_text())
  assert found["baseline"] == str(baseline) and not found["passed"]
  report = (noisier / "report.html").read_text()
  assert 'class="fail">A quality gate failed' in report
  assert 'id="quantile-shifts"' in report
  assert "gate max_flagged_fraction failed" in capsys.readouterr().err


def test_missing_baseline_stops_before_the_run(tmp_path, demo_build,
                                               write_config, capsys):
  data, model, _ = demo_build
  config = _config(data, model, tmp_path / "out",
                   baseline=str(tmp_path / "nowhere"))
  assert audit.main(["--config", write_config(config)]) == 2
  assert capsys.readouterr().err == (
      "lossaudit: error: gate.baseline: expected the output.dir of a"
      f" completed run (one with summary.json). Received:"
      f" '{tmp_path / 'nowhere'}'\n")
  assert cli.main(["compare", str(tmp_path / "nowhere"), str(tmp_path)]) == 2
  assert "BASELINE_DIR: expected the output.dir of a completed run" in (
      capsys.readouterr().err)


def _nightly(cwd, *args):
  """`scripts/nightly ARGS` run from `cwd`; `(exit code, stdout, stderr)`."""
  done = subprocess.run(["bash", os.path.join(REPO, "scripts", "nightly"),
                         *args], cwd=cwd, env=audit_env(),
                        capture_output=True, text=True, timeout=120,
                        check=False)
  return done.returncode, done.stdout, done.stderr


def test_nightly_reads_a_relative_config_from_the_callers_directory(
    tmp_path, tfrecord_dir, classifier_path):
  # A config beside the caller, not in the checkout, with a mistyped key:
  # told before Beam loads, once the file is found.
  (tmp_path / "mine").mkdir()
  config = base_config(tfrecord_dir / "*.gz", classifier_path,
                       tmp_path / "out", flag={"loss_quantil": 0.9})
  (tmp_path / "mine" / "nightly.yaml").write_text(json.dumps(config))
  code, out, err = _nightly(tmp_path, "mine/nightly.yaml")
  assert code == 2, err
  assert err.startswith("lossaudit: error: flag.loss_quantil: unknown config"
                        " key"), err
  lines = out.splitlines()
  assert lines[0].endswith(
      f" lossaudit run --config {tmp_path}/mine/nightly.yaml ")
  assert lines[-1].endswith(" exit 2")  # Also when the run fails.

  code, out, err = _nightly(tmp_path / "mine", "../missing.yaml")
  assert code == 2
  assert err.strip() == (
      "lossaudit: error: --config: expected a YAML file. Received:"
      f" '{tmp_path}/mine/../missing.yaml' (no such file)")


@pytest.mark.slow  # A scenario variant; the default suite keeps its core.
def test_nightly_config_twice_compares_with_the_latest_run(
    tmp_path, demo_build, capsys):
  data, model, _ = demo_build
  argv = ["--config", os.path.join(REPO, "configs", "nightly.yaml"),
          "--set", f"input.pattern={data}/part-*.tfrecord.gz",
          "--set", f"model.path={model}",
          "--set", f"output.dir={tmp_path}/nightly/{{date}}-{{run_id}}"]
  assert audit.main(argv) == 0
  assert audit.main(argv) == 0
  runs = sorted((tmp_path / "nightly").iterdir())
  assert len(runs) == 2
  first, second = (json.loads((r / "summary.json").read_text()) for r in runs)
  assert runs[0].name.endswith(first["run_id"])
  assert runs[0].name.startswith(first["started"][:10])
  no_baseline = "skipped: no baseline run"
  assert first["gate"] == {
      "baseline": None, "passed": True, "failures": [], "failed": [],
      "skipped": [f"gate {name} {no_baseline}" for name in (
          "max_quantile_shift", "max_regression_fraction")]}
  assert second["gate"]["skipped"] == []
  assert second["gate"]["baseline"] == str(runs[0])
  found = json.loads((runs[1] / "drift.json").read_text())
  assert found["passed"]
  assert all(d["shift"] == 0 for d in found["quantiles"].values())
  printed = capsys.readouterr()
  assert "lossaudit: gates passed (baseline: none)" in printed.out
  assert f"lossaudit: gates passed (baseline: {runs[0]})" in printed.out


def test_output_dir_placeholders_are_checked(tmp_path, demo_build,
                                             write_config, capsys):
  data, model, _ = demo_build
  config = _config(data, model, tmp_path / "{day}")
  assert audit.main(["--config", write_config(config)]) == 2
  assert "output.dir: expected a path whose only placeholders are {date} and" \
      " {run_id}" in capsys.readouterr().err


def test_flex_template_metadata_and_entry_point(tmp_path, demo_build,
                                                write_config):
  from lossaudit.pipelines import flex_template

  with open(os.path.join(REPO, "templates", "flex", "metadata.json")) as f:
    metadata = json.load(f)
  params = {p["name"]: p for p in metadata["parameters"]}
  assert {"config", "overrides"} <= set(params)  # Beam options: test_dataflow
  assert not params["config"]["isOptional"] and params["overrides"][
      "isOptional"]
  assert re.match(params["config"]["regexes"][0], "gs://b/c/nightly.yaml")
  assert not re.match(params["config"]["regexes"][0], "/local/nightly.yaml")
  overrides = "flag.top_k=5;output.dir=" + str(tmp_path / "{run_id}")
  assert re.match(params["overrides"]["regexes"][0], overrides)

  data, model, _ = demo_build
  config = write_config(_config(data, model, tmp_path / "unused"))
  assert flex_template.audit_args(
      [f"--config={config}", f"--overrides={overrides}", "--runner=X"]) == [
          f"--config={config}", "--runner=X", "--set", "flag.top_k=5",
          "--set", "output.dir=" + str(tmp_path / "{run_id}")]
  assert flex_template.main(
      [f"--config={config}", f"--overrides={overrides}"]) == 0
  (run,) = [d for d in tmp_path.iterdir() if d.is_dir()]
  summary = json.loads((run / "summary.json").read_text())
  assert summary["config"]["flag"]["top_k"] == 5
  assert run.name == summary["run_id"]


@pytest.mark.parametrize("change, message", [
    ({"output": {"dir": "gs://b/audits/{run_id}"}},
     "lossaudit: error: output.dir: {date} and {run_id} would be filled in"
     " once, when the classic template is built"),
    ({"gate": {"baseline": "latest"}},
     "lossaudit: error: gate.baseline: 'latest' would be resolved once, when"
     " the classic template is built"),
])
def test_classic_template_refuses_per_launch_settings(
    tmp_path, demo_build, write_config, capsys, change, message):
  data, model, _ = demo_build
  config = base_config(data / "part-*.tfrecord.gz", model, tmp_path / "out",
                       **change)
  assert audit.main(["--config", write_config(config),
                     "--runner=DataflowRunner",
                     f"--template_location={tmp_path / 'template.json'}"]) == 2
  assert capsys.readouterr().err.startswith(message)
  assert not (tmp_path / "template.json").exists()


def _write_run(directory, quantiles, flagged=10, gate=None):
  """A completed run's summary.json, written by hand (no pipeline)."""
  directory.mkdir(parents=True, exist_ok=True)
  summary = dict(_summary(quantiles, flagged),
                 config={"stats": {}, "gate": gate or {}})
  (directory / "summary.json").write_text(json.dumps(summary))
  return directory


@pytest.fixture
def two_runs(tmp_path):
  base = _write_run(tmp_path / "base", {"0.5": 0.1, "0.9": 1.0, "0.99": 2.0})
  cur = _write_run(tmp_path / "cur", {"0.5": 1.0, "0.9": 1.1, "0.99": 2.0})
  return base, cur


@pytest.mark.parametrize("name", ["summary.json", "report.html",
                                  ".lossaudit-run.json",
                                  ".lossaudit-lock.json"])
def test_compare_output_refuses_lossaudit_own_files(two_runs, capsys, name):
  base, cur = two_runs
  before = (base / "summary.json").read_text()
  target = base / name
  assert cli.main(["compare", str(base), str(cur), "--output",
                   str(target)]) == 2
  assert capsys.readouterr().err == (
      "lossaudit: error: compare: --output: expected a file name other than"
      " lossaudit's own outputs ['summary.json', 'report.html',"
      " '.lossaudit-run.json', '.lossaudit-lock.json']. Received:"
      f" '{target}'\n")
  assert (base / "summary.json").read_text() == before
  assert sorted(p.name for p in base.iterdir()) == ["summary.json"]


@pytest.mark.parametrize("output", ["base", "base/", "gs://bucket/runs/"])
def test_compare_output_refuses_a_directory(two_runs, capsys, output):
  base, cur = two_runs
  if not output.startswith("gs://"):
    output = str(base.parent / output)
  assert cli.main(["compare", str(base), str(cur), "--output", output]) == 2
  assert capsys.readouterr().err == (
      "lossaudit: error: compare: --output: expected a file path for"
      f" drift.json. Received: '{output}' (a directory)\n")
  assert sorted(p.name for p in base.parent.iterdir()) == ["base", "cur"]
  assert sorted(p.name for p in base.iterdir()) == ["summary.json"]


def test_compare_output_elsewhere_and_drift_json_are_fine(two_runs):
  base, cur = two_runs
  elsewhere = base.parent / "drift-base-cur.json"
  assert cli.main(["compare", str(base), str(cur), "--output",
                   str(elsewhere)]) == 0
  assert json.loads(elsewhere.read_text())["baseline"] == str(base)
  assert cli.main(["compare", str(base), str(cur), "--output",
                   str(base / "drift.json")]) == 0
  assert (base / "drift.json").exists()


@pytest.mark.parametrize("given", [["0.123"], ["2"], ["-1"], ["0.9", "0.75"]])
def test_compare_refuses_shift_quantiles_the_runs_lack(two_runs, capsys,
                                                       given):
  base, cur = two_runs
  assert cli.main(["compare", str(base), str(cur), "--max-quantile-shift",
                   "0.1", "--shift-quantiles"] + given) == 2
  received = [float(q) for q in given]
  assert capsys.readouterr().err == (
      "lossaudit: error: compare: --shift-quantiles: expected quantiles in"
      " [0, 1] that both runs computed [0.5, 0.9, 0.99]. Received:"
      f" {received}\n")
  assert not (cur / "drift.json").exists()


def test_compare_shift_quantiles_must_be_in_both_runs(tmp_path, capsys):
  base = _write_run(tmp_path / "base", {"0.5": 0.1, "0.9": 1.0})
  cur = _write_run(tmp_path / "cur", {"0.5": 1.0, "0.9": 1.1, "0.999": 3.0})
  assert cli.main(["compare", str(base), str(cur), "--max-quantile-shift",
                   "0.1", "--shift-quantiles", "0.999"]) == 2
  assert capsys.readouterr().err.endswith(
      "--shift-quantiles: expected quantiles in [0, 1] that both runs"
      " computed [0.5, 0.9]. Received: [0.999]\n")
  # Watching a quantile both have works: 0.5 moved 900%.
  assert cli.main(["compare", str(base), str(cur), "--max-quantile-shift",
                   "0.1", "--shift-quantiles", "0.5"]) == 3
  gate = json.loads((cur / "drift.json").read_text())["gates"][0]
  assert gate["quantile"] == "0.5" and gate["value"] == pytest.approx(9.0)


def test_compare_checks_the_configured_shift_quantiles(tmp_path, capsys):
  base = _write_run(tmp_path / "base", {"0.5": 0.1, "0.9": 1.0})
  cur = _write_run(tmp_path / "cur", {"0.5": 1.0, "0.99": 1.1},
                   gate={"max_quantile_shift": 0.1,
                         "shift_quantiles": [0.99]})
  assert cli.main(["compare", str(base), str(cur)]) == 2
  assert capsys.readouterr().err == (
      "lossaudit: error: compare: gate.shift_quantiles: expected quantiles in"
      " [0, 1] that both runs computed [0.5]. Received: [0.99]\n")


def _not_regular(path):
  return (
      "lossaudit: error: compare: --output: expected a new file, or a"
      " drift.json lossaudit wrote: the path is not a regular file (a FIFO,"
      " device, socket or symbolic link), which compare never opens or"
      f" replaces. Received: '{path}'\n")


def test_compare_output_refuses_a_fifo_without_opening_it(two_runs, capsys):
  base, cur = two_runs
  fifo = base.parent / "drift.fifo"
  os.mkfifo(fifo)  # Opening it would block: no writer, no reader.
  assert cli.main(["compare", str(base), str(cur), "--output",
                   str(fifo)]) == 2
  assert capsys.readouterr().err == _not_regular(fifo)
  assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
  assert sorted(p.name for p in base.parent.iterdir()) == [
      "base", "cur", "drift.fifo"]


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null"])
def test_compare_output_refuses_a_device_without_reading_it(
    two_runs, capsys, device):
  base, cur = two_runs
  assert cli.main(["compare", str(base), str(cur), "--output", device]) == 2
  assert capsys.readouterr().err == _not_regular(device)
  assert stat.S_ISCHR(os.lstat(device).st_mode)
  assert sorted(p.name for p in cur.iterdir()) == ["summary.json"]


def test_compare_output_refuses_a_link(two_runs, capsys):
  base, cur = two_runs
  mine = base.parent / "mine.json"
  mine.write_text("{}")
  os.symlink(mine, base.parent / "drift-link.json")
  assert cli.main(["compare", str(base), str(cur), "--output",
                   str(base.parent / "drift-link.json")]) == 2
  assert capsys.readouterr().err == _not_regular(
      base.parent / "drift-link.json")
  assert mine.read_text() == "{}"


def test_compare_output_under_a_file_is_refused_before_comparing(
    two_runs, capsys):
  base, cur = two_runs
  (base.parent / "somefile").write_text("mine")
  output = str(base.parent / "somefile" / "x.json")
  assert cli.main(["compare", str(base), str(cur), "--output", output]) == 2
  assert capsys.readouterr().err == (
      "lossaudit: error: compare: --output: expected a location where"
      f" drift.json can be written. Received: '{output}' (Not a directory)\n")
  assert (base.parent / "somefile").read_text() == "mine"
  assert sorted(p.name for p in base.parent.iterdir()) == [
      "base", "cur", "somefile"]


def test_a_failed_drift_write_leaves_no_temporary_file(two_runs, capsys):
  base, cur = two_runs
  # CURRENT_DIR/drift.json is a folder of the user's: the write fails
  # after its temporary file exists.
  (cur / "drift.json").mkdir()
  (cur / "drift.json" / "keep.txt").write_text("mine")
  assert cli.main(["compare", str(base), str(cur)]) == 2
  err = capsys.readouterr().err
  assert err == (
      "lossaudit: error: compare: CURRENT_DIR: expected a location where"
      f" drift.json can be written. Received: '{cur / 'drift.json'}'"
      " (Is a directory)\n")
  assert sorted(p.name for p in cur.iterdir()) == ["drift.json",
                                                   "summary.json"]
  assert (cur / "drift.json" / "keep.txt").read_text() == "mine"


def test_compare_output_refuses_an_empty_path(two_runs, capsys):
  base, cur = two_runs
  assert cli.main(["compare", str(base), str(cur), "--output", ""]) == 2
  assert capsys.readouterr().err == (
      "lossaudit: error: compare: --output: expected a file path for"
      " drift.json. Received: '' (an empty path)\n")
  assert sorted(p.name for p in cur.iterdir()) == ["summary.json"]


def test_compare_applies_the_regression_gate_of_a_run_against_its_baseline(
    tmp_path, write_config, capsys):
  """A night that `run` failed on its regressions fails `compare` too (its
  config's gate, or --max-regression-fraction)."""
  import numpy as np
  import pyarrow as pa
  import pyarrow.parquet as pq

  from tests.helpers import predictions_config

  data = tmp_path / "data"
  data.mkdir()
  runs = []
  for night, wrong in enumerate((range(2), range(12))):
    ids = [f"r{i}" for i in range(200)]
    probs = np.full((200, 3), 0.05, np.float32)
    probs[:, 0] = 0.9
    label = np.zeros(200, np.int64)
    label[list(wrong)] = 1
    pq.write_table(pa.table({"id": ids, "label": label, "p": list(probs)}),
                   data / "part-0.parquet")
    out = tmp_path / f"night{night}"
    config = predictions_config(str(data / "*.parquet"), str(out), gate={
        "baseline": str(runs[-1]), "max_regression_fraction": 0.02}
        if runs else {})
    code = audit.main(["--config", write_config(config)])
    assert code == (0 if night == 0 else 3)
    runs.append(out)
  capsys.readouterr()
  assert cli.main(["compare", str(runs[0]), str(runs[1]), "--output",
                   str(tmp_path / "d.json")]) == 3
  assert ("gate max_regression_fraction failed: 0.05 > 0.02, by 0.03"
          in capsys.readouterr().err)
  assert cli.main(["compare", str(runs[0]), str(runs[1]), "--output",
                   str(tmp_path / "d.json"),
                   "--max-regression-fraction", "0.1"]) == 0
