"""Writes the weight-import parity fixtures under tests/fixtures/port/: small, randomly
initialised reference models saved the way their libraries publish weights (safetensors
and config.json), with the reference logits on fixed inputs.

Needs the reference libraries, which archzoo itself never imports (a throwaway
virtualenv: `pip install torch transformers safetensors torchvision timm diffusers`):

  /path/to/refenv/bin/python tests/make_port_fixtures.py [gpt2 vit bert llama resnet t5 bart
      clip vgg alexnet densenet deit cait swin efficientnet vae mamba rwkv dit unet
      unet_xl layouts]

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
      parent = name.split('.')[-2].lower() if '.' in name else ''
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


def _seq2seq_inputs():
  """Sources with pads at the end of the second row (archzoo's id 0) and shorter decoder
  inputs: (sources (2, 16), targets (2, 12)) int32."""
  sources = TOKENS.copy()
  sources[1, 12:] = 0
  targets = np.ascontiguousarray(TOKENS[::-1, 2:14])
  targets[:, 0] = 1  # a decoder-start token
  return sources.astype(np.int32), targets.astype(np.int32)


def _save_seq2seq(model, name):
  out = os.path.join(HERE, name)
  os.makedirs(out, exist_ok=True)
  model.save_pretrained(out, safe_serialization=True)
  sources, targets = _seq2seq_inputs()
  with torch.no_grad():
    logits = model(input_ids=torch.as_tensor(sources).long(),
                   attention_mask=torch.as_tensor(sources != 0).long(),
                   decoder_input_ids=torch.as_tensor(targets).long()).logits.numpy()
  np.savez(os.path.join(out, 'reference.npz'), sources=sources, targets=targets,
           logits=logits.astype(np.float32))
  print(f'{name}:', logits.shape, float(np.abs(logits).max()))


def t5_tiny():
  """T5 v1.0 (t5-small's layout: ReLU MLP, tied head rescaled by d_model^-1/2) at width 16,
  2 + 2 layers, 2 heads of 8 (d_kv * heads need not be d_model: here it is), 8 relative
  buckets up to distance 12, so that 16-token sources reach the log-spaced buckets and the
  clamp past max_distance. archzoo masks pad sources (id 0); the reference is given that
  mask too."""
  from transformers import T5Config, T5ForConditionalGeneration
  config = T5Config(vocab_size=260, d_model=16, d_kv=8, d_ff=32, num_layers=2,
                    num_decoder_layers=2, num_heads=2, relative_attention_num_buckets=8,
                    relative_attention_max_distance=12, dropout_rate=0.0,
                    layer_norm_epsilon=1e-6, feed_forward_proj='relu',
                    tie_word_embeddings=True, pad_token_id=0, eos_token_id=2,
                    decoder_start_token_id=1)
  torch.manual_seed(0)
  model = T5ForConditionalGeneration(config).eval()
  _randomise(model, 6)
  _save_seq2seq(model, 't5_tiny')


def bart_tiny():
  """BART (bart-base's layout: post-LN, learned positions offset by 2, layernorm_embedding,
  exact GELU, tied head) at width 16, 2 + 2 layers, 2 heads, bart_pydoc's 128 positions.
  pad id 0 as archzoo's; final_logits_bias is a buffer and stays zero, as in the released
  models."""
  from transformers import BartConfig, BartForConditionalGeneration
  config = BartConfig(vocab_size=260, d_model=16, encoder_layers=2, decoder_layers=2,
                      encoder_attention_heads=2, decoder_attention_heads=2,
                      encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=128,
                      activation_function='gelu', dropout=0.0, attention_dropout=0.0,
                      activation_dropout=0.0, scale_embedding=False, pad_token_id=0,
                      bos_token_id=1, eos_token_id=2, decoder_start_token_id=2,
                      forced_eos_token_id=None)
  torch.manual_seed(0)
  model = BartForConditionalGeneration(config).eval()
  _randomise(model, 7)
  _save_seq2seq(model, 'bart_tiny')


def clip_tiny():
  """configs/clip_digits.py:tiny's network with 2 layers per tower: a ViT tower on 16x16
  single-channel images in 4x4 patches and a causal text tower over 260 byte ids, both
  width 16, 2 heads, quick-GELU; embeddings of 8; logit_scale 2.0 (not the init, so it is
  checked). The text config keeps OpenAI's original eos_token_id=2, with which HF pools
  at each row's largest id (its end-of-text, 49407 in OpenAI's vocabulary): here every
  row ends in id 259. Eight pairs, so that every device count up to 8 splits them without
  padding; the reference's unnormalised embeddings (get_image_features /
  get_text_features) and logits_per_image."""
  from transformers import CLIPConfig, CLIPModel
  text = dict(vocab_size=260, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
              num_attention_heads=2, max_position_embeddings=48, hidden_act='quick_gelu',
              layer_norm_eps=1e-5, attention_dropout=0.0, pad_token_id=0, bos_token_id=1,
              eos_token_id=2)
  vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                num_attention_heads=2, num_channels=1, image_size=16, patch_size=4,
                hidden_act='quick_gelu', layer_norm_eps=1e-5, attention_dropout=0.0)
  config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=8)
  torch.manual_seed(0)
  model = CLIPModel(config).eval()
  _randomise(model, 8)
  with torch.no_grad():
    model.logit_scale.fill_(2.0)
  out = os.path.join(HERE, 'clip_tiny')
  os.makedirs(out, exist_ok=True)
  model.save_pretrained(out, safe_serialization=True)
  rng = np.random.default_rng(8)
  images = rng.normal(size=(8, 16, 16, 1)).astype(np.float32)  # NHWC
  tokens = np.zeros((8, 12), np.int32)
  for i, n in enumerate((12, 3, 7, 10, 5, 12, 2, 9)):
    tokens[i, :n - 1] = rng.integers(4, 259, n - 1)
    tokens[i, n - 1] = 259
  pixels, ids = torch.as_tensor(images).permute(0, 3, 1, 2), torch.as_tensor(tokens).long()
  with torch.no_grad():
    img = model.get_image_features(pixel_values=pixels).pooler_output.numpy()
    txt = model.get_text_features(input_ids=ids).pooler_output.numpy()
    logits = model(input_ids=ids, pixel_values=pixels).logits_per_image.numpy()
  np.savez(os.path.join(out, 'reference.npz'), images=images, tokens=tokens,
           image_embeds=img.astype(np.float32), text_embeds=txt.astype(np.float32),
           logits_per_image=logits.astype(np.float32))
  print('clip_tiny:', img.shape, txt.shape, logits.shape, float(np.abs(logits).max()))


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


def vgg_tiny():
  """torchvision's VGG (its make_layers and forward) with BatchNorm at configs/
  vgg_digits.py:tiny's widths and a 2-conv second stage (4, 4+4, 8, 8, 8), a 1-channel
  first conv for the 32x32 digits, the 2x2 adaptive pool and a 16-wide classifier rebuilt
  in torchvision's Sequential layout (torchvision fixes 7x7 and 4096 otherwise). Every
  parameter and BatchNorm statistic random; logits in eval mode."""
  _torchvision()
  from torchvision.models import vgg
  nn = torch.nn
  torch.manual_seed(0)
  features = vgg.make_layers([4, 'M', 4, 4, 'M', 8, 'M', 8, 'M', 8, 'M'], batch_norm=True)
  features[0] = nn.Conv2d(1, 4, kernel_size=3, padding=1)
  model = vgg.VGG(features, num_classes=10, init_weights=False)
  model.avgpool = nn.AdaptiveAvgPool2d((2, 2))
  model.classifier = nn.Sequential(nn.Linear(8 * 2 * 2, 16), nn.ReLU(True), nn.Dropout(),
                                   nn.Linear(16, 16), nn.ReLU(True), nn.Dropout(),
                                   nn.Linear(16, 10))
  _save_torchvision(model.eval(), 'vgg_bn_tiny', 9)


def alexnet_tiny():
  """torchvision's AlexNet (its features Sequential and forward) with its own 11x11/4 pad 2
  stem, at configs/alexnet_digits.py:tiny's widths (4, 8, 8, 8, 8) on 1-channel 64x64
  inputs (the smallest size its three pools leave 1x1 at), the 2x2 adaptive pool and a
  16-wide classifier in torchvision's Sequential layout (dropout, fc, ReLU, dropout, fc,
  ReLU, fc)."""
  _torchvision()
  from torchvision.models.alexnet import AlexNet
  nn = torch.nn
  torch.manual_seed(0)
  model = AlexNet(num_classes=10)
  model.features = nn.Sequential(
      nn.Conv2d(1, 4, kernel_size=11, stride=4, padding=2), nn.ReLU(inplace=True),
      nn.MaxPool2d(kernel_size=3, stride=2),
      nn.Conv2d(4, 8, kernel_size=5, padding=2), nn.ReLU(inplace=True),
      nn.MaxPool2d(kernel_size=3, stride=2),
      nn.Conv2d(8, 8, kernel_size=3, padding=1), nn.ReLU(inplace=True),
      nn.Conv2d(8, 8, kernel_size=3, padding=1), nn.ReLU(inplace=True),
      nn.Conv2d(8, 8, kernel_size=3, padding=1), nn.ReLU(inplace=True),
      nn.MaxPool2d(kernel_size=3, stride=2))
  model.avgpool = nn.AdaptiveAvgPool2d((2, 2))
  model.classifier = nn.Sequential(nn.Dropout(), nn.Linear(8 * 2 * 2, 16), nn.ReLU(True),
                                   nn.Dropout(), nn.Linear(16, 16), nn.ReLU(True),
                                   nn.Linear(16, 10))
  _save_torchvision(model.eval(), 'alexnet_tiny', 10, size=64)


def densenet_tiny():
  """torchvision's DenseNet (its _DenseBlock, _Transition and forward) with its own stem
  (7x7/2 conv, BN, ReLU, 3x3/2 max pool) on 1 channel, two blocks of 2 layers, growth 4,
  bn_size 2, 8 initial features (configs/densenet_digits.py's 32x32 inputs)."""
  _torchvision()
  from torchvision.models.densenet import DenseNet
  torch.manual_seed(0)
  model = DenseNet(growth_rate=4, block_config=(2, 2), num_init_features=8, bn_size=2,
                   num_classes=10)
  model.features.conv0 = torch.nn.Conv2d(1, 8, kernel_size=7, stride=2, padding=3, bias=False)
  _save_torchvision(model.eval(), 'densenet_tiny', 11)


def _save_torchvision(model, name, seed, size=32):
  """Random parameters and BatchNorm statistics, the state_dict as safetensors, and the
  eval-mode logits of two random single-channel images of size x size."""
  _randomise(model, seed)
  g = torch.Generator().manual_seed(seed + 100)
  for key, buf in model.named_buffers():
    if key.endswith('running_mean'):
      buf.copy_(torch.randn(buf.shape, generator=g) * 0.2)
    elif key.endswith('running_var'):
      buf.copy_(0.5 + torch.rand(buf.shape, generator=g))
  out = os.path.join(HERE, name)
  os.makedirs(out, exist_ok=True)
  from safetensors.torch import save_file
  save_file({k: v.contiguous() for k, v in model.state_dict().items()},
            os.path.join(out, 'model.safetensors'))
  images = np.random.default_rng(seed).normal(size=(2, size, size, 1)).astype(np.float32)
  with torch.no_grad():
    logits = model(torch.as_tensor(images).permute(0, 3, 1, 2)).numpy()
  np.savez(os.path.join(out, 'reference.npz'), images=images, logits=logits.astype(np.float32))
  print(f'{name}:', logits.shape, float(np.abs(logits).max()))


def _save_timm(model, name, seed, model_args, size=32):
  """A timm model saved as timm publishes it on the Hugging Face hub (timm's own
  save_for_hf: model.safetensors and a config.json naming the architecture and the
  model_args it was made with), random parameters, and the eval-mode logits of two random
  single-channel images of size x size."""
  from timm.models import _hub
  _randomise(model, seed)
  model.eval()
  out = os.path.join(HERE, name)
  os.makedirs(out, exist_ok=True)
  _hub.save_for_hf(model, out, model_args=model_args, safe_serialization=True)
  images = np.random.default_rng(seed).normal(size=(2, size, size, 1)).astype(np.float32)
  with torch.no_grad():
    logits = model(torch.as_tensor(images).permute(0, 3, 1, 2)).numpy()
  np.savez(os.path.join(out, 'reference.npz'), images=images, logits=logits.astype(np.float32))
  print(f'{name} (timm):', logits.shape, float(np.abs(logits).max()))


def deit_tiny():
  """timm's deit_tiny_distilled_patch16_224 (VisionTransformerDistilled: class and
  distillation tokens, `head` and `head_dist`, their mean at inference) at
  configs/deit_digits.py:tiny's size with 2 blocks: 32x32 single-channel images in 4x4
  patches, width 16, 2 heads, MLP 32."""
  import timm
  args = dict(img_size=32, patch_size=4, in_chans=1, num_classes=10, embed_dim=16, depth=2,
              num_heads=2, mlp_ratio=2.0)
  torch.manual_seed(0)
  model = timm.create_model('deit_tiny_distilled_patch16_224', pretrained=False, **args)
  _save_timm(model, 'deit_tiny', 12, args)


def cait_tiny():
  """timm's cait_xxs24_224 (talking-heads self-attention blocks with LayerScale, then
  class-attention blocks) at configs/cait_digits.py:tiny's width: 32x32 single-channel
  images in 4x4 patches, width 16, 2 heads, 2 + 2 blocks, self-attention MLP 32 and the
  class blocks' timm default of 4x (64). LayerScale gammas random like every parameter."""
  import timm
  args = dict(img_size=32, patch_size=4, in_chans=1, num_classes=10, embed_dim=16, depth=2,
              num_heads=2, mlp_ratio=2.0, depth_token_only=2)
  torch.manual_seed(0)
  model = timm.create_model('cait_xxs24_224', pretrained=False, **args)
  _save_timm(model, 'cait_tiny', 13, args)


def swin_tiny():
  """torchvision's SwinTransformer (swin_t's classes: its blocks, PatchMerging, shifted
  windows) at width 8, two stages of two blocks (1 and 2 heads), 2x2 patches, 4x4 windows
  and a 1-channel patch conv, on 24x24 images: a 12x12 map (3x3 windows, shifted) and a
  6x6 one, which torchvision pads to 8x8 and still shifts."""
  _torchvision()
  from torchvision.models.swin_transformer import SwinTransformer
  torch.manual_seed(0)
  model = SwinTransformer(patch_size=[2, 2], embed_dim=8, depths=[2, 2], num_heads=[1, 2],
                          window_size=[4, 4], num_classes=10)
  model.features[0][0] = torch.nn.Conv2d(1, 8, kernel_size=2, stride=2)
  _save_torchvision(model.eval(), 'swin_tiny', 14, size=24)


def efficientnet_tiny():
  """torchvision's EfficientNet (its MBConv, SqueezeExcitation and head) with B0's table
  compound-scaled through torchvision's own _efficientnet_conf by width 0.05 (8 to 16
  channels, a 64-wide head conv: efficientnet.TINY's 0.25 makes a 540 KB fixture) and
  efficientnet.TINY's depth 0.25 (one block per stage), on 1-channel 32x32 inputs."""
  _torchvision()
  from torchvision.models import efficientnet as tv_effnet
  torch.manual_seed(0)
  setting, last = tv_effnet._efficientnet_conf('efficientnet_b0', width_mult=0.05,
                                              depth_mult=0.25)
  model = tv_effnet.EfficientNet(setting, dropout=0.1, num_classes=10, last_channel=last)
  stem = model.features[0][0]
  model.features[0][0] = torch.nn.Conv2d(1, stem.out_channels, 3, 2, 1, bias=False)
  _save_torchvision(model.eval(), 'efficientnet_tiny', 15)


def vae_tiny():
  """diffusers' AutoencoderKL (SD 1.5's VAE classes: DownEncoderBlock2D / UpDecoderBlock2D,
  the mid block's single-head attention, quant convs) at the size of configs/
  vae_digits.py:model=kl,tiny with widths (4, 8), so that both stacks have a 1x1
  conv_shortcut: one layer per block, GroupNorm(4), 2 latent channels, 1-channel 8x8
  images. Saved by its own save_pretrained (diffusion_pytorch_model.safetensors,
  config.json); the reference outputs are the posterior's mean and log-variance and the
  decoding of the mean, as NHWC."""
  from diffusers import AutoencoderKL
  torch.manual_seed(0)
  model = AutoencoderKL(in_channels=1, out_channels=1,
                        down_block_types=('DownEncoderBlock2D',) * 2,
                        up_block_types=('UpDecoderBlock2D',) * 2, block_out_channels=(4, 8),
                        layers_per_block=1, latent_channels=2, norm_num_groups=4,
                        sample_size=8).eval()
  _randomise(model, 16)
  out = os.path.join(HERE, 'vae_tiny')
  os.makedirs(out, exist_ok=True)
  model.save_pretrained(out, safe_serialization=True)
  images = np.random.default_rng(16).uniform(-1, 1, size=(2, 8, 8, 1)).astype(np.float32)
  with torch.no_grad():
    posterior = model.encode(torch.as_tensor(images).permute(0, 3, 1, 2)).latent_dist
    sample = model.decode(posterior.mean).sample
  nhwc = lambda x: x.permute(0, 2, 3, 1).numpy().astype(np.float32)
  np.savez(os.path.join(out, 'reference.npz'), images=images, mean=nhwc(posterior.mean),
           logvar=nhwc(posterior.logvar), sample=nhwc(sample))
  print('vae_tiny (diffusers):', tuple(posterior.mean.shape), float(sample.abs().max()))


def mamba_tiny():
  """Hugging Face's MambaForCausalLM (state-spaces/mamba-130m-hf's classes and defaults:
  bias-free in/out projections, a convolution bias, tied head) at width 16, 2 layers,
  state 4, convolution 4, expand 2 and step-size rank 4 (not the default ceil(16 / 16),
  so that the field is checked). A_log, D and the dt_proj bias are redrawn like the
  rest (A = -exp(A_log) near -1, softplus(bias) near 0.7)."""
  from transformers import MambaConfig, MambaForCausalLM
  config = MambaConfig(vocab_size=260, hidden_size=16, state_size=4, num_hidden_layers=2,
                       conv_kernel=4, expand=2, time_step_rank=4, layer_norm_epsilon=1e-5,
                       use_bias=False, use_conv_bias=True, tie_word_embeddings=True,
                       bos_token_id=259, eos_token_id=259, pad_token_id=0)
  torch.manual_seed(0)
  model = MambaForCausalLM(config).eval()
  _randomise(model, 17)
  _save_lm(model, 'mamba_tiny')


def rwkv_tiny():
  """Hugging Face's RwkvForCausalLM (RWKV-4, RWKV/rwkv-4-169m-pile's classes) at width 16,
  2 layers, channel-mix width 48 (not the default 4 x 16, so that the field is checked),
  untied head. rescale_every=0: the inference-time halving of the residual every 6 layers
  (exact up to LayerNorm's eps) does not apply to 2 layers anyway."""
  from transformers import RwkvConfig, RwkvForCausalLM
  config = RwkvConfig(vocab_size=260, context_length=64, hidden_size=16, num_hidden_layers=2,
                      attention_hidden_size=16, intermediate_size=48, layer_norm_epsilon=1e-5,
                      rescale_every=0, tie_word_embeddings=False, bos_token_id=259,
                      eos_token_id=259)
  torch.manual_seed(0)
  model = RwkvForCausalLM(config).eval()
  _randomise(model, 18)
  _save_lm(model, 'rwkv_tiny')


def _save_lm(model, name):
  out = os.path.join(HERE, name)
  os.makedirs(out, exist_ok=True)
  model.save_pretrained(out, safe_serialization=True)
  with torch.no_grad():
    logits = model(torch.as_tensor(TOKENS), use_cache=False).logits.numpy()
  np.savez(os.path.join(out, 'reference.npz'), tokens=TOKENS.astype(np.int32),
           logits=logits.astype(np.float32))
  print(f'{name}:', logits.shape, float(np.abs(logits).max()))


def dit_tiny():
  """diffusers' DiTTransformer2DModel (facebook/DiT-XL-2-256's class: adaLN-Zero,
  class-conditional, learned sigma) at configs/dit_digits.py:tiny's size with 2 blocks:
  width 16 (2 heads of 8), patch 2, 8x8x1 inputs, 2 output channels, 10 classes and the
  null one; norm_eps as diffusers' default (1e-5, the MLP's LayerNorm). Each block keeps
  its own copy of the timestep MLP and label table in diffusers; the published weights
  (converted from the official checkpoint, which has one) hold equal copies, so block 0's
  is copied into the others here too. Inputs: NHWC images, float timesteps, labels (the
  second row's the null class); output `sample` (B, 8, 8, 2) NHWC."""
  from diffusers import DiTTransformer2DModel
  torch.manual_seed(0)
  model = DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=1,
                                out_channels=2, num_layers=2, sample_size=8, patch_size=2,
                                num_embeds_ada_norm=10).eval()
  _randomise(model, 19)
  shared = model.transformer_blocks[0].norm1.emb.state_dict()
  for block in model.transformer_blocks[1:]:
    block.norm1.emb.load_state_dict(shared)
  out = os.path.join(HERE, 'dit_tiny')
  os.makedirs(out, exist_ok=True)
  model.save_pretrained(out, safe_serialization=True)
  images = np.random.default_rng(19).normal(size=(2, 8, 8, 1)).astype(np.float32)
  timesteps = np.array([17.0, 803.0], np.float32)
  labels = np.array([3, 10], np.int32)
  with torch.no_grad():
    sample = model(torch.as_tensor(images).permute(0, 3, 1, 2), torch.as_tensor(timesteps),
                   torch.as_tensor(labels).long()).sample
  np.savez(os.path.join(out, 'reference.npz'), images=images, timesteps=timesteps,
           labels=labels, sample=sample.permute(0, 2, 3, 1).numpy().astype(np.float32))
  print('dit_tiny (diffusers):', tuple(sample.shape), float(sample.abs().max()))


def unet_tiny():
  """diffusers' UNet2DConditionModel with SD 1.5's block types at two levels: a
  cross-attention level (CrossAttnDownBlock2D / CrossAttnUpBlock2D) then a plain one
  (DownBlock2D / UpBlock2D), the mid block's cross-attention, widths (4, 8) (a
  conv_shortcut where the width changes; 16 would pass 150 KB), one ResNet a level, 2
  heads (diffusers' attention_head_dim=2), GroupNorm(2), 12-wide context, 8x8x1 inputs. Inputs: NHWC images,
  float timesteps, context (2, 5, 12); output `sample` (B, 8, 8, 1) NHWC."""
  from diffusers import UNet2DConditionModel
  torch.manual_seed(0)
  model = UNet2DConditionModel(
      sample_size=8, in_channels=1, out_channels=1,
      down_block_types=('CrossAttnDownBlock2D', 'DownBlock2D'),
      up_block_types=('UpBlock2D', 'CrossAttnUpBlock2D'), block_out_channels=(4, 8),
      layers_per_block=1, attention_head_dim=2, cross_attention_dim=12,
      norm_num_groups=2).eval()
  _randomise(model, 20)
  out = os.path.join(HERE, 'unet_tiny')
  os.makedirs(out, exist_ok=True)
  model.save_pretrained(out, safe_serialization=True)
  rng = np.random.default_rng(20)
  images = rng.normal(size=(2, 8, 8, 1)).astype(np.float32)
  timesteps = np.array([17.0, 803.0], np.float32)
  context = rng.normal(size=(2, 5, 12)).astype(np.float32)
  with torch.no_grad():
    sample = model(torch.as_tensor(images).permute(0, 3, 1, 2), torch.as_tensor(timesteps),
                   torch.as_tensor(context)).sample
  np.savez(os.path.join(out, 'reference.npz'), images=images, timesteps=timesteps,
           context=context, sample=sample.permute(0, 2, 3, 1).numpy().astype(np.float32))
  print('unet_tiny (diffusers):', tuple(sample.shape), float(sample.abs().max()))


def unet_xl_tiny():
  """The same class with SDXL's options: a plain first level, then a cross-attention one
  with 2 transformer blocks (and the middle's 2), per-level heads (1, 2), Linear
  proj_in/out, the 'text_time' added embedding (6 pooled-text numbers and 6 ids of 4
  sinusoids each). Inputs as unet_tiny's plus `text_embeds` (2, 6) and `time_ids` (2, 6)."""
  from diffusers import UNet2DConditionModel
  torch.manual_seed(0)
  model = UNet2DConditionModel(
      sample_size=8, in_channels=1, out_channels=1,
      down_block_types=('DownBlock2D', 'CrossAttnDownBlock2D'),
      up_block_types=('CrossAttnUpBlock2D', 'UpBlock2D'), block_out_channels=(4, 8),
      layers_per_block=1, attention_head_dim=(1, 2), transformer_layers_per_block=(1, 2),
      cross_attention_dim=12, use_linear_projection=True, addition_embed_type='text_time',
      addition_time_embed_dim=4, projection_class_embeddings_input_dim=6 + 6 * 4,
      norm_num_groups=2).eval()
  _randomise(model, 21)
  out = os.path.join(HERE, 'unet_xl_tiny')
  os.makedirs(out, exist_ok=True)
  model.save_pretrained(out, safe_serialization=True)
  rng = np.random.default_rng(21)
  images = rng.normal(size=(2, 8, 8, 1)).astype(np.float32)
  timesteps = np.array([17.0, 803.0], np.float32)
  context = rng.normal(size=(2, 5, 12)).astype(np.float32)
  text_embeds = rng.normal(size=(2, 6)).astype(np.float32)
  time_ids = np.array([[64, 64, 0, 0, 64, 64], [48, 80, 8, 4, 64, 64]], np.float32)
  with torch.no_grad():
    sample = model(torch.as_tensor(images).permute(0, 3, 1, 2), torch.as_tensor(timesteps),
                   torch.as_tensor(context), added_cond_kwargs={
                       'text_embeds': torch.as_tensor(text_embeds),
                       'time_ids': torch.as_tensor(time_ids)}).sample
  np.savez(os.path.join(out, 'reference.npz'), images=images, timesteps=timesteps,
           context=context, text_embeds=text_embeds, time_ids=time_ids,
           sample=sample.permute(0, 2, 3, 1).numpy().astype(np.float32))
  print('unet_xl_tiny (diffusers):', tuple(sample.shape), float(sample.abs().max()))


def published_layouts():
  """The tensor names and shapes (no values: built on torch's meta device) of published
  sizes, gzipped JSON: torchvision's swin_t, efficientnet_b0 and efficientnet_b5 (BatchNorm
  eps 1e-3), timm's deit_tiny_distilled_patch16_224 and cait_xxs24_224 (with the
  architecture its hub config.json names), SD 1.5's AutoencoderKL, Hugging Face's
  mamba-130m-hf and rwkv-4-169m-pile and diffusers' DiT-XL-2-256 and SD 1.5's and SDXL's
  UNet2DConditionModel (each with its config.json): tests/test_port.py maps each onto the named config's parameter tree."""
  import gzip
  import timm
  from diffusers import AutoencoderKL
  _torchvision()
  from torchvision import models
  shapes = lambda m: {k: list(v.shape) for k, v in m.state_dict().items()}
  out = {}
  with torch.device('meta'):
    for name in ('swin_t', 'efficientnet_b0', 'efficientnet_b5'):
      out[name] = {'tensors': shapes(getattr(models, name)())}
    for name in ('deit_tiny_distilled_patch16_224', 'cait_xxs24_224'):
      out[name] = {'tensors': shapes(timm.create_model(name, pretrained=False)),
                   'config': {'architecture': name}}
    vae = AutoencoderKL(in_channels=3, out_channels=3,
                        down_block_types=('DownEncoderBlock2D',) * 4,
                        up_block_types=('UpDecoderBlock2D',) * 4,
                        block_out_channels=(128, 256, 512, 512), layers_per_block=2,
                        latent_channels=4, norm_num_groups=32, sample_size=512)
    config = {k: v for k, v in dict(vae.config).items() if k != '_use_default_values'}  # a set
    out['sd15_vae'] = {'tensors': shapes(vae), 'config': json.loads(json.dumps(config,
                                                                              default=list))}
    from transformers import MambaConfig, MambaForCausalLM, RwkvConfig, RwkvForCausalLM
    from diffusers import DiTTransformer2DModel
    # config.json of state-spaces/mamba-130m-hf and RWKV/rwkv-4-169m-pile (their sizes;
    # the classes' other defaults are theirs), facebook/DiT-XL-2-256's transformer.
    for name, cls, config in (
        ('mamba-130m-hf', MambaForCausalLM, MambaConfig(
            vocab_size=50280, hidden_size=768, state_size=16, num_hidden_layers=24,
            conv_kernel=4, expand=2, time_step_rank='auto', tie_word_embeddings=True)),
        ('rwkv-4-169m-pile', RwkvForCausalLM, RwkvConfig(
            vocab_size=50277, context_length=1024, hidden_size=768, num_hidden_layers=12,
            attention_hidden_size=768, intermediate_size=3072, tie_word_embeddings=False))):
      model = cls(config)
      tensors = shapes(model)
      if config.tie_word_embeddings:  # the state_dict names the tied head too
        tensors.pop('lm_head.weight')
      out[name] = {'tensors': tensors, 'config': config.to_dict()}
    dit = DiTTransformer2DModel(num_attention_heads=16, attention_head_dim=72, in_channels=4,
                                out_channels=8, num_layers=28, sample_size=32, patch_size=2,
                                num_embeds_ada_norm=1000)
    config = {k: v for k, v in dict(dit.config).items() if k != '_use_default_values'}
    out['DiT-XL-2-256'] = {'tensors': shapes(dit), 'config': json.loads(json.dumps(config))}
    from diffusers import UNet2DConditionModel
    # The unet/config.json of stable-diffusion-v1-5 and stable-diffusion-xl-base-1.0.
    for name, kw in (
        ('sd15_unet', dict(sample_size=64, cross_attention_dim=768)),
        ('sdxl_unet', dict(
            sample_size=128, down_block_types=('DownBlock2D', 'CrossAttnDownBlock2D',
                                               'CrossAttnDownBlock2D'),
            up_block_types=('CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'UpBlock2D'),
            block_out_channels=(320, 640, 1280), attention_head_dim=(5, 10, 20),
            cross_attention_dim=2048, transformer_layers_per_block=(1, 2, 10),
            use_linear_projection=True, addition_embed_type='text_time',
            addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816))):
      unet = UNet2DConditionModel(**kw)
      config = {k: v for k, v in dict(unet.config).items() if k != '_use_default_values'}
      out[name] = {'tensors': shapes(unet), 'config': json.loads(json.dumps(config))}
  path = os.path.join(HERE, 'published_layouts.json.gz')
  with open(path, 'wb') as raw, gzip.GzipFile(fileobj=raw, mode='wb', mtime=0) as f:
    f.write(json.dumps(out, separators=(',', ':')).encode())  # mtime 0: the same bytes
  print('published_layouts:', {k: len(v['tensors']) for k, v in out.items()},
        os.path.getsize(path), 'bytes')


FIXTURES = {'gpt2': gpt2_tiny, 'vit': vit_tiny, 'bert': bert_tiny, 'llama': llama_tiny,
            't5': t5_tiny, 'bart': bart_tiny, 'clip': clip_tiny, 'vgg': vgg_tiny,
            'alexnet': alexnet_tiny, 'densenet': densenet_tiny, 'deit': deit_tiny,
            'cait': cait_tiny, 'swin': swin_tiny, 'efficientnet': efficientnet_tiny,
            'vae': vae_tiny, 'mamba': mamba_tiny, 'rwkv': rwkv_tiny, 'dit': dit_tiny,
            'unet': unet_tiny, 'unet_xl': unet_xl_tiny,
            'layouts': published_layouts,
            'resnet': lambda: (resnet_tiny('basic'), resnet_tiny(
                'bottleneck', (1, 1, 1, 1), (2, 4, 4, 8), 4, 5))}


if __name__ == '__main__':
  # Names (gpt2 vit bert llama ...) write those fixtures only; none: all of them.
  for name in sys.argv[1:] or FIXTURES:
    FIXTURES[name]()
