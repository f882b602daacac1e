"""AlphaZero on tic-tac-toe (arch/rl/alphazero.py): the minimax table on known positions,
the search never choosing an occupied square (even with a prior that wants one), the loss
against its formula, board symmetries against the table, the replay buffer against a
plain-Python ring, self-play targets' invariants, the evaluation harness with the table's
own player, option errors, and the tiny config trained through the loop with an exact
resume (replay buffer included) and alike on 8 devices. Connect Four: the fixed-depth
search opponent against hand-made tactics and a plain negamax, its mirror symmetry, and
the tiny config through the loop with an exact resume and alike on 8 devices."""


import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arch.rl import alphazero as az
from arch.rl import connect_four as c4
from conftest import check_eight_devices, check_resumes_alike, load_config
from train.errors import UserError



def _bits(*squares):
  return sum(1 << s for s in squares)


@pytest.fixture(scope='module')
def tables():
  return az.minimax_tables()


def _agent(**overrides):
  return az.Agent(load_config('alphazero_tictactoe.py:tiny', **overrides))


def test_minimax_table_on_known_positions(tables):
  value, q = tables
  # 4,520 non-terminal positions are reachable in tic-tac-toe.
  assert int((q > az.ILLEGAL).any(-1).sum()) == 4520
  # The empty board is a draw, and so is every first move.
  empty = az.board_index(0, 0)
  assert value[empty] == 0 and np.all(q[empty] == 0)
  # X (to move) on 0 1, O on 3 4: square 2 wins at once.
  row = az.board_index(_bits(0, 1), _bits(3, 4))
  assert value[row] == 1 and q[row, 2] == 1
  assert np.all(q[row, [0, 1, 3, 4]] == az.ILLEGAL)
  # O to move against X on 0 1 (O on 4): only the block at 2 avoids losing.
  row = az.board_index(_bits(4), _bits(0, 1))
  assert value[row] == 0 and q[row, 2] == 0
  assert np.all(q[row, [3, 5, 6, 7, 8]] == -1)
  # After X takes a corner, the centre is O's only reply that does not lose.
  row = az.board_index(0, _bits(8))
  np.testing.assert_array_equal(q[row], [-1, -1, -1, -1, 0, -1, -1, -1, az.ILLEGAL])
  # X on 8, O on the opposite corner 0: X forces a win by 2 or 6 (a fork follows).
  row = az.board_index(_bits(8), _bits(0))
  assert value[row] == 1
  assert set(np.flatnonzero(q[row] == 1)) == {2, 6}


def test_symmetries_preserve_the_table(tables):
  """Each of the 8 symmetries maps every solved position to one of the same value whose
  move values are the original's, permuted the same way."""
  value, q = tables
  obs, rows = az.solved_positions(q)
  assert len(set(map(tuple, az.SYMMETRIES))) == 8
  for g in range(8):
    out = az.symmetrize({'obs': jnp.asarray(obs), 'pi': jnp.asarray(q[rows]),
                         'z': jnp.zeros(len(rows))}, jnp.full((len(rows),), g))
    new_rows = np.asarray(az.obs_index(out['obs']))
    np.testing.assert_array_equal(value[new_rows], value[rows])
    np.testing.assert_array_equal(q[new_rows], np.asarray(out['pi']))
    assert (g == 0) == np.array_equal(new_rows, rows)


def test_loss_equals_its_formula_by_hand():
  logits = np.array([[0.0, 1.0, 2.0], [1.0, 1.0, 1.0]], np.float32)
  value = np.array([0.5, -0.2], np.float32)
  pi = np.array([[0.0, 0.25, 0.75], [1.0, 0.0, 0.0]], np.float32)
  z = np.array([1.0, -1.0], np.float32)
  loss, v_loss, p_loss = az.alphazero_loss(logits, value, pi, z, value_coef=2.0)
  want_v = ((1 - 0.5) ** 2 + (-1 + 0.2) ** 2) / 2
  lse0 = np.log(1 + np.e + np.e ** 2)
  ce0 = -(0.25 * (1 - lse0) + 0.75 * (2 - lse0))
  ce1 = np.log(3.0)
  np.testing.assert_allclose(v_loss, want_v, rtol=1e-6)
  np.testing.assert_allclose(p_loss, (ce0 + ce1) / 2, rtol=1e-6)
  np.testing.assert_allclose(loss, 2.0 * want_v + (ce0 + ce1) / 2, rtol=1e-6)


def _midgame_states(agent, n, plies, seed=0):
  """n games after `plies` random legal moves (none finished: plies < 5)."""
  state = jax.vmap(agent.env.init)(jax.random.split(jax.random.key(seed), n))
  for t in range(plies):
    state = jax.vmap(agent.env.step)(
        state, agent.random_player(state, jax.random.key(100 * seed + t)))
  assert not state.terminated.any()
  return state


@pytest.mark.parametrize('search', az.SEARCHES)
def test_search_never_picks_an_occupied_square(search):
  """A prior that puts almost all its mass on occupied squares: the search's move, policy
  target and root visits still avoid them, in self-play (noise) and evaluation. Below the
  root Gumbel MuZero never steps onto an occupied square either: pgx would punish that as
  a loss for the mover (reward -1), and no edge of the tree carries such a reward."""
  agent = _agent(task_kwargs__search=search)

  def greedy_for_occupied(params, obs):
    occupied = obs.reshape(obs.shape[0], 9, 2).any(-1)
    return jnp.where(occupied, 10.0, 0.0), jnp.zeros(obs.shape[0])

  agent.net = greedy_for_occupied
  state = _midgame_states(agent, 16, 3)
  legal = np.asarray(state.legal_action_mask)
  for explore in (True, False):
    out = jax.jit(lambda s, k: agent.search(None, s, k, 24, explore))(state, jax.random.key(1))
    action = np.asarray(out.action)
    assert legal[np.arange(16), action].all()
    assert np.all(np.asarray(out.action_weights)[~legal] == 0)
    visits = np.asarray(out.search_tree.summary().visit_counts)
    assert np.all(visits[~legal] == 0) and visits.sum() > 0
    if search == 'gumbel':
      tree = out.search_tree
      reached = np.asarray(tree.children_visits) > 0
      assert not np.any(np.asarray(tree.children_rewards)[reached] < 0)
    chosen = agent.choose(out, jnp.int32(0), jax.random.key(2))
    assert legal[np.arange(16), np.asarray(chosen)].all()


def test_self_play_targets():
  """Searched policies are distributions over free squares; outcomes alternate in sign
  along a game (the movers alternate) and the last mover of a won game gets +1."""
  agent = _agent()
  params = agent.init(jax.random.key(0), {})['params']
  positions, played, stats = jax.jit(agent.self_play)(params, jax.random.key(1))
  n = agent.opts.num_games
  obs = np.asarray(positions['obs']).reshape(az.PLIES, n, 9, 2)
  pi = np.asarray(positions['pi']).reshape(az.PLIES, n, 9)
  z = np.asarray(positions['z']).reshape(az.PLIES, n)
  played = np.asarray(played).reshape(az.PLIES, n)
  assert played[:5].all() and played.sum(0).min() >= 5
  for t in range(az.PLIES):
    for i in range(n):
      if not played[t, i]:
        continue
      np.testing.assert_allclose(pi[t, i].sum(), 1.0, rtol=1e-5)
      assert np.all(pi[t, i][obs[t, i].any(-1)] == 0)
      assert z[t, i] in (-1, 0, 1)
      if t + 1 < az.PLIES and played[t + 1, i]:
        assert z[t + 1, i] == -z[t, i]
  last = played.sum(0) - 1
  z_last = z[last, np.arange(n)]
  # Only the player who just moved can have won; a 9-ply game may be a draw.
  assert np.all((z_last == 1) | ((z_last == 0) & (last == 8)))
  assert 0 <= float(stats['draw_rate']) <= 1


def test_evaluation_harness_with_the_table_player():
  """The perfect player never loses: against itself every game is a draw, against random
  play it loses none and wins most; the random player loses to it."""
  agent = _agent()
  mm = agent.minimax_player()
  play = jax.jit(lambda a, b, k: agent.play(a, b, k, 200), static_argnums=(0, 1))
  selfplay = play(mm, mm, jax.random.key(0))
  assert float(selfplay['draw']) == 1
  vs_random = play(mm, agent.random_player, jax.random.key(1))
  assert float(vs_random['loss']) == 0 and float(vs_random['win']) > 0.7
  random_vs = play(agent.random_player, mm, jax.random.key(2))
  assert float(random_vs['loss']) > 0.5 and float(random_vs['win']) == 0


def _lines(board):
  b = np.asarray(board).reshape(3, 3)
  return [*b, *b.T, b.diagonal(), np.fliplr(b).diagonal()]


def test_sampled_games_show_their_boards_and_results():
  """The sampler's games against minimax: frame k pictures the board after k plies (k
  marks, X first), held after the end; the agent (X in even rows, O in odd ones, drawn in
  the accent colour) gets +1 only with three in a row, -1 only when the opponent has them;
  minimax never loses."""
  from arch.rl import render
  agent = _agent()
  variables = jax.jit(agent.init)(jax.random.key(0), {})
  sample = jax.jit(lambda v, k, r: agent.sample(v, {}, k, row_ids=r, size=48))
  out = jax.device_get(sample(variables, jax.random.key(1), jnp.arange(6)))
  assert out['episodes'].shape == (6, 10, 48, 48, 3) and out['boards'].shape == (6, 10, 9)
  for i in range(6):
    plies, result, boards = int(out['episode_length'][i]), out['episode_return'][i], \
        out['boards'][i]
    mark = i % 2
    assert 5 <= plies <= 9
    for k in range(10):
      shown = min(k, plies)
      assert (boards[k] == 0).sum() == (shown + 1) // 2 and (boards[k] == 1).sum() == shown // 2
      np.testing.assert_array_equal(out['episodes'][i, k], render.board(boards[k], mark, 48))
    wins = {m: any(np.all(line == m) for line in _lines(boards[-1])) for m in (0, 1)}
    assert result == (1.0 if wins[mark] else -1.0 if wins[1 - mark] else 0.0)
    assert result <= 0  # against minimax
    assert plies == 9 or wins[0] or wins[1]


def test_option_errors_are_one_line():
  from train import core
  for overrides, match in (({'task_kwargs__search': 'alphabeta'}, 'valid: gumbel, puct'),
                           ({'task_kwargs__updates_per_step': 0}, 'must be >= 1'),
                           ({'task_kwargs__eval_games': 7}, 'even'),
                           ({'task_kwargs__num_simulation': 3}, 'did you mean num_simulations')):
    with pytest.raises(UserError, match=match) as e:
      core.load_task(load_config('alphazero_tictactoe.py:tiny', **overrides))
    assert '\n' not in str(e.value)


def _train(workdir, **overrides):
  from train import loop
  return loop.train_and_evaluate(load_config('alphazero_tictactoe.py:tiny', **overrides),
                                 str(workdir))


def test_tiny_config_trains_and_resumes_exactly(tmp_path):
  """4 steps with checkpoints at 2 and 4; the step-2 checkpoint alone in another workdir
  resumes to the same metrics at steps 3 and 4 and the same step-4 state (params,
  optimizer, replay buffer), bitwise."""
  result = _train(tmp_path / 'straight')
  assert {'loss_rate_vs_random', 'loss_rate_vs_minimax', 'value_error',
          'policy_optimal_rate'} <= set(result)
  assert 0 <= result['loss_rate_vs_minimax'] <= 1
  _, _, states = check_resumes_alike(
      'alphazero_tictactoe.py:tiny', _train, tmp_path,
      ('loss', 'value_loss', 'policy_loss', 'policy_entropy', 'game_length', 'draw_rate',
       'positions', 'buffer_size', 'learning_rate'))
  replay = states[0].extra[az.REPLAY]
  # 4 steps x 4 games of >= 5 plies overfill the 64-slot ring.
  assert int(replay['size']) == 64 and np.asarray(replay['data']['pi']).sum() > 0


EVALS = {'alphazero_tictactoe.py:tiny': ('loss_rate_vs_random', 'loss_rate_vs_minimax',
                                         'value_error', 'policy_optimal_rate'),
         'alphazero_connect4.py:tiny': ('loss_rate_vs_random', 'loss_rate_vs_search',
                                        'win_rate_vs_search', 'policy_loss_rate_vs_search')}


@pytest.mark.parametrize('spec,modes', [('alphazero_tictactoe.py:tiny', ('jit', 'pmap')),
                                         ('alphazero_connect4.py:tiny', ('jit',))])
def test_eight_devices_give_the_same_numbers_as_one(spec, modes, tmp_path):
  """Every device plays, stores and samples alike (keys from the state), so 8 simulated
  devices, under jit and under pmap, train and evaluate the same agent as 1 (8 games a
  step: the loop needs a batch that 8 devices divide). Connect Four, the same agent code
  over another game and network, under jit."""
  check_eight_devices(spec, tmp_path, modes,
                      args=('--config.task_kwargs.num_games=8',),
                      close=('loss', 'value_loss', 'policy_loss', 'policy_entropy'),
                      equal=('game_length', 'draw_rate', 'positions', 'buffer_size'),
                      evals=EVALS[spec], rel=1e-5, abs=1e-6)


# ------------------------------------------------------------------------- Connect Four


def _c4_state(columns):
  """pgx's connect_four after the moves `columns` (alternating, from player 0)."""
  import pgx
  env = pgx.make('connect_four')
  state = jax.vmap(env.init)(jax.random.split(jax.random.key(0), 1))
  state = state.replace(current_player=jnp.zeros((1,), jnp.int32))
  for col in columns:
    state = jax.vmap(env.step)(state, jnp.asarray([col]))
  assert not bool(state.terminated[0])
  return state


@functools.lru_cache
def _c4_search(depth):
  """Jitted (scores (7,) of the position, the player's columns in 16 draws) at `depth`."""
  def run(state, key):
    q = c4.action_values(state.observation[..., 0], state.observation[..., 1], depth)[0]
    many = jax.tree.map(lambda x: jnp.repeat(x, 16, axis=0), state)
    return q, c4.search_player(depth)(many, key)
  return jax.jit(run)


def _c4_choices(state, depth):
  return set(np.asarray(_c4_search(depth)(state, jax.random.key(depth))[1]).tolist())


def test_connect_four_search_wins_blocks_and_prefers_the_sooner_win():
  """The fixed-depth opponent: with three of its own in the bottom row it plays the fourth
  at every depth, scoring the sooner win higher; facing the opponent's three (and no win of
  its own) it blocks from depth 2 on, while depth 1 sees no difference between the columns;
  an open three with both ends playable is a forced loss for the defender at depth 2 and,
  one move earlier, a win in 3 plies for the player who makes it."""
  values = lambda state, depth: np.asarray(_c4_search(depth)(state, jax.random.key(0))[0])
  # Player 0 (to move) on 0 1 2 of the bottom row, player 1 above them: column 3 wins.
  win = _c4_state([0, 0, 1, 1, 2, 2])
  for depth in (1, 2, 3):
    assert _c4_choices(win, depth) == {3}
  q = values(win, 3)
  assert q[3] == 3 and np.all(np.delete(q, 3) < 3)
  # Player 1 to move; player 0 holds 1 2 3 of the bottom row, 0 is player 1's: block at 4.
  threat = _c4_state([1, 0, 2, 6, 3])
  np.testing.assert_array_equal(values(threat, 1), np.zeros(7))
  np.testing.assert_array_equal(values(threat, 2), [-1, -1, -1, -1, 0, -1, -1])
  for depth in (2, 3):
    assert _c4_choices(threat, depth) == {4}
  # The same three open at both ends (0 and 4 free): every move loses on the next ply.
  open_three = _c4_state([1, 1, 2, 2, 3])
  np.testing.assert_array_equal(values(open_three, 2), -np.ones(7))
  # Player 0 to move with 2 3 of the bottom row: 1 or 4 makes that open three.
  fork = _c4_state([2, 2, 3, 3])
  q3 = values(fork, 3)
  assert q3[1] == 1 and q3[4] == 1 and np.all(np.delete(q3, [1, 4]) == 0)
  assert _c4_choices(fork, 3) == {1, 4}


def _negamax(mine, theirs, depth):
  """Plain-Python negamax scores of the 7 columns (module docstring of connect_four)."""
  def wins(s):
    return any(all(0 <= r + dr * k < 6 and 0 <= c + dc * k < 7 and s[r + dr * k][c + dc * k]
                   for k in range(4))
               for r in range(6) for c in range(7) for dr, dc in ((0, 1), (1, 0), (1, 1), (1, -1)))
  q = []
  for a in range(7):
    free = [r for r in range(6) if not (mine[r][a] or theirs[r][a])]
    if not free:
      q.append(-np.inf)
      continue
    after = [row[:] for row in mine]
    after[max(free)][a] = True
    if wins(after):
      q.append(float(depth))
    elif all(after[r][c] or theirs[r][c] for r in range(6) for c in range(7)) or depth == 1:
      q.append(0.0)
    else:
      q.append(-max(_negamax(theirs, after, depth - 1)))
  return q


def test_connect_four_search_equals_plain_negamax_and_is_mirror_symmetric():
  """On positions after random play the vectorised scores equal a plain recursive negamax
  at depth 3, and the mirrored board's scores are the original's mirrored (the symmetry the
  agent's augmentation uses, `GAMES['connect_four']`)."""
  import pgx
  env = pgx.make('connect_four')
  state = jax.vmap(env.init)(jax.random.split(jax.random.key(0), 6))
  rng = np.random.default_rng(0)
  step = jax.jit(jax.vmap(env.step))
  for _ in range(14):
    legal = np.asarray(state.legal_action_mask)
    state = step(state, jnp.asarray([rng.choice(np.flatnonzero(m)) if m.any() else 0
                                     for m in legal]))
  obs = np.asarray(state.observation)
  live = ~np.asarray(state.terminated)
  assert live.sum() >= 3
  q = np.asarray(jax.jit(lambda m, t: c4.action_values(m, t, 3))(obs[..., 0], obs[..., 1]))
  for i in np.flatnonzero(live):
    np.testing.assert_array_equal(q[i], _negamax(obs[i, ..., 0].tolist(),
                                                 obs[i, ..., 1].tolist(), 3))
  game = az.GAMES['connect_four']
  mirrored = az.symmetrize({'obs': jnp.asarray(obs), 'pi': jnp.asarray(q), 'z': jnp.zeros(6)},
                           jnp.ones(6, jnp.int32), game.cell_perms, game.action_perms)
  np.testing.assert_array_equal(mirrored['obs'], obs[:, :, ::-1])
  q_mirror = c4.action_values(mirrored['obs'][..., 0], mirrored['obs'][..., 1], 3)
  np.testing.assert_array_equal(q_mirror, mirrored['pi'])


def _train_c4(workdir, **overrides):
  from train import loop
  return loop.train_and_evaluate(load_config('alphazero_connect4.py:tiny', **overrides),
                                 str(workdir))


def test_connect_four_config_trains_resumes_and_plays(tmp_path):
  """4 steps of the tiny Connect Four config through the loop (conv tower, self-play of up
  to 42 plies, replay of (6, 7, 2) boards, the mirror augmentation) with checkpoints at 2
  and 4: the step-2 checkpoint alone resumes bitwise (replay buffer included); then its
  agent (the search with the trained network) plays the depth-2 opponent, half the games
  first: every game ends (win, draw and loss rates sum to 1)."""
  from train import core
  result = _train_c4(tmp_path / 'straight')
  assert {'loss_rate_vs_random', 'loss_rate_vs_search'} <= set(result), result
  _, _, states = check_resumes_alike(
      'alphazero_connect4.py:tiny', _train_c4, tmp_path,
      ('loss', 'value_loss', 'policy_loss', 'game_length', 'positions', 'buffer_size'))
  assert int(states[0].extra[az.REPLAY]['size']) > 0
  config = load_config('alphazero_connect4.py:tiny')
  variables, _ = core.restore_variables(config, str(tmp_path / 'straight'))
  assert variables['params']['block_0_conv_0']['kernel'].shape == (3, 3, 4, 4)
  agent = az.Agent(config)
  play = jax.jit(lambda v, k: agent.play(agent.search_player(v['params'], 4),
                                         c4.search_player(2), k, 4))
  rates = play(variables, jax.random.key(1))
  assert float(rates['win'] + rates['draw'] + rates['loss']) == pytest.approx(1.0)
