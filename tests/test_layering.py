"""The import layering of jaxsi, checked on the source (ast only, nothing runs).

Every module under ``jaxsi/`` belongs to one *unit* (a top-level module or
subpackage) and every unit to one layer of :data:`LAYERS`, lowest first. A
module may import its own unit and units of lower layers only; the leaves of
layer 0 import no other jaxsi module except ``jaxsi.trajectory``. Imports
inside functions count too: a lazy import is still a dependency. Within a
unit, the module graph must have no cycle.
"""

import ast
import collections
import pathlib
from typing import Dict, Iterator, List, Mapping, NamedTuple, Sequence, Set, Tuple

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = "jaxsi"

# Lowest first. A unit is a top-level module or a subpackage of jaxsi.
LAYERS: Tuple[Tuple[str, ...], ...] = (
    ("jaxsi.trajectory", "jaxsi.partitioning", "jaxsi.spec"),  # 0: leaves
    ("jaxsi.rewards",),  # 1
    ("jaxsi.data",),  # 2
    ("jaxsi.transforms",),  # 3
    ("jaxsi.models",),  # 4
    ("jaxsi.sampling",),  # 5
    ("jaxsi.methods",),  # 6
    ("jaxsi.training",),  # 7
    ("jaxsi.launch", "jaxsi.dry_run", "jaxsi.sweep"),  # 8: entry points, sweeps
    ("jaxsi.cli_eval",),  # 9: the `jaxsi eval` / `test-time` subcommands
    ("jaxsi.cli",),  # 10: the `jaxsi` command
)
# Units of LAYERS that may not exist yet (created by other work in flight).
OPTIONAL_UNITS = frozenset({"jaxsi.spec"})
# What a leaf of layer 0 may import besides itself.
LEAF_IMPORTS = frozenset({"jaxsi.trajectory"})
# ``jaxsi/__init__.py`` (version only): importable by all, imports nothing.
ROOT_UNIT = PACKAGE

# (importing file, imported module) edges that break the order today.
# The rounds methods were ported (issue Foundation III): none remain.
# The list may only shrink: an entry that no longer occurs fails the test.
KNOWN_VIOLATIONS = frozenset()


class Module(NamedTuple):
  """One parsed module: dotted name, repo-relative path, source text."""
  name: str
  path: str
  source: str


class Edge(NamedTuple):
  """``src`` (at ``path:line``) imports module ``dst``."""
  src: str
  dst: str
  path: str
  line: int


def _module_name(rel: pathlib.PurePath) -> str:
  parts = list(rel.with_suffix("").parts)
  if parts[-1] == "__init__":
    parts.pop()
  return ".".join(parts)


def load_modules(root: pathlib.Path = ROOT) -> List[Module]:
  """Every ``.py`` file under ``root/jaxsi`` as a :class:`Module`."""
  out = []
  for path in sorted((root / PACKAGE).rglob("*.py")):
    rel = path.relative_to(root)
    out.append(Module(_module_name(rel), rel.as_posix(), path.read_text()))
  return out


def _resolve(module: Module, node: ast.AST, names: Set[str]) -> Iterator[str]:
  """The jaxsi modules one import statement depends on (parents implicit)."""
  if isinstance(node, ast.Import):
    for alias in node.names:
      yield alias.name
    return
  assert isinstance(node, ast.ImportFrom)
  base = node.module or ""
  if node.level:
    pkg = module.name.split(".")
    if not module.path.endswith("__init__.py"):
      pkg = pkg[:-1]
    pkg = pkg[:len(pkg) - (node.level - 1)]
    base = ".".join(pkg + ([base] if base else []))
  for alias in node.names:
    sub = f"{base}.{alias.name}"
    # ``from pkg import mod`` depends on pkg.mod; ``from pkg import name`` on pkg.
    yield sub if sub in names else base


def import_edges(modules: Sequence[Module]) -> List[Edge]:
  """All imports of a jaxsi module by a jaxsi module, lazy ones included."""
  names = {m.name for m in modules}
  edges = []
  for module in modules:
    tree = ast.parse(module.source, filename=module.path)
    for node in ast.walk(tree):
      if not isinstance(node, (ast.Import, ast.ImportFrom)):
        continue
      for dst in _resolve(module, node, names):
        if dst == PACKAGE or dst.startswith(PACKAGE + "."):
          edges.append(Edge(module.name, dst, module.path, node.lineno))
  return edges


def _layer_of_unit() -> Dict[str, int]:
  return {unit: i for i, units in enumerate(LAYERS) for unit in units}


def unit_of(name: str) -> str:
  """The unit of a dotted module name (``ROOT_UNIT`` only for ``jaxsi``)."""
  if name == ROOT_UNIT:
    return ROOT_UNIT
  return ".".join(name.split(".")[:2])


def _describe(unit: str, layers: Mapping[str, int]) -> str:
  if unit == ROOT_UNIT:
    return f"the root package {ROOT_UNIT}"
  if unit not in layers:
    return f"{unit} (in no layer)"
  return f"layer {layers[unit]} ({unit})"


def layer_violations(edges: Sequence[Edge]) -> Dict[Tuple[str, str], List[str]]:
  """Edges against the layer order: ``(path, dst) -> [message, ...]``."""
  layers = _layer_of_unit()
  out = collections.defaultdict(list)
  for e in edges:
    src, dst = unit_of(e.src), unit_of(e.dst)
    if src == dst or dst == ROOT_UNIT:
      continue
    if src == ROOT_UNIT or src not in layers or dst not in layers:
      ok = False
    elif layers[src] == 0:
      ok = dst in LEAF_IMPORTS
    else:
      ok = layers[dst] < layers[src]
    if not ok:
      out[(e.path, e.dst)].append(
          f"{e.path}:{e.line}: imports {e.dst}, {_describe(dst, layers)}, from "
          f"{_describe(src, layers)}")
  return dict(out)


def _sccs(graph: Mapping[str, Set[str]]) -> List[List[str]]:
  """Strongly connected components with more than one node (Tarjan)."""
  index, low, stack, on_stack, out = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in sorted(graph.get(v, ())):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      comp = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        comp.append(w)
        if w == v:
          break
      if len(comp) > 1:
        out.append(sorted(comp))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return out


def _cycle_in(comp: Sequence[str], graph: Mapping[str, Set[str]]) -> List[str]:
  """One cycle through ``comp[0]`` inside the component (BFS back to it)."""
  members, start = set(comp), comp[0]
  parent = {start: None}
  queue = collections.deque([start])
  while queue:
    v = queue.popleft()
    for w in sorted(graph.get(v, ())):
      if w == start:
        path = [v]
        while parent[path[-1]] is not None:
          path.append(parent[path[-1]])
        return path[::-1] + [start]
      if w in members and w not in parent:
        parent[w] = v
        queue.append(w)
  raise AssertionError(f"no cycle through {start} in {comp}")


def unit_cycles(edges: Sequence[Edge]) -> List[str]:
  """Import cycles among the modules of one unit, one message each."""
  graph = collections.defaultdict(set)
  where = {}
  for e in edges:
    if e.src != e.dst and unit_of(e.src) == unit_of(e.dst):
      graph[e.src].add(e.dst)
      where.setdefault((e.src, e.dst), f"{e.path}:{e.line}")
  msgs = []
  for comp in _sccs(graph):
    cycle = _cycle_in(comp, graph)
    hops = ", ".join(f"{a} -> {b} ({where[a, b]})"
                     for a, b in zip(cycle, cycle[1:]))
    msgs.append(f"import cycle {' -> '.join(cycle)}: {hops}")
  return msgs


def _run(modules: Sequence[Module]):
  edges = import_edges(modules)
  return layer_violations(edges), unit_cycles(edges)


# ------------------------------------------------------------------ the tests
def test_every_module_has_a_layer():
  layers = _layer_of_unit()
  units = {unit_of(m.name) for m in load_modules()}
  missing = sorted(u for u in units if u != ROOT_UNIT and u not in layers)
  assert not missing, f"units without a layer, add them to LAYERS: {missing}"
  stale = sorted(u for u in layers if u not in units and u not in OPTIONAL_UNITS)
  assert not stale, f"LAYERS names units that do not exist: {stale}"


def test_imports_follow_the_layer_order():
  violations, _ = _run(load_modules())
  new = [msg for key, msgs in sorted(violations.items())
         if key not in KNOWN_VIOLATIONS for msg in msgs]
  assert not new, "imports against the layer order:\n" + "\n".join(new)


def test_known_violations_still_occur():
  violations, _ = _run(load_modules())
  gone = sorted(KNOWN_VIOLATIONS - set(violations))
  assert not gone, ("KNOWN_VIOLATIONS entries no longer occur; remove them "
                    f"from tests/test_layering.py: {gone}")


def test_no_import_cycles_within_a_unit():
  _, cycles = _run(load_modules())
  assert not cycles, "\n".join(cycles)


def _fake(name: str, source: str) -> Module:
  path = name.replace(".", "/") + ".py"
  return Module(name, path, source)


def test_checker_reports_lazy_and_relative_imports_and_cycles():
  modules = [
      _fake("jaxsi.trajectory", "import numpy\n"),
      _fake("jaxsi.partitioning", "def f():\n  from jaxsi.rewards import a\n"),
      _fake("jaxsi.rewards.a", "from jaxsi.trajectory import Trajectory\n"),
      _fake("jaxsi.data.x", "from . import y\nfrom jaxsi import trajectory\n"),
      _fake("jaxsi.data.y", "def g():\n  import jaxsi.data.x\n"),
      _fake("jaxsi.models.m", "from jaxsi.training import steps\n"),
      _fake("jaxsi.training.steps", "from jaxsi.models import m\n"),
      _fake("jaxsi.launch", "import jaxsi\nfrom jaxsi.nowhere import z\n"),
  ]
  violations, cycles = _run(modules)
  assert set(violations) == {
      ("jaxsi/partitioning.py", "jaxsi.rewards.a"),
      ("jaxsi/models/m.py", "jaxsi.training.steps"),
      ("jaxsi/launch.py", "jaxsi.nowhere"),
  }
  (msg,) = violations["jaxsi/models/m.py", "jaxsi.training.steps"]
  assert msg == ("jaxsi/models/m.py:1: imports jaxsi.training.steps, layer 7 "
                 "(jaxsi.training), from layer 4 (jaxsi.models)")
  (msg,) = violations["jaxsi/partitioning.py", "jaxsi.rewards.a"]
  assert msg.startswith("jaxsi/partitioning.py:2: ")
  (msg,) = violations["jaxsi/launch.py", "jaxsi.nowhere"]
  assert "jaxsi.nowhere (in no layer)" in msg
  assert len(cycles) == 1
  assert cycles[0].startswith("import cycle jaxsi.data.x -> jaxsi.data.y -> jaxsi.data.x")
  assert "jaxsi/data/y.py:2" in cycles[0]
