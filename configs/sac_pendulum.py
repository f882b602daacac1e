"""SAC (Haarnoja et al. 2018; twin critics, learned temperature, tanh-squashed Gaussian) on
gymnax's Pendulum-v1, environment steps, replay and updates in one jitted step.

  python -m train --config configs/sac_pendulum.py --workdir runs/sac_pendulum

Arguments: `tiny` for tests.
The recipe (Haarnoja et al. 2018's hyper-parameters, Table 1, at Pendulum's scale): one
environment, one gradient update after each environment step, minibatches of 256 drawn
uniformly from a replay buffer holding the whole run (20,000 transitions), 1,000 uniform
random steps before learning starts, Adam at 3e-4 for each of the twin critics, the actor
and the temperature (`config.optimizers`; three Task.phases groups), gamma 0.99, tau 0.005,
initial temperature 1 with target entropy -|A| = -1, 256-256 ReLU networks. A loop step is
one 200-step episode (batch_size = 200 environment steps); 100 loop steps are 20,000
environment steps. Evaluation: 10 episodes of the deterministic policy tanh(mu(s)) every
10 steps, metric `return` (Pendulum's returns are <= 0).

Measured on a 2-core x86-64 CPU (2026-12-06, 1 device, jit) while other jobs loaded both
cores (load average 9.2-13.6 at the start and end of the runs; 2.2 at the start of seed
0), so the times are upper bounds. Eval `return` (10 episodes) at the last step,
`--config.seed=0..3`: -159.8, -120.8, -102.4, -186.9 (mean -142.5; `return_min` -266,
-248, -294, -350). The first eval >= -200 came at step 40, 40, 50, 30 (6,000-10,000
environment steps); of the 24 evals after it two fell below -200 (-253, seed 3 at step 40;
-201, seed 2 at step 70). Wall time of one run through `python -m train`: 322-587 s (seed
0: 361 s); the loop's `examples_per_sec` (environment steps per second, updates included)
41-65 median per run.
"""

from configs import recipes
from train import config_lib

TOTAL_ENV_STEPS = 20_000


def get_config(arg=None):
  a = config_lib.parse_arg(arg, tiny=False)
  # One Adam per network and one for the temperature (Task.phases groups), 3e-4 each.
  return recipes.off_policy_pendulum('rl.sac', a.tiny, TOTAL_ENV_STEPS, 3e-4,
                                     ('critic', 'actor', 'alpha'), init_alpha=1.0,
                                     learn_alpha=True)
