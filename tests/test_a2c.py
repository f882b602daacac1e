"""A2C on gymnax (arch/rl/a2c.py): the loss and its gradients against the formula on a hand
example, the lambda = 1 returns against a numpy n-step return (termination and truncation
apart), one gradient step per rollout, option errors, the running observation statistics
against numpy, and the tiny config trained through the loop with an exact resume and the
same numbers on 8 simulated devices as on 1 (on Acrobot, with normalised observations); PPO's
Acrobot config trained and resumed the same way, and on 8 devices (PPO's only such check)."""


import flax.linen as nn
import jax
import numpy as np
import pytest

from arch.rl import a2c, common
from conftest import check_eight_devices, check_resumes_alike, load_config
from train.errors import UserError



def test_loss_and_gradients_equal_the_formula_by_hand():
  """L = -mean log pi(a|s) A + c_v mean (R - V)^2 - c_e mean S on three samples, and its
  gradients: d/dlogits = -(onehot(a) - pi) A / B - c_e dS/dlogits, d/dV = -2 c_v (R - V) / B;
  none reach the advantages or returns."""
  logits = np.array([[0.0, 1.0, -1.0], [2.0, 0.0, 0.0], [0.5, 0.5, 0.5]], np.float32)
  value = np.array([1.0, -0.5, 2.0], np.float32)
  action = np.array([1, 2, 0], np.int32)
  adv = np.array([1.5, -2.0, 0.25], np.float32)
  ret = np.array([2.0, 0.5, 1.0], np.float32)
  vf, ent = 0.5, 0.01
  p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
  logp = np.log(p)
  entropy = -(p * logp).sum(1)
  want = (-np.mean(logp[np.arange(3), action] * adv) + vf * np.mean((ret - value) ** 2)
          - ent * entropy.mean())
  loss, metrics = a2c.a2c_loss(logits, value, action, adv, ret, vf, ent)
  np.testing.assert_allclose(loss, want, rtol=1e-6)
  np.testing.assert_allclose(metrics['value_loss'], np.mean((ret - value) ** 2), rtol=1e-6)
  np.testing.assert_allclose(metrics['entropy'], entropy.mean(), rtol=1e-6)

  grads = jax.grad(lambda lg, v, ad, r: a2c.a2c_loss(lg, v, action, ad, r, vf, ent)[0],
                   argnums=(0, 1, 2, 3))(logits, value, adv, ret)
  onehot = np.eye(3)[action]
  # dS/dlogits_k = -p_k (log p_k + S) for the entropy S = -sum p log p.
  d_entropy = -p * (logp + entropy[:, None])
  np.testing.assert_allclose(grads[0], -(onehot - p) * adv[:, None] / 3 - ent * d_entropy / 3,
                             rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(grads[1], -2 * vf * (ret - value) / 3, rtol=1e-6)
  np.testing.assert_array_equal(grads[2], 0)
  np.testing.assert_array_equal(grads[3], 0)


def _n_step_returns(rewards, next_values, terminated, done, gamma):
  """Each step's discounted rewards up to its episode's end or the rollout's, plus gamma^k V
  of the state reached there unless the episode terminated (Mnih et al. 2016, Algorithm S3)."""
  t_max, n = rewards.shape
  out = np.zeros((t_max, n))
  for i in range(n):
    for t in range(t_max):
      ret, k = 0.0, t
      while True:
        ret += gamma ** (k - t) * rewards[k, i]
        if done[k, i] or k == t_max - 1:
          if not terminated[k, i]:
            ret += gamma ** (k - t + 1) * next_values[k, i]
          break
        k += 1
      out[t, i] = ret
  return out


def test_lambda_one_returns_are_n_step_returns():
  """common.gae with lambda = 1 on a rollout whose next values chain (V(s'_t) = V(s_t+1)
  inside an episode, as in a real rollout) gives every step's n-step return."""
  rng = np.random.default_rng(1)
  t, n = 7, 4
  rewards = rng.normal(size=(t, n)).astype(np.float32)
  values = rng.normal(size=(t, n)).astype(np.float32)
  next_values = rng.normal(size=(t, n)).astype(np.float32)
  terminated = rng.random((t, n)) < 0.2
  truncated = (rng.random((t, n)) < 0.2) & ~terminated
  done = terminated | truncated
  assert terminated.any() and truncated.any()
  next_values[:-1] = np.where(done[:-1], next_values[:-1], values[1:])
  adv, ret = common.gae(rewards, values, next_values, terminated, done, 0.95, 1.0)
  want = _n_step_returns(rewards, next_values, terminated, done, 0.95)
  np.testing.assert_allclose(ret, want, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(adv, want - values, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('spec', ['a2c_cartpole.py:tiny', 'a2c_acrobot.py:tiny'])
def test_one_gradient_step_per_rollout_on_the_collected_samples(spec):
  """The loop step equals collect() with the step's key, then one update of the config's
  optimizer with the gradient of the loss on those samples (computed here by hand); with
  normalised observations (Acrobot) the statistics the rollout updated are the new state's."""
  import optax
  from train import core
  from train import steps as steps_lib
  config = load_config(spec)
  task = core.load_task(config)
  agent = a2c.Agent(config)
  tx, schedule = core.make_tx(config, task)
  state = nn.meta.unbox(jax.jit(core.make_init_fn(config, task, tx))(jax.random.key(0)))
  new, _ = jax.jit(steps_lib.make_train_step(config, task, tx, schedule))(state, {})

  kept = {k: v for k, v in state.extra.items() if k in (a2c.ENV, a2c.OBS_NORM)}
  assert (a2c.OBS_NORM in kept) == ('acrobot' in spec)

  @jax.jit
  def by_hand(state):
    rollout_state, samples, _ = agent.collect(state.params, kept, steps_lib.step_rng(state))
    grads = jax.grad(lambda p: agent.loss({'params': p}, samples, None)[0])(state.params)
    updates, _ = tx.update(grads, state.opt_state, state.params)
    return optax.apply_updates(state.params, updates), rollout_state

  params, rollout_state = by_hand(state)
  assert set(rollout_state) == set(kept)
  for a, b in zip(jax.tree.leaves((params, rollout_state)),
                  jax.tree.leaves((new.params, {k: new.extra[k] for k in kept})), strict=True):
    # (normalising fuses differently in and out of the loop's step: 3e-6 apart on Acrobot)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  assert int(new.step) == 1
  if a2c.OBS_NORM in kept:  # each acted-on observation joined the statistics once
    n = config.task_kwargs.num_envs * config.task_kwargs.num_steps
    np.testing.assert_allclose(new.extra[a2c.OBS_NORM]['count'], 1e-4 + n, rtol=1e-6)


def test_running_observation_statistics_equal_numpy():
  """Statistics merged batch by batch (Chan et al.) equal numpy's mean and variance of all
  the observations at once; normalising divides by sqrt(var + 1e-8) and clips."""
  rng = np.random.default_rng(0)
  batches = [rng.normal(3.0, 2.0, size=(n, 6)).astype(np.float32) for n in (5, 16, 16, 3)]
  first = batches[0]
  stats = {'mean': first.mean(0), 'var': first.var(0), 'count': np.float32(len(first))}
  for batch in batches[1:]:
    stats = a2c.update_obs_stats(stats, batch)
  everything = np.concatenate(batches)
  np.testing.assert_allclose(stats['mean'], everything.mean(0), rtol=1e-5)
  np.testing.assert_allclose(stats['var'], everything.var(0), rtol=1e-5)
  assert float(stats['count']) == len(everything)
  # From the initial statistics (mean 0, variance 1, count 1e-4) the prior weighs 1e-4.
  start = a2c.update_obs_stats(a2c.init_obs_stats((6,)), everything)
  np.testing.assert_allclose(start['mean'], everything.mean(0), rtol=1e-4)
  obs = np.array([[0.0, 100.0, -100.0, 3.0, 1.0, 5.0]], np.float32)
  want = np.clip((obs - stats['mean']) / np.sqrt(stats['var'] + 1e-8), -10, 10)
  np.testing.assert_allclose(a2c.normalize_obs(stats, obs, 10.0), want, rtol=1e-6)
  assert np.abs(want).max() == 10


def test_normalised_agent_acts_on_frozen_statistics_in_eval_and_sample():
  """With `normalize_obs`, evaluation and `train.sample` act on observations normalised by
  the run's statistics (not raw ones), and the sampler keeps its options."""
  from train import core
  config = load_config('a2c_acrobot.py:tiny')
  task = core.load_task(config)
  agent = a2c.Agent(config)
  variables = jax.jit(agent.init)(jax.random.key(0), {})
  stats = {'mean': np.linspace(-1, 1, 6).astype(np.float32),
           'var': np.linspace(0.01, 4, 6).astype(np.float32), 'count': np.float32(10)}
  variables = {**variables, a2c.OBS_NORM: stats}
  obs = np.random.default_rng(0).normal(size=(16, 6)).astype(np.float32)
  act = agent.act(agent._policy(variables), greedy=True)
  logits = agent.model.apply({'params': variables['params']},
                             a2c.normalize_obs(stats, obs, 10.0))[0]
  np.testing.assert_array_equal(act(obs, None), logits.argmax(-1))
  result = jax.jit(task.evaluate_run)(variables, jax.random.key(1))
  assert -500 <= float(result['return']) <= 0
  out = jax.jit(lambda v, k: task.sample(v, {}, k, row_ids=np.arange(2), max_steps=4,
                                         stride=2, height=8, width=12))(
                                             variables, jax.random.key(2))
  assert out['episodes'].shape == (2, 3, 8, 12, 3)  # frames at steps 0, 2 and 4
  assert out['episode_return'].shape == (2,)
  # train.sample reads its flags off the signature: the wrapper keeps the renderer's.
  import inspect
  assert {'max_steps', 'stride', 'height', 'width', 'greedy'} <= set(
      inspect.signature(task.sample).parameters)


def test_option_errors_are_one_line():
  from train import core
  for overrides, match in (({'batch_size': 100}, 'num_envs x num_steps'),
                           ({'task_kwargs__env': 'Pendulum-v1'}, 'discrete actions'),
                           ({'task_kwargs__ent_coeff': 0.1}, 'did you mean ent_coef'),
                           ({'grad_accum_steps': 2}, 'grad_accum_steps=1')):
    with pytest.raises(UserError, match=match) as e:
      core.load_task(load_config('a2c_cartpole.py:tiny', **overrides))
    assert '\n' not in str(e.value)


def _train(spec, workdir, **overrides):
  from train import loop
  return loop.train_and_evaluate(load_config(spec, **overrides), str(workdir))


@pytest.mark.parametrize('spec', ['a2c_cartpole.py:tiny', 'a2c_acrobot.py:tiny',
                                  'ppo_acrobot.py:tiny'])
def test_tiny_config_trains_and_resumes_exactly(tmp_path, spec):
  """4 steps with checkpoints at 2 and 4; the step-2 checkpoint alone resumes to the same
  metrics at steps 3 and 4 and the same step-4 state (params, optimizer, environments and,
  for A2C on Acrobot, the observation statistics), bitwise. Also PPO's Acrobot config
  (arch/rl/ppo.py, tested in test_ppo.py on CartPole)."""
  result = _train(spec, tmp_path / 'straight')
  low = -500 if 'acrobot' in spec else 1
  assert set(result) == {'return', 'return_min'} and low <= result['return'] <= 500
  _, _, states = check_resumes_alike(
      spec, lambda w, **kw: _train(spec, w, **kw), tmp_path,
      ('loss', 'policy_loss', 'value_loss', 'entropy', 'episode_return', 'episodes',
       'learning_rate', 'grad_norm'))
  config = load_config(spec)
  assert config.task_kwargs.env == ('Acrobot-v1' if 'acrobot' in spec else 'CartPole-v1')
  normalized = spec.startswith('a2c_acrobot')
  assert (a2c.OBS_NORM in states[0].extra) == normalized
  if normalized:  # 4 steps of N x T observations, each counted once
    np.testing.assert_allclose(states[0].extra[a2c.OBS_NORM]['count'],
                               1e-4 + 4 * config.batch_size, rtol=1e-6)


def test_eight_devices_give_the_same_numbers_as_one(tmp_path):
  """Every device runs the same rollout (keys from the state) and the gradients are averaged
  over identical copies, so 8 simulated devices, under jit and under pmap, train as 1. On
  Acrobot's config: CartPole's path plus the observation statistics."""
  check_eight_devices('a2c_acrobot.py:tiny', tmp_path, ('jit', 'pmap'), steps=3,
                     close=('loss', 'policy_loss', 'value_loss', 'entropy', 'grad_norm'),
                     equal=('episode_return', 'episodes'))


def test_ppo_on_eight_devices_gives_the_same_numbers_as_one(tmp_path):
  """PPO (arch/rl/ppo.py; its own tests train on one device): the same rollout on every
  device and the same minibatch permutation, so 8 simulated devices train as 1 under jit
  and under pmap, on its Acrobot config."""
  check_eight_devices('ppo_acrobot.py:tiny', tmp_path, ('jit', 'pmap'), steps=3,
                      close=('loss', 'policy_loss', 'value_loss', 'entropy', 'approx_kl'),
                      equal=('episode_return', 'episodes'))
