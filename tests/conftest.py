"""Shared test helpers: the repo root, a prepared offline data dir, running the CLI."""

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# One persistent XLA compilation cache for the whole session: this process, pytest-xdist's
# workers and every CLI subprocess inherit the variables, so a resumed run, a sampler run
# after training, or the same config in another test loads the compiled program instead of
# compiling it again. The process that made the folder removes it at exit.
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  os.environ['JAX_COMPILATION_CACHE_DIR'] = tempfile.mkdtemp(prefix='archzoo-xla-cache-')
  atexit.register(shutil.rmtree, os.environ['JAX_COMPILATION_CACHE_DIR'], True)
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.2')


# The suite compiles hundreds of small programs, and on CPU compiling costs more than running
# them: XLA's backend optimisation level 0 with its older (non-emitter) fusion codegen compiled
# LeNet's train step in 0.55 s against 2.05 s at the defaults (2026-12-07). Every test
# process and CLI subprocess gets these flags; results differ from the defaults' in the last
# bits only, so the loss goldens (tests/loss_goldens.py sets its own XLA_FLAGS) keep comparing
# the defaults users run bit for bit. ARCHZOO_TEST_XLA_DEFAULTS=1 runs the suite without them.
FAST_COMPILE = ('' if os.environ.get('ARCHZOO_TEST_XLA_DEFAULTS') == '1' else
                '--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false')
if FAST_COMPILE and FAST_COMPILE not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE}".strip()


# XLA:CPU ends a process whose collective waits 40 s for a simulated device's thread; with
# two test workers and their subprocesses on 2 cores a thread can wait that long (a pmap run
# of DQN's tiny config did, 2026-12-06), so the subprocesses wait longer.
COLLECTIVE_TIMEOUT = '--xla_cpu_collective_call_terminate_timeout_seconds=600'


# The longest tests (a minute or more each on 2 cores), handed out first: pytest-xdist's
# workers take tests in collection order, so one of these collected last would leave the
# other worker idle while it runs.
SLOW_FIRST = ('test_loss_goldens.py::test_one_device', 'test_loss_goldens.py::test_eight',
              'test_multihost.py::test_two_processes_train', 'test_scaleout.py::test_meshes',
              'test_tp_families.py', 'test_alphazero.py::test_eight',
              'test_flamingo.py::test_flamingo_digits', 'test_multihost.py::test_survivor',
              'test_dalle.py::test_config_trains', 'test_distill_lm.py::test_eight')


def pytest_collection_modifyitems(items):
  def rank(item):
    return next((i for i, p in enumerate(SLOW_FIRST) if p in item.nodeid), len(SLOW_FIRST))
  items.sort(key=rank)  # stable: the rest keep their order


def cli_env(data_dir, devices=1, **extra):
  """Environment for a CLI subprocess: CPU, `devices` simulated devices, the data dir."""
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(('JAX_COORDINATOR', 'JAX_NUM_PROCESSES', 'JAX_PROCESS_ID'))}
  env.update(ARCHZOO_DATA_DIR=str(data_dir), JAX_PLATFORMS='cpu',
             XLA_FLAGS=(f'--xla_force_host_platform_device_count={devices} '
                        f'{COLLECTIVE_TIMEOUT} {FAST_COMPILE}'),
             **extra)
  return env


def run_cli(args, data_dir, devices=1, timeout=300, module='train', **popen):
  """`python -m <module> args...` from the repo root; returns the CompletedProcess."""
  return subprocess.run([sys.executable, '-m', module, *map(str, args)], cwd=REPO,
                        env=cli_env(data_dir, devices), capture_output=True, text=True,
                        timeout=timeout, **popen)


def _main_in_process(module, args, data_dir):
  """`python -m <module> args...` as run_cli runs it on one device, in this process: the
  CLI's path (options, restore, writing the files) without a process start-up (about 3 s of
  imports on 2 cores). A CompletedProcess-like result: returncode, stdout, stderr."""
  import contextlib
  import importlib
  import io
  from train import peers
  main = importlib.import_module('train.__main__' if module == 'train' else module).main
  previous = peers.set_advice(None)  # the sampler sets the lost-peer advice: put it back after
  args = [os.path.join(REPO, a) if a.startswith('configs/') else a for a in map(str, args)]
  out, err = io.StringIO(), io.StringIO()
  env = os.environ.get('ARCHZOO_DATA_DIR')
  os.environ['ARCHZOO_DATA_DIR'] = str(data_dir)  # as cli_env sets it (frozen runs' configs)
  try:
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
      code = main([*args, f'--config.data.data_dir={data_dir}']
                  if module == 'train.sample' else args)
  except SystemExit as e:  # argparse: a bad option, --help
    code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
  finally:
    peers.set_advice(previous)
    if env is None:
      del os.environ['ARCHZOO_DATA_DIR']
    else:
      os.environ['ARCHZOO_DATA_DIR'] = env
  return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def run_sample(args, data_dir, devices=1):
  """`python -m train.sample args...` as run_cli runs it: on one device in this process
  (`_main_in_process`), on several a subprocess (run_cli)."""
  if devices != 1:
    return run_cli(args, data_dir, devices=devices, module='train.sample')
  return _main_in_process('train.sample', args, data_dir)


def run_train(args, data_dir):
  """`python -m train args...` on one device in this process (`_main_in_process`)."""
  return _main_in_process('train', args, data_dir)


def run_trains(runs, data_dir, devices=8, timeout=300):
  """`python -m train` for each argument list in `runs`, one after another in one process of
  `devices` simulated devices (one start-up for all); each run's exit code must be 0."""
  proc = subprocess.run([sys.executable, '-c', TRAIN_RUNS, json.dumps([list(map(str, r))
                                                                      for r in runs])],
                        cwd=REPO, env=cli_env(data_dir, devices=devices), capture_output=True,
                        text=True, timeout=timeout * len(runs))
  assert proc.returncode == 0 and json.loads(proc.stdout.splitlines()[-1]) == [0] * len(runs), (
      proc.stderr[-3000:])
  return proc


# Several `python -m train` runs in one 8-device process, one after another (the CLI's main
# for each argument list): one start-up instead of one a run. Prints each run's exit code.
TRAIN_RUNS = r"""
import json, sys
from train.__main__ import main
print(json.dumps([main(argv) for argv in json.loads(sys.argv[1])]))
"""


def load_config(spec, **overrides):
  """configs/<spec> (e.g. 'vit_digits.py:tiny') with field overrides, `a__b=v` for
  `--config.a.b=v`."""
  from train import config_lib
  config = config_lib.load(os.path.join(REPO, 'configs', spec))
  for k, v in overrides.items():
    config_lib.override(config, k.replace('__', '.'), str(v))
  return config


def read_metrics(workdir, split='train'):
  """{step: record} of WORKDIR/metrics.jsonl lines of `split`."""
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return {r['step']: r for r in map(json.loads, f) if r['split'] == split}


@pytest.fixture(scope='session')
def data_dir(tmp_path_factory):
  """A TFDS data dir with the offline datasets prepared once for the session."""
  d = tmp_path_factory.mktemp('tfds')
  for name in ('digits', 'pydoc_text'):
    proc = run_cli([name, '--data_dir', d], d, module='train.datasets')
    assert proc.returncode == 0, proc.stderr
  return str(d)


def train_spec(spec, workdir, data_dir, **overrides):
  """`configs/{spec}` trained in-process in `workdir` on the prepared data dir (overrides
  as load_config takes them); the final eval metrics. The `train` that
  check_resumes_from_step_2 takes."""
  from train import loop
  config = load_config(spec, data__data_dir=data_dir, **overrides)
  return loop.train_and_evaluate(config, str(workdir))


def restored_states(abstract, workdirs, step):
  """The train state of checkpoint `step` in each workdir, restored onto `abstract`."""
  from train import checkpoint
  states = []
  for workdir in workdirs:
    ckpt = checkpoint.Checkpointer(str(workdir), async_save=False)
    states.append(ckpt.restore(step, abstract)[0])
    ckpt.close()
  return states


def assert_same_states(a, b):
  """Two train states equal leaf by leaf, bitwise."""
  import jax
  import numpy as np
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(x, y)


TIMING = ('steps_per_sec', 'examples_per_sec', 'mfu')


def check_resumes_alike(spec, train, tmp_path, must_have=('loss',), **overrides):
  """After `train(tmp_path / 'straight', **overrides)` ran 4 steps of `spec` with
  checkpoints at 2 and 4: the step-2 checkpoint alone in another workdir resumes (without
  evaluating) to the same train metrics at steps 3 and 4 (all but timings; `must_have`
  among them, all finite) and the same step-4 train state, bitwise. Returns (the straight
  run's metrics by step, the abstract state, the two step-4 states)."""
  import numpy as np
  from train import core
  shutil.copytree(tmp_path / 'straight' / 'checkpoints' / '2',
                  tmp_path / 'resumed' / 'checkpoints' / '2')
  train(tmp_path / 'resumed', eval_every=0, **overrides)
  straight, resumed = ({s: {k: v for k, v in r.items() if k not in TIMING}
                        for s, r in read_metrics(tmp_path / name).items()}
                       for name in ('straight', 'resumed'))
  assert sorted(straight) == [1, 2, 3, 4]
  assert set(must_have) <= set(straight[4]), sorted(straight[4])
  assert all(np.isfinite(v) for r in straight.values() for k, v in r.items() if k != 'split')
  assert resumed == {3: straight[3], 4: straight[4]}
  config = load_config(spec, **overrides)
  abstract = core.abstract_state(config, core.load_task(config))
  states = restored_states(abstract, [tmp_path / 'straight', tmp_path / 'resumed'], 4)
  assert_same_states(*states)
  return straight, abstract, states


def check_resumes_from_step_2(spec, train, tmp_path, data_dir):
  """`check_resumes_alike` for a `train(spec, workdir, data_dir, **overrides)` that has
  already run tmp_path / 'straight'."""
  check_resumes_alike(spec, lambda workdir, **kw: train(spec, workdir, data_dir, **kw),
                      tmp_path)


MESH_RUNS = r"""
import json, os, shutil, sys
from train import config_lib, loop

data_dir, root, spec, run, meshes = sys.argv[1:4] + [json.loads(a) for a in sys.argv[4:6]]
out = {}


def config_of(path, overrides):
  config = config_lib.load(path)
  for key, value in {'data.data_dir': data_dir, **overrides}.items():
    config_lib.override(config, key, str(value))
  return config


for label, mesh in meshes.items():
  # straight, then a copy without its last checkpoint resumed from its previous one
  straight, resumed = os.path.join(root, label), os.path.join(root, label + '_resumed')
  loop.train_and_evaluate(config_of(f'configs/{spec}', {**run, **mesh}), straight)
  shutil.copytree(straight, resumed)
  shutil.rmtree(os.path.join(resumed, 'checkpoints', str(run['total_steps'])))
  loop.train_and_evaluate(config_of(f'configs/{spec}', {**run, **mesh}), resumed)
  with open(os.path.join(resumed, 'metrics.jsonl')) as f:
    out[label] = [(r['step'], r['loss']) for r in map(json.loads, f) if r['split'] == 'train']
"""


def check_meshes_resume_like_one_device(spec, meshes, tmp_path, data_dir, steps=20,
                                        overrides=None, tail='', rel=1e-5):
  """`configs/{spec}` trains `steps` steps on one device (in this process) and, in one
  8-device subprocess, on each of `meshes` ({label: {'mesh.data': 2, ...}}: overrides),
  each mesh's run then resumed from its step steps/2 checkpoint in a copy without the
  last: every mesh's losses are one device's to `rel`, and the resumed steps repeat the
  straight run's bit for bit. `overrides` ({'model.num_heads': 4, ...}) apply to every run. `tail` is more code for the subprocess (8 devices, the
  dict `out` printed as JSON at the end); returns `out`. One process saves each run the
  CLI's start-up (about 3 s of imports and data set-up on 2 cores)."""
  run = dict(overrides or {}, total_steps=steps, log_every=1, eval_every=0,
             ckpt_every=steps // 2)
  train_spec(spec, tmp_path / 'one', data_dir, **{k.replace('.', '__'): v for k, v in run.items()})
  one = {s: r['loss'] for s, r in read_metrics(tmp_path / 'one').items()}
  assert sorted(one) == list(range(1, steps + 1))
  proc = subprocess.run([sys.executable, '-c', MESH_RUNS + tail + '\nprint(json.dumps(out))\n',
                         data_dir, str(tmp_path), spec, json.dumps(run), json.dumps(meshes)],
                        cwd=REPO, capture_output=True, text=True,
                        env=cli_env(data_dir, devices=8), timeout=1200)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  half = steps // 2
  for label in meshes:
    logged = out[label]
    # steps 1..steps of the straight run, then half+1..steps again from the checkpoint
    assert [s for s, _ in logged] == list(range(1, steps + 1)) + list(range(half + 1, steps + 1))
    for step, loss in logged[:steps]:
      assert loss == pytest.approx(one[step], rel=rel), (spec, label, step)
    assert logged[steps:] == logged[half:steps], (spec, label)  # bit for bit
  return out


def check_eight_devices(spec, tmp_path, modes, close=(), equal=(), steps=4, args=(),
                        rel=1e-5, abs=1e-7, bitwise_jit=False, evals=('return',)):
  """`configs/{spec}` through the CLI for `steps` steps (evaluating at the last) on 1 device
  (in this process) and on 8 simulated ones under each parallelism in `modes` (one after
  another in one subprocess): every step's `close` metrics
  agree to rel/abs (bitwise under jit with `bitwise_jit`: every device computes the same
  replicated step, while pmap's mean of 8 equal gradients is not always exact), its `equal`
  metrics are equal, and so are the last eval's `evals` (bitwise where the steps are, else
  to max(rel, 1e-4))."""
  args = ['--config', f'configs/{spec}', f'--config.total_steps={steps}',
          f'--config.eval_every={steps}', *map(str, args)]
  one = run_train([*args, '--workdir', tmp_path / 'one'], tmp_path)
  assert one.returncode == 0, one.stderr[-3000:]
  run_trains([[*args, '--workdir', tmp_path / mode, f'--config.parallelism={mode}']
              for mode in modes], tmp_path)
  one = read_metrics(tmp_path / 'one')
  one_eval = read_metrics(tmp_path / 'one', 'eval')[steps]
  for mode in modes:
    eight = read_metrics(tmp_path / mode)
    exact = bitwise_jit and mode == 'jit'
    for s in range(1, steps + 1):
      for key in close:
        want = one[s][key] if exact else pytest.approx(one[s][key], rel=rel, abs=abs)
        assert eight[s][key] == want, (mode, s, key)
      for key in equal:
        assert eight[s][key] == one[s][key], (mode, s, key)
    eight_eval = read_metrics(tmp_path / mode, 'eval')[steps]
    for key in evals:
      assert eight_eval[key] == (one_eval[key] if exact
                                 else pytest.approx(one_eval[key], rel=max(rel, 1e-4))), (mode, key)
