"""Rectified flow with MMDiT (Esser et al. 2024, "Scaling Rectified Flow Transformers for
High-Resolution Image Synthesis", the Stable Diffusion 3 recipe): a Multimodal Diffusion
Transformer over image patches and text tokens, trained by flow matching on the straight
path between data and noise (Liu et al. 2022, "Flow straight and fast"; Lipman et al. 2022,
"Flow matching for generative modeling"), sampled by an Euler ODE solver. The same network
also trains with DDPM's epsilon objective (`objective='ddpm'`, the samplers of
arch/generative/diffusion.py), so the two objectives compare at equal sampler steps.

Rectified flow. x_t = (1 - t) x0 + t eps with x0 the data, eps ~ N(0, I), t in [0, 1]; the
network v(x_t, t) regresses the path's velocity v = eps - x0 (the MSE, the paper's
"rf" loss); t is drawn logit-normal, t = sigmoid(m + s n), n ~ N(0, 1) (`logit_mean`
m = 0, `logit_std` s = 1: the paper's best, rf/lognorm(0.00, 1.00)), which puts more
training at the middle of the path. The network sees the timestep as 1000 t (SD3's
scaling, so the sinusoidal features are DiT's). Sampling integrates dx/dt = v from t = 1
(pure noise) to t = 0 with N Euler steps, x <- x + (t_{i+1} - t_i) v(x, t_i), on the
uniform grid or SD3's shifted one (`shift` s: t' = s t / (1 + (s - 1) t); 1 = uniform).
Classifier-free guidance (Ho & Salimans 2022): captions are dropped to the empty caption
with probability `cfg_dropout` = 0.1 in training, and the sampler uses v_u + g (v_c - v_u).
(SD3 drops each of its three text encoders' outputs on its own, 46.3% each; one caption
here.) DDPM (`objective='ddpm'`): diffusion.py's linear schedule over T = 1000 steps, eps
prediction, L_simple; sampled by its DDIM (eta 0) or ancestral DDPM step on respaced
timesteps, x0 clipped to [-1, 1].

MMDiT, as diffusers' SD3Transformer2DModel builds it (its parameter count is matched
exactly; names here are this file's):
- image stream: a p x p patch conv to width D plus a fixed 2-D sin-cos position table
  (SD3 crops a `pos_embed_max_size`^2 table of the same kind to the grid; here the grid's
  own table, a constant either way), tokens T = HW / p^2;
- text stream: context features (B, S, E) -> Linear -> D. SD3 feeds frozen CLIP-L/G and T5
  features (E = 4096) and a pooled CLIP vector (P = 2048). With `vocab_size` > 0 (the
  small models here) there is no frozen encoder: a learned word table of width E plus a
  learned position table (word order matters: "red above blue" is not "blue above red")
  gives the features, and the pooled vector is the mean of the non-padding rows. The
  text stream's own per-block attention projections and MLPs then act as the text
  encoder, conditioned on the timestep like everything else;
- the condition vector c = timestep MLP (256 sinusoids -> Linear -> SiLU -> Linear) +
  pooled MLP (P -> Linear -> SiLU -> Linear);
- N joint blocks. Each stream has its OWN adaLN-Zero modulation from c (shift, scale, gate
  for attention and MLP), q/k/v projections, output projection and MLP (ratio 4, GELU tanh);
  ONE attention runs over the concatenation [image tokens; text tokens] (every token
  attends to both modalities), then the result is split back. Padding text tokens are
  masked out as keys (SD3's reference attends to T5's padding; masking makes a caption's
  padding irrelevant, tested). `qk_norm`: RMSNorm of queries and keys per head with a
  learned scale, per stream (SD3.5; off in SD3-medium). The last block is
  "context pre-only": its text stream only gives keys and values (a 2D modulation, no
  output projection or MLP), as the text is not read after it;
- the final layer on image tokens only: adaLN (shift, scale) -> Linear to p^2 C, unpatchified.
adaLN and the final Linear start at zero (adaLN-Zero, as DiT and SD3's reference), so the
network outputs zero at init; other kernels Xavier-uniform.

Sizes (`VARIANTS`): 'sd3-medium' is diffusers' SD3-medium configuration (24 blocks, width
1536 = 24 heads x 64, patch 2, 16 latent channels, pos_embed_max_size 192, context 4096,
pooled 2048): 2,028,328,000 parameters, diffusers' count (qk_norm: 2,028,334,144), via
eval_shape in tests/test_mmdit.py; 'tiny' for tests.

Task (`make`): images batch['image'] uint8 -> [-1, 1]; captions batch['tokens'] (B, S) int32
word ids, 0 padding (or, with vocab_size 0, batch['context'] (B, S, E) and batch['pooled']
(B, P) features, zeroed when dropped). Train metric `loss` (the MSE to the objective's
target); eval `loss` at a timestep and noise that are a fixed function of the image.
Prompts: `prompt_batch` takes captions as text (tokenized with task_kwargs.vocab, the
dataset's words, index = id; an unknown word is one ConfigError line) or as word ids;
without prompts it cycles task_kwargs.prompts (the config's held-out captions).

Measured (configs/rectified_flow_shapes.py, 2026-12-06, the loaded 2-core CPU): a 1.3M-parameter
MMDiT after only 500 steps of batch 32 follows the captions' colours (0.57 of them read back
by the attribute reader) but not yet their shapes or relations (prompt_all 0.03; fd 396
against a floor of 33 at 500 samples); the same network trained as DDPM for the same 500
steps scores fd 644 / 688 at 10 / 50 DDIM steps against rectified flow's 399 / 396 at 10 / 50
Euler steps.

Dimension key: B batch, H W C image, T image tokens, S text tokens, L = T + S joint tokens,
D width, N heads, K head width, E context feature width, P pooled width, p patch size.
"""

import dataclasses
import math
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import arch
from arch.generative import diffusion, image_keys, to_uint8, to_unit
from arch.generative.dit import FinalLayer, TimestepEmbed, dense, modulate, plain_norm, unpatchify
from arch.layers.embed import Mlp, PatchEmbed, sincos_2d, token_embed
from arch.task import ConfigError, Task, parse_options, row_keys
from arch.vocab import word_ids

Dtype = Any
OBJECTIVES = ('rf', 'ddpm')
SAMPLERS = {'rf': ('euler',), 'ddpm': diffusion.SAMPLERS}
TIME_SCALE = 1000.0  # the network sees 1000 t (SD3's timestep scaling)


# ------------------------------------------------------------------- rectified flow


def rf_interpolate(x0, eps, t):
  """x_t = (1 - t) x0 + t eps (t broadcasts against x0)."""
  return (1.0 - t) * x0 + t * eps


def rf_target(x0, eps):
  """The straight path's velocity d x_t / dt = eps - x0: what the network regresses."""
  return eps - x0


def logit_normal(rng, shape, mean: float = 0.0, std: float = 1.0):
  """t = sigmoid(mean + std n), n ~ N(0, 1): SD3's logit-normal timestep sampling."""
  return jax.nn.sigmoid(mean + std * jax.random.normal(rng, shape))


def logit_normal_density(t, mean: float = 0.0, std: float = 1.0):
  """The density of `logit_normal` at t in (0, 1) (the paper's eq. 19)."""
  logit = np.log(t) - np.log1p(-t)
  return (np.exp(-(logit - mean) ** 2 / (2 * std ** 2))
          / (std * math.sqrt(2 * math.pi) * t * (1 - t)))


def euler_times(steps: int, shift: float = 1.0) -> np.ndarray:
  """The steps + 1 times of the Euler sampler, 1 -> 0: uniform, then SD3's shift
  t' = s t / (1 + (s - 1) t) (s > 1 spends more steps near the noise)."""
  if steps < 1:
    raise ConfigError(f'sampler steps must be >= 1, got {steps}')
  t = np.linspace(1.0, 0.0, steps + 1)
  return shift * t / (1.0 + (shift - 1.0) * t)


def euler_sample(velocity, x1, times):
  """Integrates dx/dt = velocity(x, t) from times[0] to times[-1] with Euler steps
  x <- x + (t_{i+1} - t_i) velocity(x, t_i), as one scan; returns x at times[-1]."""
  times = jnp.asarray(times, jnp.float32)

  def step(x, i):
    return x + (times[i + 1] - times[i]) * velocity(x, times[i]), None

  x, _ = jax.lax.scan(step, x1, jnp.arange(len(times) - 1))
  return x


# ---------------------------------------------------------------------------- network


def joint_attention(q_BLNK, k_BLNK, v_BLNK, keep_BL):
  """Softmax attention of every token over the keys that `keep_BL` marks (B, L) bool."""
  scale = q_BLNK.shape[-1] ** -0.5
  logits_BNLM = jnp.einsum('BLNK,BMNK->BNLM', q_BLNK, k_BLNK).astype(jnp.float32) * scale
  logits_BNLM = jnp.where(keep_BL[:, None, None, :], logits_BNLM, -1e30)
  w_BNLM = jax.nn.softmax(logits_BNLM, axis=-1).astype(v_BLNK.dtype)  # fp32 softmax
  return jnp.einsum('BNLM,BMNK->BLNK', w_BNLM, v_BLNK)


class JointBlock(nn.Module):
  """One MMDiT block: (image (B, T, D), text (B, S, D), c (B, D), text mask (B, S)) ->
  (image, text or None when `context_pre_only`)."""
  num_heads: int
  mlp_ratio: float = 4.0
  context_pre_only: bool = False  # the last block: the text stream gives keys/values only
  qk_norm: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BTD, c_BSD, cond_BD, mask_BS):
    d, n = x_BTD.shape[-1], self.num_heads
    k = d // n
    xavier = nn.initializers.xavier_uniform()
    zeros = nn.initializers.zeros
    lin = lambda f, name, init=xavier, axes=('embed', 'mlp'): dense(
        f, axes, init, name, self.dtype, self.param_dtype)
    silu_c = nn.silu(cond_BD)
    x_mod = jnp.split(lin(6 * d, 'x_adaln', zeros)(silu_c), 6, axis=-1)
    c_mod = jnp.split(lin((2 if self.context_pre_only else 6) * d, 'c_adaln', zeros)(silu_c),
                      2 if self.context_pre_only else 6, axis=-1)
    hx = modulate(plain_norm(self.dtype)(x_BTD), x_mod[0], x_mod[1])
    hc = modulate(plain_norm(self.dtype)(c_BSD), c_mod[0], c_mod[1])

    def qkv(h, prefix):
      out = []
      for part in ('q', 'k', 'v'):
        y = lin(d, f'{prefix}_{part}', axes=('embed', 'heads'))(h)
        y = y.reshape(*h.shape[:2], n, k)
        if self.qk_norm and part != 'v':
          y = nn.RMSNorm(epsilon=1e-6, dtype=self.dtype, param_dtype=self.param_dtype,
                         name=f'{prefix}_norm_{part}')(y)
        out.append(y)
      return out

    (qx, kx, vx), (qc, kc, vc) = qkv(hx, 'x'), qkv(hc, 'c')
    t = x_BTD.shape[1]
    keep_BL = jnp.concatenate([jnp.ones(x_BTD.shape[:2], bool), mask_BS], axis=1)
    o_BLNK = joint_attention(jnp.concatenate([qx, qc], 1), jnp.concatenate([kx, kc], 1),
                             jnp.concatenate([vx, vc], 1), keep_BL)
    o_BLD = o_BLNK.reshape(*o_BLNK.shape[:2], d)

    def mlp(name):
      return Mlp(int(d * self.mlp_ratio), 'gelu_tanh', dtype=self.dtype,
                 param_dtype=self.param_dtype, name=name)

    x_BTD = x_BTD + x_mod[2][:, None] * lin(d, 'x_out', axes=('heads', 'embed'))(o_BLD[:, :t])
    x_BTD = x_BTD + x_mod[5][:, None] * mlp('x_mlp')(
        modulate(plain_norm(self.dtype)(x_BTD), x_mod[3], x_mod[4]))
    if self.context_pre_only:
      return x_BTD, None
    c_BSD = c_BSD + c_mod[2][:, None] * lin(d, 'c_out', axes=('heads', 'embed'))(o_BLD[:, t:])
    c_BSD = c_BSD + c_mod[5][:, None] * mlp('c_mlp')(
        modulate(plain_norm(self.dtype)(c_BSD), c_mod[3], c_mod[4]))
    return x_BTD, c_BSD


class Model(nn.Module):
  """MMDiT: (x (B, H, W, C), t (B,), text) -> (B, H, W, out_channels) float32. `text` is
  word ids (B, S) int (0 pads) when vocab_size > 0, else context features (B, S, E) with
  `pooled_BP` (B, P) and an optional `mask_BS`."""
  hidden_dim: int = 1536
  depth: int = 24
  num_heads: int = 24
  patch_size: int = 2
  mlp_ratio: float = 4.0
  qk_norm: bool = False  # SD3.5's RMSNorm of queries and keys
  out_channels: Optional[int] = None  # None: the input's channels
  context_dim: int = 4096  # E: the text features' width (T5-XXL's in SD3; the word table's)
  pooled_dim: int = 2048  # P: the pooled text vector (CLIP-L + G in SD3); = E with words
  vocab_size: int = 0  # > 0: a learned word table (0 pads) in place of frozen encoders
  max_text_len: int = 77  # rows of the learned text position table (vocab_size > 0)
  pos_embed_max_size: int = 192  # the largest patch grid side (SD3's position table)
  frequency_dim: int = 256
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BHWC, t_B, text, pooled_BP=None, mask_BS=None, *, train: bool = False):
    del train  # no dropout; caption dropout for guidance is the objective's
    b, h, w, c = x_BHWC.shape
    p, d = self.patch_size, self.hidden_dim
    if d % self.num_heads or d % 4:
      raise ValueError(f'MMDiT width {d} must be divisible by num_heads {self.num_heads} '
                       f'and by 4 (2-D sin-cos positions)')
    if max(h, w) // p > self.pos_embed_max_size:
      raise ValueError(f'a {h // p}x{w // p} patch grid exceeds pos_embed_max_size '
                       f'{self.pos_embed_max_size}')
    xavier = nn.initializers.variance_scaling(1.0, 'fan_avg', 'uniform', in_axis=(0, 1, 2),
                                              out_axis=-1)
    x_BTD = PatchEmbed(d, p, kernel_init=xavier, dtype=self.dtype,
                       param_dtype=self.param_dtype, name='patch_embed')(x_BHWC)
    x_BTD = x_BTD + jnp.asarray(sincos_2d(h // p, w // p, d), self.dtype)[None]

    if self.vocab_size:
      tokens_BS = jnp.asarray(text, jnp.int32)
      s = tokens_BS.shape[1]
      if s > self.max_text_len:
        raise ValueError(f'{s} text tokens exceed max_text_len {self.max_text_len}')
      mask_BS = tokens_BS != 0
      feats_BSE = token_embed(self.vocab_size, self.context_dim, dtype=self.dtype,
                              param_dtype=self.param_dtype, name='word_embed')(tokens_BS)
      pos_SE = self.param('text_pos', nn.with_logical_partitioning(
          nn.initializers.normal(0.02), (None, 'embed')), (self.max_text_len, self.context_dim),
                          self.param_dtype)
      feats_BSE = feats_BSE + jnp.asarray(pos_SE[:s], self.dtype)[None]
      m = mask_BS[..., None].astype(feats_BSE.dtype)
      pooled_BP = (feats_BSE * m).sum(1) / jnp.maximum(m.sum(1), 1.0)
    else:
      feats_BSE = jnp.asarray(text, self.dtype)
      if pooled_BP is None:
        raise ValueError('MMDiT on text features needs pooled_BP (the pooled text vector)')
      mask_BS = jnp.ones(feats_BSE.shape[:2], bool) if mask_BS is None else mask_BS
    init = nn.initializers.xavier_uniform()
    c_BSD = dense(d, (None, 'embed'), init, 'context_embed', self.dtype,
                  self.param_dtype)(feats_BSE)

    cond_BD = TimestepEmbed(d, self.frequency_dim, self.dtype, self.param_dtype,
                            name='t_embed')(t_B)
    hid = dense(d, (None, 'embed'), init, 'pooled_fc1', self.dtype, self.param_dtype)(
        jnp.asarray(pooled_BP, self.dtype))
    cond_BD = cond_BD + dense(d, ('embed', 'mlp'), init, 'pooled_fc2', self.dtype,
                              self.param_dtype)(nn.silu(hid))

    for i in range(self.depth):
      x_BTD, c_BSD = JointBlock(self.num_heads, self.mlp_ratio, i == self.depth - 1,
                                self.qk_norm, self.dtype, self.param_dtype,
                                name=f'block{i}')(x_BTD, c_BSD, cond_BD, mask_BS)
    out_c = self.out_channels or c
    x_BTK = FinalLayer(p * p * out_c, self.dtype, self.param_dtype, name='final')(x_BTD, cond_BD)
    return unpatchify(x_BTK, p, h, w).astype(jnp.float32)


VARIANTS = {
    # diffusers SD3Transformer2DModel, stabilityai/stable-diffusion-3-medium's config
    'sd3-medium': dict(hidden_dim=1536, depth=24, num_heads=24, patch_size=2,
                       context_dim=4096, pooled_dim=2048, pos_embed_max_size=192),
    'tiny': dict(hidden_dim=32, depth=2, num_heads=2, patch_size=4, context_dim=16,
                 vocab_size=16, max_text_len=8),
}


# ------------------------------------------------------------------------------- task


@dataclasses.dataclass(frozen=True)
class Options:
  """The task_kwargs of rectified flow / DDPM with a text-conditioned MMDiT."""
  objective: str = 'rf'  # OBJECTIVES
  input_size: tuple = (32, 32)  # (H, W)
  channels: int = 3
  logit_mean: float = 0.0  # rf: t = sigmoid(logit_mean + logit_std n)
  logit_std: float = 1.0
  num_timesteps: int = 1000  # ddpm: T, the linear schedule, eps prediction
  schedule: str = 'linear'
  cfg_dropout: float = 0.1  # captions dropped to the empty caption (guidance)
  text_len: int = 8  # S: caption length (word ids, 0-padded)
  context_len: int = 0  # vocab_size 0: the feature sequence's length in example batches
  vocab: tuple = ()  # the caption words, index = id (0: padding): prompts as text
  prompts: tuple = ()  # captions `prompt_batch(None, n)` cycles (the sampler's default)


def sampler_defaults(config, objective: str) -> dict:
  s = config.get('sample') or {}
  return dict(steps=int(s.get('steps', 0) or 50),
              sampler=s.get('sampler') or SAMPLERS[objective][0],
              guidance=float(s.get('guidance', 1.0)), eta=float(s.get('eta', 0.0)),
              shift=float(s.get('shift', 1.0)))


def make(config) -> Task:
  """Text-conditioned rectified flow (or DDPM) of uint8 images batch['image'] with
  captions batch['tokens']. Train and eval metric `loss`."""
  o = parse_options(Options, config)
  if o.objective not in OBJECTIVES:
    raise ConfigError(f'unknown task_kwargs.objective {o.objective!r}; valid: '
                      f'{", ".join(OBJECTIVES)}')
  if not 0.0 <= o.cfg_dropout < 1.0:
    raise ConfigError(f'task_kwargs.cfg_dropout must be in [0, 1), got {o.cfg_dropout}')
  shape = (*tuple(o.input_size), int(o.channels))
  model = arch.model_from_config(config, out_channels=shape[-1])
  words = bool(model.vocab_size)
  vocab = tuple(o.vocab)
  rf = o.objective == 'rf'
  big_t = int(o.num_timesteps)
  abar_T = diffusion.alphas_cumprod(diffusion.beta_schedule(o.schedule, big_t))
  abar_f32 = jnp.asarray(abar_T, jnp.float32)
  defaults = sampler_defaults(config, o.objective)
  text_len = int(o.text_len)
  ctx_len = int(o.context_len) or text_len

  def drop_text(text, drop_B):
    """The batch's text with the rows in drop_B (B,) bool replaced by the empty caption."""
    if words:
      return {'tokens': jnp.where(drop_B[:, None], 0, text['tokens'])}
    z = lambda a: jnp.where(drop_B.reshape(-1, *[1] * (a.ndim - 1)), 0.0, a)
    return {'context': z(text['context']), 'pooled': z(text['pooled'])}

  def text_of(batch):
    keys = ('tokens',) if words else ('context', 'pooled')
    return {k: batch[k] for k in keys}

  def apply(variables, x_t, t_B, text):
    args = (text['tokens'],) if words else (text['context'], text['pooled'])
    return model.apply(variables, x_t, t_B.astype(jnp.float32), *args).astype(jnp.float32)

  def init(rng, batch):
    b = jax.tree.leaves(batch)[0].shape[0]
    x = jnp.zeros((b, *shape), jnp.float32)
    args = (batch['tokens'],) if words else (batch['context'], batch['pooled'])
    return dict(model.init(rng, x, jnp.zeros((b,), jnp.float32), *args))

  def to_x0(batch):
    if tuple(batch['image'].shape[1:]) != shape:
      raise ValueError(f'images of shape {tuple(batch["image"].shape[1:])}; the task is built '
                       f'for {shape} (task_kwargs input_size, channels)')
    return to_unit(batch['image'])

  def mse(variables, batch, t_B, eps, text):
    """Per-example MSE of the network to the objective's target at t_B (rf: in [0, 1];
    ddpm: int timesteps) with noise eps."""
    x0 = to_x0(batch)
    if rf:
      tt = t_B.reshape(-1, 1, 1, 1)
      out = apply(variables, rf_interpolate(x0, eps, tt), t_B * TIME_SCALE, text)
      want = rf_target(x0, eps)
    else:
      abar = abar_f32[t_B].reshape(-1, 1, 1, 1)
      out = apply(variables, diffusion.q_sample(x0, eps, abar), t_B, text)
      want = eps
    return diffusion.mean_dims((out - want) ** 2)

  def draw_t(rng, b):
    if rf:
      return logit_normal(rng, (b,), o.logit_mean, o.logit_std)
    return jax.random.randint(rng, (b,), 0, big_t)

  def loss(variables, batch, rng):
    b = batch['image'].shape[0]
    k_t, k_eps, k_drop = jax.random.split(rng, 3)
    text = drop_text(text_of(batch), jax.random.bernoulli(k_drop, o.cfg_dropout, (b,)))
    value = mse(variables, batch, draw_t(k_t, b), jax.random.normal(k_eps, (b, *shape)),
                text).mean()
    return value, ({'loss': value}, {})

  def evaluate(variables, batch):
    keys = image_keys(batch['image'])
    t_B = jax.vmap(lambda k: draw_t(jax.random.fold_in(k, 0), 1)[0])(keys)
    eps = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, 1), shape))(keys)
    return {'loss': mse(variables, batch, t_B, eps, text_of(batch))}

  def example_batch(n):
    out = {'image': jax.ShapeDtypeStruct((n, *shape), jnp.uint8)}
    if words:
      out['tokens'] = jax.ShapeDtypeStruct((n, text_len), jnp.int32)
    else:
      out['context'] = jax.ShapeDtypeStruct((n, ctx_len, model.context_dim), jnp.float32)
      out['pooled'] = jax.ShapeDtypeStruct((n, model.pooled_dim), jnp.float32)
    return out

  def prompt_batch(prompts, num_samples):
    """{'tokens': (num_samples, S)}: one caption per sample, as text or word ids; None
    cycles task_kwargs.prompts."""
    if not words:
      raise ConfigError('this MMDiT reads text features (vocab_size 0): it has no prompts')
    if prompts is None:
      if not o.prompts:
        raise ConfigError('no prompt given and task_kwargs.prompts is empty')
      prompts = [o.prompts[i % len(o.prompts)] for i in range(num_samples)]
    if len(prompts) != num_samples:
      raise ConfigError(f'{len(prompts)} prompts for {num_samples} samples')
    rows = []
    for p in prompts:
      if isinstance(p, str):
        if not vocab:
          raise ConfigError('task_kwargs.vocab is empty: prompts must be word ids')
        rows.append(word_ids(p, vocab, text_len))
      else:
        ids = [int(i) for i in p]
        if len(ids) > text_len or not all(0 <= i < model.vocab_size for i in ids):
          raise ConfigError(f'prompt ids {ids}: at most {text_len} ids in '
                            f'[0, {model.vocab_size})')
        rows.append(np.array(ids + [0] * (text_len - len(ids)), np.int32))
    return {'tokens': np.stack(rows)}

  def guided(variables, x, t_B, text, guidance):
    """The network's output with classifier-free guidance: u + g (c - u)."""
    if guidance == 1.0:
      return apply(variables, x, t_B, text)
    b = x.shape[0]
    empty = drop_text(text, jnp.ones((b,), bool))
    both = apply(variables, jnp.concatenate([x, x]), jnp.concatenate([t_B, t_B]),
                 jax.tree.map(lambda a, e: jnp.concatenate([a, e]), text, empty))
    return both[b:] + guidance * (both[:b] - both[b:])

  def sample(variables, batch, rng, *, row_ids, steps=None, sampler=None, guidance=None,
             eta=None, shift=None, **unused):
    """{'images': (B, H, W, C) uint8} after `steps` sampler steps (defaults: the config's)."""
    del unused  # e.g. the driver's temperature
    steps = int(steps or defaults['steps'])
    sampler = sampler or defaults['sampler']
    guidance = defaults['guidance'] if guidance is None else float(guidance)
    eta = defaults['eta'] if eta is None else float(eta)
    shift = defaults['shift'] if shift is None else float(shift)
    if sampler not in SAMPLERS[o.objective]:
      raise ConfigError(f'unknown sampler {sampler!r} for objective {o.objective!r}; valid: '
                        f'{", ".join(SAMPLERS[o.objective])}')
    b = row_ids.shape[0]
    text = text_of(batch)
    splits = jax.vmap(jax.random.split)(row_keys(rng, row_ids))
    x1 = jax.vmap(lambda k: jax.random.normal(k, shape))(splits[:, 0])
    if rf:
      velocity = lambda x, t: guided(variables, x, jnp.full((b,), t * TIME_SCALE), text,
                                     guidance)
      return {'images': to_uint8(euler_sample(velocity, x1, euler_times(steps, shift)))}
    sched = diffusion.spaced(abar_T, diffusion.sampler_timesteps(big_t, steps))

    def step(x_t, i):
      abar, abar_prev = sched.abar[i], sched.abar_prev[i]
      out = guided(variables, x_t, jnp.full((b,), sched.t[i]), text, guidance)
      x0 = jnp.clip(diffusion.to_x0_eps(out, x_t, abar, 'eps')[0], -1.0, 1.0)
      eps = diffusion.eps_from_x0(x_t, x0, abar)
      noise = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, i), shape))(
          splits[:, 1])
      if sampler == 'ddim':
        return diffusion.ddim_step(x_t, x0, eps, abar, abar_prev, eta, noise), None
      log_var = diffusion.log_variance('fixed_small', sched, i)
      return diffusion.ddpm_step(x_t, x0, abar, abar_prev, noise, log_var), None

    x0, _ = jax.lax.scan(step, x1, jnp.arange(steps - 1, -1, -1))
    return {'images': to_uint8(x0)}

  return Task(init=init, loss=loss, evaluate=evaluate, example_batch=example_batch,
              sample=sample, prompt_batch=prompt_batch)
