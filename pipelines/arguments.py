"""`lossaudit run`'s own options (argparse only: read before Beam loads)."""

from __future__ import annotations

import argparse
from typing import Optional, Sequence

# The options `lossaudit run` takes itself; every other goes to Beam.
RUN_FLAGS = ("--config", "--set")


def add_config_args(parser: argparse.ArgumentParser) -> None:
  """`--config` and `--set`, as every command that reads a config takes
  them."""
  parser.add_argument("--config", required=True, help="YAML config file")
  parser.add_argument(
      "--set", action="append", default=[], metavar="KEY=VALUE",
      help="override one dotted config key (value parsed as YAML)")


def parse_args(argv: Optional[Sequence[str]] = None):
  """`--config`, `--set`, `--verbose` and the Beam options that pass
  through."""
  parser = argparse.ArgumentParser(
      prog="lossaudit run", allow_abbrev=False,
      description="Audit a dataset with a saved model's per-sample losses.")
  add_config_args(parser)
  parser.add_argument(
      "--verbose", action="store_true",
      help="show TensorFlow's start-up log lines (oneDNN, CUDA)")
  parser.add_argument(
      "--claim-in-job", action="store_true",
      help="let the job take output.dir in its first step and release it in"
      " its last, as a job on a remote runner or from a template always"
      " does; the launching process only checks (and deletes nothing)")
  parser.add_argument(
      "--cancel-on-interrupt", action="store_true",
      help="on a remote runner, cancel the job when this process is"
      " interrupted (SIGINT, SIGTERM); by default the job keeps running")
  return parser.parse_known_args(argv)
