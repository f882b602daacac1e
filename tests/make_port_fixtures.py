"""Writes the weight-import parity fixtures under tests/fixtures/port/: small, randomly
initialised reference models saved the way their libraries publish weights (safetensors
and config.json), with the reference logits on fixed inputs.

Needs the reference libraries, which archzoo itself never imports (a throwaway
virtualenv: `pip install torch transformers safetensors torchvision`):

  /path/to/refenv/bin/python tests/make_port_fixtures.py [gpt2 vit bert llama resnet]

The committed fixtures let CI check parity without them (tests/test_port.py).
"""

import json
import os
import sys

import numpy as np
import torch

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures', 'port')
# Token ids of the fixed inputs: two rows, covering the vocabulary's ends.
TOKENS = np.array([[0, 5, 17, 259, 64, 3, 128, 200, 11, 99, 1, 250, 42, 7, 31, 180],
                   [258, 2, 90, 91, 92, 13, 13, 13, 140, 6, 77, 255, 33, 21, 8, 160]])


def _randomise(model, seed):
  """Every parameter redrawn (LayerNorm scales and all biases too, which a default
  initialisation leaves at 1 and 0, where a mapping error would not show)."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      parent = name.split('.')[-2].lower()
      norm = parent.startswith(('ln', 'layernorm', 'bn')) or parent.endswith('norm')
      centre = 1.0 if norm and name.endswith('weight') else 0.0
      p.copy_(centre + torch.randn(p.shape, generator=g) * 0.2)


def gpt2_tiny():
  from transformers import GPT2Config, GPT2LMHeadModel
  config = GPT2Config(vocab_size=260, n_positions=64, n_embd=32, n_layer=2, n_head=2,
                      layer_norm_epsilon=1e-5, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                      bos_token_id=259, eos_token_id=259)
  torch.manual_seed(0)
  model = GPT2LMHeadModel(config).eval()
  _randomise(model, 0)
  out = os.path.join(HERE, 'gpt2_tiny')
  os.makedirs(out, exist_ok=True)
  model.save_pretrained(out, safe_serialization=True)
  with torch.no_grad():
    logits = model(torch.as_tensor(TOKENS)).logits.numpy()
  np.savez(os.path.join(out, 'reference.npz'), tokens=TOKENS.astype(np.int32),
           logits=logits.astype(np.float32))
  with open(os.path.join(out, 'config.json')) as f:
    print('gpt2_tiny:', json.load(f)['model_type'], logits.shape, float(np.abs(logits).max()))


def vit_tiny():
  """configs/vit_digits.py:tiny's network: 32x32 single-channel images, 4x4 patches."""
  from transformers import ViTConfig, ViTForImageClassification
  config = ViTConfig(image_size=32, patch_size=4, num_channels=1, hidden_size=16,
                     num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                     num_labels=10, layer_norm_eps=1e-6, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0)
  torch.manual_seed(0)
  model = ViTForImageClassification(config).eval()
  _randomise(model, 1)
  out = os.path.join(HERE, 'vit_tiny')
  os.makedirs(out, exist_ok=True)
  model.save_pretrained(out, safe_serialization=True)
  images = np.random.default_rng(0).normal(size=(2, 32, 32, 1)).astype(np.float32)  # NHWC
  with torch.no_grad():
    logits = model(torch.as_tensor(images).permute(0, 3, 1, 2)).logits.numpy()
  np.savez(os.path.join(out, 'reference.npz'), images=images, logits=logits.astype(np.float32))
  print('vit_tiny:', logits.shape, float(np.abs(logits).max()))


def bert_tiny():
  """configs/bert_pydoc.py's byte vocabulary and 128 positions, 2 layers of width 16.
  archzoo masks pad keys (id 0) always; the reference is given that mask too."""
  from transformers import BertConfig, BertForPreTraining
  config = BertConfig(vocab_size=260, hidden_size=16, num_hidden_layers=2,
                      num_attention_heads=2, intermediate_size=64, max_position_embeddings=128,
                      type_vocab_size=2, layer_norm_eps=1e-12, hidden_dropout_prob=0.0,
                      attention_probs_dropout_prob=0.0, pad_token_id=0)
  torch.manual_seed(0)
  model = BertForPreTraining(config).eval()
  _randomise(model, 2)
  out = os.path.join(HERE, 'bert_tiny')
  os.makedirs(out, exist_ok=True)
  model.save_pretrained(out, safe_serialization=True)
  types = np.zeros_like(TOKENS)
  types[0, 8:], types[1, 5:] = 1, 1  # segment B from position 8 / 5
  with torch.no_grad():
    got = model(torch.as_tensor(TOKENS), token_type_ids=torch.as_tensor(types),
                attention_mask=torch.as_tensor(TOKENS != 0).long())
  np.savez(os.path.join(out, 'reference.npz'), tokens=TOKENS.astype(np.int32),
           token_types=types.astype(np.int32),
           mlm_logits=got.prediction_logits.numpy().astype(np.float32),
           nsp_logits=got.seq_relationship_logits.numpy().astype(np.float32))
  print('bert_tiny:', got.prediction_logits.shape, got.seq_relationship_logits.shape)


def llama_tiny():
  """configs/llama_pydoc.py:variant=tiny's shape at width 16: 4 query heads sharing 2
  key/value heads (GQA), RoPE base 1000 (not the default, so that it is checked)."""
  from transformers import LlamaConfig, LlamaForCausalLM
  config = LlamaConfig(vocab_size=260, hidden_size=16, intermediate_size=32,
                       num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                       max_position_embeddings=64, rms_norm_eps=1e-5, rope_theta=1000.0,
                       tie_word_embeddings=False, attention_bias=False, mlp_bias=False,
                       bos_token_id=259, eos_token_id=259, pad_token_id=None)
  torch.manual_seed(0)
  model = LlamaForCausalLM(config).eval()
  _randomise(model, 3)
  out = os.path.join(HERE, 'llama_tiny')
  os.makedirs(out, exist_ok=True)
  model.save_pretrained(out, safe_serialization=True)
  with torch.no_grad():
    logits = model(torch.as_tensor(TOKENS)).logits.numpy()
  np.savez(os.path.join(out, 'reference.npz'), tokens=TOKENS.astype(np.int32),
           logits=logits.astype(np.float32))
  with open(os.path.join(out, 'config.json')) as f:
    print('llama_tiny:', json.load(f), logits.shape)


def _torchvision():
  """torchvision, imported where its compiled ops do not load (a CUDA build of torchvision
  beside a CPU build of torch): its import registers fakes for the nms ops, which then
  need a schema. ResNet's modules use none of them."""
  import glob
  import importlib.util
  if 'torchvision' in sys.modules:
    return sys.modules['torchvision']
  spec = importlib.util.find_spec('torchvision')
  try:
    torch.ops.load_library(glob.glob(os.path.join(os.path.dirname(spec.origin), '_C*.so'))[0])
  except (OSError, IndexError):
    lib = torch.library.Library('torchvision', 'DEF')
    lib.define('nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor')
    lib.define('qnms(Tensor dets, Tensor scores, float iou_threshold, float thresh2) -> Tensor')
    _torchvision.lib = lib
  import torchvision
  return torchvision


def resnet_tiny(block='basic', layers=(2, 1, 1, 1), widths=(4, 8, 8, 16), stem=4, seed=4):
  """torchvision's ResNet (its BasicBlock or Bottleneck, _make_layer and forward) at tiny
  widths: the stages are rebuilt by the model's own _make_layer (torchvision fixes the
  widths at 64-512 otherwise); a 1-channel 7x7/2 stem for configs/resnet_digits.py's 32x32
  digits. Every parameter and BatchNorm statistic is random; logits in eval mode."""
  tv = _torchvision()
  from torchvision.models import resnet
  cls = {'basic': resnet.BasicBlock, 'bottleneck': resnet.Bottleneck}[block]
  torch.manual_seed(0)
  model = resnet.ResNet(cls, [1, 1, 1, 1], num_classes=10)
  model.inplanes = stem
  model.conv1 = torch.nn.Conv2d(1, stem, kernel_size=7, stride=2, padding=3, bias=False)
  model.bn1 = torch.nn.BatchNorm2d(stem)
  for i, (n, w) in enumerate(zip(layers, widths)):
    setattr(model, f'layer{i + 1}', model._make_layer(cls, w, n, stride=1 if i == 0 else 2))
  model.fc = torch.nn.Linear(widths[-1] * cls.expansion, 10)
  model.eval()
  _randomise(model, seed)
  g = torch.Generator().manual_seed(seed + 100)
  for name, buf in model.named_buffers():
    if name.endswith('running_mean'):
      buf.copy_(torch.randn(buf.shape, generator=g) * 0.2)
    elif name.endswith('running_var'):
      buf.copy_(0.5 + torch.rand(buf.shape, generator=g))
  out = os.path.join(HERE, f'resnet_{block}_tiny')
  os.makedirs(out, exist_ok=True)
  from safetensors.torch import save_file
  save_file({k: v.contiguous() for k, v in model.state_dict().items()},
            os.path.join(out, 'model.safetensors'))
  images = np.random.default_rng(seed).normal(size=(2, 32, 32, 1)).astype(np.float32)
  with torch.no_grad():
    logits = model(torch.as_tensor(images).permute(0, 3, 1, 2)).numpy()
  np.savez(os.path.join(out, 'reference.npz'), images=images, logits=logits.astype(np.float32))
  print(f'resnet_{block}_tiny (torchvision {tv.__version__}):', logits.shape,
        float(np.abs(logits).max()))


FIXTURES = {'gpt2': gpt2_tiny, 'vit': vit_tiny, 'bert': bert_tiny, 'llama': llama_tiny,
            'resnet': lambda: (resnet_tiny('basic'), resnet_tiny(
                'bottleneck', (1, 1, 1, 1), (2, 4, 4, 8), 4, 5))}


if __name__ == '__main__':
  # Names (gpt2 vit bert llama ...) write those fixtures only; none: all of them.
  for name in sys.argv[1:] or FIXTURES:
    FIXTURES[name]()
