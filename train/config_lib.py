"""Loading experiment configs: `configs/NAME.py[:arg]` plus `--config.key=value` overrides.

A config file defines `get_config(arg: str | None) -> ml_collections.ConfigDict`. The
argument is free-form; `parse_arg` turns the usual `variant=50,runlocal` into fields.
"""

import ast
import importlib.util
import os
import sys

import ml_collections

from train.errors import UserError, close_matches

# Keys every experiment config must define (the loop reads them).
REQUIRED = ('seed', 'total_steps', 'batch_size', 'log_every', 'eval_every', 'ckpt_every',
            'parallelism', 'task', 'model_name', 'model', 'optax_name', 'optax', 'data')


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """'variant=50,runlocal' -> ConfigDict(variant='50', runlocal=True), typed by `defaults`."""
  out = ml_collections.ConfigDict(defaults)
  for item in filter(None, (arg or '').split(',')):
    key, eq, value = item.partition('=')
    if key not in defaults:
      raise UserError(f'unknown config argument {key!r}{close_matches(key, defaults)}; '
                      f'valid: {", ".join(defaults) or "(none)"}')
    default = defaults[key]
    if not eq:
      value = True
    elif isinstance(default, bool):
      value = value.lower() in ('1', 'true', 'yes')
    elif default is not None and not isinstance(default, str):
      value = type(default)(value)
    out[key] = value
  return out


def load(spec: str) -> ml_collections.ConfigDict:
  """Loads 'path/to/config.py[:arg]' and returns its locked config."""
  path, _, arg = spec.partition(':')
  if not os.path.isfile(path):
    here = os.path.dirname(path) or '.'
    names = sorted(f for f in os.listdir(here) if f.endswith('.py')) if os.path.isdir(here) else []
    raise UserError(f'config file {path!r} not found'
                    + (f'; configs in {here}/: {", ".join(names)}' if names else ''))
  # A config imports its neighbours as a package (`from configs import recipes`).
  folder = os.path.dirname(os.path.abspath(path))
  if os.path.isfile(os.path.join(folder, '__init__.py')):
    root = os.path.dirname(folder)
    if root not in sys.path:
      sys.path.append(root)
  module_spec = importlib.util.spec_from_file_location(
      f'_archzoo_config_{os.path.basename(path)[:-3]}', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, 'get_config'):
    raise UserError(f'config file {path!r} defines no get_config(arg)')
  config = module.get_config(arg or None)
  missing = [k for k in REQUIRED if k not in config]
  if missing:
    raise UserError(f'config {path!r} lacks required keys: {", ".join(missing)}')
  config.lock()
  return config


def _parse_value(text: str, old):
  if isinstance(old, bool):
    if text.lower() in ('1', 'true', 'yes'):
      return True
    if text.lower() in ('0', 'false', 'no'):
      return False
    raise ValueError(f'expected a bool, got {text!r}')
  if isinstance(old, str) or old is None:
    try:
      value = ast.literal_eval(text)
      return value if old is None else text
    except (ValueError, SyntaxError):
      return text
  value = ast.literal_eval(text)
  if isinstance(old, float) and isinstance(value, int):
    value = float(value)
  if isinstance(old, (tuple, list)) and isinstance(value, (tuple, list)):
    value = type(old)(value)
  if not isinstance(value, type(old)):
    raise ValueError(f'expected {type(old).__name__}, got {text!r}')
  return value


def override(config: ml_collections.ConfigDict, dotted: str, text: str) -> None:
  """Applies `--config.a.b=text`, typed by the existing field. Unknown keys fail loudly."""
  *parents, leaf = dotted.split('.')
  node, path = config, 'config'
  if parents == ['model'] and leaf not in config.get('model', {}):
    default = _model_field_default(config, leaf)
    if default is not _MISSING:  # a field of the network the config has left at its default
      with config.unlocked():
        config.model[leaf] = default
  for part in parents + [leaf]:
    if not isinstance(node, (ml_collections.ConfigDict, dict)) or part not in node:
      keys = sorted(node.keys()) if isinstance(node, (ml_collections.ConfigDict, dict)) else []
      raise UserError(f'unknown config key {path}.{part}{close_matches(part, keys)}; '
                      f'valid keys of {path}: {", ".join(keys)}')
    if part != leaf:
      node, path = node[part], f'{path}.{part}'
  old = node[leaf]
  try:
    value = _parse_value(text, old)
  except (ValueError, SyntaxError) as e:
    raise UserError(f'bad value for --config.{dotted}: {e}') from None
  with config.unlocked():
    node[leaf] = value


_MISSING = object()


def _model_field_default(config, name: str):
  """The default of field `name` of the config's network class (`config.model_name`), or
  _MISSING: `--config.model.remat=block` may set a field the config leaves unset."""
  import dataclasses
  import arch
  try:
    cls = arch.model_class(config.get('model_name') or '')
  except Exception:  # no or unknown model_name: the usual unknown-key error follows
    return _MISSING
  for field in dataclasses.fields(cls) if dataclasses.is_dataclass(cls) else ():
    if field.name == name and field.default is not dataclasses.MISSING:
      return field.default
  return _MISSING


def split_overrides(argv):
  """Separates `--config.k=v` / `--config.k v` arguments from the rest."""
  overrides, rest, i = [], [], 0
  while i < len(argv):
    a = argv[i]
    if a.startswith('--config.'):
      key, eq, value = a[len('--config.'):].partition('=')
      if not eq:
        if i + 1 >= len(argv):
          raise UserError(f'{a} needs a value')
        value, i = argv[i + 1], i + 1
      overrides.append((key, value))
    else:
      rest.append(a)
    i += 1
  return overrides, rest


def to_dict(config):
  return config.to_dict() if hasattr(config, 'to_dict') else dict(config)


def published_size(c, task_kwargs: dict, why: str):
  """Makes `c` a published size's config: its task at the published input shape, no
  evaluators (an FD classifier would be trained first), and `c.summary_only = why`, so
  `python -m train.summary` counts it (eval_shape, nothing allocated) and `python -m train`
  stops at once with one line saying `why`."""
  c.task_kwargs = task_kwargs
  c.evals = ml_collections.ConfigDict()
  c.summary_only = why


def base() -> ml_collections.ConfigDict:
  """The loop's fields with their defaults; an experiment config starts from this."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  # Non-empty: a published size for `python -m train.summary` only; `python -m train`
  # refuses it with this text (published_size below).
  c.summary_only = ''
  c.total_steps = 1000
  c.batch_size = 128              # global, over all devices and processes
  c.eval_batch_size = 0           # 0: same as batch_size
  c.log_every = 50
  c.eval_every = 500
  c.ckpt_every = 500
  c.keep_ckpts = 3
  c.async_checkpoints = True

  c.parallelism = 'jit'           # or 'pmap'
  c.mesh = ml_collections.ConfigDict({'data': -1, 'fsdp': 1, 'tensor': 1, 'expert': 1,
                                      'sequence': 1, 'stage': 1})
  # Logical axis name -> mesh axis (or None: replicated). Models name axes, never meshes.
  # `expert` (a Mixture-of-Experts layer's experts, arch/layers/moe.py) is a data axis
  # for every other layer; the mesh always has it (size 1 unless set).
  c.sharding_rules = (('batch', ('data', 'fsdp', 'expert')), ('embed', 'fsdp'),
                      ('mlp', 'tensor'), ('heads', 'tensor'), ('kv', None), ('vocab', 'tensor'),
                      ('classes', None), ('conv_in', None), ('conv_out', ('fsdp', 'tensor')),
                      ('expert', 'expert'), ('expert_group', ('data', 'fsdp')),
                      ('layers', 'stage'),  # a scanned stack's layers: pipeline stages
                      ('length', 'sequence'))  # activations' length: sequence parallelism
  c.distributed = ml_collections.ConfigDict(dict(
      coordinator_address='', num_processes=1, process_id=0, auto=False, cpu_collectives='gloo',
      # A process silent this long is lost: the others stop with one line (train/peers.py).
      peer_timeout_s=60))

  c.task = ''                     # arch module of the objective, e.g. 'vision.classification'
  c.task_kwargs = ml_collections.ConfigDict()
  c.model_name = ''               # arch module of the network, e.g. 'vision.lenet'
  c.model = ml_collections.ConfigDict()
  c.param_dtype = 'float32'
  c.compute_dtype = 'float32'     # 'bfloat16' for mixed precision
  c.loss_scale = ''               # float16 training: 'dynamic' or a number (train/precision.py)

  c.optax_name = 'adamw'          # any optax optimizer, by name
  c.optax = ml_collections.ConfigDict()  # its kwargs besides learning_rate
  c.lr = 1e-3
  c.schedule = 'cosine'           # constant | cosine | linear | rsqrt
  c.warmup_steps = 0
  c.decay_steps = 0               # schedule horizon; 0: total_steps
  c.lr_min_ratio = 0.0
  c.grad_clip_norm = 0.0          # 0: off
  c.weight_decay = 0.0            # L2 term added to gradients before the optimizer (for
                                  # sgd etc.; adamw has its own optax.weight_decay)
  # Tasks with several networks and optimizers (Task.phases, e.g. a GAN): per parameter
  # group, overrides of the fields above, e.g. optimizers.generator = dict(lr=2e-4).
  c.optimizers = ml_collections.ConfigDict()
  c.grad_accum_steps = 1
  c.ema_decay = 0.0               # 0: off; else eval uses the EMA params
  # Other runs whose trained variables the task reads but never trains (a distillation
  # teacher, a frozen encoder): NAME -> dict(spec='configs/X.py[:args]', workdir='')
  # (workdir '' = WORKDIR/frozen_NAME, trained there first if it holds no checkpoint).
  c.frozen = ml_collections.ConfigDict()
  # Fine-tuning: on a fresh start, the trainable params (all, or the subtree `target`)
  # start from another run's checkpoint (its params at `source`, EMA params where it kept
  # them; `step` 0 = its latest) instead of their initialisation. Leaves of this run's
  # params that the source does not give keep their initial values (e.g. a new head).
  # Start from another run's params (train/core.py init_from); `frozen=NAME` instead of a
  # workdir: from the run config.frozen.NAME reads (trained first where it has none yet).
  c.init_from = ml_collections.ConfigDict(dict(workdir='', step=0, source='', target='',
                                               frozen=''))
  # Evaluators (train/evaluators.py): NAME -> dict(type=..., every=..., options), e.g.
  # evals.fd = dict(type='fd', steps=50); every 0 = at every eval, -1 = off.
  c.evals = ml_collections.ConfigDict()
  c.data = ml_collections.ConfigDict(dict(
      name='', train_split='train', eval_split='test', data_dir='', shuffle=True,
      num_threads=2, prefetch=4,
      # Text stage (train/text.py): tokenizer '' (off) | 'byte' | 'bpe' (vocab_size ids,
      # trained on the train split); then either `pack` (windows of that many tokens over
      # the concatenated `text_features`) or `max_lengths` ({feature: padded length}).
      tokenizer='', vocab_size=0, text_features=(), pack=0, max_lengths={}))
  # Defaults of `python -m train.sample` (its flags override them).
  c.sample = ml_collections.ConfigDict(dict(
      num_samples=4, max_new_tokens=256, temperature=1.0, top_k=0, top_p=1.0, beam_size=1,
      prompt='', seed=0, steps=0,
      tokenizer=''))  # '' = data.tokenizer; e.g. 'byte' where the data is not text
  return c
