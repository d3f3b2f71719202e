"""The wheel: one import package, its data inside, every import declared.

The wheel is built from this checkout the way `pip install .` builds it
(setuptools from the test extra, no build isolation, so no network). The
slow test installs it into a fresh venv, apart from the editable checkout,
and runs `lossaudit demo --output DIR` from an empty directory.
"""

import ast
import glob
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
  # From a copy, so no build/ left by an earlier build leaks into this one.
  source = tmp_path_factory.mktemp("source") / "lossaudit"
  shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
      ".git", ".venv", "build", "*.egg-info", "__pycache__", "bench*", "out",
      "data", "models"))
  out = tmp_path_factory.mktemp("wheel")
  done = subprocess.run(
      [sys.executable, "-m", "pip", "wheel", "--no-deps",
       "--no-build-isolation", "--quiet", "-w", str(out), str(source)],
      capture_output=True, text=True, check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  (path,) = out.glob("lossaudit-*.whl")
  return path


def _names(wheel_path):
  with zipfile.ZipFile(wheel_path) as archive:
    return archive.namelist()


def test_the_wheel_installs_one_top_level_package(wheel):
  names = _names(wheel)
  tops = {n.split("/")[0] for n in names if ".dist-info/" not in n}
  assert tops == {"lossaudit"}
  for module in ("lossaudit/pipelines/audit.py", "lossaudit/pipelines/cli.py",
                 "lossaudit/transforms/score.py",
                 "lossaudit/configs/demo.yaml",
                 # What report.html is rendered from, and inlines.
                 "lossaudit/templates/report.html.j2",
                 "lossaudit/templates/report.js",
                 "lossaudit/templates/report.css",
                 "lossaudit/vendor/README.md",
                 "lossaudit/vendor/echarts/echarts.min.js.gz",
                 "lossaudit/vendor/echarts/LICENSE",
                 "lossaudit/vendor/tabulator/tabulator.min.js",
                 "lossaudit/vendor/tabulator/tabulator_simple.min.css",
                 "lossaudit/vendor/tabulator/LICENSE"):
    assert module in names
  assert not [n for n in names if "benchmark" in n]
  # Every module of the source tree (subpackages such as lossaudit/rules/
  # must be listed in pyproject.toml's packages).
  for folder, installed in (("lossaudit", "lossaudit"),
                            ("pipelines", "lossaudit/pipelines"),
                            ("transforms", "lossaudit/transforms")):
    for path in glob.glob(os.path.join(ROOT, folder, "**", "*.py"),
                          recursive=True):
      relative = os.path.relpath(path, os.path.join(ROOT, folder))
      if relative.split(os.sep)[0] in ("pipelines", "transforms", "configs"):
        continue  # A worktree's links to the top-level folders.
      assert f"{installed}/{relative}" in names, relative
  with zipfile.ZipFile(wheel) as archive:
    info = [n for n in names if n.endswith(".dist-info/METADATA")]
    metadata = archive.read(info[0]).decode()
    (entry,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    entry_points = archive.read(entry).decode()
  assert "License-Expression: Apache-2.0" in metadata
  assert [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
  assert "lossaudit = lossaudit.pipelines.cli:main" in entry_points


def test_a_source_checkout_imports_as_one_package_without_an_install():
  # `-S`: no site-packages, so neither the editable finder nor an installed
  # wheel; the checkout's root is the current directory, as in a Docker
  # image's WORKDIR or `python -m` in the repository.
  done = subprocess.run(
      [sys.executable, "-S", "-c", "import lossaudit.pipelines.cli as c,"
       " lossaudit.transforms, lossaudit.configs; print(c.__file__)"],
      cwd=ROOT, capture_output=True, text=True, check=False)
  assert done.returncode == 0, done.stderr
  assert done.stdout.strip() == os.path.join(ROOT, "pipelines", "cli.py")


def _imported_modules(source):
  """Top-level names of the absolute imports in `source`."""
  found = set()
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, ast.Import):
      found |= {alias.name.split(".")[0] for alias in node.names}
    elif isinstance(node, ast.ImportFrom) and node.level == 0:
      found.add(node.module.split(".")[0])
  return found


def test_every_import_of_the_wheel_is_a_declared_dependency(wheel):
  with zipfile.ZipFile(wheel) as archive:
    imported = set()
    for name in archive.namelist():
      if name.endswith(".py"):
        imported |= _imported_modules(archive.read(name).decode())
    (info,) = [n for n in archive.namelist() if n.endswith("METADATA")]
    metadata = archive.read(info).decode()
  declared = {re.split(r"[\[=<>~! ;]", line.split(": ", 1)[1])[0].lower()
              .replace("_", "-")
              for line in metadata.splitlines()
              if line.startswith("Requires-Dist:") and "extra ==" not in line}
  providers = importlib.metadata.packages_distributions()
  undeclared = {}
  for module in sorted(imported - set(sys.stdlib_module_names) -
                       {"lossaudit", "__future__"}):
    dists = {d.lower().replace("_", "-") for d in providers.get(module, [])}
    if not dists & declared:
      undeclared[module] = sorted(dists)
  assert undeclared == {}


@pytest.mark.slow
def test_a_fresh_venv_runs_the_demo_from_the_wheel_under_output_only(
    wheel, tmp_path):
  # A venv of its own, holding only the wheel; the pinned dependencies come
  # from this environment's site-packages by a path entry, which (unlike the
  # site directory itself) runs no .pth file, so the editable checkout's
  # finder is not there.
  venv = tmp_path / "venv"
  subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)],
                 check=True)
  python = venv / "bin" / "python"
  site = subprocess.run(
      [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
       "['purelib'])"], capture_output=True, text=True, check=True
  ).stdout.strip()
  with open(os.path.join(site, "dependencies.pth"), "w") as f:
    f.write(sysconfig.get_paths()["purelib"] + "\n")
  subprocess.run([sys.executable, "-m", "pip", "--python", str(python),
                  "install", "--quiet", "--no-deps", str(wheel)], check=True)
  empty = tmp_path / "empty"
  empty.mkdir()
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  done = subprocess.run(
      [str(venv / "bin" / "lossaudit"), "demo", "--output",
       str(tmp_path / "demo")], cwd=empty, env=env, capture_output=True,
      text=True, check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  assert "Flipped labels: 90 of 899" in done.stdout
  assert os.listdir(empty) == []
  assert sorted(os.listdir(tmp_path)) == ["demo", "empty", "venv"]
  assert os.path.isfile(tmp_path / "demo" / "out" / "demo" / "summary.json")
  where = subprocess.run(
      [str(python), "-c", "import lossaudit.pipelines.audit as a;"
       " print(a.__file__)"], cwd=empty, env=env, capture_output=True,
      text=True, check=True).stdout.strip()
  assert where.startswith(site)
  # From the source checkout, the installed wheel works too (the checkout's
  # lossaudit/ comes first on sys.path there).
  for argv in (["-m", "lossaudit.pipelines.audit", "--help"],
               ["-m", "lossaudit", "--help"]):
    done = subprocess.run([str(python)] + argv, cwd=ROOT, env=env,
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
  shown = subprocess.run(
      [sys.executable, "-m", "pip", "--python", str(python), "show", "-f",
       "lossaudit"], capture_output=True, text=True, check=True).stdout
  files = shown.split("Files:\n", 1)[1].split()
  tops = {f.split("/")[0] for f in files
          if not f.startswith(("../", "lossaudit-0"))}
  assert tops == {"lossaudit"}
