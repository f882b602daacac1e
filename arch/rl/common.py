"""Pieces every on-device RL agent shares: vectorised gymnax environments whose state is a
checkpointable pytree, a rollout as one `lax.scan`, episode bookkeeping, generalised
advantage estimation and an evaluation over whole episodes.

gymnax 1.0's `Environment.step(key, state, action, params)` returns six values, (obs,
state, reward, terminated, truncated, info): `terminated` is a terminal state of the MDP
(the pole fell), `truncated` the time limit (`state.time >= max_steps_in_episode`). It
resets an environment that is done (either) inside the same call, so `obs` is already the
next episode's first observation; the observation the transition really reached is
`info['final_observation']` (equal to `obs` when the episode goes on). Bootstrapping
therefore reads V(final observation) and cuts it only on termination (Pardo et al. 2018,
"Time limits in reinforcement learning"): a truncated episode's last state still has a
future. The rollout records both flags and the final observation.

Dimension key: T rollout steps, N environments, O observation shape.

The carry of a `VecEnv` (what an agent keeps in its non-param collection, so checkpoints
hold it and a resumed run continues the same episodes):
  env             the N gymnax states, as a dict of arrays (field name -> (N, ...))
  obs             (N, *O) the observation each environment's policy sees next
  episode_return  (N,) reward summed over the running episode
  episode_length  (N,) its steps so far
  last_return     (N,) the return of each environment's last finished episode (0 before one)
"""

import flax.serialization
import gymnax
import jax
import jax.numpy as jnp

import arch
from arch.rl import render
from arch.task import ConfigError, Task, no_input

ENV = 'env'  # the non-param collection an agent keeps its environments in (a VecEnv's carry)


def make_env(name: str):
  """(env, env_params) of a registered gymnax environment; an unknown name is a
  ConfigError listing the valid ones."""
  if name not in gymnax.registered_envs:
    raise ConfigError(f'unknown gymnax environment {name!r}; valid: '
                      f'{", ".join(gymnax.registered_envs)}')
  return gymnax.make(name)


def _strong(tree):
  """Leaves as strongly typed arrays: a Python int in an env state (gymnax's `time=0`)
  traces as a weakly typed int32, which a compiled step would not accept back once a
  checkpoint or a step has made it a strong one."""
  return jax.tree.map(lambda x: jax.lax.convert_element_type(x, jnp.asarray(x).dtype), tree)


class VecEnv:
  """N copies of a gymnax environment stepped together with jax.vmap, each resetting
  itself when its episode ends, their state a plain dict pytree (see the module
  docstring)."""

  def __init__(self, env, params, num_envs: int):
    self.env, self.params, self.num_envs = env, params, int(num_envs)
    self._template = jax.eval_shape(lambda k: self._reset(k)[1], jax.random.key(0))

  def _reset(self, rng):
    keys = jax.random.split(rng, self.num_envs)
    return jax.vmap(self.env.reset, in_axes=(0, None))(keys, self.params)

  def state(self, carry):
    """The gymnax state (N-batched) held in `carry['env']`."""
    return flax.serialization.from_state_dict(self._template, carry['env'])

  def reset(self, rng) -> dict:
    """A fresh carry: every environment at the start of an episode."""
    obs, state = self._reset(rng)
    zeros = jnp.zeros((self.num_envs,), jnp.float32)
    return _strong({'env': flax.serialization.to_state_dict(state), 'obs': obs,
                    'episode_return': zeros, 'episode_length': jnp.zeros_like(zeros, jnp.int32),
                    'last_return': zeros})

  def step(self, carry, action_N, rng):
    """(carry, transition) after one action per environment. transition: `reward` (N,),
    `terminated`, `truncated`, `done` (N,) bool, `final_obs` (N, *O) (the observation
    reached, before any reset) and `finished_return` (N,) (the return of an episode that
    ended here, 0 elsewhere)."""
    keys = jax.random.split(rng, self.num_envs)
    obs, state, reward, terminated, truncated, info = jax.vmap(
        self.env.step, in_axes=(0, 0, 0, None))(keys, self.state(carry), action_N, self.params)
    reward = reward.astype(jnp.float32)
    done = terminated | truncated
    ret = carry['episode_return'] + reward
    new = _strong({
        'env': flax.serialization.to_state_dict(state), 'obs': obs,
        'episode_return': jnp.where(done, 0.0, ret),
        'episode_length': jnp.where(done, 0, carry['episode_length'] + 1),
        'last_return': jnp.where(done, ret, carry['last_return'])})
    return new, {'reward': reward, 'terminated': terminated, 'truncated': truncated,
                 'done': done, 'final_obs': info['final_observation'],
                 'finished_return': jnp.where(done, ret, 0.0)}


def rollout(vec_env: VecEnv, policy, carry, rng, num_steps: int):
  """`num_steps` steps of every environment in one scan: (carry, trajectory (T, N, ...)).

  `policy(obs_NO, rng) -> (action_N, aux)` acts on the observations; the trajectory holds
  the observation acted on (`obs`), `action`, `aux`'s entries (e.g. log-probabilities and
  values) and the transition's (`VecEnv.step`)."""

  def body(carry, key):
    k_act, k_env = jax.random.split(key)
    action, aux = policy(carry['obs'], k_act)
    new, transition = vec_env.step(carry, action, k_env)
    return new, {'obs': carry['obs'], 'action': action, **aux, **transition}

  return jax.lax.scan(body, carry, jax.random.split(rng, num_steps))


def episode_stats(trajectory, carry) -> dict:
  """`episode_return`: the mean return of the episodes that ended in the trajectory, or,
  where none did, the mean of each environment's last finished return (so the metric is
  always defined); `episodes`: how many ended."""
  done = trajectory['done'].astype(jnp.float32)
  count = done.sum()
  mean_finished = trajectory['finished_return'].sum() / jnp.maximum(count, 1.0)
  return {'episode_return': jnp.where(count > 0, mean_finished, carry['last_return'].mean()),
          'episodes': count}


def gae(rewards_TN, values_TN, next_values_TN, terminated_TN, done_TN, gamma: float,
        lam: float):
  """Generalised advantage estimation (Schulman et al. 2016, eq. 16), as the reverse
  recursion (advantages, returns = advantages + values), all (T, N):

    delta_t = r_t + gamma (1 - terminated_t) V(s'_t) - V(s_t)
    A_t     = delta_t + gamma lam (1 - done_t) A_{t+1},   A_T = 0

  s'_t is the state transition t reached (`next_values` = V(final observation)), so a
  truncated episode bootstraps from its last state while a terminated one does not; any
  episode end (`done`) stops the sum from reaching into the next episode."""
  f32 = lambda x: jnp.asarray(x, jnp.float32)
  delta_TN = f32(rewards_TN) + gamma * (1.0 - f32(terminated_TN)) * next_values_TN - values_TN

  def body(adv_next_N, xs):
    delta_N, done_N = xs
    adv_N = delta_N + gamma * lam * (1.0 - f32(done_N)) * adv_next_N
    return adv_N, adv_N

  _, adv_TN = jax.lax.scan(body, jnp.zeros_like(delta_TN[0]), (delta_TN, done_TN),
                           reverse=True)
  return adv_TN, adv_TN + values_TN


def evaluate_episodes(env, env_params, act, rng, num_episodes: int, max_steps: int = 0):
  """{'return': mean, 'return_min': min} over `num_episodes` episodes, one per
  environment, each played from a reset until it terminates or is truncated (or
  `max_steps`, default the environment's episode limit). `act(obs_NO, rng) -> action_N`."""
  max_steps = int(max_steps or env_params.max_steps_in_episode)
  vec = VecEnv(env, env_params, num_episodes)
  k_reset, k_run = jax.random.split(rng)
  carry = vec.reset(k_reset)

  def body(state, key):
    carry, ret_N, alive_N = state
    k_act, k_env = jax.random.split(key)
    carry, tr = vec.step(carry, act(carry['obs'], k_act), k_env)
    ret_N = ret_N + jnp.where(alive_N, tr['reward'], 0.0)
    return (carry, ret_N, alive_N & ~tr['done']), None

  zeros = jnp.zeros((num_episodes,), jnp.float32)
  (_, ret_N, _), _ = jax.lax.scan(body, (carry, zeros, jnp.ones((num_episodes,), bool)),
                                  jax.random.split(k_run, max_steps))
  return {'return': ret_N.mean(), 'return_min': ret_N.min()}


class CategoricalAgent:
  """What the on-policy agents over an actor-critic network with discrete actions share
  (PPO, A2C): the environment, the rollout size, the network (params -> (logits (B, A),
  values (B,))), `init`, acting and evaluation. A subclass calls `setup` from its
  `__init__` and defines `loss` and `make_step`."""

  def setup(self, config, opts, name: str, update: str):
    """Sets `opts`, `env`, `env_params`, `rollout_size`, `vec_env` and `model` from the
    config, checking what every on-policy agent needs (`update` says, for the error, how the
    agent splits its rollout instead of gradient accumulation)."""
    self.opts = opts
    env, env_params = make_env(opts.env)
    if not hasattr(env.action_space(env_params), 'n'):
      raise ConfigError(f'task_kwargs.env={opts.env!r} has continuous actions; this {name} '
                        f'samples a categorical policy (discrete actions only)')
    if opts.num_envs < 1 or opts.num_steps < 1:
      raise ConfigError('task_kwargs.num_envs and num_steps must be >= 1')
    self.env, self.env_params = env, env_params
    self.rollout_size = opts.num_envs * opts.num_steps
    if config.batch_size != self.rollout_size:
      raise ConfigError(f'batch_size={config.batch_size} must be num_envs x num_steps = '
                        f'{opts.num_envs} x {opts.num_steps} = {self.rollout_size} (the '
                        f'environment steps of one train step)')
    if int(config.get('grad_accum_steps', 1)) != 1:
      raise ConfigError(f'{name} {update}; set grad_accum_steps=1')
    self.vec_env = VecEnv(env, env_params, opts.num_envs)
    self.model = arch.model_from_config(config, num_actions=int(env.action_space(env_params).n))

  def init(self, rng, batch):
    del batch  # no data
    k_params, k_env = jax.random.split(rng)
    carry = self.vec_env.reset(k_env)
    return {**self.model.init(k_params, carry['obs']), ENV: carry}

  def act(self, params, greedy: bool):
    """act(obs, key) -> actions: the argmax of the logits, or a sample of them."""
    def act(obs, key):
      logits_NA, _ = self.model.apply({'params': params}, obs)
      return logits_NA.argmax(-1) if greedy else jax.random.categorical(key, logits_NA)
    return act

  def evaluate_run(self, variables, rng):
    return evaluate_episodes(self.env, self.env_params,
                             self.act(variables['params'], self.opts.eval_greedy), rng,
                             self.opts.eval_episodes)

  def task(self) -> Task:
    sample, prompt_batch = render.make_sample(self.opts.env, self.env, self.env_params,
                                              self.act)
    return Task(init=self.init, loss=self.loss, example_batch=lambda batch_size: {},
                make_step=self.make_step, input=no_input, evaluate_run=self.evaluate_run,
                sample=sample, prompt_batch=prompt_batch)
