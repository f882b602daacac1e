"""DCGAN and the loop's phased update (Task.phases): sizes, that each phase moves only its
own network, that both optimizers' states are checkpointed and resume exactly."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import assert_same_states, load_config, restored_states

from arch.generative import gan


def _count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def test_lsun_dcgan_has_the_papers_layers():
  model = gan.Model(**gan.VARIANTS['lsun64'])
  z = jax.ShapeDtypeStruct((2, 100), jnp.float32)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(z.shape)))
  images = jax.eval_shape(lambda v: model.apply(v, jnp.zeros(z.shape), method='generate',
                                                train=False), variables)
  assert images.shape == (2, 64, 64, 3)
  p = variables['params']
  # Generator: z -> 4x4x1024 (no bias; BN), 5x5 deconvs 1024->512->256->128 (BN, no bias)
  # and 128->3 (bias, tanh).
  widths = [1024, 512, 256, 128, 3]
  g = 100 * 16 * 1024 + 2 * 1024
  g += sum(25 * a * b + 2 * b for a, b in zip(widths[:3], widths[1:4])) + 25 * 128 * 3 + 3
  # Discriminator: 5x5 convs 3->128 (bias, no BN), 128->256->512->1024 (BN), 4x4x1024 -> 1.
  d = 25 * 3 * 128 + 128
  d += sum(25 * a * b + 2 * b for a, b in zip([128, 256, 512], [256, 512, 1024]))
  d += 16 * 1024 + 1
  assert _count(p['generator']) == g == 18_855_043
  assert _count(p['discriminator']) == d == 17_232_897
  assert set(p) == {'generator', 'discriminator'}


def _setup(spec='gan_digits.py:tiny', **overrides):
  from train import loop
  from train import core
  from train import steps as steps_lib
  config = load_config(spec, **overrides)
  task = core.load_task(config)
  tx, schedule = core.make_tx(config, task)
  init = jax.jit(lambda r: nn.meta.unbox(core.make_init_fn(config, task, tx)(r)))
  return config, task, tx, schedule, init(jax.random.key(0))


def _batch():
  image = jax.random.randint(jax.random.key(1), (8, 8, 8, 1), 0, 256).astype(jnp.uint8)
  return {'image': image, 'label': jnp.zeros((8,), jnp.int32)}


def _differs(a, b):
  return [not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))]


def test_each_phase_updates_only_its_network():
  from train import loop
  from train import core
  from train import steps as steps_lib
  config, task, tx, schedule, state = _setup()
  batch = _batch()
  step = lambda t: jax.jit(steps_lib.make_train_step(config, t, tx, schedule))
  d_only, _ = step(task._replace(phases=task.phases[:1]))(state, batch)
  g_only, _ = step(task._replace(phases=task.phases[1:]))(state, batch)
  both, metrics = step(task)(state, batch)
  for new, moved, still in ((d_only, 'discriminator', 'generator'),
                            (g_only, 'generator', 'discriminator')):
    assert all(_differs(new.params[moved], state.params[moved]))  # every tensor moved
    assert not any(_differs(new.params[still], state.params[still]))
    assert not any(_differs(new.opt_state[still], state.opt_state[still]))
    assert not any(_differs(new.extra['batch_stats'][still], state.extra['batch_stats'][still]))
    assert any(_differs(new.extra['batch_stats'][moved], state.extra['batch_stats'][moved]))
  # The discriminator phase comes first in a full step; the generator's phase then sees
  # the updated discriminator, so it differs from a generator step on the old one.
  for a, b in zip(jax.tree.leaves(both.params['discriminator']),
                  jax.tree.leaves(d_only.params['discriminator'])):
    np.testing.assert_array_equal(a, b)
  assert any(_differs(both.params['generator'], g_only.params['generator']))
  # The generator's loss does depend on the discriminator's parameters: the loop's
  # restriction of the gradient is what keeps the discriminator still in that phase.
  gen_loss = task.phases[1][1]
  grad_d = jax.grad(lambda pd: gen_loss({**state.extra, 'params': {**state.params,
                                          'discriminator': pd}}, batch, jax.random.key(2))[0])(
      state.params['discriminator'])
  assert float(jax.tree.reduce(lambda a, x: a + jnp.abs(x).sum(), grad_d, 0.0)) > 0
  assert {'discriminator/loss', 'generator/loss', 'discriminator/d_real', 'loss'} <= set(metrics)
  assert int(both.opt_state['generator'][0].count) == 1


def test_per_group_optimizer_overrides():
  from train import loop
  from train import core
  from train import steps as steps_lib
  from train.errors import UserError
  config, task, tx, schedule, state = _setup(optimizers__generator__lr=0.5)
  assert float(schedule['generator'](0)) == 0.5 and float(schedule['discriminator'](0)) == 2e-4
  with config.unlocked():
    config.optimizers.critic = dict(lr=1.0)
  with pytest.raises(UserError, match='critic, not a parameter group'):
    core.make_tx(config, task)
  with config.unlocked():
    del config.optimizers['critic']
    config.optimizers.generator.lrr = 1.0
  with pytest.raises(UserError, match='lrr is not an optimizer field'):
    core.make_tx(config, task)


def test_both_optimizers_resume_bitwise(tmp_path, data_dir):
  from train import loop
  common = dict(data__data_dir=data_dir, log_every=1, eval_every=0, ckpt_every=2,
                )
  loop.train_and_evaluate(load_config('gan_digits.py:tiny', total_steps=4, **common),
                          str(tmp_path / 'straight'))
  loop.train_and_evaluate(load_config('gan_digits.py:tiny', total_steps=2, **common),
                          str(tmp_path / 'split'))
  loop.train_and_evaluate(load_config('gan_digits.py:tiny', total_steps=4, **common),
                          str(tmp_path / 'split'))
  _, _, _, _, abstract = _setup()
  a, b = restored_states(abstract, [tmp_path / 'straight', tmp_path / 'split'], 4)
  assert set(a.opt_state) == {'discriminator', 'generator'}
  assert_same_states(a, b)
  assert int(a.opt_state['discriminator'][0].count) == 4
