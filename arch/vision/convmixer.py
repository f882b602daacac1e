"""ConvMixer (Trockman & Kolter 2022, "Patches Are All You Need?"): an isotropic CNN.

A patch embedding (a p x p convolution of stride p to `dim` channels, GELU, BatchNorm),
then `depth` identical blocks at that one resolution and width, each

  x = x + BN(GELU(depthwise k x k conv(x)))      (mixes space, per channel)
  x = BN(GELU(pointwise 1x1 conv(x)))            (mixes channels)

then global average pooling and a linear head. Every convolution has a bias; GELU is
the exact (erf) one; "same" padding. Parameter counts equal the paper's Table 1:
ConvMixer-1536/20 (k 9, p 7) 51,625,960 = 51.6M, ConvMixer-768/32 (k 7, p 7) 21,110,248 =
21.1M, ConvMixer-1024/20 (k 9, p 14) 24,383,464 = 24.4M, at 1,000 classes (`VARIANTS`).

Because the blocks are identical, the stack scans (`nn.scan`: parameters and BatchNorm
statistics stacked along a leading 'layers' axis under `blocks`), and a `stage` mesh axis
runs it as a GPipe pipeline (arch/layers/pipeline.py); it is the CNN of the pipeline tests.
BatchNorm in a pipeline: a stage sees one microbatch at a time, so each block normalises
with that microbatch's statistics (like "ghost" batch norm), not the whole batch's, and
the running statistics take one update by the mean over microbatches. With
`pipeline_microbatches=1` the pipeline computes exactly the one-device function (the
tests compare those to 1e-5); with M > 1 the loss differs from one device by design
(statistics of B/M rows). Whole-batch statistics cannot be had in a pipeline without a
barrier per layer: microbatch m reaches a layer before microbatch m+1 has.
The feature maps carry `split_height` (arch/layers/spatial.py), so `mesh.sequence`
splits their rows (spatial parallelism).

Measured (2026-12-07, 2-core CPU shared with other jobs): the digits config's 17,066-
parameter net reaches test accuracy 0.9806 in 200 steps (configs/convmixer_digits.py);
over 20 steps on 8 simulated devices its tiny net gave one device's losses within 2.1e-7
relative under PP=2 x DP=4, 1.1e-7 under PP=4 x DP=2 (M = 1) and 1.1e-7 under DP=2 x SP=4,
each resuming bit for bit (tests/test_cnn_parallel.py).

Names: `stem_conv`, `stem_norm`, `blocks/{depthwise,norm1,pointwise,norm2}` (stacked
(L, ...); the paper's code has one module per block), `head`.

Dimension key: B batch, H height, W width, C channels (`dim`), L layers (`depth`).
"""

from typing import Optional

import flax.linen as nn
import jax.numpy as jnp

from arch.layers import pipeline
from arch.layers.conv import batch_norm, channel_init, check_spatial, classifier_head, \
    kernel_init
from arch.layers.spatial import MAP_AXES, split_height

Dtype = str | jnp.dtype


def same_padding(k: int):
  """PyTorch's padding='same' for a stride-1 k x k conv: (k-1)//2 before, k//2 after."""
  return [((k - 1) // 2, k // 2)] * 2


def _gelu(x):
  return nn.gelu(x, approximate=False)


class DepthwiseConv(nn.Module):
  """A k x k depthwise convolution (one filter per channel, bias, 'same' padding) as the
  sum of k*k shifted, per-channel-scaled copies of the padded input. The kernel keeps
  nn.Conv's layout (k, k, 1, C). XLA:CPU ran the grouped convolution (feature_group_count
  = C) of the scanned stack slowly: a training step of one block (width 64, k 5, 8x8
  maps, batch 64) took 1.74 s of CPU with it, 0.135 s with the shifted sums (2026-12-07,
  load about 15); the tests compare the sums with a direct numpy convolution."""
  features: int
  kernel_size: int
  dtype: Dtype = 'float32'
  param_dtype: Dtype = 'float32'

  @nn.compact
  def __call__(self, x_BHWC):
    k, c = self.kernel_size, self.features
    w_KKC = self.param('kernel', kernel_init(), (k, k, 1, c), self.param_dtype)[:, :, 0, :]
    bias_C = self.param('bias', channel_init(nn.initializers.zeros), (c,), self.param_dtype)
    w_KKC, bias_C = jnp.asarray(w_KKC, self.dtype), jnp.asarray(bias_C, self.dtype)
    x_BHWC = jnp.asarray(x_BHWC, self.dtype)
    h, w = x_BHWC.shape[1:3]
    padded = jnp.pad(x_BHWC, ((0, 0), *same_padding(k), (0, 0)))
    y_BHWC = sum(padded[:, i:i + h, j:j + w, :] * w_KKC[i, j]
                 for i in range(k) for j in range(k))
    return y_BHWC + bias_C


class Mixer(nn.Module):
  """One ConvMixer block: depthwise conv residual, then pointwise conv (each GELU + BN)."""
  dim: int
  kernel_size: int = 9
  axis_name: Optional[str] = None  # pmap axis for BatchNorm statistics
  dtype: Dtype = 'float32'
  param_dtype: Dtype = 'float32'

  @nn.compact
  def __call__(self, x_BHWC, *, train: bool):
    conv = dict(use_bias=True, dtype=self.dtype, param_dtype=self.param_dtype,
                kernel_init=kernel_init(), bias_init=channel_init(nn.initializers.zeros))
    bn = dict(axis_name=self.axis_name, dtype=self.dtype, param_dtype=self.param_dtype)
    k = self.kernel_size
    y = DepthwiseConv(self.dim, k, dtype=self.dtype, param_dtype=self.param_dtype,
                      name='depthwise')(x_BHWC)
    x_BHWC = split_height(x_BHWC + batch_norm(train, name='norm1', **bn)(_gelu(y)))
    y = nn.Conv(self.dim, (1, 1), name='pointwise', **conv)(x_BHWC)
    return split_height(batch_norm(train, name='norm2', **bn)(_gelu(y)))


class MixerStep(Mixer):
  """A Mixer as the body of `nn.scan` (carry in, carry out; `train` a static field)."""
  train: bool = False

  def __call__(self, x_BHWC, _):
    return super().__call__(x_BHWC, train=self.train), None


class Model(nn.Module):
  """ConvMixer classifier over (B, H, W, C) images; returns (B, num_classes) logits."""
  dim: int = 1536
  depth: int = 20
  kernel_size: int = 9
  patch_size: int = 7
  num_classes: int = 1000  # 0: no head; returns the pooled features (B, dim)
  # With a `stage` mesh axis > 1: microbatches of the GPipe pipeline over the blocks
  # (0 = twice the stages). BatchNorm then uses each microbatch's statistics: only
  # M = 1 computes the one-device function (see the module docstring).
  pipeline_microbatches: int = 0
  axis_name: Optional[str] = None  # pmap axis for BatchNorm statistics
  dtype: Dtype = 'float32'
  param_dtype: Dtype = 'float32'

  @nn.compact
  def __call__(self, x_BHWC, *, train: bool = False):
    check_spatial(x_BHWC, self.patch_size, 'ConvMixer input')
    fields = dict(dim=self.dim, kernel_size=self.kernel_size, axis_name=self.axis_name,
                  dtype=self.dtype, param_dtype=self.param_dtype)
    p = self.patch_size
    x = nn.Conv(self.dim, (p, p), strides=(p, p), padding='VALID', use_bias=True,
                dtype=self.dtype, param_dtype=self.param_dtype, kernel_init=kernel_init(),
                bias_init=channel_init(nn.initializers.zeros),
                name='stem_conv')(jnp.asarray(x_BHWC, self.dtype))
    x = batch_norm(train, axis_name=self.axis_name, dtype=self.dtype,
                   param_dtype=self.param_dtype, name='stem_norm')(_gelu(x))
    x = self.blocks(split_height(x), fields, train)
    x = x.mean(axis=(1, 2))
    if not self.num_classes:
      return x
    return classifier_head(self.num_classes, self.dtype, self.param_dtype)(x)

  def blocks(self, x_BHWC, fields: dict, train: bool):
    """The `depth` Mixers: one scan (init, one device) or a GPipe pipeline over `stage`."""
    axis, stages = pipeline.stage_axis()
    if stages > 1:
      microbatches = self.pipeline_microbatches or pipeline.default_microbatches(stages)
      pipeline.check_stack(self.depth, stages, microbatches, scanned=True)
      if not self.is_initializing():
        return self.pipelined(x_BHWC, fields, train, axis, stages, microbatches)
    step = nn.scan(MixerStep, variable_axes={'params': 0, 'batch_stats': 0},
                   split_rngs={'params': True}, length=self.depth,
                   metadata_params={nn.PARTITION_NAME: pipeline.LAYERS})
    return step(**fields, train=train, name='blocks')(x_BHWC, None)[0]

  def pipelined(self, x_BHWC, fields, train, axis, stages, microbatches):
    """The scanned blocks' stacked parameters and statistics run by `pipeline.gpipe`;
    in training the new running statistics go back to `batch_stats/blocks`."""
    stacked = {'params': nn.meta.unbox(self.variables['params']['blocks']),
               'batch_stats': self.variables['batch_stats']['blocks']}
    layer = Mixer(**fields, parent=None)

    def layer_fn(variables, x_bHWC, _, __):
      if not train:
        return layer.apply(variables, x_bHWC, train=False), {}
      y, new = layer.apply(variables, x_bHWC, train=True, mutable=['batch_stats'])
      return y, new['batch_stats']

    y, stats = pipeline.gpipe(layer_fn, stacked, x_BHWC, axis=axis, stages=stages,
                              microbatches=microbatches, updates=True,
                              logical=MAP_AXES)
    if train and self.is_mutable_collection('batch_stats'):
      self.put_variable('batch_stats', 'blocks', stats)
    return y


# The paper's Table 1 (ImageNet, 224 x 224); TINY is for tests and digits.
VARIANTS = {
    '1536/20': dict(dim=1536, depth=20, kernel_size=9, patch_size=7),
    '768/32': dict(dim=768, depth=32, kernel_size=7, patch_size=7),
    '1024/20': dict(dim=1024, depth=20, kernel_size=9, patch_size=14),
}
TINY = dict(dim=32, depth=8, kernel_size=5, patch_size=4)
