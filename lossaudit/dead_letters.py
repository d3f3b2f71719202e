"""Dead letters: the inputs a run could not read or score, each with a reason.

Reading (`transforms/read.py`), scoring (`lossaudit/model_inputs.py` finds
the `Problem`s of a batch's rows) and the audit's set-up (files that are not
regular) all write entries made here, one JSON line each in
`dead_letter/*.jsonl`; summary.json counts them by reason.
"""

from __future__ import annotations

from typing import Any, Dict, List, NamedTuple, Optional, Sequence

import numpy as np
import pyarrow as pa

# The output tag of a PTransform's dead letters.
TAG = "dead_letter"

# Reason codes: the `reason` of an entry, counted in summary.json.
MISSING_ID = "missing_id"
MISSING_FEATURE = "missing_feature"
MISSING_LABEL = "missing_label"
MISSING_WEIGHT = "missing_weight"
WRONG_SIZE = "wrong_size"
WRONG_TYPE = "wrong_type"
LABEL_OUT_OF_RANGE = "label_out_of_range"
NOT_AN_EXAMPLE = "not_an_example"
UNREADABLE_STRETCH = "unreadable_stretch"
UNREADABLE_RECORD = "unreadable_record"  # One record; the rest were read.
UNREADABLE_FILE = "unreadable_file"
BAD_ID = "bad_id"
BAD_SLICE = "bad_slice"
LABEL_NOT_INTEGER = "label_not_integer"
BAD_WEIGHT = "bad_weight"
BAD_FOLD = "bad_fold"  # Missing, or no integer in [0, model.folds).
NOT_A_REGULAR_FILE = "not_a_regular_file"
# A row of `model.predictions_column` that is not what `predictions_kind`
# says: probabilities outside [0, 1] or not summing to 1; a non-finite logit.
BAD_PREDICTION = "bad_prediction"
MODEL_ERROR = "model_error"  # The model raised a data error on the record.


def dead_letter(source: str, id_: Optional[str], error: str,
                reason: str, column: Optional[str] = None
                ) -> Dict[str, Any]:
  """One dead-letter entry, as written to `dead_letter/*.jsonl`.

  Args:
    source: the file the input came from.
    id_: its id, when one could be read.
    error: what was wrong, for a person.
    reason: a reason code (the first problem found), for counting.
    column: the column (feature) to blame, when one is; the entry then has
      `column`.
  """
  entry = {"source": source, "id": id_, "error": error, "reason": reason}
  if column is not None:
    entry["column"] = column
  return entry


class Problem(NamedTuple):
  """One kind of problem found in some rows of a batch of N rows.

  Attributes:
    rows: `(N,)` bool, the rows that have it.
    reason: its reason code.
    message: what is wrong, for a person; `{value}` stands for the row's
      entry of `values`.
    values: `(N,)` numpy or Arrow array, the value each row's message
      names; None when the message names none.
    column: the column to blame, when one is (the entry's `column`).
  """

  rows: np.ndarray
  reason: str
  message: str
  values: Any = None
  column: Optional[str] = None


def from_problems(source: str, ids: Optional[pa.Array],
                  problems: Sequence[Problem],
                  bad: np.ndarray) -> List[Dict[str, Any]]:
  """One entry per row set in `bad` `(N,)` bool.

  Args:
    source: the file the N rows came from.
    ids: `(N,)` their ids (null where unreadable), or None.
    problems: the problems found in the N rows, in the order found.
    bad: the rows to enter, each with at least one problem (the union of
      the problems' `rows`, or part of it).

  Returns:
    Entries whose reason is the row's first problem's, and whose error is
    the messages of all its problems, joined by "; ".
  """
  entries = []
  for row in np.flatnonzero(bad).tolist():
    found = [p for p in problems if p.rows[row]]
    messages = [p.message if p.values is None else
                p.message.replace("{value}", _format_value(p.values[row]))
                for p in found]
    id_ = ids[row].as_py() if ids is not None else None
    entries.append(dead_letter(source, id_, "; ".join(messages),
                               found[0].reason, found[0].column))
  return entries


def _format_value(value: Any) -> str:
  """A value as a message shows it: 2 not 2.0, float32 9.99 as 9.99, text
  quoted and bytes escaped (b'\\xff')."""
  if isinstance(value, pa.Scalar):
    value = value.as_py()
  if isinstance(value, (str, bytes)):
    return repr(value)
  if (isinstance(value, (float, np.floating)) and np.isfinite(value) and
      float(value).is_integer()):
    return str(int(value))
  return str(value)
