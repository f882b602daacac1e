"""The bottom layer of train/: what the loop, the sampler, the evaluators and the bench share.

- `TrainState`: the pytree the step carries (and a checkpoint holds).
- `load_task(config)`: the config's objective (`arch.task.Task`), frozen runs resolved.
- `make_tx(config, task)`: the optimizer and learning-rate schedule (per parameter group
  for a task with `phases`), optax by name.
- `make_init_fn(config, task, tx)`: rng -> the initial (boxed) TrainState.
- `restore_variables(config, workdir)`: a run's trained variables from its checkpoint.
- `run_batch(...)`: a pure function of (variables, batch, rng) over the mesh, the batch
  sharded along the data axes, the outputs gathered to the host.

Nothing here imports another module of train/ except errors, checkpoint, data and mesh.
"""

import os
import sys
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

import arch
from arch.task import ConfigError
from train import checkpoint as ckpt_lib
from train import mesh as mesh_lib
from train import precision
from train.errors import UserError, close_matches


class TrainState(flax.struct.PyTreeNode):
  step: jax.Array
  params: Any
  extra: Any        # non-param variables: batch_stats, frozen runs, ...
  opt_state: Any
  ema_params: Any   # EMA of params, or None when config.ema_decay == 0
  rng: jax.Array    # raw uint32 key data (checkpoints need plain arrays)

  def variables(self, use_ema: bool = False):
    """{'params': ..., other collections}: what the task's functions take."""
    return {'params': self.ema_params if use_ema else self.params, **self.extra}


def uses_ema(config) -> bool:
  return bool(config.get('ema_decay'))


# ------------------------------------------------------------------------------ tasks


def load_task(config):
  """The Task of `config.task` (`arch.<task>.make(config)`), with `config.frozen` runs'
  configs loaded first (tasks build the frozen networks from them)."""
  resolve_frozen(config)
  try:
    return arch.load(config.task, 'make').make(config)
  except (LookupError, ConfigError) as e:
    raise UserError(str(e).strip('"\'')) from None


# `config.frozen.NAME = dict(spec='configs/X.py[:args]', workdir='')` names another run of
# this codebase whose trained variables the task reads but never trains (a distillation
# teacher, a frozen encoder). `resolve_frozen` loads the spec into `.config`, which the
# task builds the network from; its `init` makes a non-parameter collection NAME with that
# network's variables, which the loop fills from the run's checkpoint on a fresh start.


def resolve_frozen(config):
  from train import config_lib
  for name, entry in (config.get('frozen') or {}).items():
    if entry.get('config'):
      continue
    if not entry.get('spec'):
      raise UserError(f"config.frozen.{name} needs spec='configs/X.py[:args]'")
    sub = config_lib.load(entry.spec)
    if not sub.data.get('data_dir') and config.data.get('data_dir'):
      sub.data.data_dir = config.data.data_dir
    with config.unlocked():
      entry.config = sub


def frozen_workdir(config, name, workdir):
  return config.frozen[name].get('workdir') or os.path.join(workdir, f'frozen_{name}')


# -------------------------------------------------------------------------- optimizers


_OPTIMIZERS = ('adam', 'adamw', 'sgd', 'lamb', 'lion', 'adafactor', 'rmsprop', 'adagrad',
               'nadam', 'radam', 'adabelief', 'lars', 'novograd', 'sm3', 'yogi')


def make_schedule(config):
  lr = config.get('lr', 1e-3)
  warmup = int(config.get('warmup_steps', 0))
  name = config.get('schedule', 'constant')
  decay = int(config.get('decay_steps') or config.total_steps)  # horizon, not the stop step
  if name == 'constant':
    main = optax.constant_schedule(lr)
  elif name == 'cosine':
    main = optax.cosine_decay_schedule(lr, max(1, decay - warmup), alpha=config.get('lr_min_ratio', 0.0))
  elif name == 'linear':
    main = optax.linear_schedule(lr, lr * config.get('lr_min_ratio', 0.0), max(1, decay - warmup))
  elif name == 'rsqrt':
    main = lambda s: lr * jax.lax.rsqrt(jnp.maximum(1.0, (s + warmup) / max(1, warmup)))
  else:
    valid = ('constant', 'cosine', 'linear', 'rsqrt')
    raise UserError(f'unknown schedule {name!r}{close_matches(name, valid)}; valid: {", ".join(valid)}')
  if not warmup:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])


def make_optimizer(config, schedule):
  name = config.optax_name
  fn = getattr(optax, name, None) if name.islower() else None
  if not callable(fn):
    raise UserError(f'unknown optimizer optax.{name}{close_matches(name, _OPTIMIZERS)}; '
                    f'valid: {", ".join(_OPTIMIZERS)} (or any optax optimizer by name)')
  try:
    tx = fn(learning_rate=schedule, **dict(config.optax))
  except TypeError as e:
    raise UserError(f'bad config.optax for optax.{name}: {e}') from None
  if config.get('weight_decay'):  # L2 decay added to the gradient (SGD-style), all params
    tx = optax.chain(optax.add_decayed_weights(config.weight_decay), tx)
  if config.get('grad_clip_norm'):
    tx = optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), tx)
  return precision.wrap(config, tx)  # outermost: it unscales before clipping


# Optimizer fields a group of `config.optimizers` may override (Task.phases).
_GROUP_FIELDS = ('optax_name', 'optax', 'lr', 'schedule', 'warmup_steps', 'decay_steps',
                 'lr_min_ratio', 'grad_clip_norm', 'weight_decay')


def make_tx(config, task):
  """(tx, schedule): the optimizer and its learning-rate schedule. For a task with
  `phases`, dicts of them keyed by parameter group: the config's optimizer fields, with
  `config.optimizers[group]` overriding any of them for that group."""
  if not task.phases:
    schedule = make_schedule(config)
    return make_optimizer(config, schedule), schedule
  groups = list(dict.fromkeys(group for group, _ in task.phases))
  if config.get('loss_scale'):
    raise UserError('config.loss_scale is not supported for tasks with several optimizers '
                    '(Task.phases); train them in float32 or bfloat16')
  overrides = dict(config.get('optimizers') or {})
  unknown = sorted(set(overrides) - set(groups))
  if unknown:
    raise UserError(f'config.optimizers names {", ".join(unknown)}, not a parameter group of '
                    f'this task; groups: {", ".join(groups)}')
  if int(config.get('grad_accum_steps', 1)) != 1:
    raise UserError('grad_accum_steps is not supported for tasks with several optimizers')
  tx, schedules = {}, {}
  for group in groups:
    sub = config.copy_and_resolve_references()
    for key, value in dict(overrides.get(group) or {}).items():
      if key not in _GROUP_FIELDS:
        raise UserError(f'config.optimizers.{group}.{key} is not an optimizer field'
                        f'{close_matches(key, _GROUP_FIELDS)}; valid: {", ".join(_GROUP_FIELDS)}')
      with sub.unlocked():
        sub[key] = value
    schedules[group] = make_schedule(sub)
    tx[group] = make_optimizer(sub, schedules[group])
  return tx, schedules


def init_opt_state(tx, params):
  if isinstance(tx, dict):
    missing = [g for g in tx if not (isinstance(params, dict) and g in params)]
    if missing:
      raise UserError(f'the task updates parameter groups {", ".join(missing)} but its '
                      f'params have: {", ".join(params) if isinstance(params, dict) else "no groups"}')
    return {group: t.init(params[group]) for group, t in tx.items()}
  return tx.init(params)


# ------------------------------------------------------------------------------- state


def make_init_fn(config, task, tx):
  """rng -> boxed TrainState (params may carry logical partitioning metadata)."""

  def init(rng):
    init_rng, train_rng = jax.random.split(rng)
    example = {k: jnp.zeros(v.shape, v.dtype) for k, v in task.example_batch(2).items()}
    variables = dict(task.init(init_rng, example))
    params = variables.pop('params')
    ema = params if config.get('ema_decay', 0.0) else None
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, extra=variables,
                      opt_state=init_opt_state(tx, params), ema_params=ema,
                      rng=jax.random.key_data(train_rng))
  return init


def abstract_state(config, task, tx=None):
  """The unboxed TrainState of `config` as ShapeDtypeStructs (nothing allocated)."""
  tx = make_tx(config, task)[0] if tx is None else tx
  return nn.meta.unbox(jax.eval_shape(make_init_fn(config, task, tx), jax.random.key(0)))


def restore_state(config, workdir, step=None, task=None, abstract=None):
  """(host TrainState, step) of the run of `config` in `workdir` at `step` (default:
  its latest checkpoint). A UserError when the workdir holds no such checkpoint."""
  ckpt = ckpt_lib.Checkpointer(workdir, async_save=False)
  try:
    steps = ckpt.all_steps()
    if not steps:
      raise UserError(f'no checkpoints in {workdir}; train it first with '
                      f'`python -m train --config ... --workdir {workdir}`')
    step = steps[-1] if step is None else int(step)
    if step not in steps:
      raise UserError(f'no checkpoint at step {step} in {workdir}; steps: '
                      f'{", ".join(map(str, steps))}')
    if abstract is None:
      abstract = abstract_state(config, task or load_task(config))
    state, _ = ckpt.restore(step, abstract)
  finally:
    ckpt.close()
  return state, step


def restore_variables(config, workdir, step=None, task=None, abstract=None):
  """(variables, step): {'params': ..., other collections} of the run in `workdir` (its
  EMA params where it kept them), on the host."""
  state, step = restore_state(config, workdir, step, task, abstract)
  return state.variables(state.ema_params is not None), step


# ------------------------------------------------------------------------ mesh batches


def run_batch(fn, variables, batch, rows, mesh, rules, seed):
  """fn(variables, batch, key(seed), row_ids=rows) over the mesh, the host batch padded
  to a multiple of the data-parallel devices with copies of its last row and sharded;
  returns the outputs of the real rows, gathered on every host (numpy)."""
  from jax.experimental import multihost_utils
  shards = mesh_lib.batch_sharding(mesh)
  par = mesh_lib.data_parallel_size(mesh)
  n = len(rows)
  total = -(-n // par) * par
  batch = {k: np.concatenate([v, np.repeat(v[-1:], total - n, 0)]) for k, v in batch.items()}
  batch = {k: jax.make_array_from_callback(v.shape, shards, lambda idx, v=v: v[idx])
           for k, v in batch.items()}
  row_np = np.asarray(list(rows) + [rows[-1]] * (total - n), np.int32)
  row_ids = jax.make_array_from_callback((total,), shards, lambda idx: row_np[idx])
  try:
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      out = fn(variables, batch, jax.random.key(seed), row_ids=row_ids)
  except (ConfigError, ValueError) as e:  # e.g. prompt + new tokens longer than the model's
    raise UserError(str(e).splitlines()[0]) from None
  return {k: np.asarray(multihost_utils.process_allgather(v, tiled=True))[:n]
          for k, v in out.items()}


def log(message: str) -> None:
  print(message, file=sys.stderr)


# ------------------------------------------------------------------------ fine-tuning


def _at(tree, path, what):
  for key in filter(None, path.split('/')):
    if not isinstance(tree, dict) or key not in tree:
      have = ', '.join(sorted(tree)) if isinstance(tree, dict) else 'a leaf'
      raise UserError(f'config.init_from.{what}={path!r}: no {key!r} there (it holds: {have})')
    tree = tree[key]
  return tree


def _flat(tree):
  return {'/'.join(str(getattr(k, 'key', k)) for k in p): v
          for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def init_from(config, params, extra):
  """(params, extra, report) with this run's initial values replaced by another run's
  (`config.init_from`): for each pair of '/'-paths in the comma-separated `source` and
  `target` ('' = the whole tree), the source run's params at the source path (its EMA
  params where it kept them) go to this run's params at the target path, and so do its
  non-param statistics at the same paths (BatchNorm's `batch_stats`) where both runs keep
  that collection. Every source leaf must land on a leaf of the same shape; this run's
  leaves that the source does not give keep their initial values (a new head)."""
  spec = config.init_from
  ckpt = ckpt_lib.Checkpointer(spec.workdir, async_save=False)
  try:
    steps = ckpt.all_steps()
    if not steps:
      raise UserError(f'config.init_from.workdir={spec.workdir!r} holds no checkpoint')
    step = int(spec.get('step') or 0) or steps[-1]
    if step not in steps:
      raise UserError(f'config.init_from.step={step}: no such checkpoint in {spec.workdir}; '
                      f'steps: {", ".join(map(str, steps))}')
    stored = ckpt.restore_stored(step)
  finally:
    ckpt.close()
  sources = [p.strip() for p in str(spec.get('source', '')).split(',')]
  targets = [p.strip() for p in str(spec.get('target', '')).split(',')]
  if len(sources) != len(targets):
    raise UserError(f'config.init_from: {len(sources)} source paths but {len(targets)} '
                    f'target paths; give them in pairs')
  src_params = stored['ema_params'] if stored.get('ema_params') is not None else stored['params']
  copied, kept = 0, []
  for source, target in zip(sources, targets):
    params, n, left = _copy(src_params, params, source, target, spec.workdir, step, 'params')
    copied, kept = copied + n, kept + left
    for coll, tree in (stored.get('extra') or {}).items():
      if coll in extra and coll not in (config.get('frozen') or {}) and _has(tree, source):
        extra = {**extra, coll: _copy(tree, extra[coll], source, target, spec.workdir, step,
                                      coll)[0]}
  report = (f'init_from: {copied} param arrays from {spec.workdir} step {step}'
            + (f'; {len(kept)} keep their initialisation ({", ".join(kept[:4])}'
               f'{", ..." if len(kept) > 4 else ""})' if kept else ''))
  return params, extra, report


def _has(tree, path):
  for key in filter(None, path.split('/')):
    if not isinstance(tree, dict) or key not in tree:
      return False
    tree = tree[key]
  return True


def _copy(src_tree, dst_tree, source, target, workdir, step, what):
  """dst_tree with its subtree at `target` taking the values of src_tree's at `source`;
  (new tree, leaves copied, target leaves left as they were)."""
  src = _flat(_at(src_tree, source, 'source'))
  dst_sub = _at(dst_tree, target, 'target')
  dst = _flat(dst_sub)
  missing = [k for k in src if k not in dst]
  shapes = [f'{k}: {np.shape(v)} vs {np.shape(dst[k])}' for k, v in src.items()
            if k in dst and np.shape(v) != np.shape(dst[k])]
  if missing or shapes:
    problems = ([f'not in this run\'s {what}: {", ".join(missing[:5])}'
                 + (f' and {len(missing) - 5} more' if len(missing) > 5 else '')]
                if missing else []) + ([f'shapes differ: {"; ".join(shapes[:5])}'] if shapes else [])
    raise UserError(f'config.init_from: the {what} of {workdir} (step {step}) at '
                    f'{source or "the root"!r} do not fit this run\'s at '
                    f'{target or "the root"!r}: {"; ".join(problems)}')
  leaves, treedef = jax.tree_util.tree_flatten_with_path(dst_sub)
  keys = list(dst)
  new = jax.tree_util.tree_unflatten(treedef, [
      np.asarray(src[k], np.asarray(v).dtype) if k in src else v
      for k, (_, v) in zip(keys, leaves)])
  return _replace(dst_tree, target, new), len(src), [k for k in dst if k not in src]


def _replace(tree, path, value):
  keys = [k for k in path.split('/') if k]
  if not keys:
    return value
  return {**tree, keys[0]: _replace(tree[keys[0]], '/'.join(keys[1:]), value)}
