"""Pipeline parallelism: GPipe's microbatch schedule over a `stage` mesh axis (Huang et al.
2019, "GPipe: Efficient Training of Giant Neural Networks using Pipeline Parallelism").

A scanned stack (`scan_blocks`) stacks its layers' parameters along a leading axis with the
logical name 'layers'. When the sharding rules map 'layers' to a mesh axis of size S > 1
(the loop's config: `mesh.stage = S` with the default rule ('layers', 'stage')), each device
along that axis holds L/S consecutive layers, a stage, and the stack runs as a pipeline:
the batch is cut into M microbatches, and in tick t = 0 .. M+S-2 every stage s applies its
layers to microbatch t - s (when 0 <= t - s < M) and hands the result to stage s + 1 with
`lax.ppermute`. Stage 0 reads the microbatches from the stack's input, stage S-1 writes the
stack's output. The backward pass is `jax.grad` of that schedule: the transposed tick scan
runs the ticks in reverse with the permutes reversed, so every forward tick ends before
the first backward tick starts (GPipe, not 1F1B), and each stage keeps the activations of
its M + S - 1 ticks for the backward (a `remat` policy on the blocks bounds what that is).
In S - 1 of a stage's ticks it has no microbatch: the bubble, (S-1)/(M+S-1) of the time
(`bubble_fraction`), which more microbatches shrink at the price of smaller matmuls.

The pipeline is a function over the stacked parameters (`gpipe`), not a lifted linen
transform: `pipelined_blocks` reads the stack's parameters from the calling module and
runs `Block.apply` on each layer's slice, so the parameter tree, its names and its
initialisation are those of the plain `scan_blocks` (which `init` runs), and a checkpoint
loads with or without a pipeline. `jax.shard_map` is manual over the stage axis only: the
other mesh axes (data, fsdp, tensor; tested with data and tensor) stay automatic in a
stage, where the blocks' logical constraints keep splitting the microbatch over the data
axes and the weights over fsdp/tensor as without a pipeline. Microbatch m holds rows m,
m+M, m+2M, ... of the batch, so each data-parallel shard of the batch holds an equal part
of every microbatch. Dropout draws one key per layer and microbatch (the same distribution
as the unpipelined stack, other masks). Decoding with a KV cache (the sampler) and `init`
run the plain scan, unpipelined: XLA gathers each layer's weights from its stage when it
needs them (the sampler's output on PP=2 x DP=4 equals one device's). A stack the stages
cannot split (layers or batch not divisible, an unscanned stack) is a one-line
ConfigError.

Measured 2026-12-06 on 8 simulated CPU devices of one 2-core machine shared with other
jobs (load average 8-15), gpt_pydoc's `cpu` variant (4 layers, width 256, batch 32 x 128
bytes, dropout 0.1) with scan_layers. The simulated devices share the two cores, so these
numbers show the schedule's overhead, not a speed-up: a stage computes in its bubble ticks
too (on a clipped microbatch whose result is dropped), (M+S-1)/M of the useful work, 1.75x
at M=4 and 1.19x at M=16. Seconds per step, 3 rounds of 3 steps interleaved in one
process (compiled steps, `Runner.step`): DP=8 3.03 / 5.13 / 5.40; PP=4 x DP=2 with M=4
(bubble 3/7 = 0.43) 7.59 / 7.37 / 7.13; with M=16 (bubble 3/19 = 0.16) 7.71 / 6.56 / 5.71.
30-step CLI runs (`python -m train --config configs/gpt_pydoc.py
--config.model.scan_layers=True --config.mesh.data=2 --config.mesh.stage=4
--config.model.pipeline_microbatches=4`): 0.13-0.15 steps/s, 258 s wall (load 14.6);
M=16 0.18-0.23 steps/s, 190 s (load 12.1); DP=8 0.21-0.23 steps/s, 177 s (load 11.7); loss
at step 30 3.2716 / 3.2703 / 3.2707 (the pipeline draws other dropout masks). Without
dropout, gpt_pydoc tiny at 4 layers trains 20 steps under PP=2 x DP=4 and PP=4 x DP=2 to
the losses of one device within 1e-5 relative (tests/test_pipeline.py).

Which models pipeline: GPT and LLaMA with `scan_layers=True` (`pipelined_blocks`), and
ConvMixer (arch/vision/convmixer.py), the one CNN whose blocks are identical, through
`gpipe` with `updates=True`: each block's BatchNorm normalises by its microbatch's
statistics and hands back new running statistics, averaged over the microbatches (one
running-average update by the mean of the microbatches' statistics). That equals one
device only at M = 1; with M > 1 the network is another function by design (statistics
of B/M rows), because a stage sees microbatch m before microbatch m+1 exists. At M = 1,
20 steps of convmixer_digits' tiny net under PP=2 x DP=4 and PP=4 x DP=2 gave one
device's losses within 2.1e-7 and 1.1e-7 relative, and resumed bit for bit
(tests/test_cnn_parallel.py, 2026-12-07). ResNet,
DenseNet and the other CNNs change shape between stages and have no scanned stack; a
stage axis with them is a one-line error (train/mesh.py `check_stages`).

Dimension key: B batch, M microbatches, b rows per microbatch (B/M), T length, D width,
L layers, S stages.
"""

import functools
from typing import Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import PartitionSpec as P

from arch.task import ConfigError

# The logical axis of a scanned stack's layers (scan_blocks' metadata_params).
LAYERS = 'layers'


def stage_axis() -> tuple[Optional[str], int]:
  """(mesh axis name, size) that the logical 'layers' axis maps to under the current
  logical-axis rules and mesh (`jax.set_mesh`); (None, 1) where there is no pipeline: no
  mesh, no rule for 'layers', or an axis of size 1."""
  mesh = jax.sharding.get_abstract_mesh()
  spec = nn.logical_to_mesh_axes((LAYERS,))[0]
  if mesh.empty or spec is None:
    return None, 1
  names = (spec,) if isinstance(spec, str) else tuple(spec)
  if len(names) != 1:
    raise ConfigError(f"the logical axis 'layers' maps to mesh axes {names}; a pipeline "
                      f"needs one stage axis (config.sharding_rules)")
  size = mesh.shape.get(names[0], 1)
  return (names[0], size) if size > 1 else (None, 1)


def ticks(stages: int, microbatches: int) -> int:
  """Ticks of a GPipe forward: the last microbatch enters stage 0 at tick M-1 and leaves
  stage S-1 at tick M+S-2."""
  return microbatches + stages - 1


def bubble_fraction(stages: int, microbatches: int) -> float:
  """The fraction of a stage's ticks without a microbatch: (S-1)/(M+S-1)."""
  return (stages - 1) / ticks(stages, microbatches)


def schedule(stages: int, microbatches: int) -> list[list[Optional[int]]]:
  """table[t][s]: the microbatch stage s works on in tick t (None: the bubble); `gpipe`
  runs exactly this table."""
  return [[t - s if 0 <= t - s < microbatches else None for s in range(stages)]
          for t in range(ticks(stages, microbatches))]


def default_microbatches(stages: int) -> int:
  """M when a model leaves it at 0: 2S, a bubble of (S-1)/(3S-1) (under 1/3)."""
  return 2 * stages


def check_stack(num_layers: int, stages: int, microbatches: int, scanned: bool) -> None:
  """One-line ConfigErrors for a stack that the stage axis cannot split."""
  if not scanned:
    raise ConfigError(f'a pipeline over {stages} stages needs the stacked layers of a scanned '
                      f'stack; set config.model.scan_layers=True (or mesh.stage=1)')
  if num_layers % stages:
    raise ConfigError(f'pipeline: {num_layers} layers do not split into {stages} stages '
                      f'(mesh.stage); choose a stage count that divides {num_layers}')
  if microbatches < 1:
    raise ConfigError(f'pipeline: microbatches={microbatches}; it must be >= 1')


def _microbatch(x_B, m):
  """(B, ...) -> (M, B/M, ...): microbatch j holds rows j, j+M, j+2M, ..."""
  return jnp.swapaxes(x_B.reshape(x_B.shape[0] // m, m, *x_B.shape[1:]), 0, 1)


def _unmicrobatch(x_M):
  return jnp.swapaxes(x_M, 0, 1).reshape(-1, *x_M.shape[2:])


def gpipe(layer_fn: Callable, stacked, x_BTD, side=None, *, axis: str, stages: int,
          microbatches: int, key=None, logical=('batch', 'length', 'embed'),
          updates: bool = False):
  """The layers of `stacked` (a pytree of (L, ...) leaves, sharded over `axis` along L)
  applied in order to `x_BTD` as a GPipe pipeline of `stages` stages and `microbatches`
  microbatches; equals scanning `layer_fn` over the L layers on the whole batch.

    layer_fn(layer_params, x_bTD, side_b, key) -> x_bTD
  side: a pytree of (B, ...) arrays each layer reads for its rows (positions), or None.
  key: a PRNG key (dropout) or None; layer l of microbatch m gets fold_in(fold_in(key, l), m).
  logical: the logical axes of `x_BTD` (a CNN's maps: batch, height, width, channels).
  updates: layer_fn returns (x_bTD, update): a pytree of fixed shapes per layer (BatchNorm's
  new running statistics); gpipe then returns (x_BTD, the updates stacked (L, ...), each
  the mean over the microbatches). Running statistics are affine in the batch statistics,
  so that mean is one update by the mean of the microbatches' statistics.
  Runs under a mesh with `axis` (jax.set_mesh); the other axes stay automatic.
  """
  b = x_BTD.shape[0]
  if b % microbatches:
    raise ConfigError(f'pipeline: a batch of {b} rows does not split into {microbatches} '
                      f'microbatches (config.model.pipeline_microbatches); choose a divisor '
                      f'of {b}')
  num_layers = jax.tree.leaves(stacked)[0].shape[0]
  if num_layers % stages:
    raise ConfigError(f'pipeline: {num_layers} layers do not split into {stages} stages')
  per_stage = num_layers // stages
  x_MbTD = nn.with_logical_constraint(_microbatch(x_BTD, microbatches), (None, *logical))
  side_Mb = jax.tree.map(lambda a: _microbatch(a, microbatches), side)
  n_ticks = ticks(stages, microbatches)
  varying = functools.partial(lax.pcast, axis_name=axis, to='varying')

  def run_stage(params, x_bTD, side_b, s, m):
    """This stage's `per_stage` layers on microbatch m (and their updates, stacked)."""
    def one(x_bTD, layer):
      p, i = layer
      k = None if key is None else jax.random.fold_in(
          jax.random.fold_in(key, s * per_stage + i), m)
      out = layer_fn(p, x_bTD, side_b, k)
      return out if updates else (out, None)
    return lax.scan(one, x_bTD, (params, jnp.arange(per_stage)))

  def body(params, x_MbTD, side_Mb):
    s = lax.axis_index(axis)

    def tick(carry, t):
      state_bTD, out_MbTD, sum_upd = carry
      # Stage s holds microbatch t - s; in the bubble it recomputes a clipped index and
      # its result is never read (overwritten below, or not on the last stage).
      m = jnp.clip(t - s, 0, microbatches - 1)
      take = lambda a: lax.dynamic_index_in_dim(a, m, keepdims=False)
      in_bTD = jnp.where(s == 0, take(x_MbTD), state_bTD)
      y_bTD, upd = run_stage(params, in_bTD, jax.tree.map(take, side_Mb), s, m)
      # Every stage writes slot m; only the last stage's slots are kept, and its writes
      # before tick S-1 (the clipped slot 0) are overwritten at tick S-1 by microbatch 0.
      out_MbTD = lax.dynamic_update_index_in_dim(out_MbTD, y_bTD, m, 0)
      state_bTD = lax.ppermute(y_bTD, axis, [(i, (i + 1) % stages) for i in range(stages)])
      # a stage's updates count in the ticks it holds a microbatch, not in its bubble
      busy = (t - s >= 0) & (t - s < microbatches)
      sum_upd = jax.tree.map(lambda a, u: a + jnp.where(busy, u, 0), sum_upd, upd)
      return (state_bTD, out_MbTD, sum_upd), None

    upd_shapes = jax.eval_shape(lambda p, x, sd: run_stage(p, x, sd, s, 0)[1], params,
                                varying(x_MbTD[0]), jax.tree.map(lambda a: a[0], side_Mb)
                                ) if updates else None
    init = (varying(jnp.zeros_like(x_MbTD[0])), varying(jnp.zeros_like(x_MbTD)),
            jax.tree.map(lambda a: varying(jnp.zeros(a.shape, a.dtype)), upd_shapes))
    (_, out_MbTD, sum_upd), _ = lax.scan(tick, init, jnp.arange(n_ticks))
    # The last stage's output, the same on every stage (the rest of the model is not staged).
    out_MbTD = lax.psum(jnp.where(s == stages - 1, out_MbTD, 0), axis)
    return out_MbTD, jax.tree.map(lambda a: a / microbatches, sum_upd)

  param_specs = jax.tree.map(lambda _: P(axis), stacked)
  side_specs = jax.tree.map(lambda _: P(), side_Mb)
  out, upd = jax.shard_map(body, in_specs=(param_specs, P(), side_specs),
                           out_specs=(P(), P(axis)), axis_names={axis})(stacked, x_MbTD,
                                                                       side_Mb)
  return (_unmicrobatch(out), upd) if updates else _unmicrobatch(out)


def pipelined_blocks(module: nn.Module, name: str, x_BTD, positions_BT, *, axis: str,
                     stages: int, microbatches: int, causal: bool, deterministic: bool,
                     **block):
  """The scanned stack `module`'s submodule `name` (made by `scan_blocks` at init) run as
  a GPipe pipeline: its stacked parameters, each layer a `Block(**block)`."""
  from arch.layers.transformer import Block  # transformer.py imports this module
  stacked = nn.meta.unbox(module.variables['params'][name])
  layer = Block(**block, parent=None)
  key = None if deterministic else module.make_rng('dropout')

  def layer_fn(p, x_bTD, pos_bT, k):
    rngs = {} if k is None else {'dropout': k}
    return layer.apply({'params': p}, x_bTD, causal=causal, positions_BT=pos_bT,
                       deterministic=deterministic, rngs=rngs)

  return gpipe(layer_fn, stacked, x_BTD, positions_BT, axis=axis, stages=stages,
               microbatches=microbatches, key=key)
