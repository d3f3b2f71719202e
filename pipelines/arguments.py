"""`lossaudit run`'s own options (argparse only: read before Beam loads)."""

from __future__ import annotations

import argparse
from typing import Optional, Sequence

# The options `lossaudit run` takes itself; every other goes to Beam.
RUN_FLAGS = ("--config", "--set")


def parse_args(argv: Optional[Sequence[str]] = None):
  """`--config`, `--set`, `--verbose` and the Beam options that pass
  through."""
  parser = argparse.ArgumentParser(
      prog="lossaudit run", allow_abbrev=False,
      description="Audit a dataset with a saved model's per-sample losses.")
  parser.add_argument("--config", required=True, help="YAML config file")
  parser.add_argument(
      "--set", action="append", default=[], metavar="KEY=VALUE",
      help="override one dotted config key (value parsed as YAML)")
  parser.add_argument(
      "--verbose", action="store_true",
      help="show TensorFlow's start-up log lines (oneDNN, CUDA)")
  return parser.parse_known_args(argv)
