"""Slot Attention (Locatello et al. 2020, "Object-Centric Learning with Slot Attention") for
unsupervised object discovery: an autoencoder whose bottleneck is a set of K slots that
compete for the pixels of an image, each slot decoded on its own into an RGB image and an
alpha mask, so that a slot comes to stand for one object.

The paper's object-discovery network, with its sizes as the defaults (the CLEVR model):
- encoder: 4 convolutions (5x5, 64 channels, ReLU, stride 1), a soft position embedding
  (a learned linear map of the 4-channel grid y, x, 1-y, 1-x added to the features), the
  map flattened to N = H*W inputs, LayerNorm and a 2-layer MLP;
- Slot Attention: slots start as mu + sigma * noise (a learned Gaussian, one draw per slot),
  then T = 3 rounds of: LayerNorm the slots, queries from the slots, keys and values from the
  (LayerNormed) inputs, logits q.k / sqrt(S), a softmax over the SLOTS (so slots compete for
  each input), the weights plus epsilon renormalised over the inputs, a weighted mean of the
  values as each slot's update, a GRU from the previous slot, and a residual MLP on the
  LayerNormed slot. Keys, values, queries, GRU and MLP are shared across rounds;
- spatial broadcast decoder: each slot tiled over an 8x8 grid plus its own soft position
  embedding, transposed convolutions (5x5, 64 channels; stride 2 up to the image size)
  and a 3x3 one to C + 1 channels: an RGB image and an alpha logit per slot. The alphas are
  softmaxed over the slots into masks, and the reconstruction is the mask-weighted sum of
  the slots' images. The loss is the reconstruction's mean squared error (pixels in [-1, 1]).

Evaluation (the paper's protocol): each pixel goes to the slot with the largest mask, and
the adjusted Rand index between that partition and the ground-truth instance masks is taken
over the foreground pixels of each image (`fg_ari`, averaged over images; 1 = the objects
recovered exactly, up to naming; about 0 = chance). Every eval image starts from the same
draw of initial slots (`Options.eval_seed`), so the number does not depend on the batch or
the devices. Beside it, two references on the same pixels: every foreground pixel in one
segment (`fg_ari_one_segment`, 0 by construction) and a k-means on the pixels' colours
with as many clusters as slots (`fg_ari_kmeans_rgb`): on scenes whose objects each have one
distinct colour, that is a strong, non-learned reference.

Options for small images and short runs (none changes the paper's network):
`Options.downsample` feeds the model the images area-pooled (32x32 -> 16x16) while the
metrics stay on the data's own masks, the model's soft masks resized to them bilinearly
before the argmax (`Options.mask_resize`: a perfect 16x16 segmentation, the area-pooled
one-hot masks, scores fg_ari 0.90 that way, 0.66 with each block repeated);
`Options.eval_iterations` runs more rounds of slot attention at evaluation than in
training (the rounds share their weights); `Model.conv_init='he'` initialises the ReLU
convolutions with He et al. 2015's variance (2 / fan-in). With Flax's default (LeCun,
1 / fan-in) four ReLU layers of 32 channels leave the colour features at std 0.04 over the
pixels of 16x16 test images, beside 0.27 for the position embedding added to them; with
He's, 0.17 against 0.27. (Measured at init; whether this is what lets training leave the
plateau was not ablated.) `Model.implicit_grad` is Chang et al. 2022's implicit
differentiation (the gradient through the last round only); tried, not used (slower to
leave the plateau here).

Measured (configs/slots_shapes.py, 2026-12-06/07): the first configuration (32x32 inputs,
1,200 steps of batch 16, lr 1e-3, cosine) stayed on Slot Attention's early plateau
(blurred mean-colour reconstruction, near-uniform masks: test fg_ari 0.16); 16x16 inputs,
a per-pixel broadcast decoder, He init and lr 2e-3 left it after 1,000-2,000 steps (0.43
at 4,000 with 5 slots); with 7 slots, the lr decayed and 5 rounds at evaluation, 0.53 at
3,000: partial discovery (numbers in the config's docstring); 10,000 steps (0.549), or a
decoder 64 wide over 6,000 (0.544), or batch 32 (0.528 at 3,000), lower the loss but not
the plateau of fg_ari near 0.55. Neither do (a third session, numbers in the config) a
per-pixel encoder (0.475 at 6,000 steps), the full 32x32 input or a decoder rendering 32x32
(both still on the early plateau at step 1,500), or lr 4e-3 (0.502 at 3,000): the model's
last-round attention scores 0.61 where its decoder's masks score 0.55, and each object
keeps only 73% of its pixels in its own slot (rounded masks smaller than the objects).

Dimension key:
  B batch   H, W image height, width   C image channels   N = H * W inputs
  D input features   K slots   S slot width   F point features (k-means)
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import arch
from arch.task import ConfigError, Task, parse_options, row_keys

# Colours of the segment panels of `sample` (slot k, ground-truth object k), cycling.
PALETTE = np.array([[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200],
                    [245, 130, 48], [145, 30, 180], [70, 240, 240], [240, 50, 230],
                    [210, 245, 60], [250, 190, 212], [0, 128, 128]], np.uint8)


# ------------------------------------------------------------------------------ metrics


def adjusted_rand_index(true_BN, pred_BN, weights_BN, num_true: int, num_pred: int):
  """The adjusted Rand index (Hubert & Arabie 1985) of two labellings of N points, per row,
  over the points with weight 1 (weights are 0 or 1; foreground pixels). Labels are ints in
  [0, num_true) and [0, num_pred). With n_ij the contingency table, a_i, b_j its row and
  column sums and n its total,
    ARI = (sum C(n_ij, 2) - E) / ((sum C(a_i, 2) + sum C(b_j, 2)) / 2 - E),
    E = sum C(a_i, 2) sum C(b_j, 2) / C(n, 2);
  where the denominator is 0 (both labellings one cluster, or both all singletons) the
  labellings agree and ARI is 1. Returns (B,) float32."""
  t_BNI = jax.nn.one_hot(true_BN, num_true) * weights_BN[..., None].astype(jnp.float32)
  p_BNJ = jax.nn.one_hot(pred_BN, num_pred)
  n_BIJ = jnp.einsum('BNI,BNJ->BIJ', t_BNI, p_BNJ)
  a_BI, b_BJ = n_BIJ.sum(2), n_BIJ.sum(1)
  n_B = a_BI.sum(1)
  pairs = lambda c: c * (c - 1) / 2
  index = pairs(n_BIJ).sum((1, 2))
  sum_a, sum_b = pairs(a_BI).sum(1), pairs(b_BJ).sum(1)
  expected = sum_a * sum_b / jnp.maximum(pairs(n_B), 1)
  denominator = (sum_a + sum_b) / 2 - expected
  return jnp.where(denominator == 0, 1.0,
                   (index - expected) / jnp.where(denominator == 0, 1.0, denominator))


def kmeans_labels(points_BNF, k: int, iterations: int):
  """Each point's cluster (B, N) from Lloyd's k-means per row, started from farthest-point
  centres (point 0, then repeatedly the point farthest from the centres so far)."""

  def one(p_NF):
    dist = lambda c_F: ((p_NF - c_F) ** 2).sum(-1)

    def add_centre(i, carry):
      c_KF, d_N = carry
      c_F = p_NF[jnp.argmax(d_N)]
      return c_KF.at[i].set(c_F), jnp.minimum(d_N, dist(c_F))

    c_KF = jnp.zeros((k, p_NF.shape[-1]), p_NF.dtype).at[0].set(p_NF[0])
    c_KF, _ = jax.lax.fori_loop(1, k, add_centre, (c_KF, dist(p_NF[0])))

    def assign(c_KF):
      return ((p_NF[:, None] - c_KF[None]) ** 2).sum(-1).argmin(-1)

    def lloyd(_, c_KF):
      w_NK = jax.nn.one_hot(assign(c_KF), k)
      count_K = w_NK.sum(0)
      mean_KF = w_NK.T @ p_NF / jnp.maximum(count_K, 1)[:, None]
      return jnp.where(count_K[:, None] > 0, mean_KF, c_KF)  # an empty cluster stays put

    return assign(jax.lax.fori_loop(0, iterations, lloyd, c_KF))

  return jax.vmap(one)(points_BNF)


# ------------------------------------------------------------------------------- blocks


def position_grid(h: int, w: int):
  """(h, w, 4): y, x, 1 - y, 1 - x, each running over [0, 1] (the paper's grid)."""
  y, x = jnp.meshgrid(jnp.linspace(0.0, 1.0, h), jnp.linspace(0.0, 1.0, w), indexing='ij')
  return jnp.stack([y, x, 1.0 - y, 1.0 - x], -1)


class SoftPositionEmbed(nn.Module):
  """Adds a learned linear map of the position grid to a (B, H, W, D) feature map."""

  @nn.compact
  def __call__(self, x_BHWD):
    return x_BHWD + nn.Dense(x_BHWD.shape[-1], name='dense')(position_grid(*x_BHWD.shape[1:3]))


class SlotAttention(nn.Module):
  """`iterations` rounds of attention in which slots compete for the inputs (softmax over
  slots), each slot updated by a GRU from its attention-weighted mean of the values and
  then by a residual MLP. Returns (slots (B, K, S), the last round's softmax over slots
  (B, K, N))."""
  iterations: int = 3
  mlp_hidden: int = 128
  epsilon: float = 1e-8
  # Chang et al. 2022's implicit differentiation: the gradient flows through the last round
  # only (the slots entering it are a constant); the forward pass is unchanged
  implicit_grad: bool = False

  @nn.compact
  def __call__(self, inputs_BND, slots_BKS):
    s = slots_BKS.shape[-1]
    inputs_BND = nn.LayerNorm(name='norm_inputs')(inputs_BND)
    k_BNS = nn.Dense(s, use_bias=False, name='key')(inputs_BND)
    v_BNS = nn.Dense(s, use_bias=False, name='value')(inputs_BND)
    # one set of weights for every round
    norm_slots = nn.LayerNorm(name='norm_slots')
    query = nn.Dense(s, use_bias=False, name='query')
    gru = nn.GRUCell(s, name='gru')
    norm_mlp = nn.LayerNorm(name='norm_mlp')
    mlp_hidden = nn.Dense(self.mlp_hidden, name='mlp_hidden')
    mlp_out = nn.Dense(s, name='mlp_out')
    attn_BKN = None
    for i in range(self.iterations):
      if self.implicit_grad and i == self.iterations - 1:
        slots_BKS = jax.lax.stop_gradient(slots_BKS)
      q_BKS = query(norm_slots(slots_BKS))
      logits_BKN = jnp.einsum('BKS,BNS->BKN', q_BKS, k_BNS) / np.sqrt(s)
      attn_BKN = jax.nn.softmax(logits_BKN, axis=1)  # over the slots: slots compete
      w_BKN = attn_BKN + self.epsilon
      w_BKN = w_BKN / w_BKN.sum(-1, keepdims=True)   # a weighted mean over the inputs
      updates_BKS = jnp.einsum('BKN,BNS->BKS', w_BKN, v_BNS)
      slots_BKS, _ = gru(slots_BKS, updates_BKS)
      slots_BKS = slots_BKS + mlp_out(nn.relu(mlp_hidden(norm_mlp(slots_BKS))))
    return slots_BKS, attn_BKN


# Initialisers of the ReLU convolutions: Flax's default (LeCun normal, variance 1 / fan-in)
# or He et al. 2015's (2 / fan-in), which keeps the activations' scale through ReLUs.
CONV_INITS = {'lecun': nn.initializers.lecun_normal(), 'he': nn.initializers.he_normal()}


def conv_init(name: str):
  if name not in CONV_INITS:
    raise ConfigError(f'conv_init must be one of {sorted(CONV_INITS)}, got {name!r}')
  return CONV_INITS[name]


class Encoder(nn.Module):
  """CNN, soft position embedding, flatten, LayerNorm, MLP: (B, H, W, C) -> (B, N, D)."""
  features: tuple = (64, 64, 64, 64)
  kernel: int = 5
  conv_init: str = 'lecun'  # or 'he' (CONV_INITS)

  @nn.compact
  def __call__(self, x_BHWC):
    for i, f in enumerate(self.features):
      x_BHWC = nn.relu(nn.Conv(f, (self.kernel, self.kernel), padding='SAME',
                               kernel_init=conv_init(self.conv_init), name=f'conv{i}')(x_BHWC))
    x_BHWD = SoftPositionEmbed(name='position')(x_BHWC)
    b, h, w, d = x_BHWD.shape
    x_BND = nn.LayerNorm(name='norm')(x_BHWD.reshape(b, h * w, d))
    return nn.Dense(d, name='mlp_out')(nn.relu(nn.Dense(d, name='mlp_hidden')(x_BND)))


class Pointwise(nn.Module):
  """A 1x1, stride-1 convolution (or transposed convolution: the same map) computed as a
  matrix product over the last axis, with nn.Conv's parameter names and shapes (kernel
  (1, 1, in, out), bias (out,)). XLA:CPU ran the decoder's 1x1 convolutions and their
  gradients as convolutions with layout transposes around them (2026-12-07)."""
  features: int
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x):
    kernel = self.param('kernel', self.kernel_init, (1, 1, x.shape[-1], self.features))
    bias = self.param('bias', nn.initializers.zeros_init(), (self.features,))
    return jnp.einsum('...i,io->...o', x, kernel[0, 0]) + bias


class BroadcastDecoder(nn.Module):
  """Spatial broadcast decoder: each slot tiled over an init_size x init_size grid, plus a soft
  position embedding, through transposed convolutions to (B, K, H, W, channels + 1): RGB
  and an alpha logit per slot."""
  channels: int = 3
  init_size: int = 8
  features: tuple = (64, 64, 64, 64, 64)
  strides: tuple = (2, 2, 2, 2, 1)
  kernel: int = 5
  # 'transpose': strided transposed convolutions (the paper's); 'nearest': nearest-neighbour
  # upsampling, then a convolution (XLA:CPU ran a stride-2 5x5 transposed convolution's
  # forward and backward 5.6x slower than upsampling + 3x3 convolution, 2026-12-06)
  upsample: str = 'transpose'
  conv_init: str = 'lecun'  # or 'he' (CONV_INITS)

  @nn.compact
  def __call__(self, slots_BKS):
    b, k, s = slots_BKS.shape
    side = self.init_size
    if self.upsample not in ('transpose', 'nearest'):
      raise ConfigError(f"upsample must be 'transpose' or 'nearest', got {self.upsample!r}")
    prefix = 'deconv' if self.upsample == 'transpose' else 'conv'
    init = conv_init(self.conv_init)
    position = SoftPositionEmbed(name='position')
    layers = list(enumerate(zip(self.features, self.strides)))
    if self.kernel == 1 and all(st == 1 for st in self.strides):
      # every layer per pixel: the first one's map of (slot + position embedding) is the
      # map of the slot (once per slot) plus the map of the embedding (once per pixel),
      # the same numbers without the (B K, H, W, S) broadcast
      first = Pointwise(self.features[0], init, name=f'{prefix}0')
      pos_1HWS = position(jnp.zeros((1, side, side, s), slots_BKS.dtype))
      x = first(slots_BKS.reshape(b * k, 1, 1, s)) + (first(pos_1HWS) - first.variables[
          'params']['bias'])
      x = nn.relu(x)
      for i, (f, _) in layers[1:]:
        x = nn.relu(Pointwise(f, init, name=f'{prefix}{i}')(x))
    else:
      x = jnp.broadcast_to(slots_BKS.reshape(b * k, 1, 1, s), (b * k, side, side, s))
      x = position(x)
      for i, (f, st) in layers:
        window = (self.kernel, self.kernel)
        if self.upsample == 'transpose':
          x = nn.ConvTranspose(f, window, strides=(st, st), padding='SAME', kernel_init=init,
                               name=f'deconv{i}')(x)
        else:
          x = jnp.repeat(jnp.repeat(x, st, axis=1), st, axis=2)
          x = nn.Conv(f, window, padding='SAME', kernel_init=init, name=f'conv{i}')(x)
        x = nn.relu(x)
    x = nn.ConvTranspose(self.channels + 1, (3, 3), padding='SAME', name='out')(x)
    return x.reshape(b, k, *x.shape[1:])


# -------------------------------------------------------------------------------- model


class Model(nn.Module):
  """The object-discovery autoencoder; call with images in [-1, 1] and the initial slots'
  standard-normal noise (B, K, S) (default: drawn from the 'slots' rng)."""
  num_slots: int = 7
  slot_size: int = 64
  iterations: int = 3
  mlp_hidden: int = 128
  encoder_features: tuple = (64, 64, 64, 64)
  encoder_kernel: int = 5
  decoder_init: int = 8            # the broadcast grid's side
  decoder_features: tuple = (64, 64, 64, 64, 64)
  decoder_strides: tuple = (2, 2, 2, 2, 1)  # the image side is decoder_init * their product
  decoder_kernel: int = 5
  decoder_upsample: str = 'transpose'  # or 'nearest' (BroadcastDecoder.upsample)
  conv_init: str = 'lecun'  # the ReLU convolutions' initialiser (CONV_INITS)
  epsilon: float = 1e-8
  implicit_grad: bool = False  # gradient through the last round only (SlotAttention)

  @nn.compact
  def __call__(self, x_BHWC, noise_BKS=None):
    """{'recon': (B, H, W, C), 'rgb': (B, K, H, W, C) each slot's image, 'masks':
    (B, K, H, W) summing to 1 over K, 'slots': (B, K, S), 'attn': (B, K, N)}."""
    b, h, w, c = x_BHWC.shape
    side = self.decoder_init * int(np.prod(self.decoder_strides))
    if (h, w) != (side, side):
      raise ConfigError(f'images are {h}x{w} but the decoder makes {side}x{side} '
                        f'(decoder_init {self.decoder_init} x strides {self.decoder_strides})')
    inputs_BND = Encoder(tuple(self.encoder_features), self.encoder_kernel, self.conv_init,
                         name='encoder')(x_BHWC)
    shape = (1, 1, self.slot_size)
    mu = self.param('slots_mu', nn.initializers.xavier_uniform(), shape)
    log_sigma = self.param('slots_log_sigma', nn.initializers.xavier_uniform(), shape)
    if noise_BKS is None:
      noise_BKS = jax.random.normal(self.make_rng('slots'), (b, self.num_slots, self.slot_size))
    slots_BKS = mu + jnp.exp(log_sigma) * noise_BKS
    slot_attention = SlotAttention(self.iterations, self.mlp_hidden, self.epsilon,
                                   self.implicit_grad, name='slot_attention')
    slots_BKS, attn_BKN = slot_attention(inputs_BND, slots_BKS)
    out = BroadcastDecoder(c, self.decoder_init, tuple(self.decoder_features),
                           tuple(self.decoder_strides), self.decoder_kernel,
                           self.decoder_upsample, self.conv_init, name='decoder')(slots_BKS)
    rgb_BKHWC, alpha_BKHW = out[..., :c], out[..., c]
    masks_BKHW = jax.nn.softmax(alpha_BKHW, axis=1)
    recon_BHWC = (rgb_BKHWC * masks_BKHW[..., None]).sum(1)
    return {'recon': recon_BHWC, 'rgb': rgb_BKHWC, 'masks': masks_BKHW, 'slots': slots_BKS,
            'attn': attn_BKN}


# --------------------------------------------------------------------------------- task


@dataclasses.dataclass(frozen=True)
class Options:
  """The object-discovery task's task_kwargs."""
  image_size: tuple = (32, 32)
  channels: int = 3
  max_objects: int = 10  # instance ids in the masks run 0 (background) .. max_objects
  eval_seed: int = 0     # the one draw of initial slots every eval image starts from
  kmeans_iters: int = 10  # Lloyd iterations of the colour k-means reference
  # the model sees the images area-pooled by this factor (2: 32x32 -> 16x16); the metrics
  # and samples stay at the data's size, the masks resized to it by `mask_resize`
  downsample: int = 1
  # 'bilinear': the soft masks interpolated, then each pixel to its largest (a boundary
  # pixel can go to either side of its block); 'nearest': each model pixel's slot repeated
  # over its block
  mask_resize: str = 'bilinear'
  # rounds of slot attention at evaluation and sampling (0: the model's own); the rounds
  # share their weights, so a model trained with T rounds can run more
  eval_iterations: int = 0


def to_unit(image_BHWC):
  """uint8 pixels -> float32 in [-1, 1]."""
  return image_BHWC.astype(jnp.float32) / 127.5 - 1.0


def to_uint8(x):
  return jnp.clip(jnp.round((x + 1.0) * 127.5), 0, 255).astype(jnp.uint8)


def area_pool(x_BHWC, factor: int):
  """The mean over each factor x factor block: (B, H, W, C) -> (B, H/f, W/f, C)."""
  b, h, w, c = x_BHWC.shape
  if h % factor or w % factor:
    raise ConfigError(f'downsample {factor} does not divide the {h}x{w} images')
  return x_BHWC.reshape(b, h // factor, factor, w // factor, factor, c).mean((2, 4))


def upsample(x, factor: int, axes=(-2, -1)):
  """Each pixel repeated over a factor x factor block along the two `axes` (H, W)."""
  for axis in axes:
    x = jnp.repeat(x, factor, axis=axis)
  return x


def resize_masks(masks_BKHW, factor: int, method: str):
  """The masks at `factor` times their size: (B, K, H, W) -> (B, K, fH, fW)."""
  if factor == 1:
    return masks_BKHW
  if method == 'nearest':
    return upsample(masks_BKHW, factor)
  b, k, h, w = masks_BKHW.shape
  return jax.image.resize(masks_BKHW, (b, k, h * factor, w * factor), 'bilinear')


def make(config) -> Task:
  opts = parse_options(Options, config)
  model = arch.model_from_config(config)
  k, s = model.num_slots, model.slot_size
  size = tuple(opts.image_size)
  f = opts.downsample
  if f < 1:
    raise ConfigError(f'downsample must be >= 1, got {f}')
  if opts.mask_resize not in ('bilinear', 'nearest'):
    raise ConfigError(f"mask_resize must be 'bilinear' or 'nearest', got {opts.mask_resize!r}")
  masks_at_data_size = lambda m: resize_masks(m, f, opts.mask_resize)
  if opts.eval_iterations < 0:
    raise ConfigError(f'eval_iterations must be >= 0, got {opts.eval_iterations}')
  eval_model = model.clone(iterations=opts.eval_iterations or model.iterations)

  def model_input(batch):
    x = to_unit(batch['image'])
    return area_pool(x, f) if f > 1 else x

  def noise(rng, b):
    return jax.random.normal(rng, (b, k, s))

  def eval_noise(b):
    return jnp.broadcast_to(noise(jax.random.key(opts.eval_seed), 1), (b, k, s))

  def init(rng, batch):
    x = model_input(batch)
    return model.init({'params': rng}, x, noise(rng, x.shape[0]))

  def loss(variables, batch, rng):
    x = model_input(batch)
    out = model.apply(variables, x, noise(rng, x.shape[0]))
    mse = ((out['recon'] - x) ** 2).mean()
    return mse, ({'loss': mse}, {})

  def evaluate(variables, batch):
    x = model_input(batch)
    b = x.shape[0]
    out = eval_model.apply(variables, x, eval_noise(b))
    true_BN = batch['mask'].astype(jnp.int32).reshape(b, -1)
    pred_BN = masks_at_data_size(out['masks']).argmax(1).reshape(b, -1)
    fg_BN = true_BN > 0
    colours = out['recon'].shape[-1]
    kmeans_BN = kmeans_labels(to_unit(batch['image']).reshape(b, -1, colours), k,
                              opts.kmeans_iters)
    ari = lambda pred, weights, n=k: adjusted_rand_index(true_BN, pred, weights,
                                                         opts.max_objects + 1, n)
    return {
        'loss': ((out['recon'] - x) ** 2).mean((1, 2, 3)),
        'fg_ari': ari(pred_BN, fg_BN),
        'ari': ari(pred_BN, jnp.ones_like(fg_BN)),   # background as one more segment
        'fg_ari_one_segment': ari(jnp.zeros_like(pred_BN), fg_BN, 1),
        'fg_ari_kmeans_rgb': ari(kmeans_BN, fg_BN),
    }

  def example_batch(batch_size):
    return {'image': jax.ShapeDtypeStruct((batch_size, *size, opts.channels), jnp.uint8),
            'mask': jax.ShapeDtypeStruct((batch_size, *size), jnp.uint8)}

  def prompt_batch(prompts, num_samples, examples=None):
    if prompts is not None and any(len(p) for p in prompts):
      raise ConfigError('slot attention decomposes eval images and takes no prompt')
    if examples is None:
      raise ConfigError('slot attention samples decompose eval-split images: the sampler '
                        'must pass them (Task.prompt_examples)')
    return {'image': np.asarray(examples['image'][:num_samples]),
            'mask': np.asarray(examples['mask'][:num_samples])}

  def sample(variables, batch, rng, *, row_ids):
    """One strip per eval image: input | ground-truth objects | reconstruction | slot
    segmentation (argmax of the masks) | each slot's image times its mask, on white."""
    row_noise = jax.vmap(lambda r: jax.random.normal(r, (k, s)))(row_keys(rng, row_ids))
    out = eval_model.apply(variables, model_input(batch), row_noise)
    # back to the data's size: images (B, [K,] H, W, C), masks (B, K, H, W)
    out = {'recon': upsample(out['recon'], f, (1, 2)), 'rgb': upsample(out['rgb'], f, (2, 3)),
           'masks': masks_at_data_size(out['masks'])}
    palette = jnp.asarray(PALETTE)
    paint = lambda ids: jnp.where((ids > 0)[..., None], palette[(ids - 1) % len(PALETTE)],
                                  jnp.uint8(0))
    truth = paint(batch['mask'].astype(jnp.int32))
    segments = jnp.asarray(palette)[out['masks'].argmax(1) % len(PALETTE)]
    m = out['masks'][..., None]
    per_slot = to_uint8(out['rgb'] * m + (1.0 - m))   # (B, K, H, W, C) on white
    panels = [batch['image'], truth, to_uint8(out['recon']), segments,
              *[per_slot[:, i] for i in range(k)]]
    return {'images': jnp.concatenate(panels, axis=2)}

  return Task(init=init, loss=loss, evaluate=evaluate, example_batch=example_batch,
              prompt_batch=prompt_batch, sample=sample, prompt_examples=True)
