"""The causal 3-D video VAE (arch/generative/video_vae.py) and the video DiT
(arch/generative/video_dit.py): CogVideoX's parameter count, causality in time through
gradients, the tubelet patchify round trip, adaLN-Zero's identity at init, factorised
attention's structure, the digit crop, and the tiny configs through the loop and the
sampler (the same videos on 1 and 8 devices)."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import load_config, read_metrics, run_cli, run_sample
from arch.generative import video_dit as vd
from arch.generative import video_vae as vv


def count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nn.meta.unbox(tree)))


@pytest.fixture(scope='module')
def video_data_dir(data_dir):
  """The session data dir with the moving digits prepared as well."""
  proc = run_cli(['moving_digits', '--data_dir', data_dir], data_dir, module='train.datasets')
  assert proc.returncode == 0, proc.stderr
  return data_dir


# ------------------------------------------------------------------------------- the VAE


def test_cogvideox_vae_has_diffusers_parameter_count():
  # diffusers AutoencoderKLCogVideoX() (default config) counts 215,583,907 parameters.
  model = vv.CausalVAE(**vv.VARIANTS['cogvideox'])
  shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x),
                          jax.ShapeDtypeStruct((1, 9, 16, 16, 3), jnp.float32))
  assert count(shapes['params']) == 215_583_907


@pytest.mark.parametrize('frames,latent', [(9, (5, 3)), (8, (4, 2)), (1, (1, 1))])
def test_temporal_compression_keeps_the_first_frame_alone(frames, latent):
  for levels, t in zip((1, 2), latent):
    model = vv.CausalVAE(block_out_channels=(4, 4, 4), layers_per_block=1, latent_channels=2,
                         out_channels=1, temporal_levels=levels, groups=2)
    (rec, mean, _), _ = jax.eval_shape(
        lambda x, m=model: m.init_with_output(jax.random.key(0), x),
        jax.ShapeDtypeStruct((1, frames, 8, 8, 1), jnp.float32))
    assert mean.shape == (1, t, 2, 2, 2) and model.latent_frames(frames) == t
    assert rec.shape == (1, frames, 8, 8, 1)  # the decoder mirrors it


@functools.lru_cache(maxsize=None)
def _tiny_vae(causal_norm=True, spatial_norm=True):
  model = vv.CausalVAE(**{**vv.VARIANTS['tiny'], 'causal_norm': causal_norm,
                          'spatial_norm': spatial_norm})
  x = jax.random.normal(jax.random.key(1), (1, 9, 8, 8, 1))
  variables = jax.jit(model.init)(jax.random.key(0), x)
  return model, variables, x


def _dependence(fn, x, num_out):
  """(num_out, T_in) bool: whether output frame k depends on input frame j (gradients)."""
  def row(k):
    g = jax.grad(lambda x: fn(x)[:, k].sum())(x)
    return jnp.abs(g).reshape(g.shape[0], g.shape[1], -1).sum((0, 2)) > 0
  return np.asarray(jax.jit(jax.vmap(row))(jnp.arange(num_out)))


def test_vae_encoder_and_decoder_are_causal_in_time():
  model, variables, x = _tiny_vae()  # 9 frames -> 5 latents: frame 0, then pairs
  enc = lambda x: model.apply(variables, x, method='encode')[0]
  dep = _dependence(enc, x, 5)
  for k in range(5):
    last = 0 if k == 0 else 2 * k  # latent k covers frames 2k - 1 and 2k
    assert dep[k, :last + 1].all(), (k, dep[k])  # it sees its whole past
    assert not dep[k, last + 1:].any(), (k, dep[k])  # and nothing after its window
  z = jax.random.normal(jax.random.key(2), (1, 5, 4, 4, 2))
  dec = lambda z: model.apply(variables, z, method='decode')
  dep = _dependence(dec, z, 9)
  for j in range(9):
    source = 0 if j == 0 else (j + 1) // 2  # output frame j comes from latent frame source
    assert dep[j, :source + 1].all() and not dep[j, source + 1:].any(), (j, dep[j])


def test_whole_clip_groupnorm_is_not_causal():
  # CogVideoX's GroupNorm over the clip lets frame 0's latent see the last frame: the
  # causality test above fails on it.
  model, variables, x = _tiny_vae(causal_norm=False, spatial_norm=False)
  enc = lambda x: model.apply(variables, x, method='encode')[0]
  assert _dependence(enc, x, 1)[0, -1]


# ------------------------------------------------------------------------------- the DiT


def test_patchify_round_trip_and_token_order():
  x = jax.random.normal(jax.random.key(0), (2, 4, 6, 8, 3))
  tokens = vd.patchify(x, 2, 2)
  assert tokens.shape == (2, 2 * 3 * 4, 2 * 2 * 2 * 3)
  np.testing.assert_array_equal(vd.unpatchify(tokens, 2, 2, 4, 6, 8), x)
  # token (t=1, h=2, w=3) is tubelet x[:, 2:4, 4:6, 6:8] in (frame, row, column, channel)
  np.testing.assert_array_equal(tokens[:, 1 * 12 + 2 * 4 + 3],
                                x[:, 2:4, 4:6, 6:8].reshape(2, -1))


def test_sincos_3d_codes_each_axis():
  table = vd.sincos_3d(3, 4, 5, 32)  # frame 12 channels, row and column 10 each
  assert table.shape == (60, 32)
  grid = table.reshape(3, 4, 5, 32)
  assert np.allclose(grid[:, :1, :1, :12], grid[:, :, :, :12])  # frame code: t only
  assert np.allclose(grid[:1, :, :1, 12:22], grid[:, :, :, 12:22])  # row code: h only
  assert np.allclose(grid[:1, :1, :, 22:], grid[:, :, :, 22:])  # column code: w only
  assert len({r.tobytes() for r in table}) == 60


def _dit(**kw):
  model = vd.Model(**{**vd.VARIANTS['tiny'], 'num_classes': 10, 'out_channels': 2, **kw})
  x = jax.random.normal(jax.random.key(0), (2, 4, 4, 4, 2))
  t, y = jnp.array([3.0, 500.0]), jnp.array([1, 10])
  variables = jax.jit(model.init)(jax.random.key(1), x, t, y)
  return model, variables, x, t, y


@pytest.mark.parametrize('attention', ['joint', 'factorized'])
def test_adaln_zero_blocks_are_the_identity_at_init(attention):
  model, variables, x, t, y = _dit(attention=attention)
  assert not np.asarray(model.apply(variables, x, t, y)).any()  # zero final layer
  # With a random final layer, the blocks still pass their input through unchanged: the
  # output equals that of the same network with no blocks.
  params = dict(variables['params'])
  leaves, tree = jax.tree.flatten(params['final'])
  keys = jax.random.split(jax.random.key(5), len(leaves))
  params['final'] = jax.tree.unflatten(
      tree, [jax.random.normal(k, l.shape) for k, l in zip(keys, leaves)])
  out = model.apply({'params': params}, x, t, y)
  shallow = model.clone(depth=0)
  no_blocks = {k: v for k, v in params.items() if not k.startswith('block')}
  np.testing.assert_allclose(out, shallow.apply({'params': no_blocks}, x, t, y), atol=1e-5)
  assert np.abs(np.asarray(out)).max() > 0


def _randomised(variables, seed=7):
  leaves, tree = jax.tree.flatten(variables)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree.unflatten(tree, [0.2 * jax.random.normal(k, l.shape)
                                   for k, l in zip(keys, leaves)])


def test_factorised_attention():
  model, variables, x, t, y = _dit(attention='factorized', depth=1)
  variables = _randomised(variables)
  # One spatial block: frame 0's output sees frame 0 only; a temporal block adds the rest.
  frame0 = lambda m, v: jax.grad(lambda x: m.apply(v, x, t, y)[:, 0].sum())(x)
  g = np.abs(np.asarray(frame0(model, variables))).sum((0, 2, 3, 4))
  assert g[0] > 0 and not g[1:].any()
  deep, v2, *_ = _dit(attention='factorized', depth=2)
  g = np.abs(np.asarray(frame0(deep, _randomised(v2)))).sum((0, 2, 3, 4))
  assert (g > 0).all()


def test_crop_finds_the_digit():
  from train.datasets.moving_digits import render
  digit = np.arange(1, 65, dtype=np.uint8).reshape(8, 8) * 3
  corners = np.array([[0, 0], [3, 5], [8, 8], [8, 1]])
  crops = vd.crop_digits(jnp.asarray(render(digit, corners)))
  np.testing.assert_array_equal(crops[..., 0], np.broadcast_to(digit, (4, 8, 8)))
  # metric bookkeeping with a fake classifier that reads the label off the crop's mean
  videos = jnp.asarray(render(digit, corners))[None].repeat(2, 0)
  classify = lambda im: jax.nn.one_hot(jnp.array([3, 3, 5, 3] * 2), 10)
  m = vd.digit_metrics(classify, videos, jnp.array([3, 5]))
  np.testing.assert_allclose(m['digit_accuracy'], [0.75, 0.25])
  np.testing.assert_allclose(m['digit_consistency'], [0.75, 0.75])
  np.testing.assert_allclose(m['clip_accuracy'], [1.0, 0.0])


# ----------------------------------------------------------- the loop and the sampler


def test_pixel_dit_one_step(video_data_dir, tmp_path):
  from train import loop
  config = load_config('video_dit_digits.py:tiny,space=pixels', data__data_dir=video_data_dir,
                       total_steps=1, eval_every=1, log_every=1, ckpt_every=1)
  result = loop.train_and_evaluate(config, str(tmp_path))
  assert np.isfinite(result['loss']) and np.isfinite(result['bits_per_dim'])


def test_latent_dit_trains_and_samples_the_same_on_one_and_eight_devices(video_data_dir,
                                                                          tmp_path):
  from train import loop
  spec = 'video_dit_digits.py:tiny,space=latent'
  config = load_config(spec, data__data_dir=video_data_dir, total_steps=1, eval_every=1,
                       log_every=1, ckpt_every=1)
  result = loop.train_and_evaluate(config, str(tmp_path))  # trains the tiny VAE first
  vae_eval = read_metrics(tmp_path / 'frozen_vae', 'eval')[2]  # the VAE objective's eval
  assert {'mse', 'psnr', 'l1', 'kl', 'latent_std'} <= set(vae_eval)
  assert 0 < vae_eval['mse'] < 1 and np.isfinite(vae_eval['kl'])
  assert np.isfinite(result['loss'])
  arrays = []
  for devices in (1, 8):
    proc = run_sample(['--config', f'configs/{spec}', '--workdir', tmp_path, '--num_samples',
                       '10', '--seed', '3'], video_data_dir, devices=devices)
    assert proc.returncode == 0, proc.stderr
    stem = tmp_path / 'samples' / 'step1_seed3'
    assert (tmp_path / 'samples' / 'step1_seed3.gif').stat().st_size > 0
    arrays.append(np.load(f'{stem}.npz')['videos'])
  one, eight = arrays
  assert one.shape == (10, 8, 16, 16, 1) and one.dtype == np.uint8
  # Row-keyed draws: the same videos. Bitwise on the machines that wrote this test; on an
  # AVX-512/AMX Xeon (2026-12-07) 1 of the 20,480 pixels came out 177 on one device and 178
  # on eight (8 devices run smaller per-device batches, whose kernels round differently). A
  # device-dependent draw would change nearly every pixel.
  differ = one != eight
  assert differ.mean() < 1e-3 and np.abs(one.astype(int) - eight.astype(int)).max() <= 1
  assert len({v.tobytes() for v in one}) > 1
