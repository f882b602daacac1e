"""Dreamer (DreamerV3's recipe, Hafner et al. 2023) on gymnax's CartPole-v1: acting, replay,
world-model learning and actor-critic learning in imagination in one jitted step.

  python -m train --config configs/dreamer_cartpole.py --workdir runs/dreamer_cartpole

Arguments: `tiny` for tests.
The recipe is DreamerV3's (arch/rl/dreamer.py) at CartPole's scale: a 64-unit GRU state with
8 categoricals of 8 classes, 64-wide 2-layer encoder, decoder, heads, actor and critic, 255
two-hot bins; 4 environments x 2 vector steps (batch_size = 8 environment steps) and one
update per loop step on 16 sequences of 16 steps (a train ratio of 32 replayed steps per
environment step; DreamerV3 uses 512), 1,024 uniform random environment steps first,
imagination horizon 15, gamma 0.99, lambda 0.95, KL scales 0.5 / 0.1 with 1 free nat,
entropy 3e-4, slow critic rate 0.02. Adam per group: world model 1e-3 (clip 1000), actor
and critic 3e-4 (eps 1e-5, clip 100), higher than DreamerV3's 1e-4 / 3e-5 for the short run.
2,500 loop steps are 20,000 environment steps. Evaluation: 16 episodes of the actor's mode
on its filtered latent every 250 steps, metric `return` (500 is the episode limit).

Measured on a 2-core x86-64 CPU (2026-12-07, 1 device, jit) while other jobs loaded both
cores, so the times are upper bounds. Eval `return` (16 episodes) against environment
steps, `--config.seed=0..2`:

  env steps             2k    4k    6k     8k     10k    12k   14k    16k    18k    20k
  this config, seed 0   11.9  69.6  248.7  215.4  182.4  85.1  106.2  139.4  218.3  152.3
               seed 1   13.9  66.0  136.1  201.6  198.2  167.6 200.6  317.4  500.0  479.0
               seed 2   13.8  232.3 259.5  126.6  214.1  134.4 129.8  119.1  227.1  192.4
               mean     13.2  122.6 214.8  181.2  198.2  129.0 145.5  192.0  315.1  274.6
  2 updates/step, 10k   11.1  158.6 278.9  199.9  170.6          (seed 0)

  PPO, 4 seeds' mean    4,096: 126.5   8,192: 152.0   12,288: 236.1   16,384: 315.6
                        20,480: 329.8

Seed 0: 19.7 min wall through `python -m train` (load average 17.8-22.3; the loop's
2.4-4.5 steps/s after learning starts, ~0.3 s an update); seed 1 40.2 min (load 2.7 at the
start, 13.2 at the end, its first 18 minutes beside a job at raised priority; median 3.7
steps/s), seed 2 16.1 min (load 12.2-12.4). The 2-updates row:
`--config.total_steps=1250 --config.task_kwargs.updates_per_step=2
--config.optimizers.actor.lr=1e-4 --config.optimizers.critic.lr=1e-4` (train ratio 64,
evals every 1,000 steps: 11.4, 11.1, 82.3, 158.6, 141.6, 278.9, 125.1, 199.9, 122.3, 170.6),
14.6 min (load 13.7-17.4). PPO at the same budget, `configs/ppo_cartpole.py
--config.total_steps=40 --config.eval_every=8` (20,480 environment steps; its learning rate
then anneals over those 40 steps), seeds 0-3 (32 greedy episodes each): 194.6, 86.6, 109.6,
115.5 at 4,096 environment steps; 326.4, 286.3, 230.6, 476.0 at 20,480; 51-69 s a run
(load 16.6-17.9). DQN's recipe (`configs/dqn_cartpole.py --config.total_steps=200`, seed 0,
learning from 10k steps, epsilon annealed over 250k) stays at 9.1-9.5 through 20k (53 s).
So Dreamer learned from fewer environment steps early (3 seeds' mean 215 at 6k and 181 at
8k, where PPO's was 152 at 8k) but did not hold the lead: from 12k on its mean was below
PPO's (129 against 236 at 12k, 275 against 330 at 20k), with seeds far apart (seed 1 reached
500 at 18k, seed 0 fell back to 85 at 12k). The actor's entropy scale (3e-4) and return
normalisation (S = max(1, EMA of P95 - P5), decay 0.99) are DreamerV3's; S was 9-13 from
4k on (the advantages are scaled, not floored) and the actor's entropy fell from 0.66 to
0.26 nats (seed 1) without collapsing, so neither looks mismatched. The imagined return was
still rising at 20k (seed 1: 14 at 8k, 44 at 20k, of the 100 a never-ending episode is
worth at gamma 0.99): the critic and world model are not done learning at this train ratio.
Not tried for want of time: DreamerV3's train ratio (512, 16x the updates), its learning
rates.
"""

from arch.rl import dreamer
from train import config_lib

TOTAL_ENV_STEPS = 20_000


def get_config(arg=None):
  a = config_lib.parse_arg(arg, tiny=False)
  c = config_lib.base()
  c.task = 'rl.dreamer'
  c.task_kwargs = dict(env='CartPole-v1', num_envs=4, num_steps=2, updates_per_step=1,
                       batch_seqs=16, seq_len=16, buffer_size=TOTAL_ENV_STEPS,
                       learning_starts=1_024, horizon=15, gamma=0.99, lam=0.95,
                       free_nats=1.0, dyn_scale=0.5, rep_scale=0.1, entropy=3e-4,
                       slow_rate=0.02, slow_reg=1.0, retnorm_decay=0.99, eval_episodes=16,
                       eval_greedy=True)
  c.model_name = 'rl.dreamer'
  c.model = (dict(dreamer.TINY) if a.tiny else
             dict(deter=64, stoch=8, classes=8, hidden=64, layers=2, num_bins=255))
  k = c.task_kwargs
  if a.tiny:
    k.num_envs, k.num_steps, k.batch_seqs, k.seq_len, k.buffer_size = 2, 4, 3, 4, 10
    k.learning_starts, k.horizon, k.eval_episodes = 8, 3, 2
  # One loop step is num_envs x num_steps environment steps: the batch (so the loop's
  # examples_per_sec is environment steps per second).
  c.batch_size = k.get_ref('num_envs') * k.get_ref('num_steps')
  c.total_steps = 4 if a.tiny else TOTAL_ENV_STEPS // (k.num_envs * k.num_steps)
  c.log_every = 1 if a.tiny else 50
  c.eval_every = 4 if a.tiny else 250
  c.ckpt_every = 2 if a.tiny else 500

  c.optax_name = 'adam'
  c.optax = dict(eps=1e-8)
  c.lr = 1e-3
  c.schedule = 'constant'
  c.grad_clip_norm = 1000.0
  # One Adam per group (Task.phases): DreamerV3's 1e-4 / 3e-5 / 3e-5 scaled up for the short run.
  c.optimizers = dict(world=dict(lr=1e-3, grad_clip_norm=1000.0),
                      actor=dict(lr=3e-4, optax=dict(eps=1e-5), grad_clip_norm=100.0),
                      critic=dict(lr=3e-4, optax=dict(eps=1e-5), grad_clip_norm=100.0))
  return c
