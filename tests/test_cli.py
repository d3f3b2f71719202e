"""The `lossaudit` command's own help: every command, one line each."""

import subprocess
import sys

import pytest

from lossaudit.pipelines import cli
from tests.helpers import REPO, audit_env

COMMANDS = ["run", "demo", "compare", "export", "folds", "plan"]


def _help_part(text, title):
  """The lines of the help's part under `title:`, up to a blank line."""
  lines = text.splitlines()
  part = lines[lines.index(f"{title}:") + 1:]
  return part[:part.index("")] if "" in part else part


def _help_commands(text):
  """`{command: its line}` from the "commands:" part of the help."""
  return {line.split()[0]: " ".join(line.split()[1:])
          for line in _help_part(text, "commands")}


def test_help_lists_every_command_on_one_line():
  done = subprocess.run([sys.executable, "-m", "lossaudit", "--help"],
                        cwd=REPO, env=audit_env(), capture_output=True,
                        text=True, timeout=60, check=False)
  assert done.returncode == 0, done.stderr
  assert done.stderr == ""
  assert done.stdout.splitlines()[0].startswith(
      "usage: lossaudit COMMAND [ARGS ...]")
  listed = _help_commands(done.stdout)
  assert list(listed) == COMMANDS == list(cli.COMMANDS)
  assert listed["run"] == "audit a dataset: per-example losses, flags, report"
  assert all(listed.values())
  assert all(len(line) <= 80 for line in done.stdout.splitlines())


def test_help_gives_an_example_of_each_command_with_its_own_options(
    capsys):
  assert cli.main(["--help"]) == 0
  examples = [line.split() for line in _help_part(
      capsys.readouterr().out, "examples")]
  assert [words[:2] for words in examples] == [
      ["lossaudit", command] for command in COMMANDS]
  for words in examples:
    with pytest.raises(SystemExit):
      cli.main([words[1], "--help"])
    options = capsys.readouterr().out
    used = [w.split("=")[0] for w in words if w.startswith("--")]
    assert used, words
    for option in used:
      assert f"{option} " in options or f"{option}=" in options, (
          option, words)


def test_an_unknown_command_names_every_command(capsys):
  assert cli.main(["audit"]) == 2
  err = capsys.readouterr().err
  assert err.splitlines()[0] == (
      "lossaudit: error: unknown command 'audit'; expected one of {'run',"
      " 'demo', 'compare', 'export', 'folds', 'plan'}")
  assert list(_help_commands(err)) == COMMANDS


@pytest.mark.parametrize("command", COMMANDS)
def test_each_listed_command_is_the_one_run(command, capsys):
  with pytest.raises(SystemExit) as stopped:
    cli.main([command, "--help"])
  assert stopped.value.code == 0
  assert capsys.readouterr().out.startswith(f"usage: lossaudit {command} ")
