"""WaveNet: causality and the exact receptive field through gradients, the cached fast
generation against the full forward at every position, crops with their context against
the whole clip, mu-law companding, the paper-size parameter count, samples that depend on
their row id only, and the config through the loop and the sampler on 1 and 8 devices."""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from arch.generative import wavenet as wn
from conftest import load_config as _config
from conftest import run_sample


def _random_variables(init, *args, seed=0, scale=1.0):
  """Variables shaped as `init(rng, *args)` makes them, every leaf (biases too) a normal
  draw scaled by 1/sqrt(fan-in), drawn in numpy (no compiled initialisers)."""
  shapes = nn.meta.unbox(jax.eval_shape(init, jax.random.key(0), *args))
  rng = np.random.default_rng(seed)

  def draw(s):
    fan_in = int(np.prod(s.shape[:-1])) if len(s.shape) > 1 else 4
    return jnp.asarray(scale * rng.standard_normal(s.shape) / np.sqrt(fan_in), s.dtype)
  return jax.tree.map(draw, shapes)


def _levels(b, n, seed=1):
  return jnp.asarray(np.random.default_rng(seed).integers(0, 256, (b, n)), jnp.int32)


# ---------------------------------------------------------------------------------- mu-law


def test_mu_law_known_values_and_round_trip():
  enc, dec = jax.jit(wn.mu_law_encode), jax.jit(wn.mu_law_decode)
  np.testing.assert_array_equal(enc(jnp.array([-1.0, 0.0, 1.0, -2.0, 2.0])),
                                [0, 128, 255, 0, 255])
  np.testing.assert_allclose(dec(jnp.array([0, 255])), [-1.0, 1.0], atol=1e-6)
  # Level 128's centre is silence to within its (finest) quantisation step.
  assert 0 < float(dec(128)) < 1e-4
  every = jnp.arange(256)
  np.testing.assert_array_equal(enc(dec(every)), every)  # centres encode to their level
  centres = np.asarray(dec(every), np.float64)
  assert (np.diff(centres) > 0).all() and np.allclose(centres, -centres[::-1], atol=1e-6)
  # Round trip within half a companded step: |f(dec(enc(x))) - f(x)| <= 1/255.
  x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, 20000), jnp.float32)
  f = lambda v: np.sign(v) * np.log1p(255 * np.abs(v)) / np.log(256.0)
  err = np.abs(f(np.asarray(dec(enc(x)), np.float64)) - f(np.asarray(x, np.float64)))
  assert err.max() <= 1 / 255 + 1e-5
  # Finer steps near silence: half a step is 1/255 / f'(x), f'(x) = 255 / ((1 + 255 x) ln 256).
  abs_err = lambda v: np.abs(np.asarray(dec(enc(v))) - np.asarray(v))
  assert abs_err(x * 0.01).max() < 3.2e-4 < 5e-3 < abs_err(x).max() < 0.022
  # int16 PCM
  np.testing.assert_array_equal(wn.pcm_to_levels(jnp.array([-32768, 0, 32767], jnp.int16)),
                                [0, 128, 255])


# ------------------------------------------------------------------------------- network


def test_receptive_field_and_paper_size():
  model = wn.WaveNet(**wn.PAPER)
  assert model.dilations == (1, 2, 4, 8, 16, 32, 64, 128, 256, 512) * 3
  assert model.receptive_field == 3071
  shapes = nn.meta.unbox(jax.eval_shape(model.init, jax.random.key(0),
                                        jnp.zeros((1, 8), jnp.int32)))
  count = sum(int(np.prod(s.shape)) for s in jax.tree.leaves(shapes))
  r = d = 32
  s, k, n = 512, 256, 30
  layer = 2 * r * 2 * d + 2 * d + d * s + s + d * r + r
  want = 2 * k * r + r + n * layer - (d * r + r) + s * s + s + s * k + k
  assert count == want == 1_072_704
  cond = wn.WaveNet(**wn.PAPER, num_classes=10)
  shapes = nn.meta.unbox(jax.eval_shape(cond.init, jax.random.key(0),
                                        jnp.zeros((1, 8), jnp.int32), jnp.zeros((1,), jnp.int32)))
  assert sum(int(np.prod(s.shape)) for s in jax.tree.leaves(shapes)) == want + n * 10 * 2 * d


def test_logits_see_exactly_the_receptive_field_before_t():
  model = wn.WaveNet(**wn.TINY)
  rf, n = model.receptive_field, 40
  assert rf == 16
  x = jax.nn.one_hot(_levels(1, n), 256)
  variables = _random_variables(model.init, x)
  # J[t, s] = |d(sum of the logits at t) / d(one-hot input at s)|
  jac = jax.jit(jax.jacrev(lambda x: model.apply(variables, x)[0].sum(-1)))(x)
  jac = np.abs(np.asarray(jac[:, 0])).sum(-1)
  t, s = np.meshgrid(np.arange(n), np.arange(n), indexing='ij')
  seen = (s < t) & (s >= t - rf)
  assert (jac[~seen] == 0).all()  # nothing at or after t, nothing beyond the field
  assert (jac[seen] != 0).all()   # every one of the rf samples before t


def test_int_levels_equal_one_hot_inputs_and_labels_condition_every_position():
  model = wn.WaveNet(**wn.TINY, num_classes=3)
  x, labels = _levels(2, 24), jnp.array([0, 2])
  variables = _random_variables(model.init, x, labels)
  apply = jax.jit(model.apply)
  got = apply(variables, x, labels)
  np.testing.assert_allclose(got, apply(variables, jax.nn.one_hot(x, 256), labels),
                             rtol=1e-5, atol=1e-5)
  other = apply(variables, x, jnp.array([1, 1]))
  assert (np.abs(np.asarray(got - other)).sum(-1) > 0).all()  # even the first position


def test_fast_generation_equals_the_full_forward():
  model = wn.WaveNet(**wn.TINY, num_classes=3)
  b, n = 2, 50  # > 3 receptive fields: every queue wraps around several times
  x, labels = _levels(b, n), jnp.array([2, 0])
  variables = _random_variables(model.init, x, labels)
  full = jax.jit(model.apply)(variables, x, labels)

  @jax.jit
  def teacher_forced(x):
    def body(carry, x_t):
      prev, cache = carry
      logits, cache = model.apply(variables, prev, cache, labels, method='step')
      return (x_t, cache), logits
    carry = (jnp.full((b,), -1, jnp.int32), wn.init_cache(model, b))
    return jnp.moveaxis(jax.lax.scan(body, carry, x.T)[1], 0, 1)

  np.testing.assert_allclose(teacher_forced(x), full, rtol=1e-5, atol=1e-5)


def test_a_crop_with_its_context_equals_the_whole_clip():
  model = wn.WaveNet(**wn.TINY)
  ctx, crop, n = model.receptive_field - 1, 10, 60
  x = _levels(4, n)
  variables = _random_variables(model.init, x)
  apply = jax.jit(model.apply)
  full = np.asarray(apply(variables, x))
  starts = jnp.array([0, 3, 27, n - crop])  # at the start: padded "before the clip"
  windows = wn.crop_windows(x, starts, ctx, crop)
  assert windows.shape == (4, ctx + crop) and (windows[0, :ctx] == -1).all()
  got = np.asarray(apply(variables, windows))[:, ctx:]
  for row, s in enumerate(np.asarray(starts)):
    np.testing.assert_allclose(got[row], full[row, s:s + crop], rtol=1e-5, atol=1e-5)
  # One sample less of context changes the crop's first position (the field is really rf
  # wide) and none after it.
  short = np.asarray(apply(variables, wn.crop_windows(x, starts, ctx - 1, crop)))[:, ctx - 1:]
  assert (short[2, 0] != full[2, 27]).any()
  np.testing.assert_allclose(short[2, 1:], full[2, 28:27 + crop], rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------- sampling


def test_a_rows_sample_depends_on_its_row_id_only():
  from train import loop
  from train import core
  task = core.load_task(_config('wavenet_audio.py:tiny,conditional'))
  variables = _random_variables(task.init, task.example_batch(2))
  sample = jax.jit(task.sample)
  labels = task.prompt_batch(None, 10)['label']

  def run(row_ids):  # the default length: task_kwargs.sample_length
    return sample(variables, {'label': labels[np.asarray(row_ids)]}, jax.random.key(5),
                  row_ids=jnp.asarray(row_ids, jnp.int32))

  out, shuffled = run([0, 1, 2, 3, 4, 5]), run([4, 1, 5, 0, 3, 2])
  audio = np.asarray(out['audio'])
  assert audio.shape == (6, 64) and audio.dtype == np.float32
  assert np.abs(audio).max() <= 1 and (np.asarray(out['sample_rate']) == 4000).all()
  np.testing.assert_array_equal(np.asarray(shuffled['audio']), audio[[4, 1, 5, 0, 3, 2]])
  assert len({a.tobytes() for a in audio}) == 6  # rows differ
  # Every sample is a level centre.
  np.testing.assert_allclose(wn.mu_law_decode(wn.mu_law_encode(audio)), audio, atol=1e-6)


# --------------------------------------------------------------------------- the config


def test_config_trains_evaluates_and_samples_the_same_on_one_and_eight_devices(
    tmp_path, data_dir):
  from train import loop
  from train import core
  config = _config('wavenet_audio.py:tiny', total_steps=1, eval_every=1, log_every=1,
                   ckpt_every=1, eval_batch_size=100, data__data_dir=data_dir)
  result = loop.train_and_evaluate(config, str(tmp_path))
  assert set(result) == {'bits_per_sample', 'nll'}
  assert 6 < result['bits_per_sample'] < 9  # untrained: near uniform over 256 levels
  np.testing.assert_allclose(result['nll'], result['bits_per_sample'] * 4000 * np.log(2),
                             rtol=1e-5)
  arrays = []
  for devices in (1, 8):
    proc = run_sample(['--config', 'configs/wavenet_audio.py:tiny', '--workdir', tmp_path,
                       '--num_samples', '10', '--seed', '3', '--steps', '40'], data_dir,
                      devices=devices)
    assert proc.returncode == 0, proc.stderr
    stem = tmp_path / 'samples' / 'step1_seed3'
    assert os.path.getsize(f'{stem}_9.wav') == 44 + 2 * 40
    arrays.append(np.load(f'{stem}.npz')['audio'])
  one, eight = arrays
  assert one.shape == (10, 40) and one.dtype == np.float32
  np.testing.assert_array_equal(one, eight)
  assert len({x.tobytes() for x in one}) > 1
