"""Masked autoencoder (He et al. 2022, "Masked autoencoders are scalable vision learners").

The image is cut into patches; a random `mask_ratio` of them (75%) is dropped per image
(a per-example random permutation, as the paper's shuffle-and-keep). The encoder, a ViT
(arch/vision/vit.py's Encoder), sees only the visible patches plus a class token; a light
decoder embeds its output to a narrower width, puts a shared learned mask token at every
dropped position, restores the patch order, adds its own positions and predicts each
patch's pixels. The loss is the mean squared error over the masked patches only, against
the raw pixels or, with `norm_pix_loss`, each patch normalised by its own mean and
variance (the paper's better-performing target).

Positions are the fixed 2-D sin-cos tables of the paper (arch/layers/embed.py sincos_2d;
zeros for the class token), constants rather than parameters. Hugging Face's
ViTMAEForPreTraining keeps them as frozen nn.Parameters, so its `parameters()` total
(111,907,840 for ViT-B/16 with the 8 x 512 decoder) includes 252,160 fixed values; its
trainable total 111,655,680 is this model's `train.summary` count for `VARIANTS['B/16']`.

The representation probes read (`represent`) is the encoder on all patches, unmasked:
the class token (`pool='cls'`) or the mean of the patch tokens (`pool='mean'`).

Dimension key: B batch, H W image size, C channels, P patches, V visible patches,
D encoder width, E decoder width, F pixels per patch (p * p * C).
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from arch.layers.embed import PatchEmbed, sincos_2d
from arch.multimodal.contrastive import ImageOptions, ImageSetup
from arch.task import Task, parse_options
from arch.vision.vit import Encoder

Dtype = Any


def patchify(x_BHWC, p: int):
  """(B, H, W, C) -> (B, P, p*p*C), patches in row-major order, pixels (row, col, chan)."""
  b, h, w, c = x_BHWC.shape
  x = x_BHWC.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(x_BPF, p: int, h: int, w: int):
  """The inverse of patchify: (B, P, p*p*C) -> (B, H, W, C)."""
  b, _, f = x_BPF.shape
  c = f // (p * p)
  x = x_BPF.reshape(b, h // p, w // p, p, p, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h, w, c)


def random_masking(rng, b: int, num_patches: int, mask_ratio: float):
  """Per-example random split of the patches: (keep_ids (B, V), mask (B, P) with 1 where
  dropped, restore_ids (B, P) that undo the shuffle)."""
  keep = int(round(num_patches * (1 - mask_ratio)))
  if not 0 < keep <= num_patches:
    raise ValueError(f'mask_ratio {mask_ratio} keeps {keep} of {num_patches} patches')
  shuffle = jnp.argsort(jax.random.uniform(rng, (b, num_patches)), axis=1)
  restore = jnp.argsort(shuffle, axis=1)
  mask = jnp.take_along_axis((jnp.arange(num_patches) >= keep).astype(jnp.float32)[None]
                             .repeat(b, 0), restore, axis=1)
  return shuffle[:, :keep], mask, restore


class Model(nn.Module):
  """MAE: images (B, H, W, C) in [0, 1] and an rng -> (pixel predictions (B, P, F), mask
  (B, P)); `represent` gives the unmasked encoder's representation (B, D)."""
  image_size: int = 224
  channels: int = 3
  patch_size: int = 16
  embed_dim: int = 768
  depth: int = 12
  num_heads: int = 12
  mlp_dim: int = 3072
  decoder_dim: int = 512
  decoder_depth: int = 8
  decoder_heads: int = 16
  decoder_mlp_dim: int = 2048
  mask_ratio: float = 0.75
  pool: str = 'cls'  # the probed representation: 'cls' | 'mean'
  norm_eps: float = 1e-6
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def setup(self):
    kw = dict(norm_eps=self.norm_eps, dtype=self.dtype, param_dtype=self.param_dtype)
    self.patch_embed = PatchEmbed(self.embed_dim, self.patch_size, dtype=self.dtype,
                                  param_dtype=self.param_dtype)
    self.cls_token = self.param('cls_token', nn.with_logical_partitioning(
        nn.initializers.normal(0.02), (None, None, 'embed')), (1, 1, self.embed_dim),
        self.param_dtype)
    self.encoder = Encoder(self.depth, self.num_heads, self.mlp_dim, **kw)
    self.decoder_embed = nn.Dense(
        self.decoder_dim, dtype=self.dtype, param_dtype=self.param_dtype,
        kernel_init=nn.with_logical_partitioning(nn.initializers.xavier_uniform(),
                                                 ('embed', 'mlp')),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ('mlp',)))
    self.mask_token = self.param('mask_token', nn.with_logical_partitioning(
        nn.initializers.normal(0.02), (None, None, 'mlp')), (1, 1, self.decoder_dim),
        self.param_dtype)
    self.decoder = Encoder(self.decoder_depth, self.decoder_heads, self.decoder_mlp_dim, **kw)
    self.decoder_pred = nn.Dense(
        self.patch_size ** 2 * self.channels, dtype=self.dtype, param_dtype=self.param_dtype,
        kernel_init=nn.with_logical_partitioning(nn.initializers.xavier_uniform(),
                                                 ('mlp', None)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (None,)))

  @property
  def grid(self) -> int:
    return self.image_size // self.patch_size

  def _positions(self, dim):
    return jnp.asarray(sincos_2d(self.grid, self.grid, dim), self.dtype)

  def _embed(self, x_BHWC):
    x_BPD = self.patch_embed(x_BHWC)
    if x_BPD.shape[1] != self.grid ** 2:
      raise ValueError(f'{x_BHWC.shape[1]}x{x_BHWC.shape[2]} images make {x_BPD.shape[1]} '
                       f'patches; the model is built for {self.grid ** 2} '
                       f'(image_size={self.image_size})')
    return x_BPD.astype(self.dtype) + self._positions(self.embed_dim)

  def _with_cls(self, x_BVD):
    cls = jnp.broadcast_to(jnp.asarray(self.cls_token, self.dtype),
                           (x_BVD.shape[0], 1, self.embed_dim))
    return jnp.concatenate([cls, x_BVD], axis=1)  # the class token's position is zero

  def represent(self, x_BHWC, *, train: bool = False):
    h_BPD = self.encoder(self._with_cls(self._embed(x_BHWC)), train=train)
    return (h_BPD[:, 0] if self.pool == 'cls' else h_BPD[:, 1:].mean(1)).astype(jnp.float32)

  def __call__(self, x_BHWC, rng, *, train: bool = False):
    x_BPD = self._embed(x_BHWC)
    b, p, d = x_BPD.shape
    keep_BV, mask_BP, restore_BP = random_masking(rng, b, p, self.mask_ratio)
    visible_BVD = jnp.take_along_axis(x_BPD, keep_BV[..., None], axis=1)
    h_BVD = self.encoder(self._with_cls(visible_BVD), train=train)
    y = self.decoder_embed(h_BVD)
    v = keep_BV.shape[1]
    masks = jnp.broadcast_to(jnp.asarray(self.mask_token, self.dtype),
                             (b, p - v, self.decoder_dim))
    shuffled_BPE = jnp.concatenate([y[:, 1:], masks], axis=1)
    patches_BPE = jnp.take_along_axis(shuffled_BPE, restore_BP[..., None], axis=1)
    patches_BPE = patches_BPE + self._positions(self.decoder_dim)
    y = jnp.concatenate([y[:, :1], patches_BPE], axis=1)
    y = self.decoder(y, train=train)
    return self.decoder_pred(y[:, 1:]).astype(jnp.float32), mask_BP


def masked_mse(pred_BPF, target_BPF, mask_BP, norm_pix: bool):
  """Mean over masked patches of the per-patch mean squared error."""
  if norm_pix:
    mean = target_BPF.mean(-1, keepdims=True)
    var = target_BPF.var(-1, keepdims=True)
    target_BPF = (target_BPF - mean) / jnp.sqrt(var + 1e-6)
  per_patch = ((pred_BPF - target_BPF) ** 2).mean(-1)
  return (per_patch * mask_BP).sum() / jnp.maximum(mask_BP.sum(), 1.0)


@dataclasses.dataclass(frozen=True)
class Options(ImageOptions):
  """MAE's task_kwargs."""
  norm_pix_loss: bool = True  # targets: each patch normalised by its mean and variance


def make(config) -> Task:
  """`config.task = 'multimodal.mae'`, `config.model_name = 'multimodal.mae'`; task_kwargs:
  `Options`. Train metrics: `loss` (masked-patch MSE)."""
  opts = parse_options(Options, config)
  s = ImageSetup(config, opts)
  norm_pix = bool(opts.norm_pix_loss)
  model = s.backbone  # this module's Model (num_classes is not among its fields)

  def init(rng, batch):
    return model.init({'params': rng, 'dropout': rng}, s.images(batch), rng)

  def loss(variables, batch, rng):
    k_mask, k_view, k_drop = jax.random.split(rng, 3)
    x = s.images(batch)
    if s.augment:
      x = s.views(k_view, x)
    pred, mask = model.apply(variables, x, k_mask, train=True, rngs={'dropout': k_drop})
    value = masked_mse(pred, patchify(x, model.patch_size), mask, norm_pix)
    return value, ({'loss': value}, {})

  return Task(init=init, loss=loss, example_batch=s.example_batch, preprocess=s.preprocess(),
              features=s.features_fn(model))


def _mae(width, depth, heads, patch=16):
  return dict(embed_dim=width, depth=depth, num_heads=heads, mlp_dim=4 * width,
              patch_size=patch)


# The paper's encoders with its 8-block, 512-wide decoder (Hugging Face's
# facebook/vit-mae-base / -large / -huge).
VARIANTS = {'B/16': _mae(768, 12, 12), 'L/16': _mae(1024, 24, 16), 'H/14': _mae(1280, 32, 16, 14)}
TINY = dict(image_size=16, channels=1, patch_size=2, embed_dim=64, depth=4, num_heads=4,
            mlp_dim=128, decoder_dim=32, decoder_depth=2, decoder_heads=4, decoder_mlp_dim=64)
