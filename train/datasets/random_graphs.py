"""Procedural molecule-like graphs with an exactly computable energy, as a TFDS builder for
graph regression (MPNN).

A graph has 10-30 atoms of 4 types and is connected: a random tree (each new atom bonds to
an earlier one with fewer than 4 bonds) plus up to n // 5 ring-closing bonds between
non-bonded atoms with free valence (no atom holds more than 4 bonds). Each bond has one of
3 types (drawn 60% / 30% / 10%), each atom one of 4 (50% / 20% / 20% / 10%). Features are
one-hots: `nodes` (n, 4) atom types, `edges` (e, 3) bond types, every bond listed both
ways (e = 2 x bonds, `senders` -> `receivers`).

The target is an energy per atom: a sum of atom, bond and angle terms from the fixed tables
below, divided by the number of atoms n,

  energy = (sum_atoms ATOM[a_v] + sum_bonds BOND[b_uv] * PAIR[a_u, a_v]
            + sum_atoms v sum_{pairs u < w of v's neighbours} ANGLE[b_vu, b_vw]) / n

so it depends on the bond types (a network blind to edge features can only guess them)
and, through the angles, on each atom's 2-hop neighbourhood. (Per atom, because the sum
itself grows with n, which an attention readout such as set2set, a weighted mean over the
nodes, cannot see.) Splits from different seeds:
10,000 train, 1,000 validation, 1,000 test graphs. Over the train split the energy has mean
2.552 and standard deviation 0.1975 (`TARGET_MEAN`, `TARGET_STD`, for normalising).
"""

import numpy as np

from train.datasets.procedural import Procedural

ATOM_TYPES, BOND_TYPES = 4, 3
MIN_NODES, MAX_NODES = 10, 30
MAX_DEGREE = 4
# Per-graph budgets: a tree has n - 1 bonds, rings add up to n // 5; both directions.
MAX_EDGES = 2 * (MAX_NODES - 1 + MAX_NODES // 5)
ATOM_PROBS = (0.5, 0.2, 0.2, 0.1)
BOND_PROBS = (0.6, 0.3, 0.1)
ATOM = np.array([1.0, 1.5, 2.0, 0.5])
BOND = np.array([1.0, 2.0, 3.0])
PAIR = np.array([[1.0, 0.8, 0.6, 1.2],
                 [0.8, 0.7, 0.9, 0.5],
                 [0.6, 0.9, 0.4, 1.1],
                 [1.2, 0.5, 1.1, 0.3]])
ANGLE = np.array([[0.1, -0.2, 0.3],
                  [-0.2, 0.4, -0.5],
                  [0.3, -0.5, 0.6]])
SPLITS = {'train': (10_000, 1), 'validation': (1_000, 2), 'test': (1_000, 3)}  # (count, seed)
TARGET_MEAN, TARGET_STD = 2.552, 0.1975


def random_molecule(rng) -> tuple:
  """(atom types (n,), bonds (m, 2) with u < v, bond types (m,)) of one random graph."""
  n = int(rng.integers(MIN_NODES, MAX_NODES + 1))
  atoms = rng.choice(ATOM_TYPES, size=n, p=ATOM_PROBS)
  degree = np.zeros(n, np.int64)
  bonds = []
  for v in range(1, n):
    free = np.flatnonzero(degree[:v] < MAX_DEGREE)
    u = int(rng.choice(free))
    bonds.append((u, v))
    degree[u] += 1
    degree[v] += 1
  present = set(bonds)
  for _ in range(int(rng.integers(0, n // 5 + 1))):
    free = np.flatnonzero(degree < MAX_DEGREE)
    if len(free) < 2:
      break
    u, v = sorted(int(i) for i in rng.choice(free, size=2, replace=False))
    if (u, v) in present:
      continue  # a failed draw closes no ring
    bonds.append((u, v))
    present.add((u, v))
    degree[u] += 1
    degree[v] += 1
  bonds = np.asarray(bonds, np.int64)
  types = rng.choice(BOND_TYPES, size=len(bonds), p=BOND_PROBS)
  return atoms, bonds, types


def energy(atoms, bonds, types) -> float:
  """The target of a graph (module docstring), term by term, per atom."""
  total = ATOM[atoms].sum()
  total += (BOND[types] * PAIR[atoms[bonds[:, 0]], atoms[bonds[:, 1]]]).sum()
  incident = [[] for _ in atoms]  # bond types at each atom
  for (u, v), b in zip(bonds, types):
    incident[u].append(b)
    incident[v].append(b)
  for bs in incident:
    for i in range(len(bs)):
      for j in range(i + 1, len(bs)):
        total += ANGLE[bs[i], bs[j]]
  return float(total / len(atoms))


def example(rng) -> dict:
  """One graph as the builder stores it."""
  atoms, bonds, types = random_molecule(rng)
  senders = np.concatenate([bonds[:, 0], bonds[:, 1]]).astype(np.int32)
  receivers = np.concatenate([bonds[:, 1], bonds[:, 0]]).astype(np.int32)
  return {'nodes': np.eye(ATOM_TYPES, dtype=np.float32)[atoms],
          'edges': np.eye(BOND_TYPES, dtype=np.float32)[np.concatenate([types, types])],
          'senders': senders, 'receivers': receivers,
          'target': np.array([energy(atoms, bonds, types)], np.float32)}


class RandomGraphs(Procedural):
  """Random molecule-like graphs (10-30 atoms) with an additive bond and angle energy."""
  FEATURES = {'nodes': ((None, ATOM_TYPES), np.float32), 'edges': ((None, BOND_TYPES), np.float32),
              'senders': ((None,), np.int32), 'receivers': ((None,), np.int32),
              'target': ((1,), np.float32)}
  SPLITS = SPLITS

  def generate(self, count, seed):
    rng = np.random.default_rng(seed)
    for _ in range(count):
      yield example(rng)
