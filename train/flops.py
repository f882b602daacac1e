"""Model FLOPs of a step, counted on its jaxpr: the numerator of MFU.

XLA's cost analysis counts a while loop's body once, whatever its trip count, so a model
that scans over its layers (`scan_layers`, the pipelined stacks, the RNNs' time scans)
reported a fraction of its FLOPs: gpt_pydoc tiny's train step counted 62.5 MFLOP unrolled
and 38.9 MFLOP scanned (2026-12-07). This counter walks the traced step instead and
multiplies what a `scan` body does by its length.

It counts what MFU counts (Chowdhery et al. 2022, PaLM, appendix B): the multiply-adds of
matrix multiplications and convolutions, 2 FLOPs each, forward and backward as the step
traces them; elementwise work, reductions and the optimizer's arithmetic are left out.
Recomputation under `jax.checkpoint` (remat) is counted where the step traces it twice,
so with remat the figure is closer to hardware FLOPs. A `while` loop's body is counted
once (its trip count is not known when tracing), and a `cond` counts its costliest branch.
The count is of the whole global computation: `shard_map` bodies, traced per shard, are
multiplied by the number of shards of their manual axes.
"""

import math

import jax
from jax.extend import core as jax_core

# Primitives whose sub-computations run `length` times.
_REPEATED = {'scan': lambda params: params['length']}


def dot_general_flops(lhs_shape, rhs_shape, dimension_numbers) -> int:
  """2 x batch x contracted x lhs free x rhs free: every multiply-add of the product."""
  (_, rhs_contract), (_, rhs_batch) = dimension_numbers
  rhs_free = math.prod(d for i, d in enumerate(rhs_shape)
                       if i not in rhs_contract and i not in rhs_batch)
  return 2 * math.prod(lhs_shape) * rhs_free


def conv_flops(out_shape, rhs_shape, dimension_numbers) -> int:
  """2 x output elements x (input features per group x kernel window) multiply-adds."""
  out_feature_dim = dimension_numbers.rhs_spec[0]
  per_output = math.prod(rhs_shape) // rhs_shape[out_feature_dim]
  return 2 * math.prod(out_shape) * per_output


def _sub_jaxprs(params):
  for value in params.values():
    values = value if isinstance(value, (tuple, list)) else (value,)
    for v in values:
      if isinstance(v, jax_core.ClosedJaxpr):
        yield v.jaxpr
      elif isinstance(v, jax_core.Jaxpr):
        yield v


def jaxpr_flops(jaxpr) -> int:
  """Matmul and convolution FLOPs of a (closed) jaxpr, sub-computations included."""
  jaxpr = getattr(jaxpr, 'jaxpr', jaxpr)
  total = 0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == 'dot_general':
      total += dot_general_flops(eqn.invars[0].aval.shape, eqn.invars[1].aval.shape,
                                 eqn.params['dimension_numbers'])
    elif name == 'conv_general_dilated':
      total += conv_flops(eqn.outvars[0].aval.shape, eqn.invars[1].aval.shape,
                          eqn.params['dimension_numbers'])
    elif name == 'cond':
      total += max(jaxpr_flops(b) for b in eqn.params['branches'])
    else:
      inner = sum(jaxpr_flops(j) for j in _sub_jaxprs(eqn.params))
      if name in _REPEATED:
        inner *= _REPEATED[name](eqn.params)
      elif name == 'shard_map':
        axes = eqn.params.get('newly_manual_axes') or eqn.params.get('manual_axes') or ()
        inner *= math.prod(eqn.params['mesh'].shape[a] for a in axes)
      total += inner
  return total


def traced_flops(traced) -> int:
  """FLOPs of a `jax.jit(f).trace(...)` result (the whole, unpartitioned computation)."""
  return jaxpr_flops(traced.jaxpr)


def function_flops(fn, *args, axis_env=None) -> int:
  """FLOPs of `fn(*args)` (arrays or ShapeDtypeStructs); `axis_env` [(name, size)] for a
  function that uses collectives over named axes (a pmapped step's body)."""
  return jaxpr_flops(jax.make_jaxpr(fn, axis_env=axis_env)(*args))
