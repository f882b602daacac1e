"""Latent diffusion: latents are the frozen autoencoder's posterior times its scale and
decode back through its decoder; the frozen run gets no gradient and leaves a training step
unchanged; a real run through the loop (the tiny KL run trained first) samples the same on
1 and 8 devices."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arch.generative import ldm, vae
from conftest import load_config, read_metrics, run_sample


def _images(b=3, seed=0):
  rng = np.random.default_rng(seed)
  return jnp.asarray(np.round(rng.integers(0, 17, (b, 8, 8, 1)) * 255 / 16), jnp.uint8)


def random_variables(init, *args, seed=0):
  """Variables shaped as `init(rng, *args)` makes them, each a scaled normal draw in numpy
  (compiling the initialisers costs more than the tests on CPU; nothing is zero)."""
  shapes = nn.meta.unbox(jax.eval_shape(init, jax.random.key(0), *args))
  rng = np.random.default_rng(seed)

  def draw(s):
    fan_in = int(np.prod(s.shape[:-1])) if len(s.shape) > 1 else 1
    return jnp.asarray(rng.standard_normal(s.shape) / np.sqrt(fan_in), s.dtype)
  return jax.tree.map(draw, shapes)


def _tiny(data_dir='', arg='', **overrides):
  """The tiny LDM config with its frozen spec resolved, the tiny KL run cut to 2 steps
  without evals (compiles are what these tests spend their time on)."""
  from train import loop
  from train import core
  config = load_config('ldm_digits.py:tiny' + arg, **overrides)
  if data_dir:
    config.data.data_dir = data_dir
  core.resolve_frozen(config)
  for k, v in dict(total_steps=2, eval_every=0, log_every=2, ckpt_every=2).items():
    config.frozen.vae.config[k] = v
  return config


def test_latents_are_the_scaled_posterior_and_decode_through_the_frozen_decoder():
  net, vae_task, image_shape, lik = ldm.first_stage(_tiny().frozen.vae.config)
  images = _images()
  variables = random_variables(vae_task.init, {'image': images})
  # A run whose latents had std 2 (second moment 4 + 1 at mean 1, debiased weight 0.5).
  stats = {'mean': jnp.full((2,), 0.5), 'sq': jnp.full((2,), 2.5), 'weight': jnp.float32(0.5)}
  variables = {**variables, vae.LATENT_STATS: stats}
  assert float(ldm.scale_of(variables)) == pytest.approx(0.5)
  assert float(ldm.scale_of(variables, 0.18215)) == pytest.approx(0.18215)
  untrained = {**variables, vae.LATENT_STATS: vae.init_latent_stats(2)}
  assert float(ldm.scale_of(untrained)) == 1.0

  nets = {'params': variables['params']}
  mean, logvar = net.apply(nets, vae.to_input(images), method='encode')
  assert mean.shape == logvar.shape == (3, 4, 4, 2)  # 8x8x1 -> 4x4x2
  eps = jax.random.normal(jax.random.key(1), mean.shape)
  enc = jax.jit(ldm.encode, static_argnums=0)
  np.testing.assert_allclose(enc(net, variables, images), 0.5 * mean, rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_allclose(enc(net, variables, images, eps),
                             0.5 * (mean + jnp.exp(0.5 * logvar) * eps), rtol=1e-5, atol=1e-5)
  # Decoding x0 = s z is decoding z: the scale cancels, and the pixels are the run's mean image.
  dec = jax.jit(ldm.decode, static_argnums=(0, 3, 4, 5))
  out = dec(net, variables, 0.5 * mean, lik['likelihood'], lik['levels'], 1)
  direct = net.apply(nets, mean, method='decode')
  want = vae.to_pixels(vae.mean_image(direct, lik['likelihood'], 1, lik['levels']),
                       lik['likelihood'], lik['levels'])
  assert out.shape == (3, *image_shape) and out.dtype == jnp.uint8
  diff = np.abs(np.asarray(out, np.int32) - np.asarray(want, np.int32))
  assert diff.max() <= 1 and np.mean(diff == 0) > 0.95  # (float rounding, jit vs eager)


def test_frozen_autoencoder_gets_no_gradient_and_passes_through_the_loss():
  # (the DiT denoiser here, the default U-Net in the loop test below)
  from train import loop
  from train import core
  task = core.load_task(_tiny(arg=',model=dit'))
  images = _images(4)
  batch = {'image': images, 'label': jnp.arange(4, dtype=jnp.int32)}
  variables = random_variables(task.init, batch)
  stats = {'mean': jnp.zeros((2,)), 'sq': jnp.full((2,), 4.0), 'weight': jnp.float32(1.0)}
  variables[ldm.VAE][vae.LATENT_STATS] = stats  # a run's statistics: latent std 2

  @jax.jit
  def run(v):
    (value, (metrics, updates)), grads = jax.value_and_grad(
        lambda v: task.loss(v, batch, jax.random.key(1)), has_aux=True)(v)
    return value, updates, grads

  value, updates, grads = run(variables)
  assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads[ldm.VAE]))
  assert any(float(jnp.abs(g).max()) > 0.0 for g in jax.tree.leaves(grads['params']))
  assert set(updates) == {ldm.VAE}
  jax.tree.map(np.testing.assert_array_equal, updates[ldm.VAE], variables[ldm.VAE])
  # The loss does read the autoencoder (so the zero gradient above is not vacuous).
  moved = jax.tree.map(lambda p: p * 1.5, variables[ldm.VAE]['params'])
  value2 = run({**variables, ldm.VAE: {**variables[ldm.VAE], 'params': moved}})[0]
  assert abs(float(value2) - float(value)) > 1e-4
  # Eval: the loss per image only (bits/dim of 256-level pixels means nothing on latents).
  evals = jax.jit(task.evaluate)(variables, batch)
  assert set(evals) == {'loss'} and evals['loss'].shape == (4,)
  assert np.isfinite(evals['loss']).all()
  samples = jax.jit(lambda v, b, r, ids: task.sample(v, b, r, row_ids=ids))(
      variables, task.prompt_batch(None, 3), jax.random.key(2), jnp.arange(3))
  assert samples['images'].shape == (3, 8, 8, 1) and samples['images'].dtype == jnp.uint8


def test_loop_trains_the_frozen_run_first_and_samples_match_on_one_and_eight_devices(
    tmp_path, data_dir):
  from train import loop
  from train import core
  config = _tiny(data_dir, total_steps=1, eval_every=0, log_every=1, ckpt_every=1)
  loop.train_and_evaluate(config, str(tmp_path))
  assert np.isfinite(read_metrics(tmp_path)[1]['loss'])
  assert sorted(read_metrics(tmp_path / 'frozen_vae')) == [2]  # trained first, by the loop
  # The run's frozen collection is the KL run's variables, untouched by the training step.
  frozen, _ = core.restore_variables(config.frozen.vae.config, str(tmp_path / 'frozen_vae'))
  mine, _ = core.restore_variables(config, str(tmp_path))
  jax.tree.map(np.testing.assert_array_equal, mine[ldm.VAE], frozen)
  arrays = []
  for devices in (1, 8):
    proc = run_sample(['--config', 'configs/ldm_digits.py:tiny', '--workdir', tmp_path,
                       '--num_samples', '10', '--seed', '3'], data_dir, devices=devices)
    assert proc.returncode == 0, proc.stderr
    arrays.append(np.load(tmp_path / 'samples' / 'step1_seed3.npz')['images'])
  one, eight = arrays
  assert one.shape == (10, 8, 8, 1) and one.dtype == np.uint8
  np.testing.assert_array_equal(one, eight)
  assert len({x.tobytes() for x in one}) > 1  # rows differ: per-row randomness
