"""DQN (Mnih et al. 2015) on gymnax's CartPole-v1: acting, replay and updates in one jitted step.

  python -m train --config configs/dqn_cartpole.py --workdir runs/dqn_cartpole

Arguments: `tiny` for tests.
The recipe is the JAX DQN one for CartPole (CleanRL's dqn_jax.py, Huang et al. 2022;
PureJaxRL's dqn.py lays it out over 10 environments): 500k environment steps, 10
environments stepped together with one gradient step after each vector step (one update
per 10 environment steps, CleanRL's train_frequency), a replay memory of the last 10,000
transitions, minibatches of 128, learning from 10,000 environment steps on, epsilon from 1
to 0.05 over the first 250k environment steps, the target network copied every 50
gradient steps (CleanRL's 500 environment steps), gamma 0.99, the squared TD error, Adam at
2.5e-4; a 120-84 ReLU Q-network. One loop step is 10 iterations (batch_size = 100
environment steps), so 5,000 loop steps make the 500k. Evaluation: 32 greedy episodes
every 500 steps, metric `return` (500 is the episode limit).

Measured on a 2-core x86-64 CPU (2026-12-06, 1 device, jit; other agents' jobs shared the
cores, load average given per run, so times are upper bounds). Eval `return` (32 greedy
episodes) at the last step, `--config.seed=0..3`: 500, 500, 500, 500 (mean 500.0; every
episode hit the 500-step limit, `return_min` 500). The first eval >= 475 came at step 2000,
3000, 2500, 2000 (200k-300k environment steps); from step 3500 on every eval of every seed
was 500 (before that seed 3 dipped to 331 at step 3000, seed 2 to 273 at step 2000). Wall
time through `python -m train` (start-up, compilation, 10 evaluations, 5 checkpoints
included): 22.7 s and 20.7 s (seeds 0, 1; load average 0.3-1.7), 37.8 s (seed 2; 1.7-3.6),
101.8 s (seed 3; 3.6-7.2). The loop's median `examples_per_sec` (environment steps per
second, updates included): 37k-42k per run at low load (seeds 0-2), 19k at load 7.
Double DQN, `--config.task_kwargs.double=True`, same seeds (load average 12.2-14.8): 500,
500, 500, 500 (`return_min` 500); first eval >= 475 at step 3000, 3000, 3000, 2000 (seed 3
dipped to 345 at step 2500); every eval from step 3500 on 500; 56.5-64.1 s a run.
"""

from train import config_lib

TOTAL_ENV_STEPS = 500_000


def get_config(arg=None):
  a = config_lib.parse_arg(arg, tiny=False)
  c = config_lib.base()
  c.task = 'rl.dqn'
  c.task_kwargs = dict(env='CartPole-v1', num_envs=10, num_steps=10, buffer_size=10_000,
                       replay_batch=128, learning_starts=10_000, target_every=50,
                       gamma=0.99, double=False, loss='mse', eps_start=1.0, eps_end=0.05,
                       eps_anneal_steps=250_000, eval_episodes=32, eval_epsilon=0.0)
  c.model_name = 'rl.qnet'
  c.model = dict(hidden=(8, 8) if a.tiny else (120, 84))
  k = c.task_kwargs
  if a.tiny:
    k.num_envs, k.num_steps, k.buffer_size, k.replay_batch = 2, 4, 24, 8
    k.learning_starts, k.target_every, k.eps_anneal_steps, k.eval_episodes = 8, 3, 32, 4
  # One loop step is num_steps vector steps of num_envs environments: the batch (so the
  # loop's examples_per_sec is environment steps per second).
  c.batch_size = k.get_ref('num_envs') * k.get_ref('num_steps')
  c.total_steps = 4 if a.tiny else -(-TOTAL_ENV_STEPS // (k.num_envs * k.num_steps))
  c.log_every = 1 if a.tiny else 50
  c.eval_every = 4 if a.tiny else 500
  c.ckpt_every = 2 if a.tiny else 1000

  c.optax_name = 'adam'
  c.optax = dict()
  c.lr = 2.5e-4
  c.schedule = 'constant'
  c.grad_clip_norm = 0.0
  return c
