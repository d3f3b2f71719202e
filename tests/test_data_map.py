"""The data map: its deterministic sample, its CombineFn and its chart.

The sample is checked against numpy (the k smallest fingerprints of all the
ids), whatever the batching and merge order; the chart's data against the
sample, and the chart drawn in headless Chromium inside a whole report.
"""

import json

import numpy as np
import pyarrow as pa
import pytest

from lossaudit import data_map as dm
from lossaudit import report
from lossaudit.columns import fingerprints_u64
from lossaudit.summary import RunContext, RunStatistics
from tests.browser import CHROMIUM, open_page
from tests.helpers import check_combine_fn, report_data, small_summary

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


# The chart's data ------------------------------------------------------------


def test_chart_groups_every_point_by_correctness_and_rings_the_flagged(rows):
  found = dm.sample_rows(*rows, k=K)
  chart = dm.data_map_chart(found, easy_confidence=0.6,
                            ambiguous_variability=0.3)
  levels = chart["levels"]
  assert [level["correctness"] for level in levels] == [
      0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
  assert sum(len(level["points"]) for level in levels) == K
  # Each level holds the points whose correctness is nearest it.
  for level in levels:
    near = np.abs(found.correctness - level["correctness"]) < 0.1
    assert sorted(map(tuple, level["points"])) == sorted(zip(
        np.round(found.variability[near], 4).tolist(),
        np.round(found.confidence[near], 4).tolist()))
  assert len(chart["flagged"]) == found.flagged.sum() > 0
  assert (chart["shown"], chart["total"]) == (K, N)
  assert (chart["easy_confidence"], chart["ambiguous_variability"]) == (
      0.6, 0.3)
  assert chart["x_max"] >= max(0.5, found.variability.max())
  assert len(json.dumps(chart)) < 40 * K


def test_chart_of_an_empty_map_and_of_large_variability():
  empty = dm.data_map_chart(dm.DataMap.empty())
  assert all(level["points"] == [] for level in empty["levels"])
  assert (empty["flagged"], empty["shown"], empty["total"]) == ([], 0, 0)
  wide = dm.DataMap(np.array([1, 2], np.uint64), np.array([0.2, 0.9]),
                    np.array([0.1, 0.73]), np.array([0.0, 1.0]),
                    np.array([True, False]), 10)
  chart = dm.data_map_chart(wide)
  assert chart["x_max"] == pytest.approx(0.8)  # A round step past 0.73.
  assert chart["flagged"] == [[0.1, 0.2]]


# In the report ---------------------------------------------------------------


def _page(data_map=None):
  return report.render_report(
      small_summary(), [0.2, 0.5, 0.9, 1.4, 2.0],
      [{"id": "a", "score": 2.0, "loss": 2.0}], data_map=data_map,
      easy_confidence=0.6, ambiguous_variability=0.25)


def test_the_report_has_a_data_map_section_only_when_given(rows):
  without = _page()
  assert 'id="data-map"' not in without and "Data map" not in without
  assert report_data(without)["dataMap"] is None
  page = _page(dm.sample_rows(*rows, k=K))
  chart = report_data(page)["dataMap"]
  assert sum(len(level["points"]) for level in chart["levels"]) == K
  assert "<h2>Data map (training dynamics)</h2>" in page
  assert "variability\n0.25" in page and "confidence 0.6" in page


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_the_data_map_renders_in_chromium(rows, tmp_path):
  page = _page(dm.sample_rows(*rows, k=K))
  (tmp_path / "report.html").write_text(page)
  with open_page(tmp_path / "report.html") as browser:
    found = browser.evaluate("""(() => {
      const chart = window.lossauditReport.charts["data-map"];
      const box = document.getElementById("data-map").getBoundingClientRect();
      const series = chart.getOption().series;
      return {width: box.width > 300, height: box.height,
              points: series.slice(0, 6).reduce(
                  (n, s) => n + s.data.length, 0),
              rings: series[6].data.length,
              drawn: document.querySelectorAll("#data-map svg path").length};
    })()""")
    assert browser.errors() == []
  flagged = int(dm.sample_rows(*rows, k=K).flagged.sum())
  assert found["points"] == K and found["rings"] == flagged
  assert found["width"] and found["height"] == 460
  assert found["drawn"] >= K + flagged


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
  loss_stats = dict(small_summary()["loss"], cdf=[0.2, 1.0, 2.0])
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
    chart = report_data(page)["dataMap"]
    assert sum(len(level["points"]) for level in chart["levels"]) == 40
    assert "variability\n0.15" in page and "confidence 0.7" in page
  else:
    assert "data_map" not in summary and 'id="data-map"' not in page
