"""`lossaudit.pipelines.command`: the plumbing every command shares."""

import os
import signal

import pytest

from lossaudit.errors import ConfigError
from lossaudit.pipelines import audit, command, folds


def test_print_error_is_one_line_and_the_exit_code(capsys):
  assert command.print_error("input.pattern: expected a glob.\nReceived: ''"
                             ) == 2
  assert command.print_error("stats.max_slices: 3 exceeded", code=1) == 1
  assert command.print_error("--gpu: expected a type", "scripts/dataflow") == 2
  assert capsys.readouterr().err.splitlines() == [
      "lossaudit: error: input.pattern: expected a glob. Received: ''",
      "lossaudit: error: stats.max_slices: 3 exceeded",
      "scripts/dataflow: error: --gpu: expected a type"]


def test_run_command_tells_a_config_error_on_one_line(capsys):
  def body():
    raise ConfigError("model.path: expected a file. Received: 'm'")

  assert command.run_command(body, "unused") == (2, None)
  assert command.run_command(lambda: 7, "unused") == (None, 7)
  assert capsys.readouterr().err == (
      "lossaudit: error: model.path: expected a file. Received: 'm'\n")


def test_run_command_tells_a_signal_and_what_became_of_the_command(capsys):
  def body():
    os.kill(os.getpid(), signal.SIGTERM)  # Raises `Interrupted` here.
    return "not reached"

  code, _ = command.run_command(body, "the job stopped")
  assert code == 128 + signal.SIGTERM
  assert capsys.readouterr().err == (
      "lossaudit: interrupted by SIGTERM; the job stopped\n")


def test_every_command_shares_one_signal_state():
  # `audit` notes the outcome of a remote job on the state `run_command`
  # reads: one object, not a copy per command.
  assert audit.SIGNALS is command.SIGNALS
  assert folds.command is command
  with pytest.raises(ConfigError, match=r"^--direct_num_workers: expected"):
    command.check_beam_args(["--direct_num_workers=-1"],
                            own_flags=folds.FOLDS_FLAGS)
