"""DQN on gymnax (arch/rl/dqn.py): the ring buffer against a numpy ring, the (double) TD
target and the losses against numpy on hand examples, the epsilon schedule, a target network
that stays frozen between syncs and equals the online params right after one, truncated
transitions stored as non-terminal, and the tiny config trained through the loop with an
exact resume (replay memory included) and the same numbers on 8 simulated devices as on 1."""


import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arch.rl import dqn
from arch.rl.replay import replay_add, replay_init
from conftest import check_eight_devices, check_resumes_alike, load_config
from train.errors import UserError



def test_td_targets_equal_numpy_on_a_hand_example():
  """Rows where the online and target argmax disagree: double DQN evaluates the online
  argmax with the target network, DQN takes the target's max; termination cuts the future,
  nothing else does."""
  q_target = np.array([[1.0, 5.0, 2.0], [4.0, 0.0, 3.0], [2.0, 2.5, -1.0]], np.float32)
  q_online = np.array([[9.0, 0.0, 1.0], [0.0, 0.0, 7.0], [0.0, 1.0, 0.0]], np.float32)
  reward = np.array([1.0, -1.0, 0.5], np.float32)
  terminated = np.array([0.0, 0.0, 1.0], np.float32)
  gamma = 0.9
  # numpy: double picks a* = argmax online = (0, 2, 1) -> target values (1, 3, 2.5)
  a_star = q_online.argmax(1)
  want_double = reward + gamma * (1 - terminated) * q_target[np.arange(3), a_star]
  want_plain = reward + gamma * (1 - terminated) * q_target.max(1)
  np.testing.assert_allclose(want_double, [1.9, 1.7, 0.5], rtol=1e-6)
  np.testing.assert_allclose(want_plain, [5.5, 2.6, 0.5], rtol=1e-6)
  got_double = dqn.td_target(q_target, q_online, reward, terminated, gamma, True)
  got_plain = dqn.td_target(q_target, q_online, reward, terminated, gamma, False)
  np.testing.assert_allclose(got_double, want_double, rtol=1e-6)
  np.testing.assert_allclose(got_plain, want_plain, rtol=1e-6)


def test_losses_and_epsilon_schedule_by_hand():
  err = np.array([0.5, -2.0, 3.0, -0.25], np.float32)
  np.testing.assert_allclose(dqn.td_loss(err, 'mse'), np.mean(err ** 2), rtol=1e-6)
  # Huber: 0.5 e^2 inside |e| <= 1, |e| - 0.5 outside
  np.testing.assert_allclose(dqn.td_loss(err, 'huber'),
                             np.mean([0.125, 1.5, 2.5, 0.03125]), rtol=1e-6)
  eps = [float(dqn.epsilon(t, 1.0, 0.05, 100)) for t in (0, 50, 100, 1000)]
  np.testing.assert_allclose(eps, [1.0, 0.525, 0.05, 0.05], rtol=1e-6)


def _tiny_state_and_step(**overrides):
  from train import core
  from train import steps as steps_lib
  config = load_config('dqn_cartpole.py:tiny', **overrides)
  task = core.load_task(config)
  tx, schedule = core.make_tx(config, task)
  state = nn.meta.unbox(jax.jit(core.make_init_fn(config, task, tx))(jax.random.key(0)))
  step = jax.jit(steps_lib.make_train_step(config, task, tx, schedule))
  return config, state, step


def test_target_network_frozen_between_syncs_and_equal_after_one():
  """One iteration per loop step, learning from the first, a copy every 3 updates: the
  target keeps its values for two steps while the online params move, and equals them
  bitwise on steps 3 and 6."""
  config, state, step = _tiny_state_and_step(task_kwargs__num_steps=1,
                                             task_kwargs__learning_starts=1,
                                             task_kwargs__target_every=3)
  assert config.batch_size == 2
  leaves = lambda tree: [np.asarray(x) for x in jax.tree.leaves(tree)]
  init = leaves(state.params)
  np.testing.assert_equal(leaves(state.extra[dqn.TARGET]['params']), init)
  for i in range(1, 8):
    before_target, before_params = (leaves(state.extra[dqn.TARGET]['params']),
                                    leaves(state.params))
    state, metrics = step(state, {})
    assert float(metrics['finite']) == 1 and float(metrics['grad_norm']) > 0
    online, target = leaves(state.params), leaves(state.extra[dqn.TARGET]['params'])
    assert int(state.extra[dqn.TARGET]['updates']) == i
    assert any((a != b).any() for a, b in zip(online, before_params))
    if i % 3 == 0:
      np.testing.assert_equal(target, online)
    else:
      np.testing.assert_equal(target, before_target)
      assert any((a != b).any() for a, b in zip(target, online))


def test_no_update_before_learning_starts_and_truncation_stored_as_non_terminal():
  """Before `learning_starts` the params stay put while the memory fills. With a 3-step
  time limit and actions that keep the pole up, every transition is non-terminal and the
  third of each episode stores the state reached (not the reset one) as s'."""
  from arch.rl import common
  config, state, step = _tiny_state_and_step(task_kwargs__learning_starts=1000)
  new, metrics = step(state, {})
  for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(state.params), strict=True):
    np.testing.assert_array_equal(a, b)
  assert int(new.extra[dqn.REPLAY]['size']) == 8 and float(metrics['loss']) == 0
  agent = dqn.Agent(load_config('dqn_cartpole.py:tiny'))
  agent.vec_env = common.VecEnv(agent.env, agent.env_params.replace(max_steps_in_episode=3),
                                2)
  carry = agent.vec_env.reset(jax.random.key(0))
  replay = replay_init({k: v[0] for k, v in state.extra[dqn.REPLAY]['data'].items()}, 24)

  @jax.jit
  def act_and_store(carry, replay, t):
    action = jnp.full((2,), t % 2, jnp.int32)
    new, tr = agent.vec_env.step(carry, action, jax.random.key(t))
    replay = replay_add(replay, {'obs': carry['obs'], 'action': action,
                                     'reward': tr['reward'], 'next_obs': tr['final_obs'],
                                     'terminated': tr['terminated']})
    return new, replay, tr['truncated']

  for t in range(6):
    carry, replay, truncated = act_and_store(carry, replay, t)
    assert bool(truncated.all()) == (t % 3 == 2)
  assert not np.asarray(replay['data']['terminated'][:12]).any()
  # Slots 4, 5 hold the truncated step: s' continues s (x moves by dt * x_dot), not a reset.
  memory = replay['data']
  np.testing.assert_allclose(memory['next_obs'][4:6, 0],
                             memory['obs'][4:6, 0] + 0.02 * memory['obs'][4:6, 1], rtol=1e-5)
  assert not np.allclose(memory['next_obs'][4:6], memory['obs'][6:8])


def test_option_errors_are_one_line():
  from train import core
  for overrides, match in (({'task_kwargs__loss': 'l1'}, 'valid: mse, huber'),
                           ({'batch_size': 100}, 'num_envs x num_steps'),
                           ({'task_kwargs__env': 'Pendulum-v1'}, 'continuous actions'),
                           ({'task_kwargs__dobule': True}, 'did you mean double'),
                           ({'task_kwargs__target_every': 0}, 'must be >= 1')):
    with pytest.raises(UserError, match=match) as e:
      core.load_task(load_config('dqn_cartpole.py:tiny', **overrides))
    assert '\n' not in str(e.value)


def _train(workdir, **overrides):
  from train import loop
  return loop.train_and_evaluate(load_config('dqn_cartpole.py:tiny', **overrides),
                                 str(workdir))


def test_tiny_config_trains_and_resumes_exactly(tmp_path):
  """4 steps with checkpoints at 2 and 4 (double DQN; the plain target runs in the
  8-device test); the step-2 checkpoint alone resumes to the same metrics at steps 3 and 4
  and the same step-4 state (params, optimizer, target network, replay memory,
  environments), bitwise."""
  result = _train(tmp_path / 'straight', task_kwargs__double=True)
  assert set(result) == {'return', 'return_min'} and 1 <= result['return'] <= 500
  straight, abstract, states = check_resumes_alike(
      'dqn_cartpole.py:tiny', _train, tmp_path,
      ('loss', 'q_value', 'td_error', 'epsilon', 'buffer_size', 'episode_return', 'episodes',
       'learning_rate', 'grad_norm'), task_kwargs__double=True)
  assert straight[2]['buffer_size'] == 16 and straight[4]['buffer_size'] == 24
  assert set(abstract.extra) == {dqn.ENV, dqn.REPLAY, dqn.TARGET}
  # The memory wrapped (32 transitions into 24 slots); learning started at the 8th
  # environment step (the last iteration of step 1), then one update per iteration.
  assert int(states[0].extra[dqn.REPLAY]['index']) == 8
  assert int(states[0].extra[dqn.TARGET]['updates']) == 1 + 3 * 4


def test_eight_devices_give_the_same_numbers_as_one(tmp_path):
  """Every device acts, stores and samples alike (keys from the state), so 8 simulated
  devices, under jit and under pmap, train the same agent as 1: the same losses, replay
  statistics and eval return."""
  check_eight_devices('dqn_cartpole.py:tiny', tmp_path, ('jit', 'pmap'), steps=3,
                     close=('loss', 'q_value', 'td_error', 'grad_norm'),
                     equal=('episode_return', 'episodes', 'buffer_size', 'epsilon'))
