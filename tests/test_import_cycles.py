"""No import cycle among lossaudit's modules, and a contract free of TF.

Every module of lossaudit, lossaudit.pipelines and lossaudit.transforms (and
their subpackages) is parsed with `ast`; each import of another of them is
an edge, wherever it is: at module level, under `TYPE_CHECKING`, or inside a
function (an import hidden in a function is still a cycle of design).
"""

import ast
import importlib.util
import os
import subprocess
import sys
from typing import Dict, List, Optional, Set

import lossaudit

# The packages whose modules are checked; lossaudit.pipelines and
# lossaudit.transforms are folders beside lossaudit in a source checkout.
PACKAGES = ("lossaudit", "lossaudit.pipelines", "lossaudit.transforms")


def package_dirs() -> Dict[str, str]:
  """`{package: its folder}` of `PACKAGES`."""
  dirs = {"lossaudit": os.path.dirname(os.path.abspath(lossaudit.__file__))}
  for package in PACKAGES[1:]:
    dirs[package] = importlib.util.find_spec(
        package).submodule_search_locations[0]
  return dirs


def modules(packages: Dict[str, str]) -> Dict[str, str]:
  """`{module name: its file}` of every module of `packages` (`{package:
  its folder}`) and their subpackages; a package's `__init__.py` under the
  package's own name."""
  found = {}
  for package, top in packages.items():
    for folder, subfolders, files in os.walk(top):
      parts = os.path.relpath(folder, top).split(os.sep)
      prefix = ".".join([package] + [p for p in parts if p != "."])
      # Those of `packages` are walked as such (a checkout links them in).
      subfolders[:] = [
          s for s in subfolders
          if f"{prefix}.{s}" not in packages and
          os.path.isfile(os.path.join(folder, s, "__init__.py"))]
      for name in files:
        if name.endswith(".py"):
          stem = name[:-3]
          found[prefix if stem == "__init__" else f"{prefix}.{stem}"] = (
              os.path.join(folder, name))
  return found


def _imported(node: ast.AST, module: str, is_package: bool,
              known: Set[str]) -> List[str]:
  """The modules of `known` that one import statement in `module` names."""
  if isinstance(node, ast.Import):
    names = [alias.name for alias in node.names]
  else:
    base = node.module or ""
    if node.level:
      package = module.split(".")
      package = package[:len(package) - node.level + (1 if is_package
                                                      else 0)]
      base = ".".join(package + ([base] if base else []))
    # `from package import name`: a submodule when there is one, else a
    # name of the package itself.
    names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known
             else base for alias in node.names]
  targets = []
  for name in names:
    while name and name not in known:  # `import a.b.c` of a non-module c.
      name = name.rpartition(".")[0]
    if name:
      targets.append(name)
  return targets


def import_graph(packages: Dict[str, str]) -> Dict[str, Set[str]]:
  """`{module: the modules of `packages` it imports}`."""
  files = modules(packages)
  graph = {}
  for module, path in files.items():
    with open(path, encoding="utf-8") as f:
      tree = ast.parse(f.read(), path)
    is_package = os.path.basename(path) == "__init__.py"
    graph[module] = {
        target for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for target in _imported(node, module, is_package, set(files))
        if target != module}
  return graph


def find_cycle(graph: Dict[str, Set[str]]) -> Optional[List[str]]:
  """One cycle of `graph`, as `[a, b, ..., a]`, or None when it has none."""
  state: Dict[str, int] = {}  # 1: on the current path, 2: done.
  path: List[str] = []

  def visit(node: str) -> Optional[List[str]]:
    state[node] = 1
    path.append(node)
    for target in sorted(graph.get(node, ())):
      if state.get(target) == 1:
        return path[path.index(target):] + [target]
      if target not in state:
        found = visit(target)
        if found:
          return found
    state[node] = 2
    path.pop()
    return None

  for node in sorted(graph):
    if node not in state:
      found = visit(node)
      if found:
        return found
  return None


def _write(folder, files: Dict[str, str]) -> None:
  for name, text in files.items():
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_the_graph_sees_every_kind_of_import(tmp_path):
  _write(tmp_path / "pkg", {
      "__init__.py": "VERSION = 1\n",
      "a.py": "import os\nfrom pkg import b, VERSION\n",
      "b.py": ("from typing import TYPE_CHECKING\n"
               "if TYPE_CHECKING:\n  from pkg.c import Thing\n"),
      "c.py": "def f():\n  import pkg.sub.d\n  return pkg.sub.d\n",
      "sub/__init__.py": "",
      "sub/d.py": "from ..a import x\nfrom . import e\nfrom .e import y\n",
      "sub/e.py": "import pkg.other.z\nfrom pkg.b import something\n",
      "notes/f.py": "import pkg.a\n",  # No __init__.py: not a package.
  })
  _write(tmp_path / "other", {"__init__.py": "", "z.py": "import pkg.a\n"})
  graph = import_graph({"pkg": str(tmp_path / "pkg"),
                        "pkg.other": str(tmp_path / "other")})
  assert graph == {
      "pkg": set(),
      "pkg.a": {"pkg", "pkg.b"},  # `VERSION` is a name of the package.
      "pkg.b": {"pkg.c"},  # Under TYPE_CHECKING.
      "pkg.c": {"pkg.sub.d"},  # Inside a function.
      "pkg.sub": set(),
      "pkg.sub.d": {"pkg.a", "pkg.sub.e"},  # Relative.
      "pkg.sub.e": {"pkg.other.z", "pkg.b"},
      "pkg.other": set(),
      "pkg.other.z": {"pkg.a"},
  }
  assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.c", "pkg.sub.d",
                               "pkg.a"]


def test_the_graph_holds_every_module_of_lossaudit():
  graph = import_graph(package_dirs())
  assert {"lossaudit", "lossaudit.spec", "lossaudit.pipelines.cli",
          "lossaudit.transforms.score"} <= set(graph)
  assert "lossaudit.spec" in graph["lossaudit.scoring"]


def test_find_cycle_names_each_module_of_a_cycle():
  graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
  assert find_cycle(graph) == ["a", "b", "c", "a"]
  assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_cycle():
  cycle = find_cycle(import_graph(package_dirs()))
  assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_spec_and_reading_model_inputs_import_no_tensorflow():
  code = ("import sys, lossaudit.spec, lossaudit.model_inputs;"
          " print(sorted(m for m in sys.modules"
          " if m.split('.')[0] in ('tensorflow', 'keras')))")
  done = subprocess.run([sys.executable, "-c", code], capture_output=True,
                        text=True, check=True)
  assert done.stdout.strip() == "[]"
