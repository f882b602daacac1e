"""Q-network for discrete actions: an MLP from one observation to one value per action,
Q(s, .), the network of the value-based agents (DQN, arch/rl/dqn.py).

Mnih et al. 2015 ("Human-level control through deep reinforcement learning") read pixels
with a convolutional torso; on classic-control observations the torso is an MLP, sized as
the JAX/CleanRL DQN recipes for CartPole size it (Huang et al. 2022, CleanRL's
dqn_jax.py; PureJaxRL's dqn.py): ReLU layers of 120 and 84 units with flax's default
(LeCun-normal) weights and zero biases, and a linear head of one output per action.

Parameters are small and replicated (no logical axes): every device runs the whole agent.

Dimension key: B observations, A actions, H hidden width.
"""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp


class Model(nn.Module):
  """Q-values (B, A) of observations (B, *O), flattened."""
  num_actions: int = 2
  hidden: Sequence[int] = (120, 84)

  @nn.compact
  def __call__(self, obs):
    x_BH = jnp.asarray(obs, jnp.float32).reshape(obs.shape[0], -1)
    for i, width in enumerate(self.hidden):
      x_BH = nn.relu(nn.Dense(width, name=f'hidden_{i}')(x_BH))
    return nn.Dense(self.num_actions, name='q_head')(x_BH)


TINY = dict(hidden=(8, 8))
