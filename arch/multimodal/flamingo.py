"""Flamingo (Alayrac et al. 2022, "Flamingo: a visual language model for few-shot
learning"): a frozen vision encoder and a frozen language model, bridged by two trained
pieces.

  PerceiverResampler  each medium's visual features (F frames x P tokens, plus a learned
                      per-frame time embedding) -> R learned latents that attend, layer by
                      layer, to [features; latents] (paper section 2.1 and appendix A.1.1).
  GatedCrossAttention Flamingo's GATED XATTN-DENSE block, inserted before LM layers
                      (every `cross_every`-th): y += tanh(a_attn) * attn(LN(y), media);
                      y += tanh(a_mlp) * ffw(LN(y)). The gates a start at 0, so at
                      initialisation the model *is* the frozen LM, exactly.
  GatedLM             GPT (arch/sequence/gpt.py) with those blocks interleaved through
                      GPT's `layer` hook; its own parameter names are GPT's, so a GPT run's
                      parameters load into it unchanged.

Each text token cross-attends only to the latents of the last medium before it
(`media_index_BT`: that medium's index, -1 before the first; such tokens see no media).

The task (`config.task = 'multimodal.flamingo'`) freezes both pretrained networks the way
the loop freezes anything: as non-parameter collections filled from other runs of this
codebase (`config.frozen`, train/loop.py), which no optimizer and no gradient touches:
  config.frozen.vision  a CLIP run (arch/multimodal/clip.py, as Flamingo's contrastively
                        pretrained NFNet); its image tower's patch tokens are the features.
  config.frozen.lm      a byte-level GPT run (`sequence.gpt`); its parameters are merged
                        with the trained cross-attention ones at every apply. The frozen LM
                        runs without dropout.
Only the resampler and the gated blocks are parameters. If a frozen run's workdir has no
checkpoint, the loop trains that run first.

Digit question answering: every image is asked questions from `QUESTIONS`, as byte-level
text '<s>Q: What digit is this? A: seven</s>' after the image; the loss is the answer's
(answer bytes and </s>). Training draws one question per image per step; eval asks every
question of every test image and reports `accuracy` (answers exactly right) and one
`accuracy_<kind>` per question, computed with teacher forcing: a greedy decode
reproduces an answer exactly iff every one of its tokens is the argmax given the true
prefix, so this is the greedy exact match. The sampler (`python -m train.sample`) answers
any question about the eval split's images, one image per sample.

Config keys read: `frozen.vision`, `frozen.lm`, `model` (GatedLM's cross_every,
cross_heads, cross_head_dim, cross_mlp_ratio, and `resampler`: PerceiverResampler's
kwargs), `task_kwargs` (`Options`: text_length), `compute_dtype`, `param_dtype`.

Dimension key: B batch, T text length, M media per example, F frames per medium,
P visual tokens per frame, R latents per medium, N = M * R, D width, V vocabulary.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import arch
from arch.layers.attention import Attention
from arch.layers.embed import Mlp, norm
from arch import vocab
from arch.sequence import gpt
from arch.task import ConfigError, Task, parse_options

Dtype = Any
XATTN = 'xattn'  # name prefix of the gated blocks inside GatedLM: everything else is GPT's


# ---------------------------------------------------------------------------------------
# Networks
# ---------------------------------------------------------------------------------------

class PerceiverResampler(nn.Module):
  """Visual features (B, M, F, P, D) -> R latents per medium (B, M, R, D), layer-normed."""
  num_latents: int = 64
  depth: int = 6
  num_heads: int = 8
  head_dim: int = 64
  mlp_ratio: int = 4
  max_frames: int = 1  # rows of the learned time embedding
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, media_BMFPD):
    b, m, f, p, d = media_BMFPD.shape
    if f > self.max_frames:
      raise ValueError(f'{f} frames per medium; the time embedding holds {self.max_frames}')
    time_FD = self.param('time_embed', nn.initializers.normal(0.02), (self.max_frames, d),
                         self.param_dtype)
    x_XPD = (media_BMFPD + jnp.asarray(time_FD[:f, None], self.dtype)).reshape(b * m, f * p, d)
    latents_RD = self.param('latents', nn.initializers.normal(0.02), (self.num_latents, d),
                            self.param_dtype)
    lat_XRD = jnp.broadcast_to(jnp.asarray(latents_RD, self.dtype), (b * m, self.num_latents, d))
    layer_norm = lambda name: norm('layer', 1e-5, dtype=self.dtype,
                                   param_dtype=self.param_dtype, name=name)
    for i in range(self.depth):
      # The latents' queries attend to the features and to the latents themselves.
      q_XRD = layer_norm(f'layers_{i}_latent_norm')(lat_XRD)
      kv_XSD = jnp.concatenate([layer_norm(f'layers_{i}_media_norm')(x_XPD), q_XRD], axis=1)
      lat_XRD = lat_XRD + Attention(self.num_heads, head_dim=self.head_dim, use_bias=False,
                                    dtype=self.dtype, param_dtype=self.param_dtype,
                                    name=f'layers_{i}_attn')(q_XRD, kv_XSD)
      lat_XRD = lat_XRD + Mlp(self.mlp_ratio * d, 'gelu', use_bias=False, dtype=self.dtype,
                              param_dtype=self.param_dtype, name=f'layers_{i}_mlp')(
                                  layer_norm(f'layers_{i}_mlp_norm')(lat_XRD))
    return layer_norm('final_norm')(lat_XRD).reshape(b, m, self.num_latents, d)


class GatedCrossAttention(nn.Module):
  """Flamingo's GATED XATTN-DENSE: text (B, T, D) attends to media latents (B, N, Dm)
  under mask (B, T, N); both residual branches are scaled by tanh of a gate that starts
  at 0."""
  num_heads: int = 8
  head_dim: int = 64
  mlp_ratio: int = 4
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BTD, media_BND, mask_BTN):
    d = x_BTD.shape[-1]
    gate = lambda name: jnp.tanh(jnp.asarray(self.param(
        name, nn.with_logical_partitioning(nn.initializers.zeros, ()), (), self.param_dtype),
        self.dtype))
    layer_norm = lambda name: norm('layer', 1e-5, dtype=self.dtype,
                                   param_dtype=self.param_dtype, name=name)
    attn = Attention(self.num_heads, head_dim=self.head_dim, use_bias=False, dtype=self.dtype,
                     param_dtype=self.param_dtype, name='attn')
    y_BTD = attn(layer_norm('attn_norm')(x_BTD), media_BND, mask=mask_BTN[:, None])
    # A token with no medium before it gets nothing (not a uniform average over media).
    y_BTD = y_BTD * mask_BTN.any(axis=-1, keepdims=True).astype(y_BTD.dtype)
    x_BTD = x_BTD + gate('attn_gate') * y_BTD
    mlp = Mlp(self.mlp_ratio * d, 'gelu', use_bias=False, dtype=self.dtype,
              param_dtype=self.param_dtype, name='mlp')
    return x_BTD + gate('mlp_gate') * mlp(layer_norm('mlp_norm')(x_BTD))


class GatedLM(gpt.Model):
  """GPT with a GatedCrossAttention block before every `cross_every`-th layer (0, k, 2k,
  ...), named xattn{i}; `context` = {'media': (B, N, Dm), 'mask': (B, T, N)}. Without a
  context it is GPT."""
  cross_every: int = 1
  cross_heads: int = 8
  cross_head_dim: int = 64
  cross_mlp_ratio: int = 4

  def layer(self, i, x_BTD, pos_BT, *, train, decode, context=None):
    if context is not None and i % self.cross_every == 0:
      x_BTD = GatedCrossAttention(self.cross_heads, self.cross_head_dim, self.cross_mlp_ratio,
                                  dtype=self.dtype, param_dtype=self.param_dtype,
                                  name=f'{XATTN}{i}')(x_BTD, context['media'], context['mask'])
    return super().layer(i, x_BTD, pos_BT, train=train, decode=decode)


class Model(nn.Module):
  """Flamingo: text (B, T) and visual features (B, M, F, P, Dm) -> logits (B, T, V)."""
  lm: GatedLM
  resampler: PerceiverResampler

  def resample(self, media_BMFPD):
    return self.resampler(media_BMFPD)

  def decode_text(self, tokens_BT, latents_BMRD, media_index_BT=None, *,
                  train: bool = False, decode: bool = False):
    """Logits given the resampled latents; `media_index_BT` defaults to the last medium
    for every token (media before the text)."""
    b, m, r, d = latents_BMRD.shape
    if media_index_BT is None:
      media_index_BT = jnp.full(tokens_BT.shape, m - 1, jnp.int32)
    medium_N = jnp.repeat(jnp.arange(m), r)
    mask_BTN = media_index_BT[:, :, None] == medium_N[None, None, :]
    context = {'media': latents_BMRD.reshape(b, m * r, d), 'mask': mask_BTN}
    return self.lm(tokens_BT, train=train, decode=decode, context=context)

  def __call__(self, tokens_BT, media_BMFPD, media_index_BT=None, *, train: bool = False,
               decode: bool = False):
    return self.decode_text(tokens_BT, self.resample(media_BMFPD), media_index_BT,
                            train=train, decode=decode)


def split_params(params):
  """Flamingo's params -> (trained: resampler and gated blocks, frozen: the GPT's own)."""
  lm = params['lm']
  frozen = {k: v for k, v in lm.items() if not k.startswith(XATTN)}
  trained = {**params, 'lm': {k: v for k, v in lm.items() if k.startswith(XATTN)}}
  return trained, frozen


def merge_params(trained, frozen):
  """The inverse of `split_params`; the frozen part gets no gradient."""
  return {**trained, 'lm': {**jax.lax.stop_gradient(frozen), **trained['lm']}}


# ---------------------------------------------------------------------------------------
# Digit question answering
# ---------------------------------------------------------------------------------------

WORDS = 'zero one two three four five six seven eight nine ten'.split()
# (kind, question, answer(digit)): every test image is asked each of them.
QUESTIONS = (
    ('digit', 'What digit is this?', lambda d: WORDS[d]),
    ('parity', 'Is the digit even or odd?', lambda d: 'odd' if d % 2 else 'even'),
    ('large', 'Is the digit larger than four?', lambda d: 'yes' if d > 4 else 'no'),
    ('plus_one', 'What is the digit plus one?', lambda d: WORDS[d + 1]),
)


def prompt_text(question: str) -> str:
  return f'Q: {question} A:'


def _bytes(text: str):
  return [b + vocab.NUM_SPECIAL for b in text.encode('utf-8')]


def qa_table(length: int):
  """(tokens (Q, 10, L) int32: <s> prompt ' answer' </s> <pad>..., answer_mask (Q, 10,
  L - 1) float32: 1 where the next-token target belongs to the answer or is its </s>)."""
  tokens = np.full((len(QUESTIONS), 10, length), vocab.PAD, np.int32)
  mask = np.zeros((len(QUESTIONS), 10, length - 1), np.float32)
  for q, (_, question, answer) in enumerate(QUESTIONS):
    for d in range(10):
      prompt = [vocab.BOS, *_bytes(prompt_text(question))]
      ids = prompt + _bytes(' ' + answer(d)) + [vocab.EOS]
      if len(ids) > length:
        raise ConfigError(f'{prompt_text(question)!r} and its answer take {len(ids)} tokens; '
                          f'task_kwargs.text_length is {length}')
      tokens[q, d, :len(ids)] = ids
      mask[q, d, len(prompt) - 1:len(ids) - 1] = 1.0  # targets at positions len(prompt)..
  return tokens, mask


@dataclasses.dataclass(frozen=True)
class Options:
  """Flamingo's task_kwargs."""
  text_length: int = 48  # question + answer tokens, at most the frozen LM's positions + 1


def make(config) -> Task:
  from arch.multimodal import clip
  opts = parse_options(Options, config)
  frozen = config.get('frozen') or {}
  for name in ('vision', 'lm'):
    if not frozen.get(name) or not frozen[name].get('config'):
      raise ConfigError(f"multimodal.flamingo needs config.frozen.{name} = dict(spec="
                        f"'configs/X.py', workdir=''): the frozen "
                        f"{'CLIP run (image tower)' if name == 'vision' else 'GPT run'}")
  vcfg, lcfg = frozen.vision.config, frozen.lm.config
  if vcfg.task != 'multimodal.clip':
    raise ConfigError(f'config.frozen.vision must be a multimodal.clip run (its image tower '
                      f'is the vision encoder), got task {vcfg.task!r}')
  if lcfg.model_name != 'sequence.gpt' or lcfg.data.get('tokenizer') != 'byte':
    raise ConfigError(f'config.frozen.lm must be a byte-level sequence.gpt run, got '
                      f'{lcfg.model_name!r} with tokenizer {lcfg.data.get("tokenizer")!r}')
  vopts = parse_options(clip.Options, vcfg)  # the CLIP run's options, as it reads them
  setup, clip_model = clip.build(vcfg, vopts)
  clip_length = int(vopts.text_length)
  kw = {k: v for k, v in dict(config.model).items() if k != 'resampler'}
  dtypes = {k: config.get(c) for k, c in (('dtype', 'compute_dtype'),
                                          ('param_dtype', 'param_dtype')) if config.get(c)}
  try:
    lm = arch.build_model('multimodal.flamingo:GatedLM',
                          **{**dict(lcfg.model), 'dropout_rate': 0.0, **kw, **dtypes})
    resampler = arch.build_model('multimodal.flamingo:PerceiverResampler',
                                 **{**dict(config.model.get('resampler', {})), **dtypes})
  except LookupError as e:
    raise ConfigError(str(e).strip('"\'')) from None
  model = Model(lm, resampler)
  length = int(opts.text_length)
  if length > lm.max_length + 1:
    raise ConfigError(f'task_kwargs.text_length {length} exceeds the frozen LM\'s '
                      f'{lm.max_length} positions + 1')
  table, answer_mask = (jnp.asarray(a) for a in qa_table(length))
  kinds = [k for k, _, _ in QUESTIONS]

  def media(variables, batch):
    """The frozen image tower's patch tokens as one single-frame medium: (B, 1, 1, P, D)."""
    tokens_BPD = clip_model.apply(variables['vision'], setup.images(batch),
                                  method='image_tokens')
    return jax.lax.stop_gradient(tokens_BPD)[:, None, None]

  def full(variables):
    return {'params': merge_params(variables['params'], variables['lm']['params'])}

  def init(rng, batch):
    k_vision, k_model = jax.random.split(rng)
    b = batch['image'].shape[0]
    vision = clip_model.init({'params': k_vision, 'dropout': k_vision}, setup.images(batch),
                             jnp.zeros((b, clip_length), jnp.int32), train=False)
    feats = media({'vision': vision}, batch)
    params = model.init({'params': k_model}, table[0, jnp.zeros(b, jnp.int32), :-1],
                        feats)['params']
    trained, lm_params = split_params(params)
    return {'params': trained, 'lm': {'params': lm_params}, 'vision': vision}

  def answer_nll(variables, batch, feats, question_B, train=False, rng=None):
    """Per-token answer NLL (B, L-1), argmax hits (B, L-1) and the answer mask."""
    labels = batch['label']
    tokens = table[question_B, labels]
    weights = answer_mask[question_B, labels]
    logits = model.apply(full(variables), tokens[:, :-1], feats, train=train,
                         rngs={'dropout': rng} if rng is not None else None)
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:])
    return nll, (logits.argmax(-1) == tokens[:, 1:]), weights

  def loss(variables, batch, rng):
    k_q, k_drop = jax.random.split(rng)
    question_B = jax.random.randint(k_q, batch['label'].shape, 0, len(QUESTIONS))
    nll, hit, w = answer_nll(variables, batch, media(variables, batch), question_B, True,
                             k_drop)
    value = (nll * w).sum() / jnp.maximum(w.sum(), 1.0)
    exact = jnp.all(hit | (w == 0), axis=-1).mean()
    frozen = {k: v for k, v in variables.items() if k != 'params'}  # unchanged
    return value, ({'loss': value, 'accuracy': exact}, frozen)

  def evaluate(variables, batch):
    out, total = {}, 0.0
    feats = media(variables, batch)  # the frozen tower once for every question
    for q, kind in enumerate(kinds):
      nll, hit, w = answer_nll(variables, batch, feats, jnp.full_like(batch['label'], q))
      exact = jnp.all(hit | (w == 0), axis=-1).astype(jnp.float32)
      out[f'accuracy_{kind}'] = exact
      out[f'answer_nll_{kind}'] = (nll * w).sum(-1)
      total = total + exact
    out['accuracy'] = total / len(kinds)
    return out

  def prompt_batch(prompts, num_samples, examples=None):
    """{'prompt': (B, P) <s> + question bytes, 'image': the eval images it is about}."""
    del num_samples
    if examples is None:
      raise ConfigError('Flamingo answers questions about images: the sampler passes '
                        'eval-split examples')
    rows = [[vocab.BOS] + list(p) for p in prompts]
    if len({len(r) for r in rows}) > 1:
      raise ConfigError('prompts in one batch must have the same length')
    return {'prompt': np.asarray(rows, np.int32), 'image': np.asarray(examples['image'])}

  def sample(variables, batch, rng, *, max_new_tokens, temperature=1.0, top_k=0, top_p=1.0,
             beam_size=1, row_ids=None):
    """Continues each prompt about its image; returns {'tokens': (B, max_new_tokens)}."""
    from arch.sequence import decoding
    prompt = batch['prompt']
    b, p = prompt.shape
    if p + max_new_tokens > lm.max_length:
      raise ConfigError(f'prompt ({p} tokens) + max_new_tokens ({max_new_tokens}) exceed '
                        f'the frozen LM\'s {lm.max_length} positions')
    params = full(variables)
    feats = media(variables, batch)
    latents = model.apply(params, feats, method='resample')
    shapes = jax.eval_shape(lambda: model.init(
        jax.random.key(0), jnp.zeros((b, p + max_new_tokens), jnp.int32), feats,
        decode=True))['cache']
    cache = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

    def step(tokens, cache):
      logits, mutated = model.apply({**params, 'cache': cache}, tokens, latents, decode=True,
                                    method='decode_text', mutable=['cache'])
      return logits[:, -1], mutated['cache']

    first, cache = step(prompt, cache)
    if beam_size > 1:
      raise ConfigError('Flamingo samples greedily or by temperature (beam_size 1)')
    tokens = decoding.generate(step, cache, first, rng, max_new_tokens, eos_id=vocab.EOS,
                               pad_id=vocab.PAD, row_ids_B=row_ids, temperature=temperature,
                               top_k=top_k, top_p=top_p)
    return {'tokens': tokens}

  return Task(init=init, loss=loss, evaluate=evaluate, example_batch=setup.example_batch,
              sample=sample, prompt_batch=prompt_batch, prompt_examples=True, continues_prompt=True)
