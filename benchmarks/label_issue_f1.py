"""Label issues against injected noise: cleanlab's filters and early AUM.

  python benchmarks/label_issue_f1.py [--seeds 3] [--cases a,b,...]
      [--epochs 40] [--quick] [--out FILE.md] [--json FILE.json]

The F1 table of the docs' "Getting the best label issues" (issue 32). For
each case and seed it injects label noise into a dataset of our own (no
downloads), then trains small Keras MLPs that can memorise it:

* K=5 fold models (row i's fold: its position after a seeded shuffle, mod
  5), each on the other folds' rows for the whole schedule, keeping its
  logits on its own (held-out) rows after epochs 1, 2, 4, ..., last;
* one full model on every row, the same schedule, keeping at the same
  epochs each row's margin (its given label's logit minus the largest
  other) and argmax.

and scores each row set flagged against the injected noise (F1):

* cleanlab 2.9's `find_label_issues`, each `filter_by`, on the last
  checkpoints' out-of-fold probabilities ("last") and on those of each
  fold's checkpoint with the lowest mean held-out loss ("heldout", rule A);
* early AUM (rule B) on the same two, as the issue writes it (cap "min",
  every usable checkpoint) and its measured variants: cap "suspects",
  usable "strict", and both.

Rules A and B are the numpy + cleanlab reference, tests/early_aum_reference.py.
It prints a markdown table (mean F1 over the seeds; the fell-back count for
early AUM) and writes it to `--out`, every seed's scores to `--json`.
Cases:

  synthetic: 12k rows, 8 Gaussian classes in 20 dimensions, 16%
    class-conditional noise within 4 class pairs (0 <-> 1, 2 <-> 3, ...),
    from 24% of class 0 down to 8% of class 7;
  digits-pair-20, digits-pair-30: sklearn digits, 20% / 30% of the rows
    flipped from y to (y + 1) mod 10;
  digits-uniform-20: sklearn digits, 20% flipped to another class at random.

The default run (4 cases x 3 seeds, 40 epochs) takes about 10 minutes on 2
CPU cores shared with other work (run it with `nice -n 10`): about 100 s a
seed of synthetic, 30-45 s a seed of digits. `--quick` (1 seed of
digits-pair-20 and digits-uniform-20) takes about 1 minute.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Callable, Dict, List, NamedTuple, Tuple

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from cleanlab.filter import find_label_issues  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from tests import early_aum_reference as ref  # noqa: E402

FOLDS = 5
EPOCHS = 40
HIDDEN = (256, 256)
BATCH_SIZE = 64
LEARNING_RATE = 2e-3
FILTERS = ("prune_by_noise_rate", "prune_by_class", "both",
           "confident_learning", "predicted_neq_given")
# (name, cap, usable_rule)
AUM_RULES = (("early AUM", "min", "all"),
             ("early AUM, cap suspects", "suspects", "all"),
             ("early AUM, usable strict", "min", "strict"),
             ("early AUM, cap suspects + strict", "suspects", "strict"))
OOFS = ("last", "heldout")


class Noisy(NamedTuple):
  """A case's data: features `(N, D)` float32, given labels `(N,)`, noise."""
  x: np.ndarray
  labels: np.ndarray
  noisy: np.ndarray


def _flip(truth: np.ndarray, rows: np.ndarray, to: np.ndarray
          ) -> Tuple[np.ndarray, np.ndarray]:
  """`truth` with `rows` relabelled `to`, and the rows that changed."""
  labels = truth.copy()
  labels[rows] = to
  return labels, labels != truth


# Each class's share flipped to its pair's other class (0 <-> 1, 2 <-> 3, ...),
# 16% of all rows.
RATES = (0.24, 0.20, 0.20, 0.16, 0.16, 0.12, 0.12, 0.08)


def synthetic(seed: int) -> Noisy:
  """12k rows, 8 Gaussian classes, 16% noise within 4 class pairs."""
  rng = np.random.default_rng(seed)
  classes, dims, per_class = 8, 20, 1500
  centres = rng.normal(size=(classes, dims)) * 1.6
  truth = np.repeat(np.arange(classes), per_class)
  x = centres[truth] + rng.normal(size=(len(truth), dims))
  rows, to = [], []
  for source, rate in enumerate(RATES):
    pick = rng.choice(np.flatnonzero(truth == source),
                      round(rate * per_class), replace=False)
    rows.append(pick)
    to.append(np.full(len(pick), source ^ 1))
  labels, noisy = _flip(truth, np.concatenate(rows), np.concatenate(to))
  return Noisy(x.astype(np.float32), labels, noisy)


def _digits(seed: int, rate: float, pair: bool) -> Noisy:
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  x, truth = load_digits(return_X_y=True)
  rng = np.random.default_rng(seed)
  rows = rng.choice(len(truth), round(rate * len(truth)), replace=False)
  if pair:
    to = (truth[rows] + 1) % 10
  else:
    to = (truth[rows] + rng.integers(1, 10, len(rows))) % 10
  labels, noisy = _flip(truth, rows, to)
  return Noisy((x / 16.0).astype(np.float32), labels, noisy)


CASES: Dict[str, Tuple[str, Callable[[int], Noisy]]] = {
    "synthetic": ("12k rows, 8 classes, 16% class-conditional", synthetic),
    "digits-pair-20": ("digits, 20% pair y -> y+1",
                       lambda seed: _digits(seed, 0.2, True)),
    "digits-uniform-20": ("digits, 20% uniform",
                          lambda seed: _digits(seed, 0.2, False)),
    "digits-pair-30": ("digits, 30% pair y -> y+1",
                       lambda seed: _digits(seed, 0.3, True)),
}
QUICK = ("digits-pair-20", "digits-uniform-20")


def checkpoints(epochs: int) -> List[int]:
  """Epochs 1, 2, 4, ... below `epochs`, then `epochs`."""
  return [e for e in (2 ** i for i in range(epochs.bit_length()))
          if e < epochs] + [epochs]


def _train(x: np.ndarray, labels: np.ndarray, classes: int, seed: int,
           epochs: List[int], x_eval: np.ndarray) -> np.ndarray:
  """Logits `(C, M, classes)` float64 on `x_eval` after each epoch listed."""
  import keras  # pylint: disable=g-import-not-at-top
  keras.utils.set_random_seed(seed)
  model = keras.Sequential(
      [keras.Input((x.shape[1],))]
      + [keras.layers.Dense(h, activation="relu") for h in HIDDEN]
      + [keras.layers.Dense(classes)])
  model.compile(keras.optimizers.Adam(LEARNING_RATE),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  out, done = [], 0
  for epoch in epochs:
    model.fit(x, labels, batch_size=BATCH_SIZE, epochs=epoch,
              initial_epoch=done, shuffle=True, verbose=0)
    done = epoch
    out.append(np.asarray(model.predict_on_batch(x_eval), dtype=np.float64))
  return np.stack(out)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
  top = logits.max(axis=-1, keepdims=True)
  return logits - top - np.log(np.exp(logits - top).sum(axis=-1,
                                                          keepdims=True))


def _margins(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """`(C, N)`: the given label's logit minus the largest other."""
  rows = np.arange(len(labels))
  own = logits[:, rows, labels]
  other = logits.copy()
  other[:, rows, labels] = -np.inf
  return own - other.max(axis=-1)


def _f1(flags: np.ndarray, noisy: np.ndarray) -> float:
  hits = np.sum(flags & noisy)
  return float(2 * hits / (flags.sum() + noisy.sum()))


def run_one(data: Noisy, seed: int, epochs: int) -> Dict[str, Dict]:
  """Every method's flags on one case and seed, scored.

  Returns:
    `{method: {"f1", "precision", "recall", "fell_back"?, "usable"?}}`, and
    under "_info" the fold models' selected epochs and the accuracies.
  """
  rng = np.random.default_rng(seed + 7919)
  n = len(data.labels)
  classes = int(data.labels.max()) + 1
  folds = np.empty(n, dtype=np.int64)
  folds[rng.permutation(n)] = np.arange(n) % FOLDS
  id_hash = rng.integers(0, np.iinfo(np.int64).max, n).astype(np.uint64)
  ckpts = checkpoints(epochs)

  fold_logits = np.empty((len(ckpts), n, classes))
  for k in range(FOLDS):
    train, held = folds != k, folds == k
    fold_logits[:, held] = _train(data.x[train], data.labels[train], classes,
                                  seed * 100 + k, ckpts, data.x[held])
  full_logits = _train(data.x, data.labels, classes, seed * 100 + FOLDS,
                       ckpts, data.x)

  log_probs = _log_softmax(fold_logits)
  probs = np.exp(log_probs)
  losses = -log_probs[:, np.arange(n), data.labels]
  selected, _ = ref.heldout_selection(losses, folds, FOLDS)
  oofs = {"last": probs[-1],
          "heldout": ref.assemble_oof(probs, folds, selected)}
  margins = _margins(full_logits, data.labels)
  preds = full_logits.argmax(axis=-1)

  def score(flags):
    hits = np.sum(flags & data.noisy)
    return {"f1": _f1(flags, data.noisy),
            "precision": float(hits / max(flags.sum(), 1)),
            "recall": float(hits / data.noisy.sum())}

  result = {}
  for which, oof in oofs.items():
    for name in FILTERS:
      result[f"cleanlab {name}, {which}"] = score(find_label_issues(
          data.labels, oof, filter_by=name, n_jobs=1))
    for name, cap, usable_rule in AUM_RULES:
      out = ref.early_aum(data.labels, oof, margins, preds, id_hash,
                          cap=cap, usable_rule=usable_rule)
      result[f"{name}, {which}"] = dict(
          score(out.flags), fell_back=out.fell_back,
          usable=[ckpts[c] for c in np.flatnonzero(out.usable)])
  result["_info"] = {
      "selected_epochs": [ckpts[c] for c in selected],
      "oof_accuracy": {w: float(np.mean(o.argmax(1) == data.labels))
                       for w, o in oofs.items()},
      "full_train_accuracy": [float(a) for a in
                              np.mean(preds == data.labels, axis=1)],
  }
  return result


def _methods() -> List[str]:
  names = []
  for which in OOFS:
    names += [f"cleanlab {f}, {which}" for f in FILTERS]
  for which in OOFS:
    names += [f"{name}, {which}" for name, _, _ in AUM_RULES]
  return names


# The docs' table: (column, method).
SUMMARY = (("cleanlab, folds trained for the full schedule",
            "cleanlab prune_by_noise_rate, last"),
           ("cleanlab, folds early-stopped on their held-out loss",
            "cleanlab prune_by_noise_rate, heldout"),
           ("early AUM, full-schedule folds", "early AUM, last"),
           ("early AUM, early-stopped folds", "early AUM, heldout"),
           ("variant: cap suspects, full-schedule folds",
            "early AUM, cap suspects, last"),
           ("variant: usable strict, full-schedule folds",
            "early AUM, usable strict, last"))


def _cell(runs: List[Dict]) -> str:
  """Mean F1, with the fell-back count of early AUM."""
  cell = f"{np.mean([r['f1'] for r in runs]):.3f}"
  if "fell_back" in runs[0]:
    cell += f" ({sum(r['fell_back'] for r in runs)})"
  return cell


def table(results: Dict[str, List[Dict]], seeds: int) -> str:
  """Markdown: the docs' table (a row per case), then every method's F1,
  precision and recall (a row per method), then the checkpoints per seed."""
  cases = list(results)
  lines = [f"F1 against the injected noise, mean over {seeds} seed(s) "
           "(n: the runs where early AUM fell back to the suspects). "
           "cleanlab is `find_label_issues(filter_by=\"prune_by_noise_rate\")`"
           "; early-stopped folds: each fold's checkpoint with the lowest mean "
           "held-out loss.", "",
           "| case | " + " | ".join(c for c, _ in SUMMARY) + " |",
           "| --- |" + " --- |" * len(SUMMARY)]
  for case in cases:
    lines.append(f"| {case} | " + " | ".join(
        _cell([r[m] for r in results[case]]) for _, m in SUMMARY) + " |")
  lines += ["", "Every cleanlab filter and early-AUM variant, F1; \"last\": "
            "the out-of-fold probabilities of each fold's last checkpoint, "
            "\"heldout\": of its checkpoint with the lowest mean held-out "
            "loss:", "",
            "| method | " + " | ".join(cases) + " |",
            "| --- |" + " --- |" * len(cases)]
  for method in _methods():
    cells = [_cell([r[method] for r in results[c]]) for c in cases]
    lines.append(f"| {method} | " + " | ".join(cells) + " |")
  lines += ["", "Precision / recall (mean over seeds):", "",
            "| method | " + " | ".join(cases) + " |",
            "| --- |" + " --- |" * len(cases)]
  for method in _methods():
    cells = [f"{np.mean([r[method]['precision'] for r in results[c]]):.3f}"
             f" / {np.mean([r[method]['recall'] for r in results[c]]):.3f}"
             for c in cases]
    lines.append(f"| {method} | " + " | ".join(cells) + " |")
  lines += ["", "Per seed: each fold's selected epoch; usable full-model "
            "epochs of early AUM (last, heldout); out-of-fold accuracy "
            "(last, heldout); full-model accuracy per checkpoint:", ""]
  for case in cases:
    for seed, r in enumerate(results[case]):
      info = r["_info"]
      lines.append(
          f"- {case} seed {seed}: selected {info['selected_epochs']}; "
          f"usable {r['early AUM, last']['usable']}, "
          f"{r['early AUM, heldout']['usable']}; oof accuracy "
          f"{info['oof_accuracy']['last']:.3f}, "
          f"{info['oof_accuracy']['heldout']:.3f}; full "
          + ", ".join(f"{a:.3f}" for a in info["full_train_accuracy"]))
  return "\n".join(lines)


def main(argv: List[str]) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--seeds", type=int, default=3)
  parser.add_argument("--cases", default=",".join(CASES),
                      help=f"comma-separated, of {', '.join(CASES)}")
  parser.add_argument("--epochs", type=int, default=EPOCHS)
  parser.add_argument("--quick", action="store_true",
                      help=f"1 seed of {', '.join(QUICK)}")
  parser.add_argument("--out", default=None, help="also write the table here")
  parser.add_argument("--json", default=None,
                      help="also write every seed's scores here")
  args = parser.parse_args(argv)
  names = list(QUICK) if args.quick else args.cases.split(",")
  seeds = 1 if args.quick else args.seeds
  for name in names:
    if name not in CASES:
      raise SystemExit(f"--cases: expected names of {', '.join(CASES)}. "
                       f"Received: {name}")
  results: Dict[str, List[Dict]] = {}
  start = time.perf_counter()
  for name in names:
    title, load = CASES[name]
    results[title] = []
    for seed in range(seeds):
      began = time.perf_counter()
      results[title].append(run_one(load(seed), seed, args.epochs))
      print(f"{name} seed {seed}: {time.perf_counter() - began:.0f} s",
            file=sys.stderr, flush=True)
  text = table(results, seeds)
  text += (f"\n\n{args.epochs} epochs, checkpoints at epochs "
           f"{checkpoints(args.epochs)}; {time.perf_counter() - start:.0f} s "
           "in all.\n")
  print(text)
  if args.out:
    with open(args.out, "w", encoding="utf-8") as f:
      f.write(text)
  if args.json:
    with open(args.json, "w", encoding="utf-8") as f:
      json.dump(results, f, indent=1)


if __name__ == "__main__":
  main(sys.argv[1:])
