"""`python -m train.sample --config C --workdir W [--prompt TEXT ...] [--num_samples N]
[--seed S] [--temperature T] [--top_k K] [--top_p P] [--beam_size B] [--max_new_tokens N]
[--steps K] [--sampler NAME] [--eta E] [--guidance W]`

The one sampler driver. It restores the run's latest checkpoint (EMA params when the run
kept them), asks the config's task for the batch to condition on (`Task.prompt_batch`:
an LM's prompt, a translation's source sentence, a class label, or nothing) and runs the
task's pure `sample` under jit over the run's mesh with the sample batch sharded along
the data axes. Randomness is per sample index, so the same seed gives the same samples on
1 or 8 devices.

Text (tasks with a tokenizer: `config.data.tokenizer` or `config.sample.tokenizer`) goes
to stdout and to WORKDIR/samples/step<STEP>_seed<SEED>.txt; each --prompt gets
--num_samples samples (without --prompt an LM samples from <s>). Images go to
WORKDIR/samples/step<STEP>_seed<SEED>.png as one grid; videos to .gif (an animated grid)
and .png (each clip's frames in a row); audio to _<i>.wav files, one per clip; every output
array to step<STEP>_seed<SEED>.npz (--steps: the sampler's steps for families that take
them, e.g. diffusion, Langevin; --sampler ddpm|ddim, --eta and --guidance, classifier-free
guidance's weight, for diffusion). Flags default to the config's `sample` fields; a flag the
task's sampler does not take is an error.
Bad input prints one `error:` line and exits with status 2.
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
  p.add_argument('--steps', type=int, help='sampler steps (diffusion, ...); 0 = the task\'s')
  p.add_argument('--sampler', help='diffusion: ddpm (ancestral) or ddim')
  p.add_argument('--eta', type=float, help='DDIM\'s eta (0 = deterministic)')
  p.add_argument('--guidance', type=float,
                 help='classifier-free guidance weight (1 = conditional, 0 = unconditional)')
  p.add_argument('--step', type=int, help='checkpoint step (default: latest)')
  args = p.parse_args(rest)
  config = config_lib.load(args.config)
  for key, value in overrides:
    config_lib.override(config, key, value)
  opts = {k: getattr(args, k) if getattr(args, k) is not None else config.sample[k]
          for k in ('num_samples', 'seed', 'temperature', 'top_k', 'top_p', 'beam_size',
                    'max_new_tokens', 'steps')}
  opts.update({k: getattr(args, k) for k in SAMPLER_FLAGS})  # None: the task's default
  prompts = args.prompt if args.prompt is not None else (
      [config.sample.prompt] if config.sample.prompt else None)
  return config, os.path.abspath(args.workdir), prompts, args.step, opts


SAMPLER_FLAGS = ('sampler', 'eta', 'guidance')  # passed only to samplers that name them


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
  if opts['steps'] < 0:
    raise UserError(f'--steps must be >= 0, got {opts["steps"]}')
  if opts.get('eta') is not None and opts['eta'] < 0:
    raise UserError(f'--eta must be >= 0, got {opts["eta"]}')


def _sampler_kwargs(task, opts) -> dict:
  """The --steps/--sampler/--eta/--guidance the user gave, checked against the keyword
  parameters the task's `sample` names (a catch-all **kwargs does not count)."""
  import inspect
  from train.errors import UserError
  named = inspect.signature(task.sample).parameters
  given = {k: opts[k] for k in SAMPLER_FLAGS if opts.get(k) is not None}
  if opts['steps']:
    given['steps'] = opts['steps']
  for k in given:
    if k not in named or named[k].kind is inspect.Parameter.VAR_KEYWORD:
      raise UserError(f'--{k}: this task\'s sampler takes no {k}')
  return given


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
  runner = loop.JitRunner(config, task, *loop.make_tx(config, task), mesh)
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


def text_kind(config) -> str:
  """The tokenizer the sampler decodes with ('' for tasks that do not make text)."""
  return config.sample.get('tokenizer') or config.data.get('tokenizer') or ''


def run_batch(fn, variables, batch, rows, mesh, rules, seed):
  """fn(variables, batch, key(seed), row_ids=rows) over the mesh, the host batch padded
  to a multiple of the data-parallel devices with copies of its last row and sharded;
  returns the outputs of the real rows, gathered on every host (numpy)."""
  import flax.linen as nn
  import jax
  from jax.experimental import multihost_utils
  from arch.task import ConfigError
  from train import mesh as mesh_lib
  from train.errors import UserError
  shards = mesh_lib.batch_sharding(mesh)
  par = int(np.prod([mesh.shape[a] for a in mesh.axis_names if a in ('data', 'fsdp')]))
  n = len(rows)
  total = -(-n // par) * par
  batch = {k: np.concatenate([v, np.repeat(v[-1:], total - n, 0)]) for k, v in batch.items()}
  batch = {k: jax.make_array_from_callback(v.shape, shards, lambda idx, v=v: v[idx])
           for k, v in batch.items()}
  row_np = np.asarray(list(rows) + [rows[-1]] * (total - n), np.int32)
  row_ids = jax.make_array_from_callback((total,), shards, lambda idx: row_np[idx])
  try:
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      out = fn(variables, batch, jax.random.key(seed), row_ids=row_ids)
  except (ConfigError, ValueError) as e:  # e.g. prompt + new tokens longer than the model's
    raise UserError(str(e).splitlines()[0]) from None
  return {k: np.asarray(multihost_utils.process_allgather(v, tiled=True))[:n]
          for k, v in out.items()}


def sample(config, workdir, prompts, opts, step=None):
  """Runs the text sampler; returns (step, [(prompt, completion_text, about), ...],
  continuation): `about` names the eval example a sample conditions on (or None);
  continuation is the task's `continues_prompt`: True when it continues its prompt rather
  than mapping it to an output (e.g. a translation of its source)."""
  import jax
  from arch.task import ConfigError
  from train import text
  from train.errors import UserError
  _check(opts)
  kind = text_kind(config)
  if not kind:
    raise UserError('this sampler decodes text: config.data.tokenizer (or '
                    'config.sample.tokenizer) is not set')
  variables, step, mesh, rules, task = restore_variables(config, workdir, step)
  _sampler_kwargs(task, opts)  # a text sampler takes none of them: an error if given
  tok = text.tokenizer(config, workdir, train_if_missing=False, kind=kind)
  prompts = [''] if prompts is None else prompts
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
  tokens = [None] * len(rows)
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
    got = run_batch(fn, variables, batch, group, mesh, rules, opts['seed'])['tokens']
    for r, t in zip(group, got):
      tokens[r] = t
  results = [(p, tok.decode(_until_eos(t)), a) for p, t, a in zip(rows, tokens, about)]
  return step, results, task.continues_prompt


def sample_arrays(config, workdir, opts, step=None):
  """Runs the sampler of a task that makes no text; returns (step, outputs): {'images':
  (N, H, W, C) uint8, ...} for N = --num_samples, sample i drawn with row id i."""
  import jax
  from arch.task import ConfigError
  from train.errors import UserError
  _check(opts)
  variables, step, mesh, rules, task = restore_variables(config, workdir, step)
  n = opts['num_samples']
  try:
    batch = task.prompt_batch(None, n)
  except (ConfigError, ValueError) as e:
    raise UserError(str(e)) from None
  kwargs = {'temperature': opts['temperature'], **_sampler_kwargs(task, opts)}
  fn = jax.jit(functools.partial(task.sample, **kwargs))
  try:
    return step, run_batch(fn, variables, batch, list(range(n)), mesh, rules, opts['seed'])
  except ConfigError as e:  # e.g. an unknown --sampler, found when the sampler traces
    raise UserError(str(e)) from None


def image_grid(images_NHWC, scale: int = 0, pad: int = 1):
  """uint8 images (N, H, W, C) -> one (rows*H', cols*W', C) uint8 grid, near-square,
  each image upscaled by an integer factor (default: to about 64 pixels) and separated
  by `pad` pixels of mid grey."""
  n, h, w, c = images_NHWC.shape
  scale = scale or max(1, 64 // max(h, w))
  x = np.repeat(np.repeat(images_NHWC, scale, axis=1), scale, axis=2)
  h, w = h * scale, w * scale
  cols = int(np.ceil(np.sqrt(n)))
  rows = -(-n // cols)
  grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 128, np.uint8)
  for i in range(n):
    r, q = divmod(i, cols)
    grid[pad + r * (h + pad):pad + r * (h + pad) + h,
         pad + q * (w + pad):pad + q * (w + pad) + w] = x[i]
  return grid


def write_png(path, image_HWC):
  from PIL import Image
  image = image_HWC[..., 0] if image_HWC.shape[-1] == 1 else image_HWC
  Image.fromarray(np.ascontiguousarray(image)).save(path)


def video_grids(videos_NTHWC, scale: int = 0):
  """uint8 clips (N, T, H, W, C) -> (T, rows*H', cols*W', C): frame t of every clip in one
  `image_grid`, clip i in the same cell of every frame."""
  return np.stack([image_grid(videos_NTHWC[:, t], scale) for t in range(videos_NTHWC.shape[1])])


def write_gif(path, frames_THWC, fps: float = 4.0):
  """An endlessly looping GIF of uint8 frames."""
  from PIL import Image
  frames = [Image.fromarray(np.ascontiguousarray(f[..., 0] if f.shape[-1] == 1 else f))
            for f in frames_THWC]
  frames[0].save(path, save_all=True, append_images=frames[1:], duration=int(1000 / fps),
                 loop=0)


def write_wav(path, audio_L, sample_rate: int):
  """Mono 16-bit PCM from int16 samples or floats in [-1, 1] (stdlib `wave`)."""
  import wave
  pcm = np.asarray(audio_L)
  if pcm.dtype != np.int16:
    pcm = np.round(np.clip(pcm, -1.0, 1.0) * 32767).astype(np.int16)
  with wave.open(path, 'wb') as f:
    f.setnchannels(1)
    f.setsampwidth(2)
    f.setframerate(int(sample_rate))
    f.writeframes(pcm.astype('<i2').tobytes())


def write_outputs(stem, outputs) -> str:
  """Writes a task's samples next to `stem` (plus the raw arrays as .npz); returns a
  one-line summary. 'images' (N, H, W, C) uint8 -> stem.png, a grid; 'videos'
  (N, T, H, W, C) uint8 -> stem.gif (the clips as one animated grid) and stem.png (each
  clip's frames in a row); 'audio' (N, L) with 'sample_rate' (N,) -> stem_<i>.wav."""
  from train.errors import UserError
  if 'images' in outputs:
    images = outputs['images']
    write_png(stem + '.png', image_grid(images))
    what = f'{stem}.png: {len(images)} samples of {"x".join(map(str, images.shape[1:]))}'
  elif 'videos' in outputs:
    videos = outputs['videos']
    write_gif(stem + '.gif', video_grids(videos))
    n, t = videos.shape[:2]
    strips = np.concatenate([videos[:, i] for i in range(t)], axis=2)  # (N, H, T*W, C)
    write_png(stem + '.png', image_grid(strips, scale=max(1, 32 // videos.shape[2])))
    what = (f'{stem}.gif and .png: {n} clips of {t} frames of '
            f'{"x".join(map(str, videos.shape[2:]))}')
  elif 'audio' in outputs:
    audio, rates = outputs['audio'], np.broadcast_to(outputs['sample_rate'], len(outputs['audio']))
    for i, (a, r) in enumerate(zip(audio, rates)):
      write_wav(f'{stem}_{i}.wav', a, int(r))
    what = (f'{stem}_0..{len(audio) - 1}.wav: {len(audio)} clips of {audio.shape[1]} samples '
            f'at {int(rates[0])} Hz')
  else:
    raise UserError(f'the task\'s sample made {", ".join(outputs)}; this driver writes '
                    f'images, videos or audio')
  np.savez(stem + '.npz', **outputs)  # the raw samples, for metrics and comparisons
  return f'wrote {what} (raw arrays in .npz)'


def eval_examples(config, task, n: int) -> dict:
  """The first `n` examples of the eval split, preprocessed, stacked: {feature: (n, ...)}."""
  from train import data as data_lib
  from train.errors import UserError
  src = data_lib.records(config, config.data.eval_split)
  if n > len(src):
    raise UserError(f'--num_samples {n} exceeds the {len(src)} examples of the '
                    f'{config.data.eval_split!r} split the samples are about')
  examples = [src[i] for i in range(n)]
  if task.preprocess is not None:
    examples = [task.preprocess(e) for e in examples]
  return data_lib.stack(examples)


def _until_eos(ids):
  from arch import vocab
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
    if text_kind(config):
      step, results, continuation = sample(config, workdir, prompts, opts, step)
    else:
      if prompts is not None:
        raise UserError(f'task {config.task!r} makes no text and takes no --prompt')
      step, outputs = sample_arrays(config, workdir, opts, step)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  import jax
  if jax.process_index() != 0:
    return 0
  d = os.path.join(workdir, 'samples')
  os.makedirs(d, exist_ok=True)
  stem = os.path.join(d, f'step{step}_seed{opts["seed"]}')
  if text_kind(config):
    out = render(results, continuation)
    with open(stem + '.txt', 'w') as f:
      f.write(out)
    print(out)
    print(f'wrote {stem}.txt', file=sys.stderr)
    return 0
  try:
    print(write_outputs(stem, outputs))
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  sys.exit(main())
