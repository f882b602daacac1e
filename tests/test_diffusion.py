"""Diffusion (DDPM/DDIM objective and the diffusion U-Net): the forward process iterated step
by step is the closed form; the schedules are their formulas; eps/x0/v convert into each
other; DDIM with eta = 1 is DDPM's ancestral step (every t, and through the sampler with all
or respaced steps); guidance 1 / 0 is the conditional / unconditional model; the decoder's
256 bins are a distribution and a perfect model's KL is zero; SD-1.5's U-Net has diffusers'
parameter count; samples and evals depend on their row / image alone; one real training
step and sampling through the loop and the sampler driver."""

import functools
import math
import os

import flax.linen as nn

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arch.generative import diffusion as d
from arch.layers.embed import timestep_embedding
from arch.generative import diffusion_unet as du
from conftest import REPO, load_config as _config

IMAGE = (8, 8, 1)


def normal(*shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def random_variables(init, *args, seed=0):
  """Variables shaped as `init(rng, *args)` makes them, every one a scaled normal draw (so
  the zero-initialised output convs do not hide the label, context or timestep), drawn in
  numpy: compiling the initialisers costs more than the tests on CPU."""
  shapes = nn.meta.unbox(jax.eval_shape(init, jax.random.key(0), *args))
  rng = np.random.default_rng(seed)

  def draw(s):
    fan_in = int(np.prod(s.shape[:-1])) if len(s.shape) > 1 else 1
    return jnp.asarray(rng.standard_normal(s.shape) / np.sqrt(fan_in), s.dtype)
  return jax.tree.map(draw, shapes)


# ------------------------------------------------------------------ schedules, algebra


@pytest.mark.parametrize('schedule', d.SCHEDULES)
def test_forward_process_iterated_step_by_step_is_the_closed_form(schedule):
  # x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) z_t from x_0: x_t = a_t x_0 + sum_s c_s z_s
  # with independent z_s, so a_t must be sqrt(abar_t) and sum_s c_s^2 must be 1 - abar_t.
  betas = d.beta_schedule(schedule, 1000)
  abar = d.alphas_cumprod(betas)
  a, c2 = 1.0, 0.0
  for t, beta in enumerate(betas):
    a, c2 = a * math.sqrt(1 - beta), (1 - beta) * c2 + beta
    if t in (0, 1, 10, 500, 999):
      assert a == pytest.approx(math.sqrt(abar[t]), rel=1e-10)
      assert c2 == pytest.approx(1 - abar[t], rel=1e-10)
  # And by simulation: 4000 chains of the Markov process against q_sample's moments.
  rng = np.random.default_rng(0)
  x0 = np.full(4000, 0.7)
  x = x0.copy()
  for beta in betas[:300]:
    x = np.sqrt(1 - beta) * x + np.sqrt(beta) * rng.standard_normal(x.shape)
  closed = np.asarray(d.q_sample(jnp.asarray(x0, jnp.float32), normal(4000, seed=1),
                                 jnp.float32(abar[299])))
  for sample in (x, closed):
    assert sample.mean() == pytest.approx(0.7 * math.sqrt(abar[299]), abs=0.05)
    assert sample.var() == pytest.approx(1 - abar[299], rel=0.08)


def test_schedules_are_their_formulas():
  lin = d.beta_schedule('linear', 1000)
  assert lin[0] == pytest.approx(1e-4) and lin[-1] == pytest.approx(0.02)
  short = d.beta_schedule('linear', 100)  # scaled by 1000 / T (Improved DDPM)
  assert short[0] == pytest.approx(1e-3) and short[-1] == pytest.approx(0.2)
  cos = d.beta_schedule('cosine', 1000)
  f = lambda t: math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2
  abar = d.alphas_cumprod(cos)
  for t in (0, 1, 100, 500, 900, 990):
    assert abar[t] == pytest.approx(f(t + 1) / f(0), rel=1e-9)
  assert cos.max() == pytest.approx(0.999) and (cos <= 0.999).all()  # the clip, at the end
  assert (np.diff(abar) < 0).all() and abar[-1] < 1e-4


@pytest.mark.parametrize('prediction', d.PREDICTIONS)
def test_predictions_convert_into_each_other(prediction):
  x0, eps = normal(3, *IMAGE, seed=1), normal(3, *IMAGE, seed=2)
  abar = jnp.asarray([0.9999, 0.5, 0.01], jnp.float32)[:, None, None, None]
  x_t = d.q_sample(x0, eps, abar)
  got_x0, got_eps = d.to_x0_eps(d.target(x0, eps, abar, prediction), x_t, abar, prediction)
  np.testing.assert_allclose(got_x0, x0, atol=2e-4)
  np.testing.assert_allclose(got_eps, eps, atol=2e-4)
  v = d.target(x0, eps, abar, 'v')  # v = sqrt(abar) eps - sqrt(1 - abar) x0
  np.testing.assert_allclose(v, jnp.sqrt(abar) * eps - jnp.sqrt(1 - abar) * x0, atol=1e-6)
  np.testing.assert_allclose(d.eps_from_x0(x_t, x0, abar), eps, atol=2e-4)


@pytest.mark.parametrize('schedule', d.SCHEDULES)
def test_ddim_with_eta_one_is_the_ddpm_step_at_every_t(schedule):
  abar_T = d.alphas_cumprod(d.beta_schedule(schedule, 1000))
  s = d.spaced(abar_T, np.arange(1000))
  abar, prev = s.abar[:, None, None, None], s.abar_prev[:, None, None, None]
  x0, x_t, z = (normal(1000, *IMAGE, seed=k) for k in range(3))
  eps = d.eps_from_x0(x_t, x0, abar)
  ddpm = d.ddpm_step(x_t, x0, abar, prev, z)
  ddim = d.ddim_step(x_t, x0, eps, abar, prev, 1.0, z)
  np.testing.assert_allclose(ddim, ddpm, atol=2e-4, rtol=1e-4)
  np.testing.assert_allclose(ddpm[0], x0[0], atol=1e-6)  # the last step returns x0
  # The posterior is q(x_{t-1} | x_t, x0) by Bayes: its variance is beta~ and its mean
  # weights are the DDPM paper's (eq. 7), here written out in float64.
  b = d.beta_schedule(schedule, 1000)
  t, ab, abp = 500, abar_T[500], abar_T[499]
  mean, var = d.posterior(x_t[t], x0[t], jnp.float32(ab), jnp.float32(abp))
  np.testing.assert_allclose(var, b[t] * (1 - abp) / (1 - ab), rtol=1e-4)
  expect = (math.sqrt(abp) * b[t] / (1 - ab) * np.asarray(x0[t], np.float64)
            + math.sqrt(1 - b[t]) * (1 - abp) / (1 - ab) * np.asarray(x_t[t], np.float64))
  np.testing.assert_allclose(mean, expect, atol=1e-5)
  # eta = 0 is deterministic: the noise does not enter.
  np.testing.assert_array_equal(d.ddim_step(x_t, x0, eps, abar, prev, 0.0, z),
                                d.ddim_step(x_t, x0, eps, abar, prev, 0.0, 2 * z))


def test_guidance_one_is_conditional_and_zero_unconditional():
  cond, uncond = normal(2, 8, 8, 2, seed=1), normal(2, 8, 8, 2, seed=2)
  np.testing.assert_allclose(d.guided(cond, uncond, 1.0, 1), cond, atol=1e-6)
  np.testing.assert_allclose(d.guided(cond, uncond, 0.0, 1), jnp.concatenate(
      [uncond[..., :1], cond[..., 1:]], -1))  # a learned variance stays conditional
  np.testing.assert_allclose(d.guided(cond, uncond, 3.0, 1)[..., 0],
                             uncond[..., 0] + 3 * (cond[..., 0] - uncond[..., 0]), atol=1e-6)


def test_decoder_bins_are_a_distribution_and_a_perfect_model_has_zero_kl():
  levels = jnp.arange(256, dtype=jnp.float32) / 127.5 - 1.0
  for mean, log_scale in ((0.3, -3.0), (-0.99, -1.0), (0.0, 1.5)):
    logp = d.discretized_gaussian_log_likelihood(levels, jnp.float32(mean),
                                                 jnp.float32(log_scale))
    assert float(jnp.exp(logp).sum()) == pytest.approx(1.0, abs=1e-4)
  x0, x_t = normal(2, *IMAGE, seed=1), normal(2, *IMAGE, seed=2)
  abar, prev = jnp.float32(0.5), jnp.float32(0.6)
  _, var = d.posterior(x_t, x0, abar, prev)
  kl = d.vlb_term(x0, x_t, x0, jnp.log(var), abar, prev, jnp.zeros(2, bool))
  np.testing.assert_allclose(kl, 0.0, atol=1e-6)
  worse = d.vlb_term(x0, x_t, x0 + 0.1, jnp.log(var), abar, prev, jnp.zeros(2, bool))
  shift = math.sqrt(0.6) * (1 - 0.5 / 0.6) / 0.5 * 0.1  # the posterior mean's x0 weight
  np.testing.assert_allclose(worse, 0.5 * shift ** 2 / var / math.log(2), rtol=1e-3)
  # Sampler timesteps: distinct, from 0 to T - 1, all of them for S = T.
  np.testing.assert_array_equal(d.sampler_timesteps(1000, 1000), np.arange(1000))
  ts = d.sampler_timesteps(1000, 50)
  assert ts[0] == 0 and ts[-1] == 999 and len(set(ts)) == 50


# ------------------------------------------------------------------------------ U-Net


def count(model, shape, **kw):
  tree = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, *shape)),
                                           jnp.zeros((1,)), **kw))
  return sum(math.prod(v.shape) for v in jax.tree.leaves(nn.meta.unbox(tree)))


def test_sd15_unet_has_diffusers_parameter_count():
  # diffusers 0.42 UNet2DConditionModel(sample_size=64, in_channels=4, out_channels=4,
  # cross_attention_dim=768, block_out_channels=(320, 640, 1280, 1280), down_block_types=
  # 3 x CrossAttnDownBlock2D + DownBlock2D, up_block_types=UpBlock2D + 3 x
  # CrossAttnUpBlock2D, layers_per_block=2, attention_head_dim=8): sum(p.numel()).
  model = du.UNet(**du.VARIANTS['sd15'])
  assert count(model, (64, 64, 4), context_BSE=jnp.zeros((1, 77, 768))) == 859_520_964


def test_timestep_embedding_is_cos_then_sin():
  emb = timestep_embedding(jnp.asarray([0.0, 7.0]), 8)
  freqs = 10_000.0 ** (-np.arange(4) / 4)
  np.testing.assert_allclose(emb[1], np.concatenate([np.cos(7 * freqs), np.sin(7 * freqs)]),
                             rtol=1e-5)
  np.testing.assert_array_equal(emb[0], [1, 1, 1, 1, 0, 0, 0, 0])


def test_tiny_unet_shapes_and_its_conditioning():
  model = du.UNet(**dict(du.VARIANTS['tiny'], context_dim=6, out_channels=3), num_classes=10)
  x, t = normal(2, 8, 8, 2), jnp.asarray([3.0, 900.0])
  label, ctx = jnp.asarray([1, 10], jnp.int32), normal(2, 5, 6, seed=3)
  variables = random_variables(model.init, x, t, label, ctx)
  fn = jax.jit(lambda v, x, t, l, c: model.apply(v, x, t, l, c))
  out = fn(variables, x, t, label, ctx)
  assert out.shape == (2, 8, 8, 3) and bool(jnp.isfinite(out).all())
  assert variables['params']['class_embed']['embedding'].shape == (11, 32)  # + the null row
  for changed in (fn(variables, x, t + 5, label, ctx), fn(variables, x, t, label[::-1], ctx),
                  fn(variables, x, t, label, ctx + 1)):
    assert (np.abs(np.asarray(changed - out)).reshape(2, -1).max(1) > 1e-4).all()
  zero_init = jax.jit(model.init)(jax.random.key(0), x, t, label, ctx)
  np.testing.assert_array_equal(fn(zero_init, x, t, label, ctx), 0.0)  # zero output conv
  with pytest.raises(ValueError, match='multiples of 2'):
    model.apply(variables, normal(1, 7, 7, 2), t[:1], label[:1], ctx[:1])


# ------------------------------------------------------------------------ the objective


@functools.cache
def task_and_variables(spec='tiny', **overrides):
  from train import loop
  from train import core
  config = _config(f'ddpm_digits.py:{spec}', **overrides)
  task = core.load_task(config)
  batch = {k: jnp.zeros(v.shape, v.dtype) for k, v in task.example_batch(2).items()}
  return task, random_variables(task.init, batch)


def _sample(task, variables, rows, seed=0, labels=None, **options):
  batch = task.prompt_batch(None, len(rows))
  if labels is not None:
    batch = {'label': np.asarray(labels, np.int32)}
  fn = _jitted_sample(task, tuple(sorted(options.items())))
  return fn(variables, batch, jax.random.key(seed), row_ids=jnp.asarray(rows))['images']


@functools.cache
def _jitted_sample(task, options):
  return jax.jit(functools.partial(task.sample, **dict(options)))


def test_ddim_eta_one_sampler_is_the_ddpm_sampler():
  # 50 timesteps: every step, then 5 respaced ones; the same noise draws in both.
  task, variables = task_and_variables(task_kwargs__num_timesteps=50)
  for steps in (50, 5):
    ddpm = _sample(task, variables, [0, 1], steps=steps, sampler='ddpm')
    ddim = _sample(task, variables, [0, 1], steps=steps, sampler='ddim', eta=1.0)
    assert np.abs(ddpm.astype(int) - ddim.astype(int)).max() <= 1  # uint8 rounding
  det = _sample(task, variables, [0, 1], steps=5, sampler='ddim', eta=0.0)
  assert np.abs(det.astype(int) - ddpm.astype(int)).max() > 1  # not the same sampler


def test_guided_sampling_interpolates_conditional_and_unconditional():
  task, variables = task_and_variables('tiny,conditional')
  rows, labels = [0, 1, 2], [3, 5, 7]
  null = [10] * 3  # the null class: the unconditional model
  kw = dict(steps=4, sampler='ddim')
  cond = _sample(task, variables, rows, labels=labels, guidance=1.0, **kw)
  uncond = _sample(task, variables, rows, labels=null, guidance=1.0, **kw)
  assert np.abs(cond.astype(int) - uncond.astype(int)).max() > 2  # labels matter
  np.testing.assert_allclose(_sample(task, variables, rows, labels=labels, guidance=0.0, **kw),
                             uncond, atol=1)
  strong = _sample(task, variables, rows, labels=labels, guidance=3.0, **kw)
  assert np.abs(strong.astype(int) - cond.astype(int)).max() > 2


@pytest.mark.parametrize('spec', ['tiny', 'tiny,conditional'])
def test_samples_and_evals_depend_only_on_their_row(spec):
  task, variables = task_and_variables(spec)
  small, large = _sample(task, variables, [1]), _sample(task, variables, [0, 1, 2])
  assert small.dtype == jnp.uint8 and small.shape == (1, *IMAGE)
  np.testing.assert_array_equal(small[0], large[1])
  assert len({np.asarray(s).tobytes() for s in large}) == 3
  images = np.random.default_rng(0).integers(0, 256, (3, *IMAGE)).astype(np.uint8)
  batch = {'image': jnp.asarray(images), 'label': jnp.asarray([1, 2, 3], jnp.int32)}
  flip = {k: v[::-1] for k, v in batch.items()}
  evaluate = jax.jit(task.evaluate)
  whole, part = evaluate(variables, batch), evaluate(variables, flip)
  assert set(whole) == {'loss', 'bits_per_dim'} and whole['loss'].shape == (3,)
  for k in whole:
    np.testing.assert_allclose(part[k], whole[k][::-1], rtol=1e-4)


def test_loss_is_the_target_mse_and_learned_variance_adds_the_bound():
  image = jnp.asarray(np.random.default_rng(0).integers(0, 256, (4, *IMAGE)), jnp.uint8)
  batch = {'image': image, 'label': jnp.zeros(4, jnp.int32)}
  from train import loop
  from train import core
  for prediction in d.PREDICTIONS:
    config = _config(f'ddpm_digits.py:tiny,prediction={prediction}')
    task = core.load_task(config)
    variables = task.init(jax.random.key(0), batch)  # zero output at init
    value, (metrics, _) = task.loss(variables, batch, jax.random.key(1))  # eager: no compile
    # A zero prediction's MSE: E[eps^2] = 1 for eps; E[x0^2] for x0; in between for v.
    x0_sq = float((d.to_unit(image) ** 2).mean())
    expect = {'eps': (0.7, 1.3), 'x0': (x0_sq - 1e-5, x0_sq + 1e-5), 'v': (x0_sq - 0.3, 1.3)}
    lo, hi = expect[prediction]
    assert lo < float(value) < hi and set(metrics) == {'loss', 'mse'}
  config = _config('ddpm_digits.py:tiny', task_kwargs__variance='learned_range')
  task = core.load_task(config)
  variables = task.init(jax.random.key(0), batch)
  assert nn.meta.unbox(variables['params']['conv_out']['kernel']).shape[-1] == 2  # eps and the variance
  value, (metrics, _) = task.loss(variables, batch, jax.random.key(1))
  assert float(value) == pytest.approx(float(metrics['mse'] + 0.001 * metrics['vlb']), rel=1e-5)
  assert float(metrics['vlb']) > 0
  images = _sample(task, variables, [0, 1], steps=4, sampler='ddpm')
  assert images.shape == (2, *IMAGE)


def test_bad_config_values_fail_clearly():
  from train.errors import UserError
  from train import loop
  from train import core
  with pytest.raises(UserError, match='valid: linear, cosine'):
    _config('ddpm_digits.py:schedule=quadratic')
  with pytest.raises(UserError, match='valid: eps, v, x0'):
    core.load_task(_config('ddpm_digits.py:tiny', task_kwargs__prediction='score'))
  task, variables = task_and_variables()
  with pytest.raises(Exception, match='valid: ddim, ddpm'):
    _sample(task, variables, [0], sampler='euler')


def test_digits_config_trains_and_samples(tmp_path, data_dir):
  from train import loop
  from train import sample as sample_lib
  config = _config('ddpm_digits.py:tiny,conditional,prediction=v,schedule=cosine', total_steps=2, eval_every=2, log_every=1,
                   ckpt_every=2, data__data_dir=data_dir)
  result = loop.train_and_evaluate(config, str(tmp_path))
  assert set(result) == {'loss', 'bits_per_dim'} and np.isfinite(result['loss'])
  spec = os.path.join(REPO, 'configs/ddpm_digits.py:tiny,conditional,prediction=v,schedule=cosine')

  def parsed(*flags, spec=spec):
    return sample_lib.parse(['--config', spec, '--workdir', str(tmp_path), '--num_samples',
                             '5', *flags])

  *_, n, seed, options = parsed()
  # The options are the task sampler's keyword parameters, defaulting to config.sample.
  assert options == {k: config.sample[k] for k in ('steps', 'sampler', 'eta', 'guidance')}
  step, outputs = sample_lib.sample_arrays(config, str(tmp_path), n, seed, options)
  assert step == 2 and outputs['images'].shape == (5, *IMAGE)
  assert outputs['images'].dtype == np.uint8
  # The sampler driver's --sampler/--eta/--guidance flags reach the task's sampler: they
  # give what the same settings in config.sample give, and change the samples.
  from train.errors import UserError
  *_, flags = parsed('--sampler', 'ddim', '--eta', '1', '--guidance', '0')
  assert (flags['sampler'], flags['eta'], flags['guidance']) == ('ddim', 1.0, 0.0)
  by_flags = sample_lib.sample_arrays(config, str(tmp_path), n, seed, flags)[1]['images']
  set_config = config.copy_and_resolve_references()
  set_config.sample.update(sampler='ddim', eta=1.0, guidance=0.0)
  by_config = sample_lib.sample_arrays(set_config, str(tmp_path), n, seed, {})[1]
  np.testing.assert_array_equal(by_flags, by_config['images'])
  assert not np.array_equal(by_flags, outputs['images'])
  with pytest.raises(UserError, match='unknown sampler'):
    sample_lib.sample_arrays(config, str(tmp_path), n, seed, dict(options, sampler='euler'))
  # A flag the task's sampler does not name is refused with the ones it does.
  with pytest.raises(UserError, match='--guidance: this task.s sampler takes no guidance; '
                                      'its options: --temperature'):
    parsed('--guidance', '2', spec=os.path.join(REPO, 'configs/flow_digits.py:tiny'))
