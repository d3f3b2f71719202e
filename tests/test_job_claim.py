"""A job that owns its output directory: the Flex launch, classic templates
and remote runners claim nothing at launch; the job claims, refreshes and
releases the lock itself (`lossaudit.transforms.claim`).

The Dataflow service is the one part that cannot run here: the DataflowRunner
with `--template_location` writes the job instead of submitting it, as
Dataflow's Flex launcher has it do, and `_FakeDataflowResult` stands for a
submitted job in the interruption tests.
"""

import dataclasses
import json
import os
import signal

import numpy as np
import pandas as pd
import pytest
import yaml
from apache_beam.internal import pickler
from apache_beam.io.filesystems import FileSystems
from apache_beam.portability.api import beam_runner_api_pb2
from google.cloud import storage

from lossaudit import ownership
from lossaudit.pipelines import audit, flex_template
from lossaudit.transforms.claim import JobClaim
from tests.helpers import (
  GCS_BUCKET,
  REPO,
  base_config,
  predictions_config,
  staged_pipeline,
  upload,
  write_predictions,
)

PROJECT = "test-project-123"
IMAGE = "us-central1-docker.pkg.dev/test-project-123/images/lossaudit:1"
LAUNCH_ID = "2026-12-07_04_00_00-1234567890123456789"


def _launcher_options(root: str) -> list:
  """The pipeline options Dataflow's Python Flex launcher passes to the
  template's entry point, `--template_location` under `template_launches/`
  among them."""
  staging = f"{root}/staging"
  return [
      "--runner=DataflowRunner",
      f"--project={PROJECT}",
      "--region=us-central1",
      "--job_name=lossaudit-nightly-20261207",
      f"--staging_location={staging}",
      f"--temp_location={root}/tmp",
      f"--template_location={staging}/template_launches/{LAUNCH_ID}/job_object",
      f"--sdk_container_image={IMAGE}",
      "--sdk_location=container",
      "--experiments=use_runner_v2",
  ]


def _objects(prefix: str) -> dict:
  """Every object under gs://bucket/`prefix`, with its generation."""
  client = storage.Client()
  return {b.name: b.generation
          for b in client.list_blobs(GCS_BUCKET, prefix=prefix)}


def _nightly(root: str, output_dir: str) -> dict:
  """configs/nightly.yaml with its paths under `root` (gs://)."""
  with open(os.path.join(REPO, "configs", "nightly.yaml")) as f:
    config = yaml.safe_load(f)
  config["input"]["pattern"] = f"{root}/data/*.gz"
  config["model"]["path"] = f"{root}/model.keras"
  config["output"]["dir"] = output_dir
  # The test model is untrained: most of its examples are flagged.
  config["gate"]["max_flagged_fraction"] = 0.9
  return config


def _upload_data_and_model(root: str, tfrecord_dir, classifier_path) -> None:
  upload(str(tfrecord_dir), f"{root}/data")
  upload(classifier_path, f"{root}/model.keras")


def _upload_config(tmp_path, config: dict, remote: str) -> str:
  path = tmp_path / os.path.basename(remote)
  path.write_text(yaml.safe_dump(config))
  upload(str(path), remote)
  return remote


@pytest.mark.slow  # A scenario variant; the default suite keeps its core.
def test_flex_launches_of_the_nightly_config_write_the_job_and_delete_nothing(
    gcs, tmp_path, tfrecord_dir, classifier_path):
  root = f"{gcs}/flex"
  _upload_data_and_model(root, tfrecord_dir, classifier_path)
  runs = f"{root}/audits"
  config = _upload_config(tmp_path, _nightly(root, runs + "/{date}-{run_id}"),
                          f"{root}/nightly.yaml")
  # Last night's run, completed, beside where tonight's goes (without the
  # cleaned copy of the input, which only costs time here).
  night = audit.run(["--config", config, "--set", "output.clean=null",
                     "--set", "output.weights=null"])
  assert night["gate"]["passed"], night["gate"]
  before = _objects("flex/audits/")
  assert any(name.endswith("/summary.json") for name in before)

  code = flex_template.main([
      *_launcher_options(root), f"--config={config}",
      "--overrides=flag.top_k=100;stats.epsilon=0.002"])

  assert code == 0
  staging = f"{root}/staging/template_launches/{LAUNCH_ID}/job_object"
  with FileSystems.open(staging) as f:
    job = json.loads(f.read())
  # The job, not the launch, claims tonight's directory: the first step
  # takes the lock and copies last night's run (`latest`) as the baseline.
  pipeline = staged_pipeline(job)
  names = {t.unique_name for t in pipeline.components.transforms.values()}
  assert {"ClaimOutputDir", "RefreshLockWhileScoring",
          "WriteSummary"} <= names
  claim = _claim_of(pipeline)
  day = claim.run_id[:8]  # YYYYMMDD, then the time and a random suffix.
  assert claim.directory == (
      f"{runs}/{day[:4]}-{day[4:6]}-{day[6:]}-{claim.run_id}")
  assert claim.run_id != night["run_id"]
  assert claim.baseline.dir == night["config"]["output"]["dir"]
  assert _objects("flex/audits/") == before
  assert not any(name.endswith(ownership.LOCK)
                 for name in _objects("flex/"))

  # A launch into last night's own directory, its own baseline: every
  # object of that completed run stays, and no lock is taken.
  night_dir = night["config"]["output"]["dir"]
  assert flex_template.main([
      *_launcher_options(root), f"--config={config}",
      f"--overrides=output.dir={night_dir};gate.baseline={night_dir}"]) == 0
  with FileSystems.open(staging) as f:
    claim = _claim_of(staged_pipeline(json.loads(f.read())))
  assert (claim.directory, claim.baseline.dir) == (night_dir, night_dir)
  assert _objects("flex/audits/") == before
  assert not any(name.endswith(ownership.LOCK)
                 for name in _objects("flex/"))


def _claim_of(pipeline) -> JobClaim:
  """The `JobClaim` of the job's `ClaimOutputDir` step, as pickled in it."""
  for transform in pipeline.components.transforms.values():
    if transform.unique_name == "ClaimOutputDir/TakeLock":
      payload = beam_runner_api_pb2.ParDoPayload.FromString(
          transform.spec.payload)
      fn = pickler.loads(payload.do_fn.payload)[0]
      return fn._claim  # pylint: disable=protected-access
  raise AssertionError("no ClaimOutputDir/TakeLock step")


@pytest.mark.slow  # A run and a launch on the emulator (~15 s); the Flex
# launch into a completed run is in the test above.
@pytest.mark.parametrize("launch", ["flex", "classic_template"])
def test_a_launch_into_a_completed_run_leaves_every_object_and_no_lock(
    gcs, tmp_path, tfrecord_dir, classifier_path, launch):
  root = f"{gcs}/{launch}-fixed"
  _upload_data_and_model(root, tfrecord_dir, classifier_path)
  out = f"{root}/out"
  config = _nightly(root, out)
  config["gate"]["baseline"] = out  # Its own earlier run, named.
  config = _upload_config(tmp_path, config, f"{root}/fixed.yaml")
  completed = audit.run(["--config", config])
  prefix = f"{launch}-fixed/out/"
  before = _objects(prefix)
  assert f"{prefix}summary.json" in before
  assert f"{prefix}{ownership.MARKER}" in before

  options = _launcher_options(root)
  if launch == "classic_template":
    options[-4] = f"--template_location={root}/templates/audit.json"
  assert audit.main(["--config", config, *options]) == 0

  assert _objects(prefix) == before
  with FileSystems.open(f"{out}/summary.json") as f:
    assert json.loads(f.read())["run_id"] == completed["run_id"]


def test_dataflow_launch_refused_while_another_run_holds_the_directory(
    gcs, tmp_path, tfrecord_dir, classifier_path, capsys):
  root = f"{gcs}/held"
  _upload_data_and_model(root, tfrecord_dir, classifier_path)
  out = f"{root}/out"
  holder = ownership.RunInfo("20261207T010000Z-abcdef", "worker-7", 42,
                             1.0e9, in_job=True, refreshed=2.0e9)
  lock = tmp_path / "lock.json"
  lock.write_bytes(holder.to_json())
  upload(str(lock), f"{out}/{ownership.LOCK}")
  config = _upload_config(tmp_path, _nightly(root, out), f"{root}/c.yaml")

  code = audit.main(["--config", config, *_launcher_options(root)],
                    clock=lambda: 2.0e9 + 60)

  assert code == 2
  # The last line: Beam warns of the emulated bucket's soft-delete policy.
  assert capsys.readouterr().err.splitlines()[-1] == (
      "lossaudit: error: output.dir: expected no other run writing there;"
      " run 20261207T010000Z-abcdef (host worker-7, pid 42, started"
      f" 2001-09-09 01:46:40 UTC) holds its lock {ownership.LOCK} (wait for it"
      " to end, or delete the lock if that run is dead)")


@pytest.mark.parametrize("key", ["input.pattern", "model.path", "output.dir",
                                 "gate.baseline"])
def test_a_remote_runner_refuses_local_paths_before_launch(
    gcs, tmp_path, write_config, capsys, key):
  remote = {"input.pattern": f"{gcs}/data/*.gz",
            "model.path": f"{gcs}/model.keras",
            "output.dir": f"{gcs}/out", "gate.baseline": f"{gcs}/last"}
  local = str(tmp_path / key.replace(".", "_"))
  paths = dict(remote, **{key: local})
  config = base_config(paths["input.pattern"], paths["model.path"],
                       paths["output.dir"],
                       gate={"baseline": paths["gate.baseline"]})

  code = audit.main(["--config", write_config(config),
                     "--runner=DataflowRunner", f"--project={PROJECT}",
                     "--region=us-central1", f"--temp_location={gcs}/tmp"])

  assert code == 2
  # The last line: Beam warns of the emulated bucket's soft-delete policy.
  assert capsys.readouterr().err.splitlines()[-1] == (
      f"lossaudit: error: {key}: expected a path the workers of"
      " DataflowRunner can reach (gs://...); a path on this machine is not on"
      f" theirs. Received: {local!r}")
  assert not os.listdir(tmp_path) or not any(
      p.startswith(".lossaudit") for p in os.listdir(tmp_path))


def test_flex_launch_is_told_from_a_classic_template():
  job_object = f"gs://b/staging/template_launches/{LAUNCH_ID}/job_object"
  assert audit.is_flex_launch(job_object, environ={})
  assert not audit.is_flex_launch("gs://b/templates/audit.json", environ={})
  assert not audit.is_flex_launch("gs://b/template_launches/x.json",
                                  environ={})
  assert audit.is_flex_launch(
      "gs://b/template_launches/x/job",
      environ={"FLEX_TEMPLATE_PYTHON_PY_FILE": "/opt/x.py"})


def test_local_and_remote_runners():
  for runner in ("DirectRunner", "direct", "PrismRunner",
                 "apache_beam.runners.direct.direct_runner.DirectRunner"):
    assert audit.is_local_runner(runner), runner
  for runner in ("DataflowRunner", "FlinkRunner", "PortableRunner",
                 "apache_beam.runners.dataflow.DataflowRunner"):
    assert not audit.is_local_runner(runner), runner


class _FakeDataflowResult:
  """A submitted Dataflow job (the service cannot run here): waiting on it
  is interrupted by a signal."""

  def __init__(self):
    self.cancelled = False

  def job_id(self):
    return "2026-12-07_04_00_00-42"

  def wait_until_finish(self):
    raise audit.Interrupted(signal.SIGINT)

  def cancel(self):
    self.cancelled = True


@pytest.mark.parametrize("cancel", [False, True])
def test_an_interrupted_launcher_leaves_the_job_or_cancels_it(cancel):
  result = _FakeDataflowResult()
  with audit.SIGNALS, pytest.raises(audit.Interrupted):
    audit._wait(result, remote=True, cancel_on_interrupt=cancel)  # pylint: disable=protected-access
  outcome = audit.SIGNALS.outcome
  assert result.cancelled is cancel
  if cancel:
    assert outcome == (
        "job 2026-12-07_04_00_00-42 was cancelled; its lock goes stale after"
        " output.lock_timeout and the next run removes its scratch")
  else:
    assert outcome == (
        "job 2026-12-07_04_00_00-42 keeps running, holds output.dir and"
        " releases it when it ends (--cancel-on-interrupt cancels it"
        " instead)")


class _LockWatchingClock:
  """A fake clock, `step` seconds further at each call, that notes the lock
  of `directory` as each call finds it (in `log`, one JSON line a call): it
  runs inside the pipeline's DoFns, so its notes go to a file."""

  def __init__(self, start: float, step: float, directory: str, log: str):
    self.start, self.step = start, step
    self.directory, self.log = directory, log

  def __call__(self) -> float:
    with open(self.log, "a+") as f:
      f.seek(0)
      calls = sum(1 for _ in f)
      lock = os.path.join(self.directory, ownership.LOCK)
      try:
        with open(lock) as held:
          found = json.load(held)
      except (OSError, ValueError):
        found = None
      f.write(json.dumps(found) + "\n")
    return self.start + calls * self.step


def _frame(directory, kind):
  return pd.read_parquet(directory / kind).sort_values("id").reset_index(
      drop=True)


def test_the_job_claims_refreshes_and_releases_on_the_direct_runner(
    tmp_path, tfrecord_dir, classifier_path, write_config):
  flag = {"loss_quantile": 0.9, "label_issues": "confident_learning"}
  today = tmp_path / "today"
  expected = audit.run(["--config", write_config(base_config(
      tfrecord_dir / "*.gz", classifier_path, today, flag=flag,
      batch_size=128), "today.yaml")])
  out = tmp_path / "job"
  # An earlier run's leftovers, which the job (not the launch) clears.
  (out / "losses").mkdir(parents=True)
  (out / ownership.MARKER).write_text("{}")
  (out / "losses" / "part-00000-of-00009.parquet").write_text("old")
  (out / "notes.txt").write_text("the user's")
  log = tmp_path / "clock.log"
  clock = _LockWatchingClock(1.8e9, 60.0, str(out), str(log))
  config = write_config(base_config(
      tfrecord_dir / "*.gz", classifier_path, out, flag=flag, batch_size=128,
      output={"lock_timeout": "10m"}), "job.yaml")

  summary = audit.run(["--config", config, "--claim-in-job"], clock=clock)

  for key in ("examples_read", "examples_scored", "loss", "thresholds",
              "flagged", "label_issues"):
    assert summary.get(key) == expected.get(key), key
  for kind in ("losses", "flagged"):
    pd.testing.assert_frame_equal(_frame(out, kind), _frame(today, kind))
  assert (out / "notes.txt").read_text() == "the user's"
  assert not (out / "losses" / "part-00000-of-00009.parquet").exists()
  assert not (out / ownership.LOCK).exists()
  assert not (out / ".scratch").exists()
  seen = [json.loads(line) for line in log.read_text().splitlines()]
  held = [lock for lock in seen if lock is not None]
  # The first call names the run; no lock until the job's first step.
  assert seen[0] is None
  assert held and all(lock["run_id"] == summary["run_id"] for lock in held)
  # The job runs inside this process, which the lock names: a run finding
  # it gone (killed) takes the lock over at once.
  assert all((lock["pid"], "in_job" in lock) == (os.getpid(), False)
             for lock in held)
  refreshed = sorted({lock["refreshed"] for lock in held})
  # Taken at one time, then refreshed at least once, each refresh at least
  # a quarter of the 600 s timeout after the one before.
  assert len(refreshed) >= 2
  assert all(b - a >= 150 for a, b in zip(refreshed, refreshed[1:]))


def _job_run(run_id="20261207T040000Z-0a1b2c", refreshed=1.0e9 + 100):
  return ownership.RunInfo(run_id, "worker-3", os.getpid(), 1.0e9,
                           in_job=True, refreshed=refreshed)


def test_a_job_lock_counts_its_age_from_its_last_refresh(tmp_path, caplog):
  out = tmp_path / "out"
  out.mkdir()
  (out / ownership.MARKER).write_text("{}")
  (out / ownership.LOCK).write_bytes(_job_run().to_json())
  other = ownership.RunInfo.this_process("20261207T050000Z-ffffff", 1.1e9)

  # Ten days after the job started, but 500 s after its last refresh: held
  # (its pid, this process's own, tells nothing of a job).
  with pytest.raises(ownership.ConfigError, match="holds its lock"):
    ownership.claim(str(out), other, overwrite=False, lock_timeout=600,
                    clock=lambda: 1.0e9 + 600)
  with pytest.raises(ownership.ConfigError, match="holds its lock"):
    ownership.check_claimable(str(out), overwrite=False, lock_timeout=600,
                              clock=lambda: 1.0e9 + 600)
  # 601 s after it: taken over, saying why.
  claim = ownership.claim(str(out), other, overwrite=False, lock_timeout=600,
                          clock=lambda: 1.0e9 + 701)
  assert ("its job last refreshed it more than output.lock_timeout (600 s)"
          " ago") in caplog.text
  claim.release()
  assert not (out / ownership.LOCK).exists()


def test_refresh_writes_only_the_holders_lock_and_only_when_due(tmp_path):
  out = tmp_path / "out"
  out.mkdir()
  lock = out / ownership.LOCK
  lock.write_bytes(_job_run().to_json())

  assert not ownership.refresh(str(out), "20261207T040000Z-999999",
                               now=1.0e9 + 900)
  assert not ownership.refresh(str(out), "20261207T040000Z-0a1b2c",
                               now=1.0e9 + 200, min_age=150)
  assert json.loads(lock.read_text())["refreshed"] == 1.0e9 + 100
  assert ownership.refresh(str(out), "20261207T040000Z-0a1b2c",
                           now=1.0e9 + 250, min_age=150)
  found = json.loads(lock.read_text())
  assert (found["refreshed"], found["started"], found["in_job"]) == (
      1.0e9 + 250, 1.0e9, True)
  ownership.release_lock(str(out), "20261207T040000Z-999999")
  assert lock.exists()
  ownership.release_lock(str(out), "20261207T040000Z-0a1b2c")
  assert not lock.exists()


def test_a_retried_claim_step_takes_its_own_lock_again(tmp_path):
  out = tmp_path / "out"
  job = _job_run()
  first = ownership.claim(str(out), job, overwrite=False, lock_timeout=600,
                          clock=lambda: 1.0e9 + 100)
  first.clear_previous()
  # The step ran again (its bundle retried): the lock is its run's.
  again = ownership.claim(str(out), _job_run(refreshed=1.0e9 + 300),
                          overwrite=False, lock_timeout=600,
                          clock=lambda: 1.0e9 + 300)
  assert json.loads((out / ownership.LOCK).read_text())["refreshed"] == (
      1.0e9 + 300)
  again.release()
  # A process (not a job) never takes a lock it finds, even its run's.
  (out / ownership.LOCK).write_bytes(job.to_json())
  with pytest.raises(ownership.ConfigError, match="holds its lock"):
    ownership.claim(str(out), dataclasses.replace(job, in_job=False),
                    overwrite=False, lock_timeout=600,
                    clock=lambda: 1.0e9 + 300)


def test_check_claimable_writes_nothing(tmp_path):
  missing = tmp_path / "new" / "out"
  ownership.check_claimable(str(missing), overwrite=False, lock_timeout=600)
  assert not (tmp_path / "new").exists()
  foreign = tmp_path / "theirs"
  foreign.mkdir()
  (foreign / "data.csv").write_text("1,2")
  with pytest.raises(ownership.ConfigError, match="holds files lossaudit"):
    ownership.check_claimable(str(foreign), overwrite=False, lock_timeout=600)
  assert os.listdir(foreign) == ["data.csv"]


def test_a_job_claims_a_new_directory_its_own_steps_wrote_scratch_in(
    tmp_path, gcs):
  job = _job_run()
  scratch = f".scratch/{job.run_id}/scored-00000.arrow"
  local = tmp_path / "new"
  (local / scratch).parent.mkdir(parents=True)
  (local / scratch).write_text("spilled before the claim step")
  # A file sink's temporary folder, made as the job starts (gs:// has none).
  (local / "flagged" / ("beam-temp-part-" + "0" * 32)).mkdir(parents=True)
  remote = f"{gcs}/new-job"
  upload(str(local), remote)
  for out in (str(local), remote):
    claim = ownership.claim(out, job, overwrite=False, lock_timeout=600,
                            clock=lambda: 1.0e9 + 100)
    claim.clear_previous()
    assert FileSystems.exists(f"{out}/{scratch}")
    claim.release()
  assert not (local / "flagged").exists()
  # Anything else in a new directory is someone else's.
  theirs = tmp_path / "theirs"
  (theirs / ".scratch").mkdir(parents=True)
  (theirs / ".scratch" / "notes.txt").write_text("mine")
  upload(str(theirs), f"{gcs}/theirs")
  for out in (str(theirs), f"{gcs}/theirs"):
    with pytest.raises(ownership.ConfigError, match="holds files lossaudit"):
      ownership.claim(out, job, overwrite=False, lock_timeout=600,
                      clock=lambda: 1.0e9 + 100)


def test_a_process_lock_is_refreshed_too(tmp_path):
  out = tmp_path / "out"
  out.mkdir()
  run = ownership.RunInfo("20261207T040000Z-0a1b2c", "laptop", 4242, 1.0e9)
  (out / ownership.LOCK).write_bytes(run.to_json())
  assert "refreshed" not in json.loads((out / ownership.LOCK).read_text())

  assert ownership.refresh(str(out), run.run_id, now=1.0e9 + 500,
                           min_age=150)

  found = json.loads((out / ownership.LOCK).read_text())
  assert (found["refreshed"], "in_job" in found) == (1.0e9 + 500, False)


@pytest.mark.slow  # Two or three runs (~5 s).
def test_jobs_into_new_directories_on_the_direct_runner(tmp_path,
                                                       write_config):
  data = tmp_path / "in.parquet"
  rng = np.random.default_rng(7)
  probs = rng.dirichlet(np.ones(4), size=600)
  write_predictions(data, [f"id-{i}" for i in range(600)],
                    rng.integers(0, 4, 600), probs)
  config = predictions_config(
      str(data), str(tmp_path / "runs" / "{run_id}"),
      flag={"loss_threshold": None, "loss_quantile": 0.9,
            "label_issues": "prune_by_noise_rate"})
  config["batch_size"] = 64
  config = write_config(config)
  # Each job's sinks and scratch may be made before its claim step (see
  # test_a_job_claims_a_new_directory_its_own_steps_wrote_scratch_in): two
  # runs, two new directories, each claimed, written and released.
  for _ in range(2):
    summary = audit.run(["--config", config, "--claim-in-job"])
    out = summary["config"]["output"]["dir"]
    assert summary["examples_scored"] == 600
    assert sorted(os.listdir(out)) == sorted([
        ownership.MARKER, "dead_letter", "flagged", "label_issues", "losses",
        "report.html", "summary.json"])
    assert sorted(os.listdir(os.path.join(out, "label_issues"))) == [
        "classes.parquet", "joint.parquet", "pairs.parquet"]


def _small_predictions_config(tmp_path, write_config, out, **flag):
  data = tmp_path / "in.parquet"
  rng = np.random.default_rng(3)
  write_predictions(data, [f"id-{i}" for i in range(300)],
                    rng.integers(0, 3, 300), rng.dirichlet(np.ones(3), 300))
  config = predictions_config(str(data), str(out), flag=flag)
  return write_config(config)


def test_a_claim_refused_in_the_job_is_one_line(tmp_path, write_config,
                                                capfd, monkeypatch):
  out = tmp_path / "out"
  out.mkdir()
  # Another run, alive on this host, took the lock after the launch looked.
  holder = ownership.RunInfo.this_process("20261207T010000Z-abcdef", 1.0e9)
  (out / ownership.LOCK).write_bytes(holder.to_json())
  monkeypatch.setattr(ownership, "check_claimable",
                      lambda *unused, **unused_kw: None)
  config = _small_predictions_config(tmp_path, write_config, out)

  assert audit.main(["--config", config, "--claim-in-job"]) == 2

  err = capfd.readouterr().err
  assert err == (
      "lossaudit: error: output.dir: expected no other run writing there;"
      f" {holder.describe()} holds its lock {ownership.LOCK} (wait for it to"
      " end, or delete the lock if that run is dead)\n")
  assert json.loads((out / ownership.LOCK).read_text())["run_id"] == (
      holder.run_id)
  # Nothing written but Beam's empty temporary folders, made as the job
  # started (the next run clears them; they may be the other run's).
  assert [os.path.relpath(os.path.join(d, n), out)
          for d, _, names in os.walk(out) for n in names] == [ownership.LOCK]


@pytest.mark.slow  # Two or three runs (~5 s).
def test_a_local_job_that_fails_releases_what_it_took(
    tmp_path, classifier_path, write_config, capsys):
  from tests.test_stats import _slice_run  # pylint: disable=g-import-not-at-top

  # The first 64 rows hold 2 slices, the rest one each: the job fails in
  # its statistics, after its claim step took the lock.
  slices = ["a" if i % 2 else "b" for i in range(64)] + [
      f"row-{i}" for i in range(64, 300)]
  config = _slice_run(tmp_path, classifier_path, write_config, slices, 10)

  assert audit.main(["--config", config, "--claim-in-job"]) == 1

  assert "stats.max_slices" in capsys.readouterr().err
  left = [os.path.relpath(os.path.join(d, n), tmp_path / "out")
          for d, _, names in os.walk(tmp_path / "out") for n in names]
  assert ownership.LOCK not in left
  assert not any(name.startswith(".scratch") for name in left)
  # The next run needs no wait.
  config_again = yaml.safe_load(open(config))
  config_again["stats"].pop("slice_by")
  config_again["stats"].pop("max_slices")
  assert audit.run(["--config", write_config(config_again, "again.yaml"),
                    "--claim-in-job"])["examples_scored"] == 300


@pytest.mark.parametrize("option", ["--temp_location", "--template_location",
                                    "--staging_location"])
def test_dataflow_locations_on_this_machine_are_refused_at_once(
    tmp_path, write_config, capsys, option):
  config = base_config("gs://b/data/*.gz", "gs://b/model.keras", "gs://b/out")
  local = str(tmp_path / "staging")
  options = {"--temp_location": "gs://b/tmp", option: local}

  # No network here: a check of the runner's (its bucket's soft-delete
  # policy) would take two minutes to give up; this one reads no bucket.
  code = audit.main(["--config", write_config(config),
                     "--runner=DataflowRunner", f"--project={PROJECT}",
                     "--region=us-central1",
                     *(f"{k}={v}" for k, v in options.items())])

  assert code == 2
  assert capsys.readouterr().err.splitlines()[-1] == (
      f"lossaudit: error: {option}: expected a gs:// path (Dataflow keeps its"
      f" files on Cloud Storage). Received: {local!r}")


@pytest.mark.parametrize("overrides, received", [
    ("nokey", "'nokey'"),
    ("output.dir=gs://b/a;b", "'b'"),
    ("=3", "'=3'"),
])
def test_a_bad_flex_override_names_overrides(capsys, overrides, received):
  assert flex_template.main([f"--overrides={overrides}",
                             "--config=gs://b/c.yaml"]) == 2
  assert capsys.readouterr().err == (
      "lossaudit: error: overrides: expected KEY=VALUE pairs separated by ';'"
      f" (a value cannot hold a ';'). Received: {received} in"
      f" {overrides!r}\n")


def test_check_claimable_refuses_a_directory_that_cannot_be_made(tmp_path):
  a_file = tmp_path / "config.yaml"
  a_file.write_text("input: {}")
  for directory, problem in ((a_file, f"{str(a_file)!r} is not a directory"),
                             (a_file / "out",
                              f"{str(a_file)!r} is not a directory")):
    with pytest.raises(ownership.ConfigError) as raised:
      ownership.check_claimable(str(directory), overwrite=False,
                                lock_timeout=600)
    assert str(raised.value) == (
        "output.dir: expected a writable location. Received:"
        f" {str(directory)!r} ({problem})")
  assert a_file.read_text() == "input: {}"
