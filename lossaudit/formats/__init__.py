"""The input formats (`input.format`), one module each, by name.

`get(name)` gives a `Format`: everything that differs between formats (how
files are read, in the pipeline and by the probe, how `clean/` is written,
what a file's metadata tells `lossaudit plan`, whether rows are serialized
tf.train.Examples) is a method or attribute of it, so no other module asks
which format it has. A new format is a module here whose `FORMAT` is a
`Format` with `batches` (the one reader: the pipeline's and the probe's) and
`write_clean`, listed in `_MODULES`.
"""

from __future__ import annotations

from typing import Tuple

from lossaudit.formats import parquet, tfrecord
from lossaudit.formats.base import CleanTarget, FileHead, Format, ReadRequest

__all__ = ["CleanTarget", "FileHead", "Format", "ReadRequest", "get", "names"]

# In `input.format`'s order: the default first.
_MODULES = (tfrecord, parquet)
_BY_NAME = {module.FORMAT.name: module.FORMAT for module in _MODULES}


def names() -> Tuple[str, ...]:
  """The `input.format` values, the default first."""
  return tuple(_BY_NAME)


def get(name: str) -> Format:
  """The format called `name` (`input.format`, checked by the config).

  Raises:
    KeyError: no format has that name.
  """
  return _BY_NAME[name]
