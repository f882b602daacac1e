"""The replay memory the off-policy agents share (DQN, DDPG, SAC, AlphaZero): a ring buffer of
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


def replay_add(buffer: dict, rows: dict, keep_N=None) -> dict:
  """`buffer` with N rows (each leaf (N, ...)) written at its index, wrapping around; with
  `keep_N` (N,) bool only the rows where it is true, in order (a dynamic count in static
  shapes: a kept row's slot is the index plus its rank among the kept rows, a dropped
  row's slot is out of range and its write is dropped)."""
  capacity = jax.tree.leaves(buffer['data'])[0].shape[0]
  n = jax.tree.leaves(rows)[0].shape[0]
  if keep_N is None:
    at_N = (buffer['index'] + jnp.arange(n, dtype=jnp.int32)) % capacity
    count = n
  else:
    keep_N = keep_N.astype(bool)
    rank_N = jnp.cumsum(keep_N.astype(jnp.int32)) - 1
    count = keep_N.sum().astype(jnp.int32)
    # Only the last C kept rows survive one add; earlier ones would be overwritten.
    keep_N = keep_N & (rank_N >= count - capacity)
    at_N = jnp.where(keep_N, (buffer['index'] + rank_N) % capacity, capacity)
  data = jax.tree.map(lambda d, r: d.at[at_N].set(r.astype(d.dtype), mode='drop'),
                      buffer['data'], rows)
  return {'data': data, 'index': (buffer['index'] + count) % capacity,
          'size': jnp.minimum(buffer['size'] + count, capacity)}


def replay_sample(buffer: dict, rng, batch_size: int) -> dict:
  """`batch_size` rows drawn uniformly, with replacement, from the filled part."""
  idx_B = jax.random.randint(rng, (batch_size,), 0, jnp.maximum(buffer['size'], 1))
  return jax.tree.map(lambda d: d[idx_B], buffer['data'])
