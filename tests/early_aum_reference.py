"""Plain numpy + cleanlab reference of issue 32's two label-issue rules.

The oracle the pipeline's tests compare against, and what
benchmarks/label_issue_f1.py measures; it imports nothing of lossaudit.

* Rule A, `heldout_selection` + `assemble_oof`: each fold's rows take the
  probabilities of that fold's checkpoint with the lowest mean loss on the
  fold's own (held-out) rows, the first checkpoint on a tie.
* Rule B, `early_aum`: the `prune_by_noise_rate` suspects on the out-of-sample
  probabilities set how many rows of each given class to flag; which rows, the
  mean margin over the usable checkpoints of a model trained on every row.
"""

from typing import NamedTuple, Optional, Tuple

import numpy as np
from cleanlab.filter import find_label_issues

CAPS = ("min", "suspects")
USABLE_RULES = ("all", "strict")


def heldout_selection(losses: np.ndarray, folds: np.ndarray, num_folds: int
                      ) -> Tuple[np.ndarray, np.ndarray]:
  """Each fold's checkpoint with the lowest mean loss on its held-out rows.

  Args:
    losses: `(C, N)` float, the per-sample loss of row n under checkpoint c of
      the model of row n's own fold (the fold that did not train on it).
    folds: `(N,)` int in `[0, num_folds)`, each row's fold.
    num_folds: K, the number of folds.

  Returns:
    `(selected, heldout)`: `(K,)` int, the checkpoint index per fold (argmin,
    the first on a tie), and `(K, C)` float64, `heldout[k, c]` = the mean of
    `losses[c, folds == k]`.
  """
  losses = np.asarray(losses, dtype=np.float64)
  folds = np.asarray(folds)
  heldout = np.stack([losses[:, folds == k].mean(axis=1)
                      for k in range(num_folds)])
  return np.argmin(heldout, axis=1), heldout


def assemble_oof(probs: np.ndarray, folds: np.ndarray, selected: np.ndarray
                 ) -> np.ndarray:
  """Out-of-fold probabilities from each fold's selected checkpoint.

  Args:
    probs: `(C, N, K)`, row n's probabilities under checkpoint c of its own
      fold's model.
    folds: `(N,)` int, each row's fold.
    selected: `(num_folds,)` int, the checkpoint per fold.

  Returns:
    `(N, K)`: row n takes `probs[selected[folds[n]], n]`.
  """
  probs = np.asarray(probs)
  rows = np.arange(probs.shape[1])
  return probs[np.asarray(selected)[np.asarray(folds)], rows]


def suspects(labels: np.ndarray, oof: np.ndarray) -> np.ndarray:
  """`(N,)` bool, cleanlab's `prune_by_noise_rate` issues on `oof` `(N, K)`."""
  return find_label_issues(np.asarray(labels), np.asarray(oof),
                           filter_by="prune_by_noise_rate", n_jobs=1)


class EarlyAum(NamedTuple):
  """What `early_aum` decided, per row and per checkpoint.

  Attributes:
    flags: `(N,)` bool, the flagged rows.
    a: `(N,)` float64, the mean margin over the usable checkpoints; None when
      the rule fell back.
    fit: `(C,)` float64, each checkpoint's accuracy on the suspects against
      their given labels (nan without suspects).
    accuracy: `(C,)` float64, each checkpoint's accuracy on all rows.
    oof_accuracy: the accuracy of `argmax oof` on all rows.
    usable: `(C,)` bool, the checkpoints the margins are averaged over.
    fell_back: True when no checkpoint was usable and `flags` are the
      suspects.
  """
  flags: np.ndarray
  a: Optional[np.ndarray]
  fit: np.ndarray
  accuracy: np.ndarray
  oof_accuracy: float
  usable: np.ndarray
  fell_back: bool


def early_aum(labels: np.ndarray, oof: np.ndarray, margins: np.ndarray,
              preds: np.ndarray, id_hash: np.ndarray, max_fit: float = 0.5,
              cap: str = "min", usable_rule: str = "all") -> EarlyAum:
  """Issue 32's rule B, `flag.label_issues: early_aum`.

  1. suspects: the `prune_by_noise_rate` issues on `oof`;
  2. `fit[c]` = the mean of `preds[c] == labels` over the suspects,
     `accuracy[c]` the same over all rows, `oof_accuracy` that of
     `argmax oof`;
  3. usable: `fit[c] <= max_fit and accuracy[c] >= oof_accuracy`; none usable:
     the flags are the suspects (fell back);
  4. `a` = the mean of `margins[usable]` over the checkpoints;
  5. per given class j, `n_j = min(#{y = j, a < 0}, #{y = j, suspect})`; the
     `n_j` rows of class j with the smallest `a` are flagged, ties to the
     smaller `id_hash`.

  Args:
    labels: `(N,)` int, the given labels.
    oof: `(N, K)` float, out-of-sample probabilities.
    margins: `(C, N)` float, `log p_y - max_{k != y} log p_k` of checkpoint c
      of the model trained on all rows (its logits give the same).
    preds: `(C, N)` int, that checkpoint's argmax.
    id_hash: `(N,)` uint64, the tie break (smaller first).
    max_fit: the largest `fit[c]` of a usable checkpoint.
    cap: "min" as above; "suspects" (a measured variant): `n_j` =
      `#{y = j, suspect}`.
    usable_rule: "all" as above; "strict" (a measured variant): also not
      usable, every checkpoint after the first with `fit[c] > max_fit`.

  Returns:
    An `EarlyAum`.
  """
  if cap not in CAPS:
    raise ValueError(f"cap: expected one of {CAPS}. Received: {cap!r}")
  if usable_rule not in USABLE_RULES:
    raise ValueError(f"usable_rule: expected one of {USABLE_RULES}. "
                     f"Received: {usable_rule!r}")
  labels = np.asarray(labels)
  margins = np.asarray(margins, dtype=np.float64)
  preds = np.asarray(preds)
  id_hash = np.asarray(id_hash, dtype=np.uint64)
  suspect = suspects(labels, oof)

  hits = preds == labels[None, :]
  with np.errstate(invalid="ignore", divide="ignore"):
    fit = hits[:, suspect].sum(axis=1) / suspect.sum()
  accuracy = hits.mean(axis=1)
  oof_accuracy = float(np.mean(np.argmax(oof, axis=1) == labels))
  usable = (fit <= max_fit) & (accuracy >= oof_accuracy)
  if usable_rule == "strict":
    memorising = np.flatnonzero(~(fit <= max_fit))
    if memorising.size:
      usable[memorising[0]:] = False
  if not usable.any():
    return EarlyAum(suspect.copy(), None, fit, accuracy, oof_accuracy, usable,
                    True)

  a = margins[usable].mean(axis=0)
  classes, y = np.unique(labels, return_inverse=True)
  per_class_suspects = np.bincount(y[suspect], minlength=len(classes))
  if cap == "min":
    quota = np.minimum(np.bincount(y[a < 0], minlength=len(classes)),
                       per_class_suspects)
  else:
    quota = per_class_suspects
  # Rows by class, then a, then id_hash; each row's rank within its class.
  order = np.lexsort((id_hash, a, y))
  starts = np.concatenate([[0], np.cumsum(np.bincount(y, minlength=len(
      classes)))[:-1]])
  rank = np.arange(len(order)) - starts[y[order]]
  flags = np.zeros(len(labels), dtype=bool)
  flags[order[rank < quota[y[order]]]] = True
  return EarlyAum(flags, a, fit, accuracy, oof_accuracy, usable, False)
