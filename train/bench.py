"""`python -m train.bench --config configs/NAME.py[:arg] [--steps N] [--synthetic] [--config.KEY=VALUE ...]`

Times the loop's jitted training step of any config on batches from its own input (the
config's dataset, or the task's input), not a test: steps/s, examples/s and MFU (the
step's model FLOPs, train/flops.py, over the device's peak, train/metrics.py). Prints one
line and a JSON line. (The decoding-latency benchmark of language models is
examples/bench_decoding.py; the side-by-side one against PyTorch examples/bench_torch.py.)
"""

import argparse
import json
import sys
import tempfile
import time


def synthetic_batch(task, batch_size, seed=0):
  """A host batch of the task's example shapes: uniform bytes for uint8 arrays (images),
  normal floats, zeros for integers (labels, token ids: valid for any vocabulary)."""
  import numpy as np
  rng = np.random.default_rng(seed)
  def fill(spec):
    if spec.dtype == np.uint8:
      return rng.integers(0, 256, spec.shape, np.uint8)
    if np.issubdtype(spec.dtype, np.floating):
      return rng.standard_normal(spec.shape).astype(spec.dtype)
    return np.zeros(spec.shape, spec.dtype)
  return {k: fill(v) for k, v in task.example_batch(batch_size).items()}


def bench_training(config, steps, synthetic=False):
  """{'step_ms', 'steps_per_sec', 'examples_per_sec', 'mfu', 'flops_per_step',
  'peak_flops_per_device', 'init_s', 'compile_s'} of `steps` training steps on one batch
  of the config's input (or, `synthetic`, of random data in its shapes: for configs whose
  dataset is not offline, e.g. ImageNet's); init_s and compile_s: seconds to initialise the
  state and to compile the step (the cost that grows with an unrolled model's depth)."""
  import jax
  from train import core
  from train import data as data_lib
  from train import mesh as mesh_lib
  from train import metrics as metrics_lib
  from train.runner import Runner
  mesh = mesh_lib.make_mesh(config)
  mesh_lib.check_batch(config, mesh)
  task = core.load_task(config)
  runner = Runner(config, task, mesh)
  start = time.perf_counter()
  state = jax.block_until_ready(runner.init(jax.random.key(0)))
  init_s = time.perf_counter() - start
  if synthetic:
    batch = runner.device_batch(synthetic_batch(task, config.batch_size))
  else:
    with tempfile.TemporaryDirectory() as workdir:
      batches = data_lib.task_train_input(config, task,
                                          mesh_lib.local_data_parallel_size(mesh),
                                          jax.process_index(), jax.process_count(), workdir)
      batch = runner.device_batch(next(batches))
  start = time.perf_counter()
  flops = runner.compile(state, batch)
  compile_s = time.perf_counter() - start
  state, metrics = runner.step(state, batch)
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(steps):
    state, metrics = runner.step(state, batch)
  jax.block_until_ready(metrics)
  sec = (time.perf_counter() - start) / steps
  peak = metrics_lib.peak_flops_per_device() if flops else None
  return dict(step_ms=1e3 * sec, steps_per_sec=1 / sec, examples_per_sec=config.batch_size / sec,
              mfu=(flops / sec / peak) if flops and peak else None,
              flops_per_step=flops, peak_flops_per_device=peak, init_s=init_s,
              compile_s=compile_s)


def main(argv=None):
  from train import config_lib
  from train.errors import UserError
  overrides, rest = config_lib.split_overrides(sys.argv[1:] if argv is None else argv)
  p = argparse.ArgumentParser(prog='python -m train.bench')
  p.add_argument('--config', required=True, help='configs/NAME.py[:arg=val,...]')
  p.add_argument('--steps', type=int, default=10, help='timed steps (after one warm-up)')
  p.add_argument('--synthetic', action='store_true',
                 help="random data of the task's shapes instead of the config's dataset")
  args = p.parse_args(rest)
  try:
    config = config_lib.load(args.config)
    for key, value in overrides:
      config_lib.override(config, key, value)
    result = bench_training(config, args.steps, args.synthetic)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(f'training ({args.config}): {result["examples_per_sec"]:,.0f} examples/s, '
        f'{result["step_ms"]:.1f} ms per step, MFU {result["mfu"] or 0:.3f}; compiled in '
        f'{result["compile_s"]:.1f} s, initialised in {result["init_s"]:.1f} s')
  print(json.dumps(result))
  return 0


if __name__ == '__main__':
  sys.exit(main())
