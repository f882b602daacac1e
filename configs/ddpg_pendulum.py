"""DDPG (Lillicrap et al. 2016, with the re-tuned details of Fujimoto et al. 2018's "Our
DDPG") on gymnax's Pendulum-v1, environment steps, replay and updates in one jitted step.

  python -m train --config configs/ddpg_pendulum.py --workdir runs/ddpg_pendulum

Arguments: `tiny` for tests.
The recipe: one environment, one update of critic then actor after each environment step,
minibatches of 256 from a replay buffer holding the whole run (20,000 transitions), 1,000
uniform random steps before learning starts, then mu(s) plus N(0, 0.1^2) noise on the
[-1, 1] action (x2 for Pendulum's torque), Adam at 1e-3 for the actor and for the critic
(`config.optimizers`; Task.phases groups; the TD3 paper's re-tuned DDPG), gamma 0.99,
tau 0.005, 256-256 ReLU networks. A loop step is one 200-step episode (batch_size = 200
environment steps); 100 loop steps are 20,000 environment steps. Evaluation: 10 episodes of
mu(s) without noise every 10 steps, metric `return` (Pendulum's returns are <= 0).

Measured on a 2-core x86-64 CPU (2026-12-06, 1 device, jit) while other jobs loaded both
cores (load average 8.5-13.6 at the start and end of the runs), so the times are upper
bounds. Eval `return` (10 episodes) at the last step, `--config.seed=0..3`: -157.2, -127.5,
-112.8, -189.3 (mean -146.7; `return_min` -248, -246, -295, -358). The first eval >= -200
came at step 20 for every seed (4,000 environment steps); of the 32 evals after it two fell
below -200 (-236, seed 0 at step 30; -214, seed 2 at step 70). Wall time of one run
through `python -m train`: 176-541 s; the loop's `examples_per_sec` (environment steps per
second, updates included) 78-130 median per run.
"""

from configs import recipes
from train import config_lib

TOTAL_ENV_STEPS = 20_000


def get_config(arg=None):
  a = config_lib.parse_arg(arg, tiny=False)
  # One Adam per network (Task.phases groups).
  return recipes.off_policy_pendulum('rl.ddpg', a.tiny, TOTAL_ENV_STEPS, 1e-3,
                                     ('critic', 'actor'), exploration_noise=0.1)
