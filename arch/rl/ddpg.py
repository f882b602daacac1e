"""Deep deterministic policy gradient, DDPG (Lillicrap et al. 2016, "Continuous control with
deep reinforcement learning"), on gymnax environments with continuous actions, end to end
in one jitted train step.

The method (the paper's Algorithm 1): a deterministic actor mu(s) and a critic Q(s, a),
each with a target copy mu', Q'. The agent acts with mu(s) plus exploration noise, stores
every transition in a replay buffer, and after each environment step draws a minibatch
and
  - moves the critic towards y = r + gamma (1 - terminated) Q'(s', mu'(s')) by
    minimising 1/2 mean (Q(s, a) - y)^2,
  - moves the actor along the deterministic policy gradient, minimising -mean Q(s, mu(s))
    (with the critic just updated),
  - moves the targets by Polyak averaging, theta' <- tau theta + (1 - tau) theta'.
y bootstraps a time-limit truncation from the state it reached (gymnax's final
observation) and a termination from nothing: Pendulum only truncates, so every y
bootstraps.

Details that differ from the paper, as in the re-tuned DDPG of Fujimoto et al. 2018
("Addressing function approximation error in actor-critic methods", their "Our DDPG"
baseline): Gaussian exploration noise N(0, sigma^2) on the [-1, 1] action, clipped back
into it, instead of an Ornstein-Uhlenbeck process (the TD3 paper found no benefit from
correlated noise); uniform random actions for the first `learning_starts` environment
steps; the action enters the critic at its input rather than at its second layer; no batch
normalisation and no L2 decay of the critic (a config may set
`optimizers.critic.weight_decay` for the paper's 1e-2); tau 0.005 rather than 0.001; 256-256
ReLU networks and minibatches of 256 as in that paper's later reference code
(arch/rl/continuous.py). None of TD3's three changes (twin critics, delayed actor, target
smoothing) is used: the actor updates after every critic update.

Separate optimizers: the actor and the critic are the loop's `Task.phases` parameter
groups 'critic' then 'actor' (`config.optimizers.actor`, `.critic`), and the step calls the
loop's `builders.phased` once per update. Phases fit exactly: each differentiates its own
group alone, the actor's phase sees the critic its predecessor just updated (as in the
paper's algorithm), and each group keeps its own optimizer state and learning rate in the
loop's checkpointed state; composing `supervised` per network would have re-implemented
that group bookkeeping. The targets are a non-param collection, updated after each update.

Config keys read: `model_name` ('rl.continuous'), `model` (`hidden`), `batch_size` (must
be num_envs x num_steps: the environment steps of one loop step, so the loop's
`examples_per_sec` is environment steps per second), `optimizers`, and `task_kwargs`, the
fields of `Options`. Train metrics (means over the step's updates): `critic/loss`,
`critic/q`, `critic/target`, `actor/loss`, their grad norms, `loss` (their sum), `updates`;
`episode_return` and `episodes` of the step's environment steps. `evaluate_run`: `return`
and `return_min` over `eval_episodes` episodes of mu(s) without noise.

Dimension key: B minibatch, N environments, A action dimensions.
"""

import dataclasses

import jax
import jax.numpy as jnp

from arch.rl import continuous
from arch.rl.continuous import TARGET
from arch.task import ConfigError, Task


@dataclasses.dataclass(frozen=True)
class Options(continuous.Options):
  """DDPG's task_kwargs."""
  exploration_noise: float = 0.1  # std of the Gaussian added to mu(s) in [-1, 1]


def _others(variables):
  return {k: v for k, v in variables.items() if k != 'params'}


class Agent(continuous.OffPolicyAgent):
  """DDPG's pieces for one config; `task()` assembles the loop's Task."""
  Options = Options
  policy = 'deterministic'
  num_critics = 1
  target_groups = ('actor', 'critic')

  def __init__(self, config):
    super().__init__(config)
    if self.opts.exploration_noise < 0:
      raise ConfigError('task_kwargs.exploration_noise must be >= 0')

  def mu(self, params, obs):
    return self.model.apply({'params': params}, obs, method='act')

  def q(self, params, obs, action_BA):
    """Q(s, a) (B,) of the one critic."""
    return self.model.apply({'params': params}, obs, action_BA, method='q')[0]

  def td_target(self, variables, mb):
    """y = r + gamma (1 - terminated) Q'(s', mu'(s')) (B,), no gradient."""
    target = variables[TARGET]
    q_next_B = self.q(target, mb['next_obs'], self.mu(target, mb['next_obs']))
    return jax.lax.stop_gradient(mb['reward'] + self.bootstrap(mb) * q_next_B)

  def critic_loss(self, variables, mb, rng):
    del rng
    y_B = self.td_target(variables, mb)
    q_B = self.q(variables['params'], mb['obs'], mb['action'])
    loss = 0.5 * ((q_B - y_B) ** 2).mean()
    return loss, ({'q': q_B.mean(), 'target': y_B.mean()}, _others(variables))

  def actor_loss(self, variables, mb, rng):
    del rng
    params = variables['params']
    loss = -self.q(params, mb['obs'], self.mu(params, mb['obs'])).mean()
    return loss, ({}, _others(variables))

  def phases(self):
    return (('critic', self.critic_loss), ('actor', self.actor_loss))

  def explore(self, params, obs, rng):
    action_NA = self.mu(params, obs)
    noise_NA = self.opts.exploration_noise * jax.random.normal(rng, action_NA.shape)
    return jnp.clip(action_NA + noise_NA, -1.0, 1.0)

  def deterministic(self, params, obs):
    return self.mu(params, obs)


def make(config) -> Task:
  return Agent(config).task()
