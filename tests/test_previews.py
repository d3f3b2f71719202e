"""Previews of the flagged examples in the report: image thumbnails and text
snippets of a model's string inputs, fetched by re-reading the input."""

import base64
import re
import struct

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow as tf
import yaml

from lossaudit import previews, report
from lossaudit.pipelines import audit
from tests.browser import CHROMIUM, SHOWN_ROWS, open_page
from tests.helpers import base_config, report_data, small_summary

BOUND = 96  # The largest side of a thumbnail, in pixels.
NUM_IMAGES = 24
NUM_TEXTS = 24


def _png(height, width, color=None, seed=0):
  if color is None:
    pixels = np.random.default_rng(seed).integers(
        0, 256, (height, width, 3), dtype=np.uint8)
  else:
    pixels = np.broadcast_to(np.array(color, np.uint8), (height, width, 3))
  return tf.io.encode_png(tf.constant(pixels)).numpy()


def _decoded_uri(uri):
  """A `data:image/png;base64,` URI → its PNG bytes and `(H, W, C)` pixels."""
  prefix = "data:image/png;base64,"
  assert uri.startswith(prefix)
  png = base64.b64decode(uri[len(prefix):], validate=True)
  assert png[:8] == b"\x89PNG\r\n\x1a\n"
  return png, tf.io.decode_png(png).numpy()


# Pure functions.


def test_a_large_png_becomes_a_png_thumbnail_within_the_bound():
  shown = previews.preview(_png(150, 300))
  assert shown["kind"] == "image" and shown["format"] == "PNG"
  _, pixels = _decoded_uri(shown["uri"])
  assert pixels.shape == (48, 96, 3)
  assert (shown["height"], shown["width"]) == (48, 96)


def test_a_small_image_is_not_enlarged_and_keeps_its_pixels():
  value = _png(10, 20, seed=3)
  _, pixels = _decoded_uri(previews.preview(value)["uri"])
  assert np.array_equal(pixels, tf.io.decode_png(value).numpy())


def test_jpeg_and_bmp_are_images():
  jpeg = tf.io.encode_jpeg(tf.fill([200, 100, 3], tf.constant(200, tf.uint8)))
  shown = previews.preview(jpeg.numpy())
  assert shown["format"] == "JPEG"
  _, pixels = _decoded_uri(shown["uri"])
  assert pixels.shape == (96, 48, 3)
  assert np.abs(pixels.astype(int) - 200).max() <= 3
  # A 2×1 24-bit BMP, bottom row first, BGR, rows padded to 4 bytes.
  pixel_data = bytes([0, 0, 255, 0, 255, 0, 0, 0])
  bmp = (b"BM" + struct.pack("<IHHI", 54 + len(pixel_data), 0, 0, 54) +
         struct.pack("<IiiHHIIiiII", 40, 2, 1, 1, 24, 0, len(pixel_data),
                     2835, 2835, 0, 0) + pixel_data)
  shown = previews.preview(bmp)
  assert shown["format"] == "BMP"
  _, pixels = _decoded_uri(shown["uri"])
  assert pixels.tolist() == [[[255, 0, 0], [0, 255, 0]]]


def test_text_is_cut_to_200_characters():
  text = "é<b>" * 100
  shown = previews.preview(text.encode())
  assert shown["kind"] == "text" and shown["chars"] == 400
  assert shown["text"] == text[:200] + "…"
  assert previews.preview(b"BMW is a car")["text"] == "BMW is a car"
  assert previews.preview(b"")["text"] == ""


def test_bytes_that_are_neither_image_nor_text_are_a_note():
  shown = previews.preview(b"\xff\xfe\x00\x81" * 4)
  assert shown == {"kind": "note",
                   "text": "16 bytes, neither an image nor UTF-8 text"}


def test_a_corrupt_image_is_a_note():
  shown = previews.preview(_png(20, 20)[:40])
  assert shown["kind"] == "note"
  assert shown["text"].startswith("40 bytes: a PNG image that does not decode")
  shown = previews.preview(b"\xff\xd8\xff" + b"\x00" * 50)
  assert shown["kind"] == "note" and "JPEG image" in shown["text"]


def test_batch_previews_keeps_the_wanted_ids_once():
  batch = pa.RecordBatch.from_pydict({
      "id": pa.array([[1], [2], [3], [2], [4]], pa.list_(pa.int64())),
      "text": pa.array([[b"one"], [b"two"], [b"three"], [b"again"], None],
                       pa.list_(pa.binary())),
      "tokens": pa.array([["a", "b"], ["c"], [], ["d"], ["e"]]),
  })
  found = previews.batch_previews(
      batch, "id", [("text_in", "text"), ("tokens_in", "tokens"),
                    ("gone_in", "gone")],
      pa.array(["2", "4", "9"]))
  assert found == {
      "2": {"text_in": {"kind": "text", "text": "two", "chars": 3},
            "tokens_in": {"kind": "text", "text": "c", "chars": 1},
            "gone_in": {"kind": "note", "text": "no column 'gone'"}},
      "4": {"text_in": {"kind": "note", "text": "no value"},
            "tokens_in": {"kind": "text", "text": "e", "chars": 1},
            "gone_in": {"kind": "note", "text": "no column 'gone'"}},
  }
  found = previews.batch_previews(batch, "id", [("tokens_in", "tokens")],
                                  pa.array(["1"]))
  assert found == {"1": {"tokens_in": {"kind": "text", "text": "a b",
                                       "chars": 3}}}
  assert previews.batch_previews(batch, "id", [], pa.array(["7"])) == {}


def _hostile_page():
  shown = previews.Previews(("text", "image"), {
      "a": {"text": {"kind": "text", "text": '<b>x</b> & "y"', "chars": 16},
            "image": {"kind": "note", "text": "3 bytes, <odd>"}}})
  return report.render_report(small_summary(), [0.0, 1.0], [
      {"id": "a", "score": 2.0}, {"id": "b<img src=x onerror=alert(1)>",
                                  "score": 1.0}], previews=shown)


def test_the_flagged_rows_carry_previews_as_data_never_markup():
  page = _hostile_page()
  rows = report_data(page)["rows"]
  assert rows["inputs"] == ["text", "image"]
  assert rows["previews"] == [
      [{"kind": "text", "text": '<b>x</b> & "y"', "chars": 16},
       {"kind": "note", "text": "3 bytes, <odd>"}], [None, None]]
  # The data is JSON with "<" escaped; outside the scripts, no markup.
  assert "<" not in re.search(r'id="report-data">(.*?)</script>', page,
                              re.S).group(1)
  markup = re.sub(r"<script[^>]*>.*?</script>", "", page, flags=re.S)
  assert "<b>x" not in markup and "<odd>" not in markup
  assert "<img" not in markup


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_the_flagged_table_shows_previews_as_text(tmp_path):
  (tmp_path / "report.html").write_text(_hostile_page())
  with open_page(tmp_path / "report.html") as browser:
    shown = browser.evaluate(SHOWN_ROWS)
    markup = browser.evaluate(
        'document.querySelectorAll("#flagged b, #flagged img").length')
    assert browser.errors() == []
  assert shown["head"] == ["id", "score", "text", "image"]
  assert shown["rows"] == [
      ["a", "2", '<b>x</b> & "y"', "3 bytes, <odd>"],
      ["b<img src=x onerror=alert(1)>", "1", "not found in the input",
       "not found in the input"]]
  assert markup == 0


# End to end: an image SavedModel on TFRecords, a text model on Parquet.


def _color(i):
  """The solid color of image `i`: distinct per image."""
  return [(37 * i) % 256, (91 * i + 50) % 256, (23 * i + 120) % 256]


class _ImageClassifier(tf.Module):
  """Encoded PNG bytes `(N,)` → 3-class softmax of the mean color."""

  def __init__(self):
    super().__init__()
    self.kernel = tf.Variable([[4.0, -2.0, 0.0], [-3.0, 5.0, 1.0],
                               [0.0, -1.0, 2.0]])
    self.bias = tf.Variable([0.1, 0.0, -0.1])

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string,
                                              name="image")])
  def serve(self, image):
    def mean_color(png):
      pixels = tf.cast(tf.io.decode_png(png, channels=3), tf.float32) / 255
      return tf.reduce_mean(pixels, axis=[0, 1])

    colors = tf.map_fn(mean_color, image,
                       fn_output_signature=tf.TensorSpec([3], tf.float32))
    return {"probs": tf.nn.softmax(colors @ self.kernel + self.bias)}


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
  """An audit of PNGs (some larger than a thumbnail) with a SavedModel that
  decodes them; the 8 highest losses are flagged."""
  root = tmp_path_factory.mktemp("image_previews")
  module = _ImageClassifier()
  model = root / "model"
  tf.saved_model.save(module, str(model),
                      signatures={"serving_default": module.serve})
  sizes = [(150, 300), (200, 40), (30, 20), (96, 97)]
  with tf.io.TFRecordWriter(str(root / "images.tfrecord")) as writer:
    for i in range(NUM_IMAGES):
      height, width = sizes[i % len(sizes)]
      features = {
          "id": tf.train.Feature(bytes_list=tf.train.BytesList(
              value=[f"img-{i}".encode()])),
          "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(
              value=[_png(height, width, _color(i))])),
          "label": tf.train.Feature(int64_list=tf.train.Int64List(
              value=[i % 3])),
      }
      writer.write(tf.train.Example(features=tf.train.Features(
          feature=features)).SerializeToString())
  config = base_config(
      root / "images.tfrecord", model, root / "out",
      input={"feature_columns": {"image": "image/encoded"}},
      flag={"loss_quantile": None, "top_k": 8})
  path = root / "config.yaml"
  path.write_text(yaml.safe_dump(config))
  summary = audit.run(["--config", str(path)])
  return root / "out" / "report.html", summary


def _flagged_rows(page):
  """Each flagged row the report lists, and its previews by input."""
  rows = report_data(page)["rows"]
  previews = rows["previews"] or [[]] * len(rows["values"])
  return [(dict(zip(rows["columns"], values)), dict(zip(rows["inputs"],
                                                         shown)))
          for values, shown in zip(rows["values"], previews)]


def test_report_shows_a_thumbnail_of_each_flagged_image(image_run):
  path, summary = image_run
  assert summary["examples_scored"] == NUM_IMAGES
  assert summary["flagged"]["total"] == 8
  assert summary["metrics"]["counters"]["records_read"] == NUM_IMAGES
  page = path.read_text()
  rows = _flagged_rows(page)
  assert len(rows) == 8
  for row, shown in rows:
    i = int(row["id"].removeprefix("img-"))
    assert list(shown) == ["image"] and shown["image"]["kind"] == "image"
    _, pixels = _decoded_uri(shown["image"]["uri"])
    height, width = [(150, 300), (200, 40), (30, 20), (96, 97)][i % 4]
    scale = min(1, BOUND / max(height, width))
    assert pixels.shape == (round(height * scale), round(width * scale), 3)
    assert max(pixels.shape[:2]) <= BOUND
    # The thumbnail is of this row's image: its solid color.
    assert np.abs(pixels.astype(int) - _color(i)).max() <= 2


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_thumbnails_decode_in_chromium(image_run, tmp_path):
  path, _ = image_run
  with open_page(path) as browser:
    widths = browser.evaluate("""Array.from(
        document.querySelectorAll("#flagged img"), (i) => i.naturalWidth)""")
    assert browser.errors() == []
  assert len(widths) == 8 and all(w > 0 for w in widths), widths


TEXTS = [
    '<b>bold</b> & "quoted" text',
    "<script>alert(1)</script> nothing runs",
    "a long one: " + "la " * 120,
    "café ünïcödé ✓",
]


@pytest.fixture(scope="module")
def text_model(tmp_path_factory):
  import keras

  keras.utils.set_random_seed(0)
  vectorize = keras.layers.TextVectorization(max_tokens=30,
                                             output_sequence_length=6)
  vectorize.adapt(tf.constant(TEXTS))
  inputs = keras.Input(shape=(1,), dtype="string", name="text")
  hidden = keras.layers.GlobalAveragePooling1D()(
      keras.layers.Embedding(30, 4)(vectorize(inputs)))
  outputs = keras.layers.Dense(3, activation="softmax")(hidden)
  path = tmp_path_factory.mktemp("text_model") / "text.keras"
  keras.Model(inputs, outputs).save(path)
  return path


def _text_run(tmp_path, model, id_column):
  texts = [TEXTS[i % len(TEXTS)] + f" #{i}" for i in range(NUM_TEXTS)]
  pq.write_table(pa.table({
      "key": [f"t{i}" for i in range(NUM_TEXTS)], "text": texts,
      "label": [i % 3 for i in range(NUM_TEXTS)]}),
      tmp_path / "texts.parquet")
  config = base_config(
      tmp_path / "texts.parquet", model, tmp_path / "out",
      input={"format": "parquet", "id_column": id_column},
      flag={"loss_quantile": None, "top_k": NUM_TEXTS})
  path = tmp_path / "config.yaml"
  path.write_text(yaml.safe_dump(config))
  audit.run(["--config", str(path)])
  return texts, (tmp_path / "out" / "report.html").read_text()


@pytest.mark.slow
def test_report_shows_escaped_text_snippets(tmp_path, text_model):
  texts, page = _text_run(tmp_path, text_model, "key")
  rows = _flagged_rows(page)
  assert len(rows) == NUM_TEXTS
  assert report_data(page)["rows"]["inputs"] == ["text"]
  for row, shown in rows:
    text = texts[int(row["id"].removeprefix("t"))]
    snippet = text if len(text) <= 200 else text[:200] + "…"
    assert shown["text"] == {"kind": "text", "text": snippet,
                             "chars": len(text)}
  # The page's own four scripts; no markup of the texts is live.
  assert len(re.findall("<script", page)) == 4
  assert "<b>" not in re.sub(r"<script[^>]*>.*?</script>", "", page,
                             flags=re.S)


@pytest.mark.slow
def test_content_fingerprint_ids_get_a_note_instead(tmp_path, text_model):
  _, page = _text_run(tmp_path, text_model, None)
  assert len(_flagged_rows(page)) == NUM_TEXTS
  assert "input.id_column: null" in page
  assert report_data(page)["rows"]["previews"] == []
  assert "nothing runs" not in page


def _text_spec():
  from lossaudit.spec import Feature, LossTerm, ScoringSpec  # pylint: disable=g-import-not-at-top

  return ScoringSpec(
      model_path="m", signature="serving_default",
      features=(Feature("text", "review", (), "string"),),
      terms=(LossTerm(output="p", name="p", label_column="label",
                      loss_name="sparse_categorical_crossentropy",
                      label_dtype="int64", signals="sparse",
                      num_classes=2),),
      id_column="id")


def test_candidates_keep_the_highest_scores_as_read():
  batch = pa.record_batch({"id": ["a", "b", "c", "d"],
                           "review": ["w", "x", "y", "z"]})
  scored = pa.record_batch({"id": ["a", "c", "d"],
                            "loss": [1.0, float("nan"), 0.5]})
  table = previews.candidates(batch, scored, "id", ["review"], "loss", 2)
  assert table.to_pydict() == {"id": ["c", "a"], "review": [[b"y"], [b"w"]],
                               previews.SCORE_COLUMN: [np.inf, 1.0]}
  other = previews.candidates(
      # A list column in another file: candidates still concatenate.
      pa.record_batch({"id": ["e"], "review": pa.array([[b"v", b"u"]])}),
      pa.record_batch({"id": ["e"], "loss": [3.0]}), "id", ["review"],
      "loss", 2)
  assert previews.top_candidates([table, None, other], 2).column(
      "id").to_pylist() == ["c", "e"]


def test_candidates_above_a_running_top_keep_the_overall_top_k():
  rng = np.random.default_rng(7)
  k, kept, every = 5, [], []
  top = previews.RunningTop(k)
  assert top.bar == -np.inf
  for b in range(40):
    ids = [f"r{b}-{i}" for i in range(50)]
    # Later batches score higher on the whole, so some keep rows after
    # the bar has risen; ties at the bar are kept out.
    losses = np.round(rng.exponential(1 + b / 10, 50), 1)
    every += zip(losses.tolist(), ids)
    table = previews.candidates(
        pa.record_batch({"id": ids, "text": ids}),
        pa.record_batch({"id": ids, "loss": losses}), "id", ["text"],
        "loss", k, above=top.bar)
    if table is not None:
      assert min(table.column(previews.SCORE_COLUMN).to_pylist()) > top.bar
      top.add(table)
      kept.append(table)
  assert 1 < len(kept) < 40
  found = previews.top_candidates(kept, k)
  expected = sorted(every, reverse=True)[:k]
  assert sorted(found.column(previews.SCORE_COLUMN).to_pylist(),
                reverse=True) == [loss for loss, _ in expected]
  assert top.bar == expected[-1][0]


@pytest.mark.parametrize("covered", [True, False])
def test_fetch_previews_reads_the_input_only_for_ids_not_kept(tmp_path,
                                                              covered):
  import apache_beam as beam  # pylint: disable=g-import-not-at-top
  from apache_beam.testing.util import assert_that, equal_to  # pylint: disable=g-import-not-at-top

  from lossaudit.transforms.previews import FetchPreviews  # pylint: disable=g-import-not-at-top

  path = str(tmp_path / "reviews.parquet")
  pq.write_table(pa.table({"id": ["a", "b", "c"],
                           "review": ["from the file a", "from the file b",
                                      "from the file c"]}), path)
  kept = pa.table({"id": ["b"], "review": ["kept b"],
                   previews.SCORE_COLUMN: [9.0]})
  with beam.Pipeline() as p:
    top = p | "Top" >> beam.Create([[{"id": "b"}, {"id": "c"}]])
    candidates = p | "Kept" >> beam.Create([kept if covered else None])
    found = top | FetchPreviews([path], "parquet", _text_spec(), None, 2,
                                candidates=candidates)
    assert_that(found | beam.Map(lambda f: {
        id_: shown["text"]["text"] for id_, shown in f.by_id.items()}),
                equal_to([{"b": "kept b" if covered else "from the file b",
                           "c": "from the file c"}]))
