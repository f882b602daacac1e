"""Networks and pieces of the off-policy agents for continuous actions (DDPG, SAC): a
deterministic tanh actor, a tanh-squashed Gaussian actor with its log-probability, an
ensemble of Q critics, Polyak averaging and a uniform replay buffer whose state is a plain
pytree (so the loop's checkpoints hold it and a resumed run samples the same transitions).

Actions live in [-1, 1]^A inside the networks; the agents map them affinely onto the
environment's box (`to_env`), as SAC's reference code (softlearning) does with its
normalised action spaces, so SAC's target entropy -|A| refers to the [-1, 1] action.

Actor (Lillicrap et al. 2016, "Continuous control with deep reinforcement learning"):
a ReLU MLP, then tanh. Squashed Gaussian (Haarnoja et al. 2018, "Soft actor-critic
algorithms and applications", appendix C): u ~ N(mu(s), sigma(s)^2), a = tanh(u), and by
the change of variables

  log pi(a|s) = log N(u; mu, sigma^2) - sum_i log(1 - tanh(u_i)^2),

with log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)) (exact, and finite where
1 - tanh(u)^2 rounds to 0). The log std is bounded softly to [LOG_STD_MIN, LOG_STD_MAX] by a
scaled tanh (Yarats & Kostrikov's pytorch_sac, CleanRL's sac_continuous_action.py).
Critic: Q(s, a) of the observation and action concatenated at the input (Fujimoto et al.
2018's TD3 networks; Lillicrap et al. fed the action to the second layer), K independent
copies as one `nn.vmap` (SAC's twin critics, K = 2). Output layers start at
U(-3e-3, 3e-3) weights and biases (Lillicrap et al., section 7), so first actions are
near 0 and first Q values near 0; hidden layers keep Flax's default (LeCun normal).

`OffPolicyAgent` is the train step DDPG and SAC share, in one jitted call per loop step:
T vector-environment steps in a `lax.scan`, each storing its N transitions (with gymnax's
final observation as s' and `terminated` apart from `truncated`) and then, once
`learning_starts` transitions are stored, `updates_per_step` updates, each a minibatch
from the buffer through the loop's `builders.phased` (the agent's `Task.phases`, one
optimizer per network) and a Polyak step of the target networks. Before `learning_starts`
the actions are uniform on [-1, 1]^A. The environments, the buffer and the targets are
non-param collections of the train state ('env', 'replay', 'target'); keys come from
`builders.shared_rng`, so under pmap every device steps the same environments and
samples the same minibatches (the buffer is not split over devices).

Parameters are small and replicated (no logical axes): every device runs the whole agent.

Dimension key: B batch, O observation features, A action dimensions, K critics,
C replay capacity, N environments (rows added at once), T vector-environment steps.
"""

import abc
import dataclasses
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import arch
from arch.rl import common, render
from arch.rl.replay import replay_add, replay_init, replay_sample
from arch.task import ConfigError, Task, no_input, parse_options

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


def _uniform_pm(scale):
  """U(-scale, scale) initialiser."""
  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -scale, scale)
  return init


def _head(width, name):
  return nn.Dense(width, kernel_init=_uniform_pm(3e-3), bias_init=_uniform_pm(3e-3),
                  name=name)


class MLP(nn.Module):
  """ReLU(Dense) layers."""
  hidden: Sequence[int] = (256, 256)

  @nn.compact
  def __call__(self, x_BH):
    for i, width in enumerate(self.hidden):
      x_BH = nn.relu(nn.Dense(width, name=f'hidden_{i}')(x_BH))
    return x_BH


def _flat(obs):
  return jnp.asarray(obs, jnp.float32).reshape(obs.shape[0], -1)


class DeterministicActor(nn.Module):
  """mu(s) in [-1, 1]^A (DDPG's policy)."""
  action_dim: int = 1
  hidden: Sequence[int] = (256, 256)

  @nn.compact
  def __call__(self, obs):
    return jnp.tanh(_head(self.action_dim, 'out')(MLP(self.hidden, name='trunk')(_flat(obs))))


class GaussianActor(nn.Module):
  """(mean (B, A), log std (B, A)) of the pre-tanh Gaussian (SAC's policy)."""
  action_dim: int = 1
  hidden: Sequence[int] = (256, 256)

  @nn.compact
  def __call__(self, obs):
    h_BH = MLP(self.hidden, name='trunk')(_flat(obs))
    mean_BA = _head(self.action_dim, 'mean')(h_BH)
    raw_BA = jnp.tanh(_head(self.action_dim, 'log_std')(h_BH))
    log_std_BA = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (raw_BA + 1.0)
    return mean_BA, log_std_BA


class QNetwork(nn.Module):
  """Q(s, a) (B,) of one critic."""
  hidden: Sequence[int] = (256, 256)

  @nn.compact
  def __call__(self, obs, action_BA):
    x = jnp.concatenate([_flat(obs), jnp.asarray(action_BA, jnp.float32)], axis=-1)
    return _head(1, 'out')(MLP(self.hidden, name='trunk')(x))[:, 0]


class Critic(nn.Module):
  """Q_k(s, a) (K, B) of K critics with independent parameters (leading axis K)."""
  num_critics: int = 2
  hidden: Sequence[int] = (256, 256)

  @nn.compact
  def __call__(self, obs, action_BA):
    ensemble = nn.vmap(QNetwork, variable_axes={'params': 0}, split_rngs={'params': True},
                       in_axes=None, out_axes=0, axis_size=self.num_critics)
    return ensemble(self.hidden, name='q')(obs, action_BA)


class Model(nn.Module):
  """An actor and a critic ensemble, params keyed 'actor' and 'critic' (the agents'
  optimizer groups). `policy`: 'deterministic' (DDPG: `act` gives mu(s)) or 'gaussian'
  (SAC: `act` gives the pre-tanh (mean, log std))."""
  action_dim: int = 1
  hidden: Sequence[int] = (256, 256)
  policy: str = 'gaussian'  # or 'deterministic'
  num_critics: int = 2

  def setup(self):
    if self.policy not in ('gaussian', 'deterministic'):
      raise ValueError(f"policy must be 'gaussian' or 'deterministic', got {self.policy!r}")
    actor_cls = GaussianActor if self.policy == 'gaussian' else DeterministicActor
    self.actor = actor_cls(self.action_dim, self.hidden)
    self.critic = Critic(self.num_critics, self.hidden)

  def __call__(self, obs):
    """(actor output, Q (K, B) of the zero action): touches every parameter (init)."""
    zeros = jnp.zeros((obs.shape[0], self.action_dim), jnp.float32)
    return self.actor(obs), self.critic(obs, zeros)

  def act(self, obs):
    return self.actor(obs)

  def q(self, obs, action_BA):
    return self.critic(obs, action_BA)


TINY = dict(hidden=(8, 8))


# --------------------------------------------------------------- squashed Gaussian


def log_one_minus_tanh_sq(u):
  """log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)), stable for large |u|."""
  return 2.0 * (np.log(2.0) - u - jax.nn.softplus(-2.0 * u))


def squashed_log_prob(u_BA, mean_BA, log_std_BA):
  """log pi(tanh(u)|s) (B,) of pre-tanh samples u: the Gaussian's log density less the
  log Jacobian of tanh, summed over action dimensions."""
  z_BA = (u_BA - mean_BA) * jnp.exp(-log_std_BA)
  gauss_BA = -0.5 * z_BA ** 2 - log_std_BA - 0.5 * np.log(2.0 * np.pi)
  return (gauss_BA - log_one_minus_tanh_sq(u_BA)).sum(-1)


def squashed_sample(rng, mean_BA, log_std_BA):
  """(a = tanh(u) (B, A), log pi(a|s) (B,)) with u = mean + std eps, eps ~ N(0, I): the
  reparameterised sample SAC's actor loss differentiates through."""
  u_BA = mean_BA + jnp.exp(log_std_BA) * jax.random.normal(rng, mean_BA.shape)
  return jnp.tanh(u_BA), squashed_log_prob(u_BA, mean_BA, log_std_BA)


# ------------------------------------------------------------------ shared helpers


def to_env(action_BA, low, high):
  """[-1, 1] actions onto the environment's box [low, high]."""
  return low + 0.5 * (action_BA + 1.0) * (high - low)


def polyak(target, online, tau: float):
  """tau online + (1 - tau) target, leaf by leaf (Lillicrap et al.'s soft target update)."""
  return jax.tree.map(lambda t, o: tau * o + (1.0 - tau) * t, target, online)


# ------------------------------------------------------------- the off-policy agent
# What DDPG and SAC share: the environments, the replay buffer, exploration before
# learning starts, the scanned step of environment steps and updates, Polyak targets and
# the evaluation. An agent subclass supplies its phases, its exploring and deterministic
# actions and which networks have targets.

ENV = 'env'        # non-param collection: common.VecEnv's carry
REPLAY = 'replay'  # non-param collection: the replay buffer
TARGET = 'target'  # non-param collection: the target networks' params, keyed by group


@dataclasses.dataclass(frozen=True)
class Options:
  """The task_kwargs DDPG and SAC share."""
  env: str = 'Pendulum-v1'     # a gymnax environment id with a continuous (Box) action
  num_envs: int = 1            # N environments stepped together
  num_steps: int = 200         # T: vector-environment steps per loop step
  updates_per_step: int = 1    # gradient updates after each vector-environment step
  minibatch_size: int = 256    # transitions per update, drawn uniformly from the buffer
  buffer_size: int = 100_000   # replay capacity (transitions)
  learning_starts: int = 1_000  # environment steps of uniform random actions, no updates
  gamma: float = 0.99
  tau: float = 0.005           # Polyak rate of the target networks
  eval_episodes: int = 10


class OffPolicyAgent(abc.ABC):
  """The shared off-policy machinery (see above); subclasses set `Options`, `policy`,
  `num_critics`, `target_groups` and define `phases`, `explore`, `deterministic`."""
  Options = Options
  policy = 'deterministic'
  num_critics = 1
  target_groups = ('actor', 'critic')

  def __init__(self, config):
    opts = parse_options(self.Options, config)
    self.opts = opts
    env, env_params = common.make_env(opts.env)
    space = env.action_space(env_params)
    if hasattr(space, 'n') or not hasattr(space, 'low'):
      raise ConfigError(f'task_kwargs.env={opts.env!r} has discrete actions; '
                        f'{type(self).__name__} acts in a continuous (Box) action space')
    self.env, self.env_params = env, env_params
    self.action_dim = int(np.prod(space.shape))
    self.low = jnp.broadcast_to(jnp.asarray(space.low, jnp.float32), (self.action_dim,))
    self.high = jnp.broadcast_to(jnp.asarray(space.high, jnp.float32), (self.action_dim,))
    if min(opts.num_envs, opts.num_steps, opts.updates_per_step, opts.minibatch_size) < 1:
      raise ConfigError('task_kwargs.num_envs, num_steps, updates_per_step and '
                        'minibatch_size must be >= 1')
    if opts.buffer_size < opts.num_envs:
      raise ConfigError(f'task_kwargs.buffer_size={opts.buffer_size} must hold one vector '
                        f'step ({opts.num_envs} transitions)')
    self.rollout_size = opts.num_envs * opts.num_steps
    if config.batch_size != self.rollout_size:
      raise ConfigError(f'batch_size={config.batch_size} must be num_envs x num_steps = '
                        f'{opts.num_envs} x {opts.num_steps} = {self.rollout_size} (the '
                        f'environment steps of one train step)')
    self.vec_env = common.VecEnv(env, env_params, opts.num_envs)
    self.model = arch.model_from_config(config, action_dim=self.action_dim,
                                        policy=self.policy, num_critics=self.num_critics)

  # ------------------------------------------------------------------ for subclasses

  @abc.abstractmethod
  def phases(self):
    """((group, loss), ...) of one update (Task.phases)."""

  @abc.abstractmethod
  def explore(self, params, obs, rng):
    """Actions (N, A) in [-1, 1] that the agent collects with."""

  @abc.abstractmethod
  def deterministic(self, params, obs):
    """Actions (N, A) in [-1, 1] of the evaluation policy."""

  def extra_params(self, params):
    """Params of further groups (SAC's temperature) beside the network's."""
    del params
    return {}

  # ---------------------------------------------------------------------------- pieces

  def init(self, rng, batch):
    del batch  # no data
    k_params, k_env = jax.random.split(rng)
    carry = self.vec_env.reset(k_env)
    params = dict(self.model.init(k_params, carry['obs'])['params'])
    params.update(self.extra_params(params))
    obs = carry['obs'][0]
    row = {'obs': obs, 'action': jnp.zeros((self.action_dim,), jnp.float32),
           'reward': jnp.zeros((), jnp.float32), 'next_obs': obs,
           'terminated': jnp.zeros((), bool)}
    target = {g: params[g] for g in self.target_groups}
    return {'params': params, ENV: carry, REPLAY: replay_init(row, self.opts.buffer_size),
            TARGET: jax.tree.map(jnp.copy, target)}

  def bootstrap(self, mb):
    """gamma (1 - terminated) per transition: a time-limit truncation bootstraps from the
    state it reached (`next_obs` is gymnax's final observation), a termination does not."""
    return self.opts.gamma * (1.0 - mb['terminated'].astype(jnp.float32))

  def make_step(self, builders):
    """The loop's inner step: T vector-environment steps, each followed by
    `updates_per_step` phased updates (once `learning_starts` steps are stored), each update
    followed by the Polyak step of the targets."""
    opts, n = self.opts, self.opts.num_envs
    update = builders.phased(self.phases())
    first_group = self.phases()[0][0]

    def one_update(ts, replay, key):
      k_sample, k_update = jax.random.split(key)
      mb = replay_sample(replay, k_sample, opts.minibatch_size)
      ts, metrics = update(ts, mb, k_update)
      online = {g: ts.params[g] for g in self.target_groups}
      target = polyak(ts.extra[TARGET], online, opts.tau)
      return ts.replace(extra={**ts.extra, TARGET: target}), metrics

    def updates(ts, replay, key):
      return jax.lax.scan(lambda s, k: one_update(s, replay, k), ts,
                          jax.random.split(key, opts.updates_per_step))

    def step(state, batch, rng):
      del batch, rng  # no data; keys from the state alone (common: every device alike)
      key = builders.shared_rng(state)
      # The environments and the buffer stay out of the updates (under pmap the builders
      # average the non-param state that passes through them over devices).
      others = {k: v for k, v in state.extra.items() if k not in (ENV, REPLAY)}
      start = state.step * self.rollout_size  # environment steps before this loop step
      shapes = jax.eval_shape(updates, state.replace(extra=others), state.extra[REPLAY],
                              key)[1]

      def body(c, xs):
        ts, carry, replay = c
        t, k = xs
        k_act, k_random, k_env, k_update = jax.random.split(k, 4)
        stored = start + t * n  # environment steps taken before this one
        random_NA = jax.random.uniform(k_random, (n, self.action_dim), minval=-1.0, maxval=1.0)
        action_NA = jnp.where(stored < opts.learning_starts, random_NA,
                              self.explore(ts.params, carry['obs'], k_act))
        new, tr = self.vec_env.step(carry, to_env(action_NA, self.low, self.high), k_env)
        replay = replay_add(replay, {'obs': carry['obs'], 'action': action_NA,
                                     'reward': tr['reward'], 'next_obs': tr['final_obs'],
                                     'terminated': tr['terminated']})
        ready = stored + n >= opts.learning_starts
        skip = lambda ts: (ts, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes))
        ts, metrics = jax.lax.cond(ready, lambda ts: updates(ts, replay, k_update), skip, ts)
        metrics = jax.tree.map(lambda m: m.sum(0), metrics)  # sums over this step's updates
        return (ts, new, replay), (metrics, ready, {'done': tr['done'],
                                                    'finished_return': tr['finished_return']})

      (new, carry, replay), (sums, ready_T, traj) = jax.lax.scan(
          body, (state.replace(extra=others), state.extra[ENV], state.extra[REPLAY]),
          (jnp.arange(opts.num_steps), jax.random.split(key, opts.num_steps)))
      count = ready_T.sum() * opts.updates_per_step
      metrics = jax.tree.map(lambda s: s.sum(0) / jnp.maximum(count, 1).astype(s.dtype), sums)
      metrics['learning_rate'] = builders.schedule[first_group](state.step)
      metrics['updates'] = count.astype(jnp.float32)
      metrics.update(common.episode_stats(traj, carry))
      return new.replace(extra={**new.extra, ENV: carry, REPLAY: replay}), metrics

    return step

  def evaluate_run(self, variables, rng):
    return common.evaluate_episodes(self.env, self.env_params,
                                    self.act(variables['params'], greedy=True), rng,
                                    self.opts.eval_episodes)

  def act(self, params, greedy: bool):
    """act(obs, key) -> environment actions: the evaluation policy, or the exploring one."""
    def act(obs, key):
      action = self.deterministic(params, obs) if greedy else self.explore(params, obs, key)
      return to_env(action, self.low, self.high)
    return act

  def task(self) -> Task:
    sample, prompt_batch = render.make_sample(self.opts.env, self.env, self.env_params,
                                              self.act)
    return Task(init=self.init, loss=None, example_batch=lambda batch_size: {},
                phases=self.phases(), make_step=self.make_step, input=no_input,
                evaluate_run=self.evaluate_run, sample=sample, prompt_batch=prompt_batch)
