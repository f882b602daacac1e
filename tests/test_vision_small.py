"""MLP and LeNet-5: published size, shapes, and properties that catch a wrong layer."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arch.vision import lenet, mlp


def n_params(model, shape):
  variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(shape))
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nn.meta.unbox(variables['params'])))


def test_lenet5_parameter_count_is_the_papers():
  # C1 156 + S2 12 + C3 1,516 + S4 32 + C5 48,120 + F6 10,164 (LeCun et al. 1998, Sec. II.B)
  assert n_params(lenet.Model(), (1, 32, 32, 1)) == 60_000
  assert n_params(lenet.Model(head='dense'), (1, 32, 32, 1)) == 60_000 + 84 * 10 + 10


@pytest.mark.parametrize('kwargs', [{}, {'head': 'dense'}, lenet.TINY])
@pytest.mark.parametrize('size', [32, 48])
def test_lenet_shapes(kwargs, size):
  model = lenet.Model(**kwargs)
  out = jax.eval_shape(lambda: model.init_with_output(jax.random.key(0), jnp.zeros((3, size, size, 1)))[0])
  assert out.shape == (3, 10)


def test_lenet_rejects_small_inputs():
  with pytest.raises(ValueError, match='H, W >= 32'):
    lenet.Model().init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))


def test_c3_reads_only_the_papers_table():
  """d(C3 map j)/d(S2 map i) is non-zero exactly when Table I connects i to j."""
  conv = lenet.SparseConv()
  x = jax.random.normal(jax.random.key(1), (1, 14, 14, 6))
  params = conv.init(jax.random.key(0), x)
  for j, inputs in enumerate(lenet.C3_TABLE):
    g = jax.grad(lambda x: conv.apply(params, x)[..., j].sum())(x)
    reached = {i for i in range(6) if jnp.abs(g[..., i]).sum() > 0}
    assert reached == set(inputs), (j, reached)


def test_subsampling_is_scaled_2x2_sum_plus_bias():
  s = lenet.Subsample()
  x = jax.random.normal(jax.random.key(0), (2, 4, 4, 3))
  params = {'params': {'coef': jnp.array([1.0, 2.0, -1.0]), 'bias': jnp.array([0.0, 1.0, 0.5])}}
  y = s.apply(params, x)
  want = x.reshape(2, 2, 2, 2, 2, 3).sum(axis=(2, 4)) * params['params']['coef'] + params['params']['bias']
  np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)


def test_rbf_output_is_negative_squared_distance_to_codes():
  model = lenet.Model()
  x = jax.random.uniform(jax.random.key(0), (2, 32, 32, 1))
  params = model.init(jax.random.key(1), x)
  logits, inter = model.apply(params, x, capture_intermediates=True)
  f6 = lenet.scaled_tanh(inter['intermediates']['F6']['__call__'][0])
  codes = lenet.rbf_codes(10, 84)
  want = -((np.asarray(f6)[:, None, :] - codes[None]) ** 2).sum(-1)
  np.testing.assert_allclose(logits, want, rtol=1e-5)
  assert set(np.unique(codes)) == {-1.0, 1.0}


def test_mlp_shapes_and_count():
  model = mlp.Model(hidden=(32, 16))
  assert n_params(model, (1, 8, 8, 1)) == 64 * 32 + 32 + 32 * 16 + 16 + 16 * 10 + 10
  y = model.apply(model.init(jax.random.key(0), jnp.ones((4, 8, 8, 1))), jnp.ones((4, 8, 8, 1)))
  assert y.shape == (4, 10)


def test_bf16_compute_keeps_fp32_params():
  model = lenet.Model(head='dense', dtype='bfloat16')
  variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 1)))
  assert {x.dtype for x in jax.tree.leaves(nn.meta.unbox(variables))} == {jnp.dtype('float32')}
  assert model.apply(variables, jnp.zeros((1, 32, 32, 1))).dtype == jnp.bfloat16


def test_center_crop_resize_keeps_content_and_size():
  from arch.images import center_crop_resize
  img = np.zeros((300, 400, 3), np.uint8)
  img[100:200, 150:250] = 255          # a centred white square, 1/3 of the height
  out = center_crop_resize(img, 224)    # short side 300 -> 256, crop 224
  assert out.shape == (224, 224, 3) and out.dtype == np.uint8
  white = np.argwhere(out[..., 0] > 127)
  # the square scales to 256/300 * 100 = 85 px, centred in the crop
  assert abs(len(white) - 85 ** 2) < 3 * 85
  np.testing.assert_allclose(white.mean(0), (111.5, 111.5), atol=1.0)
  flat = np.full((50, 60, 1), 77, np.uint8)
  assert (center_crop_resize(flat, 32) == 77).all()
