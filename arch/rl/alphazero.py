"""AlphaZero (Silver et al. 2018, "A general reinforcement learning algorithm that masters
chess, shogi, and Go through self-play") on tic-tac-toe and Connect Four: a policy-value
network trained on the outcomes and search policies of its own Monte Carlo tree search,
self-play and updates in one jitted train step. The board is pgx's (Koyamada et al. 2023,
"Pgx: hardware-accelerated parallel game simulators for reinforcement learning"); the search
is mctx's (DeepMind's JAX MCTS library).

One loop step:
1. self-play: `num_games` games from the empty board, all moves of all games at once
   (vmapped over games, scanned over the at most 9 plies; 42 in Connect Four). At each ply
   a search of `num_simulations` simulations runs from every position. AlphaZero searches
   with the real simulator, not a learned model: the search's recurrent function is pgx's
   `step`, the network only gives the prior p(.|s) and the leaf value v(s). Two-player
   zero-sum bookkeeping as in a negamax: the reward of an edge is the outcome for the
   player who moved (+1 for a winning move, 0 otherwise), values are from the view of the
   player to move, the discount is -1 between plies (the next value is the opponent's) and
   0 after a terminal position. Occupied squares are masked out: at the root through mctx's
   `invalid_actions` (never searched, never played, zero in the policy target), below it
   through a prior of exactly 0 (the lowest float as its logit). The Gumbel interior rule
   then never picks one: its scores pi' - N / (1 + sum N) sum to a positive number over the
   children while a zero-prior unvisited child scores 0. PUCT below the root may still try
   one whose Q is the highest; pgx ends the game there as a loss for the mover, so the
   search backs it up as a losing move.
   `search='gumbel'` (default): Gumbel MuZero (Danihelka et al. 2022, "Policy improvement
   by planning with Gumbel"), sequential halving over Gumbel-perturbed root actions; the
   policy target pi is its improved policy softmax(logits + sigma(completed Q)).
   `search='puct'`: AlphaZero's own PUCT search with Dirichlet noise at the root (fraction
   0.25, `dirichlet_alpha`); pi is the root's visit distribution. The move played is drawn
   from pi^(1/temperature) in the first `temperature_plies` plies (AlphaZero: temperature
   1 for the first 30 moves), then it is the search's choice (Gumbel's sequential-halving
   winner, PUCT's most visited move).
2. every position that was played (not those after a game ended) goes into the replay
   buffer with its search policy pi and the game's outcome z from the view of the player
   to move there (+1 win, 0 draw, -1 loss): a ring buffer of the last `buffer_size`
   positions (AlphaZero trained on the positions of its most recent games);
3. `updates_per_step` gradient steps (the loop's `supervised` builder: the config's
   optimizer and schedule), each on `replay_batch` positions drawn uniformly from the
   buffer (with `augment`, each seen through a random one of the board's 8 symmetries,
   AlphaGo Zero's augmentation; AlphaZero did without, chess having no such symmetry), of the
   paper's loss

     l = (z - v)^2 - pi^T log p + c ||theta||^2,

   the squared error with `value_coef` (1 in the paper) and the cross-entropy averaged
   over the minibatch; the L2 term is the config's `weight_decay` (c = weight_decay / 2:
   optax's add_decayed_weights adds weight_decay x theta to the gradient).

The network (`Model`): an MLP over the two 3x3 planes of the player to move's and the
opponent's stones (pgx's observation), a policy head of 9 logits and a tanh value head.

State: the replay buffer is the non-param collection 'replay', so checkpoints hold it and
a resumed run draws the same minibatches from the same positions, bit for bit. Self-play
starts every loop step from empty boards, so no game is in flight between steps. Keys come
from `builders.shared_rng` (every device plays, stores and samples alike; the agent is
small and nothing is split over devices).

Evaluation (`evaluate_run`): `eval_games` games (half with the agent moving first, half
second) against a uniformly random legal player and against a perfect minimax player that
picks uniformly among the optimal moves of a table of all tic-tac-toe positions solved in
numpy once (`minimax_tables`). The agent is the search with the trained network
(`eval_simulations` simulations, no noise: Gumbel scale 0, or PUCT without Dirichlet noise
taking the most visited move); `policy_*` metrics are the network's argmax over legal moves
alone. Metrics: `loss_rate_vs_random`, `win_rate_vs_random`, `loss_rate_vs_minimax`,
`draw_rate_vs_minimax`, `policy_loss_rate_vs_random`, `policy_loss_rate_vs_minimax`, and
the network against the table on all 4,520 positions: `value_error` (mean |v - v*|) and
`policy_optimal_rate` (its argmax legal move is minimax-optimal).

Connect Four (`game='connect_four'`, configs/alphazero_connect4.py): the same agent on
pgx's 6x7 board (7 column actions, games of at most 42 plies), with AlphaZero's residual
conv tower (`Model(trunk='resnet')`) and the board's mirror image as the augmentation. The
game is not solved here, so its evaluation (`evaluate_against_search`) plays a uniformly
random player and a fixed-depth search (arch/rl/connect_four.py: full-width negamax,
`opponent_depth` plies, exact about wins and losses within its horizon, uniform among the
best columns): `win_rate_vs_*`, `draw_rate_vs_*`, `loss_rate_vs_*` for `random` and
`search`, and the same for the network alone (`policy_*`).

Measured (configs/alphazero_tictactoe.py, 300 steps of 128 games, 2026-12-06, loaded 2-core
CPU): with 128 simulations in self-play and evaluation, 0 losses in 1,000 games against
random and 0 in 1,000 against minimax at steps 100, 200 and 300 (779 s; seed 1: the same
but for 1 loss to random at step 200, 766 s). With 32
simulations it fell short in every variant tried (loss rates vs random / vs minimax at step
300): Gumbel playing the search's choice 2.5% / 25.2%; Gumbel with moves drawn from the
improved policy 6.0% / 15.8%; PUCT (Dirichlet noise, moves drawn from the visits) 3.5% /
17.3%, with 16 updates a step 4.9% / 29.8%, plus symmetry augmentation and 64 evaluation
simulations 6.1% / 34.9% (the first four without augmentation; some ran earlier
revisions of this file that behave as the options now do). The failure is one of
self-play: games that take immediate wins and block immediate threats are draws, so z is
0 almost everywhere and a shallow search
never learns the forks two moves ahead (the network alone lost 19.8-33.1% to minimax,
e.g. answering a corner opening with a corner; the centre is the only reply that holds).
A deeper self-play search finds the forks, and the network alone then lost 0-1.2%.

Config keys read: `model_name` (a network `Model(num_actions=A)` returning (logits (B, A),
value (B,)), this module's), `model`, `batch_size` (must be `num_games`: the loop's
`examples_per_sec` is self-play games per second), `grad_accum_steps` (must be 1), and
`task_kwargs`, the fields of `Options`. Train metrics: `loss`, `value_loss`,
`policy_loss`, `policy_entropy` (of the network on the minibatch) averaged over the step's
updates, `learning_rate` at its first update; of the step's self-play: `game_length`,
`first_player_win_rate`, `draw_rate`, `positions` (added to the buffer), `buffer_size`.

Dimension key: N games, T plies (9; Connect Four 42), S search simulations, A actions
(9 squares; 7 columns), B minibatch positions, C replay capacity, H hidden width, R x C
board rows and columns (3 x 3; 6 x 7), D channels, K cells (R C), G symmetries.
"""

import dataclasses
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import mctx
import numpy as np
import pgx

import arch
from arch.rl import connect_four, render
from arch.rl.replay import replay_add, replay_init, replay_sample
from arch.task import ConfigError, Task, no_input, parse_options, row_keys, unconditional_rows

REPLAY = 'replay'  # the ring buffer of positions (arch/rl/replay.py)
SEARCHES = ('gumbel', 'puct')
NUM_ACTIONS = 9
PLIES = 9
# The eight lines of three squares, squares numbered row by row 0 1 2 / 3 4 5 / 6 7 8.
LINES = ((0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8), (0, 4, 8), (2, 4, 6))
ILLEGAL = -2.0  # action value of an occupied square in the minimax table


# ------------------------------------------------------------------------------ network


class Model(nn.Module):
  """(policy logits (B, A), value in [-1, 1] (B,)) of boards (B, R, C, 2) seen by the
  player to move (plane 0 their stones, plane 1 the opponent's). `trunk='mlp'`: an MLP of
  widths `hidden` over the flattened planes. `trunk='resnet'`: AlphaZero's residual tower
  (a 3x3 convolution, then `blocks` blocks of two 3x3 convolutions with a skip, `channels`
  wide) and its heads (policy: a 1x1 convolution to 2 planes and a linear layer to the
  logits; value: a 1x1 convolution to 1 plane, a hidden layer of `hidden[0]` and a tanh),
  with LayerNorm over the tower's channels where AlphaZero has BatchNorm: the search calls
  the network on a few positions at a time, and a step then has no batch statistics to
  thread."""
  num_actions: int = NUM_ACTIONS
  hidden: Sequence[int] = (128, 128)
  trunk: str = 'mlp'  # or 'resnet'
  channels: int = 64
  blocks: int = 4

  @nn.compact
  def __call__(self, obs):
    x = jnp.asarray(obs, jnp.float32)
    b = x.shape[0]
    if self.trunk == 'mlp':
      x_BH = x.reshape(b, -1)
      for i, width in enumerate(self.hidden):
        x_BH = nn.relu(nn.Dense(width, name=f'hidden_{i}')(x_BH))
      logits_BA = nn.Dense(self.num_actions, name='policy_head')(x_BH)
      return logits_BA, jnp.tanh(nn.Dense(1, name='value_head')(x_BH)[:, 0])
    if self.trunk != 'resnet':
      raise ValueError(f"trunk={self.trunk!r}; valid: 'mlp', 'resnet'")
    conv = lambda features, size, name: nn.Conv(features, (size, size), padding='SAME',
                                                use_bias=False, name=name)
    norm = lambda name: nn.LayerNorm(name=name)
    x_BRCD = nn.relu(norm('stem_norm')(conv(self.channels, 3, 'stem_conv')(x)))
    for i in range(self.blocks):
      y = nn.relu(norm(f'block_{i}_norm_0')(conv(self.channels, 3, f'block_{i}_conv_0')(x_BRCD)))
      y = norm(f'block_{i}_norm_1')(conv(self.channels, 3, f'block_{i}_conv_1')(y))
      x_BRCD = nn.relu(x_BRCD + y)
    # The heads' 1x1 convolutions keep a bias and no norm (a norm over 1 or 2 channels
    # would erase the planes it normalises).
    head_conv = lambda features, name: nn.Conv(features, (1, 1), name=name)
    p = nn.relu(head_conv(2, 'policy_conv')(x_BRCD)).reshape(b, -1)
    logits_BA = nn.Dense(self.num_actions, name='policy_head')(p)
    v = nn.relu(head_conv(1, 'value_conv')(x_BRCD)).reshape(b, -1)
    v = nn.relu(nn.Dense(self.hidden[0], name='value_hidden')(v))
    return logits_BA, jnp.tanh(nn.Dense(1, name='value_head')(v)[:, 0])


TINY = dict(hidden=(16,))


# -------------------------------------------------------------------------- the minimax table


def _has_line(bits: int) -> bool:
  return any(all(bits >> s & 1 for s in line) for line in LINES)


def board_index(mine_bits: int, theirs_bits: int) -> int:
  """The table row of a position: base-3 digits, square i's digit 1 for a stone of the
  player to move, 2 for the opponent's, 0 for an empty square."""
  return sum((1 * (mine_bits >> i & 1) + 2 * (theirs_bits >> i & 1)) * 3 ** i for i in range(9))


def minimax_tables():
  """(value (3^9,), action_value (3^9, 9)) float32: the game-theoretic value of every
  non-terminal position reachable from the empty board, for the player to move (+1 a
  forced win, 0 a draw, -1 a forced loss), and of each move there (`ILLEGAL` on occupied
  squares), by exhaustive negamax with memoisation (4,520 positions). Rows of terminal or
  unreachable positions are 0 and `ILLEGAL`."""
  value = np.zeros(3 ** 9, np.float32)
  action_value = np.full((3 ** 9, NUM_ACTIONS), ILLEGAL, np.float32)
  solved = {}

  def solve(mine, theirs):
    if (mine, theirs) in solved:
      return solved[(mine, theirs)]
    row = board_index(mine, theirs)
    best = -1.0
    for a in range(NUM_ACTIONS):
      if (mine | theirs) >> a & 1:
        continue
      after = mine | 1 << a
      if _has_line(after):
        v = 1.0
      elif after | theirs == 0b111111111:
        v = 0.0
      else:  # the opponent moves next: their value, negated
        v = -solve(theirs, after)
      action_value[row, a] = v
      best = max(best, v)
    value[row] = best
    solved[(mine, theirs)] = best
    return best

  solve(0, 0)
  return value, action_value


def solved_positions(action_value):
  """(obs (P, 3, 3, 2) bool, rows (P,)) of the P = 4,520 positions `minimax_tables` solved
  (its rows with a legal move), seen by the player to move."""
  rows_P = np.flatnonzero((action_value > ILLEGAL).any(-1))
  digits_P9 = (rows_P[:, None] // 3 ** np.arange(NUM_ACTIONS)) % 3
  obs = np.stack([digits_P9 == 1, digits_P9 == 2], -1).reshape(-1, 3, 3, 2)
  return obs, rows_P


def obs_index(obs_N33C):
  """The table rows (N,) of observations (N, 3, 3, 2) (`board_index` of their planes)."""
  planes = obs_N33C.reshape(obs_N33C.shape[0], NUM_ACTIONS, 2).astype(jnp.int32)
  digits = planes[..., 0] + 2 * planes[..., 1]
  return (digits * (3 ** jnp.arange(NUM_ACTIONS, dtype=jnp.int32))).sum(-1)


def _symmetries():
  """(8, 9) int: for each symmetry of the square (4 rotations, each with and without a
  reflection), the square of the original board each square of the new one shows."""
  grid = np.arange(NUM_ACTIONS).reshape(3, 3)
  return np.stack([np.rot90(g, k).reshape(-1) for g in (grid, grid.T) for k in range(4)])


SYMMETRIES = _symmetries()


def symmetrize(positions, sym_B, cell_perms=SYMMETRIES, action_perms=SYMMETRIES):
  """Positions {obs (B, R, C, 2), pi (B, A), z (B,)} each seen through symmetry sym_B
  (B,) of the board (AlphaGo Zero's augmentation; the game's rules and values are
  invariant under its symmetries: tic-tac-toe's 8 (`SYMMETRIES`, where cells are actions),
  Connect Four's mirror image): cells of obs permuted by `cell_perms[g]` (G, R C), pi by
  `action_perms[g]` (G, A), z unchanged."""
  cells_BK = jnp.asarray(cell_perms)[sym_B]
  actions_BA = jnp.asarray(action_perms)[sym_B]
  b = sym_B.shape[0]
  obs_BK2 = positions['obs'].reshape(b, cells_BK.shape[1], -1)
  obs_BK2 = jnp.take_along_axis(obs_BK2, cells_BK[..., None], axis=1)
  return {**positions, 'obs': obs_BK2.reshape(positions['obs'].shape),
          'pi': jnp.take_along_axis(positions['pi'], actions_BA, axis=1)}


@dataclasses.dataclass(frozen=True)
class Game:
  """What the agent needs to know of a pgx board game."""
  env_id: str
  num_actions: int        # A
  max_plies: int          # T: the longest game
  cell_perms: np.ndarray  # (G, R C) the board's symmetries (`symmetrize`)
  action_perms: np.ndarray  # (G, A)


def _mirror(rows: int, cols: int):
  """(cell_perms, action_perms) of a board and its left-right mirror image."""
  grid = np.arange(rows * cols).reshape(rows, cols)
  return (np.stack([grid.reshape(-1), grid[:, ::-1].reshape(-1)]),
          np.stack([np.arange(cols), np.arange(cols)[::-1]]))


GAMES = {'tic_tac_toe': Game('tic_tac_toe', NUM_ACTIONS, PLIES, SYMMETRIES, SYMMETRIES),
         'connect_four': Game('connect_four', connect_four.COLS,
                              connect_four.ROWS * connect_four.COLS,
                              *_mirror(connect_four.ROWS, connect_four.COLS))}


# ------------------------------------------------------------------------------- objective


def alphazero_loss(logits_BA, value_B, pi_BA, z_B, value_coef: float = 1.0):
  """(loss, value_loss, policy_loss): mean (z - v)^2 x value_coef + mean -pi^T log p."""
  value_loss = ((z_B - value_B) ** 2).mean()
  policy_loss = -(pi_BA * jax.nn.log_softmax(logits_BA)).sum(-1).mean()
  return value_coef * value_loss + policy_loss, value_loss, policy_loss


def mask_logits(logits_NA, legal_NA):
  """Logits with occupied squares at the lowest float (a prior of exactly 0 after the
  softmax; not -inf, which would make inf - inf in the search's arithmetic)."""
  logits_NA = logits_NA - logits_NA.max(-1, keepdims=True)
  return jnp.where(legal_NA, logits_NA, jnp.finfo(logits_NA.dtype).min)


# ------------------------------------------------------------------------------------ agent


@dataclasses.dataclass(frozen=True)
class Options:
  """AlphaZero's task_kwargs."""
  game: str = 'tic_tac_toe'      # or 'connect_four' (`GAMES`)
  num_games: int = 128           # N self-play games per loop step
  num_simulations: int = 128     # S per move in self-play (32 fell short: docstring)
  search: str = 'gumbel'         # or 'puct' (module docstring)
  max_considered: int = 9        # Gumbel: root actions sampled without replacement
  temperature: float = 1.0       # self-play moves ~ pi^(1/t) in the first plies ...
  temperature_plies: int = 9     # ... this many; then (and with t = 0) the search's choice
  augment: bool = True           # a random board symmetry per replayed position
  dirichlet_alpha: float = 0.3   # PUCT: root noise, fraction 0.25
  buffer_size: int = 20_000      # C positions
  replay_batch: int = 256        # B positions per gradient step
  updates_per_step: int = 16     # gradient steps per loop step
  value_coef: float = 1.0
  eval_games: int = 1000         # per opponent, half moving first
  eval_simulations: int = 128    # the evaluated agent's search
  opponent_depth: int = 4        # connect_four: plies of the fixed-depth search opponent


class Agent:
  """AlphaZero's pieces for one config; `task()` assembles the loop's Task from them."""

  def __init__(self, config):
    opts = parse_options(Options, config)
    self.opts = opts
    if opts.search not in SEARCHES:
      raise ConfigError(f'task_kwargs.search={opts.search!r}; valid: {", ".join(SEARCHES)}')
    if opts.game not in GAMES:
      raise ConfigError(f'task_kwargs.game={opts.game!r}; valid: {", ".join(GAMES)}')
    positive = ('num_games', 'num_simulations', 'buffer_size', 'replay_batch',
                'updates_per_step', 'eval_games', 'max_considered', 'opponent_depth')
    if any(getattr(opts, k) < 1 for k in positive):
      raise ConfigError(f'task_kwargs.{", ".join(positive)} must be >= 1')
    if opts.eval_games % 2:
      raise ConfigError(f'task_kwargs.eval_games={opts.eval_games} must be even (half the '
                        f'games with the agent moving first)')
    if config.batch_size != opts.num_games:
      raise ConfigError(f'batch_size={config.batch_size} must be task_kwargs.num_games = '
                        f'{opts.num_games} (the self-play games of one train step)')
    if int(config.get('grad_accum_steps', 1)) != 1:
      raise ConfigError('AlphaZero draws its own minibatches (task_kwargs.replay_batch); '
                        'set grad_accum_steps=1')
    self.game = GAMES[opts.game]
    self.plies = self.game.max_plies
    self.env = pgx.make(self.game.env_id)
    self.model = arch.model_from_config(config, num_actions=self.game.num_actions)
    self.tic_tac_toe = opts.game == 'tic_tac_toe'
    if self.tic_tac_toe:  # the solved game: a perfect opponent and targets for the network
      value, action_value = minimax_tables()
      self.minimax_value, self.minimax_action_value = value, action_value
      self.positions_obs, rows = solved_positions(action_value)
      self.positions_value, self.positions_action_value = value[rows], action_value[rows]

  # ------------------------------------------------------------------------------ search

  def net(self, params, obs):
    return self.model.apply({'params': params}, obs)

  def recurrent_fn(self, params, rng, action_N, state):
    """mctx's recurrent function: the real game's step, then the network at the new
    position (two-player bookkeeping in the module docstring)."""
    del rng
    mover_N = state.current_player
    state = jax.vmap(self.env.step)(state, action_N)
    logits_NA, value_N = self.net(params, state.observation)
    logits_NA = mask_logits(logits_NA, state.legal_action_mask)
    reward_N = jnp.take_along_axis(state.rewards, mover_N[:, None], axis=-1)[:, 0]
    value_N = jnp.where(state.terminated, 0.0, value_N)
    discount_N = jnp.where(state.terminated, 0.0, -1.0)
    return mctx.RecurrentFnOutput(reward=reward_N, discount=discount_N,
                                  prior_logits=logits_NA, value=value_N), state

  def search(self, params, state, rng, num_simulations: int, explore: bool):
    """mctx's policy output (action (N,), action_weights (N, A), search_tree) of a search
    from each position of `state`; `explore` adds the root noise of self-play."""
    opts = self.opts
    logits_NA, value_N = self.net(params, state.observation)
    root = mctx.RootFnOutput(prior_logits=logits_NA, value=value_N, embedding=state)
    invalid_NA = ~state.legal_action_mask
    if opts.search == 'gumbel':
      return mctx.gumbel_muzero_policy(
          params, rng, root, self.recurrent_fn, num_simulations, invalid_actions=invalid_NA,
          max_depth=self.plies, max_num_considered_actions=opts.max_considered,
          gumbel_scale=1.0 if explore else 0.0)
    out = mctx.muzero_policy(
        params, rng, root, self.recurrent_fn, num_simulations, invalid_actions=invalid_NA,
        max_depth=self.plies, dirichlet_fraction=0.25 if explore else 0.0,
        dirichlet_alpha=opts.dirichlet_alpha)
    if not explore:  # the most visited legal move
      visits = jnp.where(invalid_NA, -1, out.search_tree.summary().visit_counts)
      out = out.replace(action=visits.argmax(-1).astype(out.action.dtype))
    return out

  # ------------------------------------------------------------------------------ self-play

  def choose(self, out, ply, rng):
    """The self-play move (N,) at `ply`: drawn from the search policy pi^(1/temperature)
    in the first `temperature_plies` plies, then the search's own choice (Gumbel's
    sequential-halving winner; PUCT's most visited move)."""
    t = self.opts.temperature
    pi_NA = out.action_weights
    logits_NA = jnp.where(pi_NA > 0, jnp.log(jnp.maximum(pi_NA, 1e-30)) / max(t, 1e-6),
                          -jnp.inf)
    drawn_N = jax.random.categorical(rng, logits_NA)
    if self.opts.search == 'puct':
      best_N = jnp.where(pi_NA > 0, pi_NA, -1.0).argmax(-1)
    else:
      best_N = out.action
    sample = (ply < self.opts.temperature_plies) & (t > 0)
    return jnp.where(sample, drawn_N, best_N).astype(out.action.dtype)

  def self_play(self, params, rng):
    """(positions {obs, pi, z} (T N, ...), played (T N,) bool, stats) of `num_games`
    games from the empty board."""
    n = self.opts.num_games
    k_init, k_play = jax.random.split(rng)
    state = jax.vmap(self.env.init)(jax.random.split(k_init, n))

    def ply(state, xs):
      key, t = xs
      k_search, k_move = jax.random.split(key)
      out = self.search(params, state, k_search, self.opts.num_simulations, explore=True)
      record = {'obs': state.observation, 'pi': out.action_weights,
                'mover': state.current_player, 'played': ~state.terminated}
      state = jax.vmap(self.env.step)(state, self.choose(out, t, k_move))
      return state, {**record, 'rewards': state.rewards}

    t = self.plies
    state, traj = jax.lax.scan(ply, state, (jax.random.split(k_play, t), jnp.arange(t)))
    outcome_N2 = traj['rewards'].sum(0)  # pgx pays the result only at the final ply
    z_TN = jnp.take_along_axis(jnp.broadcast_to(outcome_N2, (t, n, 2)),
                               traj['mover'][..., None], axis=-1)[..., 0]
    length_N = traj['played'].sum(0)
    # The first mover of a game is the player to move at ply 0.
    first_N = traj['mover'][0]
    first_result_N = jnp.take_along_axis(outcome_N2, first_N[:, None], axis=-1)[:, 0]
    stats = {'game_length': length_N.mean(), 'first_player_win_rate': (first_result_N > 0).mean(),
             'draw_rate': (first_result_N == 0).mean()}
    flat = lambda x: x.reshape(t * n, *x.shape[2:])
    positions = {'obs': flat(traj['obs']), 'pi': flat(traj['pi']), 'z': flat(z_TN)}
    return positions, flat(traj['played']), stats

  # ------------------------------------------------------------------------------ training

  def init(self, rng, batch):
    del batch  # no data
    state = self.env.init(jax.random.key(0))
    obs = state.observation
    params = self.model.init(rng, obs[None])['params']
    example = {'obs': obs, 'pi': jnp.zeros((self.game.num_actions,), jnp.float32),
               'z': jnp.zeros((), jnp.float32)}
    return {'params': params, REPLAY: replay_init(example, self.opts.buffer_size)}

  def loss(self, variables, mb, rng):
    """The loop's loss signature on a minibatch of positions {obs, pi, z}; non-param
    collections pass through unchanged."""
    del rng
    logits_BA, value_B = self.net(variables['params'], mb['obs'])
    loss, v_loss, p_loss = alphazero_loss(logits_BA, value_B, mb['pi'], mb['z'],
                                          self.opts.value_coef)
    log_p_BA = jax.nn.log_softmax(logits_BA)
    metrics = {'value_loss': v_loss, 'policy_loss': p_loss,
               'policy_entropy': -(jnp.exp(log_p_BA) * log_p_BA).sum(-1).mean()}
    return loss, (metrics, {k: v for k, v in variables.items() if k != 'params'})

  def make_step(self, builders):
    """The loop's inner step: self-play, store, then `updates_per_step` library updates."""
    opts = self.opts
    update = builders.supervised(self.loss, accum=1)

    def step(state, batch, rng):
      del batch, rng  # no data; keys from the state alone (module docstring)
      key = builders.shared_rng(state)
      k_play, k_learn = jax.random.split(key)
      positions, played, stats = self.self_play(state.params, k_play)
      replay = replay_add(state.extra[REPLAY], positions, played)
      others = {k: v for k, v in state.extra.items() if k != REPLAY}

      def learn(st, i):
        k_sample, k_sym = jax.random.split(jax.random.fold_in(k_learn, i))
        mb = replay_sample(replay, k_sample, opts.replay_batch)
        if opts.augment:
          game = self.game
          sym_B = jax.random.randint(k_sym, (opts.replay_batch,), 0, len(game.cell_perms))
          mb = symmetrize(mb, sym_B, game.cell_perms, game.action_perms)
        return update(st, mb, k_sample)

      new, metrics = jax.lax.scan(learn, state.replace(extra=others),
                                  jnp.arange(opts.updates_per_step))
      metrics = jax.tree.map(jnp.mean, metrics)
      metrics['learning_rate'] = builders.schedule(state.step * opts.updates_per_step)
      metrics.update(stats, positions=played.sum().astype(jnp.float32),
                     buffer_size=replay['size'].astype(jnp.float32))
      return new.replace(extra={**new.extra, REPLAY: replay}), metrics

    return step

  # ------------------------------------------------------------------------------ evaluation

  def search_player(self, params, num_simulations: int):
    def act(state, key):
      return self.search(params, state, key, num_simulations, explore=False).action
    return act

  def policy_player(self, params):
    def act(state, key):
      del key
      logits_NA, _ = self.net(params, state.observation)
      return jnp.where(state.legal_action_mask, logits_NA, -jnp.inf).argmax(-1)
    return act

  def minimax_player(self):
    """Uniform among the moves of the best minimax value."""
    table_RA = jnp.asarray(self.minimax_action_value)

    def act(state, key):
      q_NA = table_RA[obs_index(state.observation)]
      best_NA = (q_NA == q_NA.max(-1, keepdims=True)) & state.legal_action_mask
      return jax.random.categorical(key, jnp.where(best_NA, 0.0, -jnp.inf))
    return act

  @staticmethod
  def random_player(state, key):
    return jax.random.categorical(key, jnp.where(state.legal_action_mask, 0.0, -jnp.inf))

  def play(self, agent, opponent, rng, num_games: int):
    """{'loss', 'draw', 'win'} rates of `agent` (player 0) over `num_games` games against
    `opponent`, the agent moving first in the first half. A player is
    `act(state (N,), key) -> action (N,)`."""
    k_init, k_play = jax.random.split(rng)
    state = jax.vmap(self.env.init)(jax.random.split(k_init, num_games))
    # pgx's player `current_player` moves first (as X); the empty board looks the same
    # to both, so setting it picks who starts.
    first_N = jnp.arange(num_games) >= num_games // 2
    state = state.replace(current_player=first_N.astype(jnp.int32))

    def ply(carry, key):
      state, result_N = carry
      k_agent, k_opp = jax.random.split(key)
      action_N = jnp.where(state.current_player == 0, agent(state, k_agent),
                           opponent(state, k_opp))
      state = jax.vmap(self.env.step)(state, action_N)
      return (state, result_N + state.rewards[:, 0]), None

    (_, result_N), _ = jax.lax.scan(ply, (state, jnp.zeros((num_games,), jnp.float32)),
                                    jax.random.split(k_play, self.plies))
    return {'loss': (result_N < 0).mean(), 'draw': (result_N == 0).mean(),
            'win': (result_N > 0).mean()}

  def evaluate_run(self, variables, rng):
    params, n = variables['params'], self.opts.eval_games
    searcher = self.search_player(params, self.opts.eval_simulations)
    if not self.tic_tac_toe:
      return self.evaluate_against_search(params, searcher, rng)
    k_rand, k_mm, k_prand, k_pmm = jax.random.split(rng, 4)
    vs_random = self.play(searcher, self.random_player, k_rand, n)
    vs_minimax = self.play(searcher, self.minimax_player(), k_mm, n)
    policy = self.policy_player(params)
    return {'loss_rate_vs_random': vs_random['loss'], 'win_rate_vs_random': vs_random['win'],
            'loss_rate_vs_minimax': vs_minimax['loss'],
            'draw_rate_vs_minimax': vs_minimax['draw'],
            'policy_loss_rate_vs_random': self.play(policy, self.random_player, k_prand,
                                                    n)['loss'],
            'policy_loss_rate_vs_minimax': self.play(policy, self.minimax_player(), k_pmm,
                                                     n)['loss'],
            **self.against_the_table(params)}

  def evaluate_against_search(self, params, searcher, rng):
    """Connect Four: the agent's and the network's (`policy_*`) win / draw / loss rates
    against a uniformly random player and the fixed-depth search (arch/rl/connect_four.py,
    `opponent_depth` plies), half the games moving first."""
    n, out = self.opts.eval_games, {}
    opponents = {'random': self.random_player,
                 'search': connect_four.search_player(self.opts.opponent_depth)}
    keys = iter(jax.random.split(rng, 4))
    for prefix, player in (('', searcher), ('policy_', self.policy_player(params))):
      for name, opponent in opponents.items():
        rates = self.play(player, opponent, next(keys), n)
        out.update({f'{prefix}{k}_rate_vs_{name}': v for k, v in rates.items()})
    return out

  def against_the_table(self, params):
    """The network on every solved position: `value_error` (mean |v - minimax value|)
    and `policy_optimal_rate` (argmax over legal moves is a minimax-optimal move)."""
    logits_PA, value_P = self.net(params, jnp.asarray(self.positions_obs))
    q_PA = jnp.asarray(self.positions_action_value)
    move_P = jnp.where(q_PA > ILLEGAL, logits_PA, -jnp.inf).argmax(-1)
    chosen_P = jnp.take_along_axis(q_PA, move_P[:, None], axis=-1)[:, 0]
    return {'value_error': jnp.abs(value_P - jnp.asarray(self.positions_value)).mean(),
            'policy_optimal_rate': (chosen_P == q_PA.max(-1)).mean()}

  def sample(self, variables, batch, rng, *, row_ids, opponent: str = '',
             num_simulations: int = 0, size: int = 96):
    """One game per row of the agent (the search with `num_simulations`, default the
    evaluation's) against `opponent` ('minimax' for tic-tac-toe, 'search' for Connect Four
    (the default: the evaluation's strongest opponent), 'random' or 'self'), the agent
    moving first in even rows: {'episodes': (N, T + 1, size, size, 3) the board before each
    ply and after the last (held once the game ends; the agent's marks in the accent
    colour), 'episode_return': (N,) the agent's result (+1 win, 0 draw, -1 loss),
    'episode_length': (N,) plies, 'boards': (N, T + 1, R C) the pictured positions (pgx's
    cells: -1 empty, 0 the first mover's, 1 the second's)}."""
    del batch
    players = {'random': self.random_player}
    if self.tic_tac_toe:
      players['minimax'] = self.minimax_player()
      draw_board = render.board
    else:
      players['search'] = connect_four.search_player(self.opts.opponent_depth)
      draw_board = render.connect_four
    opponent = opponent or ('minimax' if self.tic_tac_toe else 'search')
    if opponent not in (*players, 'self'):
      raise ConfigError(f'--opponent {opponent!r}: valid opponents are '
                        f'{", ".join((*players, "self"))}')
    agent = self.search_player(variables['params'],
                               num_simulations or self.opts.eval_simulations)
    other = agent if opponent == 'self' else players[opponent]

    def game(key, second):
      k_init, k_play = jax.random.split(key)
      state = jax.vmap(self.env.init)(k_init[None])
      state = state.replace(current_player=jnp.full((1,), second, jnp.int32))

      def ply(carry, key):
        state, result, plies = carry
        k_agent, k_other = jax.random.split(key)
        action = jnp.where(state.current_player == 0, agent(state, k_agent),
                           other(state, k_other))
        live = ~(state.terminated | state.truncated)
        new = jax.vmap(self.env.step)(state, action)
        return (new, result + new.rewards[0, 0], plies + live[0]), state._x.board[0]

      (last, result, plies), boards = jax.lax.scan(
          ply, (state, jnp.float32(0), jnp.int32(0)), jax.random.split(k_play, self.plies))
      return jnp.concatenate([boards, last._x.board]), result, plies

    second_N = row_ids % 2  # the agent moves second in odd rows
    boards, result, plies = jax.vmap(game)(row_keys(rng, row_ids), second_N)
    # The first mover plays X (mark 0): the agent's mark is 1 when it moved second.
    frames = jax.vmap(lambda b, m: jax.vmap(lambda c: draw_board(c, m, size))(b))(
        boards, second_N)
    return {'episodes': frames, 'episode_return': result, 'episode_length': plies,
            'boards': boards}

  def task(self) -> Task:
    return Task(init=self.init, loss=self.loss, example_batch=lambda batch_size: {},
                make_step=self.make_step, input=no_input, evaluate_run=self.evaluate_run,
                sample=self.sample, prompt_batch=unconditional_rows)


def make(config) -> Task:
  return Agent(config).task()
