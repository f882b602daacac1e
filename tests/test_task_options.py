"""Typed task options (arch.task.parse_options): a misspelt or unknown `task_kwargs` key is a
one-line error naming the valid ones, whether a config file or the command line sets it,
and every config's task builds with the options it sets."""

import glob
import os

import pytest

from conftest import REPO, load_config, run_cli
from train import core
from train.errors import UserError


def _specs():
  """Every config file under configs/, and its small variant where it has one."""
  specs = []
  for path in sorted(glob.glob(os.path.join(REPO, 'configs', '*.py'))):
    with open(path) as f:
      if 'def get_config' not in f.read():
        continue  # shared recipes, not a config
    name = os.path.basename(path)
    specs.append(name)
    for arg in ('tiny', 'variant=tiny'):
      try:
        load_config(f'{name}:{arg}')
      except UserError:
        continue  # the config takes no such argument
      specs.append(f'{name}:{arg}')
      break
  return specs


SPECS = _specs()


def _typo(key: str) -> str:
  """`key` with its middle letter dropped: label_smoothing -> label_smothing."""
  return key[:len(key) // 2] + key[len(key) // 2 + 1:]


@pytest.mark.parametrize('spec', SPECS)
def test_config_builds_its_task(spec):
  core.load_task(load_config(spec))  # builds the task's closures; trains nothing


@pytest.mark.parametrize('spec', SPECS)
def test_misspelt_task_option_is_a_one_line_error(spec):
  config = load_config(spec)
  keys = sorted(config.task_kwargs)
  bad = _typo(keys[0]) if keys else 'not_an_option'
  assert bad not in keys
  with config.unlocked():
    setattr(config.task_kwargs, bad, 0.3)  # as a config file would write it
  with pytest.raises(UserError) as e:
    core.load_task(config)
  message = str(e.value)
  assert '\n' not in message and bad in message and 'valid' in message, message


def _cli_error(proc):
  """The CLI's contract for bad input: exit 2, no traceback, one `error:` line."""
  assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
  assert 'Traceback' not in proc.stdout + proc.stderr, proc.stderr[-3000:]
  errors = [l for l in proc.stderr.splitlines() if l.startswith('error:')]
  assert len(errors) == 1, proc.stderr
  return errors[0]


def test_misspelt_option_on_the_command_line(tmp_path):
  proc = run_cli(['--config', 'configs/lenet_digits.py', '--workdir', tmp_path / 'run',
                  '--config.task_kwargs.label_smothing=0.3'], str(tmp_path))
  assert 'label_smothing' in _cli_error(proc)


def test_misspelt_option_in_a_config_file(tmp_path):
  path = tmp_path / 'my_lenet.py'
  path.write_text(
      'import importlib.util\n'
      f'spec = importlib.util.spec_from_file_location(\n'
      f'    "lenet_digits", {os.path.join(REPO, "configs", "lenet_digits.py")!r})\n'
      'lenet = importlib.util.module_from_spec(spec)\n'
      'spec.loader.exec_module(lenet)\n'
      '\n'
      '\n'
      'def get_config(arg=None):\n'
      '  c = lenet.get_config(arg)\n'
      '  c.task_kwargs.label_smothing = 0.3\n'
      '  return c\n')
  proc = run_cli(['--config', path, '--workdir', tmp_path / 'run'], str(tmp_path))
  message = _cli_error(proc)
  assert 'label_smothing' in message and 'valid' in message, message
