"""The one loop: same numbers over devices and modes, exact resume, signals, the step."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO, cli_env, read_metrics, run_cli, run_train, run_trains

MLP = 'configs/mlp_digits.py'
QUIET = ['--config.eval_every=0', '--config.log_every=1']


def _ok(proc):
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
  return proc


def _losses(workdir):
  return {s: r['loss'] for s, r in read_metrics(workdir).items()}


@pytest.fixture(scope='module')
def device_runs(tmp_path_factory, data_dir):
  """50 steps of mlp_digits: 1 device (in this process), 8 devices under jit and under pmap
  (one subprocess)."""
  out = {name: str(tmp_path_factory.mktemp(name)) for name in ('jit1', 'jit8', 'pmap8')}
  args = ['--config', MLP, '--config.total_steps=50', '--config.log_every=1',
          '--config.eval_every=50']
  _ok(run_train([*args, '--workdir', out['jit1']], data_dir))
  run_trains([[*args, '--workdir', out[m + '8'], f'--config.parallelism={m}']
              for m in ('jit', 'pmap')], data_dir)
  return out


@pytest.mark.parametrize('other', ['jit8', 'pmap8'])
def test_eight_devices_match_one(device_runs, other):
  base, got = _losses(device_runs['jit1']), _losses(device_runs[other])
  assert sorted(base) == sorted(got) == list(range(1, 51))
  for s in base:
    assert abs(got[s] - base[s]) <= 1e-5 * abs(base[s]), (s, base[s], got[s])
  e1, e8 = read_metrics(device_runs['jit1'], 'eval'), read_metrics(device_runs[other], 'eval')
  assert abs(e1[50]['accuracy'] - e8[50]['accuracy']) < 1e-6


def test_logs_config_and_tensorboard(device_runs):
  w = device_runs['jit8']
  rec = read_metrics(w)[10]
  for key in ('loss', 'accuracy', 'grad_norm', 'learning_rate', 'steps_per_sec', 'mfu'):
    assert isinstance(rec[key], float), key
  assert rec['steps_per_sec'] > 0 and 0 < rec['mfu'] < 1
  assert set(read_metrics(w, 'eval')[50]) >= {'step', 'split', 'loss', 'accuracy'}
  with open(os.path.join(w, 'config.json')) as f:
    info = json.load(f)
  assert info['config']['model_name'] == 'vision.mlp' and info['config']['total_steps'] == 50
  assert info['devices']['device_count'] == 8 and info['versions']['jax'] == jax.__version__
  events = os.listdir(os.path.join(w, 'tensorboard'))
  assert any(f.startswith('events.out.tfevents') for f in events)
  assert sorted(os.listdir(os.path.join(w, 'checkpoints')))[-1] == '50'


def test_resume_is_bitwise_identical(tmp_path, data_dir):
  args = ['--config', MLP, *QUIET, '--config.ckpt_every=10', '--config.decay_steps=60']
  straight, split = tmp_path / 'straight', tmp_path / 'split'
  _ok(run_train([*args, '--workdir', straight, '--config.total_steps=60'], data_dir))
  _ok(run_cli([*args, '--workdir', split, '--config.total_steps=30'], data_dir))
  proc = _ok(run_cli([*args, '--workdir', split, '--config.total_steps=60'], data_dir))
  assert 'resumed from' in proc.stderr
  a, b = _losses(straight), _losses(split)
  assert [a[s] for s in range(31, 61)] == [b[s] for s in range(31, 61)]  # bitwise


@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_and_resume_is_bitwise_identical(tmp_path, data_dir, sig):
  total = 600
  args = ['--config', MLP, *QUIET, f'--config.total_steps={total}', '--config.ckpt_every=1000']
  straight, killed = tmp_path / 'straight', tmp_path / 'killed'
  _ok(run_train([*args, '--workdir', straight], data_dir))
  proc = subprocess.Popen([sys.executable, '-m', 'train', *map(str, args), '--workdir', str(killed)],
                          cwd=REPO, env=cli_env(data_dir), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  metrics = killed / 'metrics.jsonl'
  deadline = time.time() + 120
  while time.time() < deadline:  # wait for training to be under way, then interrupt it
    if metrics.exists() and len(metrics.read_text().splitlines()) >= 40:
      break
    time.sleep(0.05)
  proc.send_signal(sig)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 128 + sig, err[-3000:]
  stopped = int(err.split('after step ')[1].split(';')[0])
  assert 40 <= stopped < total, err
  assert os.listdir(killed / 'checkpoints') == [str(stopped)]
  _ok(run_cli([*args, '--workdir', killed], data_dir))
  a, b = _losses(straight), _losses(killed)
  assert sorted(b) == list(range(1, total + 1))
  assert all(a[s] == b[s] for s in range(1, total + 1))  # bitwise, across the interruption


# ------------------------------------------------------------------ the step itself


def _toy_task(fail_at_sum=None):
  """A linear regression task; optionally returns NaN loss."""
  from arch.task import Task

  def init(rng, batch):
    return {'params': {'w': jax.random.normal(rng, (3, 2))}, 'stats': {'n': jnp.zeros(())}}

  def loss(variables, batch, rng):
    pred = batch['x'] @ variables['params']['w']
    l = jnp.mean((pred - batch['y']) ** 2)
    if fail_at_sum is not None:
      l = l * jnp.where(batch['x'].sum() > fail_at_sum, jnp.nan, 1.0)
    return l, ({'loss': l}, {'stats': {'n': variables['stats']['n'] + 1}})

  example = lambda n: {'x': jax.ShapeDtypeStruct((n, 3), jnp.float32),
                       'y': jax.ShapeDtypeStruct((n, 2), jnp.float32)}
  return Task(init=init, loss=loss, example_batch=example)


def _setup(task, **overrides):
  from train import config_lib, core
  from train import steps as steps_lib
  config = config_lib.base()
  config.optax_name, config.schedule, config.lr = 'sgd', 'constant', 0.1
  config.update(overrides)
  schedule = core.make_schedule(config)
  tx = core.make_optimizer(config, schedule)
  state = jax.jit(lambda r: __import__('flax').linen.meta.unbox(
      core.make_init_fn(config, task, tx)(r)))(jax.random.key(0))
  return state, jax.jit(steps_lib.make_train_step(config, task, tx, schedule))


def _batch(n=8, seed=0):
  k1, k2 = jax.random.split(jax.random.key(seed))
  return {'x': jax.random.normal(k1, (n, 3)), 'y': jax.random.normal(k2, (n, 2))}


def test_gradient_accumulation_equals_the_full_batch():
  task, batch = _toy_task(), _batch()
  s1, step1 = _setup(task)
  s4, step4 = _setup(task, grad_accum_steps=4)
  n1, m1 = step1(s1, batch)
  n4, m4 = step4(s4, batch)
  np.testing.assert_allclose(n4.params['w'], n1.params['w'], rtol=1e-6)
  np.testing.assert_allclose(m4['loss'], m1['loss'], rtol=1e-6)
  assert float(n4.extra['stats']['n']) == 4 and float(n1.extra['stats']['n']) == 1
  assert not np.allclose(n1.params['w'], s1.params['w'])


def test_ema_tracks_params():
  task, batch = _toy_task(), _batch()
  s, step = _setup(task, ema_decay=0.9)
  w0 = np.asarray(s.params['w'])
  s1, _ = step(s, batch)
  np.testing.assert_allclose(s1.ema_params['w'], 0.9 * w0 + 0.1 * np.asarray(s1.params['w']), rtol=1e-6)


def test_non_finite_step_leaves_the_state_untouched():
  task = _toy_task(fail_at_sum=-1e9)  # always NaN
  s, step = _setup(task, ema_decay=0.5)
  before = jax.device_get(s)
  after, m = step(s, _batch())
  assert float(m['finite']) == 0.0
  for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(jax.device_get(after))):
    np.testing.assert_array_equal(a, b)


def test_gradient_clipping_bounds_the_update():
  task, batch = _toy_task(), _batch()
  s, step = _setup(task, grad_clip_norm=1e-3, lr=1.0)
  w0 = np.asarray(s.params['w'])
  s1, m = step(s, batch)
  assert float(m['grad_norm']) > 1e-3
  np.testing.assert_allclose(np.linalg.norm(np.asarray(s1.params['w']) - w0), 1e-3, rtol=1e-4)


def test_lenet_trains_through_the_loop_in_process(tmp_path, data_dir):
  """One real run of the default experiment's model (tiny) through train_and_evaluate,
  with bf16 compute, EMA and gradient accumulation switched on."""
  from train import config_lib, core, loop
  config = config_lib.load(os.path.join(REPO, 'configs/lenet_digits.py:tiny'))
  for k, v in dict(total_steps=3, eval_every=3, log_every=1, ckpt_every=3, batch_size=16,
                   compute_dtype='bfloat16', ema_decay=0.9, grad_accum_steps=2).items():
    config_lib.override(config, k, str(v))
  config_lib.override(config, 'data.data_dir', data_dir)
  result = loop.train_and_evaluate(config, str(tmp_path))
  assert set(result) == {'loss', 'accuracy'} and 0 <= result['accuracy'] <= 1
  assert os.listdir(tmp_path / 'checkpoints') == ['3']
  train = read_metrics(tmp_path)
  assert sorted(train) == [1, 2, 3] and all(np.isfinite(r['loss']) for r in train.values())


def test_weight_decay_adds_l2_gradient():
  task, batch = _toy_task(), _batch()
  s0, step0 = _setup(task)
  s1, step1 = _setup(task, weight_decay=0.5)
  n0, _ = step0(s0, batch)
  n1, _ = step1(s1, batch)
  # sgd: w1 = w - lr * (g + wd * w) = (w - lr * g) - lr * wd * w
  np.testing.assert_allclose(n1.params['w'], n0.params['w'] - 0.1 * 0.5 * s0.params['w'], rtol=1e-5)
