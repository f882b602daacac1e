"""INT8 quantization of a trained classifier: post-training quantization (PTQ) and
quantization-aware training (QAT), with int8 x int8 -> int32 convolutions and matmuls on
the inference path.

Quantizers (Jacob et al. 2018, "Quantization and training of neural networks for efficient
integer-arithmetic-only inference"; Krishnamoorthi 2018, "Quantizing deep convolutional
networks for efficient inference: a whitepaper"):
  weights      symmetric, per output channel: s_w[o] = max |W[..., o]| / 127,
               q_w = clip(round(W / s_w), -127, 127) (int8)
  activations  symmetric, per tensor, the input of every Conv/Dense: s_x = a / 127 for a
               range `a` calibrated on train batches ('max': the largest |x| seen;
               'percentile': the mean over batches of the p-th percentile of |x|),
               q_x = clip(round(x / s_x), -127, 127)
  compute      y[o] = s_x s_w[o] sum(q_x q_w) + b[o], the sum an int32 accumulation of int8
               products (`lax.dot_general(..., preferred_element_type=int32)`); a 2-D conv
               is an im2col gather of int8 patches and one such matmul (on XLA:CPU,
               `conv_general_dilated` on int8 operands ran 8x slower than the float conv,
               340 vs 42 ms for 256x32x32x16 3x3; the im2col matmul 0.5-1.1x the float
               conv). Activations between layers (ReLU, residual adds, pooling) stay float
               and are quantized again at the next layer's input (an integer-only pipeline,
               as in Jacob et al., would requantize the int32 sums with fixed-point
               multipliers instead).
  BatchNorm    folded into the conv before it (the repo's ConvBN): W' = W gamma / sqrt(var
               + eps) per output channel, b' = beta + (b - mean) gamma / sqrt(var + eps),
               with the running statistics; the folded W' is what gets quantized.
  QAT          fake quantization, x -> s round(clip(x, -127 s, 127 s) / s), with the
               straight-through estimator: the gradient is 1 inside the clip range and 0
               outside. Fine-tunes from the float run with BatchNorm folded on its
               (frozen) running statistics, so training sees exactly the folded, quantized
               weights inference uses (the whitepaper freezes the statistics late in
               training; starting from a trained run it is frozen from the first step);
               the activation ranges follow an exponential moving average of each batch's
               statistic (Jacob et al. section 3.1).

How the network is wrapped: the models stay untouched. Flax's `nn.intercept_methods`
reroutes every `__call__` of a ConvBN, nn.Conv or nn.Dense while the model runs, and
`Quantizer` computes that layer from the same variables (its kernel, BatchNorm's scale and
statistics) in the chosen mode; the activation ranges live in a 'quant' collection at the
layer's own path (quant/layer1_0/conv1/amax). Interception rather than a quantized Dense/Conv
substituted through a module mapping: it needs no hook in any model, works on any network
built from these layers, and keeps the parameter tree, so the float run's checkpoint loads as it is.
Everything else (pooling, attention's einsums, embeddings) stays float.

The task (`config.task = 'compress.quant'`): the float run is a frozen run
(`config.frozen.float = dict(spec='configs/X.py', workdir='')`, trained first by the loop
when its workdir is empty); its variables fill the 'float' collection and, at the run's
first step, the trainable params and BatchNorm statistics. Each step then calibrates the
activation ranges on its batch; `method='ptq'` stops there (its steps are calibration
batches, no gradient), `method='qat'` also takes one gradient step of the fake-quantized
network's cross-entropy (on un-augmented images: a short fine-tune, and the same numbers
on 1 or 8 devices). Eval reports the int8 network (`accuracy`, `loss`) next to the
float run's (`float_accuracy`, `float_loss`), their `agreement` and the logits' relative
error ||z_int8 - z_float|| / ||z_float|| (`logit_rel_error`).

Measured (configs/int8_resnet_digits.py, 2026-12-06, shared 2-core CPU): PTQ of the digits
ResNet keeps its test accuracy (0.9972, agreement 1.0; test loss 0.01731 -> 0.01742,
logits' relative error 0.028); QAT keeps it too. Inference at batch 256: the tiny ResNet
0.66x float32's images/s, ResNet-18 at 32px 1.17x. Google's AQT (pip `aqtp`) was not tried.

Config keys read: `model_name`, `model` (the float run's network), `frozen.float`, and
`task_kwargs`, the fields of `Options`; the image options come from the float run's task.
"""

import dataclasses
import time
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax import lax

import arch
from arch.images import labelled_images, scale_images
from arch.compress import source_run
from arch.layers.conv import ConvBN, torch_padding
from arch.task import ConfigError, Task, parse_options

QMAX = 127  # symmetric int8: [-127, 127], zero exactly representable
FLOAT = 'float'  # the collection the loop restores the frozen float run into
QUANT = 'quant'  # the calibrated activation ranges, one `amax` per quantized layer
_STAT = 'quant_stat'  # this batch's statistic per layer, made while calibrating
_TINY = 1e-8  # the smallest scale: an all-zero channel or range quantizes to zeros


# --------------------------------------------------------------------------- quantizers


def weight_scale(w, axis: int = -1):
  """Per-output-channel scale max|w| / 127 over all axes but `axis` (shape (w.shape[axis],))."""
  axes = tuple(i for i in range(w.ndim) if i != axis % w.ndim)
  return jnp.maximum(jnp.abs(w).max(axis=axes), _TINY) / QMAX


def range_scale(amax):
  """Per-tensor scale of an activation with calibrated range |x| <= amax."""
  return jnp.maximum(amax, _TINY) / QMAX


def quantize(x, scale):
  """int8 codes clip(round(x / scale), -127, 127); `scale` broadcasts against x."""
  return jnp.clip(jnp.round(x / scale), -QMAX, QMAX).astype(jnp.int8)


def dequantize(q, scale):
  return q.astype(jnp.float32) * scale


def fake_quant(x, scale):
  """dequantize(quantize(x)) in float, with the straight-through gradient: 1 where
  |x| <= 127 scale, 0 where the quantizer clips. `scale` gets no gradient."""
  scale = lax.stop_gradient(scale)
  clipped = jnp.clip(x, -QMAX * scale, QMAX * scale)  # gradient 1 inside, 0 outside
  return clipped + lax.stop_gradient(jnp.round(clipped / scale) * scale - clipped)


# ------------------------------------------------------------------------- int8 kernels


def int8_matmul(x_q, w_q):
  """(..., K) int8 @ (K, N) int8 -> (..., N) int32, accumulated in int32."""
  return lax.dot_general(x_q, w_q, (((x_q.ndim - 1,), (0,)), ((), ())),
                         preferred_element_type=jnp.int32)


def _im2col(x_BHWC, kernel_size, strides, padding, dilation):
  """(B, H', W', kh*kw*C): each output position's receptive field, ordered (i, j, c) like
  a (kh, kw, C, O) kernel reshaped to (kh*kw*C, O)."""
  (kh, kw), (sh, sw), (dh, dw) = kernel_size, strides, dilation
  x = jnp.pad(x_BHWC, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
  oh = (x.shape[1] - dh * (kh - 1) - 1) // sh + 1
  ow = (x.shape[2] - dw * (kw - 1) - 1) // sw + 1
  cols = [x[:, i * dh:i * dh + sh * (oh - 1) + 1:sh, j * dw:j * dw + sw * (ow - 1) + 1:sw, :]
          for i in range(kh) for j in range(kw)]
  return jnp.concatenate(cols, axis=-1)


def int8_conv(x_q, w_q, strides=(1, 1), padding=((0, 0), (0, 0)), dilation=(1, 1),
              groups: int = 1):
  """2-D convolution of int8 (B, H, W, C) by an int8 (kh, kw, C/groups, O) kernel, int32
  out. Ungrouped: im2col then one int8 matmul (XLA:CPU's int8 conv is slow); grouped:
  `conv_general_dilated` on the int8 operands with int32 accumulation."""
  if groups == 1:
    cols = _im2col(x_q, w_q.shape[:2], strides, padding, dilation)
    return int8_matmul(cols, w_q.reshape(-1, w_q.shape[-1]))
  return lax.conv_general_dilated(x_q, w_q, tuple(strides), [tuple(p) for p in padding],
                                  rhs_dilation=tuple(dilation), feature_group_count=groups,
                                  dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                                  preferred_element_type=jnp.int32)


def float_conv(x, w, strides, padding, dilation, groups):
  return lax.conv_general_dilated(x, w, tuple(strides), [tuple(p) for p in padding],
                                  rhs_dilation=tuple(dilation), feature_group_count=groups,
                                  dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


# --------------------------------------------------------------------- layer geometry


def _pair(v, default):
  if v is None:
    return default
  return (v, v) if isinstance(v, int) else tuple(v)


def _pads(padding, x_BHWC, kernel_size, strides, dilation):
  """Explicit ((top, bottom), (left, right)) pads of a flax conv padding spec."""
  if isinstance(padding, str):
    if padding.upper() not in ('SAME', 'VALID'):
      raise ValueError(f'int8 conv: padding {padding!r} is not supported (SAME, VALID, pairs)')
    eff = [(k - 1) * d + 1 for k, d in zip(kernel_size, dilation)]
    return tuple(lax.padtype_to_pads(x_BHWC.shape[1:3], eff, strides, padding.upper()))
  if isinstance(padding, int):
    return ((padding, padding),) * 2
  return tuple((p, p) if isinstance(p, int) else tuple(p) for p in padding)


def _conv_layer(module, x, kernel):
  """(strides, pads, dilation, groups) of an nn.Conv or ConvBN applied to x (B, H, W, C)."""
  k = kernel.shape[:2]
  if isinstance(module, ConvBN):
    dilation = _pair(module.dilation, (1, 1))
    pad = module.padding if module.padding is not None else torch_padding(k, module.dilation)
    strides, groups = _pair(module.strides, (1, 1)), module.groups
  else:
    if x.ndim != 4 or _pair(module.input_dilation, (1, 1)) != (1, 1):
      raise ValueError(f'int8: {module.name}: only 2-D convolutions without input dilation '
                       f'are quantized; got input {x.shape}')
    dilation = _pair(module.kernel_dilation, (1, 1))
    pad, strides, groups = module.padding, _pair(module.strides, (1, 1)), \
        module.feature_group_count
  return strides, _pads(pad, x, k, strides, dilation), dilation, groups


def fold_batch_norm(kernel, bias, scale, beta, mean, var, epsilon):
  """(kernel', bias') of a conv followed by inference-mode BatchNorm, as one conv."""
  a = scale * lax.rsqrt(var + epsilon)
  b = 0.0 if bias is None else bias
  return kernel * a, beta + (b - mean) * a


# --------------------------------------------------------------------- the interceptor


@dataclasses.dataclass(frozen=True)
class Quantizer:
  """An `nn.intercept_methods` interceptor computing every ConvBN / nn.Conv / nn.Dense in
  one mode:
    'float'      the layer as it is, plus (with `calibrate`) this batch's input statistic
                 stored in the 'quant_stat' collection (made only if mutable)
    'fake'       BN folded, weights and input fake-quantized (QAT, differentiable)
    'int8'       BN folded, int8 x int8 -> int32, rescaled (inference)
  `init` creates each layer's 'quant' range (zero until calibrated)."""
  mode: str = 'int8'
  calibrate: bool = False
  statistic: str = 'max'  # 'max' | 'percentile' of |x| over the batch
  percentile: float = 99.99

  def batch_statistic(self, x):
    ax = jnp.abs(x.astype(jnp.float32)).reshape(-1)
    if self.statistic == 'max':
      return ax.max()
    return jnp.percentile(ax, self.percentile)

  def __call__(self, next_fun, args, kwargs, context):
    m = context.module
    if context.method_name != '__call__' or not isinstance(m, (ConvBN, nn.Conv, nn.Dense)):
      return next_fun(*args, **kwargs)
    if isinstance(m.parent, ConvBN):  # its ConvBN quantizes (and folds) it
      return next_fun(*args, **kwargs)
    x = args[0]
    if m.is_initializing():
      m.variable(QUANT, 'amax', lambda: jnp.zeros((), jnp.float32))
      return next_fun(*args, **kwargs)
    if self.calibrate and m.is_mutable_collection(_STAT):
      m.variable(_STAT, 'amax', lambda: jnp.zeros((), jnp.float32)).value = \
          self.batch_statistic(x)
    if self.mode == 'float':
      return next_fun(*args, **kwargs)
    return self._quantized(m, x, m.get_variable(QUANT, 'amax'))

  def _quantized(self, m, x, amax):
    params = m.variables['params']
    act = None
    if isinstance(m, ConvBN):
      conv = params['conv']
      kernel, bias = conv['kernel'], conv.get('bias')
      if m.norm:
        stats = m.variables['batch_stats']['norm']
        kernel, bias = fold_batch_norm(kernel, bias, params['norm']['scale'],
                                       params['norm']['bias'], stats['mean'], stats['var'],
                                       m.bn_epsilon)
      act = m.act
    else:
      kernel, bias = params['kernel'], params.get('bias')
    s_x = range_scale(amax)
    s_w = weight_scale(kernel)
    x = x.astype(jnp.float32)
    if isinstance(m, nn.Dense):
      if self.mode == 'fake':
        y = fake_quant(x, s_x) @ fake_quant(kernel, s_w)
      else:
        y = int8_matmul(quantize(x, s_x), quantize(kernel, s_w)).astype(jnp.float32) \
            * (s_x * s_w)
    else:
      geometry = _conv_layer(m, x, kernel)
      if self.mode == 'fake':
        y = float_conv(fake_quant(x, s_x), fake_quant(kernel, s_w), *geometry)
      else:
        y = int8_conv(quantize(x, s_x), quantize(kernel, s_w), *geometry
                      ).astype(jnp.float32) * (s_x * s_w)
    if bias is not None:
      y = y + bias
    return act(y) if act is not None else y


def combine_ranges(old, new, step, rule: str, decay: float = 0.9):
  """A layer's range after one more calibration batch (`step` batches seen before):
  'max' the running max, 'mean' the running mean, 'ema' an exponential moving average;
  the first batch sets it."""
  if rule == 'max':
    value = jnp.maximum(old, new)
  elif rule == 'mean':
    value = old + (new - old) / (step + 1).astype(jnp.float32)
  else:
    value = decay * old + (1 - decay) * new
  return jnp.where(step == 0, new, value)


# ---------------------------------------------------------------------------- the task


@dataclasses.dataclass(frozen=True)
class Options:
  """INT8 quantization's task_kwargs."""
  method: str = 'ptq'  # 'ptq' (calibrate only) | 'qat' (fake-quantized fine-tuning)
  calibration: str = 'max'  # activation range statistic: 'max' | 'percentile' of |x|
  percentile: float = 99.99
  ema_decay: float = 0.9  # qat: the ranges' moving average


def make(config) -> Task:
  opts = parse_options(Options, config)
  if opts.method not in ('ptq', 'qat'):
    raise ConfigError(f"unknown method {opts.method!r}; valid: 'ptq', 'qat'")
  if opts.calibration not in ('max', 'percentile'):
    raise ConfigError(f"unknown calibration {opts.calibration!r}; valid: 'max', 'percentile'")
  fcfg = source_run(config, FLOAT, 'the float run')
  if fcfg is None:
    raise ConfigError("quantization needs the float run: config.frozen.float = "
                      "dict(spec='configs/X.py', workdir='')")
  f_opts = parse_options(arch.load(fcfg.task, 'make').Options, fcfg)
  input_size, channels = tuple(f_opts.input_size), f_opts.channels
  model = arch.model_from_config(config)
  calib = Quantizer('float', calibrate=True, statistic=opts.calibration,
                    percentile=opts.percentile)
  fake, int8 = Quantizer('fake'), Quantizer('int8')
  rule = 'ema' if opts.method == 'qat' else ('max' if opts.calibration == 'max' else 'mean')

  def model_vars(variables):
    return {k: v for k, v in variables.items() if k != FLOAT}

  def init(rng, batch):
    x = scale_images(batch['image'], input_size)
    with nn.intercept_methods(Quantizer('float')):
      variables = dict(model.init({'params': rng, 'dropout': rng}, x, train=False))
    variables[FLOAT] = model.init({'params': rng, 'dropout': rng}, x, train=False)
    return variables

  def xent(logits_BK, labels_B):
    return optax.softmax_cross_entropy_with_integer_labels(logits_BK.astype(jnp.float32),
                                                           labels_B)

  def loss(variables, batch, rng):
    """QAT: the fake-quantized network's cross-entropy (BatchNorm folded, frozen)."""
    del rng  # no augmentation: a short fine-tune, and the same numbers on 1 or 8 devices
    x = scale_images(batch['image'], input_size)
    with nn.intercept_methods(fake):
      logits = model.apply(model_vars(variables), x, train=False)
    ce = xent(logits, batch['label']).mean()
    metrics = {'accuracy': (logits.argmax(-1) == batch['label']).mean(), 'loss': ce}
    return ce, (metrics, {k: v for k, v in variables.items() if k != 'params'})

  def make_step(builders):
    train = builders.supervised(loss)

    def step(state, batch, rng):
      # The first step starts from the float run (its params and BatchNorm statistics).
      first = state.step == 0
      pick = lambda new, old: jax.tree.map(lambda n, o: jnp.where(first, n, o), new, old)
      start = state.extra[FLOAT]
      extra = {**state.extra, **{k: pick(v, state.extra[k]) for k, v in start.items()
                                 if k != 'params'}}
      state = state.replace(params=pick(start['params'], state.params), extra=extra)
      # Calibrate the ranges on this batch (the float network's activations; QAT: the
      # fine-tuned one's), every device's statistic combined before the update.
      x = scale_images(batch['image'], input_size)
      with nn.intercept_methods(calib):
        logits, stats = model.apply({'params': state.params, **model_vars(state.extra)}, x,
                                    train=False, mutable=[_STAT])
      batch_stat = stats[_STAT]
      if builders.axis_name is not None:
        reduce = lax.pmax if opts.calibration == 'max' else lax.pmean
        batch_stat = reduce(batch_stat, builders.axis_name)
      ranges = jax.tree.map(lambda o, n: combine_ranges(o, n, state.step, rule,
                                                        opts.ema_decay),
                            state.extra[QUANT], batch_stat)
      state = state.replace(extra={**state.extra, QUANT: ranges})
      if opts.method == 'qat':
        return train(state, batch, rng)
      ce = builders.mean(xent(logits, batch['label']).mean())
      return state, {'loss': ce, 'grad_norm': jnp.zeros(()), 'learning_rate': jnp.zeros(())}

    return step

  def evaluate(variables, batch):
    x = scale_images(batch['image'], input_size)
    labels = batch['label']
    with nn.intercept_methods(int8):
      z_q = model.apply(model_vars(variables), x, train=False).astype(jnp.float32)
    z_f = model.apply(variables[FLOAT], x, train=False).astype(jnp.float32)
    rel = jnp.linalg.norm(z_q - z_f, axis=-1) / jnp.maximum(jnp.linalg.norm(z_f, axis=-1),
                                                            _TINY)
    return {'loss': xent(z_q, labels), 'accuracy': (z_q.argmax(-1) == labels).astype(jnp.float32),
            'float_loss': xent(z_f, labels),
            'float_accuracy': (z_f.argmax(-1) == labels).astype(jnp.float32),
            'agreement': (z_q.argmax(-1) == z_f.argmax(-1)).astype(jnp.float32),
            'logit_rel_error': rel}

  example_batch = lambda batch_size: labelled_images(batch_size, input_size, channels)
  return Task(init=init, loss=loss, evaluate=evaluate, example_batch=example_batch,
              make_step=make_step)


# ----------------------------------------------------------------------- speed


def inference_speed(model, variables, x_BHWC, repeats: int = 10,
                    quant: Optional[dict] = None) -> dict:
  """Images/s of the jitted float network and of its int8 path (the same variables plus
  `quant` ranges, default: the max of |x| at each layer on x itself), batch x_BHWC."""
  variables = {k: v for k, v in variables.items() if k not in (FLOAT, QUANT)}
  if quant is None:
    with nn.intercept_methods(Quantizer('float', calibrate=True)):
      _, stats = model.apply(variables, x_BHWC, train=False, mutable=[_STAT])
    quant = stats[_STAT]

  def run_float(v, x):
    return model.apply(v, x, train=False)

  def run_int8(v, x):
    with nn.intercept_methods(Quantizer('int8')):
      return model.apply(v, x, train=False)

  result = {}
  for name, fn, v in (('float32', run_float, variables),
                      ('int8', run_int8, {**variables, QUANT: quant})):
    fn = jax.jit(fn)
    jax.block_until_ready(fn(v, x_BHWC))
    start = time.perf_counter()
    for _ in range(repeats):
      jax.block_until_ready(fn(v, x_BHWC))
    result[f'{name}_images_per_sec'] = repeats * x_BHWC.shape[0] / (time.perf_counter() - start)
  result['int8_over_float32'] = result['int8_images_per_sec'] / result['float32_images_per_sec']
  return result
