"""Dead letters: the inputs a run could not read or score, each with a reason.

Reading (`transforms/read.py`), scoring (`lossaudit/scoring.py`) and the
audit's set-up (files that are not regular) all write entries made here, one
JSON line each in `dead_letter/*.jsonl`; summary.json counts them by reason.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

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
UNREADABLE_FILE = "unreadable_file"
BAD_ID = "bad_id"
BAD_SLICE = "bad_slice"
LABEL_NOT_INTEGER = "label_not_integer"
BAD_WEIGHT = "bad_weight"
NOT_A_REGULAR_FILE = "not_a_regular_file"


def dead_letter(source: str, id_: Optional[str], error: str,
                reason: str) -> Dict[str, Any]:
  """One dead-letter entry, as written to `dead_letter/*.jsonl`.

  Args:
    source: the file the input came from.
    id_: its id, when one could be read.
    error: what was wrong, for a person.
    reason: a reason code (the first problem found), for counting.
  """
  return {"source": source, "id": id_, "error": error, "reason": reason}
