"""Dynamic loss scaling (train/precision.py): an overflow skips the step and halves the
scale, finite steps grow it back, the update is the unscaled optimizer's; float16 training
through the loop logs the scale and resumes exactly."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from train import precision, steps
from conftest import check_eight_devices, check_resumes_alike, read_metrics, train_spec


def _State(params, opt_state):
  from train.core import TrainState
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, extra={},
                    opt_state=opt_state, ema_params=None, rng=jnp.zeros((2,), jnp.uint32))


def _builders(tx):
  class Config(dict):
    get = dict.get
  return steps.Builders(Config(), tx, lambda step: 0.1)


def _loss(variables, batch, rng):
  """0.5 ||w - target||^2, times `boom` (1e38 on an injected overflow)."""
  del rng
  w = variables['params']['w']
  value = 0.5 * jnp.sum((w - batch['target']) ** 2) * batch['boom']
  return value, ({}, {})


def test_an_overflow_skips_the_step_and_halves_the_scale_then_it_grows_back():
  tx = precision.loss_scaled(optax.sgd(0.1), init_scale=2.0 ** 10, period=3)
  params = {'w': jnp.array([1.0, -2.0, 3.0])}
  step = jax.jit(_builders(tx).supervised(_loss))
  state = _State(params, tx.init(params))
  batch = {'target': jnp.zeros(3), 'boom': jnp.float32(1.0)}
  # a finite step: the update is plain SGD's on the unscaled gradient (w - target)
  state, m = step(state, batch, None)
  np.testing.assert_allclose(state.params['w'], [0.9, -1.8, 2.7], rtol=1e-6)
  assert (float(m['loss_scale']), float(m['overflow'])) == (1024.0, 0.0)
  assert float(m['grad_norm']) == pytest.approx(np.sqrt(14.0), rel=1e-6)
  # injected overflow: the scaled gradient 1e38 * 1024 * w is inf in float32
  before = state.params['w']
  state, m = step(state, {**batch, 'boom': jnp.float32(1e38)}, None)
  np.testing.assert_array_equal(state.params['w'], before)
  assert float(m['overflow']) == 1.0 and float(m['grad_norm']) == 0.0
  assert float(state.opt_state.scale) == 512.0 and int(state.opt_state.good_steps) == 0
  # three finite steps in a row double it again
  scales = []
  for _ in range(3):
    state, m = step(state, batch, None)
    scales.append(float(state.opt_state.scale))
  assert scales == [512.0, 512.0, 1024.0]
  np.testing.assert_allclose(state.params['w'], before * 0.9 ** 3, rtol=1e-6)


def test_the_scaled_step_equals_the_unscaled_one_when_nothing_overflows():
  params = {'w': jnp.array([0.5, -0.25, 2.0])}
  batch = {'target': jnp.array([1.0, 1.0, 1.0]), 'boom': jnp.float32(1.0)}
  results = []
  for tx in (optax.adam(0.01), precision.loss_scaled(optax.adam(0.01), init_scale=2.0 ** 15)):
    step = jax.jit(_builders(tx).supervised(_loss))
    state = _State(params, tx.init(params))
    for _ in range(4):
      state, _ = step(state, batch, None)
    results.append(state.params['w'])
  # powers of two scale and unscale exactly
  np.testing.assert_array_equal(results[0], results[1])


def test_a_static_scale_never_changes():
  tx = precision.loss_scaled(optax.sgd(0.1), init_scale=8.0, dynamic=False)
  params = {'w': jnp.ones(2)}
  step = jax.jit(_builders(tx).supervised(_loss))
  state = _State(params, tx.init(params))
  state, m = step(state, {'target': jnp.zeros(2), 'boom': jnp.float32(1e38)}, None)
  assert float(m['overflow']) == 1.0 and float(state.opt_state.scale) == 8.0
  np.testing.assert_array_equal(state.params['w'], params['w'])


def test_float16_gpt_trains_through_the_loop_logs_its_scale_and_resumes(tmp_path, data_dir):
  spec = 'fp16_gpt_pydoc.py:precision=fp16,variant=tiny'
  run = dict(total_steps=4, log_every=1, ckpt_every=2)
  train_spec(spec, tmp_path / 'straight', data_dir, eval_every=4, **run)
  metrics = read_metrics(tmp_path / 'straight')
  assert all(metrics[s]['loss_scale'] == 2.0 ** 15 and metrics[s]['overflow'] == 0.0
             for s in range(1, 5))
  assert all(np.isfinite(metrics[s]['loss']) for s in range(1, 5))
  check_resumes_alike(spec, lambda workdir, **kw: train_spec(spec, workdir, data_dir, **kw),
                      tmp_path, must_have=('loss', 'loss_scale'), **run)


def test_loss_scaling_with_several_optimizers_is_refused():
  from train import core
  from train.errors import UserError
  from conftest import load_config
  config = load_config('gan_digits.py:tiny', loss_scale='dynamic')
  with pytest.raises(UserError, match='loss_scale is not supported'):
    core.make_tx(config, core.load_task(config))


def test_float16_gpt_on_eight_devices_matches_one(tmp_path):
  """float16 with dynamic loss scaling on 8 simulated devices (jit): the per-step losses of
  one device to float16 precision (the gradient all-reduce sums in another order), the
  same loss scale at every step."""
  check_eight_devices('fp16_gpt_pydoc.py:precision=fp16,variant=tiny', tmp_path, ('jit',),
                      close=('loss',), equal=('loss_scale', 'overflow'), evals=('loss',),
                      rel=1e-3, args=('--config.log_every=1',))
