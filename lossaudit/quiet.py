"""TensorFlow's start-up lines, held back unless `--verbose`.

TensorFlow's libraries write to file descriptor 2 from C++ while they load,
before `TF_CPP_MIN_LOG_LEVEL` is read: absl's "All log messages before
absl::InitializeLog()" line, oneDNN's notice, cudart_stub's "Could not find
cuda drivers" (each twice), and on a machine without a GPU device, "failed
call to cuInit" when the runtime starts. `tensorflow_start_up_lines()`
sends descriptor 2 to a scratch file while TensorFlow loads and the
pre-run check runs (`lossaudit run`), while the first records are read
(`lossaudit folds`) or while the demo model trains (`lossaudit demo`), then
writes back every line but those (a Python warning, a traceback, a crash's
last words all come through).
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import sys
import tempfile
from typing import Iterator

_NOISE = (
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are"
    r" written to STDERR",
    r"[IW]\d{4} .* port\.cc:\d+\] oneDNN custom operations are on",
    r"[IW]\d{4} .* cudart_stub\.cc:\d+\] ",
    r"[IW]\d{4} .* cpu_feature_guard\.cc:\d+\] ",
    r"To enable the following instructions: .* in other operations, rebuild"
    r" TensorFlow with the appropriate compiler flags\.",
)
# Without a GPU device node the cuInit failure says only that.
_NO_GPU_NOISE = (r"E\d{4} .* cuda_(platform|executor|diagnostics)\.cc:\d+\] ",)


def noise_pattern(has_gpu_device: bool) -> re.Pattern:
  """The lines `tensorflow_start_up_lines` drops."""
  lines = _NOISE if has_gpu_device else _NOISE + _NO_GPU_NOISE
  return re.compile("|".join(f"(?:{line})" for line in lines))


def kept_lines(text: str, has_gpu_device: bool) -> str:
  """`text` without TensorFlow's start-up lines."""
  noise = noise_pattern(has_gpu_device)
  return "".join(line for line in text.splitlines(keepends=True)
                 if not noise.match(line))


def has_gpu_device() -> bool:
  """Whether this machine has an NVIDIA device node."""
  return bool(glob.glob("/dev/nvidia[0-9]*"))


def start_tensorflow() -> None:
  """Loads TensorFlow and starts its runtime (listing the devices is when
  it calls cuInit), so that what it writes then falls inside
  `tensorflow_start_up_lines` rather than in the pipeline's first step."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  tf.config.list_physical_devices()


@contextlib.contextmanager
def tensorflow_start_up_lines(verbose: bool) -> Iterator[None]:
  """Holds back what descriptor 2 gets inside the block; writes it back
  without TensorFlow's start-up lines when the block ends (all of it with
  `verbose`, which holds nothing back)."""
  if verbose:
    yield
    return
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile(mode="w+b") as held:
    os.dup2(held.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      held.seek(0)
      text = kept_lines(held.read().decode("utf-8", "replace"),
                        has_gpu_device())
      if text:
        sys.stderr.write(text)
        sys.stderr.flush()
