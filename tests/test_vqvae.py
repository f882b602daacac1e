"""VQ-VAE: the straight-through gradient (d loss / d z_e is d loss / d z_q; the codebook
gets nothing from the reconstruction), nearest codes equal a numpy argmin, one EMA update
equals the closed form, dead codes are restarted to batch vectors, perplexity of uniform
use is K, codes round-trip through encode_indices / decode_indices, the config's `codes`
argument sets the code grid, and the tiny config trains, resumes bitwise and draws
reconstruction strips, and on 8 devices gives 1 device's losses and EMA codebook."""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arch.generative import vqvae
from arch.task import ConfigError
from conftest import (REPO, check_eight_devices, check_resumes_alike, load_config,
                      read_metrics, restored_states, train_spec)

SPEC = 'vqvae_shapes.py:tiny'


@functools.cache
def tiny(codebook='ema'):
  """(model, variables) of a tiny VQ-VAE on 8x8 RGB."""
  model = vqvae.VQVAE(**{**vqvae.TINY, 'codebook': codebook})
  return model, jax.jit(model.init)(jax.random.key(0), jnp.zeros((2, 8, 8, 3)))


def images(n, seed=0):
  return jnp.asarray(np.random.default_rng(seed).integers(0, 256, (n, 8, 8, 3)), jnp.uint8)


def encode_quantize(model, variables, image):
  """(z_e, (codes, z_q)) of uint8 images."""
  z_e = model.apply(variables, vqvae.to_input(image), method='encode')
  return z_e, model.apply(variables, z_e, method='quantize')


def test_nearest_codes_match_numpy_argmin():
  rng = np.random.default_rng(0)
  z = rng.normal(size=(2, 3, 5, 4)).astype(np.float32)
  e = rng.normal(size=(7, 4)).astype(np.float32)
  want = ((z[..., None, :] - e) ** 2).sum(-1).argmin(-1)
  np.testing.assert_array_equal(vqvae.nearest_codes(jnp.asarray(z), jnp.asarray(e)), want)
  model, variables = tiny()
  z_e, (codes, z_q) = jax.jit(functools.partial(encode_quantize, model))(variables, images(2))
  book = np.asarray(variables[vqvae.CODEBOOK]['embedding'])
  np.testing.assert_array_equal(codes, ((np.asarray(z_e)[..., None, :] - book) ** 2)
                                .sum(-1).argmin(-1))
  np.testing.assert_array_equal(z_q, book[np.asarray(codes)])


def test_straight_through_gradient():
  model, variables = tiny('loss')
  x = vqvae.to_input(images(3))
  params = variables['params']

  def recon(p, z_e, z_q):
    out = model.apply({'params': p}, vqvae.straight_through(z_e, z_q), method='decode')
    return ((out - x) ** 2).sum()

  z_e, (_, z_q) = jax.jit(functools.partial(encode_quantize, model))(variables, images(3))
  assert float(jnp.abs(z_e - z_q).max()) > 1e-3  # a real quantisation step
  g_e, g_q = jax.jit(jax.grad(recon, argnums=(1, 2)))(params, z_e, z_q)
  # d loss / d z_e equals the gradient of the decoder's loss at the quantised point
  at_q = jax.jit(jax.grad(lambda z: ((model.apply({'params': params}, z, method='decode') - x)
                                     ** 2).sum()))(z_q)
  np.testing.assert_allclose(g_e, at_q, rtol=1e-4, atol=1e-5)  # z_e + (z_q - z_e) ~ z_q
  assert float(jnp.abs(g_e).sum()) > 1e-4
  np.testing.assert_array_equal(g_q, 0.0)
  # Through the whole model: the reconstruction term gives the codebook param nothing, and
  # the encoder a gradient.
  g = jax.jit(jax.grad(lambda p: ((model.apply({'params': p}, x)[0] - x) ** 2).sum()))(params)
  np.testing.assert_array_equal(g['embedding'], 0.0)
  assert float(jnp.abs(g['to_code']['kernel'].value).sum()) > 1e-6


def test_loss_terms_and_their_gradients():
  task = load_task('loss')
  model, variables = tiny('loss')
  batch = {'image': images(4)}
  (value, (m, updates)), g = jax.jit(jax.value_and_grad(task.loss, has_aux=True))(
      variables, batch, jax.random.key(0))
  assert updates == {}
  np.testing.assert_allclose(value, m['recon_mse'] + 0.25 * m['commitment'] + m['codebook_loss'],
                             rtol=1e-6)
  np.testing.assert_allclose(m['commitment'], m['codebook_loss'], rtol=1e-6)  # same value
  # The codebook gets only the codebook loss's gradient: 2 (e_k - z) / numel summed over
  # the vectors assigned to k.
  z_e, (codes, z_q) = jax.jit(functools.partial(encode_quantize, model))(variables,
                                                                          batch['image'])
  diff = np.asarray(z_q - z_e).reshape(-1, 4)
  want = np.zeros((8, 4), np.float32)
  np.add.at(want, np.asarray(codes).reshape(-1), 2 * diff / diff.size)
  np.testing.assert_allclose(g['params']['embedding'], want, rtol=1e-5, atol=1e-8)


def test_ema_update_equals_closed_form():
  book = {'embedding': jnp.asarray([[0.0, 0.0], [1.0, 1.0], [5.0, -5.0]]),
          'cluster_size': jnp.asarray([2.0, 1.0, 0.5]),
          'embed_sum': jnp.asarray([[0.2, 0.0], [1.0, 1.0], [2.5, -2.5]]),
          'unused': jnp.asarray([3.0, 0.0, 7.0])}
  z = jnp.asarray([[1.0, 2.0], [3.0, 0.0], [-1.0, 1.0]])
  codes = jnp.asarray([0, 0, 1])
  g, eps = 0.9, 0.1
  new = vqvae.ema_update(book, z, codes, g, eps)
  n = np.array([0.9 * 2 + 0.1 * 2, 0.9 * 1 + 0.1 * 1, 0.9 * 0.5])
  m = np.array([[0.9 * 0.2 + 0.1 * 4, 0.1 * 2], [0.9 + 0.1 * -1, 0.9 + 0.1], [2.25, -2.25]])
  total = n.sum()
  smoothed = (n + eps) / (total + 3 * eps) * total
  np.testing.assert_allclose(new['cluster_size'], n, rtol=1e-6)
  np.testing.assert_allclose(new['embed_sum'], m, rtol=1e-6)
  np.testing.assert_allclose(new['embedding'], m / smoothed[:, None], rtol=1e-6)
  np.testing.assert_array_equal(new['unused'], [0.0, 0.0, 8.0])
  # Decay 0 with one vector per code and no smoothing: each code is its assigned vector.
  one = vqvae.ema_update(book, z, jnp.asarray([2, 0, 1]), 0.0, 1e-12)
  np.testing.assert_allclose(one['embedding'], z[jnp.asarray([1, 2, 0])], rtol=1e-5)


def test_dead_code_is_restarted_to_batch_vectors():
  model, variables = tiny()
  task = load_task('ema')
  batch = {'image': images(4)}
  book = dict(variables[vqvae.CODEBOOK])
  book['unused'] = book['unused'].at[3].set(1.0)  # one step from the tiny config's 2
  # Code 3 far away: never the nearest, so unused again this step and restarted.
  book['embedding'] = book['embedding'].at[3].set(100.0)
  book['embed_sum'] = book['embed_sum'].at[3].set(100.0)
  variables = {**variables, vqvae.CODEBOOK: book}
  _, (m, updates) = jax.jit(task.loss)(variables, batch, jax.random.key(1))
  new = updates[vqvae.CODEBOOK]
  assert float(m['restarted']) >= 1
  z, (codes, _) = jax.jit(functools.partial(encode_quantize, model))(variables, batch['image'])
  z = np.asarray(z)
  rows = z.reshape(-1, 4)
  restarted = np.asarray(new['embedding'][3])
  assert np.abs(rows - restarted).max(-1).min() < 1e-6  # one of the batch's z_e vectors
  assert new['unused'][3] == 0.0 and new['cluster_size'][3] == 1.0
  np.testing.assert_array_equal(new['embed_sum'][3], restarted)
  # Codes in use are the plain EMA update, untouched by the restart.
  codes = np.asarray(codes).reshape(-1)
  plain = vqvae.ema_update(book, jnp.asarray(rows), jnp.asarray(codes), 0.99, 1e-5)
  live = np.asarray(plain['unused']) < 2
  np.testing.assert_allclose(np.asarray(new['embedding'])[live],
                             np.asarray(plain['embedding'])[live], rtol=1e-5, atol=1e-6)
  # Dead codes get distinct vectors.
  picks = vqvae.restart_dead_codes({**plain, 'unused': jnp.full((8,), 5.0)}, jnp.asarray(rows),
                                   jax.random.key(2), 2)['embedding']
  assert len({tuple(np.asarray(r)) for r in picks}) == 8


def test_perplexity():
  np.testing.assert_allclose(vqvae.perplexity(jnp.full((16,), 5.0)), 16.0, rtol=1e-5)
  np.testing.assert_allclose(vqvae.perplexity(jnp.asarray([0.0, 9.0, 0.0])), 1.0, rtol=1e-6)
  p = np.array([0.5, 0.25, 0.25, 0.0])
  np.testing.assert_allclose(vqvae.perplexity(jnp.asarray(p * 8)),
                             np.exp(-(p[:3] * np.log(p[:3])).sum()), rtol=1e-5)


def test_indices_round_trip_and_eval():
  model, variables = tiny()
  image = images(3)
  codes = jax.jit(functools.partial(vqvae.encode_indices, model))(variables, image)
  assert codes.shape == (3, 4, 4) and codes.dtype == jnp.int32
  out = jax.jit(functools.partial(vqvae.decode_indices, model))(variables, codes)
  assert out.shape == image.shape and out.dtype == jnp.uint8
  # decode_indices is the model's reconstruction
  recon = jax.jit(model.apply)(variables, vqvae.to_input(image))[0]
  np.testing.assert_array_equal(out, vqvae.to_pixels(recon))
  task = load_task('ema')
  result = jax.jit(task.evaluate)(variables, {'image': image})
  err = (np.clip(np.asarray(recon, np.float64), -1, 1) + 1) / 2 - np.asarray(image) / 255
  mse = (err ** 2).reshape(3, -1).mean(-1)
  np.testing.assert_allclose(result['mse'], mse, rtol=1e-5)
  np.testing.assert_allclose(result['psnr'], -10 * np.log10(np.asarray(result['mse'])),
                             rtol=1e-5)
  np.testing.assert_array_equal(result['code_counts'].sum(-1), 16)
  sums = {k: np.asarray(v).sum(0) for k, v in result.items()}
  final = task.finalize_eval(sums, 3.0)
  assert final['codes_used'] == len(set(np.asarray(codes).reshape(-1).tolist()))
  assert 1.0 <= final['perplexity'] <= final['codes_used'] + 1e-4


def test_bad_options_fail_clearly():
  from train.errors import UserError
  with pytest.raises((ConfigError, UserError), match='restart_after'):
    load_task('loss', task_kwargs__restart_after=5)
  with pytest.raises((ConfigError, UserError), match='multiples of 2'):
    load_task('ema', task_kwargs__input_size='(9, 9)')
  with pytest.raises(ConfigError, match='do not pool'):
    vqvae.pool_image(np.zeros((10, 10, 3), np.uint8), (8, 8))
  pooled = vqvae.pool_image(np.arange(48 * 48 * 3).reshape(48, 48, 3) % 256, (8, 8))
  assert pooled.shape == (8, 8, 3)


def load_task(codebook, **overrides):
  from train import core
  return core.load_task(load_config(f'{SPEC},codebook={codebook}', **overrides))


def test_config_trains_resumes_and_samples(tmp_path, data_dir):
  result = train_spec(SPEC, tmp_path / 'straight', data_dir, data__eval_split='test[:16]')
  assert {'psnr', 'mse', 'perplexity', 'codes_used'} <= set(result)
  assert np.isfinite(list(result.values())).all() and 1 <= result['codes_used'] <= 8
  # step 2 -> 4 again from the step-2 checkpoint: the same metrics and state, bitwise,
  # the EMA codebook collection (restarted codes included) with it
  _, _, states = check_resumes_alike(
      SPEC, lambda workdir, **kw: train_spec(SPEC, workdir, data_dir, **kw), tmp_path)
  assert set(states[0].extra[vqvae.CODEBOOK]) == {'embedding', 'cluster_size', 'embed_sum',
                                                  'unused'}

  from train import sample
  workdir = tmp_path / 'straight'
  assert sample.main(['--config', os.path.join(REPO, 'configs', SPEC), '--workdir', str(workdir),
                      '--num_samples', '3', f'--config.data.data_dir={data_dir}']) == 0
  saved = np.load(workdir / 'samples' / 'step4_seed0.npz')['images']
  assert saved.shape == (3, 8, 16, 3)  # input | reconstruction
  from train import data as data_lib
  test = data_lib.builder('shapes', data_dir).as_data_source('test')
  for i in range(3):
    np.testing.assert_array_equal(saved[i, :, :8], vqvae.pool_image(test[i]['image'], (8, 8)))


def test_codes_argument_sets_the_code_grid():
  """caption_shapes' 32x32 images: codes=8 (the default) is 2 stride-2 stages, codes=16
  one; the encoder's output grid is the one asked for, and a grid the data cannot give is
  one error naming the valid ones."""
  from train.errors import UserError
  for arg, grid in (('', 8), (',codes=8', 8), (',codes=16', 16)):
    config = load_config(f'vqvae_shapes.py:data=caption_shapes{arg}')
    model = vqvae.VQVAE(**config.model)
    variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    z = jax.eval_shape(functools.partial(model.apply, method='encode'), variables,
                       jnp.zeros((1, 32, 32, 3)))
    assert z.shape == (1, grid, grid, 32), arg
  assert load_config('vqvae_shapes.py:codes=12').model.stages == 1  # shapes: 24x24
  with pytest.raises(UserError, match='valid: 8, 16'):
    load_config('vqvae_shapes.py:data=caption_shapes,codes=4')


def test_eight_devices_give_the_losses_and_codebook_of_one(tmp_path, data_dir):
  """Under jit the batch is one global array, so the nearest codes, the EMA statistics and
  the dead-code restarts' picks (tiny: restarts after 2 unused steps) are those of one
  device: every step's losses and batch perplexity, the eval's psnr and perplexity, and
  the step-4 codebook collection agree."""
  check_eight_devices(SPEC, tmp_path, ('jit',), rel=1e-5, abs=1e-6,
                      close=('loss', 'recon_mse', 'commitment', 'perplexity'),
                      equal=('codes_used', 'restarted'), evals=('codes_used',),
                      args=(f'--config.data.data_dir={data_dir}',
                            '--config.data.eval_split=test[:16]'))
  one, eight = (read_metrics(tmp_path / name, 'eval')[4] for name in ('one', 'jit'))
  for key in ('psnr', 'perplexity'):
    assert eight[key] == pytest.approx(one[key], rel=1e-5), key
  assert sum(r['restarted'] for r in read_metrics(tmp_path / 'one').values()) > 0
  from train import core
  config = load_config(SPEC)
  # the 8 devices' checkpoint restored onto this process's one device
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device),
                          core.abstract_state(config, core.load_task(config)))
  a, b = (s.extra[vqvae.CODEBOOK] for s in
          restored_states(abstract, [tmp_path / 'one', tmp_path / 'jit'], 4))
  np.testing.assert_array_equal(a['unused'], b['unused'])
  np.testing.assert_array_equal(a['cluster_size'], b['cluster_size'])
  for key in ('embedding', 'embed_sum'):
    np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6)
