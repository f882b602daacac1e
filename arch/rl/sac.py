"""Soft actor-critic, SAC (Haarnoja et al. 2018, "Soft actor-critic algorithms and
applications": the version with twin critics and a learned temperature), on gymnax
environments with continuous actions, end to end in one jitted train step.

The method maximises return plus alpha times the policy's entropy. Networks
(arch/rl/continuous.py): a tanh-squashed Gaussian policy, a = tanh(u), u ~ N(mu(s),
sigma(s)^2), whose log-probability carries the change-of-variables correction
log pi(a|s) = log N(u) - sum log(1 - tanh(u)^2); two critics Q_1, Q_2 with Polyak-averaged
targets Q'_1, Q'_2 (no target policy). After each environment step one update draws a
minibatch from the replay buffer and runs three phases, each on its own parameters:

  critic  J_Q = 1/2 sum_k mean (Q_k(s, a) - y)^2 (eq. 5), with a' ~ pi(.|s') and
          y = r + gamma (1 - terminated) (min_k Q'_k(s', a') - alpha log pi(a'|s')),
          the clipped double-Q minimum of both targets (section 5 / Fujimoto et al. 2018);
  actor   J_pi = mean (alpha log pi(a~|s) - min_k Q_k(s, a~)) (eq. 7), a~ = tanh(mu +
          sigma eps) reparameterised (eq. 11), alpha held fixed;
  alpha   J = -mean(log alpha (log pi(a~|s) + H_target)) with log pi held fixed: the
          temperature objective of eq. 18 written in log alpha as the authors' softlearning
          code does, H_target = -|A| (its default, the paper's -dim(A)). Its gradient is
          H - H_target for the entropy estimate H = -mean log pi, so alpha rises while the
          policy's entropy is below target and falls while above (tests/test_sac.py).

then moves the targets, Q' <- tau Q + (1 - tau) Q' (the order of the paper's Algorithm 1).
The actor's phase uses the critics just updated and the temperature's phase the actor just
updated, as CleanRL's sac_continuous_action.py does (softlearning takes all three gradients
at the same parameters). y bootstraps a time-limit truncation from the state it reached (gymnax's
final observation) and a termination from nothing (Pendulum only truncates). The
temperature's target entropy refers to the action in [-1, 1]^A, which the agent maps onto
the environment's box (continuous.to_env), as softlearning does.

Separate optimizers: the loop's `Task.phases` with groups 'critic', 'actor', 'alpha'
(`config.optimizers.<group>`), one `builders.phased` call per update. Phases fit: each
differentiates its own group alone, sees the groups its predecessors just updated, and
keeps its own optimizer state in the checkpointed train state; composing `supervised` per
network would have re-implemented that bookkeeping. log alpha is params['alpha']['log_alpha']
(a parameter group of its own, outside the network); the target critics are a non-param
collection.

Config keys read: as DDPG's (arch/rl/ddpg.py) and `task_kwargs`, the fields of `Options`.
Train metrics (means over the step's updates): `critic/loss`, `critic/q`, `critic/target`,
`actor/loss`, `actor/entropy`, `alpha/loss`, `alpha/alpha`, grad norms, `loss` (their
sum), `updates`, `episode_return`, `episodes`. `evaluate_run`: `return` and `return_min`
over `eval_episodes` episodes of the deterministic policy a = tanh(mu(s)).

Dimension key: B minibatch, N environments, A action dimensions, K critics.
"""

import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from arch.rl import continuous
from arch.rl.continuous import TARGET
from arch.task import ConfigError, Task


@dataclasses.dataclass(frozen=True)
class Options(continuous.Options):
  """SAC's task_kwargs."""
  init_alpha: float = 1.0                 # the temperature at the start
  learn_alpha: bool = True                # False: alpha stays init_alpha (no 'alpha' phase)
  target_entropy: Optional[float] = None  # None: -|A|


def _others(variables):
  return {k: v for k, v in variables.items() if k != 'params'}


class Agent(continuous.OffPolicyAgent):
  """SAC's pieces for one config; `task()` assembles the loop's Task."""
  Options = Options
  policy = 'gaussian'
  num_critics = 2
  target_groups = ('critic',)

  def __init__(self, config):
    super().__init__(config)
    if self.opts.init_alpha <= 0:
      raise ConfigError('task_kwargs.init_alpha must be > 0')
    self.target_entropy = (-float(self.action_dim) if self.opts.target_entropy is None
                           else float(self.opts.target_entropy))

  def extra_params(self, params):
    del params
    return {'alpha': {'log_alpha': jnp.asarray(np.log(self.opts.init_alpha), jnp.float32)}}

  def alpha(self, params):
    return jnp.exp(params['alpha']['log_alpha'])

  def pi(self, params, obs):
    """(mean, log std) (B, A) of the pre-tanh Gaussian."""
    return self.model.apply({'params': params}, obs, method='act')

  def sample(self, params, obs, rng):
    """(a (B, A) in [-1, 1], log pi(a|s) (B,)): a reparameterised policy sample."""
    return continuous.squashed_sample(rng, *self.pi(params, obs))

  def min_q(self, params, obs, action_BA):
    """min_k Q_k(s, a) (B,)."""
    return self.model.apply({'params': params}, obs, action_BA, method='q').min(0)

  def td_target(self, variables, mb, rng):
    """y = r + gamma (1 - terminated) (min_k Q'_k(s', a') - alpha log pi(a'|s')) (B,),
    a' ~ pi(.|s'), no gradient."""
    params = variables['params']
    a_next_BA, log_pi_next_B = self.sample(params, mb['next_obs'], rng)
    target = {**params, 'critic': variables[TARGET]['critic']}
    soft_B = (self.min_q(target, mb['next_obs'], a_next_BA)
              - self.alpha(params) * log_pi_next_B)
    return jax.lax.stop_gradient(mb['reward'] + self.bootstrap(mb) * soft_B)

  def critic_loss(self, variables, mb, rng):
    params = variables['params']
    y_B = self.td_target(variables, mb, rng)
    q_KB = self.model.apply({'params': params}, mb['obs'], mb['action'], method='q')
    loss = 0.5 * ((q_KB - y_B) ** 2).mean(-1).sum()
    return loss, ({'q': q_KB.mean(), 'target': y_B.mean()}, _others(variables))

  def actor_loss(self, variables, mb, rng):
    params = variables['params']
    a_BA, log_pi_B = self.sample(params, mb['obs'], rng)
    alpha = jax.lax.stop_gradient(self.alpha(params))
    loss = (alpha * log_pi_B - self.min_q(params, mb['obs'], a_BA)).mean()
    return loss, ({'entropy': -log_pi_B.mean()}, _others(variables))

  def alpha_loss(self, variables, mb, rng):
    params = variables['params']
    _, log_pi_B = self.sample(params, mb['obs'], rng)
    gap_B = jax.lax.stop_gradient(log_pi_B + self.target_entropy)
    loss = -(params['alpha']['log_alpha'] * gap_B).mean()
    return loss, ({'alpha': self.alpha(params)}, _others(variables))

  def phases(self):
    phases = (('critic', self.critic_loss), ('actor', self.actor_loss))
    return phases + ((('alpha', self.alpha_loss),) if self.opts.learn_alpha else ())

  def explore(self, params, obs, rng):
    return self.sample(params, obs, rng)[0]

  def deterministic(self, params, obs):
    return jnp.tanh(self.pi(params, obs)[0])


def make(config) -> Task:
  return Agent(config).task()
