"""Start-up benchmark: from the command to the first scored batch.

`scripts/benchmark --startup [--repeat 5] [--dir bench]` builds the demo's
data and model once (`pipelines/demo.py`), then runs, interleaved, each in
a process of its own as a user would start it:

  (s) `lossaudit run` with the demo config: the seconds from starting the
      process to the end of its first scored batch (`summary.json` →
      `timings.first_batch_time`), and to its exit;
  (k) `lossaudit run` with a mistyped key in that config: the seconds to
      its exit (code 2).

It prints the medians and each run's `timings.startup` steps (the median
of each), also as JSON (`--json`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Dict, List

import numpy as np
import yaml

DEMO_CONFIG = os.path.join(os.path.dirname(__file__), "..", "configs",
                           "demo.yaml")


def _configs(directory: str) -> Dict[str, str]:
  """The demo config with this directory's paths, and one with a typo."""
  from lossaudit.pipelines import demo  # pylint: disable=g-import-not-at-top

  data, model = (os.path.join(directory, "demo-data"),
                 os.path.join(directory, "demo.keras"))
  if not os.path.exists(model):
    demo.build(data, model)
  with open(DEMO_CONFIG, encoding="utf-8") as f:
    config = yaml.safe_load(f)
  config["input"]["pattern"] = os.path.join(data, "part-*.tfrecord.gz")
  config["model"]["path"] = model
  config["output"] = {"dir": os.path.join(directory, "startup-out"),
                      "overwrite": True}
  paths = {}
  for name, body in (("good", config),
                     ("bad_key", {**config, "flag": {"loss_quantil": 0.9}})):
    paths[name] = os.path.join(directory, f"startup-{name}.yaml")
    with open(paths[name], "w", encoding="utf-8") as f:
      yaml.safe_dump(body, f)
  return paths


def _run(config: str) -> Dict:
  env = dict(os.environ)
  env.pop("TF_CPP_MIN_LOG_LEVEL", None)
  started = time.time()
  done = subprocess.run(
      [sys.executable, "-m", "lossaudit.pipelines.cli", "run", "--config",
       config], capture_output=True, text=True, env=env, check=False)
  return {"code": done.returncode, "exit_s": time.time() - started,
          "started": started, "stderr": done.stderr}


def measure(directory: str, repeat: int) -> Dict:
  """The medians of `repeat` interleaved runs of (s) and (k)."""
  os.makedirs(directory, exist_ok=True)
  configs = _configs(directory)
  first_batch: List[float] = []
  exits: List[float] = []
  bad_key: List[float] = []
  steps: List[Dict] = []
  for i in range(repeat):
    good = _run(configs["good"])
    if good["code"] != 0:
      raise SystemExit(f"(s) failed with {good['code']}: {good['stderr']}")
    with open(os.path.join(directory, "startup-out", "summary.json"),
              encoding="utf-8") as f:
      timings = json.load(f)["timings"]
    first_batch.append(timings["first_batch_time"] - good["started"])
    exits.append(good["exit_s"])
    steps.append(timings["startup"])
    bad = _run(configs["bad_key"])
    if bad["code"] != 2:
      raise SystemExit(f"(k) exited {bad['code']}, expected 2: "
                       f"{bad['stderr']}")
    bad_key.append(bad["exit_s"])
    print(f"  run {i + 1}/{repeat}: first batch {first_batch[-1]:.2f} s,"
          f" exit {exits[-1]:.2f} s; bad key {bad_key[-1]:.2f} s", flush=True)
  median_steps = {k: (float(np.median([s[k] for s in steps]))
                      if all(s[k] is not None for s in steps) else None)
                  for k in steps[0]}
  return {
      "repeat": repeat,
      "first_batch_s": {"median": float(np.median(first_batch)),
                        "runs": first_batch},
      "exit_s": {"median": float(np.median(exits)), "runs": exits},
      "bad_key_s": {"median": float(np.median(bad_key)), "runs": bad_key},
      "startup_steps_median_s": median_steps,
  }


def report(found: Dict) -> None:
  print(f"(s) command → first scored batch: median"
        f" {found['first_batch_s']['median']:.2f} s; → exit"
        f" {found['exit_s']['median']:.2f} s (demo config, 899 examples)")
  print(f"(k) a mistyped key → exit 2: median"
        f" {found['bad_key_s']['median']:.2f} s")
  print("steps (medians, s): " + ", ".join(
      f"{k} {v:.3f}" for k, v in found["startup_steps_median_s"].items()
      if v is not None))
