"""CLIP and ALIGN: published sizes, the symmetric loss (also across devices), EOS pooling
and causality of the text tower, zero-shot from held-out prompts, and the digits configs
through the loop."""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arch.multimodal import clip
from arch import vocab
from arch.task import ConfigError
from conftest import REPO

# sum(p.numel() for p in transformers.CLIPModel(config).parameters()) for the configs of
# openai/clip-vit-{base-patch32, base-patch16, large-patch14, large-patch14-336}.
HF_CLIP = {'B/32': 151_277_313, 'B/16': 149_620_737, 'L/14': 427_616_513,
           'L/14-336': 427_944_193}
HF_ALIGN = 172_117_841  # AlignModel(AlignConfig())


def _config(spec, **overrides):
  from train import config_lib
  config = config_lib.load(os.path.join(REPO, 'configs', spec))
  for k, v in overrides.items():
    config_lib.override(config, k.replace('__', '.'), str(v))
  return config


def _count(spec):
  from train import summary
  params = summary.param_shapes(_config(spec))['params']
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))


@pytest.mark.parametrize('variant', list(HF_CLIP))
def test_variants_count_what_hugging_face_counts(variant):
  assert _count(f'clip_digits.py:variant={variant}') == HF_CLIP[variant]


def test_align_counts_what_hugging_face_counts():
  assert _count('align_digits.py:variant=B7-base') == HF_ALIGN


def _text_tower(**kw):
  return clip.TextTransformer(**dict(dict(vocab_size=vocab.BYTE_VOCAB_SIZE, max_length=12,
                                          width=16, depth=1, num_heads=2, mlp_dim=32), **kw))


def _tokens(key, b, t, eos_at):
  tokens = jax.random.randint(key, (b, t), vocab.NUM_SPECIAL, vocab.BYTE_VOCAB_SIZE)
  return tokens.at[jnp.arange(b), jnp.asarray(eos_at)].set(vocab.EOS)


def test_model_loss_is_symmetric_in_its_towers():
  # Two text towers of different widths: Model(a, b) on (x, y) against Model(b, a) on (y, x)
  # with the same weights swapped gives the same loss and the transposed logits.
  a, b = _text_tower(width=16), _text_tower(width=24, num_heads=3)
  x, y = _tokens(jax.random.key(0), 6, 12, [3] * 6), _tokens(jax.random.key(1), 6, 12, [5] * 6)
  m1 = clip.Model(a, b, embed_dim=8)
  m2 = clip.Model(b, a, embed_dim=8)
  p1 = jax.jit(m1.init)(jax.random.key(2), x, y)['params']
  swap = {'image_tower': 'text_tower', 'text_tower': 'image_tower',
          'visual_projection': 'text_projection', 'text_projection': 'visual_projection'}
  p2 = {swap.get(k, k): v for k, v in p1.items()}
  @jax.jit
  def run(p1, p2):
    forward = lambda m, u, v: clip.contrastive_loss(*clip._forward(m, u, v, False))[:2]
    return (m1.apply({'params': p1}, x, y, method=forward),
            m2.apply({'params': p2}, y, x, method=forward),
            m1.apply({'params': p1}, method='log_scale'))
  (loss1, logits1), (loss2, logits2), s1 = run(p1, p2)
  np.testing.assert_allclose(logits1, logits2.T, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(loss1, loss2, rtol=1e-6)
  np.testing.assert_allclose(float(jnp.exp(s1)), 1 / 0.07, rtol=1e-6)


def test_logit_scale_is_clamped_at_100():
  m = clip.Model(_text_tower(), _text_tower(), embed_dim=4)
  scale = lambda v: float(jnp.exp(m.apply({'params': {'logit_scale': jnp.asarray(v)}},
                                          method='log_scale')))
  assert scale(7.0) == pytest.approx(100.0)
  assert scale(2.0) == pytest.approx(np.exp(2.0))


def test_same_class_positives_and_the_loss_over_devices():
  img = jax.random.normal(jax.random.key(0), (8, 5))
  txt = jax.random.normal(jax.random.key(1), (8, 5))
  scale = jnp.log(10.0)
  plain, logits, _ = clip.contrastive_loss(img, txt, scale)
  # Distinct labels: every positive is the diagonal, as in CLIP's loss.
  distinct, _, _ = clip.contrastive_loss(img, txt, scale, jnp.arange(8))
  np.testing.assert_allclose(distinct, plain, rtol=1e-6)
  # Repeated labels: uniform targets over the same-label pairs, both directions.
  labels = jnp.array([0, 1, 0, 2, 1, 0, 3, 2])
  value, _, _ = clip.contrastive_loss(img, txt, scale, labels)
  m = np.asarray(logits, np.float64)
  same = (np.asarray(labels)[:, None] == np.asarray(labels)[None]).astype(float)
  t = same / same.sum(1, keepdims=True)
  ce = lambda z: np.mean(-(t * (z - np.log(np.exp(z).sum(1, keepdims=True)))).sum(1))
  np.testing.assert_allclose(value, (ce(m) + ce(m.T)) / 2, rtol=1e-5)
  # Four "devices" of two rows (pmap's view): gathered, each device's loss and the gradient
  # of their mean are the global batch's.
  split = lambda a: a.reshape(4, 2, *a.shape[1:])
  for lab in (None, labels):
    def per_device(i, t_, l_):
      return clip.contrastive_loss(i, t_, scale, l_, axis_name='d')[0]
    def sharded(i, t_):
      l_ = jnp.zeros((4, 2)) if lab is None else split(lab)
      return jax.vmap(lambda a, b, c: per_device(a, b, None if lab is None else c),
                      axis_name='d')(split(i), split(t_), l_).mean()
    whole = lambda i, t_: clip.contrastive_loss(i, t_, scale, lab)[0]
    both = jax.jit(lambda i, t_: (jax.value_and_grad(sharded, (0, 1))(i, t_),
                                  jax.value_and_grad(whole, (0, 1))(i, t_)))
    (v1, g1), (v2, g2) = both(img, txt)
    np.testing.assert_allclose(v1, v2, rtol=1e-5)
    for a, b in zip(g1, g2):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_text_pooling_reads_the_first_eos():
  tower = _text_tower()
  eos_at = [2, 5, 11, 7]
  tokens = _tokens(jax.random.key(0), 4, 12, eos_at)
  variables = jax.jit(tower.init)(jax.random.key(1), tokens)
  f = jax.jit(tower.apply)
  base = f(variables, tokens)
  # Anything after the EOS (more text, padding, another EOS) leaves the embedding alone.
  later = jnp.arange(12)[None] > jnp.asarray(eos_at)[:, None]
  noise = _tokens(jax.random.key(2), 4, 12, [0] * 4)
  for other in (noise, jnp.full_like(tokens, vocab.PAD), jnp.full_like(tokens, vocab.EOS)):
    np.testing.assert_allclose(f(variables, jnp.where(later, other, tokens)), base, atol=1e-6)
  # One token before it changes it.
  changed = f(variables, tokens.at[:, 1].set(vocab.NUM_SPECIAL + 3))
  assert np.all(np.abs(np.asarray(changed - base)).max(axis=1) > 1e-4)
  np.testing.assert_array_equal(clip.eos_positions(tokens), eos_at)
  no_eos = jnp.full((1, 12), vocab.NUM_SPECIAL + 7)
  assert int(clip.eos_positions(no_eos)[0]) == 11


def test_text_tower_is_causal():
  tower = _text_tower()
  tokens = _tokens(jax.random.key(0), 2, 12, [11, 11])
  variables = jax.jit(tower.init)(jax.random.key(1), tokens)

  @jax.jit
  def hidden(t):
    _, state = tower.apply(variables, t, capture_intermediates=True)
    return state['intermediates']['final_norm']['__call__'][0]  # (B, T, D)
  base = hidden(tokens)
  for j in (0, 4, 10):
    h = hidden(tokens.at[:, j].set(vocab.NUM_SPECIAL + 9 + j))
    np.testing.assert_allclose(h[:, :j], base[:, :j], atol=1e-6)
    assert float(jnp.abs(h[:, j:] - base[:, j:]).max(axis=-1).min()) > 1e-4


def test_zeroshot_ensembles_prompts_and_picks_the_closest_class():
  e = np.eye(3, dtype=np.float32)
  # Two prompts per class; class 0's are both e0, class 1's e1 and (e0 + e2) (so its
  # ensemble leans toward e0 and e2), class 2's e2 twice.
  prompts = np.stack([np.stack([e[0], e[1], e[2]]), np.stack([e[0], e[0] + e[2], e[2]])])
  classifier = clip.zeroshot_classifier(jnp.asarray(prompts))
  want = np.stack([e[0], e[1] + (e[0] + e[2]) / np.sqrt(2), e[2]])
  np.testing.assert_allclose(classifier, want / np.linalg.norm(want, axis=1, keepdims=True),
                             rtol=1e-6, atol=1e-6)
  images = jnp.asarray([[2.0, 0.1, 0.0], [0.3, 1.0, 0.3], [0.0, 0.0, 5.0], [0.5, 0.0, 0.45]])
  logits = clip.zeroshot_logits(images, classifier, jnp.log(10.0))
  cos = (images / jnp.linalg.norm(images, axis=1, keepdims=True)) @ classifier.T
  np.testing.assert_allclose(logits, 10 * cos, rtol=1e-5)
  np.testing.assert_array_equal(logits.argmax(1), [0, 1, 2, 0])


def test_eval_prompts_are_held_out():
  config = _config('clip_digits.py:tiny')
  train, held_out = config.task_kwargs.train_templates, config.task_kwargs.eval_templates
  assert not set(train) & set(held_out)
  names = config.task_kwargs.class_names
  seen = {c for row in clip.captions(train, names) for c in row}
  assert not seen & {c for row in clip.captions(held_out, names) for c in row}
  # A template whose captions were seen in training is refused.
  from train import config_lib
  config_lib.override(config, 'task_kwargs.eval_templates',
                      repr((*held_out, 'the number {1} written by hand')))
  with pytest.raises(ConfigError, match='held out'):
    clip.make(config)


def test_evaluate_classifies_by_the_held_out_prompt_ensemble():
  config = _config('clip_digits.py:tiny')
  task = clip.make(config)
  batch = {'image': jax.random.randint(jax.random.key(0), (5, 8, 8, 1), 0, 256).astype(
      jnp.uint8), 'label': jnp.array([0, 3, 7, 9, 3])}
  variables = nn.meta.unbox(jax.jit(task.init)(jax.random.key(1), batch))
  got = jax.jit(task.evaluate)(variables, batch)
  kw = config.task_kwargs
  model = clip.Model(clip.VisionTransformer(**config.model), clip.TextTransformer(
      **kw.text_model), kw.embed_dim)
  table = clip.caption_table(kw.eval_templates, kw.class_names, kw.text_length)
  n, k, t = table.shape

  @jax.jit
  def manual(variables):
    txt = model.apply(variables, jnp.asarray(table.reshape(n * k, t)), method='encode_text')
    img = model.apply(variables, jax.image.resize(batch['image'] / 255.0, (5, 16, 16, 1),
                                                  'bilinear'), method='encode_image')
    return clip.zeroshot_logits(img, clip.zeroshot_classifier(txt.reshape(n, k, -1)),
                                jnp.log(1 / 0.07))
  np.testing.assert_array_equal(got['zeroshot_accuracy'],
                                manual(variables).argmax(1) == batch['label'])


@pytest.mark.parametrize('spec', ['clip_digits.py:tiny', 'clip_digits.py:tiny,image=resnet',
                                  'align_digits.py:tiny'])
def test_towers_compose(spec):
  from train import summary
  variables = summary.param_shapes(_config(spec))
  assert {'image_tower', 'text_tower', 'text_projection', 'logit_scale'} <= set(
      variables['params'])


def test_digits_config_trains_and_evaluates(tmp_path, data_dir):
  from train import loop
  config = _config('clip_digits.py:tiny', total_steps=2, eval_every=2, log_every=1,
                   data__data_dir=data_dir, evals__linear_probe__max_train_examples=64,
                   evals__knn__max_train_examples=64, evals__linear_probe__steps=20)
  result = loop.train_and_evaluate(config, str(tmp_path))
  assert {'zeroshot_accuracy', 'linear_probe_accuracy', 'knn_accuracy'} <= set(result)
  assert 0 <= result['zeroshot_accuracy'] <= 1
