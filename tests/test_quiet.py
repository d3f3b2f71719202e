"""TensorFlow's start-up lines are held back unless `--verbose`."""
# ruff: noqa: E501  (real log lines, as TensorFlow wrote them)

import subprocess
import sys

import pytest

from lossaudit import quiet
from tests.helpers import audit_env, base_config

# What TensorFlow 2.21 wrote to stderr on a CPU-only machine while it
# loaded and started (copied from a run of `lossaudit run --verbose`).
START_UP = """\
WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
I0000 00:00:1796531515.251947   29121 port.cc:153] oneDNN custom operations are on. You may see slightly different numerical results due to floating-point round-off errors from different computation orders. To turn them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.
I0000 00:00:1796531515.253047   29121 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.
I0000 00:00:1796531515.296158   29121 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use available CPU instructions in performance-critical operations.
To enable the following instructions: AVX2 AVX512F AVX512_VNNI AVX512_BF16 AVX_VNNI FMA, in other operations, rebuild TensorFlow with the appropriate compiler flags.
E0000 00:00:1796531450.905987   28724 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)
"""
CUINIT = START_UP.splitlines(keepends=True)[-1]
OTHERS = """\
/x/keras/src/saving.py:12: UserWarning: a warning that matters
E0000 00:00:1796531450.905987   28724 op_kernel.cc:1857] OP_REQUIRES failed
Traceback (most recent call last):
"""


def test_start_up_lines_go_and_the_rest_stays():
  assert quiet.kept_lines(START_UP + OTHERS, has_gpu_device=False) == OTHERS
  # Where a GPU is there, a failed cuInit is news.
  assert quiet.kept_lines(START_UP + OTHERS, has_gpu_device=True) == (
      CUINIT + OTHERS)


_CHILD = """
import os, sys
from lossaudit import quiet
with quiet.tensorflow_start_up_lines(verbose=sys.argv[1] == "verbose"):
  os.write(2, sys.argv[2].encode())
  print("from python", file=sys.stderr)
os.write(2, b"after\\n")
"""


def _child(mode):
  return subprocess.run(
      [sys.executable, "-c", _CHILD, mode, START_UP + OTHERS],
      capture_output=True, text=True, env=audit_env(), timeout=60,
      check=True).stderr


def test_descriptor_2_is_held_back_and_written_back_filtered():
  kept = quiet.kept_lines(START_UP, quiet.has_gpu_device())
  assert _child("quiet") == kept + OTHERS + "from python\nafter\n"
  assert _child("verbose") == START_UP + OTHERS + "from python\nafter\n"


def test_a_run_writes_only_its_own_lines(write_config, tfrecord_dir,
                                         classifier_path, tmp_path):
  config = write_config(base_config(tfrecord_dir / "*.tfrecord*",
                                    classifier_path, tmp_path / "out"))
  env = audit_env()
  env.pop("TF_CPP_MIN_LOG_LEVEL")
  done = subprocess.run(
      [sys.executable, "-m", "lossaudit.pipelines.cli", "run", "--config",
       config], capture_output=True, text=True, env=env, timeout=300,
      check=True)
  lines = (done.stdout + done.stderr).splitlines()
  assert lines and all(line.startswith("lossaudit: ") for line in lines), (
      lines)


def _command(*args):
  """`lossaudit ARGS` in a child with TensorFlow's own log level (the
  command sets 2 itself); returns `(stdout, stderr)`."""
  env = audit_env()
  env.pop("TF_CPP_MIN_LOG_LEVEL")
  done = subprocess.run([sys.executable, "-m", "lossaudit", *args],
                        capture_output=True, text=True, env=env, timeout=300,
                        check=True)
  return done.stdout, done.stderr


@pytest.mark.slow  # A scenario variant; the default suite keeps its core.
def test_folds_writes_only_its_own_lines(write_config, tfrecord_dir,
                                         tmp_path):
  config = write_config(base_config(
      tfrecord_dir / "*.tfrecord*", str(tmp_path / "fold-{fold}.keras"),
      tmp_path / "unused", model={"folds": 3}))
  out, err = _command("folds", "--config", config, "--output",
                      str(tmp_path / "folds"))
  assert err == ""
  assert out.splitlines() == [
      f"lossaudit: wrote 3,000 rows (id, fold) to {tmp_path / 'folds'};"
      " skipped 0 rows (0 without an id, 0 whose id is not UTF-8)"]


@pytest.mark.slow  # 15 s: trains the demo model and audits it.
def test_the_demo_writes_only_its_own_lines(tmp_path):
  out, err = _command("demo", "--output", str(tmp_path))
  lines = (out + err).splitlines()
  # Its own lines, and lossaudit run's.
  assert lines[0].startswith("Building the demo data in ")
  assert any(line.startswith("Flipped labels: 90 of 899;") for line in lines)
  assert all(line.startswith(("lossaudit: ", "Building ", "Flipped ", "  "))
             for line in lines), lines
