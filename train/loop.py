"""The one training loop: `train_and_evaluate(config, workdir)`.

The step is a pure function `state, batch -> state, metrics`, jitted once with the state
donated. Two ways to run it over devices, with the same numbers:

- `parallelism='jit'`: one SPMD program over a `jax.sharding.Mesh`. Params are placed by
  the logical-axis rules of the config; the global batch is sharded along the data axes.
  XLA inserts the gradient all-reduce.
- `parallelism='pmap'`: the same step under `jax.pmap`; the state is replicated with a
  leading device axis and gradients, metrics and non-param variables are `pmean`-ed.

Ordering matters in a few places; the comments say why.
"""

import functools
import os
import signal
import sys
import time
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

import arch
from arch.task import PMAP_AXIS, ConfigError
from train import checkpoint as ckpt_lib
from train import data as data_lib
from train import evaluators
from train import mesh as mesh_lib
from train import metrics as metrics_lib
from train.errors import UserError, close_matches


class TrainState(flax.struct.PyTreeNode):
  step: jax.Array
  params: Any
  extra: Any        # non-param variables: batch_stats, ...
  opt_state: Any
  ema_params: Any   # EMA of params, or None when config.ema_decay == 0
  rng: jax.Array    # raw uint32 key data (checkpoints need plain arrays)


class NonFiniteError(UserError):
  pass


# ---------------------------------------------------------------------------- builders


def load_task(config):
  resolve_frozen(config)
  try:
    return arch.load(config.task, 'make').make(config)
  except (LookupError, ConfigError) as e:
    raise UserError(str(e).strip('"\'')) from None


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
  return tx


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


# ----------------------------------------------------------------------- frozen models
#
# `config.frozen.NAME = dict(spec='configs/X.py[:args]', workdir='')` names another run of
# this codebase whose trained variables the task reads but never trains (a distillation
# teacher, a frozen encoder). `resolve_frozen` loads the spec into `.config`, which the
# task builds the network from; its `init` makes a non-parameter collection NAME with that
# network's variables. On a fresh start the loop fills it from the run's latest checkpoint
# (EMA params where that run kept them), training the run first when its workdir (default
# WORKDIR/frozen_NAME) holds none. It is saved with every checkpoint, so a resume needs
# nothing else.


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


def restore_frozen(config, name, workdir):
  """The variables {'params': ..., other collections} of frozen run NAME, on the host."""
  return restore_run(config.frozen[name].config, frozen_workdir(config, name, workdir),
                     f'frozen {name!r}', config.frozen[name].get('spec') or 'its config')


def restore_run(sub, sub_dir, label, spec):
  """The latest variables of the run of config `sub` in `sub_dir` (EMA params where it
  kept them), on the host; trains it there first when it holds no checkpoint."""
  ckpt = ckpt_lib.Checkpointer(sub_dir, async_save=False)
  try:
    step = ckpt.latest_step()
    if step is None:
      ckpt.close()
      print(f'{label}: no checkpoint in {sub_dir}; training {spec} there first',
            file=sys.stderr)
      train_and_evaluate(sub, sub_dir)
      ckpt = ckpt_lib.Checkpointer(sub_dir, async_save=False)
      step = ckpt.latest_step()
    task = load_task(sub)
    abstract = nn.meta.unbox(jax.eval_shape(
        make_init_fn(sub, task, make_tx(sub, task)[0]), jax.random.key(0)))
    state, _ = ckpt.restore(step, abstract)
  finally:
    ckpt.close()
  params = state.ema_params if state.ema_params is not None else state.params
  print(f'{label}: restored step {step} of {sub_dir}', file=sys.stderr)
  return {'params': params, **state.extra}


# ------------------------------------------------------------------------------- steps


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


def _finish_step(state, new, metrics, loss, grad_norm, learning_rate, ema_decay):
  """EMA, the non-finite guard and the step's standard metrics, for both kinds of step."""
  if new.ema_params is not None:
    new = new.replace(ema_params=jax.tree.map(lambda e, p: ema_decay * e + (1 - ema_decay) * p,
                                              new.ema_params, new.params))
  new = new.replace(step=state.step + 1)
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  # A non-finite step changes nothing: the state stays the last good one, and the host
  # stops the run when it sees `finite == 0` (checked before every save).
  new = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, state)
  metrics = {**metrics, 'loss': loss, 'grad_norm': grad_norm,
             'learning_rate': learning_rate, 'finite': finite.astype(jnp.float32)}
  return new, metrics


def _step_rng(state, axis_name):
  rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
  if axis_name is not None:  # different dropout masks per replica
    rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))
  return rng


def make_phased_step(config, task, tx, schedule, axis_name=None):
  """The step of a task with `phases`: each phase a gradient step of one parameter group
  with its own optimizer, in order (Task.phases). Metrics: each phase's own, its loss and
  grad norm under 'GROUP/'; 'loss' and 'grad_norm' over all phases (the non-finite guard)."""
  ema_decay = float(config.get('ema_decay', 0.0))

  def step(state, batch):
    rng = _step_rng(state, axis_name)
    params, extra, opt_state = dict(state.params), state.extra, dict(state.opt_state)
    metrics, losses, grads_all = {}, [], []
    for i, (group, phase_loss) in enumerate(task.phases):

      def loss_fn(group_params, extra, params=params, group=group, phase_loss=phase_loss):
        return phase_loss({'params': {**params, group: group_params}, **extra}, batch,
                          jax.random.fold_in(rng, i))

      (loss, (m, extra)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params[group], extra)
      if axis_name is not None:
        grads, loss, m, extra = jax.lax.pmean((grads, loss, m, extra), axis_name)
      updates, opt_state[group] = tx[group].update(grads, opt_state[group], params[group])
      params[group] = optax.apply_updates(params[group], updates)
      metrics.update({f'{group}/{k}': v for k, v in m.items()})
      metrics[f'{group}/loss'] = loss
      metrics[f'{group}/grad_norm'] = optax.tree.norm(grads)
      metrics[f'{group}/learning_rate'] = schedule[group](state.step)
      losses.append(loss)
      grads_all.append(grads)
    new = state.replace(params=params, extra=extra, opt_state=opt_state)
    first = task.phases[0][0]
    return _finish_step(state, new, metrics, sum(losses), optax.tree.norm(grads_all),
                        schedule[first](state.step), ema_decay)

  return step


def make_train_step(config, task, tx, schedule, axis_name=None):
  """The pure step. With `axis_name` (pmap) it averages over that axis explicitly."""
  if task.phases:
    return make_phased_step(config, task, tx, schedule, axis_name)
  accum = int(config.get('grad_accum_steps', 1))
  ema_decay = float(config.get('ema_decay', 0.0))

  def loss_fn(params, extra, batch, rng):
    loss, (metrics, new_extra) = task.loss({'params': params, **extra}, batch, rng)
    return loss, (metrics, new_extra)

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def step(state, batch):
    rng = _step_rng(state, axis_name)
    if accum == 1:
      (loss, (metrics, extra)), grads = grad_fn(state.params, state.extra, batch, rng)
    else:
      # Micro-batches in sequence; non-param state (e.g. BN stats) threads through them.
      micro = jax.tree.map(lambda x: x.reshape(accum, x.shape[0] // accum, *x.shape[1:]), batch)

      def body(carry, xs):
        extra, grads_sum = carry
        mb, i = xs
        (l, (m, extra)), g = grad_fn(state.params, extra, mb, jax.random.fold_in(rng, i))
        return (extra, jax.tree.map(jnp.add, grads_sum, g)), (l, m)

      zeros = jax.tree.map(jnp.zeros_like, state.params)
      (extra, grads), (losses, ms) = jax.lax.scan(body, (state.extra, zeros),
                                                  (micro, jnp.arange(accum)))
      grads = jax.tree.map(lambda g: g / accum, grads)
      loss, metrics = losses.mean(), jax.tree.map(lambda m: m.mean(0), ms)

    if axis_name is not None:
      grads, loss, metrics, extra = jax.lax.pmean((grads, loss, metrics, extra), axis_name)

    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new = state.replace(params=params, extra=extra, opt_state=opt_state)
    return _finish_step(state, new, metrics, loss, optax.tree.norm(grads),
                        schedule(state.step), ema_decay)

  return step


def make_eval_step(task, use_ema, axis_name=None):
  """Sums of per-example metrics over the real (unpadded) rows of a batch, and the count."""

  def step(state, batch):
    params = state.ema_params if use_ema else state.params
    mask = batch.pop(data_lib.VALID).astype(jnp.float32)
    per_example = task.evaluate({'params': params, **state.extra}, batch)
    # where, not multiply: a NaN in a padding row must not reach the sums.
    sums = {k: jnp.sum(jnp.where(mask.reshape(-1, *[1] * (v.ndim - 1)) > 0,
                                 v.astype(jnp.float32), 0.0), axis=0)
            for k, v in per_example.items()}
    count = mask.sum()
    if axis_name is not None:
      sums, count = jax.lax.psum((sums, count), axis_name)
    return sums, count

  return step


def _label_key(config):
  return (config.get('probe') or {}).get('label_key', 'label')


def make_features_step(task, use_ema, label_key):
  """(representation (B, F) float32, labels (B,), real-row mask (B,)) of a padded batch."""

  def step(state, batch):
    params = state.ema_params if use_ema else state.params
    valid = batch.pop(data_lib.VALID)
    feats = task.features({'params': params, **state.extra}, batch)
    if isinstance(feats, dict):
      feats = feats['features']
    return feats.astype(jnp.float32), batch[label_key], valid

  return step


# ------------------------------------------------------------------------ the runners


class _Runner:
  """Places state and batches on devices and runs the compiled steps for one mode."""

  def to_host_state(self, state):
    return state

  def variables(self, state, mesh, use_ema):
    """{'params': ..., other collections} of `state` for a jit over `mesh` (the sampler)."""
    del mesh  # the jit runner's state is already laid out over it
    return {'params': state.ema_params if use_ema else state.params, **state.extra}

  def from_restored(self, state):
    return state


class JitRunner(_Runner):

  def __init__(self, config, task, tx, schedule, mesh):
    self.mesh, self.rules = mesh, mesh_lib.rules(config)
    init = make_init_fn(config, task, tx)
    with jax.set_mesh(mesh), nn.logical_axis_rules(self.rules):
      boxed = jax.eval_shape(init, jax.random.key(0))
    self.state_sharding = mesh_lib.logical_shardings(boxed, mesh, config)
    self.abstract_state = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
        nn.meta.unbox(boxed), self.state_sharding)
    self._init = jax.jit(lambda rng: nn.meta.unbox(init(rng)), out_shardings=self.state_sharding)
    self.batch_sharding = mesh_lib.batch_sharding(mesh)
    repl = mesh_lib.replicated(mesh)
    self._step = jax.jit(make_train_step(config, task, tx, schedule),
                         in_shardings=(self.state_sharding, self.batch_sharding),
                         out_shardings=(self.state_sharding, repl), donate_argnums=0)
    self._eval = None
    if task.evaluate is not None:
      self._eval = jax.jit(make_eval_step(task, bool(config.get('ema_decay'))),
                           in_shardings=(self.state_sharding, self.batch_sharding),
                           out_shardings=repl)
    if task.features is not None:
      self._features = jax.jit(
          make_features_step(task, bool(config.get('ema_decay')), _label_key(config)),
          in_shardings=(self.state_sharding, self.batch_sharding), out_shardings=repl)

  def init(self, rng):
    with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
      return self._init(rng)

  def device_batch(self, local_batch):
    return {k: jax.make_array_from_process_local_data(self.batch_sharding, v)
            for k, v in local_batch.items()}

  def compile(self, state, batch):
    with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
      self._compiled = self._step.lower(state, batch).compile()
    return _flops(self._compiled)

  def step(self, state, batch):
    return self._compiled(state, batch)

  def put_extra(self, state, name, tree):
    """state with extra[name] replaced by host arrays `tree`, placed like the state."""
    placed = jax.tree.map(lambda x, s: jax.make_array_from_callback(
        np.shape(x), s, lambda idx, x=x: np.asarray(x)[idx]), tree,
        self.state_sharding.extra[name])
    return state.replace(extra={**state.extra, name: placed})

  def eval_step(self, state, batch):
    with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
      return self._eval(state, batch)

  def features(self, state, batch):
    with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
      return jax.device_get(self._features(state, batch))

  def scalars(self, metrics):
    return metrics


class PmapRunner(_Runner):
  AXIS = PMAP_AXIS

  def __init__(self, config, task, tx, schedule, mesh):
    del mesh
    self.n = jax.local_device_count()
    self.devices = jax.local_devices()
    init = make_init_fn(config, task, tx)
    self.abstract_state = nn.meta.unbox(jax.eval_shape(init, jax.random.key(0)))
    self._init = jax.jit(lambda rng: nn.meta.unbox(init(rng)))
    self._step = jax.pmap(make_train_step(config, task, tx, schedule, axis_name=self.AXIS),
                          axis_name=self.AXIS, donate_argnums=0)
    self._eval = None
    if task.evaluate is not None:
      self._eval = jax.pmap(
          make_eval_step(task, bool(config.get('ema_decay')), axis_name=self.AXIS),
          axis_name=self.AXIS)
    if task.features is not None:
      self._features = jax.pmap(
          make_features_step(task, bool(config.get('ema_decay')), _label_key(config)),
          axis_name=self.AXIS)

  def replicate(self, tree):
    """Host values -> arrays with a leading local-device axis (pmap shards it)."""
    return jax.tree.map(lambda x: np.broadcast_to(np.asarray(x), (self.n, *np.shape(x))), tree)

  def init(self, rng):
    return self.replicate(jax.device_get(self._init(rng)))

  def device_batch(self, local_batch):
    return {k: v.reshape(self.n, v.shape[0] // self.n, *v.shape[1:]) for k, v in local_batch.items()}

  def compile(self, state, batch):
    # With several processes the AOT executable expects global arrays, while pmap's own
    # call path takes each process's local ones: compile only for the FLOP count there.
    self._compiled = self._step
    try:
      compiled = self._step.lower(state, batch).compile()
    except Exception:  # pmap AOT lowering is best-effort; the MFU is then reported as 0
      return None
    if jax.process_count() == 1:
      self._compiled = compiled
    return _flops(compiled)

  def step(self, state, batch):
    return self._compiled(state, batch)

  def put_extra(self, state, name, tree):
    return state.replace(extra={**state.extra, name: self.replicate(tree)})

  def eval_step(self, state, batch):
    sums, count = self._eval(state, batch)
    return jax.tree.map(lambda x: x[0], sums), count[0]

  def features(self, state, batch):
    local = jax.tree.map(lambda x: np.asarray(x).reshape(-1, *x.shape[2:]),
                         jax.device_get(self._features(state, batch)))
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      local = multihost_utils.process_allgather(local, tiled=True)
    return local

  def scalars(self, metrics):
    return jax.tree.map(lambda x: x[0], metrics)

  def to_host_state(self, state):
    return jax.device_get(jax.tree.map(lambda x: x[0], state))

  def variables(self, state, mesh, use_ema):
    # One replica's copy, replicated over the mesh the sampler's jit runs on.
    return super().variables(jax.device_put(self.to_host_state(state),
                                            mesh_lib.replicated(mesh)), mesh, use_ema)

  def from_restored(self, state):
    return self.replicate(jax.device_get(state))


def _flops(compiled):
  try:
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
      cost = cost[0]
    return float(cost.get('flops', 0.0)) or None
  except Exception:
    return None


# ---------------------------------------------------------------------------- the loop


class _Preemption:
  """Catches SIGTERM/SIGINT so the loop can save before exiting (single-process).

  With several processes, orbax's preemption sync point (jax's own SIGTERM notice)
  makes every host stop at the same step instead.
  """

  def __init__(self):
    self.signum = None
    self._old = {}

  def __enter__(self):
    if jax.process_count() == 1:
      for sig in (signal.SIGTERM, signal.SIGINT):
        self._old[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    self.signum = signum

  def reached(self, step) -> bool:
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      try:
        return multihost_utils.reached_preemption_sync_point(step)
      except Exception:
        return False
    return self.signum is not None

  def __exit__(self, *exc):
    for sig, old in self._old.items():
      signal.signal(sig, old)


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains `config` in `workdir`, resuming from its latest checkpoint. Returns the last
  eval metrics. Raises UserError for bad input; `Preempted` after a save on a signal."""
  mesh_lib.maybe_initialize_distributed(config)
  mesh = mesh_lib.make_mesh(config)
  mesh_lib.check_batch(config, mesh)
  task = load_task(config)
  tx, schedule = make_tx(config, task)
  pidx, pcount = jax.process_index(), jax.process_count()

  mode = config.parallelism
  if mode not in ('jit', 'pmap'):
    raise UserError(f"unknown parallelism {mode!r}; valid: 'jit', 'pmap'")
  runner = (JitRunner if mode == 'jit' else PmapRunner)(config, task, tx, schedule, mesh)
  evaluator_names = evaluators.check(config, task)
  if mode == 'pmap' and (config.batch_size // pcount) % jax.local_device_count():
    raise UserError(f'batch_size={config.batch_size} does not split over '
                    f'{jax.local_device_count()} local devices per process')

  train_it = data_lib.train_iterator(config, task.preprocess, pidx, pcount, workdir)
  ckpt = ckpt_lib.Checkpointer(workdir, keep=config.get('keep_ckpts', 3),
                               async_save=config.get('async_checkpoints', True))
  start = ckpt.latest_step()
  if start is not None:
    try:
      host_state, data_state = ckpt.restore(start, runner.abstract_state)
    except UserError:
      ckpt.close()
      raise
    state = runner.from_restored(host_state)
    train_it.set_state(data_state)
    print(f'resumed from {ckpt.directory}/{start}', file=sys.stderr)
  else:
    start = 0
    state = runner.init(jax.random.key(config.seed))
    for name in (config.get('frozen') or {}):
      if name not in state.extra:
        raise UserError(f'config.frozen names {name!r} but the task made no {name!r} '
                        f'collection (it has: {", ".join(state.extra) or "none"})')
      tree = restore_frozen(config, name, workdir)
      want = jax.tree.structure(state.extra[name])
      if jax.tree.structure(tree) != want:
        raise UserError(f'the frozen {name!r} run in {frozen_workdir(config, name, workdir)} '
                        f'does not match the network its config builds')
      state = runner.put_extra(state, name, tree)
  metrics_lib.write_config_json(workdir, config)
  writer = metrics_lib.Writer(workdir, config.total_steps, start)

  total = config.total_steps
  eval_every, log_every, ckpt_every = config.eval_every, config.log_every, config.ckpt_every
  last_good = start if ckpt.latest_step() is not None else None
  pending, last_eval = [], {}
  flops, peak = None, None

  def fetch_pending(step):
    """Host-side averages of the pending step metrics; stops on a non-finite step."""
    nonlocal pending
    if not pending:
      return {}
    host = jax.device_get([runner.scalars(m) for m in pending])
    first_step = step - len(pending) + 1
    for i, m in enumerate(host):
      if not m['finite']:
        raise NonFiniteError(
            f'loss or gradients became NaN/Inf at step {first_step + i} '
            f'(loss={float(m["loss"])}, grad_norm={float(m["grad_norm"])}); stopping. '
            + (f'The last good checkpoint is step {last_good} in {ckpt.directory}.'
               if last_good is not None else 'No checkpoint was saved yet.'))
    pending = []
    return {k: float(np.mean([m[k] for m in host])) for k in host[0] if k != 'finite'}

  def save(step, force=False):
    nonlocal last_good
    ckpt.save(step, runner.to_host_state(state), train_it.get_state(), force=force)
    last_good = step

  def embed_split(split, max_examples):
    batches = data_lib.eval_batches(config, split, task.preprocess, pidx, pcount, workdir)
    size = config.get('eval_batch_size') or config.batch_size
    n = min(len(batches), -(-max_examples // size)) if max_examples else len(batches)
    feats, labels = [], []
    for i in range(n):
      f, y, valid = runner.features(state, runner.device_batch(batches[i]))
      feats.append(f[valid > 0])
      labels.append(y[valid > 0])
    return np.concatenate(feats), np.concatenate(labels)

  sample_fns = {}

  def generate(n, **options):
    """n samples {'images': (n, ...), ...} (host numpy) from the current (EMA) params,
    sample i drawn with row id i and the config's seed, as `train.sample` draws them."""
    from train import sample as sample_lib
    key = tuple(sorted(options.items()))
    if key not in sample_fns:
      sample_fns[key] = jax.jit(functools.partial(task.sample, **options))
    variables = runner.variables(state, mesh, bool(config.get('ema_decay')))
    return sample_lib.run_batch(sample_fns[key], variables, task.prompt_batch(None, n),
                                list(range(n)), mesh, mesh_lib.rules(config), config.seed)

  def run_eval(step):
    result = {}
    if task.evaluate is not None and runner._eval is not None:
      sums, count = None, 0.0
      batches = data_lib.eval_batches(config, config.data.eval_split, task.preprocess, pidx,
                                      pcount, workdir)
      for i in range(len(batches)):
        s, c = runner.eval_step(state, runner.device_batch(batches[i]))
        sums = s if sums is None else jax.tree.map(jnp.add, sums, s)
        count += c
      sums, count = jax.device_get((sums, count))
      if task.finalize_eval is not None:
        result = {k: float(v) for k, v in task.finalize_eval(sums, float(count)).items()}
      else:
        result = {k: float(v) / float(count) for k, v in sums.items()}
    if evaluator_names:
      result.update(evaluators.evaluate(config, evaluator_names, embed_split, generate))
    if result:
      writer.write(step, 'eval', result)
    return result

  try:
    with _Preemption() as preempt:
      t_log, steps_since = time.time(), 0
      for step in range(start, total):
        batch = runner.device_batch(next(train_it))
        if step == start:
          flops = runner.compile(state, batch)
          peak = metrics_lib.peak_flops_per_device() if flops else None
          t_log = time.time()
        state, m = runner.step(state, batch)
        pending.append(m)
        steps_since += 1
        done = step + 1
        if done % log_every == 0 or done == total:
          avg = fetch_pending(done)
          now = time.time()
          sps = steps_since / max(now - t_log, 1e-9)
          avg['steps_per_sec'] = sps
          avg['examples_per_sec'] = sps * config.batch_size
          avg['mfu'] = (flops * sps / peak) if flops and peak else 0.0
          writer.write(done, 'train', avg)
          writer.progress(done, avg.get('loss'), sps)
          t_log, steps_since = time.time(), 0
        if eval_every and (done % eval_every == 0 or done == total):
          fetch_pending(done)  # never evaluate or keep a state after a bad step
          last_eval = run_eval(done)
          t_log = time.time()
        if (ckpt_every and done % ckpt_every == 0) or done == total:
          fetch_pending(done)
          save(done)
        if preempt.reached(done):
          fetch_pending(done)
          if last_good != done:
            save(done, force=True)
          ckpt.wait()
          sig = preempt.signum or signal.SIGTERM
          raise Preempted(f'stopped by {signal.Signals(sig).name} after step {done}; '
                          f'checkpoint saved in {ckpt.directory}. Rerun the same command to resume.',
                          128 + int(sig))
  finally:
    ckpt.wait()
    ckpt.close()
    writer.close()
  return last_eval


class Preempted(Exception):
  def __init__(self, message, exit_code):
    super().__init__(message)
    self.exit_code = exit_code
