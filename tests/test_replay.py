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
