"""One CNN under every form of parallelism on 8 simulated devices: ConvMixer under data
(DP=8), FSDP=8, tensor (DP=2 x TP=4, DP=2 x FSDP=2 x TP=2: its channels over 'tensor'),
its scanned blocks as a GPipe pipeline (PP=2 x DP=4, PP=4 x DP=2) and its maps' rows split
4 ways (DP=2 x SP=4) trains 20 steps to one device's losses and resumes exactly (ResNet,
which cannot pipeline, does the five meshes but the pipelines in tests/test_scaleout.py); the
pipeline's running-statistics hook against a direct computation; ResNet's split rows
exchange halos (collective-permutes in the compiled step)."""

import json
import subprocess
import sys

import pytest

from conftest import REPO, cli_env, read_metrics, train_spec

STEPS = 20
SPEC = 'convmixer_digits.py:tiny'
RUN = dict(total_steps=STEPS, log_every=1, eval_every=0, ckpt_every=10)
# pipeline_microbatches=1: each block's BatchNorm sees the whole batch, as on one device
# (with M > 1 it normalises by each microbatch's statistics: another function, by design)
MESHES = {
    'dp8': dict(mesh__data=8),
    'fsdp8': dict(mesh__data=1, mesh__fsdp=8),
    'dp2_tp4': dict(mesh__data=2, mesh__tensor=4),
    'dp2_fsdp2_tp2': dict(mesh__data=2, mesh__fsdp=2, mesh__tensor=2),
    'pp2_dp4': dict(mesh__stage=2, mesh__data=4, model__pipeline_microbatches=1),
    'pp4_dp2': dict(mesh__stage=4, mesh__data=2, model__pipeline_microbatches=1),
    'dp2_sp4': dict(mesh__data=2, mesh__sequence=4),
}

SCRIPT = r"""
import json, os, shutil, sys
import flax.linen as nn
import jax, jax.numpy as jnp, numpy as np
from train import config_lib, core, loop, mesh as mesh_lib, runner as runner_lib

data_dir, root, spec, run, meshes = sys.argv[1:4] + [json.loads(a) for a in sys.argv[4:6]]
out = {}


def config_of(path, overrides):
  config = config_lib.load(path)
  for key, value in {'data.data_dir': data_dir, **overrides}.items():
    config_lib.override(config, key.replace('__', '.'), str(value))
  return config


def train_losses(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [(r['step'], r['loss']) for r in map(json.loads, f) if r['split'] == 'train']


for label, mesh in meshes.items():
  # straight, then a copy without its last checkpoint resumed from step 10
  config = config_of(f'configs/{spec}', {**run, **mesh})
  straight, resumed = os.path.join(root, label), os.path.join(root, label + '_resumed')
  loop.train_and_evaluate(config, straight)
  shutil.copytree(straight, resumed)
  shutil.rmtree(os.path.join(resumed, 'checkpoints', str(run['total_steps'])))
  loop.train_and_evaluate(config_of(f'configs/{spec}', {**run, **mesh}), resumed)
  out[label] = train_losses(resumed)

# gpipe's updates: a layer that centres its rows by their mean and reports that mean;
# 4 stages x 2 microbatches (rows m, m+2, ...) against the same layers run microbatch by
# microbatch in numpy, the reported means averaged over the microbatches.
from arch.layers import pipeline
rng = np.random.default_rng(0)
w_LD, x_BD = rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=(8, 3)).astype(np.float32)
y_ref, mean_ref = np.zeros_like(x_BD), np.zeros_like(w_LD)
for m in range(2):
  x = x_BD[m::2]
  for layer in range(4):
    mean_ref[layer] += x.mean(0) / 2
    x = (x - x.mean(0)) * w_LD[layer]
  y_ref[m::2] = x
mesh = jax.make_mesh((2, 4), ('data', 'stage'), axis_types=(jax.sharding.AxisType.Auto,) * 2)
layer_fn = lambda p, x, _, __: ((x - x.mean(0)) * p['w'], {'mean': x.mean(0)})
with jax.set_mesh(mesh), nn.logical_axis_rules((('batch', 'data'), ('layers', 'stage'))):
  y, upd = jax.jit(lambda w, x: pipeline.gpipe(
      layer_fn, {'w': w}, x, axis='stage', stages=4, microbatches=2, updates=True,
      logical=('batch', None)))(w_LD, x_BD)
out['gpipe'] = dict(y=float(np.abs(y - y_ref).max()), scale=float(np.abs(y_ref).max()),
                    mean=float(np.abs(upd['mean'] - mean_ref).max()))

# ResNet's rows over 4 devices: the compiled step exchanges halos (collective-permute),
# which data parallelism alone does not
counts = {}
for label, mesh in (('dp8', dict(mesh__data=8)), ('dp2_sp4', dict(mesh__data=2, mesh__sequence=4))):
  config = config_of('configs/resnet_digits.py:tiny', mesh)
  task = core.load_task(config)
  r = runner_lib.Runner(config, task, mesh_lib.make_mesh(config))
  batch = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=r.batch_sharding),
                       task.example_batch(config.batch_size))
  counts[label] = r.lower(r.abstract_state, batch).compile().as_text().count('collective-permute(')
out['permutes'] = counts
print(json.dumps(out))
"""


def test_convmixer_on_every_mesh_trains_and_resumes_like_one_device(tmp_path, data_dir):
  train_spec(SPEC, tmp_path / 'one', data_dir, **RUN)
  one = {s: r['loss'] for s, r in read_metrics(tmp_path / 'one').items()}
  assert sorted(one) == list(range(1, STEPS + 1))
  meshes = {label: {k.replace('__', '.'): v for k, v in mesh.items()}
            for label, mesh in MESHES.items()}
  proc = subprocess.run([sys.executable, '-c', SCRIPT, data_dir, str(tmp_path), SPEC,
                         json.dumps(RUN), json.dumps(meshes)], cwd=REPO, capture_output=True,
                        text=True, env=cli_env(data_dir, devices=8), timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  for label in MESHES:
    logged = out[label]
    # steps 1-20 of the straight run, then 11-20 again from the step-10 checkpoint
    assert [s for s, _ in logged] == list(range(1, STEPS + 1)) + list(range(11, STEPS + 1))
    for step, loss in logged[:STEPS]:
      assert loss == pytest.approx(one[step], rel=1e-5), (label, step)
    assert logged[STEPS:] == logged[10:STEPS], label  # bit for bit
  g = out['gpipe']
  assert g['scale'] > 0.01 and g['y'] < 1e-4 * g['scale'] and g['mean'] < 1e-6, g
  assert out['permutes']['dp8'] == 0 and out['permutes']['dp2_sp4'] > 0, out['permutes']
