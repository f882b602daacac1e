"""PixelCNN (van den Oord et al. 2016, "Pixel recurrent neural networks"), the Gated
PixelCNN (van den Oord et al. 2016, "Conditional image generation with PixelCNN decoders")
and the PixelCNN++ output distribution (Salimans et al. 2017), with their objective.

Every network maps images x (B, H, W, 1) in [-1, 1] to per-pixel outputs (B, H, W, O)
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

Only one colour channel (C = 1): RGB's within-pixel channel ordering (masks per channel
group; PixelCNN++'s linear channel coupling) is not implemented.

Outputs (`output`): 'softmax', 256 logits per pixel; 'logistic_mix', PixelCNN++'s
discretized mixture of M logistics (M logits, means, log-scales per pixel), each
component's mass on level k the logistic's mass on [x_k - 1/255, x_k + 1/255] for the
pixel x_k = k / 127.5 - 1, except level 0, which takes all mass below -1 + 1/255, and
level 255, all mass above 1 - 1/255, so the 256 probabilities sum to one.

The objective (`make`): training minimises bits per dimension (the negative
log-likelihood over the 256 levels, in bits, divided by the H*W*C pixels); eval reports
per image `bits_per_dim` and `nll` (nats). `sample` draws pixel by pixel (a
`lax.fori_loop` over the positions, one forward pass each) from the exact distribution
over the 256 levels, tempered by `temperature`.

Config: `config.task = 'generative.pixelcnn'`, `config.model_name =
'generative.pixelcnn:GatedPixelCNN'` (the module's `Model`) or `':PixelCNN'`; task_kwargs
`input_size` (H, W), `channels` (1). A model with `num_classes > 0` reads batch['label'].

Dimension key: B batch, H W C image, F features, O outputs per pixel, M mixture
components, L levels (256), E conditioning.
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import arch
from arch.layers.conv import channel_init, kernel_init
from arch.task import ConfigError, Task, class_rows, row_keys

Dtype = Any
LEVELS = 256
OUTPUTS = ('logistic_mix', 'softmax')
MIN_LOG_SCALE = -7.0  # PixelCNN++'s floor on the logistic log-scales


def output_features(output: str, num_mixtures: int) -> int:
  """O, the per-pixel outputs an `output` distribution needs."""
  if output == 'logistic_mix':
    if num_mixtures < 1:
      raise ConfigError(f'logistic_mix needs num_mixtures >= 1, got {num_mixtures}')
    return 3 * num_mixtures
  if output == 'softmax':
    return LEVELS
  raise ConfigError(f'unknown output {output!r}; valid: {", ".join(OUTPUTS)}')


def _check_image(x_BHWC, what: str):
  if x_BHWC.ndim != 4 or x_BHWC.shape[-1] != 1:
    raise ValueError(f'{what}: takes (batch, H, W, 1) grey-scale images (RGB channel '
                     f'ordering is not implemented); got shape {x_BHWC.shape}')


def _check_odd(k: int, what: str):
  if k < 1 or k % 2 == 0:
    raise ValueError(f'{what}: kernel sizes must be odd, got {k}')


# ------------------------------------------------------------------------------ PixelCNN


def causal_mask(k: int, include_centre: bool) -> np.ndarray:
  """(k, k) 0/1 taps of a masked convolution: the rows above the centre and the centre
  row left of the centre, plus the centre itself for mask B."""
  m = np.zeros((k, k), np.float32)
  m[:k // 2] = 1
  m[k // 2, :k // 2] = 1
  m[k // 2, k // 2] = float(include_centre)
  return m


class MaskedConv(nn.Module):
  """A k x k 'SAME' convolution whose kernel is zero outside `causal_mask` (mask 'A' or
  'B'). The full kernel is stored (as reference implementations do); masked taps get no
  gradient."""
  features: int
  kernel_size: int
  mask: str  # 'A': first layer (excludes the centre pixel) | 'B': later layers
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
    mask = jnp.asarray(causal_mask(k, self.mask == 'B'), self.dtype)[:, :, None, None]
    y = jax.lax.conv_general_dilated(
        x_BHWC.astype(self.dtype), kernel.astype(self.dtype) * mask, (1, 1),
        [(k // 2, k // 2)] * 2, dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    return y + bias.astype(self.dtype)


def _conv1x1(features, name, dtype, param_dtype):
  return nn.Conv(features, (1, 1), dtype=dtype, param_dtype=param_dtype, name=name,
                 kernel_init=kernel_init(), bias_init=channel_init(nn.initializers.zeros))


class PixelCNN(nn.Module):
  """PixelCNN: images (B, H, W, 1) in [-1, 1] -> per-pixel outputs (B, H, W, O)."""
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
    f = self.features
    y_BHWF = MaskedConv(2 * f, self.first_kernel, 'A', name='input', **kw)(x_BHWC)
    for i in range(self.num_blocks):
      r = _conv1x1(f, f'block{i}_reduce', **kw)(nn.relu(y_BHWF))
      r = MaskedConv(f, self.kernel, 'B', name=f'block{i}_conv', **kw)(nn.relu(r))
      y_BHWF = y_BHWF + _conv1x1(2 * f, f'block{i}_expand', **kw)(nn.relu(r))
    y_BHWF = _conv1x1(2 * f, 'head_hidden', **kw)(nn.relu(y_BHWF))
    out = _conv1x1(output_features(self.output, self.num_mixtures), 'head_out', **kw)(
        nn.relu(y_BHWF))
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
    h_pad = jnp.pad(h_BHWF, ((0, 0), (0, 0), (r, 0), (0, 0)))
    h_BHW2F = conv(2 * f, (1, r + 1), name='horizontal')(h_pad)
    if self.first:
      h_BHW2F = shift_right(h_BHW2F)
    # The vertical stack reaches row i only from rows < i: shifted down before the link.
    h_BHW2F = h_BHW2F + conv(2 * f, (1, 1), name='link')(shift_down(v_BHW2F))
    if cond_BE is not None:
      dense = functools.partial(nn.Dense, 2 * f, use_bias=False, dtype=self.dtype,
                                param_dtype=self.param_dtype)
      v_BHW2F = v_BHW2F + dense(name='cond_vertical')(cond_BE)[:, None, None]
      h_BHW2F = h_BHW2F + dense(name='cond_horizontal')(cond_BE)[:, None, None]
    g_BHWF = nn.Dropout(self.dropout)(gate(h_BHW2F), deterministic=not train)
    out_BHWF = conv(f, (1, 1), name='residual')(g_BHWF)
    return gate(v_BHW2F), (out_BHWF if self.first else h_BHWF + out_BHWF)


class GatedPixelCNN(nn.Module):
  """Gated PixelCNN: images (B, H, W, 1) in [-1, 1] (and labels (B,) when num_classes > 0)
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
    v_BHWF = h_BHWF = x_BHWC.astype(self.dtype)
    for i in range(self.num_layers):
      v_BHWF, h_BHWF = GatedLayer(self.features, self.first_kernel if i == 0 else self.kernel,
                                  first=i == 0, dropout=self.dropout, name=f'layer{i}', **kw)(
                                      v_BHWF, h_BHWF, cond_BE, train=train)
    y_BHWF = _conv1x1(self.features, 'head_hidden', **kw)(nn.relu(h_BHWF))
    out = _conv1x1(output_features(self.output, self.num_mixtures), 'head_out', **kw)(
        nn.relu(y_BHWF))
    return out.astype(jnp.float32)


Model = GatedPixelCNN


# ------------------------------------------------------------------ output distributions


def to_input(levels):
  """Pixel levels 0..255 -> the networks' inputs in [-1, 1]."""
  return levels.astype(jnp.float32) / 127.5 - 1.0


def logistic_mixture_log_prob(params_XO, levels_X):
  """log P(level) under PixelCNN++'s discretized logistic mixture. params (..., 3M): the
  mixture logits, means (in [-1, 1] pixel units) and log-scales; levels (...) int in
  0..255 (broadcast against params' leading axes)."""
  logit_XM, mean_XM, log_scale_XM = jnp.split(params_XO.astype(jnp.float32), 3, axis=-1)
  log_scale_XM = jnp.maximum(log_scale_XM, MIN_LOG_SCALE)
  levels_X1 = jnp.asarray(levels_X)[..., None]
  inv_scale_XM = jnp.exp(-log_scale_XM)
  centred_XM = to_input(levels_X1) - mean_XM
  plus_XM = inv_scale_XM * (centred_XM + 1.0 / 255)   # the bin's upper edge, standardised
  minus_XM = inv_scale_XM * (centred_XM - 1.0 / 255)  # and its lower edge
  mid_XM = inv_scale_XM * centred_XM
  log_cdf_plus = -jax.nn.softplus(-plus_XM)   # level 0: all mass below its upper edge
  log_sf_minus = -jax.nn.softplus(minus_XM)   # level 255: all mass above its lower edge
  # Interior bins: cdf(plus) - cdf(minus), on the side of the mean where it does not cancel.
  delta_XM = jnp.where(mid_XM > 0, nn.sigmoid(-minus_XM) - nn.sigmoid(-plus_XM),
                       nn.sigmoid(plus_XM) - nn.sigmoid(minus_XM))
  # Far in the tails the difference underflows: the density at the bin centre times the
  # bin width 2/255, as PixelCNN++ does.
  log_pdf_mid = mid_XM - log_scale_XM - 2.0 * jax.nn.softplus(mid_XM)
  log_interior = jnp.where(delta_XM > 1e-5, jnp.log(jnp.maximum(delta_XM, 1e-12)),
                           log_pdf_mid - np.log(127.5))
  log_p_XM = jnp.where(levels_X1 == 0, log_cdf_plus,
                       jnp.where(levels_X1 == LEVELS - 1, log_sf_minus, log_interior))
  return jax.nn.logsumexp(log_p_XM + jax.nn.log_softmax(logit_XM, axis=-1), axis=-1)


def level_log_probs(out_XO, output: str):
  """(..., L) log-probabilities of all 256 levels from a pixel's network outputs."""
  if output == 'softmax':
    return jax.nn.log_softmax(out_XO.astype(jnp.float32), axis=-1)
  return logistic_mixture_log_prob(out_XO[..., None, :], jnp.arange(LEVELS))


def log_prob(out_XO, levels_X, output: str):
  """log P(levels) (...) from the network outputs (..., O) at those pixels."""
  if output == 'softmax':
    logp_XL = jax.nn.log_softmax(out_XO.astype(jnp.float32), axis=-1)
    return jnp.take_along_axis(logp_XL, levels_X[..., None].astype(jnp.int32), -1)[..., 0]
  return logistic_mixture_log_prob(out_XO, levels_X)


# ----------------------------------------------------------------------------- objective


def make(config) -> Task:
  """Autoregressive model of 256-level images. Train metrics: `loss` = `bits_per_dim`;
  eval: per image `bits_per_dim` and `nll` (nats)."""
  kw = dict(config.get('task_kwargs', {}))
  h, w = tuple(kw.get('input_size', (8, 8)))
  channels = int(kw.get('channels', 1))
  if channels != 1:
    raise ConfigError(f'task_kwargs.channels={channels}: only grey-scale (1) is implemented')
  model = arch.model_from_config(config)
  output = getattr(model, 'output', None)
  if output is None:
    raise ConfigError(f'{config.model_name!r} has no `output` attribute; the pixelcnn task '
                      f'needs an autoregressive network: generative.pixelcnn:GatedPixelCNN '
                      f'or generative.pixelcnn:PixelCNN')
  output_features(output, getattr(model, 'num_mixtures', 0))  # validates
  num_classes = int(getattr(model, 'num_classes', 0))
  dims = h * w * channels

  def inputs(batch):
    image = batch['image']
    if tuple(image.shape[1:]) != (h, w, channels):
      raise ValueError(f'images of shape {tuple(image.shape[1:])}; the task is built for '
                       f'{(h, w, channels)} (task_kwargs input_size, channels)')
    return image[..., 0].astype(jnp.int32), batch['label'] if num_classes else None

  def init(rng, batch):
    levels_BHW, label_B = inputs(batch)
    return model.init({'params': rng, 'dropout': rng}, to_input(levels_BHW[..., None]),
                      label_B)

  def nll_nats(variables, batch, train, rng=None):
    levels_BHW, label_B = inputs(batch)
    out_BHWO = model.apply(variables, to_input(levels_BHW[..., None]), label_B, train=train,
                           rngs={'dropout': rng} if train else None)
    return -log_prob(out_BHWO, levels_BHW, output).sum((1, 2))

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
    """Pixel by pixel: {'images': (B, H, W, 1) uint8}. Position p of row r draws with
    fold_in(fold_in(rng, row_ids[r]), p) from the 256 levels' probabilities to the power
    1 / temperature, renormalised (0: the most likely level)."""
    del unused
    b = row_ids.shape[0]
    label_B = batch['label'] if num_classes else None
    keys_B = row_keys(rng, row_ids)

    def body(p, levels_BHW):
      i, j = p // w, p % w
      out_BHWO = model.apply(variables, to_input(levels_BHW[..., None]), label_B, train=False)
      logp_BL = level_log_probs(out_BHWO[:, i, j], output)
      if temperature == 0:
        new_B = jnp.argmax(logp_BL, axis=-1)
      else:
        new_B = jax.vmap(lambda k, l: jax.random.categorical(jax.random.fold_in(k, p), l))(
            keys_B, logp_BL / temperature)
      return levels_BHW.at[:, i, j].set(new_B.astype(jnp.int32))

    levels_BHW = jax.lax.fori_loop(0, h * w, body, jnp.zeros((b, h, w), jnp.int32))
    return {'images': levels_BHW.astype(jnp.uint8)[..., None]}

  return Task(init=init, loss=loss, evaluate=evaluate, example_batch=example_batch,
              sample=sample, prompt_batch=prompt_batch)


# Test sizes: enough gated layers (a 7-wide first layer and four 3-wide ones) that every
# earlier pixel of an 8x8 image reaches every position.
TINY = dict(features=8, num_layers=5, first_kernel=7, kernel=3, num_mixtures=3)
TINY_PIXELCNN = dict(features=4, num_blocks=2, first_kernel=7, kernel=3, num_mixtures=3)
