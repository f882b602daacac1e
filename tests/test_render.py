"""Rendered RL episodes (arch/rl/render.py): the scenes put each body where the state says,
an episode's frames are the environment's own states held after the end, and
`python -m train.sample` on an agent's run writes the same episodes on 1 and 8 devices."""

import flax.serialization
import gymnax
import jax
import numpy as np
import pytest

from arch.rl import render
from conftest import load_config, run_sample

ACCENT = np.round(np.asarray(render.ACCENT) * 255)
INK = np.round(np.asarray(render.INK) * 255)


def _state(name, **fields):
  env, params = gymnax.make(name)
  _, state = env.reset(jax.random.key(0), params)
  d = flax.serialization.to_state_dict(state)
  return {**d, **{k: np.float32(v) for k, v in fields.items()}}, params


def _centroid(image, colour):
  """(row, column) mean of the pixels drawn in `colour` (fully covered ones)."""
  rows, cols = np.nonzero(np.all(np.abs(image.astype(float) - colour) < 2, axis=-1))
  assert len(rows), 'colour not drawn'
  return rows.mean(), cols.mean()


def test_cartpole_pole_leans_with_theta_and_the_cart_moves_with_x():
  frames = {}
  for x, theta in [(0.0, 0.0), (0.0, 0.3), (0.0, -0.3), (1.0, 0.0)]:
    state, params = _state('CartPole-v1', x=x, theta=theta)
    frames[x, theta] = np.asarray(render.frame('CartPole-v1', state, params, (96, 144)))
  pixel = 2 * 2.4 * 1.25 / 144  # world units per pixel: the width spans +-1.25 x_threshold
  upright = _centroid(frames[0, 0], ACCENT)
  assert upright[1] == pytest.approx(71.5, abs=0.6)  # on the centre column
  right, left = _centroid(frames[0, 0.3], ACCENT), _centroid(frames[0, -0.3], ACCENT)
  # The pole's midpoint moves by l sin(theta) = 0.5 sin(0.3) world units.
  assert right[1] - upright[1] == pytest.approx(0.5 * np.sin(0.3) / pixel, abs=1.0)
  assert upright[1] - left[1] == pytest.approx(0.5 * np.sin(0.3) / pixel, abs=1.0)
  cart0, cart1 = _centroid(frames[0, 0], INK), _centroid(frames[1.0, 0], INK)
  assert cart1[1] - cart0[1] == pytest.approx(1.0 / pixel, abs=0.6)
  assert cart1[0] == pytest.approx(cart0[0])


@pytest.mark.parametrize('theta, above', [(0.0, True), (np.pi, False)])
def test_pendulum_upright_at_zero(theta, above):
  state, params = _state('Pendulum-v1', theta=theta, last_u=0.0)
  image = np.asarray(render.frame('Pendulum-v1', state, params, (64, 64)))
  row, col = _centroid(image, ACCENT)
  assert (row < 31.5) == above and col == pytest.approx(31.5, abs=0.6)


def test_acrobot_hangs_down_at_zero_angles():
  state, params = _state('Acrobot-v1', joint_angle1=0.0, joint_angle2=0.0)
  image = np.asarray(render.frame('Acrobot-v1', state, params, (64, 64)))
  inner, outer = _centroid(image, INK), _centroid(image, ACCENT)
  assert 31.5 < inner[0] < outer[0]  # link 1 below the pivot, link 2 below it
  assert inner[1] == pytest.approx(31.5, abs=0.6) and outer[1] == pytest.approx(31.5, abs=0.6)


def test_unknown_environment_is_a_config_error():
  from arch.task import ConfigError
  env, params = gymnax.make('CartPole-v1')
  with pytest.raises(ConfigError, match='draws CartPole-v1'):
    render.make_sample('Breakout-MinAtar', env, params, None)


def test_episode_frames_are_the_environment_states_held_after_the_end():
  """Always pushing right: CartPole falls after a few steps. Frame k is the state after k
  of gymnax's own steps; the return and length are the episode's; later frames hold the
  final state."""
  env, params = gymnax.make('CartPole-v1')
  act = lambda obs, key: 1
  key = jax.random.key(3)
  states, ret, length = jax.jit(lambda k: render.episode(env, params, act, k, 40, 1))(key)
  k_reset, k_run = jax.random.split(key)
  _, state = env.reset(k_reset, params)
  want, n = [state], 0
  for k in jax.random.split(k_run, 40):
    _, state, reward, terminated, _ = env.step_env(jax.random.split(k)[1], state, 1, params)
    want.append(state)
    n += 1
    if terminated:
      break
  assert int(length) == n == float(ret) and 5 < n < 40
  assert states['x'].shape == (41,)
  np.testing.assert_allclose(states['theta'][:n + 1], [s.theta for s in want], rtol=1e-6)
  assert np.all(states['theta'][n:] == states['theta'][n])  # held
  strided, _, _ = render.episode(env, params, act, key, 40, 4)
  np.testing.assert_array_equal(strided['theta'], states['theta'][::4])


def test_sampler_writes_episodes_alike_on_1_and_8_devices(tmp_path, data_dir):
  """Each row's episode comes from its row id's key: 8 devices write what 1 does; another
  seed plays other episodes."""
  from train import loop
  loop.train_and_evaluate(load_config('ppo_cartpole.py:tiny', total_steps=2, eval_every=0),
                          str(tmp_path / 'run'))
  outs = {}
  for devices, seed in ((1, 0), (8, 0), (1, 1)):
    proc = run_sample(['--config', 'configs/ppo_cartpole.py:tiny', '--workdir', tmp_path / 'run',
                       '--num_samples', '3', '--stride', '4', '--max_steps', '60',
                       '--seed', str(seed)], data_dir, devices=devices)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert '3 episodes of 16 frames; returns' in proc.stdout
    stem = tmp_path / 'run' / 'samples' / f'step2_seed{seed}'
    assert stem.with_suffix('.gif').exists() and stem.with_suffix('.png').exists()
    outs[devices, seed] = dict(np.load(stem.with_suffix('.npz')))
  assert outs[1, 0]['episodes'].shape == (3, 16, 96, 144, 3)
  for k in ('episodes', 'episode_return', 'episode_length'):
    np.testing.assert_array_equal(outs[8, 0][k], outs[1, 0][k])
  assert not np.array_equal(outs[1, 1]['episodes'], outs[1, 0]['episodes'])
