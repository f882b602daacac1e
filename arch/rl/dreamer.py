"""Dreamer, following DreamerV3 (Hafner et al. 2023, "Mastering diverse domains through world
models"; the RSSM of Hafner et al. 2019, "Learning latent dynamics for planning from pixels",
and the actor-critic in imagination of "Dream to control", 2020, and DreamerV2, 2021), on
gymnax environments with discrete actions, end to end in one jitted train step.

World model. A recurrent state-space model (RSSM) keeps a deterministic state h_t (a GRU)
and a stochastic one z_t, S categorical variables of K classes each:

  h_t = GRU(h_{t-1}, [z_{t-1}, a_{t-1}])           sequence model
  z_t ~ q(z_t | h_t, e_t),  e_t = enc(symlog o_t)  posterior (sees the observation)
  z^_t ~ p(z^_t | h_t)                              prior (dynamics predictor, h_t alone)

with heads on the feature [h_t, z_t]: the decoder (symlog o_t, squared error), the reward
and the continue flag (1 - terminal). Every categorical mixes 1% of the uniform into its
probabilities (unimix), and z is drawn with straight-through gradients, onehot(z) + p -
sg(p), so the sample's gradient is the probabilities'. The loss of a batch of replayed
sequences (mean over B sequences x L steps):

  L = L_pred + 0.5 L_dyn + 0.1 L_rep,
  L_pred = |dec - symlog o|^2 - ln p(r) - ln p(c)
  L_dyn  = max(1, KL[sg(q) || p]),  L_rep = max(1, KL[q || sg(p)])   (KL balancing with
                                                                      1 nat of free bits)

The reward head and the critic predict two-hot distributions over `num_bins` bins spaced
evenly in symlog space on [-20, 20] (symlog x = sign(x) ln(1 + |x|), symexp its inverse):
a target y puts weight on the two bins around symlog y so that the expectation over bins is
symlog y exactly, the loss is the cross-entropy, and the prediction symexp(E[bin]).

Behaviour. From every posterior state of the batch (B L starts, no gradient into the world
model) the actor pi(a | h, z) imagines H steps with the prior, giving features s_0..s_H,
actions a_0..a_{H-1}, rewards r_1..r_H and continues c_1..c_H (the continue head's mode;
c_0 is the replayed step's own) and critic values v_0..v_H. The lambda-returns

  R_t = r_{t+1} + gamma c_{t+1} ((1 - lambda) v_{t+1} + lambda R_{t+1}),  R_H = v_H

weight each step by w_t = gamma^t prod_{k<=t} c_k (episodes that ended count no more).
Returns are normalised by S = max(1, P95 - P5) of the returns, both percentiles an EMA
(decay 0.99) kept in the train state. The actor (discrete actions: REINFORCE, as DreamerV3
does for them) minimises -mean w_t [sg((R_t - v_t) / S) ln pi(a_t|s_t) + eta H[pi(.|s_t)]],
eta = 3e-4; the critic the two-hot cross-entropy of R_t plus that of the slow critic's value
(an EMA of its params, rate 0.02 per update), as a regulariser. Left out of DreamerV3: the
replay-trajectory critic loss (weight 0.3 there) and LaProp with adaptive gradient clipping
(Adam with norm clipping here).

One loop step: T vector steps of N environments, acting with the actor on the posterior
state the agent filters along each episode (uniform random actions before `learning_starts`
environment steps), every step written to per-environment replay streams; then
`updates_per_step` updates, each a world-model phase on B sequences of L steps drawn from
the streams, an imagination from its posterior states, and actor and critic phases on the
imagined trajectories (`builders.phased`, one optimizer per group 'world', 'actor',
'critic', `config.optimizers`). A stream row is DreamerV3's step record: the observation,
the action that led to it, the reward received on arriving, `first` (an episode's reset
observation) and `terminal`. gymnax resets a finished environment inside `step`, so a step
that ends an episode writes two rows: the final observation reached (`terminal` when the
pole fell, not when the time limit cut the episode), and the next episode's first one. A
sequence may cross episodes; the RSSM restarts from its learned initial state (h = tanh(w),
z the prior's mode there) at `first` rows and at the start of each sequence.

State: the environments ('env', `common.VecEnv`'s carry), the agent's filtered latent per
environment ('latent'), the replay streams ('replay'), the slow critic ('slow_critic') and
the return percentiles ('retnorm') are non-param collections, so a resumed run continues
the same episodes from the same memory, bit for bit; keys come from `builders.shared_rng`.

Config keys read: `model_name` (this module's `Model`), `model`, `batch_size` (must be
num_envs x num_steps, the environment steps of one loop step), `task_kwargs` (`Options`).
Train metrics (means over the step's updates, 0 before learning starts): `world/*` (loss
terms, `kl`), `actor/*` (`entropy`, `advantage`), `critic/*` (`value`), `imag_return`,
`return_scale`, grad norms, `loss`, `updates`, `episode_return`, `episodes`. `evaluate_run`:
`return` and `return_min` over `eval_episodes` episodes of the actor filtering its latent
(its mode with `eval_greedy`, else sampled).

Dimension key: B batch (sequences, starts, environments), L sequence steps, H imagination
steps, N environments, C stream capacity, O observation features, A actions, D deter size,
S stochastic variables, K their classes (or two-hot bins), Z = S K, F = D + Z features.
"""

import dataclasses
import functools

import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

import arch
from arch.rl import common, render
from arch.task import ConfigError, Task, no_input, parse_options, row_keys, unconditional_rows

ENV = common.ENV        # the environments (common.VecEnv's carry)
LATENT = 'latent'       # {'deter': (N, D), 'stoch': (N, Z)}: the posterior state acted on
REPLAY = 'replay'       # per-environment streams of step records
SLOW = 'slow_critic'    # the EMA of the critic's params
RETNORM = 'retnorm'     # {'lo', 'hi'}: EMAs of the 5th and 95th return percentiles
_STARTS = 'starts'      # passes the posterior states from the world phase to the step


@dataclasses.dataclass(frozen=True)
class Options:
  """Dreamer's task_kwargs."""
  env: str = 'CartPole-v1'       # a gymnax environment id with discrete actions
  num_envs: int = 4              # N
  num_steps: int = 4             # T vector steps per loop step
  updates_per_step: int = 1      # world-model + behaviour updates per loop step
  batch_seqs: int = 16           # B replayed sequences per update
  seq_len: int = 32              # L
  buffer_size: int = 50_000      # C rows per environment stream
  learning_starts: int = 1_000   # environment steps of uniform random actions first
  horizon: int = 15              # H imagined steps
  gamma: float = 0.99
  lam: float = 0.95
  free_nats: float = 1.0
  dyn_scale: float = 0.5
  rep_scale: float = 0.1
  entropy: float = 3e-4          # eta
  slow_rate: float = 0.02        # slow critic's EMA rate per update
  slow_reg: float = 1.0          # weight of the slow-critic regulariser
  retnorm_decay: float = 0.99
  eval_episodes: int = 16
  eval_greedy: bool = True       # the actor's mode at evaluation; False: sampled


# ------------------------------------------------------------------- distributions


def symlog(x):
  return jnp.sign(x) * jnp.log1p(jnp.abs(x))


def symexp(x):
  return jnp.sign(x) * jnp.expm1(jnp.abs(x))


def bins(num_bins: int):
  """The two-hot bins (K,), evenly spaced in symlog space."""
  return jnp.linspace(-20.0, 20.0, num_bins)


def twohot(y, bins_K):
  """(..., K) weights on the two bins around y (clipped into the range) whose expectation
  over the bins is y."""
  k = bins_K.shape[0]
  y = jnp.clip(y, bins_K[0], bins_K[-1])
  below = jnp.clip(jnp.searchsorted(bins_K, y, side='right') - 1, 0, k - 2)
  lo, hi = bins_K[below], bins_K[below + 1]
  w_hi = (y - lo) / (hi - lo)
  return (jax.nn.one_hot(below, k) * (1.0 - w_hi)[..., None]
          + jax.nn.one_hot(below + 1, k) * w_hi[..., None])


def twohot_mean(logits_K, bins_K):
  """symexp of the expected bin: the prediction of a two-hot symlog head."""
  return symexp((jax.nn.softmax(logits_K) * bins_K).sum(-1))


def twohot_loss(logits_K, target, bins_K):
  """-ln p(target): the cross-entropy against the two-hot of symlog target."""
  return -(twohot(symlog(target), bins_K) * jax.nn.log_softmax(logits_K)).sum(-1)


def unimix(logits, mix: float):
  """Log-probabilities of (1 - mix) softmax(logits) + mix / K."""
  if not mix:
    return jax.nn.log_softmax(logits)
  probs = (1.0 - mix) * jax.nn.softmax(logits) + mix / logits.shape[-1]
  return jnp.log(probs)


def straight_through(rng, logits_SK):
  """A one-hot sample (..., S, K) whose gradient is that of the probabilities."""
  probs = jnp.exp(logits_SK)
  sample = jax.nn.one_hot(jax.random.categorical(rng, logits_SK), logits_SK.shape[-1])
  return sample + probs - jax.lax.stop_gradient(probs)


def categorical_kl(lhs_SK, rhs_SK):
  """KL[lhs || rhs] (...,) of S categoricals given as log-probabilities, summed over S."""
  return (jnp.exp(lhs_SK) * (lhs_SK - rhs_SK)).sum((-2, -1))


def kl_balance(post_SK, prior_SK, free_nats: float):
  """(L_dyn, L_rep) (...,): KL[sg(post) || prior] and KL[post || sg(prior)], each clipped
  below at `free_nats` (free bits)."""
  sg = jax.lax.stop_gradient
  dyn = categorical_kl(sg(post_SK), prior_SK)
  rep = categorical_kl(post_SK, sg(prior_SK))
  return jnp.maximum(dyn, free_nats), jnp.maximum(rep, free_nats)


def lambda_returns(reward_HB, cont_HB, value_HB, gamma: float, lam: float):
  """R_0..R_{H-1} (H, B) of the module docstring from r_1..r_H, c_1..c_H (H, B) and
  v_0..v_H (H + 1, B), as the reverse recursion."""

  def body(ret_next, xs):
    r, c, v_next = xs
    ret = r + gamma * c * ((1.0 - lam) * v_next + lam * ret_next)
    return ret, ret

  _, ret_HB = jax.lax.scan(body, value_HB[-1], (reward_HB, cont_HB, value_HB[1:]),
                           reverse=True)
  return ret_HB


# ------------------------------------------------------------------------- networks


class MLP(nn.Module):
  """Dense -> LayerNorm -> SiLU layers (DreamerV3's blocks), then an optional output."""
  hidden: int = 256
  layers: int = 2
  out: int = 0
  zero_out: bool = False  # the output layer starts at zero (reward head, critic)

  @nn.compact
  def __call__(self, x):
    for i in range(self.layers):
      x = nn.Dense(self.hidden, name=f'dense_{i}')(x)
      x = nn.silu(nn.LayerNorm(epsilon=1e-3, name=f'norm_{i}')(x))
    if self.out:
      init = nn.initializers.zeros if self.zero_out else nn.initializers.lecun_normal()
      x = nn.Dense(self.out, kernel_init=init, name='out')(x)
    return x


class NormGRU(nn.Module):
  """DreamerV3's GRU: one layer-normed projection of [x, h] into reset, candidate and update
  gates, the update gate biased towards keeping h (sigmoid(u - 1))."""
  size: int = 256

  @nn.compact
  def __call__(self, x_BH, h_BD):
    parts = nn.LayerNorm(epsilon=1e-3, name='norm')(
        nn.Dense(3 * self.size, name='gates')(jnp.concatenate([x_BH, h_BD], -1)))
    reset, cand, update = jnp.split(parts, 3, axis=-1)
    cand = jnp.tanh(jax.nn.sigmoid(reset) * cand)
    update = jax.nn.sigmoid(update - 1.0)
    return update * cand + (1.0 - update) * h_BD


class WorldModel(nn.Module):
  """Encoder, RSSM (sequence model, prior, posterior), decoder, reward and continue heads."""
  obs_dim: int
  num_actions: int
  deter: int = 256
  stoch: int = 16
  classes: int = 16
  hidden: int = 256
  layers: int = 2
  num_bins: int = 255
  unimix: float = 0.01

  def setup(self):
    z = self.stoch * self.classes
    self.encoder = MLP(self.hidden, self.layers)
    self.img_in = MLP(self.hidden, 1)
    self.gru = NormGRU(self.deter)
    self.prior_net = MLP(self.hidden, 1, z)
    self.post_net = MLP(self.hidden, 1, z)
    self.decoder = MLP(self.hidden, self.layers, self.obs_dim)
    self.reward_head = MLP(self.hidden, self.layers, self.num_bins, zero_out=True)
    self.cont_head = MLP(self.hidden, self.layers, 1)
    self.initial_deter = self.param('initial_deter', nn.initializers.zeros, (self.deter,))

  def _dist(self, logits_BZ):
    shape = (*logits_BZ.shape[:-1], self.stoch, self.classes)
    return unimix(logits_BZ.reshape(shape), self.unimix)

  def encode(self, obs):
    return self.encoder(symlog(jnp.asarray(obs, jnp.float32)))

  def initial(self, batch: int):
    """The learned state an episode starts from: h = tanh(w), z the prior's mode at h."""
    h_BD = jnp.broadcast_to(jnp.tanh(self.initial_deter), (batch, self.deter))
    prior = self._dist(self.prior_net(h_BD))
    z = jax.nn.one_hot(prior.argmax(-1), self.classes)
    return h_BD, z.reshape(batch, -1)

  def img_step(self, h_BD, z_BZ, action_BA):
    """(h_t, prior log-probabilities (B, S, K)) from h_{t-1}, z_{t-1}, a_{t-1} (one-hot)."""
    h_BD = self.gru(self.img_in(jnp.concatenate([z_BZ, action_BA], -1)), h_BD)
    return h_BD, self._dist(self.prior_net(h_BD))

  def obs_step(self, h_BD, embed_BE):
    """Posterior log-probabilities (B, S, K) of z_t from h_t and the observation's embedding."""
    return self._dist(self.post_net(jnp.concatenate([h_BD, embed_BE], -1)))

  def heads(self, feat_BF):
    """(decoded symlog observation (B, O), reward logits (B, K), continue logit (B,))."""
    return self.decoder(feat_BF), self.reward_head(feat_BF), self.cont_head(feat_BF)[..., 0]


class Model(nn.Module):
  """The world model, the actor and the critic, params keyed 'world', 'actor', 'critic'
  (the optimizer groups). Methods: `encode`, `img_step`, `obs_step`, `heads`, `policy`
  (action logits, unimixed), `value` (two-hot logits)."""
  obs_dim: int = 4
  num_actions: int = 2
  deter: int = 256
  stoch: int = 16
  classes: int = 16
  hidden: int = 256
  layers: int = 2
  num_bins: int = 255
  unimix: float = 0.01

  def setup(self):
    self.world = WorldModel(self.obs_dim, self.num_actions, self.deter, self.stoch,
                            self.classes, self.hidden, self.layers, self.num_bins,
                            self.unimix)
    self.actor = MLP(self.hidden, self.layers, self.num_actions)
    self.critic = MLP(self.hidden, self.layers, self.num_bins, zero_out=True)

  def __call__(self, obs):
    """Touches every parameter (init): one filter step from zeros, heads, actor, critic."""
    b = obs.shape[0]
    h, prior = self.world.img_step(*self.world.initial(b), jnp.zeros((b, self.num_actions)))
    post = self.world.obs_step(h, self.world.encode(obs))
    feat = jnp.concatenate([h, jnp.exp(post).reshape(b, -1)], -1)
    return self.world.heads(feat), prior, self.policy(feat), self.value(feat)

  def encode(self, obs):
    return self.world.encode(obs)

  def initial(self, batch: int):
    return self.world.initial(batch)

  def img_step(self, h_BD, z_BZ, action_BA):
    return self.world.img_step(h_BD, z_BZ, action_BA)

  def obs_step(self, h_BD, embed_BE):
    return self.world.obs_step(h_BD, embed_BE)

  def heads(self, feat_BF):
    return self.world.heads(feat_BF)

  def policy(self, feat_BF):
    return unimix(self.actor(feat_BF), self.unimix)

  def value(self, feat_BF):
    return self.critic(feat_BF)


TINY = dict(deter=16, stoch=4, classes=4, hidden=16, layers=1, num_bins=31)


# ---------------------------------------------------------------------- replay streams


def streams_init(example: dict, capacity: int, num_envs: int) -> dict:
  """Empty streams: {'data': {field: (C, N, ...)}, 'index': (N,) the next row written,
  'size': (N,) rows filled}."""
  data = {k: jnp.zeros((capacity, num_envs, *jnp.shape(v)), jnp.asarray(v).dtype)
          for k, v in example.items()}
  zeros = jnp.zeros((num_envs,), jnp.int32)
  return {'data': data, 'index': zeros, 'size': zeros}


def streams_add(streams: dict, rows: dict, keep_N=None) -> dict:
  """One row (each leaf (N, ...)) appended to each environment's stream, or only where
  `keep_N` is true."""
  capacity, n = jax.tree.leaves(streams['data'])[0].shape[:2]
  keep_N = jnp.ones((n,), bool) if keep_N is None else keep_N
  at_N = jnp.where(keep_N, streams['index'], capacity)
  env_N = jnp.arange(n)
  data = jax.tree.map(lambda d, r: d.at[at_N, env_N].set(r.astype(d.dtype), mode='drop'),
                      streams['data'], rows)
  step = keep_N.astype(jnp.int32)
  return {'data': data, 'index': (streams['index'] + step) % capacity,
          'size': jnp.minimum(streams['size'] + step, capacity)}


def streams_sample(streams: dict, rng, batch: int, length: int) -> dict:
  """`batch` windows of `length` consecutive rows (B, L, ...), each from a uniformly drawn
  environment at a uniformly drawn start among its filled rows (oldest first)."""
  capacity, n = jax.tree.leaves(streams['data'])[0].shape[:2]
  k_env, k_start = jax.random.split(rng)
  env_B = jax.random.randint(k_env, (batch,), 0, n)
  size_B = streams['size'][env_B]
  oldest_B = jnp.where(size_B < capacity, 0, streams['index'][env_B])
  offset_B = jax.random.randint(k_start, (batch,), 0, jnp.maximum(size_B - length + 1, 1))
  t_BL = (oldest_B + offset_B)[:, None] + jnp.arange(length)
  return jax.tree.map(lambda d: d[t_BL % capacity, env_B[:, None]], streams['data'])


# --------------------------------------------------------------------------- the agent


def _others(variables):
  return {k: v for k, v in variables.items() if k != 'params'}


class Agent:
  """Dreamer's pieces for one config; `task()` assembles the loop's Task."""

  def __init__(self, config):
    opts = parse_options(Options, config)
    self.opts = opts
    env, env_params = common.make_env(opts.env)
    if not hasattr(env.action_space(env_params), 'n'):
      raise ConfigError(f'task_kwargs.env={opts.env!r} has continuous actions; this Dreamer '
                        f'samples a categorical actor (discrete actions only)')
    positive = ('num_envs', 'num_steps', 'updates_per_step', 'batch_seqs', 'seq_len',
                'horizon')
    if any(getattr(opts, k) < 1 for k in positive):
      raise ConfigError(f'task_kwargs.{", ".join(positive)} must be >= 1')
    if opts.buffer_size < opts.seq_len + 2:
      raise ConfigError(f'task_kwargs.buffer_size={opts.buffer_size} must exceed seq_len + 1')
    if opts.learning_starts < opts.num_envs * opts.seq_len:
      raise ConfigError(f'task_kwargs.learning_starts={opts.learning_starts} must be at least '
                        f'num_envs x seq_len = {opts.num_envs * opts.seq_len} (a full '
                        f'sequence in every stream before the first update)')
    self.env, self.env_params = env, env_params
    self.num_actions = int(env.action_space(env_params).n)
    self.obs_dim = int(np.prod(env.observation_space(env_params).shape))
    self.rollout_size = opts.num_envs * opts.num_steps
    if config.batch_size != self.rollout_size:
      raise ConfigError(f'batch_size={config.batch_size} must be num_envs x num_steps = '
                        f'{opts.num_envs} x {opts.num_steps} = {self.rollout_size} (the '
                        f'environment steps of one train step)')
    self.vec_env = common.VecEnv(env, env_params, opts.num_envs)
    self.model = arch.model_from_config(config, obs_dim=self.obs_dim,
                                        num_actions=self.num_actions)
    self.bins = bins(self.model.num_bins)

  # ------------------------------------------------------------------- the latent filter

  def _apply(self, params, method, *args):
    return self.model.apply({'params': params}, *args, method=method)

  def zero_latent(self, batch: int):
    m = self.model
    return {'deter': jnp.zeros((batch, m.deter)), 'stoch': jnp.zeros((batch, m.stoch * m.classes))}

  def filter_step(self, params, latent, action_B, embed_BE, first_B, rng, straight=False):
    """(posterior latent, prior, posterior log-probs (B, S, K)) of one step: the sequence
    model from the previous latent and action (where `first_B`: the learned initial state
    and no action), then the posterior of the new observation; z drawn straight-through or
    plain."""
    first = first_B.astype(bool)[:, None]
    h0_BD, z0_BZ = self._apply(params, 'initial', first_B.shape[0])
    action_BA = jax.nn.one_hot(action_B, self.num_actions) * (1.0 - first)
    h_BD, prior = self._apply(params, 'img_step', jnp.where(first, h0_BD, latent['deter']),
                              jnp.where(first, z0_BZ, latent['stoch']), action_BA)
    post = self._apply(params, 'obs_step', h_BD, embed_BE)
    z = (straight_through(rng, post) if straight else
         jax.nn.one_hot(jax.random.categorical(rng, post), post.shape[-1]))
    return {'deter': h_BD, 'stoch': z.reshape(z.shape[0], -1)}, prior, post

  @staticmethod
  def feat(latent):
    return jnp.concatenate([latent['deter'], latent['stoch']], -1)

  def observe(self, params, seq, rng):
    """The posterior over replayed sequences (B, L): latents (each leaf (L, B, ...)),
    priors and posteriors (L, B, S, K). The state restarts from the learned initial one at
    `first` rows and at L = 0."""
    b, length = seq['action'].shape
    embed_LBE = jnp.swapaxes(self._apply(params, 'encode', seq['obs']), 0, 1)
    first_LB = jnp.swapaxes(seq['first'], 0, 1).at[0].set(True)
    action_LB = jnp.swapaxes(seq['action'], 0, 1)

    def body(latent, xs):
      embed, action, first, key = xs
      latent, prior, post = self.filter_step(params, latent, action, embed, first, key, True)
      return latent, (latent, prior, post)

    _, out = jax.lax.scan(body, self.zero_latent(b),
                          (embed_LBE, action_LB, first_LB, jax.random.split(rng, length)))
    return out

  # ------------------------------------------------------------------------- losses

  def world_loss(self, variables, seq, rng):
    """The world-model loss on replayed sequences; the posterior states (no gradient) and
    their continue flags go on to the step under `_STARTS`."""
    params, opts = variables['params'], self.opts
    latents, prior, post = self.observe(params, seq, rng)
    feat_LBF = self.feat(latents)
    dec, reward_logits, cont_logit = self._apply(params, 'heads', feat_LBF)
    t = lambda x: jnp.swapaxes(x, 0, 1)
    obs_target = symlog(t(seq['obs']).astype(jnp.float32))
    dec_loss = ((dec - obs_target) ** 2).sum(-1)
    reward_loss = twohot_loss(reward_logits, t(seq['reward']), self.bins)
    cont_target = 1.0 - t(seq['terminal']).astype(jnp.float32)
    cont_loss = (jax.nn.softplus(cont_logit) - cont_target * cont_logit)  # BCE of logits
    dyn, rep = kl_balance(post, prior, opts.free_nats)
    loss = (dec_loss + reward_loss + cont_loss + opts.dyn_scale * dyn
            + opts.rep_scale * rep).mean()
    metrics = {'decoder': dec_loss.mean(), 'reward': reward_loss.mean(),
               'cont': cont_loss.mean(), 'dyn': dyn.mean(), 'rep': rep.mean(),
               'kl': categorical_kl(post, prior).mean()}
    starts = jax.tree.map(lambda x: jax.lax.stop_gradient(x.reshape(-1, *x.shape[2:])),
                          {**latents, 'cont': cont_target})
    return loss, (metrics, {**_others(variables), _STARTS: starts})

  def imagine(self, params, starts, rng):
    """H steps of the actor in the prior from the starts (B,): features (H + 1, B, F),
    actions (H, B), rewards and continues (H, B) of s_1..s_H, and weights (H + 1, B)."""
    opts = self.opts

    def body(latent, key):
      k_act, k_z = jax.random.split(key)
      feat = self.feat(latent)
      action_B = jax.random.categorical(k_act, self._apply(params, 'policy', feat))
      h_BD, prior = self._apply(params, 'img_step', latent['deter'], latent['stoch'],
                                jax.nn.one_hot(action_B, self.num_actions))
      z = jax.nn.one_hot(jax.random.categorical(k_z, prior), prior.shape[-1])
      return {'deter': h_BD, 'stoch': z.reshape(z.shape[0], -1)}, (feat, action_B)

    start = {'deter': starts['deter'], 'stoch': starts['stoch']}
    last, (feat_HBF, action_HB) = jax.lax.scan(body, start,
                                               jax.random.split(rng, opts.horizon))
    feat_HBF = jnp.concatenate([feat_HBF, self.feat(last)[None]])
    _, reward_logits, cont_logit = self._apply(params, 'heads', feat_HBF[1:])
    reward_HB = twohot_mean(reward_logits, self.bins)
    cont_HB = (cont_logit > 0).astype(jnp.float32)  # the continue head's mode
    conts = jnp.concatenate([starts['cont'][None], cont_HB])
    weight_HB = jnp.cumprod(opts.gamma * conts, 0) / opts.gamma
    return {'feat': feat_HBF, 'action': action_HB, 'reward': reward_HB, 'cont': cont_HB,
            'weight': weight_HB}

  def behaviour_batch(self, params, slow, retnorm, starts, rng):
    """The imagined trajectories with returns, normalised advantages and the slow critic's
    values (all without gradient): the actor's and critic's batch; and the new percentiles."""
    opts = self.opts
    traj = self.imagine(params, starts, rng)
    value_HB = twohot_mean(self._apply(params, 'value', traj['feat']), self.bins)
    ret_HB = lambda_returns(traj['reward'], traj['cont'], value_HB, opts.gamma, opts.lam)
    lo, hi = jnp.percentile(ret_HB, 5.0), jnp.percentile(ret_HB, 95.0)
    d = opts.retnorm_decay
    retnorm = {'lo': d * retnorm['lo'] + (1 - d) * lo, 'hi': d * retnorm['hi'] + (1 - d) * hi}
    scale = jnp.maximum(1.0, retnorm['hi'] - retnorm['lo'])
    slow_params = {**params, 'critic': slow}
    slow_HB = twohot_mean(self._apply(slow_params, 'value', traj['feat'][:-1]), self.bins)
    batch = {**traj, 'return': ret_HB, 'advantage': (ret_HB - value_HB[:-1]) / scale,
             'slow_value': slow_HB}
    return jax.lax.stop_gradient(batch), retnorm, scale

  def actor_loss(self, variables, batch, rng):
    del rng
    log_p_HBA = self._apply(variables['params'], 'policy', batch['feat'][:-1])
    log_p_HB = jnp.take_along_axis(log_p_HBA, batch['action'][..., None], -1)[..., 0]
    entropy_HB = -(jnp.exp(log_p_HBA) * log_p_HBA).sum(-1)
    w = batch['weight'][:-1]
    loss = -(w * (batch['advantage'] * log_p_HB + self.opts.entropy * entropy_HB)).mean()
    return loss, ({'entropy': entropy_HB.mean(), 'advantage': batch['advantage'].mean()},
                  _others(variables))

  def critic_loss(self, variables, batch, rng):
    del rng
    logits = self._apply(variables['params'], 'value', batch['feat'][:-1])
    loss_HB = (twohot_loss(logits, batch['return'], self.bins)
               + self.opts.slow_reg * twohot_loss(logits, batch['slow_value'], self.bins))
    return (batch['weight'][:-1] * loss_HB).mean(), (
        {'value': twohot_mean(logits, self.bins).mean()}, _others(variables))

  def phases(self):
    return (('world', self.world_loss), ('actor', self.actor_loss),
            ('critic', self.critic_loss))

  # ---------------------------------------------------------------------------- init

  def init(self, rng, batch):
    del batch  # no data
    k_params, k_env, k_latent = jax.random.split(rng, 3)
    carry = self.vec_env.reset(k_env)
    params = self.model.init(k_params, carry['obs'])['params']
    n = self.opts.num_envs
    first = jnp.ones((n,), bool)
    zeros_N = jnp.zeros((n,), jnp.int32)
    latent, _, _ = self.filter_step(params, self.zero_latent(n), zeros_N,
                                    self._apply(params, 'encode', carry['obs']), first,
                                    k_latent)
    row = self.row(carry['obs'], zeros_N, jnp.zeros((n,)), first, jnp.zeros((n,), bool))
    streams = streams_add(streams_init(jax.tree.map(lambda x: x[0], row),
                                       self.opts.buffer_size, n), row)
    return {'params': params, ENV: carry, LATENT: latent, REPLAY: streams,
            SLOW: jax.tree.map(jnp.copy, params['critic']),
            RETNORM: {'lo': jnp.zeros(()), 'hi': jnp.zeros(())}}

  @staticmethod
  def row(obs, action, reward, first, terminal):
    return {'obs': obs, 'action': action.astype(jnp.int32),
            'reward': reward.astype(jnp.float32), 'first': first.astype(bool),
            'terminal': terminal.astype(bool)}

  # ------------------------------------------------------------------------- acting

  def act(self, params, latent, rng, greedy):
    log_p = self._apply(params, 'policy', self.feat(latent))
    return (log_p.argmax(-1) if greedy else jax.random.categorical(rng, log_p)).astype(jnp.int32)

  def env_step(self, params, carry, latent, streams, rng, explore_random):
    """One vector step: act, step the environments, write their rows, filter the latent."""
    n = self.opts.num_envs
    k_act, k_rand, k_env, k_z = jax.random.split(rng, 4)
    action_N = jnp.where(explore_random,
                         jax.random.randint(k_rand, (n,), 0, self.num_actions, jnp.int32),
                         self.act(params, latent, k_act, False))
    carry, tr = self.vec_env.step(carry, action_N, k_env)
    streams = streams_add(streams, self.row(tr['final_obs'], action_N, tr['reward'],
                                            jnp.zeros((n,), bool), tr['terminated']))
    zeros_N = jnp.zeros((n,), jnp.int32)
    streams = streams_add(streams, self.row(carry['obs'], zeros_N, jnp.zeros((n,)),
                                            jnp.ones((n,), bool), jnp.zeros((n,), bool)),
                          keep_N=tr['done'])
    # carry['obs'] is the next observation, or the reset one where an episode ended.
    latent, _, _ = self.filter_step(params, latent, action_N,
                                    self._apply(params, 'encode', carry['obs']), tr['done'], k_z)
    return carry, latent, streams, tr

  # ----------------------------------------------------------------------- the step

  def make_step(self, builders):
    opts = self.opts
    world_update = builders.phased(self.phases()[:1])
    behaviour_update = builders.phased(self.phases()[1:])

    def one_update(ts, streams, key):
      k_seq, k_world, k_imag, k_ac = jax.random.split(key, 4)
      seq = streams_sample(streams, k_seq, opts.batch_seqs, opts.seq_len)
      ts, m_world = world_update(ts, seq, k_world)
      starts = ts.extra[_STARTS]
      extra = {k: v for k, v in ts.extra.items() if k != _STARTS}
      batch, retnorm, scale = self.behaviour_batch(ts.params, extra[SLOW], extra[RETNORM],
                                                   starts, k_imag)
      ts, m_ac = behaviour_update(ts.replace(extra={**extra, RETNORM: retnorm}), batch, k_ac)
      slow = jax.tree.map(lambda s, c: (1 - opts.slow_rate) * s + opts.slow_rate * c,
                          ts.extra[SLOW], ts.params['critic'])
      metrics = {**m_world, **m_ac, 'loss': m_world['loss'] + m_ac['loss'],
                 'grad_norm': jnp.sqrt(m_world['grad_norm'] ** 2 + m_ac['grad_norm'] ** 2),
                 'imag_return': batch['return'].mean(), 'return_scale': scale}
      return ts.replace(extra={**ts.extra, SLOW: slow}), metrics

    def updates(ts, streams, key):
      return jax.lax.scan(lambda s, k: one_update(s, streams, k), ts,
                          jax.random.split(key, opts.updates_per_step))

    def step(state, batch, rng):
      del batch, rng  # no data; keys from the state alone (every device alike)
      key = builders.shared_rng(state)
      k_collect, k_update = jax.random.split(key)
      start = state.step * self.rollout_size

      def body(c, xs):
        carry, latent, streams = c
        t, k = xs
        explore = start + t * opts.num_envs < opts.learning_starts
        carry, latent, streams, tr = self.env_step(state.params, carry, latent, streams, k,
                                                   explore)
        return (carry, latent, streams), {'done': tr['done'],
                                          'finished_return': tr['finished_return']}

      (carry, latent, streams), traj = jax.lax.scan(
          body, (state.extra[ENV], state.extra[LATENT], state.extra[REPLAY]),
          (jnp.arange(opts.num_steps), jax.random.split(k_collect, opts.num_steps)))
      others = {k: v for k, v in state.extra.items() if k not in (ENV, LATENT, REPLAY)}
      ts = state.replace(extra=others)
      ready = start + self.rollout_size >= opts.learning_starts
      shapes = jax.eval_shape(updates, ts, streams, k_update)[1]
      skip = lambda ts: (ts, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes))
      ts, metrics = jax.lax.cond(ready, lambda ts: updates(ts, streams, k_update), skip, ts)
      metrics = jax.tree.map(lambda m: m.mean(0), metrics)
      metrics['learning_rate'] = builders.schedule['world'](state.step)
      metrics['updates'] = ready.astype(jnp.float32) * opts.updates_per_step
      metrics.update(common.episode_stats(traj, carry))
      new = ts.replace(extra={**ts.extra, ENV: carry, LATENT: latent, REPLAY: streams})
      return new, metrics

    return step

  # ------------------------------------------------------------------------ evaluation

  def evaluate_run(self, variables, rng):
    """Whole episodes of the actor on its filtered latent, one per environment."""
    params, n = variables['params'], self.opts.eval_episodes
    vec = common.VecEnv(self.env, self.env_params, n)
    k_reset, k_latent, k_run = jax.random.split(rng, 3)
    carry = vec.reset(k_reset)
    latent, _, _ = self.filter_step(params, self.zero_latent(n), jnp.zeros((n,), jnp.int32),
                                    self._apply(params, 'encode', carry['obs']),
                                    jnp.ones((n,), bool), k_latent)

    def body(state, key):
      carry, latent, ret_N, alive_N = state
      k_act, k_env, k_z = jax.random.split(key, 3)
      action_N = self.act(params, latent, k_act, self.opts.eval_greedy)
      carry, tr = vec.step(carry, action_N, k_env)
      latent, _, _ = self.filter_step(params, latent, action_N,
                                      self._apply(params, 'encode', carry['obs']), tr['done'],
                                      k_z)
      ret_N = ret_N + jnp.where(alive_N, tr['reward'], 0.0)
      return (carry, latent, ret_N, alive_N & ~tr['done']), None

    zeros = jnp.zeros((n,), jnp.float32)
    steps = int(self.env_params.max_steps_in_episode)
    (_, _, ret_N, _), _ = jax.lax.scan(body, (carry, latent, zeros, jnp.ones((n,), bool)),
                                       jax.random.split(k_run, steps))
    return {'return': ret_N.mean(), 'return_min': ret_N.min()}

  def episode(self, params, key, max_steps: int, stride: int, greedy: bool):
    """One rendered episode from a reset (render.episode's contract: every `stride`-th
    state, the last held after the end; the return; the length), acting on the latent."""
    env, env_params = self.env, self.env_params
    k_reset, k_latent, k_run = jax.random.split(key, 3)
    obs, state = env.reset(k_reset, env_params)
    latent, _, _ = self.filter_step(params, self.zero_latent(1), jnp.zeros((1,), jnp.int32),
                                    self._apply(params, 'encode', obs[None]),
                                    jnp.ones((1,), bool), k_latent)

    def body(c, key):
      obs, state, latent, ret, length, alive = c
      k_act, k_env, k_z = jax.random.split(key, 3)
      action = self.act(params, latent, k_act, greedy)
      new_obs, new, reward, terminated, _ = env.step_env(k_env, state, action[0], env_params)
      done = terminated | env.is_truncated(new, env_params)
      new_latent, _, _ = self.filter_step(params, latent, action,
                                          self._apply(params, 'encode', new_obs[None]),
                                          jnp.zeros((1,), bool), k_z)
      keep = lambda a, b: jnp.where(alive, a, b)
      c = (keep(new_obs, obs), jax.tree.map(keep, new, state),
           jax.tree.map(keep, new_latent, latent), ret + jnp.where(alive, reward, 0.0),
           length + alive.astype(jnp.int32), alive & ~done)
      return c, flax.serialization.to_state_dict(state)

    c = (obs, state, latent, jnp.float32(0.0), jnp.int32(0), jnp.bool_(True))
    (_, last, _, ret, length, _), states = jax.lax.scan(body, c,
                                                         jax.random.split(k_run, max_steps))
    last = flax.serialization.to_state_dict(last)
    states = jax.tree.map(lambda s, l: jnp.concatenate([s, l[None]]), states, last)
    return jax.tree.map(lambda s: s[::stride], states), ret, length

  def sample(self, variables, batch, rng, *, row_ids, max_steps: int = 0, stride: int = 2,
             height: int = 96, width: int = 144, greedy: bool = True):
    """Rendered evaluation episodes, one per row (render.make_sample's outputs)."""
    del batch
    steps = int(max_steps or self.env_params.max_steps_in_episode)
    run = functools.partial(self.episode, variables['params'], max_steps=steps,
                            stride=max(1, int(stride)), greedy=greedy)
    states_N, ret_N, length_N = jax.vmap(run)(row_keys(rng, row_ids))
    draw = lambda s: render.frame(self.opts.env, s, self.env_params, (height, width))
    return {'episodes': jax.vmap(jax.vmap(draw))(states_N), 'episode_return': ret_N,
            'episode_length': length_N}

  def task(self) -> Task:
    return Task(init=self.init, loss=None, example_batch=lambda batch_size: {},
                phases=self.phases(), make_step=self.make_step, input=no_input,
                evaluate_run=self.evaluate_run, sample=self.sample,
                prompt_batch=unconditional_rows)


def make(config) -> Task:
  return Agent(config).task()
