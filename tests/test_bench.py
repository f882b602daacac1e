"""train.bench: the training step timed on the config's data or on random data of its shapes
(examples/bench_torch.py's archzoo side, for configs whose dataset is not offline)."""

import json

import numpy as np
import pytest

from conftest import load_config


def test_synthetic_batches_have_the_tasks_shapes_and_valid_values():
  from train import core
  from train.bench import synthetic_batch
  config = load_config('resnet_imagenet.py:variant=18')
  task = core.load_task(config)
  batch = synthetic_batch(task, 3)
  want = task.example_batch(3)
  assert {k: (v.shape, v.dtype) for k, v in batch.items()} == {
      k: (v.shape, v.dtype) for k, v in want.items()}
  assert batch['image'].shape == (3, 224, 224, 3) and batch['image'].std() > 50  # random bytes
  assert (batch['label'] == 0).all()  # a valid class for any head


def test_bench_times_the_loops_step_on_random_data():
  from train.bench import bench_training
  config = load_config('lenet_digits.py', batch_size=8)
  out = bench_training(config, 2, synthetic=True)
  assert out['step_ms'] > 0 and out['compile_s'] > 0 and out['init_s'] > 0
  assert out['examples_per_sec'] == pytest.approx(8 * 1e3 / out['step_ms'])
  assert out['flops_per_step'] > 0 and 0 < out['mfu'] < 1
  assert np.isfinite(list(out.values())).all()


def test_lm_budget_plans_the_steps_that_fit_and_reads_the_last_eval(tmp_path):
  from examples import lm_budget
  assert lm_budget.plan(0.5, 10) == dict(total_steps=1200, warmup_steps=100)
  assert lm_budget.plan(2.0, 10) == dict(total_steps=300, warmup_steps=50)
  assert lm_budget.plan(1e3, 1) == dict(total_steps=1, warmup_steps=0)
  rows = [dict(step=200, split='train', loss=2.0), dict(step=200, split='validation', loss=1.9),
          dict(step=400, split='train', loss=1.5), dict(step=400, split='validation', loss=1.4),
          dict(step=400, split='train', loss=1.3)]
  (tmp_path / 'metrics.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
  assert lm_budget.final_eval(str(tmp_path)) == dict(step=400, split='validation', loss=1.4)


HLO = '''HloModule m

%fused_t (p0: f32[4,8]) -> f32[8,4] {
  %p0 = f32[4,8]{1,0} parameter(0)
  %transpose.1 = f32[8,4]{0,1} transpose(%p0), dimensions={1,0}
  ROOT %copy.1 = f32[8,4]{1,0} copy(%transpose.1)
}

%fused_e (p0: f32[8,4]) -> f32[8,4] {
  %p0 = f32[8,4]{1,0} parameter(0)
  ROOT %tanh.1 = f32[8,4]{1,0} tanh(%p0)
}

ENTRY %main (x: f32[4,8], w: f32[4,4]) -> f32[8,4] {
  %x = f32[4,8]{1,0} parameter(0)
  %w = f32[4,4]{1,0} parameter(1)
  %copy_fusion = f32[8,4]{1,0} fusion(%x), kind=kLoop, calls=%fused_t
  %dot.2 = f32[8,4]{1,0} dot(%copy_fusion, %w), lhs_contracting_dims={1}, rhs_contracting_dims={0}
  ROOT %tanh_fusion = f32[8,4]{1,0} fusion(%dot.2), kind=kLoop, calls=%fused_e
}
'''


def test_hlo_ops_name_each_instructions_kind_and_shape():
  from train.bench import hlo_ops
  ops = hlo_ops(HLO)
  assert ops['copy_fusion'] == ('fusion:transpose', 'f32[8,4]{1,0}')  # a copy that transposes
  assert ops['tanh_fusion'] == ('fusion:tanh', 'f32[8,4]{1,0}')
  assert ops['dot.2'] == ('dot', 'f32[8,4]{1,0}')


def test_profile_times_the_compiled_steps_operations(tmp_path):
  import jax
  import jax.numpy as jnp
  from train.bench import top_ops
  a, b = jnp.ones((256, 512)), jnp.ones((512, 128))
  compiled = jax.jit(lambda a, b: jnp.tanh(a @ b)).lower(a, b).compile()
  with jax.profiler.trace(str(tmp_path)):
    for _ in range(3):
      jax.block_until_ready(compiled(a, b))
  rows = top_ops(str(tmp_path), compiled.as_text(), 3)
  assert rows, 'no operation of the compiled function in the trace'
  kinds = [r['kind'] for r in rows]
  assert any('dot' in k for k in kinds), kinds  # the matmul (a library fusion or a dot)
  assert all(r['ms'] > 0 for r in rows) and [r['ms'] for r in rows] == sorted(
      (r['ms'] for r in rows), reverse=True)
  assert all(r['count'] == 1 for r in rows)  # once per call
