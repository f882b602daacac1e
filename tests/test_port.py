"""Published weights in and out (train/port.py), against fixtures a reference library wrote
(tests/make_port_fixtures.py: a small randomly initialised Hugging Face GPT2LMHeadModel
saved as safetensors, with its logits on fixed tokens): the imported run's logits match
on 1 and 8 devices, export gives back the same tensors bit for bit, the imported run
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
SPEC = 'configs/gpt_pydoc.py:variant=tiny'
# arch -> (fixture, the config whose network it is)
FIXTURES = {'gpt2': (GPT2, SPEC), 'vit': (VIT, 'configs/vit_digits.py:tiny')}


def _port(args, data_dir, devices=1):
  proc = run_cli(args, data_dir, devices=devices, module='train.port')
  return proc.returncode, proc.stdout + proc.stderr


def _import(workdir, data_dir, devices=1, src=GPT2, arch='gpt2'):
  fixture, spec = FIXTURES[arch]
  return _port(['--from', 'hf', '--arch', arch, '--src', src, '--workdir', workdir,
                '--config', spec, '--reference_logits', os.path.join(fixture, 'reference.npz')],
               data_dir, devices)


@pytest.mark.parametrize('arch, devices', [('gpt2', 1), ('gpt2', 8), ('vit', 8)])
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
             'id2label'))])
def test_export_round_trip_is_exact(tmp_path, data_dir, arch, keys):
  from safetensors.numpy import load_file
  from train import port
  fixture, spec = FIXTURES[arch]
  assert _import(tmp_path / 'run', data_dir, src=fixture, arch=arch)[0] == 0
  code, out = _port(['--to', 'hf', '--arch', arch, '--workdir', tmp_path / 'run',
                     '--config', spec, '--dst', tmp_path / 'out'], data_dir)
  assert code == 0, out[-3000:]
  want = load_file(os.path.join(fixture, 'model.safetensors'))
  got = load_file(str(tmp_path / 'out' / 'model.safetensors'))
  assert sorted(got) == sorted(k for k in want if not port.ARCHS[arch].skip(k))
  for k, v in got.items():
    assert v.dtype == want[k].dtype
    np.testing.assert_array_equal(v, want[k])
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
