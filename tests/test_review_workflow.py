"""The review-and-fix journey, end to end, as a team runs it.

The demo's digits (8x8 pixels a row, 10% of labels flipped) are audited with
confident learning and `input.image_shape`. `lossaudit export` writes Label
Studio tasks: one per label issue, each with its thumbnail and the suggested
label as a pre-annotation. A reviewer keeps some, drops some and relabels
the rest; Label Studio's export of those annotations (and, for a second
team, a CSV of the same decisions) goes into `output.clean.decisions`, and
`clean/` then holds exactly the decided rows and labels.
"""

import base64
import json

import pandas as pd
import pytest
import tensorflow as tf

from lossaudit.pipelines import cli
from tests.helpers import base_config, run_audit


def _config(data, model, out, **clean):
  return base_config(
      data / "part-*.tfrecord.gz", model, out,
      input={"image_shape": [8, 8]},
      flag={"loss_quantile": None, "label_issues": "confident_learning"},
      output={"clean": clean or {}})


def _clean(out):
  """`{id: label}` of the records in `clean/`, read back with tf.data."""
  labels = {}
  for path in tf.io.gfile.glob(str(out / "clean" / "*")):
    for record in tf.data.TFRecordDataset(path, "GZIP"):
      feature = tf.train.Example.FromString(record.numpy()).features.feature
      labels[feature["id"].bytes_list.value[0].decode()] = (
          feature["label"].int64_list.value[0])
  return labels


@pytest.fixture(scope="module")
def audited(demo_build, tmp_path_factory):
  data, model, _ = demo_build
  root = tmp_path_factory.mktemp("review")
  summary = run_audit(_config(data, model, root / "night1"))
  losses = pd.read_parquet(root / "night1" / "losses")
  flagged = pd.read_parquet(root / "night1" / "flagged")
  return data, model, root, summary, losses, flagged


def _annotated(task, choice, kind, cancelled=False):
  """`task` as Label Studio exports it once annotated: `kind` "label"
  chooses the class `choice`, "action" chooses drop."""
  result = [{"id": "r1", "from_name": kind, "to_name": "image",
             "type": "choices", "origin": "manual",
             "value": {"choices": [choice]}}]
  return dict(task, id=hash(task["data"]["id"]) % 10_000, annotations=[{
      "id": 1, "completed_by": 1, "result": result,
      "was_cancelled": cancelled, "ground_truth": False,
      "created_at": "2026-12-08T09:00:00.000000Z",
      "updated_at": "2026-12-08T09:00:00.000000Z", "lead_time": 4.2,
      "prediction": {}, "result_count": 0, "task": 1, "parent_prediction": 1,
      "parent_annotation": None}])


# The same decisions as a CSV: tests/test_review_nights.py reads a CSV's
# clean/ back in every run; this one is in the slow run.
@pytest.mark.parametrize("source", [
    "label_studio", pytest.param("csv", marks=pytest.mark.slow)])
def test_export_review_and_fix(audited, tmp_path, capsys, source):
  data, model, root, summary, losses, flagged = audited
  issues = flagged[flagged["reasons"].map(lambda r: "label_issue" in r)]
  assert summary["flagged"]["by_reason"]["label_issue"] == len(issues) > 10

  # 1. Export: one task per label issue, its thumbnail and the suggested
  # label pre-annotated.
  tasks_path = tmp_path / "tasks.json"
  assert cli.main(["export", str(root / "night1"), "--format",
                   "label-studio", "--output", str(tasks_path),
                   "--reasons", "label_issue"]) == 0
  capsys.readouterr()
  tasks = json.loads(tasks_path.read_text())
  assert sorted(t["data"]["id"] for t in tasks) == sorted(issues["id"])
  suggested = dict(zip(issues["id"], issues["suggested_label"]))
  given = dict(zip(losses["id"], losses["given_label"]))
  for task in tasks:
    (prediction,) = task["predictions"]
    (choice,) = prediction["result"][0]["value"]["choices"]
    assert int(choice) == suggested[task["data"]["id"]]
    assert task["data"]["given_label_id"] == given[task["data"]["id"]]
    header, png = task["data"]["image"].split(",", 1)
    assert header == "data:image/png;base64"
    pixels = tf.io.decode_png(base64.b64decode(png)).numpy()
    assert pixels.shape == (8, 8, 1)
  config_xml = (tmp_path / "tasks.json.label-config.xml").read_text()
  assert '<Image name="image" value="$image"' in config_xml

  # 2. A reviewer works through them in Label Studio: keeps a third,
  # drops a third, relabels the rest as suggested; cancels one (undecided).
  reviewed, keep, drop, relabel = [], set(), set(), {}
  for n, task in enumerate(sorted(tasks, key=lambda t: t["data"]["id"])):
    row_id = task["data"]["id"]
    if n == 0:
      reviewed.append(_annotated(task, "drop", "action", cancelled=True))
    elif n % 3 == 0:
      keep.add(row_id)
      reviewed.append(_annotated(task, str(given[row_id]), "label"))
    elif n % 3 == 1:
      drop.add(row_id)
      reviewed.append(_annotated(task, "drop", "action"))
    else:
      relabel[row_id] = suggested[row_id]
      reviewed.append(_annotated(task, str(suggested[row_id]), "label"))
  undecided = set(issues["id"]) - keep - drop - set(relabel)
  assert len(undecided) == 1
  exported = tmp_path / "label-studio-export.json"
  exported.write_text(json.dumps(reviewed))

  # What clean/ must hold: every scored row but the dropped (decided, or
  # undecided and flagged), with the decided labels.
  flagged_ids = set(flagged["id"])
  expected = {row_id: label for row_id, label in given.items()
              if row_id not in drop and (row_id not in flagged_ids or
                                         row_id in keep or row_id in relabel)}
  expected.update(relabel)

  # 3. The decisions go into the next run, as Label Studio exported them
  # or as a CSV.
  csv = tmp_path / "decisions.csv"
  csv.write_text("id,action,label\n" + "".join(
      [f"{i},keep,\n" for i in sorted(keep)] +
      [f"{i},drop,\n" for i in sorted(drop)] +
      [f"{i},relabel,{label}\n" for i, label in sorted(relabel.items())]))
  decisions = exported if source == "label_studio" else csv
  out = root / source
  summary = run_audit(_config(data, model, out, decisions=str(decisions)))
  assert _clean(out) == expected
  applied = summary["clean"]["decisions_applied"]
  assert (applied["keep"], applied["drop"], applied["relabel"]) == (
      len(keep), len(drop), len(relabel))
  assert summary["clean"]["decisions_not_found"]["count"] == 0
  relabelled = pd.read_parquet(out / "relabelled")
  assert dict(zip(relabelled["id"], relabelled["suggested_label"])) == (
      relabel)
