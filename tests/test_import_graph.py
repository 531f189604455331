"""The package's import graph, read from the source with `ast`: no cycles, no function-level
imports of the package's own modules, nothing imports the command-line entry points, and
nothing imports TensorFlow (directly or through the CLU modules that do)."""

import ast
import os

import pytest

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'sgdc_jax')
ENTRY_POINTS = ('sgdc_jax.main', 'sgdc_jax.demo', 'sgdc_jax.analysis.ablation')
# Modules that import TensorFlow when imported (tests/test_no_tensorflow.py runs the commands
# without it): TensorFlow itself and CLU's writers and periodic actions (clu.metrics is fine).
TENSORFLOW_IMPORTERS = ('tensorflow', 'clu.metric_writers', 'clu.periodic_actions')


def _modules() -> dict[str, str]:
  """Dotted module name -> file path for every .py file of the package."""
  out = {}
  for root, _, files in os.walk(PACKAGE):
    for name in files:
      if not name.endswith('.py'):
        continue
      path = os.path.join(root, name)
      rel = os.path.relpath(path, os.path.dirname(PACKAGE))[:-3].split(os.sep)
      if rel[-1] == '__init__':
        rel = rel[:-1]
      out['.'.join(rel)] = path
  return out


def _imports(tree: ast.AST, module: str, is_package: bool, known: set[str]):
  """Yields (imported sgdc_jax module, node) for every import statement in `tree`."""
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for alias in node.names:
        if alias.name.split('.')[0] == 'sgdc_jax':
          yield alias.name, node
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ''
      if node.level:  # relative import
        parts = module.split('.')
        parts = parts if is_package else parts[:-1]
        parts = parts[:len(parts) - node.level + 1]
        base = '.'.join(parts + ([node.module] if node.module else []))
      if base.split('.')[0] != 'sgdc_jax':
        continue
      for alias in node.names:
        sub = f'{base}.{alias.name}'
        yield (sub if sub in known else base), node


def _graph():
  modules = _modules()
  known = set(modules)
  edges, nested = {}, []
  for name, path in modules.items():
    with open(path, encoding='utf-8') as f:
      tree = ast.parse(f.read(), path)
    is_package = path.endswith('__init__.py')
    top_level = set()
    for stmt in tree.body:  # module-level statements, including if/try blocks
      top_level.update(id(n) for n in ast.walk(stmt)
                       if not isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                ast.ClassDef)))
    targets = set()
    for target, node in _imports(tree, name, is_package, known):
      if id(node) not in top_level:
        nested.append(f'{name} (line {node.lineno}) imports {target} inside a function/class')
      # Importing a.b.c first runs a.b's __init__ (unless a.b encloses this module already).
      parts = target.split('.')
      for i in range(2, len(parts) + 1):
        dep = '.'.join(parts[:i])
        if dep != name and dep in known and not name.startswith(dep + '.'):
          targets.add(dep)
    edges[name] = targets
  return edges, nested


def _cycles(edges):
  """Every elementary cycle found by depth-first search, as lists of modules."""
  found, state = [], {}

  def visit(node, stack):
    state[node] = 'open'
    stack.append(node)
    for nxt in sorted(edges.get(node, ())):
      if state.get(nxt) == 'open':
        found.append(stack[stack.index(nxt):] + [nxt])
      elif nxt not in state:
        visit(nxt, stack)
    stack.pop()
    state[node] = 'done'

  for node in sorted(edges):
    if node not in state:
      visit(node, [])
  return found


def test_graph_sees_the_package():
  edges, _ = _graph()
  assert {'sgdc_jax.run.train', 'sgdc_jax.models.sgdc_net', 'sgdc_jax.ops.aggregate'} <= set(edges)
  assert 'sgdc_jax.run.experiment' in edges['sgdc_jax.run.train']
  assert {'sgdc_jax.modules', 'sgdc_jax.modules.layers'} <= edges['sgdc_jax.models.sgdc_net']


def test_no_import_cycles():
  edges, _ = _graph()
  cycles = _cycles(edges)
  assert not cycles, 'import cycles:\n' + '\n'.join(' -> '.join(c) for c in cycles)


def test_no_function_level_imports_of_the_package():
  _, nested = _graph()
  assert not nested, '\n'.join(nested)


def test_entry_points_are_not_imported():
  edges, _ = _graph()
  offenders = [f'{m} imports {e}' for m, targets in edges.items() for e in targets
               if e in ENTRY_POINTS]
  assert not offenders, offenders


def test_nothing_imports_tensorflow():
  offenders = []
  for name, path in _modules().items():
    with open(path, encoding='utf-8') as f:
      tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        targets = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
        targets = [node.module] + [f'{node.module}.{a.name}' for a in node.names]
      else:
        continue
      offenders += [f'{name} (line {node.lineno}) imports {t}' for t in targets
                    if any(t == m or t.startswith(m + '.') for m in TENSORFLOW_IMPORTERS)]
  assert not offenders, '\n'.join(offenders)


@pytest.mark.parametrize('edges, expected', [
    ({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}, [['a', 'b', 'c', 'a']]),
    ({'a': {'b'}, 'b': set(), 'c': {'a', 'b'}}, []),
])
def test_cycle_finder(edges, expected):
  assert _cycles(edges) == expected


def test_every_entry_point_enables_the_compilation_cache():
  for name in ENTRY_POINTS:
    path = _modules()[name]
    with open(path, encoding='utf-8') as f:
      tree = ast.parse(f.read(), path)
    calls = {n.func.attr for n in ast.walk(tree)
             if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)}
    assert 'enable_compilation_cache' in calls, f'{name} does not enable the compilation cache'
