"""runtime.device: where the model runs, and the GPU path when there is one."""

import numpy as np
import pytest
import tensorflow as tf

from lossaudit.scoring import BatchScorer, select_device
from tests.test_score import _batch, _spec

HAS_GPU = bool(tf.config.list_physical_devices("GPU"))


def test_cpu_is_always_available():
  assert select_device("cpu") == "/CPU:0"
  assert select_device("auto") == ("/GPU:0" if HAS_GPU else "/CPU:0")


@pytest.mark.skipif(HAS_GPU, reason="a GPU is visible")
def test_gpu_requested_without_one_fails_with_the_key():
  with pytest.raises(RuntimeError, match=r"runtime.device: expected a visible"
                     r" GPU. Received: none"):
    select_device("gpu")


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="no GPU visible to TensorFlow")
def test_gpu_scores_like_the_cpu(classifier_path, columns):
  import dataclasses

  spec = _spec(classifier_path)
  on_gpu = BatchScorer(dataclasses.replace(spec, device="gpu"))
  on_cpu = BatchScorer(dataclasses.replace(spec, device="cpu"))
  assert on_gpu.device == "/GPU:0"
  gpu_scored, _ = on_gpu.score("f", _batch(columns, 1000))
  cpu_scored, _ = on_cpu.score("f", _batch(columns, 1000))
  np.testing.assert_allclose(gpu_scored.column("loss").to_numpy(),
                             cpu_scored.column("loss").to_numpy(), rtol=1e-4)
