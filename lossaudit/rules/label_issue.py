"""`label_issue`: confident learning's label issues (`flag.label_issues`).

The rules (`LabelRules`: per-class thresholds, and the cells' cut-offs with
`prune_by_noise_rate`) come from `FindLabelIssues`, passes over the spilled
scored rows; this rule applies them to each batch.
"""

import numpy as np

from lossaudit import validation
from lossaudit.confident import LABEL_ISSUE_METHODS
from lossaudit.early_aum import DEFAULT_MAX_FIT, EARLY_AUM
from lossaudit.errors import ConfigError
from lossaudit.rules._registry import NOT_IN_FORCE, FlagRule, Setting, register

REASON = "label_issue"


class LabelIssue(FlagRule):
  """Flags a label issue found by confident learning (`flag.label_issues`:
  `confident_learning` or `prune_by_noise_rate`) or by early AUM
  (`early_aum`, `lossaudit.early_aum`); `flagged/` gets the suggested
  label."""

  reason = REASON
  settings = (
      Setting("label_issues", validation.one_of(
          LABEL_ISSUE_METHODS + (EARLY_AUM,), nullable=True), None,
              "flag label issues by this method: confident learning's two,"
              " or early_aum (classifiers)", "Optional[str]"),
      Setting("early_aum_max_fit", validation.number(
          0, 1, nullable=False), DEFAULT_MAX_FIT,
              "early_aum: a checkpoint predicting more of the suspects as"
              " given than this is not used", "float"),
  )
  rank = 80
  config_rank = 45
  in_thresholds = False

  def check_config(self, config):
    if config.flag.label_issues != EARLY_AUM:
      return
    model = config.model
    if not model.dynamics_path:
      raise ConfigError(
          f"flag.label_issues: 'early_aum' needs model.dynamics_path (the"
          f" checkpoints of a model trained on every row, {{checkpoint}}"
          f" filled from model.checkpoints). Received: model.dynamics_path="
          f"{model.dynamics_path!r}")
    if not (model.folds or model.predictions_column):
      raise ConfigError(
          f"flag.label_issues: 'early_aum' needs out-of-sample probabilities"
          f" (model.folds, or model.predictions_column holding out-of-fold"
          f" predictions): in-sample probabilities memorise the noise."
          f" Received: model.path={model.path!r} with model.folds=None")

  def threshold(self, flag, loss_summary, slice_stats, own):
    return NOT_IN_FORCE if own is None else own

  def mask(self, rows, threshold):
    # Not at the top: the config imports the rules, and would load Arrow.
    from lossaudit.label_rules import class_arrays  # pylint: disable=g-import-not-at-top

    arrays = class_arrays(rows.batch, threshold.num_classes)
    probs, given = arrays.probs, arrays.given
    aum = threshold.early_aum
    if aum is not None and not aum.fell_back:
      from lossaudit.data_map import sampling_keys  # pylint: disable=g-import-not-at-top
      from lossaudit.label_rules import checkpoint_arrays  # pylint: disable=g-import-not-at-top

      issues, rows.suggested = threshold.early_aum_issues(
          arrays, checkpoint_arrays(rows.batch)[0], sampling_keys(rows.ids))
    else:
      issues, rows.suggested = threshold.issue_mask(probs, given, rows.ids)
    issues &= arrays.finite  # Left out of confident learning.
    rows.cache[REASON] = probs[np.arange(len(given)), given].astype(np.float64)
    return issues

  def rescore(self, rows, mask, score):
    # cleanlab's self-confidence ranking, on the cross-entropy scale.
    self_confidence = rows.cache[REASON]
    return np.where(mask, -np.log(np.clip(self_confidence, 1e-300, 1)), score)


register(LabelIssue())
