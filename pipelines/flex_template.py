"""Entry point of the Dataflow Flex Template (`templates/flex/metadata.json`).

Dataflow's launcher calls this file with the template parameters as
`--config=gs://...` and `--overrides=K=V;K=V`, plus the job's own pipeline
options (`--runner`, `--project`, `--temp_location`, ...): the overrides
become `--set` pairs, everything else goes to `lossaudit run` unchanged.
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional, Sequence

from lossaudit.pipelines import audit


def audit_args(argv: Sequence[str]) -> List[str]:
  """The Flex Template's arguments as `lossaudit run` takes them."""
  parser = argparse.ArgumentParser(prog="lossaudit flex template")
  parser.add_argument("--overrides", default="")
  known, rest = parser.parse_known_args(argv)
  sets = []
  for assignment in filter(None, known.overrides.split(";")):
    sets += ["--set", assignment.strip()]
  return list(rest) + sets


def main(argv: Optional[Sequence[str]] = None) -> int:
  return audit.main(audit_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
  sys.exit(main())
