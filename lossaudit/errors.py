"""The errors lossaudit raises before a run, and how any error is told.

A set-up error (`ConfigError`) names the key, flag, file or column, what was
expected and what was received; the CLI prints it on one line and exits 2.
Received values are shown through `short_repr` and messages printed through
`one_line`, so a 1 MB value never makes a 1 MB message. `first_line` and
`describe_error` are how an error from TensorFlow, Beam, pyarrow or user
code is named in a message or a dead letter.
"""

from __future__ import annotations

import re
import reprlib
from typing import Any

_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 120
_REPR.maxlong = 40
_REPR.maxlevel = 3
_REPR.maxdict = _REPR.maxlist = _REPR.maxtuple = _REPR.maxset = 10
_REPR.maxfrozenset = _REPR.maxdeque = _REPR.maxarray = 10


class ConfigError(ValueError):
  """A bad configuration or set-up, detected before the pipeline runs."""


class TooManySlicesError(ValueError):
  """During a run: more distinct values of `stats.slice_by` than
  `stats.max_slices` (`transforms.stats.SliceStatsCombineFn`). The CLI
  tells it on one line (`run_failure`) and exits 1."""

  def __init__(self, column: str, max_slices: int, found: int):
    self.column, self.max_slices, self.found = column, max_slices, found
    super().__init__(
        f"stats.slice_by: expected at most stats.max_slices ({max_slices})"
        f" slices. Received: column {column!r} with more than {max_slices}"
        f" distinct values ({found} so far); the run stopped before holding"
        " statistics for each. Slice by a coarser column or raise"
        " stats.max_slices")

  def __reduce__(self):  # Beam pickles what a worker raised.
    return TooManySlicesError, (self.column, self.max_slices, self.found)


# How a runner re-raises a worker's TooManySlicesError: its type's full name
# and message in the text of an error of its own.
_RUN_FAILURES = (TooManySlicesError,)


def run_failure(error: BaseException) -> str:
  """The message of a `TooManySlicesError` that stopped a pipeline, found
  in `error`, its causes, or (as a runner words it) their text; "" when
  there is none."""
  return _raised_in_job(error, _RUN_FAILURES)


def job_config_error(error: BaseException) -> str:
  """The message of a `ConfigError` a step of the job raised (its claim of
  `output.dir`, a model changed since the run was planned), found as
  `run_failure` finds its errors; "" when there is none."""
  return _raised_in_job(error, (ConfigError,))


def _raised_in_job(error: BaseException, kinds: tuple) -> str:
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, kinds):
      return str(error)
    text = _message(error)
    for kind in kinds:
      found = re.search(rf"\b{kind.__name__}: (.*?)(?: \[while running"
                        r" '[^']*'\])?$", text, re.MULTILINE)
      if found:
        return found.group(1)
    error = error.__cause__ or error.__context__
  return ""


def expected(key: str, what: str, received: Any) -> ConfigError:
  """`key: expected what. Received: repr(received)`, to raise."""
  return ConfigError(
      f"{key}: expected {what}. Received: {short_repr(received)}")


def short_repr(value: Any) -> str:
  """`repr(value)`, cut to a few hundred characters at most (`reprlib`)."""
  return _REPR.repr(value)


def one_line(message: str, limit: int = 300) -> str:
  """`message` on one line: whitespace runs (newlines included) become one
  space, and a message longer than `limit` characters is cut to `limit`,
  ending with "…"."""
  text = " ".join(str(message).split())
  if len(text) <= limit:
    return text
  return text[:max(0, limit - 1)] + "…"


def first_line(error: BaseException) -> str:
  """The first non-blank line of `error`'s message; its type's name when the
  message is empty (or its `__str__` fails)."""
  lines = _message(error).strip().splitlines()
  return lines[0] if lines else type(error).__name__


def explained(what: str, error: BaseException) -> str:
  """`what: first line of error's message`; just `what: ` when the message
  is empty (where `first_line` would name the error's type).

  Unlike `describe_error`, the caller names the error (`what` is often its
  type's name) and the line is neither cut nor unwrapped.
  """
  line = first_line(error) if _message(error).strip() else ""
  return f"{what}: {line}"


def describe_error(error: BaseException, limit: int = 200) -> str:
  """`Type: first line of its message` (just `Type` when it has none).

  TensorFlow's AutoGraph re-raises an error from traced user code as one
  whose message starts "in user code:" (sometimes a StagingError); the error
  the user's code raised is its `__context__`, and is the one described.
  """
  while (_message(error).startswith("in user code:") and
         error.__context__ is not None):
    error = error.__context__
  lines = _message(error).strip().splitlines()
  text = one_line(lines[0], limit) if lines else ""
  name = type(error).__name__
  return f"{name}: {text}" if text else name


def _message(error: BaseException) -> str:
  """`str(error)`, or "" when its `__str__` itself fails (user code)."""
  try:
    return str(error)
  except Exception:  # pylint: disable=broad-except
    return ""


_NOT_THE_CAUSE = ("Graph execution error", "Detected at node", "<stack trace")


def op_error_line(error: BaseException) -> str:
  """What a TensorFlow op error says went wrong, on one line.

  `"InvalidArgumentError at map/while/DecodePng: Unknown image file format.
  ..."`: a graph's error begins "Graph execution error:", then the node and
  its stack; the cause is the first line that is neither those nor
  indented (node lists, stack frames), without an eager op's
  `{{function_node ...}}` prefix or its `[Op:...]` suffix.
  """
  message = str(getattr(error, "message", None) or _message(error))
  node = re.search(r"Detected at node (\S+)", message)
  causes = [line for line in message.splitlines()
            if line.strip() and not line[0].isspace() and
            not line.startswith(_NOT_THE_CAUSE)]
  cause = causes[0] if causes else first_line(error)
  cause = re.sub(r"\s*\[Op:[^\]]*\].*$", "", re.sub(r"^\{\{[^}]*\}\}\s*", "",
                                                   cause))
  where = f" at {node.group(1)}" if node else ""
  return one_line(f"{type(error).__name__}{where}: {cause}")
