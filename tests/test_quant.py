"""INT8 quantization (arch/compress/quant.py): the quantizers against their definitions, the
int8 kernels against integer numpy references, the straight-through gradient, BatchNorm
folding, PTQ of a tiny trained ResNet, and the config through the loop (exact resume, 1 vs
8 devices)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arch.compress import quant
from arch.layers.conv import ConvBN
from conftest import check_eight_devices, check_resumes_alike, load_config, read_metrics
from conftest import train_spec


def test_quantize_dequantize_error_is_at_most_half_a_step_per_channel():
  rng = np.random.RandomState(0)
  # channels of very different magnitudes: a per-tensor scale would fail the bound
  w = rng.randn(3, 3, 4, 5).astype(np.float32) * np.array([1e-3, 0.1, 1.0, 10.0, 300.0],
                                                          np.float32)
  s = quant.weight_scale(jnp.asarray(w))
  np.testing.assert_allclose(s, np.abs(w).max(axis=(0, 1, 2)) / 127, rtol=1e-6)
  q = quant.quantize(jnp.asarray(w), s)
  assert q.dtype == jnp.int8
  err = np.abs(np.asarray(quant.dequantize(q, s)) - w)
  assert (err <= np.asarray(s) / 2 * (1 + 1e-5)).all()
  # the largest |w| of each channel lands on +-127 exactly
  flat_q = np.asarray(q).reshape(-1, 5)
  assert (np.abs(flat_q).max(0) == 127).all()
  # activations: per tensor; within range the same bound, outside it clipped to +-127 s
  x = np.linspace(-3, 3, 601).astype(np.float32)
  sx = quant.range_scale(2.0)
  xq = np.asarray(quant.dequantize(quant.quantize(jnp.asarray(x), sx), sx))
  inside = np.abs(x) <= 2.0
  assert (np.abs(xq - x)[inside] <= float(sx) / 2 * (1 + 1e-5)).all()
  np.testing.assert_allclose(xq[~inside], np.sign(x[~inside]) * 127 * float(sx), rtol=1e-6)


def _conv_reference(x, w, strides, pads, dilation, groups):
  """Direct int64 convolution of NHWC x by HWIO w."""
  x = np.pad(x.astype(np.int64), ((0, 0), pads[0], pads[1], (0, 0)))
  w = w.astype(np.int64)
  kh, kw, cg, o = w.shape
  og = o // groups
  oh = (x.shape[1] - dilation[0] * (kh - 1) - 1) // strides[0] + 1
  ow = (x.shape[2] - dilation[1] * (kw - 1) - 1) // strides[1] + 1
  out = np.zeros((x.shape[0], oh, ow, o), np.int64)
  for b in range(x.shape[0]):
    for i in range(oh):
      for j in range(ow):
        for c in range(o):
          g = c // og
          patch = x[b, i * strides[0]:i * strides[0] + dilation[0] * (kh - 1) + 1:dilation[0],
                    j * strides[1]:j * strides[1] + dilation[1] * (kw - 1) + 1:dilation[1],
                    g * cg:(g + 1) * cg]
          out[b, i, j, c] = (patch * w[..., c]).sum()
  return out


@pytest.mark.parametrize('strides, pads, dilation, groups', [
    ((1, 1), ((1, 1), (1, 1)), (1, 1), 1),
    ((2, 1), ((1, 0), (2, 1)), (1, 2), 1),
    ((2, 2), ((0, 0), (0, 0)), (1, 1), 2)])
def test_int8_conv_equals_an_integer_reference(strides, pads, dilation, groups):
  rng = np.random.RandomState(1)
  x = rng.randint(-127, 128, (2, 7, 6, 4)).astype(np.int8)
  w = rng.randint(-127, 128, (3, 3, 4 // groups, 6)).astype(np.int8)
  got = quant.int8_conv(jnp.asarray(x), jnp.asarray(w), strides, pads, dilation, groups)
  assert got.dtype == jnp.int32
  np.testing.assert_array_equal(got, _conv_reference(x, w, strides, pads, dilation, groups))


def test_int8_matmul_equals_an_integer_reference():
  rng = np.random.RandomState(2)
  # K = 4096 products of 127 * 127: sums far beyond int16, exact in int32
  x = rng.randint(-127, 128, (3, 5, 4096)).astype(np.int8)
  w = rng.randint(-127, 128, (4096, 7)).astype(np.int8)
  w[:, 0] = 127
  x[0, 0] = 127
  got = quant.int8_matmul(jnp.asarray(x), jnp.asarray(w))
  assert got.dtype == jnp.int32
  want = x.astype(np.int64) @ w.astype(np.int64)
  assert want[0, 0, 0] == 4096 * 127 * 127
  np.testing.assert_array_equal(got, want)


def test_straight_through_gradient_is_one_inside_the_range_and_zero_outside():
  s = 0.01  # range +-1.27
  x = jnp.linspace(-2.0, 2.0, 41)
  c = jnp.arange(41.0) + 1
  grad = jax.grad(lambda x: (quant.fake_quant(x, s) * c).sum())(x)
  inside = np.abs(np.asarray(x)) <= 127 * s
  np.testing.assert_array_equal(np.asarray(grad)[inside], np.asarray(c)[inside])
  np.testing.assert_array_equal(np.asarray(grad)[~inside], 0.0)
  # and the value is the quantize-dequantize one
  np.testing.assert_allclose(quant.fake_quant(x, s),
                             quant.dequantize(quant.quantize(x, s), s), atol=1e-7)


class _Net(nn.Module):
  """ConvBN (strided, folded), a plain conv, a Dense head: every intercepted layer kind."""

  @nn.compact
  def __call__(self, x, *, train=False):
    x = ConvBN(6, (3, 3), strides=(2, 2), name='a')(x, train=train)
    x = nn.relu(nn.Conv(5, (3, 3), padding='SAME', name='b')(x))
    return nn.Dense(4, name='head')(x.mean(axis=(1, 2)))


def _net_variables():
  x = jax.random.normal(jax.random.key(0), (8, 9, 9, 3))
  with nn.intercept_methods(quant.Quantizer('float')):
    v = _Net().init(jax.random.key(1), x)
  v = nn.meta.unbox(v)
  # non-trivial BatchNorm parameters and statistics
  k = jax.random.split(jax.random.key(2), 4)
  v['params']['a']['norm'] = {'scale': 1 + 0.5 * jax.random.normal(k[0], (6,)),
                              'bias': jax.random.normal(k[1], (6,))}
  v['batch_stats']['a']['norm'] = {'mean': jax.random.normal(k[2], (6,)),
                                   'var': jnp.exp(jax.random.normal(k[3], (6,)))}
  return v, x


def test_folding_batch_norm_is_the_same_function():
  v, x = _net_variables()
  p, st = v['params']['a'], v['batch_stats']['a']['norm']
  w, b = quant.fold_batch_norm(p['conv']['kernel'], None, p['norm']['scale'],
                               p['norm']['bias'], st['mean'], st['var'], 1e-5)
  folded = quant.float_conv(x, w, (2, 2), ((1, 1), (1, 1)), (1, 1), 1) + b
  conv_bn = ConvBN(6, (3, 3), strides=(2, 2), act=None)
  want = conv_bn.apply({'params': p, 'batch_stats': v['batch_stats']['a']}, x, train=False)
  np.testing.assert_allclose(folded, want, rtol=1e-5, atol=1e-5)


def test_calibration_int8_and_fake_quant_agree_and_stay_close_to_float():
  v, x = _net_variables()
  net = _Net()
  with nn.intercept_methods(quant.Quantizer('float', calibrate=True)):
    z_f, stats = net.apply(v, x, mutable=['quant_stat'])
  ranges = stats['quant_stat']
  # the range of each layer is the max |input|: the image for the first conv
  assert set(ranges) == {'a', 'b', 'head'} and 'conv' not in ranges['a']
  np.testing.assert_allclose(ranges['a']['amax'], jnp.abs(x).max())
  qv = {**v, 'quant': ranges}
  with nn.intercept_methods(quant.Quantizer('int8')):
    z_q = net.apply(qv, x)
  with nn.intercept_methods(quant.Quantizer('fake')):
    z_fake = net.apply(qv, x)
  # int8 integer arithmetic and float fake quantization: the same quantized function
  np.testing.assert_allclose(z_q, z_fake, rtol=1e-4, atol=1e-5)
  rel = float(jnp.linalg.norm(z_q - z_f) / jnp.linalg.norm(z_f))
  assert 0 < rel < 0.05, rel
  # the int8 path lowers to int8 x int8 -> int32 dots, not float convolutions
  hlo = jax.jit(lambda v, x: _int8_apply(net, v, x)).lower(qv, x).as_text()
  assert 'xi8>' in hlo and 'xi32>' in hlo and 'convolution' not in hlo


def _int8_apply(net, v, x):
  with nn.intercept_methods(quant.Quantizer('int8')):
    return net.apply(v, x)


def test_combine_ranges():
  old, new = jnp.float32(2.0), jnp.float32(1.0)
  assert quant.combine_ranges(old, new, jnp.int32(0), 'max') == 1.0  # first batch sets it
  assert quant.combine_ranges(old, new, jnp.int32(3), 'max') == 2.0
  assert quant.combine_ranges(old, new, jnp.int32(3), 'mean') == pytest.approx(1.75)
  assert quant.combine_ranges(old, new, jnp.int32(3), 'ema', 0.9) == pytest.approx(1.9)


# --------------------------------------------------------------------- through the loop

TINY_RUN = dict(total_steps=4, ckpt_every=2, log_every=1, eval_every=4, batch_size=8)


@pytest.fixture(scope='module')
def float_run(tmp_path_factory, data_dir):
  """A tiny float ResNet trained 6 steps: the run every test below quantizes."""
  workdir = tmp_path_factory.mktemp('float')
  result = train_spec('resnet_digits.py:tiny', workdir, data_dir, total_steps=6,
                      eval_every=6, ckpt_every=6, log_every=6, batch_size=32)
  return str(workdir), result


def _quantize(spec, workdir, data_dir, float_workdir, **overrides):
  return train_spec(spec, workdir, data_dir, frozen__float__workdir=float_workdir,
                    **{**TINY_RUN, **overrides})


def test_ptq_of_a_trained_tiny_net_stays_close_to_float(tmp_path, data_dir, float_run):
  float_workdir, float_eval = float_run
  result = _quantize('int8_resnet_digits.py:tiny,method=ptq', tmp_path, data_dir,
                     float_workdir, total_steps=2, eval_every=2)
  # the frozen float run is the trained one, restored exactly
  assert result['float_accuracy'] == pytest.approx(float_eval['accuracy'], abs=1e-6)
  assert result['float_loss'] == pytest.approx(float_eval['loss'], rel=1e-5)
  assert result['logit_rel_error'] < 0.05, result
  assert result['agreement'] > 0.95, result
  assert abs(result['accuracy'] - result['float_accuracy']) < 0.03
  # calibration trains nothing
  train = read_metrics(tmp_path)
  assert all(r['grad_norm'] == 0 for r in train.values())


def test_qat_config_trains_and_resumes_exactly(tmp_path, data_dir, float_run):
  spec = 'int8_resnet_digits.py:tiny,method=qat'
  overrides = dict(frozen__float__workdir=float_run[0], batch_size=8)
  train = lambda workdir, **kw: train_spec(
      spec, workdir, data_dir, **{**TINY_RUN, **overrides, **kw})
  train(tmp_path / 'straight')
  straight, _, states = check_resumes_alike(spec, train, tmp_path,
                                            must_have=('loss', 'accuracy', 'grad_norm'),
                                            **overrides)
  assert all(straight[s]['grad_norm'] > 0 for s in straight)
  # the ranges were calibrated (no layer left at zero) and the params moved off the float run
  assert all(float(a) > 0 for a in jax.tree.leaves(states[0].extra['quant']))
  moved = jax.tree.map(lambda p, f: np.abs(np.asarray(p) - np.asarray(f)).max(),
                       states[0].params, states[0].extra['float']['params'])
  assert max(jax.tree.leaves(moved)) > 0


def test_eight_devices_give_the_same_numbers_as_one(tmp_path, data_dir, float_run):
  check_eight_devices('int8_resnet_digits.py:tiny,method=qat', tmp_path, modes=('jit', 'pmap'),
                      close=('loss', 'accuracy'), steps=3,
                      args=(f'--config.frozen.float.workdir={float_run[0]}',
                            f'--config.data.data_dir={data_dir}',
                            '--config.batch_size=16', '--config.log_every=1'),
                      evals=('accuracy', 'float_accuracy'))
