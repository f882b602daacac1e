"""`python -m examples.lm_budget [--minutes 10] [--families gpt,llama,...] [--workdir runs/budget]
[--calibrate_steps 8] [--variant cpu] [--dry_run]`

The decoder families on the pydoc byte LM at one training-time budget (issue 16's table):
each family's `configs/<family>_pydoc.py` (same data, 32 x 128 bytes a step, same optimizer
and schedule shape) trains for as many steps as fit in `--minutes` of its own measured step
time, then reports validation nats/byte. Not a test; it needs an otherwise idle machine,
since every figure is wall-clock.

For each family, in turn:
  1. calibrate: `train.bench` times `--calibrate_steps` jitted train steps on a batch of
     the config's data (after one warm-up step; compile time is not counted);
  2. train: `python -m train` with total_steps = floor(budget / step time), warm-up
     min(100, total_steps // 6) (the config's 100 of 600), one evaluation at the end;
  3. read the final validation loss from WORKDIR/<family>/metrics.jsonl.
The budget is the training steps' time: compiling, the final evaluation and the checkpoint
are outside it, and the table reports the whole run's wall time beside it. Prints a
markdown table and one JSON line per family (also appended to WORKDIR/budget.jsonl).
"""

import argparse
import json
import math
import os
import subprocess
import sys
import time

FAMILIES = ('gpt', 'llama', 'mamba', 'rwkv', 'hyena', 'moe')


def calibrate(spec: str, steps: int, overrides=()) -> float:
  """Seconds per training step of `spec` (train.bench on the config's own data)."""
  from train import bench, config_lib
  config = config_lib.load(spec)
  for key, value in overrides:
    config_lib.override(config, key, value)
  return bench.bench_training(config, steps)['step_ms'] / 1e3


def plan(step_s: float, minutes: float) -> dict:
  """The step count and warm-up that spend `minutes` at `step_s` a step."""
  total = max(1, math.floor(minutes * 60 / step_s))
  return dict(total_steps=total, warmup_steps=min(100, total // 6))


def final_eval(workdir: str) -> dict:
  """The last eval-split line of WORKDIR/metrics.jsonl."""
  last = {}
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    for line in f:
      row = json.loads(line)
      if row.get('split') not in (None, 'train'):
        last = row
  return last


def run_family(family: str, args) -> dict:
  spec = f'configs/{family}_pydoc.py:variant={args.variant}'
  workdir = os.path.join(args.workdir, family)
  print(f'[{family}] calibrating {spec} ...', flush=True)
  step_s = calibrate(spec, args.calibrate_steps)
  steps = plan(step_s, args.minutes)
  print(f'[{family}] {1e3 * step_s:.0f} ms a step -> {steps["total_steps"]} steps', flush=True)
  result = dict(family=family, config=spec, minutes=args.minutes, step_ms=1e3 * step_s, **steps)
  if args.dry_run:
    return result
  cmd = [sys.executable, '-m', 'train', '--config', spec, '--workdir', workdir,
         f'--config.total_steps={steps["total_steps"]}',
         f'--config.warmup_steps={steps["warmup_steps"]}',
         f'--config.eval_every={steps["total_steps"]}',
         f'--config.ckpt_every={steps["total_steps"]}']
  start = time.perf_counter()
  subprocess.run(cmd, check=True)
  result['run_minutes'] = (time.perf_counter() - start) / 60
  metrics = final_eval(workdir)
  result['step'] = metrics.get('step')
  result['val_loss'] = metrics.get('loss')
  return result


def main(argv=None):
  p = argparse.ArgumentParser(prog='python -m examples.lm_budget')
  p.add_argument('--minutes', type=float, default=10.0, help='training-time budget per family')
  p.add_argument('--families', default=','.join(FAMILIES),
                 help=f'comma-separated, from {", ".join(FAMILIES)}')
  p.add_argument('--variant', default='cpu', help="the configs' variant (tiny: a smoke run)")
  p.add_argument('--workdir', default='runs/lm_budget')
  p.add_argument('--calibrate_steps', type=int, default=8)
  p.add_argument('--dry_run', action='store_true', help='calibrate and plan only')
  args = p.parse_args(argv)
  families = [f for f in args.families.split(',') if f]
  unknown = [f for f in families if f not in FAMILIES]
  if unknown:
    print(f'error: unknown families {unknown}; valid: {", ".join(FAMILIES)}', file=sys.stderr)
    return 2
  os.makedirs(args.workdir, exist_ok=True)
  rows = []
  for family in families:
    row = run_family(family, args)
    rows.append(row)
    with open(os.path.join(args.workdir, 'budget.jsonl'), 'a') as f:
      f.write(json.dumps(row) + '\n')
    print(json.dumps(row), flush=True)
  print(f'\n| family | ms / step | steps in {args.minutes:g} min | validation nats/byte '
        '| run (min, with compile and eval) |')
  print('|---|---|---|---|---|')
  for r in rows:
    loss = f'{r["val_loss"]:.3f}' if r.get('val_loss') is not None else '-'
    run = f'{r["run_minutes"]:.1f}' if 'run_minutes' in r else '-'
    print(f'| {r["family"]} | {r["step_ms"]:.0f} | {r["total_steps"]} | {loss} | {run} |')
  return 0


if __name__ == '__main__':
  sys.exit(main())
