"""Two runs into one `output.dir`, and runs stopped by SIGINT or SIGTERM.

Real processes: the first run's custom loss stops at its second batch (in
the pipeline, after the pre-run probe) and says so on stderr, then waits for
a line on stdin; the test acts while that run holds the directory, with no
sleeps.
"""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from lossaudit.pipelines import audit
from tests.helpers import (
  REPO,
  RUN_AUDIT,
  audit_env,
  base_config,
  start_blocked_audit,
)


def finish(process):
  """Lets a blocked run go on; returns `(exit code, stderr)`."""
  _, err = process.communicate("go\n", timeout=300)
  return process.returncode, err


def blocking_config(tfrecord_dir, classifier_path, out):
  return base_config(tfrecord_dir / "*.gz", classifier_path, out,
                     loss={"custom": "tests.custom_losses:blocking_nll"})


def read_json(path):
  from apache_beam.io.filesystems import FileSystems

  with FileSystems.open(path) as f:
    return json.loads(f.read())


def exists(path):
  from apache_beam.io.filesystems import FileSystems

  return FileSystems.exists(path)


@pytest.mark.parametrize("where", [
    "local",
    # 12 s against the emulator; the gs:// lock has its own fast tests.
    pytest.param("gs", marks=pytest.mark.slow)])
def test_a_second_run_is_refused_and_the_first_completes(
    request, tmp_path, tfrecord_dir, classifier_path, write_config, capsys,
    where):
  if where == "gs":
    out = f"{request.getfixturevalue('gcs')}/concurrent"
  else:
    out = str(tmp_path / "out")
  first = start_blocked_audit(write_config(
      blocking_config(tfrecord_dir, classifier_path, out), "first.yaml"))
  try:
    lock = read_json(f"{out}/.lossaudit-lock.json")
    # The second run is this test's own process: another pid, as it would be.
    second = audit.main(["--config", write_config(base_config(
        tfrecord_dir / "*.gz", classifier_path, out), "second.yaml")])
    second_err = capsys.readouterr().err
  finally:
    code, err = finish(first)
  assert second == 2, second_err
  assert second_err.strip().splitlines()[-1] == (
      "lossaudit: error: output.dir: expected no other run writing there;"
      f" run {lock['run_id']} (host {socket.gethostname()}, pid {first.pid},"
      f" started {lock['started_utc'].replace('T', ' ').replace('Z', ' UTC')})"
      " holds its lock .lossaudit-lock.json (wait for it to end, or delete"
      " the lock if that run is dead)")

  assert code == 0, err
  summary = read_json(f"{out}/summary.json")
  assert summary["run_id"] == lock["run_id"]
  assert read_json(f"{out}/.lossaudit-run.json")["run_id"] == lock["run_id"]
  assert not exists(f"{out}/.lossaudit-lock.json")
  assert summary["examples_read"] == 3000
  assert summary["examples_read"] == (summary["examples_scored"] +
                                      summary["examples_dead_lettered"])
  rows = 0
  for kind in ("losses", "flagged", "dead_letter"):
    for path in summary["files"][kind]:
      assert exists(path), path
  for path in summary["files"]["losses"]:
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(path) as f:
      rows += pq.read_table(f).num_rows
  assert rows == summary["examples_scored"]


# SIGTERM takes the same path with another number (tested with -m slow).
@pytest.mark.parametrize("signum", [
    signal.SIGINT, pytest.param(signal.SIGTERM, marks=pytest.mark.slow)])
def test_a_signal_stops_the_run_cleanly(tmp_path, tfrecord_dir,
                                        classifier_path, write_config, signum):
  out = tmp_path / "out"
  first = start_blocked_audit(write_config(
      blocking_config(tfrecord_dir, classifier_path, out)))
  run_id = json.loads((out / ".lossaudit-lock.json").read_text())["run_id"]
  first.send_signal(signum)
  code, err = finish(first)
  assert code == 128 + signum
  assert "Traceback" not in err
  ours = [line for line in err.splitlines() if "lossaudit" in line.lower()]
  assert ours == [
      f"lossaudit: interrupted by {signal.Signals(signum).name}; the run"
      " stopped, its scratch files and lock are removed and no summary.json"
      " was written (shards it wrote are partial; the next run deletes"
      " them)"]
  # Beam's half-written shards may stay in losses/ and the like, until the
  # next run deletes them by name.
  assert set(os.listdir(out)) <= {".lossaudit-run.json", "losses", "flagged",
                                  "dead_letter"}
  assert json.loads((out / ".lossaudit-run.json").read_text())[
      "run_id"] == run_id
  assert not (out / ".lossaudit-lock.json").exists()
  assert not (out / ".scratch").exists()
  assert not (out / "summary.json").exists()


def _live_processes():
  """`{pid: (ppid, command line)}` of every process not yet a zombie."""
  found = {}
  for name in os.listdir("/proc"):
    if not name.isdigit():
      continue
    try:
      with open(f"/proc/{name}/stat") as f:
        state, ppid = f.read().rsplit(")", 1)[1].split()[:2]
      with open(f"/proc/{name}/cmdline", "rb") as f:
        command = f.read().replace(b"\0", b" ").decode()
    except (OSError, ValueError):
      continue
    if state not in ("Z", "X"):
      found[int(name)] = (int(ppid), command)
  return found


def _under(pid, processes):
  """The pids under `pid` in `processes`, at any depth."""
  found, todo = set(), [pid]
  while todo:
    parent = todo.pop()
    for child, (ppid, _) in processes.items():
      if ppid == parent and child not in found:
        found.add(child)
        todo.append(child)
  return found


# 15-20 s: the launcher and two SDK worker processes each load TensorFlow.
@pytest.mark.slow
# "group": Ctrl-C in a terminal, SIGINT to the run and its workers at once.
@pytest.mark.parametrize("command, signum, to", [
    ("run", signal.SIGTERM, "run"), ("run", signal.SIGINT, "run"),
    ("run", signal.SIGINT, "group"), ("folds", signal.SIGTERM, "run")])
def test_a_signal_ends_a_multi_process_run_and_its_workers(
    tmp_path, tfrecord_dir, classifier_path, write_config, command, signum,
    to):
  out = tmp_path / "out"
  if command == "run":
    config = write_config(base_config(tfrecord_dir / "*.gz",
                                      classifier_path, out))
    args = ["-c", RUN_AUDIT, "--config", config]
    stopped = ("the run stopped, its scratch files and lock are removed and"
               " no summary.json was written (shards it wrote are partial;"
               " the next run deletes them)")
  else:
    config = write_config(base_config(
        tfrecord_dir / "*.gz", str(tmp_path / "fold-{fold}.keras"),
        tmp_path / "unused", model={"folds": 3}))
    args = ["-m", "lossaudit", "folds", "--config", config, "--output",
            str(out)]
    stopped = ("the job stopped and its lock is removed (run it again for"
               " the folds)")
  process = subprocess.Popen(
      [sys.executable, *args,
       "--direct_running_mode=multi_processing", "--direct_num_workers=2"],
      cwd=REPO, env=audit_env(), stdout=subprocess.DEVNULL,
      stderr=subprocess.PIPE, text=True, start_new_session=to == "group")
  try:
    # Until both SDK worker processes run (each under a shell), or the run
    # ends: the wait between looks ends early if it does.
    workers, started = set(), set()
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
      processes = _live_processes()
      under = _under(process.pid, processes)
      workers = {p for p in under if "sdk_worker_main" in processes[p][1]
                 and not processes[p][1].startswith("/bin/sh")}
      if len(workers) == 2:
        break
      with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(0.05)
    assert len(workers) == 2, process.stderr.read() if process.poll() else ""
    started = under
    assert (out / ".lossaudit-lock.json").exists()
    if to == "group":
      os.killpg(process.pid, signum)
    else:
      process.send_signal(signum)
    _, err = process.communicate(timeout=10)
  except subprocess.TimeoutExpired:
    err = "still running 10 s after the signal"
  finally:
    if process.poll() is None:  # What the run left is the test's to end.
      for pid in [process.pid, *_under(process.pid, _live_processes())]:
        with contextlib.suppress(OSError):
          os.kill(pid, signal.SIGKILL)
      process.communicate()
  assert process.returncode == 128 + signum, err
  assert not started & set(_live_processes()), err
  assert not (out / ".lossaudit-lock.json").exists()
  assert not (out / ".scratch").exists()
  assert not (out / "summary.json").exists()
  # The workers, stopped by the same Ctrl-C, may say so themselves.
  assert "Exception in thread" not in err
  if to == "run":
    assert "Traceback" not in err
  ours = [line for line in err.splitlines() if "lossaudit" in line.lower()]
  assert ours[-1] == (
      f"lossaudit: interrupted by {signal.Signals(signum).name}; {stopped}")


def test_a_signal_after_the_run_completed_is_noted_not_obeyed(capsys):
  """SIGTERM while a completed run is reported: the run's exit code, and a
  line saying so (a scheduler would retry a completed night)."""
  import signal as signals

  from lossaudit.pipelines import audit as audit_module

  with audit_module.SIGNALS:
    audit_module.SIGNALS.completed = True
    os.kill(os.getpid(), signals.SIGTERM)  # Handled before the next line.
    received = audit_module.SIGNALS.received
  assert received == signals.SIGTERM
  summary = {"examples_scored": 1, "examples_read": 1,
             "examples_dead_lettered": 0, "flagged": {"total": 0},
             "config": {"output": {"dir": "out"}},
             "gate": {"passed": False, "baseline": None, "failed": ["g"],
                      "skipped": []}}
  with audit_module.noting_signals(received):
    os.kill(os.getpid(), signals.SIGINT)
    code = audit_module._report(summary)
  assert code == 3
  assert capsys.readouterr().err.endswith(
      "lossaudit: SIGTERM arrived after the run completed; its outputs are"
      " whole, and the exit code is the run's\n")
