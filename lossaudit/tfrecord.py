"""Reading TFRecord files in batches, with every CRC checked.

Beam's TFRecord source reads one record per Python call and was measured at
about 19 µs a record here (the largest cost of a whole audit); this reader
walks the framing of large decompressed chunks and checks CRCs with the C
`google_crc32c`, about 1.5 µs a record, through Beam's `FileSystems` (so
local, gs:// and gzip alike). A damaged stretch (bad CRC, truncation) ends
the file with one `Unreadable` marker naming where it broke; the records
before it are kept.

Gzip is inflated here with `zlib` (CRCs checked) from the raw bytes, 1 MB of
compressed input at a time, rather than through Beam's gzip reader: that one
raises on a bad trailer or appended junk and loses its whole 16 MB chunk,
which for a small shard is every record. A piece that fails is re-fed from a
copy of the inflater in ever smaller steps, so everything inflated before
the damage is kept. Concatenated gzip members are read on; anything else
after a member is an unreadable stretch.

tf.data takes a partial 12-byte header at the end of a file for its end, so
`tf_data_batches` checks that the records it read account for the whole
stream (file size, or the gzip ISIZE trailer) and re-walks the file with
`read_batches` when they do not.

tf.data's reader of a plain file allocates a record's whole length before
reading it, so a header whose length passes its CRC but runs past the end
of the file (2**40, say) crashes the process. `_overlong_record` walks the
headers of a plain file first (no data read, no CRC checked); a file with
such a header goes to `read_batches`, which names it. tf.data's gzip reader
grows its buffer as it inflates, and reports such a record as truncated.

A remote file (gs://) of `TF_DATA_MIN_BYTES` or more is copied as it is
(compressed bytes, through Beam's `FileSystems` in `STAGE_PIECE_BYTES`
reads) to a local temporary file and read there by `tf_data_batches`: the
same reader, checks and accounting as a local file, records and byte
offsets alike. TensorFlow's own GCS filesystem is not used: its endpoint is
fixed (https://www.googleapis.com), so it cannot be pointed at a storage
emulator, and its credentials would be a second set beside Beam's. A file
that would not leave `STAGE_FREE_BYTES` free on the local disk is walked
through `FileSystems` as before.
"""

from __future__ import annotations

import dataclasses
import mmap
import os
import shutil
import struct
import tempfile
import zlib
from typing import Iterator, List, Optional, Union

import google_crc32c
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

CHUNK_BYTES = 16 << 20
# tf.data takes ~30 ms to set up its reader, a file: a shorter file (on
# disk) is read by the walker (~1.5 µs a record), an empty one at once.
TF_DATA_MIN_BYTES = 1 << 20
# Compressed bytes inflated at a time: what a damaged piece could cost
# without the step-by-step retry of `_inflate_until_damage`.
GZIP_PIECE_BYTES = 1 << 20
# A remote file is copied locally in reads of this size (Beam's GCS reader
# fetches 16 MB a request).
STAGE_PIECE_BYTES = 16 << 20
# A remote file is copied only when this much of the local disk stays free.
STAGE_FREE_BYTES = 1 << 30
_GZIP_MAGIC = b"\x1f\x8b"
# tf.data's names for the compressions its TFRecord reader knows.
_TF_COMPRESSION = {CompressionTypes.GZIP: "GZIP",
                   CompressionTypes.UNCOMPRESSED: ""}
_HEADER = struct.Struct("<QI")
_LENGTH = struct.Struct("<Q")
_MASK_DELTA = 0xA282EAD8


@dataclasses.dataclass(frozen=True)
class Unreadable:
  """Where a file stopped being readable, or the one record that was not."""

  record: int  # Index of the first record that could not be read.
  offset: Optional[int]  # Its byte offset in the decompressed stream.
  reason: str
  # Only this record: its framing was sound, so the records after it were
  # read.
  one_record: bool = False

  def describe(self) -> str:
    where = "" if self.offset is None else f" (byte {self.offset})"
    if self.one_record:
      return (f"unreadable record {self.record}{where}: {self.reason}; the"
              " records after it were read")
    return f"unreadable from record {self.record}{where}: {self.reason}"


def masked_crc(data) -> int:
  crc = google_crc32c.value(data)
  return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def compression_of(path: str) -> str:
  """The Beam compression type of a file, from its content where it can tell.

  A gzip stream is known by its first bytes whatever the file is called, and
  a file named `.gz` that is not gzip is read as plain; other compressions
  go by the suffix, as Beam's `AUTO` does.
  """
  with FileSystems.open(
      path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
    magic = f.read(len(_GZIP_MAGIC))
  if magic == _GZIP_MAGIC:
    return CompressionTypes.GZIP
  by_name = CompressionTypes.detect_compression_type(path)
  if by_name == CompressionTypes.GZIP:
    return CompressionTypes.UNCOMPRESSED
  return by_name


def read_batches(path: str, batch_size: int,
                 compression_type: str = CompressionTypes.AUTO,
                 skip: int = 0) -> Iterator[Union[List[bytes], Unreadable]]:
  """Yields lists of up to `batch_size` records, then maybe one `Unreadable`.

  The first `skip` records are checked but not yielded.

  Raises:
    OSError and the like when the file cannot be opened (callers dead-letter
    the file).
  """
  records: List[bytes] = []
  index = 0
  consumed = 0  # Bytes of the stream before `buffer`.
  buffer = b""
  pos = 0
  if compression_type == CompressionTypes.AUTO:
    compression_type = CompressionTypes.detect_compression_type(path)
  gzip = compression_type == CompressionTypes.GZIP
  with FileSystems.open(path, compression_type=(
      CompressionTypes.UNCOMPRESSED if gzip else compression_type)) as f:
    read = _GzipChunks(f).read if gzip else lambda: f.read(CHUNK_BYTES)
    eof = False
    while True:
      if not eof:
        try:
          chunk = read()
        except _AfterStream as e:
          if records:
            yield records
          if pos < len(buffer):  # The stream ended inside a record.
            yield Unreadable(index, consumed + pos,
                             f"truncated ({len(buffer) - pos} trailing"
                             f" bytes), then {e}")
          else:
            yield Unreadable(index, consumed + pos, str(e))
          return
        except (zlib.error, EOFError, OSError) as e:
          # Damaged compression: the records inflated before it are kept
          # (the first `skip` were read before, by a faster reader).
          if records:
            yield records
          yield Unreadable(max(index, skip),
                           consumed + pos if index >= skip else None,
                           f"damaged compressed stream ({type(e).__name__}:"
                           f" {e})")
          return
        eof = not chunk
        consumed += pos
        buffer = buffer[pos:] + chunk
        pos = 0
      end = len(buffer)
      while end - pos >= 12:
        length, length_crc = _HEADER.unpack_from(buffer, pos)
        if masked_crc(buffer[pos:pos + 8]) != length_crc:
          if records:
            yield records
          yield Unreadable(index, consumed + pos, "corrupted length (bad CRC)")
          return
        stop = pos + 12 + length + 4
        if stop > end:
          break
        data = buffer[pos + 12:pos + 12 + length]
        (data_crc,) = struct.unpack_from("<I", buffer, stop - 4)
        if masked_crc(data) != data_crc:
          # Its length passed its own CRC, so the next record starts where
          # this one ends: only this record is lost.
          if index >= skip:
            if records:
              yield records
              records = []
            yield Unreadable(index, consumed + pos,
                             "corrupted record (bad CRC)", one_record=True)
          index += 1
          pos = stop
          continue
        if index >= skip:
          records.append(data)
        index += 1
        pos = stop
        if len(records) == batch_size:
          yield records
          records = []
      if eof:
        break
  if records:
    yield records
  if pos < len(buffer):
    yield Unreadable(index, consumed + pos, _truncated(buffer, pos))


def _truncated(buffer: bytes, pos: int) -> str:
  """Why the stream ends inside the record framed at `buffer[pos:]`."""
  left = len(buffer) - pos
  if left >= 12:
    length, length_crc = _HEADER.unpack_from(buffer, pos)
    if masked_crc(buffer[pos:pos + 8]) == length_crc:
      return (f"truncated ({left} trailing bytes; the record's header gives"
              f" a length of {length})")
  return f"truncated ({left} trailing bytes)"


class _AfterStream(Exception):
  """Bytes after the end of the last gzip member that start no new one."""


class _GzipChunks:
  """The inflated bytes of a raw gzip stream, about `CHUNK_BYTES` a `read`.

  `read` returns b"" at the end; at damage it first returns what was
  inflated before it, then raises (zlib.error, EOFError or `_AfterStream`).
  """

  def __init__(self, f):
    self._f = f
    self._inflater = zlib.decompressobj(wbits=31)
    self._input = b""  # Compressed bytes the inflater has not taken yet.
    self._raw_eof = False
    self._error: Optional[Exception] = None  # Damage found, to raise next.

  def _more(self) -> bool:
    if self._raw_eof:
      return False
    piece = self._f.read(GZIP_PIECE_BYTES)
    self._raw_eof = not piece
    self._input += piece
    return bool(piece)

  def read(self) -> bytes:
    out: List[bytes] = []
    size = 0
    while size < CHUNK_BYTES:
      try:
        piece = self._next_piece()
      except (zlib.error, EOFError, _AfterStream) as e:
        if not out:
          raise
        self._error = e
        break
      if piece is None:
        break
      out.append(piece)
      size += len(piece)
    return b"".join(out)

  def _next_piece(self) -> Optional[bytes]:
    """Some inflated bytes (maybe b""), or None at the end of the stream."""
    if self._error is not None:
      raise self._error
    inflater = self._inflater
    if inflater.eof:
      while len(self._input) < len(_GZIP_MAGIC) and self._more():
        pass
      if not self._input:
        return None
      if not self._input.startswith(_GZIP_MAGIC):
        junk = len(self._input) + sum(iter(
            lambda: len(self._f.read(GZIP_PIECE_BYTES)), 0))
        raise _AfterStream(f"{junk} bytes after the end of the gzip stream")
      self._inflater = inflater = zlib.decompressobj(wbits=31)
    if not self._input and not self._more():
      tail = inflater.flush()
      if tail:
        return tail
      raise EOFError("compressed stream ended before its end marker")
    data, self._input = self._input[:GZIP_PIECE_BYTES], self._input[
        GZIP_PIECE_BYTES:]
    saved = inflater.copy()
    try:
      piece = inflater.decompress(data)
    except zlib.error:
      piece, error = _inflate_until_damage(saved, data)
      self._error = error
      return piece
    if inflater.eof:
      self._input = inflater.unused_data + self._input
    return piece


def _inflate_until_damage(inflater, data: bytes):
  """`(inflated bytes, error)`: what `data` gives up to the byte it breaks
  at, re-fed from `inflater` (a copy taken before) in ever smaller steps."""
  out: List[bytes] = []
  start, step = 0, max(1, len(data) // 64)
  while start < len(data):
    saved = inflater.copy()
    try:
      out.append(inflater.decompress(data[start:start + step]))
      start += step
    except zlib.error as e:
      if step == 1:
        return b"".join(out), e
      inflater, step = saved, max(1, step // 64)
  return b"".join(out), zlib.error("damaged compressed stream")


def _accounts_for_stream(path: str, compression_type: str,
                         consumed: int) -> bool:
  """Whether `consumed` bytes of records (framing included) are the whole
  decompressed stream of the local file `path`: its size, or for gzip its
  ISIZE trailer (the size modulo 2**32, of the last member)."""
  if compression_type != CompressionTypes.GZIP:
    return consumed == os.path.getsize(path)
  with open(path, "rb") as f:
    f.seek(0, os.SEEK_END)
    if f.tell() < 4:
      return False
    f.seek(-4, os.SEEK_END)
    (isize,) = struct.unpack("<I", f.read(4))
  return consumed % (1 << 32) == isize


def _overlong_record(path: str) -> bool:
  """Whether, following the record lengths of the local plain file `path`
  from its start, one runs past the end of the file.

  Lengths are not checked against their CRCs: up to the first header with
  a bad one the chain is tf.data's, and tf.data stops there without
  allocating; a chain gone astray after it only sends the file to the
  slower walker.
  """
  size = os.path.getsize(path)
  if size < _HEADER.size:
    return False
  unpack = _LENGTH.unpack_from
  with open(path, "rb") as f, mmap.mmap(
      f.fileno(), 0, access=mmap.ACCESS_READ) as view:
    pos = 0
    last = size - _HEADER.size  # The last offset a whole header fits at.
    while pos <= last:
      pos += unpack(view, pos)[0] + 16
    return pos > size


def tf_data_batches(path: str, batch_size: int
                    ) -> Iterator[Union[List[bytes], Unreadable]]:
  """Like `read_batches`, through tf.data's C++ reader for plain or gzip
  files of `TF_DATA_MIN_BYTES` or more (a remote one from a local copy, see
  `_remote_batches`); other files go through `read_batches`.

  tf.data reads and checks the next batch on its own threads while the
  caller works on this one. When it finds damage it cannot say which record
  broke, so the rest of the file is re-walked by `read_batches`. The
  compression is found by `compression_of`.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  if "://" in path:
    yield from _remote_batches(path, batch_size)
    return
  compression_type = compression_of(path)
  if (compression_type not in _TF_COMPRESSION or
      os.path.getsize(path) < TF_DATA_MIN_BYTES):
    yield from read_batches(path, batch_size, compression_type)
    return
  if (compression_type == CompressionTypes.UNCOMPRESSED and
      _overlong_record(path)):
    yield from read_batches(path, batch_size, compression_type)
    return
  compression = _TF_COMPRESSION[compression_type]
  emitted = 0
  consumed = 0  # Bytes of the stream those records take, framing included.
  try:
    dataset = tf.data.TFRecordDataset(
        path, compression_type=compression,
        buffer_size=CHUNK_BYTES).batch(batch_size).prefetch(2)
    for batch in dataset:
      records = batch.numpy().tolist()
      emitted += len(records)
      consumed += sum(map(len, records)) + 16 * len(records)
      yield records
  except (tf.errors.OpError, OSError):
    yield from read_batches(path, batch_size, compression_type, skip=emitted)
    return
  if not _accounts_for_stream(path, compression_type, consumed):
    # Bytes tf.data took for the end of the file (a partial header), or a
    # gzip stream it did not read to the end: the walker names them.
    yield from read_batches(path, batch_size, compression_type, skip=emitted)


def _remote_batches(path: str, batch_size: int
                    ) -> Iterator[Union[List[bytes], Unreadable]]:
  """`tf_data_batches` of a remote file: of a local copy when the file is
  large enough for tf.data and the local disk has room, else walked by
  `read_batches` through `FileSystems`."""
  size = FileSystems.get_filesystem(path).size(path)
  folder = tempfile.gettempdir()
  if (size < TF_DATA_MIN_BYTES or
      shutil.disk_usage(folder).free - size < STAGE_FREE_BYTES):
    yield from read_batches(path, batch_size, compression_of(path))
    return
  with tempfile.TemporaryDirectory(prefix="lossaudit-read-",
                                   dir=folder) as staging:
    # The same name, for compressions told by suffix.
    local = os.path.join(staging, path.rsplit("/", 1)[-1] or "records")
    with FileSystems.open(
        path, compression_type=CompressionTypes.UNCOMPRESSED) as src, open(
            local, "wb") as dst:
      shutil.copyfileobj(src, dst, STAGE_PIECE_BYTES)
    yield from tf_data_batches(local, batch_size)
