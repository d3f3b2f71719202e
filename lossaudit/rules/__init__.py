"""The flag rules: one module each, and the registry they join.

Each module of this package defines a `FlagRule` and `register`s it; the
package imports every module it holds (`pkgutil`), so a new rule is one
module (and its test). The registry feeds the `flag` config keys, the flag
reasons (`flagged/`, `output.clean.drop_reasons`, `output.weights.reasons`),
the spill and pass decision, the loss sketch's quantiles, and
`table_markdown`, the rule table of the docs.
"""

import importlib
import pkgutil

from lossaudit.rules._apply import (
  Thresholds,
  flag_masks,
  in_force,
  rule_thresholds,
  scores,
)
from lossaudit.rules._registry import (
  NOT_IN_FORCE,
  FlagRule,
  Rows,
  Setting,
  get,
  in_mask_order,
  needs_global_statistics,
  on_change,
  reasons,
  register,
  registered,
  settings,
  sketch_quantiles,
  table_markdown,
  unregister,
)

__all__ = [
    "NOT_IN_FORCE", "FlagRule", "Rows", "Setting", "Thresholds", "flag_masks",
    "get", "in_force", "in_mask_order", "needs_global_statistics",
    "on_change", "reasons", "register", "registered", "rule_thresholds",
    "scores", "settings", "sketch_quantiles", "table_markdown", "unregister"]

for _module in pkgutil.iter_modules(__path__):
  if not _module.name.startswith("_"):
    importlib.import_module(f"{__name__}.{_module.name}")
