"""C3D and the per-frame baseline (arch/vision/c3d.py) on moving_digits clips: the paper's
sizes, what each network can see of time, the motion target against the clip's true path,
and the config through the loop with an exact resume."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arch.vision import c3d
from conftest import check_resumes_from_step_2, load_config, train_spec
from train.datasets import moving_digits

SMALL = dict(num_classes=5, stages=((4,), (8,)), pools=((1, 2, 2), (2, 2, 2)),
             last_pool_padding=(0, 0, 0), fc=(16,), dropout_rate=0.0)


@pytest.mark.parametrize('variant, count', [('sports1m', 79_991_015), ('ucf101', 78_409_573)])
def test_published_layer_table_sizes(variant, count):
  """conv1a..conv5b (3x3x3, 64..512 wide), fc6 8192 -> 4096, fc7, the classifier, on
  16 x 112 x 112 x 3 clips (pool5 padded to 1 x 4 x 4)."""
  model = c3d.Model(**c3d.VARIANTS[variant])
  shapes = nn.meta.unbox(jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, 16, 112, 112, 3))))['params'])
  assert sum(x.size for x in jax.tree.leaves(shapes)) == count
  assert shapes['fc6']['kernel'].shape == (8192, 4096)
  assert shapes['conv5b']['kernel'].shape == (3, 3, 3, 512, 512)


def _init(model, clips):
  """model.init compiled at -O1 as the loop does (seconds, not tens of them)."""
  from train.runner import INIT_COMPILER_OPTIONS
  key = jax.random.key(1)
  return jax.jit(model.init).lower(key, clips).compile(INIT_COMPILER_OPTIONS)(key, clips)


def test_c3d_sees_the_order_of_frames_and_the_frame_average_does_not():
  clips = jax.random.uniform(jax.random.key(0), (2, 8, 16, 16, 1))
  reversed_clips = clips[:, ::-1]
  for cls, sees_time in ((c3d.Model, True), (c3d.FrameAverage, False)):
    kw = SMALL if cls is c3d.Model else {k: SMALL[k] for k in ('num_classes', 'stages', 'fc',
                                                                'dropout_rate')}
    model = cls(**kw)
    params = _init(model, clips)
    apply = jax.jit(model.apply)
    a, b = apply(params, clips), apply(params, reversed_clips)
    assert a.shape == (2, 5) and a.dtype == jnp.float32
    assert (np.abs(a - b).max() > 1e-4) == sees_time, cls.__name__
  # the frame average is the mean of the per-frame logits
  model = c3d.FrameAverage(**{k: SMALL[k] for k in ('num_classes', 'stages', 'fc',
                                                    'dropout_rate')})
  params = _init(model, clips)
  apply = jax.jit(model.apply)
  per_frame = [apply(params, clips[:, t:t + 1]) for t in range(8)]
  np.testing.assert_allclose(apply(params, clips), np.mean(per_frame, axis=0),
                             rtol=1e-5, atol=1e-6)


def test_motion_class_is_the_sign_of_the_first_step_of_the_path():
  digit = np.zeros((8, 8), np.uint8)
  digit[2:7, 3:5] = 200  # blank rows and columns around the stroke, as in real digits
  rng = np.random.default_rng(0)
  seen = set()
  for _ in range(300):
    corners = moving_digits.trajectory(rng)
    clip = moving_digits.render(digit, corners)
    dy, dx = np.sign(corners[1] - corners[0])
    assert c3d.motion_class(clip) == 3 * (dy + 1) + (dx + 1)
    seen.add(c3d.motion_class(clip))
  assert len(seen) >= 8  # every direction occurs (bounces make the 0 classes too)


def test_motion_target_needs_clips_and_nine_classes():
  from train import core
  from train.errors import UserError
  config = load_config('c3d_moving_digits.py:tiny,target=motion', task_kwargs__num_classes=10,
                       model__num_classes=10)
  with pytest.raises(UserError, match='9 directions'):
    core.load_task(config)


@pytest.mark.parametrize('spec', ['c3d_moving_digits.py:tiny,target=motion',
                                  'c3d_moving_digits.py:tiny,model=frames'])
def test_config_trains_and_resumes_exactly(spec, tmp_path, data_dir):
  run = dict(total_steps=4, ckpt_every=2, log_every=1, batch_size=8,
             data__eval_split='test[:16]')
  result = train_spec(spec, tmp_path / 'straight', data_dir, eval_every=4, **run)
  assert 0.0 <= result['accuracy'] <= 1.0 and np.isfinite(result['loss'])
  check_resumes_from_step_2(spec, lambda s, w, d, **kw: train_spec(s, w, d, **run, **kw),
                            tmp_path, data_dir)
