"""The self-contained `report.html` page, drawn from a run's `summary.json`
(which `lossaudit.summary` builds).

The page is `templates/report.html.j2`, rendered by Jinja2 with
autoescaping. Its tables of numbers are plain HTML; its charts (ECharts) and
the table of flagged rows (Tabulator: paged, sortable, filterable) are drawn
in the browser from one JSON document in the page. Both libraries are
vendored under `vendor/` (versions and licenses in `vendor/README.md`) and
inlined, so the page needs no network.
"""

from __future__ import annotations

import functools
import gzip
import importlib.resources
import json
import math
import re
from typing import (
  TYPE_CHECKING,
  Any,
  Dict,
  List,
  NamedTuple,
  Optional,
  Sequence,
)

import jinja2
import numpy as np

from lossaudit import drift
from lossaudit.flag_counts import FlagCounts

if TYPE_CHECKING:  # lossaudit.data_map loads Beam.
  from lossaudit.data_map import DataMap
  from lossaudit.previews import Previews

HISTOGRAM_BINS = 40

# The label-issue section's bounds, whatever the number of classes K: the
# heat map's classes, the per-class table's rows, the pairs table's rows.
HEAT_MAP_CLASSES = 30
CLASS_ROWS = 100
PAIR_ROWS = 50

# The most bytes of thumbnails one page holds: rows beyond it (by score)
# show a note instead, so 10,000 rows with images stay under 10 MB.
THUMBNAIL_BYTES = 6_000_000

# The flagged rows' columns the table shows, in order, when present.
ROW_COLUMNS = ("id", "score", "loss", "reasons", "status", "in_baseline",
               "first_flagged", "times_flagged", "given_label", "given_class",
               "predicted_label", "predicted_class", "suggested_label",
               "suggested_class", "self_confidence", "slice", "target",
               "prediction", "error_norm", "deviance", "aum", "region",
               "fold")

_VENDORED = {"tabulator_js": "vendor/tabulator/tabulator.min.js",
             "tabulator_css": "vendor/tabulator/tabulator_simple.min.css",
             "echarts_js": "vendor/echarts/echarts.min.js.gz",
             "report_css": "templates/report.css",
             "report_js": "templates/report.js"}


class Table(NamedTuple):
  """A table of the page: `rows` of cells already formatted as text."""

  id: str
  headers: Sequence[str]
  rows: Sequence[Sequence[str]]


def _histogram(cdf: Sequence[Optional[float]], count: int,
               bins: int = HISTOGRAM_BINS):
  """Approximate bin counts from evenly spaced quantiles `(M+1,)`."""
  values = np.array([v for v in cdf if v is not None], dtype=np.float64)
  if count == 0 or values.size < 2:
    return np.zeros(0), np.zeros(0)
  ranks = np.linspace(0.0, 1.0, values.size)
  lo, hi = values[0], values[-1]
  if hi <= lo:
    return np.array([lo, lo + 1.0]), np.array([float(count)])
  edges = np.linspace(lo, hi, bins + 1)
  # Flat runs of equal quantiles make the CDF a step; take its top.
  unique_values, last = np.unique(values[::-1], return_index=True)
  cdf_at = np.interp(edges, unique_values, ranks[::-1][last])
  return edges, np.diff(cdf_at) * count


def histogram_chart(cdf: Sequence[Optional[float]], count: int,
                    thresholds: Dict[str, Any]) -> Optional[Dict[str, Any]]:
  """The loss histogram's data: `edges` `(B+1,)`, approximate `counts`
  `(B,)`, the rules' numeric `thresholds` within the range, and whether to
  start on the log scale (a long tail leaves the linear view one tall bar);
  None without finite losses."""
  edges, counts = _histogram(cdf, count)
  if not counts.size:
    return None
  lines = {rule: float(value) for rule, value in thresholds.items()
           if isinstance(value, (int, float)) and not isinstance(value, bool)
           and edges[0] <= value <= edges[-1]}
  return {"edges": _finite(edges), "counts": np.round(counts, 3).tolist(),
          "thresholds": lines,
          "log": bool(counts.max() > 20 * max(np.median(counts), 1.0))}


def _class_label(k: int, class_names: Optional[Sequence[str]]) -> str:
  """Class `k` as the report shows it: `"k name"`, or `"k"` without names."""
  return f"{k} {class_names[k]}" if class_names else str(k)


def heat_map_chart(counts: np.ndarray,
                   class_names: Optional[Sequence[str]] = None,
                   classes: Optional[Sequence[int]] = None) -> Dict[str, Any]:
  """The label-issue heat map's data: given label (rows) × suggested label
  (columns) of `classes` (default: every class), from
  `FlagCounts.issue_matrix()` `(M, M)`.

  Returns:
    `{"classes": (M,) class ids, "labels": (M,) "id name" texts, "cells":
    [[column, row, count], ...] of the non-zero cells, "max": the largest
    count}`.
  """
  classes = list(range(len(counts)) if classes is None else classes)
  given, suggested = np.nonzero(counts)
  return {"classes": [int(k) for k in classes],
          "labels": [_class_label(k, class_names) for k in classes],
          "cells": [[int(j), int(g), int(counts[g, j])]
                    for g, j in zip(given, suggested)],
          "max": int(counts.max()) if counts.size else 0}


def heldout_chart(folds: Dict[str, Dict]) -> Optional[Dict[str, Any]]:
  """Each fold's mean held-out loss at each checkpoint, and the checkpoint
  it selected (`model.select_checkpoint: heldout_loss`); None with fewer
  than two checkpoints."""
  names = list(next(iter(folds.values()))["heldout_loss"])
  if len(names) < 2:
    return None
  return {"checkpoints": names,
          "folds": [{"name": fold,
                     "losses": list(found["heldout_loss"].values()),
                     "selected": names.index(found["selected_checkpoint"])}
                    for fold, found in folds.items()]}


def _checkpoint_selection(folds: Dict[str, Dict]) -> Optional[Table]:
  """The held-out losses table, when checkpoints were selected."""
  if not folds or "selected_checkpoint" not in next(iter(folds.values())):
    return None
  names = list(next(iter(folds.values()))["heldout_loss"])
  return _table(["fold", "selected checkpoint"] + names,
                [[fold, found["selected_checkpoint"]] +
                 list(found["heldout_loss"].values())
                 for fold, found in folds.items()], "heldout-losses")


def _early_aum(label_issues: Dict, names: Optional[Sequence[str]],
               classes: Dict[str, list]) -> Optional[Dict[str, Any]]:
  """What early AUM decided: each checkpoint's fit and accuracy, and each
  class's counts (from `classes` where summary.json leaves them out)."""
  found = label_issues.get("early_aum")
  if not found:
    return None
  if found["suspects"] is None and "early_aum_suspects" in classes:
    found = dict(found, **{name: classes[f"early_aum_{name}"] for name in (
        "suspects", "below_zero", "flagged")})
    if found["fell_back"]:
      found["below_zero"] = None
  checkpoints = _table(
      ["checkpoint", "fit (suspects predicted as given)", "accuracy",
       "used"],
      [[c, f, a, "yes" if u else "no"] for c, f, a, u in zip(
          found["checkpoints"], found["fit"], found["accuracy"],
          found["usable"])],
      "early-aum-checkpoints")
  suspects = found["suspects"]
  flagged = found["flagged"] or [0] * len(suspects)
  below = found["below_zero"] or [None] * len(suspects)
  rows = (range(len(suspects)) if len(suspects) <= CLASS_ROWS else sorted(
      range(len(suspects)), key=lambda k: (-flagged[k], k))[:CLASS_ROWS])
  return {"max_fit": found["max_fit"], "oof_accuracy": found["oof_accuracy"],
          "fell_back": found["fell_back"], "checkpoints": checkpoints,
          "classes": _table(
              ["class", "suspects (prune_by_noise_rate)", "early AUM < 0",
               "flagged"],
              [[_class_label(k, names), suspects[k], below[k], flagged[k]]
               for k in rows], "early-aum-classes")}


def _quantile_table(what: str, groups: Dict[str, Dict], css_id: str) -> Table:
  """A table of each group's count and loss quantiles (`summary.json`'s
  `slices` or `folds`)."""
  keys = list(next(iter(groups.values()))["quantiles"])
  return _table([what, "count"] + [f"q{k}" for k in keys],
                [[name, g["count"]] + [g["quantiles"][k] for k in keys]
                 for name, g in groups.items()], css_id)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]],
           table_id: str) -> Table:
  return Table(table_id, [str(h) for h in headers],
               [[_fmt(c) for c in row] for row in rows])


def _fmt(value: Any) -> str:
  if isinstance(value, float):
    return f"{value:.6g}" if math.isfinite(value) else str(value)
  if isinstance(value, (list, tuple)):
    return ", ".join(_fmt(v) for v in value)
  return "" if value is None else str(value)


def _finite(values: np.ndarray) -> List[float]:
  return [float(v) for v in values]


def _overview(summary: Dict) -> Table:
  scored = summary["examples_scored"]
  rate = summary["flagged"]["total"] / scored if scored else 0.0
  return _table(
      ["examples read", "scored", "dead-lettered", "flagged", "flagged rate",
       "duplicate ids", "seconds", "examples/s"],
      [[summary["examples_read"], scored, summary["examples_dead_lettered"],
        summary["flagged"]["total"], f"{rate:.2%}", summary["duplicate_ids"],
        summary["seconds"], summary["timings"]["examples_per_second"]]],
      "overview")


def _comparison(found: Optional[Dict]) -> Optional[Dict[str, Any]]:
  """The gates and the comparison with the baseline (`drift.json`)."""
  if found is None:
    return None
  section: Dict[str, Any] = {
      "passed": found["passed"],
      "failed": "; ".join(drift.failed_gates(found)),
      "gates": _table(
          ["gate", "limit", "value", "passed", "exceeded by", "what"],
          [[g["gate"], g["limit"], g["value"], "yes" if g["passed"] else "NO",
            g["exceeded_by"], g["what"]] for g in found["gates"]], "gates"),
      "baseline": found["baseline"], "rates": None, "shifts": None,
      "label_rates": None}
  if found["baseline"] is None:
    return section
  section["rates"] = _table(
      ["", "baseline", "current", "change"],
      [[name, d["baseline"], d["current"], d["change"]] for name, d in (
          ("flagged rate", found["flagged_rate"]),
          ("dead-letter rate", found["dead_letter_rate"]))], "rates")
  section["shifts"] = _table(
      ["quantile", "baseline", "current", "relative shift"],
      [[q, d["baseline"], d["current"], d["shift"]]
       for q, d in found["quantiles"].items()], "quantile-shifts")
  if found["label_issue_rate"]:
    names = found.get("class_names") or {}
    section["label_rates"] = _table(
        ["class", "baseline", "current", "change"],
        [[f"{k} {names[k]}" if k in names else k, d["baseline"],
          d["current"], d["change"]]
         for k, d in found["label_issue_rate"].items()], "label-issue-rates")
  return section


def _decisions(clean: Dict[str, Any]) -> Optional[Dict[str, Any]]:
  """The decisions applied to `clean/`; None without decisions in force."""
  applied = clean.get("decisions_applied")
  if not applied:
    return None
  keys = ("keep", "drop", "relabel", "stale", "total")
  return {"applied": _table(list(keys), [[applied.get(k) for k in keys]],
                            "decisions"),
          "not_found": clean.get("decisions_not_found")}


def _or(value: Any, otherwise: str) -> Any:
  return otherwise if value is None else value


def _history(summary: Dict) -> Optional[Dict[str, Any]]:
  """New, persistent, reviewed and resolved flags; None without flag
  history."""
  counts = drift.flag_history(summary)
  if counts is None:
    return None
  unknown = "unknown (the baseline kept no ids)"
  return {"baseline": (summary.get("flag_history") or {}).get("baseline"),
          "counts": counts,
          "table": _table(
              ["new", "of them on new rows", "of them regressions",
               "persistent", "reviewed", "resolved",
               "baseline flags not scored"],
              [[counts["new"], _or(counts.get("new_rows"), unknown),
                _or(counts.get("regressions"), unknown),
                counts["persistent"], counts.get("reviewed", 0),
                counts["resolved"], counts["baseline_not_scored"]]],
              "flag-history")}


def _label_issues(summary: Dict, classes: Optional[Dict[str, list]],
                  counts: Optional[FlagCounts]) -> Optional[Dict[str, Any]]:
  """The label-issue section; `classes`: each class's numbers in full
  (`label_rules.class_columns`), or None: the summary's; `counts`: the
  flags counted, or None: the summary's. None when detection is off."""
  label_issues = summary.get("label_issues")
  if not label_issues:
    return None
  # Beyond `label_rules.PER_CLASS_CLASSES`, summary.json leaves them out.
  classes = classes or {"label_count": label_issues["label_counts"],
                        "threshold": label_issues["thresholds"],
                        "noise_rate": label_issues["noise_rate"],
                        "name": label_issues.get("class_names")}
  label_counts = classes["label_count"]
  num_classes = len(label_counts)
  names = classes.get("name")
  counts = counts or FlagCounts.from_summary(summary)
  by_given = counts.issues_by_given(num_classes)
  # At any K, the page stays small: the heat map of the classes most
  # involved, and the classes and pairs with the most issues.
  mapped = (list(range(num_classes)) if num_classes <= HEAT_MAP_CLASSES
            else counts.most_involved(HEAT_MAP_CLASSES))
  rows = (range(num_classes) if num_classes <= CLASS_ROWS else sorted(
      range(num_classes), key=lambda k: (-by_given[k], k))[:CLASS_ROWS])
  bounded = None
  if num_classes > HEAT_MAP_CLASSES:
    table = ("every class" if num_classes <= CLASS_ROWS else
             f"the {CLASS_ROWS} with the most issues")
    bounded = (f"Of {num_classes} classes, the heat map shows the"
               f" {len(mapped)} most involved in label issues (given or"
               f" suggested), the class table {table}, and the pairs table"
               f" the {PAIR_ROWS} pairs with the most.")
  return {
      "method": label_issues["method"],
      "left_out": label_issues.get("non_finite_left_out") or 0,
      "bounded": bounded,
      "classes": _table(
          ["class", "examples", "label issues", "self-confidence threshold",
           "noise rate"],
          [[_class_label(k, names), label_counts[k], by_given[k],
            classes["threshold"][k], classes["noise_rate"][k]]
           for k in rows], "label-issue-classes"),
      "pairs": _table(
          ["given", "suggested", "label issues", "share of the given class"],
          [[_class_label(p.given, names), _class_label(p.suggested, names), n,
            n / label_counts[p.given] if label_counts[p.given] else None]
           for p, n in counts.top_pairs(PAIR_ROWS)], "label-issue-pairs"
      ) if counts.by_pair else None,
      "heat_map": heat_map_chart(counts.issue_matrix(num_classes, mapped),
                                 names, mapped),
      "early_aum": _early_aum(label_issues, names, classes)}


def _cell(value: Any) -> Any:
  """A flagged row's value as JSON: non-finite floats as text."""
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)
  return value


def rows_data(rows: Sequence[Dict[str, Any]], total: int,
              previews: Optional[Previews]) -> Dict[str, Any]:
  """The flagged rows' table as the page's script reads it (columns once,
  then one list of values a row), with each row's previews.

  Thumbnails are kept in score order until `THUMBNAIL_BYTES` are used; the
  rows beyond show a note.

  Args:
    rows: the flagged rows shown, highest score first, as dicts.
    total: the run's flagged rows (more than `len(rows)` beyond
      `report.max_rows`).
    previews: the rows' previews, or None when the model has no input to
      preview.
  """
  columns = [c for c in ROW_COLUMNS
             if c in ("id", "score") or any(c in r for r in rows)]
  data: Dict[str, Any] = {
      "columns": columns,
      "values": [[_cell(r.get(c)) for c in columns] for r in rows],
      "total": int(total), "inputs": [], "previews": [], "note": None}
  if previews is None:
    return data
  data["inputs"] = list(previews.inputs)
  data["note"] = previews.note
  if previews.note:  # No row is previewed; the note says why.
    return data
  spent = 0
  for row in rows:
    shown = []
    for name in previews.inputs:
      found = previews.by_id.get(row.get("id"), {}).get(name)
      if found is not None and found["kind"] == "image":
        spent += len(found["uri"])
        if spent > THUMBNAIL_BYTES:
          found = {"kind": "note", "text": "not shown: the page holds at most"
                   f" {THUMBNAIL_BYTES // 1_000_000} MB of thumbnails"}
      shown.append(found)
    data["previews"].append(shown)
  return data


def _reason_names(rows: Sequence[Dict[str, Any]], summary: Dict) -> List[str]:
  found = set(summary["flagged"]["by_reason"])
  for row in rows:
    found.update(row.get("reasons") or ())
  return sorted(found)


@functools.lru_cache(maxsize=None)
def _vendored(path: str) -> str:
  """A file inlined whole in the page (a vendored library, the page's own
  script and style), without its source-map comment (the page has no map
  beside it)."""
  data = (importlib.resources.files("lossaudit") / path).read_bytes()
  if path.endswith(".gz"):  # Kept compressed in git (1.1 MB as it is).
    data = gzip.decompress(data)
  text = data.decode("utf-8")
  return re.sub(r"/[*/]# sourceMappingURL=\S+(?: \*/)?", "", text)


@functools.lru_cache(maxsize=None)
def _environment() -> jinja2.Environment:
  env = jinja2.Environment(
      loader=jinja2.PackageLoader("lossaudit", "templates"),
      autoescape=True, trim_blocks=True, lstrip_blocks=True,
      undefined=jinja2.StrictUndefined)
  env.filters["yaml"] = _yaml
  env.policies["json.dumps_function"] = _dumps
  return env


def _json_safe(value: Any) -> Any:
  """`value` with each non-finite float as null (JSON has none)."""
  if isinstance(value, float):
    return value if math.isfinite(value) else None
  if isinstance(value, dict):
    return {k: _json_safe(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_json_safe(v) for v in value]
  return value


def _dumps(value: Any, **kwargs) -> str:
  # UTF-8 as it is (a non-ASCII id costs its bytes, not 6 a character);
  # Jinja's `tojson` escapes the characters that matter in HTML.
  kwargs.setdefault("ensure_ascii", False)
  return json.dumps(_json_safe(value), allow_nan=False, **kwargs)


def render_report(summary: Dict, cdf: Sequence[Optional[float]],
                  top_flagged: Sequence[Dict[str, Any]],
                  found: Optional[Dict] = None, *,
                  previews: Optional[Previews] = None,
                  data_map: Optional[DataMap] = None,
                  easy_confidence: float = 0.5,
                  ambiguous_variability: float = 0.2,
                  label_classes: Optional[Dict[str, list]] = None,
                  flag_counts: Optional[FlagCounts] = None) -> str:
  """A self-contained HTML page (inline script and CSS, no network).

  Args:
    summary: the `summary.json` document.
    cdf: evenly spaced loss quantiles `(M+1,)` for the histogram.
    top_flagged: the flagged rows to browse (up to `report.max_rows`),
      highest score first, as dicts.
    found: the `drift.json` document, when gates or a baseline are set.
    previews: thumbnails and text of the flagged rows' inputs, shown beside
      them; None when the model has none.
    data_map: a sample of the examples' training dynamics, drawn in a "Data
      map" section; None (no section) without `model.checkpoints`.
    easy_confidence, ambiguous_variability: the region bounds drawn on the
      data map (`dynamics.*`).
    label_classes: with label issues on, each class's numbers in full
      (`label_rules.class_columns`); None: those in `summary`.
    flag_counts: the flags counted, with every label pair; None: those in
      `summary` (its pairs with the most issues).
  """
  loss = summary["loss"]
  label_issues = _label_issues(summary, label_classes, flag_counts)
  folds = summary.get("folds")
  heldout = _checkpoint_selection(folds or {})
  chart_data = {
      "histogram": histogram_chart(cdf, loss["count"], summary["thresholds"]),
      "heatMap": label_issues and label_issues["heat_map"],
      "heldout": heldout_chart(folds) if heldout else None,
      "dataMap": None,
      "rows": rows_data(top_flagged, summary["flagged"]["total"], previews),
      "reasons": _reason_names(top_flagged, summary),
  }
  if data_map is not None:
    # Imported here: lossaudit.data_map loads Beam (its CombineFn).
    from lossaudit.data_map import data_map_chart  # pylint: disable=g-import-not-at-top

    chart_data["dataMap"] = data_map_chart(
        data_map, easy_confidence=easy_confidence,
        ambiguous_variability=ambiguous_variability)
  slices = summary["slices"]
  context = {
      "summary": summary,
      "loss": loss,
      "overview": _overview(summary),
      "comparison": _comparison(found),
      "withheld": (summary.get("clean") or {}).get("withheld_because"),
      "decisions": _decisions(summary.get("clean") or {}),
      "history": _history(summary),
      "moments": _table(["count", "mean", "std", "min", "max", "non-finite"],
                        [[loss["count"], loss["mean"], loss["std"],
                          loss["min"], loss["max"], loss["nan_count"]]],
                        "moments"),
      "quantiles": _table(["quantile", "loss"],
                          [[q, v] for q, v in loss["quantiles"].items()],
                          "quantiles"),
      "slices": _quantile_table("slice", slices, "slices") if slices else None,
      "folds": _quantile_table("fold", folds, "folds") if folds else None,
      "heldout": heldout,
      "thresholds": _table(
          ["rule", "threshold"],
          [[k, v] for k, v in summary["thresholds"].items()
           if not isinstance(v, (dict, list))], "thresholds"),
      "reasons": _table(["reason", "count"],
                        list(summary["flagged"]["by_reason"].items()),
                        "reasons"),
      "label_issues": label_issues,
      "data_map": chart_data["dataMap"],
      "rows": chart_data["rows"],
      "dead_reasons": _table(
          ["reason", "examples"],
          list(summary["dead_letter"]["by_reason"].items()),
          "dead-letter-reasons"),
      "duplicates": _table(
          ["id", "examples"],
          [[d["id"], d["count"]] for d in summary["duplicate_id_examples"]],
          "duplicate-ids"),
      "run": _table(["run id", "started (UTC)", "runner", "devices"],
                    [[summary["run_id"], summary["started"],
                      summary["runner"], summary["devices"]]], "run"),
      "timings": _table(["", "value"], [
          (k, v) for k, v in summary["timings"].items()
          if k != "first_batch_time"], "timings"),
      "versions": _table(["package", "version"],
                         list(summary["versions"].items()), "versions"),
      "data": chart_data,
      **{name: _vendored(path) for name, path in _VENDORED.items()},
  }
  return _environment().get_template("report.html.j2").render(context)


def _yaml(value: Any) -> str:
  import yaml  # pylint: disable=g-import-not-at-top

  return yaml.safe_dump(value, sort_keys=False)
