"""One CNN under every form of parallelism on 8 simulated devices: ConvMixer under FSDP=8
(its scanned blocks' stacked params split), tensor (DP=2 x TP=4: its channels over 'tensor'),
its scanned blocks as a GPipe pipeline (PP=2 x DP=4, PP=4 x DP=2) and its maps' rows split
4 ways (DP=2 x SP=4) trains 20 steps to one device's losses and resumes exactly (ResNet,
which cannot pipeline, does the five meshes but the pipelines in tests/test_scaleout.py); the
pipeline's running-statistics hook against a direct computation; ResNet's split rows
exchange halos (collective-permutes in the compiled step)."""

from conftest import check_meshes_resume_like_one_device

STEPS = 20
SPEC = 'convmixer_digits.py:tiny'
# pipeline_microbatches=1: each block's BatchNorm sees the whole batch, as on one device
# (with M > 1 it normalises by each microbatch's statistics: another function, by design)
# (plain data parallelism and data x FSDP x tensor, which ResNet's five meshes in
# tests/test_scaleout.py also cover, are not repeated here)
MESHES = {
    'fsdp8': {'mesh.data': 1, 'mesh.fsdp': 8},
    'dp2_tp4': {'mesh.data': 2, 'mesh.tensor': 4},
    'pp2_dp4': {'mesh.stage': 2, 'mesh.data': 4, 'model.pipeline_microbatches': 1},
    'pp4_dp2': {'mesh.stage': 4, 'mesh.data': 2, 'model.pipeline_microbatches': 1},
    'dp2_sp4': {'mesh.data': 2, 'mesh.sequence': 4},
}

TAIL = r"""
import flax.linen as nn
import jax, jax.numpy as jnp, numpy as np
from train import core, mesh as mesh_lib, runner as runner_lib

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
for label, mesh in (('dp8', {'mesh.data': 8}), ('dp2_sp4', {'mesh.data': 2, 'mesh.sequence': 4})):
  config = config_of('configs/resnet_digits.py:tiny', mesh)
  task = core.load_task(config)
  r = runner_lib.Runner(config, task, mesh_lib.make_mesh(config))
  batch = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=r.batch_sharding),
                       task.example_batch(config.batch_size))
  counts[label] = r.lower(r.abstract_state, batch).compile().as_text().count('collective-permute(')
out['permutes'] = counts
"""


def test_convmixer_on_every_mesh_trains_and_resumes_like_one_device(tmp_path, data_dir):
  out = check_meshes_resume_like_one_device(SPEC, MESHES, tmp_path, data_dir, steps=STEPS,
                                            tail=TAIL)
  g = out['gpipe']
  assert g['scale'] > 0.01 and g['y'] < 1e-4 * g['scale'] and g['mean'] < 1e-6, g
  assert out['permutes']['dp8'] == 0 and out['permutes']['dp2_sp4'] > 0, out['permutes']
