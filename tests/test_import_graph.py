"""The package's import graph, read from the source with `ast`: floors that never call up, no
cycles, no function-level imports of the package's own modules, no new top-level modules,
nothing imports a command-line entry point that defines flags, and nothing imports TensorFlow
(directly or through the CLU modules that do)."""

import ast
import os

import pytest

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'sgdc_jax')
ENTRY_POINTS = ('sgdc_jax.main', 'sgdc_jax.demo', 'sgdc_jax.analysis.ablation',
                'sgdc_jax.analysis.diagnose', 'sgdc_jax.data.prepare')
# Entry points that run no XLA computation, so need no compilation cache (prepare writes TFDS
# files; `test_no_jax_entry_points_use_no_jax_code` checks it).
NO_JAX_ENTRY_POINTS = ('sgdc_jax.data.prepare',)

# Floors, from the bottom: a module may import its own floor and the ones below, never above.
# A module's floor is that of the longest name here it starts with.
BOTTOM = ('sgdc_jax.log', 'sgdc_jax.errors', 'sgdc_jax.checks', 'sgdc_jax.paths',
          'sgdc_jax._xla_flags', 'sgdc_jax._moved')
FLOORS = {
    **{name: 0 for name in BOTTOM},
    'sgdc_jax.ops': 1,
    'sgdc_jax.modules': 2,
    'sgdc_jax.models': 3, 'sgdc_jax.metrics': 3,
    'sgdc_jax.data': 4,
    'sgdc_jax.run': 5,
    # The command-line layer (flags in, one error line and an exit code out) sits on the bottom
    # floor and imports only the bottom helpers (`test_cli_imports_only_bottom_helpers`), so
    # every entry point may use it, `sgdc_jax.data.prepare` included.
    'sgdc_jax.cli': 0,
    'sgdc_jax.analysis': 6,
    'sgdc_jax': 7, 'sgdc_jax.nnx': 7, 'sgdc_jax.main': 7, 'sgdc_jax.demo': 7,
}
# The only modules directly in sgdc_jax/: the package face, the two commands, bottom helpers.
TOP_LEVEL = ('sgdc_jax', 'sgdc_jax.main', 'sgdc_jax.demo', 'sgdc_jax.cli') + BOTTOM
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


def _module_level_flag_definitions(path: str) -> list[int]:
  """Lines of absl flag definitions (`*.DEFINE_*(...)`) that run when the module is imported:
  at module level, outside functions, classes and `if __name__ == '__main__':`."""
  with open(path, encoding='utf-8') as f:
    tree = ast.parse(f.read(), path)
  lines = []
  for stmt in tree.body:
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
      continue
    if isinstance(stmt, ast.If) and '__main__' in ast.unparse(stmt.test):
      continue
    lines += [n.lineno for n in ast.walk(stmt) if isinstance(n, ast.Call)
              and isinstance(n.func, ast.Attribute) and n.func.attr.startswith('DEFINE')]
  return lines


def test_entry_points_that_define_flags_on_import_are_not_imported():
  # Importing one would define its flags in every importer's command. The others (ablation,
  # diagnose, prepare) define them under `__main__` and are libraries too.
  modules = _modules()
  defining = [m for m in ENTRY_POINTS if _module_level_flag_definitions(modules[m])]
  assert 'sgdc_jax.main' in defining  # the check sees module-level flags
  edges, _ = _graph()
  offenders = [f'{m} imports {e}' for m, targets in edges.items() for e in targets
               if e in defining]
  assert not offenders, offenders


def test_every_entry_point_runs_as_a_script():
  for name in ENTRY_POINTS:
    with open(_modules()[name], encoding='utf-8') as f:
      tree = ast.parse(f.read())
    assert any(isinstance(s, ast.If) and '__main__' in ast.unparse(s.test) for s in tree.body), (
        f'{name} has no `if __name__ == "__main__":` block')


def _floor(module: str) -> int:
  parts = module.split('.')
  for i in range(len(parts), 0, -1):
    if '.'.join(parts[:i]) in FLOORS:
      return FLOORS['.'.join(parts[:i])]
  raise KeyError(module)


def _calls_up(edges) -> list[str]:
  """Imports of a higher floor. Importing `a.b.c` runs package `a.b`'s `__init__` first; an
  `__init__` that imports none of ours (a docstring only) is no floor to call up to."""
  empty = {m for m, targets in edges.items() if not targets}
  return [f'{m} (floor {_floor(m)}) imports {t} (floor {_floor(t)})'
          for m, targets in sorted(edges.items()) for t in sorted(targets)
          if _floor(t) > _floor(m) and not (t in empty and any(
              u.startswith(t + '.') for u in targets))]


def test_floors_never_call_up():
  edges, _ = _graph()
  offenders = _calls_up(edges)
  assert not offenders, 'imports of a higher floor:\n' + '\n'.join(offenders)


@pytest.mark.parametrize('edges, expected', [
    ({'sgdc_jax.ops.image': {'sgdc_jax.models.resnet'}, 'sgdc_jax.models.resnet': set()},
     ['sgdc_jax.ops.image (floor 1) imports sgdc_jax.models.resnet (floor 3)']),
    ({'sgdc_jax.run.train': {'sgdc_jax.models', 'sgdc_jax.log'}, 'sgdc_jax.models': set(),
      'sgdc_jax.log': set()}, []),
    # A lower floor is fine, a module of a higher floor is not (nor through its package).
    ({'sgdc_jax.data.prepare': {'sgdc_jax.cli', 'sgdc_jax.metrics'}, 'sgdc_jax.cli': set(),
      'sgdc_jax.metrics': set()}, []),
    ({'sgdc_jax.data.prepare': {'sgdc_jax.run', 'sgdc_jax.run.train'}, 'sgdc_jax.run': set(),
      'sgdc_jax.run.train': {'sgdc_jax.log'}},
     ['sgdc_jax.data.prepare (floor 4) imports sgdc_jax.run.train (floor 5)']),
])
def test_floor_checker(edges, expected):
  assert _calls_up(edges) == expected


def test_bottom_helpers_import_nothing_of_ours():
  # `_moved` names the new modules as strings, imported only when an old name is used.
  edges, _ = _graph()
  offenders = {m: sorted(edges[m]) for m in BOTTOM if edges.get(m)}
  assert not offenders, offenders


def test_cli_imports_only_bottom_helpers():
  edges, _ = _graph()
  assert edges['sgdc_jax.cli'] <= set(BOTTOM), sorted(edges['sgdc_jax.cli'])


def test_only_known_modules_at_the_top():
  modules = _modules()
  top = {m for m in modules if m.count('.') <= 1 and not os.path.isdir(
      os.path.join(PACKAGE, m.split('.')[-1]))}
  packages = {f'sgdc_jax.{d}' for d in os.listdir(PACKAGE)
              if os.path.isfile(os.path.join(PACKAGE, d, '__init__.py'))}
  assert top <= set(TOP_LEVEL), (
      f'new top-level modules {sorted(top - set(TOP_LEVEL))}: put them in the package of '
      'their floor, or add them to TOP_LEVEL and FLOORS on purpose')
  assert packages <= set(FLOORS), f'packages without a floor: {sorted(packages - set(FLOORS))}'
  assert {'sgdc_jax', 'sgdc_jax.main', 'sgdc_jax.log', 'sgdc_jax.errors'} <= top
  assert {'sgdc_jax.ops', 'sgdc_jax.run', 'sgdc_jax.data'} <= packages


def test_nothing_below_the_face_uses_its_names():
  # Every module may `import sgdc_jax` (Python runs the face first anyway; it sets XLA flags),
  # but only floor 7 uses the names the face imports from above (SGDCNet, ...).
  modules = _modules()
  offenders = []
  for name, path in modules.items():
    if _floor(name) == 7:
      continue
    with open(path, encoding='utf-8') as f:
      tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
      if isinstance(node, ast.ImportFrom) and node.module == 'sgdc_jax' and not node.level:
        used = [a.name for a in node.names if f'sgdc_jax.{a.name}' not in modules]
      elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
            and node.value.id == 'sgdc_jax'):
        used = [] if f'sgdc_jax.{node.attr}' in modules else [node.attr]
      else:
        continue
      offenders += [f'{name} (line {node.lineno}) uses sgdc_jax.{u}' for u in used]
  assert not offenders, '\n'.join(offenders)


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
    if name in NO_JAX_ENTRY_POINTS:
      continue
    path = _modules()[name]
    with open(path, encoding='utf-8') as f:
      tree = ast.parse(f.read(), path)
    calls = {n.func.attr for n in ast.walk(tree)
             if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)}
    assert 'enable_compilation_cache' in calls, f'{name} does not enable the compilation cache'


def test_no_jax_entry_points_use_no_jax_code():
  # The package face imports JAX for every command; none of the modules these use calls it.
  edges, _ = _graph()
  modules = _modules()
  for name in NO_JAX_ENTRY_POINTS:
    seen, todo = set(), [name]
    while todo:
      module = todo.pop()
      if module not in seen:
        seen.add(module)
        todo += edges[module]
    offenders = []
    for module in sorted(seen):
      with open(modules[module], encoding='utf-8') as f:
        tree = ast.parse(f.read())
      for node in ast.walk(tree):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                 [node.module] if isinstance(node, ast.ImportFrom) and not node.level else [])
        offenders += [f'{module} (line {node.lineno}) imports {n}' for n in names
                      if n and n.split('.')[0] in ('jax', 'jaxlib', 'flax')]
    assert not offenders, f'{name} runs JAX code:\n' + '\n'.join(offenders)
