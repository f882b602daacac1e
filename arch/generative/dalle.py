"""A DALL·E-style text-to-image model (Ramesh et al. 2021, "Zero-shot text-to-image
generation"): a decoder-only Transformer over a caption's tokens followed by the image
tokens of a frozen VQ-VAE (arch/generative/vqvae.py), trained by next-token
cross-entropy and sampled one image token at a time from a caption.

Stage one (frozen): a VQ-VAE run of this codebase, named in the config as
`config.frozen.vqvae = dict(spec='configs/vqvae_shapes.py:data=caption_shapes,codes=16',
workdir='')` (the loop trains it first in WORKDIR/frozen_vqvae when no workdir is given, and
restores its variables into the non-parameter collection 'vqvae'). It turns a 32x32 image
into an h x w grid of codes of a K = 128 codebook (16 x 16 there; the grid follows the run's
input size and stages), read in raster order (the paper: a dVAE, 256x256 -> 32x32 codes of
8,192; here a VQ-VAE with the argmin quantiser).

Stage two (this file). The sequence, length L = T + h w (T = 8 caption word ids):
  inputs   t_0 .. t_{T-1}   BOS   c_0 .. c_{hw-2}
  targets  t_1 .. t_{T-1}   (--)  c_0 .. c_{hw-1}
the text first (its own embedding table), then BOS and the image codes (a second table of
K + 1 rows; BOS = K). Input slot T + i (BOS or c_{i-1}) carries the position of the cell
it predicts, c_i. Positions as in the paper: a learned table over the T text positions,
and for image tokens the sum of a learned row embedding and a learned column embedding.
Text padding as in the paper: a caption shorter than T is padded with pad tokens that are
distinct per position (pad at position t is embedded by its own row, V + t, of the text
table), so the model knows how far the padding reaches; pad positions are attended to
like any token (no key mask) and their text targets (id 0, "the caption has ended") are
kept in the text loss. Attention is dense and causal over all L positions (the paper's
row/column/convolutional sparse masks only save compute at 1,280 tokens; at 264, 8 words
and 16 x 16 codes, dense attention costs about a third of a layer's matmuls). Blocks are GPT-2's (arch/layers/transformer.py Block: pre-LayerNorm,
GELU MLP 4x wide); one output projection to V + K logits, read as text logits (first V)
at text positions and image logits (last K) at image positions: the paper's one softmax
with the other modality's logits masked out.

Loss (the paper's weighting): with L_text the mean cross-entropy of the T - 1 text targets
and L_image that of the h w image targets,
  loss = (1/8) L_text + (7/8) L_image.

Sampling: the caption and BOS fill the KV cache in one call, then h w codes are drawn one
at a time (arch/sequence/decoding.py: temperature, top-k, top-p; a row's randomness is
fold_in(rng, row id)), decoded by the frozen VQ-VAE to uint8 images. Prompts are
captions in the data's word vocabulary (`task_kwargs.words`, e.g. caption_shapes.VOCAB);
a word outside it is one ConfigError line. No CLIP re-ranking, no classifier-free guidance.

Eval on held-out captions (caption_shapes' test split: compositions train never shows),
per example: `image_nll` (nats per image token), `text_nll` (per text target), `loss`
(the weighted sum). With a frozen attribute reader (`config.frozen.reader`, a run of
arch/vision/attributes.py) also: images sampled from the example's own caption
(temperature `eval_temperature`, per-example keys from the image's pixels, so an eval is a
fixed function of the weights) read back (resized to the reader's 32x32) and scored as
`attributes.prompt_following` scores them (`prompt_all`: all five attributes right,
`prompt_colour`, `prompt_kind`, `prompt_relation`), per example; the same for the frozen
VQ-VAE's reconstruction of the real test image (`recon_*`: the ceiling the tokens allow);
and the sampled images scored against another example's caption (the batch's attributes
rolled by one: `shuffled_*`, the floor a model that ignored its caption would get).

Dimension key: B batch, T text length, N image tokens (h w), L = T + N sequence,
D width, V text vocabulary, K codebook size.
"""

import dataclasses
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import arch
from arch.generative import image_keys, vqvae
from arch.images import scale_images
from arch.layers.attention import token_positions
from arch.layers.embed import LearnedPositions, norm, token_embed
from arch.layers.transformer import Block
from arch.sequence import decoding
from arch.task import ConfigError, Task, parse_options
from arch.vocab import word_ids

Dtype = Any
VQVAE = 'vqvae'    # the collection the loop restores the frozen VQ-VAE run into
READER = 'reader'  # the collection of the frozen attribute reader (optional)
TEXT_WEIGHT = 1.0 / 8.0  # the paper's: text 1/8, image 7/8


class Transformer(nn.Module):
  """[text ; BOS ; codes] (B, L') ids -> (text logits (B, L', V), image logits (B, L', K))."""
  text_vocab: int = 16     # V, id 0 = pad
  text_length: int = 8     # T
  num_codes: int = 128     # K (the task sets it from the frozen VQ-VAE)
  grid: tuple = (8, 8)     # (h, w) of the code grid (the task sets it)
  num_layers: int = 4
  num_heads: int = 4
  embed_dim: int = 128
  mlp_dim: Optional[int] = None  # default 4 * embed_dim
  dropout_rate: float = 0.0
  norm_eps: float = 1e-5
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @property
  def length(self) -> int:
    return self.text_length + self.grid[0] * self.grid[1]

  @nn.compact
  def __call__(self, tokens_BL, *, train: bool = False, decode: bool = False):
    b, l = tokens_BL.shape
    t, (h, w) = self.text_length, self.grid
    pos_BL = token_positions(self, b, l, decode)
    is_text_BL = pos_BL < t
    # text: pad (id 0) at position p is its own row V + p of the text table
    text_ids = jnp.where(tokens_BL == 0, self.text_vocab + jnp.minimum(pos_BL, t - 1),
                         tokens_BL)
    text_emb = token_embed(self.text_vocab + t, self.embed_dim, dtype=self.dtype,
                           param_dtype=self.param_dtype, name='text_embed')
    image_emb = token_embed(self.num_codes + 1, self.embed_dim, dtype=self.dtype,
                            param_dtype=self.param_dtype, name='image_embed')
    # each id is looked up in both tables (clipped into range); the position picks one
    x_BLD = jnp.where(is_text_BL[..., None],
                      text_emb(jnp.clip(text_ids, 0, self.text_vocab + t - 1)),
                      image_emb(jnp.clip(tokens_BL, 0, self.num_codes)))
    kw = dict(param_dtype=self.param_dtype)
    cell_BL = jnp.clip(pos_BL - t, 0, h * w - 1)  # decoding's one extra step clips too
    pos_emb = jnp.where(
        is_text_BL[..., None],
        LearnedPositions(t, self.embed_dim, name='text_pos', **kw)(jnp.minimum(pos_BL, t - 1)),
        LearnedPositions(h, self.embed_dim, name='row_pos', **kw)(cell_BL // w)
        + LearnedPositions(w, self.embed_dim, name='col_pos', **kw)(cell_BL % w))
    x_BLD = nn.Dropout(self.dropout_rate)((x_BLD + pos_emb).astype(self.dtype),
                                          deterministic=not train)
    for i in range(self.num_layers):
      x_BLD = Block(num_heads=self.num_heads, mlp_dim=self.mlp_dim or 4 * self.embed_dim,
                    pre_norm=True, norm_eps=self.norm_eps, activation='gelu_tanh',
                    dropout_rate=self.dropout_rate,
                    attention_dropout_rate=self.dropout_rate, init_stddev=0.02,
                    out_init_stddev=0.02 / np.sqrt(2 * self.num_layers), dtype=self.dtype,
                    param_dtype=self.param_dtype, name=f'h{i}')(
                        x_BLD, causal=True, positions_BT=pos_BL, deterministic=not train,
                        decode=decode)
    x_BLD = norm('layer', self.norm_eps, dtype=self.dtype, param_dtype=self.param_dtype,
                 name='ln_f')(x_BLD)
    logits = nn.Dense(self.text_vocab + self.num_codes, use_bias=False, dtype=self.dtype,
                      param_dtype=self.param_dtype, name='head',
                      kernel_init=nn.with_logical_partitioning(
                          nn.initializers.normal(0.02), ('embed', 'vocab')))(x_BLD)
    logits = logits.astype(jnp.float32)
    return logits[..., :self.text_vocab], logits[..., self.text_vocab:]


Model = Transformer  # 'generative.dalle'


# ---------------------------------------------------------------------------- sequences


def sequence(text_BT, codes_BN, num_codes: int):
  """The Transformer's input [text ; BOS ; codes[:-1]] (B, T + N)."""
  bos = jnp.full((text_BT.shape[0], 1), num_codes, jnp.int32)
  return jnp.concatenate([text_BT.astype(jnp.int32), bos, codes_BN[:, :-1]], axis=1)


def token_losses(text_logits_BLV, image_logits_BLK, text_BT, codes_BN):
  """(per-example mean text NLL over the T - 1 text targets, mean image NLL over N)."""
  t = text_BT.shape[1]
  ce = optax.softmax_cross_entropy_with_integer_labels
  text = ce(text_logits_BLV[:, :t - 1], text_BT[:, 1:]).mean(-1)
  image = ce(image_logits_BLK[:, t:], codes_BN).mean(-1)
  return text, image


def weighted_loss(text_nll, image_nll, text_weight: float = TEXT_WEIGHT):
  return text_weight * text_nll + (1.0 - text_weight) * image_nll


def generate(model, params, text_BT, rng, row_ids_B=None, *, temperature=1.0, top_k=0,
             top_p=1.0):
  """Codes (B, N) drawn after the caption and BOS: the prefix fills the KV cache in one
  call, then one code a step (arch/sequence/decoding.py; row r's randomness is
  fold_in(rng, row_ids_B[r]))."""
  b = text_BT.shape[0]
  t, k, n = model.text_length, model.num_codes, model.grid[0] * model.grid[1]
  # one slot more than the sequence: `decoding.generate` feeds its last draw back once
  shapes = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((b, t + n + 1), jnp.int32), decode=True))['cache']
  cache = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

  def step(tokens, cache):
    (_, logits), mutated = model.apply({**params, 'cache': cache}, tokens, decode=True,
                                       mutable=['cache'])
    return logits[:, -1], mutated['cache']

  prefix = jnp.concatenate([text_BT.astype(jnp.int32), jnp.full((b, 1), k, jnp.int32)], 1)
  first, cache = step(prefix, cache)
  return decoding.generate(step, cache, first, rng, n, eos_id=-1, pad_id=0,
                           row_ids_B=row_ids_B, temperature=temperature, top_k=top_k,
                           top_p=top_p)


# ---------------------------------------------------------------------------- objective


@dataclasses.dataclass(frozen=True)
class Options:
  """The DALL·E objective's task_kwargs."""
  words: tuple = ()  # the caption vocabulary, id 0 the pad (caption_shapes.VOCAB)
  text_length: int = 8
  text_weight: float = TEXT_WEIGHT
  eval_temperature: float = 1.0  # eval's samples for prompt-following (0: greedy)
  eval_top_k: int = 0


def first_stage(vcfg):
  """(network, VQ-VAE Task, image shape (H, W, C), code grid (h, w)) of the frozen run."""
  if vcfg.get('task') != 'generative.vqvae':
    raise ConfigError(f"config.frozen.vqvae must be a generative.vqvae run (e.g. "
                      f"'configs/vqvae_shapes.py:data=caption_shapes'), got task "
                      f"{vcfg.get('task')!r}")
  vopts = parse_options(vqvae.Options, vcfg)
  net = arch.model_from_config(vcfg, channels=int(vopts.channels))
  size = tuple(vopts.input_size)
  grid = tuple(n // net.downsampling for n in size)
  return net, vqvae.make(vcfg), (*size, int(vopts.channels)), grid


def _reader(rcfg):
  """(network, Task) of the frozen attribute reader run, or (None, None)."""
  if rcfg is None:
    return None, None
  return arch.model_from_config(rcfg), arch.load(rcfg.task, 'make').make(rcfg)


def make(config) -> Task:
  """`config.task = config.model_name = 'generative.dalle'`. Batches hold caption_shapes'
  `image` (B, H, W, 3) uint8, `tokens` (B, T) and, for prompt-following, `colour`,
  `kind`, `relation`. Train metrics: loss, text_nll, image_nll, image_accuracy."""
  opts = parse_options(Options, config)
  words = tuple(opts.words)
  t = int(opts.text_length)
  text_weight = float(opts.text_weight)
  if len(words) < 2 or t < 2 or not 0 <= text_weight < 1:
    raise ConfigError(f'task_kwargs need words (the vocabulary, id 0 the pad), '
                      f'text_length >= 2 and text_weight in [0, 1); got {len(words)} words, '
                      f'{t}, {text_weight}')
  frozen = config.get('frozen') or {}
  if not (frozen.get(VQVAE) or {}).get('config'):
    raise ConfigError("generative.dalle needs its image tokenizer: config.frozen.vqvae = "
                      "dict(spec='configs/vqvae_shapes.py:data=caption_shapes', workdir='')")
  vq_net, vq_task, image_shape, grid = first_stage(frozen[VQVAE].config)
  k = vq_net.num_codes
  n = grid[0] * grid[1]
  reader_net, reader_task = _reader((frozen.get(READER) or {}).get('config'))
  model = arch.model_from_config(config, text_vocab=len(words), text_length=t, num_codes=k,
                                 grid=grid)
  if not isinstance(model, Transformer):
    raise ConfigError(f'the dalle objective needs generative.dalle, not {config.model_name!r}')
  eval_temperature, eval_top_k = float(opts.eval_temperature), int(opts.eval_top_k)

  def frozen_vq(variables):
    return jax.lax.stop_gradient(variables[VQVAE])

  def codes_of(variables, image):
    if tuple(image.shape[1:]) != image_shape:
      raise ValueError(f'images of shape {tuple(image.shape[1:])}; the frozen VQ-VAE is '
                       f'built for {image_shape}')
    return vqvae.encode_indices(vq_net, frozen_vq(variables), image).reshape(image.shape[0], n)

  def params_of(variables):
    return {c: v for c, v in variables.items() if c not in (VQVAE, READER, 'cache')}

  def preprocess(example):
    out = {key: np.asarray(example[key]) for key in ('tokens', 'colour', 'kind', 'relation')
           if key in example}
    out['image'] = vqvae.pool_image(example['image'], image_shape[:2])
    return out

  def init(rng, batch):
    b = batch['tokens'].shape[0]
    variables = dict(model.init({'params': rng, 'dropout': rng},
                                jnp.zeros((b, t + n), jnp.int32)))
    variables[VQVAE] = vq_task.init(rng, {'image': jnp.zeros((b, *image_shape), jnp.uint8)})
    if reader_task is not None:
      spec = reader_task.example_batch(b)
      variables[READER] = reader_task.init(
          rng, {key: jnp.zeros(s.shape, s.dtype) for key, s in spec.items()})
    return variables

  def forward(variables, batch, train=False, rng=None):
    text = batch['tokens'].astype(jnp.int32)
    codes = codes_of(variables, batch['image'])
    text_logits, image_logits = model.apply(
        params_of(variables), sequence(text, codes, k), train=train,
        rngs={'dropout': rng} if rng is not None else None)
    return text, codes, text_logits, image_logits

  def loss(variables, batch, rng):
    text, codes, text_logits, image_logits = forward(variables, batch, True, rng)
    text_nll, image_nll = token_losses(text_logits, image_logits, text, codes)
    value = weighted_loss(text_nll.mean(), image_nll.mean(), text_weight)
    acc = (image_logits[:, t:].argmax(-1) == codes).mean()
    frozen_vars = {c: v for c, v in variables.items() if c in (VQVAE, READER)}  # unchanged
    return value, ({'loss': value, 'text_nll': text_nll.mean(), 'image_nll': image_nll.mean(),
                    'image_accuracy': acc}, frozen_vars)

  def generate_codes(variables, text_BT, rng, row_ids_B, temperature=1.0, top_k=0,
                     top_p=1.0):
    return generate(model, params_of(variables), text_BT, rng, row_ids_B,
                    temperature=temperature, top_k=top_k, top_p=top_p)

  def decode_codes(variables, codes_BN):
    return vqvae.decode_indices(vq_net, frozen_vq(variables),
                                codes_BN.reshape(-1, *grid))

  def following(variables, images_BHWC, colour, kind, relation):
    """Per-example prompt-following of uint8 images, read by the frozen reader."""
    from arch.vision import attributes  # the reader's family, read only when configured
    x = scale_images(images_BHWC, (attributes.SIZE, attributes.SIZE))
    out = reader_net.apply(jax.lax.stop_gradient(variables[READER]), x)
    hits = attributes.attribute_hits(out, colour, kind, relation)
    f = lambda h: h.astype(jnp.float32)
    return {'prompt_all': f(hits['colour'].all(-1) & hits['kind'].all(-1) & hits['relation']),
            'prompt_colour': f(hits['colour']).mean(-1), 'prompt_kind': f(hits['kind']).mean(-1),
            'prompt_relation': f(hits['relation'])}

  def evaluate(variables, batch):
    text, codes, text_logits, image_logits = forward(variables, batch)
    text_nll, image_nll = token_losses(text_logits, image_logits, text, codes)
    out = {'loss': weighted_loss(text_nll, image_nll, text_weight), 'text_nll': text_nll,
           'image_nll': image_nll}
    if reader_net is None:
      return out
    image = batch['image']
    keys = image_keys(image, seed=3)
    ids = jax.vmap(lambda key: jax.random.randint(key, (), 0, 2 ** 30))(keys)
    sampled = decode_codes(variables, generate_codes(
        variables, text, jax.random.key(0), ids, eval_temperature, eval_top_k))
    recon = decode_codes(variables, codes)
    truth = (batch['colour'], batch['kind'], batch['relation'])
    rolled = tuple(jnp.roll(a, 1, axis=0) for a in truth)
    for prefix, images, attrs in (('', sampled, truth), ('recon_', recon, truth),
                                  ('shuffled_', sampled, rolled)):
      out.update({prefix + name: v for name, v in
                  following(variables, images, *attrs).items()})
    return out

  def example_batch(batch_size):
    return {'image': jax.ShapeDtypeStruct((batch_size, *image_shape), jnp.uint8),
            'tokens': jax.ShapeDtypeStruct((batch_size, t), jnp.int32)}

  def prompt_batch(prompts, num_samples, examples=None):
    """{'tokens': (B, T)}: one row a prompt (text, or word ids), as the sampler gives them
    (each prompt repeated num_samples times); without prompts, the captions of the eval
    split's first num_samples examples (`Task.prompt_examples`)."""
    if prompts is not None and any(len(p) for p in prompts):
      if len(prompts) != num_samples:
        raise ConfigError(f'{len(prompts)} prompts for {num_samples} samples')
      return {'tokens': np.stack([word_ids(p, words, t) for p in prompts])}
    if examples is None:
      raise ConfigError('the DALL·E model samples from captions: give --prompt TEXT')
    return {'tokens': np.asarray(examples['tokens'][:num_samples], np.int32)}

  def sample(variables, batch, rng, *, row_ids, temperature=1.0, top_k=0, top_p=1.0):
    """{'images': (B, H, W, C) uint8} drawn from batch['tokens'], one per row."""
    decoding.check_options(temperature=temperature, top_k=top_k, top_p=top_p)
    return {'images': decode_codes(variables, generate_codes(
        variables, batch['tokens'], rng, row_ids, temperature, top_k, top_p))}

  return Task(init=init, loss=loss, evaluate=evaluate, preprocess=preprocess,
              example_batch=example_batch, prompt_batch=prompt_batch, sample=sample,
              prompt_examples=True)


# Tiny sizes for tests.
TINY = dict(num_layers=1, num_heads=2, embed_dim=16)
