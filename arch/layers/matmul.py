"""Matrix products of the weight layers, with a bfloat16 path that reaches the chip's
bfloat16 matrix units.

XLA:CPU (jaxlib 0.10.2) runs a bfloat16 x bfloat16 dot on the AMX units only when its
result is float32 and its left operand's contracting axis is minor (docs/speed.md:
1,579 GFLOP/s against 263 for the bfloat16-result dot every layer emitted before, and 322
for float32). `dot_general` below is `lax.dot_general` for every other dtype; for two
bfloat16 operands in a weight layer's form (x's trailing axes contracted with the kernel's
leading ones, no batch axes) it computes

  forward   y = x W       as (M, K) @ (K, N) -> float32, rounded to bfloat16;
  backward  dx = g W^T    as (M, N) @ (N, K)^T -> float32 (the kernel's minor axis
                          contracted: still on the AMX path), rounded to bfloat16;
            dW = x^T g    contracts the tokens, the major axis of both operands: XLA
                          lowers this form as a float32 dot whatever is asked (a transpose
                          of x is folded back into the dot), so it is written as one.

The products of bfloat16 numbers are exact in float32, so every form sums the same terms
as the float32 dot XLA used to upcast bfloat16 dots to: the results agree to the last
bfloat16 bit up to summation order. Other forms (attention's batched dots) and other dtypes
pass through unchanged. Flax layers take it as `nn.Dense(dot_general=matmul.dot_general)`.

`add_bias` adds a bias over the trailing axes; for bfloat16 its gradient sums the rows in
float32 (a bfloat16 sum is lowered as a tree of reduce-windows that took 16-23 ms for one
(4096, 1024) bias gradient of gpt_pydoc's MLP, 131 ms of a 640 ms step).

Shapes: M rows (tokens), K contracted features, N output features.
"""

import math

import jax
import jax.numpy as jnp
from jax import lax

F32, BF16 = jnp.float32, jnp.bfloat16
_NN = (((1,), (0,)), ((), ()))  # (M, K) @ (K, N)
_NT = (((1,), (1,)), ((), ()))  # (M, N) @ (K, N)^T
_TN = (((0,), (0,)), ((), ()))  # (M, K)^T @ (M, N)


@jax.custom_vjp
def _bf16_matmul(x_MK, w_KN):
  return lax.dot_general(x_MK, w_KN, _NN, preferred_element_type=F32).astype(BF16)


def _bf16_matmul_fwd(x_MK, w_KN):
  return _bf16_matmul(x_MK, w_KN), (x_MK, w_KN)


def _bf16_matmul_bwd(residuals, g_MN):
  x_MK, w_KN = residuals
  g_MN = g_MN.astype(BF16)
  dx_MK = lax.dot_general(g_MN, w_KN, _NT, preferred_element_type=F32).astype(BF16)
  dw_KN = lax.dot_general(x_MK.astype(F32), g_MN.astype(F32), _TN).astype(BF16)
  return dx_MK, dw_KN


_bf16_matmul.defvjp(_bf16_matmul_fwd, _bf16_matmul_bwd)


def _weight_form(lhs, rhs, dimension_numbers) -> int:
  """The number of contracted axes when `dimension_numbers` contracts lhs's trailing axes
  with rhs's leading ones in order and has no batch axes (a weight layer), else 0."""
  (lhs_c, rhs_c), (lhs_b, rhs_b) = dimension_numbers
  n = len(lhs_c)
  if lhs_b or rhs_b or not n or len(rhs_c) != n:
    return 0
  if tuple(lhs_c) != tuple(range(lhs.ndim - n, lhs.ndim)) or tuple(rhs_c) != tuple(range(n)):
    return 0
  return n


def dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None,
                **kwargs):
  """`lax.dot_general`, with float32-accumulated bfloat16 weight products (module doc)."""
  n = _weight_form(lhs, rhs, dimension_numbers)
  if (n and lhs.dtype == BF16 and rhs.dtype == BF16 and not kwargs
      and preferred_element_type in (None, BF16)):
    k, cols = math.prod(rhs.shape[:n]), math.prod(rhs.shape[n:])
    y = _bf16_matmul(lhs.reshape(-1, k), rhs.reshape(k, cols))
    return y.reshape(*lhs.shape[:lhs.ndim - n], *rhs.shape[n:])
  return lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                         preferred_element_type=preferred_element_type, **kwargs)


@jax.custom_vjp
def _bf16_add_bias(y, bias):
  return y + bias


def _bf16_add_bias_fwd(y, bias):
  return y + bias, None


def _bf16_add_bias_bwd(_, g):
  lead = tuple(range(g.ndim - 1))
  return g, g.astype(F32).sum(axis=lead).astype(BF16)


_bf16_add_bias.defvjp(_bf16_add_bias_fwd, _bf16_add_bias_bwd)


def add_bias(y, bias):
  """y + bias, the bias (N,) over y's last axis; float32 gradient sums for bfloat16."""
  if y.dtype == BF16 and bias.dtype == BF16 and bias.ndim == 1:
    return _bf16_add_bias(y, bias)
  return y + bias
