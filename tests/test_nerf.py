"""NeRF (arch/scene/nerf.py) and the procedural scene (train/datasets/scene.py): alpha
compositing equals the closed form of a known density and a direct numpy formula; inverse-CDF
samples follow a piecewise-constant pdf; the rays go through the right pixels, unit length,
and agree with the data's own ray caster; the published network has its parameter count;
the tiny config trains with an exact resume, gives the same numbers on 8 devices (jit and
pmap) as on 1, and `train.sample` writes an orbit GIF."""

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arch.scene import nerf
from conftest import (check_eight_devices, check_resumes_from_step_2, read_metrics, run_sample,
                      train_spec)
from train.datasets import scene


def test_constant_density_on_a_segment_has_the_closed_form():
  """sigma constant on [a, b] (bins of width L / N, the last one too): opacity is
  1 - exp(-sigma L) for any N; a colour red on the first half, green on the second
  composites to red (1 - e^{-sigma L/2}) + green (e^{-sigma L/2} - e^{-sigma L}); a white
  background adds e^{-sigma L}; no density shows the background alone."""
  a, b, sigma = 2.0, 5.0, 0.7
  length = b - a
  for n in (4, 64):
    t = jnp.asarray(a + length * np.arange(n) / n, jnp.float32)[None]
    colour = np.where(np.arange(n)[:, None] < n // 2, [1.0, 0, 0], [0, 1.0, 0])[None]
    sig = jnp.full((1, n), sigma)
    for white in (False, True):
      rgb, w, acc, _ = nerf.composite(sig, jnp.asarray(colour, jnp.float32), t, white,
                                      last_delta=length / n)
      half, full = math.exp(-sigma * length / 2), math.exp(-sigma * length)
      want = np.array([1 - half, half - full, 0.0]) + (full if white else 0.0)
      np.testing.assert_allclose(acc, [1 - full], rtol=1e-5)
      np.testing.assert_allclose(rgb[0], want, atol=1e-5)
      np.testing.assert_allclose(w.sum(), acc[0], rtol=1e-6)
  rgb, _, acc, _ = nerf.composite(jnp.zeros((1, 8)), jnp.full((1, 8, 3), 0.3),
                                  jnp.linspace(2, 6, 8)[None], True)
  np.testing.assert_allclose(acc, [0.0])
  np.testing.assert_allclose(rgb, [[1.0, 1.0, 1.0]])


def test_compositing_equals_a_direct_formula():
  """Random densities (some negative: the ReLU), colours and uneven spacings: weights
  w_i = exp(-sum_{j<i} sigma_j delta_j) (1 - exp(-sigma_i delta_i)), the last spacing 1e10,
  in float64 numpy; colour, opacity and depth are their weighted sums."""
  rng = np.random.default_rng(0)
  sigma = rng.normal(size=(3, 10)) * 2
  rgb = rng.random((3, 10, 3))
  t = np.sort(rng.uniform(2, 6, (3, 10)), 1)
  delta = np.concatenate([np.diff(t, axis=1), np.full((3, 1), 1e10)], 1)
  sd = np.maximum(sigma, 0) * delta
  before = np.concatenate([np.zeros((3, 1)), np.cumsum(sd, 1)[:, :-1]], 1)
  w = np.exp(-before) * (1 - np.exp(-sd))
  got = nerf.composite(*(jnp.asarray(x, jnp.float32) for x in (sigma, rgb, t)))
  np.testing.assert_allclose(got[1], w, atol=1e-5)
  np.testing.assert_allclose(got[0], (w[..., None] * rgb).sum(1), atol=1e-5)
  np.testing.assert_allclose(got[2], w.sum(1), atol=1e-5)
  np.testing.assert_allclose(got[3], (w * t).sum(1), rtol=1e-5)


def test_inverse_cdf_samples_follow_the_piecewise_constant_pdf():
  """Bins [0,1],[1,3],[3,3.5],[3.5,6] with masses 1 : 0 : 3 : 4. Evenly spaced quantiles:
  each bin gets its share of the samples (+-1), none in the empty bin, evenly spread inside
  (the sample mean is the bin's centre), all sorted and inside [0, 6]. Random quantiles:
  the counts agree within 5 standard deviations, and a second ray with other weights gets
  its own histogram."""
  edges = np.array([0.0, 1.0, 3.0, 3.5, 6.0])
  mass = np.array([1.0, 0.0, 3.0, 4.0])
  n = 8000
  u = (np.arange(n) + 0.5) / n
  s = np.asarray(nerf.sample_pdf(jnp.asarray(edges)[None], jnp.asarray(mass)[None],
                                 jnp.asarray(u)[None]))[0]
  assert (np.diff(s) >= 0).all() and s.min() >= 0 and s.max() <= 6
  counts = np.histogram(s, edges)[0]
  np.testing.assert_allclose(counts, n * mass / mass.sum(), atol=1)
  for lo, hi, m in zip(edges[:-1], edges[1:], mass):
    inside = s[(s > lo) & (s < hi)]
    if m:
      assert inside.mean() == pytest.approx((lo + hi) / 2, abs=1e-3 * (hi - lo) + 1e-3)
  mass2 = np.array([4.0, 2.0, 1.0, 1.0])
  u = jax.random.uniform(jax.random.key(0), (2, n))
  s = np.asarray(nerf.sample_pdf(jnp.asarray(np.stack([edges, edges])),
                                 jnp.asarray(np.stack([mass, mass2])), u))
  for row, m in zip(s, (mass, mass2)):
    p = m / m.sum()
    counts = np.histogram(row, edges)[0]
    assert (np.abs(counts - n * p) <= 5 * np.sqrt(n * p * (1 - p)) + 1e-9).all()
    # uniform inside a bin: the within-bin positions' quartiles are 1/4, 1/2, 3/4
    k = np.clip(np.searchsorted(edges, row, side='right') - 1, 0, 3)
    pos = (row - edges[k]) / np.diff(edges)[k]
    np.testing.assert_allclose(np.quantile(pos, [0.25, 0.5, 0.75]), [0.25, 0.5, 0.75],
                               atol=0.03)


def test_fine_samples_gather_where_the_coarse_weights_are():
  """Coarse weights 0.6 / 0.4 on samples 7 and 8 of 16 (zero elsewhere): every one of the
  32 fine distances at evenly spaced quantiles lies between the midpoints around them, in
  proportion 0.6 : 0.4 on either side of t_7.5; the result is sorted and keeps the coarse
  distances; no gradient reaches the weights (stop_gradient)."""
  t_c = nerf.stratified_samples(2.0, 6.0, jnp.full((1, 16), 0.5))
  w = jnp.zeros((1, 16)).at[0, 7].set(0.6).at[0, 8].set(0.4)
  u = ((jnp.arange(32) + 0.5) / 32)[None]
  t = np.asarray(nerf.fine_distances(t_c, w, u))[0]
  assert t.shape == (48,) and (np.diff(t) >= 0).all()
  assert set(np.asarray(t_c)[0]) <= set(t)
  fine = np.array(sorted(set(t) - set(np.asarray(t_c)[0])))
  mids = 0.5 * (np.asarray(t_c)[0, 1:] + np.asarray(t_c)[0, :-1])
  assert len(fine) == 32 and fine.min() >= mids[6] and fine.max() <= mids[8]
  assert abs((fine < mids[7]).sum() - 0.6 * 32) <= 1
  grad = jax.grad(lambda w: nerf.fine_distances(t_c, w, u).sum())(w)
  np.testing.assert_array_equal(grad, 0.0)


def test_rays_go_through_their_pixels():
  """A camera at the origin looking down -z (identity rotation): pixel (1, 2) of a 4x4
  image with focal 2 looks along (0.25, 0.25, -1), normalised. A turned camera (look_at):
  every ray is unit length and projects back to its own pixel centre; the model's rays
  equal the dataset ray caster's for every pixel of a train view, and the orbit poses
  equal the dataset's."""
  o, d = nerf.pixel_rays(jnp.eye(4)[None], jnp.array([[1, 2]]), jnp.array([2.0]), 4, 4)
  np.testing.assert_allclose(o, [[0, 0, 0]])
  np.testing.assert_allclose(d[0], np.array([0.25, 0.25, -1]) / math.sqrt(1.125), rtol=1e-6)
  pose = scene.look_at([1.0, -3.0, 2.0], target=[0.2, 0.1, 0.0])
  h, w, f = 6, 8, 5.0
  rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing='ij')
  pixel = np.stack([rows.ravel(), cols.ravel()], 1)
  o, d = nerf.pixel_rays(jnp.asarray(np.repeat(pose[None], h * w, 0), jnp.float32),
                         jnp.asarray(pixel), jnp.full((h * w,), f), h, w)
  np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0, rtol=1e-6)
  point = np.asarray(o + 3.0 * d, np.float64)
  cam = (point - pose[:3, 3]) @ pose[:3, :3]  # world -> camera axes
  np.testing.assert_allclose(f * cam[:, 0] / -cam[:, 2] + w / 2, pixel[:, 1] + 0.5, atol=1e-4)
  np.testing.assert_allclose(-f * cam[:, 1] / -cam[:, 2] + h / 2, pixel[:, 0] + 0.5, atol=1e-4)
  view = scene.poses('train')[5]
  want_o, want_d = scene.camera_rays(view.astype(np.float64))
  got_o, got_d = nerf.view_rays(jnp.asarray(view)[None], scene.FOCAL, scene.HEIGHT,
                                scene.WIDTH)
  np.testing.assert_allclose(got_o, want_o, atol=1e-5)
  np.testing.assert_allclose(got_d, want_d, atol=1e-5)
  az = np.array([0.3, 2.0, 4.5])
  np.testing.assert_allclose(nerf.orbit_poses(jnp.asarray(az), 0.6, scene.RADIUS),
                             np.stack([scene.orbit_pose(a, 0.6) for a in az]), atol=1e-5)


def test_positional_encoding_and_the_published_size():
  """gamma(x) = (x, sin 2^k pi x, cos 2^k pi x) per frequency; the paper's network (8 x 256,
  skip at the fifth layer, 63 + 27 encoded inputs) has 595,844 parameters, twice for the
  coarse and fine pair."""
  x = np.array([[0.3, -0.7, 0.1]])
  enc = np.asarray(nerf.positional_encoding(jnp.asarray(x, jnp.float32), 2))
  want = [x[0]]
  for k in range(2):
    want += [np.sin(2 ** k * np.pi * x[0]), np.cos(2 ** k * np.pi * x[0])]
  np.testing.assert_allclose(enc[0], np.concatenate(want), atol=1e-6)
  model = nerf.NeRF()
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((2, 3)), jnp.ones((2, 3)))
  params = shapes['params']
  count = lambda tree: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))
  assert count(params['coarse']) == count(params['fine']) == 595_844
  assert params['coarse']['layer0']['kernel'].shape == (63, 256)
  assert params['coarse']['layer5']['kernel'].shape == (256 + 63, 256)
  assert params['coarse']['view']['kernel'].shape == (256 + 27, 128)


def test_scene_views_and_baseline_colour():
  """The views are deterministic; the test poses are not train poses; the recorded mean
  training colour is the train split's; the background is white and objects are not."""
  images, poses = scene.views('train')
  again, _ = scene.views('train')
  np.testing.assert_array_equal(images, again)
  np.testing.assert_allclose((images / 255.0).reshape(-1, 3).mean(0), scene.TRAIN_MEAN_RGB,
                             atol=1e-4)
  test_poses = scene.poses('test')
  gap = np.linalg.norm(test_poses[:, None, :3, 3] - poses[None, :, :3, 3], axis=-1)
  assert gap.min() > 0.05
  assert (images == 255).all(-1).mean() > 0.05  # background
  assert len(np.unique(images.reshape(-1, 3), axis=0)) > 100


SPEC = 'nerf_scene.py:tiny'


def test_tiny_config_trains_resumes_and_samples(tmp_path, data_dir):
  """4 steps with checkpoints at 2 and 4, eval on the 8 test views: finite PSNRs, the
  baseline's equal to a numpy mean over views of its per-view PSNR; the
  step-2 checkpoint resumes to the same losses and state, bitwise; `train.sample` writes a
  GIF of the orbit (uint8 frames that change along it)."""
  result = train_spec(SPEC, tmp_path / 'straight', data_dir, eval_batch_size=1024)
  assert {'psnr', 'psnr_coarse', 'psnr_baseline', 'mse'} <= set(result)
  assert all(np.isfinite(v) for v in result.values()) and 5 < result['psnr'] < 20
  images, _ = scene.views('test')  # the baseline's per-view PSNR, averaged over views
  mse = ((images / 255.0 - np.asarray(scene.TRAIN_MEAN_RGB)) ** 2).mean((1, 2, 3))
  assert result['psnr_baseline'] == pytest.approx((-10 * np.log10(mse)).mean(), abs=1e-3)
  check_resumes_from_step_2(SPEC, lambda s, w, d, **kw: train_spec(
      s, w, d, data__eval_split='test[:128]', **kw), tmp_path, data_dir)
  proc = run_sample(['--config', f'configs/{SPEC}', '--workdir', tmp_path / 'straight',
                     '--num_samples', '2', '--frames', '4', '--config.data.data_dir', data_dir],
                    data_dir)
  assert proc.returncode == 0, proc.stderr[-2000:]
  stem = tmp_path / 'straight' / 'samples' / 'step4_seed0'
  assert os.path.getsize(f'{stem}.gif') > 0
  videos = np.load(f'{stem}.npz')['videos']
  assert videos.shape == (2, 4, scene.HEIGHT, scene.WIDTH, 3) and videos.dtype == np.uint8
  assert not np.array_equal(videos[0, 0], videos[0, 1])


def test_eight_devices_match_one(tmp_path, data_dir):
  """The same losses and eval PSNR on 8 simulated devices (jit and pmap) as on 1: each
  ray's samples come from its own index, not from its device (a device-dependent draw
  moves the losses by far more). The fine pass samples the coarse weights' inverse CDF,
  which amplifies last-bit differences: under the suite's fast-compile flags step 3's loss
  on 8 devices (jit) was 1.1e-3 from one device's (2026-12-07; 1e-4 at XLA's defaults)."""
  check_eight_devices(SPEC, tmp_path, ('jit', 'pmap'), close=('loss', 'mse_fine'),
                      args=(f'--config.data.data_dir={data_dir}',
                            '--config.data.eval_split=test[:128]'), evals=(), rel=5e-3)
  # Step 1 runs the same initial parameters everywhere, before any amplification: there a
  # device-dependent draw of samples would show at once, so it is held to the 1e-4 the whole
  # run met at XLA's defaults (2e-5 apart under the fast flags).
  first = read_metrics(tmp_path / 'one')[1]
  for mode in ('jit', 'pmap'):
    for key in ('loss', 'mse_fine'):
      assert read_metrics(tmp_path / mode)[1][key] == pytest.approx(first[key], rel=1e-4), \
          (mode, key)
  # The eval sums are reduced over 8 shards in another order: equal to float precision.
  one = read_metrics(tmp_path / 'one', 'eval')[4]
  for mode in ('jit', 'pmap'):
    eight = read_metrics(tmp_path / mode, 'eval')[4]
    # the trained networks differ as the losses above do (PSNR 4e-5 relative, jit, fast flags)
    for key, rel in (('psnr', 1e-3), ('psnr_coarse', 1e-3), ('psnr_baseline', 1e-5)):
      assert eight[key] == pytest.approx(one[key], rel=rel), (mode, key)
