"""Published weights in and out:

  python -m train.port --from hf --arch gpt2 --src DIR --workdir OUT \\
      --config configs/gpt_pydoc.py:variant=gpt2 [--config.KEY=VALUE ...] \\
      [--reference_logits FILE.npz]
  python -m train.port --to hf --arch gpt2 --workdir RUN --dst DIR --config ...
  python -m train.port --from torchvision --arch resnet --src resnet50.safetensors \\
      --workdir OUT --config configs/resnet_imagenet.py ...

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
shapes instead.
PyTorch pickles (`.bin`, `.pth`) are refused: loading them executes code; convert them
to safetensors first. `--reference_logits` takes an .npz of the model's input (`tokens`, or
`images` (B, H, W, C); BERT also `token_types`) and the reference's outputs on it
(`logits`; BERT `mlm_logits` and `nsp_logits`) and reports the imported model's largest
relative difference, computed over the run's mesh (1 or many devices).

Export (`--to hf|torchvision`) writes the run's params (EMA where kept) and BatchNorm
statistics back in the reference layout as DIR/model.safetensors and, for Hugging Face,
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

Measured parity (tests/test_port.py, tiny random reference models, float32, 2026-12-06):
max |logits - reference| / max |reference| = bert 6.4e-7, llama 9.4e-7, resnet (basic)
4.0e-7 / 3.4e-7, resnet (bottleneck) 7.8e-8, on 1 / 8 devices (equal where one number).
"""

import argparse
import glob
import json
import os
import shutil
import sys

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


ARCHS = {'gpt2': Gpt2, 'vit': Vit, 'bert': Bert, 'llama': Llama, 'resnet': Resnet}
ARCHS_BY_MODEL = {f.model_name: f for f in ARCHS.values()}
SOURCES = ('hf', 'torchvision')


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


def check_model_fields(config, fields: dict, arch: str):
  if config.model_name != ARCHS[arch].model_name:
    raise UserError(f'--arch {arch} imports into {ARCHS[arch].model_name!r}; the config '
                    f'builds {config.model_name!r}')
  model = {**_model_defaults(config), **config.model.to_dict()}
  show = lambda v: f'({",".join(map(str, v))})' if isinstance(v, (tuple, list)) else v
  same = lambda a, b: (tuple(a) == tuple(b) if isinstance(a, (tuple, list)) and isinstance(
      b, (tuple, list)) else a == b)
  differ = [f'--config.model.{k}={show(v)}' for k, v in fields.items()
            if not same(model.get(k), v)]
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
  ref = fmt.describe(tensors) if hasattr(fmt, 'describe') else read_reference_config(src)
  check_model_fields(config, fmt.model_fields(ref), arch)
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


def reference_parity(config, workdir: str, path: str) -> float:
  """max |logits - reference| / max |reference| of the run's model on the reference's
  inputs, computed over the run's mesh (the batch sharded along its data axes); with
  several outputs (BERT's mlm_logits and nsp_logits) the largest of their differences."""
  import jax
  import arch as arch_lib
  from train import core
  from train.sample import restore
  ref = dict(np.load(path))
  variables, _, mesh, rules, _ = restore(config, workdir, sampler=False)
  model = arch_lib.model_from_config(config)
  fmt = ARCHS_BY_MODEL[config.model_name]
  key, kwargs = fmt.inputs, getattr(fmt, 'kwargs', {})
  names = getattr(fmt, 'outputs', ('logits',))
  batch = {k: ref[k] for k in (key, *kwargs) if k in ref}

  def fn(v, b, rng, row_ids):
    del rng, row_ids
    collections = {k: v[k] for k in ('params', 'batch_stats') if k in v}
    got = model.apply(collections, b[key], **{kwargs[k]: b[k] for k in kwargs if k in b})
    return {k: got[k] for k in names} if isinstance(got, dict) else {'logits': got}

  got = core.run_batch(jax.jit(fn), variables, batch, range(len(ref[key])), mesh, rules,
                       seed=0)
  return max(float(np.abs(got[k] - ref[k]).max() / np.abs(ref[k]).max()) for k in names)


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
  tensors = {k: np.ascontiguousarray(v) for k, v in fmt.to_reference(flat, model).items()}
  os.makedirs(dst, exist_ok=True)
  save_file(tensors, os.path.join(dst, 'model.safetensors'), metadata={'format': 'pt'})
  if not hasattr(fmt, 'reference_config'):  # torchvision keeps no config file
    return f'{len(tensors)} tensors of step {step}'
  kernel = flat.get('patch_embed/proj/kernel')
  with open(os.path.join(dst, 'config.json'), 'w') as f:
    json.dump(fmt.reference_config(model, 0 if kernel is None else kernel.shape[2]), f,
              indent=2)
  return f'{len(tensors)} tensors of step {step}'


def _model_defaults(config) -> dict:
  import dataclasses
  import arch
  cls = arch.model_class(config.model_name)
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
