"""The flag-rule registry: each rule's threshold and mask against numpy, the
lists the registry feeds, and a toy rule defined here that a real audit
applies with no other edit."""

import dataclasses
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from lossaudit import rules, validation
from lossaudit.config import AuditConfig, FlagConfig
from lossaudit.confident import CellCounts
from lossaudit.errors import ConfigError
from lossaudit.label_rules import LabelRules
from lossaudit.pipelines import audit
from lossaudit.rules.top_k import TopKBound
from lossaudit.spec import PROBS_COLUMN, SLICE_COLUMN
from tests.helpers import REPO, predictions_config, write_predictions

LOSSES = np.array([0.1, 2.0, np.nan, 5.0, 3.0, -np.inf, 1.0])
IDS = np.array(list("abcdefg"), dtype=object)


def _rows(losses=LOSSES, ids=IDS, **columns):
  batch = pa.RecordBatch.from_pydict(columns) if columns else None
  return rules.Rows(batch, losses, ids)


def _mask(reason, threshold, rows=None):
  return rules.get(reason).mask(rows or _rows(), threshold)


BUILT_IN = ("loss_quantile", "loss_threshold", "robust_z", "slice_quantile",
            "top_k", "aum_quantile", "aum_below", "label_issue", "non_finite")


def test_the_built_in_rules_and_their_order():
  # In the orders summary.json and the config have always had them; a rule
  # module added later may go anywhere among them.
  assert [r for r in rules.reasons() if r in BUILT_IN] == list(BUILT_IN)
  keys = ["loss_quantile", "loss_threshold", "robust_z", "top_k",
          "slice_quantile", "label_issues", "aum_quantile", "aum_below"]
  assert [s.key for s in rules.settings() if s.key in keys] == keys
  assert [r.reason for r in rules.in_mask_order()][:2] == [
      "non_finite", "loss_quantile"]


def test_value_rules_flag_finite_losses_above_their_threshold():
  finite = np.isfinite(LOSSES)
  for reason in ("loss_quantile", "loss_threshold", "robust_z"):
    np.testing.assert_array_equal(_mask(reason, 1.5),
                                  finite & (np.nan_to_num(LOSSES) > 1.5))
    assert _mask(reason, None) is None


def test_loss_quantile_and_robust_z_thresholds_from_the_summary():
  summary = {"quantiles": {"0.9": 4.0}, "median": 2.0, "mad": 0.5}
  flag = FlagConfig(loss_quantile=0.9, robust_z=3.0)
  assert rules.get("loss_quantile").threshold(flag, summary, None,
                                               None) == 4.0
  assert rules.get("robust_z").threshold(flag, summary, None, None) == (
      pytest.approx(2.0 + 3.0 * 1.4826 * 0.5))
  no_median = {"quantiles": {"0.9": None}, "median": None, "mad": None}
  assert rules.get("robust_z").threshold(
      flag, no_median, None, None) is rules.NOT_IN_FORCE


def test_slice_quantile_compares_each_loss_with_its_slice():
  slices = np.array(["x", "y", "x", "y", "x", "z", "x"], dtype=object)
  rows = _rows(**{SLICE_COLUMN: slices})
  flag = FlagConfig(slice_quantile=0.5)
  bounds = rules.get("slice_quantile").threshold(
      flag, {}, {"x": {"quantiles": {"0.5": 0.5}},
                 "y": {"quantiles": {"0.5": 3.0}}}, None)
  assert bounds == {"x": 0.5, "y": 3.0}
  expected = np.isfinite(LOSSES) & (np.nan_to_num(LOSSES) > np.array(
      [0.5, 3.0, 0.5, 3.0, 0.5, np.inf, 0.5]))
  np.testing.assert_array_equal(_mask("slice_quantile", bounds, rows),
                                expected)
  assert _mask("slice_quantile", bounds) is None  # No slice column.


def test_top_k_flags_the_k_largest_ties_by_smaller_id():
  losses = np.array([3.0, 5.0, 3.0, np.nan, 1.0])
  ids = np.array(list("edcba"), dtype=object)
  top = rules.get("top_k")
  bound = top.threshold(FlagConfig(top_k=3), {}, None,
                        [(5.0, "d"), (3.0, "c"), (3.0, "e")])
  assert bound == TopKBound(3.0, "e")
  order = np.lexsort((ids, -np.nan_to_num(losses, nan=-np.inf)))[:3]
  expected = np.zeros(5, bool)
  expected[order] = True
  np.testing.assert_array_equal(_mask("top_k", bound, _rows(losses, ids)),
                                expected)
  assert not _mask("top_k", None, _rows(losses, ids)).any()
  assert top.threshold(FlagConfig(top_k=3), {}, None, []) is None


def test_aum_rules_flag_an_aum_below_their_threshold_and_score_by_it():
  aum = np.array([-1.0, 0.5, np.nan, 2.0, -3.0, 0.0, 1.0])
  rows = _rows(aum=aum)
  for reason in ("aum_quantile", "aum_below"):
    np.testing.assert_array_equal(_mask(reason, 0.6, rows),
                                  np.nan_to_num(aum, nan=np.inf) < 0.6)
    assert _mask(reason, 0.6) is None  # No aum column.
    np.testing.assert_array_equal(rules.get(reason).solo_score(rows), -aum)
  assert rules.get("aum_quantile").threshold(
      FlagConfig(aum_quantile=0.1), {}, None,
      {"quantiles": {"0.1": -2.0}}) == -2.0
  assert rules.get("aum_below").threshold(
      FlagConfig(aum_below=0), {}, None, None) == 0.0


def test_non_finite_is_always_applied():
  np.testing.assert_array_equal(_mask("non_finite", None),
                                ~np.isfinite(LOSSES))
  masks = rules.flag_masks(_rows(), rules.Thresholds())
  assert [reason for reason, _ in masks] == ["non_finite"]


def test_label_issue_mask_suggested_labels_and_score():
  k = 2
  probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.95, 0.05], [0.4, 0.6]],
                   np.float32)
  given = np.array([0, 0, 1, 1])
  label_rules = LabelRules(
      method="confident_learning", thresholds=np.array([0.5, 0.5]),
      label_counts=np.array([2, 2]),
      confident_joint=CellCounts.from_dense(np.eye(k, dtype=int)),
      noise_rate=np.zeros(k))
  batch = pa.RecordBatch.from_pydict({
      "id": list("abcd"), "loss": [0.1, 1.6, 3.0, 0.5],
      "given_label": given,
      PROBS_COLUMN: pa.FixedSizeListArray.from_arrays(
          pa.array(probs.reshape(-1)), k)})
  rows = rules.Rows(batch, np.array([0.1, 1.6, 3.0, 0.5]),
                    np.array(list("abcd"), dtype=object))
  rule = rules.get("label_issue")
  mask = rule.mask(rows, label_rules)
  # Confidently another class (p >= its threshold 0.5), not the given one.
  np.testing.assert_array_equal(mask, [False, True, True, False])
  np.testing.assert_array_equal(rows.suggested[mask], [1, 0])
  score = rule.rescore(rows, mask, np.array([0.1, 1.6, 3.0, 0.5]))
  np.testing.assert_allclose(score, [0.1, -np.log(0.2), -np.log(0.05), 0.5],
                             rtol=1e-6)


def test_rule_thresholds_and_the_summary_dict():
  summary = {"quantiles": {"0.9": 4.0}, "median": 1.0, "mad": 1.0}
  flag = FlagConfig(loss_quantile=0.9, loss_threshold=2, top_k=2,
                    aum_below=-1)
  thresholds = rules.rule_thresholds(summary, flag,
                                     top_k=[(9.0, "x"), (8.0, "y")])
  assert thresholds == rules.Thresholds.of(
      loss_quantile=4.0, loss_threshold=2.0, top_k=TopKBound(8.0, "y"),
      aum_below=-1.0)
  assert list(thresholds.to_dict().items()) == [
      ("loss_quantile", 4.0), ("loss_threshold", 2.0), ("top_k", [8.0, "y"]),
      ("aum_below", -1.0)]
  assert thresholds.label_issues is None


def test_what_the_registry_decides_for_a_config():
  assert FlagConfig().needs_global_statistics  # loss_quantile: 0.99.
  off = FlagConfig(loss_quantile=None, loss_threshold=1.0, aum_below=0.0)
  assert not off.needs_global_statistics
  for key in ("robust_z", "top_k", "slice_quantile", "aum_quantile"):
    value = 1 if key == "top_k" else 0.5
    assert FlagConfig(loss_quantile=None, **{key: value}
                      ).needs_global_statistics, key
  assert FlagConfig(loss_quantile=None, label_issues="confident_learning"
                    ).needs_global_statistics
  assert rules.sketch_quantiles(FlagConfig(slice_quantile=0.8)) == (0.99, 0.8)
  assert rules.sketch_quantiles(off) == ()


def test_registering_a_taken_reason_or_key_is_refused():
  with pytest.raises(ValueError) as info:
    rules.register(rules.get("top_k"))
  assert str(info.value) == (
      "register: expected a new reason. Received: 'top_k', already"
      " registered")

  class Clash(rules.FlagRule):
    reason = "clash"
    settings = (rules.Setting("top_k", validation.number(), None, "x"),)

  with pytest.raises(ValueError) as info:
    rules.register(Clash())
  assert str(info.value) == (
      "register: expected new flag keys. Received: ['top_k'] for 'clash',"
      " keys of other rules")


@pytest.mark.parametrize("reason, key", [
    ("", "ok"), ("has space", "ok"), ("Upper", "ok"), ("ok", "a-b"),
    ("ok", "1st"), ("ok", "class"), ("ok", "score"),
    ("ok", "needs_global_statistics")])
def test_a_reason_or_key_that_is_no_plain_name_is_refused(reason, key):
  class Odd(rules.FlagRule):
    pass

  Odd.reason = reason
  Odd.settings = (rules.Setting(key, validation.number(), None, "x"),)
  with pytest.raises(ValueError) as info:
    rules.register(Odd())
  odd = [n for n in (reason, key) if n not in ("ok",)]
  assert str(info.value) == (
      "register: expected a reason and flag keys of lowercase letters,"
      " digits and '_', not a Python keyword or ['needs_global_statistics',"
      f" 'score']. Received: {odd}")
  assert reason not in rules.reasons()
  assert dataclasses.is_dataclass(FlagConfig)


def test_table_markdown():
  table = rules.table_markdown().splitlines()
  assert table[:2] == ["| reason | config key | default | what it does |",
                       "| --- | --- | --- | --- |"]
  assert table[2] == ("| `loss_quantile` | `flag.loss_quantile` | `0.99` |"
                      " flag a loss above this quantile of every loss |")
  assert ("| `non_finite` | (always on) |  | flags a row whose"
          " loss is NaN or infinite (always on) |") in table
  for reason in BUILT_IN:  # A row per setting.
    settings = len(rules.get(reason).settings) or 1
    assert sum(row.startswith(f"| `{reason}` |") for row in table) == settings
  assert ("| `label_issue` | `flag.early_aum_max_fit` | `0.5` |"
          in "\n".join(table))


# A toy rule, defined and registered by this test only ------------------------


class LossAbove(rules.FlagRule):
  """Flags a loss above `flag.toy_loss_above` (a toy rule)."""

  reason = "toy_loss_above"
  settings = (rules.Setting("toy_loss_above", validation.number(), None,
                            "flag a loss above this value (a toy)"),)
  global_statistics = False

  def threshold(self, flag, loss_summary, slice_stats, own):
    return float(flag.toy_loss_above)

  def mask(self, rows, threshold):
    return rows.safe > threshold


@pytest.fixture
def toy_rule():
  rules.register(LossAbove())
  yield
  rules.unregister("toy_loss_above")
  assert "toy_loss_above" not in {
      f for f in FlagConfig.__dataclass_fields__}


def test_a_toy_rule_runs_in_a_real_audit(toy_rule, tmp_path, write_config):
  # Losses -log(p(given label)): ids 0-9 have p = 0.9 (loss 0.105), ids
  # 10-11 p = 0.3 (1.20), id 12 p = 0.05 (3.0).
  n = 13
  ids = [f"id{i:02d}" for i in range(n)]
  labels = np.zeros(n, np.int64)
  p_given = np.array([0.9] * 10 + [0.3, 0.3, 0.05], np.float32)
  probs = np.stack([p_given, 1 - p_given], axis=1)
  data = tmp_path / "data.parquet"
  write_predictions(str(data), ids, labels, probs)
  out = tmp_path / "out"
  config = predictions_config(
      data, out, flag={"loss_threshold": 2.0, "toy_loss_above": 1.0},
      output={"clean": {"drop_reasons": ["toy_loss_above"]}})
  assert audit.main(["--config", write_config(config)]) == 0
  flagged = pd.read_parquet(out / "flagged").sort_values("id")
  assert [list(r) for r in flagged["reasons"]] == [
      ["toy_loss_above"], ["toy_loss_above"],
      ["loss_threshold", "toy_loss_above"]]
  assert list(flagged["id"]) == ["id10", "id11", "id12"]
  summary = json.loads((out / "summary.json").read_text())
  assert summary["flagged"]["by_reason"] == {"loss_threshold": 1,
                                             "toy_loss_above": 3}
  assert summary["thresholds"] == {"loss_threshold": 2.0,
                                   "toy_loss_above": 1.0}
  assert summary["config"]["flag"]["toy_loss_above"] == 1.0
  assert summary["clean"]["dropped"] == 3
  report = (out / "report.html").read_text()
  assert "<td>toy_loss_above</td><td>3</td>" in report
  assert os.path.isdir(out / "clean")


def test_a_toy_rule_key_and_reason_are_checked(toy_rule):
  base = {"input": {"pattern": "a"}, "model": {"path": "m"}}
  with pytest.raises(ConfigError) as info:
    AuditConfig.from_dict({**base, "flag": {"toy_loss_above": "x"}})
  assert str(info.value) == (
      "flag.toy_loss_above: expected a number or null. Received: 'x'")
  with pytest.raises(ConfigError) as info:
    AuditConfig.from_dict({**base, "output": {
        "clean": {"drop_reasons": ["toy_los_above"]}}})
  assert str(info.value).endswith(
      " 'label_issue', 'non_finite', 'toy_loss_above'] (did you mean"
      " 'toy_loss_above'?). Received: ['toy_los_above']")


class SliceLossAbove(LossAbove):
  """A toy rule that needs `stats.slice_by` (`check_config`)."""

  reason = "toy_slice_loss_above"
  settings = (rules.Setting("toy_slice_loss_above", validation.number(),
                            None, "a toy that needs slices"),)

  def check_config(self, config):
    if config.stats.slice_by is None:
      raise ConfigError("flag.toy_slice_loss_above: needs stats.slice_by")


def test_a_rule_checks_the_config_it_needs_only_when_on():
  rules.register(SliceLossAbove())
  try:
    base = {"input": {"pattern": "a"}, "model": {"path": "m"}}
    AuditConfig.from_dict(base)  # Off: not asked.
    with pytest.raises(ConfigError) as info:
      AuditConfig.from_dict({**base, "flag": {"toy_slice_loss_above": 1}})
    assert str(info.value) == (
        "flag.toy_slice_loss_above: needs stats.slice_by")
    assert AuditConfig.from_dict({
        **base, "flag": {"toy_slice_loss_above": 1},
        "stats": {"slice_by": "region"}}).flag.toy_slice_loss_above == 1
  finally:
    rules.unregister("toy_slice_loss_above")


def _rule_of_this_function():
  """A rule whose class no other process can import (as one of a user's
  `__main__`)."""

  class Below(rules.FlagRule):
    reason = "toy_below"
    settings = (rules.Setting("toy_below", validation.number(), None, "x"),)
    global_statistics = False

    def threshold(self, flag, loss_summary, slice_stats, own):
      return flag.toy_below

    def mask(self, rows, threshold):
      return rows.finite & (rows.safe < threshold)

  return Below()


def test_the_rules_in_force_travel_with_the_thresholds():
  rule = _rule_of_this_function()
  rules.register(rule)
  try:
    flag = AuditConfig.from_dict({
        "input": {"pattern": "a"}, "model": {"path": "m"},
        "flag": {"toy_below": 0.5, "loss_quantile": None}}).flag
    thresholds = rules.rule_thresholds({}, flag,
                                       rules=rules.in_force(flag))
  finally:
    rules.unregister("toy_below")
  # As Beam's element coder would send it to a worker that never
  # registered the rule.
  sent = pickle.dumps(thresholds)
  code = (
      "import pickle, sys, numpy as np\n"
      "from lossaudit import rules\n"
      "thresholds = pickle.loads(sys.stdin.buffer.buffer.read()"
      " if hasattr(sys.stdin.buffer, 'buffer') else sys.stdin.buffer.read())\n"
      "rows = rules.Rows(None, np.array([0.1, 0.9, np.nan]),"
      " np.array(['a', 'b', 'c'], dtype=object))\n"
      "print(sorted(rules.reasons()), thresholds.to_dict(),"
      " [(r, m.tolist()) for r, m in rules.flag_masks(rows, thresholds)])\n")
  done = subprocess.run([sys.executable, "-c", code], input=sent,
                        capture_output=True, check=True, cwd=REPO)
  assert done.stdout.decode().strip() == (
      "['aum_below', 'aum_quantile', 'label_issue', 'loss_quantile',"
      " 'loss_threshold', 'non_finite', 'robust_z', 'slice_quantile',"
      " 'top_k'] {'toy_below': 0.5} [('non_finite', [False, False, True]),"
      " ('toy_below', [True, False, False])]")


@pytest.mark.parametrize("mask, received", [
    (np.array([1.0, 0.0, 0.0]), "float64 of shape (3,)"),
    (np.array([True, False]), "bool of shape (2,)"),
    (np.array([[True], [False], [True]]), "bool of shape (3, 1)"),
    (True, "bool of shape ()"),
])
def test_a_mask_that_is_not_one_bool_a_row_is_refused(mask, received):
  class Broken(rules.FlagRule):
    reason = "toy_broken"

    def mask(self, rows, threshold):
      return mask

  thresholds = rules.Thresholds.with_rules({"toy_broken": 1.0}, (Broken(),))
  rows = rules.Rows(None, np.array([0.1, 0.9, 2.0]),
                    np.array(["a", "b", "c"], dtype=object))
  with pytest.raises(ValueError) as info:
    rules.flag_masks(rows, thresholds)
  assert str(info.value) == (
      "flag rule 'toy_broken': mask() must return a bool array of shape (3,),"
      f" one value a row. Received: {received}")


@pytest.mark.slow
def test_a_toy_rule_flags_rows_on_worker_processes(tmp_path, write_config):
  rules.register(_rule_of_this_function())
  try:
    ids = [f"id{i}" for i in range(6)]
    p_given = np.array([0.9, 0.9, 0.9, 0.2, 0.2, 0.05], np.float32)
    data = tmp_path / "data.parquet"
    write_predictions(str(data), ids, np.zeros(6, np.int64),
                      np.stack([p_given, 1 - p_given], axis=1))
    out = tmp_path / "out"
    config = predictions_config(
        data, out, flag={"toy_below": 0.5, "loss_threshold": None})
    assert audit.main(["--config", write_config(config),
                       "--direct_num_workers=2",
                       "--direct_running_mode=multi_processing"]) == 0
  finally:
    rules.unregister("toy_below")
  flagged = pd.read_parquet(out / "flagged").sort_values("id")
  # -log(0.9) = 0.105 is below 0.5; the others are not.
  assert [(i, list(r)) for i, r in zip(flagged["id"], flagged["reasons"])] == [
      (f"id{i}", ["toy_below"]) for i in range(3)]
  summary = json.loads((out / "summary.json").read_text())
  assert summary["flagged"]["by_reason"] == {"toy_below": 3}


def test_a_rule_reading_a_sketch_quantile_needs_global_statistics():
  class EasyQuantile(rules.FlagRule):
    """Reads a sketch quantile yet says it needs no global statistics."""

    reason = "toy_easy"
    settings = (rules.Setting("toy_easy", validation.number(0, 1), None,
                              "x"),)
    global_statistics = False

    def sketch_quantiles(self, flag):
      return (flag.toy_easy,)

  rules.register(EasyQuantile())
  try:
    base = {"input": {"pattern": "a"}, "model": {"path": "m"},
            "flag": {"loss_quantile": None, "loss_threshold": 3.0}}
    assert not AuditConfig.from_dict(base).flag.needs_global_statistics
    flag = AuditConfig.from_dict(
        {**base, "flag": {**base["flag"], "toy_easy": 0.05}}).flag
    assert flag.needs_global_statistics
    assert rules.sketch_quantiles(flag) == (0.05,)
  finally:
    rules.unregister("toy_easy")
