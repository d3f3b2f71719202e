"""The k-fold loop of docs/out-of-sample.md, pasted as written into a new
folder: the data, `lossaudit folds`, five Keras fold models with four
checkpoints each from one process, `lossaudit run`, and cleanlab agreeing
on the written probabilities; then the PyTorch variant (when torch is
installed)."""

import os
import re
import subprocess
import sys

import pytest

from tests.helpers import audit_env

PAGE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "docs",
                    "out-of-sample.md")


def _block(name: str) -> str:
  """The code block after `<!-- docs-NAME -->` in the page."""
  text = open(PAGE, encoding="utf-8").read()
  found = re.search(rf"<!-- docs-{name} -->\n```[a-z]*\n(.*?)```", text,
                    re.DOTALL)
  assert found, name
  return found.group(1)


def _run(block: str, cwd) -> str:
  """A Python block, or a `lossaudit ...` command line, run in `cwd`."""
  if block.startswith("lossaudit "):
    argv = [sys.executable, "-m", "lossaudit", *block.split()[1:]]
  else:
    argv = [sys.executable, "-c", block]
  done = subprocess.run(argv, cwd=cwd, env=audit_env(), capture_output=True,
                        text=True, timeout=600)
  assert done.returncode == 0, (block, done.stdout, done.stderr)
  return done.stdout


@pytest.mark.slow
def test_the_docs_kfold_loop_works_when_pasted(tmp_path):
  for name in ("kfold-data", "kfold-folds", "kfold-keras", "kfold-run"):
    _run(_block(name), tmp_path)
  printed = _run(_block("kfold-cleanlab"), tmp_path)
  assert re.fullmatch(r"\d+ label issues, as cleanlab finds them\n", printed)
  assert int(printed.split()[0]) > 50
  pytest.importorskip("torch")
  _run(_block("kfold-pytorch"), tmp_path)
  _run(_block("kfold-torch-run"), tmp_path)
  assert os.path.exists(tmp_path / "out" / "kfold_torch" / "summary.json")
