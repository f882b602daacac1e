"""Model compression: quantization, pruning, mixed precision, distillation."""

from arch.task import ConfigError


def source_run(config, name: str, what: str, task: str = ''):
  """The config of the trained run a compression task starts from, `config.frozen[name]`
  (resolved by the loop; trained first when its workdir is empty), checked to be the same
  network as `config.model_name` / `config.model` (and, given `task`, the same task); None
  when the config names no such run. `what` says what the run is, for the errors."""
  frozen = (config.get('frozen') or {}).get(name)
  if not frozen:
    return None
  source = frozen.get('config')
  if source is None:
    raise ConfigError(f"{what}: config.frozen.{name} = dict(spec='configs/X.py', workdir='')")
  if (source.model_name, dict(source.model)) != (config.model_name, dict(config.model)) or (
      task and source.task != task):
    raise ConfigError(f'{what} ({source.task}, {source.model_name}, {dict(source.model)}) must '
                      f'be {task + " on " if task else ""}this config\'s network: '
                      f'config.model_name/model equal to its own')
  return source

