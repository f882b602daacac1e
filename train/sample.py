"""`python -m train.sample --config C --workdir W [--prompt TEXT ...] [--num_samples N]
[--seed S] [--step K] [--OPTION VALUE ...]`

The one sampler driver. It restores the run's checkpoint (the latest, or --step; EMA params
when the run kept them), asks the config's task for the batch to condition on
(`Task.prompt_batch`: an LM's prompt, a translation's source sentence, a caption for a
text-to-image model, a class label, or nothing) and runs the task's pure `sample` under jit over the run's mesh with the sample
batch sharded along the data axes. Randomness is per sample index, so the same seed gives
the same samples on 1 or 8 devices.

The sampler's options are the keyword parameters of the task's `sample` (e.g. an LM's
max_new_tokens, temperature, top_k, top_p, beam_size; a diffusion model's steps, sampler,
eta, guidance): each is a flag `--NAME VALUE`, typed by its default; its default is the
config's `sample.NAME` where the config has one, else the task's own. A flag the task's
sampler does not name is an error that lists the ones it does, so each family's options
need no edit here. `--help` with a --config lists that task's options.

Outputs go to WORKDIR/samples/step<STEP>_seed<SEED>.*, written by the writer registered for
each output the sampler returns (`WRITERS`): text ('tokens', decoded with the run's
tokenizer: `config.data.tokenizer` or `config.sample.tokenizer`) to stdout and .txt, each
--prompt getting --num_samples samples; 'images' as one PNG grid (a text-to-image model's
--num_samples images of each --prompt, prompt by prompt); 'videos' as an animated
GIF grid and a PNG of each clip's frames in a row; 'audio' (with 'sample_rate') as one WAV
a clip; 'points' (2-D samples) as a PNG histogram; 'episodes' (an RL agent's evaluation
episodes, with 'episode_return') as a GIF grid and a PNG of 8 frames of each; every array
also to .npz. Bad input prints one `error:` line and exits with 2.

Several processes (`--config.distributed.*`, as for training) sample as they train: in a
supervised child, each marking itself done on a clean end; a lost process stops the others
within `distributed.peer_timeout_s` with one line and exit status 3 (train/peers.py).
"""

import argparse
import ast
import functools
import inspect
import os
import sys

import numpy as np

# Flags of the driver itself; every other flag is an option of the task's sampler.
DRIVER_FLAGS = ('config', 'workdir', 'prompt', 'num_samples', 'seed', 'step')


def _driver_parser(add_help):
  p = argparse.ArgumentParser(
      prog='python -m train.sample', add_help=add_help,
      description='Sample from a trained archzoo run.',
      epilog='Any other --NAME VALUE is an option of the task\'s sampler (with --config, '
             '--help lists them); defaults come from the config\'s `sample` fields; '
             '--config.KEY=VALUE overrides any config field.')
  p.add_argument('--config', required=True, help='configs/NAME.py[:arg=val,...]')
  p.add_argument('--workdir', required=True, help='the run\'s workdir (checkpoints)')
  p.add_argument('--prompt', action='append', help='conditioning text; repeat for several')
  p.add_argument('--num_samples', type=int, help='samples per prompt')
  p.add_argument('--seed', type=int)
  p.add_argument('--step', type=int, help='checkpoint step (default: latest)')
  return p


def sampler_options(task):
  """{name: default} of the keyword options the task's `sample` takes (not row_ids, not a
  catch-all **kwargs)."""
  out = {}
  for name, p in inspect.signature(task.sample).parameters.items():
    if name == 'row_ids' or p.kind not in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD):
      continue
    if name in ('variables', 'batch', 'rng'):
      continue
    out[name] = None if p.default is inspect.Parameter.empty else p.default
  return out


def _typed(text, like):
  """A flag's text as the type of its default (free-form where the default is None)."""
  if isinstance(like, bool):
    return text.lower() in ('1', 'true', 'yes')
  if isinstance(like, (int, float, str)):
    return type(like)(text)
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def _load(argv):
  """(config with its overrides, the driver's flags, the other flags, whether --help was
  given): no task loaded, no device touched (a supervisor reads it)."""
  from train import config_lib
  overrides, rest = config_lib.split_overrides(argv)
  wants_help = any(a in ('-h', '--help') for a in rest)
  args, extra = _driver_parser(add_help=False).parse_known_args(
      [a for a in rest if a not in ('-h', '--help')])
  config = config_lib.load(args.config)
  for key, value in overrides:
    config_lib.override(config, key, value)
  return config, args, extra, wants_help


def parse(argv, loaded=None):
  """(config, workdir, prompts, step, num_samples, seed, given sampler options); `loaded`:
  `_load(argv)`, where the caller has it."""
  from train import core
  from train.errors import UserError
  config, args, extra, wants_help = loaded or _load(argv)
  task = core.load_task(config)
  if task.sample is None or task.prompt_batch is None:
    raise UserError(f'task {config.task!r} has no sampler')
  options = sampler_options(task)
  defaults = {k: config.sample[k] for k in options if k in config.sample}
  p = argparse.ArgumentParser(prog='python -m train.sample --config ... --workdir ...',
                              description=f'Options of the sampler of {config.task!r}.')
  for name, default in options.items():
    like = defaults.get(name, default)
    p.add_argument(f'--{name}', type=functools.partial(_typed, like=like),
                   help=f'default {like!r}')
  if wants_help:
    _driver_parser(add_help=True).print_help()
    print()
    p.print_help()
    raise SystemExit(0)
  unknown = [a.split('=')[0] for a in extra if a.startswith('--')
             and a.split('=')[0][2:] not in options]
  if unknown:
    flag = unknown[0]
    raise UserError(f'{flag}: this task\'s sampler takes no {flag[2:]}; its options: '
                    f'{", ".join("--" + o for o in options) or "none"}')
  given = {k: v for k, v in vars(p.parse_args(extra)).items() if v is not None}
  num_samples = args.num_samples if args.num_samples is not None else config.sample.num_samples
  seed = args.seed if args.seed is not None else config.sample.seed
  prompts = args.prompt if args.prompt is not None else (
      [config.sample.prompt] if config.sample.get('prompt') else None)
  if num_samples < 1:
    raise UserError(f'--num_samples must be >= 1, got {num_samples}')
  return (config, os.path.abspath(args.workdir), prompts, args.step, num_samples, seed,
          {**defaults, **given})


def restore(config, workdir, step=None, sampler=True):
  """(variables placed over the mesh, step, mesh, rules, task) of the run in `workdir`
  (`sampler`: its task must have one)."""
  from train import core
  from train import mesh as mesh_lib
  from train.errors import UserError
  from train.runner import Runner
  mesh_lib.maybe_initialize_distributed(config)
  mesh = mesh_lib.make_mesh(config)
  task = core.load_task(config)
  if sampler and (task.sample is None or task.prompt_batch is None):
    raise UserError(f'task {config.task!r} has no sampler')
  if not os.path.isdir(os.path.join(workdir, 'checkpoints')):
    raise UserError(f'no checkpoints in {workdir}; train it first with '
                    f'`python -m train --config ... --workdir {workdir}`')
  # The state laid out as a jit over the mesh would hold it (a pmap run's too).
  abstract = Runner(_as_jit(config), task, mesh).abstract_state
  variables, step = core.restore_variables(config, workdir, step, task, abstract)
  return variables, step, mesh, mesh_lib.rules(config), task


def _as_jit(config):
  """The config with parallelism 'jit': the sampler lays the state out over the mesh."""
  if config.parallelism == 'jit':
    return config
  out = config.copy_and_resolve_references()
  with out.unlocked():
    out.parallelism = 'jit'
  return out


def text_kind(config) -> str:
  """The tokenizer the sampler decodes with ('' for tasks that do not make text)."""
  return config.sample.get('tokenizer') or config.data.get('tokenizer') or ''


def _jit_sample(task, options):
  import jax
  return jax.jit(functools.partial(task.sample, **options))


def sample_text(config, workdir, prompts, num_samples, seed, options, step=None):
  """Runs a text sampler; returns (step, [(prompt, completion_text, about), ...],
  continuation): `about` names the eval example a sample conditions on (or None);
  continuation is the task's `continues_prompt`."""
  from arch import vocab
  from arch.task import ConfigError
  from train import core, text
  from train.errors import UserError
  variables, step, mesh, rules, task = restore(config, workdir, step)
  tok = text.tokenizer(config, workdir, train_if_missing=False, kind=text_kind(config))
  prompts = [''] if prompts is None else prompts
  rows = [p for p in prompts for _ in range(num_samples)]
  try:
    ids = [tok.encode(p) for p in rows]
  except ValueError as e:  # a word outside a word-level vocabulary
    raise UserError(f'--prompt: {e}') from None
  examples = None
  if task.prompt_examples:  # sample j of every prompt is about eval example j
    first = eval_examples(config, task, num_samples)
    examples = {k: np.concatenate([v] * len(prompts)) for k, v in first.items()}
  about = [None] * len(rows) if examples is None else [
      f'{config.data.eval_split} example {j}' + (
          f', label {int(first["label"][j])}' if 'label' in first else '')
      for _ in prompts for j in range(num_samples)]
  fn = _jit_sample(task, options)
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
    got = core.run_batch(fn, variables, batch, group, mesh, rules, seed)
    for i, r in enumerate(group):
      tokens[r] = got['tokens'][i]
      if 'source' in got:  # a denoiser's corrupted input, shown in place of its passage
        rows[r] = show_source(tok, got['source'][i])
      elif 'prompt' in got and not ids[r]:  # the prompt the task took from its example
        rows[r] = tok.decode(got['prompt'][i])
      elif 'prompt' in got:  # the user's prompt, not about the example
        about[r] = None
  eos = getattr(tok, 'eos_id', vocab.EOS)
  results = [(p, tok.decode(_until_eos(t, eos)), a) for p, t, a in zip(rows, tokens, about)]
  return step, results, task.continues_prompt


def sample_arrays(config, workdir, num_samples, seed, options, step=None, prompts=None):
  """Runs the sampler of a task that makes no text; returns (step, outputs): {'images':
  (N, H, W, C) uint8, ...}, sample i drawn with row id i. With text `prompts` (a
  text-to-image family), num_samples rows of each, prompt by prompt, go to the task's
  `prompt_batch` as text (the task tokenizes them; one row a sample, as an LM's prompts);
  a family that takes none refuses them (ConfigError: one line)."""
  from arch.task import ConfigError
  from train import core
  from train.errors import UserError
  variables, step, mesh, rules, task = restore(config, workdir, step)
  # sample i is about eval example i (a decomposition of that image, its reconstruction)
  kwargs = {'examples': eval_examples(config, task, num_samples)} if task.prompt_examples else {}
  try:
    if prompts is None:
      batch = task.prompt_batch(None, num_samples, **kwargs)
    else:
      rows = [p for p in prompts for _ in range(num_samples)]
      batch, num_samples = task.prompt_batch(rows, len(rows), **kwargs), len(rows)
  except (ConfigError, ValueError) as e:
    raise UserError(str(e)) from None
  fn = _jit_sample(task, options)
  try:
    return step, core.run_batch(fn, variables, batch, list(range(num_samples)), mesh, rules,
                                seed)
  except ConfigError as e:  # e.g. an unknown --sampler, found when the sampler traces
    raise UserError(str(e)) from None


# ---------------------------------------------------------------------------- writers


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


def write_images(stem, outputs):
  images = outputs['images']
  write_png(stem + '.png', image_grid(images))
  return f'{stem}.png: {len(images)} samples of {"x".join(map(str, images.shape[1:]))}'


def write_videos(stem, outputs):
  videos = outputs['videos']
  write_gif(stem + '.gif', video_grids(videos))
  n, t = videos.shape[:2]
  strips = np.concatenate([videos[:, i] for i in range(t)], axis=2)  # (N, H, T*W, C)
  write_png(stem + '.png', image_grid(strips, scale=max(1, 32 // videos.shape[2])))
  return f'{stem}.gif and .png: {n} clips of {t} frames of {"x".join(map(str, videos.shape[2:]))}'


def write_audio(stem, outputs):
  audio = outputs['audio']
  rates = np.broadcast_to(outputs['sample_rate'], len(audio))
  for i, (a, r) in enumerate(zip(audio, rates)):
    write_wav(f'{stem}_{i}.wav', a, int(r))
  return (f'{stem}_0..{len(audio) - 1}.wav: {len(audio)} clips of {audio.shape[1]} samples '
          f'at {int(rates[0])} Hz')


def write_points(stem, outputs):
  """2-D points (N, 2) as a 256 x 256 PNG histogram (dark = dense, y up) over a square
  that holds 99.5% of them, at least [-4.5, 4.5]^2."""
  pts = np.asarray(outputs['points'], np.float64).reshape(len(outputs['points']), -1)[:, :2]
  lim = max(4.5, float(np.ceil(np.nanpercentile(np.abs(pts), 99.5))))
  h = np.histogram2d(pts[:, 1], pts[:, 0], bins=256, range=[[-lim, lim]] * 2)[0][::-1]
  write_png(stem + '.png', 255 - np.round(255 * np.sqrt(h / max(h.max(), 1))).astype(np.uint8))
  return f'{stem}.png: a histogram of {len(pts)} 2-D points over [-{lim:g}, {lim:g}]^2'


def write_episodes(stem, outputs):
  """RL evaluation episodes (N, T, H, W, 3): one GIF grid playing them together at 25
  frames a second, and a PNG with 8 evenly spaced frames of each episode in a row."""
  episodes = outputs['episodes']
  write_gif(stem + '.gif', video_grids(episodes), fps=25.0)
  # 8 frames spread over each episode's own length (its video holds the last frame after).
  moving = np.any(episodes[:, 1:] != episodes[:, :-1], axis=(2, 3, 4))  # (N, T-1)
  shown = [1 + (np.flatnonzero(m)[-1] + 1 if m.any() else 0) for m in moving]
  rows = [e[np.linspace(0, n - 1, 8).round().astype(int)] for e, n in zip(episodes, shown)]
  write_png(stem + '.png', image_grid(np.stack([np.concatenate(list(r), axis=1)
                                                for r in rows])))
  returns = np.asarray(outputs.get('episode_return', np.zeros(len(episodes))), np.float64)
  lengths = np.asarray(outputs.get('episode_length', np.zeros(len(episodes))))
  return (f'{stem}.gif and .png: {len(episodes)} episodes of {episodes.shape[1]} frames; '
          f'returns {", ".join(f"{r:g}" for r in returns)} (mean {returns.mean():g}), '
          f'lengths {", ".join(str(int(n)) for n in lengths)}')


# output name -> writer(stem, outputs) -> a line saying what it wrote. A family with a new
# kind of output (rendered views, episode videos) registers its writer here by name.
WRITERS = {'images': write_images, 'videos': write_videos, 'audio': write_audio,
           'points': write_points, 'episodes': write_episodes}
# Outputs that only qualify another (written by that one's writer).
AUXILIARY = ('sample_rate', 'episode_return', 'episode_length', 'boards')


def write_outputs(stem, outputs) -> str:
  """Writes each of a task's sample outputs with its registered writer, plus the raw
  arrays as stem.npz; returns what was written, one line per output."""
  from train.errors import UserError
  names = [k for k in outputs if k not in AUXILIARY]
  missing = [k for k in names if k not in WRITERS]
  if missing or not names:
    raise UserError(f'the task\'s sample made {", ".join(outputs)}; this driver writes '
                    f'{", ".join(WRITERS)} (train.sample.WRITERS)')
  lines = [f'wrote {WRITERS[k](stem, outputs)}' for k in names]
  np.savez(stem + '.npz', **outputs)  # the raw samples, for metrics and comparisons
  return '\n'.join(lines) + ' (raw arrays in .npz)'


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


def show_source(tok, ids):
  """A source's text with each <mask> id written '<mask>' (padding dropped)."""
  from arch import vocab
  parts, run = [], []
  for i in list(ids) + [vocab.MASK]:
    if int(i) == vocab.MASK:
      parts.append(tok.decode(run))
      run = []
    else:
      run.append(int(i))
  return '<mask>'.join(parts)


def _until_eos(ids, eos):
  ids = list(ids)
  return ids[:ids.index(eos)] if eos is not None and eos in ids else ids


def render(results, continuation: bool) -> str:
  parts = []
  for i, (prompt, completion, about) in enumerate(results):
    body = prompt + completion if continuation else f'{prompt}\n=> {completion}'
    parts.append(f'--- sample {i}{f" ({about})" if about else ""} ---\n{body}\n')
  return '\n'.join(parts)


# The last sentence of a lost process's line: sampling keeps no checkpoint to resume from.
LOST_ADVICE = 'No samples were written; relaunch every process to sample again.'


def main(argv=None):
  from arch.task import ConfigError
  from train import peers
  from train.errors import UserError
  # As `python -m train` does (train/__main__.py): several processes sample in a supervised
  # child, and peers.finish() runs on a clean end only, so that an unexpected error (a
  # collective failing because a peer died) leaves the watcher to speak for the lost peer.
  argv = sys.argv[1:] if argv is None else argv
  peers.set_advice(LOST_ADVICE)
  try:
    loaded = _load(argv)
    if peers.needs_supervisor(loaded[0]):
      return peers.supervise(loaded[0], os.path.abspath(loaded[1].workdir), argv,
                             module='train.sample', advice=LOST_ADVICE)
    code = _sample_and_write(argv, loaded)
  except (UserError, ConfigError) as e:
    peers.finish()
    print(f'error: {e}', file=sys.stderr)
    return 2
  peers.finish()
  return code


def _sample_and_write(argv, loaded):
  """Samples; process 0 writes the outputs. The exit status."""
  from train import mesh as mesh_lib
  # before parse loads the task: loading one may start jax's backend (a diffusion task's
  # schedule), after which jax.distributed cannot initialise
  mesh_lib.maybe_initialize_distributed(loaded[0])
  config, workdir, prompts, step, n, seed, options = parse(argv, loaded)
  if text_kind(config):
    step, results, continuation = sample_text(config, workdir, prompts, n, seed, options,
                                              step)
  else:
    step, outputs = sample_arrays(config, workdir, n, seed, options, step, prompts)
  import jax
  if jax.process_index() != 0:
    return 0
  d = os.path.join(workdir, 'samples')
  os.makedirs(d, exist_ok=True)
  stem = os.path.join(d, f'step{step}_seed{seed}')
  if text_kind(config):
    out = render(results, continuation)
    with open(stem + '.txt', 'w') as f:
      f.write(out)
    print(out)
    print(f'wrote {stem}.txt', file=sys.stderr)
    return 0
  print(write_outputs(stem, outputs))  # a UserError: main's one line
  return 0


if __name__ == '__main__':
  sys.exit(main())
