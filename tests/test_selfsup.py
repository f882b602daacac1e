"""SimCLR, MoCo and RotNet: losses against brute force, MoCo's momentum encoder and queue,
augmentations, published backbone sizes, and each digits config through the loop."""


import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arch.multimodal import augment, contrastive, moco
from conftest import load_config as _config

RESNET50_TRUNK = 23_508_032  # torchvision resnet50 without its fc layer
HEAD = 2048 * 2048 + 2048 + 2048 * 128 + 128


@pytest.mark.parametrize('name,want', [('simclr', RESNET50_TRUNK + HEAD),
                                       ('moco', RESNET50_TRUNK + HEAD),
                                       ('rotnet', RESNET50_TRUNK + 2048 * 4 + 4)])
def test_resnet50_variants_count_the_trunk_and_head(name, want):
  from train import summary
  params = summary.param_shapes(_config(f'{name}_digits.py:variant=resnet50'))['params']
  assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params)) == want


def _brute_nt_xent(z1, z2, tau):
  z = np.concatenate([z1, z2])
  z = z / np.linalg.norm(z, axis=1, keepdims=True)
  n = len(z1)
  total = 0.0
  for i in range(2 * n):
    j = (i + n) % (2 * n)
    sims = np.array([z[i] @ z[k] / tau for k in range(2 * n) if k != i])
    pos = z[i] @ z[j] / tau
    total += -pos + np.log(np.exp(sims).sum())
  return total / (2 * n)


def test_nt_xent_is_simclrs_loss_and_the_same_over_devices():
  z1 = jax.random.normal(jax.random.key(0), (8, 5))
  z2 = jax.random.normal(jax.random.key(1), (8, 5))
  loss, _ = contrastive.nt_xent(z1, z2, 0.3)
  np.testing.assert_allclose(loss, _brute_nt_xent(np.asarray(z1), np.asarray(z2), 0.3),
                             rtol=1e-5)
  # Four "devices" of 2 rows each (pmap's view): every device's mean equals the global one.
  per_device = jax.vmap(lambda a, b: contrastive.nt_xent(a, b, 0.3, 'd')[0], axis_name='d')(
      z1.reshape(4, 2, 5), z2.reshape(4, 2, 5))
  np.testing.assert_allclose(per_device.mean(), loss, rtol=1e-5)


def test_info_nce_and_clip_loss_against_brute_force():
  q = np.asarray(jax.random.normal(jax.random.key(0), (4, 3)))
  k = np.asarray(jax.random.normal(jax.random.key(1), (4, 3)))
  queue = np.asarray(contrastive.l2_normalize(jax.random.normal(jax.random.key(2), (6, 3))))
  loss, _ = contrastive.info_nce(q, k, queue, 0.2)
  n = lambda a: a / np.linalg.norm(a, axis=-1, keepdims=True)
  logits = np.concatenate([(n(q) * n(k)).sum(1, keepdims=True), n(q) @ queue.T], 1) / 0.2
  want = np.mean(np.log(np.exp(logits).sum(1)) - logits[:, 0])
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  # CLIP: symmetric; swapping the towers gives the same loss.
  a, _ = contrastive.clip_loss(q, k, jnp.log(10.0))
  b, _ = contrastive.clip_loss(k, q, jnp.log(10.0))
  np.testing.assert_allclose(a, b, rtol=1e-6)
  sim = 10 * n(q) @ n(k).T
  ce = lambda m: np.mean(np.log(np.exp(m).sum(1)) - np.diag(m))
  np.testing.assert_allclose(a, (ce(sim) + ce(sim.T)) / 2, rtol=1e-5)


def test_views_are_random_per_example_and_keep_the_range():
  x = jax.random.uniform(jax.random.key(0), (6, 16, 16, 1))
  v1 = augment.views(jax.random.key(1), x)
  v2 = augment.views(jax.random.key(2), x)
  assert v1.shape == x.shape and float(v1.min()) >= 0 and float(v1.max()) <= 1
  assert not np.allclose(v1, v2)
  # A crop of the whole image at aspect 1 is the image.
  same = augment.random_resized_crop(jax.random.key(3), x, scale=(1.0, 1.0), ratio=(1.0, 1.0))
  np.testing.assert_allclose(same, x, atol=1e-5)


def test_rotate90_turns_each_image_by_its_own_count():
  x = jax.random.uniform(jax.random.key(0), (4, 5, 5, 2))
  k = jnp.array([0, 1, 2, 3])
  y = augment.rotate90(x, k)
  for i in range(4):
    np.testing.assert_array_equal(y[i], np.rot90(np.asarray(x[i]), i, axes=(0, 1)))


def _moco_task():
  config = _config('moco_digits.py:tiny', task_kwargs__momentum=0.9)
  return moco.make(config), config


def test_moco_key_encoder_is_a_momentum_average_without_gradient():
  task, config = _moco_task()
  batch = {'image': jax.random.randint(jax.random.key(0), (8, 16, 16, 1), 0, 256).astype(
      jnp.uint8), 'label': jnp.zeros(8, jnp.int32)}
  variables = nn.meta.unbox(task.init(jax.random.key(1), batch))
  # Make the two encoders differ, as they do after some steps.
  variables['params'] = jax.tree.map(
      lambda a: a + 0.1 * jax.random.normal(jax.random.key(2), a.shape), variables['params'])
  grads = jax.jit(jax.grad(lambda mom: task.loss({**variables, 'momentum': mom}, batch,
                                                 jax.random.key(3))[0]))(variables['momentum'])
  assert all(float(jnp.abs(g).max()) == 0 for g in jax.tree.leaves(grads))
  grads_q = jax.jit(jax.grad(lambda p: task.loss({**variables, 'params': p}, batch,
                                                 jax.random.key(3))[0]))(variables['params'])
  assert any(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grads_q))
  _, (_, new) = jax.jit(task.loss)(variables, batch, jax.random.key(3))
  want = jax.tree.map(lambda k, q: 0.9 * k + 0.1 * q, variables['momentum']['params'],
                      variables['params'])
  for a, b in zip(jax.tree.leaves(new['momentum']['params']), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  # The queue: this batch's 8 keys, unit length, written at the pointer, which advances.
  q = new['queue']
  assert int(q['ptr']) == 8
  np.testing.assert_allclose(np.linalg.norm(q['keys'][:8], axis=1), 1.0, rtol=1e-5)
  np.testing.assert_array_equal(q['keys'][8:], variables['queue']['keys'][8:])
  assert not np.allclose(q['keys'][:8], variables['queue']['keys'][:8])


def test_moco_queue_must_hold_whole_batches():
  from arch.task import ConfigError
  with pytest.raises(ConfigError, match='multiple of the global batch'):
    moco.make(_config('moco_digits.py:tiny', task_kwargs__queue_size=30))


@pytest.mark.parametrize('name', ['simclr', 'moco', 'rotnet'])
def test_digits_config_trains_and_probes(name, tmp_path, data_dir):
  from train import loop
  config = _config(f'{name}_digits.py:tiny', total_steps=2, eval_every=2, log_every=1,
                   data__data_dir=data_dir, evals__linear_probe__max_train_examples=64,
                   evals__knn__max_train_examples=64, evals__linear_probe__steps=20)
  result = loop.train_and_evaluate(config, str(tmp_path))
  assert set(result) == {'linear_probe_accuracy', 'knn_accuracy'}
  assert all(0 <= v <= 1 for v in result.values())
