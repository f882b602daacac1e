"""Procedural road traffic: speeds at 40 sensors of a small road network, every 5 minutes for
4 weeks, as a TFDS builder for spatio-temporal forecasting (ST-GCN).

The network is a 5 x 8 street grid (networkx `grid_2d_graph`) whose junctions, the sensors,
sit near the grid points (positions jittered by N(0, 0.15^2)); every street is listed both
ways with the weight exp(-(d / 1.0)^2) of its length d (Yu et al.'s Gaussian kernel of the
distance). Traffic flows one way along each street, from west to east (from the lower to the
higher value of x + 0.3 y), so a western sensor is upstream of its eastern neighbours.

Each sensor holds a congestion c >= 0 that moves downstream: per 5-minute step,

  c_t+1(i) = max(0, RHO c_t(i) + KAPPA sum_{j -> i} c_t(j) / outdeg(j) + s_t(i) + e_t(i))

(a fraction RHO stays, KAPPA leaves along the out-streets in equal parts, the rest clears),
with e ~ N(0, 0.01^2), and an inflow s_t(i) = base_i * demand(t) + incident_t(i): a daily
demand profile (288 steps a day; weekdays have rush hours around 8:00 and 17:30, weekends
one broad midday bump) and incidents, which start at each sensor with probability 1/576 a
step (every 2 days on average) and add U(0.2, 0.5) for 3-12 steps. An incident's jam, and
every noise, reaches the downstream sensors over the next steps, which is what the graph
tells a forecaster. The observed speed (mph) is v_free(i) / (1 + c) + N(0, 0.5^2), with
v_free(i) ~ U(60, 70).

Splits are in time: days 1-20 train, 21-24 validation, 25-28 test (the first day is a
Monday). An example is a window: `history` (12, 40), the speeds of the last hour, and
`target` (9, 40), the next 45 minutes (horizons 15/30/45 minutes are steps 3/6/9); every
start is used (5,740 train, 1,132 validation and test windows), with the graph's
`senders`, `receivers` and `weights` (E,) (134 directed streets). Over the train split the
speed has mean 57.68 and standard deviation 7.98 (`SPEED_MEAN`, `SPEED_STD`).

Reference points on the test windows (numpy, 2026-12-06): persistence (the last speed)
has MAE 1.69 / 2.61 / 3.32 mph at 15 / 30 / 45 minutes; a least-squares linear forecaster
shared by the sensors gives 1.64 / 2.57 / 3.27 from a sensor's own hour, and 1.38 / 2.18 /
2.90 with its upstream, 2-hop upstream and downstream neighbours' last 30 minutes.
"""

import functools

import numpy as np

from train.datasets.procedural import Procedural

ROWS, COLS = 5, 8
NUM_NODES = ROWS * COLS
NUM_EDGES = 2 * (ROWS * (COLS - 1) + (ROWS - 1) * COLS)  # every street both ways
STEPS_PER_DAY = 288  # 5-minute steps
DAYS = 28
HISTORY, HORIZON = 12, 9
RHO, KAPPA = 0.55, 0.4
SPLITS = {'train': (0, 20), 'validation': (20, 24), 'test': (24, 28)}  # days [start, end)
SPEED_MEAN, SPEED_STD = 57.68, 7.98


def road_network() -> dict:
  """The fixed graph: positions (N, 2); senders, receivers, weights (E,) with every street
  both ways; upstream, downstream (E / 2,), each street's one-way direction of flow."""
  import networkx as nx  # here, not at the top: every run imports the dataset modules
  rng = np.random.default_rng(0)
  grid = nx.grid_2d_graph(ROWS, COLS)
  order = sorted(grid.nodes)
  index = {node: i for i, node in enumerate(order)}
  positions = np.array([(c, r) for r, c in order], np.float64)
  positions += 0.15 * rng.normal(size=positions.shape)
  pairs = np.array(sorted((index[a], index[b]) for a, b in grid.edges), np.int32)
  length = np.linalg.norm(positions[pairs[:, 0]] - positions[pairs[:, 1]], axis=1)
  weights = np.exp(-length ** 2).astype(np.float32)
  potential = positions[:, 0] + 0.3 * positions[:, 1]
  forward = potential[pairs[:, 0]] < potential[pairs[:, 1]]
  return {'positions': positions.astype(np.float32),
          'senders': np.concatenate([pairs[:, 0], pairs[:, 1]]),
          'receivers': np.concatenate([pairs[:, 1], pairs[:, 0]]),
          'weights': np.concatenate([weights, weights]),
          'upstream': np.where(forward, pairs[:, 0], pairs[:, 1]),
          'downstream': np.where(forward, pairs[:, 1], pairs[:, 0])}


def demand(steps) -> np.ndarray:
  """The daily demand profile at absolute steps (day 0 a Monday)."""
  hour = (steps % STEPS_PER_DAY) / 12.0
  weekday = (steps // STEPS_PER_DAY) % 7 < 5
  bump = lambda centre, width: np.exp(-0.5 * ((hour - centre) / width) ** 2)
  return 0.3 + np.where(weekday, 1.5 * bump(8.0, 1.0) + 1.3 * bump(17.5, 1.2),
                        0.6 * bump(13.0, 2.5))


@functools.lru_cache(maxsize=1)
def speeds() -> np.ndarray:
  """(DAYS * 288, N) float32: the whole simulated series, the same on every call."""
  net = road_network()
  up, down = net['upstream'], net['downstream']
  outdeg = np.bincount(up, minlength=NUM_NODES)
  transport = np.zeros((NUM_NODES, NUM_NODES))
  transport[down, up] = 1.0 / outdeg[up]  # column j: where node j's outflow goes
  rng = np.random.default_rng(1)
  base = rng.uniform(0.01, 0.03, NUM_NODES)
  free = rng.uniform(60.0, 70.0, NUM_NODES)
  total = DAYS * STEPS_PER_DAY
  profile = demand(np.arange(total))
  c = np.zeros(NUM_NODES)
  incident, left = np.zeros(NUM_NODES), np.zeros(NUM_NODES, np.int64)
  congestion = np.zeros((total, NUM_NODES))
  for t in range(total):
    new = rng.random(NUM_NODES) < 1.0 / (2 * STEPS_PER_DAY)
    incident = np.where(new, rng.uniform(0.2, 0.5, NUM_NODES), incident)
    left = np.where(new, rng.integers(3, 13, NUM_NODES), left)
    active = left > 0
    left = left - active
    inflow = base * profile[t] + active * incident
    c = RHO * c + KAPPA * (transport @ c) + inflow + 0.01 * rng.normal(size=NUM_NODES)
    c = np.maximum(c, 0.0)
    congestion[t] = c
  observed = free / (1.0 + congestion) + 0.5 * rng.normal(size=congestion.shape)
  return observed.astype(np.float32)


def window_starts(split: str) -> np.ndarray:
  """The absolute step of each window's first target step, for the windows of `split`
  (history and target both inside the split's days)."""
  first, last = (d * STEPS_PER_DAY for d in SPLITS[split])
  return np.arange(first + HISTORY, last - HORIZON + 1)


def window(series, t: int, graph: dict) -> dict:
  """The example whose target starts at step t."""
  return {'history': series[t - HISTORY:t], 'target': series[t:t + HORIZON],
          'senders': graph['senders'], 'receivers': graph['receivers'],
          'weights': graph['weights']}


class Traffic(Procedural):
  """Speeds at 40 road sensors every 5 minutes: 1-hour windows and the next 45 minutes."""
  FEATURES = {'history': ((HISTORY, NUM_NODES), np.float32), 'target': ((HORIZON, NUM_NODES), np.float32),
              'senders': ((None,), np.int32), 'receivers': ((None,), np.int32),
              'weights': ((None,), np.float32)}
  SPLITS = {name: (name,) for name in SPLITS}

  def generate(self, split):
    series, graph = speeds(), road_network()
    for t in window_starts(split):
      yield int(t), window(series, int(t), graph)  # keyed by time step
