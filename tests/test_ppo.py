"""PPO on gymnax (arch/rl/ppo.py, arch/rl/common.py): GAE against a numpy reverse
recursion, time-limit truncation kept apart from termination, the clipped objectives by
hand, a ratio of exactly 1 before the first update, option errors, and the tiny config
trained through the loop with an exact resume (environments, episodes and keys included)."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arch.rl import common, ppo
from conftest import check_resumes_alike, load_config
from train.errors import UserError



def _gae_numpy(rewards, values, next_values, terminated, done, gamma, lam):
  """The textbook recursion, one environment and one step at a time."""
  t_max, n = rewards.shape
  adv = np.zeros((t_max, n))
  for i in range(n):
    running = 0.0
    for t in reversed(range(t_max)):
      delta = rewards[t, i] + gamma * (1 - terminated[t, i]) * next_values[t, i] - values[t, i]
      running = delta + gamma * lam * (1 - done[t, i]) * running
      adv[t, i] = running
  return adv, adv + values


def test_gae_equals_the_numpy_reverse_recursion():
  """Random rewards and values, episodes ending by termination and by truncation (done
  without terminated: bootstrapped, but the sum stops there)."""
  rng = np.random.default_rng(0)
  t, n = 13, 5
  rewards = rng.normal(size=(t, n)).astype(np.float32)
  values = rng.normal(size=(t, n)).astype(np.float32)
  next_values = rng.normal(size=(t, n)).astype(np.float32)
  terminated = rng.random((t, n)) < 0.15
  truncated = (rng.random((t, n)) < 0.15) & ~terminated
  done = terminated | truncated
  assert terminated.any() and truncated.any()
  got_adv, got_ret = jax.jit(common.gae, static_argnums=(5, 6))(
      rewards, values, next_values, terminated, done, 0.97, 0.9)
  want_adv, want_ret = _gae_numpy(rewards, values, next_values, terminated, done, 0.97, 0.9)
  np.testing.assert_allclose(got_adv, want_adv, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(got_ret, want_ret, rtol=1e-5, atol=1e-5)
  # lambda = 1 without episode ends: the discounted sum of rewards bootstrapped at the end
  # (the deltas telescope when V(s'_t) = V(s_t+1)).
  chained = np.concatenate([values[1:], next_values[-1:]])
  adv, _ = common.gae(rewards, values, chained, np.zeros_like(done), np.zeros_like(done),
                      0.9, 1.0)
  disc = 0.9 ** np.arange(t)[:, None]
  want0 = (disc * rewards).sum(0) + 0.9 ** t * next_values[-1] - values[0]
  np.testing.assert_allclose(adv[0], want0, rtol=1e-5, atol=1e-5)


def test_truncation_is_not_termination():
  """CartPole with a 3-step limit: step 3 is truncated (not terminated), the environment
  has reset (new observation) and `final_obs` is the state reached; the episode's return
  is booked."""
  env, params = common.make_env('CartPole-v1')
  vec = common.VecEnv(env, params.replace(max_steps_in_episode=3), 2)
  carry = vec.reset(jax.random.key(0))
  policy = lambda obs, key: (jnp.zeros((2,), jnp.int32), {})
  carry, traj = jax.jit(lambda c, k: common.rollout(vec, policy, c, k, 5))(
      carry, jax.random.key(1))
  np.testing.assert_array_equal(traj['truncated'][:, 0], [0, 0, 1, 0, 0])
  assert not traj['terminated'].any()
  np.testing.assert_array_equal(traj['done'], traj['truncated'])
  # Before the end final_obs is the next observation (to an ulp: gymnax computes the two
  # apart); at the end it is not the reset one.
  np.testing.assert_allclose(traj['final_obs'][:2], traj['obs'][1:3], rtol=1e-6)
  assert not np.allclose(traj['final_obs'][2], traj['obs'][3])
  np.testing.assert_array_equal(traj['finished_return'][:, 0], [0, 0, 3, 0, 0])
  np.testing.assert_array_equal(carry['last_return'], [3, 3])
  np.testing.assert_array_equal(carry['episode_return'], [2, 2])
  stats = common.episode_stats(traj, carry)
  assert float(stats['episode_return']) == 3 and float(stats['episodes']) == 2


def test_clipped_surrogate_and_value_loss_by_hand():
  """Eq. (7) on four samples, one per case (ratio above / below the clip range, advantage
  positive / negative), and the clipped value loss."""
  old = np.log(np.array([0.5, 0.5, 0.5, 0.5], np.float32))
  new = np.log(np.array([0.8, 0.8, 0.3, 0.3], np.float32))  # ratios 1.6, 1.6, 0.6, 0.6
  adv = np.array([2.0, -2.0, 2.0, -2.0], np.float32)
  surrogate, ratio = ppo.clipped_surrogate(new, old, adv, 0.2)
  np.testing.assert_allclose(ratio, [1.6, 1.6, 0.6, 0.6], rtol=1e-6)
  # min(r A, clip(r) A): 1.2 * 2, 1.6 * -2, 0.6 * 2, 0.8 * -2
  want = np.mean([2.4, -3.2, 1.2, -1.6])
  np.testing.assert_allclose(surrogate, want, rtol=1e-6)
  value = np.array([1.0, 3.0], np.float32)
  old_value = np.array([0.0, 2.9], np.float32)
  ret = np.array([2.0, 0.0], np.float32)
  # sample 0: clipped value 0.2 -> max(1, 3.24); sample 1: clipped 3.0 -> max(9, 9)
  np.testing.assert_allclose(ppo.value_loss(value, old_value, ret, 0.2, True),
                             0.5 * (3.24 + 9.0) / 2, rtol=1e-6)
  np.testing.assert_allclose(ppo.value_loss(value, old_value, ret, 0.2, False),
                             0.5 * (1.0 + 9.0) / 2, rtol=1e-6)


def test_ratio_is_exactly_one_before_the_first_update():
  """The first minibatch of the first epoch is scored by the params that collected it:
  r = 1 exactly, nothing clipped, KL 0. After one library update it is not."""
  from train import core
  from train import steps as steps_lib
  config = load_config('ppo_cartpole.py:tiny')
  task = core.load_task(config)
  agent = ppo.Agent(config)
  tx, schedule = core.make_tx(config, task)
  import flax.linen as nn
  state = nn.meta.unbox(jax.jit(core.make_init_fn(config, task, tx))(jax.random.key(0)))
  update = steps_lib.Builders(config, tx, schedule).supervised(agent.loss, accum=1)

  @jax.jit
  def first_two(state, key):
    _, samples, _ = agent.collect(state.params, state.extra[ppo.ENV], key)
    mbs = agent.minibatches(samples, jax.random.fold_in(key, 0))
    first, second = (jax.tree.map(lambda x, i=i: x[i], mbs) for i in (0, 1))
    _, m0, r0 = agent.terms(state.params, first)
    after, _ = update(state.replace(extra={}), first, key)
    _, _, r1 = agent.terms(after.params, second)
    return m0, r0, r1

  m0, r0, r1 = first_two(state, jax.random.key(3))
  np.testing.assert_array_equal(r0, np.ones_like(r0))
  assert float(m0['clip_fraction']) == 0 and float(m0['approx_kl']) == 0
  assert not np.all(np.asarray(r1) == 1)


def test_option_errors_are_one_line():
  from train import core
  config = load_config('ppo_cartpole.py:tiny')
  with config.unlocked():
    config.task_kwargs.clip_epsilon = 0.1
  with pytest.raises(UserError, match=r'clip_epsilon \(did you mean clip_eps') as e:
    core.load_task(config)
  assert '\n' not in str(e.value)
  for overrides, match in (({'batch_size': 100}, 'num_envs x num_steps'),
                           ({'task_kwargs__env': 'Pendulum-v1'}, 'discrete actions'),
                           ({'task_kwargs__env': 'CartPole-v9'}, 'valid: CartPole-v1'),
                           ({'task_kwargs__minibatches': 5}, 'does not split')):
    with pytest.raises(UserError, match=match) as e:
      core.load_task(load_config('ppo_cartpole.py:tiny', **overrides))
    assert '\n' not in str(e.value)


def _train(workdir, **overrides):
  from train import loop
  return loop.train_and_evaluate(load_config('ppo_cartpole.py:tiny', **overrides),
                                 str(workdir))


def test_tiny_config_trains_and_resumes_exactly(tmp_path):
  """4 steps with checkpoints at 2 and 4; the step-2 checkpoint alone in another workdir
  resumes to the same metrics at steps 3 and 4 (episode returns included) and the same
  step-4 state (params, optimizer, environments, episode bookkeeping), bitwise."""
  result = _train(tmp_path / 'straight')
  assert set(result) == {'return', 'return_min'} and 1 <= result['return'] <= 500
  straight, abstract, states = check_resumes_alike(
      'ppo_cartpole.py:tiny', _train, tmp_path,
      ('loss', 'policy_loss', 'value_loss', 'entropy', 'approx_kl', 'clip_fraction',
       'episode_return', 'episodes', 'learning_rate'))
  assert sum(straight[s]['episodes'] for s in straight) > 0
  assert set(abstract.extra[ppo.ENV]) == {'env', 'obs', 'episode_return', 'episode_length',
                                          'last_return'}
  # The environments moved on from their initial state.
  from train import core
  config = load_config('ppo_cartpole.py:tiny')
  init = jax.jit(core.make_init_fn(config, core.load_task(config),
                                   core.make_tx(config, core.load_task(config))[0]))
  fresh = init(jax.random.key(config.seed)).extra[ppo.ENV]
  assert not np.array_equal(fresh['obs'], states[0].extra[ppo.ENV]['obs'])
