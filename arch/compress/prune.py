"""Weight pruning as masks applied in the training loop, wrapping any task of the codebase
(`task_kwargs.base_task`: the classifier of resnet_digits, the causal LM of gpt_pydoc).

Masks. The prunable weights are the kernels of Dense / Conv / attention projections (a leaf
named `kernel` with ndim >= 2); biases, norms and embeddings are kept dense (they are a
small share of the weights and, for embeddings, a lookup rather than a matmul). Each has a
float 0/1 mask of its shape in the non-param collection 'prune' (prune/mask/<path>), which
the loop checkpoints with the rest of the state. The forward pass uses params * mask, so a
pruned weight gets zero gradient; after every optimizer update the params are multiplied
by the mask again, so a pruned weight stays exactly zero even where the update is not zero
(AdamW's momentum from before it was pruned).

Methods (`task_kwargs.method`):
  'global'   global magnitude pruning, one threshold over all prunable weights: the
             round(s N) weights of smallest |w| are pruned (ranked, so ties cannot
             overshoot), with the gradual schedule of Zhu & Gupta 2017 ("To prune, or not to
             prune"): s_t = s_f (1 - (1 - (t - t0) / (t1 - t0))^3) for t in [t0, t1], masks
             recomputed every `every` steps and at t1. Pruned weights are zero, so they rank
             first and stay pruned as the sparsity grows.
  'lottery'  iterative magnitude pruning with rewinding (Frankle & Carbin 2019, "The lottery
             ticket hypothesis"; Frankle et al. 2020, "Linear mode connectivity and the
             lottery ticket hypothesis"): the params at step `rewind_step` are kept in
             prune/rewind; after each of `rounds` rounds of `round_steps` steps the global
             magnitude criterion prunes p = 1 - (1 - s_f)^(1/rounds) of the remaining weights
             and every param is rewound to its kept value (pruned ones to zero); the
             optimizer state restarts then (the learning-rate schedule follows the loop's
             step, which is not rewound). A last round trains the final ticket.
  'channel'  structured pruning of whole output channels of the 2-D conv kernels (HWIO) by
             their L1 norm sum |W[..., o]| (Li et al. 2017, "Pruning filters for efficient
             ConvNets"), the same fraction round(s C) in every conv, on the gradual
             schedule; the conv's bias channel (if any) goes with it. Dense kernels stay
             dense. A following BatchNorm's shift still adds a constant map for a pruned
             channel (a deployment folds it into the next layer's bias).

Start. With `config.frozen.dense` (a trained run of the same network and base task) its
variables fill the params and statistics at the first step, and eval reports the dense
model's metrics next to the pruned one's (`dense_accuracy`, `dense_loss`); without it the
run starts from the initialisation (the lottery ticket's original setting). A frozen run
rather than `config.init_from`: the check `configs/prune_resnet_digits.py:sparsity=0.9` then
trains the dense run itself when its workdir is empty, and the dense numbers sit in the same
eval lines.

Metrics: `sparsity` (the fraction of prunable weights that are exactly zero, read from the
params, not the masks) in train and eval lines; the base task's own metrics.

Measured (2026-12-06, shared 2-core CPU; details in configs/prune_resnet_digits.py and
configs/prune_gpt_pydoc.py): the digits ResNet (dense test accuracy 0.9972, loss 0.0173),
fine-tuned 200 steps from the dense run, keeps 0.9972 at 50% global sparsity and 0.9944 (one
test example fewer) at 80% and 90% (loss 0.0127 / 0.0181 / 0.0361); 50% of the conv
channels: 0.9944 (loss 0.0935); lottery to 90% in 3 rounds from scratch: 0.9917 130 steps
into its last round, 0.9750 at its end (constant learning rate, noisy). The pydoc GPT
(3.1 M prunable kernel weights), 100 steps from a 200-step dense run, validation loss
1.935 dense / 1.948 at 50% / 2.032 at 80% / 2.245 at 90% (nats per byte, the same fine-tune).

Config keys read: `task_kwargs` (the fields of `Options`), `frozen.dense`, and whatever the
base task reads (it gets the config with `task = base_task`, `task_kwargs = base_kwargs`).
"""

import dataclasses
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util

import arch
from arch.compress import source_run
from arch.task import ConfigError, Task, parse_options

PRUNE = 'prune'  # the collection of masks (and, for 'lottery', the rewind point)
DENSE = 'dense'  # the frozen dense run's variables
METHODS = ('global', 'lottery', 'channel')


# ------------------------------------------------------------------------------ masks


def is_prunable(path, leaf) -> bool:
  """Kernels of Dense / Conv / attention projections: named 'kernel', ndim >= 2."""
  return path[-1] == 'kernel' and jnp.ndim(leaf) >= 2


def is_conv(path, leaf) -> bool:
  """2-D convolution kernels (kh, kw, C_in, C_out)."""
  return path[-1] == 'kernel' and jnp.ndim(leaf) == 4


def init_masks(params, select=is_prunable) -> dict:
  """{path: ones like the leaf} for the selected leaves, nested like params."""
  flat = traverse_util.flatten_dict(nn.meta.unbox(params))
  return traverse_util.unflatten_dict(
      {k: jnp.ones(jnp.shape(v), jnp.float32) for k, v in flat.items() if select(k, v)})


def apply_masks(params, masks):
  """params with every masked leaf multiplied by its mask (others as they are)."""
  flat = traverse_util.flatten_dict(params)
  for k, m in traverse_util.flatten_dict(masks).items():
    flat[k] = flat[k] * m.astype(flat[k].dtype)
  return traverse_util.unflatten_dict(flat)


def _masked_leaves(params, masks):
  flat = traverse_util.flatten_dict(params)
  return [(flat[k], m) for k, m in traverse_util.flatten_dict(masks).items()]


def sparsity(params, masks):
  """The fraction of the masked (prunable) leaves' weights that are exactly zero."""
  pairs = _masked_leaves(params, masks)
  zeros = sum(jnp.sum(p == 0) for p, _ in pairs)
  return zeros.astype(jnp.float32) / sum(p.size for p, _ in pairs)


def gradual_sparsity(step, final, begin, end):
  """Zhu & Gupta's schedule s_f (1 - (1 - (t - t0) / (t1 - t0))^3), 0 before t0, s_f after t1."""
  span = max(int(end) - int(begin), 1)
  frac = jnp.clip((jnp.asarray(step, jnp.float32) - begin) / span, 0.0, 1.0)
  return final * (1.0 - (1.0 - frac) ** 3)


def _count(fraction, n):
  return jnp.round(jnp.asarray(fraction, jnp.float32) * n).astype(jnp.int32)


def global_masks(params, masks, fraction):
  """Masks pruning the round(fraction N) smallest |w| over all masked leaves together (N
  their total size): one global threshold, ties broken by position so the count is exact.
  Already-pruned weights are zero and rank first."""
  keys = list(traverse_util.flatten_dict(masks))
  pairs = _masked_leaves(params, masks)
  mags = jnp.concatenate([jnp.abs((p * m).astype(jnp.float32)).reshape(-1) for p, m in pairs])
  n = mags.size
  order = jnp.argsort(mags, stable=True)
  rank = jnp.zeros((n,), jnp.int32).at[order].set(jnp.arange(n, dtype=jnp.int32))
  keep = (rank >= _count(fraction, n)).astype(jnp.float32)
  out, start = {}, 0
  for k, (p, _) in zip(keys, pairs):
    out[k] = keep[start:start + p.size].reshape(p.shape)
    start += p.size
  return traverse_util.unflatten_dict(out)


def channel_masks(params, masks, fraction):
  """Masks zeroing, in every masked kernel, the round(fraction C_out) output channels (last
  axis) of smallest L1 norm sum |W[..., o]|; ties broken by channel index."""
  out = {}
  flat = traverse_util.flatten_dict(params)
  for k, m in traverse_util.flatten_dict(masks).items():
    w = jnp.abs((flat[k] * m).astype(jnp.float32))
    l1 = w.reshape(-1, w.shape[-1]).sum(0)
    c = l1.size
    rank = jnp.zeros((c,), jnp.int32).at[jnp.argsort(l1, stable=True)].set(
        jnp.arange(c, dtype=jnp.int32))
    keep = (rank >= _count(fraction, c)).astype(jnp.float32)
    out[k] = jnp.broadcast_to(keep, w.shape)
  return traverse_util.unflatten_dict(out)


def _bias_masks(params, masks):
  """For channel pruning: the bias beside each masked kernel, masked by its channels."""
  flat = traverse_util.flatten_dict(params)
  out = {}
  for k, m in traverse_util.flatten_dict(masks).items():
    bias = k[:-1] + ('bias',)
    if bias in flat and flat[bias].shape == m.shape[-1:]:
      out[bias] = m.reshape(-1, m.shape[-1])[0]
  return out


def lottery_sparsity(round_index, final, rounds):
  """The sparsity after `round_index` rounds, each pruning p = 1 - (1 - s_f)^(1/R) of the
  remaining weights: 1 - (1 - p)^r."""
  keep_per_round = (1.0 - final) ** (1.0 / rounds)
  return 1.0 - keep_per_round ** jnp.asarray(round_index, jnp.float32)


# ---------------------------------------------------------------------------- the task


@dataclasses.dataclass(frozen=True)
class Options:
  """Pruning's task_kwargs."""
  base_task: str = ''  # the wrapped objective, e.g. 'vision.classification'
  base_kwargs: Optional[dict] = None  # its task_kwargs
  method: str = 'global'  # 'global' | 'lottery' | 'channel'
  sparsity: float = 0.9  # the final fraction of prunable weights (channels) pruned
  begin_step: int = 0  # global/channel: the pruning window [begin_step, end_step]
  end_step: int = 100
  every: int = 10  # global/channel: masks recomputed every `every` steps in the window
  rounds: int = 3  # lottery: pruning rounds
  round_steps: int = 100  # lottery: training steps per round
  rewind_step: int = 0  # lottery: the step whose params every round rewinds to


def _base_config(config, opts):
  sub = config.copy_and_resolve_references()
  with sub.unlocked():
    sub.task = opts.base_task
    sub.task_kwargs = dict(opts.base_kwargs or {})
    sub.frozen = type(sub.frozen)()  # the base task reads no frozen run
  return sub


def make(config) -> Task:
  opts = parse_options(Options, config)
  if opts.method not in METHODS:
    raise ConfigError(f'unknown method {opts.method!r}; valid: {", ".join(METHODS)}')
  if not opts.base_task or opts.base_task.startswith('compress.prune'):
    raise ConfigError("pruning needs the task it wraps: config.task_kwargs.base_task = "
                      "'vision.classification' (or any other task)")
  if not 0.0 <= opts.sparsity < 1.0:
    raise ConfigError(f'sparsity={opts.sparsity}: must be in [0, 1)')
  if opts.method != 'lottery' and not 0 <= opts.begin_step <= opts.end_step:
    raise ConfigError(f'pruning window [{opts.begin_step}, {opts.end_step}] is empty')
  if opts.every < 1 or opts.rounds < 1 or opts.round_steps < 1:
    raise ConfigError('every, rounds and round_steps must be >= 1')
  base = arch.load(opts.base_task, 'make').make(_base_config(config, opts))
  from_dense = source_run(config, DENSE, 'the dense run', opts.base_task) is not None
  select = is_conv if opts.method == 'channel' else is_prunable

  def base_vars(variables, masked=True):
    v = {k: x for k, x in variables.items() if k not in (PRUNE, DENSE)}
    if masked:
      v['params'] = mask_params(opts, variables['params'], variables[PRUNE]['mask'])
    return v

  def init(rng, batch):
    variables = dict(base.init(rng, batch))
    masks = init_masks(variables['params'], select)
    if not masks:
      raise ConfigError(f'method {opts.method!r}: the network has no prunable kernels')
    variables[PRUNE] = {'mask': masks}
    if opts.method == 'lottery':
      variables[PRUNE]['rewind'] = nn.meta.unbox(variables['params'])
    if from_dense:
      variables[DENSE] = nn.meta.unbox(base.init(rng, batch))
    return variables

  def loss(variables, batch, rng):
    value, (metrics, updates) = base.loss(base_vars(variables), batch, rng)
    extra = {k: x for k, x in variables.items() if k != 'params'}
    return value, (metrics, {**extra, **updates})

  def make_step(builders):
    train = builders.supervised(loss)

    def step(state, batch, rng):
      state, masks, target = before_update(opts, state, builders.tx, from_dense)
      state, metrics = train(state, batch, rng)
      state = state.replace(params=mask_params(opts, state.params, masks))
      metrics = {**metrics, 'sparsity': sparsity(state.params, masks),
                 'target_sparsity': jnp.asarray(target, jnp.float32)}
      return state, metrics

    return step

  def evaluate(variables, batch):
    out = dict(base.evaluate(base_vars(variables), batch))
    lead = jax.tree.leaves(out)[0].shape[:1]
    out['sparsity'] = jnp.broadcast_to(sparsity(variables['params'],
                                                variables[PRUNE]['mask']), lead)
    if from_dense:
      dense = {**base_vars(variables, masked=False), **variables[DENSE]}
      out.update({f'dense_{k}': x for k, x in base.evaluate(dense, batch).items()})
    return out

  def finalize_eval(sums, count):
    """The base task's finalize for its own and the dense run's sums; sparsity a mean."""
    own = {k: v for k, v in sums.items() if k != 'sparsity' and not k.startswith('dense_')}
    result = dict(base.finalize_eval(own, count))
    if from_dense:
      dense = {k[len('dense_'):]: v for k, v in sums.items() if k.startswith('dense_')}
      result.update({f'dense_{k}': v for k, v in base.finalize_eval(dense, count).items()})
    result['sparsity'] = float(sums['sparsity']) / max(float(count), 1.0)
    return result

  def sample(variables, batch, rng, **kw):
    return base.sample(base_vars(variables), batch, rng, **kw)

  return Task(init=init, loss=loss, evaluate=evaluate,
              finalize_eval=finalize_eval if base.finalize_eval is not None else None,
              example_batch=base.example_batch, preprocess=base.preprocess,
              sample=sample if base.sample is not None else None,
              prompt_batch=base.prompt_batch, continues_prompt=base.continues_prompt,
              make_step=make_step)


def prune_now(opts, step):
  """(whether the masks are recomputed before the update of `step`, the target sparsity)."""
  if opts.method == 'lottery':
    since = step - opts.rewind_step
    r = since // opts.round_steps
    now = (since > 0) & (since % opts.round_steps == 0) & (r <= opts.rounds)
    return now, lottery_sparsity(jnp.clip(r, 0, opts.rounds), opts.sparsity, opts.rounds)
  in_window = (step >= opts.begin_step) & (step <= opts.end_step)
  now = in_window & (((step - opts.begin_step) % opts.every == 0) | (step == opts.end_step))
  return now, gradual_sparsity(step, opts.sparsity, opts.begin_step, opts.end_step)


def mask_params(opts, params, masks):
  """params * masks (for 'channel' also the pruned channels' biases)."""
  params = apply_masks(params, masks)
  if opts.method == 'channel':
    params = _apply_flat(params, _bias_masks(params, masks))
  return params


def before_update(opts, state, tx, from_dense: bool = False):
  """The train state a step's gradient update starts from, as (state, masks, target): at
  step 0 the dense run's variables (with `from_dense`); for 'lottery' the params kept as the
  rewind point at `rewind_step`; the masks recomputed on the schedule, and for 'lottery' at
  a round's end every param rewound to its kept value and the optimizer state restarted
  (tx.init); the params multiplied by the masks."""
  pick = lambda c, new, old: jax.tree.map(lambda n, o: jnp.where(c, n, o), new, old)
  if from_dense:
    first = state.step == 0
    start = state.extra[DENSE]
    extra = {**state.extra, **{k: pick(first, v, state.extra[k]) for k, v in start.items()
                               if k != 'params'}}
    state = state.replace(params=pick(first, start['params'], state.params), extra=extra)
  prune = dict(state.extra[PRUNE])
  if opts.method == 'lottery':
    prune['rewind'] = pick(state.step == opts.rewind_step, state.params, prune['rewind'])
  now, target = prune_now(opts, state.step)
  recompute = channel_masks if opts.method == 'channel' else global_masks
  masks = jax.lax.cond(now, lambda: recompute(state.params, prune['mask'], target),
                       lambda: prune['mask'])
  prune['mask'] = masks
  params, opt_state = state.params, state.opt_state
  if opts.method == 'lottery':  # rewind the survivors; the optimizer starts again
    params = pick(now, prune['rewind'], params)
    opt_state = pick(now, tx.init(params), opt_state)
  state = state.replace(params=mask_params(opts, params, masks), opt_state=opt_state,
                        extra={**state.extra, PRUNE: prune})
  return state, masks, target


def _apply_flat(params, flat_masks):
  if not flat_masks:
    return params
  flat = traverse_util.flatten_dict(params)
  for k, m in flat_masks.items():
    flat[k] = flat[k] * m.astype(flat[k].dtype)
  return traverse_util.unflatten_dict(flat)
