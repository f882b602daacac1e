"""Fine-tuning from a run (`config.init_from`): a fresh run's params (a subtree, with its
BatchNorm statistics) start as another run's; leaves the source lacks keep their init;
misfits are one clear error."""

import jax
import numpy as np
import pytest

from conftest import load_config


def _run(config, workdir):
  """The loop's Run of `config` in `workdir`: its state before any step."""
  from train import loop
  loop.prepare_runs(config, str(workdir))
  run = loop.Run(config, str(workdir))
  run.close()
  return run


def _train(spec, workdir, data_dir, steps=2, **overrides):
  from train import loop
  config = load_config(spec, data__data_dir=data_dir, total_steps=steps, eval_every=0,
                       log_every=steps, ckpt_every=steps, **overrides)
  loop.train_and_evaluate(config, str(workdir))
  from train import core
  state, _ = core.restore_state(config, str(workdir))
  return state


def _leaves(tree):
  return {'/'.join(str(getattr(k, 'key', k)) for k in p): np.asarray(v)
          for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_whole_params_start_from_the_run(tmp_path, data_dir):
  source = _train('lenet_digits.py:tiny', tmp_path / 'src', data_dir)
  config = load_config('lenet_digits.py:tiny', data__data_dir=data_dir,
                       init_from__workdir=str(tmp_path / 'src'), seed=5)
  got = _run(config, tmp_path / 'dst').state
  fresh = _run(load_config('lenet_digits.py:tiny', data__data_dir=data_dir, seed=5),
               tmp_path / 'fresh').state
  want, init = _leaves(source.params), _leaves(fresh.params)
  for k, v in _leaves(got.params).items():
    np.testing.assert_array_equal(v, want[k])
    assert not np.array_equal(v, init[k]) or not v.any()  # trained values, not the init


def test_a_backbone_goes_under_a_new_head_with_its_batch_stats(tmp_path, data_dir, capfd):
  """SimCLR's params['backbone'] (and its batch_stats['backbone']) become the classifier
  ResNet's root; its head keeps the initialisation."""
  source = _train('simclr_digits.py:tiny', tmp_path / 'src', data_dir,
                  evals__linear_probe__every=-1, evals__knn__every=-1)
  spec = 'resnet_digits.py:tiny'
  got = _run(load_config(spec, data__data_dir=data_dir, init_from__workdir=str(tmp_path / 'src'),
                         init_from__source='backbone'), tmp_path / 'dst').state
  fresh = _run(load_config(spec, data__data_dir=data_dir), tmp_path / 'fresh').state
  src_params = _leaves(source.params['backbone'])
  src_stats = _leaves(source.extra['batch_stats']['backbone'])
  got_params, init = _leaves(got.params), _leaves(fresh.params)
  assert set(src_params) < set(got_params)
  for k, v in got_params.items():
    np.testing.assert_array_equal(v, src_params[k] if k in src_params else init[k])
  assert any(k.startswith('head') for k in got_params if k not in src_params)
  for k, v in _leaves(got.extra['batch_stats']).items():
    np.testing.assert_array_equal(v, src_stats[k])
  assert 'keep their initialisation (head/' in capfd.readouterr().err


def test_misfits_are_one_clear_error(tmp_path, data_dir):
  from train.errors import UserError
  _train('simclr_digits.py:tiny', tmp_path / 'src', data_dir, steps=1,
         evals__linear_probe__every=-1, evals__knn__every=-1)
  spec, src = 'resnet_digits.py:tiny', str(tmp_path / 'src')
  cases = [
      (dict(), "not in this run's params: backbone/"),          # the whole tree: no 'backbone'
      (dict(init_from__source='trunk'), "no 'trunk' there (it holds: backbone, head)"),
      (dict(init_from__source='backbone,head', init_from__target=''), 'give them in pairs'),
      (dict(init_from__step=7), 'init_from.step=7: no such checkpoint'),
  ]
  for overrides, message in cases:
    with pytest.raises(UserError, match=None) as e:
      _run(load_config(spec, data__data_dir=data_dir, init_from__workdir=src, **overrides),
           tmp_path / 'dst')
    assert message in str(e.value) and '\n' not in str(e.value), str(e.value)
  with pytest.raises(UserError) as e:  # same names, other shapes
    _run(load_config('resnet_digits.py', data__data_dir=data_dir, init_from__workdir=src,
                     init_from__source='backbone'), tmp_path / 'dst2')
  assert 'shapes differ: layer1_0/' in str(e.value)
