"""The data map: its deterministic sample, its CombineFn and its SVG.

The sample is checked against numpy (the k smallest fingerprints of all the
ids), whatever the batching and merge order; the SVG is parsed as XML and
drawn in headless Chromium inside a whole report.
"""

import json
import re
import xml.etree.ElementTree as ET

import numpy as np
import pyarrow as pa
import pytest

from lossaudit import data_map as dm
from lossaudit import report
from lossaudit.columns import fingerprints_u64
from lossaudit.flag_counts import FlagCounts
from lossaudit.summary import RunContext, RunStatistics, build_summary
from tests.helpers import check_combine_fn
from tests.test_report import CHROMIUM, probe_page, render

SVG = "{http://www.w3.org/2000/svg}"
N = 20000
K = dm.DATA_MAP_POINTS


def _rows(n=N, seed=0):
  """`(ids, confidence, variability, correctness, flagged)` `(n,)` each; 50
  ids occur twice (with other values), so ties on the key are decided by
  the values."""
  rng = np.random.default_rng(seed)
  ids = np.char.add("ex-", np.arange(n).astype(str)).astype(object)
  twice = rng.choice(n, 50, replace=False)
  ids[twice[:25]] = ids[twice[25:]]
  confidence = rng.uniform(size=n)
  variability = rng.uniform(0.0, 0.5, n)
  correctness = rng.integers(0, 6, n) / 5
  flagged = rng.uniform(size=n) < 0.05
  return ids, confidence, variability, correctness, flagged


def _reference(ids, confidence, variability, correctness, flagged, k=K):
  """The sample by numpy: all rows sorted by (fingerprint, values)."""
  keys = fingerprints_u64(
      np.char.encode(ids.astype(str), "utf-8").astype(object))
  columns = [keys, confidence, variability, correctness, flagged]
  order = np.lexsort(columns[::-1])[:k]
  return dm.DataMap(*(c[order] for c in columns), total=len(keys))


def _assert_equal(actual, expected):
  assert isinstance(actual, dm.DataMap)
  assert actual.total == expected.total
  for name in ("keys", "confidence", "variability", "correctness",
               "flagged"):
    a, e = getattr(actual, name), getattr(expected, name)
    assert a.dtype == e.dtype, name
    np.testing.assert_array_equal(a, e, err_msg=name)


def _batches(rows, rng, parts=17):
  """`rows` split at random points into `parts` batches (one empty)."""
  n = len(rows[0])
  cuts = np.sort(rng.choice(np.arange(1, n), parts - 2, replace=False))
  cuts = np.concatenate([cuts[:3], cuts[2:3], cuts[3:]])  # An empty batch.
  return [tuple(part) for part in zip(*(np.split(c, cuts) for c in rows))]


@pytest.fixture(scope="module")
def rows():
  return _rows()


@pytest.fixture(scope="module")
def expected(rows):
  return _reference(*rows)


def test_sample_rows_is_the_k_smallest_fingerprints(rows, expected):
  found = dm.sample_rows(*rows, k=K)
  _assert_equal(found, expected)
  assert found.points == K and found.total == N
  assert np.all(np.diff(found.keys.astype(np.float64)) >= 0)
  assert found.keys.dtype == np.uint64


def test_ids_as_arrow_or_numpy_strings_or_bytes_give_one_sample(rows,
                                                                expected):
  ids, *values = rows
  for form in (pa.array(ids.tolist()),
               pa.array(ids.tolist(), pa.large_string()),
               pa.chunked_array([ids[:7].tolist(), ids[7:].tolist()]),
               ids.astype(str), np.char.encode(ids.astype(str), "utf-8")):
    _assert_equal(dm.sample_rows(form, *values, k=K), expected)


def test_the_sample_does_not_depend_on_batching_or_merge_order(rows,
                                                               expected):
  rng = np.random.default_rng(1)
  for _ in range(3):
    pieces = [dm.sample_rows(*batch, k=K) for batch in _batches(rows, rng)]
    forward = dm.DataMap.empty()
    for piece in pieces:
      forward = dm.merge(forward, piece, K)
    _assert_equal(forward, expected)
    backward = dm.DataMap.empty()
    for piece in pieces[::-1]:
      backward = dm.merge(piece, backward, K)
    _assert_equal(backward, expected)
    # A random merge tree.
    level = [pieces[i] for i in rng.permutation(len(pieces))]
    while len(level) > 1:
      level = [dm.merge(*level[i:i + 2], K) if i + 1 < len(level)
               else level[i] for i in range(0, len(level), 2)]
    _assert_equal(level[0], expected)
    _assert_equal(dm.merge_all(pieces[::-1], K), expected)


def test_small_k_and_fewer_rows_than_k(rows):
  small = [c[:300] for c in rows]
  _assert_equal(dm.sample_rows(*small, k=K), _reference(*small, k=K))
  _assert_equal(dm.sample_rows(*small, k=7), _reference(*small, k=7))
  zero = dm.sample_rows(*small, k=0)
  assert zero.points == 0 and zero.total == 300
  with pytest.raises(ValueError, match="k >= 0"):
    dm.sample_rows(*small, k=-1)
  with pytest.raises(ValueError, match="one length"):
    dm.sample_rows(small[0], small[1][:-1], *small[2:], k=5)


def test_rows_that_are_not_finite_are_left_out(rows):
  ids, confidence, variability, correctness, flagged = [
      c[:1000].copy() for c in rows]
  confidence[[1, 5]] = np.nan
  variability[9] = np.inf
  correctness[11] = -np.inf
  keep = np.ones(1000, bool)
  keep[[1, 5, 9, 11]] = False
  found = dm.sample_rows(pa.array(ids.tolist()), pa.array(confidence),
                         variability, correctness, flagged, k=100)
  _assert_equal(found, _reference(ids[keep], confidence[keep],
                                  variability[keep], correctness[keep],
                                  flagged[keep], k=100))
  assert found.total == 996


def test_empty_batches():
  empty = dm.sample_rows(pa.array([], pa.string()), [], [], [], [], k=5)
  _assert_equal(empty, dm.DataMap.empty())
  _assert_equal(dm.merge(empty, empty, 5), dm.DataMap.empty())


def test_combine_fn_through_add_merge_compact_extract(rows, expected):
  rng = np.random.default_rng(2)
  pieces = [dm.sample_rows(*batch, k=K) for batch in _batches(rows, rng, 12)]
  check_combine_fn(dm.DataMapCombineFn(), pieces, expected, _assert_equal)
  check_combine_fn(dm.DataMapCombineFn(), [], dm.DataMap.empty(),
                   _assert_equal)
  # Pieces sampled with a larger k are cut down to the CombineFn's.
  check_combine_fn(dm.DataMapCombineFn(k=40), pieces,
                   _reference(*rows, k=40), _assert_equal)


def test_the_accumulator_is_small(rows):
  fn = dm.DataMapCombineFn()
  accumulator = fn.create_accumulator()
  for batch in _batches(rows, np.random.default_rng(3)):
    accumulator = fn.add_input(accumulator, dm.sample_rows(*batch, k=K))
  encoded = fn.get_accumulator_coder().encode(fn.compact(accumulator))
  assert len(encoded) < 40 * K


# The SVG ---------------------------------------------------------------------


def _groups(svg, name):
  root = ET.fromstring(svg)
  return [g for g in root.iter(f"{SVG}g") if g.get("class") == name]


def test_svg_draws_every_point_and_ring_the_flagged(rows):
  found = dm.sample_rows(*rows, k=K)
  svg = dm.data_map_svg(found, easy_confidence=0.6, ambiguous_variability=0.3)
  root = ET.fromstring(svg)
  assert root.get("id") == "data-map"
  points = _groups(svg, "points")
  assert len(points) == 6
  assert sum(len(g.findall(f"{SVG}circle")) for g in points) == K
  # Each group holds the points of its colour: correctness nearest it.
  for g in points:
    level = float(g.get("data-correctness"))
    assert len(g) == np.sum(np.abs(found.correctness - level) < 0.1)
  rings = _groups(svg, "flagged")[0].findall(f"{SVG}circle")
  assert len(rings) == found.flagged.sum() > 0
  legend = "".join(_groups(svg, "legend")[0].itertext())
  assert "correctness" in legend and "flagged" in legend
  caption = [t for t in root.iter(f"{SVG}text") if t.get("class") == "caption"]
  assert caption[0].text == (f"{K:,} of {N:,} examples shown (sampled by id"
                             " hash)")
  # Coordinates lie in the plot and carry one decimal at most.
  x = np.array([float(c.get("cx")) for g in points for c in g])
  y = np.array([float(c.get("cy")) for g in points for c in g])
  plot = root.find(f"{SVG}rect")
  left, top = float(plot.get("x")), float(plot.get("y"))
  assert x.min() >= left and x.max() <= left + float(plot.get("width"))
  assert y.min() >= top and y.max() <= top + float(plot.get("height"))
  assert not re.search(r'c[xy]="-?\d+\.\d\d', svg)
  # The guides: variability 0.3, and confidence 0.6 left of it.
  guides = [line for line in root.iter(f"{SVG}line")
            if line.get("class") == "guide"]
  assert len(guides) == 2
  vertical, horizontal = guides
  assert vertical.get("x1") == vertical.get("x2") == horizontal.get("x2")
  width = float(plot.get("width"))
  assert float(vertical.get("x1")) == pytest.approx(left + 0.6 * width,
                                                    abs=0.05)
  assert float(horizontal.get("y1")) == pytest.approx(
      top + 0.4 * float(plot.get("height")), abs=0.05)
  assert len(svg) < 60 * K


def test_svg_of_an_empty_map_and_of_large_variability():
  svg = dm.data_map_svg(dm.DataMap.empty())
  assert _groups(svg, "points") == [] and _groups(svg, "flagged") == []
  assert "0 of 0 examples shown" in svg
  wide = dm.DataMap(np.array([1, 2], np.uint64), np.array([0.2, 0.9]),
                    np.array([0.1, 0.73]), np.array([0.0, 1.0]),
                    np.array([True, False]), 10)
  svg = dm.data_map_svg(wide)
  ticks = [t.text for t in ET.fromstring(svg).iter(f"{SVG}text")
           if t.get("text-anchor") == "middle"]
  assert "0.8" in ticks  # The axis reaches past the largest variability.
  assert len(_groups(svg, "flagged")[0]) == 1


# In the report ---------------------------------------------------------------


def _summary():
  """A small `summary.json` document."""
  from lossaudit.rules import Thresholds  # pylint: disable=g-import-not-at-top

  loss_stats = {"count": 3, "nan_count": 0, "mean": 1.0, "std": 0.5,
                "min": 0.2, "max": 2.0, "quantiles": {"0.5": 0.9},
                "epsilon": 0.01, "median": 0.9, "mad": 0.4}
  return build_summary(
      RunStatistics(loss=loss_stats,
                    thresholds=Thresholds.of(loss_quantile=1.5),
                    flag_counts=FlagCounts(1, {"loss_quantile": 1})),
      RunContext(config={"batch_size": 4}, run={
          "runner": "DirectRunner", "run_id": "r1", "start_time": 0.0}),
      seconds=1.0).document


def _page(data_map=None):
  return report.render_report(
      _summary(), [0.2, 0.5, 0.9, 1.4, 2.0],
      [{"id": "a", "score": 2.0, "loss": 2.0}], data_map=data_map,
      easy_confidence=0.6, ambiguous_variability=0.25)


def test_the_report_has_a_data_map_section_only_when_given(rows):
  without = _page()
  assert "data-map" not in without and "Data map" not in without
  page = _page(dm.sample_rows(*rows, k=K))
  svg = re.search(r'<svg id="data-map".*?</svg>', page, re.S).group(0)
  assert len(_groups(svg, "points")) == 6
  assert "<h2>Data map (training dynamics)</h2>" in page
  assert "variability\n0.25" in page and "confidence\n0.6" in page
  assert "<script" not in page
  # Nothing else changes.
  assert page.replace(page[page.index("\n<h2>Data map"):page.index(
      "\n<h2>Most suspicious")], "") == without


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_the_data_map_renders_in_chromium(rows, tmp_path):
  page = _page(dm.sample_rows(*rows, k=K))
  found = json.loads(probe_page(page, """(() => {
  const svg = document.getElementById("data-map");
  const box = svg.getBoundingClientRect();
  const style = getComputedStyle(svg);
  return JSON.stringify({
      width: box.width, height: box.height,
      visible: style.display !== "none" && style.visibility !== "hidden",
      points: svg.querySelectorAll("g.points circle").length,
      rings: svg.querySelectorAll("g.flagged circle").length,
      drawn: Array.from(svg.querySelectorAll("g.points circle")).filter(
          (c) => c.getBBox().width > 0).length});
})()""", tmp_path))
  flagged = int(dm.sample_rows(*rows, k=K).flagged.sum())
  assert found == {"width": 720, "height": 440, "visible": True, "points": K,
                   "rings": flagged, "drawn": K}
  # The report itself, without the probe, loads without console errors.
  (tmp_path / "plain.html").write_text(page)
  _, log = render(tmp_path / "plain.html", "--dump-dom")
  assert "CONSOLE" not in log


# Through WriteSummary --------------------------------------------------------


@pytest.mark.parametrize("with_map", [True, False])
def test_write_summary_passes_the_data_map_on(tmp_path, with_map):
  import apache_beam as beam  # pylint: disable=g-import-not-at-top

  from lossaudit.config import AuditConfig  # pylint: disable=g-import-not-at-top
  from lossaudit.rules import Thresholds  # pylint: disable=g-import-not-at-top
  from lossaudit.transforms.write import WriteSummary  # pylint: disable=g-import-not-at-top
  from tests.helpers import base_config  # pylint: disable=g-import-not-at-top

  config = AuditConfig.from_dict(base_config(
      tmp_path / "in-*.tfrecord.gz", tmp_path / "model-{checkpoint}.keras",
      tmp_path, model={"checkpoints": [1, 2]},
      dynamics={"easy_confidence": 0.7, "ambiguous_variability": 0.15}))
  piece = dm.sample_rows(*[c[:500] for c in _rows(500)], k=100)
  loss_stats = dict(_summary()["loss"], cdf=[0.2, 1.0, 2.0])
  loss_stats.pop("computed_from")
  with beam.Pipeline() as p:
    parts = (p | "Statistics" >> beam.Create([RunStatistics(
        loss=loss_stats, thresholds=Thresholds.of(loss_quantile=1.5),
        top_flagged=[])]),)
    if with_map:
      parts += (p | "Pieces" >> beam.Create([piece])
                | beam.CombineGlobally(dm.DataMapCombineFn(k=40))
                | beam.Map(lambda found: RunStatistics(data_map=found)),)
    _ = parts | WriteSummary(str(tmp_path), config, RunContext(
        config.to_dict(),
        {"runner": "DirectRunner", "run_id": "r1", "start_time": 0.0}))
  summary = json.loads((tmp_path / "summary.json").read_text())
  page = (tmp_path / "report.html").read_text()
  if with_map:
    assert summary["data_map"] == {"points": 40, "total": 500}
    svg = re.search(r'<svg id="data-map".*?</svg>', page, re.S).group(0)
    assert sum(len(g) for g in _groups(svg, "points")) == 40
    assert "variability\n0.15" in page and "confidence\n0.7" in page
  else:
    assert "data_map" not in summary and "data-map" not in page
