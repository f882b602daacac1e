"""Fine-tuning heads on a text encoder (BERT, Devlin et al. 2019, section 4): a sequence
classifier on the pooled first token and a per-token tagger.

The encoder is any network named by `encoder_name` (default 'sequence.bert') built from the
`encoder` kwargs, called as `encoder(tokens_BT, train=) -> {'hidden' (B, T, D), 'pooled'
(B, D) where it has a pooler}` (BERT is built without its pre-training heads), or the
encoder half of an encoder-decoder (BART, T5: its `encode`; pool 'mean' or 'first'). Its
params sit under 'encoder', the new layer under 'head', so a pre-training run's encoder
params are copied in with `config.init_from` pairs (`bert_init_from`,
`encoder_decoder_init_from`) while the head keeps its initialisation: normal(0.02)
weights, zero bias, as in BERT's fine-tuning code. `head_lr_scale` gives the new layer
alone a larger Adam step (`Head`: the same function and initial values, params rescaled).

Dimension key: B batch, T length, D width, K classes or tags.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

import arch
from arch import vocab

Dtype = Any
INIT_STDDEV = 0.02


def bert_init_from(num_layers: int, type_vocab_size: int = 2, pooler: bool = True) -> dict:
  """`config.init_from` source and target paths that copy a `sequence.bert` run's encoder
  (embeddings, blocks and pooler; not its masked-LM and next-sentence heads) into the
  'encoder' of these models."""
  names = (['word_embeddings', 'position_embeddings']
           + (['token_type_embeddings'] if type_vocab_size else []) + ['embed_norm']
           + [f'layer{i}' for i in range(num_layers)] + (['pooler'] if pooler else []))
  return dict(source=','.join(names), target=','.join(f'encoder/{n}' for n in names))


def encoder_decoder_init_from() -> dict:
  """`config.init_from` paths that copy an encoder-decoder run's (BART, T5) shared embedding
  and encoder stack, not its decoder, into the 'encoder' of these models."""
  return dict(source='shared,encoder', target='encoder/shared,encoder/encoder')


def _encode(name: str, kwargs: dict, dtype, param_dtype, tokens_BT, train):
  """The encoder's {'hidden' (B, T, D), 'pooled' (B, D) where it has a pooler}; of an
  encoder-decoder (`encode`), the encoder stack alone (its decoder makes no params)."""
  encoder = _encoder(name, kwargs, dtype, param_dtype)
  if hasattr(encoder, 'encode'):
    return {'hidden': encoder.encode(tokens_BT, train=train)['hidden']}
  return encoder(tokens_BT, train=train)


def _encoder(name: str, kwargs: dict, dtype, param_dtype):
  kwargs = dict(kwargs)
  fields = arch.model_fields(name)
  if 'pretraining_heads' in fields:
    kwargs['pretraining_heads'] = False
  for key, value in (('dtype', dtype), ('param_dtype', param_dtype)):
    if key in fields:
      kwargs.setdefault(key, value)
  unknown = sorted(set(kwargs) - fields)
  if unknown:
    raise ValueError(f'encoder {name!r} has no attribute(s) {", ".join(unknown)}; '
                     f'valid: {", ".join(sorted(fields))}')
  return arch.model_class(name)(name='encoder', **kwargs)


class Head(nn.Module):
  """The new output layer: x (..., D) -> (..., K), normal(0.02) weights and zero bias.

  `lr_scale` s keeps the params as s^-1 times the layer's weights and multiplies the output
  by s: the same function and the same initial values, but an Adam-like optimizer (whose
  steps do not depend on the gradient's scale) moves the layer's weights s times as far per
  step as the encoder's, a higher learning rate for the new layer alone (a plain-SGD step
  would move them s^2 times as far)."""
  features: int
  lr_scale: float = 1.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    s = float(self.lr_scale)
    if s <= 0:
      raise ValueError(f'head_lr_scale={s}; it must be positive')
    kernel = self.param('kernel', nn.with_logical_partitioning(
        nn.initializers.normal(INIT_STDDEV / s), ('embed', 'classes')),
        (x.shape[-1], self.features), self.param_dtype)
    bias = self.param('bias', nn.with_logical_partitioning(nn.initializers.zeros, ('classes',)),
                      (self.features,), self.param_dtype)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    return (jnp.dot(x, kernel) + bias) * s


def _head(features, dtype, param_dtype, name='head', lr_scale=1.0):
  if lr_scale == 1:  # the plain layer: params 'head/kernel', 'head/bias' as before
    return nn.Dense(features, dtype=dtype, param_dtype=param_dtype, name=name,
                    kernel_init=nn.with_logical_partitioning(
                        nn.initializers.normal(INIT_STDDEV), ('embed', 'classes')),
                    bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ('classes',)))
  return Head(features, lr_scale, dtype, param_dtype, name=name)


class Classifier(nn.Module):
  """tokens (B, T) -> class logits (B, K) (float32) from the encoder's pooled first token."""
  num_classes: int = 2
  encoder_name: str = 'sequence.bert'
  encoder: dict = dataclasses.field(default_factory=dict)  # the encoder's kwargs
  pool: str = 'pooler'  # 'pooler': its 'pooled' (BERT: tanh dense on [CLS]) | 'first' | 'mean'
  dropout_rate: float = 0.1  # on the pooled vector
  head_lr_scale: float = 1.0  # the new layer's Adam step size over the encoder's (Head)
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens_BT, *, train: bool = False):
    out = _encode(self.encoder_name, self.encoder, self.dtype, self.param_dtype, tokens_BT,
                  train)
    if self.pool == 'pooler':
      if 'pooled' not in out:
        raise ValueError(f'{self.encoder_name} has no pooler; use pool="first" or "mean"')
      x_BD = out['pooled']
    elif self.pool == 'first':
      x_BD = out['hidden'][:, 0]
    elif self.pool == 'mean':
      real_BT = (tokens_BT != vocab.PAD).astype(out['hidden'].dtype)
      x_BD = ((out['hidden'] * real_BT[..., None]).sum(1)
              / jnp.maximum(real_BT.sum(1, keepdims=True), 1.0))
    else:
      raise ValueError(f"pool={self.pool!r}; valid: 'pooler', 'first', 'mean'")
    x_BD = nn.Dropout(self.dropout_rate)(x_BD, deterministic=not train)
    return _head(self.num_classes, self.dtype, self.param_dtype,
                 lr_scale=self.head_lr_scale)(x_BD).astype(jnp.float32)


class Tagger(nn.Module):
  """tokens (B, T) -> per-token tag logits (B, T, K) (float32) from the encoder's output."""
  num_tags: int = 2
  encoder_name: str = 'sequence.bert'
  encoder: dict = dataclasses.field(default_factory=dict)  # the encoder's kwargs
  dropout_rate: float = 0.1  # on the encoder's output
  head_lr_scale: float = 1.0  # the new layer's Adam step size over the encoder's (Head)
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens_BT, *, train: bool = False):
    h_BTD = _encode(self.encoder_name, self.encoder, self.dtype, self.param_dtype, tokens_BT,
                    train)['hidden']
    h_BTD = nn.Dropout(self.dropout_rate)(h_BTD, deterministic=not train)
    return _head(self.num_tags, self.dtype, self.param_dtype,
                 lr_scale=self.head_lr_scale)(h_BTD).astype(jnp.float32)


Model = Classifier  # 'sequence.encoder_heads' alone names the classifier
