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

  @staticmethod
  def model_fields(ref: dict) -> dict:
    return {'vocab_size': ref['vocab_size'], 'num_layers': ref['n_layer'],
            'num_heads': ref['n_head'], 'embed_dim': ref['n_embd'],
            'max_length': ref['n_positions'], 'norm_eps': ref.get('layer_norm_epsilon', 1e-5),
            'positions': 'learned', 'tie_embeddings': True,
            **({'mlp_dim': ref['n_inner']} if ref.get('n_inner') else {})}

  @staticmethod
  def reference_config(model) -> dict:
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

    def take(name):
      if name not in t:
        raise UserError(f'gpt2: the checkpoint has no {name!r} (it has '
                        f'{len(t)} other tensors)')
      return t.pop(name)

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
    if t:
      raise UserError(f'gpt2: tensors this format does not know: {", ".join(sorted(t)[:8])}')
    return out

  @staticmethod
  def to_reference(flat: dict, model) -> dict:
    f = dict(flat)
    d = int(model['embed_dim'])
    out = {'transformer.wte.weight': f.pop('wte/embedding'),
           'transformer.wpe.weight': f.pop('wpe/embedding'),
           'transformer.ln_f.weight': f.pop('ln_f/scale'),
           'transformer.ln_f.bias': f.pop('ln_f/bias')}
    for i in range(int(model['num_layers'])):
      p, q = f'transformer.h.{i}.', f'h{i}/'
      names = ('query', 'key', 'value')
      out[p + 'attn.c_attn.weight'] = np.stack(
          [f.pop(q + f'self_attn/{n}/kernel') for n in names], 1).reshape(d, 3 * d)
      out[p + 'attn.c_attn.bias'] = np.stack(
          [f.pop(q + f'self_attn/{n}/bias') for n in names]).reshape(3 * d)
      out[p + 'attn.c_proj.weight'] = f.pop(q + 'self_attn/out/kernel').reshape(d, d)
      out[p + 'attn.c_proj.bias'] = f.pop(q + 'self_attn/out/bias')
      for src, dst in (('ln_1', 'self_attn_norm'), ('ln_2', 'mlp_norm')):
        out[p + f'{src}.weight'] = f.pop(q + f'{dst}/scale')
        out[p + f'{src}.bias'] = f.pop(q + f'{dst}/bias')
      for src, dst in (('c_fc', 'wi'), ('c_proj', 'wo')):
        out[p + f'mlp.{src}.weight'] = f.pop(q + f'mlp/{dst}/kernel')
        out[p + f'mlp.{src}.bias'] = f.pop(q + f'mlp/{dst}/bias')
    if f:
      raise UserError(f'gpt2: params this format has no place for: {", ".join(sorted(f)[:8])}')
    return out


ARCHS = {'gpt2': Gpt2}
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
  model = dict(config.model)
  differ = [f'--config.model.{k}={v}' for k, v in fields.items()
            if model.get(k, _default(config.model_name, k)) != v]
  if differ:
    raise UserError(f'the reference\'s config.json describes another network than the config '
                    f'builds; add {" ".join(differ)}')


def _default(model_name, field):
  import arch
  cls = arch.model_class(model_name)
  return getattr(cls, field, None)


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
  variables, _, mesh, rules, _ = restore(config, workdir)
  model = arch_lib.model_from_config(config)
  fn = lambda v, b, rng, row_ids: {'logits': model.apply({'params': v['params']}, b['tokens'])}
  import jax
  got = core.run_batch(jax.jit(fn), variables, {'tokens': ref['tokens']},
                       range(len(ref['tokens'])), mesh, rules, seed=0)['logits']
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
  with open(os.path.join(dst, 'config.json'), 'w') as f:
    json.dump(fmt.reference_config(model), f, indent=2)
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
