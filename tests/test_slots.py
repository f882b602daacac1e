"""Slot Attention (arch/scene/slots.py): the ARI against pair counting and its invariances,
one round of slot attention against the paper's equations in numpy, permutation
equivariance in the slots and invariance in the inputs, implicit differentiation, more
rounds at evaluation, the bilinear mask resize, the decoder's composition, the multishapes
dataset, and the tiny config trained with an exact resume, on 8 devices, and
through the sampler."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arch.scene import slots
from arch.task import ConfigError
from conftest import (REPO, check_eight_devices, check_resumes_from_step_2, read_metrics,
                      train_spec)
from train.datasets import multishapes

SPEC = 'slots_shapes.py:tiny'
_jit_ari = jax.jit(slots.adjusted_rand_index, static_argnums=(3, 4))


def _ari(true, pred, weights=None, num_true=None, num_pred=None):
  true, pred = np.atleast_2d(true), np.atleast_2d(pred)
  weights = np.ones(true.shape, bool) if weights is None else np.atleast_2d(weights)
  return np.asarray(_jit_ari(
      jnp.asarray(true), jnp.asarray(pred), jnp.asarray(weights),
      num_true or int(true.max()) + 1, num_pred or int(pred.max()) + 1))


def _ari_by_pairs(true, pred):
  """ARI from its definition over every pair of points: pairs together in both labellings
  against the count chance would give with the same cluster sizes."""
  n = len(true)
  both = same_true = same_pred = 0
  for i in range(n):
    for j in range(i + 1, n):
      t, p = true[i] == true[j], pred[i] == pred[j]
      both += t and p
      same_true += t
      same_pred += p
  total = n * (n - 1) / 2
  expected = same_true * same_pred / total
  top = (same_true + same_pred) / 2
  return 1.0 if top == expected else (both - expected) / (top - expected)


def test_ari_equals_pair_counting_on_foreground_points():
  rng = np.random.default_rng(0)
  for trial in range(6):
    n = 24
    true = rng.integers(0, 4, (3, n))
    # one labelling random, one close to the truth, one a refinement of it
    pred = np.stack([rng.integers(0, 5, n), np.where(rng.random(n) < 0.2, 4, true[1]),
                     true[2] * 2 + (rng.random(n) < 0.5)])
    fg = rng.random((3, n)) < 0.7
    fg[:, :3] = True
    got = _ari(true, pred, fg, 4, 10)
    want = [_ari_by_pairs(true[i][fg[i]], pred[i][fg[i]]) for i in range(3)]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=str(trial))
  # by hand: contingency [[2, 1, 0], [0, 1, 2]]: (2 - 1.2) / (4.5 - 1.2)
  np.testing.assert_allclose(_ari([0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 2, 2]), [0.8 / 3.3],
                             rtol=1e-6)


def test_ari_invariances():
  rng = np.random.default_rng(1)
  true = rng.integers(1, 5, 40)
  pred = rng.integers(0, 5, 40)
  base = _ari(true, pred, num_true=5, num_pred=5)
  # renaming the segments of either labelling changes nothing
  np.testing.assert_allclose(_ari(np.array([0, 4, 3, 2, 1])[true], pred, num_true=5,
                                  num_pred=5), base, rtol=1e-6)
  np.testing.assert_allclose(_ari(true, np.array([3, 0, 4, 1, 2])[pred], num_true=5,
                                  num_pred=5), base, rtol=1e-6)
  # the same partition under other names scores 1, a single segment 0 and a random one ~0
  np.testing.assert_allclose(_ari(true, (true * 3) % 5, num_pred=7), [1.0], rtol=1e-6)
  np.testing.assert_allclose(_ari(true, np.zeros_like(true)), [0.0], atol=1e-7)
  assert abs(base[0]) < 0.1
  # both labellings one cluster: they agree (1, as the reference implementations define it)
  np.testing.assert_allclose(_ari(np.ones(5, int), np.full(5, 2)), [1.0])
  # points outside the foreground do not count, whatever their labels
  fg = true > 2
  scrambled = np.where(fg, true, rng.integers(0, 5, 40))
  np.testing.assert_allclose(_ari(true, scrambled, fg, 5, 5), [1.0], rtol=1e-6)


def test_kmeans_separates_distinct_colours():
  rng = np.random.default_rng(2)
  centres = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 1]])
  labels = rng.integers(0, 3, 60)
  labels[:3] = [0, 1, 2]
  points = centres[labels] + rng.normal(0, 0.05, (60, 3))
  got = slots.kmeans_labels(jnp.asarray(points[None], jnp.float32), 3, 5)
  np.testing.assert_allclose(_ari(labels, np.asarray(got)[0], num_pred=3), [1.0], rtol=1e-6)


def _slot_attention(iterations=2):
  module = slots.SlotAttention(iterations=iterations, mlp_hidden=12)
  rng = np.random.default_rng(3)
  inputs = jnp.asarray(rng.normal(size=(2, 10, 6)), jnp.float32)
  init = jnp.asarray(rng.normal(size=(2, 4, 8)), jnp.float32)
  variables = jax.jit(module.init)(jax.random.key(0), inputs, init)
  return module, variables, inputs, init


def test_one_round_follows_the_papers_equations():
  """Algorithm 1 of the paper in numpy: LayerNorm, softmax over the slots, weights + eps
  renormalised over the inputs, GRU, residual MLP."""
  module, variables, inputs, init = _slot_attention(iterations=1)
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), variables['params'])
  x, s = np.asarray(inputs, np.float64), np.asarray(init, np.float64)

  def norm(v, q):
    mu, var = v.mean(-1, keepdims=True), v.var(-1, keepdims=True)
    return (v - mu) / np.sqrt(var + 1e-6) * q['scale'] + q['bias']

  dense = lambda v, q: v @ q['kernel'] + q.get('bias', 0.0)
  sigmoid = lambda v: 1 / (1 + np.exp(-v))
  x = norm(x, p['norm_inputs'])
  k, v = dense(x, p['key']), dense(x, p['value'])
  q = dense(norm(s, p['norm_slots']), p['query'])
  logits = np.einsum('bks,bns->bkn', q, k) / np.sqrt(8)
  attn = np.exp(logits - logits.max(1, keepdims=True))
  attn /= attn.sum(1, keepdims=True)               # over the slots
  w = (attn + 1e-8) / (attn + 1e-8).sum(2, keepdims=True)
  u = np.einsum('bkn,bns->bks', w, v)
  g = p['gru']
  r = sigmoid(dense(u, g['ir']) + dense(s, g['hr']))
  z = sigmoid(dense(u, g['iz']) + dense(s, g['hz']))
  cand = np.tanh(dense(u, g['in']) + r * dense(s, g['hn']))
  s = (1 - z) * cand + z * s
  s = s + dense(np.maximum(dense(norm(s, p['norm_mlp']), p['mlp_hidden']), 0), p['mlp_out'])
  got, got_attn = jax.jit(module.apply)(variables, inputs, init)
  np.testing.assert_allclose(got_attn, attn, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(got, s, rtol=1e-4, atol=1e-5)


def test_slots_are_permutation_equivariant_and_inputs_a_set():
  module, variables, inputs, init = _slot_attention(iterations=3)
  apply = jax.jit(module.apply)
  out, attn = apply(variables, inputs, init)
  perm = np.array([2, 0, 3, 1])
  out_p, attn_p = apply(variables, inputs, init[:, perm])
  np.testing.assert_allclose(out_p, out[:, perm], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(attn_p, attn[:, perm], rtol=1e-5, atol=1e-6)
  order = np.random.default_rng(4).permutation(inputs.shape[1])
  out_i, attn_i = apply(variables, inputs[:, order], init)
  np.testing.assert_allclose(out_i, out, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(attn_i, attn[:, :, order], rtol=1e-5, atol=1e-6)
  # slots compete: each input's attention sums to 1 over the slots, and they differ
  np.testing.assert_allclose(attn.sum(1), 1.0, rtol=1e-5)
  assert np.abs(np.diff(np.asarray(out), axis=1)).max() > 1e-3


def test_implicit_grad_changes_the_gradient_not_the_slots():
  """Implicit differentiation: the same forward pass; no gradient reaches the initial
  slots (the rounds before the last are constants), while the full one does."""
  module, variables, inputs, init = _slot_attention(iterations=3)
  implicit = slots.SlotAttention(iterations=3, mlp_hidden=12, implicit_grad=True)
  out, attn = jax.jit(module.apply)(variables, inputs, init)
  out_i, attn_i = jax.jit(implicit.apply)(variables, inputs, init)
  np.testing.assert_array_equal(out_i, out)
  np.testing.assert_array_equal(attn_i, attn)
  grad = lambda m: jax.jit(jax.grad(lambda s: (m.apply(variables, inputs, s)[0] ** 2).sum()))
  assert np.abs(grad(module)(init)).max() > 1e-3
  np.testing.assert_array_equal(grad(implicit)(init), 0.0)


def test_model_composes_slots_into_the_image():
  model = slots.Model(num_slots=3, slot_size=8, iterations=1, mlp_hidden=8,
                      encoder_features=(4,), encoder_kernel=3, decoder_init=4,
                      decoder_features=(4, 4), decoder_strides=(2, 1), decoder_kernel=3,
                      decoder_upsample='nearest')
  x = jnp.asarray(np.random.default_rng(5).uniform(-1, 1, (2, 8, 8, 3)), jnp.float32)
  noise = jax.random.normal(jax.random.key(2), (2, 3, 8))
  variables = jax.jit(model.init)(jax.random.key(0), x, noise)
  # the slots' order is arbitrary: permuting the noise permutes every per-slot output
  perm = np.array([1, 2, 0])
  both = jax.jit(jax.vmap(model.apply, (None, None, 0)))(
      variables, x, jnp.stack([noise, noise[:, perm]]))
  out, out_p = jax.tree.map(lambda a: a[0], both), jax.tree.map(lambda a: a[1], both)
  assert out['rgb'].shape == (2, 3, 8, 8, 3) and out['attn'].shape == (2, 3, 64)
  np.testing.assert_allclose(out['masks'].sum(1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(out['recon'], (out['rgb'] * out['masks'][..., None]).sum(1),
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out_p['masks'], out['masks'][:, perm], rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(out_p['recon'], out['recon'], rtol=1e-4, atol=1e-5)
  with pytest.raises(ConfigError, match='decoder makes 8x8'):
    jax.eval_shape(model.init, jax.random.key(0), x[:, :4, :4], noise)


def test_area_pool_and_upsample():
  """area_pool is the mean of each f x f block; upsample repeats each pixel over its block,
  so pooling an upsampled image gives it back."""
  rng = np.random.default_rng(7)
  x = rng.normal(size=(2, 6, 4, 3)).astype(np.float32)
  want = x.reshape(2, 3, 2, 2, 2, 3).mean((2, 4))
  np.testing.assert_allclose(slots.area_pool(jnp.asarray(x), 2), want, rtol=1e-6)
  masks = rng.integers(0, 5, (2, 3, 2))
  up = np.asarray(slots.upsample(jnp.asarray(masks), 2))
  np.testing.assert_array_equal(up, np.kron(masks, np.ones((1, 2, 2), int)))
  np.testing.assert_allclose(slots.area_pool(slots.upsample(jnp.asarray(x), 3, (1, 2)), 3), x,
                             rtol=1e-6)
  with pytest.raises(ConfigError, match='does not divide'):
    slots.area_pool(jnp.asarray(x), 4)


def test_bilinear_masks_recover_boundaries_inside_a_block():
  """Masks of a 2x-pooled image resized back: 'nearest' gives a whole block to one slot,
  'bilinear' moves the boundary inside the block. On the one-hot test masks of multishapes
  pooled to 16x16 (the masks a perfect model would make), the bilinear argmax scores a
  higher fg_ari than the nearest one."""
  masks = np.stack([multishapes.render(np.random.default_rng(i))[1] for i in range(12)])
  masks = masks.astype(np.int32)
  k = int(masks.max()) + 1
  pooled = slots.area_pool(jnp.asarray(np.eye(k)[masks], jnp.float32), 2)  # (B, 16, 16, K)
  pooled = jnp.moveaxis(pooled, -1, 1)
  bilinear, nearest = (slots.resize_masks(pooled, 2, m) for m in ('bilinear', 'nearest'))
  assert bilinear.shape == nearest.shape == (12, k, 32, 32)
  np.testing.assert_allclose(bilinear.sum(1), 1.0, rtol=1e-5)
  np.testing.assert_array_equal(nearest[:, :, ::2, ::2], pooled)
  truth = masks.reshape(12, -1)
  score = lambda m: _ari(truth, np.asarray(m.argmax(1)).reshape(12, -1), truth > 0, k, k).mean()
  assert score(bilinear) > score(nearest) + 0.05 and score(bilinear) > 0.8


def test_eval_iterations_run_the_trained_weights_longer():
  """`eval_iterations` evaluates the same weights with more rounds: the metrics of a
  model built with that many rounds, and different from the trained count's."""
  from conftest import load_config
  from train import core
  rng = np.random.default_rng(8)
  scenes = [multishapes.render(rng) for _ in range(4)]
  batch = {'image': np.stack([s[0] for s in scenes]), 'mask': np.stack([s[1] for s in scenes])}

  def task(iterations, eval_iterations):
    config = load_config(SPEC)
    config.model.iterations = iterations
    config.task_kwargs.eval_iterations = eval_iterations
    return core.load_task(config)

  variables = jax.jit(task(2, 0).init)(jax.random.key(0), batch)
  run = lambda t: jax.jit(t.evaluate)(variables, batch)['loss']
  more = run(task(2, 4))
  np.testing.assert_allclose(more, run(task(4, 0)), rtol=1e-6)
  assert np.abs(np.asarray(more) - np.asarray(run(task(2, 0)))).max() > 1e-7


@pytest.mark.parametrize('upsample', ['transpose', 'nearest'])
def test_decoder_reaches_the_image_size(upsample):
  decoder = slots.BroadcastDecoder(channels=3, init_size=4, features=(4, 4, 4),
                                   strides=(2, 2, 1), kernel=3, upsample=upsample)
  out = jax.eval_shape(lambda s: decoder.init_with_output(jax.random.key(0), s)[0],
                       jnp.zeros((2, 5, 8)))
  assert out.shape == (2, 5, 16, 16, 4)


def test_per_pixel_decoder_equals_the_broadcast_one():
  """With 1x1 stride-1 layers the decoder maps each slot once and the position embedding
  once (Pointwise, factored): the numbers of tiling the slot over the grid, adding the
  embedding and applying the layers to every pixel, with nn.Conv's parameter shapes."""
  import flax.linen as nn
  decoder = slots.BroadcastDecoder(3, 6, (5, 4), (1, 1), 1, 'transpose', 'he')
  s = jnp.asarray(np.random.default_rng(9).normal(size=(2, 3, 8)), jnp.float32)
  variables = jax.jit(decoder.init)(jax.random.key(1), s)
  p = variables['params']
  assert p['deconv0']['kernel'].shape == (1, 1, 8, 5) and p['deconv1']['bias'].shape == (4,)
  dense = p['position']['dense']
  x = s.reshape(6, 1, 1, 8) + slots.position_grid(6, 6) @ dense['kernel'] + dense['bias']
  for i in range(2):
    x = nn.relu(x @ p[f'deconv{i}']['kernel'][0, 0] + p[f'deconv{i}']['bias'])
  want = nn.ConvTranspose(4, (3, 3), padding='SAME').apply({'params': p['out']}, x)
  np.testing.assert_allclose(jax.jit(decoder.apply)(variables, s), want.reshape(2, 3, 6, 6, 4),
                             rtol=1e-5, atol=1e-5)


def test_paper_variant_shapes():
  """The CLEVR network on 128x128 images, by shape alone (no weights allocated)."""
  from conftest import load_config
  from train import core
  config = load_config('slots_shapes.py:variant=paper')
  task = core.load_task(config)
  batch = task.example_batch(2)
  variables = jax.eval_shape(task.init, jax.random.key(0), batch)
  kernels = variables['params']['decoder']
  assert [kernels[f'deconv{i}']['kernel'].shape for i in range(5)] == [(5, 5, 64, 64)] * 5
  assert variables['params']['slots_mu'].shape == (1, 1, 64)
  out = jax.eval_shape(
      lambda v, b: slots.Model(**config.model).apply(v, slots.to_unit(b['image']),
                                                     jnp.zeros((2, 7, 64))), variables, batch)
  assert out['masks'].shape == (2, 7, 128, 128) and out['recon'].shape == (2, 128, 128, 3)


def test_multishapes_scenes():
  rng = np.random.default_rng(6)
  for _ in range(20):
    image, mask, count = multishapes.render(rng)
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8 and 2 <= count <= 4
    sizes = np.bincount(mask.ravel(), minlength=count + 1)
    assert len(sizes) == count + 1 and sizes.min() >= multishapes.MIN_VISIBLE
    # every object is one colour patch, far from the background and the other objects
    colours = np.array([np.median(image[mask == i], 0) for i in range(count + 1)]) / 255
    gaps = np.linalg.norm(colours[:, None] - colours[None], axis=-1)[np.triu_indices(count + 1, 1)]
    assert gaps.min() > multishapes.MIN_COLOUR_GAP - 0.15
  first = lambda seed: multishapes.render(np.random.default_rng(seed))[0]
  np.testing.assert_array_equal(first(11), first(11))
  assert multishapes.SPLITS['train'][1] != multishapes.SPLITS['test'][1]


def test_config_trains_resumes_and_samples(tmp_path, data_dir):
  """4 tiny steps (checkpoints at 2 and 4, an eval on 16 test images): resuming from step 2
  gives the same steps 3-4 and state bitwise; then `train.sample` draws each eval image, its
  objects, reconstruction, segmentation and slots side by side."""
  result = train_spec(SPEC, tmp_path / 'straight', data_dir, data__eval_split='test[:16]')
  assert {'fg_ari', 'ari', 'fg_ari_one_segment', 'fg_ari_kmeans_rgb', 'loss'} <= set(result)
  assert abs(result['fg_ari_one_segment']) < 1e-6 and -1 <= result['fg_ari'] <= 1
  check_resumes_from_step_2(SPEC, train_spec, tmp_path, data_dir)

  from train import sample
  workdir = tmp_path / 'straight'
  assert sample.main(['--config', os.path.join(REPO, 'configs', SPEC), '--workdir', str(workdir),
                      '--num_samples', '3', f'--config.data.data_dir={data_dir}']) == 0
  saved = np.load(workdir / 'samples' / 'step4_seed0.npz')['images']
  assert saved.shape == (3, 32, 32 * (4 + 3), 3)   # input, objects, recon, segments, 3 slots
  from train import data as data_lib
  test = data_lib.builder('multishapes', data_dir).as_data_source('test')
  for i in range(3):
    np.testing.assert_array_equal(saved[i, :, :32], test[i]['image'])
  assert os.path.isfile(workdir / 'samples' / 'step4_seed0.png')


def test_eight_devices_give_the_loss_of_one(tmp_path):
  """Under jit every step's loss and the eval's loss on 8 simulated devices equal one
  device's to float rounding (XLA may fuse the per-device slices of the area pooling
  differently: 2e-7 relative was seen), and the eval's fg_ari exactly. (Under pmap each
  device draws its own initial slots, by design of the loop's per-device rng, so the
  losses differ there.)"""
  check_eight_devices(SPEC, tmp_path, ('jit',), close=('loss',),
                      args=['--config.data.eval_split=test[:16]'], evals=('fg_ari',))
  one, eight = (read_metrics(tmp_path / run, 'eval')[4] for run in ('one', 'jit'))
  assert eight['loss'] == pytest.approx(one['loss'], rel=1e-5)
  assert abs(one['fg_ari_one_segment']) < 1e-6
