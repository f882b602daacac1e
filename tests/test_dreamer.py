"""Dreamer (arch/rl/dreamer.py): symlog and two-hot against direct formulas, lambda-returns
against a numpy reverse recursion, KL balancing with free bits against the KL by hand and
where its gradients go, straight-through samples with the probabilities' gradient, a prior
that does not see the observation (the posterior does), the replay streams' two rows at an
episode end, and the tiny config trained through the loop with an exact resume and its
episodes rendered."""

import jax
import jax.numpy as jnp
import numpy as np

from arch.rl import common, dreamer
from conftest import check_eight_devices, check_resumes_alike, load_config


def test_symlog_and_twohot_by_direct_formulas():
  x = np.array([-1e4, -3.5, -1.0, 0.0, 0.2, 7.0, 1e3], np.float32)
  np.testing.assert_allclose(dreamer.symlog(x), np.sign(x) * np.log(1 + np.abs(x)), rtol=1e-6)
  np.testing.assert_allclose(dreamer.symexp(dreamer.symlog(x)), x, rtol=1e-5)
  bins = dreamer.bins(41)  # spacing 1 in symlog space
  y = np.array([-20.0, -3.25, 0.0, 0.7, 5.5, 19.99, 20.0], np.float32)
  w = np.asarray(dreamer.twohot(jnp.asarray(y), bins))
  np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-6)
  assert ((w > 0).sum(-1) <= 2).all()
  # The expectation over the bins is the value itself.
  np.testing.assert_allclose(w @ np.asarray(bins), y, atol=1e-5)
  # 0.7 lies between bins 20 (0) and 21 (1): weights 0.3 and 0.7.
  np.testing.assert_allclose(w[3, 20:22], [0.3, 0.7], rtol=1e-5)
  # Outside the range: the end bin.
  assert dreamer.twohot(jnp.float32(50.0), bins)[-1] == 1
  # The head's prediction and loss: symexp of the expected bin, cross-entropy on symlog.
  logits = jax.random.normal(jax.random.key(0), (3, 41))
  p = np.asarray(jax.nn.softmax(logits))
  np.testing.assert_allclose(dreamer.twohot_mean(logits, bins),
                             np.asarray(dreamer.symexp(p @ np.asarray(bins))), rtol=1e-5)
  target = np.array([2.0, -30.0, 0.0], np.float32)
  want = -(np.asarray(dreamer.twohot(dreamer.symlog(target), bins))
           * np.log(p)).sum(-1)
  np.testing.assert_allclose(dreamer.twohot_loss(logits, target, bins), want, rtol=1e-5)


def _lambda_numpy(reward, cont, value, gamma, lam):
  h, b = reward.shape
  out = np.zeros((h, b))
  for i in range(b):
    ret = value[h, i]
    for t in reversed(range(h)):
      ret = reward[t, i] + gamma * cont[t, i] * ((1 - lam) * value[t + 1, i] + lam * ret)
      out[t, i] = ret
  return out


def test_lambda_returns_equal_the_numpy_recursion():
  rng = np.random.default_rng(0)
  h, b = 9, 4
  reward = rng.normal(size=(h, b)).astype(np.float32)
  cont = (rng.random((h, b)) > 0.2).astype(np.float32)
  value = rng.normal(size=(h + 1, b)).astype(np.float32)
  got = dreamer.lambda_returns(reward, cont, value, 0.97, 0.9)
  np.testing.assert_allclose(got, _lambda_numpy(reward, cont, value, 0.97, 0.9), rtol=1e-5,
                             atol=1e-5)
  # lambda = 1 without ends: the discounted reward sum bootstrapped from v_H; lambda = 0:
  # one-step targets r + gamma v.
  ones = np.ones_like(cont)
  got1 = dreamer.lambda_returns(reward, ones, value, 0.9, 1.0)
  disc = 0.9 ** np.arange(h)[:, None]
  np.testing.assert_allclose(got1[0], (disc * reward).sum(0) + 0.9 ** h * value[-1], rtol=1e-5)
  got0 = dreamer.lambda_returns(reward, cont, value, 0.9, 0.0)
  np.testing.assert_allclose(got0, reward + 0.9 * cont * value[1:], rtol=1e-6)


def test_kl_balance_and_free_bits_by_hand():
  """KL of 2 categoricals of 3 classes against the sum of p log(p / q); both terms clipped
  at the free nats; the dynamics term trains the prior only, the representation term the
  posterior only."""
  rng = np.random.default_rng(1)
  post = jax.nn.log_softmax(jnp.asarray(rng.normal(size=(5, 2, 3)) * 2, jnp.float32))
  prior = jax.nn.log_softmax(jnp.asarray(rng.normal(size=(5, 2, 3)) * 2, jnp.float32))
  p, q = np.exp(np.asarray(post, np.float64)), np.exp(np.asarray(prior, np.float64))
  kl = (p * (np.log(p) - np.log(q))).sum((-2, -1))
  np.testing.assert_allclose(dreamer.categorical_kl(post, prior), kl, rtol=1e-5)
  free = float(np.median(kl))
  dyn, rep = dreamer.kl_balance(post, prior, free)
  np.testing.assert_allclose(dyn, np.maximum(kl, free), rtol=1e-5)
  np.testing.assert_allclose(rep, np.maximum(kl, free), rtol=1e-5)
  grads = jax.grad(lambda a, b, w: (w * jnp.stack(dreamer.kl_balance(a, b, 0.0))).sum(),
                   argnums=(0, 1))
  g_post, g_prior = grads(post, prior, jnp.array([1.0, 0.0])[:, None])  # dyn only
  assert np.all(np.asarray(g_post) == 0) and np.abs(g_prior).max() > 0
  g_post, g_prior = grads(post, prior, jnp.array([0.0, 1.0])[:, None])  # rep only
  assert np.all(np.asarray(g_prior) == 0) and np.abs(g_post).max() > 0
  # Free bits: below the threshold no gradient at all.
  g_post, g_prior = jax.grad(lambda a, b: sum(dreamer.kl_balance(a, b, 1e3)).sum(),
                             argnums=(0, 1))(post, prior)
  assert not np.any(g_post) and not np.any(g_prior)


def test_straight_through_sample_is_one_hot_with_the_probabilities_gradient():
  logits = dreamer.unimix(jax.random.normal(jax.random.key(0), (6, 4, 5)), 0.01)
  probs = np.exp(np.asarray(logits))
  assert probs.min() >= 0.01 / 5 - 1e-7  # unimix: every class keeps 1% / K
  sample = dreamer.straight_through(jax.random.key(1), logits)
  np.testing.assert_allclose(sample.sum(-1), 1.0, rtol=1e-6)
  np.testing.assert_allclose(np.sort(np.asarray(sample), -1)[..., :-1], 0.0, atol=1e-6)
  w = jax.random.normal(jax.random.key(2), (6, 4, 5))
  g_st = jax.grad(lambda l: (w * dreamer.straight_through(jax.random.key(1), l)).sum())(logits)
  g_p = jax.grad(lambda l: (w * jnp.exp(l)).sum())(logits)
  np.testing.assert_allclose(g_st, g_p, rtol=1e-5, atol=1e-7)


def _agent_and_params():
  agent = dreamer.Agent(load_config('dreamer_cartpole.py:tiny'))
  obs = jnp.zeros((2, agent.obs_dim))
  return agent, agent.model.init(jax.random.key(0), obs)['params']


def test_the_prior_does_not_see_the_observation_and_the_posterior_does():
  """Changing the observation at step t (same keys) leaves the priors up to t unchanged and
  changes the posterior at t, and the prior of t + 1 (through z_t)."""
  agent, params = _agent_and_params()
  rng = np.random.default_rng(0)
  b, length, t = 2, 5, 2
  seq = {'obs': jnp.asarray(rng.normal(size=(b, length, agent.obs_dim)), jnp.float32),
         'action': jnp.asarray(rng.integers(0, 2, (b, length)), jnp.int32),
         'first': jnp.zeros((b, length), bool)}
  observe = jax.jit(agent.observe)
  _, prior, post = observe(params, seq, jax.random.key(3))
  seq2 = {**seq, 'obs': seq['obs'].at[:, t].add(1.5)}
  _, prior2, post2 = observe(params, seq2, jax.random.key(3))
  np.testing.assert_array_equal(prior2[:t + 1], prior[:t + 1])
  np.testing.assert_array_equal(post2[:t], post[:t])
  assert not np.allclose(post2[t], post[t]) and not np.allclose(prior2[t + 1], prior[t + 1])


def test_an_episode_end_writes_the_final_and_the_first_row():
  """CartPole with a 3-step limit, 2 environments: each vector step writes one row per
  environment, and the step that ends an episode a second one, the reset observation
  (`first`); truncation is not `terminal`. A sampled window is consecutive rows."""
  agent, params = _agent_and_params()
  agent.vec_env = common.VecEnv(agent.env, agent.env_params.replace(max_steps_in_episode=3), 2)
  state = agent.init(jax.random.key(0), {})
  carry, latent, streams = state[dreamer.ENV], state[dreamer.LATENT], state[dreamer.REPLAY]
  step = jax.jit(agent.env_step, static_argnums=5)
  for i in range(4):
    carry, latent, streams, tr = step(params, carry, latent, streams, jax.random.key(i), True)
    assert bool(tr['done'].all()) == (i == 2)
  # rows: first, 3 steps (the last the final observation reached), first, 1 step
  np.testing.assert_array_equal(streams['size'], [6, 6])
  d = jax.tree.map(np.asarray, streams['data'])
  np.testing.assert_array_equal(d['first'][:6, 0], [1, 0, 0, 0, 1, 0])
  np.testing.assert_array_equal(d['reward'][:6, 0], [0, 1, 1, 1, 0, 1])
  assert not d['terminal'].any()
  # The final row continues the episode's motion (x moves by dt * x_dot), the next is a reset.
  np.testing.assert_allclose(d['obs'][3, :, 0], d['obs'][2, :, 0] + 0.02 * d['obs'][2, :, 1],
                             rtol=1e-5)
  window = dreamer.streams_sample(streams, jax.random.key(5), 16, 4)
  assert window['first'].shape == (16, 4)
  # every window is rows k..k+3 of one stream: its rewards are a slice of [0 1 1 1 0 1]
  pattern = [tuple(d['reward'][k:k + 4, 0]) for k in range(3)]
  assert all(tuple(r) in pattern for r in np.asarray(window['reward']))


def _train(workdir, **overrides):
  from train import loop
  return loop.train_and_evaluate(load_config('dreamer_cartpole.py:tiny', **overrides),
                                 str(workdir))


def test_tiny_config_trains_resumes_exactly_and_renders(tmp_path):
  """4 steps (updates from the first: learning starts after 8 environment steps) with
  checkpoints at 2 and 4; the step-2 checkpoint alone resumes to the same metrics and the
  same step-4 state (params of the three groups, optimizers, environments, latents,
  streams, slow critic, return percentiles), bitwise. The sampler's episodes render."""
  result = _train(tmp_path / 'straight')
  assert set(result) == {'return', 'return_min'} and 1 <= result['return'] <= 500
  straight, abstract, states = check_resumes_alike(
      'dreamer_cartpole.py:tiny', _train, tmp_path,
      ('loss', 'world/loss', 'world/kl', 'actor/loss', 'actor/entropy', 'critic/loss',
       'imag_return', 'return_scale', 'episode_return', 'updates'))
  assert all(straight[s]['updates'] == 1 for s in straight)
  assert set(abstract.extra) == {dreamer.ENV, dreamer.LATENT, dreamer.REPLAY, dreamer.SLOW,
                                 dreamer.RETNORM}
  assert set(abstract.params) == {'world', 'actor', 'critic'}
  final = states[0]
  # 8 environment steps a loop step: 2 streams of capacity 10 have wrapped.
  np.testing.assert_array_equal(final.extra[dreamer.REPLAY]['size'], [10, 10])
  # The slow critic trails the critic.
  slow, critic = jax.tree.leaves(final.extra[dreamer.SLOW]), jax.tree.leaves(final.params['critic'])
  assert any(not np.array_equal(a, b) for a, b in zip(slow, critic))

  agent = dreamer.Agent(load_config('dreamer_cartpole.py:tiny'))
  sample = jax.jit(agent.sample, static_argnames=('max_steps', 'stride', 'height', 'width'))
  out = sample({'params': final.params}, {}, jax.random.key(0), row_ids=jnp.arange(2),
               max_steps=40, stride=4, height=24, width=36)
  assert out['episodes'].shape == (2, 11, 24, 36, 3) and out['episodes'].dtype == jnp.uint8
  # CartPole pays 1 a step: the return is the length; frames move while the episode lasts.
  np.testing.assert_array_equal(out['episode_return'], out['episode_length'])
  assert (np.asarray(out['episode_length']) >= 1).all()
  assert not np.array_equal(out['episodes'][0, 0], out['episodes'][0, 1])


def test_eight_devices_give_the_same_numbers_as_one(tmp_path):
  """The agent's environments, replay and updates come from the state's keys, so 8
  simulated devices under jit train and evaluate the same agent as 1. (Under pmap it runs
  too, as the other agents' tests check for the same loop path; its compile takes minutes
  on a loaded 2-core machine, so not here.)"""
  check_eight_devices('dreamer_cartpole.py:tiny', tmp_path, ('jit',),
                      close=('loss', 'world/loss', 'world/kl', 'actor/loss', 'actor/entropy',
                             'critic/loss', 'imag_return', 'return_scale'),
                      equal=('episode_return', 'updates'), rel=1e-5, abs=1e-6)
