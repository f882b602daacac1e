"""Normalizing flows: RealNVP (Dinh et al. 2017, "Density estimation using Real NVP") and
Glow (Kingma & Dhariwal 2018, "Glow: Generative flow with invertible 1x1 convolutions"),
with their objective: the exact negative log-likelihood of dequantized images in bits/dim.

Every layer is a bijection called as `layer(x, inverse=False) -> (y, logdet (B,))`; with
`inverse=True` it maps y back to x and returns the log-det of that inverse map. A flow
(`RealNVP`, `Glow`) exposes `forward(x) -> (z, logdet)` and `inverse(z) -> x`, where z has
x's shape: the variables factored out at each scale are put back in place (unsqueezed), so
the prior is N(0, I) over z whatever the architecture.

RealNVP: each scale but the last is 3 affine couplings with alternating checkerboard masks,
a squeeze (2x2 pixels -> 4 channels), 3 couplings with alternating channel masks, then half
the channels factored out; the last scale is 4 checkerboard couplings. The scale/shift net
is the paper's ResNet with log-scale = learned per-channel scale * tanh(.). Choices: no
batch norm (neither as a flow layer nor in the nets: batch statistics would make one
example's density depend on its batch) and no weight normalisation: plain convolutions, the
last one zero-initialised so every coupling starts as the identity; the factored-out
variables have a standard normal prior, as in the paper.

Glow: each of L levels is a squeeze, K steps of (actnorm, invertible 1x1 convolution,
affine coupling), then (except at the last level) a split. Actnorm is a per-channel affine
map initialised from data so its outputs have zero mean and unit variance per channel:
the data-dependent part lives in the 'actnorm' collection and is set from the first batch
the objective's `loss` sees (the loop's `init` gets an all-zeros example batch, useless for
statistics), over all devices under pmap (`axis_name`); the learned part is a
zero-initialised parameter added to it. The 1x1 convolution is LU-parameterised,
W = P L (U + diag(sign * exp(log_s))), P and sign fixed (the 'consts' collection),
log|det W| = sum(log_s) per pixel. The coupling's net is conv3x3 -> actnorm -> ReLU ->
conv1x1 -> actnorm -> ReLU -> zero-initialised conv3x3 (Glow's
Conv2dZeros, with its exp(3 * logs) output scale); its scale is sigmoid(h + 2) as in the
reference code, divided by sigmoid(2) so that a zero-initialised coupling is exactly the
identity. Split-off variables get Glow's learned prior: N(mean, exp(logs)^2) from a
zero-initialised conv of the kept half, applied as the affine map to standardised noise;
the top latent is N(0, I).

The objective: 8-bit pixels k are dequantized to y = (k + u) / 256, u ~ U[0, 1), mapped to
the flow's input by `logit` (RealNVP: logit(alpha + (1 - 2 alpha) y)) or `affine` (Glow:
y - 1/2), log-dets counted. bits/dim = (-log p(y) + D log 256) / (D log 2), the usual
discrete-data bound; `loss` is its batch mean, `evaluate` reports it per example with
dequantization noise that is a fixed function of the image (comparable across evals,
independent of the batch it lands in). `num_bins` < 256 is Glow's reduced-bit option
generalised: pixel k falls in bin floor(k * num_bins / 256), y = (bin + u) / num_bins and
the constant is D log num_bins, so bits/dim is that of the binned image. Where the data's
pixel values map one-to-one onto the bins (the offline digits' 17 values round(j * 255 / 16)
with num_bins=17) it is also -log2 P(8-bit image) / D, for a model whose support is those
values; samples map bin b back to round(b * 255 / (num_bins - 1)).

Everything computes in float32 (exact inverses and log-dets need it): the flows take no
dtype, so a config's compute_dtype does not reach them.

Dimension key: B batch, H W height and width, C channels, D = H * W * C dimensions.
"""

import dataclasses
import math
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import arch
from arch.generative import image_keys
from arch.images import labelled_images
from arch.layers.conv import channel_init, kernel_init
from arch.task import ConfigError, Task, parse_options, row_keys, unconditional_rows


# ---------------------------------------------------------------------------- helpers


def squeeze(x_BHWC):
  """(B, H, W, C) -> (B, H/2, W/2, 4C): each 2x2 block's pixels become channels."""
  b, h, w, c = x_BHWC.shape
  x = x_BHWC.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h // 2, w // 2, 4 * c)


def unsqueeze(x_BHWC):
  """The inverse of squeeze: (B, H, W, 4C) -> (B, 2H, 2W, C)."""
  b, h, w, c4 = x_BHWC.shape
  x = x_BHWC.reshape(b, h, w, 2, 2, c4 // 4).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, 2 * h, 2 * w, c4 // 4)


def assemble(top_BHWC, factored):
  """One latent of the input's shape from the top latent and the factored-out ones (first
  scale first): at each scale the factored half goes before the rest, then unsqueeze."""
  z = top_BHWC
  for f in reversed(factored):
    z = unsqueeze(jnp.concatenate([f, z], axis=-1))
  return z


def disassemble(z_BHWC, num_factored: int):
  """The inverse of assemble: (the rest after `num_factored` splits, [factored...])."""
  factored = []
  for _ in range(num_factored):
    z_BHWC = squeeze(z_BHWC)
    c = z_BHWC.shape[-1] // 2
    factored.append(z_BHWC[..., :c])
    z_BHWC = z_BHWC[..., c:]
  return z_BHWC, factored


def checkerboard_mask(h: int, w: int, parity: int):
  """(1, H, W, 1) float: 1 on the pixels a coupling keeps, (i + j + parity) even."""
  ij = np.add.outer(np.arange(h), np.arange(w)) + parity
  return jnp.asarray((ij % 2 == 0).astype(np.float32))[None, :, :, None]


def channel_mask(c: int, parity: int):
  """(1, 1, 1, C) float: 1 on the kept half of the channels (first half for parity 0)."""
  keep = np.arange(c) < c // 2
  return jnp.asarray((keep != bool(parity)).astype(np.float32))[None, None, None, :]


def per_example(x_BHWC):
  return x_BHWC.reshape(x_BHWC.shape[0], -1).sum(-1)


def std_normal_logpdf(z_BHWC):
  """log N(z; 0, I) summed per example: (B,)."""
  return per_example(-0.5 * (z_BHWC ** 2 + math.log(2 * math.pi)))


def conv(features: int, kernel: int = 3, zero: bool = False, use_bias: bool = True, name=None):
  init = nn.initializers.zeros if zero else nn.initializers.kaiming_normal()
  return nn.Conv(features, (kernel, kernel), padding='SAME', use_bias=use_bias,
                 kernel_init=kernel_init(init), bias_init=channel_init(nn.initializers.zeros),
                 name=name)


class ZeroConv(nn.Module):
  """Glow's Conv2dZeros: a zero-initialised conv3x3 whose output is scaled by exp(3 logs)."""
  features: int
  logscale_factor: float = 3.0

  @nn.compact
  def __call__(self, x_BHWC):
    y = conv(self.features, 3, zero=True, name='conv')(x_BHWC)
    logs = self.param('logs', channel_init(nn.initializers.zeros), (self.features,))
    return y * jnp.exp(logs * self.logscale_factor)


# ---------------------------------------------------------------------------- layers


class ResNetST(nn.Module):
  """RealNVP's scale/shift net: conv, residual blocks, ReLU, zero-init conv ->
  (log-scale = scale * tanh(.), shift), each (B, H, W, out_channels)."""
  hidden: int = 64
  num_blocks: int = 4

  @nn.compact
  def __call__(self, x_BHWC, out_channels: int):
    h = conv(self.hidden, name='conv_in')(x_BHWC)
    for i in range(self.num_blocks):
      r = conv(self.hidden, name=f'block{i}_conv0')(nn.relu(h))
      h = h + conv(self.hidden, name=f'block{i}_conv1')(nn.relu(r))
    out = conv(2 * out_channels, zero=True, name='conv_out')(nn.relu(h))
    scale = self.param('scale', channel_init(nn.initializers.ones), (out_channels,))
    return scale * jnp.tanh(out[..., :out_channels]), out[..., out_channels:]


class Coupling(nn.Module):
  """RealNVP's affine coupling: y = b x + (1 - b)(x exp(s(b x)) + t(b x)), b a mask."""
  mask: str = 'checkerboard'  # or 'channel'
  parity: int = 0
  hidden: int = 64
  num_blocks: int = 4

  @nn.compact
  def __call__(self, x_BHWC, inverse: bool = False):
    _, h, w, c = x_BHWC.shape
    if self.mask == 'checkerboard':
      b = checkerboard_mask(h, w, self.parity)
    elif self.mask == 'channel':
      b = channel_mask(c, self.parity)
    else:
      raise ValueError(f"Coupling.mask must be 'checkerboard' or 'channel', got {self.mask!r}")
    given = x_BHWC * b  # identical for x and y: the kept part passes through unchanged
    if self.mask == 'checkerboard':  # tell the net which pixels it sees
      given = jnp.concatenate([given, jnp.broadcast_to(b, (*x_BHWC.shape[:3], 1))], axis=-1)
    log_s, t = ResNetST(self.hidden, self.num_blocks, name='st')(given, c)
    log_s, t = log_s * (1 - b), t * (1 - b)
    if inverse:
      return (x_BHWC - t) * jnp.exp(-log_s), -per_example(log_s)
    return x_BHWC * jnp.exp(log_s) + t, per_example(log_s)


class ActNorm(nn.Module):
  """Glow's actnorm: y = (x + bias) * exp(logs) per channel, data-initialised.

  bias and logs are each a learned, zero-initialised parameter plus a data-dependent
  offset in the 'actnorm' collection. The offset is set once, when a forward pass runs with
  'actnorm' mutable and its `initialized` flag is 0 (the objective's first training step),
  so that this layer's outputs on that batch have zero mean and unit variance per channel
  (over all devices: under pmap the statistics are averaged over `axis_name`).
  """
  axis_name: Optional[str] = None

  @nn.compact
  def __call__(self, x_BHWC, inverse: bool = False):
    _, h, w, c = x_BHWC.shape
    bias = self.param('bias', channel_init(nn.initializers.zeros), (c,))
    logs = self.param('logs', channel_init(nn.initializers.zeros), (c,))
    data_bias = self.variable('actnorm', 'bias', jnp.zeros, (c,))
    data_logs = self.variable('actnorm', 'logs', jnp.zeros, (c,))
    initialized = self.variable('actnorm', 'initialized', jnp.zeros, ())
    if not inverse and self.is_mutable_collection('actnorm') and not self.is_initializing():
      x = jax.lax.stop_gradient(x_BHWC)
      mean = x.mean((0, 1, 2))
      if self.axis_name is not None:
        mean = jax.lax.pmean(mean, self.axis_name)
      var = ((x - mean) ** 2).mean((0, 1, 2))
      if self.axis_name is not None:
        var = jax.lax.pmean(var, self.axis_name)
      std = jnp.sqrt(var)
      done = initialized.value > 0
      data_bias.value = jnp.where(done, data_bias.value, -mean)
      data_logs.value = jnp.where(done, data_logs.value, -jnp.log(std + 1e-6))
      initialized.value = jnp.ones(())
    b, s = bias + data_bias.value, logs + data_logs.value
    logdet = jnp.full((x_BHWC.shape[0],), h * w * s.sum())
    if inverse:
      return x_BHWC * jnp.exp(-s) - b, -logdet
    return (x_BHWC + b) * jnp.exp(s), logdet


def rotation_lu(key, c: int):
  """(P, L with unit diagonal, U) of a random c x c rotation."""
  return jax.scipy.linalg.lu(jnp.linalg.qr(jax.random.normal(key, (c, c)))[0])


class InvConv1x1(nn.Module):
  """Glow's invertible 1x1 convolution, LU-decomposed: W = P (L + I) (U + diag(sign e^s)),
  initialised from a random rotation; P and sign are fixed (the 'consts' collection)."""

  @nn.compact
  def __call__(self, x_BHWC, inverse: bool = False):
    _, h, w, c = x_BHWC.shape
    if self.is_initializing():  # every part from one rotation
      decomposed = rotation_lu(self.make_rng('params'), c)
      lu = lambda *_: decomposed
    else:  # flax re-runs param inits abstractly at apply time to check shapes
      lu = lambda *_: rotation_lu(jax.random.key(0), c)
    perm = self.variable('consts', 'perm', lambda: lu()[0]).value
    sign = self.variable('consts', 'sign', lambda: jnp.sign(jnp.diag(lu()[2]))).value
    lower = self.param('lower', lambda _: jnp.tril(lu()[1], -1))
    upper = self.param('upper', lambda _: jnp.triu(lu()[2], 1))
    log_s = self.param('log_s', lambda _: jnp.log(jnp.abs(jnp.diag(lu()[2]))))
    eye = jnp.eye(c)
    l_CC = jnp.tril(lower, -1) + eye
    u_CC = jnp.triu(upper, 1) + jnp.diag(sign * jnp.exp(log_s))
    logdet = jnp.full((x_BHWC.shape[0],), h * w * log_s.sum())
    if inverse:
      l_inv = jax.scipy.linalg.solve_triangular(l_CC, eye, lower=True, unit_diagonal=True)
      u_inv = jax.scipy.linalg.solve_triangular(u_CC, eye, lower=False)
      w_inv = u_inv @ l_inv @ perm.T
      return jnp.einsum('BHWC,DC->BHWD', x_BHWC, w_inv), -logdet
    w_CC = perm @ l_CC @ u_CC
    return jnp.einsum('BHWC,DC->BHWD', x_BHWC, w_CC), logdet


class GlowCoupling(nn.Module):
  """Glow's affine coupling on the channel halves: y_b = (x_b + t(x_a)) * s(x_a)."""
  hidden: int = 512
  axis_name: Optional[str] = None  # for the actnorms' data-dependent init under pmap

  @nn.compact
  def __call__(self, x_BHWC, inverse: bool = False):
    c = x_BHWC.shape[-1]
    xa, xb = x_BHWC[..., :c // 2], x_BHWC[..., c // 2:]
    h = conv(self.hidden, 3, use_bias=False, name='conv0')(xa)
    h = nn.relu(ActNorm(self.axis_name, name='actnorm0')(h)[0])
    h = conv(self.hidden, 1, use_bias=False, name='conv1')(h)
    h = nn.relu(ActNorm(self.axis_name, name='actnorm1')(h)[0])
    h = ZeroConv(2 * xb.shape[-1], name='out')(h)
    shift, raw = h[..., 0::2], h[..., 1::2]
    log_s = jax.nn.log_sigmoid(raw + 2.0) - jax.nn.log_sigmoid(2.0)  # 0 at init
    if inverse:
      xb = xb * jnp.exp(-log_s) - shift
      return jnp.concatenate([xa, xb], axis=-1), -per_example(log_s)
    yb = (xb + shift) * jnp.exp(log_s)
    return jnp.concatenate([xa, yb], axis=-1), per_example(log_s)


class GlowStep(nn.Module):
  """One step of flow: actnorm -> invertible 1x1 conv -> affine coupling."""
  hidden: int = 512
  axis_name: Optional[str] = None

  @nn.compact
  def __call__(self, x_BHWC, inverse: bool = False):
    layers = [ActNorm(self.axis_name, name='actnorm'), InvConv1x1(name='invconv'),
              GlowCoupling(self.hidden, self.axis_name, name='coupling')]
    logdet = jnp.zeros((x_BHWC.shape[0],))
    for layer in (reversed(layers) if inverse else layers):
      x_BHWC, ld = layer(x_BHWC, inverse)
      logdet = logdet + ld
    return x_BHWC, logdet


class SplitPrior(nn.Module):
  """Glow's learned prior of the split-off half z given the kept half: N(mean, e^{2 logs})
  from a zero-init conv. Forward standardises z to eps; inverse maps eps back."""

  @nn.compact
  def __call__(self, kept_BHWC, z_BHWC, inverse: bool = False):
    h = ZeroConv(2 * z_BHWC.shape[-1], name='prior')(kept_BHWC)
    mean, logs = h[..., 0::2], h[..., 1::2]
    if inverse:
      return mean + z_BHWC * jnp.exp(logs), per_example(logs)
    return (z_BHWC - mean) * jnp.exp(-logs), -per_example(logs)


# ---------------------------------------------------------------------------- flows


class RealNVP(nn.Module):
  """RealNVP's multi-scale flow: x (B, H, W, C) <-> z (B, H, W, C) ~ N(0, I)."""
  num_scales: int = 2
  hidden: int = 64     # width of each coupling's ResNet
  num_blocks: int = 4  # residual blocks per ResNet

  def setup(self):
    self.downsampling  # checks the sizes
    kw = dict(hidden=self.hidden, num_blocks=self.num_blocks)
    self.checker = [[Coupling('checkerboard', j % 2, **kw) for j in range(3)]
                    for _ in range(self.num_scales - 1)]
    self.channel = [[Coupling('channel', j % 2, **kw) for j in range(3)]
                    for _ in range(self.num_scales - 1)]
    self.final = [Coupling('checkerboard', j % 2, **kw) for j in range(4)]

  @property
  def downsampling(self) -> int:
    """H and W must be multiples of this."""
    if self.num_scales < 1:
      raise ValueError(f'RealNVP.num_scales must be >= 1, got {self.num_scales}')
    return 2 ** (self.num_scales - 1)

  def forward(self, x_BHWC):
    logdet = jnp.zeros((x_BHWC.shape[0],))
    factored = []
    for i in range(self.num_scales - 1):
      for layer in self.checker[i]:
        x_BHWC, ld = layer(x_BHWC)
        logdet += ld
      x_BHWC = squeeze(x_BHWC)
      for layer in self.channel[i]:
        x_BHWC, ld = layer(x_BHWC)
        logdet += ld
      c = x_BHWC.shape[-1] // 2
      factored.append(x_BHWC[..., :c])
      x_BHWC = x_BHWC[..., c:]
    for layer in self.final:
      x_BHWC, ld = layer(x_BHWC)
      logdet += ld
    return assemble(x_BHWC, factored), logdet

  def inverse(self, z_BHWC):
    x_BHWC, factored = disassemble(z_BHWC, self.num_scales - 1)
    for layer in reversed(self.final):
      x_BHWC = layer(x_BHWC, inverse=True)[0]
    for i in reversed(range(self.num_scales - 1)):
      x_BHWC = jnp.concatenate([factored[i], x_BHWC], axis=-1)
      for layer in reversed(self.channel[i]):
        x_BHWC = layer(x_BHWC, inverse=True)[0]
      x_BHWC = unsqueeze(x_BHWC)
      for layer in reversed(self.checker[i]):
        x_BHWC = layer(x_BHWC, inverse=True)[0]
    return x_BHWC

  def __call__(self, x_BHWC):
    return self.forward(x_BHWC)


class Glow(nn.Module):
  """Glow's multi-scale flow of L levels of K steps: x (B, H, W, C) <-> z ~ N(0, I)."""
  num_levels: int = 3        # L
  steps_per_level: int = 32  # K
  hidden: int = 512          # width of each coupling's net
  learn_prior: bool = True   # split-off halves: learned conditional prior, else N(0, I)
  axis_name: Optional[str] = None  # pmap's device axis, for actnorm's data-dependent init

  def setup(self):
    self.downsampling  # checks the sizes
    self.steps = [[GlowStep(self.hidden, self.axis_name) for _ in range(self.steps_per_level)]
                  for _ in range(self.num_levels)]
    self.priors = [SplitPrior() for _ in range(self.num_levels - 1)] if self.learn_prior else []

  @property
  def downsampling(self) -> int:
    """H and W must be multiples of this."""
    if self.num_levels < 1 or self.steps_per_level < 1:
      raise ValueError(f'Glow needs num_levels >= 1 and steps_per_level >= 1, got '
                       f'{self.num_levels} and {self.steps_per_level}')
    return 2 ** self.num_levels

  def forward(self, x_BHWC):
    logdet = jnp.zeros((x_BHWC.shape[0],))
    factored = []
    for i in range(self.num_levels):
      x_BHWC = squeeze(x_BHWC)
      for step in self.steps[i]:
        x_BHWC, ld = step(x_BHWC)
        logdet += ld
      if i < self.num_levels - 1:
        c = x_BHWC.shape[-1] // 2
        z, x_BHWC = x_BHWC[..., :c], x_BHWC[..., c:]
        if self.learn_prior:
          z, ld = self.priors[i](x_BHWC, z)
          logdet += ld
        factored.append(z)
    return assemble(unsqueeze(x_BHWC), factored), logdet

  def inverse(self, z_BHWC):
    x_BHWC, factored = disassemble(z_BHWC, self.num_levels - 1)
    x_BHWC = squeeze(x_BHWC)
    for i in reversed(range(self.num_levels)):
      if i < self.num_levels - 1:
        z = factored[i]
        if self.learn_prior:
          z = self.priors[i](x_BHWC, z, inverse=True)[0]
        x_BHWC = jnp.concatenate([z, x_BHWC], axis=-1)
      for step in reversed(self.steps[i]):
        x_BHWC = step(x_BHWC, inverse=True)[0]
      x_BHWC = unsqueeze(x_BHWC)
    return x_BHWC

  def __call__(self, x_BHWC):
    return self.forward(x_BHWC)


Model = RealNVP  # 'generative.flow'; 'generative.flow:Glow' names the other


# ---------------------------------------------------------------------------- objective

TRANSFORMS = ('logit', 'affine')


def to_flow_space(y_BHWC, transform: str, alpha: float):
  """Dequantized pixels in [0, 1) -> the flow's input, and the log-det per example."""
  if transform == 'affine':
    return y_BHWC - 0.5, jnp.zeros((y_BHWC.shape[0],))
  p = alpha + (1 - 2 * alpha) * y_BHWC
  x = jnp.log(p) - jnp.log1p(-p)
  return x, per_example(math.log(1 - 2 * alpha) - jnp.log(p) - jnp.log1p(-p))


def from_flow_space(x_BHWC, transform: str, alpha: float):
  if transform == 'affine':
    return x_BHWC + 0.5
  return (jax.nn.sigmoid(x_BHWC) - alpha) / (1 - 2 * alpha)


def to_bins(image_BHWC, num_bins: int):
  """8-bit pixels k -> bins floor(k * num_bins / 256) (float; the identity for 256)."""
  k = image_BHWC.astype(jnp.float32)
  return k if num_bins == 256 else jnp.floor(k * num_bins / 256.0)


def from_bins(b_BHWC, num_bins: int):
  """Bins -> 8-bit pixels spread over [0, 255] (the identity for 256), uint8."""
  b = jnp.clip(b_BHWC, 0, num_bins - 1)
  return (b if num_bins == 256 else jnp.round(b * 255.0 / (num_bins - 1))).astype(jnp.uint8)


def bits_per_dim(model, variables, image_BHWC, u_BHWC, transform: str, alpha: float,
                 num_bins: int = 256, mutable=()):
  """-log2 P(image) / D per example (B,): the dequantization bound for 8-bit pixels in
  `num_bins` bins, noise u in [0, 1); with `mutable` collections also their updates."""
  y = (to_bins(image_BHWC, num_bins) + u_BHWC) / num_bins
  x, logdet_pre = to_flow_space(y, transform, alpha)
  if mutable:
    (z, logdet), updates = model.apply(variables, x, method='forward', mutable=list(mutable))
  else:
    (z, logdet), updates = model.apply(variables, x, method='forward'), {}
  d = math.prod(image_BHWC.shape[1:])
  nll = -(std_normal_logpdf(z) + logdet + logdet_pre) + d * math.log(num_bins)
  return nll / (d * math.log(2.0)), updates


@dataclasses.dataclass(frozen=True)
class Options:
  """The flow's task_kwargs."""
  input_size: tuple = (8, 8)  # (H, W)
  channels: int = 1
  transform: str = 'logit'  # 'logit' | 'affine': dequantized pixels in [0, 1) -> flow input
  alpha: float = 0.05  # the logit's margin
  num_bins: int = 256  # 8-bit pixels binned to this many levels (256: as they are)


def make(config) -> Task:
  """`config.task = 'generative.flow'`, `config.model_name = 'generative.flow'` (RealNVP)
  or `'generative.flow:Glow'`; task_kwargs: `Options`. Train metric `loss` (bits/dim);
  eval `bits_per_dim` per example. Batches hold `image` (B, H, W, C) uint8."""
  opts = parse_options(Options, config)
  input_size = tuple(opts.input_size)
  channels = int(opts.channels)
  transform = opts.transform
  alpha = float(opts.alpha)
  num_bins = opts.num_bins
  if not isinstance(num_bins, int) or not 2 <= num_bins <= 256:
    raise ConfigError(f'task_kwargs.num_bins must be an int in [2, 256], got {num_bins!r}')
  if transform not in TRANSFORMS:
    raise ConfigError(f'unknown task_kwargs.transform {transform!r}; valid: '
                      f'{", ".join(TRANSFORMS)}')
  if transform == 'logit' and not 0 <= alpha < 0.5:
    raise ConfigError(f'task_kwargs.alpha must be in [0, 0.5), got {alpha}')
  model = arch.model_from_config(config)
  if not isinstance(model, (RealNVP, Glow)):
    raise ConfigError(f'the flow objective needs a flow; config.model_name is '
                      f'{config.model_name!r}; valid: generative.flow (RealNVP), '
                      f'generative.flow:Glow')
  try:
    factor = model.downsampling
  except ValueError as e:
    raise ConfigError(str(e)) from None
  if any(n % factor for n in input_size) or min(input_size) < factor:
    raise ConfigError(f'task_kwargs.input_size {input_size} must be multiples of {factor} '
                      f'for this flow ({config.model_name} with {dict(config.model)})')
  shape = (*input_size, channels)
  nonparam = lambda variables: [k for k in variables if k != 'params']

  def images(batch):
    image = batch['image']
    if image.shape[1:] != shape:
      raise ValueError(f'images are {image.shape[1:]}; the flow is configured for {shape} '
                       f'(task_kwargs.input_size, channels); flows model the raw pixels and '
                       f'do not resize')
    return image

  def init(rng, batch):
    x = jnp.zeros((batch['image'].shape[0], *shape), jnp.float32)
    return model.init(rng, x, method='forward')

  def loss(variables, batch, rng):
    image = images(batch)
    u = jax.random.uniform(rng, image.shape)
    bpd, updates = bits_per_dim(model, variables, image, u, transform, alpha, num_bins,
                                mutable=nonparam(variables))
    value = bpd.mean()
    return value, ({'loss': value}, updates)

  def evaluate(variables, batch):
    image = images(batch)
    u = jax.vmap(lambda k: jax.random.uniform(k, shape))(image_keys(image))
    return {'bits_per_dim': bits_per_dim(model, variables, image, u, transform, alpha,
                                         num_bins)[0]}

  def sample(variables, batch, rng, *, row_ids, temperature=1.0, **unused):
    del batch, unused  # one unconditional sample per row; text options do not apply
    z = jax.vmap(lambda k: jax.random.normal(k, shape))(row_keys(rng, row_ids))
    x = model.apply(variables, z * temperature, method='inverse')
    y = from_flow_space(x, transform, alpha)
    return {'images': from_bins(jnp.floor(y * num_bins), num_bins)}

  return Task(init=init, loss=loss, evaluate=evaluate,
              example_batch=lambda n: labelled_images(n, input_size, channels),
              sample=sample, prompt_batch=unconditional_rows)


# Tiny sizes for tests, still multi-scale.
TINY_REALNVP = dict(num_scales=2, hidden=4, num_blocks=0)
TINY_GLOW = dict(num_levels=2, steps_per_level=1, hidden=4)
