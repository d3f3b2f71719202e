"""Runs `lossaudit run` with the code of another checkout (another commit).

  python benchmarks/audit_at.py CODE_DIR [lossaudit run arguments ...]

`scripts/same-outputs` and `scripts/benchmark --baseline-code` use it to run
an older commit beside this one in the same environment. Every module of
the audit comes from CODE_DIR: from its one `lossaudit` package (its
`pipelines/` and `transforms/` folders installed inside it), or, before
that layout, from its top-level `pipelines` and `transforms` packages.
"""

from __future__ import annotations

import os
import sys
import types


def audit_module(code_dir: str) -> types.ModuleType:
  """`lossaudit.pipelines.audit` as the checkout at `code_dir` has it."""
  code_dir = os.path.abspath(code_dir)
  sys.path.insert(0, code_dir)
  # Whatever this process imported of the installed project goes first.
  for name in [m for m in sys.modules
               if m.split(".")[0] in ("lossaudit", "pipelines", "transforms")]:
    del sys.modules[name]
  import lossaudit  # pylint: disable=g-import-not-at-top

  if os.path.dirname(os.path.abspath(lossaudit.__file__)) != os.path.join(
      code_dir, "lossaudit"):
    raise ImportError(f"{code_dir}: holds no lossaudit package")
  # The checkout's folders, ahead of the installed project's editable finder.
  lossaudit.__path__.append(code_dir)
  from lossaudit.pipelines import audit  # pylint: disable=g-import-not-at-top

  return audit


if __name__ == "__main__":
  sys.exit(audit_module(sys.argv[1]).main(sys.argv[2:]))
