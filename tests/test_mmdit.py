"""Rectified flow with MMDiT: the straight path's target is its time derivative and the
conditional mean of that target is the closed-form velocity field of Gaussian data; Euler
integration of that field carries N(0, 1) to the data's N(mu, sigma^2) (exactly, in one
step, for the straight coupling's field); the logit-normal sampler has its density; the
joint attention never reads text padding while image tokens do read the text; SD3-medium's
parameter count equals diffusers'; the task's loss is the formula's; the tiny config trains,
resumes bitwise and samples the same images on 1 and 8 devices; prompts are tokenized or
refused with one line."""

import math
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from arch.generative import mmdit
from arch.task import ConfigError
from conftest import check_resumes_from_step_2, load_config, run_sample, train_spec

SPEC = 'rectified_flow_shapes.py:tiny'
# diffusers SD3Transformer2DModel(sample_size=128, patch_size=2, in_channels=16, num_layers=24,
# attention_head_dim=64, num_attention_heads=24, joint_attention_dim=4096,
# caption_projection_dim=1536, pooled_projection_dim=2048, out_channels=16,
# pos_embed_max_size=192): sum(p.numel() for p in parameters()), built on the meta device
# (diffusers 0.3x in /work/refenv); with qk_norm='rms_norm' 2,028,334,144.
SD3_MEDIUM = 2_028_328_000
SD3_MEDIUM_QK_NORM = 2_028_334_144


def quantiles(n):
  """n evenly spaced quantiles of N(0, 1): a deterministic standard normal sample."""
  return stats.norm.ppf((np.arange(n) + 0.5) / n)


def gaussian_field(mu, sigma):
  """E[eps - x0 | x_t = x] for x0 ~ N(mu, sigma^2), eps ~ N(0, 1) independent, x_t the
  straight path: the marginal velocity rectified flow learns (linear in x)."""
  def v(x, t):
    var = (1 - t) ** 2 * sigma ** 2 + t ** 2
    centred = x - (1 - t) * mu
    return (t - (1 - t) * sigma ** 2) * centred / var - mu
  return v


def test_target_is_the_paths_derivative_and_its_mean_is_the_gaussian_field():
  rng = np.random.default_rng(0)
  x0, eps = rng.normal(size=(2, 5, 3))
  for t in (0.0, 0.3, 1.0):
    _, dxdt = jax.jvp(lambda s: mmdit.rf_interpolate(x0, eps, s), (t,), (1.0,))
    np.testing.assert_allclose(dxdt, mmdit.rf_target(x0, eps), atol=1e-6)
  np.testing.assert_allclose(mmdit.rf_interpolate(x0, eps, 0.0), x0)
  np.testing.assert_allclose(mmdit.rf_interpolate(x0, eps, 1.0), eps)
  # The least-squares regression of the target on x_t is the closed-form field.
  mu, sigma, t, n = 1.5, 0.5, 0.4, 400_000
  x0 = mu + sigma * rng.normal(size=n)
  eps = rng.normal(size=n)
  x_t = np.asarray(mmdit.rf_interpolate(x0, eps, t))
  slope, intercept = np.polyfit(x_t, np.asarray(mmdit.rf_target(x0, eps)), 1)
  want_at = lambda x: gaussian_field(mu, sigma)(x, t)
  np.testing.assert_allclose(slope, want_at(1.0) - want_at(0.0), atol=0.01)
  np.testing.assert_allclose(intercept, want_at(0.0), atol=0.01)


def test_euler_transports_noise_to_the_gaussian_data():
  mu, sigma = 1.5, 0.5
  x1 = jnp.asarray(quantiles(20_001), jnp.float32)
  errors = []
  for steps in (10, 100, 1000):
    x0 = np.asarray(mmdit.euler_sample(gaussian_field(mu, sigma), x1, mmdit.euler_times(steps)))
    errors.append(abs(x0.mean() - mu) + abs(x0.std() - sigma))
    # a monotone map: the ODE keeps the samples' order
    assert np.all(np.diff(x0) > 0)
  assert errors[0] > errors[1] > errors[2] and errors[2] < 3e-3, errors
  # The straight coupling x0 = mu + sigma eps has the field (1 - sigma) eps - mu, constant
  # along each path: Euler is exact in any number of steps, on any grid.
  def straight(x, t):
    return (1 - sigma) * (x - (1 - t) * mu) / ((1 - t) * sigma + t) - mu
  for steps, shift in ((1, 1.0), (7, 3.0)):
    x0 = mmdit.euler_sample(straight, x1, mmdit.euler_times(steps, shift))
    np.testing.assert_allclose(x0, mu + sigma * x1, atol=2e-5)


def test_euler_times_run_from_one_to_zero_and_shift_toward_the_noise():
  np.testing.assert_allclose(mmdit.euler_times(4), [1, 0.75, 0.5, 0.25, 0])
  shifted = mmdit.euler_times(4, 3.0)
  assert shifted[0] == 1 and shifted[-1] == 0 and np.all(shifted[1:-1] > [0.75, 0.5, 0.25])
  with pytest.raises(ConfigError):
    mmdit.euler_times(0)


def test_logit_normal_sampler_has_its_density():
  for mean, std in ((0.0, 1.0), (0.5, 0.6)):
    t = np.asarray(mmdit.logit_normal(jax.random.key(0), (200_000,), mean, std))
    assert t.min() > 0 and t.max() < 1
    edges = np.linspace(0, 1, 21)
    hist = np.histogram(t, edges)[0] / len(t)
    fine = np.linspace(0, 1, 20_001)[1:-1]
    dens = mmdit.logit_normal_density(fine, mean, std)
    mass = np.array([dens[(fine >= a) & (fine < b)].sum() / 20_000
                     for a, b in zip(edges[:-1], edges[1:])])
    np.testing.assert_allclose(hist, mass, atol=4e-3)
    assert abs(dens.sum() / 20_000 - 1) < 1e-3
    np.testing.assert_allclose(np.median(t), 1 / (1 + np.exp(-mean)), atol=5e-3)


def test_joint_attention_matches_softmax_over_the_kept_keys():
  rng = np.random.default_rng(1)
  q, k, v = rng.normal(size=(3, 2, 5, 2, 4)).astype(np.float32)
  keep = np.array([[1, 1, 1, 0, 1], [1, 0, 1, 1, 0]], bool)
  out = np.asarray(mmdit.joint_attention(q, k, v, jnp.asarray(keep)))
  for b in range(2):
    for h in range(2):
      logits = q[b, :, h] @ k[b, :, h].T / 2.0
      logits[:, ~keep[b]] = -np.inf
      w = np.exp(logits - logits.max(-1, keepdims=True))
      w /= w.sum(-1, keepdims=True)
      np.testing.assert_allclose(out[b, :, h], w @ v[b, :, h], rtol=1e-5, atol=1e-6)


def random_variables(model, *args, seed=0):
  """The model's variables with arbitrary values (no zero-initialised layer left)."""
  rng = np.random.default_rng(seed)
  shapes = nn.meta.unbox(jax.eval_shape(lambda: model.init(jax.random.key(0), *args)))

  def fill(path, leaf):
    std = 1 / math.sqrt(math.prod(leaf.shape[:-1])) if path[-1].key == 'kernel' else 0.5
    return jnp.asarray(std * rng.standard_normal(leaf.shape), jnp.float32)

  return jax.tree_util.tree_map_with_path(fill, shapes)


@pytest.mark.parametrize('qk_norm', [False, True])
def test_text_padding_is_never_read_and_image_tokens_read_the_text(qk_norm):
  model = mmdit.Model(hidden_dim=16, depth=2, num_heads=2, patch_size=2, context_dim=6,
                      pooled_dim=5, qk_norm=qk_norm)
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.normal(size=(2, 4, 4, 3)), jnp.float32)
  t = jnp.asarray([100.0, 700.0])
  ctx = rng.normal(size=(2, 5, 6)).astype(np.float32)
  pooled = jnp.asarray(rng.normal(size=(2, 5)), jnp.float32)
  mask = jnp.asarray([[1, 1, 1, 0, 0], [1, 1, 0, 0, 0]], bool)
  variables = random_variables(model, x, t, jnp.asarray(ctx), pooled, mask)
  run = jax.jit(lambda c: model.apply(variables, x, t, c, pooled, mask))
  base = np.asarray(run(jnp.asarray(ctx)))
  padded = ctx.copy()
  padded[0, 3:] += 5.0 * rng.normal(size=(2, 6))
  padded[1, 2:] += 5.0 * rng.normal(size=(3, 6))
  np.testing.assert_array_equal(np.asarray(run(jnp.asarray(padded))), base)
  for row, pos in ((0, 2), (1, 0)):  # a real token of one row changes that row's image only
    real = ctx.copy()
    real[row, pos] += 1.0
    out = np.asarray(run(jnp.asarray(real)))
    assert np.abs(out[row] - base[row]).max() > 1e-3
    np.testing.assert_array_equal(out[1 - row], base[1 - row])


def test_word_captions_ignore_padding_and_streams_have_their_own_weights():
  model = mmdit.Model(**mmdit.VARIANTS['tiny'])
  x = jnp.zeros((1, 8, 8, 3))
  tokens = jnp.asarray([[1, 3, 9, 0, 0, 0, 0, 0]], jnp.int32)
  variables = random_variables(model, x, jnp.zeros((1,)), tokens)
  block = variables['params']['block0']
  for name in ('adaln', 'q', 'k', 'v', 'out', 'mlp'):
    assert f'x_{name}' in block and f'c_{name}' in block
  last = variables['params'][f'block{model.depth - 1}']
  assert 'c_out' not in last and 'c_mlp' not in last  # context pre-only
  assert last['c_adaln']['kernel'].shape[-1] == 2 * model.hidden_dim
  run = jax.jit(lambda tok: model.apply(variables, x, jnp.asarray([500.0]), tok))
  base = np.asarray(run(tokens))
  # the same caption, written shorter (a padded copy) gives the same image output
  np.testing.assert_allclose(np.asarray(run(tokens[:, :5])), base, atol=1e-5)
  assert np.abs(np.asarray(run(tokens.at[0, 1].set(4))) - base).max() > 1e-3
  # word order is seen: the same words in another order condition differently
  swapped = tokens[:, jnp.asarray([0, 2, 1, 3, 4, 5, 6, 7])]
  assert np.abs(np.asarray(run(swapped)) - base).max() > 1e-3


def test_at_init_the_output_is_zero():
  model = mmdit.Model(**mmdit.VARIANTS['tiny'])
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
  tokens = jnp.asarray([[1, 3, 9, 0, 0, 0, 0, 0]] * 2, jnp.int32)
  variables = model.init(jax.random.key(1), x, jnp.zeros((2,)), tokens)
  np.testing.assert_array_equal(model.apply(variables, x, jnp.asarray([3.0, 900.0]), tokens), 0)


def count(config):
  from train import core
  task = core.load_task(config)
  tree = jax.eval_shape(task.init, jax.random.key(0), task.example_batch(1))
  return sum(math.prod(v.shape) for v in jax.tree.leaves(nn.meta.unbox(tree)))


def test_sd3_medium_count_equals_diffusers():
  assert count(load_config('rectified_flow_shapes.py:variant=sd3-medium')) == SD3_MEDIUM
  assert count(load_config('rectified_flow_shapes.py:variant=sd3-medium',
                           model__qk_norm=True)) == SD3_MEDIUM_QK_NORM


@pytest.mark.parametrize('objective', ['rf', 'ddpm'])
def test_loss_is_the_objectives_formula(objective):
  from train import core
  config = load_config(f'{SPEC},objective={objective}', task_kwargs__cfg_dropout=0.0)
  task = core.load_task(config)
  b = 3
  rng = np.random.default_rng(3)
  batch = {'image': jnp.asarray(rng.integers(0, 256, (b, 32, 32, 3)), jnp.uint8),
           'tokens': jnp.asarray([[1, 3, 9, 0, 0, 0, 0, 0]] * b, jnp.int32)}
  model = mmdit.Model(**{**config.model, 'out_channels': 3})
  variables = random_variables(model, jnp.zeros((1, 32, 32, 3)), jnp.zeros((1,)),
                               batch['tokens'][:1])
  key = jax.random.key(4)
  value, (metrics, _) = task.loss(variables, batch, key)
  k_t, k_eps, _ = jax.random.split(key, 3)
  eps = np.asarray(jax.random.normal(k_eps, (b, 32, 32, 3)))
  x0 = np.asarray(batch['image'], np.float64) / 127.5 - 1
  if objective == 'rf':
    t = 1 / (1 + np.exp(-np.asarray(jax.random.normal(k_t, (b,)))))
    x_t = (1 - t[:, None, None, None]) * x0 + t[:, None, None, None] * eps
    net_t, want = 1000 * t, eps - x0
  else:
    from arch.generative import diffusion
    net_t = np.asarray(jax.random.randint(k_t, (b,), 0, 1000))
    abar = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))[net_t][:, None, None, None]
    x_t, want = np.sqrt(abar) * x0 + np.sqrt(1 - abar) * eps, eps
    assert diffusion.SAMPLERS == mmdit.SAMPLERS['ddpm']
  out = np.asarray(model.apply(variables, jnp.asarray(x_t, jnp.float32),
                               jnp.asarray(net_t, jnp.float32), batch['tokens']))
  np.testing.assert_allclose(value, ((out - want) ** 2).mean(), rtol=2e-4)
  assert metrics['loss'] == value


def test_prompts_are_tokenized_or_refused_in_one_line():
  from train import core
  task = core.load_task(load_config(SPEC))
  from train.datasets import caption_shapes as cs
  got = task.prompt_batch(['a red circle above a blue square', [1, 2, 8]], 2)['tokens']
  np.testing.assert_array_equal(got[0], cs.tokenize('a red circle above a blue square'))
  np.testing.assert_array_equal(got[1], [1, 2, 8, 0, 0, 0, 0, 0])
  default = task.prompt_batch(None, 200)['tokens']
  assert len({tuple(r) for r in default}) == 186  # every held-out caption, cycled
  for bad in ('a red hexagon above a blue square', 'a red circle above a blue square on the left'):
    with pytest.raises(ConfigError) as e:
      task.prompt_batch([bad], 1)
    assert '\n' not in str(e.value)


def test_sampler_rows_are_independent_and_guidance_changes_them():
  from train import core
  for objective, sampler in (('rf', 'euler'), ('ddpm', 'ddim'), ('ddpm', 'ddpm')):
    config = load_config(f'{SPEC},objective={objective}')
    task = core.load_task(config)
    model = mmdit.Model(**{**config.model, 'out_channels': 3})
    tokens = task.prompt_batch(None, 3)['tokens']
    variables = random_variables(model, jnp.zeros((1, 32, 32, 3)), jnp.zeros((1,)),
                                 jnp.asarray(tokens[:1]))
    run = jax.jit(lambda v, b, rows, g: task.sample(v, b, jax.random.key(5), row_ids=rows,
                                                    steps=3, sampler=sampler, guidance=g),
                  static_argnums=3)
    small = run(variables, {'tokens': tokens[1:2]}, jnp.asarray([1]), 2.0)['images']
    large = run(variables, {'tokens': tokens}, jnp.arange(3), 2.0)['images']
    assert small.dtype == jnp.uint8 and small.shape == (1, 32, 32, 3)
    np.testing.assert_array_equal(small[0], large[1])
    unguided = run(variables, {'tokens': tokens}, jnp.arange(3), 1.0)['images']
    assert np.any(np.asarray(unguided) != np.asarray(large))
  with pytest.raises(ConfigError):  # the ddpm task has no Euler sampler
    task.sample(variables, {'tokens': tokens}, jax.random.key(0), row_ids=jnp.arange(3),
                steps=2, sampler='euler')


def test_config_trains_resumes_and_samples_alike_on_one_and_eight_devices(tmp_path, data_dir):
  result = train_spec(SPEC, tmp_path / 'straight', data_dir, data__eval_split='test[:16]')
  assert set(result) == {'loss'} and np.isfinite(result['loss'])
  check_resumes_from_step_2(SPEC, train_spec, tmp_path, data_dir)
  workdir = tmp_path / 'straight'
  images = {}
  for devices in (1, 8):
    # text prompts through the CLI: --num_samples images of each, prompt by prompt
    proc = run_sample(['--config', f'configs/{SPEC}', '--workdir', workdir, '--num_samples', '3',
                       '--prompt', 'a red circle above a blue square', '--prompt',
                       'a cyan triangle left of a green circle', '--seed', '1',
                       f'--config.data.data_dir={data_dir}'], data_dir,
                      devices=devices)
    assert proc.returncode == 0, proc.stderr
    images[devices] = np.load(workdir / 'samples' / 'step4_seed1.npz')['images']
  assert images[1].shape == (6, 32, 32, 3)
  np.testing.assert_array_equal(images[1], images[8])
  assert os.path.isfile(workdir / 'samples' / 'step4_seed1.png')
