"""WaveNet (van den Oord et al. 2016, "WaveNet: A generative model for raw audio") with
fast generation (Paine et al. 2016, "Fast WaveNet generation algorithm"), and its
objective: the categorical negative log-likelihood of mu-law audio, in bits per sample.

The waveform x in [-1, 1] is mu-law companded, f(x) = sign(x) ln(1 + mu|x|) / ln(1 + mu)
with mu = 255, and quantised to the nearest of 256 levels k (f = 2k/255 - 1): silence is
level 128, -1 and 1 are levels 0 and 255 (`mu_law_encode`, `mu_law_decode`). The network
maps a sequence of levels (B, L) to logits (B, L, 256) whose value at t is the
distribution of x_t given x_<t: one forward pass gives every conditional.

Network (the paper's Fig. 4): the input at t is the previous samples as one-hot vectors
(the paper's categorical inputs; int levels take the equivalent row gather, one-hot or
soft (B, L, 256) float inputs the matmul, for gradients), through a causal convolution of
width 2 (x_{t-2}, x_{t-1}) to R residual channels; then `num_stacks` stacks of
`layers_per_stack` dilated causal convolutions of width 2, dilations 1, 2, 4, ...,
2^(layers_per_stack - 1), each a gated unit z = tanh(W_f * h) . sigmoid(W_g * h) over D
channels (W_f and W_g one (2, R, 2D) kernel: taps h_{t-d}, h_t; filter half then gate
half), a residual 1x1 convolution D -> R added to h (none in the last layer, whose
residual output nothing reads) and a skip 1x1 convolution D -> S; the skips' sum ->
ReLU -> 1x1 (S) -> ReLU -> 1x1 (256 logits). Global conditioning (the paper's speaker id):
with `num_classes > 0`, a label's one-hot vector h gets a per-layer projection V_f h,
V_g h added to the filter and gate pre-activations.

Receptive field (`WaveNet.receptive_field`): 2 + sum of the dilations samples before t,
i.e. 2 + num_stacks * (2^layers_per_stack - 1): 3,071 for 3 stacks of 1..512 (4 kHz:
0.77 s), the paper's "1, 2, ..., 512" block alone covering 1,024.

The start of a clip: every convolution pads with zeros, so before the first sample each
layer's input is zero. Levels < 0 mark positions before the clip (a left-padded crop):
there the input and every layer's output are zeroed, so the outputs at the clip's
positions equal those of the unpadded clip. Training crops use that.

Fast generation (`WaveNet.step`, `init_cache`): a queue per layer of its last d inputs (a
circular buffer (B, d, R) at slot t mod d); one step reads h_{t-d}, writes h_t and costs
O(layers), not a forward over the history. `step` applied to the levels one by one gives
the forward's logits (the tests check every position).

Sizes: the paper states the dilation pattern (its example "1, 2, 4, ..., 512, 1, 2, 4, ...,
512, 1, 2, 4, ..., 512": 3 stacks of 10, 30 layers), 256 mu-law levels, the gated unit, the
residual and skip connections and the ReLU-1x1-ReLU-1x1-softmax head; it gives no channel
widths nor parameter counts. `PAPER` is that 30-layer network with residual and dilation
channels 32 and skip channels 512, our choice (the defaults of the widely used open
re-implementation, ibab/tensorflow-wavenet): 1,072,704 parameters with biases.

The objective (`make`): training scores random crops (task_kwargs `crop` positions each,
0 = the whole clip) given their full receptive field: a crop of positions [s, s + crop)
is fed with the receptive_field - 1 samples before s (padded with "before the clip" where
s is near the start), so every scored position sees exactly the context it has in the
whole clip; `loss` = mean NLL over scored positions, in bits per sample. Eval, per test
clip, over the whole clip (deterministic): `bits_per_sample` and `nll` (nats per clip).
`sample` generates `sample_length` samples (task_kwargs; the sampler's `--steps`
overrides) with the cached step under `lax.fori_loop`, row r drawing step t with
fold_in(fold_in(rng, row_ids[r]), t) from softmax(logits / temperature) (0: argmax):
{'audio': (B, N) float32 in [-1, 1], 'sample_rate': (B,) int32}.

Dimension key: B batch, L time, R residual channels, D dilation (gated) channels,
S skip channels, K levels (256), C classes.
"""

import dataclasses
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import arch
from arch.task import ConfigError, Task, class_rows, parse_options, row_keys

Dtype = Any
LEVELS = 256
MU = LEVELS - 1


# ------------------------------------------------------------------------------- mu-law


def mu_law_encode(x, levels: int = LEVELS):
  """Waveform in [-1, 1] -> int32 levels 0..levels-1 (the nearest companded level)."""
  mu = levels - 1
  x = jnp.clip(jnp.asarray(x, jnp.float32), -1.0, 1.0)
  f = jnp.sign(x) * jnp.log1p(mu * jnp.abs(x)) / np.log1p(mu)
  return jnp.floor((f + 1) / 2 * mu + 0.5).astype(jnp.int32)


def mu_law_decode(levels_X, levels: int = LEVELS):
  """Levels -> the waveform value at each level's centre, float32 in [-1, 1]."""
  mu = levels - 1
  f = 2 * jnp.asarray(levels_X, jnp.float32) / mu - 1
  return jnp.clip(jnp.sign(f) * jnp.expm1(jnp.abs(f) * np.log1p(mu)) / mu, -1.0, 1.0)


def pcm_to_levels(audio_BL):
  """int16 PCM -> mu-law levels."""
  return mu_law_encode(jnp.asarray(audio_BL, jnp.float32) / 32768.0)


# ------------------------------------------------------------------------------- network


def _init(axes, init=nn.initializers.lecun_normal()):
  return nn.with_logical_partitioning(init, axes)


def shift_right(x_BL, n: int, fill=0):
  """Position t gets position t - n (the first n get `fill`)."""
  pad = [(0, 0), (n, 0)] + [(0, 0)] * (x_BL.ndim - 2)
  return jnp.pad(x_BL, pad, constant_values=fill)[:, :x_BL.shape[1]]


class ResidualLayer(nn.Module):
  """One dilated gated layer given its input h_t and h_{t-d}, pointwise in time (the full
  forward shifts h by d, the fast step reads its queue): -> (next h or None, skip)."""
  residual_channels: int
  dilation_channels: int
  skip_channels: int
  last: bool = False  # no residual 1x1: nothing reads the last layer's residual output
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, h_BLR, past_BLR, cond_BC):
    r, d = self.residual_channels, self.dilation_channels
    kernel = self.param('kernel', _init((None, 'conv_in', 'conv_out')), (2, r, 2 * d),
                        self.param_dtype).astype(self.dtype)
    bias = self.param('bias', _init(('conv_out',), nn.initializers.zeros), (2 * d,),
                      self.param_dtype).astype(self.dtype)
    both_BL2R = jnp.concatenate([past_BLR, h_BLR], -1).astype(self.dtype)
    a_BL2D = jnp.einsum('BLR,RF->BLF', both_BL2R, kernel.reshape(2 * r, 2 * d)) + bias
    if cond_BC is not None:  # V_f h, V_g h
      a_BL2D = a_BL2D + nn.Dense(2 * d, use_bias=False, dtype=self.dtype,
                                 param_dtype=self.param_dtype, name='cond',
                                 kernel_init=_init(('classes', 'conv_out')))(cond_BC)[:, None]
    z_BLD = jnp.tanh(a_BL2D[..., :d]) * nn.sigmoid(a_BL2D[..., d:])
    dense = lambda f, name: nn.Dense(f, dtype=self.dtype, param_dtype=self.param_dtype,
                                     name=name, kernel_init=_init(('conv_in', 'conv_out')),
                                     bias_init=_init(('conv_out',), nn.initializers.zeros))
    skip_BLS = dense(self.skip_channels, 'skip')(z_BLD)
    if self.last:
      return None, skip_BLS
    return h_BLR + dense(r, 'residual')(z_BLD), skip_BLS


class WaveNet(nn.Module):
  """WaveNet: levels (B, L) int (< 0: before the clip) or one-hot (B, L, K) float, and
  labels (B,) when num_classes > 0 -> logits (B, L, K) of each x_t given x_<t."""
  residual_channels: int = 32
  dilation_channels: int = 32
  skip_channels: int = 512
  num_stacks: int = 3
  layers_per_stack: int = 10  # dilations 1, 2, ..., 2^(layers_per_stack - 1) per stack
  num_classes: int = 0        # > 0: globally conditioned on label_B
  levels: int = LEVELS
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @property
  def dilations(self) -> tuple:
    return tuple(2 ** i for _ in range(self.num_stacks) for i in range(self.layers_per_stack))

  @property
  def receptive_field(self) -> int:
    """Samples x_{t-rf} .. x_{t-1} that the logits at t depend on: the input convolution's
    2 plus (width 2 - 1) * each dilation."""
    return 2 + sum(self.dilations)

  def setup(self):
    if self.num_stacks < 1 or self.layers_per_stack < 1:
      raise ValueError(f'WaveNet: num_stacks and layers_per_stack must be >= 1, got '
                       f'{self.num_stacks}, {self.layers_per_stack}')
    r = self.residual_channels
    # The input causal convolution over one-hot levels: taps x_{t-2}, x_{t-1}. Each output
    # sums two kernel rows, hence the 1/sqrt(2) (a unit-variance residual stream).
    self.input_kernel = self.param(
        'input_kernel', _init((None, 'vocab', 'conv_out'), nn.initializers.normal(0.7071)),
        (2, self.levels, r), self.param_dtype)
    self.input_bias = self.param('input_bias', _init(('conv_out',), nn.initializers.zeros),
                                 (r,), self.param_dtype)
    n = len(self.dilations)
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    self.layers = [ResidualLayer(r, self.dilation_channels, self.skip_channels,
                                 last=i == n - 1, **kw) for i in range(n)]
    dense = lambda f: nn.Dense(f, kernel_init=_init(('conv_in', 'conv_out')),
                               bias_init=_init(('conv_out',), nn.initializers.zeros), **kw)
    self.head_hidden = dense(self.skip_channels)
    self.head_out = dense(self.levels)

  def _tap(self, tap: int, x_BL):
    """One tap of the input convolution: kernel rows of int levels (zero where < 0), or
    one-hot (B, L, K) floats times the kernel."""
    kernel_KR = self.input_kernel[tap].astype(self.dtype)
    if jnp.issubdtype(x_BL.dtype, jnp.integer):
      rows_BLR = jnp.take(kernel_KR, jnp.clip(x_BL, 0, self.levels - 1), axis=0)
      return jnp.where((x_BL >= 0)[..., None], rows_BLR, 0)
    return jnp.einsum('BLK,KR->BLR', x_BL.astype(self.dtype), kernel_KR)

  def _cond(self, label_B):
    if not self.num_classes:
      return None
    if label_B is None:
      raise ValueError(f'WaveNet: num_classes={self.num_classes} needs labels')
    return jax.nn.one_hot(label_B, self.num_classes, dtype=self.dtype)

  def _head(self, skip_BLS):
    y_BLS = self.head_hidden(nn.relu(skip_BLS))
    return self.head_out(nn.relu(y_BLS)).astype(jnp.float32)

  def __call__(self, levels_BL, label_B=None, *, train: bool = False):
    del train  # no dropout
    integer = jnp.issubdtype(levels_BL.dtype, jnp.integer)
    if integer:
      if levels_BL.ndim != 2:
        raise ValueError(f'WaveNet: takes levels (batch, time); got {levels_BL.shape}')
      valid_BL1 = (levels_BL >= 0)[..., None]
    else:
      if levels_BL.ndim != 3 or levels_BL.shape[-1] != self.levels:
        raise ValueError(f'WaveNet: takes one-hot levels (batch, time, {self.levels}); got '
                         f'{levels_BL.shape}')
      valid_BL1 = jax.lax.stop_gradient(levels_BL.sum(-1, keepdims=True) > 0)
    cond_BC = self._cond(label_B)
    none = -1 if integer else 0  # before the clip: level -1 or the zero vector
    h_BLR = (self._tap(0, shift_right(levels_BL, 2, none))
             + self._tap(1, shift_right(levels_BL, 1, none)) + self.input_bias.astype(self.dtype))
    h_BLR = jnp.where(valid_BL1, h_BLR, 0)
    skip_BLS = 0.0
    for layer, d in zip(self.layers, self.dilations):
      h_next, s_BLS = layer(h_BLR, shift_right(h_BLR, d), cond_BC)
      skip_BLS = skip_BLS + s_BLS
      if h_next is not None:
        h_BLR = jnp.where(valid_BL1, h_next, 0)
    return self._head(skip_BLS)

  def step(self, prev_B, cache, label_B=None):
    """One generation step: prev_B the level x_{t-1} (< 0 at t = 0), `cache` from
    `init_cache` after t steps -> (logits (B, K) of x_t, the cache after t + 1 steps)."""
    t = cache['t']
    cond_BC = self._cond(label_B)
    h_BLR = (self._tap(0, cache['prev'][:, None]) + self._tap(1, prev_B[:, None])
             + self.input_bias.astype(self.dtype))
    skip_BLS, queues = 0.0, []
    for layer, d, q_BdR in zip(self.layers, self.dilations, cache['queues']):
      slot = t % d
      past_BLR = jax.lax.dynamic_slice_in_dim(q_BdR, slot, 1, axis=1)  # h_{t-d}, 0 if t < d
      queues.append(jax.lax.dynamic_update_slice_in_dim(q_BdR, h_BLR.astype(q_BdR.dtype),
                                                        slot, axis=1))
      h_next, s_BLS = layer(h_BLR, past_BLR, cond_BC)
      skip_BLS = skip_BLS + s_BLS
      h_BLR = h_next if h_next is not None else h_BLR
    new = {'t': t + 1, 'prev': prev_B.astype(jnp.int32), 'queues': tuple(queues)}
    return self._head(skip_BLS)[:, 0], new


def init_cache(model: WaveNet, batch_size: int) -> dict:
  """The generation state before the first sample: step count, x_{t-2} (none yet), and
  one zeroed queue (B, d, R) per layer (the zero padding before the clip)."""
  return {'t': jnp.zeros((), jnp.int32), 'prev': jnp.full((batch_size,), -1, jnp.int32),
          'queues': tuple(jnp.zeros((batch_size, d, model.residual_channels), model.dtype)
                          for d in model.dilations)}


def crop_windows(levels_BL, starts_B, context: int, length: int):
  """Row b's positions [starts_B[b] - context, starts_B[b] + length), positions before the
  clip filled with -1 ("before the clip"): the model's outputs at the last `length`
  positions then equal the whole clip's at [s, s + length) when context >= rf - 1."""
  padded_BL = jnp.pad(levels_BL, ((0, 0), (context, 0)), constant_values=-1)
  return jax.vmap(lambda row, s: jax.lax.dynamic_slice_in_dim(row, s, context + length))(
      padded_BL, starts_B)


Model = WaveNet


# ----------------------------------------------------------------------------- objective


@dataclasses.dataclass(frozen=True)
class Options:
  """WaveNet's task_kwargs."""
  length: int = 4000  # samples per clip
  sample_rate: int = 4000  # Hz, for the sampler's audio
  crop: int = 0  # scored positions per training crop; 0 = the whole clip
  sample_length: Optional[int] = None  # generated samples (`--steps` overrides); None: `length`


def make(config) -> Task:
  """WaveNet on mu-law audio. Batches hold 'audio' (B, length) int16 PCM (and 'label' (B,)
  for a conditioned model); task_kwargs: `Options`. Train metrics `loss` =
  `bits_per_sample`; eval per clip: `bits_per_sample`, `nll` (nats)."""
  opts = parse_options(Options, config)
  length = int(opts.length)
  sample_rate = int(opts.sample_rate)
  crop = int(opts.crop) or length
  sample_length = int(length if opts.sample_length is None else opts.sample_length)
  if not 0 < crop <= length:
    raise ConfigError(f'task_kwargs.crop={crop} must be in [0, length={length}]')
  if sample_length < 1:
    raise ConfigError(f'task_kwargs.sample_length must be >= 1, got {sample_length}')
  model = arch.model_from_config(config)
  if not isinstance(model, WaveNet):
    raise ConfigError(f'the wavenet objective needs generative.wavenet; config.model_name '
                      f'is {config.model_name!r}')
  if model.levels != LEVELS:
    raise ConfigError(f'the data is {LEVELS}-level mu-law; model.levels={model.levels}')
  num_classes = model.num_classes
  context = 0 if crop == length else model.receptive_field - 1

  def inputs(batch):
    audio = batch['audio']
    if tuple(audio.shape[1:]) != (length,):
      raise ValueError(f'audio clips of shape {tuple(audio.shape[1:])}; the task is built '
                       f'for ({length},) (task_kwargs.length)')
    return pcm_to_levels(audio), batch['label'] if num_classes else None

  def nll_BL(variables, levels_BL, label_B):
    logits_BLK = model.apply(variables, levels_BL, label_B)
    logp_BLK = jax.nn.log_softmax(logits_BLK, axis=-1)
    return -jnp.take_along_axis(logp_BLK, jnp.maximum(levels_BL, 0)[..., None], -1)[..., 0]

  def init(rng, batch):
    levels_BL, label_B = inputs(batch)
    return model.init(rng, levels_BL[:, :min(length, 8)], label_B)

  def loss(variables, batch, rng):
    levels_BL, label_B = inputs(batch)
    if crop < length:
      starts_B = jax.random.randint(rng, (levels_BL.shape[0],), 0, length - crop + 1)
      levels_BL = crop_windows(levels_BL, starts_B, context, crop)
    bits = nll_BL(variables, levels_BL, label_B)[:, context:].mean() / np.log(2.0)
    return bits, ({'loss': bits, 'bits_per_sample': bits}, {})

  def evaluate(variables, batch):
    levels_BL, label_B = inputs(batch)
    nll_B = nll_BL(variables, levels_BL, label_B).sum(-1)
    return {'nll': nll_B, 'bits_per_sample': nll_B / (length * np.log(2.0))}

  def example_batch(batch_size):
    batch = {'audio': jax.ShapeDtypeStruct((batch_size, length), jnp.int16)}
    if num_classes:
      batch['label'] = jax.ShapeDtypeStruct((batch_size,), jnp.int32)
    return batch

  def prompt_batch(prompts, num_samples):
    return class_rows(prompts, num_samples, num_classes)

  def sample(variables, batch, rng, *, row_ids, temperature: float = 1.0,
             steps: Optional[int] = None, **unused):
    """`steps` (default task_kwargs.sample_length) samples per row, one cached step each."""
    del unused
    n = int(steps or sample_length)
    b = row_ids.shape[0]
    label_B = batch['label'] if num_classes else None
    keys_B = row_keys(rng, row_ids)

    def body(t, carry):
      prev_B, cache, out_BN = carry
      logits_BK, cache = model.apply(variables, prev_B, cache, label_B, method='step')
      if temperature == 0:
        new_B = jnp.argmax(logits_BK, axis=-1).astype(jnp.int32)
      else:
        new_B = jax.vmap(lambda k, l: jax.random.categorical(jax.random.fold_in(k, t), l))(
            keys_B, logits_BK / temperature).astype(jnp.int32)
      return new_B, cache, out_BN.at[:, t].set(new_B)

    carry = (jnp.full((b,), -1, jnp.int32), init_cache(model, b), jnp.zeros((b, n), jnp.int32))
    levels_BN = jax.lax.fori_loop(0, n, body, carry)[-1]
    return {'audio': mu_law_decode(levels_BN),
            'sample_rate': jnp.full((b,), sample_rate, jnp.int32)}

  return Task(init=init, loss=loss, evaluate=evaluate, example_batch=example_batch,
              sample=sample, prompt_batch=prompt_batch)


# The paper's 30 layers (3 stacks of dilations 1..512); the widths are our choice (see above).
PAPER = dict(residual_channels=32, dilation_channels=32, skip_channels=512, num_stacks=3,
             layers_per_stack=10)
# Tests: dilations 1, 2, 4, 1, 2, 4 (receptive field 16).
TINY = dict(residual_channels=8, dilation_channels=8, skip_channels=16, num_stacks=2,
            layers_per_stack=3)
