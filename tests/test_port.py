"""Published weights in and out (train/port.py), against fixtures a reference library wrote
(tests/make_port_fixtures.py: small randomly initialised Hugging Face GPT2LMHeadModel,
ViTForImageClassification, BertForPreTraining and LlamaForCausalLM saved as safetensors,
with their logits on fixed inputs): the imported run's logits match on 1 and 8 devices, export gives back the same tensors bit for bit, the imported run
trains on, and bad input fails with one line naming the problem."""

import json
import os
import re
import shutil

import numpy as np
import pytest

from conftest import REPO, load_config, run_cli

GPT2 = os.path.join(REPO, 'tests', 'fixtures', 'port', 'gpt2_tiny')
VIT = os.path.join(REPO, 'tests', 'fixtures', 'port', 'vit_tiny')
BERT = os.path.join(REPO, 'tests', 'fixtures', 'port', 'bert_tiny')
LLAMA = os.path.join(REPO, 'tests', 'fixtures', 'port', 'llama_tiny')
RESNET = os.path.join(REPO, 'tests', 'fixtures', 'port', 'resnet_basic_tiny')
RESNET50 = os.path.join(REPO, 'tests', 'fixtures', 'port', 'resnet_bottleneck_tiny')
SPEC = 'configs/gpt_pydoc.py:variant=tiny'
# arch -> (fixture, the config whose network it is, with the overrides that make it so)
FIXTURES = {
    'gpt2': (GPT2, [SPEC]), 'vit': (VIT, ['configs/vit_digits.py:tiny']),
    'bert': (BERT, ['configs/bert_pydoc.py', '--config.model.num_layers=2',
                    '--config.model.num_heads=2', '--config.model.embed_dim=16']),
    'llama': (LLAMA, ['configs/llama_pydoc.py:variant=tiny', '--config.model.embed_dim=16',
                      '--config.model.mlp_dim=32', '--config.model.rope_max_wavelength=1000.0']),
    # torchvision's ResNet at tiny widths, BasicBlock (resnet18/34) and Bottleneck (50-152).
    'resnet': (RESNET, ['configs/resnet_digits.py:tiny=True', '--config.model.stage_sizes=(2,1,1,1)',
                        '--config.model.widths=(4,8,8,16)', '--config.model.small_input=False']),
    'resnet_bottleneck': (RESNET50, [
        'configs/resnet_digits.py:tiny=True', '--config.model.stage_sizes=(1,1,1,1)',
        '--config.model.block=bottleneck', '--config.model.widths=(2,4,4,8)',
        '--config.model.small_input=False']),
}


def _port(args, data_dir, devices=1):
  proc = run_cli(args, data_dir, devices=devices, module='train.port')
  return proc.returncode, proc.stdout + proc.stderr


def _source(arch):
  return ('torchvision', 'resnet') if arch.startswith('resnet') else ('hf', arch)


def _import(workdir, data_dir, devices=1, src=GPT2, arch='gpt2'):
  fixture, spec = FIXTURES[arch]
  source, arch = _source(arch)
  return _port(['--from', source, '--arch', arch, '--src', src, '--workdir', workdir,
                '--config', *spec, '--reference_logits',
                os.path.join(fixture, 'reference.npz')], data_dir, devices)


# On 1 device the round trip below checks each format's parity first (the BasicBlock
# ResNet's mapping is the bottleneck one's, checked here on 8).
@pytest.mark.parametrize('arch, devices', [('gpt2', 8), ('vit', 8), ('bert', 8), ('llama', 8),
                                           ('resnet', 8), ('resnet_bottleneck', 8)])
def test_import_matches_the_reference_logits(tmp_path, data_dir, arch, devices):
  code, out = _import(tmp_path / 'run', data_dir, devices, FIXTURES[arch][0], arch)
  assert code == 0, out[-3000:]
  err = float(re.search(r'parity: .* = (\S+) on (\d+) device', out).group(1))
  assert err < 1e-4 and f'on {devices} device' in out


@pytest.mark.parametrize('arch, keys', [
    ('gpt2', ('vocab_size', 'n_positions', 'n_embd', 'n_layer', 'n_head', 'layer_norm_epsilon',
              'activation_function')),
    ('vit', ('image_size', 'patch_size', 'num_channels', 'hidden_size', 'num_hidden_layers',
             'num_attention_heads', 'intermediate_size', 'hidden_act', 'layer_norm_eps',
             'id2label')),
    ('bert', ('vocab_size', 'hidden_size', 'num_hidden_layers', 'num_attention_heads',
              'intermediate_size', 'max_position_embeddings', 'type_vocab_size',
              'layer_norm_eps', 'hidden_act', 'architectures')),
    ('llama', ('vocab_size', 'hidden_size', 'intermediate_size', 'num_hidden_layers',
               'num_attention_heads', 'num_key_value_heads', 'max_position_embeddings',
               'rms_norm_eps', 'rope_parameters', 'tie_word_embeddings')),
    ('resnet_bottleneck', ())])
def test_export_round_trip_is_exact(tmp_path, data_dir, arch, keys):
  from safetensors.numpy import load_file
  from train import port
  fixture, spec = FIXTURES[arch]
  code, out = _import(tmp_path / 'run', data_dir, src=fixture, arch=arch)
  assert code == 0, out[-3000:]
  err = float(re.search(r'parity: .* = (\S+) on 1 device', out).group(1))
  assert err < 1e-4
  source, name = _source(arch)
  code, out = _port(['--to', source, '--arch', name, '--workdir', tmp_path / 'run',
                     '--config', *spec, '--dst', tmp_path / 'out'], data_dir)
  assert code == 0, out[-3000:]
  want = load_file(os.path.join(fixture, 'model.safetensors'))
  got = load_file(str(tmp_path / 'out' / 'model.safetensors'))
  skip = port.ARCHS[name].skip
  assert sorted(k for k in got if not skip(k)) == sorted(k for k in want if not skip(k))
  for k, v in got.items():
    assert v.dtype == want[k].dtype
    np.testing.assert_array_equal(v, want[k])
  if not keys:  # torchvision: the state_dict alone
    return
  with open(os.path.join(fixture, 'config.json')) as f:
    ref = json.load(f)
  with open(tmp_path / 'out' / 'config.json') as f:
    exported = json.load(f)
  for key in keys:
    assert exported[key] == ref[key], key


def test_an_imported_run_trains_on(tmp_path, data_dir):
  """The import is step 0 of a run of the config: training resumes from it."""
  from train import loop
  assert _import(tmp_path / 'run', data_dir)[0] == 0
  config = load_config(SPEC.removeprefix('configs/'), data__data_dir=data_dir, total_steps=1,
                       eval_every=0)
  loop.train_and_evaluate(config, str(tmp_path / 'run'))
  with open(tmp_path / 'run' / 'metrics.jsonl') as f:
    steps = [json.loads(line) for line in f]
  assert [r['step'] for r in steps if r['split'] == 'train'] == [1]
  assert 0 < steps[-1]['loss'] < 10


def test_gpt2_mapping_splits_heads_like_the_reference():
  """query/key/value take c_attn's columns [0:D], [D:2D], [2D:3D], each split head-major."""
  from train import port
  d, h = 4, 2
  ref = {'n_embd': d, 'n_head': h, 'n_layer': 1}
  rng = np.random.default_rng(0)
  t = {'wte.weight': rng.normal(size=(5, d)), 'wpe.weight': rng.normal(size=(3, d)),
       'ln_f.weight': np.ones(d), 'ln_f.bias': np.zeros(d)}
  for name, shape in (('attn.c_attn.weight', (d, 3 * d)), ('attn.c_attn.bias', (3 * d,)),
                      ('attn.c_proj.weight', (d, d)), ('attn.c_proj.bias', (d,)),
                      ('ln_1.weight', (d,)), ('ln_1.bias', (d,)), ('ln_2.weight', (d,)),
                      ('ln_2.bias', (d,)), ('mlp.c_fc.weight', (d, 4 * d)),
                      ('mlp.c_fc.bias', (4 * d,)), ('mlp.c_proj.weight', (4 * d, d)),
                      ('mlp.c_proj.bias', (d,))):
    t[f'h.0.{name}'] = rng.normal(size=shape)
  flat = port.Gpt2.to_archzoo(dict(t), ref)
  w = t['h.0.attn.c_attn.weight']
  np.testing.assert_array_equal(flat['h0/self_attn/key/kernel'][:, 1, :], w[:, d + 2:d + 4])
  np.testing.assert_array_equal(flat['h0/self_attn/out/kernel'][1], t['h.0.attn.c_proj.weight'][2:])
  back = port.Gpt2.to_reference(flat, {'embed_dim': d, 'num_layers': 1})
  for k, v in t.items():
    np.testing.assert_array_equal(back['transformer.' + k], v)


def test_bert_and_llama_mappings_split_heads_like_the_reference():
  """torch Linear rows [n * head_dim, (n + 1) * head_dim) are head n; LLaMA's k/v_proj hold
  the key/value heads of grouped-query attention; a tied LLaMA head becomes lm_head."""
  from train import port
  rng = np.random.default_rng(0)
  d, h, kv, f = 8, 4, 2, 12
  ref = {'hidden_size': d, 'num_attention_heads': h, 'num_key_value_heads': kv,
         'num_hidden_layers': 1, 'intermediate_size': f, 'tie_word_embeddings': True}
  t = {'model.embed_tokens.weight': rng.normal(size=(5, d)), 'model.norm.weight': np.ones(d)}
  for name, shape in (('self_attn.q_proj', (d, d)), ('self_attn.k_proj', (d // h * kv, d)),
                      ('self_attn.v_proj', (d // h * kv, d)), ('self_attn.o_proj', (d, d)),
                      ('mlp.gate_proj', (f, d)), ('mlp.up_proj', (f, d)),
                      ('mlp.down_proj', (d, f))):
    t[f'model.layers.0.{name}.weight'] = rng.normal(size=shape)
  for name in ('input_layernorm', 'post_attention_layernorm'):
    t[f'model.layers.0.{name}.weight'] = rng.normal(size=d)
  flat = port.Llama.to_archzoo(dict(t), ref)
  k = t['model.layers.0.self_attn.k_proj.weight']
  assert flat['layers_0/self_attn/key/kernel'].shape == (d, kv, d // h)
  np.testing.assert_array_equal(flat['layers_0/self_attn/key/kernel'][:, 1], k[2:4].T)
  np.testing.assert_array_equal(flat['layers_0/self_attn/out/kernel'][3],
                                t['model.layers.0.self_attn.o_proj.weight'][:, 6:].T)
  np.testing.assert_array_equal(flat['lm_head/kernel'], t['model.embed_tokens.weight'].T)
  model = {'embed_dim': d, 'num_layers': 1}
  back = port.Llama.to_reference(flat, model)
  for name, v in t.items():
    np.testing.assert_array_equal(back[name], v)
  # BERT: the same split, with biases; post-LN norms in their places.
  from safetensors.numpy import load_file
  with open(os.path.join(BERT, 'config.json')) as fh:
    bref = json.load(fh)
  bt = load_file(os.path.join(BERT, 'model.safetensors'))
  flat = port.Bert.to_archzoo(dict(bt), bref)
  b = bt['bert.encoder.layer.1.attention.self.value.bias']
  np.testing.assert_array_equal(flat['layer1/self_attn/value/bias'][1], b[8:])
  np.testing.assert_array_equal(flat['layer1/self_attn_norm/scale'],
                                bt['bert.encoder.layer.1.attention.output.LayerNorm.weight'])
  np.testing.assert_array_equal(flat['mlm_bias'], bt['cls.predictions.bias'])


@pytest.mark.parametrize('arch, field, value, message', [
    ('llama', 'rope_scaling', {'rope_type': 'llama3', 'factor': 8.0}, "rope_type 'llama3'"),
    ('llama', 'attention_bias', True, 'attention_bias=True'),
    ('llama', 'head_dim', 8, 'head_dim=8'),
    ('bert', 'tie_word_embeddings', False, 'tie_word_embeddings=False'),
    ('bert', 'position_embedding_type', 'relative_key', 'relative_key')])
def test_what_archzoo_cannot_represent_is_refused(arch, field, value, message):
  from train import port
  from train.errors import UserError
  with open(os.path.join(FIXTURES[arch][0], 'config.json')) as f:
    ref = json.load(f)
  port.ARCHS[arch].model_fields(ref)
  with pytest.raises(UserError, match=re.escape(message)):
    port.ARCHS[arch].model_fields({**ref, field: value})


def test_llama_rope_fields():
  """theta from either config.json layout; linear scaling is archzoo's rope_scale."""
  from train import port
  with open(os.path.join(LLAMA, 'config.json')) as f:
    ref = json.load(f)
  assert port.Llama.model_fields(ref)['rope_max_wavelength'] == 1000.0
  old = {k: v for k, v in ref.items() if k != 'rope_parameters'}
  fields = port.Llama.model_fields({**old, 'rope_theta': 500000.0,
                                    'rope_scaling': {'type': 'linear', 'factor': 4.0}})
  assert (fields['rope_max_wavelength'], fields['rope_scale']) == (500000.0, 4.0)
  assert port.Llama.model_fields(old)['rope_max_wavelength'] == 10000.0


def test_resnet_reads_the_network_off_the_tensors(tmp_path):
  """Stages, block and widths from the names and shapes; wide ResNets / ResNeXt (which
  archzoo's blocks cannot express) and other stems are refused; OIHW -> HWIO; running
  statistics become batch_stats."""
  from safetensors.numpy import load_file
  from train import port
  from train.errors import UserError
  t = load_file(os.path.join(RESNET50, 'model.safetensors'))
  ref = port.Resnet.describe(t)
  assert ref == {'stage_sizes': (1, 1, 1, 1), 'block': 'bottleneck', 'widths': (2, 4, 4, 8),
                 'stem_features': 4, 'small_input': False, 'num_classes': 10}
  assert port.Resnet.describe(load_file(os.path.join(RESNET, 'model.safetensors')))[
      'stage_sizes'] == (2, 1, 1, 1)
  flat = port.Resnet.to_archzoo({k: v for k, v in t.items() if not port.Resnet.skip(k)}, ref)
  w = t['layer2.0.conv2.weight']  # (O, I, 3, 3)
  np.testing.assert_array_equal(flat['layer2_0/conv2/conv/kernel'][2, 0], w[:, :, 2, 0].T)
  np.testing.assert_array_equal(flat['batch_stats/layer3_0/downsample/norm/var'],
                                t['layer3.0.downsample.1.running_var'])
  wide = dict(t, **{'layer1.0.conv3.weight': np.zeros((16, 2, 1, 1), np.float32)})
  with pytest.raises(UserError, match='wide ResNet or ResNeXt'):
    port.Resnet.describe(wide)
  grouped = dict(t, **{'layer1.0.conv2.weight': np.zeros((2, 1, 3, 3), np.float32)})
  with pytest.raises(UserError, match='wide ResNet or ResNeXt'):
    port.Resnet.describe(grouped)
  with pytest.raises(UserError, match='7x7/2 stem'):
    port.Resnet.describe(dict(t, **{'conv1.weight': np.zeros((4, 1, 3, 3), np.float32)}))
  with pytest.raises(UserError, match='--from torchvision'):
    port.import_weights(None, 'resnet', RESNET50, str(tmp_path / 'run'), source='hf')


def test_bad_input_is_one_line(tmp_path, data_dir):
  from safetensors.numpy import load_file, save_file
  # Another network than the config builds: the overrides that fix it.
  code, out = _port(['--from', 'hf', '--arch', 'gpt2', '--src', GPT2, '--workdir',
                     tmp_path / 'a', '--config', 'configs/gpt_pydoc.py:variant=cpu'], data_dir)
  assert code == 2 and '--config.model.num_layers=2' in out and '--config.model.embed_dim=32' in out
  # A tensor missing from the checkpoint.
  broken = tmp_path / 'broken'
  shutil.copytree(GPT2, broken)
  tensors = load_file(str(broken / 'model.safetensors'))
  del tensors['transformer.h.1.mlp.c_fc.bias']
  save_file(tensors, str(broken / 'model.safetensors'))
  code, out = _import(tmp_path / 'b', data_dir, src=str(broken))
  assert code == 2 and 'h.1.mlp.c_fc.bias' in out
  # A PyTorch pickle is refused without being read.
  pickled = tmp_path / 'pickled'
  pickled.mkdir()
  shutil.copy(os.path.join(GPT2, 'config.json'), pickled)
  (pickled / 'pytorch_model.bin').write_bytes(b'not read')
  code, out = _import(tmp_path / 'c', data_dir, src=str(pickled))
  assert code == 2 and 'pickle' in out and 'safetensors' in out
  # A workdir that already holds a run.
  assert _import(tmp_path / 'd', data_dir)[0] == 0
  code, out = _import(tmp_path / 'd', data_dir)
  assert code == 2 and 'already holds checkpoints' in out
