"""`lossaudit export RUN_DIR --format label-studio|csv --output FILE`.

Writes a completed run's flagged rows for review: Label Studio tasks (with
the matching labelling config beside them, `FILE.label-config.xml`) or a
CSV. The file logic is in `lossaudit.export`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from lossaudit import export
from lossaudit.errors import ConfigError, one_line
from lossaudit.pipelines import compare

OUTPUT = compare.OutputKind("the export", "an export", "export",
                            export.is_export)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog="lossaudit export",
      description="Write a completed run's flagged rows for review: Label"
      " Studio tasks (and their labelling config) or a CSV.")
  parser.add_argument("run_dir", metavar="RUN_DIR",
                      help="output.dir of a completed run")
  # `dest`: an export's format is not an input format (`lossaudit.formats`).
  parser.add_argument("--format", dest="export_as", required=True,
                      choices=export.FORMATS,
                      help="label-studio: a tasks JSON to import, with"
                      f" FILE{export.LABEL_CONFIG_SUFFIX} beside it; csv: one"
                      " line a flagged row")
  parser.add_argument("--output", required=True, metavar="FILE",
                      help="the file to write (local or gs://); an existing"
                      " file is replaced only when lossaudit export wrote it")
  parser.add_argument("--reasons", default=None, metavar="R,...",
                      help="only the rows flagged for any of these reasons"
                      " (default: every flagged row)")
  return parser.parse_args(argv)


def run(args: argparse.Namespace) -> str:
  """Writes the export `args` ask for; returns what it wrote, for a person.

  Raises:
    ConfigError: a bad RUN_DIR, --reasons or --output.
  """
  paths = [args.output]
  if args.export_as == export.LABEL_STUDIO:
    paths.append(args.output + export.LABEL_CONFIG_SUFFIX)
  for path in paths:
    compare.check_output(path, OUTPUT)
  found = export.read_run(args.run_dir)
  reasons = export.check_reasons(args.reasons, found.known_reasons)
  rows = export.select(found.flagged, reasons)
  if args.export_as == export.CSV:
    compare.write_file(args.output, export.to_csv(rows, found.class_names),
                       kind=OUTPUT)
    return f"wrote {rows.num_rows} rows to {args.output}"
  if rows.num_rows and "given_label" not in rows.column_names:
    raise ConfigError(
        "--format: expected csv for a run without class labels (Label"
        " Studio tasks are labelled with a class). Received:"
        f" {args.export_as!r}")
  previews = export.read_previews(args.run_dir)
  tasks, config = export.label_studio(found, rows, previews)
  compare.write_file(paths[1], config.encode("utf-8"), kind=OUTPUT)
  compare.write_file(args.output, export.tasks_json(tasks), kind=OUTPUT)
  predicted = sum("predictions" in t for t in tasks)
  blank = sum(t["data"].get("image") == export.NO_PREVIEW_IMAGE
              for t in tasks)
  told = (f"wrote {len(tasks)} tasks ({predicted} with a suggested label) to"
          f" {args.output}\nlossaudit: labelling config: {paths[1]}")
  if blank:
    told += (f"\nlossaudit: {blank} of the {len(tasks)} tasks have no"
             " image among the run's previews (beyond report.max_rows): they"
             " show a blank one; a larger report.max_rows, or --reasons,"
             " gives each its image")
  return told


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Command-line entry point; returns 0, or 2 (bad input)."""
  args = parse_args(argv)
  try:
    told = run(args)
  except ConfigError as e:
    print(f"lossaudit: error: export: {one_line(str(e))}", file=sys.stderr)
    return 2
  print(f"lossaudit: {told}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
