"""Procedural 2-D densities, as a TFDS builder, for density estimation with flows: the toy
sets of the FFJORD paper (Grathwohl et al. 2019) and its predecessors.

Every example holds one point of each density, as its own feature (a model reads the one
its config names, e.g. the CNF task's `density=` option):

  moons           scikit-learn's two moons with Gaussian noise 0.1, scaled by 2 and shifted
                  by (-1, -0.2) so they sit around the origin;
  eight_gaussians an equal mixture of 8 Gaussians of standard deviation 0.5 / sqrt(2) on
                  the circle of radius 2 sqrt(2) (angles k pi / 4; entropy 2.832 nats,
                  the mean exact NLL of 100,000 of its points);
  checkerboard    uniform on the 8 dark squares of side 2 of a 4 x 4 board over [-4, 4]^2
                  (density 1/32 there: the exact entropy is log 32 = 3.466 nats);
  pinwheel        5 curved arms: a point at radius 1 + 0.3 e1 and spread 0.1 e2 along the
                  arm (e ~ N(0, I)), rotated by the arm's angle plus 0.25 exp(radius),
                  scaled by 2.

All four are deterministic functions of the split's seed (numpy), so log-likelihoods on the
test split are comparable between runs and models. Splits: 50,000 train, 5,000 validation
and 5,000 test points of each density. `log_density` gives the exact density of
eight_gaussians and checkerboard, the reference for a model's test NLL.
"""

import math

import numpy as np

from train.datasets.procedural import Procedural

DENSITIES = ('moons', 'eight_gaussians', 'checkerboard', 'pinwheel')
SPLITS = {'train': (50_000, 1), 'validation': (5_000, 2), 'test': (5_000, 3)}  # (count, seed)
GAUSSIAN_RADIUS, GAUSSIAN_STD = 2 * math.sqrt(2), 0.5 / math.sqrt(2)


def moons(rng, n: int) -> np.ndarray:
  """Two interleaving half circles (scikit-learn's make_moons), noise 0.1, (n, 2)."""
  upper = rng.random(n) < 0.5
  angle = rng.random(n) * math.pi
  x = np.where(upper, np.cos(angle), 1 - np.cos(angle))
  y = np.where(upper, np.sin(angle), 0.5 - np.sin(angle))
  points = np.stack([x, y], 1) + 0.1 * rng.normal(size=(n, 2))
  return 2 * points + np.array([-1.0, -0.2])


def gaussian_centres() -> np.ndarray:
  angle = np.arange(8) * math.pi / 4
  return GAUSSIAN_RADIUS * np.stack([np.cos(angle), np.sin(angle)], 1)


def eight_gaussians(rng, n: int) -> np.ndarray:
  return gaussian_centres()[rng.integers(0, 8, n)] + GAUSSIAN_STD * rng.normal(size=(n, 2))


def checkerboard(rng, n: int) -> np.ndarray:
  """Uniform on the squares [2i, 2i + 2) x [2j, 2j + 2) with i + j even, i, j in -2..1."""
  x = rng.random(n) * 4 - 2
  y = rng.random(n) - 2 * rng.integers(0, 2, n) + np.floor(x) % 2
  return 2 * np.stack([x, y], 1)


def pinwheel(rng, n: int, arms: int = 5) -> np.ndarray:
  arm = rng.integers(0, arms, n)
  e = rng.normal(size=(n, 2)) * np.array([0.3, 0.1])
  radius = 1 + e[:, 0]
  angle = 2 * math.pi * arm / arms + 0.25 * np.exp(radius)
  c, s = np.cos(angle), np.sin(angle)
  return 2 * np.stack([c * radius - s * e[:, 1], s * radius + c * e[:, 1]], 1)


SAMPLERS = {'moons': moons, 'eight_gaussians': eight_gaussians, 'checkerboard': checkerboard,
            'pinwheel': pinwheel}


def points(density: str, count: int, seed: int) -> np.ndarray:
  """`count` points of `density` from `seed`, (count, 2) float32."""
  rng = np.random.default_rng([seed, DENSITIES.index(density)])
  return SAMPLERS[density](rng, count).astype(np.float32)


def log_density(density: str, x_N2: np.ndarray) -> np.ndarray:
  """The exact log-density (nats) of eight_gaussians or checkerboard at points (N, 2)."""
  x = np.asarray(x_N2, np.float64)
  if density == 'eight_gaussians':
    d2 = ((x[:, None, :] - gaussian_centres()[None]) ** 2).sum(-1)  # (N, 8)
    log_k = -d2 / (2 * GAUSSIAN_STD ** 2) - math.log(2 * math.pi * GAUSSIAN_STD ** 2)
    top = log_k.max(1)
    return top + np.log(np.exp(log_k - top[:, None]).mean(1))
  if density == 'checkerboard':
    cell = np.floor(x / 2)
    inside = (np.abs(x) <= 4).all(1) & ((cell.sum(1) % 2) == 0)
    return np.where(inside, -math.log(32.0), -np.inf)
  raise ValueError(f'no closed-form density for {density!r}; have eight_gaussians, '
                   f'checkerboard')


class Toy2d(Procedural):
  """2-D points of four densities (moons, 8 Gaussians, checkerboard, pinwheel)."""
  FEATURES = {name: ((2,), np.float32) for name in DENSITIES}
  SPLITS = SPLITS

  def generate(self, count, seed):
    data = {name: points(name, count, seed) for name in DENSITIES}
    for i in range(count):
      yield {name: data[name][i] for name in DENSITIES}
