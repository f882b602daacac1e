"""Advantage actor-critic, A2C: the synchronous form of A3C (Mnih et al. 2016, "Asynchronous
methods for deep reinforcement learning"; synchronous as in OpenAI baselines and
Stable-Baselines3), on gymnax environments with discrete actions, end to end in one jitted
train step.

Each step of the loop:
1. runs the policy (the current params) in N environments for T steps (the paper's
   t_max), vectorised with jax.vmap and scanned with lax.scan (arch/rl/common.py),
   keeping V(s_t);
2. computes the returns R_t and advantages A_t = R_t - V(s_t) with GAE(lambda) (Schulman
   et al. 2016): lambda = 1 (the default) gives the paper's n-step return, every step's
   rewards to the end of the rollout plus gamma^k V of the state reached there,
     R_t = r_t + gamma r_t+1 + ... + gamma^(k-1) r_t+k-1 + gamma^k V(s_t+k);
   an episode that ends inside the rollout stops the sum, a termination adds no value and
   a time-limit truncation bootstraps from its last state (gymnax 1.0 reports the two
   apart; Pardo et al. 2018);
3. takes ONE gradient step (the loop's `supervised` builder: the config's optimizer,
   clipping and schedule) on all N T samples of the rollout,

     L = -mean_t log pi(a_t|s_t) A_t + c_v mean_t (R_t - V(s_t))^2 - c_e mean_t S[pi(.|s_t)],

   A_t and R_t constants of the gradient (the policy gradient with the value as its
   baseline, the critic regressed on the returns, an entropy bonus), with A_t optionally
   normalised over the rollout (`normalize_advantages`). The rollout is on-policy: the
   params that collected it are the ones differentiated.

State: the environments, their last observations and the episode bookkeeping are the
non-param collection 'env' (`common.VecEnv`'s carry), so a resumed run continues the same
episodes bit for bit. Keys come from `builders.shared_rng`, so every device runs the same
rollout (the environments are not split over devices).

`normalize_obs` (RL Zoo's `normalize: {norm_obs: True, norm_reward: False}`, i.e.
Stable-Baselines3's VecNormalize on observations): the policy and critic see observations
standardised by a running mean and variance of every observation acted on so far, (o -
mean) / sqrt(var + 1e-8) clipped to +-10; each rollout step adds its N observations to the
statistics before normalising them. The statistics are the non-param collection
'obs_norm', checkpointed and restored with the environments, and frozen at evaluation and
in `train.sample`.

Config keys read: `model_name` (a network `Model(num_actions=...)` returning (logits (B, A),
values (B,)), e.g. 'rl.actor_critic'), `model`, `batch_size` (must be num_envs x
num_steps, so the loop's `examples_per_sec` is environment steps per second),
`grad_accum_steps` (must be 1), and `task_kwargs`, the fields of `Options`.
Train metrics: `loss`, `policy_loss`, `value_loss`, `entropy`, `grad_norm`,
`learning_rate`, and the rollout's `episode_return` and `episodes`. `evaluate_run`:
`return` (and `return_min`) over `eval_episodes` whole episodes of the greedy policy.

Dimension key: T rollout steps, N environments, B = T N samples, A actions.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp

from arch.rl import common
from arch.task import Task, parse_options

ENV = common.ENV  # the non-param collection holding the environments (common.VecEnv's carry)
OBS_NORM = 'obs_norm'  # the non-param collection of the running observation statistics
OBS_EPS = 1e-8  # added to the variance before the square root, as Stable-Baselines3


def init_obs_stats(obs_shape) -> dict:
  """Mean 0, variance 1 and a count of 1e-4 (Stable-Baselines3's RunningMeanStd start)."""
  return {'mean': jnp.zeros(obs_shape, jnp.float32), 'var': jnp.ones(obs_shape, jnp.float32),
          'count': jnp.asarray(1e-4, jnp.float32)}


def update_obs_stats(stats: dict, obs_NO) -> dict:
  """The statistics of all observations so far and the batch `obs_NO`, merged by the
  parallel-variance formula (Chan et al. 1979): with delta = mean_N - mean and n' = n + N,
  mean' = mean + delta N / n', var' = (var n + var_N N + delta^2 n N / n') / n'."""
  n_new = jnp.asarray(obs_NO.shape[0], jnp.float32)
  mean_N, var_N = obs_NO.mean(0), obs_NO.var(0)
  count = stats['count'] + n_new
  delta = mean_N - stats['mean']
  m2 = stats['var'] * stats['count'] + var_N * n_new + delta ** 2 * stats['count'] * n_new / count
  return {'mean': stats['mean'] + delta * n_new / count, 'var': m2 / count, 'count': count}


def normalize_obs(stats: dict, obs, clip: float):
  """(obs - mean) / sqrt(var + 1e-8), clipped to +-clip."""
  return jnp.clip((obs - stats['mean']) / jnp.sqrt(stats['var'] + OBS_EPS), -clip, clip)


@dataclasses.dataclass(frozen=True)
class Options:
  """A2C's task_kwargs."""
  env: str = 'CartPole-v1'       # a gymnax environment id
  num_envs: int = 8              # N
  num_steps: int = 5             # T: the rollout length (t_max)
  gamma: float = 0.99
  gae_lambda: float = 1.0        # 1: n-step returns
  vf_coef: float = 0.5           # c_v
  ent_coef: float = 0.0          # c_e
  normalize_advantages: bool = False  # over the rollout
  eval_episodes: int = 32
  eval_greedy: bool = True       # argmax actions at evaluation; False: sampled
  normalize_obs: bool = False    # running mean / std of the observations (VecNormalize)
  obs_clip: float = 10.0         # normalised observations clipped to +-obs_clip


def a2c_loss(logits_BA, value_B, action_B, advantage_B, return_B, vf_coef: float,
             ent_coef: float):
  """(L, metrics) of the module docstring on B samples; the advantages and returns are
  treated as constants."""
  log_p_BA = jax.nn.log_softmax(logits_BA)
  log_prob_B = jnp.take_along_axis(log_p_BA, action_B[:, None], axis=-1)[:, 0]
  adv_B = jax.lax.stop_gradient(advantage_B)
  policy_loss = -(log_prob_B * adv_B).mean()
  value_loss = ((jax.lax.stop_gradient(return_B) - value_B) ** 2).mean()
  entropy = -(jnp.exp(log_p_BA) * log_p_BA).sum(-1).mean()
  loss = policy_loss + vf_coef * value_loss - ent_coef * entropy
  return loss, {'policy_loss': policy_loss, 'value_loss': value_loss, 'entropy': entropy}


class Agent(common.CategoricalAgent):
  """A2C's pieces for one config; `task()` assembles the loop's Task from them."""

  def __init__(self, config):
    self.setup(config, parse_options(Options, config), 'A2C',
               'takes one gradient step on the whole rollout')

  def collect(self, params, rollout_state, rng):
    """(rollout_state, samples, stats): a rollout of the policy `params` from
    `rollout_state` ({ENV: the environments' carry} and, with `normalize_obs`, {OBS_NORM:
    the running statistics}), flattened to N T samples {obs, action, advantage, return},
    and its episode statistics."""
    opts = self.opts

    def policy(obs, key):
      logits_NA, value_N = self.model.apply({'params': params}, obs)
      return jax.random.categorical(key, logits_NA), {'value': value_N}

    if opts.normalize_obs:
      carry, obs_stats, traj = self._normalized_rollout(policy, rollout_state[ENV],
                                                        rollout_state[OBS_NORM], rng)
      rollout_state = {ENV: carry, OBS_NORM: obs_stats}
    else:
      carry, traj = common.rollout(self.vec_env, policy, rollout_state[ENV], rng,
                                   opts.num_steps)
      rollout_state = {ENV: carry}
    t, n = opts.num_steps, opts.num_envs
    final_obs = traj['final_obs'].reshape(t * n, *traj['final_obs'].shape[2:])
    next_value_TN = self.model.apply({'params': params}, final_obs)[1].reshape(t, n)
    adv_TN, ret_TN = common.gae(traj['reward'], traj['value'], next_value_TN,
                                traj['terminated'], traj['done'], opts.gamma, opts.gae_lambda)
    samples = {'obs': traj['obs'], 'action': traj['action'], 'advantage': adv_TN,
               'return': ret_TN}
    samples = jax.tree.map(lambda x: x.reshape(t * n, *x.shape[2:]), samples)
    return rollout_state, samples, common.episode_stats(traj, carry)

  def _normalized_rollout(self, policy, carry, obs_stats, rng):
    """common.rollout where each step's observations first join the running statistics and
    are then normalised by them (VecNormalize's order), as is the observation a transition
    reached (`final_obs`, for bootstrapping): (carry, obs_stats, trajectory)."""
    clip = self.opts.obs_clip

    def body(xs, key):
      carry, stats = xs
      stats = update_obs_stats(stats, carry['obs'])
      obs = normalize_obs(stats, carry['obs'], clip)
      k_act, k_env = jax.random.split(key)
      action, aux = policy(obs, k_act)
      new, transition = self.vec_env.step(carry, action, k_env)
      transition['final_obs'] = normalize_obs(stats, transition['final_obs'], clip)
      return (new, stats), {'obs': obs, 'action': action, **aux, **transition}

    (carry, obs_stats), traj = jax.lax.scan(body, (carry, obs_stats),
                                            jax.random.split(rng, self.opts.num_steps))
    return carry, obs_stats, traj

  def init(self, rng, batch):
    variables = super().init(rng, batch)
    if self.opts.normalize_obs:
      variables[OBS_NORM] = init_obs_stats(variables[ENV]['obs'].shape[1:])
    return variables

  def act(self, params, greedy: bool):
    """As CategoricalAgent.act; with `normalize_obs`, `params` is (params, the running
    statistics), which normalise the observations (frozen: evaluation does not update them)."""
    if not self.opts.normalize_obs:
      return super().act(params, greedy)
    params, obs_stats = params
    act = super().act(params, greedy)
    return lambda obs, key: act(normalize_obs(obs_stats, obs, self.opts.obs_clip), key)

  def _policy(self, variables):
    """What `act` takes: the params, with the observation statistics when normalising."""
    if self.opts.normalize_obs:
      return variables['params'], variables[OBS_NORM]
    return variables['params']

  def evaluate_run(self, variables, rng):
    return common.evaluate_episodes(self.env, self.env_params,
                                    self.act(self._policy(variables), self.opts.eval_greedy),
                                    rng, self.opts.eval_episodes)

  def task(self) -> Task:
    task = super().task()
    if not self.opts.normalize_obs:
      return task
    render_sample = task.sample  # calls act(variables['params'], greedy)

    @functools.wraps(render_sample)  # its keyword options are the sampler's flags
    def sample(variables, batch, rng, **kw):
      return render_sample({'params': self._policy(variables)}, batch, rng, **kw)

    return task._replace(sample=sample)

  def loss(self, variables, samples, rng):
    """The loop's loss signature; non-param collections pass through unchanged."""
    del rng
    opts = self.opts
    logits_BA, value_B = self.model.apply({'params': variables['params']}, samples['obs'])
    adv_B = samples['advantage']
    if opts.normalize_advantages:
      adv_B = (adv_B - adv_B.mean()) / (adv_B.std() + 1e-8)
    loss, metrics = a2c_loss(logits_BA, value_B, samples['action'], adv_B, samples['return'],
                             opts.vf_coef, opts.ent_coef)
    return loss, (metrics, {k: v for k, v in variables.items() if k != 'params'})

  def make_step(self, builders):
    """The loop's inner step: a rollout, then one library update on all of it."""
    update = builders.supervised(self.loss, accum=1)

    def step(state, batch, rng):
      del batch  # no data; the rollout's keys from the state alone (module docstring)
      kept = (ENV, OBS_NORM)
      rollout_state = {k: v for k, v in state.extra.items() if k in kept}
      rollout_state, samples, stats = self.collect(state.params, rollout_state,
                                                   builders.shared_rng(state))
      others = {k: v for k, v in state.extra.items() if k not in kept}
      new, metrics = update(state.replace(extra=others), samples, rng)
      return new.replace(extra={**new.extra, **rollout_state}), {**metrics, **stats}

    return step


def make(config) -> Task:
  return Agent(config).task()
