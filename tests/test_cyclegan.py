"""CycleGAN (arch/generative/cyclegan.py): the cycle, identity and LSGAN losses against
direct formulas, the generator phase's loss rebuilt by hand, the image pool, the domain
transform, the paper's parameter counts, and the tiny config through the loop (exact
resume; 1 and 8 devices)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import check_eight_devices, check_resumes_alike, load_config, read_metrics

from arch.generative import cyclegan, to_unit


def _count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def test_cycle_and_identity_losses_equal_the_numpy_formula():
  """lambda (|F(G(a)) - a|_1 + |G(F(b)) - b|_1) and 0.5 lambda (|G(b) - b|_1 + |F(a) - a|_1),
  each L1 a mean over every pixel, on a 2x2x2x1 example."""
  rng = np.random.default_rng(0)
  a, rec_a, b, rec_b = (rng.uniform(-1, 1, (2, 2, 2, 1)).astype(np.float32) for _ in range(4))
  want = 10.0 * (np.abs(rec_a - a).sum() / 8 + np.abs(rec_b - b).sum() / 8)
  np.testing.assert_allclose(cyclegan.cycle_loss(a, rec_a, b, rec_b, 10.0), want, rtol=1e-6)
  # a and b enter symmetrically but are not interchangeable with their reconstructions'
  # partners: pairing a with rec_b gives another number
  assert abs(float(cyclegan.cycle_loss(a, rec_b, b, rec_a, 10.0)) - want) > 1e-3
  assert float(cyclegan.cycle_loss(a, a, b, b)) == 0.0
  f_a, g_b = rec_a, rec_b
  want = 5.0 * (np.abs(g_b - b).mean() + np.abs(f_a - a).mean())
  np.testing.assert_allclose(cyclegan.identity_loss(a, f_a, b, g_b, 5.0), want, rtol=1e-6)


def test_lsgan_losses_have_the_papers_targets():
  """D: 0.5 (mean (D(real) - 1)^2 + mean D(fake)^2), zero with zero gradient at real -> 1,
  fake -> 0; G: mean (D(fake) - 1)^2, zero at fake -> 1."""
  real = np.array([[0.3, 1.2], [0.9, -0.4]], np.float32)
  fake = np.array([[0.1, -0.2], [0.5, 0.8]], np.float32)
  np.testing.assert_allclose(cyclegan.lsgan_d_loss(real, fake),
                             0.5 * (((real - 1) ** 2).mean() + (fake ** 2).mean()), rtol=1e-6)
  np.testing.assert_allclose(cyclegan.lsgan_g_loss(fake), ((fake - 1) ** 2).mean(), rtol=1e-6)
  ones, zeros = jnp.ones((2, 2)), jnp.zeros((2, 2))
  assert float(cyclegan.lsgan_d_loss(ones, zeros)) == 0.0
  g_real, g_fake = jax.grad(cyclegan.lsgan_d_loss, argnums=(0, 1))(ones, zeros)
  assert not np.any(g_real) and not np.any(g_fake)
  assert float(cyclegan.lsgan_g_loss(ones)) == 0.0
  # swapped targets are penalised: the labels are real = 1, fake = 0, not the reverse
  assert float(cyclegan.lsgan_d_loss(zeros, ones)) == 1.0
  assert float(cyclegan.lsgan_g_loss(zeros)) == 1.0


def _thicken_by_loops(x):
  out = x.copy()
  b, h, w, c = x.shape
  for n in range(b):
    for i in range(h):
      for j in range(w):
        for di, dj in ((-1, 0), (1, 0), (0, -1), (0, 1)):
          if 0 <= i + di < h and 0 <= j + dj < w:
            out[n, i, j] = np.maximum(out[n, i, j], x[n, i + di, j + dj])
  return out


def test_domain_b_is_a_deterministic_dilation_no_pixelwise_map_gives():
  x = np.random.default_rng(1).integers(0, 256, (3, 8, 8, 1)).astype(np.uint8)
  x[0] = 0
  x[0, 4, 4] = 200  # one lit pixel becomes a plus of five
  y = np.asarray(cyclegan.thicken(jnp.asarray(x)))
  assert y.dtype == np.uint8
  np.testing.assert_array_equal(y, _thicken_by_loops(x))
  np.testing.assert_array_equal(y, np.asarray(cyclegan.thicken(jnp.asarray(x))))  # deterministic
  assert (y[0] > 0).sum() == 5 and y[0, 3, 4] == y[0, 4, 3] == 200 and y[0, 3, 3] == 0
  # not a function of the pixel alone: equal inputs (0 at (4, 4)'s neighbour and at a far
  # corner) give different outputs
  assert x[0, 3, 4] == x[0, 0, 0] == 0 and y[0, 3, 4] != y[0, 0, 0]
  assert np.all(y >= x)


def test_image_pool_fills_then_swaps_half_the_time():
  shape = (2, 2, 1)
  pool = cyclegan.empty_pool(3, shape)
  fakes = jnp.arange(1, 3, dtype=jnp.float32)[:, None, None, None] * jnp.ones((2, *shape))
  query = jax.jit(cyclegan.pool_query)
  out, pool = query(pool, fakes, jax.random.key(0))
  np.testing.assert_array_equal(out, fakes)  # filling: returned and stored in order
  assert int(pool['count']) == 2
  np.testing.assert_array_equal(pool['images'][:2], fakes)
  np.testing.assert_array_equal(pool['images'][2], 0.0)
  # 3rd fills the last slot; the rest: each returned, or swapped for a stored image
  swaps = 0
  for t in range(100):
    fake = jnp.full((1, *shape), 3.0 + t)
    before = np.asarray(pool['images'][:, 0, 0, 0])
    out, pool = query(pool, fake, jax.random.key(t + 1))
    after = np.asarray(pool['images'][:, 0, 0, 0])
    got = float(out[0, 0, 0, 0])
    if t == 0:
      assert got == 3.0 and after.tolist() == [1.0, 2.0, 3.0]
      continue
    if got == 3.0 + t:  # returned as it is: the pool unchanged
      np.testing.assert_array_equal(after, before)
    else:  # a stored image came out and the new one took exactly its slot
      assert got in before.tolist()
      slot = before.tolist().index(got)
      assert after[slot] == 3.0 + t
      np.testing.assert_array_equal(np.delete(after, slot), np.delete(before, slot))
      swaps += 1
    assert int(pool['count']) == 3
  assert 30 <= swaps <= 70, swaps  # probability 1/2 over 99 draws
  same, _ = cyclegan.pool_query(cyclegan.empty_pool(0, shape), fakes, jax.random.key(0))
  np.testing.assert_array_equal(same, fakes)


def test_paper_networks_have_the_reference_counts():
  """resnet_9blocks: 11,378,179 parameters; the 70x70 PatchGAN: 2,764,737 (the reference
  code's counts); 6 blocks: 3 blocks of 2 x (9 x 256 x 256 + 256) fewer,
  7,837,699 (the reference prints 7.838 M); shapes kept by G, 30x30 patches from D."""
  for variant, g_count in (('paper', 11_378_179), ('paper128', 7_837_699)):
    cfg = cyclegan.VARIANTS[variant]
    model = cyclegan.Model(**cfg)
    size = cfg['image_size']
    x = jnp.zeros((1, size, size, 3))
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x))
    p = variables['params']
    assert set(p) == {'generators', 'discriminators', 'judges'}
    assert _count(p['generators']['a']) == _count(p['generators']['b']) == g_count
    assert _count(p['discriminators']['a']) == 2_764_737
    out = jax.eval_shape(lambda v: model.apply(v, x, method='g'), variables)
    assert out.shape == (1, size, size, 3)
  logits = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((1, 256, 256, 3)), method='d_b'),
                          jax.eval_shape(lambda: cyclegan.Model(**cyclegan.VARIANTS['paper'])
                                         .init(jax.random.key(0), jnp.zeros((1, 256, 256, 3)))))
  assert logits.shape == (1, 30, 30)


def _tiny_task():
  from train import core
  config = load_config('cyclegan_digits.py:tiny')
  task = core.load_task(config)
  image = jax.random.randint(jax.random.key(1), (8, 8, 8, 1), 0, 256).astype(jnp.uint8)
  batch = {'image': image, 'label': jnp.arange(8) % 10}
  variables = jax.jit(task.init)(jax.random.key(0), batch)
  return config, task, batch, variables


def test_generator_phase_is_gan_plus_cycle_plus_identity_by_hand():
  """The generator phase's loss rebuilt from the networks: A is the batch's first half, B
  its second half thickened; G maps A -> B and is judged by D_B, F the reverse."""
  config, task, batch, variables = _tiny_task()
  model = cyclegan.Model(**config.model)
  (group, gen_loss), = [p for p in task.phases if p[0] == 'generators']

  @jax.jit
  def run(variables, batch):
    net = lambda method, x: model.apply({'params': variables['params']}, x, method=method)
    a = to_unit(batch['image'][:4])
    b = to_unit(cyclegan.thicken(batch['image'][4:]))
    g_a, f_b = net('g', a), net('f', b)
    outs = dict(a=a, b=b, g_a=g_a, f_b=f_b, d_b=net('d_b', g_a), d_a=net('d_a', f_b),
                f_g_a=net('f', g_a), g_f_b=net('g', f_b), g_b=net('g', b), f_a=net('f', a))
    return outs, gen_loss(variables, batch, jax.random.key(3)), task.phases[0][1](
        variables, batch, jax.random.key(4))

  o, (value, (metrics, _)), (_, (_, extra)) = jax.tree.map(np.asarray, run(variables, batch))
  l1 = lambda x, y: np.abs(x - y).mean()
  gan = ((o['d_b'] - 1) ** 2).mean() + ((o['d_a'] - 1) ** 2).mean()
  cyc = 10 * (l1(o['f_g_a'], o['a']) + l1(o['g_f_b'], o['b']))
  idt = 5 * (l1(o['g_b'], o['b']) + l1(o['f_a'], o['a']))
  np.testing.assert_allclose(metrics['gan'], gan, rtol=1e-5)
  np.testing.assert_allclose(metrics['cycle'], cyc, rtol=1e-5)
  np.testing.assert_allclose(metrics['identity'], idt, rtol=1e-5)
  np.testing.assert_allclose(value, gan + cyc + idt, rtol=1e-5)
  assert [g for g, _ in task.phases] == ['discriminators', 'generators', 'judges']
  # The discriminator phase stores this step's fakes in the (empty) pools: F(b) in A's.
  np.testing.assert_allclose(extra['pool']['a']['images'][:4], o['f_b'], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(extra['pool']['b']['images'][:4], o['g_a'], rtol=1e-5, atol=1e-6)
  assert int(extra['pool']['a']['count']) == 4


def test_eval_and_sample_shapes_and_floors():
  """Per-image eval metrics; the 'floor' numbers need no network: |a - thicken(a)|."""
  config, task, batch, variables = _tiny_task()
  m = jax.jit(task.evaluate)(variables, batch)
  assert all(v.shape == (8,) for v in m.values())
  a = np.asarray(batch['image'], np.float32) / 255
  b = np.asarray(cyclegan.thicken(batch['image']), np.float32) / 255
  np.testing.assert_allclose(m['paired_floor'], np.abs(a - b).reshape(8, -1).mean(-1), rtol=1e-5)
  np.testing.assert_allclose(m['ink_b'], b.reshape(8, -1).mean(-1), rtol=1e-5)
  out = jax.jit(lambda v, x: task.sample(v, {'image': x}, jax.random.key(0),
                                         row_ids=jnp.arange(8)))(variables, batch['image'])
  out = np.asarray(out['images'])
  assert out.shape == (8, 8, 26, 1) and out.dtype == jnp.uint8
  np.testing.assert_array_equal(out[:, :, :8], batch['image'])  # a | G(a) | F(G(a))
  assert np.all(out[:, :, 8] == 128) and np.all(out[:, :, 17] == 128)


def _train(spec, workdir, data_dir, **overrides):
  from train import loop
  return loop.train_and_evaluate(load_config(spec, data__data_dir=data_dir, **overrides),
                                 str(workdir))


def test_tiny_config_trains_and_resumes_exactly(tmp_path, data_dir):
  """4 steps with checkpoints at 2 and 4; the step-2 checkpoint alone resumes to the same
  metrics at steps 3 and 4 and the same step-4 state (all three groups' params and Adam
  states, and both image pools), bitwise."""
  spec = 'cyclegan_digits.py:tiny'
  result = _train(spec, tmp_path / 'straight', data_dir)
  assert 0 <= result['acc_g_ab'] <= 1 and np.isfinite(result['cycle_a'])
  _, _, (state, _) = check_resumes_alike(
      spec, lambda w, **kw: _train(spec, w, data_dir, **kw), tmp_path,
      ('loss', 'generators/cycle', 'generators/identity', 'generators/gan',
       'discriminators/d_a', 'judges/accuracy_b'))
  assert set(state.opt_state) == {'discriminators', 'generators', 'judges'}
  assert int(state.extra['pool']['a']['count']) == 4  # 4 fakes a step, pool of 4 (tiny)


def test_eight_devices_give_the_same_losses_as_one(tmp_path):
  """Under jit the batch is one global array: the halves, the pool's draws and every loss
  are the same numbers on 8 simulated devices as on 1 (to float rounding); so are the
  eval's judge accuracies, and its cycle errors to 1e-5."""
  check_eight_devices('cyclegan_digits.py:tiny', tmp_path, ('jit',), rel=1e-4, abs=1e-6,
                      close=('loss', 'generators/cycle', 'generators/identity',
                             'generators/gan', 'discriminators/loss', 'judges/loss'),
                      evals=('acc_g_ab', 'acc_f_ba'))
  one, eight = (read_metrics(tmp_path / name, 'eval')[4] for name in ('one', 'jit'))
  for key in ('cycle_a', 'cycle_b', 'paired_g_ab', 'ink_g_ab'):
    assert eight[key] == pytest.approx(one[key], rel=1e-5), key


def test_option_errors():
  from train import core
  from train.errors import UserError
  with pytest.raises(UserError, match='did you mean pool_size'):
    core.load_task(load_config('cyclegan_digits.py:tiny', task_kwargs__pool_sise=3))
  with pytest.raises(UserError, match='pmap'):
    core.load_task(load_config('cyclegan_digits.py:tiny', parallelism='pmap'))
