"""Config loading: arguments, typed overrides, loud failures on typos."""

import os

import pytest

from train import config_lib
from train.errors import UserError
from conftest import REPO

# Experiment configs: every module of configs/ but the package's __init__ and the shared
# recipes.
CONFIGS = sorted(f for f in os.listdir(os.path.join(REPO, 'configs'))
                 if f.endswith('.py') and f not in ('__init__.py', 'recipes.py'))


@pytest.mark.parametrize('name', CONFIGS)
def test_every_config_has_the_loop_fields_and_is_locked(name):
  config = config_lib.load(os.path.join(REPO, 'configs', name))
  for key in config_lib.REQUIRED:
    assert key in config
  for key in ('name', 'train_split', 'eval_split', 'data_dir'):
    assert key in config.data
  with pytest.raises(AttributeError):
    config.no_such_field = 1


def test_parse_arg_types_values_by_defaults():
  a = config_lib.parse_arg('variant=50,runlocal,lr=0.5', variant='18', runlocal=False, lr=1.0, n=3)
  assert (a.variant, a.runlocal, a.lr, a.n) == ('50', True, 0.5, 3)
  with pytest.raises(UserError, match='unknown config argument .varaint.*did you mean variant'):
    config_lib.parse_arg('varaint=50', variant='18')


def test_overrides_are_typed_and_checked():
  config = config_lib.load(os.path.join(REPO, 'configs', 'mlp_digits.py:width=32'))
  assert config.model.hidden == (32, 32)
  config_lib.override(config, 'total_steps', '7')
  config_lib.override(config, 'lr', '3e-4')
  config_lib.override(config, 'data.shuffle', 'false')
  config_lib.override(config, 'model.hidden', '(8, 4)')
  config_lib.override(config, 'optax_name', 'sgd')
  assert (config.total_steps, config.lr, config.data.shuffle, config.optax_name) == (7, 3e-4, False, 'sgd')
  assert config.model.hidden == (8, 4)
  with pytest.raises(UserError, match='unknown config key config.total_step .*did you mean total_steps'):
    config_lib.override(config, 'total_step', '1')
  with pytest.raises(UserError, match='valid keys of config.data: .*train_split'):
    config_lib.override(config, 'data.nope', '1')
  with pytest.raises(UserError, match='bad value'):
    config_lib.override(config, 'total_steps', 'many')


def test_split_overrides_accepts_both_spellings():
  o, rest = config_lib.split_overrides(['--config', 'c.py', '--config.lr=1', '--config.seed', '3', '--workdir', 'w'])
  assert o == [('lr', '1'), ('seed', '3')] and rest == ['--config', 'c.py', '--workdir', 'w']


def test_a_field_of_the_network_may_be_set_that_the_config_leaves_unset():
  config = config_lib.load(os.path.join(REPO, 'configs', 'gpt_pydoc.py:variant=tiny'))
  assert 'remat' not in config.model
  config_lib.override(config, 'model.remat', 'block')
  config_lib.override(config, 'model.scan_layers', 'true')
  assert (config.model.remat, config.model.scan_layers) == ('block', True)
  with pytest.raises(UserError, match='bad value'):  # typed by the field's default (bool)
    config_lib.override(config, 'model.scan_layers', 'sometimes')
  with pytest.raises(UserError, match='unknown config key config.model.nope'):
    config_lib.override(config, 'model.nope', '1')
