"""`report.html` rendered in headless Chromium (Debian's `chromium`).

`scripts/test` installs chromium when it is missing (scripts/install-chromium);
without one the browser test is skipped.
"""

import html
import json
import re
import shutil
import subprocess

import pytest

from lossaudit.pipelines import audit
from tests.helpers import base_config

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-dev-shm-usage", "--disable-background-networking",
                  "--disable-extensions", "--no-first-run",
                  "--enable-logging=stderr", "--v=0"]


def render(path, *flags, timeout=120):
  """`(DOM after load, Chromium's stderr)` of a local HTML file."""
  result = subprocess.run(
      [CHROMIUM, *CHROMIUM_FLAGS, *flags, f"file://{path}"],
      capture_output=True, text=True, timeout=timeout)
  assert result.returncode == 0, result.stderr[-2000:]
  return result.stdout, result.stderr


def probe_page(page: str, expression: str, tmp_path) -> str:
  """What `expression` (JavaScript, a string) gives once Chromium loaded a
  copy of `page`: the report has no script, the copy runs one."""
  probe = page.replace("</body>", f"""<pre id="probe"></pre><script>
window.addEventListener("load", () => {{
  document.getElementById("probe").textContent = ({expression});
}});
</script></body>""")
  path = tmp_path / "probed.html"
  path.write_text(probe)
  dom, log = render(path, "--dump-dom")
  assert "CONSOLE" not in log, [line for line in log.splitlines()
                                 if "CONSOLE" in line]
  return html.unescape(re.search(r'<pre id="probe">([^<]*)</pre>',
                                 dom).group(1))


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory, demo_build):
  """The demo audited twice, the second run against the first, with every
  section of the report filled: label issues, gates and a slice."""
  data, model, _ = demo_build
  root = tmp_path_factory.mktemp("report")
  summaries = []
  for name, baseline in (("first", None), ("second", root / "first")):
    config = base_config(
        data / "part-*.tfrecord.gz", model, root / name,
        flag={"loss_quantile": 0.95, "top_k": 60,
              "label_issues": "confident_learning"},
        stats={"slice_by": "label", "epsilon": 0.001},
        gate={"baseline": baseline and str(baseline),
              "max_flagged_fraction": 0.5, "max_quantile_shift": 0.1})
    path = root / f"{name}.yaml"
    import yaml
    path.write_text(yaml.safe_dump(config))
    summaries.append(audit.run(["--config", str(path)]))
  return root / "second" / "report.html", summaries[1]


def test_report_is_self_contained(demo_report):
  page = demo_report[0].read_text()
  assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
  assert "<script" not in page and "@import" not in page


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_report_renders_in_chromium_without_console_errors(demo_report):
  path, summary = demo_report
  dom, log = render(path, "--dump-dom")
  assert "CONSOLE" not in log, [line for line in log.splitlines()
                                 if "CONSOLE" in line]
  for element in ('<svg id="histogram"', '<svg id="histogram-log"',
                  '<svg id="label-issue-matrix"', '<table id="quantiles"',
                  '<table id="slices"', '<table id="flagged"',
                  '<table id="dead-letter-reasons"', '<table id="gates"',
                  '<table id="quantile-shifts"', '<table id="timings"',
                  '<table id="versions"', '<table id="label-issue-classes"'):
    assert element in dom, element

  def rows(table_id):
    table = re.search(rf'<table id="{table_id}">(.*?)</table>', dom, re.S)
    return re.findall(r"<tr>(.*?)</tr>", table.group(1), re.S)[1:]

  assert len(rows("quantiles")) == len(summary["loss"]["quantiles"])
  assert len(rows("slices")) == 10
  flagged = rows("flagged")
  assert len(flagged) == 50
  assert "label_issue" in "".join(flagged) or "top_k" in "".join(flagged)
  matrix = re.search(r'<svg id="label-issue-matrix".*?</svg>', dom, re.S)
  assert len(re.findall(r"<rect ", matrix.group(0))) == 100
  histogram = re.search(r'<svg id="histogram".*?</svg>', dom, re.S)
  assert len(re.findall(r"<rect ", histogram.group(0))) == 40
  assert "Every gate passed." in dom
  assert summary["gate"]["passed"]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_report_screenshot_has_content(demo_report, tmp_path):
  png = tmp_path / "report.png"
  render(demo_report[0], f"--screenshot={png}", "--window-size=1100,3000",
         "--hide-scrollbars")
  data = png.read_bytes()
  assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000


def test_report_summary_matches_the_tables(demo_report):
  page = demo_report[0].read_text()
  summary = json.loads((demo_report[0].parent / "summary.json").read_text())
  overview = re.search(r'<table id="overview">.*?</table>', page, re.S).group(0)
  cells = re.findall(r"<td>(.*?)</td>", overview)
  assert cells[:4] == [str(summary["examples_read"]),
                       str(summary["examples_scored"]),
                       str(summary["examples_dead_lettered"]),
                       str(summary["flagged"]["total"])]


def _many_classes(summary, k, pairs, seed=0):
  """`summary` with label issues over `k` classes: `pairs` random (given,
  suggested) pairs, each with a count, and class names."""
  import numpy as np  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(seed)
  given = rng.integers(0, k, pairs)
  suggested = (given + rng.integers(1, k, pairs)) % k
  counts = rng.integers(1, 40, pairs)
  by_pair = {}
  for g, s, n in zip(given.tolist(), suggested.tolist(), counts.tolist()):
    by_pair[f"{g}->{s}"] = by_pair.get(f"{g}->{s}", 0) + n
  label_counts = (rng.integers(50, 500, k) + np.bincount(
      given, weights=counts, minlength=k)).astype(int).tolist()
  names = [f"class number {i}" for i in range(k)]
  return dict(summary, label_issues={
      "method": "confident_learning", "label_counts": label_counts,
      "thresholds": rng.random(k).tolist(), "noise_rate":
      rng.random(k).tolist(), "issues_by_pair": by_pair,
      "class_names": names, "non_finite_left_out": 0}), by_pair, label_counts


def test_the_label_issue_section_stays_small_at_ten_thousand_classes(
    demo_report, tmp_path):
  """At K = 10,000 the page holds a heat map of the 30 classes most
  involved, the 100 classes and 50 pairs with the most issues: well under
  5 MB, and it renders."""
  from lossaudit import report  # pylint: disable=g-import-not-at-top

  summary, by_pair, label_counts = _many_classes(demo_report[1], 10_000,
                                                 50_000)
  flagged = [k % 7 for k in range(10_000)]
  summary["label_issues"]["early_aum"] = {
      "checkpoints": ["1", "2"], "fit": [0.2, 0.9], "accuracy": [0.8, 0.9],
      "oof_accuracy": 0.7, "usable": [True, False], "fell_back": False,
      "max_fit": 0.5, "non_finite": [0, 0], "suspects": [7] * 10_000,
      "below_zero": [9] * 10_000, "flagged": flagged}
  page = report.render_report(summary, [0.0, 1.0], [])
  assert len(page.encode()) < 5_000_000
  matrix = re.search(r'<svg id="label-issue-matrix".*?</svg>', page, re.S)
  assert len(re.findall(r"<rect ", matrix.group(0))) == 30 * 30
  involved = {}
  for key, n in by_pair.items():
    for k in map(int, key.split("->")):
      involved[k] = involved.get(k, 0) + n
  most = sorted(involved, key=lambda k: (-involved[k], k))[:30]
  shown = {int(g) for g in re.findall(r"<title>given (\d+) ",
                                      matrix.group(0))}
  assert shown == set(most)
  # The pairs table's first row: the pair with the most issues (by sort).
  top_key, top_n = sorted(by_pair.items(), key=lambda kv: (-kv[1], kv[0]))[0]
  given, suggested = map(int, top_key.split("->"))
  pairs = re.search(r'<table id="label-issue-pairs">(.*?)</table>', page,
                    re.S).group(1)
  rows = re.findall(r"<tr>(.*?)</tr>", pairs, re.S)[1:]
  assert len(rows) == 50
  assert re.findall(r"<td>(.*?)</td>", rows[0]) == [
      f"{given} class number {given}", f"{suggested} class number"
      f" {suggested}", str(top_n), f"{top_n / label_counts[given]:.6g}"]
  classes = re.search(r'<table id="label-issue-classes">(.*?)</table>', page,
                      re.S).group(1)
  assert len(re.findall(r"<tr>", classes)) == 1 + 100
  assert "Of 10000 classes, the heat map shows the 30 most involved" in page
  early = re.search(r'<table id="early-aum-classes">(.*?)</table>', page,
                    re.S).group(1)
  early_rows = re.findall(r"<tr>(.*?)</tr>", early, re.S)[1:]
  assert len(early_rows) == 100  # Those that flag 6, smallest class first.
  assert re.findall(r"<td>(.*?)</td>", early_rows[0]) == [
      "6 class number 6", "7", "9", "6"]
  if CHROMIUM is not None:
    found = probe_page(page, 'document.querySelectorAll('
                       '"#label-issue-matrix rect").length', tmp_path)
    assert found == "900"


def test_a_run_without_label_issues_says_so(demo_report):
  from lossaudit import report  # pylint: disable=g-import-not-at-top

  summary, _, _ = _many_classes(demo_report[1], 5, 0)
  summary["label_issues"]["issues_by_pair"] = {}
  page = report.render_report(summary, [0.0, 1.0], [])
  assert "<p>No label issues were flagged.</p>" in page
  assert 'id="label-issue-pairs"' not in page
