"""ViT and DeiT: published sizes, patch embedding, pooling, the distillation objective and
a frozen teacher restored through the loop."""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from arch.images import random_translate
from arch.vision import distillation, vit
from conftest import load_config as _config, read_metrics

# torchvision (vit_*) and timm (Ti, S and the distilled DeiTs) parameter counts.
REFERENCE = {
    ('vit', 'B/16'): 86_567_656, ('vit', 'B/32'): 88_224_232, ('vit', 'L/16'): 304_326_632,
    ('vit', 'L/32'): 306_535_400, ('vit', 'H/14'): 632_045_800,
    ('vit', 'Ti/16'): 5_717_416, ('vit', 'S/16'): 22_050_664,
    ('deit', 'Ti'): 5_910_800, ('deit', 'S'): 22_436_432, ('deit', 'B'): 87_338_192,
}


def _count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nn.meta.unbox(tree)))


@pytest.mark.parametrize('family,variant', sorted(REFERENCE))
def test_imagenet_configs_have_the_reference_counts(family, variant):
  from train import summary
  config = _config(f'{family}_imagenet.py:variant={variant}')
  assert _count(summary.param_shapes(config)['params']) == REFERENCE[family, variant]


def test_every_variant_builds_at_224():
  for kw in [*vit.VARIANTS.values(), *vit.DEIT_VARIANTS.values()]:
    model = vit.Model(num_classes=7, **kw)
    out = jax.eval_shape(lambda: model.init_with_output(
        jax.random.key(0), jnp.zeros((2, 224, 224, 3)))[0])
    assert out.shape == (2, 7)


def test_patch_embedding_is_one_linear_map_per_patch():
  """d(token k)/d(pixels) is non-zero exactly on patch k, in row-major patch order."""
  from arch.layers.embed import PatchEmbed
  embed = PatchEmbed(8, 4)
  x = jax.random.normal(jax.random.key(0), (1, 8, 12, 3))
  params = embed.init(jax.random.key(1), x)
  for k in range(6):
    g = jax.grad(lambda x: embed.apply(params, x)[0, k].sum())(x)[0]
    row, col = divmod(k, 3)
    support = np.abs(np.asarray(g)).sum(-1) > 0
    want = np.zeros((8, 12), bool)
    want[4 * row:4 * row + 4, 4 * col:4 * col + 4] = True
    np.testing.assert_array_equal(support, want)


def test_wrong_image_size_is_a_clear_error():
  model = vit.Model(**vit.TINY, num_classes=3)
  with pytest.raises(ValueError, match='position table holds 64'):
    model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 1)))
  with pytest.raises(ValueError, match='multiple of the patch size'):
    model.init(jax.random.key(0), jnp.zeros((1, 30, 30, 1)))


@pytest.mark.parametrize('pool', ['cls', 'mean'])
def test_pooled_token_is_what_the_head_reads(pool):
  """num_classes=0 returns the representation; the head is an affine map of it."""
  kw = dict(vit.TINY, pool=pool)
  x = jax.random.uniform(jax.random.key(0), (3, 32, 32, 1))
  full = vit.Model(**kw, num_classes=5)
  params = nn.meta.unbox(full.init(jax.random.key(1), x)['params'])
  params['head'] = jax.tree.map(lambda a: jax.random.normal(jax.random.key(2), a.shape),
                                params['head'])  # it starts at zero
  head = params['head']
  rep = vit.Model(**kw, num_classes=0).apply({'params': {k: v for k, v in params.items()
                                                          if k != 'head'}}, x)
  logits = full.apply({'params': params}, x)
  np.testing.assert_allclose(logits, rep @ head['kernel'] + head['bias'], rtol=1e-5, atol=1e-5)
  assert ('cls_token' in params) == (pool == 'cls')


def test_deit_returns_both_heads_in_training_and_their_mean_otherwise():
  model = vit.Model(**vit.TINY, distilled=True, num_classes=4)
  x = jax.random.uniform(jax.random.key(0), (2, 32, 32, 1))
  variables = model.init(jax.random.key(1), x)
  params = jax.tree.map(lambda a: a + 0.1 * jax.random.normal(jax.random.key(3), a.shape),
                        nn.meta.unbox(variables['params']))  # heads start at zero
  cls, dist = model.apply({'params': params}, x, train=True)
  assert cls.shape == dist.shape == (2, 4) and not np.allclose(cls, dist)
  np.testing.assert_allclose(model.apply({'params': params}, x), (cls + dist) / 2, atol=1e-6)
  assert params['pos_embed'].shape == (1, 64 + 2, 64)


def _task(mode):
  from train import loop
  from train import core
  config = _config(f'deit_digits.py:tiny,distillation={mode}')  # random shifts of 2 px
  core.resolve_frozen(config)
  return distillation.make(config)


@pytest.mark.parametrize('mode', ['hard', 'soft', 'none'])
def test_distillation_loss_is_deits(mode):
  task = _task(mode)
  batch = {'image': jax.random.randint(jax.random.key(0), (6, 32, 32, 1), 0, 256).astype(
      jnp.uint8), 'label': jnp.arange(6) % 10}
  variables = task.init(jax.random.key(1), batch)
  variables = jax.tree.map(lambda a: a + 0.3 * jax.random.normal(jax.random.key(2), a.shape)
                           if a.dtype == jnp.float32 else a, nn.meta.unbox(variables))
  total, (metrics, updates) = task.loss(variables, batch, jax.random.key(3))
  model = vit.Model(**_config('deit_digits.py:tiny').model)
  # The student's augmented view, which the teacher must label too (DeiT).
  aug_rng, drop_rng = jax.random.split(jax.random.key(3))
  x = random_translate(batch['image'].astype(jnp.float32) / 255.0, aug_rng, 2)
  cls, dist = model.apply({'params': variables['params']}, x, train=True,
                          rngs={'dropout': drop_rng})
  ce = lambda z, y: optax.softmax_cross_entropy_with_integer_labels(z, y).mean()
  if mode == 'none':
    want = 0.5 * ce(cls, batch['label']) + 0.5 * ce(dist, batch['label'])
    assert 'teacher' not in variables
  else:
    from arch.vision import resnet
    from train import loop
    from train import core
    config = _config('deit_digits.py:tiny')
    core.resolve_frozen(config)
    teacher = resnet.Model(**config.frozen.teacher.config.model)
    t = teacher.apply(variables['teacher'], x, train=False)
    if mode == 'hard':
      want = 0.5 * ce(cls, batch['label']) + 0.5 * ce(dist, t.argmax(-1))
    else:
      kl = (jax.nn.softmax(t / 3) * (jax.nn.log_softmax(t / 3) - jax.nn.log_softmax(dist / 3)))
      want = 0.9 * ce(cls, batch['label']) + 0.1 * 9 * kl.sum(-1).mean()
    # The teacher gets no gradient and leaves the step unchanged.
    g = jax.grad(lambda tv: task.loss({**variables, 'teacher': tv}, batch,
                                      jax.random.key(3))[0])(variables['teacher'])
    assert all(float(jnp.abs(l).max()) == 0 for l in jax.tree.leaves(g))
    assert jax.tree.all(jax.tree.map(lambda a, b: bool((a == b).all()),
                                     updates['teacher'], variables['teacher']))
  np.testing.assert_allclose(total, want, rtol=1e-5)


def test_missing_teacher_is_a_config_error():
  from arch.task import ConfigError
  config = _config('deit_digits.py:tiny,distillation=none')
  config.task_kwargs.distillation = 'hard'
  with pytest.raises(ConfigError, match='needs a teacher'):
    distillation.make(config)


def test_deit_digits_trains_its_teacher_then_restores_it(tmp_path, data_dir):
  """A fresh workdir: the loop trains the frozen teacher in WORKDIR/frozen_teacher, then
  the student's eval reports that teacher's accuracy exactly (the restored weights)."""
  from train import loop
  from train import core
  config = _config('deit_digits.py:tiny', total_steps=2, eval_every=2, log_every=1,
                   batch_size=8, data__data_dir=data_dir)
  core.resolve_frozen(config)
  for k, v in dict(total_steps=3, eval_every=3, log_every=3, batch_size=8).items():
    config.frozen.teacher.config[k] = v
  result = loop.train_and_evaluate(config, str(tmp_path))
  teacher_eval = read_metrics(tmp_path / 'frozen_teacher', 'eval')[3]
  assert result['teacher_accuracy'] == pytest.approx(teacher_eval['accuracy'], abs=1e-6)
  assert {'loss', 'accuracy', 'agreement'} <= set(result)
  assert sorted(read_metrics(tmp_path)) == [1, 2]
  # Resuming reads the teacher from the student's own checkpoint.
  config.total_steps = 3
  config.frozen.teacher.workdir = str(tmp_path / 'nowhere')
  result = loop.train_and_evaluate(config, str(tmp_path))
  assert result['teacher_accuracy'] == pytest.approx(teacher_eval['accuracy'], abs=1e-6)
  assert not os.path.exists(tmp_path / 'nowhere')
