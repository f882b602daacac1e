"""Autoencoders, VAEs and SD's KL autoencoder: the closed-form KL equals a Monte-Carlo
estimate; ELBO <= IWAE bound <= log p(x), the latter by quadrature over a 1-d latent;
the reparameterised gradient reaches the encoder; beta weighs only the KL term; the
likelihoods' closed forms; SD-1.5's parameter count and shapes via eval_shape; latent
statistics; samples depend only on their row; one real training step of each config."""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arch.generative import autoencoder_kl, vae
from arch.task import ConfigError
from conftest import load_config as _config

IMAGE = (8, 8, 1)
DIGIT_VALUES = np.round(np.arange(17) * 255 / 16).astype(np.uint8)  # the digits' pixels


def digit_images(n, seed=0):
  """Random images over the digits' 17 pixel values."""
  rng = np.random.default_rng(seed)
  return jnp.asarray(DIGIT_VALUES[rng.integers(0, 17, (n, *IMAGE))])


def num_params(tree):
  return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


@functools.cache
def conv_vae(latent_dim=2, stochastic=True):
  """(model, variables) of a small ConvVAE with a 17-way categorical output, jit-initialised."""
  model = vae.ConvVAE(latent_dim=latent_dim, features=(4,), hidden=8, stochastic=stochastic,
                      out_channels=17)
  variables = jax.jit(model.init)(jax.random.key(1), jnp.zeros((2, *IMAGE)))
  return model, variables


def test_kl_closed_form_matches_monte_carlo():
  rng = np.random.default_rng(0)
  mean = rng.normal(size=(3, 4)).astype(np.float32)
  logvar = rng.normal(scale=0.7, size=(3, 4)).astype(np.float32)
  kl = np.asarray(vae.kl_std_normal(jnp.asarray(mean), jnp.asarray(logvar)))
  # log q(z) - log p(z) averaged over draws z ~ q, in float64
  eps = rng.standard_normal((200_000, 3, 4))
  z = mean + np.exp(0.5 * logvar) * eps
  log_ratio = (-0.5 * eps ** 2 - 0.5 * logvar + 0.5 * z ** 2).sum(-1)
  np.testing.assert_allclose(kl, log_ratio.mean(0), rtol=0.02)
  np.testing.assert_allclose(vae.kl_std_normal(jnp.zeros((1, 5)), jnp.zeros((1, 5))), 0.0)
  np.testing.assert_allclose(vae.kl_std_normal(jnp.ones((1, 5)), jnp.zeros((1, 5))), 2.5)


def test_likelihoods_closed_forms_and_levels():
  k = vae.to_levels(jnp.asarray(DIGIT_VALUES), 17)
  np.testing.assert_array_equal(k, np.arange(17))  # one level per pixel value
  np.testing.assert_array_equal(vae.to_pixels(k * 255.0 / 16, 'categorical'), DIGIT_VALUES)
  image = digit_images(2)
  d = math.prod(IMAGE)
  zeros = jnp.zeros((2, 8, 8, 17))
  np.testing.assert_allclose(vae.log_likelihood(zeros, image, 'categorical'),
                             -d * math.log(17), rtol=1e-6)
  np.testing.assert_allclose(vae.log_likelihood(zeros[..., :1], image, 'bernoulli'),
                             -d * math.log(2), rtol=1e-6)
  x = vae.to_input(image)
  np.testing.assert_allclose(vae.log_likelihood(x, image, 'laplace', scale=0.5), 0.0,
                             atol=1e-4)  # -D log(2 * 0.5) = 0 at the data
  np.testing.assert_allclose(vae.log_likelihood(x + 0.5, image, 'laplace', scale=0.5),
                             -d, rtol=1e-5)
  # A one-hot categorical at the right levels: log-likelihood ~ 0, mean image = the image.
  onehot = 50.0 * jax.nn.one_hot(vae.to_levels(image, 17)[..., 0], 17)
  np.testing.assert_allclose(vae.log_likelihood(onehot, image, 'categorical'), 0.0, atol=1e-5)
  np.testing.assert_array_equal(
      vae.to_pixels(vae.mean_image(onehot, 'categorical', 1), 'categorical'), image)


def test_elbo_le_iwae_le_exact_log_likelihood():
  # A 1-d latent: log p(x) = log int p(x|z) N(z; 0, 1) dz by quadrature on a fine grid.
  model, variables = conv_vae(latent_dim=1)
  image = digit_images(2, seed=3)
  grid = np.linspace(-9, 9, 3601, dtype=np.float32)
  decode = jax.jit(lambda z: model.apply(variables, z, method='decode'))
  out = decode(jnp.asarray(grid)[:, None])
  log_px_z = jax.vmap(lambda x: vae.log_likelihood(out, jnp.broadcast_to(x, (len(grid), *IMAGE)),
                                                   'categorical'))(image)  # (2, grid)
  log_joint = log_px_z - 0.5 * grid ** 2 - 0.5 * math.log(2 * math.pi)
  exact = jax.nn.logsumexp(log_joint, axis=1) + math.log(grid[1] - grid[0])

  # 4,096 draws per image, once; the bounds for k draws average over groups of k.
  eps = jax.random.normal(jax.random.key(0), (4096, 2, 1))
  t = jax.jit(lambda e: vae.posterior_terms(model, variables, image, e, 'categorical'))(eps)
  log_w = np.asarray(t['log_w'], np.float64)

  def iwae(k):  # numpy: log mean exp over each group of k, averaged over the groups
    g = log_w.reshape(4096 // k, k, 2)
    top = g.max(1)
    return (top + np.log(np.exp(g - top[:, None]).mean(1))).mean(0)

  np.testing.assert_allclose(vae.iwae_bound(t['log_w'][:64]), np.asarray(
      [np.logaddexp.reduce(log_w[:64, i]) - math.log(64) for i in range(2)]), rtol=1e-5)
  elbo = np.asarray(t['log_px_z']).mean(0) - np.asarray(t['kl'])  # analytic KL
  np.testing.assert_allclose(iwae(1), log_w.mean(0), rtol=1e-9)  # k = 1: the ELBO itself
  np.testing.assert_allclose(iwae(1), elbo, rtol=0.02)  # the two ELBO estimates agree
  first8 = log_w[:8]
  assert (first8.mean(0) <= np.asarray(vae.iwae_bound(first8)) + 1e-6).all()  # Jensen
  for i in range(2):
    e, i8, i64, i4096 = elbo[i], iwae(8)[i], iwae(64)[i], iwae(4096)[i]
    assert e < i8 < i64 < float(exact[i]) + 0.02, (e, i8, i64, float(exact[i]))
    assert float(exact[i]) - e > 0.05  # a real gap: q is not the exact posterior
    np.testing.assert_allclose(i4096, exact[i], atol=0.03)


def test_reparameterised_gradient_reaches_the_encoder():
  model, variables = conv_vae()
  image = digit_images(4)

  @jax.jit
  def grads(params):
    eps = jax.random.normal(jax.random.key(0), (1, 4, 2))
    return jax.grad(lambda p: -vae.posterior_terms(
        model, {'params': p}, image, eps, 'categorical')['log_px_z'].mean())(params)

  g = grads(variables['params'])
  # Without the KL term, the log-variance head is reached only through z = mean + sigma eps.
  for name in ('to_logvar', 'to_mean', 'encoder'):
    assert float(sum(jnp.abs(x).sum() for x in jax.tree.leaves(g[name]))) > 1e-6, name


def _task(model, **overrides):
  from train import loop
  from train import core
  return core.load_task(_config(f'vae_digits.py:tiny,model={model}', **overrides))


@functools.cache
def _task_vars(model):
  """(task, variables, jitted loss) of the tiny config of `model`, built once."""
  task = _task(model)
  example = {'image': jnp.zeros((2, *IMAGE), jnp.uint8)}
  return task, jax.jit(task.init)(jax.random.key(0), example), jax.jit(task.loss)


def test_beta_scales_only_the_kl_term():
  _, variables, loss1 = _task_vars('vae')
  task2 = _task('vae', task_kwargs__beta=2.0)
  batch = {'image': digit_images(4)}
  rng = jax.random.key(5)
  l1, (m1, _) = loss1(variables, batch, rng)
  l2, (m2, _) = jax.jit(task2.loss)(variables, batch, rng)
  np.testing.assert_allclose(float(l2 - l1), float(m1['kl']), atol=1e-4)  # fp32 of ~180
  assert float(m1['kl']) > 0.01
  np.testing.assert_allclose(m2['recon_nll'], m1['recon_nll'], rtol=1e-6)
  np.testing.assert_allclose(float(l1), float(m1['recon_nll'] + m1['kl']), rtol=1e-6)


def test_latent_stats_track_the_latents():
  z = jax.random.normal(jax.random.key(0), (64, 4, 4, 2)) * jnp.array([2.0, 0.5]) + 1.0
  stats = vae.update_latent_stats(vae.init_latent_stats(2), z, 0.9)
  mean, std = vae.latent_moments({vae.LATENT_STATS: stats})  # debiased: one batch exactly
  np.testing.assert_allclose(mean, z.reshape(-1, 2).mean(0), rtol=1e-5)
  np.testing.assert_allclose(std, z.reshape(-1, 2).std(0), rtol=1e-4)
  np.testing.assert_allclose(vae.latent_scale({vae.LATENT_STATS: stats}),
                             1 / z.std(), rtol=1e-4)
  # The loss updates them from the draws it trains on, one entry per latent dimension.
  _, variables, loss = _task_vars('vae')
  _, (_, updates) = loss(variables, {'image': digit_images(4)}, jax.random.key(5))
  np.testing.assert_allclose(updates[vae.LATENT_STATS]['weight'], 0.01)  # 1 - 0.99
  assert updates[vae.LATENT_STATS]['mean'].shape == (2,)
  assert float(jnp.abs(updates[vae.LATENT_STATS]['sq']).sum()) > 0


def test_sd15_parameter_count_and_shapes():
  model = autoencoder_kl.AutoencoderKL(**autoencoder_kl.VARIANTS['sd15'])
  x = jax.ShapeDtypeStruct((1, 256, 256, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  # diffusers AutoencoderKL with SD 1.5's configuration: 83,653,863 parameters.
  assert num_params(nn.meta.unbox(variables)) == 83_653_863
  mean, logvar = jax.eval_shape(functools.partial(model.apply, method='encode'), variables, x)
  assert mean.shape == logvar.shape == (1, 32, 32, 4)  # f = 8
  decoded = jax.eval_shape(functools.partial(model.apply, method='decode'), variables, mean)
  assert decoded.shape == (1, 256, 256, 3)


def test_kl_autoencoder_shapes_and_group_check():
  task, variables, _ = _task_vars('kl')  # the tiny variant: 8x8x1 -> 4x4x2
  model = autoencoder_kl.AutoencoderKL(**autoencoder_kl.VARIANTS['tiny'])
  net = {'params': variables['params']}
  x = jax.ShapeDtypeStruct((3, *IMAGE), jnp.float32)
  mean, logvar = jax.eval_shape(functools.partial(model.apply, method='encode'), net, x)
  assert mean.shape == logvar.shape == (3, 4, 4, 2)
  out = jax.eval_shape(functools.partial(model.apply, method='decode'), net, mean)
  assert out.shape == (3, *IMAGE)
  with pytest.raises(ValueError, match='multiples of groups=32'):
    autoencoder_kl.AutoencoderKL(block_out_channels=(16,), groups=32).init(
        jax.random.key(0), jnp.zeros((1, *IMAGE)))


@pytest.mark.parametrize('model', ['vae', 'kl'])
def test_samples_and_eval_depend_only_on_their_row(model):
  task, variables, _ = _task_vars(model)
  rng = jax.random.key(3)
  sample_fn = jax.jit(task.sample)
  sample = lambda rows: sample_fn(variables, task.prompt_batch(None, len(rows)), rng,
                                  row_ids=jnp.asarray(rows))['images']
  small, large = sample([1]), sample([0, 1, 2])
  assert small.dtype == jnp.uint8 and small.shape == (1, *IMAGE)
  np.testing.assert_array_equal(small[0], large[1])
  images = digit_images(3)
  evaluate = jax.jit(task.evaluate)
  whole, part = evaluate(variables, {'image': images}), evaluate(variables, {'image': images[::-1]})
  for key in whole:
    np.testing.assert_allclose(part[key], whole[key][::-1], rtol=1e-5, atol=1e-6)
  assert (whole['iwae_nll'] <= whole['nelbo'] + 1e-3).all()
  assert all(np.isfinite(v).all() for v in whole.values())


def test_the_autoencoder_has_no_samples_and_no_kl():
  task, variables, loss = _task_vars('ae')
  with pytest.raises(ConfigError, match='no prior'):
    task.prompt_batch(None, 4)
  _, (metrics, _) = loss(variables, {'image': digit_images(2)}, jax.random.key(0))
  assert set(metrics) == {'loss', 'recon_nll'}
  assert 'to_logvar' not in variables['params']


def test_bad_config_values_fail_clearly():
  from train.errors import UserError
  with pytest.raises(UserError, match='valid: categorical, bernoulli, laplace'):
    _task('vae', task_kwargs__likelihood='gaussian')
  with pytest.raises(UserError, match='multiples of 4'):
    _task('vae', model__features='(4, 4)', task_kwargs__input_size='(6, 6)')
  with pytest.raises(UserError, match='model=ae has none'):
    _config('vae_digits.py:model=ae,beta=2')


def test_digits_config_trains(tmp_path, data_dir):
  # (the kl config trains through the loop in tests/test_generative_sampler.py)
  from train import loop
  from train import core
  config = _config('vae_digits.py:tiny', total_steps=2, eval_every=2,
                   log_every=1, data__data_dir=data_dir)
  result = loop.train_and_evaluate(config, str(tmp_path))
  assert {'recon_nll', 'kl', 'nelbo', 'iwae_nll', 'mse', 'latent_std'} <= set(result)
  assert np.isfinite(list(result.values())).all()
