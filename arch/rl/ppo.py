"""Proximal policy optimisation, PPO (Schulman et al. 2017, "Proximal policy optimization
algorithms"), with the clipped surrogate objective, on gymnax environments with discrete
actions, end to end in one jitted train step.

Each step of the loop (Algorithm 1, "PPO, actor-critic style"):
1. runs the policy pi_old (the current params) in N environments for T steps, vectorised
   with jax.vmap and scanned with lax.scan (arch/rl/common.py), keeping log pi_old(a|s)
   and V_old(s);
2. computes GAE(lambda) advantages A_t and returns R_t = A_t + V_old(s_t) (Schulman et al.
   2016, eq. 16), bootstrapping a time-limit truncation from its final state and a
   termination from nothing (gymnax 1.0 reports `terminated` and `truncated` apart);
3. for `epochs` passes over the N T samples in `minibatches` shuffled minibatches, takes
   one gradient step (the loop's `supervised` builder: the config's optimizer, grad-norm
   clipping and schedule) on the loss of eq. (9) with its sign flipped,

     L = -L^CLIP + c1 L^VF - c2 S[pi],
     L^CLIP = mean_t min(r_t A_t, clip(r_t, 1 - eps, 1 + eps) A_t)             (eq. 7)
              with the ratio r_t = pi(a_t|s_t) / pi_old(a_t|s_t),
     L^VF   = 1/2 mean_t (V(s_t) - R_t)^2, or with `clip_value` (OpenAI baselines' PPO2)
              1/2 mean_t max((V - R_t)^2, (V_old + clip(V - V_old, -eps, eps) - R_t)^2)
     S      = mean_t entropy of pi(.|s_t),

   with A_t normalised to zero mean and unit std within each minibatch (an implementation
   detail of the reference code, Huang et al. 2022). On the first minibatch of the first
   epoch the params are pi_old's, so r_t = 1 (tests/test_ppo.py checks it).

The learning rate anneals with the optimizer's own update count, which advances
`epochs x minibatches` times per loop step: a config sets `decay_steps` in those units.

State: the environments, their last observations and the episode bookkeeping are the
non-param collection 'env' (`common.VecEnv`'s carry), so checkpoints hold them and a
resumed run continues the same episodes with the same keys, bit for bit. The step draws its
keys from `builders.shared_rng` (the state's rng and step alone, not the per-device key the
loop passes under pmap), so every device runs the same rollout and the checkpoint's one copy of the
environments is every device's; the N environments are not split over devices.

Config keys read: `model_name` (a network `Model(num_actions=...)` returning (logits (B, A),
values (B,)), e.g. 'rl.actor_critic'), `model`, `batch_size` (must be num_envs x
num_steps: the environment steps of one loop step, so the loop's `examples_per_sec` is
environment steps per second), `grad_accum_steps` (must be 1), and `task_kwargs`, the
fields of `Options`.
Train metrics: `loss`, `policy_loss`, `value_loss`, `entropy`, `approx_kl` (the k3
estimator mean((r - 1) - log r), Schulman 2020, "Approximating KL divergence"),
`clip_fraction` (|r - 1| > eps), averaged over the step's updates; `episode_return` and
`episodes` of the rollout (`common.episode_stats`); `learning_rate` of the step's first
update. `evaluate_run`: `return` (and `return_min`) over `eval_episodes` whole episodes of
the greedy policy (argmax of the logits; `eval_greedy=False` samples it).

Dimension key: T rollout steps, N environments, B samples of a minibatch, A actions.
"""

import dataclasses

import jax
import jax.numpy as jnp

from arch.rl import common
from arch.task import ConfigError, Task, parse_options

ENV = common.ENV  # the non-param collection holding the environments (common.VecEnv's carry)


@dataclasses.dataclass(frozen=True)
class Options:
  """PPO's task_kwargs."""
  env: str = 'CartPole-v1'       # a gymnax environment id
  num_envs: int = 4              # N
  num_steps: int = 128           # T: rollout length per environment and step
  epochs: int = 4                # passes over each rollout
  minibatches: int = 4           # per pass
  gamma: float = 0.99
  gae_lambda: float = 0.95
  clip_eps: float = 0.2          # eps of the ratio (and of the value clipping)
  clip_value: bool = True
  vf_coef: float = 0.5           # c1
  ent_coef: float = 0.01         # c2
  normalize_advantages: bool = True  # per minibatch
  eval_episodes: int = 32
  eval_greedy: bool = True       # argmax actions at evaluation; False: sampled


def clipped_surrogate(log_prob_B, old_log_prob_B, adv_B, eps: float):
  """(L^CLIP, ratio (B,)) of eq. (7)."""
  ratio_B = jnp.exp(log_prob_B - old_log_prob_B)
  unclipped = ratio_B * adv_B
  clipped = jnp.clip(ratio_B, 1.0 - eps, 1.0 + eps) * adv_B
  return jnp.minimum(unclipped, clipped).mean(), ratio_B


def value_loss(value_B, old_value_B, return_B, eps: float, clip: bool):
  """1/2 mean (V - R)^2, or its clipped form (module docstring)."""
  loss_B = (value_B - return_B) ** 2
  if clip:
    clipped_B = old_value_B + jnp.clip(value_B - old_value_B, -eps, eps)
    loss_B = jnp.maximum(loss_B, (clipped_B - return_B) ** 2)
  return 0.5 * loss_B.mean()


def _log_prob(logits_BA, action_B):
  log_p_BA = jax.nn.log_softmax(logits_BA)
  return jnp.take_along_axis(log_p_BA, action_B[:, None], axis=-1)[:, 0], log_p_BA


class Agent(common.CategoricalAgent):
  """PPO's pieces for one config; `task()` assembles the loop's Task from them."""

  def __init__(self, config):
    opts = parse_options(Options, config)
    if opts.epochs < 1 or opts.minibatches < 1:
      raise ConfigError('task_kwargs.epochs and minibatches must be >= 1')
    self.setup(config, opts, 'PPO', 'splits its rollout into its own minibatches '
               '(task_kwargs.minibatches)')
    if self.rollout_size % opts.minibatches:
      raise ConfigError(f'num_envs x num_steps = {self.rollout_size} does not split into '
                        f'{opts.minibatches} minibatches')

  # ----------------------------------------------------------------------- pieces

  def collect(self, params, carry, rng):
    """(carry, samples, stats): a rollout of pi_old = `params` from `carry`, flattened to
    N T samples {obs, action, log_prob, value, advantage, return}, and the rollout's
    episode statistics."""
    opts = self.opts

    def policy(obs, key):
      logits_NA, value_N = self.model.apply({'params': params}, obs)
      action_N = jax.random.categorical(key, logits_NA)
      return action_N, {'log_prob': _log_prob(logits_NA, action_N)[0], 'value': value_N}

    carry, traj = common.rollout(self.vec_env, policy, carry, rng, opts.num_steps)
    t, n = opts.num_steps, opts.num_envs
    final_obs = traj['final_obs'].reshape(t * n, *traj['final_obs'].shape[2:])
    next_value_TN = self.model.apply({'params': params}, final_obs)[1].reshape(t, n)
    adv_TN, ret_TN = common.gae(traj['reward'], traj['value'], next_value_TN,
                                traj['terminated'], traj['done'], opts.gamma, opts.gae_lambda)
    samples = {'obs': traj['obs'], 'action': traj['action'], 'log_prob': traj['log_prob'],
               'value': traj['value'], 'advantage': adv_TN, 'return': ret_TN}
    samples = jax.tree.map(lambda x: x.reshape(t * n, *x.shape[2:]), samples)
    return carry, samples, common.episode_stats(traj, carry)

  def minibatches(self, samples, rng):
    """One epoch's shuffled minibatches, stacked on a leading axis (M, B, ...)."""
    m = self.opts.minibatches
    perm = jax.random.permutation(rng, self.rollout_size)
    return jax.tree.map(lambda x: x[perm].reshape(m, self.rollout_size // m, *x.shape[1:]),
                        samples)

  def terms(self, params, mb):
    """(loss, metrics, ratio (B,)) of one minibatch (the module docstring's L)."""
    opts = self.opts
    logits_BA, value_B = self.model.apply({'params': params}, mb['obs'])
    log_prob_B, log_p_BA = _log_prob(logits_BA, mb['action'])
    adv_B = mb['advantage']
    if opts.normalize_advantages:
      adv_B = (adv_B - adv_B.mean()) / (adv_B.std() + 1e-8)
    surrogate, ratio_B = clipped_surrogate(log_prob_B, mb['log_prob'], adv_B, opts.clip_eps)
    v_loss = value_loss(value_B, mb['value'], mb['return'], opts.clip_eps, opts.clip_value)
    entropy = -(jnp.exp(log_p_BA) * log_p_BA).sum(-1).mean()
    loss = -surrogate + opts.vf_coef * v_loss - opts.ent_coef * entropy
    log_ratio_B = log_prob_B - mb['log_prob']
    metrics = {'policy_loss': -surrogate, 'value_loss': v_loss, 'entropy': entropy,
               'approx_kl': ((ratio_B - 1.0) - log_ratio_B).mean(),
               'clip_fraction': (jnp.abs(ratio_B - 1.0) > opts.clip_eps).mean()}
    return loss, metrics, ratio_B

  def loss(self, variables, mb, rng):
    """The loop's loss signature; non-param collections pass through unchanged."""
    del rng
    loss, metrics, _ = self.terms(variables['params'], mb)
    return loss, (metrics, {k: v for k, v in variables.items() if k != 'params'})

  def make_step(self, builders):
    """The loop's inner step: a rollout, then `epochs` x `minibatches` library updates."""
    opts = self.opts
    update = builders.supervised(self.loss, accum=1)
    updates_per_step = opts.epochs * opts.minibatches

    def step(state, batch, rng):
      del batch, rng  # no data; keys from the state alone (module docstring)
      key = builders.shared_rng(state)
      k_rollout, k_shuffle = jax.random.split(key)
      carry, samples, stats = self.collect(state.params, state.extra[ENV], k_rollout)
      # The environments stay out of the updates (under pmap the builders average the
      # non-param state over devices).
      others = {k: v for k, v in state.extra.items() if k != ENV}

      def epoch(state, e):
        mbs = self.minibatches(samples, jax.random.fold_in(k_shuffle, e))
        return jax.lax.scan(lambda s, mb: update(s, mb, k_shuffle), state, mbs)

      new, metrics = jax.lax.scan(epoch, state.replace(extra=others), jnp.arange(opts.epochs))
      metrics = jax.tree.map(jnp.mean, metrics)
      metrics['learning_rate'] = builders.schedule(state.step * updates_per_step)
      return new.replace(extra={**new.extra, ENV: carry}), {**metrics, **stats}

    return step


def make(config) -> Task:
  return Agent(config).task()
