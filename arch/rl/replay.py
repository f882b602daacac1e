"""The replay memory the off-policy agents share (DQN, DDPG, SAC): a ring buffer of
transitions held as arrays in the agent's non-param state, so checkpoints hold it and a
resumed run samples from the same memory, bit for bit.

A buffer is {'data': {field: (C, ...)}, 'index': () int32 (the next row written),
'size': () int32 (rows filled, at most C)}; the oldest rows are overwritten first.
"""

import jax
import jax.numpy as jnp


def replay_init(example: dict, capacity: int) -> dict:
  """An empty buffer for transitions shaped like `example` (one row, no leading axis)."""
  data = {k: jnp.zeros((int(capacity), *jnp.shape(v)), jnp.asarray(v).dtype)
          for k, v in example.items()}
  return {'data': data, 'index': jnp.zeros((), jnp.int32), 'size': jnp.zeros((), jnp.int32)}


def replay_add(buffer: dict, rows: dict) -> dict:
  """`buffer` with N rows (each leaf (N, ...)) written at its index, wrapping around."""
  capacity = jax.tree.leaves(buffer['data'])[0].shape[0]
  n = jax.tree.leaves(rows)[0].shape[0]
  at_N = (buffer['index'] + jnp.arange(n, dtype=jnp.int32)) % capacity
  data = jax.tree.map(lambda d, r: d.at[at_N].set(r.astype(d.dtype)), buffer['data'], rows)
  return {'data': data, 'index': (buffer['index'] + n) % capacity,
          'size': jnp.minimum(buffer['size'] + n, capacity)}


def replay_sample(buffer: dict, rng, batch_size: int) -> dict:
  """`batch_size` rows drawn uniformly, with replacement, from the filled part."""
  idx_B = jax.random.randint(rng, (batch_size,), 0, jnp.maximum(buffer['size'], 1))
  return jax.tree.map(lambda d: d[idx_B], buffer['data'])
