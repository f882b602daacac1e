"""Deep Q-networks, DQN (Mnih et al. 2015, "Human-level control through deep reinforcement
learning"), with the double-DQN target as an option (van Hasselt et al. 2016, "Deep
reinforcement learning with double Q-learning"), on gymnax environments with discrete
actions, end to end in one jitted train step.

One loop step scans `num_steps` iterations of Algorithm 1 over N environments at once
(vectorised with jax.vmap; PureJaxRL's layout, Lu et al. 2022, "Discovered policy
optimisation"):
1. act epsilon-greedily: a uniformly random action with probability epsilon_t, else
   argmax_a Q(s, a); epsilon falls linearly from `eps_start` to `eps_end` over the first
   `eps_anneal_steps` environment steps, then stays;
2. store the N transitions (s, a, r, s', terminated) in the replay memory, a ring buffer
   of the last `buffer_size` of them, overwriting the oldest (arch/rl/replay.py); s' is the
   state the transition reached (gymnax's final observation, before its automatic reset);
3. once `learning_starts` environment steps have been taken, draw `replay_batch`
   transitions uniformly from the memory and take one gradient step (the loop's
   `supervised` builder: the config's optimizer and clipping) on

     L = mean_j l(Q(s_j, a_j) - y_j),
     y_j = r_j + gamma (1 - terminated_j) max_a Q^-(s'_j, a)                    (DQN)
     y_j = r_j + gamma (1 - terminated_j) Q^-(s'_j, argmax_a Q(s'_j, a))        (double)

   with l the squared error (`loss='mse'`) or the Huber loss of slope 1 beyond |e| = 1
   (`loss='huber'`, the paper's "error clipping"); y is a constant of the gradient. Q^- is
   the target network, a copy of the online params taken every `target_every` gradient
   steps (a hard update). A transition cut by the time limit (truncated, not
   terminated) bootstraps from its last state: only `terminated` zeroes the future (Pardo
   et al. 2018, "Time limits in reinforcement learning").

State: the environments (`common.VecEnv`'s carry), the replay memory and the target
network with its update counter are the non-param collections 'env', 'replay' and
'target', so checkpoints hold them and a resumed run continues the same episodes from the
same memory with the same keys, bit for bit. Keys come from `builders.shared_rng` (the
state's rng and step, not the per-device key under pmap): every device acts, stores and
samples alike, so the checkpoint's one copy of the environments and memory is every
device's (nothing is split over devices; the agent is small).

Config keys read: `model_name` (a network `Model(num_actions=...)` returning Q-values
(B, A), e.g. 'rl.qnet'), `model`, `batch_size` (must be num_envs x num_steps: the
environment steps of one loop step, so the loop's `examples_per_sec` is environment steps
per second), `grad_accum_steps` (must be 1), and `task_kwargs`, the fields of `Options`.
The optimizer's schedule counts gradient steps (one per iteration after the start).
Train metrics, averaged over the step's iterations (iterations before the start count 0
in `loss`, `q_value`, `td_error`, `grad_norm`): `loss`, `q_value` (mean Q(s, a) of the
minibatch), `td_error` (mean |Q(s, a) - y|), `grad_norm`, `epsilon`, `learning_rate` (at
the step's first update), `buffer_size`; `episode_return` and `episodes` of the step's
transitions (`common.episode_stats`). `evaluate_run`: `return` (and `return_min`) over
`eval_episodes` whole episodes of the greedy policy (`eval_epsilon` > 0: epsilon-greedy).

Dimension key: N environments, B minibatch transitions, C replay capacity, A actions,
O observation shape.
"""

import dataclasses

import jax
import jax.numpy as jnp

import arch
from arch.rl import common, render
from arch.rl.replay import replay_add, replay_init, replay_sample
from arch.task import ConfigError, Task, no_input, parse_options

ENV = 'env'        # the environments (common.VecEnv's carry)
REPLAY = 'replay'  # the ring buffer of transitions (arch/rl/replay.py)
TARGET = 'target'  # {'params': the target network, 'updates': gradient steps so far}
LOSSES = ('mse', 'huber')


@dataclasses.dataclass(frozen=True)
class Options:
  """DQN's task_kwargs."""
  env: str = 'CartPole-v1'       # a gymnax environment id
  num_envs: int = 10             # N, stepped together
  num_steps: int = 10            # iterations (N environment steps + 1 update) per loop step
  buffer_size: int = 10_000      # C, transitions in the replay memory
  replay_batch: int = 128        # B, transitions per gradient step
  learning_starts: int = 10_000  # environment steps before the first gradient step
  target_every: int = 500        # gradient steps between target-network copies
  gamma: float = 0.99
  double: bool = False           # the double-DQN target (van Hasselt et al. 2016)
  loss: str = 'mse'              # or 'huber'
  eps_start: float = 1.0
  eps_end: float = 0.05
  eps_anneal_steps: int = 250_000  # environment steps of the linear decay
  eval_episodes: int = 32
  eval_epsilon: float = 0.0      # 0: greedy evaluation


# ------------------------------------------------------------------------------ objective


def td_target(q_next_target_BA, q_next_online_BA, reward_B, terminated_B, gamma: float,
              double: bool):
  """y (B,) of the module docstring: the target network's value of s', at its own argmax
  (DQN) or at the online network's (double DQN), cut only by termination."""
  if double:
    best_B = q_next_online_BA.argmax(-1)
    next_B = jnp.take_along_axis(q_next_target_BA, best_B[:, None], axis=-1)[:, 0]
  else:
    next_B = q_next_target_BA.max(-1)
  return reward_B + gamma * (1.0 - terminated_B.astype(jnp.float32)) * next_B


def td_loss(error_B, kind: str):
  """mean of e^2 ('mse') or of the Huber loss 0.5 e^2 (|e| <= 1), |e| - 0.5 (beyond)."""
  if kind == 'mse':
    return (error_B ** 2).mean()
  abs_B = jnp.abs(error_B)
  return jnp.where(abs_B <= 1.0, 0.5 * error_B ** 2, abs_B - 0.5).mean()


def epsilon(t, start: float, end: float, anneal_steps: int):
  """The exploration rate after `t` environment steps: linear from start to end over
  `anneal_steps`, then constant."""
  frac = jnp.clip(jnp.asarray(t, jnp.float32) / max(anneal_steps, 1), 0.0, 1.0)
  return start + frac * (end - start)


class Agent:
  """DQN's pieces for one config; `task()` assembles the loop's Task from them."""

  def __init__(self, config):
    opts = parse_options(Options, config)
    self.opts = opts
    env, env_params = common.make_env(opts.env)
    if not hasattr(env.action_space(env_params), 'n'):
      raise ConfigError(f'task_kwargs.env={opts.env!r} has continuous actions; DQN takes '
                        f'the argmax over discrete actions')
    if opts.loss not in LOSSES:
      raise ConfigError(f'task_kwargs.loss={opts.loss!r}; valid: {", ".join(LOSSES)}')
    positive = ('num_envs', 'num_steps', 'buffer_size', 'replay_batch', 'target_every')
    if any(getattr(opts, k) < 1 for k in positive):
      raise ConfigError(f'task_kwargs.{", ".join(positive)} must be >= 1')
    self.env, self.env_params = env, env_params
    self.num_actions = int(env.action_space(env_params).n)
    self.env_steps_per_step = opts.num_envs * opts.num_steps
    if config.batch_size != self.env_steps_per_step:
      raise ConfigError(f'batch_size={config.batch_size} must be num_envs x num_steps = '
                        f'{opts.num_envs} x {opts.num_steps} = {self.env_steps_per_step} '
                        f'(the environment steps of one train step)')
    if int(config.get('grad_accum_steps', 1)) != 1:
      raise ConfigError('DQN draws its own minibatches (task_kwargs.replay_batch); set '
                        'grad_accum_steps=1')
    self.vec_env = common.VecEnv(env, env_params, opts.num_envs)
    self.model = arch.model_from_config(config, num_actions=self.num_actions)

  # ----------------------------------------------------------------------- pieces

  def init(self, rng, batch):
    del batch  # no data
    k_params, k_env = jax.random.split(rng)
    carry = self.vec_env.reset(k_env)
    params = self.model.init(k_params, carry['obs'])['params']
    obs = carry['obs'][0]
    example = {'obs': obs, 'action': jnp.zeros((), jnp.int32),
               'reward': jnp.zeros((), jnp.float32), 'next_obs': obs,
               'terminated': jnp.zeros((), jnp.float32)}
    return {'params': params, ENV: carry,
            REPLAY: replay_init(example, self.opts.buffer_size),
            TARGET: {'params': jax.tree.map(jnp.copy, params),
                     'updates': jnp.zeros((), jnp.int32)}}

  def q(self, params, obs):
    return self.model.apply({'params': params}, obs)

  def targets(self, params, target_params, mb):
    """y (B,) for a minibatch, from the target network (and the online one if double)."""
    q_next_target = self.q(target_params, mb['next_obs'])
    q_next_online = self.q(params, mb['next_obs']) if self.opts.double else q_next_target
    y = td_target(q_next_target, q_next_online, mb['reward'], mb['terminated'],
                  self.opts.gamma, self.opts.double)
    return jax.lax.stop_gradient(y)

  def loss(self, variables, mb, rng):
    """The loop's loss signature on a minibatch with its targets `y`; non-param
    collections pass through unchanged."""
    del rng
    q_BA = self.q(variables['params'], mb['obs'])
    q_B = jnp.take_along_axis(q_BA, mb['action'][:, None], axis=-1)[:, 0]
    error_B = q_B - mb['y']
    metrics = {'q_value': q_B.mean(), 'td_error': jnp.abs(error_B).mean()}
    return td_loss(error_B, self.opts.loss), (
        metrics, {k: v for k, v in variables.items() if k != 'params'})

  def act(self, params, eps):
    """Epsilon-greedy actions (N,) of observations (N, *O)."""
    def act(obs, key):
      k_explore, k_random = jax.random.split(key)
      greedy = self.q(params, obs).argmax(-1).astype(jnp.int32)
      random = jax.random.randint(k_random, greedy.shape, 0, self.num_actions, jnp.int32)
      explore = jax.random.uniform(k_explore, greedy.shape) < eps
      return jnp.where(explore, random, greedy)
    return act

  def make_step(self, builders):
    """The loop's inner step: `num_steps` iterations of act, store, (learn, sync)."""
    opts = self.opts
    update = builders.supervised(self.loss, accum=1)
    n = opts.num_envs

    def learn(state, replay, target, key):
      mb = replay_sample(replay, key, opts.replay_batch)
      mb['y'] = self.targets(state.params, target['params'], mb)
      new, metrics = update(state, mb, key)
      updates = target['updates'] + 1
      sync = updates % opts.target_every == 0
      params = jax.tree.map(lambda p, q: jnp.where(sync, p, q), new.params, target['params'])
      return new, {'params': params, 'updates': updates}, metrics

    def step(state, batch, rng):
      del batch, rng  # no data; keys from the state alone (module docstring)
      key = builders.shared_rng(state)
      t0 = state.step * self.env_steps_per_step
      others = {k: v for k, v in state.extra.items() if k not in (ENV, REPLAY, TARGET)}
      lr = builders.schedule(state.extra[TARGET]['updates'])

      def body(carry, i):
        st, env, replay, target = carry
        k_act, k_env, k_learn = jax.random.split(jax.random.fold_in(key, i), 3)
        eps = epsilon(t0 + i * n, opts.eps_start, opts.eps_end, opts.eps_anneal_steps)
        action_N = self.act(st.params, eps)(env['obs'], k_act)
        obs = env['obs']
        env, tr = self.vec_env.step(env, action_N, k_env)
        replay = replay_add(replay, {'obs': obs, 'action': action_N, 'reward': tr['reward'],
                                     'next_obs': tr['final_obs'],
                                     'terminated': tr['terminated']})
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                             jax.eval_shape(learn, st, replay, target, k_learn)[2])
        st, target, metrics = jax.lax.cond(
            t0 + (i + 1) * n >= opts.learning_starts,
            lambda: learn(st, replay, target, k_learn),
            lambda: (st, target, zeros))
        metrics = {**metrics, 'epsilon': eps}
        return (st, env, replay, target), (metrics, {'done': tr['done'],
                                                     'finished_return': tr['finished_return']})

      init = (state.replace(extra=others), state.extra[ENV], state.extra[REPLAY],
              state.extra[TARGET])
      (new, env, replay, target), (metrics, traj) = jax.lax.scan(
          body, init, jnp.arange(opts.num_steps))
      metrics = jax.tree.map(jnp.mean, metrics)
      metrics['learning_rate'] = lr
      metrics['buffer_size'] = replay['size'].astype(jnp.float32)
      new = new.replace(extra={**new.extra, ENV: env, REPLAY: replay, TARGET: target})
      return new, {**metrics, **common.episode_stats(traj, env)}

    return step

  def evaluate_run(self, variables, rng):
    return common.evaluate_episodes(self.env, self.env_params,
                                    self.act(variables['params'], self.opts.eval_epsilon),
                                    rng, self.opts.eval_episodes)

  def task(self) -> Task:
    # Rendered episodes: greedy, or epsilon-greedy at the evaluation's epsilon.
    sample, prompt_batch = render.make_sample(
        self.opts.env, self.env, self.env_params,
        lambda params, greedy: self.act(params, 0.0 if greedy else self.opts.eval_epsilon))
    return Task(init=self.init, loss=self.loss, example_batch=lambda batch_size: {},
                make_step=self.make_step, input=no_input, evaluate_run=self.evaluate_run,
                sample=sample, prompt_batch=prompt_batch)


def make(config) -> Task:
  return Agent(config).task()
