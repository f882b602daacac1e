"""Text-to-image latent diffusion: the frozen CLIP text tower's token states (their last
position is the pooled output), the captioned CLIP task's retrieval hits, prompt dropout's
rate and null caption, cross-attention that reads the caption, classifier-free guidance
equal to eps_u + s (eps_c - eps_u) with s = 0 the null caption's path, and the tiny config
(tiny frozen runs) training, resuming bitwise and sampling the same images on 1 and 8
devices from text prompts through the CLI."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import arch
from arch.generative import diffusion, t2i
from arch.multimodal import clip
from arch.vocab import word_ids
from train.datasets.caption_shapes import VOCAB
from conftest import check_resumes_alike, load_config, run_sample

SPEC = 't2i_shapes.py:tiny,reader=False'
CAPTION_A = 'a red circle above a blue square'
CAPTION_B = 'a green triangle left of a cyan circle'


def random_variables(init, *args, seed=0):
  """Variables shaped as `init(rng, *args)` makes them, scaled normal draws in numpy (the
  U-Net's zero-initialised output layers would hide the conditioning)."""
  shapes = nn.meta.unbox(jax.eval_shape(init, jax.random.key(0), *args))
  rng = np.random.default_rng(seed)

  def draw(s):
    if not jnp.issubdtype(s.dtype, jnp.floating):
      return jnp.zeros(s.shape, s.dtype)
    fan_in = int(np.prod(s.shape[:-1])) if len(s.shape) > 1 else 1
    return jnp.asarray(rng.standard_normal(s.shape) / np.sqrt(fan_in), s.dtype)
  return jax.tree.map(draw, shapes)


def _tiny_config(data_dir='', **overrides):
  """The tiny config with its frozen specs resolved and each frozen run cut to 2 steps
  without evals."""
  from train import core
  config = load_config(SPEC, **overrides)
  if data_dir:
    config.data.data_dir = data_dir
  core.resolve_frozen(config)
  for name in config.frozen:
    for k, v in dict(total_steps=2, eval_every=0, log_every=2, ckpt_every=2).items():
      config.frozen[name].config[k] = v
  return config


@functools.cache
def tiny_task():
  """(task, variables): the frozen runs at their initialisation, the U-Net's params random
  (nothing zero)."""
  from train import core
  task = core.load_task(_tiny_config())
  batch = {k: jnp.zeros(s.shape, s.dtype) for k, s in task.example_batch(2).items()}
  variables = dict(nn.meta.unbox(task.init(jax.random.key(0), batch)))
  variables['params'] = random_variables(lambda rng: {'p': variables['params']}, seed=1)['p']
  return task, variables


def tokens(*captions):
  return jnp.asarray(np.stack([word_ids(c, VOCAB, 8) for c in captions]))


def test_text_tokens_are_the_towers_states_and_end_in_the_pooled_one():
  """`tokens=True` returns every position's state; with no end-of-text id the pooled
  output is the last position's, the state that has read the whole caption."""
  tower = clip.TextTransformer(vocab_size=16, max_length=8, width=16, depth=1, num_heads=2,
                               mlp_dim=32, eos_id=-1)
  ids = tokens(CAPTION_A, CAPTION_B)
  v = random_variables(tower.init, ids)
  states = tower.apply(v, ids, tokens=True)
  assert states.shape == (2, 8, 16)
  np.testing.assert_allclose(tower.apply(v, ids), states[:, -1], atol=1e-6)
  # causal: position 2 ('... circle' / '... triangle') differs, position 1 ('a red' vs
  # 'a green') too, position 0 ('a') is the same word in both
  np.testing.assert_allclose(states[0, 0], states[1, 0], atol=1e-6)
  assert not np.allclose(states[0, 1], states[1, 1])


def test_caption_hits_count_equal_captions_as_matches():
  caps = np.array([[1, 2, 0], [1, 3, 0], [1, 2, 0]])
  sim = np.array([[0.1, 0.0, 0.9],   # picks row 2: the same caption as its own -> hit
                  [0.9, 0.2, 0.0],   # picks row 0: another caption -> miss
                  [0.0, 0.1, 0.5]])  # itself -> hit
  np.testing.assert_array_equal(clip.caption_hits(jnp.asarray(sim), jnp.asarray(caps)),
                                [1.0, 0.0, 1.0])


def test_prompt_dropout_rate_and_null_caption():
  ids = jnp.asarray(np.random.default_rng(0).integers(1, 16, (20000, 8)), jnp.int32)
  dropped = np.asarray(t2i.drop_captions(jax.random.key(3), ids, 0.1))
  null = (dropped == 0).all(1)
  kept = (dropped == np.asarray(ids)).all(1)
  assert (null | kept).all()  # a row is either untouched or the null caption
  assert abs(null.mean() - 0.1) < 0.0065  # 3 sigma of a binomial(20000, 0.1) mean
  np.testing.assert_array_equal(t2i.null_captions(3, 8), np.zeros((3, 8)))
  np.testing.assert_array_equal(t2i.drop_captions(jax.random.key(3), ids, 0.0), ids)


@functools.cache
def _sampler(guidance):
  task, _ = tiny_task()
  return jax.jit(functools.partial(task.sample, steps=2, guidance=guidance))


def _sample(variables, caption_ids, guidance):
  return np.asarray(_sampler(guidance)(variables, {'tokens': caption_ids}, jax.random.key(5),
                                       row_ids=jnp.arange(2))['images'])


def test_cross_attention_reads_the_caption_and_guidance_is_the_direct_formula():
  """Through the frozen tower and the U-Net: another caption changes the prediction; the
  guided output equals eps_u + s (eps_c - eps_u) computed from two direct calls, with
  eps_u the network on the null caption's states."""
  task, v = tiny_task()
  net = arch.model_from_config(_tiny_config(), out_channels=4)
  params = {'params': v['params']}
  x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 8, 8, 4)), jnp.float32)
  t_B = jnp.asarray([10.0, 500.0])
  model, _, _ = t2i.text_encoder(_tiny_config().frozen.clip.config)
  states = lambda ids: model.apply(v[t2i.CLIP], ids, method='text_tokens')
  eps = jax.jit(lambda ids: net.apply(params, x, t_B, None, states(ids)))
  eps_a, eps_b = eps(tokens(CAPTION_A, CAPTION_A)), eps(tokens(CAPTION_B, CAPTION_B))
  eps_u = eps(t2i.null_captions(2, 8))
  assert np.abs(eps_a - eps_b).max() > 1e-3 * np.abs(eps_a).max()
  assert np.abs(eps_a - eps_u).max() > 1e-3 * np.abs(eps_a).max()
  for s in (0.0, 1.0, 3.0):
    got = diffusion.guided(eps_a, eps_u, s, 4)
    np.testing.assert_allclose(got, eps_u + s * (eps_a - eps_u), rtol=1e-6, atol=1e-6)


def test_sampler_guidance_zero_is_the_null_captions_path():
  """Guidance 0 ignores the caption and equals the conditional sampler given the null
  caption; guidance 1 and 3 follow the caption (different captions, different images)."""
  _, v = tiny_task()
  a, b = tokens(CAPTION_A, CAPTION_B), tokens(CAPTION_B, CAPTION_A)
  u_a, u_b = _sample(v, a, 0.0), _sample(v, b, 0.0)
  np.testing.assert_array_equal(u_a, u_b)
  np.testing.assert_array_equal(u_a, _sample(v, t2i.null_captions(2, 8), 1.0))
  guided_a, guided_b = _sample(v, a, 3.0), _sample(v, b, 3.0)
  assert (guided_a != guided_b).any() and (guided_a != u_a).any()


def test_loss_trains_no_frozen_collection_and_prompts_tokenize():
  from arch.task import ConfigError
  task, v = tiny_task()
  rng = np.random.default_rng(2)
  batch = {'image': jnp.asarray(rng.integers(0, 256, (2, 32, 32, 3)), jnp.uint8),
           'tokens': tokens(CAPTION_A, CAPTION_B)}
  # the gradient reaches the U-Net only: the frozen collections are not arguments of it
  value_and_grad = jax.jit(jax.value_and_grad(
      lambda p: task.loss({**v, 'params': p}, batch, jax.random.key(0)), has_aux=True))
  (value, (_, extra)), grads = value_and_grad(v['params'])
  assert np.isfinite(value) and set(extra) == {t2i.VAE, t2i.CLIP}
  jax.tree.map(np.testing.assert_array_equal, extra, {k: v[k] for k in extra})
  assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
  assert any(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grads))
  np.testing.assert_array_equal(task.prompt_batch([CAPTION_A, CAPTION_B], 2)['tokens'],
                                batch['tokens'])
  with pytest.raises(ConfigError, match="'violet'.*not in the vocabulary"):
    task.prompt_batch(['a violet circle above a blue square'], 1)
  assert task.prompt_batch(None, 3)['tokens'].shape == (3, 8)  # the held-out captions


def test_config_trains_resumes_and_samples_alike_on_eight_devices(tmp_path, data_dir):
  """The tiny config (tiny frozen CLIP and KL runs trained first, 2 steps each) trains 4
  steps and resumes from step 2 bitwise; the sampler draws the same images on 1 and 8
  devices from text prompts through the CLI."""
  from train import loop

  def train(workdir, **overrides):
    config = _tiny_config(data_dir, data__eval_split='test[:8]', **overrides)
    if workdir.name != 'straight':  # the resumed run restores the straight run's frozen runs
      for name in config.frozen:
        config.frozen[name].workdir = str(tmp_path / 'straight' / f'frozen_{name}')
    return loop.train_and_evaluate(config, str(workdir))

  result = train(tmp_path / 'straight')
  assert np.isfinite(result['loss'])
  check_resumes_alike(SPEC, train, tmp_path)
  workdir = tmp_path / 'straight'
  args = ['--config', f'configs/{SPEC}', '--workdir', workdir,
          f'--config.data.data_dir={data_dir}', '--num_samples', '2', '--prompt', CAPTION_A,
          '--prompt', CAPTION_B]
  images = []
  for devices in (1, 8):
    proc = run_sample([*args, '--seed', '3'], data_dir, devices=devices)
    assert proc.returncode == 0, proc.stderr[-2000:]
    images.append(np.load(workdir / 'samples' / 'step4_seed3.npz')['images'])
  assert images[0].shape == (4, 32, 32, 3)
  np.testing.assert_array_equal(images[0], images[1])
  # (a bad word's one error line through this CLI path: tests/test_dalle.py; here in
  # test_loss_trains_no_frozen_collection_and_prompts_tokenize)
