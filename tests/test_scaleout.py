"""Scale-out on the one mesh (8 simulated devices): data, FSDP, tensor and sequence
parallelism (GPT's length, ResNet's feature-map rows) give the losses of one device and
resume exactly on each mesh; a mesh that does not divide a sharded dimension is a one-line
error; `train.summary --memory` plans the bytes per device from the state's shardings."""

import json
import subprocess
import sys

import pytest

from conftest import REPO, check_meshes_resume_like_one_device, cli_env, run_cli

# GPT tiny with 4 heads, so that a 4-way tensor axis divides them (the byte vocabulary of
# 260 and the widths 32 and 128 divide too).
GPT = ('gpt_pydoc.py:variant=tiny', {'model.num_heads': 4})
GPT_MESHES = {
    'dp8': {'mesh.data': 8},
    'fsdp8': {'mesh.data': 1, 'mesh.fsdp': 8},
    'dp2_fsdp2_tp2': {'mesh.data': 2, 'mesh.fsdp': 2, 'mesh.tensor': 2},
    'dp2_tp4': {'mesh.data': 2, 'mesh.tensor': 4},
    'dp2_sp4': {'mesh.data': 2, 'mesh.sequence': 4},
}
# The tiny ResNet at widths 8 and 16 (and an 8-channel stem), so that 8 ways divide them.
CNN = ('resnet_digits.py:tiny', {'model.widths': '(8,16)', 'model.stem_features': 8})
# dp2_sp4: the rows of every feature map split 4 ways (arch/layers/spatial.py; 32 and 16
# rows). The CNN pipelines (PP=2 x DP=4, PP=4 x DP=2) are ConvMixer's, tests/test_cnn_parallel.py.
CNN_MESHES = GPT_MESHES  # the same five


def _mesh_args(mesh):
  return [f'--config.mesh.{axis}={size}' for axis, size in mesh.items()]


@pytest.mark.parametrize('name, base, meshes', [('gpt', GPT, GPT_MESHES),
                                                ('cnn', CNN, CNN_MESHES)])
def test_meshes_give_the_losses_of_one_device(name, base, meshes, tmp_path, data_dir):
  """20 steps on each mesh equal one device's losses (1e-5), and each resumes bit for bit
  from its step-10 checkpoint (conftest.check_meshes_resume_like_one_device)."""
  spec, overrides = base
  check_meshes_resume_like_one_device(spec, meshes, tmp_path, data_dir, overrides=overrides)


def test_a_mesh_that_does_not_divide_a_parameter_is_one_line(tmp_path, data_dir):
  proc = run_cli(['--config', 'configs/gpt_pydoc.py:variant=tiny', '--workdir', tmp_path / 'w',
                  '--config.total_steps=1', *_mesh_args(dict(data=2, tensor=4))], data_dir,
                 devices=8)
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = [l for l in proc.stderr.strip().splitlines() if not l.startswith('WARNING')]
  assert len(lines) == 1, proc.stderr[-2000:]
  # the first such parameter: a key projection's 2 heads (query heads split alike)
  assert "self_attn/key/bias has size 2 in dimension 0 (logical axis 'kv_heads')" in lines[0]
  assert 'tensor of size 4' in lines[0] and 'Traceback' not in proc.stderr


PLAN = """
import json, sys
from train import config_lib, summary
out = {}
for label, mesh in json.loads(sys.argv[2]).items():
  config = config_lib.load(sys.argv[1])
  for axis, size in mesh.items():
    config_lib.override(config, f'mesh.{axis}', str(size))
  out[label] = summary.memory_plan(config)['parts']
print(json.dumps(out))
"""


PLAN_MESHES = {'fsdp8': dict(data=1, fsdp=8), 'tp8': dict(data=1, tensor=8),
               'dp8': dict(data=8)}


@pytest.mark.parametrize('spec, count, meshes', [
    ('llama_pydoc.py:variant=llama2-7b', 6_738_415_616, PLAN_MESHES),
    ('resnet_digits.py:variant=50', 23_519_690, PLAN_MESHES),
    # Mixtral's experts over an expert axis of 2 and everything (experts too) over fsdp 4
    ('moe_pydoc.py:variant=mixtral-8x7b', 46_702_792_704,
     dict(PLAN_MESHES, ep2_fsdp4=dict(data=1, expert=2, fsdp=4)))])
def test_memory_plan_splits_the_state_eight_ways(spec, count, meshes, tmp_path):
  """FSDP=8 and TP=8 put an eighth of the parameters and AdamW state on each device (the
  ResNet's convolutions along their output channels, over fsdp and tensor); so does
  Mixtral's expert 2 x fsdp 4, whose experts are 96% of its parameters."""
  proc = subprocess.run([sys.executable, '-c', PLAN, f'configs/{spec}', json.dumps(meshes)],
                        cwd=REPO,
                        capture_output=True, text=True, env=cli_env(tmp_path, devices=8),
                        timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  plans = json.loads(proc.stdout.strip().splitlines()[-1])
  params = count * 4  # float32
  assert sorted(plans) == sorted(meshes)
  for label, parts in plans.items():
    device, whole = (sum(v[i] for k, v in parts.items()
                         if k in ('params', 'optimizer state')) for i in (0, 1))
    assert parts['params'][1] == params
    assert 0 <= whole - 3 * params <= 64  # AdamW's two moments and its step counts
    if label == 'dp8':
      assert device == whole
    else:  # within 10% of an eighth (norm scales stay whole)
      assert whole / 8 <= device <= 1.1 * whole / 8, (label, device / whole)


def test_remat_recomputes_each_block_and_changes_no_number():
  import jax
  import jax.numpy as jnp
  import numpy as np
  from arch.sequence import gpt
  tokens = jax.random.randint(jax.random.key(0), (2, 16), 0, 50)
  results = {}
  for remat in ('', 'block', 'dots'):
    model = gpt.Model(vocab_size=50, num_layers=3, num_heads=2, embed_dim=16, max_length=16,
                      dropout_rate=0.1, remat=remat)
    params = model.init(jax.random.key(1), tokens)['params']

    def loss(p, model=model):
      logits = model.apply({'params': p}, tokens, train=True,
                           rngs={'dropout': jax.random.key(2)})
      return -jnp.mean(jax.nn.log_softmax(logits)[..., 1])

    jaxpr = str(jax.make_jaxpr(jax.grad(loss))(params))
    # one checkpointed call per block (dropout's keys included), none without remat
    assert jaxpr.count('remat') == (3 if remat else 0), remat
    results[remat] = (params, *jax.jit(jax.value_and_grad(loss))(params))
  for remat in ('block', 'dots'):
    for a, b in zip(jax.tree.leaves(results[remat]), jax.tree.leaves(results['']), strict=True):
      np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  with pytest.raises(ValueError, match="unknown remat 'all'"):
    gpt.Model(vocab_size=50, num_layers=1, num_heads=2, embed_dim=16, max_length=16,
              remat='all').init(jax.random.key(1), tokens)


def _remat_family(family, remat):
  """(model, loss of params) of a tiny T5, BART or DiT with `remat`; the loss draws
  dropout (T5, BART) so the recomputed blocks must replay the same masks."""
  import jax
  import jax.numpy as jnp
  from arch.generative import dit
  from arch.sequence import bart, t5
  if family == 'dit':
    model = dit.Model(hidden_dim=16, depth=3, num_heads=2, patch_size=2, num_classes=10,
                      remat=remat)
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 1))
    args = (x, jnp.asarray([3.0, 70.0]), jnp.asarray([1, 10], jnp.int32))
    return model, args, lambda p: jnp.mean(model.apply({'params': p}, *args) ** 2)
  module = {'t5': t5, 'bart': bart}[family]
  model = module.Model(vocab_size=40, num_encoder_layers=2, num_decoder_layers=1,
                       num_heads=2, embed_dim=16, mlp_dim=32, dropout_rate=0.1, remat=remat,
                       **({'head_dim': 8} if family == 't5' else {'max_length': 16}))
  args = (jax.random.randint(jax.random.key(0), (2, 10), 1, 40),
          jax.random.randint(jax.random.key(1), (2, 6), 1, 40))

  def loss(p):
    logits = model.apply({'params': p}, *args, train=True, rngs={'dropout': jax.random.key(3)})
    return -jnp.mean(jax.nn.log_softmax(logits)[..., 5])
  return model, args, loss


@pytest.mark.parametrize('family', ['t5', 'bart', 'dit'])
def test_remat_of_encoder_decoders_and_dit_changes_no_number(family):
  """T5's and BART's encoder and decoder blocks and DiT's adaLN-Zero blocks under remat:
  one checkpointed call per block (2 encoder + 1 decoder; 3 DiT blocks) in the gradient's
  jaxpr, the same parameter tree, loss and gradients as without."""
  import jax
  import numpy as np
  results = {}
  for remat in ('', 'block'):
    model, args, loss = _remat_family(family, remat)
    params = model.init(jax.random.key(2), *args)['params']
    if family == 'dit':  # adaLN-Zero starts every block at the identity: perturb it
      params = jax.tree.map(lambda p: p + 0.05 * jax.random.normal(jax.random.key(4), p.shape),
                            params)
    assert str(jax.make_jaxpr(jax.grad(loss))(params)).count('remat') == (3 if remat else 0)
    results[remat] = (params, *jax.jit(jax.value_and_grad(loss))(params))
  assert jax.tree.structure(results['block']) == jax.tree.structure(results[''])
  # recomputation reorders float32 sums: T5's gradients differed by up to 1.5e-7 (a few
  # ulps, which element depending on what the process compiled before); a replayed
  # dropout mask that differed would show at 1e-2
  for a, b in zip(jax.tree.leaves(results['block']), jax.tree.leaves(results['']), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=5e-7)
  assert float(results[''][1]) != 0.0 and any(  # the gradients are not trivially equal
      float(np.abs(g).max()) > 0 for g in jax.tree.leaves(results[''][2]))
  with pytest.raises(ValueError, match="unknown remat 'all'"):
    model, args, _ = _remat_family(family, 'all')
    model.init(jax.random.key(2), *args)


def _gpt(**kw):
  from arch.sequence import gpt
  return gpt.Model(**{**dict(vocab_size=50, num_layers=3, num_heads=2, embed_dim=16,
                             max_length=16), **kw})


def test_scanned_layers_compute_the_unrolled_stack_from_stacked_params():
  import flax.linen as nn
  import jax
  import numpy as np
  from arch.layers.transformer import stack_layers, unstack_layers
  tokens = jax.random.randint(jax.random.key(0), (2, 16), 0, 50)
  unrolled, scanned = _gpt(), _gpt(scan_layers=True)
  params = nn.meta.unbox(unrolled.init(jax.random.key(1), tokens)['params'])
  boxed = scanned.init(jax.random.key(1), tokens)['params']
  kernel = boxed['h']['mlp']['wi']['kernel']
  assert kernel.names == ('layers', 'embed', 'mlp') and kernel.value.shape == (3, 16, 64)
  stacked = stack_layers(params, 'h', 3)
  assert jax.tree.structure(stacked) == jax.tree.structure(nn.meta.unbox(boxed))
  for a, b in zip(jax.tree.leaves(unstack_layers(stacked, 'h', 3)), jax.tree.leaves(params),
                  strict=True):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_allclose(scanned.apply({'params': stacked}, tokens),
                             unrolled.apply({'params': params}, tokens), rtol=1e-5, atol=1e-6)
  # cached decoding, one token at a time: the scanned caches stack like the params
  outs = {}
  for name, model, p in (('unrolled', unrolled, params), ('scanned', scanned, stacked)):
    cache = model.init(jax.random.key(1), tokens[:, :1], decode=True)['cache']
    logits = []
    for t in range(6):
      out, mutated = model.apply({'params': p, 'cache': cache}, tokens[:, t:t + 1],
                                 decode=True, mutable=['cache'])
      cache = mutated['cache']
      logits.append(out)
    outs[name] = np.concatenate(logits, 1)
  np.testing.assert_allclose(outs['scanned'], outs['unrolled'], rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match='stacks \\[3\\] layers, expected 4'):
    unstack_layers(stacked, 'h', 4)


def test_remat_in_a_scanned_stack_lowers_the_compiled_steps_temporaries():
  import jax
  import jax.numpy as jnp
  tokens = jax.random.randint(jax.random.key(0), (8, 128), 0, 64)
  temps, losses = {}, {}
  for remat in ('', 'block'):
    model = _gpt(vocab_size=64, num_layers=6, num_heads=4, embed_dim=64, max_length=128,
                 scan_layers=True, remat=remat)
    params = model.init(jax.random.key(1), tokens[:, :8])['params']

    def loss(p, model=model):
      return -jnp.mean(jax.nn.log_softmax(model.apply({'params': p}, tokens))[..., 3])

    compiled = jax.jit(jax.value_and_grad(loss)).lower(params).compile()
    temps[remat] = compiled.memory_analysis().temp_size_in_bytes
    losses[remat] = float(compiled(params)[0])
  assert losses['block'] == pytest.approx(losses[''], rel=1e-6)
  assert temps['block'] < 0.7 * temps[''], temps


COLLECTIVES = """
import jax
from train import config_lib, core, mesh as mesh_lib, runner as runner_lib
for mesh in (dict(data=8), dict(data=2, sequence=4)):
  config = config_lib.load('configs/gpt_pydoc.py:variant=tiny')
  for axis, size in mesh.items():
    config_lib.override(config, f'mesh.{axis}', str(size))
  task = core.load_task(config)
  run = runner_lib.Runner(config, task, mesh_lib.make_mesh(config))
  batch = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype,
                                                      sharding=run.batch_sharding),
                       task.example_batch(config.batch_size))
  text = run.lower(run.abstract_state, batch).compile().as_text()
  print(text.count(' all-gather('))
"""


def test_sequence_parallelism_splits_the_length_and_gathers_for_attention(tmp_path):
  # data parallelism needs no all-gather; with the length split over 4 devices each
  # device holds a quarter of every activation and attention gathers keys and values
  proc = subprocess.run([sys.executable, '-c', COLLECTIVES], cwd=REPO, capture_output=True,
                        text=True, env=cli_env(tmp_path, devices=8), timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  data_only, sequence = map(int, proc.stdout.split()[-2:])
  assert data_only == 0 and sequence > 0


def test_llama_scans_its_layers_and_a_subclass_that_interleaves_refuses():
  import flax.linen as nn
  import jax
  import numpy as np
  from arch.layers.transformer import stack_layers
  from arch.sequence import llama, moe
  tokens = jax.random.randint(jax.random.key(0), (2, 12), 0, 40)
  kw = dict(vocab_size=40, num_layers=2, num_heads=4, num_kv_heads=2, embed_dim=16,
            max_length=16)
  unrolled, scanned = llama.Model(**kw), llama.Model(**kw, scan_layers=True)
  params = nn.meta.unbox(unrolled.init(jax.random.key(1), tokens)['params'])
  stacked = stack_layers(params, 'layers', 2, lambda i: f'layers_{i}')
  np.testing.assert_allclose(scanned.apply({'params': stacked}, tokens),
                             unrolled.apply({'params': params}, tokens), rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match='cannot scan identical blocks'):
    moe.Model(**kw, scan_layers=True).init(jax.random.key(1), tokens)


def test_vit_scans_its_layers():
  """ViT's encoder as one scanned block: the unrolled model's logits from the stacked
  parameters, and a clear refusal of per-layer drop-path rates."""
  import flax.linen as nn
  import jax
  import numpy as np
  from arch.layers.transformer import stack_layers
  from arch.vision import vit
  kw = dict(num_classes=10, patch_size=4, image_size=8, embed_dim=32, depth=3, num_heads=4,
            mlp_dim=64)
  images = jax.random.normal(jax.random.key(0), (2, 8, 8, 1))
  unrolled, scanned = vit.Model(**kw), vit.Model(**kw, scan_layers=True)
  params = nn.meta.unbox(unrolled.init(jax.random.key(1), images)['params'])
  stacked = dict(params, encoder=stack_layers(params['encoder'], 'layers', 3,
                                              lambda i: f'layers_{i}'))
  shapes = jax.tree.map(lambda x: x.shape, nn.meta.unbox(
      scanned.init(jax.random.key(1), images)['params']))
  assert shapes == jax.tree.map(lambda x: x.shape, stacked)
  assert shapes['encoder']['layers']['mlp']['wi']['kernel'] == (3, 32, 64)
  np.testing.assert_allclose(scanned.apply({'params': stacked}, images),
                             unrolled.apply({'params': params}, images), rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match='stochastic_depth=0.1 gives each layer its own'):
    vit.Model(**kw, scan_layers=True, stochastic_depth=0.1).init(jax.random.key(1), images)


def test_dit_scans_its_blocks():
  """DiT's adaLN-Zero blocks as one scan: the unrolled model's output from the stacked
  parameters (block0, block1, ... -> block) and back."""
  import flax.linen as nn
  import jax
  import numpy as np
  import jax.numpy as jnp
  from arch.generative import dit
  from arch.layers.transformer import stack_layers, unstack_layers
  kw = dict(hidden_dim=32, depth=3, num_heads=2, patch_size=2, num_classes=10)
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 1))
  t, label = jnp.asarray([3.0, 70.0]), jnp.asarray([1, 10], jnp.int32)
  unrolled, scanned = dit.Model(**kw), dit.Model(**kw, scan_layers=True)
  params = nn.meta.unbox(unrolled.init(jax.random.key(1), x, t, label)['params'])
  # adaLN-Zero starts every block at the identity: give the blocks values that matter
  params = jax.tree.map(lambda p: p + 0.05 * jax.random.normal(jax.random.key(2), p.shape),
                        params)
  stacked = stack_layers(params, 'block', 3)
  shapes = jax.tree.map(lambda a: a.shape, nn.meta.unbox(
      scanned.init(jax.random.key(1), x, t, label)['params']))
  assert shapes == jax.tree.map(lambda a: a.shape, stacked)
  assert shapes['block']['adaln']['kernel'] == (3, 32, 6 * 32)
  want = unrolled.apply({'params': params}, x, t, label)
  np.testing.assert_allclose(scanned.apply({'params': stacked}, x, t, label), want,
                             rtol=1e-5, atol=1e-6)
  assert jax.tree.map(lambda a, b: bool((a == b).all()),
                      unstack_layers(stacked, 'block', 3), params) == \
      jax.tree.map(lambda a: True, params)



@pytest.mark.parametrize('family', ['t5', 'bart'])
def test_encoder_decoder_stacks_scan_their_layers(family):
  """T5's and BART's encoder and decoder stacks as scans: from the stacked parameters, the
  unrolled model's logits and its cached decoding, token by token; Switch's mixed stack
  (MoE every other layer) refuses to scan."""
  import flax.linen as nn
  import jax
  import numpy as np
  from arch.layers.transformer import stack_layers
  from arch.sequence import bart, t5
  module = {'t5': t5, 'bart': bart}[family]
  kw = dict(vocab_size=40, num_encoder_layers=3, num_decoder_layers=2, num_heads=2,
            embed_dim=16, mlp_dim=32, **({'head_dim': 8} if family == 't5' else
                                         {'max_length': 16}))
  src = jax.random.randint(jax.random.key(0), (2, 10), 1, 40)
  tgt = jax.random.randint(jax.random.key(1), (2, 6), 1, 40)
  unrolled, scanned = module.Model(**kw), module.Model(**kw, scan_layers=True)
  params = nn.meta.unbox(unrolled.init(jax.random.key(2), src, tgt)['params'])
  stacked = dict(params)
  for stack, n in (('encoder', 3), ('decoder', 2)):
    stacked[stack] = stack_layers(params[stack], 'layers', n, lambda i: f'layers_{i}')
  boxed = scanned.init(jax.random.key(2), src, tgt)['params']
  assert jax.tree.structure(nn.meta.unbox(boxed)) == jax.tree.structure(stacked)
  assert boxed['decoder']['layers']['cross_attn']['query']['kernel'].names[0] == 'layers'
  np.testing.assert_allclose(scanned.apply({'params': stacked}, src, tgt),
                             unrolled.apply({'params': params}, src, tgt), rtol=1e-5, atol=1e-6)
  outs = {}
  for name, model, p in (('unrolled', unrolled, params), ('scanned', scanned, stacked)):
    encoded = model.apply({'params': p}, src, method=model.encode)
    cache = jax.tree.map(np.zeros_like,  # the sampler's empty caches, sized by the target
                         model.init(jax.random.key(2), src, tgt, decode=True)['cache'])
    steps = []
    for t in range(tgt.shape[1]):
      out, mutated = model.apply({'params': p, 'cache': cache}, tgt[:, t:t + 1], encoded,
                                 decode=True, mutable=['cache'], method=model.decode)
      cache = mutated['cache']
      steps.append(out)
    outs[name] = np.concatenate(steps, 1)
  np.testing.assert_allclose(outs['scanned'], outs['unrolled'], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(outs['unrolled'], unrolled.apply({'params': params}, src, tgt),
                             rtol=1e-4, atol=1e-5)  # the cache really decodes the sequence
  if family == 't5':
    switch = t5.Model(**kw, moe=dict(num_experts=2, top_k=1), scan_layers=True)
    with pytest.raises(ValueError, match='identical Blocks'):
      switch.init(jax.random.key(2), src, tgt)


def test_bert_scans_its_layers():
  """BERT's post-LN encoder as one scan under the padding mask: the unrolled model's MLM
  and NSP logits from the stacked parameters (layer0, layer1, ... -> layers)."""
  import flax.linen as nn
  import jax
  import numpy as np
  from arch.layers.transformer import stack_layers
  from arch.sequence import bert
  kw = dict(bert.TINY, num_layers=3)
  tokens = jax.random.randint(jax.random.key(0), (2, 12), 1, 200).at[1, 8:].set(0)  # padded
  unrolled, scanned = bert.Model(**kw), bert.Model(**kw, scan_layers=True)
  params = nn.meta.unbox(unrolled.init(jax.random.key(1), tokens)['params'])
  stacked = stack_layers(params, 'layers', 3, lambda i: f'layer{i}')
  shapes = jax.tree.map(lambda a: a.shape, nn.meta.unbox(
      scanned.init(jax.random.key(1), tokens)['params']))
  assert shapes == jax.tree.map(lambda a: a.shape, stacked)
  want, got = (m.apply({'params': p}, tokens) for m, p in ((unrolled, params),
                                                           (scanned, stacked)))
  for key in ('mlm_logits', 'nsp_logits'):
    np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-6)
