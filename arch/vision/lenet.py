"""LeNet-5 (LeCun, Bottou, Bengio, Haffner 1998, "Gradient-based learning applied to
document recognition"), in the paper's 32x32-input layout.

C1 conv 6@5x5 -> S2 trainable subsampling -> C3 conv 16@5x5 with the paper's sparse
connection table (Table I) -> S4 subsampling -> C5 conv 120@5x5 -> F6 Dense 84 ->
Euclidean RBF output (fixed +-1 codes, no trainable parameters). Activations are the
paper's scaled tanh, 1.7159 * tanh(2/3 * a). Trainable parameters: exactly 60,000, as
the paper counts them (C1 156, S2 12, C3 1,516, S4 32, C5 48,120, F6 10,164).

`head='dense'` swaps the RBF output for a modern softmax Dense layer (+850 parameters).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Dtype = str | jnp.dtype

# Table I of the paper: the S2 feature maps (rows) each C3 map (index) reads.
C3_TABLE = ((0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (4, 5, 0), (5, 0, 1),
            (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (3, 4, 5, 0), (4, 5, 0, 1), (5, 0, 1, 2),
            (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5),
            (0, 1, 2, 3, 4, 5))


def scaled_tanh(x):
  return 1.7159 * jnp.tanh(x * (2.0 / 3.0))


def rbf_codes(num_classes: int, width: int) -> np.ndarray:
  """Fixed +-1 RBF centres (the paper hand-drew 7x12 bitmaps; any well-separated code works)."""
  return np.random.default_rng(1998).choice([-1.0, 1.0], size=(num_classes, width))


def _init(axes, init=nn.initializers.lecun_normal()):
  return nn.with_logical_partitioning(init, axes)


class Subsample(nn.Module):
  """S2/S4: each map's 2x2 sum times a trainable coefficient, plus a trainable bias."""
  dtype: Dtype = 'float32'
  param_dtype: Dtype = 'float32'

  @nn.compact
  def __call__(self, x_BHWC):
    c = x_BHWC.shape[-1]
    coef = self.param('coef', _init(('conv_out',), nn.initializers.constant(0.25)), (c,),
                      self.param_dtype)
    bias = self.param('bias', _init(('conv_out',), nn.initializers.zeros), (c,), self.param_dtype)
    pooled = nn.avg_pool(x_BHWC, (2, 2), strides=(2, 2)) * 4.0  # the 2x2 sum
    return pooled * coef.astype(self.dtype) + bias.astype(self.dtype)


class SparseConv(nn.Module):
  """C3: a 5x5 VALID convolution in which output map j reads only `table[j]`'s inputs."""
  table: tuple = C3_TABLE
  kernel_size: int = 5
  dtype: Dtype = 'float32'
  param_dtype: Dtype = 'float32'

  @nn.compact
  def __call__(self, x_BHWC):
    k, cin, cout = self.kernel_size, x_BHWC.shape[-1], len(self.table)
    full = jnp.zeros((k, k, cin, cout), self.param_dtype)
    # One weight tensor per fan-in size, scattered into the dense kernel's non-zero slots.
    for fan_in in sorted({len(t) for t in self.table}):
      outs = [j for j, t in enumerate(self.table) if len(t) == fan_in]
      w = self.param(f'kernel_{fan_in}', _init((None, None, 'conv_in', 'conv_out')),
                     (k, k, fan_in, len(outs)), self.param_dtype)
      rows = np.array([self.table[j] for j in outs]).T           # (fan_in, n_out)
      cols = np.broadcast_to(np.array(outs), rows.shape)
      full = full.at[:, :, rows, cols].set(w)
    bias = self.param('bias', _init(('conv_out',), nn.initializers.zeros), (cout,),
                      self.param_dtype)
    y = jax.lax.conv_general_dilated(
        x_BHWC.astype(self.dtype), full.astype(self.dtype), (1, 1), 'VALID',
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    return y + bias.astype(self.dtype)


class Model(nn.Module):
  """LeNet-5. Takes (B, H, W, C) images with H, W >= 32 (32 is the paper's size)."""
  num_classes: int = 10  # 0: return F6's output (the representation)
  c5: int = 120
  f6: int = 84
  head: str = 'rbf'  # the paper's Euclidean RBF output, or 'dense' (softmax layer)
  dtype: Dtype = 'float32'
  param_dtype: Dtype = 'float32'

  @nn.compact
  def __call__(self, x_BHWC, *, train: bool = False):
    if x_BHWC.ndim != 4 or min(x_BHWC.shape[1:3]) < 32:
      raise ValueError(f'LeNet-5 takes (batch, H, W, C) images with H, W >= 32; '
                       f'got shape {x_BHWC.shape}')
    dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    conv = lambda n, name: nn.Conv(
        n, (5, 5), padding='VALID', name=name, **dt,
        kernel_init=_init((None, None, 'conv_in', 'conv_out')),
        bias_init=_init(('conv_out',), nn.initializers.zeros))
    x = jnp.asarray(x_BHWC, self.dtype)
    x = scaled_tanh(conv(6, 'C1')(x))                     # 28x28x6
    x = scaled_tanh(Subsample(name='S2', **dt)(x))              # 14x14x6
    x = scaled_tanh(SparseConv(name='C3', **dt)(x))             # 10x10x16
    x = scaled_tanh(Subsample(name='S4', **dt)(x))              # 5x5x16
    x = scaled_tanh(conv(self.c5, 'C5')(x))                     # 1x1x120 at 32x32 input
    x = x.mean(axis=(1, 2))                                     # identity at 32x32
    x = scaled_tanh(nn.Dense(self.f6, name='F6', **dt,
                             kernel_init=_init(('embed', 'mlp')),
                             bias_init=_init(('mlp',), nn.initializers.zeros))(x))
    if not self.num_classes:  # the representation (F6's output)
      return x
    if self.head == 'dense':
      return nn.Dense(self.num_classes, name='head', **dt,
                      kernel_init=_init(('mlp', 'classes')),
                      bias_init=_init(('classes',), nn.initializers.zeros))(x)
    if self.head != 'rbf':
      raise ValueError(f"head must be 'rbf' or 'dense', got {self.head!r}")
    codes = jnp.asarray(rbf_codes(self.num_classes, self.f6), self.dtype)
    # Logit = -squared Euclidean distance to each class's code (the paper's RBF units).
    return -jnp.sum(jnp.square(x[:, None, :] - codes[None]), axis=-1)


# Named sizes. The paper's network is the default; TINY is for tests.
PAPER = dict()
TINY = dict(c5=8, f6=12)
