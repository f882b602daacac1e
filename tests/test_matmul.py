"""arch/layers/matmul.py: bfloat16 weight products accumulated in float32 (the form that
reaches the CPU's bfloat16 matrix units), with gradients equal to the float32 computation
they replace; every other dtype and form is lax.dot_general itself."""

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from arch.layers import matmul

BF16, F32 = jnp.bfloat16, jnp.float32
DIMS = (((2, 3), (0, 1)), ((), ()))  # a Projection with num_in=2: (B, T, N, H) x (N, H, D)


def _operands(dtype):
  k = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(k[0], (4, 24, 3, 16), dtype)
  w = jax.random.normal(k[1], (3, 16, 40), dtype)
  return x, w


def _reference(x, w):
  """What XLA computed for a bfloat16 dot before: float32 products and sums, rounded."""
  return lax.dot_general(x.astype(F32), w.astype(F32), DIMS).astype(BF16)


def test_bf16_products_accumulate_in_float32_and_match_the_float32_dot():
  x, w = _operands(BF16)
  y = matmul.dot_general(x, w, DIMS)
  assert y.dtype == BF16 and y.shape == (4, 24, 40)
  np.testing.assert_array_equal(np.asarray(y, F32), np.asarray(_reference(x, w), F32))
  jaxpr = str(jax.make_jaxpr(lambda x, w: matmul.dot_general(x, w, DIMS))(x, w))
  assert 'preferred_element_type=float32' in jaxpr  # the matrix units' form, not bf16 -> bf16


def test_bf16_gradients_equal_the_float32_computations():
  x, w = _operands(BF16)
  loss = lambda f: lambda x, w: (f(x, w).astype(F32) ** 2).sum()
  got = jax.grad(loss(lambda x, w: matmul.dot_general(x, w, DIMS)), (0, 1))(x, w)
  want = jax.grad(loss(_reference), (0, 1))(x, w)
  for g, r in zip(got, want):
    assert g.dtype == BF16
    np.testing.assert_allclose(np.asarray(g, F32), np.asarray(r, F32), rtol=1e-2, atol=1e-2)
  # the weight gradient: the float32 one rounded once
  np.testing.assert_array_equal(np.asarray(got[1], F32), np.asarray(want[1], F32))


def test_other_dtypes_and_forms_are_lax_dot_general():
  x, w = _operands(F32)
  np.testing.assert_array_equal(matmul.dot_general(x, w, DIMS), lax.dot_general(x, w, DIMS))
  a, b = jnp.ones((2, 5, 3), BF16), jnp.ones((2, 3, 4), BF16)
  batched = (((2,), (1,)), ((0,), (0,)))  # attention's form keeps jax's own lowering
  jaxpr = str(jax.make_jaxpr(lambda a, b: matmul.dot_general(a, b, batched))(a, b))
  assert 'custom_vjp' not in jaxpr and 'preferred_element_type=float32' not in jaxpr


def test_bf16_bias_gradient_sums_in_float32():
  y = jnp.full((64, 3), 1.0, BF16)
  bias = jnp.zeros((3,), BF16)
  # 1,000 rows of ones: a bfloat16 running sum would stall at 256 (256 + 1 rounds to 256)
  g = jax.grad(lambda b: (matmul.add_bias(jnp.ones((1000, 3), BF16), b).astype(F32)).sum())(bias)
  assert g.dtype == BF16 and float(g[0]) == 1000.0  # representable in bfloat16
  g = jax.grad(lambda b: (matmul.add_bias(y, b).astype(F32) * jnp.arange(3.0)).sum())(bias)
  np.testing.assert_array_equal(np.asarray(g, F32), [0.0, 64.0, 128.0])
  np.testing.assert_array_equal(matmul.add_bias(y, bias + 1), y + 1)
