"""The model-FLOP counter behind MFU (train/flops.py) against hand counts, and the loop's
count of a scanned GPT equal to its unrolled twin's (XLA's cost analysis is not)."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO, cli_env, load_config
from train import flops


def test_mlp_training_step_counts_forward_and_both_backward_products():
  b, d, h, o = 8, 5, 7, 3
  params = {'w1': jnp.ones((d, h)), 'w2': jnp.ones((h, o))}
  x = jnp.ones((b, d))

  def loss(p, x):
    return jnp.sum(jnp.tanh(x @ p['w1']) @ p['w2'])

  forward = 2 * b * d * h + 2 * b * h * o
  # backward: both weight gradients, and the hidden layer's input gradient (not x's)
  backward = 2 * b * d * h + 2 * b * h * o + 2 * b * h * o
  assert flops.function_flops(loss, params, x) == forward
  assert flops.function_flops(jax.grad(loss), params, x) == forward + backward


def test_scan_counts_every_iteration_where_xla_counts_one():
  w = jnp.ones((16, 16))

  def unrolled(x):
    for _ in range(5):
      x = jnp.tanh(x @ w)
    return x

  def scanned(x):
    return jax.lax.scan(lambda c, _: (jnp.tanh(c @ w), None), x, None, length=5)[0]

  x = jnp.ones((4, 16))
  want = 5 * 2 * 4 * 16 * 16
  assert flops.function_flops(unrolled, x) == flops.function_flops(scanned, x) == want
  assert flops.traced_flops(jax.jit(scanned).trace(x)) == want
  xla = jax.jit(scanned).lower(x).compile().cost_analysis()
  xla = xla[0] if isinstance(xla, (list, tuple)) else xla
  assert xla['flops'] < want / 2  # the reason this counter exists


def test_convolution_and_batched_products():
  x = jnp.ones((2, 9, 9, 4))
  k = jnp.ones((3, 3, 2, 6))  # two feature groups of 2 inputs each
  conv = lambda x, k: jax.lax.conv_general_dilated(
      x, k, (2, 2), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'), feature_group_count=2)
  out = jax.eval_shape(conv, x, k).shape
  assert out == (2, 5, 5, 6)
  assert flops.function_flops(conv, x, k) == 2 * (2 * 5 * 5 * 6) * (3 * 3 * 2)
  q, kk = jnp.ones((2, 3, 4, 8)), jnp.ones((2, 3, 5, 8))  # batch, heads, length, width
  scores = lambda q, k: jnp.einsum('bhqd,bhkd->bhqk', q, k)
  assert flops.function_flops(scores, q, kk) == 2 * 2 * 3 * 4 * 5 * 8


def test_cond_counts_its_costliest_branch():
  x = jnp.ones((4, 4))
  f = lambda p, x: jax.lax.cond(p, lambda x: x @ x @ x, lambda x: x @ x, x)
  assert flops.function_flops(f, True, x) == 2 * 2 * 4 * 4 * 4


SHARD_MAP = r'''
import jax, jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
from train import flops
mesh = jax.make_mesh((2,), ('a',))
with jax.set_mesh(mesh):
  f = jax.jit(jax.shard_map(lambda x, w: x @ w, in_specs=(P('a'), P()), out_specs=P('a')))
  x = jax.device_put(jnp.ones((8, 3)), NamedSharding(mesh, P('a')))
  print(flops.traced_flops(f.trace(x, jnp.ones((3, 5)))))
'''


def test_shard_map_bodies_count_once_per_shard(tmp_path):
  proc = subprocess.run([sys.executable, '-c', SHARD_MAP], cwd=REPO, env=cli_env(tmp_path, 2),
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert int(proc.stdout.split()[-1]) == 2 * 8 * 3 * 5  # the global product


def test_the_loop_counts_a_scanned_gpt_like_its_unrolled_twin(data_dir, tmp_path):
  """Both equal the hand count of GPT tiny's step: 3 x the forward's matmuls (each
  backward product computes both operands' gradients), with causal attention computed over
  the full T x T scores as the layer does."""
  from train import core
  from train import data as data_lib
  from train import mesh as mesh_lib
  from train.runner import Runner
  counts = {}
  for scan in (False, True):
    config = load_config('gpt_pydoc.py:variant=tiny', data__data_dir=data_dir,
                         model__scan_layers=scan)
    task = core.load_task(config)
    runner = Runner(config, task, mesh_lib.make_mesh(config))
    batch = runner.device_batch(next(data_lib.task_train_input(config, task, 1, 0, 1,
                                                               str(tmp_path))))
    if scan:  # what the loop logs
      counts[scan] = runner.compile(runner.init(jax.random.key(0)), batch)
    else:  # the same count without compiling
      with runner._context():
        counts[scan] = flops.traced_flops(runner._train.trace(runner.abstract_state, batch))
  m = config.model
  b, t, d, v = config.batch_size, config.data.pack - 1, m.embed_dim, m.vocab_size
  per_token = m.num_layers * (2 * (3 * d * d + d * d + 2 * d * 4 * d) + 4 * t * d) + 2 * d * v
  assert counts[True] == counts[False] == 3 * b * t * per_token


def test_cpu_peak_is_the_best_library_matmul_and_is_cached(monkeypatch, tmp_path):
  from train import metrics
  monkeypatch.setenv('HOME', str(tmp_path))
  monkeypatch.setattr(metrics, '_measure_matmul_flops', lambda: 2e11)
  monkeypatch.setattr(metrics, '_measure_numpy_matmul_flops', lambda: 3e11)
  assert metrics.peak_flops_per_device() == 3e11 / jax.local_device_count()
  monkeypatch.setattr(metrics, '_measure_numpy_matmul_flops', lambda: 1.0)
  assert metrics.peak_flops_per_device() == 3e11 / jax.local_device_count()  # cached
  assert (tmp_path / '.cache' / 'archzoo' / 'peak_flops.json').exists()
