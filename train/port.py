"""Published weights in and out:

  python -m train.port --from hf --arch gpt2 --src DIR --workdir OUT \\
      --config configs/gpt_pydoc.py:variant=gpt2 [--config.KEY=VALUE ...] \\
      [--reference_logits FILE.npz]
  python -m train.port --to hf --arch gpt2 --workdir RUN --dst DIR --config ...

Import reads a checkpoint directory a user has downloaded (its `*.safetensors` files and
`config.json`), maps the tensors onto archzoo's parameter tree of `--config`, checks them
leaf by leaf (one error listing what is missing, extra or of another shape), and writes
step 0 of a run in OUT: `python -m train --config ... --workdir OUT` then fine-tunes it
(resuming at step 0 with the config's data), `python -m train.sample` samples it, and
another run starts from it with `--config.init_from.workdir=OUT`. The reference's own
config.json must describe the network `--config` builds; where a field differs, the error
names the `--config.model.X=Y` overrides that make it so. A `tokenizer.json` in the source
directory becomes the run's tokenizer (WORKDIR/tokenizer.json, read by train/text.py).
PyTorch pickles (`.bin`, `.pth`) are refused: loading them executes code; convert them
to safetensors first. `--reference_logits` takes an .npz of `tokens` and the reference's
`logits` on them and reports the imported model's largest difference, computed over the
run's mesh (1 or many devices).

Export writes the run's params (EMA where kept) back in the reference layout as
DIR/model.safetensors and DIR/config.json; an imported checkpoint exported again gives the
same tensors, bit for bit.

Formats (`ARCHS`), each a pair of pure maps between the reference's flat tensor names and
archzoo's '/'-joined param paths:
  gpt2  Hugging Face GPT2LMHeadModel / GPT2Model (all four sizes): Conv1D weights are
        (in, out) like a flax kernel; c_attn's fused (D, 3D) splits into query, key, value
        (D, H, D/H); c_proj into out (H, D/H, D); the causal-mask buffers of old
        checkpoints (`attn.bias`, `attn.masked_bias`) are not parameters and are skipped;
        lm_head is the tied token embedding.
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


ARCHS = {'gpt2': Gpt2, 'vit': Vit}
ARCHS_BY_MODEL = {f.model_name: f for f in ARCHS.values()}
SOURCES = ('hf',)


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
  differ = [f'--config.model.{k}={v}' for k, v in fields.items() if model.get(k) != v]
  if differ:
    raise UserError(f'the reference\'s config.json describes another network than the config '
                    f'builds; add {" ".join(differ)}')


def import_weights(config, arch: str, src: str, workdir: str) -> str:
  """Writes step 0 of a run of `config` in `workdir` holding the reference's weights;
  returns a report."""
  from train import core, loop
  fmt = ARCHS[arch]
  ref = read_reference_config(src)
  check_model_fields(config, fmt.model_fields(ref), arch)
  tensors = {k: v for k, v in read_tensors(src).items() if not fmt.skip(k)}
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
    want = {k: np.shape(v) for k, v in _flat(params).items()}
    check_leaves(flat, want, f'{arch} from {src}')
    dtypes = {k: np.asarray(v).dtype for k, v in _flat(params).items()}
    params = _unflat({k: np.asarray(v, dtypes[k]) for k, v in flat.items()})
    run.state = run.runner.put_variables(run.state, params, extra)
    run.save(0, force=True)
  finally:
    run.close()
  core.log(f'imported {len(flat)} arrays of {arch} from {src} into {workdir} (step 0)')
  return f'{len(flat)} arrays'


def reference_parity(config, workdir: str, path: str) -> float:
  """max |logits - reference| / max |reference| of the run's model on the reference's
  tokens, computed over the run's mesh (the batch sharded along its data axes)."""
  import arch as arch_lib
  from train import core
  from train.sample import restore
  ref = np.load(path)
  variables, _, mesh, rules, _ = restore(config, workdir, sampler=False)
  model = arch_lib.model_from_config(config)
  key = ARCHS_BY_MODEL[config.model_name].inputs
  fn = lambda v, b, rng, row_ids: {'logits': model.apply({'params': v['params']}, b[key])}
  import jax
  got = core.run_batch(jax.jit(fn), variables, {key: ref[key]}, range(len(ref[key])), mesh,
                       rules, seed=0)['logits']
  return float(np.abs(got - ref['logits']).max() / np.abs(ref['logits']).max())


# ---------------------------------------------------------------------------- export


def export_weights(config, arch: str, workdir: str, dst: str) -> str:
  from safetensors.numpy import save_file
  from train import core
  fmt = ARCHS[arch]
  if config.model_name != fmt.model_name:
    raise UserError(f'--arch {arch} exports {fmt.model_name!r}; the config builds '
                    f'{config.model_name!r}')
  variables, step = core.restore_variables(config, workdir)
  model = {**_model_defaults(config), **config.model.to_dict()}
  flat = {k: np.asarray(v) for k, v in _flat(variables['params']).items()}
  tensors = {k: np.ascontiguousarray(v) for k, v in fmt.to_reference(flat, model).items()}
  os.makedirs(dst, exist_ok=True)
  save_file(tensors, os.path.join(dst, 'model.safetensors'), metadata={'format': 'pt'})
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
      what = import_weights(config, args.arch, args.src, workdir)
      print(f'imported {what} into {workdir} (step 0); fine-tune: python -m train --config '
            f'... --workdir {workdir}; sample: python -m train.sample --config ... --workdir '
            f'{workdir}')
      if args.reference_logits:
        import jax
        err = reference_parity(config, workdir, args.reference_logits)
        print(f'parity: max |logits - reference| / max |reference| = {err:.3g} on '
              f'{jax.device_count()} device(s)')
    else:
      what = export_weights(config, args.arch, workdir, args.dst)
      print(f'exported {what} of {workdir} to {args.dst}')
  except (UserError, ConfigError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  sys.exit(main())
