"""runtime.device: where the model runs, and the GPU path when there is one.

Each test names the device it expects; which tests run depends on whether
TensorFlow sees a GPU here.
"""

import re

import numpy as np
import pytest
import tensorflow as tf

from lossaudit.model import select_device
from lossaudit.scoring import BatchScorer
from tests.helpers import classifier_spec, first_rows

HAS_GPU = bool(tf.config.list_physical_devices("GPU"))


def test_cpu_is_always_available():
  assert select_device("cpu") == "/CPU:0"


@pytest.mark.skipif(HAS_GPU, reason="a GPU is visible")
def test_auto_without_a_gpu_is_the_cpu():
  assert select_device("auto") == "/CPU:0"


@pytest.mark.skipif(HAS_GPU, reason="a GPU is visible")
def test_gpu_requested_without_one_fails_with_the_key():
  with pytest.raises(RuntimeError, match=re.escape(
      "runtime.device: expected a visible GPU. Received: none"
      " (tf.config.list_physical_devices('GPU') is empty)")):
    select_device("gpu")


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="no GPU visible to TensorFlow")
def test_auto_and_gpu_with_a_gpu_are_the_first_gpu():
  assert select_device("auto") == "/GPU:0"
  assert select_device("gpu") == "/GPU:0"
  assert select_device("cpu") == "/CPU:0"


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="no GPU visible to TensorFlow")
def test_gpu_scores_like_the_cpu(classifier_path, columns):
  import dataclasses

  spec = classifier_spec(classifier_path)
  on_gpu = BatchScorer(dataclasses.replace(spec, device="gpu"))
  on_cpu = BatchScorer(dataclasses.replace(spec, device="cpu"))
  assert on_gpu.device == "/GPU:0"
  gpu_scored, _ = on_gpu.score("f", first_rows(columns, 1000))
  cpu_scored, _ = on_cpu.score("f", first_rows(columns, 1000))
  np.testing.assert_allclose(gpu_scored.column("loss").to_numpy(),
                             cpu_scored.column("loss").to_numpy(), rtol=1e-4)
