"""`python -m train.summary --config configs/NAME.py[:arg]`: the parameter table.

Shapes come from `jax.eval_shape` of the task's `init`: nothing is allocated and no data
is read, so full published sizes are cheap. The last line is `total_params=<int>`.

`--memory` adds the per-device memory plan on the config's mesh: the bytes each device
holds of the parameters, the optimizer state, the EMA copy and the other variables, read
from the shardings the loop would give the training state (as shapes, so a published size
on a pod's mesh is planned on simulated devices:
XLA_FLAGS=--xla_force_host_platform_device_count=64 ... --config.mesh.fsdp=64
--config.mesh.data=1). `--compile` also compiles the training step for those shapes and
prints XLA's memory analysis of it (temporaries, arguments, outputs per device).
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


def _bytes(n: float) -> str:
  return f'{n / 2**30:,.2f} GiB' if n >= 2**30 else f'{n / 2**20:,.2f} MiB'


def memory_plan(config, compile_step: bool = False) -> dict:
  """The per-device memory plan of `config`'s training state on its mesh: {'mesh': axis ->
  size, 'parts': {part: (bytes per device, bytes replicated)}, 'step': XLA's memory
  analysis of the compiled step (with `compile_step`; None where the backend has none)}."""
  from train import core
  from train import mesh as mesh_lib
  from train import runner as runner_lib
  task = core.load_task(config)
  mesh = mesh_lib.make_mesh(config)
  run = runner_lib.Runner(_as_jit(config), task, mesh)
  state = run.abstract_state
  trees = {'params': state.params, 'optimizer state': state.opt_state,
           'ema params': state.ema_params, 'other variables': state.extra}
  size = lambda shape, x: int(np.prod(shape)) * np.dtype(x.dtype).itemsize
  parts = {}
  for name, tree in trees.items():
    leaves = [x for x in jax.tree.leaves(tree) if hasattr(x, 'sharding')]
    if leaves:
      parts[name] = (sum(size(x.sharding.shard_shape(x.shape), x) for x in leaves),
                     sum(size(x.shape, x) for x in leaves))
  plan = {'mesh': dict(zip(mesh.axis_names, mesh.devices.shape)), 'parts': parts}
  stages = plan['mesh'].get('stage', 1)
  if stages > 1:  # a GPipe pipeline (arch/layers/pipeline.py): its idle share of each step
    from arch.layers import pipeline
    micro = config.model.get('pipeline_microbatches') or pipeline.default_microbatches(stages)
    plan['pipeline'] = dict(stages=stages, microbatches=micro,
                            bubble=pipeline.bubble_fraction(stages, micro))
  if compile_step:
    batch = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype,
                                                        sharding=run.batch_sharding),
                         task.example_batch(config.batch_size))
    stats = run.lower(state, batch).compile().memory_analysis()
    plan['step'] = None if stats is None else {
        'temporaries': stats.temp_size_in_bytes, 'arguments': stats.argument_size_in_bytes,
        'outputs': stats.output_size_in_bytes, 'batch_size': config.batch_size}
  return plan


def plan_lines(plan) -> list:
  devices = int(np.prod(list(plan['mesh'].values())))
  lines = [f'memory plan on mesh {plan["mesh"]} ({devices} devices), per device:']
  for name, (device, whole) in plan['parts'].items():
    lines.append(f'  {name:<16} {_bytes(device):>12}  (replicated: {_bytes(whole)})')
  device, whole = (sum(v[i] for v in plan['parts'].values()) for i in (0, 1))
  lines.append(f'  {"state total":<16} {_bytes(device):>12}  (replicated: {_bytes(whole)})')
  if 'pipeline' in plan:
    p = plan['pipeline']
    lines.append(f'  pipeline: {p["stages"]} stages x {p["microbatches"]} microbatches, bubble '
                 f'(S-1)/(M+S-1) = {p["bubble"]:.3f} of each step idle')
  if 'step' in plan:
    step = plan['step']
    lines.append('  (this backend gives no memory analysis of the compiled step)' if step is None
                 else f'  compiled step, batch {step["batch_size"]}: temporaries '
                 f'{_bytes(step["temporaries"])}, arguments {_bytes(step["arguments"])}, '
                 f'outputs {_bytes(step["outputs"])}')
  return lines


def _as_jit(config):
  """The config with parallelism 'jit': the plan is the mesh's SPMD layout."""
  config = config.copy_and_resolve_references()
  config.parallelism = 'jit'
  return config


def main(argv=None):
  from train import config_lib
  from train.errors import UserError
  overrides, rest = config_lib.split_overrides(sys.argv[1:] if argv is None else argv)
  parser = argparse.ArgumentParser(prog='python -m train.summary')
  parser.add_argument('--config', required=True)
  parser.add_argument('--depth', type=int, default=2, help='module nesting shown per row')
  parser.add_argument('--memory', action='store_true',
                      help="per-device bytes of the training state on the config's mesh")
  parser.add_argument('--compile', action='store_true',
                      help="with --memory: also XLA's memory analysis of the compiled step")
  args = parser.parse_args(rest)
  try:
    config = config_lib.load(args.config)
    for key, value in overrides:
      config_lib.override(config, key, value)
    variables = param_shapes(config)
    plan = plan_lines(memory_plan(config, args.compile)) if args.memory or args.compile \
        else []
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
  for line in plan:
    print(line)
  print(f'total_params={total}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
