"""archzoo model code: pure Flax (linen) definitions and their objectives.

Nothing here imports `train/`. Families live in groups (`vision/`, `sequence/`, ...);
a config names a network or objective by its module path inside this package, e.g.
`'vision.lenet'` (its `Model`; `'sequence.rnn:Tagger'` names another class), and `load`
resolves it. A name whose first part is not one of the groups is an importable module of
the user's own (research code composing these modules, e.g. `'my_project.captioner'`).
"""

import importlib
import pkgutil

_GROUPS = ('vision', 'sequence', 'generative', 'multimodal', 'graph', 'dynamics', 'rl',
           'scene', 'compress', 'federated')


def available(predicate=lambda module_name: True) -> list[str]:
  """Names 'group.module' of every module under the groups of this package."""
  names = []
  for group in _GROUPS:
    try:
      pkg = importlib.import_module(f'{__name__}.{group}')
    except ModuleNotFoundError:
      continue
    for info in pkgutil.iter_modules(pkg.__path__):
      if not info.name.startswith('_') and predicate(info.name):
        names.append(f'{group}.{info.name}')
  return sorted(names)


def load(name: str, attr: str):
  """Imports `arch.<name>` and checks that it defines `attr` (`'Model'` or `'make'`).

  Raises LookupError naming the valid choices when the module or attribute is missing.
  """
  kind = 'model' if attr == 'Model' else 'task'
  inside = name.split('.')[0] in _GROUPS
  full = f'{__name__}.{name}' if inside else name
  try:
    module = importlib.import_module(full)
  except ModuleNotFoundError as e:
    missing = e.name or ''
    if not (full == missing or full.startswith(missing + '.')):
      raise  # a real missing dependency inside the module
    module = None
  if module is None or not hasattr(module, attr):
    valid = [n for n in available() if hasattr(importlib.import_module(f'{__name__}.{n}'), attr)]
    raise LookupError(f'unknown {kind} {name!r}; valid {kind}s: {", ".join(valid)}')
  return module


def model_class(name: str):
  """The network class a model name means: 'group.module' is that module's `Model`;
  'group.module:Class' names another class of the module (e.g. 'sequence.rnn:Tagger')."""
  module_name, _, cls = name.partition(':')
  module = load(module_name, 'Model')
  if cls and not hasattr(module, cls):
    raise LookupError(f'model module {module_name!r} has no class {cls!r}')
  return getattr(module, cls or 'Model')


def model_fields(name: str) -> set[str]:
  return set(getattr(model_class(name), '__dataclass_fields__', {})) - {'parent', 'name'}


def build_model(name: str, **kwargs):
  """The network `arch.<name>.Model(**kwargs)`, with a clear error for unknown kwargs."""
  cls = model_class(name)
  fields = model_fields(name)
  unknown = sorted(set(kwargs) - fields)
  if unknown:
    raise LookupError(f'model {name!r} has no attribute(s) {", ".join(unknown)}; '
                      f'valid: {", ".join(sorted(fields))}')
  return cls(**kwargs)


def model_from_config(config, **overrides):
  """The network a config names: `config.model_name` with `config.model` kwargs, the
  config's `compute_dtype`/`param_dtype`, and, under `parallelism='pmap'`, the loop's
  device axis as `axis_name` for models that synchronise statistics (BatchNorm) across
  devices. (Under 'jit' the batch is one global array, so statistics are global anyway.)
  """
  from arch.task import PMAP_AXIS
  kwargs = dict(config.model)
  fields = model_fields(config.model_name)
  for key, value in (('dtype', config.get('compute_dtype')),
                     ('param_dtype', config.get('param_dtype'))):
    if value and key in fields and key not in kwargs:
      kwargs[key] = value
  if config.get('parallelism') == 'pmap' and 'axis_name' in fields:
    kwargs.setdefault('axis_name', PMAP_AXIS)
  kwargs.update(overrides)
  return build_model(config.model_name, **kwargs)
