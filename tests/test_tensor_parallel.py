"""Tensor parallelism (Megatron's column/row split of attention heads and MLP widths, the
vocabulary-parallel embedding and head) for the Transformer families beyond GPT: LLaMA,
T5, BART, ViT and DiT. Each family's tiny config trains 4 steps on one device and on a
data 4 x tensor 2 mesh of 8 simulated devices, in ONE subprocess for all five (compiles
dominate; the reference run uses a 1-device sub-mesh of the same process); the losses
agree to 1e-5 and every parameter with a 'heads', 'mlp' or 'vocab' axis of the trained
state is really split over 'tensor', so the test cannot pass with tensor parallelism off.

The sizes are the tiny configs' own except T5, which runs on bart_pydoc's denoising task
(as moe_pydoc's switch-base-8 does, so no other dataset is prepared) at BART's tiny sizes.
DiT's label table (num_classes + 1 rows, e.g. 1,001) is replicated ('classes').
"""

import json
import subprocess
import sys

import pytest

from conftest import REPO, cli_env

STEPS = 4
MESH = dict(data=4, tensor=2)
# family -> (config spec under configs/, field overrides as `--config.` takes them)
FAMILIES = {
    'llama': ('llama_pydoc.py:variant=tiny', {}),
    't5': ('bart_pydoc.py:variant=tiny', {
        'model_name': 'sequence.t5',
        'model': dict(vocab_size=260, num_encoder_layers=1, num_decoder_layers=1, num_heads=2,
                      embed_dim=32, head_dim=16, mlp_dim=64)}),
    'bart': ('bart_pydoc.py:variant=tiny', {}),
    'vit': ('vit_digits.py:tiny', {'batch_size': 8}),
    'dit': ('dit_digits.py:tiny', {}),
}

TRAIN = """
import json, sys
import flax.linen as nn
import jax
import ml_collections
import numpy as np
from train import config_lib, core, loop, mesh as mesh_lib

families, mesh, steps, root = json.loads(sys.argv[1])
# The reference: every axis of size 1, on the first device only.
names = tuple(name for name, _ in mesh_lib.DEFAULT_AXES)
one = jax.make_mesh((1,) * len(names), names, devices=jax.devices()[:1],
                    axis_types=(jax.sharding.AxisType.Auto,) * len(names))
make_mesh = mesh_lib.make_mesh


def config_of(spec, overrides, mesh):
  config = config_lib.load('configs/' + spec)
  for key, value in overrides.items():
    if isinstance(value, dict):  # a whole field replaced (T5's model on BART's task)
      setattr(config, key, ml_collections.ConfigDict(value))
    else:
      config_lib.override(config, key, str(value))
  for key, value in dict(total_steps=steps, log_every=1, eval_every=0, ckpt_every=0,
                         **{'mesh.' + a: s for a, s in mesh.items()}).items():
    config_lib.override(config, key, str(value))
  for name in (config.get('evals') or {}):
    config.evals[name].every = -1
  return config


def train(config, workdir):
  run = loop.Run(config, workdir)
  try:
    for step in range(steps):
      run.train_step(step)
      run.log(step + 1)
    with open(workdir + '/metrics.jsonl') as f:
      losses = [r['loss'] for r in map(json.loads, f) if r['split'] == 'train']
    return losses, run
  finally:
    run.close()


out = {}
for family, (spec, overrides) in families.items():
  mesh_lib.make_mesh = lambda config: one
  reference, _ = train(config_of(spec, overrides, {}), f'{root}/{family}_one')
  mesh_lib.make_mesh = make_mesh
  config = config_of(spec, overrides, mesh)
  losses, run = train(config, f'{root}/{family}_tp')
  # Which dimension of each parameter has a tensor-parallel logical axis, and whether
  # the trained array is split over 'tensor' there.
  task = core.load_task(config)
  boxed = jax.eval_shape(task.init, jax.random.key(0), task.example_batch(1))['params']
  logical = jax.tree.leaves(nn.get_partition_spec(boxed),
                            is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
  arrays = jax.tree_util.tree_flatten_with_path(run.state.params)[0]
  assert len(logical) == len(arrays), (len(logical), len(arrays))
  split = {}
  for spec_, (path, array) in zip(logical, arrays):
    for dim, name in enumerate(spec_):
      if name in ('heads', 'mlp', 'vocab'):
        axes = array.sharding.spec[dim] if dim < len(array.sharding.spec) else None
        axes = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
        split[jax.tree_util.keystr(path) + f'[{dim}]:{name}'] = (
            'tensor' in axes
            and array.sharding.shard_shape(array.shape)[dim] * 2 == array.shape[dim])
  out[family] = dict(one=reference, tp=losses, split=split)
print(json.dumps(out))
"""


@pytest.fixture(scope='module')
def trained(tmp_path_factory, data_dir):
  root = tmp_path_factory.mktemp('tp')
  proc = subprocess.run([sys.executable, '-c', TRAIN,
                         json.dumps([FAMILIES, MESH, STEPS, str(root)])], cwd=REPO,
                        capture_output=True, text=True, env=cli_env(data_dir, devices=8),
                        timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize('family', list(FAMILIES))
def test_tensor_parallel_gives_the_losses_of_one_device(family, trained):
  result = trained[family]
  assert len(result['one']) == STEPS and len(result['tp']) == STEPS
  assert len(set(result['one'])) > 1  # the model trains (ViT's zero head starts at ln 10)
  for step, (want, got) in enumerate(zip(result['one'], result['tp']), 1):
    assert got == pytest.approx(want, rel=1e-5), (family, step)
  split = result['split']
  # attention heads and MLP widths are present and split (so are vocabularies, where any)
  assert any(':heads' in k for k in split) and any(':mlp' in k for k in split), sorted(split)
  assert all(split.values()), sorted(k for k, v in split.items() if not v)
