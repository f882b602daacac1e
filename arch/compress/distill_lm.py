"""Distilling a masked language model into a smaller one: TinyBERT (Jiao et al. 2020) and
DistilBERT (Sanh et al. 2019), from a frozen BERT teacher run of this codebase.

The teacher is a frozen run (`config.frozen.teacher = dict(spec='configs/bert_pydoc.py',
workdir='')`, trained first when its workdir holds no checkpoint; see
arch/vision/distillation.py). Teacher and student read the same corrupted input: the
masked-LM pipeline of arch/sequence/mlm.py (sentence pairs, 15% of the tokens chosen,
80/10/10 MASK/random/kept), so the student's loss is taken where the teacher's was.

Hidden states and attention scores come out of both networks without changing them:
`capture_intermediates` records the outputs of the embedding LayerNorm ('embed_norm'),
of every block ('layer{i}') and of every block's query and key projections
('layer{i}/self_attn/query|key'), the names sequence.bert (and sequence.mobilebert) use.
The pre-softmax attention scores are rebuilt from those, A = q k^T / sqrt(H) per head
(B, N, T, S), the matrix TinyBERT distils ("the attention matrix ... before softmax");
entries at padded keys are set to 0 in both networks, as TinyBERT's code does.

  tinybert: student layer m (1..M) learns teacher layer g(m) = m N / M (uniform mapping;
      embeddings are layer 0). Intermediate-layer distillation, for the first
      `pred_start` of the steps:
        L = MSE(E_S W_e, E_T) + sum_m [MSE(H_S^m W_h, H_T^g(m)) + MSE(A_S^m, A_T^g(m))]
      with W_e, W_h learned (D_S, D_T) maps (params 'maps'; none when the widths agree)
      and the attention MSE averaged over heads (the networks need as many heads); then
      prediction-layer distillation for the rest of the steps:
        L = t^2 KL(softmax(z_T / t) || softmax(z_S / t))  at the masked positions.
      The paper writes the latter as the soft cross-entropy -p_T . log p_S(t); the two
      differ by the teacher's entropy, which has no gradient, and the KL is 0 when the
      student equals the teacher. Two stages of one run (a `lax.cond` on the step) rather
      than two runs: the paper runs them one after the other, too. No hard-label loss, as
      in the paper.
  distilbert: L = a_soft t^2 KL(p_T(t) || p_S(t)) + a_mlm CE(z_S, y) + a_cos (1 - cos(h_S,
      h_T)), the soft-target and MLM losses at the masked positions, the cosine loss between
      the last hidden states at every real (non-pad) position; Hugging Face's
      distillation recipe (t 2, a_soft 5, a_mlm 2, a_cos 1). With `init_from_teacher` the
      first step copies into the student every tensor of the teacher with the same path and
      shape, its layer i taking the teacher's layer i N / M ("one layer out of two" when
      N = 2M); the embeddings and heads where the widths agree. When the widths differ the
      cosine loss reads the student's state through a learned map W_h (an extension: the
      paper's student keeps the teacher's width).
  none: the same student, MLM cross-entropy alone: the baseline.
Next-sentence prediction is not trained (DistilBERT dropped it; the teacher's is at chance
on pydoc); the teacher's sentence-pair layout is kept so it reads the input it was trained on.

Eval (validation): the student's `mlm_accuracy` / `mlm_loss` (token-weighted over the split,
as sequence.mlm reports them), and with a teacher `teacher_mlm_accuracy` and `agreement`
(student and teacher predict the same byte at the masked positions).
Measured on pydoc (configs/tinybert_pydoc.py, configs/distilbert_pydoc.py): see there.

Config keys read: `model_name`, `model` (the student), `data.pack`, `data.tokenizer`,
`total_steps`, `frozen.teacher.config`, and `task_kwargs`, the fields of `Options`.

Dimension key: B batch, L/T/S length, D width, N heads, H head width, V vocabulary.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import arch
from arch import vocab
from arch.sequence import mlm
from arch.task import ConfigError, Task, parse_options

TEACHER = 'teacher'  # the collection the loop restores the frozen teacher into
STUDENT, MAPS = 'student', 'maps'  # the params: the student network, the learned maps
METHODS = ('tinybert', 'distilbert', 'none')


@dataclasses.dataclass(frozen=True)
class Options:
  """The distillation's task_kwargs."""
  method: str = 'tinybert'  # 'tinybert' | 'distilbert' | 'none'
  temperature: float = 1.0  # of the soft targets (TinyBERT 1, DistilBERT 2)
  pred_start: float = 0.5  # tinybert: fraction of total_steps before the prediction stage
  alpha_soft: float = 5.0  # distilbert: the soft-target loss's weight
  alpha_mlm: float = 2.0  # distilbert: the MLM loss's weight
  alpha_cos: float = 1.0  # distilbert: the cosine loss's weight
  init_from_teacher: bool = True  # distilbert: copy the teacher's matching tensors first
  # the masked-LM input (arch/sequence/mlm.py); with a teacher, taken from its run
  mask_rate: float = 0.15
  mask_token_rate: float = 0.8
  random_token_rate: float = 0.1
  nsp: bool = True  # sentence-pair layout


# ---------------------------------------------------------------------------- losses


def attention_scores(q_BTNH, k_BSNH, valid_BS):
  """Pre-softmax scores q k^T / sqrt(H) (B, N, T, S) in float32, 0 at padded keys."""
  scores = jnp.einsum('BTNH,BSNH->BNTS', q_BTNH.astype(jnp.float32),
                      k_BSNH.astype(jnp.float32)) * q_BTNH.shape[-1] ** -0.5
  return jnp.where(valid_BS[:, None, None, :], scores, 0.0)


def mse(a, b):
  """Mean squared error over every entry."""
  return jnp.mean(jnp.square(a.astype(jnp.float32) - b.astype(jnp.float32)))


def soft_target_loss(student_BLV, teacher_BLV, weights_BL, temperature):
  """t^2 KL(softmax(teacher / t) || softmax(student / t)), averaged over positions with
  weights_BL (the masked ones)."""
  t = temperature
  log_p_t = jax.nn.log_softmax(teacher_BLV.astype(jnp.float32) / t)
  log_p_s = jax.nn.log_softmax(student_BLV.astype(jnp.float32) / t)
  kl_BL = jnp.sum(jnp.exp(log_p_t) * (log_p_t - log_p_s), axis=-1)
  return t * t * jnp.sum(kl_BL * weights_BL) / jnp.maximum(weights_BL.sum(), 1.0)


def cosine_loss(student_BLD, teacher_BLD, weights_BL, eps=1e-8):
  """Mean of 1 - cos(student, teacher) over positions with weights_BL."""
  s = student_BLD.astype(jnp.float32)
  t = teacher_BLD.astype(jnp.float32)
  cos_BL = jnp.sum(s * t, -1) / jnp.maximum(
      jnp.linalg.norm(s, axis=-1) * jnp.linalg.norm(t, axis=-1), eps)
  return jnp.sum((1.0 - cos_BL) * weights_BL) / jnp.maximum(weights_BL.sum(), 1.0)


def layer_map(num_student: int, num_teacher: int):
  """TinyBERT's uniform g: student layer m (1..M) -> teacher layer m N / M; [g(1)..g(M)]."""
  if num_teacher % num_student:
    raise ConfigError(f'the student\'s {num_student} layers must divide the teacher\'s '
                      f'{num_teacher}')
  return [m * num_teacher // num_student for m in range(1, num_student + 1)]


def copy_from_teacher(student, teacher, num_student: int, num_teacher: int):
  """DistilBERT's initialisation: student params with every leaf the teacher has at the
  same path and shape copied; student layer i reads teacher layer i N / M (i from 0: one
  layer out of two when N = 2M). Returns (params, copied paths)."""
  stride = num_teacher // num_student
  rename = {f'layer{i}': f'layer{i * stride}' for i in range(num_student)}
  copied = []

  def pick(path, leaf):
    keys = [getattr(p, 'key', None) for p in path]
    source = teacher
    for i, k in enumerate(keys):
      k = rename.get(k, k) if i == 0 else k
      if not isinstance(source, dict) or k not in source:
        return leaf
      source = source[k]
    if np.shape(source) != np.shape(leaf):
      return leaf
    copied.append('/'.join(keys))
    return jnp.asarray(source, leaf.dtype)

  return jax.tree_util.tree_map_with_path(pick, student), copied


# ---------------------------------------------------------------------- intermediates


def _tapped(module, method_name):
  """capture_intermediates filter: embeddings, blocks and their query/key projections."""
  path = module.path
  if method_name != '__call__' or not path:
    return False
  top = path[0]
  if len(path) == 1:
    return top == 'embed_norm' or top.startswith('layer')
  return (len(path) == 3 and top.startswith('layer') and path[1] == 'self_attn'
          and path[2] in ('query', 'key'))


def run_tapped(model, variables, inputs_BL, types_BL, num_layers, train=False, rng=None):
  """(outputs, taps): the model's outputs and {'embed': (B, L, D), 'hidden': [(B, L, D)
  per layer], 'q': [(B, L, N, H)], 'k': [(B, L, N, H)]}."""
  out, state = model.apply(variables, inputs_BL, token_types_BT=types_BL, train=train,
                           rngs={'dropout': rng} if train else None,
                           capture_intermediates=_tapped, mutable=['intermediates'])
  got = state['intermediates']
  first = lambda tree: tree['__call__'][0]
  layers = [got[f'layer{i}'] for i in range(num_layers)]
  return out, {'embed': first(got['embed_norm']),
               'hidden': [first(g) for g in layers],
               'q': [first(g['self_attn']['query']) for g in layers],
               'k': [first(g['self_attn']['key']) for g in layers]}


def tinybert_losses(s_taps, t_taps, maps, valid_BL, mapping):
  """{'embed', 'hidden', 'attention'}: TinyBERT's intermediate-layer losses (summed over
  the mapped layers); `maps` holds the W_e, W_h kernels (D_S, D_T), or is empty (identity)."""
  proj = lambda x, name: x if name not in maps else jnp.einsum(
      'BLD,DE->BLE', x.astype(jnp.float32), maps[name])
  embed = mse(proj(s_taps['embed'], 'embed'), t_taps['embed'])
  hidden = attention = 0.0
  for m, g in enumerate(mapping):
    hidden += mse(proj(s_taps['hidden'][m], 'hidden'), t_taps['hidden'][g - 1])
    attention += mse(attention_scores(s_taps['q'][m], s_taps['k'][m], valid_BL),
                     attention_scores(t_taps['q'][g - 1], t_taps['k'][g - 1], valid_BL))
  return {'embed': embed, 'hidden': hidden, 'attention': attention}


# -------------------------------------------------------------------------------- task


def make(config) -> Task:
  opts = parse_options(Options, config)
  method = opts.method
  if method not in METHODS:
    raise ConfigError(f'unknown method {method!r}; valid: {", ".join(METHODS)}')
  length = int(config.data.get('pack') or 0)
  if length <= 0:
    raise ConfigError('distillation reads windows of packed text: set config.data.pack')
  student = arch.model_from_config(config)
  num_layers = int(student.num_layers)
  mask_opts = dict(mask_rate=opts.mask_rate, mask_token_rate=opts.mask_token_rate,
                   random_token_rate=opts.random_token_rate)
  nsp = bool(opts.nsp)
  ids = mlm.data_vocab_size(config, student.vocab_size)

  teacher = tcfg = None
  if method != 'none':
    frozen = (config.get('frozen') or {}).get(TEACHER)
    if not frozen or not frozen.get('config'):
      raise ConfigError(f"method={method!r} needs a teacher: config.frozen.teacher = "
                        "dict(spec='configs/bert_pydoc.py', workdir='')")
    tcfg = frozen.config
    if tcfg.task != 'sequence.mlm':
      raise ConfigError(f'the teacher must be a masked-LM run (sequence.mlm), not {tcfg.task}')
    t_opts = parse_options(mlm.Options, tcfg)
    mask_opts = dict(mask_rate=t_opts.mask_rate, mask_token_rate=t_opts.mask_token_rate,
                     random_token_rate=t_opts.random_token_rate)
    nsp = bool(t_opts.nsp)
    if int(tcfg.data.pack) != length:
      raise ConfigError(f'the teacher reads windows of {tcfg.data.pack} tokens, the student '
                        f'{length}: set config.data.pack equal')
    teacher = arch.model_from_config(tcfg)
    if any(getattr(m, 'scan_layers', False) for m in (student, teacher)):
      raise ConfigError('distillation reads each layer\'s states by its module path '
                        '(layer{i}); a scanned stack (scan_layers=True) has one: unset it')
    if teacher.vocab_size != student.vocab_size:
      raise ConfigError(f'teacher and student vocabularies differ ({teacher.vocab_size} vs '
                        f'{student.vocab_size})')
  d_s = int(student.embed_dim)
  d_t = int(teacher.embed_dim) if teacher is not None else d_s
  mapping = []
  if method == 'tinybert':
    mapping = layer_map(num_layers, int(teacher.num_layers))
    if student.num_heads != teacher.num_heads:
      raise ConfigError(f'TinyBERT matches attention maps head by head: the student has '
                        f'{student.num_heads} heads, the teacher {teacher.num_heads}')
  if method == 'distilbert' and int(teacher.num_layers) % num_layers:
    raise ConfigError(f'the student\'s {num_layers} layers must divide the teacher\'s '
                      f'{teacher.num_layers}')
  map_names = {'tinybert': ('embed', 'hidden'), 'distilbert': ('hidden',)}.get(method, ())
  map_names = map_names if d_s != d_t else ()
  switch = int(round(opts.pred_start * int(config.total_steps)))
  t = float(opts.temperature)

  def inputs(batch, keys_B):
    return mlm.pretraining_inputs(batch['tokens'], keys_B, vocab_size=ids, nsp=nsp,
                                  **mask_opts)

  def init(rng, batch):
    tokens = batch['tokens'].astype(jnp.int32)
    types = jnp.zeros_like(tokens)
    s_vars = student.init({'params': rng, 'dropout': rng}, tokens, token_types_BT=types,
                          train=False)
    init_w = nn.initializers.lecun_normal()
    maps = {name: init_w(jax.random.fold_in(rng, i), (d_s, d_t))
            for i, name in enumerate(map_names)}
    variables = {k: v for k, v in s_vars.items() if k != 'params'}
    variables['params'] = {STUDENT: s_vars['params'], MAPS: maps}
    if teacher is not None:
      variables[TEACHER] = teacher.init({'params': rng, 'dropout': rng}, tokens,
                                        token_types_BT=types, train=False)
    return variables

  def student_vars(variables):
    return {'params': variables['params'][STUDENT],
            **{k: v for k, v in variables.items() if k not in ('params', TEACHER)}}

  def forward(variables, batch, keys_B, train, rng=None, stage=None):
    """Per-example sums of the MLM metrics and the batch's distillation terms."""
    x_BL, types_BL, targets_BL, chosen_BL, _ = inputs(batch, keys_B)
    valid_BL = x_BL != vocab.PAD
    w_BL = chosen_BL.astype(jnp.float32)
    out, s_taps = run_tapped(student, student_vars(variables), x_BL, types_BL, num_layers,
                             train, rng)
    z_s = out['mlm_logits']
    nll_BL = optax.softmax_cross_entropy_with_integer_labels(z_s, targets_BL)
    per_example = dict(mlm_nll=(nll_BL * w_BL).sum(1),
                       mlm_correct=((z_s.argmax(-1) == targets_BL) * w_BL).sum(1),
                       mlm_count=w_BL.sum(1))
    terms = {}
    if teacher is not None:
      t_vars = jax.lax.stop_gradient(variables[TEACHER])
      t_out, t_taps = run_tapped(teacher, t_vars, x_BL, types_BL, int(teacher.num_layers))
      z_t = t_out['mlm_logits']
      per_example['teacher_mlm_correct'] = ((z_t.argmax(-1) == targets_BL) * w_BL).sum(1)
      per_example['agreement'] = ((z_t.argmax(-1) == z_s.argmax(-1)) * w_BL).sum(1)
      if stage is not None:
        maps = variables['params'][MAPS]
        terms['soft'] = soft_target_loss(z_s, z_t, w_BL, t)
        if method == 'tinybert':
          terms.update(tinybert_losses(s_taps, t_taps, maps, valid_BL, mapping))
        else:
          h_s = s_taps['hidden'][-1]
          if 'hidden' in maps:
            h_s = jnp.einsum('BLD,DE->BLE', h_s.astype(jnp.float32), maps['hidden'])
          terms['cosine'] = cosine_loss(h_s, t_taps['hidden'][-1], valid_BL.astype(jnp.float32))
    return per_example, terms

  def objective(stage):
    """The training loss of a stage: 'intermediate' or 'prediction' (tinybert), 'all'."""

    def loss(variables, batch, rng):
      data_rng, dropout_rng = jax.random.split(rng)
      keys_B = jax.random.split(data_rng, batch['tokens'].shape[0])
      per_example, terms = forward(variables, batch, keys_B, True, dropout_rng, stage)
      sums = {k: v.sum() for k, v in per_example.items()}
      masked = jnp.maximum(sums['mlm_count'], 1.0)
      mlm_loss = sums['mlm_nll'] / masked
      if method == 'none':
        total = mlm_loss
      elif method == 'distilbert':
        total = (opts.alpha_soft * terms['soft'] + opts.alpha_mlm * mlm_loss
                 + opts.alpha_cos * terms['cosine'])
      elif stage == 'intermediate':
        total = terms['embed'] + terms['hidden'] + terms['attention']
      else:
        total = terms['soft']
      metrics = {'mlm_loss': mlm_loss, 'mlm_accuracy': sums['mlm_correct'] / masked,
                 **{f'loss_{k}': v for k, v in terms.items()}, 'loss': total}
      if teacher is not None:
        metrics['teacher_mlm_accuracy'] = sums['teacher_mlm_correct'] / masked
      return total, (metrics, {k: v for k, v in variables.items() if k != 'params'})

    return loss

  def make_step(builders):
    if method == 'tinybert':
      first, second = (builders.supervised(objective(s))
                       for s in ('intermediate', 'prediction'))
      return lambda state, batch, rng: jax.lax.cond(state.step < switch, first, second,
                                                    state, batch, rng)
    train = builders.supervised(objective('all'))

    def step(state, batch, rng):
      # DistilBERT's initialisation from the teacher, on the first step (the loop restores
      # the teacher's variables after `init`).
      params = state.params
      start, _ = copy_from_teacher(params[STUDENT], state.extra[TEACHER]['params'],
                                   num_layers, int(teacher.num_layers))
      first = state.step == 0
      student_params = jax.tree.map(lambda n, o: jnp.where(first, n, o), start,
                                    params[STUDENT])
      state = state.replace(params={**params, STUDENT: student_params})
      return train(state, batch, rng)

    return step

  def evaluate(variables, batch):
    return forward(variables, batch, mlm.row_keys(batch['tokens']), False)[0]

  def finalize_eval(sums, count):
    del count
    masked = max(float(sums['mlm_count']), 1.0)
    out = {'mlm_loss': float(sums['mlm_nll']) / masked,
           'mlm_accuracy': float(sums['mlm_correct']) / masked}
    if 'agreement' in sums:
      out['teacher_mlm_accuracy'] = float(sums['teacher_mlm_correct']) / masked
      out['agreement'] = float(sums['agreement']) / masked
    out['loss'] = out['mlm_loss']
    return out

  def example_batch(batch_size):
    return {'tokens': jax.ShapeDtypeStruct((batch_size, length), jnp.int32)}

  use_step = method == 'tinybert' or (method == 'distilbert' and opts.init_from_teacher)
  return Task(init=init, loss=objective('prediction' if method == 'tinybert' else 'all'),
              evaluate=evaluate, finalize_eval=finalize_eval, example_batch=example_batch,
              make_step=make_step if use_step else None)
