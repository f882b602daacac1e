"""CycleGAN (Zhu, Park, Isola & Efros 2017, "Unpaired image-to-image translation using
cycle-consistent adversarial networks"): two generators G: A -> B and F: B -> A and two
discriminators D_A, D_B, trained from UNPAIRED images of the two domains by alternating
updates (the loop's `Task.phases`, one Adam per group).

Networks, as the paper's appendix and its reference code define them:
- Generator (Johnson et al.'s ResNet transformer): c7s1-F (reflection pad 3, 7x7 conv,
  instance norm, ReLU), `num_down` stride-2 3x3 convs doubling the width (d2F, d4F),
  `num_blocks` residual blocks of two reflection-padded 3x3 convs with instance norm,
  `num_down` fractionally-strided 3x3 convs halving it back (u2F, uF), c7s1-C and tanh.
  Instance norm has no affine parameters and every conv keeps its bias (the reference
  code's `use_bias = norm is InstanceNorm`). `VARIANTS['paper']`, the 9-block 256x256
  generator, has 11,378,179 parameters, the reference code's count.
- Discriminator (PatchGAN): 4x4 convs C64 (stride 2, no norm), C128, C256 (stride 2,
  instance norm), C512 (stride 1), then a stride-1 4x4 conv to one logit per patch;
  LeakyReLU(0.2). With `disc_layers=3` it is the 70x70 PatchGAN, 2,764,737 parameters.
- Weights N(0, 0.02), biases zero (the reference code's `init_type='normal'`).

The objective (`make`): LSGAN (Mao et al. 2017) least squares in place of the log loss;
for G and D_B (F and D_A alike)
  D phase:  0.5 * [ mean (D_B(b) - 1)^2 + mean D_B(pool_B(G(a)))^2 ]
  G phase:  mean (D_B(G(a)) - 1)^2
            + lambda * (|F(G(a)) - a|_1 + |G(F(b)) - b|_1)          cycle, lambda = 10
            + 0.5 * lambda * (|G(b) - b|_1 + |F(a) - a|_1)            identity
(L1 as a mean over pixels, images in [-1, 1]). The discriminators learn from a history of
fakes, the image pool of Shrivastava et al. 2017: a buffer of 50 past fakes per domain,
kept in the non-param collection 'pool' (checkpointed with the run); while filling it
returns each new fake and stores it, once full each fake with probability 1/2 is returned
and with probability 1/2 swapped for a random stored one (`pool_query`). Phases run
discriminators -> generators -> judges: the discriminators see fakes of the generators
before their step, as in the paper's code (where G steps first, D then trains on the same
pre-step fakes; the phases here regenerate them, one extra forward).

Data: domain A is the digits as they are; domain B the same digit classes stroke-thickened
(`thicken`: a grey-level dilation, each pixel the max of itself and its four neighbours,
which doubles the ink). No pointwise function of a pixel gives it (a pixel's output
depends on its neighbours; tested), and F must undo a lossy map (thinning). A batch's
first half is A and its second half, thickened, is B: different images of the
shuffled train split in every step (each image serves both domains over the epochs);
the network never sees a pair (a, thicken(a)).

Judges (eval only): two small CNN digit classifiers, 'judges/a' on real A and 'judges/b'
on real B, trained by their own phase on real images and labels (never on a
generator's output, and no gradient reaches G or F). The eval reads, per test digit a and
its b = thicken(a):
  acc_g_ab       judge B reads G(a) as a's digit: translation keeps the digit;
  acc_b_on_a     judge B on raw a (the floor: translating nothing), acc_b_on_b the ceiling;
  acc_f_ba, acc_a_on_b, acc_a_on_a    the same for F: B -> A;
  cycle_a, cycle_b         |F(G(a)) - a|, |G(F(b)) - b| (mean L1 on pixels in [0, 1]);
  identity_a, identity_b   |F(a) - a|, |G(b) - b|;
  paired_g_ab, paired_f_ba |G(a) - thicken(a)|, |F(b) - a|: distance to the true
                 translation (never used in training), next to |a - b| (`paired_floor`);
  ink_a, ink_b, ink_g_ab, ink_f_ba   mean pixel value in [0, 1] (the domain check: G(a)
                 should carry B's ink, F(b) A's).

The pool is one buffer for the global batch, so the task runs under the loop's default
`parallelism='jit'` (pmap's per-device steps would average eight pools: refused unless
`pool_size=0`).

Measured (configs/cyclegan_digits.py, 1,500 steps of batch 32 A + 32 B, 2026-12-06):
judge B keeps the digit of 95.6% of the translated test digits G(a) (floor: 91.4% on raw
a; ceiling: 96.9% on real b), judge A of 93.3% of F(b) (floor 68.9%, ceiling 100%); cycle
L1 0.066 (A) and 0.065 (B) on pixels in [0, 1]; G(a) lies 0.067 from the true thicken(a)
against 0.297 for the untranslated a; G(a) has B's mean ink (0.608 vs 0.604).

Dimension key: B batch, H W C image, P pool slots, K classes.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import arch
from arch.generative import to_uint8, to_unit
from arch.images import labelled_images, random_translate
from arch.task import ConfigError, Task, parse_options

Dtype = Any

VARIANTS = {
    # The paper's 256x256 networks: resnet_9blocks and the 70x70 PatchGAN.
    'paper': dict(image_size=256, channels=3, gen_features=64, num_down=2, num_blocks=9,
                  disc_features=64, disc_layers=3),
    # Its 128x128 generator (6 blocks).
    'paper128': dict(image_size=128, channels=3, gen_features=64, num_down=2, num_blocks=6,
                     disc_features=64, disc_layers=3),
    # 8x8 grey digits: 8x8x16 -> 4x4x32 (4 blocks) -> 8x8x16 -> 8x8x1; a 16x16 PatchGAN
    # (one stride-2 layer) gives 2x2 patch logits.
    'digits': dict(image_size=8, channels=1, gen_features=16, num_down=1, num_blocks=4,
                   disc_features=32, disc_layers=1),
    'tiny': dict(image_size=8, channels=1, gen_features=4, num_down=1, num_blocks=1,
                 disc_features=4, disc_layers=1, judge_features=4),
}

weight_init = nn.initializers.normal(0.02)


def thicken(image_BHWC):
  """Domain B from domain A: grey-level dilation by a plus-shaped 3x3 element, each
  pixel the max of itself and its 4 neighbours (zero outside). Any dtype; same shape."""
  x = jnp.pad(image_BHWC, ((0, 0), (1, 1), (1, 1), (0, 0)))
  h, w = image_BHWC.shape[1:3]
  shifted = [x[:, 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
             for dy, dx in ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1))]
  return jnp.max(jnp.stack(shifted), axis=0)


# --------------------------------------------------------------------------- networks


def _reflect(x_BHWC, p: int):
  return jnp.pad(x_BHWC, ((0, 0), (p, p), (p, p), (0, 0)), mode='reflect')


def _instance_norm(dtype, name=None):
  # the reference code's InstanceNorm2d(affine=False)
  return nn.InstanceNorm(use_bias=False, use_scale=False, epsilon=1e-5, dtype=dtype, name=name)


class ResnetBlock(nn.Module):
  """x + IN(conv(ReLU(IN(conv(x))))), both 3x3 convs reflection-padded."""
  features: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    conv = lambda name: nn.Conv(self.features, (3, 3), padding='VALID', kernel_init=weight_init,
                                dtype=self.dtype, param_dtype=self.param_dtype, name=name)
    h = nn.relu(_instance_norm(self.dtype)(conv('conv0')(_reflect(x, 1))))
    h = _instance_norm(self.dtype)(conv('conv1')(_reflect(h, 1)))
    return x + h


class Generator(nn.Module):
  """Images (B, H, W, C) in [-1, 1] -> translated images (B, H, W, C) in [-1, 1]."""
  channels: int = 3
  features: int = 64
  num_down: int = 2
  num_blocks: int = 9
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BHWC):
    common = dict(kernel_init=weight_init, dtype=self.dtype, param_dtype=self.param_dtype)
    x = x_BHWC.astype(self.dtype)
    x = nn.Conv(self.features, (7, 7), padding='VALID', name='stem', **common)(_reflect(x, 3))
    x = nn.relu(_instance_norm(self.dtype)(x))
    f = self.features
    for i in range(self.num_down):
      f *= 2
      x = nn.Conv(f, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)), name=f'down{i}',
                  **common)(x)
      x = nn.relu(_instance_norm(self.dtype)(x))
    for i in range(self.num_blocks):
      x = ResnetBlock(f, self.dtype, self.param_dtype, name=f'block{i}')(x)
    for i in range(self.num_down):
      f //= 2
      # PyTorch's ConvTranspose2d(k=3, s=2, padding=1, output_padding=1): pads (1, 2) of
      # the dilated input, doubling the size
      x = nn.ConvTranspose(f, (3, 3), strides=(2, 2), padding=((1, 2), (1, 2)),
                           name=f'up{i}', **common)(x)
      x = nn.relu(_instance_norm(self.dtype)(x))
    x = nn.Conv(self.channels, (7, 7), padding='VALID', name='head', **common)(_reflect(x, 3))
    return jnp.tanh(x).astype(jnp.float32)


class Discriminator(nn.Module):
  """PatchGAN: images (B, H, W, C) -> one logit per patch (B, h, w)."""
  features: int = 64
  num_layers: int = 3  # stride-2 convs; 3 = the 70x70 PatchGAN, 1 = 16x16
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BHWC):
    conv = lambda f, stride, name: nn.Conv(
        f, (4, 4), strides=(stride, stride), padding=((1, 1), (1, 1)), kernel_init=weight_init,
        dtype=self.dtype, param_dtype=self.param_dtype, name=name)
    x = nn.leaky_relu(conv(self.features, 2, 'conv0')(x_BHWC.astype(self.dtype)), 0.2)
    for i in range(1, self.num_layers + 1):
      stride = 2 if i < self.num_layers else 1
      x = conv(self.features * min(2 ** i, 8), stride, f'conv{i}')(x)
      x = nn.leaky_relu(_instance_norm(self.dtype)(x), 0.2)
    return conv(1, 1, 'logit')(x)[..., 0].astype(jnp.float32)


class Judge(nn.Module):
  """A small CNN digit classifier for the eval: images in [-1, 1] -> logits (B, K)."""
  features: int = 32
  num_classes: int = 10

  @nn.compact
  def __call__(self, x_BHWC):
    f = self.features
    x = nn.relu(nn.Conv(f, (3, 3), name='conv0')(x_BHWC))
    x = nn.relu(nn.Conv(2 * f, (3, 3), strides=(2, 2), name='conv1')(x))
    x = nn.relu(nn.Conv(2 * f, (3, 3), name='conv2')(x))
    if x.shape[1] > 4:  # larger images: average-pool to 4x4 first
      win = (x.shape[1] // 4, x.shape[2] // 4)
      x = nn.avg_pool(x, win, strides=win)
    x = nn.relu(nn.Dense(4 * f, name='hidden')(x.reshape(x.shape[0], -1)))
    return nn.Dense(self.num_classes, name='logits')(x)


class _Pair(nn.Module):
  """Two networks of one parameter group: `a` and `b` (generators: G and F)."""
  make_a: Any
  make_b: Any

  def setup(self):
    self.a = self.make_a()
    self.b = self.make_b()


class Model(nn.Module):
  """Parameter groups 'generators' {a: G (A -> B), b: F (B -> A)}, 'discriminators'
  {a: D_A, b: D_B} and 'judges' {a, b} (entry points g, f, d_a, d_b, judge_a, judge_b)."""
  image_size: int = 256
  channels: int = 3
  gen_features: int = 64
  num_down: int = 2
  num_blocks: int = 9
  disc_features: int = 64
  disc_layers: int = 3
  judge_features: int = 32
  num_classes: int = 10
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def setup(self):
    if self.image_size % 2 ** self.num_down:
      raise ValueError(f'a generator with {self.num_down} downsamplings needs an image size '
                       f'divisible by {2 ** self.num_down}; got {self.image_size}')
    dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    gen = lambda: Generator(self.channels, self.gen_features, self.num_down,
                            self.num_blocks, **dt)
    disc = lambda: Discriminator(self.disc_features, self.disc_layers, **dt)
    judge = lambda: Judge(self.judge_features, self.num_classes)
    self.generators = _Pair(gen, gen)
    self.discriminators = _Pair(disc, disc)
    self.judges = _Pair(judge, judge)

  def g(self, x):
    """G: A -> B."""
    return self.generators.a(x)

  def f(self, x):
    """F: B -> A."""
    return self.generators.b(x)

  def d_a(self, x):
    return self.discriminators.a(x)

  def d_b(self, x):
    return self.discriminators.b(x)

  def judge_a(self, x):
    return self.judges.a(x)

  def judge_b(self, x):
    return self.judges.b(x)

  def __call__(self, x):
    """Initialises every network (x: images of either domain)."""
    return (self.d_a(self.f(x)), self.d_b(self.g(x)), self.judge_a(x), self.judge_b(x))


# -------------------------------------------------------------------------- objective


def lsgan_d_loss(real_logits, fake_logits):
  """The LSGAN discriminator loss: 0.5 * (mean (D(real) - 1)^2 + mean D(fake)^2)."""
  return 0.5 * (jnp.mean((real_logits - 1.0) ** 2) + jnp.mean(fake_logits ** 2))


def lsgan_g_loss(fake_logits):
  """The LSGAN generator loss: mean (D(G(x)) - 1)^2."""
  return jnp.mean((fake_logits - 1.0) ** 2)


def l1(x, y):
  return jnp.mean(jnp.abs(x - y))


def cycle_loss(real_a, rec_a, real_b, rec_b, weight: float = 10.0):
  """weight * (|F(G(a)) - a|_1 + |G(F(b)) - b|_1), each a mean over pixels."""
  return weight * (l1(rec_a, real_a) + l1(rec_b, real_b))


def identity_loss(real_a, f_of_a, real_b, g_of_b, weight: float = 5.0):
  """weight * (|G(b) - b|_1 + |F(a) - a|_1): generators leave their target domain alone."""
  return weight * (l1(g_of_b, real_b) + l1(f_of_a, real_a))


def empty_pool(size: int, shape) -> dict:
  """An image pool of `size` slots for images of `shape`: {'images': (P, ...), 'count'}."""
  return {'images': jnp.zeros((size, *shape), jnp.float32), 'count': jnp.zeros((), jnp.int32)}


def pool_query(pool: dict, fakes_BHWC, rng):
  """(images for the discriminator (B, H, W, C), the updated pool): the fakes taken one by
  one; while the pool is not full each is stored and returned; after that each is
  returned with probability 1/2, else a uniformly drawn stored image is returned and
  replaced by it. A pool of size 0 returns the fakes."""
  size = pool['images'].shape[0]
  if size == 0:
    return fakes_BHWC, pool

  def one(carry, inputs):
    images, count = carry
    fake, key = inputs
    k_swap, k_slot = jax.random.split(key)
    filling = count < size
    swap = ~filling & (jax.random.uniform(k_swap) > 0.5)
    slot = jnp.where(filling, count, jax.random.randint(k_slot, (), 0, size))
    out = jnp.where(swap, images[slot], fake)
    images = jnp.where(filling | swap, images.at[slot].set(fake), images)
    return (images, jnp.minimum(count + 1, size)), out

  keys = jax.random.split(rng, fakes_BHWC.shape[0])
  (images, count), out = jax.lax.scan(one, (pool['images'], pool['count']),
                                      (fakes_BHWC.astype(jnp.float32), keys))
  return out, {'images': images, 'count': count}


@dataclasses.dataclass(frozen=True)
class Options:
  """CycleGAN's task_kwargs (image shapes come from config.model)."""
  cycle_weight: float = 10.0  # lambda
  identity_weight: float = 0.5  # times lambda; 0 = no identity loss
  pool_size: int = 50
  judge_shift: int = 1  # judges' training augmentation: random shifts of up to this many px


POOL = 'pool'


def make(config) -> Task:
  """`config.task = 'generative.cyclegan'`, `config.model_name = 'generative.cyclegan'`.
  Phases 'discriminators', 'generators', 'judges'; train metrics per phase (e.g.
  generators/{gan, cycle, identity}); eval per test image: see the module docstring.
  Batches hold digits `image` (B, H, W, C) uint8 and `label`; B even (half A, half B)."""
  opts = parse_options(Options, config)
  model = arch.model_from_config(config)
  if not isinstance(model, Model):
    raise ConfigError(f'the CycleGAN objective needs generative.cyclegan; config.model_name '
                      f'is {config.model_name!r}')
  pool_size = int(opts.pool_size)
  if pool_size < 0:
    raise ConfigError(f'task_kwargs.pool_size must be >= 0, got {pool_size}')
  if pool_size and config.get('parallelism') == 'pmap':
    raise ConfigError("the image pool is one buffer of the global batch's fakes, which pmap's "
                      "per-device steps would average; use parallelism='jit' or "
                      "task_kwargs.pool_size=0")
  lam = float(opts.cycle_weight)
  lam_idt = float(opts.identity_weight) * lam
  shift = int(opts.judge_shift)
  shape = (model.image_size, model.image_size, model.channels)

  def check(batch, halves=False):
    image = batch['image']
    if tuple(image.shape[1:]) != shape:
      raise ValueError(f'images are {tuple(image.shape[1:])}; the CycleGAN is configured for '
                       f'{shape} (config.model image_size, channels)')
    if halves and image.shape[0] % 2:
      raise ValueError(f'a batch of {image.shape[0]} images does not split into halves '
                       f'of domain A and domain B; use an even batch size')
    return image

  def domains(batch):
    """(real a, real b) in [-1, 1]: the first half as it is, the second half thickened."""
    image = check(batch, halves=True)
    half = image.shape[0] // 2
    return to_unit(image[:half]), to_unit(thicken(image[half:]))

  def apply(variables, method, x):
    return model.apply({'params': variables['params']}, x, method=method)

  def init(rng, batch):
    x = to_unit(check(batch))
    variables = dict(model.init(rng, x))
    variables[POOL] = {'a': empty_pool(pool_size, shape), 'b': empty_pool(pool_size, shape)}
    return variables

  def disc_loss(variables, batch, rng):
    real_a, real_b = domains(batch)
    fake_b = jax.lax.stop_gradient(apply(variables, 'g', real_a))
    fake_a = jax.lax.stop_gradient(apply(variables, 'f', real_b))
    k_a, k_b = jax.random.split(rng)
    pool = variables[POOL]
    hist_a, pool_a = pool_query(pool['a'], fake_a, k_a)
    hist_b, pool_b = pool_query(pool['b'], fake_b, k_b)
    loss_a = lsgan_d_loss(apply(variables, 'd_a', real_a), apply(variables, 'd_a', hist_a))
    loss_b = lsgan_d_loss(apply(variables, 'd_b', real_b), apply(variables, 'd_b', hist_b))
    return loss_a + loss_b, ({'d_a': loss_a, 'd_b': loss_b},
                             {POOL: {'a': pool_a, 'b': pool_b}})

  def gen_loss(variables, batch, rng):
    del rng
    real_a, real_b = domains(batch)
    fake_b, fake_a = apply(variables, 'g', real_a), apply(variables, 'f', real_b)
    gan = (lsgan_g_loss(apply(variables, 'd_b', fake_b))
           + lsgan_g_loss(apply(variables, 'd_a', fake_a)))
    cyc = cycle_loss(real_a, apply(variables, 'f', fake_b), real_b, apply(variables, 'g', fake_a),
                     lam)
    value = gan + cyc
    metrics = {'gan': gan, 'cycle': cyc}
    if lam_idt:
      idt = identity_loss(real_a, apply(variables, 'f', real_a), real_b,
                          apply(variables, 'g', real_b), lam_idt)
      value = value + idt
      metrics['identity'] = idt
    return value, (metrics, {k: v for k, v in variables.items() if k != 'params'})

  def judge_loss(variables, batch, rng):
    image = check(batch)
    k_a, k_b = jax.random.split(rng)
    a, b = to_unit(image), to_unit(thicken(image))
    if shift:
      # zero-filled shifts of the [0, 2] image: the border stays background (-1)
      a = random_translate(a + 1.0, k_a, shift) - 1.0
      b = random_translate(b + 1.0, k_b, shift) - 1.0
    metrics, total = {}, 0.0
    for name, x in (('a', a), ('b', b)):
      logits = apply(variables, f'judge_{name}', x)
      total = total + optax.softmax_cross_entropy_with_integer_labels(
          logits, batch['label']).mean()
      metrics[f'accuracy_{name}'] = (logits.argmax(-1) == batch['label']).mean()
    return total, (metrics, {k: v for k, v in variables.items() if k != 'params'})

  def evaluate(variables, batch):
    image = check(batch)
    label = batch['label']
    a, b = to_unit(image), to_unit(thicken(image))
    g_a, f_b = apply(variables, 'g', a), apply(variables, 'f', b)
    px = lambda x: (x + 1.0) / 2.0  # pixels in [0, 1]
    err = lambda x, y: jnp.abs(px(x) - px(y)).reshape(x.shape[0], -1).mean(-1)
    ink = lambda x: px(x).reshape(x.shape[0], -1).mean(-1)
    hit = lambda judge, x: (apply(variables, judge, x).argmax(-1) == label).astype(jnp.float32)
    return {
        'acc_g_ab': hit('judge_b', g_a), 'acc_b_on_a': hit('judge_b', a),
        'acc_b_on_b': hit('judge_b', b),
        'acc_f_ba': hit('judge_a', f_b), 'acc_a_on_b': hit('judge_a', b),
        'acc_a_on_a': hit('judge_a', a),
        'cycle_a': err(apply(variables, 'f', g_a), a),
        'cycle_b': err(apply(variables, 'g', f_b), b),
        'identity_a': err(apply(variables, 'f', a), a),
        'identity_b': err(apply(variables, 'g', b), b),
        'paired_g_ab': err(g_a, b), 'paired_f_ba': err(f_b, a), 'paired_floor': err(a, b),
        'ink_a': ink(a), 'ink_b': ink(b), 'ink_g_ab': ink(g_a), 'ink_f_ba': ink(f_b),
    }

  def prompt_batch(prompts, num_samples, examples=None):
    if prompts is not None and any(len(p) for p in prompts):
      raise ConfigError('CycleGAN translates eval images and takes no prompt')
    if examples is None:
      raise ConfigError('CycleGAN samples translate eval-split images: the sampler must '
                        'pass them (Task.prompt_examples)')
    return {'image': np.asarray(examples['image'][:num_samples])}

  def sample(variables, batch, rng, *, row_ids, direction: str = 'ab', **unused):
    """One strip per eval image, x | T(x) | T'(T(x)) with grey 1-pixel gaps: direction
    'ab' shows a | G(a) | F(G(a)), 'ba' b | F(b) | G(F(b)) with b the image thickened."""
    del rng, row_ids, unused
    if direction not in ('ab', 'ba'):
      raise ConfigError(f"unknown --direction {direction!r}; valid: 'ab', 'ba'")
    image = check(batch)
    forward, back = ('g', 'f') if direction == 'ab' else ('f', 'g')
    x = to_unit(image if direction == 'ab' else thicken(image))
    there = apply(variables, forward, x)
    strip = [to_uint8(x), to_uint8(there), to_uint8(apply(variables, back, there))]
    gap = jnp.full((*image.shape[:2], 1, image.shape[3]), 128, jnp.uint8)
    return {'images': jnp.concatenate([strip[0], gap, strip[1], gap, strip[2]], axis=2)}

  phases = (('discriminators', disc_loss), ('generators', gen_loss), ('judges', judge_loss))
  return Task(init=init, loss=None, phases=phases, evaluate=evaluate,
              example_batch=lambda n: labelled_images(n, shape[:2], shape[2]),
              sample=sample, prompt_batch=prompt_batch, prompt_examples=True)
