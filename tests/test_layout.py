"""The house rules, checked: configs are data, one arrow direction, no cycles.

Parses every module (no imports executed): configs/ imports nothing of the
library; the library imports neither configs/ nor benchmarks/; analysis/
never imports train/; module-level imports of the library form no cycle;
every stage entry point calls functions that exist;
no source file is over 500 lines.
"""

import ast
import os
import re

from conftest import ROOT

PACKAGE = os.path.join(ROOT, 'easyhard_jax')


def _modules(directory, prefix):
  """{dotted name: path} of the .py files under ``directory``."""
  out = {}
  for d, _, names in os.walk(directory):
    for n in names:
      if n.endswith('.py'):
        rel = os.path.relpath(os.path.join(d, n), directory)[:-3]
        parts = [p for p in rel.split(os.sep) if p != '__init__']
        out['.'.join([prefix] + parts)] = os.path.join(d, n)
  return out


def _imports(path, top_level_only=False):
  """Names imported by a module (``from a import b`` gives a and a.b)."""
  with open(path) as f:
    tree = ast.parse(f.read(), path)
  nodes = tree.body if top_level_only else list(ast.walk(tree))
  names = set()
  for node in nodes:
    if isinstance(node, ast.Import):
      names.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      names.add(node.module)
      names.update(f'{node.module}.{a.name}' for a in node.names)
  return names


def test_configs_import_only_ml_collections_and_each_other():
  for name, path in _modules(os.path.join(ROOT, 'configs'), 'configs').items():
    bad = {m for m in _imports(path)
           if m.split('.')[0] not in ('ml_collections', 'configs')}
    assert not bad, f'{name} imports {sorted(bad)}'


def test_library_imports_neither_configs_nor_benchmarks():
  for name, path in _modules(PACKAGE, 'easyhard_jax').items():
    bad = {m for m in _imports(path)
           if m.split('.')[0] in ('configs', 'benchmarks')}
    assert not bad, f'{name} imports {sorted(bad)}'


def test_analysis_never_imports_train():
  for name, path in _modules(PACKAGE, 'easyhard_jax').items():
    if name.startswith('easyhard_jax.analysis'):
      bad = {m for m in _imports(path) if m.startswith('easyhard_jax.train')}
      assert not bad, f'{name} imports {sorted(bad)}'


def test_no_import_cycle_among_library_modules():
  modules = _modules(PACKAGE, 'easyhard_jax')
  graph = {name: {m for m in _imports(path, top_level_only=True)
                  if m in modules and m != name}
           for name, path in modules.items()}
  # A package's __init__ re-exporting its own modules is not a cycle.
  for name in graph:
    graph[name] = {m for m in graph[name] if not name.startswith(m + '.')}
  state = {}

  def visit(node, trail):
    state[node] = 'open'
    for nxt in graph[node]:
      if state.get(nxt) == 'open':
        raise AssertionError(' -> '.join(trail + [node, nxt]))
      if nxt not in state:
        visit(nxt, trail + [node])
    state[node] = 'done'

  for node in graph:
    if node not in state:
      visit(node, [])


def test_no_source_file_over_500_lines():
  for top in ('easyhard_jax', 'configs', 'benchmarks', 'tests', 'launch'):
    for d, _, names in os.walk(os.path.join(ROOT, top)):
      for n in names:
        if n.endswith('.py'):
          with open(os.path.join(d, n)) as f:
            lines = sum(1 for _ in f)
          assert lines <= 500, f'{os.path.join(d, n)}: {lines} lines'


def _functions(path):
  """{name: node} of a module's top-level functions."""
  with open(path) as f:
    tree = ast.parse(f.read(), path)
  return {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}


def test_every_stage_entry_point_calls_functions_that_exist():
  """stages.STAGES: each entry point and check reaches its home by name.

  An entry point imports its home lazily (``from easyhard_jax.x import y``)
  and calls ``y.function(...)``; a renamed module or function fails here,
  without running a stage.
  """
  modules = _modules(PACKAGE, 'easyhard_jax')
  path = modules['easyhard_jax.stages']
  entries = _functions(path)
  with open(path) as f:
    table = next(n for n in ast.parse(f.read()).body
                 if isinstance(n, ast.AnnAssign) and
                 getattr(n.target, 'id', None) == 'STAGES')
  rows = [c for c in ast.walk(table.value) if isinstance(c, ast.Call) and
          getattr(c.func, 'id', None) == 'Stage']
  names = [r.args[0].value for r in rows]
  assert len(set(names)) == len(names) > 0, names
  # The entry point and the config check (third argument, where present).
  used = [a.id for row in rows for a in row.args[1:3]]
  assert len(used) > len(rows), 'no stage has a config check'
  for name in used:
    entry = entries.get(name)
    assert entry is not None and ast.get_docstring(entry), name
    homes = {}
    for node in ast.walk(entry):
      if isinstance(node, ast.ImportFrom):
        for a in node.names:
          homes[a.asname or a.name] = f'{node.module}.{a.name}'
    calls = [(c.func.value.id, c.func.attr) for c in ast.walk(entry)
             if isinstance(c, ast.Call) and isinstance(c.func, ast.Attribute)
             and isinstance(c.func.value, ast.Name)
             and c.func.value.id in homes]
    assert calls, f'{entry.name} calls no function of its home module'
    for alias, function in calls:
      home = homes[alias]
      assert home in modules, f'{entry.name}: no module {home}'
      assert function in _functions(modules[home]), (
          f'{entry.name}: {home} has no function {function}')


def test_readme_is_a_front_door_whose_links_resolve():
  """README.md stays under 250 lines; its links and docs/'s resolve."""
  root = ROOT
  with open(os.path.join(root, 'README.md')) as f:
    assert len(f.read().splitlines()) <= 250
  pages = ['README.md'] + [os.path.join('docs', p) for p in
                           sorted(os.listdir(os.path.join(root, 'docs')))
                           if p.endswith('.md')]
  broken = []
  for page in pages:
    with open(os.path.join(root, page)) as f:
      text = f.read()
    for target in re.findall(r'\]\(([^)#\s]+)(?:#[^)]*)?\)', text):
      if '://' in target:
        continue
      path = os.path.join(root, os.path.dirname(page), target)
      if not os.path.exists(path):
        broken.append(f'{page}: {target}')
  assert not broken, broken
