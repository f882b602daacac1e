"""Writes the weight-import parity fixtures under tests/fixtures/port/: small, randomly
initialised reference models saved the way their libraries publish weights (safetensors
and config.json), with the reference logits on fixed inputs.

Needs the reference libraries, which archzoo itself never imports (a throwaway
virtualenv: `pip install torch transformers safetensors`):

  /path/to/refenv/bin/python tests/make_port_fixtures.py

The committed fixtures let CI check parity without them (tests/test_port.py).
"""

import json
import os

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
      norm = name.split('.')[-2].startswith(('ln', 'layernorm'))
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


if __name__ == '__main__':
  gpt2_tiny()
  vit_tiny()
