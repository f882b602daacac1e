"""SAC on gymnax (arch/rl/sac.py, arch/rl/continuous.py): the tanh-squashed Gaussian's
log-probability against a numpy change of variables (and its density integrating to 1),
the temperature rising below the target entropy and falling above it, the soft TD target
by hand, Polyak targets in the step, and the tiny config trained through the loop with an
exact resume and the same numbers on 8 simulated devices (helpers from tests/test_ddpg.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arch.rl import continuous
from test_ddpg import (builders, check_off_policy_on_eight, check_polyak_in_step,
                       check_trains_and_resumes, critic_numpy, random_minibatch, setup)


def _squashed_log_density_numpy(u, mean, log_std):
  """log of N(u; mean, std^2) / |d tanh(u)/du|, a product over action dimensions."""
  std = np.exp(log_std)
  gauss = np.exp(-0.5 * ((u - mean) / std) ** 2) / (std * np.sqrt(2 * np.pi))
  return np.log(gauss / (1.0 - np.tanh(u) ** 2)).sum(-1)


def test_squashed_log_prob_is_the_change_of_variables():
  rng = np.random.default_rng(0)
  mean = rng.normal(size=(64, 3))
  log_std = rng.uniform(-2, 1, (64, 3))
  u = mean + np.exp(log_std) * rng.normal(size=(64, 3))
  got = continuous.squashed_log_prob(jnp.asarray(u, jnp.float32), jnp.asarray(mean, jnp.float32),
                                     jnp.asarray(log_std, jnp.float32))
  np.testing.assert_allclose(got, _squashed_log_density_numpy(u, mean, log_std), rtol=1e-4,
                             atol=1e-4)
  # The sample is tanh of its pre-tanh draw and its log-prob the same formula's.
  m, s = jnp.asarray(mean[:4], jnp.float32), jnp.asarray(log_std[:4], jnp.float32)
  a, logp = continuous.squashed_sample(jax.random.key(1), m, s)
  u_drawn = m + jnp.exp(s) * jax.random.normal(jax.random.key(1), m.shape)
  np.testing.assert_allclose(a, np.tanh(u_drawn), rtol=1e-6)
  np.testing.assert_allclose(logp, continuous.squashed_log_prob(u_drawn, m, s), rtol=1e-6)
  # Far in the tail, where 1 - tanh(u)^2 underflows in float32, the log stays finite and
  # follows log(1 - tanh^2 u) ~ log 4 - 2|u|.
  far = jnp.asarray([[30.0], [-30.0]])
  np.testing.assert_allclose(continuous.log_one_minus_tanh_sq(far), np.log(4) - 60.0, rtol=1e-6)


def test_squashed_density_integrates_to_one():
  """exp(log pi(a)) over a in (-1, 1) (one dimension, a grid in u = atanh a) is 1, also for
  a wide Gaussian that piles mass near the bounds; the uncorrected density is not."""
  u = np.linspace(-12, 12, 200_001, dtype=np.float64)
  a = np.tanh(u)
  for mean, log_std in ((0.3, -0.5), (-1.0, 1.0)):
    logp = np.asarray(continuous.squashed_log_prob(
        jnp.asarray(u[:, None], jnp.float32), jnp.float32(mean), jnp.float32(log_std)))
    mass = np.trapezoid(np.exp(logp), a)
    assert mass == pytest.approx(1.0, abs=2e-3), (mean, log_std)
    gauss = np.exp(-0.5 * ((u - mean) / np.exp(log_std)) ** 2) / (
        np.exp(log_std) * np.sqrt(2 * np.pi))
    assert abs(np.trapezoid(gauss, a) - 1.0) > 0.1


def _with_log_std(state, log_std):
  """The actor made to output this log std everywhere (its head's kernel 0, its bias the
  soft bound's inverse)."""
  lo, hi = continuous.LOG_STD_MIN, continuous.LOG_STD_MAX
  bias = np.arctanh(np.clip(2 * (log_std - lo) / (hi - lo) - 1, -1 + 1e-6, 1 - 1e-6))
  actor = dict(state.params['actor'])
  actor['log_std'] = {'kernel': jnp.zeros_like(actor['log_std']['kernel']),
                      'bias': jnp.full_like(actor['log_std']['bias'], bias)}
  return state.replace(params={**state.params, 'actor': actor})


@pytest.mark.parametrize('log_std, rises', [(-4.0, True), (0.0, False)])
def test_temperature_rises_below_target_entropy_and_falls_above(log_std, rises):
  """One Adam step of the temperature's phase (target -|A| = -1): with sigma = e^-4 the
  squashed policy's entropy is about 1.42 - 4 < -1, so alpha rises; with sigma = 1 it is
  about 0.5 > -1, so alpha falls. Only the temperature moves."""
  config, agent, tx, schedule, state = setup('sac_pendulum.py:tiny')
  assert agent.target_entropy == -1.0
  state = _with_log_std(state, log_std)
  mb = random_minibatch(np.random.default_rng(0), 256)
  _, (m, _) = agent.actor_loss({'params': state.params, **state.extra}, mb, jax.random.key(0))
  assert (float(m['entropy']) < -1.0) == rises
  phase = builders(config, tx, schedule).phased((('alpha', agent.alpha_loss),))
  new, _ = jax.jit(phase)(state, mb, jax.random.key(1))
  before = float(state.params['alpha']['log_alpha'])
  after = float(new.params['alpha']['log_alpha'])
  assert (after > before) if rises else (after < before)
  for name in ('actor', 'critic'):
    for x, y in zip(jax.tree.leaves(new.params[name]), jax.tree.leaves(state.params[name])):
      np.testing.assert_array_equal(x, y)


def test_soft_td_target_by_hand():
  """y = r + gamma (1 - terminated)(min_k Q'_k(s', a') - alpha log pi(a'|s')), a' the
  policy's sample with the same key, Q' the target critics (numpy forward)."""
  config, agent, _, _, state = setup('sac_pendulum.py:tiny', task_kwargs__init_alpha=0.5)
  rng = np.random.default_rng(3)
  mb = random_minibatch(rng, 5, terminated=np.array([1, 0, 0, 1, 0], bool))
  target = jax.tree.map(lambda x: x + 0.2 * rng.normal(size=x.shape).astype(np.float32),
                        state.extra[continuous.TARGET])
  variables = {'params': state.params, continuous.TARGET: target}
  y = agent.td_target(variables, mb, jax.random.key(7))
  a_next, logp_next = agent.sample(state.params, mb['next_obs'], jax.random.key(7))
  q_next = critic_numpy(target['critic'], mb['next_obs'], np.asarray(a_next))
  assert q_next.shape == (2, 5) and not np.allclose(q_next[0], q_next[1])
  soft = q_next.min(0) - 0.5 * np.asarray(logp_next)
  np.testing.assert_allclose(y, mb['reward'] + 0.99 * (1 - mb['terminated']) * soft,
                             rtol=1e-5, atol=1e-5)


def test_targets_follow_polyak_in_the_step():
  check_polyak_in_step('sac_pendulum.py:tiny')


def test_tiny_config_trains_and_resumes_exactly(tmp_path):
  check_trains_and_resumes('sac_pendulum.py:tiny', tmp_path,
                           ('loss', 'critic/loss', 'critic/q', 'actor/loss', 'actor/entropy',
                            'alpha/loss', 'alpha/alpha', 'episode_return', 'updates'))


def test_eight_devices_give_the_same_numbers(tmp_path):
  check_off_policy_on_eight('sac_pendulum.py:tiny', tmp_path, ('jit', 'pmap'))
