"""The numpy + cleanlab reference of issue 32's rules, on cases small enough to
work out by hand (the expected values are derived in the comments)."""

import numpy as np
import pytest

from tests import early_aum_reference as ref

# Two classes: rows 0-11 are labelled 0, rows 12-19 labelled 1. The
# out-of-sample probabilities put 0.9 on the given label, except on rows 0, 1,
# 12 and 13 where they put 0.9 on the other class. Class 0's threshold is the
# mean p0 over its rows, (10 * 0.9 + 2 * 0.1) / 12 = 0.77, class 1's
# (6 * 0.9 + 2 * 0.1) / 8 = 0.7, so every row is over exactly one threshold
# (that of its argmax): the confident joint is [[10, 2], [2, 6]], already
# calibrated (its rows sum to the class counts), and prune_by_noise_rate
# removes 2 rows of each class, those with the largest p_other - p_given
# (0.8 against -0.8): the suspects are rows 0, 1, 12 and 13.
LABELS = np.array([0] * 12 + [1] * 8)
SUSPECTS = [0, 1, 12, 13]
# The mean margin a: in class 0, rows 0, 2, 3 tie at -1 below row 1's -2; in
# class 1 every margin is positive, the suspects' the smallest.
A = np.array([-1., -2., -1., -1.] + [3.] * 8 + [0.5, 0.25] + [2.] * 6)
# Tie break: row 3 has the smallest hash of the rows tied at -1.
ID_HASH = np.array([7, 11, 9, 4] + list(range(100, 116)), dtype=np.uint64)


def _oof():
  oof = np.full((20, 2), 0.1)
  oof[np.arange(20), LABELS] = 0.9
  oof[SUSPECTS] = oof[SUSPECTS][:, ::-1]
  return oof


def _preds(margins):
  """The argmax a two-class model with these margins predicts."""
  return np.where(margins > 0, LABELS, 1 - LABELS)


def test_suspects_are_the_rows_worked_out():
  assert np.flatnonzero(ref.suspects(LABELS, _oof())).tolist() == SUSPECTS


def test_tie_break_by_smaller_id_hash():
  # Two checkpoints, margins a/2 and 3a/2 (mean a), both predicting the other
  # class exactly where a < 0 (rows 0-3): on the suspects 0, 1, 12, 13 they
  # get 12 and 13 right, fit = 2/4 = 0.5 <= 0.5; over all rows 16/20 = 0.8,
  # the oof accuracy (its argmax misses the 4 suspects): both usable.
  # Class 0: 4 rows with a < 0, 2 suspects, n_0 = 2: row 1 (-2), then of
  # rows 0, 2, 3 (-1) row 3 (hash 4 < 7 < 9). Class 1: no a < 0, n_1 = 0.
  margins = np.stack([A / 2, 3 * A / 2])
  out = ref.early_aum(LABELS, _oof(), margins, _preds(margins), ID_HASH)
  assert np.flatnonzero(out.flags).tolist() == [1, 3]
  assert not out.fell_back
  np.testing.assert_allclose(out.a, A)
  np.testing.assert_allclose(out.fit, [0.5, 0.5])
  np.testing.assert_allclose(out.accuracy, [0.8, 0.8])
  assert out.oof_accuracy == pytest.approx(0.8)
  assert out.usable.tolist() == [True, True]


def test_cap_by_suspects_flags_each_class_suspect_count():
  # As above, but n_j = the suspect count: class 0 still 2 (rows 1, 3);
  # class 1 now 2 although no a is negative: its two smallest, rows 13
  # (0.25) and 12 (0.5).
  margins = A[None, :]
  out = ref.early_aum(LABELS, _oof(), margins, _preds(margins), ID_HASH,
                      cap="suspects")
  assert np.flatnonzero(out.flags).tolist() == [1, 3, 12, 13]


def test_falls_back_to_the_suspects_when_no_checkpoint_is_usable():
  # Checkpoint 0 predicts every given label (fit 1 > 0.5); checkpoint 1
  # predicts the other class everywhere (fit 0, but accuracy 0 < 0.8).
  margins = np.stack([np.ones(20), -np.ones(20)])
  preds = np.stack([LABELS, 1 - LABELS])
  out = ref.early_aum(LABELS, _oof(), margins, preds, ID_HASH)
  assert out.fell_back
  assert out.a is None
  assert np.flatnonzero(out.flags).tolist() == SUSPECTS
  np.testing.assert_allclose(out.fit, [1.0, 0.0])
  np.testing.assert_allclose(out.accuracy, [1.0, 0.0])
  assert out.usable.tolist() == [False, False]


def test_strict_usable_ends_at_the_first_memorising_checkpoint():
  # Checkpoint 0 has margins A; checkpoint 1 memorises (predicts every given
  # label, fit 1); checkpoint 2 is A with row 2 at -5 (same signs as A, so
  # usable like checkpoint 0). "all" averages 0 and 2: row 2 at -3, row 1 at
  # -2, so class 0 flags rows 2 and 1. "strict" stops at checkpoint 1: only
  # checkpoint 0, flags rows 1 and 3 as in the tie-break case.
  late = A.copy()
  late[2] = -5.
  margins = np.stack([A, np.ones(20), late])
  preds = np.stack([_preds(A), LABELS, _preds(late)])
  every = ref.early_aum(LABELS, _oof(), margins, preds, ID_HASH)
  assert every.usable.tolist() == [True, False, True]
  assert np.flatnonzero(every.flags).tolist() == [1, 2]
  strict = ref.early_aum(LABELS, _oof(), margins, preds, ID_HASH,
                         usable_rule="strict")
  assert strict.usable.tolist() == [True, False, False]
  assert np.flatnonzero(strict.flags).tolist() == [1, 3]


def test_heldout_selection_takes_the_first_lowest_mean_loss():
  # Folds [0, 1, 0, 1]. Fold 0's mean losses over rows 0, 2: c0 (1+3)/2 = 2,
  # c1 (2+0)/2 = 1, c2 (0+2)/2 = 1 -> c1, the first of the tie. Fold 1's over
  # rows 1, 3: c0 3, c1 1, c2 0 -> c2.
  losses = np.array([[1., 2., 3., 4.],
                     [2., 1., 0., 1.],
                     [0., 0., 2., 0.]])
  folds = np.array([0, 1, 0, 1])
  selected, heldout = ref.heldout_selection(losses, folds, 2)
  assert selected.tolist() == [1, 2]
  np.testing.assert_array_equal(heldout, [[2., 1., 1.], [3., 1., 0.]])


def test_assemble_oof_takes_each_row_from_its_fold_checkpoint():
  # probs[c, n] = [c, n]: with fold 0 on c1 and fold 1 on c2, rows 0 and 2
  # (fold 0) read [1, n], rows 1 and 3 (fold 1) read [2, n].
  probs = np.stack([np.stack([np.full(4, c), np.arange(4)], axis=1)
                    for c in range(3)]).astype(float)
  oof = ref.assemble_oof(probs, np.array([0, 1, 0, 1]), np.array([1, 2]))
  np.testing.assert_array_equal(oof, [[1, 0], [2, 1], [1, 2], [2, 3]])
