"""Reading TFRecords locally and from gs:// (a storage emulator): records/s.

  python benchmarks/gcs_read.py [--examples 200000] [--shards 4]
      [--features 64] [--compression gzip|plain] [--repeat 5]
      [--baseline-code DIR] [--dir bench/gcs_read]

Writes the tf.train.Example shards once (under `--dir`), starts a
gcp-storage-emulator in a process of its own, uploads the shards to it, then
reads the same files from the local disk and from gs://, as the audit's
TFRecord reader does (`_ReadTFExampleFile`: framing, CRCs and tfx_bsl's
decoding into RecordBatches, with its prefetch thread), each read in a child
process. With `--baseline-code DIR` (a checkout of another commit, e.g.
`git archive HEAD | tar -x -C DIR`), the same reads run with that code too,
interleaved with this checkout's. Each child reads the files once untimed
(TensorFlow's set-up) and once timed. It prints, for each code and place,
the median records/s, the ratio gs/local of the medians, and the cores busy
(the reader's CPU seconds over wall seconds; the emulator's apart), also as
JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence

BUCKET = "lossaudit-bench"


def build(directory: str, examples: int, shards: int, features: int,
          compression: str) -> List[str]:
  """Writes the shards once (reused when the sizes match); their paths."""
  import numpy as np  # pylint: disable=g-import-not-at-top

  from lossaudit import datasets  # pylint: disable=g-import-not-at-top

  meta = dict(examples=examples, shards=shards, features=features,
              compression=compression)
  data = os.path.join(directory, "data")
  meta_path = os.path.join(directory, "meta.json")
  if os.path.exists(meta_path):
    with open(meta_path) as f:
      if json.load(f) == meta:
        return sorted(os.path.join(data, n) for n in os.listdir(data))
  rng = np.random.default_rng(0)
  columns = {"id": np.char.add("ex-", np.arange(examples).astype(str)),
             "x": rng.normal(size=(examples, features)).astype(np.float32),
             "label": rng.integers(0, 10, examples)}
  os.makedirs(data, exist_ok=True)
  for old in os.listdir(data):
    os.remove(os.path.join(data, old))
  paths = datasets.write_tfrecords(
      data, columns, num_shards=shards,
      compression="GZIP" if compression == "gzip" else None)
  with open(meta_path, "w") as f:
    json.dump(meta, f)
  return sorted(paths)


def _cpu_seconds(pid: int) -> float:
  """User and system CPU seconds of process `pid` so far."""
  with open(f"/proc/{pid}/stat") as f:
    fields = f.read().rsplit(")", 1)[1].split()
  return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _prime_beam_credentials() -> None:
  """The emulator needs no credentials; Beam would look for them ~25 s."""
  from apache_beam.internal.gcp import auth  # pylint: disable=g-import-not-at-top

  with auth._Credentials._credentials_lock:  # pylint: disable=protected-access
    auth._Credentials._credentials_init = True  # pylint: disable=protected-access


def _start_emulator() -> subprocess.Popen:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  server = subprocess.Popen([sys.executable, "-c", (
      "import time\n"
      "from gcp_storage_emulator.server import create_server\n"
      f"create_server('127.0.0.1', {port}, in_memory=True,"
      f" default_bucket={BUCKET!r}).start()\n"
      "time.sleep(1e9)\n")])
  os.environ["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{port}"
  for _ in range(300):
    with socket.socket() as s:
      if s.connect_ex(("127.0.0.1", port)) == 0:
        return server
    time.sleep(0.1)
  server.kill()
  raise RuntimeError("the storage emulator did not start")


def _upload(paths: Sequence[str], prefix: str) -> List[str]:
  from apache_beam.io.filesystem import CompressionTypes  # pylint: disable=g-import-not-at-top
  from apache_beam.io.filesystems import FileSystems  # pylint: disable=g-import-not-at-top

  remote = []
  for path in paths:
    target = f"{prefix}/{os.path.basename(path)}"
    with open(path, "rb") as src, FileSystems.create(
        target, compression_type=CompressionTypes.UNCOMPRESSED) as dst:
      dst.write(src.read())
    remote.append(target)
  return remote


def child(code_dir: str, emulator_pid: int, paths: Sequence[str]) -> Dict:
  """Reads `paths` with the code of `code_dir`: once untimed, once timed."""
  import audit_at  # pylint: disable=g-import-not-at-top

  audit_at.audit_module(code_dir)
  _prime_beam_credentials()
  from tensorflow_metadata.proto.v0 import schema_pb2  # pylint: disable=g-import-not-at-top

  from lossaudit.transforms import read  # pylint: disable=g-import-not-at-top

  schema = schema_pb2.Schema()
  schema.feature.add(name="id", type=schema_pb2.BYTES)
  schema.feature.add(name="x", type=schema_pb2.FLOAT)
  schema.feature.add(name="label", type=schema_pb2.INT)
  reader = read._ReadTFExampleFile(  # pylint: disable=protected-access
      schema.SerializeToString(), batch_size=1024, raw_records=False)

  def read_all():
    rows = dead = 0
    for path in paths:
      for output in reader.process(path):
        if isinstance(output, tuple):
          rows += output[1].num_rows
        else:
          dead += 1
    return rows, dead

  read_all()
  before, emulator_before = resource.getrusage(resource.RUSAGE_SELF), (
      _cpu_seconds(emulator_pid))
  start = time.perf_counter()
  rows, dead = read_all()
  wall = time.perf_counter() - start
  after = resource.getrusage(resource.RUSAGE_SELF)
  cpu = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
  return dict(records=rows, dead_letters=dead, wall_s=wall, cpu_s=cpu,
              emulator_cpu_s=_cpu_seconds(emulator_pid) - emulator_before)


def _run_child(code_dir: str, emulator_pid: int, paths: Sequence[str]
               ) -> Dict:
  out = subprocess.run(
      [sys.executable, os.path.abspath(__file__), "--child", code_dir,
       str(emulator_pid)] + list(paths),
      capture_output=True, text=True, check=False,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  if out.returncode:
    raise RuntimeError(out.stderr[-3000:])
  return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: Optional[Sequence[str]] = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  if argv and argv[0] == "--child":
    print(json.dumps(child(argv[1], int(argv[2]), argv[3:])))
    return 0
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--examples", type=int, default=200_000)
  parser.add_argument("--shards", type=int, default=4)
  parser.add_argument("--features", type=int, default=64)
  parser.add_argument("--compression", choices=["gzip", "plain"],
                      default="gzip")
  parser.add_argument("--repeat", type=int, default=5)
  parser.add_argument("--baseline-code", default=None)
  parser.add_argument("--dir", default="bench/gcs_read")
  args = parser.parse_args(argv)

  here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  local = build(os.path.join(args.dir, args.compression), args.examples,
                args.shards, args.features, args.compression)
  server = _start_emulator()
  try:
    _prime_beam_credentials()
    remote = _upload(local, f"gs://{BUCKET}/{args.compression}")
    codes = {"this": here}
    if args.baseline_code:
      codes["baseline"] = os.path.abspath(args.baseline_code)
    runs: Dict[str, Dict[str, List[Dict]]] = {
        code: {"local": [], "gs": []} for code in codes}
    for _ in range(args.repeat):
      for code, code_dir in codes.items():
        for where, paths in (("local", local), ("gs", remote)):
          found = _run_child(code_dir, server.pid, paths)
          if found["records"] != args.examples:
            raise RuntimeError(f"{code} {where}: read {found}")
          runs[code][where].append(found)
  finally:
    server.kill()
    server.wait()
  results = {}
  for code, places in runs.items():
    result = {}
    for where, found in places.items():
      result[where] = dict(
          records_per_s=round(statistics.median(
              f["records"] / f["wall_s"] for f in found)),
          wall_s=round(statistics.median(f["wall_s"] for f in found), 3),
          cores_busy=round(statistics.median(
              f["cpu_s"] / f["wall_s"] for f in found), 2),
          emulator_cores_busy=round(statistics.median(
              f["emulator_cpu_s"] / f["wall_s"] for f in found), 2))
    result["gs_over_local"] = round(
        result["gs"]["records_per_s"] / result["local"]["records_per_s"], 3)
    results[code] = result
    print(f"{code}: local {result['local']['records_per_s']:,} records/s"
          f" ({result['local']['cores_busy']} cores), gs"
          f" {result['gs']['records_per_s']:,} records/s"
          f" ({result['gs']['cores_busy']} cores, emulator"
          f" {result['gs']['emulator_cores_busy']}); gs/local"
          f" {result['gs_over_local']}")
  print(json.dumps(dict(vars(args), results=results)))
  return 0


if __name__ == "__main__":
  sys.exit(main())
