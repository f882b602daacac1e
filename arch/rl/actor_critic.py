"""Actor-critic MLP for discrete actions: policy logits and a state value from one
observation, the network of the on-policy agents (PPO, A2C).

As the PPO implementation studies recommend for classic control (Engstrom et al. 2020,
"Implementation matters in deep policy gradients"; Andrychowicz et al. 2021, "What matters
in on-policy reinforcement learning?"; Huang et al. 2022, "The 37 implementation details of
proximal policy optimization"): tanh hidden layers, separate actor and critic trunks
(`shared=True` for one trunk feeding both heads), orthogonal weights with gain sqrt(2) in
the hidden layers, 0.01 in the policy head (a near-uniform first policy) and 1 in the value
head, zero biases.

Parameters are small and replicated (no logical axes): every device runs the whole agent.

Dimension key: B observations, A actions, H hidden width.
"""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np


def _dense(width, gain, name):
  return nn.Dense(width, kernel_init=nn.initializers.orthogonal(gain),
                  bias_init=nn.initializers.zeros, name=name)


class Trunk(nn.Module):
  """tanh(Dense) layers of orthogonal init (gain sqrt 2)."""
  hidden: Sequence[int] = (64, 64)

  @nn.compact
  def __call__(self, x_BH):
    for i, width in enumerate(self.hidden):
      x_BH = nn.tanh(_dense(width, np.sqrt(2.0), f'hidden_{i}')(x_BH))
    return x_BH


class Model(nn.Module):
  """(logits (B, A), value (B,)) of observations (B, *O), flattened."""
  num_actions: int = 2
  hidden: Sequence[int] = (64, 64)
  shared: bool = False  # one trunk for both heads (True) or separate actor and critic

  @nn.compact
  def __call__(self, obs):
    x_BO = jnp.asarray(obs, jnp.float32).reshape(obs.shape[0], -1)
    if self.shared:
      h_actor = h_critic = Trunk(self.hidden, name='trunk')(x_BO)
    else:
      h_actor = Trunk(self.hidden, name='actor')(x_BO)
      h_critic = Trunk(self.hidden, name='critic')(x_BO)
    logits_BA = _dense(self.num_actions, 0.01, 'policy_head')(h_actor)
    value_B = _dense(1, 1.0, 'value_head')(h_critic)[:, 0]
    return logits_BA, value_B


TINY = dict(hidden=(8, 8))
