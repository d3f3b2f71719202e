"""The `lossaudit` command: `run`, `demo`, `compare`, `export`, `folds` and
`plan`."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Optional, Sequence

# Every command: its module under lossaudit.pipelines (whose `main(argv)`
# runs it), its line in `lossaudit --help`, and an example of its use.
COMMANDS = {
    "run": ("audit", "audit a dataset: per-example losses, flags, report",
            "lossaudit run --config audit.yaml --set output.dir=out/a1"),
    "demo": ("demo", "train the digits demo model, audit its noisy labels",
             "lossaudit demo --output /tmp/lossaudit-demo"),
    "compare": ("compare", "compare two runs and apply the quality gates",
                "lossaudit compare out/monday out/tuesday"
                " --max-flagged-fraction 0.1"),
    "export": ("export", "write flagged rows for review: Label Studio or CSV",
               "lossaudit export out/tuesday --format csv --output"
               " review.csv"),
    "folds": ("folds", "write each input id's fold, for out-of-fold models",
              "lossaudit folds --config audit.yaml --output folds/"),
    "plan": ("plan", "the passes, bytes and worker-hours a run would take",
             "lossaudit plan --config audit.yaml --rows 1000000000"),
}

USAGE = """\
usage: lossaudit COMMAND [ARGS ...]     (lossaudit COMMAND --help: its options)

commands:
""" + "\n".join(f"  {name:<9}{line}"
                for name, (_, line, _) in COMMANDS.items()) + """

examples:
""" + "\n".join(f"  {example}" for _, _, example in COMMANDS.values()) + """

Docs: README.md and docs/ in the source (mkdocs serve); every config key
is in docs/reference/config.md."""


def main(argv: Optional[Sequence[str]] = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  if not argv or argv[0] in ("-h", "--help"):
    print(USAGE)
    return 0 if argv else 2
  command, rest = argv[0], argv[1:]
  if command not in COMMANDS:
    print(f"lossaudit: error: unknown command {command!r}; expected one of"
          f" {{{', '.join(map(repr, COMMANDS))}}}\n" + USAGE,
          file=sys.stderr)
    return 2
  # Before TensorFlow loads, for every command: TensorFlow's C++ INFO and
  # WARNING lines go, its ERROR lines stay (why 2: in `audit.main`). A
  # user's own setting wins.
  if "--verbose" not in rest:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  try:
    if command == "run":
      code, loaded = _refuse_bad_config(rest)
      if code is not None:
        return code
      from lossaudit.pipelines import audit  # pylint: disable=g-import-not-at-top
      return audit.main(rest, loaded)
    module = importlib.import_module(
        f"lossaudit.pipelines.{COMMANDS[command][0]}")
    return module.main(rest)
  except KeyboardInterrupt:  # Ctrl-C while TensorFlow and Beam load.
    print("lossaudit: interrupted by SIGINT", file=sys.stderr)
    return 130


def _refuse_bad_config(argv: Sequence[str]):
  """`(2, None)`, after printing the error, when `lossaudit run`'s config
  (with its `--set` overrides) is bad; `(None, the config)` otherwise.
  Before Beam and TensorFlow load (1 s and 3–4 s): a mistyped key is told
  at once. `audit.run` takes this config, read once: `--config <(...)` and
  `--config /dev/stdin` are pipes, which a second read finds empty.
  """
  # pylint: disable=g-import-not-at-top
  from lossaudit.config import load_config
  from lossaudit.errors import ConfigError, one_line
  from lossaudit.pipelines.arguments import parse_args
  # pylint: enable=g-import-not-at-top

  known, _ = parse_args(argv)
  try:
    loaded = load_config(known.config, known.set)
  except ConfigError as e:
    print(f"lossaudit: error: {one_line(str(e))}", file=sys.stderr)
    return 2, None
  return None, loaded


if __name__ == "__main__":
  sys.exit(main())
