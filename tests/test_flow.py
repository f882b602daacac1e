"""Normalizing flows: every layer and both flows are exact bijections whose log-det equals
the brute-force log|det| of their Jacobian; actnorm's data-dependent init; the bits/dim of
a flow that is still the identity (in distribution) equals the closed form; samples depend
only on their row id; one real training step of each config through the loop."""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arch.generative import flow
from arch.task import ConfigError
from conftest import load_config as _config


def normal(*shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def random_variables(module, x, seed=0, **kw):
  """Variables of `module`'s structure holding arbitrary values (a bijection must stay one
  whatever its parameters): random parameters, random signed permutations as the 1x1
  convolutions' fixed parts, actnorm marked initialised. Built in numpy from
  `jax.eval_shape`, so nothing is compiled for the initialisers."""
  rng = np.random.default_rng(seed)
  shapes = nn.meta.unbox(jax.eval_shape(lambda: module.init(jax.random.key(0), x, **kw)))

  def fill(path, leaf):
    name, shape = path[-1].key, leaf.shape
    if name == 'perm':
      return jnp.asarray(np.eye(shape[0])[rng.permutation(shape[0])], jnp.float32)
    if name == 'sign':
      return jnp.asarray(rng.choice([-1.0, 1.0], shape), jnp.float32)
    if name == 'initialized':
      return jnp.ones(shape)
    std = 1 / math.sqrt(math.prod(shape[:-1])) if name == 'kernel' else 0.3
    return jnp.asarray(std * rng.standard_normal(shape), jnp.float32)

  return jax.tree_util.tree_map_with_path(fill, shapes)


def brute_force_logdet(fn, x):
  """log|det d fn(x) / dx| of a map of one example, from the full Jacobian."""
  flat = lambda v: fn(v.reshape(x.shape)).reshape(-1)
  sign, logabsdet = jax.jit(lambda v: jnp.linalg.slogdet(jax.jacfwd(flat)(v)))(x.reshape(-1))
  assert sign != 0
  return float(logabsdet)


def test_squeeze_is_a_permutation():
  x = normal(2, 4, 6, 3)
  s = flow.squeeze(x)
  assert s.shape == (2, 2, 3, 12)
  np.testing.assert_array_equal(s[0, 1, 2, :3], x[0, 2, 4])  # the block's top-left pixel
  np.testing.assert_array_equal(s[0, 1, 2, 9:], x[0, 3, 5])  # its bottom-right pixel
  np.testing.assert_array_equal(flow.unsqueeze(s), x)
  assert brute_force_logdet(flow.squeeze, x[:1]) == 0.0
  z, factored = flow.disassemble(x[:, :4, :4], 2)
  np.testing.assert_array_equal(flow.assemble(z, factored), x[:, :4, :4])


def test_masks():
  b = np.asarray(flow.checkerboard_mask(4, 4, 0))[0, :, :, 0]
  assert b.sum() == 8 and b[0, 0] == 1 and b[0, 1] == 0 and b[1, 1] == 1
  np.testing.assert_array_equal(np.asarray(flow.checkerboard_mask(4, 4, 1))[0, :, :, 0], 1 - b)
  np.testing.assert_array_equal(np.asarray(flow.channel_mask(4, 0)).ravel(), [1, 1, 0, 0])
  np.testing.assert_array_equal(np.asarray(flow.channel_mask(4, 1)).ravel(), [0, 0, 1, 1])


LAYERS = {
    'coupling_checkerboard_0': lambda: flow.Coupling('checkerboard', 0, hidden=8, num_blocks=1),
    'coupling_checkerboard_1': lambda: flow.Coupling('checkerboard', 1, hidden=8, num_blocks=1),
    'coupling_channel_0': lambda: flow.Coupling('channel', 0, hidden=8, num_blocks=1),
    'coupling_channel_1': lambda: flow.Coupling('channel', 1, hidden=8, num_blocks=1),
    'actnorm': flow.ActNorm,
    'invconv1x1': flow.InvConv1x1,
    'glow_coupling': lambda: flow.GlowCoupling(hidden=8),
    'glow_step': lambda: flow.GlowStep(hidden=8),
}


@pytest.mark.parametrize('name', sorted(LAYERS))
def test_layer_is_invertible_with_the_exact_logdet(name):
  layer = LAYERS[name]()
  x = normal(2, 4, 4, 4)
  variables = random_variables(layer, x)
  y, logdet = layer.apply(variables, x)
  assert y.shape == x.shape and logdet.shape == (2,)
  x_back, inv_logdet = layer.apply(variables, y, inverse=True)
  np.testing.assert_allclose(x_back, x, atol=1e-5)
  np.testing.assert_allclose(inv_logdet, -logdet, rtol=1e-5, atol=1e-5)
  assert float(jnp.abs(logdet).min()) > 0.1  # not volume-preserving: a real test
  expected = brute_force_logdet(lambda v: layer.apply(variables, v)[0], x[:1])
  np.testing.assert_allclose(float(logdet[0]), expected, rtol=1e-4, atol=1e-3)


def test_actnorm_data_init_normalises_the_first_batch_only():
  layer = flow.ActNorm()
  x = 3.0 + 2.0 * normal(32, 4, 4, 3) * jnp.arange(1, 4)
  variables = layer.init(jax.random.key(1), x)
  np.testing.assert_array_equal(layer.apply(variables, x)[0], x)  # identity before data
  (y, _), updates = layer.apply(variables, x, mutable=['actnorm'])
  np.testing.assert_allclose(y.mean((0, 1, 2)), 0.0, atol=1e-5)
  np.testing.assert_allclose(y.std((0, 1, 2)), 1.0, atol=1e-4)
  variables = {**variables, **updates}
  np.testing.assert_allclose(layer.apply(variables, x)[0], y, atol=1e-5)
  _, again = layer.apply(variables, 5 * x + 1, mutable=['actnorm'])  # a later batch
  jax.tree.map(np.testing.assert_array_equal, again, updates)
  # Under pmap the statistics are the whole batch's: two "devices" of 16 rows each.
  fresh = flow.ActNorm(axis_name='d').init(jax.random.key(1), x)
  per_device = jax.vmap(lambda xs: flow.ActNorm(axis_name='d').apply(
      fresh, xs, mutable=['actnorm'])[1], axis_name='d')(x.reshape(2, 16, 4, 4, 3))
  jax.tree.map(lambda d, u: np.testing.assert_allclose(d[1], u, rtol=1e-5, atol=1e-6),
               per_device, updates)


def test_invconv_starts_as_a_rotation():
  layer = flow.InvConv1x1()
  x = normal(2, 2, 2, 6)
  variables = layer.init(jax.random.key(1), x)
  y, logdet = layer.apply(variables, x)
  np.testing.assert_allclose(logdet, 0.0, atol=1e-5)
  np.testing.assert_allclose((y ** 2).sum(-1), (x ** 2).sum(-1), rtol=1e-5)


FLOWS = {
    'realnvp': lambda: flow.RealNVP(**flow.TINY_REALNVP),
    'glow': lambda: flow.Glow(**flow.TINY_GLOW),
    'glow_fixed_prior': lambda: flow.Glow(**flow.TINY_GLOW, learn_prior=False),
}
IMAGE = (8, 8, 1)  # the digits' shape, so every test shares the compiled ops


@functools.cache
def initialised(name):
  """(model, its init variables) on a batch of 2 images."""
  model = FLOWS[name]()
  return model, model.init(jax.random.key(1), jnp.zeros((2, *IMAGE)), method='forward')


@functools.cache
def trained(name):
  """(model, random variables): as if trained, actnorm initialised."""
  model = FLOWS[name]()
  return model, random_variables(model, jnp.zeros((2, *IMAGE)), method='forward')


@pytest.mark.parametrize('name', ['realnvp', 'glow'])
def test_flow_is_invertible_with_the_exact_logdet(name):
  model, variables = trained(name)
  x = normal(2, *IMAGE)
  z, logdet = model.apply(variables, x, method='forward')
  assert z.shape == x.shape and logdet.shape == (2,)
  np.testing.assert_allclose(model.apply(variables, z, method='inverse'), x, atol=1e-4)
  assert float(jnp.abs(logdet).min()) > 0.1
  expected = brute_force_logdet(lambda v: model.apply(variables, v, method='forward')[0],
                                x[:1])
  np.testing.assert_allclose(float(logdet[0]), expected, rtol=1e-4, atol=1e-3)


def closed_form_bits_per_dim(image, u, transform, alpha, num_bins):
  """bits/dim of 8-bit images under N(0, I) in the flow's input space, in numpy float64."""
  y = (np.floor(image.astype(np.float64) * num_bins / 256) + u) / num_bins
  if transform == 'logit':
    p = alpha + (1 - 2 * alpha) * y
    x = np.log(p / (1 - p))
    logdet = np.log(1 - 2 * alpha) - np.log(p) - np.log(1 - p)
  else:
    x, logdet = y - 0.5, np.zeros_like(y)
  d = image[0].size
  nll = (0.5 * x ** 2 + 0.5 * math.log(2 * math.pi) - logdet).reshape(len(image), -1).sum(1)
  return (nll + d * math.log(num_bins)) / (d * math.log(2))


@pytest.mark.parametrize('transform,num_bins', [('logit', 256), ('affine', 256),
                                                ('logit', 17)])
@pytest.mark.parametrize('name', sorted(FLOWS))
def test_bits_per_dim_of_an_untrained_flow_is_the_standard_normal_closed_form(
    name, transform, num_bins):
  # At init every coupling is the identity, actnorm is the identity (no data yet), the 1x1
  # convolutions are rotations and the learned priors N(0, I): the whole flow leaves
  # N(0, I) unchanged, so the likelihood is the closed form of the preprocessing alone.
  model, variables = initialised(name)
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (2, *IMAGE)).astype(np.uint8)
  u = rng.uniform(size=image.shape).astype(np.float32)
  bpd, _ = flow.bits_per_dim(model, variables, jnp.asarray(image), jnp.asarray(u),
                             transform, 0.05, num_bins)
  np.testing.assert_allclose(
      bpd, closed_form_bits_per_dim(image, u, transform, 0.05, num_bins), rtol=1e-5)


def test_17_bins_are_the_digits_pixel_values_one_to_one():
  values = np.round(np.arange(17) * 255 / 16).astype(np.uint8)  # the digits' pixels
  bins = flow.to_bins(jnp.asarray(values), 17)
  np.testing.assert_array_equal(bins, np.arange(17))
  np.testing.assert_array_equal(flow.from_bins(bins, 17), values)
  every = jnp.arange(256)
  np.testing.assert_array_equal(flow.from_bins(flow.to_bins(every, 256), 256), every)


def _task(model, **overrides):
  from train import loop
  from train import core
  return core.load_task(_config(f'flow_digits.py:tiny,model={model}', **overrides))


@pytest.mark.parametrize('model', ['realnvp', 'glow'])
def test_samples_and_eval_depend_only_on_their_row(model):
  task = _task(model)
  _, variables = trained(model)
  rng = jax.random.key(3)
  sample_fn = jax.jit(functools.partial(task.sample, temperature=0.7))
  sample = lambda rows: sample_fn(variables, task.prompt_batch(None, len(rows)), rng,
                                  row_ids=jnp.asarray(rows))['images']
  small, large = sample([1]), sample([0, 1, 2])
  assert small.dtype == jnp.uint8 and small.shape == (1, *IMAGE)
  np.testing.assert_array_equal(small[0], large[1])
  assert len({np.asarray(s).tobytes() for s in large}) == 3
  assert task.prompt_batch(None, 3)['row'].shape == (3,)
  images = np.random.default_rng(0).integers(0, 256, (2, *IMAGE)).astype(np.uint8)
  whole = task.evaluate(variables, {'image': jnp.asarray(images)})['bits_per_dim']
  part = task.evaluate(variables, {'image': jnp.asarray(images[::-1])})['bits_per_dim']
  assert whole.shape == (2,)
  np.testing.assert_allclose(part, whole[::-1], rtol=1e-5)  # noise follows the image


def test_the_loss_initialises_actnorm_from_the_first_batch():
  task = _task('glow')
  image = jnp.asarray(np.random.default_rng(0).integers(0, 256, (2, *IMAGE)), jnp.uint8)
  _, variables = initialised('glow')
  _, (metrics, updates) = task.loss(variables, {'image': image}, jax.random.key(1))
  assert set(updates) == {'actnorm', 'consts'} and np.isfinite(metrics['loss'])
  assert all(float(f) == 1.0 for f in jax.tree.leaves(
      jax.tree.map(lambda d: d['initialized'], updates['actnorm'],
                   is_leaf=lambda d: 'initialized' in d)))
  jax.tree.map(np.testing.assert_array_equal, updates['consts'], variables['consts'])


def test_bad_config_values_fail_clearly():
  from train.errors import UserError
  with pytest.raises(UserError, match="valid: logit, affine"):
    _task('realnvp', task_kwargs__transform='sigmoid')
  with pytest.raises(UserError, match='multiples of 4'):
    _task('glow', task_kwargs__input_size=(6, 6))
  with pytest.raises(UserError, match=r'num_bins must be an int in \[2, 256\]'):
    _task('realnvp', task_kwargs__num_bins=1)
  with pytest.raises(UserError, match='num_levels >= 1'):
    _task('glow', model__num_levels=0)
  config = _config('vit_digits.py:tiny')
  with config.unlocked():
    config.task_kwargs = {}  # classification's options; a flow reads its own
  with pytest.raises(ConfigError, match='valid: generative.flow'):
    flow.make(config)


@pytest.mark.parametrize('model', ['realnvp', 'glow'])
def test_digits_config_trains(tmp_path, data_dir, model):
  from train import loop
  from train import core
  config = _config(f'flow_digits.py:tiny,model={model}', total_steps=2, eval_every=2,
                   log_every=1, data__data_dir=data_dir)
  result = loop.train_and_evaluate(config, str(tmp_path))
  assert set(result) == {'bits_per_dim'}
  assert 1.0 < result['bits_per_dim'] < 12.0
