"""DDPG on gymnax (arch/rl/ddpg.py, arch/rl/continuous.py): the networks and the TD target
against numpy (truncation bootstrapped, termination not), Polyak targets after each update,
each phase moving only its own network, the replay ring against a numpy model, option
errors, and the tiny config trained through the loop with an exact resume (replay buffer,
environments and targets included) and the same numbers on 8 simulated devices.

The helpers `setup`, `check_trains_and_resumes` and `check_eight_devices` serve
tests/test_sac.py too."""

import functools

import flax.linen as nn
import jax
import numpy as np
import pytest

from arch.rl import continuous, ddpg
from conftest import (check_eight_devices, check_resumes_alike, load_config,
                      restored_states)
from train.errors import UserError



@functools.lru_cache(maxsize=None)
def setup(spec, **overrides):
  """(config, agent, tx, schedule, initial state) of configs/<spec> (cached: tests share
  one build and never modify it in place)."""
  from train import core
  config = load_config(spec, **overrides)
  task = core.load_task(config)
  module = {'rl.ddpg': ddpg}.get(config.task)
  if module is None:
    from arch.rl import sac as module
  agent = module.Agent(config)
  tx, schedule = core.make_tx(config, task)
  state = nn.meta.unbox(jax.jit(core.make_init_fn(config, task, tx))(jax.random.key(0)))
  return config, agent, tx, schedule, state


def builders(config, tx, schedule):
  from train import steps as steps_lib
  return steps_lib.Builders(config, tx, schedule)


def random_minibatch(rng, b, terminated=None):
  obs = rng.normal(size=(b, 3)).astype(np.float32)
  return {'obs': obs, 'action': rng.uniform(-1, 1, (b, 1)).astype(np.float32),
          'reward': rng.normal(size=(b,)).astype(np.float32),
          'next_obs': rng.normal(size=(b, 3)).astype(np.float32),
          'terminated': np.zeros((b,), bool) if terminated is None else terminated}


def _mlp_numpy(p, x):
  """The ReLU trunk and linear head, one layer at a time."""
  for i in range(len(p['trunk'])):
    layer = p['trunk'][f'hidden_{i}']
    x = np.maximum(x @ np.asarray(layer['kernel']) + np.asarray(layer['bias']), 0.0)
  return x


def actor_numpy(p, obs):
  h = _mlp_numpy(p, obs)
  return np.tanh(h @ np.asarray(p['out']['kernel']) + np.asarray(p['out']['bias']))


def critic_numpy(p, obs, action):
  """(K, B): each critic on [obs, action] with its own slice of the stacked params."""
  out = []
  for k in range(np.shape(p['q']['out']['bias'])[0]):
    pk = jax.tree.map(lambda x, k=k: np.asarray(x)[k], p['q'])
    h = _mlp_numpy(pk, np.concatenate([obs, action], -1))
    out.append((h @ pk['out']['kernel'] + pk['out']['bias'])[:, 0])
  return np.stack(out)


def test_networks_and_td_target_equal_numpy():
  """mu and Q by hand, and y = r + gamma (1 - terminated) Q'(s', mu'(s')) with the targets
  (set apart from the online networks): the terminated rows take no bootstrap, the others
  (truncated or running) do."""
  config, agent, _, _, state = setup('ddpg_pendulum.py:tiny')
  rng = np.random.default_rng(0)
  mb = random_minibatch(rng, 6, terminated=np.array([0, 1, 0, 1, 0, 0], bool))
  params = state.params
  np.testing.assert_allclose(agent.mu(params, mb['obs']),
                             actor_numpy(params['actor'], mb['obs']), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(agent.q(params, mb['obs'], mb['action']),
                             critic_numpy(params['critic'], mb['obs'], mb['action'])[0],
                             rtol=1e-5, atol=1e-6)
  target = jax.tree.map(lambda x: x + 0.1 * rng.normal(size=x.shape).astype(np.float32),
                        state.extra[continuous.TARGET])
  y = agent.td_target({'params': params, continuous.TARGET: target}, mb)
  q_next = critic_numpy(target['critic'], mb['next_obs'],
                        actor_numpy(target['actor'], mb['next_obs']))[0]
  want = mb['reward'] + 0.99 * (1.0 - mb['terminated']) * q_next
  np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(np.asarray(y)[[1, 3]], mb['reward'][[1, 3]])


def test_polyak_formula():
  rng = np.random.default_rng(1)
  target = {'a': rng.normal(size=(3, 4)), 'b': {'c': rng.normal(size=(5,))}}
  online = jax.tree.map(lambda x: x + rng.normal(size=x.shape), target)
  got = continuous.polyak(target, online, 0.05)
  for g, t, o in zip(jax.tree.leaves(got), jax.tree.leaves(target), jax.tree.leaves(online)):
    np.testing.assert_allclose(g, 0.05 * o + 0.95 * t, rtol=1e-12)
  np.testing.assert_array_equal(jax.tree.leaves(continuous.polyak(target, online, 1.0))[0],
                                jax.tree.leaves(online)[0])


def test_each_phase_moves_only_its_network():
  config, agent, tx, schedule, state = setup('ddpg_pendulum.py:tiny')
  mb = random_minibatch(np.random.default_rng(2), 8)
  b = builders(config, tx, schedule)
  for group, loss in agent.phases():
    new, _ = jax.jit(b.phased(((group, loss),)))(state, mb, jax.random.key(0))
    for name in ('actor', 'critic'):
      moved = any(not np.array_equal(x, y) for x, y in zip(
          jax.tree.leaves(new.params[name]), jax.tree.leaves(state.params[name])))
      assert moved == (name == group), (group, name)


def check_polyak_in_step(spec):
  """One loop step of one environment step and one update (learning from the start):
  the targets end at tau online' + (1 - tau) target, online' the updated networks."""
  from train import steps as steps_lib
  config, agent, tx, schedule, state = setup(spec, task_kwargs__num_envs=1,
                                             task_kwargs__num_steps=1,
                                             task_kwargs__learning_starts=0)
  step = jax.jit(steps_lib.make_train_step(config, agent.task(), tx, schedule))
  old_target = jax.device_get(state.extra[continuous.TARGET])
  new, metrics = step(state, {})
  assert float(metrics['updates']) == 1
  tau = config.task_kwargs.tau
  for group in agent.target_groups:
    for t_new, t_old, online, before in zip(
        *(jax.tree.leaves(x) for x in (new.extra[continuous.TARGET][group], old_target[group],
                                        new.params[group], state.params[group]))):
      np.testing.assert_allclose(t_new, tau * np.asarray(online) + (1 - tau) * t_old,
                                 rtol=1e-6, atol=1e-7)
    assert not all(np.array_equal(a, b) for a, b in zip(
        jax.tree.leaves(new.params[group]), jax.tree.leaves(state.params[group])))


def test_targets_follow_polyak_in_the_step():
  check_polyak_in_step('ddpg_pendulum.py:tiny')


def test_option_errors_are_one_line():
  from train import core
  for overrides, match in (({'batch_size': 100}, 'num_envs x num_steps'),
                           ({'task_kwargs__env': 'CartPole-v1'}, 'discrete actions'),
                           ({'task_kwargs__buffer_size': 1}, 'must hold one vector step'),
                           ({'task_kwargs__exploration_nois': 0.2},
                            r'did you mean exploration_noise'),
                           ({'task_kwargs__exploration_noise': -1.0}, '>= 0')):
    with pytest.raises(UserError, match=match) as e:
      core.load_task(load_config('ddpg_pendulum.py:tiny', **overrides))
    assert '\n' not in str(e.value)


def _train(spec, workdir, **overrides):
  from train import loop
  return loop.train_and_evaluate(load_config(spec, **overrides), str(workdir))


def check_trains_and_resumes(spec, tmp_path, metric_names):
  """4 steps (the buffer of 12 fills and wraps: 8 transitions a step) with checkpoints
  at 2 and 4; the step-2 checkpoint alone resumes to the same metrics at steps 3 and 4 and
  the same step-4 state, replay buffer, environments and targets included, bitwise."""
  result = _train(spec, tmp_path / 'straight')
  assert set(result) == {'return', 'return_min'} and -2000 < result['return'] <= 0
  straight, abstract, states = check_resumes_alike(
      spec, lambda w, **kw: _train(spec, w, **kw), tmp_path, metric_names)
  # learning_starts = 8 of 8 transitions a step: 1 update in step 1, then 4 a step.
  assert [straight[s]['updates'] for s in (1, 2, 3, 4)] == [1, 4, 4, 4]
  assert set(abstract.extra) == {continuous.ENV, continuous.REPLAY, continuous.TARGET}
  replay = states[0].extra[continuous.REPLAY]
  assert int(replay['size']) == 12 and int(replay['index']) == 32 % 12
  mid = restored_states(abstract, [tmp_path / 'straight'], 2)[0].extra[continuous.REPLAY]
  assert not np.array_equal(mid['data']['obs'], replay['data']['obs'])


def test_tiny_config_trains_and_resumes_exactly(tmp_path):
  check_trains_and_resumes('ddpg_pendulum.py:tiny', tmp_path,
                           ('loss', 'critic/loss', 'critic/q', 'critic/target', 'actor/loss',
                            'episode_return', 'episodes', 'updates', 'learning_rate'))


def check_off_policy_on_eight(spec, tmp_path, modes):
  """The tiny config's losses, episode returns and eval return on 8 simulated devices equal
  those on 1: bitwise under jit, to rounding under pmap."""
  check_eight_devices(spec, tmp_path, modes, close=('loss', 'critic/loss', 'actor/loss',
                                                    'episode_return'),
                      rel=1e-4, abs=1e-5, bitwise_jit=True)


def test_eight_devices_give_the_same_numbers(tmp_path):
  check_off_policy_on_eight('ddpg_pendulum.py:tiny', tmp_path, ('pmap',))  # jit: test_sac.py
