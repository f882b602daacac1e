"""Step builders: the pure functions the runner compiles.

A training step is `step(state, batch) -> (state, metrics)`. The loop builds it as

    inner = task.make_step(builders)                 # a task that owns its update
          or builders.phased(task.phases)           # several networks, one optimizer each
          or builders.supervised(task.loss)         # default: one gradient step
    step  = finish(inner)                           # rng, EMA, step count, non-finite guard

`Builders` holds what a step needs from the config (the optimizer, its schedule, gradient
accumulation and, under pmap, the device axis to average over), so a task composes its own
update from the same pieces the loop uses: PPO runs `supervised(ppo_loss)` over the
minibatches of its rollout for several epochs inside one step. An inner step takes
`(state, batch, rng)` and returns `(state, metrics)` with metrics holding at least `loss`,
`grad_norm` and `learning_rate`; it does not advance `state.step` (finish does).
"""

import jax
import jax.numpy as jnp
import optax

from train import precision
from train.data import VALID


class Builders:
  """The library's step builders, bound to one config's optimizer and device layout."""

  def __init__(self, config, tx, schedule, axis_name=None):
    self.tx, self.schedule, self.axis_name = tx, schedule, axis_name
    self.accum = int(config.get('grad_accum_steps', 1))

  def mean(self, tree):
    """The mean over devices under pmap (gradients, metrics, statistics); identity under
    jit, where a batch is one global array and reductions over it are already global.
    Integer and boolean leaves (a cursor every replica advances alike) keep their dtype:
    a float in their place would not match the step's compiled input at the next call."""
    if self.axis_name is None:
      return tree
    return jax.tree.map(
        lambda m, x: m if jnp.issubdtype(x.dtype, jnp.inexact) else m.astype(x.dtype),
        jax.lax.pmean(tree, self.axis_name), tree)

  def shared_rng(self, state):
    """The step's key without the replica folded in: the same on every device under pmap
    (an inner step gets a per-device key, for dropout). For what every replica must do
    alike, such as stepping environments whose state is kept once in the checkpoint."""
    return step_rng(state)

  def supervised(self, loss, accum=None):
    """One gradient step of `loss(variables, batch, rng) -> (scalar, (metrics, updated
    non-param variables))` on all params with the config's optimizer; with `accum` > 1
    (default: config.grad_accum_steps) the batch is split into that many micro-batches
    whose gradients are averaged, non-param state threading through them in order."""
    accum = self.accum if accum is None else int(accum)

    def loss_fn(params, extra, batch, rng, scale):
      # differentiated: the loss times the loss scale (train/precision.py), if any
      value, (metrics, new_extra) = loss({'params': params, **extra}, batch, rng)
      return (value if scale is None else value * scale), (value, metrics, new_extra)

    grad_fn = jax.grad(loss_fn, has_aux=True)

    def step(state, batch, rng):
      scale = precision.scale_of(state.opt_state)
      if accum == 1:
        grads, (value, metrics, extra) = grad_fn(state.params, state.extra, batch, rng, scale)
      else:
        micro = jax.tree.map(lambda x: x.reshape(accum, x.shape[0] // accum, *x.shape[1:]),
                             batch)

        def body(carry, xs):
          extra, grads_sum = carry
          mb, i = xs
          g, (l, m, extra) = grad_fn(state.params, extra, mb, jax.random.fold_in(rng, i),
                                     scale)
          return (extra, jax.tree.map(jnp.add, grads_sum, g)), (l, m)

        zeros = jax.tree.map(jnp.zeros_like, state.params)
        (extra, grads), (losses, ms) = jax.lax.scan(body, (state.extra, zeros),
                                                    (micro, jnp.arange(accum)))
        grads = jax.tree.map(lambda g: g / accum, grads)
        value, metrics = losses.mean(), jax.tree.map(lambda m: m.mean(0), ms)
      grads, value, metrics, extra = self.mean((grads, value, metrics, extra))
      updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
      params = optax.apply_updates(state.params, updates)
      new = state.replace(params=params, extra=extra, opt_state=opt_state)
      return new, {**metrics, 'loss': value, **grad_metrics(grads, scale),
                   'learning_rate': self.schedule(state.step)}

    return step

  def phased(self, phases):
    """Each phase `(group, loss)` a gradient step of params[group] alone with that group's
    optimizer, in order, later phases seeing the earlier ones' updates (Task.phases).
    Metrics: each phase's own, its loss and grad norm under 'GROUP/'; `loss` and
    `grad_norm` over all phases (what the non-finite guard reads)."""
    tx, schedule = self.tx, self.schedule

    def step(state, batch, rng):
      params, extra, opt_state = dict(state.params), state.extra, dict(state.opt_state)
      metrics, losses, grads_all = {}, [], []
      for i, (group, phase_loss) in enumerate(phases):

        def loss_fn(group_params, extra, params=params, group=group, phase_loss=phase_loss):
          return phase_loss({'params': {**params, group: group_params}, **extra}, batch,
                            jax.random.fold_in(rng, i))

        (value, (m, extra)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            params[group], extra)
        grads, value, m, extra = self.mean((grads, value, m, extra))
        updates, opt_state[group] = tx[group].update(grads, opt_state[group], params[group])
        params[group] = optax.apply_updates(params[group], updates)
        metrics.update({f'{group}/{k}': v for k, v in m.items()})
        metrics[f'{group}/loss'] = value
        metrics[f'{group}/grad_norm'] = optax.tree.norm(grads)
        metrics[f'{group}/learning_rate'] = schedule[group](state.step)
        losses.append(value)
        grads_all.append(grads)
      new = state.replace(params=params, extra=extra, opt_state=opt_state)
      metrics.update(loss=sum(losses), grad_norm=optax.tree.norm(grads_all),
                     learning_rate=schedule[phases[0][0]](state.step))
      return new, metrics

    return step


def grad_metrics(grads, scale) -> dict:
  """{'grad_norm'} of a step's gradients; under loss scaling (scale not None: the
  gradients are of the scaled loss) the unscaled norm, 0 on an overflow step (which the
  optimizer skips), and the scale and an `overflow` flag."""
  if scale is None:
    return {'grad_norm': optax.tree.norm(grads)}
  norm = optax.tree.norm(grads) / scale
  finite = jnp.isfinite(norm)
  return {'grad_norm': jnp.where(finite, norm, 0.0), 'loss_scale': scale,
          'overflow': 1.0 - finite.astype(jnp.float32)}


def step_rng(state, axis_name=None):
  """The step's key: the run's key folded with the step (and, under pmap, the replica:
  different dropout masks per device)."""
  rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
  if axis_name is not None:
    rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))
  return rng


def finish(inner, ema_decay: float = 0.0, axis_name=None):
  """`state, batch -> state, metrics` from an inner step: draws the step's key, advances
  the step, updates the EMA, and leaves the state untouched when the loss or gradient norm
  is not finite (the host stops the run when it sees `finite == 0`)."""

  def step(state, batch):
    new, metrics = inner(state, batch, step_rng(state, axis_name))
    if new.ema_params is not None:
      new = new.replace(ema_params=jax.tree.map(
          lambda e, p: ema_decay * e + (1 - ema_decay) * p, new.ema_params, new.params))
    new = new.replace(step=state.step + 1)
    finite = jnp.isfinite(metrics['loss']) & jnp.isfinite(metrics['grad_norm'])
    new = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, state)
    return new, {**metrics, 'finite': finite.astype(jnp.float32)}

  return step


def make_train_step(config, task, tx, schedule, axis_name=None):
  """The loop's pure step for `task` (see the module docstring)."""
  builders = Builders(config, tx, schedule, axis_name)
  if task.make_step is not None:
    inner = task.make_step(builders)
  elif task.phases:
    inner = builders.phased(task.phases)
  else:
    inner = builders.supervised(task.loss)
  return finish(inner, float(config.get('ema_decay', 0.0)), axis_name)


def make_eval_step(task, use_ema, axis_name=None):
  """Sums of per-example metrics over the real (unpadded) rows of a batch, and the count.
  The row mask `VALID` has the leading shape of the per-example metrics: (B,), or (S, G)
  for a collated batch of S shards of G examples."""

  def step(state, batch):
    mask = batch.pop(VALID).astype(jnp.float32)
    per_example = task.evaluate(state.variables(use_ema), batch)
    # where, not multiply: a NaN in a padding row must not reach the sums.
    sums = {k: jnp.sum(jnp.where(mask.reshape(mask.shape + (1,) * (v.ndim - mask.ndim)) > 0,
                                 v.astype(jnp.float32), 0.0), axis=tuple(range(mask.ndim)))
            for k, v in per_example.items()}
    count = mask.sum()
    if axis_name is not None:
      sums, count = jax.lax.psum((sums, count), axis_name)
    return sums, count

  return step


def make_features_step(task, use_ema, label_key):
  """(representation (B, F) float32, labels (B,), real-row mask (B,)) of a padded batch."""

  def step(state, batch):
    valid = batch.pop(VALID)
    feats = task.features(state.variables(use_ema), batch)
    if isinstance(feats, dict):
      feats = feats['features']
    return feats.astype(jnp.float32), batch[label_key], valid

  return step
