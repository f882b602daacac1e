"""Logging: WORKDIR/metrics.jsonl, TensorBoard events (tensorboardX), console progress.

Only process 0 writes. Each jsonl line is one object: `step`, `split`, then metrics.
"""

import json
import math
import os
import sys
import time

import jax
import numpy as np


class Writer:
  """Writes metric dicts to metrics.jsonl and TensorBoard, and prints a progress line."""

  def __init__(self, workdir: str, total_steps: int, start_step: int = 0):
    self.enabled = jax.process_index() == 0
    self.total_steps, self.start_step = total_steps, start_step
    self._t0 = time.time()
    self._bar = None
    if not self.enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    self._jsonl = open(os.path.join(workdir, 'metrics.jsonl'), 'a', buffering=1)
    from tensorboardX import SummaryWriter
    self._tb = SummaryWriter(os.path.join(workdir, 'tensorboard'), flush_secs=30)
    if sys.stderr.isatty():
      from tqdm import tqdm
      self._bar = tqdm(total=total_steps, initial=start_step, dynamic_ncols=True,
                       unit='step', file=sys.stderr)

  def write(self, step: int, split: str, metrics: dict) -> None:
    if not self.enabled:
      return
    clean = {k: _to_py(v) for k, v in metrics.items()}
    self._jsonl.write(json.dumps({'step': int(step), 'split': split, **clean}) + '\n')
    for k, v in clean.items():
      if isinstance(v, (int, float)) and math.isfinite(v):
        self._tb.add_scalar(f'{split}/{k}', v, step)
    line = f'[{split}] step {step}/{self.total_steps} ' + ' '.join(
        f'{k}={_fmt(v)}' for k, v in clean.items())
    if split == 'train':
      line += f' eta={_eta(time.time() - self._t0, step - self.start_step, self.total_steps - step)}'
    if self._bar is not None:
      self._bar.write(line)
    else:
      print(line, flush=True)

  def progress(self, step: int, loss=None, steps_per_sec=None) -> None:
    if self._bar is None:
      return
    self._bar.n = step
    post = {}
    if loss is not None:
      post['loss'] = f'{loss:.4f}'
    if steps_per_sec:
      post['steps/s'] = f'{steps_per_sec:.1f}'
    self._bar.set_postfix(post, refresh=True)

  def close(self) -> None:
    if not self.enabled:
      return
    if self._bar is not None:
      self._bar.close()
    self._tb.close()
    self._jsonl.close()


def _to_py(v):
  v = np.asarray(v)
  return v.item() if v.size == 1 else v.tolist()


def _fmt(v):
  if isinstance(v, float):
    return f'{v:.5g}'
  return str(v)


def _eta(elapsed, done, left):
  if done <= 0:
    return '?'
  s = int(elapsed / done * left)
  return f'{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}'


def write_config_json(workdir: str, config) -> None:
  """WORKDIR/config.json: the resolved config, library versions and devices."""
  if jax.process_index() != 0:
    return
  import flax
  import optax
  info = {
      'config': config.to_dict(),
      'versions': {'jax': jax.__version__, 'flax': flax.__version__, 'optax': optax.__version__},
      'devices': {'backend': jax.default_backend(), 'device_count': jax.device_count(),
                  'process_count': jax.process_count(),
                  'kinds': sorted({d.device_kind for d in jax.devices()})},
  }
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    json.dump(info, f, indent=2, default=str)


# Dense bf16 peak FLOP/s per device, from vendor datasheets.
_PEAK_FLOPS = {
    'TPU v4': 275e12, 'TPU v5 lite': 197e12, 'TPU v5e': 197e12, 'TPU v5p': 459e12,
    'TPU v6 lite': 918e12, 'TPU v6e': 918e12,
    'H100': 989e12, 'H200': 989e12, 'A100': 312e12, 'L4': 121e12, 'V100': 125e12,
}


def peak_flops_per_device() -> float:
  """Peak FLOP/s of one device: the datasheet figure, or on CPU the best float32 matmul
  among the installed libraries (NumPy's BLAS and XLA's own, 2048x2048, best of 5).

  XLA's own matmul alone understates a CPU (2026-12, 2-core Xeon: XLA ~290 GFLOP/s,
  NumPy/OpenBLAS and PyTorch ~350), which overstated MFU. On CPU the simulated devices
  share the machine, so its peak is divided among them. The measurement is cached in
  ~/.cache/archzoo/peak_flops.json (delete it to measure again on an idle machine).
  """
  kind = jax.devices()[0].device_kind
  for name, flops in _PEAK_FLOPS.items():
    if name in kind:
      return flops
  cache = os.path.expanduser('~/.cache/archzoo/peak_flops.json')
  key = f'{jax.default_backend()}:{kind}:{os.cpu_count()}:best-of-blas-xla'
  try:
    with open(cache) as f:
      table = json.load(f)
  except (OSError, ValueError):
    table = {}
  if key not in table:
    table[key] = max(_measure_matmul_flops(), _measure_numpy_matmul_flops())
    try:  # atomic: several processes may measure at once
      os.makedirs(os.path.dirname(cache), exist_ok=True)
      tmp = f'{cache}.{os.getpid()}.tmp'
      with open(tmp, 'w') as f:
        json.dump(table, f)
      os.replace(tmp, cache)
    except OSError:
      pass
  per_machine = table[key]
  return per_machine / (jax.local_device_count() if jax.default_backend() == 'cpu' else 1)


def _best_seconds(fn, reps):
  fn()
  best = float('inf')
  for _ in range(reps):
    t = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - t)
  return best


def _measure_matmul_flops(n: int = 2048, reps: int = 5) -> float:
  import jax.numpy as jnp
  a = jnp.ones((n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  return 2 * n ** 3 / _best_seconds(lambda: f(a).block_until_ready(), reps)


def _measure_numpy_matmul_flops(n: int = 2048, reps: int = 5) -> float:
  a = np.ones((n, n), np.float32)
  return 2 * n ** 3 / _best_seconds(lambda: a @ a, reps)
