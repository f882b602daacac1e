"""Noisy 2-D spiral trajectories observed at irregular times, as a procedural TFDS builder:
the latent-ODE experiment of the Neural ODE paper (Chen et al. 2018, section 5.1), for
interpolation on the observed window and extrapolation past it (arch/dynamics/).

Each trajectory winds around the origin at a constant angular speed OMEGA, clockwise or
counter-clockwise (half each), while its radius shrinks linearly in time (an Archimedean
spiral: r is linear in the angle):

  x(t) = r0 (1 - SHRINK t) (cos(phi0 + s OMEGA t), sin(phi0 + s OMEGA t)),  s = +1 or -1,

with r0 ~ U(0.7, 1.3), phi0 ~ U(0, 2 pi), plus N(0, NOISE^2) observation noise on every
coordinate. In polar coordinates it is the autonomous ODE dr/dt = -SHRINK r0, dphi/dt = s
OMEGA, but a point of the plane does not tell which way it turns or how fast its radius
falls: a model needs a latent state beyond the two observed coordinates.

Times lie on a dense grid of GRID_SIZE points, GRID_STEP apart (t = 0, 0.05, ..., 4.95:
about 1.5 turns). The observed window is the first WINDOW grid points (t < 3); each
example observes a random subset of K ~ U{MIN_OBS, ..., NUM_OBS} of them, in time order,
padded to NUM_OBS with a mask (`times` repeats the last observed time on padding, `values`
are zeros there). The held-out extrapolation segment is every grid point after the window
(NUM_EXTRAP = 40, t = 3.00 ... 4.95), noisy like the observations.

Features: times (NUM_OBS,) float32, values (NUM_OBS, 2) float32, mask (NUM_OBS,) bool,
extrap_times (NUM_EXTRAP,) float32, extrap_values (NUM_EXTRAP, 2) float32, clockwise
int32. Splits are drawn with numpy from fixed seeds: 4,000 train, 500 validation and 1,000
test trajectories.
"""

import numpy as np

from train.datasets.procedural import Procedural

GRID_SIZE, GRID_STEP, WINDOW = 100, 0.05, 60
NUM_OBS, MIN_OBS = 40, 20
NUM_EXTRAP = GRID_SIZE - WINDOW
OMEGA = 3 * np.pi / (GRID_SIZE * GRID_STEP)  # 1.5 turns over the grid
SHRINK = 0.12  # the radius falls to 40% of r0 by t = 5
NOISE = 0.05
DIM = 2
SPLITS = {'train': (4_000, 1), 'validation': (500, 2), 'test': (1_000, 3)}  # (count, seed)


def grid() -> np.ndarray:
  """(GRID_SIZE,) float32: the dense time grid every observation lies on."""
  return (GRID_STEP * np.arange(GRID_SIZE)).astype(np.float32)


def spiral(t, r0, phi0, clockwise) -> np.ndarray:
  """The noise-free trajectory at times t (...,) -> (..., 2)."""
  s = -1.0 if clockwise else 1.0
  r = r0 * (1 - SHRINK * t)
  phi = phi0 + s * OMEGA * t
  return np.stack([r * np.cos(phi), r * np.sin(phi)], -1)


def example(rng) -> dict:
  """One trajectory: its irregular observations in the window and the held-out segment."""
  r0, phi0 = rng.uniform(0.7, 1.3), rng.uniform(0, 2 * np.pi)
  clockwise = bool(rng.integers(2))
  t = grid()
  noisy = spiral(t, r0, phi0, clockwise) + NOISE * rng.normal(size=(GRID_SIZE, DIM))
  k = int(rng.integers(MIN_OBS, NUM_OBS + 1))
  picked = np.sort(rng.choice(WINDOW, size=k, replace=False))
  times = np.full((NUM_OBS,), t[picked[-1]], np.float32)
  values = np.zeros((NUM_OBS, DIM), np.float32)
  mask = np.zeros((NUM_OBS,), bool)
  times[:k], values[:k], mask[:k] = t[picked], noisy[picked], True
  return {'times': times, 'values': values, 'mask': mask,
          'extrap_times': t[WINDOW:], 'extrap_values': noisy[WINDOW:].astype(np.float32),
          'clockwise': np.int32(clockwise)}


class Spirals(Procedural):
  """Noisy 2-D spirals, irregularly observed on [0, 3), held out on [3, 5)."""
  FEATURES = {'times': ((NUM_OBS,), np.float32), 'values': ((NUM_OBS, DIM), np.float32),
              'mask': ((NUM_OBS,), np.bool_), 'extrap_times': ((NUM_EXTRAP,), np.float32),
              'extrap_values': ((NUM_EXTRAP, DIM), np.float32), 'clockwise': ((), np.int32)}
  SPLITS = SPLITS

  def generate(self, count, seed):
    rng = np.random.default_rng(seed)
    for _ in range(count):
      yield example(rng)
