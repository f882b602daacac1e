"""MAE: patchify, per-example masking, an encoder that never sees masked patches, a loss
over masked patches only, the published size, and the digits config through the loop."""


import jax
import numpy as np

from arch.multimodal import mae
from conftest import load_config as _config


def test_b16_counts_hugging_faces_trainable_parameters():
  from train import summary
  params = summary.param_shapes(_config('mae_digits.py:variant=B/16'))['params']
  # ViTMAEForPreTraining: 111,907,840 in parameters(), of which 252,160 are the frozen
  # sin-cos position tables (197 x 768 + 197 x 512), constants here.
  assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params)) == 111_907_840 - 252_160


def test_patchify_round_trip_and_order():
  x = jax.random.normal(jax.random.key(0), (2, 8, 12, 3))
  p = mae.patchify(x, 4)
  assert p.shape == (2, 6, 48)
  np.testing.assert_array_equal(p[:, 4].reshape(2, 4, 4, 3), x[:, 4:8, 4:8])  # row 1, col 1
  np.testing.assert_array_equal(mae.unpatchify(p, 4, 8, 12), x)


def test_masking_keeps_a_random_quarter_per_example():
  keep, mask, restore = mae.random_masking(jax.random.key(0), 5, 16, 0.75)
  assert keep.shape == (5, 4) and mask.shape == (5, 16)
  np.testing.assert_array_equal(mask.sum(1), 12)
  for b in range(5):
    assert set(np.asarray(keep[b]).tolist()) == set(np.flatnonzero(np.asarray(mask[b]) == 0))
  assert len({tuple(np.sort(np.asarray(k))) for k in keep}) > 1  # differs across examples


def test_predictions_never_see_masked_pixels_and_only_masked_patches_count():
  model = mae.Model(**mae.TINY)
  x = jax.random.uniform(jax.random.key(0), (1, 16, 16, 1))
  variables = model.init(jax.random.key(1), x, jax.random.key(2))
  rng = jax.random.key(3)
  pred, mask = model.apply(variables, x, rng)
  masked = np.asarray(mask[0]) > 0
  # d(every prediction)/d(input): zero on every masked patch's pixels.
  g = jax.grad(lambda x: model.apply(variables, x, rng)[0].sum())(x)
  g_patch = np.abs(np.asarray(mae.patchify(g, 2)[0])).sum(-1)
  assert (g_patch[masked] == 0).all() and (g_patch[~masked] > 0).all()
  # The loss reads only the masked patches' predictions.
  target = mae.patchify(x, 2)
  loss = lambda p: mae.masked_mse(p, target, mask, norm_pix=True)
  bump_visible = pred.at[0, np.flatnonzero(~masked)].add(1.0)
  bump_masked = pred.at[0, np.flatnonzero(masked)[:1]].add(1.0)
  assert float(loss(bump_visible)) == float(loss(pred))
  assert float(loss(bump_masked)) != float(loss(pred))


def test_digits_config_trains_and_probes(tmp_path, data_dir):
  from train import loop
  config = _config('mae_digits.py:tiny', total_steps=2, eval_every=2, log_every=1,
                   data__data_dir=data_dir, evals__linear_probe__max_train_examples=64,
                   evals__knn__max_train_examples=64, evals__linear_probe__steps=20)
  result = loop.train_and_evaluate(config, str(tmp_path))
  assert set(result) == {'linear_probe_accuracy', 'knn_accuracy'}
