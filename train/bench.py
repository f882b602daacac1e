"""`python -m train.bench --config configs/NAME.py[:arg] [--steps N] [--synthetic] [--profile N [--top K]] [--config.KEY=VALUE ...]`

Times the loop's jitted training step of any config on batches from its own input (the
config's dataset, or the task's input), not a test: steps/s, examples/s and MFU (the
step's model FLOPs, train/flops.py, over the device's peak, train/metrics.py). Prints one
line and a JSON line. `--profile N` then traces N more steps with `jax.profiler` and
prints the compiled step's operations by time (ms a step, share, the operation's kind:
the root of a fusion, e.g. a dot, a transpose, a reduce-window, and its output shape), the
K slowest one by one and all of them grouped by kind, so a slow layer is visible at once.
It reads the per-operation events XLA:CPU's runtime records (each named after its HLO
instruction); a backend whose trace names no instruction of the compiled step gets a line
saying so. (The decoding-latency benchmark of language models is
examples/bench_decoding.py; the side-by-side one against PyTorch examples/bench_torch.py.)
"""

import argparse
import collections
import glob
import gzip
import json
import os
import re
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


def hlo_ops(hlo_text: str) -> dict:
  """{instruction name: (kind, output shape)} of a compiled HLO module's text: the kind is
  the opcode, or for a fusion the opcode of its computation's root ('transpose' where the
  root only moves data, a bitcast, copy or reshape, and the computation transposes; a
  'ynn' fusion is a library call whose root is a dot)."""
  ops, roots, calls, opcodes = {}, {}, {}, collections.defaultdict(set)
  computation = None
  for line in hlo_text.splitlines():
    head = re.match(r'(?:ENTRY )?%?([\w.\-]+) \(.*\{$', line)
    if head and not line.startswith(' '):
      computation = head.group(1)
      continue
    m = re.match(r'\s*(ROOT )?%([\w.\-]+) = (\S+?) ([\w\-]+)\(', line)
    if not m:
      continue
    root, name, shape, opcode = m.groups()
    ops[name] = (opcode, shape)
    opcodes[computation].add(opcode)
    if root and computation:
      roots[computation] = opcode
    if opcode == 'fusion':
      c = re.search(r'calls=%([\w.\-]+)', line)
      if c:
        calls[name] = c.group(1)
  for name, computation in calls.items():
    root = roots.get(computation, '?')
    if root in ('bitcast', 'copy', 'reshape') and 'transpose' in opcodes[computation]:
      root = 'transpose'
    ops[name] = (f'fusion:{root}', ops[name][1])
  return ops


def top_ops(trace_dir: str, hlo_text: str, steps: int) -> list:
  """[{'name', 'kind', 'shape', 'ms', 'count'}] per step, slowest first: the trace's events
  that carry the name of an instruction of the compiled step, summed by name."""
  files = glob.glob(os.path.join(trace_dir, '**', '*.trace.json.gz'), recursive=True)
  if not files:
    return []
  with gzip.open(max(files, key=os.path.getmtime)) as f:
    events = json.load(f).get('traceEvents', [])
  ops = hlo_ops(hlo_text)
  ms, count = collections.Counter(), collections.Counter()
  for e in events:
    if e.get('ph') == 'X' and e.get('name') in ops:
      ms[e['name']] += e.get('dur', 0) / 1e3 / steps
      count[e['name']] += 1
  return [dict(name=n, kind=ops[n][0], shape=ops[n][1], ms=t, count=count[n] / steps)
          for n, t in ms.most_common()]


def print_profile(rows: list, step_ms: float, top: int) -> None:
  if not rows:
    print('profile: the trace names no instruction of the compiled step (this backend '
          'records no per-operation events); open it in TensorBoard or Perfetto instead')
    return
  total = sum(r['ms'] for r in rows)
  print(f'profile: {total:.1f} ms a step in {len(rows)} operations ({step_ms:.1f} ms a '
        f'step timed; operations may overlap)')
  print(f'  {"ms/step":>8} {"share":>6}  {"kind":<24} {"output":<34} operation')
  for r in rows[:top]:
    print(f'  {r["ms"]:8.2f} {100 * r["ms"] / total:5.1f}%  {r["kind"]:<24} '
          f'{r["shape"][:34]:<34} {r["name"]}')
  kinds, n = collections.Counter(), collections.Counter()
  for r in rows:
    kinds[r['kind']] += r['ms']
    n[r['kind']] += 1
  print('  by kind:')
  for kind, t in kinds.most_common():
    print(f'  {t:8.2f} {100 * t / total:5.1f}%  {kind:<24} ({n[kind]} operations)')


def bench_training(config, steps, synthetic=False, profile=0):
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
  result = dict(step_ms=1e3 * sec, steps_per_sec=1 / sec,
                examples_per_sec=config.batch_size / sec,
                mfu=(flops / sec / peak) if flops and peak else None,
                flops_per_step=flops, peak_flops_per_device=peak, init_s=init_s,
                compile_s=compile_s)
  if profile:
    with tempfile.TemporaryDirectory() as trace_dir:
      with jax.profiler.trace(trace_dir):
        for _ in range(profile):
          state, metrics = runner.step(state, batch)
        jax.block_until_ready(metrics)
      result['profile'] = top_ops(trace_dir, runner.compiled_text() or '', profile)
  return result


def main(argv=None):
  from train import config_lib
  from train.errors import UserError
  overrides, rest = config_lib.split_overrides(sys.argv[1:] if argv is None else argv)
  p = argparse.ArgumentParser(prog='python -m train.bench')
  p.add_argument('--config', required=True, help='configs/NAME.py[:arg=val,...]')
  p.add_argument('--steps', type=int, default=10, help='timed steps (after one warm-up)')
  p.add_argument('--synthetic', action='store_true',
                 help="random data of the task's shapes instead of the config's dataset")
  p.add_argument('--profile', type=int, default=0, metavar='N',
                 help='trace N more steps and print the operations by time')
  p.add_argument('--top', type=int, default=25, help='operations listed one by one')
  args = p.parse_args(rest)
  try:
    config = config_lib.load(args.config)
    for key, value in overrides:
      config_lib.override(config, key, value)
    result = bench_training(config, args.steps, args.synthetic, args.profile)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(f'training ({args.config}): {result["examples_per_sec"]:,.0f} examples/s, '
        f'{result["step_ms"]:.1f} ms per step, MFU {result["mfu"] or 0:.3f}; compiled in '
        f'{result["compile_s"]:.1f} s, initialised in {result["init_s"]:.1f} s')
  if args.profile:
    print_profile(result['profile'], result['step_ms'], args.top)
    result['profile'] = result['profile'][:args.top]
  print(json.dumps(result))
  return 0


if __name__ == '__main__':
  sys.exit(main())
