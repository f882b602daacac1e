"""AlphaZero (Silver et al. 2018) on pgx's tic-tac-toe: Gumbel MuZero search (mctx) with the
real game as its model, self-play, replay and updates in one jitted step.

  python -m train --config configs/alphazero_tictactoe.py --workdir runs/alphazero_tictactoe

Arguments: `tiny` for tests.
Each loop step plays 128 self-play games (batch_size = games, so the loop's
`examples_per_sec` is games per second) with Gumbel MuZero search of 128 simulations a
move (all 9 root moves considered; moves drawn from the improved policy at temperature 1),
stores their positions in a 20,000-position ring buffer and takes 16 Adam steps on 256
positions drawn from it, each seen through a random board symmetry (AlphaGo Zero's
augmentation); lr 1e-3 cosine to 1e-4 over the 4,800 updates; L2 1e-4 as `weight_decay`
(added to the gradient). Network: MLP 18-128-128 with a 9-way policy head and a tanh value
head (20,234 parameters). Evaluation every 100 steps: 1,000 games against a uniformly random
player and 1,000 against a perfect minimax player (uniform among optimal moves), half of
each with the agent moving first; the agent searches 128 simulations with the trained
network and no noise.

Measured on a 2-core x86-64 CPU (2026-12-06, 1 device, jit) while other jobs loaded both
cores, so the times are upper bounds. Seed 0 (779 s through `python -m train`, load average
10.6 at the start, 6.6 at the end; ≈60 self-play games per second, 2.1 s per step):
`loss_rate_vs_random` 0.000 and `loss_rate_vs_minimax` 0.000 (0 of 1,000 games each; every
game against minimax a draw) at steps 100, 200 and 300; `win_rate_vs_random` 0.909, 0.933,
0.921. Seed 1 (`--config.seed=1`, 766 s, load average 7.7-7.9): 0 and 0 at steps 100 and
300; at step 200 1 loss in 1,000 to random (0.1%) and 0 to minimax. The network alone
(argmax over legal moves, no search; seed 0) lost 0.4%, 0.6%, 2.3% of its games to random
and 0.0%, 0.0%, 1.2% to minimax; its policy picks a minimax-optimal move in 83-86% of all
4,520 positions, while its value stays far from the minimax values there (mean |v - v*|
0.63-0.65: self-play is 99.8% draws by step 300, so v is near 0 everywhere; the search with
the real game does the tactics). With 32 simulations in self-play and evaluation (Gumbel
or PUCT, with or without temperature, augmentation or 16 updates per step) the target was
missed: 2.5-6.1% losses to random and 15.8-34.9% to minimax after 300 steps (see
arch/rl/alphazero.py).
"""

from train import config_lib


def get_config(arg=None):
  a = config_lib.parse_arg(arg, tiny=False)
  c = config_lib.base()
  c.task = 'rl.alphazero'
  c.task_kwargs = dict(num_games=128, num_simulations=128, search='gumbel',
                       max_considered=9,
                       temperature=1.0, temperature_plies=9, augment=True,
                       dirichlet_alpha=0.3, buffer_size=20_000, replay_batch=256,
                       updates_per_step=16, value_coef=1.0, eval_games=1000,
                       eval_simulations=128)
  c.model_name = 'rl.alphazero'
  c.model = dict(hidden=(16,) if a.tiny else (128, 128))
  k = c.task_kwargs
  if a.tiny:
    k.num_games, k.num_simulations, k.buffer_size, k.replay_batch = 4, 4, 64, 8
    k.updates_per_step, k.eval_games, k.eval_simulations = 2, 8, 4
  # One loop step is one round of self-play games: the batch.
  c.batch_size = k.get_ref('num_games')
  c.total_steps = 4 if a.tiny else 300
  c.log_every = 1 if a.tiny else 10
  c.eval_every = 4 if a.tiny else 100
  c.ckpt_every = 2 if a.tiny else 100

  c.optax_name = 'adam'
  c.lr = 1e-3
  c.schedule = 'cosine'
  c.lr_min_ratio = 0.1
  # The schedule counts the optimizer's updates: updates_per_step per loop step.
  c.decay_steps = c.get_ref('total_steps') * k.get_ref('updates_per_step')
  c.weight_decay = 1e-4
  return c
