"""`report.html`: what it holds, and a reviewer's clicks in headless
Chromium (Debian's `chromium`, driven through its DevTools protocol).

`scripts/test` installs chromium when it is missing (scripts/install-chromium);
without one the browser tests are skipped.
"""

import json
import re
import subprocess

import numpy as np
import pandas as pd
import pytest

from lossaudit.pipelines import audit
from tests.browser import CHROMIUM, SHOWN_ROWS, open_page
from tests.helpers import base_config, report_data, report_rows

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
        input={"image_shape": [8, 8]},
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
  # The scripts are inline (the libraries' code holds markup in strings).
  assert not any("src" in attributes for attributes in re.findall(
      r"<script([^>]*)>", page))
  markup = re.sub(r"<script[^>]*>.*?</script>", "", page, flags=re.S)
  assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", markup)
  assert not re.search(r"<(img|iframe)[^>]*\bsrc\s*=", markup)
  assert "<link" not in markup and "@import" not in page


def test_report_lists_every_flagged_row_with_its_thumbnail(demo_report):
  path, summary = demo_report
  page = path.read_text()
  flagged = pd.read_parquet(path.parent / "flagged")
  rows = report_rows(page)
  assert summary["flagged"]["total"] == len(flagged) == len(rows) > 50
  # Highest score first, as flagged/ holds them.
  assert [r["id"] for r in rows] == flagged.sort_values(
      ["score", "id"], ascending=[False, True])["id"].tolist()
  assert {r["status"] for r in rows} <= {"new", "persistent"}
  assert {r["slice"] for r in rows} <= {str(k) for k in range(10)}
  previews = report_data(page)["rows"]["previews"]
  assert len(previews) == len(rows)
  assert all(p[0]["kind"] == "image" for p in previews)
  # No section twice: one flagged table, no second copy of new flags.
  assert page.count('id="flagged"') == 1 and 'id="new-flags"' not in page
  assert len(page.encode()) < 5_000_000


def _cell_centre(browser, given, suggested):
  """Viewport coordinates of the heat map's (given, suggested) cell."""
  return browser.evaluate(f"""(() => {{
    const element = document.getElementById("label-issue-matrix");
    element.scrollIntoView({{block: "center"}});
    const chart = window.lossauditReport.charts["label-issue-matrix"];
    const classes = JSON.parse(document.getElementById("report-data")
        .textContent).heatMap.classes;
    const [x, y] = chart.convertToPixel({{seriesIndex: 0}}, [
        classes.indexOf({suggested}), classes.indexOf({given})]);
    const box = element.getBoundingClientRect();
    return [box.left + x, box.top + y];
  }})()""")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_a_reviewer_works_through_the_report_in_chromium(demo_report):
  """Real clicks: a heat-map cell lists exactly its pair's rows; a header
  sorts; the pager pages; every thumbnail decodes; no console error."""
  path, summary = demo_report
  flagged = pd.read_parquet(path.parent / "flagged")
  issues = flagged[flagged["reasons"].map(lambda r: "label_issue" in r)]
  pairs = issues.groupby(["given_label", "suggested_label"]).size()
  given, suggested = map(int, pairs.sort_values(kind="stable").index[-1])
  count = int(pairs.max())
  with open_page(path, height=1000) as browser:
    assert browser.evaluate(
        'window.lossauditReport.table().getDataCount("active")') == len(
            flagged)
    shown = browser.evaluate(SHOWN_ROWS)
    assert len(shown["rows"]) == 25  # The first page.
    widths = browser.evaluate("""Array.from(
        document.querySelectorAll("#flagged img"), (i) => i.naturalWidth)""")
    assert len(widths) == 25 and min(widths) > 0

    browser.click(*_cell_centre(browser, given, suggested))
    shown = browser.evaluate(SHOWN_ROWS)
    head = shown["head"]
    assert len(shown["rows"]) == min(count, 25)
    assert browser.evaluate(
        'window.lossauditReport.table().getDataCount("active")') == count
    expected = set(issues[(issues["given_label"] == given) & (
        issues["suggested_label"] == suggested)]["id"])
    active = browser.evaluate("""window.lossauditReport.table()
        .getData("active").map((row) => row.id)""")
    assert set(active) == expected
    for cells in shown["rows"]:
      assert cells[head.index("given label")] == str(given)
      assert cells[head.index("suggested label")] == str(suggested)
    assert browser.evaluate(
        'document.getElementById("pair-filter").hidden') is False

    browser.click_element("#clear-pair")
    browser.click_element('#flagged .tabulator-col[tabulator-field="loss"]'
                          " .tabulator-col-title")
    shown = browser.evaluate(SHOWN_ROWS)
    losses = [float(cells[head.index("loss")]) for cells in shown["rows"]]
    ordered = np.sort(flagged["loss"].to_numpy())
    ascending = losses == pytest.approx(ordered[:25].tolist(), rel=1e-5)
    descending = losses == pytest.approx(ordered[::-1][:25].tolist(),
                                         rel=1e-5)
    assert ascending or descending
    first_page = [cells[0] for cells in shown["rows"]]
    browser.click_element('#flagged .tabulator-page[data-page="next"]')
    second = browser.evaluate(SHOWN_ROWS)
    assert len(second["rows"]) == 25
    assert not {cells[0] for cells in second["rows"]} & set(first_page)
    losses = [float(cells[head.index("loss")]) for cells in second["rows"]]
    expected_page = (ordered[25:50] if ascending else ordered[::-1][25:50])
    assert losses == pytest.approx(expected_page.tolist(), rel=1e-5)
    assert browser.errors() == []
  assert summary["gate"]["passed"]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_report_renders_in_chromium_without_console_errors(demo_report):
  path, summary = demo_report
  with open_page(path) as browser:
    drawn = browser.evaluate("""(() => {
      const count = (s) => document.querySelectorAll(s).length;
      return {histogram: count("#histogram svg"),
              matrix: count("#label-issue-matrix svg"),
              cells: window.lossauditReport.charts["label-issue-matrix"]
                  .getOption().series[0].data.length,
              bars: window.lossauditReport.charts.histogram
                  .getOption().series[0].data.length};
    })()""")
    assert browser.errors() == []
    dom = browser.evaluate("document.documentElement.outerHTML")
  for element in ('<table id="quantiles"', '<table id="slices"',
                  '<table id="dead-letter-reasons"', '<table id="gates"',
                  '<table id="quantile-shifts"', '<table id="timings"',
                  '<table id="versions"', '<table id="label-issue-classes"'):
    assert element in dom, element

  def rows(table_id):
    table = re.search(rf'<table id="{table_id}">(.*?)</table>', dom, re.S)
    return re.findall(r"<tr>(.*?)</tr>", table.group(1), re.S)[1:]

  assert len(rows("quantiles")) == len(summary["loss"]["quantiles"])
  assert len(rows("slices")) == 10
  assert drawn["histogram"] == drawn["matrix"] == 1
  assert drawn["bars"] == 40
  assert drawn["cells"] == len(summary["label_issues"]["issues_by_pair"])
  assert "Every gate passed." in dom
  assert summary["gate"]["passed"]


@pytest.mark.slow
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
  heat_map = report_data(page)["heatMap"]
  assert len(heat_map["classes"]) == 30
  involved = {}
  for key, n in by_pair.items():
    for k in map(int, key.split("->")):
      involved[k] = involved.get(k, 0) + n
  most = sorted(involved, key=lambda k: (-involved[k], k))[:30]
  assert set(heat_map["classes"]) == set(most)
  assert heat_map["labels"][0] == f"{heat_map['classes'][0]} class number" \
      f" {heat_map['classes'][0]}"
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
    (tmp_path / "report.html").write_text(page)
    with open_page(tmp_path / "report.html") as browser:
      assert browser.evaluate('document.querySelectorAll('
                              '"#label-issue-matrix svg").length') == 1
      assert browser.errors() == []


def test_a_run_without_label_issues_says_so(demo_report):
  from lossaudit import report  # pylint: disable=g-import-not-at-top

  summary, _, _ = _many_classes(demo_report[1], 5, 0)
  summary["label_issues"]["issues_by_pair"] = {}
  page = report.render_report(summary, [0.0, 1.0], [])
  assert "<p>No label issues were flagged.</p>" in page
  assert 'id="label-issue-pairs"' not in page


def test_the_vendored_files_are_those_recorded():
  """vendor/README.md records each inlined library's version, license and
  the SHA-256 of its files: the files must be those."""
  import gzip  # pylint: disable=g-import-not-at-top
  import hashlib  # pylint: disable=g-import-not-at-top
  import pathlib  # pylint: disable=g-import-not-at-top

  import lossaudit  # pylint: disable=g-import-not-at-top

  vendor = pathlib.Path(lossaudit.__file__).parent / "vendor"
  recorded = dict(re.findall(
      r"\| `([\w/.]+\.(?:js|css|js\.gz))` \| `([0-9a-f]{64})`",
      (vendor / "README.md").read_text()))
  assert set(recorded) == {"echarts/echarts.min.js.gz",
                           "tabulator/tabulator.min.js",
                           "tabulator/tabulator_simple.min.css"}
  for name, digest in recorded.items():
    data = (vendor / name).read_bytes()
    if name.endswith(".gz"):
      data = gzip.decompress(data)
    assert hashlib.sha256(data).hexdigest() == digest
  for folder in ("echarts", "tabulator"):
    assert (vendor / folder / "LICENSE").is_file()


def _mnist_like_rows(n, seed=0):
  """`n` flagged rows of 28x28 digit-like arrays (strokes on black, values
  0..255), with their `array` previews."""
  from lossaudit import previews as previews_lib  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(seed)
  rows, by_id = [], {}
  for i in range(n):
    image = np.zeros((28, 28), np.float32)
    r = rng.integers(6, 20)
    image[r:r + 3, 5:23] = rng.uniform(150, 255, (3, 18))
    image[4:24, r:r + 3] = rng.uniform(150, 255, (20, 3))
    row_id = f"mnist-{i:05d}"
    rows.append({"id": row_id, "score": float(n - i), "loss": float(n - i),
                 "reasons": ["label_issue"], "given_label": i % 10,
                 "suggested_label": (i + 1) % 10, "self_confidence": 0.01,
                 "status": "new", "in_baseline": True, "slice": str(i % 10)})
    by_id[row_id] = {"pixels": {"kind": "array", "values": image.ravel(),
                                "shape": (28, 28)}}
  return rows, previews_lib.Previews(
      ("pixels",), previews_lib.array_thumbnails(by_id))


@pytest.mark.slow
def test_ten_thousand_rows_stay_under_the_size_bounds(demo_report):
  """10,000 MNIST-like rows: under 10 MB with a thumbnail each, under 5 MB
  without."""
  from lossaudit import report  # pylint: disable=g-import-not-at-top

  summary = dict(demo_report[1], flagged=dict(demo_report[1]["flagged"],
                                              total=12_000))
  rows, previews = _mnist_like_rows(10_000)
  with_thumbnails = report.render_report(summary, [0.0, 1.0], rows,
                                         previews=previews)
  without = report.render_report(summary, [0.0, 1.0], rows)
  assert len(without.encode()) < 5_000_000
  assert len(with_thumbnails.encode()) < 10_000_000
  shown = report_data(with_thumbnails)["rows"]
  assert len(shown["values"]) == 10_000
  assert all(p[0]["kind"] == "image" for p in shown["previews"])
  assert "10,000 highest-scored of\n12,000 flagged rows" in with_thumbnails
