"""Pipeline parallelism (arch/layers/pipeline.py): GPipe's schedule, the pipelined stack
against the plain scanned one, training on 8 simulated devices against one device with
exact resume, and the one-line errors."""

import json
import shutil
import subprocess
import sys

import flax.linen as nn
import jax
import numpy as np
import pytest

from arch.layers import pipeline
from arch.sequence import gpt
from arch.task import ConfigError
from conftest import REPO, assert_same_states, cli_env, load_config, read_metrics, \
    restored_states, run_cli, run_train, run_trains

STEPS = 20
# GPT tiny with 4 layers in a scanned stack, so that 2 and 4 stages divide them.
GPT = ['--config', 'configs/gpt_pydoc.py:variant=tiny', '--config.model.num_layers=4',
       '--config.model.scan_layers=True']
MESHES = {
    'pp2_dp4': dict(stage=2, data=4),  # default microbatches (2S = 4): 2 rows each
    'pp4_dp2': dict(stage=4, data=2, microbatches=4),
}


@pytest.mark.parametrize('stages, microbatches', [(2, 2), (2, 8), (3, 5), (4, 4), (4, 16)])
def test_schedule_takes_each_microbatch_through_the_stages_in_order(stages, microbatches):
  table = pipeline.schedule(stages, microbatches)
  assert len(table) == pipeline.ticks(stages, microbatches) == stages + microbatches - 1
  for m in range(microbatches):  # stage s holds microbatch m at tick m + s, nowhere else
    assert [(t, s) for t, row in enumerate(table) for s, x in enumerate(row) if x == m] == \
        [(m + s, s) for s in range(stages)]
  idle = sum(x is None for row in table for x in row)
  assert idle == stages * (stages - 1)
  assert pipeline.bubble_fraction(stages, microbatches) == pytest.approx(
      idle / (stages * len(table)))
  assert pipeline.bubble_fraction(4, 4) == pytest.approx(3 / 7)
  assert pipeline.bubble_fraction(4, 16) == pytest.approx(3 / 19)


FORWARD = """
import json
import flax.linen as nn
import jax, jax.numpy as jnp, numpy as np
from arch.sequence import gpt
from train import config_lib, mesh as mesh_lib
rules = config_lib.base().sharding_rules
tokens = jax.random.randint(jax.random.key(0), (8, 12), 0, 50)
out = {}
for label, axes, m in (('pp4_dp2', dict(data=2, stage=4), 4),
                       ('pp2_dp2_tp2', dict(data=2, stage=2, tensor=2), 2)):
  config = config_lib.base()
  config.mesh.update(axes)
  model = gpt.Model(vocab_size=50, num_layers=4, num_heads=2, embed_dim=16, max_length=16,
                    positions='rope', scan_layers=True, pipeline_microbatches=m)
  params = nn.meta.unbox(model.init(jax.random.key(1), tokens)['params'])
  plain = model.apply({'params': params}, tokens)
  apply = jax.jit(lambda p: model.apply({'params': p}, tokens))
  with jax.set_mesh(mesh_lib.make_mesh(config)), nn.logical_axis_rules(rules):
    jaxpr = str(jax.make_jaxpr(apply)(params))
    piped = apply(params)
  out[label] = dict(err=float(np.max(np.abs(piped - plain) / (np.abs(plain) + 1e-6))),
                    scale=float(np.max(np.abs(plain))),
                    ticks=[int(n) for n in __import__('re').findall(r'length=(\\d+)', jaxpr)],
                    ppermute=jaxpr.count('ppermute'),
                    plain_ppermute=str(jax.make_jaxpr(apply)(params)).count('ppermute'))
print(json.dumps(out))
"""


def test_pipelined_forward_equals_the_plain_scanned_stack(tmp_path):
  # The same params through GPipe (4 stages x 4 microbatches; 2 stages x 2 with a tensor
  # axis) and through the unpipelined scan (no mesh): the same logits, a tick scan of
  # S + M - 1 ticks holding a scan over each stage's L/S layers, and a ppermute.
  proc = subprocess.run([sys.executable, '-c', FORWARD], cwd=REPO, capture_output=True,
                        text=True, env=cli_env(tmp_path, devices=8), timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  for label, (stages, m) in (('pp4_dp2', (4, 4)), ('pp2_dp2_tp2', (2, 2))):
    r = out[label]
    assert r['scale'] > 0.1 and r['err'] < 1e-4, (label, r)
    assert stages + m - 1 in r['ticks'] and 4 // stages in r['ticks'], (label, r)
    assert r['ppermute'] >= 1 and r['plain_ppermute'] == 0, (label, r)


def _abstract(model, tokens, stages, train=False):
  """Traces model.apply under an abstract mesh with `stages` on the stage axis."""
  from train import config_lib
  mesh = jax.sharding.AbstractMesh((2, 1, 1, 1, 1, stages),
                                   ('data', 'fsdp', 'tensor', 'expert', 'sequence', 'stage'))
  with jax.sharding.use_abstract_mesh(mesh), \
      nn.logical_axis_rules(config_lib.base().sharding_rules):
    variables = jax.eval_shape(model.init, jax.random.key(0), tokens)
    return jax.eval_shape(lambda v: model.apply(v, tokens), variables)


def test_stacks_a_pipeline_cannot_split_are_one_line_errors():
  kw = dict(vocab_size=50, num_heads=2, embed_dim=16, max_length=16)
  tokens = jax.ShapeDtypeStruct((8, 12), np.int32)
  # a stack the stages divide traces (the shapes are the plain model's)
  assert _abstract(gpt.Model(**kw, num_layers=4, scan_layers=True), tokens, 4).shape == \
      (8, 12, 50)
  with pytest.raises(ConfigError, match='6 layers do not split into 4 stages'):
    _abstract(gpt.Model(**kw, num_layers=6, scan_layers=True), tokens, 4)
  with pytest.raises(ConfigError, match='over 2 stages needs the stacked layers.*'
                                        'scan_layers=True'):
    _abstract(gpt.Model(**kw, num_layers=4), tokens, 2)
  with pytest.raises(ConfigError, match='a batch of 6 rows does not split into 4 '
                                        'microbatches'):
    _abstract(gpt.Model(**kw, num_layers=4, scan_layers=True),
              jax.ShapeDtypeStruct((6, 12), np.int32), 2)  # default M = 2 x 2 stages
  with pytest.raises(ConfigError, match='microbatches=-1'):
    _abstract(gpt.Model(**kw, num_layers=4, scan_layers=True, pipeline_microbatches=-1),
              tokens, 2)


def test_a_mesh_the_stack_does_not_divide_is_one_line_from_the_cli(tmp_path, data_dir):
  proc = run_cli(['--config', 'configs/gpt_pydoc.py:variant=tiny', '--workdir',
                  tmp_path / 'w', '--config.model.scan_layers=True', '--config.total_steps=1',
                  '--config.mesh.stage=4', '--config.mesh.data=2'], data_dir, devices=8)
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = [l for l in proc.stderr.strip().splitlines() if not l.startswith('WARNING')]
  assert lines == ['error: pipeline: 2 layers do not split into 4 stages (mesh.stage); '
                   'choose a stage count that divides 2'], proc.stderr[-2000:]


def test_a_stage_axis_for_a_model_without_a_scanned_stack_is_one_line(tmp_path, data_dir):
  """A CNN has no layer stack to split: stage=2 would run the same step on both stages."""
  proc = run_cli(['--config', 'configs/resnet_digits.py:tiny', '--workdir', tmp_path / 'w',
                  '--config.total_steps=1', '--config.mesh.stage=2'], data_dir, devices=8)
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = [l for l in proc.stderr.strip().splitlines() if not l.startswith('WARNING')]
  assert len(lines) == 1 and lines[0].startswith('error: config.mesh.stage=2 splits a '
                                                 'scanned layer stack'), proc.stderr[-2000:]


def _args(workdir, mesh=None, steps=STEPS):
  mesh = dict(mesh or {})
  extra = [f'--config.model.pipeline_microbatches={mesh.pop("microbatches")}'] \
      if 'microbatches' in mesh else []
  extra += [f'--config.mesh.{axis}={size}' for axis, size in mesh.items()]
  return [*GPT, '--workdir', workdir, f'--config.total_steps={steps}', '--config.log_every=1',
          '--config.eval_every=0', '--config.ckpt_every=10', *extra]


def _losses(workdir):
  return {s: r['loss'] for s, r in read_metrics(workdir).items()}


def test_pipeline_trains_like_one_device_and_resumes_exactly(tmp_path, data_dir):
  from train import core
  proc = run_train(_args(tmp_path / 'one'), data_dir)  # one device, in this process
  assert proc.returncode == 0, proc.stderr[-3000:]
  one = _losses(tmp_path / 'one')
  assert sorted(one) == list(range(1, STEPS + 1))
  run_trains([_args(tmp_path / label, mesh) for label, mesh in MESHES.items()], data_dir)
  for label in MESHES:
    losses = _losses(tmp_path / label)
    for step in one:
      assert losses[step] == pytest.approx(one[step], rel=1e-5), (label, step)
  config = load_config('gpt_pydoc.py:variant=tiny', model__num_layers=4,
                       model__scan_layers=True)
  # the checkpoints of 8 devices restored onto this process's one device
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device),
                          core.abstract_state(config, core.load_task(config)))
  states = restored_states(abstract, [tmp_path / name for name in ('one', *MESHES)], STEPS)
  for state in states[1:]:
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(states[0].params),
                    strict=True):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  # Exact resume under PP=2 and PP=4: step 10's checkpoint alone, in a new process,
  # continues to the straight run's losses and final state bit for bit.
  for label in MESHES:
    shutil.copytree(tmp_path / label / 'checkpoints' / '10',
                    tmp_path / f'{label}_resumed' / 'checkpoints' / '10')
  run_trains([_args(tmp_path / f'{label}_resumed', mesh) for label, mesh in MESHES.items()],
             data_dir)
  for label in MESHES:
    resumed = _losses(tmp_path / f'{label}_resumed')
    straight = read_metrics(tmp_path / label)
    assert resumed == {s: straight[s]['loss'] for s in range(11, STEPS + 1)}, label
    assert_same_states(*restored_states(
        abstract, [tmp_path / label, tmp_path / f'{label}_resumed'], STEPS))


def test_summary_reports_the_bubble_of_the_mesh(tmp_path):
  proc = run_cli([*GPT, '--config.mesh.stage=4', '--config.mesh.data=2',
                  '--config.model.pipeline_microbatches=6', '--memory'], tmp_path, devices=8,
                 module='train.summary')
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert 'pipeline: 4 stages x 6 microbatches, bubble (S-1)/(M+S-1) = 0.333' in proc.stdout
