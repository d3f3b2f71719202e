"""Entry point of the Dataflow Flex Template (`templates/flex/metadata.json`).

Dataflow's launcher calls this file with the template parameters as
`--config=gs://...` and `--overrides=K=V;K=V`, plus the job's own pipeline
options (`--runner`, `--project`, `--temp_location`,
`--template_location=<staging>/template_launches/<id>/job_object`, ...):
the overrides become `--set` pairs, everything else goes to `lossaudit run`
unchanged. `;` separates the pairs, so no value can hold one.
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional, Sequence

from lossaudit.errors import ConfigError, short_repr
from lossaudit.pipelines import audit


def audit_args(argv: Sequence[str]) -> List[str]:
  """The Flex Template's arguments as `lossaudit run` takes them.

  Raises:
    ConfigError: an override that is not KEY=VALUE, naming `overrides`.
  """
  parser = argparse.ArgumentParser(prog="lossaudit flex template")
  parser.add_argument("--overrides", default="")
  known, rest = parser.parse_known_args(argv)
  sets = []
  for assignment in filter(None, (a.strip()
                                  for a in known.overrides.split(";"))):
    key = assignment.partition("=")[0].strip()
    if "=" not in assignment or not key:
      raise ConfigError(
          "overrides: expected KEY=VALUE pairs separated by ';' (a value"
          f" cannot hold a ';'). Received: {short_repr(assignment)} in"
          f" {short_repr(known.overrides)}")
    sets += ["--set", assignment]
  return list(rest) + sets


def main(argv: Optional[Sequence[str]] = None) -> int:
  return audit.main_translated(audit_args, argv)


if __name__ == "__main__":
  sys.exit(main())
