"""Tensor parallelism four ways (data 2 x tensor 4, 8 simulated devices) for the Transformer
families beyond GPT: the LLaMA-style decoder, T5, BART, ViT and DiT. Each family's tiny
config (4 heads, so that 4 ways divide them) trains 4 steps on one device and on the mesh, in
ONE subprocess for all five (the reference on a 1-device sub-mesh of the same process): the
losses agree to 1e-5, and Megatron's split is checked on the trained arrays: query, key,
value and the MLP's input kernels column-parallel (their heads/width over 'tensor'), the
attention output and the MLP's output kernels row-parallel (their input over 'tensor'), the
vocabulary-parallel embedding and head, every 'heads'/'mlp'/'vocab' axis split 4 ways.

LLaMA keeps its grouped-query attention (4 query heads, 2 key/value heads): 4 ways do not
divide 2 key/value heads, so its run adds ('kv_heads', None) to the sharding rules and its
key/value kernels stay whole on every device (Megatron's and vLLM's replication), while the
others split theirs. (This file replaced a data 4 x tensor 2 run of the same families
at their 2-head sizes: 4 ways split everything 2 ways did, and one subprocess does both.)
"""

import json
import subprocess
import sys

import pytest

from conftest import REPO, cli_env

STEPS = 4
MESH = dict(data=2, tensor=4)
# family -> (config spec under configs/, overrides as `--config.` takes them, whole fields)
FAMILIES = {
    'llama': ('llama_pydoc.py:variant=tiny', {}, {}),
    # T5 on bart_pydoc's denoising task (so no other dataset is prepared) at BART's tiny sizes
    't5': ('bart_pydoc.py:variant=tiny', {'model_name': 'sequence.t5'}, {
        'model': dict(vocab_size=260, num_encoder_layers=1, num_decoder_layers=1, num_heads=4,
                      embed_dim=32, head_dim=8, mlp_dim=64)}),
    'bart': ('bart_pydoc.py:variant=tiny', {'model.num_heads': 4}, {}),
    'vit': ('vit_digits.py:tiny', {'batch_size': 8, 'model.num_heads': 4}, {}),
    'dit': ('dit_digits.py:tiny', {'model.num_heads': 4}, {}),
}
# LLaMA's 2 key/value heads stay whole under 4 tensor ways
EXTRA_RULES = {'llama': [['kv_heads', None]]}

TRAIN = """
import json, sys
import flax.linen as nn
import jax
import ml_collections
from train import config_lib, core, loop, mesh as mesh_lib

families, extra_rules, mesh, steps, root = json.loads(sys.argv[1])
names = tuple(name for name, _ in mesh_lib.DEFAULT_AXES)
one = jax.make_mesh((1,) * len(names), names, devices=jax.devices()[:1],
                    axis_types=(jax.sharding.AxisType.Auto,) * len(names))
make_mesh = mesh_lib.make_mesh


def config_of(family, mesh):
  spec, overrides, fields = families[family]
  config = config_lib.load('configs/' + spec)
  with config.unlocked():
    for key, value in fields.items():
      setattr(config, key, ml_collections.ConfigDict(value))
    config.sharding_rules = tuple(config.sharding_rules) + tuple(
        (k, v) for k, v in extra_rules.get(family, ()))
  for key, value in dict(overrides, total_steps=steps, log_every=1, eval_every=0,
                         ckpt_every=0, **{'mesh.' + a: s for a, s in mesh.items()}).items():
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
for family in families:
  mesh_lib.make_mesh = lambda config: one
  reference, _ = train(config_of(family, {}), f'{root}/{family}_one')
  mesh_lib.make_mesh = make_mesh
  config = config_of(family, mesh)
  losses, run = train(config, f'{root}/{family}_tp')
  task = core.load_task(config)
  boxed = jax.eval_shape(task.init, jax.random.key(0), task.example_batch(1))['params']
  logical = jax.tree.leaves(nn.get_partition_spec(boxed),
                            is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
  arrays = jax.tree_util.tree_flatten_with_path(run.state.params)[0]
  assert len(logical) == len(arrays), (len(logical), len(arrays))
  params = {}
  for names_, (path, array) in zip(logical, arrays):
    spec = list(array.sharding.spec) + [None] * (array.ndim - len(array.sharding.spec))
    params['/'.join(str(getattr(k, 'key', k)) for k in path)] = dict(
        names=[n for n in names_] + [None] * (array.ndim - len(names_)),
        tensor=['tensor' in ((a,) if isinstance(a, str) else tuple(a or ())) for a in spec],
        shape=list(array.shape), shard=list(array.sharding.shard_shape(array.shape)))
  out[family] = dict(one=reference, tp=losses, params=params)
print(json.dumps(out))
"""


@pytest.fixture(scope='module')
def trained(tmp_path_factory, data_dir):
  root = tmp_path_factory.mktemp('tp4')
  proc = subprocess.run([sys.executable, '-c', TRAIN,
                         json.dumps([FAMILIES, EXTRA_RULES, MESH, STEPS, str(root)])],
                        cwd=REPO, capture_output=True, text=True,
                        env=cli_env(data_dir, devices=8), timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def _split_dims(param):
  """The dimensions of a trained array split 4 ways over 'tensor'."""
  return [d for d, (on, size, shard) in enumerate(zip(param['tensor'], param['shape'],
                                                      param['shard']))
          if on and shard * MESH['tensor'] == size]


def _one(params, suffix):
  """The one parameter whose path ends with `suffix`."""
  found = [k for k in params if k == suffix or k.endswith('/' + suffix)]
  assert len(found) == 1, (suffix, sorted(params))
  return params[found[0]]


# family -> (an attention module's path ending, an MLP's, the embedding's (or None))
MODULES = {
    'llama': ('layers_0/self_attn', 'layers_0/mlp', 'embed_tokens/embedding'),
    't5': ('decoder/layers_0/self_attn', 'decoder/layers_0/mlp', 'shared/embedding'),
    'bart': ('decoder/layers_0/self_attn', 'decoder/layers_0/mlp', 'shared/embedding'),
    'vit': ('encoder/layers_0/self_attn', 'encoder/layers_0/mlp', None),
    'dit': ('block0/attn', 'block0/mlp', None),
}


@pytest.mark.parametrize('family', list(FAMILIES))
def test_data2_tensor4_gives_the_losses_of_one_device_on_split_kernels(family, trained):
  result, params = trained[family], trained[family]['params']
  assert len(result['one']) == STEPS and len(result['tp']) == STEPS
  assert len(set(result['one'])) > 1  # the model trains
  for step, (want, got) in enumerate(zip(result['one'], result['tp']), 1):
    assert got == pytest.approx(want, rel=1e-5), (family, step)
  print(f'{family}: max relative loss difference over {STEPS} steps ' + format(max(
      abs(a - b) / abs(a) for a, b in zip(result['one'], result['tp'])), '.2g'))
  attn, mlp, embed = MODULES[family]
  # Megatron's column/row split: (embed, heads, kv) and (embed, mlp) split on their outputs,
  # (heads, kv, embed) and (mlp, embed) on their inputs; the 4 heads on one each
  assert _split_dims(_one(params, f'{attn}/query/kernel')) == [1]
  assert _one(params, f'{attn}/query/kernel')['shard'][1] == 1
  assert _split_dims(_one(params, f'{attn}/out/kernel')) == [0]
  kv_split = [] if family in EXTRA_RULES else [1]
  for name in ('key', 'value'):
    kernel = _one(params, f'{attn}/{name}/kernel')
    assert kernel['names'][1] == 'kv_heads' and _split_dims(kernel) == kv_split, (name, kernel)
  assert _split_dims(_one(params, f'{mlp}/wi/kernel')) == [1]
  assert _split_dims(_one(params, f'{mlp}/wo/kernel')) == [0]
  if embed:  # the vocabulary-parallel embedding
    assert _one(params, embed)['names'][0] == 'vocab' and _split_dims(_one(params, embed)) == [0]
  # and every heads, MLP and vocabulary axis of the state, wherever it is
  for path, param in params.items():
    for dim, name in enumerate(param['names']):
      if name in ('heads', 'mlp', 'vocab'):
        assert dim in _split_dims(param), (path, param)


def test_key_value_heads_a_tensor_axis_does_not_divide_are_one_line_or_replicated():
  """LLaMA tiny's 2 key/value heads under 4 tensor ways: by default the one-line error
  names them and their logical axis; with ('kv_heads', None) they stay whole while the
  query heads split (shardings from the abstract state on an abstract mesh: no devices)."""
  import jax
  from conftest import load_config
  from train import core, mesh as mesh_lib
  from train.errors import UserError
  config = load_config('llama_pydoc.py:variant=tiny')
  task = core.load_task(config)
  boxed = jax.eval_shape(task.init, jax.random.key(0), task.example_batch(1))
  names = tuple(name for name, _ in mesh_lib.DEFAULT_AXES)
  mesh = jax.sharding.AbstractMesh(tuple(MESH.get(n, 1) for n in names), names)
  with pytest.raises(UserError) as error:
    mesh_lib.logical_shardings(boxed, mesh, config)
  assert str(error.value).startswith(
      "config.mesh: params/layers_0/self_attn/key/kernel has size 2 in dimension 1 "
      "(logical axis 'kv_heads'), which mesh axis tensor of size 4 does not divide")
  with config.unlocked():
    config.sharding_rules = tuple(config.sharding_rules) + (('kv_heads', None),)
  attn = mesh_lib.logical_shardings(boxed, mesh, config)['params']['layers_0']['self_attn']
  assert tuple(attn['key']['kernel'].spec) == ('fsdp', None, None)
  assert tuple(attn['query']['kernel'].spec) == ('fsdp', 'tensor', None)
  assert tuple(attn['out']['kernel'].spec) == ('tensor', None, 'fsdp')
