"""`python -m train.sample --config C --workdir W [--prompt TEXT ...] [--num_samples N]
[--seed S] [--temperature T] [--top_k K] [--top_p P] [--beam_size B] [--max_new_tokens N]`

The one sampler driver. It restores the run's latest checkpoint (EMA params when the run
kept them), asks the config's task for the batch to condition on (`Task.prompt_batch`:
an LM's prompt, a translation's source sentence) and runs the task's pure `sample` under
jit over the run's mesh with the sample batch sharded along the data axes. Randomness is
per sample index, so the same seed gives the same samples on 1 or 8 devices.

Text goes to stdout and to WORKDIR/samples/step<STEP>_seed<SEED>.txt. Flags default to
the config's `sample` fields. Each --prompt gets --num_samples samples (without --prompt
an LM samples from <s>). Bad input prints one `error:` line and exits with status 2.
"""

import argparse
import functools
import os
import sys

import numpy as np


def parse(argv):
  from train import config_lib
  overrides, rest = config_lib.split_overrides(argv)
  p = argparse.ArgumentParser(
      prog='python -m train.sample', description='Sample from a trained archzoo run.',
      epilog='Defaults come from the config\'s `sample` fields; --config.KEY=VALUE overrides '
             'any config field.')
  p.add_argument('--config', required=True, help='configs/NAME.py[:arg=val,...]')
  p.add_argument('--workdir', required=True, help='the run\'s workdir (checkpoints)')
  p.add_argument('--prompt', action='append', help='conditioning text; repeat for several')
  p.add_argument('--num_samples', type=int, help='samples per prompt')
  p.add_argument('--seed', type=int)
  p.add_argument('--temperature', type=float, help='0 = greedy')
  p.add_argument('--top_k', type=int, help='0 = off')
  p.add_argument('--top_p', type=float, help='1 = off')
  p.add_argument('--beam_size', type=int, help='> 1: beam search')
  p.add_argument('--max_new_tokens', type=int)
  p.add_argument('--step', type=int, help='checkpoint step (default: latest)')
  args = p.parse_args(rest)
  config = config_lib.load(args.config)
  for key, value in overrides:
    config_lib.override(config, key, value)
  opts = {k: getattr(args, k) if getattr(args, k) is not None else config.sample[k]
          for k in ('num_samples', 'seed', 'temperature', 'top_k', 'top_p', 'beam_size',
                    'max_new_tokens')}
  prompts = args.prompt if args.prompt is not None else (
      [config.sample.prompt] if config.sample.prompt else [''])
  return config, os.path.abspath(args.workdir), prompts, args.step, opts


def _check(opts):
  from train.errors import UserError
  if opts['num_samples'] < 1:
    raise UserError(f'--num_samples must be >= 1, got {opts["num_samples"]}')
  if opts['max_new_tokens'] < 1:
    raise UserError(f'--max_new_tokens must be >= 1, got {opts["max_new_tokens"]}')
  if opts['temperature'] < 0:
    raise UserError(f'--temperature must be >= 0, got {opts["temperature"]}')
  if opts['top_k'] < 0:
    raise UserError(f'--top_k must be >= 0, got {opts["top_k"]}')
  if not 0 < opts['top_p'] <= 1:
    raise UserError(f'--top_p must be in (0, 1], got {opts["top_p"]}')
  if opts['beam_size'] < 1:
    raise UserError(f'--beam_size must be >= 1, got {opts["beam_size"]}')


def restore_variables(config, workdir, step=None):
  """(variables, step, mesh, rules, task) of the run in `workdir` at `step` (latest)."""
  from train import checkpoint as ckpt_lib
  from train import loop
  from train import mesh as mesh_lib
  from train.errors import UserError
  mesh_lib.maybe_initialize_distributed(config)
  mesh = mesh_lib.make_mesh(config)
  task = loop.load_task(config)
  if task.sample is None or task.prompt_batch is None:
    raise UserError(f'task {config.task!r} has no sampler')
  if not os.path.isdir(os.path.join(workdir, 'checkpoints')):
    raise UserError(f'no checkpoints in {workdir}; train it first with '
                    f'`python -m train --config ... --workdir {workdir}`')
  schedule = loop.make_schedule(config)
  runner = loop.JitRunner(config, task, loop.make_optimizer(config, schedule), schedule, mesh)
  ckpt = ckpt_lib.Checkpointer(workdir, async_save=False)
  try:
    step = ckpt.latest_step() if step is None else step
    if step is None:
      raise UserError(f'no checkpoints in {workdir}; train it first')
    if step not in ckpt.all_steps():
      raise UserError(f'no checkpoint at step {step} in {workdir}; steps: '
                      f'{", ".join(map(str, ckpt.all_steps()))}')
    state, _ = ckpt.restore(step, runner.abstract_state)
  finally:
    ckpt.close()
  params = state.ema_params if config.get('ema_decay') else state.params
  return {'params': params, **state.extra}, step, mesh, mesh_lib.rules(config), task


def sample(config, workdir, prompts, opts, step=None):
  """Runs the sampler; returns (step, [(prompt, completion_text, about), ...],
  continuation): `about` names the eval example a sample conditions on (or None);
  continuation is True when the task continues its prompt (a 'prompt' batch) rather than
  mapping it to an output (e.g. a translation's 'source')."""
  import flax.linen as nn
  import jax
  from jax.experimental import multihost_utils
  from arch.task import ConfigError
  from train import mesh as mesh_lib
  from train import text
  from train.errors import UserError
  _check(opts)
  kind = config.sample.get('tokenizer') or config.data.get('tokenizer')
  if not kind:
    raise UserError('this sampler decodes text: config.data.tokenizer (or '
                    'config.sample.tokenizer) is not set')
  variables, step, mesh, rules, task = restore_variables(config, workdir, step)
  tok = text.tokenizer(config, workdir, train_if_missing=False, kind=kind)
  n = opts['num_samples']
  rows = [p for p in prompts for _ in range(n)]
  ids = [tok.encode(p) for p in rows]
  examples = None
  if task.prompt_examples:  # sample j of every prompt is about eval example j
    first = eval_examples(config, task, n)
    examples = {k: np.concatenate([v] * len(prompts)) for k, v in first.items()}
  about = [None] * len(rows) if examples is None else [
      f'{config.data.eval_split} example {j}' + (
          f', label {int(first["label"][j])}' if 'label' in first else '')
      for _ in prompts for j in range(n)]
  fn = jax.jit(functools.partial(
      task.sample, max_new_tokens=opts['max_new_tokens'], temperature=opts['temperature'],
      top_k=opts['top_k'], top_p=opts['top_p'], beam_size=opts['beam_size']))
  shards = mesh_lib.batch_sharding(mesh)
  par = int(np.prod([mesh.shape[a] for a in mesh.axis_names if a in ('data', 'fsdp')]))
  tokens, continuation = [None] * len(rows), False
  # One batch per prompt length (a causal LM's prompts in a batch share their length);
  # row ids stay global, so a sample does not depend on which batch it ran in.
  for length in sorted({len(i) for i in ids}):
    group = [r for r in range(len(rows)) if len(ids[r]) == length]
    kwargs = {} if examples is None else {
        'examples': {k: v[group] for k, v in examples.items()}}
    try:
      batch = task.prompt_batch([ids[r] for r in group], len(group), **kwargs)
    except (ConfigError, ValueError) as e:
      raise UserError(str(e)) from None
    continuation = 'prompt' in batch
    # Pad to a multiple of the data-parallel devices with copies of the last row.
    total = -(-len(group) // par) * par
    batch = {k: np.concatenate([v, np.repeat(v[-1:], total - len(group), 0)])
             for k, v in batch.items()}
    batch = {k: jax.make_array_from_callback(v.shape, shards, lambda idx, v=v: v[idx])
             for k, v in batch.items()}
    row_np = np.asarray(group + [group[-1]] * (total - len(group)), np.int32)
    row_ids = jax.make_array_from_callback((total,), shards, lambda idx: row_np[idx])
    try:
      with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        out = fn(variables, batch, jax.random.key(opts['seed']), row_ids=row_ids)
    except (ConfigError, ValueError) as e:  # e.g. prompt + new tokens longer than the model's
      raise UserError(str(e).splitlines()[0]) from None
    got = np.asarray(multihost_utils.process_allgather(out['tokens'], tiled=True))
    for r, t in zip(group, got):
      tokens[r] = t
  results = [(p, tok.decode(_until_eos(t)), a) for p, t, a in zip(rows, tokens, about)]
  return step, results, continuation


def eval_examples(config, task, n: int) -> dict:
  """The first `n` examples of the eval split, preprocessed, stacked: {feature: (n, ...)}."""
  from train import data as data_lib
  src = data_lib.records(config, config.data.eval_split)
  if n > len(src):
    raise UserError(f'--num_samples {n} exceeds the {len(src)} examples of the '
                    f'{config.data.eval_split!r} split the samples are about')
  examples = [src[i] for i in range(n)]
  if task.preprocess is not None:
    examples = [task.preprocess(e) for e in examples]
  return data_lib.stack(examples)


def _until_eos(ids):
  from arch.sequence import vocab
  ids = list(ids)
  return ids[:ids.index(vocab.EOS)] if vocab.EOS in ids else ids


def render(results, continuation: bool) -> str:
  parts = []
  for i, (prompt, completion, about) in enumerate(results):
    body = prompt + completion if continuation else f'{prompt}\n=> {completion}'
    parts.append(f'--- sample {i}{f" ({about})" if about else ""} ---\n{body}\n')
  return '\n'.join(parts)


def main(argv=None):
  from train.errors import UserError
  try:
    config, workdir, prompts, step, opts = parse(sys.argv[1:] if argv is None else argv)
    step, results, continuation = sample(config, workdir, prompts, opts, step)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  import jax
  out = render(results, continuation)
  if jax.process_index() == 0:
    d = os.path.join(workdir, 'samples')
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, f'step{step}_seed{opts["seed"]}.txt')
    with open(path, 'w') as f:
      f.write(out)
    print(out)
    print(f'wrote {path}', file=sys.stderr)
  return 0


if __name__ == '__main__':
  sys.exit(main())
