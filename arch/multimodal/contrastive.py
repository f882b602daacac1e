"""Pieces the self-supervised and contrastive objectives share: the projection head, an
encoder (any backbone with `num_classes=0`) with that head, the contrastive losses, and
the image plumbing of their tasks (views, features for probes, example batches).

Losses (z normalised to unit length, tau the temperature):
  nt_xent   SimCLR's normalised-temperature cross-entropy (Chen et al. 2020): 2B views,
            each one's positive the other view of its image, the other 2B - 2 negatives.
  info_nce  MoCo's (He et al. 2020; Oord et al. 2018): a query against its key and a
            queue of negative keys, the positive at logit 0.
  clip_loss CLIP's symmetric cross-entropy over an image-text similarity matrix (Radford
            et al. 2021), matching pairs on the diagonal.

Under pmap the per-device embeddings are gathered over `axis_name` first, so negatives
come from the whole global batch as they do under jit.

Dimension key: B batch, D representation width, E embedding width, K queue length.
"""

import dataclasses
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

import arch
from arch.images import center_crop_resize, labelled_images, scale_images
from arch.multimodal import augment
from arch.task import PMAP_AXIS

Dtype = Any


def l2_normalize(x, axis=-1, eps=1e-12):
  x = x.astype(jnp.float32)
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis, keepdims=True), eps))


class ProjectionHead(nn.Module):
  """Linear -> ReLU -> Linear (SimCLR's g, MoCo v2's MLP head): (B, D) -> (B, E)."""
  hidden_dim: int = 2048
  out_dim: int = 128
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, h_BD):
    dense = lambda n, axes, name: nn.Dense(
        n, dtype=self.dtype, param_dtype=self.param_dtype, name=name,
        kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), axes),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, axes[1:]))
    h = nn.relu(dense(self.hidden_dim, ('embed', 'mlp'), 'hidden')(h_BD))
    return dense(self.out_dim, ('mlp', 'embed'), 'out')(h)


class Embedder(nn.Module):
  """backbone (images -> (B, D) representation) followed by a projection head."""
  backbone: nn.Module
  hidden_dim: int = 2048
  out_dim: int = 128
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def setup(self):
    self.head = ProjectionHead(self.hidden_dim, self.out_dim, self.dtype, self.param_dtype)

  def represent(self, x_BHWC, *, train: bool = False):
    return self.backbone(x_BHWC, train=train)

  def __call__(self, x_BHWC, *, train: bool = False):
    return self.head(self.represent(x_BHWC, train=train))


def gather(x, axis_name: Optional[str]):
  """The whole batch's rows on every device under pmap; x itself otherwise."""
  return x if axis_name is None else jax.lax.all_gather(x, axis_name, tiled=True)


def nt_xent(z1_BE, z2_BE, temperature: float, axis_name: Optional[str] = None):
  """SimCLR's loss and the accuracy of picking each view's positive among 2B - 1."""
  b = z1_BE.shape[0]
  offset = 0 if axis_name is None else jax.lax.axis_index(axis_name) * b
  z_all = l2_normalize(jnp.concatenate([gather(z1_BE, axis_name), gather(z2_BE, axis_name)]))
  n = z_all.shape[0] // 2  # global batch
  q = l2_normalize(jnp.concatenate([z1_BE, z2_BE]))  # this device's 2b queries
  rows = jnp.concatenate([jnp.arange(b), n + jnp.arange(b)]) + offset
  positives = jnp.concatenate([n + jnp.arange(b), jnp.arange(b)]) + offset
  logits = q @ z_all.T / temperature
  logits = jnp.where(jnp.arange(2 * n)[None] == rows[:, None], -1e9, logits)  # no self
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, positives).mean()
  return loss, (logits.argmax(-1) == positives).mean()


def info_nce(q_BE, k_BE, queue_KE, temperature: float):
  """MoCo's loss: each query's positive is its key (logit 0), negatives the queue."""
  q, k = l2_normalize(q_BE), l2_normalize(k_BE)
  logits = jnp.concatenate([(q * k).sum(-1, keepdims=True), q @ queue_KE.T], axis=1)
  logits = logits / temperature
  labels = jnp.zeros(q.shape[0], jnp.int32)
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
  return loss, (logits.argmax(-1) == 0).mean()


def clip_loss(img_BE, txt_BE, logit_scale):
  """CLIP's symmetric loss: (CE over texts per image + CE over images per text) / 2."""
  logits = jnp.exp(logit_scale) * l2_normalize(img_BE) @ l2_normalize(txt_BE).T
  labels = jnp.arange(logits.shape[0])
  ce = optax.softmax_cross_entropy_with_integer_labels
  return (ce(logits, labels).mean() + ce(logits.T, labels).mean()) / 2, logits


@dataclasses.dataclass(frozen=True)
class ImageOptions:
  """The task_kwargs every image task built on `ImageSetup` reads; each task's `Options`
  subclasses it."""
  input_size: tuple = (32, 32)  # (H, W) the backbone sees; images are resized on device
  channels: int = 1  # grey images are repeated to this many
  # augment.views' knobs (crop_scale, flip, jitter, noise); {}: the two-view tasks
  # (SimCLR, MoCo) use views' defaults, the others (RotNet, MAE, CLIP) no augmentation
  augment: dict = dataclasses.field(default_factory=dict)
  host_size: int = 0  # as classification's: a host-side centre crop; 0 = off


class ImageSetup:
  """What the image self-supervised tasks read from a config and their `ImageOptions`:
  the backbone (the config's network with `num_classes=0`), input size and channels,
  `host_size`, the augmentation knobs, the pmap axis."""

  def __init__(self, config, opts: ImageOptions):
    self.input_size = tuple(opts.input_size)
    self.channels = int(opts.channels)
    self.augment = dict(opts.augment)
    if 'crop_scale' in self.augment:
      self.augment['crop_scale'] = tuple(self.augment['crop_scale'])
    self.host_size = int(opts.host_size)
    # A classifier backbone without its head returns its representation.
    no_head = {'num_classes': 0} if 'num_classes' in arch.model_fields(config.model_name) else {}
    self.backbone = arch.model_from_config(config, **no_head)
    self.axis_name = PMAP_AXIS if config.get('parallelism') == 'pmap' else None

  def images(self, batch):
    x = scale_images(batch['image'], self.input_size)
    if x.shape[-1] == 1 and self.channels != 1:  # grey images for an RGB network
      x = jnp.repeat(x, self.channels, axis=-1)
    return x

  def views(self, rng, x_BHWC):
    return augment.views(rng, x_BHWC, **self.augment)

  def example_batch(self, batch_size):
    return labelled_images(batch_size, self.input_size, self.channels)

  def preprocess(self):
    """Host-side centre crop for datasets of variable-sized images (as classification)."""
    if not self.host_size:
      return None
    return lambda ex: {**ex, 'image': center_crop_resize(ex['image'], self.host_size)}

  def features_fn(self, model, method='represent'):
    """features(variables, batch) -> the frozen representation (B, D), for the probes."""
    def features(variables, batch):
      return model.apply(variables, self.images(batch), train=False, method=method)
    return features
