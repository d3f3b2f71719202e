"""The README's and docs/' code blocks, run as written (Sybil), and the
generated config reference, in sync with the config dataclasses.

Each page runs in a new folder, its blocks in order in one namespace:
```python blocks as Python; ```bash blocks line by line (a `lossaudit ...`
line through the command's own entry point, in this process; any other
through bash); a ```yaml block whose first line is `# NAME` is written to
NAME, any other is parsed. `<!-- skip: next "why" -->` (or `skip: start`
... `skip: end`) leaves out what cannot run here (Dataflow, gs:// buckets,
the slow k-fold loop that tests/test_readme_kfold.py runs).
"""

import dataclasses
import glob
import os
import pathlib
import re
import shlex
import subprocess
import unittest

import pytest
import yaml
from sybil import Sybil
from sybil.parsers.markdown import (
  CodeBlockParser,
  PythonCodeBlockParser,
  SkipParser,
)

from lossaudit import config, config_reference, rules
from lossaudit.pipelines import cli
from tests.helpers import REPO, audit_env

# README.md's blocks are the quickstart, run by its own test below.
PAGES = sorted(os.path.relpath(p, REPO) for p in glob.glob(
    os.path.join(REPO, "docs", "**", "*.md"), recursive=True))
# Pages whose code trains models for a while: run with -m slow.
SLOW_PAGES = ("docs/best-label-issues.md",)


def _commands(source: str):
  """The command lines of a shell block (continuations joined)."""
  for line in source.replace("\\\n", " ").splitlines():
    if line.strip() and not line.lstrip().startswith("#"):
      yield line.strip()


def _run_bash(example) -> None:
  for line in _commands(example.parsed):
    if line.startswith("lossaudit "):
      code = cli.main(shlex.split(line)[1:])
      assert code == 0, f"{line!r} exited {code}"
    else:
      done = subprocess.run(["bash", "-c", line], env=audit_env(),
                            capture_output=True, text=True, timeout=300,
                            check=False)
      assert done.returncode == 0, (line, done.stdout, done.stderr)


def _run_yaml(example) -> None:
  source = example.parsed
  first = source.splitlines()[0]
  if first.startswith("# ") and len(first.split()) == 2:
    with open(first.split()[1], "w", encoding="utf-8") as f:
      f.write(source)
  else:
    yaml.safe_load(source)


SYBIL = Sybil(parsers=[
    PythonCodeBlockParser(),
    CodeBlockParser("bash", _run_bash),
    CodeBlockParser("yaml", _run_yaml),
    SkipParser(),
], pattern="*.md")


@pytest.mark.parametrize("page", [
    pytest.param(page, marks=pytest.mark.slow) if page in SLOW_PAGES else page
    for page in PAGES])
def test_the_code_blocks_of_each_page_run(page, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  document = SYBIL.parse(pathlib.Path(REPO, page))
  for example in document.examples():
    try:
      example.evaluate()
    except unittest.SkipTest:
      pass


def test_the_quickstart_finds_the_wrong_labels(tmp_path, monkeypatch):
  """The README's quickstart, run as its blocks are: the values its last
  block prints, checked here against the labels it made wrong."""
  monkeypatch.chdir(tmp_path)
  document = SYBIL.parse(pathlib.Path(REPO, "README.md"))
  for example in document.examples():
    example.evaluate()
  names = document.namespace
  wrong = {f"row{i}" for i in names["wrong"]}
  flagged = set(names["flagged"]["id"])
  assert 140 <= len(flagged) <= 160  # loss_quantile 0.95 of 3,000 rows
  assert len(flagged & wrong) / len(wrong) > 0.7
  assert os.path.exists(tmp_path / "out" / "quickstart" / "report.html")


def test_the_config_reference_page_is_generated():
  with open(os.path.join(REPO, config_reference.PAGE),
            encoding="utf-8") as f:
    committed = f.read()
  assert committed == config_reference.reference_text(), (
      f"docs/reference/config.md is out of date: run"
      f" `{config_reference.COMMAND}` and commit the page")


def test_the_readme_rule_table_is_the_registry():
  with open(os.path.join(REPO, config_reference.README),
            encoding="utf-8") as f:
    readme = f.read()
  assert config_reference.with_rule_table(readme) == readme, (
      f"README.md's rule table is out of date: run"
      f" `{config_reference.COMMAND}` and commit it")
  for reason in rules.reasons():
    assert f"| `{reason}` |" in readme


def test_with_rule_table_replaces_only_the_table():
  readme = ("intro\n<!-- rule-table: x -->\n| old |\n<!-- /rule-table -->"
            "\nafter\n")
  replaced = config_reference.with_rule_table(readme)
  assert replaced.startswith("intro\n<!-- rule-table: x -->\n| reason |")
  assert replaced.endswith("|\n<!-- /rule-table -->\nafter\n")
  assert "| old |" not in replaced


SECTIONS = [config.InputConfig, config.ModelConfig, config.LossConfig,
            config.LossOutputConfig, config.StatsConfig, config.OutputConfig,
            config.CleanConfig, config.WeightsConfig, config.GateConfig,
            config.RuntimeConfig, config.DynamicsConfig, config.AuditConfig]


@pytest.mark.parametrize("section", SECTIONS, ids=lambda c: c.__name__)
def test_every_config_key_has_one_line_of_help(section):
  for field in dataclasses.fields(section):
    if config.RULE in field.metadata:
      help_ = field.metadata[config.HELP]
      assert help_ and "\n" not in help_, f"{section.__name__}.{field.name}"


def test_the_reference_lists_every_key_with_its_rule():
  text = config_reference.reference_text()
  rows = {line.split(" | ")[0][3:-1]: line.split(" | ")
          for line in text.splitlines() if line.startswith("| `")}
  assert rows["input.format"][2:4] == [
      "`tfrecord`", "one of {'tfrecord', 'parquet'}"]
  assert rows["batch_size"][1:4] == [
      "`int`", "`1024`", "an integer in [1, 1048576]"]
  assert rows["output.clean.relabel_min_probability"][2] == "`0.9`"
  assert rows["loss.outputs[].weight"][2] == "`1.0`"
  assert "loss.outputs[].index" not in rows
  assert rows["flag.loss_quantile"][3] == "null or a number in [0, 1]"
  assert rows["flag.top_k"][3] == "null or a positive integer"
  assert rows["input.pad_value"][3] == "a number or null"
  # Flag keys get their help from the flag rules; a placeholder until then.
  assert rows["flag.loss_quantile"][4].rstrip(" |")


def _keys(mapping, prefix=""):
  for key, value in mapping.items():
    if isinstance(value, dict) and key != "args":
      yield from _keys(value, f"{prefix}{key}.")
    else:
      yield prefix + key


def test_the_annotated_config_names_every_key_at_its_default(tmp_path):
  """docs/config.md's annotated config: every key of the reference but
  those of the nested sections (told in its comments), each at its default
  but the paths; a key that has an effect only in a mode the example is not
  in is commented out (`# key: value`), since a config setting it is
  refused."""
  with open(os.path.join(REPO, "docs", "config.md"), encoding="utf-8") as f:
    block = f.read().split("```yaml\n", 1)[1].split("```", 1)[0]
  every_key = re.sub(r"(?m)^( {0,2})# ( {0,2}[a-z_]+:)", r"\1\2", block)
  reference = {line.split(" | ")[0][3:-1] for line in
               config_reference.reference_text().splitlines()
               if line.startswith("| `")}
  nested = {k for k in reference if k.startswith(
      ("loss.outputs[].", "output.clean.", "output.weights."))}
  assert set(_keys(yaml.safe_load(every_key))) == reference - nested
  (tmp_path / "annotated.yaml").write_text(block)
  (tmp_path / "paths.yaml").write_text(
      "input: {pattern: data/part-*.tfrecord.gz}\n"
      "model: {path: models/demo.keras}\noutput: {dir: out/demo}\n")
  assert config.load_config(str(tmp_path / "annotated.yaml")) == (
      config.load_config(str(tmp_path / "paths.yaml")))


def test_the_readme_opens_with_the_two_commands():
  with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
    opening = f.read().split("\n\n", 2)[1]
  assert opening == "```text\nscripts/demo\nscripts/test\n```"
