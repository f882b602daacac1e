"""DiT: every variant's parameter count equals the reference's; adaLN-Zero makes every
block the identity and the output exactly zero at init; patchify/unpatchify are inverse
permutations in the patch embedding's order and each token's output lands on its own
patch; the timestep and the label condition the output; rows are independent."""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arch.generative import dit
from arch.layers.embed import timestep_embedding

# diffusers 0.42 DiTTransformer2DModel(num_attention_heads, attention_head_dim=width/heads,
# in_channels=4, out_channels=8, num_layers, sample_size=32, patch_size, num_embeds_ada_norm=
# 1000): sum(p.numel()) less the (depth - 1) extra copies of the timestep MLP + label
# table that diffusers keeps, one per block (the official model has one shared pair;
# measured with blocks[0].norm1.emb's parameters). For XL/2: 749,826,464 - 27 x 2,777,472 = 674,834,720, which
# is also the official repo's printed 675,129,632 less its frozen pos_embed "parameter"
# (256 tokens x 1152 = 294,912), a computed constant here.
REFERENCE = {
    'S/2': 32_865_056, 'S/4': 32_920_448, 'S/8': 33_142_016,
    'B/2': 130_315_808, 'B/4': 130_426_496, 'B/8': 130_869_248,
    'L/2': 457_840_672, 'L/4': 457_988_224, 'L/8': 458_578_432,
    'XL/2': 674_834_720, 'XL/4': 675_000_704, 'XL/8': 675_664_640,
}


def count(model, shape=(32, 32, 4)):
  x = jnp.zeros((1, *shape))
  tree = jax.eval_shape(lambda: model.init(jax.random.key(0), x, jnp.zeros((1,)),
                                           jnp.zeros((1,), jnp.int32)))
  return sum(math.prod(v.shape) for v in jax.tree.leaves(nn.meta.unbox(tree)))


@pytest.mark.parametrize('name', sorted(REFERENCE))
def test_parameter_counts_equal_the_reference(name):
  assert count(dit.Model(**dit.VARIANTS[name])) == REFERENCE[name]


def test_xl2_is_the_official_count_without_its_frozen_position_table():
  assert REFERENCE['XL/2'] + (32 // 2) ** 2 * 1152 == 675_129_632


IMAGE = (8, 8, 3)
TINY = dict(dit.VARIANTS['tiny'], num_classes=10)


def normal(*shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def inputs(b=3, image=IMAGE, seed=0):
  t = jnp.asarray(np.random.default_rng(seed).uniform(0, 1000, b), jnp.float32)
  return normal(b, *image, seed=seed), t, jnp.arange(b, dtype=jnp.int32) % 10


@functools.cache
def initialised(**kw):
  model = dit.Model(**{**TINY, **kw})
  x, t, y = inputs(1)
  return model, jax.jit(model.init)(jax.random.key(1), x, t, y)


def random_variables(model, image=IMAGE, seed=0):
  """Variables of the model's structure with arbitrary values (no zero-initialised layer
  left), built in numpy from jax.eval_shape."""
  rng = np.random.default_rng(seed)
  x, t, y = inputs(1, image)
  shapes = nn.meta.unbox(jax.eval_shape(lambda: model.init(jax.random.key(0), x, t, y)))

  def fill(path, leaf):
    std = 1 / math.sqrt(math.prod(leaf.shape[:-1])) if path[-1].key == 'kernel' else 0.5
    return jnp.asarray(std * rng.standard_normal(leaf.shape), jnp.float32)

  return jax.tree_util.tree_map_with_path(fill, shapes)


@functools.partial(jax.jit, static_argnums=0)
def apply(model, variables, x, t, y):
  return model.apply(variables, x, t, y)


def test_at_init_every_block_is_the_identity_and_the_output_is_zero():
  model, variables = initialised()
  x, t, y = inputs()
  capture = lambda m, _: isinstance(m, (dit.Block, nn.Conv))
  out, state = jax.jit(functools.partial(model.apply, capture_intermediates=capture))(
      variables, x, t, y)
  assert out.shape == (3, 8, 8, 6) and out.dtype == jnp.float32  # learn_sigma: 2C
  np.testing.assert_array_equal(out, 0.0)
  captured = state['intermediates']
  tokens = captured['patch_embed']['proj']['__call__'][0].reshape(3, 16, 32)
  tokens = tokens + dit.sincos_2d(4, 4, 32)[None]  # the fixed positions, added
  for i in range(TINY['depth']):
    np.testing.assert_array_equal(captured[f'block{i}']['__call__'][0], tokens)
  # No position parameter: the table is a constant.
  assert 'pos_embed' not in variables['params'] and len(variables['params']) == 6


def test_patchify_is_the_patch_embeddings_order_and_unpatchify_inverts_it():
  x = normal(2, 8, 12, 3)
  tokens = dit.patchify(x, 4)
  assert tokens.shape == (2, 6, 48)
  for k in range(6):  # row-major patches, each in (row, column, channel) order
    i, j = divmod(k, 3)
    np.testing.assert_array_equal(tokens[:, k], x[:, 4 * i:4 * i + 4, 4 * j:4 * j + 4].reshape(2, -1))
  np.testing.assert_array_equal(dit.unpatchify(tokens, 4, 8, 12), x)
  embed = dit.PatchEmbed(5, 4)
  variables = embed.init(jax.random.key(0), x)
  params = nn.meta.unbox(variables)['params']['proj']
  linear = tokens @ params['kernel'].reshape(48, 5) + params['bias']
  np.testing.assert_allclose(embed.apply(variables, x), linear, rtol=1e-5, atol=1e-5)


def test_each_tokens_output_lands_on_its_own_patch():
  # With the blocks at init (the identity) every token is processed on its own, so a
  # change in one input patch may change the output on that patch only, on a non-square
  # image so that rows and columns cannot be swapped unnoticed.
  model, _ = initialised()
  image = (8, 12, 3)
  x, t, y = inputs(2, image)
  variables = random_variables(model, image)
  variables['params'] = {k: v for k, v in variables['params'].items()}
  for i in range(TINY['depth']):  # zero the gates: blocks are the identity again
    adaln = dict(variables['params'][f'block{i}']['adaln'])
    adaln = jax.tree.map(jnp.zeros_like, adaln)
    variables['params'][f'block{i}'] = {**variables['params'][f'block{i}'], 'adaln': adaln}
  base = apply(model, variables, x, t, y)
  assert float(jnp.abs(base).min()) > 0  # the final layer is not zero any more
  for i0, j0 in [(0, 2), (4, 0), (6, 10)]:  # pixels of patches (0, 1), (2, 0), (3, 5)
    changed = apply(model, variables, x.at[:, i0, j0].add(1.0), t, y)
    moved = np.asarray(jnp.abs(changed - base).max((0, 3)) > 1e-6)
    expected = np.zeros((8, 12), bool)
    expected[i0 // 2 * 2:i0 // 2 * 2 + 2, j0 // 2 * 2:j0 // 2 * 2 + 2] = True
    np.testing.assert_array_equal(moved, expected)


def test_timestep_and_label_condition_the_output_and_rows_are_independent():
  model, _ = initialised()
  variables = random_variables(model)
  x, t, y = inputs()
  out = apply(model, variables, x, t, y)
  assert np.isfinite(out).all() and float(jnp.abs(out).mean()) > 0.01
  same_x = jnp.broadcast_to(x[:1], x.shape)
  same_t = jnp.broadcast_to(t[:1], t.shape)
  by_label = apply(model, variables, same_x, same_t, jnp.asarray([0, 1, 10], jnp.int32))
  by_time = apply(model, variables, same_x, jnp.asarray([0.0, 1.0, 500.0]), y[:1].repeat(3))
  for varied in (by_label, by_time):
    assert float(jnp.abs(varied[1] - varied[0]).max()) > 1e-3
    assert float(jnp.abs(varied[2] - varied[0]).max()) > 1e-3
  # A missing label is the null class (row num_classes of the table).
  np.testing.assert_allclose(apply(model, variables, same_x, same_t, None),
                             by_label[2:].repeat(3, 0), rtol=1e-5, atol=1e-5)
  # Row i depends on row i alone.
  np.testing.assert_allclose(apply(model, variables, x[1:2], t[1:2], y[1:2])[0], out[1],
                             rtol=1e-5, atol=1e-5)


def test_timestep_features_are_cos_then_sin():
  f = timestep_embedding(jnp.asarray([0.0, 3.0]), 8)
  np.testing.assert_allclose(f[0], [1, 1, 1, 1, 0, 0, 0, 0])
  freqs = 10_000.0 ** (-np.arange(4) / 4)
  np.testing.assert_allclose(f[1], np.concatenate([np.cos(3 * freqs), np.sin(3 * freqs)]),
                             rtol=1e-5, atol=1e-6)


def test_options_and_errors():
  x, t, y = inputs(1)
  plain = dit.Model(**{**TINY, 'learn_sigma': False, 'num_classes': 0})
  out = jax.eval_shape(lambda: plain.init_with_output(jax.random.key(0), x, t))[0]
  assert out.shape == (1, 8, 8, 3)
  wide = dit.Model(**{**TINY, 'out_channels': 5})  # as the diffusion objective sets it
  assert jax.eval_shape(lambda: wide.init_with_output(jax.random.key(0), x, t, y))[0].shape \
      == (1, 8, 8, 5)
  assert count(dit.Model(**{**TINY, 'class_dropout': False}), IMAGE) == \
      count(dit.Model(**TINY), IMAGE) - 32  # one table row fewer
  with pytest.raises(ValueError, match='no context'):
    jax.eval_shape(lambda: dit.Model(**TINY).init(jax.random.key(0), x, t, y, jnp.zeros((1, 2, 4))))
  with pytest.raises(ValueError, match='unconditional'):
    jax.eval_shape(lambda: plain.init(jax.random.key(0), x, t, y))
  with pytest.raises(ValueError, match='multiple of the patch size'):
    jax.eval_shape(lambda: dit.Model(**{**TINY, 'patch_size': 3}).init(jax.random.key(0), x, t, y))


def _config(**overrides):
  from conftest import load_config
  return load_config('dit_digits.py:tiny', **overrides)


def test_samples_with_guidance_depend_only_on_their_row():
  from train import loop
  from train import core
  task = core.load_task(_config())
  model = dit.Model(**{**_config().model, 'out_channels': 2})
  variables = random_variables(model, (8, 8, 1))
  rng = jax.random.key(3)
  for options in (dict(sampler='ddpm', guidance=2.0), dict(sampler='ddim', guidance=1.0)):
    fn = jax.jit(functools.partial(task.sample, steps=4, **options))
    sample = lambda rows: fn(variables, {'label': jnp.asarray(rows, jnp.int32) % 10}, rng,
                             row_ids=jnp.asarray(rows))['images']
    small, large = sample([1]), sample([0, 1, 2])
    assert small.dtype == jnp.uint8 and small.shape == (1, 8, 8, 1)
    np.testing.assert_array_equal(small[0], large[1])
    assert len({np.asarray(s).tobytes() for s in large}) == 3
  np.testing.assert_array_equal(task.prompt_batch(None, 12)['label'], np.arange(12) % 10)


def test_digits_config_trains(tmp_path, data_dir):
  from train import loop
  from train import core
  config = _config(total_steps=2, eval_every=2, log_every=1, data__data_dir=data_dir)
  result = loop.train_and_evaluate(config, str(tmp_path))
  assert set(result) == {'loss', 'bits_per_dim'} and np.isfinite(result['loss'])
