"""Reinforcement learning: agents whose rollouts and updates run inside the loop's one
jitted step, on JAX-native environments (gymnax), with their environment state in the
checkpointed train state."""
