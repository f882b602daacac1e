"""Bad input through the real CLI: one `error:` line, exit 2, no traceback, checkpoints kept.

Most cases run `python -m train` in a copy of a workdir that already holds checkpoints
(steps 10 and 20 of mlp_digits) and check that the checkpoint tree is byte-for-byte the
same afterwards and that no new step was written; the NaN/Inf cases also start fresh runs.
"""

import hashlib
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, cli_env

MLP = 'configs/mlp_digits.py'
LENET = 'configs/lenet_digits.py'
TRAIN_20 = ['--config.total_steps=20', '--config.ckpt_every=10', '--config.eval_every=0']
# stderr lines ignored by the checks: absl warnings (TFDS prints none here; orbax prints
# one for a checkpoint without _METADATA). Anything else besides the error line fails.
NOISE = ('WARNING:absl',)


def cli(args, data_dir, devices=1, timeout=120, module='train'):
  try:
    return subprocess.run([sys.executable, '-m', module, *map(str, args)], cwd=REPO,
                          env=cli_env(data_dir, devices), capture_output=True, text=True,
                          timeout=timeout)
  except subprocess.TimeoutExpired as e:
    pytest.fail(f'`{" ".join(map(str, args))}` still running after {timeout}s (a download '
                f'attempt?); stderr so far: {e.stderr!r}')


def user_error(proc, *needles, allowed=()):
  """Checks the CLI contract for bad input and returns the error message."""
  out = proc.stdout + proc.stderr
  assert 'Traceback' not in out, out[-6000:]
  assert proc.returncode == 2, (proc.returncode, out[-6000:])
  lines = [l for l in proc.stderr.splitlines() if l.strip() and not l.startswith(NOISE)]
  errors = [l for l in lines if l.startswith('error:')]
  assert len(errors) == 1, proc.stderr
  others = [l for l in lines if not l.startswith(('error:', *allowed))]
  assert not others, f'unexpected stderr lines: {others}'
  message = errors[0]
  for needle in needles:
    assert needle in message, (needle, message)
  return message


def tree_digest(root):
  """{relative path: sha256 of the bytes} of every file and directory under `root`."""
  out = {}
  for d, dirs, files in os.walk(root):
    for name in dirs:
      out[os.path.relpath(os.path.join(d, name), root) + '/'] = 'dir'
    for name in files:
      with open(os.path.join(d, name), 'rb') as f:
        out[os.path.relpath(os.path.join(d, name), root)] = hashlib.sha256(f.read()).hexdigest()
  return out


def steps(workdir):
  d = os.path.join(workdir, 'checkpoints')
  return sorted(int(n) for n in os.listdir(d) if n.isdigit()) if os.path.isdir(d) else []


@pytest.fixture(scope='session')
def digits_dir(tmp_path_factory):
  """A data dir with only the offline `digits` dataset prepared, once per session."""
  d = tmp_path_factory.mktemp('tfds_digits')
  proc = cli(['digits', '--data_dir', d], d, module='train.datasets', timeout=300)
  assert proc.returncode == 0, proc.stderr
  return str(d)


@pytest.fixture(scope='module')
def trained(tmp_path_factory, digits_dir):
  """A workdir with checkpoints 10 and 20 of a 20-step mlp_digits run."""
  w = str(tmp_path_factory.mktemp('trained') / 'w')
  proc = cli(['--config', MLP, '--workdir', w, *TRAIN_20], digits_dir)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
  assert steps(w) == [10, 20]
  return w


@pytest.fixture
def workdir(trained, tmp_path):
  """A private copy of `trained`; after the test its checkpoints must be unchanged."""
  w = str(tmp_path / 'w')
  shutil.copytree(trained, w)
  yield w


def run_bad(workdir, data_dir, config_args, *needles, devices=1, timeout=120, allowed=()):
  """Runs the CLI on `workdir` expecting a user error; existing checkpoints must not change
  (a fresh `workdir` is left to the caller to check)."""
  ckpts = os.path.join(workdir, 'checkpoints')
  existing = os.path.isdir(ckpts)
  before, steps_before = tree_digest(ckpts), steps(workdir)
  proc = cli(['--workdir', workdir, *config_args], data_dir, devices=devices, timeout=timeout)
  message = user_error(proc, *needles, allowed=allowed)
  if not existing:
    return message
  assert steps(workdir) == steps_before
  after = tree_digest(ckpts)
  changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
  assert not changed, f'checkpoint files changed: {changed}'
  return message


# ------------------------------------------------------- errors before training starts


@pytest.mark.parametrize('override, needles', [
    ('--config.nosuchkey=1',
     ['config.nosuchkey', 'valid keys of config:', 'total_steps', 'batch_size', 'optax_name']),
    ('--config.data.nosuch=1',
     ['config.data.nosuch', 'valid keys of config.data:', 'name', 'train_split']),
    ('--config.model_name=vision.nosuch', ["'vision.nosuch'", 'vision.lenet', 'vision.mlp']),
    ('--config.task=vision.nosuch', ["'vision.nosuch'", 'vision.classification']),
    ('--config.optax_name=adamm', ['adamm', 'adam', 'sgd', 'adamw']),
    ('--config.data.name=nosuchdataset', ["'nosuchdataset'", 'digits']),
], ids=['key', 'nested_key', 'model', 'task', 'optimizer', 'dataset'])
def test_unknown_names(workdir, digits_dir, override, needles):
  run_bad(workdir, digits_dir, ['--config', MLP, override, '--config.total_steps=30'], *needles)


def test_unprepared_tfds_dataset(workdir, digits_dir):
  # A known TFDS name that is not in the data dir: say so and how to prepare it, without
  # trying to download (there is no network; a download attempt would hang or fail late).
  message = run_bad(workdir, digits_dir, ['--config', MLP, '--config.data.name=mnist'],
                    "'mnist'", 'not prepared', digits_dir, 'tfds build mnist', timeout=60)
  assert '--file_format array_record' in message


def test_batch_not_divisible_by_devices(workdir, digits_dir):
  run_bad(workdir, digits_dir, ['--config', MLP, '--config.batch_size=12'],
          'batch_size=12', '8 data-parallel devices', 'multiple of 8', devices=8)


def test_task_config_error_from_the_input_pipeline(tmp_path, digits_dir):
  # The PixelCNN task pools data images to its input size in its preprocess (run by the
  # data loader): 8x8 digits do not pool to 3x3, and that says so in one line.
  run_bad(str(tmp_path / 'w'), digits_dir,
          ['--config', 'configs/pixelcnn_digits.py:tiny', '--config.task_kwargs.input_size=(3, 3)'],
          'images of 8x8 do not pool to task_kwargs.input_size 3x3')


def test_unknown_config_argument(workdir, digits_dir):
  run_bad(workdir, digits_dir, ['--config', f'{MLP}:nosuch=1'], "'nosuch'", 'width', 'depth')


def test_missing_config_file(workdir, digits_dir):
  run_bad(workdir, digits_dir, ['--config', 'configs/nosuch.py'],
          "'configs/nosuch.py'", 'not found', 'mlp_digits.py', 'lenet_digits.py')


# ------------------------------------------------------------------ bad checkpoints


def _files(d):
  assert os.path.isdir(d), d
  out = [os.path.join(d, n) for n in sorted(os.listdir(d))]
  assert out, d
  return out


def _randomize(paths):
  rng = np.random.default_rng(0)
  for p in paths:
    size = os.path.getsize(p)
    with open(p, 'wb') as f:
      f.write(rng.bytes(size))


def _truncate(paths):
  for p in paths:
    open(p, 'wb').close()


# Ways to break step 20 (paths under checkpoints/20/state/) and what the error then says.
CORRUPTIONS = {
    'random_array_data': (lambda s: _randomize(_files(os.path.join(s, 'ocdbt.process_0', 'd'))),
                          'cannot restore checkpoint'),
    'truncated_array_data': (lambda s: _truncate(_files(os.path.join(s, 'ocdbt.process_0', 'd'))),
                             'cannot restore checkpoint'),
    'random_root_index': (lambda s: _randomize(_files(os.path.join(s, 'd'))),
                          'cannot restore checkpoint'),
    'missing_metadata': (lambda s: os.remove(os.path.join(s, '_METADATA')),
                         'has no readable state metadata'),
}


@pytest.mark.parametrize('how', sorted(CORRUPTIONS))
def test_corrupt_checkpoint(workdir, digits_dir, how):
  corrupt, says = CORRUPTIONS[how]
  corrupt(os.path.join(workdir, 'checkpoints', '20', 'state'))
  run_bad(workdir, digits_dir, ['--config', MLP, '--config.total_steps=30'],
          says, os.path.join('checkpoints', '20'), 'left untouched')
  assert steps(workdir) == [10, 20]


def test_checkpoint_of_other_width(workdir, digits_dir):
  message = run_bad(workdir, digits_dir, ['--config', f'{MLP}:width=128',
                                          '--config.total_steps=30'],
                    os.path.join('checkpoints', '20'), 'does not match this config',
                    'left untouched')
  # names a parameter whose stored shape differs, with both shapes
  assert re.search(r'params/\S+: stored \([^)]*256[^)]*\) vs config \([^)]*128[^)]*\)',
                   message), message


def test_checkpoint_of_other_model(workdir, digits_dir):
  message = run_bad(workdir, digits_dir, ['--config', LENET, '--config.total_steps=30'],
                    os.path.join('checkpoints', '20'), 'does not match this config',
                    'left untouched')
  assert re.search(r'params/\S+: (stored \(|not in )', message), message


# ----------------------------------------------------------------------- NaN / Inf


NAN = ['--config.lr=1e25', '--config.schedule=constant', '--config.ckpt_every=5',
       '--config.log_every=5', '--config.total_steps=50', '--config.eval_every=0']


def test_nonfinite_fresh_run(tmp_path, digits_dir):
  # Adam at lr=1e25 overflows at step 2, before the first checkpoint (step 5).
  w = str(tmp_path / 'w')
  run_bad(w, digits_dir, ['--config', MLP, *NAN],
          'NaN/Inf', 'No checkpoint was saved yet')
  assert steps(w) == []


def test_nonfinite_after_resume_keeps_checkpoints(workdir, digits_dir):
  # Resumes at step 20, blows up at once: steps 10 and 20 stay, nothing newer is written.
  message = run_bad(workdir, digits_dir, ['--config', MLP, *NAN], 'NaN/Inf',
                    f'last good checkpoint is step 20 in {os.path.join(workdir, "checkpoints")}',
                    allowed=('resumed from ',))
  bad = int(re.search(r'at step (\d+)', message).group(1))
  assert 20 < bad <= 25, message
  assert steps(workdir) == [10, 20]


def _restore_arrays(step_dir):
  import jax
  import orbax.checkpoint as ocp
  tree = ocp.StandardCheckpointer().restore(os.path.join(step_dir, 'state'))
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_nonfinite_keeps_last_good_checkpoint(tmp_path, digits_dir):
  # Plain SGD at lr=300 stays finite for a few steps, so step 5 is saved, then diverges
  # (step 8 on x86-64 CPU); the error is raised at the next check, before saving step 10.
  w = str(tmp_path / 'w')
  sgd = ['--config.optax_name=sgd', '--config.schedule=constant', '--config.eval_every=0']
  message = run_bad(w, digits_dir, ['--config', MLP, *sgd, '--config.lr=300',
                                    '--config.ckpt_every=5', '--config.log_every=5',
                                    '--config.total_steps=50'], 'NaN/Inf')
  bad = int(re.search(r'NaN/Inf at step (\d+)', message).group(1))
  good = int(re.search(r'last good checkpoint is step (\d+) in ', message).group(1))
  assert 5 <= good < bad, message
  kept = steps(w)
  assert kept and max(kept) == good and all(s % 5 == 0 for s in kept), (kept, message)
  for s in kept:  # no checkpoint holds a non-finite value
    for x in _restore_arrays(os.path.join(w, 'checkpoints', str(s))):
      assert x.dtype.kind not in 'fc' or np.isfinite(x).all(), s

  # The kept checkpoint resumes (lr=0: its params are huge but finite).
  proc = cli(['--config', MLP, '--workdir', w, *sgd, '--config.lr=0.0',
              f'--config.total_steps={good + 2}', '--config.log_every=1'], digits_dir)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
  assert f'resumed from {os.path.join(w, "checkpoints", str(good))}' in proc.stderr
  assert 'Traceback' not in proc.stdout + proc.stderr
  assert steps(w)[-1] == good + 2
