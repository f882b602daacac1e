"""An image captioner composed from archzoo modules, as a researcher would write it in
their own code: a ViT encoder (arch.vision.vit's patch embedding and Encoder) and a
GPT-style decoder (token embedding, learned positions, causal pre-norm Blocks with
cross-attention to the image tokens, tied output), trained by archzoo's own
sequence-to-sequence objective (teacher forcing, greedy exact-match eval) through the
one loop. Nothing under train/ or arch/ changes for it: the config names this module.

  python -m train --config configs/captioner_digits.py --workdir runs/captioner

On the offline digits, each image's caption is made from its label on the host
(`preprocess`): e.g. 'a handwritten seven (7)'.
"""

import dataclasses
import functools
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from arch.images import scale_images
from arch.layers.attention import token_positions
from arch.layers.embed import LearnedPositions, PatchEmbed, norm, token_embed
from arch.layers.transformer import Block, EncoderDecoder, run_blocks
from arch import vocab
from arch.sequence import seq2seq
from arch.task import ConfigError, parse_options
from arch.vision.vit import Encoder

WORDS = ('zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine')


def caption(label: int) -> str:
  return f'a handwritten {WORDS[label]} ({label})'


class ImageEncoder(nn.Module):
  """uint8 images (B, H, W, C) -> patch tokens (B, P, D) through a ViT encoder."""
  image_size: int
  patch_size: int
  width: int
  depth: int
  num_heads: int
  mlp_dim: int

  @nn.compact
  def __call__(self, image_BHWC, *, train: bool = False):
    x = scale_images(image_BHWC, (self.image_size, self.image_size))
    x_BPD = PatchEmbed(self.width, self.patch_size, name='patch_embed')(x)
    pos = self.param('pos_embed', nn.initializers.normal(0.02), x_BPD.shape[1:])
    return Encoder(self.depth, self.num_heads, self.mlp_dim, name='encoder')(
        x_BPD + pos, train=train)


class TextDecoder(nn.Module):
  """GPT-style decoder with cross-attention: tokens (B, T) -> hidden states (B, T, D)."""
  embed: nn.Module
  depth: int
  num_heads: int
  mlp_dim: int
  max_length: int

  @nn.compact
  def __call__(self, tokens_BT, enc_BSD, enc_mask_BS, *, train=False, decode=False):
    b, t = tokens_BT.shape
    pos_BT = token_positions(self, b, t, decode)
    x = self.embed(tokens_BT) + LearnedPositions(self.max_length, self.embed.features,
                                                 name='positions')(pos_BT)
    block = functools.partial(Block, self.num_heads, self.mlp_dim, pre_norm=True)
    x = run_blocks(block, self.depth, x, is_decoder=True, enc_BSD=enc_BSD,
                   enc_mask_BS=enc_mask_BS, positions_BT=pos_BT, train=train, decode=decode)
    return norm(name='final_norm')(x)


class Model(EncoderDecoder):
  """Image (B, H, W, C) uint8 and shifted caption (B, T) -> caption logits (B, T, V)."""
  vocab_size: int = vocab.BYTE_VOCAB_SIZE
  image_size: int = 32
  patch_size: int = 4
  width: int = 64
  encoder_depth: int = 2
  decoder_depth: int = 2
  num_heads: int = 4
  mlp_dim: int = 128
  max_length: int = 32

  def setup(self):
    self.shared = token_embed(self.vocab_size, self.width)
    self.encoder = ImageEncoder(self.image_size, self.patch_size, self.width,
                                self.encoder_depth, self.num_heads, self.mlp_dim)
    self.decoder = TextDecoder(self.shared, self.decoder_depth, self.num_heads, self.mlp_dim,
                               self.max_length)

  def encode(self, image_BHWC, *, train: bool = False):
    hidden = self.encoder(image_BHWC, train=train)
    return {'hidden': hidden, 'mask': jnp.ones(hidden.shape[:2], bool)}

  def logits(self, x_BTD):
    return self.shared.attend(x_BTD)


@dataclasses.dataclass(frozen=True)
class Options(seq2seq.Options):
  """seq2seq's task_kwargs and the images' shape."""
  image_shape: Optional[tuple] = None  # (H, W, C) of the dataset's images; required


def make(config):
  """archzoo's seq2seq objective with images as the source and captions as the target."""
  opts = parse_options(Options, config)
  if opts.image_shape is None:
    raise ConfigError('examples.captioner needs task_kwargs.image_shape (H, W, C)')
  task = seq2seq.make(config, opts)
  length = int(config.data.max_lengths['target'])

  def preprocess(example):
    ids = [b + vocab.NUM_SPECIAL for b in caption(int(example['label'])).encode()]
    target = np.full(length, vocab.PAD, np.int32)
    target[:len(ids) + 1] = ids + [vocab.EOS]
    return {'source': example['image'], 'target': target}

  def example_batch(batch_size):
    return {'source': jax.ShapeDtypeStruct((batch_size, *opts.image_shape), jnp.uint8),
            'target': jax.ShapeDtypeStruct((batch_size, length), jnp.int32)}

  return task._replace(preprocess=preprocess, example_batch=example_batch, prompt_batch=None)
