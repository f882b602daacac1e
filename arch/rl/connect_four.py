"""Connect Four's fixed-depth search, the opponent AlphaZero's evaluation measures against
(arch/rl/alphazero.py, `game='connect_four'`): a full-width negamax to a fixed depth in
plies, vectorised over positions in JAX.

Alpha-beta search returns the same root values as full-width minimax to the same depth; its
pruning only saves work on a sequential machine. Here every one of the 7^depth lines is
evaluated at once (vmapped over positions, unrolled over the static depth), so the searcher
is minimax without the pruning: at depth d it is exact about every win and loss within d
plies. Scores, from the view of the player to move: a line that wins on its k-th ply (k = 1
the move itself) scores d + 1 - k, one that loses there -(d + 1 - k), so a sooner win is
preferred and a loss put off; a full board 0; positions at the horizon 0 (no heuristic).
The player (`search_player`) picks uniformly at random among the columns of the best score,
as tic-tac-toe's minimax player picks among optimal moves.

Boards are pgx's: 6 rows x 7 columns, row 0 at the top, a stone dropped into a column lands
in its lowest empty row; the observation's plane 0 holds the stones of the player to move,
plane 1 the opponent's.

Dimension key: B positions, A actions (7 columns), R rows (6), C columns (7).
"""

import jax
import jax.numpy as jnp

ROWS, COLS = 6, 7


def four_in_a_row(stones_BRC):
  """Whether the stones (..., R, C) bool hold four in a line: a row, a column or a
  diagonal (...)."""
  s = stones_BRC
  lines = (
      s[..., :, :-3] & s[..., :, 1:-2] & s[..., :, 2:-1] & s[..., :, 3:],          # rows
      s[..., :-3, :] & s[..., 1:-2, :] & s[..., 2:-1, :] & s[..., 3:, :],          # columns
      s[..., :-3, :-3] & s[..., 1:-2, 1:-2] & s[..., 2:-1, 2:-1] & s[..., 3:, 3:],  # down-right
      s[..., :-3, 3:] & s[..., 1:-2, 2:-1] & s[..., 2:-1, 1:-2] & s[..., 3:, :-3])  # down-left
  return jnp.stack([line.any((-2, -1)) for line in lines]).any(0)


def drops(occupied_BRC):
  """(stone (B, A, R, C) bool: the cell a stone dropped into column a lands on, legal
  (B, A): the column is not full)."""
  filled_BC = occupied_BRC.sum(-2)
  row_BA = ROWS - 1 - filled_BC  # the lowest empty row (-1 in a full column: no cell)
  rows = jnp.arange(ROWS)[None, None, :, None]
  cols = jnp.arange(COLS)[None, None, None, :]
  stone_BARC = (rows == row_BA[:, :, None, None]) & (cols == jnp.arange(COLS)[None, :, None, None])
  return stone_BARC, filled_BC < ROWS


def action_values(mine_BRC, theirs_BRC, depth: int):
  """Negamax scores (B, A) float32 of each column for the player to move (whose stones are
  `mine`) searched `depth` >= 1 plies deep (module docstring); -inf on a full column."""
  b = mine_BRC.shape[0]
  stone_BARC, legal_BA = drops(mine_BRC | theirs_BRC)
  after_BARC = mine_BRC[:, None] | stone_BARC
  won_BA = four_in_a_row(after_BARC)
  full_BA = (after_BARC | theirs_BRC[:, None]).all((-2, -1))
  q_BA = jnp.where(won_BA, jnp.float32(depth), 0.0)
  if depth > 1:  # the opponent's best reply, negated
    opp_mine = jnp.broadcast_to(theirs_BRC[:, None], after_BARC.shape).reshape(-1, ROWS, COLS)
    reply = action_values(opp_mine, after_BARC.reshape(-1, ROWS, COLS), depth - 1)
    q_BA = jnp.where(won_BA | full_BA, q_BA, -reply.max(-1).reshape(b, COLS))
  return jnp.where(legal_BA, q_BA, -jnp.inf)


def search_player(depth: int):
  """`act(state (N,), key) -> columns (N,)` of pgx connect_four states: uniform among the
  columns of the best depth-`depth` score."""

  def act(state, key):
    obs = state.observation
    q_NA = action_values(obs[..., 0], obs[..., 1], depth)
    best_NA = (q_NA == q_NA.max(-1, keepdims=True)) & state.legal_action_mask
    return jax.random.categorical(key, jnp.where(best_NA, 0.0, -jnp.inf))

  return act
