"""The layering of the code, read from its import statements (module-level and the ones
inside functions alike): train/ has no import cycle and names no model family; arch/ never
imports train/; arch/layers/ imports no family."""

import ast
import os

import pytest

from conftest import REPO

FAMILIES = ('vision', 'sequence', 'generative', 'multimodal', 'graph', 'dynamics', 'rl',
            'scene', 'compress', 'federated')


def _module_name(path):
  rel = os.path.relpath(path, REPO)[:-3].replace(os.sep, '.')
  return rel[:-len('.__init__')] if rel.endswith('.__init__') else rel


def _imports(path):
  """Every module an import statement in `path` names (`from a import b` names a.b when
  a.b is a module of ours, else a)."""
  with open(path) as f:
    tree = ast.parse(f.read(), path)
  me = _module_name(path)
  package = me if path.endswith('__init__.py') else me.rpartition('.')[0]
  out = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      out.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ''
      if node.level:
        parts = package.split('.')[:len(package.split('.')) - node.level + 1]
        base = '.'.join(parts + ([base] if base else []))
      for a in node.names:
        full = f'{base}.{a.name}'
        out.add(full if _is_ours(full) else base)
  return out


def _is_ours(name):
  path = os.path.join(REPO, *name.split('.'))
  return os.path.isfile(path + '.py') or os.path.isfile(os.path.join(path, '__init__.py'))


def _modules(package):
  for root, _, files in os.walk(os.path.join(REPO, package)):
    for f in files:
      if f.endswith('.py'):
        path = os.path.join(root, f)
        yield _module_name(path), _imports(path)


def _graph(package):
  return {name: {i for i in imports if i.split('.')[0] == package and _is_ours(i)}
          for name, imports in _modules(package)}


def _cycle(graph):
  """One cycle of the directed graph as a list of nodes, or None."""
  state, stack = {}, []

  def visit(n):
    state[n] = 'open'
    stack.append(n)
    for m in sorted(graph.get(n, ())):
      if m == n or m not in graph:
        continue
      if state.get(m) == 'open':
        return stack[stack.index(m):] + [m]
      if m not in state:
        found = visit(m)
        if found:
          return found
    state[n] = 'done'
    stack.pop()
    return None

  for n in sorted(graph):
    if n not in state:
      found = visit(n)
      if found:
        return found
  return None


def test_cycle_finder_finds_cycles():
  assert _cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
  assert _cycle({'a': {'b'}, 'b': {'c'}, 'c': set()}) is None


def test_train_has_no_import_cycle():
  graph = _graph('train')
  assert 'train.loop' in graph and 'train.core' in graph
  assert _cycle(graph) is None, ' -> '.join(_cycle(graph))


@pytest.mark.parametrize('package', ['train'])
def test_train_names_no_model_family(package):
  bad = sorted((name, i) for name, imports in _modules(package) for i in imports
               if i.split('.')[0] == 'arch' and len(i.split('.')) > 1
               and i.split('.')[1] in FAMILIES)
  assert not bad, bad


def test_arch_never_imports_train():
  bad = sorted((name, i) for name, imports in _modules('arch') for i in imports
               if i.split('.')[0] == 'train')
  assert not bad, bad


def test_shared_layers_import_no_family():
  bad = sorted((name, i) for name, imports in _modules('arch') for i in imports
               if name.startswith('arch.layers') and i.split('.')[0] == 'arch'
               and len(i.split('.')) > 1 and i.split('.')[1] in FAMILIES)
  assert not bad, bad


def test_the_import_reader_sees_imports_inside_functions(tmp_path):
  """The cycles this test exists for were lazy imports inside functions."""
  imports = _imports(os.path.join(REPO, 'train', 'sample.py'))
  assert 'train.core' in imports and 'train.runner' in imports  # both inside functions
