"""Score SDEs: the VP kernel is DDPM's continuous limit, and the predictor-corrector
sampler draws the right law from an exact score."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arch.generative import score


def test_vp_kernel_is_the_limit_of_ddpm():
  sde = score.vp_sde(0.1, 20.0)
  n = 40_000
  for t in (0.3, 1.0):
    betas = (0.1 + np.arange(1, int(n * t) + 1) / n * 19.9) / n  # beta(t_i) dt
    abar = np.prod(1 - betas)
    assert float(sde.mean_factor(jnp.asarray(t))) ** 2 == pytest.approx(abar, rel=3e-3)
    assert float(sde.std(jnp.asarray(t))) ** 2 == pytest.approx(1 - abar, rel=3e-3)


@pytest.mark.parametrize('kind,corrector', [('ve', 1), ('ve', 0), ('vp', 1)])
def test_pc_sampler_draws_a_gaussian_from_its_exact_score(kind, corrector):
  # Data N(mu, s2 I): the perturbed marginal is N(m(t) mu, m(t)^2 s2 + std(t)^2). 64
  # dimensions, as the digits: the corrector's step size comes from per-sample norms.
  s2, mu = 0.09, 0.3
  sde = score.ve_sde(0.01, 5.0) if kind == 've' else score.vp_sde()

  def exact(x, t):
    m, sd = sde.mean_factor(t)[:, None, None, None], sde.std(t)[:, None, None, None]
    return -(x - m * mu) / (m ** 2 * s2 + sd ** 2)

  keys = jax.random.split(jax.random.key(0), 256)
  x = jax.jit(lambda k: score.pc_sample(exact, sde, k, (8, 8, 1), steps=400,
                                        corrector_steps=corrector, snr=0.1))(keys)
  assert float(x.mean()) == pytest.approx(mu, abs=0.02)
  assert float(x.var()) == pytest.approx(s2, rel=0.08)
  # rows are independent draws: no two alike
  assert len({r.tobytes() for r in np.asarray(x)}) == 256
