"""RLHF on a causal language model: a Bradley-Terry reward model, DPO, and PPO with a KL
penalty to the frozen reference model, with programmatic preferences; each method one
config of one task that owns its step.

The preference. A continuation y of a prompt x is scored by a property a program can
measure: the fraction of y's bytes that are lowercase vowels (a, e, i, o, u; `property_of`).
It is chosen because (1) it is graded, so two samples of 32 bytes rarely tie and the label
carries information; (2) it is a sum over tokens, so a scalar head on a causal Transformer
can represent it and a policy can move it at every token (a dense signal); (3) its
unconstrained optimum ('eeee...', 'aiaiai...') is far from English, which is exactly the
reward hacking a KL penalty to the reference should hold back. Pairs: for each prompt
(the first `prompt_len` bytes of a pydoc window) two continuations of `new_tokens` bytes
are sampled from the reference at temperature 1 (KV-cached decoding,
arch/sequence/decoding.py, inside the jitted step); the one with the higher property is
chosen, ties carry no weight (`preference_pairs`). The pairs are drawn from the step's
shared key, so the rm and dpo runs of one seed see the same pairs at the same step.

Methods (`task_kwargs.method`):
- 'rm': the reward model r(x, y), the GPT trunk (initialised from the pretrained run via
  `config.init_from`) with a scalar head on the final LayerNorm's output at y's last token
  (Ouyang et al. 2022, section 3.5; Stiennon et al. 2020), trained with the Bradley-Terry
  loss -log sigmoid(r(x, y_w) - r(x, y_l)). Eval: `pair_accuracy` on validation pairs.
- 'dpo': direct preference optimisation (Rafailov et al. 2023, eq. 7) of the policy pi
  (initialised from the reference) on the same kind of pairs:
    L = -log sigmoid(beta ((log pi(y_w|x) - log ref(y_w|x)) - (log pi(y_l|x) - log ref(y_l|x)))),
  log-probabilities summed over the continuation's tokens; at initialisation pi = ref and
  L = log 2. Metrics: the implicit rewards beta log pi/ref of chosen and rejected, their
  margin and the fraction of pairs it orders correctly (`reward_accuracy`).
- 'ppo': PPO (Schulman et al. 2017) with a per-token KL penalty (Ziegler et al. 2019,
  Ouyang et al. 2022): the policy samples one continuation per prompt inside the step; the
  reward of token t is -kl_coef (log pi(y_t) - log ref(y_t)), plus the frozen reward
  model's score r(x, y) at the last token; a value head on the policy's trunk gives V, GAE
  (gamma, lambda over tokens, arch/rl/common.py) the advantages, and `epochs` x
  `minibatches` clipped-surrogate updates (arch/rl/ppo.py's objective, masked to the
  continuation's tokens; advantages whitened per minibatch over its tokens, values clipped
  as in Ziegler et al.'s code) follow. On the first minibatch of the first epoch the ratio
  is 1. With `kl_target` > 0 the coefficient is Ziegler et al.'s adaptive one (section
  2.2): after each step, kl_coef <- kl_coef (1 + clip(KL / kl_target - 1, -0.2, 0.2) B /
  kl_horizon), KL the step's sampled KL(pi || ref) summed over a continuation and averaged
  over its B rollouts; the coefficient is the non-param collection 'kl_ctl', so a
  checkpoint holds it and a resumed run continues it exactly.

Devices. Samples are keyed by the step's shared key and the prompt's global row, so they
do not depend on the device that draws them. Under jit a batch is one global array; under
pmap each device holds its rows, and the step keeps jit's numbers: every mean of a loss or
metric divides by the global count of pairs or tokens (`share_of`; the builders then
average the devices' values), PPO's advantages are whitened over the whole minibatch, and
its minibatches are cut from one permutation of the rollouts gathered from all devices,
each device training on its slice of each (batch_size / minibatches must split over the
devices; otherwise one error at startup names the fix, or parallelism='jit').

Frozen runs (the loop restores them into non-param collections, never trained): 'ref', a
causal-LM run of the same network (the pretrained pydoc GPT), for every method; 'rm', a run
of this task with method='rm', for PPO. Dropout is off everywhere, so policy and reference
are the same function at initialisation.

Every method reports, in eval, `property` (of one temperature-1 sample per validation
prompt from the policy; for 'rm' from the reference) and `kl`, the sampled estimate of
KL(pi || ref) summed over the continuation's tokens; PPO adds `rm_score` (and in train
`kl_coef`, the coefficient its step's rewards used).

Params: 'rm' {'lm': GPT, 'head': Dense(1)}; 'dpo' {'lm': GPT}; 'ppo' {'lm': GPT,
'value': Dense(1)}. `train.sample` continues a prompt with params['lm'] (the reference's
params for 'rm', whose trunk no longer drives its LM head).

Config keys read: `model_name`, `model` (a causal LM returning logits, with a final norm
named 'ln_f', e.g. 'sequence.gpt'), `data` (a packed text dataset: prompts are the first
`prompt_len` tokens of its windows), `frozen.ref`, `frozen.rm` (ppo), `batch_size`
(prompts per step) and `task_kwargs`, the fields of `Options`.

Measured (configs/rlhf_pydoc.py, 2026-12-06, 2-core CPU, from the 200-step pydoc GPT):
the reward model orders 0.865 of validation pairs after 300 steps; DPO's validation
implicit-reward margin reaches 4.7 (accuracy 0.97) and lifts the vowel fraction of its
samples from 0.212 to 0.534, at a sampled KL of 28.6 nats per 32 bytes; PPO lifts the RM
score of its samples from -0.28 to 0.96 in 100 steps at a KL of 13.8 (about 5 on its train
prompts), and past that its KL is not held at kl_coef 0.1. With the adaptive coefficient
(kl_target 6, 2026-12-07, a 150-step reward model) the validation RM score rose 0.80 /
0.96 / 0.99 at steps 100 / 200 / 300 with the sampled KL held at 5.8 / 6.2 / 6.3 nats
(fixed 0.1 on that reward model: 0.40 / 0.65 / 0.67 at KL 2.7 / 2.8 / 2.6).

Dimension key: B prompts (pairs, rollouts), P prompt length, N new tokens, T = P + N,
D width, V vocabulary.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import arch
from arch import vocab
from arch.rl import common
from arch.sequence import decoding
from arch.task import ConfigError, Task, parse_options

REF, RM = 'ref', 'rm'  # the collections the loop restores the frozen runs into
KL_CTL = 'kl_ctl'  # PPO's adaptive KL coefficient {'coef': ()}, checkpointed with the state
METHODS = ('rm', 'dpo', 'ppo')
VOWEL_IDS = np.array([ord(c) + vocab.NUM_SPECIAL for c in 'aeiou'])


@dataclasses.dataclass(frozen=True)
class Options:
  """RLHF's task_kwargs."""
  method: str = 'dpo'            # 'rm' | 'dpo' | 'ppo'
  prompt_len: int = 32           # P: bytes of a window that prompt the continuation
  new_tokens: int = 32           # N: continuation length
  temperature: float = 1.0       # of the reference's pair samples
  beta: float = 0.1              # DPO's beta
  kl_coef: float = 0.1           # PPO's beta_KL of the per-token penalty (its start if adaptive)
  kl_target: float = 0.0         # > 0: adapt kl_coef so the sampled KL (nats) tracks this
  kl_horizon: float = 10000.0    # the controller's horizon in rollouts (`adapt_kl_coef`)
  whiten_advantages: bool = True  # per minibatch, over its continuation tokens
  epochs: int = 2                # PPO passes over each batch of rollouts
  minibatches: int = 2           # per pass
  clip_eps: float = 0.2
  clip_value: bool = True
  vf_coef: float = 0.5
  gamma: float = 1.0
  gae_lambda: float = 0.95


# ------------------------------------------------------------------ the preferences


def continuation_mask(resp_BN):
  """1 for a continuation's tokens up to and including its first </s>, 0 after."""
  eos_BN = (resp_BN == vocab.EOS).astype(jnp.int32)
  return (jnp.cumsum(eos_BN, axis=-1) - eos_BN) == 0


def property_of(resp_BN, mask_BN):
  """The fraction of a continuation's bytes that are lowercase vowels (B,)."""
  is_byte = mask_BN & (resp_BN >= vocab.NUM_SPECIAL)
  vowel = is_byte & jnp.isin(resp_BN, jnp.asarray(VOWEL_IDS))
  return vowel.sum(-1) / jnp.maximum(is_byte.sum(-1), 1)


def preference_pairs(resp_a_BN, resp_b_BN):
  """(chosen, rejected, weight (B,)): the continuation with the higher property is chosen;
  a tie has weight 0."""
  prop_a = property_of(resp_a_BN, continuation_mask(resp_a_BN))
  prop_b = property_of(resp_b_BN, continuation_mask(resp_b_BN))
  a_wins = (prop_a >= prop_b)[:, None]
  chosen = jnp.where(a_wins, resp_a_BN, resp_b_BN)
  rejected = jnp.where(a_wins, resp_b_BN, resp_a_BN)
  return chosen, rejected, (prop_a != prop_b).astype(jnp.float32)


def global_sum(x, axis_name=None):
  """A sum over this device's rows, and under pmap (axis_name) over every device's."""
  return x if axis_name is None else jax.lax.psum(x, axis_name)


def share_of(total, axis_name=None):
  """The denominator of a device's part of a global mean: `total` (the global count, at
  least 1) under jit; under pmap total / devices, so that the mean over devices the step
  builders take (of losses, gradients, metrics) is the global batch's mean, not a mean of
  per-device means (they differ where devices hold different counts of pairs or tokens)."""
  total = jnp.maximum(total, 1.0)
  return total if axis_name is None else total / jax.lax.axis_size(axis_name)


def weighted_mean(x_B, w_B, axis_name=None):
  return (x_B * w_B).sum() / share_of(global_sum(w_B.sum(), axis_name), axis_name)


def bradley_terry_loss(r_chosen_B, r_rejected_B, weight_B, axis_name=None):
  """-log sigmoid(r_w - r_l), the weighted mean over pairs."""
  return weighted_mean(-jax.nn.log_sigmoid(r_chosen_B - r_rejected_B), weight_B, axis_name)


def dpo_loss(pi_chosen_B, pi_rejected_B, ref_chosen_B, ref_rejected_B, beta, weight_B,
             axis_name=None):
  """(loss, chosen reward (B,), rejected reward (B,)) of Rafailov et al.'s eq. 7 with
  sequence log-probabilities; the implicit reward is beta log pi/ref."""
  chosen_B = beta * (pi_chosen_B - ref_chosen_B)
  rejected_B = beta * (pi_rejected_B - ref_rejected_B)
  loss = weighted_mean(-jax.nn.log_sigmoid(chosen_B - rejected_B), weight_B, axis_name)
  return loss, chosen_B, rejected_B


def masked_whiten(x, mask, axis_name=None):
  """x whitened over the tokens where `mask` is 1 (of every device's part of a minibatch
  under pmap)."""
  n = jnp.maximum(global_sum(mask.sum(), axis_name), 1.0)
  mean = global_sum((x * mask).sum(), axis_name) / n
  var = global_sum((((x - mean) * mask) ** 2).sum(), axis_name) / n
  return (x - mean) / (jnp.sqrt(var) + 1e-8)


def adapt_kl_coef(coef, kl, target, horizon, rollouts):
  """Ziegler et al. 2019's proportional controller (section 2.2, with their code's horizon):
  e = clip(KL / target - 1, -0.2, 0.2), coef <- coef (1 + e rollouts / horizon), `rollouts`
  the episodes behind the KL estimate (the paper's K_beta is rollouts / horizon)."""
  error = jnp.clip(kl / target - 1.0, -0.2, 0.2)
  return coef * (1.0 + error * rollouts / horizon)


def masked_ppo_terms(log_prob, old_log_prob, adv, value, old_value, ret, mask, eps, clip_value,
                     axis_name=None):
  """(L^CLIP, L^VF, ratio, approx KL, clip fraction) of arch/rl/ppo.py over the tokens
  where `mask` is 1 (any shape; under pmap this device's part of the means over every
  device's tokens, `share_of`)."""
  ratio = jnp.exp(log_prob - old_log_prob)
  surrogate = jnp.minimum(ratio * adv, jnp.clip(ratio, 1 - eps, 1 + eps) * adv)
  v_loss = (value - ret) ** 2
  if clip_value:
    v_clipped = old_value + jnp.clip(value - old_value, -eps, eps)
    v_loss = jnp.maximum(v_loss, (v_clipped - ret) ** 2)
  n = share_of(global_sum(mask.sum(), axis_name), axis_name)
  mean = lambda x: (x * mask).sum() / n
  log_ratio = log_prob - old_log_prob
  return (mean(surrogate), 0.5 * mean(v_loss), ratio, mean((ratio - 1.0) - log_ratio),
          mean((jnp.abs(ratio - 1.0) > eps).astype(jnp.float32)))


# ------------------------------------------------------------------------- networks


def _final_norm(module, method_name):
  return module.name == 'ln_f' and method_name == '__call__'


class LM:
  """A causal LM's pure functions over a sequence: response log-probs, hidden states,
  cached sampling."""

  def __init__(self, model, prompt_len, new_tokens):
    self.model, self.p, self.n = model, prompt_len, new_tokens

  def forward(self, params, seq_BT):
    """(logits (B, T, V), final-norm output (B, T, D))."""
    logits, state = self.model.apply({'params': params}, seq_BT, train=False,
                                     capture_intermediates=_final_norm,
                                     mutable=['intermediates'])
    return logits, state['intermediates']['ln_f']['__call__'][0]

  def response_log_probs(self, logits_BTV, seq_BT):
    """log p(y_t | x, y_<t) (B, N) from the logits over the whole sequence."""
    logp_BNV = jax.nn.log_softmax(logits_BTV[:, self.p - 1:-1].astype(jnp.float32))
    return jnp.take_along_axis(logp_BNV, seq_BT[:, self.p:, None], axis=-1)[..., 0]

  def sequence_log_prob(self, params, seq_BT):
    """sum_t log p(y_t | ...) over the continuation's tokens (B,)."""
    logits, _ = self.forward(params, seq_BT)
    mask = continuation_mask(seq_BT[:, self.p:])
    return (self.response_log_probs(logits, seq_BT) * mask).sum(-1)

  def sample(self, params, prompt_BP, rng, row_ids_B, max_new_tokens=None, **options):
    """Continuations (B, N) of the prompts, one key per row from `row_ids`."""
    n = max_new_tokens or self.n
    b, p = prompt_BP.shape
    shapes = jax.eval_shape(lambda: self.model.init(
        jax.random.key(0), jnp.zeros((b, p + n), jnp.int32), decode=True))['cache']
    cache = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

    def step(tokens, cache):
      logits, mutated = self.model.apply({'params': params, 'cache': cache}, tokens,
                                         decode=True, mutable=['cache'])
      return logits[:, -1], mutated['cache']

    first, cache = step(prompt_BP, cache)
    return decoding.generate(step, cache, first, rng, n, eos_id=vocab.EOS, pad_id=vocab.PAD,
                             row_ids_B=row_ids_B, **options)


def last_token_state(h_BTD, seq_BT, prompt_len):
  """The hidden state at each sequence's last continuation token (B, D)."""
  length_B = continuation_mask(seq_BT[:, prompt_len:]).sum(-1)
  idx_B = prompt_len + length_B - 1
  return jnp.take_along_axis(h_BTD, idx_B[:, None, None], axis=1)[:, 0]


HEAD = nn.Dense(1, kernel_init=nn.initializers.zeros)  # scalar heads start at 0


# ----------------------------------------------------------------------------- task


class Agent:
  """The pieces of one method; `task()` assembles the loop's Task."""

  def __init__(self, config, ref_model=None):
    opts = self.opts = parse_options(Options, config)
    if opts.method not in METHODS:
      raise ConfigError(f'unknown task_kwargs.method {opts.method!r}; valid: {", ".join(METHODS)}')
    vocab.check_model(config)
    self.window = int(config.data.get('pack') or 0)
    if opts.prompt_len < 1 or opts.new_tokens < 1 or opts.prompt_len > self.window:
      raise ConfigError(f'task_kwargs.prompt_len must be in [1, data.pack={self.window}] '
                        f'and new_tokens >= 1')
    self.batch_size = int(config.batch_size)
    self.axis_name = None  # the loop's device axis under pmap (make_step)
    if opts.method == 'ppo' and self.batch_size % opts.minibatches:
      raise ConfigError(f'batch_size {self.batch_size} does not split into '
                        f'{opts.minibatches} minibatches')
    if opts.kl_target < 0 or opts.kl_horizon <= 0:
      raise ConfigError('task_kwargs.kl_target must be >= 0 (0: a fixed kl_coef) and '
                        'kl_horizon > 0')
    self.adaptive = opts.method == 'ppo' and opts.kl_target > 0
    p, n = opts.prompt_len, opts.new_tokens
    self.lm = LM(arch.model_from_config(config, dropout_rate=0.0), p, n)
    self.ref = LM(ref_model or self._frozen_model(config, REF, 'a causal-LM run'), p, n)
    self.rm = None
    if opts.method == 'ppo':
      rm_config = config.get('frozen', {}).get(RM, {}).get('config')
      if not rm_config or parse_options(Options, rm_config).method != 'rm':
        raise ConfigError("method='ppo' needs config.frozen.rm = dict(spec="
                          "'configs/rlhf_pydoc.py:method=rm', workdir=...)")
      # The reward model's run read the same reference (its own frozen 'ref').
      self.rm = Agent(rm_config, ref_model=self.ref.model)

  @staticmethod
  def _frozen_model(config, name, what):
    entry = config.get('frozen', {}).get(name, {})
    if not entry or not entry.get('config'):
      raise ConfigError(f"RLHF needs config.frozen.{name} = dict(spec=..., workdir=...), "
                        f"{what}")
    return arch.model_from_config(entry.config, dropout_rate=0.0)

  # -------------------------------------------------------------------- pieces

  def init(self, rng, batch):
    seq = jnp.zeros((batch['tokens'].shape[0], self.opts.prompt_len + self.opts.new_tokens),
                    jnp.int32)
    lm = self.lm.model.init(rng, seq, train=False)['params']
    head = HEAD.init(rng, jnp.zeros((1, self.lm.model.embed_dim)))['params']
    params = {'lm': lm}
    if self.opts.method == 'rm':
      params['head'] = head
    elif self.opts.method == 'ppo':
      params['value'] = head
    variables = {'params': params, REF: {'params': self.ref.model.init(rng, seq, train=False)[
        'params']}}
    if self.rm is not None:
      variables[RM] = self.rm.init(rng, batch)
    if self.adaptive:
      variables[KL_CTL] = {'coef': jnp.asarray(self.opts.kl_coef, jnp.float32)}
    return variables

  def kl_coef(self, variables):
    """The KL penalty's coefficient now: the controller's, or the fixed option."""
    return variables[KL_CTL]['coef'] if self.adaptive else self.opts.kl_coef

  def score(self, rm_params, seq_BT):
    """The reward model's r(x, y) (B,)."""
    _, h = self.lm.forward(rm_params['lm'], seq_BT)
    return HEAD.apply({'params': rm_params['head']},
                      last_token_state(h, seq_BT, self.opts.prompt_len))[:, 0]

  def prompts(self, batch):
    return batch['tokens'][:, :self.opts.prompt_len]

  def pairs(self, ref_params, prompt_BP, rng, row_ids_B):
    """Two reference continuations per prompt, ranked: {'chosen', 'rejected' (B, T),
    'weight' (B,)} and the reference's sequence log-probs of both."""
    b = prompt_BP.shape[0]
    both = self.ref.sample(ref_params, jnp.concatenate([prompt_BP, prompt_BP]), rng,
                           jnp.concatenate([row_ids_B, row_ids_B + (1 << 30)]),
                           temperature=self.opts.temperature)
    chosen, rejected, weight = preference_pairs(both[:b], both[b:])
    out = {'chosen': jnp.concatenate([prompt_BP, chosen], 1),
           'rejected': jnp.concatenate([prompt_BP, rejected], 1), 'weight': weight}
    out['ref_chosen'] = self.ref.sequence_log_prob(ref_params, out['chosen'])
    out['ref_rejected'] = self.ref.sequence_log_prob(ref_params, out['rejected'])
    return jax.lax.stop_gradient(out)

  def rm_loss(self, variables, pairs, rng):
    del rng
    r_w = self.score(variables['params'], pairs['chosen'])
    r_l = self.score(variables['params'], pairs['rejected'])
    w, axis = pairs['weight'], self.axis_name
    loss = bradley_terry_loss(r_w, r_l, w, axis)
    metrics = {'pair_accuracy': weighted_mean((r_w > r_l).astype(jnp.float32), w, axis),
               'reward_chosen': weighted_mean(r_w, w, axis),
               'reward_rejected': weighted_mean(r_l, w, axis)}
    return loss, (metrics, {})

  def dpo_terms(self, params, pairs, axis_name=None):
    pi_w = self.lm.sequence_log_prob(params['lm'], pairs['chosen'])
    pi_l = self.lm.sequence_log_prob(params['lm'], pairs['rejected'])
    return dpo_loss(pi_w, pi_l, pairs['ref_chosen'], pairs['ref_rejected'], self.opts.beta,
                    pairs['weight'], axis_name)

  def dpo_loss(self, variables, pairs, rng):
    del rng
    w, axis = pairs['weight'], self.axis_name
    loss, chosen, rejected = self.dpo_terms(variables['params'], pairs, axis)
    metrics = {'reward_chosen': weighted_mean(chosen, w, axis),
               'reward_rejected': weighted_mean(rejected, w, axis),
               'reward_margin': weighted_mean(chosen - rejected, w, axis),
               'reward_accuracy': weighted_mean((chosen > rejected).astype(jnp.float32), w,
                                                axis)}
    return loss, (metrics, {})

  def policy_terms(self, params, seq_BT):
    """(response log-probs (B, N), values (B, N)): V of token t reads the state before it."""
    logits, h = self.lm.forward(params['lm'], seq_BT)
    p = self.opts.prompt_len
    value_BN = HEAD.apply({'params': params['value']}, h[:, p - 1:-1])[..., 0]
    return self.lm.response_log_probs(logits, seq_BT), value_BN

  def rollout(self, variables, prompt_BP, rng, row_ids_B):
    """Policy samples with their old log-probs, values, per-token rewards, GAE advantages
    and returns, and statistics: the RM score, the sampled KL and the property."""
    opts = self.opts
    params = variables['params']
    resp_BN = self.lm.sample(params['lm'], prompt_BP, rng, row_ids_B)
    seq_BT = jnp.concatenate([prompt_BP, resp_BN], 1)
    mask_BN = continuation_mask(resp_BN)
    log_prob_BN, value_BN = self.policy_terms(params, seq_BT)
    ref_logits, _ = self.ref.forward(variables[REF]['params'], seq_BT)
    ref_log_prob_BN = self.ref.response_log_probs(ref_logits, seq_BT)
    score_B = self.rm.score(variables[RM]['params'], seq_BT)
    kl_BN = (log_prob_BN - ref_log_prob_BN) * mask_BN
    last_BN = _last_valid(mask_BN)
    reward_BN = -self.kl_coef(variables) * kl_BN + score_B[:, None] * last_BN
    next_value_BN = jnp.concatenate([value_BN[:, 1:], jnp.zeros_like(value_BN[:, :1])], 1)
    adv_NB, ret_NB = common.gae(reward_BN.T, value_BN.T, next_value_BN.T, last_BN.T,
                                last_BN.T, opts.gamma, opts.gae_lambda)
    samples = {'seq': seq_BT, 'mask': mask_BN.astype(jnp.float32), 'log_prob': log_prob_BN,
               'value': value_BN, 'advantage': adv_NB.T, 'return': ret_NB.T}
    stats = {'rm_score': score_B.mean(), 'kl': kl_BN.sum(-1).mean(),
             'property': property_of(resp_BN, mask_BN).mean(),
             'length': mask_BN.sum(-1).mean()}
    return jax.lax.stop_gradient(samples), stats

  def ppo_terms(self, params, mb):
    log_prob, value = self.policy_terms(params, mb['seq'])
    adv = mb['advantage']
    if self.opts.whiten_advantages:
      adv = masked_whiten(adv, mb['mask'], self.axis_name)
    return masked_ppo_terms(log_prob, mb['log_prob'], adv, value, mb['value'], mb['return'],
                            mb['mask'], self.opts.clip_eps, self.opts.clip_value,
                            self.axis_name)

  def ppo_loss(self, variables, mb, rng):
    del rng
    surrogate, v_loss, _, approx_kl, clip_frac = self.ppo_terms(variables['params'], mb)
    loss = -surrogate + self.opts.vf_coef * v_loss
    return loss, ({'policy_loss': -surrogate, 'value_loss': v_loss, 'approx_kl': approx_kl,
                   'clip_fraction': clip_frac}, {})

  def minibatches(self, samples, rng):
    """The step's rollouts (B, ...) as `minibatches` random minibatches (M, B / M, ...),
    from one permutation of the global batch. Under pmap the rollouts of every device are
    gathered first and each device keeps its slice of every minibatch (M, B / M / devices,
    ...): jit's minibatches, split over the devices."""
    m, axis = self.opts.minibatches, self.axis_name
    if axis is not None:
      samples = jax.lax.all_gather(samples, axis, tiled=True)
    perm = jax.random.permutation(rng, self.batch_size)
    mbs = jax.tree.map(lambda x: x[perm].reshape(m, -1, *x.shape[1:]), samples)
    if axis is None:
      return mbs
    devices = jax.lax.axis_size(axis)
    if (self.batch_size // m) % devices:
      raise ConfigError(f"parallelism='pmap': PPO's minibatches of batch_size / minibatches "
                        f"= {self.batch_size // m} rollouts do not split over {devices} "
                        f"devices; use a batch_size that {m} x {devices} divides, or "
                        f"parallelism='jit'")
    k = self.batch_size // m // devices
    start = jax.lax.axis_index(axis) * k
    return jax.tree.map(lambda x: jax.lax.dynamic_slice_in_dim(x, start, k, axis=1), mbs)

  def make_step(self, builders):
    opts = self.opts
    method = opts.method
    # Under pmap the losses' means run over every device's pairs or tokens (`share_of`).
    self.axis_name = axis = builders.axis_name
    update = builders.supervised({'rm': self.rm_loss, 'dpo': self.dpo_loss,
                                  'ppo': self.ppo_loss}[method], accum=1)

    def step(state, batch, rng):
      del rng  # the samples come from the state's shared key (module docstring)
      key = builders.shared_rng(state)
      k_sample, k_shuffle = jax.random.split(key)
      prompt_BP = self.prompts(batch)
      b = prompt_BP.shape[0]
      # Global row ids: a prompt's samples do not depend on the device that holds it.
      row_ids_B = jnp.arange(b) + (0 if axis is None else jax.lax.axis_index(axis) * b)
      # The frozen runs and the KL controller stay out of the updates (the builders would
      # average them under pmap).
      frozen = {k: v for k, v in state.extra.items() if k in (REF, RM, KL_CTL)}
      others = state.replace(extra={k: v for k, v in state.extra.items() if k not in frozen})
      if method in ('rm', 'dpo'):
        pairs = self.pairs(state.extra[REF]['params'], prompt_BP, k_sample, row_ids_B)
        new, metrics = update(others, pairs, k_shuffle)
        metrics['tie_fraction'] = 1.0 - builders.mean(pairs['weight'].mean())
      else:
        samples, stats = self.rollout(state.variables(), prompt_BP, k_sample, row_ids_B)
        stats = builders.mean(stats)  # of every device's rollouts (equal counts of rows)

        def epoch(s, e):
          mbs = self.minibatches(samples, jax.random.fold_in(k_shuffle, e))
          return jax.lax.scan(lambda s, mb: update(s, mb, k_shuffle), s, mbs)

        new, metrics = jax.lax.scan(epoch, others, jnp.arange(opts.epochs))
        metrics = {**jax.tree.map(jnp.mean, metrics), **stats}
        metrics['learning_rate'] = builders.schedule(state.step * opts.epochs * opts.minibatches)
        metrics['kl_coef'] = jnp.asarray(self.kl_coef(frozen), jnp.float32)
        if self.adaptive:  # the next step's coefficient, from this step's sampled KL
          coef = adapt_kl_coef(frozen[KL_CTL]['coef'], stats['kl'],
                               opts.kl_target, opts.kl_horizon, self.batch_size)
          frozen = {**frozen, KL_CTL: {'coef': coef}}
      return new.replace(extra={**new.extra, **frozen}), metrics

    return step

  # --------------------------------------------------------------------- eval

  def sampler_params(self, variables):
    """The LM that samples: the policy, or the reference for a reward model."""
    return variables[REF]['params'] if self.opts.method == 'rm' else variables['params']['lm']

  def evaluate(self, variables, batch):
    """Per-prompt metrics on the eval split, keys from the prompts' own tokens."""
    prompt_BP = self.prompts(batch)
    row_ids_B = (prompt_BP * (jnp.arange(prompt_BP.shape[1]) * 7919 + 1)).sum(-1)
    rng = jax.random.key(0)
    ref_params = variables[REF]['params']
    resp_BN = self.lm.sample(self.sampler_params(variables), prompt_BP, rng, row_ids_B)
    seq_BT = jnp.concatenate([prompt_BP, resp_BN], 1)
    mask_BN = continuation_mask(resp_BN)
    out = {'property': property_of(resp_BN, mask_BN),
           'kl': self.lm.sequence_log_prob(self.sampler_params(variables), seq_BT)
                 - self.ref.sequence_log_prob(ref_params, seq_BT)}
    method = self.opts.method
    if method == 'ppo':
      out['rm_score'] = self.rm.score(variables[RM]['params'], seq_BT)
    if method in ('rm', 'dpo'):
      pairs = self.pairs(ref_params, prompt_BP, jax.random.fold_in(rng, 1), row_ids_B)
      w = pairs['weight']
      if method == 'rm':
        r_w = self.score(variables['params'], pairs['chosen'])
        r_l = self.score(variables['params'], pairs['rejected'])
        out['pair_correct'] = (r_w > r_l) * w
      else:
        _, chosen, rejected = self.dpo_terms(variables['params'], pairs)
        out['pair_correct'] = (chosen > rejected) * w
        out['pair_margin'] = (chosen - rejected) * w
      out['pairs'] = w
    return out

  @staticmethod
  def finalize_eval(sums, count):
    pairs = max(float(sums.get('pairs', 0.0)), 1.0)
    out = {}
    for k, v in sums.items():
      if k == 'pair_correct':
        out['pair_accuracy'] = float(v) / pairs
      elif k == 'pair_margin':
        out['reward_margin'] = float(v) / pairs
      elif k != 'pairs':
        out[k] = float(v) / max(count, 1.0)
    return out

  # ------------------------------------------------------------------ sampler

  def sample(self, variables, batch, rng, *, max_new_tokens, temperature=1.0, top_k=0,
             top_p=1.0, row_ids=None):
    """Continues batch['prompt'] with the policy (module docstring)."""
    return {'tokens': self.lm.sample(self.sampler_params(variables), batch['prompt'], rng,
                                     row_ids, max_new_tokens=max_new_tokens,
                                     temperature=temperature, top_k=top_k, top_p=top_p)}

  @staticmethod
  def prompt_batch(prompts, num_samples):
    rows = [[vocab.BOS] + list(p) for p in prompts]
    if len({len(r) for r in rows}) > 1:
      raise ConfigError('prompts in one batch must have the same length')
    del num_samples
    return {'prompt': np.asarray(rows, np.int32)}

  def task(self) -> Task:
    return Task(init=self.init, loss=None,  # each method owns its step (make_step)
                example_batch=lambda n: {'tokens': jax.ShapeDtypeStruct((n, self.window),
                                                                        jnp.int32)},
                evaluate=self.evaluate, finalize_eval=self.finalize_eval,
                make_step=self.make_step, sample=self.sample, prompt_batch=self.prompt_batch,
                continues_prompt=True)


def _last_valid(mask_BN):
  """1 at each row's last continuation token (B, N)."""
  nxt = jnp.concatenate([mask_BN[:, 1:], jnp.zeros_like(mask_BN[:, :1])], 1)
  return mask_BN & ~nxt


def make(config) -> Task:
  return Agent(config).task()
