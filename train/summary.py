"""`python -m train.summary --config configs/NAME.py[:arg]`: the parameter table.

Shapes come from `jax.eval_shape` of the task's `init`: nothing is allocated and no data
is read, so full published sizes are cheap. The last line is `total_params=<int>`.
"""

import argparse
import sys

import flax.linen as nn
import jax
import numpy as np


def param_shapes(config):
  """{'params': ..., other collections} of ShapeDtypeStructs for `config`'s model."""
  from train import core
  task = core.load_task(config)
  example = task.example_batch(1)
  variables = jax.eval_shape(lambda rng, b: task.init(rng, b), jax.random.key(0), example)
  return nn.meta.unbox(variables)


def table(params, depth: int = 2):
  """Rows (module path, number of params, shapes) grouped at `depth` levels."""
  rows = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    keys = [getattr(k, 'key', getattr(k, 'name', str(k))) for k in path]
    group = '/'.join(str(k) for k in keys[:-1][:depth]) or '(root)'
    n, shapes = rows.get(group, (0, []))
    rows[group] = (n + int(np.prod(leaf.shape)), shapes + [f'{keys[-1]}{tuple(leaf.shape)}'])
  return rows


def main(argv=None):
  from train import config_lib
  from train.errors import UserError
  overrides, rest = config_lib.split_overrides(sys.argv[1:] if argv is None else argv)
  parser = argparse.ArgumentParser(prog='python -m train.summary')
  parser.add_argument('--config', required=True)
  parser.add_argument('--depth', type=int, default=2, help='module nesting shown per row')
  args = parser.parse_args(rest)
  try:
    config = config_lib.load(args.config)
    for key, value in overrides:
      config_lib.override(config, key, value)
    variables = param_shapes(config)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  params = variables.get('params', {})
  rows = table(params, args.depth)
  width = max([len(k) for k in rows] + [6])
  print(f'{"module":<{width}}  {"params":>14}  shapes')
  for name, (n, shapes) in rows.items():
    print(f'{name:<{width}}  {n:>14,}  {" ".join(shapes)}')
  for coll, tree in variables.items():
    if coll != 'params':
      print(f'({coll}: {sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree)):,} '
            f'non-trainable values)')
  total = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
  print(f'total_params={total}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
