"""Autoregressive image models (FVSBN, NADE, PixelCNN, Gated PixelCNN, PixelCNN++'s
output): causality and receptive fields through gradients, exact normalisation, NADE's
running sum against the naive forward, samples that follow the model's own distribution
and depend on their row id only, and each config through the loop."""

import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arch.generative import autoregressive as ar
from arch.generative import pixelcnn as pc
from arch.task import ConfigError
from conftest import load_config as _config


def _random_variables(init, *args, seed=0, scale=1.0):
  """Variables shaped as `init(rng, *args)` makes them, every one a normal draw (scaled by
  1/sqrt(fan-in)), so no structural zero hides by accident. Drawn with numpy: compiling
  the init's random number generators costs far more than the tests themselves on CPU."""
  shapes = nn.meta.unbox(jax.eval_shape(init, jax.random.key(0), *args))
  rng = np.random.default_rng(seed)

  def draw(s):
    fan_in = int(np.prod(s.shape[:-1])) if len(s.shape) > 1 else 1
    return jnp.asarray(scale * rng.standard_normal(s.shape) / np.sqrt(fan_in), s.dtype)
  return jax.tree.map(draw, shapes)


# ------------------------------------------------------------------ causality via gradients


@pytest.mark.parametrize('name', ['gated', 'pixelcnn'])
def test_pixelcnn_sees_exactly_the_past(name):
  cls, kw = (pc.GatedPixelCNN, pc.TINY) if name == 'gated' else (pc.PixelCNN, pc.TINY_PIXELCNN)
  model = cls(**kw)
  x = jax.random.uniform(jax.random.key(0), (1, 8, 8, 1), minval=-1, maxval=1)
  variables = _random_variables(model.init, x)
  # J[i, j, a, b] = d(sum of the outputs at (i, j)) / d(pixel (a, b)).
  jac = jax.jacrev(lambda x: model.apply(variables, x)[0].sum(-1))(x)
  jac = np.abs(np.asarray(jac[:, :, 0, :, :, 0])).reshape(64, 64)
  past = np.tril(np.ones((64, 64), bool), k=-1)  # [p, q]: q before p in raster order
  assert (jac[~past] == 0).all()  # nothing at or after the position itself
  if name == 'gated':
    # No blind spot: every earlier pixel of the 8x8 image reaches every position.
    assert (jac[past] != 0).all()
    assert jac[3 * 8 + 3, 2 * 8 + 7] != 0  # up and four to the right
  else:
    assert all((jac[p, :p] != 0).any() for p in range(1, 64))
    # The original PixelCNN's blind spot: (i - 1, j + 4) never reaches (i, j) (a 7x7 mask A
    # then 3x3 mask B layers only move right while moving up), though (i - 1, j + 3) does.
    assert jac[3 * 8 + 3, 2 * 8 + 7] == 0 and jac[3 * 8 + 3, 2 * 8 + 6] != 0


@pytest.mark.parametrize('name', ['gated', 'pixelcnn'])
@pytest.mark.parametrize('output', ['softmax', 'logistic_mix'])
def test_colour_pixelcnn_sees_the_past_and_the_pixels_earlier_colours(name, output):
  """RGB: with the softmax, colour c of pixel p reads the pixels before p and colours < c
  of p itself (masked colour groups); the mixture reads only whole earlier pixels."""
  cls, kw = (pc.GatedPixelCNN, pc.TINY) if name == 'gated' else (pc.PixelCNN, pc.TINY_PIXELCNN)
  model = cls(**dict(kw, output=output, features=12))  # 12 features: 4 per colour group
  h = w = 4
  x = jax.random.uniform(jax.random.key(0), (3, h, w, 3), minval=-1, maxval=1)
  variables = _random_variables(model.init, x)
  out_dim = pc.output_features(output, model.num_mixtures, 3)
  assert model.apply(variables, x).shape == (3, h, w, out_dim)
  # The outputs of one colour (softmax: its 256 logits; the mixture: all of them, one group)
  # share their inputs, so each group's outputs are folded into one by random weights: a
  # path to any output of the group survives the fold unless the weights cancel it
  # exactly (probability 0), and the Jacobian has 3 rows a pixel instead of out_dim.
  groups = 3 if output == 'softmax' else 1
  fold = jax.random.normal(jax.random.key(1), (groups, out_dim // groups))
  folded = lambda x: jnp.einsum('hwgo,go->hwg', model.apply(variables, x).sum(0).reshape(
      h, w, groups, -1), fold)
  # J[(i, j), g, (a, b), c'] = |d(folded output g at (i, j)) / d(pixel (a, b), colour c')|,
  # summed over 3 inputs (so a ReLU that happens to be off at one does not hide a path).
  jac = jax.jit(jax.jacrev(folded))(x)
  reach = np.abs(np.asarray(jac)).sum(3).reshape(h * w, groups, h * w, 3)
  past = np.tril(np.ones((h * w, h * w), bool), k=-1)  # [p, q]: q before p
  if output == 'softmax':
    earlier = np.arange(3)[:, None] > np.arange(3)[None]  # [g, c']: c' before colour g
    allowed = (past[:, None, :, None]
               | (np.eye(h * w, dtype=bool)[:, None, :, None] & earlier[None, :, None, :]))
  else:
    allowed = np.broadcast_to(past[:, None, :, None], reach.shape)
  assert (reach[~allowed] == 0).all()
  if output == 'softmax':  # each colour really reads the pixel's earlier colours
    for p in range(h * w):
      assert reach[p, 1, p, 0] and reach[p, 2, p, 0] and reach[p, 2, p, 1], p
  if name == 'gated':  # no blind spot: every allowed input reaches every output
    assert (reach[allowed] != 0).all()
  else:
    assert (reach[allowed] != 0).mean() > 0.5


def test_rgb_mixture_couples_channels_and_its_conditionals_chain_to_the_joint():
  """PixelCNN++'s RGB mixture: each channel's conditional is a distribution over the 256
  levels, their chain-rule product is the joint `log_prob`, and with one component the
  blue conditional is the discretized logistic at mu_b + tanh(a_br) x_r + tanh(a_bg) x_g."""
  n, m = 300, 4
  rng = np.random.default_rng(0)
  params = jnp.asarray(np.concatenate([
      2 * rng.standard_normal((n, m)), rng.uniform(-1.3, 1.3, (n, 3 * m)),
      rng.uniform(-6.0, 0.5, (n, 3 * m)), 2 * rng.standard_normal((n, 3 * m))], -1),
      jnp.float32)
  assert params.shape[-1] == pc.output_features('logistic_mix', m, 3) == 10 * m
  levels = jnp.asarray(rng.integers(0, 256, (n, 3)), jnp.int32)
  cond = jax.jit(pc.channel_log_probs, static_argnums=(2, 3))
  chain = 0.0
  for c in range(3):
    logp = np.asarray(cond(params, levels, c, 'logistic_mix'), np.float64)
    np.testing.assert_allclose(np.exp(logp).sum(-1), 1.0, atol=1e-4)
    chain = chain + logp[np.arange(n), np.asarray(levels[:, c])]
  joint = np.asarray(jax.jit(pc.log_prob, static_argnums=2)(params, levels, 'logistic_mix'))
  np.testing.assert_allclose(joint, chain, rtol=1e-4, atol=1e-4)
  # One component: the coupled means, by hand.
  one = np.asarray(params[:, [0, 4, 8, 12, 16, 20, 24, 28, 32, 36]])  # component 0's ten
  x = np.asarray(levels, np.float64) / 127.5 - 1
  mean_b = one[:, 3] + np.tanh(one[:, 8]) * x[:, 0] + np.tanh(one[:, 9]) * x[:, 1]
  grey = np.stack([np.zeros(n), mean_b, one[:, 6]], -1)  # a grey pixel's 3 M outputs
  np.testing.assert_allclose(
      cond(jnp.asarray(one, jnp.float32), levels, 2, 'logistic_mix'),
      jax.jit(pc.level_log_probs, static_argnums=1)(jnp.asarray(grey, jnp.float32),
                                                    'logistic_mix'), rtol=1e-4, atol=1e-4)
  mean_g = one[:, 2] + np.tanh(one[:, 7]) * x[:, 0]
  grey = np.stack([np.zeros(n), mean_g, one[:, 5]], -1)
  np.testing.assert_allclose(
      cond(jnp.asarray(one, jnp.float32), levels, 1, 'logistic_mix'),
      jax.jit(pc.level_log_probs, static_argnums=1)(jnp.asarray(grey, jnp.float32),
                                                    'logistic_mix'), rtol=1e-4, atol=1e-4)


def test_gated_pixelcnn_is_class_conditional_at_every_pixel():
  model = pc.GatedPixelCNN(**pc.TINY, num_classes=10)
  x = jnp.zeros((2, 8, 8, 1))
  variables = _random_variables(model.init, x, jnp.array([0, 0]))
  out = model.apply(variables, x, jnp.array([3, 7]))
  assert (np.abs(np.asarray(out[0] - out[1])).sum(-1) > 0).all()  # even the first pixel


@pytest.mark.parametrize('cls', [ar.FVSBN, ar.NADE])
def test_binary_models_see_exactly_the_past(cls):
  model = cls(num_pixels=10, **({'hidden': 6} if cls is ar.NADE else {}))
  x = jax.random.bernoulli(jax.random.key(0), 0.5, (1, 10)).astype(jnp.float32)
  variables = _random_variables(model.init, x)
  jac = np.abs(np.asarray(jax.jacrev(lambda x: model.apply(variables, x)[0])(x)[:, 0]))
  past = np.tril(np.ones((10, 10), bool), k=-1)
  assert (jac[~past] == 0).all() and (jac[past] != 0).all()


# ------------------------------------------------------------------------- likelihoods


def test_nade_running_sum_equals_the_naive_forward():
  d, k = 12, 7
  model = ar.NADE(num_pixels=d, hidden=k)
  x = jax.random.bernoulli(jax.random.key(0), 0.4, (3, d)).astype(jnp.float32)
  params = _random_variables(model.init, x)['params']
  got = np.asarray(model.apply({'params': params}, x))
  w, c, v, b = (np.asarray(params[n], np.float64) for n in ('W', 'c', 'V', 'b'))
  xs = np.asarray(x, np.float64)
  want = np.zeros((3, d))
  for i in range(d):  # one hidden layer per conditional, from scratch: O(D^2 K)
    h = 1 / (1 + np.exp(-(c + xs[:, :i] @ w[:i])))
    want[:, i] = b[i] + h @ v[i]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('cls', [ar.FVSBN, ar.NADE])
def test_exact_likelihood_sums_to_one_over_all_images(cls):
  d = 5
  model = cls(num_pixels=d, **({'hidden': 4} if cls is ar.NADE else {}))
  every_x = jnp.asarray(list(itertools.product([0.0, 1.0], repeat=d)))  # all 2^D images
  variables = _random_variables(model.init, every_x, scale=2.0)
  log_p = ar.log_likelihood(model.apply(variables, every_x), every_x)
  np.testing.assert_allclose(jax.nn.logsumexp(log_p), 0.0, atol=1e-5)
  assert float(jnp.exp(log_p).max()) < 0.9  # not trivially concentrated


def _mixture_params(n, m, seed=0):
  k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
  return jnp.concatenate([2 * jax.random.normal(k1, (n, m)),
                          jax.random.uniform(k2, (n, m), minval=-1.3, maxval=1.3),
                          jax.random.uniform(k3, (n, m), minval=-8.0, maxval=1.0)], -1)


def test_discretized_logistic_mixture_is_a_distribution_over_256_levels():
  params = _mixture_params(500, 4)
  table = jax.jit(pc.level_log_probs, static_argnums=1)
  p = np.exp(np.asarray(table(params, 'logistic_mix'), np.float64))
  assert p.shape == (500, 256)
  np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-4)
  # Against the logistic CDF in float64: interior bins are cdf(x + 1/255) - cdf(x - 1/255),
  # level 0 takes everything below, level 255 everything above.
  pi, mu, log_s = (np.asarray(a, np.float64) for a in np.split(np.asarray(params), 3, -1))
  pi = np.exp(pi - pi.max(-1, keepdims=True))
  pi /= pi.sum(-1, keepdims=True)
  s = np.exp(np.maximum(log_s, pc.MIN_LOG_SCALE))
  cdf = lambda t: 1 / (1 + np.exp(np.minimum(-(t - mu) / s, 700)))
  for level in (0, 1, 37, 128, 254, 255):
    x = level / 127.5 - 1
    hi = 1.0 if level == 255 else cdf(x + 1 / 255)
    lo = 0.0 if level == 0 else cdf(x - 1 / 255)
    want = (pi * (hi - lo)).sum(-1)
    np.testing.assert_allclose(p[:, level], want, atol=2e-5)
  # log_prob at given levels agrees with the table over all levels.
  levels = jax.random.randint(jax.random.key(1), (500,), 0, 256)
  np.testing.assert_allclose(
      jax.jit(pc.log_prob, static_argnums=2)(params, levels[:, None], 'logistic_mix'),
      np.log(p[np.arange(500), np.asarray(levels)]), rtol=1e-4, atol=1e-4)


def test_mixture_edges_take_the_tails():
  one = jnp.array([[0.0, -2.0, -3.0], [0.0, 2.0, -3.0]])  # one component, scale e^-3
  p_low, p_high = np.exp(np.asarray(jax.jit(pc.level_log_probs, static_argnums=1)(
      one, 'logistic_mix')))
  assert p_low[0] > 0.999 and p_high[255] > 0.999


# ---------------------------------------------------------------------------- sampling


SAMPLERS = {'gated_conditional': 'pixelcnn_digits.py:tiny,conditional',
            'pixelcnn_softmax': 'pixelcnn_digits.py:tiny,model=pixelcnn,output=softmax',
            'nade': 'nade_digits.py:tiny', 'fvsbn': 'nade_digits.py:tiny,model=fvsbn'}


@pytest.mark.parametrize('name', SAMPLERS)
def test_a_rows_sample_depends_on_its_row_id_only(name):
  from train import loop
  from train import core
  config = _config(SAMPLERS[name])
  task = core.load_task(config)
  variables = _random_variables(task.init, task.example_batch(2))
  rng = jax.random.key(5)
  sample = jax.jit(task.sample)

  def run(row_ids):
    batch = task.prompt_batch(None, 10)  # labels 0..9 for the conditional model
    batch = {k: v[np.asarray(row_ids)] for k, v in batch.items()}
    return np.asarray(sample(variables, batch, rng,
                             row_ids=jnp.asarray(row_ids, jnp.int32))['images'])

  big, small = run(list(range(6))), run([4, 1])
  assert big.shape == (6, 8, 8, 1) and big.dtype == np.uint8
  np.testing.assert_array_equal(small, big[[4, 1]])
  assert len({im.tobytes() for im in big}) == 6  # rows differ
  if name in ('nade', 'fvsbn'):
    assert set(np.unique(big)) <= {0, 255}


def _draw(task, variables, n, seed=0):
  batch = task.prompt_batch(None, n)
  return np.asarray(jax.jit(task.sample)(variables, batch, jax.random.key(seed),
                                         row_ids=jnp.arange(n, dtype=jnp.int32))['images'])


@pytest.mark.parametrize('spec', ['nade_digits.py:tiny', 'nade_digits.py:tiny,model=fvsbn'])
def test_binary_samples_follow_the_models_distribution(spec):
  import arch
  from train import loop
  from train import core
  config = _config(spec, task_kwargs__input_size='(1, 3)', model__num_pixels=3)
  task, model = core.load_task(config), arch.model_from_config(config)
  variables = _random_variables(task.init, task.example_batch(2), scale=2.0)
  every_x = jnp.asarray(list(itertools.product([0.0, 1.0], repeat=3)))
  want = np.exp(np.asarray(ar.log_likelihood(model.apply(variables, every_x), every_x)))
  images = _draw(task, variables, 4000).reshape(4000, 3) // 255
  got = np.bincount(images @ np.array([4, 2, 1]), minlength=8) / 4000
  np.testing.assert_allclose(got, want, atol=0.03)  # about 4 standard errors


@pytest.mark.parametrize('output', ['logistic_mix', 'softmax'])
def test_pixelcnn_samples_follow_the_models_distribution(output):
  import arch
  from train import loop
  from train import core
  config = _config(f'pixelcnn_digits.py:tiny,output={output}',
                   task_kwargs__input_size='(1, 2)')
  task, model = core.load_task(config), arch.model_from_config(config)
  variables = _random_variables(task.init, task.example_batch(2), scale=2.0)
  # Exact joint of the two pixels: p(x0) p(x1 | x0) for every x0, in 4 x 4 coarse cells.
  first = jnp.stack([jnp.arange(256), jnp.zeros(256, jnp.int32)], -1)[:, None, :, None]
  out = model.apply(variables, pc.to_input(first))
  p0 = np.exp(np.asarray(pc.level_log_probs(out[0, 0, 0], output), np.float64))
  p1 = np.exp(np.asarray(pc.level_log_probs(out[:, 0, 1], output), np.float64))
  want = (p0[:, None] * p1).reshape(4, 64, 4, 64).sum((1, 3))
  images = _draw(task, variables, 4000).reshape(4000, 2).astype(int) // 64
  got = np.bincount(images @ np.array([4, 1]), minlength=16).reshape(4, 4) / 4000
  np.testing.assert_allclose(want.sum(), 1.0, atol=1e-4)
  np.testing.assert_allclose(got, want, atol=0.03)


@pytest.mark.parametrize('output', ['softmax', 'logistic_mix'])
def test_rgb_samples_follow_the_models_joint_over_a_pixels_channels(output):
  """One RGB pixel: the sampler's red, green, blue draws follow p(r) p(g | r) p(b | r, g),
  each factor computed from the network run on images holding the earlier channels."""
  import arch
  from train import loop
  from train import core
  config = _config(f'pixelcnn_digits.py:tiny,output={output}',
                   task_kwargs__input_size='(1, 1)', task_kwargs__channels=3,
                   model__features=12)
  task, model = core.load_task(config), arch.model_from_config(config)
  variables = _random_variables(task.init, task.example_batch(2), scale=2.0)

  def conditional(levels_NC, c):  # (N, 256): p(channel c | the earlier channels given)
    out = model.apply(variables, pc.to_input(levels_NC[:, None, None]))[:, 0, 0]
    return np.exp(np.asarray(pc.channel_log_probs(out, levels_NC, c, output), np.float64))

  grid = np.stack(np.meshgrid(np.arange(256), np.arange(256), indexing='ij'), -1)
  p_r = conditional(jnp.zeros((1, 3), jnp.int32), 0)[0]
  p_g = conditional(jnp.asarray(np.pad(np.arange(256)[:, None], ((0, 0), (0, 2)))), 1)
  p_b = conditional(jnp.asarray(np.pad(grid.reshape(-1, 2), ((0, 0), (0, 1)))), 2)
  joint = p_r[:, None, None] * p_g[:, :, None] * p_b.reshape(256, 256, 256)
  want = joint.reshape(4, 64, 4, 64, 4, 64).sum((1, 3, 5))  # 4 coarse levels a channel
  np.testing.assert_allclose(want.sum(), 1.0, atol=1e-4)
  assert want.max() < 0.5  # not trivially concentrated
  images = _draw(task, variables, 4000).reshape(4000, 3).astype(int) // 64
  got = np.bincount(images @ np.array([16, 4, 1]), minlength=64).reshape(4, 4, 4) / 4000
  np.testing.assert_allclose(got, want, atol=0.025)  # about 4 standard errors at most


def test_prompt_batches():
  cond = _config('pixelcnn_digits.py:tiny,conditional')
  from train import loop
  from train import core
  np.testing.assert_array_equal(core.load_task(cond).prompt_batch(None, 12)['label'],
                                [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1])
  batch = core.load_task(_config('nade_digits.py:tiny')).prompt_batch(None, 3)
  assert batch['row'].shape == (3,)


# ------------------------------------------------------------------------------ configs


def test_bad_choices_name_the_valid_ones():
  from train import loop
  from train import core
  from train.errors import UserError
  with pytest.raises(UserError, match='gated, pixelcnn'):
    _config('pixelcnn_digits.py:model=lstm')
  with pytest.raises(UserError, match='logistic_mix, softmax'):
    _config('pixelcnn_digits.py:output=gaussian')
  with pytest.raises(UserError, match='nade, fvsbn'):
    _config('nade_digits.py:model=rbm')
  with pytest.raises(UserError, match='logistic_mix, softmax'):  # the task's ConfigError
    core.load_task(_config('pixelcnn_digits.py:tiny', model__output='gauss'))
  with pytest.raises(ConfigError, match='logistic_mix, softmax'):
    pc.output_features('gauss', 3)


@pytest.mark.parametrize('spec', ['pixelcnn_digits.py:tiny', 'nade_digits.py:tiny',
                                  'nade_digits.py:tiny,model=fvsbn', 'pixelcnn_shapes.py:tiny'])
def test_config_trains_a_step_and_evaluates(spec, tmp_path, data_dir):
  from train import loop
  from train import core
  config = _config(spec, total_steps=1, eval_every=1, log_every=1, eval_batch_size=120,
                   data__data_dir=data_dir)
  result = loop.train_and_evaluate(config, str(tmp_path))
  assert set(result) == {'bits_per_dim', 'nll'}
  bound = 8.0 if spec.startswith('pixelcnn') else 1.5  # an untrained model, roughly
  assert 0 < result['bits_per_dim'] < bound + 2
  dims = 8 * 8 * (3 if 'shapes' in spec else 1)  # the shapes pooled 48x48 -> 8x8 RGB
  np.testing.assert_allclose(result['nll'], result['bits_per_dim'] * dims * np.log(2), rtol=1e-5)
