"""Checks every decoder language-model family shares (tests/test_llama.py, test_mamba.py,
test_rwkv.py): causality, the LM task's greedy sampling against the full forward pass, beam
search's score against the full forward pass (a cache row left behind when beams swap
parents shows there), and the tiny config's training through the loop with a bitwise
resume."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np

from arch import vocab
from arch.sequence import decoding, lm
from conftest import load_config, run_sample


def check_causal(model, variables, tokens_BT):
  """Logits (B, T, V) float32; changing token 7 leaves the logits before it unchanged and
  changes every one from it on; order matters (swapping tokens 2 and 3 changes the last)."""
  apply = jax.jit(model.apply)
  base = apply(variables, tokens_BT)
  assert base.shape == (*tokens_BT.shape, vocab.BYTE_VOCAB_SIZE)
  assert base.dtype == jnp.float32
  changed = apply(variables, tokens_BT.at[:, 7].set(5 + tokens_BT[:, 7] % 200))
  np.testing.assert_array_equal(changed[:, :7], base[:, :7])
  assert np.abs(changed[:, 7:] - base[:, 7:]).max(axis=-1).min() > 1e-6
  swapped = apply(variables, tokens_BT.at[:, 2].set(tokens_BT[:, 3]).at[:, 3].set(
      tokens_BT[:, 2]))
  assert np.abs(swapped[:, -1] - base[:, -1]).max() > 1e-6


def step_fn(model, variables):
  """The sampler's cached step: (tokens (B, T), cache) -> (last logits (B, V), cache)."""
  def step(tokens, cache):
    logits, mutated = model.apply({**variables, 'cache': cache}, tokens, decode=True,
                                  mutable=['cache'])
    return logits[:, -1], mutated['cache']
  return step


def check_greedy_sampling(config, model, variables, new=8):
  """The LM task's `sample` at temperature 0 equals greedy decoding by `model`'s full
  forward pass, without a cache, over a buffer of the final length (whose not yet written
  tail the causal logits at position i never read); a row ends at its first </s>."""
  task = lm.make(config)
  prompt = task.prompt_batch([[10, 20, 30], [40, 50, 60]], 2)
  p = prompt['prompt'].shape[1]
  out = jax.jit(lambda v, b: task.sample(v, b, jax.random.key(1), max_new_tokens=new,
                                         temperature=0.0))(variables, prompt)['tokens']
  apply = jax.jit(model.apply)
  seq = jnp.zeros((2, p + new), jnp.int32).at[:, :p].set(prompt['prompt'])
  for i in range(p, p + new):
    seq = seq.at[:, i].set(apply(variables, seq)[:, i - 1].argmax(-1).astype(jnp.int32))
  for row, got in zip(np.asarray(seq[:, p:]), np.asarray(out)):
    end = list(row).index(vocab.EOS) + 1 if vocab.EOS in row else new
    np.testing.assert_array_equal(got[:end], row[:end])


def check_beam_search(model, variables, prompt, new=6, beams=3):
  """Beam search's returned score equals the full forward pass's log-probability of the
  returned tokens."""
  b, p = prompt.shape
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0),
                                             jnp.zeros((b, p + new), jnp.int32),
                                             decode=True))['cache']
  cache = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes)
  step = step_fn(model, variables)

  @jax.jit
  def search(cache):
    first, cache = step(prompt, cache)
    return decoding.beam_search(step, cache, first, beams, new, eos_id=vocab.EOS,
                                pad_id=vocab.PAD)
  out, score = search(cache)
  seq = jnp.concatenate([prompt, out], axis=1)
  logp = jax.nn.log_softmax(jax.jit(model.apply)(variables, seq)[:, p - 1:-1])
  for i in range(b):
    row = list(np.asarray(out[i]))
    end = row.index(vocab.EOS) + 1 if vocab.EOS in row else new
    want = sum(float(logp[i, j, row[j]]) for j in range(end))
    np.testing.assert_allclose(float(score[i]), want, rtol=1e-4, atol=1e-4)


# The short run check_trains_and_resumes makes (config field=value).
TEST_RUN = ('total_steps=4', 'warmup_steps=1', 'lr=3e-3', 'log_every=1', 'eval_every=4',
            'ckpt_every=2', 'eval_batch_size=64')


def _run(spec, workdir, data_dir, **overrides):
  from train import loop
  config = load_config(spec, **{
      **dict(item.split('=') for item in TEST_RUN), 'data__data_dir': data_dir,
      **overrides})
  loop.train_and_evaluate(config, str(workdir))
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f]
  return ([(r['step'], r['loss']) for r in records if r['split'] == 'train'],
          [r for r in records if r['split'] == 'eval'])


def check_trains_and_resumes(spec, tmp_path, data_dir):
  """4 steps of config `spec` with an eval at step 4; its step-2 checkpoint (parameters,
  optimizer, rng and data iterator) alone in another workdir resumes to the same steps 3
  and 4, bitwise. Returns the [(step, loss)] of the straight run."""
  straight, evals = _run(spec, tmp_path / 'straight', data_dir)
  assert [s for s, _ in straight] == [1, 2, 3, 4]
  assert all(np.isfinite(l) for _, l in straight)
  (ev,) = evals
  assert ev['step'] == 4 and ev['tokens'] > 10_000 and np.isfinite(ev['loss'])
  shutil.copytree(tmp_path / 'straight' / 'checkpoints' / '2',
                  tmp_path / 'resumed' / 'checkpoints' / '2')
  resumed, _ = _run(spec, tmp_path / 'resumed', data_dir, eval_every=0)
  assert resumed == straight[2:]
  return straight


def check_sampler_one_and_eight(spec, workdir, data_dir):
  """`python -m train.sample` of a trained run (check_trains_and_resumes' straight
  workdir) writes the same text on 1 and on 8 devices (the files' bytes: a subprocess's
  text stdout turns a sampled carriage return into a newline), and rows differ."""
  import glob
  args = ['--config', f'configs/{spec}', '--workdir', workdir, '--prompt', 'The ',
          '--num_samples', '3', '--max_new_tokens', '12', '--seed', '5']
  written = []
  for devices in (1, 8):
    proc = run_sample(args, data_dir, devices=devices)
    assert proc.returncode == 0, proc.stderr[-3000:]
    path, = glob.glob(os.path.join(str(workdir), 'samples', '*_seed5.txt'))
    with open(path, 'rb') as f:
      written.append(f.read())
  assert written[0] == written[1], written
  bodies = written[0].decode('utf-8', 'replace').split('--- sample')[1:]
  assert len(bodies) == 3 and len(set(bodies)) > 1
