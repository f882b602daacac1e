"""Multi-layer perceptron classifier over flattened images."""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

Dtype = str | jnp.dtype


class Model(nn.Module):
  """Flatten, `len(hidden)` Dense+ReLU layers, then a Dense head."""
  hidden: Sequence[int] = (256, 256)
  num_classes: int = 10  # 0: return the last hidden layer (the representation)
  dropout: float = 0.0
  dtype: Dtype = 'float32'       # compute dtype
  param_dtype: Dtype = 'float32'

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    x = jnp.asarray(x, self.dtype).reshape(x.shape[0], -1)
    for i, width in enumerate(self.hidden):
      x = nn.Dense(width, dtype=self.dtype, param_dtype=self.param_dtype, name=f'hidden_{i}',
                   kernel_init=nn.with_logical_partitioning(
                       nn.initializers.lecun_normal(), ('embed', 'mlp')),
                   bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ('mlp',)))(x)
      x = nn.relu(x)
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
    if not self.num_classes:  # the representation (the last hidden layer)
      return x
    return nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype, name='head',
                    kernel_init=nn.with_logical_partitioning(
                        nn.initializers.zeros, ('mlp', 'classes')),
                    bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ('classes',)))(x)


# Named sizes.
TINY = dict(hidden=(32,))
