"""Published weights in and out (train/port.py), against fixtures a reference library wrote
(tests/make_port_fixtures.py: small randomly initialised Hugging Face GPT2LMHeadModel,
ViTForImageClassification, BertForPreTraining, LlamaForCausalLM, T5ForConditionalGeneration,
BartForConditionalGeneration and CLIPModel, torchvision ResNets, VGG, AlexNet, DenseNet,
Swin and EfficientNet, timm's DeiT and CaiT, Hugging Face's MambaForCausalLM and
RwkvForCausalLM, and diffusers' AutoencoderKL, DiTTransformer2DModel and
UNet2DConditionModel (SD 1.5's and SDXL's options), saved as
safetensors, with their logits on fixed inputs): the imported run's logits match on 1 and 8
devices, export gives back the same tensors bit for bit, the imported run trains on, and
bad input fails with one line naming the problem. T5, BART, CLIP and the later formats
(VGG ... the U-Net; timm's DeiT also on 8 devices through the CLI) are checked in-process on
one device (the mapping, the leaf check and the network's outputs; the CLI's checkpoint
round trip and mesh are the same code the formats above cover)."""

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
DEIT = os.path.join(REPO, 'tests', 'fixtures', 'port', 'deit_tiny')
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
    # timm's distilled DeiT (--from timm), deit_digits' tiny student with 2 blocks.
    'deit': (DEIT, ['configs/deit_digits.py:tiny=True,distillation=none',
                    '--config.model.depth=2']),
}


def _port(args, data_dir, devices=1):
  proc = run_cli(args, data_dir, devices=devices, module='train.port')
  return proc.returncode, proc.stdout + proc.stderr


def _source(arch):
  if arch == 'deit':
    return 'timm', arch
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
                                           ('resnet', 8), ('resnet_bottleneck', 8),
                                           ('deit', 8)])
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


# ------------------------------------------------- in-process parity (T5, BART, CLIP)

T5 = os.path.join(REPO, 'tests', 'fixtures', 'port', 't5_tiny')
BART = os.path.join(REPO, 'tests', 'fixtures', 'port', 'bart_tiny')
CLIP = os.path.join(REPO, 'tests', 'fixtures', 'port', 'clip_tiny')
CAIT = os.path.join(REPO, 'tests', 'fixtures', 'port', 'cait_tiny')
SWIN = os.path.join(REPO, 'tests', 'fixtures', 'port', 'swin_tiny')
EFFICIENTNET = os.path.join(REPO, 'tests', 'fixtures', 'port', 'efficientnet_tiny')
VAE = os.path.join(REPO, 'tests', 'fixtures', 'port', 'vae_tiny')
MAMBA = os.path.join(REPO, 'tests', 'fixtures', 'port', 'mamba_tiny')
RWKV = os.path.join(REPO, 'tests', 'fixtures', 'port', 'rwkv_tiny')
DIT = os.path.join(REPO, 'tests', 'fixtures', 'port', 'dit_tiny')
UNET = os.path.join(REPO, 'tests', 'fixtures', 'port', 'unet_tiny')
# arch -> (fixture, config, its overrides as load_config takes them)
IN_PROCESS = {
    't5': (T5, 't5_translate.py', dict(model__embed_dim=16, model__head_dim=8,
                                       model__num_heads=2, model__mlp_dim=32,
                                       model__num_buckets=8, model__max_distance=12)),
    'bart': (BART, 'bart_pydoc.py:variant=tiny', dict(
        model__num_encoder_layers=2, model__num_decoder_layers=2, model__embed_dim=16,
        model__num_heads=2, model__mlp_dim=32)),
    # Both towers 2 layers deep; OpenAI's eos_token_id=2 pools at the largest id (259 here).
    'clip': (CLIP, 'clip_digits.py:tiny=True', dict(
        model__depth=2, task_kwargs__text_model__depth=2, task_kwargs__text_model__eos_id=259)),
    # torchvision's VGG with BatchNorm, a second stage of two convs.
    'vgg': (os.path.join(REPO, 'tests', 'fixtures', 'port', 'vgg_bn_tiny'),
            'vgg_digits.py:tiny=True', dict(model__stages='(1,2,1,1,1)')),
    # torchvision's own 11x11/4 stem (64x64 inputs): not the digits config's small_input.
    'alexnet': (os.path.join(REPO, 'tests', 'fixtures', 'port', 'alexnet_tiny'),
                'alexnet_digits.py:tiny=True', dict(model__small_input=False)),
    'densenet': (os.path.join(REPO, 'tests', 'fixtures', 'port', 'densenet_tiny'),
                 'densenet_digits.py', dict(model__block_config='(2,2)', model__growth_rate=4,
                                            model__num_init_features=8, model__bn_size=2,
                                            model__small_input=False)),
    # timm's distilled DeiT; timm's CaiT (class blocks' MLP 4x, timm's default) and
    # torchvision's Swin (24x24 inputs: a 6x6 second-stage map padded to 8x8 and shifted)
    # and EfficientNet (B0's table at width 0.05, depth 0.25: one block per stage).
    'deit': (DEIT, 'deit_digits.py:tiny=True,distillation=none', dict(model__depth=2)),
    'cait': (CAIT, 'cait_digits.py:tiny=True', dict(model__depth=2, model__class_depth=2,
                                                    model__class_mlp_dim=64)),
    'swin': (SWIN, 'swin_digits.py:tiny=True', dict(model__depths='(2,2)',
                                                    model__num_heads='(1,2)')),
    'efficientnet': (EFFICIENTNET, 'efficientnet_digits.py:tiny=True',
                     dict(model__width_mult=0.05)),
    # diffusers' AutoencoderKL (SD 1.5's VAE classes), widths (4, 8): mean, logvar, sample.
    'autoencoder_kl': (VAE, 'vae_digits.py:model=kl,tiny=True',
                       dict(model__block_out_channels='(4,8)')),
    # Hugging Face's MambaForCausalLM (step-size rank 4, not ceil(16 / 16)) and
    # RwkvForCausalLM (RWKV-4, channel-mix width 48, not 4 x 16), 2 layers of width 16.
    'mamba': (MAMBA, 'mamba_pydoc.py:variant=tiny', dict(model__embed_dim=16,
                                                         model__dt_rank=4)),
    'rwkv': (RWKV, 'rwkv_pydoc.py:variant=tiny', dict(model__embed_dim=16, model__ffn_dim=48)),
    # diffusers' DiTTransformer2DModel, 2 blocks: its timestep frequencies and MLP eps.
    'dit': (DIT, 'dit_digits.py:tiny=True', dict(model__depth=2, model__frequency_shift=1.0,
                                                 model__mlp_norm_eps=1e-5)),
    # diffusers' UNet2DConditionModel, SD 1.5's block types at widths (4, 8): the first
    # level and the middle cross-attending to a 12-wide context.
    'unet': (UNET, 'ddpm_digits.py:tiny=True', dict(
        model__block_channels='(4,8)', model__attention='(True,False)', model__groups=2,
        model__context_dim=12)),
    # The same with SDXL's options: per-level heads and depths, Linear projections, the
    # 'text_time' added embedding (inputs text_embeds and time_ids).
    'unet_xl': (os.path.join(REPO, 'tests', 'fixtures', 'port', 'unet_xl_tiny'),
                'ddpm_digits.py:tiny=True', dict(
                    model__block_channels='(4,8)', model__attention='(False,True)',
                    model__num_heads=(1, 2), model__transformer_depth=(1, 2),
                    model__groups=2, model__context_dim=12, model__linear_projection=True,
                    model__addition_time_embed_dim=4, model__addition_text_dim=6)),
}


# A second fixture of a format: its name there.
FORMAT_OF = {'unet_xl': 'unet'}


def _format(arch):
  from train import port
  return port.ARCHS[FORMAT_OF.get(arch, arch)]


def _mapped(arch):
  """(config, the fixture's tensors mapped onto archzoo's paths, its reference .npz), the
  reference's config.json checked against the config as `train.port` checks it."""
  from train import port
  fixture, spec, overrides = IN_PROCESS[arch]
  fmt = _format(arch)
  from train import config_lib
  config = load_config(spec)
  if hasattr(fmt, 'fill_defaults'):  # as `python -m train.port` does before overrides
    fmt.fill_defaults(config)
  for k, v in overrides.items():
    if isinstance(v, tuple):  # int -> per-level tuple: a type the command line keeps
      key = k.removeprefix('model__')
      with config.unlocked():
        if key in config.model:
          del config.model[key]
        config.model[key] = v
    else:
      config_lib.override(config, k.replace('__', '.'), str(v))
  tensors = {k: v for k, v in port.read_tensors(fixture).items() if not fmt.skip(k)}
  ref = port.describe_reference(fmt, tensors, fixture)
  port.check_model_fields(config, fmt.model_fields(ref), FORMAT_OF.get(arch, arch),
                          fmt.task_fields(ref) if hasattr(fmt, 'task_fields') else None)
  return config, fmt.to_archzoo(tensors, ref), dict(np.load(os.path.join(fixture,
                                                                         'reference.npz')))


@pytest.mark.parametrize('arch', sorted(IN_PROCESS))
def test_in_process_import_matches_the_reference(arch):
  """Every param of the config's network given, with its shape and nothing else, and the
  network's outputs on the reference's inputs equal the reference's to 1e-4 of their
  scale (what `train.port --reference_logits` computes, here on one device without the
  checkpoint round trip, which the formats above cover)."""
  import flax.linen as nn
  import jax
  from train import port
  config, flat, ref = _mapped(arch)
  fmt = _format(arch)
  apply, init, keys = port.reference_forward(config, fmt)
  batch = {k: ref[k] for k in keys if k in ref}
  shapes = nn.unbox(jax.eval_shape(init, jax.random.key(0), batch))
  want = {k: v.shape for k, v in port._flat(shapes['params']).items()}
  want.update({'batch_stats/' + k: v.shape
               for k, v in port._flat(shapes.get('batch_stats', {})).items()})
  port.check_leaves(flat, want, arch)
  variables = {'params': port._unflat({k: v for k, v in flat.items()
                                       if not k.startswith('batch_stats/')})}
  stats = {k.removeprefix('batch_stats/'): v for k, v in flat.items()
           if k.startswith('batch_stats/')}
  if stats:
    variables['batch_stats'] = port._unflat(stats)
  got = jax.jit(apply)(variables, batch)
  assert sorted(got) == sorted(getattr(fmt, 'outputs', ('logits',)))
  err = port.relative_difference({k: np.asarray(v) for k, v in got.items()}, ref)
  assert err < 1e-4, err


@pytest.mark.parametrize('arch', sorted(IN_PROCESS))
def test_in_process_export_gives_back_the_reference_tensors(arch):
  """to_reference(to_archzoo(t)) == t bit for bit (the skipped copies of tied tensors
  aside), and the exported config.json describes the same network."""
  from train import port
  fixture = IN_PROCESS[arch][0]
  config, flat, _ = _mapped(arch)
  fmt = _format(arch)
  model = {**port._model_defaults(config), **config.model.to_dict()}
  back = {k: v for k, v in fmt.to_reference(flat, model).items() if not fmt.skip(k)}
  want = {k: v for k, v in port.read_tensors(fixture).items() if not fmt.skip(k)}
  assert sorted(back) == sorted(want)
  for k, v in want.items():
    assert back[k].dtype == v.dtype and back[k].shape == v.shape, k
    np.testing.assert_array_equal(back[k], v, err_msg=k)
  if hasattr(fmt, 'describe'):  # torchvision: no config file, the tensors say it all
    return
  ref = port.read_reference_config(fixture)
  exported = (fmt.reference_config_of(config) if hasattr(fmt, 'reference_config_of') else
              fmt.reference_config(model))
  assert fmt.model_fields(exported) == fmt.model_fields(ref)
  if hasattr(fmt, 'task_fields'):
    assert fmt.task_fields(exported) == fmt.task_fields(ref)


def test_t5_and_bart_mappings():
  """T5: the relative tables come from block 0 of each stack, the decoder's layer.1 is
  cross-attention and layer.2 the MLP, heads are rows [n * d_kv, (n + 1) * d_kv) of q/k/v
  and columns of o; BART: q_proj biases split by head, encoder_attn is cross_attn,
  final_logits_bias must be zero."""
  from train import port
  from train.errors import UserError
  _, flat, _ = _mapped('t5')
  t = port.read_tensors(T5)
  np.testing.assert_array_equal(
      flat['decoder/relative_attention_bias/rel_embedding'],
      t['decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight'])
  np.testing.assert_array_equal(flat['decoder/layers_1/cross_attn/key/kernel'][:, 1],
                                t['decoder.block.1.layer.1.EncDecAttention.k.weight'][8:].T)
  np.testing.assert_array_equal(flat['decoder/layers_1/cross_attn/out/kernel'][0],
                                t['decoder.block.1.layer.1.EncDecAttention.o.weight'][:, :8].T)
  np.testing.assert_array_equal(flat['decoder/layers_0/mlp_norm/scale'],
                                t['decoder.block.0.layer.2.layer_norm.weight'])
  _, flat, _ = _mapped('bart')
  t = port.read_tensors(BART)
  np.testing.assert_array_equal(flat['decoder/layers_0/cross_attn/query/bias'][1],
                                t['model.decoder.layers.0.encoder_attn.q_proj.bias'][8:])
  np.testing.assert_array_equal(flat['decoder/layers_1/cross_attn_norm/bias'],
                                t['model.decoder.layers.1.encoder_attn_layer_norm.bias'])
  np.testing.assert_array_equal(flat['encoder/embed_positions/embedding'],
                                t['model.encoder.embed_positions.weight'])
  ref = port.read_reference_config(BART)
  t['final_logits_bias'] = t['final_logits_bias'] + 1e-3
  with pytest.raises(UserError, match='final_logits_bias is not zero'):
    port.Bart.to_archzoo(t, ref)


@pytest.mark.parametrize('arch, field, value, message', [
    ('t5', 'feed_forward_proj', 'gated-gelu', 'T5 v1.1'),
    ('t5', 'tie_word_embeddings', False, 'T5 v1.1'),
    ('t5', 'scale_decoder_outputs', False, 'T5 v1.1'),
    ('bart', 'normalize_before', True, 'normalize_before=True'),
    ('bart', 'scale_embedding', True, 'scale_embedding=True'),
    ('bart', 'activation_function', 'relu', "activation_function='relu'"),
    ('bart', 'decoder_ffn_dim', 64, 'ffn 64')])
def test_what_t5_and_bart_cannot_represent_is_refused(arch, field, value, message):
  from train import port
  from train.errors import UserError
  ref = port.read_reference_config(IN_PROCESS[arch][0])
  port.ARCHS[arch].model_fields(ref)
  with pytest.raises(UserError, match=re.escape(message)):
    port.ARCHS[arch].model_fields({**ref, field: value})
  # A stored head that is not the shared embedding is an untied (v1.1) head.
  if arch == 't5':
    t = port.read_tensors(T5)
    t['lm_head.weight'] = t['shared.weight'] * 2
    with pytest.raises(UserError, match='lm_head.weight differs'):
      port.T5.to_archzoo(t, ref)


def test_clip_fields_and_mapping():
  """OpenAI's eos_token_id=2 pools at the largest id (eos_id = V - 1), a later config's
  eos_token_id is eos_id; a text tower other than the config's names the task_kwargs
  overrides; other activations are refused; the vision patch conv OIHW -> HWIO and the
  projections transposed; the tower a block belongs to by its prefix."""
  from train import port
  from train.errors import UserError
  config, flat, _ = _mapped('clip')
  ref = port.read_reference_config(CLIP)
  assert port.Clip.task_fields(ref)['text_model.eos_id'] == 259
  newer = {**ref, 'text_config': {**ref['text_config'], 'eos_token_id': 7}}
  assert port.Clip.task_fields(newer)['text_model.eos_id'] == 7
  wider = {**ref, 'projection_dim': 12,
           'text_config': {**ref['text_config'], 'num_hidden_layers': 3}}
  with pytest.raises(UserError) as e:
    port.check_model_fields(config, port.Clip.model_fields(wider), 'clip',
                            port.Clip.task_fields(wider))
  assert ('--config.task_kwargs.embed_dim=12' in str(e.value) and
          '--config.task_kwargs.text_model.depth=3' in str(e.value))
  with pytest.raises(UserError, match="vision_config.hidden_act='gelu'"):
    port.Clip.model_fields({**ref, 'vision_config': {**ref['vision_config'],
                                                     'hidden_act': 'gelu'}})
  t = port.read_tensors(CLIP)
  w = t['vision_model.embeddings.patch_embedding.weight']  # (D, C, P, P)
  np.testing.assert_array_equal(flat['image_tower/patch_embed/proj/kernel'][1, 2], w[:, :, 1, 2].T)
  np.testing.assert_array_equal(flat['text_projection/kernel'], t['text_projection.weight'].T)
  np.testing.assert_array_equal(flat['text_tower/encoder/layers_1/self_attn/value/bias'][1],
                                t['text_model.encoder.layers.1.self_attn.v_proj.bias'][8:])
  np.testing.assert_array_equal(flat['image_tower/encoder/layers_0/mlp_norm/scale'],
                                t['vision_model.encoder.layers.0.layer_norm2.weight'])


def test_vgg_reads_the_network_off_the_tensors():
  """Stages from the gaps between conv indices (a max pool adds one), BatchNorm from the
  running statistics, the pool size from fc1's inputs; the same network without
  BatchNorm (indices 2 apart) reads alike; a stage of two widths is refused."""
  from train import port
  from train.errors import UserError
  t = {k: v for k, v in port.read_tensors(IN_PROCESS['vgg'][0]).items()
       if not port.Vgg.skip(k)}
  assert port.Vgg.describe(t) == {'stages': (1, 2, 1, 1, 1), 'widths': (4, 4, 8, 8, 8),
                                  'norm': True, 'hidden': 16, 'pool_size': 2,
                                  'num_classes': 10}
  # Without BatchNorm: conv, ReLU per conv (features.0, M at 2, 3, 5, M at 7, 8, ...).
  plain = {k: v for k, v in t.items() if not k.startswith('features.')}
  for (i, dst), (j, _) in zip(port.Vgg._layers((1, 2, 1, 1, 1), False),
                              port.Vgg._layers((1, 2, 1, 1, 1), True)):
    plain[f'features.{i}.weight'] = t[f'features.{j}.weight']
    plain[f'features.{i}.bias'] = t[f'features.{j}.bias']
  assert sorted(int(k.split('.')[1]) for k in plain if k.endswith('.weight')
                and k.startswith('features.')) == [0, 3, 5, 8, 11, 14]
  ref = port.Vgg.describe(plain)
  assert (ref['stages'], ref['norm']) == ((1, 2, 1, 1, 1), False)
  flat = port.Vgg.to_archzoo(dict(plain), ref)
  np.testing.assert_array_equal(flat['conv2_2/conv/kernel'][0, 2],
                                plain['features.5.weight'][:, :, 0, 2].T)
  mixed = dict(t, **{'features.7.weight': np.zeros((6, 4, 3, 3), np.float32)})
  with pytest.raises(UserError, match='one width per stage'):
    port.Vgg.describe(mixed)


def test_alexnet_stems():
  """11x11 conv1 is torchvision's stem, 3x3 archzoo's small_input one, others refused;
  fc1 / fc2 / head come from classifier.1 / .4 / .6 (the dropouts hold no tensors)."""
  from train import port
  from train.errors import UserError
  t = port.read_tensors(IN_PROCESS['alexnet'][0])
  assert port.Alexnet.describe(t) == {'features': (4, 8, 8, 8, 8), 'hidden': 16,
                                      'pool_size': 2, 'small_input': False, 'num_classes': 10}
  small = dict(t, **{'features.0.weight': np.zeros((4, 1, 3, 3), np.float32)})
  assert port.Alexnet.describe(small)['small_input']
  with pytest.raises(UserError, match=r'\(7, 7\) conv1'):
    port.Alexnet.describe(dict(t, **{'features.0.weight': np.zeros((4, 1, 7, 7), np.float32)}))
  flat = port.Alexnet.to_archzoo(dict(t), port.Alexnet.describe(t))
  np.testing.assert_array_equal(flat['fc2/kernel'], t['classifier.4.weight'].T)
  np.testing.assert_array_equal(flat['conv4/conv/bias'], t['features.8.bias'])


def test_densenet_reads_the_network_off_the_tensors():
  """Blocks, layers, growth and bn_size from names and shapes; the download-era names
  (`norm.1`, `conv.2`) read like the current ones; the stem decides small_input."""
  from train import port
  from train.errors import UserError
  t = {k: v for k, v in port.read_tensors(IN_PROCESS['densenet'][0]).items()
       if not port.Densenet.skip(k)}
  ref = port.Densenet.describe(t)
  assert ref == {'block_config': (2, 2), 'growth_rate': 4, 'num_init_features': 8,
                 'bn_size': 2, 'small_input': False, 'num_classes': 10}
  old = {k.replace('denselayer2.norm2.', 'denselayer2.norm.2.').replace(
      'denselayer1.conv1.', 'denselayer1.conv.1.'): v for k, v in t.items()}
  assert 'features.denseblock2.denselayer2.norm.2.running_var' in old
  flat = port.Densenet.to_archzoo(old, port.Densenet.describe(old))
  np.testing.assert_array_equal(flat['batch_stats/denseblock2/denselayer2/norm2/var'],
                                t['features.denseblock2.denselayer2.norm2.running_var'])
  np.testing.assert_array_equal(flat['transition1/conv/conv/kernel'][0, 0],
                                t['features.transition1.conv.weight'][:, :, 0, 0].T)
  small = {k: v for k, v in t.items() if not k.startswith('features.norm0.')}
  small['features.conv0.weight'] = np.zeros((8, 1, 3, 3), np.float32)
  assert port.Densenet.describe(small)['small_input']
  with pytest.raises(UserError, match='3x3/1 small_input'):
    port.Densenet.describe(dict(t, **{'features.conv0.weight': small['features.conv0.weight']}))


def test_deit_reads_the_network_off_timm_tensors():
  """Sizes from the tensors, the head count from timm's config.json (model_args, or the size
  its architecture names; none: refused); without dist_token / head_dist it is a plain
  class-token ViT; DeiT III's LayerScale and pooling without a class token are refused;
  qkv's fused rows split [q; k; v], head-major; the exported config.json builds the same
  network."""
  from train import port
  from train.errors import UserError
  t = port.read_tensors(DEIT)
  meta = port.read_reference_config(DEIT)
  ref = port.Deit.describe(t, meta)
  assert ref == {'image_size': 32, 'patch_size': 4, 'embed_dim': 16, 'depth': 2,
                 'num_heads': 2, 'mlp_dim': 32, 'num_classes': 10, 'pool': 'cls',
                 'distilled': True, 'norm_eps': 1e-6}
  assert port.Deit.heads({'architecture': 'deit_small_distilled_patch16_224'}) == 6
  with pytest.raises(UserError, match='head count cannot be read'):
    port.Deit.describe(t, None)
  plain = {k: v for k, v in t.items() if not k.startswith(('dist_token', 'head_dist'))}
  plain['pos_embed'] = t['pos_embed'][:, 1:]
  assert not port.Deit.describe(plain, meta)['distilled']
  with pytest.raises(UserError, match='LayerScale'):
    port.Deit.describe(dict(t, **{'blocks.0.ls1.gamma': np.ones(16, np.float32)}), meta)
  with pytest.raises(UserError, match='no cls_token'):
    port.Deit.describe({k: v for k, v in plain.items() if k != 'cls_token'}, meta)
  flat = port.Deit.to_archzoo(dict(t), ref)
  w = t['blocks.1.attn.qkv.weight']  # (3 * 16, 16): q, k, v rows, 2 heads of 8 each
  np.testing.assert_array_equal(flat['encoder/layers_1/self_attn/key/kernel'][:, 1],
                                w[24:32].T)
  np.testing.assert_array_equal(flat['head_dist/kernel'], t['head_dist.weight'].T)
  exported = port.Deit.reference_config(ref, 1)
  assert port.Deit.describe(t, exported) == ref
  assert exported['model_args']['mlp_ratio'] == 2.0
  with pytest.raises(UserError, match='--from timm'):
    port.import_weights(None, 'deit', DEIT, '/nonexistent', source='torchvision')


def test_cait_swin_and_efficientnet_read_the_network_off_the_tensors():
  """CaiT's heads from talking heads' proj_l (heads x heads); Swin's heads and window from
  each stage's bias table, V2 refused, the relative_position_index buffer a constant that
  export writes back as torchvision has it; EfficientNet's multipliers from the blocks,
  a config whose other multipliers build the same blocks accepted, V2's fused blocks
  refused."""
  from train import port
  from train.errors import UserError
  t = port.read_tensors(CAIT)
  ref = port.Cait.describe(t)
  assert (ref['num_heads'], ref['class_depth'], ref['class_mlp_dim']) == (2, 2, 64)
  flat = port.Cait.to_archzoo(dict(t), ref)
  np.testing.assert_array_equal(flat['layers_1/self_attn/mix_weights/kernel'],
                                t['blocks.1.attn.proj_w.weight'].T)
  np.testing.assert_array_equal(flat['class_layers_0/class_attn/value/bias'][1],
                                t['blocks_token_only.0.attn.v.bias'][8:])
  np.testing.assert_array_equal(flat['class_layers_1/class_attn_scale'],
                                t['blocks_token_only.1.gamma_1'])

  t = port.read_tensors(SWIN)
  index = t['features.3.1.attn.relative_position_index']
  ref = port.Swin.describe({k: v for k, v in t.items() if not port.Swin.skip(k)})
  assert ref == {'patch_size': 2, 'embed_dim': 8, 'depths': (2, 2), 'num_heads': (1, 2),
                 'window_size': 4, 'mlp_ratio': 4.0, 'num_classes': 10}
  config, flat, _ = _mapped('swin')
  model = {**port._model_defaults(config), **config.model.to_dict()}
  back = port.Swin.to_reference(dict(flat), model)
  assert back['features.3.1.attn.relative_position_index'].dtype == index.dtype
  np.testing.assert_array_equal(back['features.3.1.attn.relative_position_index'], index)
  np.testing.assert_array_equal(flat['merge1/reduction/kernel'],
                                t['features.2.reduction.weight'].T)
  v2 = dict(t, **{'features.1.0.attn.logit_scale': np.zeros((1, 1, 1), np.float32)})
  with pytest.raises(UserError, match='Swin V2'):
    port.Swin.describe(v2)

  config, _, _ = _mapped('efficientnet')
  t = {k: v for k, v in port.read_tensors(EFFICIENTNET).items()
       if not port.Efficientnet.skip(k)}
  fields = port.Efficientnet.describe(t)
  assert (fields['width_mult'], fields['head_ratio']) == (0.05, 4)
  port.check_model_fields(config, fields, 'efficientnet')  # its depth 0.25 builds these
  from train import config_lib
  config_lib.override(config, 'model.width_mult', '0.25')
  with pytest.raises(UserError, match=r'--config.model.width_mult=0.05'):
    port.check_model_fields(config, fields, 'efficientnet')
  fused = {k: v for k, v in t.items() if not k.startswith('features.2.0.block.2.')}
  with pytest.raises(UserError, match='EfficientNetV2'):
    port.Efficientnet.describe(fused)


def test_autoencoder_kl_names_and_refusals():
  """diffusers' resnets / attentions / samplers in their places (a conv_shortcut where the
  width changes: encoder down1, decoder up1), the pre-2023 attention names (query, key,
  value, proj_attn) read like to_q, to_k, to_v, to_out.0; what archzoo's AutoencoderKL
  cannot build refused."""
  from train import port
  from train.errors import UserError
  config, flat, _ = _mapped('autoencoder_kl')
  t = port.read_tensors(VAE)
  ref = port.read_reference_config(VAE)
  np.testing.assert_array_equal(flat['encoder/down1_res0/conv_shortcut/kernel'][0, 0],
                                t['encoder.down_blocks.1.resnets.0.conv_shortcut.weight'][
                                    :, :, 0, 0].T)
  np.testing.assert_array_equal(flat['decoder/up1_res1/norm2/scale'],
                                t['decoder.up_blocks.1.resnets.1.norm2.weight'])
  np.testing.assert_array_equal(flat['decoder/up0_upsample/kernel'][2, 1],
                                t['decoder.up_blocks.0.upsamplers.0.conv.weight'][:, :, 2, 1].T)
  assert 'encoder/down0_res0/conv_shortcut/kernel' not in flat
  assert 'decoder/up1_res0/conv_shortcut/kernel' in flat
  old = {k.replace('.to_q.', '.query.').replace('.to_out.0.', '.proj_attn.'): v
         for k, v in t.items()}
  assert 'decoder.mid_block.attentions.0.proj_attn.bias' in old
  again = port.AutoencoderKl.to_archzoo(old, ref)
  assert sorted(again) == sorted(flat)
  np.testing.assert_array_equal(again['decoder/mid/attn/out/kernel'],
                                t['decoder.mid_block.attentions.0.to_out.0.weight'].T)
  for field, value, message in (('act_fn', 'relu', "act_fn='relu'"),
                                ('_class_name', 'AsymmetricAutoencoderKL', '_class_name'),
                                ('up_block_types', ['UpDecoderBlock2D', 'AttnUpDecoderBlock2D'],
                                 'AttnUpDecoderBlock2D'),
                                ('use_quant_conv', False, 'use_quant_conv=False')):
    with pytest.raises(UserError, match=re.escape(message)):
      port.AutoencoderKl.model_fields({**ref, field: value})


def test_mamba_and_rwkv_names_and_refusals():
  """Mamba: conv1d's depthwise (E, 1, K) weight is the (K, E) kernel, dt_rank None is
  ceil(D / 16); RWKV: the (1, 1, D) mixes are (D,), pre_ln only in block 0, default widths
  None; what archzoo's models cannot build refused in one line."""
  from train import port
  from train.errors import UserError
  _, flat, _ = _mapped('mamba')
  t = port.read_tensors(MAMBA)
  ref = port.read_reference_config(MAMBA)
  np.testing.assert_array_equal(flat['layers_1/mixer/conv1d/kernel'][3],
                                t['backbone.layers.1.mixer.conv1d.weight'][:, 0, 3])
  np.testing.assert_array_equal(flat['layers_0/mixer/x_proj/kernel'],
                                t['backbone.layers.0.mixer.x_proj.weight'].T)
  assert 'layers_0/mixer/in_proj/bias' not in flat
  auto = port.Mamba.model_fields({**ref, 'hidden_size': 768, 'intermediate_size': 1536,
                                  'time_step_rank': 'auto'})
  assert auto['dt_rank'] == 48
  assert port.Mamba.equivalent_fields(auto, {'dt_rank': None})['dt_rank'] is None
  assert port.Mamba.equivalent_fields(auto, {'dt_rank': 40})['dt_rank'] == 48
  for field, value in (('use_bias', True), ('use_conv_bias', False), ('hidden_act', 'gelu'),
                       ('tie_word_embeddings', False), ('intermediate_size', 48)):
    with pytest.raises(UserError, match=field):
      port.Mamba.model_fields({**ref, field: value})
  _, flat, _ = _mapped('rwkv')
  t = port.read_tensors(RWKV)
  ref = port.read_reference_config(RWKV)
  np.testing.assert_array_equal(flat['blocks_1/attention/time_mix_value'],
                                t['rwkv.blocks.1.attention.time_mix_value'][0, 0])
  np.testing.assert_array_equal(flat['blocks_0/feed_forward/key/kernel'],
                                t['rwkv.blocks.0.feed_forward.key.weight'].T)
  assert 'blocks_0/pre_ln/scale' in flat and 'blocks_1/pre_ln/scale' not in flat
  fields = port.Rwkv.model_fields({**ref, 'intermediate_size': None})
  assert fields['ffn_dim'] == 64
  assert port.Rwkv.equivalent_fields(fields, {'ffn_dim': None})['ffn_dim'] is None
  with pytest.raises(UserError, match='tie_word_embeddings'):
    port.Rwkv.model_fields({**ref, 'tie_word_embeddings': True})


def test_dit_shared_embedder_swapped_halves_and_refusals():
  """diffusers' per-block copies of the timestep MLP and label table must equal block 0's
  (refused otherwise) and come back in every block; the residual stream's halves are
  swapped in every kernel that reads or writes it (position table: column first there,
  row first here), an involution; what archzoo's DiT or diffusers' config cannot say is
  refused."""
  from train import config_lib, port
  from train.errors import UserError
  config, flat, _ = _mapped('dit')
  t = port.read_tensors(DIT)
  ref = port.read_reference_config(DIT)
  np.testing.assert_array_equal(flat['label_embed/embedding'],
                                t['transformer_blocks.1.norm1.emb.class_embedder.'
                                  'embedding_table.weight'])
  w = t['transformer_blocks.0.attn1.to_q.weight'].T  # (in, out): rows read the stream
  np.testing.assert_array_equal(flat['block0/attn/query/kernel'][:8].reshape(8, 16), w[8:])
  np.testing.assert_array_equal(flat['patch_embed/proj/bias'],
                                np.concatenate([t['pos_embed.proj.bias'][8:],
                                                t['pos_embed.proj.bias'][:8]]))
  adaln = t['transformer_blocks.1.norm1.linear.bias'].reshape(6, 16)  # shift, scale, gate x 2
  np.testing.assert_array_equal(flat['block1/adaln/bias'].reshape(6, 16)[:, :8], adaln[:, 8:])
  np.testing.assert_array_equal(flat['final/linear/bias'], t['proj_out_2.bias'])  # not the stream
  a = np.arange(12.0)
  np.testing.assert_array_equal(port.Dit._swap(port.Dit._swap(a, 0), 0), a)
  bad = dict(t)
  key = 'transformer_blocks.1.norm1.emb.timestep_embedder.linear_2.bias'
  bad[key] = bad[key] + 1
  with pytest.raises(UserError, match="differs from block 0's"):
    port.Dit.to_archzoo(bad, ref)
  for field, value in (('norm_type', 'ada_norm_single'), ('activation_fn', 'gelu'),
                       ('norm_elementwise_affine', True), ('out_channels', 3),
                       ('_class_name', 'PixArtTransformer2DModel'),
                       ('cross_attention_dim', 64)):
    with pytest.raises(UserError, match=field):
      port.Dit.model_fields({**ref, field: value})
  assert port.Dit.model_fields({**ref, 'out_channels': None})['learn_sigma'] is False
  # the published DiT-XL-2-256's config.json: the class it had before DiTTransformer2DModel
  legacy = {**ref, '_class_name': 'Transformer2DModel', 'cross_attention_dim': None}
  assert port.Dit.model_fields(legacy) == port.Dit.model_fields(ref)
  config_lib.override(config, 'model.frequency_shift', '0.0')
  with pytest.raises(UserError, match='frequency_shift=0.0'):
    port.Dit.reference_config_of(config)


def test_unet_names_and_refusals():
  """diffusers' up_blocks count from the deepest level (up_blocks.0 is archzoo's up{L-1}),
  resnets keep their names (a conv_shortcut where the width changes), transformer blocks
  split q/k/v into the level's heads (SDXL: per level); what archzoo's U-Net or diffusers'
  config cannot express refused."""
  from train import port
  from train.errors import UserError
  _, flat, _ = _mapped('unet')
  t = port.read_tensors(UNET)
  ref = port.read_reference_config(UNET)
  np.testing.assert_array_equal(flat['up1_res0/conv1/kernel'][1, 2],
                                t['up_blocks.0.resnets.0.conv1.weight'][:, :, 1, 2].T)
  np.testing.assert_array_equal(flat['up0_attn1/block0/attn2/key/kernel'].reshape(12, 4),
                                t['up_blocks.1.attentions.1.transformer_blocks.0.attn2.'
                                  'to_k.weight'].T)
  assert flat['mid_attn/block0/attn1/query/kernel'].shape == (8, 2, 4)  # 2 heads of 4
  assert 'down1_res0/conv_shortcut/kernel' in flat and 'down0_res0/conv_shortcut/kernel' \
      not in flat
  _, xl, _ = _mapped('unet_xl')
  assert xl['down1_attn0/block1/attn1/query/kernel'].shape == (8, 2, 4)
  assert xl['up1_attn0/proj_in/kernel'].shape == (8, 8)  # Linear (SDXL), not a 1x1 conv
  for field, value in (('class_embed_type', 'timestep'), ('act_fn', 'gelu'),
                       ('resnet_time_scale_shift', 'scale_shift'), ('num_class_embeds', 10),
                       ('addition_embed_type', 'text'), ('mid_block_type', 'UNetMidBlock2D'),
                       ('down_block_types', ['AttnDownBlock2D', 'DownBlock2D']),
                       ('up_block_types', ['CrossAttnUpBlock2D', 'UpBlock2D']),
                       ('layers_per_block', [1, 2]), ('center_input_sample', True)):
    with pytest.raises(UserError, match=field):
      port.Unet.model_fields({**ref, field: value})
  with pytest.raises(UserError, match='cross-attention'):  # the digits U-Net: no context
    port.Unet.reference_config_of(load_config('ddpm_digits.py:tiny=True'))


# published name (tests/fixtures/port/published_layouts.json.gz) -> (arch, config, input
# side, the reference's parameter count)
PUBLISHED = {
    'swin_t': ('swin', 'swin_imagenet.py:variant=T', 224, 28_288_354),
    'efficientnet_b0': ('efficientnet', 'efficientnet_imagenet.py:variant=b0', 224, 5_288_548),
    'efficientnet_b5': ('efficientnet', 'efficientnet_imagenet.py:variant=b5', 224, 30_389_784),
    'deit_tiny_distilled_patch16_224': ('deit', 'deit_imagenet.py:variant=Ti,distillation=none',
                                        224, 5_910_800),
    'cait_xxs24_224': ('cait', 'cait_imagenet.py:variant=XXS24', 224, 11_956_264),
    'sd15_vae': ('autoencoder_kl', 'vae_digits.py:model=kl,variant=sd15', 64, 83_653_863),
    # (side: tokens in the init batch)
    'mamba-130m-hf': ('mamba', 'mamba_pydoc.py:variant=130m', 4, 129_135_360),
    'rwkv-4-169m-pile': ('rwkv', 'rwkv_pydoc.py:variant=169m', 4, 169_342_464),
    # diffusers' count is 749,826,464: each of its 28 blocks keeps a copy of the timestep
    # MLP and label table (2,777,472 parameters) that the official DiT and archzoo have once.
    'DiT-XL-2-256': ('dit', 'dit_digits.py:variant=XL/2', 32, 674_834_720),
    'sd15_unet': ('unet', 'ddpm_digits.py:variant=sd15', 8, 859_520_964),
    'sdxl_unet': ('unet', 'ddpm_digits.py:variant=sdxl', 8, 2_567_463_684),
}
# What the config needs beyond its named size to be the reference's network.
PUBLISHED_OVERRIDES = {'DiT-XL-2-256': dict(model__frequency_shift=1.0,
                                            model__mlp_norm_eps=1e-5)}
# The reference's own parameter count (its tensors; the LMs' and DiT's hold no buffers).
PUBLISHED_REFERENCE_COUNT = {'mamba-130m-hf': 129_135_360, 'rwkv-4-169m-pile': 169_342_464,
                             'DiT-XL-2-256': 674_834_720 + 27 * 2_777_472,  # 749,826,464
                             'sd15_unet': 859_520_964, 'sdxl_unet': 2_567_463_684}


def _init_inputs(arch, side):
  """A batch of one for the network's init: images, tokens, or DiT's (x, t, label)."""
  import jax.numpy as jnp
  if arch in ('mamba', 'rwkv'):
    return (jnp.zeros((1, side), jnp.int32),)
  if arch == 'dit':
    return jnp.zeros((1, side, side, 4)), jnp.zeros((1,)), jnp.zeros((1,), jnp.int32)
  if arch == 'unet':  # (the context and SDXL's added inputs: zeros of their widths at init)
    return jnp.zeros((1, side, side, 4)), jnp.zeros((1,))
  return (jnp.zeros((1, side, side, 3)),)


@pytest.mark.parametrize('name', sorted(PUBLISHED))
def test_published_layouts_map_onto_the_named_sizes(name):
  """The published sizes' tensor names and shapes (written without values by
  tests/make_port_fixtures.py from torchvision, timm and diffusers) describe the config's
  named size (EfficientNet-B5's BatchNorm eps included), fill its params leaf for leaf
  (eval_shape: nothing allocated) with the reference's parameter count, and map back onto
  the same names and shapes."""
  import gzip
  import flax.linen as nn
  import jax
  import arch as arch_lib
  from train import port
  with gzip.open(os.path.join(REPO, 'tests', 'fixtures', 'port',
                              'published_layouts.json.gz'), 'rt') as f:
    layout = json.load(f)[name]
  arch, spec, side, count = PUBLISHED[name]
  fmt = port.ARCHS[arch]
  # Zero-stride arrays: the shapes without the memory.
  t = {k: np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), tuple(s), (0,) * len(s))
       for k, s in layout['tensors'].items()}
  t = {k: v for k, v in t.items() if not fmt.skip(k)}
  if hasattr(fmt, 'describe'):
    ref = fmt.describe(t, layout.get('config')) if fmt.source == 'timm' else fmt.describe(t)
  else:
    ref = layout['config']
  config = load_config(spec, **PUBLISHED_OVERRIDES.get(name, {}))
  port.check_model_fields(config, fmt.model_fields(ref), arch)
  flat = fmt.to_archzoo(dict(t), ref)
  model = arch_lib.model_from_config(config)
  shapes = nn.unbox(jax.eval_shape(lambda: model.init(jax.random.key(0),
                                                      *_init_inputs(arch, side))))
  want = {k: v.shape for k, v in port._flat(shapes['params']).items()}
  assert sum(int(np.prod(s)) for s in want.values()) == count
  if name in PUBLISHED_REFERENCE_COUNT:
    assert sum(int(np.prod(s)) for s in layout['tensors'].values()) == (
        PUBLISHED_REFERENCE_COUNT[name])
  want.update({'batch_stats/' + k: v.shape
               for k, v in port._flat(shapes.get('batch_stats', {})).items()})
  port.check_leaves(flat, want, name)
  back = fmt.to_reference(flat, {**port._model_defaults(config), **config.model.to_dict()})
  assert {k: list(v.shape) for k, v in back.items()} == layout['tensors']
