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

from conftest import FAST_COMPILE

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
             XLA_FLAGS=f'--xla_force_host_platform_device_count={devices} {FAST_COMPILE}')
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


@pytest.mark.parametrize('parallelism', ['jit', 'pmap', 'jit-fsdp'])
def test_two_processes_match_single_process(data_dir, tmp_path, parallelism):
  """jit-fsdp: the mesh is fsdp=4 (data=1), so the MLP's parameters and Adam state are
  sharded across the two processes' devices ('embed' -> fsdp), and the 1-process run
  shards them over its 4 devices the same way."""
  multi, single = tmp_path / 'multi', tmp_path / 'single'
  port = _free_port()
  mode = f'--config.parallelism={parallelism.split("-")[0]}'
  if parallelism == 'jit-fsdp':
    mode = (mode, '--config.mesh.data=1', '--config.mesh.fsdp=4')
  else:
    mode = (mode,)
  dist = lambda i: (f'--config.distributed.coordinator_address=127.0.0.1:{port}',
                    '--config.distributed.num_processes=2', f'--config.distributed.process_id={i}')
  _run_all([
      ('process0', _train_cmd(multi, *mode, *dist(0)), _env(data_dir, devices=2)),
      ('process1', _train_cmd(multi, *mode, *dist(1)), _env(data_dir, devices=2)),
      ('single', _train_cmd(single, *mode), _env(data_dir, devices=4)),
  ], tmp_path)
  if parallelism == 'jit-fsdp':
    for run in (multi, single):
      with open(run / 'config.json') as f:
        mesh = json.load(f)['config']['mesh']
      assert mesh['fsdp'] == 4 and mesh['data'] == 1, mesh

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


# ------------------------------------------------------------------- a process dies


class _FakeStore:
  """The coordination service's key-value store, as train.peers uses it."""

  def __init__(self):
    self.kv, self.broken = {}, False

  def key_value_set(self, key, value, allow_overwrite=False):
    if self.broken:
      raise RuntimeError('UNAVAILABLE: Failed to send RPC to coordination service\nmore')
    assert allow_overwrite or key not in self.kv
    self.kv[key] = value

  def key_value_dir_get(self, prefix):
    if self.broken:
      raise RuntimeError('UNAVAILABLE: Failed to send RPC to coordination service')
    return [(k, v) for k, v in self.kv.items() if k.startswith(prefix)]


def test_peer_watch_names_the_silent_process_after_the_timeout(tmp_path):
  from train import peers
  store, now = _FakeStore(), [0.0]
  clock = lambda: now[0]
  watches = [peers.PeerWatch(store, p, 3, timeout_s=10, clock=clock) for p in range(3)]
  for w in watches:
    w.beat()
  for t in range(0, 30, 2):  # all three beat every 2 s: nobody is lost
    now[0] = float(t)
    assert [w.check() for w in watches] == [None] * 3
  # Process 2 goes silent after t=28: process 0 last sees its counter move at t=30 (its
  # check at 28 ran before 2's beat), and calls it lost 10 s later, not before.
  for t in (30, 32, 36, 38):
    now[0] = float(t)
    assert watches[0].check() is None and watches[1].check() is None
  now[0] = 40.0
  lost = watches[0].check()
  assert lost is not None and lost[0] == 2 and 'no heartbeat for 10 s' in lost[1]
  # A process that finished its run is not lost, however long it stays silent.
  watches[2].stop()
  now[0] = 100.0
  assert watches[1].check() is None
  # The message: one line, naming the process and the last complete checkpoint.
  (tmp_path / 'checkpoints' / '40').mkdir(parents=True)
  (tmp_path / 'checkpoints' / '60.orbax-checkpoint-tmp-123').mkdir()
  watches[0].workdir = str(tmp_path)
  text = watches[0].message(*lost)
  assert '\n' not in text and text.startswith('error: lost process 2 of 3 (no heartbeat')
  assert f'last complete checkpoint is step 40 in {tmp_path}/checkpoints' in text
  # The store itself stops answering: process 0, which runs it, is gone.
  store.broken = True
  peer, why = watches[1].check()
  assert peer == 0 and 'coordination service stopped answering: UNAVAILABLE' in why
  with pytest.raises(ValueError):
    peers.PeerWatch(store, 0, 2, timeout_s=0)


@pytest.mark.parametrize('dies', [1, 0])
def test_survivor_stops_with_one_line_when_a_process_dies(data_dir, tmp_path, dies):
  """Two processes train; once a checkpoint exists one is SIGKILLed. The survivor stops
  within the peer timeout (process 1 lost: the heartbeat watch; process 0 lost: its
  coordination service vanishes, the supervisor speaks) with one line naming the lost
  process and the last complete checkpoint; relaunching both resumes from it."""
  workdir, port, timeout_s = tmp_path / 'run', _free_port(), 6

  def cmd(i, port, total):
    return [sys.executable, '-m', 'train', '--config', CONFIG, '--workdir', str(workdir),
            f'--config.total_steps={total}', '--config.log_every=10', '--config.eval_every=0',
            '--config.ckpt_every=10', f'--config.distributed.peer_timeout_s={timeout_s}',
            f'--config.distributed.coordinator_address=127.0.0.1:{port}',
            '--config.distributed.num_processes=2', f'--config.distributed.process_id={i}']

  survivor = 1 - dies
  errs = [open(tmp_path / f'p{i}.err', 'w') for i in (0, 1)]
  procs = [subprocess.Popen(cmd(i, port, 10**6), cwd=REPO, env=_env(data_dir, devices=2),
                            stdout=subprocess.DEVNULL, stderr=errs[i]) for i in (0, 1)]
  try:
    deadline = time.monotonic() + TIMEOUT_S
    while not (workdir / 'checkpoints' / '20').is_dir():
      assert time.monotonic() < deadline and all(p.poll() is None for p in procs), \
          (tmp_path / 'p0.err').read_text()[-3000:]
      time.sleep(0.2)
    procs[dies].kill()
    killed_at = time.monotonic()
    code = procs[survivor].wait(timeout=timeout_s + 60)
    took = time.monotonic() - killed_at
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
      p.wait()
    for f in errs:
      f.close()
  err = (tmp_path / f'p{survivor}.err').read_text().rstrip().splitlines()
  print(f'process {dies} killed; process {survivor} stopped {took:.1f} s later: {err[-1]}')
  assert code == 3, '\n'.join(err[-30:])
  assert took < timeout_s + 30
  assert err[-1].startswith(f'error: lost process {dies} of 2 (')
  saved = max(int(n) for n in os.listdir(workdir / 'checkpoints') if n.isdigit())
  assert saved >= 20
  assert err[-1].endswith(f'the last complete checkpoint is step {saved} in '
                          f'{workdir}/checkpoints; relaunch every process to resume from it.'
                          .replace('the last', 'The last'))
  if dies == 1:
    return
  # Relaunched, both processes resume from that checkpoint and finish.
  port = _free_port()
  _run_all([(f'again{i}', cmd(i, port, saved + 10), _env(data_dir, devices=2))
            for i in (0, 1)], tmp_path)
  assert f'resumed from {workdir}/checkpoints/{saved}' in (tmp_path / 'again0.err').read_text()
  assert (workdir / 'checkpoints' / str(saved + 10)).is_dir()


# ---------------------------------------------------------- sampling with several processes


def test_sampler_runs_supervised_and_marks_itself_done(tmp_path, monkeypatch, capsys):
  """`python -m train.sample` with several processes runs as `python -m train` does: in a
  supervised child (`python -m train.sample` again), which marks itself done (peers stop
  expecting its heartbeat) on a clean end and after a one-line error, and leaves the watcher
  running when an unexpected error escapes (a collective failed: a peer may be gone). A lost
  process 0 is named by the supervisor with sampling's advice, not a checkpoint."""
  import signal
  from train import peers, sample
  from train.errors import UserError
  base = ['--config', os.path.join(REPO, 'configs', 'gpt_pydoc.py:variant=tiny'),
          '--workdir', str(tmp_path), '--num_samples', '2']
  dist = ['--config.distributed.coordinator_address=127.0.0.1:1',  # nothing listens there
          '--config.distributed.num_processes=2', '--config.distributed.process_id=1']
  monkeypatch.setattr(peers, '_ADVICE', None)
  monkeypatch.delenv(peers._SUPERVISED, raising=False)
  children = []

  class Child:  # the supervised child, dead of jax's abort when the coordinator vanished
    def __init__(self, cmd, env, preexec_fn):
      children.append((cmd, env[peers._SUPERVISED]))

    def wait(self):
      return -signal.SIGABRT

  monkeypatch.setattr(subprocess, 'Popen', Child)
  assert sample.main(base + dist) == peers.LOST_PEER_EXIT
  assert children == [([sys.executable, '-m', 'train.sample', *base, *dist], '1')]
  assert capsys.readouterr().err.strip() == (
      'error: lost process 0 of 2 (its coordination service at 127.0.0.1:1 stopped '
      'answering); stopping. No samples were written; relaunch every process to sample again.')

  stops = []

  class Watch:
    advice = None

    def stop(self):
      stops.append(self.advice)

  monkeypatch.setattr(peers, '_WATCH', Watch())
  monkeypatch.setenv(peers._SUPERVISED, '1')  # in the child: it samples
  outcomes = iter([lambda: 0, lambda: (_ for _ in ()).throw(UserError('no checkpoints')),
                   lambda: (_ for _ in ()).throw(RuntimeError('collective failed'))])
  monkeypatch.setattr(sample, '_sample_and_write', lambda argv, loaded: next(outcomes)())
  assert sample.main(base + dist) == 0 and stops == [sample.LOST_ADVICE]
  assert sample.main(base + dist) == 2 and len(stops) == 2
  assert capsys.readouterr().err.strip() == 'error: no checkpoints'
  with pytest.raises(RuntimeError, match='collective failed'):
    sample.main(base + dist)
  assert len(stops) == 2  # the watcher still runs


def test_a_watcher_started_for_sampling_gives_its_advice(monkeypatch):
  from train import peers, sample
  monkeypatch.setattr(peers, '_WATCH', None)
  monkeypatch.setattr(peers, '_ADVICE', None)
  peers.set_advice(sample.LOST_ADVICE)  # before jax.distributed starts the watcher
  watch = peers.start(_FakeStore(), 1, 2, timeout_s=60)
  try:
    text = watch.message(0, 'no heartbeat for 60 s')
  finally:
    watch.stop()
  assert text == ('error: lost process 0 of 2 (no heartbeat for 60 s); stopping. No samples '
                  'were written; relaunch every process to sample again.')


def test_sampler_joins_the_processes_before_it_loads_the_task(tmp_path, monkeypatch):
  """Loading a diffusion task starts jax's backend (its noise schedule), after which
  jax.distributed refuses to initialise: two processes sampling DiT both ended in that
  RuntimeError (2026-12-07) until the sampler joined them before parsing its options."""
  from train import mesh as mesh_lib, sample
  order = []

  class Parsed(Exception):
    pass

  def parse(argv, loaded):
    order.append('parse')
    raise Parsed
  monkeypatch.setattr(mesh_lib, 'maybe_initialize_distributed',
                      lambda config: order.append(config.distributed.num_processes))
  monkeypatch.setattr(sample, 'parse', parse)
  argv = ['--config', os.path.join(REPO, 'configs', 'dit_digits.py:tiny'), '--workdir',
          str(tmp_path), '--config.distributed.num_processes=2']
  with pytest.raises(Parsed):
    sample._sample_and_write(argv, sample._load(argv))
  assert order == [2, 'parse']
