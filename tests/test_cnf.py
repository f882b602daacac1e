"""The continuous normalizing flow (arch/dynamics/cnf.py) and the 2-D density task
(arch/dynamics/density.py): the CNF's density integrates to 1 on a grid; its log-density
equals the change of variables through the solved flow map; Hutchinson's estimate is
unbiased, per time and over a whole solve; sampling and the log-density's forward solve
invert each other; both gradient methods agree; RealNVP over vectors is an exact bijection;
the toy2d densities; each tiny config trains with an exact resume, gives the same losses
on 8 devices, and `train.sample` writes its picture."""

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arch.dynamics import cnf, density
from arch.task import ConfigError
from conftest import (check_resumes_from_step_2, load_config, read_metrics, run_cli, run_sample,
                      train_spec)
from train.datasets import toy2d


def _cnf(**kw):
  """A CNF with default (random, untrained) parameters: its field is far from zero."""
  model = cnf.CNF(**{'hidden': (16, 16), **kw})
  params = jax.jit(model.init)(jax.random.key(3), 0.0, jnp.zeros(2))['params']
  return model, params


def _grid(n=200, lim=4.0):
  c = (np.arange(n) + 0.5) / n * 2 * lim - lim  # cell centres
  xx, yy = np.meshgrid(c, c)
  return jnp.asarray(np.stack([xx.ravel(), yy.ravel()], 1), jnp.float32), (2 * lim / n) ** 2


def _normal_logpdf(x):
  return -0.5 * (np.asarray(x) ** 2).sum(-1) - math.log(2 * math.pi)


def test_cnf_density_integrates_to_one_on_a_grid():
  """Exact trace, 200 x 200 cells over [-4, 4]^2: the mass is 1 +- 0.02, and the density
  is not the base's (a wrong sign or factor in the trace integral breaks the mass)."""
  model, params = _cnf()
  x, area = _grid()
  log_p, _, steps, ok = jax.jit(lambda p, x: cnf.batch_log_prob(model, p, x))(params, x)
  log_p = np.asarray(log_p)
  assert np.asarray(ok).all() and np.asarray(steps).max() < model.max_steps
  assert np.exp(log_p).sum() * area == pytest.approx(1.0, abs=0.02)
  assert np.abs(log_p - _normal_logpdf(x)).max() > 0.5  # a real transformation
  # The trace's sign flipped: the same field's "density" no longer integrates to 1.
  z_log_p = _normal_logpdf(np.asarray(jax.jit(lambda p, x: cnf.batch_log_prob(
      model, p, x)[1])(params, x)))
  wrong = z_log_p - (log_p - z_log_p)
  assert abs(np.exp(wrong).sum() * area - 1.0) > 0.1


def test_log_prob_is_the_change_of_variables_through_the_solved_map():
  """log p(x) from the trace integral == log N(z(T)) + log|det dz(T)/dx|, the Jacobian of
  the solved flow map taken by reverse-mode differentiation through the solver."""
  model, params = _cnf(rtol=1e-7, atol=1e-7)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(5, 2)) * 1.5, jnp.float32)
  log_p, z = jax.jit(lambda x: cnf.batch_log_prob(model, params, x)[:2])(x)
  jac = jax.jit(jax.vmap(jax.jacrev(
      lambda x: cnf.flow(model, params, x, 0.0, model.time_length)[0])))(x)
  want = _normal_logpdf(z) + np.linalg.slogdet(np.asarray(jac, np.float64))[1]
  np.testing.assert_allclose(log_p, want, atol=2e-4)


def test_hutchinson_estimate_is_unbiased():
  """Per time: the mean of e^T J e over many probes is tr J (Rademacher and Gaussian
  probes; within 5 standard errors). Over a whole solve, one probe per solve: the mean of
  the Hutchinson log-densities is the exact log-density."""
  model, params = _cnf()
  fn = lambda z: model.apply({'params': params}, 0.4, z)
  z = jnp.array([0.7, -1.2])
  _, exact = cnf.exact_trace(fn, z)
  n = 20_000
  for noise in cnf.NOISES:
    e = cnf.probe(jax.random.key(1), (n, 2), noise)
    np.testing.assert_allclose(np.asarray(e.T @ e) / n, np.eye(2), atol=0.05)
    est = np.asarray(jax.jit(jax.vmap(lambda e: cnf.hutchinson_trace(fn, z, e)[1]))(e))
    assert abs(est.mean() - exact) < 5 * est.std() / math.sqrt(n) + 1e-6
    assert est.std() > 1e-3  # the estimates do vary: the mean is the test
  x = jnp.array([1.0, 0.5])
  exact_log_p = float(cnf.log_prob(model, params, x)[0])
  e = cnf.probe(jax.random.key(2), (4000, 2), 'rademacher')
  est = np.asarray(jax.jit(jax.vmap(lambda e: cnf.log_prob(model, params, x, e)[0]))(e))
  assert abs(est.mean() - exact_log_p) < 5 * est.std() / math.sqrt(len(est)) + 1e-4
  assert est.std() > 1e-3


def test_sample_then_log_prob_returns_the_base_point():
  """x = flow(z, T -> 0); solving x forward (the log-density's solve) gives z back."""
  model, params = _cnf()
  z = jnp.asarray(np.random.default_rng(1).normal(size=(64, 2)), jnp.float32)
  x, _, ok = jax.jit(lambda z: cnf.batch_flow(model, params, z, model.time_length, 0.0))(z)
  assert np.asarray(ok).all() and np.abs(np.asarray(x - z)).mean() > 0.1
  _, z_back, _, ok = jax.jit(lambda x: cnf.batch_log_prob(model, params, x))(x)
  assert np.asarray(ok).all()
  np.testing.assert_allclose(z_back, z, atol=1e-3)


def test_both_gradient_methods_agree():
  """Backpropagation through the solver and the continuous adjoint give the same gradient
  of the Hutchinson NLL (to the solver's tolerance)."""
  x = jnp.asarray(np.random.default_rng(2).normal(size=(4, 2)), jnp.float32)
  e = cnf.probe(jax.random.key(4), x.shape)
  grads = []
  for adjoint in cnf.ADJOINTS:
    model, params = _cnf(adjoint=adjoint, hidden=(8, 8), rtol=1e-6, atol=1e-6)
    nll = lambda p: -cnf.batch_log_prob(model, p, x, e)[0].mean()
    grads.append(jax.jit(jax.grad(nll))(params))
  for a, b in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1]), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)
  assert max(np.abs(g).max() for g in jax.tree.leaves(grads[0])) > 1e-3


def test_realnvp_is_a_bijection_with_the_exact_logdet_and_unit_mass():
  model = density.RealNVP(num_couplings=4, hidden=(16,))
  x = jnp.asarray(np.random.default_rng(3).normal(size=(6, 2)), jnp.float32)
  variables = model.init(jax.random.key(0), x, method='forward')
  rng = np.random.default_rng(4)  # the zero-initialised last layers made non-zero
  variables = jax.tree.map(lambda v: jnp.asarray(0.2 * rng.normal(size=v.shape), v.dtype),
                           variables)
  z, logdet = model.apply(variables, x, method='forward')
  np.testing.assert_allclose(model.apply(variables, z, method='inverse'), x, atol=1e-5)
  jac = jax.vmap(jax.jacfwd(lambda v: model.apply(variables, v[None], method='forward')[0][0]))(x)
  np.testing.assert_allclose(logdet, np.linalg.slogdet(np.asarray(jac))[1], atol=1e-4)
  assert np.abs(np.asarray(z - x)).max() > 0.1
  grid, area = _grid()
  z, logdet = model.apply(variables, grid, method='forward')
  assert np.exp(_normal_logpdf(z) + np.asarray(logdet)).sum() * area == pytest.approx(
      1.0, abs=0.02)


def test_toy2d_densities():
  """Deterministic per seed; the splits differ; the closed-form densities are normalised
  and every checkerboard point lies on a dark square."""
  for name in toy2d.DENSITIES:
    a, b = toy2d.points(name, 500, 7), toy2d.points(name, 500, 7)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (500, 2) and a.dtype == np.float32 and np.abs(a).max() < 6
    assert not np.array_equal(a, toy2d.points(name, 500, 8))
  assert set(toy2d.DENSITIES) == set(density.DENSITIES)
  cb = toy2d.points('checkerboard', 2000, 1)
  assert np.isfinite(toy2d.log_density('checkerboard', cb)).all()
  assert np.abs(cb).max() <= 4 and (np.floor(cb / 2).sum(1) % 2 == 0).all()
  grid, area = _grid(300, 6.0)  # cells of 0.04: the squares' edges fall between them
  for name in ('eight_gaussians', 'checkerboard'):
    mass = np.exp(toy2d.log_density(name, np.asarray(grid))).sum() * area
    assert mass == pytest.approx(1.0, abs=1e-3)
  g = toy2d.points('eight_gaussians', 4000, 1)
  # The mixture's own samples' NLL is near its entropy: log 8 + log(2 pi e sigma^2) = 2.84
  # for components that barely overlap.
  want = math.log(8) + math.log(2 * math.pi * math.e * toy2d.GAUSSIAN_STD ** 2)
  assert -toy2d.log_density('eight_gaussians', g).mean() == pytest.approx(want, abs=0.05)


def test_bad_options_fail_clearly():
  for spec, key, value, match in (
      ('cnf_2d.py:tiny', 'task_kwargs.density', 'spiral', 'valid: moons'),
      ('cnf_2d.py:tiny', 'task_kwargs.trace', 'hutch', 'valid: hutchinson, exact'),
      ('cnf_2d.py:tiny', 'model.solver', 'euler', 'valid: tsit5, dopri5'),
      ('cnf_2d.py:tiny', 'model.adjoint', 'adj', 'valid: recursive, backsolve'),
      ('cnf_2d.py:tiny', 'parallelism', 'pmap', "use parallelism='jit'")):
    config = load_config(spec)
    with config.unlocked():
      parent, _, leaf = key.rpartition('.')
      (config[parent] if parent else config)[leaf] = value
    with pytest.raises(ConfigError, match=match):
      density.make(config)


_train = train_spec


@pytest.mark.parametrize('model', ['cnf', 'realnvp'])
def test_tiny_config_trains_resumes_shards_and_samples(model, tmp_path, data_dir):
  """4 steps with checkpoints at 2 and 4, eval on 32 test points; the step-2 checkpoint
  resumes to the same losses and state, bitwise; 8 devices give the same losses as 1;
  `train.sample` writes a PNG of 2-D points (the CNF's: the same on 1 and 8 devices)."""
  spec = f'cnf_2d.py:tiny,model={model}'
  result = _train(spec, tmp_path / 'straight', data_dir, data__eval_split='test[:32]')
  assert set(result) >= {'nll'} and 1.0 < result['nll'] < 20.0
  check_resumes_from_step_2(spec, _train, tmp_path, data_dir)
  eight = run_cli(['--config', f'configs/{spec}', '--workdir', tmp_path / 'eight',
                   '--config.eval_every=0', '--config.ckpt_every=0'], data_dir, devices=8)
  assert eight.returncode == 0, eight.stderr[-2000:]
  losses = [sorted((s, r['loss']) for s, r in read_metrics(tmp_path / name).items())
            for name in ('straight', 'eight')]
  np.testing.assert_allclose([l for _, l in losses[1]], [l for _, l in losses[0]], rtol=1e-5)
  points = []
  for devices in ((1, 8) if model == 'cnf' else (1,)):
    proc = run_sample(['--config', f'configs/{spec}', '--workdir', tmp_path / 'straight',
                       '--num_samples', '24', '--seed', '3'], data_dir, devices=devices)
    assert proc.returncode == 0, proc.stderr[-2000:]
    stem = tmp_path / 'straight' / 'samples' / 'step4_seed3'
    assert os.path.getsize(f'{stem}.png') > 0
    points.append(np.load(f'{stem}.npz')['points'])
  assert points[0].shape == (24, 2) and np.isfinite(points[0]).all()
  assert len({p.tobytes() for p in points[0]}) == 24
  # Each row's solve is its own, but the batch's size changes XLA's kernels in the last
  # bits and so, rarely, an accepted step: equal to the solver's tolerance (tiny: 1e-4).
  np.testing.assert_allclose(points[0], points[-1], atol=1e-3)
