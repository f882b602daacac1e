"""PPO (Schulman et al. 2017) on gymnax's CartPole-v1, rollouts and updates in one jitted step.

  python -m train --config configs/ppo_cartpole.py --workdir runs/ppo_cartpole

Arguments: `tiny` for tests.
The recipe is the standard one for CartPole (CleanRL's ppo.py defaults, Huang et al. 2022,
"CleanRL: high-quality single-file implementations of deep reinforcement learning
algorithms" and "The 37 implementation details of PPO"; PureJaxRL's CartPole config is the
same): 4 environments x 128 steps per rollout (batch_size = 512 environment steps per loop
step), 4 epochs of 4 minibatches of 128, Adam (eps 1e-5) at 2.5e-4 annealed linearly to 0
over the run, gradient norm clipped at 0.5, gamma 0.99, GAE lambda 0.95, clip 0.2 (ratio
and value), value coefficient 0.5, entropy coefficient 0.01, advantages normalised per
minibatch; separate 64-64 tanh actor and critic with orthogonal init. 977 loop steps reach
500,224 environment steps (the recipe's 500k). Evaluation: 32 greedy episodes (argmax
actions) every 100 steps, metric `return` (500 is the episode limit).

Measured on a 2-core x86-64 CPU (2026-12, 1 device, jit) while other jobs loaded both
cores (load average 8.0-8.8), so the times are upper bounds. Eval `return` (32 greedy
episodes) at the last step, `--config.seed=0..3`: 500, 500, 500, 500 (mean 500.0; every
episode hit the 500-step limit, `return_min` 500). The first eval >= 475 came at step 100
or 200 (51,200 or 102,400 environment steps); from step 400 on every eval of every seed was
>= 475 (seed 1 dipped to 304 and 261 at steps 200 and 300). One run's wall time through
`python -m train`: 20.8-29.2 s, of which the 977 train steps took 5.0-6.6 s (the loop's
`examples_per_sec`, here environment steps per second with the updates included: median
83k-114k per run); the rest is start-up, compilation, 10 evaluations and 4 checkpoints.
"""

from train import config_lib

TOTAL_ENV_STEPS = 500_000


def get_config(arg=None):
  a = config_lib.parse_arg(arg, tiny=False)
  c = config_lib.base()
  c.task = 'rl.ppo'
  c.task_kwargs = dict(env='CartPole-v1', num_envs=4, num_steps=128, epochs=4,
                       minibatches=4, gamma=0.99, gae_lambda=0.95, clip_eps=0.2,
                       clip_value=True, vf_coef=0.5, ent_coef=0.01,
                       normalize_advantages=True, eval_episodes=32, eval_greedy=True)
  c.model_name = 'rl.actor_critic'
  c.model = dict(hidden=(8, 8) if a.tiny else (64, 64), shared=False)
  k = c.task_kwargs
  if a.tiny:
    k.num_steps, k.epochs, k.minibatches, k.eval_episodes = 16, 2, 2, 4
  # One loop step is one rollout of num_envs x num_steps environment steps: the batch
  # (so the loop's examples_per_sec is environment steps per second).
  c.batch_size = k.get_ref('num_envs') * k.get_ref('num_steps')
  steps = -(-TOTAL_ENV_STEPS // (k.num_envs * k.num_steps))
  c.total_steps = 4 if a.tiny else steps
  c.log_every = 1 if a.tiny else 10
  c.eval_every = 4 if a.tiny else 100
  c.ckpt_every = 2 if a.tiny else 250

  c.optax_name = 'adam'
  c.optax = dict(eps=1e-5)
  c.lr = 2.5e-4
  c.schedule = 'linear'  # to lr_min_ratio x lr = 0 ...
  c.lr_min_ratio = 0.0
  # ... over the optimizer's updates: epochs x minibatches per loop step.
  c.decay_steps = c.get_ref('total_steps') * k.get_ref('epochs') * k.get_ref('minibatches')
  c.grad_clip_norm = 0.5
  return c
