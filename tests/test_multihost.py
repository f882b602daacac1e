"""Multi-process training: two `jax.distributed` CPU processes match one process.

- `test_host_batches_*`: in-process checks of `train.data`'s per-process layout: process p
  of P reads examples [b*B + p*B/P, b*B + (p+1)*B/P) of global batch b, so concatenating
  the processes' local batches gives the single-process batch.
- `test_two_processes_match_single_process`: the real CLI, twice over gloo with 2 CPU
  devices per process, against one process with 4 CPU devices; same per-step train loss
  (to 1e-5 relative: the cross-process all-reduce may sum in another order, so a few
  steps differ in the last bit) and the same final eval. Both `parallelism` modes.
- `test_two_processes_train_missing_frozen_runs_together`: a run that trains its frozen
  first stage and its FD classifier on first use trains them collectively, once, and
  every process restores them.
"""

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join('configs', 'mlp_digits.py')
STEPS = 20
TIMEOUT_S = 300
RTOL = 1e-5


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  """A data dir with digits prepared once, so the training processes do not race on it."""
  d = tmp_path_factory.mktemp('data')
  proc = subprocess.run([sys.executable, '-m', 'train.datasets', 'digits', '--data_dir', str(d)],
                        cwd=REPO, env=_env(d, devices=1), capture_output=True, text=True,
                        timeout=TIMEOUT_S)
  assert proc.returncode == 0, f'preparing digits failed:\n{proc.stdout}\n{proc.stderr}'
  return str(d)


def _env(data_dir, devices):
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(('JAX_COORDINATOR', 'JAX_NUM_PROCESSES', 'JAX_PROCESS_ID'))}
  env.update(ARCHZOO_DATA_DIR=str(data_dir), JAX_PLATFORMS='cpu',
             XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}')
  return env


def _config(data_dir):
  from train import config_lib
  config = config_lib.load(os.path.join(REPO, CONFIG))
  config.data.data_dir = data_dir
  return config


# ------------------------------------------------------------- per-process data layout


def _take(it, n):
  return [next(it) for _ in range(n)]


@pytest.mark.parametrize('process_count', [2, 4])
def test_host_batches_partition_the_global_batch(data_dir, process_count):
  from train import data as data_lib
  config = _config(data_dir)
  B, local = config.batch_size, config.batch_size // process_count
  # 24 batches of 64 cross the first epoch boundary of the 1437 training examples.
  n = 24
  single = _take(data_lib.train_iterator(config, None, 0, 1), n)
  per_proc = [_take(data_lib.train_iterator(config, None, p, process_count), n)
              for p in range(process_count)]
  for b in range(n):
    assert set(single[b]) == {'image', 'label'}
    assert single[b]['image'].shape[0] == B
    for p in range(process_count):
      assert set(per_proc[p][b]) == set(single[b])
      for k in single[b]:
        assert per_proc[p][b][k].shape[0] == local, (b, p, k)
        # process p holds exactly its contiguous slice of global batch b
        np.testing.assert_array_equal(per_proc[p][b][k], single[b][k][p * local:(p + 1) * local],
                                      err_msg=f'batch {b}, process {p}, key {k}')
  # The batches are not all the same (the stream really advances and is shuffled).
  assert not np.array_equal(single[0]['label'], single[1]['label'])


def test_host_eval_batches_partition_the_global_batch(data_dir):
  from train import data as data_lib
  config = _config(data_dir)
  split = config.data.eval_split
  single = data_lib.eval_batches(config, split, None, 0, 1)
  halves = [data_lib.eval_batches(config, split, None, p, 2) for p in range(2)]
  assert len(halves[0]) == len(halves[1]) == len(single)
  real = 0
  for i in range(len(single)):
    s, h0, h1 = single[i], halves[0][i], halves[1][i]
    for k in s:
      np.testing.assert_array_equal(np.concatenate([h0[k], h1[k]]), s[k],
                                    err_msg=f'eval batch {i}, key {k}')
    real += int(s['_valid'].sum())
  assert real == len(data_lib.source(config.data, split))  # every example once, padding masked
  assert not single[len(single) - 1]['_valid'].all()  # the last batch is padded (360 % 64 != 0)


# ----------------------------------------------------------------- the real CLI, twice


def _free_port():
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _train_cmd(workdir, *extra):
  return [sys.executable, '-m', 'train', '--config', CONFIG, '--workdir', str(workdir),
          f'--config.total_steps={STEPS}', '--config.log_every=1',
          f'--config.eval_every={STEPS}', f'--config.ckpt_every={STEPS}', *extra]


def _run_all(named_cmds, tmp_path):
  """Starts every (name, cmd, env) at once; waits for all, killing the rest if one fails."""
  procs = {}
  for name, cmd, env in named_cmds:
    out = open(tmp_path / f'{name}.out', 'w')
    err = open(tmp_path / f'{name}.err', 'w')
    procs[name] = (subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=err), out, err)
  deadline = time.monotonic() + TIMEOUT_S
  failed, killed = None, set()
  try:
    while time.monotonic() < deadline:
      codes = {n: p.poll() for n, (p, _, _) in procs.items()}
      failed = next((n for n, c in codes.items() if c not in (None, 0)), None)
      if failed or all(c == 0 for c in codes.values()):
        break
      time.sleep(0.2)
    else:
      failed = 'timeout'
  finally:
    for name, (p, out, err) in procs.items():
      if p.poll() is None:
        p.kill()
        killed.add(name)
      p.wait()
      out.close()
      err.close()
  if failed:
    report = [f'{"timed out after %d s" % TIMEOUT_S if failed == "timeout" else failed + " failed"}']
    for name, (p, _, _) in procs.items():
      how = f'exit code {p.returncode}' + (' (killed by this test)' if name in killed else '')
      stderr = (tmp_path / f'{name}.err').read_text()
      report.append(f'===== {name}: {how}; stderr (last 6000 chars):\n{stderr[-6000:]}')
    pytest.fail('\n'.join(report), pytrace=False)


def _metrics(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  train = [r for r in rows if r['split'] == 'train']
  evals = [r for r in rows if r['split'] == 'eval']
  return train, evals


def _devices(workdir):
  with open(os.path.join(workdir, 'config.json')) as f:
    return json.load(f)['devices']


@pytest.mark.parametrize('parallelism', ['jit', 'pmap'])
def test_two_processes_match_single_process(data_dir, tmp_path, parallelism):
  multi, single = tmp_path / 'multi', tmp_path / 'single'
  port = _free_port()
  mode = f'--config.parallelism={parallelism}'
  dist = lambda i: (f'--config.distributed.coordinator_address=127.0.0.1:{port}',
                    '--config.distributed.num_processes=2', f'--config.distributed.process_id={i}')
  _run_all([
      ('process0', _train_cmd(multi, mode, *dist(0)), _env(data_dir, devices=2)),
      ('process1', _train_cmd(multi, mode, *dist(1)), _env(data_dir, devices=2)),
      ('single', _train_cmd(single, mode), _env(data_dir, devices=4)),
  ], tmp_path)

  # It really ran as one 2-process job over 4 devices, and the baseline as 1 x 4.
  assert _devices(multi)['process_count'] == 2 and _devices(multi)['device_count'] == 4
  assert _devices(single)['process_count'] == 1 and _devices(single)['device_count'] == 4
  # The checkpoint was written collectively, once.
  assert os.path.isdir(multi / 'checkpoints' / str(STEPS))

  m_train, m_eval = _metrics(multi)
  s_train, s_eval = _metrics(single)
  # Only process 0 writes metrics: one line per step, not two.
  assert [r['step'] for r in m_train] == list(range(1, STEPS + 1))
  assert [r['step'] for r in s_train] == list(range(1, STEPS + 1))
  m_loss = np.array([r['loss'] for r in m_train])
  s_loss = np.array([r['loss'] for r in s_train])
  assert np.all(np.isfinite(m_loss))
  assert s_loss[-1] < s_loss[0]  # it trained
  rel = np.abs(m_loss - s_loss) / np.abs(s_loss)
  print(f'per-step train loss: bitwise equal at {int(np.sum(m_loss == s_loss))}/{STEPS} steps; '
        f'max relative difference {rel.max():.3g}')
  np.testing.assert_allclose(m_loss, s_loss, rtol=RTOL, atol=0,
                             err_msg='2-process train loss differs from 1-process')

  assert len(m_eval) == len(s_eval) == 1 and m_eval[0]['step'] == s_eval[0]['step'] == STEPS
  assert m_eval[0]['accuracy'] == pytest.approx(s_eval[0]['accuracy'], abs=1e-9)
  assert m_eval[0]['loss'] == pytest.approx(s_eval[0]['loss'], rel=RTOL)


# A first stage and an FD classifier cut short, written as config files the run names.
_FROZEN_KL = '''from train import config_lib
def get_config(arg=None):
  c = config_lib.load('configs/vae_digits.py:model=kl,tiny')
  c.total_steps, c.eval_every, c.log_every, c.ckpt_every = 3, 0, 1, 3
  return c
'''
_FD_CLASSIFIER = '''from train import config_lib
def get_config(arg=None):
  c = config_lib.load('configs/mlp_digits.py')
  c.total_steps, c.eval_every, c.log_every, c.ckpt_every = 20, 0, 1, 20
  return c
'''


def test_two_processes_train_missing_frozen_runs_together(data_dir, tmp_path):
  """A latent diffusion run whose frozen autoencoder and FD classifier are not trained yet:
  `restore_run` trains each first, inside the run, as a collective `train_and_evaluate` of
  both processes (one checkpoint, metrics written once), and both processes restore it."""
  (tmp_path / 'kl.py').write_text(_FROZEN_KL)
  (tmp_path / 'clf.py').write_text(_FD_CLASSIFIER)
  workdir = tmp_path / 'multi'
  port = _free_port()

  def cmd(i):
    return [sys.executable, '-m', 'train', '--config', 'configs/ldm_digits.py:tiny',
            '--workdir', str(workdir), '--config.total_steps=2', '--config.log_every=1',
            '--config.eval_every=2', '--config.ckpt_every=2',
            f'--config.frozen.vae.spec={tmp_path / "kl.py"}', '--config.evals.fd.every=0',
            f'--config.evals.fd.classifier={tmp_path / "clf.py"}',
            f'--config.evals.fd.workdir={workdir}/clf',
            '--config.evals.fd.num_samples=16',
            f'--config.distributed.coordinator_address=127.0.0.1:{port}',
            '--config.distributed.num_processes=2', f'--config.distributed.process_id={i}']

  _run_all([(f'process{i}', cmd(i), _env(data_dir, devices=2)) for i in (0, 1)], tmp_path)

  for sub, steps, label in (('frozen_vae', 3, "frozen 'vae'"), ('clf', 20, 'fd classifier'),
                            ('.', 2, None)):
    devices = _devices(workdir / sub)
    assert devices['process_count'] == 2 and devices['device_count'] == 4, sub
    assert os.listdir(workdir / sub / 'checkpoints') == [str(steps)], sub
    train, _ = _metrics(workdir / sub)
    assert [r['step'] for r in train] == list(range(1, steps + 1)), sub  # written once
    assert all(np.isfinite(r['loss']) for r in train), sub
    if label:
      for i in (0, 1):  # every process trained it and restored the same step
        err = (tmp_path / f'process{i}.err').read_text()
        assert f'{label}: no checkpoint in' in err and f'{label}: restored step {steps}' in err
  (final,) = _metrics(workdir)[1]
  assert final['step'] == 2 and final['fd'] > final['fd_floor'] > 0
