"""The off-policy agents' replay memory (arch/rl/replay.py) against a numpy ring."""

import jax
import jax.numpy as jnp
import numpy as np

from arch.rl.replay import replay_add, replay_init, replay_sample


def test_replay_ring_against_numpy():
  """Rows go in at the index and wrap around, oldest overwritten first; sampling draws
  only filled rows."""
  buf = replay_init({'x': jnp.zeros((2,)), 'n': jnp.zeros((), jnp.int32)}, 5)
  add = jax.jit(replay_add)
  want = np.zeros((5, 2))
  written = 0
  for rows in (3, 1, 4):
    ids = np.arange(written, written + rows)
    buf = add(buf, {'x': np.stack([ids, -ids], 1).astype(np.float32), 'n': ids})
    for i in ids:
      want[i % 5] = [i, -i]
    written += rows
    np.testing.assert_array_equal(buf['data']['x'], want)
    assert int(buf['index']) == written % 5 and int(buf['size']) == min(written, 5)
  np.testing.assert_array_equal(buf['data']['n'], [5, 6, 7, 3, 4])
  small = add(replay_init({'n': jnp.zeros((), jnp.int32)}, 100),
              {'n': jnp.arange(1, 4)})
  drawn = replay_sample(small, jax.random.key(0), 500)['n']
  assert set(np.asarray(drawn).tolist()) == {1, 2, 3}


def test_masked_add_against_a_python_ring():
  """Masked rows are dropped, the kept ones written in order; the ring wraps and keeps
  the newest C rows; `size` saturates at C."""
  capacity = 5
  buf = replay_init({'x': jnp.zeros((2,), jnp.float32)}, capacity)
  ring, cursor = [None] * capacity, 0
  rng = np.random.default_rng(0)
  add = jax.jit(replay_add)
  for m in (3, 4, 9, 2):
    rows = rng.normal(size=(m, 2)).astype(np.float32)
    keep = rng.random(m) < 0.6
    buf = add(buf, {'x': rows}, keep)
    for row in rows[keep]:
      ring[cursor % capacity] = row
      cursor += 1
    filled = min(cursor, capacity)
    assert int(buf['size']) == filled and int(buf['index']) == cursor % capacity
    for i in range(filled):
      np.testing.assert_array_equal(buf['data']['x'][i], ring[i])
  sample = replay_sample(buf, jax.random.key(0), 64)
  stored = {tuple(r) for r in np.asarray(buf['data']['x'])}
  assert all(tuple(r) in stored for r in np.asarray(sample['x']))
