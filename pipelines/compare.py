"""`lossaudit compare BASELINE_DIR CURRENT_DIR`: drift and quality gates.

Reads the two runs' `summary.json`, writes `drift.json` (into CURRENT_DIR
unless `--output` says otherwise) and exits 3 when a gate fails. The gates
are the current run's `gate:` config unless given here.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from lossaudit import drift, outputs
from lossaudit.config import ConfigError, GateConfig


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog="lossaudit compare",
      description="Compare a run with a baseline run; exit 3 when a gate"
      " fails.")
  parser.add_argument("baseline", metavar="BASELINE_DIR",
                      help="output.dir of the earlier run")
  parser.add_argument("current", metavar="CURRENT_DIR",
                      help="output.dir of the run to check")
  parser.add_argument("--max-flagged-fraction", type=float, default=None,
                      help="fail when flagged.total / examples_scored"
                      " exceeds it (default: the current run's gate config)")
  parser.add_argument("--max-quantile-shift", type=float, default=None,
                      help="fail when a loss quantile moves by more than this"
                      " fraction (default: the current run's gate config)")
  parser.add_argument("--shift-quantiles", type=float, nargs="+",
                      default=None, help="the quantiles --max-quantile-shift"
                      " watches (default: the current run's gate config, or"
                      " all)")
  parser.add_argument("--output", default=None,
                      help="where to write drift.json (default:"
                      " CURRENT_DIR/drift.json)")
  return parser.parse_args(argv)


def compare_runs(args: argparse.Namespace) -> dict:
  """The drift document of `args.current` against `args.baseline`.

  Raises:
    ConfigError: a directory without a complete run, or a bad gate value.
  """
  baseline = outputs.read_summary(args.baseline, "BASELINE_DIR")
  current = outputs.read_summary(args.current, "CURRENT_DIR")
  configured = current.get("config", {}).get("gate", {})
  gate = GateConfig(
      max_flagged_fraction=_pick(args.max_flagged_fraction,
                                 configured.get("max_flagged_fraction")),
      max_quantile_shift=_pick(args.max_quantile_shift,
                               configured.get("max_quantile_shift")),
      shift_quantiles=_pick(args.shift_quantiles,
                            configured.get("shift_quantiles")))
  return drift.compare(
      current, baseline, max_flagged_fraction=gate.max_flagged_fraction,
      max_quantile_shift=gate.max_quantile_shift,
      shift_quantiles=gate.shift_quantiles, current_dir=args.current,
      baseline_dir=args.baseline)


def _pick(given, configured):
  return configured if given is None else given


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Command-line entry point; returns 0, 2 (bad input) or 3 (gate failed)."""
  args = parse_args(argv)
  try:
    found = compare_runs(args)
  except ConfigError as e:
    print(f"lossaudit: error: compare: {e}", file=sys.stderr)
    return 2
  path = args.output or outputs.join(args.current, outputs.DRIFT)
  outputs.write_json(path, found)
  rate = found["flagged_rate"]
  print(f"lossaudit: flagged rate {rate['baseline']:.4%} -> {rate['current']:.4%}")
  shifts = {q: d["shift"] for q, d in found["quantiles"].items()
            if d["shift"] is not None}
  if shifts:
    worst = max(shifts, key=shifts.get)
    print(f"lossaudit: largest quantile shift: q{worst} moved"
          f" {shifts[worst]:.2%}")
  for g in found["gates"]:
    print(f"lossaudit: gate {g['gate']}: {'passed' if g['passed'] else 'FAILED'}"
          f" (value {g['value']}, limit {g['limit']})")
  print(f"lossaudit: wrote {path}")
  if not found["passed"]:
    print("lossaudit: " + "\nlossaudit: ".join(drift.failed_gates(found)),
          file=sys.stderr)
    return 3
  return 0


if __name__ == "__main__":
  sys.exit(main())
