"""Each part of the Task contract the loop's second edition added, used by a test task
outside train/ (tests/contract_tasks.py) and trained through `python -m train`, with a
checkpoint and an exact resume: its own step, no input, a collate, an evaluate_run."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import contract_tasks
from conftest import REPO, cli_env, read_metrics, run_train

CONFIG = os.path.join(REPO, 'tests', 'configs', 'contract.py')


def _train(kind, workdir, data_dir, *flags, devices=1, in_process=False):
  """`python -m train` on the contract config: a subprocess, or in this process (whose
  sys.path has tests/ already) with `in_process`."""
  args = ['--config', f'{CONFIG}:kind={kind}', '--workdir', str(workdir), *flags]
  if in_process:
    proc = run_train(args, data_dir)
  else:
    env = cli_env(data_dir, devices, PYTHONPATH=os.path.join(REPO, 'tests'))
    proc = subprocess.run([sys.executable, '-m', 'train', *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


def _losses(workdir):
  return {s: r['loss'] for s, r in read_metrics(workdir).items()}


@pytest.mark.parametrize('kind', ['epochs', 'no_input', 'graphs'])
def test_trains_and_resumes_exactly(kind, tmp_path, data_dir):
  """4 steps straight, against 2 steps and a resumed second run to 4: the same losses."""
  _train(kind, tmp_path / 'straight', data_dir, in_process=True)
  _train(kind, tmp_path / 'halves', data_dir, '--config.total_steps=2', in_process=True)
  proc = _train(kind, tmp_path / 'halves', data_dir)  # a new process resumes
  assert 'resumed from' in proc.stderr
  straight, halves = _losses(tmp_path / 'straight'), _losses(tmp_path / 'halves')
  assert sorted(straight) == [1, 2, 3, 4] and straight == halves
  assert all(np.isfinite(v) for v in straight.values())
  (final,) = [r for s, r in read_metrics(tmp_path / 'straight', 'eval').items() if s == 4]
  if kind == 'no_input':
    assert set(final) >= {'grid_mse'} and 'accuracy' not in final
    # evaluate_run ran on the step-4 params: the same number from the checkpoint by hand.
    from train import config_lib, core
    config = config_lib.load(f'{CONFIG}:kind=no_input')
    variables, step = core.restore_variables(config, str(tmp_path / 'straight'))
    x = jnp.linspace(-1, 1, 101)[:, None]
    want = jnp.mean((contract_tasks.Mlp(features=(32, 32), out=1).apply(variables, x)
                     - contract_tasks.target(x)) ** 2)
    assert step == 4 and final['grid_mse'] == pytest.approx(float(want), rel=1e-5)
  else:
    assert 0 <= final['accuracy'] <= 1
  with open(tmp_path / 'straight' / 'config.json') as f:
    assert json.load(f)['config']['task'] == 'contract_tasks'


def test_collated_graphs_give_the_same_loss_on_one_and_eight_devices(tmp_path, data_dir):
  """8 devices: 8 shards of 2 graphs each instead of 1 shard of 16; the loss is the same
  mean over the same graphs."""
  _train('graphs', tmp_path / 'one', data_dir, '--config.total_steps=2', in_process=True)
  _train('graphs', tmp_path / 'eight', data_dir, '--config.total_steps=2', devices=8)
  one, eight = _losses(tmp_path / 'one'), _losses(tmp_path / 'eight')
  for s in one:
    assert one[s] == pytest.approx(eight[s], rel=1e-5)


def test_own_step_is_epochs_of_supervised_updates():
  """The epochs task's step equals EPOCHS x MINIBATCHES library updates applied by hand."""
  from train import config_lib, core
  from train import steps as steps_lib
  config = config_lib.load(f'{CONFIG}:kind=epochs')
  task = core.load_task(config)
  tx, schedule = core.make_tx(config, task)
  import flax.linen as nn
  state = nn.meta.unbox(core.make_init_fn(config, task, tx)(jax.random.key(0)))
  rng = np.random.default_rng(0)
  batch = {'image': jnp.asarray(rng.integers(0, 17, (8, 8, 8, 1)), jnp.uint8),
           'label': jnp.asarray(rng.integers(0, 10, (8,)), jnp.int32)}
  step = jax.jit(steps_lib.make_train_step(config, task, tx, schedule))
  got, metrics = step(state, batch)
  builders = steps_lib.Builders(config, tx, schedule)
  update = builders.supervised(task.loss)
  key = steps_lib.step_rng(state)
  want = state
  for e in range(contract_tasks.EPOCHS):
    perm = jax.random.permutation(jax.random.fold_in(key, e), 8)
    for i in range(contract_tasks.MINIBATCHES):
      idx = perm[i * 4:(i + 1) * 4]
      want, _ = update(want, jax.tree.map(lambda x: x[idx], batch), key)
  assert int(got.step) == 1
  for a, b in zip(jax.tree.leaves(got.params), jax.tree.leaves(want.params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  # Not one update: the epochs moved the params further than a single step does.
  one, _ = update(state, batch, key)
  assert not np.allclose(jax.tree.leaves(one.params)[0], jax.tree.leaves(got.params)[0])


def test_padding_changes_no_graph_logit():
  """A graph's logits are the same alone and batched with others (padding and
  neighbours in the concatenation change nothing)."""
  rng = np.random.default_rng(0)
  examples = [{'image': (rng.random((8, 8, 1)) * 17 * (rng.random((8, 8, 1)) < p)).astype(np.uint8),
               'label': i} for i, p in enumerate((0.3, 0.6, 0.9))]
  graphs = [contract_tasks.digit_graph(e) for e in examples]
  assert len({len(g['nodes']) for g in graphs}) == 3  # sizes differ
  model = contract_tasks.GraphNet()
  together = contract_tasks.collate(graphs)
  variables = model.init(jax.random.key(0), together)
  all_logits = model.apply(variables, together)
  for i, g in enumerate(graphs):
    alone = model.apply(variables, contract_tasks.collate([g]))
    np.testing.assert_allclose(alone[0], all_logits[i], rtol=1e-5, atol=1e-6)


def test_the_device_mean_keeps_integer_state_integer():
  """Under pmap the builders average non-param state over devices; an int32 cursor must
  stay int32, or the compiled step refuses the state it returned at the next call."""
  from train import config_lib
  from train import steps as steps_lib
  builders = steps_lib.Builders(config_lib.base(), None, None, axis_name='data')
  tree = {'cursor': jnp.full((1,), 7, jnp.int32), 'flag': jnp.ones((1,), bool),
          'stat': jnp.full((1,), 0.5, jnp.float32)}
  out = jax.pmap(builders.mean, axis_name='data')(tree)
  assert {k: v.dtype for k, v in out.items()} == {k: v.dtype for k, v in tree.items()}
  assert int(out['cursor'][0]) == 7 and float(out['stat'][0]) == 0.5
