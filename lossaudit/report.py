"""`summary.json` assembly and the self-contained `report.html` page."""

from __future__ import annotations

import html
import math
import platform
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

HISTOGRAM_BINS = 40


def versions() -> Dict[str, str]:
  """Versions of the stack that produced a run."""
  import importlib.metadata as md  # pylint: disable=g-import-not-at-top

  result = {"python": platform.python_version()}
  for dist in ("lossaudit", "tensorflow", "keras", "apache-beam", "tfx-bsl",
               "pyarrow", "numpy"):
    try:
      result[dist] = md.version(dist)
    except md.PackageNotFoundError:
      result[dist] = None
  return result


def build_summary(*, loss_stats: Dict, slice_stats: Dict[str, Dict],
                  thresholds: Dict, flag_counts: Dict[str, int],
                  dead_lettered: int, config: Dict, runner: str,
                  seconds: float, files: Dict[str, List[str]],
                  devices: Sequence[str] = ()) -> Dict:
  """The `summary.json` document (see CONTRACT.md)."""
  scored = loss_stats["count"] + loss_stats["nan_count"]
  loss = {k: v for k, v in loss_stats.items() if k != "cdf"}
  thresholds = dict(thresholds)
  by_reason = {k: v for k, v in sorted(flag_counts.items())
               if k != "total" and not k.startswith("pair:")}
  label_issues = thresholds.get("label_issues")
  if label_issues is not None:
    label_issues = {k: v for k, v in label_issues.items()
                    if k not in ("cells", "prune_counts")}
    label_issues["issues_by_pair"] = {
        k[len("pair:"):]: v for k, v in sorted(flag_counts.items())
        if k.startswith("pair:")}
    thresholds = {k: v for k, v in thresholds.items() if k != "label_issues"}
  return {
      "examples_read": scored + dead_lettered,
      "examples_scored": scored,
      "examples_dead_lettered": dead_lettered,
      "loss": loss,
      "slices": {
          str(k): {"count": v["count"] + v["nan_count"],
                   "quantiles": v["quantiles"]}
          for k, v in sorted(slice_stats.items())
      },
      "thresholds": {k: (list(v) if isinstance(v, tuple) else v)
                     for k, v in thresholds.items()},
      "flagged": {"total": flag_counts.get("total", 0),
                  "by_reason": by_reason},
      "label_issues": label_issues,
      "config": config,
      "versions": versions(),
      "runner": runner,
      "devices": list(devices),
      "seconds": round(seconds, 3),
      "files": files,
  }


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
                   thresholds: Dict[str, Any]) -> str:
  width, height, pad = 720, 240, 40
  if counts.size == 0:
    return "<p>No finite losses.</p>"
  top = max(counts.max(), 1.0)
  scale_x = (width - 2 * pad) / (edges[-1] - edges[0])
  bars = []
  for left, right, c in zip(edges[:-1], edges[1:], counts):
    x = pad + (left - edges[0]) * scale_x
    w = max((right - left) * scale_x - 1, 1)
    h = (height - 2 * pad) * c / top
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
  axis = (f'<text x="{pad}" y="{height - 10}" font-size="11">{edges[0]:.4g}'
          f'</text><text x="{width - pad}" y="{height - 10}" font-size="11"'
          f' text-anchor="end">{edges[-1]:.4g}</text>'
          f'<text x="{width / 2}" y="{height - 10}" font-size="11"'
          ' text-anchor="middle">per-sample loss</text>')
  return (f'<svg id="histogram" xmlns="http://www.w3.org/2000/svg"'
          f' width="{width}" height="{height}" role="img"'
          f' aria-label="loss histogram">{"".join(bars)}{"".join(lines)}'
          f"{axis}</svg>")


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


def render_report(summary: Dict, cdf: Sequence[Optional[float]],
                  top_flagged: Sequence[Dict[str, Any]]) -> str:
  """A self-contained HTML page (inline SVG and CSS, no network)."""
  loss = summary["loss"]
  edges, counts = _histogram(cdf, loss["count"])
  overview = _table(
      ["examples read", "scored", "dead-lettered", "flagged", "seconds"],
      [[summary["examples_read"], summary["examples_scored"],
        summary["examples_dead_lettered"], summary["flagged"]["total"],
        summary["seconds"]]], "overview")
  moments = _table(["count", "mean", "std", "min", "max", "non-finite"],
                   [[loss["count"], loss["mean"], loss["std"], loss["min"],
                     loss["max"], loss["nan_count"]]], "moments")
  quantiles = _table(["quantile", "loss"],
                     [[q, v] for q, v in loss["quantiles"].items()],
                     "quantiles")
  slices = summary["slices"]
  slice_html = "<p>No slicing configured (stats.slice_by).</p>"
  if slices:
    keys = list(next(iter(slices.values()))["quantiles"])
    slice_html = _table(
        ["slice", "count"] + [f"q{k}" for k in keys],
        [[name, s["count"]] + [s["quantiles"][k] for k in keys]
         for name, s in slices.items()], "slices")
  flag_rows = [[r.get("id"), r.get("score"), r.get("loss"),
                list(r.get("reasons") or []), r.get("given_label"),
                r.get("predicted_label")] for r in top_flagged]
  flagged = _table(["id", "score", "loss", "reasons", "given label",
                    "predicted label"], flag_rows, "flagged")
  reasons = _table(["reason", "count"],
                   list(summary["flagged"]["by_reason"].items()), "reasons")
  thresholds = _table(["rule", "threshold"],
                      list(summary["thresholds"].items()), "thresholds")
  versions_ = _table(["package", "version"],
                     list(summary["versions"].items()), "versions")
  return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>lossaudit report</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; max-width: 960px; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; }}
td, th {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; }}
th {{ background: #f0f0f0; }}
p.note {{ color: #555; font-size: 90%; }}
</style></head><body>
<h1>lossaudit report</h1>
<p class="note">Per-sample losses of the model on every example; examples
with unusually high loss are flagged as possible outliers or label errors.
Quantiles are approximate: each is within rank error
{loss["epsilon"]} of the exact value.</p>
<h2>Overview</h2>{overview}
<h2>Loss distribution</h2>{_svg_histogram(edges, counts, summary["thresholds"])}
{moments}
<h2>Quantiles</h2>{quantiles}
<h2>Slices</h2>{slice_html}
<h2>Flag rules</h2>{thresholds}{reasons}
<h2>Most suspicious examples (top {len(flag_rows)})</h2>{flagged}
<h2>Run</h2><p>Runner: {html.escape(str(summary["runner"]))}</p>{versions_}
<details><summary>Configuration</summary><pre>{html.escape(_yaml(summary["config"]))}</pre></details>
</body></html>
"""


def _yaml(value: Any) -> str:
  import yaml  # pylint: disable=g-import-not-at-top

  return yaml.safe_dump(value, sort_keys=False)
