"""The self-contained `report.html` page, drawn from a run's `summary.json`
(which `lossaudit.summary` builds)."""

from __future__ import annotations

import html
import math
from typing import TYPE_CHECKING, Any, Dict, Optional, Sequence

import numpy as np

from lossaudit import drift
from lossaudit.flag_counts import FlagCounts

if TYPE_CHECKING:  # lossaudit.data_map loads Beam.
  from lossaudit.data_map import DataMap
  from lossaudit.previews import Previews

HISTOGRAM_BINS = 40


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


def _svg_histogram(edges: np.ndarray, counts: np.ndarray,
                   thresholds: Dict[str, Any], log: bool = False) -> str:
  """Bars of `counts` `(B,)` between `edges` `(B+1,)`; rule thresholds as
  dashed lines. `log`: bar heights on a log10(1 + count) scale."""
  width, height, pad = 720, 240, 40
  if counts.size == 0:
    return "<p>No finite losses.</p>"
  heights = np.log10(1.0 + counts) if log else counts
  top = max(heights.max(), 1e-12)
  scale_x = (width - 2 * pad) / (edges[-1] - edges[0])
  bars = []
  for left, right, c, h in zip(edges[:-1], edges[1:], counts, heights):
    x = pad + (left - edges[0]) * scale_x
    w = max((right - left) * scale_x - 1, 1)
    h = (height - 2 * pad) * h / top
    bars.append(f'<rect x="{x:.1f}" y="{height - pad - h:.1f}" width="{w:.1f}"'
                f' height="{h:.1f}" fill="#4a7ab5"><title>'
                f"{left:.4g} – {right:.4g}: ~{c:.0f}</title></rect>")
  lines = []
  for rule, value in thresholds.items():
    if isinstance(value, (int, float)) and edges[0] <= value <= edges[-1]:
      x = pad + (value - edges[0]) * scale_x
      lines.append(
          f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{pad}" y2="{height - pad}"'
          f' stroke="#c0392b" stroke-dasharray="4"/><text x="{x + 3:.1f}"'
          f' y="{pad + 12}" font-size="11" fill="#c0392b">'
          f"{html.escape(rule)}</text>")
  scale = "log10(1 + examples)" if log else "examples"
  axis = (f'<text x="{pad}" y="{height - 10}" font-size="11">{edges[0]:.4g}'
          f'</text><text x="{width - pad}" y="{height - 10}" font-size="11"'
          f' text-anchor="end">{edges[-1]:.4g}</text>'
          f'<text x="{width / 2}" y="{height - 10}" font-size="11"'
          ' text-anchor="middle">per-sample loss</text>'
          f'<text x="12" y="{height / 2}" font-size="11" text-anchor="middle"'
          f' transform="rotate(-90 12 {height / 2})">{scale}</text>')
  name = "histogram-log" if log else "histogram"
  return (f'<svg id="{name}" class="{name}" xmlns="http://www.w3.org/2000/svg"'
          f' width="{width}" height="{height}" role="img"'
          f' aria-label="loss histogram, {scale}">{"".join(bars)}'
          f'{"".join(lines)}{axis}</svg>')


# The label-issue section's bounds, whatever the number of classes K: the
# heat map's classes, the per-class table's rows, the pairs table's rows.
HEAT_MAP_CLASSES = 30
CLASS_ROWS = 100
PAIR_ROWS = 50


def _class_label(k: int, class_names: Optional[Sequence[str]]) -> str:
  """Class `k` as the report shows it: `"k name"`, or `"k"` without names."""
  return f"{k} {class_names[k]}" if class_names else str(k)


def _svg_heat_map(counts: np.ndarray,
                  class_names: Optional[Sequence[str]] = None,
                  classes: Optional[Sequence[int]] = None) -> str:
  """The label-issue matrix: given label (rows) × suggested label (columns),
  darker for more issues; `counts` is `FlagCounts.issue_matrix()` `(M, M)`
  of `classes` (default: every class, `M = K`).

  Axes and cells name each class `"id name"` when `class_names` (by index)
  are given; the column labels are then written upwards.
  """
  num_classes = len(counts)
  cell = max(4, min(36, 480 // max(num_classes, 1)))
  classes = range(num_classes) if classes is None else classes
  labels = [_class_label(k, class_names) for k in classes]
  # Long names are cut on the axes (each cell's title has the whole name).
  shown = [t if len(t) <= 24 else t[:23] + "…" for t in labels]
  pad = 56 if not class_names else max(
      56, 24 + 6 * max((len(t) for t in shown), default=0))
  size = pad + cell * num_classes + 8
  top = max(int(counts.max()), 1)
  parts = []
  for g in range(num_classes):
    for j in range(num_classes):
      c = int(counts[g, j])
      shade = 255 - int(200 * c / top)
      fill = f"rgb(255,{shade},{shade})" if c else "#fafafa"
      x, y = pad + j * cell, pad + g * cell
      parts.append(f'<rect x="{x}" y="{y}" width="{cell}" height="{cell}"'
                   f' fill="{fill}" stroke="#ddd"><title>given'
                   f" {html.escape(labels[g])}, suggested"
                   f" {html.escape(labels[j])}: {c}</title></rect>")
      if c and cell >= 20:
        parts.append(f'<text x="{x + cell / 2}" y="{y + cell / 2 + 4}"'
                     f' font-size="10" text-anchor="middle">{c}</text>')
  if cell >= 12:
    for k in range(num_classes):
      text = html.escape(shown[k])
      x, y = pad + k * cell + cell / 2, pad - 4
      column = (f'<text x="{x}" y="{y}" font-size="10" text-anchor="start"'
                f' transform="rotate(-90 {x} {y})">' if class_names else
                f'<text x="{x}" y="{y}" font-size="10"'
                ' text-anchor="middle">')
      parts.append(f"{column}{text}</text>"
                   f'<text x="{pad - 4}" y="{pad + k * cell + cell / 2 + 4}"'
                   f' font-size="10" text-anchor="end">{text}</text>')
  parts.append(f'<text x="{pad + cell * num_classes / 2}" y="14"'
               ' font-size="11" text-anchor="middle">suggested label</text>'
               f'<text x="14" y="{pad + cell * num_classes / 2}" font-size="11"'
               ' text-anchor="middle" transform="rotate(-90 14'
               f' {pad + cell * num_classes / 2})">given label</text>')
  return (f'<svg id="label-issue-matrix" xmlns="http://www.w3.org/2000/svg"'
          f' width="{size}" height="{size}" role="img" aria-label="label'
          f' issues, given by suggested label">{"".join(parts)}</svg>')


def _svg_heldout_loss(folds: Dict[str, Dict], width: int = 720,
                      height: int = 260) -> str:
  """Each fold's mean held-out loss at each checkpoint, a line a fold; the
  selected checkpoint of each ringed (`model.select_checkpoint:
  heldout_loss`)."""
  names = list(next(iter(folds.values()))["heldout_loss"])
  values = [v for fold in folds.values() for v in fold["heldout_loss"].values()
            if v is not None]
  if not values or len(names) < 2:
    return ""
  pad, lo, hi = 44, min(values), max(values)
  span = (hi - lo) or 1.0

  def x(i):
    return pad + i * (width - 2 * pad) / (len(names) - 1)

  def y(v):
    return height - pad - (v - lo) * (height - 2 * pad) / span

  palette = ("#4a7ab5", "#c0392b", "#27ae60", "#8e44ad", "#d35400",
             "#16a085", "#7f8c8d")
  parts = []
  for n, (fold, found) in enumerate(folds.items()):
    color = palette[n % len(palette)]
    points = [(x(i), y(v)) for i, v in enumerate(found["heldout_loss"].values())
              if v is not None]
    parts.append(f'<polyline fill="none" stroke="{color}" points="'
                 + " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
                 + f'"><title>fold {html.escape(fold)}</title></polyline>')
    chosen = names.index(found["selected_checkpoint"])
    best = found["heldout_loss"][found["selected_checkpoint"]]
    if best is not None:
      parts.append(f'<circle cx="{x(chosen):.1f}" cy="{y(best):.1f}" r="5"'
                   f' fill="none" stroke="{color}"><title>fold'
                   f" {html.escape(fold)}: checkpoint"
                   f" {html.escape(names[chosen])}, {best:.4g}</title>"
                   "</circle>")
  for i, name in enumerate(names):
    parts.append(f'<text x="{x(i):.1f}" y="{height - pad + 16}"'
                 f' font-size="11" text-anchor="middle">{html.escape(name)}'
                 "</text>")
  parts.append(f'<text x="{pad - 4}" y="{y(hi) + 4:.1f}" font-size="11"'
               f' text-anchor="end">{hi:.4g}</text><text x="{pad - 4}"'
               f' y="{y(lo) + 4:.1f}" font-size="11" text-anchor="end">'
               f'{lo:.4g}</text><text x="{width / 2}" y="{height - 6}"'
               ' font-size="11" text-anchor="middle">checkpoint</text>')
  return (f'<svg id="heldout-loss" xmlns="http://www.w3.org/2000/svg"'
          f' width="{width}" height="{height}" role="img" aria-label="mean'
          f' held-out loss of each fold at each checkpoint">{"".join(parts)}'
          "</svg>")


def _checkpoint_selection(folds: Dict[str, Dict]) -> str:
  """The held-out loss curves and table, when checkpoints were selected."""
  if not folds or "selected_checkpoint" not in next(iter(folds.values())):
    return ""
  names = list(next(iter(folds.values()))["heldout_loss"])
  table = _table(["fold", "selected checkpoint"] + names,
                 [[fold, found["selected_checkpoint"]] +
                  list(found["heldout_loss"].values())
                  for fold, found in folds.items()], "heldout-losses")
  return ("<h3>Checkpoint selection</h3><p>Each fold's rows were scored by"
          " its checkpoint with the lowest mean loss on those rows, its"
          " held-out rows (<code>model.select_checkpoint: heldout_loss</code>)"
          ": early stopping after the fact. Ringed: the selected"
          " checkpoints.</p>" + _svg_heldout_loss(folds) + table)


def _early_aum(label_issues: Dict, names: Optional[Sequence[str]],
               classes: Dict[str, list]) -> str:
  """What early AUM decided: each checkpoint's fit and accuracy, and each
  class's counts (from `classes` where summary.json leaves them out)."""
  found = label_issues.get("early_aum")
  if not found:
    return ""
  if found["suspects"] is None and "early_aum_suspects" in classes:
    found = dict(found, **{name: classes[f"early_aum_{name}"] for name in (
        "suspects", "below_zero", "flagged")})
    if found["fell_back"]:
      found["below_zero"] = None
  usable = found["usable"]
  checkpoints = _table(
      ["checkpoint", "fit (suspects predicted as given)", "accuracy",
       "used"],
      [[c, f, a, "yes" if u else "no"] for c, f, a, u in zip(
          found["checkpoints"], found["fit"], found["accuracy"], usable)],
      "early-aum-checkpoints")
  suspects = found["suspects"]
  flagged = found["flagged"] or [0] * len(suspects)
  below = found["below_zero"] or [None] * len(suspects)
  rows = (range(len(suspects)) if len(suspects) <= CLASS_ROWS else sorted(
      range(len(suspects)), key=lambda k: (-flagged[k], k))[:CLASS_ROWS])
  classes = _table(
      ["class", "suspects (prune_by_noise_rate)", "early AUM < 0",
       "flagged"],
      [[_class_label(k, names), suspects[k], below[k], flagged[k]]
       for k in rows], "early-aum-classes")
  if found["fell_back"]:
    verdict = ("<p class=\"note\">No checkpoint was usable: early AUM fell"
               " back, and the label issues are the prune_by_noise_rate"
               " suspects.</p>")
  else:
    verdict = ("<p>Each class flags its rows with the smallest early AUM (the"
               " mean margin over the used checkpoints), as many as it has"
               " below zero or suspects, whichever is fewer.</p>")
  return ("<h3>Early AUM</h3><p>A checkpoint of the model trained on every"
          f" row is used when it predicts at most"
          f" {found['max_fit']:.3g} of the suspects as given and is at least"
          f" as accurate as the out-of-sample probabilities"
          f" ({found['oof_accuracy']:.4g}).</p>" + verdict + checkpoints +
          classes)


def _quantile_table(what: str, groups: Dict[str, Dict], css_id: str) -> str:
  """A table of each group's count and loss quantiles (`summary.json`'s
  `slices` or `folds`)."""
  keys = list(next(iter(groups.values()))["quantiles"])
  return _table([what, "count"] + [f"q{k}" for k in keys],
                [[name, g["count"]] + [g["quantiles"][k] for k in keys]
                 for name, g in groups.items()], css_id)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]],
           table_id: str) -> str:
  head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
  body = "".join(
      "<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in row) +
      "</tr>" for row in rows)
  return f'<table id="{table_id}"><tr>{head}</tr>{body}</table>'


def _fmt(value: Any) -> str:
  if isinstance(value, float):
    return f"{value:.6g}" if math.isfinite(value) else str(value)
  if isinstance(value, (list, tuple)):
    return ", ".join(_fmt(v) for v in value)
  return "" if value is None else str(value)


def _score_note(loss: Dict) -> str:
  """Says when the statistics and rules are of the deviance, not the loss."""
  if loss.get("score") != "deviance":
    return ""
  return ('<p class="note">The statistics and loss rules below are of each'
          " example's unit deviance (<code>flag.score: deviance</code>),"
          " which is comparable across targets; the losses themselves are in"
          " <code>losses/</code>.</p>")


def _overview(summary: Dict) -> str:
  scored = summary["examples_scored"]
  rate = summary["flagged"]["total"] / scored if scored else 0.0
  return _table(
      ["examples read", "scored", "dead-lettered", "flagged", "flagged rate",
       "duplicate ids", "seconds", "examples/s"],
      [[summary["examples_read"], scored, summary["examples_dead_lettered"],
        summary["flagged"]["total"], f"{rate:.2%}", summary["duplicate_ids"],
        summary["seconds"], summary["timings"]["examples_per_second"]]],
      "overview")


def _withheld(summary: Dict) -> str:
  """Why a run whose gates failed handed back no `clean/` or `weights/`."""
  withheld = (summary.get("clean") or {}).get("withheld_because")
  if not withheld:
    return ""
  return ('<p id="withheld"><strong>No clean/ or weights/ were handed'
          f" back:</strong> {html.escape(withheld)}.</p>")


def _comparison(found: Optional[Dict]) -> str:
  if found is None:
    return ("<p>No gate or baseline is set (<code>gate:</code> in the"
            " config; <code>lossaudit compare</code>).</p>")
  verdict = ('<p class="pass">Every gate passed.</p>' if found["passed"] else
             '<p class="fail">A quality gate failed: '
             + html.escape("; ".join(drift.failed_gates(found))) + "</p>")
  gates = _table(
      ["gate", "limit", "value", "passed", "exceeded by", "what"],
      [[g["gate"], g["limit"], g["value"], "yes" if g["passed"] else "NO",
        g["exceeded_by"], g["what"]] for g in found["gates"]], "gates")
  baseline = found["baseline"]
  if baseline is None:
    return verdict + gates + ("<p>No baseline run: the comparison starts"
                              " with the next run.</p>")
  rates = _table(
      ["", "baseline", "current", "change"],
      [[name, d["baseline"], d["current"], d["change"]] for name, d in (
          ("flagged rate", found["flagged_rate"]),
          ("dead-letter rate", found["dead_letter_rate"]))], "rates")
  shifts = _table(
      ["quantile", "baseline", "current", "relative shift"],
      [[q, d["baseline"], d["current"], d["shift"]]
       for q, d in found["quantiles"].items()], "quantile-shifts")
  label = ""
  if found["label_issue_rate"]:
    names = found.get("class_names") or {}
    label = "<h3>Label-issue rate by given class</h3>" + _table(
        ["class", "baseline", "current", "change"],
        [[f"{k} {names[k]}" if k in names else k, d["baseline"],
          d["current"], d["change"]]
         for k, d in found["label_issue_rate"].items()], "label-issue-rates")
  return (verdict + f"<p>Baseline: <code>{html.escape(baseline)}</code></p>"
          + gates + rates + "<h3>Loss quantiles</h3>" + shifts + label)


def _or(value: Any, otherwise: str) -> Any:
  return otherwise if value is None else value


def _history_section(summary: Dict, columns: Sequence[str],
                     top_new: Sequence[Dict[str, Any]]) -> str:
  """New, persistent and resolved flags, and the top new ones; empty
  without flag history."""
  counts = drift.flag_history(summary)
  if counts is None:
    return ""
  baseline = (summary.get("flag_history") or {}).get("baseline")
  note = ("" if baseline else "<p>No baseline run yet: every flag is"
          " new.</p>")
  unknown = "unknown (the baseline kept no ids)"
  table = _table(["new", "of them on new rows", "of them regressions",
                  "persistent", "resolved", "baseline flags not scored"],
                 [[counts["new"],
                   _or(counts.get("new_rows"), unknown),
                   _or(counts.get("regressions"), unknown),
                   counts["persistent"], counts["resolved"],
                   counts["baseline_not_scored"]]], "flag-history")
  new = (_table(columns, [[row.get(c) for c in columns] for row in top_new],
                "new-flags") if top_new else "<p>No new flags.</p>")

  return (f"<h2>Flag history</h2>{note}<p>New: flagged now, not in the"
          " baseline run, on rows the baseline never scored (new data) or"
          " on rows it scored and did not flag (regressions); persistent:"
          " flagged in both (first_flagged is the"
          " run where the streak began); resolved: flagged in the baseline,"
          " scored now and no longer flagged (listed under"
          f" <code>resolved/</code>).</p>{table}"
          f"<h3>New flags (top {len(top_new)})</h3>{new}")


def _label_issues(summary: Dict, classes: Optional[Dict[str, list]],
                  counts: Optional[FlagCounts]) -> str:
  """The label-issue section; `classes`: each class's numbers in full
  (`label_rules.class_columns`), or None: the summary's; `counts`: the
  flags counted, or None: the summary's."""
  label_issues = summary.get("label_issues")
  if not label_issues:
    return ("<p>Label-issue detection is off (<code>flag.label_issues:"
            " confident_learning</code>, <code>prune_by_noise_rate</code> or"
            " <code>early_aum</code>).</p>")
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
  per_class = _table(
      ["class", "examples", "label issues", "self-confidence threshold",
       "noise rate"],
      [[_class_label(k, names), label_counts[k], by_given[k],
        classes["threshold"][k], classes["noise_rate"][k]]
       for k in rows], "label-issue-classes")
  pairs = _table(
      ["given", "suggested", "label issues", "share of the given class"],
      [[_class_label(p.given, names), _class_label(p.suggested, names), n,
        n / label_counts[p.given] if label_counts[p.given] else None]
       for p, n in counts.top_pairs(PAIR_ROWS)], "label-issue-pairs"
  ) if counts.by_pair else "<p>No label issues were flagged.</p>"
  bounded = ""
  if num_classes > HEAT_MAP_CLASSES:
    table = ("every class" if num_classes <= CLASS_ROWS else
             f"the {CLASS_ROWS} with the most issues")
    bounded = (f"<p class=\"note\">Of {num_classes} classes, the heat map"
               f" shows the {len(mapped)} most involved in label issues"
               f" (given or suggested), the class table {table}, and the"
               f" pairs table the {PAIR_ROWS} pairs with the most.</p>")
  left_out = label_issues.get("non_finite_left_out") or 0
  left_out_note = (
      f"<p class=\"note\">{left_out} examples with a non-finite probability"
      " or loss (flagged non_finite) were left out of the thresholds, the"
      " confident joint and the ranking.</p>" if left_out else "")
  return (f"<p>Method: {html.escape(label_issues['method'])}. Each cell counts"
          " the examples given the row's label that the model suggests belong"
          " to the column's class.</p>" + left_out_note + bounded +
          _svg_heat_map(counts.issue_matrix(num_classes, mapped), names,
                        mapped) + per_class +
          "<h3>Class pairs with the most label issues</h3>" + pairs +
          _early_aum(label_issues, names, classes))


def _flagged_table(columns: Sequence[str], rows: Sequence[Dict[str, Any]],
                   previews: Optional[Previews]) -> str:
  """The top flagged rows, with a preview of each string input of the
  model after their `columns` (a note instead when there are none)."""
  headers = [c.replace("_", " ") for c in columns]
  values = [[r.get(c) for c in columns] for r in rows]
  if previews is None:
    return _table(headers, values, "flagged")
  if previews.note:
    return (f'<p class="note">{html.escape(previews.note)}</p>' +
            _table(headers, values, "flagged"))
  head = "".join(f"<th>{html.escape(h)}</th>"
                 for h in headers + list(previews.inputs))
  body = "".join(
      "<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in cells) +
      "".join(_preview_cell(previews.by_id.get(row.get("id"), {}).get(name))
              for name in previews.inputs) + "</tr>"
      for row, cells in zip(rows, values))
  return (f'<p class="note">The model\'s string inputs: images scaled down,'
          " text cut to its first characters.</p>"
          f'<table id="flagged"><tr>{head}</tr>{body}</table>')


def _preview_cell(shown: Optional[Dict]) -> str:
  """One `lossaudit.previews` preview as a table cell."""
  style = ' style="text-align: left; max-width: 30em"'
  if shown is None:
    return f"<td{style}><em>not found in the input</em></td>"
  more = (f" <em>(+{shown['more']} more)</em>" if shown.get("more") else "")
  if shown["kind"] == "image":
    alt = html.escape(f"{shown['format']} image, {shown['bytes']:,} bytes")
    return (f'<td{style}><img src="{html.escape(shown["uri"])}"'
            f' width="{int(shown["width"])}" height="{int(shown["height"])}"'
            f' alt="{alt}" title="{alt}">{more}</td>')
  text = html.escape(shown["text"])
  if shown["kind"] == "note":
    text = f"<em>{text}</em>"
  return f"<td{style}>{text}{more}</td>"


def _data_map_section(data_map: Optional[DataMap], easy_confidence: float,
                      ambiguous_variability: float) -> str:
  """The "Data map" section; empty without training dynamics."""
  if data_map is None:
    return ""
  # Imported here: lossaudit.data_map loads Beam (its CombineFn).
  from lossaudit.data_map import data_map_svg  # pylint: disable=g-import-not-at-top

  return f"""
<h2>Data map (training dynamics)</h2>
<p class="note">Each point is an example, placed by how the probability of
its given label moved over the model's checkpoints: its mean
(<em>confidence</em>) and its standard deviation (<em>variability</em>), after
Swayamdipta et al. (2020); coloured by the fraction of checkpoints that
predicted the label (<em>correctness</em>). Left of variability
{float(ambiguous_variability):g} an example is <em>easy</em> above confidence
{float(easy_confidence):g} and <em>hard</em> below it (hard examples are often
mislabelled); right of it, <em>ambiguous</em>. Flagged examples are ringed.
The sample is the same in every run over the same ids.</p>
{data_map_svg(data_map, easy_confidence=easy_confidence,
              ambiguous_variability=ambiguous_variability)}"""


def render_report(summary: Dict, cdf: Sequence[Optional[float]],
                  top_flagged: Sequence[Dict[str, Any]],
                  found: Optional[Dict] = None, *,
                  previews: Optional[Previews] = None,
                  data_map: Optional[DataMap] = None,
                  easy_confidence: float = 0.5,
                  ambiguous_variability: float = 0.2,
                  top_new_flagged: Sequence[Dict[str, Any]] = (),
                  label_classes: Optional[Dict[str, list]] = None,
                  flag_counts: Optional[FlagCounts] = None) -> str:
  """A self-contained HTML page (inline SVG and CSS, no script, no network).

  Args:
    summary: the `summary.json` document.
    cdf: evenly spaced loss quantiles `(M+1,)` for the histogram.
    top_flagged: the highest-scored flagged rows, as dicts.
    found: the `drift.json` document, when gates or a baseline are set.
    previews: thumbnails and text of the top flagged rows' string inputs,
      shown beside them; None when the model has none.
    data_map: a sample of the examples' training dynamics, drawn in a "Data
      map" section; None (no section) without `model.checkpoints`.
    easy_confidence, ambiguous_variability: the region bounds drawn on the
      data map (`dynamics.*`).
    top_new_flagged: the highest-scored flags the baseline did not have
      (flag history), shown first.
    label_classes: with label issues on, each class's numbers in full
      (`label_rules.class_columns`); None: those in `summary`.
    flag_counts: the flags counted, with every label pair; None: those in
      `summary` (its pairs with the most issues).
  """
  loss = summary["loss"]
  edges, counts = _histogram(cdf, loss["count"])
  moments = _table(["count", "mean", "std", "min", "max", "non-finite"],
                   [[loss["count"], loss["mean"], loss["std"], loss["min"],
                     loss["max"], loss["nan_count"]]], "moments")
  quantiles = _table(["quantile", "loss"],
                     [[q, v] for q, v in loss["quantiles"].items()],
                     "quantiles")
  slices = summary["slices"]
  slice_html = "<p>No slicing configured (stats.slice_by).</p>"
  if slices:
    slice_html = _quantile_table("slice", slices, "slices")
  fold_html = ""
  if summary.get("folds"):
    fold_html = ("<h2>Folds</h2><p>Each example was scored by the model of"
                 " its held-out fold: its count and loss quantiles.</p>" +
                 _quantile_table("fold", summary["folds"], "folds") +
                 _checkpoint_selection(summary["folds"]))
  columns = [c for c in ("id", "score", "loss", "reasons", "status",
                         "in_baseline", "first_flagged", "times_flagged",
                         "given_label",
                         "given_class", "predicted_label", "predicted_class",
                         "suggested_label", "suggested_class",
                         "self_confidence", "target", "prediction",
                         "error_norm", "deviance", "aum", "region", "fold")
             if any(c in r for r in top_flagged) or c in ("id", "score")]
  flagged = _flagged_table(columns, top_flagged, previews)
  history_html = _history_section(summary, columns, top_new_flagged)
  reasons = _table(["reason", "count"],
                   list(summary["flagged"]["by_reason"].items()), "reasons")
  thresholds = _table(
      ["rule", "threshold"],
      [[k, v] for k, v in summary["thresholds"].items()
       if not isinstance(v, (dict, list))], "thresholds")
  dead_reasons = _table(
      ["reason", "examples"],
      list(summary["dead_letter"]["by_reason"].items()), "dead-letter-reasons")
  if not summary["examples_dead_lettered"]:
    dead_reasons = "<p>Every input was scored.</p>" + dead_reasons
  # A long tail leaves the linear view one tall bar: start on the log view.
  skewed = counts.size and counts.max() > 20 * max(np.median(counts), 1.0)
  log_scale_checkbox = (
      f'<input type="checkbox" id="log-scale"{" checked" if skewed else ""}>'
      '<label for="log-scale"> log scale\n(counts)</label><br>')
  duplicate_html = (
      f"<p>{summary['duplicate_ids']} ids occur on more than one example"
      f" ({summary['duplicate_id_rows']} examples). Each example was scored"
      " and written under its id; none was merged.</p>" + _table(
          ["id", "examples"],
          [[d["id"], d["count"]] for d in summary["duplicate_id_examples"]],
          "duplicate-ids")
      if summary["duplicate_ids"] else "<p>Every id is unique.</p>")
  timings = _table(["", "value"], [
      (k, v) for k, v in summary["timings"].items()
      if k != "first_batch_time"], "timings")
  versions_ = _table(["package", "version"],
                     list(summary["versions"].items()), "versions")
  run = _table(["run id", "started (UTC)", "runner", "devices"],
               [[summary["run_id"], summary["started"], summary["runner"],
                 summary["devices"]]], "run")
  label_issues = _label_issues(summary, label_classes, flag_counts)
  return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>lossaudit report {html.escape(summary["run_id"])}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; max-width: 1000px; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; }}
td, th {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; }}
th {{ background: #f0f0f0; }}
p.note {{ color: #555; font-size: 90%; }}
p.pass {{ color: #1e7e34; font-weight: bold; }}
p.fail {{ color: #b00020; font-weight: bold; }}
#log-scale:checked ~ .histogram {{ display: none; }}
#log-scale:not(:checked) ~ .histogram-log {{ display: none; }}
</style></head><body>
<h1>lossaudit report</h1>
<p class="note">The model scored every example of the dataset with its loss:
how wrong the model finds the example's label. Examples with unusually high
loss, or whose label the model confidently disagrees with, are
<em>flagged</em> as possible outliers or label errors: the place to look
first. Inputs that could not be scored are <em>dead-lettered</em>, each with
its reason. Quantiles are approximate: each is within rank error
{loss["epsilon"]} of the exact value.</p>
<h2>Overview</h2>{_overview(summary)}
<h2>Comparison with the baseline</h2>{_comparison(found)}{_withheld(summary)}
{history_html}<h2>Loss distribution</h2>{_score_note(loss)}
{log_scale_checkbox}
{_svg_histogram(edges, counts, summary["thresholds"])}
{_svg_histogram(edges, counts, summary["thresholds"], log=True)}
{moments}
<h2>Quantiles</h2>{quantiles}
<h2>Slices</h2>{slice_html}
{fold_html}
<h2>Flag rules</h2><p>Thresholds each rule used, and how many examples each
flagged (an example can have several reasons).</p>{thresholds}{reasons}
<h2>Label issues</h2>{label_issues}{_data_map_section(
    data_map, easy_confidence, ambiguous_variability)}
<h2>Most suspicious examples (top {len(top_flagged)})</h2>
<p class="note">Ordered by score: the loss, or for label issues the
negative log of the probability of the given label.</p>{flagged}
<h2>Dead letters</h2><p>Inputs that could not be scored, by reason (each
is listed with its file and error under <code>dead_letter/</code>).</p>
{dead_reasons}
<h2>Duplicate ids</h2>{duplicate_html}
<h2>Run</h2>{run}<h3>Timings</h3>{timings}<h3>Versions</h3>{versions_}
<details><summary>Configuration</summary><pre>{html.escape(_yaml(summary["config"]))}</pre></details>
</body></html>
"""


def _yaml(value: Any) -> str:
  import yaml  # pylint: disable=g-import-not-at-top

  return yaml.safe_dump(value, sort_keys=False)
