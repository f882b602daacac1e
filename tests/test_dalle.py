"""DALL·E-style model: causal masking (a position's logits ignore later tokens), the 1/8
text + 7/8 image loss against a direct numpy formula, per-position pad embeddings, KV-cache
decoding equal to the full forward pass (greedy codes are the argmax of the teacher-forced
logits), samples that follow the prompt tokens and rows, prompt errors, `codes=16`'s
16x16 image tokens (a 264-token sequence), and the tiny config
(tiny frozen VQ-VAE and reader runs) training, resuming bitwise and sampling the same images
on 1 and 8 devices."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arch.generative import dalle
from arch.task import ConfigError
from conftest import REPO, check_resumes_alike, load_config, run_sample, train_spec

SPEC = 'dalle_shapes.py:tiny'
T, GRID, K, V = 4, (2, 3), 5, 7


@functools.cache
def tiny():
  model = dalle.Transformer(text_vocab=V, text_length=T, num_codes=K, grid=GRID,
                            **dalle.TINY)
  variables = nn.meta.unbox(model.init(jax.random.key(0), jnp.zeros((2, T + 6), jnp.int32)))
  return model, variables


@functools.cache
def forward():
  model, variables = tiny()
  return jax.jit(lambda seq: model.apply(variables, seq))


def tokens(seed, b=2):
  rng = np.random.default_rng(seed)
  text = rng.integers(1, V, (b, T))
  codes = rng.integers(0, K, (b, 6))
  return jnp.asarray(text, jnp.int32), jnp.asarray(codes, jnp.int32)


def test_logits_ignore_later_tokens():
  model, variables = tiny()
  text, codes = tokens(0)
  seq = dalle.sequence(text, codes, K)
  text_logits, image_logits = forward()(seq)
  for i in range(1, seq.shape[1]):
    later = seq.at[:, i:].set((seq[:, i:] + 1) % min(V, K))  # valid in both tables
    t2, i2 = forward()(later)
    np.testing.assert_allclose(t2[:, :i], text_logits[:, :i], atol=1e-6)
    np.testing.assert_allclose(i2[:, :i], image_logits[:, :i], atol=1e-6)
    assert not np.allclose(i2[:, i], image_logits[:, i])  # and position i does change


def test_pads_are_embedded_per_position():
  """Two pads at different positions are different inputs; a pad differs from a word."""
  _, variables = tiny()
  text, codes = tokens(1)
  emb = variables['params']['text_embed']['embedding']
  assert emb.shape == (V + T, dalle.TINY['embed_dim'])
  padded = text.at[:, 2:].set(0)
  a = forward()(dalle.sequence(padded, codes, K))[1]
  b = forward()(dalle.sequence(text, codes, K))[1]
  assert not np.allclose(a[:, T:], b[:, T:])
  # the pad at position p is row V + p: replacing it by that row's id changes nothing
  same = padded.at[:, 2:].set(jnp.arange(V + 2, V + T))
  np.testing.assert_allclose(forward()(dalle.sequence(same, codes, K))[1], a, atol=1e-6)


def _log_softmax(x):
  x = np.asarray(x, np.float64)
  return x - x.max(-1, keepdims=True) - np.log(np.exp(x - x.max(-1, keepdims=True)).sum(
      -1, keepdims=True))


def test_text_and_image_losses_match_direct_formula():
  rng = np.random.default_rng(2)
  b, n = 3, 6
  text_logits = rng.normal(size=(b, T + n, V)).astype(np.float32)
  image_logits = rng.normal(size=(b, T + n, K)).astype(np.float32)
  text, codes = rng.integers(0, V, (b, T)), rng.integers(0, K, (b, n))
  got_text, got_image = dalle.token_losses(text_logits, image_logits, text, codes)
  lt, li = _log_softmax(text_logits), _log_softmax(image_logits)
  want_text = [-np.mean([lt[r, p, text[r, p + 1]] for p in range(T - 1)]) for r in range(b)]
  want_image = [-np.mean([li[r, T + j, codes[r, j]] for j in range(n)]) for r in range(b)]
  np.testing.assert_allclose(got_text, want_text, rtol=1e-5)
  np.testing.assert_allclose(got_image, want_image, rtol=1e-5)
  np.testing.assert_allclose(dalle.weighted_loss(got_text, got_image),
                             np.asarray(want_text) / 8 + 7 * np.asarray(want_image) / 8,
                             rtol=1e-5)


@functools.cache
def tiny_task():
  """(task, variables) of the tiny config without the reader (untrained frozen runs)."""
  from train import core
  task = core.load_task(load_config('dalle_shapes.py:tiny,reader=False'))
  batch = {k: jnp.zeros(s.shape, s.dtype) for k, s in task.example_batch(3).items()}
  return task, task.init(jax.random.key(1), batch)


def test_task_loss_is_the_weighted_sum_and_trains_nothing_frozen():
  task, variables = tiny_task()
  rng = np.random.default_rng(3)
  batch = {'image': jnp.asarray(rng.integers(0, 256, (3, 8, 8, 3)), jnp.uint8),
           'tokens': jnp.asarray([[1, 2, 9, 12, 1, 3, 10, 0]] * 3, jnp.int32)}
  value, (metrics, extra) = task.loss(variables, batch, jax.random.key(0))
  np.testing.assert_allclose(value, metrics['text_nll'] / 8 + 7 * metrics['image_nll'] / 8,
                             rtol=1e-6)
  assert set(extra) == {dalle.VQVAE}
  grads = jax.grad(lambda v: task.loss(v, batch, jax.random.key(0))[0])(variables)
  assert all(float(jnp.abs(g).max()) == 0 for g in jax.tree.leaves(grads[dalle.VQVAE]))
  ev = task.evaluate(variables, batch)
  np.testing.assert_allclose(ev['loss'].mean(), value, rtol=1e-5)


def test_greedy_decoding_equals_teacher_forced_argmax():
  """The KV-cache sampler's greedy codes are, at each cell, the argmax of the full forward
  pass's logits given the prompt and the codes before it: the cache, the positions and
  the prompt tokens all line up."""
  model, variables = tiny()
  text, _ = tokens(4, b=3)
  text = text.at[0, 3:].set(0)  # a padded caption too
  got = jax.jit(lambda v, t: dalle.generate(model, v, t, jax.random.key(0),
                                            temperature=0.0))(variables, text)
  assert got.shape == (3, 6) and got.dtype == jnp.int32
  full = forward()(dalle.sequence(text, got, K))[1]
  np.testing.assert_array_equal(got, full[:, T:].argmax(-1))


def test_samples_follow_prompt_tokens_and_rows():
  """Sampled codes: a row's draw depends on its prompt and row id, not on its batch."""
  model, variables = tiny()
  text, _ = tokens(5, b=4)
  draw = jax.jit(lambda t, rows: dalle.generate(model, variables, t, jax.random.key(7), rows,
                                                temperature=1.0))
  rows = jnp.arange(4)
  a = draw(text, rows)
  np.testing.assert_array_equal(draw(text[2:], rows[2:]), a[2:])  # batch-independent
  same = jnp.broadcast_to(text[:1], text.shape)
  b = draw(same, jnp.zeros(4, jnp.int32))
  assert (b == b[0]).all()  # one prompt, one row id: one sample
  # the same row id under different prompts: the draws differ (the prompt is read), with
  # the output projection scaled up so the untrained logits are far from uniform
  sharp = jax.tree.map(lambda x: x, variables)
  sharp['params']['head']['kernel'] = sharp['params']['head']['kernel'] * 100.0
  c = jax.jit(lambda t, rows: dalle.generate(model, sharp, t, jax.random.key(7), rows))(
      text, jnp.zeros(4, jnp.int32))
  assert not all((c[i] == c[0]).all() for i in range(1, 4))


def test_prompt_batch_tokenizes_and_refuses_bad_prompts():
  from train.datasets import caption_shapes
  task, _ = tiny_task()
  texts = ['a red circle left of a blue square'] * 2 + ['a cyan triangle above a green circle'] * 2
  batch = task.prompt_batch(texts, 4)
  want = [caption_shapes.tokenize(t) for t in texts]
  np.testing.assert_array_equal(batch['tokens'], np.stack(want))
  with pytest.raises(ConfigError, match="'violet'.*not in the vocabulary"):
    task.prompt_batch(['a violet circle above a blue square'], 1)
  with pytest.raises(ConfigError, match='1 to 8 words'):
    task.prompt_batch(['a red circle above a blue square a red'], 1)
  examples = {'tokens': np.stack(want)}
  np.testing.assert_array_equal(task.prompt_batch(None, 3, examples=examples)['tokens'],
                                np.stack(want)[:3])


def test_config_trains_resumes_and_samples_alike_on_eight_devices(tmp_path, data_dir):
  """The tiny config (tiny VQ-VAE and reader runs trained first) trains 4 steps, resumes
  from step 2 bitwise, reports prompt-following; the sampler draws the same images on 1
  and 8 devices."""
  result = train_spec(SPEC, tmp_path / 'straight', data_dir, data__eval_split='test[:16]')
  for key in ('loss', 'image_nll', 'text_nll', 'prompt_all', 'recon_prompt_all',
              'shuffled_prompt_all'):
    assert np.isfinite(result[key]), key
  assert 0 <= result['prompt_all'] <= result['prompt_colour'] <= 1
  check_resumes_alike(SPEC, lambda workdir, **kw: train_spec(SPEC, workdir, data_dir, **kw),
                      tmp_path)
  workdir = tmp_path / 'straight'
  args = ['--config', f'configs/{SPEC}', '--workdir', workdir, '--num_samples', '5',
          f'--config.data.data_dir={data_dir}']
  images = []
  for devices in (1, 8):
    proc = run_sample([*args, '--seed', '3'], data_dir, devices=devices)
    assert proc.returncode == 0, proc.stderr[-2000:]
    images.append(np.load(workdir / 'samples' / 'step4_seed3.npz')['images'])
  assert images[0].shape == (5, 8, 8, 3)
  np.testing.assert_array_equal(images[0], images[1])
  # text prompts through the CLI: --num_samples images of each; a bad word is one line
  proc = run_sample([*args, '--num_samples', '2', '--prompt', 'a red circle above a blue square',
                     '--prompt', 'a cyan triangle left of a green circle'], data_dir)
  assert proc.returncode == 0, proc.stderr[-2000:]
  drawn = np.load(workdir / 'samples' / 'step4_seed0.npz')['images']
  assert drawn.shape == (4, 8, 8, 3)
  proc = run_sample([*args, '--prompt', 'a violet circle above a blue square'], data_dir)
  assert proc.returncode == 2 and 'violet' in proc.stderr
  assert proc.stderr.strip().count('\n') == 0, proc.stderr


def test_codes_16_reads_sixteen_by_sixteen_codes():
  """`codes=16`'s frozen VQ-VAE (configs/vqvae_shapes.py:data=caption_shapes,codes=16) gives
  a 16x16 grid of its 128 codes: the Transformer's sequence is 8 words + 256 codes, with 16
  row and 16 column embeddings (shapes only, no weights allocated)."""
  import os
  from train import config_lib
  config = load_config('dalle_shapes.py:codes=16')
  assert load_config('dalle_shapes.py').frozen.vqvae.spec.endswith('codes=8')
  spec = config.frozen.vqvae.spec
  net, _, image_shape, grid = dalle.first_stage(config_lib.load(os.path.join(REPO, spec)))
  assert (image_shape, grid, net.num_codes) == ((32, 32, 3), (16, 16), 128)
  model = dalle.Transformer(text_vocab=16, text_length=8, num_codes=128, grid=grid,
                            **config.model)
  assert model.length == 8 + 256
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 8 + 256), jnp.int32))
  params = nn.meta.unbox(shapes)['params']
  for name in ('row_pos', 'col_pos'):
    (table,) = jax.tree.leaves(params[name])
    assert table.shape == (16, config.model.embed_dim), name
