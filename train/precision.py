"""Dynamic loss scaling for float16 training (Micikevicius et al. 2018, "Mixed precision
training").

float16 has 5 exponent bits: gradients below about 6e-8 flush to zero and values above
65,504 overflow. Loss scaling multiplies the loss by S before differentiation, so small
gradients survive the float16 backward pass, and divides the gradients by S before the
optimizer sees them. The dynamic rule picks S as large as the step allows:

- a step whose unscaled gradients hold an inf or NaN (an overflow at this S) applies no
  update (params and optimizer state unchanged) and halves S;
- after `period` consecutive finite steps, S doubles.

`config.loss_scale`: '' (off), 'dynamic' (start at 2^15, double every 2,000 finite steps),
or a number (a static scale). With `compute_dtype='float16'` and `param_dtype='float32'`
the models compute in float16 on float32 master weights, which the optimizer updates.

The scale lives in the optimizer state (`LossScaleState` wraps the config's optimizer's),
so it is checkpointed and a resumed run continues with the same scale. The step builders
(train/steps.py) read it to scale the loss, and log `loss_scale` and `overflow` (1 on a
skipped step). A skipped step reports a grad_norm of 0 so the loop's non-finite guard,
which stops a diverged run, does not mistake an overflow for divergence; a loss that is
itself not finite still stops the run.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from train.errors import UserError


class LossScaleState(NamedTuple):
  scale: jax.Array       # float32 scalar: S
  good_steps: jax.Array  # int32: finite steps since S last changed
  inner: Any             # the wrapped optimizer's state


def all_finite(tree) -> jax.Array:
  leaves = jax.tree.leaves(tree)
  if not leaves:
    return jnp.array(True)
  return jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]).all()


def loss_scaled(inner: optax.GradientTransformation, init_scale: float = 2.0 ** 15,
                period: int = 2000, factor: float = 2.0, dynamic: bool = True,
                min_scale: float = 1.0) -> optax.GradientTransformation:
  """`inner` taking gradients of the loss times S (the state's scale): it unscales them,
  skips the update when they are not finite, and (with `dynamic`) adapts S as the module
  docstring says. With `dynamic=False`, S stays at init_scale."""

  def init(params):
    return LossScaleState(jnp.asarray(init_scale, jnp.float32), jnp.zeros((), jnp.int32),
                          inner.init(params))

  def update(scaled_grads, state, params=None):
    grads = jax.tree.map(lambda g: (g / state.scale).astype(g.dtype), scaled_grads)
    finite = all_finite(grads)
    updates, new_inner = inner.update(grads, state.inner, params)
    updates = jax.tree.map(lambda u: jnp.where(finite, u, jnp.zeros_like(u)), updates)
    new_inner = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_inner,
                             state.inner)
    if not dynamic:
      return updates, state._replace(inner=new_inner)
    good = jnp.where(finite, state.good_steps + 1, 0)
    grow = good >= period
    scale = jnp.where(finite, jnp.where(grow, state.scale * factor, state.scale),
                      jnp.maximum(state.scale / factor, min_scale))
    return updates, LossScaleState(scale, jnp.where(grow, 0, good).astype(jnp.int32),
                                   new_inner)

  return optax.GradientTransformation(init, update)


def wrap(config, tx):
  """The config's optimizer with `config.loss_scale` applied (module docstring)."""
  setting = config.get('loss_scale', '')
  if setting in ('', None, 0, 0.0):
    return tx
  if setting == 'dynamic':
    return loss_scaled(tx)
  try:
    scale = float(setting)
  except (TypeError, ValueError):
    raise UserError(f"config.loss_scale={setting!r}; valid: '' (off), 'dynamic' or a "
                    f"number (a static scale)") from None
  if scale <= 0:
    raise UserError(f'config.loss_scale={setting!r} must be positive')
  return loss_scaled(tx, init_scale=scale, dynamic=False)


def scale_of(opt_state):
  """The loss scale S of an optimizer state `wrap` made, or None (no loss scaling)."""
  return opt_state.scale if isinstance(opt_state, LossScaleState) else None
