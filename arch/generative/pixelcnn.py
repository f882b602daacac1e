"""PixelCNN (van den Oord et al. 2016, "Pixel recurrent neural networks"), the Gated
PixelCNN (van den Oord et al. 2016, "Conditional image generation with PixelCNN decoders")
and the PixelCNN++ output distribution (Salimans et al. 2017), with their objective.

Every network maps images x (B, H, W, C) in [-1, 1] to per-pixel outputs (B, H, W, O)
whose value at (i, j) depends only on the pixels before (i, j) in raster order, so one
forward pass gives all conditionals p(x_ij | x_<ij):

- `PixelCNN`: a 7x7 convolution with mask A (taps above the centre and left of it), then
  residual blocks (1x1, 3x3 mask B (the centre tap too), 1x1) and a 1x1 head. Stacked
  masked 3x3 convolutions grow a receptive field with a blind spot: (i, j) never sees
  (i - 1, j + 2) and the wedge above-right of it.
- `GatedPixelCNN`: a vertical stack (k//2+1) x k convolutions over the rows up to the
  current one, and a horizontal stack 1 x (k//2+1) over the current row up to the current
  pixel. The vertical stack reaches the horizontal one shifted down a row (through a 1x1
  "link"), so the horizontal stack at (i, j) sees every pixel above and to the left: no
  blind spot. Gates are tanh(a) * sigmoid(b); the horizontal stack is residual; an
  optional class label adds a learned bias to every gate (conditional PixelCNN).
  The first layer is "mask A": its horizontal convolution is shifted right one pixel.

Colour (C > 1), as each paper does it:
- 'softmax' output (PixelRNN/PixelCNN's): the channels of a pixel are generated in
  order, each conditioned on the ones before it. Every layer's features are split into C
  contiguous groups, one per colour; at the current pixel (a mask's centre tap, and every
  1x1 convolution of the stream that sees the current pixel) group g reads the input
  groups < g (mask A, the first layer: colour g sees colours 0..g-1) or <= g (mask B).
  Outputs are C blocks of 256 logits, block c for colour c. The gated network's vertical
  stack never sees the current row, so only its horizontal stack is grouped; its first
  layer adds a 1x1 mask-A convolution of the current pixel to the shifted one.
- 'logistic_mix' output (PixelCNN++'s): the network conditions on whole earlier pixels
  (mask A hides the whole current pixel, no groups); per pixel it gives M mixture logits
  and per component, for every channel, a mean and a log-scale, and C(C-1)/2 coupling
  coefficients (tanh): channel c's mean is mu_c + sum_{c' < c} coeff_(c, c') x_c', so for
  RGB the green mean moves with red, blue with red and green (10 M outputs for RGB).
With one channel both reduce to the grey-scale networks: no groups, 3 M mixture outputs.

Outputs (`output`): 'softmax', 256 logits per channel; 'logistic_mix', PixelCNN++'s
discretized mixture of M logistics, each component's mass on level k the logistic's mass
on [x_k - 1/255, x_k + 1/255] for the value x_k = k / 127.5 - 1, except level 0, which
takes all mass below -1 + 1/255, and level 255, all mass above 1 - 1/255, so the 256
probabilities sum to one.

The objective (`make`): training minimises bits per dimension (the negative
log-likelihood over the 256 levels, in bits, divided by the H*W*C values); eval reports
per image `bits_per_dim` and `nll` (nats). `sample` draws pixel by pixel and within a
pixel channel by channel (a `lax.fori_loop` over the H*W*C values, one forward pass
each), each value from its exact conditional over the 256 levels given everything drawn
before it (for the mixture: the components reweighted by the pixel's earlier channels),
tempered by `temperature`.

Config: `config.task = 'generative.pixelcnn'`, `config.model_name =
'generative.pixelcnn:GatedPixelCNN'` (the module's `Model`) or `':PixelCNN'`; task_kwargs
(`Options`) `input_size` (H, W; larger data images whose size is a multiple of it are
area-pooled to it), `channels` (C). A model with `num_classes > 0` reads batch['label'].

Dimension key: B batch, H W C image, F features, O outputs per pixel, M mixture
components, K coupling coefficients (C(C-1)/2), L levels (256), E conditioning, X any
leading axes.
"""

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import arch
from arch.layers.conv import channel_init, kernel_init
from arch.task import ConfigError, Task, class_rows, parse_options, row_keys

Dtype = Any
LEVELS = 256
OUTPUTS = ('logistic_mix', 'softmax')
MIN_LOG_SCALE = -7.0  # PixelCNN++'s floor on the logistic log-scales


def output_features(output: str, num_mixtures: int, channels: int = 1) -> int:
  """O, the per-pixel outputs an `output` distribution over C channels needs."""
  if output == 'logistic_mix':
    if num_mixtures < 1:
      raise ConfigError(f'logistic_mix needs num_mixtures >= 1, got {num_mixtures}')
    return num_mixtures * (1 + 2 * channels + channels * (channels - 1) // 2)
  if output == 'softmax':
    return channels * LEVELS
  raise ConfigError(f'unknown output {output!r}; valid: {", ".join(OUTPUTS)}')


def colour_groups(output: str, channels: int) -> int:
  """How many colour groups the network's features split into: one per channel for the
  softmax (a pixel's channels in order), one for the mixture (whole pixels)."""
  return channels if output == 'softmax' else 1


def channel_groups(n: int, groups: int) -> np.ndarray:
  """(n,) the colour group of each of n channels: contiguous blocks whose sizes differ by
  at most one (the image's own channels: channel c is group c)."""
  if n < groups:
    raise ValueError(f'{n} channels cannot be split into {groups} colour groups')
  return np.arange(n) * groups // n


def centre_mask(in_groups, out_groups, include_centre: bool) -> np.ndarray:
  """(in, out) 0/1 weights at the current pixel: output group g reads the input groups < g
  (mask A) or <= g (mask B). One group: nothing (A) or everything (B)."""
  i, o = np.asarray(in_groups)[:, None], np.asarray(out_groups)[None]
  return ((i <= o) if include_centre else (i < o)).astype(np.float32)


def _check_image(x_BHWC, what: str):
  if x_BHWC.ndim != 4:
    raise ValueError(f'{what}: takes (batch, H, W, C) images; got shape {x_BHWC.shape}')


def _check_odd(k: int, what: str):
  if k < 1 or k % 2 == 0:
    raise ValueError(f'{what}: kernel sizes must be odd, got {k}')


# ------------------------------------------------------------------------------ PixelCNN


def causal_mask(k: int) -> np.ndarray:
  """(k, k) 0/1 taps before the centre of a masked convolution: the rows above it and the
  centre row left of it (`pixel_mask` sets the centre tap per colour group)."""
  m = np.zeros((k, k), np.float32)
  m[:k // 2] = 1
  m[k // 2, :k // 2] = 1
  return m


def pixel_mask(k: int, in_groups, out_groups, include_centre: bool) -> np.ndarray:
  """(k, k, in, out) 0/1 kernel mask: every channel at the taps before the centre
  (`causal_mask`), `centre_mask` at the centre."""
  m = np.broadcast_to(causal_mask(k)[:, :, None, None],
                      (k, k, len(in_groups), len(out_groups))).copy()
  m[k // 2, k // 2] = centre_mask(in_groups, out_groups, include_centre)
  return m


class MaskedConv(nn.Module):
  """A k x k 'SAME' convolution whose kernel is zero outside `pixel_mask` (mask 'A' or
  'B', over `groups` colour groups of its input and output channels). The full kernel is
  stored (as reference implementations do); masked taps get no gradient."""
  features: int
  kernel_size: int
  mask: str  # 'A': first layer (excludes the centre pixel) | 'B': later layers
  groups: int = 1
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BHWC):
    k = self.kernel_size
    _check_odd(k, 'MaskedConv')
    if self.mask not in ('A', 'B'):
      raise ValueError(f"MaskedConv: mask must be 'A' or 'B', got {self.mask!r}")
    kernel = self.param('kernel', kernel_init(), (k, k, x_BHWC.shape[-1], self.features),
                        self.param_dtype)
    bias = self.param('bias', channel_init(nn.initializers.zeros), (self.features,),
                      self.param_dtype)
    cin = x_BHWC.shape[-1]
    mask = jnp.asarray(pixel_mask(k, channel_groups(cin, self.groups),
                                  channel_groups(self.features, self.groups),
                                  self.mask == 'B'), self.dtype)
    y = jax.lax.conv_general_dilated(
        x_BHWC.astype(self.dtype), kernel.astype(self.dtype) * mask, (1, 1),
        [(k // 2, k // 2)] * 2, dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    return y + bias.astype(self.dtype)


def _conv1x1(x_BHWF, features: int, name: str, groups: int, kw: dict):
  """A 1x1 convolution of a stream that sees the current pixel; over colour groups, mask
  B (output group g reads input groups <= g)."""
  mask = None
  if groups > 1:
    mask = centre_mask(channel_groups(x_BHWF.shape[-1], groups),
                       channel_groups(features, groups), True)[None, None]
  return nn.Conv(features, (1, 1), mask=mask, name=name, kernel_init=kernel_init(),
                 bias_init=channel_init(nn.initializers.zeros), **kw)(x_BHWF)


class PixelCNN(nn.Module):
  """PixelCNN: images (B, H, W, C) in [-1, 1] -> per-pixel outputs (B, H, W, O)."""
  features: int = 128    # h; the residual stream carries 2h channels (PixelRNN's Fig. 5)
  num_blocks: int = 15   # residual blocks after the mask-A layer
  first_kernel: int = 7
  kernel: int = 3
  output: str = 'logistic_mix'  # or 'softmax'
  num_mixtures: int = 5
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BHWC, label_B=None, *, train: bool = False):
    del label_B, train  # unconditional, no dropout
    _check_image(x_BHWC, 'PixelCNN')
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    f, c = self.features, x_BHWC.shape[-1]
    g = colour_groups(self.output, c)
    y_BHWF = MaskedConv(2 * f, self.first_kernel, 'A', g, name='input', **kw)(x_BHWC)
    for i in range(self.num_blocks):
      r = _conv1x1(nn.relu(y_BHWF), f, f'block{i}_reduce', g, kw)
      r = MaskedConv(f, self.kernel, 'B', g, name=f'block{i}_conv', **kw)(nn.relu(r))
      y_BHWF = y_BHWF + _conv1x1(nn.relu(r), 2 * f, f'block{i}_expand', g, kw)
    y_BHWF = _conv1x1(nn.relu(y_BHWF), 2 * f, 'head_hidden', g, kw)
    out = _conv1x1(nn.relu(y_BHWF), output_features(self.output, self.num_mixtures, c),
                   'head_out', g, kw)
    return out.astype(jnp.float32)


# ------------------------------------------------------------------------ Gated PixelCNN


def shift_down(x_BHWC):
  """Row i gets row i - 1 (zeros in row 0)."""
  return jnp.pad(x_BHWC, ((0, 0), (1, 0), (0, 0), (0, 0)))[:, :-1]


def shift_right(x_BHWC):
  """Column j gets column j - 1 (zeros in column 0)."""
  return jnp.pad(x_BHWC, ((0, 0), (0, 0), (1, 0), (0, 0)))[:, :, :-1]


def gate(a_BHW2F):
  """tanh(first half) * sigmoid(second half) of the channels."""
  f_BHWF, g_BHWF = jnp.split(a_BHW2F, 2, axis=-1)
  return jnp.tanh(f_BHWF) * nn.sigmoid(g_BHWF)


class GatedLayer(nn.Module):
  """One gated layer of both stacks: (vertical, horizontal) -> (vertical, horizontal)."""
  features: int
  kernel: int
  first: bool = False  # mask A: the horizontal stack excludes the current pixel; no residual
  groups: int = 1  # colour groups of the horizontal stack (module doc)
  dropout: float = 0.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, v_BHWF, h_BHWF, cond_BE, *, train: bool):
    k, f = self.kernel, self.features
    _check_odd(k, 'GatedLayer')
    r = k // 2
    conv = functools.partial(nn.Conv, padding='VALID', dtype=self.dtype,
                             param_dtype=self.param_dtype, kernel_init=kernel_init(),
                             bias_init=channel_init(nn.initializers.zeros))
    # Vertical: (i, j) <- rows i-r..i, columns j-r..j+r (padding instead of a mask).
    v_pad = jnp.pad(v_BHWF, ((0, 0), (r, 0), (r, r), (0, 0)))
    v_BHW2F = conv(2 * f, (r + 1, k), name='vertical')(v_pad)
    # Horizontal: (i, j) <- row i, columns j-r..j; the first layer shifts to j-r-1..j-1.
    # Over colour groups, the current pixel's tap is mask B (later layers), and the first
    # layer adds the current pixel's earlier colours through a 1x1 mask-A convolution.
    in_groups = channel_groups(h_BHWF.shape[-1], self.groups)
    gate_groups = np.tile(channel_groups(f, self.groups), 2)  # both halves of each gate
    h_mask = None
    if self.groups > 1 and not self.first:
      h_mask = np.ones((1, r + 1, len(in_groups), 2 * f), np.float32)
      h_mask[0, r] = centre_mask(in_groups, gate_groups, True)
    h_pad = jnp.pad(h_BHWF, ((0, 0), (0, 0), (r, 0), (0, 0)))
    h_BHW2F = conv(2 * f, (1, r + 1), mask=h_mask, name='horizontal')(h_pad)
    if self.first:
      h_BHW2F = shift_right(h_BHW2F)
      if self.groups > 1:
        centre = centre_mask(in_groups, gate_groups, False)[None, None]
        h_BHW2F = h_BHW2F + conv(2 * f, (1, 1), use_bias=False, mask=centre,
                                 name='centre')(h_BHWF)
    # The vertical stack reaches row i only from rows < i: shifted down before the link.
    h_BHW2F = h_BHW2F + conv(2 * f, (1, 1), name='link')(shift_down(v_BHW2F))
    if cond_BE is not None:
      dense = functools.partial(nn.Dense, 2 * f, use_bias=False, dtype=self.dtype,
                                param_dtype=self.param_dtype)
      v_BHW2F = v_BHW2F + dense(name='cond_vertical')(cond_BE)[:, None, None]
      h_BHW2F = h_BHW2F + dense(name='cond_horizontal')(cond_BE)[:, None, None]
    g_BHWF = nn.Dropout(self.dropout)(gate(h_BHW2F), deterministic=not train)
    res_mask = None
    if self.groups > 1:
      groups_f = channel_groups(f, self.groups)
      res_mask = centre_mask(groups_f, groups_f, True)[None, None]
    out_BHWF = conv(f, (1, 1), mask=res_mask, name='residual')(g_BHWF)
    return gate(v_BHW2F), (out_BHWF if self.first else h_BHWF + out_BHWF)


class GatedPixelCNN(nn.Module):
  """Gated PixelCNN: images (B, H, W, C) in [-1, 1] (and labels (B,) when num_classes > 0)
  -> per-pixel outputs (B, H, W, O)."""
  features: int = 128
  num_layers: int = 15   # gated layers, the first with mask A
  first_kernel: int = 7
  kernel: int = 3
  output: str = 'logistic_mix'  # or 'softmax'
  num_mixtures: int = 5
  num_classes: int = 0   # > 0: class-conditional on label_B
  dropout: float = 0.0   # on the horizontal stack's gated units, in training
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BHWC, label_B=None, *, train: bool = False):
    _check_image(x_BHWC, 'GatedPixelCNN')
    if self.num_layers < 1:
      raise ValueError(f'GatedPixelCNN: num_layers must be >= 1, got {self.num_layers}')
    cond_BE = None
    if self.num_classes:
      if label_B is None:
        raise ValueError(f'GatedPixelCNN: num_classes={self.num_classes} needs labels')
      cond_BE = jax.nn.one_hot(label_B, self.num_classes, dtype=self.dtype)
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    c = x_BHWC.shape[-1]
    g = colour_groups(self.output, c)
    v_BHWF = h_BHWF = x_BHWC.astype(self.dtype)
    for i in range(self.num_layers):
      v_BHWF, h_BHWF = GatedLayer(self.features, self.first_kernel if i == 0 else self.kernel,
                                  first=i == 0, groups=g, dropout=self.dropout,
                                  name=f'layer{i}', **kw)(v_BHWF, h_BHWF, cond_BE, train=train)
    y_BHWF = _conv1x1(nn.relu(h_BHWF), self.features, 'head_hidden', g, kw)
    out = _conv1x1(nn.relu(y_BHWF), output_features(self.output, self.num_mixtures, c),
                   'head_out', g, kw)
    return out.astype(jnp.float32)


Model = GatedPixelCNN


# ------------------------------------------------------------------ output distributions


def to_input(levels):
  """Pixel levels 0..255 -> the networks' inputs in [-1, 1]."""
  return levels.astype(jnp.float32) / 127.5 - 1.0


def discretized_logistic_log_prob(levels_X, mean_X, log_scale_X):
  """log P(level) (X) of one discretized logistic per element (broadcast): levels int in
  0..255, mean in [-1, 1] pixel units, log-scale floored at MIN_LOG_SCALE."""
  log_scale_X = jnp.maximum(log_scale_X, MIN_LOG_SCALE)
  levels_X = jnp.asarray(levels_X)
  inv_scale_X = jnp.exp(-log_scale_X)
  centred_X = to_input(levels_X) - mean_X
  plus_X = inv_scale_X * (centred_X + 1.0 / 255)   # the bin's upper edge, standardised
  minus_X = inv_scale_X * (centred_X - 1.0 / 255)  # and its lower edge
  mid_X = inv_scale_X * centred_X
  log_cdf_plus = -jax.nn.softplus(-plus_X)   # level 0: all mass below its upper edge
  log_sf_minus = -jax.nn.softplus(minus_X)   # level 255: all mass above its lower edge
  # Interior bins: cdf(plus) - cdf(minus), on the side of the mean where it does not cancel.
  delta_X = jnp.where(mid_X > 0, nn.sigmoid(-minus_X) - nn.sigmoid(-plus_X),
                      nn.sigmoid(plus_X) - nn.sigmoid(minus_X))
  # Far in the tails the difference underflows: the density at the bin centre times the
  # bin width 2/255, as PixelCNN++ does.
  log_pdf_mid = mid_X - log_scale_X - 2.0 * jax.nn.softplus(mid_X)
  log_interior = jnp.where(delta_X > 1e-5, jnp.log(jnp.maximum(delta_X, 1e-12)),
                           log_pdf_mid - np.log(127.5))
  return jnp.where(levels_X == 0, log_cdf_plus,
                   jnp.where(levels_X == LEVELS - 1, log_sf_minus, log_interior))


def mixture_parts(params_XO, channels: int):
  """PixelCNN++'s mixture outputs (..., M (1 + 2C + K)) -> log-weights (..., M), means
  (..., C, M), log-scales (..., C, M), coupling coefficients in (-1, 1) (..., K, M)."""
  params_XO = params_XO.astype(jnp.float32)
  per = 1 + 2 * channels + channels * (channels - 1) // 2
  m = params_XO.shape[-1] // per
  if m * per != params_XO.shape[-1]:
    raise ValueError(f'{params_XO.shape[-1]} mixture outputs are not M * {per} for '
                     f'{channels} channels')
  lead = params_XO.shape[:-1]
  log_w_XM = jax.nn.log_softmax(params_XO[..., :m], axis=-1)
  mean_XCM = params_XO[..., m:m + channels * m].reshape(*lead, channels, m)
  log_scale_XCM = params_XO[..., m + channels * m:m + 2 * channels * m].reshape(
      *lead, channels, m)
  coeff_XKM = jnp.tanh(params_XO[..., m + 2 * channels * m:].reshape(*lead, -1, m))
  return log_w_XM, mean_XCM, log_scale_XCM, coeff_XKM


def coupled_mean(mean_XCM, coeff_XKM, levels_XC, c: int):
  """Channel c's component means (..., M): mu_c + sum_{c' < c} coeff_(c, c') x_c', the
  coefficients in the order (1, 0), (2, 0), (2, 1), ... (PixelCNN++'s for RGB)."""
  out_XM = mean_XCM[..., c, :]
  k = c * (c - 1) // 2
  for prev in range(c):
    out_XM = out_XM + coeff_XKM[..., k + prev, :] * to_input(levels_XC[..., prev])[..., None]
  return out_XM


def _joint_log_weights(out_XO, levels_XC, upto: int):
  """(log pi_m + sum_{c < upto} log P_m(channel c's level)) (..., M): each mixture
  component's log-weight times its likelihood of the pixel's first `upto` channels, and
  the mixture's (means, log-scales, coefficients)."""
  log_w_XM, mean_XCM, log_scale_XCM, coeff_XKM = mixture_parts(out_XO, levels_XC.shape[-1])
  for c in range(upto):
    log_w_XM = log_w_XM + discretized_logistic_log_prob(
        levels_XC[..., c, None], coupled_mean(mean_XCM, coeff_XKM, levels_XC, c),
        log_scale_XCM[..., c, :])
  return log_w_XM, (mean_XCM, log_scale_XCM, coeff_XKM)


def channel_log_probs(out_XO, levels_XC, c: int, output: str):
  """(..., L) log P(channel c = each of the 256 levels | the pixels before, the pixel's
  channels before c, given in levels_XC (..., C); its channels from c on are ignored)."""
  channels = levels_XC.shape[-1]
  if output == 'softmax':
    lead = out_XO.shape[:-1]
    logits_XL = out_XO.reshape(*lead, channels, LEVELS)[..., c, :]
    return jax.nn.log_softmax(logits_XL.astype(jnp.float32), axis=-1)
  log_w_XM, (mean_XCM, log_scale_XCM, coeff_XKM) = _joint_log_weights(out_XO, levels_XC, c)
  log_w_XM = log_w_XM - jax.nn.logsumexp(log_w_XM, axis=-1, keepdims=True)
  log_p_XLM = discretized_logistic_log_prob(
      jnp.arange(LEVELS)[:, None], coupled_mean(mean_XCM, coeff_XKM, levels_XC, c)[..., None, :],
      log_scale_XCM[..., c, None, :])
  return jax.nn.logsumexp(log_p_XLM + log_w_XM[..., None, :], axis=-1)


def level_log_probs(out_XO, output: str):
  """(..., L) log-probabilities of all 256 levels of a grey pixel from its outputs."""
  return channel_log_probs(out_XO, jnp.zeros((*out_XO.shape[:-1], 1), jnp.int32), 0, output)


def log_prob(out_XO, levels_XC, output: str):
  """log P(pixel) (...) of the levels (..., C) of its channels, from the network outputs
  (..., O) at that pixel."""
  levels_XC = jnp.asarray(levels_XC).astype(jnp.int32)
  channels = levels_XC.shape[-1]
  if output == 'softmax':
    logits_XCL = out_XO.reshape(*out_XO.shape[:-1], channels, LEVELS).astype(jnp.float32)
    logp_XCL = jax.nn.log_softmax(logits_XCL, axis=-1)
    return jnp.take_along_axis(logp_XCL, levels_XC[..., None], -1)[..., 0].sum(-1)
  return jax.nn.logsumexp(_joint_log_weights(out_XO, levels_XC, channels)[0], axis=-1)


# ----------------------------------------------------------------------------- objective


@dataclasses.dataclass(frozen=True)
class Options:
  """PixelCNN's task_kwargs."""
  # (H, W) modelled; larger data images whose size is a multiple of it are area-pooled to it
  input_size: tuple = (8, 8)
  channels: int = 1


def make(config) -> Task:
  """Autoregressive model of 256-level images. Train metrics: `loss` = `bits_per_dim`;
  eval: per image `bits_per_dim` and `nll` (nats)."""
  opts = parse_options(Options, config)
  h, w = tuple(opts.input_size)
  channels = int(opts.channels)
  if channels < 1:
    raise ConfigError(f'task_kwargs.channels must be >= 1, got {channels}')
  model = arch.model_from_config(config)
  output = getattr(model, 'output', None)
  if output is None:
    raise ConfigError(f'{config.model_name!r} has no `output` attribute; the pixelcnn task '
                      f'needs an autoregressive network: generative.pixelcnn:GatedPixelCNN '
                      f'or generative.pixelcnn:PixelCNN')
  output_features(output, getattr(model, 'num_mixtures', 0), channels)  # validates
  num_classes = int(getattr(model, 'num_classes', 0))
  dims = h * w * channels

  def inputs(batch):
    image = batch['image']
    if tuple(image.shape[1:]) != (h, w, channels):
      raise ValueError(f'images of shape {tuple(image.shape[1:])}; the task is built for '
                       f'{(h, w, channels)} (task_kwargs input_size, channels)')
    return image.astype(jnp.int32), batch['label'] if num_classes else None

  def preprocess(example):
    """Area-downsamples an image whose size is a multiple of input_size to it (48x48
    shapes -> 16x16: each value the rounded mean of a 3x3 block)."""
    image = np.asarray(example['image'])
    (ih, iw), (fh, fw) = image.shape[:2], (image.shape[0] // h, image.shape[1] // w)
    if (ih, iw) == (h, w):
      return example
    if fh < 1 or fw < 1 or (fh * h, fw * w) != (ih, iw):
      raise ConfigError(f'images of {ih}x{iw} do not pool to task_kwargs.input_size {h}x{w}')
    pooled = image.reshape(h, fh, w, fw, -1).astype(np.float32).mean((1, 3))
    return {**example, 'image': np.round(pooled).astype(np.uint8)}

  def init(rng, batch):
    levels_BHWC, label_B = inputs(batch)
    return model.init({'params': rng, 'dropout': rng}, to_input(levels_BHWC), label_B)

  def nll_nats(variables, batch, train, rng=None):
    levels_BHWC, label_B = inputs(batch)
    out_BHWO = model.apply(variables, to_input(levels_BHWC), label_B, train=train,
                           rngs={'dropout': rng} if train else None)
    return -log_prob(out_BHWO, levels_BHWC, output).sum((1, 2))

  def loss(variables, batch, rng):
    bpd = (nll_nats(variables, batch, True, rng) / (dims * np.log(2.0))).mean()
    return bpd, ({'loss': bpd, 'bits_per_dim': bpd}, {})

  def evaluate(variables, batch):
    nll_B = nll_nats(variables, batch, False)
    return {'nll': nll_B, 'bits_per_dim': nll_B / (dims * np.log(2.0))}

  def example_batch(batch_size):
    batch = {'image': jax.ShapeDtypeStruct((batch_size, h, w, channels), jnp.uint8)}
    if num_classes:
      batch['label'] = jax.ShapeDtypeStruct((batch_size,), jnp.int32)
    return batch

  def prompt_batch(prompts, num_samples):
    return class_rows(prompts, num_samples, num_classes)

  def sample(variables, batch, rng, *, row_ids, temperature: float = 1.0, **unused):
    """Pixel by pixel, channel by channel: {'images': (B, H, W, C) uint8}. Value p (raster
    order over H, W, C) of row r draws with fold_in(fold_in(rng, row_ids[r]), p) from its
    conditional's 256 probabilities to the power 1 / temperature, renormalised (0: the
    most likely level)."""
    del unused
    b = row_ids.shape[0]
    label_B = batch['label'] if num_classes else None
    keys_B = row_keys(rng, row_ids)

    def body(p, levels_BHWC):
      i, j, c = p // (w * channels), p // channels % w, p % channels
      out_BHWO = model.apply(variables, to_input(levels_BHWC), label_B, train=False)
      pixel_BO, pixel_BC = out_BHWO[:, i, j], levels_BHWC[:, i, j]
      logp_BL = jax.lax.switch(c, [functools.partial(channel_log_probs, c=k, output=output)
                                   for k in range(channels)], pixel_BO, pixel_BC)
      if temperature == 0:
        new_B = jnp.argmax(logp_BL, axis=-1)
      else:
        new_B = jax.vmap(lambda k, l: jax.random.categorical(jax.random.fold_in(k, p), l))(
            keys_B, logp_BL / temperature)
      return levels_BHWC.at[:, i, j, c].set(new_B.astype(jnp.int32))

    levels_BHWC = jax.lax.fori_loop(0, h * w * channels, body,
                                    jnp.zeros((b, h, w, channels), jnp.int32))
    return {'images': levels_BHWC.astype(jnp.uint8)}

  return Task(init=init, loss=loss, evaluate=evaluate, example_batch=example_batch,
              preprocess=preprocess, sample=sample, prompt_batch=prompt_batch)


# Test sizes: enough gated layers (a 7-wide first layer and four 3-wide ones) that every
# earlier pixel of an 8x8 image reaches every position.
TINY = dict(features=8, num_layers=5, first_kernel=7, kernel=3, num_mixtures=3)
TINY_PIXELCNN = dict(features=4, num_blocks=2, first_kernel=7, kernel=3, num_mixtures=3)
