"""Published weights in and out:

  python -m train.port --from hf --arch gpt2 --src DIR --workdir OUT \\
      --config configs/gpt_pydoc.py:variant=gpt2 [--config.KEY=VALUE ...] \\
      [--reference_logits FILE.npz]
  python -m train.port --to hf --arch gpt2 --workdir RUN --dst DIR --config ...
  python -m train.port --from torchvision --arch resnet --src resnet50.safetensors \\
      --workdir OUT --config configs/resnet_imagenet.py ...
  python -m train.port --from timm --arch deit --src DIR --workdir OUT \\
      --config configs/deit_imagenet.py:variant=B,distillation=none
  python -m train.port --from diffusers --arch autoencoder_kl --src DIR/vae --workdir OUT ...
  python -m train.port --from hf --arch mamba --src DIR --workdir OUT \\
      --config configs/mamba_pydoc.py:variant=130m
  python -m train.port --from diffusers --arch dit --src DIR/transformer --workdir OUT \\
      --config configs/dit_digits.py:variant=XL/2 --config.model.frequency_shift=1 \\
      --config.model.mlp_norm_eps=1e-5

Import reads a checkpoint directory a user has downloaded (its `*.safetensors` files and
`config.json`), maps the tensors onto archzoo's parameter tree of `--config`, checks them
leaf by leaf (one error listing what is missing, extra or of another shape), and writes
step 0 of a run in OUT: `python -m train --config ... --workdir OUT` then fine-tunes it
(resuming at step 0 with the config's data), `python -m train.sample` samples it, and
another run starts from it with `--config.init_from.workdir=OUT`. The reference's own
config.json must describe the network `--config` builds; where a field differs, the error
names the `--config.model.X=Y` overrides that make it so. A `tokenizer.json` in the source
directory becomes the run's tokenizer (WORKDIR/tokenizer.json, read by train/text.py).
torchvision keeps no config file: its formats read the network off the tensors' names and
shapes instead; so do timm's, whose hub config.json only adds what tensors cannot show
(a ViT's head count). diffusers' config.json is read like Hugging Face's.
PyTorch pickles (`.bin`, `.pth`) are refused: loading them executes code; convert them
to safetensors first. `--reference_logits` takes an .npz of the model's input (`tokens`, or
`images` (B, H, W, C); BERT also `token_types`; T5 / BART `sources` and `targets`; CLIP
`images` and `tokens`) and the reference's outputs on it (`logits`; BERT `mlm_logits` and
`nsp_logits`; CLIP as below; autoencoder_kl `mean`, `logvar` and `sample`) and reports
the imported model's largest relative difference, computed over the run's mesh (1 or many
devices).

Export (`--to hf|torchvision|timm|diffusers`) writes the run's params (EMA where kept) and
BatchNorm statistics back in the reference layout as DIR/model.safetensors (diffusers:
diffusion_pytorch_model.safetensors) and, for Hugging Face, timm and diffusers,
DIR/config.json; an imported checkpoint exported again gives the same tensors, bit for bit
(a tied LLaMA head comes back as its own lm_head.weight).

Formats (`ARCHS`), each a pair of pure maps between the reference's flat tensor names and
archzoo's '/'-joined param paths:
  gpt2  Hugging Face GPT2LMHeadModel / GPT2Model (all four sizes): Conv1D weights are
        (in, out) like a flax kernel; c_attn's fused (D, 3D) splits into query, key, value
        (D, H, D/H); c_proj into out (H, D/H, D); the causal-mask buffers of old
        checkpoints (`attn.bias`, `attn.masked_bias`) are not parameters and are skipped;
        lm_head is the tied token embedding.
  vit   Hugging Face ViTForImageClassification (pool='cls'): torch Linear (out, in)
        transposed; the patch convolution (D, C, P, P) becomes a (P, P, C, D) kernel.
  bert  Hugging Face BertForPreTraining / BertModel: q/k/v split into heads; post-LN
        attention.output.LayerNorm -> self_attn_norm, output.LayerNorm -> mlp_norm; the
        MLM decoder is the tied word embedding, cls.predictions.bias the mlm_bias; NSP
        from cls.seq_relationship; token-type embeddings; eps from layer_norm_eps. archzoo
        masks pad keys (id 0) always: parity is with attention_mask = tokens != 0.
  llama Hugging Face LlamaForCausalLM: q/k rows kept as stored (HF's rotate_half pairs
        (x[i], x[i + H/2]) are archzoo's apply_rope layout; Meta's interleaved originals
        are permuted by HF's conversion, not here); GQA k/v heads; untied lm_head (a tied
        one is copied); rms_norm_eps; rope_theta and linear rope scaling (others refused).
  resnet torchvision resnet18 ... resnet152 state_dict as safetensors (--from
        torchvision): OIHW -> HWIO kernels, BatchNorm running stats -> batch_stats; both
        stride a Bottleneck's 3x3 conv (v1.5). Wide ResNets and ResNeXt are refused.
  t5    Hugging Face T5ForConditionalGeneration, T5 v1.0 (t5-small ... t5-11b): `shared`
        is the embedding of both stacks and the tied head (decoder output x d_model^-1/2);
        each stack's relative_attention_bias (block 0 in HF) its one bucket table; q/k/v/o
        split into heads of d_kv. v1.1 / flan-t5 (gated-GELU, untied unscaled head) refused.
        Inputs `sources` and `targets` (decoder inputs); pad sources (id 0) masked.
  bart  Hugging Face BartForConditionalGeneration (bart-base, bart-large): learned
        positions as stored (max_position_embeddings + BART's offset of 2 rows),
        layernorm_embedding, post-LN blocks, tied head; final_logits_bias dropped when
        zero (as released), refused otherwise. Inputs as T5's.
  clip  Hugging Face CLIPModel (openai/clip-vit-*): config.json's vision_config is the
        run's model (multimodal.clip:VisionTransformer), its text_config and
        projection_dim the run's task_kwargs (text_model.*, embed_dim, channels); both
        towers, the bias-free projections, logit_scale. OpenAI's eos_token_id=2 (pooling
        at the largest id) becomes eos_id = vocab_size - 1. Inputs `images` (B, H, W, C)
        and `tokens`; outputs image_embeds and text_embeds (unnormalised, HF's
        get_image/text_features) and logits_per_image.
  vgg   torchvision vgg11 ... vgg19(_bn) (--from torchvision): stages read off the conv
        indices of `features` (a max pool between stages), BatchNorm as resnet's,
        classifier.0 / .3 / .6 -> fc1 / fc2 / head.
  alexnet torchvision alexnet: convs at features.0/3/6/8/10, classifier.1/.4/.6; a 3x3
        conv1 is archzoo's small_input stem.
  densenet torchvision densenet121 ... 201 (old `norm.1` names too): blocks, growth and
        bn_size read off the tensors; bias-free convs, BatchNorm as resnet's.

  deit  timm VisionTransformerDistilled / VisionTransformer (--from timm: deit_*,
        deit_*_distilled, vit_*_patch*): fused qkv split, dist_token and head_dist; heads
        from timm's config.json. LayerScale (DeiT III), registers, fc_norm refused.
  cait  timm Cait (--from timm): talking heads' proj_l / proj_w, LayerScale gammas,
        class-attention blocks; every size read off the tensors.
  swin  torchvision swin_t / swin_s / swin_b (--from torchvision): heads and window from
        the bias tables; relative_position_index skipped and written back. V2 refused.
  efficientnet torchvision efficientnet_b0 ... b7 (--from torchvision): the width / depth
        multipliers that scale B0's table into the blocks read off the tensors; B5-B7's
        BatchNorm eps 1e-3 from the matched size. EfficientNetV2 refused.
  autoencoder_kl diffusers AutoencoderKL (--from diffusers; SD 1.x / 2.x's vae folder):
        config.json's sizes; resnets, mid-block attention (old names too), samplers;
        export as diffusion_pytorch_model.safetensors + config.json.
  mamba Hugging Face MambaForCausalLM (mamba-*-hf): archzoo's names are its; conv1d
        (E, 1, K) -> (K, E); tied head. Projection biases, untied heads refused.
  rwkv  Hugging Face RwkvForCausalLM (RWKV-4, archzoo's generation): the (1, 1, D) mixes
        -> (D,), pre_ln in block 0, untied head; rescale_every is inference-only.
  dit   diffusers DiTTransformer2DModel (--from diffusers; DiT-XL-2-256's transformer):
        needs model.frequency_shift=1 and mlp_norm_eps=norm_eps (diffusers' numerics);
        per-block timestep / label embedders must be equal (archzoo has one); the
        residual stream's halves swapped (position table column-first there).
  unet  diffusers UNet2DConditionModel (--from diffusers; SD 1.x / 2.x / SDXL's unet):
        up_blocks counted from the deepest level; per-level heads and depths, Linear
        projections, SDXL's text_time embedding; class embeddings and other block types
        refused.

Measured parity (tests/test_port.py, tiny random reference models, float32, 2026-12-06):
max |logits - reference| / max |reference| = bert 6.4e-7, llama 9.4e-7, resnet (basic)
4.0e-7 / 3.4e-7, resnet (bottleneck) 7.8e-8, on 1 / 8 devices (equal where one number).
2026-12-07 through this CLI (fixtures of tests/make_port_fixtures.py, 2 + 2 layers of width
16): t5 4.1e-7, bart 4.0e-7, clip 3.0e-7 / 3.4e-7 (the largest over its three outputs), on
1 / 8 devices; each exported back bit for bit, and transformers 5.25 loads the export and
gives the reference logits exactly. torchvision 0.28 fixtures: vgg (with BatchNorm) 2.1e-7
through this CLI on 1 and 8 devices. In-process on 1 device (tests/test_port.py, with the
tests' fast-compile XLA flags): t5 4.4e-7, bart 3.5e-7, clip 5.2e-7 (logits_per_image;
embeddings 2.7e-7), vgg 1.0e-7, alexnet (its 11x11/4 stem, 64x64 inputs) 3.7e-7, densenet
5.8e-8.
2026-12-07 (timm 1.0.31, torchvision 0.29.1, diffusers 0.42.1 fixtures) through this CLI on
1 / 8 devices: deit (distilled) 2.2e-7 / 2.7e-7, cait 1.8e-7, swin 1.1e-7 (24x24 inputs: a
shifted, padded second stage), efficientnet 1.4e-7 / 1.8e-7, autoencoder_kl 7.3e-7 (the
largest over mean, logvar and the decoded sample); each exported back bit for bit, and timm,
torchvision and diffusers load the exports (strictly) and give the reference outputs
exactly. The published layouts (timm's deit_{tiny,small,base}_distilled_patch16_224,
vit_base_patch16_224, cait_xxs24/s24_224; torchvision's swin_t/s/b, efficientnet_b0-b7;
SD 1.5's AutoencoderKL), built with no weights, map onto the configs' named sizes leaf for
leaf with their parameter counts (swin_t, efficientnet_b0 / b5, deit_tiny_distilled,
cait_xxs24 and SD 1.5's VAE in tests/test_port.py, from tests/fixtures/port/
published_layouts.json.gz).
2026-12-07, second wave (transformers 5.25, diffusers 0.42.1 fixtures) through this CLI on
1 / 8 devices: mamba 2.1e-7, rwkv 4.0e-7, unet (SD 1.5's block types) 2.6e-7 / 1.3e-7,
dit 3.3e-5 (the timestep sinusoids alone: diffusers' float32 frequency table is one ulp
from archzoo's, times t = 803); in-process unet with SDXL's options 3.1e-7. Each exported
back bit for bit; transformers and diffusers load the exports and give the reference
outputs exactly. Published layouts: mamba-130m-hf, rwkv-4-169m-pile, DiT-XL-2-256, SD 1.5's
and SDXL's U-Nets.
"""

import argparse
import functools
import glob
import json
import os
import shutil
import sys
from typing import Optional

import numpy as np

from train.errors import UserError


# -------------------------------------------------------------------------- formats


class Gpt2:
  """GPT-2 (Radford et al. 2019) as Hugging Face stores it <-> arch/sequence/gpt.py."""
  model_name = 'sequence.gpt'
  inputs = 'tokens'  # (B, T) in the reference .npz

  @staticmethod
  def model_fields(ref: dict) -> dict:
    return {'vocab_size': ref['vocab_size'], 'num_layers': ref['n_layer'],
            'num_heads': ref['n_head'], 'embed_dim': ref['n_embd'],
            'max_length': ref['n_positions'], 'norm_eps': ref.get('layer_norm_epsilon', 1e-5),
            'positions': 'learned', 'tie_embeddings': True,
            **({'mlp_dim': ref['n_inner']} if ref.get('n_inner') else {})}

  @staticmethod
  def reference_config(model, channels: int = 0) -> dict:
    del channels
    d = int(model['embed_dim'])
    return {'model_type': 'gpt2', 'architectures': ['GPT2LMHeadModel'],
            'vocab_size': int(model['vocab_size']), 'n_positions': int(model['max_length']),
            'n_embd': d, 'n_layer': int(model['num_layers']), 'n_head': int(model['num_heads']),
            'n_inner': None if (model.get('mlp_dim') or 4 * d) == 4 * d else int(model['mlp_dim']),
            'activation_function': 'gelu_new', 'layer_norm_epsilon': float(model['norm_eps']),
            'tie_word_embeddings': True}

  @staticmethod
  def skip(name: str) -> bool:
    return name.split('.')[-2:] in (['attn', 'bias'], ['attn', 'masked_bias']) or (
        name == 'lm_head.weight')

  @staticmethod
  def to_archzoo(t: dict, ref: dict) -> dict:
    t = {k.removeprefix('transformer.'): v for k, v in t.items()}
    take = _taker(t, 'gpt2')
    d, h = ref['n_embd'], ref['n_head']
    out = {'wte/embedding': take('wte.weight'), 'wpe/embedding': take('wpe.weight'),
           'ln_f/scale': take('ln_f.weight'), 'ln_f/bias': take('ln_f.bias')}
    for i in range(ref['n_layer']):
      p, q = f'h.{i}.', f'h{i}/'
      w = take(p + 'attn.c_attn.weight').reshape(d, 3, h, d // h)
      b = take(p + 'attn.c_attn.bias').reshape(3, h, d // h)
      for j, name in enumerate(('query', 'key', 'value')):
        out[q + f'self_attn/{name}/kernel'] = w[:, j]
        out[q + f'self_attn/{name}/bias'] = b[j]
      out[q + 'self_attn/out/kernel'] = take(p + 'attn.c_proj.weight').reshape(h, d // h, d)
      out[q + 'self_attn/out/bias'] = take(p + 'attn.c_proj.bias')
      for src, dst in (('ln_1', 'self_attn_norm'), ('ln_2', 'mlp_norm')):
        out[q + f'{dst}/scale'] = take(p + f'{src}.weight')
        out[q + f'{dst}/bias'] = take(p + f'{src}.bias')
      for src, dst in (('c_fc', 'wi'), ('c_proj', 'wo')):
        out[q + f'mlp/{dst}/kernel'] = take(p + f'mlp.{src}.weight')
        out[q + f'mlp/{dst}/bias'] = take(p + f'mlp.{src}.bias')
    _all_taken(t, 'gpt2')
    return out

  @staticmethod
  def to_reference(flat: dict, model) -> dict:
    f = dict(flat)
    take = _taker(f, 'gpt2')
    d = int(model['embed_dim'])
    out = {'transformer.wte.weight': take('wte/embedding'),
           'transformer.wpe.weight': take('wpe/embedding'),
           'transformer.ln_f.weight': take('ln_f/scale'),
           'transformer.ln_f.bias': take('ln_f/bias')}
    for i in range(int(model['num_layers'])):
      p, q = f'transformer.h.{i}.', f'h{i}/'
      names = ('query', 'key', 'value')
      out[p + 'attn.c_attn.weight'] = np.stack(
          [take(q + f'self_attn/{n}/kernel') for n in names], 1).reshape(d, 3 * d)
      out[p + 'attn.c_attn.bias'] = np.stack(
          [take(q + f'self_attn/{n}/bias') for n in names]).reshape(3 * d)
      out[p + 'attn.c_proj.weight'] = take(q + 'self_attn/out/kernel').reshape(d, d)
      out[p + 'attn.c_proj.bias'] = take(q + 'self_attn/out/bias')
      for src, dst in (('ln_1', 'self_attn_norm'), ('ln_2', 'mlp_norm')):
        out[p + f'{src}.weight'] = take(q + f'{dst}/scale')
        out[p + f'{src}.bias'] = take(q + f'{dst}/bias')
      for src, dst in (('c_fc', 'wi'), ('c_proj', 'wo')):
        out[p + f'mlp.{src}.weight'] = take(q + f'mlp/{dst}/kernel')
        out[p + f'mlp.{src}.bias'] = take(q + f'mlp/{dst}/bias')
    _all_taken(f, 'gpt2')
    return out


class Vit:
  """ViT (Dosovitskiy et al. 2021) as Hugging Face's ViTForImageClassification stores it
  <-> arch/vision/vit.py (pool='cls'). torch Linear weights are (out, in): transposed;
  the patch convolution (D, C, P, P) becomes a flax (P, P, C, D) kernel."""
  model_name = 'vision.vit'
  inputs = 'images'  # (B, H, W, C) in the reference .npz, as archzoo takes them

  @staticmethod
  def model_fields(ref: dict) -> dict:
    return {'image_size': ref['image_size'], 'patch_size': ref['patch_size'],
            'embed_dim': ref['hidden_size'], 'depth': ref['num_hidden_layers'],
            'num_heads': ref['num_attention_heads'], 'mlp_dim': ref['intermediate_size'],
            'num_classes': len(ref.get('id2label') or {}) or ref.get('num_labels', 2),
            'norm_eps': ref.get('layer_norm_eps', 1e-12), 'pool': 'cls', 'distilled': False}

  @staticmethod
  def reference_config(model, channels: int) -> dict:
    k = int(model['num_classes'])
    return {'model_type': 'vit', 'architectures': ['ViTForImageClassification'],
            'image_size': int(model['image_size']), 'patch_size': int(model['patch_size']),
            'num_channels': channels, 'hidden_size': int(model['embed_dim']),
            'num_hidden_layers': int(model['depth']), 'num_attention_heads': int(model['num_heads']),
            'intermediate_size': int(model['mlp_dim']), 'hidden_act': 'gelu',
            'layer_norm_eps': float(model['norm_eps']), 'qkv_bias': True,
            'id2label': {str(i): f'LABEL_{i}' for i in range(k)},
            'label2id': {f'LABEL_{i}': i for i in range(k)}}

  @staticmethod
  def skip(name: str) -> bool:
    return name.startswith('vit.pooler.')  # ViTModel's pooler: classification never reads it

  @staticmethod
  def to_archzoo(t: dict, ref: dict) -> dict:
    t = dict(t)
    take = _taker(t, 'vit')
    d, h = ref['hidden_size'], ref['num_attention_heads']
    e = 'vit.embeddings.'
    out = {'cls_token': take(e + 'cls_token'), 'pos_embed': take(e + 'position_embeddings'),
           'patch_embed/proj/kernel': take(e + 'patch_embeddings.projection.weight'
                                           ).transpose(2, 3, 1, 0),
           'patch_embed/proj/bias': take(e + 'patch_embeddings.projection.bias'),
           'encoder/norm/scale': take('vit.layernorm.weight'),
           'encoder/norm/bias': take('vit.layernorm.bias'),
           'head/kernel': take('classifier.weight').T, 'head/bias': take('classifier.bias')}
    for i in range(ref['num_hidden_layers']):
      p, q = f'vit.encoder.layer.{i}.', f'encoder/layers_{i}/'
      for name in ('query', 'key', 'value'):
        out[q + f'self_attn/{name}/kernel'] = take(
            p + f'attention.attention.{name}.weight').T.reshape(d, h, d // h)
        out[q + f'self_attn/{name}/bias'] = take(
            p + f'attention.attention.{name}.bias').reshape(h, d // h)
      out[q + 'self_attn/out/kernel'] = take(p + 'attention.output.dense.weight').T.reshape(
          h, d // h, d)
      out[q + 'self_attn/out/bias'] = take(p + 'attention.output.dense.bias')
      for src, dst in (('layernorm_before', 'self_attn_norm'), ('layernorm_after', 'mlp_norm')):
        out[q + f'{dst}/scale'] = take(p + f'{src}.weight')
        out[q + f'{dst}/bias'] = take(p + f'{src}.bias')
      for src, dst in (('intermediate.dense', 'wi'), ('output.dense', 'wo')):
        out[q + f'mlp/{dst}/kernel'] = take(p + f'{src}.weight').T
        out[q + f'mlp/{dst}/bias'] = take(p + f'{src}.bias')
    _all_taken(t, 'vit')
    return out

  @staticmethod
  def to_reference(flat: dict, model) -> dict:
    f = dict(flat)
    take = _taker(f, 'vit')
    d = int(model['embed_dim'])
    e = 'vit.embeddings.'
    out = {e + 'cls_token': take('cls_token'), e + 'position_embeddings': take('pos_embed'),
           e + 'patch_embeddings.projection.weight': take('patch_embed/proj/kernel'
                                                         ).transpose(3, 2, 0, 1),
           e + 'patch_embeddings.projection.bias': take('patch_embed/proj/bias'),
           'vit.layernorm.weight': take('encoder/norm/scale'),
           'vit.layernorm.bias': take('encoder/norm/bias'),
           'classifier.weight': take('head/kernel').T, 'classifier.bias': take('head/bias')}
    for i in range(int(model['depth'])):
      p, q = f'vit.encoder.layer.{i}.', f'encoder/layers_{i}/'
      for name in ('query', 'key', 'value'):
        out[p + f'attention.attention.{name}.weight'] = take(
            q + f'self_attn/{name}/kernel').reshape(d, d).T
        out[p + f'attention.attention.{name}.bias'] = take(
            q + f'self_attn/{name}/bias').reshape(d)
      out[p + 'attention.output.dense.weight'] = take(q + 'self_attn/out/kernel').reshape(d, d).T
      out[p + 'attention.output.dense.bias'] = take(q + 'self_attn/out/bias')
      for src, dst in (('layernorm_before', 'self_attn_norm'), ('layernorm_after', 'mlp_norm')):
        out[p + f'{src}.weight'] = take(q + f'{dst}/scale')
        out[p + f'{src}.bias'] = take(q + f'{dst}/bias')
      for src, dst in (('intermediate.dense', 'wi'), ('output.dense', 'wo')):
        out[p + f'{src}.weight'] = take(q + f'mlp/{dst}/kernel').T
        out[p + f'{src}.bias'] = take(q + f'mlp/{dst}/bias')
    _all_taken(f, 'vit')
    return out


class Bert:
  """BERT (Devlin et al. 2019) as Hugging Face's BertForPreTraining (or BertModel, the
  encoder and pooler alone) stores it <-> arch/sequence/bert.py. torch Linear weights are
  (out, in): transposed, query/key/value split into heads. Post-LN: attention.output's
  LayerNorm is the block's self_attn_norm, output.LayerNorm its mlp_norm. The MLM decoder
  is the tied word embedding (its stored copy, `cls.predictions.decoder.weight`, is
  skipped; an untied one is refused) and its bias is `cls.predictions.bias` (mlm_bias);
  the NSP head is the 2-way `cls.seq_relationship`. archzoo always masks pad keys (id 0):
  the reference's logits are those with attention_mask = (tokens != 0)."""
  model_name = 'sequence.bert'
  inputs = 'tokens'
  kwargs = {'token_types': 'token_types_BT'}  # optional inputs of the reference .npz
  outputs = ('mlm_logits', 'nsp_logits')

  @staticmethod
  def model_fields(ref: dict) -> dict:
    for key, want in (('hidden_act', 'gelu'), ('position_embedding_type', 'absolute'),
                      ('tie_word_embeddings', True), ('is_decoder', False)):
      if ref.get(key, want) != want:
        raise UserError(f'bert: config.json has {key}={ref[key]!r}; archzoo\'s BERT has '
                        f'{want!r} only')
    d = ref['hidden_size']
    heads = (ref.get('architectures') or ['BertForPreTraining'])[0] != 'BertModel'
    return {'vocab_size': ref['vocab_size'], 'num_layers': ref['num_hidden_layers'],
            'num_heads': ref['num_attention_heads'], 'embed_dim': d,
            'max_length': ref['max_position_embeddings'],
            'type_vocab_size': ref.get('type_vocab_size', 2),
            'norm_eps': ref.get('layer_norm_eps', 1e-12), 'pooler': True,
            'pretraining_heads': heads,
            **({'mlp_dim': ref['intermediate_size']} if ref['intermediate_size'] != 4 * d
               else {})}

  @staticmethod
  def reference_config(model, channels: int = 0) -> dict:
    del channels
    d = int(model['embed_dim'])
    return {'model_type': 'bert', 'architectures': [
                'BertForPreTraining' if model['pretraining_heads'] else 'BertModel'],
            'vocab_size': int(model['vocab_size']), 'hidden_size': d,
            'num_hidden_layers': int(model['num_layers']),
            'num_attention_heads': int(model['num_heads']),
            'intermediate_size': int(model.get('mlp_dim') or 4 * d), 'hidden_act': 'gelu',
            'max_position_embeddings': int(model['max_length']),
            'type_vocab_size': int(model['type_vocab_size']),
            'layer_norm_eps': float(model['norm_eps']), 'pad_token_id': 0,
            'position_embedding_type': 'absolute', 'tie_word_embeddings': True}

  @staticmethod
  def skip(name: str) -> bool:
    # position_ids: a buffer of old checkpoints; the decoder: the tied word embedding and
    # a second reference to cls.predictions.bias.
    return name.endswith(('embeddings.position_ids', 'cls.predictions.decoder.weight',
                          'cls.predictions.decoder.bias'))

  @staticmethod
  def to_archzoo(t: dict, ref: dict) -> dict:
    # Google's TF-converted checkpoints name LayerNorm's params gamma and beta.
    t = {k.removeprefix('bert.').replace('LayerNorm.gamma', 'LayerNorm.weight').replace(
        'LayerNorm.beta', 'LayerNorm.bias'): v for k, v in t.items()}
    take = _taker(t, 'bert')
    d, h = ref['hidden_size'], ref['num_attention_heads']
    e = 'embeddings.'
    out = {'word_embeddings/embedding': take(e + 'word_embeddings.weight'),
           'position_embeddings/embedding': take(e + 'position_embeddings.weight'),
           'embed_norm/scale': take(e + 'LayerNorm.weight'),
           'embed_norm/bias': take(e + 'LayerNorm.bias'),
           'pooler/kernel': take('pooler.dense.weight').T, 'pooler/bias': take('pooler.dense.bias')}
    if ref.get('type_vocab_size', 2):
      out['token_type_embeddings/embedding'] = take(e + 'token_type_embeddings.weight')
    for i in range(ref['num_hidden_layers']):
      p, q = f'encoder.layer.{i}.', f'layer{i}/'
      _split_heads(out, q + 'self_attn/', take, p + 'attention.self.', d, h, h)
      out[q + 'self_attn/out/kernel'] = take(p + 'attention.output.dense.weight').T.reshape(
          h, d // h, d)
      out[q + 'self_attn/out/bias'] = take(p + 'attention.output.dense.bias')
      for src, dst in (('attention.output.LayerNorm', 'self_attn_norm'),
                       ('output.LayerNorm', 'mlp_norm')):
        out[q + f'{dst}/scale'] = take(p + f'{src}.weight')
        out[q + f'{dst}/bias'] = take(p + f'{src}.bias')
      for src, dst in (('intermediate.dense', 'wi'), ('output.dense', 'wo')):
        out[q + f'mlp/{dst}/kernel'] = take(p + f'{src}.weight').T
        out[q + f'mlp/{dst}/bias'] = take(p + f'{src}.bias')
    if any(k.startswith('cls.') for k in t):
      c = 'cls.predictions.'
      out.update({'mlm_dense/kernel': take(c + 'transform.dense.weight').T,
                  'mlm_dense/bias': take(c + 'transform.dense.bias'),
                  'mlm_norm/scale': take(c + 'transform.LayerNorm.weight'),
                  'mlm_norm/bias': take(c + 'transform.LayerNorm.bias'),
                  'mlm_bias': take(c + 'bias'),
                  'nsp/kernel': take('cls.seq_relationship.weight').T,
                  'nsp/bias': take('cls.seq_relationship.bias')})
    _all_taken(t, 'bert')
    return out

  @staticmethod
  def to_reference(flat: dict, model) -> dict:
    f = dict(flat)
    take = _taker(f, 'bert')
    d = int(model['embed_dim'])
    e = 'bert.embeddings.'
    out = {e + 'word_embeddings.weight': take('word_embeddings/embedding'),
           e + 'position_embeddings.weight': take('position_embeddings/embedding'),
           e + 'LayerNorm.weight': take('embed_norm/scale'),
           e + 'LayerNorm.bias': take('embed_norm/bias'),
           'bert.pooler.dense.weight': take('pooler/kernel').T,
           'bert.pooler.dense.bias': take('pooler/bias')}
    if int(model['type_vocab_size']):
      out[e + 'token_type_embeddings.weight'] = take('token_type_embeddings/embedding')
    for i in range(int(model['num_layers'])):
      p, q = f'bert.encoder.layer.{i}.', f'layer{i}/'
      for name in ('query', 'key', 'value'):
        w = take(q + f'self_attn/{name}/kernel')
        out[p + f'attention.self.{name}.weight'] = w.reshape(d, -1).T
        out[p + f'attention.self.{name}.bias'] = take(q + f'self_attn/{name}/bias').reshape(-1)
      out[p + 'attention.output.dense.weight'] = take(q + 'self_attn/out/kernel').reshape(
          -1, d).T
      out[p + 'attention.output.dense.bias'] = take(q + 'self_attn/out/bias')
      for src, dst in (('attention.output.LayerNorm', 'self_attn_norm'),
                       ('output.LayerNorm', 'mlp_norm')):
        out[p + f'{src}.weight'] = take(q + f'{dst}/scale')
        out[p + f'{src}.bias'] = take(q + f'{dst}/bias')
      for src, dst in (('intermediate.dense', 'wi'), ('output.dense', 'wo')):
        out[p + f'{src}.weight'] = take(q + f'mlp/{dst}/kernel').T
        out[p + f'{src}.bias'] = take(q + f'mlp/{dst}/bias')
    if model['pretraining_heads']:
      c = 'cls.predictions.'
      out.update({c + 'transform.dense.weight': take('mlm_dense/kernel').T,
                  c + 'transform.dense.bias': take('mlm_dense/bias'),
                  c + 'transform.LayerNorm.weight': take('mlm_norm/scale'),
                  c + 'transform.LayerNorm.bias': take('mlm_norm/bias'),
                  c + 'bias': take('mlm_bias'),
                  'cls.seq_relationship.weight': take('nsp/kernel').T,
                  'cls.seq_relationship.bias': take('nsp/bias')})
    _all_taken(f, 'bert')
    return out


class Llama:
  """LLaMA (Touvron et al. 2023) as Hugging Face's LlamaForCausalLM stores it <->
  arch/sequence/llama.py. Hugging Face's conversion already permuted Meta's q/k rows from
  interleaved rotary pairs to the half-split pairs of its rotate_half, which is archzoo's
  apply_rope layout too: q_proj/k_proj map as they are, split into heads (k/v into the
  num_key_value_heads of grouped-query attention). gate/up/down_proj are the SwiGLU's
  wi/wi_up/wo. A tied head (`tie_word_embeddings`) is copied into archzoo's own lm_head.
  Refused: attention or MLP biases, a head_dim other than hidden/heads, and rotary
  scalings other than linear (llama3, yarn, dynamic ...), which archzoo's model lacks."""
  model_name = 'sequence.llama'
  inputs = 'tokens'

  @staticmethod
  def _theta_and_scale(ref: dict):
    rope = dict(ref.get('rope_parameters') or {})
    scaling = ref.get('rope_scaling') or {}
    rope.update(scaling)
    kind = rope.get('rope_type', rope.get('type', 'default'))
    if kind not in ('default', 'linear'):
      raise UserError(f'llama: rope_type {kind!r}: archzoo\'s LLaMA has the default and '
                      f'linear rotary positions only')
    theta = ref.get('rope_theta', rope.get('rope_theta', 10000.0))
    return float(theta), float(rope.get('factor', 1.0)) if kind == 'linear' else 1.0

  @staticmethod
  def model_fields(ref: dict) -> dict:
    d, h = ref['hidden_size'], ref['num_attention_heads']
    for key, want in (('hidden_act', 'silu'), ('attention_bias', False), ('mlp_bias', False),
                      ('head_dim', d // h)):
      if ref.get(key, want) not in (want, None):
        raise UserError(f'llama: config.json has {key}={ref[key]!r}; archzoo\'s LLaMA has '
                        f'{want!r} only')
    theta, scale = Llama._theta_and_scale(ref)
    kv = ref.get('num_key_value_heads') or h
    return {'vocab_size': ref['vocab_size'], 'num_layers': ref['num_hidden_layers'],
            'num_heads': h, 'num_kv_heads': None if kv == h else kv, 'embed_dim': d,
            'mlp_dim': ref['intermediate_size'], 'max_length': ref['max_position_embeddings'],
            'rope_max_wavelength': theta, 'rope_scale': scale,
            'norm_eps': ref.get('rms_norm_eps', 1e-6)}

  @staticmethod
  def reference_config(model, channels: int = 0) -> dict:
    del channels
    h = int(model['num_heads'])
    rope = {'rope_theta': float(model['rope_max_wavelength']), 'rope_type': 'default'}
    if float(model['rope_scale']) != 1.0:
      rope.update(rope_type='linear', factor=float(model['rope_scale']))
    return {'model_type': 'llama', 'architectures': ['LlamaForCausalLM'],
            'vocab_size': int(model['vocab_size']), 'hidden_size': int(model['embed_dim']),
            'intermediate_size': int(model['mlp_dim']),
            'num_hidden_layers': int(model['num_layers']), 'num_attention_heads': h,
            'num_key_value_heads': int(model.get('num_kv_heads') or h),
            'max_position_embeddings': int(model['max_length']), 'hidden_act': 'silu',
            'rms_norm_eps': float(model['norm_eps']), 'rope_theta': rope['rope_theta'],
            'rope_parameters': rope, 'rope_scaling': None if len(rope) == 2 else rope,
            'attention_bias': False, 'mlp_bias': False, 'tie_word_embeddings': False}

  @staticmethod
  def skip(name: str) -> bool:
    return name.endswith('rotary_emb.inv_freq')  # a buffer of old checkpoints

  @staticmethod
  def to_archzoo(t: dict, ref: dict) -> dict:
    t = {k.removeprefix('model.'): v for k, v in t.items()}
    take = _taker(t, 'llama')
    d, h = ref['hidden_size'], ref['num_attention_heads']
    kv = ref.get('num_key_value_heads') or h
    out = {'embed_tokens/embedding': take('embed_tokens.weight'),
           'norm/scale': take('norm.weight')}
    if 'lm_head.weight' in t or not ref.get('tie_word_embeddings', False):
      out['lm_head/kernel'] = take('lm_head.weight').T
    else:
      out['lm_head/kernel'] = out['embed_tokens/embedding'].T.copy()
    for i in range(ref['num_hidden_layers']):
      p, q = f'layers.{i}.', f'layers_{i}/'
      _split_heads(out, q + 'self_attn/', take, p + 'self_attn.', d, h, kv,
                   names={'query': 'q_proj', 'key': 'k_proj', 'value': 'v_proj'}, bias=False)
      out[q + 'self_attn/out/kernel'] = take(p + 'self_attn.o_proj.weight').T.reshape(
          h, d // h, d)
      out[q + 'self_attn_norm/scale'] = take(p + 'input_layernorm.weight')
      out[q + 'mlp_norm/scale'] = take(p + 'post_attention_layernorm.weight')
      for src, dst in (('gate_proj', 'wi'), ('up_proj', 'wi_up'), ('down_proj', 'wo')):
        out[q + f'mlp/{dst}/kernel'] = take(p + f'mlp.{src}.weight').T
    _all_taken(t, 'llama')
    return out

  @staticmethod
  def to_reference(flat: dict, model) -> dict:
    f = dict(flat)
    take = _taker(f, 'llama')
    d = int(model['embed_dim'])
    out = {'model.embed_tokens.weight': take('embed_tokens/embedding'),
           'model.norm.weight': take('norm/scale'), 'lm_head.weight': take('lm_head/kernel').T}
    for i in range(int(model['num_layers'])):
      p, q = f'model.layers.{i}.', f'layers_{i}/'
      for name, src in (('query', 'q_proj'), ('key', 'k_proj'), ('value', 'v_proj')):
        out[p + f'self_attn.{src}.weight'] = take(q + f'self_attn/{name}/kernel').reshape(
            d, -1).T
      out[p + 'self_attn.o_proj.weight'] = take(q + 'self_attn/out/kernel').reshape(-1, d).T
      out[p + 'input_layernorm.weight'] = take(q + 'self_attn_norm/scale')
      out[p + 'post_attention_layernorm.weight'] = take(q + 'mlp_norm/scale')
      for src, dst in (('gate_proj', 'wi'), ('up_proj', 'wi_up'), ('down_proj', 'wo')):
        out[p + f'mlp.{src}.weight'] = take(q + f'mlp/{dst}/kernel').T
    _all_taken(f, 'llama')
    return out


class Resnet:
  """ResNet (He et al. 2015) as torchvision's resnet18 ... resnet152 state_dict stores it
  (saved as safetensors: torchvision publishes pickles) <-> arch/vision/resnet.py. There is
  no config file: the network is read off the tensors (blocks per stage from the
  `layerS.B.` indices, BasicBlock or Bottleneck from conv3, widths from conv1's outputs,
  classes from fc). Conv kernels OIHW become HWIO; BatchNorm's weight/bias are the
  params scale/bias and running_mean/var the `batch_stats` mean/var (eps 1e-5 both);
  num_batches_tracked is a counter and is skipped. Both put a Bottleneck's stride on its
  3x3 conv (v1.5) and downsample with a strided 1x1 conv + BN. Refused: wide ResNets and
  ResNeXt (a bottleneck width other than 1/4 of the output, or grouped 3x3 convs), and a
  stem other than torchvision's 7x7/2 + max pool."""
  model_name = 'vision.resnet'
  source = 'torchvision'
  inputs = 'images'

  @staticmethod
  def describe(t: dict) -> dict:
    """The network's fields from the tensors' names and shapes."""
    blocks = {}
    for name in t:
      parts = name.split('.')
      if parts[0].startswith('layer') and parts[0][5:].isdigit():
        blocks.setdefault(int(parts[0][5:]), set()).add(int(parts[1]))
    if 'conv1.weight' not in t or 'fc.weight' not in t or not blocks:
      raise UserError('resnet: not a torchvision ResNet state_dict (no conv1.weight, '
                      'fc.weight or layerN.M. tensors)')
    bottleneck = 'layer1.0.conv3.weight' in t
    stages = sorted(blocks)
    widths = [int(t[f'layer{s}.0.conv1.weight'].shape[0]) for s in stages]
    for s, w in zip(stages, widths):
      c2 = t[f'layer{s}.0.conv2.weight'].shape
      out = t[f'layer{s}.0.conv3.weight' if bottleneck else f'layer{s}.0.conv2.weight'].shape[0]
      if c2[1] != w or out != w * (4 if bottleneck else 1):
        raise UserError(f'resnet: layer{s} is a wide ResNet or ResNeXt block (width {w}, '
                        f'3x3 conv {tuple(c2)}, output {out}); archzoo\'s ResNet has '
                        f'torchvision\'s resnet18-152 blocks only')
    if tuple(t['conv1.weight'].shape[2:]) != (7, 7):
      raise UserError(f'resnet: a {tuple(t["conv1.weight"].shape[2:])} stem; archzoo imports '
                      f'torchvision\'s 7x7/2 stem with max pool')
    return {'stage_sizes': tuple(len(blocks[s]) for s in stages),
            'block': 'bottleneck' if bottleneck else 'basic', 'widths': tuple(widths),
            'stem_features': int(t['conv1.weight'].shape[0]), 'small_input': False,
            'num_classes': int(t['fc.weight'].shape[0])}

  @staticmethod
  def model_fields(ref: dict) -> dict:
    return dict(ref)

  @staticmethod
  def skip(name: str) -> bool:
    return name.endswith('num_batches_tracked')

  @staticmethod
  def _convs(ref):
    """(torchvision prefix, archzoo ConvBN path) of every conv + BN of the network."""
    yield 'conv1', 'bn1', 'stem'
    convs = ('conv1', 'conv2', 'conv3') if ref['block'] == 'bottleneck' else ('conv1', 'conv2')
    for i, n in enumerate(ref['stage_sizes']):
      for j in range(n):
        p, q = f'layer{i + 1}.{j}.', f'layer{i + 1}_{j}/'
        for k, c in enumerate(convs):
          yield p + c, p + f'bn{k + 1}', q + c
        yield p + 'downsample.0', p + 'downsample.1', q + 'downsample'

  @staticmethod
  def to_archzoo(t: dict, ref: dict) -> dict:
    t = dict(t)
    take = _taker(t, 'resnet')
    out = {'head/kernel': take('fc.weight').T, 'head/bias': take('fc.bias')}
    for conv, bn, dst in Resnet._convs(ref):
      if dst.endswith('downsample') and conv + '.weight' not in t:
        continue  # an identity shortcut
      out[dst + '/conv/kernel'] = take(conv + '.weight').transpose(2, 3, 1, 0)
      out[dst + '/norm/scale'] = take(bn + '.weight')
      out[dst + '/norm/bias'] = take(bn + '.bias')
      out['batch_stats/' + dst + '/norm/mean'] = take(bn + '.running_mean')
      out['batch_stats/' + dst + '/norm/var'] = take(bn + '.running_var')
    _all_taken(t, 'resnet')
    return out

  @staticmethod
  def to_reference(flat: dict, model) -> dict:
    f = dict(flat)
    take = _taker(f, 'resnet')
    out = {'fc.weight': take('head/kernel').T, 'fc.bias': take('head/bias')}
    for conv, bn, dst in Resnet._convs(model):
      if dst.endswith('downsample') and dst + '/conv/kernel' not in f:
        continue
      out[conv + '.weight'] = take(dst + '/conv/kernel').transpose(3, 2, 0, 1)
      out[bn + '.weight'] = take(dst + '/norm/scale')
      out[bn + '.bias'] = take(dst + '/norm/bias')
      out[bn + '.running_mean'] = take('batch_stats/' + dst + '/norm/mean')
      out[bn + '.running_var'] = take('batch_stats/' + dst + '/norm/var')
      out[bn + '.num_batches_tracked'] = np.zeros((), np.int64)
    _all_taken(f, 'resnet')
    return out


def _refuse(arch: str, ref: dict, wants):
  """One UserError naming the first config.json field archzoo's network cannot express;
  `wants` is ((key, value archzoo has), ...), a missing key counting as that value."""
  for key, want in wants:
    if ref.get(key, want) != want:
      raise UserError(f'{arch}: config.json has {key}={ref[key]!r}; archzoo\'s '
                      f'{arch.upper()} has {want!r} only')


def _heads_in(out: dict, dst: str, take, src: str, d: int, h: int, hd: int, names: dict,
              bias: bool):
  """torch Linear q/k/v (h * hd, d) and out (d, h * hd) -> flax (d, h, hd) and (h, hd, d)
  kernels (biases (h, hd) and (d,)); `names` maps archzoo's query/key/value/out to the
  reference's."""
  for name, torch_name in names.items():
    w = take(src + f'{torch_name}.weight')
    if name == 'out':
      out[dst + 'out/kernel'] = w.T.reshape(h, hd, d)
    else:
      out[dst + f'{name}/kernel'] = w.T.reshape(d, h, hd)
    if bias:
      b = take(src + f'{torch_name}.bias')
      out[dst + f'{name}/bias'] = b if name == 'out' else b.reshape(h, hd)


def _heads_out(out: dict, src: str, take, dst: str, names: dict, bias: bool):
  """The inverse of `_heads_in`: flax attention kernels back to torch Linear weights."""
  for name, torch_name in names.items():
    w = take(src + f'{name}/kernel')
    d = w.shape[-1] if name == 'out' else w.shape[0]
    out[dst + f'{torch_name}.weight'] = w.reshape(-1, d).T if name == 'out' else w.reshape(d, -1).T
    if bias:
      b = take(src + f'{name}/bias')
      out[dst + f'{torch_name}.bias'] = b.reshape(-1)


class T5:
  """T5 v1.0 (Raffel et al. 2020) as Hugging Face's T5ForConditionalGeneration stores it
  (t5-small ... t5-11b) <-> arch/sequence/t5.py. One `shared` embedding for both stacks and
  the head, which reads the decoder output rescaled by d_model^-1/2 (HF: when the saved
  config ties the head; transformers >= 5 writes that as scale_decoder_outputs). Each
  stack's relative position table lives in HF's block 0 (`relative_attention_bias`, (buckets,
  heads)) and is archzoo's one table per stack. q/k/v/o (no biases, no 1/sqrt(d) scaling)
  split into heads of d_kv; layer.0 / layer.1 / layer.2 (decoder) are self-attention,
  cross-attention and the ReLU MLP, each with its pre-norm (RMS, scale only). Refused: T5
  v1.1, flan-t5, mT5 and byT5 (gated-GELU MLP and an untied, unscaled head, which archzoo's
  T5 lacks). archzoo masks pad sources (id 0): parity is with attention_mask = sources != 0."""
  model_name = 'sequence.t5'
  inputs = 'sources'  # (B, S) in the reference .npz
  kwargs = {'targets': 'tgt_in_BT'}  # the decoder inputs (B, T)

  @staticmethod
  def model_fields(ref: dict) -> dict:
    if (ref.get('feed_forward_proj', 'relu') != 'relu' or ref.get('tie_word_embeddings') is False
        or ref.get('scale_decoder_outputs') is False):
      raise UserError(f't5: config.json describes T5 v1.1 / flan-t5 (feed_forward_proj='
                      f'{ref.get("feed_forward_proj", "relu")!r}, tie_word_embeddings='
                      f'{ref.get("tie_word_embeddings")}); archzoo\'s T5 is v1.0 only: a ReLU '
                      f'MLP and the tied head rescaled by d_model^-1/2')
    _refuse('t5', ref, (('is_decoder', False),))
    return {'vocab_size': ref['vocab_size'], 'num_encoder_layers': ref['num_layers'],
            'num_decoder_layers': ref.get('num_decoder_layers') or ref['num_layers'],
            'num_heads': ref['num_heads'], 'embed_dim': ref['d_model'], 'head_dim': ref['d_kv'],
            'mlp_dim': ref['d_ff'], 'num_buckets': ref.get('relative_attention_num_buckets', 32),
            'max_distance': ref.get('relative_attention_max_distance', 128),
            'norm_eps': ref.get('layer_norm_epsilon', 1e-6), 'moe': None}

  @staticmethod
  def reference_config(model, channels: int = 0) -> dict:
    del channels
    return {'model_type': 't5', 'architectures': ['T5ForConditionalGeneration'],
            'vocab_size': int(model['vocab_size']), 'd_model': int(model['embed_dim']),
            'd_kv': int(model['head_dim']), 'd_ff': int(model['mlp_dim']),
            'num_layers': int(model['num_encoder_layers']),
            'num_decoder_layers': int(model['num_decoder_layers']),
            'num_heads': int(model['num_heads']),
            'relative_attention_num_buckets': int(model['num_buckets']),
            'relative_attention_max_distance': int(model['max_distance']),
            'layer_norm_epsilon': float(model['norm_eps']), 'feed_forward_proj': 'relu',
            'dropout_rate': float(model['dropout_rate']), 'tie_word_embeddings': True,
            'is_encoder_decoder': True, 'pad_token_id': 0, 'eos_token_id': 2,
            'decoder_start_token_id': 0}

  @staticmethod
  def skip(name: str) -> bool:
    # Each stack's embed_tokens is `shared` (older checkpoints store the copies).
    return name in ('encoder.embed_tokens.weight', 'decoder.embed_tokens.weight')

  QKVO = {'query': 'q', 'key': 'k', 'value': 'v', 'out': 'o'}

  @staticmethod
  def _layers(encoder_layers, decoder_layers):
    """(HF prefix, archzoo prefix, sublayer names) of every block."""
    for stack, n in (('encoder', encoder_layers), ('decoder', decoder_layers)):
      subs = (('SelfAttention', 'self_attn'), ('DenseReluDense', 'mlp'))
      if stack == 'decoder':
        subs = (('SelfAttention', 'self_attn'), ('EncDecAttention', 'cross_attn'),
                ('DenseReluDense', 'mlp'))
      for i in range(n):
        yield f'{stack}.block.{i}.', f'{stack}/layers_{i}/', subs

  @staticmethod
  def to_archzoo(t: dict, ref: dict) -> dict:
    t = dict(t)
    take = _taker(t, 't5')
    h, hd, d = ref['num_heads'], ref['d_kv'], ref['d_model']
    out = {'shared/embedding': take('shared.weight')}
    if 'lm_head.weight' in t:  # a stored copy of the tied head must be that copy
      if not np.array_equal(take('lm_head.weight'), out['shared/embedding']):
        raise UserError('t5: lm_head.weight differs from shared.weight (an untied head, T5 '
                        'v1.1); archzoo\'s T5 ties them')
    for stack in ('encoder', 'decoder'):
      out[f'{stack}/relative_attention_bias/rel_embedding'] = take(
          f'{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight')
      out[f'{stack}/final_norm/scale'] = take(f'{stack}.final_layer_norm.weight')
    for p, q, subs in T5._layers(ref['num_layers'],
                                 ref.get('num_decoder_layers') or ref['num_layers']):
      for j, (src, dst) in enumerate(subs):
        s = p + f'layer.{j}.'
        out[q + f'{dst}_norm/scale'] = take(s + 'layer_norm.weight')
        if dst == 'mlp':
          out[q + 'mlp/wi/kernel'] = take(s + 'DenseReluDense.wi.weight').T
          out[q + 'mlp/wo/kernel'] = take(s + 'DenseReluDense.wo.weight').T
        else:
          _heads_in(out, q + f'{dst}/', take, s + f'{src}.', d, h, hd, T5.QKVO, bias=False)
    _all_taken(t, 't5')
    return out

  @staticmethod
  def to_reference(flat: dict, model) -> dict:
    f = dict(flat)
    take = _taker(f, 't5')
    out = {'shared.weight': take('shared/embedding')}
    for stack in ('encoder', 'decoder'):
      out[f'{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight'] = take(
          f'{stack}/relative_attention_bias/rel_embedding')
      out[f'{stack}.final_layer_norm.weight'] = take(f'{stack}/final_norm/scale')
    for p, q, subs in T5._layers(int(model['num_encoder_layers']),
                                 int(model['num_decoder_layers'])):
      for j, (src, dst) in enumerate(subs):
        s = p + f'layer.{j}.'
        out[s + 'layer_norm.weight'] = take(q + f'{dst}_norm/scale')
        if dst == 'mlp':
          out[s + 'DenseReluDense.wi.weight'] = take(q + 'mlp/wi/kernel').T
          out[s + 'DenseReluDense.wo.weight'] = take(q + 'mlp/wo/kernel').T
        else:
          _heads_out(out, q + f'{dst}/', take, s + f'{src}.', T5.QKVO, bias=False)
    _all_taken(f, 't5')
    return out


class Bart:
  """BART (Lewis et al. 2020) as Hugging Face's BartForConditionalGeneration stores it
  (facebook/bart-base, bart-large) <-> arch/sequence/bart.py. One `model.shared` embedding
  for both stacks and the tied head; per-stack learned positions of max_position_embeddings
  + 2 rows (BART's offset of 2: the tables map as stored, archzoo looks position p up at row
  p + 2 as HF does); `layernorm_embedding` after the embeddings; post-LN blocks (self_attn
  -> self_attn_layer_norm, encoder_attn -> cross_attn(_norm), fc1/fc2 -> mlp wi/wo,
  final_layer_norm -> mlp_norm), q/k/v/out_proj with biases split into heads. HF's
  `final_logits_bias` is a buffer of zeros in the released checkpoints and archzoo's BART
  has none: zeros are dropped, anything else refused. Refused too: mBART-style pre-norm
  (normalize_before, add_final_layer_norm), scale_embedding, activations other than exact
  GELU. archzoo masks pad sources (id 0): parity is with attention_mask = sources != 0
  (HF's own pad id, 1, is only an embedding row)."""
  model_name = 'sequence.bart'
  inputs = 'sources'
  kwargs = {'targets': 'tgt_in_BT'}

  @staticmethod
  def model_fields(ref: dict) -> dict:
    _refuse('bart', ref, (('activation_function', 'gelu'), ('normalize_before', False),
                          ('add_final_layer_norm', False), ('scale_embedding', False),
                          ('normalize_embedding', True), ('tie_word_embeddings', True)))
    heads, ffn = ref['encoder_attention_heads'], ref['encoder_ffn_dim']
    if (ref['decoder_attention_heads'], ref['decoder_ffn_dim']) != (heads, ffn):
      raise UserError(f'bart: the decoder has {ref["decoder_attention_heads"]} heads and '
                      f'ffn {ref["decoder_ffn_dim"]}, the encoder {heads} and {ffn}; '
                      f'archzoo\'s BART has one of each')
    return {'vocab_size': ref['vocab_size'], 'num_encoder_layers': ref['encoder_layers'],
            'num_decoder_layers': ref['decoder_layers'], 'num_heads': heads,
            'embed_dim': ref['d_model'], 'mlp_dim': ffn,
            'max_length': ref['max_position_embeddings'], 'norm_eps': 1e-5}

  @staticmethod
  def reference_config(model, channels: int = 0) -> dict:
    del channels
    h, f = int(model['num_heads']), int(model['mlp_dim'])
    return {'model_type': 'bart', 'architectures': ['BartForConditionalGeneration'],
            'vocab_size': int(model['vocab_size']), 'd_model': int(model['embed_dim']),
            'encoder_layers': int(model['num_encoder_layers']),
            'decoder_layers': int(model['num_decoder_layers']),
            'encoder_attention_heads': h, 'decoder_attention_heads': h,
            'encoder_ffn_dim': f, 'decoder_ffn_dim': f,
            'max_position_embeddings': int(model['max_length']),
            'activation_function': 'gelu', 'scale_embedding': False,
            'dropout': float(model['dropout_rate']),
            'attention_dropout': float(model['attention_dropout_rate']),
            'activation_dropout': float(model['activation_dropout_rate']),
            'tie_word_embeddings': True, 'is_encoder_decoder': True, 'pad_token_id': 0,
            'bos_token_id': 1, 'eos_token_id': 2, 'decoder_start_token_id': 2}

  @staticmethod
  def skip(name: str) -> bool:
    # The stacks' embed_tokens and lm_head are `model.shared` (older checkpoints store them).
    return name in ('model.encoder.embed_tokens.weight', 'model.decoder.embed_tokens.weight',
                    'lm_head.weight')

  QKVO = {'query': 'q_proj', 'key': 'k_proj', 'value': 'v_proj', 'out': 'out_proj'}
  SUBLAYERS = {'encoder': (('self_attn', 'self_attn'), ('final_layer_norm', 'mlp_norm')),
               'decoder': (('self_attn', 'self_attn'), ('encoder_attn', 'cross_attn'),
                           ('final_layer_norm', 'mlp_norm'))}

  @staticmethod
  def _layers(encoder_layers, decoder_layers):
    for stack, n in (('encoder', encoder_layers), ('decoder', decoder_layers)):
      for i in range(n):
        yield stack, f'model.{stack}.layers.{i}.', f'{stack}/layers_{i}/'

  @staticmethod
  def to_archzoo(t: dict, ref: dict) -> dict:
    t = dict(t)
    take = _taker(t, 'bart')
    h, d = ref['encoder_attention_heads'], ref['d_model']
    if 'final_logits_bias' in t and np.any(take('final_logits_bias')):
      raise UserError('bart: final_logits_bias is not zero; archzoo\'s BART has no logits '
                      'bias (the released checkpoints keep it at zero)')
    out = {'shared/embedding': take('model.shared.weight')}
    for stack in ('encoder', 'decoder'):
      e = f'model.{stack}.'
      out[f'{stack}/embed_positions/embedding'] = take(e + 'embed_positions.weight')
      out[f'{stack}/layernorm_embedding/scale'] = take(e + 'layernorm_embedding.weight')
      out[f'{stack}/layernorm_embedding/bias'] = take(e + 'layernorm_embedding.bias')
    for stack, p, q in Bart._layers(ref['encoder_layers'], ref['decoder_layers']):
      for src, dst in Bart.SUBLAYERS[stack]:
        if dst != 'mlp_norm':
          _heads_in(out, q + f'{dst}/', take, p + f'{src}.', d, h, d // h, Bart.QKVO, bias=True)
          src, dst = src + '_layer_norm', dst + '_norm'
        out[q + f'{dst}/scale'] = take(p + f'{src}.weight')
        out[q + f'{dst}/bias'] = take(p + f'{src}.bias')
      for src, dst in (('fc1', 'wi'), ('fc2', 'wo')):
        out[q + f'mlp/{dst}/kernel'] = take(p + f'{src}.weight').T
        out[q + f'mlp/{dst}/bias'] = take(p + f'{src}.bias')
    _all_taken(t, 'bart')
    return out

  @staticmethod
  def to_reference(flat: dict, model) -> dict:
    f = dict(flat)
    take = _taker(f, 'bart')
    emb = take('shared/embedding')
    out = {'model.shared.weight': emb,
           'final_logits_bias': np.zeros((1, emb.shape[0]), emb.dtype)}
    for stack in ('encoder', 'decoder'):
      e = f'model.{stack}.'
      out[e + 'embed_positions.weight'] = take(f'{stack}/embed_positions/embedding')
      out[e + 'layernorm_embedding.weight'] = take(f'{stack}/layernorm_embedding/scale')
      out[e + 'layernorm_embedding.bias'] = take(f'{stack}/layernorm_embedding/bias')
    for stack, p, q in Bart._layers(int(model['num_encoder_layers']),
                                    int(model['num_decoder_layers'])):
      for src, dst in Bart.SUBLAYERS[stack]:
        if dst != 'mlp_norm':
          _heads_out(out, q + f'{dst}/', take, p + f'{src}.', Bart.QKVO, bias=True)
          src, dst = src + '_layer_norm', dst + '_norm'
        out[p + f'{src}.weight'] = take(q + f'{dst}/scale')
        out[p + f'{src}.bias'] = take(q + f'{dst}/bias')
      for src, dst in (('fc1', 'wi'), ('fc2', 'wo')):
        out[p + f'{src}.weight'] = take(q + f'mlp/{dst}/kernel').T
        out[p + f'{src}.bias'] = take(q + f'mlp/{dst}/bias')
    _all_taken(f, 'bart')
    return out


class Clip:
  """CLIP (Radford et al. 2021) as Hugging Face's CLIPModel stores it (openai/clip-vit-*)
  <-> arch/multimodal/clip.py: the run's `model` is the image tower
  (multimodal.clip:VisionTransformer), `task_kwargs` the text tower, the projections'
  width and the image channels, all checked against config.json (its vision_config,
  text_config and projection_dim). Both towers: q/k/v/out_proj with biases split into heads,
  layer_norm1/2 -> self_attn_norm/mlp_norm, mlp.fc1/fc2 -> wi/wo; the vision embeddings'
  class_embedding, bias-free patch conv (D, C, P, P) -> (P, P, C, D), position table,
  pre_layrnorm and post_layernorm; the text tower's token and position tables and
  final_layer_norm; visual_projection / text_projection (bias-free) transposed; logit_scale
  as stored (archzoo clamps exp(logit_scale) at 100 in the forward pass, HF not at all:
  OpenAI's released value is log 100 exactly, so they agree). Text pooling: a config.json
  with eos_token_id=2 (OpenAI's originals, before transformers PR #24773) pools at each
  row's largest id, which is the end-of-text token 49407 of OpenAI's vocabulary: archzoo's
  eos_id becomes vocab_size - 1 (rows without it pool differently: archzoo at the last
  position); otherwise eos_id is eos_token_id. Refused: activations other than quick-GELU
  (the OpenAI models) and LayerNorm eps other than 1e-5, which archzoo's towers fix.
  Images go in as the tower takes them (B, H, W, C), after CLIP's own normalisation."""
  model_name = 'multimodal.clip:VisionTransformer'
  task = 'multimodal.clip'  # the task module (Options, build, the logits): through arch.load
  inputs = 'images'
  kwargs = {'tokens': 'tokens_BT'}
  outputs = ('image_embeds', 'text_embeds', 'logits_per_image')

  @staticmethod
  def _task_module():
    import arch
    return arch.load(Clip.task, 'make')

  @staticmethod
  def _towers(ref: dict):
    return ref.get('text_config') or {}, ref.get('vision_config') or {}

  @staticmethod
  def model_fields(ref: dict) -> dict:
    text, vision = Clip._towers(ref)
    for tower, cfg in (('text_config', text), ('vision_config', vision)):
      for key, want in (('hidden_act', 'quick_gelu'), ('layer_norm_eps', 1e-5)):
        if cfg.get(key, want) != want:
          raise UserError(f'clip: config.json has {tower}.{key}={cfg[key]!r}; archzoo\'s '
                          f'CLIP towers have {want!r} only')
    return {'width': vision.get('hidden_size', 768), 'depth': vision.get('num_hidden_layers', 12),
            'num_heads': vision.get('num_attention_heads', 12),
            'mlp_dim': vision.get('intermediate_size', 3072),
            'patch_size': vision.get('patch_size', 32), 'image_size': vision.get('image_size', 224),
            'num_classes': 0}

  @staticmethod
  def task_fields(ref: dict) -> dict:
    """The config's task_kwargs the reference fixes ('text_model.X': the text tower's)."""
    text, vision = Clip._towers(ref)
    vocab_size, eos = text.get('vocab_size', 49408), text.get('eos_token_id', 2)
    size = vision.get('image_size', 224)
    return {'embed_dim': ref.get('projection_dim', 512), 'channels': vision.get('num_channels', 3),
            'input_size': (size, size), 'text_model_name': 'multimodal.clip:TextTransformer',
            'text_pool': 'tower', 'image_projection': True, 'text_projection_bias': False,
            'text_model.vocab_size': vocab_size,
            'text_model.max_length': text.get('max_position_embeddings', 77),
            'text_model.width': text.get('hidden_size', 512),
            'text_model.depth': text.get('num_hidden_layers', 12),
            'text_model.num_heads': text.get('num_attention_heads', 8),
            'text_model.mlp_dim': text.get('intermediate_size', 2048),
            'text_model.eos_id': vocab_size - 1 if eos == 2 else eos}

  @staticmethod
  def task_values(config) -> dict:
    """The config's task_kwargs with clip.Options' and the text tower's defaults, flat as
    task_fields names them."""
    import dataclasses
    import arch
    clip = Clip._task_module()
    values = {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
              for f in dataclasses.fields(clip.Options)}
    values.update(config.task_kwargs.to_dict())
    text = {**_defaults(arch.model_class(values['text_model_name'])),
            **dict(values.pop('text_model'))}
    return {**values, **{f'text_model.{k}': v for k, v in text.items()}}

  @staticmethod
  def fill_defaults(config):
    """The text tower's fields the config leaves at their defaults written into
    task_kwargs.text_model, so that `--config.task_kwargs.text_model.X=...` reaches each."""
    import arch
    opts = config.task_kwargs
    name = opts.get('text_model_name', 'multimodal.clip:TextTransformer')
    with config.unlocked():
      for k, v in _defaults(arch.model_class(name)).items():
        if k not in ('dtype', 'param_dtype', 'name', 'parent') and k not in opts.text_model:
          opts.text_model[k] = v

  @staticmethod
  def reference_config_of(config) -> dict:
    model = {**_model_defaults(config), **config.model.to_dict()}
    task = Clip.task_values(config)
    v = int(task['text_model.vocab_size'])
    eos = int(task['text_model.eos_id'])
    return {'model_type': 'clip', 'architectures': ['CLIPModel'],
            'projection_dim': int(task['embed_dim']),
            'text_config': {'vocab_size': v, 'hidden_size': int(task['text_model.width']),
                            'intermediate_size': int(task['text_model.mlp_dim']),
                            'num_hidden_layers': int(task['text_model.depth']),
                            'num_attention_heads': int(task['text_model.num_heads']),
                            'max_position_embeddings': int(task['text_model.max_length']),
                            'hidden_act': 'quick_gelu', 'layer_norm_eps': 1e-5,
                            # 2 keeps HF's largest-id pooling, which is eos_id = V - 1.
                            'eos_token_id': 2 if eos == v - 1 else eos},
            'vision_config': {'hidden_size': int(model['width']),
                              'intermediate_size': int(model['mlp_dim']),
                              'num_hidden_layers': int(model['depth']),
                              'num_attention_heads': int(model['num_heads']),
                              'num_channels': int(task['channels']),
                              'image_size': int(model['image_size']),
                              'patch_size': int(model['patch_size']),
                              'hidden_act': 'quick_gelu', 'layer_norm_eps': 1e-5}}

  @staticmethod
  def skip(name: str) -> bool:
    return name.endswith('embeddings.position_ids')  # a buffer of old checkpoints

  @staticmethod
  def build(config):
    from arch.task import parse_options
    clip = Clip._task_module()
    return clip.build(config, parse_options(clip.Options, config))[1]

  @staticmethod
  def outputs_of(module, b):
    clip = Clip._task_module()
    img_BE, txt_BE = module(b['images'], b['tokens'])
    logits = clip.zeroshot_logits(img_BE, clip.l2_normalize(txt_BE), module.log_scale())
    return {'image_embeds': img_BE, 'text_embeds': txt_BE, 'logits_per_image': logits}

  NORMS = (('layer_norm1', 'self_attn_norm'), ('layer_norm2', 'mlp_norm'))
  # (HF name, archzoo name) of the towers' tensors outside their blocks
  EMBED = (('vision_model.embeddings.class_embedding', 'image_tower/cls_token'),
           ('vision_model.embeddings.position_embedding.weight', 'image_tower/pos_embed/embedding'),
           ('vision_model.pre_layrnorm.weight', 'image_tower/pre_norm/scale'),
           ('vision_model.pre_layrnorm.bias', 'image_tower/pre_norm/bias'),
           ('vision_model.post_layernorm.weight', 'image_tower/post_norm/scale'),
           ('vision_model.post_layernorm.bias', 'image_tower/post_norm/bias'),
           ('text_model.embeddings.token_embedding.weight', 'text_tower/token_embed/embedding'),
           ('text_model.embeddings.position_embedding.weight', 'text_tower/pos_embed/embedding'),
           ('text_model.final_layer_norm.weight', 'text_tower/final_norm/scale'),
           ('text_model.final_layer_norm.bias', 'text_tower/final_norm/bias'),
           ('logit_scale', 'logit_scale'))

  @staticmethod
  def to_archzoo(t: dict, ref: dict) -> dict:
    t = dict(t)
    take = _taker(t, 'clip')
    text, vision = Clip._towers(ref)
    out = {dst: take(src) for src, dst in Clip.EMBED}
    out['image_tower/patch_embed/proj/kernel'] = take(
        'vision_model.embeddings.patch_embedding.weight').transpose(2, 3, 1, 0)
    for name in ('visual', 'text'):
      out[f'{name}_projection/kernel'] = take(f'{name}_projection.weight').T
    for tower, src, cfg in (('image_tower', 'vision_model', vision),
                            ('text_tower', 'text_model', text)):
      d, h = cfg.get('hidden_size'), cfg.get('num_attention_heads')
      for i in range(cfg.get('num_hidden_layers')):
        p, q = f'{src}.encoder.layers.{i}.', f'{tower}/encoder/layers_{i}/'
        _heads_in(out, q + 'self_attn/', take, p + 'self_attn.', d, h, d // h, Bart.QKVO,
                  bias=True)
        for norm_src, norm_dst in Clip.NORMS:
          out[q + f'{norm_dst}/scale'] = take(p + f'{norm_src}.weight')
          out[q + f'{norm_dst}/bias'] = take(p + f'{norm_src}.bias')
        for fc, dst in (('fc1', 'wi'), ('fc2', 'wo')):
          out[q + f'mlp/{dst}/kernel'] = take(p + f'mlp.{fc}.weight').T
          out[q + f'mlp/{dst}/bias'] = take(p + f'mlp.{fc}.bias')
    _all_taken(t, 'clip')
    return out

  @staticmethod
  def to_reference(flat: dict, model) -> dict:
    del model  # the towers' depths are read off the paths
    f = dict(flat)
    take = _taker(f, 'clip')
    out = {src: take(dst) for src, dst in Clip.EMBED}
    out['vision_model.embeddings.patch_embedding.weight'] = take(
        'image_tower/patch_embed/proj/kernel').transpose(3, 2, 0, 1)
    for name in ('visual', 'text'):
      out[f'{name}_projection.weight'] = take(f'{name}_projection/kernel').T
    for tower, src in (('image_tower', 'vision_model'), ('text_tower', 'text_model')):
      depth = len({k.split('/')[2] for k in f if k.startswith(f'{tower}/encoder/layers_')})
      for i in range(depth):
        p, q = f'{src}.encoder.layers.{i}.', f'{tower}/encoder/layers_{i}/'
        _heads_out(out, q + 'self_attn/', take, p + 'self_attn.', Bart.QKVO, bias=True)
        for norm_src, norm_dst in Clip.NORMS:
          out[p + f'{norm_src}.weight'] = take(q + f'{norm_dst}/scale')
          out[p + f'{norm_src}.bias'] = take(q + f'{norm_dst}/bias')
        for fc, dst in (('fc1', 'wi'), ('fc2', 'wo')):
          out[p + f'mlp.{fc}.weight'] = take(q + f'mlp/{dst}/kernel').T
          out[p + f'mlp.{fc}.bias'] = take(q + f'mlp/{dst}/bias')
    _all_taken(f, 'clip')
    return out


class Vgg:
  """VGG (Simonyan & Zisserman 2014) as torchvision's vgg11 ... vgg19_bn state_dict stores
  it (saved as safetensors) <-> arch/vision/vgg.py. No config file: the network is read off
  the tensors. `features` is one Sequential of conv, [BatchNorm,] ReLU per conv and a max
  pool closing each stage, so a conv's index is 2 (3 with BatchNorm) after the previous
  one's within a stage and one more across a pool: that splits the convs into stages.
  Conv kernels OIHW -> HWIO with their biases; BatchNorm as resnet's (running stats ->
  batch_stats, num_batches_tracked skipped); classifier.0 / .3 / .6 are fc1 / fc2 / head
  (archzoo flattens in torch's C, H, W order, so fc1 maps as stored); the adaptive pool's
  size from fc1's inputs. Refused: a stage whose convs differ in width."""
  model_name = 'vision.vgg'
  source = 'torchvision'
  inputs = 'images'

  @staticmethod
  def _convs(t: dict):
    return sorted(int(k.split('.')[1]) for k in t
                  if k.startswith('features.') and k.endswith('.weight') and t[k].ndim == 4)

  @staticmethod
  def describe(t: dict) -> dict:
    convs = Vgg._convs(t)
    if not convs or 'classifier.6.weight' not in t:
      raise UserError('vgg: not a torchvision VGG state_dict (no features.N conv weights or '
                      'classifier.6.weight)')
    norm = f'features.{convs[0] + 1}.running_mean' in t
    step = 3 if norm else 2
    stages, widths, prev = [], [], None
    for i in convs:
      width = int(t[f'features.{i}.weight'].shape[0])
      if prev is None or i - prev != step:  # a max pool between: a new stage
        stages.append(0)
        widths.append(width)
      elif width != widths[-1]:
        raise UserError(f'vgg: features.{i} is {width} wide in a stage of {widths[-1]}; '
                        f'archzoo\'s VGG has one width per stage')
      stages[-1] += 1
      prev = i
    hidden, flat = t['classifier.0.weight'].shape
    pool = int(round((flat / widths[-1]) ** 0.5))
    return {'stages': tuple(stages), 'widths': tuple(widths), 'norm': norm,
            'hidden': int(hidden), 'pool_size': pool,
            'num_classes': int(t['classifier.6.weight'].shape[0])}

  @staticmethod
  def model_fields(ref: dict) -> dict:
    return dict(ref)

  @staticmethod
  def skip(name: str) -> bool:
    return name.endswith('num_batches_tracked')

  @staticmethod
  def _layers(stages, norm):
    """(torchvision conv index, archzoo ConvBN path) of every conv."""
    i = 0
    for s, n in enumerate(stages):
      for j in range(n):
        yield i, f'conv{s + 1}_{j + 1}'
        i += 3 if norm else 2
      i += 1  # the stage's max pool

  HEAD = (('classifier.0', 'fc1'), ('classifier.3', 'fc2'), ('classifier.6', 'head'))

  @staticmethod
  def to_archzoo(t: dict, ref: dict) -> dict:
    t = dict(t)
    take = _taker(t, 'vgg')
    out = {}
    for src, dst in Vgg.HEAD:
      out[dst + '/kernel'] = take(src + '.weight').T
      out[dst + '/bias'] = take(src + '.bias')
    for i, dst in Vgg._layers(ref['stages'], ref['norm']):
      out[dst + '/conv/kernel'] = take(f'features.{i}.weight').transpose(2, 3, 1, 0)
      out[dst + '/conv/bias'] = take(f'features.{i}.bias')
      if ref['norm']:
        bn = f'features.{i + 1}.'
        out[dst + '/norm/scale'] = take(bn + 'weight')
        out[dst + '/norm/bias'] = take(bn + 'bias')
        out['batch_stats/' + dst + '/norm/mean'] = take(bn + 'running_mean')
        out['batch_stats/' + dst + '/norm/var'] = take(bn + 'running_var')
    _all_taken(t, 'vgg')
    return out

  @staticmethod
  def to_reference(flat: dict, model) -> dict:
    f = dict(flat)
    take = _taker(f, 'vgg')
    out = {}
    for src, dst in Vgg.HEAD:
      out[src + '.weight'] = take(dst + '/kernel').T
      out[src + '.bias'] = take(dst + '/bias')
    for i, dst in Vgg._layers(tuple(model['stages']), bool(model['norm'])):
      out[f'features.{i}.weight'] = take(dst + '/conv/kernel').transpose(3, 2, 0, 1)
      out[f'features.{i}.bias'] = take(dst + '/conv/bias')
      if model['norm']:
        bn = f'features.{i + 1}.'
        out[bn + 'weight'] = take(dst + '/norm/scale')
        out[bn + 'bias'] = take(dst + '/norm/bias')
        out[bn + 'running_mean'] = take('batch_stats/' + dst + '/norm/mean')
        out[bn + 'running_var'] = take('batch_stats/' + dst + '/norm/var')
        out[bn + 'num_batches_tracked'] = np.zeros((), np.int64)
    _all_taken(f, 'vgg')
    return out


class Alexnet:
  """AlexNet (Krizhevsky et al. 2012; torchvision's one-tower `alexnet`) as its state_dict
  stores it (saved as safetensors) <-> arch/vision/alexnet.py. No config file: convs at
  features.0 / 3 / 6 / 8 / 10 (their widths the model's `features`), classifier.1 / .4 / .6
  the fc1 / fc2 / head, OIHW -> HWIO, the adaptive pool's size from fc1's inputs (archzoo
  flattens in torch's C, H, W order). conv1 11x11 is torchvision's stem (stride 4, pad 2);
  a 3x3 conv1 is read as archzoo's `small_input` stem (stride 1, pad 1: the usual 32x32
  adaptation, whose stride the tensors cannot show); other stems are refused."""
  model_name = 'vision.alexnet'
  source = 'torchvision'
  inputs = 'images'
  CONVS = (0, 3, 6, 8, 10)
  HEAD = (('classifier.1', 'fc1'), ('classifier.4', 'fc2'), ('classifier.6', 'head'))

  @staticmethod
  def describe(t: dict) -> dict:
    names = [f'features.{i}.weight' for i in Alexnet.CONVS] + ['classifier.6.weight']
    if not all(n in t for n in names):
      raise UserError('alexnet: not a torchvision AlexNet state_dict (convs at features.0, '
                      '3, 6, 8, 10 and classifier.1, .4, .6)')
    k = tuple(t['features.0.weight'].shape[2:])
    if k not in ((11, 11), (3, 3)):
      raise UserError(f'alexnet: a {k} conv1; archzoo\'s AlexNet has torchvision\'s 11x11/4 '
                      f'stem or the 3x3/1 small_input one')
    features = tuple(int(t[f'features.{i}.weight'].shape[0]) for i in Alexnet.CONVS)
    hidden, flat = t['classifier.1.weight'].shape
    return {'features': features, 'hidden': int(hidden),
            'pool_size': int(round((flat / features[-1]) ** 0.5)), 'small_input': k == (3, 3),
            'num_classes': int(t['classifier.6.weight'].shape[0])}

  @staticmethod
  def model_fields(ref: dict) -> dict:
    return dict(ref)

  @staticmethod
  def skip(name: str) -> bool:
    del name
    return False

  @staticmethod
  def to_archzoo(t: dict, ref: dict) -> dict:
    del ref
    t = dict(t)
    take = _taker(t, 'alexnet')
    out = {}
    for src, dst in Alexnet.HEAD:
      out[dst + '/kernel'] = take(src + '.weight').T
      out[dst + '/bias'] = take(src + '.bias')
    for n, i in enumerate(Alexnet.CONVS):
      out[f'conv{n + 1}/conv/kernel'] = take(f'features.{i}.weight').transpose(2, 3, 1, 0)
      out[f'conv{n + 1}/conv/bias'] = take(f'features.{i}.bias')
    _all_taken(t, 'alexnet')
    return out

  @staticmethod
  def to_reference(flat: dict, model) -> dict:
    del model
    f = dict(flat)
    take = _taker(f, 'alexnet')
    out = {}
    for src, dst in Alexnet.HEAD:
      out[src + '.weight'] = take(dst + '/kernel').T
      out[src + '.bias'] = take(dst + '/bias')
    for n, i in enumerate(Alexnet.CONVS):
      out[f'features.{i}.weight'] = take(f'conv{n + 1}/conv/kernel').transpose(3, 2, 0, 1)
      out[f'features.{i}.bias'] = take(f'conv{n + 1}/conv/bias')
    _all_taken(f, 'alexnet')
    return out


class Densenet:
  """DenseNet-BC (Huang et al. 2017) as torchvision's densenet121 ... densenet201
  state_dict stores it (saved as safetensors) <-> arch/vision/densenet.py (whose names
  are torchvision's: denseblockB/denselayerL/norm1, conv1, norm2, conv2; transitionB/norm,
  conv; norm5). No config file: blocks and layers from the names, num_init_features from
  conv0, growth_rate from a layer's conv2, bn_size from its conv1. Convs (all bias-free)
  OIHW -> HWIO; BatchNorm as resnet's. The download-era names (`norm.1`, `conv.2`, which
  torchvision's own loader rewrites) are read too. A 7x7 conv0 with norm0 is torchvision's
  stem; a 3x3 conv0 without norm0 is archzoo's small_input stem (stride 1); others are
  refused."""
  model_name = 'vision.densenet'
  source = 'torchvision'
  inputs = 'images'

  @staticmethod
  def _renamed(t: dict) -> dict:
    import re
    return {re.sub(r'(denselayer\d+\.(?:norm|conv))\.([12])\.', r'\1\2.', k): v
            for k, v in t.items()}

  @staticmethod
  def describe(t: dict) -> dict:
    t = Densenet._renamed(t)
    layers = {}
    for name in t:
      parts = name.split('.')
      if len(parts) > 3 and parts[1].startswith('denseblock'):
        layers.setdefault(int(parts[1][10:]), set()).add(int(parts[2][10:]))
    if 'features.conv0.weight' not in t or 'classifier.weight' not in t or not layers:
      raise UserError('densenet: not a torchvision DenseNet state_dict (no features.conv0, '
                      'classifier or denseblock tensors)')
    k = tuple(t['features.conv0.weight'].shape[2:])
    small = k == (3, 3) and 'features.norm0.weight' not in t
    if not small and not (k == (7, 7) and 'features.norm0.weight' in t):
      raise UserError(f'densenet: a {k} conv0 stem; archzoo\'s DenseNet has torchvision\'s '
                      f'7x7/2 stem or the 3x3/1 small_input one (no norm0)')
    c = 'features.denseblock1.denselayer1.'
    growth = int(t[c + 'conv2.weight'].shape[0])
    return {'block_config': tuple(len(layers[b]) for b in sorted(layers)),
            'growth_rate': growth, 'num_init_features': int(t['features.conv0.weight'].shape[0]),
            'bn_size': int(t[c + 'conv1.weight'].shape[0]) // growth, 'small_input': small,
            'num_classes': int(t['classifier.weight'].shape[0])}

  @staticmethod
  def model_fields(ref: dict) -> dict:
    return dict(ref)

  @staticmethod
  def skip(name: str) -> bool:
    return name.endswith('num_batches_tracked')

  @staticmethod
  def _parts(ref):
    """(torchvision prefix, archzoo path, 'conv' | 'norm') of every conv and BatchNorm."""
    if ref['small_input']:
      yield 'features.conv0', 'stem/conv', 'conv'
    else:
      yield 'features.conv0', 'stem/conv', 'conv'
      yield 'features.norm0', 'stem/norm', 'norm'
    blocks = ref['block_config']
    for b, n in enumerate(blocks):
      for j in range(n):
        p = f'features.denseblock{b + 1}.denselayer{j + 1}.'
        q = f'denseblock{b + 1}/denselayer{j + 1}/'
        yield p + 'norm1', q + 'norm1', 'norm'
        yield p + 'conv1', q + 'conv1/conv', 'conv'
        yield p + 'norm2', q + 'norm2', 'norm'
        yield p + 'conv2', q + 'conv2/conv', 'conv'
      if b != len(blocks) - 1:
        yield f'features.transition{b + 1}.norm', f'transition{b + 1}/norm', 'norm'
        yield f'features.transition{b + 1}.conv', f'transition{b + 1}/conv/conv', 'conv'
    yield 'features.norm5', 'norm5', 'norm'

  @staticmethod
  def to_archzoo(t: dict, ref: dict) -> dict:
    t = Densenet._renamed(t)
    take = _taker(t, 'densenet')
    out = {'head/kernel': take('classifier.weight').T, 'head/bias': take('classifier.bias')}
    for src, dst, kind in Densenet._parts(ref):
      if kind == 'conv':
        out[dst + '/kernel'] = take(src + '.weight').transpose(2, 3, 1, 0)
      else:
        out[dst + '/scale'] = take(src + '.weight')
        out[dst + '/bias'] = take(src + '.bias')
        out['batch_stats/' + dst + '/mean'] = take(src + '.running_mean')
        out['batch_stats/' + dst + '/var'] = take(src + '.running_var')
    _all_taken(t, 'densenet')
    return out

  @staticmethod
  def to_reference(flat: dict, model) -> dict:
    f = dict(flat)
    take = _taker(f, 'densenet')
    out = {'classifier.weight': take('head/kernel').T, 'classifier.bias': take('head/bias')}
    ref = {'small_input': bool(model['small_input']),
           'block_config': tuple(model['block_config'])}
    for src, dst, kind in Densenet._parts(ref):
      if kind == 'conv':
        out[src + '.weight'] = take(dst + '/kernel').transpose(3, 2, 0, 1)
      else:
        out[src + '.weight'] = take(dst + '/scale')
        out[src + '.bias'] = take(dst + '/bias')
        out[src + '.running_mean'] = take('batch_stats/' + dst + '/mean')
        out[src + '.running_var'] = take('batch_stats/' + dst + '/var')
        out[src + '.num_batches_tracked'] = np.zeros((), np.int64)
    _all_taken(f, 'densenet')
    return out


def _qkv_in(out: dict, dst: str, take, src: str, h: int, bias: bool = True):
  """A fused torch qkv Linear (3 h e, d), rows [q; k; v] each head-major (timm's and
  torchvision's) -> archzoo's query/key/value (d, h, e) kernels and (h, e) biases."""
  w = take(src + '.weight')
  d = w.shape[1]
  w = w.reshape(3, h, -1, d)
  b = take(src + '.bias').reshape(3, h, -1) if bias else None
  for j, name in enumerate(('query', 'key', 'value')):
    out[dst + f'{name}/kernel'] = w[j].transpose(2, 0, 1)
    if bias:
      out[dst + f'{name}/bias'] = b[j]


def _qkv_out(out: dict, src: str, take, dst: str, bias: bool = True):
  """The inverse of `_qkv_in`."""
  ws = [take(src + f'{name}/kernel') for name in ('query', 'key', 'value')]
  d = ws[0].shape[0]
  out[dst + '.weight'] = np.concatenate([w.reshape(d, -1).T for w in ws])
  if bias:
    out[dst + '.bias'] = np.concatenate([take(src + f'{name}/bias').reshape(-1)
                                         for name in ('query', 'key', 'value')])


def _linear_in(out: dict, dst: str, take, src: str, bias: bool = True):
  """torch Linear (out, in) -> flax Dense kernel (in, out) [and bias]."""
  out[dst + '/kernel'] = take(src + '.weight').T
  if bias:
    out[dst + '/bias'] = take(src + '.bias')


def _linear_out(out: dict, torch_name: str, take, path: str, bias: bool = True):
  """The inverse of `_linear_in`: archzoo's Dense `path` -> torch Linear `torch_name`."""
  out[torch_name + '.weight'] = take(path + '/kernel').T
  if bias:
    out[torch_name + '.bias'] = take(path + '/bias')


def _norm_in(out: dict, dst: str, take, src: str):
  """A torch LayerNorm's weight / bias -> scale / bias."""
  out[dst + '/scale'] = take(src + '.weight')
  out[dst + '/bias'] = take(src + '.bias')


def _norm_out(out: dict, torch_name: str, take, path: str):
  """The inverse of `_norm_in`."""
  out[torch_name + '.weight'] = take(path + '/scale')
  out[torch_name + '.bias'] = take(path + '/bias')


def _conv_bn_in(out: dict, dst: str, take, conv: str, bn: str):
  """A bias-free torch conv (OIHW -> HWIO) and its BatchNorm -> archzoo's ConvBN `dst`
  (conv/kernel, norm/scale, norm/bias; running statistics into batch_stats)."""
  out[dst + '/conv/kernel'] = take(conv + '.weight').transpose(2, 3, 1, 0)
  out[dst + '/norm/scale'] = take(bn + '.weight')
  out[dst + '/norm/bias'] = take(bn + '.bias')
  out['batch_stats/' + dst + '/norm/mean'] = take(bn + '.running_mean')
  out['batch_stats/' + dst + '/norm/var'] = take(bn + '.running_var')


def _conv_bn_out(out: dict, dst: str, take, conv: str, bn: str):
  """The inverse of `_conv_bn_in` (num_batches_tracked, a counter, written as 0)."""
  out[conv + '.weight'] = take(dst + '/conv/kernel').transpose(3, 2, 0, 1)
  out[bn + '.weight'] = take(dst + '/norm/scale')
  out[bn + '.bias'] = take(dst + '/norm/bias')
  out[bn + '.running_mean'] = take('batch_stats/' + dst + '/norm/mean')
  out[bn + '.running_var'] = take('batch_stats/' + dst + '/norm/var')
  out[bn + '.num_batches_tracked'] = np.zeros((), np.int64)


def _count(t: dict, prefix: str) -> int:
  """How many `prefix{i}.` indices the names hold (0, 1, ... consecutive)."""
  found = {int(k[len(prefix):].split('.')[0]) for k in t
           if k.startswith(prefix) and k[len(prefix):].split('.')[0].isdigit()}
  if found != set(range(len(found))):
    raise UserError(f'{prefix}N: indices {sorted(found)} are not 0, 1, ... in turn')
  return len(found)


def _patch_grid(t: dict, arch: str, tokens: int) -> int:
  """The side of the square patch grid that pos_embed (1, tokens + side^2, D) covers."""
  n = int(t['pos_embed'].shape[1]) - tokens
  side = int(round(max(n, 0) ** 0.5))
  if side * side != n:
    raise UserError(f'{arch}: pos_embed holds {t["pos_embed"].shape[1]} positions, not '
                    f'{tokens} token(s) + a square grid (timm\'s no_embed_class or a '
                    f'non-square image); archzoo\'s table covers its tokens and a square grid')
  return side


# timm's size names -> the head count of its ViT / DeiT sizes, which the tensors cannot
# show (head width 64, but huge's 80 and giant's 88).
TIMM_HEADS = {'tiny': 3, 'small': 6, 'medium': 8, 'base': 12, 'large': 16, 'huge': 16,
              'giant': 16, 'gigantic': 16}


class Deit:
  """DeiT (Touvron et al. 2021) and plain ViTs as timm stores them (deit_*_patch16_224,
  deit_*_distilled_patch16_224, vit_*_patch*; VisionTransformer and
  VisionTransformerDistilled, hub files model.safetensors + config.json) <->
  arch/vision/vit.py (pool='cls'). No model config: the network is read off the tensors
  (width, patch and channels from the patch conv, depth from `blocks.N`, MLP from fc1,
  image size from pos_embed's grid, classes from `head`; `dist_token` and `head_dist` make
  it distilled), except the head count, which comes from timm's config.json beside the
  weights (`model_args.num_heads`, or the size its `architecture` names: tiny 3, small 6,
  medium 8, base 12, large / huge / giant 16). attn.qkv's fused rows [q; k; v] split into
  heads, attn.proj -> out, norm1 / norm2 -> self_attn_norm / mlp_norm, mlp.fc1 / fc2 ->
  wi / wo, `norm` the encoder's final LayerNorm (eps 1e-6 in both). Like timm, a distilled
  model's inference logits are the mean of its two heads. Refused: what archzoo's ViT
  lacks (LayerScale `ls1`/`ls2` of DeiT III, register tokens, fc_norm / average pooling
  without a class token, norm_pre, qkv without bias, q/k norms, a bias-free patch conv)."""
  model_name = 'vision.vit'
  source = 'timm'
  inputs = 'images'
  UNSUPPORTED = (('.ls1.', 'LayerScale (DeiT III)'), ('reg_token', 'register tokens'),
                 ('fc_norm.', 'fc_norm (average pooling)'), ('norm_pre.', 'norm_pre'),
                 ('.q_norm.', 'q/k norms'), ('attn_pool.', 'attention pooling'))

  @staticmethod
  def heads(meta) -> Optional[int]:
    """The head count timm's config.json gives (None without one)."""
    meta = meta or {}
    if (meta.get('model_args') or {}).get('num_heads'):
      return int(meta['model_args']['num_heads'])
    sizes = [TIMM_HEADS[w] for w in str(meta.get('architecture', '')).split('_')
             if w in TIMM_HEADS]
    return sizes[0] if sizes else None

  @staticmethod
  def describe(t: dict, meta: Optional[dict] = None) -> dict:
    if 'patch_embed.proj.weight' not in t or 'blocks.0.attn.qkv.weight' not in t:
      raise UserError('deit: not a timm VisionTransformer state_dict (no patch_embed.proj '
                      'or blocks.0.attn.qkv)')
    for key, what in Deit.UNSUPPORTED:
      if any(key in k for k in t):
        raise UserError(f'deit: the checkpoint has {what} ({key.strip(".")}); archzoo\'s '
                        f'ViT has none')
    if 'cls_token' not in t:
      raise UserError('deit: no cls_token (a ViT pooling its patches); archzoo imports '
                      'timm\'s class-token ViTs')
    if 'blocks.0.attn.qkv.bias' not in t or 'patch_embed.proj.bias' not in t:
      raise UserError('deit: qkv or the patch conv without bias; archzoo\'s ViT has biases')
    d, _, p, q = t['patch_embed.proj.weight'].shape
    if p != q:
      raise UserError(f'deit: {p}x{q} patches; archzoo\'s are square')
    distilled = 'dist_token' in t
    heads = Deit.heads(meta)
    if heads is None:
      raise UserError('deit: the head count cannot be read off the tensors; put timm\'s '
                      'config.json beside the weights (its `architecture` names the size, '
                      'e.g. deit_base_distilled_patch16_224) or one holding {"model_args": '
                      '{"num_heads": N}}')
    return {'image_size': _patch_grid(t, 'deit', 1 + distilled) * int(p), 'patch_size': int(p),
            'embed_dim': int(d), 'depth': _count(t, 'blocks.'), 'num_heads': heads,
            'mlp_dim': int(t['blocks.0.mlp.fc1.weight'].shape[0]),
            'num_classes': int(t['head.weight'].shape[0]) if 'head.weight' in t else 0,
            'pool': 'cls', 'distilled': distilled, 'norm_eps': 1e-6}

  @staticmethod
  def model_fields(ref: dict) -> dict:
    return dict(ref)

  @staticmethod
  def reference_config(model, channels: int) -> dict:
    """timm's hub config.json: `timm.create_model(architecture, **model_args)` builds it."""
    d, k = int(model['embed_dim']), int(model['num_classes'])
    args = {'img_size': int(model['image_size']), 'patch_size': int(model['patch_size']),
            'in_chans': channels, 'num_classes': k, 'embed_dim': d,
            'depth': int(model['depth']), 'num_heads': int(model['num_heads']),
            'mlp_ratio': int(model['mlp_dim']) / d, 'global_pool': 'token'}
    name = 'deit_base_distilled_patch16_224' if model['distilled'] else 'vit_base_patch16_224'
    return {'architecture': name, 'num_classes': k, 'num_features': d,
            'global_pool': 'token', 'model_args': args}

  @staticmethod
  def skip(name: str) -> bool:
    del name
    return False

  @staticmethod
  def to_archzoo(t: dict, ref: dict) -> dict:
    t = dict(t)
    take = _taker(t, 'deit')
    h = ref['num_heads']
    out = {'cls_token': take('cls_token'), 'pos_embed': take('pos_embed'),
           'patch_embed/proj/kernel': take('patch_embed.proj.weight').transpose(2, 3, 1, 0),
           'patch_embed/proj/bias': take('patch_embed.proj.bias')}
    _norm_in(out, 'encoder/norm', take, 'norm')
    heads = (('head', 'head'), ('head_dist', 'head_dist')) if ref['distilled'] else (
        ('head', 'head'),)
    if ref['distilled']:
      out['dist_token'] = take('dist_token')
    for src, dst in heads if ref['num_classes'] else ():
      _linear_in(out, dst, take, src)
    for i in range(ref['depth']):
      p, q = f'blocks.{i}.', f'encoder/layers_{i}/'
      _qkv_in(out, q + 'self_attn/', take, p + 'attn.qkv', h)
      w = take(p + 'attn.proj.weight')
      out[q + 'self_attn/out/kernel'] = w.T.reshape(h, -1, w.shape[0])
      out[q + 'self_attn/out/bias'] = take(p + 'attn.proj.bias')
      _norm_in(out, q + 'self_attn_norm', take, p + 'norm1')
      _norm_in(out, q + 'mlp_norm', take, p + 'norm2')
      _linear_in(out, q + 'mlp/wi', take, p + 'mlp.fc1')
      _linear_in(out, q + 'mlp/wo', take, p + 'mlp.fc2')
    _all_taken(t, 'deit')
    return out

  @staticmethod
  def to_reference(flat: dict, model) -> dict:
    f = dict(flat)
    take = _taker(f, 'deit')
    out = {'cls_token': take('cls_token'), 'pos_embed': take('pos_embed'),
           'patch_embed.proj.weight': take('patch_embed/proj/kernel').transpose(3, 2, 0, 1),
           'patch_embed.proj.bias': take('patch_embed/proj/bias')}
    if model['distilled']:
      out['dist_token'] = take('dist_token')
    _norm_out(out, 'norm', take, 'encoder/norm')
    for name in ('head', 'head_dist') if model['distilled'] else ('head',):
      if int(model['num_classes']):
        _linear_out(out, name, take, name)
    for i in range(int(model['depth'])):
      p, q = f'blocks.{i}.', f'encoder/layers_{i}/'
      _qkv_out(out, q + 'self_attn/', take, p + 'attn.qkv')
      w = take(q + 'self_attn/out/kernel')
      out[p + 'attn.proj.weight'] = w.reshape(-1, w.shape[-1]).T
      out[p + 'attn.proj.bias'] = take(q + 'self_attn/out/bias')
      _norm_out(out, p + 'norm1', take, q + 'self_attn_norm')
      _norm_out(out, p + 'norm2', take, q + 'mlp_norm')
      _linear_out(out, p + 'mlp.fc1', take, q + 'mlp/wi')
      _linear_out(out, p + 'mlp.fc2', take, q + 'mlp/wo')
    _all_taken(f, 'deit')
    return out


class Cait:
  """CaiT (Touvron et al. 2021) as timm stores it (cait_xxs24_224 ... cait_m48_448: hub
  files model.safetensors + config.json) <-> arch/vision/cait.py. No model config needed:
  the network is read off the tensors, the head count too (talking heads' attn.proj_l is
  heads x heads). Self-attention blocks `blocks.N`: attn.qkv's fused rows [q; k; v] split
  into heads, proj_l / proj_w (Linear over heads) -> mix_logits / mix_weights, attn.proj
  -> out, gamma_1 / gamma_2 (LayerScale) -> self_attn_scale / mlp_scale, norm1 / norm2 ->
  self_attn_norm / mlp_norm, mlp.fc1 / fc2 -> wi / wo. Class-attention blocks
  `blocks_token_only.N` -> class_layers_N: attn.q / k / v / proj -> class_attn's
  query / key / value / out, norm1 -> class_attn_norm, gamma_1 -> class_attn_scale, the rest
  as above; their MLP width is class_mlp_dim (None when it equals mlp_dim). pos_embed covers
  the patches only; LayerNorm eps 1e-6 in both."""
  model_name = 'vision.cait'
  source = 'timm'
  inputs = 'images'

  @staticmethod
  def describe(t: dict, meta: Optional[dict] = None) -> dict:
    del meta  # the tensors say it all
    if 'blocks.0.attn.proj_l.weight' not in t or 'blocks_token_only.0.attn.q.weight' not in t:
      raise UserError('cait: not a timm Cait state_dict (no blocks.0.attn.proj_l or '
                      'blocks_token_only.0.attn.q)')
    d, _, p, _ = t['patch_embed.proj.weight'].shape
    mlp, cls_mlp = (int(t[f'{b}.0.mlp.fc1.weight'].shape[0])
                    for b in ('blocks', 'blocks_token_only'))
    return {'image_size': _patch_grid(t, 'cait', 0) * int(p), 'patch_size': int(p),
            'embed_dim': int(d), 'depth': _count(t, 'blocks.'),
            'num_heads': int(t['blocks.0.attn.proj_l.weight'].shape[0]), 'mlp_dim': mlp,
            'class_depth': _count(t, 'blocks_token_only.'),
            'class_mlp_dim': None if cls_mlp == mlp else cls_mlp,
            'num_classes': int(t['head.weight'].shape[0]) if 'head.weight' in t else 0,
            'norm_eps': 1e-6}

  @staticmethod
  def model_fields(ref: dict) -> dict:
    return dict(ref)

  @staticmethod
  def reference_config(model, channels: int) -> dict:
    """timm's hub config.json: `timm.create_model(architecture, **model_args)` builds it."""
    d, k, mlp = int(model['embed_dim']), int(model['num_classes']), int(model['mlp_dim'])
    args = {'img_size': int(model['image_size']), 'patch_size': int(model['patch_size']),
            'in_chans': channels, 'num_classes': k, 'embed_dim': d,
            'depth': int(model['depth']), 'num_heads': int(model['num_heads']),
            'mlp_ratio': mlp / d, 'depth_token_only': int(model['class_depth']),
            'mlp_ratio_token_only': int(model.get('class_mlp_dim') or mlp) / d}
    return {'architecture': 'cait_xxs24_224', 'num_classes': k, 'num_features': d,
            'global_pool': 'token', 'model_args': args}

  @staticmethod
  def skip(name: str) -> bool:
    del name
    return False

  @staticmethod
  def _names(model):
    """(timm name, archzoo path, kind) of every tensor but the attention's q/k/v."""
    yield 'cls_token', 'cls_token', 'raw'
    yield 'pos_embed', 'pos_embed', 'raw'
    yield 'norm', 'norm', 'norm'
    if int(model['num_classes']):
      yield 'head', 'head', 'linear'
    for i in range(int(model['depth'])):
      p, q = f'blocks.{i}.', f'layers_{i}/'
      yield p + 'gamma_1', q + 'self_attn_scale', 'raw'
      yield p + 'gamma_2', q + 'mlp_scale', 'raw'
      yield p + 'norm1', q + 'self_attn_norm', 'norm'
      yield p + 'attn.proj_l', q + 'self_attn/mix_logits', 'linear'
      yield p + 'attn.proj_w', q + 'self_attn/mix_weights', 'linear'
    for i in range(int(model['class_depth'])):
      p, q = f'blocks_token_only.{i}.', f'class_layers_{i}/'
      yield p + 'gamma_1', q + 'class_attn_scale', 'raw'
      yield p + 'gamma_2', q + 'mlp_scale', 'raw'
      yield p + 'norm1', q + 'class_attn_norm', 'norm'
      for name in ('query', 'key', 'value'):
        yield p + f'attn.{name[0]}', q + f'class_attn/{name}', 'heads'
    stacks = (('blocks', 'layers', 'self_attn', int(model['depth'])),
              ('blocks_token_only', 'class_layers', 'class_attn', int(model['class_depth'])))
    for b, l, a, n in stacks:
      for j in range(n):
        p, q = f'{b}.{j}.', f'{l}_{j}/'
        yield p + 'attn.proj', q + f'{a}/out', 'out'
        yield p + 'norm2', q + 'mlp_norm', 'norm'
        yield p + 'mlp.fc1', q + 'mlp/wi', 'linear'
        yield p + 'mlp.fc2', q + 'mlp/wo', 'linear'

  @staticmethod
  def to_archzoo(t: dict, ref: dict) -> dict:
    t = dict(t)
    take = _taker(t, 'cait')
    h = ref['num_heads']
    out = {'patch_embed/proj/kernel': take('patch_embed.proj.weight').transpose(2, 3, 1, 0),
           'patch_embed/proj/bias': take('patch_embed.proj.bias')}
    for i in range(ref['depth']):
      _qkv_in(out, f'layers_{i}/self_attn/', take, f'blocks.{i}.attn.qkv', h)
    for src, dst, kind in Cait._names(ref):
      if kind == 'raw':
        out[dst] = take(src)
      elif kind == 'norm':
        _norm_in(out, dst, take, src)
      elif kind == 'linear':
        _linear_in(out, dst, take, src)
      elif kind == 'heads':
        w = take(src + '.weight')
        out[dst + '/kernel'] = w.T.reshape(w.shape[1], h, -1)
        out[dst + '/bias'] = take(src + '.bias').reshape(h, -1)
      else:  # out: (d, h e) -> (h, e, d)
        w = take(src + '.weight')
        out[dst + '/kernel'] = w.T.reshape(h, -1, w.shape[0])
        out[dst + '/bias'] = take(src + '.bias')
    _all_taken(t, 'cait')
    return out

  @staticmethod
  def to_reference(flat: dict, model) -> dict:
    f = dict(flat)
    take = _taker(f, 'cait')
    out = {'patch_embed.proj.weight': take('patch_embed/proj/kernel').transpose(3, 2, 0, 1),
           'patch_embed.proj.bias': take('patch_embed/proj/bias')}
    for i in range(int(model['depth'])):
      _qkv_out(out, f'layers_{i}/self_attn/', take, f'blocks.{i}.attn.qkv')
    for src, dst, kind in Cait._names(model):
      if kind == 'raw':
        out[src] = take(dst)
      elif kind == 'norm':
        _norm_out(out, src, take, dst)
      elif kind == 'linear':
        _linear_out(out, src, take, dst)
      elif kind == 'heads':
        w = take(dst + '/kernel')
        out[src + '.weight'] = w.reshape(w.shape[0], -1).T
        out[src + '.bias'] = take(dst + '/bias').reshape(-1)
      else:
        w = take(dst + '/kernel')
        out[src + '.weight'] = w.reshape(-1, w.shape[-1]).T
        out[src + '.bias'] = take(dst + '/bias')
    _all_taken(f, 'cait')
    return out


class Swin:
  """Swin Transformer v1 (Liu et al. 2021) as torchvision's swin_t / swin_s / swin_b
  state_dict stores it (saved as safetensors) <-> arch/vision/swin.py, whose layout is
  torchvision's. No config file: the network is read off the tensors (`features.0` the
  patch conv and its LayerNorm, `features.1, 3, 5, 7` the stages of blocks, `features.2,
  4, 6` the patch mergings; heads and window from each stage's relative_position_bias_table
  ((2M-1)^2, heads), the MLP ratio from mlp.0). Per block: norm1 / norm2 -> attn_norm /
  mlp_norm, attn.qkv's fused rows [q; k; v] split into heads, attn.proj -> out, the bias
  table as stored, mlp.0 / mlp.3 -> wi / wo; a merging's norm and bias-free reduction as
  stored (both concatenate the 2x2 neighbours in the same order). relative_position_index
  is a constant of the window (a buffer): skipped, and written back on export. LayerNorm
  eps 1e-5 in both. Refused: Swin V2 (swin_v2_*: cosine attention, a continuous position
  bias MLP), a non-square window or patch, widths that do not double per stage."""
  model_name = 'vision.swin'
  source = 'torchvision'
  inputs = 'images'

  @staticmethod
  def describe(t: dict) -> dict:
    if 'features.0.0.weight' not in t or 'norm.weight' not in t or (
        'features.1.0.attn.qkv.weight' not in t):
      raise UserError('swin: not a torchvision SwinTransformer state_dict (no features.0.0, '
                      'features.1.0.attn.qkv or norm tensors)')
    if any('cpb_mlp' in k or 'logit_scale' in k for k in t):
      raise UserError('swin: a Swin V2 state_dict (cpb_mlp, logit_scale); archzoo\'s Swin '
                      'is v1 (torchvision\'s swin_t, swin_s, swin_b)')
    d, _, p, q = t['features.0.0.weight'].shape
    if p != q:
      raise UserError(f'swin: {p}x{q} patches; archzoo\'s are square')
    depths, heads, windows, ratios = [], [], [], []
    k = 1
    while f'features.{k}.0.norm1.weight' in t:
      width = int(d) * 2 ** len(depths)
      rows, n = t[f'features.{k}.0.attn.relative_position_bias_table'].shape
      if int(t[f'features.{k}.0.norm1.weight'].shape[0]) != width:
        raise UserError(f'swin: stage {len(depths) + 1} is '
                        f'{t[f"features.{k}.0.norm1.weight"].shape[0]} wide, not {width}; '
                        f'archzoo\'s Swin doubles the width per stage')
      m = (int(round(rows ** 0.5)) + 1) // 2
      if (2 * m - 1) ** 2 != rows:
        raise UserError(f'swin: a bias table of {rows} rows is no square window\'s')
      depths.append(_count(t, f'features.{k}.'))
      heads.append(int(n))
      windows.append(m)
      ratios.append(t[f'features.{k}.0.mlp.0.weight'].shape[0] / width)
      k += 2
    if len(set(windows)) != 1 or len(set(ratios)) != 1:
      raise UserError(f'swin: windows {windows} and MLP ratios {ratios} differ by stage; '
                      f'archzoo\'s Swin has one of each')
    return {'patch_size': int(p), 'embed_dim': int(d), 'depths': tuple(depths),
            'num_heads': tuple(heads), 'window_size': windows[0], 'mlp_ratio': ratios[0],
            'num_classes': int(t['head.weight'].shape[0])}

  @staticmethod
  def model_fields(ref: dict) -> dict:
    return dict(ref)

  @staticmethod
  def skip(name: str) -> bool:
    return name.endswith('relative_position_index')

  @staticmethod
  def _names(model):
    """(torchvision name, archzoo path, kind) of every tensor but q/k/v and the index."""
    yield 'features.0.0', 'patch_embed/proj', 'conv'
    yield 'features.0.2', 'patch_norm', 'norm'
    yield 'norm', 'norm', 'norm'
    yield 'head', 'head', 'linear'
    for i, depth in enumerate(model['depths']):
      if i:
        yield f'features.{2 * i}.norm', f'merge{i}/norm', 'norm'
        yield f'features.{2 * i}.reduction', f'merge{i}/reduction', 'reduction'
      for j in range(depth):
        p, q = f'features.{2 * i + 1}.{j}.', f'stage{i + 1}_{j}/'
        yield p + 'norm1', q + 'attn_norm', 'norm'
        yield p + 'norm2', q + 'mlp_norm', 'norm'
        yield (p + 'attn.relative_position_bias_table', q + 'attn/relative_position_bias_table',
               'raw')
        yield p + 'attn.proj', q + 'attn/attention/out', 'out'
        yield p + 'mlp.0', q + 'mlp/wi', 'linear'
        yield p + 'mlp.3', q + 'mlp/wo', 'linear'

  @staticmethod
  def to_archzoo(t: dict, ref: dict) -> dict:
    t = dict(t)
    take = _taker(t, 'swin')
    out = {}
    for i, depth in enumerate(ref['depths']):
      for j in range(depth):
        _qkv_in(out, f'stage{i + 1}_{j}/attn/attention/', take,
                f'features.{2 * i + 1}.{j}.attn.qkv', ref['num_heads'][i])
    for src, dst, kind in Swin._names(ref):
      if kind == 'conv':
        out[dst + '/kernel'] = take(src + '.weight').transpose(2, 3, 1, 0)
        out[dst + '/bias'] = take(src + '.bias')
      elif kind == 'norm':
        _norm_in(out, dst, take, src)
      elif kind in ('linear', 'reduction'):
        _linear_in(out, dst, take, src, bias=kind == 'linear')
      elif kind == 'raw':
        out[dst] = take(src)
      else:  # out: (d, h e) -> (h, e, d)
        h = ref['num_heads'][int(dst.split('_')[0][len('stage'):]) - 1]
        w = take(src + '.weight')
        out[dst + '/kernel'] = w.T.reshape(h, -1, w.shape[0])
        out[dst + '/bias'] = take(src + '.bias')
    _all_taken(t, 'swin')
    return out

  @staticmethod
  def to_reference(flat: dict, model) -> dict:
    import arch  # the family through arch.load: train/ names no model family
    relative_position_index = arch.load('vision.swin', 'Model').relative_position_index
    f = dict(flat)
    take = _taker(f, 'swin')
    out = {}
    m = int(model['window_size'])
    for i, depth in enumerate(model['depths']):
      for j in range(depth):
        p = f'features.{2 * i + 1}.{j}.attn.'
        _qkv_out(out, f'stage{i + 1}_{j}/attn/attention/', take, p + 'qkv')
        out[p + 'relative_position_index'] = relative_position_index(m).reshape(-1).astype(
            np.int64)
    for src, dst, kind in Swin._names(model):
      if kind == 'conv':
        out[src + '.weight'] = take(dst + '/kernel').transpose(3, 2, 0, 1)
        out[src + '.bias'] = take(dst + '/bias')
      elif kind == 'norm':
        _norm_out(out, src, take, dst)
      elif kind in ('linear', 'reduction'):
        _linear_out(out, src, take, dst, bias=kind == 'linear')
      elif kind == 'raw':
        out[src] = take(dst)
      else:
        w = take(dst + '/kernel')
        out[src + '.weight'] = w.reshape(-1, w.shape[-1]).T
        out[src + '.bias'] = take(dst + '/bias')
    _all_taken(f, 'swin')
    return out


class Efficientnet:
  """EfficientNet B0-B7 (Tan & Le 2019) as torchvision's efficientnet_b0 ...
  efficientnet_b7 state_dict stores it (saved as safetensors) <-> arch/vision/
  efficientnet.py, whose layout is torchvision's. No config file: the blocks are read off
  the tensors (`features.S.B.block` for stages S = 1 ... 7, the stem `features.0`, the head
  conv the last `features.N`, `classifier.1`), each block's expand / depthwise / squeeze /
  project widths and kernel from their shapes, and archzoo's fields are the width and depth
  multipliers that scale B0's table into exactly these blocks (torchvision's b0-b7 pairs
  first, then any multiple of 0.05). The strides cannot show in the tensors: B0's (every
  torchvision EfficientNet has them). BatchNorm eps cannot either: torchvision's B5-B7
  (ported from TF) use 1e-3, the rest 1e-5, so the pair read off the tensors decides (a
  B5-B7 pair gives archzoo's `_TF_BN` eps and momentum). Convs (bias-free) OIHW -> HWIO,
  depthwise (C, 1, k, k) -> (k, k, 1, C); BatchNorm as resnet's; the squeeze-excitation's
  fc1 / fc2 (1x1 convs with bias) -> se/reduce / se/expand. Refused: EfficientNetV2 (fused
  MBConv blocks without squeeze-excitation) and a table no multiplier pair reproduces."""
  model_name = 'vision.efficientnet'
  source = 'torchvision'
  inputs = 'images'

  @staticmethod
  def _parts(t: dict, s: int, b: int) -> dict:
    """{'expand', 'depthwise', 'se', 'project'} -> the torchvision prefix of block B of
    stage S (no 'expand' when its expand ratio is 1)."""
    p = f'features.{s}.{b}.block.'
    names = ('expand', 'depthwise', 'se', 'project') if p + '3.0.weight' in t else (
        'depthwise', 'se', 'project')
    return {name: p + str(i) for i, name in enumerate(names)}

  @staticmethod
  def _table(width_mult: float, depth_mult: float):
    """Per stage, per block: (in, out, expanded, kernel) of B0's table scaled."""
    import arch  # the family through arch.load: train/ names no model family
    eff = arch.load('vision.efficientnet', 'Model')
    return [[(c['in_channels'], c['out_channels'], c['expanded'], c['kernel']) for c in stage]
            for stage in eff.block_settings(eff.B0_STAGES, float(width_mult),
                                            float(depth_mult), 0.0)]

  @staticmethod
  def _blocks(t: dict):
    """Per stage, per block: (in, out, expanded, kernel), read off the tensors."""
    stages = []
    s = 1
    while f'features.{s}.0.block.0.0.weight' in t:
      blocks = []
      for b in range(_count(t, f'features.{s}.')):
        part = Efficientnet._parts(t, s, b)
        if part['se'] + '.fc1.weight' not in t:
          raise UserError(f'efficientnet: features.{s}.{b} has no squeeze-excitation (an '
                          f'EfficientNetV2 fused block); archzoo\'s EfficientNet is B0-B7')
        dw = t[part['depthwise'] + '.0.weight']
        cin = t[part['expand'] + '.0.weight'].shape[1] if 'expand' in part else dw.shape[0]
        blocks.append((int(cin), int(t[part['project'] + '.0.weight'].shape[0]),
                       int(dw.shape[0]), int(dw.shape[2])))
      stages.append(blocks)
      s += 1
    return stages

  @staticmethod
  def describe(t: dict) -> dict:
    import arch  # the family through arch.load: train/ names no model family
    eff = arch.load('vision.efficientnet', 'Model')
    if 'features.0.0.weight' not in t or 'classifier.1.weight' not in t:
      raise UserError('efficientnet: not a torchvision EfficientNet state_dict (no '
                      'features.0.0 or classifier.1 tensors)')
    if t['features.0.0.weight'].shape[2:] != (3, 3):
      raise UserError(f'efficientnet: a {tuple(t["features.0.0.weight"].shape[2:])} stem; '
                      f'archzoo\'s is 3x3/2')
    stages = Efficientnet._blocks(t)
    head = f'features.{len(stages) + 1}.0.weight'
    if not stages or head not in t:
      raise UserError(f'efficientnet: no MBConv stages or no head conv {head}')
    table = Efficientnet._table
    steps = [round(0.05 * i, 2) for i in range(1, 81)]
    # A torchvision size first; else the first width giving these channels (one block per
    # stage: depth ~0) and the first depth giving these block counts.
    match = next(((k, v['width_mult'], v['depth_mult']) for k, v in eff.VARIANTS.items()
                  if table(v['width_mult'], v['depth_mult']) == stages), None)
    if match is None and len(stages) == len(eff.B0_STAGES):
      w = next((w for w in steps if table(w, 1e-6) == [stage[:1] for stage in stages]), None)
      dm = next((d for d in steps if [eff.scale_depth(row[5], d) for row in eff.B0_STAGES]
                 == [len(stage) for stage in stages]), None)
      if w is not None and dm is not None and table(w, dm) == stages:
        match = (None, w, dm)
    if match is None:
      raise UserError(f'efficientnet: no width / depth multipliers (0.05 ... 4.0) scale '
                      f'B0\'s table into these {sum(map(len, stages))} blocks; archzoo\'s '
                      f'EfficientNet is B0\'s table compound-scaled')
    name, w, dm = match
    fields = {'width_mult': w, 'depth_mult': dm,
              'head_ratio': int(t[head].shape[0]) // stages[-1][-1][1],
              'num_classes': int(t['classifier.1.weight'].shape[0]), 'bn_epsilon': 1e-5}
    if name is not None and 'bn_epsilon' in eff.VARIANTS[name]:  # B5-B7
      fields.update(bn_epsilon=eff.VARIANTS[name]['bn_epsilon'],
                    bn_momentum=eff.VARIANTS[name]['bn_momentum'])
    return fields

  @staticmethod
  def model_fields(ref: dict) -> dict:
    return dict(ref)

  @staticmethod
  def equivalent_fields(fields: dict, model: dict) -> dict:
    """`fields` with the config's multipliers where they build the same blocks (several
    pairs do: depth 0.05 and 0.25 both give B0's stages one block each)."""
    import arch  # the family through arch.load: train/ names no model family
    eff = arch.load('vision.efficientnet', 'Model')
    table = Efficientnet._table
    if (tuple(map(tuple, model.get('stages') or eff.B0_STAGES)) == eff.B0_STAGES and
        table(model['width_mult'], model['depth_mult']) == table(fields['width_mult'],
                                                                 fields['depth_mult'])):
      return {**fields, 'width_mult': model['width_mult'], 'depth_mult': model['depth_mult']}
    return fields

  @staticmethod
  def skip(name: str) -> bool:
    return name.endswith('num_batches_tracked')

  @staticmethod
  def _layout(model):
    """(kind, torchvision prefix, archzoo path) of every conv + BN and SE of the network
    `model` describes (its blocks from efficientnet.block_settings)."""
    import arch  # the family through arch.load: train/ names no model family
    eff = arch.load('vision.efficientnet', 'Model')
    yield 'convbn', 'features.0', 'stem'
    settings = eff.block_settings(model.get('stages') or eff.B0_STAGES,
                                  float(model['width_mult']), float(model['depth_mult']), 0.0)
    for s, blocks in enumerate(settings):
      for b, c in enumerate(blocks):
        p, q = f'features.{s + 1}.{b}.block.', f'stage{s + 1}_block{b}/'
        names = ['depthwise', 'se', 'project']
        if c['expanded'] != c['in_channels']:
          names.insert(0, 'expand')
        for i, name in enumerate(names):
          yield ('se' if name == 'se' else 'convbn'), p + str(i), q + name
    if int(model.get('head_ratio', 4)):
      yield 'convbn', f'features.{len(settings) + 1}', 'head_conv'

  @staticmethod
  def to_archzoo(t: dict, ref: dict) -> dict:
    t = dict(t)
    take = _taker(t, 'efficientnet')
    out = {}
    _linear_in(out, 'head', take, 'classifier.1')
    for kind, src, dst in Efficientnet._layout(ref):
      if kind == 'convbn':
        _conv_bn_in(out, dst, take, src + '.0', src + '.1')
      else:
        for fc, name in (('fc1', 'reduce'), ('fc2', 'expand')):
          out[f'{dst}/{name}/kernel'] = take(f'{src}.{fc}.weight').transpose(2, 3, 1, 0)
          out[f'{dst}/{name}/bias'] = take(f'{src}.{fc}.bias')
    _all_taken(t, 'efficientnet')
    return out

  @staticmethod
  def to_reference(flat: dict, model) -> dict:
    f = dict(flat)
    take = _taker(f, 'efficientnet')
    out = {}
    _linear_out(out, 'classifier.1', take, 'head')
    for kind, src, dst in Efficientnet._layout(model):
      if kind == 'convbn':
        _conv_bn_out(out, dst, take, src + '.0', src + '.1')
      else:
        for fc, name in (('fc1', 'reduce'), ('fc2', 'expand')):
          out[f'{src}.{fc}.weight'] = take(f'{dst}/{name}/kernel').transpose(3, 2, 0, 1)
          out[f'{src}.{fc}.bias'] = take(f'{dst}/{name}/bias')
    _all_taken(f, 'efficientnet')
    return out


class AutoencoderKl:
  """The KL autoencoder of latent diffusion as diffusers' AutoencoderKL stores it (Stable
  Diffusion 1.x / 2.x's `vae` folder: diffusion_pytorch_model.safetensors + config.json)
  <-> arch/generative/autoencoder_kl.py, the same network: config.json's
  block_out_channels, layers_per_block, latent_channels, out_channels and norm_num_groups
  are the model's fields (in_channels the task's image channels, scaling_factor not a
  parameter: archzoo measures the latent scale of a run). Encoder down_blocks.I.resnets.J
  -> downI_resJ (norm1, conv1, norm2, conv2, a 1x1 conv_shortcut where the width changes),
  downsamplers.0.conv -> downI_downsample (both pad bottom / right, then a valid 3x3/2
  conv); the mid block's resnets.0 / attentions.0 / resnets.1 -> mid/res0 / attn / res1,
  the attention's group_norm / to_q / to_k / to_v / to_out.0 (single head: diffusers'
  attention_head_dim is the last width) -> norm / query / key / value / out; conv_norm_out
  -> norm_out; decoder up_blocks.I (widths reversed, layers_per_block + 1 resnets,
  upsamplers.0.conv -> upI_upsample); quant_conv / post_quant_conv as stored. Convs OIHW ->
  HWIO, Linear transposed, GroupNorm eps 1e-6 in both. The pre-2023 attention names
  (query, key, value, proj_attn), which diffusers converts on load, are read too. Refused:
  other autoencoder classes, block types other than DownEncoderBlock2D / UpDecoderBlock2D,
  act_fn other than silu, no quant convs or no mid-block attention. Inputs `images`
  (B, H, W, C) in [-1, 1]; outputs the posterior's `mean` and `logvar` (clipped to
  [-30, 20] in both) and `sample`, the decoding of the mean."""
  model_name = 'generative.autoencoder_kl'
  source = 'diffusers'
  inputs = 'images'
  outputs = ('sample', 'mean', 'logvar')
  weights_file = 'diffusion_pytorch_model.safetensors'  # the name diffusers loads

  @staticmethod
  def model_fields(ref: dict) -> dict:
    _refuse('autoencoder_kl', ref, (
        ('_class_name', 'AutoencoderKL'), ('act_fn', 'silu'), ('use_quant_conv', True),
        ('use_post_quant_conv', True), ('mid_block_add_attention', True)))
    widths = tuple(ref.get('block_out_channels', (64,)))
    for key, want in (('down_block_types', 'DownEncoderBlock2D'),
                      ('up_block_types', 'UpDecoderBlock2D')):
      if any(b != want for b in ref.get(key, [want])):
        raise UserError(f'autoencoder_kl: config.json has {key}={ref[key]!r}; archzoo\'s '
                        f'AutoencoderKL has {want} only')
    return {'block_out_channels': widths, 'layers_per_block': ref.get('layers_per_block', 1),
            'latent_channels': ref.get('latent_channels', 4),
            'out_channels': ref.get('out_channels', 3), 'groups': ref.get('norm_num_groups', 32)}

  @staticmethod
  def reference_config_of(config) -> dict:
    model = {**_model_defaults(config), **config.model.to_dict()}
    channels = int(config.task_kwargs.get('channels', model['out_channels']))
    n = len(model['block_out_channels'])
    return {'_class_name': 'AutoencoderKL', 'in_channels': channels,
            'out_channels': int(model['out_channels']),
            'down_block_types': ['DownEncoderBlock2D'] * n,
            'up_block_types': ['UpDecoderBlock2D'] * n,
            'block_out_channels': [int(c) for c in model['block_out_channels']],
            'layers_per_block': int(model['layers_per_block']), 'act_fn': 'silu',
            'latent_channels': int(model['latent_channels']),
            'norm_num_groups': int(model['groups']), 'use_quant_conv': True,
            'use_post_quant_conv': True, 'mid_block_add_attention': True}

  @staticmethod
  def skip(name: str) -> bool:
    del name
    return False

  @staticmethod
  def outputs_of(module, b):
    mean, logvar = module.encode(b['images'])
    return {'sample': module.decode(mean), 'mean': mean, 'logvar': logvar}

  OLD_NAMES = (('.query.', '.to_q.'), ('.key.', '.to_k.'), ('.value.', '.to_v.'),
               ('.proj_attn.', '.to_out.0.'))

  @staticmethod
  def _parts(widths, layers):
    """(diffusers prefix, archzoo path, kind) of every conv, norm, ResNet and attention."""
    n = len(widths)
    yield 'encoder.conv_in', 'encoder/conv_in', 'conv'
    for i in range(n):
      for j in range(layers):
        yield f'encoder.down_blocks.{i}.resnets.{j}', f'encoder/down{i}_res{j}', 'resnet'
      if i < n - 1:
        yield (f'encoder.down_blocks.{i}.downsamplers.0.conv', f'encoder/down{i}_downsample',
               'conv')
    for stack in ('encoder', 'decoder'):
      if stack == 'decoder':
        yield 'decoder.conv_in', 'decoder/conv_in', 'conv'
      m = f'{stack}.mid_block.'
      yield m + 'resnets.0', f'{stack}/mid/res0', 'resnet'
      yield m + 'attentions.0', f'{stack}/mid/attn', 'attention'
      yield m + 'resnets.1', f'{stack}/mid/res1', 'resnet'
      if stack == 'encoder':
        yield 'encoder.conv_norm_out', 'encoder/norm_out', 'norm'
        yield 'encoder.conv_out', 'encoder/conv_out', 'conv'
        yield 'quant_conv', 'quant_conv', 'conv'
        yield 'post_quant_conv', 'post_quant_conv', 'conv'
    for i in range(n):
      for j in range(layers + 1):
        yield f'decoder.up_blocks.{i}.resnets.{j}', f'decoder/up{i}_res{j}', 'resnet'
      if i < n - 1:
        yield f'decoder.up_blocks.{i}.upsamplers.0.conv', f'decoder/up{i}_upsample', 'conv'
    yield 'decoder.conv_norm_out', 'decoder/norm_out', 'norm'
    yield 'decoder.conv_out', 'decoder/conv_out', 'conv'

  @staticmethod
  def to_archzoo(t: dict, ref: dict) -> dict:
    t = {functools.reduce(lambda k, r: k.replace(*r) if '.attentions.' in k else k,
                          AutoencoderKl.OLD_NAMES, k): v for k, v in t.items()}
    take = _taker(t, 'autoencoder_kl')
    fields = AutoencoderKl.model_fields(ref)
    out = {}

    def conv(dst, src):
      out[dst + '/kernel'] = take(src + '.weight').transpose(2, 3, 1, 0)
      out[dst + '/bias'] = take(src + '.bias')
    for src, dst, kind in AutoencoderKl._parts(fields['block_out_channels'],
                                               fields['layers_per_block']):
      if kind == 'conv':
        conv(dst, src)
      elif kind == 'norm':
        _norm_in(out, dst, take, src)
      elif kind == 'resnet':
        for name in ('norm1', 'norm2'):
          _norm_in(out, f'{dst}/{name}', take, f'{src}.{name}')
        for name in ('conv1', 'conv2') + (('conv_shortcut',) * (
            f'{src}.conv_shortcut.weight' in t)):
          conv(f'{dst}/{name}', f'{src}.{name}')
      else:
        _norm_in(out, dst + '/norm', take, src + '.group_norm')
        for name, torch_name in (('query', 'to_q'), ('key', 'to_k'), ('value', 'to_v'),
                                 ('out', 'to_out.0')):
          _linear_in(out, f'{dst}/{name}', take, f'{src}.{torch_name}')
    _all_taken(t, 'autoencoder_kl')
    return out

  @staticmethod
  def to_reference(flat: dict, model) -> dict:
    f = dict(flat)
    take = _taker(f, 'autoencoder_kl')
    out = {}

    def conv(src, dst):
      out[src + '.weight'] = take(dst + '/kernel').transpose(3, 2, 0, 1)
      out[src + '.bias'] = take(dst + '/bias')
    for src, dst, kind in AutoencoderKl._parts(tuple(model['block_out_channels']),
                                               int(model['layers_per_block'])):
      if kind == 'conv':
        conv(src, dst)
      elif kind == 'norm':
        _norm_out(out, src, take, dst)
      elif kind == 'resnet':
        for name in ('norm1', 'norm2'):
          _norm_out(out, f'{src}.{name}', take, f'{dst}/{name}')
        for name in ('conv1', 'conv2') + (('conv_shortcut',) * (
            f'{dst}/conv_shortcut/kernel' in f)):
          conv(f'{src}.{name}', f'{dst}/{name}')
      else:
        _norm_out(out, src + '.group_norm', take, dst + '/norm')
        for name, torch_name in (('query', 'to_q'), ('key', 'to_k'), ('value', 'to_v'),
                                 ('out', 'to_out.0')):
          _linear_out(out, f'{src}.{torch_name}', take, f'{dst}/{name}')
    _all_taken(f, 'autoencoder_kl')
    return out


class Mamba:
  """Mamba (Gu & Dao 2023) as Hugging Face's MambaForCausalLM stores it (state-spaces/
  mamba-130m-hf and the other *-hf conversions) <-> arch/sequence/mamba.py, whose names are
  its: backbone.embeddings / layers.{i}.{norm, mixer.*} / norm_f; torch Linear weights
  transposed, conv1d's depthwise (E, 1, K) weight a (K, E) kernel, A_log, D and the dt_proj
  bias as stored. The head is the tied embedding (a stored lm_head.weight, a copy, is
  skipped). Refused: in/out projection biases (use_bias), a bias-free convolution,
  activations other than SiLU, an untied head. `residual_in_fp32` and the initialisation
  fields (time_step_min/max/floor/scale, rescale_prenorm_residual) change no float32
  forward pass."""
  model_name = 'sequence.mamba'
  inputs = 'tokens'

  @staticmethod
  def model_fields(ref: dict) -> dict:
    _refuse('mamba', ref, (('use_bias', False), ('use_conv_bias', True), ('hidden_act', 'silu'),
                           ('tie_word_embeddings', True)))
    d, expand = ref['hidden_size'], ref.get('expand', 2)
    if ref.get('intermediate_size', expand * d) != expand * d:
      raise UserError(f'mamba: config.json has intermediate_size={ref["intermediate_size"]} '
                      f'!= expand * hidden_size = {expand * d}; archzoo\'s Mamba has E = '
                      f'expand * D only')
    rank = ref.get('time_step_rank', 'auto')
    return {'vocab_size': ref['vocab_size'], 'num_layers': ref['num_hidden_layers'],
            'embed_dim': d, 'state_dim': ref.get('state_size', 16),
            'conv_width': ref.get('conv_kernel', 4), 'expand': expand,
            'dt_rank': -(-d // 16) if rank == 'auto' else int(rank),
            'norm_eps': ref.get('layer_norm_epsilon', 1e-5)}

  @staticmethod
  def equivalent_fields(fields: dict, model: dict) -> dict:
    """dt_rank None (archzoo's default) is ceil(D / 16)."""
    if model.get('dt_rank') is None and fields['dt_rank'] == -(-fields['embed_dim'] // 16):
      return {**fields, 'dt_rank': None}
    return fields

  @staticmethod
  def reference_config(model, channels: int = 0) -> dict:
    del channels
    d, expand = int(model['embed_dim']), int(model['expand'])
    return {'model_type': 'mamba', 'architectures': ['MambaForCausalLM'],
            'vocab_size': int(model['vocab_size']), 'hidden_size': d,
            'num_hidden_layers': int(model['num_layers']), 'state_size': int(model['state_dim']),
            'conv_kernel': int(model['conv_width']), 'expand': expand,
            'intermediate_size': expand * d,
            'time_step_rank': int(model.get('dt_rank') or -(-d // 16)),
            'layer_norm_epsilon': float(model['norm_eps']), 'hidden_act': 'silu',
            'use_bias': False, 'use_conv_bias': True, 'residual_in_fp32': True,
            'tie_word_embeddings': True}

  @staticmethod
  def skip(name: str) -> bool:
    return name == 'lm_head.weight'  # the tied embedding

  LINEARS = ('in_proj', 'x_proj', 'out_proj')

  @staticmethod
  def to_archzoo(t: dict, ref: dict) -> dict:
    t = {k.removeprefix('backbone.'): v for k, v in t.items()}
    take = _taker(t, 'mamba')
    out = {'embeddings/embedding': take('embeddings.weight'),
           'norm_f/scale': take('norm_f.weight')}
    for i in range(ref['num_hidden_layers']):
      p, q = f'layers.{i}.', f'layers_{i}/'
      out[q + 'norm/scale'] = take(p + 'norm.weight')
      p, q = p + 'mixer.', q + 'mixer/'
      for name in Mamba.LINEARS:
        _linear_in(out, q + name, take, p + name, bias=False)
      _linear_in(out, q + 'dt_proj', take, p + 'dt_proj')
      out[q + 'conv1d/kernel'] = take(p + 'conv1d.weight')[:, 0, :].T
      out[q + 'conv1d/bias'] = take(p + 'conv1d.bias')
      out[q + 'A_log'] = take(p + 'A_log')
      out[q + 'D'] = take(p + 'D')
    _all_taken(t, 'mamba')
    return out

  @staticmethod
  def to_reference(flat: dict, model) -> dict:
    f = dict(flat)
    take = _taker(f, 'mamba')
    out = {'backbone.embeddings.weight': take('embeddings/embedding'),
           'backbone.norm_f.weight': take('norm_f/scale')}
    for i in range(int(model['num_layers'])):
      p, q = f'backbone.layers.{i}.', f'layers_{i}/'
      out[p + 'norm.weight'] = take(q + 'norm/scale')
      p, q = p + 'mixer.', q + 'mixer/'
      for name in Mamba.LINEARS:
        _linear_out(out, p + name, take, q + name, bias=False)
      _linear_out(out, p + 'dt_proj', take, q + 'dt_proj')
      out[p + 'conv1d.weight'] = take(q + 'conv1d/kernel').T[:, None, :]
      out[p + 'conv1d.bias'] = take(q + 'conv1d/bias')
      out[p + 'A_log'] = take(q + 'A_log')
      out[p + 'D'] = take(q + 'D')
    _all_taken(f, 'mamba')
    return out


class Rwkv:
  """RWKV-4 (Peng et al. 2023) as Hugging Face's RwkvForCausalLM stores it (RWKV/rwkv-4-*,
  e.g. rwkv-4-169m-pile) <-> arch/sequence/rwkv.py, the same generation (v4: a per-channel
  decay and bonus, WKV with the running-max state, squared-ReLU channel mix) with its names:
  rwkv.embeddings, rwkv.blocks.{i}.{pre_ln (block 0), ln1, ln2, attention.*,
  feed_forward.*}, rwkv.ln_out, head (untied); torch Linear weights transposed, the
  (1, 1, D) token-shift mixes (D,), time_decay / time_first as stored (archzoo's decay is
  -exp(time_decay), as HF's). `rescale_every` (HF halves the residual every N layers at
  inference, with output / value weights scaled to match) is an fp16 overflow guard, exact
  up to LayerNorm's eps: the stored weights are the unscaled ones, which archzoo runs
  as they are. Refused: a tied head."""
  model_name = 'sequence.rwkv'
  inputs = 'tokens'

  @staticmethod
  def model_fields(ref: dict) -> dict:
    _refuse('rwkv', ref, (('tie_word_embeddings', False),))
    d = ref['hidden_size']
    return {'vocab_size': ref['vocab_size'], 'num_layers': ref['num_hidden_layers'],
            'embed_dim': d, 'attention_dim': ref.get('attention_hidden_size') or d,
            'ffn_dim': ref.get('intermediate_size') or 4 * d,
            'norm_eps': ref.get('layer_norm_epsilon', 1e-5)}

  @staticmethod
  def equivalent_fields(fields: dict, model: dict) -> dict:
    """attention_dim / ffn_dim None (archzoo's defaults) are D / 4 D."""
    d, fields = fields['embed_dim'], dict(fields)
    for key, default in (('attention_dim', d), ('ffn_dim', 4 * d)):
      if model.get(key) is None and fields[key] == default:
        fields[key] = None
    return fields

  @staticmethod
  def reference_config(model, channels: int = 0) -> dict:
    del channels
    d = int(model['embed_dim'])
    return {'model_type': 'rwkv', 'architectures': ['RwkvForCausalLM'],
            'vocab_size': int(model['vocab_size']), 'hidden_size': d,
            'num_hidden_layers': int(model['num_layers']),
            'attention_hidden_size': int(model.get('attention_dim') or d),
            'intermediate_size': int(model.get('ffn_dim') or 4 * d),
            'layer_norm_epsilon': float(model['norm_eps']), 'rescale_every': 6,
            'tie_word_embeddings': False}

  @staticmethod
  def skip(name: str) -> bool:
    del name
    return False

  ATTENTION = ('key', 'value', 'receptance', 'output')
  FEED_FORWARD = ('key', 'receptance', 'value')

  @staticmethod
  def to_archzoo(t: dict, ref: dict) -> dict:
    t = dict(t)
    take = _taker(t, 'rwkv')
    out = {'embeddings/embedding': take('rwkv.embeddings.weight'),
           'head/kernel': take('head.weight').T}
    _norm_in(out, 'ln_out', take, 'rwkv.ln_out')
    for i in range(ref['num_hidden_layers']):
      p, q = f'rwkv.blocks.{i}.', f'blocks_{i}/'
      for name in ('ln1', 'ln2') + (('pre_ln',) if i == 0 else ()):
        _norm_in(out, q + name, take, p + name)
      for part, linears, mixes in (
          ('attention', Rwkv.ATTENTION, ('key', 'value', 'receptance')),
          ('feed_forward', Rwkv.FEED_FORWARD, ('key', 'receptance'))):
        for name in linears:
          _linear_in(out, f'{q}{part}/{name}', take, f'{p}{part}.{name}', bias=False)
        for name in mixes:
          out[f'{q}{part}/time_mix_{name}'] = take(f'{p}{part}.time_mix_{name}').reshape(-1)
      for name in ('time_decay', 'time_first'):
        out[f'{q}attention/{name}'] = take(f'{p}attention.{name}')
    _all_taken(t, 'rwkv')
    return out

  @staticmethod
  def to_reference(flat: dict, model) -> dict:
    f = dict(flat)
    take = _taker(f, 'rwkv')
    out = {'rwkv.embeddings.weight': take('embeddings/embedding'),
           'head.weight': take('head/kernel').T}
    _norm_out(out, 'rwkv.ln_out', take, 'ln_out')
    for i in range(int(model['num_layers'])):
      p, q = f'rwkv.blocks.{i}.', f'blocks_{i}/'
      for name in ('ln1', 'ln2') + (('pre_ln',) if i == 0 else ()):
        _norm_out(out, p + name, take, q + name)
      for part, linears, mixes in (
          ('attention', Rwkv.ATTENTION, ('key', 'value', 'receptance')),
          ('feed_forward', Rwkv.FEED_FORWARD, ('key', 'receptance'))):
        for name in linears:
          _linear_out(out, f'{p}{part}.{name}', take, f'{q}{part}/{name}', bias=False)
        for name in mixes:
          out[f'{p}{part}.time_mix_{name}'] = take(f'{q}{part}/time_mix_{name}').reshape(
              1, 1, -1)
      for name in ('time_decay', 'time_first'):
        out[f'{p}attention.{name}'] = take(f'{q}attention/{name}')
    _all_taken(f, 'rwkv')
    return out


class Dit:
  """DiT (Peebles & Xie 2023) as diffusers' DiTTransformer2DModel stores it (facebook/
  DiT-XL-2-256's and -512's `transformer` folder: diffusion_pytorch_model.safetensors +
  config.json) <-> arch/generative/dit.py. What diffusers computes otherwise than the
  official DiT, archzoo's model has as fields the import asks for: timestep frequencies
  10000^(-i / (128 - 1)) (its Timesteps' downscale_freq_shift=1: `frequency_shift=1`) and
  the MLP's LayerNorm eps from config.json's norm_eps (1e-5: `mlp_norm_eps`); the other
  LayerNorms are 1e-6 in both. Each diffusers block keeps its own timestep MLP and label
  table (norm1.emb); the published ones are equal copies of the official model's one pair,
  which archzoo has once: they are read from block 0 after checking that every block's
  equals it (refused otherwise), and written to every block on export. diffusers'
  position table codes the column in the first half of the channels, archzoo's the row:
  the same network with the residual stream's two halves swapped, so every kernel that
  reads or writes the stream (patch embedding, q/k/v rows, attention out and MLP out
  columns, the adaLN shift / scale / gate columns, the final linear's rows) is
  permuted by that swap (an involution: export swaps back, bit for bit). Names:
  pos_embed.proj -> patch_embed/proj, norm1.emb.timestep_embedder.linear_1/2 -> t_embed/
  fc1/2, norm1.emb.class_embedder.embedding_table -> label_embed, transformer_blocks.{i}.
  {norm1.linear, attn1.to_q/k/v/out.0, ff.net.0.proj, ff.net.2} -> block{i}/{adaln,
  attn/query/key/value/out, mlp/wi, mlp/wo}, proj_out_1 / proj_out_2 -> final/adaln /
  final/linear. The published DiT-XL-2-* config.json names the class Transformer2DModel,
  which diffusers remaps to this one (norm_type ada_norm_zero): read alike. Parity holds
  at config.json's sample_size (diffusers rescales its position
  grid for other sizes; archzoo's table is the grid's own). Refused: other norm_type,
  activation_fn, attention without bias, affine LayerNorms, no class labels, out_channels
  other than in_channels or twice it. Inputs `images` (B, H, W, C), `timesteps` (B,)
  float, `labels` (B,) int (num_classes: the null class); output `sample`
  (B, H, W, out_channels)."""
  model_name = 'generative.dit'
  source = 'diffusers'
  inputs = 'images'
  kwargs = {'timesteps': 't_B', 'labels': 'label_B'}
  outputs = ('sample',)
  weights_file = 'diffusion_pytorch_model.safetensors'

  @staticmethod
  def model_fields(ref: dict) -> dict:
    # (facebook/DiT-XL-2-*'s config.json predates the class: diffusers remaps
    # Transformer2DModel with norm_type ada_norm_zero to it on load)
    if ref.get('_class_name') not in ('DiTTransformer2DModel', 'Transformer2DModel', None):
      raise UserError(f'dit: config.json has _class_name={ref["_class_name"]!r}; archzoo\'s '
                      f'DiT reads DiTTransformer2DModel (or the Transformer2DModel it was)')
    _refuse('dit', ref, (
        ('norm_type', 'ada_norm_zero'), ('activation_fn', 'gelu-approximate'),
        ('attention_bias', True), ('norm_elementwise_affine', False),
        ('cross_attention_dim', None), ('num_vector_embeds', None)))
    if not ref.get('num_embeds_ada_norm', 1000):
      raise UserError('dit: config.json has no num_embeds_ada_norm (class labels); '
                      'diffusers\' DiT needs them')
    c = ref.get('in_channels', 4)
    out = ref.get('out_channels') or c
    if out not in (c, 2 * c):
      raise UserError(f'dit: config.json has out_channels={out} with in_channels={c}; '
                      f'archzoo\'s DiT outputs in_channels or twice that (learn_sigma)')
    heads = ref.get('num_attention_heads', 16)
    return {'hidden_dim': heads * ref.get('attention_head_dim', 72),
            'depth': ref.get('num_layers', 28), 'num_heads': heads,
            'patch_size': ref.get('patch_size', 2), 'mlp_ratio': 4.0,
            'num_classes': ref.get('num_embeds_ada_norm', 1000), 'class_dropout': True,
            'learn_sigma': out == 2 * c, 'frequency_dim': 256, 'frequency_shift': 1.0,
            'mlp_norm_eps': ref.get('norm_eps', 1e-5)}

  @staticmethod
  def reference_config_of(config) -> dict:
    model = {**_model_defaults(config), **config.model.to_dict()}
    if float(model['frequency_shift']) != 1.0 or int(model['frequency_dim']) != 256:
      raise UserError(f'dit: diffusers\' DiT embeds timesteps with 256 frequencies '
                      f'shifted by 1; this run has frequency_dim={model["frequency_dim"]}, '
                      f'frequency_shift={model["frequency_shift"]}, which its config cannot '
                      f'say: the export would compute another network')
    if float(model['mlp_ratio']) != 4.0 or not model['num_classes'] or not model[
        'class_dropout']:
      raise UserError('dit: diffusers\' DiT has MLP ratio 4 and class labels with a null '
                      'class only')
    c = int(config.task_kwargs.get('channels', 4))
    d, h = int(model['hidden_dim']), int(model['num_heads'])
    out = int(model.get('out_channels') or (2 * c if model['learn_sigma'] else c))
    return {'_class_name': 'DiTTransformer2DModel', 'num_attention_heads': h,
            'attention_head_dim': d // h, 'in_channels': c, 'out_channels': out,
            'num_layers': int(model['depth']), 'dropout': 0.0, 'norm_num_groups': 32,
            'attention_bias': True,
            'sample_size': int(tuple(config.task_kwargs.get('input_size', (32, 32)))[0]),
            'patch_size': int(model['patch_size']), 'activation_fn': 'gelu-approximate',
            'num_embeds_ada_norm': int(model['num_classes']), 'upcast_attention': False,
            'norm_type': 'ada_norm_zero', 'norm_elementwise_affine': False,
            'norm_eps': float(model['mlp_norm_eps'])}

  @staticmethod
  def skip(name: str) -> bool:
    del name
    return False

  @staticmethod
  def outputs_of(module, b):
    return {'sample': module(b['images'], b['timesteps'], b['labels'])}

  EMBED = (('timestep_embedder.linear_1', 't_embed/fc1'),
           ('timestep_embedder.linear_2', 't_embed/fc2'))

  @staticmethod
  def _swap(a, axis: int):
    """The residual stream's two halves swapped along `axis` (its own inverse)."""
    if a.strides[axis] == 0:  # every entry along `axis` the same (shapes without values)
      return a
    return np.roll(a, a.shape[axis] // 2, axis=axis)

  @staticmethod
  def _chunks(a, n: int):
    """Each of the n (D,) chunks of a (..., n * D) adaLN output swapped."""
    return Dit._swap(a.reshape(*a.shape[:-1], n, -1), -1).reshape(a.shape)

  @staticmethod
  def to_archzoo(t: dict, ref: dict) -> dict:
    t = dict(t)
    take = _taker(t, 'dit')
    sw, chunks = Dit._swap, Dit._chunks
    depth = ref.get('num_layers', 28)
    out = {}
    emb = 'transformer_blocks.{}.norm1.emb.'
    for i in range(1, depth):  # the copies must be block 0's
      for src in [s for s, _ in Dit.EMBED] + ['class_embedder.embedding_table']:
        for kind in ('weight', 'bias') if src != 'class_embedder.embedding_table' else (
            'weight',):
          name, first = f'{emb.format(i)}{src}.{kind}', f'{emb.format(0)}{src}.{kind}'
          if name in t and first in t and not np.array_equal(t[name], t[first]):
            raise UserError(f'dit: {name} differs from block 0\'s; archzoo\'s DiT (the '
                            f'official one) has one timestep MLP and label table for all '
                            f'blocks')
          take(name)
    for src, dst in Dit.EMBED:
      _linear_in(out, dst, take, emb.format(0) + src)
    out['label_embed/embedding'] = take(emb.format(0) + 'class_embedder.embedding_table.weight')
    out['patch_embed/proj/kernel'] = sw(take('pos_embed.proj.weight').transpose(2, 3, 1, 0), 3)
    out['patch_embed/proj/bias'] = sw(take('pos_embed.proj.bias'), 0)
    h = ref.get('num_attention_heads', 16)
    for i in range(depth):
      p, q = f'transformer_blocks.{i}.', f'block{i}/'
      out[q + 'adaln/kernel'] = chunks(take(p + 'norm1.linear.weight').T, 6)
      out[q + 'adaln/bias'] = chunks(take(p + 'norm1.linear.bias'), 6)
      for name, src in (('query', 'to_q'), ('key', 'to_k'), ('value', 'to_v')):
        w = sw(take(p + f'attn1.{src}.weight').T, 0)
        out[q + f'attn/{name}/kernel'] = w.reshape(w.shape[0], h, -1)
        out[q + f'attn/{name}/bias'] = take(p + f'attn1.{src}.bias').reshape(h, -1)
      w = sw(take(p + 'attn1.to_out.0.weight').T, 1)
      out[q + 'attn/out/kernel'] = w.reshape(h, -1, w.shape[1])
      out[q + 'attn/out/bias'] = sw(take(p + 'attn1.to_out.0.bias'), 0)
      out[q + 'mlp/wi/kernel'] = sw(take(p + 'ff.net.0.proj.weight').T, 0)
      out[q + 'mlp/wi/bias'] = take(p + 'ff.net.0.proj.bias')
      out[q + 'mlp/wo/kernel'] = sw(take(p + 'ff.net.2.weight').T, 1)
      out[q + 'mlp/wo/bias'] = sw(take(p + 'ff.net.2.bias'), 0)
    out['final/adaln/kernel'] = chunks(take('proj_out_1.weight').T, 2)
    out['final/adaln/bias'] = chunks(take('proj_out_1.bias'), 2)
    out['final/linear/kernel'] = sw(take('proj_out_2.weight').T, 0)
    out['final/linear/bias'] = take('proj_out_2.bias')
    _all_taken(t, 'dit')
    return out

  @staticmethod
  def to_reference(flat: dict, model) -> dict:
    f = dict(flat)
    take = _taker(f, 'dit')
    sw, chunks = Dit._swap, Dit._chunks
    emb = {}
    for src, dst in Dit.EMBED:
      _linear_out(emb, src, take, dst)
    emb['class_embedder.embedding_table.weight'] = take('label_embed/embedding')
    out = {'pos_embed.proj.weight': sw(take('patch_embed/proj/kernel'), 3).transpose(
               3, 2, 0, 1),
           'pos_embed.proj.bias': sw(take('patch_embed/proj/bias'), 0)}
    for i in range(int(model['depth'])):
      p, q = f'transformer_blocks.{i}.', f'block{i}/'
      out.update({f'{p}norm1.emb.{k}': v for k, v in emb.items()})
      out[p + 'norm1.linear.weight'] = chunks(take(q + 'adaln/kernel'), 6).T
      out[p + 'norm1.linear.bias'] = chunks(take(q + 'adaln/bias'), 6)
      for name, src in (('query', 'to_q'), ('key', 'to_k'), ('value', 'to_v')):
        w = take(q + f'attn/{name}/kernel')
        out[p + f'attn1.{src}.weight'] = sw(w.reshape(w.shape[0], -1), 0).T
        out[p + f'attn1.{src}.bias'] = take(q + f'attn/{name}/bias').reshape(-1)
      w = take(q + 'attn/out/kernel')
      out[p + 'attn1.to_out.0.weight'] = sw(w.reshape(-1, w.shape[-1]), 1).T
      out[p + 'attn1.to_out.0.bias'] = sw(take(q + 'attn/out/bias'), 0)
      out[p + 'ff.net.0.proj.weight'] = sw(take(q + 'mlp/wi/kernel'), 0).T
      out[p + 'ff.net.0.proj.bias'] = take(q + 'mlp/wi/bias')
      out[p + 'ff.net.2.weight'] = sw(take(q + 'mlp/wo/kernel'), 1).T
      out[p + 'ff.net.2.bias'] = sw(take(q + 'mlp/wo/bias'), 0)
    out['proj_out_1.weight'] = chunks(take('final/adaln/kernel'), 2).T
    out['proj_out_1.bias'] = chunks(take('final/adaln/bias'), 2)
    out['proj_out_2.weight'] = sw(take('final/linear/kernel'), 0).T
    out['proj_out_2.bias'] = take('final/linear/bias')
    _all_taken(f, 'dit')
    return out


class Unet:
  """The latent-diffusion U-Net as diffusers' UNet2DConditionModel stores it (Stable
  Diffusion 1.x / 2.x's and SDXL's `unet` folder: diffusion_pytorch_model.safetensors +
  config.json) <-> arch/generative/diffusion_unet.py, the same layer structure (its
  docstring): conv_in; time_embedding.linear_1/2 -> time_linear_1/2; down_blocks.I.
  resnets.J / attentions.J / downsamplers.0.conv -> downI_resJ / downI_attnJ /
  downI_downsample; mid_block.resnets.0 / attentions.0 / resnets.1 -> mid_res0 / mid_attn /
  mid_res1; up_blocks.K (deepest first) -> upI with I = levels - 1 - K, upsamplers.0.conv
  -> upI_upsample; conv_norm_out -> norm_out; conv_out. A ResNet's norm1 / conv1 /
  time_emb_proj / norm2 / conv2 / conv_shortcut keep their names; a transformer's norm /
  proj_in / proj_out too, its transformer_blocks.k -> block{k} with norm1-3, attn1 / attn2
  (to_q / to_k / to_v / to_out.0 -> query / key / value / out, split into heads) and
  ff.net.0.proj / ff.net.2 -> ff_proj / ff_out. SDXL's add_embedding.linear_1/2 ->
  add_linear_1/2. diffusers' attention_head_dim (without num_attention_heads) counts heads,
  as in its model. Convs OIHW -> HWIO, Linear transposed. Refused: class embeddings, other
  block types (a level is CrossAttn* or plain, the up blocks mirroring the down ones), no
  mid-block cross-attention, and the options that change the computation (act_fn,
  norm_eps, centred input, time-embedding variants, scale-shift ResNets, ...). Inputs
  `images` (B, H, W, C), `timesteps` (B,) float, `context` (B, S, E) (SDXL: also
  `text_embeds` (B, P) and `time_ids` (B, 6)); output `sample` (B, H, W, out_channels)."""
  model_name = 'generative.diffusion_unet'
  source = 'diffusers'
  inputs = 'images'
  kwargs = {'timesteps': 't_B', 'context': 'context_BSE', 'text_embeds': 'text_embeds_BP',
            'time_ids': 'time_ids_BK'}
  outputs = ('sample',)
  weights_file = 'diffusion_pytorch_model.safetensors'

  @staticmethod
  def _levels(value, n: int) -> tuple:
    return tuple(value) if isinstance(value, (list, tuple)) else (value,) * n

  @staticmethod
  def model_fields(ref: dict) -> dict:
    _refuse('unet', ref, (
        ('_class_name', 'UNet2DConditionModel'), ('center_input_sample', False),
        ('flip_sin_to_cos', True), ('freq_shift', 0), ('mid_block_type',
                                                       'UNetMidBlock2DCrossAttn'),
        ('only_cross_attention', False), ('downsample_padding', 1),
        ('mid_block_scale_factor', 1), ('act_fn', 'silu'), ('norm_eps', 1e-5),
        ('reverse_transformer_layers_per_block', None), ('encoder_hid_dim', None),
        ('dual_cross_attention', False), ('class_embed_type', None),
        ('num_class_embeds', None), ('resnet_time_scale_shift', 'default'),
        ('resnet_skip_time_act', False), ('resnet_out_scale_factor', 1.0),
        ('time_embedding_type', 'positional'), ('time_embedding_dim', None),
        ('time_embedding_act_fn', None), ('timestep_post_act', None),
        ('time_cond_proj_dim', None), ('conv_in_kernel', 3), ('conv_out_kernel', 3),
        ('attention_type', 'default'), ('mid_block_only_cross_attention', None),
        ('cross_attention_norm', None)))
    if ref.get('addition_embed_type') not in (None, 'text_time'):
      raise UserError(f'unet: config.json has addition_embed_type='
                      f'{ref["addition_embed_type"]!r}; archzoo\'s U-Net has SDXL\'s '
                      f'\'text_time\' or none')
    chans = tuple(ref.get('block_out_channels', (320, 640, 1280, 1280)))
    n = len(chans)
    down = tuple(ref.get('down_block_types', ()))
    up = tuple(ref.get('up_block_types', ()))
    attention = tuple(t == 'CrossAttnDownBlock2D' for t in down)
    if (len(down) != n or any(t not in ('CrossAttnDownBlock2D', 'DownBlock2D') for t in down)
        or up != tuple('CrossAttnUpBlock2D' if a else 'UpBlock2D' for a in attention[::-1])):
      raise UserError(f'unet: config.json has down_block_types={list(down)}, '
                      f'up_block_types={list(up)}; archzoo\'s U-Net has one CrossAttn*Block2D '
                      f'or plain *Block2D a level, the up blocks mirroring the down ones')
    layers = Unet._levels(ref.get('layers_per_block', 2), n)
    if len(set(layers)) != 1:
      raise UserError(f'unet: config.json has layers_per_block={list(layers)}; archzoo\'s '
                      f'U-Net has one number for every level')
    cross = ref.get('cross_attention_dim', 1280)
    if isinstance(cross, (list, tuple)):
      if len(set(cross)) != 1:
        raise UserError(f'unet: config.json has cross_attention_dim={list(cross)}; archzoo\'s '
                        f'U-Net has one context width')
      cross = cross[0]
    heads = Unet._levels(ref.get('num_attention_heads') or ref.get('attention_head_dim', 8), n)
    fields = {'block_channels': chans, 'attention': attention, 'layers_per_block': layers[0],
              'num_heads': heads[0] if len(set(heads)) == 1 else heads,
              'transformer_depth': Unet._levels(ref.get('transformer_layers_per_block', 1), n),
              'context_dim': cross, 'mid_attention': True,
              'linear_projection': bool(ref.get('use_linear_projection', False)),
              'out_channels': ref.get('out_channels', 4),
              'groups': ref.get('norm_num_groups', 32), 'num_classes': 0,
              'addition_time_embed_dim': 0}
    depth = fields['transformer_depth']
    fields['transformer_depth'] = depth[0] if len(set(depth)) == 1 else depth
    if ref.get('addition_embed_type') == 'text_time':
      d = ref['addition_time_embed_dim']
      fields.update(addition_time_embed_dim=d, addition_time_ids=6,
                    addition_text_dim=ref['projection_class_embeddings_input_dim'] - 6 * d)
    return fields

  @staticmethod
  def equivalent_fields(fields: dict, model: dict) -> dict:
    """Per-level heads and depths that are one value for every level: the config's form."""
    fields = dict(fields)
    n = len(fields['block_channels'])
    for key in ('num_heads', 'transformer_depth'):
      if Unet._levels(model.get(key), n) == Unet._levels(fields[key], n):
        fields[key] = model.get(key)
    return fields

  @staticmethod
  def reference_config_of(config) -> dict:
    model = {**_model_defaults(config), **config.model.to_dict()}
    chans = [int(c) for c in model['block_channels']]
    n = len(chans)
    if model.get('context_dim') is None or not model['mid_attention'] or model['num_classes']:
      raise UserError('unet: diffusers\' UNet2DConditionModel has cross-attention in every '
                      'transformer and in the middle block and no class table; this U-Net '
                      'differs (context_dim, mid_attention or num_classes)')
    attention = [bool(a) for a in model['attention']]
    out = {'_class_name': 'UNet2DConditionModel',
           'in_channels': int(config.task_kwargs.get('channels', model['out_channels'])),
           'out_channels': int(model['out_channels']),
           'down_block_types': ['CrossAttnDownBlock2D' if a else 'DownBlock2D'
                                for a in attention],
           'up_block_types': ['CrossAttnUpBlock2D' if a else 'UpBlock2D'
                              for a in attention[::-1]],
           'mid_block_type': 'UNetMidBlock2DCrossAttn', 'block_out_channels': chans,
           'layers_per_block': int(model['layers_per_block']), 'act_fn': 'silu',
           'norm_num_groups': int(model['groups']), 'norm_eps': 1e-5,
           'cross_attention_dim': int(model['context_dim']),
           'attention_head_dim': [int(h) for h in Unet._levels(model['num_heads'], n)],
           'transformer_layers_per_block': [int(d) for d in Unet._levels(
               model['transformer_depth'], n)],
           'use_linear_projection': bool(model['linear_projection']),
           'flip_sin_to_cos': True, 'freq_shift': 0}
    if model['addition_time_embed_dim']:
      d = int(model['addition_time_embed_dim'])
      out.update(addition_embed_type='text_time', addition_time_embed_dim=d,
                 projection_class_embeddings_input_dim=int(model['addition_text_dim']) + int(
                     model['addition_time_ids']) * d)
    return out

  @staticmethod
  def skip(name: str) -> bool:
    del name
    return False

  @staticmethod
  def _parts(fields: dict):
    """(diffusers prefix, archzoo path, kind) of every part, kind one of 'conv', 'norm',
    'linear', 'resnet', ('transformer', its depth, its heads)."""
    chans, attention = fields['block_channels'], fields['attention']
    n, layers = len(chans), fields['layers_per_block']
    depths = Unet._levels(fields['transformer_depth'], n)
    heads = Unet._levels(fields['num_heads'], n)
    yield 'conv_in', 'conv_in', 'conv'
    yield 'time_embedding.linear_1', 'time_linear_1', 'linear'
    yield 'time_embedding.linear_2', 'time_linear_2', 'linear'
    if fields['addition_time_embed_dim']:
      yield 'add_embedding.linear_1', 'add_linear_1', 'linear'
      yield 'add_embedding.linear_2', 'add_linear_2', 'linear'
    for i in range(n):
      for j in range(layers):
        yield f'down_blocks.{i}.resnets.{j}', f'down{i}_res{j}', 'resnet'
        if attention[i]:
          yield f'down_blocks.{i}.attentions.{j}', f'down{i}_attn{j}', ('transformer',
                                                                       depths[i], heads[i])
      if i < n - 1:
        yield f'down_blocks.{i}.downsamplers.0.conv', f'down{i}_downsample', 'conv'
    yield 'mid_block.resnets.0', 'mid_res0', 'resnet'
    yield 'mid_block.attentions.0', 'mid_attn', ('transformer', depths[-1], heads[-1])
    yield 'mid_block.resnets.1', 'mid_res1', 'resnet'
    for i in reversed(range(n)):
      k = n - 1 - i
      for j in range(layers + 1):
        yield f'up_blocks.{k}.resnets.{j}', f'up{i}_res{j}', 'resnet'
        if attention[i]:
          yield f'up_blocks.{k}.attentions.{j}', f'up{i}_attn{j}', ('transformer', depths[i],
                                                                   heads[i])
      if i > 0:
        yield f'up_blocks.{k}.upsamplers.0.conv', f'up{i}_upsample', 'conv'
    yield 'conv_norm_out', 'norm_out', 'norm'
    yield 'conv_out', 'conv_out', 'conv'

  @staticmethod
  def outputs_of(module, b):
    extra = {Unet.kwargs[k]: b[k] for k in ('context', 'text_embeds', 'time_ids') if k in b}
    return {'sample': module(b['images'], b['timesteps'], **extra)}

  ATTENTION = (('query', 'to_q'), ('key', 'to_k'), ('value', 'to_v'), ('out', 'to_out.0'))

  @staticmethod
  def to_archzoo(t: dict, ref: dict) -> dict:
    t = dict(t)
    take = _taker(t, 'unet')
    fields = Unet.model_fields(ref)
    out = {}

    def conv(dst, src):
      out[dst + '/kernel'] = take(src + '.weight').transpose(2, 3, 1, 0)
      out[dst + '/bias'] = take(src + '.bias')

    def proj(dst, src):  # a 1x1 conv (SD 1.x) or a Linear (SD 2, SDXL)
      if fields['linear_projection']:
        _linear_in(out, dst, take, src)
      else:
        conv(dst, src)
    for src, dst, kind in Unet._parts(fields):
      if kind == 'conv':
        conv(dst, src)
      elif kind == 'linear':
        _linear_in(out, dst, take, src)
      elif kind == 'norm':
        _norm_in(out, dst, take, src)
      elif kind == 'resnet':
        for name in ('norm1', 'norm2'):
          _norm_in(out, f'{dst}/{name}', take, f'{src}.{name}')
        for name in ('conv1', 'conv2') + (('conv_shortcut',) * (
            f'{src}.conv_shortcut.weight' in t)):
          conv(f'{dst}/{name}', f'{src}.{name}')
        _linear_in(out, f'{dst}/time_emb_proj', take, f'{src}.time_emb_proj')
      else:
        h = kind[2]
        _norm_in(out, dst + '/norm', take, src + '.norm')
        proj(dst + '/proj_in', src + '.proj_in')
        proj(dst + '/proj_out', src + '.proj_out')
        for k in range(kind[1]):
          p, q = f'{src}.transformer_blocks.{k}.', f'{dst}/block{k}/'
          for name in ('norm1', 'norm2', 'norm3'):
            _norm_in(out, q + name, take, p + name)
          for attn in ('attn1', 'attn2'):
            for name, torch_name in Unet.ATTENTION:
              w = take(f'{p}{attn}.{torch_name}.weight').T
              if name == 'out':
                out[f'{q}{attn}/out/kernel'] = w.reshape(h, -1, w.shape[1])
                out[f'{q}{attn}/out/bias'] = take(f'{p}{attn}.{torch_name}.bias')
              else:
                out[f'{q}{attn}/{name}/kernel'] = w.reshape(w.shape[0], h, -1)
          _linear_in(out, q + 'ff_proj', take, p + 'ff.net.0.proj')
          _linear_in(out, q + 'ff_out', take, p + 'ff.net.2')
    _all_taken(t, 'unet')
    return out

  @staticmethod
  def to_reference(flat: dict, model) -> dict:
    f = dict(flat)
    take = _taker(f, 'unet')
    fields = {**model, 'attention': tuple(model['attention'])}
    out = {}

    def conv(src, dst):
      out[src + '.weight'] = take(dst + '/kernel').transpose(3, 2, 0, 1)
      out[src + '.bias'] = take(dst + '/bias')

    def proj(src, dst):
      if fields['linear_projection']:
        _linear_out(out, src, take, dst)
      else:
        conv(src, dst)
    for src, dst, kind in Unet._parts(fields):
      if kind == 'conv':
        conv(src, dst)
      elif kind == 'linear':
        _linear_out(out, src, take, dst)
      elif kind == 'norm':
        _norm_out(out, src, take, dst)
      elif kind == 'resnet':
        for name in ('norm1', 'norm2'):
          _norm_out(out, f'{src}.{name}', take, f'{dst}/{name}')
        for name in ('conv1', 'conv2') + (('conv_shortcut',) * (
            f'{dst}/conv_shortcut/kernel' in f)):
          conv(f'{src}.{name}', f'{dst}/{name}')
        _linear_out(out, f'{src}.time_emb_proj', take, f'{dst}/time_emb_proj')
      else:
        _norm_out(out, src + '.norm', take, dst + '/norm')
        proj(src + '.proj_in', dst + '/proj_in')
        proj(src + '.proj_out', dst + '/proj_out')
        for k in range(kind[1]):
          p, q = f'{src}.transformer_blocks.{k}.', f'{dst}/block{k}/'
          for name in ('norm1', 'norm2', 'norm3'):
            _norm_out(out, p + name, take, q + name)
          for attn in ('attn1', 'attn2'):
            for name, torch_name in Unet.ATTENTION:
              w = take(f'{q}{attn}/{name}/kernel')
              if name == 'out':
                out[f'{p}{attn}.{torch_name}.weight'] = w.reshape(-1, w.shape[-1]).T
                out[f'{p}{attn}.{torch_name}.bias'] = take(f'{q}{attn}/out/bias')
              else:
                out[f'{p}{attn}.{torch_name}.weight'] = w.reshape(w.shape[0], -1).T
          _linear_out(out, p + 'ff.net.0.proj', take, q + 'ff_proj')
          _linear_out(out, p + 'ff.net.2', take, q + 'ff_out')
    _all_taken(f, 'unet')
    return out


def _split_heads(out: dict, dst: str, take, src: str, d: int, h: int, kv: int, names=None,
                 bias=True):
  """torch Linear query/key/value (heads * head_dim, d) -> flax (d, heads, head_dim)
  kernels (and (heads, head_dim) biases); key and value have `kv` heads."""
  names = names or {n: n for n in ('query', 'key', 'value')}
  for name, torch_name in names.items():
    n = h if name == 'query' else kv
    out[dst + f'{name}/kernel'] = take(src + f'{torch_name}.weight').T.reshape(d, n, d // h)
    if bias:
      out[dst + f'{name}/bias'] = take(src + f'{torch_name}.bias').reshape(n, d // h)


def _taker(tensors: dict, arch: str):
  """take(name): pops a tensor, or one UserError naming the missing one."""
  def take(name):
    if name not in tensors:
      raise UserError(f'{arch}: the checkpoint has no {name!r} (it has {len(tensors)} other '
                      f'tensors)')
    return tensors.pop(name)
  return take


def _all_taken(rest: dict, arch: str):
  if rest:
    raise UserError(f'{arch}: tensors this format has no place for: '
                    f'{", ".join(sorted(rest)[:8])}')


ARCHS = {'gpt2': Gpt2, 'vit': Vit, 'bert': Bert, 'llama': Llama, 'resnet': Resnet,
         't5': T5, 'bart': Bart, 'clip': Clip, 'vgg': Vgg,
         'alexnet': Alexnet, 'densenet': Densenet, 'deit': Deit, 'cait': Cait, 'swin': Swin,
         'efficientnet': Efficientnet, 'autoencoder_kl': AutoencoderKl, 'mamba': Mamba,
         'rwkv': Rwkv, 'dit': Dit, 'unet': Unet}
# vision.vit is both Hugging Face's `vit` and timm's `deit` (whose inputs and outputs read
# alike): the first format of a model wins.
ARCHS_BY_MODEL = {f.model_name: f for f in reversed(ARCHS.values())}
SOURCES = ('hf', 'torchvision', 'timm', 'diffusers')


# ---------------------------------------------------------------------------- files


def read_tensors(src: str) -> dict:
  """{name: numpy array} of every *.safetensors file in `src` (a directory or a file)."""
  from safetensors.numpy import load_file
  files = sorted(glob.glob(os.path.join(src, '*.safetensors'))) if os.path.isdir(src) else [src]
  if not files or not all(f.endswith('.safetensors') and os.path.isfile(f) for f in files):
    pickles = [f for f in glob.glob(os.path.join(src, '*')) + [src]
               if f.endswith(('.bin', '.pth', '.pt', '.ckpt'))]
    if pickles:
      raise UserError(f'{pickles[0]} is a PyTorch pickle, which cannot be read without '
                      f'executing code; convert it to safetensors (e.g. transformers\' '
                      f'save_pretrained(..., safe_serialization=True)) and pass that')
    raise UserError(f'--src {src}: no .safetensors file there')
  tensors = {}
  for f in files:
    tensors.update(load_file(f))
  return tensors


def describe_reference(fmt, tensors: dict, src: str) -> dict:
  """The reference network as `fmt.model_fields` takes it: Hugging Face's config.json, or
  read off the tensors (torchvision; timm, with timm's config.json when one lies beside
  them: its head count)."""
  if not hasattr(fmt, 'describe'):
    return read_reference_config(src)
  if getattr(fmt, 'source', 'hf') == 'timm':
    path = os.path.join(src if os.path.isdir(src) else os.path.dirname(src), 'config.json')
    meta = None
    if os.path.isfile(path):
      with open(path) as f:
        meta = json.load(f)
    return fmt.describe(tensors, meta)
  return fmt.describe(tensors)


def read_reference_config(src: str) -> dict:
  path = os.path.join(src if os.path.isdir(src) else os.path.dirname(src), 'config.json')
  if not os.path.isfile(path):
    raise UserError(f'--src {src}: no config.json beside the weights (the reference\'s own '
                    f'config, which says the network\'s sizes)')
  with open(path) as f:
    return json.load(f)


def _flat(tree):
  import jax
  return {'/'.join(str(getattr(k, 'key', k)) for k in path): v
          for path, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _unflat(flat):
  tree = {}
  for path, value in flat.items():
    node = tree
    *parents, leaf = path.split('/')
    for key in parents:
      node = node.setdefault(key, {})
    node[leaf] = value
  return tree


def check_leaves(flat: dict, want: dict, what: str):
  """Every archzoo param `want` (path -> shape) given by `flat` with its shape, nothing
  else; otherwise one UserError listing the differences."""
  missing = sorted(set(want) - set(flat))
  extra = sorted(set(flat) - set(want))
  shapes = [f'{k}: {tuple(np.shape(flat[k]))} vs {tuple(want[k])}' for k in sorted(want)
            if k in flat and tuple(np.shape(flat[k])) != tuple(want[k])]
  problems = [f'{label} {", ".join(items[:6])}' + (f' and {len(items) - 6} more'
                                                   if len(items) > 6 else '')
              for label, items in (('missing:', missing), ('extra:', extra),
                                   ('shapes differ:', shapes)) if items]
  if problems:
    raise UserError(f'{what} does not fit the config\'s params; ' + '; '.join(problems))


# ---------------------------------------------------------------------------- import


def check_model_fields(config, fields: dict, arch: str, task_fields: dict = None):
  """The config builds the network `fields` (its model's fields) and `task_fields` (its
  task_kwargs', 'a.b' for task_kwargs.a.b) describe; otherwise one UserError with the
  overrides that make it so."""
  if config.model_name != ARCHS[arch].model_name:
    raise UserError(f'--arch {arch} imports into {ARCHS[arch].model_name!r}; the config '
                    f'builds {config.model_name!r}')
  model = {**_model_defaults(config), **config.model.to_dict()}
  if hasattr(ARCHS[arch], 'equivalent_fields'):  # several field values, one network
    fields = ARCHS[arch].equivalent_fields(fields, model)
  show = lambda v: f'({",".join(map(str, v))})' if isinstance(v, (tuple, list)) else v
  same = lambda a, b: (tuple(a) == tuple(b) if isinstance(a, (tuple, list)) and isinstance(
      b, (tuple, list)) else a == b)
  differ = [f'--config.model.{k}={show(v)}' for k, v in fields.items()
            if not same(model.get(k), v)]
  if task_fields:
    task = ARCHS[arch].task_values(config)
    differ += [f'--config.task_kwargs.{k}={show(v)}' for k, v in task_fields.items()
               if not same(task.get(k), v)]
  if differ:
    what = ('tensors describe' if hasattr(ARCHS[arch], 'describe') else
            'config.json describes')
    raise UserError(f'the reference\'s {what} another network than the config builds; '
                    f'add {" ".join(differ)}')


def import_weights(config, arch: str, src: str, workdir: str, source: str = 'hf') -> str:
  """Writes step 0 of a run of `config` in `workdir` holding the reference's weights;
  returns a report."""
  from train import core, loop
  fmt = ARCHS[arch]
  if source != getattr(fmt, 'source', 'hf'):
    raise UserError(f'--arch {arch} is imported --from {getattr(fmt, "source", "hf")}')
  tensors = {k: v for k, v in read_tensors(src).items() if not fmt.skip(k)}
  ref = describe_reference(fmt, tensors, src)
  check_model_fields(config, fmt.model_fields(ref), arch,
                     fmt.task_fields(ref) if hasattr(fmt, 'task_fields') else None)
  flat = fmt.to_archzoo(tensors, ref)
  if os.path.isdir(os.path.join(workdir, 'checkpoints')) and os.listdir(
      os.path.join(workdir, 'checkpoints')):
    raise UserError(f'{workdir} already holds checkpoints; import into an empty --workdir')
  os.makedirs(workdir, exist_ok=True)
  tok = os.path.join(src if os.path.isdir(src) else os.path.dirname(src), 'tokenizer.json')
  if os.path.isfile(tok):
    shutil.copy(tok, os.path.join(workdir, 'tokenizer.json'))
  run = loop.Run(config, workdir)
  try:
    params, extra = run.runner.host_variables(run.state)
    # BatchNorm statistics travel as 'batch_stats/...' paths beside the params.
    stats = extra.get('batch_stats') if isinstance(extra, dict) else None
    have = {**_flat(params), **{'batch_stats/' + k: v for k, v in _flat(stats or {}).items()}}
    check_leaves(flat, {k: np.shape(v) for k, v in have.items()}, f'{arch} from {src}')
    flat = {k: np.asarray(v, np.asarray(have[k]).dtype) for k, v in flat.items()}
    params = _unflat({k: v for k, v in flat.items() if not k.startswith('batch_stats/')})
    if stats is not None:
      extra = {**extra, 'batch_stats': _unflat({k.removeprefix('batch_stats/'): v
                                                for k, v in flat.items()
                                                if k.startswith('batch_stats/')})}
    run.state = run.runner.put_variables(run.state, params, extra)
    run.save(0, force=True)
  finally:
    run.close()
  core.log(f'imported {len(flat)} arrays of {arch} from {src} into {workdir} (step 0)')
  return f'{len(flat)} arrays'


def reference_forward(config, fmt):
  """(apply, init, the batch's keys) of the config's network on the inputs of a reference
  .npz (`fmt.inputs` and the `fmt.kwargs` present): apply(variables, batch) -> {output
  name: array} of the outputs `fmt.outputs` names (default 'logits'); init(rng, batch) ->
  variables. A format whose network is more than the config's `model_name` (CLIP: two
  towers) gives `build(config)` and `outputs_of(module, batch)`."""
  import arch as arch_lib
  model = fmt.build(config) if hasattr(fmt, 'build') else arch_lib.model_from_config(config)
  key, kwargs = fmt.inputs, getattr(fmt, 'kwargs', {})
  names = getattr(fmt, 'outputs', ('logits',))

  def call(module, b):
    if hasattr(fmt, 'outputs_of'):
      return fmt.outputs_of(module, b)
    got = module(b[key], **{kwargs[k]: b[k] for k in kwargs if k in b})
    return {k: got[k] for k in names} if isinstance(got, dict) else {'logits': got}

  def apply(v, b):
    collections = {k: v[k] for k in ('params', 'batch_stats') if k in v}
    return model.apply(collections, b, method=call)

  return apply, lambda rng, b: model.init(rng, b, method=call), (key, *kwargs)


def relative_difference(got: dict, ref: dict) -> float:
  """The largest over `got`'s outputs of max |got - ref| / max |ref|."""
  return max(float(np.abs(got[k] - ref[k]).max() / np.abs(ref[k]).max()) for k in got)


def reference_parity(config, workdir: str, path: str) -> float:
  """max |logits - reference| / max |reference| of the run's model on the reference's
  inputs, computed over the run's mesh (the batch sharded along its data axes); with
  several outputs (BERT's mlm_logits and nsp_logits) the largest of their differences."""
  import jax
  from train import core
  from train.sample import restore
  ref = dict(np.load(path))
  variables, _, mesh, rules, _ = restore(config, workdir, sampler=False)
  fmt = ARCHS_BY_MODEL[config.model_name]
  forward, _, keys = reference_forward(config, fmt)
  batch = {k: ref[k] for k in keys if k in ref}
  got = core.run_batch(jax.jit(lambda v, b, rng, row_ids: forward(v, b)), variables, batch,
                       range(len(ref[fmt.inputs])), mesh, rules, seed=0)
  # Rows padded for the mesh are copies of the last one, appended: an output over pairs of
  # rows (CLIP's logits_per_image) keeps the reference's in its leading corner.
  got = {k: v[tuple(slice(0, n) for n in ref[k].shape)] for k, v in got.items()}
  return relative_difference(got, ref)


# ---------------------------------------------------------------------------- export


def export_weights(config, arch: str, workdir: str, dst: str, source: str = 'hf') -> str:
  from safetensors.numpy import save_file
  from train import core
  fmt = ARCHS[arch]
  if config.model_name != fmt.model_name:
    raise UserError(f'--arch {arch} exports {fmt.model_name!r}; the config builds '
                    f'{config.model_name!r}')
  variables, step = core.restore_variables(config, workdir)
  model = {**_model_defaults(config), **config.model.to_dict()}
  if (args_source := getattr(fmt, 'source', 'hf')) != source:
    raise UserError(f'--arch {arch} is exported --to {args_source}')
  flat = {k: np.asarray(v) for k, v in _flat(variables['params']).items()}
  flat.update({'batch_stats/' + k: np.asarray(v)
               for k, v in _flat(variables.get('batch_stats', {})).items()})
  # (ascontiguousarray alone makes a 0-d tensor, CLIP's logit_scale, 1-d)
  tensors = {k: np.ascontiguousarray(v).reshape(np.shape(v))
             for k, v in fmt.to_reference(flat, model).items()}
  os.makedirs(dst, exist_ok=True)
  save_file(tensors, os.path.join(dst, getattr(fmt, 'weights_file', 'model.safetensors')),
            metadata={'format': 'pt'})
  if not hasattr(fmt, 'reference_config') and not hasattr(fmt, 'reference_config_of'):
    # torchvision keeps no config file
    return f'{len(tensors)} tensors of step {step}'
  kernel = flat.get('patch_embed/proj/kernel')
  with open(os.path.join(dst, 'config.json'), 'w') as f:
    json.dump(fmt.reference_config_of(config) if hasattr(fmt, 'reference_config_of') else
              fmt.reference_config(model, 0 if kernel is None else kernel.shape[2]), f,
              indent=2)
  return f'{len(tensors)} tensors of step {step}'


def _model_defaults(config) -> dict:
  import arch
  return _defaults(arch.model_class(config.model_name))


def _defaults(cls) -> dict:
  """A module class's fields that have defaults: {name: default}."""
  import dataclasses
  return {f.name: f.default for f in dataclasses.fields(cls)
          if f.default is not dataclasses.MISSING}


# ------------------------------------------------------------------------------ CLI


def parse(argv):
  from train import config_lib
  overrides, rest = config_lib.split_overrides(argv)
  p = argparse.ArgumentParser(prog='python -m train.port', description=__doc__.split('\n\n')[0],
                              epilog='Override config fields with --config.KEY=VALUE.')
  way = p.add_mutually_exclusive_group(required=True)
  way.add_argument('--from', dest='source', choices=SOURCES, help='import from this library')
  way.add_argument('--to', dest='target', choices=SOURCES, help='export to this library')
  p.add_argument('--arch', required=True, choices=sorted(ARCHS))
  p.add_argument('--config', required=True, help='configs/NAME.py[:arg=val,...] of the run')
  p.add_argument('--workdir', required=True, help='the run (written by import)')
  p.add_argument('--src', help='import: the downloaded checkpoint directory (or .safetensors)')
  p.add_argument('--dst', help='export: the directory to write')
  p.add_argument('--reference_logits', help='import: .npz of tokens and reference logits')
  args = p.parse_args(rest)
  if args.source and not args.src:
    p.error('--from needs --src')
  if args.target and not args.dst:
    p.error('--to needs --dst')
  config = config_lib.load(args.config)
  if hasattr(ARCHS[args.arch], 'fill_defaults'):
    ARCHS[args.arch].fill_defaults(config)
  for key, value in overrides:
    config_lib.override(config, key, value)
  return config, args


def main(argv=None):
  from arch.task import ConfigError
  try:
    config, args = parse(sys.argv[1:] if argv is None else argv)
    workdir = os.path.abspath(args.workdir)
    if args.source:
      what = import_weights(config, args.arch, args.src, workdir, args.source)
      print(f'imported {what} into {workdir} (step 0); fine-tune: python -m train --config '
            f'... --workdir {workdir}; sample: python -m train.sample --config ... --workdir '
            f'{workdir}')
      if args.reference_logits:
        import jax
        err = reference_parity(config, workdir, args.reference_logits)
        print(f'parity: max |logits - reference| / max |reference| = {err:.3g} on '
              f'{jax.device_count()} device(s)')
    else:
      what = export_weights(config, args.arch, workdir, args.dst, args.target)
      print(f'exported {what} of {workdir} to {args.dst}')
  except (UserError, ConfigError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  sys.exit(main())
