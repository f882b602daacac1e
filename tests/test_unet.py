"""U-Net: the paper's network, receptive-field locality, and the segmentation objective."""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arch.vision import unet
from conftest import REPO, read_metrics


def test_paper_unet_maps_572_to_388_with_23_conv_layers():
  model = unet.Model(**unet.PAPER)
  out, variables = jax.eval_shape(
      lambda: model.init_with_output(jax.random.key(0), jnp.zeros((1, 572, 572, 1))))
  assert out.shape == (1, 388, 388, 2)
  params = nn.meta.unbox(variables['params'])
  kernels = [p for p in jax.tree_util.tree_flatten_with_path(params)[0]
             if p[0][-1].key == 'kernel']
  # The paper's 23 convolutional layers: 18 3x3 convs, 4 2x2 up-convolutions, one 1x1.
  shapes = sorted(tuple(k[1].shape[:2]) for k in kernels)
  assert len(kernels) == 23
  assert shapes.count((3, 3)) == 18 and shapes.count((2, 2)) == 4 and shapes.count((1, 1)) == 1
  assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params)) == 31_030_658


@pytest.mark.parametrize('size,padding,ok', [(572, 'VALID', True), (188, 'VALID', True),
                                             (570, 'VALID', False), (48, 'SAME', True),
                                             (44, 'SAME', False)])
def test_input_sizes(size, padding, ok):
  depth = 4 if padding == 'VALID' else 3
  if ok:
    unet.output_size(size, depth, padding)
  else:
    with pytest.raises(ValueError, match='U-Net'):
      unet.output_size(size, depth, padding)


def test_unpadded_output_pixel_sees_only_its_tile():
  """With VALID convs, output (i, j) depends only on the input window it is centred in."""
  model = unet.Model(features=8, depth=1, padding='VALID', num_classes=1)
  x = jax.random.normal(jax.random.key(0), (1, 20, 20, 1))
  v = model.init(jax.random.key(1), x)
  out = model.apply(v, x)
  assert out.shape == (1, 4, 4, 1)  # 20 -> 16 -> 8 -> 4 -> 8 -> 4
  g = jax.grad(lambda x: model.apply(v, x)[0, 0, 0, 0])(x)[0, :, :, 0]
  support = np.argwhere(np.abs(np.asarray(g)) > 0)
  # Through the bottleneck: 2 convs (+4) <- up-conv (positions 0..4 <- 0..2) <- 2 convs
  # (0..6) <- pool (0..13) <- 2 convs (0..17): an 18x18 window at the top-left corner.
  assert support.min() == 0 and support.max() == 17


def test_miou_is_dataset_level():
  from arch.vision import segmentation
  from train import config_lib
  c = config_lib.load(os.path.join(REPO, 'configs/unet_segment.py:tiny'))
  task = segmentation.make(c)
  sums = {'loss': jnp.array(2.0), 'pixel_accuracy': jnp.array(1.5),
          'intersection': jnp.array([10.0, 0.0, 3.0, 0.0]),
          'union': jnp.array([20.0, 5.0, 3.0, 0.0])}
  out = task.finalize_eval(sums, 2.0)
  # class 3 never appears: mean over the three present classes (0.5, 0, 1)
  assert float(out['miou']) == pytest.approx(0.5)
  assert float(out['loss']) == 1.0 and float(out['pixel_accuracy']) == 0.75


@pytest.mark.parametrize('parallelism', ['jit', 'pmap'])
def test_batchnorm_statistics_across_8_devices_equal_one(tmp_path, data_dir, parallelism):
  """A BatchNorm U-Net trained on 8 simulated devices matches 1 device: statistics are
  over the global batch (jit: one array; pmap: the model's BatchNorm axis_name)."""
  from conftest import run_cli
  args = ['--config', 'configs/unet_segment.py:tiny', '--config.total_steps=4',
          '--config.log_every=1', '--config.eval_every=4', '--config.batch_size=16',
          '--config.eval_batch_size=64']
  one = tmp_path / 'one'
  many = tmp_path / 'many'
  p1 = run_cli([*args, '--workdir', one], data_dir, devices=1)
  p8 = run_cli([*args, '--workdir', many, f'--config.parallelism={parallelism}'], data_dir, devices=8)
  assert p1.returncode == 0 and p8.returncode == 0, p1.stderr[-3000:] + p8.stderr[-3000:]
  a, b = read_metrics(one), read_metrics(many)
  for s in range(1, 5):
    assert b[s]['loss'] == pytest.approx(a[s]['loss'], rel=2e-5), s
  ea, eb = read_metrics(one, 'eval')[4], read_metrics(many, 'eval')[4]
  assert eb['loss'] == pytest.approx(ea['loss'], rel=1e-4)  # eval uses the running stats


def test_batch_stats_are_checkpointed_and_restored(tmp_path):
  """BatchNorm running statistics are part of the train state: saved and restored."""
  from train import checkpoint, config_lib, core, mesh as mesh_lib
  from train.runner import Runner
  c = config_lib.load(os.path.join(REPO, 'configs/unet_segment.py:tiny'))
  task = core.load_task(c)
  runner = Runner(c, task, mesh_lib.make_mesh(c))
  state = runner.init(jax.random.key(0))
  assert jax.tree.leaves(state.extra['batch_stats'])
  stats = jax.tree.map(lambda x: x + jnp.arange(x.size, dtype=x.dtype).reshape(x.shape),
                       state.extra['batch_stats'])
  state = state.replace(extra={'batch_stats': stats})
  ckpt = checkpoint.Checkpointer(str(tmp_path), async_save=False)
  ckpt.save(7, state, {'next_index': 7})
  ckpt.wait()
  restored, data_state = ckpt.restore(7, runner.abstract_state)
  ckpt.close()
  assert data_state == {'next_index': 7}
  for a, b in zip(jax.tree.leaves(stats), jax.tree.leaves(restored.extra['batch_stats'])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
